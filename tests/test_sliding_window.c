/* LABELS: unit */
/* eval/sliding_window + eval/postprocess: window starts (nnU-Net's rule,
 * hand values), the Gaussian importance map, sliding-window output equal to
 * direct inference for a pointwise predictor on a volume not divisible by the
 * patch (with and without mirroring, logits / softmax / sigmoid, padding of a
 * volume smaller than the patch), Gaussian-weighted accumulation against a
 * naive double reference, a small UNet3D with volume = patch (plain and
 * mirrored, eval mode, grad mode restored), errors, argmax / threshold and
 * largest-connected-component filtering on crafted volumes. */
#include <stdlib.h>
#include <string.h>

#include "eval/postprocess.h"
#include "eval/sliding_window.h"
#include "layers/models/unet3d.h"
#include "mt_test.h"

/* ------------------------------------------------------------- steps */

static int steps_are(int64_t size, int64_t patch, double overlap, int n, const int64_t *expect) {
    int64_t got = mt_eval_sw_num_steps(size, patch, overlap);
    if (got != n) return 0;
    int64_t s[64];
    mt_eval_sw_steps(s, size, patch, overlap);
    for (int i = 0; i < n; i++)
        if (s[i] != expect[i]) return 0;
    return 1;
}

static void test_steps(void) {
    /* n = ceil((S - P) / (P (1 - o))) + 1, starts round(i (S - P) / (n - 1)) */
    CHECK(steps_are(23, 16, 0.5, 2, (int64_t[]){0, 7}));
    CHECK(steps_are(31, 16, 0.5, 3, (int64_t[]){0, 8, 15}));  /* 7.5 -> 8 (half to even) */
    CHECK(steps_are(19, 16, 0.5, 2, (int64_t[]){0, 3}));
    CHECK(steps_are(100, 40, 0.5, 4, (int64_t[]){0, 20, 40, 60}));
    CHECK(steps_are(21, 16, 0.75, 3, (int64_t[]){0, 2, 5}));  /* 2.5 -> 2 (half to even) */
    CHECK(steps_are(40, 16, 0.0, 3, (int64_t[]){0, 12, 24}));
    CHECK(steps_are(16, 16, 0.5, 1, (int64_t[]){0}));
    CHECK(steps_are(10, 16, 0.5, 1, (int64_t[]){0}));
    CHECK(steps_are(17, 16, 0.5, 2, (int64_t[]){0, 1}));
}

/* ------------------------------------------------------ importance map */

static void test_gaussian(void) {
    int64_t P[3] = {16, 9, 5};
    mt_tensor *g = mt_eval_gaussian_map(P, 1.0 / 8.0);
    CHECK(g->ndim == 3 && g->shape[0] == 16 && g->shape[1] == 9 && g->shape[2] == 5);
    double *ref = malloc(16 * 9 * 5 * sizeof *ref);
    const float *w = MT_F32P(g);
    int pos = 1;
    float mx = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 9; j++)
            for (int k = 0; k < 5; k++) {
                double si = 2.0, sj = 9.0 / 8.0, sk = 5.0 / 8.0;
                double e = (i - 8) * (i - 8) / (2 * si * si) + (j - 4) * (j - 4) / (2 * sj * sj) +
                           (k - 2) * (k - 2) / (2 * sk * sk);
                ref[(i * 9 + j) * 5 + k] = exp(-e);
                pos &= w[(i * 9 + j) * 5 + k] > 0;
                if (w[(i * 9 + j) * 5 + k] > mx) mx = w[(i * 9 + j) * 5 + k];
            }
    mt_test_allclose(g, ref, 1e-30, 1e-6, "gaussian map sigma = patch / 8");
    CHECK(pos);
    CHECK_NEAR(mx, 1.0, 0);
    CHECK_NEAR(w[(8 * 9 + 4) * 5 + 2], 1.0, 0);
    /* symmetric about the centre where both sides exist */
    CHECK_NEAR(w[(5 * 9 + 4) * 5 + 2], w[(11 * 9 + 4) * 5 + 2], 0);
    mt_tensor_release(g);
    free(ref);

    /* sigma_scale 1/16 on 16: sigma 1, scipy truncation radius int(4.5) = 4;
     * voxels beyond it are raised to the smallest non-zero value exp(-24)
     * (corner of the kept cube, |d| = 4 along each axis) */
    int64_t Q[3] = {16, 16, 16};
    g = mt_eval_gaussian_map(Q, 1.0 / 16.0);
    w = MT_F32P(g);
    float mn = (float)exp(-24.0);
    CHECK_NEAR(w[0], mn, 1e-6 * mn);
    CHECK_NEAR(w[(3 * 16 + 8) * 16 + 8], mn, 1e-6 * mn);          /* |d| = 5 on one axis */
    CHECK_NEAR(w[(4 * 16 + 8) * 16 + 8], exp(-8.0), 1e-6 * exp(-8.0)); /* |d| = 4: kept */
    CHECK_NEAR(w[(4 * 16 + 4) * 16 + 4], mn, 1e-6 * mn);
    float gmin = INFINITY;
    for (int64_t i = 0; i < 4096; i++)
        if (w[i] < gmin) gmin = w[i];
    CHECK_NEAR(gmin, mn, 1e-6 * mn);
    mt_tensor_release(g);
}

