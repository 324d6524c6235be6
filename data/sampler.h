/* Patch sampler for in-memory cases (nnU-Net style).
 *
 * A sampler holds cases (image (C, D, H, W) f32, label (1, D, H, W) u8; the
 * spatial size may differ between cases, C may not) and, per case, the
 * locations of every foreground voxel grouped by class. A sample is:
 *   1. a case, uniformly at random;
 *   2. with probability fg_prob a foreground-centred patch: a class chosen
 *      uniformly among the foreground classes present in that case, one of
 *      its voxels uniformly, and the patch centred on it (shifted to stay
 *      inside the volume where the volume is large enough: the voxel always
 *      lies inside the patch); otherwise a uniformly placed patch;
 *   3. where the patch is larger than the volume it overhangs on both sides
 *      and the outside is padded (image pad_value, label 0);
 *   4. random flips per enabled axis (probability 1/2), applied to image and
 *      label alike.
 * Every draw comes from the caller's mt_rng, so a batch is a function of the
 * sampler and the rng state; sampling only reads the sampler, so several
 * threads may sample at once with their own rngs (the loader threads of a
 * later issue feed it that way).
 */
#ifndef MT_SAMPLER_H
#define MT_SAMPLER_H

#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t patch[3]; /* d, h, w */
    int batch_size;
    int num_classes;  /* labels must lie in [0, num_classes), 2 .. 256 */
    double fg_prob;   /* probability that a sample is centred on a foreground voxel */
    int flip[3];      /* per spatial axis: 1 = flip with probability 1/2 */
    float pad_value;  /* image value outside the volume (the label there is 0) */
} mt_sampler_config;

/* Where a patch came from: output index i along axis a shows volume
 * coordinate start[a] + (flipped[a] ? patch[a] - 1 - i : i). */
typedef struct {
    int case_index;
    int64_t start[3];    /* may be negative or overhang the end: padding */
    int flipped[3];
    int fg_class;        /* class the patch was centred on; 0: uniformly placed */
    int64_t fg_voxel[3]; /* that voxel in volume coordinates (when fg_class > 0) */
} mt_patch_info;

typedef struct {
    mt_tensor *image;       /* (C, D, H, W) f32, contiguous, one reference held */
    mt_tensor *label;       /* (1, D, H, W) u8, contiguous, one reference held */
    int64_t *class_start;   /* num_classes + 1 offsets into class_voxels */
    int64_t *class_voxels;  /* flat voxel indices, grouped by class (class 0 not stored) */
    int num_present;        /* foreground classes with at least one voxel */
    int present[256];       /* those classes */
} mt_sampler_case;

typedef struct {
    mt_sampler_config cfg;
    int channels; /* C, fixed by the first case */
    int num_cases;
    int capacity;
    mt_sampler_case *cases;
} mt_sampler;

/* patch 32^3, batch 2, 2 classes, fg_prob 1/3, flips on all axes, pad 0. */
void mt_sampler_config_default(mt_sampler_config *cfg);
mt_status mt_sampler_init(mt_sampler *s, const mt_sampler_config *cfg);
void mt_sampler_free(mt_sampler *s);
/* Adds a case (validates dtypes, shapes, channel count and label range; the
 * sampler keeps its own references, contiguous copies where needed). */
mt_status mt_sampler_add_case(mt_sampler *s, mt_tensor *image /* (C, D, H, W) f32 */,
                              mt_tensor *label /* (1, D, H, W) u8 */);

/* One patch of case `case_index`: fg = 1 centres it on a foreground voxel
 * (falls back to uniform placement when the case has none), fg = 0 places it
 * uniformly. info may be NULL. */
void mt_sampler_patch(float *image_out /* (C, d, h, w) */, uint8_t *label_out /* (1, d, h, w) */,
                      const mt_sampler *s, int case_index, int fg, mt_rng *rng, mt_patch_info *info);

/* Fills a batch in place (tensors contiguous, CPU, shapes as configured);
 * infos (batch_size entries) may be NULL. Needs at least one case. */
void mt_sampler_fill_batch(mt_tensor *images /* (N, C, d, h, w) f32 */,
                           mt_tensor *labels /* (N, 1, d, h, w) u8 */, const mt_sampler *s,
                           mt_rng *rng, mt_patch_info *infos);
/* Allocates and fills a batch: new references in *images_out, *labels_out. */
mt_status mt_sampler_batch(mt_tensor **images_out /* (N, C, d, h, w) f32 */,
                           mt_tensor **labels_out /* (N, 1, d, h, w) u8 */, const mt_sampler *s,
                           mt_rng *rng, mt_patch_info *infos);

#ifdef __cplusplus
}
#endif
#endif
