/* CUDA reductions (sum, sum of squares, max, min, absmax over any set of
 * dims) and softmax / log-softmax with their backward. Contracts:
 * core/backend.h; semantics mirror core/cpu/reduce.c.
 *
 * Reductions. As on the CPU, the input's dims are merged into maximal groups
 * of adjacent kept / reduced dims (size-1 dims dropped). Every thread
 * accumulates in double (SUM / SUMSQ as the CPU; MAX / MIN / ABSMAX are
 * exact either way and propagate NaN as the CPU), partial results are
 * combined in a fixed tree order, so results are deterministic for a given
 * GPU. Three loop shapes:
 *  A-small: the innermost group is reduced and each output reduces at most
 *     SMALL_T elements: G threads (a power of two <= 32) per output, shuffle
 *     reduction inside the warp;
 *  A-large: the innermost group (a contiguous run of L elements) is reduced
 *     and outputs are long (reduce-all, per-(N, C) spatial sums, per-channel
 *     sums over N and space): each output's reduced range is cut into S
 *     chunks, one 256-thread block per (output, chunk), 16-byte vector loads
 *     along the contiguous runs, block tree reduction; with S > 1 a second
 *     kernel folds the S partials of each output (one warp per output);
 *  B: the innermost group is kept (reduce over N of (N, C), over C of
 *     (N, C, S)): blocks of bx columns x by rows, coalesced along the kept
 *     contiguous run, rows split across blocks when there are few columns,
 *     shared-memory tree over the rows, then the same second pass.
 * S is chosen from the shapes and the SM count so that about 8 blocks per SM
 * are in flight.
 *
 * Softmax along dim, input viewed as (outer, n, inner):
 *  - n <= 16 (e.g. dim 1 of (N, C, D, H, W) for a segmentation loss), or
 *    inner > 1 with many positions: one thread per (outer, inner) position
 *    looping over the n channels, coalesced across positions; with n <= 16
 *    the values stay in registers (one read, one write per element);
 *  - otherwise (the last dim, or few positions): one warp (n <= 1024) or one
 *    1024-thread block per row, the row's elements at stride inner.
 * Formulas as the CPU: max in float, exp in float, sum of the float
 * exponentials in double; softmax = e * (float)(1 / s), log-softmax =
 * x - (float)(max + log(s)); backward with the double sum of go * y (go). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"
#include "core/kernel_plan.h"

#define RED_THREADS 256
#define SMALL_T 4096            /* A-small up to this many reduced elements per output */
#define MIN_CHUNK 16384          /* A-large: reduced elements per block at least */
#define MIN_ROWS_PER_THREAD 16   /* B: rows per y-thread at least when splitting */
#define SOFTMAX_CACHE 16         /* column softmax: channels kept in registers */

/* ------------------------------------------------------------ helpers */

template <typename T, int V>
struct alignas(sizeof(T) * V) red_pack {
    T v[V];
};

static int sm_count(void) {
    static int n = 0;
    if (n == 0) {
        (void)mt_cuda_stream(); /* makes the device current */
        int dev = 0, v = 0;
        MT_CUDA_CHECK(cudaGetDevice(&dev));
        MT_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
        n = v > 0 ? v : 1;
    }
    return n;
}

static int64_t pow2ceil(int64_t v) {
    int64_t p = 1;
    while (p < v) p <<= 1;
    return p;
}
static __host__ __device__ inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static __host__ __device__ inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static __host__ __device__ inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* Groups of merged dims: flat index -> element offset. */
struct red_groups {
    int n;
    int64_t size[MT_MAX_DIMS];
    int64_t stride[MT_MAX_DIMS];
};

/* Static indices only (unrolled, guarded), so the struct stays in the
 * kernel parameter bank. */
