/* LABELS: unit */
/* bf16 on the CPU backend (dtype contract of core/backend.h; core/cpu/bf16.c
 * and the bf16 paths of core/cpu/{elementwise,reduce,matmul,conv,norm,pool}.c).
 *
 * For every kernel slot that takes activations: the bf16 kernel's output
 * against a double-precision reference computed from the same bf16 inputs,
 * within the table's bf16 tolerance (mt_test_tolerance(MT_BF16, kind)).
 *
 * Exactness: bf16 values are exact in f32, so "bf16 operands, f32 arithmetic,
 * one rounding when stored" means the bf16 output equals mt_f32_to_bf16 of
 * the f32 kernel run on the widened inputs, bit for bit. This is checked for
 * binary, unary, unary_backward (native bf16 loops), reduce, softmax,
 * softmax_backward, every norm forward and backward (y, dx, and the f32
 * statistics / parameter gradients bit-identical to the f32 kernel's), and
 * max / avg pool and trilinear forward and backward. conv and gemm are
 * checked against the reference only (same adapter; oneDNN's blocking for
 * the f32 copies is the f32 path's).
 *
 * Also: the conversion helpers against mt_f32_to_bf16 / mt_bf16_to_f32 on
 * special values and random bit patterns; strided and broadcast operands;
 * a strided bf16 gemm output (padding untouched); aborts naming op, device
 * and dtype for unsupported dtypes and mixed activation dtypes. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "mt_test.h"

#define B (&mt_cpu_backend)

/* ------------------------------------------------------------ helpers */

/* Random bf16 tensor (uniform in [lo, hi) rounded to bf16). */
static mt_tensor *rbf(int ndim, const int64_t *shape, float lo, float hi) {
    mt_tensor *f = mt_test_rand(ndim, shape, lo, hi);
    mt_tensor *b = mt_tensor_to_dtype(f, MT_BF16);
    mt_tensor_release(f);
    return b;
}

/* Contiguous f32 copy of the logical contents. */
static mt_tensor *up(const mt_tensor *t) {
    mt_tensor *c = mt_tensor_new(MT_F32, t->ndim, t->shape, MT_DEVICE_CPU);
    mt_tensor_copy_(c, t);
    return c;
}

/* New tensor filled with NaN (so that every element must be written). */
static mt_tensor *nan_t(mt_dtype dt, int ndim, const int64_t *shape) {
    return mt_tensor_full(dt, ndim, shape, NAN, MT_DEVICE_CPU);
}
static mt_tensor *nan_like(mt_dtype dt, const mt_tensor *t) { return nan_t(dt, t->ndim, t->shape); }

static void near(const mt_tensor *t, const double *ref, mt_tol_kind kind, const char *what) {
    mt_test_tol tl = mt_test_tolerance(MT_BF16, kind);
    mt_test_allclose(t, ref, tl.atol, tl.rtol, what);
}

/* got (bf16, contiguous) == mt_f32_to_bf16(f32[i]) bit for bit. */
static void exact_round(const mt_tensor *got, const mt_tensor *f32, const char *what) {
    int64_t n = mt_tensor_numel(got);
    if (got->dtype != MT_BF16 || f32->dtype != MT_F32 || !mt_tensor_is_contiguous(got) ||
        !mt_tensor_is_contiguous(f32) || mt_tensor_numel(f32) != n) {
        CHECK_MSG(0, "%s: exact_round needs contiguous bf16 / f32 tensors of one size", what);
        return;
    }
    const mt_bf16 *g = (const mt_bf16 *)mt_tensor_data(got);
    const float *f = MT_F32P(f32);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (g[i] != mt_f32_to_bf16(f[i])) {
            if (first < 0) first = i;
            bad++;
        }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ from the rounded f32 kernel (first %lld: %#x vs %#x)",
              what, (long long)bad, (long long)n, (long long)first, first >= 0 ? g[first] : 0,
              first >= 0 ? mt_f32_to_bf16(f[first]) : 0);
}

/* Two f32 tensors bit-identical. */
static void exact_f32(const mt_tensor *a, const mt_tensor *b, const char *what) {
    int ok = a->dtype == MT_F32 && b->dtype == MT_F32 && mt_tensor_numel(a) == mt_tensor_numel(b) &&
             memcmp(mt_tensor_data(a), mt_tensor_data(b), sizeof(float) * (size_t)mt_tensor_numel(a)) == 0;
    CHECK_MSG(ok, "%s: f32 outputs differ from the f32 kernel's", what);
}

static void rel(mt_tensor *t) { mt_tensor_release(t); }

/* ------------------------------------------------------------ conversions */

static void test_conversions(void) {
    /* special values, ties, subnormals, and random bit patterns */
    enum { NR = 1 << 18 };
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
        0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u,
        0x7f7f7fffu, 0x00000001u, 0x00008000u, 0x00018000u, 0x00007fffu, 0x3f808000u,
        0x3f818000u, 0x3f807fffu, 0x3f808001u, 0x3f800000u, 0xbf808000u, 0x007fffffu};
    int ns = (int)(sizeof special / sizeof special[0]);
    int n = ns + NR;
    float *f = malloc(sizeof(float) * (size_t)n), *g = malloc(sizeof(float) * (size_t)n);
    mt_bf16 *h = malloc(sizeof(mt_bf16) * (size_t)n), *hs = malloc(sizeof(mt_bf16) * 3 * (size_t)n);
    mt_rng r;
    mt_rng_init(&r, 99);
    for (int i = 0; i < n; i++) {
        uint32_t u = i < ns ? special[i] : mt_rng_u32(&r);
        memcpy(&f[i], &u, 4);
    }
    mt_cpu_bf16_store(h, 1, f, n);
    memset(hs, 0xab, sizeof(mt_bf16) * 3 * (size_t)n);
    mt_cpu_bf16_store(hs, 3, f, n);
    int bad = 0, bad_s = 0, pad_ok = 1;
    for (int i = 0; i < n; i++) {
        mt_bf16 want = mt_f32_to_bf16(f[i]);
        bad += h[i] != want;
        bad_s += hs[3 * i] != want;
        pad_ok &= hs[3 * i + 1] == 0xabab && hs[3 * i + 2] == 0xabab;
    }
    CHECK_MSG(bad == 0, "mt_cpu_bf16_store: %d of %d differ from mt_f32_to_bf16", bad, n);
    CHECK_MSG(bad_s == 0 && pad_ok, "mt_cpu_bf16_store strided: %d differ", bad_s);
    /* every bf16 pattern widens as mt_bf16_to_f32 */
    mt_bf16 *all = malloc(sizeof(mt_bf16) * 65536);
    for (int i = 0; i < 65536; i++) all[i] = (mt_bf16)i;
    float *w = malloc(sizeof(float) * 65536);
    mt_cpu_bf16_load(w, all, 1, 65536);
    int badl = 0;
    for (int i = 0; i < 65536; i++) {
        float e = mt_bf16_to_f32(all[i]);
        badl += memcmp(&e, &w[i], 4) != 0;
    }
    CHECK_MSG(badl == 0, "mt_cpu_bf16_load: %d patterns differ from mt_bf16_to_f32", badl);
    mt_cpu_bf16_load(g, all + 5, 7, 1000);
    mt_cpu_bf16_load(g + 1000, all + 77, 0, 10);
    badl = 0;
    for (int i = 0; i < 1000; i++) {
        float e = mt_bf16_to_f32(all[5 + 7 * i]);
        badl += memcmp(&e, &g[i], 4) != 0;
    }
    for (int i = 0; i < 10; i++) {
        float e = mt_bf16_to_f32(all[77]);
        badl += memcmp(&e, &g[1000 + i], 4) != 0;
    }
    CHECK_MSG(badl == 0, "mt_cpu_bf16_load strided / broadcast: %d differ", badl);
    free(all);
    free(w);
    free(f);
    free(g);
    free(h);
    free(hs);
}

/* ------------------------------------------------------------ binary */

static double bin_ref(int op, double a, double b) {
    switch (op) {
    case MT_BIN_ADD: return a + b;
    case MT_BIN_SUB: return a - b;
    case MT_BIN_MUL: return a * b;
    case MT_BIN_DIV: return a / b;
    case MT_BIN_MAX: return a > b ? a : b;
    case MT_BIN_MIN: return a < b ? a : b;
    case MT_BIN_EQ: return a == b ? 1.0 : 0.0;
    default: return a >= b ? 1.0 : 0.0;
    }
}

static void binary_case(const char *name, const mt_tensor *a, const mt_tensor *b) {
    int64_t n = mt_tensor_numel(a);
    double *da = mt_test_to_f64(a), *db = mt_test_to_f64(b), *ref = malloc(sizeof(double) * (size_t)n);
    mt_tensor *a32 = up(a), *b32 = up(b);
    for (int op = 0; op < MT_NUM_BINARY_OPS; op++) {
        char what[128];
        snprintf(what, sizeof what, "binary %s op %d", name, op);
        mt_tensor *out = nan_like(MT_BF16, a), *o32 = nan_like(MT_F32, a);
        B->binary((mt_binary_op)op, out, a, b);
        B->binary((mt_binary_op)op, o32, a32, b32);
        for (int64_t i = 0; i < n; i++) ref[i] = bin_ref(op, da[i], db[i]);
        near(out, ref, MT_TOL_ELEMENTWISE, what);
        exact_round(out, o32, what);
        rel(out);
        rel(o32);
    }
    rel(a32);
    rel(b32);
    free(da);
    free(db);
    free(ref);
}

