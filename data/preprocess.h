/* Preprocessing for `medtrain prepare` and its inverse for `predict`
 * (nnU-Net v2's pipeline: crop to the non-zero region, normalise, resample).
 *
 * Shapes and spacings are in tensor order (D, H, W) (data/nifti.h: spacing
 * (pixdim[3], pixdim[2], pixdim[1])); affines stay in NIfTI's convention
 * (columns (i, j, k) = tensor (w, h, d)).
 *
 * PIPELINE of one case (mt_preprocess_case), in this order:
 *  1. non-zero mask: voxels where any channel != 0, holes filled (a zero
 *     voxel not connected to the volume's border through zero voxels, 6-
 *     connectivity, belongs to the mask: scipy's binary_fill_holes);
 *  2. crop to the mask's bounding box [lo, hi) per axis (the whole volume
 *     when the mask is empty); the box is kept in the geometry;
 *  3. normalisation per channel (mt_norm_scheme):
 *     - MT_NORM_SCHEME_CT:     clip to the dataset's foreground [p0.5, p99.5], then
 *                       (x - mean) / max(std, 1e-8) with the dataset's
 *                       foreground mean/std (from the fingerprint);
 *     - MT_NORM_SCHEME_ZSCORE: (x - mean) / max(std, 1e-8) with the case's own
 *                       mean/std; with use_mask, mean/std are taken over the
 *                       non-zero mask only and voxels outside it are set to 0
 *                       (nnU-Net: use_mask_for_norm when the median cropped
 *                       volume is < 3/4 of the original);
 *     - MT_NORM_SCHEME_NONE:   unchanged;
 *     the parameters used are returned per channel (mt_norm_params);
 *  4. resampling to the target spacing: shape max(1, round(shape * spacing
 *     / target)) (data/resample.h, centres alignment). Images use
 *     plan.order_image (cubic by default), labels plan.order_label (label-
 *     safe linear by default). nnU-Net's "separate z": when the case's
 *     spacing (else the target spacing) has max / min > aniso_threshold and
 *     one axis has the largest spacing, that axis uses plan.order_aniso
 *     (nearest by default) for images and labels alike.
 * The label is cropped with the image and resampled; labels outside the
 * non-zero region are kept as they are (nnU-Net marks them -1; medtrain's
 * labels are u8 and do not).
 *
 * INVERSE (for predict): mt_preprocess_invert_* resample a prediction from
 * the preprocessed grid back to the cropped grid (the same centres
 * convention in the other direction, so the continuous coordinate maps are
 * exact inverses) and place it into the original volume at the crop box.
 *
 * FINGERPRINT (mt_fingerprint): per case the original spacing, the shape
 * before and after cropping and the foreground (label > 0) intensity
 * samples; over the dataset: median spacing, median shape after cropping,
 * median relative size after cropping, per-channel foreground intensity
 * statistics (mean, std (population), min, max, median, 0.5 / 99.5
 * percentiles, numpy's linear interpolation) over the pooled samples, and the
 * voxel count of every class (original labels). Foreground samples: per case
 * samples_per_case voxels drawn uniformly with replacement among its
 * foreground voxels (as nnU-Net's fingerprint extractor; every case weighs
 * the same), from a Philox stream of (seed, case index), so the result does
 * not depend on the thread count.
 */
#ifndef MT_PREPROCESS_H
#define MT_PREPROCESS_H

#include <stdint.h>

#include "core/json.h"
#include "core/status.h"
#include "core/tensor.h"
#include "data/resample.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_PREP_MAX_CHANNELS 16

typedef enum { MT_NORM_SCHEME_ZSCORE = 0, MT_NORM_SCHEME_CT = 1, MT_NORM_SCHEME_NONE = 2 } mt_norm_scheme;

/* "zscore", "ct", "none". */
const char *mt_norm_scheme_name(mt_norm_scheme s);
/* Parses those names; MT_ERR_INVALID naming s otherwise. */
mt_status mt_norm_scheme_parse(const char *s, mt_norm_scheme *out);
/* The scheme for a dataset.json channel name, as nnU-Net: "CT" (any case)
 * -> CT, "noNorm" -> none, anything else (MRI, T1, ADC, ...) -> z-score. */
mt_norm_scheme mt_norm_scheme_for_channel(const char *channel_name);

/* How one channel was normalised: value -> (clamp(value, clip_lo, clip_hi)
 * - mean) / std (std already floored at 1e-8); outside the non-zero mask
 * the output is 0 when use_mask. NONE: mean 0, std 1, clip +-inf. */
typedef struct {
    mt_norm_scheme scheme;
    int use_mask;
    double mean, std;
    double clip_lo, clip_hi; /* -inf / +inf where no clipping */
} mt_norm_params;

