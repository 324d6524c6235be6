/* CPU matrix multiply (contract in core/backend.h):
 *   c (B, M, N) <- alpha * op(a) @ op(b) + beta * c
 * through oneDNN's sgemm (dnnl_sgemm, row-major, threaded with OpenMP).
 *
 * Why oneDNN and not OpenBLAS: Debian's OpenBLAS 0.3.21 does not recognise
 * this CPU family (AMD family 26) and falls back to its Haswell (AVX2)
 * kernels: about half the throughput of oneDNN's AVX-512 sgemm on large
 * products and 2-7x less on the skinny ones of linear layers (only a tiny
 * 64^3 product was level; experiments/bench_conv.c, RESULTS.md). Using oneDNN
 * for both conv and gemm also keeps one thread pool (OpenMP) on the hot path.
 * OpenBLAS stays available for other users; mt_cpu_blas_set_num_threads sets
 * its thread count.
 *
 * Batches: a batch stride of 0 in a or b broadcasts it. Small per-batch
 * products run in parallel over the batch (each sgemm then single-threaded:
 * oneDNN runs sequentially inside an OpenMP parallel region); large ones run
 * one after another, each threaded. c is written (=) when beta == 0 (never
 * read, NaNs in it do not propagate), else accumulated.
 *
 * bf16 (a, b bf16; c f32 or bf16): sgemm on f32 copies of a and b (f32
 * accumulation), a bf16 c rounded once (the adapter of core/cpu/bf16.c).
 */
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <string.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "core/kernel_plan.h"

void mt_cpu_blas_set_num_threads(int n) {
    if (n >= 1) openblas_set_num_threads(n);
}

/* Products below this many flops per batch item are parallelised over the
 * batch instead of inside sgemm. */
#define GEMM_BATCH_PARALLEL_FLOPS (1 << 22)


static void sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (k == 0 || alpha == 0.0f) { /* c <- beta * c (beta == 0: zeros, c not read) */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                 beta, c, ldc);
    MT_CHECK_MSG(s == dnnl_success, "gemm: dnnl_sgemm failed (status %d) for M %lld N %lld K %lld",
                 (int)s, (long long)m, (long long)n, (long long)k);
}

void mt_cpu_gemm(mt_tensor *c, const mt_tensor *a, const mt_tensor *b, int trans_a, int trans_b,
                 float alpha, float beta) {
    if (a->dtype == MT_BF16 || b->dtype == MT_BF16 || c->dtype == MT_BF16) {
        /* a, b bf16, c f32 or bf16: sgemm on f32 copies of a and b (a batch
         * broadcast stays a broadcast), c rounded once when bf16 (its old
         * values are read only when beta != 0); core/cpu/bf16.c */
        MT_CPU_CHECK_FLOAT_SAME("gemm", a, b);
        MT_CHECK_MSG(a->dtype == MT_BF16 && (c->dtype == MT_F32 || c->dtype == MT_BF16),
                     "kernel 'gemm' on cpu does not support a %s, b %s, c %s (a, b f32|bf16; c "
                     "f32 or a's dtype)",
                     mt_dtype_name(a->dtype), mt_dtype_name(b->dtype), mt_dtype_name(c->dtype));
        mt_cpu_bf16_ctx ctx = {0};
        const mt_tensor *a32 = mt_cpu_bf16_in(&ctx, a), *b32 = mt_cpu_bf16_in(&ctx, b);
        mt_cpu_gemm(mt_cpu_bf16_out(&ctx, c, beta != 0.0f), a32, b32, trans_a, trans_b, alpha, beta);
        mt_cpu_bf16_done(&ctx);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("gemm", a, MT_F32);
    MT_KERNEL_DTYPE_CHECK("gemm", b, MT_F32);
    MT_KERNEL_DTYPE_CHECK("gemm", c, MT_F32);
    mt_gemm_plan gp;
    mt_gemm_plan_init(&gp, c, a, b, trans_a, trans_b);
    const mt_gemm_operand oa = gp.a, ob = gp.b, oc = gp.c;
    const int64_t m = gp.m, n = gp.n, k = gp.k, nb = gp.batch;
    if (nb == 0 || m == 0 || n == 0) return;
    const float *pa = MT_F32P(a), *pb = MT_F32P(b);
    float *pc = MT_F32P(c);
    if (gp.fold_batch) { /* one product with the batch folded into the rows */
        sgemm(0, trans_b, nb * m, n, k, alpha, pa, oa.ld, pb, ob.ld, beta, pc, oc.ld);
        return;
    }
    double flops = 2.0 * (double)m * (double)n * (double)k;
    if (nb > 1 && flops < GEMM_BATCH_PARALLEL_FLOPS) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < nb; i++)
            sgemm(trans_a, trans_b, m, n, k, alpha, pa + i * oa.bstride, oa.ld, pb + i * ob.bstride,
                  ob.ld, beta, pc + i * oc.bstride, oc.ld);
    } else {
        for (int64_t i = 0; i < nb; i++)
            sgemm(trans_a, trans_b, m, n, k, alpha, pa + i * oa.bstride, oa.ld, pb + i * ob.bstride,
                  ob.ld, beta, pc + i * oc.bstride, oc.ld);
    }
}
