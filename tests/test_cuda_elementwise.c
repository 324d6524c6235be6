/* LABELS: gpu */
/* CUDA elementwise and random kernels (core/cuda/elementwise.cu,
 * core/cuda/random.cu) against the CPU backend on the same inputs: fill and
 * copy/cast for every dtype pair with strided, permuted and broadcast views;
 * binary ops (contiguous, misaligned, broadcast, permuted); every unary op
 * and its backward in f32 and bf16; one-hot (including the abort on a bad
 * label, checked in a child process); channel argmax with ties; Philox
 * uniform (bit-exact) and normal fills. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend.h"
#include "mt_test.h"

static const mt_device GPU = {MT_CUDA, 0};
static const mt_dtype ALL_DT[4] = {MT_F32, MT_BF16, MT_I32, MT_U8};
static const mt_dtype FLOAT_DT[2] = {MT_F32, MT_BF16};

/* Random CPU tensor of dtype dt (uniform in [lo, hi) cast with the CPU copy). */
static mt_tensor *rand_dt(int nd, const int64_t *shape, float lo, float hi, mt_dtype dt) {
    mt_tensor *x = mt_test_rand(nd, shape, lo, hi);
    mt_tensor *y = mt_tensor_to_dtype(x, dt);
    mt_tensor_release(x);
    return y;
}

/* Integer-valued floats in {0, ..., k - 1} (ties and equalities happen). */
static mt_tensor *rand_levels(int nd, const int64_t *shape, int k, mt_dtype dt) {
    mt_tensor *x = mt_test_rand(nd, shape, 0.0f, (float)k);
    int64_t n = mt_tensor_numel(x);
    float *p = MT_F32P(x);
    for (int64_t i = 0; i < n; i++) p[i] = floorf(p[i]);
    mt_tensor *y = mt_tensor_to_dtype(x, dt);
    mt_tensor_release(x);
    return y;
}

/* ------------------------------------------------------------------ fill */

static void test_fill(void) {
    int64_t shape[3] = {5, 7, 9};
    for (int k = 0; k < 4; k++) {
        mt_dtype dt = ALL_DT[k];
        const double vals[3] = {0.0, 2.75, 7.0};
        for (int vi = 0; vi < 3; vi++) {
            /* contiguous (memset path for 0 and for u8) */
            mt_tensor *c = rand_dt(3, shape, -50, 50, dt), *g = mt_test_to_gpu(c);
            mt_kernel(MT_DEVICE_CPU, fill)(c, vals[vi]);
            mt_kernel(GPU, fill)(g, vals[vi]);
            char what[96];
            snprintf(what, sizeof what, "fill contiguous %s %g", mt_dtype_name(dt), vals[vi]);
            mt_test_close(g, c, MT_TOL_EXACT, what);
            /* strided: every other row of a permuted view; the rest must be kept */
            int perm[3] = {2, 0, 1};
            mt_tensor *cp = mt_tensor_permute(c, perm), *gp = mt_tensor_permute(g, perm);
            mt_tensor *cs = mt_tensor_slice(cp, 1, 1, 5, 2), *gs = mt_tensor_slice(gp, 1, 1, 5, 2);
            mt_kernel(MT_DEVICE_CPU, fill)(cs, 3.0 + vals[vi]);
            mt_kernel(GPU, fill)(gs, 3.0 + vals[vi]);
            snprintf(what, sizeof what, "fill strided %s %g", mt_dtype_name(dt), vals[vi]);
            mt_test_close(g, c, MT_TOL_EXACT, what);
            mt_tensor_release(cs);
            mt_tensor_release(gs);
            mt_tensor_release(cp);
            mt_tensor_release(gp);
            mt_tensor_release(c);
            mt_tensor_release(g);
        }
    }
}

/* ------------------------------------------------------------------ copy / cast */

