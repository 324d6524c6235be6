/* Views and data movement with their gradient rules: reshape, permute,
 * transpose, slice, contiguous, concat, constant pad. No kernels of their
 * own: views come from core (mt_tensor_view/permute/slice...), copies from
 * the backend's `copy` and `fill` kernels (copying into slice views).
 * Returned views may share storage with their input (as PyTorch).
 * Backward writes (=) fresh, contiguous input gradients. */
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"

/* Saves a shape into node->i[at .. at + nd). */
static void save_shape(mt_node *n, int at, int nd, const int64_t *shape) {
    for (int d = 0; d < nd; d++) n->i[at + d] = shape[d];
}

static void load_shape(const mt_node *n, int at, int nd, int64_t *shape) {
    for (int d = 0; d < nd; d++) shape[d] = n->i[at + d];
}

/* --------------------------------------------------------------- reshape */

/* node->i: [0] input ndim, [1..6] input shape. */
static void reshape_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int nd = (int)node->i[0];
    int64_t xs[MT_MAX_DIMS];
    load_shape(node, 1, nd, xs);
    mt_tensor *g = mt_tensor_contiguous(go[0]);
    gi[0] = mt_tensor_view(g, nd, xs);
    MT_CHECK(gi[0]);
    mt_tensor_release(g);
}

mt_tensor *mt_reshape(const mt_tensor *x, int ndim, const int64_t *shape) {
    mt_tensor *out = mt_tensor_reshape(x, ndim, shape);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("ReshapeBackward", reshape_backward, 1, ins, 1);
        n->i[0] = x->ndim;
        save_shape(n, 1, x->ndim, x->shape);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* --------------------------------------------------------------- permute */

/* node->i: [0] ndim, [1..6] the forward permutation. */
static void permute_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int nd = (int)node->i[0];
    int inv[MT_MAX_DIMS];
    for (int d = 0; d < nd; d++) inv[node->i[1 + d]] = d;
    mt_tensor *v = mt_tensor_permute(go[0], inv);
    gi[0] = mt_tensor_contiguous(v);
    mt_tensor_release(v);
}

mt_tensor *mt_permute(const mt_tensor *x, const int *perm) {
    mt_tensor *out = mt_tensor_permute(x, perm);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("PermuteBackward", permute_backward, 1, ins, 1);
        n->i[0] = x->ndim;
        for (int d = 0; d < x->ndim; d++) n->i[1 + d] = perm[d];
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

mt_tensor *mt_transpose(const mt_tensor *x, int d0, int d1) {
    int perm[MT_MAX_DIMS];
    d0 = mt_tensor_dim(x, d0);
    d1 = mt_tensor_dim(x, d1);
    for (int d = 0; d < x->ndim; d++) perm[d] = d;
    perm[d0] = d1;
    perm[d1] = d0;
    return mt_permute(x, perm);
}

/* ----------------------------------------------------------------- slice */

/* View of t restricted to [lo[d], lo[d] + len[d]) in each of its dims. */
static mt_tensor *region_view(const mt_tensor *t, const int64_t *lo, const int64_t *len) {
    mt_tensor *v = mt_tensor_retain((mt_tensor *)t);
    for (int d = 0; d < t->ndim; d++) {
        if (lo[d] == 0 && len[d] == t->shape[d]) continue;
        mt_tensor *s = mt_tensor_slice(v, d, lo[d], lo[d] + len[d], 1);
        mt_tensor_release(v);
        v = s;
    }
    return v;
}

/* A new tensor of g's dtype and `shape`, zero except g copied at region (lo, g's shape). */
static mt_tensor *scatter_region(const mt_tensor *g, int nd, const int64_t *shape,
                                 const int64_t *lo) {
    mt_device dev = mt_tensor_device(g);
    mt_tensor *out = mt_tensor_zeros(mt_float_dtype_of(g), nd, shape, dev);
    if (mt_tensor_numel(g)) {
        mt_tensor *v = region_view(out, lo, g->shape);
        mt_kernel(dev, copy)(v, g);
        mt_tensor_release(v);
    }
    return out;
}

/* node->i: [0] ndim, [1..6] input shape, [7] dim, [8] start. */
static void slice_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int nd = (int)node->i[0];
    int64_t xs[MT_MAX_DIMS], lo[MT_MAX_DIMS] = {0};
    load_shape(node, 1, nd, xs);
    lo[node->i[7]] = node->i[8];
    gi[0] = scatter_region(go[0], nd, xs, lo);
}

