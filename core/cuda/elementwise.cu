/* CUDA elementwise kernels: fill, copy/cast, binary with broadcasting, unary
 * and their backward, one-hot, channel argmax. Contracts: core/backend.h;
 * semantics mirror core/cpu/elementwise.c (same formulas, same comparisons,
 * the same cast rules incl. the u8 clamp).
 *
 * Launch shapes: 256-thread blocks, grid-stride loops (mt_cuda_blocks).
 *  - Contiguous operands take a flat path with 16-byte vector loads/stores
 *    (4 f32 or 8 bf16 per access) when every pointer is 16-byte aligned.
 *  - Strided operands (views, broadcast stride 0) first have their dims
 *    collapsed jointly (size-1 dims dropped, adjacent dims merged where every
 *    operand's strides allow), then each thread decomposes its logical index
 *    with 32-bit arithmetic when the element count allows.
 *  - one_hot / argmax_channel: one thread per (n, spatial) position looping
 *    over the channels (coalesced across positions).
 * Activation kernels are templates over the storage type (f32 or bf16 bits);
 * arithmetic is in float and bf16 results are rounded once, when stored. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"
#include "core/kernel_plan.h"

#define EW_THREADS 256

/* ------------------------------------------------------------ helpers */

template <typename T, int V>
struct alignas(sizeof(T) * V) ew_pack {
    T v[V];
};

static inline int ew_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Joint geometry of up to three tensors of one logical shape. */
struct ew_geom {
    int nd;
    int64_t shape[MT_MAX_DIMS];
    int64_t st[3][MT_MAX_DIMS];
};

/* shape: the common logical shape (ndim dims); ts[k]: the operands. */
static ew_geom ew_collapse(int ndim, const int64_t *shape, int nt, const mt_tensor *const *ts) {
    ew_geom g;
    memset(&g, 0, sizeof g);
    for (int d = 0; d < ndim; d++) {
        int64_t s = shape[d];
        if (s == 1) continue;
        int merge = g.nd > 0;
        for (int k = 0; k < nt && merge; k++)
            if (g.st[k][g.nd - 1] != s * ts[k]->strides[d]) merge = 0;
        if (merge) {
            g.shape[g.nd - 1] *= s;
            for (int k = 0; k < nt; k++) g.st[k][g.nd - 1] = ts[k]->strides[d];
        } else {
            g.shape[g.nd] = s;
            for (int k = 0; k < nt; k++) g.st[k][g.nd] = ts[k]->strides[d];
            g.nd++;
        }
    }
    if (g.nd == 0) { /* a single element */
        g.nd = 1;
        g.shape[0] = 1;
    }
    return g;
}

/* Element offsets of logical index i in the first NT operands. The dim loop
 * is unrolled with static indices so the geometry stays in the parameter
 * bank (no local-memory copy). */
template <typename I, int NT>
__device__ __forceinline__ void ew_offsets(const ew_geom &g, I i, int64_t (&off)[NT]) {
#pragma unroll
    for (int k = 0; k < NT; k++) off[k] = 0;
#pragma unroll
    for (int d = MT_MAX_DIMS - 1; d >= 1; d--) {
        if (d < g.nd) {
            I s = (I)g.shape[d];
            I q = i / s;
            I r = i - q * s;
#pragma unroll
            for (int k = 0; k < NT; k++) off[k] += (int64_t)r * g.st[k][d];
            i = q;
        }
    }
#pragma unroll
    for (int k = 0; k < NT; k++) off[k] += (int64_t)i * g.st[k][0];
}

static inline int ew_fits32(int64_t n) { return n <= (int64_t)INT32_MAX; }

static void check_same_shape(const char *op, const mt_tensor *a, const mt_tensor *b) {
    char b1[128], b2[128];
    MT_CHECK_MSG(mt_tensor_same_shape(a, b), "%s (cuda): shapes %s and %s differ", op,
                 mt_tensor_shape_str(a, b1, sizeof b1), mt_tensor_shape_str(b, b2, sizeof b2));
}

static void check_on_cuda(const char *op, const mt_tensor *t) {
    MT_CHECK_MSG(t->storage->device.type == MT_CUDA, "%s (cuda): a tensor is not on the GPU", op);
}

/* Raw loads keeping integers integral; stores with the CPU's cast rules
 * (core/cpu/elementwise.c copy_row: integer targets truncate, u8 clamps to
 * [0, 255] first; bf16 rounds to nearest even). */
__device__ __forceinline__ float ew_raw(const float *p) { return *p; }
__device__ __forceinline__ float ew_raw(const mt_bf16_bits *p) { return mt_ld(p); }
__device__ __forceinline__ int32_t ew_raw(const int32_t *p) { return *p; }
__device__ __forceinline__ uint8_t ew_raw(const uint8_t *p) { return *p; }

