/* CUDA normalisation kernels: batch norm, group norm (instance norm is group
 * norm with G = C), layer norm; forward and backward. Contracts:
 * core/backend.h; semantics and numerics mirror core/cpu/norm.c.
 *
 * Activations (x, y, dy, dx) are f32 or bf16 (one dtype per call), norm
 * parameters and statistics f32; arithmetic in f32 with statistics in double.
 *
 * Layout: x (N, C, S) contiguous is P = N * C planes of S elements. A group
 * (n, g) is the Cg = C / G consecutive planes n * C + g * Cg ...; a batch-norm
 * channel c is the planes n * C + c for every n; a layer-norm row is a plane
 * of D = norm_numel elements.
 *
 * Algorithm (every norm, forward and backward), in three launches:
 *  1. partial sums: every plane is split into fixed chunks of CHUNK elements
 *     and one block per (plane, chunk) reduces its chunk into a double pair:
 *     forward (sum(x - K), sum((x - K)^2)) with the shift K = the first
 *     element of the statistics set, as the CPU (no cancellation in the
 *     one-pass formula); backward (sum(dy'), sum(dy' (x - mean))) with
 *     dy' = dy (times w[j] for layer norm). Within a 16-byte vector the sums
 *     are formed in float, then added to double accumulators; the block
 *     combines its threads with a fixed shuffle tree. Chunking depends only on
 *     the shape, so results are deterministic and do not depend on the GPU.
 *     The instance norm of the UNet3D (2 x 32 planes of 128^3) gets 128 blocks
 *     per plane, 8192 in all.
 *  2. finish: one warp per statistics set (group, channel, row) adds its
 *     chunk partials in double (lane-strided, fixed shuffle tree), computes
 *     mean / rstd exactly as the CPU's finish_stats, writes the f32 outputs and
 *     per-plane coefficients (float4) for step 3.
 *  3. elementwise pass over (plane, chunk) blocks, 16-byte vectorised:
 *     y = ((x - mean_hi) - mean_lo) * a + b, or dx = dy k1 + (x - m) k2 + k3
 *     (the CPU's formulas, with the double mean carried as a float pair).
 * Planes shorter than SMALL_S use flat grid-stride kernels for step 3, and
 * layer norm with rows of at most WARP_ROW_MAX elements uses one fused warp
 * per row instead of the three steps.
 *
 * Scratch memory (partials, coefficients) comes from mt_cuda_alloc and is
 * freed right after the launches that use it (stream-ordered reuse). No host
 * synchronisation. */
#include <math.h>
#include <stdint.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"

namespace {

constexpr int64_t CHUNK = 16384;      /* elements per (plane, chunk) block */
constexpr int64_t SMALL_S = 64;       /* shorter planes: flat elementwise kernels */
constexpr int64_t WARP_ROW_MAX = 2048; /* layer norm rows up to this: one warp per row */
constexpr int FIN_THREADS = 256;      /* finish kernels: 8 warps per block */

/* ---------------------------------------------------------------- vectors */

template <typename T> struct Vec;
template <> struct Vec<float> { static constexpr int N = 4; };
template <> struct Vec<mt_bf16_bits> { static constexpr int N = 8; };

__device__ __forceinline__ void ld_vec(const float *p, float (&v)[4]) {
    float4 f = *reinterpret_cast<const float4 *>(p);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
}
__device__ __forceinline__ void ld_vec(const mt_bf16_bits *p, float (&v)[8]) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) { /* little endian: element 2k in the low half */
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}
__device__ __forceinline__ void st_vec(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st_vec(mt_bf16_bits *p, const float (&v)[8]) {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; k++)
        w[k] = (uint32_t)mt_f32_to_bf16_dev(v[2 * k]) |
               ((uint32_t)mt_f32_to_bf16_dev(v[2 * k + 1]) << 16);
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

/* Splits [a, b) into a scalar head [a, va), a vector body [va, vb) whose
 * first element is 16-byte aligned in p (a whole number of vectors) and a
 * scalar tail [vb, b). vec_ok = 0: all scalar. The other arrays indexed
 * alongside p must have the same address residue mod 16 (checked on the host). */
template <typename T>
__device__ __forceinline__ void vec_split(const T *p, int64_t a, int64_t b, int vec_ok,
                                          int64_t &va, int64_t &vb) {
    constexpr int V = Vec<T>::N;
    if (!vec_ok) {
        va = vb = b;
        return;
    }
    uintptr_t addr = reinterpret_cast<uintptr_t>(p + a);
    int64_t head = (int64_t)(((16u - (unsigned)(addr & 15u)) & 15u) / sizeof(T));
    va = a + head < b ? a + head : b;
    vb = va + ((b - va) / V) * V;
}

/* Block-wide loop over [a, b): fs(i) for scalar elements, fv(i) for the
 * vector starting at i. */
template <int V, typename FS, typename FV>
__device__ __forceinline__ void range_loop(int64_t a, int64_t b, int64_t va, int64_t vb, FS fs,
                                           FV fv) {
    const int tid = threadIdx.x, nt = blockDim.x;
    for (int64_t i = a + tid; i < va; i += nt) fs(i);
#pragma unroll 4
    for (int64_t i = va + (int64_t)tid * V; i < vb; i += (int64_t)nt * V) fv(i);
    for (int64_t i = vb + tid; i < b; i += nt) fs(i);
}

/* Block sum of two doubles (blockDim.x a multiple of 32); valid in thread 0. */
__device__ __forceinline__ void block_sum2(double &a, double &b) {
    __shared__ double sh[2][32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = mt_warp_sum_d(a);
    b = mt_warp_sum_d(b);
    if (lane == 0) {
        sh[0][w] = a;
        sh[1][w] = b;
    }
    __syncthreads();
    if (w == 0) {
        a = lane < nw ? sh[0][lane] : 0.0;
        b = lane < nw ? sh[1][lane] : 0.0;
        a = mt_warp_sum_d(a);
        b = mt_warp_sum_d(b);
    }
}

/* Mean and biased variance from shifted sums (the CPU's finish_stats). */
__device__ __forceinline__ void finish_stats(double k, double s1, double s2, double cnt,
                                             double &mean, double &var) {
    double ms = s1 / cnt;
    double v = (s2 - s1 * ms) / cnt;
    mean = k + ms;
    var = v > 0 ? v : 0;
}

/* ------------------------------------------------------ step 1: partials */

/* Plane p's chunk k (block p * nch + k): part = (sum(x - K), sum((x - K)^2)),
 * K = x[sp * S] with the shift plane sp = ((p / sdiv) * sdiv) % smod (batch
 * norm: p % C; group norm: the group's first plane; layer norm: p). */
template <typename T>
__global__ void stats_partial_kernel(double2 *part, const T *__restrict__ x, int64_t S,
                                     int64_t nch, int64_t sdiv, int64_t smod, int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t a = p * S + k * CHUNK, b = (k * CHUNK + CHUNK < S) ? a + CHUNK : p * S + S;
    const int64_t sp = ((p / sdiv) * sdiv) % smod;
    const float K = mt_ld(x + sp * S);
    double s1 = 0.0, s2 = 0.0;
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb,
        [&](int64_t i) {
            float d = mt_ld(x + i) - K;
            s1 += d;
            s2 += (double)d * d;
        },
        [&](int64_t i) {
            float v[V];
            ld_vec(x + i, v);
            float f1 = 0.0f, f2 = 0.0f;
#pragma unroll
            for (int e = 0; e < V; e++) {
                float d = v[e] - K;
                f1 += d;
                f2 = fmaf(d, d, f2);
            }
            s1 += f1;
            s2 += f2;
        });
    block_sum2(s1, s2);
    if (threadIdx.x == 0) part[blk] = make_double2(s1, s2);
}

/* Plane p's chunk k: part = (sum g, sum g (x - m)), g = dy (times wpos[j],
 * j the index within the plane, if wpos), m = mean[(p / mdiv) % mmod]. */
template <typename T>
__global__ void grad_partial_kernel(double2 *part, const T *__restrict__ dy,
                                    const T *__restrict__ x, const float *__restrict__ mean,
                                    const float *__restrict__ wpos, int64_t S, int64_t nch,
                                    int64_t mdiv, int64_t mmod, int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t base = p * S;
    const int64_t a = base + k * CHUNK, b = (k * CHUNK + CHUNK < S) ? a + CHUNK : base + S;
    const float m = mean[(p / mdiv) % mmod];
    double s1 = 0.0, s2 = 0.0;
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb,
        [&](int64_t i) {
            float g = mt_ld(dy + i);
            if (wpos) g *= wpos[i - base];
            s1 += g;
            s2 += (double)g * (double)(mt_ld(x + i) - m);
        },
        [&](int64_t i) {
            float gv[V], xv[V];
            ld_vec(dy + i, gv);
            ld_vec(x + i, xv);
            float f1 = 0.0f, f2 = 0.0f;
#pragma unroll
            for (int e = 0; e < V; e++) {
                float g = wpos ? gv[e] * wpos[i - base + e] : gv[e];
                f1 += g;
                f2 = fmaf(g, xv[e] - m, f2);
            }
            s1 += f1;
            s2 += f2;
        });
    block_sum2(s1, s2);
    if (threadIdx.x == 0) part[blk] = make_double2(s1, s2);
}

