/* Backward engine, grad mode, leaves and node bookkeeping. */
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/backend.h"

extern void (*mt_tensor_autograd_release_hook)(mt_tensor *t);

static _Thread_local int g_grad_disabled = 0;
static uint64_t g_seq = 0;

int mt_grad_enabled(void) { return !g_grad_disabled; }

int mt_grad_set_enabled(int on) {
    int prev = !g_grad_disabled;
    g_grad_disabled = !on;
    return prev;
}

static _Thread_local mt_dtype g_autocast = MT_F32;

mt_dtype mt_autocast_get(void) { return g_autocast; }

mt_dtype mt_autocast_set(mt_dtype dt) {
    MT_CHECK_MSG(dt == MT_F32 || dt == MT_BF16, "autocast to %s (only f32 = off and bf16)",
                 mt_dtype_name(dt));
    mt_dtype prev = g_autocast;
    g_autocast = dt;
    return prev;
}

static void node_retain(mt_node *n) { __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED); }

static void free_saved(mt_node *n) {
    for (int k = 0; k < n->n_saved; k++) {
        mt_tensor_release(n->saved[k]);
        n->saved[k] = NULL;
    }
}

void mt_node_release(mt_node *n) {
    /* Iterative to avoid deep recursion on long chains. */
    mt_node *stack_small[64];
    mt_node **stack = stack_small;
    int cap = 64, top = 0;
    stack[top++] = n;
    while (top) {
        mt_node *m = stack[--top];
        if (!m) continue;
        if (__atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) != 0) continue;
        free_saved(m);
        if (m->ctx && m->ctx_free) m->ctx_free(m->ctx);
        for (int k = 0; k < m->n_inputs; k++) {
            if (!m->next[k].node) continue;
            if (top == cap) {
                int ncap = cap * 2;
                mt_node **ns = malloc(sizeof *ns * (size_t)ncap);
                MT_CHECK(ns);
                memcpy(ns, stack, sizeof *ns * (size_t)top);
                if (stack != stack_small) free(stack);
                stack = ns;
                cap = ncap;
            }
            stack[top++] = m->next[k].node;
        }
        free(m->next);
        free(m->grad_buf);
        free(m);
    }
    if (stack != stack_small) free(stack);
}

static void autograd_release_hook(mt_tensor *t) {
    if (t->grad_acc) {
        t->grad_acc->leaf = NULL;
        mt_node_release(t->grad_acc);
        t->grad_acc = NULL;
    }
    if (t->grad_fn) {
        mt_node_release(t->grad_fn);
        t->grad_fn = NULL;
    }
    mt_tensor_release(t->grad);
    t->grad = NULL;
}

static void ensure_hook_installed(void) { mt_tensor_autograd_release_hook = autograd_release_hook; }

int mt_tensor_is_leaf(const mt_tensor *t) { return t->grad_fn == NULL; }

void mt_tensor_set_requires_grad(mt_tensor *t, int on) {
    MT_CHECK_MSG(!on || mt_dtype_is_float(t->dtype), "requires_grad on a %s tensor",
                 mt_dtype_name(t->dtype));
    MT_CHECK_MSG(t->grad_fn == NULL, "requires_grad can only be set on leaf tensors");
    ensure_hook_installed();
    t->requires_grad = on;
}

void mt_tensor_set_grad_hook(mt_tensor *t, mt_grad_hook hook, void *ctx) {
    t->hook = hook;
    t->hook_ctx = ctx;
}

void mt_tensor_zero_grad(mt_tensor *t) {
    mt_tensor_release(t->grad);
    t->grad = NULL;
}

int mt_any_requires_grad(int n, mt_tensor *const *inputs) {
    if (g_grad_disabled) return 0;
    for (int k = 0; k < n; k++)
        if (inputs[k] && inputs[k]->requires_grad) return 1;
    return 0;
}

static mt_node *node_alloc(const char *name, mt_backward_fn fn, int n_inputs, int n_outputs) {
    mt_node *n = calloc(1, sizeof *n);
    MT_CHECK(n);
    n->refcount = 1;
    n->name = name;
    n->backward = fn;
    n->seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    n->next = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *n->next);
    MT_CHECK(n->next);
    return n;
}

static mt_node *leaf_acc_node(mt_tensor *t) {
    if (!t->grad_acc) {
        mt_node *a = node_alloc("AccumulateGrad", NULL, 0, 1);
        a->leaf = t;
        t->grad_acc = a;
    }
    return t->grad_acc;
}

mt_node *mt_node_new(const char *name, mt_backward_fn fn, int n_inputs, mt_tensor *const *inputs,
                     int n_outputs) {
    ensure_hook_installed();
    mt_node *n = node_alloc(name, fn, n_inputs, n_outputs);
    for (int k = 0; k < n_inputs; k++) {
        mt_tensor *t = inputs[k];
        if (!t || !t->requires_grad) continue;
        mt_node *target = t->grad_fn ? t->grad_fn : leaf_acc_node(t);
        node_retain(target);
        n->next[k].node = target;
        n->next[k].input_nr = t->grad_fn ? t->output_nr : 0;
    }
    return n;
}

