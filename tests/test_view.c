/* LABELS: unit grad */
/* View and data-movement ops (autograd/view.c): reshape, permute,
 * transpose, slice, contiguous, concat, pad. Forward against naive index
 * references, gradients by finite differences, storage sharing. */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

/* Row-major multi-index of flat i in shape. */
static void unravel(int64_t i, int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
}

static void release_all(int n, mt_tensor **ts) {
    for (int k = 0; k < n; k++) mt_tensor_release(ts[k]);
}

/* ---------------------------------------------------------------- reshape */

typedef struct {
    int nd;
    int64_t shape[MT_MAX_DIMS];
    int perm[MT_MAX_DIMS];
} shape_ctx;

static mt_tensor *f_reshape(mt_tensor **in, void *vc) {
    shape_ctx *c = vc;
    mt_tensor *r = mt_reshape(in[0], c->nd, c->shape);
    mt_tensor *y = mt_mul(r, r); /* non-linear, so a wrong mapping shows */
    mt_tensor_release(r);
    return y;
}

/* permute, then reshape (which must copy), then square */
static mt_tensor *f_permute_reshape(mt_tensor **in, void *vc) {
    shape_ctx *c = vc;
    mt_tensor *p = mt_permute(in[0], c->perm);
    mt_tensor *r = mt_reshape(p, c->nd, c->shape);
    mt_tensor *y = mt_mul(r, r);
    mt_tensor_release(p);
    mt_tensor_release(r);
    return y;
}

static void test_reshape(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(3, 4, 5), -1, 1);
    mt_tensor *r = mt_reshape(x, MT_SHAPE(5, -1));
    CHECK(r->ndim == 2 && r->shape[0] == 5 && r->shape[1] == 12);
    CHECK_MSG(r->storage == x->storage, "reshape of a contiguous tensor is a view");
    CHECK(mt_tensor_get_flat(r, 37) == mt_tensor_get_flat(x, 37));
    mt_tensor *p = mt_permute(x, (int[]){2, 0, 1});
    mt_tensor *rp = mt_reshape(p, MT_SHAPE(60));
    CHECK(rp->storage != x->storage);
    int ok = 1;
    for (int64_t i = 0; i < 60; i++) ok &= mt_tensor_get_flat(rp, i) == mt_tensor_get_flat(p, i);
    CHECK_MSG(ok, "reshape of a permuted tensor keeps logical order");
    release_all(3, (mt_tensor *[]){r, p, rp});

    mt_tensor_set_requires_grad(x, 1);
    shape_ctx c1 = {2, {5, 12}, {0}};
    mt_test_gradcheck("reshape", f_reshape, &c1, 1, &x, 1e-3, 1e-3, 1e-2);
    shape_ctx c2 = {2, {4, 15}, {2, 0, 1}};
    mt_test_gradcheck("permute+reshape", f_permute_reshape, &c2, 1, &x, 1e-3, 1e-3, 1e-2);
    mt_tensor_release(x);
}

/* ---------------------------------------------------------------- permute */

/* Deterministic weights 0.5 + (i mod 11) / 10 by flat position. */
static mt_tensor *pos_weights(int nd, const int64_t *shape) {
    mt_tensor *w = mt_tensor_new(MT_F32, nd, shape, MT_DEVICE_CPU);
    for (int64_t i = 0; i < mt_tensor_numel(w); i++) MT_F32P(w)[i] = 0.5f + (float)(i % 11) / 10;
    return w;
}

static mt_tensor *f_permute(mt_tensor **in, void *vc) {
    shape_ctx *c = vc;
    mt_tensor *p = mt_permute(in[0], c->perm);
    /* weight by position so that a wrong inverse permutation shows */
    mt_tensor *w = pos_weights(p->ndim, p->shape);
    mt_tensor *y = mt_mul(p, w);
    mt_tensor_release(p);
    mt_tensor_release(w);
    return y;
}

