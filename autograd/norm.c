/* Normalisation ops (batch, group, instance, layer norm) and their gradient
 * rules. Kernels: core/<backend>/norm.c. The input keeps its float dtype
 * (f32, or bf16 under bf16-mixed): output and input gradient have it, while
 * statistics are computed in f32/double and weight, bias, their gradients
 * and the running stats are f32 (DESIGN.md decision 6). Backward writes (=) fresh, contiguous gradients for x,
 * weight and bias; the engine accumulates them into parameters. */
#include <string.h>

#include "autograd/ops.h"

/* New reference to x as a contiguous f32 tensor (NULL stays NULL). */
static mt_tensor *as_f32_contiguous(const mt_tensor *x) {
    if (!x) return NULL;
    mt_tensor *f = mt_tensor_to_dtype(x, MT_F32);
    mt_tensor *c = mt_tensor_contiguous(f);
    mt_tensor_release(f);
    return c;
}

static void check_param(const char *op, const char *what, const mt_tensor *p, int64_t numel,
                        mt_device dev) {
    if (!p) return;
    char b1[64], b2[64];
    MT_CHECK_MSG(mt_tensor_numel(p) == numel, "%s: %s %s has %lld elements, expected %lld", op,
                 what, mt_tensor_shape_str(p, b1, sizeof b1), (long long)mt_tensor_numel(p),
                 (long long)numel);
    MT_CHECK_MSG(mt_device_eq(mt_tensor_device(p), dev), "%s: %s on %s, input on %s", op, what,
                 mt_device_name(mt_tensor_device(p), b1, sizeof b1),
                 mt_device_name(dev, b2, sizeof b2));
}

static void check_input(const char *op, const mt_tensor *x) {
    char b[64];
    MT_CHECK_MSG(x->ndim >= 2 && x->ndim <= 5, "%s: input %s must be (N, C, *) with 0-3 spatial dims",
                 op, mt_tensor_shape_str(x, b, sizeof b));
    MT_CHECK_MSG(mt_dtype_is_float(x->dtype), "%s: input dtype %s is not a float type", op,
                 mt_dtype_name(x->dtype));
}

/* A new f32 tensor with p's shape, or NULL when p is NULL or no gradient is needed. */
static mt_tensor *grad_like(const mt_tensor *p, int needed, mt_device dev) {
    if (!p || !needed) return NULL;
    return mt_tensor_new(MT_F32, p->ndim, p->shape, dev);
}

/* Records the bias shape in node->i[at], i[at + 1 ...] (ndim 0 when bias is NULL). */
static void save_bias_shape(mt_node *n, int at, const mt_tensor *bias) {
    n->i[at] = bias ? bias->ndim : 0;
    for (int k = 0; bias && k < bias->ndim; k++) n->i[at + 1 + k] = bias->shape[k];
}

/* A new f32 gradient for the bias whose shape was recorded at node->i[at], or NULL. */
static mt_tensor *bias_grad(const mt_node *n, int at, mt_device dev) {
    if (!mt_node_needs_grad(n, 2)) return NULL;
    int nd = (int)n->i[at];
    int64_t shape[MT_MAX_DIMS];
    for (int k = 0; k < nd; k++) shape[k] = n->i[at + 1 + k];
    return mt_tensor_new(MT_F32, nd, shape, dev);
}

/* Hands dx to gi[0] if input 0 needs it, releases it otherwise. */
static void give_dx(mt_node *node, mt_tensor **gi, mt_tensor *dx) {
    if (mt_node_needs_grad(node, 0))
        gi[0] = dx;
    else
        mt_tensor_release(dx);
}

/* ------------------------------------------------------------ batch norm */

/* saved: 0 x (N, C, *), 1 weight (C) or NULL, 2 save_mean (C), 3 save_invstd (C);
 * i[0]: batch statistics used; i[1..]: bias shape. */
static void batch_norm_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *x = node->saved[0], *w = node->saved[1];
    mt_device dev = mt_tensor_device(x);
    mt_tensor *g = mt_contiguous_as(go[0], x->dtype);
    mt_tensor *dx = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *dw = grad_like(w, mt_node_needs_grad(node, 1), dev);
    mt_tensor *db = bias_grad(node, 1, dev);
    mt_kernel(dev, batch_norm_backward)(dx, dw, db, g, x, w, node->saved[2], node->saved[3],
                                        (int)node->i[0]);
    mt_tensor_release(g);
    give_dx(node, gi, dx);
    gi[1] = dw;
    gi[2] = db;
}

