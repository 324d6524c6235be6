#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"

/* Autograd frees its own fields through this hook (set by autograd/). */
void (*mt_tensor_autograd_release_hook)(mt_tensor *t) = NULL;

const char *mt_device_name(mt_device d, char *buf, size_t n) {
    if (d.type == MT_CPU)
        snprintf(buf, n, "cpu");
    else
        snprintf(buf, n, "cuda:%d", d.index);
    return buf;
}

int mt_device_eq(mt_device a, mt_device b) { return a.type == b.type && a.index == b.index; }

static mt_storage *storage_new(size_t nbytes, mt_device dev) {
    mt_storage *s = calloc(1, sizeof *s);
    MT_CHECK(s);
    const mt_backend *b = mt_backend_require(dev, offsetof(mt_backend, alloc), "alloc");
    s->data = nbytes ? b->alloc(nbytes) : NULL;
    s->nbytes = nbytes;
    s->refcount = 1;
    s->device = dev;
    return s;
}

static void storage_release(mt_storage *s) {
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        if (!s->external && s->data) {
            if (s->free_fn)
                s->free_fn(s->data, s->nbytes);
            else
                mt_backend_get(s->device.type)->free(s->data, s->nbytes);
        }
        free(s);
    }
}

static void set_contiguous_strides(mt_tensor *t) {
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->strides[i] = st;
        st *= t->shape[i];
    }
}

static mt_tensor *tensor_header(mt_dtype dt, int ndim, const int64_t *shape) {
    MT_CHECK_MSG(ndim >= 0 && ndim <= MT_MAX_DIMS, "tensor with %d dims (max %d)", ndim, MT_MAX_DIMS);
    mt_tensor *t = calloc(1, sizeof *t);
    MT_CHECK(t);
    t->refcount = 1;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        MT_CHECK_MSG(shape[i] >= 0, "negative size %lld in dim %d", (long long)shape[i], i);
        t->shape[i] = shape[i];
    }
    set_contiguous_strides(t);
    return t;
}

mt_tensor *mt_tensor_new(mt_dtype dt, int ndim, const int64_t *shape, mt_device dev) {
    mt_tensor *t = tensor_header(dt, ndim, shape);
    t->storage = storage_new((size_t)mt_tensor_numel(t) * mt_dtype_size(dt), dev);
    return t;
}

mt_tensor *mt_tensor_new_pinned(mt_dtype dt, int ndim, const int64_t *shape, mt_device for_dev) {
    const mt_backend *b = mt_backend_get(for_dev.type);
    if (!b || !b->host_alloc_pinned || !b->host_free_pinned) return mt_tensor_new(dt, ndim, shape, MT_DEVICE_CPU);
    mt_tensor *t = tensor_header(dt, ndim, shape);
    mt_storage *s = calloc(1, sizeof *s);
    MT_CHECK(s);
    s->nbytes = (size_t)mt_tensor_numel(t) * mt_dtype_size(dt);
    s->data = s->nbytes ? b->host_alloc_pinned(s->nbytes) : NULL;
    s->refcount = 1;
    s->device = MT_DEVICE_CPU;
    s->free_fn = b->host_free_pinned;
    t->storage = s;
    return t;
}

mt_tensor *mt_tensor_new_like(const mt_tensor *t) {
    return mt_tensor_new(t->dtype, t->ndim, t->shape, t->storage->device);
}

mt_tensor *mt_tensor_full(mt_dtype dt, int ndim, const int64_t *shape, double value, mt_device dev) {
    mt_tensor *t = mt_tensor_new(dt, ndim, shape, dev);
    mt_tensor_fill_(t, value);
    return t;
}

mt_tensor *mt_tensor_zeros(mt_dtype dt, int ndim, const int64_t *shape, mt_device dev) {
    return mt_tensor_full(dt, ndim, shape, 0.0, dev);
}

mt_tensor *mt_tensor_zeros_like(const mt_tensor *t) {
    return mt_tensor_zeros(t->dtype, t->ndim, t->shape, t->storage->device);
}

mt_tensor *mt_tensor_from_data(mt_dtype dt, int ndim, const int64_t *shape, const void *data) {
    mt_tensor *t = mt_tensor_new(dt, ndim, shape, MT_DEVICE_CPU);
    if (t->storage->nbytes) memcpy(t->storage->data, data, t->storage->nbytes);
    return t;
}