/* Foreground intensity statistics of one channel. */
typedef struct {
    int64_t n; /* samples pooled (0: no foreground anywhere; the rest is 0) */
    double mean, std, min, max, median, p00_5, p99_5;
} mt_intensity_stats;

/* Where a preprocessed case came from (everything predict needs). */
typedef struct {
    int64_t orig_shape[3];      /* source volume (D, H, W) */
    double orig_spacing[3];     /* source voxel size (D, H, W), mm */
    double orig_affine[4][4];   /* source affine (NIfTI convention) */
    int64_t crop_lo[3];         /* crop box in source voxels: [crop_lo, crop_hi) */
    int64_t crop_hi[3];
    double target_spacing[3];   /* requested voxel size (D, H, W) */
    int64_t shape[3];           /* preprocessed (D, H, W) */
    double spacing[3];          /* its actual voxel size: cropped * orig_spacing / shape */
    double affine[4][4];        /* its affine (crop, then mt_resample_affine) */
    mt_interp order_image[3];   /* per-axis orders used (D, H, W) */
    mt_interp order_label[3];
} mt_prep_geometry;

/* Dataset-level preprocessing parameters. */
typedef struct {
    int num_channels;
    double target_spacing[3];    /* (D, H, W) mm */
    mt_interp order_image;       /* default MT_INTERP_CUBIC */
    mt_interp order_label;       /* default MT_INTERP_LINEAR (label-safe) */
    mt_interp order_aniso;       /* the low-resolution axis when anisotropic: default nearest */
    double aniso_threshold;      /* default 3; <= 0 disables "separate z" */
    mt_norm_params norm[MT_PREP_MAX_CHANNELS]; /* scheme, use_mask; CT: clip, mean, std */
} mt_prep_plan;

typedef struct {
    int num_cases, num_channels, num_classes;
    double (*spacing)[3];            /* [num_cases] source voxel size (D, H, W) */
    int64_t (*shape_before_crop)[3]; /* [num_cases] */
    int64_t (*shape_after_crop)[3];  /* [num_cases] */
    double median_spacing[3];
    double median_shape_after_crop[3];
    double median_relative_size_after_crop;
    int64_t samples_per_case;
    mt_intensity_stats stats[MT_PREP_MAX_CHANNELS]; /* [num_channels] */
    int64_t *class_voxels;           /* [num_classes] */
} mt_fingerprint;

/* What one case contributes to the fingerprint. */
typedef struct {
    double spacing[3];
    int64_t shape_before_crop[3], shape_after_crop[3];
    int num_channels, num_classes;
    int64_t num_samples;  /* per channel (0 when the case has no foreground) */
    float *samples;       /* [num_channels * num_samples], channel-major */
    int64_t *class_voxels; /* [num_classes] */
} mt_fingerprint_case;

/* ---------------------------------------------------------- building blocks */

/* Non-zero mask of image (C, D, H, W) f32: (D, H, W) u8 with 1 where any
 * channel != 0, holes filled (see PIPELINE 1). */
mt_tensor *mt_preprocess_nonzero_mask(const mt_tensor *image /* (C, D, H, W) */);
/* Bounding box [lo, hi) of mask (D, H, W) u8 != 0; the whole volume when
 * the mask is empty (returns 0 then, 1 otherwise). */
int mt_preprocess_bbox(int64_t lo[3], int64_t hi[3], const mt_tensor *mask /* (D, H, W) */);
/* Contiguous copy of the spatial box [lo, hi) of x (..., D, H, W), any dtype. */
mt_tensor *mt_preprocess_crop(const mt_tensor *x /* (C, D, H, W) */, const int64_t lo[3], const int64_t hi[3]);
/* Normalises image (C, D, H, W) f32 contiguous in place, channel c with
 * plan->norm[c] (z-score: its own statistics, within mask when use_mask;
 * mask (D, H, W) u8 may be NULL when no channel uses the mask); writes the
 * parameters used to out[c]. */
void mt_preprocess_normalize_(mt_tensor *image /* (C, D, H, W) */, const mt_tensor *mask /* (D, H, W) */,
                              const mt_prep_plan *plan, mt_norm_params *out);
/* Per-axis orders (D, H, W) for a case: base everywhere, except the
 * separate-z axis (see PIPELINE 4), which gets plan->order_aniso. */
void mt_preprocess_orders(mt_interp orders[3], mt_interp base, const double spacing[3], const mt_prep_plan *plan);

/* ------------------------------------------------------------- one case */

/* The whole pipeline for one case. image (C, D, H, W) f32 with
 * C == plan->num_channels (else MT_ERR_INVALID); label (1, D, H, W) u8 or
 * NULL (predict); spacing (D, H, W) > 0 and affine (NIfTI) of the source.
 * Outputs: *image_out (C, d, h, w) f32, *label_out (1, d, h, w) u8 (pass
 * NULL when label is NULL), geometry, norm[C]. */
