/* LABELS: unit grad */
/* losses/: BCE-with-logits, cross-entropy, Dice, Dice+CE, Dice+BCE against hand-computed
 * values and double-precision references of the formulas on random data; analytic
 * gradients of BCE and CE against their closed forms; gradcheck of every loss w.r.t.
 * the logits; configuration errors. */
#include <stdlib.h>
#include <string.h>

#include "losses/losses.h"
#include "mt_test.h"

/* --------------------------------------------------- double references */

/* Arrays are (N, C, S) row-major; labels (N, S). */
typedef struct {
    int n, c, s;
} dims3;

static double softplus_d(double z) { return log1p(exp(-fabs(z))) + (z > 0 ? z : 0); }
static double sigmoid_d(double z) { return 1 / (1 + exp(-z)); }
#define AT(d, n_, c_, s_) ((((int64_t)(n_) * (d).c + (c_)) * (d).s) + (s_))

static double ref_bce(dims3 d, const double *x, const double *y, const double *pw) {
    double acc = 0;
    for (int n = 0; n < d.n; n++)
        for (int c = 0; c < d.c; c++)
            for (int s = 0; s < d.s; s++) {
                int64_t i = AT(d, n, c, s);
                double p = pw ? pw[c] : 1;
                acc += (1 - y[i]) * x[i] + (1 + (p - 1) * y[i]) * softplus_d(-x[i]);
            }
    return acc / ((double)d.n * d.c * d.s);
}

/* dL/dx of ref_bce: (sigmoid(x) (1 + (pw - 1) y) - pw y) / numel */
static void ref_bce_grad(dims3 d, const double *x, const double *y, const double *pw, double *g) {
    double m = (double)d.n * d.c * d.s;
    for (int n = 0; n < d.n; n++)
        for (int c = 0; c < d.c; c++)
            for (int s = 0; s < d.s; s++) {
                int64_t i = AT(d, n, c, s);
                double p = pw ? pw[c] : 1;
                g[i] = (sigmoid_d(x[i]) * (1 + (p - 1) * y[i]) - p * y[i]) / m;
            }
}

static void ref_softmax(dims3 d, const double *x, double *p) {
    for (int n = 0; n < d.n; n++)
        for (int s = 0; s < d.s; s++) {
            double mx = -INFINITY, z = 0;
            for (int c = 0; c < d.c; c++) mx = fmax(mx, x[AT(d, n, c, s)]);
            for (int c = 0; c < d.c; c++) z += exp(x[AT(d, n, c, s)] - mx);
            for (int c = 0; c < d.c; c++) p[AT(d, n, c, s)] = exp(x[AT(d, n, c, s)] - mx) / z;
        }
}

/* dense target t (N, C, S): probabilities or one-hot; labels given by lab if t == NULL. */
static double ref_ce(dims3 d, const double *x, const int *lab, const double *t, const double *w,
                     double *grad /* may be NULL */) {
    double *p = malloc(sizeof(double) * (size_t)d.n * d.c * d.s);
    ref_softmax(d, x, p);
    double num = 0, den = 0;
    for (int n = 0; n < d.n; n++)
        for (int s = 0; s < d.s; s++) {
            if (lab) {
                int y = lab[n * d.s + s];
                double wy = w ? w[y] : 1;
                num += -wy * log(p[AT(d, n, y, s)]);
                den += wy;
            } else {
                for (int c = 0; c < d.c; c++)
                    num += -(w ? w[c] : 1) * t[AT(d, n, c, s)] * log(p[AT(d, n, c, s)]);
                den += 1;
            }
        }
    /* gradient: labels: w_y (p - onehot) / den; probabilities: (p sum_c w_c t_c - w t) / den */
    if (grad)
        for (int n = 0; n < d.n; n++)
            for (int s = 0; s < d.s; s++) {
                double tw = 0;
                if (lab) tw = w ? w[lab[n * d.s + s]] : 1;
                else
                    for (int c = 0; c < d.c; c++) tw += (w ? w[c] : 1) * t[AT(d, n, c, s)];
                for (int c = 0; c < d.c; c++) {
                    int64_t i = AT(d, n, c, s);
                    double wt = lab ? (lab[n * d.s + s] == c ? (w ? w[c] : 1) : 0)
                                    : (w ? w[c] : 1) * t[i];
                    grad[i] = (p[i] * tw - wt) / den;
                }
            }
    free(p);
    return num / den;
}

