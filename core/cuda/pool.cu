/* CUDA pooling and resampling kernels: max/avg pool 3D and trilinear
 * resampling, forward and backward. Contracts: core/backend.h; semantics
 * mirror core/cpu/pool.c (PyTorch's: floor mode, no dilation, padding as
 * -inf for max pool, count_include_pad for avg pool, F.interpolate's source
 * index rule for trilinear). Tensors (N, C, D, H, W) contiguous, x / y / dx /
 * dy f32 or bf16 (one dtype per call), indices i32 (flat d*H*W + h*W + w in
 * the (n, c) plane).
 *
 * Launch shapes (256 threads, grid-stride, 32-bit index arithmetic when the
 * element count allows):
 *  - max / avg pool forward: one thread per output element; the window is
 *    scanned in (d, h, w) order as on the CPU (first maximum wins ties, a NaN
 *    wins; avg: row sums along w added row by row, then one division).
 *  - avg pool backward: gather, one thread per input element over the
 *    outputs whose window covers it, in the CPU's (od, oh, ow) order; no
 *    atomics, deterministic.
 *  - max pool backward: the slot receives no window geometry, so it scatters
 *    dy through the indices with float atomicAdd into dx (f32) or into an f32
 *    scratch that is rounded to bf16 once. When every input element is the
 *    argmax of at most two outputs (any non-overlapping pooling, e.g. kernel
 *    2 stride 2) the result is deterministic (0 + a + b = 0 + b + a); with
 *    overlapping windows (stride < kernel) the order of the float additions
 *    into one element may vary between runs (differences of rounding only).
 *    An index outside the input plane traps (the CPU aborts).
 *  - trilinear: a setup kernel computes every axis' taps (i0, i1, l0, l1)
 *    with the CPU's arithmetic, and for every input index the contiguous
 *    range of outputs that read it (taps are monotone in the output index),
 *    into scratch. Forward: one thread per output, the CPU's nesting
 *    ld0 (lh0 (lw0 x + lw1 x) + lh1 (..)) + ld1 (..). Backward: gather, one
 *    thread per input element summing over its output ranges in the CPU's
 *    order (d innermost, then h, then w); no atomics, deterministic. */
#include <math.h>
#include <stdint.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"
#include "core/kernel_plan.h"

namespace {

constexpr unsigned THREADS = 256;

struct dims5 {
    int64_t n, c, d, h, w;
};

/* Pool geometry for the kernels (spatial sizes fit int: checked). */
struct PoolGeo {
    int iD, iH, iW, oD, oH, oW;
    int kD, kH, kW, sD, sH, sW, pD, pH, pW;
    int include_pad;
};

__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

/* Window of output o along one axis: in-bounds [lo, hi) and divisor factor. */
struct Win {
    int lo, hi, fac;
};
__device__ __forceinline__ Win window(int o, int in, int k, int s, int pad, int include_pad) {
    int start = o * s - pad, end = start + k;
    int end_pad = imin(end, in + pad);
    Win w;
    w.lo = imax(start, 0);
    w.hi = imin(end, in);
    w.fac = include_pad ? end_pad - start : w.hi - w.lo;
    return w;
}

/* Outputs whose window covers input i along one axis: [olo, ohi]. */
__device__ __forceinline__ void cover(int i, int out, int k, int s, int pad, int &olo, int &ohi) {
    int num = i + pad - k; /* o * s - pad + k > i  <=>  o > (i + pad - k) / s */
    olo = num < 0 ? 0 : num / s + 1;
    ohi = imin((i + pad) / s, out - 1);
}

/* ------------------------------------------------------------- max pool */

template <typename T, typename I>
__global__ void max_pool_fwd_kernel(T *__restrict__ y, int32_t *__restrict__ ind,
                                    const T *__restrict__ x, PoolGeo g, I total) {
    const int64_t isz = (int64_t)g.iD * g.iH * g.iW;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
        I t = i;
        const int ow = (int)(t % (I)g.oW);
        t /= (I)g.oW;
        const int oh = (int)(t % (I)g.oH);
        t /= (I)g.oH;
        const int od = (int)(t % (I)g.oD);
        const int64_t pl = (int64_t)(t / (I)g.oD);
        const Win wd = window(od, g.iD, g.kD, g.sD, g.pD, 1);
        const Win wh = window(oh, g.iH, g.kH, g.sH, g.pH, 1);
        const Win ww = window(ow, g.iW, g.kW, g.sW, g.pW, 1);
        const T *xp = x + pl * isz;
        float best = -INFINITY;
        int32_t bi = (wd.lo * g.iH + wh.lo) * g.iW + ww.lo;
        for (int d = wd.lo; d < wd.hi; d++)
            for (int h = wh.lo; h < wh.hi; h++) {
                const int base = (d * g.iH + h) * g.iW;
                for (int w = ww.lo; w < ww.hi; w++) {
                    const float v = mt_ld(xp + base + w);
                    if (v > best || isnan(v)) {
                        best = v;
                        bi = base + w;
                    }
                }
            }
        mt_st(y + i, best);
        ind[i] = bi;
    }
}

