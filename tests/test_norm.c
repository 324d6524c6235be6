/* LABELS: unit grad */
/* Normalisation ops (autograd/norm.c, core/cpu/norm.c): batch norm (train,
 * eval, running stats), group norm, instance norm, layer norm. Forward and
 * backward against naive double-precision references, and finite-difference
 * gradient checks for x, weight and bias. */
#include <stdlib.h>
#include <string.h>

#include "mt_test.h"

/* ------------------------------------------------------ naive references */

/* Generic normalisation reference: element i belongs to statistics set
 * set_of[i] and uses affine parameter param_of[i] (w, b may be NULL).
 * Two-pass mean and biased variance in double. */
typedef struct {
    int64_t n, nsets, nparams;
    int64_t *set_of, *param_of;
} norm_map;

static void map_free(norm_map *m) {
    free(m->set_of);
    free(m->param_of);
}

/* x (N, C, S): sets (n, c / Cg) for groups, or c for batch norm; params c. */
static norm_map map_nc(int64_t N, int64_t C, int64_t S, int64_t groups, int batch) {
    norm_map m = {N * C * S, batch ? C : N * groups, C, NULL, NULL};
    m.set_of = malloc(sizeof(int64_t) * (size_t)m.n);
    m.param_of = malloc(sizeof(int64_t) * (size_t)m.n);
    int64_t Cg = C / groups;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + c) * S + s;
                m.set_of[i] = batch ? c : n * groups + c / Cg;
                m.param_of[i] = c;
            }
    return m;
}

/* x (M, D): sets are rows, params are columns. */
static norm_map map_rows(int64_t M, int64_t D) {
    norm_map m = {M * D, M, D, NULL, NULL};
    m.set_of = malloc(sizeof(int64_t) * (size_t)m.n);
    m.param_of = malloc(sizeof(int64_t) * (size_t)m.n);
    for (int64_t i = 0; i < m.n; i++) {
        m.set_of[i] = i / D;
        m.param_of[i] = i % D;
    }
    return m;
}

static void ref_stats(const norm_map *m, const double *x, double *mean, double *var) {
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
    free(cnt);
}

static void ref_forward(const norm_map *m, const double *x, const double *w, const double *b,
                        double eps, double *y, double *mean, double *var) {
    ref_stats(m, x, mean, var);
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        double xh = (x[i] - mean[s]) / sqrt(var[s] + eps);
        y[i] = xh * (w ? w[p] : 1.0) + (b ? b[p] : 0.0);
    }
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = w dy; dw = sum dy xhat; db = sum dy. */
static void ref_backward(const norm_map *m, const double *x, const double *dy, const double *w,
                         double eps, double *dx, double *dw, double *db) {
    double *mean = malloc(sizeof(double) * (size_t)m->nsets);
    double *var = malloc(sizeof(double) * (size_t)m->nsets);
    double *a = calloc((size_t)m->nsets, sizeof(double)), *bb = calloc((size_t)m->nsets, sizeof(double));
    double *cnt = calloc((size_t)m->nsets, sizeof(double));
    ref_stats(m, x, mean, var);
    for (int64_t p = 0; p < m->nparams; p++) dw[p] = db[p] = 0;
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        double xh = (x[i] - mean[s]) / sqrt(var[s] + eps);
        double g = dy[i] * (w ? w[p] : 1.0);
        a[s] += g;
        bb[s] += g * xh;
        cnt[s] += 1;
        dw[p] += dy[i] * xh;
        db[p] += dy[i];
    }
    for (int64_t i = 0; i < m->n; i++) {
        int64_t s = m->set_of[i], p = m->param_of[i];
        double r = 1.0 / sqrt(var[s] + eps), xh = (x[i] - mean[s]) * r;
        double g = dy[i] * (w ? w[p] : 1.0);
        dx[i] = r * (g - a[s] / cnt[s] - xh * bb[s] / cnt[s]);
    }
    free(mean);
    free(var);
    free(a);
    free(bb);
    free(cnt);
}

