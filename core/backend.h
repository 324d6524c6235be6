/* The backend kernel interface (DESIGN.md decision 2).
 *
 * The CPU and CUDA backends fill in the same table. Kernels compute only;
 * gradient rules live in autograd/. Conventions for every kernel:
 *  - argument order: outputs, inputs, parameters;
 *  - outputs are written (=), never accumulated, and are contiguous unless a
 *    kernel says otherwise;
 *  - inputs are contiguous unless a kernel says otherwise (the callers in
 *    autograd/ make them so);
 *  - a kernel that does not support a dtype aborts naming the op, device and
 *    dtype (MT_KERNEL_DTYPE_CHECK); a missing kernel (NULL slot) is reported by
 *    mt_kernel() naming the op and device; there is never a silent fallback.
 * All tensors passed to one kernel live on the same device.
 *
 * Dtypes (DESIGN.md decision 6, bf16-mixed). Kernels that take activations
 * accept f32 or bf16 for them; within one call every activation-role tensor
 * (x, y, dx, dy, a, b, out, ...) has the same dtype unless the slot says
 * otherwise. Parameters of norms (weight, bias, dweight, dbias), statistics
 * (mean, rstd, save_*, running_*), optimizer tensors and RNG outputs named
 * f32 are always f32. Arithmetic is f32 (or wider) inside the kernel; bf16
 * results are rounded to nearest even once, when stored (mt_f32_to_bf16 on
 * the CPU, the same rule on the GPU).
 */
#ifndef MT_BACKEND_H
#define MT_BACKEND_H

#include <stddef.h>

#include "core/tensor.h"

struct mt_alloc_stats;

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_BIN_ADD = 0, MT_BIN_SUB, MT_BIN_MUL, MT_BIN_DIV, MT_BIN_MAX, MT_BIN_MIN,
    MT_BIN_EQ, /* 1.0 where a == b else 0.0 (not differentiable) */
    MT_BIN_GE, /* 1.0 where a >= b else 0.0 (not differentiable) */
    MT_NUM_BINARY_OPS
} mt_binary_op;

typedef enum {
    MT_UN_NEG = 0,
    MT_UN_EXP,
    MT_UN_LOG,
    MT_UN_SQRT,
    MT_UN_RSQRT,
    MT_UN_ABS,
    MT_UN_SQUARE,
    MT_UN_RECIP,
    MT_UN_RELU,
    MT_UN_LEAKY_RELU, /* alpha = negative slope */
    MT_UN_GELU,       /* exact (erf) form, as torch.nn.GELU() */
    MT_UN_SIGMOID,
    MT_UN_TANH,
    MT_UN_SOFTPLUS,   /* log(1 + exp(x)), stable */
    MT_UN_LOG_SIGMOID,/* -softplus(-x), stable */
    MT_UN_ADD_SCALAR, /* x + alpha */
    MT_UN_MUL_SCALAR, /* x * alpha */
    MT_UN_POW_SCALAR, /* x ^ alpha */
    MT_UN_CLAMP_MIN,  /* max(x, alpha) */
    MT_UN_CLAMP_MAX,  /* min(x, alpha) */
    MT_NUM_UNARY_OPS
} mt_unary_op;

typedef enum { MT_RED_SUM = 0, MT_RED_SUMSQ, MT_RED_MAX, MT_RED_MIN, MT_RED_ABSMAX, MT_NUM_REDUCE_OPS } mt_reduce_op;

/* Convolution geometry, spatial dims ordered (D, H, W). */
typedef struct {
    int stride[3];
    int padding[3];
    int dilation[3];
    int output_padding[3]; /* transposed conv only */
    int groups;
} mt_conv_params;

typedef struct {
    int kernel[3];
    int stride[3];
    int padding[3];
    int count_include_pad; /* avg pool */
} mt_pool_params;