__device__ __forceinline__ void ew_put(float *p, float v) { *p = v; }
__device__ __forceinline__ void ew_put(float *p, int32_t v) { *p = (float)v; }
__device__ __forceinline__ void ew_put(float *p, uint8_t v) { *p = (float)v; }
__device__ __forceinline__ void ew_put(mt_bf16_bits *p, float v) { *p = mt_f32_to_bf16_dev(v); }
__device__ __forceinline__ void ew_put(mt_bf16_bits *p, int32_t v) {
    *p = mt_f32_to_bf16_dev((float)v);
}
__device__ __forceinline__ void ew_put(mt_bf16_bits *p, uint8_t v) {
    *p = mt_f32_to_bf16_dev((float)v);
}
__device__ __forceinline__ void ew_put(int32_t *p, float v) { *p = (int32_t)v; }
__device__ __forceinline__ void ew_put(int32_t *p, int32_t v) { *p = v; }
__device__ __forceinline__ void ew_put(int32_t *p, uint8_t v) { *p = (int32_t)v; }
__device__ __forceinline__ void ew_put(uint8_t *p, float v) {
    float c = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    *p = (uint8_t)c;
}
__device__ __forceinline__ void ew_put(uint8_t *p, int32_t v) {
    *p = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}
__device__ __forceinline__ void ew_put(uint8_t *p, uint8_t v) { *p = v; }

/* Calls BODY with TYPE = the storage type of dtype dt (all four dtypes). */
#define EW_DISPATCH_ANY(op, dt, TYPE, ...)                                                  \
    do {                                                                                    \
        switch (dt) {                                                                       \
        case MT_F32: {                                                                      \
            typedef float TYPE;                                                             \
            __VA_ARGS__;                                                                    \
        } break;                                                                            \
        case MT_BF16: {                                                                     \
            typedef mt_bf16_bits TYPE;                                                      \
            __VA_ARGS__;                                                                    \
        } break;                                                                            \
        case MT_I32: {                                                                      \
            typedef int32_t TYPE;                                                           \
            __VA_ARGS__;                                                                    \
        } break;                                                                            \
        case MT_U8: {                                                                       \
            typedef uint8_t TYPE;                                                           \
            __VA_ARGS__;                                                                    \
        } break;                                                                            \
        default:                                                                            \
            mt_fatal(__FILE__, __LINE__, "kernel '%s' on cuda does not support dtype %s", \
                     (op), mt_dtype_name(dt));                                              \
        }                                                                                   \
    } while (0)

/* f32 or bf16 with a named type (MT_CUDA_DISPATCH_FLOAT fixes the name T). */
#define EW_DISPATCH_FLOAT(op, dt, TYPE, ...)                                                \
    do {                                                                                    \
        if ((dt) == MT_F32) {                                                               \
            typedef float TYPE;                                                             \
            __VA_ARGS__;                                                                    \
        } else if ((dt) == MT_BF16) {                                                       \
            typedef mt_bf16_bits TYPE;                                                      \
            __VA_ARGS__;                                                                    \
        } else {                                                                            \
            mt_fatal(__FILE__, __LINE__, "kernel '%s' on cuda does not support dtype %s", \
                     (op), mt_dtype_name(dt));                                              \
        }                                                                                   \
    } while (0)

/* ------------------------------------------------------------ fill */

template <typename T>
__global__ void fill_contig_k(T *o, T v, int64_t n) {
    MT_GRID_STRIDE(i, n) o[i] = v;
}

template <typename T, typename I>
__global__ void fill_strided_k(T *o, T v, ew_geom g, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        int64_t off[1];
        ew_offsets<I, 1>(g, i, off);
        o[off[0]] = v;
    }
}

template <typename T>
static void fill_launch(mt_tensor *out, T v, int64_t n) {
    cudaStream_t s = mt_cuda_stream();
    T *p = mt_ptr<T>(out);
    if (mt_tensor_is_contiguous(out)) {
        fill_contig_k<T><<<mt_cuda_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(p, v, n);
        MT_CUDA_LAUNCH_CHECK("fill");
        return;
    }
    const mt_tensor *ts[1] = {out};
    ew_geom g = ew_collapse(out->ndim, out->shape, 1, ts);
    if (ew_fits32(n))
        fill_strided_k<T, uint32_t><<<mt_cuda_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(
            p, v, g, (uint32_t)n);
    else
        fill_strided_k<T, int64_t><<<mt_cuda_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(p, v, g, n);
    MT_CUDA_LAUNCH_CHECK("fill (strided)");
}

extern "C" void mt_cuda_fill(mt_tensor *out, double value) {
    check_on_cuda("fill", out);
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    /* Zero (not -0.0) is all-zero bits in every dtype: one memset. */
    if (value == 0.0 && !signbit(value) && mt_tensor_is_contiguous(out)) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(out), 0, (size_t)n * mt_dtype_size(out->dtype),
                                      mt_cuda_stream()));
        return;
    }
    switch (out->dtype) {
    case MT_F32: fill_launch<float>(out, (float)value, n); break;
    case MT_BF16: fill_launch<mt_bf16_bits>(out, mt_f32_to_bf16((float)value), n); break;
    case MT_I32: fill_launch<int32_t>(out, (int32_t)value, n); break;
    case MT_U8:
        if (mt_tensor_is_contiguous(out)) { /* the CPU memsets (uint8_t)value */
            MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(out), (uint8_t)value, (size_t)n,
                                          mt_cuda_stream()));
            return;
        }
        fill_launch<uint8_t>(out, (uint8_t)value, n);
        break;
    default:
        mt_fatal(__FILE__, __LINE__, "kernel 'fill' on cuda does not support dtype %s",
                 mt_dtype_name(out->dtype));
    }
}

