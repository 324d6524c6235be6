/* Segmentation losses (BCE-with-logits, cross-entropy, soft Dice and their
 * combinations) composed from differentiable ops; formulas and semantics in
 * losses.h. Targets never receive gradients. */
#include "losses/losses.h"

#include <string.h>

#include "autograd/ops.h"

/* Releases each non-NULL tensor of a NULL-free list. */
static void release_all(int n, mt_tensor **ts) {
    for (int k = 0; k < n; k++) mt_tensor_release(ts[k]);
}
#define RELEASE(...)                                                                         \
    release_all((int)(sizeof((mt_tensor *[]){__VA_ARGS__}) / sizeof(mt_tensor *)),          \
                (mt_tensor *[]){__VA_ARGS__})

/* ----------------------------------------------------------- targets */

typedef enum { TGT_BAD = 0, TGT_DENSE, TGT_LABELS } tgt_form;

/* Dense: the logits' shape. Labels: (N, 1, *) or (N, *). */
static tgt_form target_form(const mt_tensor *logits, const mt_tensor *target) {
    int nd = logits->ndim;
    if (nd < 2) return TGT_BAD;
    if (target->ndim == nd) {
        for (int d = 0; d < nd; d++)
            if (d != 1 && target->shape[d] != logits->shape[d]) return TGT_BAD;
        if (target->shape[1] == logits->shape[1]) return TGT_DENSE;
        return target->shape[1] == 1 ? TGT_LABELS : TGT_BAD;
    }
    if (target->ndim == nd - 1) {
        if (target->shape[0] != logits->shape[0]) return TGT_BAD;
        for (int d = 1; d < target->ndim; d++)
            if (target->shape[d] != logits->shape[d + 1]) return TGT_BAD;
        return TGT_LABELS;
    }
    return TGT_BAD;
}

/* Labels as (N, 1, *) in an integer dtype the one-hot kernel takes. */
static mt_tensor *labels_n1(const mt_tensor *logits, const mt_tensor *target) {
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, logits->shape, sizeof shape);
    shape[1] = 1;
    mt_tensor *r = mt_tensor_reshape(target, logits->ndim, shape);
    if (r->dtype == MT_I32 || r->dtype == MT_U8) return r;
    mt_tensor *i = mt_tensor_to_dtype(r, MT_I32);
    mt_tensor_release(r);
    return i;
}

/* The target as f32 (N, C, *): dense targets cast, labels one-hot encoded
 * (or cast when C == 1). */
static mt_tensor *dense_target(const mt_tensor *logits, const mt_tensor *target, int to_onehot_y) {
    tgt_form form = target_form(logits, target);
    char b1[96], b2[96];
    MT_CHECK_MSG(form != TGT_BAD, "loss: target %s does not fit logits %s",
                 mt_tensor_shape_str(target, b1, sizeof b1), mt_tensor_shape_str(logits, b2, sizeof b2));
    int64_t c = logits->shape[1];
    if (form == TGT_DENSE || c == 1) {
        mt_tensor *r = mt_tensor_reshape(target, logits->ndim, logits->shape);
        mt_tensor *f = mt_tensor_to_dtype(r, MT_F32);
        mt_tensor_release(r);
        return f;
    }
    MT_CHECK_MSG(to_onehot_y, "loss: label target with %lld classes needs to_onehot_y", (long long)c);
    mt_tensor *l = labels_n1(logits, target);
    mt_tensor *oh = mt_one_hot(l, (int)c);
    mt_tensor_release(l);
    return oh;
}