static mt_tensor *f_transpose(mt_tensor **in, void *vc) {
    mt_tensor *t = mt_transpose(in[0], -1, 0);
    mt_tensor *y = mt_mul(t, t);
    mt_tensor_release(t);
    return y;
}

static void test_permute(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 4, 5), -1, 1);
    int perm[4] = {3, 1, 0, 2};
    mt_tensor *p = mt_permute(x, perm);
    CHECK(p->shape[0] == 5 && p->shape[1] == 3 && p->shape[2] == 2 && p->shape[3] == 4);
    CHECK(p->storage == x->storage);
    int ok = 1;
    for (int64_t i = 0; i < 120; i++) {
        int64_t pi[4], xi[4];
        unravel(i, 4, p->shape, pi);
        for (int d = 0; d < 4; d++) xi[perm[d]] = pi[d];
        ok &= mt_tensor_get(p, pi) == mt_tensor_get(x, xi);
    }
    CHECK_MSG(ok, "permute index mapping");
    mt_tensor *t = mt_transpose(x, 1, -1);
    CHECK(t->shape[1] == 5 && t->shape[3] == 3);
    CHECK(mt_tensor_get(t, (int64_t[]){1, 4, 2, 0}) == mt_tensor_get(x, (int64_t[]){1, 0, 2, 4}));
    release_all(2, (mt_tensor *[]){p, t});

    mt_tensor_set_requires_grad(x, 1);
    shape_ctx c = {4, {0}, {3, 1, 0, 2}};
    mt_test_gradcheck("permute", f_permute, &c, 1, &x, 1e-3, 1e-3, 1e-2);
    mt_test_gradcheck("transpose", f_transpose, NULL, 1, &x, 1e-3, 1e-3, 1e-2);
    /* exact gradient of sum(permute(x) * w) is w permuted back */
    mt_tensor_zero_grad(x);
    mt_tensor *y = f_permute(&x, &c);
    mt_tensor *s = mt_sum_all(y);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    mt_tensor *w = pos_weights(MT_SHAPE(5, 3, 2, 4));
    ok = 1;
    for (int64_t i = 0; i < 120; i++) {
        int64_t pi[4], xi[4];
        unravel(i, 4, w->shape, pi);
        for (int d = 0; d < 4; d++) xi[perm[d]] = pi[d];
        ok &= mt_tensor_get(x->grad, xi) == mt_tensor_get(w, pi);
    }
    CHECK_MSG(ok && mt_tensor_is_contiguous(x->grad), "permute gradient is the inverse permutation");
    release_all(4, (mt_tensor *[]){y, s, w, x});
}

/* ------------------------------------------------------------------ slice */

typedef struct {
    int dim;
    int64_t start, end;
} slice_ctx;

static mt_tensor *f_slice(mt_tensor **in, void *vc) {
    slice_ctx *c = vc;
    mt_tensor *s = mt_slice(in[0], c->dim, c->start, c->end);
    mt_tensor *y = mt_mul(s, s);
    mt_tensor_release(s);
    return y;
}