static void test_copy(void) {
    int64_t shape[4] = {3, 5, 7, 11};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            mt_dtype si = ALL_DT[a], so = ALL_DT[b];
            char what[128];
            /* values beyond the u8 range exercise the clamp, fractions the truncation */
            mt_tensor *src = rand_dt(4, shape, -300.0f, 300.0f, si);
            mt_tensor *gsrc = mt_test_to_gpu(src);

            /* contiguous -> contiguous */
            mt_tensor *co = mt_tensor_new(so, 4, shape, MT_DEVICE_CPU);
            mt_tensor *go = mt_tensor_new(so, 4, shape, GPU);
            mt_kernel(MT_DEVICE_CPU, copy)(co, src);
            mt_kernel(GPU, copy)(go, gsrc);
            snprintf(what, sizeof what, "copy %s -> %s contiguous", mt_dtype_name(si), mt_dtype_name(so));
            mt_test_close(go, co, MT_TOL_EXACT, what);
            mt_tensor_release(co);
            mt_tensor_release(go);

            /* misaligned contiguous (offset 1) -> contiguous */
            {
                int64_t n = mt_tensor_numel(src);
                int64_t flat[1] = {n};
                mt_tensor *sv = mt_tensor_view(src, 1, flat), *gv = mt_tensor_view(gsrc, 1, flat);
                mt_tensor *s1 = mt_tensor_slice(sv, 0, 1, n, 1), *g1 = mt_tensor_slice(gv, 0, 1, n, 1);
                int64_t m[1] = {n - 1};
                mt_tensor *c2 = mt_tensor_new(so, 1, m, MT_DEVICE_CPU), *g2 = mt_tensor_new(so, 1, m, GPU);
                mt_kernel(MT_DEVICE_CPU, copy)(c2, s1);
                mt_kernel(GPU, copy)(g2, g1);
                snprintf(what, sizeof what, "copy %s -> %s offset 1", mt_dtype_name(si), mt_dtype_name(so));
                mt_test_close(g2, c2, MT_TOL_EXACT, what);
                mt_tensor_release(c2);
                mt_tensor_release(g2);
                mt_tensor_release(s1);
                mt_tensor_release(g1);
                mt_tensor_release(sv);
                mt_tensor_release(gv);
            }

            /* permuted source -> contiguous */
            int perm[4] = {3, 1, 0, 2};
            mt_tensor *sp = mt_tensor_permute(src, perm), *gp = mt_tensor_permute(gsrc, perm);
            co = mt_tensor_new(so, 4, sp->shape, MT_DEVICE_CPU);
            go = mt_tensor_new(so, 4, sp->shape, GPU);
            mt_kernel(MT_DEVICE_CPU, copy)(co, sp);
            mt_kernel(GPU, copy)(go, gp);
            snprintf(what, sizeof what, "copy %s -> %s permuted source", mt_dtype_name(si), mt_dtype_name(so));
            mt_test_close(go, co, MT_TOL_EXACT, what);
            mt_tensor_release(co);
            mt_tensor_release(go);

            /* contiguous source -> strided destination (slice of a permuted
             * bigger tensor); the untouched elements must survive */
            int64_t big[4] = {11, 4, 10, 5}; /* permuted below to (4, 5, 10, 11) */
            mt_tensor *cb = rand_dt(4, big, -10.0f, 10.0f, so), *gb = mt_test_to_gpu(cb);
            int pb[4] = {1, 3, 2, 0};
            mt_tensor *cbp = mt_tensor_permute(cb, pb), *gbp = mt_tensor_permute(gb, pb);
            mt_tensor *t1 = mt_tensor_slice(cbp, 0, 1, 4, 1), *u1 = mt_tensor_slice(gbp, 0, 1, 4, 1);
            mt_tensor *t2 = mt_tensor_slice(t1, 2, 1, 8, 1), *u2 = mt_tensor_slice(u1, 2, 1, 8, 1);
            /* t2: (3, 5, 7, 11) */
            mt_kernel(MT_DEVICE_CPU, copy)(t2, src);
            mt_kernel(GPU, copy)(u2, gsrc);
            snprintf(what, sizeof what, "copy %s -> %s strided destination", mt_dtype_name(si), mt_dtype_name(so));
            mt_test_close(gb, cb, MT_TOL_EXACT, what);

            /* broadcast source (1, 5, 1, 11) expanded, into the strided destination */
            int64_t bs[4] = {1, 5, 1, 11};
            mt_tensor *bsrc = rand_dt(4, bs, -300.0f, 300.0f, si), *gbsrc = mt_test_to_gpu(bsrc);
            mt_tensor *be = mt_tensor_expand(bsrc, 4, shape), *gbe = mt_tensor_expand(gbsrc, 4, shape);
            mt_kernel(MT_DEVICE_CPU, copy)(t2, be);
            mt_kernel(GPU, copy)(u2, gbe);
            snprintf(what, sizeof what, "copy %s -> %s broadcast source", mt_dtype_name(si), mt_dtype_name(so));
            mt_test_close(gb, cb, MT_TOL_EXACT, what);

            mt_tensor *rel[] = {sp, gp, cb, gb, cbp, gbp, t1, u1, t2, u2, bsrc, gbsrc, be, gbe, src, gsrc};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
        }
}