/* A (C) weight as f32 (1, C, 1, ..., 1) on the logits' device. */
static mt_tensor *channel_view(const mt_tensor *w, const mt_tensor *logits) {
    int64_t c = logits->shape[1];
    MT_CHECK_MSG(mt_tensor_numel(w) == c, "loss: weight of %lld elements for %lld channels",
                 (long long)mt_tensor_numel(w), (long long)c);
    int64_t shape[MT_MAX_DIMS];
    for (int d = 0; d < logits->ndim; d++) shape[d] = 1;
    shape[1] = c;
    mt_tensor *dv = mt_tensor_to_device(w, mt_tensor_device(logits));
    mt_tensor *f = mt_tensor_to_dtype(dv, MT_F32);
    mt_tensor *r = mt_tensor_reshape(f, logits->ndim, shape);
    RELEASE(dv, f);
    return r;
}

static mt_tensor *as_f32(const mt_tensor *x) { return mt_to_dtype(x, MT_F32); }

/* -------------------------------------------------------------- BCE */

/* torch: l = (1 - y) x + (1 + (pw - 1) y) softplus(-x); without pw: softplus(x) - x y. */
mt_tensor *mt_loss_bce_with_logits(const mt_tensor *logits, const mt_tensor *target,
                                   const mt_tensor *pos_weight) {
    char b1[96], b2[96];
    MT_CHECK_MSG(mt_tensor_same_shape(logits, target), "bce: target %s vs logits %s",
                 mt_tensor_shape_str(target, b1, sizeof b1), mt_tensor_shape_str(logits, b2, sizeof b2));
    mt_tensor *x = as_f32(logits);
    mt_tensor *y = mt_tensor_to_dtype(target, MT_F32);
    mt_tensor *l;
    if (!pos_weight) {
        mt_tensor *sp = mt_softplus(x), *xy = mt_mul(x, y);
        l = mt_sub(sp, xy);
        RELEASE(sp, xy);
    } else {
        int g = mt_grad_set_enabled(0); /* constants */
        mt_tensor *pw = channel_view(pos_weight, logits);
        mt_tensor *pw1 = mt_add_scalar(pw, -1.0f), *t = mt_mul(pw1, y);
        mt_tensor *lw = mt_add_scalar(t, 1.0f);
        mt_tensor *ny = mt_neg(y), *omy = mt_add_scalar(ny, 1.0f);
        mt_grad_set_enabled(g);
        mt_tensor *nx = mt_neg(x), *sp = mt_softplus(nx);
        mt_tensor *a = mt_mul(omy, x), *b = mt_mul(lw, sp);
        l = mt_add(a, b);
        RELEASE(pw, pw1, t, lw, ny, omy, nx, sp, a, b);
    }
    mt_tensor *loss = mt_mean_all(l);
    RELEASE(x, y, l);
    return loss;
}

/* --------------------------------------------------------------- CE */

mt_tensor *mt_loss_cross_entropy(const mt_tensor *logits, const mt_tensor *target,
                                 const mt_tensor *weight) {
    tgt_form form = target_form(logits, target);
    char b1[96], b2[96];
    MT_CHECK_MSG(form != TGT_BAD, "cross_entropy: target %s does not fit logits %s",
                 mt_tensor_shape_str(target, b1, sizeof b1), mt_tensor_shape_str(logits, b2, sizeof b2));
    int64_t c = logits->shape[1];
    MT_CHECK_MSG(c >= 2, "cross_entropy: %lld channel(s); needs at least 2", (long long)c);
    int64_t voxels = mt_tensor_numel(logits) / c; /* N * spatial */
    mt_tensor *x = as_f32(logits);
    mt_tensor *logp = mt_log_softmax(x, 1);
    /* coef (N, C, *): the constant multiplying log p; den: what the sum is divided by. */
    int g = mt_grad_set_enabled(0);
    mt_tensor *coef, *den = NULL;
    if (form == TGT_LABELS) {
        mt_tensor *l = labels_n1(logits, target);
        coef = mt_one_hot(l, (int)c);
        mt_tensor_release(l);
    } else {
        coef = mt_tensor_to_dtype(target, MT_F32);
    }
    if (weight) {
        mt_tensor *w = channel_view(weight, logits);
        mt_tensor *cw = mt_mul(coef, w);
        mt_tensor_release(coef);
        coef = cw;
        if (form == TGT_LABELS) den = mt_sum_all(coef); /* sum of w_{y_i} */
        mt_tensor_release(w);
    }
    mt_grad_set_enabled(g);
    mt_tensor *prod = mt_mul(logp, coef);
    mt_tensor *s = mt_sum_all(prod);
    mt_tensor *loss;
    if (den) {
        mt_tensor *q = mt_div(s, den);
        loss = mt_neg(q);
        RELEASE(q, den);
    } else {
        loss = mt_mul_scalar(s, (float)(-1.0 / (double)voxels));
    }
    RELEASE(x, logp, coef, prod, s);
    return loss;
}

