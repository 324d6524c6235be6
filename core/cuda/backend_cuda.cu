/* The CUDA backend's kernel table and its process-wide state: the compute
 * stream, cuDNN / cuBLAS handles, the reused workspace, device discovery.
 * Kernels live in one file per op family (core/cuda/<family>.cu) and are
 * named mt_cuda_<slot>; their contracts are core/backend.h's. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/cuda_common.h"
#include "core/cuda/cuda_kernels.h"

/* ------------------------------------------------------------ devices */

static pthread_once_t g_count_once = PTHREAD_ONCE_INIT;
static int g_count = 0;
static char g_count_error[256];

static void count_devices(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(g_count_error, sizeof g_count_error, "cudaGetDeviceCount: %s (%s)",
                 cudaGetErrorString(e), cudaGetErrorName(e));
        (void)cudaGetLastError();
        n = 0;
    } else if (n == 0) {
        snprintf(g_count_error, sizeof g_count_error, "the CUDA driver reports no devices");
    }
    g_count = n;
}

extern "C" int mt_cuda_device_count(void) {
    pthread_once(&g_count_once, count_devices);
    return g_count;
}

extern "C" const char *mt_cuda_device_error(void) {
    pthread_once(&g_count_once, count_devices);
    return g_count_error[0] ? g_count_error : NULL;
}

/* The device this process computes on; -1 until chosen (first use picks 0). */
static int g_device = -1;
static cudaStream_t g_stream = NULL;
static cudnnHandle_t g_cudnn = NULL;
static cublasHandle_t g_cublas = NULL;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

extern "C" int mt_cuda_set_device(int index) {
    int n = mt_cuda_device_count();
    if (index < 0 || index >= n) {
        mt_error_set(MT_ERR_INVALID, "cuda:%d: %d GPU%s visible%s%s", index, n, n == 1 ? "" : "s",
                     n == 0 ? ": " : "", n == 0 ? mt_cuda_device_error() : "");
        return -1;
    }
    pthread_mutex_lock(&g_lock);
    if (g_device >= 0 && g_device != index) {
        pthread_mutex_unlock(&g_lock);
        mt_error_set(MT_ERR_INVALID,
                     "cuda:%d: this process already computes on cuda:%d (one GPU per process; "
                     "use one rank per GPU)",
                     index, g_device);
        return -1;
    }
    cudaError_t e = cudaSetDevice(index);
    if (e == cudaSuccess) e = cudaFree(0); /* creates the context now, so failures show here */
    if (e != cudaSuccess) {
        pthread_mutex_unlock(&g_lock);
        mt_error_set(MT_ERR_INVALID, "cuda:%d: cannot initialise the device: %s (%s)", index,
                     cudaGetErrorString(e), cudaGetErrorName(e));
        return -1;
    }
    g_device = index;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* Every thread that touches the GPU (loader threads copying batches too) must
 * have the process's device current. */
static void ensure_device(void) {
    if (g_device < 0) {
        if (mt_cuda_set_device(0) != 0) mt_fatal(__FILE__, __LINE__, "%s", mt_error_msg());
        return;
    }
    int cur = -1;
    MT_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != g_device) MT_CUDA_CHECK(cudaSetDevice(g_device));
}

extern "C" cudaStream_t mt_cuda_stream(void) {
    ensure_device();
    if (!g_stream) {
        pthread_mutex_lock(&g_lock);
        if (!g_stream) MT_CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
        pthread_mutex_unlock(&g_lock);
    }
    return g_stream;
}

extern "C" cudnnHandle_t mt_cuda_cudnn(void) {
    cudaStream_t s = mt_cuda_stream();
    if (!g_cudnn) {
        pthread_mutex_lock(&g_lock);
        if (!g_cudnn) {
            MT_CUDNN_CHECK(cudnnCreate(&g_cudnn));
            MT_CUDNN_CHECK(cudnnSetStream(g_cudnn, s));
        }
        pthread_mutex_unlock(&g_lock);
    }
    return g_cudnn;
}

extern "C" cublasHandle_t mt_cuda_cublas(void) {
    cudaStream_t s = mt_cuda_stream();
    if (!g_cublas) {
        pthread_mutex_lock(&g_lock);
        if (!g_cublas) {
            MT_CUBLAS_CHECK(cublasCreate(&g_cublas));
            MT_CUBLAS_CHECK(cublasSetStream(g_cublas, s));
        }
        pthread_mutex_unlock(&g_lock);
    }
    return g_cublas;
}

static void *g_workspace = NULL;
static size_t g_workspace_size = 0;

extern "C" void *mt_cuda_workspace(size_t nbytes) {
    if (nbytes <= g_workspace_size) return g_workspace;
    /* Stream-ordered: the old block may still be read by queued work, which the
     * allocator's reuse in stream order makes safe. */
    if (g_workspace) mt_cuda_free(g_workspace, g_workspace_size);
    size_t sz = nbytes + nbytes / 4;
    g_workspace = mt_cuda_alloc(sz);
    g_workspace_size = sz;
    return g_workspace;
}

