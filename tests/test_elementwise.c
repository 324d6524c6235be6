/* LABELS: unit grad */
/* Elementwise ops (autograd/elementwise.c, core/cpu/elementwise.c): binary
 * ops with broadcasting, unary ops, dropout, one-hot, channel argmax and
 * casts. Forward against naive double references, gradients by finite
 * differences (inputs kept away from kinks and domain edges). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static void release_all(int n, mt_tensor **ts) {
    for (int k = 0; k < n; k++) mt_tensor_release(ts[k]);
}

/* ------------------------------------------------------------------ binary */

static const char *bin_name[] = {"add", "sub", "mul", "div", "max", "min", "eq", "ge"};

static double ref_bin(mt_binary_op op, double a, double b) {
    switch (op) {
    case MT_BIN_ADD: return a + b;
    case MT_BIN_SUB: return a - b;
    case MT_BIN_MUL: return a * b;
    case MT_BIN_DIV: return a / b;
    case MT_BIN_MAX: return a > b ? a : b;
    case MT_BIN_MIN: return a < b ? a : b;
    case MT_BIN_EQ: return a == b;
    default: return a >= b;
    }
}

/* Element of t (right-aligned broadcast) for the output multi-index idx. */
static double bcast_get(const mt_tensor *t, int nd, const int64_t *idx) {
    int64_t ti[MT_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int d = 0; d < t->ndim; d++) ti[d] = t->shape[d] == 1 ? 0 : idx[d + lead];
    return mt_tensor_get(t, ti);
}

static double *ref_binary(mt_binary_op op, const mt_tensor *a, const mt_tensor *b, int *nd,
                          int64_t *shape) {
    CHECK(mt_broadcast_shape(nd, shape, a, b) == MT_OK);
    int64_t n = 1;
    for (int d = 0; d < *nd; d++) n *= shape[d];
    double *r = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[MT_MAX_DIMS], k = i;
        for (int d = *nd - 1; d >= 0; d--) {
            idx[d] = k % shape[d];
            k /= shape[d];
        }
        r[i] = ref_bin(op, bcast_get(a, *nd, idx), bcast_get(b, *nd, idx));
    }
    return r;
}

static mt_tensor *bin_call(mt_binary_op op, const mt_tensor *a, const mt_tensor *b) {
    switch (op) {
    case MT_BIN_ADD: return mt_add(a, b);
    case MT_BIN_SUB: return mt_sub(a, b);
    case MT_BIN_MUL: return mt_mul(a, b);
    case MT_BIN_DIV: return mt_div(a, b);
    case MT_BIN_MAX: return mt_maximum(a, b);
    default: return mt_minimum(a, b);
    }
}

static mt_tensor *f_binary(mt_tensor **in, void *c) {
    return bin_call(*(mt_binary_op *)c, in[0], in[1]);
}

typedef struct {
    int nda;
    int64_t sa[MT_MAX_DIMS];
    int ndb;
    int64_t sb[MT_MAX_DIMS];
} bshape;