/* ------------------------------------------------------------------ binary */

static const char *bin_name[] = {"add", "sub", "mul", "div", "max", "min", "eq", "ge"};

/* One binary call on both devices; a, b: CPU views with out's shape; ga, gb
 * the same views of GPU copies. Bit-exact in f32 (one IEEE operation). */
static void bin_compare(mt_binary_op op, const mt_tensor *a, const mt_tensor *b, const mt_tensor *ga,
                        const mt_tensor *gb, const char *how) {
    mt_tensor *co = mt_tensor_new(a->dtype, a->ndim, a->shape, MT_DEVICE_CPU);
    mt_tensor *go = mt_tensor_new(a->dtype, a->ndim, a->shape, GPU);
    mt_kernel(MT_DEVICE_CPU, binary)(op, co, a, b);
    mt_kernel(GPU, binary)(op, go, ga, gb);
    char what[128];
    snprintf(what, sizeof what, "binary %s %s %s", bin_name[op], mt_dtype_name(a->dtype), how);
    mt_test_close(go, co, a->dtype == MT_F32 ? MT_TOL_EXACT : MT_TOL_ELEMENTWISE, what);
    mt_tensor_release(co);
    mt_tensor_release(go);
}

static void test_binary(void) {
    int64_t shape[5] = {3, 5, 7, 9, 11};
    int64_t bshape[5] = {1, 5, 1, 1, 11};
    int64_t pshape[5] = {3, 7, 5, 11, 9}; /* permuted (0, 2, 1, 4, 3) to shape */
    int perm[5] = {0, 2, 1, 4, 3};
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = FLOAT_DT[di];
        for (int op = 0; op < MT_NUM_BINARY_OPS; op++) {
            int cmp = op == MT_BIN_EQ || op == MT_BIN_GE;
            mt_tensor *a, *b, *bb, *ap;
            if (cmp) { /* few levels so equalities occur */
                a = rand_levels(5, shape, 3, dt);
                b = rand_levels(5, shape, 3, dt);
                bb = rand_levels(5, bshape, 3, dt);
                ap = rand_levels(5, pshape, 3, dt);
            } else {
                a = rand_dt(5, shape, -2.0f, 2.0f, dt);
                b = rand_dt(5, shape, 0.5f, 2.0f, dt); /* divisor away from 0 */
                bb = rand_dt(5, bshape, 0.5f, 2.0f, dt);
                ap = rand_dt(5, pshape, -2.0f, 2.0f, dt);
            }
            mt_tensor *ga = mt_test_to_gpu(a), *gb = mt_test_to_gpu(b), *gbb = mt_test_to_gpu(bb),
                      *gap = mt_test_to_gpu(ap);
            bin_compare((mt_binary_op)op, a, b, ga, gb, "contiguous");
            /* operands in reversed roles (b - a, b / a with a possibly small is fine: both devices agree) */
            bin_compare((mt_binary_op)op, b, a, gb, ga, "contiguous swapped");

            /* misaligned contiguous operands (offset 1): the scalar path */
            {
                int64_t n = mt_tensor_numel(a), flat[1] = {n};
                mt_tensor *av = mt_tensor_view(a, 1, flat), *bv = mt_tensor_view(b, 1, flat);
                mt_tensor *gav = mt_tensor_view(ga, 1, flat), *gbv = mt_tensor_view(gb, 1, flat);
                mt_tensor *a1 = mt_tensor_slice(av, 0, 1, n, 1), *b1 = mt_tensor_slice(bv, 0, 0, n - 1, 1);
                mt_tensor *ga1 = mt_tensor_slice(gav, 0, 1, n, 1), *gb1 = mt_tensor_slice(gbv, 0, 0, n - 1, 1);
                bin_compare((mt_binary_op)op, a1, b1, ga1, gb1, "offset 1");
                mt_tensor *rel[] = {av, bv, gav, gbv, a1, b1, ga1, gb1};
                for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
            }

            /* broadcast b (1, 5, 1, 1, 11), on either side */
            mt_tensor *be = mt_tensor_expand(bb, 5, shape), *gbe = mt_tensor_expand(gbb, 5, shape);
            bin_compare((mt_binary_op)op, a, be, ga, gbe, "broadcast b");
            bin_compare((mt_binary_op)op, be, a, gbe, ga, "broadcast a");

            /* permuted a with broadcast b */
            mt_tensor *pv = mt_tensor_permute(ap, perm), *gpv = mt_tensor_permute(gap, perm);
            bin_compare((mt_binary_op)op, pv, be, gpv, gbe, "permuted a, broadcast b");
            bin_compare((mt_binary_op)op, pv, b, gpv, gb, "permuted a");

            mt_tensor *rel[] = {a, b, bb, ap, ga, gb, gbb, gap, be, gbe, pv, gpv};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
        }
    }
    /* in place: out aliases a (the gradient accumulation pattern) */
    {
        mt_tensor *a = rand_dt(5, shape, -1, 1, MT_F32), *b = rand_dt(5, bshape, -1, 1, MT_F32);
        mt_tensor *ga = mt_test_to_gpu(a), *gb = mt_test_to_gpu(b);
        mt_tensor *be = mt_tensor_expand(b, 5, shape), *gbe = mt_tensor_expand(gb, 5, shape);
        mt_kernel(MT_DEVICE_CPU, binary)(MT_BIN_ADD, a, a, be);
        mt_kernel(GPU, binary)(MT_BIN_ADD, ga, ga, gbe);
        mt_test_close(ga, a, MT_TOL_EXACT, "binary add in place");
        mt_tensor *rel[] = {a, b, ga, gb, be, gbe};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
    }
}

