/* Distributed communication (DESIGN.md decision 7): ranks come from MPI.
 *
 * One process-wide communicator, mt_dist_get():
 *  - started by mpirun (environment OMPI_COMM_WORLD_SIZE, PMIX_RANK or
 *    PMI_SIZE present): MPI_Init_thread, MPI_COMM_WORLD with
 *    MPI_ERRORS_RETURN. A failing collective (e.g. a peer died) returns an
 *    mt_status naming the operation and rank; failures of internal MPI calls
 *    (rank, size, communicator setup) abort through MT_MPI_CHECK, which prints
 *    the call. MPI_Finalize runs at exit.
 *  - otherwise: no MPI at all (world 1, rank 0; reductions leave the buffer
 *    as it is, broadcast and barrier do nothing), so `medtrain CONFIG.yaml`
 *    needs no MPI daemon.
 *
 * Timeout: with MPI, a watchdog thread aborts the whole job (MPI_Abort) when
 * a blocking collective, or the wait for a non-blocking one, has not finished
 * within timeout_s seconds (distributed.timeout_s), printing the operation
 * and rank. This is how the other ranks end when one rank exits early.
 *
 * This is the MPI implementation on host memory (the CPU, or GPU ranks whose
 * gradients are staged through host buffers by launch/ddp.c); NCCL is not
 * implemented yet.
 * Calls are made from one thread (the training thread).
 */
#ifndef MT_DIST_H
#define MT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int rank;        /* 0 .. world - 1 */
    int world;       /* number of ranks (1 without mpirun) */
    int local_rank;  /* rank among the processes of this node */
    int local_world; /* processes on this node */
    int use_mpi;     /* 1: started by mpirun, MPI initialised */
    double timeout_s;
} mt_dist;

typedef enum { MT_DIST_SUM = 0, MT_DIST_MAX = 1, MT_DIST_MIN = 2 } mt_dist_op;

/* Pending non-blocking all-reduce (mt_dist_iallreduce_f32). */
typedef struct mt_dist_request mt_dist_request;

/* Whether this process was started by an MPI launcher (environment). */
int mt_dist_launched_by_mpi(void);

/* The process-wide communicator; initialises MPI on the first call when the
 * process was started by mpirun. Never NULL. */
mt_dist *mt_dist_get(void);

/* Timeout of collectives in seconds (default 300); <= 0: none. */
void mt_dist_set_timeout(mt_dist *d, double seconds);

/* In-place all-reduce over all ranks (blocking). */
mt_status mt_dist_allreduce_f32(mt_dist *d, float *buf, int64_t n, mt_dist_op op);
mt_status mt_dist_allreduce_f64(mt_dist *d, double *buf, int64_t n, mt_dist_op op);
mt_status mt_dist_allreduce_i64(mt_dist *d, int64_t *buf, int64_t n, mt_dist_op op);

/* Starts an in-place f32 sum all-reduce; buf must stay alive and untouched
 * until mt_dist_wait(*req). Without MPI *req is a completed request. */
mt_status mt_dist_iallreduce_f32(mt_dist *d, float *buf, int64_t n, mt_dist_request **req);
/* Lets MPI progress pending requests without blocking (may be called often). */
void mt_dist_progress(mt_dist *d, mt_dist_request *req);
/* Waits for req to complete and frees it (NULL is a no-op). The timeout applies. */
mt_status mt_dist_wait(mt_dist *d, mt_dist_request *req);

/* Broadcasts n bytes from rank 0 into buf on every other rank. */
mt_status mt_dist_broadcast(mt_dist *d, void *buf, size_t n);
mt_status mt_dist_barrier(mt_dist *d);

/* Prints "medtrain: rank R: msg" to stderr and ends the whole job with
 * exit code `code` (MPI_Abort with MPI, exit() without). */
void mt_dist_abort(mt_dist *d, int code, const char *msg) __attribute__((noreturn));

/* GPU of a rank (run.device cuda with MPI ranks): the rank with node-local
 * index local_rank of local_world ranks on a node with n_gpus GPUs uses
 * cuda:<local_rank>. More ranks than GPUs on the node is an error
 * (MT_ERR_INVALID naming distributed.allow_gpu_sharing) unless
 * allow_sharing, which shares them round-robin: cuda:<local_rank mod n_gpus>. */
mt_status mt_dist_gpu_index(int local_rank, int local_world, int n_gpus, int allow_sharing, int *index);

/* Finalises MPI (also registered with atexit; idempotent). */
void mt_dist_finalize(void);

#ifdef __cplusplus
}
#endif
#endif
