/* LABELS: unit grad */
/* Reductions and softmax: CPU kernels (core/cpu/reduce.c) against naive
 * double-precision references, and the autograd ops (autograd/reduce.c)
 * by finite differences. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static const char *op_name[] = {"sum", "sumsq", "max", "min", "absmax"};

/* Naive reference: out (keepdim shape, contiguous) from x. */
static void ref_reduce(mt_reduce_op op, const double *x, int nd, const int64_t *shape,
                       const int *red, double *out) {
    int64_t ks[MT_MAX_DIMS], kst[MT_MAX_DIMS], nout = 1, n = 1;
    for (int d = 0; d < nd; d++) {
        ks[d] = red[d] ? 1 : shape[d];
        nout *= ks[d];
        n *= shape[d];
    }
    int64_t st = 1;
    for (int d = nd - 1; d >= 0; d--) {
        kst[d] = st;
        st *= ks[d];
    }
    for (int64_t o = 0; o < nout; o++)
        out[o] = op == MT_RED_MAX ? -INFINITY : op == MT_RED_MIN ? INFINITY : 0.0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = i, o = 0;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t idx = r % shape[d];
            r /= shape[d];
            if (!red[d]) o += idx * kst[d];
        }
        double v = x[i];
        switch (op) {
        case MT_RED_SUM: out[o] += v; break;
        case MT_RED_SUMSQ: out[o] += v * v; break;
        case MT_RED_MAX: out[o] = v > out[o] ? v : out[o]; break;
        case MT_RED_MIN: out[o] = v < out[o] ? v : out[o]; break;
        default: out[o] = fabs(v) > out[o] ? fabs(v) : out[o]; break;
        }
    }
}

/* Runs the kernel for every op on x with the reduced-dims mask; returns ok. */
static int check_reduce_mask(mt_tensor *x, const int *red) {
    int nd = x->ndim;
    int64_t ks[MT_MAX_DIMS], nout = 1;
    for (int d = 0; d < nd; d++) {
        ks[d] = red[d] ? 1 : x->shape[d];
        nout *= ks[d];
    }
    double *xd = mt_test_to_f64(x);
    double *ref = malloc(sizeof(double) * (size_t)(nout ? nout : 1));
    int ok = 1;
    for (int op = 0; op < MT_NUM_REDUCE_OPS; op++) {
        mt_tensor *out = mt_tensor_new(MT_F32, nd, ks, MT_DEVICE_CPU);
        mt_cpu_backend.reduce((mt_reduce_op)op, out, x);
        ref_reduce((mt_reduce_op)op, xd, nd, x->shape, red, ref);
        char what[160], b1[64];
        int m = 0;
        for (int d = 0; d < nd; d++) m |= red[d] << d;
        snprintf(what, sizeof what, "reduce %s of %s mask 0x%x", op_name[op],
                 mt_tensor_shape_str(x, b1, sizeof b1), m);
        ok &= mt_test_allclose(out, ref, 1e-5, 1e-6, what);
        mt_tensor_release(out);
    }
    free(ref);
    free(xd);
    return ok;
}

/* Every subset of dims (bitmask) for a small tensor. */
static void test_reduce_all_masks(int nd, const int64_t *shape) {
    mt_tensor *x = mt_test_rand(nd, shape, -2, 2);
    for (int m = 0; m < (1 << nd); m++) {
        int red[MT_MAX_DIMS] = {0};
        for (int d = 0; d < nd; d++) red[d] = (m >> d) & 1;
        check_reduce_mask(x, red);
    }
    mt_tensor_release(x);
}

static void test_reduce_masks(void) {
    test_reduce_all_masks(MT_SHAPE(7));
    test_reduce_all_masks(MT_SHAPE(5, 9));
    test_reduce_all_masks(MT_SHAPE(3, 5, 7, 11));
    test_reduce_all_masks(MT_SHAPE(2, 3, 5, 4, 6));
    test_reduce_all_masks(MT_SHAPE(1, 4, 1, 5));
    test_reduce_all_masks(MT_SHAPE(3, 1, 2, 1, 3, 2));
    /* 0-d tensor: nothing to reduce */
    mt_tensor *s = mt_scalar(-1.5f);
    mt_tensor *o = mt_tensor_new(MT_F32, 0, NULL, MT_DEVICE_CPU);
    mt_cpu_backend.reduce(MT_RED_SUMSQ, o, s);
    CHECK_NEAR(mt_tensor_item(o), 2.25, 1e-7);
    mt_cpu_backend.reduce(MT_RED_ABSMAX, o, s);
    CHECK_NEAR(mt_tensor_item(o), 1.5, 1e-7);
    mt_tensor_release(s);
    mt_tensor_release(o);
}

