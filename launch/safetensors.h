/* safetensors files (https://github.com/huggingface/safetensors), the weight
 * and checkpoint format (DESIGN.md decision 11).
 *
 * Layout: 8-byte little-endian header length N; N bytes of JSON
 *   {"__metadata__":{"k":"v",...},"name":{"dtype":"F32","shape":[2,3],"data_offsets":[b,e]},...}
 * padded with spaces to a multiple of 8; then the data block, tensors stored
 * row-major little-endian at [b, e) relative to the block's start.
 *
 * Writing follows the reference implementation byte for byte: __metadata__
 * first, tensors ordered by dtype (F32, I32, BF16, U8: largest alignment
 * first) then by name, packed without gaps, compact JSON. Files are written
 * atomically (launch/fsutil.h).
 *
 * Reading validates the whole header (JSON syntax, field types, dtype names,
 * shapes, offsets inside the data block, no overlap or gap, byte counts equal
 * to numel * dtype size, no duplicate names) and reports errors naming the
 * file (and tensor). F32, BF16, I32 and U8 load as such; for PyTorch files,
 * F64 and F16 load as F32, I64 as I32 (values must fit) and BOOL as U8.
 */
#ifndef MT_SAFETENSORS_H
#define MT_SAFETENSORS_H

#include <stddef.h>

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A list of named tensors and string metadata. Owns references to its
 * tensors and copies of all strings. */
typedef struct mt_safetensors {
    int n, cap;
    char **names;
    mt_tensor **tensors; /* any shape, CPU (loaded) or any device (to save) */
    int n_meta, cap_meta;
    char **meta_keys;
    char **meta_values;
} mt_safetensors;

void mt_safetensors_init(mt_safetensors *st);
void mt_safetensors_free(mt_safetensors *st);

/* Adds a tensor under `name` (retains t). A duplicate or empty name, or a
 * name starting with "__metadata__", is an MT_ERR_INVALID error. */
mt_status mt_safetensors_add(mt_safetensors *st, const char *name, mt_tensor *t);
/* Sets (or replaces) a metadata entry. */
void mt_safetensors_set_meta(mt_safetensors *st, const char *key, const char *value);
/* The metadata value, or NULL. */
const char *mt_safetensors_get_meta(const mt_safetensors *st, const char *key);
/* The tensor named `name` (borrowed), or NULL. */
mt_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name);

/* The file's bytes in memory (malloc'd into *buf, length *len). */
mt_status mt_safetensors_serialize(const mt_safetensors *st, char **buf, size_t *len);
/* Writes `path` atomically. */
mt_status mt_safetensors_save(const mt_safetensors *st, const char *path);

/* Loads `path` into an initialised, empty st (on error st stays empty). */
mt_status mt_safetensors_load(mt_safetensors *st, const char *path);
/* Same from bytes in memory; `name` stands for the file in messages. */
mt_status mt_safetensors_parse(mt_safetensors *st, const void *buf, size_t len, const char *name);

#ifdef __cplusplus
}
#endif
#endif
