/* LABELS: unit grad */
/* layers/: module system (names, order, lookup, load, hooks), layers (PyTorch
 * names/shapes, default init, forward against naive double references,
 * BatchNorm/Dropout train vs eval) and UNet3D (names as its PyTorch twin
 * experiments/unet3d_torch.py prints, validation, shapes, gradients,
 * gradcheck, FLOPs). */
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "layers/models/unet3d.h"
#include "mt_test.h"

/* ------------------------------------------------------------- helpers */

typedef struct {
    const char *name;
    const char *shape;
} expect_t;

static void check_list(const char *what, const mt_named_tensors *l, const expect_t *e, int n) {
    CHECK_MSG(l->n == n, "%s: %d entries, expected %d", what, l->n, n);
    int m = l->n < n ? l->n : n;
    for (int i = 0; i < m; i++) {
        char b[128];
        mt_tensor_shape_str(l->items[i].tensor, b, sizeof b);
        CHECK_MSG(!strcmp(l->items[i].name, e[i].name) && !strcmp(b, e[i].shape),
                  "%s[%d]: got %s %s, expected %s %s", what, i, l->items[i].name, b, e[i].name,
                  e[i].shape);
    }
}

static void check_state_dict(const char *what, const mt_module *m, const expect_t *e, int n) {
    mt_named_tensors l = {0};
    mt_module_state_dict(m, &l);
    check_list(what, &l, e, n);
    mt_named_tensors_free(&l);
}

static void fill_rand(mt_tensor *t, float lo, float hi) {
    mt_tensor *r = mt_test_rand(t->ndim, t->shape, lo, hi);
    mt_tensor_copy_(t, r);
    mt_tensor_release(r);
}

static int64_t idx5(const int64_t *s, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    return (((a * s[1] + b) * s[2] + c) * s[3] + d) * s[4] + e;
}

/* ------------------------------------------------------- module system */

static void test_module_tree(void) {
    mt_rng rng;
    mt_rng_init(&rng, 11);
    mt_module *root = mt_module_new("Root", mt_module_sequential_forward);
    mt_tensor *s = mt_test_rand(MT_SHAPE(2), 0.5f, 1.5f);
    mt_module_add_param(root, "scale", s);
    mt_tensor_release(s);
    mt_tensor *steps = mt_tensor_zeros(MT_I32, 0, NULL, MT_DEVICE_CPU);
    mt_module_add_buffer(root, "steps", steps);
    mt_tensor_release(steps);
    mt_module *blk = mt_module_add_child(root, "blk", mt_module_new("Block", mt_module_sequential_forward));
    mt_module *lin = mt_module_add_child(blk, "lin", mt_linear_new(3, 4, 1, &rng));
    mt_module_add_child(blk, "bn", mt_batch_norm3d_new(4, 1e-5f, 0.1f));

    static const expect_t params[] = {{"scale", "(2)"},        {"blk.lin.weight", "(4, 3)"},
                                      {"blk.lin.bias", "(4)"}, {"blk.bn.weight", "(4)"},
                                      {"blk.bn.bias", "(4)"}};
    static const expect_t buffers[] = {{"steps", "()"},
                                       {"blk.bn.running_mean", "(4)"},
                                       {"blk.bn.running_var", "(4)"},
                                       {"blk.bn.num_batches_tracked", "()"}};
    static const expect_t sd[] = {{"scale", "(2)"},
                                  {"steps", "()"},
                                  {"blk.lin.weight", "(4, 3)"},
                                  {"blk.lin.bias", "(4)"},
                                  {"blk.bn.weight", "(4)"},
                                  {"blk.bn.bias", "(4)"},
                                  {"blk.bn.running_mean", "(4)"},
                                  {"blk.bn.running_var", "(4)"},
                                  {"blk.bn.num_batches_tracked", "()"}};
    mt_named_tensors l = {0};
    mt_module_named_parameters(root, &l);
    check_list("named_parameters", &l, params, 5);
    int all_leaf_rg = 1;
    for (int i = 0; i < l.n; i++)
        all_leaf_rg &= l.items[i].tensor->requires_grad && mt_tensor_is_leaf(l.items[i].tensor);
    CHECK_MSG(all_leaf_rg, "parameters are leaves with requires_grad");
    mt_named_tensors_free(&l);
    CHECK(l.n == 0 && l.items == NULL);
    mt_module_named_buffers(root, &l);
    check_list("named_buffers", &l, buffers, 4);
    CHECK(l.items[3].tensor->dtype == MT_I32 && l.items[3].tensor->ndim == 0);
    CHECK(!l.items[1].tensor->requires_grad);
    CHECK(mt_named_tensors_find(&l, "blk.bn.running_var") == 2);
    CHECK(mt_named_tensors_find(&l, "blk.bn.weight") == -1);
    mt_named_tensors_free(&l);
    check_state_dict("state_dict", root, sd, 9);

    CHECK(mt_module_num_params(root) == 2 + 12 + 4 + 4 + 4);
    CHECK(mt_module_num_param_tensors(root) == 5);
    CHECK(mt_module_find(root, "") == root);
    CHECK(mt_module_find(root, "blk") == blk);
    CHECK(mt_module_find(root, "blk.lin") == lin);
    CHECK(mt_module_find(root, "blk.nope") == NULL);
    CHECK(mt_module_find(root, "bl") == NULL);
    CHECK(mt_module_child(blk, "lin") == lin);
    CHECK(mt_module_param(lin, "weight") != NULL && mt_module_param(lin, "nope") == NULL);
    mt_tensor *rv = mt_module_get_tensor(root, "blk.bn.running_var");
    CHECK(rv && rv->refcount >= 2 && mt_tensor_get_flat(rv, 3) == 1.0);
    mt_tensor_release(rv);
    mt_tensor *w = mt_module_get_tensor(root, "blk.lin.weight");
    CHECK(w == mt_module_param(lin, "weight"));
    mt_tensor_release(w);
    CHECK(mt_module_get_tensor(root, "blk.lin.weigh") == NULL);
    CHECK(mt_module_get_tensor(root, "blk.x.weight") == NULL);

    /* train / eval propagates to all descendants */
    CHECK(root->training && lin->training);
    mt_module_train(root, 0);
    CHECK(!root->training && !blk->training && !lin->training &&
          !mt_module_child(blk, "bn")->training);
    mt_module_train(root, 1);
    CHECK(lin->training);

    /* a Linear child forwards through the sequential parent */
    mt_module *seq = mt_module_new("Seq", mt_module_sequential_forward);
    mt_module *l1 = mt_module_add_child(seq, "l1", mt_linear_new(3, 4, 1, &rng));
    mt_module_add_child(seq, "act", mt_activation_new(MT_ACT_RELU, 0));
    mt_module *l2 = mt_module_add_child(seq, "l2", mt_linear_new(4, 2, 0, &rng));
    mt_tensor *x = mt_test_rand(MT_SHAPE(5, 3), -1, 1);
    mt_tensor *y = mt_module_forward(seq, x);
    double *xd = mt_test_to_f64(x), *w1 = mt_test_to_f64(mt_module_param(l1, "weight"));
    double *b1 = mt_test_to_f64(mt_module_param(l1, "bias")),
           *w2 = mt_test_to_f64(mt_module_param(l2, "weight"));
    double ref[10];
    for (int n = 0; n < 5; n++)
        for (int o = 0; o < 2; o++) {
            double acc = 0;
            for (int h = 0; h < 4; h++) {
                double a = b1[h];
                for (int i = 0; i < 3; i++) a += xd[n * 3 + i] * w1[h * 3 + i];
                acc += (a > 0 ? a : 0) * w2[o * 4 + h];
            }
            ref[n * 2 + o] = acc;
        }
    CHECK(y->shape[0] == 5 && y->shape[1] == 2);
    mt_test_allclose(y, ref, 1e-5, 1e-5, "sequential linear-relu-linear");
    CHECK(mt_module_param(l2, "bias") == NULL);
    free(xd);
    free(w1);
    free(b1);
    free(w2);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(seq);
    mt_module_free(root);
}

/* ---------------------------------------------------------- layer names */

