/* LABELS: unit grad */
/* conv3d and conv_transpose3d (autograd/conv.c, core/cpu/conv.c): forward and
 * every gradient against naive double-precision references on random inputs
 * (odd sizes, strides, padding, dilation, groups, non-cubic kernels, bias or
 * none, Cin = 1, transposed with stride 2 and output_padding), plus finite
 * differences on small shapes and the primitive cache's steady state. */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "mt_test.h"

typedef struct {
    const char *name;
    int transposed;
    int n, cin, cout; /* x has cin channels, y has cout (for both ops) */
    int in[3], k[3];
    int stride[3], pad[3], dil[3], outpad[3];
    int groups;
    int bias;
    int gradcheck; /* also finite differences (small shapes only) */
} conv_case;

static mt_conv_params case_params(const conv_case *c) {
    mt_conv_params p = mt_conv_params_make(1, 0, 1, c->groups);
    for (int j = 0; j < 3; j++) {
        p.stride[j] = c->stride[j];
        p.padding[j] = c->pad[j];
        p.dilation[j] = c->dil[j];
        p.output_padding[j] = c->outpad[j];
    }
    return p;
}

static void case_out_size(const conv_case *c, int64_t *out) {
    for (int j = 0; j < 3; j++) {
        if (c->transposed)
            out[j] = (int64_t)(c->in[j] - 1) * c->stride[j] - 2 * c->pad[j] +
                     (int64_t)c->dil[j] * (c->k[j] - 1) + c->outpad[j] + 1;
        else
            out[j] = (c->in[j] + 2 * c->pad[j] - c->dil[j] * (c->k[j] - 1) - 1) / c->stride[j] + 1;
    }
}

static void case_w_shape(const conv_case *c, int64_t *ws) {
    if (c->transposed) {
        ws[0] = c->cin;
        ws[1] = c->cout / c->groups;
    } else {
        ws[0] = c->cout;
        ws[1] = c->cin / c->groups;
    }
    for (int j = 0; j < 3; j++) ws[2 + j] = c->k[j];
}

/* Naive reference in double. Each (x element, w element, y element) triple
 * that the op connects contributes y += x * w; with r = dL/dy the gradients
 * are dx += r w, dw += r x, db += r. Both ops visit the same triples, but the
 * loops are written from each op's own definition: conv gathers
 * (id = od s - p + kd d), transposed conv scatters (od = id s - p + kd d). */
static void reference(const conv_case *c, const double *x, const double *w, const double *b,
                      const double *r, double *y, double *dx, double *dw, double *db) {
    int64_t out[3];
    case_out_size(c, out);
    int64_t ws[5];
    case_w_shape(c, ws);
    const int G = c->groups, cig = c->cin / G, cog = c->cout / G;
    const int64_t xs = (int64_t)c->in[0] * c->in[1] * c->in[2], ys = out[0] * out[1] * out[2];
    const int64_t nx = (int64_t)c->n * c->cin * xs, ny = (int64_t)c->n * c->cout * ys;
    const int64_t nw = ws[0] * ws[1] * ws[2] * ws[3] * ws[4];
    memset(dx, 0, sizeof(double) * (size_t)nx);
    memset(dw, 0, sizeof(double) * (size_t)nw);
    memset(db, 0, sizeof(double) * (size_t)c->cout);
    for (int64_t i = 0; i < ny; i++) y[i] = 0;
    const int64_t kvol = (int64_t)c->k[0] * c->k[1] * c->k[2];
    for (int n = 0; n < c->n; n++)
        for (int g = 0; g < G; g++)
            for (int cil = 0; cil < cig; cil++)
                for (int col = 0; col < cog; col++) {
                    int ci = g * cig + cil, co = g * cog + col;
                    /* weight (Cout, Cin/G, k) for conv, (Cin, Cout/G, k) for transposed */
                    int64_t wbase = c->transposed ? ((int64_t)ci * cog + col) * kvol
                                                  : ((int64_t)co * cig + cil) * kvol;
                    for (int kd = 0; kd < c->k[0]; kd++)
                        for (int kh = 0; kh < c->k[1]; kh++)
                            for (int kw = 0; kw < c->k[2]; kw++) {
                                int64_t wi = wbase + ((int64_t)kd * c->k[1] + kh) * c->k[2] + kw;
                                int kk[3] = {kd, kh, kw};
                                /* iterate over the side that defines the op */
                                int64_t lim[3];
                                for (int j = 0; j < 3; j++) lim[j] = c->transposed ? c->in[j] : out[j];
                                for (int64_t a0 = 0; a0 < lim[0]; a0++)
                                    for (int64_t a1 = 0; a1 < lim[1]; a1++)
                                        for (int64_t a2 = 0; a2 < lim[2]; a2++) {
                                            int64_t a[3] = {a0, a1, a2}, o[3], xi3[3];
                                            int ok = 1;
                                            for (int j = 0; j < 3; j++) {
                                                int64_t t = a[j] * c->stride[j] - c->pad[j] +
                                                            (int64_t)kk[j] * c->dil[j];
                                                if (c->transposed) {
                                                    xi3[j] = a[j];
                                                    o[j] = t;
                                                    ok &= t >= 0 && t < out[j];
                                                } else {
                                                    o[j] = a[j];
                                                    xi3[j] = t;
                                                    ok &= t >= 0 && t < c->in[j];
                                                }
                                            }
                                            if (!ok) continue;
                                            int64_t xi = ((int64_t)n * c->cin + ci) * xs +
                                                         (xi3[0] * c->in[1] + xi3[1]) * c->in[2] + xi3[2];
                                            int64_t yi = ((int64_t)n * c->cout + co) * ys +
                                                         (o[0] * out[1] + o[1]) * out[2] + o[2];
                                            y[yi] += x[xi] * w[wi];
                                            dx[xi] += r[yi] * w[wi];
                                            dw[wi] += r[yi] * x[xi];
                                        }
                            }
                }
    for (int n = 0; n < c->n; n++)
        for (int co = 0; co < c->cout; co++)
            for (int64_t s = 0; s < ys; s++) {
                int64_t yi = ((int64_t)n * c->cout + co) * ys + s;
                if (b) y[yi] += b[co];
                db[co] += r[yi];
            }
}