/* ------------------------------------------------- pointwise predictor */

typedef struct {
    int C, K;
    float W[4][3], b[4];
    int calls;
    int64_t max_batch;
    int64_t patch[3];
    int wrong_patch; /* saw an input whose spatial size is not the patch */
} pw_ctx;

/* y_k = 3 tanh(sum_c W[k][c] x_c + b_k), voxel by voxel. */
static mt_tensor *pw_predict(void *vctx, const mt_tensor *x) {
    pw_ctx *c = vctx;
    c->calls++;
    if (x->shape[0] > c->max_batch) c->max_batch = x->shape[0];
    int64_t B = x->shape[0], V = x->shape[2] * x->shape[3] * x->shape[4];
    int64_t ys[5] = {B, c->K, x->shape[2], x->shape[3], x->shape[4]};
    mt_tensor *xc = mt_tensor_contiguous(x);
    const float *xp = MT_F32P(xc);
    mt_tensor *y = mt_tensor_new(MT_F32, 5, ys, MT_DEVICE_CPU);
    float *yp = MT_F32P(y);
    for (int64_t b = 0; b < B; b++)
        for (int k = 0; k < c->K; k++)
            for (int64_t v = 0; v < V; v++) {
                double s = c->b[k];
                for (int ch = 0; ch < c->C; ch++) s += c->W[k][ch] * xp[(b * c->C + ch) * V + v];
                yp[(b * c->K + k) * V + v] = (float)(3.0 * tanh(s));
            }
    mt_tensor_release(xc);
    return y;
}

static void pw_init(pw_ctx *c, int C, int K) {
    memset(c, 0, sizeof *c);
    c->C = C;
    c->K = K;
    mt_rng rng;
    mt_rng_init(&rng, 5);
    for (int k = 0; k < K; k++) {
        c->b[k] = (float)(mt_rng_uniform(&rng) - 0.5);
        for (int ch = 0; ch < C; ch++) c->W[k][ch] = (float)(2 * mt_rng_uniform(&rng) - 1);
    }
}

