/* 3-D convolution and transposed convolution with their gradient rules
 * (PyTorch semantics: groups, dilation, output_padding). Kernels:
 * conv3d_forward / conv3d_backward_data / conv3d_backward_filter in
 * core/<backend>/conv.c. Backward writes (=) input gradients.
 *
 * The transposed convolution is the adjoint of the convolution with the same
 * weight and geometry: its forward is conv3d_backward_data, its
 * input gradient is conv3d_forward, and its weight gradient is
 * conv3d_backward_filter with the roles of input and output swapped.
 * Bias terms (added and summed per channel) go through the gemm kernel, so
 * every backend that has conv and gemm runs both ops.
 *
 * Dtypes: x, w and bias are cast (differentiably) to one compute dtype: bf16
 * under autocast (mt_autocast_set), else f32 unless all are bf16. The output
 * and the gradients of the cast inputs have that dtype; the casts return
 * gradients in each original input's dtype (f32 for master weights).
 */
#include <string.h>

#include "autograd/ops.h"

mt_conv_params mt_conv_params_make(int stride, int padding, int dilation, int groups) {
    mt_conv_params p;
    memset(&p, 0, sizeof p);
    for (int j = 0; j < 3; j++) {
        p.stride[j] = stride;
        p.padding[j] = padding;
        p.dilation[j] = dilation;
        p.output_padding[j] = 0;
    }
    p.groups = groups;
    return p;
}

/* node->i layout: 0-2 stride, 3-5 padding, 6-8 dilation, 9-11 output
 * padding, 12 groups, 13 has bias, 14-18 input shape, 19-23 weight shape. */
static void params_store(mt_node *n, const mt_conv_params *p, int has_bias, const mt_tensor *x,
                         const mt_tensor *w) {
    for (int j = 0; j < 3; j++) {
        n->i[j] = p->stride[j];
        n->i[3 + j] = p->padding[j];
        n->i[6 + j] = p->dilation[j];
        n->i[9 + j] = p->output_padding[j];
    }
    n->i[12] = p->groups;
    n->i[13] = has_bias;
    for (int k = 0; k < 5; k++) {
        n->i[14 + k] = x->shape[k];
        n->i[19 + k] = w->shape[k];
    }
}

static mt_conv_params params_load(const mt_node *n) {
    mt_conv_params p;
    memset(&p, 0, sizeof p);
    for (int j = 0; j < 3; j++) {
        p.stride[j] = (int)n->i[j];
        p.padding[j] = (int)n->i[3 + j];
        p.dilation[j] = (int)n->i[6 + j];
        p.output_padding[j] = (int)n->i[9 + j];
    }
    p.groups = (int)n->i[12];
    return p;
}

/* y (N, C, *) += bias (C) broadcast: a rank-1 product bias (C, 1) @ ones (1, S)
 * per sample, accumulated (beta = 1). */