static void test_binary(void) {
    bshape shapes[] = {
        {3, {3, 4, 5}, 3, {3, 4, 5}}, /* same shape */
        {3, {3, 4, 5}, 2, {4, 1}},    /* trailing broadcast, fewer dims */
        {3, {1, 4, 1}, 3, {3, 1, 5}}, /* both broadcast */
        {0, {0}, 3, {2, 3, 5}},       /* 0-d scalar */
        {3, {3, 4, 5}, 1, {5}},       /* row vector */
        {5, {2, 3, 2, 3, 3}, 5, {1, 3, 1, 1, 1}}, /* per-channel (bias style) */
    };
    for (int op = MT_BIN_ADD; op <= MT_BIN_MIN; op++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            mt_tensor *a = mt_test_rand(shapes[s].nda, shapes[s].sa, -1, 1);
            /* b away from 0 (div) and from a (max/min ties): b in +-[1.2, 2] */
            mt_tensor *b = mt_test_rand(shapes[s].ndb, shapes[s].sb, 1.2f, 2.0f);
            for (int64_t i = 0; i < mt_tensor_numel(b); i += 2)
                mt_tensor_set_flat(b, i, -mt_tensor_get_flat(b, i));
            if (op >= MT_BIN_MAX) { /* make max/min pick both sides: a in +-[0, 3] */
                for (int64_t i = 0; i < mt_tensor_numel(a); i++)
                    mt_tensor_set_flat(a, i, 3 * mt_tensor_get_flat(a, i));
            }
            int nd;
            int64_t shape[MT_MAX_DIMS];
            double *r = ref_binary((mt_binary_op)op, a, b, &nd, shape);
            char what[96];
            snprintf(what, sizeof what, "%s shapes %zu", bin_name[op], s);
            mt_tensor *y = bin_call((mt_binary_op)op, a, b);
            CHECK(y->ndim == nd);
            mt_test_allclose(y, r, 1e-7, 1e-6, what);
            /* swapped operands */
            double *r2 = ref_binary((mt_binary_op)op, b, a, &nd, shape);
            mt_tensor *y2 = bin_call((mt_binary_op)op, b, a);
            strncat(what, " swapped", sizeof what - strlen(what) - 1);
            mt_test_allclose(y2, r2, 1e-7, 1e-6, what);
            /* gradients of both operands, with sum-to-shape over broadcast dims;
             * max/min are checked where no element is within the FD step of a tie */
            mt_tensor_set_requires_grad(a, 1);
            mt_tensor_set_requires_grad(b, 1);
            mt_tensor *ins[2] = {a, b};
            mt_binary_op o = (mt_binary_op)op;
            snprintf(what, sizeof what, "%s shapes %zu", bin_name[op], s);
            mt_test_gradcheck(what, f_binary, &o, 2, ins, 1e-3, 1e-3, 1e-2);
            free(r);
            free(r2);
            release_all(4, (mt_tensor *[]){a, b, y, y2});
        }
    /* non-contiguous operands */
    mt_tensor *a = mt_test_rand(MT_SHAPE(5, 4), -1, 1), *b = mt_test_rand(MT_SHAPE(4, 5), 1, 2);
    mt_tensor *at = mt_transpose(a, 0, 1);
    for (int op = MT_BIN_ADD; op <= MT_BIN_MIN; op++) {
        int nd;
        int64_t shape[MT_MAX_DIMS];
        double *r = ref_binary((mt_binary_op)op, at, b, &nd, shape);
        mt_tensor *y = bin_call((mt_binary_op)op, at, b);
        char what[64];
        snprintf(what, sizeof what, "%s transposed operand", bin_name[op]);
        mt_test_allclose(y, r, 1e-7, 1e-6, what);
        free(r);
        mt_tensor_release(y);
    }
    /* EQ / GE through the kernel (not differentiable, no public op) */
    mt_tensor *c = mt_tensor_clone(b);
    mt_tensor_set_flat(c, 3, 0.0);
    mt_tensor_set_flat(c, 7, 100.0);
    for (int op = MT_BIN_EQ; op <= MT_BIN_GE; op++) {
        mt_tensor *y = mt_tensor_new(MT_F32, MT_SHAPE(4, 5), MT_DEVICE_CPU);
        mt_cpu_backend.binary((mt_binary_op)op, y, b, c);
        int nd;
        int64_t shape[MT_MAX_DIMS];
        double *r = ref_binary((mt_binary_op)op, b, c, &nd, shape);
        mt_test_allclose(y, r, 1e-12, 0, bin_name[op]);
        CHECK(mt_tensor_get_flat(y, 3) == (op == MT_BIN_GE) && mt_tensor_get_flat(y, 7) == 0.0 &&
              mt_tensor_get_flat(y, 0) == 1.0);
        free(r);
        mt_tensor_release(y);
    }
    /* large contiguous and broadcast (threaded paths) */
    mt_tensor *big = mt_test_rand(MT_SHAPE(3, 64, 801), -1, 1), *ch = mt_test_rand(MT_SHAPE(64, 1), -1, 1);
    int nd;
    int64_t shape[MT_MAX_DIMS];
    double *r = ref_binary(MT_BIN_MUL, big, ch, &nd, shape);
    mt_tensor *y = mt_mul(big, ch);
    mt_test_allclose(y, r, 1e-7, 1e-6, "mul large broadcast");
    free(r);
    r = ref_binary(MT_BIN_SUB, big, big, &nd, shape);
    mt_tensor *z = mt_sub(big, big);
    mt_test_allclose(z, r, 1e-7, 1e-6, "sub large contiguous");
    free(r);
    release_all(8, (mt_tensor *[]){a, b, at, c, big, ch, y, z});
}

/* ------------------------------------------------------------------- unary */

