/* LABELS: unit */
/* optim/: SGD (plain, momentum, dampening, nesterov, weight decay), Adam, AdamW against
 * double-precision re-derivations of PyTorch's update rules; clip_grad_norm_; state
 * export/import; LR schedules (constant, step, poly, cosine warm restarts, warm-up). */
#include <stdlib.h>
#include <string.h>

#include "mt_test.h"
#include "optim/optim.h"
#include "optim/schedule.h"

#define NSTEPS 7

/* ------------------------------------------------ reference (double) */

typedef struct {
    int64_t n;
    double *p, *a, *b; /* param, state a (buf / exp_avg), state b (exp_avg_sq) */
    int64_t steps;
} ref_param;

static void ref_init(ref_param *r, const mt_tensor *p) {
    r->n = mt_tensor_numel(p);
    r->p = mt_test_to_f64(p);
    r->a = calloc((size_t)r->n, sizeof(double));
    r->b = calloc((size_t)r->n, sizeof(double));
    r->steps = 0;
}

static void ref_free(ref_param *r) {
    free(r->p);
    free(r->a);
    free(r->b);
}

static void ref_step(ref_param *r, const double *g, const mt_optim_hparams *h, double lr, double wd) {
    r->steps++;
    for (int64_t i = 0; i < r->n; i++) {
        double p = r->p[i], gi = g[i];
        if (h->kind == MT_OPTIM_SGD) {
            double d = gi + wd * p;
            if (h->momentum != 0) {
                double buf = r->steps == 1 ? d : h->momentum * r->a[i] + (1 - h->dampening) * d;
                r->a[i] = buf;
                d = h->nesterov ? d + h->momentum * buf : buf;
            }
            r->p[i] = p - lr * d;
        } else {
            if (h->kind == MT_OPTIM_ADAMW) p *= 1 - lr * wd;
            else gi += wd * p;
            double m = h->beta1 * r->a[i] + (1 - h->beta1) * gi;
            double v = h->beta2 * r->b[i] + (1 - h->beta2) * gi * gi;
            r->a[i] = m;
            r->b[i] = v;
            double mhat = m / (1 - pow(h->beta1, (double)r->steps));
            double vhat = v / (1 - pow(h->beta2, (double)r->steps));
            r->p[i] = p - lr * mhat / (sqrt(vhat) + h->eps);
        }
    }
}

/* --------------------------------------------------------- optimizers */

/* Runs NSTEPS steps of the optimizer on three parameters (odd shapes, one large enough for
 * the multi-threaded path) with fresh random gradients each step and a changing lr, and
 * compares parameters and state with the double reference. Parameter 1 gets no gradient on
 * step 2 (it must be skipped, its step count not advanced). */