mt_tensor *mt_batch_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                         mt_tensor *running_mean, mt_tensor *running_var, int training,
                         float momentum, float eps) {
    const char *op = "batch_norm";
    check_input(op, x);
    mt_device dev = mt_tensor_device(x);
    int64_t C = x->shape[1], per_channel = mt_tensor_numel(x) / (C ? C : 1);
    check_param(op, "weight", weight, C, dev);
    check_param(op, "bias", bias, C, dev);
    MT_CHECK_MSG(!running_mean == !running_var, "%s: running_mean and running_var must both be given or both be NULL", op);
    if (running_mean) {
        check_param(op, "running_mean", running_mean, C, dev);
        check_param(op, "running_var", running_var, C, dev);
        MT_CHECK_MSG(running_mean->dtype == MT_F32 && running_var->dtype == MT_F32 &&
                         mt_tensor_is_contiguous(running_mean) && mt_tensor_is_contiguous(running_var),
                     "%s: running stats must be contiguous f32", op);
    }
    char b[64];
    MT_CHECK_MSG(!training || per_channel > 1,
                 "%s: expected more than 1 value per channel when training, got input %s", op,
                 mt_tensor_shape_str(x, b, sizeof b));
    int use_batch = training || !running_mean;
    mt_tensor *xc = mt_contiguous_as(x, x->dtype), *wc = as_f32_contiguous(weight),
              *bc = as_f32_contiguous(bias);
    mt_tensor *y = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *sm = mt_tensor_new(MT_F32, 1, &C, dev), *si = mt_tensor_new(MT_F32, 1, &C, dev);
    if (mt_tensor_numel(x))
        mt_kernel(dev, batch_norm_forward)(y, sm, si, xc, wc, bc, running_mean, running_var,
                                           use_batch, momentum, eps);
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)weight, (mt_tensor *)bias};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new("BatchNormBackward", batch_norm_backward, 3, ins, 1);
        n->i[0] = use_batch;
        save_bias_shape(n, 1, bias);
        mt_node_save(n, xc);
        mt_node_save(n, wc);
        mt_node_save(n, sm);
        mt_node_save(n, si);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(wc);
    mt_tensor_release(bc);
    mt_tensor_release(sm);
    mt_tensor_release(si);
    return y;
}

/* ------------------------------------------------------------ group norm */

/* saved: 0 x (N, C, *), 1 weight (C) or NULL, 2 mean (N, G), 3 rstd (N, G); i[0]: groups;
 * i[1..]: bias shape. */
static void group_norm_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *x = node->saved[0], *w = node->saved[1];
    mt_device dev = mt_tensor_device(x);
    mt_tensor *g = mt_contiguous_as(go[0], x->dtype);
    mt_tensor *dx = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *dw = grad_like(w, mt_node_needs_grad(node, 1), dev);
    mt_tensor *db = bias_grad(node, 1, dev);
    mt_kernel(dev, group_norm_backward)(dx, dw, db, g, x, w, node->saved[2], node->saved[3],
                                        (int)node->i[0]);
    mt_tensor_release(g);
    give_dx(node, gi, dx);
    gi[1] = dw;
    gi[2] = db;
}

static mt_tensor *group_norm_impl(const char *op, const char *name, const mt_tensor *x,
                                  int groups, const mt_tensor *weight, const mt_tensor *bias,
                                  float eps) {
    check_input(op, x);
    mt_device dev = mt_tensor_device(x);
    int64_t N = x->shape[0], C = x->shape[1];
    char b[64];
    MT_CHECK_MSG(groups > 0 && C % groups == 0,
                 "%s: %lld channels of input %s are not divisible into %d groups", op,
                 (long long)C, mt_tensor_shape_str(x, b, sizeof b), groups);
    check_param(op, "weight", weight, C, dev);
    check_param(op, "bias", bias, C, dev);
    mt_tensor *xc = mt_contiguous_as(x, x->dtype), *wc = as_f32_contiguous(weight),
              *bc = as_f32_contiguous(bias);
    mt_tensor *y = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *mean = mt_tensor_new(MT_F32, MT_SHAPE(N, groups), dev);
    mt_tensor *rstd = mt_tensor_new(MT_F32, MT_SHAPE(N, groups), dev);
    if (mt_tensor_numel(x))
        mt_kernel(dev, group_norm_forward)(y, mean, rstd, xc, wc, bc, groups, eps);
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)weight, (mt_tensor *)bias};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new(name, group_norm_backward, 3, ins, 1);
        n->i[0] = groups;
        save_bias_shape(n, 1, bias);
        mt_node_save(n, xc);
        mt_node_save(n, wc);
        mt_node_save(n, mean);
        mt_node_save(n, rstd);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(wc);
    mt_tensor_release(bc);
    mt_tensor_release(mean);
    mt_tensor_release(rstd);
    return y;
}