/* ------------------------------------------------------------ copy / cast */

/* Contiguous cast, 4 elements per access when both sides are aligned to their
 * 4-element pack. */
template <typename To, typename Ti>
__global__ void cast_contig_k(To *o, const Ti *x, int64_t n, int vec) {
    int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t step = (int64_t)blockDim.x * gridDim.x;
    int64_t done = 0;
    if (vec) {
        int64_t nv = n / 4;
        const ew_pack<Ti, 4> *xv = (const ew_pack<Ti, 4> *)x;
        ew_pack<To, 4> *ov = (ew_pack<To, 4> *)o;
        for (int64_t i = start; i < nv; i += step) {
            ew_pack<Ti, 4> p = xv[i];
            ew_pack<To, 4> q;
#pragma unroll
            for (int k = 0; k < 4; k++) ew_put(&q.v[k], ew_raw(&p.v[k]));
            ov[i] = q;
        }
        done = nv * 4;
    }
    for (int64_t i = done + start; i < n; i += step) ew_put(o + i, ew_raw(x + i));
}

template <typename To, typename Ti, typename I>
__global__ void copy_strided_k(To *o, const Ti *x, ew_geom g, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        int64_t off[2];
        ew_offsets<I, 2>(g, i, off);
        ew_put(o + off[0], ew_raw(x + off[1]));
    }
}

extern "C" void mt_cuda_copy(mt_tensor *out, const mt_tensor *in) {
    check_on_cuda("copy", out);
    check_on_cuda("copy", in);
    check_same_shape("copy", out, in);
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    cudaStream_t s = mt_cuda_stream();
    int oc = mt_tensor_is_contiguous(out), ic = mt_tensor_is_contiguous(in);
    if (oc && ic && out->dtype == in->dtype) {
        if (mt_tensor_data(out) != mt_tensor_data(in))
            MT_CUDA_CHECK(cudaMemcpyAsync(mt_tensor_data(out), mt_tensor_data(in),
                                          (size_t)n * mt_dtype_size(out->dtype),
                                          cudaMemcpyDeviceToDevice, s));
        return;
    }
    EW_DISPATCH_ANY("copy", out->dtype, To, EW_DISPATCH_ANY("copy", in->dtype, Ti, {
        To *po = mt_ptr<To>(out);
        const Ti *pi = mt_ptr<Ti>(in);
        if (oc && ic) {
            int vec = ((uintptr_t)po % (4 * sizeof(To))) == 0 &&
                      ((uintptr_t)pi % (4 * sizeof(Ti))) == 0;
            int64_t work = vec ? (n + 3) / 4 : n;
            cast_contig_k<To, Ti><<<mt_cuda_blocks(work, EW_THREADS), EW_THREADS, 0, s>>>(
                po, pi, n, vec);
            MT_CUDA_LAUNCH_CHECK("copy (cast)");
        } else {
            const mt_tensor *ts[2] = {out, in};
            ew_geom g = ew_collapse(out->ndim, out->shape, 2, ts);
            if (ew_fits32(n))
                copy_strided_k<To, Ti, uint32_t>
                    <<<mt_cuda_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(po, pi, g, (uint32_t)n);
            else
                copy_strided_k<To, Ti, int64_t>
                    <<<mt_cuda_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(po, pi, g, n);
            MT_CUDA_LAUNCH_CHECK("copy (strided)");
        }
    }));
}

/* ------------------------------------------------------------ binary */


/* a, b, out contiguous, one dtype. out may alias a or b (same index). */
template <typename T, int OP>
__global__ void binary_contig_k(T *o, const T *a, const T *b, int64_t n, int vec) {
    constexpr int V = 16 / sizeof(T);
    int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t step = (int64_t)blockDim.x * gridDim.x;
    int64_t done = 0;
    if (vec) {
        int64_t nv = n / V;
        const ew_pack<T, V> *av = (const ew_pack<T, V> *)a, *bv = (const ew_pack<T, V> *)b;
        ew_pack<T, V> *ov = (ew_pack<T, V> *)o;
        for (int64_t i = start; i < nv; i += step) {
            ew_pack<T, V> pa = av[i], pb = bv[i], q;
#pragma unroll
            for (int k = 0; k < V; k++) mt_st(&q.v[k], mt_binary_apply(OP, mt_ld(&pa.v[k]), mt_ld(&pb.v[k])));
            ov[i] = q;
        }
        done = nv * V;
    }
    for (int64_t i = done + start; i < n; i += step) mt_st(o + i, mt_binary_apply(OP, mt_ld(a + i), mt_ld(b + i)));
}