static void test_layer_names_and_init(void) {
    mt_rng rng;
    mt_rng_init(&rng, 5);
    mt_conv3d_opts o = mt_conv3d_opts_make(3, 1, 1, 1);
    o.kernel[1] = 1;
    o.kernel[2] = 2;
    o.groups = 2;
    mt_module *m = mt_conv3d_new(4, 6, &o, &rng);
    check_state_dict("Conv3d", m, (expect_t[]){{"weight", "(6, 2, 3, 1, 2)"}, {"bias", "(6)"}}, 2);
    CHECK(!strcmp(m->type, "Conv3d"));
    mt_module_free(m);
    o = mt_conv3d_opts_make(2, 2, 0, 1);
    o.groups = 2;
    m = mt_conv_transpose3d_new(4, 6, &o, &rng);
    check_state_dict("ConvTranspose3d", m,
                     (expect_t[]){{"weight", "(4, 3, 2, 2, 2)"}, {"bias", "(6)"}}, 2);
    mt_module_free(m);
    o = mt_conv3d_opts_make(1, 1, 0, 0);
    m = mt_conv3d_new(3, 5, &o, &rng);
    check_state_dict("Conv3d(bias=False)", m, (expect_t[]){{"weight", "(5, 3, 1, 1, 1)"}}, 1);
    mt_module_free(m);
    m = mt_batch_norm3d_new(5, 1e-5f, 0.1f);
    check_state_dict("BatchNorm3d", m,
                     (expect_t[]){{"weight", "(5)"},
                                  {"bias", "(5)"},
                                  {"running_mean", "(5)"},
                                  {"running_var", "(5)"},
                                  {"num_batches_tracked", "()"}},
                     5);
    {
        double *w = mt_test_to_f64(mt_module_param(m, "weight")),
               *b = mt_test_to_f64(mt_module_param(m, "bias")),
               *rm = mt_test_to_f64(mt_module_buffer(m, "running_mean")),
               *rv = mt_test_to_f64(mt_module_buffer(m, "running_var"));
        int ok = 1;
        for (int i = 0; i < 5; i++) ok &= w[i] == 1 && b[i] == 0 && rm[i] == 0 && rv[i] == 1;
        CHECK_MSG(ok, "BatchNorm3d init: weight 1, bias 0, running_mean 0, running_var 1");
        CHECK(mt_tensor_item(mt_module_buffer(m, "num_batches_tracked")) == 0);
        free(w);
        free(b);
        free(rm);
        free(rv);
    }
    mt_module_free(m);
    m = mt_instance_norm3d_new(3, 1e-5f, 0);
    check_state_dict("InstanceNorm3d", m, NULL, 0);
    mt_module_free(m);
    m = mt_instance_norm3d_new(3, 1e-5f, 1);
    check_state_dict("InstanceNorm3d(affine)", m, (expect_t[]){{"weight", "(3)"}, {"bias", "(3)"}}, 2);
    mt_module_free(m);
    m = mt_group_norm_new(2, 4, 1e-5f, 1);
    check_state_dict("GroupNorm", m, (expect_t[]){{"weight", "(4)"}, {"bias", "(4)"}}, 2);
    mt_module_free(m);
    m = mt_layer_norm_new(2, (int64_t[]){4, 5}, 1e-5f, 1);
    check_state_dict("LayerNorm", m, (expect_t[]){{"weight", "(4, 5)"}, {"bias", "(4, 5)"}}, 2);
    CHECK(mt_tensor_get_flat(mt_module_param(m, "weight"), 19) == 1.0 &&
          mt_tensor_get_flat(mt_module_param(m, "bias"), 7) == 0.0);
    mt_module_free(m);
    m = mt_linear_new(7, 5, 1, &rng);
    check_state_dict("Linear", m, (expect_t[]){{"weight", "(5, 7)"}, {"bias", "(5)"}}, 2);
    mt_module_free(m);
    m = mt_linear_new(7, 5, 0, &rng);
    check_state_dict("Linear(bias=False)", m, (expect_t[]){{"weight", "(5, 7)"}}, 1);
    mt_module_free(m);
    m = mt_max_pool3d_new(2, 2, 0);
    check_state_dict("MaxPool3d", m, NULL, 0);
    mt_module_free(m);
}

/* Uniform U(-bound, bound): every value inside, extremes near the bound,
 * mean near 0 and variance near bound^2 / 3. */
static void check_uniform(const char *what, const mt_tensor *t, double bound) {
    int64_t n = mt_tensor_numel(t);
    double *v = mt_test_to_f64(t);
    double mx = 0, sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(v[i]));
        sum += v[i];
        sq += v[i] * v[i];
    }
    double mean = sum / n, var = sq / n - mean * mean, sd_mean = bound / sqrt(3.0 * n);
    CHECK_MSG(mx <= bound * (1 + 1e-6), "%s: max |w| %.6g exceeds bound %.6g", what, mx, bound);
    CHECK_MSG(mx >= bound * (1 - 20.0 / n), "%s: max |w| %.6g far below bound %.6g", what, mx, bound);
    CHECK_MSG(fabs(mean) <= 5 * sd_mean, "%s: mean %.4g (bound %.4g)", what, mean, bound);
    CHECK_MSG(fabs(var / (bound * bound / 3) - 1) < 6 * sqrt(0.8 / n) + 0.01,
              "%s: variance %.6g, uniform would give %.6g", what, var, bound * bound / 3);
    free(v);
}

static void test_init(void) {
    mt_rng rng;
    mt_rng_init(&rng, 1234);
    mt_conv3d_opts o = mt_conv3d_opts_make(3, 1, 1, 1);
    mt_module *c = mt_conv3d_new(16, 32, &o, &rng); /* fan_in = 16 * 27 */
    check_uniform("Conv3d weight", mt_module_param(c, "weight"), 1 / sqrt(16.0 * 27));
    /* bias: 32 values, only check the range and that it is not all zero */
    {
        double *b = mt_test_to_f64(mt_module_param(c, "bias"));
        double mx = 0;
        for (int i = 0; i < 32; i++) mx = fmax(mx, fabs(b[i]));
        CHECK_MSG(mx <= 1 / sqrt(16.0 * 27) && mx > 0.5 / sqrt(16.0 * 27),
                  "Conv3d bias range: max %.5g", mx);
        free(b);
    }
    /* ConvTranspose3d: torch takes fan_in from weight dim 1 = Cout/groups */
    o = mt_conv3d_opts_make(2, 2, 0, 1);
    mt_module *t = mt_conv_transpose3d_new(32, 12, &o, &rng);
    check_uniform("ConvTranspose3d weight", mt_module_param(t, "weight"), 1 / sqrt(12.0 * 8));
    mt_module *lin = mt_linear_new(300, 200, 1, &rng);
    check_uniform("Linear weight", mt_module_param(lin, "weight"), 1 / sqrt(300.0));
    /* same seed -> same weights; another seed -> different */
    mt_rng r1, r2;
    mt_rng_init(&r1, 99);
    mt_rng_init(&r2, 99);
    o = mt_conv3d_opts_make(3, 1, 1, 1);
    mt_module *a = mt_conv3d_new(2, 3, &o, &r1), *b = mt_conv3d_new(2, 3, &o, &r2);
    mt_module *d = mt_conv3d_new(2, 3, &o, &r1);
    double *wa = mt_test_to_f64(mt_module_param(a, "weight")),
           *wb = mt_test_to_f64(mt_module_param(b, "weight")),
           *wd = mt_test_to_f64(mt_module_param(d, "weight"));
    CHECK(!memcmp(wa, wb, sizeof(double) * 162));
    CHECK(memcmp(wa, wd, sizeof(double) * 162) != 0);
    free(wa);
    free(wb);
    free(wd);
    mt_module_free(a);
    mt_module_free(b);
    mt_module_free(d);
    mt_module_free(c);
    mt_module_free(t);
    mt_module_free(lin);
}

/* ------------------------------------------------ layer forward wiring */

