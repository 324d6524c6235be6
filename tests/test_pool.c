/* LABELS: unit grad */
/* Pooling and resampling ops (autograd/pool.c, core/cpu/pool.c): max pool 3D
 * (values and indices), avg pool 3D (count_include_pad on/off), trilinear
 * resize (align_corners on/off, up and down). Forward against naive double
 * references, backward against references and finite differences. */
#include <stdlib.h>
#include <string.h>

#include "mt_test.h"

static mt_pool_params pool_params(int k0, int k1, int k2, int s0, int s1, int s2, int p0, int p1,
                                  int p2, int cip) {
    mt_pool_params p;
    memset(&p, 0, sizeof p);
    p.kernel[0] = k0, p.kernel[1] = k1, p.kernel[2] = k2;
    p.stride[0] = s0, p.stride[1] = s1, p.stride[2] = s2;
    p.padding[0] = p0, p.padding[1] = p1, p.padding[2] = p2;
    p.count_include_pad = cip;
    return p;
}

/* Distinct values (spacing `step`, shuffled) so that max pooling has no ties,
 * even under finite-difference perturbations smaller than step / 2. */
static mt_tensor *distinct_rand(int ndim, const int64_t *shape, double step) {
    mt_tensor *t = mt_tensor_new(MT_F32, ndim, shape, MT_DEVICE_CPU);
    int64_t n = mt_tensor_numel(t);
    mt_tensor *u = mt_test_rand(MT_SHAPE(n), 0, 1);
    float *up = MT_F32P(u), *tp = MT_F32P(t);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates with the test stream */
        int64_t j = (int64_t)(up[i] * (float)(i + 1));
        if (j > i) j = i;
        int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int64_t i = 0; i < n; i++) tp[i] = (float)((double)perm[i] * step - (double)n * step / 2);
    free(perm);
    mt_tensor_release(u);
    return t;
}

