/* LABELS: gpu */
/* CUDA conv3d kernels (core/cuda/conv.cu) against the CPU kernels on the same
 * random inputs: forward (+bias), backward-data, backward-filter (+db) for
 * many geometries (kernel 1/2/3 and non-cubic, stride 1/2, padding 0/1/2,
 * dilation 2, groups 1/2, depthwise and depthwise with a channel multiplier,
 * channels 3/5/7/13, odd spatial sizes), and the transposed-convolution use
 * of the same kernels (autograd/conv.c: its forward is backward-data, its
 * input gradient forward, its weight gradient backward-filter with x and dy
 * swapped) with output_padding, including output_padding >= stride (stride 1,
 * dilation 2), where the y side is smaller than cuDNN's natural output.
 *
 * Each geometry runs in f32 (tf32 off), f32 with tf32 on, and bf16 (inputs
 * rounded to bf16 once, on the CPU, and copied to the GPU: both devices see
 * the same values). A few geometries also run with MT_CUDNN_BENCHMARK=0
 * (cuDNN's heuristics instead of Find). GPU outputs start as NaN, so an
 * element the kernel does not write (or a beta != 0 it should not use) fails.
 * After each case the GPU calls run again on the same shapes: the device
 * allocator's system allocation count must not move (no cudaMalloc in the
 * steady state) and the results must still match.
 *
 * Scales: weights ~ N(0, 1/fan_in) and the dy used for the filter gradient
 * ~ N(0, 1/(number of terms summed)), so every output is O(1) and the
 * table's MT_TOL_GEMM tolerance means what it says.
 *
 * tf32 tolerance (stated here, not in the table): with tf32 each input keeps
 * 10 mantissa bits, so each product carries a relative error below
 * 2 * 2^-10 ~ 2e-3 (truncation) with a systematic part of about 1e-3 and a
 * random part; on O(1) outputs that is an absolute error of a few 1e-3 at
 * most (random walk over the terms with unit total weight, ~4 sigma), plus
 * the systematic share proportional to the value: atol 8e-3, rtol 4e-3. An
 * indexing or geometry error produces O(1) differences and still fails. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "mt_test.h"

#define TF32_ATOL 8e-3
#define TF32_RTOL 4e-3

static const mt_device CPU = {MT_CPU, 0};
static const mt_device GPU = {MT_CUDA, 0};

typedef struct {
    mt_tensor *c, *g; /* the same values on the CPU and the GPU */
} pair;

static void pair_release(pair *p) {
    mt_tensor_release(p->c);
    mt_tensor_release(p->g);
    p->c = p->g = NULL;
}

/* N(0, scale^2) values rounded to dt, on both devices. */
static pair make_input(int ndim, const int64_t *shape, double scale, mt_dtype dt) {
    mt_tensor *f = mt_test_randn(ndim, shape);
    float *p = MT_F32P(f);
    for (int64_t i = 0; i < mt_tensor_numel(f); i++) p[i] = (float)(p[i] * scale);
    pair r;
    r.c = mt_tensor_to_dtype(f, dt);
    r.g = mt_test_to_gpu(r.c);
    mt_tensor_release(f);
    return r;
}

/* Outputs: uninitialised on the CPU, NaN on the GPU. */
static pair make_output(int ndim, const int64_t *shape, mt_dtype dt) {
    pair r;
    r.c = mt_tensor_new(dt, ndim, shape, CPU);
    mt_tensor *nan = mt_tensor_full(dt, ndim, shape, NAN, CPU);
    r.g = mt_test_to_gpu(nan);
    mt_tensor_release(nan);
    return r;
}

static void compare(const pair *p, int tf32, const char *what) {
    if (tf32) {
        mt_tensor *h = mt_test_to_cpu(p->g);
        mt_test_allclose_t(h, p->c, TF32_ATOL, TF32_RTOL, what);
        mt_tensor_release(h);
    } else {
        mt_test_close(p->g, p->c, MT_TOL_GEMM, what);
    }
}

static int64_t gpu_sys_allocs(void) {
    mt_alloc_stats st;
    memset(&st, 0, sizeof st);
    mt_kernel(GPU, memory_stats)(&st);
    return st.sys_allocs;
}

static const char *mode_name(mt_dtype dt, int tf32) {
    return dt == MT_BF16 ? "bf16" : tf32 ? "f32+tf32" : "f32";
}

/* ------------------------------------------------------------ conv3d */

typedef struct {
    const char *name;
    int n, cin, cout;
    int in[3], k[3], stride[3], pad[3], dil[3];
    int groups, bias;
} conv_case;