static void test_binary(void) {
    /* contiguous, long (threads split one row); b equals a on every third element */
    mt_tensor *a = rbf(MT_SHAPE(3, 37, 331), -2, 2), *b = rbf(MT_SHAPE(3, 37, 331), -2, 2);
    for (int64_t i = 0; i < mt_tensor_numel(a); i += 3) mt_tensor_set_flat(b, i, mt_tensor_get_flat(a, i));
    binary_case("contiguous", a, b);
    rel(a);
    rel(b);
    /* broadcast per channel (last dim stride 0) */
    a = rbf(MT_SHAPE(2, 5, 7, 9), -2, 2);
    mt_tensor *bb = rbf(MT_SHAPE(1, 5, 1, 1), -2, 2);
    b = mt_tensor_expand(bb, MT_SHAPE(2, 5, 7, 9));
    binary_case("channel broadcast", a, b);
    binary_case("channel broadcast (a)", b, a);
    rel(a);
    rel(b);
    rel(bb);
    /* transposed a (last dim stride 13) */
    mt_tensor *at = rbf(MT_SHAPE(9, 13), -2, 2);
    a = mt_tensor_transpose(at, 0, 1);
    b = rbf(MT_SHAPE(13, 9), -2, 2);
    binary_case("transposed", a, b);
    rel(a);
    rel(at);
    rel(b);
    /* scalar broadcast */
    a = rbf(MT_SHAPE(4, 6, 11), -2, 2);
    bb = rbf(MT_SHAPE(1), 0.5f, 2);
    b = mt_tensor_expand(bb, MT_SHAPE(4, 6, 11));
    binary_case("scalar", a, b);
    rel(a);
    rel(b);
    rel(bb);
    /* many rows in parallel, row broadcast (batch stride 0) */
    a = rbf(MT_SHAPE(64, 701), -2, 2);
    bb = rbf(MT_SHAPE(1, 701), -2, 2);
    b = mt_tensor_expand(bb, MT_SHAPE(64, 701));
    binary_case("row broadcast", a, b);
    rel(a);
    rel(b);
    rel(bb);
    /* strided slice (step 2 along the last dim) */
    a = rbf(MT_SHAPE(6, 41), -2, 2);
    bb = rbf(MT_SHAPE(6, 82), -2, 2);
    b = mt_tensor_slice(bb, 1, 0, 82, 2);
    binary_case("sliced", a, b);
    rel(a);
    rel(b);
    rel(bb);
}

/* ------------------------------------------------------------ unary */

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

static double un_ref(int op, double x, double a) {
    switch (op) {
    case MT_UN_NEG: return -x;
    case MT_UN_EXP: return exp(x);
    case MT_UN_LOG: return log(x);
    case MT_UN_SQRT: return sqrt(x);
    case MT_UN_RSQRT: return 1.0 / sqrt(x);
    case MT_UN_ABS: return fabs(x);
    case MT_UN_SQUARE: return x * x;
    case MT_UN_RECIP: return 1.0 / x;
    case MT_UN_RELU: return x > 0 ? x : 0;
    case MT_UN_LEAKY_RELU: return x > 0 ? x : a * x;
    case MT_UN_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case MT_UN_SIGMOID: return sigm(x);
    case MT_UN_TANH: return tanh(x);
    case MT_UN_SOFTPLUS: return log1p(exp(x));
    case MT_UN_LOG_SIGMOID: return -log1p(exp(-x));
    case MT_UN_ADD_SCALAR: return x + a;
    case MT_UN_MUL_SCALAR: return x * a;
    case MT_UN_POW_SCALAR: return pow(x, a);
    case MT_UN_CLAMP_MIN: return x < a ? a : x;
    default: return x > a ? a : x; /* CLAMP_MAX */
    }
}

/* derivative from x and y (the forward output given to the kernel) */
static double un_dref(int op, double x, double y, double a) {
    switch (op) {
    case MT_UN_NEG: return -1;
    case MT_UN_EXP: return y;
    case MT_UN_LOG: return 1.0 / x;
    case MT_UN_SQRT: return 0.5 / y;
    case MT_UN_RSQRT: return -0.5 * y * y * y;
    case MT_UN_ABS: return x > 0 ? 1 : (x < 0 ? -1 : 0);
    case MT_UN_SQUARE: return 2 * x;
    case MT_UN_RECIP: return -y * y;
    case MT_UN_RELU: return x > 0 ? 1 : 0;
    case MT_UN_LEAKY_RELU: return x > 0 ? 1 : a;
    case MT_UN_GELU: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
    case MT_UN_SIGMOID: return y * (1 - y);
    case MT_UN_TANH: return 1 - y * y;
    case MT_UN_SOFTPLUS: return sigm(x);
    case MT_UN_LOG_SIGMOID: return sigm(-x);
    case MT_UN_ADD_SCALAR: return 1;
    case MT_UN_MUL_SCALAR: return a;
    case MT_UN_POW_SCALAR: return a * pow(x, a - 1);
    case MT_UN_CLAMP_MIN: return x >= a ? 1 : 0;
    default: return x <= a ? 1 : 0;
    }
}

static int un_positive(int op) {
    return op == MT_UN_LOG || op == MT_UN_SQRT || op == MT_UN_RSQRT || op == MT_UN_RECIP ||
           op == MT_UN_POW_SCALAR;
}

static float un_alpha(int op) {
    switch (op) {
    case MT_UN_LEAKY_RELU: return 0.1f;
    case MT_UN_ADD_SCALAR: return 0.7f;
    case MT_UN_MUL_SCALAR: return -1.3f;
    case MT_UN_POW_SCALAR: return 2.5f;
    case MT_UN_CLAMP_MIN: return -0.5f;
    case MT_UN_CLAMP_MAX: return 0.375f;
    default: return 0.0f;
    }
}

static void unary_shape(int ndim, const int64_t *shape) {
    for (int op = 0; op < MT_NUM_UNARY_OPS; op++) {
        char what[128];
        float alpha = un_alpha(op);
        mt_tensor *x = un_positive(op) ? rbf(ndim, shape, 0.2f, 3) : rbf(ndim, shape, -3, 3);
        int64_t n = mt_tensor_numel(x);
        mt_tensor *y = nan_like(MT_BF16, x), *x32 = up(x), *y32 = nan_like(MT_F32, x);
        B->unary((mt_unary_op)op, y, x, alpha);
        B->unary((mt_unary_op)op, y32, x32, alpha);
        double *dx = mt_test_to_f64(x), *ref = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) ref[i] = un_ref(op, dx[i], alpha);
        snprintf(what, sizeof what, "unary op %d (%lld elements)", op, (long long)n);
        near(y, ref, MT_TOL_ELEMENTWISE, what);
        exact_round(y, y32, what);

        /* backward with x and y given */
        mt_tensor *go = rbf(ndim, shape, -1, 1), *gi = nan_like(MT_BF16, x);
        mt_tensor *go32 = up(go), *yb32 = up(y), *gi32 = nan_like(MT_F32, x);
        B->unary_backward((mt_unary_op)op, gi, go, x, y, alpha);
        B->unary_backward((mt_unary_op)op, gi32, go32, x32, yb32, alpha);
        double *dg = mt_test_to_f64(go), *dy = mt_test_to_f64(y);
        for (int64_t i = 0; i < n; i++) ref[i] = dg[i] * un_dref(op, dx[i], dy[i], alpha);
        snprintf(what, sizeof what, "unary_backward op %d (%lld elements)", op, (long long)n);
        near(gi, ref, MT_TOL_ELEMENTWISE, what);
        exact_round(gi, gi32, what);
        if (op == MT_UN_RELU || op == MT_UN_LEAKY_RELU) {
            /* x only, y only (the forms autograd uses) */
            B->unary_backward((mt_unary_op)op, gi, go, x, NULL, alpha);
            B->unary_backward((mt_unary_op)op, gi32, go32, x32, NULL, alpha);
            snprintf(what, sizeof what, "unary_backward op %d from x", op);
            near(gi, ref, MT_TOL_ELEMENTWISE, what);
            exact_round(gi, gi32, what);
            B->unary_backward((mt_unary_op)op, gi, go, NULL, y, alpha);
            B->unary_backward((mt_unary_op)op, gi32, go32, NULL, yb32, alpha);
            snprintf(what, sizeof what, "unary_backward op %d from y", op);
            near(gi, ref, MT_TOL_ELEMENTWISE, what);
            exact_round(gi, gi32, what);
        }
        free(dg);
        free(dy);
        free(dx);
        free(ref);
        rel(go);
        rel(gi);
        rel(go32);
        rel(yb32);
        rel(gi32);
        rel(x);
        rel(y);
        rel(x32);
        rel(y32);
    }
}

static void test_unary(void) {
    unary_shape(MT_SHAPE(5, 3));
    unary_shape(MT_SHAPE(3, 7, 1601)); /* several threads, partial last block */
}

/* ------------------------------------------------------------ one_hot, argmax */

