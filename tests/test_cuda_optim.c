/* LABELS: gpu */
/* CUDA fused optimizer kernels (core/cuda/optim.cu) against the CPU backend
 * (core/cpu/optim.c): SGD (no momentum with a NULL buffer, momentum with the
 * first step and later steps, dampening, Nesterov, weight decay) and Adam /
 * AdamW (coupled and decoupled weight decay, both torch.lerp branches, early
 * and late steps), on odd sizes and on tensors at a storage offset (not
 * 16-byte aligned). Then the multi-tensor forms against the single-tensor
 * kernel on the GPU, bit for bit: n = 1, n = 7, n = 40 (more tensors than one
 * launch carries), and a list larger than one launch's block table (a tensor
 * cut by a launch boundary), mixing aligned and misaligned tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static const mt_device GPU = {MT_CUDA, 0};

#define CPUK(slot) mt_kernel(MT_DEVICE_CPU, slot)
#define GPUK(slot) mt_kernel(GPU, slot)

/* A random f32 vector of n elements on the CPU and identical copies on the
 * GPU (ng of them, 1 or 2), all views at storage offset `off` into buffers of
 * n + off elements (not 16-byte aligned when off % 4 != 0). */
typedef struct {
    mt_tensor *c, *g[2];
} vpair;

static vpair vec(int64_t n, int64_t off, float lo, float hi, int ng) {
    mt_tensor *f = mt_test_rand(MT_SHAPE(n + off), lo, hi);
    vpair v = {NULL, {NULL, NULL}};
    v.c = mt_tensor_slice(f, 0, off, off + n, 1);
    for (int k = 0; k < ng; k++) {
        mt_tensor *fg = mt_test_to_gpu(f);
        v.g[k] = mt_tensor_slice(fg, 0, off, off + n, 1);
        mt_tensor_release(fg);
    }
    mt_tensor_release(f);
    return v;
}

static void rel(mt_tensor *t) {
    if (t) mt_tensor_release(t);
}

/* ------------------------------------------------------------ single */

typedef struct {
    float lr, momentum, dampening, weight_decay;
    int nesterov;
} sgd_cfg;

static void test_sgd_single(void) {
    const sgd_cfg cfgs[5] = {{0.1f, 0.0f, 0.0f, 0.0f, 0},
                             {0.05f, 0.0f, 0.0f, 0.01f, 0},
                             {0.1f, 0.9f, 0.0f, 0.0f, 0},
                             {0.02f, 0.9f, 0.1f, 1e-4f, 0},
                             {0.1f, 0.8f, 0.0f, 0.003f, 1}};
    const int64_t sizes[3] = {1, 1003, 70001};
    for (int ci = 0; ci < 5; ci++)
        for (int si = 0; si < 3; si++)
            for (int off = 0; off < 2; off++) {
                const sgd_cfg *c = &cfgs[ci];
                int64_t n = sizes[si];
                vpair P = vec(n, off, -1, 1, 1), G = vec(n, off ? 3 : 0, -1, 1, 1);
                vpair B = {NULL, {NULL, NULL}};
                if (c->momentum != 0.0f) B = vec(n, off ? 2 : 0, -1, 1, 1);
                mt_tensor *pc = P.c, *gc = G.c, *bc = B.c, *pg = P.g[0], *gg = G.g[0], *bg = B.g[0];
                for (int step = 0; step < 3; step++) {
                    int first = step == 0;
                    CPUK(sgd_step)(pc, bc, gc, c->lr, c->momentum, c->dampening, c->weight_decay,
                                   c->nesterov, first);
                    GPUK(sgd_step)(pg, bg, gg, c->lr, c->momentum, c->dampening, c->weight_decay,
                                   c->nesterov, first);
                }
                char what[160];
                snprintf(what, sizeof what, "sgd_step cfg %d n=%lld off=%d: param", ci, (long long)n, off);
                mt_test_close(pg, pc, MT_TOL_ELEMENTWISE, what);
                if (bc) {
                    snprintf(what, sizeof what, "sgd_step cfg %d n=%lld off=%d: buf", ci, (long long)n, off);
                    mt_test_close(bg, bc, MT_TOL_ELEMENTWISE, what);
                }
                rel(pc), rel(gc), rel(bc), rel(pg), rel(gg), rel(bg);
            }
}

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled;
} adam_cfg;