static void run_optimizer(const char *what, const mt_optim_hparams *h) {
    mt_tensor *params[3] = {mt_test_rand(MT_SHAPE(7, 5), -1, 1), mt_test_rand(MT_SHAPE(3), -1, 1),
                            mt_test_rand(MT_SHAPE(41, 33, 31), -1, 1)};
    for (int k = 0; k < 3; k++) mt_tensor_set_requires_grad(params[k], 1);
    mt_optim opt;
    mt_status st = mt_optim_init(&opt, 3, params, h);
    CHECK_MSG(st == MT_OK, "%s init: %s", what, mt_error_msg());
    if (st != MT_OK) return;
    mt_optim_set_weight_decay(&opt, 1, h->weight_decay * 0.5); /* per-parameter decay */
    ref_param ref[3];
    for (int k = 0; k < 3; k++) ref_init(&ref[k], params[k]);
    for (int s = 0; s < NSTEPS; s++) {
        double lr = h->lr * (1.0 - 0.1 * s);
        mt_optim_set_lr(&opt, lr);
        for (int k = 0; k < 3; k++) {
            if (k == 1 && s == 2) continue;
            mt_tensor *g = mt_test_rand(params[k]->ndim, params[k]->shape, -2, 2);
            params[k]->grad = g;
            double *gd = mt_test_to_f64(g);
            ref_step(&ref[k], gd, h, lr, k == 1 ? h->weight_decay * 0.5 : h->weight_decay);
            free(gd);
        }
        mt_optim_step(&opt);
        mt_optim_zero_grad(&opt);
        CHECK(params[0]->grad == NULL);
    }
    char buf[128];
    for (int k = 0; k < 3; k++) {
        snprintf(buf, sizeof buf, "%s param %d", what, k);
        mt_test_allclose(params[k], ref[k].p, 1e-5, 1e-4, buf);
        if (opt.state_a[k]) {
            snprintf(buf, sizeof buf, "%s state a %d", what, k);
            mt_test_allclose(opt.state_a[k], ref[k].a, 1e-5, 1e-4, buf);
        }
        if (opt.state_b[k]) {
            snprintf(buf, sizeof buf, "%s state b %d", what, k);
            mt_test_allclose(opt.state_b[k], ref[k].b, 1e-6, 1e-4, buf);
        }
        CHECK(opt.param_steps[k] == ref[k].steps);
    }
    CHECK(opt.param_steps[1] == NSTEPS - 1 && opt.step == NSTEPS);
    for (int k = 0; k < 3; k++) ref_free(&ref[k]);
    mt_optim_free(&opt);
    for (int k = 0; k < 3; k++) mt_tensor_release(params[k]);
}

static void test_optimizers(void) {
    mt_optim_hparams h = {0};
    h.kind = MT_OPTIM_SGD;
    h.lr = 0.1;
    run_optimizer("sgd plain", &h);
    h.weight_decay = 0.03;
    run_optimizer("sgd wd", &h);
    h.momentum = 0.9;
    run_optimizer("sgd momentum wd", &h);
    h.dampening = 0.3;
    run_optimizer("sgd momentum dampening", &h);
    h.dampening = 0;
    h.nesterov = 1;
    h.momentum = 0.99;
    h.lr = 0.01;
    run_optimizer("sgd nesterov (nnU-Net)", &h);

    memset(&h, 0, sizeof h);
    h.kind = MT_OPTIM_ADAM;
    h.lr = 1e-2;
    h.beta1 = 0.9;
    h.beta2 = 0.999;
    h.eps = 1e-8;
    run_optimizer("adam", &h);
    h.weight_decay = 0.05;
    run_optimizer("adam wd", &h);
    h.kind = MT_OPTIM_ADAMW;
    h.beta1 = 0.7; /* lerp weight >= 0.5 branch */
    run_optimizer("adamw", &h);
}

