/* UNet3D in the style of nnU-Net's PlainConvUNet, built from a config.
 *
 * L = n_levels, C_l = features[l-1] for levels l = 1..L (level L is the
 * bottleneck). Module tree (registration order = state_dict order; the
 * PyTorch twin with identical names is experiments/unet3d_torch.py):
 *
 *   enc{l}, l = 1..L     stage: [pool] conv1 [drop1] norm1 act1 conv2 [drop2] norm2 act2
 *                        conv 3x3x3 pad 1; conv1 maps C_{l-1} (in_channels for
 *                        l = 1) to C_l and has stride 2 for l > 1 when
 *                        downsample = conv; with downsample = maxpool, stages
 *                        l > 1 begin with `pool` (MaxPool3d k2 s2).
 *   for l = L-1 .. 1:
 *     up{l}              transposed: ConvTranspose3d(C_{l+1} -> C_l, k2 s2)
 *                        trilinear: {conv: Conv3d(C_{l+1} -> C_l, k1)}, then
 *                        trilinear x2 (align_corners=False); the 1x1x1 conv
 *                        commutes with the interpolation, so it runs first.
 *     dec{l}             stage on cat(up, skip) (2 C_l channels) -> C_l
 *     ds{l}              deep supervision only, l >= 2: Conv3d(C_l -> out, k1)
 *   head                 Conv3d(C_1 -> out_channels, k1)
 *
 * norm{1,2}: BatchNorm3d / InstanceNorm3d(affine per config) / GroupNorm
 * (groups per config), absent with norm = none. act{1,2}: ReLU / LeakyReLU / GELU.
 * drop{1,2}: Dropout(p), only when dropout > 0 (after the conv, before the
 * norm, as nnU-Net's ConvDropoutNormReLU).
 */
#ifndef MT_UNET3D_H
#define MT_UNET3D_H

#include "layers/layers.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_UNET3D_MAX_LEVELS 8

typedef enum { MT_NORM_BATCH = 0, MT_NORM_INSTANCE, MT_NORM_GROUP, MT_NORM_NONE } mt_norm_type;
typedef enum { MT_UPSAMPLE_TRANSPOSED = 0, MT_UPSAMPLE_TRILINEAR } mt_upsample_mode;
typedef enum { MT_DOWNSAMPLE_CONV = 0, MT_DOWNSAMPLE_MAXPOOL } mt_downsample_mode;

typedef struct {
    int in_channels;
    int out_channels;
    int n_levels;                          /* depth L, 1..MT_UNET3D_MAX_LEVELS */
    int features[MT_UNET3D_MAX_LEVELS];    /* channels per level, top first */
    mt_norm_type norm;
    int norm_groups;                       /* group norm */
    int norm_affine;                       /* instance norm (batch/group norm are always affine) */
    float norm_eps;                        /* 1e-5 */
    float bn_momentum;                     /* 0.1 */
    mt_act_type act;                       /* MT_ACT_RELU, MT_ACT_LEAKY_RELU or MT_ACT_GELU */
    float act_slope;                       /* leaky ReLU negative slope */
    mt_upsample_mode upsample;
    mt_downsample_mode downsample;
    int deep_supervision;
    float dropout;                         /* 0 = no dropout modules */
    int conv_bias;                         /* bias on the 3x3x3 stage convs (nnU-Net: 1) */
} mt_unet3d_config;

/* nnU-Net-like defaults: 1 -> 2 channels, features 32-64-128-256-320,
 * InstanceNorm(affine), LeakyReLU(0.01), transposed-conv upsampling,
 * stride-2 conv downsampling, no deep supervision, no dropout, conv bias. */
void mt_unet3d_config_default(mt_unet3d_config *cfg);
/* Checks the config; the error message names the offending field. */
mt_status mt_unet3d_config_validate(const mt_unet3d_config *cfg);
/* Checks that patch (D, H, W) is positive and divisible by 2^(L-1). */
mt_status mt_unet3d_check_patch(const mt_unet3d_config *cfg, const int64_t *patch);

/* Builds the model (training mode) with PyTorch-default initialisation drawn
 * from a stream seeded with `seed`. */
mt_status mt_unet3d_new(mt_module **out, const mt_unet3d_config *cfg, uint64_t seed);
const mt_unet3d_config *mt_unet3d_get_config(const mt_module *model);

/* Logits (N, out_channels, D, H, W) for x (N, in_channels, D, H, W); the
 * model's generic forward. Deep-supervision heads are not evaluated. */
mt_tensor *mt_unet3d_forward(mt_module *model, const mt_tensor *x /* (N, Cin, D, H, W) */);
/* Logits plus the deep-supervision outputs: ds[k] (k = 0 .. *n_ds - 1) is
 * ds{k+2}'s output (N, out_channels, D/2^(k+1), H/2^(k+1), W/2^(k+1)), highest
 * resolution first, each a new reference. *n_ds is 0 without deep
 * supervision. ds needs room for MT_UNET3D_MAX_LEVELS entries. */
mt_tensor *mt_unet3d_forward_ds(mt_module *model, const mt_tensor *x /* (N, Cin, D, H, W) */,
                                mt_tensor **ds, int *n_ds);

/* Forward FLOPs (2 x multiply-adds of every convolution and transposed
 * convolution, bias adds, norms and activations excluded) for a batch of
 * `batch` patches of size patch (D, H, W); deep-supervision heads included
 * when enabled. Training step = about 3x this. */
double mt_unet3d_flops(const mt_unet3d_config *cfg, int64_t batch, const int64_t *patch);

const char *mt_norm_type_name(mt_norm_type t);

#ifdef __cplusplus
}
#endif
#endif