__device__ __forceinline__ int64_t grp_offset(const red_groups &g, int64_t flat) {
    int64_t off = 0;
#pragma unroll
    for (int d = MT_MAX_DIMS - 1; d >= 1; d--) {
        if (d < g.n) {
            int64_t q = flat / g.size[d];
            off += (flat - q * g.size[d]) * g.stride[d];
            flat = q;
        }
    }
    return off + flat * g.stride[0];
}
/* The same with 32-bit index arithmetic (flat and the sizes below 2^32). */
__device__ __forceinline__ int64_t grp_offset32(const red_groups &g, uint32_t flat) {
    int64_t off = 0;
#pragma unroll
    for (int d = MT_MAX_DIMS - 1; d >= 1; d--) {
        if (d < g.n) {
            uint32_t s = (uint32_t)g.size[d];
            uint32_t q = flat / s;
            off += (int64_t)(flat - q * s) * g.stride[d];
            flat = q;
        }
    }
    return off + (int64_t)flat * g.stride[0];
}


/* Groups [first, first + n) of (size, stride). */
static red_groups make_groups(int n, const int64_t *size, const int64_t *stride) {
    red_groups g;
    memset(&g, 0, sizeof g);
    g.n = n;
    for (int k = 0; k < n; k++) {
        g.size[k] = size[k];
        g.stride[k] = stride[k];
    }
    return g;
}

static int64_t groups_numel(const red_groups &g) {
    int64_t n = 1;
    for (int k = 0; k < g.n; k++) n *= g.size[k];
    return n;
}

/* ---- the reduction operators (double accumulators) ---- */

template <int OP>
__device__ __forceinline__ double r_ident() {
    if constexpr (OP == MT_RED_MAX) return -INFINITY;
    else if constexpr (OP == MT_RED_MIN) return INFINITY;
    else return 0.0;
}
template <int OP>
__device__ __forceinline__ double r_elem(float x) {
    if constexpr (OP == MT_RED_SUMSQ) return (double)x * (double)x;
    else if constexpr (OP == MT_RED_ABSMAX) return (double)fabsf(x);
    else return (double)x;
}
/* NaN-propagating max / min (the CPU's pick_max_d / pick_min_d). */
template <int OP>
__device__ __forceinline__ double r_comb(double a, double b) {
    if constexpr (OP == MT_RED_SUM || OP == MT_RED_SUMSQ) return a + b;
    else if constexpr (OP == MT_RED_MIN) return ((b < a) | (b != b)) ? b : a;
    else return ((b > a) | (b != b)) ? b : a;
}

/* Butterfly over aligned groups of `width` lanes (a power of two <= 32);
 * every lane of the warp must call it. All lanes of a group end equal. */
template <int OP>
__device__ __forceinline__ double warp_comb(double v, int width) {
    for (int o = width >> 1; o > 0; o >>= 1) v = r_comb<OP>(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Whole block (blockDim.x a multiple of 32); the result in every thread. */
template <int OP>
__device__ __forceinline__ double block_comb(double v) {
    __shared__ double buf[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_comb<OP>(v, 32);
    __syncthreads(); /* buf may be in use by an earlier call */
    if (lane == 0) buf[w] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? buf[lane] : r_ident<OP>();
    return warp_comb<OP>(v, 32);
}

__device__ __forceinline__ void red_store(void *y, int out_bf16, int64_t o, double v) {
    float f = (float)v;
    if (out_bf16)
        mt_st((mt_bf16_bits *)y + o, f);
    else
        ((float *)y)[o] = f;
}

/* ------------------------------------------------------------ kernels */

/* Nothing reduced: out has in's layout. */
template <typename T, int OP>
__global__ void red_map_k(void *y, int out_bf16, const T *x, int64_t n) {
    MT_GRID_STRIDE(i, n) {
        float v = mt_ld(x + i);
        float r = OP == MT_RED_SUMSQ ? v * v : (OP == MT_RED_ABSMAX ? fabsf(v) : v);
        if (out_bf16)
            mt_st((mt_bf16_bits *)y + i, r);
        else
            ((float *)y)[i] = r;
    }
}

/* A-small: G threads per output; element t of output o is at
 * kept(o) + rowg(t / L) + t % L. */
template <typename T, int OP>
__global__ void red_small_k(void *y, int out_bf16, const T *x, red_groups kept, red_groups rowg,
                            uint32_t L, uint32_t Tn, int64_t O, int G) {
    int64_t gt = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t o = gt / G;
    int lane = (int)(threadIdx.x & (unsigned)(G - 1));
    double acc = r_ident<OP>();
    if (o < O) {
        const T *base = x + grp_offset(kept, o);
        for (uint32_t t = (uint32_t)lane; t < Tn; t += (uint32_t)G) {
            uint32_t r = t / L, j = t - r * L;
            acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(base + grp_offset32(rowg, r) + j)));
        }
    }
    acc = warp_comb<OP>(acc, G);
    if (o < O && lane == 0) red_store(y, out_bf16, o, acc);
}

/* n contiguous elements from p, shared by the block's threads. */
template <typename T, int OP>
__device__ __forceinline__ double seg_accum(const T *p, int64_t n, double acc) {
    constexpr int V = 16 / sizeof(T);
    typedef red_pack<T, V> P;
    int64_t mis = (int64_t)(((uintptr_t)p / sizeof(T)) % V);
    int64_t head = mis ? imin(n, V - mis) : 0;
    if ((int64_t)threadIdx.x < head) acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(p + threadIdx.x)));
    const T *q = p + head;
    int64_t m = n - head, nv = m / V;
    const P *qv = (const P *)q;