typedef struct mt_backend {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t nbytes);
    void (*free)(void *p, size_t nbytes);
    /* Copy nbytes between host and this device (dir: 0 = to device, 1 = to host). */
    void (*memcpy_host)(void *dst, const void *src, size_t nbytes, int to_host);
    /* Copy from this backend's page-locked host memory (host_alloc_pinned) to
     * the device, queued behind the device's earlier work and returning at
     * once (NULL: none). The source may be freed right after the call: the
     * pinned allocator reuses a block only when the copies queued before its
     * free have finished. */
    void (*memcpy_pinned_to_device)(void *dst, const void *src, size_t nbytes);
    void (*synchronize)(void);
    /* Number of usable devices of this type (0: compiled in but none present). */
    int (*device_count)(void);
    /* Why device_count() is 0 (driver/runtime message), or NULL. */
    const char *(*device_error)(void);
    /* Makes device `index` current for the calling thread; returns 0 or -1 with
     * mt_error_set naming the problem. */
    int (*set_device)(int index);
    /* Allocator statistics of this backend's memory (core/alloc.h's struct). */
    void (*memory_stats)(struct mt_alloc_stats *out);
    void (*memory_reset_peak)(void);
    /* Page-locked host memory for fast copies to this device (cached; NULL
     * slots: none). Used through mt_tensor_new_pinned. */
    void *(*host_alloc_pinned)(size_t nbytes);
    void (*host_free_pinned)(void *p, size_t nbytes);

    /* ---- elementwise (core/cpu/elementwise.c) ---- */
    void (*fill)(mt_tensor *out, double value);                 /* out: any strides */
    /* out <- cast(in); same shape; both any strides (in may be broadcast, stride 0). */
    void (*copy)(mt_tensor *out, const mt_tensor *in);
    /* out <- a (op) b; a and b are views with out's shape (broadcast dims have
     * stride 0); out contiguous. */
    void (*binary)(mt_binary_op op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b);
    void (*unary)(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha);
    /* grad_in <- grad_out * f'(in) (out = f(in) is passed too, it may be cheaper). */
    void (*unary_backward)(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out,
                           const mt_tensor *in, const mt_tensor *out, float alpha);
    /* out (f32) <- one_hot(labels (i32/u8), num_classes) with labels (N, 1, *)
     * or (N, *) and out (N, C, *); label values outside [0, C) abort (on the
     * GPU at the backend's next synchronisation: synchronize or a copy to
     * the host, so the kernel itself does not stall the host). */
    void (*one_hot)(mt_tensor *out, const mt_tensor *labels, int num_classes);
    /* out (i32) (N, 1, *) <- argmax over dim 1 of in (N, C, *). */
    void (*argmax_channel)(mt_tensor *out, const mt_tensor *in);

    /* ---- reductions (core/cpu/reduce.c) ---- */
    /* out has in's ndim with size 1 in each reduced dim (keepdim form). */
    /* in f32|bf16; out f32 or in's dtype (accumulation in f32 or wider). */
    void (*reduce)(mt_reduce_op op, mt_tensor *out, const mt_tensor *in);
    void (*softmax)(mt_tensor *out, const mt_tensor *in, int dim, int log);
    /* grad_in from grad_out and the forward output. */
    void (*softmax_backward)(mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *out,
                             int dim, int log);

    /* ---- random (core/cpu/random.c): Philox4x32-10 on (seed, offset + i) ---- */
    void (*rng_uniform)(mt_tensor *out, uint64_t seed, uint64_t offset, float lo, float hi);
    void (*rng_normal)(mt_tensor *out, uint64_t seed, uint64_t offset, float mean, float std);

    /* ---- matmul (core/cpu/matmul.c) ----
     * c (B, M, N) <- alpha * op(a) @ op(b) + beta * c, op = transpose if trans_*.
     * a is (B, M, K) or (B, K, M) if trans_a; b is (B, K, N) or (B, N, K).
     * Batch stride 0 in a or b broadcasts it. Inner dims contiguous.
     * a, b f32|bf16 (same dtype); c f32 or a's dtype; accumulation f32 (tf32
     * inputs on the GPU when mt_backend_allow_tf32()). */
    void (*gemm)(mt_tensor *c, const mt_tensor *a, const mt_tensor *b, int trans_a, int trans_b,
                 float alpha, float beta);

    /* ---- convolution (core/cpu/conv.c) ----
     * x (N, Cin, D, H, W), w (Cout, Cin/groups, kD, kH, kW), y (N, Cout, oD, oH, oW).
     * x, w, y, dx, dy, dw (and bias, db) share one dtype, f32|bf16; f32
     * accumulation (tf32 on the GPU when mt_backend_allow_tf32()). */
    void (*conv3d_forward)(mt_tensor *y, const mt_tensor *x, const mt_tensor *w,
                           const mt_tensor *bias /* (Cout) or NULL */, const mt_conv_params *p);
    void (*conv3d_backward_data)(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w,
                                 const mt_conv_params *p);
    /* dw <- dL/dw; db (Cout) <- sum of dy over N, D, H, W if db != NULL. */
    void (*conv3d_backward_filter)(mt_tensor *dw, mt_tensor *db, const mt_tensor *x,
                                   const mt_tensor *dy, const mt_conv_params *p);

    /* ---- normalisation (core/cpu/norm.c); statistics always f32 ----
     * batch norm, x (N, C, *): train mode writes save_mean/save_invstd (C) and
     * updates running stats (C) in place (unbiased variance, as PyTorch). */
    void (*batch_norm_forward)(mt_tensor *y, mt_tensor *save_mean, mt_tensor *save_invstd,
                               const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                               mt_tensor *running_mean, mt_tensor *running_var, int training,
                               float momentum, float eps);
    /* dweight, dbias may be NULL. In eval mode save_* hold running mean and 1/sqrt(var+eps). */
    void (*batch_norm_backward)(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *save_mean, const mt_tensor *save_invstd,
                                int training);
    /* group norm, x (N, C, *): mean/rstd (N, G). weight/bias (C) may be NULL.
     * Instance norm is group norm with G = C. */
    void (*group_norm_forward)(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                               const mt_tensor *weight, const mt_tensor *bias, int groups, float eps);
    void (*group_norm_backward)(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *mean, const mt_tensor *rstd, int groups);
    /* layer norm over the last `norm_numel` elements: x viewed as (M, norm_numel);
     * mean/rstd (M); weight/bias (norm_numel) may be NULL. */
    void (*layer_norm_forward)(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                               const mt_tensor *weight, const mt_tensor *bias, int64_t norm_numel,
                               float eps);
    void (*layer_norm_backward)(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *mean, const mt_tensor *rstd, int64_t norm_numel);

    /* ---- pooling and resampling (core/cpu/pool.c) ---- x (N, C, D, H, W) */
    void (*max_pool3d_forward)(mt_tensor *y, mt_tensor *indices /* i32, same shape as y */,
                               const mt_tensor *x, const mt_pool_params *p);
    void (*max_pool3d_backward)(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *indices);
    void (*avg_pool3d_forward)(mt_tensor *y, const mt_tensor *x, const mt_pool_params *p);
    void (*avg_pool3d_backward)(mt_tensor *dx, const mt_tensor *dy, const mt_pool_params *p);
    /* y's spatial size is the target; align_corners as PyTorch. */
    void (*upsample_trilinear_forward)(mt_tensor *y, const mt_tensor *x, int align_corners);
    void (*upsample_trilinear_backward)(mt_tensor *dx, const mt_tensor *dy, int align_corners);

    /* ---- optimizers (core/cpu/optim.c), in place on f32 tensors ---- */
    /* buf may be NULL when momentum == 0. first: buf not yet initialised. */
    void (*sgd_step)(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad, float lr,
                     float momentum, float dampening, float weight_decay, int nesterov, int first);
    /* decoupled != 0: AdamW. step counts from 1. */
    void (*adam_step)(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq,
                      const mt_tensor *grad, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int decoupled, int64_t step);
    /* Multi-tensor forms: the same update over n (param, state..., grad) sets
     * in one call (one launch on the GPU). Element-for-element identical to n
     * single-tensor calls. bufs may be NULL when momentum == 0. */
    void (*sgd_step_multi)(int n, mt_tensor *const *params, mt_tensor *const *bufs,
                           mt_tensor *const *grads, float lr, float momentum, float dampening,
                           float weight_decay, int nesterov, int first);
    void (*adam_step_multi)(int n, mt_tensor *const *params, mt_tensor *const *exp_avgs,
                            mt_tensor *const *exp_avg_sqs, mt_tensor *const *grads, float lr,
                            float beta1, float beta2, float eps, float weight_decay,
                            int decoupled, int64_t step);
} mt_backend;