/* acc[pl * isz + ind[k]] += dy[k] for every output k (pl = k / osz). */
template <typename T, typename I>
__global__ void max_pool_bwd_scatter_kernel(float *__restrict__ acc, const T *__restrict__ dy,
                                            const int32_t *__restrict__ ind, I osz, I isz,
                                            I total) {
    for (I k = (I)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (I)blockDim.x * gridDim.x) {
        const int32_t ix = ind[k];
        if (ix < 0 || (I)ix >= isz) {
            printf("max_pool3d_backward: index %d outside the input plane of %lld elements\n",
                   (int)ix, (long long)isz);
            __trap();
        }
        atomicAdd(acc + (int64_t)(k / osz) * (int64_t)isz + ix, mt_ld(dy + k));
    }
}

template <typename I>
__global__ void f32_to_bf16_kernel(mt_bf16_bits *__restrict__ out, const float *__restrict__ in,
                                   I total) {
    for (I k = (I)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (I)blockDim.x * gridDim.x)
        out[k] = mt_f32_to_bf16_dev(in[k]);
}

/* ------------------------------------------------------------- avg pool */

template <typename T, typename I>
__global__ void avg_pool_fwd_kernel(T *__restrict__ y, const T *__restrict__ x, PoolGeo g,
                                    I total) {
    const int64_t isz = (int64_t)g.iD * g.iH * g.iW;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
        I t = i;
        const int ow = (int)(t % (I)g.oW);
        t /= (I)g.oW;
        const int oh = (int)(t % (I)g.oH);
        t /= (I)g.oH;
        const int od = (int)(t % (I)g.oD);
        const int64_t pl = (int64_t)(t / (I)g.oD);
        const Win wd = window(od, g.iD, g.kD, g.sD, g.pD, g.include_pad);
        const Win wh = window(oh, g.iH, g.kH, g.sH, g.pH, g.include_pad);
        const Win ww = window(ow, g.iW, g.kW, g.sW, g.pW, g.include_pad);
        const T *xp = x + pl * isz;
        float acc = 0.0f;
        for (int d = wd.lo; d < wd.hi; d++)
            for (int h = wh.lo; h < wh.hi; h++) {
                const T *r = xp + (d * g.iH + h) * g.iW;
                float s = 0.0f;
                for (int w = ww.lo; w < ww.hi; w++) s += mt_ld(r + w);
                acc += s;
            }
        const int64_t div = (int64_t)wd.fac * wh.fac * ww.fac;
        mt_st(y + i, div > 0 ? acc / (float)div : 0.0f);
    }
}

