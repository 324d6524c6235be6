/* Device-side helpers for the CUDA kernels (C++ / .cu only).
 *
 * bf16 values are stored as their 16 bits (uint16_t) and converted with the
 * exact rule of core/dtype.c (round to nearest even, NaN kept quiet), so a
 * bf16 result on the GPU rounds as on the CPU. Kernels are templates over the
 * storage type T (float or uint16_t); MT_CUDA_DISPATCH_FLOAT picks T from a
 * tensor dtype. Arithmetic is always in float. */
#ifndef MT_CUDA_DEVICE_CUH
#define MT_CUDA_DEVICE_CUH

#include <stdint.h>

#include "core/cuda/cuda_common.h"

typedef uint16_t mt_bf16_bits;

__device__ __forceinline__ float mt_ld(const float *p) { return *p; }
__device__ __forceinline__ float mt_ld(const mt_bf16_bits *p) {
    return __uint_as_float((uint32_t)(*p) << 16);
}
__device__ __forceinline__ float mt_ld(const int32_t *p) { return (float)*p; }
__device__ __forceinline__ float mt_ld(const uint8_t *p) { return (float)*p; }

__device__ __forceinline__ mt_bf16_bits mt_f32_to_bf16_dev(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (mt_bf16_bits)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (mt_bf16_bits)(u >> 16);
}
__device__ __forceinline__ void mt_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void mt_st(mt_bf16_bits *p, float v) { *p = mt_f32_to_bf16_dev(v); }

/* Storage offset of logical row-major index i. */
__device__ __forceinline__ int64_t mt_offset(const mt_cuda_strided &t, int64_t i) {
    int64_t off = t.offset;
    for (int d = t.ndim - 1; d >= 0; d--) {
        int64_t n = t.shape[d];
        off += (i % n) * t.strides[d];
        i /= n;
    }
    return off;
}

#define MT_GRID_STRIDE(i, n)                                                             \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
         i += (int64_t)blockDim.x * gridDim.x)

/* Sum over a warp / a block (blockDim.x a multiple of 32, at most 1024). The
 * block form returns the total to every thread; it uses a 32-float shared
 * buffer and synchronizes the block. */
__device__ __forceinline__ float mt_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double mt_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float mt_block_sum(float v) {
    __shared__ float buf[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = mt_warp_sum(v);
    __syncthreads();
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = lane < nw ? buf[lane] : 0.0f;
    return mt_warp_sum(v);
}
__device__ __forceinline__ double mt_block_sum_d(double v) {
    __shared__ double bufd[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = mt_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) bufd[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = lane < nw ? bufd[lane] : 0.0;
    return mt_warp_sum_d(v);
}

/* Calls BODY with T = float or mt_bf16_bits according to dtype; any other
 * dtype aborts naming op and dtype. */
#define MT_CUDA_DISPATCH_FLOAT(op, dtype, ...)                                           \
    do {                                                                                 \
        if ((dtype) == MT_F32) {                                                         \
            typedef float T;                                                             \
            __VA_ARGS__;                                                                 \
        } else if ((dtype) == MT_BF16) {                                                 \
            typedef mt_bf16_bits T;                                                      \
            __VA_ARGS__;                                                                 \
        } else {                                                                         \
            mt_fatal(__FILE__, __LINE__, "kernel '%s' on cuda does not support dtype %s", \
                     (op), mt_dtype_name(dtype));                                        \
        }                                                                                \
    } while (0)

/* Typed data pointer of a tensor (storage + offset). */
template <typename T>
static inline T *mt_ptr(const mt_tensor *t) {
    return (T *)mt_tensor_data(t);
}

#endif