/* Whether fp32 convolutions and matmuls may use tf32 inputs (train.precision:
 * tf32). Only the CUDA backend acts on it; the CPU computes in full fp32. */
void mt_backend_set_allow_tf32(int allow);
int mt_backend_allow_tf32(void);

/* The table for a device type; NULL if that backend is not compiled in. */
const mt_backend *mt_backend_get(mt_device_type type);
void mt_backend_register(mt_device_type type, const mt_backend *b);
/* Whether a device is usable (compiled in and present). */
int mt_device_available(mt_device d);
/* Parses "cpu", "cuda", "cuda:N" (also "auto": the first GPU if one is
 * usable, else cpu). Returns 0, or -1 with mt_error_set saying why (unknown
 * name, no CUDA backend compiled in, no GPU visible, index out of range). */
int mt_device_parse(const char *s, mt_device *out);

/* The table for `dev` after checking that its kernel `slot` exists; aborts
 * naming op and device otherwise. Use: mt_kernel(dev, conv3d_forward)(y, x, ...). */
#define mt_kernel(dev, slot) (mt_backend_require((dev), offsetof(mt_backend, slot), #slot)->slot)
const mt_backend *mt_backend_require(mt_device dev, size_t slot_offset, const char *op);

/* In a kernel: abort unless t has dtype dt, naming op and device. */
#define MT_KERNEL_DTYPE_CHECK(op, t, dt)                                               \
    MT_CHECK_MSG((t)->dtype == (dt), "kernel '%s' on %s does not support dtype %s", op, \
                 mt_backend_get((t)->storage->device.type)->name, mt_dtype_name((t)->dtype))

/* The CPU backend table (core/cpu/backend_cpu.c). */
extern const mt_backend mt_cpu_backend;
/* Thread count used by CPU kernels (OpenMP, BLAS, oneDNN). */
void mt_cpu_set_num_threads(int n);
int mt_cpu_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
