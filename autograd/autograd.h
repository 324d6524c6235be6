/* Tape-based reverse-mode autograd (DESIGN.md decision 1).
 *
 * Each differentiable op computes eagerly and, when grad mode is on and an
 * input requires grad, records a node: its backward function, saved tensors
 * (detached aliases, so no reference cycles), and one edge per input (to the
 * node that produced it, or to the leaf's gradient-accumulation node).
 * mt_backward() collects the graph reachable from the root, runs nodes in
 * reverse topological order (ready nodes by decreasing creation sequence, as
 * PyTorch), frees each node's saved tensors right after it ran, and for each
 * leaf adds (+=) the gradient into leaf->grad, then fires the leaf's
 * "gradient ready" hook once the last contribution is in.
 *
 * Backward functions write (=) fresh gradient tensors for their inputs; the
 * engine sums contributions and accumulates into parameters.
 */
#ifndef MT_AUTOGRAD_H
#define MT_AUTOGRAD_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_node mt_node;

/* grad_outputs[n_outputs]: gradients w.r.t. the node's outputs (NULL where
 * none flowed; at least one is non-NULL). The function sets grad_inputs[i]
 * to a new reference (or leaves NULL) for each input i with
 * mt_node_needs_grad(node, i). Runs with grad mode off. */
typedef void (*mt_backward_fn)(mt_node *node, mt_tensor **grad_outputs, mt_tensor **grad_inputs);

typedef struct {
    mt_node *node; /* NULL: input needs no gradient */
    int input_nr;  /* which output of `node` this input was */
} mt_edge;

#define MT_NODE_MAX_SAVED 8

struct mt_node {
    int refcount;
    const char *name;
    mt_backward_fn backward;
    uint64_t seq;
    int n_inputs;
    mt_edge *next;   /* [n_inputs] */
    int n_outputs;
    /* metadata of each output, for shape checks and zero-filling */
    mt_tensor *saved[MT_NODE_MAX_SAVED]; /* detached; freed after backward */
    int n_saved;
    double f[8];      /* op parameters */
    mt_dtype dtype;   /* the op's compute dtype, for its backward (f32 by default) */
    int64_t i[24];
    void *ctx;        /* op-specific heap data, freed with ctx_free */
    void (*ctx_free)(void *);
    mt_tensor *leaf;  /* accumulate-grad node: the leaf (weak) */
    int saved_freed;  /* backward ran without retain_graph */
    /* engine scratch */
    int deps;
    mt_tensor **grad_buf;
};

/* ---- grad mode (thread-local) ---- */
int mt_grad_enabled(void);
/* Sets grad mode, returns the previous value. */
int mt_grad_set_enabled(int on);

/* ---- mixed precision (thread-local; train.precision: bf16-mixed) ----
 * While the autocast dtype is MT_BF16, conv3d, conv_transpose3d, matmul and
 * linear cast their floating inputs (activations, weights, bias) to bf16 with
 * a differentiable cast and produce bf16 outputs (fp32 accumulation inside
 * the kernels); ops downstream follow their inputs' dtype (norms keep f32
 * statistics and parameters); binary ops promote mixed bf16/f32 inputs to
 * f32; losses compute in f32. Master weights, their gradients and optimizer
 * state stay f32 (the cast's backward returns f32 gradients). MT_F32 = off. */
mt_dtype mt_autocast_get(void);
/* Sets the autocast dtype (MT_F32 or MT_BF16), returns the previous one. */
mt_dtype mt_autocast_set(mt_dtype dt);
/* Compute dtype of a conv / matmul on x, w and optional b: bf16 under
 * autocast, else f32 unless all of them are bf16. */
mt_dtype mt_autocast_dtype3(const mt_tensor *x, const mt_tensor *w, const mt_tensor *b);

/* ---- leaves ---- */
void mt_tensor_set_requires_grad(mt_tensor *t, int on);
/* Hook fired when the leaf's gradient of the current backward pass is complete. */
void mt_tensor_set_grad_hook(mt_tensor *t, mt_grad_hook hook, void *ctx);
void mt_tensor_zero_grad(mt_tensor *t); /* releases t->grad */
int mt_tensor_is_leaf(const mt_tensor *t);

/* ---- for op implementations ---- */
/* Whether an op on these inputs must record a node. */
int mt_any_requires_grad(int n, mt_tensor *const *inputs);
/* New node with edges for inputs (NULL entries allowed: no edge). */
mt_node *mt_node_new(const char *name, mt_backward_fn fn, int n_inputs, mt_tensor *const *inputs,
                     int n_outputs);
/* Marks out as output `output_nr` of node (sets grad_fn, requires_grad). */
void mt_node_set_output(mt_node *node, mt_tensor *out, int output_nr);
/* Records a detached alias of t; returns its index in node->saved. */
int mt_node_save(mt_node *node, const mt_tensor *t);
int mt_node_needs_grad(const mt_node *node, int input);
void mt_node_release(mt_node *node);
/* Releases the node reference held by the op after set_output (convenience). */

/* Runs backward from root. grad_root may be NULL when root has one element
 * (then the seed gradient is 1). retain_graph keeps saved tensors. */
mt_status mt_backward(mt_tensor *root, const mt_tensor *grad_root, int retain_graph);

/* Dtypes: a gradient has the dtype of the tensor it belongs to (bf16
 * activations get bf16 gradients, f32 parameters f32 ones). */
/* x's dtype if it is a float type, else f32 (integer inputs compute in f32). */
mt_dtype mt_float_dtype_of(const mt_tensor *x);
/* The common float dtype of two operands: bf16 only if both are bf16. */
mt_dtype mt_promote_dtype(const mt_tensor *a, const mt_tensor *b);
/* New reference to a contiguous tensor of dtype dt with g's values (g itself
 * when it already is; no autograd history). */
mt_tensor *mt_contiguous_as(const mt_tensor *g, mt_dtype dt);

/* Reduces grad (shape of a broadcast result) to `shape` by summing over
 * broadcast dims. Returns a new reference. */
mt_tensor *mt_sum_to_shape(const mt_tensor *grad, int ndim, const int64_t *shape);

/* ---- gradcheck (autograd/gradcheck.c) ---- */
/* f maps inputs to one output tensor (new reference). */
typedef mt_tensor *(*mt_gradcheck_fn)(mt_tensor **inputs, void *ctx);
typedef struct {
    double eps;   /* finite-difference step (default 1e-3) */
    double atol;  /* default 1e-3 */
    double rtol;  /* default 1e-2 */
    int max_elems;/* per input, elements probed (default all up to 4096; then a random subset) */
    uint64_t seed;
    int verbose;
} mt_gradcheck_opts;
/* Compares analytic gradients of sum(f(x) * r) (r random, fixed) with central
 * differences for every input that requires grad. Returns 1 on success;
 * prints the worst mismatch to stderr on failure. */
int mt_gradcheck(mt_gradcheck_fn f, void *ctx, int n_inputs, mt_tensor **inputs,
                 const mt_gradcheck_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