/* Runs backward of y with seed dy and returns nothing; grads land in leaves. */
static void run_backward(mt_tensor *y, const mt_tensor *dy) {
    mt_status st = mt_backward(y, dy, 0);
    CHECK_MSG(st == MT_OK, "backward: %s", mt_error_msg());
}

/* Compares x->grad (or its absence) with ref. */
static void check_grad(const mt_tensor *leaf, const double *ref, double atol, double rtol,
                       const char *what) {
    if (!leaf->grad) {
        CHECK_MSG(0, "%s: no gradient", what);
        return;
    }
    mt_test_allclose(leaf->grad, ref, atol, rtol, what);
}

/* ------------------------------------------------------------- batch norm */

typedef struct {
    int training, use_running;
    float momentum, eps;
    mt_tensor *rm, *rv;
} bn_ctx;

static mt_tensor *bn_fn(mt_tensor **in, void *vctx) {
    bn_ctx *c = vctx;
    return mt_batch_norm(in[0], in[1], in[2], c->use_running ? c->rm : NULL,
                         c->use_running ? c->rv : NULL, c->training, c->momentum, c->eps);
}

/* Train mode forward, running stats update, backward vs references. */
static void test_batch_norm_train(int ndim, const int64_t *shape, float lo, float hi) {
    int64_t N = shape[0], C = shape[1], S = 1;
    for (int d = 2; d < ndim; d++) S *= shape[d];
    mt_tensor *x = mt_test_rand(ndim, shape, lo, hi);
    mt_tensor *w = mt_test_rand(MT_SHAPE(C), 0.5f, 1.5f), *b = mt_test_rand(MT_SHAPE(C), -1, 1);
    mt_tensor *rm = mt_test_rand(MT_SHAPE(C), -0.5f, 0.5f), *rv = mt_test_rand(MT_SHAPE(C), 0.5f, 2);
    double *rm0 = mt_test_to_f64(rm), *rv0 = mt_test_to_f64(rv);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    float mom = 0.1f, eps = 1e-5f;
    mt_tensor *y = mt_batch_norm(x, w, b, rm, rv, 1, mom, eps);
    norm_map m = map_nc(N, C, S, 1, 1);
    double *xd = mt_test_to_f64(x), *wd = mt_test_to_f64(w), *bd = mt_test_to_f64(b);
    double *yr = malloc(sizeof(double) * (size_t)m.n), *mean = malloc(sizeof(double) * (size_t)C),
           *var = malloc(sizeof(double) * (size_t)C);
    ref_forward(&m, xd, wd, bd, eps, yr, mean, var);
    mt_test_allclose(y, yr, 1e-5, 1e-4, "batch_norm train forward");
    /* running stats: (1 - m) r + m stat, unbiased variance */
    double *erm = malloc(sizeof(double) * (size_t)C), *erv = malloc(sizeof(double) * (size_t)C);
    double cnt = (double)N * (double)S;
    for (int64_t c = 0; c < C; c++) {
        erm[c] = (1 - mom) * rm0[c] + mom * mean[c];
        erv[c] = (1 - mom) * rv0[c] + mom * var[c] * cnt / (cnt - 1);
    }
    mt_test_allclose(rm, erm, 1e-6, 1e-5, "batch_norm running_mean");
    mt_test_allclose(rv, erv, 1e-6, 1e-5, "batch_norm running_var (unbiased)");
    /* backward */
    mt_tensor *dy = mt_test_rand(ndim, shape, -1, 1);
    double *dyd = mt_test_to_f64(dy);
    double *dx = malloc(sizeof(double) * (size_t)m.n), *dw = malloc(sizeof(double) * (size_t)C),
           *db = malloc(sizeof(double) * (size_t)C);
    ref_backward(&m, xd, dyd, wd, eps, dx, dw, db);
    run_backward(y, dy);
    double scale = 1.0 / (hi - lo); /* dx scales with 1/std */
    check_grad(x, dx, 1e-4 * scale, 1e-3, "batch_norm train dx");
    check_grad(w, dw, 1e-3, 1e-4, "batch_norm train dweight");
    check_grad(b, db, 1e-3, 1e-4, "batch_norm train dbias");
    map_free(&m);
    free(rm0), free(rv0), free(xd), free(wd), free(bd), free(yr), free(mean), free(var);
    free(erm), free(erv), free(dyd), free(dx), free(dw), free(db);
    mt_tensor *rel[] = {x, w, b, rm, rv, y, dy};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

static void test_batch_norm_eval(void) {
    int64_t N = 2, C = 3, S = 5 * 3 * 7;
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 5, 3, 7), -2, 3);
    mt_tensor *w = mt_test_rand(MT_SHAPE(C), 0.5f, 1.5f), *b = mt_test_rand(MT_SHAPE(C), -1, 1);
    mt_tensor *rm = mt_test_rand(MT_SHAPE(C), -0.5f, 0.5f), *rv = mt_test_rand(MT_SHAPE(C), 0.5f, 2);
    double *rmd = mt_test_to_f64(rm), *rvd = mt_test_to_f64(rv), *xd = mt_test_to_f64(x);
    double *wd = mt_test_to_f64(w), *bd = mt_test_to_f64(b);
    float eps = 1e-3f;
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *y = mt_batch_norm(x, w, b, rm, rv, 0, 0.1f, eps);
    double *yr = malloc(sizeof(double) * (size_t)(N * C * S));
    for (int64_t i = 0; i < N * C * S; i++) {
        int64_t c = (i / S) % C;
        yr[i] = (xd[i] - rmd[c]) / sqrt(rvd[c] + eps) * wd[c] + bd[c];
    }
    mt_test_allclose(y, yr, 1e-5, 1e-4, "batch_norm eval forward (running stats)");
    mt_test_allclose(rm, rmd, 1e-12, 0, "batch_norm eval leaves running_mean");
    mt_test_allclose(rv, rvd, 1e-12, 0, "batch_norm eval leaves running_var");
    /* eval backward: dx = dy w / sqrt(rv + eps), dw = sum dy xhat, db = sum dy */
    mt_tensor *dy = mt_test_rand(MT_SHAPE(2, 3, 5, 3, 7), -1, 1);
    double *dyd = mt_test_to_f64(dy);
    double *dx = malloc(sizeof(double) * (size_t)(N * C * S)), dw[3] = {0}, db[3] = {0};
    for (int64_t i = 0; i < N * C * S; i++) {
        int64_t c = (i / S) % C;
        double r = 1 / sqrt(rvd[c] + eps);
        dx[i] = dyd[i] * wd[c] * r;
        dw[c] += dyd[i] * (xd[i] - rmd[c]) * r;
        db[c] += dyd[i];
    }
    run_backward(y, dy);
    check_grad(x, dx, 1e-5, 1e-4, "batch_norm eval dx");
    check_grad(w, dw, 1e-4, 1e-4, "batch_norm eval dweight");
    check_grad(b, db, 1e-4, 1e-4, "batch_norm eval dbias");
    /* train and eval differ; eval without running stats equals train with batch stats */
    mt_grad_set_enabled(0);
    mt_tensor *yt = mt_batch_norm(x, w, b, NULL, NULL, 1, 0.1f, eps);
    mt_tensor *ye = mt_batch_norm(x, w, b, NULL, NULL, 0, 0.1f, eps);
    mt_tensor *yv = mt_batch_norm(x, w, b, rm, rv, 0, 0.1f, eps);
    mt_test_allclose_t(ye, yt, 1e-12, 0, "batch_norm eval without running stats uses batch stats");
    double *a = mt_test_to_f64(yt), *c2 = mt_test_to_f64(yv), diff = 0;
    for (int64_t i = 0; i < N * C * S; i++) diff = fmax(diff, fabs(a[i] - c2[i]));
    CHECK_MSG(diff > 1e-2, "batch_norm train and eval outputs should differ (max diff %g)", diff);
    mt_grad_set_enabled(1);
    free(rmd), free(rvd), free(xd), free(wd), free(bd), free(yr), free(dyd), free(dx), free(a), free(c2);
    mt_tensor *rel[] = {x, w, b, rm, rv, y, dy, yt, ye, yv};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* Momentum semantics over two steps, by hand for a single channel. */
