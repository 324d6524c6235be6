/* The prepared-dataset store: one HDF5 file written by `medtrain prepare`
 * (the HDF5 C library, serial build).
 *
 * LAYOUT (format "medtrain-prepared", version 1; readable by h5py):
 *   /meta                       group, attributes:
 *       format "medtrain-prepared", format_version 1 (i32), medtrain_version,
 *       dataset_name, source_dir, channel_names [C], class_names [K],
 *       case_ids [N] (dataset order), num_channels, num_classes (i32),
 *       target_spacing f64[3], order_image / order_label / order_aniso (i32:
 *       0 nearest, 1 linear, 3 cubic), aniso_threshold f64,
 *       norm_scheme [C] ("zscore", "ct", "none"), norm_use_mask i32[C],
 *       norm_mean f64[C], norm_std f64[C], norm_clip f64[C][2] (the plan: CT
 *       parameters are dataset-wide; z-score statistics are per case),
 *       prepare_params (JSON text: the options prepare ran with)
 *   /fingerprint                group: attribute json (the whole fingerprint as
 *       JSON text), attributes median_spacing f64[3],
 *       median_shape_after_crop f64[3], median_relative_size_after_crop f64,
 *       samples_per_case i64; datasets spacing (N, 3) f64,
 *       shape_before_crop (N, 3) i64, shape_after_crop (N, 3) i64,
 *       class_voxels (K) i64, intensity (C, 8) f64 with columns n, mean, std,
 *       min, max, median, percentile_00_5, percentile_99_5
 *   /cases/<id>/image           (C, D, H, W) f32, chunked <= (1, 64, 64, 64),
 *                               shuffle + deflate
 *   /cases/<id>/label           (1, D, H, W) u8, chunked, deflate
 *                               (compression level 0: no filters; otherwise the
 *                               chunks are shuffled/compressed by the calling
 *                               thread and written raw with H5Dwrite_chunk, so
 *                               compression runs in parallel outside the lock)
 *   /cases/<id>                 attributes: orig_shape i64[3], orig_spacing
 *       f64[3], orig_affine f64[4][4], crop_box i64[2][3] (rows lo, hi),
 *       target_spacing f64[3], shape i64[3], spacing f64[3], affine
 *       f64[4][4], order_image i32[3], order_label i32[3], norm_scheme [C],
 *       norm_use_mask i32[C], norm_mean f64[C], norm_std f64[C], norm_clip
 *       f64[C][2], class_voxels i64[K] (preprocessed label)
 * Strings are variable-length UTF-8. Shapes/spacings are in tensor order
 * (D, H, W); affines in NIfTI's convention (data/preprocess.h).
 *
 * WRITING is atomic: the file is built under a temporary name in the
 * destination's directory (".<name>.tmp.<pid>.<n>") and renamed over the
 * destination by mt_h5store_commit after fsync; any failure or
 * mt_h5store_abort removes the temporary file, leaving the destination as it
 * was. The writer serialises its calls with a mutex, so worker threads may
 * write cases concurrently.
 *
 * ERRORS name the file (and the case / object): a missing file, a file that
 * is not HDF5, a missing group/dataset/attribute, a wrong shape or type.
 * HDF5's own error printing is switched off (in every calling thread) and
 * its innermost message is appended to ours.
 */
#ifndef MT_H5STORE_H
#define MT_H5STORE_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "data/preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_H5STORE_FORMAT "medtrain-prepared"
#define MT_H5STORE_VERSION 1

typedef struct {
    char *dataset_name;
    char *source_dir;
    char *medtrain_version;   /* read back only (written: MT_VERSION) */
    int num_channels;
    char **channel_names;     /* [num_channels] */
    int num_classes;
    char **class_names;       /* [num_classes] */
    int num_cases;
    char **case_ids;          /* [num_cases], dataset order */
    mt_prep_plan plan;
    char *prepare_params;     /* JSON text ("{}" when none) */
} mt_h5store_meta;

/* Frees every string of a meta filled by mt_h5store_open's reader (or built
 * by the caller with malloc'd strings). */
void mt_h5store_meta_free(mt_h5store_meta *m);

/* What the store holds about one case besides its voxels. */
typedef struct {
    mt_prep_geometry geom;
    int num_channels;
    mt_norm_params norm[MT_PREP_MAX_CHANNELS];
    int num_classes;
    int64_t class_voxels[256];  /* [num_classes] in the preprocessed label */
} mt_h5store_case_info;

/* ---------------------------------------------------------------- writing */

typedef struct mt_h5store_writer mt_h5store_writer;

/* Starts a store that will replace path on commit. Errors name path (e.g. its
 * directory does not exist). compress_level: deflate level 0..9 (0: none). */
mt_status mt_h5store_create(mt_h5store_writer **w, const char *path, int compress_level);
/* Writes /meta (every listed case must be written before commit). */
mt_status mt_h5store_write_meta(mt_h5store_writer *w, const mt_h5store_meta *meta);
/* Writes /cases/<id>. image (C, D, H, W) f32 with C == meta's channels and
 * (D, H, W) == info->geom.shape; label (1, D, H, W) u8. Thread-safe. */
mt_status mt_h5store_write_case(mt_h5store_writer *w, const char *id, const mt_tensor *image /* (C, D, H, W) */,
                                const mt_tensor *label /* (1, D, H, W) */, const mt_h5store_case_info *info);
/* Writes /fingerprint (json: its JSON text, may be NULL: generated). */
mt_status mt_h5store_write_fingerprint(mt_h5store_writer *w, const mt_fingerprint *fp, const char *json);
/* Checks that meta, fingerprint and every listed case were written, closes,
 * fsyncs and renames into place. Frees w whatever the outcome (on failure
 * the temporary file is removed). */
mt_status mt_h5store_commit(mt_h5store_writer *w);
/* Closes and removes the temporary file; frees w. NULL is fine. */
void mt_h5store_abort(mt_h5store_writer *w);

/* ---------------------------------------------------------------- reading */

typedef struct mt_h5store mt_h5store;

/* Opens a store read-only and reads /meta (checking format, version and that
 * every listed case exists). */
mt_status mt_h5store_open(mt_h5store **s, const char *path);
void mt_h5store_close(mt_h5store *s);

const char *mt_h5store_path(const mt_h5store *s);
const mt_h5store_meta *mt_h5store_get_meta(const mt_h5store *s);
int mt_h5store_num_cases(const mt_h5store *s);
const char *mt_h5store_case_id(const mt_h5store *s, int i);
/* Index of the case with that id, or -1. */
int mt_h5store_find(const mt_h5store *s, const char *id);

/* Loads case i (0 .. num_cases-1): *image (C, D, H, W) f32, *label
 * (1, D, H, W) u8 (either pointer may be NULL to skip it), info (may be
 * NULL). Thread-safe (HDF5 serialises). Errors name the file and case. */
mt_status mt_h5store_load_case(mt_h5store *s, int i, mt_tensor **image /* (C, D, H, W) */,
                               mt_tensor **label /* (1, D, H, W) */, mt_h5store_case_info *info);

/* Reads /fingerprint back (free with mt_fingerprint_free); *json (may be
 * NULL) gets its JSON text (malloc'd). */
mt_status mt_h5store_read_fingerprint(mt_h5store *s, mt_fingerprint *fp, char **json);

#ifdef __cplusplus
}
#endif
#endif