static mt_tensor *case_apply(const conv_case *c, mt_tensor *x, mt_tensor *w, mt_tensor *b) {
    mt_conv_params p = case_params(c);
    return c->transposed ? mt_conv_transpose3d(x, w, b, &p) : mt_conv3d(x, w, b, &p);
}

static mt_tensor *gc_fn(mt_tensor **in, void *ctx) {
    const conv_case *c = ctx;
    return case_apply(c, in[0], in[1], c->bias ? in[2] : NULL);
}

/* requires: bit 0 x, bit 1 w, bit 2 bias */
static void run_case(const conv_case *c, int requires) {
    char what[160];
    if (getenv("MT_TEST_VERBOSE")) fprintf(stderr, "case %s (requires %d)\n", c->name, requires);
    int64_t out[3], ws[5];
    case_out_size(c, out);
    case_w_shape(c, ws);
    mt_tensor *x = mt_test_rand(MT_SHAPE(c->n, c->cin, c->in[0], c->in[1], c->in[2]), -1, 1);
    mt_tensor *w = mt_test_rand(5, ws, -0.5f, 0.5f);
    mt_tensor *b = c->bias ? mt_test_rand(MT_SHAPE(c->cout), -1, 1) : NULL;
    mt_tensor_set_requires_grad(x, requires & 1);
    mt_tensor_set_requires_grad(w, (requires >> 1) & 1);
    if (b) mt_tensor_set_requires_grad(b, (requires >> 2) & 1);

    mt_tensor *y = case_apply(c, x, w, b);
    int shape_ok = y->ndim == 5 && y->shape[0] == c->n && y->shape[1] == c->cout &&
                   y->shape[2] == out[0] && y->shape[3] == out[1] && y->shape[4] == out[2];
    char sbuf[96];
    CHECK_MSG(shape_ok, "%s: output shape %s", c->name, mt_tensor_shape_str(y, sbuf, sizeof sbuf));
    if (!shape_ok) {
        mt_tensor_release(y);
        mt_tensor_release(x);
        mt_tensor_release(w);
        if (b) mt_tensor_release(b);
        return;
    }
    mt_tensor *r = mt_test_rand(5, y->shape, -1, 1);
    double *xd = mt_test_to_f64(x), *wd = mt_test_to_f64(w), *bd = b ? mt_test_to_f64(b) : NULL;
    double *rd = mt_test_to_f64(r);
    int64_t ny = mt_tensor_numel(y);
    double *yref = malloc(sizeof(double) * (size_t)ny);
    double *dx = malloc(sizeof(double) * (size_t)mt_tensor_numel(x));
    double *dw = malloc(sizeof(double) * (size_t)mt_tensor_numel(w));
    double *db = malloc(sizeof(double) * (size_t)c->cout);
    reference(c, xd, wd, bd, rd, yref, dx, dw, db);
    snprintf(what, sizeof what, "%s forward", c->name);
    mt_test_allclose(y, yref, 1e-4, 1e-4, what);

    if (requires) {
        mt_status st = mt_backward(y, r, 0);
        CHECK_MSG(st == MT_OK, "%s: backward: %s", c->name, mt_error_msg());
        struct { mt_tensor *t; double *ref; const char *nm; int on; } gs[3] = {
            {x, dx, "dx", requires & 1}, {w, dw, "dw", (requires >> 1) & 1},
            {b, db, "db", b && ((requires >> 2) & 1)}};
        for (int k = 0; k < 3; k++) {
            if (!gs[k].t) continue;
            snprintf(what, sizeof what, "%s %s", c->name, gs[k].nm);
            if (gs[k].on) {
                CHECK_MSG(gs[k].t->grad != NULL, "%s: gradient missing", what);
                if (gs[k].t->grad) mt_test_allclose(gs[k].t->grad, gs[k].ref, 1e-4, 1e-4, what);
            } else {
                CHECK_MSG(gs[k].t->grad == NULL, "%s: unexpected gradient", what);
            }
        }
    }
    mt_tensor_release(y);

    if (c->gradcheck && requires == 7) {
        mt_tensor *ins[3] = {x, w, b};
        mt_test_gradcheck(c->name, gc_fn, (void *)c, b ? 3 : 2, ins, 1e-2, 1e-3, 1e-2);
    }
    free(xd);
    free(wd);
    free(bd);
    free(rd);
    free(yref);
    free(dx);
    free(dw);
    free(db);
    mt_tensor_release(r);
    mt_tensor_release(x);
    mt_tensor_release(w);
    if (b) mt_tensor_release(b);
}