/* Naive conv3d in double. xs (N, Cin, D, H, W), ws (Cout, Cin/g, k...). */
static double *ref_conv3d(const double *x, const int64_t *xs, const double *w, const int64_t *ws,
                          const double *b, const mt_conv3d_opts *o, int64_t *ys) {
    int64_t N = xs[0], Cin = xs[1], Cout = ws[0], g = o->groups, cig = Cin / g, cog = Cout / g;
    ys[0] = N;
    ys[1] = Cout;
    for (int d = 0; d < 3; d++)
        ys[2 + d] = (xs[2 + d] + 2 * o->padding[d] - o->dilation[d] * (ws[2 + d] - 1) - 1) /
                        o->stride[d] + 1;
    double *y = calloc((size_t)(ys[0] * ys[1] * ys[2] * ys[3] * ys[4]), sizeof(double));
    for (int64_t n = 0; n < N; n++)
        for (int64_t co = 0; co < Cout; co++)
            for (int64_t od = 0; od < ys[2]; od++)
                for (int64_t oh = 0; oh < ys[3]; oh++)
                    for (int64_t ow = 0; ow < ys[4]; ow++) {
                        double acc = b ? b[co] : 0;
                        int64_t grp = co / cog;
                        for (int64_t ci = 0; ci < cig; ci++)
                            for (int64_t kd = 0; kd < ws[2]; kd++)
                                for (int64_t kh = 0; kh < ws[3]; kh++)
                                    for (int64_t kw = 0; kw < ws[4]; kw++) {
                                        int64_t id = od * o->stride[0] - o->padding[0] + kd * o->dilation[0];
                                        int64_t ih = oh * o->stride[1] - o->padding[1] + kh * o->dilation[1];
                                        int64_t iw = ow * o->stride[2] - o->padding[2] + kw * o->dilation[2];
                                        if (id < 0 || ih < 0 || iw < 0 || id >= xs[2] || ih >= xs[3] ||
                                            iw >= xs[4])
                                            continue;
                                        acc += x[idx5(xs, n, grp * cig + ci, id, ih, iw)] *
                                               w[idx5(ws, co, ci, kd, kh, kw)];
                                    }
                        y[idx5(ys, n, co, od, oh, ow)] = acc;
                    }
    return y;
}

/* Naive transposed conv (dilation 1, no output padding), ws (Cin, Cout/g, k...). */
static double *ref_conv_transpose3d(const double *x, const int64_t *xs, const double *w,
                                    const int64_t *ws, const double *b, const mt_conv3d_opts *o,
                                    int64_t *ys) {
    int64_t N = xs[0], Cin = xs[1], g = o->groups, cog = ws[1], cig = Cin / g, Cout = cog * g;
    ys[0] = N;
    ys[1] = Cout;
    for (int d = 0; d < 3; d++) ys[2 + d] = (xs[2 + d] - 1) * o->stride[d] - 2 * o->padding[d] + ws[2 + d];
    int64_t ny = ys[0] * ys[1] * ys[2] * ys[3] * ys[4];
    double *y = calloc((size_t)ny, sizeof(double));
    for (int64_t n = 0; n < N; n++)
        for (int64_t co = 0; co < Cout; co++)
            for (int64_t v = 0; v < ys[2] * ys[3] * ys[4]; v++)
                y[(n * Cout + co) * ys[2] * ys[3] * ys[4] + v] = b ? b[co] : 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t ci = 0; ci < Cin; ci++)
            for (int64_t id = 0; id < xs[2]; id++)
                for (int64_t ih = 0; ih < xs[3]; ih++)
                    for (int64_t iw = 0; iw < xs[4]; iw++)
                        for (int64_t cl = 0; cl < cog; cl++)
                            for (int64_t kd = 0; kd < ws[2]; kd++)
                                for (int64_t kh = 0; kh < ws[3]; kh++)
                                    for (int64_t kw = 0; kw < ws[4]; kw++) {
                                        int64_t od = id * o->stride[0] - o->padding[0] + kd;
                                        int64_t oh = ih * o->stride[1] - o->padding[1] + kh;
                                        int64_t ow = iw * o->stride[2] - o->padding[2] + kw;
                                        if (od < 0 || oh < 0 || ow < 0 || od >= ys[2] || oh >= ys[3] ||
                                            ow >= ys[4])
                                            continue;
                                        int64_t co = (ci / cig) * cog + cl;
                                        y[idx5(ys, n, co, od, oh, ow)] +=
                                            x[idx5(xs, n, ci, id, ih, iw)] * w[idx5(ws, ci, cl, kd, kh, kw)];
                                    }
    return y;
}

static void test_conv_layers(void) {
    mt_rng rng;
    mt_rng_init(&rng, 21);
    /* Conv3d, non-cubic kernel, stride, padding, groups */
    mt_conv3d_opts o = mt_conv3d_opts_make(3, 1, 1, 1);
    o.kernel[1] = 1;
    o.kernel[2] = 2;
    o.stride[1] = 2;
    o.padding[1] = 0;
    o.padding[2] = 0;
    o.groups = 2;
    mt_module *c = mt_conv3d_new(4, 6, &o, &rng);
    CHECK(mt_conv3d_get_opts(c)->stride[1] == 2 && mt_conv3d_get_opts(c)->groups == 2);
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 4, 5, 6, 7), -1, 1);
    mt_tensor *y = mt_module_forward(c, x);
    mt_tensor *w = mt_module_param(c, "weight");
    double *xd = mt_test_to_f64(x), *wd = mt_test_to_f64(w), *bd = mt_test_to_f64(mt_module_param(c, "bias"));
    int64_t ys[5];
    double *ref = ref_conv3d(xd, x->shape, wd, w->shape, bd, &o, ys);
    CHECK(y->ndim == 5 && y->shape[0] == 2 && y->shape[1] == 6 && y->shape[2] == 5 &&
          y->shape[3] == 3 && y->shape[4] == 6);
    CHECK(ys[2] == 5 && ys[3] == 3 && ys[4] == 6);
    mt_test_allclose(y, ref, 1e-5, 1e-4, "Conv3d module vs naive reference");
    free(xd);
    free(wd);
    free(bd);
    free(ref);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(c);

    /* Conv3d stride 2 (the UNet downsampling conv), no bias */
    o = mt_conv3d_opts_make(3, 2, 1, 0);
    c = mt_conv3d_new(3, 4, &o, &rng);
    x = mt_test_rand(MT_SHAPE(1, 3, 6, 5, 8), -1, 1);
    y = mt_module_forward(c, x);
    w = mt_module_param(c, "weight");
    xd = mt_test_to_f64(x);
    wd = mt_test_to_f64(w);
    ref = ref_conv3d(xd, x->shape, wd, w->shape, NULL, &o, ys);
    CHECK(y->shape[2] == 3 && y->shape[3] == 3 && y->shape[4] == 4);
    mt_test_allclose(y, ref, 1e-5, 1e-4, "Conv3d stride 2 vs naive reference");
    free(xd);
    free(wd);
    free(ref);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(c);

    /* ConvTranspose3d k2 s2 with groups */
    o = mt_conv3d_opts_make(2, 2, 0, 1);
    o.groups = 2;
    c = mt_conv_transpose3d_new(4, 6, &o, &rng);
    x = mt_test_rand(MT_SHAPE(2, 4, 3, 2, 3), -1, 1);
    y = mt_module_forward(c, x);
    w = mt_module_param(c, "weight");
    xd = mt_test_to_f64(x);
    wd = mt_test_to_f64(w);
    bd = mt_test_to_f64(mt_module_param(c, "bias"));
    ref = ref_conv_transpose3d(xd, x->shape, wd, w->shape, bd, &o, ys);
    CHECK(y->shape[1] == 6 && y->shape[2] == 6 && y->shape[3] == 4 && y->shape[4] == 6);
    mt_test_allclose(y, ref, 1e-5, 1e-4, "ConvTranspose3d module vs naive reference");
    free(xd);
    free(wd);
    free(bd);
    free(ref);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(c);

    /* Linear over a 3-d input */
    mt_module *lin = mt_linear_new(7, 5, 1, &rng);
    x = mt_test_rand(MT_SHAPE(3, 2, 7), -1, 1);
    y = mt_module_forward(lin, x);
    xd = mt_test_to_f64(x);
    wd = mt_test_to_f64(mt_module_param(lin, "weight"));
    bd = mt_test_to_f64(mt_module_param(lin, "bias"));
    ref = malloc(sizeof(double) * 30);
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 5; j++) {
            double a = bd[j];
            for (int i = 0; i < 7; i++) a += xd[r * 7 + i] * wd[j * 7 + i];
            ref[r * 5 + j] = a;
        }
    CHECK(y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 2 && y->shape[2] == 5);
    mt_test_allclose(y, ref, 1e-5, 1e-5, "Linear module vs naive reference");
    free(xd);
    free(wd);
    free(bd);
    free(ref);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(lin);
}