/* ------------------------------------------------- step 3: elementwise */

/* y = ((x - c.x) - c.y) * c.z + c.w with c = coef[plane]. */
template <typename T>
__global__ void affine_kernel(T *__restrict__ y, const T *__restrict__ x,
                              const float4 *__restrict__ coef, int64_t S, int64_t nch,
                              int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t a = p * S + k * CHUNK, b = (k * CHUNK + CHUNK < S) ? a + CHUNK : p * S + S;
    const float4 c = coef[p];
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb,
        [&](int64_t i) { mt_st(y + i, ((mt_ld(x + i) - c.x) - c.y) * c.z + c.w); },
        [&](int64_t i) {
            float v[V];
            ld_vec(x + i, v);
#pragma unroll
            for (int e = 0; e < V; e++) v[e] = ((v[e] - c.x) - c.y) * c.z + c.w;
            st_vec(y + i, v);
        });
}

template <typename T>
__global__ void affine_flat_kernel(T *__restrict__ y, const T *__restrict__ x,
                                   const float4 *__restrict__ coef, int64_t S, int64_t total) {
    MT_GRID_STRIDE(i, total) {
        const float4 c = coef[i / S];
        mt_st(y + i, ((mt_ld(x + i) - c.x) - c.y) * c.z + c.w);
    }
}

/* dx = dy * c.y + (x - c.x) * c.z + c.w with c = coef[plane]. */
template <typename T>
__global__ void dx_kernel(T *__restrict__ dx, const T *__restrict__ dy, const T *__restrict__ x,
                          const float4 *__restrict__ coef, int64_t S, int64_t nch, int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t a = p * S + k * CHUNK, b = (k * CHUNK + CHUNK < S) ? a + CHUNK : p * S + S;
    const float4 c = coef[p];
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb,
        [&](int64_t i) { mt_st(dx + i, mt_ld(dy + i) * c.y + (mt_ld(x + i) - c.x) * c.z + c.w); },
        [&](int64_t i) {
            float g[V], v[V];
            ld_vec(dy + i, g);
            ld_vec(x + i, v);
#pragma unroll
            for (int e = 0; e < V; e++) v[e] = g[e] * c.y + (v[e] - c.x) * c.z + c.w;
            st_vec(dx + i, v);
        });
}

template <typename T>
__global__ void dx_flat_kernel(T *__restrict__ dx, const T *__restrict__ dy,
                               const T *__restrict__ x, const float4 *__restrict__ coef,
                               int64_t S, int64_t total) {
    MT_GRID_STRIDE(i, total) {
        const float4 c = coef[i / S];
        mt_st(dx + i, mt_ld(dy + i) * c.y + (mt_ld(x + i) - c.x) * c.z + c.w);
    }
}

/* Layer norm rows (plane = row of D): y = ((x - c.x) - c.y) * c.z [* w[j]] [+ b[j]]. */
template <typename T>
__global__ void ln_affine_kernel(T *__restrict__ y, const T *__restrict__ x,
                                 const float4 *__restrict__ coef, const float *__restrict__ w,
                                 const float *__restrict__ bias, int64_t D, int64_t nch,
                                 int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t base = p * D;
    const int64_t a = base + k * CHUNK, b = (k * CHUNK + CHUNK < D) ? a + CHUNK : base + D;
    const float4 c = coef[p];
    auto f = [&](float v, int64_t j) {
        float t = ((v - c.x) - c.y) * c.z;
        if (w) t = t * w[j];
        return bias ? t + bias[j] : t + 0.0f;
    };
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb, [&](int64_t i) { mt_st(y + i, f(mt_ld(x + i), i - base)); },
        [&](int64_t i) {
            float v[V];
            ld_vec(x + i, v);
#pragma unroll
            for (int e = 0; e < V; e++) v[e] = f(v[e], i - base + e);
            st_vec(y + i, v);
        });
}

