/* bf16 support for the CPU kernels (dtype contract at the top of
 * core/backend.h).
 *
 * bf16 values are exactly representable in f32, so a kernel on bf16
 * operands with f32 arithmetic is "upcast the bf16 inputs to f32, run the
 * f32 kernel, round each output once to bf16 (round to nearest even,
 * mt_f32_to_bf16)". Most kernels implement bf16 exactly that way through the
 * adapter below:
 *
 *   mt_cpu_bf16_ctx c = {0};
 *   mt_cpu_softmax(mt_cpu_bf16_out(&c, out, 0), mt_cpu_bf16_in(&c, in), dim, log);
 *   mt_cpu_bf16_done(&c);
 *
 * mt_cpu_bf16_in gives an f32 copy of a bf16 input (contiguous, except that
 * broadcast dims (stride 0) stay broadcast, so a broadcast operand is not
 * materialised); mt_cpu_bf16_out gives an f32 scratch tensor for a bf16
 * output (optionally holding its current values, for outputs that are also
 * read, e.g. gemm's c with beta != 0); mt_cpu_bf16_done rounds every scratch
 * output into its bf16 tensor (any strides) and releases the copies. f32
 * tensors pass through untouched, so the f32 kernels see exactly their own
 * inputs. Scratch memory comes from the caching host allocator
 * (mt_tensor_new on the CPU), so a steady-state step allocates nothing new.
 * The conversions are vectorised loops, threaded with OpenMP above PAR_MIN
 * elements.
 *
 * Elementwise kernels with trivial bodies (binary, unary, unary_backward)
 * instead convert blocks of elements to f32 on the stack with
 * mt_cpu_bf16_load / mt_cpu_bf16_store (core/cpu/elementwise.c), which is
 * the same computation without the full-size copies.
 */
#include <omp.h>
#include <string.h>

#include "core/cpu/cpu_kernels.h"

#define PAR_MIN 32768 /* below this many elements, stay on one thread */

/* The rounding rule of mt_f32_to_bf16 (core/dtype.c), inlined so that the
 * conversion loops vectorise: round to nearest even, NaN kept (quiet). */
static inline mt_bf16 round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t q = (u >> 16) | 0x40u;
    return (mt_bf16)(nan ? q : r);
}

static inline float widen_bf16(mt_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void mt_cpu_bf16_load(float *dst, const mt_bf16 *src, int64_t stride, int64_t n) {
    if (stride == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dst[i] = widen_bf16(src[i]);
    } else if (stride == 0) {
        float v = n > 0 ? widen_bf16(src[0]) : 0.0f;
        for (int64_t i = 0; i < n; i++) dst[i] = v;
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = widen_bf16(src[i * stride]);
    }
}

void mt_cpu_bf16_store(mt_bf16 *dst, int64_t stride, const float *src, int64_t n) {
    if (stride == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dst[i] = round_bf16(src[i]);
    } else {
        for (int64_t i = 0; i < n; i++) dst[i * stride] = round_bf16(src[i]);
    }
}

/* Converts a (ndim, shape) block between an f32 tensor and a bf16 tensor,
 * both given by (data, offset, strides). to_bf16: f32 -> bf16, else
 * bf16 -> f32. Rows of the last dim are the unit of work. */
static void convert(int to_bf16, int ndim, const int64_t *shape, float *f, int64_t foff,
                    const int64_t *fst, mt_bf16 *h, int64_t hoff, const int64_t *hst) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    if (numel == 0) return;
    /* both contiguous: one flat range */
    int fc = 1, hc = 1;
    int64_t st = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] != 1) {
            fc = fc && fst[d] == st;
            hc = hc && hst[d] == st;
        }
        st *= shape[d];
    }
    if (fc && hc) {
        float *fp = f + foff;
        mt_bf16 *hp = h + hoff;
        if (to_bf16) {
#pragma omp parallel for simd if (numel > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < numel; i++) hp[i] = round_bf16(fp[i]);
        } else {
#pragma omp parallel for simd if (numel > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < numel; i++) fp[i] = widen_bf16(hp[i]);
        }
        return;
    }
    int last = ndim - 1;
    int64_t len = ndim ? shape[last] : 1, rows = numel / len;
    int64_t fs = ndim ? fst[last] : 1, hs = ndim ? hst[last] : 1;
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t fo = foff, ho = hoff, q = r;
        for (int d = last - 1; d >= 0; d--) {
            int64_t i = q % shape[d];
            q /= shape[d];
            fo += i * fst[d];
            ho += i * hst[d];
        }
        if (to_bf16) {
            if (fs == 1 && hs == 1) {
#pragma omp simd
                for (int64_t k = 0; k < len; k++) h[ho + k] = round_bf16(f[fo + k]);
            } else {
                for (int64_t k = 0; k < len; k++) h[ho + k * hs] = round_bf16(f[fo + k * fs]);
            }
        } else {
            if (fs == 1 && hs == 1) {
#pragma omp simd
                for (int64_t k = 0; k < len; k++) f[fo + k] = widen_bf16(h[ho + k]);
            } else {
                for (int64_t k = 0; k < len; k++) f[fo + k * fs] = widen_bf16(h[ho + k * hs]);
            }
        }
    }
}

