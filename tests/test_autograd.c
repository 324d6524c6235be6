/* LABELS: unit grad */
/* The backward engine (autograd/engine.c): accumulation over several uses,
 * diamond graphs, no-grad mode, retain_graph and second backward errors,
 * gradient-ready hooks, freeing of saved tensors and nodes, long chains. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "mt_test.h"

static void release_all(int n, mt_tensor **ts) {
    for (int k = 0; k < n; k++) mt_tensor_release(ts[k]);
}

static int64_t in_use(void) {
    mt_alloc_stats s;
    mt_host_alloc_stats(&s);
    return s.in_use;
}

/* y = sum(x * x + x): x used three times; dy/dx = 2x + 1. */
static void test_accumulation(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(3, 5), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor *xx = mt_mul(x, x);
    mt_tensor *y = mt_add(xx, x);
    mt_tensor *s = mt_sum_all(y);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    int ok = x->grad != NULL;
    for (int64_t i = 0; ok && i < 15; i++)
        ok &= fabs(mt_tensor_get_flat(x->grad, i) - (2 * mt_tensor_get_flat(x, i) + 1)) < 1e-6;
    CHECK_MSG(ok, "gradient of x*x + x is 2x + 1");
    /* a second backward of a new graph adds into x->grad */
    mt_tensor *s2 = mt_sum_all(x);
    CHECK(mt_backward(s2, NULL, 0) == MT_OK);
    ok = 1;
    for (int64_t i = 0; i < 15; i++)
        ok &= fabs(mt_tensor_get_flat(x->grad, i) - (2 * mt_tensor_get_flat(x, i) + 2)) < 1e-6;
    CHECK_MSG(ok, "leaf gradients accumulate across backward calls");
    mt_tensor_zero_grad(x);
    CHECK(x->grad == NULL);
    release_all(5, (mt_tensor *[]){x, xx, y, s, s2});
}

/* Diamond: u = x * w feeds two branches that meet again. */
static mt_tensor *f_diamond(mt_tensor **in, void *c) {
    mt_tensor *u = mt_mul(in[0], in[1]);
    mt_tensor *a = mt_tanh(u), *b = mt_sigmoid(u);
    mt_tensor *ab = mt_mul(a, b);
    mt_tensor *y = mt_add(ab, u);
    release_all(4, (mt_tensor *[]){u, a, b, ab});
    return y;
}

static void test_diamond(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 3), -1, 1), *w = mt_test_rand(MT_SHAPE(3), 0.5f, 1.5f);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor *ins[2] = {x, w};
    mt_test_gradcheck("diamond", f_diamond, NULL, 2, ins, 1e-3, 1e-3, 1e-2);
    /* analytic: d/du [tanh(u) sig(u) + u] = (1 - t^2) s + t s (1 - s) + 1 */
    mt_tensor_zero_grad(x);
    mt_tensor_zero_grad(w);
    mt_tensor *y = f_diamond(ins, NULL);
    mt_tensor *s = mt_sum_all(y);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    int ok = 1;
    double gw[3] = {0};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            double xv = mt_tensor_get(x, (int64_t[]){i, j}), wv = mt_tensor_get_flat(w, j);
            double u = xv * wv, t = tanh(u), sg = 1 / (1 + exp(-u));
            double du = (1 - t * t) * sg + t * sg * (1 - sg) + 1;
            ok &= fabs(mt_tensor_get(x->grad, (int64_t[]){i, j}) - du * wv) < 1e-5;
            gw[j] += du * xv;
        }
    for (int j = 0; j < 3; j++) ok &= fabs(mt_tensor_get_flat(w->grad, j) - gw[j]) < 1e-5;
    CHECK_MSG(ok, "diamond gradients match the analytic ones");
    release_all(4, (mt_tensor *[]){x, w, y, s});
}

static void test_no_grad(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(6), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    int prev = mt_grad_set_enabled(0);
    CHECK(prev == 1 && !mt_grad_enabled());
    mt_tensor *y = mt_exp(x);
    mt_tensor *z = mt_mul(y, x);
    mt_tensor *s = mt_sum_all(z);
    CHECK(y->grad_fn == NULL && z->grad_fn == NULL && s->grad_fn == NULL);
    CHECK(!y->requires_grad && !z->requires_grad && !s->requires_grad);
    CHECK(x->grad_acc == NULL);
    mt_grad_set_enabled(prev);
    CHECK(mt_grad_enabled());
    /* backward of something that does not require grad is an error */
    mt_error_clear();
    CHECK(mt_backward(s, NULL, 0) != MT_OK);
    CHECK(strlen(mt_error_msg()) > 0);
    CHECK(x->grad == NULL);
    release_all(4, (mt_tensor *[]){x, y, z, s});
}