/* Layer norm rows: dx = (dy [* w[j]]) * c.y + (x - c.x) * c.z + c.w. */
template <typename T>
__global__ void ln_dx_kernel(T *__restrict__ dx, const T *__restrict__ dy, const T *__restrict__ x,
                             const float4 *__restrict__ coef, const float *__restrict__ w,
                             int64_t D, int64_t nch, int vec_ok) {
    constexpr int V = Vec<T>::N;
    const int64_t blk = blockIdx.x, p = blk / nch, k = blk % nch;
    const int64_t base = p * D;
    const int64_t a = base + k * CHUNK, b = (k * CHUNK + CHUNK < D) ? a + CHUNK : base + D;
    const float4 c = coef[p];
    int64_t va, vb;
    vec_split(x, a, b, vec_ok, va, vb);
    range_loop<V>(
        a, b, va, vb,
        [&](int64_t i) {
            float g = mt_ld(dy + i);
            if (w) g = g * w[i - base];
            mt_st(dx + i, g * c.y + (mt_ld(x + i) - c.x) * c.z + c.w);
        },
        [&](int64_t i) {
            float g[V], v[V];
            ld_vec(dy + i, g);
            ld_vec(x + i, v);
#pragma unroll
            for (int e = 0; e < V; e++) {
                float ge = w ? g[e] * w[i - base + e] : g[e];
                v[e] = ge * c.y + (v[e] - c.x) * c.z + c.w;
            }
            st_vec(dx + i, v);
        });
}

/* ------------------------------------------------------ step 2: finish */

__device__ __forceinline__ int64_t global_warp() {
    return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
}

/* Batch norm forward, one warp per channel c. Training: statistics from the
 * partials of planes (n, c), running stats updated; eval: running stats. */
template <typename T>
__global__ void bn_fwd_finish_kernel(float4 *coef, float *save_mean, float *save_invstd,
                                     const double2 *part, const T *x, const float *w,
                                     const float *b, float *rm, float *rv, int64_t N, int64_t C,
                                     int64_t S, int64_t nch, int training, float momentum,
                                     float eps) {
    const int64_t c = global_warp();
    const int lane = threadIdx.x & 31;
    if (c >= C) return;
    double mean, invstd;
    if (training) {
        double s1 = 0.0, s2 = 0.0;
        for (int64_t e = lane; e < N * nch; e += 32) {
            int64_t n = e / nch, k = e % nch;
            double2 q = part[(n * C + c) * nch + k];
            s1 += q.x;
            s2 += q.y;
        }
        s1 = mt_warp_sum_d(s1);
        s2 = mt_warp_sum_d(s2);
        double cnt = (double)N * (double)S, var;
        finish_stats((double)mt_ld(x + c * S), s1, s2, cnt, mean, var);
        invstd = 1.0 / sqrt(var + (double)eps);
        if (lane == 0) {
            /* float arithmetic as the CPU: (1 - m) * running + m * stat, no contraction */
            if (rm) rm[c] = __fadd_rn(__fmul_rn(1.0f - momentum, rm[c]), __fmul_rn(momentum, (float)mean));
            if (rv)
                rv[c] = __fadd_rn(__fmul_rn(1.0f - momentum, rv[c]),
                                  __fmul_rn(momentum, (float)(var * cnt / (cnt - 1))));
        }
    } else {
        mean = rm[c];
        invstd = 1.0 / sqrt((double)rv[c] + (double)eps);
    }
    if (lane == 0) {
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
    }
    const float mh = (float)mean, ml = (float)(mean - (double)mh);
    const float a = (float)(invstd * (double)(w ? w[c] : 1.0f)), bb = b ? b[c] : 0.0f;
    for (int64_t n = lane; n < N; n += 32) coef[n * C + c] = make_float4(mh, ml, a, bb);
}

/* Batch norm backward, one warp per channel: sums over (n, chunks) ->
 * dweight, dbias, and dx coefficients (m, k1, k2, k3) of planes (n, c). */
__global__ void bn_bwd_finish_kernel(float4 *coef, float *dweight, float *dbias,
                                     const double2 *part, const float *w, const float *sm,
                                     const float *si, int64_t N, int64_t C, int64_t S,
                                     int64_t nch, int training, int need_sums, int want_dx) {
    const int64_t c = global_warp();
    const int lane = threadIdx.x & 31;
    if (c >= C) return;
    double sdy = 0.0, sdyx = 0.0;
    if (need_sums) {
        for (int64_t e = lane; e < N * nch; e += 32) {
            int64_t n = e / nch, k = e % nch;
            double2 q = part[(n * C + c) * nch + k];
            sdy += q.x;
            sdyx += q.y;
        }
        sdy = mt_warp_sum_d(sdy);
        sdyx = mt_warp_sum_d(sdyx);
        if (lane == 0) {
            if (dweight) dweight[c] = (float)(sdyx * (double)si[c]);
            if (dbias) dbias[c] = (float)sdy;
        }
    }
    if (!want_dx) return;
    const double cnt = (double)N * (double)S, is = si[c];
    const double g = is * (double)(w ? w[c] : 1.0f);
    float k2 = 0.0f, k3 = 0.0f;
    if (training) {
        double A = sdy / cnt, B = sdyx * is / cnt;
        k2 = (float)(-g * is * B);
        k3 = (float)(-g * A);
    }
    const float4 co = make_float4(sm[c], (float)g, k2, k3);
    for (int64_t n = lane; n < N; n += 32) coef[n * C + c] = co;
}