typedef struct {
    mt_unary_op op;
    const char *name;
    float alpha;
    float lo, hi;   /* input range */
    float kink;     /* inputs kept >= 0.05 away from this (NAN: none) */
} unary_case;

static double ref_un(mt_unary_op op, double x, double a) {
    switch (op) {
    case MT_UN_NEG: return -x;
    case MT_UN_EXP: return exp(x);
    case MT_UN_LOG: return log(x);
    case MT_UN_SQRT: return sqrt(x);
    case MT_UN_RSQRT: return 1 / sqrt(x);
    case MT_UN_ABS: return fabs(x);
    case MT_UN_SQUARE: return x * x;
    case MT_UN_RECIP: return 1 / x;
    case MT_UN_RELU: return x > 0 ? x : 0;
    case MT_UN_LEAKY_RELU: return x > 0 ? x : a * x;
    case MT_UN_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case MT_UN_SIGMOID: return 1 / (1 + exp(-x));
    case MT_UN_TANH: return tanh(x);
    case MT_UN_SOFTPLUS: return log1p(exp(x));
    case MT_UN_LOG_SIGMOID: return -log1p(exp(-x));
    case MT_UN_ADD_SCALAR: return x + a;
    case MT_UN_MUL_SCALAR: return x * a;
    case MT_UN_POW_SCALAR: return pow(x, a);
    case MT_UN_CLAMP_MIN: return x < a ? a : x;
    case MT_UN_CLAMP_MAX: return x > a ? a : x;
    default: return NAN;
    }
}

static mt_tensor *f_unary(mt_tensor **in, void *c) {
    unary_case *u = c;
    return mt_unary(u->op, in[0], u->alpha);
}

/* The named wrappers must be the generic op with the right enum. */
static mt_tensor *wrapper(mt_unary_op op, const mt_tensor *x, float a) {
    switch (op) {
    case MT_UN_NEG: return mt_neg(x);
    case MT_UN_EXP: return mt_exp(x);
    case MT_UN_LOG: return mt_log(x);
    case MT_UN_SQRT: return mt_sqrt(x);
    case MT_UN_ABS: return mt_abs(x);
    case MT_UN_SQUARE: return mt_square(x);
    case MT_UN_RELU: return mt_relu(x);
    case MT_UN_LEAKY_RELU: return mt_leaky_relu(x, a);
    case MT_UN_GELU: return mt_gelu(x);
    case MT_UN_SIGMOID: return mt_sigmoid(x);
    case MT_UN_TANH: return mt_tanh(x);
    case MT_UN_SOFTPLUS: return mt_softplus(x);
    case MT_UN_LOG_SIGMOID: return mt_log_sigmoid(x);
    case MT_UN_ADD_SCALAR: return mt_add_scalar(x, a);
    case MT_UN_MUL_SCALAR: return mt_mul_scalar(x, a);
    case MT_UN_POW_SCALAR: return mt_pow_scalar(x, a);
    case MT_UN_CLAMP_MIN: return mt_clamp_min(x, a);
    case MT_UN_CLAMP_MAX: return mt_clamp_max(x, a);
    default: return NULL; /* RSQRT, RECIP: no named wrapper */
    }
}

