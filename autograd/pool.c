/* Pooling and resampling ops (max/avg pool 3D, trilinear resize) and their
 * gradient rules. Kernels: core/<backend>/pool.c. Inputs x (N, C, D, H, W)
 * keep their float dtype (f32, or bf16 under bf16-mixed; arithmetic in f32
 * inside the kernels); outputs and gradients have it. Output sizes use
 * PyTorch's floor mode: (in + 2 pad - kernel) / stride + 1.
 * Backward writes (=) a fresh, contiguous dx. */
#include <string.h>

#include "autograd/ops.h"

static void check_input(const char *op, const mt_tensor *x) {
    char b[64];
    MT_CHECK_MSG(x->ndim == 5, "%s: input %s must be (N, C, D, H, W)", op,
                 mt_tensor_shape_str(x, b, sizeof b));
    MT_CHECK_MSG(mt_dtype_is_float(x->dtype), "%s: input dtype %s is not a float type", op,
                 mt_dtype_name(x->dtype));
}

/* Output shape (N, C, oD, oH, oW) of a pooling op; aborts on bad geometry. */
static void pool_out_shape(const char *op, int64_t *out, const mt_tensor *x,
                           const mt_pool_params *p) {
    char b[64];
    out[0] = x->shape[0];
    out[1] = x->shape[1];
    for (int a = 0; a < 3; a++) {
        int k = p->kernel[a], s = p->stride[a], pad = p->padding[a];
        MT_CHECK_MSG(k > 0 && s > 0 && pad >= 0,
                     "%s: kernel %d, stride %d, padding %d on axis %d must be positive", op, k, s,
                     pad, a);
        MT_CHECK_MSG(pad <= k / 2, "%s: padding %d on axis %d should be at most half of kernel %d",
                     op, pad, a, k);
        int64_t in = x->shape[2 + a], span = in + 2 * pad - k;
        MT_CHECK_MSG(span >= 0, "%s: input %s too small for kernel %d (padding %d) on axis %d", op,
                     mt_tensor_shape_str(x, b, sizeof b), k, pad, a);
        out[2 + a] = span / s + 1;
    }
}

static void save_shape(mt_node *n, int at, const mt_tensor *x) {
    for (int k = 0; k < 5; k++) n->i[at + k] = x->shape[k];
}

static mt_tensor *new_from_saved_shape(const mt_node *n, int at, mt_device dev) {
    int64_t shape[5];
    for (int k = 0; k < 5; k++) shape[k] = n->i[at + k];
    return mt_tensor_new(n->dtype, 5, shape, dev);
}

static void save_params(mt_node *n, int at, const mt_pool_params *p) {
    for (int a = 0; a < 3; a++) {
        n->i[at + a] = p->kernel[a];
        n->i[at + 3 + a] = p->stride[a];
        n->i[at + 6 + a] = p->padding[a];
    }
    n->i[at + 9] = p->count_include_pad;
}

static mt_pool_params load_params(const mt_node *n, int at) {
    mt_pool_params p;
    memset(&p, 0, sizeof p);
    for (int a = 0; a < 3; a++) {
        p.kernel[a] = (int)n->i[at + a];
        p.stride[a] = (int)n->i[at + 3 + a];
        p.padding[a] = (int)n->i[at + 6 + a];
    }
    p.count_include_pad = (int)n->i[at + 9];
    return p;
}

/* ------------------------------------------------------------- max pool */

/* saved: 0 indices (i32, shape of y); i[0..4]: x shape. */
static void max_pool3d_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *idx = node->saved[0];
    mt_device dev = mt_tensor_device(idx);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    mt_tensor *dx = new_from_saved_shape(node, 0, dev);
    if (mt_tensor_numel(dx)) mt_kernel(dev, max_pool3d_backward)(dx, g, idx);
    mt_tensor_release(g);
    gi[0] = dx;
}

mt_tensor *mt_max_pool3d(const mt_tensor *x, const mt_pool_params *p) {
    const char *op = "max_pool3d";
    check_input(op, x);
    mt_device dev = mt_tensor_device(x);
    int64_t os[5];
    pool_out_shape(op, os, x, p);
    mt_tensor *xc = mt_contiguous_as(x, x->dtype);
    mt_tensor *y = mt_tensor_new(x->dtype, 5, os, dev);
    mt_tensor *idx = mt_tensor_new(MT_I32, 5, os, dev);
    if (mt_tensor_numel(y)) mt_kernel(dev, max_pool3d_forward)(y, idx, xc, p);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("MaxPool3dBackward", max_pool3d_backward, 1, ins, 1);
        n->dtype = x->dtype;
        save_shape(n, 0, x);
        mt_node_save(n, idx);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    mt_tensor_release(idx);
    return y;
}

/* ------------------------------------------------------------- avg pool */

/* i[0..4]: x shape; i[5..14]: pool params. */
static void avg_pool3d_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_device dev = mt_tensor_device(go[0]);
    mt_pool_params p = load_params(node, 5);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    mt_tensor *dx = new_from_saved_shape(node, 0, dev);
    if (mt_tensor_numel(dx)) mt_kernel(dev, avg_pool3d_backward)(dx, g, &p);
    mt_tensor_release(g);
    gi[0] = dx;
}

mt_tensor *mt_avg_pool3d(const mt_tensor *x, const mt_pool_params *p) {
    const char *op = "avg_pool3d";
    check_input(op, x);
    mt_device dev = mt_tensor_device(x);
    int64_t os[5];
    pool_out_shape(op, os, x, p);
    mt_tensor *xc = mt_contiguous_as(x, x->dtype);
    mt_tensor *y = mt_tensor_new(x->dtype, 5, os, dev);
    if (mt_tensor_numel(y)) mt_kernel(dev, avg_pool3d_forward)(y, xc, p);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("AvgPool3dBackward", avg_pool3d_backward, 1, ins, 1);
        n->dtype = x->dtype;
        save_shape(n, 0, x);
        save_params(n, 5, p);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    return y;
}

/* ------------------------------------------------------------ trilinear */

/* i[0..4]: x shape; i[5]: align_corners. */
static void upsample_trilinear_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_device dev = mt_tensor_device(go[0]);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    mt_tensor *dx = new_from_saved_shape(node, 0, dev);
    if (mt_tensor_numel(dx)) mt_kernel(dev, upsample_trilinear_backward)(dx, g, (int)node->i[5]);
    mt_tensor_release(g);
    gi[0] = dx;
}

mt_tensor *mt_upsample_trilinear(const mt_tensor *x, const int64_t *out_size, int align_corners) {
    const char *op = "upsample_trilinear";
    check_input(op, x);
    mt_device dev = mt_tensor_device(x);
    int64_t os[5] = {x->shape[0], x->shape[1], out_size[0], out_size[1], out_size[2]};
    for (int a = 0; a < 3; a++)
        MT_CHECK_MSG(out_size[a] > 0 && x->shape[2 + a] > 0,
                     "%s: sizes must be positive (input %lld, output %lld on axis %d)", op,
                     (long long)x->shape[2 + a], (long long)out_size[a], a);
    mt_tensor *xc = mt_contiguous_as(x, x->dtype);
    mt_tensor *y = mt_tensor_new(x->dtype, 5, os, dev);
    if (mt_tensor_numel(y)) mt_kernel(dev, upsample_trilinear_forward)(y, xc, align_corners);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("UpsampleTrilinearBackward", upsample_trilinear_backward, 1, ins, 1);
        n->dtype = x->dtype;
        save_shape(n, 0, x);
        n->i[5] = align_corners ? 1 : 0;
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    return y;
}