/* Group norm forward, one warp per group ng = n * G + g. */
template <typename T>
__global__ void gn_fwd_finish_kernel(float4 *coef, float *mean_out, float *rstd_out,
                                     const double2 *part, const T *x, const float *w,
                                     const float *b, int64_t NG, int64_t G, int64_t Cg, int64_t S,
                                     int64_t nch, float eps) {
    const int64_t ng = global_warp();
    const int lane = threadIdx.x & 31;
    if (ng >= NG) return;
    const int64_t p0 = ng * Cg; /* the group's first plane */
    double s1 = 0.0, s2 = 0.0;
    for (int64_t t = p0 * nch + lane; t < (p0 + Cg) * nch; t += 32) {
        double2 q = part[t];
        s1 += q.x;
        s2 += q.y;
    }
    s1 = mt_warp_sum_d(s1);
    s2 = mt_warp_sum_d(s2);
    double m, var;
    finish_stats((double)mt_ld(x + p0 * S), s1, s2, (double)Cg * (double)S, m, var);
    const double r = 1.0 / sqrt(var + (double)eps);
    if (lane == 0) {
        mean_out[ng] = (float)m;
        rstd_out[ng] = (float)r;
    }
    const float mh = (float)m, ml = (float)(m - (double)mh);
    const int64_t c0 = (ng % G) * Cg;
    for (int64_t j = lane; j < Cg; j += 32) {
        const int64_t c = c0 + j;
        coef[p0 + j] = make_float4(mh, ml, (float)(r * (double)(w ? w[c] : 1.0f)), b ? b[c] : 0.0f);
    }
}

/* Group norm backward, one warp per group: per-plane sums sdy[p], sdyx[p]
 * (= sum dy * xhat) into plane_sums, and dx coefficients of its planes. */
__global__ void gn_bwd_group_kernel(float4 *coef, double2 *plane_sums, const double2 *part,
                                    const float *w, const float *mp, const float *rp, int64_t NG,
                                    int64_t G, int64_t C, int64_t Cg, int64_t S, int64_t nch,
                                    int want_dx) {
    const int64_t ng = global_warp();
    const int lane = threadIdx.x & 31;
    if (ng >= NG) return;
    const int64_t p0 = ng * Cg;
    const double r = rp[ng];
    double A = 0.0, B = 0.0;
    for (int64_t p = p0; p < p0 + Cg; p++) {
        double s1 = 0.0, s2 = 0.0;
        for (int64_t t = p * nch + lane; t < (p + 1) * nch; t += 32) {
            double2 q = part[t];
            s1 += q.x;
            s2 += q.y;
        }
        s1 = mt_warp_sum_d(s1);
        s2 = mt_warp_sum_d(s2) * r; /* sum dy * xhat */
        if (lane == 0) plane_sums[p] = make_double2(s1, s2);
        const double wc = w ? (double)w[p % C] : 1.0;
        A += wc * s1;
        B += wc * s2;
    }
    if (!want_dx) return;
    const double cnt = (double)Cg * (double)S;
    A /= cnt;
    B /= cnt;
    const float k2 = (float)(-r * r * B), k3 = (float)(-r * A), m = mp[ng];
    for (int64_t j = lane; j < Cg; j += 32) {
        const int64_t p = p0 + j;
        coef[p] = make_float4(m, (float)(r * (double)(w ? w[p % C] : 1.0f)), k2, k3);
    }
    (void)G;
}

/* Group norm dweight / dbias: one thread per channel, sums over n. */
__global__ void gn_bwd_param_kernel(float *dweight, float *dbias, const double2 *plane_sums,
                                    int64_t N, int64_t C) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a1 = 0.0, a2 = 0.0;
    for (int64_t n = 0; n < N; n++) {
        double2 q = plane_sums[n * C + c];
        a1 += q.x;
        a2 += q.y;
    }
    if (dweight) dweight[c] = (float)a2;
    if (dbias) dbias[c] = (float)a1;
}

/* Layer norm forward (wide rows), one warp per row: mean (f32 = its high
 * float), rstd and coefficients (mh, ml, r, 0). */
template <typename T>
__global__ void ln_fwd_finish_kernel(float4 *coef, float *mean_out, float *rstd_out,
                                     const double2 *part, const T *x, int64_t M, int64_t D,
                                     int64_t nch, float eps) {
    const int64_t m = global_warp();
    const int lane = threadIdx.x & 31;
    if (m >= M) return;
    double s1 = 0.0, s2 = 0.0;
    for (int64_t t = m * nch + lane; t < (m + 1) * nch; t += 32) {
        double2 q = part[t];
        s1 += q.x;
        s2 += q.y;
    }
    s1 = mt_warp_sum_d(s1);
    s2 = mt_warp_sum_d(s2);
    double mu, var;
    finish_stats((double)mt_ld(x + m * D), s1, s2, (double)D, mu, var);
    const float mh = (float)mu, ml = (float)(mu - (double)mh);
    const float r = (float)(1.0 / sqrt(var + (double)eps));
    if (lane == 0) {
        mean_out[m] = mh;
        rstd_out[m] = r;
        coef[m] = make_float4(mh, ml, r, 0.0f);
    }
}

/* Layer norm backward (wide rows), one warp per row: A = mean(w dy),
 * B = mean(w dy xhat) -> coefficients (mean, r, k2, k3). */
__global__ void ln_bwd_finish_kernel(float4 *coef, const double2 *part, const float *mp,
                                     const float *rp, int64_t M, int64_t D, int64_t nch) {
    const int64_t m = global_warp();
    const int lane = threadIdx.x & 31;
    if (m >= M) return;
    double A = 0.0, B = 0.0;
    for (int64_t t = m * nch + lane; t < (m + 1) * nch; t += 32) {
        double2 q = part[t];
        A += q.x;
        B += q.y;
    }
    A = mt_warp_sum_d(A);
    B = mt_warp_sum_d(B);
    const double r = rp[m];
    A /= (double)D;
    B = B * r / (double)D;
    if (lane == 0) coef[m] = make_float4(mp[m], (float)r, (float)(-r * r * B), (float)(-r * A));
}

/* ------------------------------------------------ layer norm, narrow rows */

/* One warp per row of D <= WARP_ROW_MAX: exact double shifted sums, then y. */
template <typename T>
__global__ void ln_fwd_warp_kernel(T *__restrict__ y, float *mean_out, float *rstd_out,
                                   const T *__restrict__ x, const float *__restrict__ w,
                                   const float *__restrict__ bias, int64_t M, int64_t D,
                                   float eps) {
    const int64_t m = global_warp();
    const int lane = threadIdx.x & 31;
    if (m >= M) return;
    const T *xr = x + m * D;
    T *yr = y + m * D;
    const double K = mt_ld(xr);
    double s1 = 0.0, s2 = 0.0;
    for (int64_t j = lane; j < D; j += 32) {
        double d = (double)mt_ld(xr + j) - K;
        s1 += d;
        s2 += d * d;
    }
    s1 = mt_warp_sum_d(s1);
    s2 = mt_warp_sum_d(s2);
    double mu, var;
    finish_stats(K, s1, s2, (double)D, mu, var);
    const float mh = (float)mu, ml = (float)(mu - (double)mh);
    const float r = (float)(1.0 / sqrt(var + (double)eps));
    if (lane == 0) {
        mean_out[m] = mh;
        rstd_out[m] = r;
    }
    for (int64_t j = lane; j < D; j += 32) {
        float t = ((mt_ld(xr + j) - mh) - ml) * r;
        if (w) t = t * w[j];
        mt_st(yr + j, bias ? t + bias[j] : t + 0.0f);
    }
}