mt_tensor *mt_slice(const mt_tensor *x, int dim, int64_t start, int64_t end) {
    dim = mt_tensor_dim(x, dim);
    int64_t n = x->shape[dim];
    if (start < 0) start += n;
    if (end < 0) end += n;
    if (end > n) end = n;
    MT_CHECK_MSG(start >= 0 && start <= end, "slice: bad range [%lld, %lld) for size %lld in dim %d",
                 (long long)start, (long long)end, (long long)n, dim);
    mt_tensor *out = mt_tensor_slice(x, dim, start, end, 1);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("SliceBackward", slice_backward, 1, ins, 1);
        n->i[0] = x->ndim;
        save_shape(n, 1, x->ndim, x->shape);
        n->i[7] = dim;
        n->i[8] = start;
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* ------------------------------------------------------------ contiguous */

static void contiguous_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    gi[0] = mt_tensor_contiguous(go[0]);
}

mt_tensor *mt_contiguous(const mt_tensor *x) {
    if (mt_tensor_is_contiguous(x)) return mt_tensor_retain((mt_tensor *)x);
    mt_tensor *out = mt_tensor_clone(x);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("ContiguousBackward", contiguous_backward, 1, ins, 1);
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* ---------------------------------------------------------------- concat */

/* node->i: [0] dim, [1] n; ctx: int64 sizes along dim, one per input. */
static void concat_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int dim = (int)node->i[0], n = (int)node->i[1];
    const int64_t *sizes = node->ctx;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        if (mt_node_needs_grad(node, k)) {
            mt_tensor *v = mt_tensor_slice(go[0], dim, off, off + sizes[k], 1);
            gi[k] = mt_tensor_contiguous(v);
            mt_tensor_release(v);
        }
        off += sizes[k];
    }
}

mt_tensor *mt_concat(int n, mt_tensor *const *xs, int dim) {
    MT_CHECK_MSG(n >= 1, "concat: no inputs");
    const mt_tensor *x0 = xs[0];
    dim = mt_tensor_dim(x0, dim);
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[dim] = 0;
    char b1[128], b2[128];
    for (int k = 0; k < n; k++) {
        const mt_tensor *x = xs[k];
        int ok = x->ndim == x0->ndim && x->dtype == x0->dtype &&
                 mt_device_eq(mt_tensor_device(x), mt_tensor_device(x0));
        for (int d = 0; ok && d < x0->ndim; d++) ok = d == dim || x->shape[d] == x0->shape[d];
        MT_CHECK_MSG(ok, "concat: input %d %s (%s) does not match input 0 %s (%s) along dim %d", k,
                     mt_tensor_shape_str(x, b1, sizeof b1), mt_dtype_name(x->dtype),
                     mt_tensor_shape_str(x0, b2, sizeof b2), mt_dtype_name(x0->dtype), dim);
        shape[dim] += x->shape[dim];
    }
    mt_device dev = mt_tensor_device(x0);
    mt_tensor *out = mt_tensor_new(x0->dtype, x0->ndim, shape, dev);
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        int64_t len = xs[k]->shape[dim];
        if (len && mt_tensor_numel(xs[k])) {
            mt_tensor *v = mt_tensor_slice(out, dim, off, off + len, 1);
            mt_kernel(dev, copy)(v, xs[k]);
            mt_tensor_release(v);
        }
        off += len;
    }
    if (mt_any_requires_grad(n, xs)) {
        mt_node *node = mt_node_new("ConcatBackward", concat_backward, n, xs, 1);
        int64_t *sizes = malloc(sizeof(int64_t) * (size_t)n);
        MT_CHECK(sizes);
        for (int k = 0; k < n; k++) sizes[k] = xs[k]->shape[dim];
        node->ctx = sizes;
        node->ctx_free = free;
        node->i[0] = dim;
        node->i[1] = n;
        mt_node_set_output(node, out, 0);
        mt_node_release(node);
    }
    return out;
}