static void test_backward_errors(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3), 0.5f, 1.5f);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor *y = mt_log(x);
    mt_tensor *z = mt_mul(y, y);
    /* non-scalar root needs an explicit gradient of the right shape */
    CHECK(mt_backward(z, NULL, 0) != MT_OK);
    mt_tensor *bad = mt_test_rand(MT_SHAPE(3, 2), -1, 1);
    CHECK(mt_backward(z, bad, 0) != MT_OK);
    CHECK(x->grad == NULL);
    /* retain_graph: two backwards, gradients add */
    mt_tensor *g = mt_test_rand(MT_SHAPE(2, 3), -1, 1);
    CHECK(mt_backward(z, g, 1) == MT_OK);
    mt_tensor *g1 = mt_tensor_clone(x->grad);
    CHECK(mt_backward(z, g, 0) == MT_OK);
    int ok = 1;
    for (int64_t i = 0; i < 6; i++) {
        double xv = mt_tensor_get_flat(x, i), gv = mt_tensor_get_flat(g, i);
        double expect = gv * 2 * log(xv) / xv;
        ok &= fabs(mt_tensor_get_flat(g1, i) - expect) < 1e-5;
        ok &= fabs(mt_tensor_get_flat(x->grad, i) - 2 * expect) < 1e-5;
    }
    CHECK_MSG(ok, "retain_graph: second backward adds the same gradient");
    /* a third backward through freed saved tensors is an error */
    mt_error_clear();
    CHECK(mt_backward(z, g, 0) != MT_OK);
    CHECK_MSG(strstr(mt_error_msg(), "retain_graph") != NULL, "error names retain_graph: %s",
              mt_error_msg());
    release_all(6, (mt_tensor *[]){x, y, z, bad, g, g1});
}

/* ------------------------------------------------------------------ hooks */

typedef struct {
    int calls;
    double snapshot[32]; /* leaf gradient when the hook fired */
    int64_t n;
} hook_rec;

static void record_hook(mt_tensor *leaf, void *ctx) {
    hook_rec *r = ctx;
    r->calls++;
    r->n = leaf->grad ? mt_tensor_numel(leaf->grad) : 0;
    for (int64_t i = 0; i < r->n && i < 32; i++) r->snapshot[i] = mt_tensor_get_flat(leaf->grad, i);
}

static void test_hooks(void) {
    /* w is used early, late and in between, so its contributions arrive at
     * different times during backward */
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 5), -1, 1), *w = mt_test_rand(MT_SHAPE(5), 0.5f, 1.5f);
    mt_tensor *b = mt_test_rand(MT_SHAPE(5), -1, 1);
    mt_tensor_set_requires_grad(w, 1);
    mt_tensor_set_requires_grad(b, 1);
    hook_rec rw = {0}, rb = {0};
    mt_tensor_set_grad_hook(w, record_hook, &rw);
    mt_tensor_set_grad_hook(b, record_hook, &rb);
    for (int pass = 1; pass <= 2; pass++) {
        mt_tensor *h1 = mt_mul(x, w);
        mt_tensor *h2 = mt_add(h1, b);
        mt_tensor *h3 = mt_tanh(h2);
        mt_tensor *h4 = mt_mul(h3, w);
        mt_tensor *h5 = mt_exp(h4);
        mt_tensor *h6 = mt_add(h5, w);
        mt_tensor *s = mt_sum_all(h6);
        CHECK(mt_backward(s, NULL, 0) == MT_OK);
        CHECK_MSG(rw.calls == pass && rb.calls == pass, "hooks fire once per backward: %d %d after pass %d",
                  rw.calls, rb.calls, pass);
        int ok = rw.n == 5 && rb.n == 5;
        for (int64_t i = 0; ok && i < 5; i++) {
            ok &= rw.snapshot[i] == mt_tensor_get_flat(w->grad, i);
            ok &= rb.snapshot[i] == mt_tensor_get_flat(b->grad, i);
        }
        CHECK_MSG(ok, "hook saw the complete gradient (pass %d)", pass);
        release_all(7, (mt_tensor *[]){h1, h2, h3, h4, h5, h6, s});
    }
    /* the snapshot is the full gradient: compare w's with finite differences */
    mt_tensor_zero_grad(w);
    mt_tensor_zero_grad(b);
    mt_tensor *h1 = mt_mul(x, w), *h3 = mt_tanh(h1), *h4 = mt_mul(h3, w), *h6 = mt_add(h4, w);
    mt_tensor *s = mt_sum_all(h6);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    CHECK(rw.calls == 3 && rb.calls == 2); /* b not in this graph: no call */
    int ok = 1;
    for (int j = 0; j < 5; j++) {
        double wj = mt_tensor_get_flat(w, j), g = 0;
        for (int i = 0; i < 4; i++) {
            double xv = mt_tensor_get(x, (int64_t[]){i, j}), t = tanh(xv * wj);
            g += t + wj * (1 - t * t) * xv + 1;
        }
        ok &= fabs(rw.snapshot[j] - g) < 1e-4;
    }
    CHECK_MSG(ok, "hook snapshot equals the analytic gradient");
    release_all(8, (mt_tensor *[]){h1, h3, h4, h6, s, x, w, b});
}

/* ---------------------------------------------------------------- memory */