/* Reference normalisation of x (N, C, S) in groups of C/G channels. */
static double *ref_group_norm(const double *x, int64_t N, int64_t C, int64_t S, int64_t G,
                              const double *w, const double *b, double eps) {
    double *y = malloc(sizeof(double) * (size_t)(N * C * S));
    int64_t cg = C / G;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            const double *p = x + (n * C + g * cg) * S;
            double m = 0, v = 0;
            for (int64_t i = 0; i < cg * S; i++) m += p[i];
            m /= cg * S;
            for (int64_t i = 0; i < cg * S; i++) v += (p[i] - m) * (p[i] - m);
            v /= cg * S;
            for (int64_t i = 0; i < cg * S; i++) {
                int64_t c = g * cg + i / S;
                double z = (p[i] - m) / sqrt(v + eps);
                y[(n * C + g * cg) * S + i] = w ? z * w[c] + b[c] : z;
            }
        }
    return y;
}

static void test_norm_layers(void) {
    /* InstanceNorm3d(affine) with non-trivial weight/bias, same in eval */
    mt_module *m = mt_instance_norm3d_new(3, 1e-5f, 1);
    fill_rand(mt_module_param(m, "weight"), 0.5f, 1.5f);
    fill_rand(mt_module_param(m, "bias"), -0.5f, 0.5f);
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 3, 4, 3, 5), -2, 3);
    double *xd = mt_test_to_f64(x), *wd = mt_test_to_f64(mt_module_param(m, "weight")),
           *bd = mt_test_to_f64(mt_module_param(m, "bias"));
    double *ref = ref_group_norm(xd, 2, 3, 60, 3, wd, bd, 1e-5);
    mt_tensor *y = mt_module_forward(m, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "InstanceNorm3d(affine) train");
    mt_tensor_release(y);
    mt_module_train(m, 0);
    y = mt_module_forward(m, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "InstanceNorm3d(affine) eval uses instance stats");
    mt_tensor_release(y);
    free(wd);
    free(bd);
    free(ref);
    mt_module_free(m);
    m = mt_instance_norm3d_new(3, 1e-5f, 0);
    ref = ref_group_norm(xd, 2, 3, 60, 3, NULL, NULL, 1e-5);
    y = mt_module_forward(m, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "InstanceNorm3d");
    mt_tensor_release(y);
    free(ref);
    free(xd);
    mt_tensor_release(x);
    mt_module_free(m);

    /* GroupNorm(2, 4) */
    m = mt_group_norm_new(2, 4, 1e-5f, 1);
    fill_rand(mt_module_param(m, "weight"), 0.5f, 1.5f);
    fill_rand(mt_module_param(m, "bias"), -0.5f, 0.5f);
    x = mt_test_rand(MT_SHAPE(2, 4, 3, 2, 5), -1, 2);
    xd = mt_test_to_f64(x);
    wd = mt_test_to_f64(mt_module_param(m, "weight"));
    bd = mt_test_to_f64(mt_module_param(m, "bias"));
    ref = ref_group_norm(xd, 2, 4, 30, 2, wd, bd, 1e-5);
    y = mt_module_forward(m, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "GroupNorm(2, 4)");
    mt_tensor_release(y);
    free(xd);
    free(wd);
    free(bd);
    free(ref);
    mt_tensor_release(x);
    mt_module_free(m);

    /* LayerNorm over the last two dims */
    m = mt_layer_norm_new(2, (int64_t[]){4, 5}, 1e-5f, 1);
    fill_rand(mt_module_param(m, "weight"), 0.5f, 1.5f);
    fill_rand(mt_module_param(m, "bias"), -0.5f, 0.5f);
    x = mt_test_rand(MT_SHAPE(2, 3, 4, 5), -1, 2);
    xd = mt_test_to_f64(x);
    wd = mt_test_to_f64(mt_module_param(m, "weight"));
    bd = mt_test_to_f64(mt_module_param(m, "bias"));
    ref = malloc(sizeof(double) * 120);
    for (int r = 0; r < 6; r++) {
        double mu = 0, v = 0;
        for (int i = 0; i < 20; i++) mu += xd[r * 20 + i];
        mu /= 20;
        for (int i = 0; i < 20; i++) v += (xd[r * 20 + i] - mu) * (xd[r * 20 + i] - mu);
        v /= 20;
        for (int i = 0; i < 20; i++)
            ref[r * 20 + i] = (xd[r * 20 + i] - mu) / sqrt(v + 1e-5) * wd[i] + bd[i];
    }
    y = mt_module_forward(m, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "LayerNorm([4, 5])");
    mt_tensor_release(y);
    free(xd);
    free(wd);
    free(bd);
    free(ref);
    mt_tensor_release(x);
    mt_module_free(m);
}

static void test_batch_norm_train_eval(void) {
    const int64_t N = 3, C = 4, S = 3 * 4 * 5;
    const double eps = 1e-5, mom = 0.1;
    mt_module *bn = mt_batch_norm3d_new((int)C, (float)eps, (float)mom);
    fill_rand(mt_module_param(bn, "weight"), 0.5f, 1.5f);
    fill_rand(mt_module_param(bn, "bias"), -0.5f, 0.5f);
    double *w = mt_test_to_f64(mt_module_param(bn, "weight")),
           *b = mt_test_to_f64(mt_module_param(bn, "bias"));
    double rm[4] = {0, 0, 0, 0}, rv[4] = {1, 1, 1, 1};
    for (int step = 1; step <= 2; step++) {
        mt_tensor *x = mt_test_rand(MT_SHAPE(N, C, 3, 4, 5), -1, 1);
        float *xp = MT_F32P(x); /* channel c offset by c: non-zero means */
        for (int64_t i = 0; i < N * C * S; i++) xp[i] += (float)((i / S) % C) * (step + 0.5f);
        double *xd = mt_test_to_f64(x);
        double *ref = malloc(sizeof(double) * (size_t)(N * C * S));
        for (int64_t c = 0; c < C; c++) {
            double m = 0, v = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) m += xd[(n * C + c) * S + s];
            m /= N * S;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) v += pow(xd[(n * C + c) * S + s] - m, 2);
            v /= N * S;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++)
                    ref[(n * C + c) * S + s] = (xd[(n * C + c) * S + s] - m) / sqrt(v + eps) * w[c] + b[c];
            rm[c] = (1 - mom) * rm[c] + mom * m;
            rv[c] = (1 - mom) * rv[c] + mom * v * (N * S) / (N * S - 1); /* unbiased */
        }
        mt_tensor *y = mt_module_forward(bn, x);
        mt_test_allclose(y, ref, 1e-4, 1e-4, "BatchNorm3d train: batch statistics");
        mt_test_allclose(mt_module_buffer(bn, "running_mean"), rm, 1e-5, 1e-4,
                         "BatchNorm3d running_mean after train step");
        mt_test_allclose(mt_module_buffer(bn, "running_var"), rv, 1e-5, 1e-4,
                         "BatchNorm3d running_var after train step");
        CHECK_NEAR(mt_tensor_item(mt_module_buffer(bn, "num_batches_tracked")), step, 0);
        free(ref);
        free(xd);
        mt_tensor_release(y);
        mt_tensor_release(x);
    }
    /* eval: running statistics, buffers untouched */
    mt_module_train(bn, 0);
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, C, 2, 3, 3), -2, 2);
    double *xd = mt_test_to_f64(x);
    double *ref = malloc(sizeof(double) * (size_t)(2 * C * 18));
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < 18; s++)
                ref[(n * C + c) * 18 + s] = (xd[(n * C + c) * 18 + s] - rm[c]) / sqrt(rv[c] + eps) * w[c] + b[c];
    mt_tensor *y = mt_module_forward(bn, x);
    mt_test_allclose(y, ref, 1e-4, 1e-4, "BatchNorm3d eval: running statistics");
    mt_test_allclose(mt_module_buffer(bn, "running_mean"), rm, 1e-5, 1e-4,
                     "BatchNorm3d running_mean unchanged in eval");
    mt_test_allclose(mt_module_buffer(bn, "running_var"), rv, 1e-5, 1e-4,
                     "BatchNorm3d running_var unchanged in eval");
    CHECK_NEAR(mt_tensor_item(mt_module_buffer(bn, "num_batches_tracked")), 2, 0);
    free(xd);
    free(ref);
    free(w);
    free(b);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(bn);
}