/* ------------------------------------------------------------------ unary */

static const char *un_name[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "square",
                                "recip", "relu", "leaky_relu", "gelu", "sigmoid", "tanh",
                                "softplus", "log_sigmoid", "add_scalar", "mul_scalar",
                                "pow_scalar", "clamp_min", "clamp_max"};

/* Input range and alpha per op: positive inputs for log / sqrt / rsqrt /
 * pow, away from 0 for recip, a symmetric range otherwise. */
static void un_domain(mt_unary_op op, float *lo, float *hi, float *alpha) {
    *lo = -3.0f;
    *hi = 3.0f;
    *alpha = 0.0f;
    switch (op) {
    case MT_UN_LOG: case MT_UN_SQRT: case MT_UN_RSQRT: *lo = 0.2f; break;
    case MT_UN_RECIP: *lo = 0.5f; *hi = 2.5f; break;
    case MT_UN_POW_SCALAR: *lo = 0.2f; *alpha = 1.7f; break;
    case MT_UN_LEAKY_RELU: *alpha = 0.1f; break;
    case MT_UN_ADD_SCALAR: *alpha = 0.7f; break;
    case MT_UN_MUL_SCALAR: *alpha = -1.3f; break;
    case MT_UN_CLAMP_MIN: case MT_UN_CLAMP_MAX: *alpha = 0.3f; break;
    default: break;
    }
}

/* Ops whose f32 result is one correctly rounded operation (or a selection)
 * on both devices; the others call libm / CUDA math functions that may
 * differ by ulps. */
static int un_exact(mt_unary_op op) {
    switch (op) {
    case MT_UN_NEG: case MT_UN_SQRT: case MT_UN_ABS: case MT_UN_SQUARE: case MT_UN_RECIP:
    case MT_UN_RELU: case MT_UN_LEAKY_RELU: case MT_UN_ADD_SCALAR: case MT_UN_MUL_SCALAR:
    case MT_UN_CLAMP_MIN: case MT_UN_CLAMP_MAX:
        return 1;
    default: return 0;
    }
}

