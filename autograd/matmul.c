/* Matrix products and their gradient rules. Kernel: gemm in
 * core/<backend>/matmul.c. Backward writes (=) input gradients.
 *
 * Operands whose last two dims are a transposed row-major matrix (e.g. a
 * mt_tensor_transpose view) are passed to gemm with its transpose flag
 * instead of being copied.
 *
 * Dtypes as conv (autograd/conv.c): operands are cast to the compute dtype of
 * mt_autocast_dtype3 (bf16 under autocast); output and gradients have it.
 */
#include <string.h>

#include "autograd/ops.h"

/* A gemm operand for t (..., r, c) (2-D or 3-D): a view `*out` whose
 * matrix rows are contiguous, and whether gemm must transpose it to get t.
 * Copies only when neither t nor its transpose has contiguous rows. */
static mt_tensor *gemm_view(const mt_tensor *t, int *trans) {
    int nd = t->ndim;
    int64_t r = t->shape[nd - 2], c = t->shape[nd - 1];
    int64_t sr = t->strides[nd - 2], sc = t->strides[nd - 1];
    if ((c <= 1 || sc == 1) && (r <= 1 || sr >= c)) {
        *trans = 0;
        return mt_tensor_retain((mt_tensor *)t);
    }
    if ((r <= 1 || sr == 1) && (c <= 1 || sc >= r) && r > 1 && c > 1) {
        *trans = 1;
        return mt_tensor_transpose(t, nd - 2, nd - 1);
    }
    *trans = 0;
    return mt_tensor_contiguous(t);
}

/* c = a @ b without autograd. a (M, K) or (B, M, K); b (K, N) or (B, K, N);
 * a 2-D operand broadcasts over the other's batch. */
static mt_tensor *matmul_raw(const mt_tensor *a, const mt_tensor *b) {
    char sa[96], sb[96];
    int and_ = a->ndim, bnd = b->ndim;
    MT_CHECK_MSG((and_ == 2 || and_ == 3) && (bnd == 2 || bnd == 3) &&
                     a->shape[and_ - 1] == b->shape[bnd - 2] &&
                     (and_ == 2 || bnd == 2 || a->shape[0] == b->shape[0]),
                 "matmul: shapes %s and %s do not match", mt_tensor_shape_str(a, sa, sizeof sa),
                 mt_tensor_shape_str(b, sb, sizeof sb));
    MT_CHECK_MSG(mt_device_eq(mt_tensor_device(a), mt_tensor_device(b)),
                 "matmul: operands on different devices");
    int64_t m = a->shape[and_ - 2], n = b->shape[bnd - 1];
    int64_t batch = and_ == 3 ? a->shape[0] : (bnd == 3 ? b->shape[0] : 0);
    MT_CHECK_MSG(a->dtype == b->dtype, "matmul: operand dtypes %s and %s differ",
                 mt_dtype_name(a->dtype), mt_dtype_name(b->dtype));
    mt_tensor *out = batch ? mt_tensor_new(a->dtype, MT_SHAPE(batch, m, n), mt_tensor_device(a))
                           : mt_tensor_new(a->dtype, MT_SHAPE(m, n), mt_tensor_device(a));
    int ta, tb;
    mt_tensor *av = gemm_view(a, &ta), *bv = gemm_view(b, &tb);
    /* gemm takes equal ranks; a 2-D operand becomes a batch-stride-0 view. */
    mt_tensor *a3 = NULL, *b3 = NULL;
    if (batch && av->ndim == 2) {
        mt_tensor *u = mt_tensor_unsqueeze(av, 0);
        a3 = mt_tensor_expand(u, MT_SHAPE(batch, av->shape[0], av->shape[1]));
        mt_tensor_release(u);
    }
    if (batch && bv->ndim == 2) {
        mt_tensor *u = mt_tensor_unsqueeze(bv, 0);
        b3 = mt_tensor_expand(u, MT_SHAPE(batch, bv->shape[0], bv->shape[1]));
        mt_tensor_release(u);
    }
    mt_kernel(mt_tensor_device(a), gemm)(out, a3 ? a3 : av, b3 ? b3 : bv, ta, tb, 1.0f, 0.0f);
    if (a3) mt_tensor_release(a3);
    if (b3) mt_tensor_release(b3);
    mt_tensor_release(av);
    mt_tensor_release(bv);
    return out;
}