/* One warp per row: dx = r (w dy - A - xhat B) as the CPU's row loop. */
template <typename T>
__global__ void ln_bwd_warp_kernel(T *__restrict__ dx, const T *__restrict__ dy,
                                   const T *__restrict__ x, const float *__restrict__ w,
                                   const float *__restrict__ mp, const float *__restrict__ rp,
                                   int64_t M, int64_t D) {
    const int64_t m = global_warp();
    const int lane = threadIdx.x & 31;
    if (m >= M) return;
    const T *g = dy + m * D, *xr = x + m * D;
    const double mu = mp[m], r = rp[m];
    double A = 0.0, B = 0.0;
    for (int64_t j = lane; j < D; j += 32) {
        double wg = (double)mt_ld(g + j) * (double)(w ? w[j] : 1.0f);
        A += wg;
        B += wg * ((double)mt_ld(xr + j) - mu);
    }
    A = mt_warp_sum_d(A) / (double)D;
    B = mt_warp_sum_d(B) * r / (double)D;
    const float mf = mp[m], rf = (float)r, k2 = (float)(-r * r * B), k3 = (float)(-r * A);
    T *o = dx + m * D;
    for (int64_t j = lane; j < D; j += 32) {
        float gj = mt_ld(g + j);
        if (w) gj = gj * w[j];
        mt_st(o + j, gj * rf + (mt_ld(xr + j) - mf) * k2 + k3);
    }
}

/* Layer norm dweight / dbias: block (32, 8) covers 32 columns of the row
 * block rb (rows [rb * rows, ...)); partials (nrb, D) of (sum dy xhat, sum dy). */
constexpr int LNP_ROWS = 8;
template <typename T>
__global__ void ln_param_partial_kernel(double2 *part, const T *__restrict__ dy,
                                        const T *__restrict__ x, const float *__restrict__ mp,
                                        const float *__restrict__ rp, int64_t M, int64_t D,
                                        int64_t rows) {
    __shared__ double sh[2][LNP_ROWS][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t j = (int64_t)blockIdx.x * 32 + tx, rb = blockIdx.y;
    const int64_t m0 = rb * rows, m1 = m0 + rows < M ? m0 + rows : M;
    double aw = 0.0, ab = 0.0;
    if (j < D) {
        for (int64_t m = m0 + ty; m < m1; m += LNP_ROWS) {
            double g = mt_ld(dy + m * D + j);
            aw += g * (((double)mt_ld(x + m * D + j) - (double)mp[m]) * (double)rp[m]);
            ab += g;
        }
    }
    sh[0][ty][tx] = aw;
    sh[1][ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && j < D) {
        for (int k = 1; k < LNP_ROWS; k++) {
            aw += sh[0][k][tx];
            ab += sh[1][k][tx];
        }
        part[rb * D + j] = make_double2(aw, ab);
    }
}

__global__ void ln_param_finish_kernel(float *dw, float *db, const double2 *part, int64_t nrb,
                                       int64_t D) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    double sw = 0.0, sb = 0.0;
    for (int64_t rb = 0; rb < nrb; rb++) {
        double2 q = part[rb * D + j];
        sw += q.x;
        sb += q.y;
    }
    if (dw) dw[j] = (float)sw;
    if (db) db[j] = (float)sb;
}

/* ------------------------------------------------------------ host side */

static int64_t n_chunks(int64_t len) { return len > 0 ? (len + CHUNK - 1) / CHUNK : 0; }

/* Threads for (plane, chunk) blocks of planes of S elements of vector width V. */
static unsigned plane_threads(int64_t S, int V) {
    int64_t per = S < CHUNK ? S : CHUNK;
    int64_t t = ((per + V - 1) / V + 31) / 32 * 32;
    if (t < 32) t = 32;
    if (t > 256) t = 256;
    return (unsigned)t;
}

static unsigned warp_blocks(int64_t nwarps) {
    return (unsigned)((nwarps * 32 + FIN_THREADS - 1) / FIN_THREADS);
}

/* Whether all non-NULL pointers share one address residue mod 16. */
static int same_align(const void *a, const void *b, const void *c = nullptr) {
    uintptr_t r = (uintptr_t)a & 15u;
    if (b && ((uintptr_t)b & 15u) != r) return 0;
    if (c && ((uintptr_t)c & 15u) != r) return 0;
    return 1;
}

static void check_act(const char *op, const mt_tensor *t, const mt_tensor *ref) {
    if (!t) return;
    MT_CHECK_MSG(t->dtype == ref->dtype, "%s: activation dtypes differ (%s vs %s)", op,
                 mt_dtype_name(t->dtype), mt_dtype_name(ref->dtype));
    MT_CHECK_MSG(mt_tensor_is_contiguous(t), "%s: expected contiguous activations", op);
    MT_CHECK_MSG(mt_tensor_numel(t) == mt_tensor_numel(ref), "%s: %lld elements vs %lld", op,
                 (long long)mt_tensor_numel(t), (long long)mt_tensor_numel(ref));
}

static void check_numel(const char *op, const char *what, const mt_tensor *t, int64_t n) {
    if (!t) return;
    MT_KERNEL_DTYPE_CHECK(op, t, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(t), "%s: %s not contiguous", op, what);
    MT_CHECK_MSG(mt_tensor_numel(t) == n, "%s: %s has %lld elements, expected %lld", op, what,
                 (long long)mt_tensor_numel(t), (long long)n);
}

static void nc_s(const char *op, const mt_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
    MT_CHECK_MSG(x->ndim >= 2, "%s: input needs at least 2 dims (N, C, ...), got %d", op, x->ndim);
    *N = x->shape[0];
    *C = x->shape[1];
    int64_t s = 1;
    for (int d = 2; d < x->ndim; d++) s *= x->shape[d];
    *S = s;
}