typedef struct {
    mt_loss_activation act;
    int include_background, batch, squared;
    double snr, sdr;
} ref_dice_opts;

static double ref_dice(dims3 d, const double *x, const double *t, ref_dice_opts o) {
    int64_t m = (int64_t)d.n * d.c * d.s;
    double *p = malloc(sizeof(double) * (size_t)m);
    if (o.act == MT_LOSS_ACT_SOFTMAX && d.c > 1) ref_softmax(d, x, p);
    else
        for (int64_t i = 0; i < m; i++) p[i] = o.act == MT_LOSS_ACT_SIGMOID ? sigmoid_d(x[i]) : x[i];
    int c0 = (!o.include_background && d.c > 1) ? 1 : 0;
    double total = 0;
    int count = 0;
    int nb = o.batch ? 1 : d.n;
    for (int b = 0; b < nb; b++)
        for (int c = c0; c < d.c; c++) {
            double in = 0, g = 0, pr = 0;
            for (int n = o.batch ? 0 : b; n < (o.batch ? d.n : b + 1); n++)
                for (int s = 0; s < d.s; s++) {
                    int64_t i = AT(d, n, c, s);
                    in += p[i] * t[i];
                    g += o.squared ? t[i] * t[i] : t[i];
                    pr += o.squared ? p[i] * p[i] : p[i];
                }
            total += 1 - (2 * in + o.snr) / (g + pr + o.sdr);
            count++;
        }
    free(p);
    return total / count;
}

static void onehot_d(dims3 d, const int *lab, double *t) {
    for (int n = 0; n < d.n; n++)
        for (int c = 0; c < d.c; c++)
            for (int s = 0; s < d.s; s++) t[AT(d, n, c, s)] = lab[n * d.s + s] == c;
}

/* Random integer labels in [0, c) as a tensor of dtype dt and shape (N, 1, D, H, W) or
 * (N, D, H, W); lab gets the values. */
static mt_tensor *rand_labels(mt_dtype dt, int with_channel, int64_t n, int c, int64_t dd,
                              int64_t hh, int64_t ww, int *lab) {
    mt_tensor *t = with_channel ? mt_tensor_new(dt, MT_SHAPE(n, 1, dd, hh, ww), MT_DEVICE_CPU)
                                : mt_tensor_new(dt, MT_SHAPE(n, dd, hh, ww), MT_DEVICE_CPU);
    mt_tensor *u = mt_test_rand(MT_SHAPE(n * dd * hh * ww), 0, (float)c);
    for (int64_t i = 0; i < n * dd * hh * ww; i++) {
        int v = (int)mt_tensor_get_flat(u, i);
        if (v >= c) v = c - 1;
        lab[i] = v;
        mt_tensor_set_flat(t, i, v);
    }
    mt_tensor_release(u);
    return t;
}

static double loss_value(const mt_tensor *logits, const mt_tensor *target, const mt_loss_config *cfg) {
    mt_tensor *l = NULL;
    mt_status st = mt_loss_compute(&l, logits, target, cfg);
    CHECK_MSG(st == MT_OK, "mt_loss_compute(%s): %s", mt_loss_kind_name(cfg->kind), mt_error_msg());
    if (st != MT_OK) return NAN;
    CHECK(l->ndim == 0 && l->dtype == MT_F32);
    double v = mt_tensor_item(l);
    mt_tensor_release(l);
    return v;
}

/* ------------------------------------------------------- hand values */

