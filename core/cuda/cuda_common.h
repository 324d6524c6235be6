/* Host-side support shared by the CUDA backend's files (core/cuda/): checked
 * calls, the compute stream, library handles, the caching allocator and a
 * reused workspace. C-callable; included from .cu files and from C.
 *
 * Every CUDA / cuDNN / cuBLAS call goes through a check macro that prints the
 * expression, file, line and the library's error string, then aborts
 * (DESIGN.md decision 9). Every kernel launch is followed by
 * MT_CUDA_LAUNCH_CHECK(name); with MT_CUDA_SYNC=1 in the environment it also
 * synchronizes, so an asynchronous fault is reported at the launch that caused
 * it.
 *
 * Stream model: all kernels, library calls and copies of the backend run on
 * one compute stream per process (mt_cuda_stream()). Memory freed to the
 * caching allocator is therefore reusable at once in stream order; a consumer
 * on another stream (NCCL) must order itself with events. */
#ifndef MT_CUDA_COMMON_H
#define MT_CUDA_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "core/alloc.h"
#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_CUDA_CHECK(expr)                                                                   \
    do {                                                                                      \
        cudaError_t mt_e_ = (expr);                                                           \
        if (mt_e_ != cudaSuccess)                                                             \
            mt_fatal(__FILE__, __LINE__, "CUDA call failed: %s: %s (%s)", #expr,              \
                     cudaGetErrorString(mt_e_), cudaGetErrorName(mt_e_));                     \
    } while (0)
#define MT_CUDNN_CHECK(expr)                                                                  \
    do {                                                                                      \
        cudnnStatus_t mt_e_ = (expr);                                                         \
        if (mt_e_ != CUDNN_STATUS_SUCCESS)                                                    \
            mt_fatal(__FILE__, __LINE__, "cuDNN call failed: %s: %s", #expr,                  \
                     cudnnGetErrorString(mt_e_));                                             \
    } while (0)
#define MT_CUBLAS_CHECK(expr)                                                                 \
    do {                                                                                      \
        cublasStatus_t mt_e_ = (expr);                                                        \
        if (mt_e_ != CUBLAS_STATUS_SUCCESS)                                                   \
            mt_fatal(__FILE__, __LINE__, "cuBLAS call failed: %s: %s", #expr,                 \
                     cublasGetStatusString(mt_e_));                                           \
    } while (0)
/* After every <<<...>>> launch. */
#define MT_CUDA_LAUNCH_CHECK(name) mt_cuda_launch_check((name), __FILE__, __LINE__)
void mt_cuda_launch_check(const char *name, const char *file, int line);

/* The compute stream of this process (created on first use on the current device). */
cudaStream_t mt_cuda_stream(void);
cudnnHandle_t mt_cuda_cudnn(void);
cublasHandle_t mt_cuda_cublas(void);
/* A device workspace of at least nbytes, reused across calls (grows, never
 * shrinks; contents undefined). Valid until the next call. */
void *mt_cuda_workspace(size_t nbytes);

/* Caching device allocator (core/cuda/alloc.cu): size classes with free lists,
 * cudaMalloc only on a miss, stream-ordered reuse on the compute stream. Out of
 * memory after emptying the cache aborts with the request and the statistics. */
void *mt_cuda_alloc(size_t nbytes);
void mt_cuda_free(void *p, size_t nbytes);
void mt_cuda_alloc_stats(mt_alloc_stats *out);
void mt_cuda_alloc_reset_peak(void);
void mt_cuda_alloc_empty_cache(void);
/* Page-locked host memory, cached the same way (the table's host_alloc_pinned). */
void *mt_cuda_host_alloc_pinned(size_t nbytes);
void mt_cuda_host_free_pinned(void *p, size_t nbytes);

/* Checks that kernels report without synchronising (one_hot's label range)
 * and aborts naming the problem; called after the backend synchronises
 * (synchronize, copies to the host). */
void mt_cuda_check_deferred(void);

/* Device count, or 0 with the reason in mt_cuda_device_error(). */
int mt_cuda_device_count(void);
const char *mt_cuda_device_error(void);
int mt_cuda_set_device(int index);

/* A tensor's geometry for strided device kernels (passed by value). */
typedef struct {
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    int64_t strides[MT_MAX_DIMS];
    int64_t offset; /* elements */
} mt_cuda_strided;
mt_cuda_strided mt_cuda_strided_of(const mt_tensor *t);

/* Blocks for n elements at `threads` per block, capped for grid-stride loops. */
unsigned mt_cuda_blocks(int64_t n, unsigned threads);

#ifdef __cplusplus
}
#endif
#endif