/* One thread per input element: dx = sum over covering outputs of dy / divisor. */
template <typename T, typename I>
__global__ void avg_pool_bwd_kernel(T *__restrict__ dx, const T *__restrict__ dy, PoolGeo g,
                                    I total) {
    const int64_t osz = (int64_t)g.oD * g.oH * g.oW;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
        I t = i;
        const int iw = (int)(t % (I)g.iW);
        t /= (I)g.iW;
        const int ih = (int)(t % (I)g.iH);
        t /= (I)g.iH;
        const int id = (int)(t % (I)g.iD);
        const int64_t pl = (int64_t)(t / (I)g.iD);
        int d0, d1, h0, h1, w0, w1;
        cover(id, g.oD, g.kD, g.sD, g.pD, d0, d1);
        cover(ih, g.oH, g.kH, g.sH, g.pH, h0, h1);
        cover(iw, g.oW, g.kW, g.sW, g.pW, w0, w1);
        const T *gp = dy + pl * osz;
        float acc = 0.0f;
        for (int od = d0; od <= d1; od++) {
            const int fd = window(od, g.iD, g.kD, g.sD, g.pD, g.include_pad).fac;
            for (int oh = h0; oh <= h1; oh++) {
                const int64_t f = (int64_t)fd * window(oh, g.iH, g.kH, g.sH, g.pH, g.include_pad).fac;
                const T *gr = gp + ((int64_t)od * g.oH + oh) * g.oW;
                for (int ow = w0; ow <= w1; ow++) {
                    const int fw = window(ow, g.iW, g.kW, g.sW, g.pW, g.include_pad).fac;
                    acc += mt_ld(gr + ow) / (float)(f * fw);
                }
            }
        }
        mt_st(dx + i, acc);
    }
}

/* ------------------------------------------------------------ trilinear */

struct Tap {
    int i0, i1;
    float l0, l1;
};

/* Taps of output o along an axis (the CPU's linear_taps, without FMA
 * contraction in the source index). */
__device__ __forceinline__ Tap tap_of(int o, int in, int out, float scale, int align_corners) {
    Tap t;
    if (in == out) {
        t.i0 = t.i1 = o;
        t.l0 = 1.0f;
        t.l1 = 0.0f;
        return t;
    }
    float src;
    if (align_corners) {
        src = __fmul_rn(scale, (float)o);
    } else {
        src = (float)__dadd_rn(__dmul_rn((double)scale, __dadd_rn((double)o, 0.5)), -0.5);
        if (src < 0) src = 0;
    }
    int i0 = (int)floorf(src);
    if (i0 > in - 1) i0 = in - 1;
    float l1 = src - (float)i0;
    l1 = l1 < 0 ? 0 : (l1 > 1 ? 1 : l1);
    t.i0 = i0;
    t.i1 = i0 + (i0 < in - 1 ? 1 : 0);
    t.l1 = l1;
    t.l0 = 1.0f - l1;
    return t;
}

/* Weight with which output tap t reads input k (k one of t.i0, t.i1). */
__device__ __forceinline__ float tap_weight(const Tap &t, int k) {
    if (t.i0 == t.i1) return t.l0 + t.l1;
    return t.i0 == k ? t.l0 : t.l1;
}

struct Axis {
    int in, out;
    float scale;
};

/* Setup: taps for every output of the three axes, then for every input the
 * range [first, last + 1) of outputs reading it. Layout of `taps`:
 * D outputs, H outputs, W outputs; of `covers`: D inputs, H inputs, W inputs. */
__global__ void trilinear_setup_kernel(Tap *taps, int2 *covers, Axis ad, Axis ah, Axis aw,
                                       int align_corners) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const Axis ax[3] = {ad, ah, aw};
    int rest = t;
    int tap_off = 0;
    for (int a = 0; a < 3; a++) {
        if (rest < ax[a].out) {
            taps[tap_off + rest] = tap_of(rest, ax[a].in, ax[a].out, ax[a].scale, align_corners);
            return;
        }
        rest -= ax[a].out;
        tap_off += ax[a].out;
    }
    int cov_off = 0;
    for (int a = 0; a < 3; a++) {
        if (rest < ax[a].in) {
            const int k = rest, in = ax[a].in, out = ax[a].out;
            const float sc = ax[a].scale;
            /* first o with i1(o) >= k; first o with i0(o) > k (both monotone in o) */
            int lo = 0, hi = out;
            while (lo < hi) {
                int mid = (lo + hi) >> 1;
                if (tap_of(mid, in, out, sc, align_corners).i1 >= k) hi = mid;
                else lo = mid + 1;
            }
            const int first = lo;
            hi = out;
            while (lo < hi) {
                int mid = (lo + hi) >> 1;
                if (tap_of(mid, in, out, sc, align_corners).i0 > k) hi = mid;
                else lo = mid + 1;
            }
            covers[cov_off + k] = make_int2(first, lo);
            return;
        }
        rest -= ax[a].in;
        cov_off += ax[a].in;
    }
}

