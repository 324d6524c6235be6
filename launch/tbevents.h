/* TensorBoard event files, written without TensorFlow or a protobuf library
 * (DESIGN.md decision 10: the run directory holds TensorBoard event files).
 *
 * A writer creates <dir>/events.out.tfevents.<unix seconds>.<hostname>
 * (".<k>" appended, k = 2, 3, ..., if that name is taken; the file is created
 * with O_EXCL, never overwritten). TensorBoard reads every file of a
 * directory whose name contains "tfevents", in name order, as one run: a
 * resumed training run opens a new file in the same run directory and its
 * step numbers continue the old file's. (Steps the crashed run logged after
 * its last checkpoint are logged again by the resumed one; TensorBoard keeps
 * the later values: a step that goes back purges that tag's newer events.)
 *
 * File format (TFRecord framing of serialized tensorflow.Event messages):
 * each record is
 *     uint64 length (little-endian)
 *     uint32 masked CRC-32C of the 8 length bytes (little-endian)
 *     byte   payload[length]
 *     uint32 masked CRC-32C of the payload (little-endian)
 * with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 and CRC-32C the
 * Castagnoli CRC (reflected polynomial 0x82F63B78, initial value and final
 * xor 0xFFFFFFFF). The first record is Event{wall_time, file_version =
 * "brain.Event:2"}; each scalar is its own record
 *     Event{wall_time (1, double), step (2, int64),
 *           summary (5) {value (1) {tag (1, string), simple_value (2, float)}}}.
 * Checked against (via the code search): tensorflow/core/util/event.proto
 * (Event: wall_time = 1, step = 2, oneof what {file_version = 3, ...,
 * summary = 5}; "Current version is brain.Event:2"),
 * tensorflow/core/framework/summary.proto (Summary: repeated Value value = 1;
 * Value: tag = 1, oneof value {float simple_value = 2, ...}),
 * tensorflow/core/lib/io/record_writer.cc (the record layout, EncodeFixed64 /
 * EncodeFixed32 little-endian) and tensorflow/python/lib/io/python_io.py and
 * crc32c.h (Mask: rotate right by 15 bits, add kMaskDelta = 0xa282ead8).
 *
 * Events are buffered by stdio; mt_tb_flush pushes them to the kernel (the
 * trainer flushes at every log step, so a crashed process keeps its curves).
 * Only rank 0 writes one (DESIGN.md decision 7). Not thread-safe: one writer
 * per thread.
 */
#ifndef MT_TBEVENTS_H
#define MT_TBEVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_tb_writer mt_tb_writer;

/* Creates a new events file in the existing directory dir and writes the
 * file_version record. Errors (MT_ERR_IO) name the file's path and the
 * system's reason; *w is NULL then. */
mt_status mt_tb_open(mt_tb_writer **w, const char *dir);
/* The events file's path (owned by w). */
const char *mt_tb_path(const mt_tb_writer *w);
/* Appends one scalar event: tag (any UTF-8 text; '/' groups tags in
 * TensorBoard, e.g. "train/loss"), step, value (stored as float, as
 * TensorBoard's simple_value; NaN and infinities are kept) and the current
 * wall time. After a failed write every call returns the error again. */
mt_status mt_tb_scalar(mt_tb_writer *w, const char *tag, int64_t step, double value);
/* As mt_tb_scalar with an explicit wall time (seconds since the epoch). */
mt_status mt_tb_scalar_at(mt_tb_writer *w, const char *tag, int64_t step, double value, double wall_time);
/* fflush: the events written so far reach the file. */
mt_status mt_tb_flush(mt_tb_writer *w);
/* Flushes, closes and frees w (NULL: nothing, MT_OK); reports a failed
 * flush or close naming the file. */
mt_status mt_tb_close(mt_tb_writer *w);

/* CRC-32C (Castagnoli) of data[0, n); mt_crc32c_extend continues crc (the
 * CRC-32C of some prefix, 0 for none) over more bytes. */
uint32_t mt_crc32c(const void *data, size_t n);
uint32_t mt_crc32c_extend(uint32_t crc, const void *data, size_t n);
/* TFRecord's masked form of a CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8. */
uint32_t mt_crc32c_mask(uint32_t crc);

#ifdef __cplusplus
}
#endif
#endif
