/* Host-side planning shared by the backends' kernels: the checks and the
 * shape bookkeeping that must be identical on every device (the contracts of
 * core/backend.h), so each backend holds only its arithmetic.
 *  - gemm operands: a 2-D or 3-D matrix with contiguous rows (batch stride 0
 *    broadcasts);
 *  - reductions: kept and reduced dims merged into groups, outer to inner;
 *  - convolutions: the geometry check of x-side, y-side and weight shapes;
 *  - pooling parameters, and the binary ops' arithmetic.
 * Violations are internal errors (MT_CHECK_MSG naming the op and shapes). */
#ifndef MT_KERNEL_PLAN_H
#define MT_KERNEL_PLAN_H

#include <stdint.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t batch, rows, cols; /* stored (row-major) matrix, before op() */
    int64_t bstride, ld;       /* batch stride (0: broadcast), row stride */
} mt_gemm_operand;

/* t (B, R, C) or (R, C); name ("a", "b", "c") for the message. */
void mt_gemm_operand_init(mt_gemm_operand *o, const mt_tensor *t, const char *name);

/* A whole gemm c (B, M, N) <- op(a) @ op(b): the three operands and the
 * product's sizes, checked against each other (batch 1 of a or b broadcasts;
 * c's batches must not overlap). */
typedef struct {
    mt_gemm_operand a, b, c;
    int64_t m, n, k, batch;
    /* b broadcast over a batch of a stored contiguously (a not transposed, c
     * contiguous likewise): the batch folds into the rows, one (batch * M, N)
     * product. */
    int fold_batch;
} mt_gemm_plan;

void mt_gemm_plan_init(mt_gemm_plan *p, const mt_tensor *c, const mt_tensor *a, const mt_tensor *b,
                       int trans_a, int trans_b);

/* Merged groups of kept (k*) and reduced (r*) dims of `in`, outer to inner;
 * size-1 dims dropped; last_reduced: the innermost group is reduced. */
typedef struct {
    int nk, nr, last_reduced;
    int64_t ks[MT_MAX_DIMS], kst[MT_MAX_DIMS];
    int64_t rs[MT_MAX_DIMS], rst[MT_MAX_DIMS];
} mt_reduce_plan;

/* The reduce slot's shapes: out and in contiguous, out of in's rank with each
 * dim equal to in's or 1 (the keepdim form). */
void mt_reduce_check_shapes(const mt_tensor *out, const mt_tensor *in);
/* out has in's ndim with size 1 in each reduced dim (the reduce slot's keepdim form). */
void mt_reduce_plan_init(mt_reduce_plan *p, const mt_tensor *out, const mt_tensor *in);

/* Checks a convolution pass: x-side (N, Cin, D, H, W), y-side (N, Cout, oD,
 * oH, oW) and w (Cout, Cin/groups, kD, kH, kW) 5-D and contiguous, groups
 * dividing the channels, and each y-side size at least 1 and at most the
 * usual output size (smaller is the transposed conv with output_padding >=
 * stride: the last input rows are never read). */
void mt_conv_check_shapes(const char *op, const mt_tensor *x, const mt_tensor *w,
                          const mt_tensor *y, const mt_conv_params *p);

/* Pooling geometry: kernel and stride positive, padding in [0, kernel / 2]. */
void mt_pool_check_params(const char *op, const mt_pool_params *p);

/* One binary op on two floats, the same on every backend (host and device). */
#ifdef __CUDACC__
#define MT_HOST_DEVICE __host__ __device__
#else
#define MT_HOST_DEVICE
#endif
static inline MT_HOST_DEVICE float mt_binary_apply(int op, float a, float b) {
    switch (op) {
    case MT_BIN_ADD: return a + b;
    case MT_BIN_SUB: return a - b;
    case MT_BIN_MUL: return a * b;
    case MT_BIN_DIV: return a / b;
    case MT_BIN_MAX: return a > b ? a : b;
    case MT_BIN_MIN: return a < b ? a : b;
    case MT_BIN_EQ: return a == b ? 1.0f : 0.0f;
    case MT_BIN_GE: return a >= b ? 1.0f : 0.0f;
    default: return 0.0f;
    }
}

#ifdef __cplusplus
}
#endif
#endif