/* direct whole-volume inference (K, D, H, W) as doubles, activation applied */
static double *direct(pw_ctx *c, const mt_tensor *img, mt_eval_sw_accumulate mode) {
    mt_tensor *x = mt_tensor_unsqueeze(img, 0);
    mt_tensor *y = pw_predict(c, x);
    double *d = mt_test_to_f64(y);
    int64_t V = img->shape[1] * img->shape[2] * img->shape[3];
    for (int64_t v = 0; v < V; v++) {
        if (mode == MT_EVAL_SW_SIGMOID)
            for (int k = 0; k < c->K; k++) d[k * V + v] = 1.0 / (1.0 + exp(-d[k * V + v]));
        if (mode == MT_EVAL_SW_SOFTMAX) {
            double s = 0;
            for (int k = 0; k < c->K; k++) s += exp(d[k * V + v]);
            for (int k = 0; k < c->K; k++) d[k * V + v] = exp(d[k * V + v]) / s;
        }
    }
    mt_tensor_release(x);
    mt_tensor_release(y);
    return d;
}

static void test_pointwise_equals_direct(void) {
    mt_test_seed(21);
    pw_ctx c;
    pw_init(&c, 2, 3);
    mt_tensor *img = mt_test_rand(MT_SHAPE(2, 23, 31, 19), -1.5f, 1.5f);
    static const unsigned mirrors[] = {0, 7, 5, 2};
    static const mt_eval_sw_accumulate modes[] = {MT_EVAL_SW_LOGITS, MT_EVAL_SW_LOGITS,
                                                  MT_EVAL_SW_SOFTMAX, MT_EVAL_SW_SIGMOID};
    for (int t = 0; t < 4; t++) {
        mt_eval_sw_opts o;
        mt_eval_sw_opts_default(&o, (int64_t[]){16, 16, 16});
        o.batch = 5;
        o.mirror_axes = mirrors[t];
        o.accumulate = modes[t];
        c.calls = 0;
        c.max_batch = 0;
        mt_tensor *out = NULL;
        CHECK(mt_eval_sliding_window(&out, img, pw_predict, &c, &o) == MT_OK);
        CHECK(out && out->ndim == 4 && out->shape[0] == 3 && out->shape[1] == 23 &&
              out->shape[2] == 31 && out->shape[3] == 19);
        /* 2 x 3 x 2 = 12 windows in batches of 5 -> 3 calls per mirror variant */
        int nm = 1 << __builtin_popcount(mirrors[t]);
        CHECK_MSG(c.calls == 3 * nm, "calls %d, expected %d", c.calls, 3 * nm);
        CHECK(c.max_batch == 5);
        double *ref = direct(&c, img, modes[t]);
        char what[64];
        snprintf(what, sizeof what, "sliding window = direct (mirror %u, mode %d)", mirrors[t],
                 (int)modes[t]);
        if (out) mt_test_allclose(out, ref, 2e-6, 2e-6, what);
        free(ref);
        mt_tensor_release(out);
    }
    mt_tensor_release(img);

    /* volume smaller than the patch on two axes: padded, predicted, cropped */
    mt_tensor *small = mt_test_rand(MT_SHAPE(2, 10, 31, 7), -1.5f, 1.5f);
    mt_eval_sw_opts o;
    mt_eval_sw_opts_default(&o, (int64_t[]){16, 12, 16});
    o.mirror_axes = 3;
    o.pad_value = 7.0f; /* pad values must not leak into the cropped output */
    mt_tensor *out = NULL;
    CHECK(mt_eval_sliding_window(&out, small, pw_predict, &c, &o) == MT_OK);
    CHECK(out && out->shape[1] == 10 && out->shape[2] == 31 && out->shape[3] == 7);
    double *ref = direct(&c, small, MT_EVAL_SW_LOGITS);
    if (out) mt_test_allclose(out, ref, 2e-6, 2e-6, "padded volume = direct");
    free(ref);
    mt_tensor_release(out);
    mt_tensor_release(small);
}

/* ------------------------------ weighting against a naive reference */

/* Each window's output is constant: (k + 1) * mean of channel 0 over the
 * window, so the result depends on where the windows are and on the weights. */