/* Tolerance kind: f32 ELEMENTWISE. For bf16, a math-library result that
 * differs by an f32 ulp between glibc and CUDA can round to the adjacent
 * bf16 value: one bf16 step, up to 2^-7 relative, which only the table's
 * REDUCE row admits (rtol 8e-3); single correctly rounded operations round
 * identically and keep ELEMENTWISE. Backward values are products of
 * derivatives, so bf16 backward uses REDUCE for every op but the exact ones. */
static mt_tol_kind un_tol(mt_unary_op op, mt_dtype dt) {
    if (dt == MT_F32) return MT_TOL_ELEMENTWISE;
    return un_exact(op) ? MT_TOL_ELEMENTWISE : MT_TOL_REDUCE;
}

static void unary_case(mt_unary_op op, mt_dtype dt, const int64_t *shape, int nd, int misalign) {
    float lo, hi, alpha;
    un_domain(op, &lo, &hi, &alpha);
    mt_tensor *x0 = rand_dt(nd, shape, lo, hi, dt);
    mt_tensor *x = x0;
    int64_t n = mt_tensor_numel(x0);
    mt_tensor *xv = NULL;
    if (misalign) { /* contiguous 1-d view at offset 1 */
        int64_t flat[1] = {n};
        xv = mt_tensor_view(x0, 1, flat);
        x = mt_tensor_slice(xv, 0, 1, n, 1);
        n--;
    }
    mt_tensor *gx0 = mt_test_to_gpu(x0), *gxv = NULL, *gx = gx0;
    if (misalign) {
        int64_t flat[1] = {n + 1};
        gxv = mt_tensor_view(gx0, 1, flat);
        gx = mt_tensor_slice(gxv, 0, 1, n + 1, 1);
    }
    char what[128];
    const char *how = misalign ? " offset 1" : "";

    /* forward */
    mt_tensor *cy = mt_tensor_new(dt, x->ndim, x->shape, MT_DEVICE_CPU);
    mt_tensor *gy = mt_tensor_new(dt, x->ndim, x->shape, GPU);
    mt_kernel(MT_DEVICE_CPU, unary)(op, cy, x, alpha);
    mt_kernel(GPU, unary)(op, gy, gx, alpha);
    snprintf(what, sizeof what, "unary %s %s%s", un_name[op], mt_dtype_name(dt), how);
    mt_test_close(gy, cy, un_tol(op, dt), what);

    /* backward with both x and y = f(x) (the CPU's y on both devices) */
    mt_tensor *go = rand_dt(x->ndim, x->shape, -1.0f, 1.0f, dt);
    mt_tensor *ggo = mt_test_to_gpu(go), *gyc = mt_test_to_gpu(cy);
    mt_tensor *cgi = mt_tensor_new(dt, x->ndim, x->shape, MT_DEVICE_CPU);
    mt_tensor *ggi = mt_tensor_new(dt, x->ndim, x->shape, GPU);
    mt_kernel(MT_DEVICE_CPU, unary_backward)(op, cgi, go, x, cy, alpha);
    mt_kernel(GPU, unary_backward)(op, ggi, ggo, gx, gyc, alpha);
    snprintf(what, sizeof what, "unary_backward %s %s%s", un_name[op], mt_dtype_name(dt), how);
    mt_test_close(ggi, cgi, un_tol(op, dt), what);

    /* relu / leaky relu from y alone; gelu from x alone */
    if (op == MT_UN_RELU || op == MT_UN_LEAKY_RELU) {
        mt_kernel(MT_DEVICE_CPU, unary_backward)(op, cgi, go, NULL, cy, alpha);
        mt_kernel(GPU, unary_backward)(op, ggi, ggo, NULL, gyc, alpha);
        snprintf(what, sizeof what, "unary_backward %s %s from y%s", un_name[op], mt_dtype_name(dt), how);
        mt_test_close(ggi, cgi, un_tol(op, dt), what);
    }
    if (op == MT_UN_GELU) {
        mt_kernel(MT_DEVICE_CPU, unary_backward)(op, cgi, go, x, NULL, alpha);
        mt_kernel(GPU, unary_backward)(op, ggi, ggo, gx, NULL, alpha);
        snprintf(what, sizeof what, "unary_backward %s %s from x%s", un_name[op], mt_dtype_name(dt), how);
        mt_test_close(ggi, cgi, un_tol(op, dt), what);
    }
    mt_tensor *rel[] = {cy, gy, go, ggo, gyc, cgi, ggi};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
    if (misalign) {
        mt_tensor_release(x);
        mt_tensor_release(xv);
        mt_tensor_release(gx);
        mt_tensor_release(gxv);
    }
    mt_tensor_release(x0);
    mt_tensor_release(gx0);
}