static void test_one_hot_argmax(void) {
    int64_t C = 7;
    mt_tensor *lab = mt_tensor_new(MT_I32, MT_SHAPE(2, 1, 3, 4, 5), MT_DEVICE_CPU);
    mt_tensor *lab8 = mt_tensor_new(MT_U8, MT_SHAPE(2, 3, 4, 5), MT_DEVICE_CPU);
    int64_t S = 60;
    for (int64_t i = 0; i < 2 * S; i++) {
        mt_tensor_set_flat(lab, i, (double)((i * 5 + i / 7) % C));
        mt_tensor_set_flat(lab8, i, (double)((i * 3 + 1) % C));
    }
    mt_tensor *o = nan_t(MT_BF16, MT_SHAPE(2, 7, 3, 4, 5)), *o8 = nan_t(MT_BF16, MT_SHAPE(2, 7, 3, 4, 5));
    B->one_hot(o, lab, (int)C);
    B->one_hot(o8, lab8, (int)C);
    int bad = 0;
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + c) * S + s;
                double w = (int64_t)mt_tensor_get_flat(lab, n * S + s) == c ? 1.0 : 0.0;
                double w8 = (int64_t)mt_tensor_get_flat(lab8, n * S + s) == c ? 1.0 : 0.0;
                bad += mt_tensor_get_flat(o, i) != w || mt_tensor_get_flat(o8, i) != w8;
            }
    CHECK_MSG(bad == 0, "one_hot bf16: %d wrong elements", bad);
    rel(lab);
    rel(lab8);
    rel(o);
    rel(o8);

    /* argmax: ties (frequent in bf16) keep the first channel */
    const int64_t shapes[2][3] = {{2, 5, 3 * 4 * 7}, {1, 3, 40000}};
    for (int k = 0; k < 2; k++) {
        int64_t N = shapes[k][0], Cc = shapes[k][1], Sp = shapes[k][2];
        mt_tensor *x = rbf(MT_SHAPE(N, Cc, Sp), -1, 1);
        /* force ties on some positions */
        for (int64_t s = 0; s < Sp; s += 5) mt_tensor_set_flat(x, Sp + s, mt_tensor_get_flat(x, s));
        mt_tensor *am = mt_tensor_new(MT_I32, MT_SHAPE(N, 1, Sp), MT_DEVICE_CPU);
        B->argmax_channel(am, x);
        double *dx = mt_test_to_f64(x);
        int wrong = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < Sp; s++) {
                int best = 0;
                for (int64_t c = 1; c < Cc; c++)
                    if (dx[(n * Cc + c) * Sp + s] > dx[(n * Cc + best) * Sp + s]) best = (int)c;
                wrong += (int)mt_tensor_get_flat(am, n * Sp + s) != best;
            }
        CHECK_MSG(wrong == 0, "argmax_channel bf16 (%lld, %lld, %lld): %d wrong", (long long)N,
                  (long long)Cc, (long long)Sp, wrong);
        free(dx);
        rel(x);
        rel(am);
    }
}

/* ------------------------------------------------------------ reduce */

static void reduce_case(int ndim, const int64_t *shape, const int64_t *oshape) {
    mt_tensor *x = rbf(ndim, shape, -2, 2), *x32 = up(x);
    int64_t n = mt_tensor_numel(x), no = 1;
    for (int d = 0; d < ndim; d++) no *= oshape[d];
    double *dx = mt_test_to_f64(x), *ref = malloc(sizeof(double) * (size_t)no);
    for (int op = 0; op < MT_NUM_REDUCE_OPS; op++) {
        for (int64_t o = 0; o < no; o++)
            ref[o] = op == MT_RED_MAX ? -INFINITY : op == MT_RED_MIN ? INFINITY : 0.0;
        for (int64_t i = 0; i < n; i++) {
            int64_t rem = i, o = 0, ost = 1;
            for (int d = ndim - 1; d >= 0; d--) {
                int64_t id = rem % shape[d];
                rem /= shape[d];
                if (oshape[d] != 1) o += id * ost;
                ost *= oshape[d];
            }
            double v = dx[i];
            switch (op) {
            case MT_RED_SUM: ref[o] += v; break;
            case MT_RED_SUMSQ: ref[o] += v * v; break;
            case MT_RED_MAX: ref[o] = v > ref[o] ? v : ref[o]; break;
            case MT_RED_MIN: ref[o] = v < ref[o] ? v : ref[o]; break;
            default: ref[o] = fabs(v) > ref[o] ? fabs(v) : ref[o]; break;
            }
        }
        char what[160];
        for (int obf = 0; obf < 2; obf++) {
            mt_tensor *out = nan_t(obf ? MT_BF16 : MT_F32, ndim, oshape);
            mt_tensor *o32 = nan_t(MT_F32, ndim, oshape);
            B->reduce((mt_reduce_op)op, out, x);
            B->reduce((mt_reduce_op)op, o32, x32);
            snprintf(what, sizeof what, "reduce op %d, %lld -> %lld elements, out %s", op,
                     (long long)n, (long long)no, obf ? "bf16" : "f32");
            near(out, ref, MT_TOL_REDUCE, what);
            if (obf)
                exact_round(out, o32, what);
            else
                exact_f32(out, o32, what);
            rel(out);
            rel(o32);
        }
    }
    free(dx);
    free(ref);
    rel(x);
    rel(x32);
}

static void test_reduce(void) {
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){1, 1, 1, 1});
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){3, 1, 7, 1});
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){1, 5, 1, 1});
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){3, 5, 7, 1});
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){1, 5, 7, 11});
    reduce_case(MT_SHAPE(3, 5, 7, 11), (int64_t[]){3, 5, 7, 11}); /* nothing reduced */
    reduce_case(MT_SHAPE(2, 3, 40000), (int64_t[]){1, 3, 1});     /* chunked, threaded */
}

/* ------------------------------------------------------------ softmax */

static void softmax_case(int ndim, const int64_t *shape, int dim) {
    mt_tensor *x = rbf(ndim, shape, -4, 4), *x32 = up(x);
    int64_t n = mt_tensor_numel(x), outer = 1, inner = 1, len = shape[dim];
    for (int d = 0; d < dim; d++) outer *= shape[d];
    for (int d = dim + 1; d < ndim; d++) inner *= shape[d];
    double *dx = mt_test_to_f64(x), *ref = malloc(sizeof(double) * (size_t)n);
    for (int lg = 0; lg < 2; lg++) {
        char what[128];
        mt_tensor *y = nan_like(MT_BF16, x), *y32 = nan_like(MT_F32, x);
        B->softmax(y, x, dim, lg);
        B->softmax(y32, x32, dim, lg);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < inner; j++) {
                int64_t base = o * len * inner + j;
                double m = -INFINITY, s = 0;
                for (int64_t k = 0; k < len; k++) m = fmax(m, dx[base + k * inner]);
                for (int64_t k = 0; k < len; k++) s += exp(dx[base + k * inner] - m);
                for (int64_t k = 0; k < len; k++) {
                    double v = dx[base + k * inner] - m;
                    ref[base + k * inner] = lg ? v - log(s) : exp(v) / s;
                }
            }
        snprintf(what, sizeof what, "softmax dim %d log %d", dim, lg);
        near(y, ref, MT_TOL_REDUCE, what);
        exact_round(y, y32, what);

        /* backward from the bf16 forward output */
        mt_tensor *go = rbf(ndim, shape, -1, 1), *gi = nan_like(MT_BF16, x);
        mt_tensor *go32 = up(go), *yb32 = up(y), *gi32 = nan_like(MT_F32, x);
        B->softmax_backward(gi, go, y, dim, lg);
        B->softmax_backward(gi32, go32, yb32, dim, lg);
        double *dg = mt_test_to_f64(go), *dy = mt_test_to_f64(y);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < inner; j++) {
                int64_t base = o * len * inner + j;
                double s = 0;
                for (int64_t k = 0; k < len; k++) {
                    int64_t i = base + k * inner;
                    s += lg ? dg[i] : dg[i] * dy[i];
                }
                for (int64_t k = 0; k < len; k++) {
                    int64_t i = base + k * inner;
                    ref[i] = lg ? dg[i] - exp(dy[i]) * s : dy[i] * (dg[i] - s);
                }
            }
        snprintf(what, sizeof what, "softmax_backward dim %d log %d", dim, lg);
        near(gi, ref, MT_TOL_REDUCE, what);
        exact_round(gi, gi32, what);
        free(dg);
        free(dy);
        rel(go);
        rel(gi);
        rel(go32);
        rel(yb32);
        rel(gi32);
        rel(y);
        rel(y32);
    }
    free(dx);
    free(ref);
    rel(x);
    rel(x32);
}

static void test_softmax(void) {
    softmax_case(MT_SHAPE(4, 7, 33), 1);
    softmax_case(MT_SHAPE(4, 7, 33), 2);
    softmax_case(MT_SHAPE(2, 3, 5, 6, 7), 1);
}

/* ------------------------------------------------------------ gemm */

