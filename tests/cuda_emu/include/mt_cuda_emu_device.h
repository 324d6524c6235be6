/* medtrain CUDA emulator: device-side language for .cu files compiled as C++
 * (force-included by tests/cuda_emu/emu_nvcc.py's output).
 *
 * Execution model (emu_runtime.cpp): a launch runs its blocks one after
 * another on the calling host thread; within a block every CUDA thread is a
 * fiber with its own stack. Fibers run until they finish or reach a
 * synchronisation point: __syncthreads() waits for every live thread of the
 * block (all at the same call site, else the launch fails as divergent), a
 * warp shuffle waits for every lane its mask names (a named lane that has
 * exited or does not exist fails the launch: on a GPU that is undefined).
 * __shared__ variables become function statics, which is exact because
 * blocks never overlap. Atomics are trivially atomic (fibers never
 * interleave between sync points), so the emulator cannot find data races;
 * it finds wrong indexing, bad launch configurations, divergent barriers and
 * shuffles, host pointers passed to kernels, and traps.
 *
 * Floating point: each operation rounds to nearest as on the GPU; the host
 * compiler is told not to contract a*b+c (-ffp-contract=off), where nvcc
 * would fuse it, so results may differ from a GPU's in the last bit of a
 * fused expression, never in the explicitly rounded __f*_rn intrinsics. */
#ifndef MT_CUDA_EMU_DEVICE_H
#define MT_CUDA_EMU_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __CUDA_EMU__ 1

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

/* Vector types with CUDA's alignment (a misaligned vector access is a fault
 * on a GPU; here the host's aligned vector loads fault the same way). */
#define MT_EMU_VEC2(T, N)                                        \
    struct alignas(2 * sizeof(T)) N {                            \
        T x, y;                                                  \
    };                                                           \
    static inline N make_##N(T x, T y) { return N{x, y}; }
#define MT_EMU_VEC4(T, N)                                        \
    struct alignas(4 * sizeof(T)) N {                            \
        T x, y, z, w;                                            \
    };                                                           \
    static inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }
MT_EMU_VEC2(int, int2)
MT_EMU_VEC2(unsigned, uint2)
MT_EMU_VEC2(float, float2)
MT_EMU_VEC2(double, double2)
MT_EMU_VEC4(int, int4)
MT_EMU_VEC4(unsigned, uint4)
MT_EMU_VEC4(float, float4)
static inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

/* Set by the scheduler before each fiber resumes. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

extern "C" {
void mt_emu_syncthreads(const char *file, int line);
/* Shuffle of 64 bits among the lanes of mask; mode 0 idx, 1 up, 2 down, 3 xor. */
uint64_t mt_emu_shfl(unsigned mask, uint64_t bits, int mode, int arg, int width, const char *file,
                     int line);
void mt_emu_trap(const char *file, int line);
/* Launch validation and execution (one call per <<<>>>). */
struct mt_emu_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
int mt_emu_launch_begin(const char *name, const char *file, int line, const struct mt_emu_cfg *c);
/* Queues the launch on its stream (or runs it now when streams are
 * synchronous): fn(ctx) as every thread of every block, then drop(ctx). */
void mt_emu_launch_run(const char *name, const struct mt_emu_cfg *c, void (*fn)(void *), void *ctx,
                       void (*drop)(void *));
/* Checks a pointer argument of a kernel: NULL or device memory. */
void mt_emu_check_ptr_arg(const char *name, int index, const void *p);
}

#define __syncthreads() mt_emu_syncthreads(__FILE__, __LINE__)
#define __trap() mt_emu_trap(__FILE__, __LINE__)

template <typename T>
static inline T mt_emu_shfl_t(unsigned mask, T v, int mode, int arg, int width, const char *file,
                              int line) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 64 bits");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = mt_emu_shfl(mask, bits, mode, arg, width, file, line);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}
#define __shfl_sync(m, v, l, ...) mt_emu_shfl_t((m), (v), 0, (l), (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_up_sync(m, v, d, ...) mt_emu_shfl_t((m), (v), 1, (d), (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_down_sync(m, v, d, ...) mt_emu_shfl_t((m), (v), 2, (d), (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_xor_sync(m, v, x, ...) mt_emu_shfl_t((m), (v), 3, (x), (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)

/* Atomics: fibers never interleave inside one, so plain read-modify-write. */
template <typename T>
static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
static inline T atomicCAS(T *p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <typename T>
static inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <typename T>
static inline T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <typename T>
static inline T atomicMin(T *p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}

/* Intrinsics with explicit rounding: IEEE round-to-nearest on the host. */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __int_as_float(int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int u;
    memcpy(&u, &f, 4);
    return u;
}
static inline long long __double_as_longlong(double d) {
    long long u;
    memcpy(&u, &d, 8);
    return u;
}
static inline double __longlong_as_double(long long u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <typename T>
static inline T __ldg(const T *p) {
    return *p;
}
/* CUDA's device min/max overloads for integers and floats. */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

/* The launch: kernel<<<grid, block, smem, stream>>>(args) is rewritten by
 * emu_nvcc.py into mt_emu_launch("kernel", __FILE__, __LINE__,
 * mt_emu_make_cfg(grid, block, smem, stream), kernel, args). Arguments are
 * converted to the kernel's parameter types once, at the launch, and every
 * thread gets its own copy of them, as on a GPU. */
static inline mt_emu_cfg mt_emu_make_cfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0) {
    mt_emu_cfg c{g, b, smem, s};
    return c;
}

template <typename A>
static inline void mt_emu_check_arg(const char *name, int i, const A &a) {
    if constexpr (std::is_pointer<A>::value) mt_emu_check_ptr_arg(name, i, (const void *)a);
}

template <typename... P, typename... A>
static inline void mt_emu_launch(const char *name, const char *file, int line, mt_emu_cfg cfg,
                                 void (*kernel)(P...), A &&...args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
    if (!mt_emu_launch_begin(name, file, line, &cfg)) return;
    struct Ctx {
        void (*k)(P...);
        std::tuple<typename std::decay<P>::type...> a;
    };
    /* the arguments as of the launch: the kernel may run later (queued on its stream) */
    Ctx *ctx = new Ctx{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(args)...)};
    int i = 0;
    std::apply([&](const auto &...v) { (mt_emu_check_arg(name, i++, v), ...); }, ctx->a);
    mt_emu_launch_run(
        name, &cfg,
        [](void *p) {
            Ctx *c = (Ctx *)p;
            std::tuple<typename std::decay<P>::type...> mine = c->a; /* per-thread copy */
            std::apply(c->k, mine);
        },
        ctx, [](void *p) { delete (Ctx *)p; });
}

#endif