static void test_hand(void) {
    mt_loss_config cfg;
    /* BCE: x = (0, 2), y = (1, 0): (log 2 + softplus(2)) / 2 = (0.693147 + 2.126928) / 2 */
    mt_tensor *x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 2), (float[]){0, 2});
    mt_tensor *y = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 2), (float[]){1, 0});
    cfg = mt_loss_config_default(MT_LOSS_BCE);
    CHECK_NEAR(loss_value(x, y, &cfg), 1.410037595801459, 1e-6);
    mt_tensor_release(x);
    mt_tensor_release(y);
    /* BCE pos_weight (2, 3), x = 0, y = 1 on both channels: (2 + 3) / 2 * log 2 */
    x = mt_tensor_zeros(MT_F32, MT_SHAPE(1, 2, 1), MT_DEVICE_CPU);
    y = mt_tensor_full(MT_F32, MT_SHAPE(1, 2, 1), 1.0, MT_DEVICE_CPU);
    mt_tensor *pw = mt_tensor_from_data(MT_F32, MT_SHAPE(2), (float[]){2, 3});
    cfg.pos_weight = pw;
    CHECK_NEAR(loss_value(x, y, &cfg), 1.7328679513998633, 1e-6);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_tensor_release(pw);

    /* CE: two voxels, C = 3: x = (1, 2, 3) label 2 -> log(e + e^2 + e^3) - 3 = 0.407606;
     * x = (0, 0, 0) label 0 -> log 3 = 1.098612. Mean 0.753109; weights (1, 2, 3):
     * (3 * 0.407606 + 1 * 1.098612) / (3 + 1) = 0.580358. */
    x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 3, 2), (float[]){1, 0, 2, 0, 3, 0});
    mt_tensor *lab = mt_tensor_from_data(MT_I32, MT_SHAPE(1, 2), (int32_t[]){2, 0});
    cfg = mt_loss_config_default(MT_LOSS_CE);
    CHECK_NEAR(loss_value(x, lab, &cfg), 0.753109126556245, 1e-6);
    mt_tensor *w = mt_tensor_from_data(MT_F32, MT_SHAPE(3), (float[]){1, 2, 3});
    cfg.ce_weight = w;
    CHECK_NEAR(loss_value(x, lab, &cfg), 0.5803575455003125, 1e-6);
    /* Dice (softmax, one-hot labels) on the same data: softmax(1, 2, 3) = (0.0900306,
     * 0.2447285, 0.6652410), the other voxel 1/3 each. Per class 1 - (2I + 1e-5)/(G + P + 1e-5):
     * c0: I = 1/3, G = 1, P = 0.4233639 -> 0.5316223; c1: I = 0, G = 0, P = 0.5780618
     * -> 0.9999827; c2: I = 0.6652410, G = 1, P = 0.9985743 -> 0.3342828; mean 0.6219626.
     * dice_ce with lambda_dice 0.5, lambda_ce 2: 0.5 * 0.6219626 + 2 * 0.7531091 = 1.8171995 */
    cfg = mt_loss_config_default(MT_LOSS_DICE);
    CHECK_NEAR(loss_value(x, lab, &cfg), 0.621962588183857, 1e-6);
    cfg = mt_loss_config_default(MT_LOSS_DICE_CE);
    cfg.lambda_dice = 0.5;
    cfg.lambda_ce = 2;
    CHECK_NEAR(loss_value(x, lab, &cfg), 1.8171995472044185, 1e-6);
    mt_tensor_release(x);
    mt_tensor_release(lab);
    mt_tensor_release(w);

    /* Dice without activation: p = (0.5, 1, 0, 0.25), t = (1, 1, 0, 0): I = 1.5, G = 2,
     * P = 1.75 -> 1 - 3.00001 / 3.75001 = 0.1999995 */
    x = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 4), (float[]){0.5f, 1, 0, 0.25f});
    y = mt_tensor_from_data(MT_F32, MT_SHAPE(1, 1, 4), (float[]){1, 1, 0, 0});
    cfg = mt_loss_config_default(MT_LOSS_DICE);
    cfg.dice.activation = MT_LOSS_ACT_NONE;
    CHECK_NEAR(loss_value(x, y, &cfg), 0.19999946666808888, 1e-6);
    /* squared_pred: G = 2, P = 0.25 + 1 + 0.0625 = 1.3125 -> 1 - 3.00001 / 3.31251 */
    cfg.dice.squared_pred = 1;
    CHECK_NEAR(loss_value(x, y, &cfg), 1 - 3.00001 / 3.31251, 1e-6);
    mt_tensor_release(x);
    mt_tensor_release(y);
}