static int64_t out_len(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* --------------------------------------------------------------- max pool */

static void ref_max_pool(const double *x, const int64_t *xs, const mt_pool_params *p, double *y,
                         int64_t *idx, int64_t *ys) {
    int64_t D = xs[2], H = xs[3], W = xs[4];
    for (int a = 0; a < 3; a++) ys[2 + a] = out_len(xs[2 + a], p->kernel[a], p->stride[a], p->padding[a]);
    ys[0] = xs[0];
    ys[1] = xs[1];
    int64_t k = 0;
    for (int64_t pl = 0; pl < xs[0] * xs[1]; pl++)
        for (int64_t od = 0; od < ys[2]; od++)
            for (int64_t oh = 0; oh < ys[3]; oh++)
                for (int64_t ow = 0; ow < ys[4]; ow++, k++) {
                    double best = -INFINITY;
                    int64_t bi = -1;
                    for (int a = 0; a < p->kernel[0]; a++)
                        for (int b = 0; b < p->kernel[1]; b++)
                            for (int c = 0; c < p->kernel[2]; c++) {
                                int64_t d = od * p->stride[0] - p->padding[0] + a;
                                int64_t h = oh * p->stride[1] - p->padding[1] + b;
                                int64_t w = ow * p->stride[2] - p->padding[2] + c;
                                if (d < 0 || d >= D || h < 0 || h >= H || w < 0 || w >= W) continue;
                                double v = x[pl * D * H * W + (d * H + h) * W + w];
                                if (v > best) {
                                    best = v;
                                    bi = (d * H + h) * W + w;
                                }
                            }
                    y[k] = best;
                    idx[k] = bi;
                }
}

static mt_tensor *max_fn(mt_tensor **in, void *ctx) { return mt_max_pool3d(in[0], ctx); }
static mt_tensor *avg_fn(mt_tensor **in, void *ctx) { return mt_avg_pool3d(in[0], ctx); }

static void test_max_pool(void) {
    mt_pool_params cases[3] = {
        pool_params(3, 2, 3, 2, 2, 1, 1, 0, 1, 0),
        pool_params(2, 2, 2, 2, 2, 2, 0, 0, 0, 0),
        pool_params(3, 3, 3, 1, 2, 3, 1, 1, 1, 0),
    };
    for (int ci = 0; ci < 3; ci++) {
        const mt_pool_params *p = &cases[ci];
        int64_t xs[5] = {2, 3, 7, 6, 5};
        mt_tensor *x = distinct_rand(5, xs, 0.01);
        mt_tensor_set_requires_grad(x, 1);
        mt_tensor *y = mt_max_pool3d(x, p);
        double *xd = mt_test_to_f64(x);
        int64_t ys[5];
        int64_t ny = 2 * 3 * 7 * 6 * 5; /* upper bound */
        double *yr = malloc(sizeof(double) * (size_t)ny);
        int64_t *ir = malloc(sizeof(int64_t) * (size_t)ny);
        ref_max_pool(xd, xs, p, yr, ir, ys);
        int shape_ok = y->ndim == 5;
        for (int d = 0; d < 5 && shape_ok; d++) shape_ok = y->shape[d] == ys[d];
        CHECK_MSG(shape_ok, "max_pool3d case %d output shape", ci);
        char what[64];
        snprintf(what, sizeof what, "max_pool3d case %d forward", ci);
        if (shape_ok) mt_test_allclose(y, yr, 1e-7, 0, what);
        /* gradient lands on the reference argmax of each window */
        int64_t nyy = mt_tensor_numel(y), nx = mt_tensor_numel(x), S = xs[2] * xs[3] * xs[4];
        mt_tensor *dy = mt_test_rand(5, y->shape, -1, 1);
        double *dyd = mt_test_to_f64(dy), *dx = calloc((size_t)nx, sizeof(double));
        int64_t osz = nyy / (xs[0] * xs[1]);
        for (int64_t k = 0; k < nyy; k++) dx[(k / osz) * S + ir[k]] += dyd[k];
        mt_status st = mt_backward(y, dy, 0);
        CHECK(st == MT_OK);
        snprintf(what, sizeof what, "max_pool3d case %d backward (indices)", ci);
        if (x->grad) mt_test_allclose(x->grad, dx, 1e-6, 1e-6, what);
        else CHECK_MSG(0, "max_pool3d: no gradient");
        free(xd), free(yr), free(ir), free(dyd), free(dx);
        mt_tensor_release(y);
        mt_tensor_release(dy);
        mt_tensor_release(x);
    }
    /* gradcheck on a small tie-free input (spacing 0.05 >> eps) */
    int64_t xs[5] = {2, 2, 5, 4, 5};
    mt_tensor *x = distinct_rand(5, xs, 0.05);
    mt_tensor_set_requires_grad(x, 1);
    mt_test_gradcheck("max_pool3d k3 s2 p1", max_fn, &cases[0], 1, &x, 1e-3, 1e-3, 1e-2);
    mt_test_gradcheck("max_pool3d k3 s(1,2,3) p1", max_fn, &cases[2], 1, &x, 1e-3, 1e-3, 1e-2);
    mt_tensor_release(x);
}

/* A window that lies entirely in the padding is impossible (pad <= k/2), but a
 * window that is mostly padding must still pick the real maximum, even if all
 * real values are negative (padding acts as -inf, not 0). */
static void test_max_pool_negative_padding(void) {
    float v[8] = {-5, -4, -3, -2, -6, -7, -8, -1};
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 2, 2, 2), v);
    mt_pool_params p = pool_params(2, 2, 2, 2, 2, 2, 1, 1, 1, 0);
    mt_tensor *y = mt_max_pool3d(x, &p); /* (1,1,2,2,2), each window sees one real value */
    int ok = 1;
    for (int i = 0; i < 8; i++) ok &= mt_tensor_get_flat(y, i) == v[i];
    CHECK_MSG(ok, "max_pool3d with padding over negative values");
    mt_tensor_release(x);
    mt_tensor_release(y);
}

/* --------------------------------------------------------------- avg pool */