static void test_misc_layers(void) {
    /* Dropout: train zeroes ~p and scales the rest by 1/(1-p); eval is the identity */
    const float p = 0.3f;
    mt_module *d = mt_dropout_new(p, 77);
    mt_tensor *x = mt_test_rand(MT_SHAPE(4, 1000), 1, 2);
    mt_tensor *y1 = mt_module_forward(d, x), *y2 = mt_module_forward(d, x);
    double *xd = mt_test_to_f64(x), *a = mt_test_to_f64(y1), *b = mt_test_to_f64(y2);
    int64_t zeros = 0, bad = 0, differ = 0;
    for (int i = 0; i < 4000; i++) {
        if (a[i] == 0)
            zeros++;
        else if (fabs(a[i] - xd[i] / (1 - p)) > 1e-5)
            bad++;
        differ += (a[i] == 0) != (b[i] == 0);
    }
    CHECK_MSG(fabs(zeros / 4000.0 - p) < 0.03, "dropout zero fraction %.4f vs p %.2f",
              zeros / 4000.0, p);
    CHECK_MSG(bad == 0, "dropout: %lld kept values not scaled by 1/(1-p)", (long long)bad);
    CHECK_MSG(differ > 100, "dropout: consecutive masks differ in only %lld places", (long long)differ);
    mt_module_train(d, 0);
    mt_tensor *ye = mt_module_forward(d, x);
    mt_test_allclose(ye, xd, 1e-12, 0, "dropout eval is the identity");
    free(xd);
    free(a);
    free(b);
    mt_tensor_release(y1);
    mt_tensor_release(y2);
    mt_tensor_release(ye);
    mt_tensor_release(x);
    mt_module_free(d);

    /* MaxPool3d(2) with odd sizes (floor) */
    mt_module *mp = mt_max_pool3d_new(2, 2, 0);
    x = mt_test_rand(MT_SHAPE(1, 2, 4, 6, 5), -1, 1);
    mt_tensor *y = mt_module_forward(mp, x);
    CHECK(y->shape[2] == 2 && y->shape[3] == 3 && y->shape[4] == 2);
    double ref[24];
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 2; k++) {
                    double m = -1e30;
                    for (int u = 0; u < 8; u++)
                        m = fmax(m, mt_tensor_get(x, (int64_t[]){0, c, 2 * i + (u >> 2), 2 * j + ((u >> 1) & 1), 2 * k + (u & 1)}));
                    ref[((c * 2 + i) * 3 + j) * 2 + k] = m;
                }
    mt_test_allclose(y, ref, 1e-12, 0, "MaxPool3d(2)");
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(mp);

    /* activations */
    x = mt_test_rand(MT_SHAPE(3, 7), -3, 3);
    xd = mt_test_to_f64(x);
    mt_act_type types[4] = {MT_ACT_RELU, MT_ACT_LEAKY_RELU, MT_ACT_GELU, MT_ACT_SIGMOID};
    for (int t = 0; t < 4; t++) {
        mt_module *act = mt_activation_new(types[t], 0.2f);
        y = mt_module_forward(act, x);
        double r[21];
        for (int i = 0; i < 21; i++) {
            double v = xd[i];
            r[i] = t == 0 ? fmax(v, 0) : t == 1 ? (v > 0 ? v : 0.2 * v)
                 : t == 2 ? 0.5 * v * (1 + erf(v / sqrt(2.0))) : 1 / (1 + exp(-v));
        }
        mt_test_allclose(y, r, 1e-6, 1e-5, mt_act_type_name(types[t]));
        CHECK(!strcmp(act->type, mt_act_type_name(types[t])));
        mt_tensor_release(y);
        mt_module_free(act);
    }
    free(xd);
    mt_tensor_release(x);
}

/* --------------------------------------------------------------- UNet3D */

static void small_config(mt_unet3d_config *c) {
    mt_unet3d_config_default(c);
    c->in_channels = 1;
    c->out_channels = 3;
    c->n_levels = 3;
    c->features[0] = 2;
    c->features[1] = 4;
    c->features[2] = 8;
    c->norm = MT_NORM_BATCH;
    c->deep_supervision = 1;
}

/* What `python experiments/unet3d_torch.py --features 2 4 8 --in-channels 1
 * --out-channels 3 --norm batch --deep-supervision` prints. */
static const expect_t unet_bn_ds[] = {
    {"enc1.conv1.weight", "(2, 1, 3, 3, 3)"}, {"enc1.conv1.bias", "(2)"},
    {"enc1.norm1.weight", "(2)"}, {"enc1.norm1.bias", "(2)"},
    {"enc1.norm1.running_mean", "(2)"}, {"enc1.norm1.running_var", "(2)"},
    {"enc1.norm1.num_batches_tracked", "()"},
    {"enc1.conv2.weight", "(2, 2, 3, 3, 3)"}, {"enc1.conv2.bias", "(2)"},
    {"enc1.norm2.weight", "(2)"}, {"enc1.norm2.bias", "(2)"},
    {"enc1.norm2.running_mean", "(2)"}, {"enc1.norm2.running_var", "(2)"},
    {"enc1.norm2.num_batches_tracked", "()"},
    {"enc2.conv1.weight", "(4, 2, 3, 3, 3)"}, {"enc2.conv1.bias", "(4)"},
    {"enc2.norm1.weight", "(4)"}, {"enc2.norm1.bias", "(4)"},
    {"enc2.norm1.running_mean", "(4)"}, {"enc2.norm1.running_var", "(4)"},
    {"enc2.norm1.num_batches_tracked", "()"},
    {"enc2.conv2.weight", "(4, 4, 3, 3, 3)"}, {"enc2.conv2.bias", "(4)"},
    {"enc2.norm2.weight", "(4)"}, {"enc2.norm2.bias", "(4)"},
    {"enc2.norm2.running_mean", "(4)"}, {"enc2.norm2.running_var", "(4)"},
    {"enc2.norm2.num_batches_tracked", "()"},
    {"enc3.conv1.weight", "(8, 4, 3, 3, 3)"}, {"enc3.conv1.bias", "(8)"},
    {"enc3.norm1.weight", "(8)"}, {"enc3.norm1.bias", "(8)"},
    {"enc3.norm1.running_mean", "(8)"}, {"enc3.norm1.running_var", "(8)"},
    {"enc3.norm1.num_batches_tracked", "()"},
    {"enc3.conv2.weight", "(8, 8, 3, 3, 3)"}, {"enc3.conv2.bias", "(8)"},
    {"enc3.norm2.weight", "(8)"}, {"enc3.norm2.bias", "(8)"},
    {"enc3.norm2.running_mean", "(8)"}, {"enc3.norm2.running_var", "(8)"},
    {"enc3.norm2.num_batches_tracked", "()"},
    {"up2.weight", "(8, 4, 2, 2, 2)"}, {"up2.bias", "(4)"},
    {"dec2.conv1.weight", "(4, 8, 3, 3, 3)"}, {"dec2.conv1.bias", "(4)"},
    {"dec2.norm1.weight", "(4)"}, {"dec2.norm1.bias", "(4)"},
    {"dec2.norm1.running_mean", "(4)"}, {"dec2.norm1.running_var", "(4)"},
    {"dec2.norm1.num_batches_tracked", "()"},
    {"dec2.conv2.weight", "(4, 4, 3, 3, 3)"}, {"dec2.conv2.bias", "(4)"},
    {"dec2.norm2.weight", "(4)"}, {"dec2.norm2.bias", "(4)"},
    {"dec2.norm2.running_mean", "(4)"}, {"dec2.norm2.running_var", "(4)"},
    {"dec2.norm2.num_batches_tracked", "()"},
    {"ds2.weight", "(3, 4, 1, 1, 1)"}, {"ds2.bias", "(3)"},
    {"up1.weight", "(4, 2, 2, 2, 2)"}, {"up1.bias", "(2)"},
    {"dec1.conv1.weight", "(2, 4, 3, 3, 3)"}, {"dec1.conv1.bias", "(2)"},
    {"dec1.norm1.weight", "(2)"}, {"dec1.norm1.bias", "(2)"},
    {"dec1.norm1.running_mean", "(2)"}, {"dec1.norm1.running_var", "(2)"},
    {"dec1.norm1.num_batches_tracked", "()"},
    {"dec1.conv2.weight", "(2, 2, 3, 3, 3)"}, {"dec1.conv2.bias", "(2)"},
    {"dec1.norm2.weight", "(2)"}, {"dec1.norm2.bias", "(2)"},
    {"dec1.norm2.running_mean", "(2)"}, {"dec1.norm2.running_var", "(2)"},
    {"dec1.norm2.num_batches_tracked", "()"},
    {"head.weight", "(3, 2, 1, 1, 1)"}, {"head.bias", "(3)"},
};