/* --------------------------------------------- random data vs reference */

#define NB 2
#define NC 3
#define DD 5
#define HH 4
#define WW 3
#define SS (DD * HH * WW)

static void test_random(void) {
    dims3 d = {NB, NC, SS};
    int64_t m = (int64_t)NB * NC * SS;
    mt_tensor *logits = mt_test_rand(MT_SHAPE(NB, NC, DD, HH, WW), -3, 3);
    double *x = mt_test_to_f64(logits);
    int lab[NB * SS];
    mt_tensor *lab_u8 = rand_labels(MT_U8, 1, NB, NC, DD, HH, WW, lab);
    int lab2[NB * SS];
    mt_tensor *lab_i32 = rand_labels(MT_I32, 0, NB, NC, DD, HH, WW, lab2);
    double *oh = malloc(sizeof(double) * (size_t)m), *oh2 = malloc(sizeof(double) * (size_t)m);
    onehot_d(d, lab, oh);
    onehot_d(d, lab2, oh2);
    /* f32 labels (N, 1, ...) holding the same values as lab */
    mt_tensor *lab_f32 = mt_tensor_to_dtype(lab_u8, MT_F32);
    /* dense targets: soft probabilities (rows sum to 1) and multi-label {0, 1} */
    mt_tensor *soft = mt_test_rand(MT_SHAPE(NB, NC, DD, HH, WW), 0.05f, 1);
    double *t_soft = mt_test_to_f64(soft);
    for (int n = 0; n < NB; n++)
        for (int s = 0; s < SS; s++) {
            double z = 0;
            for (int c = 0; c < NC; c++) z += t_soft[AT(d, n, c, s)];
            for (int c = 0; c < NC; c++) {
                t_soft[AT(d, n, c, s)] /= z;
                mt_tensor_set_flat(soft, AT(d, n, c, s), t_soft[AT(d, n, c, s)]);
            }
        }
    double *t_soft_f = mt_test_to_f64(soft); /* as stored in f32 */
    mt_tensor *multi = mt_test_rand(MT_SHAPE(NB, NC, DD, HH, WW), 0, 1);
    double *t_multi = mt_test_to_f64(multi);
    for (int64_t i = 0; i < m; i++) {
        t_multi[i] = t_multi[i] > 0.6;
        mt_tensor_set_flat(multi, i, t_multi[i]);
    }
    double wv[NC] = {0.3, 1.7, 2.9}, pwv[NC] = {0.5, 2.0, 4.0};
    mt_tensor *w = mt_tensor_from_data(MT_F32, MT_SHAPE(NC), (float[]){0.3f, 1.7f, 2.9f});
    mt_tensor *pw = mt_tensor_from_data(MT_F32, MT_SHAPE(NC), (float[]){0.5f, 2.0f, 4.0f});
    double wf[NC], pwf[NC];
    for (int c = 0; c < NC; c++) {
        wf[c] = (float)wv[c];
        pwf[c] = (float)pwv[c];
    }
    const double tol = 2e-6;
    mt_loss_config cfg;

    /* BCE */
    cfg = mt_loss_config_default(MT_LOSS_BCE);
    CHECK_NEAR(loss_value(logits, multi, &cfg), ref_bce(d, x, t_multi, NULL), tol);
    cfg.pos_weight = pw;
    CHECK_NEAR(loss_value(logits, multi, &cfg), ref_bce(d, x, t_multi, pwf), tol);
    CHECK_NEAR(loss_value(logits, soft, &cfg), ref_bce(d, x, t_soft_f, pwf), tol);
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_bce(d, x, oh, pwf), tol); /* one-hot */

    /* CE: labels of each dtype and layout, weights, probabilities */
    cfg = mt_loss_config_default(MT_LOSS_CE);
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_ce(d, x, lab, NULL, NULL, NULL), tol);
    CHECK_NEAR(loss_value(logits, lab_f32, &cfg), ref_ce(d, x, lab, NULL, NULL, NULL), tol);
    CHECK_NEAR(loss_value(logits, lab_i32, &cfg), ref_ce(d, x, lab2, NULL, NULL, NULL), tol);
    cfg.ce_weight = w;
    CHECK_NEAR(loss_value(logits, lab_i32, &cfg), ref_ce(d, x, lab2, NULL, wf, NULL), tol);
    CHECK_NEAR(loss_value(logits, soft, &cfg), ref_ce(d, x, NULL, t_soft_f, wf, NULL), tol);
    cfg.ce_weight = NULL;
    CHECK_NEAR(loss_value(logits, soft, &cfg), ref_ce(d, x, NULL, t_soft_f, NULL, NULL), tol);

    /* Dice: each option */
    ref_dice_opts ro = {MT_LOSS_ACT_SOFTMAX, 1, 0, 0, 1e-5, 1e-5};
    cfg = mt_loss_config_default(MT_LOSS_DICE);
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_dice(d, x, oh, ro), tol);
    CHECK_NEAR(loss_value(logits, lab_i32, &cfg), ref_dice(d, x, oh2, ro), tol);
    cfg.dice.include_background = 0;
    ro.include_background = 0;
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_dice(d, x, oh, ro), tol);
    cfg.dice.batch = 1;
    ro.batch = 1;
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_dice(d, x, oh, ro), tol);
    cfg.dice.squared_pred = 1;
    ro.squared = 1;
    cfg.dice.smooth_nr = 0.5;
    cfg.dice.smooth_dr = 0.25;
    ro.snr = 0.5;
    ro.sdr = 0.25;
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg), ref_dice(d, x, oh, ro), tol);
    cfg = mt_loss_config_default(MT_LOSS_DICE);
    cfg.dice.activation = MT_LOSS_ACT_SIGMOID;
    ro = (ref_dice_opts){MT_LOSS_ACT_SIGMOID, 1, 0, 0, 1e-5, 1e-5};
    CHECK_NEAR(loss_value(logits, multi, &cfg), ref_dice(d, x, t_multi, ro), tol);

    /* Dice + CE (MONAI DiceCELoss), with class weights on the CE term */
    cfg = mt_loss_config_default(MT_LOSS_DICE_CE);
    cfg.lambda_dice = 0.7;
    cfg.lambda_ce = 1.3;
    cfg.ce_weight = w;
    ro = (ref_dice_opts){MT_LOSS_ACT_SOFTMAX, 1, 0, 0, 1e-5, 1e-5};
    CHECK_NEAR(loss_value(logits, lab_u8, &cfg),
               0.7 * ref_dice(d, x, oh, ro) + 1.3 * ref_ce(d, x, lab, NULL, wf, NULL), tol);
    /* Dice + BCE (sigmoid), labels one-hot encoded for both terms */
    cfg = mt_loss_config_default(MT_LOSS_DICE_BCE);
    cfg.lambda_dice = 2.0;
    cfg.lambda_ce = 0.5;
    cfg.pos_weight = pw;
    ro.act = MT_LOSS_ACT_SIGMOID;
    CHECK_NEAR(loss_value(logits, lab_i32, &cfg),
               2.0 * ref_dice(d, x, oh2, ro) + 0.5 * ref_bce(d, x, oh2, pwf), tol);

    /* analytic gradients of BCE and CE against their closed forms */
    mt_tensor_set_requires_grad(logits, 1);
    double *gref = malloc(sizeof(double) * (size_t)m);
    mt_tensor *l = mt_loss_bce_with_logits(logits, multi, pw);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    ref_bce_grad(d, x, t_multi, pwf, gref);
    mt_test_allclose(logits->grad, gref, 1e-8, 1e-4, "bce gradient");
    mt_tensor_release(l);
    mt_tensor_zero_grad(logits);
    l = mt_loss_cross_entropy(logits, lab_i32, w);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    ref_ce(d, x, lab2, NULL, wf, gref);
    mt_test_allclose(logits->grad, gref, 1e-8, 1e-4, "ce gradient (labels, weights)");
    mt_tensor_release(l);
    mt_tensor_zero_grad(logits);
    l = mt_loss_cross_entropy(logits, soft, NULL);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    ref_ce(d, x, NULL, t_soft_f, NULL, gref);
    mt_test_allclose(logits->grad, gref, 1e-8, 1e-4, "ce gradient (probabilities)");
    mt_tensor_release(l);
    mt_tensor_zero_grad(logits);

    /* bf16 logits: computed in f32 after the cast, equal to the f32 loss of the rounded
     * logits */
    mt_tensor_set_requires_grad(logits, 0);
    mt_tensor *lb = mt_tensor_to_dtype(logits, MT_BF16);
    mt_tensor *lbf = mt_tensor_to_dtype(lb, MT_F32);
    cfg = mt_loss_config_default(MT_LOSS_DICE_CE);
    CHECK_NEAR(loss_value(lb, lab_u8, &cfg), loss_value(lbf, lab_u8, &cfg), 1e-6);
    mt_tensor_release(lb);
    mt_tensor_release(lbf);

    free(gref);
    free(x);
    free(oh);
    free(oh2);
    free(t_soft);
    free(t_soft_f);
    free(t_multi);
    mt_tensor *rel[] = {logits, lab_u8, lab_i32, lab_f32, soft, multi, w, pw};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* Single-channel (binary) segmentation: dice_ce switches to BCE as MONAI does; labels
 * (N, 1, ...) with values 0/1 serve as the one channel. */
