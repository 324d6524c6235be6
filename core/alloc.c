#include "core/alloc.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/status.h"

#define MT_ALIGN 64
#define MT_NUM_CLASSES 256

typedef struct free_block {
    struct free_block *next;
} free_block;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static free_block *g_free[MT_NUM_CLASSES];
static mt_alloc_stats g_stats;

/* Size classes: for 2^k <= n, classes 2^k * (1 + i/4), i = 0..3. Minimum 64 B. */
static int size_class(size_t n, size_t *class_size) {
    if (n < MT_ALIGN) n = MT_ALIGN;
    int k = 63 - __builtin_clzll((unsigned long long)n);
    size_t base = (size_t)1 << k;
    size_t step = base >> 2;
    size_t i = 0;
    if (n > base) i = (n - base + step - 1) / step;
    if (i == 4) {
        k += 1;
        base <<= 1;
        i = 0;
    }
    *class_size = base + i * (base >> 2);
    return k * 4 + (int)i;
}

size_t mt_host_alloc_class(size_t nbytes) {
    size_t cs;
    size_class(nbytes, &cs);
    return cs;
}

void *mt_host_alloc(size_t nbytes) {
    size_t cs;
    int c = size_class(nbytes, &cs);
    MT_CHECK(c < MT_NUM_CLASSES);
    pthread_mutex_lock(&g_lock);
    free_block *b = g_free[c];
    if (b) {
        g_free[c] = b->next;
        g_stats.cached -= (int64_t)cs;
    }
    g_stats.in_use += (int64_t)cs;
    if (g_stats.in_use > g_stats.peak_in_use) g_stats.peak_in_use = g_stats.in_use;
    if (!b) g_stats.sys_allocs++;
    pthread_mutex_unlock(&g_lock);
    if (b) return b;
    void *p = NULL;
    if (posix_memalign(&p, MT_ALIGN, cs) != 0 || !p) {
        /* Free the cache and retry once before giving up. */
        mt_host_alloc_empty_cache();
        if (posix_memalign(&p, MT_ALIGN, cs) != 0 || !p)
            mt_fatal(__FILE__, __LINE__, "out of host memory allocating %zu bytes", cs);
    }
    return p;
}

void mt_host_free(void *p, size_t nbytes) {
    if (!p) return;
    size_t cs;
    int c = size_class(nbytes, &cs);
    pthread_mutex_lock(&g_lock);
    free_block *b = (free_block *)p;
    b->next = g_free[c];
    g_free[c] = b;
    g_stats.in_use -= (int64_t)cs;
    g_stats.cached += (int64_t)cs;
    pthread_mutex_unlock(&g_lock);
}

void mt_host_alloc_stats(mt_alloc_stats *out) {
    pthread_mutex_lock(&g_lock);
    *out = g_stats;
    pthread_mutex_unlock(&g_lock);
}

void mt_host_alloc_reset_peak(void) {
    pthread_mutex_lock(&g_lock);
    g_stats.peak_in_use = g_stats.in_use;
    pthread_mutex_unlock(&g_lock);
}

void mt_host_alloc_empty_cache(void) {
    pthread_mutex_lock(&g_lock);
    for (int c = 0; c < MT_NUM_CLASSES; c++) {
        free_block *b = g_free[c];
        while (b) {
            free_block *n = b->next;
            free(b);
            b = n;
        }
        g_free[c] = NULL;
    }
    g_stats.cached = 0;
    pthread_mutex_unlock(&g_lock);
}