static void test_adam_single(void) {
    const adam_cfg cfgs[4] = {{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0},
                              {3e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, 0},
                              {1e-2f, 0.9f, 0.99f, 1e-6f, 0.05f, 1},
                              {1e-3f, 0.3f, 0.9f, 1e-8f, 0.01f, 1}}; /* 1 - beta1 >= 0.5 */
    const int64_t sizes[3] = {1, 1003, 70001};
    for (int ci = 0; ci < 4; ci++)
        for (int si = 0; si < 3; si++)
            for (int off = 0; off < 2; off++) {
                const adam_cfg *c = &cfgs[ci];
                int64_t n = sizes[si];
                vpair P = vec(n, off, -1, 1, 1), G = vec(n, 0, -1, 1, 1);
                vpair Mv = vec(n, off ? 1 : 0, -0.1f, 0.1f, 1), V = vec(n, 0, 0.0f, 0.01f, 1);
                mt_tensor *pc = P.c, *gc = G.c, *mc = Mv.c, *vc = V.c;
                mt_tensor *pg = P.g[0], *gg = G.g[0], *mg = Mv.g[0], *vg = V.g[0];
                const int64_t steps[3] = {1, 2, 1000};
                for (int k = 0; k < 3; k++) {
                    CPUK(adam_step)(pc, mc, vc, gc, c->lr, c->beta1, c->beta2, c->eps,
                                    c->weight_decay, c->decoupled, steps[k]);
                    GPUK(adam_step)(pg, mg, vg, gg, c->lr, c->beta1, c->beta2, c->eps,
                                    c->weight_decay, c->decoupled, steps[k]);
                }
                char what[160];
                snprintf(what, sizeof what, "adam_step cfg %d n=%lld off=%d: param", ci, (long long)n, off);
                mt_test_close(pg, pc, MT_TOL_ELEMENTWISE, what);
                snprintf(what, sizeof what, "adam_step cfg %d n=%lld off=%d: exp_avg", ci, (long long)n, off);
                mt_test_close(mg, mc, MT_TOL_ELEMENTWISE, what);
                snprintf(what, sizeof what, "adam_step cfg %d n=%lld off=%d: exp_avg_sq", ci, (long long)n, off);
                mt_test_close(vg, vc, MT_TOL_ELEMENTWISE, what);
                rel(pc), rel(gc), rel(mc), rel(vc), rel(pg), rel(gg), rel(mg), rel(vg);
            }
}

/* ------------------------------------------------------------ multi */

/* n tensor sets of the given sizes on the GPU; every 5th tensor misaligned.
 * state 0 param, 1 grad, 2 buf / exp_avg, 3 exp_avg_sq; two identical copies
 * (a for the multi-tensor call, b for the single-tensor calls). */
typedef struct {
    int n;
    mt_tensor **a[4], **b[4];
    mt_tensor **cpu[4]; /* CPU copies (only when with_cpu) */
} tset;

static tset tset_make(int n, const int64_t *sizes, int with_cpu) {
    tset s;
    memset(&s, 0, sizeof s);
    s.n = n;
    for (int k = 0; k < 4; k++) {
        s.a[k] = calloc((size_t)n, sizeof(mt_tensor *));
        s.b[k] = calloc((size_t)n, sizeof(mt_tensor *));
        s.cpu[k] = calloc((size_t)n, sizeof(mt_tensor *));
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            float lo = k == 3 ? 0.0f : -1.0f, hi = k == 3 ? 0.01f : 1.0f;
            vpair v = vec(sizes[i], i % 5 == 4 ? 1 + k : 0, lo, hi, 2);
            s.a[k][i] = v.g[0];
            s.b[k][i] = v.g[1];
            if (with_cpu) s.cpu[k][i] = v.c;
            else mt_tensor_release(v.c);
        }
    return s;
}

static void tset_free(tset *s) {
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < s->n; i++) {
            rel(s->a[k][i]);
            rel(s->b[k][i]);
            rel(s->cpu[k][i]);
        }
        free(s->a[k]);
        free(s->b[k]);
        free(s->cpu[k]);
    }
}

static void tset_compare(const tset *s, int nstates, const char *what) {
    static const char *names[4] = {"param", "grad", "state1", "state2"};
    int bad = 0;
    for (int k = 0; k < nstates; k++) {
        if (k == 1) continue; /* gradients are inputs */
        for (int i = 0; i < s->n && !bad; i++) {
            char w[320];
            snprintf(w, sizeof w, "%s: %s %d multi vs single", what, names[k], i);
            if (!mt_test_close(s->a[k][i], s->b[k][i], MT_TOL_EXACT, w)) bad = 1;
            if (s->cpu[k][i]) {
                snprintf(w, sizeof w, "%s: %s %d multi vs cpu", what, names[k], i);
                mt_test_close(s->a[k][i], s->cpu[k][i], MT_TOL_ELEMENTWISE, w);
            }
        }
    }
}