/* ------------------------------------------------------------------- pad */

/* Per-dim geometry of a constant pad: out size, and the region copied
 * (source start in x, destination start in out, length). */
typedef struct {
    int64_t out_shape[MT_MAX_DIMS];
    int64_t src_lo[MT_MAX_DIMS], dst_lo[MT_MAX_DIMS], len[MT_MAX_DIMS];
    int any_pos, any_crop, empty;
} pad_geom;

static void pad_geometry(pad_geom *g, int nd, const int64_t *xs, int k, const int64_t *pads) {
    g->any_pos = g->any_crop = g->empty = 0;
    for (int d = 0; d < nd; d++) {
        int64_t lo = 0, hi = 0;
        int j = nd - 1 - d; /* pads[2j], pads[2j+1] belong to dim nd-1-j */
        if (j < k) {
            lo = pads[2 * j];
            hi = pads[2 * j + 1];
        }
        int64_t os = xs[d] + lo + hi;
        MT_CHECK_MSG(os >= 0, "pad: dim %d of size %lld padded by (%lld, %lld) is negative", d,
                     (long long)xs[d], (long long)lo, (long long)hi);
        g->out_shape[d] = os;
        g->any_pos |= lo > 0 || hi > 0;
        g->any_crop |= lo < 0 || hi < 0;
        g->src_lo[d] = lo < 0 ? -lo : 0;
        g->dst_lo[d] = lo > 0 ? lo : 0;
        int64_t src_hi = xs[d] - (hi < 0 ? -hi : 0);
        g->len[d] = src_hi > g->src_lo[d] ? src_hi - g->src_lo[d] : 0;
        if (g->len[d] == 0) g->empty = 1;
    }
}

/* node->i: [0] ndim, [1..6] input shape, [7] k, [8..19] pads. */
static void pad_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    int nd = (int)node->i[0], k = (int)node->i[7];
    int64_t xs[MT_MAX_DIMS], pads[2 * MT_MAX_DIMS];
    load_shape(node, 1, nd, xs);
    for (int j = 0; j < 2 * k; j++) pads[j] = node->i[8 + j];
    pad_geom g;
    pad_geometry(&g, nd, xs, k, pads);
    if (g.empty) {
        gi[0] = mt_tensor_zeros(mt_float_dtype_of(go[0]), nd, xs, mt_tensor_device(go[0]));
        return;
    }
    mt_tensor *v = region_view(go[0], g.dst_lo, g.len);
    if (g.any_crop)
        gi[0] = scatter_region(v, nd, xs, g.src_lo);
    else
        gi[0] = mt_tensor_contiguous(v);
    mt_tensor_release(v);
}

mt_tensor *mt_pad(const mt_tensor *x, int k, const int64_t *pads, float value) {
    MT_CHECK_MSG(k >= 0 && k <= x->ndim, "pad: %d padded dims for a %d-d tensor", k, x->ndim);
    pad_geom g;
    pad_geometry(&g, x->ndim, x->shape, k, pads);
    mt_device dev = mt_tensor_device(x);
    mt_tensor *out = mt_tensor_new(x->dtype, x->ndim, g.out_shape, dev);
    if (g.any_pos || g.empty) mt_tensor_fill_(out, value);
    if (!g.empty) {
        mt_tensor *src = region_view(x, g.src_lo, g.len);
        mt_tensor *dst = region_view(out, g.dst_lo, g.len);
        mt_kernel(dev, copy)(dst, src);
        mt_tensor_release(src);
        mt_tensor_release(dst);
    }
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("PadBackward", pad_backward, 1, ins, 1);
        n->i[0] = x->ndim;
        save_shape(n, 1, x->ndim, x->shape);
        n->i[7] = k;
        for (int j = 0; j < 2 * k; j++) n->i[8 + j] = pads[j];
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}