/* Hand-computed single steps on a 1-element parameter. */
static void test_hand_values(void) {
    mt_tensor *p = mt_tensor_full(MT_F32, MT_SHAPE(1), 1.0, MT_DEVICE_CPU);
    mt_optim opt;
    /* SGD momentum 0.9, nesterov, lr 0.1, wd 0.1: g = 0.5 -> d = 0.6; buf = 0.6;
     * update = 0.6 + 0.9*0.6 = 1.14; p = 1 - 0.114 = 0.886.
     * Step 2 with g = 0.5: d = 0.5 + 0.0886 = 0.5886; buf = 0.54 + 0.5886 = 1.1286;
     * update = 0.5886 + 0.9*1.1286 = 1.60434; p = 0.886 - 0.160434 = 0.725566. */
    CHECK(mt_optim_init_sgd(&opt, 1, &p, 0.1, 0.9, 0, 0.1, 1) == MT_OK);
    for (int s = 0; s < 2; s++) {
        p->grad = mt_tensor_full(MT_F32, MT_SHAPE(1), 0.5, MT_DEVICE_CPU);
        mt_optim_step(&opt);
        mt_optim_zero_grad(&opt);
        CHECK_NEAR(mt_tensor_get_flat(p, 0), s == 0 ? 0.886 : 0.725566, 1e-6);
    }
    mt_optim_free(&opt);
    /* Adam step 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2: p -= lr * g/(|g| + eps)
     * = lr * sign(g) (up to eps). lr 0.01, g = -3: p = 0.886... reset p to 2: 2.01. */
    mt_tensor_fill_(p, 2.0);
    CHECK(mt_optim_init_adam(&opt, 1, &p, 0.01, 0.9, 0.999, 1e-8, 0) == MT_OK);
    p->grad = mt_tensor_full(MT_F32, MT_SHAPE(1), -3.0, MT_DEVICE_CPU);
    mt_optim_step(&opt);
    mt_optim_zero_grad(&opt);
    CHECK_NEAR(mt_tensor_get_flat(p, 0), 2.01, 1e-6);
    mt_optim_free(&opt);
    /* AdamW step 1 with wd 0.5, lr 0.1, g = 1: p = 2.01 * (1 - 0.05) - 0.1 = 1.8095. */
    CHECK(mt_optim_init_adamw(&opt, 1, &p, 0.1, 0.9, 0.999, 1e-8, 0.5) == MT_OK);
    p->grad = mt_tensor_full(MT_F32, MT_SHAPE(1), 1.0, MT_DEVICE_CPU);
    mt_optim_step(&opt);
    mt_optim_zero_grad(&opt);
    CHECK_NEAR(mt_tensor_get_flat(p, 0), 1.8095, 1e-6);
    mt_optim_free(&opt);
    mt_tensor_release(p);
}

static void test_validation(void) {
    mt_tensor *p = mt_test_rand(MT_SHAPE(4), -1, 1);
    mt_optim opt;
    CHECK(mt_optim_init_sgd(&opt, 1, &p, -0.1, 0, 0, 0, 0) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "learning rate") != NULL);
    CHECK(mt_optim_init_sgd(&opt, 1, &p, 0.1, 0.9, 0.1, 0, 1) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "nesterov") != NULL);
    CHECK(mt_optim_init_sgd(&opt, 1, &p, 0.1, 0, 0, 0, 1) == MT_ERR_INVALID);
    CHECK(mt_optim_init_adam(&opt, 1, &p, 0.1, 1.0, 0.999, 1e-8, 0) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "beta1") != NULL);
    CHECK(mt_optim_init_adamw(&opt, 1, &p, 0.1, 0.9, -0.1, 1e-8, 0) == MT_ERR_INVALID);
    CHECK(mt_optim_init_adamw(&opt, 1, &p, 0.1, 0.9, 0.99, 1e-8, -1) == MT_ERR_INVALID);
    mt_tensor *twice[2] = {p, p};
    CHECK(mt_optim_init_sgd(&opt, 2, twice, 0.1, 0, 0, 0, 0) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "twice") != NULL);
    mt_tensor *pi = mt_tensor_zeros(MT_I32, MT_SHAPE(4), MT_DEVICE_CPU);
    CHECK(mt_optim_init_sgd(&opt, 1, &pi, 0.1, 0, 0, 0, 0) == MT_ERR_INVALID);
    mt_optim_kind k;
    CHECK(mt_optim_kind_from_name("adamw", &k) == MT_OK && k == MT_OPTIM_ADAMW);
    CHECK(mt_optim_kind_from_name("adamx", &k) == MT_ERR_CONFIG);
    CHECK(strstr(mt_error_msg(), "adamx") != NULL);
    mt_tensor_release(p);
    mt_tensor_release(pi);
}

/* Export after 3 steps, import into a fresh optimizer on copies of the parameters, and
 * check that both continue identically. */