static void test_batch_norm_running_by_hand(void) {
    float xv[6] = {1, 2, 4, 7, 11, 16}; /* mean 41/6, two steps on the same data */
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(2, 1, 3), xv);
    mt_tensor *rm = mt_tensor_full(MT_F32, MT_SHAPE(1), 0.0, MT_DEVICE_CPU);
    mt_tensor *rv = mt_tensor_full(MT_F32, MT_SHAPE(1), 1.0, MT_DEVICE_CPU);
    double mean = 41.0 / 6, ss = 0;
    for (int i = 0; i < 6; i++) ss += (xv[i] - mean) * (xv[i] - mean);
    double uvar = ss / 5; /* unbiased */
    double erm = 0, erv = 1;
    for (int step = 0; step < 2; step++) {
        mt_tensor *y = mt_batch_norm(x, NULL, NULL, rm, rv, 1, 0.25f, 1e-5f);
        erm = 0.75 * erm + 0.25 * mean;
        erv = 0.75 * erv + 0.25 * uvar;
        CHECK_NEAR(mt_tensor_get_flat(rm, 0), erm, 1e-5);
        CHECK_NEAR(mt_tensor_get_flat(rv, 0), erv, 1e-4);
        /* normalised with the biased variance */
        CHECK_NEAR(mt_tensor_get_flat(y, 5), (16 - mean) / sqrt(ss / 6 + 1e-5), 1e-5);
        mt_tensor_release(y);
    }
    mt_tensor_release(x);
    mt_tensor_release(rm);
    mt_tensor_release(rv);
}