#pragma unroll 4
    for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
        P pv = qv[k];
#pragma unroll
        for (int e = 0; e < V; e++) acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(&pv.v[e])));
    }
    for (int64_t k = nv * V + threadIdx.x; k < m; k += blockDim.x)
        acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(q + k)));
    return acc;
}

/* A-large: block (o, s) reduces flat positions [s * chunk, (s + 1) * chunk)
 * of output o's T = rows * L elements. seg: walk contiguous runs (L large);
 * otherwise decompose every position. */
template <typename T, int OP>
__global__ void red_large_k(void *y, int out_bf16, double *part, const T *x, red_groups kept,
                            red_groups rowg, int64_t L, int64_t Tn, int64_t chunk, int S, int seg) {
    int64_t o = blockIdx.x / S;
    int s = (int)(blockIdx.x - o * S);
    const T *base = x + grp_offset(kept, o);
    int64_t p0 = (int64_t)s * chunk, p1 = imin(Tn, p0 + chunk);
    double acc = r_ident<OP>();
    if (seg) {
        int64_t pos = p0;
        while (pos < p1) {
            int64_t r = pos / L, j = pos - r * L;
            int64_t n = imin(L - j, p1 - pos);
            acc = seg_accum<T, OP>(base + grp_offset(rowg, r) + j, n, acc);
            pos += n;
        }
    } else {
        for (int64_t t = p0 + threadIdx.x; t < p1; t += blockDim.x) {
            int64_t r = t / L, j = t - r * L;
            acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(base + grp_offset(rowg, r) + j)));
        }
    }
    acc = block_comb<OP>(acc);
    if (threadIdx.x == 0) {
        if (S == 1)
            red_store(y, out_bf16, o, acc);
        else
            part[o * S + s] = acc;
    }
}

/* B: block = bx columns x by rows (bx * by threads, both powers of two);
 * blockIdx.x = (oo * ncb + cb) * S + s. Output o = oo * L + j. */
template <typename T, int OP>
__global__ void red_cols_k(void *y, int out_bf16, double *part, const T *x, red_groups kouter,
                           red_groups rows, int64_t L, int64_t R, int64_t rchunk, int S, int bx,
                           int by, int64_t ncb) {
    __shared__ double sm[RED_THREADS];
    int64_t bid = blockIdx.x;
    int s = (int)(bid % S);
    int64_t t = bid / S;
    int64_t cb = t % ncb, oo = t / ncb;
    int tx = threadIdx.x % bx, ty = threadIdx.x / bx;
    int64_t j = cb * bx + tx;
    int64_t r0 = (int64_t)s * rchunk, r1 = imin(R, r0 + rchunk);
    double acc = r_ident<OP>();
    if (j < L) {
        const T *base = x + grp_offset(kouter, oo) + j;
        for (int64_t r = r0 + ty; r < r1; r += by)
            acc = r_comb<OP>(acc, r_elem<OP>(mt_ld(base + grp_offset(rows, r))));
    }
    sm[threadIdx.x] = acc;
    __syncthreads();
    for (int h = by >> 1; h > 0; h >>= 1) {
        if (ty < h) sm[threadIdx.x] = r_comb<OP>(sm[threadIdx.x], sm[threadIdx.x + h * bx]);
        __syncthreads();
    }
    if (ty == 0 && j < L) {
        int64_t o = oo * L + j;
        if (S == 1)
            red_store(y, out_bf16, o, sm[tx]);
        else
            part[o * S + s] = sm[tx];
    }
}

