/* Optimizer objects (SGD, Adam, AdamW), gradient clipping and state export.
 * The arithmetic is in the backend kernels (core/<backend>/optim.c); this
 * file keeps the state and validates user-set hyperparameters. */
#include "optim/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"

static mt_status validate(const mt_optim_hparams *h) {
    const char *kn = mt_optim_kind_name(h->kind);
    if (!(h->lr >= 0)) return mt_error_set(MT_ERR_INVALID, "%s: invalid learning rate %g", kn, h->lr);
    if (!(h->weight_decay >= 0))
        return mt_error_set(MT_ERR_INVALID, "%s: invalid weight_decay %g", kn, h->weight_decay);
    switch (h->kind) {
    case MT_OPTIM_SGD:
        if (!(h->momentum >= 0))
            return mt_error_set(MT_ERR_INVALID, "sgd: invalid momentum %g", h->momentum);
        if (!isfinite(h->dampening))
            return mt_error_set(MT_ERR_INVALID, "sgd: invalid dampening %g", h->dampening);
        if (h->nesterov && (h->momentum <= 0 || h->dampening != 0))
            return mt_error_set(MT_ERR_INVALID,
                                "sgd: nesterov momentum requires a momentum > 0 and zero dampening "
                                "(momentum %g, dampening %g)",
                                h->momentum, h->dampening);
        return MT_OK;
    case MT_OPTIM_ADAM:
    case MT_OPTIM_ADAMW:
        if (!(h->eps >= 0)) return mt_error_set(MT_ERR_INVALID, "%s: invalid eps %g", kn, h->eps);
        if (!(h->beta1 >= 0 && h->beta1 < 1))
            return mt_error_set(MT_ERR_INVALID, "%s: invalid beta1 %g (must be in [0, 1))", kn,
                                h->beta1);
        if (!(h->beta2 >= 0 && h->beta2 < 1))
            return mt_error_set(MT_ERR_INVALID, "%s: invalid beta2 %g (must be in [0, 1))", kn,
                                h->beta2);
        return MT_OK;
    }
    return mt_error_set(MT_ERR_INVALID, "optimizer: unknown kind %d", (int)h->kind);
}

const char *mt_optim_kind_name(mt_optim_kind kind) {
    switch (kind) {
    case MT_OPTIM_SGD: return "sgd";
    case MT_OPTIM_ADAM: return "adam";
    case MT_OPTIM_ADAMW: return "adamw";
    }
    return "?";
}

mt_status mt_optim_kind_from_name(const char *name, mt_optim_kind *kind) {
    static const mt_optim_kind kinds[] = {MT_OPTIM_SGD, MT_OPTIM_ADAM, MT_OPTIM_ADAMW};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        if (name && strcmp(name, mt_optim_kind_name(kinds[k])) == 0) {
            *kind = kinds[k];
            return MT_OK;
        }
    return mt_error_set(MT_ERR_CONFIG, "unknown optimizer '%s' (expected sgd, adam or adamw)",
                        name ? name : "(null)");
}

static int has_tensor_a(const mt_optim *o) { return o->h.kind != MT_OPTIM_SGD || o->h.momentum != 0; }
static int has_tensor_b(const mt_optim *o) { return o->h.kind != MT_OPTIM_SGD; }

mt_status mt_optim_init(mt_optim *opt, int n, mt_tensor *const *params, const mt_optim_hparams *h) {
    memset(opt, 0, sizeof *opt);
    MT_TRY(validate(h));
    if (n < 0) return mt_error_set(MT_ERR_INVALID, "optimizer: %d parameters", n);
    for (int i = 0; i < n; i++) {
        const mt_tensor *p = params[i];
        if (!p) return mt_error_set(MT_ERR_INVALID, "optimizer: parameter %d is NULL", i);
        if (p->dtype != MT_F32)
            return mt_error_set(MT_ERR_INVALID, "optimizer: parameter %d has dtype %s (f32 master "
                                "weights required)", i, mt_dtype_name(p->dtype));
        if (!mt_tensor_is_contiguous(p))
            return mt_error_set(MT_ERR_INVALID, "optimizer: parameter %d is not contiguous", i);
        if (p->grad_fn)
            return mt_error_set(MT_ERR_INVALID, "optimizer: parameter %d is not a leaf tensor", i);
        for (int j = 0; j < i; j++)
            if (params[j] == p)
                return mt_error_set(MT_ERR_INVALID,
                                    "optimizer: parameter %d appears twice (also at %d)", i, j);
    }
    opt->h = *h;
    opt->n_params = n;
    size_t m = (size_t)(n ? n : 1);
    opt->params = calloc(m, sizeof *opt->params);
    opt->weight_decay = calloc(m, sizeof *opt->weight_decay);
    opt->state_a = calloc(m, sizeof *opt->state_a);
    opt->state_b = calloc(m, sizeof *opt->state_b);
    opt->param_steps = calloc(m, sizeof *opt->param_steps);
    MT_CHECK(opt->params && opt->weight_decay && opt->state_a && opt->state_b && opt->param_steps);
    for (int i = 0; i < n; i++) {
        mt_tensor *p = params[i];
        opt->params[i] = mt_tensor_retain(p);
        opt->weight_decay[i] = h->weight_decay;
        mt_device dev = mt_tensor_device(p);
        if (has_tensor_a(opt)) opt->state_a[i] = mt_tensor_zeros(MT_F32, p->ndim, p->shape, dev);
        if (has_tensor_b(opt)) opt->state_b[i] = mt_tensor_zeros(MT_F32, p->ndim, p->shape, dev);
    }
    return MT_OK;
}