static void test_batch_norm_grad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 3, 2, 3), -1, 2);
    mt_tensor *w = mt_test_rand(MT_SHAPE(3), 0.5f, 1.5f), *b = mt_test_rand(MT_SHAPE(3), -1, 1);
    mt_tensor *rm = mt_test_rand(MT_SHAPE(3), -0.5f, 0.5f), *rv = mt_test_rand(MT_SHAPE(3), 0.5f, 2);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *in[3] = {x, w, b};
    bn_ctx train = {1, 0, 0.1f, 1e-5f, rm, rv};
    mt_test_gradcheck("batch_norm train (x, w, b)", bn_fn, &train, 3, in, 1e-2, 2e-3, 1e-2);
    bn_ctx train_rs = {1, 1, 0.1f, 1e-5f, rm, rv};
    mt_test_gradcheck("batch_norm train with running stats", bn_fn, &train_rs, 3, in, 1e-2, 2e-3, 1e-2);
    bn_ctx eval = {0, 1, 0.1f, 1e-5f, rm, rv};
    mt_test_gradcheck("batch_norm eval (x, w, b)", bn_fn, &eval, 3, in, 1e-2, 2e-3, 1e-2);
    /* 2-D input (N, C), no affine: only x */
    mt_tensor *x2 = mt_test_rand(MT_SHAPE(5, 3), -1, 1);
    mt_tensor_set_requires_grad(x2, 1);
    mt_tensor *in2[3] = {x2, NULL, NULL};
    mt_test_gradcheck("batch_norm (N, C) no affine", bn_fn, &train, 3, in2, 1e-2, 2e-3, 1e-2);
    /* weight without grad, bias NULL */
    mt_tensor_set_requires_grad(w, 0);
    mt_tensor *in3[3] = {x, w, NULL};
    mt_test_gradcheck("batch_norm frozen weight", bn_fn, &train, 3, in3, 1e-2, 2e-3, 1e-2);
    mt_tensor *rel[] = {x, w, b, rm, rv, x2};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* ------------------------------------------------------------- group norm */

typedef struct {
    int groups; /* 0: instance norm */
    float eps;
} gn_ctx;

