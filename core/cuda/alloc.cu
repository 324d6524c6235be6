/* Caching device allocator (DESIGN.md decision 4).
 *
 * Requests are rounded up to size classes: 512 bytes minimum, then four
 * classes per power of two (as the host allocator, core/alloc.c). A freed
 * block goes onto its class's free list and is handed out again for the next
 * request of that class, so the steady-state training step never reaches
 * cudaMalloc / cudaFree. Reuse is stream-ordered: all work of the backend is
 * on one compute stream, so a block freed by the host after queuing the
 * kernels that read it is only written by kernels queued later.
 *
 * On cudaMalloc failure the cache is emptied (after synchronizing) and the
 * request retried; if it still fails, the process aborts with the request,
 * the allocator's statistics and the device's free/total memory. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/cuda_common.h"

#define MIN_BLOCK 512
#define MAX_CLASSES 256

typedef struct free_block {
    void *p;
    struct free_block *next;
} free_block;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static free_block *g_free[MAX_CLASSES];
static mt_alloc_stats g_stats;
static free_block *g_spare; /* recycled list nodes */

/* Class index and size of a request. */
static int size_class(size_t n, size_t *class_size) {
    if (n < MIN_BLOCK) n = MIN_BLOCK;
    int e = 63 - __builtin_clzll((unsigned long long)n); /* 2^e <= n */
    size_t base = (size_t)1 << e;
    size_t step = base >> 2;
    size_t k = (n - base + step - 1) / step; /* 0..4 */
    size_t sz = base + k * step;
    int idx = e * 4 + (int)k;
    if (k == 4) {
        idx = (e + 1) * 4;
        sz = base << 1;
    }
    *class_size = sz;
    return idx < MAX_CLASSES ? idx : MAX_CLASSES - 1;
}

static void release_cache_locked(void) {
    for (int c = 0; c < MAX_CLASSES; c++) {
        while (g_free[c]) {
            free_block *b = g_free[c];
            g_free[c] = b->next;
            MT_CUDA_CHECK(cudaFree(b->p));
            b->next = g_spare;
            g_spare = b;
        }
    }
    g_stats.cached = 0;
}

extern "C" void *mt_cuda_alloc(size_t nbytes) {
    size_t sz;
    int c = size_class(nbytes, &sz);
    cudaStream_t s = mt_cuda_stream(); /* makes the device current */
    pthread_mutex_lock(&g_mu);
    void *p = NULL;
    if (g_free[c]) {
        free_block *b = g_free[c];
        g_free[c] = b->next;
        p = b->p;
        b->next = g_spare;
        g_spare = b;
        g_stats.cached -= (int64_t)sz;
    } else {
        cudaError_t e = cudaMalloc(&p, sz);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            MT_CUDA_CHECK(cudaStreamSynchronize(s));
            release_cache_locked();
            e = cudaMalloc(&p, sz);
        }
        if (e != cudaSuccess) {
            size_t fr = 0, tot = 0;
            (void)cudaGetLastError();
            (void)cudaMemGetInfo(&fr, &tot);
            pthread_mutex_unlock(&g_mu);
            mt_fatal(__FILE__, __LINE__,
                     "CUDA out of memory: could not allocate %.1f MiB (in use by medtrain %.1f MiB, "
                     "peak %.1f MiB; device free %.1f of %.1f MiB): %s. Reduce train.batch_size or "
                     "data.patch_size, or use train.precision: bf16-mixed",
                     sz / 1048576.0, g_stats.in_use / 1048576.0, g_stats.peak_in_use / 1048576.0,
                     fr / 1048576.0, tot / 1048576.0, cudaGetErrorString(e));
        }
        g_stats.sys_allocs++;
    }
    g_stats.in_use += (int64_t)sz;
    if (g_stats.in_use > g_stats.peak_in_use) g_stats.peak_in_use = g_stats.in_use;
    pthread_mutex_unlock(&g_mu);
    return p;
}

extern "C" void mt_cuda_free(void *p, size_t nbytes) {
    if (!p) return;
    size_t sz;
    int c = size_class(nbytes, &sz);
    pthread_mutex_lock(&g_mu);
    free_block *b = g_spare;
    if (b)
        g_spare = b->next;
    else
        b = (free_block *)malloc(sizeof *b);
    MT_CHECK(b);
    b->p = p;
    b->next = g_free[c];
    g_free[c] = b;
    g_stats.in_use -= (int64_t)sz;
    g_stats.cached += (int64_t)sz;
    pthread_mutex_unlock(&g_mu);
}

extern "C" void mt_cuda_alloc_stats(mt_alloc_stats *out) {
    pthread_mutex_lock(&g_mu);
    *out = g_stats;
    pthread_mutex_unlock(&g_mu);
}

extern "C" void mt_cuda_alloc_reset_peak(void) {
    pthread_mutex_lock(&g_mu);
    g_stats.peak_in_use = g_stats.in_use;
    pthread_mutex_unlock(&g_mu);
}

extern "C" void mt_cuda_alloc_empty_cache(void) {
    if (mt_cuda_device_count() == 0) return;
    MT_CUDA_CHECK(cudaStreamSynchronize(mt_cuda_stream()));
    pthread_mutex_lock(&g_mu);
    release_cache_locked();
    pthread_mutex_unlock(&g_mu);
}