/* out contiguous; a, b strided (broadcast dims stride 0); dtypes may differ. */
template <typename To, typename Ta, typename Tb, typename I>
__global__ void binary_strided_k(int op, To *o, const Ta *a, const Tb *b, ew_geom g, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        int64_t off[2];
        ew_offsets<I, 2>(g, i, off);
        mt_st(o + i, mt_binary_apply(op, mt_ld(a + off[0]), mt_ld(b + off[1])));
    }
}

template <typename T>
static void binary_contig_launch(int op, T *o, const T *a, const T *b, int64_t n) {
    constexpr int V = 16 / sizeof(T);
    int vec = ew_aligned16(o) && ew_aligned16(a) && ew_aligned16(b);
    unsigned blocks = mt_cuda_blocks(vec ? (n + V - 1) / V : n, EW_THREADS);
    cudaStream_t s = mt_cuda_stream();
    switch (op) {
#define BIN_CASE(OPV)                                                                  \
    case OPV: binary_contig_k<T, OPV><<<blocks, EW_THREADS, 0, s>>>(o, a, b, n, vec); break;
        BIN_CASE(MT_BIN_ADD)
        BIN_CASE(MT_BIN_SUB)
        BIN_CASE(MT_BIN_MUL)
        BIN_CASE(MT_BIN_DIV)
        BIN_CASE(MT_BIN_MAX)
        BIN_CASE(MT_BIN_MIN)
        BIN_CASE(MT_BIN_EQ)
        BIN_CASE(MT_BIN_GE)
#undef BIN_CASE
    default: mt_fatal(__FILE__, __LINE__, "binary (cuda): bad op %d", op);
    }
    MT_CUDA_LAUNCH_CHECK("binary");
}

extern "C" void mt_cuda_binary(mt_binary_op op, mt_tensor *out, const mt_tensor *a,
                               const mt_tensor *b) {
    MT_CHECK_MSG(op >= 0 && op < MT_NUM_BINARY_OPS, "binary (cuda): bad op %d", (int)op);
    check_on_cuda("binary", out);
    check_on_cuda("binary", a);
    check_on_cuda("binary", b);
    MT_CHECK_MSG(mt_tensor_is_contiguous(out), "binary (cuda): output must be contiguous");
    check_same_shape("binary", out, a);
    check_same_shape("binary", out, b);
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    if (a->dtype == out->dtype && b->dtype == out->dtype && mt_tensor_is_contiguous(a) &&
        mt_tensor_is_contiguous(b)) {
        EW_DISPATCH_FLOAT("binary", out->dtype, T,
                          binary_contig_launch<T>((int)op, mt_ptr<T>(out), mt_ptr<T>(a),
                                                  mt_ptr<T>(b), n));
        return;
    }
    const mt_tensor *ts[2] = {a, b};
    ew_geom g = ew_collapse(out->ndim, out->shape, 2, ts);
    cudaStream_t s = mt_cuda_stream();
    unsigned blocks = mt_cuda_blocks(n, EW_THREADS);
    EW_DISPATCH_FLOAT("binary", out->dtype, To,
        EW_DISPATCH_FLOAT("binary", a->dtype, Ta,
            EW_DISPATCH_FLOAT("binary", b->dtype, Tb, {
                if (ew_fits32(n))
                    binary_strided_k<To, Ta, Tb, uint32_t><<<blocks, EW_THREADS, 0, s>>>(
                        (int)op, mt_ptr<To>(out), mt_ptr<Ta>(a), mt_ptr<Tb>(b), g, (uint32_t)n);
                else
                    binary_strided_k<To, Ta, Tb, int64_t><<<blocks, EW_THREADS, 0, s>>>(
                        (int)op, mt_ptr<To>(out), mt_ptr<Ta>(a), mt_ptr<Tb>(b), g, n);
                MT_CUDA_LAUNCH_CHECK("binary (strided)");
            })));
}

/* ------------------------------------------------------------ unary */

/* The CPU's formulas (core/cpu/elementwise.c), with the precise CUDA math
 * functions (no fast-math intrinsics). */