static const float *fptr(const mt_tensor *t) { return t ? (const float *)mt_tensor_data(t) : nullptr; }
static float *fptr_mut(mt_tensor *t) { return t ? (float *)mt_tensor_data(t) : nullptr; }

template <typename Tp>
static Tp *scratch(size_t count) {
    return (Tp *)mt_cuda_alloc(sizeof(Tp) * (count ? count : 1));
}
template <typename Tp>
static void scratch_free(Tp *p, size_t count) {
    mt_cuda_free(p, sizeof(Tp) * (count ? count : 1));
}

/* Step 1 (forward): partials of P planes of S elements. */
template <typename T>
static void launch_stats_partial(double2 *part, const T *x, int64_t P, int64_t S, int64_t sdiv,
                                 int64_t smod) {
    int64_t nch = n_chunks(S);
    if (P * nch == 0) return;
    stats_partial_kernel<T><<<(unsigned)(P * nch), plane_threads(S, Vec<T>::N), 0,
                              mt_cuda_stream()>>>(part, x, S, nch, sdiv, smod,
                                                  same_align(x, nullptr));
    MT_CUDA_LAUNCH_CHECK("norm stats_partial");
}

/* Step 1 (backward): gradient partials. */
template <typename T>
static void launch_grad_partial(double2 *part, const T *dy, const T *x, const float *mean,
                                const float *wpos, int64_t P, int64_t S, int64_t mdiv,
                                int64_t mmod) {
    int64_t nch = n_chunks(S);
    if (P * nch == 0) return;
    grad_partial_kernel<T><<<(unsigned)(P * nch), plane_threads(S, Vec<T>::N), 0,
                             mt_cuda_stream()>>>(part, dy, x, mean, wpos, S, nch, mdiv, mmod,
                                                 same_align(x, dy));
    MT_CUDA_LAUNCH_CHECK("norm grad_partial");
}

/* Step 3: y = affine(x) with per-plane coefficients. */
template <typename T>
static void launch_affine(T *y, const T *x, const float4 *coef, int64_t P, int64_t S) {
    int64_t total = P * S;
    if (total == 0) return;
    if (S < SMALL_S) {
        affine_flat_kernel<T><<<mt_cuda_blocks(total, 256), 256, 0, mt_cuda_stream()>>>(y, x, coef,
                                                                                       S, total);
        MT_CUDA_LAUNCH_CHECK("norm affine_flat");
        return;
    }
    int64_t nch = n_chunks(S);
    affine_kernel<T><<<(unsigned)(P * nch), plane_threads(S, Vec<T>::N), 0, mt_cuda_stream()>>>(
        y, x, coef, S, nch, same_align(x, y));
    MT_CUDA_LAUNCH_CHECK("norm affine");
}

template <typename T>
static void launch_dx(T *dx, const T *dy, const T *x, const float4 *coef, int64_t P, int64_t S) {
    int64_t total = P * S;
    if (total == 0) return;
    if (S < SMALL_S) {
        dx_flat_kernel<T><<<mt_cuda_blocks(total, 256), 256, 0, mt_cuda_stream()>>>(dx, dy, x, coef,
                                                                                   S, total);
        MT_CUDA_LAUNCH_CHECK("norm dx_flat");
        return;
    }
    int64_t nch = n_chunks(S);
    dx_kernel<T><<<(unsigned)(P * nch), plane_threads(S, Vec<T>::N), 0, mt_cuda_stream()>>>(
        dx, dy, x, coef, S, nch, same_align(x, dy, dx));
    MT_CUDA_LAUNCH_CHECK("norm dx");
}

} /* namespace */

/* ------------------------------------------------------------ batch norm */

extern "C" void mt_cuda_batch_norm_forward(mt_tensor *y, mt_tensor *save_mean,
                                           mt_tensor *save_invstd, const mt_tensor *x,
                                           const mt_tensor *weight, const mt_tensor *bias,
                                           mt_tensor *running_mean, mt_tensor *running_var,
                                           int training, float momentum, float eps) {
    const char *op = "batch_norm_forward";
    int64_t N, C, S;
    nc_s(op, x, &N, &C, &S);
    check_act(op, x, x);
    check_act(op, y, x);
    check_numel(op, "weight", weight, C);
    check_numel(op, "bias", bias, C);
    MT_CHECK_MSG(save_mean && save_invstd, "%s: save_mean and save_invstd are required", op);
    check_numel(op, "save_mean", save_mean, C);
    check_numel(op, "save_invstd", save_invstd, C);
    check_numel(op, "running_mean", running_mean, C);
    check_numel(op, "running_var", running_var, C);
    const int64_t P = N * C, nch = n_chunks(S);
    const double cnt = (double)N * (double)S;
    if (training) {
        MT_CHECK_MSG(cnt > 0, "batch_norm: empty batch");
        if (running_var)
            MT_CHECK_MSG(cnt > 1, "batch_norm: expected more than 1 value per channel when training");
    } else {
        MT_CHECK_MSG(running_mean && running_var,
                     "batch_norm: eval mode needs running_mean and running_var");
    }
    if (C == 0) return;
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x);
        double2 *part = training ? scratch<double2>((size_t)(P * nch)) : nullptr;
        float4 *coef = scratch<float4>((size_t)P);
        if (training) launch_stats_partial<T>(part, xp, P, S, 1, C);
        bn_fwd_finish_kernel<T><<<warp_blocks(C), FIN_THREADS, 0, mt_cuda_stream()>>>(
            coef, fptr_mut(save_mean), fptr_mut(save_invstd), part, xp, fptr(weight), fptr(bias),
            fptr_mut(running_mean), fptr_mut(running_var), N, C, S, nch, training, momentum, eps);
        MT_CUDA_LAUNCH_CHECK("batch_norm_forward finish");
        launch_affine<T>(mt_ptr<T>(y), xp, coef, P, S);
        scratch_free(coef, (size_t)P);
        if (part) scratch_free(part, (size_t)(P * nch));
    });
}