static void test_saved_freed(void) {
    int64_t base = in_use();
    mt_tensor *x = mt_test_rand(MT_SHAPE(256, 257), -1, 1);
    mt_tensor *w = mt_test_rand(MT_SHAPE(256, 257), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    for (int retain = 0; retain < 2; retain++) {
        mt_tensor *t = mt_exp(x);   /* saves its output t */
        mt_tensor *y = mt_mul(t, w); /* saves t and w */
        mt_tensor *s = mt_sum_all(y);
        CHECK_MSG(t->storage->refcount == 3, "t's storage held by t and two saved slots (%d)",
                  t->storage->refcount);
        CHECK(w->storage->refcount == 2);
        CHECK(mt_backward(s, NULL, retain) == MT_OK);
        if (!retain) {
            CHECK_MSG(t->storage->refcount == 1 && w->storage->refcount == 1,
                      "saved tensors freed after backward (%d, %d)", t->storage->refcount,
                      w->storage->refcount);
        } else {
            CHECK_MSG(t->storage->refcount == 3, "retain_graph keeps saved tensors");
        }
        /* releasing the outputs frees their part of the graph; with
         * retain_graph t's own node (alive while t is) still saves t */
        release_all(2, (mt_tensor *[]){y, s});
        CHECK_MSG(t->storage->refcount == 1 + retain && w->storage->refcount == 1,
                  "graph freed with its outputs (%d, %d)", t->storage->refcount, w->storage->refcount);
        mt_tensor_release(t);
    }
    /* intermediates only the graph holds are freed by backward itself */
    int64_t before = in_use();
    mt_tensor *t = mt_exp(x);
    mt_tensor *y = mt_mul(t, w);
    mt_tensor_release(t);
    mt_tensor *s = mt_sum_all(y);
    mt_tensor_release(y); /* y's buffer is not saved by anyone: freed now */
    int64_t t_bytes = (int64_t)mt_host_alloc_class(256 * 257 * sizeof(float));
    int64_t held = in_use() - before; /* t (saved) + s */
    CHECK_MSG(held >= t_bytes, "t kept alive by the graph (%lld bytes held)", (long long)held);
    mt_tensor_zero_grad(x);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    /* now: x->grad allocated (one block), t freed */
    int64_t after = in_use() - before;
    CHECK_MSG(after <= held, "backward freed the saved intermediate (%lld -> %lld bytes)",
              (long long)held, (long long)after);
    mt_tensor_release(s);
    mt_tensor_zero_grad(x);
    CHECK_MSG(in_use() - before <= 0, "nothing left after releasing root and grads (%lld bytes)",
              (long long)(in_use() - before));
    release_all(2, (mt_tensor *[]){x, w});
    CHECK_MSG(in_use() == base, "no leak: in_use %lld vs %lld", (long long)in_use(), (long long)base);
}

/* A leaf released before backward: its gradient has nowhere to go, no crash. */
static void test_released_leaf(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(7), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor *y = mt_mul_scalar(x, 3.0f);
    mt_tensor *s = mt_sum_all(y);
    mt_tensor_release(x);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    release_all(2, (mt_tensor *[]){y, s});
}

/* A long chain: backward and graph release must not recurse per node. */
static void test_long_chain(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(3), -1, 1);
    mt_tensor_set_requires_grad(x, 1);
    mt_tensor *h = mt_tensor_retain(x);
    const int n = 20000;
    for (int k = 0; k < n; k++) {
        mt_tensor *nh = mt_add_scalar(h, 1e-4f);
        mt_tensor_release(h);
        h = nh;
    }
    mt_tensor *s = mt_sum_all(h);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    int ok = 1;
    for (int i = 0; i < 3; i++) ok &= mt_tensor_get_flat(x->grad, i) == 1.0;
    CHECK_MSG(ok, "gradient through %d nodes", n);
    CHECK_NEAR(mt_tensor_get_flat(h, 0), mt_tensor_get_flat(x, 0) + 2.0, 1e-3);
    release_all(3, (mt_tensor *[]){h, s, x});
}

/* Inputs that do not require grad get no edge and no gradient. */
static void test_partial_requires(void) {
    mt_tensor *a = mt_test_rand(MT_SHAPE(5), -1, 1), *b = mt_test_rand(MT_SHAPE(5), -1, 1);
    mt_tensor_set_requires_grad(a, 1);
    mt_tensor *p = mt_mul(a, b);
    CHECK(p->grad_fn && mt_node_needs_grad(p->grad_fn, 0) && !mt_node_needs_grad(p->grad_fn, 1));
    mt_tensor *s = mt_sum_all(p);
    CHECK(mt_backward(s, NULL, 0) == MT_OK);
    CHECK(b->grad == NULL && a->grad != NULL);
    CHECK(mt_test_allclose_t(a->grad, b, 1e-7, 0, "d(a*b)/da = b"));
    /* a constant op result does not require grad */
    mt_tensor *c = mt_mul(b, b);
    CHECK(!c->requires_grad && c->grad_fn == NULL);
    release_all(5, (mt_tensor *[]){a, b, p, s, c});
}

int main(void) {
    mt_test_seed(404);
    test_accumulation();
    test_diamond();
    test_no_grad();
    test_backward_errors();
    test_hooks();
    test_saved_freed();
    test_released_leaf();
    test_long_chain();
    test_partial_requires();
    return mt_test_finish();
}