__device__ __forceinline__ float gelu_d(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float softplus_d(float x) {
    return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x));
}
__device__ __forceinline__ float sigmoid_d(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

template <int OP>
__device__ __forceinline__ float un_f(float x, float a) {
    if constexpr (OP == MT_UN_NEG) return -x;
    else if constexpr (OP == MT_UN_EXP) return expf(x);
    else if constexpr (OP == MT_UN_LOG) return logf(x);
    else if constexpr (OP == MT_UN_SQRT) return sqrtf(x);
    else if constexpr (OP == MT_UN_RSQRT) return 1.0f / sqrtf(x);
    else if constexpr (OP == MT_UN_ABS) return fabsf(x);
    else if constexpr (OP == MT_UN_SQUARE) return x * x;
    else if constexpr (OP == MT_UN_RECIP) return 1.0f / x;
    else if constexpr (OP == MT_UN_RELU) return x > 0 ? x : 0.0f;
    else if constexpr (OP == MT_UN_LEAKY_RELU) return x > 0 ? x : a * x;
    else if constexpr (OP == MT_UN_GELU) return gelu_d(x);
    else if constexpr (OP == MT_UN_SIGMOID) return sigmoid_d(x);
    else if constexpr (OP == MT_UN_TANH) return tanhf(x);
    else if constexpr (OP == MT_UN_SOFTPLUS) return softplus_d(x);
    else if constexpr (OP == MT_UN_LOG_SIGMOID) return -softplus_d(-x);
    else if constexpr (OP == MT_UN_ADD_SCALAR) return x + a;
    else if constexpr (OP == MT_UN_MUL_SCALAR) return x * a;
    else if constexpr (OP == MT_UN_POW_SCALAR) return powf(x, a);
    else if constexpr (OP == MT_UN_CLAMP_MIN) return x < a ? a : x;
    else if constexpr (OP == MT_UN_CLAMP_MAX) return x > a ? a : x;
    else return 0.0f;
}

/* d f(x) / dx given x and y = f(x) (un_deriv of the CPU). */
template <int OP>
__device__ __forceinline__ float un_deriv(float x, float y, float a) {
    if constexpr (OP == MT_UN_NEG) return -1.0f;
    else if constexpr (OP == MT_UN_EXP) return y;
    else if constexpr (OP == MT_UN_LOG) return 1.0f / x;
    else if constexpr (OP == MT_UN_SQRT) return 0.5f / y;
    else if constexpr (OP == MT_UN_RSQRT) return -0.5f * y * y * y;
    else if constexpr (OP == MT_UN_ABS) return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
    else if constexpr (OP == MT_UN_SQUARE) return 2.0f * x;
    else if constexpr (OP == MT_UN_RECIP) return -y * y;
    else if constexpr (OP == MT_UN_RELU) return x > 0 ? 1.0f : 0.0f;
    else if constexpr (OP == MT_UN_LEAKY_RELU) return x > 0 ? 1.0f : a;
    else if constexpr (OP == MT_UN_GELU) {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    } else if constexpr (OP == MT_UN_SIGMOID) return y * (1.0f - y);
    else if constexpr (OP == MT_UN_TANH) return 1.0f - y * y;
    else if constexpr (OP == MT_UN_SOFTPLUS) return sigmoid_d(x);
    else if constexpr (OP == MT_UN_LOG_SIGMOID) return sigmoid_d(-x);
    else if constexpr (OP == MT_UN_ADD_SCALAR) return 1.0f;
    else if constexpr (OP == MT_UN_MUL_SCALAR) return a;
    else if constexpr (OP == MT_UN_POW_SCALAR) return a == 0.0f ? 0.0f : a * powf(x, a - 1.0f);
    else if constexpr (OP == MT_UN_CLAMP_MIN) return x >= a ? 1.0f : 0.0f;
    else if constexpr (OP == MT_UN_CLAMP_MAX) return x <= a ? 1.0f : 0.0f;
    else return 0.0f;
}

/* grad_in element as the CPU computes it: relu / leaky relu select on x (or
 * on y when x is absent), every other op multiplies by the derivative with
 * absent operands read as 0. */
template <int OP>
__device__ __forceinline__ float un_bwd(float go, float x, float y, float a, bool has_x) {
    if constexpr (OP == MT_UN_RELU) {
        float t = has_x ? x : y;
        return t > 0 ? go : 0.0f;
    } else if constexpr (OP == MT_UN_LEAKY_RELU) {
        float t = has_x ? x : y;
        return t > 0 ? go : a * go;
    } else {
        return go * un_deriv<OP>(x, y, a);
    }
}

template <typename T, int OP>
__global__ void unary_k(T *o, const T *x, int64_t n, float a, int vec) {
    constexpr int V = 16 / sizeof(T);
    int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t step = (int64_t)blockDim.x * gridDim.x;
    int64_t done = 0;
    if (vec) {
        int64_t nv = n / V;
        const ew_pack<T, V> *xv = (const ew_pack<T, V> *)x;
        ew_pack<T, V> *ov = (ew_pack<T, V> *)o;
        for (int64_t i = start; i < nv; i += step) {
            ew_pack<T, V> p = xv[i], q;
#pragma unroll
            for (int k = 0; k < V; k++) mt_st(&q.v[k], un_f<OP>(mt_ld(&p.v[k]), a));
            ov[i] = q;
        }
        done = nv * V;
    }
    for (int64_t i = done + start; i < n; i += step) mt_st(o + i, un_f<OP>(mt_ld(x + i), a));
}

template <typename T, int OP>
__global__ void unary_bwd_k(T *gi, const T *go, const T *x, const T *y, int64_t n, float a,
                            int vec) {
    constexpr int V = 16 / sizeof(T);
    const bool hx = x != NULL, hy = y != NULL;
    int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t step = (int64_t)blockDim.x * gridDim.x;
    int64_t done = 0;
    if (vec) {
        int64_t nv = n / V;
        typedef ew_pack<T, V> P;
        for (int64_t i = start; i < nv; i += step) {
            P pg = ((const P *)go)[i], px, py, q;
            if (hx) px = ((const P *)x)[i];
            if (hy) py = ((const P *)y)[i];
#pragma unroll
            for (int k = 0; k < V; k++) {
                float xv = hx ? mt_ld(&px.v[k]) : 0.0f, yv = hy ? mt_ld(&py.v[k]) : 0.0f;
                mt_st(&q.v[k], un_bwd<OP>(mt_ld(&pg.v[k]), xv, yv, a, hx));
            }
            ((P *)gi)[i] = q;
        }
        done = nv * V;
    }
    for (int64_t i = done + start; i < n; i += step) {
        float xv = hx ? mt_ld(x + i) : 0.0f, yv = hy ? mt_ld(y + i) : 0.0f;
        mt_st(gi + i, un_bwd<OP>(mt_ld(go + i), xv, yv, a, hx));
    }
}

#define UN_FOR_EACH(X)                                                                   \
    X(MT_UN_NEG) X(MT_UN_EXP) X(MT_UN_LOG) X(MT_UN_SQRT) X(MT_UN_RSQRT) X(MT_UN_ABS)     \
    X(MT_UN_SQUARE) X(MT_UN_RECIP) X(MT_UN_RELU) X(MT_UN_LEAKY_RELU) X(MT_UN_GELU)       \
    X(MT_UN_SIGMOID) X(MT_UN_TANH) X(MT_UN_SOFTPLUS) X(MT_UN_LOG_SIGMOID)                 \
    X(MT_UN_ADD_SCALAR) X(MT_UN_MUL_SCALAR) X(MT_UN_POW_SCALAR) X(MT_UN_CLAMP_MIN)         \
    X(MT_UN_CLAMP_MAX)

template <typename T>
static void unary_launch(int op, T *o, const T *x, int64_t n, float a) {
    constexpr int V = 16 / sizeof(T);
    int vec = ew_aligned16(o) && ew_aligned16(x);
    unsigned blocks = mt_cuda_blocks(vec ? (n + V - 1) / V : n, EW_THREADS);
    cudaStream_t s = mt_cuda_stream();
    switch (op) {
#define UN_CASE(OPV) \
    case OPV: unary_k<T, OPV><<<blocks, EW_THREADS, 0, s>>>(o, x, n, a, vec); break;
        UN_FOR_EACH(UN_CASE)
#undef UN_CASE
    default: mt_fatal(__FILE__, __LINE__, "unary (cuda): bad op %d", op);
    }
    MT_CUDA_LAUNCH_CHECK("unary");
}

template <typename T>
static void unary_bwd_launch(int op, T *gi, const T *go, const T *x, const T *y, int64_t n,
                             float a) {
    constexpr int V = 16 / sizeof(T);
    int vec = ew_aligned16(gi) && ew_aligned16(go) && (!x || ew_aligned16(x)) &&
              (!y || ew_aligned16(y));
    unsigned blocks = mt_cuda_blocks(vec ? (n + V - 1) / V : n, EW_THREADS);
    cudaStream_t s = mt_cuda_stream();
    switch (op) {
#define UN_CASE(OPV)                                                                        \
    case OPV: unary_bwd_k<T, OPV><<<blocks, EW_THREADS, 0, s>>>(gi, go, x, y, n, a, vec); break;
        UN_FOR_EACH(UN_CASE)
#undef UN_CASE
    default: mt_fatal(__FILE__, __LINE__, "unary_backward (cuda): bad op %d", op);
    }
    MT_CUDA_LAUNCH_CHECK("unary_backward");
}

extern "C" void mt_cuda_unary(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) {
    MT_CHECK_MSG(op >= 0 && op < MT_NUM_UNARY_OPS, "unary (cuda): bad op %d", (int)op);
    check_on_cuda("unary", out);
    check_on_cuda("unary", in);
    MT_CHECK_MSG(out->dtype == in->dtype, "unary (cuda): output %s and input %s differ in dtype",
                 mt_dtype_name(out->dtype), mt_dtype_name(in->dtype));
    MT_CHECK_MSG(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in),
                 "unary (cuda): tensors must be contiguous");
    MT_CHECK_MSG(mt_tensor_numel(out) == mt_tensor_numel(in),
                 "unary (cuda): output and input differ in size");
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    EW_DISPATCH_FLOAT("unary", out->dtype, T,
                      unary_launch<T>((int)op, mt_ptr<T>(out), mt_ptr<T>(in), n, alpha));
}