/* `--features 2 4 --in-channels 2 --out-channels 3 --norm instance
 * --upsample trilinear --downsample maxpool --dropout 0.2` */
static const expect_t unet_in_tri[] = {
    {"enc1.conv1.weight", "(2, 2, 3, 3, 3)"}, {"enc1.conv1.bias", "(2)"},
    {"enc1.norm1.weight", "(2)"}, {"enc1.norm1.bias", "(2)"},
    {"enc1.conv2.weight", "(2, 2, 3, 3, 3)"}, {"enc1.conv2.bias", "(2)"},
    {"enc1.norm2.weight", "(2)"}, {"enc1.norm2.bias", "(2)"},
    {"enc2.conv1.weight", "(4, 2, 3, 3, 3)"}, {"enc2.conv1.bias", "(4)"},
    {"enc2.norm1.weight", "(4)"}, {"enc2.norm1.bias", "(4)"},
    {"enc2.conv2.weight", "(4, 4, 3, 3, 3)"}, {"enc2.conv2.bias", "(4)"},
    {"enc2.norm2.weight", "(4)"}, {"enc2.norm2.bias", "(4)"},
    {"up1.conv.weight", "(2, 4, 1, 1, 1)"}, {"up1.conv.bias", "(2)"},
    {"dec1.conv1.weight", "(2, 4, 3, 3, 3)"}, {"dec1.conv1.bias", "(2)"},
    {"dec1.norm1.weight", "(2)"}, {"dec1.norm1.bias", "(2)"},
    {"dec1.conv2.weight", "(2, 2, 3, 3, 3)"}, {"dec1.conv2.bias", "(2)"},
    {"dec1.norm2.weight", "(2)"}, {"dec1.norm2.bias", "(2)"},
    {"head.weight", "(3, 2, 1, 1, 1)"}, {"head.bias", "(3)"},
};

static void test_unet_config(void) {
    mt_unet3d_config c;
    mt_unet3d_config_default(&c);
    CHECK(mt_unet3d_config_validate(&c) == MT_OK);
    CHECK(c.n_levels == 5 && c.features[4] == 320 && c.norm == MT_NORM_INSTANCE);
    /* patch not divisible by 2^(5-1) = 16: message names the patch and factor */
    mt_status st = mt_unet3d_check_patch(&c, (int64_t[]){40, 56, 40});
    CHECK(st == MT_ERR_CONFIG);
    CHECK_MSG(strstr(mt_error_msg(), "40x56x40") && strstr(mt_error_msg(), "16"),
              "patch message: %s", mt_error_msg());
    CHECK(mt_unet3d_check_patch(&c, (int64_t[]){32, 64, 48}) == MT_OK);
    c.n_levels = 4;
    CHECK(mt_unet3d_check_patch(&c, (int64_t[]){40, 56, 40}) == MT_OK);
    CHECK(mt_unet3d_check_patch(&c, (int64_t[]){0, 56, 40}) != MT_OK);

    mt_unet3d_config_default(&c);
    c.features[1] = 0;
    CHECK(mt_unet3d_config_validate(&c) == MT_ERR_CONFIG);
    CHECK_MSG(strstr(mt_error_msg(), "features[1]"), "message: %s", mt_error_msg());
    mt_module *m = (mt_module *)1;
    CHECK(mt_unet3d_new(&m, &c, 1) == MT_ERR_CONFIG && m == NULL);
    mt_unet3d_config_default(&c);
    c.n_levels = 0;
    CHECK(mt_unet3d_config_validate(&c) != MT_OK);
    mt_unet3d_config_default(&c);
    c.norm = MT_NORM_GROUP;
    c.norm_groups = 3;
    CHECK(mt_unet3d_config_validate(&c) == MT_ERR_CONFIG);
    CHECK_MSG(strstr(mt_error_msg(), "norm_groups"), "message: %s", mt_error_msg());
    c.norm_groups = 16;
    CHECK(mt_unet3d_config_validate(&c) == MT_OK);
    mt_unet3d_config_default(&c);
    c.dropout = 1.0f;
    CHECK(mt_unet3d_config_validate(&c) != MT_OK && strstr(mt_error_msg(), "dropout"));
    mt_unet3d_config_default(&c);
    c.in_channels = 0;
    CHECK(mt_unet3d_config_validate(&c) != MT_OK && strstr(mt_error_msg(), "in_channels"));
    mt_unet3d_config_default(&c);
    c.act = MT_ACT_SIGMOID;
    CHECK(mt_unet3d_config_validate(&c) != MT_OK && strstr(mt_error_msg(), "activation"));
    mt_unet3d_config_default(&c);
    c.n_levels = 2;
    c.deep_supervision = 1;
    CHECK(mt_unet3d_config_validate(&c) != MT_OK && strstr(mt_error_msg(), "deep_supervision"));

    /* FLOPs: hand count for features [2, 4], 1 -> 3 channels, 8^3, batch 1
     * enc1 512*2*1*27 + 512*2*2*27, enc2 64*4*2*27 + 64*4*4*27,
     * up1 (transposed k2 s2) 512*4*2, dec1 512*2*4*27 + 512*2*2*27, head 512*2*3 */
    mt_unet3d_config_default(&c);
    c.out_channels = 3;
    c.n_levels = 2;
    c.features[0] = 2;
    c.features[1] = 4;
    double macs = 82944 + 41472 + 4096 + 165888 + 3072;
    CHECK_NEAR(mt_unet3d_flops(&c, 1, (int64_t[]){8, 8, 8}), 2 * macs, 0);
    CHECK_NEAR(mt_unet3d_flops(&c, 3, (int64_t[]){8, 8, 8}), 6 * macs, 0);
    c.upsample = MT_UPSAMPLE_TRILINEAR; /* 1x1x1 conv at the coarse level: 64*4*2 */
    CHECK_NEAR(mt_unet3d_flops(&c, 1, (int64_t[]){8, 8, 8}), 2 * (macs - 4096 + 512), 0);
}

static void test_unet_names(void) {
    mt_unet3d_config c;
    small_config(&c);
    mt_module *m = NULL;
    CHECK(mt_unet3d_new(&m, &c, 3) == MT_OK && m);
    check_state_dict("UNet3D(batch, ds)", m, unet_bn_ds, (int)(sizeof unet_bn_ds / sizeof *unet_bn_ds));
    CHECK(mt_unet3d_get_config(m)->features[2] == 8);
    /* parameter count: state_dict minus buffers */
    mt_named_tensors p = {0};
    mt_module_named_parameters(m, &p);
    int64_t n = 0;
    for (int i = 0; i < p.n; i++) n += mt_tensor_numel(p.items[i].tensor);
    CHECK(n == mt_module_num_params(m) && p.n == mt_module_num_param_tensors(m));
    CHECK(p.n == 78 - 10 * 3); /* 78 entries, 10 norms x 3 buffers */
    mt_named_tensors_free(&p);
    /* norms initialised, conv bias within its bound */
    mt_tensor *rv = mt_module_get_tensor(m, "dec2.norm1.running_var");
    CHECK(rv && mt_tensor_get_flat(rv, 0) == 1.0);
    mt_tensor_release(rv);
    mt_module_free(m);

    mt_unet3d_config_default(&c);
    c.in_channels = 2;
    c.out_channels = 3;
    c.n_levels = 2;
    c.features[0] = 2;
    c.features[1] = 4;
    c.upsample = MT_UPSAMPLE_TRILINEAR;
    c.downsample = MT_DOWNSAMPLE_MAXPOOL;
    c.dropout = 0.2f;
    CHECK(mt_unet3d_new(&m, &c, 3) == MT_OK);
    check_state_dict("UNet3D(instance, trilinear, maxpool)", m, unet_in_tri,
                     (int)(sizeof unet_in_tri / sizeof *unet_in_tri));
    CHECK(mt_module_find(m, "enc2.pool") && !mt_module_find(m, "enc1.pool"));
    CHECK(mt_module_find(m, "dec1.drop2") && !strcmp(mt_module_find(m, "dec1.drop2")->type, "Dropout"));
    CHECK(!strcmp(mt_module_find(m, "enc1.act1")->type, "LeakyReLU"));
    mt_module_free(m);
}