/* ------------------------------------------------------------- Dice */

mt_tensor *mt_loss_dice(const mt_tensor *logits, const mt_tensor *target, const mt_dice_options *opt) {
    int nd = logits->ndim;
    int64_t c = logits->shape[1];
    MT_CHECK_MSG(nd >= 3, "dice: logits need spatial dims, got %d dims", nd);
    mt_tensor *x = as_f32(logits);
    mt_tensor *p;
    switch (opt->activation) {
    case MT_LOSS_ACT_SIGMOID: p = mt_sigmoid(x); break;
    case MT_LOSS_ACT_SOFTMAX: p = c > 1 ? mt_softmax(x, 1) : mt_tensor_retain(x); break;
    default: p = mt_tensor_retain(x); break;
    }
    mt_tensor *t = dense_target(logits, target, opt->to_onehot_y);
    if (!opt->include_background && c > 1) {
        mt_tensor *ps = mt_slice(p, 1, 1, c), *ts = mt_tensor_slice(t, 1, 1, c, 1);
        RELEASE(p, t);
        p = ps;
        t = ts;
    }
    int dims[MT_MAX_DIMS], nred = 0;
    if (opt->batch) dims[nred++] = 0;
    for (int d = 2; d < nd; d++) dims[nred++] = d;
    mt_tensor *pt = mt_mul(p, t);
    mt_tensor *inter = mt_sum(pt, nred, dims, 0);
    mt_tensor *ground, *pred;
    if (opt->squared_pred) {
        mt_tensor *t2 = mt_square(t), *p2 = mt_square(p);
        ground = mt_sum(t2, nred, dims, 0);
        pred = mt_sum(p2, nred, dims, 0);
        RELEASE(t2, p2);
    } else {
        ground = mt_sum(t, nred, dims, 0);
        pred = mt_sum(p, nred, dims, 0);
    }
    mt_tensor *den = mt_add(ground, pred);
    mt_tensor *den_s = mt_add_scalar(den, (float)opt->smooth_dr);
    mt_tensor *i2 = mt_mul_scalar(inter, 2.0f);
    mt_tensor *num = mt_add_scalar(i2, (float)opt->smooth_nr);
    mt_tensor *ratio = mt_div(num, den_s);
    mt_tensor *nr = mt_neg(ratio);
    mt_tensor *f = mt_add_scalar(nr, 1.0f); /* (N, C') or (C') */
    mt_tensor *loss = mt_mean_all(f);
    RELEASE(x, p, t, pt, inter, ground, pred, den, den_s, i2, num, ratio, nr, f);
    return loss;
}

/* --------------------------------------------------------- config */

mt_loss_config mt_loss_config_default(mt_loss_kind kind) {
    mt_loss_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.dice.activation =
        (kind == MT_LOSS_DICE_BCE || kind == MT_LOSS_BCE) ? MT_LOSS_ACT_SIGMOID : MT_LOSS_ACT_SOFTMAX;
    c.dice.include_background = 1;
    c.dice.to_onehot_y = 1;
    c.dice.batch = 0;
    c.dice.squared_pred = 0;
    c.dice.smooth_nr = 1e-5;
    c.dice.smooth_dr = 1e-5;
    c.lambda_dice = 1.0;
    c.lambda_ce = 1.0;
    return c;
}

