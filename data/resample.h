/* Resampling of (C, D, H, W) volumes to a new grid (prepare, predict).
 *
 * ALIGNMENT: "centres" (align_corners = false), the convention of
 * mt_upsample_trilinear(..., align_corners = 0), PyTorch's
 * F.interpolate(align_corners=False) and skimage.transform.resize (which
 * nnU-Net uses): along an axis of n input and m output voxels, output voxel
 * o samples the input at the continuous coordinate
 *     x(o) = (o + 0.5) * n / m - 0.5,
 * so the first and last voxels' outer faces line up (the volume's extent is
 * kept; the voxel size becomes spacing * n / m). Coordinates outside the
 * sample centres, x < 0 or x > n - 1, are clamped to [0, n - 1] (skimage
 * mode "edge"): the edge voxel's value continues outwards.
 *
 * ORDERS, per axis (separable tensor-product interpolation; the axes are
 * processed one after the other, which equals the 3-D tensor-product
 * interpolant):
 *  - MT_INTERP_NEAREST: input voxel floor(x + 0.5) (PyTorch "nearest-exact");
 *  - MT_INTERP_LINEAR:  linear between floor(x) and floor(x) + 1 (trilinear
 *    when all three axes are linear; the same taps and result as
 *    mt_upsample_trilinear with align_corners = 0, up to float rounding);
 *  - MT_INTERP_CUBIC:   cubic B-spline interpolation with the exact
 *    recursive prefilter (Unser; pole sqrt(3) - 2) under whole-sample
 *    mirror boundary conditions (scipy.ndimage's mode "mirror"), so the
 *    spline passes through every sample, as scipy.ndimage.zoom(order=3) /
 *    skimage resize(order=3); coefficients beyond the ends are mirrored
 *    (c[-k] = c[k], c[n-1+k] = c[n-1-k]). It may overshoot the input range
 *    (no clipping, as in nnU-Net). Computed in double precision.
 * An axis whose size does not change is copied exactly (every order
 * reproduces the samples at x(o) = o).
 *
 * LABELS (mt_resample_labels): label-safe in nnU-Net's way
 * (resample_segmentation): for each label value v > 0 present, its
 * indicator (1 where label == v) is resampled with the given orders as f32,
 * and output voxels where it is >= 0.5 get v, values processed in
 * increasing order (a later value overwrites an earlier one); every other
 * voxel is 0. The output only holds values present in the input. With
 * nearest on every axis this is plain nearest-neighbour resampling.
 *
 * Threads: OpenMP inside each pass (runs single-threaded when called from
 * inside another parallel region, e.g. prepare's per-case workers).
 */
#ifndef MT_RESAMPLE_H
#define MT_RESAMPLE_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MT_INTERP_NEAREST = 0, MT_INTERP_LINEAR = 1, MT_INTERP_CUBIC = 3 } mt_interp;

/* "nearest", "linear", "cubic". */
const char *mt_interp_name(mt_interp order);

/* Output shape for a change of voxel size, per axis (D, H, W):
 * max(1, round(in_shape * in_spacing / out_spacing)) (nnU-Net's rule). */
void mt_resample_shape(int64_t out_shape[3], const int64_t in_shape[3], const double in_spacing[3],
                       const double out_spacing[3]);

/* The input coordinate x(o) of output index o along an axis (see ALIGNMENT). */
double mt_resample_src_coord(double o, int64_t n_in, int64_t n_out);

/* The voxel size after resampling: in_spacing * in_shape / out_shape per axis
 * (equals the target spacing only when the shape division is exact). */
void mt_resample_spacing(double out_spacing[3], const double in_spacing[3], const int64_t in_shape[3],
                         const int64_t out_shape[3]);

/* The affine of a resampled volume. Affines are in NIfTI's convention (a
 * 4x4 matrix mapping (i, j, k, 1) to world, with (i, j, k) = tensor
 * (w, h, d): data/nifti.h); shapes are in tensor order (D, H, W). Output
 * voxel centre (i, j, k) lands where the input coordinate
 * (x_w(i), x_h(j), x_d(k)) lies: out = in * [diag(s) | 0.5 s - 0.5] with
 * s = n_in / n_out per axis. */
void mt_resample_affine(double out[4][4], const double in[4][4], const int64_t in_shape[3],
                        const int64_t out_shape[3]);

/* Resamples x (C, D, H, W) f32 (any strides) to (C, out_shape) with the
 * per-axis orders (D, H, W). Returns a new contiguous tensor. Aborts
 * (MT_CHECK) on a wrong dtype/rank, an out_shape < 1 or an unknown order. */
mt_tensor *mt_resample_image(const mt_tensor *x /* (C, D, H, W) f32 */, const int64_t out_shape[3],
                             const mt_interp order[3]);

/* Label-safe resampling of y (1, D, H, W) u8 (see LABELS) to (1, out_shape). */
mt_tensor *mt_resample_labels(const mt_tensor *y /* (1, D, H, W) u8 */, const int64_t out_shape[3],
                              const mt_interp order[3]);

#ifdef __cplusplus
}
#endif
#endif