static mt_tensor *gn_fn(mt_tensor **in, void *vctx) {
    gn_ctx *c = vctx;
    if (!c->groups) return mt_instance_norm(in[0], in[1], in[2], c->eps);
    return mt_group_norm(in[0], c->groups, in[1], in[2], c->eps);
}

static void test_group_norm_ref(int ndim, const int64_t *shape, int groups, int affine, float lo,
                                float hi, const char *what) {
    int64_t N = shape[0], C = shape[1], S = 1;
    for (int d = 2; d < ndim; d++) S *= shape[d];
    int G = groups ? groups : (int)C;
    mt_tensor *x = mt_test_rand(ndim, shape, lo, hi);
    mt_tensor *w = affine ? mt_test_rand(MT_SHAPE(C), 0.5f, 1.5f) : NULL;
    mt_tensor *b = affine ? mt_test_rand(MT_SHAPE(C), -1, 1) : NULL;
    mt_tensor_set_requires_grad(x, 1);
    if (affine) {
        mt_tensor_set_requires_grad(w, 1);
        mt_tensor_set_requires_grad(b, 1);
    }
    float eps = 1e-5f;
    mt_tensor *y = groups ? mt_group_norm(x, groups, w, b, eps) : mt_instance_norm(x, w, b, eps);
    norm_map m = map_nc(N, C, S, G, 0);
    double *xd = mt_test_to_f64(x), *wd = affine ? mt_test_to_f64(w) : NULL,
           *bd = affine ? mt_test_to_f64(b) : NULL;
    double *yr = malloc(sizeof(double) * (size_t)m.n), *mean = malloc(sizeof(double) * (size_t)m.nsets),
           *var = malloc(sizeof(double) * (size_t)m.nsets);
    ref_forward(&m, xd, wd, bd, eps, yr, mean, var);
    char buf[160];
    snprintf(buf, sizeof buf, "%s forward", what);
    mt_test_allclose(y, yr, 1e-5, 1e-4, buf);
    mt_tensor *dy = mt_test_rand(ndim, shape, -1, 1);
    double *dyd = mt_test_to_f64(dy);
    double *dx = malloc(sizeof(double) * (size_t)m.n), *dw = malloc(sizeof(double) * (size_t)C),
           *db = malloc(sizeof(double) * (size_t)C);
    ref_backward(&m, xd, dyd, wd, eps, dx, dw, db);
    run_backward(y, dy);
    snprintf(buf, sizeof buf, "%s dx", what);
    check_grad(x, dx, 1e-4 / (hi - lo), 1e-3, buf);
    if (affine) {
        snprintf(buf, sizeof buf, "%s dweight", what);
        check_grad(w, dw, 1e-3, 1e-4, buf);
        snprintf(buf, sizeof buf, "%s dbias", what);
        check_grad(b, db, 1e-3, 1e-4, buf);
    }
    map_free(&m);
    free(xd), free(wd), free(bd), free(yr), free(mean), free(var), free(dyd), free(dx), free(dw), free(db);
    mt_tensor_release(x);
    mt_tensor_release(w);
    mt_tensor_release(b);
    mt_tensor_release(y);
    mt_tensor_release(dy);
}