static void test_binary(void) {
    dims3 d = {2, 1, 3 * 4 * 5};
    mt_tensor *logits = mt_test_rand(MT_SHAPE(2, 1, 3, 4, 5), -4, 4);
    double *x = mt_test_to_f64(logits);
    int lab[2 * 60];
    mt_tensor *labels = rand_labels(MT_U8, 1, 2, 2, 3, 4, 5, lab);
    double t[2 * 60];
    for (int i = 0; i < 120; i++) t[i] = lab[i];
    mt_loss_config cfg = mt_loss_config_default(MT_LOSS_DICE_CE);
    cfg.dice.activation = MT_LOSS_ACT_SIGMOID;
    ref_dice_opts ro = {MT_LOSS_ACT_SIGMOID, 1, 0, 0, 1e-5, 1e-5};
    CHECK_NEAR(loss_value(logits, labels, &cfg), ref_dice(d, x, t, ro) + ref_bce(d, x, t, NULL), 2e-6);
    cfg = mt_loss_config_default(MT_LOSS_CE);
    mt_tensor *l = NULL;
    CHECK(mt_loss_compute(&l, logits, labels, &cfg) == MT_ERR_INVALID && l == NULL);
    CHECK(strstr(mt_error_msg(), "bce") != NULL);
    free(x);
    mt_tensor_release(logits);
    mt_tensor_release(labels);
}