static void test_slice(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(3, 7, 5), -1, 1);
    mt_tensor *s = mt_slice(x, 1, 2, 6);
    CHECK(s->shape[1] == 4 && s->storage == x->storage);
    CHECK(mt_tensor_get(s, (int64_t[]){2, 3, 4}) == mt_tensor_get(x, (int64_t[]){2, 5, 4}));
    mt_tensor *n = mt_slice(x, -1, -3, 100); /* negative start, end clamped */
    CHECK(n->shape[2] == 3);
    CHECK(mt_tensor_get(n, (int64_t[]){1, 6, 0}) == mt_tensor_get(x, (int64_t[]){1, 6, 2}));
    mt_tensor *e = mt_slice(x, 0, 1, 1); /* empty */
    CHECK(e->shape[0] == 0 && mt_tensor_numel(e) == 0);
    release_all(3, (mt_tensor *[]){s, n, e});

    mt_tensor_set_requires_grad(x, 1);
    slice_ctx cs[] = {{1, 2, 6}, {0, 1, 3}, {-1, -3, 100}, {2, 0, 1}};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        char what[64];
        snprintf(what, sizeof what, "slice case %zu", k);
        mt_test_gradcheck(what, f_slice, &cs[k], 1, &x, 1e-3, 1e-3, 1e-2);
    }
    /* gradient outside the slice is exactly zero */
    mt_tensor_zero_grad(x);
    mt_tensor *y = f_slice(&x, &cs[0]);
    mt_tensor *t = mt_sum_all(y);
    CHECK(mt_backward(t, NULL, 0) == MT_OK);
    int ok = 1;
    for (int64_t i = 0; i < 105; i++) {
        int64_t idx[3];
        unravel(i, 3, x->shape, idx);
        double g = mt_tensor_get_flat(x->grad, i), v = mt_tensor_get_flat(x, i);
        ok &= (idx[1] >= 2 && idx[1] < 6) ? fabs(g - 2 * v) < 1e-6 : g == 0.0;
    }
    CHECK_MSG(ok, "slice gradient: 2x inside, 0 outside");
    release_all(3, (mt_tensor *[]){y, t, x});
}

/* ------------------------------------------------------------- contiguous */

static mt_tensor *f_contiguous(mt_tensor **in, void *vc) {
    mt_tensor *t = mt_transpose(in[0], 0, 1);
    mt_tensor *c = mt_contiguous(t);
    mt_tensor *y = mt_mul(c, c);
    release_all(2, (mt_tensor *[]){t, c});
    return y;
}

static void test_contiguous(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 6), -1, 1);
    mt_tensor *c = mt_contiguous(x);
    CHECK_MSG(c == x, "contiguous of a contiguous tensor is the tensor itself");
    mt_tensor *t = mt_transpose(x, 0, 1);
    mt_tensor *tc = mt_contiguous(t);
    CHECK(mt_tensor_is_contiguous(tc) && tc->storage != x->storage);
    CHECK(mt_tensor_get(tc, (int64_t[]){5, 2}) == mt_tensor_get(x, (int64_t[]){2, 5}));
    release_all(3, (mt_tensor *[]){c, t, tc});
    mt_tensor_set_requires_grad(x, 1);
    mt_test_gradcheck("contiguous", f_contiguous, NULL, 1, &x, 1e-3, 1e-3, 1e-2);
    mt_tensor_release(x);
}

/* ----------------------------------------------------------------- concat */

typedef struct {
    int n, dim;
} cat_ctx;

static mt_tensor *f_concat(mt_tensor **in, void *vc) {
    cat_ctx *c = vc;
    mt_tensor *y = mt_concat(c->n, in, c->dim);
    mt_tensor *z = mt_mul(y, y);
    mt_tensor_release(y);
    return z;
}

static void check_concat(int n, mt_tensor **xs, int dim) {
    mt_tensor *y = mt_concat(n, xs, dim);
    int nd = xs[0]->ndim;
    int d = dim < 0 ? dim + nd : dim;
    int64_t total = 0;
    for (int k = 0; k < n; k++) total += xs[k]->shape[d];
    CHECK(y->shape[d] == total && mt_tensor_is_contiguous(y));
    int ok = 1;
    for (int64_t i = 0; i < mt_tensor_numel(y); i++) {
        int64_t idx[MT_MAX_DIMS];
        unravel(i, nd, y->shape, idx);
        int k = 0;
        while (idx[d] >= xs[k]->shape[d]) idx[d] -= xs[k++]->shape[d];
        ok &= mt_tensor_get_flat(y, i) == mt_tensor_get(xs[k], idx);
    }
    CHECK_MSG(ok, "concat values along dim %d", dim);
    mt_tensor_release(y);
}

