/* CPU kernel prototypes, one per backend slot (see core/backend.h for the
 * contracts). Declared weak while families are being filled in: a kernel
 * that is absent resolves to NULL and mt_kernel() reports it by name. */
#ifndef MT_CPU_KERNELS_H
#define MT_CPU_KERNELS_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_CPU_WEAK __attribute__((weak))

void mt_cpu_fill(mt_tensor *out, double value) MT_CPU_WEAK;
void mt_cpu_copy(mt_tensor *out, const mt_tensor *in) MT_CPU_WEAK;
void mt_cpu_binary(mt_binary_op op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b) MT_CPU_WEAK;
void mt_cpu_unary(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) MT_CPU_WEAK;
void mt_cpu_unary_backward(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *in, const mt_tensor *out, float alpha) MT_CPU_WEAK;
void mt_cpu_one_hot(mt_tensor *out, const mt_tensor *labels, int num_classes) MT_CPU_WEAK;
void mt_cpu_argmax_channel(mt_tensor *out, const mt_tensor *in) MT_CPU_WEAK;
void mt_cpu_reduce(mt_reduce_op op, mt_tensor *out, const mt_tensor *in) MT_CPU_WEAK;
void mt_cpu_softmax(mt_tensor *out, const mt_tensor *in, int dim, int log) MT_CPU_WEAK;
void mt_cpu_softmax_backward(mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *out, int dim, int log) MT_CPU_WEAK;
void mt_cpu_rng_uniform(mt_tensor *out, uint64_t seed, uint64_t offset, float lo, float hi) MT_CPU_WEAK;
void mt_cpu_rng_normal(mt_tensor *out, uint64_t seed, uint64_t offset, float mean, float std) MT_CPU_WEAK;
void mt_cpu_gemm(mt_tensor *c, const mt_tensor *a, const mt_tensor *b, int trans_a, int trans_b, float alpha, float beta) MT_CPU_WEAK;
void mt_cpu_conv3d_forward(mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias , const mt_conv_params *p) MT_CPU_WEAK;
void mt_cpu_conv3d_backward_data(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w, const mt_conv_params *p) MT_CPU_WEAK;
void mt_cpu_conv3d_backward_filter(mt_tensor *dw, mt_tensor *db, const mt_tensor *x, const mt_tensor *dy, const mt_conv_params *p) MT_CPU_WEAK;
void mt_cpu_batch_norm_forward(mt_tensor *y, mt_tensor *save_mean, mt_tensor *save_invstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, mt_tensor *running_mean, mt_tensor *running_var, int training, float momentum, float eps) MT_CPU_WEAK;
void mt_cpu_batch_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *save_mean, const mt_tensor *save_invstd, int training) MT_CPU_WEAK;
void mt_cpu_group_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, int groups, float eps) MT_CPU_WEAK;
void mt_cpu_group_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean, const mt_tensor *rstd, int groups) MT_CPU_WEAK;
void mt_cpu_layer_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias, int64_t norm_numel, float eps) MT_CPU_WEAK;
void mt_cpu_layer_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean, const mt_tensor *rstd, int64_t norm_numel) MT_CPU_WEAK;
void mt_cpu_max_pool3d_forward(mt_tensor *y, mt_tensor *indices , const mt_tensor *x, const mt_pool_params *p) MT_CPU_WEAK;
void mt_cpu_max_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *indices) MT_CPU_WEAK;
void mt_cpu_avg_pool3d_forward(mt_tensor *y, const mt_tensor *x, const mt_pool_params *p) MT_CPU_WEAK;
void mt_cpu_avg_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_pool_params *p) MT_CPU_WEAK;
void mt_cpu_upsample_trilinear_forward(mt_tensor *y, const mt_tensor *x, int align_corners) MT_CPU_WEAK;
void mt_cpu_upsample_trilinear_backward(mt_tensor *dx, const mt_tensor *dy, int align_corners) MT_CPU_WEAK;
void mt_cpu_sgd_step(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad, float lr, float momentum, float dampening, float weight_decay, int nesterov, int first) MT_CPU_WEAK;
void mt_cpu_adam_step(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq, const mt_tensor *grad, float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled, int64_t step) MT_CPU_WEAK;

void mt_cpu_sgd_step_multi(int n, mt_tensor *const *params, mt_tensor *const *bufs, mt_tensor *const *grads, float lr, float momentum, float dampening, float weight_decay, int nesterov, int first) MT_CPU_WEAK;
void mt_cpu_adam_step_multi(int n, mt_tensor *const *params, mt_tensor *const *exp_avgs, mt_tensor *const *exp_avg_sqs, mt_tensor *const *grads, float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled, int64_t step) MT_CPU_WEAK;

/* ---- bf16 support (core/cpu/bf16.c) ----
 * The adapter: bf16 inputs as f32 copies, bf16 outputs as f32 scratch that
 * mt_cpu_bf16_done rounds (once, to nearest even) into the bf16 tensor and
 * releases. f32 (and NULL) tensors pass through unchanged. */
#define MT_CPU_BF16_MAX 8
typedef struct {
    int n;
    mt_tensor *f32[MT_CPU_BF16_MAX];
    mt_tensor *orig[MT_CPU_BF16_MAX]; /* bf16 output of each f32 scratch, NULL for inputs */
} mt_cpu_bf16_ctx;
/* f32 copy of a bf16 input: contiguous, broadcast (stride-0) dims kept broadcast. */
const mt_tensor *mt_cpu_bf16_in(mt_cpu_bf16_ctx *c, const mt_tensor *t);
/* f32 scratch (contiguous) for a bf16 output (any strides); load: start from its values. */
mt_tensor *mt_cpu_bf16_out(mt_cpu_bf16_ctx *c, mt_tensor *t, int load);
void mt_cpu_bf16_done(mt_cpu_bf16_ctx *c);
/* n elements bf16 (element stride; 0 broadcasts src[0]) -> f32 contiguous, and back
 * with round to nearest even (bit-identical to mt_f32_to_bf16). Single-threaded. */
void mt_cpu_bf16_load(float *dst, const mt_bf16 *src, int64_t stride, int64_t n);
void mt_cpu_bf16_store(mt_bf16 *dst, int64_t stride, const float *src, int64_t n);
/* Aborts naming op unless every non-NULL tensor of ts is f32 or bf16 and all
 * share one dtype. */
void mt_cpu_check_float_same(const char *op, int n, const mt_tensor *const *ts);
#define MT_CPU_CHECK_FLOAT_SAME(op, ...)                                                   \
    mt_cpu_check_float_same((op), (int)(sizeof((const mt_tensor *[]){__VA_ARGS__}) /       \
                                        sizeof(const mt_tensor *)),                       \
                            (const mt_tensor *[]){__VA_ARGS__})

/* BLAS thread count (core/cpu/matmul.c). */
void mt_cpu_blas_set_num_threads(int n) MT_CPU_WEAK;

#ifdef __cplusplus
}
#endif
#endif