/* Sizes that split one output's work into several chunks and several
 * column blocks, checked against the reference and for independence of
 * the thread count. */
static void test_reduce_large(void) {
    struct {
        int nd;
        int64_t shape[4];
        int red[4];
    } cases[] = {
        {1, {150001}, {1}},              /* everything */
        {2, {3, 70001}, {0, 1}},         /* trailing, chunked rows */
        {3, {2, 5, 40003}, {1, 0, 1}},   /* bias / BN style */
        {3, {3, 2, 30011}, {1, 0, 1}},   /* bias style, few channels */
        {2, {70001, 3}, {1, 0}},         /* leading, narrow columns */
        {2, {301, 601}, {1, 0}},         /* leading, several column blocks */
        {3, {7, 20001, 5}, {0, 1, 0}},   /* middle */
        {4, {3, 301, 5, 67}, {1, 0, 1, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        mt_tensor *x = mt_test_rand(cases[c].nd, cases[c].shape, -1, 3);
        check_reduce_mask(x, cases[c].red);
        /* bitwise identical with 1 and 2 threads */
        int64_t ks[4];
        for (int d = 0; d < cases[c].nd; d++) ks[d] = cases[c].red[d] ? 1 : cases[c].shape[d];
        mt_tensor *a = mt_tensor_new(MT_F32, cases[c].nd, ks, MT_DEVICE_CPU);
        mt_tensor *b = mt_tensor_new(MT_F32, cases[c].nd, ks, MT_DEVICE_CPU);
        int prev = omp_get_max_threads();
        omp_set_num_threads(1);
        mt_cpu_backend.reduce(MT_RED_SUM, a, x);
        omp_set_num_threads(2);
        mt_cpu_backend.reduce(MT_RED_SUM, b, x);
        omp_set_num_threads(prev);
        CHECK_MSG(memcmp(MT_F32P(a), MT_F32P(b), mt_tensor_nbytes(a)) == 0,
                  "reduce case %zu: result depends on thread count", c);
        mt_tensor_release(a);
        mt_tensor_release(b);
        mt_tensor_release(x);
    }
}

static void test_reduce_special(void) {
    /* NaN propagates through max / min / absmax, sums see it too */
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 37), -1, 1);
    mt_tensor_set_flat(x, 37 + 20, NAN);
    mt_tensor *o = mt_tensor_new(MT_F32, MT_SHAPE(4, 1), MT_DEVICE_CPU);
    for (int op = 0; op < MT_NUM_REDUCE_OPS; op++) {
        mt_cpu_backend.reduce((mt_reduce_op)op, o, x);
        CHECK_MSG(isnan(mt_tensor_get_flat(o, 1)) && !isnan(mt_tensor_get_flat(o, 0)) &&
                      !isnan(mt_tensor_get_flat(o, 2)),
                  "NaN propagation in %s", op_name[op]);
    }
    mt_tensor *o2 = mt_tensor_new(MT_F32, MT_SHAPE(1, 37), MT_DEVICE_CPU);
    mt_cpu_backend.reduce(MT_RED_MAX, o2, x);
    CHECK(isnan(mt_tensor_get_flat(o2, 20)) && !isnan(mt_tensor_get_flat(o2, 19)));
    mt_tensor_release(o2);
    mt_tensor_release(o);
    mt_tensor_release(x);
    /* double accumulation: 2^24 + many ones is exact */
    mt_tensor *big = mt_tensor_full(MT_F32, MT_SHAPE(100001), 1.0, MT_DEVICE_CPU);
    mt_tensor_set_flat(big, 0, 16777216.0);
    mt_tensor *s = mt_tensor_new(MT_F32, MT_SHAPE(1), MT_DEVICE_CPU);
    mt_cpu_backend.reduce(MT_RED_SUM, s, big);
    CHECK_NEAR(mt_tensor_item(s), 16777216.0 + 100000.0, 0.0);
    mt_tensor_release(s);
    mt_tensor_release(big);
    /* empty reduced dim gives the identity */
    mt_tensor *e = mt_tensor_new(MT_F32, MT_SHAPE(3, 0), MT_DEVICE_CPU);
    mt_tensor *eo = mt_tensor_new(MT_F32, MT_SHAPE(3, 1), MT_DEVICE_CPU);
    mt_cpu_backend.reduce(MT_RED_SUM, eo, e);
    CHECK(mt_tensor_get_flat(eo, 2) == 0.0);
    mt_cpu_backend.reduce(MT_RED_MAX, eo, e);
    CHECK(isinf(mt_tensor_get_flat(eo, 2)) && mt_tensor_get_flat(eo, 2) < 0);
    mt_tensor_release(e);
    mt_tensor_release(eo);
}