static void ref_avg_pool(const double *x, const int64_t *xs, const mt_pool_params *p, double *y,
                         int64_t *ys) {
    int64_t D = xs[2], H = xs[3], W = xs[4];
    for (int a = 0; a < 3; a++) ys[2 + a] = out_len(xs[2 + a], p->kernel[a], p->stride[a], p->padding[a]);
    ys[0] = xs[0];
    ys[1] = xs[1];
    int64_t k = 0;
    for (int64_t pl = 0; pl < xs[0] * xs[1]; pl++)
        for (int64_t od = 0; od < ys[2]; od++)
            for (int64_t oh = 0; oh < ys[3]; oh++)
                for (int64_t ow = 0; ow < ys[4]; ow++, k++) {
                    double s = 0;
                    int64_t cnt = 0;
                    for (int a = 0; a < p->kernel[0]; a++)
                        for (int b = 0; b < p->kernel[1]; b++)
                            for (int c = 0; c < p->kernel[2]; c++) {
                                int64_t d = od * p->stride[0] - p->padding[0] + a;
                                int64_t h = oh * p->stride[1] - p->padding[1] + b;
                                int64_t w = ow * p->stride[2] - p->padding[2] + c;
                                if (d < 0 || d >= D || h < 0 || h >= H || w < 0 || w >= W) continue;
                                s += x[pl * D * H * W + (d * H + h) * W + w];
                                cnt++;
                            }
                    /* floor mode: the window never leaves the padded input */
                    int64_t div = p->count_include_pad ? p->kernel[0] * p->kernel[1] * p->kernel[2] : cnt;
                    y[k] = s / (double)div;
                }
}

static void test_avg_pool(void) {
    for (int cip = 0; cip < 2; cip++) {
        mt_pool_params cases[3] = {
            pool_params(3, 2, 3, 2, 2, 1, 1, 1, 1, cip),
            pool_params(2, 3, 2, 2, 1, 2, 0, 1, 1, cip),
            pool_params(2, 2, 2, 2, 2, 2, 0, 0, 0, cip), /* the U-Net case */
        };
        for (int ci = 0; ci < 3; ci++) {
            const mt_pool_params *p = &cases[ci];
            int64_t xs[5] = {2, 3, 7, 6, 5};
            mt_tensor *x = mt_test_rand(5, xs, -1, 1);
            mt_tensor *y = mt_avg_pool3d(x, p);
            double *xd = mt_test_to_f64(x);
            int64_t ys[5];
            double *yr = malloc(sizeof(double) * 2 * 3 * 7 * 6 * 5);
            ref_avg_pool(xd, xs, p, yr, ys);
            int shape_ok = 1;
            for (int d = 0; d < 5; d++) shape_ok &= y->shape[d] == ys[d];
            CHECK_MSG(shape_ok, "avg_pool3d case %d cip %d output shape", ci, cip);
            char what[80];
            snprintf(what, sizeof what, "avg_pool3d case %d count_include_pad %d forward", ci, cip);
            if (shape_ok) mt_test_allclose(y, yr, 1e-6, 1e-5, what);
            free(xd);
            free(yr);
            mt_tensor_release(x);
            mt_tensor_release(y);
            /* gradcheck on a smaller input */
            int64_t gs[5] = {2, 2, 5, 4, 3};
            mt_tensor *xg = mt_test_rand(5, gs, -1, 1);
            mt_tensor_set_requires_grad(xg, 1);
            snprintf(what, sizeof what, "avg_pool3d case %d count_include_pad %d", ci, cip);
            mt_test_gradcheck(what, avg_fn, (void *)p, 1, &xg, 1e-2, 1e-3, 1e-2);
            mt_tensor_release(xg);
        }
    }
    /* count_include_pad by hand: 1-D along W, x = [1, 2, 3], k 3, s 1, p 1 */
    float v[3] = {1, 2, 3};
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 1, 1, 3), v);
    mt_pool_params pi = pool_params(1, 1, 3, 1, 1, 1, 0, 0, 1, 1);
    mt_pool_params pe = pool_params(1, 1, 3, 1, 1, 1, 0, 0, 1, 0);
    mt_tensor *yi = mt_avg_pool3d(x, &pi), *ye = mt_avg_pool3d(x, &pe);
    double ri[3] = {1.0, 2.0, 5.0 / 3}, re[3] = {1.5, 2.0, 2.5};
    mt_test_allclose(yi, ri, 1e-6, 0, "avg_pool3d count_include_pad=1 by hand");
    mt_test_allclose(ye, re, 1e-6, 0, "avg_pool3d count_include_pad=0 by hand");
    mt_tensor_release(x);
    mt_tensor_release(yi);
    mt_tensor_release(ye);
}

/* -------------------------------------------------------------- trilinear */

