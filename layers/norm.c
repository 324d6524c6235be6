/* Normalisation modules (ops: autograd/norm.c). */
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

typedef struct {
    int num_features; /* channels (batch/instance/group norm) */
    int groups;       /* group norm */
    float eps, momentum;
    int ndim;         /* layer norm: normalised dims */
    int sync;         /* batch norm: statistics over all ranks (mt_sync_batch_norm) */
    int64_t shape[MT_MAX_DIMS];
} norm_impl;

static norm_impl *impl_new(mt_module *m) {
    norm_impl *n = calloc(1, sizeof *n);
    MT_CHECK(n);
    m->impl = n;
    m->impl_free = free;
    return n;
}

static void add_affine(mt_module *m, int ndim, const int64_t *shape) {
    mt_tensor *w = mt_tensor_full(MT_F32, ndim, shape, 1.0, MT_DEVICE_CPU);
    mt_tensor *b = mt_tensor_zeros(MT_F32, ndim, shape, MT_DEVICE_CPU);
    mt_module_add_param(m, "weight", w);
    mt_module_add_param(m, "bias", b);
    mt_tensor_release(w);
    mt_tensor_release(b);
}

static void check_channels(const mt_module *m, const mt_tensor *x, int c) {
    MT_CHECK_MSG(x->ndim >= 2 && x->shape[1] == c,
                 "%s: expected input (N, %d, *), got %d dims with %lld channels", m->type, c,
                 x->ndim, (long long)(x->ndim > 1 ? x->shape[1] : -1));
}

/* ---------------------------------------------------------- BatchNorm3d */

/* num_batches_tracked += 1 without a host round trip on accelerators (the
 * counter is i32; elementwise kernels are f32, exact up to 2^24 steps). */
static void increment_counter(mt_tensor *nbt /* () i32 */) {
    mt_device dev = mt_tensor_device(nbt);
    if (dev.type == MT_CPU) {
        mt_tensor_set_flat(nbt, 0, mt_tensor_get_flat(nbt, 0) + 1);
        return;
    }
    mt_tensor *f = mt_tensor_to_dtype(nbt, MT_F32);
    mt_tensor *g = mt_tensor_new_like(f);
    mt_kernel(dev, unary)(MT_UN_ADD_SCALAR, g, f, 1.0f);
    mt_tensor_copy_(nbt, g);
    mt_tensor_release(f);
    mt_tensor_release(g);
}

static mt_tensor *batch_norm_forward(mt_module *m, const mt_tensor *x) {
    norm_impl *n = m->impl;
    check_channels(m, x, n->num_features);
    MT_CHECK_MSG(x->ndim == 5, "BatchNorm3d: expected a 5-D input (N, C, D, H, W), got %d dims",
                 x->ndim);
    /* sync: batch statistics over all ranks in training (one all-reduce per
     * forward); eval, or no all-reduce hook installed: plain batch norm */
    mt_tensor *y = (n->sync ? mt_sync_batch_norm : mt_batch_norm)(
        x, mt_module_param(m, "weight"), mt_module_param(m, "bias"),
        mt_module_buffer(m, "running_mean"), mt_module_buffer(m, "running_var"), m->training,
        n->momentum, n->eps);
    if (m->training) increment_counter(mt_module_buffer(m, "num_batches_tracked"));
    return y;
}

mt_module *mt_batch_norm3d_new(int num_features, float eps, float momentum) {
    MT_CHECK_MSG(num_features > 0, "BatchNorm3d: num_features %d", num_features);
    mt_module *m = mt_module_new("BatchNorm3d", batch_norm_forward);
    norm_impl *n = impl_new(m);
    n->num_features = num_features;
    n->eps = eps;
    n->momentum = momentum;
    add_affine(m, MT_SHAPE(num_features));
    mt_tensor *rm = mt_tensor_zeros(MT_F32, MT_SHAPE(num_features), MT_DEVICE_CPU);
    mt_tensor *rv = mt_tensor_full(MT_F32, MT_SHAPE(num_features), 1.0, MT_DEVICE_CPU);
    mt_tensor *nbt = mt_tensor_zeros(MT_I32, 0, NULL, MT_DEVICE_CPU);
    mt_module_add_buffer(m, "running_mean", rm);
    mt_module_add_buffer(m, "running_var", rv);
    mt_module_add_buffer(m, "num_batches_tracked", nbt);
    mt_tensor_release(rm);
    mt_tensor_release(rv);
    mt_tensor_release(nbt);
    return m;
}

