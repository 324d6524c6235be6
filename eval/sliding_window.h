/* Sliding-window inference (nnU-Net v2's predict_sliding_window_return_logits).
 *
 * Windows: along each axis of size S with patch P and overlap o in [0, 1),
 *   target step t = max(1, P (1 - o)), n = ceil((S - P) / t) + 1 windows,
 *   starts round(i (S - P) / (n - 1)), i = 0..n-1 (round half to even, as
 *   np.round), so the windows are spread evenly and the last one ends at S.
 *   (S <= P: one window at 0.) overlap 0.5 = nnU-Net's tile_step_size 0.5.
 * Padding: an axis shorter than the patch is padded with pad_value to the
 *   patch size, (P - S) / 2 below and the rest above (nnU-Net pad_nd_image);
 *   the output is cropped back.
 * Importance weighting: w(i, j, k) = g_D(i) g_H(j) g_W(k) with
 *   g_A(i) = exp(-(i - P_A/2)^2 / (2 sigma_A^2)), centre P_A/2 (integer
 *   division), sigma_A = sigma_scale * P_A (1/8 by default); zero beyond
 *   scipy's truncation radius int(4 sigma + 0.5) (scipy.ndimage.gaussian_filter
 *   of a centred delta, as nnU-Net's compute_gaussian) and normalised to
 *   max 1; exact zeros are then raised to the smallest non-zero value, so
 *   every voxel has a positive weight. gaussian = 0: w = 1 everywhere.
 * Accumulation: out = sum_windows w * y / sum_windows w, per voxel, where y
 *   is the window's output averaged over the mirroring variants:
 *   accumulate = MT_EVAL_SW_LOGITS: y = logits (nnU-Net: averages logits,
 *     softmax/argmax afterwards);
 *   MT_EVAL_SW_SOFTMAX / MT_EVAL_SW_SIGMOID: softmax over classes / sigmoid is
 *     applied to each window prediction (each mirrored one separately) before
 *     averaging, so the output holds averaged probabilities.
 * Mirroring TTA: mirror_axes is a bit mask over spatial axes (bit 0 = D,
 *   1 = H, 2 = W); with k axes set every one of the 2^k subsets is used
 *   (including the empty one): the predictor runs on flip(x, subset) and its
 *   output is flipped back; the 2^k predictions are averaged (nnU-Net).
 * Accumulation is in f32 (as nnU-Net); the predictor sees host f32 batches
 *   (B <= batch windows) and may return logits on any device/float dtype.
 */
#ifndef MT_EVAL_SLIDING_WINDOW_H
#define MT_EVAL_SLIDING_WINDOW_H

#include "layers/module.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Returns logits (B, K, d, h, w) for a batch x (B, C, d, h, w) (a new
 * reference), or NULL on failure with the error recorded (mt_error_set). */
typedef mt_tensor *(*mt_eval_predict_fn)(void *ctx, const mt_tensor *x /* (B, C, d, h, w) */);

typedef enum {
    MT_EVAL_SW_LOGITS = 0,
    MT_EVAL_SW_SOFTMAX,
    MT_EVAL_SW_SIGMOID
} mt_eval_sw_accumulate;

typedef struct {
    int64_t patch[3];      /* (d, h, w) */
    double overlap;        /* [0, 1); default 0.5 */
    int batch;             /* windows per predictor call, >= 1; default 1 */
    int gaussian;          /* 1: Gaussian importance map (default); 0: uniform */
    double sigma_scale;    /* sigma = sigma_scale * patch; default 1/8 */
    unsigned mirror_axes;  /* bit a: mirror spatial axis a (0 = D, 1 = H, 2 = W); default 0 */
    mt_eval_sw_accumulate accumulate; /* default MT_EVAL_SW_LOGITS */
    float pad_value;       /* default 0 */
} mt_eval_sw_opts;

/* Defaults as above with the given patch. */
void mt_eval_sw_opts_default(mt_eval_sw_opts *o, const int64_t *patch /* (d, h, w) */);
mt_status mt_eval_sw_opts_validate(const mt_eval_sw_opts *o);

/* Number of windows along an axis of length size (after padding to >= patch),
 * and their starts (starts[count]). */
int64_t mt_eval_sw_num_steps(int64_t size, int64_t patch, double overlap);
void mt_eval_sw_steps(int64_t *starts, int64_t size, int64_t patch, double overlap);

/* The importance map (d, h, w) f32 (host) described above. */
mt_tensor *mt_eval_gaussian_map(const int64_t *patch /* (d, h, w) */, double sigma_scale);

/* Sliding-window prediction of image (C, D, H, W) (any float dtype/device)
 * into *out (K, D, H, W) f32 on the host. Errors: invalid options, a predictor
 * returning NULL (its message kept) or a wrongly shaped output (named). */
mt_status mt_eval_sliding_window(mt_tensor **out /* (K, D, H, W) */,
                                 const mt_tensor *image /* (C, D, H, W) */, mt_eval_predict_fn fn,
                                 void *ctx, const mt_eval_sw_opts *o);

/* Predictor for a module (ctx = mt_module *): x is moved to the device of the
 * module's first parameter and passed to mt_module_forward. The caller
 * chooses the mode; mt_eval_sliding_window_model sets eval and no-grad. */
mt_tensor *mt_eval_module_predict(void *ctx, const mt_tensor *x /* (B, C, d, h, w) */);

/* Sliding window with a model (e.g. layers/models/unet3d.h) as predictor, in
 * eval mode with grad mode off (both restored afterwards). For a UNet3D the
 * patch is first checked against its depth (mt_unet3d_check_patch). */
mt_status mt_eval_sliding_window_model(mt_tensor **out /* (K, D, H, W) */,
                                       const mt_tensor *image /* (C, D, H, W) */,
                                       mt_module *model, const mt_eval_sw_opts *o);

#ifdef __cplusplus
}
#endif
#endif
