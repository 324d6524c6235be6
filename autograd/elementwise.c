/* Elementwise ops and their gradient rules. Kernels: core/<backend>/elementwise.c.
 * Backward writes (=) input gradients. Dtypes: outputs keep their input's float
 * dtype (integer inputs compute in f32); binary ops on bf16 and f32 promote to
 * f32 through a differentiable cast; gradients have their tensor's dtype. */
#include <string.h>

#include "autograd/ops.h"

static mt_device dev_of(const mt_tensor *t) { return mt_tensor_device(t); }

/* ------------------------------------------------------------- binary */

/* No autograd; a and b are cast (copies) to their promoted dtype if needed. */
static mt_tensor *binary_raw(mt_binary_op op, const mt_tensor *a, const mt_tensor *b) {
    int nd;
    int64_t shape[MT_MAX_DIMS];
    mt_status st = mt_broadcast_shape(&nd, shape, a, b);
    MT_CHECK_MSG(st == MT_OK, "binary op: %s", mt_error_msg());
    MT_CHECK_MSG(mt_device_eq(dev_of(a), dev_of(b)), "binary op: operands on different devices");
    mt_dtype dt = mt_promote_dtype(a, b);
    mt_tensor *out = mt_tensor_new(dt, nd, shape, dev_of(a));
    mt_tensor *ac = a->dtype == dt ? mt_tensor_detach(a) : mt_contiguous_as(a, dt);
    mt_tensor *bc = b->dtype == dt ? mt_tensor_detach(b) : mt_contiguous_as(b, dt);
    mt_tensor *ae = mt_tensor_expand(ac, nd, shape), *be = mt_tensor_expand(bc, nd, shape);
    mt_tensor_release(ac);
    mt_tensor_release(bc);
    if (mt_tensor_numel(out)) mt_kernel(dev_of(a), binary)(op, out, ae, be);
    mt_tensor_release(ae);
    mt_tensor_release(be);
    return out;
}

/* saved: 0 = a, 1 = b (when needed) */
static void binary_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_binary_op op = (mt_binary_op)node->i[0];
    mt_tensor *g = go[0];
    mt_tensor *a = node->saved[0], *b = node->saved[1];
    int64_t ashape[MT_MAX_DIMS], bshape[MT_MAX_DIMS];
    int and_ = (int)node->i[1], bnd = (int)node->i[2];
    for (int k = 0; k < and_; k++) ashape[k] = node->i[3 + k];
    for (int k = 0; k < bnd; k++) bshape[k] = node->i[3 + MT_MAX_DIMS + k];
    mt_tensor *da = NULL, *db = NULL;
    switch (op) {
    case MT_BIN_ADD:
        if (mt_node_needs_grad(node, 0)) da = mt_tensor_retain(g);
        if (mt_node_needs_grad(node, 1)) db = mt_tensor_retain(g);
        break;
    case MT_BIN_SUB:
        if (mt_node_needs_grad(node, 0)) da = mt_tensor_retain(g);
        if (mt_node_needs_grad(node, 1)) db = mt_neg(g);
        break;
    case MT_BIN_MUL:
        if (mt_node_needs_grad(node, 0)) da = mt_mul(g, b);
        if (mt_node_needs_grad(node, 1)) db = mt_mul(g, a);
        break;
    case MT_BIN_DIV:
        if (mt_node_needs_grad(node, 0)) da = mt_div(g, b);
        if (mt_node_needs_grad(node, 1)) { /* -g a / b^2 */
            mt_tensor *q = mt_div(a, b), *q2 = mt_div(q, b), *t = mt_mul(g, q2);
            db = mt_neg(t);
            mt_tensor_release(q);
            mt_tensor_release(q2);
            mt_tensor_release(t);
        }
        break;
    case MT_BIN_MAX:
    case MT_BIN_MIN: {
        /* Gradient goes to the selected operand; ties split evenly (as PyTorch). */
        mt_tensor *sel = binary_raw(op, a, b);
        mt_tensor *ea = binary_raw(MT_BIN_EQ, a, sel), *eb = binary_raw(MT_BIN_EQ, b, sel);
        mt_tensor *cnt = binary_raw(MT_BIN_ADD, ea, eb);
        if (mt_node_needs_grad(node, 0)) {
            mt_tensor *w = binary_raw(MT_BIN_DIV, ea, cnt);
            da = binary_raw(MT_BIN_MUL, g, w);
            mt_tensor_release(w);
        }
        if (mt_node_needs_grad(node, 1)) {
            mt_tensor *w = binary_raw(MT_BIN_DIV, eb, cnt);
            db = binary_raw(MT_BIN_MUL, g, w);
            mt_tensor_release(w);
        }
        mt_tensor_release(sel);
        mt_tensor_release(ea);
        mt_tensor_release(eb);
        mt_tensor_release(cnt);
        break;
    }
    default: MT_CHECK(0);
    }
    if (da) {
        gi[0] = mt_sum_to_shape(da, and_, ashape);
        mt_tensor_release(da);
    }
    if (db) {
        gi[1] = mt_sum_to_shape(db, bnd, bshape);
        mt_tensor_release(db);
    }
}