extern "C" void mt_cuda_batch_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                            const mt_tensor *dy, const mt_tensor *x,
                                            const mt_tensor *weight, const mt_tensor *save_mean,
                                            const mt_tensor *save_invstd, int training) {
    const char *op = "batch_norm_backward";
    int64_t N, C, S;
    nc_s(op, x, &N, &C, &S);
    check_act(op, x, x);
    check_act(op, dy, x);
    check_act(op, dx, x);
    check_numel(op, "weight", weight, C);
    check_numel(op, "dweight", dweight, C);
    check_numel(op, "dbias", dbias, C);
    check_numel(op, "save_mean", save_mean, C);
    check_numel(op, "save_invstd", save_invstd, C);
    const int64_t P = N * C, nch = n_chunks(S);
    const int need_sums = training || dweight || dbias;
    if (C == 0 || (!dx && !need_sums)) return;
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x), *gp = mt_ptr<const T>(dy);
        const float *sm = fptr(save_mean);
        double2 *part = need_sums ? scratch<double2>((size_t)(P * nch)) : nullptr;
        float4 *coef = dx ? scratch<float4>((size_t)P) : nullptr;
        if (need_sums) launch_grad_partial<T>(part, gp, xp, sm, nullptr, P, S, 1, C);
        bn_bwd_finish_kernel<<<warp_blocks(C), FIN_THREADS, 0, mt_cuda_stream()>>>(
            coef, fptr_mut(dweight), fptr_mut(dbias), part, fptr(weight), sm, fptr(save_invstd),
            N, C, S, nch, training, need_sums, dx != nullptr);
        MT_CUDA_LAUNCH_CHECK("batch_norm_backward finish");
        if (dx) launch_dx<T>(mt_ptr<T>(dx), gp, xp, coef, P, S);
        if (coef) scratch_free(coef, (size_t)P);
        if (part) scratch_free(part, (size_t)(P * nch));
    });
}

/* ------------------------------------------------------------ group norm */

extern "C" void mt_cuda_group_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd,
                                           const mt_tensor *x, const mt_tensor *weight,
                                           const mt_tensor *bias, int groups, float eps) {
    const char *op = "group_norm_forward";
    int64_t N, C, S;
    nc_s(op, x, &N, &C, &S);
    MT_CHECK_MSG(groups > 0 && C % groups == 0,
                 "group_norm: %lld channels not divisible by %d groups", (long long)C, groups);
    const int64_t G = groups, Cg = C / G, P = N * C, NG = N * G, nch = n_chunks(S);
    check_act(op, x, x);
    check_act(op, y, x);
    check_numel(op, "weight", weight, C);
    check_numel(op, "bias", bias, C);
    MT_CHECK_MSG(mean && rstd, "%s: mean and rstd are required", op);
    check_numel(op, "mean", mean, NG);
    check_numel(op, "rstd", rstd, NG);
    MT_CHECK_MSG((double)Cg * (double)S > 0, "group_norm: empty groups");
    if (NG == 0) return;
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x);
        double2 *part = scratch<double2>((size_t)(P * nch));
        float4 *coef = scratch<float4>((size_t)P);
        /* shift plane of p: the group's first plane (p / Cg) * Cg */
        launch_stats_partial<T>(part, xp, P, S, Cg, P);
        gn_fwd_finish_kernel<T><<<warp_blocks(NG), FIN_THREADS, 0, mt_cuda_stream()>>>(
            coef, fptr_mut(mean), fptr_mut(rstd), part, xp, fptr(weight), fptr(bias), NG, G, Cg, S,
            nch, eps);
        MT_CUDA_LAUNCH_CHECK("group_norm_forward finish");
        launch_affine<T>(mt_ptr<T>(y), xp, coef, P, S);
        scratch_free(coef, (size_t)P);
        scratch_free(part, (size_t)(P * nch));
    });
}

extern "C" void mt_cuda_group_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                            const mt_tensor *dy, const mt_tensor *x,
                                            const mt_tensor *weight, const mt_tensor *mean,
                                            const mt_tensor *rstd, int groups) {
    const char *op = "group_norm_backward";
    int64_t N, C, S;
    nc_s(op, x, &N, &C, &S);
    MT_CHECK_MSG(groups > 0 && C % groups == 0,
                 "group_norm: %lld channels not divisible by %d groups", (long long)C, groups);
    const int64_t G = groups, Cg = C / G, P = N * C, NG = N * G, nch = n_chunks(S);
    check_act(op, x, x);
    check_act(op, dy, x);
    check_act(op, dx, x);
    check_numel(op, "weight", weight, C);
    check_numel(op, "dweight", dweight, C);
    check_numel(op, "dbias", dbias, C);
    check_numel(op, "mean", mean, NG);
    check_numel(op, "rstd", rstd, NG);
    if (C == 0 || (!dx && !dweight && !dbias)) return;
    if (NG == 0) {
        /* no samples: parameter gradients are empty sums */
        if (dweight) MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dweight), 0, sizeof(float) * C, mt_cuda_stream()));
        if (dbias) MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dbias), 0, sizeof(float) * C, mt_cuda_stream()));
        return;
    }
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x), *gp = mt_ptr<const T>(dy);
        double2 *part = scratch<double2>((size_t)(P * nch));
        double2 *sums = scratch<double2>((size_t)P);
        float4 *coef = dx ? scratch<float4>((size_t)P) : nullptr;
        /* mean of plane p: mean[p / Cg] */
        launch_grad_partial<T>(part, gp, xp, fptr(mean), nullptr, P, S, Cg, NG);
        gn_bwd_group_kernel<<<warp_blocks(NG), FIN_THREADS, 0, mt_cuda_stream()>>>(
            coef, sums, part, fptr(weight), fptr(mean), fptr(rstd), NG, G, C, Cg, S, nch,
            dx != nullptr);
        MT_CUDA_LAUNCH_CHECK("group_norm_backward group");
        if (dweight || dbias) {
            gn_bwd_param_kernel<<<(unsigned)((C + 255) / 256), 256, 0, mt_cuda_stream()>>>(
                fptr_mut(dweight), fptr_mut(dbias), sums, N, C);
            MT_CUDA_LAUNCH_CHECK("group_norm_backward params");
        }
        if (dx) launch_dx<T>(mt_ptr<T>(dx), gp, xp, coef, P, S);
        if (coef) scratch_free(coef, (size_t)P);
        scratch_free(sums, (size_t)P);
        scratch_free(part, (size_t)(P * nch));
    });
}

/* ------------------------------------------------------------ layer norm */