extern "C" void mt_cuda_launch_check(const char *name, const char *file, int line) {
    static int sync_mode = -1;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        mt_fatal(file, line, "CUDA kernel launch '%s' failed: %s (%s)", name, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    if (sync_mode < 0) {
        const char *s = getenv("MT_CUDA_SYNC");
        sync_mode = s && *s && strcmp(s, "0") != 0;
    }
    if (sync_mode) {
        e = cudaStreamSynchronize(mt_cuda_stream());
        if (e != cudaSuccess)
            mt_fatal(file, line, "CUDA kernel '%s' failed (MT_CUDA_SYNC=1): %s (%s)", name,
                     cudaGetErrorString(e), cudaGetErrorName(e));
    }
}

extern "C" mt_cuda_strided mt_cuda_strided_of(const mt_tensor *t) {
    mt_cuda_strided s;
    memset(&s, 0, sizeof s);
    s.ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) {
        s.shape[d] = t->shape[d];
        s.strides[d] = t->strides[d];
    }
    s.offset = t->offset;
    return s;
}

extern "C" unsigned mt_cuda_blocks(int64_t n, unsigned threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16; /* grid-stride loops cover the rest */
    return (unsigned)b;
}

/* ------------------------------------------------------------ table */

static void cuda_memcpy_host(void *dst, const void *src, size_t nbytes, int to_host) {
    if (nbytes == 0) return;
    cudaStream_t s = mt_cuda_stream();
    MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, s));
    MT_CUDA_CHECK(cudaStreamSynchronize(s));
    if (to_host) mt_cuda_check_deferred();
}

static void cuda_memcpy_pinned_to_device(void *dst, const void *src, size_t nbytes) {
    if (nbytes == 0) return;
    MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, mt_cuda_stream()));
}

static void cuda_synchronize(void) {
    MT_CUDA_CHECK(cudaStreamSynchronize(mt_cuda_stream()));
    mt_cuda_check_deferred();
}

/* Filled at load time (C++ before C++20 has no designated initializers). */
static mt_backend make_table(void) {
    mt_backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.alloc = mt_cuda_alloc;
    b.free = mt_cuda_free;
    b.memcpy_host = cuda_memcpy_host;
    b.memcpy_pinned_to_device = cuda_memcpy_pinned_to_device;
    b.synchronize = cuda_synchronize;
    b.device_count = mt_cuda_device_count;
    b.device_error = mt_cuda_device_error;
    b.set_device = mt_cuda_set_device;
    b.memory_stats = mt_cuda_alloc_stats;
    b.memory_reset_peak = mt_cuda_alloc_reset_peak;
    b.host_alloc_pinned = mt_cuda_host_alloc_pinned;
    b.host_free_pinned = mt_cuda_host_free_pinned;
    b.fill = mt_cuda_fill;
    b.copy = mt_cuda_copy;
    b.binary = mt_cuda_binary;
    b.unary = mt_cuda_unary;
    b.unary_backward = mt_cuda_unary_backward;
    b.one_hot = mt_cuda_one_hot;
    b.argmax_channel = mt_cuda_argmax_channel;
    b.reduce = mt_cuda_reduce;
    b.softmax = mt_cuda_softmax;
    b.softmax_backward = mt_cuda_softmax_backward;
    b.rng_uniform = mt_cuda_rng_uniform;
    b.rng_normal = mt_cuda_rng_normal;
    b.gemm = mt_cuda_gemm;
    b.conv3d_forward = mt_cuda_conv3d_forward;
    b.conv3d_backward_data = mt_cuda_conv3d_backward_data;
    b.conv3d_backward_filter = mt_cuda_conv3d_backward_filter;
    b.batch_norm_forward = mt_cuda_batch_norm_forward;
    b.batch_norm_backward = mt_cuda_batch_norm_backward;
    b.group_norm_forward = mt_cuda_group_norm_forward;
    b.group_norm_backward = mt_cuda_group_norm_backward;
    b.layer_norm_forward = mt_cuda_layer_norm_forward;
    b.layer_norm_backward = mt_cuda_layer_norm_backward;
    b.max_pool3d_forward = mt_cuda_max_pool3d_forward;
    b.max_pool3d_backward = mt_cuda_max_pool3d_backward;
    b.avg_pool3d_forward = mt_cuda_avg_pool3d_forward;
    b.avg_pool3d_backward = mt_cuda_avg_pool3d_backward;
    b.upsample_trilinear_forward = mt_cuda_upsample_trilinear_forward;
    b.upsample_trilinear_backward = mt_cuda_upsample_trilinear_backward;
    b.sgd_step = mt_cuda_sgd_step;
    b.adam_step = mt_cuda_adam_step;
    b.sgd_step_multi = mt_cuda_sgd_step_multi;
    b.adam_step_multi = mt_cuda_adam_step_multi;
    return b;
}

extern "C" const mt_backend mt_cuda_backend = make_table();
