/* CUDA kernel prototypes, one per backend slot (contracts: core/backend.h).
 * Declared weak like the CPU's (core/cpu/cpu_kernels.h): a kernel that is
 * absent resolves to NULL and mt_kernel() reports it by name. One file per op
 * family: core/cuda/<family>.cu, the same families as core/cpu/. */
#ifndef MT_CUDA_KERNELS_H
#define MT_CUDA_KERNELS_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_CUDA_WEAK __attribute__((weak))

void mt_cuda_fill(mt_tensor *out, double value) MT_CUDA_WEAK;
void mt_cuda_copy(mt_tensor *out, const mt_tensor *in) MT_CUDA_WEAK;
void mt_cuda_binary(mt_binary_op op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b) MT_CUDA_WEAK;
void mt_cuda_unary(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) MT_CUDA_WEAK;
void mt_cuda_unary_backward(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *in, const mt_tensor *out, float alpha) MT_CUDA_WEAK;
void mt_cuda_one_hot(mt_tensor *out, const mt_tensor *labels, int num_classes) MT_CUDA_WEAK;
void mt_cuda_argmax_channel(mt_tensor *out, const mt_tensor *in) MT_CUDA_WEAK;
void mt_cuda_reduce(mt_reduce_op op, mt_tensor *out, const mt_tensor *in) MT_CUDA_WEAK;
void mt_cuda_softmax(mt_tensor *out, const mt_tensor *in, int dim, int log) MT_CUDA_WEAK;
void mt_cuda_softmax_backward(mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *out, int dim, int log) MT_CUDA_WEAK;
void mt_cuda_rng_uniform(mt_tensor *out, uint64_t seed, uint64_t offset, float lo, float hi) MT_CUDA_WEAK;
void mt_cuda_rng_normal(mt_tensor *out, uint64_t seed, uint64_t offset, float mean, float std) MT_CUDA_WEAK;
void mt_cuda_gemm(mt_tensor *c, const mt_tensor *a, const mt_tensor *b, int trans_a, int trans_b, float alpha, float beta) MT_CUDA_WEAK;
void mt_cuda_conv3d_forward(mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias , const mt_conv_params *p) MT_CUDA_WEAK;
void mt_cuda_conv3d_backward_data(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w, const mt_conv_params *p) MT_CUDA_WEAK;
void mt_cuda_conv3d_backward_filter(mt_tensor *dw, mt_tensor *db, const mt_tensor *x, const mt_tensor *dy, const mt_conv_params *p) MT_CUDA_WEAK;
void mt_cuda_batch_norm_forward(mt_tensor *y, mt_tensor *save_mean, mt_tensor *save_invstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, mt_tensor *running_mean, mt_tensor *running_var, int training, float momentum, float eps) MT_CUDA_WEAK;
void mt_cuda_batch_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *save_mean, const mt_tensor *save_invstd, int training) MT_CUDA_WEAK;
void mt_cuda_group_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, int groups, float eps) MT_CUDA_WEAK;
void mt_cuda_group_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean, const mt_tensor *rstd, int groups) MT_CUDA_WEAK;
void mt_cuda_layer_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, int64_t norm_numel, float eps) MT_CUDA_WEAK;
void mt_cuda_layer_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean, const mt_tensor *rstd, int64_t norm_numel) MT_CUDA_WEAK;
void mt_cuda_max_pool3d_forward(mt_tensor *y, mt_tensor *indices , const mt_tensor *x, const mt_pool_params *p) MT_CUDA_WEAK;
void mt_cuda_max_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *indices) MT_CUDA_WEAK;
void mt_cuda_avg_pool3d_forward(mt_tensor *y, const mt_tensor *x, const mt_pool_params *p) MT_CUDA_WEAK;
void mt_cuda_avg_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_pool_params *p) MT_CUDA_WEAK;
void mt_cuda_upsample_trilinear_forward(mt_tensor *y, const mt_tensor *x, int align_corners) MT_CUDA_WEAK;
void mt_cuda_upsample_trilinear_backward(mt_tensor *dx, const mt_tensor *dy, int align_corners) MT_CUDA_WEAK;
void mt_cuda_sgd_step(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad, float lr, float momentum, float dampening, float weight_decay, int nesterov, int first) MT_CUDA_WEAK;
void mt_cuda_adam_step(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq, const mt_tensor *grad, float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled, int64_t step) MT_CUDA_WEAK;

void mt_cuda_sgd_step_multi(int n, mt_tensor *const *params, mt_tensor *const *bufs, mt_tensor *const *grads, float lr, float momentum, float dampening, float weight_decay, int nesterov, int first) MT_CUDA_WEAK;
void mt_cuda_adam_step_multi(int n, mt_tensor *const *params, mt_tensor *const *exp_avgs, mt_tensor *const *exp_avg_sqs, mt_tensor *const *grads, float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled, int64_t step) MT_CUDA_WEAK;


#ifdef __cplusplus
}
#endif
#endif