typedef struct {
    int64_t i0, i1;
    double l0, l1;
} rtap;

static rtap ref_tap(int64_t o, int64_t in, int64_t out, int align) {
    rtap t;
    double src;
    if (align)
        src = out > 1 ? (double)o * (double)(in - 1) / (double)(out - 1) : 0.0;
    else {
        src = ((double)o + 0.5) * (double)in / (double)out - 0.5;
        if (src < 0) src = 0;
    }
    t.i0 = (int64_t)floor(src);
    if (t.i0 > in - 1) t.i0 = in - 1;
    t.i1 = t.i0 + 1 < in ? t.i0 + 1 : in - 1;
    t.l1 = src - (double)t.i0;
    t.l0 = 1 - t.l1;
    return t;
}

static void ref_trilinear(const double *x, const int64_t *xs, const int64_t *os, int align,
                          double *y) {
    int64_t D = xs[2], H = xs[3], W = xs[4], k = 0;
    for (int64_t pl = 0; pl < xs[0] * xs[1]; pl++)
        for (int64_t od = 0; od < os[0]; od++)
            for (int64_t oh = 0; oh < os[1]; oh++)
                for (int64_t ow = 0; ow < os[2]; ow++, k++) {
                    rtap td = ref_tap(od, D, os[0], align), th = ref_tap(oh, H, os[1], align),
                         tw = ref_tap(ow, W, os[2], align);
                    double s = 0;
                    for (int a = 0; a < 2; a++)
                        for (int b = 0; b < 2; b++)
                            for (int c = 0; c < 2; c++) {
                                int64_t d = a ? td.i1 : td.i0, h = b ? th.i1 : th.i0, w = c ? tw.i1 : tw.i0;
                                double wt = (a ? td.l1 : td.l0) * (b ? th.l1 : th.l0) * (c ? tw.l1 : tw.l0);
                                s += wt * x[pl * D * H * W + (d * H + h) * W + w];
                            }
                    y[k] = s;
                }
}

typedef struct {
    int64_t out[3];
    int align;
} up_ctx;

static mt_tensor *up_fn(mt_tensor **in, void *vctx) {
    up_ctx *c = vctx;
    return mt_upsample_trilinear(in[0], c->out, c->align);
}

static void test_trilinear(void) {
    int64_t xs[5] = {2, 3, 4, 5, 3};
    int64_t outs[3][3] = {{7, 9, 6}, {3, 2, 5}, {4, 11, 2}}; /* up, down, mixed with identity D */
    for (int align = 0; align < 2; align++)
        for (int oi = 0; oi < 3; oi++) {
            mt_tensor *x = mt_test_rand(5, xs, -1, 1);
            mt_tensor_set_requires_grad(x, 1);
            mt_tensor *y = mt_upsample_trilinear(x, outs[oi], align);
            double *xd = mt_test_to_f64(x);
            int64_t ny = mt_tensor_numel(y);
            double *yr = malloc(sizeof(double) * (size_t)ny);
            ref_trilinear(xd, xs, outs[oi], align, yr);
            char what[96];
            snprintf(what, sizeof what, "trilinear align %d -> (%lld, %lld, %lld) forward", align,
                     (long long)outs[oi][0], (long long)outs[oi][1], (long long)outs[oi][2]);
            mt_test_allclose(y, yr, 2e-6, 1e-5, what);
            /* backward is the adjoint: <up(x), dy> = <x, up^T(dy)> */
            mt_tensor *dy = mt_test_rand(5, y->shape, -1, 1);
            double *dyd = mt_test_to_f64(dy);
            mt_status st = mt_backward(y, dy, 0);
            CHECK(st == MT_OK);
            double lhs = 0, rhs = 0;
            double *gx = x->grad ? mt_test_to_f64(x->grad) : NULL;
            for (int64_t i = 0; i < ny; i++) lhs += yr[i] * dyd[i];
            for (int64_t i = 0; gx && i < mt_tensor_numel(x); i++) rhs += xd[i] * gx[i];
            CHECK_MSG(gx && fabs(lhs - rhs) <= 1e-5 * (1 + fabs(lhs)),
                      "trilinear align %d case %d adjoint: %.9g vs %.9g", align, oi, lhs, rhs);
            free(gx), free(xd), free(yr), free(dyd);
            mt_tensor_release(dy);
            mt_tensor_release(y);
            /* finite differences */
            up_ctx c = {{outs[oi][0], outs[oi][1], outs[oi][2]}, align};
            snprintf(what, sizeof what, "trilinear align %d case %d", align, oi);
            mt_test_gradcheck(what, up_fn, &c, 1, &x, 1e-2, 1e-3, 1e-2);
            mt_tensor_release(x);
        }
}