static void test_state_roundtrip(mt_optim_kind kind) {
    mt_tensor *pa[2] = {mt_test_rand(MT_SHAPE(5, 3), -1, 1), mt_test_rand(MT_SHAPE(9), -1, 1)};
    mt_optim_hparams h = {0};
    h.kind = kind;
    h.lr = 0.05;
    h.momentum = 0.9;
    h.nesterov = 1;
    h.beta1 = 0.9;
    h.beta2 = 0.99;
    h.eps = 1e-8;
    h.weight_decay = 1e-2;
    mt_optim a, b;
    CHECK(mt_optim_init(&a, 2, pa, &h) == MT_OK);
    mt_tensor *grads[6][2];
    for (int s = 0; s < 6; s++)
        for (int k = 0; k < 2; k++) grads[s][k] = mt_test_rand(pa[k]->ndim, pa[k]->shape, -1, 1);
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < 2; k++) pa[k]->grad = mt_tensor_retain(grads[s][k]);
        mt_optim_step(&a);
        mt_optim_zero_grad(&a);
    }
    mt_optim_set_lr(&a, 0.02);
    mt_tensor *pb[2] = {mt_tensor_clone(pa[0]), mt_tensor_clone(pa[1])};
    CHECK(mt_optim_init(&b, 2, pb, &h) == MT_OK);
    int n = mt_optim_state_count(&a);
    CHECK(n == mt_optim_state_count(&b));
    CHECK(n == 2 + 2 * (kind == MT_OPTIM_SGD ? 2 : 3));
    int names_ok = 1;
    for (int k = 0; k < n; k++) {
        mt_optim_state_entry ea, eb;
        mt_optim_state_entry_get(&a, k, &ea);
        if (mt_optim_state_find(&b, ea.name, &eb) != MT_OK) {
            names_ok = 0;
            continue;
        }
        names_ok &= (!!ea.tensor + !!ea.i64 + !!ea.f64) == 1;
        if (ea.tensor) mt_tensor_copy_(eb.tensor, ea.tensor);
        if (ea.i64) *eb.i64 = *ea.i64;
        if (ea.f64) *eb.f64 = *ea.f64;
    }
    CHECK_MSG(names_ok, "state names match and each entry has one value");
    mt_optim_state_entry e;
    CHECK(mt_optim_state_find(&a, kind == MT_OPTIM_SGD ? "state.1.momentum_buffer" : "state.1.exp_avg_sq", &e) == MT_OK);
    CHECK(e.tensor && e.tensor->shape[0] == 9);
    CHECK(mt_optim_state_find(&a, "state.0.step", &e) == MT_OK && e.i64 && *e.i64 == 3);
    CHECK(mt_optim_state_find(&a, "state.2.step", &e) == MT_ERR_INVALID);
    CHECK(mt_optim_get_lr(&b) == 0.02 && b.step == 3);
    for (int s = 3; s < 6; s++) {
        for (int k = 0; k < 2; k++) {
            pa[k]->grad = mt_tensor_retain(grads[s][k]);
            pb[k]->grad = mt_tensor_retain(grads[s][k]);
        }
        mt_optim_step(&a);
        mt_optim_step(&b);
        mt_optim_zero_grad(&a);
        mt_optim_zero_grad(&b);
    }
    mt_test_allclose_t(pb[0], pa[0], 1e-12, 0, "roundtrip param 0 (bitwise)");
    mt_test_allclose_t(pb[1], pa[1], 1e-12, 0, "roundtrip param 1 (bitwise)");
    mt_optim_free(&a);
    mt_optim_free(&b);
    for (int s = 0; s < 6; s++)
        for (int k = 0; k < 2; k++) mt_tensor_release(grads[s][k]);
    for (int k = 0; k < 2; k++) {
        mt_tensor_release(pa[k]);
        mt_tensor_release(pb[k]);
    }
}

/* ------------------------------------------------------------ clipping */