/* Which of (x, y) the derivative of op reads (relu / leaky relu: either). */
static int un_needs_x(mt_unary_op op) {
    switch (op) {
    case MT_UN_LOG: case MT_UN_ABS: case MT_UN_SQUARE: case MT_UN_GELU: case MT_UN_SOFTPLUS:
    case MT_UN_LOG_SIGMOID: case MT_UN_POW_SCALAR: case MT_UN_CLAMP_MIN: case MT_UN_CLAMP_MAX:
        return 1;
    default: return 0;
    }
}
static int un_needs_y(mt_unary_op op) {
    switch (op) {
    case MT_UN_EXP: case MT_UN_SQRT: case MT_UN_RSQRT: case MT_UN_RECIP: case MT_UN_SIGMOID:
    case MT_UN_TANH:
        return 1;
    default: return 0;
    }
}

extern "C" void mt_cuda_unary_backward(mt_unary_op op, mt_tensor *grad_in,
                                       const mt_tensor *grad_out, const mt_tensor *in,
                                       const mt_tensor *out, float alpha) {
    MT_CHECK_MSG(op >= 0 && op < MT_NUM_UNARY_OPS, "unary_backward (cuda): bad op %d", (int)op);
    check_on_cuda("unary_backward", grad_in);
    check_on_cuda("unary_backward", grad_out);
    int64_t n = mt_tensor_numel(grad_in);
    const mt_tensor *ops[3] = {grad_out, in, out};
    for (int k = 0; k < 3; k++) {
        const mt_tensor *t = ops[k];
        if (!t) continue;
        check_on_cuda("unary_backward", t);
        MT_CHECK_MSG(t->dtype == grad_in->dtype,
                     "unary_backward (cuda): dtype %s differs from grad_in's %s",
                     mt_dtype_name(t->dtype), mt_dtype_name(grad_in->dtype));
        MT_CHECK_MSG(mt_tensor_is_contiguous(t) && mt_tensor_numel(t) == n,
                     "unary_backward (cuda): operands must be contiguous with %lld elements",
                     (long long)n);
    }
    MT_CHECK_MSG(mt_tensor_is_contiguous(grad_in), "unary_backward (cuda): grad_in not contiguous");
    MT_CHECK_MSG(!un_needs_x(op) || in, "unary_backward (cuda): op %d needs the input", (int)op);
    MT_CHECK_MSG(!un_needs_y(op) || out, "unary_backward (cuda): op %d needs the output", (int)op);
    if (op == MT_UN_RELU || op == MT_UN_LEAKY_RELU)
        MT_CHECK_MSG(in || out, "unary_backward (cuda): relu needs the input or the output");
    if (op == MT_UN_LEAKY_RELU && !in) MT_CHECK(alpha > 0); /* y has x's sign only then */
    if (n == 0) return;
    EW_DISPATCH_FLOAT("unary_backward", grad_in->dtype, T,
                      unary_bwd_launch<T>((int)op, mt_ptr<T>(grad_in), mt_ptr<T>(grad_out),
                                          in ? mt_ptr<T>(in) : (const T *)NULL,
                                          out ? mt_ptr<T>(out) : (const T *)NULL, n, alpha));
}