/* Hand-computed 1-axis cases (W only; D = H = 1 are identities). */
static void test_trilinear_by_hand(void) {
    float v[4] = {1, 2, 4, 8};
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 1, 1, 4), v);
    /* align_corners=false, 4 -> 6: scale 2/3, src = max(0, (o + .5) * 2/3 - .5) =
     * 0, .5, 7/6, 11/6, 2.5, 19/6 (last clamps to index 3). */
    mt_tensor *y = mt_upsample_trilinear(x, (int64_t[]){1, 1, 6}, 0);
    double r[6] = {1, 1.5, 2 + 2.0 / 6, 2 + 2 * 5.0 / 6, 6, 8};
    mt_test_allclose(y, r, 1e-6, 1e-6, "trilinear align_corners=false 4 -> 6 by hand");
    mt_tensor_release(y);
    /* align_corners=true, 4 -> 7: src = o / 2 */
    y = mt_upsample_trilinear(x, (int64_t[]){1, 1, 7}, 1);
    double r2[7] = {1, 1.5, 2, 3, 4, 6, 8};
    mt_test_allclose(y, r2, 1e-6, 1e-6, "trilinear align_corners=true 4 -> 7 by hand");
    mt_tensor_release(y);
    mt_tensor_release(x);
    /* align_corners=false downsampling 7 -> 3 along D: scale 7/3, src = 2/3, 3, 16/3 */
    float q[7] = {0, 1, 4, 9, 16, 25, 36};
    x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 7, 1, 1), q);
    y = mt_upsample_trilinear(x, (int64_t[]){3, 1, 1}, 0);
    double r3[3] = {2.0 / 3, 9, 25 + 11.0 / 3};
    mt_test_allclose(y, r3, 1e-5, 1e-6, "trilinear align_corners=false 7 -> 3 by hand");
    mt_tensor_release(y);
    /* size 1 output with align_corners=true takes the first element */
    y = mt_upsample_trilinear(x, (int64_t[]){1, 1, 1}, 1);
    CHECK_NEAR(mt_tensor_item(y), 0.0, 1e-7);
    mt_tensor_release(y);
    mt_tensor_release(x);
}

