/* LABELS: unit grad */
/* gemm kernel (core/cpu/matmul.c), mt_matmul and mt_linear (autograd/matmul.c)
 * against naive double-precision references, and their gradients against
 * references and finite differences. */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "mt_test.h"

/* Element (i, j) of matrix b of a 2-D or 3-D tensor (any strides). */
static double at3(const mt_tensor *t, int64_t b, int64_t i, int64_t j) {
    if (t->ndim == 2) return mt_tensor_get(t, (int64_t[]){i, j});
    return mt_tensor_get(t, (int64_t[]){t->shape[0] == 1 ? 0 : b, i, j});
}

/* ref (B, M, N) = sum_k A_b(i, k) B_b(k, j) with a 2-D operand broadcast. */
static double *ref_matmul(const mt_tensor *a, const mt_tensor *b, int64_t *nb_out) {
    int64_t nb = a->ndim == 3 ? a->shape[0] : (b->ndim == 3 ? b->shape[0] : 1);
    int64_t m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], n = b->shape[b->ndim - 1];
    double *r = malloc(sizeof(double) * (size_t)(nb * m * n));
    for (int64_t q = 0; q < nb; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t l = 0; l < k; l++) s += at3(a, q, i, l) * at3(b, q, l, j);
                r[(q * m + i) * n + j] = s;
            }
    *nb_out = nb;
    return r;
}

/* ---------------------------------------------------------- gemm kernel */

static void test_gemm_kernel(void) {
    /* all transpose combinations, alpha/beta, batch with broadcast b */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t B = 3, M = 7, N = 5, K = 9;
            mt_tensor *a = ta ? mt_test_rand(MT_SHAPE(B, K, M), -1, 1) : mt_test_rand(MT_SHAPE(B, M, K), -1, 1);
            mt_tensor *b2 = tb ? mt_test_rand(MT_SHAPE(1, N, K), -1, 1) : mt_test_rand(MT_SHAPE(1, K, N), -1, 1);
            mt_tensor *b = mt_tensor_expand(b2, MT_SHAPE(B, b2->shape[1], b2->shape[2]));
            mt_tensor *c = mt_test_rand(MT_SHAPE(B, M, N), -1, 1);
            double *ref = mt_test_to_f64(c);
            for (int64_t q = 0; q < B; q++)
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double s = 0;
                        for (int64_t l = 0; l < K; l++) {
                            double av = ta ? at3(a, q, l, i) : at3(a, q, i, l);
                            double bv = tb ? at3(b, q, j, l) : at3(b, q, l, j);
                            s += av * bv;
                        }
                        ref[(q * M + i) * N + j] = 1.5 * s + 0.5 * ref[(q * M + i) * N + j];
                    }
            mt_cpu_gemm(c, a, b, ta, tb, 1.5f, 0.5f);
            char what[64];
            snprintf(what, sizeof what, "gemm ta=%d tb=%d alpha beta", ta, tb);
            mt_test_allclose(c, ref, 1e-5, 1e-5, what);
            free(ref);
            mt_tensor_release(a);
            mt_tensor_release(b2);
            mt_tensor_release(b);
            mt_tensor_release(c);
        }
    /* beta = 0 writes c without reading it (NaN does not propagate); a
     * large batched product takes the sequential path, a folded one too. */
    int64_t shapes[3][4] = {{5, 33, 17, 29}, {2, 130, 140, 150}, {4, 100, 3, 1}};
    for (int s = 0; s < 3; s++) {
        int64_t B = shapes[s][0], M = shapes[s][1], N = shapes[s][2], K = shapes[s][3];
        mt_tensor *a = mt_test_rand(MT_SHAPE(B, M, K), -1, 1);
        mt_tensor *b = mt_test_rand(MT_SHAPE(B, K, N), -1, 1);
        mt_tensor *c = mt_tensor_full(MT_F32, MT_SHAPE(B, M, N), NAN, MT_DEVICE_CPU);
        int64_t nb;
        double *ref = ref_matmul(a, b, &nb);
        mt_cpu_gemm(c, a, b, 0, 0, 1.0f, 0.0f);
        mt_test_allclose(c, ref, 1e-4, 1e-5, "gemm beta=0 over NaN");
        free(ref);
        mt_tensor_release(a);
        mt_tensor_release(b);
        mt_tensor_release(c);
    }
}

/* --------------------------------------------------------------- matmul */

typedef struct {
    int transpose_a, transpose_b; /* pass the operand as a transposed view */
} mm_ctx;