#define V3(a, b, c) {a, b, c}

static const conv_case g_cases[] = {
    /* name, transposed, n, cin, cout, in, k, stride, pad, dil, outpad, groups, bias, gradcheck */
    {"conv k(3,2,3) p1 bias", 0, 2, 3, 5, V3(5, 6, 7), V3(3, 2, 3), V3(1, 1, 1), V3(1, 1, 1),
     V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv stride 2 pad (1,0,2)", 0, 2, 3, 4, V3(7, 5, 9), V3(3, 3, 3), V3(2, 2, 2), V3(1, 0, 2),
     V3(1, 1, 1), V3(0, 0, 0), 1, 0, 0},
    {"conv stride (2,1,3)", 0, 1, 2, 3, V3(9, 6, 10), V3(2, 3, 3), V3(2, 1, 3), V3(0, 1, 1),
     V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv dilation 2", 0, 2, 3, 3, V3(7, 8, 6), V3(3, 3, 2), V3(1, 1, 1), V3(2, 2, 1),
     V3(2, 2, 2), V3(0, 0, 0), 1, 1, 0},
    {"conv groups 2", 0, 2, 4, 6, V3(5, 4, 7), V3(3, 3, 3), V3(1, 1, 1), V3(1, 1, 1),
     V3(1, 1, 1), V3(0, 0, 0), 2, 1, 0},
    {"conv groups 2 stride 2 dilation 2", 0, 1, 6, 4, V3(9, 7, 8), V3(3, 2, 3), V3(2, 2, 2),
     V3(1, 1, 2), V3(2, 1, 2), V3(0, 0, 0), 2, 0, 0},
    {"conv Cin 1", 0, 2, 1, 16, V3(7, 9, 5), V3(3, 3, 3), V3(1, 1, 1), V3(1, 1, 1), V3(1, 1, 1),
     V3(0, 0, 0), 1, 1, 0},
    {"conv k2 s2 odd input (unread rows)", 0, 2, 3, 4, V3(5, 7, 9), V3(2, 2, 2), V3(2, 2, 2),
     V3(0, 0, 0), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 32->32 blocked channels", 0, 1, 32, 32, V3(6, 7, 5), V3(3, 3, 3), V3(1, 1, 1),
     V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 17->19 ragged channels s2", 0, 2, 17, 19, V3(7, 5, 6), V3(3, 3, 3), V3(2, 2, 2),
     V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 32->48 groups 2 s2 dilation 2 k2 (blocked, unread rows)", 0, 1, 32, 48, V3(8, 6, 7),
     V3(2, 2, 2), V3(2, 2, 2), V3(0, 1, 0), V3(2, 2, 1), V3(0, 0, 0), 2, 1, 0},
    /* 8 channels: blocked (padded to 16) since the default config's top level
     * measured 3-5x faster so; the filter gradient with 4 <= Cin < 16 falls
     * back to gemm under format "any" and takes channels-last (entry_create) */
    {"conv 8->8 padded blocks, channels-last filter grad", 0, 2, 8, 8, V3(6, 5, 7), V3(3, 3, 3),
     V3(1, 1, 1), V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 8->12 k3 s2 p1 (channels-last filter grad, unread rows)", 0, 2, 8, 12, V3(6, 7, 5),
     V3(3, 3, 3), V3(2, 2, 2), V3(0, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 16->8 (decoder top level)", 0, 1, 16, 8, V3(5, 6, 4), V3(3, 3, 3), V3(1, 1, 1),
     V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 16->16 groups 2 (8 per group)", 0, 1, 16, 16, V3(5, 4, 6), V3(3, 3, 3), V3(1, 1, 1),
     V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 2, 1, 0},
    {"conv 6->6 (below 8: plain)", 0, 1, 6, 6, V3(4, 5, 3), V3(3, 3, 3), V3(1, 1, 1),
     V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv head 32->3 1x1x1", 0, 2, 32, 3, V3(5, 6, 7), V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0),
     V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"conv 1x1x1", 0, 2, 5, 3, V3(3, 4, 5), V3(1, 1, 1), V3(1, 1, 1), V3(0, 0, 0), V3(1, 1, 1),
     V3(0, 0, 0), 1, 1, 0},
    {"convT k2 s2 bias", 1, 2, 4, 3, V3(3, 4, 5), V3(2, 2, 2), V3(2, 2, 2), V3(0, 0, 0),
     V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"convT k3 s2 p1 output_padding 1", 1, 2, 3, 5, V3(4, 3, 5), V3(3, 3, 3), V3(2, 2, 2),
     V3(1, 1, 1), V3(1, 1, 1), V3(1, 1, 1), 1, 1, 0},
    {"convT groups 2 s2 outpad (1,0,1) k(3,2,3)", 1, 1, 4, 6, V3(3, 4, 3), V3(3, 2, 3),
     V3(2, 2, 2), V3(1, 0, 1), V3(1, 1, 1), V3(1, 0, 1), 2, 1, 0},
    {"convT s1 dilation 2 outpad 1", 1, 2, 3, 2, V3(4, 5, 3), V3(3, 2, 2), V3(1, 1, 1),
     V3(1, 0, 1), V3(2, 2, 2), V3(1, 1, 1), 1, 1, 0},
    {"convT 32->16 k2 s2 blocked", 1, 2, 32, 16, V3(3, 4, 3), V3(2, 2, 2), V3(2, 2, 2),
     V3(0, 0, 0), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"convT 16->8 k2 s2 (decoder top level)", 1, 2, 16, 8, V3(3, 2, 4), V3(2, 2, 2),
     V3(2, 2, 2), V3(0, 0, 0), V3(1, 1, 1), V3(0, 0, 0), 1, 1, 0},
    {"convT 16->16 s1 dilation 2 outpad 1 (blocked, cropped)", 1, 1, 16, 16, V3(4, 5, 3),
     V3(3, 2, 2), V3(1, 1, 1), V3(1, 0, 1), V3(2, 2, 2), V3(1, 1, 1), 1, 1, 0},
    {"convT Cin 1 s(1,2,3)", 1, 1, 1, 3, V3(4, 3, 2), V3(2, 3, 3), V3(1, 2, 3), V3(0, 1, 1),
     V3(1, 1, 1), V3(0, 1, 2), 1, 0, 0},
    /* small shapes, also checked by finite differences */
    {"gc conv groups 2 s2 p1", 0, 1, 4, 2, V3(5, 4, 3), V3(3, 2, 3), V3(2, 1, 2), V3(1, 1, 1),
     V3(1, 1, 1), V3(0, 0, 0), 2, 1, 1},
    {"gc conv dilation 2", 0, 2, 2, 3, V3(5, 3, 4), V3(2, 2, 2), V3(1, 1, 1), V3(1, 0, 1),
     V3(2, 1, 2), V3(0, 0, 0), 1, 1, 1},
    {"gc convT s2 outpad 1", 1, 1, 3, 2, V3(3, 2, 3), V3(3, 2, 3), V3(2, 2, 2), V3(1, 0, 1),
     V3(1, 1, 1), V3(1, 1, 0), 1, 1, 1},
    {"gc convT groups 2", 1, 2, 2, 4, V3(2, 3, 2), V3(2, 2, 2), V3(2, 1, 2), V3(0, 0, 0),
     V3(1, 1, 1), V3(0, 0, 1), 2, 1, 1},
};

static const conv_case *find_case(const char *name) {
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++)
        if (!strcmp(g_cases[i].name, name)) return &g_cases[i];
    MT_CHECK_MSG(0, "no test case '%s'", name);
    return NULL;
}