struct TriGeo {
    int iD, iH, iW, oD, oH, oW;
};

template <typename T, typename I>
__global__ void trilinear_fwd_kernel(T *__restrict__ y, const T *__restrict__ x,
                                     const Tap *__restrict__ taps, TriGeo g, I total) {
    const int64_t isz = (int64_t)g.iD * g.iH * g.iW;
    const Tap *td = taps, *th = taps + g.oD, *tw = th + g.oH;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
        I t = i;
        const int ow = (int)(t % (I)g.oW);
        t /= (I)g.oW;
        const int oh = (int)(t % (I)g.oH);
        t /= (I)g.oH;
        const int od = (int)(t % (I)g.oD);
        const int64_t pl = (int64_t)(t / (I)g.oD);
        const Tap a = td[od], b = th[oh], c = tw[ow];
        const T *xp = x + pl * isz;
        auto row = [&](int d, int h) {
            const T *r = xp + ((int64_t)d * g.iH + h) * g.iW;
            return c.l0 * mt_ld(r + c.i0) + c.l1 * mt_ld(r + c.i1);
        };
        const float s0 = b.l0 * row(a.i0, b.i0) + b.l1 * row(a.i0, b.i1);
        const float s1 = b.l0 * row(a.i1, b.i0) + b.l1 * row(a.i1, b.i1);
        mt_st(y + i, a.l0 * s0 + a.l1 * s1);
    }
}

template <typename T, typename I>
__global__ void trilinear_bwd_kernel(T *__restrict__ dx, const T *__restrict__ dy,
                                     const Tap *__restrict__ taps, const int2 *__restrict__ covers,
                                     TriGeo g, I total) {
    const int64_t osz = (int64_t)g.oD * g.oH * g.oW;
    const Tap *td = taps, *th = taps + g.oD, *tw = th + g.oH;
    const int2 *cd = covers, *ch = covers + g.iD, *cw = ch + g.iH;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
        I t = i;
        const int iw = (int)(t % (I)g.iW);
        t /= (I)g.iW;
        const int ih = (int)(t % (I)g.iH);
        t /= (I)g.iH;
        const int id = (int)(t % (I)g.iD);
        const int64_t pl = (int64_t)(t / (I)g.iD);
        const int2 rd = cd[id], rh = ch[ih], rw = cw[iw];
        const T *gp = dy + pl * osz;
        float acc = 0.0f;
        for (int ow = rw.x; ow < rw.y; ow++) {
            const float ww = tap_weight(tw[ow], iw);
            float r = 0.0f;
            for (int oh = rh.x; oh < rh.y; oh++) {
                const float wh = tap_weight(th[oh], ih);
                float z = 0.0f;
                for (int od = rd.x; od < rd.y; od++)
                    z += tap_weight(td[od], id) * mt_ld(gp + ((int64_t)od * g.oH + oh) * g.oW + ow);
                r += wh * z;
            }
            acc += ww * r;
        }
        mt_st(dx + i, acc);
    }
}

/* ------------------------------------------------------------ host side */

static dims5 dims_of(const char *op, const mt_tensor *t) {
    MT_CHECK_MSG(t->ndim == 5, "%s: expected a 5-D tensor (N, C, D, H, W), got %d dims", op, t->ndim);
    MT_CHECK_MSG(mt_tensor_is_contiguous(t), "%s: expected a contiguous tensor", op);
    dims5 s = {t->shape[0], t->shape[1], t->shape[2], t->shape[3], t->shape[4]};
    return s;
}

