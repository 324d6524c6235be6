/* The module system: a tree of named modules, each holding named parameters
 * (f32 leaves with requires_grad) and buffers (running statistics), a
 * train/eval flag and a forward function, as torch.nn.Module.
 *
 * Names: a module's tensors are addressed by dotted paths built exactly as
 * PyTorch's state_dict does (child names joined with '.', then the tensor's
 * local name), e.g. "enc1.conv1.weight", "enc1.norm1.running_mean", so that
 * weight files interoperate with an equivalent PyTorch module.
 *
 * Order: mt_module_named_parameters lists a module's own parameters in
 * registration order, then each child's (depth-first, registration order),
 * as torch's named_parameters(); mt_module_named_buffers likewise;
 * mt_module_state_dict interleaves per module (own parameters, own buffers,
 * then children), as torch's state_dict().
 *
 * num_batches_tracked: PyTorch stores it as int64; medtrain has no 64-bit
 * integer dtype, so it is a 0-d i32 buffer with the same name (overflows
 * after 2^31 training steps, far beyond any run). Loading an int64 value
 * converted to i32/f32 by the weight-file reader is accepted.
 *
 * Ownership: a parent owns its children (mt_module_free frees the tree);
 * a module owns one reference to each of its tensors. Modules are not
 * refcounted. Functions returning a tensor return a new reference.
 */
#ifndef MT_MODULE_H
#define MT_MODULE_H

#include "autograd/autograd.h"
#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_module mt_module;

/* Forward of a single-input, single-output module; returns a new reference. */
typedef mt_tensor *(*mt_module_forward_fn)(mt_module *m, const mt_tensor *x /* (N, C, *) */);

typedef struct {
    char *name;
    mt_tensor *tensor; /* parameter: any shape, f32 leaf; buffer: any dtype */
} mt_named_tensor;

typedef struct {
    char *name;
    mt_module *module;
} mt_named_module;

struct mt_module {
    const char *type;  /* class name, e.g. "Conv3d" (static string) */
    int training;      /* 1 after construction, as PyTorch */
    int n_params, cap_params;
    mt_named_tensor *params;   /* local names, registration order */
    int n_buffers, cap_buffers;
    mt_named_tensor *buffers;
    int n_children, cap_children;
    mt_named_module *children;
    mt_module_forward_fn forward; /* NULL: not callable on its own */
    void *impl;                   /* layer-specific data, freed with impl_free */
    void (*impl_free)(void *impl);
};

/* A list of (full name, tensor) pairs; the list owns a reference to each
 * tensor and its name strings. */
typedef struct {
    int n, cap;
    mt_named_tensor *items;
} mt_named_tensors;

/* ---- building ---- */
/* An empty module in training mode with no forward. */
mt_module *mt_module_new(const char *type, mt_module_forward_fn forward);
/* Registers t (new reference taken) as parameter `name`: sets requires_grad.
 * Returns t (borrowed). Names must be unique within the module. */
mt_tensor *mt_module_add_param(mt_module *m, const char *name, mt_tensor *t /* any shape, f32 */);
/* Registers a buffer (new reference taken); returns it (borrowed). */
mt_tensor *mt_module_add_buffer(mt_module *m, const char *name, mt_tensor *t /* any shape */);
/* Makes child owned by m under `name`; returns child. */
mt_module *mt_module_add_child(mt_module *m, const char *name, mt_module *child);
/* Frees the module, its children and its tensor references. NULL is a no-op. */
void mt_module_free(mt_module *m);

/* ---- use ---- */
/* Calls m->forward (aborts if it has none). Returns a new reference. */
mt_tensor *mt_module_forward(mt_module *m, const mt_tensor *x /* (N, C, *) */);
/* Forward that runs the children in registration order (nn.Sequential). */
mt_tensor *mt_module_sequential_forward(mt_module *m, const mt_tensor *x /* (N, C, *) */);
/* Sets the training flag of m and all descendants (on = 0: eval). */
void mt_module_train(mt_module *m, int on);
/* Local lookups (own tensors / direct child), borrowed; NULL if absent. */
mt_tensor *mt_module_param(const mt_module *m, const char *local_name);
mt_tensor *mt_module_buffer(const mt_module *m, const char *local_name);
mt_module *mt_module_child(const mt_module *m, const char *local_name);
/* Descendant by dotted path ("enc1.conv1"; "" is m itself), borrowed; NULL if absent. */
mt_module *mt_module_find(mt_module *m, const char *path);
/* Parameter or buffer by full dotted name; a new reference, NULL if absent. */
mt_tensor *mt_module_get_tensor(mt_module *m, const char *full_name);

/* ---- listing (append to *out; initialise it with {0} first) ---- */
void mt_module_named_parameters(const mt_module *m, mt_named_tensors *out);
void mt_module_named_buffers(const mt_module *m, mt_named_tensors *out);
/* Parameters and buffers in torch state_dict() order. */
void mt_module_state_dict(const mt_module *m, mt_named_tensors *out);
void mt_named_tensors_free(mt_named_tensors *l);
/* Appends (name, t) taking a new reference to t and copying name. */
void mt_named_tensors_append(mt_named_tensors *l, const char *name, mt_tensor *t /* any shape */);
/* Index of name in l, or -1. */
int mt_named_tensors_find(const mt_named_tensors *l, const char *name);

/* Total number of parameter elements (sum of numel, as PyTorch counts). */
int64_t mt_module_num_params(const mt_module *m);
/* Number of parameter tensors. */
int mt_module_num_param_tensors(const mt_module *m);

/* ---- state ---- */
/* Copies values from `src` (full names) into the module's parameters and
 * buffers (casting dtype, across devices). Every name and shape is checked
 * before anything is copied: a shape mismatch names the key and both shapes;
 * with strict, a key missing from src or a key of src the module lacks is an
 * error naming it. */
mt_status mt_module_load(mt_module *m, const mt_named_tensors *src, int strict);
/* Moves every parameter and buffer to dev (replacing the tensors; parameters
 * stay leaves with requires_grad and keep their hooks; gradients dropped). */
mt_status mt_module_to_device(mt_module *m, mt_device dev);
/* Releases the gradient of every parameter. */
void mt_module_zero_grad(mt_module *m);
/* Sets the "gradient ready" hook (autograd.h) on every parameter. */
void mt_module_set_grad_hook(mt_module *m, mt_grad_hook hook, void *ctx);
/* Sets the hook on one parameter by full name; MT_ERR_INVALID naming it if absent. */
mt_status mt_module_set_param_grad_hook(mt_module *m, const char *full_name, mt_grad_hook hook,
                                        void *ctx);

#ifdef __cplusplus
}
#endif
#endif