/* The cache returns the same primitive for a repeated problem; results are
 * bitwise identical, also with other shapes run in between. */
static void test_steady_state(void) {
    mt_conv_params p = mt_conv_params_make(1, 1, 1, 1);
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 16, 6, 5, 7), -1, 1);
    mt_tensor *w = mt_test_rand(MT_SHAPE(16, 16, 3, 3, 3), -0.5f, 0.5f);
    mt_tensor *x2 = mt_test_rand(MT_SHAPE(1, 16, 9, 5, 4), -1, 1);
    mt_tensor *y1 = mt_conv3d(x, w, NULL, &p);
    mt_tensor *other = mt_conv3d(x2, w, NULL, &p);
    mt_tensor *y2 = mt_conv3d(x, w, NULL, &p);
    CHECK_MSG(memcmp(MT_F32P(y1), MT_F32P(y2), mt_tensor_nbytes(y1)) == 0,
              "repeated conv gives identical results");
    CHECK(mt_tensor_numel(other) == 16 * 9 * 5 * 4);
    mt_tensor_release(x);
    mt_tensor_release(w);
    mt_tensor_release(x2);
    mt_tensor_release(y1);
    mt_tensor_release(y2);
    mt_tensor_release(other);
}

/* Kernel contract: outputs are written (=), whatever they held. */
static void test_kernels_overwrite(void) {
    mt_conv_params p = mt_conv_params_make(2, 1, 1, 1);
    mt_tensor *x = mt_test_rand(MT_SHAPE(1, 3, 5, 6, 5), -1, 1);
    mt_tensor *w = mt_test_rand(MT_SHAPE(4, 3, 3, 3, 3), -1, 1);
    mt_tensor *dy = mt_test_rand(MT_SHAPE(1, 4, 3, 3, 3), -1, 1);
    mt_tensor *dx1 = mt_tensor_full(MT_F32, MT_SHAPE(1, 3, 5, 6, 5), 7.0, MT_DEVICE_CPU);
    mt_tensor *dx2 = mt_tensor_full(MT_F32, MT_SHAPE(1, 3, 5, 6, 5), -3.0, MT_DEVICE_CPU);
    mt_tensor *dw1 = mt_tensor_full(MT_F32, MT_SHAPE(4, 3, 3, 3, 3), 5.0, MT_DEVICE_CPU);
    mt_tensor *dw2 = mt_tensor_zeros(MT_F32, MT_SHAPE(4, 3, 3, 3, 3), MT_DEVICE_CPU);
    mt_tensor *db1 = mt_tensor_full(MT_F32, MT_SHAPE(4), 9.0, MT_DEVICE_CPU);
    mt_tensor *db2 = mt_tensor_zeros(MT_F32, MT_SHAPE(4), MT_DEVICE_CPU);
    mt_cpu_conv3d_backward_data(dx1, dy, w, &p);
    mt_cpu_conv3d_backward_data(dx2, dy, w, &p);
    mt_cpu_conv3d_backward_filter(dw1, db1, x, dy, &p);
    mt_cpu_conv3d_backward_filter(dw2, db2, x, dy, &p);
    CHECK_MSG(memcmp(MT_F32P(dx1), MT_F32P(dx2), mt_tensor_nbytes(dx1)) == 0, "dx written (=)");
    CHECK_MSG(memcmp(MT_F32P(dw1), MT_F32P(dw2), mt_tensor_nbytes(dw1)) == 0, "dw written (=)");
    CHECK_MSG(memcmp(MT_F32P(db1), MT_F32P(db2), mt_tensor_nbytes(db1)) == 0, "db written (=)");
    mt_tensor *rel[] = {x, w, dy, dx1, dx2, dw1, dw2, db1, db2};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

int main(void) {
    mt_test_seed(2024);
    mt_conv_params p = mt_conv_params_make(2, 1, 3, 4);
    CHECK(p.stride[2] == 2 && p.padding[1] == 1 && p.dilation[0] == 3 && p.groups == 4 &&
          p.output_padding[0] == 0);
    size_t nc = sizeof g_cases / sizeof *g_cases;
    for (size_t i = 0; i < nc; i++) run_case(&g_cases[i], 7);
    /* partial requires_grad: only x; only bias (bias gradient without dw) */
    run_case(find_case("conv k(3,2,3) p1 bias"), 1);
    run_case(find_case("conv k(3,2,3) p1 bias"), 4);
    run_case(find_case("convT k3 s2 p1 output_padding 1"), 4);
    run_case(find_case("convT k3 s2 p1 output_padding 1"), 2);
    run_case(find_case("conv dilation 2"), 0);
    test_steady_state();
    test_kernels_overwrite();
    return mt_test_finish();
}