static void test_clip(void) {
    mt_tensor *p[3] = {mt_test_rand(MT_SHAPE(6, 7), -1, 1), mt_test_rand(MT_SHAPE(5), -1, 1),
                       mt_test_rand(MT_SHAPE(50001), -1, 1)};
    const double norm_types[] = {2, 1, INFINITY, 3};
    for (int t = 0; t < 4; t++) {
        double pn = norm_types[t];
        double *g[3];
        int64_t n[3];
        double acc = 0;
        for (int k = 0; k < 3; k++) {
            if (k == 1) {
                p[k]->grad = NULL; /* no gradient: ignored */
                continue;
            }
            p[k]->grad = mt_test_rand(p[k]->ndim, p[k]->shape, -1, 1);
            n[k] = mt_tensor_numel(p[k]);
            g[k] = mt_test_to_f64(p[k]->grad);
            for (int64_t i = 0; i < n[k]; i++) {
                double a = fabs(g[k][i]);
                if (isinf(pn)) acc = a > acc ? a : acc;
                else acc += pow(a, pn);
            }
        }
        double total = isinf(pn) ? acc : pow(acc, 1 / pn);
        /* max_norm above the total: no change; below: scaled to max_norm. */
        double got = mt_optim_clip_grad_norm(p, 3, total * 2, pn);
        CHECK_NEAR(got, total, 1e-5 * total);
        mt_test_allclose(p[0]->grad, g[0], 1e-12, 0, "clip: unchanged below max_norm");
        double max_norm = total * 0.25;
        got = mt_optim_clip_grad_norm(p, 3, max_norm, pn);
        CHECK_NEAR(got, total, 1e-5 * total);
        double coef = max_norm / (total + 1e-6);
        for (int k = 0; k < 3; k++) {
            if (k == 1) continue;
            for (int64_t i = 0; i < n[k]; i++) g[k][i] *= coef;
            mt_test_allclose(p[k]->grad, g[k], 1e-7, 1e-5, "clip: scaled");
            free(g[k]);
        }
        /* after clipping, the norm is max_norm (up to the 1e-6 guard) */
        double again = mt_optim_clip_grad_norm(p, 3, 1e30, pn);
        CHECK_NEAR(again, max_norm, 1e-5 * max_norm);
        for (int k = 0; k < 3; k++) mt_tensor_zero_grad(p[k]);
    }
    CHECK(mt_optim_clip_grad_norm(p, 3, 1.0, 2) == 0.0); /* no gradients */
    /* hand value: grads (3, 4) -> norm 5; max_norm 1 -> (0.6, 0.8) */
    mt_tensor *q = mt_tensor_zeros(MT_F32, MT_SHAPE(2), MT_DEVICE_CPU);
    q->grad = mt_tensor_from_data(MT_F32, MT_SHAPE(2), (float[]){3, 4});
    double qn = mt_optim_clip_grad_norm(&q, 1, 1.0, 2);
    CHECK_NEAR(qn, 5.0, 1e-6);
    CHECK_NEAR(mt_tensor_get_flat(q->grad, 0), 0.6, 1e-6);
    CHECK_NEAR(mt_tensor_get_flat(q->grad, 1), 0.8, 1e-6);
    mt_tensor_release(q);
    for (int k = 0; k < 3; k++) mt_tensor_release(p[k]);
}

/* ----------------------------------------------------------- schedules */

/* PyTorch's CosineAnnealingWarmRestarts closed form for an epoch (its step(epoch) branch). */
static double torch_cosine_restarts(double base, double eta_min, int t0, int t_mult, int epoch) {
    double t_cur, t_i;
    if (epoch >= t0) {
        if (t_mult == 1) {
            t_cur = epoch % t0;
            t_i = t0;
        } else {
            int n = (int)floor(log((double)epoch / t0 * (t_mult - 1) + 1) / log((double)t_mult) + 1e-9);
            t_cur = epoch - t0 * (pow(t_mult, n) - 1) / (t_mult - 1);
            t_i = t0 * pow(t_mult, n);
        }
    } else {
        t_i = t0;
        t_cur = epoch;
    }
    return eta_min + (base - eta_min) * (1 + cos(M_PI * t_cur / t_i)) / 2;
}