static void test_unary(void) {
    unary_case cases[] = {
        {MT_UN_NEG, "neg", 0, -2, 2, NAN},
        {MT_UN_EXP, "exp", 0, -3, 3, NAN},
        {MT_UN_LOG, "log", 0, 0.2f, 5, NAN},
        {MT_UN_SQRT, "sqrt", 0, 0.2f, 5, NAN},
        {MT_UN_RSQRT, "rsqrt", 0, 0.2f, 5, NAN},
        {MT_UN_ABS, "abs", 0, -2, 2, 0},
        {MT_UN_SQUARE, "square", 0, -2, 2, NAN},
        {MT_UN_RECIP, "recip", 0, 0.3f, 3, NAN},
        {MT_UN_RELU, "relu", 0, -2, 2, 0},
        {MT_UN_LEAKY_RELU, "leaky_relu", 0.01f, -2, 2, 0},
        {MT_UN_LEAKY_RELU, "leaky_relu 0.2", 0.2f, -2, 2, 0},
        {MT_UN_GELU, "gelu", 0, -4, 4, NAN},
        {MT_UN_SIGMOID, "sigmoid", 0, -6, 6, NAN},
        {MT_UN_TANH, "tanh", 0, -3, 3, NAN},
        {MT_UN_SOFTPLUS, "softplus", 0, -8, 8, NAN},
        {MT_UN_LOG_SIGMOID, "log_sigmoid", 0, -8, 8, NAN},
        {MT_UN_ADD_SCALAR, "add_scalar", 0.75f, -2, 2, NAN},
        {MT_UN_MUL_SCALAR, "mul_scalar", -1.5f, -2, 2, NAN},
        {MT_UN_POW_SCALAR, "pow 2.5", 2.5f, 0.2f, 3, NAN},
        {MT_UN_POW_SCALAR, "pow -0.5", -0.5f, 0.2f, 3, NAN},
        {MT_UN_CLAMP_MIN, "clamp_min", 0.3f, -1, 1, 0.3f},
        {MT_UN_CLAMP_MAX, "clamp_max", -0.2f, -1, 1, -0.2f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        unary_case *u = &cases[c];
        mt_tensor *x = mt_test_rand(MT_SHAPE(3, 5, 7), u->lo, u->hi);
        int64_t n = mt_tensor_numel(x);
        float *xp = MT_F32P(x);
        if (!isnan(u->kink))
            for (int64_t i = 0; i < n; i++)
                if (fabsf(xp[i] - u->kink) < 0.05f) xp[i] = u->kink + (xp[i] < u->kink ? -0.05f : 0.05f);
        double *r = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) r[i] = ref_un(u->op, xp[i], u->alpha);
        mt_tensor *y = mt_unary(u->op, x, u->alpha);
        mt_test_allclose(y, r, 1e-6, 1e-5, u->name);
        mt_tensor *w = wrapper(u->op, x, u->alpha);
        if (w) {
            CHECK_MSG(mt_test_allclose_t(w, y, 1e-12, 0, u->name), "wrapper of %s", u->name);
            mt_tensor_release(w);
        }
        /* non-contiguous input */
        mt_tensor *xt = mt_transpose(x, 0, 2);
        mt_tensor *yt = mt_unary(u->op, xt, u->alpha);
        CHECK_MSG(mt_tensor_get(yt, (int64_t[]){6, 4, 2}) == mt_tensor_get(y, (int64_t[]){2, 4, 6}),
                  "%s of a transposed input", u->name);
        mt_tensor_set_requires_grad(x, 1);
        mt_test_gradcheck(u->name, f_unary, u, 1, &x, 1e-3, 1e-3, 1e-2);
        free(r);
        release_all(4, (mt_tensor *[]){x, y, xt, yt});
    }
    /* large input: threaded paths agree with the reference */
    mt_tensor *x = mt_test_rand(MT_SHAPE(300001), -3, 3);
    double *r = malloc(sizeof(double) * 300001);
    const mt_unary_op ops[] = {MT_UN_RELU, MT_UN_LEAKY_RELU, MT_UN_SIGMOID, MT_UN_MUL_SCALAR};
    for (int k = 0; k < 4; k++) {
        for (int64_t i = 0; i < 300001; i++) r[i] = ref_un(ops[k], MT_F32P(x)[i], 0.1f);
        mt_tensor *y = mt_unary(ops[k], x, 0.1f);
        mt_test_allclose(y, r, 1e-6, 1e-5, "large unary");
        mt_tensor_release(y);
    }
    free(r);
    mt_tensor_release(x);
    /* stability at extremes */
    float xv[4] = {-100.0f, 100.0f, -30.0f, 30.0f};
    mt_tensor *e = mt_tensor_from_data(MT_F32, MT_SHAPE(4), xv);
    mt_tensor *sp = mt_softplus(e), *ls = mt_log_sigmoid(e), *sg = mt_sigmoid(e);
    CHECK_NEAR(mt_tensor_get_flat(sp, 0), 0.0, 1e-30);
    CHECK_NEAR(mt_tensor_get_flat(sp, 1), 100.0, 1e-5);
    CHECK_NEAR(mt_tensor_get_flat(ls, 0), -100.0, 1e-5);
    CHECK_NEAR(mt_tensor_get_flat(sg, 0), 0.0, 1e-30);
    CHECK(isfinite(mt_tensor_get_flat(sp, 0)) && isfinite(mt_tensor_get_flat(ls, 1)));
    release_all(4, (mt_tensor *[]){e, sp, ls, sg});
}

/* ----------------------------------------------------------------- dropout */