static mt_tensor *mm_fn(mt_tensor **in, void *vctx) {
    const mm_ctx *c = vctx;
    /* differentiable transposed views (autograd/view.c): gemm gets them
     * through its transpose flags, without a copy */
    mt_tensor *a = c->transpose_a ? mt_transpose(in[0], -1, -2) : mt_tensor_retain(in[0]);
    mt_tensor *b = c->transpose_b ? mt_transpose(in[1], -1, -2) : mt_tensor_retain(in[1]);
    mt_tensor *out = mt_matmul(a, b);
    mt_tensor_release(a);
    mt_tensor_release(b);
    return out;
}

/* ref gradients of L = sum(C * R): dA = R @ B^T, dB = A^T @ R (summed over a
 * broadcast batch). */
static void check_matmul(const char *name, int and_, int bnd, int64_t B, int64_t M, int64_t K,
                         int64_t N, int gradcheck) {
    char what[128];
    mt_tensor *a = and_ == 3 ? mt_test_rand(MT_SHAPE(B, M, K), -1, 1) : mt_test_rand(MT_SHAPE(M, K), -1, 1);
    mt_tensor *b = bnd == 3 ? mt_test_rand(MT_SHAPE(B, K, N), -1, 1) : mt_test_rand(MT_SHAPE(K, N), -1, 1);
    mt_tensor_set_requires_grad(a, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *c = mt_matmul(a, b);
    int64_t nb;
    double *ref = ref_matmul(a, b, &nb);
    int batched = and_ == 3 || bnd == 3;
    CHECK_MSG(c->ndim == (batched ? 3 : 2) && c->shape[c->ndim - 2] == M && c->shape[c->ndim - 1] == N,
              "%s: output shape", name);
    snprintf(what, sizeof what, "%s forward", name);
    mt_test_allclose(c, ref, 1e-5, 1e-5, what);
    mt_tensor *r = mt_test_rand(c->ndim, c->shape, -1, 1);
    double *da = calloc((size_t)mt_tensor_numel(a), sizeof(double));
    double *db = calloc((size_t)mt_tensor_numel(b), sizeof(double));
    for (int64_t q = 0; q < nb; q++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double rv = at3(r, q, i, j);
                for (int64_t l = 0; l < K; l++) {
                    da[((and_ == 3 ? q : 0) * M + i) * K + l] += rv * at3(b, q, l, j);
                    db[((bnd == 3 ? q : 0) * K + l) * N + j] += rv * at3(a, q, i, l);
                }
            }
    CHECK(mt_backward(c, r, 0) == MT_OK);
    snprintf(what, sizeof what, "%s dA", name);
    mt_test_allclose(a->grad, da, 1e-4, 1e-5, what);
    snprintf(what, sizeof what, "%s dB", name);
    mt_test_allclose(b->grad, db, 1e-4, 1e-5, what);
    if (gradcheck) {
        mm_ctx ctx = {0, 0};
        mt_tensor *ins[2] = {a, b};
        mt_test_gradcheck(name, mm_fn, &ctx, 2, ins, 1e-2, 1e-3, 1e-2);
    }
    free(ref);
    free(da);
    free(db);
    mt_tensor_release(r);
    mt_tensor_release(c);
    mt_tensor_release(a);
    mt_tensor_release(b);
}

/* Transposed views as operands (gemm's transpose flags instead of copies),
 * checked through finite differences and the forward reference. */
static void check_matmul_transposed(void) {
    for (int t = 1; t < 4; t++) {
        mm_ctx ctx = {t & 1, (t >> 1) & 1};
        mt_tensor *a = ctx.transpose_a ? mt_test_rand(MT_SHAPE(3, 5, 4), -1, 1) : mt_test_rand(MT_SHAPE(3, 4, 5), -1, 1);
        mt_tensor *b = ctx.transpose_b ? mt_test_rand(MT_SHAPE(3, 6, 5), -1, 1) : mt_test_rand(MT_SHAPE(3, 5, 6), -1, 1);
        mt_tensor *av = ctx.transpose_a ? mt_tensor_transpose(a, 1, 2) : mt_tensor_retain(a);
        mt_tensor *bv = ctx.transpose_b ? mt_tensor_transpose(b, 1, 2) : mt_tensor_retain(b);
        int64_t nb;
        double *ref = ref_matmul(av, bv, &nb);
        mt_tensor *c = mt_matmul(av, bv);
        char what[64];
        snprintf(what, sizeof what, "matmul transposed views %d%d", ctx.transpose_a, ctx.transpose_b);
        mt_test_allclose(c, ref, 1e-5, 1e-5, what);
        mt_tensor_set_requires_grad(a, 1);
        mt_tensor_set_requires_grad(b, 1);
        mt_tensor *ins[2] = {a, b};
        mt_test_gradcheck(what, mm_fn, &ctx, 2, ins, 1e-2, 1e-3, 1e-2);
        free(ref);
        mt_tensor_release(c);
        mt_tensor_release(av);
        mt_tensor_release(bv);
        mt_tensor_release(a);
        mt_tensor_release(b);
    }
}

/* --------------------------------------------------------------- linear */

static mt_tensor *lin_fn(mt_tensor **in, void *ctx) { return mt_linear(in[0], in[1], ctx ? in[2] : NULL); }

static void check_linear(int nd, const int64_t *xshape, int64_t out, int bias, int gradcheck) {
    char what[96];
    int64_t in = xshape[nd - 1];
    mt_tensor *x = mt_test_rand(nd, xshape, -1, 1);
    mt_tensor *w = mt_test_rand(MT_SHAPE(out, in), -1, 1);
    mt_tensor *b = bias ? mt_test_rand(MT_SHAPE(out), -1, 1) : NULL;
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    if (b) mt_tensor_set_requires_grad(b, 1);
    mt_tensor *y = mt_linear(x, w, b);
    int64_t m = mt_tensor_numel(x) / in;
    int shape_ok = y->ndim == nd && y->shape[nd - 1] == out;
    for (int k = 0; k < nd - 1; k++) shape_ok &= y->shape[k] == xshape[k];
    CHECK_MSG(shape_ok, "linear output shape (nd %d)", nd);
    double *xd = mt_test_to_f64(x), *wd = mt_test_to_f64(w), *bd = b ? mt_test_to_f64(b) : NULL;
    mt_tensor *r = mt_test_rand(y->ndim, y->shape, -1, 1);
    double *rd = mt_test_to_f64(r);
    double *yr = malloc(sizeof(double) * (size_t)(m * out));
    double *dx = calloc((size_t)(m * in), sizeof(double)), *dw = calloc((size_t)(out * in), sizeof(double));
    double *dbr = calloc((size_t)out, sizeof(double));
    for (int64_t i = 0; i < m; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = bd ? bd[o] : 0;
            for (int64_t l = 0; l < in; l++) {
                s += xd[i * in + l] * wd[o * in + l];
                dx[i * in + l] += rd[i * out + o] * wd[o * in + l];
                dw[o * in + l] += rd[i * out + o] * xd[i * in + l];
            }
            yr[i * out + o] = s;
            dbr[o] += rd[i * out + o];
        }
    snprintf(what, sizeof what, "linear nd %d bias %d forward", nd, bias);
    mt_test_allclose(y, yr, 1e-5, 1e-5, what);
    CHECK(mt_backward(y, r, 0) == MT_OK);
    snprintf(what, sizeof what, "linear nd %d bias %d dx", nd, bias);
    mt_test_allclose(x->grad, dx, 1e-4, 1e-5, what);
    snprintf(what, sizeof what, "linear nd %d bias %d dw", nd, bias);
    mt_test_allclose(w->grad, dw, 1e-4, 1e-5, what);
    if (b) {
        snprintf(what, sizeof what, "linear nd %d db", nd);
        mt_test_allclose(b->grad, dbr, 1e-4, 1e-5, what);
    }
    if (gradcheck) {
        mt_tensor *ins[3] = {x, w, b};
        snprintf(what, sizeof what, "linear nd %d bias %d", nd, bias);
        mt_test_gradcheck(what, lin_fn, b ? (void *)1 : NULL, b ? 3 : 2, ins, 1e-2, 1e-3, 1e-2);
    }
    free(xd);
    free(wd);
    free(bd);
    free(rd);
    free(yr);
    free(dx);
    free(dw);
    free(dbr);
    mt_tensor_release(r);
    mt_tensor_release(y);
    mt_tensor_release(x);
    mt_tensor_release(w);
    if (b) mt_tensor_release(b);
}

int main(void) {
    mt_test_seed(77);
    test_gemm_kernel();
    check_matmul("matmul 2-D", 2, 2, 1, 7, 5, 9, 1);
    check_matmul("matmul batched", 3, 3, 3, 5, 4, 6, 1);
    check_matmul("matmul 2-D b broadcast", 3, 2, 4, 3, 5, 7, 1);
    check_matmul("matmul 2-D a broadcast", 2, 3, 3, 4, 6, 5, 1);
    check_matmul("matmul large batched", 3, 3, 2, 67, 129, 45, 0);
    check_matmul("matmul large b broadcast", 3, 2, 3, 61, 70, 33, 0);
    check_matmul_transposed();
    check_linear(2, (int64_t[]){7, 5}, 3, 1, 1);
    check_linear(3, (int64_t[]){2, 3, 4}, 5, 0, 1);
    check_linear(4, (int64_t[]){2, 3, 5, 6}, 4, 1, 1);
    check_linear(2, (int64_t[]){300, 48}, 96, 1, 0);
    return mt_test_finish();
}