void mt_node_set_output(mt_node *node, mt_tensor *out, int output_nr) {
    MT_CHECK(out->grad_fn == NULL && output_nr < node->n_outputs);
    node_retain(node);
    out->grad_fn = node;
    out->output_nr = output_nr;
    out->requires_grad = 1;
}

int mt_node_save(mt_node *node, const mt_tensor *t) {
    MT_CHECK_MSG(node->n_saved < MT_NODE_MAX_SAVED, "node %s saves too many tensors", node->name);
    node->saved[node->n_saved] = t ? mt_tensor_detach(t) : NULL;
    return node->n_saved++;
}

int mt_node_needs_grad(const mt_node *node, int input) { return node->next[input].node != NULL; }

/* --------------------------------------------------------------- engine */

typedef struct {
    mt_node **v;
    int n, cap;
} node_vec;

static void vec_push(node_vec *a, mt_node *n) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = realloc(a->v, sizeof *a->v * (size_t)a->cap);
        MT_CHECK(a->v);
    }
    a->v[a->n++] = n;
}

/* max-heap by seq */
static void heap_push(node_vec *h, mt_node *n) {
    vec_push(h, n);
    int i = h->n - 1;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h->v[p]->seq >= h->v[i]->seq) break;
        mt_node *t = h->v[p];
        h->v[p] = h->v[i];
        h->v[i] = t;
        i = p;
    }
}

static mt_node *heap_pop(node_vec *h) {
    mt_node *top = h->v[0];
    h->v[0] = h->v[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->v[l]->seq > h->v[m]->seq) m = l;
        if (r < h->n && h->v[r]->seq > h->v[m]->seq) m = r;
        if (m == i) break;
        mt_node *t = h->v[m];
        h->v[m] = h->v[i];
        h->v[i] = t;
        i = m;
    }
    return top;
}

static mt_tensor *add_tensors(const mt_tensor *a, const mt_tensor *b) {
    char b1[128], b2[128];
    MT_CHECK_MSG(mt_tensor_same_shape(a, b), "gradient shapes differ: %s vs %s",
                 mt_tensor_shape_str(a, b1, sizeof b1), mt_tensor_shape_str(b, b2, sizeof b2));
    mt_tensor *out = mt_tensor_new(a->dtype, a->ndim, a->shape, mt_tensor_device(a));
    mt_tensor *bc = b->dtype == a->dtype ? mt_tensor_detach(b) : mt_contiguous_as(b, a->dtype);
    mt_kernel(mt_tensor_device(a), binary)(MT_BIN_ADD, out, a, bc);
    mt_tensor_release(bc);
    return out;
}

static void buf_accumulate(mt_tensor **slot, mt_tensor *g /* reference consumed */) {
    if (!*slot) {
        *slot = g;
        return;
    }
    mt_tensor *s = add_tensors(*slot, g);
    mt_tensor_release(*slot);
    mt_tensor_release(g);
    *slot = s;
}

static void accumulate_leaf(mt_node *n, mt_tensor *g) {
    mt_tensor *leaf = n->leaf;
    if (!leaf) return; /* leaf already freed */
    char b1[128], b2[128];
    MT_CHECK_MSG(mt_tensor_same_shape(leaf, g), "gradient of shape %s for leaf of shape %s",
                 mt_tensor_shape_str(g, b1, sizeof b1), mt_tensor_shape_str(leaf, b2, sizeof b2));
    if (!leaf->grad) {
        /* Take the buffer when nothing else can see it, else a private copy. */
        mt_dtype gdt = mt_float_dtype_of(leaf);
        if (g->dtype == gdt && mt_tensor_is_contiguous(g) && g->refcount == 1 &&
            g->storage->refcount == 1) {
            leaf->grad = mt_tensor_retain(g);
        } else {
            leaf->grad = mt_tensor_new(gdt, leaf->ndim, leaf->shape, mt_tensor_device(leaf));
            mt_tensor_copy_(leaf->grad, g);
        }
    } else {
        mt_tensor *gc = mt_contiguous_as(g, leaf->grad->dtype);
        mt_kernel(mt_tensor_device(g), binary)(MT_BIN_ADD, leaf->grad, leaf->grad, gc);
        mt_tensor_release(gc);
    }
}