mt_tensor *mt_tensor_wrap(mt_dtype dt, int ndim, const int64_t *shape, void *data) {
    mt_tensor *t = tensor_header(dt, ndim, shape);
    mt_storage *s = calloc(1, sizeof *s);
    MT_CHECK(s);
    s->data = data;
    s->nbytes = (size_t)mt_tensor_numel(t) * mt_dtype_size(dt);
    s->refcount = 1;
    s->device = MT_DEVICE_CPU;
    s->external = 1;
    t->storage = s;
    return t;
}

mt_tensor *mt_scalar(float v) {
    mt_tensor *t = mt_tensor_new(MT_F32, 0, NULL, MT_DEVICE_CPU);
    *(float *)t->storage->data = v;
    return t;
}

mt_tensor *mt_tensor_retain(mt_tensor *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void mt_tensor_release(mt_tensor *t) {
    if (!t) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (mt_tensor_autograd_release_hook) mt_tensor_autograd_release_hook(t);
    storage_release(t->storage);
    free(t);
}

int64_t mt_tensor_numel(const mt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t mt_tensor_nbytes(const mt_tensor *t) {
    return (size_t)mt_tensor_numel(t) * mt_dtype_size(t->dtype);
}

int mt_tensor_is_contiguous(const mt_tensor *t) {
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != st) return 0;
        st *= t->shape[i];
    }
    return 1;
}

int mt_tensor_same_shape(const mt_tensor *a, const mt_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

mt_device mt_tensor_device(const mt_tensor *t) { return t->storage->device; }

void *mt_tensor_data(const mt_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)mt_dtype_size(t->dtype);
}

const char *mt_tensor_shape_str(const mt_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

int mt_tensor_dim(const mt_tensor *t, int d) {
    int nd = t->ndim;
    if (d < 0) d += nd;
    MT_CHECK_MSG(d >= 0 && d < (nd ? nd : 1), "dim %d out of range for %d-d tensor", d, nd);
    return d;
}

/* ---------------------------------------------------------------- views */

static mt_tensor *alias(const mt_tensor *t) {
    mt_tensor *v = calloc(1, sizeof *v);
    MT_CHECK(v);
    v->refcount = 1;
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    memcpy(v->strides, t->strides, sizeof v->strides);
    v->offset = t->offset;
    v->storage = t->storage;
    __atomic_add_fetch(&t->storage->refcount, 1, __ATOMIC_RELAXED);
    return v;
}

mt_tensor *mt_tensor_detach(const mt_tensor *t) { return alias(t); }

static int infer_shape(const mt_tensor *t, int ndim, const int64_t *shape, int64_t *out) {
    int64_t n = mt_tensor_numel(t), known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            MT_CHECK_MSG(infer < 0, "reshape: more than one -1");
            infer = i;
        } else {
            known *= shape[i];
        }
        out[i] = shape[i];
    }
    if (infer >= 0) {
        MT_CHECK_MSG(known > 0 && n % known == 0, "reshape: cannot infer size");
        out[infer] = n / known;
        known *= out[infer];
    }
    return known == n;
}