extern "C" void mt_cuda_layer_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd,
                                           const mt_tensor *x, const mt_tensor *weight,
                                           const mt_tensor *bias, int64_t norm_numel, float eps) {
    const char *op = "layer_norm_forward";
    const int64_t D = norm_numel, total = mt_tensor_numel(x);
    MT_CHECK_MSG(D > 0 && total % D == 0,
                 "layer_norm: %lld elements not divisible by norm_numel %lld", (long long)total,
                 (long long)D);
    const int64_t M = total / D;
    check_act(op, x, x);
    check_act(op, y, x);
    check_numel(op, "weight", weight, D);
    check_numel(op, "bias", bias, D);
    MT_CHECK_MSG(mean && rstd, "%s: mean and rstd are required", op);
    check_numel(op, "mean", mean, M);
    check_numel(op, "rstd", rstd, M);
    if (M == 0) return;
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x);
        T *yp = mt_ptr<T>(y);
        if (D <= WARP_ROW_MAX) {
            ln_fwd_warp_kernel<T><<<warp_blocks(M), FIN_THREADS, 0, mt_cuda_stream()>>>(
                yp, fptr_mut(mean), fptr_mut(rstd), xp, fptr(weight), fptr(bias), M, D, eps);
            MT_CUDA_LAUNCH_CHECK("layer_norm_forward warp");
        } else {
            const int64_t nch = n_chunks(D);
            double2 *part = scratch<double2>((size_t)(M * nch));
            float4 *coef = scratch<float4>((size_t)M);
            launch_stats_partial<T>(part, xp, M, D, 1, M);
            ln_fwd_finish_kernel<T><<<warp_blocks(M), FIN_THREADS, 0, mt_cuda_stream()>>>(
                coef, fptr_mut(mean), fptr_mut(rstd), part, xp, M, D, nch, eps);
            MT_CUDA_LAUNCH_CHECK("layer_norm_forward finish");
            ln_affine_kernel<T><<<(unsigned)(M * nch), plane_threads(D, Vec<T>::N), 0,
                                  mt_cuda_stream()>>>(yp, xp, coef, fptr(weight), fptr(bias), D,
                                                      nch, same_align(xp, yp));
            MT_CUDA_LAUNCH_CHECK("layer_norm_forward affine");
            scratch_free(coef, (size_t)M);
            scratch_free(part, (size_t)(M * nch));
        }
    });
}

extern "C" void mt_cuda_layer_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                            const mt_tensor *dy, const mt_tensor *x,
                                            const mt_tensor *weight, const mt_tensor *mean,
                                            const mt_tensor *rstd, int64_t norm_numel) {
    const char *op = "layer_norm_backward";
    const int64_t D = norm_numel, total = mt_tensor_numel(x);
    MT_CHECK_MSG(D > 0 && total % D == 0,
                 "layer_norm: %lld elements not divisible by norm_numel %lld", (long long)total,
                 (long long)D);
    const int64_t M = total / D;
    check_act(op, x, x);
    check_act(op, dy, x);
    check_act(op, dx, x);
    check_numel(op, "weight", weight, D);
    check_numel(op, "dweight", dweight, D);
    check_numel(op, "dbias", dbias, D);
    check_numel(op, "mean", mean, M);
    check_numel(op, "rstd", rstd, M);
    MT_CUDA_DISPATCH_FLOAT(op, x->dtype, {
        const T *xp = mt_ptr<const T>(x), *gp = mt_ptr<const T>(dy);
        const float *mp = fptr(mean), *rp = fptr(rstd), *w = fptr(weight);
        if (dweight || dbias) {
            const int64_t ncb = (D + 31) / 32;
            int64_t nrb = (1024 + ncb - 1) / ncb;            /* aim at ~1024 blocks */
            const int64_t rb_max = (M + LNP_ROWS - 1) / LNP_ROWS; /* >= 8 rows per block */
            if (nrb > rb_max) nrb = rb_max;
            if (nrb > 65535) nrb = 65535;
            if (nrb < 1) nrb = 1;
            const int64_t rows = (M + nrb - 1) / nrb > 0 ? (M + nrb - 1) / nrb : 1;
            nrb = M > 0 ? (M + rows - 1) / rows : 1;
            double2 *part = scratch<double2>((size_t)(nrb * D));
            if (M > 0) {
                dim3 grid((unsigned)ncb, (unsigned)nrb), block(32, LNP_ROWS);
                ln_param_partial_kernel<T><<<grid, block, 0, mt_cuda_stream()>>>(part, gp, xp, mp,
                                                                                 rp, M, D, rows);
                MT_CUDA_LAUNCH_CHECK("layer_norm_backward param partial");
            } else {
                MT_CUDA_CHECK(cudaMemsetAsync(part, 0, sizeof(double2) * (size_t)D, mt_cuda_stream()));
            }
            ln_param_finish_kernel<<<(unsigned)((D + 255) / 256), 256, 0, mt_cuda_stream()>>>(
                fptr_mut(dweight), fptr_mut(dbias), part, nrb, D);
            MT_CUDA_LAUNCH_CHECK("layer_norm_backward param finish");
            scratch_free(part, (size_t)(nrb * D));
        }
        if (dx && M > 0) {
            T *dxp = mt_ptr<T>(dx);
            if (D <= WARP_ROW_MAX) {
                ln_bwd_warp_kernel<T><<<warp_blocks(M), FIN_THREADS, 0, mt_cuda_stream()>>>(
                    dxp, gp, xp, w, mp, rp, M, D);
                MT_CUDA_LAUNCH_CHECK("layer_norm_backward warp");
            } else {
                const int64_t nch = n_chunks(D);
                double2 *part = scratch<double2>((size_t)(M * nch));
                float4 *coef = scratch<float4>((size_t)M);
                launch_grad_partial<T>(part, gp, xp, mp, w, M, D, 1, M);
                ln_bwd_finish_kernel<<<warp_blocks(M), FIN_THREADS, 0, mt_cuda_stream()>>>(
                    coef, part, mp, rp, M, D, nch);
                MT_CUDA_LAUNCH_CHECK("layer_norm_backward finish");
                ln_dx_kernel<T><<<(unsigned)(M * nch), plane_threads(D, Vec<T>::N), 0,
                                  mt_cuda_stream()>>>(dxp, gp, xp, coef, w, D, nch,
                                                      same_align(xp, gp, dxp));
                MT_CUDA_LAUNCH_CHECK("layer_norm_backward dx");
                scratch_free(coef, (size_t)M);
                scratch_free(part, (size_t)(M * nch));
            }
        }
    });
}