static void test_concat(void) {
    mt_tensor *a = mt_test_rand(MT_SHAPE(2, 3, 5), -1, 1);
    mt_tensor *b = mt_test_rand(MT_SHAPE(2, 1, 5), -1, 1);
    mt_tensor *c = mt_test_rand(MT_SHAPE(2, 4, 5), -1, 1);
    mt_tensor *xs[3] = {a, b, c};
    check_concat(3, xs, 1);
    mt_tensor *a2 = mt_test_rand(MT_SHAPE(2, 3, 2), -1, 1);
    check_concat(2, (mt_tensor *[]){a, a2}, -1);
    check_concat(2, (mt_tensor *[]){a, a}, 0);
    /* non-contiguous input */
    mt_tensor *at = mt_test_rand(MT_SHAPE(5, 3, 2), -1, 1);
    mt_tensor *tt = mt_transpose(at, 0, 2); /* (2, 3, 5) */
    check_concat(2, (mt_tensor *[]){tt, a}, 1);
    /* an empty piece */
    mt_tensor *e = mt_tensor_new(MT_F32, MT_SHAPE(2, 0, 5), MT_DEVICE_CPU);
    check_concat(3, (mt_tensor *[]){a, e, b}, 1);
    release_all(4, (mt_tensor *[]){a2, at, tt, e});

    mt_tensor_set_requires_grad(a, 1);
    mt_tensor_set_requires_grad(c, 1); /* b needs no gradient */
    cat_ctx cc = {3, 1};
    mt_test_gradcheck("concat dim 1", f_concat, &cc, 3, xs, 1e-3, 1e-3, 1e-2);
    CHECK_MSG(b->grad == NULL, "concat: no gradient for an input that does not require it");
    mt_tensor *p = mt_test_rand(MT_SHAPE(2, 3, 5), -1, 1), *q = mt_test_rand(MT_SHAPE(2, 3, 1), -1, 1);
    mt_tensor_set_requires_grad(p, 1);
    mt_tensor_set_requires_grad(q, 1);
    cat_ctx cl = {2, -1};
    mt_test_gradcheck("concat dim -1", f_concat, &cl, 2, (mt_tensor *[]){p, q}, 1e-3, 1e-3, 1e-2);
    cat_ctx c0 = {2, 0};
    mt_test_gradcheck("concat of a tensor with itself", f_concat, &c0, 2, (mt_tensor *[]){p, p}, 1e-3,
                      1e-3, 1e-2);
    release_all(5, (mt_tensor *[]){a, b, c, p, q});
}

/* -------------------------------------------------------------------- pad */

/* Naive reference for mt_pad. */
static double *ref_pad(const mt_tensor *x, int k, const int64_t *pads, float value,
                       int64_t *oshape) {
    int nd = x->ndim;
    int64_t lo[MT_MAX_DIMS] = {0};
    for (int d = 0; d < nd; d++) {
        int j = nd - 1 - d;
        int64_t l = j < k ? pads[2 * j] : 0, h = j < k ? pads[2 * j + 1] : 0;
        oshape[d] = x->shape[d] + l + h;
        lo[d] = l;
    }
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= oshape[d];
    double *r = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[MT_MAX_DIMS];
        unravel(i, nd, oshape, idx);
        int in = 1;
        for (int d = 0; d < nd; d++) {
            idx[d] -= lo[d];
            in &= idx[d] >= 0 && idx[d] < x->shape[d];
        }
        r[i] = in ? mt_tensor_get(x, idx) : value;
    }
    return r;
}

typedef struct {
    int k;
    int64_t pads[2 * MT_MAX_DIMS];
    float value;
} pad_ctx;

static mt_tensor *f_pad(mt_tensor **in, void *vc) {
    pad_ctx *c = vc;
    mt_tensor *p = mt_pad(in[0], c->k, c->pads, c->value);
    mt_tensor *y = mt_mul(p, p);
    mt_tensor_release(p);
    return y;
}