/* Second pass: one warp per output folds its S partials. */
template <int OP>
__global__ void red_finish_k(void *y, int out_bf16, const double *part, int64_t O, int S) {
    int64_t o = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    double acc = r_ident<OP>();
    if (o < O)
        for (int s = lane; s < S; s += 32) acc = r_comb<OP>(acc, part[o * S + s]);
    acc = warp_comb<OP>(acc, 32);
    if (o < O && lane == 0) red_store(y, out_bf16, o, acc);
}

/* ------------------------------------------------------------ reduce entry */

template <typename T, int OP>
static void reduce_run(const mt_reduce_plan &p, void *y, int out_bf16, const T *x, int64_t numel,
                       int64_t n_out) {
    cudaStream_t st = mt_cuda_stream();
    if (p.nr == 0) {
        red_map_k<T, OP><<<mt_cuda_blocks(numel, RED_THREADS), RED_THREADS, 0, st>>>(y, out_bf16, x,
                                                                                    numel);
        MT_CUDA_LAUNCH_CHECK("reduce (map)");
        return;
    }
    const int64_t target = (int64_t)sm_count() * 8; /* blocks in flight */
    double *part = NULL;
    int64_t O = n_out, S = 1;
    if (p.last_reduced) {
        int64_t L = p.rs[p.nr - 1];
        red_groups kept = make_groups(p.nk, p.ks, p.kst);
        red_groups rowg = make_groups(p.nr - 1, p.rs, p.rst);
        int64_t Tn = groups_numel(rowg) * L;
        if (Tn <= SMALL_T) {
            int G = Tn <= 32 ? (int)pow2ceil(Tn) : 32;
            int64_t blocks = cdiv(O * G, RED_THREADS);
            MT_CHECK_MSG(blocks <= INT32_MAX, "reduce (cuda): %lld outputs are too many", (long long)O);
            red_small_k<T, OP><<<(unsigned)blocks, RED_THREADS, 0, st>>>(
                y, out_bf16, x, kept, rowg, (uint32_t)L, (uint32_t)Tn, O, G);
            MT_CUDA_LAUNCH_CHECK("reduce (small)");
            return;
        }
        S = imax(1, imin(cdiv(target, O), cdiv(Tn, MIN_CHUNK)));
        int64_t chunk = cdiv(cdiv(Tn, S), 8) * 8;
        S = cdiv(Tn, chunk);
        MT_CHECK_MSG(O * S <= INT32_MAX, "reduce (cuda): %lld outputs are too many", (long long)O);
        if (S > 1) part = (double *)mt_cuda_alloc(sizeof(double) * (size_t)(O * S));
        red_large_k<T, OP><<<(unsigned)(O * S), RED_THREADS, 0, st>>>(
            y, out_bf16, part, x, kept, rowg, L, Tn, chunk, (int)S, L >= 128 ? 1 : 0);
        MT_CUDA_LAUNCH_CHECK("reduce (large)");
    } else {
        int64_t L = p.ks[p.nk - 1];
        red_groups kouter = make_groups(p.nk - 1, p.ks, p.kst);
        red_groups rows = make_groups(p.nr, p.rs, p.rst);
        int64_t Oo = groups_numel(kouter), R = groups_numel(rows);
        int bx = (int)imin(pow2ceil(L), RED_THREADS);
        int by = (int)imin(RED_THREADS / bx, pow2ceil(R));
        int64_t ncb = cdiv(L, bx), CB = Oo * ncb;
        S = imax(1, imin(cdiv(target, CB), cdiv(R, (int64_t)by * MIN_ROWS_PER_THREAD)));
        int64_t rchunk = cdiv(R, S);
        S = cdiv(R, rchunk);
        MT_CHECK_MSG(CB * S <= INT32_MAX, "reduce (cuda): %lld outputs are too many", (long long)O);
        if (S > 1) part = (double *)mt_cuda_alloc(sizeof(double) * (size_t)(O * S));
        red_cols_k<T, OP><<<(unsigned)(CB * S), bx * by, 0, st>>>(
            y, out_bf16, part, x, kouter, rows, L, R, rchunk, (int)S, bx, by, ncb);
        MT_CUDA_LAUNCH_CHECK("reduce (columns)");
    }
    if (part) {
        red_finish_k<OP><<<(unsigned)cdiv(O * 32, RED_THREADS), RED_THREADS, 0, st>>>(
            y, out_bf16, part, O, (int)S);
        MT_CUDA_LAUNCH_CHECK("reduce (finish)");
        mt_cuda_free(part, sizeof(double) * (size_t)(O * S)); /* stream-ordered reuse */
    }
}