static mt_conv_params params_of(const int *stride, const int *pad, const int *dil, const int *outpad,
                                int groups) {
    mt_conv_params p;
    memset(&p, 0, sizeof p);
    for (int j = 0; j < 3; j++) {
        p.stride[j] = stride[j];
        p.padding[j] = pad[j];
        p.dilation[j] = dil[j];
        p.output_padding[j] = outpad ? outpad[j] : 0;
    }
    p.groups = groups;
    return p;
}

static void run_conv_case(const conv_case *cc, mt_dtype dt, int tf32) {
    char what[256];
    mt_backend_set_allow_tf32(tf32);
    mt_conv_params p = params_of(cc->stride, cc->pad, cc->dil, NULL, cc->groups);
    int64_t xs[5] = {cc->n, cc->cin, cc->in[0], cc->in[1], cc->in[2]};
    int64_t ws[5] = {cc->cout, cc->cin / cc->groups, cc->k[0], cc->k[1], cc->k[2]};
    int64_t ys[5] = {cc->n, cc->cout, 0, 0, 0};
    int64_t kvol = (int64_t)cc->k[0] * cc->k[1] * cc->k[2], ovol = 1;
    for (int j = 0; j < 3; j++) {
        ys[2 + j] = (cc->in[j] + 2 * cc->pad[j] - cc->dil[j] * (cc->k[j] - 1) - 1) / cc->stride[j] + 1;
        ovol *= ys[2 + j];
    }
    pair x = make_input(5, xs, 1.0, dt);
    pair w = make_input(5, ws, 1.0 / sqrt((double)(cc->cin / cc->groups * kvol)), dt);
    pair b = {NULL, NULL};
    if (cc->bias) b = make_input(1, (int64_t[]){cc->cout}, 0.5, dt);
    pair dy = make_input(5, ys, 1.0, dt);
    pair dyf = make_input(5, ys, 1.0 / sqrt((double)(cc->n * ovol)), dt);

    pair y = make_output(5, ys, dt), dx = make_output(5, xs, dt), dw = make_output(5, ws, dt);
    pair db = {NULL, NULL};
    if (cc->bias) db = make_output(1, (int64_t[]){cc->cout}, dt);

    for (int pass = 0; pass < 2; pass++) { /* pass 1: steady state, same shapes again */
        int64_t allocs0 = gpu_sys_allocs();
        mt_kernel(GPU, conv3d_forward)(y.g, x.g, w.g, b.g, &p);
        mt_kernel(GPU, conv3d_backward_data)(dx.g, dy.g, w.g, &p);
        mt_kernel(GPU, conv3d_backward_filter)(dw.g, db.g, x.g, dyf.g, &p);
        mt_kernel(GPU, synchronize)();
        if (pass == 1)
            CHECK_MSG(gpu_sys_allocs() == allocs0,
                      "%s %s: second call allocated from the system (%lld -> %lld)", cc->name,
                      mode_name(dt, tf32), (long long)allocs0, (long long)gpu_sys_allocs());
        if (pass == 0) {
            mt_kernel(CPU, conv3d_forward)(y.c, x.c, w.c, b.c, &p);
            mt_kernel(CPU, conv3d_backward_data)(dx.c, dy.c, w.c, &p);
            mt_kernel(CPU, conv3d_backward_filter)(dw.c, db.c, x.c, dyf.c, &p);
        }
        const char *tag = pass ? " (2nd call)" : "";
        snprintf(what, sizeof what, "%s %s forward%s%s", cc->name, mode_name(dt, tf32),
                 cc->bias ? " +bias" : "", tag);
        compare(&y, tf32, what);
        snprintf(what, sizeof what, "%s %s backward_data%s", cc->name, mode_name(dt, tf32), tag);
        compare(&dx, tf32, what);
        snprintf(what, sizeof what, "%s %s backward_filter%s", cc->name, mode_name(dt, tf32), tag);
        compare(&dw, tf32, what);
        if (cc->bias) {
            snprintf(what, sizeof what, "%s %s db%s", cc->name, mode_name(dt, tf32), tag);
            compare(&db, tf32, what);
        }
    }
    pair *all[] = {&x, &w, &b, &dy, &dyf, &y, &dx, &dw, &db};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]->c) pair_release(all[i]);
    mt_backend_set_allow_tf32(0);
}

/* -------------------------------------------------- transposed-conv use */