static void test_schedules(void) {
    /* cosine warm restarts, T_0 = 10, T_mult = 2, eta_min = 0, base 1: cycles [0, 10),
     * [10, 30), [30, 70), [70, 150). */
    mt_schedule s = mt_schedule_default(MT_SCHED_COSINE_RESTARTS, 1.0);
    s.t0 = 10;
    s.t_mult = 2;
    CHECK(mt_schedule_validate(&s) == MT_OK);
    CHECK_NEAR(mt_schedule_lr(&s, 0), 1.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&s, 5), 0.5, 1e-12);                 /* (1 + cos(pi/2)) / 2 */
    CHECK_NEAR(mt_schedule_lr(&s, 9), 0.024471741852423, 1e-12);    /* (1 - cos(pi/10)) / 2 */
    CHECK_NEAR(mt_schedule_lr(&s, 10), 1.0, 1e-12);                /* restart */
    CHECK_NEAR(mt_schedule_lr(&s, 20), 0.5, 1e-12);                /* 10 into a 20-cycle */
    CHECK_NEAR(mt_schedule_lr(&s, 29), 0.006155829702431, 1e-12);   /* (1 - cos(pi/20)) / 2 */
    CHECK_NEAR(mt_schedule_lr(&s, 30), 1.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&s, 50), 0.5, 1e-12);                /* 20 into a 40-cycle */
    CHECK_NEAR(mt_schedule_lr(&s, 70), 1.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&s, 71), 0.999614518120362, 1e-12);   /* (1 + cos(pi/80)) / 2 */
    int ok = 1;
    for (int e = 0; e < 400; e++)
        ok &= fabs(mt_schedule_lr(&s, e) - torch_cosine_restarts(1.0, 0, 10, 2, e)) < 1e-12;
    CHECK_MSG(ok, "cosine restarts T_mult 2 = torch closed form, epochs 0..399");
    s.t_mult = 1;
    s.t0 = 7;
    s.eta_min = 0.1;
    s.base_lr = 0.5;
    ok = 1;
    for (int e = 0; e < 100; e++)
        ok &= fabs(mt_schedule_lr(&s, e) - torch_cosine_restarts(0.5, 0.1, 7, 1, e)) < 1e-12;
    CHECK_MSG(ok, "cosine restarts T_mult 1, eta_min 0.1");
    CHECK_NEAR(mt_schedule_lr(&s, 14), 0.5, 1e-12);
    s.t_mult = 3;
    s.t0 = 2; /* cycles [0,2), [2,8), [8,26) */
    ok = 1;
    for (int e = 0; e < 200; e++)
        ok &= fabs(mt_schedule_lr(&s, e) - torch_cosine_restarts(0.5, 0.1, 2, 3, e)) < 1e-12;
    CHECK_MSG(ok, "cosine restarts T_mult 3");
    CHECK_NEAR(mt_schedule_lr(&s, 26), 0.5, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&s, 5), 0.3, 1e-12); /* half of the [2, 8) cycle: (0.5 + 0.1) / 2 */

    /* poly (nnU-Net): base 0.01, 1000 epochs, power 0.9 */
    mt_schedule p = mt_schedule_default(MT_SCHED_POLY, 0.01);
    p.max_steps = 1000;
    CHECK(mt_schedule_validate(&p) == MT_OK);
    CHECK_NEAR(mt_schedule_lr(&p, 0), 0.01, 1e-15);
    CHECK_NEAR(mt_schedule_lr(&p, 500), 0.01 * pow(0.5, 0.9), 1e-15); /* 0.0053588673 */
    CHECK_NEAR(mt_schedule_lr(&p, 500), 0.005358867313, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&p, 999), 0.01 * pow(0.001, 0.9), 1e-15);
    CHECK(mt_schedule_lr(&p, 1000) == 0.0 && mt_schedule_lr(&p, 5000) == 0.0);

    /* step: base 1, step_size 3, gamma 0.5 */
    mt_schedule st = mt_schedule_default(MT_SCHED_STEP, 1.0);
    st.step_size = 3;
    st.gamma = 0.5;
    const double want_step[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25};
    for (int e = 0; e < 8; e++) CHECK_NEAR(mt_schedule_lr(&st, e), want_step[e], 1e-15);

    /* constant */
    mt_schedule c = mt_schedule_default(MT_SCHED_CONSTANT, 3e-4);
    CHECK(mt_schedule_lr(&c, 0) == 3e-4 && mt_schedule_lr(&c, 123456) == 3e-4);

    /* warm-up 4 steps from factor 0.2 in front of poly (decay phase 10 steps), base 1:
     * 0.2, 0.4, 0.6, 0.8, then poly from its step 0: 1, 0.9^0.9, ... */
    mt_schedule w = mt_schedule_default(MT_SCHED_POLY, 1.0);
    w.max_steps = 10;
    w.warmup_steps = 4;
    w.warmup_start_factor = 0.2;
    CHECK(mt_schedule_validate(&w) == MT_OK);
    const double want_w[] = {0.2, 0.4, 0.6, 0.8, 1.0, 0.909532576082, 0.818052146051};
    for (int e = 0; e < 7; e++) CHECK_NEAR(mt_schedule_lr(&w, e), want_w[e], 1e-11);
    CHECK(mt_schedule_lr(&w, 14) == 0.0);
    /* warm-up in front of cosine restarts: the first restart is at warmup + T_0 */
    mt_schedule wc = mt_schedule_default(MT_SCHED_COSINE_RESTARTS, 2.0);
    wc.t0 = 10;
    wc.t_mult = 2;
    wc.warmup_steps = 5;
    wc.warmup_start_factor = 0.5;
    CHECK_NEAR(mt_schedule_lr(&wc, 0), 1.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&wc, 3), 1.6, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&wc, 5), 2.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&wc, 10), 1.0, 1e-12);
    CHECK_NEAR(mt_schedule_lr(&wc, 15), 2.0, 1e-12);

    /* validation names the culprit */
    mt_schedule bad = mt_schedule_default(MT_SCHED_COSINE_RESTARTS, 1.0);
    bad.t0 = 0;
    CHECK(mt_schedule_validate(&bad) == MT_ERR_CONFIG && strstr(mt_error_msg(), "t0"));
    bad = mt_schedule_default(MT_SCHED_POLY, 1.0);
    bad.max_steps = 0;
    CHECK(mt_schedule_validate(&bad) == MT_ERR_CONFIG && strstr(mt_error_msg(), "max_steps"));
    bad = mt_schedule_default(MT_SCHED_STEP, 1.0);
    bad.gamma = 0;
    CHECK(mt_schedule_validate(&bad) == MT_ERR_CONFIG && strstr(mt_error_msg(), "gamma"));
    bad = mt_schedule_default(MT_SCHED_CONSTANT, 1.0);
    bad.warmup_steps = 3;
    bad.warmup_start_factor = 0;
    CHECK(mt_schedule_validate(&bad) == MT_ERR_CONFIG && strstr(mt_error_msg(), "warmup_start_factor"));
    mt_schedule_kind k;
    CHECK(mt_schedule_kind_from_name("cosine_restarts", &k) == MT_OK && k == MT_SCHED_COSINE_RESTARTS);
    CHECK(mt_schedule_kind_from_name("cosine", &k) == MT_ERR_CONFIG && strstr(mt_error_msg(), "cosine"));
}

int main(void) {
    mt_test_seed(2024);
    test_optimizers();
    test_hand_values();
    test_validation();
    test_state_roundtrip(MT_OPTIM_SGD);
    test_state_roundtrip(MT_OPTIM_ADAMW);
    test_clip();
    test_schedules();
    return mt_test_finish();
}