static void gemm_case(int64_t Bn, int64_t M, int64_t N, int64_t K, int ta, int tb, int bcast_b,
                      int c_bf16, int strided_c, float alpha, float beta) {
    mt_tensor *a = ta ? rbf(MT_SHAPE(Bn, K, M), -1, 1) : rbf(MT_SHAPE(Bn, M, K), -1, 1);
    mt_tensor *bbase = tb ? rbf(MT_SHAPE(bcast_b ? 1 : Bn, N, K), -1, 1)
                          : rbf(MT_SHAPE(bcast_b ? 1 : Bn, K, N), -1, 1);
    mt_tensor *b = bcast_b ? mt_tensor_expand(bbase, 3, (int64_t[]){Bn, bbase->shape[1], bbase->shape[2]})
                           : mt_tensor_retain(bbase);
    mt_dtype cdt = c_bf16 ? MT_BF16 : MT_F32;
    int64_t pad = strided_c ? 5 : 0;
    mt_tensor *cbuf = mt_tensor_new(cdt, MT_SHAPE(Bn, M, N + pad), MT_DEVICE_CPU);
    mt_tensor *init = mt_test_rand(MT_SHAPE(Bn, M, N + pad), -1, 1);
    for (int64_t i = 0; i < mt_tensor_numel(init); i++) {
        int64_t col = i % (N + pad);
        mt_tensor_set_flat(cbuf, i, col >= N ? 7.0 : mt_tensor_get_flat(init, i));
    }
    mt_tensor *c = mt_tensor_slice(cbuf, 2, 0, N, 1);
    double *c0 = mt_test_to_f64(c), *da = mt_test_to_f64(a), *db = mt_test_to_f64(b);
    int64_t nc = Bn * M * N;
    double *ref = malloc(sizeof(double) * (size_t)nc);
    for (int64_t bi = 0; bi < Bn; bi++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    double av = ta ? da[(bi * K + k) * M + i] : da[(bi * M + i) * K + k];
                    double bv = tb ? db[(bi * N + j) * K + k] : db[(bi * K + k) * N + j];
                    s += av * bv;
                }
                int64_t o = (bi * M + i) * N + j;
                ref[o] = alpha * s + (beta != 0 ? beta * c0[o] : 0.0);
            }
    B->gemm(c, a, b, ta, tb, alpha, beta);
    char what[160];
    snprintf(what, sizeof what, "gemm B %lld M %lld N %lld K %lld ta %d tb %d bcast %d c %s%s beta %g",
             (long long)Bn, (long long)M, (long long)N, (long long)K, ta, tb, bcast_b,
             c_bf16 ? "bf16" : "f32", strided_c ? " strided" : "", beta);
    near(c, ref, MT_TOL_GEMM, what);
    if (strided_c) {
        int bad = 0;
        for (int64_t i = 0; i < mt_tensor_numel(cbuf); i++)
            if (i % (N + pad) >= N) bad += mt_tensor_get_flat(cbuf, i) != 7.0;
        CHECK_MSG(bad == 0, "%s: %d padding elements of c overwritten", what, bad);
    }
    free(c0);
    free(da);
    free(db);
    free(ref);
    rel(a);
    rel(b);
    rel(bbase);
    rel(c);
    rel(cbuf);
    rel(init);
}

static void test_gemm(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(3, 13, 19, 37, ta, tb, 0, 1, 0, 1.0f, 0.0f);
            gemm_case(3, 13, 19, 37, ta, tb, 0, 0, 0, 1.3f, 0.0f);
        }
    gemm_case(4, 11, 9, 21, 0, 0, 1, 1, 0, 1.0f, 0.0f); /* b broadcast over the batch */
    gemm_case(4, 11, 9, 21, 0, 1, 1, 0, 0, 1.0f, 0.0f);
    gemm_case(2, 7, 10, 17, 0, 0, 0, 1, 1, 0.8f, 0.5f); /* strided bf16 c, accumulated */
    gemm_case(2, 7, 10, 17, 1, 0, 0, 1, 1, 1.0f, 0.0f);
    gemm_case(1, 65, 70, 150, 0, 1, 0, 1, 0, 1.0f, 1.0f);
}

/* ------------------------------------------------------------ conv */

typedef struct {
    int64_t N, Ci, D, H, W, Co, k[3], o[3];
    int s[3], p[3], dl[3], g;
} cgeo;

static cgeo geo(int64_t N, int64_t Ci, int64_t D, int64_t H, int64_t W, int64_t Co, int k0, int k1,
                int k2, const int *s, const int *p, const int *dl, int g) {
    cgeo c = {N, Ci, D, H, W, Co, {k0, k1, k2}, {0, 0, 0}, {s[0], s[1], s[2]}, {p[0], p[1], p[2]},
              {dl[0], dl[1], dl[2]}, g};
    int64_t in[3] = {D, H, W};
    for (int j = 0; j < 3; j++) c.o[j] = (in[j] + 2 * c.p[j] - c.dl[j] * (c.k[j] - 1) - 1) / c.s[j] + 1;
    return c;
}

/* Calls f(xi, wi, yi) for every (input, weight, output) index triple of the
 * convolution (padding taps skipped). */
#define CONV_FOR_EACH(G, BODY)                                                                     \
    do {                                                                                           \
        int64_t Cig = (G).Ci / (G).g, Cog = (G).Co / (G).g;                                        \
        for (int64_t n = 0; n < (G).N; n++)                                                        \
            for (int64_t co = 0; co < (G).Co; co++)                                                \
                for (int64_t od = 0; od < (G).o[0]; od++)                                          \
                    for (int64_t oh = 0; oh < (G).o[1]; oh++)                                      \
                        for (int64_t ow = 0; ow < (G).o[2]; ow++) {                                \
                            int64_t yi = (((n * (G).Co + co) * (G).o[0] + od) * (G).o[1] + oh) *   \
                                             (G).o[2] + ow;                                        \
                            for (int64_t ci = 0; ci < Cig; ci++)                                   \
                                for (int64_t kd = 0; kd < (G).k[0]; kd++)                          \
                                    for (int64_t kh = 0; kh < (G).k[1]; kh++)                      \
                                        for (int64_t kw = 0; kw < (G).k[2]; kw++) {                \
                                            int64_t id = od * (G).s[0] - (G).p[0] + kd * (G).dl[0]; \
                                            int64_t ih = oh * (G).s[1] - (G).p[1] + kh * (G).dl[1]; \
                                            int64_t iw = ow * (G).s[2] - (G).p[2] + kw * (G).dl[2]; \
                                            if (id < 0 || id >= (G).D || ih < 0 || ih >= (G).H ||  \
                                                iw < 0 || iw >= (G).W)                             \
                                                continue;                                          \
                                            int64_t cin = (co / Cog) * Cig + ci;                   \
                                            int64_t xi = (((n * (G).Ci + cin) * (G).D + id) *      \
                                                              (G).H + ih) * (G).W + iw;            \
                                            int64_t wi = (((co * Cig + ci) * (G).k[0] + kd) *      \
                                                              (G).k[1] + kh) * (G).k[2] + kw;      \
                                            BODY;                                                  \
                                        }                                                          \
                        }                                                                          \
    } while (0)

static void conv_case(const cgeo *Gp) {
    const cgeo G = *Gp;
    mt_conv_params cp = {{G.s[0], G.s[1], G.s[2]}, {G.p[0], G.p[1], G.p[2]},
                         {G.dl[0], G.dl[1], G.dl[2]}, {0, 0, 0}, G.g};
    mt_tensor *x = rbf(MT_SHAPE(G.N, G.Ci, G.D, G.H, G.W), -1, 1);
    mt_tensor *w = rbf(MT_SHAPE(G.Co, G.Ci / G.g, G.k[0], G.k[1], G.k[2]), -0.5f, 0.5f);
    mt_tensor *bias = rbf(MT_SHAPE(G.Co), -1, 1);
    mt_tensor *y = nan_t(MT_BF16, MT_SHAPE(G.N, G.Co, G.o[0], G.o[1], G.o[2]));
    mt_tensor *dy = rbf(MT_SHAPE(G.N, G.Co, G.o[0], G.o[1], G.o[2]), -1, 1);
    mt_tensor *dx = nan_like(MT_BF16, x), *dw = nan_like(MT_BF16, w), *db = nan_like(MT_BF16, bias);
    double *X = mt_test_to_f64(x), *Wt = mt_test_to_f64(w), *Bs = mt_test_to_f64(bias),
           *DY = mt_test_to_f64(dy);
    int64_t ny = mt_tensor_numel(y), nx = mt_tensor_numel(x), nw = mt_tensor_numel(w);
    double *ry = malloc(sizeof(double) * (size_t)ny), *rdx = calloc((size_t)nx, sizeof(double)),
           *rdw = calloc((size_t)nw, sizeof(double)), *rdb = calloc((size_t)G.Co, sizeof(double));
    int64_t per = ny / (G.N * G.Co);
    for (int64_t i = 0; i < ny; i++) {
        ry[i] = Bs[(i / per) % G.Co];
        rdb[(i / per) % G.Co] += DY[i];
    }
    CONV_FOR_EACH(G, {
        ry[yi] += X[xi] * Wt[wi];
        rdx[xi] += DY[yi] * Wt[wi];
        rdw[wi] += DY[yi] * X[xi];
    });
    char what[160];
    snprintf(what, sizeof what, "conv3d Ci %lld Co %lld groups %d", (long long)G.Ci, (long long)G.Co, G.g);
    char w2[200];
    B->conv3d_forward(y, x, w, bias, &cp);
    snprintf(w2, sizeof w2, "%s forward", what);
    near(y, ry, MT_TOL_GEMM, w2);
    B->conv3d_forward(y, x, w, NULL, &cp);
    for (int64_t i = 0; i < ny; i++) ry[i] -= Bs[(i / per) % G.Co];
    snprintf(w2, sizeof w2, "%s forward (no bias)", what);
    near(y, ry, MT_TOL_GEMM, w2);
    B->conv3d_backward_data(dx, dy, w, &cp);
    snprintf(w2, sizeof w2, "%s backward_data", what);
    near(dx, rdx, MT_TOL_GEMM, w2);
    B->conv3d_backward_filter(dw, db, x, dy, &cp);
    snprintf(w2, sizeof w2, "%s backward_filter dw", what);
    near(dw, rdw, MT_TOL_GEMM, w2);
    snprintf(w2, sizeof w2, "%s backward_filter db", what);
    near(db, rdb, MT_TOL_GEMM, w2);
    free(X);
    free(Wt);
    free(Bs);
    free(DY);
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    rel(x);
    rel(w);
    rel(bias);
    rel(y);
    rel(dy);
    rel(dx);
    rel(dw);
    rel(db);
}