static mt_tensor *window_mean_predict(void *ctx, const mt_tensor *x) {
    (void)ctx;
    int64_t B = x->shape[0], C = x->shape[1], V = x->shape[2] * x->shape[3] * x->shape[4];
    int64_t ys[5] = {B, 2, x->shape[2], x->shape[3], x->shape[4]};
    mt_tensor *y = mt_tensor_new(MT_F32, 5, ys, MT_DEVICE_CPU);
    const float *xp = MT_F32P(x);
    float *yp = MT_F32P(y);
    for (int64_t b = 0; b < B; b++) {
        double m = 0;
        for (int64_t v = 0; v < V; v++) m += xp[b * C * V + v];
        m /= (double)V;
        for (int k = 0; k < 2; k++)
            for (int64_t v = 0; v < V; v++) yp[(b * 2 + k) * V + v] = (float)((k + 1) * m);
    }
    return y;
}

static void test_weighting_reference(void) {
    mt_test_seed(8);
    const int64_t D = 29, H = 22, W = 17, P[3] = {16, 12, 10};
    mt_tensor *img = mt_test_rand(MT_SHAPE(1, D, H, W), 0.0f, 2.0f);
    const float *x = MT_F32P(img);
    for (int gauss = 0; gauss <= 1; gauss++) {
        mt_eval_sw_opts o;
        mt_eval_sw_opts_default(&o, P);
        o.overlap = 0.4;
        o.batch = 4;
        o.gaussian = gauss;
        mt_tensor *out = NULL;
        CHECK(mt_eval_sliding_window(&out, img, window_mean_predict, NULL, &o) == MT_OK);
        /* naive: windows by the documented rule, weights by the formula */
        int64_t n[3], st[3][16];
        const int64_t S[3] = {D, H, W};
        for (int a = 0; a < 3; a++) {
            double t = P[a] * 0.6;
            n[a] = (int64_t)ceil((S[a] - P[a]) / t) + 1;
            for (int64_t i = 0; i < n[a]; i++)
                st[a][i] = (int64_t)llrint((double)(S[a] - P[a]) / (double)(n[a] - 1) * (double)i);
        }
        double *num = calloc((size_t)(D * H * W), sizeof *num), *den = calloc((size_t)(D * H * W), sizeof *den);
        for (int64_t a = 0; a < n[0]; a++)
            for (int64_t b = 0; b < n[1]; b++)
                for (int64_t c = 0; c < n[2]; c++) {
                    int64_t z0 = st[0][a], y0 = st[1][b], x0 = st[2][c];
                    double m = 0;
                    for (int64_t i = 0; i < P[0]; i++)
                        for (int64_t j = 0; j < P[1]; j++)
                            for (int64_t k = 0; k < P[2]; k++) m += x[((z0 + i) * H + y0 + j) * W + x0 + k];
                    m /= (double)(P[0] * P[1] * P[2]);
                    for (int64_t i = 0; i < P[0]; i++)
                        for (int64_t j = 0; j < P[1]; j++)
                            for (int64_t k = 0; k < P[2]; k++) {
                                double w = 1.0;
                                if (gauss) {
                                    int64_t d[3] = {i - P[0] / 2, j - P[1] / 2, k - P[2] / 2};
                                    for (int q = 0; q < 3; q++) {
                                        double s = P[q] / 8.0;
                                        w *= exp(-(double)(d[q] * d[q]) / (2 * s * s));
                                    }
                                }
                                int64_t v = ((z0 + i) * H + y0 + j) * W + x0 + k;
                                num[v] += w * m;
                                den[v] += w;
                            }
                }
        double *ref = malloc((size_t)(2 * D * H * W) * sizeof *ref);
        for (int64_t v = 0; v < D * H * W; v++) {
            ref[v] = num[v] / den[v];
            ref[D * H * W + v] = 2 * num[v] / den[v];
        }
        if (out) mt_test_allclose(out, ref, 1e-6, 1e-5, gauss ? "gaussian weighting" : "uniform weighting");
        free(num);
        free(den);
        free(ref);
        mt_tensor_release(out);
    }
    mt_tensor_release(img);
}