int mt_module_convert_sync_batchnorm(mt_module *m, int on) {
    int count = 0;
    if (m->forward == batch_norm_forward) {
        ((norm_impl *)m->impl)->sync = on != 0;
        count++;
    }
    for (int k = 0; k < m->n_children; k++)
        count += mt_module_convert_sync_batchnorm(m->children[k].module, on);
    return count;
}

int mt_batch_norm3d_is_sync(const mt_module *m) {
    return m->forward == batch_norm_forward && ((const norm_impl *)m->impl)->sync;
}

/* ------------------------------------------------------- InstanceNorm3d */

static mt_tensor *instance_norm_forward(mt_module *m, const mt_tensor *x) {
    norm_impl *n = m->impl;
    check_channels(m, x, n->num_features);
    return mt_instance_norm(x, mt_module_param(m, "weight"), mt_module_param(m, "bias"), n->eps);
}

mt_module *mt_instance_norm3d_new(int num_features, float eps, int affine) {
    MT_CHECK_MSG(num_features > 0, "InstanceNorm3d: num_features %d", num_features);
    mt_module *m = mt_module_new("InstanceNorm3d", instance_norm_forward);
    norm_impl *n = impl_new(m);
    n->num_features = num_features;
    n->eps = eps;
    if (affine) add_affine(m, MT_SHAPE(num_features));
    return m;
}

/* ------------------------------------------------------------ GroupNorm */

static mt_tensor *group_norm_forward(mt_module *m, const mt_tensor *x) {
    norm_impl *n = m->impl;
    check_channels(m, x, n->num_features);
    return mt_group_norm(x, n->groups, mt_module_param(m, "weight"), mt_module_param(m, "bias"),
                         n->eps);
}

mt_module *mt_group_norm_new(int num_groups, int num_channels, float eps, int affine) {
    MT_CHECK_MSG(num_groups > 0 && num_channels > 0 && num_channels % num_groups == 0,
                 "GroupNorm: %d channels not divisible into %d groups", num_channels, num_groups);
    mt_module *m = mt_module_new("GroupNorm", group_norm_forward);
    norm_impl *n = impl_new(m);
    n->num_features = num_channels;
    n->groups = num_groups;
    n->eps = eps;
    if (affine) add_affine(m, MT_SHAPE(num_channels));
    return m;
}

/* ------------------------------------------------------------ LayerNorm */

static mt_tensor *layer_norm_forward(mt_module *m, const mt_tensor *x) {
    norm_impl *n = m->impl;
    MT_CHECK_MSG(x->ndim >= n->ndim, "LayerNorm: input has %d dims, needs at least %d", x->ndim,
                 n->ndim);
    for (int k = 0; k < n->ndim; k++)
        MT_CHECK_MSG(x->shape[x->ndim - n->ndim + k] == n->shape[k],
                     "LayerNorm: input dim %d is %lld, normalized_shape has %lld",
                     x->ndim - n->ndim + k, (long long)x->shape[x->ndim - n->ndim + k],
                     (long long)n->shape[k]);
    return mt_layer_norm(x, n->ndim, mt_module_param(m, "weight"), mt_module_param(m, "bias"),
                         n->eps);
}

mt_module *mt_layer_norm_new(int ndim, const int64_t *normalized_shape, float eps,
                             int elementwise_affine) {
    MT_CHECK_MSG(ndim > 0 && ndim <= MT_MAX_DIMS, "LayerNorm: %d normalised dims", ndim);
    mt_module *m = mt_module_new("LayerNorm", layer_norm_forward);
    norm_impl *n = impl_new(m);
    n->ndim = ndim;
    memcpy(n->shape, normalized_shape, sizeof(int64_t) * (size_t)ndim);
    n->eps = eps;
    if (elementwise_affine) add_affine(m, ndim, normalized_shape);
    return m;
}