static void add_channel_bias(mt_tensor *y, const mt_tensor *bias) {
    mt_device dev = mt_tensor_device(y);
    int64_t n = y->shape[0], c = y->shape[1], s = c ? mt_tensor_numel(y) / (n * c) : 0;
    if (n * c * s == 0) return;
    mt_tensor *y3 = mt_tensor_view(y, MT_SHAPE(n, c, s));
    mt_tensor *bc = mt_tensor_contiguous(bias);
    mt_tensor *b2 = mt_tensor_view(bc, MT_SHAPE(1, c, 1));
    mt_tensor *b3 = mt_tensor_expand(b2, MT_SHAPE(n, c, 1));
    mt_tensor *ones = mt_tensor_full(y->dtype, MT_SHAPE(1, 1, s), 1.0, dev);
    mt_tensor *o3 = mt_tensor_expand(ones, MT_SHAPE(n, 1, s));
    mt_kernel(dev, gemm)(y3, b3, o3, 0, 0, 1.0f, 1.0f);
    mt_tensor *rel[] = {y3, bc, b2, b3, ones, o3};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

/* (C) <- sum of g (N, C, *) over all dims but 1: g3 (N, C, S) @ ones (S, 1),
 * then ones (1, N) @ that (N, C). */
static mt_tensor *channel_sum(const mt_tensor *g) {
    mt_device dev = mt_tensor_device(g);
    int64_t n = g->shape[0], c = g->shape[1], s = 1;
    for (int k = 2; k < g->ndim; k++) s *= g->shape[k];
    mt_tensor *out = mt_tensor_new(g->dtype, MT_SHAPE(c), dev);
    if (c == 0) return out;
    if (n * s == 0) {
        mt_kernel(dev, fill)(out, 0.0);
        return out;
    }
    mt_tensor *gc = mt_tensor_contiguous(g);
    mt_tensor *g3 = mt_tensor_view(gc, MT_SHAPE(n, c, s));
    /* the per-sample partial sums stay f32 (one rounding at the end) */
    mt_tensor *ones_s = mt_tensor_full(g->dtype, MT_SHAPE(1, s, 1), 1.0, dev);
    mt_tensor *os3 = mt_tensor_expand(ones_s, MT_SHAPE(n, s, 1));
    mt_tensor *t = mt_tensor_new(MT_F32, MT_SHAPE(n, c, 1), dev);
    mt_kernel(dev, gemm)(t, g3, os3, 0, 0, 1.0f, 0.0f);
    mt_tensor *t2 = mt_tensor_view(t, MT_SHAPE(n, c));
    mt_tensor *ones_n = mt_tensor_full(MT_F32, MT_SHAPE(1, n), 1.0, dev);
    mt_tensor *out32 = out->dtype == MT_F32 ? mt_tensor_retain(out) : mt_tensor_new(MT_F32, MT_SHAPE(c), dev);
    mt_tensor *o2 = mt_tensor_view(out32, MT_SHAPE(1, c));
    mt_kernel(dev, gemm)(o2, ones_n, t2, 0, 0, 1.0f, 0.0f);
    if (out32 != out) mt_kernel(dev, copy)(out, out32);
    mt_tensor *rel[] = {gc, g3, ones_s, os3, t, t2, ones_n, o2, out32};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
    return out;
}

static void check_params(const mt_conv_params *p, const char *op) {
    for (int j = 0; j < 3; j++)
        MT_CHECK_MSG(p->stride[j] >= 1 && p->dilation[j] >= 1 && p->padding[j] >= 0 &&
                         p->output_padding[j] >= 0,
                     "%s: invalid stride %d, dilation %d, padding %d or output_padding %d", op,
                     p->stride[j], p->dilation[j], p->padding[j], p->output_padding[j]);
    MT_CHECK_MSG(p->groups >= 1, "%s: groups %d < 1", op, p->groups);
}

static void check_devices(const mt_tensor *x, const mt_tensor *w, const mt_tensor *b,
                          const char *op) {
    mt_device d = mt_tensor_device(x);
    MT_CHECK_MSG(mt_device_eq(d, mt_tensor_device(w)) && (!b || mt_device_eq(d, mt_tensor_device(b))),
                 "%s: input, weight and bias on different devices", op);
    MT_CHECK_MSG(mt_dtype_is_float(x->dtype) && mt_dtype_is_float(w->dtype) &&
                     (!b || mt_dtype_is_float(b->dtype)),
                 "%s: input, weight and bias must be float tensors", op);
}

/* The compute dtype of a conv / matmul (see the top of this file). */
mt_dtype mt_autocast_dtype3(const mt_tensor *x, const mt_tensor *w, const mt_tensor *b) {
    if (mt_autocast_get() == MT_BF16) return MT_BF16;
    return (x->dtype == MT_BF16 && w->dtype == MT_BF16 && (!b || b->dtype == MT_BF16)) ? MT_BF16
                                                                                    : MT_F32;
}

/* Casts (differentiably) to dt, or NULL if all three already have it. */
static int cast3(mt_dtype dt, const mt_tensor *x, const mt_tensor *w, const mt_tensor *b,
                 mt_tensor **xc, mt_tensor **wc, mt_tensor **bc) {
    if (x->dtype == dt && w->dtype == dt && (!b || b->dtype == dt)) return 0;
    *xc = mt_to_dtype(x, dt);
    *wc = mt_to_dtype(w, dt);
    *bc = b ? mt_to_dtype(b, dt) : NULL;
    return 1;
}

/* ------------------------------------------------------------- conv3d */

/* saved: 0 = x (when w needs grad), 1 = w (when x needs grad) */
static void conv3d_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_conv_params p = params_load(node);
    mt_device dev = mt_tensor_device(go[0]);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    int need_b = node->i[13] && mt_node_needs_grad(node, 2);
    if (mt_node_needs_grad(node, 0)) {
        mt_tensor *dx = mt_tensor_new(node->dtype, 5, &node->i[14], dev);
        mt_kernel(dev, conv3d_backward_data)(dx, g, node->saved[1], &p);
        gi[0] = dx;
    }
    if (mt_node_needs_grad(node, 1)) {
        mt_tensor *dw = mt_tensor_new(node->dtype, 5, &node->i[19], dev);
        mt_tensor *db = need_b ? mt_tensor_new(node->dtype, MT_SHAPE(g->shape[1]), dev) : NULL;
        mt_kernel(dev, conv3d_backward_filter)(dw, db, node->saved[0], g, &p);
        gi[1] = dw;
        gi[2] = db;
    } else if (need_b) {
        gi[2] = channel_sum(g);
    }
    mt_tensor_release(g);
}