static void test_conv(void) {
    cgeo g[4] = {
        geo(2, 5, 6, 7, 5, 6, 3, 3, 2, (int[]){1, 2, 1}, (int[]){1, 1, 0}, (int[]){1, 1, 2}, 1),
        geo(1, 6, 5, 5, 5, 9, 3, 3, 3, (int[]){1, 1, 1}, (int[]){1, 1, 1}, (int[]){1, 1, 1}, 3),
        geo(2, 3, 8, 6, 7, 10, 2, 2, 2, (int[]){2, 2, 2}, (int[]){0, 0, 0}, (int[]){1, 1, 1}, 1),
        geo(1, 12, 6, 5, 7, 11, 1, 1, 1, (int[]){1, 1, 1}, (int[]){0, 0, 0}, (int[]){1, 1, 1}, 1),
    };
    for (int i = 0; i < 4; i++) conv_case(&g[i]);
}

/* ------------------------------------------------------------ norms */

/* Element i belongs to statistics set set_of[i] and parameter param_of[i]. */
typedef struct {
    int64_t n, nsets, nparams;
    int64_t *set_of, *param_of;
} nmap;

static nmap map_nc(int64_t N, int64_t C, int64_t S, int64_t G, int batch) {
    nmap m = {N * C * S, batch ? C : N * G, C, malloc(sizeof(int64_t) * (size_t)(N * C * S)),
              malloc(sizeof(int64_t) * (size_t)(N * C * S))};
    for (int64_t i = 0; i < m.n; i++) {
        int64_t c = (i / S) % C, n = i / (S * C);
        m.set_of[i] = batch ? c : n * G + c / (C / G);
        m.param_of[i] = c;
    }
    return m;
}

static nmap map_rows(int64_t M, int64_t D) {
    nmap m = {M * D, M, D, malloc(sizeof(int64_t) * (size_t)(M * D)), malloc(sizeof(int64_t) * (size_t)(M * D))};
    for (int64_t i = 0; i < m.n; i++) {
        m.set_of[i] = i / D;
        m.param_of[i] = i % D;
    }
    return m;
}

static void map_free(nmap *m) {
    free(m->set_of);
    free(m->param_of);
}

/* Forward reference: mean, biased var per set (two-pass, double), y. */
static void norm_fwd_ref(const nmap *m, const double *x, const double *w, const double *b,
                         double eps, double *mean, double *var, double *y) {
    double *cnt = calloc((size_t)m->nsets, sizeof(double));
    for (int64_t s = 0; s < m->nsets; s++) mean[s] = var[s] = 0;
    for (int64_t i = 0; i < m->n; i++) {
        mean[m->set_of[i]] += x[i];
        cnt[m->set_of[i]] += 1;
    }
    for (int64_t s = 0; s < m->nsets; s++) mean[s] /= cnt[s];
    for (int64_t i = 0; i < m->n; i++) {
        double d = x[i] - mean[m->set_of[i]];
        var[m->set_of[i]] += d * d;
    }
    for (int64_t s = 0; s < m->nsets; s++) var[s] /= cnt[s];
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        y[i] = (x[i] - mean[s]) / sqrt(var[s] + eps) * (w ? w[p] : 1.0) + (b ? b[p] : 0.0);
    }
    free(cnt);
}

/* Backward reference (training form) from the given statistics mean / rstd
 * per set: dx = r (w dy - A - xhat B) with A, B the set means of w dy and
 * w dy xhat; dweight = sum dy xhat, dbias = sum dy per parameter. */
static void norm_bwd_ref(const nmap *m, const double *x, const double *dy, const double *w,
                         const double *mean, const double *rstd, double *dx, double *dw, double *dbias) {
    double *A = calloc((size_t)m->nsets, sizeof(double)), *Bv = calloc((size_t)m->nsets, sizeof(double));
    double *cnt = calloc((size_t)m->nsets, sizeof(double));
    for (int64_t p = 0; p < m->nparams; p++) dw[p] = dbias[p] = 0;
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        double xh = (x[i] - mean[s]) * rstd[s], wd = (w ? w[p] : 1.0) * dy[i];
        A[s] += wd;
        Bv[s] += wd * xh;
        cnt[s] += 1;
        dw[p] += dy[i] * xh;
        dbias[p] += dy[i];
    }
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        double xh = (x[i] - mean[s]) * rstd[s], wd = (w ? w[p] : 1.0) * dy[i];
        dx[i] = rstd[s] * (wd - A[s] / cnt[s] - xh * Bv[s] / cnt[s]);
    }
    free(A);
    free(Bv);
    free(cnt);
}

static mt_tensor *f32_rand(int64_t n, float lo, float hi) { return mt_test_rand(MT_SHAPE(n), lo, hi); }

static void test_batch_norm(int64_t N, int64_t C, int64_t D, int64_t H, int64_t W) {
    int64_t S = D * H * W;
    float eps = 1e-5f, mom = 0.1f;
    mt_tensor *x = rbf(MT_SHAPE(N, C, D, H, W), -1, 3), *x32 = up(x);
    mt_tensor *w = f32_rand(C, 0.5f, 1.5f), *b = f32_rand(C, -0.5f, 0.5f);
    mt_tensor *rm = f32_rand(C, -0.1f, 0.1f), *rv = f32_rand(C, 0.9f, 1.1f);
    mt_tensor *rm2 = mt_tensor_clone(rm), *rv2 = mt_tensor_clone(rv);
    double *rm0 = mt_test_to_f64(rm), *rv0 = mt_test_to_f64(rv);
    mt_tensor *y = nan_like(MT_BF16, x), *y32 = nan_like(MT_F32, x);
    mt_tensor *sm = nan_t(MT_F32, MT_SHAPE(C)), *si = nan_t(MT_F32, MT_SHAPE(C));
    mt_tensor *sm2 = nan_t(MT_F32, MT_SHAPE(C)), *si2 = nan_t(MT_F32, MT_SHAPE(C));
    B->batch_norm_forward(y, sm, si, x, w, b, rm, rv, 1, mom, eps);
    B->batch_norm_forward(y32, sm2, si2, x32, w, b, rm2, rv2, 1, mom, eps);
    nmap m = map_nc(N, C, S, 1, 1);
    double *X = mt_test_to_f64(x), *Wd = mt_test_to_f64(w), *Bd = mt_test_to_f64(b);
    double *mean = malloc(sizeof(double) * (size_t)C), *var = malloc(sizeof(double) * (size_t)C);
    double *ry = malloc(sizeof(double) * (size_t)m.n), *tmp = malloc(sizeof(double) * (size_t)C);
    norm_fwd_ref(&m, X, Wd, Bd, eps, mean, var, ry);
    near(y, ry, MT_TOL_REDUCE, "batch_norm_forward y");
    exact_round(y, y32, "batch_norm_forward y");
    near(sm, mean, MT_TOL_REDUCE, "batch_norm_forward save_mean");
    for (int64_t c = 0; c < C; c++) tmp[c] = 1.0 / sqrt(var[c] + eps);
    near(si, tmp, MT_TOL_REDUCE, "batch_norm_forward save_invstd");
    double cnt = (double)(N * S);
    for (int64_t c = 0; c < C; c++) tmp[c] = (1 - mom) * rm0[c] + mom * mean[c];
    near(rm, tmp, MT_TOL_REDUCE, "batch_norm_forward running_mean");
    for (int64_t c = 0; c < C; c++) tmp[c] = (1 - mom) * rv0[c] + mom * var[c] * cnt / (cnt - 1);
    near(rv, tmp, MT_TOL_REDUCE, "batch_norm_forward running_var");
    exact_f32(sm, sm2, "batch_norm_forward save_mean");
    exact_f32(si, si2, "batch_norm_forward save_invstd");
    exact_f32(rm, rm2, "batch_norm_forward running_mean");
    exact_f32(rv, rv2, "batch_norm_forward running_var");

    /* backward (training) from the saved statistics */
    mt_tensor *dy = rbf(MT_SHAPE(N, C, D, H, W), -1, 1), *dy32 = up(dy);
    mt_tensor *dx = nan_like(MT_BF16, x), *dx32 = nan_like(MT_F32, x);
    mt_tensor *dw = nan_t(MT_F32, MT_SHAPE(C)), *dbias = nan_t(MT_F32, MT_SHAPE(C));
    mt_tensor *dw2 = nan_t(MT_F32, MT_SHAPE(C)), *db2 = nan_t(MT_F32, MT_SHAPE(C));
    B->batch_norm_backward(dx, dw, dbias, dy, x, w, sm, si, 1);
    B->batch_norm_backward(dx32, dw2, db2, dy32, x32, w, sm, si, 1);
    double *DY = mt_test_to_f64(dy), *SM = mt_test_to_f64(sm), *SI = mt_test_to_f64(si);
    double *rdx = malloc(sizeof(double) * (size_t)m.n), *rdw = malloc(sizeof(double) * (size_t)C),
           *rdb = malloc(sizeof(double) * (size_t)C);
    norm_bwd_ref(&m, X, DY, Wd, SM, SI, rdx, rdw, rdb);
    near(dx, rdx, MT_TOL_REDUCE, "batch_norm_backward dx");
    near(dw, rdw, MT_TOL_REDUCE, "batch_norm_backward dweight");
    near(dbias, rdb, MT_TOL_REDUCE, "batch_norm_backward dbias");
    exact_round(dx, dx32, "batch_norm_backward dx");
    exact_f32(dw, dw2, "batch_norm_backward dweight");
    exact_f32(dbias, db2, "batch_norm_backward dbias");

    /* eval mode: running statistics; dx = dy w / sqrt(rv + eps) */
    B->batch_norm_forward(y, sm, si, x, w, b, rm, rv, 0, mom, eps);
    B->batch_norm_forward(y32, sm2, si2, x32, w, b, rm, rv, 0, mom, eps);
    double *RM = mt_test_to_f64(rm), *RV = mt_test_to_f64(rv);
    for (int64_t i = 0; i < m.n; i++) {
        int64_t c = m.param_of[i];
        ry[i] = (X[i] - RM[c]) / sqrt(RV[c] + eps) * Wd[c] + Bd[c];
    }
    near(y, ry, MT_TOL_REDUCE, "batch_norm_forward eval y");
    exact_round(y, y32, "batch_norm_forward eval y");
    B->batch_norm_backward(dx, NULL, NULL, dy, x, w, sm, si, 0);
    B->batch_norm_backward(dx32, NULL, NULL, dy32, x32, w, sm, si, 0);
    free(SI);
    SI = mt_test_to_f64(si);
    for (int64_t i = 0; i < m.n; i++) rdx[i] = DY[i] * Wd[m.param_of[i]] * SI[m.param_of[i]];
    near(dx, rdx, MT_TOL_REDUCE, "batch_norm_backward eval dx");
    exact_round(dx, dx32, "batch_norm_backward eval dx");

    map_free(&m);
    free(X); free(Wd); free(Bd); free(mean); free(var); free(ry); free(tmp); free(rm0); free(rv0);
    free(DY); free(SM); free(SI); free(rdx); free(rdw); free(rdb); free(RM); free(RV);
    rel(x); rel(x32); rel(w); rel(b); rel(rm); rel(rv); rel(rm2); rel(rv2); rel(y); rel(y32);
    rel(sm); rel(si); rel(sm2); rel(si2); rel(dy); rel(dy32); rel(dx); rel(dx32); rel(dw);
    rel(dbias); rel(dw2); rel(db2);
}