extern "C" void mt_cuda_reduce(mt_reduce_op op, mt_tensor *out, const mt_tensor *in) {
    MT_CHECK_MSG(op >= 0 && op < MT_NUM_REDUCE_OPS, "reduce: bad op %d", (int)op);
    MT_CHECK_MSG(in->dtype == MT_F32 || in->dtype == MT_BF16,
                 "kernel 'reduce' on cuda does not support dtype %s", mt_dtype_name(in->dtype));
    MT_CHECK_MSG(out->dtype == MT_F32 || out->dtype == in->dtype,
                 "kernel 'reduce' on cuda does not support output dtype %s for input %s",
                 mt_dtype_name(out->dtype), mt_dtype_name(in->dtype));
    MT_CHECK_MSG(out->storage->device.type == MT_CUDA && in->storage->device.type == MT_CUDA,
                 "reduce (cuda): a tensor is not on the GPU");
    mt_reduce_check_shapes(out, in);
    int64_t n_out = mt_tensor_numel(out), numel = mt_tensor_numel(in);
    if (n_out == 0) return;
    if (numel == 0) { /* reduction over an empty dim: the identity */
        mt_cuda_fill(out, op == MT_RED_MAX ? -INFINITY : op == MT_RED_MIN ? INFINITY : 0.0);
        return;
    }
    mt_reduce_plan p;
    mt_reduce_plan_init(&p, out, in);
    void *y = mt_tensor_data(out);
    int out_bf16 = out->dtype == MT_BF16;
    MT_CUDA_DISPATCH_FLOAT("reduce", in->dtype, {
        const T *x = mt_ptr<T>(in);
        switch (op) {
        case MT_RED_SUM: reduce_run<T, MT_RED_SUM>(p, y, out_bf16, x, numel, n_out); break;
        case MT_RED_SUMSQ: reduce_run<T, MT_RED_SUMSQ>(p, y, out_bf16, x, numel, n_out); break;
        case MT_RED_MAX: reduce_run<T, MT_RED_MAX>(p, y, out_bf16, x, numel, n_out); break;
        case MT_RED_MIN: reduce_run<T, MT_RED_MIN>(p, y, out_bf16, x, numel, n_out); break;
        default: reduce_run<T, MT_RED_ABSMAX>(p, y, out_bf16, x, numel, n_out); break;
        }
    });
}

/* ------------------------------------------------------------ softmax */

/* Group-wide (warp or block) max in float with the CPU's comparison
 * (x > m ? x : m) and sum in double. BLOCK: blockDim.x a multiple of 32. */
__device__ __forceinline__ float fmax_cpu(float m, float v) { return v > m ? v : m; }