const mt_tensor *mt_cpu_bf16_in(mt_cpu_bf16_ctx *c, const mt_tensor *t) {
    if (!t || t->dtype != MT_BF16) return t;
    MT_CHECK_MSG(c->n < MT_CPU_BF16_MAX, "bf16 adapter: more than %d tensors", MT_CPU_BF16_MAX);
    /* broadcast dims (stride 0) are converted once and stay broadcast */
    int64_t shape[MT_MAX_DIMS] = {0};
    int bcast = 0;
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = t->strides[d] == 0 && t->shape[d] > 1 ? 1 : t->shape[d];
        bcast |= shape[d] != t->shape[d];
    }
    mt_tensor *f = mt_tensor_new(MT_F32, t->ndim, shape, MT_DEVICE_CPU);
    convert(0, t->ndim, shape, MT_F32P(f), 0, f->strides, (mt_bf16 *)t->storage->data, t->offset,
            t->strides);
    if (bcast) {
        mt_tensor *v = mt_tensor_expand(f, t->ndim, t->shape);
        mt_tensor_release(f);
        f = v;
    }
    c->orig[c->n] = NULL;
    c->f32[c->n++] = f;
    return f;
}

mt_tensor *mt_cpu_bf16_out(mt_cpu_bf16_ctx *c, mt_tensor *t, int load) {
    if (!t || t->dtype != MT_BF16) return t;
    MT_CHECK_MSG(c->n < MT_CPU_BF16_MAX, "bf16 adapter: more than %d tensors", MT_CPU_BF16_MAX);
    mt_tensor *f = mt_tensor_new(MT_F32, t->ndim, t->shape, MT_DEVICE_CPU);
    if (load)
        convert(0, t->ndim, t->shape, MT_F32P(f), 0, f->strides, (mt_bf16 *)t->storage->data,
                t->offset, t->strides);
    c->orig[c->n] = t;
    c->f32[c->n++] = f;
    return f;
}

void mt_cpu_bf16_done(mt_cpu_bf16_ctx *c) {
    for (int i = 0; i < c->n; i++) {
        mt_tensor *t = c->orig[i], *f = c->f32[i];
        if (t)
            convert(1, t->ndim, t->shape, MT_F32P(f), 0, f->strides, (mt_bf16 *)t->storage->data,
                    t->offset, t->strides);
        mt_tensor_release(f);
        c->f32[i] = NULL;
        c->orig[i] = NULL;
    }
    c->n = 0;
}

void mt_cpu_check_float_same(const char *op, int n, const mt_tensor *const *ts) {
    const mt_tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        const mt_tensor *t = ts[i];
        if (!t) continue;
        MT_CHECK_MSG(t->dtype == MT_F32 || t->dtype == MT_BF16,
                     "kernel '%s' on cpu does not support dtype %s", op, mt_dtype_name(t->dtype));
        if (!first) first = t;
        MT_CHECK_MSG(t->dtype == first->dtype,
                     "kernel '%s' on cpu does not support dtype %s together with %s (the "
                     "activation tensors of one call share one dtype)",
                     op, mt_dtype_name(t->dtype), mt_dtype_name(first->dtype));
    }
}