typedef struct {
    int count;
    int64_t elems;
} hook_counter;

static void count_hook(mt_tensor *leaf, void *ctx) {
    hook_counter *h = ctx;
    h->count++;
    h->elems += leaf->grad ? mt_tensor_numel(leaf->grad) : 0;
}

/* sum(t * r) for random r: a loss whose gradient reaches every parameter. */
static mt_tensor *random_projection(const mt_tensor *t) {
    mt_tensor *r = mt_test_rand(t->ndim, t->shape, -1, 1);
    mt_tensor *p = mt_mul(t, r);
    mt_tensor *s = mt_sum_all(p);
    mt_tensor_release(r);
    mt_tensor_release(p);
    return s;
}

static void check_all_grads(const char *what, mt_module *m) {
    mt_named_tensors p = {0};
    mt_module_named_parameters(m, &p);
    int missing = 0;
    for (int i = 0; i < p.n; i++) {
        mt_tensor *g = p.items[i].tensor->grad;
        double amax = 0;
        int finite = 1;
        if (g) {
            double *v = mt_test_to_f64(g);
            for (int64_t k = 0; k < mt_tensor_numel(g); k++) {
                finite &= isfinite(v[k]);
                amax = fmax(amax, fabs(v[k]));
            }
            free(v);
        }
        if (!g || !finite || amax == 0 || !mt_tensor_same_shape(g, p.items[i].tensor)) {
            missing++;
            fprintf(stderr, "%s: bad gradient for %s\n", what, p.items[i].name);
        }
    }
    CHECK_MSG(missing == 0, "%s: %d of %d parameters without a proper gradient", what, missing, p.n);
    mt_named_tensors_free(&p);
}

static void test_unet_forward_backward(void) {
    /* batch norm, transposed conv, conv downsampling, deep supervision */
    mt_unet3d_config c;
    small_config(&c);
    mt_module *m = NULL;
    CHECK(mt_unet3d_new(&m, &c, 7) == MT_OK);
    hook_counter hc = {0, 0};
    mt_module_set_grad_hook(m, count_hook, &hc);
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 1, 8, 12, 4), -1, 1);
    mt_tensor *ds[MT_UNET3D_MAX_LEVELS];
    int n_ds = -1;
    mt_tensor *y = mt_unet3d_forward_ds(m, x, ds, &n_ds);
    CHECK(y->ndim == 5 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 8 &&
          y->shape[3] == 12 && y->shape[4] == 4);
    CHECK(n_ds == 1);
    if (n_ds == 1)
        CHECK(ds[0]->shape[1] == 3 && ds[0]->shape[2] == 4 && ds[0]->shape[3] == 6 &&
              ds[0]->shape[4] == 2);
    CHECK(y->requires_grad);
    mt_tensor *l1 = random_projection(y), *l2 = random_projection(ds[0]);
    mt_tensor *loss = mt_add(l1, l2);
    CHECK(mt_backward(loss, NULL, 0) == MT_OK);
    check_all_grads("UNet3D(batch, ds)", m);
    CHECK_MSG(hc.count == mt_module_num_param_tensors(m), "grad hook fired %d times for %d parameters",
              hc.count, mt_module_num_param_tensors(m));
    CHECK(hc.elems == mt_module_num_params(m));
    CHECK_NEAR(mt_tensor_item(mt_module_find(m, "enc3.norm2")->buffers[2].tensor), 1, 0);
    /* the generic forward skips deep supervision and gives the same logits */
    mt_tensor *y2 = mt_module_forward(m, x);
    mt_test_allclose_t(y2, y, 1e-5, 1e-5, "UNet3D generic forward = forward_ds logits");
    CHECK(mt_module_set_param_grad_hook(m, "head.weight", NULL, NULL) == MT_OK);
    CHECK(mt_module_find(m, "head")->params[0].tensor->hook == NULL);
    CHECK(mt_module_set_param_grad_hook(m, "head.nope", count_hook, &hc) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "head.nope") != NULL);
    CHECK(mt_module_set_param_grad_hook(m, "enc1.norm1.running_mean", count_hook, &hc) != MT_OK);
    mt_tensor_release(y2);
    /* eval mode: no running-stat updates, output differs from train mode */
    mt_tensor *rm_before = mt_tensor_clone(mt_module_find(m, "enc1.norm1")->buffers[0].tensor);
    mt_module_train(m, 0);
    int prev = mt_grad_set_enabled(0);
    mt_tensor *ye = mt_unet3d_forward(m, x);
    mt_grad_set_enabled(prev);
    CHECK(!ye->requires_grad);
    mt_test_allclose_t(mt_module_find(m, "enc1.norm1")->buffers[0].tensor, rm_before, 1e-12, 0,
                       "eval forward leaves running_mean");
    {
        double *a = mt_test_to_f64(ye), *b = mt_test_to_f64(y);
        double diff = 0;
        for (int64_t i = 0; i < mt_tensor_numel(y); i++) diff = fmax(diff, fabs(a[i] - b[i]));
        CHECK_MSG(diff > 1e-3, "eval output equals train output (max diff %g)", diff);
        free(a);
        free(b);
    }
    mt_tensor_release(ye);
    mt_tensor_release(rm_before);
    mt_module_zero_grad(m);
    CHECK(mt_module_find(m, "head")->params[0].tensor->grad == NULL);
    mt_tensor_release(loss);
    mt_tensor_release(l1);
    mt_tensor_release(l2);
    mt_tensor_release(ds[0]);
    mt_tensor_release(y);
    mt_tensor_release(x);
    mt_module_free(m);

    /* instance norm, trilinear upsampling, maxpool downsampling, dropout */
    mt_unet3d_config_default(&c);
    c.in_channels = 2;
    c.out_channels = 3;
    c.n_levels = 2;
    c.features[0] = 2;
    c.features[1] = 4;
    c.upsample = MT_UPSAMPLE_TRILINEAR;
    c.downsample = MT_DOWNSAMPLE_MAXPOOL;
    c.dropout = 0.2f;
    c.act = MT_ACT_RELU;
    CHECK(mt_unet3d_new(&m, &c, 9) == MT_OK);
    x = mt_test_rand(MT_SHAPE(1, 2, 6, 4, 10), -1, 1);
    y = mt_unet3d_forward(m, x);
    CHECK(y->shape[0] == 1 && y->shape[1] == 3 && y->shape[2] == 6 && y->shape[3] == 4 &&
          y->shape[4] == 10);
    loss = random_projection(y);
    CHECK(mt_backward(loss, NULL, 0) == MT_OK);
    check_all_grads("UNet3D(instance, trilinear, maxpool, dropout)", m);
    mt_tensor_release(loss);
    mt_tensor_release(y);
    /* dropout: eval forward is deterministic, train forwards differ */
    mt_module_train(m, 0);
    mt_tensor *e1 = mt_unet3d_forward(m, x), *e2 = mt_unet3d_forward(m, x);
    mt_test_allclose_t(e1, e2, 1e-12, 0, "eval forward deterministic with dropout");
    mt_module_train(m, 1);
    mt_tensor *t1 = mt_unet3d_forward(m, x), *t2 = mt_unet3d_forward(m, x);
    {
        double *a = mt_test_to_f64(t1), *b = mt_test_to_f64(t2);
        double diff = 0;
        for (int64_t i = 0; i < mt_tensor_numel(t1); i++) diff = fmax(diff, fabs(a[i] - b[i]));
        CHECK_MSG(diff > 1e-4, "train forwards with dropout identical");
        free(a);
        free(b);
    }
    mt_tensor_release(e1);
    mt_tensor_release(e2);
    mt_tensor_release(t1);
    mt_tensor_release(t2);
    mt_tensor_release(x);
    mt_module_free(m);

    /* 4 levels, group norm: two deep-supervision outputs, highest resolution first */
    mt_unet3d_config_default(&c);
    c.out_channels = 2;
    c.n_levels = 4;
    c.features[0] = 2;
    c.features[1] = 3;
    c.features[2] = 4;
    c.features[3] = 5;
    c.norm = MT_NORM_GROUP;
    c.norm_groups = 1;
    c.deep_supervision = 1;
    CHECK(mt_unet3d_new(&m, &c, 9) == MT_OK);
    CHECK(mt_module_find(m, "ds2") && mt_module_find(m, "ds3") && !mt_module_find(m, "ds1"));
    x = mt_test_rand(MT_SHAPE(1, 1, 8, 8, 16), -1, 1);
    y = mt_unet3d_forward_ds(m, x, ds, &n_ds);
    CHECK(n_ds == 2);
    if (n_ds == 2) {
        CHECK(ds[0]->shape[2] == 4 && ds[0]->shape[3] == 4 && ds[0]->shape[4] == 8);
        CHECK(ds[1]->shape[2] == 2 && ds[1]->shape[3] == 2 && ds[1]->shape[4] == 4);
        mt_tensor_release(ds[0]);
        mt_tensor_release(ds[1]);
    }
    CHECK(y->shape[1] == 2 && y->shape[4] == 16);
    mt_tensor_release(y);
    mt_tensor_release(x);
    mt_module_free(m);
}