static void check_pair(const char *op, const mt_tensor *a, const mt_tensor *b, dims5 da, dims5 db) {
    MT_CHECK_MSG(a->dtype == b->dtype, "%s: dtypes differ (%s vs %s)", op, mt_dtype_name(a->dtype),
                 mt_dtype_name(b->dtype));
    MT_CHECK_MSG(da.n == db.n && da.c == db.c,
                 "%s: batch/channel mismatch ((%lld, %lld) vs (%lld, %lld))", op, (long long)da.n,
                 (long long)da.c, (long long)db.n, (long long)db.c);
}

static void check_spatial(const char *op, dims5 s) {
    MT_CHECK_MSG(s.d * s.h * s.w <= INT32_MAX / 2 && s.d < INT32_MAX / 2 && s.h < INT32_MAX / 2 &&
                     s.w < INT32_MAX / 2,
                 "%s: spatial size %lld x %lld x %lld too large", op, (long long)s.d,
                 (long long)s.h, (long long)s.w);
}

static PoolGeo pool_geo(dims5 i, dims5 o, const mt_pool_params *p, int include_pad) {
    PoolGeo g;
    g.iD = (int)i.d;
    g.iH = (int)i.h;
    g.iW = (int)i.w;
    g.oD = (int)o.d;
    g.oH = (int)o.h;
    g.oW = (int)o.w;
    g.kD = p->kernel[0];
    g.kH = p->kernel[1];
    g.kW = p->kernel[2];
    g.sD = p->stride[0];
    g.sH = p->stride[1];
    g.sW = p->stride[2];
    g.pD = p->padding[0];
    g.pH = p->padding[1];
    g.pW = p->padding[2];
    g.include_pad = include_pad;
    return g;
}

static int64_t numel5(dims5 s) { return s.n * s.c * s.d * s.h * s.w; }

/* 32-bit flat indices when every index involved fits. */
static int small_index(int64_t a, int64_t b) { return a < INT32_MAX && b < INT32_MAX; }

} /* namespace */

/* Calls BODY with I = uint32_t if small, else int64_t. */
#define MT_POOL_INDEX(small, ...)                \
    do {                                         \
        if (small) {                             \
            typedef uint32_t I;                  \
            __VA_ARGS__;                         \
        } else {                                 \
            typedef int64_t I;                   \
            __VA_ARGS__;                         \
        }                                        \
    } while (0)

/* ------------------------------------------------------------- max pool */

extern "C" void mt_cuda_max_pool3d_forward(mt_tensor *y, mt_tensor *indices, const mt_tensor *x,
                                           const mt_pool_params *p) {
    const char *op = "max_pool3d_forward";
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    check_pair(op, y, x, o, i);
    MT_KERNEL_DTYPE_CHECK(op, indices, MT_I32);
    MT_CHECK_MSG(mt_tensor_numel(indices) == mt_tensor_numel(y) && mt_tensor_is_contiguous(indices),
                 "%s: indices shape", op);
    MT_CHECK_MSG(i.d * i.h * i.w <= INT32_MAX, "%s: spatial volume too large for i32 indices", op);
    check_spatial(op, i);
    check_spatial(op, o);
    const int64_t total = numel5(o);
    if (total == 0) return;
    const PoolGeo g = pool_geo(i, o, p, 1);
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        MT_POOL_INDEX(small_index(total, numel5(i)), {
            max_pool_fwd_kernel<T, I><<<mt_cuda_blocks(total, THREADS), THREADS, 0, mt_cuda_stream()>>>(
                mt_ptr<T>(y), (int32_t *)mt_tensor_data(indices), mt_ptr<const T>(x), g, (I)total);
            MT_CUDA_LAUNCH_CHECK("max_pool3d_forward");
        });
    });
}