/* ---------------------------------------------------------- errors */

static int g_fail_calls;
static mt_tensor *bad_shape_predict(void *ctx, const mt_tensor *x) {
    (void)ctx;
    int64_t ys[5] = {x->shape[0], 2, x->shape[2], x->shape[3], x->shape[4] - 1};
    return mt_tensor_zeros(MT_F32, 5, ys, MT_DEVICE_CPU);
}
static mt_tensor *failing_predict(void *ctx, const mt_tensor *x) {
    (void)ctx;
    (void)x;
    g_fail_calls++;
    mt_error_set(MT_ERR_IO, "weights went missing");
    return NULL;
}

static void test_errors(void) {
    mt_tensor *img = mt_test_rand(MT_SHAPE(1, 9, 9, 9), 0.0f, 1.0f);
    mt_eval_sw_opts o;
    mt_eval_sw_opts_default(&o, (int64_t[]){8, 8, 8});
    mt_tensor *out = (mt_tensor *)1;
    CHECK(mt_eval_sliding_window(&out, img, bad_shape_predict, NULL, &o) == MT_ERR_INVALID);
    CHECK(out == NULL);
    CHECK(strstr(mt_error_msg(), "predictor returned (1, 2, 8, 8, 7)") != NULL);
    CHECK(mt_eval_sliding_window(&out, img, failing_predict, NULL, &o) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "predictor failed: weights went missing") != NULL);
    CHECK(g_fail_calls == 1);
    o.overlap = 1.0;
    CHECK(mt_eval_sliding_window(&out, img, pw_predict, NULL, &o) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "overlap") != NULL);
    o.overlap = 0.5;
    o.batch = 0;
    CHECK(mt_eval_sliding_window(&out, img, pw_predict, NULL, &o) == MT_ERR_INVALID);
    o.batch = 1;
    o.mirror_axes = 8;
    CHECK(mt_eval_sliding_window(&out, img, pw_predict, NULL, &o) == MT_ERR_INVALID);
    o.mirror_axes = 0;
    o.patch[1] = 0;
    CHECK(mt_eval_sliding_window(&out, img, pw_predict, NULL, &o) == MT_ERR_INVALID);
    o.patch[1] = 8;
    mt_tensor *img3 = mt_test_rand(MT_SHAPE(9, 9, 9), 0.0f, 1.0f);
    CHECK(mt_eval_sliding_window(&out, img3, pw_predict, NULL, &o) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "(9, 9, 9)") != NULL);
    mt_tensor_release(img3);
    mt_tensor_release(img);
}

/* ------------------------------------------------------------ UNet3D */

/* Copy of x (N, C, D, H, W) flipped along spatial axes in mask (bit 0 = D). */
static mt_tensor *naive_flip(const mt_tensor *x, unsigned mask) {
    mt_tensor *y = mt_tensor_new_like(x);
    const int64_t *s = x->shape;
    const float *xp = MT_F32P(x);
    float *yp = MT_F32P(y);
    for (int64_t nc = 0; nc < s[0] * s[1]; nc++)
        for (int64_t z = 0; z < s[2]; z++)
            for (int64_t a = 0; a < s[3]; a++)
                for (int64_t b = 0; b < s[4]; b++) {
                    int64_t fz = mask & 1 ? s[2] - 1 - z : z, fa = mask & 2 ? s[3] - 1 - a : a,
                            fb = mask & 4 ? s[4] - 1 - b : b;
                    yp[((nc * s[2] + z) * s[3] + a) * s[4] + b] =
                        xp[((nc * s[2] + fz) * s[3] + fa) * s[4] + fb];
                }
    return y;
}

