/* Layers as modules (layers/module.h), with PyTorch's parameter names,
 * shapes and default initialisation:
 *  - Conv3d / ConvTranspose3d / Linear: kaiming_uniform_(a = sqrt(5)) on the
 *    weight, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias from the
 *    same bound, fan_in = weight.shape[1] * kernel volume (for the transposed
 *    conv that is Cout/groups * kvol, as torch computes it from its weight);
 *  - norms: weight = 1, bias = 0, running_mean = 0, running_var = 1,
 *    num_batches_tracked = 0 (0-d i32, see module.h).
 * Random init draws from the mt_rng passed to the constructor (weight first,
 * then bias), so a seeded rng gives reproducible models.
 *
 * Files: conv.c (Conv3d, ConvTranspose3d), norm.c (BatchNorm3d,
 * InstanceNorm3d, GroupNorm, LayerNorm), linear.c (Linear), misc.c
 * (MaxPool3d, Dropout, activations).
 */
#ifndef MT_LAYERS_H
#define MT_LAYERS_H

#include "autograd/ops.h"
#include "layers/module.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution (layers/conv.c) ---- */
typedef struct {
    int kernel[3];  /* (kD, kH, kW) */
    int stride[3];
    int padding[3];
    int dilation[3];
    int output_padding[3]; /* transposed only */
    int groups;
    int bias;       /* 1: has a bias parameter */
} mt_conv3d_opts;
/* Cubic kernel k, same stride/padding on all axes, dilation 1, groups 1, bias. */
mt_conv3d_opts mt_conv3d_opts_make(int k, int stride, int padding, int bias);

/* Conv3d: weight (Cout, Cin/groups, kD, kH, kW), bias (Cout). Forward maps
 * (N, Cin, D, H, W) -> (N, Cout, oD, oH, oW). */
mt_module *mt_conv3d_new(int in_channels, int out_channels, const mt_conv3d_opts *o, mt_rng *rng);
/* ConvTranspose3d: weight (Cin, Cout/groups, kD, kH, kW), bias (Cout). */
mt_module *mt_conv_transpose3d_new(int in_channels, int out_channels, const mt_conv3d_opts *o,
                                   mt_rng *rng);
/* Geometry of a Conv3d / ConvTranspose3d module (for FLOP counts and checks). */
const mt_conv3d_opts *mt_conv3d_get_opts(const mt_module *conv);

/* ---- normalisation (layers/norm.c); inputs (N, C, *) ---- */
/* BatchNorm3d: weight, bias (C); buffers running_mean, running_var (C),
 * num_batches_tracked (0-d i32). Training: batch statistics, running stats
 * updated with momentum (unbiased variance), counter incremented; eval:
 * running statistics. */
mt_module *mt_batch_norm3d_new(int num_features, float eps, float momentum);
/* SyncBatchNorm (torch.nn.SyncBatchNorm.convert_sync_batchnorm): sets (on = 1)
 * or clears the sync flag of every BatchNorm3d in the tree m; returns how many
 * there are. With the flag, a training forward uses mt_sync_batch_norm
 * (autograd/ops.h): statistics over the samples of all ranks through the
 * process-wide all-reduce hook; eval, or no hook (one rank), is plain batch
 * norm. Names, parameters and buffers are unchanged (weight files are the
 * same). */
int mt_module_convert_sync_batchnorm(mt_module *m, int on);
/* Whether m is a BatchNorm3d with the sync flag set. */
int mt_batch_norm3d_is_sync(const mt_module *m);
/* InstanceNorm3d without running stats; affine adds weight, bias (C).
 * Same in train and eval (track_running_stats=False). */
mt_module *mt_instance_norm3d_new(int num_features, float eps, int affine);
/* GroupNorm(num_groups, num_channels); affine adds weight, bias (C). */
mt_module *mt_group_norm_new(int num_groups, int num_channels, float eps, int affine);
/* LayerNorm over the last ndim dims of the given shape; elementwise_affine
 * adds weight, bias with that shape. */
mt_module *mt_layer_norm_new(int ndim, const int64_t *normalized_shape, float eps,
                             int elementwise_affine);

/* ---- linear (layers/linear.c) ---- */
/* weight (out, in), bias (out); forward (*, in) -> (*, out). */
mt_module *mt_linear_new(int in_features, int out_features, int bias, mt_rng *rng);

/* ---- parameter-free layers (layers/misc.c) ---- */
mt_module *mt_max_pool3d_new(int kernel, int stride, int padding);
/* Elementwise dropout (nn.Dropout); identity in eval or when p == 0. Its
 * random stream is (seed, 0) advanced at each training forward. */
mt_module *mt_dropout_new(float p, uint64_t seed);
/* The mask generator of a Dropout module (its state advances with every
 * training forward; checkpoints save it), or NULL if m is not a Dropout. */
mt_rng *mt_dropout_rng(mt_module *m);

typedef enum {
    MT_ACT_RELU = 0,
    MT_ACT_LEAKY_RELU, /* negative slope parameter */
    MT_ACT_GELU,       /* exact erf form */
    MT_ACT_SIGMOID,
    MT_ACT_IDENTITY
} mt_act_type;
/* Activation module (ReLU, LeakyReLU(slope), GELU, Sigmoid, Identity). */
mt_module *mt_activation_new(mt_act_type type, float slope);
/* Functional form of the same activation. */
mt_tensor *mt_activation_apply(mt_act_type type, float slope, const mt_tensor *x /* any shape */);
const char *mt_act_type_name(mt_act_type t);

#ifdef __cplusplus
}
#endif
#endif