mt_status mt_preprocess_case(mt_tensor **image_out /* (C, d, h, w) */, mt_tensor **label_out /* (1, d, h, w) */,
                             mt_prep_geometry *geom, mt_norm_params *norm,
                             const mt_tensor *image /* (C, D, H, W) */, const mt_tensor *label /* (1, D, H, W) */,
                             const double spacing[3], const double affine[4][4], const mt_prep_plan *plan);

/* Maps a prediction x (K, d, h, w) f32 on the preprocessed grid (d, h, w ==
 * geom->shape, else MT_ERR_INVALID naming both shapes) back to the source
 * grid: (K, D, H, W) = (K, geom->orig_shape). Resampled with `order` on
 * every axis except those geom resampled with nearest (separate z), which
 * stay nearest; outside the crop box channel k is fill[k] (fill NULL: 0).
 * For probabilities pass fill = {1, 0, 0, ...} (background). */
mt_status mt_preprocess_invert_image(mt_tensor **out /* (K, D, H, W) */, const mt_tensor *x /* (K, d, h, w) */,
                                     const mt_prep_geometry *geom, mt_interp order, const float *fill);
/* Maps a label map y (1, d, h, w) u8 back to (1, geom->orig_shape):
 * label-safe resampling with geom->order_label, 0 outside the crop box. */
mt_status mt_preprocess_invert_labels(mt_tensor **out /* (1, D, H, W) */, const mt_tensor *y /* (1, d, h, w) */,
                                      const mt_prep_geometry *geom);

/* ----------------------------------------------------------- fingerprint */

/* One case's contribution: crops image/label to the non-zero box, counts the
 * classes (over the whole label; values must be < num_classes, else
 * MT_ERR_FORMAT), draws samples_per_case foreground samples per channel from
 * stream (seed, case_index). */
mt_status mt_fingerprint_case_compute(mt_fingerprint_case *fc, const mt_tensor *image /* (C, D, H, W) */,
                                      const mt_tensor *label /* (1, D, H, W) */, const double spacing[3],
                                      int num_classes, int64_t samples_per_case, uint64_t seed,
                                      int64_t case_index);
void mt_fingerprint_case_free(mt_fingerprint_case *fc);

/* Pools n case contributions (all with the same channel/class counts, else
 * MT_ERR_INVALID) into fp. */
mt_status mt_fingerprint_build(mt_fingerprint *fp, const mt_fingerprint_case *cases, int n);
void mt_fingerprint_free(mt_fingerprint *fp);
/* The fingerprint as a JSON object (malloc'd text; non-finite values null). */
char *mt_fingerprint_to_json(const mt_fingerprint *fp);

/* Target spacing: the median spacing; with aniso_rule, nnU-Net's rule for
 * anisotropic data (when the largest median spacing exceeds 3x the others
 * and that axis has under a third of the voxels of the others, it becomes the
 * 10th percentile of the cases' spacings along it, at least the largest other
 * spacing (+1e-5)). */
void mt_fingerprint_target_spacing(double target[3], const mt_fingerprint *fp, int aniso_rule);

/* A plan for fp: channel schemes (schemes[c]), CT parameters from the
 * fingerprint (a CT channel without foreground samples is MT_ERR_INVALID),
 * z-score use_mask when the median relative size after cropping < 3/4,
 * target spacing given (NULL: the median), default orders and threshold. */
mt_status mt_prep_plan_init(mt_prep_plan *plan, const mt_fingerprint *fp, const mt_norm_scheme *schemes,
                            const double *target_spacing);

/* ------------------------------------------------------ plan as JSON */

/* The plan as one JSON object (malloc'd text):
 *   {"num_channels": C, "axis_order": "D, H, W", "target_spacing": [d, h, w],
 *    "order_image": "cubic", "order_label": "linear", "order_aniso": "nearest",
 *    "aniso_threshold": 3,
 *    "norm": [{"scheme": "zscore", "use_mask": false, "mean": 0, "std": 1,
 *              "clip": [lo, hi]}, ...]}
 * Non-finite numbers are written as null: a null clip bound means no
 * clipping on that side (-inf / +inf); numbers are written so that they read
 * back exactly. */
char *mt_prep_plan_to_json(const mt_prep_plan *plan);
/* Parses that text into *plan (zeroed on error). Errors (MT_ERR_FORMAT) read
 * "<what>:<line>:<col>: <key>: <problem>"; what names the text (e.g.
 * "model.safetensors: metadata \"preprocess\""). */
mt_status mt_prep_plan_from_json(mt_prep_plan *plan, const char *json, const char *what);
/* The same from a parsed JSON object (e.g. a member of a larger document);
 * messages name obj's source. */
mt_status mt_prep_plan_from_json_value(mt_prep_plan *plan, const mt_json *obj);

#ifdef __cplusplus
}
#endif
#endif