mt_status mt_backward(mt_tensor *root, const mt_tensor *grad_root, int retain_graph) {
    if (!root->requires_grad)
        return mt_error_set(MT_ERR_INVALID, "backward: tensor does not require grad");
    mt_tensor *seed;
    if (grad_root) {
        if (!mt_tensor_same_shape(root, grad_root))
            return mt_error_set(MT_ERR_INVALID, "backward: gradient shape does not match output");
        seed = mt_tensor_to_dtype(grad_root, mt_float_dtype_of(root));
    } else {
        if (mt_tensor_numel(root) != 1)
            return mt_error_set(MT_ERR_INVALID,
                                "backward: gradient can be implied only for a one-element output");
        seed = mt_tensor_full(mt_float_dtype_of(root), root->ndim, root->shape, 1.0,
                              mt_tensor_device(root));
    }
    mt_node *start = root->grad_fn ? root->grad_fn : leaf_acc_node(root);
    int start_nr = root->grad_fn ? root->output_nr : 0;

    int prev_mode = mt_grad_set_enabled(0);

    /* Collect the graph (grad_buf allocation marks visited). */
    node_vec all = {0}, stack = {0};
    start->grad_buf = calloc((size_t)start->n_outputs, sizeof(mt_tensor *));
    start->deps = 0;
    vec_push(&all, start);
    vec_push(&stack, start);
    while (stack.n) {
        mt_node *n = stack.v[--stack.n];
        for (int k = 0; k < n->n_inputs; k++) {
            mt_node *m = n->next[k].node;
            if (!m) continue;
            if (!m->grad_buf) {
                m->grad_buf = calloc((size_t)m->n_outputs, sizeof(mt_tensor *));
                m->deps = 0;
                vec_push(&all, m);
                vec_push(&stack, m);
            }
            m->deps++;
        }
    }
    free(stack.v);

    mt_status st = MT_OK;
    node_vec heap = {0};
    start->grad_buf[start_nr] = seed;
    heap_push(&heap, start);
    while (heap.n) {
        mt_node *n = heap_pop(&heap);
        int any = 0;
        for (int k = 0; k < n->n_outputs; k++) any |= n->grad_buf[k] != NULL;
        if (n->leaf || (!n->backward && n->n_inputs == 0)) {
            if (any) accumulate_leaf(n, n->grad_buf[0]);
            if (n->leaf && n->leaf->hook) n->leaf->hook(n->leaf, n->leaf->hook_ctx);
        } else if (any) {
            if (n->saved_freed) {
                st = mt_error_set(MT_ERR_INVALID,
                                  "backward through node %s a second time (saved tensors freed; "
                                  "use retain_graph)",
                                  n->name);
            } else {
                mt_tensor **gi = calloc((size_t)(n->n_inputs ? n->n_inputs : 1), sizeof *gi);
                MT_CHECK(gi);
                n->backward(n, n->grad_buf, gi);
                for (int k = 0; k < n->n_inputs; k++) {
                    if (!gi[k]) continue;
                    mt_edge e = n->next[k];
                    if (e.node) buf_accumulate(&e.node->grad_buf[e.input_nr], gi[k]);
                    else mt_tensor_release(gi[k]);
                }
                free(gi);
            }
        }
        for (int k = 0; k < n->n_outputs; k++) {
            mt_tensor_release(n->grad_buf[k]);
            n->grad_buf[k] = NULL;
        }
        if (!retain_graph && !n->leaf) {
            free_saved(n);
            if (n->backward) n->saved_freed = 1;
        }
        for (int k = 0; k < n->n_inputs; k++) {
            mt_node *m = n->next[k].node;
            if (m && --m->deps == 0) heap_push(&heap, m);
        }
    }
    free(heap.v);
    for (int k = 0; k < all.n; k++) {
        free(all.v[k]->grad_buf);
        all.v[k]->grad_buf = NULL;
    }
    free(all.v);
    mt_grad_set_enabled(prev_mode);
    return st;
}

mt_dtype mt_float_dtype_of(const mt_tensor *x) { return mt_dtype_is_float(x->dtype) ? x->dtype : MT_F32; }

mt_dtype mt_promote_dtype(const mt_tensor *a, const mt_tensor *b) {
    return (a->dtype == MT_BF16 && b->dtype == MT_BF16) ? MT_BF16 : MT_F32;
}

mt_tensor *mt_contiguous_as(const mt_tensor *g, mt_dtype dt) {
    if (g->dtype == dt && mt_tensor_is_contiguous(g)) return mt_tensor_detach(g);
    mt_tensor *c = mt_tensor_new(dt, g->ndim, g->shape, mt_tensor_device(g));
    if (mt_tensor_numel(c)) mt_kernel(mt_tensor_device(g), copy)(c, g);
    return c;
}

mt_tensor *mt_sum_to_shape(const mt_tensor *grad, int ndim, const int64_t *shape) {
    int lead = grad->ndim - ndim;
    MT_CHECK(lead >= 0);
    int64_t keep[MT_MAX_DIMS];
    int need = 0;
    for (int k = 0; k < grad->ndim; k++) {
        int j = k - lead;
        if (j < 0) {
            keep[k] = 1;
            need |= grad->shape[k] != 1;
        } else if (shape[j] == 1 && grad->shape[k] != 1) {
            keep[k] = 1;
            need = 1;
        } else {
            MT_CHECK(shape[j] == grad->shape[k]);
            keep[k] = grad->shape[k];
        }
    }
    if (!need) return mt_tensor_reshape(grad, ndim, shape);
    mt_tensor *gc = mt_tensor_contiguous(grad);
    mt_tensor *r = mt_tensor_new(mt_float_dtype_of(grad), grad->ndim, keep, mt_tensor_device(grad));
    mt_kernel(mt_tensor_device(grad), reduce)(MT_RED_SUM, r, gc);
    mt_tensor_release(gc);
    mt_tensor *out = mt_tensor_reshape(r, ndim, shape);
    mt_tensor_release(r);
    return out;
}