typedef struct {
    const char *name;
    int n, cin, cout; /* of the transposed conv: x (N, cin, in) -> y (N, cout, T) */
    int in[3], k[3], stride[3], pad[3], dil[3], outpad[3];
    int groups;
} tconv_case;

static void run_tconv_case(const tconv_case *tc, mt_dtype dt, int tf32) {
    char what[256];
    mt_backend_set_allow_tf32(tf32);
    mt_conv_params p = params_of(tc->stride, tc->pad, tc->dil, tc->outpad, tc->groups);
    int64_t xs[5] = {tc->n, tc->cin, tc->in[0], tc->in[1], tc->in[2]};
    int64_t ws[5] = {tc->cin, tc->cout / tc->groups, tc->k[0], tc->k[1], tc->k[2]};
    int64_t ts[5] = {tc->n, tc->cout, 0, 0, 0};
    int64_t kvol = (int64_t)tc->k[0] * tc->k[1] * tc->k[2];
    int64_t ivol = (int64_t)tc->in[0] * tc->in[1] * tc->in[2];
    for (int j = 0; j < 3; j++)
        ts[2 + j] = (int64_t)(tc->in[j] - 1) * tc->stride[j] - 2 * tc->pad[j] +
                    (int64_t)tc->dil[j] * (tc->k[j] - 1) + tc->outpad[j] + 1;
    /* The transposed conv sums about cin/groups * kvol / stride^3 terms per
     * output; scale the weight by the larger count (outputs <= O(1)). */
    pair x = make_input(5, xs, 1.0, dt);
    pair w = make_input(5, ws, 1.0 / sqrt((double)(tc->cin / tc->groups * kvol)), dt);
    pair g = make_input(5, ts, 1.0, dt);               /* gradient of the transposed output */
    pair xf = make_input(5, xs, 1.0 / sqrt((double)(tc->n * ivol)), dt); /* for dw */

    pair y = make_output(5, ts, dt), dx = make_output(5, xs, dt), dw = make_output(5, ws, dt);
    for (int pass = 0; pass < 2; pass++) {
        int64_t allocs0 = gpu_sys_allocs();
        mt_kernel(GPU, conv3d_backward_data)(y.g, x.g, w.g, &p);         /* forward */
        mt_kernel(GPU, conv3d_forward)(dx.g, g.g, w.g, NULL, &p);        /* input gradient */
        mt_kernel(GPU, conv3d_backward_filter)(dw.g, NULL, g.g, xf.g, &p); /* weight gradient */
        mt_kernel(GPU, synchronize)();
        if (pass == 1)
            CHECK_MSG(gpu_sys_allocs() == allocs0,
                      "%s %s: second call allocated from the system (%lld -> %lld)", tc->name,
                      mode_name(dt, tf32), (long long)allocs0, (long long)gpu_sys_allocs());
        if (pass == 0) {
            mt_kernel(CPU, conv3d_backward_data)(y.c, x.c, w.c, &p);
            mt_kernel(CPU, conv3d_forward)(dx.c, g.c, w.c, NULL, &p);
            mt_kernel(CPU, conv3d_backward_filter)(dw.c, NULL, g.c, xf.c, &p);
        }
        const char *tag = pass ? " (2nd call)" : "";
        snprintf(what, sizeof what, "%s %s transposed forward%s", tc->name, mode_name(dt, tf32), tag);
        compare(&y, tf32, what);
        snprintf(what, sizeof what, "%s %s transposed dx%s", tc->name, mode_name(dt, tf32), tag);
        compare(&dx, tf32, what);
        snprintf(what, sizeof what, "%s %s transposed dw%s", tc->name, mode_name(dt, tf32), tag);
        compare(&dw, tf32, what);
    }
    pair *all[] = {&x, &w, &g, &xf, &y, &dx, &dw};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_release(all[i]);
    mt_backend_set_allow_tf32(0);
}

#define V3(a) {a, a, a}