static void test_unet(void) {
    mt_unet3d_config cfg;
    mt_unet3d_config_default(&cfg);
    cfg.in_channels = 1;
    cfg.out_channels = 3;
    cfg.n_levels = 2;
    cfg.features[0] = 4;
    cfg.features[1] = 8;
    cfg.norm = MT_NORM_BATCH; /* eval mode uses running stats: mode matters */
    mt_module *model = NULL;
    CHECK(mt_unet3d_new(&model, &cfg, 3) == MT_OK);
    if (!model) return;
    mt_test_seed(4);
    const int64_t P[3] = {8, 12, 6};
    mt_tensor *img = mt_test_randn(MT_SHAPE(1, 8, 12, 6));
    mt_tensor *x = mt_tensor_unsqueeze(img, 0);

    /* direct references, eval mode, no grad */
    mt_module_train(model, 0);
    int prev = mt_grad_set_enabled(0);
    mt_tensor *yd[8] = {0};
    for (unsigned m = 0; m < 8; m++) {
        mt_tensor *xf = naive_flip(x, m);
        mt_tensor *y = mt_unet3d_forward(model, xf);
        yd[m] = naive_flip(y, m);
        mt_tensor_release(y);
        mt_tensor_release(xf);
    }
    mt_grad_set_enabled(prev);
    mt_module_train(model, 1);
    mt_tensor *out0 = NULL; /* sliding-window result without mirroring */

    CHECK(mt_grad_enabled());
    mt_eval_sw_opts o;
    mt_eval_sw_opts_default(&o, P);
    int64_t V = 3 * 8 * 12 * 6;
    static const unsigned mirror_sets[] = {0, 1, 4, 6, 7};
    for (int t = 0; t < 5; t++) {
        o.mirror_axes = mirror_sets[t];
        mt_tensor *out = NULL;
        CHECK(mt_eval_sliding_window_model(&out, img, model, &o) == MT_OK);
        CHECK(model->training == 1 && mt_grad_enabled());
        double *ref = calloc((size_t)V, sizeof *ref);
        int nm = 0;
        for (unsigned m = 0; m < 8; m++)
            if ((m & ~mirror_sets[t]) == 0) {
                const float *yp = MT_F32P(yd[m]);
                for (int64_t i = 0; i < V; i++) ref[i] += yp[i];
                nm++;
            }
        for (int64_t i = 0; i < V; i++) ref[i] /= nm;
        char what[64];
        snprintf(what, sizeof what, "UNet3D volume = patch, mirror %u", mirror_sets[t]);
        if (out) {
            CHECK(out->requires_grad == 0 && out->grad_fn == NULL);
            mt_test_allclose(out, ref, 1e-6, 1e-5, what);
            /* mirroring changes the result (the net is not flip-equivariant) */
            if (mirror_sets[t]) {
                double diff = 0;
                const float *op = MT_F32P(out), *y0 = MT_F32P(yd[0]);
                for (int64_t i = 0; i < V; i++) diff = fmax(diff, fabs(op[i] - y0[i]));
                CHECK_MSG(diff > 1e-4, "mirror %u: max difference to unmirrored %g", mirror_sets[t], diff);
            } else {
                out0 = mt_tensor_retain(out);
            }
        }
        free(ref);
        mt_tensor_release(out);
    }
    /* the sliding window ran in eval mode: a training-mode forward (batch
     * statistics; it updates the running statistics, so it comes last) differs */
    mt_tensor *ytrain = mt_unet3d_forward(model, x);
    if (out0) {
        double diff = 0;
        const float *op = MT_F32P(out0), *yt = MT_F32P(ytrain);
        for (int64_t i = 0; i < V; i++) diff = fmax(diff, fabs(op[i] - yt[i]));
        CHECK_MSG(diff > 1e-3, "eval vs training-mode output differ by only %g", diff);
    }
    mt_tensor_release(ytrain);
    mt_tensor_release(out0);
    /* patch not divisible by 2^(levels - 1) */
    mt_eval_sw_opts bad;
    mt_eval_sw_opts_default(&bad, (int64_t[]){7, 12, 6});
    mt_tensor *out = NULL;
    CHECK(mt_eval_sliding_window_model(&out, img, model, &bad) == MT_ERR_CONFIG);
    CHECK(out == NULL && model->training == 1);

    /* a larger volume runs with batches and yields finite logits */
    mt_tensor *big = mt_test_randn(MT_SHAPE(1, 13, 17, 6));
    o.mirror_axes = 1;
    o.batch = 3;
    CHECK(mt_eval_sliding_window_model(&out, big, model, &o) == MT_OK);
    if (out) {
        CHECK(out->shape[0] == 3 && out->shape[1] == 13 && out->shape[2] == 17 && out->shape[3] == 6);
        int finite = 1;
        const float *op = MT_F32P(out);
        for (int64_t i = 0; i < mt_tensor_numel(out); i++) finite &= isfinite(op[i]);
        CHECK(finite);
    }
    mt_tensor_release(out);
    mt_tensor_release(big);
    for (int m = 0; m < 8; m++) mt_tensor_release(yd[m]);
    mt_tensor_release(x);
    mt_tensor_release(img);
    mt_module_free(model);
}