static void test_dropout(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(200, 501), 0.5f, 1.5f);
    int64_t n = mt_tensor_numel(x);
    mt_rng rng;
    mt_rng_init(&rng, 42);
    /* eval and p = 0: the identity, the same tensor */
    mt_tensor *e = mt_dropout(x, 0.3f, 0, &rng);
    CHECK(e == x);
    mt_tensor_release(e);
    mt_tensor *z = mt_dropout(x, 0.0f, 1, &rng);
    CHECK(z == x);
    mt_tensor_release(z);
    /* train: about p zeros, survivors scaled by 1/(1-p) */
    mt_tensor_set_requires_grad(x, 1);
    float p = 0.3f;
    mt_rng saved = rng;
    mt_tensor *y = mt_dropout(x, p, 1, &rng);
    CHECK(y->requires_grad && y->grad_fn);
    int64_t zeros = 0;
    int scale_ok = 1;
    for (int64_t i = 0; i < n; i++) {
        double v = mt_tensor_get_flat(y, i), xi = mt_tensor_get_flat(x, i);
        if (v == 0)
            zeros++;
        else
            scale_ok &= fabs(v - xi / (1 - p)) <= 1e-6 * fabs(v);
    }
    double frac = (double)zeros / (double)n; /* std of frac ~ 0.0014 */
    CHECK_MSG(fabs(frac - p) < 0.01, "dropout zero fraction %g vs p %g", frac, p);
    CHECK_MSG(scale_ok, "dropout survivors scaled by 1/(1-p)");
    /* mean preserved */
    mt_tensor *mx = mt_mean_all(x), *my = mt_mean_all(y);
    CHECK_NEAR(mt_tensor_item(my), mt_tensor_item(mx), 0.01);
    /* gradient: mask / (1 - p) */
    mt_tensor *s = mt_sum_all(y);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    int grad_ok = 1;
    for (int64_t i = 0; i < n; i++) {
        double g = mt_tensor_get_flat(x->grad, i), v = mt_tensor_get_flat(y, i);
        grad_ok &= v == 0 ? g == 0 : fabs(g - 1 / (1 - p)) < 1e-6;
    }
    CHECK_MSG(grad_ok, "dropout gradient is the scaled mask");
    /* reproducible from the rng state; the next draw differs */
    mt_rng again = saved;
    mt_tensor *y2 = mt_dropout(x, p, 1, &again);
    CHECK(mt_test_allclose_t(y2, y, 1e-12, 0, "dropout reproducible"));
    CHECK(again.offset == rng.offset && rng.offset != saved.offset);
    mt_tensor *y3 = mt_dropout(x, p, 1, &rng);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += (mt_tensor_get_flat(y3, i) == 0) != (mt_tensor_get_flat(y, i) == 0);
    CHECK_MSG(diff > n / 10, "consecutive dropout masks differ");
    release_all(8, (mt_tensor *[]){x, y, mx, my, s, y2, y3, NULL});
}

/* ------------------------------------------------- one-hot, argmax, casts */

