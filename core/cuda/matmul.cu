/* CUDA matrix multiply (contract in core/backend.h; CPU peer core/cpu/matmul.c):
 *   c (B, M, N) <- alpha * op(a) @ op(b) + beta * c
 * through cublasGemmStridedBatchedEx.
 *
 * Layout: medtrain's matrices are row-major; cuBLAS is column-major. A
 * row-major (R x C) matrix with row stride ld is the column-major (C x R)
 * matrix with leading dimension ld, so c^T = op(b)^T op(a)^T is computed as
 * the column-major product with the operands swapped: cuBLAS (m, n, k) =
 * (N, M, K), first operand b (opN unless trans_b), second a (opN unless
 * trans_a), ldc = c's row stride. Batch stride 0 in a or b broadcasts it
 * (strided-batched accepts a zero stride for inputs).
 *
 * Types (the contract's): a, b f32|bf16 of one dtype; c f32 or a's dtype.
 * Compute type CUBLAS_COMPUTE_32F (bf16 inputs run on tensor cores with f32
 * accumulation; f32 is true fp32), or CUBLAS_COMPUTE_32F_FAST_TF32 for f32
 * when mt_backend_allow_tf32(). bf16 c is rounded once by cuBLAS's epilogue.
 *
 * Operand rules are the CPU's (mt_gemm_operand_init, core/kernel_plan.h): 2-D or 3-D,
 * last dim contiguous, row stride ld >= cols; c's batch stride >= M * ld.
 * As on the CPU, a broadcast b over a batch of a stored contiguously (and
 * no transpose of a) is one product with the batch folded into the rows.
 * k == 0 or alpha == 0: c <- beta * c (beta == 0 writes zeros without
 * reading c), in a small kernel, as the CPU.
 *
 * cuBLAS gets a dedicated 32 MiB workspace (the size PyTorch uses on Hopper)
 * from the caching allocator, set once on the handle, so cuBLAS allocates
 * nothing itself in the steady state. (cublasSetStream would reset it to
 * cuBLAS's own pool; the handle's stream is set once, when it is created,
 * before this.)
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include "core/cuda/cuda_common.h"
#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"
#include "core/kernel_plan.h"

#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)


static pthread_mutex_t g_ws_lock = PTHREAD_MUTEX_INITIALIZER;
static void *g_ws = NULL;

static cublasHandle_t gemm_handle(void) {
    cublasHandle_t h = mt_cuda_cublas();
    pthread_mutex_lock(&g_ws_lock);
    if (!g_ws) {
        g_ws = mt_cuda_alloc(GEMM_WORKSPACE_BYTES);
        MT_CUBLAS_CHECK(cublasSetWorkspace(h, g_ws, GEMM_WORKSPACE_BYTES));
    }
    pthread_mutex_unlock(&g_ws_lock);
    return h;
}

/* c[b, i, j] (at b * bstride + i * ld + j) <- beta == 0 ? 0 : beta * c. */
template <typename T>
__global__ void gemm_scale_kernel(T *c, int64_t nb, int64_t m, int64_t n, int64_t bstride,
                                  int64_t ld, float beta) {
    MT_GRID_STRIDE(i, nb * m * n) {
        int64_t j = i % n, r = (i / n) % m, b = i / (n * m);
        T *p = c + b * bstride + r * ld + j;
        mt_st(p, beta == 0.0f ? 0.0f : beta * mt_ld(p));
    }
}

static cudaDataType_t cuda_type(mt_dtype dt) { return dt == MT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

extern "C" void mt_cuda_gemm(mt_tensor *c, const mt_tensor *a, const mt_tensor *b, int trans_a,
                             int trans_b, float alpha, float beta) {
    if (a->dtype != MT_BF16) MT_KERNEL_DTYPE_CHECK("gemm", a, MT_F32);
    MT_KERNEL_DTYPE_CHECK("gemm", b, a->dtype);
    if (c->dtype != a->dtype) MT_KERNEL_DTYPE_CHECK("gemm", c, MT_F32);
    mt_gemm_plan gp;
    mt_gemm_plan_init(&gp, c, a, b, trans_a, trans_b);
    const mt_gemm_operand oa = gp.a, ob = gp.b, oc = gp.c;
    int64_t m = gp.m, nb = gp.batch;
    const int64_t n = gp.n, k = gp.k;
    if (nb == 0 || m == 0 || n == 0) return;
    cudaStream_t st = mt_cuda_stream();
    if (k == 0 || alpha == 0.0f) {
        const unsigned threads = 256;
        unsigned blocks = mt_cuda_blocks(nb * m * n, threads);
        MT_CUDA_DISPATCH_FLOAT("gemm", c->dtype, {
            gemm_scale_kernel<T><<<blocks, threads, 0, st>>>(mt_ptr<T>(c), nb, m, n, oc.bstride,
                                                              oc.ld, beta);
            MT_CUDA_LAUNCH_CHECK("gemm_scale");
        });
        return;
    }
    if (gp.fold_batch) { /* one product with the batch folded into the rows */
        m *= nb;
        nb = 1;
    }
    MT_CHECK_MSG(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && nb <= INT_MAX && oa.ld <= INT_MAX &&
                     ob.ld <= INT_MAX && oc.ld <= INT_MAX,
                 "gemm on cuda: sizes M %lld N %lld K %lld (batch %lld) exceed cuBLAS's int range",
                 (long long)m, (long long)n, (long long)k, (long long)nb);
    const cublasComputeType_t ct = (a->dtype == MT_F32 && mt_backend_allow_tf32())
                                       ? CUBLAS_COMPUTE_32F_FAST_TF32
                                       : CUBLAS_COMPUTE_32F;
    cublasHandle_t h = gemm_handle();
    /* nb == 1: batch strides are not used; pass 0. */
    long long sA = nb > 1 ? (long long)oa.bstride : 0, sB = nb > 1 ? (long long)ob.bstride : 0,
              sC = nb > 1 ? (long long)oc.bstride : 0;
    MT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
        (int)k, &alpha, mt_tensor_data(b), cuda_type(b->dtype), (int)ob.ld, sB, mt_tensor_data(a),
        cuda_type(a->dtype), (int)oa.ld, sA, &beta, mt_tensor_data(c), cuda_type(c->dtype),
        (int)oc.ld, sC, (int)nb, ct, CUBLAS_GEMM_DEFAULT));
}
