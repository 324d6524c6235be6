/* LABELS: gpu */
/* CUDA gemm (core/cuda/matmul.cu) against the CPU gemm on the same random
 * inputs: every trans_a / trans_b combination, batch broadcast of a or of b
 * (batch stride 0; b broadcast without transposed a is the folded
 * single-product path), 2-D operands, row strides larger than the row
 * (a and c views into wider tensors: c's extra columns must stay untouched),
 * odd M / N / K including M = 1 and N = 1, alpha / beta (beta = 0 must not
 * read c: the GPU's c starts as NaN there; alpha = 0 is c <- beta c), in
 * f32 (tf32 off), f32 with tf32 on, and bf16 a, b with f32 and with bf16 c
 * (inputs rounded to bf16 once, on the CPU, so both devices see the same
 * values). Each case runs twice: the second call on the same shapes must not
 * reach the device's system allocator (mt_cuda_alloc_stats' sys_allocs).
 *
 * Scales: a ~ N(0, 1), b ~ N(0, 1/K), so products are O(1) and the table's
 * MT_TOL_GEMM applies as it is meant. tf32 (stated here, not in the table):
 * each tf32 input keeps 10 mantissa bits, so each product has a relative
 * error below ~2e-3 (about 1e-3 systematic when truncated); on O(1) results
 * that is at most a few 1e-3 absolute (random walk over K terms of unit
 * total weight, ~4 sigma) plus the systematic share: atol 8e-3, rtol 4e-3.
 * A wrong operand, transpose or stride gives O(1) errors and still fails. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "mt_test.h"

#define TF32_ATOL 8e-3
#define TF32_RTOL 4e-3

static const mt_device CPU = {MT_CPU, 0};

typedef struct {
    mt_tensor *c, *g;
} pair;

static void pair_release(pair *p) {
    if (p->c) mt_tensor_release(p->c);
    if (p->g) mt_tensor_release(p->g);
    p->c = p->g = NULL;
}

static int64_t gpu_sys_allocs(void) {
    mt_alloc_stats st;
    memset(&st, 0, sizeof st);
    mt_device gpu = {MT_CUDA, 0};
    mt_kernel(gpu, memory_stats)(&st);
    return st.sys_allocs;
}

/* A stored tensor (base) with the same N(0, scale^2) values rounded to dt on
 * both devices, or NaN on the GPU (nan_gpu; the CPU copy is then
 * uninitialised). */
static pair make_base(int ndim, const int64_t *shape, double scale, mt_dtype dt, int nan_gpu) {
    pair r;
    if (nan_gpu) {
        r.c = mt_tensor_new(dt, ndim, shape, CPU);
        mt_tensor *nan = mt_tensor_full(dt, ndim, shape, NAN, CPU);
        r.g = mt_test_to_gpu(nan);
        mt_tensor_release(nan);
        return r;
    }
    mt_tensor *f = mt_test_randn(ndim, shape);
    float *p = MT_F32P(f);
    for (int64_t i = 0; i < mt_tensor_numel(f); i++) p[i] = (float)(p[i] * scale);
    r.c = mt_tensor_to_dtype(f, dt);
    r.g = mt_test_to_gpu(r.c);
    mt_tensor_release(f);
    return r;
}

/* The operand view (batch nb, rows, cols) of a base stored as
 * two_d ? (rows, cols + pad) : (bcast ? 1 : nb, rows, cols + pad). */
static mt_tensor *operand_view(const mt_tensor *base, int nb, int rows, int cols, int bcast,
                               int two_d, int pad) {
    mt_tensor *v = pad ? mt_tensor_slice(base, base->ndim - 1, 0, cols, 1)
                       : mt_tensor_retain((mt_tensor *)base);
    if (!two_d && bcast && nb > 1) {
        mt_tensor *e = mt_tensor_expand(v, 3, (int64_t[]){nb, rows, cols});
        mt_tensor_release(v);
        v = e;
    }
    return v;
}

typedef struct {
    const char *name;
    int nb, m, n, k, ta, tb;
    int a_bcast, b_bcast; /* batch stride 0 */
    int two_d;            /* 2-D operands (nb 1) */
    int pad_a, pad_c;     /* extra stored columns: row stride > cols */
    float alpha, beta;
} gemm_case;