static void test_pad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 4, 5), -1, 1);
    pad_ctx cases[] = {
        {3, {1, 2, 0, 3, 2, 1}, 0.5f},     /* pad only */
        {2, {-1, -2, 1, -1}, -2.0f},       /* crop and pad */
        {1, {-2, 0}, 0.0f},                /* crop only */
        {4, {1, 1, 1, 1, 1, 1, 1, 1}, 0.0f},
        {3, {0, 0, 0, 0, 0, 0}, 0.0f},     /* identity */
        {2, {-3, -2, 1, 1}, 7.0f},         /* crops a dim away: only padding left */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t os[MT_MAX_DIMS];
        double *r = ref_pad(x, cases[c].k, cases[c].pads, cases[c].value, os);
        mt_tensor *y = mt_pad(x, cases[c].k, cases[c].pads, cases[c].value);
        int shape_ok = y->ndim == x->ndim;
        for (int d = 0; d < x->ndim; d++) shape_ok &= y->shape[d] == os[d];
        CHECK_MSG(shape_ok, "pad case %zu shape", c);
        char what[64];
        snprintf(what, sizeof what, "pad case %zu values", c);
        if (shape_ok) mt_test_allclose(y, r, 1e-12, 0, what);
        free(r);
        mt_tensor_release(y);
    }
    /* integer tensors pad too (labels) */
    mt_tensor *lab = mt_tensor_to_dtype(x, MT_I32);
    mt_tensor *lp = mt_pad(lab, 1, (int64_t[]){1, 0}, 3.0f);
    CHECK(lp->dtype == MT_I32 && lp->shape[3] == 6 && mt_tensor_get(lp, (int64_t[]){1, 2, 3, 0}) == 3.0);
    release_all(2, (mt_tensor *[]){lab, lp});

    mt_tensor_set_requires_grad(x, 1);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char what[64];
        snprintf(what, sizeof what, "pad case %zu", c);
        mt_test_gradcheck(what, f_pad, &cases[c], 1, &x, 1e-3, 1e-3, 1e-2);
    }
    mt_tensor_release(x);
}

/* A chain of views feeding one op: the gradients of every path add up. */
static mt_tensor *f_view_chain(mt_tensor **in, void *vc) {
    mt_tensor *x = in[0];
    mt_tensor *t = mt_transpose(x, 0, 1);                    /* (5, 4) */
    mt_tensor *s = mt_slice(t, 0, 1, 4);                     /* (3, 4) */
    mt_tensor *r = mt_reshape(s, MT_SHAPE(2, 6));            /* copy */
    mt_tensor *p = mt_pad(r, 1, (int64_t[]){1, -1}, 0.25f); /* (2, 6) */
    mt_tensor *q = mt_reshape(x, MT_SHAPE(2, 10));
    mt_tensor *qs = mt_slice(q, 1, 2, 8);                    /* (2, 6) */
    mt_tensor *cat = mt_concat(2, (mt_tensor *[]){p, qs}, 0);
    mt_tensor *y = mt_mul(cat, cat);
    release_all(8, (mt_tensor *[]){t, s, r, p, q, qs, cat, NULL});
    return y;
}

static void test_view_chain(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 5), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_test_gradcheck("view chain", f_view_chain, NULL, 1, &x, 1e-3, 1e-3, 1e-2);
    /* views of a leaf share its storage and do not copy autograd state */
    mt_tensor *v = mt_transpose(x, 0, 1);
    CHECK(v->storage == x->storage && v->grad_fn != NULL && x->grad_fn == NULL);
    mt_tensor_release(v);
    /* without grad mode: plain views, nothing recorded */
    int prev = mt_grad_set_enabled(0);
    mt_tensor *w = mt_slice(x, 0, 1, 3);
    CHECK(w->grad_fn == NULL && !w->requires_grad);
    mt_tensor_release(w);
    mt_grad_set_enabled(prev);
    mt_tensor_release(x);
}

int main(void) {
    mt_test_seed(202);
    test_reshape();
    test_permute();
    test_slice();
    test_contiguous();
    test_concat();
    test_pad();
    test_view_chain();
    return mt_test_finish();
}