static mt_tensor *binary_op(mt_binary_op op, const char *name, const mt_tensor *a_in,
                            const mt_tensor *b_in) {
    /* Mixed dtypes: promote with differentiable casts, so each operand's
     * gradient comes back in its own dtype. */
    mt_dtype dt = mt_promote_dtype(a_in, b_in);
    mt_tensor *a = mt_to_dtype(a_in, dt), *b = mt_to_dtype(b_in, dt);
    mt_tensor *out = binary_raw(op, a, b);
    mt_tensor *ins[2] = {(mt_tensor *)a, (mt_tensor *)b};
    if (mt_any_requires_grad(2, ins)) {
        mt_node *n = mt_node_new(name, binary_backward, 2, ins, 1);
        n->i[0] = op;
        n->i[1] = a->ndim;
        n->i[2] = b->ndim;
        for (int k = 0; k < a->ndim; k++) n->i[3 + k] = a->shape[k];
        for (int k = 0; k < b->ndim; k++) n->i[3 + MT_MAX_DIMS + k] = b->shape[k];
        int need_vals = op != MT_BIN_ADD && op != MT_BIN_SUB;
        mt_node_save(n, need_vals ? a : NULL);
        mt_node_save(n, need_vals ? b : NULL);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    mt_tensor_release(a);
    mt_tensor_release(b);
    return out;
}

mt_tensor *mt_add(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_ADD, "AddBackward", a, b); }
mt_tensor *mt_sub(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_SUB, "SubBackward", a, b); }
mt_tensor *mt_mul(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_MUL, "MulBackward", a, b); }
mt_tensor *mt_div(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_DIV, "DivBackward", a, b); }
mt_tensor *mt_maximum(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_MAX, "MaximumBackward", a, b); }
mt_tensor *mt_minimum(const mt_tensor *a, const mt_tensor *b) { return binary_op(MT_BIN_MIN, "MinimumBackward", a, b); }

/* -------------------------------------------------------------- unary */

/* Which of (input, output) the derivative needs: 1 = input, 2 = output. */
static int unary_saves(mt_unary_op op) {
    switch (op) {
    case MT_UN_EXP: case MT_UN_SQRT: case MT_UN_RSQRT: case MT_UN_RECIP: case MT_UN_SIGMOID:
    case MT_UN_TANH:
        return 2;
    case MT_UN_NEG: case MT_UN_ADD_SCALAR: case MT_UN_MUL_SCALAR:
        return 0;
    default:
        return 1;
    }
}

static void unary_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_unary_op op = (mt_unary_op)node->i[0];
    float alpha = (float)node->f[0];
    mt_dtype dt = (mt_dtype)node->i[1];
    mt_tensor *g = mt_contiguous_as(go[0], dt);
    mt_tensor *d = mt_tensor_new(dt, g->ndim, g->shape, mt_tensor_device(g));
    mt_kernel(mt_tensor_device(g), unary_backward)(op, d, g, node->saved[0], node->saved[1], alpha);
    mt_tensor_release(g);
    gi[0] = d;
}

mt_tensor *mt_unary(mt_unary_op op, const mt_tensor *x, float alpha) {
    mt_dtype dt = mt_float_dtype_of(x);
    mt_tensor *xc = mt_contiguous_as(x, dt);
    mt_tensor *out = mt_tensor_new(dt, x->ndim, x->shape, dev_of(x));
    if (mt_tensor_numel(out)) mt_kernel(dev_of(x), unary)(op, out, xc, alpha);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("UnaryBackward", unary_backward, 1, ins, 1);
        n->i[0] = op;
        n->i[1] = dt;
        n->f[0] = alpha;
        int s = unary_saves(op);
        mt_node_save(n, s == 1 ? xc : NULL);
        mt_node_save(n, s == 2 ? out : NULL);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    mt_tensor_release(xc);
    return out;
}