/* ------------------------------------------------- argmax / threshold */

static void test_argmax_threshold(void) {
    /* scores (3, 1, 1, 4) */
    static const float s[] = {0.1f, 2.0f, -1.0f, 0.0f, /* class 0 */
                              0.5f, 2.0f, -3.0f, 0.0f, /* class 1 */
                              0.2f, 1.0f, -2.0f, 0.0f};
    mt_tensor *t = mt_tensor_from_data(MT_F32, MT_SHAPE(3, 1, 1, 4), s);
    mt_tensor *lab = NULL;
    CHECK(mt_eval_argmax(&lab, t) == MT_OK);
    if (lab) {
        const uint8_t *l = (const uint8_t *)mt_tensor_data(lab);
        CHECK(lab->dtype == MT_U8 && lab->ndim == 3 && lab->shape[2] == 4);
        CHECK(l[0] == 1 && l[1] == 0 && l[2] == 0 && l[3] == 0); /* ties -> lowest index */
    }
    mt_tensor_release(lab);
    mt_tensor *mk = NULL;
    static const float lg[] = {0.0f, -1e-3f, 2.0f, -5.0f};
    mt_tensor *lt = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 2, 2), lg);
    CHECK(mt_eval_threshold(&mk, lt, 0.5, 1) == MT_OK);
    if (mk) {
        const uint8_t *m = (const uint8_t *)mt_tensor_data(mk);
        CHECK(m[0] == 1 && m[1] == 0 && m[2] == 1 && m[3] == 0);
    }
    mt_tensor_release(mk);
    CHECK(mt_eval_threshold(&mk, lt, 0.85, 1) == MT_OK); /* sigmoid(2) = 0.8808 */
    if (mk) {
        const uint8_t *m = (const uint8_t *)mt_tensor_data(mk);
        CHECK(m[0] == 0 && m[1] == 0 && m[2] == 1 && m[3] == 0);
    }
    mt_tensor_release(mk);
    static const float pr[] = {0.5f, 0.49f, 0.9f, 0.1f};
    mt_tensor *pt = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 2, 2), pr);
    CHECK(mt_eval_threshold(&mk, pt, 0.5, 0) == MT_OK);
    if (mk) {
        const uint8_t *m = (const uint8_t *)mt_tensor_data(mk);
        CHECK(m[0] == 1 && m[1] == 0 && m[2] == 1 && m[3] == 0);
    }
    mt_tensor_release(mk);
    CHECK(mt_eval_threshold(&mk, pt, 1.0, 0) == MT_ERR_INVALID);
    mt_tensor *three = mt_tensor_zeros(MT_F32, MT_SHAPE(2, 2, 2), MT_DEVICE_CPU);
    CHECK(mt_eval_argmax(&lab, three) == MT_ERR_INVALID);
    mt_tensor_release(three);
    mt_tensor_release(pt);
    mt_tensor_release(lt);
    mt_tensor_release(t);
}