static const conv_case g_conv_cases[] = {
    /* name, n, cin, cout, in, k, stride, pad, dil, groups, bias */
    {"k3 s1 p1 3->5", 2, 3, 5, {7, 9, 11}, V3(3), V3(1), V3(1), V3(1), 1, 1},
    {"k1 s1 p0 7->13", 1, 7, 13, {5, 6, 7}, V3(1), V3(1), V3(0), V3(1), 1, 1},
    {"k2 s2 p0 5->7 (odd sizes)", 2, 5, 7, {7, 9, 11}, V3(2), V3(2), V3(0), V3(1), 1, 0},
    {"k3 s2 p1 13->7", 1, 13, 7, {9, 7, 11}, V3(3), V3(2), V3(1), V3(1), 1, 1},
    {"k3 d2 p2 5->6", 2, 5, 6, {7, 8, 9}, V3(3), V3(1), V3(2), V3(2), 1, 1},
    {"k3 d2 p1 s2 7->5", 1, 7, 5, {9, 11, 7}, V3(3), V3(2), V3(1), V3(2), 1, 0},
    {"k3 p1 groups 2 6->10", 2, 6, 10, {5, 7, 6}, V3(3), V3(1), V3(1), V3(1), 2, 1},
    {"k3 s2 p1 groups 2 14->6", 1, 14, 6, {7, 9, 5}, V3(3), V3(2), V3(1), V3(1), 2, 0},
    {"depthwise k3 p1 5", 2, 5, 5, {7, 9, 11}, V3(3), V3(1), V3(1), V3(1), 5, 1},
    {"depthwise x2 k3 s2 p1 4->8", 1, 4, 8, {7, 6, 9}, V3(3), V3(2), V3(1), V3(1), 4, 1},
    {"k1 s2 p0 (unread rows) 3->5", 2, 3, 5, {7, 9, 11}, V3(1), V3(2), V3(0), V3(1), 1, 1},
    {"k1 p1 (pad only rows) 5->3", 1, 5, 3, {4, 5, 3}, V3(1), V3(1), V3(1), V3(1), 1, 1},
    {"non-cubic k1x3x2 s(1,2,1) p(0,1,1)", 2, 5, 7, {6, 9, 7}, {1, 3, 2}, {1, 2, 1}, {0, 1, 1},
     V3(1), 1, 1},
    {"k3 s1 p0 32->32 (UNet-like)", 2, 32, 32, {10, 12, 9}, V3(3), V3(1), V3(0), V3(1), 1, 1},
};

static const tconv_case g_tconv_cases[] = {
    /* name, n, cin, cout, in, k, stride, pad, dil, outpad, groups */
    {"tconv k2 s2 8->5", 2, 8, 5, {4, 5, 3}, V3(2), V3(2), V3(0), V3(1), V3(0), 1},
    {"tconv k3 s2 p1 op1 5->3", 1, 5, 3, {3, 4, 5}, V3(3), V3(2), V3(1), V3(1), V3(1), 1},
    {"tconv k3 s1 d2 p1 op1 4->6 (op >= stride)", 2, 4, 6, {4, 5, 6}, V3(3), V3(1), V3(1), V3(2),
     V3(1), 1},
    {"tconv k3 s2 p1 op(1,0,1) groups 2 6->4", 1, 6, 4, {3, 5, 4}, V3(3), V3(2), V3(1), V3(1),
     {1, 0, 1}, 2},
    {"tconv k3 s1 d2 p0 op(1,0,1) 3->5 (mixed)", 1, 3, 5, {5, 4, 3}, V3(3), V3(1), V3(0), V3(2),
     {1, 0, 1}, 1},
};

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(2024);
    const size_t nc = sizeof g_conv_cases / sizeof *g_conv_cases;
    const size_t nt = sizeof g_tconv_cases / sizeof *g_tconv_cases;
    const struct {
        mt_dtype dt;
        int tf32;
    } modes[] = {{MT_F32, 0}, {MT_F32, 1}, {MT_BF16, 0}};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        for (size_t i = 0; i < nc; i++) run_conv_case(&g_conv_cases[i], modes[m].dt, modes[m].tf32);
        for (size_t i = 0; i < nt; i++) run_tconv_case(&g_tconv_cases[i], modes[m].dt, modes[m].tf32);
    }

    /* cuDNN's heuristics instead of Find (read when a problem is first seen:
     * these shapes, with a batch of 3, are new). */
    setenv("MT_CUDNN_BENCHMARK", "0", 1);
    conv_case c = g_conv_cases[0];
    c.n = 3;
    c.name = "heuristics: k3 s1 p1 3->5";
    run_conv_case(&c, MT_F32, 0);
    run_conv_case(&c, MT_BF16, 0);
    c = g_conv_cases[6];
    c.n = 3;
    c.name = "heuristics: k3 p1 groups 2 6->10";
    run_conv_case(&c, MT_F32, 0);
    tconv_case t = g_tconv_cases[2];
    t.n = 3;
    t.name = "heuristics: tconv k3 s1 d2 p1 op1";
    run_tconv_case(&t, MT_F32, 0);
    unsetenv("MT_CUDNN_BENCHMARK");
    return mt_test_finish();
}