mt_tensor *mt_add_scalar(const mt_tensor *x, float s) { return mt_unary(MT_UN_ADD_SCALAR, x, s); }
mt_tensor *mt_mul_scalar(const mt_tensor *x, float s) { return mt_unary(MT_UN_MUL_SCALAR, x, s); }
mt_tensor *mt_pow_scalar(const mt_tensor *x, float p) { return mt_unary(MT_UN_POW_SCALAR, x, p); }
mt_tensor *mt_clamp_min(const mt_tensor *x, float lo) { return mt_unary(MT_UN_CLAMP_MIN, x, lo); }
mt_tensor *mt_clamp_max(const mt_tensor *x, float hi) { return mt_unary(MT_UN_CLAMP_MAX, x, hi); }
mt_tensor *mt_neg(const mt_tensor *x) { return mt_unary(MT_UN_NEG, x, 0); }
mt_tensor *mt_exp(const mt_tensor *x) { return mt_unary(MT_UN_EXP, x, 0); }
mt_tensor *mt_log(const mt_tensor *x) { return mt_unary(MT_UN_LOG, x, 0); }
mt_tensor *mt_sqrt(const mt_tensor *x) { return mt_unary(MT_UN_SQRT, x, 0); }
mt_tensor *mt_abs(const mt_tensor *x) { return mt_unary(MT_UN_ABS, x, 0); }
mt_tensor *mt_square(const mt_tensor *x) { return mt_unary(MT_UN_SQUARE, x, 0); }
mt_tensor *mt_relu(const mt_tensor *x) { return mt_unary(MT_UN_RELU, x, 0); }
mt_tensor *mt_leaky_relu(const mt_tensor *x, float s) { return mt_unary(MT_UN_LEAKY_RELU, x, s); }
mt_tensor *mt_gelu(const mt_tensor *x) { return mt_unary(MT_UN_GELU, x, 0); }
mt_tensor *mt_sigmoid(const mt_tensor *x) { return mt_unary(MT_UN_SIGMOID, x, 0); }
mt_tensor *mt_tanh(const mt_tensor *x) { return mt_unary(MT_UN_TANH, x, 0); }
mt_tensor *mt_softplus(const mt_tensor *x) { return mt_unary(MT_UN_SOFTPLUS, x, 0); }
mt_tensor *mt_log_sigmoid(const mt_tensor *x) { return mt_unary(MT_UN_LOG_SIGMOID, x, 0); }

/* --------------------------------------------------------------- cast */

/* The gradient goes back in the input's dtype (node->i[0]). */
static void cast_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    gi[0] = mt_tensor_to_dtype(go[0], (mt_dtype)node->i[0]);
}

mt_tensor *mt_to_dtype(const mt_tensor *x, mt_dtype dt) {
    if (x->dtype == dt) return mt_tensor_retain((mt_tensor *)x);
    mt_tensor *out = mt_tensor_new(dt, x->ndim, x->shape, dev_of(x));
    if (mt_tensor_numel(out)) mt_kernel(dev_of(x), copy)(out, x);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_dtype_is_float(dt) && mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("CastBackward", cast_backward, 1, ins, 1);
        n->i[0] = x->dtype;
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* ------------------------------------------------------------ dropout */

mt_tensor *mt_dropout(const mt_tensor *x, float p, int training, mt_rng *rng) {
    MT_CHECK_MSG(p >= 0 && p < 1, "dropout: p = %g outside [0, 1)", p);
    if (!training || p == 0) return mt_tensor_retain((mt_tensor *)x);
    /* mask = (u >= p) / (1 - p), from kernels so it runs on any device. */
    mt_tensor *u = mt_tensor_new(MT_F32, x->ndim, x->shape, dev_of(x));
    mt_rng_fill_uniform(u, rng, 0.0f, 1.0f);
    mt_tensor *thr = mt_tensor_full(MT_F32, 0, NULL, p, dev_of(x));
    mt_tensor *ind = binary_raw(MT_BIN_GE, u, thr);
    mt_tensor *mask32 = mt_tensor_new_like(ind);
    mt_kernel(dev_of(x), unary)(MT_UN_MUL_SCALAR, mask32, ind, 1.0f / (1.0f - p));
    mt_tensor *mask = mt_contiguous_as(mask32, mt_float_dtype_of(x));
    mt_tensor_release(mask32);
    mt_tensor_release(u);
    mt_tensor_release(thr);
    mt_tensor_release(ind);
    mt_tensor *out = mt_mul(x, mask);
    mt_tensor_release(mask);
    return out;
}

/* ------------------------------------------------------ non-differentiable */

mt_tensor *mt_one_hot(const mt_tensor *labels, int num_classes) {
    int64_t shape[MT_MAX_DIMS];
    int nd = 0;
    shape[nd++] = labels->shape[0];
    shape[nd++] = num_classes;
    int start = (labels->ndim >= 2 && labels->shape[1] == 1) ? 2 : 1;
    for (int k = start; k < labels->ndim; k++) shape[nd++] = labels->shape[k];
    MT_CHECK_MSG(nd <= MT_MAX_DIMS, "one_hot: too many dims");
    mt_tensor *lc = mt_tensor_contiguous(labels);
    mt_tensor *out = mt_tensor_new(MT_F32, nd, shape, dev_of(labels));
    mt_kernel(dev_of(labels), one_hot)(out, lc, num_classes);
    mt_tensor_release(lc);
    return out;
}

mt_tensor *mt_argmax_channel(const mt_tensor *x) {
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = 1;
    mt_tensor *xc = mt_tensor_contiguous(x);
    mt_tensor *out = mt_tensor_new(MT_I32, x->ndim, shape, dev_of(x));
    mt_kernel(dev_of(x), argmax_channel)(out, xc);
    mt_tensor_release(xc);
    return out;
}