/* ---------------------------------------------------------------- softmax */

static void ref_softmax(const double *x, double *y, int nd, const int64_t *shape, int dim,
                        int use_log) {
    int64_t outer = 1, n = shape[dim], inner = 1;
    for (int d = 0; d < dim; d++) outer *= shape[d];
    for (int d = dim + 1; d < nd; d++) inner *= shape[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const double *xr = x + o * n * inner + j;
            double *yr = y + o * n * inner + j;
            double m = -INFINITY, s = 0;
            for (int64_t c = 0; c < n; c++) m = xr[c * inner] > m ? xr[c * inner] : m;
            for (int64_t c = 0; c < n; c++) s += exp(xr[c * inner] - m);
            for (int64_t c = 0; c < n; c++)
                yr[c * inner] = use_log ? xr[c * inner] - m - log(s) : exp(xr[c * inner] - m) / s;
        }
}

/* grad_in reference from grad_out and the (double) forward output. */
static void ref_softmax_bwd(const double *go, const double *y, double *gi, int nd,
                            const int64_t *shape, int dim, int use_log) {
    int64_t outer = 1, n = shape[dim], inner = 1;
    for (int d = 0; d < dim; d++) outer *= shape[d];
    for (int d = dim + 1; d < nd; d++) inner *= shape[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t b = o * n * inner + j;
            double s = 0;
            for (int64_t c = 0; c < n; c++)
                s += use_log ? go[b + c * inner] : go[b + c * inner] * y[b + c * inner];
            for (int64_t c = 0; c < n; c++) {
                int64_t i = b + c * inner;
                gi[i] = use_log ? go[i] - exp(y[i]) * s : y[i] * (go[i] - s);
            }
        }
}

static void check_softmax(int nd, const int64_t *shape, float lo, float hi) {
    mt_tensor *x = mt_test_rand(nd, shape, lo, hi);
    mt_tensor *go = mt_test_rand(nd, shape, -1, 1);
    int64_t n = mt_tensor_numel(x);
    double *xd = mt_test_to_f64(x), *god = mt_test_to_f64(go);
    double *yd = malloc(sizeof(double) * (size_t)n), *gid = malloc(sizeof(double) * (size_t)n);
    for (int dim = 0; dim < nd; dim++)
        for (int lg = 0; lg < 2; lg++) {
            char what[160], b1[64];
            snprintf(what, sizeof what, "%ssoftmax of %s [%g, %g) dim %d", lg ? "log_" : "",
                     mt_tensor_shape_str(x, b1, sizeof b1), lo, hi, dim);
            mt_tensor *y = mt_tensor_new_like(x), *gi = mt_tensor_new_like(x);
            mt_cpu_backend.softmax(y, x, dim, lg);
            ref_softmax(xd, yd, nd, shape, dim, lg);
            mt_test_allclose(y, yd, lg ? 1e-5 : 1e-7, 1e-5, what);
            mt_cpu_backend.softmax_backward(gi, go, y, dim, lg);
            ref_softmax_bwd(god, yd, gid, nd, shape, dim, lg);
            strncat(what, " backward", sizeof what - strlen(what) - 1);
            mt_test_allclose(gi, gid, 1e-6, 1e-4, what);
            if (!lg) { /* rows sum to one */
                double *yv = mt_test_to_f64(y);
                int64_t len = shape[dim], inner = 1;
                for (int d = dim + 1; d < nd; d++) inner *= shape[d];
                double s = 0;
                for (int64_t c = 0; c < len; c++) s += yv[c * inner];
                CHECK_NEAR(s, 1.0, 1e-5);
                free(yv);
            }
            mt_tensor_release(y);
            mt_tensor_release(gi);
        }
    free(xd);
    free(god);
    free(yd);
    free(gid);
    mt_tensor_release(x);
    mt_tensor_release(go);
}