mt_tensor *mt_conv3d(const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias,
                     const mt_conv_params *p) {
    char sx[96], sw[96], sb[96] = "none";
    if (bias) mt_tensor_shape_str(bias, sb, sizeof sb);
    check_params(p, "conv3d");
    MT_CHECK_MSG(x->ndim == 5 && w->ndim == 5 && x->shape[1] == w->shape[1] * p->groups &&
                     w->shape[0] % p->groups == 0 && (!bias || mt_tensor_numel(bias) == w->shape[0]),
                 "conv3d: x %s, w %s, bias %s do not match (groups %d)",
                 mt_tensor_shape_str(x, sx, sizeof sx), mt_tensor_shape_str(w, sw, sizeof sw), sb,
                 p->groups);
    check_devices(x, w, bias, "conv3d");
    mt_dtype dt = mt_autocast_dtype3(x, w, bias);
    mt_tensor *cx, *cw, *cb;
    if (cast3(dt, x, w, bias, &cx, &cw, &cb)) {
        mt_tensor *y = mt_conv3d(cx, cw, cb, p);
        mt_tensor_release(cx);
        mt_tensor_release(cw);
        if (cb) mt_tensor_release(cb);
        return y;
    }
    int64_t shape[5] = {x->shape[0], w->shape[0], 0, 0, 0};
    for (int j = 0; j < 3; j++) {
        int64_t span = (int64_t)p->dilation[j] * (w->shape[2 + j] - 1) + 1;
        int64_t padded = x->shape[2 + j] + 2 * (int64_t)p->padding[j];
        MT_CHECK_MSG(padded >= span,
                     "conv3d: kernel %s (dilation %d) larger than padded input %s (padding %d)",
                     mt_tensor_shape_str(w, sw, sizeof sw), p->dilation[j],
                     mt_tensor_shape_str(x, sx, sizeof sx), p->padding[j]);
        shape[2 + j] = (padded - span) / p->stride[j] + 1;
    }
    mt_device dev = mt_tensor_device(x);
    mt_tensor *xc = mt_tensor_contiguous(x), *wc = mt_tensor_contiguous(w);
    mt_tensor *bc = bias ? mt_tensor_contiguous(bias) : NULL;
    mt_tensor *y = mt_tensor_new(dt, 5, shape, dev);
    mt_kernel(dev, conv3d_forward)(y, xc, wc, bc, p);
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)w, (mt_tensor *)bias};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new("Conv3dBackward", conv3d_backward, 3, ins, 1);
        n->dtype = dt;
        params_store(n, p, bias != NULL, x, w);
        mt_node_save(n, mt_node_needs_grad(n, 1) ? xc : NULL);
        mt_node_save(n, mt_node_needs_grad(n, 0) ? wc : NULL);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(wc);
    if (bc) mt_tensor_release(bc);
    return y;
}

/* --------------------------------------------------- conv_transpose3d */

