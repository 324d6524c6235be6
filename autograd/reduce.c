/* Reductions (sum, mean) and softmax / log-softmax with their gradient
 * rules. Kernels: core/<backend>/reduce.c (reduce, softmax, softmax_backward).
 * Sums and means are f32 whatever the input dtype (reductions in fp32,
 * DESIGN.md decision 6); their gradient comes back in the input's dtype.
 * Softmax keeps its input's float dtype (losses cast to f32 first).
 * Backward writes (=) fresh, contiguous input gradients. */
#include <math.h>
#include <string.h>

#include "autograd/ops.h"


/* ------------------------------------------------------------ sum / mean */

/* node->i: [0] ndim, [1..6] input shape, [7..12] keepdim shape; f[0] scale. */
static void sum_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int nd = (int)node->i[0];
    int64_t xs[MT_MAX_DIMS], ks[MT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        xs[d] = node->i[1 + d];
        ks[d] = node->i[7 + d];
    }
    float scale = (float)node->f[0];
    mt_device dev = mt_tensor_device(go[0]);
    /* scale the (small) reduced gradient in f32, then broadcast with one cast */
    mt_tensor *gs = mt_contiguous_as(go[0], MT_F32);
    if (scale != 1.0f && mt_tensor_numel(gs)) {
        mt_tensor *t = mt_tensor_new_like(gs);
        mt_kernel(dev, unary)(MT_UN_MUL_SCALAR, t, gs, scale);
        mt_tensor_release(gs);
        gs = t;
    }
    mt_tensor *gk = mt_tensor_reshape(gs, nd, ks);
    mt_tensor_release(gs);
    mt_tensor *ge = mt_tensor_expand(gk, nd, xs);
    mt_tensor *g = mt_tensor_new(node->dtype, nd, xs, dev);
    if (mt_tensor_numel(g)) mt_kernel(dev, copy)(g, ge);
    mt_tensor_release(gk);
    mt_tensor_release(ge);
    gi[0] = g;
}

/* Sum over the dims flagged in red[] (scaled by `scale`), keepdim or not. */
static mt_tensor *sum_impl(const mt_tensor *x, const int *red, int keepdim, double scale,
                           const char *name) {
    int nd = x->ndim;
    int64_t ks[MT_MAX_DIMS], os[MT_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < nd; d++) {
        ks[d] = red[d] ? 1 : x->shape[d];
        if (!red[d] || keepdim) os[ond++] = ks[d];
    }
    mt_device dev = mt_tensor_device(x);
    mt_tensor *xc = mt_contiguous_as(x, mt_float_dtype_of(x));
    mt_tensor *r = mt_tensor_new(MT_F32, nd, ks, dev);
    mt_kernel(dev, reduce)(MT_RED_SUM, r, xc);
    if (scale != 1.0 && mt_tensor_numel(r))
        mt_kernel(dev, unary)(MT_UN_MUL_SCALAR, r, r, (float)scale);
    mt_tensor_release(xc);
    mt_tensor *out = r;
    if (!keepdim) {
        out = mt_tensor_view(r, ond, os);
        MT_CHECK(out);
        mt_tensor_release(r);
    }
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new(name, sum_backward, 1, ins, 1);
        n->dtype = mt_float_dtype_of(x);
        n->i[0] = nd;
        for (int d = 0; d < nd; d++) {
            n->i[1 + d] = x->shape[d];
            n->i[7 + d] = ks[d];
        }
        n->f[0] = scale;
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* Flags the listed dims (negative count from the end; an empty list means
 * every dim, as torch.sum(x, dim=[])); returns the number of elements reduced. */
static int64_t mark_dims(const mt_tensor *x, int ndims, const int *dims, int *red) {
    memset(red, 0, sizeof(int) * MT_MAX_DIMS);
    int64_t count = 1;
    if (ndims == 0) {
        for (int d = 0; d < x->ndim; d++) red[d] = 1;
        return mt_tensor_numel(x);
    }
    MT_CHECK(dims);
    for (int k = 0; k < ndims; k++) {
        int d = mt_tensor_dim(x, dims[k]);
        MT_CHECK_MSG(!red[d], "sum: dim %d listed twice", dims[k]);
        red[d] = 1;
        count *= x->shape[d];
    }
    return count;
}

mt_tensor *mt_sum(const mt_tensor *x, int ndims, const int *dims, int keepdim) {
    int red[MT_MAX_DIMS];
    mark_dims(x, ndims, dims, red);
    return sum_impl(x, red, keepdim, 1.0, "SumBackward");
}

mt_tensor *mt_mean(const mt_tensor *x, int ndims, const int *dims, int keepdim) {
    int red[MT_MAX_DIMS];
    int64_t count = mark_dims(x, ndims, dims, red);
    return sum_impl(x, red, keepdim, count ? 1.0 / (double)count : NAN, "MeanBackward");
}

mt_tensor *mt_sum_all(const mt_tensor *x) {
    int red[MT_MAX_DIMS];
    for (int d = 0; d < MT_MAX_DIMS; d++) red[d] = 1;
    return sum_impl(x, red, 0, 1.0, "SumBackward");
}

mt_tensor *mt_mean_all(const mt_tensor *x) {
    int red[MT_MAX_DIMS];
    for (int d = 0; d < MT_MAX_DIMS; d++) red[d] = 1;
    int64_t n = mt_tensor_numel(x);
    return sum_impl(x, red, 0, n ? 1.0 / (double)n : NAN, "MeanBackward");
}

/* --------------------------------------------------------------- softmax */

/* node->i: [0] dim, [1] log; saved[0] = output. */
static void softmax_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *y = node->saved[0];
    mt_device dev = mt_tensor_device(y);
    mt_tensor *g = mt_contiguous_as(go[0], y->dtype);
    mt_tensor *d = mt_tensor_new(y->dtype, y->ndim, y->shape, dev);
    mt_kernel(dev, softmax_backward)(d, g, y, (int)node->i[0], (int)node->i[1]);
    mt_tensor_release(g);
    gi[0] = d;
}

static mt_tensor *softmax_impl(const mt_tensor *x, int dim, int log) {
    dim = mt_tensor_dim(x, dim);
    mt_device dev = mt_tensor_device(x);
    mt_tensor *xc = mt_contiguous_as(x, mt_float_dtype_of(x));
    mt_tensor *out = mt_tensor_new(xc->dtype, x->ndim, x->shape, dev);
    mt_kernel(dev, softmax)(out, xc, dim, log);
    mt_tensor_release(xc);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new(log ? "LogSoftmaxBackward" : "SoftmaxBackward", softmax_backward,
                                 1, ins, 1);
        n->i[0] = dim;
        n->i[1] = log;
        mt_node_save(n, out);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

mt_tensor *mt_softmax(const mt_tensor *x, int dim) { return softmax_impl(x, dim, 0); }
mt_tensor *mt_log_softmax(const mt_tensor *x, int dim) { return softmax_impl(x, dim, 1); }