static void test_softmax(void) {
    check_softmax(MT_SHAPE(4, 7), -3, 3);
    check_softmax(MT_SHAPE(2, 3, 5, 7), -3, 3);
    check_softmax(MT_SHAPE(2, 5, 301), -3, 3);   /* several inner blocks */
    check_softmax(MT_SHAPE(3, 1001), -3, 3);     /* long rows */
    check_softmax(MT_SHAPE(3, 37), -80, 80);     /* stability: large logits */
    check_softmax(MT_SHAPE(2, 3, 9, 11, 5), -5, 5);
    check_softmax(MT_SHAPE(2, 4, 70, 70), -4, 4); /* parallel path */
    check_softmax(MT_SHAPE(2, 257, 9), -1, 1);    /* many channels: large denominators */
    /* a NaN poisons its own row / column only */
    for (int dim = 0; dim < 2; dim++)
        for (int lg = 0; lg < 2; lg++) {
            mt_tensor *xn = mt_test_rand(MT_SHAPE(3, 5), -1, 1), *yn = mt_tensor_new_like(xn);
            mt_tensor_set_flat(xn, 1 * 5 + 2, NAN); /* element (1, 2) */
            mt_cpu_backend.softmax(yn, xn, dim, lg);
            int64_t same = dim == 1 ? 1 * 5 + 4 : 2 * 5 + 2, other = dim == 1 ? 0 : 1 * 5 + 0;
            CHECK_MSG(isnan(mt_tensor_get_flat(yn, same)) && !isnan(mt_tensor_get_flat(yn, other)),
                      "softmax NaN propagation dim %d log %d", dim, lg);
            mt_tensor_release(xn);
            mt_tensor_release(yn);
        }
    /* extreme values: no overflow, exact zeros where the reference underflows */
    float xv[6] = {1000.0f, -1000.0f, 0.0f, 88.0f, -88.0f, 1e-3f};
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(2, 3), xv);
    mt_tensor *y = mt_tensor_new_like(x);
    mt_cpu_backend.softmax(y, x, 1, 0);
    CHECK_NEAR(mt_tensor_get_flat(y, 0), 1.0, 1e-7);
    CHECK(mt_tensor_get_flat(y, 1) == 0.0);
    CHECK_NEAR(mt_tensor_get_flat(y, 3), 1.0, 1e-7);
    mt_cpu_backend.softmax(y, x, 1, 1);
    CHECK_NEAR(mt_tensor_get_flat(y, 1), -2000.0, 1e-3);
    CHECK_NEAR(mt_tensor_get_flat(y, 4), -176.0, 1e-3);
    mt_tensor_release(x);
    mt_tensor_release(y);
}

/* --------------------------------------------------------------- autograd */

typedef struct {
    int ndims;
    int dims[MT_MAX_DIMS];
    int keepdim, mean;
} sum_ctx;

static mt_tensor *f_sum(mt_tensor **in, void *vctx) {
    sum_ctx *c = vctx;
    return c->mean ? mt_mean(in[0], c->ndims, c->dims, c->keepdim)
                   : mt_sum(in[0], c->ndims, c->dims, c->keepdim);
}
static mt_tensor *f_sum_all(mt_tensor **in, void *c) { return mt_sum_all(in[0]); }
static mt_tensor *f_mean_all(mt_tensor **in, void *c) { return mt_mean_all(in[0]); }
static mt_tensor *f_softmax(mt_tensor **in, void *c) { return mt_softmax(in[0], *(int *)c); }
static mt_tensor *f_log_softmax(mt_tensor **in, void *c) { return mt_log_softmax(in[0], *(int *)c); }

/* Softmax of a product, so the softmax gradient flows to a non-leaf. */
static mt_tensor *f_softmax_chain(mt_tensor **in, void *c) {
    mt_tensor *p = mt_mul(in[0], in[1]);
    mt_tensor *s = mt_softmax(p, 1);
    mt_tensor *l = mt_log_softmax(s, 1);
    mt_tensor_release(p);
    mt_tensor_release(s);
    return l;
}