mt_status mt_optim_init_sgd(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                            double momentum, double dampening, double weight_decay, int nesterov) {
    mt_optim_hparams h = {0};
    h.kind = MT_OPTIM_SGD;
    h.lr = lr;
    h.momentum = momentum;
    h.dampening = dampening;
    h.weight_decay = weight_decay;
    h.nesterov = nesterov;
    return mt_optim_init(opt, n, params, &h);
}

static mt_status init_adam(mt_optim *opt, mt_optim_kind kind, int n, mt_tensor *const *params,
                           double lr, double beta1, double beta2, double eps, double weight_decay) {
    mt_optim_hparams h = {0};
    h.kind = kind;
    h.lr = lr;
    h.beta1 = beta1;
    h.beta2 = beta2;
    h.eps = eps;
    h.weight_decay = weight_decay;
    return mt_optim_init(opt, n, params, &h);
}

mt_status mt_optim_init_adam(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                             double beta1, double beta2, double eps, double weight_decay) {
    return init_adam(opt, MT_OPTIM_ADAM, n, params, lr, beta1, beta2, eps, weight_decay);
}

mt_status mt_optim_init_adamw(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                              double beta1, double beta2, double eps, double weight_decay) {
    return init_adam(opt, MT_OPTIM_ADAMW, n, params, lr, beta1, beta2, eps, weight_decay);
}

void mt_optim_free(mt_optim *opt) {
    for (int i = 0; i < opt->n_params; i++) {
        mt_tensor_release(opt->params[i]);
        mt_tensor_release(opt->state_a[i]);
        mt_tensor_release(opt->state_b[i]);
    }
    free(opt->params);
    free(opt->weight_decay);
    free(opt->state_a);
    free(opt->state_b);
    free(opt->param_steps);
    memset(opt, 0, sizeof *opt);
}

void mt_optim_set_lr(mt_optim *opt, double lr) {
    MT_CHECK_MSG(lr >= 0, "optimizer: learning rate %g", lr);
    opt->h.lr = lr;
}

double mt_optim_get_lr(const mt_optim *opt) { return opt->h.lr; }

void mt_optim_set_weight_decay(mt_optim *opt, int i, double weight_decay) {
    MT_CHECK_MSG(i >= 0 && i < opt->n_params, "optimizer: parameter index %d of %d", i,
                 opt->n_params);
    MT_CHECK_MSG(weight_decay >= 0, "optimizer: weight decay %g", weight_decay);
    opt->weight_decay[i] = weight_decay;
}

/* One fused multi-tensor kernel call per run of parameters that share the
 * device and the update's scalars (weight decay, step count). */
#define OPTIM_GROUP_MAX 256

static void optim_flush(mt_optim *opt, int n, mt_tensor **p, mt_tensor **a, mt_tensor **b,
                        mt_tensor **g, float wd, int64_t steps) {
    if (n == 0) return;
    const mt_optim_hparams *h = &opt->h;
    mt_device dev = mt_tensor_device(p[0]);
    if (h->kind == MT_OPTIM_SGD)
        mt_kernel(dev, sgd_step_multi)(n, p, h->momentum != 0 ? a : NULL, g, (float)h->lr,
                                       (float)h->momentum, (float)h->dampening, wd, h->nesterov,
                                       steps == 0);
    else
        mt_kernel(dev, adam_step_multi)(n, p, a, b, g, (float)h->lr, (float)h->beta1,
                                        (float)h->beta2, (float)h->eps, wd,
                                        h->kind == MT_OPTIM_ADAMW, steps + 1);
    for (int k = 0; k < n; k++) mt_tensor_release(g[k]);
}

