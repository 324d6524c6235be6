/* The one tensor type (DESIGN.md decision 2).
 *
 * A tensor is a refcounted view (dtype, shape, strides in elements, offset)
 * onto refcounted storage that lives on one device. Functions that return a
 * tensor return a new reference the caller owns: release it with
 * mt_tensor_release(). Views share storage with their base.
 *
 * Autograd fields (requires_grad, grad, grad_fn, hook) are owned by
 * autograd/; core only frees them.
 *
 * Shape errors inside ops are programming errors and abort through MT_CHECK
 * with the op name and shapes; user-facing shapes (config, data) are
 * validated where they enter and reported as mt_status.
 */
#ifndef MT_TENSOR_H
#define MT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_MAX_DIMS 6

typedef enum { MT_CPU = 0, MT_CUDA = 1, MT_NUM_DEVICE_TYPES = 2 } mt_device_type;

typedef struct {
    mt_device_type type;
    int index;
} mt_device;

static const mt_device MT_DEVICE_CPU = {MT_CPU, 0};

typedef struct mt_storage {
    void *data;
    size_t nbytes;
    int refcount;
    mt_device device;
    int external; /* data not owned (not freed) */
    /* NULL: freed by the device's backend; else this (page-locked host memory
     * from another backend's host_alloc_pinned) */
    void (*free_fn)(void *data, size_t nbytes);
} mt_storage;

struct mt_node;
struct mt_tensor;
/* Called once per backward pass when a leaf's gradient is complete. */
typedef void (*mt_grad_hook)(struct mt_tensor *leaf, void *ctx);

typedef struct mt_tensor {
    int refcount;
    mt_dtype dtype;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    int64_t strides[MT_MAX_DIMS]; /* in elements */
    int64_t offset;               /* in elements */
    mt_storage *storage;
    /* autograd (see autograd/autograd.h) */
    int requires_grad;
    struct mt_tensor *grad;       /* leaf gradient, same shape, f32 */
    struct mt_node *grad_fn;      /* node that produced this tensor (non-leaf) */
    int output_nr;                /* which output of grad_fn */
    struct mt_node *grad_acc;     /* leaf: its gradient-accumulation node */
    mt_grad_hook hook;
    void *hook_ctx;
} mt_tensor;

const char *mt_device_name(mt_device d, char *buf, size_t n);
int mt_device_eq(mt_device a, mt_device b);

/* --- creation (uninitialised / filled / copied) --- */
mt_tensor *mt_tensor_new(mt_dtype dt, int ndim, const int64_t *shape, mt_device dev);
mt_tensor *mt_tensor_new_like(const mt_tensor *t);
mt_tensor *mt_tensor_zeros(mt_dtype dt, int ndim, const int64_t *shape, mt_device dev);
mt_tensor *mt_tensor_full(mt_dtype dt, int ndim, const int64_t *shape, double value, mt_device dev);
mt_tensor *mt_tensor_zeros_like(const mt_tensor *t);
/* A CPU tensor in page-locked host memory of the backend of `for_dev` (fast,
 * asynchronous-capable copies to that device: the loader's batches for a GPU
 * run); an ordinary CPU tensor when that backend has no pinned memory. */
mt_tensor *mt_tensor_new_pinned(mt_dtype dt, int ndim, const int64_t *shape, mt_device for_dev);
/* Copies n elements of host data of dtype dt into a new CPU tensor. */
mt_tensor *mt_tensor_from_data(mt_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Wraps caller-owned host memory (not freed by medtrain). */
mt_tensor *mt_tensor_wrap(mt_dtype dt, int ndim, const int64_t *shape, void *data);
mt_tensor *mt_scalar(float v); /* 0-d f32 tensor on CPU */

/* Convenience shape builders: MT_SHAPE(2,3) -> ndim, (int64_t[]){2,3} */
#define MT_SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}

mt_tensor *mt_tensor_retain(mt_tensor *t);
void mt_tensor_release(mt_tensor *t);

/* --- properties --- */
int64_t mt_tensor_numel(const mt_tensor *t);
size_t mt_tensor_nbytes(const mt_tensor *t);
int mt_tensor_is_contiguous(const mt_tensor *t);
int mt_tensor_same_shape(const mt_tensor *a, const mt_tensor *b);
mt_device mt_tensor_device(const mt_tensor *t);
/* Pointer to element [0...] (storage data + offset). */
void *mt_tensor_data(const mt_tensor *t);
#define MT_F32P(t) ((float *)mt_tensor_data(t))
/* "(2, 3, 4)" into buf. */
const char *mt_tensor_shape_str(const mt_tensor *t, char *buf, size_t n);
/* Dimension index, negative counts from the end; aborts if out of range. */
int mt_tensor_dim(const mt_tensor *t, int d);

/* --- views (share storage; no autograd: see autograd/ops.h for that) --- */
/* A view with a new shape if strides allow, else NULL (-1 in shape is inferred). */
mt_tensor *mt_tensor_view(const mt_tensor *t, int ndim, const int64_t *shape);
/* View if possible, otherwise a contiguous copy. */
mt_tensor *mt_tensor_reshape(const mt_tensor *t, int ndim, const int64_t *shape);
mt_tensor *mt_tensor_permute(const mt_tensor *t, const int *perm);
mt_tensor *mt_tensor_transpose(const mt_tensor *t, int d0, int d1);
/* Elements start..end-1 (step >= 1) along dim; end clamped. */
mt_tensor *mt_tensor_slice(const mt_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
/* Broadcast view: dims of size 1 (or missing leading dims) get stride 0. */
mt_tensor *mt_tensor_expand(const mt_tensor *t, int ndim, const int64_t *shape);
mt_tensor *mt_tensor_unsqueeze(const mt_tensor *t, int dim);
mt_tensor *mt_tensor_squeeze(const mt_tensor *t, int dim);
/* New reference to t itself if contiguous, else a contiguous copy. */
mt_tensor *mt_tensor_contiguous(const mt_tensor *t);
/* A tensor sharing t's data with no autograd history. */
mt_tensor *mt_tensor_detach(const mt_tensor *t);

/* --- data movement --- */
mt_tensor *mt_tensor_clone(const mt_tensor *t);            /* contiguous copy */
mt_tensor *mt_tensor_to_dtype(const mt_tensor *t, mt_dtype dt); /* ref to t if same */
mt_tensor *mt_tensor_to_device(const mt_tensor *t, mt_device dev);
void mt_tensor_copy_(mt_tensor *dst, const mt_tensor *src); /* same shape, any strides/dtypes */
void mt_tensor_fill_(mt_tensor *t, double value);
/* Element access for tests and small host-side work (CPU only, slow). */
double mt_tensor_get(const mt_tensor *t, const int64_t *idx);
double mt_tensor_get_flat(const mt_tensor *t, int64_t i); /* i in row-major logical order */
void mt_tensor_set_flat(mt_tensor *t, int64_t i, double v);
double mt_tensor_item(const mt_tensor *t); /* single-element tensor */
/* Copies the logical contents to host f32 / f64 arrays of numel elements. */
void mt_tensor_to_f32_array(const mt_tensor *t, float *out);
void mt_tensor_to_f64_array(const mt_tensor *t, double *out);

/* Broadcast shape of a and b (numpy rules); returns MT_ERR_INVALID if incompatible. */
mt_status mt_broadcast_shape(int *ndim, int64_t *shape, const mt_tensor *a, const mt_tensor *b);

#ifdef __cplusplus
}
#endif
#endif