static void test_group_norm_grad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 6, 3, 2, 3), -1, 2);
    mt_tensor *w = mt_test_rand(MT_SHAPE(6), 0.5f, 1.5f), *b = mt_test_rand(MT_SHAPE(6), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *in[3] = {x, w, b};
    gn_ctx g3 = {3, 1e-5f}, inst = {0, 1e-5f};
    mt_test_gradcheck("group_norm G=3 (x, w, b)", gn_fn, &g3, 3, in, 1e-2, 2e-3, 1e-2);
    mt_test_gradcheck("instance_norm (x, w, b)", gn_fn, &inst, 3, in, 1e-2, 2e-3, 1e-2);
    mt_tensor *in2[3] = {x, NULL, NULL};
    mt_test_gradcheck("instance_norm no affine", gn_fn, &inst, 3, in2, 1e-2, 2e-3, 1e-2);
    /* 1-D spatial */
    mt_tensor *x1 = mt_test_rand(MT_SHAPE(2, 6, 5), -1, 1);
    mt_tensor_set_requires_grad(x1, 1);
    mt_tensor *in3[3] = {x1, w, b};
    mt_test_gradcheck("group_norm (N, C, L)", gn_fn, &g3, 3, in3, 1e-2, 2e-3, 1e-2);
    mt_tensor *rel[] = {x, w, b, x1};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* ------------------------------------------------------------- layer norm */

typedef struct {
    int nd;
    float eps;
} ln_ctx;

static mt_tensor *ln_fn(mt_tensor **in, void *vctx) {
    ln_ctx *c = vctx;
    return mt_layer_norm(in[0], c->nd, in[1], in[2], c->eps);
}

static void test_layer_norm_ref(int ndim, const int64_t *shape, int nd, int affine, float lo,
                                float hi, const char *what) {
    int64_t D = 1, M = 1;
    for (int d = 0; d < ndim; d++) {
        if (d >= ndim - nd)
            D *= shape[d];
        else
            M *= shape[d];
    }
    mt_tensor *x = mt_test_rand(ndim, shape, lo, hi);
    mt_tensor *w = affine ? mt_test_rand(nd, shape + ndim - nd, 0.5f, 1.5f) : NULL;
    mt_tensor *b = affine ? mt_test_rand(nd, shape + ndim - nd, -1, 1) : NULL;
    mt_tensor_set_requires_grad(x, 1);
    if (affine) {
        mt_tensor_set_requires_grad(w, 1);
        mt_tensor_set_requires_grad(b, 1);
    }
    float eps = 1e-5f;
    mt_tensor *y = mt_layer_norm(x, nd, w, b, eps);
    norm_map m = map_rows(M, D);
    double *xd = mt_test_to_f64(x), *wd = affine ? mt_test_to_f64(w) : NULL,
           *bd = affine ? mt_test_to_f64(b) : NULL;
    double *yr = malloc(sizeof(double) * (size_t)m.n), *mean = malloc(sizeof(double) * (size_t)M),
           *var = malloc(sizeof(double) * (size_t)M);
    ref_forward(&m, xd, wd, bd, eps, yr, mean, var);
    char buf[160];
    snprintf(buf, sizeof buf, "%s forward", what);
    mt_test_allclose(y, yr, 1e-5, 1e-4, buf);
    mt_tensor *dy = mt_test_rand(ndim, shape, -1, 1);
    double *dyd = mt_test_to_f64(dy);
    double *dx = malloc(sizeof(double) * (size_t)m.n), *dw = malloc(sizeof(double) * (size_t)D),
           *db = malloc(sizeof(double) * (size_t)D);
    ref_backward(&m, xd, dyd, wd, eps, dx, dw, db);
    run_backward(y, dy);
    snprintf(buf, sizeof buf, "%s dx", what);
    check_grad(x, dx, 1e-4 / (hi - lo), 1e-3, buf);
    if (affine) {
        snprintf(buf, sizeof buf, "%s dweight", what);
        check_grad(w, dw, 1e-3, 1e-4, buf);
        snprintf(buf, sizeof buf, "%s dbias", what);
        check_grad(b, db, 1e-3, 1e-4, buf);
    }
    map_free(&m);
    free(xd), free(wd), free(bd), free(yr), free(mean), free(var), free(dyd), free(dx), free(dw), free(db);
    mt_tensor_release(x);
    mt_tensor_release(w);
    mt_tensor_release(b);
    mt_tensor_release(y);
    mt_tensor_release(dy);
}

static void test_layer_norm_grad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 5), -1, 2);
    mt_tensor *w = mt_test_rand(MT_SHAPE(5), 0.5f, 1.5f), *b = mt_test_rand(MT_SHAPE(5), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    mt_tensor *in[3] = {x, w, b};
    ln_ctx c1 = {1, 1e-5f};
    mt_test_gradcheck("layer_norm last dim (x, w, b)", ln_fn, &c1, 3, in, 1e-2, 2e-3, 1e-2);
    mt_tensor *w2 = mt_test_rand(MT_SHAPE(3, 5), 0.5f, 1.5f), *b2 = mt_test_rand(MT_SHAPE(3, 5), -1, 1);
    mt_tensor_set_requires_grad(w2, 1);
    mt_tensor_set_requires_grad(b2, 1);
    mt_tensor *in2[3] = {x, w2, b2};
    ln_ctx c2 = {2, 1e-5f};
    mt_test_gradcheck("layer_norm last 2 dims (x, w, b)", ln_fn, &c2, 3, in2, 1e-2, 2e-3, 1e-2);
    mt_tensor *in3[3] = {x, NULL, NULL};
    mt_test_gradcheck("layer_norm no affine", ln_fn, &c1, 3, in3, 1e-2, 2e-3, 1e-2);
    mt_tensor *rel[] = {x, w, b, w2, b2};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* A non-contiguous input gives the same result as its contiguous copy. */
static void test_noncontiguous(void) {
    mt_tensor *base = mt_test_rand(MT_SHAPE(3, 2, 4, 5), -1, 1);
    mt_tensor *xt = mt_tensor_transpose(base, 0, 1); /* (2, 3, 4, 5) view */
    mt_tensor *xc = mt_tensor_contiguous(xt);
    mt_tensor *a = mt_group_norm(xt, 3, NULL, NULL, 1e-5f), *b = mt_group_norm(xc, 3, NULL, NULL, 1e-5f);
    mt_test_allclose_t(a, b, 1e-12, 0, "group_norm on a transposed view");
    mt_tensor *rel[] = {base, xt, xc, a, b};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

int main(void) {
    mt_test_seed(101);
    /* odd sizes, 1-3 spatial dims, an offset mean, and planes larger than one chunk */
    test_batch_norm_train(MT_SHAPE(2, 3, 5, 3, 7), -1, 2);
    test_batch_norm_train(MT_SHAPE(2, 3, 9), 1000, 1001); /* large mean, unit-scale spread */
    test_batch_norm_train(MT_SHAPE(3, 5), -2, 2);
    test_batch_norm_train(MT_SHAPE(2, 3, 17, 31, 33), -1, 1); /* S = 17391 > one chunk */
    test_batch_norm_eval();
    test_batch_norm_running_by_hand();
    test_batch_norm_grad();
    test_group_norm_ref(MT_SHAPE(2, 6, 3, 5, 7), 3, 1, -1, 2, "group_norm G=3");
    test_group_norm_ref(MT_SHAPE(2, 6, 3, 5, 7), 3, 0, -1, 2, "group_norm G=3 no affine");
    test_group_norm_ref(MT_SHAPE(2, 3, 5, 7), 0, 1, 500, 501, "instance_norm 2-D offset");
    test_group_norm_ref(MT_SHAPE(2, 6, 3, 5, 7), 0, 1, -1, 2, "instance_norm 3-D");
    test_group_norm_ref(MT_SHAPE(1, 4, 19, 29, 31), 2, 1, -1, 1, "group_norm multi-chunk");
    test_group_norm_grad();
    test_layer_norm_ref(MT_SHAPE(2, 3, 7), 1, 1, -1, 2, "layer_norm last dim");
    test_layer_norm_ref(MT_SHAPE(2, 3, 5, 7), 2, 1, -1, 2, "layer_norm last 2 dims");
    test_layer_norm_ref(MT_SHAPE(203, 5), 1, 1, -1, 2, "layer_norm many rows");
    test_layer_norm_ref(MT_SHAPE(3, 20001), 1, 1, 10, 11, "layer_norm wide rows");
    test_layer_norm_ref(MT_SHAPE(2, 3, 7), 1, 0, -1, 2, "layer_norm no affine");
    test_layer_norm_grad();
    test_noncontiguous();
    return mt_test_finish();
}
