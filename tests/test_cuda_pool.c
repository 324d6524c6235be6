/* LABELS: gpu */
/* CUDA pooling and resampling kernels (core/cuda/pool.cu) against the CPU
 * backend (core/cpu/pool.c) on the same inputs, f32 and bf16: max pool 3D
 * (values and i32 indices bit-exact, ties included: bf16 inputs with few
 * levels), its backward through the CPU's indices (overlapping and
 * non-overlapping windows), avg pool 3D with count_include_pad 0 and 1,
 * forward and backward, for kernel / stride / padding 2/2/0, 3/2/1, 3/1/1 and
 * an anisotropic mix, on odd sizes and channel counts; trilinear resize with
 * align_corners 0 and 1 to larger, smaller, mixed, unchanged and size-1
 * targets (non-integer scales), forward and backward. GPU outputs start as
 * NaN so that an element left unwritten fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static const mt_device GPU = {MT_CUDA, 0};
static const mt_dtype FLOAT_DT[2] = {MT_F32, MT_BF16};

#define CPUK(slot) mt_kernel(MT_DEVICE_CPU, slot)
#define GPUK(slot) mt_kernel(GPU, slot)

static mt_tensor *rand_dt(int nd, const int64_t *shape, float lo, float hi, mt_dtype dt) {
    mt_tensor *x = mt_test_rand(nd, shape, lo, hi);
    mt_tensor *y = mt_tensor_to_dtype(x, dt);
    mt_tensor_release(x);
    return y;
}

/* Integer levels in {0, ..., k - 1}: many ties inside pooling windows. */
static mt_tensor *rand_levels(int nd, const int64_t *shape, int k, mt_dtype dt) {
    mt_tensor *x = mt_test_rand(nd, shape, 0.0f, (float)k);
    int64_t n = mt_tensor_numel(x);
    float *p = MT_F32P(x);
    for (int64_t i = 0; i < n; i++) p[i] = floorf(p[i]);
    mt_tensor *y = mt_tensor_to_dtype(x, dt);
    mt_tensor_release(x);
    return y;
}

/* NaN-filled output on the GPU (and a CPU one for the reference). */
static mt_tensor *nan_gpu(mt_dtype dt, int nd, const int64_t *shape) {
    mt_tensor *c = mt_tensor_full(dt, nd, shape, dt == MT_I32 ? -7 : NAN, MT_DEVICE_CPU);
    mt_tensor *g = mt_test_to_gpu(c);
    mt_tensor_release(c);
    return g;
}

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

static void out_shape(const int64_t *xs, const mt_pool_params *p, int64_t *ys) {
    ys[0] = xs[0];
    ys[1] = xs[1];
    for (int a = 0; a < 3; a++)
        ys[2 + a] = (xs[2 + a] + 2 * p->padding[a] - p->kernel[a]) / p->stride[a] + 1;
}

static void describe(char *buf, size_t n, const char *op, const int64_t *xs,
                     const mt_pool_params *p, mt_dtype dt) {
    snprintf(buf, n, "%s x(%lld,%lld,%lld,%lld,%lld) k(%d,%d,%d) s(%d,%d,%d) p(%d,%d,%d) cip=%d %s",
             op, (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3],
             (long long)xs[4], p->kernel[0], p->kernel[1], p->kernel[2], p->stride[0],
             p->stride[1], p->stride[2], p->padding[0], p->padding[1], p->padding[2],
             p->count_include_pad, mt_dtype_name(dt));
}

#define NCASES 5
static mt_pool_params g_cases[NCASES];

static void init_cases(void) {
    g_cases[0] = pool_params(2, 2, 2, 2, 2, 2, 0, 0, 0, 1);
    g_cases[1] = pool_params(3, 3, 3, 2, 2, 2, 1, 1, 1, 1);
    g_cases[2] = pool_params(3, 3, 3, 1, 1, 1, 1, 1, 1, 1);
    g_cases[3] = pool_params(1, 2, 3, 1, 2, 2, 0, 1, 1, 1);
    g_cases[4] = pool_params(2, 3, 2, 3, 1, 2, 1, 0, 1, 1);
}

/* ------------------------------------------------------------- max pool */

static void test_max_pool(void) {
    const int64_t shapes[2][5] = {{2, 5, 7, 9, 11}, {1, 3, 8, 6, 10}};
    for (int si = 0; si < 2; si++)
        for (int di = 0; di < 2; di++)
            for (int ci = 0; ci < NCASES; ci++)
                for (int ties = 0; ties < 2; ties++) {
                    mt_dtype dt = FLOAT_DT[di];
                    const int64_t *xs = shapes[si];
                    const mt_pool_params *p = &g_cases[ci];
                    int64_t ys[5];
                    out_shape(xs, p, ys);
                    char what[256], sub[300];
                    describe(what, sizeof what, ties ? "max_pool3d (ties)" : "max_pool3d", xs, p, dt);
                    mt_tensor *xc = ties ? rand_levels(5, xs, 4, dt) : rand_dt(5, xs, -3, 3, dt);
                    mt_tensor *xg = mt_test_to_gpu(xc);
                    mt_tensor *yc = mt_tensor_new(dt, 5, ys, MT_DEVICE_CPU), *yg = nan_gpu(dt, 5, ys);
                    mt_tensor *ic = mt_tensor_new(MT_I32, 5, ys, MT_DEVICE_CPU);
                    mt_tensor *ig = nan_gpu(MT_I32, 5, ys);
                    CPUK(max_pool3d_forward)(yc, ic, xc, p);
                    GPUK(max_pool3d_forward)(yg, ig, xg, p);
                    snprintf(sub, sizeof sub, "%s: y", what);
                    mt_test_close(yg, yc, MT_TOL_EXACT, sub);
                    snprintf(sub, sizeof sub, "%s: indices", what);
                    mt_test_close(ig, ic, MT_TOL_EXACT, sub);

                    /* backward through the CPU's indices */
                    mt_tensor *ig2 = mt_test_to_gpu(ic);
                    mt_tensor *gc = rand_dt(5, ys, -1, 1, dt), *gg = mt_test_to_gpu(gc);
                    mt_tensor *dxc = mt_tensor_new(dt, 5, xs, MT_DEVICE_CPU), *dxg = nan_gpu(dt, 5, xs);
                    CPUK(max_pool3d_backward)(dxc, gc, ic);
                    GPUK(max_pool3d_backward)(dxg, gg, ig2);
                    snprintf(sub, sizeof sub, "%s: dx", what);
                    mt_test_close(dxg, dxc, MT_TOL_REDUCE, sub);
                    mt_tensor *list[] = {xc, xg, yc, yg, ic, ig, ig2, gc, gg, dxc, dxg};
                    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++) mt_tensor_release(list[k]);
                }
}