static void test_errors(void) {
    mt_tensor *logits = mt_test_rand(MT_SHAPE(2, 3, 4, 5), -1, 1);
    mt_tensor *l = NULL;
    mt_loss_config cfg = mt_loss_config_default(MT_LOSS_DICE_CE);
    /* wrong spatial size */
    mt_tensor *bad = mt_tensor_zeros(MT_U8, MT_SHAPE(2, 1, 4, 6), MT_DEVICE_CPU);
    CHECK(mt_loss_compute(&l, logits, bad, &cfg) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "(2, 1, 4, 6)") != NULL);
    mt_tensor_release(bad);
    /* labels without to_onehot_y for Dice */
    mt_tensor *lab = mt_tensor_zeros(MT_U8, MT_SHAPE(2, 1, 4, 5), MT_DEVICE_CPU);
    cfg.dice.to_onehot_y = 0;
    CHECK(mt_loss_compute(&l, logits, lab, &cfg) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "to_onehot_y") != NULL);
    /* class weights of the wrong size */
    cfg = mt_loss_config_default(MT_LOSS_CE);
    mt_tensor *w = mt_tensor_full(MT_F32, MT_SHAPE(4), 1.0, MT_DEVICE_CPU);
    cfg.ce_weight = w;
    CHECK(mt_loss_compute(&l, logits, lab, &cfg) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "ce_weight") != NULL);
    /* integer dense target for CE */
    mt_tensor *idense = mt_tensor_zeros(MT_U8, MT_SHAPE(2, 3, 4, 5), MT_DEVICE_CPU);
    cfg.ce_weight = NULL;
    CHECK(mt_loss_compute(&l, logits, idense, &cfg) == MT_ERR_INVALID);
    CHECK(l == NULL);
    mt_loss_kind k;
    CHECK(mt_loss_kind_from_name("dice_bce", &k) == MT_OK && k == MT_LOSS_DICE_BCE);
    CHECK(mt_loss_kind_from_name("focal", &k) == MT_ERR_CONFIG && strstr(mt_error_msg(), "focal"));
    mt_tensor *rel[] = {logits, lab, w, idense};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) mt_tensor_release(rel[i]);
}