/* ------------------------------------------------------------ one-hot, argmax */

__device__ __forceinline__ int64_t label_value(const uint8_t *p) { return *p; }
__device__ __forceinline__ int64_t label_value(const int32_t *p) { return *p; }
__device__ __forceinline__ int64_t label_value(const float *p) { return (int64_t)*p; }
__device__ __forceinline__ int64_t label_value(const mt_bf16_bits *p) { return (int64_t)mt_ld(p); }

/* One thread per (n, s): writes the C values of that position. bad[0] is
 * set to 1 by the first thread that sees a label outside [0, C), which also
 * stores the value in bad[1] and C in bad[2]. */
template <typename L>
__global__ void one_hot_k(float *o, const L *lab, int64_t C, int64_t S, int64_t NS,
                          unsigned long long *bad) {
    MT_GRID_STRIDE(p, NS) {
        int64_t n = p / S, s = p - n * S;
        int64_t v = label_value(lab + p);
        if (v < 0 || v >= C) {
            if (atomicCAS(&bad[0], 0ull, 1ull) == 0ull) {
                bad[1] = (unsigned long long)v;
                bad[2] = (unsigned long long)C;
            }
        }
        float *op = o + n * C * S + s;
        for (int64_t c = 0; c < C; c++) op[c * S] = v == c ? 1.0f : 0.0f;
    }
}

static unsigned long long *label_flag(void);