static void test_unary(void) {
    int64_t shape[5] = {3, 5, 7, 9, 11};
    for (int di = 0; di < 2; di++)
        for (int op = 0; op < MT_NUM_UNARY_OPS; op++) {
            unary_case((mt_unary_op)op, FLOAT_DT[di], shape, 5, 0);
            unary_case((mt_unary_op)op, FLOAT_DT[di], shape, 5, 1);
        }
}

/* ------------------------------------------------------------------ one-hot, argmax */

static void test_one_hot(void) {
    const int C = 5;
    int64_t s1[5] = {2, 1, 5, 7, 9}; /* (N, 1, *) */
    int64_t s2[4] = {2, 5, 7, 9};    /* (N, *) */
    int64_t os[5] = {2, C, 5, 7, 9};
    for (int form = 0; form < 2; form++)
        for (int li = 0; li < 2; li++) {
            mt_dtype ldt = li ? MT_U8 : MT_I32;
            mt_tensor *lab = form ? rand_levels(4, s2, C, ldt) : rand_levels(5, s1, C, ldt);
            mt_tensor *glab = mt_test_to_gpu(lab);
            mt_tensor *co = mt_tensor_new(MT_F32, 5, os, MT_DEVICE_CPU);
            mt_tensor *go = mt_tensor_new(MT_F32, 5, os, GPU);
            mt_kernel(GPU, fill)(go, 3.0); /* every element must be written */
            mt_kernel(MT_DEVICE_CPU, one_hot)(co, lab, C);
            mt_kernel(GPU, one_hot)(go, glab, C);
            char what[96];
            snprintf(what, sizeof what, "one_hot %s labels %s", mt_dtype_name(ldt),
                     form ? "(N, *)" : "(N, 1, *)");
            mt_test_close(go, co, MT_TOL_EXACT, what);
            mt_tensor *rel[] = {lab, glab, co, go};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
        }
}

/* Child mode: one_hot on the GPU with a label out of range (must abort). */
static int one_hot_bad_child(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    int64_t ls[3] = {2, 1, 50}, os[3] = {2, 4, 50};
    mt_tensor *lab = mt_tensor_zeros(MT_I32, 3, ls, MT_DEVICE_CPU);
    mt_tensor_set_flat(lab, 37, 7.0);
    mt_tensor *glab = mt_test_to_gpu(lab);
    mt_tensor *go = mt_tensor_new(MT_F32, 3, os, GPU);
    mt_kernel(GPU, one_hot)(go, glab, 4);
    /* the GPU reports a bad label at the next synchronisation */
    mt_kernel(GPU, synchronize)();
    printf("one_hot returned\n");
    return 0;
}