static void test_group_norm(int64_t N, int64_t C, int64_t G, int64_t D, int64_t H, int64_t W,
                            int affine) {
    int64_t S = D * H * W;
    float eps = 1e-5f;
    char what[160];
    mt_tensor *x = rbf(MT_SHAPE(N, C, D, H, W), -2, 4), *x32 = up(x);
    mt_tensor *w = affine ? f32_rand(C, 0.5f, 1.5f) : NULL, *b = affine ? f32_rand(C, -0.5f, 0.5f) : NULL;
    mt_tensor *y = nan_like(MT_BF16, x), *y32 = nan_like(MT_F32, x);
    mt_tensor *mean = nan_t(MT_F32, MT_SHAPE(N, G)), *rstd = nan_t(MT_F32, MT_SHAPE(N, G));
    mt_tensor *mean2 = nan_t(MT_F32, MT_SHAPE(N, G)), *rstd2 = nan_t(MT_F32, MT_SHAPE(N, G));
    B->group_norm_forward(y, mean, rstd, x, w, b, (int)G, eps);
    B->group_norm_forward(y32, mean2, rstd2, x32, w, b, (int)G, eps);
    nmap m = map_nc(N, C, S, G, 0);
    double *X = mt_test_to_f64(x), *Wd = w ? mt_test_to_f64(w) : NULL, *Bd = b ? mt_test_to_f64(b) : NULL;
    double *mu = malloc(sizeof(double) * (size_t)(N * G)), *var = malloc(sizeof(double) * (size_t)(N * G));
    double *ry = malloc(sizeof(double) * (size_t)m.n);
    norm_fwd_ref(&m, X, Wd, Bd, eps, mu, var, ry);
    snprintf(what, sizeof what, "group_norm_forward C %lld G %lld affine %d", (long long)C, (long long)G, affine);
    near(y, ry, MT_TOL_REDUCE, what);
    exact_round(y, y32, what);
    near(mean, mu, MT_TOL_REDUCE, what);
    for (int64_t s = 0; s < N * G; s++) var[s] = 1.0 / sqrt(var[s] + eps);
    near(rstd, var, MT_TOL_REDUCE, what);
    exact_f32(mean, mean2, what);
    exact_f32(rstd, rstd2, what);

    mt_tensor *dy = rbf(MT_SHAPE(N, C, D, H, W), -1, 1), *dy32 = up(dy);
    mt_tensor *dx = nan_like(MT_BF16, x), *dx32 = nan_like(MT_F32, x);
    mt_tensor *dw = nan_t(MT_F32, MT_SHAPE(C)), *dbias = nan_t(MT_F32, MT_SHAPE(C));
    mt_tensor *dw2 = nan_t(MT_F32, MT_SHAPE(C)), *db2 = nan_t(MT_F32, MT_SHAPE(C));
    B->group_norm_backward(dx, dw, dbias, dy, x, w, mean, rstd, (int)G);
    B->group_norm_backward(dx32, dw2, db2, dy32, x32, w, mean, rstd, (int)G);
    double *DY = mt_test_to_f64(dy), *M = mt_test_to_f64(mean), *R = mt_test_to_f64(rstd);
    double *rdx = malloc(sizeof(double) * (size_t)m.n), *rdw = malloc(sizeof(double) * (size_t)C),
           *rdb = malloc(sizeof(double) * (size_t)C);
    norm_bwd_ref(&m, X, DY, Wd, M, R, rdx, rdw, rdb);
    snprintf(what, sizeof what, "group_norm_backward C %lld G %lld affine %d", (long long)C, (long long)G, affine);
    near(dx, rdx, MT_TOL_REDUCE, what);
    near(dw, rdw, MT_TOL_REDUCE, what);
    near(dbias, rdb, MT_TOL_REDUCE, what);
    exact_round(dx, dx32, what);
    exact_f32(dw, dw2, what);
    exact_f32(dbias, db2, what);
    map_free(&m);
    free(X); free(Wd); free(Bd); free(mu); free(var); free(ry); free(DY); free(M); free(R);
    free(rdx); free(rdw); free(rdb);
    rel(x); rel(x32); rel(w); rel(b); rel(y); rel(y32); rel(mean); rel(rstd); rel(mean2);
    rel(rstd2); rel(dy); rel(dy32); rel(dx); rel(dx32); rel(dw); rel(dbias); rel(dw2); rel(db2);
}

static void test_layer_norm(int64_t M0, int64_t M1, int64_t D, int affine) {
    float eps = 1e-5f;
    char what[160];
    int64_t M = M0 * M1;
    mt_tensor *x = rbf(MT_SHAPE(M0, M1, D), -1, 2), *x32 = up(x);
    mt_tensor *w = affine ? f32_rand(D, 0.5f, 1.5f) : NULL, *b = affine ? f32_rand(D, -0.5f, 0.5f) : NULL;
    mt_tensor *y = nan_like(MT_BF16, x), *y32 = nan_like(MT_F32, x);
    mt_tensor *mean = nan_t(MT_F32, MT_SHAPE(M)), *rstd = nan_t(MT_F32, MT_SHAPE(M));
    mt_tensor *mean2 = nan_t(MT_F32, MT_SHAPE(M)), *rstd2 = nan_t(MT_F32, MT_SHAPE(M));
    B->layer_norm_forward(y, mean, rstd, x, w, b, D, eps);
    B->layer_norm_forward(y32, mean2, rstd2, x32, w, b, D, eps);
    nmap m = map_rows(M, D);
    double *X = mt_test_to_f64(x), *Wd = w ? mt_test_to_f64(w) : NULL, *Bd = b ? mt_test_to_f64(b) : NULL;
    double *mu = malloc(sizeof(double) * (size_t)M), *var = malloc(sizeof(double) * (size_t)M);
    double *ry = malloc(sizeof(double) * (size_t)m.n);
    norm_fwd_ref(&m, X, Wd, Bd, eps, mu, var, ry);
    snprintf(what, sizeof what, "layer_norm_forward D %lld affine %d", (long long)D, affine);
    near(y, ry, MT_TOL_REDUCE, what);
    exact_round(y, y32, what);
    near(mean, mu, MT_TOL_REDUCE, what);
    for (int64_t s = 0; s < M; s++) var[s] = 1.0 / sqrt(var[s] + eps);
    near(rstd, var, MT_TOL_REDUCE, what);
    exact_f32(mean, mean2, what);
    exact_f32(rstd, rstd2, what);

    mt_tensor *dy = rbf(MT_SHAPE(M0, M1, D), -1, 1), *dy32 = up(dy);
    mt_tensor *dx = nan_like(MT_BF16, x), *dx32 = nan_like(MT_F32, x);
    mt_tensor *dw = nan_t(MT_F32, MT_SHAPE(D)), *dbias = nan_t(MT_F32, MT_SHAPE(D));
    mt_tensor *dw2 = nan_t(MT_F32, MT_SHAPE(D)), *db2 = nan_t(MT_F32, MT_SHAPE(D));
    B->layer_norm_backward(dx, dw, dbias, dy, x, w, mean, rstd, D);
    B->layer_norm_backward(dx32, dw2, db2, dy32, x32, w, mean, rstd, D);
    double *DY = mt_test_to_f64(dy), *Mn = mt_test_to_f64(mean), *R = mt_test_to_f64(rstd);
    double *rdx = malloc(sizeof(double) * (size_t)m.n), *rdw = malloc(sizeof(double) * (size_t)D),
           *rdb = malloc(sizeof(double) * (size_t)D);
    norm_bwd_ref(&m, X, DY, Wd, Mn, R, rdx, rdw, rdb);
    snprintf(what, sizeof what, "layer_norm_backward D %lld affine %d", (long long)D, affine);
    near(dx, rdx, MT_TOL_REDUCE, what);
    near(dw, rdw, MT_TOL_REDUCE, what);
    near(dbias, rdb, MT_TOL_REDUCE, what);
    exact_round(dx, dx32, what);
    exact_f32(dw, dw2, what);
    exact_f32(dbias, db2, what);
    map_free(&m);
    free(X); free(Wd); free(Bd); free(mu); free(var); free(ry); free(DY); free(Mn); free(R);
    free(rdx); free(rdw); free(rdb);
    rel(x); rel(x32); rel(w); rel(b); rel(y); rel(y32); rel(mean); rel(rstd); rel(mean2);
    rel(rstd2); rel(dy); rel(dy32); rel(dx); rel(dx32); rel(dw); rel(dbias); rel(dw2); rel(db2);
}