const char *mt_loss_kind_name(mt_loss_kind kind) {
    switch (kind) {
    case MT_LOSS_DICE_CE: return "dice_ce";
    case MT_LOSS_DICE_BCE: return "dice_bce";
    case MT_LOSS_CE: return "ce";
    case MT_LOSS_BCE: return "bce";
    case MT_LOSS_DICE: return "dice";
    }
    return "?";
}

mt_status mt_loss_kind_from_name(const char *name, mt_loss_kind *kind) {
    static const mt_loss_kind kinds[] = {MT_LOSS_DICE_CE, MT_LOSS_DICE_BCE, MT_LOSS_CE, MT_LOSS_BCE,
                                         MT_LOSS_DICE};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        if (name && strcmp(name, mt_loss_kind_name(kinds[k])) == 0) {
            *kind = kinds[k];
            return MT_OK;
        }
    return mt_error_set(MT_ERR_CONFIG,
                        "unknown loss '%s' (expected dice_ce, dice_bce, ce, bce or dice)",
                        name ? name : "(null)");
}

static int uses_dice(mt_loss_kind k) { return k == MT_LOSS_DICE || k == MT_LOSS_DICE_CE || k == MT_LOSS_DICE_BCE; }

static mt_status check_weight(const char *what, const mt_tensor *w, int64_t c, const char *kn) {
    if (!w) return MT_OK;
    if (!mt_dtype_is_float(w->dtype))
        return mt_error_set(MT_ERR_INVALID, "loss %s: %s must be floating point, not %s", kn, what,
                            mt_dtype_name(w->dtype));
    if (mt_tensor_numel(w) != c)
        return mt_error_set(MT_ERR_INVALID, "loss %s: %s has %lld values for %lld classes", kn, what,
                            (long long)mt_tensor_numel(w), (long long)c);
    return MT_OK;
}

mt_status mt_loss_check(const mt_tensor *logits, const mt_tensor *target, const mt_loss_config *cfg) {
    const char *kn = mt_loss_kind_name(cfg->kind);
    char b1[96], b2[96];
    if (!strcmp(kn, "?")) return mt_error_set(MT_ERR_INVALID, "loss: unknown kind %d", (int)cfg->kind);
    if (!mt_dtype_is_float(logits->dtype))
        return mt_error_set(MT_ERR_INVALID, "loss %s: logits must be floating point, not %s", kn,
                            mt_dtype_name(logits->dtype));
    if (logits->ndim < 2 || (uses_dice(cfg->kind) && logits->ndim < 3))
        return mt_error_set(MT_ERR_INVALID, "loss %s: logits %s need (N, C%s) dims", kn,
                            mt_tensor_shape_str(logits, b1, sizeof b1),
                            uses_dice(cfg->kind) ? ", spatial..." : ", ...");
    if (!mt_device_eq(mt_tensor_device(logits), mt_tensor_device(target)))
        return mt_error_set(MT_ERR_INVALID, "loss %s: logits and target on different devices", kn);
    int64_t c = logits->shape[1];
    tgt_form form = target_form(logits, target);
    if (form == TGT_BAD)
        return mt_error_set(MT_ERR_INVALID,
                            "loss %s: target %s fits neither the logits' shape %s nor labels (N, 1, *)",
                            kn, mt_tensor_shape_str(target, b2, sizeof b2),
                            mt_tensor_shape_str(logits, b1, sizeof b1));
    int ce = cfg->kind == MT_LOSS_CE || (cfg->kind == MT_LOSS_DICE_CE && c > 1);
    int bce = cfg->kind == MT_LOSS_BCE || cfg->kind == MT_LOSS_DICE_BCE ||
              (cfg->kind == MT_LOSS_DICE_CE && c == 1);
    if (cfg->kind == MT_LOSS_CE && c < 2)
        return mt_error_set(MT_ERR_INVALID,
                            "loss ce: logits have %lld channel; cross-entropy needs >= 2 (use bce)",
                            (long long)c);
    if (ce && form == TGT_DENSE && !mt_dtype_is_float(target->dtype))
        return mt_error_set(MT_ERR_INVALID,
                            "loss %s: a target with C = %lld channels must hold f32 class "
                            "probabilities, not %s labels",
                            kn, (long long)c, mt_dtype_name(target->dtype));
    if ((bce || uses_dice(cfg->kind)) && form == TGT_LABELS && c > 1 && !cfg->dice.to_onehot_y)
        return mt_error_set(MT_ERR_INVALID,
                            "loss %s: target %s holds labels but logits have %lld channels: set "
                            "to_onehot_y",
                            kn, mt_tensor_shape_str(target, b2, sizeof b2), (long long)c);
    if (uses_dice(cfg->kind)) {
        if (!(cfg->dice.smooth_nr >= 0 && cfg->dice.smooth_dr >= 0))
            return mt_error_set(MT_ERR_INVALID, "loss %s: smooth_nr %g / smooth_dr %g must be >= 0",
                                kn, cfg->dice.smooth_nr, cfg->dice.smooth_dr);
        if (cfg->dice.activation < MT_LOSS_ACT_NONE || cfg->dice.activation > MT_LOSS_ACT_SOFTMAX)
            return mt_error_set(MT_ERR_INVALID, "loss %s: unknown activation %d", kn,
                                (int)cfg->dice.activation);
    }
    if (ce) MT_TRY(check_weight("ce_weight", cfg->ce_weight, c, kn));
    if (bce) MT_TRY(check_weight("pos_weight", cfg->pos_weight, c, kn));
    return MT_OK;
}

