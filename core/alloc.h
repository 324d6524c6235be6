/* Caching host allocator.
 *
 * Blocks are 64-byte aligned and rounded up to size classes (powers of two
 * split into 4 steps); freed blocks go to per-class free lists and are reused,
 * so a steady-state training step makes no calls to malloc. Thread-safe.
 * Statistics: bytes in use, peak in use, bytes cached, number of real
 * allocations (to verify the steady state).
 */
#ifndef MT_ALLOC_H
#define MT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_alloc_stats {
    int64_t in_use;       /* bytes handed out and not yet returned */
    int64_t peak_in_use;  /* high-water mark of in_use */
    int64_t cached;       /* bytes held in free lists */
    int64_t sys_allocs;   /* number of allocations that reached the system */
} mt_alloc_stats;

void *mt_host_alloc(size_t nbytes);
void mt_host_free(void *p, size_t nbytes);
void mt_host_alloc_stats(mt_alloc_stats *out);
void mt_host_alloc_reset_peak(void);
/* Returns all cached blocks to the system. */
void mt_host_alloc_empty_cache(void);
/* Size actually reserved for a request of nbytes (its size class). */
size_t mt_host_alloc_class(size_t nbytes);

#ifdef __cplusplus
}
#endif
#endif