static void test_norms(void) {
    test_batch_norm(2, 5, 3, 4, 7);
    test_batch_norm(3, 13, 2, 3, 5);
    test_group_norm(2, 6, 3, 5, 3, 7, 1);
    test_group_norm(2, 7, 7, 4, 5, 3, 1); /* instance norm, 7 channels */
    test_group_norm(1, 10, 5, 3, 3, 3, 0);
    test_layer_norm(4, 3, 13, 1);
    test_layer_norm(2, 1, 20000, 1); /* rows wider than one chunk */
    test_layer_norm(5, 2, 9, 0);
}

/* ------------------------------------------------------------ pooling */

typedef struct {
    int64_t lo, hi, div;
} w1d;

static w1d win1d(int64_t o, int64_t in, int k, int s, int p, int include_pad) {
    int64_t start = o * s - p, end = start + k;
    int64_t end_pad = end < in + p ? end : in + p;
    w1d w = {start > 0 ? start : 0, end < in ? end : in, 0};
    w.div = include_pad ? end_pad - start : w.hi - w.lo;
    return w;
}

static int64_t pool_out(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* (pp by pointer: GCC 12.2 at -O2/-O3 -march=native on AVX-512 miscompiles a
 * by-value mt_pool_params compound literal {{2,2,2},{2,2,2},{0,0,0},0}: the
 * padding arrives as {2,2,0}.) */
static void pool_case(int64_t N, int64_t C, int64_t D, int64_t H, int64_t W, const mt_pool_params *ppp) {
    const mt_pool_params pp = *ppp;
    int64_t oD = pool_out(D, pp.kernel[0], pp.stride[0], pp.padding[0]);
    int64_t oH = pool_out(H, pp.kernel[1], pp.stride[1], pp.padding[1]);
    int64_t oW = pool_out(W, pp.kernel[2], pp.stride[2], pp.padding[2]);
    char what[200];
    snprintf(what, sizeof what, "pool (%lld,%lld,%lld,%lld,%lld) k %d,%d,%d s %d,%d,%d p %d,%d,%d inc %d",
             (long long)N, (long long)C, (long long)D, (long long)H, (long long)W, pp.kernel[0],
             pp.kernel[1], pp.kernel[2], pp.stride[0], pp.stride[1], pp.stride[2], pp.padding[0],
             pp.padding[1], pp.padding[2], pp.count_include_pad);
    char w2[260];
    mt_tensor *x = rbf(MT_SHAPE(N, C, D, H, W), -2, 2), *x32 = up(x);
    /* ties: copy some values to their neighbours */
    for (int64_t i = 1; i < mt_tensor_numel(x); i += 4) mt_tensor_set_flat(x, i, mt_tensor_get_flat(x, i - 1));
    rel(x32);
    x32 = up(x);
    mt_tensor *y = nan_t(MT_BF16, MT_SHAPE(N, C, oD, oH, oW)), *y32 = nan_like(MT_F32, y);
    mt_tensor *ind = mt_tensor_new(MT_I32, MT_SHAPE(N, C, oD, oH, oW), MT_DEVICE_CPU);
    mt_tensor *ind32 = mt_tensor_new(MT_I32, MT_SHAPE(N, C, oD, oH, oW), MT_DEVICE_CPU);
    mt_tensor *dy = rbf(MT_SHAPE(N, C, oD, oH, oW), -1, 1), *dy32 = up(dy);
    mt_tensor *dx = nan_like(MT_BF16, x), *dx32 = nan_like(MT_F32, x);
    double *X = mt_test_to_f64(x), *DY = mt_test_to_f64(dy);
    int64_t ny = mt_tensor_numel(y), nx = mt_tensor_numel(x), isz = D * H * W, osz = oD * oH * oW;
    double *rmax = malloc(sizeof(double) * (size_t)ny), *ravg = malloc(sizeof(double) * (size_t)ny);
    int32_t *ridx = malloc(sizeof(int32_t) * (size_t)ny);
    double *rdmax = calloc((size_t)nx, sizeof(double)), *rdavg = calloc((size_t)nx, sizeof(double));
    for (int64_t pl = 0; pl < N * C; pl++)
        for (int64_t od = 0; od < oD; od++)
            for (int64_t oh = 0; oh < oH; oh++)
                for (int64_t ow = 0; ow < oW; ow++) {
                    int inc = pp.count_include_pad;
                    w1d wd = win1d(od, D, pp.kernel[0], pp.stride[0], pp.padding[0], inc);
                    w1d wh = win1d(oh, H, pp.kernel[1], pp.stride[1], pp.padding[1], inc);
                    w1d ww = win1d(ow, W, pp.kernel[2], pp.stride[2], pp.padding[2], inc);
                    int64_t o = pl * osz + (od * oH + oh) * oW + ow;
                    double best = -INFINITY, sum = 0;
                    int64_t bi = -1;
                    for (int64_t d = wd.lo; d < wd.hi; d++)
                        for (int64_t h = wh.lo; h < wh.hi; h++)
                            for (int64_t w = ww.lo; w < ww.hi; w++) {
                                int64_t k = (d * H + h) * W + w;
                                double v = X[pl * isz + k];
                                sum += v;
                                if (bi < 0 || v > best) {
                                    best = v;
                                    bi = k;
                                }
                            }
                    double div = (double)(wd.div * wh.div * ww.div);
                    rmax[o] = best;
                    ridx[o] = (int32_t)bi;
                    ravg[o] = sum / div;
                    rdmax[pl * isz + bi] += DY[o];
                    for (int64_t d = wd.lo; d < wd.hi; d++)
                        for (int64_t h = wh.lo; h < wh.hi; h++)
                            for (int64_t w = ww.lo; w < ww.hi; w++)
                                rdavg[pl * isz + (d * H + h) * W + w] += DY[o] / div;
                }
    B->max_pool3d_forward(y, ind, x, &pp);
    B->max_pool3d_forward(y32, ind32, x32, &pp);
    snprintf(w2, sizeof w2, "max_pool3d_forward %s", what);
    mt_test_allclose(y, rmax, 0, 0, w2); /* the max of bf16 values is exact */
    exact_round(y, y32, w2);
    int bad = 0;
    for (int64_t o = 0; o < ny; o++) bad += ((int32_t *)mt_tensor_data(ind))[o] != ridx[o];
    CHECK_MSG(bad == 0, "%s: %d wrong indices", w2, bad);
    B->max_pool3d_backward(dx, dy, ind);
    B->max_pool3d_backward(dx32, dy32, ind);
    snprintf(w2, sizeof w2, "max_pool3d_backward %s", what);
    near(dx, rdmax, MT_TOL_ELEMENTWISE, w2);
    exact_round(dx, dx32, w2);
    B->avg_pool3d_forward(y, x, &pp);
    B->avg_pool3d_forward(y32, x32, &pp);
    snprintf(w2, sizeof w2, "avg_pool3d_forward %s", what);
    near(y, ravg, MT_TOL_ELEMENTWISE, w2);
    exact_round(y, y32, w2);
    B->avg_pool3d_backward(dx, dy, &pp);
    B->avg_pool3d_backward(dx32, dy32, &pp);
    snprintf(w2, sizeof w2, "avg_pool3d_backward %s", what);
    near(dx, rdavg, MT_TOL_ELEMENTWISE, w2);
    exact_round(dx, dx32, w2);
    free(X); free(DY); free(rmax); free(ravg); free(ridx); free(rdmax); free(rdavg);
    rel(x); rel(x32); rel(y); rel(y32); rel(ind); rel(ind32); rel(dy); rel(dy32); rel(dx); rel(dx32);
}

/* Linear taps along one axis, in double. */
static void taps(int64_t o, int64_t in, int64_t out, int ac, int64_t *i0, int64_t *i1, double *l0, double *l1) {
    if (in == out) {
        *i0 = *i1 = o;
        *l0 = 1;
        *l1 = 0;
        return;
    }
    double src = ac ? (out > 1 ? (double)o * (double)(in - 1) / (double)(out - 1) : 0.0)
                    : ((double)o + 0.5) * (double)in / (double)out - 0.5;
    if (src < 0) src = 0;
    int64_t a = (int64_t)floor(src);
    if (a > in - 1) a = in - 1;
    double f = src - (double)a;
    f = f < 0 ? 0 : (f > 1 ? 1 : f);
    *i0 = a;
    *i1 = a + (a < in - 1 ? 1 : 0);
    *l1 = f;
    *l0 = 1 - f;
}

static void upsample_case(int64_t N, int64_t C, const int64_t *in, const int64_t *out, int ac) {
    mt_tensor *x = rbf(MT_SHAPE(N, C, in[0], in[1], in[2]), -2, 2), *x32 = up(x);
    mt_tensor *y = nan_t(MT_BF16, MT_SHAPE(N, C, out[0], out[1], out[2])), *y32 = nan_like(MT_F32, y);
    mt_tensor *dy = rbf(MT_SHAPE(N, C, out[0], out[1], out[2]), -1, 1), *dy32 = up(dy);
    mt_tensor *dx = nan_like(MT_BF16, x), *dx32 = nan_like(MT_F32, x);
    double *X = mt_test_to_f64(x), *DY = mt_test_to_f64(dy);
    int64_t isz = in[0] * in[1] * in[2], osz = out[0] * out[1] * out[2];
    double *ry = calloc((size_t)(N * C * osz), sizeof(double)), *rdx = calloc((size_t)(N * C * isz), sizeof(double));
    for (int64_t pl = 0; pl < N * C; pl++)
        for (int64_t od = 0; od < out[0]; od++)
            for (int64_t oh = 0; oh < out[1]; oh++)
                for (int64_t ow = 0; ow < out[2]; ow++) {
                    int64_t id[2], ih[2], iw[2];
                    double ld[2], lh[2], lw[2];
                    taps(od, in[0], out[0], ac, &id[0], &id[1], &ld[0], &ld[1]);
                    taps(oh, in[1], out[1], ac, &ih[0], &ih[1], &lh[0], &lh[1]);
                    taps(ow, in[2], out[2], ac, &iw[0], &iw[1], &lw[0], &lw[1]);
                    int64_t o = pl * osz + (od * out[1] + oh) * out[2] + ow;
                    for (int a = 0; a < 2; a++)
                        for (int b = 0; b < 2; b++)
                            for (int c = 0; c < 2; c++) {
                                int64_t k = pl * isz + (id[a] * in[1] + ih[b]) * in[2] + iw[c];
                                double wt = ld[a] * lh[b] * lw[c];
                                ry[o] += wt * X[k];
                                rdx[k] += wt * DY[o];
                            }
                }
    char what[200];
    snprintf(what, sizeof what, "upsample_trilinear (%lld,%lld,%lld) -> (%lld,%lld,%lld) align %d",
             (long long)in[0], (long long)in[1], (long long)in[2], (long long)out[0],
             (long long)out[1], (long long)out[2], ac);
    B->upsample_trilinear_forward(y, x, ac);
    B->upsample_trilinear_forward(y32, x32, ac);
    near(y, ry, MT_TOL_ELEMENTWISE, what);
    exact_round(y, y32, what);
    B->upsample_trilinear_backward(dx, dy, ac);
    B->upsample_trilinear_backward(dx32, dy32, ac);
    near(dx, rdx, MT_TOL_ELEMENTWISE, what);
    exact_round(dx, dx32, what);
    free(X); free(DY); free(ry); free(rdx);
    rel(x); rel(x32); rel(y); rel(y32); rel(dy); rel(dy32); rel(dx); rel(dx32);
}

static void test_pool(void) {
    pool_case(2, 3, 7, 9, 8, &(mt_pool_params){{2, 2, 2}, {2, 2, 2}, {0, 0, 0}, 0});
    pool_case(1, 5, 6, 7, 9, &(mt_pool_params){{3, 3, 3}, {2, 1, 2}, {1, 1, 1}, 0});
    pool_case(1, 5, 6, 7, 9, &(mt_pool_params){{3, 3, 3}, {2, 1, 2}, {1, 1, 1}, 1});
    pool_case(2, 3, 5, 4, 6, &(mt_pool_params){{1, 2, 3}, {1, 2, 3}, {0, 1, 1}, 1});
    for (int ac = 0; ac < 2; ac++) {
        upsample_case(2, 3, (int64_t[]){4, 5, 3}, (int64_t[]){8, 10, 6}, ac);
        upsample_case(1, 5, (int64_t[]){3, 5, 7}, (int64_t[]){3, 9, 4}, ac);
    }
}

/* ------------------------------------------------------------ aborts */

/* Runs fn in a child with stderr captured; checks that it aborts with a
 * message containing every string of want (NULL-terminated). */
static void expect_abort(const char *what, void (*fn)(void), const char *const *want) {
    int fd[2];
    if (pipe(fd) != 0) {
        CHECK_MSG(0, "%s: pipe failed", what);
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        fn();
        _exit(0);
    }
    close(fd[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s: expected an abort, got status %d", what, st);
    for (const char *const *w = want; *w; w++)
        CHECK_MSG(strstr(buf, *w) != NULL, "%s: message lacks '%s': %s", what, *w, buf);
}

static void abort_binary_i32(void) {
    mt_tensor *a = mt_tensor_zeros(MT_I32, MT_SHAPE(4), MT_DEVICE_CPU);
    B->binary(MT_BIN_ADD, a, a, a);
}
static void abort_softmax_mixed(void) {
    mt_tensor *y = mt_tensor_zeros(MT_BF16, MT_SHAPE(2, 3), MT_DEVICE_CPU);
    mt_tensor *x = mt_tensor_zeros(MT_F32, MT_SHAPE(2, 3), MT_DEVICE_CPU);
    B->softmax(y, x, 1, 0);
}
static void abort_reduce_u8(void) {
    mt_tensor *x = mt_tensor_zeros(MT_U8, MT_SHAPE(2, 3), MT_DEVICE_CPU);
    mt_tensor *y = mt_tensor_zeros(MT_BF16, MT_SHAPE(1, 1), MT_DEVICE_CPU);
    B->reduce(MT_RED_SUM, y, x);
}
static void abort_bn_bf16_weight(void) {
    mt_tensor *x = mt_tensor_zeros(MT_BF16, MT_SHAPE(2, 3, 4), MT_DEVICE_CPU);
    mt_tensor *y = mt_tensor_zeros(MT_BF16, MT_SHAPE(2, 3, 4), MT_DEVICE_CPU);
    mt_tensor *w = mt_tensor_zeros(MT_BF16, MT_SHAPE(3), MT_DEVICE_CPU);
    mt_tensor *s1 = mt_tensor_zeros(MT_F32, MT_SHAPE(3), MT_DEVICE_CPU);
    mt_tensor *s2 = mt_tensor_zeros(MT_F32, MT_SHAPE(3), MT_DEVICE_CPU);
    B->batch_norm_forward(y, s1, s2, x, w, NULL, NULL, NULL, 1, 0.1f, 1e-5f);
}
static void abort_conv_i32(void) {
    mt_conv_params cp = {{1, 1, 1}, {0, 0, 0}, {1, 1, 1}, {0, 0, 0}, 1};
    mt_tensor *x = mt_tensor_zeros(MT_BF16, MT_SHAPE(1, 1, 2, 2, 2), MT_DEVICE_CPU);
    mt_tensor *w = mt_tensor_zeros(MT_I32, MT_SHAPE(1, 1, 1, 1, 1), MT_DEVICE_CPU);
    mt_tensor *y = mt_tensor_zeros(MT_BF16, MT_SHAPE(1, 1, 2, 2, 2), MT_DEVICE_CPU);
    B->conv3d_forward(y, x, w, NULL, &cp);
}
static void abort_gemm_f32_c_bf16_a(void) {
    mt_tensor *a = mt_tensor_zeros(MT_F32, MT_SHAPE(2, 2), MT_DEVICE_CPU);
    mt_tensor *c = mt_tensor_zeros(MT_BF16, MT_SHAPE(2, 2), MT_DEVICE_CPU);
    B->gemm(c, a, a, 0, 0, 1.0f, 0.0f);
}
static void abort_unary_u8(void) {
    mt_tensor *a = mt_tensor_zeros(MT_U8, MT_SHAPE(4), MT_DEVICE_CPU);
    mt_tensor *b = mt_tensor_zeros(MT_BF16, MT_SHAPE(4), MT_DEVICE_CPU);
    B->unary(MT_UN_EXP, b, a, 0.0f);
}

static void test_aborts(void) {
    expect_abort("binary i32", abort_binary_i32, (const char *[]){"'binary'", "cpu", "i32", NULL});
    expect_abort("softmax bf16/f32", abort_softmax_mixed,
                 (const char *[]){"'softmax'", "cpu", "f32", "bf16", NULL});
    expect_abort("reduce u8", abort_reduce_u8, (const char *[]){"'reduce'", "cpu", "u8", NULL});
    expect_abort("batch_norm bf16 weight", abort_bn_bf16_weight,
                 (const char *[]){"'batch_norm_forward'", "cpu", "bf16", NULL});
    expect_abort("conv i32 weight", abort_conv_i32, (const char *[]){"'conv3d_forward'", "cpu", "i32", NULL});
    expect_abort("gemm f32 a, bf16 c", abort_gemm_f32_c_bf16_a,
                 (const char *[]){"'gemm'", "cpu", "f32", "bf16", NULL});
    expect_abort("unary u8", abort_unary_u8, (const char *[]){"'unary'", "cpu", "u8", NULL});
}

int main(void) {
    mt_test_seed(2024);
    test_aborts(); /* first: fork before the OpenMP thread pool exists */
    test_conversions();
    test_binary();
    test_unary();
    test_one_hot_argmax();
    test_reduce();
    test_softmax();
    test_gemm();
    test_conv();
    test_norms();
    test_pool();
    return mt_test_finish();
}