static void run_case(const gemm_case *gc, mt_dtype dt, mt_dtype ct, int tf32) {
    char what[256], mode[32];
    snprintf(mode, sizeof mode, "%s%s -> %s", mt_dtype_name(dt), tf32 ? "+tf32" : "",
             mt_dtype_name(ct));
    mt_backend_set_allow_tf32(tf32);
    int ar = gc->ta ? gc->k : gc->m, acl = gc->ta ? gc->m : gc->k;
    int br = gc->tb ? gc->n : gc->k, bcl = gc->tb ? gc->k : gc->n;
    int nb = gc->nb;
    int64_t as[3], bs[3], cs[3];
    int nd = gc->two_d ? 2 : 3;
    if (gc->two_d) {
        as[0] = ar, as[1] = acl + gc->pad_a;
        bs[0] = br, bs[1] = bcl;
        cs[0] = gc->m, cs[1] = gc->n + gc->pad_c;
    } else {
        as[0] = gc->a_bcast ? 1 : nb, as[1] = ar, as[2] = acl + gc->pad_a;
        bs[0] = gc->b_bcast ? 1 : nb, bs[1] = br, bs[2] = bcl;
        cs[0] = nb, cs[1] = gc->m, cs[2] = gc->n + gc->pad_c;
    }
    pair ab = make_base(nd, as, 1.0, dt, 0);
    pair bb = make_base(nd, bs, 1.0 / sqrt((double)gc->k), dt, 0);
    /* c: NaN on the GPU when beta == 0 (must not be read); random where its
     * old values matter or where its extra columns must survive */
    pair cb = make_base(nd, cs, 1.0, ct, gc->beta == 0.0f && !gc->pad_c);
    mt_tensor *av_c = operand_view(ab.c, nb, ar, acl, gc->a_bcast, gc->two_d, gc->pad_a);
    mt_tensor *av_g = operand_view(ab.g, nb, ar, acl, gc->a_bcast, gc->two_d, gc->pad_a);
    mt_tensor *bv_c = operand_view(bb.c, nb, br, bcl, gc->b_bcast, gc->two_d, 0);
    mt_tensor *bv_g = operand_view(bb.g, nb, br, bcl, gc->b_bcast, gc->two_d, 0);
    mt_tensor *cv_c = operand_view(cb.c, nb, gc->m, gc->n, 0, gc->two_d, gc->pad_c);
    mt_tensor *cv_g = operand_view(cb.g, nb, gc->m, gc->n, 0, gc->two_d, gc->pad_c);

    for (int pass = 0; pass < 2; pass++) { /* pass 1: same shapes again (c accumulates if beta != 0) */
        int64_t allocs0 = gpu_sys_allocs();
        mt_kernel(mt_tensor_device(cv_g), gemm)(cv_g, av_g, bv_g, gc->ta, gc->tb, gc->alpha, gc->beta);
        mt_kernel(mt_tensor_device(cv_g), synchronize)();
        if (pass == 1)
            CHECK_MSG(gpu_sys_allocs() == allocs0,
                      "gemm %s %s: second call allocated from the system (%lld -> %lld)", gc->name,
                      mode, (long long)allocs0, (long long)gpu_sys_allocs());
        mt_kernel(CPU, gemm)(cv_c, av_c, bv_c, gc->ta, gc->tb, gc->alpha, gc->beta);
        snprintf(what, sizeof what, "gemm %s %s%s", gc->name, mode, pass ? " (2nd call)" : "");
        /* the whole stored c: also checks that extra columns are untouched */
        if (tf32) {
            mt_tensor *h = mt_test_to_cpu(cb.g);
            mt_test_allclose_t(h, cb.c, TF32_ATOL, TF32_RTOL, what);
            mt_tensor_release(h);
        } else {
            mt_test_close(cb.g, cb.c, MT_TOL_GEMM, what);
        }
    }
    mt_tensor *views[] = {av_c, av_g, bv_c, bv_g, cv_c, cv_g};
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) mt_tensor_release(views[i]);
    pair_release(&ab);
    pair_release(&bb);
    pair_release(&cb);
    mt_backend_set_allow_tf32(0);
}