extern "C" void mt_cuda_max_pool3d_backward(mt_tensor *dx, const mt_tensor *dy,
                                            const mt_tensor *indices) {
    const char *op = "max_pool3d_backward";
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    check_pair(op, dx, dy, i, o);
    MT_KERNEL_DTYPE_CHECK(op, indices, MT_I32);
    MT_CHECK_MSG(mt_tensor_numel(indices) == mt_tensor_numel(dy) && mt_tensor_is_contiguous(indices),
                 "%s: indices shape", op);
    const int64_t in_total = numel5(i), out_total = numel5(o);
    const int64_t isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    if (in_total == 0) return;
    cudaStream_t s = mt_cuda_stream();
    MT_CUDA_DISPATCH_FLOAT(op, dx->dtype, {
        const bool f32 = sizeof(T) == sizeof(float);
        const size_t acc_bytes = sizeof(float) * (size_t)in_total;
        float *acc = f32 ? (float *)mt_tensor_data(dx) : (float *)mt_cuda_alloc(acc_bytes);
        MT_CUDA_CHECK(cudaMemsetAsync(acc, 0, acc_bytes, s));
        MT_POOL_INDEX(small_index(in_total, out_total), {
            if (out_total > 0) {
                max_pool_bwd_scatter_kernel<T, I><<<mt_cuda_blocks(out_total, THREADS), THREADS, 0, s>>>(
                    acc, mt_ptr<const T>(dy), (const int32_t *)mt_tensor_data(indices), (I)osz,
                    (I)isz, (I)out_total);
                MT_CUDA_LAUNCH_CHECK("max_pool3d_backward scatter");
            }
            if (!f32) {
                f32_to_bf16_kernel<I><<<mt_cuda_blocks(in_total, THREADS), THREADS, 0, s>>>(
                    (mt_bf16_bits *)mt_tensor_data(dx), acc, (I)in_total);
                MT_CUDA_LAUNCH_CHECK("max_pool3d_backward round");
            }
        });
        if (!f32) mt_cuda_free(acc, acc_bytes);
    });
}

/* ------------------------------------------------------------- avg pool */

extern "C" void mt_cuda_avg_pool3d_forward(mt_tensor *y, const mt_tensor *x,
                                           const mt_pool_params *p) {
    const char *op = "avg_pool3d_forward";
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    check_pair(op, y, x, o, i);
    check_spatial(op, i);
    check_spatial(op, o);
    const int64_t total = numel5(o);
    if (total == 0) return;
    const PoolGeo g = pool_geo(i, o, p, p->count_include_pad);
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        MT_POOL_INDEX(small_index(total, numel5(i)), {
            avg_pool_fwd_kernel<T, I><<<mt_cuda_blocks(total, THREADS), THREADS, 0, mt_cuda_stream()>>>(
                mt_ptr<T>(y), mt_ptr<const T>(x), g, (I)total);
            MT_CUDA_LAUNCH_CHECK("avg_pool3d_forward");
        });
    });
}

extern "C" void mt_cuda_avg_pool3d_backward(mt_tensor *dx, const mt_tensor *dy,
                                            const mt_pool_params *p) {
    const char *op = "avg_pool3d_backward";
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    check_pair(op, dx, dy, i, o);
    check_spatial(op, i);
    check_spatial(op, o);
    const int64_t total = numel5(i);
    if (total == 0) return;
    if (numel5(o) == 0) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dx), 0, mt_tensor_nbytes(dx), mt_cuda_stream()));
        return;
    }
    const PoolGeo g = pool_geo(i, o, p, p->count_include_pad);
    MT_CUDA_DISPATCH_FLOAT(op, dx->dtype, {
        MT_POOL_INDEX(small_index(total, numel5(o)), {
            avg_pool_bwd_kernel<T, I><<<mt_cuda_blocks(total, THREADS), THREADS, 0, mt_cuda_stream()>>>(
                mt_ptr<T>(dx), mt_ptr<const T>(dy), g, (I)total);
            MT_CUDA_LAUNCH_CHECK("avg_pool3d_backward");
        });
    });
}

/* ------------------------------------------------------------ trilinear */