static void test_one_hot_argmax(void) {
    /* u8 labels (N, 1, D, H, W) */
    int64_t N = 2, C = 3, S = 3 * 4 * 5;
    mt_tensor *lab = mt_tensor_new(MT_U8, MT_SHAPE(2, 1, 3, 4, 5), MT_DEVICE_CPU);
    uint8_t *lp = mt_tensor_data(lab);
    for (int64_t i = 0; i < N * S; i++) lp[i] = (uint8_t)((i * 7 + i / 5) % C);
    mt_tensor *oh = mt_one_hot(lab, (int)C);
    CHECK(oh->ndim == 5 && oh->shape[0] == 2 && oh->shape[1] == 3 && oh->shape[4] == 5 &&
          oh->dtype == MT_F32);
    int ok = 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++)
                ok &= mt_tensor_get_flat(oh, (n * C + c) * S + s) == (lp[n * S + s] == c);
    CHECK_MSG(ok, "one_hot u8 (N,1,*)");
    /* argmax of the one-hot recovers the labels */
    mt_tensor *am = mt_argmax_channel(oh);
    CHECK(am->dtype == MT_I32 && am->ndim == 5 && am->shape[1] == 1);
    ok = 1;
    for (int64_t i = 0; i < N * S; i++) ok &= mt_tensor_get_flat(am, i) == lp[i];
    CHECK_MSG(ok, "argmax(one_hot(l)) == l");
    /* i32 labels (N, *) */
    mt_tensor *li = mt_tensor_new(MT_I32, MT_SHAPE(3, 7), MT_DEVICE_CPU);
    int32_t *ip = mt_tensor_data(li);
    for (int i = 0; i < 21; i++) ip[i] = (i * 5) % 4;
    mt_tensor *oi = mt_one_hot(li, 4);
    CHECK(oi->ndim == 3 && oi->shape[1] == 4 && oi->shape[2] == 7);
    ok = 1;
    for (int n = 0; n < 3; n++)
        for (int c = 0; c < 4; c++)
            for (int s = 0; s < 7; s++) ok &= mt_tensor_get_flat(oi, (n * 4 + c) * 7 + s) == (ip[n * 7 + s] == c);
    CHECK_MSG(ok, "one_hot i32 (N,*)");
    /* argmax against a reference on random logits (first maximum wins) */
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 5, 3, 7), -1, 1);
    mt_tensor_set_flat(x, 1 * 21 + 4, mt_tensor_get_flat(x, 3 * 21 + 4) + 10); /* c=1 wins at s=4 */
    mt_tensor_set_flat(x, 3 * 21 + 4, mt_tensor_get_flat(x, 1 * 21 + 4));      /* tie with c=3 */
    mt_tensor *ax = mt_argmax_channel(x);
    ok = 1;
    for (int n = 0; n < 2; n++)
        for (int s = 0; s < 21; s++) {
            int best = 0;
            for (int c = 1; c < 5; c++)
                if (mt_tensor_get_flat(x, (n * 5 + c) * 21 + s) > mt_tensor_get_flat(x, (n * 5 + best) * 21 + s)) best = c;
            ok &= mt_tensor_get_flat(ax, n * 21 + s) == best;
        }
    CHECK_MSG(ok, "argmax_channel reference");
    CHECK(mt_tensor_get_flat(ax, 4) == 1);
    release_all(8, (mt_tensor *[]){lab, oh, am, li, oi, x, ax, NULL});
}

static void test_cast(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 9), -3, 3);
    mt_tensor *same = mt_to_dtype(x, MT_F32);
    CHECK(same == x);
    mt_tensor_release(same);
    mt_tensor *b = mt_to_dtype(x, MT_BF16);
    CHECK(b->dtype == MT_BF16);
    int ok = 1;
    for (int64_t i = 0; i < 36; i++) {
        double v = mt_tensor_get_flat(x, i);
        ok &= fabs(mt_tensor_get_flat(b, i) - v) <= fabs(v) / 256 + 1e-30;
    }
    CHECK_MSG(ok, "f32 -> bf16 within half an ulp");
    mt_tensor *i32 = mt_to_dtype(x, MT_I32);
    CHECK(i32->dtype == MT_I32 && mt_tensor_get_flat(i32, 5) == (double)(int32_t)mt_tensor_get_flat(x, 5));
    release_all(3, (mt_tensor *[]){b, i32, NULL});
    /* gradient through f32 -> bf16 -> f32: the gradient passes the bf16 tensor
     * in bf16 (as PyTorch), so it arrives f32 but rounded to bf16 */
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor *xb = mt_to_dtype(x, MT_BF16);
    CHECK(xb->requires_grad);
    mt_tensor *xf = mt_to_dtype(xb, MT_F32);
    mt_tensor *w = mt_test_rand(MT_SHAPE(4, 9), -1, 1);
    mt_tensor *p = mt_mul(xf, w);
    mt_tensor *s = mt_sum_all(p);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    CHECK(x->grad && x->grad->dtype == MT_F32);
    mt_tensor *wb = mt_tensor_to_dtype(w, MT_BF16);
    CHECK(mt_test_allclose_t(x->grad, wb, 1e-30, 0, "cast gradient = bf16(w)"));
    mt_tensor_release(wb);
    /* integer casts record nothing */
    mt_tensor *xi = mt_to_dtype(x, MT_I32);
    CHECK(xi->grad_fn == NULL && !xi->requires_grad);
    release_all(7, (mt_tensor *[]){x, xb, xf, w, p, s, xi});
}

int main(void) {
    mt_test_seed(303);
    test_binary();
    test_unary();
    test_dropout();
    test_one_hot_argmax();
    test_cast();
    return mt_test_finish();
}