/* Sum over the batch of x_i (M, K) @ y_i (K, N) for 3-D x, y: one product
 * with the batch folded into K when both fold, else accumulated per item. */
static mt_tensor *matmul_batch_sum(const mt_tensor *x, const mt_tensor *y) {
    int64_t nb = x->shape[0], m = x->shape[1], k = x->shape[2], n = y->shape[2];
    /* x_i = A_i^T with A (B, K, M) contiguous, y contiguous (B, K, N):
     * sum = A_flat^T (M, B*K) @ y_flat (B*K, N). */
    if (x->strides[1] == 1 && x->strides[2] == m && x->strides[0] == k * m &&
        mt_tensor_is_contiguous(y)) {
        mt_tensor *xt = mt_tensor_transpose(x, 1, 2); /* contiguous (B, K, M) */
        mt_tensor *xf = mt_tensor_view(xt, MT_SHAPE(nb * k, m));
        mt_tensor *yf = mt_tensor_view(y, MT_SHAPE(nb * k, n));
        mt_tensor_release(xt);
        if (xf && yf) {
            mt_tensor *xft = mt_tensor_transpose(xf, 0, 1);
            mt_tensor *out = matmul_raw(xft, yf);
            mt_tensor_release(xft);
            mt_tensor_release(xf);
            mt_tensor_release(yf);
            return out;
        }
        if (xf) mt_tensor_release(xf);
        if (yf) mt_tensor_release(yf);
    }
    mt_device dev = mt_tensor_device(x);
    mt_tensor *out = mt_tensor_new(x->dtype, MT_SHAPE(1, m, n), dev);
    for (int64_t i = 0; i < nb; i++) {
        mt_tensor *xi = mt_tensor_slice(x, 0, i, i + 1, 1), *yi = mt_tensor_slice(y, 0, i, i + 1, 1);
        int tx, ty;
        mt_tensor *xv = gemm_view(xi, &tx), *yv = gemm_view(yi, &ty);
        mt_kernel(dev, gemm)(out, xv, yv, tx, ty, 1.0f, i == 0 ? 0.0f : 1.0f);
        mt_tensor_release(xi);
        mt_tensor_release(yi);
        mt_tensor_release(xv);
        mt_tensor_release(yv);
    }
    mt_tensor *o2 = mt_tensor_view(out, MT_SHAPE(m, n));
    mt_tensor_release(out);
    return o2;
}

/* saved: 0 = a, 1 = b (only what the other's gradient needs) */
static void matmul_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    mt_tensor *a = node->saved[0], *b = node->saved[1];
    int and_ = (int)node->i[0], bnd = (int)node->i[1];
    if (mt_node_needs_grad(node, 0)) { /* dA = dC @ B^T */
        mt_tensor *bt = mt_tensor_transpose(b, bnd - 2, bnd - 1);
        gi[0] = (and_ == 2 && bnd == 3) ? matmul_batch_sum(g, bt) : matmul_raw(g, bt);
        mt_tensor_release(bt);
    }
    if (mt_node_needs_grad(node, 1)) { /* dB = A^T @ dC */
        mt_tensor *at = mt_tensor_transpose(a, and_ - 2, and_ - 1);
        gi[1] = (bnd == 2 && and_ == 3) ? matmul_batch_sum(at, g) : matmul_raw(at, g);
        mt_tensor_release(at);
    }
    mt_tensor_release(g);
}