template <bool BLOCK>
__device__ __forceinline__ float grp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax_cpu(v, __shfl_xor_sync(0xffffffffu, v, o));
    if constexpr (BLOCK) {
        __shared__ float buf[32];
        int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
        __syncthreads();
        if (lane == 0) buf[w] = v;
        __syncthreads();
        v = lane < (int)(blockDim.x >> 5) ? buf[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) v = fmax_cpu(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

template <bool BLOCK>
__device__ __forceinline__ double grp_sum(double v) {
    if constexpr (BLOCK) return block_comb<MT_RED_SUM>(v);
    else return warp_comb<MT_RED_SUM>(v, 32);
}

/* One warp (BLOCK false: 8 rows per 256-thread block) or one block per row;
 * row r = (o, j): elements base + c * inner, base = o * n * inner + j. */
template <typename T, bool BLOCK>
__global__ void __launch_bounds__(1024) softmax_row_k(T *y, const T *x, int64_t rows, int64_t n, int64_t inner, int use_log) {
    int64_t row;
    int lane, width;
    if (BLOCK) {
        row = blockIdx.x;
        lane = threadIdx.x;
        width = blockDim.x;
    } else {
        row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        lane = threadIdx.x & 31;
        width = 32;
        if (row >= rows) return; /* whole warp */
    }
    int64_t o = row / inner, j = row - o * inner;
    const T *xr = x + o * n * inner + j;
    T *yr = y + o * n * inner + j;
    float mx = -INFINITY;
    for (int64_t c = lane; c < n; c += width) mx = fmax_cpu(mx, mt_ld(xr + c * inner));
    mx = grp_max<BLOCK>(mx);
    double s = 0.0;
    for (int64_t c = lane; c < n; c += width) s += (double)expf(mt_ld(xr + c * inner) - mx);
    s = grp_sum<BLOCK>(s);
    if (use_log) {
        float ls = (float)((double)mx + log(s));
        for (int64_t c = lane; c < n; c += width) mt_st(yr + c * inner, mt_ld(xr + c * inner) - ls);
    } else {
        float inv = (float)(1.0 / s);
        for (int64_t c = lane; c < n; c += width)
            mt_st(yr + c * inner, expf(mt_ld(xr + c * inner) - mx) * inv);
    }
}

/* One thread per position (o, j), looping over the n channels at stride
 * inner. CACHE > 0: n <= CACHE and the values stay in registers. */
template <typename T, int CACHE>
__global__ void softmax_col_k(T *y, const T *x, int64_t outer, int64_t n, int64_t inner, int use_log) {
    MT_GRID_STRIDE(p, outer * inner) {
        int64_t o = p / inner, j = p - o * inner;
        const T *xp = x + o * n * inner + j;
        T *yp = y + o * n * inner + j;
        if constexpr (CACHE > 0) {
            float v[CACHE];
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < CACHE; c++)
                if (c < n) {
                    v[c] = mt_ld(xp + c * inner);
                    mx = fmax_cpu(mx, v[c]);
                }
            double s = 0.0;
#pragma unroll
            for (int c = 0; c < CACHE; c++)
                if (c < n) {
                    float e = expf(v[c] - mx);
                    s += (double)e;
                    if (!use_log) v[c] = e;
                }
            if (use_log) {
                float ls = (float)((double)mx + log(s));
#pragma unroll
                for (int c = 0; c < CACHE; c++)
                    if (c < n) mt_st(yp + c * inner, v[c] - ls);
            } else {
                float inv = (float)(1.0 / s);
#pragma unroll
                for (int c = 0; c < CACHE; c++)
                    if (c < n) mt_st(yp + c * inner, v[c] * inv);
            }
        } else {
            float mx = -INFINITY;
            for (int64_t c = 0; c < n; c++) mx = fmax_cpu(mx, mt_ld(xp + c * inner));
            double s = 0.0;
            for (int64_t c = 0; c < n; c++) s += (double)expf(mt_ld(xp + c * inner) - mx);
            if (use_log) {
                float ls = (float)((double)mx + log(s));
                for (int64_t c = 0; c < n; c++) mt_st(yp + c * inner, mt_ld(xp + c * inner) - ls);
            } else {
                float inv = (float)(1.0 / s);
                for (int64_t c = 0; c < n; c++)
                    mt_st(yp + c * inner, expf(mt_ld(xp + c * inner) - mx) * inv);
            }
        }
    }
}

/* grad_in element from grad_out g, output y and the float sum sf. */
__device__ __forceinline__ float softmax_bwd_elem(float g, float y, float sf, int use_log) {
    return use_log ? g - expf(y) * sf : y * (g - sf);
}
__device__ __forceinline__ double softmax_bwd_term(float g, float y, int use_log) {
    return use_log ? (double)g : (double)g * (double)y;
}

template <typename T, bool BLOCK>
__global__ void __launch_bounds__(1024) softmax_bwd_row_k(T *gi, const T *go, const T *y, int64_t rows, int64_t n,
                                  int64_t inner, int use_log) {
    int64_t row;
    int lane, width;
    if (BLOCK) {
        row = blockIdx.x;
        lane = threadIdx.x;
        width = blockDim.x;
    } else {
        row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        lane = threadIdx.x & 31;
        width = 32;
        if (row >= rows) return;
    }
    int64_t o = row / inner, j = row - o * inner;
    int64_t base = o * n * inner + j;
    double s = 0.0;
    for (int64_t c = lane; c < n; c += width) {
        int64_t k = base + c * inner;
        s += softmax_bwd_term(mt_ld(go + k), mt_ld(y + k), use_log);
    }
    float sf = (float)grp_sum<BLOCK>(s);
    for (int64_t c = lane; c < n; c += width) {
        int64_t k = base + c * inner;
        mt_st(gi + k, softmax_bwd_elem(mt_ld(go + k), mt_ld(y + k), sf, use_log));
    }
}

template <typename T, int CACHE>
__global__ void softmax_bwd_col_k(T *gi, const T *go, const T *y, int64_t outer, int64_t n,
                                  int64_t inner, int use_log) {
    MT_GRID_STRIDE(p, outer * inner) {
        int64_t o = p / inner, j = p - o * inner;
        int64_t base = o * n * inner + j;
        if constexpr (CACHE > 0) {
            float g[CACHE], v[CACHE];
            double s = 0.0;
#pragma unroll
            for (int c = 0; c < CACHE; c++)
                if (c < n) {
                    g[c] = mt_ld(go + base + c * inner);
                    v[c] = mt_ld(y + base + c * inner);
                    s += softmax_bwd_term(g[c], v[c], use_log);
                }
            float sf = (float)s;
#pragma unroll
            for (int c = 0; c < CACHE; c++)
                if (c < n) mt_st(gi + base + c * inner, softmax_bwd_elem(g[c], v[c], sf, use_log));
        } else {
            double s = 0.0;
            for (int64_t c = 0; c < n; c++) {
                int64_t k = base + c * inner;
                s += softmax_bwd_term(mt_ld(go + k), mt_ld(y + k), use_log);
            }
            float sf = (float)s;
            for (int64_t c = 0; c < n; c++) {
                int64_t k = base + c * inner;
                mt_st(gi + k, softmax_bwd_elem(mt_ld(go + k), mt_ld(y + k), sf, use_log));
            }
        }
    }
}

/* Kernel choice from (outer, n, inner). */
typedef enum { SM_ROW_WARP, SM_ROW_BLOCK, SM_COL_CACHED, SM_COL } softmax_shape;

static softmax_shape softmax_choose(int64_t outer, int64_t n, int64_t inner) {
    if (n <= SOFTMAX_CACHE) return SM_COL_CACHED; /* also rows: one thread per short row */
    if (inner > 1 && outer * inner >= 4096) return SM_COL;
    return n > 1024 ? SM_ROW_BLOCK : SM_ROW_WARP;
}

static void softmax_dims(const mt_tensor *t, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    *n = t->ndim ? t->shape[dim] : 1;
    for (int d = 0; d < dim; d++) *outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

static void softmax_check(const char *op, int nt, const mt_tensor *const *ts) {
    for (int k = 0; k < nt; k++) {
        MT_CHECK_MSG(ts[k]->storage->device.type == MT_CUDA, "%s (cuda): a tensor is not on the GPU", op);
        MT_CHECK_MSG(ts[k]->dtype == MT_F32 || ts[k]->dtype == MT_BF16,
                     "kernel '%s' on cuda does not support dtype %s", op, mt_dtype_name(ts[k]->dtype));
        MT_CHECK_MSG(ts[k]->dtype == ts[0]->dtype, "%s (cuda): tensors differ in dtype (%s, %s)", op,
                     mt_dtype_name(ts[0]->dtype), mt_dtype_name(ts[k]->dtype));
        MT_CHECK_MSG(mt_tensor_is_contiguous(ts[k]) && mt_tensor_same_shape(ts[k], ts[0]),
                     "%s: tensors must be contiguous and of one shape", op);
    }
}

extern "C" void mt_cuda_softmax(mt_tensor *out, const mt_tensor *in, int dim, int use_log) {
    const mt_tensor *ts[2] = {out, in};
    softmax_check("softmax", 2, ts);
    if (mt_tensor_numel(in) == 0) return;
    dim = mt_tensor_dim(in, dim);
    int64_t outer, n, inner;
    softmax_dims(in, dim, &outer, &n, &inner);
    cudaStream_t st = mt_cuda_stream();
    int64_t rows = outer * inner;
    MT_CUDA_DISPATCH_FLOAT("softmax", in->dtype, {
        T *y = mt_ptr<T>(out);
        const T *x = mt_ptr<T>(in);
        switch (softmax_choose(outer, n, inner)) {
        case SM_COL_CACHED:
            softmax_col_k<T, SOFTMAX_CACHE><<<mt_cuda_blocks(rows, RED_THREADS), RED_THREADS, 0, st>>>(
                y, x, outer, n, inner, use_log);
            break;
        case SM_COL:
            softmax_col_k<T, 0><<<mt_cuda_blocks(rows, RED_THREADS), RED_THREADS, 0, st>>>(
                y, x, outer, n, inner, use_log);
            break;
        case SM_ROW_BLOCK:
            MT_CHECK_MSG(rows <= INT32_MAX, "softmax (cuda): too many rows");
            softmax_row_k<T, true><<<(unsigned)rows, 1024, 0, st>>>(y, x, rows, n, inner, use_log);
            break;
        default:
            MT_CHECK_MSG(cdiv(rows, 8) <= INT32_MAX, "softmax (cuda): too many rows");
            softmax_row_k<T, false><<<(unsigned)cdiv(rows, 8), RED_THREADS, 0, st>>>(
                y, x, rows, n, inner, use_log);
            break;
        }
        MT_CUDA_LAUNCH_CHECK("softmax");
    });
}

extern "C" void mt_cuda_softmax_backward(mt_tensor *grad_in, const mt_tensor *grad_out,
                                         const mt_tensor *out, int dim, int use_log) {
    const mt_tensor *ts[3] = {grad_in, grad_out, out};
    softmax_check("softmax_backward", 3, ts);
    if (mt_tensor_numel(out) == 0) return;
    dim = mt_tensor_dim(out, dim);
    int64_t outer, n, inner;
    softmax_dims(out, dim, &outer, &n, &inner);
    cudaStream_t st = mt_cuda_stream();
    int64_t rows = outer * inner;
    MT_CUDA_DISPATCH_FLOAT("softmax_backward", out->dtype, {
        T *gi = mt_ptr<T>(grad_in);
        const T *go = mt_ptr<T>(grad_out), *y = mt_ptr<T>(out);
        switch (softmax_choose(outer, n, inner)) {
        case SM_COL_CACHED:
            softmax_bwd_col_k<T, SOFTMAX_CACHE>
                <<<mt_cuda_blocks(rows, RED_THREADS), RED_THREADS, 0, st>>>(gi, go, y, outer, n,
                                                                           inner, use_log);
            break;
        case SM_COL:
            softmax_bwd_col_k<T, 0><<<mt_cuda_blocks(rows, RED_THREADS), RED_THREADS, 0, st>>>(
                gi, go, y, outer, n, inner, use_log);
            break;
        case SM_ROW_BLOCK:
            MT_CHECK_MSG(rows <= INT32_MAX, "softmax_backward (cuda): too many rows");
            softmax_bwd_row_k<T, true><<<(unsigned)rows, 1024, 0, st>>>(gi, go, y, rows, n, inner,
                                                                       use_log);
            break;
        default:
            MT_CHECK_MSG(cdiv(rows, 8) <= INT32_MAX, "softmax_backward (cuda): too many rows");
            softmax_bwd_row_k<T, false><<<(unsigned)cdiv(rows, 8), RED_THREADS, 0, st>>>(
                gi, go, y, rows, n, inner, use_log);
            break;
        }
        MT_CUDA_LAUNCH_CHECK("softmax_backward");
    });
}