mt_tensor *mt_tensor_view(const mt_tensor *t, int ndim, const int64_t *shape) {
    int64_t ns[MT_MAX_DIMS];
    char b1[128];
    MT_CHECK_MSG(ndim <= MT_MAX_DIMS, "view: too many dims");
    MT_CHECK_MSG(infer_shape(t, ndim, shape, ns), "view: shape does not match %lld elements of %s",
                 (long long)mt_tensor_numel(t), mt_tensor_shape_str(t, b1, sizeof b1));
    /* Stride computation as in PyTorch's computeStride: group old dims into
     * contiguous chunks and split each chunk over the new dims. */
    int64_t nst[MT_MAX_DIMS];
    if (mt_tensor_numel(t) == 0 || t->ndim == 0) {
        int64_t st = 1;
        for (int i = ndim - 1; i >= 0; i--) {
            nst[i] = st;
            st *= ns[i];
        }
    } else {
        int view_d = ndim - 1;
        int64_t chunk_base_stride = t->strides[t->ndim - 1];
        int64_t tensor_numel = 1, view_numel = 1;
        for (int td = t->ndim - 1; td >= 0; td--) {
            tensor_numel *= t->shape[td];
            if (td == 0 || (t->shape[td - 1] != 1 &&
                            t->strides[td - 1] != tensor_numel * chunk_base_stride)) {
                while (view_d >= 0 && (view_numel < tensor_numel || ns[view_d] == 1)) {
                    nst[view_d] = view_numel * chunk_base_stride;
                    view_numel *= ns[view_d];
                    view_d--;
                }
                if (view_numel != tensor_numel) return NULL;
                if (td > 0) {
                    chunk_base_stride = t->strides[td - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if (view_d != -1) return NULL;
    }
    mt_tensor *v = alias(t);
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = ns[i];
        v->strides[i] = nst[i];
    }
    return v;
}

mt_tensor *mt_tensor_reshape(const mt_tensor *t, int ndim, const int64_t *shape) {
    mt_tensor *v = mt_tensor_view(t, ndim, shape);
    if (v) return v;
    mt_tensor *c = mt_tensor_clone(t);
    v = mt_tensor_view(c, ndim, shape);
    mt_tensor_release(c);
    return v;
}

mt_tensor *mt_tensor_permute(const mt_tensor *t, const int *perm) {
    int seen[MT_MAX_DIMS] = {0};
    mt_tensor *v = alias(t);
    for (int i = 0; i < t->ndim; i++) {
        int p = perm[i];
        MT_CHECK_MSG(p >= 0 && p < t->ndim && !seen[p], "permute: invalid permutation");
        seen[p] = 1;
        v->shape[i] = t->shape[p];
        v->strides[i] = t->strides[p];
    }
    return v;
}

mt_tensor *mt_tensor_transpose(const mt_tensor *t, int d0, int d1) {
    int perm[MT_MAX_DIMS];
    d0 = mt_tensor_dim(t, d0);
    d1 = mt_tensor_dim(t, d1);
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return mt_tensor_permute(t, perm);
}

mt_tensor *mt_tensor_slice(const mt_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
    dim = mt_tensor_dim(t, dim);
    int64_t n = t->shape[dim];
    if (start < 0) start += n;
    if (end < 0) end += n;
    if (end > n) end = n;
    MT_CHECK_MSG(step >= 1 && start >= 0 && start <= end,
                 "slice: bad range [%lld, %lld) step %lld for size %lld", (long long)start,
                 (long long)end, (long long)step, (long long)n);
    mt_tensor *v = alias(t);
    v->offset += start * t->strides[dim];
    v->shape[dim] = (end - start + step - 1) / step;
    v->strides[dim] = t->strides[dim] * step;
    return v;
}

mt_tensor *mt_tensor_expand(const mt_tensor *t, int ndim, const int64_t *shape) {
    char b1[128];
    MT_CHECK_MSG(ndim >= t->ndim && ndim <= MT_MAX_DIMS, "expand: cannot expand %s to %d dims",
                 mt_tensor_shape_str(t, b1, sizeof b1), ndim);
    mt_tensor *v = alias(t);
    v->ndim = ndim;
    int lead = ndim - t->ndim;
    for (int i = ndim - 1; i >= 0; i--) {
        int j = i - lead;
        int64_t sz = j >= 0 ? t->shape[j] : 1, st = j >= 0 ? t->strides[j] : 0;
        int64_t target = shape[i] == -1 ? sz : shape[i];
        if (sz == target) {
            v->shape[i] = sz;
            v->strides[i] = st;
        } else {
            MT_CHECK_MSG(sz == 1, "expand: size %lld in dim %d cannot become %lld", (long long)sz, i,
                         (long long)target);
            v->shape[i] = target;
            v->strides[i] = 0;
        }
    }
    return v;
}

mt_tensor *mt_tensor_unsqueeze(const mt_tensor *t, int dim) {
    if (dim < 0) dim += t->ndim + 1;
    MT_CHECK_MSG(dim >= 0 && dim <= t->ndim && t->ndim < MT_MAX_DIMS, "unsqueeze: bad dim");
    mt_tensor *v = alias(t);
    v->ndim = t->ndim + 1;
    for (int i = t->ndim; i > dim; i--) {
        v->shape[i] = t->shape[i - 1];
        v->strides[i] = t->strides[i - 1];
    }
    v->shape[dim] = 1;
    v->strides[dim] = dim < t->ndim ? t->shape[dim] * t->strides[dim] : 1;
    return v;
}

mt_tensor *mt_tensor_squeeze(const mt_tensor *t, int dim) {
    dim = mt_tensor_dim(t, dim);
    MT_CHECK_MSG(t->shape[dim] == 1, "squeeze: dim %d has size %lld", dim, (long long)t->shape[dim]);
    mt_tensor *v = alias(t);
    v->ndim = t->ndim - 1;
    for (int i = dim; i < v->ndim; i++) {
        v->shape[i] = t->shape[i + 1];
        v->strides[i] = t->strides[i + 1];
    }
    return v;
}

mt_tensor *mt_tensor_contiguous(const mt_tensor *t) {
    if (mt_tensor_is_contiguous(t)) return mt_tensor_retain((mt_tensor *)t);
    return mt_tensor_clone(t);
}

/* ---------------------------------------------------------- data movement */

void mt_tensor_copy_(mt_tensor *dst, const mt_tensor *src) {
    char b1[128], b2[128];
    MT_CHECK_MSG(mt_tensor_same_shape(dst, src), "copy: shape %s vs %s",
                 mt_tensor_shape_str(dst, b1, sizeof b1), mt_tensor_shape_str(src, b2, sizeof b2));
    mt_device dd = dst->storage->device, sd = src->storage->device;
    if (mt_device_eq(dd, sd)) {
        mt_kernel(dd, copy)(dst, src);
        return;
    }
    /* Cross-device: stage through contiguous buffers of the destination dtype
     * (none on the destination side when dst is contiguous). */
    mt_tensor *s = mt_tensor_to_dtype(src, dst->dtype);
    mt_tensor *sc = mt_tensor_contiguous(s);
    mt_tensor_release(s);
    if (mt_tensor_is_contiguous(dst)) {
        /* page-locked source of the destination's backend: asynchronous */
        const mt_backend *db = mt_backend_get(dd.type);
        if (dd.type != MT_CPU && sc->storage->free_fn && db->memcpy_pinned_to_device &&
            sc->storage->free_fn == db->host_free_pinned) {
            db->memcpy_pinned_to_device(mt_tensor_data(dst), mt_tensor_data(sc), mt_tensor_nbytes(sc));
            mt_tensor_release(sc);
            return;
        }
        if (dd.type == MT_CPU)
            mt_kernel(sd, memcpy_host)(mt_tensor_data(dst), mt_tensor_data(sc), mt_tensor_nbytes(sc), 1);
        else
            mt_kernel(dd, memcpy_host)(mt_tensor_data(dst), mt_tensor_data(sc), mt_tensor_nbytes(sc), 0);
        mt_tensor_release(sc);
        return;
    }
    mt_tensor *tmp = mt_tensor_new(dst->dtype, dst->ndim, dst->shape, dd);
    if (dd.type == MT_CPU)
        mt_kernel(sd, memcpy_host)(mt_tensor_data(tmp), mt_tensor_data(sc), mt_tensor_nbytes(sc), 1);
    else
        mt_kernel(dd, memcpy_host)(mt_tensor_data(tmp), mt_tensor_data(sc), mt_tensor_nbytes(sc), 0);
    mt_kernel(dd, copy)(dst, tmp);
    mt_tensor_release(tmp);
    mt_tensor_release(sc);
}

void mt_tensor_fill_(mt_tensor *t, double value) {
    if (mt_tensor_numel(t) == 0) return;
    mt_kernel(t->storage->device, fill)(t, value);
}

mt_tensor *mt_tensor_clone(const mt_tensor *t) {
    mt_tensor *c = mt_tensor_new(t->dtype, t->ndim, t->shape, t->storage->device);
    if (mt_tensor_numel(t)) mt_kernel(t->storage->device, copy)(c, t);
    return c;
}

mt_tensor *mt_tensor_to_dtype(const mt_tensor *t, mt_dtype dt) {
    if (t->dtype == dt) return mt_tensor_retain((mt_tensor *)t);
    mt_tensor *c = mt_tensor_new(dt, t->ndim, t->shape, t->storage->device);
    if (mt_tensor_numel(t)) mt_kernel(t->storage->device, copy)(c, t);
    return c;
}

mt_tensor *mt_tensor_to_device(const mt_tensor *t, mt_device dev) {
    if (mt_device_eq(t->storage->device, dev)) return mt_tensor_retain((mt_tensor *)t);
    mt_tensor *c = mt_tensor_new(t->dtype, t->ndim, t->shape, dev);
    mt_tensor_copy_(c, t);
    return c;
}

static int64_t flat_to_offset(const mt_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t idx = i % t->shape[d];
        i /= t->shape[d];
        off += idx * t->strides[d];
    }
    return off;
}

static double load_elem(const mt_tensor *t, int64_t off) {
    const char *base = (const char *)t->storage->data;
    switch (t->dtype) {
    case MT_F32: return ((const float *)base)[off];
    case MT_BF16: return mt_bf16_to_f32(((const mt_bf16 *)base)[off]);
    case MT_I32: return ((const int32_t *)base)[off];
    case MT_U8: return ((const uint8_t *)base)[off];
    default: MT_CHECK(0);
    }
    return 0;
}

static void store_elem(mt_tensor *t, int64_t off, double v) {
    char *base = (char *)t->storage->data;
    switch (t->dtype) {
    case MT_F32: ((float *)base)[off] = (float)v; break;
    case MT_BF16: ((mt_bf16 *)base)[off] = mt_f32_to_bf16((float)v); break;
    case MT_I32: ((int32_t *)base)[off] = (int32_t)v; break;
    case MT_U8: ((uint8_t *)base)[off] = (uint8_t)v; break;
    default: MT_CHECK(0);
    }
}

static void require_cpu(const mt_tensor *t, const char *what) {
    MT_CHECK_MSG(t->storage->device.type == MT_CPU, "%s: tensor is not on the CPU", what);
}

double mt_tensor_get_flat(const mt_tensor *t, int64_t i) {
    require_cpu(t, "mt_tensor_get_flat");
    return load_elem(t, flat_to_offset(t, i));
}

void mt_tensor_set_flat(mt_tensor *t, int64_t i, double v) {
    require_cpu(t, "mt_tensor_set_flat");
    store_elem(t, flat_to_offset(t, i), v);
}

double mt_tensor_get(const mt_tensor *t, const int64_t *idx) {
    require_cpu(t, "mt_tensor_get");
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += idx[d] * t->strides[d];
    return load_elem(t, off);
}

double mt_tensor_item(const mt_tensor *t) {
    MT_CHECK_MSG(mt_tensor_numel(t) == 1, "item: tensor has %lld elements",
                 (long long)mt_tensor_numel(t));
    if (t->storage->device.type != MT_CPU) {
        mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
        double v = load_elem(h, h->offset);
        mt_tensor_release(h);
        return v;
    }
    return load_elem(t, t->offset);
}

void mt_tensor_to_f64_array(const mt_tensor *t, double *out) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    int64_t n = mt_tensor_numel(h);
    for (int64_t i = 0; i < n; i++) out[i] = load_elem(h, flat_to_offset(h, i));
    mt_tensor_release(h);
}

void mt_tensor_to_f32_array(const mt_tensor *t, float *out) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    if (h->dtype == MT_F32 && mt_tensor_is_contiguous(h)) {
        memcpy(out, mt_tensor_data(h), mt_tensor_nbytes(h));
    } else {
        int64_t n = mt_tensor_numel(h);
        for (int64_t i = 0; i < n; i++) out[i] = (float)load_elem(h, flat_to_offset(h, i));
    }
    mt_tensor_release(h);
}

mt_status mt_broadcast_shape(int *ndim, int64_t *shape, const mt_tensor *a, const mt_tensor *b) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char b1[128], b2[128];
            return mt_error_set(MT_ERR_INVALID, "shapes %s and %s do not broadcast",
                                mt_tensor_shape_str(a, b1, sizeof b1),
                                mt_tensor_shape_str(b, b2, sizeof b2));
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return MT_OK;
}