/* Axis scale as the CPU computes it (f32; an explicit output size). */
static Axis make_axis(int64_t in, int64_t out, int align_corners) {
    Axis a;
    a.in = (int)in;
    a.out = (int)out;
    a.scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f)
                            : (float)in / (float)out;
    return a;
}

/* Tap and cover tables in one scratch block; returns its size in bytes. */
static size_t trilinear_tables(dims5 i, dims5 o, int align_corners, Tap **taps, int2 **covers) {
    const int64_t ntaps = o.d + o.h + o.w, ncov = i.d + i.h + i.w;
    const size_t bytes = sizeof(Tap) * (size_t)ntaps + sizeof(int2) * (size_t)ncov;
    char *mem = (char *)mt_cuda_alloc(bytes);
    *taps = (Tap *)mem;
    *covers = (int2 *)(mem + sizeof(Tap) * (size_t)ntaps); /* Tap is 16 bytes: aligned */
    const Axis ad = make_axis(i.d, o.d, align_corners), ah = make_axis(i.h, o.h, align_corners),
               aw = make_axis(i.w, o.w, align_corners);
    const int64_t threads = ntaps + ncov;
    trilinear_setup_kernel<<<(unsigned)((threads + THREADS - 1) / THREADS), THREADS, 0,
                             mt_cuda_stream()>>>(*taps, *covers, ad, ah, aw, align_corners);
    MT_CUDA_LAUNCH_CHECK("upsample_trilinear setup");
    return bytes;
}

static TriGeo tri_geo(dims5 i, dims5 o) {
    TriGeo g = {(int)i.d, (int)i.h, (int)i.w, (int)o.d, (int)o.h, (int)o.w};
    return g;
}

extern "C" void mt_cuda_upsample_trilinear_forward(mt_tensor *y, const mt_tensor *x,
                                                   int align_corners) {
    const char *op = "upsample_trilinear_forward";
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    check_pair(op, y, x, o, i);
    check_spatial(op, i);
    check_spatial(op, o);
    const int64_t total = numel5(o);
    if (total == 0) return;
    MT_CHECK_MSG(i.d > 0 && i.h > 0 && i.w > 0, "%s: empty input with a non-empty output", op);
    Tap *taps;
    int2 *covers;
    size_t bytes = trilinear_tables(i, o, align_corners, &taps, &covers);
    const TriGeo g = tri_geo(i, o);
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        MT_POOL_INDEX(small_index(total, numel5(i)), {
            trilinear_fwd_kernel<T, I><<<mt_cuda_blocks(total, THREADS), THREADS, 0, mt_cuda_stream()>>>(
                mt_ptr<T>(y), mt_ptr<const T>(x), taps, g, (I)total);
            MT_CUDA_LAUNCH_CHECK("upsample_trilinear_forward");
        });
    });
    mt_cuda_free(taps, bytes);
}

extern "C" void mt_cuda_upsample_trilinear_backward(mt_tensor *dx, const mt_tensor *dy,
                                                    int align_corners) {
    const char *op = "upsample_trilinear_backward";
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    check_pair(op, dx, dy, i, o);
    check_spatial(op, i);
    check_spatial(op, o);
    const int64_t total = numel5(i);
    if (total == 0) return;
    if (numel5(o) == 0) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dx), 0, mt_tensor_nbytes(dx), mt_cuda_stream()));
        return;
    }
    Tap *taps;
    int2 *covers;
    size_t bytes = trilinear_tables(i, o, align_corners, &taps, &covers);
    const TriGeo g = tri_geo(i, o);
    MT_CUDA_DISPATCH_FLOAT(op, dx->dtype, {
        MT_POOL_INDEX(small_index(total, numel5(o)), {
            trilinear_bwd_kernel<T, I><<<mt_cuda_blocks(total, THREADS), THREADS, 0, mt_cuda_stream()>>>(
                mt_ptr<T>(dx), mt_ptr<const T>(dy), taps, covers, g, (I)total);
            MT_CUDA_LAUNCH_CHECK("upsample_trilinear_backward");
        });
    });
    mt_cuda_free(taps, bytes);
}