static void test_one_hot_bad_label(void) {
    char self[2048], cmd[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(sl > 0);
    if (sl <= 0) return;
    self[sl] = 0;
    snprintf(cmd, sizeof cmd, "'%s' --one-hot-bad-label 2>&1", self);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    if (!f) return;
    char out[8192];
    size_t len = fread(out, 1, sizeof out - 1, f);
    out[len] = 0;
    int rc = pclose(f);
    CHECK_MSG(rc != 0, "one_hot with label 7 of 4 classes did not abort");
    CHECK_MSG(strstr(out, "label 7 outside [0, 4)") != NULL, "one_hot abort message: %s", out);
}

static void test_argmax(void) {
    int64_t shape[5] = {2, 7, 5, 9, 11};
    int64_t oshape[5] = {2, 1, 5, 9, 11};
    for (int di = 0; di < 2; di++)
        for (int ties = 0; ties < 2; ties++) {
            mt_dtype dt = FLOAT_DT[di];
            mt_tensor *x = ties ? rand_levels(5, shape, 3, dt) : rand_dt(5, shape, -2, 2, dt);
            mt_tensor *gx = mt_test_to_gpu(x);
            mt_tensor *co = mt_tensor_new(MT_I32, 5, oshape, MT_DEVICE_CPU);
            mt_tensor *go = mt_tensor_new(MT_I32, 5, oshape, GPU);
            mt_kernel(MT_DEVICE_CPU, argmax_channel)(co, x);
            mt_kernel(GPU, argmax_channel)(go, gx);
            char what[96];
            snprintf(what, sizeof what, "argmax_channel %s%s", mt_dtype_name(dt), ties ? " with ties" : "");
            mt_test_close(go, co, MT_TOL_EXACT, what);
            mt_tensor *rel[] = {x, gx, co, go};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
        }
}

/* ------------------------------------------------------------------ random */

static void test_rng(void) {
    /* odd sizes and offsets not multiple of 4: partial Philox blocks at both ends */
    const int64_t sizes[3] = {1, 7, 1000003};
    const uint64_t offsets[3] = {0, 5, 4099};
    for (int si = 0; si < 3; si++)
        for (int oi = 0; oi < 3; oi++) {
            int64_t shape[1] = {sizes[si]};
            uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)(si * 3 + oi);
            mt_tensor *c = mt_tensor_new(MT_F32, 1, shape, MT_DEVICE_CPU);
            mt_tensor *g = mt_tensor_new(MT_F32, 1, shape, GPU);
            char what[128];
            mt_kernel(MT_DEVICE_CPU, rng_uniform)(c, seed, offsets[oi], 0.0f, 1.0f);
            mt_kernel(GPU, rng_uniform)(g, seed, offsets[oi], 0.0f, 1.0f);
            snprintf(what, sizeof what, "rng_uniform [0, 1) n %lld offset %llu", (long long)sizes[si],
                     (unsigned long long)offsets[oi]);
            mt_test_close(g, c, MT_TOL_EXACT, what);
            mt_kernel(MT_DEVICE_CPU, rng_uniform)(c, seed, offsets[oi], -2.0f, 3.0f);
            mt_kernel(GPU, rng_uniform)(g, seed, offsets[oi], -2.0f, 3.0f);
            snprintf(what, sizeof what, "rng_uniform [-2, 3) n %lld offset %llu", (long long)sizes[si],
                     (unsigned long long)offsets[oi]);
            mt_test_close(g, c, MT_TOL_EXACT, what);
            mt_kernel(MT_DEVICE_CPU, rng_normal)(c, seed, offsets[oi], 0.5f, 2.0f);
            mt_kernel(GPU, rng_normal)(g, seed, offsets[oi], 0.5f, 2.0f);
            snprintf(what, sizeof what, "rng_normal n %lld offset %llu", (long long)sizes[si],
                     (unsigned long long)offsets[oi]);
            mt_test_close(g, c, MT_TOL_ELEMENTWISE, what);
            mt_tensor_release(c);
            mt_tensor_release(g);
        }
    /* the tensor fills through mt_rng advance and continue the same stream */
    {
        int64_t shape[2] = {33, 17};
        mt_rng rc, rg;
        mt_rng_init(&rc, 42);
        mt_rng_init(&rg, 42);
        mt_tensor *c = mt_tensor_new(MT_F32, 2, shape, MT_DEVICE_CPU);
        mt_tensor *g = mt_tensor_new(MT_F32, 2, shape, GPU);
        for (int k = 0; k < 3; k++) {
            mt_rng_fill_uniform(c, &rc, -1.0f, 1.0f);
            mt_rng_fill_uniform(g, &rg, -1.0f, 1.0f);
            mt_test_close(g, c, MT_TOL_EXACT, "mt_rng_fill_uniform");
            mt_rng_fill_normal(c, &rc, 0.0f, 1.0f);
            mt_rng_fill_normal(g, &rg, 0.0f, 1.0f);
            mt_test_close(g, c, MT_TOL_ELEMENTWISE, "mt_rng_fill_normal");
        }
        mt_tensor_release(c);
        mt_tensor_release(g);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--one-hot-bad-label") == 0) return one_hot_bad_child();
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(2024);
    test_fill();
    test_copy();
    test_binary();
    test_unary();
    test_one_hot();
    test_one_hot_bad_label();
    test_argmax();
    test_rng();
    return mt_test_finish();
}
