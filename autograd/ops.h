/* Differentiable ops. Each returns a new tensor reference (caller releases)
 * and records a node when grad mode is on and an input requires grad.
 * Inputs are never modified. One op family per file: the forward/backward
 * rule is in autograd/<family>.c, the kernels in core/<backend>/<family>.c.
 *
 * Backward rules write (=) input gradients; the engine accumulates (+=)
 * parameter gradients.
 */
#ifndef MT_OPS_H
#define MT_OPS_H

#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise (autograd/elementwise.c); binary ops broadcast (numpy rules) ---- */
mt_tensor *mt_add(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_sub(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_mul(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_div(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_maximum(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_minimum(const mt_tensor *a, const mt_tensor *b);
mt_tensor *mt_add_scalar(const mt_tensor *x, float s);
mt_tensor *mt_mul_scalar(const mt_tensor *x, float s);
mt_tensor *mt_pow_scalar(const mt_tensor *x, float p);
mt_tensor *mt_clamp_min(const mt_tensor *x, float lo);
mt_tensor *mt_clamp_max(const mt_tensor *x, float hi);
/* Generic unary op from the kernel enum (alpha as the enum documents). */
mt_tensor *mt_unary(mt_unary_op op, const mt_tensor *x, float alpha);
mt_tensor *mt_neg(const mt_tensor *x);
mt_tensor *mt_exp(const mt_tensor *x);
mt_tensor *mt_log(const mt_tensor *x);
mt_tensor *mt_sqrt(const mt_tensor *x);
mt_tensor *mt_abs(const mt_tensor *x);
mt_tensor *mt_square(const mt_tensor *x);
mt_tensor *mt_relu(const mt_tensor *x);
mt_tensor *mt_leaky_relu(const mt_tensor *x, float negative_slope);
mt_tensor *mt_gelu(const mt_tensor *x);
mt_tensor *mt_sigmoid(const mt_tensor *x);
mt_tensor *mt_tanh(const mt_tensor *x);
mt_tensor *mt_softplus(const mt_tensor *x);
mt_tensor *mt_log_sigmoid(const mt_tensor *x);
/* Cast (differentiable between float dtypes; gradient is cast back). */
mt_tensor *mt_to_dtype(const mt_tensor *x, mt_dtype dt);
/* Dropout: zeroes with probability p and scales by 1/(1-p) in training; the
 * identity (a new reference to x) otherwise. Draws from rng. */
mt_tensor *mt_dropout(const mt_tensor *x, float p, int training, mt_rng *rng);
/* Non-differentiable helpers. */
mt_tensor *mt_one_hot(const mt_tensor *labels, int num_classes);  /* (N,[1,]*) -> (N,C,*) f32 */
mt_tensor *mt_argmax_channel(const mt_tensor *x);                  /* (N,C,*) -> (N,1,*) i32 */

/* ---- reductions and softmax (autograd/reduce.c) ---- */
/* Sum over the listed dims (negative allowed); keepdim keeps them as size 1. */
mt_tensor *mt_sum(const mt_tensor *x, int ndims, const int *dims, int keepdim);
mt_tensor *mt_mean(const mt_tensor *x, int ndims, const int *dims, int keepdim);
mt_tensor *mt_sum_all(const mt_tensor *x);  /* 0-d */
mt_tensor *mt_mean_all(const mt_tensor *x); /* 0-d */
mt_tensor *mt_softmax(const mt_tensor *x, int dim);
mt_tensor *mt_log_softmax(const mt_tensor *x, int dim);

/* ---- views and data movement (autograd/view.c) ---- */
mt_tensor *mt_reshape(const mt_tensor *x, int ndim, const int64_t *shape);
mt_tensor *mt_permute(const mt_tensor *x, const int *perm);
mt_tensor *mt_transpose(const mt_tensor *x, int d0, int d1);
mt_tensor *mt_slice(const mt_tensor *x, int dim, int64_t start, int64_t end);
mt_tensor *mt_contiguous(const mt_tensor *x);
/* Concatenate n tensors along dim (all other dims equal). */
mt_tensor *mt_concat(int n, mt_tensor *const *xs, int dim);
/* Constant pad of the last k dims: pads = {last_lo, last_hi, prev_lo, prev_hi, ...}
 * (PyTorch F.pad order), 2k entries; negative pads crop. */
mt_tensor *mt_pad(const mt_tensor *x, int k, const int64_t *pads, float value);

/* ---- matmul (autograd/matmul.c) ---- */
/* a (M, K) @ b (K, N), or batched (B, M, K) @ (B, K, N); a 2-D b broadcasts over B. */
mt_tensor *mt_matmul(const mt_tensor *a, const mt_tensor *b);
/* x (*, in) @ w (out, in)^T + b (out), as torch.nn.functional.linear. */
mt_tensor *mt_linear(const mt_tensor *x, const mt_tensor *w, const mt_tensor *b);

/* ---- convolution (autograd/conv.c) ---- */
/* Output size per spatial dim: (in + 2p - d(k-1) - 1)/s + 1. bias may be NULL. */
mt_tensor *mt_conv3d(const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias,
                     const mt_conv_params *p);
/* w (Cin, Cout/groups, kD, kH, kW) as PyTorch ConvTranspose3d; output size
 * (in - 1)s - 2p + d(k-1) + output_padding + 1. */
mt_tensor *mt_conv_transpose3d(const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias,
                               const mt_conv_params *p);
/* Same stride/padding/dilation on all three axes, no output padding. */
mt_conv_params mt_conv_params_make(int stride, int padding, int dilation, int groups);

/* ---- normalisation (autograd/norm.c) ---- x (N, C, *) */
/* running_mean/var (C) updated in place in training (may be NULL: then batch
 * statistics are used in eval too, as track_running_stats=False). */
mt_tensor *mt_batch_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                         mt_tensor *running_mean, mt_tensor *running_var, int training,
                         float momentum, float eps);
mt_tensor *mt_group_norm(const mt_tensor *x, int groups, const mt_tensor *weight,
                         const mt_tensor *bias, float eps);
/* Instance norm without running stats (PyTorch InstanceNorm3d default). */
mt_tensor *mt_instance_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                            float eps);
/* Normalises over the last `normalized_ndim` dims. */
mt_tensor *mt_layer_norm(const mt_tensor *x, int normalized_ndim, const mt_tensor *weight,
                         const mt_tensor *bias, float eps);

/* ---- collectives (autograd/collective.c) ----
 * autograd/ must not depend on launch/ (where MPI lives), so a sum over the
 * data-parallel ranks goes through one process-wide hook that launch/
 * installs (launch/train.c: mt_dist_allreduce_f64 on the process
 * communicator, only when there are several ranks). The hook sums buf[n] in
 * place over all ranks and returns MT_OK, or an error (message set with
 * mt_error_set). Every rank must make the same sequence of calls (it is a
 * collective). Calls come from the training thread only. */
typedef mt_status (*mt_allreduce_hook)(double *buf, int64_t n, void *ctx);
/* Installs fn (NULL: none, the default), replacing any previous hook. */
void mt_set_allreduce_hook(mt_allreduce_hook fn, void *ctx);
/* Whether a hook is installed. */
int mt_allreduce_hook_installed(void);
/* Sum of x (any shape, float dtype, any device) over all ranks, same shape,
 * dtype and device: x is copied to the host as f64, reduced by the hook,
 * rounded once to x's dtype and copied back. Differentiable: the gradient of
 * the input is the all-reduce (sum) of the output's gradient, so a loss that
 * is summed over ranks gets exact gradients (PyTorch's
 * torch.distributed.nn.all_reduce). With no hook: the identity (a new
 * reference to x). A failing hook cannot be returned through an op: it
 * aborts the process (MT_CHECK_MSG with the hook's message); launch/'s hook
 * ends the whole job itself (mt_dist_abort) before returning an error. */
mt_tensor *mt_all_reduce_sum(const mt_tensor *x);

/* Batch norm whose training statistics are computed over the samples of all
 * ranks (PyTorch SyncBatchNorm): with a hook installed and batch statistics
 * in use (training, or no running stats), per-channel sums of (x - c) and
 * (x - c)^2 and the local count go through ONE mt_all_reduce_sum, giving the
 * global mean and biased variance used to normalise; the running stats are
 * updated (no grad) with momentum and the unbiased variance of the global
 * count. Gradients are exact for the global batch (the all-reduce's backward
 * sums the per-channel gradient terms of all ranks). Statistics and the
 * affine transform are computed in f32 (x cast if bf16), the output has x's
 * dtype. The shift c is running_mean (identical on every rank: DDP
 * broadcasts buffers) or 0 without running stats; it keeps E[(x-c)^2] -
 * E[x-c]^2 accurate in f32 when |mean| >> std once the running mean has
 * approached the data's mean. Otherwise (eval with running stats, or no hook
 * installed, e.g. one rank) it is exactly mt_batch_norm, as PyTorch's
 * SyncBatchNorm falls back to batch_norm. */
mt_tensor *mt_sync_batch_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                              mt_tensor *running_mean, mt_tensor *running_var, int training,
                              float momentum, float eps);

/* ---- pooling and resampling (autograd/pool.c) ---- x (N, C, D, H, W) */
mt_tensor *mt_max_pool3d(const mt_tensor *x, const mt_pool_params *p);
mt_tensor *mt_avg_pool3d(const mt_tensor *x, const mt_pool_params *p);
/* Trilinear resize to out_size (D, H, W). */
mt_tensor *mt_upsample_trilinear(const mt_tensor *x, const int64_t *out_size, int align_corners);

#ifdef __cplusplus
}
#endif
#endif