extern "C" void mt_cuda_one_hot(mt_tensor *out, const mt_tensor *labels, int num_classes) {
    MT_KERNEL_DTYPE_CHECK("one_hot", out, MT_F32);
    check_on_cuda("one_hot", out);
    check_on_cuda("one_hot", labels);
    MT_CHECK_MSG(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(labels),
                 "one_hot (cuda): tensors must be contiguous");
    int64_t C = num_classes;
    char b1[128], b2[128];
    MT_CHECK_MSG(out->ndim >= 2 && out->shape[1] == C,
                 "one_hot (cuda): output %s does not have %lld classes in dim 1",
                 mt_tensor_shape_str(out, b1, sizeof b1), (long long)C);
    int64_t N = out->shape[0];
    int64_t total = mt_tensor_numel(out);
    if (total == 0) return;
    int64_t S = total / (N * C);
    MT_CHECK_MSG(mt_tensor_numel(labels) == N * S, "one_hot (cuda): labels %s do not fit output %s",
                 mt_tensor_shape_str(labels, b1, sizeof b1), mt_tensor_shape_str(out, b2, sizeof b2));
    cudaStream_t s = mt_cuda_stream();
    unsigned long long *bad = label_flag();
    unsigned blocks = mt_cuda_blocks(N * S, EW_THREADS);
    float *o = mt_ptr<float>(out);
    switch (labels->dtype) {
    case MT_U8:
        one_hot_k<uint8_t><<<blocks, EW_THREADS, 0, s>>>(o, mt_ptr<uint8_t>(labels), C, S, N * S, bad);
        break;
    case MT_I32:
        one_hot_k<int32_t><<<blocks, EW_THREADS, 0, s>>>(o, mt_ptr<int32_t>(labels), C, S, N * S, bad);
        break;
    case MT_F32:
        one_hot_k<float><<<blocks, EW_THREADS, 0, s>>>(o, mt_ptr<float>(labels), C, S, N * S, bad);
        break;
    case MT_BF16:
        one_hot_k<mt_bf16_bits>
            <<<blocks, EW_THREADS, 0, s>>>(o, mt_ptr<mt_bf16_bits>(labels), C, S, N * S, bad);
        break;
    default:
        mt_fatal(__FILE__, __LINE__, "kernel 'one_hot' on cuda does not support dtype %s",
                 mt_dtype_name(labels->dtype));
    }
    MT_CUDA_LAUNCH_CHECK("one_hot");
    /* No synchronisation here (it would stall the host once per loss): the
     * flag is read at the backend's next synchronisation point
     * (mt_cuda_check_deferred). */
}

/* The label flag of one_hot: [0] set, [1] the bad value, [2] the class count;
 * allocated and zeroed on first use, sticky until read. */
static unsigned long long *g_label_flag = NULL;

static unsigned long long *label_flag(void) {
    if (!g_label_flag) {
        g_label_flag = (unsigned long long *)mt_cuda_alloc(3 * sizeof(unsigned long long));
        MT_CUDA_CHECK(cudaMemsetAsync(g_label_flag, 0, 3 * sizeof(unsigned long long), mt_cuda_stream()));
    }
    return g_label_flag;
}

extern "C" void mt_cuda_check_deferred(void) {
    if (!g_label_flag) return;
    unsigned long long h[3];
    cudaStream_t s = mt_cuda_stream();
    MT_CUDA_CHECK(cudaMemcpyAsync(h, g_label_flag, sizeof h, cudaMemcpyDeviceToHost, s));
    MT_CUDA_CHECK(cudaStreamSynchronize(s));
    if (h[0])
        mt_fatal(__FILE__, __LINE__, "one_hot: label %lld outside [0, %lld) (found on the GPU, reported at the "
                 "next synchronisation)", (long long)h[1], (long long)h[2]);
}

/* One thread per (n, s); first maximum wins (strict >), as on the CPU. */
template <typename T>
__global__ void argmax_channel_k(int32_t *o, const T *x, int64_t C, int64_t S, int64_t NS) {
    MT_GRID_STRIDE(p, NS) {
        int64_t n = p / S, s = p - n * S;
        const T *xp = x + n * C * S + s;
        int best = 0;
        float bv = mt_ld(xp);
        for (int64_t c = 1; c < C; c++) {
            float v = mt_ld(xp + c * S);
            if (v > bv) {
                bv = v;
                best = (int)c;
            }
        }
        o[p] = best;
    }
}

extern "C" void mt_cuda_argmax_channel(mt_tensor *out, const mt_tensor *in) {
    MT_KERNEL_DTYPE_CHECK("argmax_channel", out, MT_I32);
    check_on_cuda("argmax_channel", out);
    check_on_cuda("argmax_channel", in);
    MT_CHECK_MSG(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in),
                 "argmax_channel (cuda): tensors must be contiguous");
    char b1[128], b2[128];
    MT_CHECK_MSG(in->ndim >= 2, "argmax_channel (cuda): input %s has no channel dim",
                 mt_tensor_shape_str(in, b1, sizeof b1));
    int64_t N = in->shape[0], C = in->shape[1];
    int64_t numel = mt_tensor_numel(in);
    if (numel == 0) return;
    int64_t S = numel / (N * C);
    MT_CHECK_MSG(mt_tensor_numel(out) == N * S, "argmax_channel (cuda): output %s does not fit input %s",
                 mt_tensor_shape_str(out, b1, sizeof b1), mt_tensor_shape_str(in, b2, sizeof b2));
    cudaStream_t s = mt_cuda_stream();
    EW_DISPATCH_FLOAT("argmax_channel", in->dtype, T, {
        argmax_channel_k<T><<<mt_cuda_blocks(N * S, EW_THREADS), EW_THREADS, 0, s>>>(
            mt_ptr<int32_t>(out), mt_ptr<T>(in), C, S, N * S);
        MT_CUDA_LAUNCH_CHECK("argmax_channel");
    });
}
