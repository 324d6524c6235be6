/* CUDA random fills: element i of the tensor (logical order) takes Philox
 * stream value (offset + i) of `seed`, exactly as core/cpu/random.c with
 * core/rng.c:
 *  - value k of the stream is word (k & 3) of Philox4x32-10 on counter
 *    (lo = k >> 2, hi = 0) with key seed;
 *  - uniform: (word >> 8) * 2^-24, then lo + span * u rounded once (the CPU
 *    build contracts this into an FMA: GNU C11, -march with FMA), values
 *    rounding up to hi replaced by lo;
 *  - normal: Box-Muller on the uniforms of the pair (k & ~1, k | 1): even k
 *    takes r cos(th), odd k r sin(th); then mean + std * z (FMA as the CPU).
 *    The precise logf / sqrtf / sincosf may differ from glibc by an ulp.
 * One thread per Philox block (4 consecutive stream values, so both members
 * of a Box-Muller pair are in the same thread); grid-stride over the blocks
 * covering [offset, offset + n). Offsets are assumed not to wrap 2^64. */
#include <math.h>
#include <stdint.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"

#define RNG_THREADS 256

__device__ __forceinline__ void philox4x32_10(uint32_t out[4], uint64_t ctr_lo, uint64_t key) {
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
#pragma unroll
    for (int i = 0; i < 10; i++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* mt_philox_uniform: 24 bits, exact scaling. */
__device__ __forceinline__ float philox_u01(uint32_t w) {
    return (float)(w >> 8) * (1.0f / 16777216.0f);
}

/* Blocks b0 .. b0 + nb - 1; stream value k = 4 b + e goes to element k - offset. */
template <typename T>
__global__ void rng_uniform_k(T *o, uint64_t seed, uint64_t offset, int64_t n, uint64_t b0,
                              int64_t nb, float lo, float hi, float span) {
    MT_GRID_STRIDE(t, nb) {
        uint64_t b = b0 + (uint64_t)t;
        uint32_t w[4];
        philox4x32_10(w, b, seed);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            uint64_t k = (b << 2) + (uint64_t)e;
            if (k < offset || k - offset >= (uint64_t)n) continue;
            float v = __fmaf_rn(span, philox_u01(w[e]), lo);
            mt_st(o + (k - offset), v < hi ? v : lo);
        }
    }
}

template <typename T>
__global__ void rng_normal_k(T *o, uint64_t seed, uint64_t offset, int64_t n, uint64_t b0,
                             int64_t nb, float mean, float std) {
    MT_GRID_STRIDE(t, nb) {
        uint64_t b = b0 + (uint64_t)t;
        uint32_t w[4];
        philox4x32_10(w, b, seed);
#pragma unroll
        for (int pr = 0; pr < 2; pr++) {
            uint64_t k0 = (b << 2) + (uint64_t)(2 * pr); /* even member of the pair */
            bool use0 = k0 >= offset && k0 - offset < (uint64_t)n;
            bool use1 = k0 + 1 >= offset && k0 + 1 - offset < (uint64_t)n;
            if (!use0 && !use1) continue;
            float u1 = philox_u01(w[2 * pr]), u2 = philox_u01(w[2 * pr + 1]);
            float r = sqrtf(-2.0f * logf(1.0f - u1)); /* 1 - u1 in (0, 1] */
            float th = 6.2831853071795864f * u2;
            float sn, cs;
            sincosf(th, &sn, &cs);
            if (use0) mt_st(o + (k0 - offset), __fmaf_rn(std, r * cs, mean));
            if (use1) mt_st(o + (k0 + 1 - offset), __fmaf_rn(std, r * sn, mean));
        }
    }
}

static void rng_check(const char *op, const mt_tensor *out) {
    MT_CHECK_MSG(out->storage->device.type == MT_CUDA, "%s (cuda): the tensor is not on the GPU", op);
    MT_CHECK_MSG(mt_tensor_is_contiguous(out), "%s (cuda): output must be contiguous", op);
}

extern "C" void mt_cuda_rng_uniform(mt_tensor *out, uint64_t seed, uint64_t offset, float lo,
                                    float hi) {
    rng_check("rng_uniform", out);
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    uint64_t b0 = offset >> 2, b1 = (offset + (uint64_t)n - 1) >> 2;
    int64_t nb = (int64_t)(b1 - b0 + 1);
    float span = hi - lo;
    cudaStream_t s = mt_cuda_stream();
    MT_CUDA_DISPATCH_FLOAT("rng_uniform", out->dtype, {
        rng_uniform_k<T><<<mt_cuda_blocks(nb, RNG_THREADS), RNG_THREADS, 0, s>>>(
            mt_ptr<T>(out), seed, offset, n, b0, nb, lo, hi, span);
        MT_CUDA_LAUNCH_CHECK("rng_uniform");
    });
}

extern "C" void mt_cuda_rng_normal(mt_tensor *out, uint64_t seed, uint64_t offset, float mean,
                                   float std) {
    rng_check("rng_normal", out);
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    uint64_t b0 = offset >> 2, b1 = (offset + (uint64_t)n - 1) >> 2;
    int64_t nb = (int64_t)(b1 - b0 + 1);
    cudaStream_t s = mt_cuda_stream();
    MT_CUDA_DISPATCH_FLOAT("rng_normal", out->dtype, {
        rng_normal_k<T><<<mt_cuda_blocks(nb, RNG_THREADS), RNG_THREADS, 0, s>>>(
            mt_ptr<T>(out), seed, offset, n, b0, nb, mean, std);
        MT_CUDA_LAUNCH_CHECK("rng_normal");
    });
}