mt_tensor *mt_matmul(const mt_tensor *a, const mt_tensor *b) {
    mt_dtype dt = mt_autocast_dtype3(a, b, NULL);
    if (a->dtype != dt || b->dtype != dt) {
        mt_tensor *ac = mt_to_dtype(a, dt), *bc = mt_to_dtype(b, dt);
        mt_tensor *y = mt_matmul(ac, bc);
        mt_tensor_release(ac);
        mt_tensor_release(bc);
        return y;
    }
    mt_tensor *out;
    /* (B, M, K) @ (K, N) with a's batch foldable into rows: one 2-D product. */
    mt_tensor *af = NULL;
    if (a->ndim == 3 && b->ndim == 2 && a->shape[2] == b->shape[0])
        af = mt_tensor_view(a, MT_SHAPE(a->shape[0] * a->shape[1], a->shape[2]));
    if (af) {
        mt_tensor *o2 = matmul_raw(af, b);
        out = mt_tensor_view(o2, MT_SHAPE(a->shape[0], a->shape[1], b->shape[1]));
        mt_tensor_release(o2);
        mt_tensor_release(af);
    } else {
        out = matmul_raw(a, b);
    }
    mt_tensor *ins[2] = {(mt_tensor *)a, (mt_tensor *)b};
    if (mt_any_requires_grad(2, ins)) {
        mt_node *n = mt_node_new("MatmulBackward", matmul_backward, 2, ins, 1);
        n->dtype = dt;
        n->i[0] = a->ndim;
        n->i[1] = b->ndim;
        mt_node_save(n, mt_node_needs_grad(n, 1) ? a : NULL);
        mt_node_save(n, mt_node_needs_grad(n, 0) ? b : NULL);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* ------------------------------------------------------------- linear */

/* y2 (M, out) <- bias broadcast over rows (rank-1 product with ones). */
static void linear_add_bias(mt_tensor *y2, const mt_tensor *bias, float beta) {
    mt_device dev = mt_tensor_device(y2);
    int64_t m = y2->shape[0], o = y2->shape[1];
    mt_tensor *ones = mt_tensor_full(y2->dtype, MT_SHAPE(m, 1), 1.0, dev);
    mt_tensor *bc = mt_tensor_contiguous(bias);
    mt_tensor *b2 = mt_tensor_view(bc, MT_SHAPE(1, o));
    mt_kernel(dev, gemm)(y2, ones, b2, 0, 0, 1.0f, beta);
    mt_tensor_release(ones);
    mt_tensor_release(bc);
    mt_tensor_release(b2);
}

/* saved: 0 = x as (M, in), 1 = w (out, in); i[0] = has bias */
static void linear_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    mt_tensor *x2 = node->saved[0], *w = node->saved[1];
    mt_device dev = mt_tensor_device(go[0]);
    mt_tensor *g = mt_contiguous_as(go[0], node->dtype);
    int64_t o = g->shape[g->ndim - 1];
    int64_t m = o ? mt_tensor_numel(g) / o : 0;
    mt_tensor *g2 = mt_tensor_view(g, MT_SHAPE(m, o));
    if (mt_node_needs_grad(node, 0)) { /* dx = dy @ W, shaped as x */
        int64_t shape[MT_MAX_DIMS];
        int nd = (int)node->i[1];
        for (int k = 0; k < nd; k++) shape[k] = node->i[2 + k];
        mt_tensor *dx = mt_tensor_new(node->dtype, nd, shape, dev);
        mt_tensor *dx2 = mt_tensor_view(dx, MT_SHAPE(m, w->shape[1]));
        mt_kernel(dev, gemm)(dx2, g2, w, 0, 0, 1.0f, 0.0f);
        mt_tensor_release(dx2);
        gi[0] = dx;
    }
    if (mt_node_needs_grad(node, 1)) { /* dW = dy^T @ x */
        mt_tensor *dw = mt_tensor_new(node->dtype, MT_SHAPE(o, x2->shape[1]), dev);
        mt_kernel(dev, gemm)(dw, g2, x2, 1, 0, 1.0f, 0.0f);
        gi[1] = dw;
    }
    if (node->i[0] && mt_node_needs_grad(node, 2)) { /* db = ones^T @ dy */
        mt_tensor *ones = mt_tensor_full(node->dtype, MT_SHAPE(m, 1), 1.0, dev);
        mt_tensor *db = mt_tensor_new(node->dtype, MT_SHAPE(o), dev);
        mt_tensor *db2 = mt_tensor_view(db, MT_SHAPE(1, o));
        mt_kernel(dev, gemm)(db2, ones, g2, 1, 0, 1.0f, 0.0f);
        mt_tensor_release(ones);
        mt_tensor_release(db2);
        gi[2] = db;
    }
    mt_tensor_release(g2);
    mt_tensor_release(g);
}

mt_tensor *mt_linear(const mt_tensor *x, const mt_tensor *w, const mt_tensor *b) {
    char sx[96], sw[96], sb[96] = "none";
    if (b) mt_tensor_shape_str(b, sb, sizeof sb);
    MT_CHECK_MSG(x->ndim >= 1 && w->ndim == 2 && x->shape[x->ndim - 1] == w->shape[1] &&
                     (!b || mt_tensor_numel(b) == w->shape[0]) && x->ndim <= MT_MAX_DIMS,
                 "linear: x %s, w %s, b %s do not match", mt_tensor_shape_str(x, sx, sizeof sx),
                 mt_tensor_shape_str(w, sw, sizeof sw), sb);
    mt_dtype dt = mt_autocast_dtype3(x, w, b);
    if (x->dtype != dt || w->dtype != dt || (b && b->dtype != dt)) {
        mt_tensor *xc = mt_to_dtype(x, dt), *wc = mt_to_dtype(w, dt);
        mt_tensor *bc = b ? mt_to_dtype(b, dt) : NULL;
        mt_tensor *y = mt_linear(xc, wc, bc);
        mt_tensor_release(xc);
        mt_tensor_release(wc);
        if (bc) mt_tensor_release(bc);
        return y;
    }
    mt_device dev = mt_tensor_device(x);
    int64_t in = w->shape[1], o = w->shape[0];
    int64_t m = in ? mt_tensor_numel(x) / in : 0;
    if (!in) {
        m = 1;
        for (int k = 0; k < x->ndim - 1; k++) m *= x->shape[k];
    }
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = o;
    mt_tensor *y = mt_tensor_new(dt, x->ndim, shape, dev);
    mt_tensor *x2 = mt_tensor_reshape(x, MT_SHAPE(m, in));
    mt_tensor *x2c = mt_tensor_contiguous(x2);
    mt_tensor_release(x2);
    mt_tensor *wc = mt_tensor_contiguous(w);
    mt_tensor *y2 = mt_tensor_view(y, MT_SHAPE(m, o));
    if (b) linear_add_bias(y2, b, 0.0f);
    mt_kernel(dev, gemm)(y2, x2c, wc, 0, 1, 1.0f, b ? 1.0f : 0.0f);
    mt_tensor_release(y2);
    mt_tensor *ins[3] = {(mt_tensor *)x, (mt_tensor *)w, (mt_tensor *)b};
    if (mt_any_requires_grad(3, ins)) {
        mt_node *n = mt_node_new("LinearBackward", linear_backward, 3, ins, 1);
        n->dtype = dt;
        n->i[0] = b != NULL;
        n->i[1] = x->ndim;
        for (int k = 0; k < x->ndim; k++) n->i[2 + k] = x->shape[k];
        mt_node_save(n, mt_node_needs_grad(n, 1) ? x2c : NULL);
        mt_node_save(n, mt_node_needs_grad(n, 0) ? wc : NULL);
        mt_node_set_output(n, y, 0);
        mt_node_release(n);
    }
    mt_tensor_release(x2c);
    mt_tensor_release(wc);
    return y;
}