/* ------------------------------------------------------------ gradcheck */

typedef struct {
    const mt_tensor *target;
    mt_loss_config cfg;
} gc_ctx;

static mt_tensor *gc_fn(mt_tensor **in, void *vctx) {
    gc_ctx *c = vctx;
    mt_tensor *l = NULL;
    mt_status st = mt_loss_compute(&l, in[0], c->target, &c->cfg);
    MT_CHECK_MSG(st == MT_OK, "%s", mt_error_msg());
    return l;
}

static void test_gradcheck(void) {
    mt_tensor *logits = mt_test_rand(MT_SHAPE(2, 3, 3, 2, 3), -2, 2);
    mt_tensor_set_requires_grad(logits, 1);
    int lab[2 * 18];
    mt_tensor *labels = rand_labels(MT_U8, 1, 2, 3, 3, 2, 3, lab);
    mt_tensor *soft = mt_test_rand(MT_SHAPE(2, 3, 3, 2, 3), 0, 1);
    mt_tensor *w = mt_tensor_from_data(MT_F32, MT_SHAPE(3), (float[]){0.5f, 1.5f, 2.5f});
    struct {
        const char *what;
        mt_loss_kind kind;
        const mt_tensor *target;
        int weights, bg, batch, squared;
    } cases[] = {
        {"bce", MT_LOSS_BCE, NULL, 0, 1, 0, 0},
        {"bce pos_weight", MT_LOSS_BCE, NULL, 1, 1, 0, 0},
        {"ce", MT_LOSS_CE, NULL, 0, 1, 0, 0},
        {"ce weights", MT_LOSS_CE, NULL, 1, 1, 0, 0},
        {"ce probabilities", MT_LOSS_CE, NULL, 1, 1, 0, 0},
        {"dice softmax", MT_LOSS_DICE, NULL, 0, 1, 0, 0},
        {"dice no background batch squared", MT_LOSS_DICE, NULL, 0, 0, 1, 1},
        {"dice_ce", MT_LOSS_DICE_CE, NULL, 1, 0, 0, 0},
        {"dice_bce", MT_LOSS_DICE_BCE, NULL, 1, 1, 1, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gc_ctx c;
        c.cfg = mt_loss_config_default(cases[k].kind);
        c.target = strstr(cases[k].what, "probabilities") || cases[k].kind == MT_LOSS_BCE ? soft : labels;
        if (cases[k].weights) {
            c.cfg.ce_weight = w;
            c.cfg.pos_weight = w;
        }
        c.cfg.dice.include_background = cases[k].bg;
        c.cfg.dice.batch = cases[k].batch;
        c.cfg.dice.squared_pred = cases[k].squared;
        mt_test_gradcheck(cases[k].what, gc_fn, &c, 1, &logits, 1e-2, 2e-4, 1e-2);
    }
    mt_tensor *rel[] = {logits, labels, soft, w};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) mt_tensor_release(rel[i]);
}

int main(void) {
    mt_test_seed(77);
    test_hand();
    test_random();
    test_binary();
    test_errors();
    test_gradcheck();
    return mt_test_finish();
}
