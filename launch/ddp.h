/* Data-parallel gradient reduction (PyTorch DDP's reducer, on launch/dist.h).
 *
 * mt_ddp_init broadcasts the model's parameters and buffers from rank 0 (so
 * every rank starts from rank 0's weights) and groups the parameters into
 * buckets in REVERSE registration order (the order backward makes their
 * gradients ready): the first bucket holds up to first_bucket_mb MiB, the
 * others up to bucket_mb MiB (a parameter larger than a bucket gets its own).
 * Each bucket has one flat f32 buffer: host memory for MPI, GPU memory for
 * NCCL (mt_ddp_use_nccl).
 *
 * During mt_backward the per-parameter "gradient ready" hook copies the
 * gradient into its bucket slot; when a bucket's last parameter is ready its
 * non-blocking all-reduce starts (overlapping the rest of backward).
 * mt_ddp_finish, called after mt_backward and before the optimizer, starts
 * every bucket not started yet (parameters that received no gradient this
 * step contribute zeros, and their .grad is created as zeros), waits for all,
 * divides by the world size (the mean over ranks, as PyTorch DDP) and copies
 * the result back into each parameter's .grad. So every parameter is reduced
 * exactly once per step, on every rank, in the same bucket order.
 *
 * One backward per step (no gradient accumulation over several backwards).
 * Buffers (BatchNorm running statistics, updated by each rank's forward) are
 * broadcast from rank 0 by mt_ddp_sync_buffers (PyTorch DDP's
 * broadcast_buffers, done after the step rather than before the forward),
 * so evaluation and saved weights agree on every rank. With one rank the
 * reducer still works (all-reduce = no-op).
 */
#ifndef MT_DDP_H
#define MT_DDP_H

#include <stdint.h>

#include "core/status.h"
#include "launch/dist.h"
#include "launch/nccl.h"
#include "layers/module.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_ddp mt_ddp;

/* Broadcasts m's parameters and buffers from rank 0, builds the buckets and
 * installs the gradient hooks on every parameter of m (replacing any). */
mt_status mt_ddp_init(mt_ddp **out, mt_dist *d, mt_module *m, double bucket_mb, double first_bucket_mb);

/* Switches r to NCCL (launch/nccl.h) before the first step: the buckets become
 * flat f32 GPU tensors, filled by device copies in the hooks, reduced on the
 * NCCL stream (ordered after the copies by an event), averaged and copied
 * back on the GPU; c stays owned by the caller. The parameters must be on
 * the GPU. */
mt_status mt_ddp_use_nccl(mt_ddp *r, mt_nccl *c);

/* After mt_backward: reduce every bucket and write the averaged gradients
 * into .grad. Resets the per-step state. */
mt_status mt_ddp_finish(mt_ddp *r);

/* Broadcasts the model's buffers from rank 0 (one message; no-op without
 * buffers or with one rank). Call after each step's forward. */
mt_status mt_ddp_sync_buffers(mt_ddp *r);

int mt_ddp_num_buckets(const mt_ddp *r);
/* Parameters in bucket b, and the parameter index (registration order) of its k-th. */
int mt_ddp_bucket_size(const mt_ddp *r, int b);
int mt_ddp_bucket_param(const mt_ddp *r, int b, int k);
/* How often parameter i (registration order) was reduced since init. */
int64_t mt_ddp_reduce_count(const mt_ddp *r, int i);
/* Buckets whose all-reduce started from the hook during backward (since init). */
int64_t mt_ddp_started_in_backward(const mt_ddp *r);

/* Removes the hooks and frees r (NULL ok). */
void mt_ddp_free(mt_ddp *r);

#ifdef __cplusplus
}
#endif
#endif