static void test_unet_load(void) {
    mt_unet3d_config c;
    small_config(&c);
    mt_module *a = NULL, *b = NULL, *other = NULL;
    CHECK(mt_unet3d_new(&a, &c, 1) == MT_OK && mt_unet3d_new(&b, &c, 2) == MT_OK);
    /* give b non-default buffers so that loading them is visible */
    mt_tensor_fill_(mt_module_find(b, "enc2.norm1")->buffers[0].tensor, 0.25);
    mt_tensor_fill_(mt_module_find(b, "enc2.norm1")->buffers[2].tensor, 5);
    mt_module_train(a, 0);
    mt_module_train(b, 0);
    mt_tensor *x = mt_test_rand(MT_SHAPE(1, 1, 4, 8, 8), -1, 1);
    int prev = mt_grad_set_enabled(0);
    mt_tensor *ya = mt_module_forward(a, x), *yb = mt_module_forward(b, x);
    mt_named_tensors sd = {0};
    mt_module_state_dict(b, &sd);

    /* missing key: error names it, nothing changes */
    mt_named_tensors partial = {0};
    for (int i = 0; i < sd.n; i++)
        if (strcmp(sd.items[i].name, "dec1.conv2.bias"))
            mt_named_tensors_append(&partial, sd.items[i].name, sd.items[i].tensor);
    CHECK(mt_module_load(a, &partial, 1) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), "dec1.conv2.bias") && strstr(mt_error_msg(), "missing"),
              "message: %s", mt_error_msg());
    mt_tensor *ya2 = mt_module_forward(a, x);
    mt_test_allclose_t(ya2, ya, 1e-12, 0, "failed load leaves the model unchanged");
    mt_tensor_release(ya2);
    /* unexpected key: error when strict, ignored otherwise */
    mt_named_tensors extra = {0};
    for (int i = 0; i < sd.n; i++) mt_named_tensors_append(&extra, sd.items[i].name, sd.items[i].tensor);
    mt_tensor *z = mt_tensor_zeros(MT_F32, MT_SHAPE(3), MT_DEVICE_CPU);
    mt_named_tensors_append(&extra, "extra.weight", z);
    mt_tensor_release(z);
    CHECK(mt_module_load(a, &extra, 1) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), "extra.weight"), "message: %s", mt_error_msg());
    /* shape mismatch names the key and both shapes */
    mt_unet3d_config c2 = c;
    c2.features[1] = 6;
    CHECK(mt_unet3d_new(&other, &c2, 4) == MT_OK);
    mt_named_tensors sd_other = {0};
    mt_module_state_dict(other, &sd_other);
    CHECK(mt_module_load(a, &sd_other, 1) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), "enc2.conv1.weight") && strstr(mt_error_msg(), "(6, 2, 3, 3, 3)") &&
                  strstr(mt_error_msg(), "(4, 2, 3, 3, 3)"),
              "message: %s", mt_error_msg());
    /* non-strict load with an unknown key: loads the rest */
    CHECK(mt_module_load(a, &extra, 0) == MT_OK);
    ya2 = mt_module_forward(a, x);
    mt_test_allclose_t(ya2, yb, 1e-6, 1e-6, "loaded model reproduces the source's outputs");
    CHECK_NEAR(mt_tensor_item(mt_module_find(a, "enc2.norm1")->buffers[2].tensor), 5, 0);
    mt_tensor_release(ya2);
    /* strict load of the exact dict succeeds; partial non-strict load too */
    CHECK(mt_module_load(a, &sd, 1) == MT_OK);
    CHECK(mt_module_load(a, &partial, 0) == MT_OK);
    mt_grad_set_enabled(prev);
    /* load keeps parameters as leaves with requires_grad */
    CHECK(mt_module_find(a, "head")->params[0].tensor->requires_grad);
    /* to_device: same device is a no-op; an absent device is an error naming it */
    mt_tensor *before = mt_module_find(a, "head")->params[0].tensor;
    CHECK(mt_module_to_device(a, MT_DEVICE_CPU) == MT_OK);
    CHECK(mt_module_find(a, "head")->params[0].tensor == before);
    mt_device cuda = {MT_CUDA, 0};
    if (!mt_device_available(cuda)) {
        CHECK(mt_module_to_device(a, cuda) == MT_ERR_UNSUPPORTED);
        CHECK(strstr(mt_error_msg(), "not available") != NULL);
    }
    mt_named_tensors_free(&sd);
    mt_named_tensors_free(&partial);
    mt_named_tensors_free(&extra);
    mt_named_tensors_free(&sd_other);
    mt_tensor_release(ya);
    mt_tensor_release(yb);
    mt_tensor_release(x);
    mt_module_free(a);
    mt_module_free(b);
    mt_module_free(other);
}

/* ------------------------------------------------------------ gradcheck */

static mt_tensor *unet_fn(mt_tensor **inputs, void *ctx) {
    return mt_unet3d_forward((mt_module *)ctx, inputs[0]);
}

static void gradcheck_unet(const char *what, const mt_unet3d_config *c, const char *const *names,
                           int n_names) {
    mt_module *m = NULL;
    CHECK(mt_unet3d_new(&m, c, 17) == MT_OK);
    /* non-trivial affine norm parameters */
    mt_named_tensors p = {0};
    mt_module_named_parameters(m, &p);
    for (int i = 0; i < p.n; i++)
        if (strstr(p.items[i].name, "norm")) fill_rand(p.items[i].tensor, 0.5f, 1.5f);
    mt_named_tensors_free(&p);
    mt_tensor *in[8];
    in[0] = mt_test_rand(MT_SHAPE(1, c->in_channels, 8, 8, 8), -1, 1);
    mt_tensor_set_requires_grad(in[0], 1);
    for (int i = 0; i < n_names; i++) {
        in[1 + i] = mt_module_get_tensor(m, names[i]);
        CHECK_MSG(in[1 + i] != NULL, "%s: no parameter %s", what, names[i]);
    }
    mt_test_gradcheck(what, unet_fn, m, 1 + n_names, in, 5e-3, 5e-3, 2e-2);
    for (int i = 0; i <= n_names; i++) mt_tensor_release(in[i]);
    mt_module_free(m);
}

static void test_unet_gradcheck(void) {
    /* Smooth activation (GELU) so that central differences see no kinks. */
    mt_unet3d_config c;
    mt_unet3d_config_default(&c);
    c.in_channels = 1;
    c.out_channels = 2;
    c.n_levels = 2;
    c.features[0] = 2;
    c.features[1] = 4;
    c.act = MT_ACT_GELU;
    static const char *const n1[] = {"enc1.conv1.weight", "enc2.conv2.bias", "up1.weight",
                                     "dec1.norm1.weight", "dec1.conv1.weight", "head.weight"};
    gradcheck_unet("UNet3D(instance affine, transposed)", &c, n1, 6);
    /* batch norm in training mode, trilinear upsampling */
    c.norm = MT_NORM_BATCH;
    c.upsample = MT_UPSAMPLE_TRILINEAR;
    static const char *const n2[] = {"enc2.conv1.weight", "enc2.norm2.bias", "up1.conv.weight",
                                     "dec1.conv2.bias", "head.bias"};
    gradcheck_unet("UNet3D(batch train, trilinear)", &c, n2, 5);
}

int main(void) {
    mt_test_seed(2024);
    test_module_tree();
    test_layer_names_and_init();
    test_init();
    test_conv_layers();
    test_norm_layers();
    test_batch_norm_train_eval();
    test_misc_layers();
    test_unet_config();
    test_unet_names();
    test_unet_forward_backward();
    test_unet_load();
    test_unet_gradcheck();
    return mt_test_finish();
}
