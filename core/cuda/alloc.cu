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
 * the allocator's statistics and the device's free/total memory.
 *
 * A second cache of the same kind holds page-locked host memory
 * (cudaHostAlloc) for mt_tensor_new_pinned (core/tensor.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/cuda_common.h"

#define MIN_BLOCK 512
#define MAX_CLASSES 256

typedef struct free_block {
    void *p;
    struct free_block *next;
    cudaEvent_t ev; /* pinned cache: recorded on the compute stream at free */
} free_block;

/* One cache: device memory (cudaMalloc) or page-locked host memory
 * (cudaHostAlloc, for the loader's batches: mt_tensor_new_pinned). */
typedef struct {
    int pinned;
    pthread_mutex_t mu;
    free_block *free_list[MAX_CLASSES];
    mt_alloc_stats stats;
    free_block *spare; /* recycled list nodes */
} cache;

static cache g_dev = {0, PTHREAD_MUTEX_INITIALIZER, {0}, {0, 0, 0, 0}, NULL};
static cache g_host = {1, PTHREAD_MUTEX_INITIALIZER, {0}, {0, 0, 0, 0}, NULL};

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

static void release_cache_locked(cache *c) {
    for (int k = 0; k < MAX_CLASSES; k++) {
        while (c->free_list[k]) {
            free_block *b = c->free_list[k];
            c->free_list[k] = b->next;
            if (c->pinned)
                MT_CUDA_CHECK(cudaFreeHost(b->p));
            else
                MT_CUDA_CHECK(cudaFree(b->p));
            b->next = c->spare;
            c->spare = b;
        }
    }
    c->stats.cached = 0;
}

static cudaError_t sys_alloc(const cache *c, void **p, size_t sz) {
    return c->pinned ? cudaHostAlloc(p, sz, cudaHostAllocDefault) : cudaMalloc(p, sz);
}

static void *cache_alloc(cache *c, size_t nbytes) {
    size_t sz;
    int k = size_class(nbytes, &sz);
    cudaStream_t s = mt_cuda_stream(); /* makes the device current */
    pthread_mutex_lock(&c->mu);
    void *p = NULL;
    /* Device blocks are reusable at once (stream order); a pinned block only
     * once the copies queued before its free have finished (its event). */
    free_block **pp = &c->free_list[k];
    while (*pp && c->pinned && cudaEventQuery((*pp)->ev) != cudaSuccess) pp = &(*pp)->next;
    (void)cudaGetLastError(); /* cudaErrorNotReady is not an error */
    if (*pp) {
        free_block *b = *pp;
        *pp = b->next;
        p = b->p;
        b->next = c->spare;
        c->spare = b;
        c->stats.cached -= (int64_t)sz;
    } else {
        cudaError_t e = sys_alloc(c, &p, sz);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            MT_CUDA_CHECK(cudaStreamSynchronize(s));
            release_cache_locked(c);
            e = sys_alloc(c, &p, sz);
        }
        if (e != cudaSuccess) {
            size_t fr = 0, tot = 0;
            (void)cudaGetLastError();
            if (!c->pinned) (void)cudaMemGetInfo(&fr, &tot);
            pthread_mutex_unlock(&c->mu);
            if (c->pinned)
                mt_fatal(__FILE__, __LINE__,
                         "out of page-locked host memory: could not allocate %.1f MiB (%.1f MiB in use): %s",
                         sz / 1048576.0, c->stats.in_use / 1048576.0, cudaGetErrorString(e));
            mt_fatal(__FILE__, __LINE__,
                     "CUDA out of memory: could not allocate %.1f MiB (in use by medtrain %.1f MiB, "
                     "peak %.1f MiB; device free %.1f of %.1f MiB): %s. Reduce train.batch_size or "
                     "data.patch_size, or use train.precision: bf16-mixed",
                     sz / 1048576.0, c->stats.in_use / 1048576.0, c->stats.peak_in_use / 1048576.0,
                     fr / 1048576.0, tot / 1048576.0, cudaGetErrorString(e));
        }
        c->stats.sys_allocs++;
    }
    c->stats.in_use += (int64_t)sz;
    if (c->stats.in_use > c->stats.peak_in_use) c->stats.peak_in_use = c->stats.in_use;
    pthread_mutex_unlock(&c->mu);
    return p;
}

static void cache_free(cache *c, void *p, size_t nbytes) {
    if (!p) return;
    size_t sz;
    int k = size_class(nbytes, &sz);
    pthread_mutex_lock(&c->mu);
    free_block *b = c->spare;
    if (b) {
        c->spare = b->next;
    } else {
        b = (free_block *)calloc(1, sizeof *b);
        MT_CHECK(b);
        if (c->pinned) MT_CUDA_CHECK(cudaEventCreateWithFlags(&b->ev, cudaEventDisableTiming));
    }
    if (c->pinned) MT_CUDA_CHECK(cudaEventRecord(b->ev, mt_cuda_stream()));
    b->p = p;
    b->next = c->free_list[k];
    c->free_list[k] = b;
    c->stats.in_use -= (int64_t)sz;
    c->stats.cached += (int64_t)sz;
    pthread_mutex_unlock(&c->mu);
}

extern "C" void *mt_cuda_alloc(size_t nbytes) { return cache_alloc(&g_dev, nbytes); }
extern "C" void mt_cuda_free(void *p, size_t nbytes) { cache_free(&g_dev, p, nbytes); }

/* A pinned block freed by the host may still be the source of a copy queued
 * on the compute stream (memcpy_pinned_to_device): its free records an event
 * on that stream, and the block is handed out again only after the event. */
extern "C" void *mt_cuda_host_alloc_pinned(size_t nbytes) { return cache_alloc(&g_host, nbytes); }
extern "C" void mt_cuda_host_free_pinned(void *p, size_t nbytes) { cache_free(&g_host, p, nbytes); }

extern "C" void mt_cuda_alloc_stats(mt_alloc_stats *out) {
    pthread_mutex_lock(&g_dev.mu);
    *out = g_dev.stats;
    pthread_mutex_unlock(&g_dev.mu);
}

extern "C" void mt_cuda_alloc_reset_peak(void) {
    pthread_mutex_lock(&g_dev.mu);
    g_dev.stats.peak_in_use = g_dev.stats.in_use;
    pthread_mutex_unlock(&g_dev.mu);
}

extern "C" void mt_cuda_alloc_empty_cache(void) {
    if (mt_cuda_device_count() == 0) return;
    MT_CUDA_CHECK(cudaStreamSynchronize(mt_cuda_stream()));
    for (cache *c : {&g_dev, &g_host}) {
        pthread_mutex_lock(&c->mu);
        release_cache_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
}