static void test_sum_ops(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(3, 4, 5), -1, 1);
    double *xd = mt_test_to_f64(x);
    /* forward shapes and values */
    mt_tensor *s = mt_sum(x, 1, (int[]){-1}, 0);
    CHECK(s->ndim == 2 && s->shape[0] == 3 && s->shape[1] == 4);
    double r = 0;
    for (int k = 0; k < 5; k++) r += xd[(1 * 4 + 2) * 5 + k];
    CHECK_NEAR(mt_tensor_get(s, (int64_t[]){1, 2}), r, 1e-5);
    mt_tensor *mk = mt_mean(x, 2, (int[]){0, 2}, 1);
    CHECK(mk->ndim == 3 && mk->shape[0] == 1 && mk->shape[1] == 4 && mk->shape[2] == 1);
    r = 0;
    for (int a = 0; a < 3; a++)
        for (int k = 0; k < 5; k++) r += xd[(a * 4 + 3) * 5 + k];
    CHECK_NEAR(mt_tensor_get(mk, (int64_t[]){0, 3, 0}), r / 15, 1e-6);
    mt_tensor *sa = mt_sum_all(x), *ma = mt_mean_all(x);
    CHECK(sa->ndim == 0 && ma->ndim == 0);
    r = 0;
    for (int i = 0; i < 60; i++) r += xd[i];
    CHECK_NEAR(mt_tensor_item(sa), r, 1e-5);
    CHECK_NEAR(mt_tensor_item(ma), r / 60, 1e-6);
    mt_tensor *se = mt_sum(x, 0, NULL, 0); /* empty list: every dim */
    CHECK(se->ndim == 0);
    CHECK_NEAR(mt_tensor_item(se), r, 1e-5);
    /* bf16 input: f32 result */
    mt_tensor *xb = mt_tensor_to_dtype(x, MT_BF16);
    mt_tensor *sb = mt_sum_all(xb);
    CHECK(sb->dtype == MT_F32);
    CHECK_NEAR(mt_tensor_item(sb), r, 0.1);
    /* non-contiguous input */
    mt_tensor *xt = mt_tensor_transpose(x, 0, 2);
    mt_tensor *st = mt_sum(xt, 1, (int[]){2}, 0); /* (5, 4) = sum over the original dim 0 */
    r = 0;
    for (int a = 0; a < 3; a++) r += xd[(a * 4 + 1) * 5 + 4];
    CHECK_NEAR(mt_tensor_get(st, (int64_t[]){4, 1}), r, 1e-5);
    mt_tensor *rel[] = {s, mk, sa, ma, se, xb, sb, xt, st};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
    free(xd);

    /* gradients */
    mt_tensor_set_requires_grad(x, 1);
    sum_ctx cases[] = {
        {1, {1}, 0, 0}, {2, {0, 2}, 1, 0}, {1, {-1}, 1, 1}, {3, {0, 1, 2}, 0, 1}, {2, {2, 0}, 0, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char what[64];
        snprintf(what, sizeof what, "%s case %zu", cases[c].mean ? "mean" : "sum", c);
        mt_test_gradcheck(what, f_sum, &cases[c], 1, &x, 1e-3, 1e-3, 1e-2);
    }
    mt_test_gradcheck("sum_all", f_sum_all, NULL, 1, &x, 1e-3, 1e-3, 1e-2);
    mt_test_gradcheck("mean_all", f_mean_all, NULL, 1, &x, 1e-3, 1e-3, 1e-2);
    /* exact gradient values of mean_all: 1/60 everywhere */
    mt_tensor_zero_grad(x);
    mt_tensor *m = mt_mean_all(x);
    CHECK(mt_backward(m, NULL, 0) == MT_OK);
    double *g = mt_test_to_f64(x->grad);
    int ok = 1;
    for (int i = 0; i < 60; i++) ok &= fabs(g[i] - 1.0 / 60) < 1e-8;
    CHECK_MSG(ok, "mean_all gradient is 1/numel");
    free(g);
    mt_tensor_release(m);
    /* no node when grad mode is off */
    int prev = mt_grad_set_enabled(0);
    mt_tensor *ng = mt_sum_all(x);
    CHECK(ng->grad_fn == NULL && !ng->requires_grad);
    mt_tensor_release(ng);
    mt_grad_set_enabled(prev);
    mt_tensor_release(x);
}

static void test_softmax_grad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 4, 5), -2, 2);
    mt_tensor_set_requires_grad(x, 1);
    for (int dim = -1; dim < 4; dim++) {
        char what[64];
        snprintf(what, sizeof what, "softmax dim %d", dim);
        mt_test_gradcheck(what, f_softmax, &dim, 1, &x, 1e-3, 1e-3, 1e-2);
        snprintf(what, sizeof what, "log_softmax dim %d", dim);
        mt_test_gradcheck(what, f_log_softmax, &dim, 1, &x, 1e-3, 1e-3, 1e-2);
    }
    mt_tensor *a = mt_test_rand(MT_SHAPE(2, 3, 7), -2, 2), *b = mt_test_rand(MT_SHAPE(3, 1), 0.5, 1.5);
    mt_tensor_set_requires_grad(a, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *ins[2] = {a, b};
    mt_test_gradcheck("softmax chain", f_softmax_chain, NULL, 2, ins, 1e-3, 1e-3, 1e-2);
    mt_tensor_release(a);
    mt_tensor_release(b);
    mt_tensor_release(x);
}

int main(void) {
    mt_test_seed(101);
    test_reduce_masks();
    test_reduce_large();
    test_reduce_special();
    test_softmax();
    test_sum_ops();
    test_softmax_grad();
    return mt_test_finish();
}