mt_tensor *mt_group_norm(const mt_tensor *x, int groups, const mt_tensor *weight,
                         const mt_tensor *bias, float eps) {
    return group_norm_impl("group_norm", "GroupNormBackward", x, groups, weight, bias, eps);
}

mt_tensor *mt_instance_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                            float eps) {
    MT_CHECK_MSG(x->ndim >= 2, "instance_norm: input must be (N, C, *)");
    return group_norm_impl("instance_norm", "InstanceNormBackward", x, (int)x->shape[1], weight,
                           bias, eps);
}

/* ------------------------------------------------------------ layer norm */

/* saved: 0 x, 1 weight or NULL, 2 mean (M), 3 rstd (M); i[0]: norm_numel; i[1..]: bias shape. */
static void layer_norm_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *x = node->saved[0], *w = node->saved[1];
    mt_device dev = mt_tensor_device(x);
    int64_t D = node->i[0];
    mt_tensor *g = mt_contiguous_as(go[0], x->dtype);
    mt_tensor *dx = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *dw = grad_like(w, mt_node_needs_grad(node, 1), dev);
    mt_tensor *db = bias_grad(node, 1, dev);
    mt_kernel(dev, layer_norm_backward)(dx, dw, db, g, x, w, node->saved[2], node->saved[3], D);
    mt_tensor_release(g);
    give_dx(node, gi, dx);
    gi[1] = dw;
    gi[2] = db;
}

mt_tensor *mt_layer_norm(const mt_tensor *x, int normalized_ndim, const mt_tensor *weight,
                         const mt_tensor *bias, float eps) {
    const char *op = "layer_norm";
    char b[64];
    MT_CHECK_MSG(normalized_ndim >= 1 && normalized_ndim <= x->ndim,
                 "%s: normalized_ndim %d out of range for input %s", op, normalized_ndim,
                 mt_tensor_shape_str(x, b, sizeof b));
    MT_CHECK_MSG(mt_dtype_is_float(x->dtype), "%s: input dtype %s is not a float type", op,
                 mt_dtype_name(x->dtype));
    mt_device dev = mt_tensor_device(x);
    int lead = x->ndim - normalized_ndim;
    int64_t D = 1, M = 1;
    for (int d = lead; d < x->ndim; d++) D *= x->shape[d];
    for (int d = 0; d < lead; d++) M *= x->shape[d];
    check_param(op, "weight", weight, D, dev);
    check_param(op, "bias", bias, D, dev);
    mt_tensor *xc = mt_contiguous_as(x, x->dtype), *wc = as_f32_contiguous(weight),
              *bc = as_f32_contiguous(bias);
    mt_tensor *y = mt_tensor_new(x->dtype, x->ndim, x->shape, dev);
    mt_tensor *mean = mt_tensor_new(MT_F32, 1, &M, dev), *rstd = mt_tensor_new(MT_F32, 1, &M, dev);
    if (mt_tensor_numel(x))
        mt_kernel(dev, layer_norm_forward)(y, mean, rstd, xc, wc, bc, D, eps);
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)weight, (mt_tensor *)bias};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new("LayerNormBackward", layer_norm_backward, 3, ins, 1);
        n->i[0] = D;
        save_bias_shape(n, 1, bias);
        mt_node_save(n, xc);
        mt_node_save(n, wc);
        mt_node_save(n, mean);
        mt_node_save(n, rstd);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(wc);
    mt_tensor_release(bc);
    mt_tensor_release(mean);
    mt_tensor_release(rstd);
    return y;
}