/* ------------------------------------------------------------- avg pool */

static void test_avg_pool(void) {
    const int64_t shapes[2][5] = {{2, 5, 7, 9, 11}, {1, 3, 8, 6, 10}};
    for (int si = 0; si < 2; si++)
        for (int di = 0; di < 2; di++)
            for (int ci = 0; ci < NCASES; ci++)
                for (int cip = 0; cip < 2; cip++) {
                    mt_dtype dt = FLOAT_DT[di];
                    const int64_t *xs = shapes[si];
                    mt_pool_params p = g_cases[ci];
                    p.count_include_pad = cip;
                    int64_t ys[5];
                    out_shape(xs, &p, ys);
                    char what[256], sub[300];
                    describe(what, sizeof what, "avg_pool3d", xs, &p, dt);
                    mt_tensor *xc = rand_dt(5, xs, -3, 3, dt), *xg = mt_test_to_gpu(xc);
                    mt_tensor *yc = mt_tensor_new(dt, 5, ys, MT_DEVICE_CPU), *yg = nan_gpu(dt, 5, ys);
                    CPUK(avg_pool3d_forward)(yc, xc, &p);
                    GPUK(avg_pool3d_forward)(yg, xg, &p);
                    snprintf(sub, sizeof sub, "%s: y", what);
                    mt_test_close(yg, yc, MT_TOL_REDUCE, sub);

                    mt_tensor *gc = rand_dt(5, ys, -1, 1, dt), *gg = mt_test_to_gpu(gc);
                    mt_tensor *dxc = mt_tensor_new(dt, 5, xs, MT_DEVICE_CPU), *dxg = nan_gpu(dt, 5, xs);
                    CPUK(avg_pool3d_backward)(dxc, gc, &p);
                    GPUK(avg_pool3d_backward)(dxg, gg, &p);
                    snprintf(sub, sizeof sub, "%s: dx", what);
                    mt_test_close(dxg, dxc, MT_TOL_REDUCE, sub);
                    mt_tensor *list[] = {xc, xg, yc, yg, gc, gg, dxc, dxg};
                    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++) mt_tensor_release(list[k]);
                }
}

/* ------------------------------------------------------------ trilinear */

static void test_trilinear(void) {
    const int64_t xs[5] = {2, 5, 7, 9, 11};
    /* targets: up (non-integer), exact 2x, down, mixed with an unchanged axis,
     * size 1 on two axes, larger by a big factor */
    const int64_t targets[6][3] = {{13, 17, 23}, {14, 18, 22}, {4, 5, 6},
                                   {7, 4, 20},   {1, 17, 1},   {3, 40, 5}};
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 6; ti++)
            for (int ac = 0; ac < 2; ac++) {
                mt_dtype dt = FLOAT_DT[di];
                int64_t ys[5] = {xs[0], xs[1], targets[ti][0], targets[ti][1], targets[ti][2]};
                char what[200], sub[260];
                snprintf(what, sizeof what, "upsample_trilinear (7,9,11)->(%lld,%lld,%lld) align_corners=%d %s",
                         (long long)ys[2], (long long)ys[3], (long long)ys[4], ac, mt_dtype_name(dt));
                mt_tensor *xc = rand_dt(5, xs, -3, 3, dt), *xg = mt_test_to_gpu(xc);
                mt_tensor *yc = mt_tensor_new(dt, 5, ys, MT_DEVICE_CPU), *yg = nan_gpu(dt, 5, ys);
                CPUK(upsample_trilinear_forward)(yc, xc, ac);
                GPUK(upsample_trilinear_forward)(yg, xg, ac);
                snprintf(sub, sizeof sub, "%s: y", what);
                mt_test_close(yg, yc, MT_TOL_REDUCE, sub);

                mt_tensor *gc = rand_dt(5, ys, -1, 1, dt), *gg = mt_test_to_gpu(gc);
                mt_tensor *dxc = mt_tensor_new(dt, 5, xs, MT_DEVICE_CPU), *dxg = nan_gpu(dt, 5, xs);
                CPUK(upsample_trilinear_backward)(dxc, gc, ac);
                GPUK(upsample_trilinear_backward)(dxg, gg, ac);
                snprintf(sub, sizeof sub, "%s: dx", what);
                mt_test_close(dxg, dxc, MT_TOL_REDUCE, sub);
                mt_tensor *list[] = {xc, xg, yc, yg, gc, gg, dxc, dxg};
                for (size_t k = 0; k < sizeof list / sizeof list[0]; k++) mt_tensor_release(list[k]);
            }
}

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(20240612);
    init_cases();
    test_max_pool();
    test_avg_pool();
    test_trilinear();
    return mt_test_finish();
}