/* lambda_a a + lambda_b b */
static mt_tensor *combine(double la, mt_tensor *a, double lb, mt_tensor *b) {
    mt_tensor *wa = mt_mul_scalar(a, (float)la), *wb = mt_mul_scalar(b, (float)lb);
    mt_tensor *s = mt_add(wa, wb);
    RELEASE(wa, wb);
    return s;
}

static mt_tensor *bce_from_cfg(const mt_tensor *logits, const mt_tensor *target,
                               const mt_loss_config *cfg) {
    mt_tensor *t = dense_target(logits, target, cfg->dice.to_onehot_y);
    mt_tensor *l = mt_loss_bce_with_logits(logits, t, cfg->pos_weight);
    mt_tensor_release(t);
    return l;
}

mt_status mt_loss_compute(mt_tensor **loss, const mt_tensor *logits, const mt_tensor *target,
                          const mt_loss_config *cfg) {
    *loss = NULL;
    MT_TRY(mt_loss_check(logits, target, cfg));
    int64_t c = logits->shape[1];
    mt_tensor *a = NULL, *b = NULL;
    switch (cfg->kind) {
    case MT_LOSS_CE: *loss = mt_loss_cross_entropy(logits, target, cfg->ce_weight); break;
    case MT_LOSS_BCE: *loss = bce_from_cfg(logits, target, cfg); break;
    case MT_LOSS_DICE: *loss = mt_loss_dice(logits, target, &cfg->dice); break;
    case MT_LOSS_DICE_CE:
        a = mt_loss_dice(logits, target, &cfg->dice);
        b = c > 1 ? mt_loss_cross_entropy(logits, target, cfg->ce_weight)
                  : bce_from_cfg(logits, target, cfg);
        *loss = combine(cfg->lambda_dice, a, cfg->lambda_ce, b);
        break;
    case MT_LOSS_DICE_BCE:
        a = mt_loss_dice(logits, target, &cfg->dice);
        b = bce_from_cfg(logits, target, cfg);
        *loss = combine(cfg->lambda_dice, a, cfg->lambda_ce, b);
        break;
    }
    mt_tensor_release(a);
    mt_tensor_release(b);
    return MT_OK;
}
