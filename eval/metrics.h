/* Segmentation metrics per class and per case (docs/metrics.md has the
 * definitions with formulas and worked examples).
 *
 * Inputs are label maps (D, H, W) of dtype u8 or i32 (any device, any
 * strides; they are brought to the host). A class `label` is the binary mask
 * {voxel == label} of each map; P = prediction mask, R = reference mask,
 * counts TP = |P & R|, FP = |P & ~R|, FN = |~P & R|, TN = |~P & ~R|.
 *
 * Overlap metrics (zero denominators give NaN unless stated):
 *   Dice = 2TP / (2TP + FP + FN)          both masks empty -> 1
 *   IoU  = TP / (TP + FP + FN)            both masks empty -> 1
 *   sensitivity (recall, TPR) = TP / (TP + FN)    reference empty -> NaN
 *   specificity (TNR)         = TN / (TN + FP)    no reference negatives -> NaN
 *   precision (PPV)           = TP / (TP + FP)    prediction empty -> NaN
 *   NPV                       = TN / (TN + FN)    no predicted negatives -> NaN
 *   One mask empty, the other not: Dice 0, IoU 0.
 *
 * Surface metrics, in mm using the voxel spacing (sD, sH, sW):
 *   surface(M) = voxels of M with at least one 6-neighbour outside M; voxels
 *     outside the volume count as outside M, so mask voxels on the volume's
 *     border are surface voxels (MONAI get_mask_edges: M xor erode(M) with the
 *     6-connected cross, scipy border_value 0).
 *   d(p, S) = Euclidean distance in mm from voxel centre p to the nearest
 *     voxel centre of S (exact EDT, Felzenszwalb-Huttenlocher, separable).
 *   A = { d(p, surface(R)) : p in surface(P) }, B = { d(q, surface(P)) : q in surface(R) }.
 *   HD95 = max(P95(A), P95(B)), P95 = numpy's default (linear interpolation)
 *     percentile: MONAI compute_hausdorff_distance(percentile=95,
 *     directed=False). (Not medpy's hd95, which takes P95 of A u B.)
 *   ASD = average symmetric surface distance (ASSD) = (sum A + sum B) / (|A| + |B|):
 *     MONAI compute_average_surface_distance(symmetric=True). (Not medpy's
 *     assd, which averages the two directed means.)
 *   Both masks empty -> HD95 = 0, ASD = 0. Exactly one mask empty -> NaN
 *   (written as null in JSON, "nan" in CSV) and skipped by the aggregation,
 *   whose n_nan count reports how often that happened.
 *
 * Aggregation (mt_eval_results_stat): per class and metric, mean and sample
 * standard deviation (n - 1 denominator) over the cases where the value is
 * not NaN; count = number of such cases, n_nan = the others. std is NaN when
 * count < 2, mean is NaN when count = 0.
 */
#ifndef MT_EVAL_METRICS_H
#define MT_EVAL_METRICS_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_METRIC_DICE = 0,
    MT_METRIC_IOU,
    MT_METRIC_HD95,
    MT_METRIC_ASD,
    MT_METRIC_SENSITIVITY,
    MT_METRIC_SPECIFICITY,
    MT_METRIC_PRECISION,
    MT_METRIC_NPV,
    MT_METRIC_COUNT
} mt_metric;

/* "dice", "iou", "hd95", "asd", "sensitivity", "specificity", "precision", "npv". */
const char *mt_metric_name(mt_metric m);

typedef struct {
    int64_t tp, fp, fn, tn;
} mt_eval_confusion;

/* Metric values of one class in one case. v[] holds NaN where undefined
 * (see the conventions above); HD95/ASD are NaN too when surface metrics
 * were not requested. */
typedef struct {
    mt_eval_confusion c;
    double v[MT_METRIC_COUNT];
} mt_eval_class_result;