/* Sizes large enough for the multi-threaded paths (all ops, forward and backward). */
static void test_large(void) {
    int64_t xs[5] = {2, 4, 19, 22, 25};
    mt_tensor *x = distinct_rand(5, xs, 1e-3);
    double *xd = mt_test_to_f64(x);
    int64_t nx = mt_tensor_numel(x), ys[5];
    double *yr = malloc(sizeof(double) * (size_t)(nx * 8));
    int64_t *ir = malloc(sizeof(int64_t) * (size_t)nx);
    mt_tensor_set_requires_grad(x, 1);
    mt_pool_params p = pool_params(3, 3, 3, 2, 2, 2, 1, 1, 1, 0);
    mt_tensor *y = mt_max_pool3d(x, &p);
    ref_max_pool(xd, xs, &p, yr, ir, ys);
    mt_test_allclose(y, yr, 1e-7, 0, "max_pool3d large forward");
    mt_tensor *dy = mt_test_rand(5, y->shape, -1, 1);
    double *dyd = mt_test_to_f64(dy), *dx = calloc((size_t)nx, sizeof(double));
    int64_t ny = mt_tensor_numel(y), osz = ny / (xs[0] * xs[1]), S = xs[2] * xs[3] * xs[4];
    for (int64_t k = 0; k < ny; k++) dx[(k / osz) * S + ir[k]] += dyd[k];
    CHECK(mt_backward(y, dy, 0) == MT_OK);
    if (x->grad) mt_test_allclose(x->grad, dx, 1e-6, 1e-6, "max_pool3d large backward");
    mt_tensor_zero_grad(x);
    mt_tensor_release(y);
    mt_tensor_release(dy);
    free(dyd);
    free(dx);
    /* avg pool: backward checked as the adjoint of the forward */
    p.count_include_pad = 1;
    y = mt_avg_pool3d(x, &p);
    ref_avg_pool(xd, xs, &p, yr, ys);
    mt_test_allclose(y, yr, 1e-6, 1e-5, "avg_pool3d large forward");
    dy = mt_test_rand(5, y->shape, -1, 1);
    dyd = mt_test_to_f64(dy);
    CHECK(mt_backward(y, dy, 0) == MT_OK);
    double lhs = 0, rhs = 0, *gx = x->grad ? mt_test_to_f64(x->grad) : NULL;
    for (int64_t k = 0; k < mt_tensor_numel(y); k++) lhs += yr[k] * dyd[k];
    for (int64_t k = 0; gx && k < nx; k++) rhs += xd[k] * gx[k];
    CHECK_MSG(gx && fabs(lhs - rhs) <= 1e-5 * (1 + fabs(lhs)), "avg_pool3d large adjoint %.9g vs %.9g", lhs, rhs);
    free(gx);
    free(dyd);
    mt_tensor_zero_grad(x);
    mt_tensor_release(y);
    mt_tensor_release(dy);
    /* trilinear x2 upsampling (the U-Net case), on unit-range values: the source
     * index is computed in f32 as PyTorch does, so errors scale with the range */
    mt_tensor_release(x);
    free(xd);
    x = mt_test_rand(5, xs, -1, 1);
    xd = mt_test_to_f64(x);
    mt_tensor_set_requires_grad(x, 1);
    int64_t os[3] = {38, 44, 50};
    for (int align = 0; align < 2; align++) {
        y = mt_upsample_trilinear(x, os, align);
        ref_trilinear(xd, xs, os, align, yr);
        mt_test_allclose(y, yr, 1e-5, 1e-5, align ? "trilinear large align 1" : "trilinear large align 0");
        dy = mt_test_rand(5, y->shape, -1, 1);
        dyd = mt_test_to_f64(dy);
        CHECK(mt_backward(y, dy, 0) == MT_OK);
        lhs = rhs = 0;
        gx = x->grad ? mt_test_to_f64(x->grad) : NULL;
        for (int64_t k = 0; k < mt_tensor_numel(y); k++) lhs += yr[k] * dyd[k];
        for (int64_t k = 0; gx && k < nx; k++) rhs += xd[k] * gx[k];
        CHECK_MSG(gx && fabs(lhs - rhs) <= 1e-5 * (1 + fabs(lhs)), "trilinear large adjoint %.9g vs %.9g", lhs, rhs);
        free(gx);
        free(dyd);
        mt_tensor_zero_grad(x);
        mt_tensor_release(y);
        mt_tensor_release(dy);
    }
    free(xd);
    free(yr);
    free(ir);
    mt_tensor_release(x);
}

/* GCC 12.2's SLP vectoriser with AVX-512 stored a broadcast over the padding
 * of this exact literal (CMakeLists.txt turns it off): the struct must arrive
 * intact when passed by value. */
__attribute__((noinline)) static void take_params(mt_pool_params p, int *out) {
    for (int a = 0; a < 3; a++) {
        out[a] = p.kernel[a];
        out[3 + a] = p.stride[a];
        out[6 + a] = p.padding[a];
    }
    out[9] = p.count_include_pad;
}

static void test_struct_by_value(void) {
    int o[10];
    take_params((mt_pool_params){{2, 2, 2}, {2, 2, 2}, {0, 0, 0}, 0}, o);
    static const int want[10] = {2, 2, 2, 2, 2, 2, 0, 0, 0, 0};
    int ok = 1;
    for (int k = 0; k < 10; k++) ok &= o[k] == want[k];
    CHECK_MSG(ok, "pool params by value: %d %d %d / %d %d %d / %d %d %d / %d (compiler bug?)", o[0],
              o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9]);
}

int main(void) {
    mt_test_seed(202);
    test_struct_by_value();
    test_max_pool();
    test_max_pool_negative_padding();
    test_avg_pool();
    test_trilinear();
    test_trilinear_by_hand();
    test_large();
    return mt_test_finish();
}