void mt_optim_step(mt_optim *opt) {
    mt_tensor *gp[OPTIM_GROUP_MAX], *ga[OPTIM_GROUP_MAX], *gb[OPTIM_GROUP_MAX], *gg[OPTIM_GROUP_MAX];
    int n = 0;
    float group_wd = 0;
    int64_t group_steps = 0;
    mt_device group_dev = MT_DEVICE_CPU;
    for (int i = 0; i < opt->n_params; i++) {
        mt_tensor *p = opt->params[i];
        if (!p->grad) continue;
        mt_device dev = mt_tensor_device(p);
        MT_CHECK_MSG(mt_device_eq(dev, mt_tensor_device(p->grad)),
                     "optimizer: gradient of parameter %d on another device", i);
        MT_CHECK_MSG(mt_tensor_numel(p->grad) == mt_tensor_numel(p),
                     "optimizer: gradient of parameter %d has the wrong size", i);
        mt_tensor *g = p->grad;
        mt_tensor *gc = (g->dtype == MT_F32 && mt_tensor_is_contiguous(g)) ? mt_tensor_retain(g) : NULL;
        if (!gc) {
            gc = mt_tensor_new(MT_F32, p->ndim, p->shape, dev);
            mt_tensor_copy_(gc, g);
        }
        float wd = (float)opt->weight_decay[i];
        if (n > 0 && (n == OPTIM_GROUP_MAX || wd != group_wd || opt->param_steps[i] != group_steps ||
                      !mt_device_eq(dev, group_dev))) {
            optim_flush(opt, n, gp, ga, gb, gg, group_wd, group_steps);
            n = 0;
        }
        if (n == 0) {
            group_wd = wd;
            group_steps = opt->param_steps[i];
            group_dev = dev;
        }
        gp[n] = p;
        ga[n] = opt->state_a[i];
        gb[n] = opt->state_b[i];
        gg[n] = gc;
        n++;
        opt->param_steps[i]++;
    }
    optim_flush(opt, n, gp, ga, gb, gg, group_wd, group_steps);
    opt->step++;
}

void mt_optim_zero_grad(mt_optim *opt) {
    for (int i = 0; i < opt->n_params; i++) {
        mt_tensor_release(opt->params[i]->grad);
        opt->params[i]->grad = NULL;
    }
}

/* ------------------------------------------------------------ clipping */

/* A reduction of the whole of g (contiguous) into out (a 1-element slot). */
static void reduce_into(mt_tensor *out, mt_reduce_op op, const mt_tensor *g) {
    int64_t n = mt_tensor_numel(g);
    mt_tensor *flat = mt_tensor_view(g, 1, &n);
    MT_CHECK(flat);
    mt_kernel(mt_tensor_device(g), reduce)(op, out, flat);
    mt_tensor_release(flat);
}

/* Contribution of one gradient into out: sum |g|^p for finite p, max |g| for p = inf. */
static void grad_norm_part(mt_tensor *out, const mt_tensor *g, double p) {
    mt_device dev = mt_tensor_device(g);
    if (isinf(p)) {
        reduce_into(out, MT_RED_ABSMAX, g);
        return;
    }
    if (p == 2) {
        reduce_into(out, MT_RED_SUMSQ, g);
        return;
    }
    mt_tensor *a = mt_tensor_new(MT_F32, g->ndim, g->shape, dev);
    mt_kernel(dev, unary)(MT_UN_ABS, a, g, 0);
    if (p != 1) mt_kernel(dev, unary)(MT_UN_POW_SCALAR, a, a, (float)p);
    reduce_into(out, MT_RED_SUM, a);
    mt_tensor_release(a);
}

/* PyTorch's arithmetic, all on the gradients' device (no host
 * synchronisation): per-gradient parts into one small tensor, total =
 * sum(parts)^(1/p) (max for p = inf) in f32, coef = min(max_norm / (total +
 * 1e-6), 1) in f32, every gradient multiplied by coef. */
