/* Training data loader: worker threads that sample and augment whole
 * batches ahead of the training step.
 *
 * Batch k (the global step index) is a pure function of (sampler, augment
 * config, seed, rank, k): it is produced from its own rng stream
 * mt_rng_init_stream(seed, rank, k, MT_LOADER_STREAM_TAG), never from a
 * worker's state. So the batches are bit-identical for any number of
 * workers and across runs, different ranks see different patches, and a run
 * resumed with start_step = k continues with exactly the batches k, k+1, ...
 * of an uninterrupted run.
 *
 * Workers take step indices in increasing order from a shared counter and
 * deliver batch k into slot k % queue_capacity of a ring; the consumer takes
 * batches strictly in step order (mt_loader_next). A worker waits before it
 * starts step k until batch k - queue_capacity has been taken, so at most
 * queue_capacity batches exist ahead of the consumer (produced or in flight).
 *
 * One sample of a batch (in this order on the batch stream):
 *   augment parameters (mt_augment_draw), case index (uniform), foreground
 *   flag (probability sampler->cfg.fg_prob), then mt_sampler_patch for the
 *   placement (and, if the sampler flips, its flips); then
 *   - no augmentation flips / rot90 / rotation / scaling / elastic drawn:
 *     the sampler's patch is the output;
 *   - only flips / rot90: the sampler's patch, index-permuted (exact);
 *   - rotation, scaling or elastic: the patch is re-read from the whole
 *     case volume through the combined coordinate map around the placed
 *     patch's centre (data/augment.h), so it shows real tissue where the
 *     sampler's patch would end;
 *   then the intensity transforms run.
 * Patch size, batch size, foreground probability, pad value and flips of the
 * sampler itself come from the sampler's config.
 *
 * Errors: a failure while producing batch k (e.g. the batch allocator fails)
 * is delivered to the consumer as the status of mt_loader_next for batch k,
 * with the worker's message; batches before k are delivered normally, and
 * after the failure every call returns that error. Nothing blocks forever:
 * mt_loader_free stops the workers (they check between samples), joins them
 * and releases every batch still queued.
 */
#ifndef MT_LOADER_H
#define MT_LOADER_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "data/augment.h"
#include "data/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_LOADER_STREAM_TAG 0x4c4f4144ull /* "LOAD" */

/* Allocates one batch tensor (contiguous, host-accessible, uninitialised) of
 * the given dtype and shape into *out, or returns an error status. Called
 * from worker threads concurrently: must be thread-safe. The hook for pinned
 * memory: with CUDA, pass an allocator returning tensors in page-locked host
 * memory so the host-to-device copy of a batch can run asynchronously. NULL
 * means mt_tensor_new on the CPU. */
typedef mt_status (*mt_loader_alloc_fn)(mt_tensor **out, mt_dtype dtype, int ndim, const int64_t *shape, void *ctx);

typedef struct {
    int num_workers;          /* worker threads, 1 .. 256 (default 2) */
    int queue_capacity;       /* batches ahead of the consumer, 1 .. 1024 (default 4) */
    mt_loader_alloc_fn alloc; /* batch allocation hook, NULL: CPU tensors */
    void *alloc_ctx;
    /* Tests of data-parallel training only (default 0 = off): with
     * shard_world > 1, batch k of rank r (< shard_world) holds the samples
     * r, r + shard_world, ... of the batch of batch_size * shard_world samples
     * that rank 0 draws in a single-rank run, so shard_world ranks with
     * batch B see exactly the samples of one rank with batch B * shard_world. */
    int shard_world;
} mt_loader_config;

typedef struct {
    int64_t batches;      /* batches handed to the consumer */
    int64_t produced;     /* batches the workers finished (delivered or queued) */
    double wait_s;        /* time the consumer spent waiting in mt_loader_next */
    double produce_s;     /* summed worker wall time spent producing batches */
    double produce_cpu_s; /* summed worker CPU time spent producing batches (the cost
                           * of the augmentation independent of other load) */
} mt_loader_stats;

typedef struct mt_loader mt_loader;

void mt_loader_config_default(mt_loader_config *cfg);

/* Starts the workers. The sampler (with at least one case) and its cases must
 * stay alive and unchanged until mt_loader_free; the configs are copied.
 * rank >= 0, start_step >= 0. On error *out is NULL. */
mt_status mt_loader_init(mt_loader **out, const mt_loader_config *cfg, const mt_sampler *sampler,
                         const mt_augment_config *aug, uint64_t seed, int rank, int64_t start_step);

/* Blocks until the next batch (in step order) is ready; new references in
 * *images and *labels. On error both are NULL and the status names the
 * step and cause. */
mt_status mt_loader_next(mt_loader *L, mt_tensor **images /* (N, C, d, h, w) f32 */,
                         mt_tensor **labels /* (N, 1, d, h, w) u8 */);

/* Step index of the batch the next mt_loader_next returns (for checkpoints:
 * resume with start_step = this value). */
int64_t mt_loader_step(const mt_loader *L);
void mt_loader_get_stats(const mt_loader *L, mt_loader_stats *out);

/* Produces batch `step` on the calling thread, exactly as a worker would
 * (same bits): for tests and single-threaded use. New references. */
mt_status mt_loader_make_batch(mt_tensor **images /* (N, C, d, h, w) f32 */,
                               mt_tensor **labels /* (N, 1, d, h, w) u8 */, const mt_sampler *sampler,
                               const mt_augment_config *aug, uint64_t seed, int rank, int64_t step);

/* Stops and joins the workers, releases queued batches and frees L (NULL ok). */
void mt_loader_free(mt_loader *L);

#ifdef __cplusplus
}
#endif
#endif