/* ------------------------------------------------------------- LCC */

enum { LD = 5, LH = 6, LW = 7 };
#define LI(z, y, x) (((z) * LH + (y)) * LW + (x))

static void lcc_volume(int *v) {
    memset(v, 0, sizeof(int) * LD * LH * LW);
    for (int z = 0; z < 3; z++) /* class 1: 3x3x3 block */
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++) v[LI(z, y, x)] = 1;
    v[LI(3, 3, 3)] = 1; /* touches the block's corner (2,2,2): 26- but not 6-connected */
    v[LI(4, 5, 5)] = v[LI(4, 5, 6)] = 1; /* small separate class-1 component */
    for (int y = 4; y <= 5; y++) /* class 2: two components of 4 voxels (tie) */
        for (int x = 5; x <= 6; x++) v[LI(0, y, x)] = 2;
    for (int z = 3; z <= 4; z++)
        for (int y = 0; y <= 1; y++) v[LI(z, y, 6)] = 2;
    v[LI(4, 0, 0)] = v[LI(4, 2, 0)] = 3; /* class 3: two single voxels */
}

static void check_lcc(mt_dtype dt, int connectivity, const int *classes, int n_classes) {
    int v[LD * LH * LW], e[LD * LH * LW];
    lcc_volume(v);
    memcpy(e, v, sizeof v);
    e[LI(4, 5, 5)] = e[LI(4, 5, 6)] = 0;
    if (connectivity == 6) e[LI(3, 3, 3)] = 0;
    for (int z = 3; z <= 4; z++) /* the later class-2 component loses the tie */
        for (int y = 0; y <= 1; y++) e[LI(z, y, 6)] = 0;
    if (!classes) e[LI(4, 2, 0)] = 0; /* class 3 selected too: first voxel wins */
    mt_tensor *t = mt_tensor_new(dt, MT_SHAPE(LD, LH, LW), MT_DEVICE_CPU);
    for (int i = 0; i < LD * LH * LW; i++) mt_tensor_set_flat(t, i, v[i]);
    CHECK(mt_eval_keep_largest_component(t, classes, n_classes, connectivity) == MT_OK);
    int ok = 1, first_bad = -1;
    for (int i = 0; i < LD * LH * LW; i++)
        if ((int)mt_tensor_get_flat(t, i) != e[i]) {
            ok = 0;
            if (first_bad < 0) first_bad = i;
        }
    CHECK_MSG(ok, "LCC %s conn %d classes %s: first mismatch at %d", mt_dtype_name(dt), connectivity,
              classes ? "{1,2}" : "all", first_bad);
    mt_tensor_release(t);
}

static void test_lcc(void) {
    int cls[] = {1, 2};
    check_lcc(MT_U8, 26, cls, 2);
    check_lcc(MT_U8, 6, cls, 2);
    check_lcc(MT_I32, 26, cls, 2);
    check_lcc(MT_I32, 6, NULL, 0);
    check_lcc(MT_U8, 26, NULL, 0);
    mt_tensor *t = mt_tensor_zeros(MT_U8, MT_SHAPE(2, 2, 2), MT_DEVICE_CPU);
    CHECK(mt_eval_keep_largest_component(t, NULL, 0, 18) == MT_ERR_INVALID);
    mt_tensor *f = mt_tensor_zeros(MT_F32, MT_SHAPE(2, 2, 2), MT_DEVICE_CPU);
    CHECK(mt_eval_keep_largest_component(f, NULL, 0, 6) == MT_ERR_INVALID);
    mt_tensor_release(f);
    mt_tensor_release(t);
}

int main(void) {
    test_steps();
    test_gaussian();
    test_pointwise_equals_direct();
    test_weighting_reference();
    test_errors();
    test_unet();
    test_argmax_threshold();
    test_lcc();
    return mt_test_finish();
}