static void run_multi_case(int n, const int64_t *sizes, int with_cpu, const char *label) {
    char what[200];
    /* SGD without momentum (bufs NULL), then with momentum (first, then later) */
    {
        tset s = tset_make(n, sizes, with_cpu);
        GPUK(sgd_step_multi)(n, s.a[0], NULL, s.a[1], 0.1f, 0.0f, 0.0f, 0.01f, 0, 1);
        for (int i = 0; i < n; i++) GPUK(sgd_step)(s.b[0][i], NULL, s.b[1][i], 0.1f, 0.0f, 0.0f, 0.01f, 0, 1);
        if (with_cpu) CPUK(sgd_step_multi)(n, s.cpu[0], NULL, s.cpu[1], 0.1f, 0.0f, 0.0f, 0.01f, 0, 1);
        snprintf(what, sizeof what, "sgd_step_multi %s momentum 0", label);
        tset_compare(&s, 1, what);
        for (int step = 0; step < 2; step++) {
            int first = step == 0;
            GPUK(sgd_step_multi)(n, s.a[0], s.a[2], s.a[1], 0.05f, 0.9f, 0.1f, 1e-4f, 1, first);
            for (int i = 0; i < n; i++)
                GPUK(sgd_step)(s.b[0][i], s.b[2][i], s.b[1][i], 0.05f, 0.9f, 0.1f, 1e-4f, 1, first);
            if (with_cpu)
                CPUK(sgd_step_multi)(n, s.cpu[0], s.cpu[2], s.cpu[1], 0.05f, 0.9f, 0.1f, 1e-4f, 1, first);
        }
        snprintf(what, sizeof what, "sgd_step_multi %s momentum 0.9 nesterov", label);
        tset_compare(&s, 3, what);
        tset_free(&s);
    }
    /* AdamW then Adam */
    for (int decoupled = 1; decoupled >= 0; decoupled--) {
        tset s = tset_make(n, sizes, with_cpu);
        for (int64_t step = 1; step <= 3; step++) {
            GPUK(adam_step_multi)(n, s.a[0], s.a[2], s.a[3], s.a[1], 1e-3f, 0.9f, 0.999f, 1e-8f,
                                  0.01f, decoupled, step);
            for (int i = 0; i < n; i++)
                GPUK(adam_step)(s.b[0][i], s.b[2][i], s.b[3][i], s.b[1][i], 1e-3f, 0.9f, 0.999f,
                                1e-8f, 0.01f, decoupled, step);
            if (with_cpu)
                CPUK(adam_step_multi)(n, s.cpu[0], s.cpu[2], s.cpu[3], s.cpu[1], 1e-3f, 0.9f,
                                      0.999f, 1e-8f, 0.01f, decoupled, step);
        }
        snprintf(what, sizeof what, "adam_step_multi %s decoupled=%d", label, decoupled);
        tset_compare(&s, 4, what);
        tset_free(&s);
    }
}

static void test_multi(void) {
    /* n = 1 */
    const int64_t one[1] = {100003};
    run_multi_case(1, one, 1, "n=1");
    /* n = 7: tiny, odd, multi-chunk (> 65536) sizes */
    const int64_t seven[7] = {1, 7, 320, 4099, 65536, 65537, 200003};
    run_multi_case(7, seven, 1, "n=7");
    /* n = 40: more tensors than one launch carries (36) */
    int64_t forty[40];
    for (int i = 0; i < 40; i++) forty[i] = 1 + (i * 7919) % 3001;
    run_multi_case(40, forty, 1, "n=40");
    /* more chunks than one launch's block table (320 x 65536 elements): the
     * second tensor is cut by a launch boundary */
    const int64_t big[4] = {9000001, 13000003, 5, 1000};
    run_multi_case(4, big, 0, "n=4 large");
    /* empty list */
    GPUK(adam_step_multi)(0, NULL, NULL, NULL, NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 1);
    GPUK(sgd_step_multi)(0, NULL, NULL, NULL, 0.1f, 0.0f, 0.0f, 0.0f, 0, 1);
}

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(20240613);
    test_sgd_single();
    test_adam_single();
    test_multi();
    return mt_test_finish();
}