static const gemm_case g_cases[] = {
    /* name, nb, m, n, k, ta, tb, a_bcast, b_bcast, two_d, pad_a, pad_c, alpha, beta */
    {"NN 1x7x13x37", 1, 7, 13, 37, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"NN 3x13x7x29 a0.7 b0.5", 3, 13, 7, 29, 0, 0, 0, 0, 0, 0, 0, 0.7f, 0.5f},
    {"NT 3x13x7x29", 3, 13, 7, 29, 0, 1, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"TN 3x13x7x29 b0.5", 3, 13, 7, 29, 1, 0, 0, 0, 0, 0, 0, 1.0f, 0.5f},
    {"TT 3x13x7x29 a-1.3", 3, 13, 7, 29, 1, 1, 0, 0, 0, 0, 0, -1.3f, 0.0f},
    {"NN 4x65x129x257", 4, 65, 129, 257, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"TT 2x66x31x130 b1", 2, 66, 31, 130, 1, 1, 0, 0, 0, 0, 0, 1.0f, 1.0f},
    {"a broadcast NN 5x9x11x23", 5, 9, 11, 23, 0, 0, 1, 0, 0, 0, 0, 1.0f, 0.0f},
    {"a broadcast TN 5x9x11x23", 5, 9, 11, 23, 1, 0, 1, 0, 0, 0, 0, 1.0f, 0.0f},
    {"b broadcast NN (folded) 5x9x11x23", 5, 9, 11, 23, 0, 0, 0, 1, 0, 0, 0, 1.0f, 0.0f},
    {"b broadcast NT (folded) 5x9x11x23 b0.5", 5, 9, 11, 23, 0, 1, 0, 1, 0, 0, 0, 1.0f, 0.5f},
    {"b broadcast TN 5x9x11x23", 5, 9, 11, 23, 1, 0, 0, 1, 0, 0, 0, 1.0f, 0.0f},
    {"both broadcast NN 4x6x10x12", 4, 6, 10, 12, 0, 0, 1, 1, 0, 0, 0, 1.0f, 0.0f},
    {"2-D NN 17x19x23", 1, 17, 19, 23, 0, 0, 0, 0, 1, 0, 0, 1.0f, 0.0f},
    {"2-D TN 17x19x23 b0.5", 1, 17, 19, 23, 1, 0, 0, 0, 1, 0, 0, 1.0f, 0.5f},
    {"2-D NT 17x19x23", 1, 17, 19, 23, 0, 1, 0, 0, 1, 0, 0, 1.0f, 0.0f},
    {"strided a, c NN 3x11x9x21", 3, 11, 9, 21, 0, 0, 0, 0, 0, 5, 3, 1.0f, 0.0f},
    {"strided a, c TT 3x11x9x21 b0.5", 3, 11, 9, 21, 1, 1, 0, 0, 0, 4, 7, 0.9f, 0.5f},
    {"strided c, b broadcast NN 3x11x9x21", 3, 11, 9, 21, 0, 0, 0, 1, 0, 0, 3, 1.0f, 0.0f},
    {"M 1 NN 2x1x17x33", 2, 1, 17, 33, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"N 1 NN 2x19x1x33", 2, 19, 1, 33, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"N 1 TT 2x19x1x33", 2, 19, 1, 33, 1, 1, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"K 1 NN 3x5x6x1", 3, 5, 6, 1, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {"alpha 0 (c <- 0.5 c)", 2, 7, 5, 9, 0, 0, 0, 0, 0, 0, 0, 0.0f, 0.5f},
    {"alpha 0 beta 0 (c <- 0)", 2, 7, 5, 9, 0, 1, 0, 0, 0, 0, 0, 0.0f, 0.0f},
};

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(77);
    const struct {
        mt_dtype dt, ct;
        int tf32;
    } modes[] = {{MT_F32, MT_F32, 0}, {MT_F32, MT_F32, 1}, {MT_BF16, MT_F32, 0}, {MT_BF16, MT_BF16, 0}};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++)
        for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++)
            run_case(&g_cases[i], modes[m].dt, modes[m].ct, modes[m].tf32);
    return mt_test_finish();
}