mt_tensor *mt_optim_clip_grad_norm_t(mt_tensor *const *params, int n, double max_norm, double norm_type) {
    MT_CHECK_MSG(norm_type > 0, "clip_grad_norm: norm_type %g", norm_type);
    int any = 0, first = -1;
    for (int i = 0; i < n; i++) {
        mt_tensor *g = params[i]->grad;
        if (!g) continue;
        any = 1;
        if (first < 0) first = i;
        MT_CHECK_MSG(mt_device_eq(mt_tensor_device(g), mt_tensor_device(params[first]->grad)),
                     "clip_grad_norm: gradients on more than one device");
    }
    if (!any) return NULL;
    mt_device dev = mt_tensor_device(params[first]->grad);
    int64_t len = n, one = 1;
    mt_tensor *parts = mt_tensor_zeros(MT_F32, 1, &len, dev);
    for (int i = 0; i < n; i++) {
        mt_tensor *g = params[i]->grad;
        if (!g || mt_tensor_numel(g) == 0) continue;
        mt_tensor *gc = mt_tensor_to_dtype(g, MT_F32);
        mt_tensor *gcc = mt_tensor_contiguous(gc);
        mt_tensor *slot = mt_tensor_slice(parts, 0, i, i + 1, 1);
        grad_norm_part(slot, gcc, norm_type);
        mt_tensor_release(slot);
        mt_tensor_release(gc);
        mt_tensor_release(gcc);
    }
    mt_tensor *total = mt_tensor_new(MT_F32, 1, &one, dev);
    if (isinf(norm_type)) {
        mt_kernel(dev, reduce)(MT_RED_MAX, total, parts);
    } else {
        mt_kernel(dev, reduce)(MT_RED_SUM, total, parts);
        if (norm_type == 2)
            mt_kernel(dev, unary)(MT_UN_SQRT, total, total, 0);
        else if (norm_type != 1)
            mt_kernel(dev, unary)(MT_UN_POW_SCALAR, total, total, (float)(1.0 / norm_type));
    }
    mt_tensor_release(parts);
    /* coef = min(max_norm / (total + 1e-6), 1) */
    mt_tensor *den = mt_tensor_new(MT_F32, 1, &one, dev);
    mt_kernel(dev, unary)(MT_UN_ADD_SCALAR, den, total, 1e-6f);
    mt_tensor *num = mt_tensor_full(MT_F32, 1, &one, max_norm, dev);
    mt_tensor *coef = mt_tensor_new(MT_F32, 1, &one, dev);
    mt_kernel(dev, binary)(MT_BIN_DIV, coef, num, den);
    mt_kernel(dev, unary)(MT_UN_CLAMP_MAX, coef, coef, 1.0f);
    mt_tensor_release(den);
    mt_tensor_release(num);
    for (int i = 0; i < n; i++) {
        mt_tensor *g = params[i]->grad;
        if (!g || mt_tensor_numel(g) == 0) continue;
        mt_tensor *c = (g->dtype == MT_F32 && mt_tensor_is_contiguous(g)) ? mt_tensor_retain(g) : NULL;
        if (!c) {
            c = mt_tensor_new(MT_F32, g->ndim, g->shape, dev);
            mt_tensor_copy_(c, g);
        }
        mt_tensor *ce = mt_tensor_expand(coef, c->ndim, c->shape);
        mt_kernel(dev, binary)(MT_BIN_MUL, c, c, ce);
        mt_tensor_release(ce);
        if (c != g) mt_tensor_copy_(g, c);
        mt_tensor_release(c);
    }
    mt_tensor_release(coef);
    return total;
}

double mt_optim_clip_grad_norm(mt_tensor *const *params, int n, double max_norm, double norm_type) {
    mt_tensor *t = mt_optim_clip_grad_norm_t(params, n, max_norm, norm_type);
    if (!t) return 0.0;
    double v = mt_tensor_item(t);
    mt_tensor_release(t);
    return v;
}

/* ---------------------------------------------------------- state export */

static int tensors_per_param(const mt_optim *o) { return has_tensor_a(o) + has_tensor_b(o); }

int mt_optim_state_count(const mt_optim *opt) {
    return 2 + opt->n_params * (1 + tensors_per_param(opt));
}

void mt_optim_state_entry_get(mt_optim *opt, int k, mt_optim_state_entry *e) {
    MT_CHECK_MSG(k >= 0 && k < mt_optim_state_count(opt), "optimizer state entry %d of %d", k,
                 mt_optim_state_count(opt));
    memset(e, 0, sizeof *e);
    if (k == 0) {
        snprintf(e->name, sizeof e->name, "step");
        e->i64 = &opt->step;
        return;
    }
    if (k == 1) {
        snprintf(e->name, sizeof e->name, "lr");
        e->f64 = &opt->h.lr;
        return;
    }
    int per = 1 + tensors_per_param(opt);
    int i = (k - 2) / per, j = (k - 2) % per;
    if (j == 0) {
        snprintf(e->name, sizeof e->name, "state.%d.step", i);
        e->i64 = &opt->param_steps[i];
    } else if (j == 1) {
        snprintf(e->name, sizeof e->name, "state.%d.%s", i,
                 opt->h.kind == MT_OPTIM_SGD ? "momentum_buffer" : "exp_avg");
        e->tensor = opt->state_a[i];
    } else {
        snprintf(e->name, sizeof e->name, "state.%d.exp_avg_sq", i);
        e->tensor = opt->state_b[i];
    }
}

mt_status mt_optim_state_find(mt_optim *opt, const char *name, mt_optim_state_entry *e) {
    int n = mt_optim_state_count(opt);
    for (int k = 0; k < n; k++) {
        mt_optim_state_entry_get(opt, k, e);
        if (strcmp(e->name, name) == 0) return MT_OK;
    }
    memset(e, 0, sizeof *e);
    return mt_error_set(MT_ERR_INVALID, "%s optimizer has no state entry '%s'",
                        mt_optim_kind_name(opt->h.kind), name);
}