/* ---- overlap metrics from counts ---- */
double mt_eval_dice(const mt_eval_confusion *c);
double mt_eval_iou(const mt_eval_confusion *c);
double mt_eval_sensitivity(const mt_eval_confusion *c);
double mt_eval_specificity(const mt_eval_confusion *c);
double mt_eval_precision(const mt_eval_confusion *c);
double mt_eval_npv(const mt_eval_confusion *c);

/* Counts for each label in labels[n_labels] (pred == label vs ref == label).
 * pred, ref: same shape, u8 or i32 (dtypes may differ). */
mt_status mt_eval_confusion_count(mt_eval_confusion *out /* [n_labels] */,
                                  const mt_tensor *pred /* (D, H, W) */,
                                  const mt_tensor *ref /* (D, H, W) */, int n_labels,
                                  const int *labels);

/* ---- raw-array building blocks (row-major (D, H, W), dims = {D, H, W},
 * spacing = {sD, sH, sW} in mm, all > 0) ---- */
/* surf[i] = 1 where mask[i] is a surface voxel (definition above), else 0. */
void mt_eval_surface_voxels(uint8_t *surf, const uint8_t *mask, const int64_t *dims);
/* out[i] = squared Euclidean distance (mm^2) from voxel i to the nearest voxel
 * with feature != 0; +inf everywhere when there is none. Exact, O(n), OpenMP
 * over lines. */
void mt_eval_edt_sq(double *out, const uint8_t *feature, const int64_t *dims,
                    const double *spacing);

typedef struct {
    double hd;     /* max(P_q(A), P_q(B)) for the requested percentile q */
    double asd;    /* (sum A + sum B) / (|A| + |B|) */
    int64_t n_surf_pred, n_surf_ref;
} mt_eval_surface_result;
/* Surface metrics of two binary masks (non-zero = inside); percentile in
 * [0, 100] (95 for HD95, 100 for the Hausdorff distance). Empty conventions
 * as above (both empty: 0, 0; one empty: NaN, NaN). Works on the bounding box
 * of pred | ref. */
mt_status mt_eval_surface_distance(mt_eval_surface_result *out, const uint8_t *pred,
                                   const uint8_t *ref, const int64_t *dims,
                                   const double *spacing, double percentile);

/* All metrics for labels[n_labels] of one case. spacing (sD, sH, sW) mm;
 * surface = 0 skips HD95/ASD (left NaN). Errors (MT_ERR_INVALID) name the
 * problem: dtype, shape mismatch, spacing <= 0. */
mt_status mt_eval_case(mt_eval_class_result *out /* [n_labels] */,
                       const mt_tensor *pred /* (D, H, W) */, const mt_tensor *ref /* (D, H, W) */,
                       int n_labels, const int *labels, const double *spacing, int surface);

/* ---- per-case results of a data set and their aggregation ---- */
typedef struct {
    int n_classes;
    int *labels;          /* [n_classes] label values */
    char **class_names;   /* [n_classes] */
    int n_cases, cap_cases;
    char **case_names;    /* [n_cases] */
    mt_eval_class_result *r; /* [n_cases * n_classes], case-major */
} mt_eval_results;

/* names may be NULL (then "class_<label>"). */
mt_status mt_eval_results_init(mt_eval_results *res, int n_classes, const int *labels,
                               const char *const *names);
/* Copies r[n_classes] for one case. */
mt_status mt_eval_results_add(mt_eval_results *res, const char *case_name,
                              const mt_eval_class_result *r /* [n_classes] */);
void mt_eval_results_free(mt_eval_results *res);

typedef struct {
    double mean, std;  /* over non-NaN values; std with n - 1 (NaN if count < 2) */
    int64_t count;     /* non-NaN values */
    int64_t n_nan;     /* NaN values (undefined, e.g. one mask empty) */
} mt_eval_stat;
mt_eval_stat mt_eval_results_stat(const mt_eval_results *res, int class_idx, mt_metric m);
/* Mean over classes of the per-class means (classes with count 0 skipped;
 * NaN if none): nnU-Net's "foreground mean". */
double mt_eval_results_class_mean(const mt_eval_results *res, mt_metric m);

#ifdef __cplusplus
}
#endif
#endif
