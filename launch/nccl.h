/* NCCL gradient all-reduce for GPU ranks (DESIGN.md decision 7; issue 5).
 *
 * One communicator over all MPI ranks, bootstrapped by broadcasting rank 0's
 * ncclUniqueId with MPI (launch/dist.h). Collectives run on the
 * communicator's own CUDA stream: mt_nccl_allreduce_start records an event on
 * the compute stream (core/cuda: mt_cuda_stream) and makes the NCCL stream
 * wait for it, so the reduction reads the gradients the compute stream wrote
 * before the call, while later backward kernels keep running. mt_nccl_wait
 * records an event after the queued reductions, makes the compute stream wait
 * for it (the optimizer sees reduced gradients) and waits for it on the host,
 * polling ncclCommGetAsyncError: a failed peer (NCCL error) or a wait longer
 * than the timeout aborts the communicator and returns an error naming the
 * rank, so the job ends instead of hanging.
 *
 * Built only with the CUDA backend and NCCL (MT_HAVE_NCCL); otherwise
 * mt_nccl_available() is 0 and mt_nccl_init fails with a clear message. */
#ifndef MT_NCCL_H
#define MT_NCCL_H

#include "core/tensor.h"
#include "launch/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_nccl mt_nccl;

/* 1 when this medtrain was built with NCCL. */
int mt_nccl_available(void);
/* The NCCL version as "2.28.3", or "none". */
const char *mt_nccl_version(void);

/* Collective over all ranks of d on the current CUDA device (each rank its
 * own GPU: NCCL refuses two ranks on one device). Collective: every rank calls
 * it. timeout_s <= 0: wait forever. */
mt_status mt_nccl_init(mt_nccl **out, mt_dist *d, double timeout_s);

/* Queues an in-place sum all-reduce of buf (f32, contiguous, on the GPU). */
mt_status mt_nccl_allreduce_start(mt_nccl *c, mt_tensor *buf /* (n) */);

/* Waits for every queued all-reduce (see above). */
mt_status mt_nccl_wait(mt_nccl *c);

void mt_nccl_free(mt_nccl *c);

#ifdef __cplusplus
}
#endif
#endif