/* saved: 0 = x (when w needs grad), 1 = w (when x needs grad) */
static void conv_transpose3d_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_conv_params p = params_load(node);
    mt_device dev = mt_tensor_device(go[0]);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype); /* (N, Cout, oD, oH, oW) */
    if (mt_node_needs_grad(node, 0)) {                   /* adjoint of the adjoint: conv forward */
        mt_tensor *dx = mt_tensor_new(node->dtype, 5, &node->i[14], dev);
        mt_kernel(dev, conv3d_forward)(dx, g, node->saved[1], NULL, &p);
        gi[0] = dx;
    }
    if (mt_node_needs_grad(node, 1)) { /* conv's filter gradient with x and dy swapped */
        mt_tensor *dw = mt_tensor_new(node->dtype, 5, &node->i[19], dev);
        mt_kernel(dev, conv3d_backward_filter)(dw, NULL, g, node->saved[0], &p);
        gi[1] = dw;
    }
    if (node->i[13] && mt_node_needs_grad(node, 2)) gi[2] = channel_sum(g);
    mt_tensor_release(g);
}

mt_tensor *mt_conv_transpose3d(const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias,
                               const mt_conv_params *p) {
    char sx[96], sw[96], sb[96] = "none";
    if (bias) mt_tensor_shape_str(bias, sb, sizeof sb);
    check_params(p, "conv_transpose3d");
    int64_t cout = w->ndim == 5 ? w->shape[1] * p->groups : 0;
    MT_CHECK_MSG(x->ndim == 5 && w->ndim == 5 && x->shape[1] == w->shape[0] &&
                     w->shape[0] % p->groups == 0 && (!bias || mt_tensor_numel(bias) == cout),
                 "conv_transpose3d: x %s, w %s, bias %s do not match (groups %d)",
                 mt_tensor_shape_str(x, sx, sizeof sx), mt_tensor_shape_str(w, sw, sizeof sw), sb,
                 p->groups);
    check_devices(x, w, bias, "conv_transpose3d");
    mt_dtype dt = mt_autocast_dtype3(x, w, bias);
    mt_tensor *cx, *cw, *cb;
    if (cast3(dt, x, w, bias, &cx, &cw, &cb)) {
        mt_tensor *y = mt_conv_transpose3d(cx, cw, cb, p);
        mt_tensor_release(cx);
        mt_tensor_release(cw);
        if (cb) mt_tensor_release(cb);
        return y;
    }
    int64_t shape[5] = {x->shape[0], cout, 0, 0, 0};
    for (int j = 0; j < 3; j++) {
        int op = p->output_padding[j];
        MT_CHECK_MSG(op < p->stride[j] || op < p->dilation[j],
                     "conv_transpose3d: output_padding %d must be smaller than stride %d or "
                     "dilation %d",
                     op, p->stride[j], p->dilation[j]);
        shape[2 + j] = (x->shape[2 + j] - 1) * p->stride[j] - 2 * (int64_t)p->padding[j] +
                       (int64_t)p->dilation[j] * (w->shape[2 + j] - 1) + op + 1;
        MT_CHECK_MSG(shape[2 + j] >= 1 && x->shape[2 + j] >= 1,
                     "conv_transpose3d: x %s, w %s give an empty output (padding %d)",
                     mt_tensor_shape_str(x, sx, sizeof sx), mt_tensor_shape_str(w, sw, sizeof sw),
                     p->padding[j]);
    }
    mt_device dev = mt_tensor_device(x);
    mt_tensor *xc = mt_tensor_contiguous(x), *wc = mt_tensor_contiguous(w);
    mt_tensor *y = mt_tensor_new(dt, 5, shape, dev);
    if (mt_tensor_numel(y)) {
        mt_kernel(dev, conv3d_backward_data)(y, xc, wc, p);
        if (bias) add_channel_bias(y, bias);
    }
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)w, (mt_tensor *)bias};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new("ConvTranspose3dBackward", conv_transpose3d_backward, 3, ins, 1);
        n->dtype = dt;
        params_store(n, p, bias != NULL, x, w);
        mt_node_save(n, mt_node_needs_grad(n, 1) ? xc : NULL);
        mt_node_save(n, mt_node_needs_grad(n, 0) ? wc : NULL);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(wc);
    return y;
}
