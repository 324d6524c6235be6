/* medtrain CUDA emulator: NCCL over MPI (include/nccl.h). A communicator
 * duplicates MPI_COMM_WORLD; its ranks must be the MPI ranks (as when each
 * process is one GPU). Checks what NCCL checks: the unique id agrees across
 * ranks, rank and size are consistent, buffers are device memory, the
 * communicator is live; and in-place or out-of-place f32/f64/i32 sums. */
#define OMPI_SKIP_MPICXX 1 /* the C API only */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nccl.h"

struct ncclComm {
    MPI_Comm comm;
    int rank, size;
    int dead;
};

extern "C" ncclResult_t ncclGetVersion(int *version) {
    *version = 22800; /* the API level emulated */
    return ncclSuccess;
}

extern "C" const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

static const char MAGIC[] = "mt-emu-nccl";

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, MAGIC, sizeof MAGIC);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long v[3] = {(long long)getpid(), (long long)ts.tv_sec, (long long)ts.tv_nsec};
    memcpy(id->internal + 16, v, sizeof v);
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *out, int nranks, ncclUniqueId id, int rank) {
    *out = NULL;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        mt_emu_report("NCCL", "ncclCommInitRank needs MPI (the emulator's NCCL runs over it)");
        return ncclSystemError;
    }
    if (memcmp(id.internal, MAGIC, sizeof MAGIC) != 0) {
        mt_emu_report("NCCL", "ncclCommInitRank: the unique id was not made by ncclGetUniqueId (rank %d)", rank);
        return ncclInvalidArgument;
    }
    int wsize = 0, wrank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    if (nranks != wsize || rank != wrank || rank < 0 || rank >= nranks) {
        mt_emu_report("NCCL", "ncclCommInitRank: rank %d of %d does not match the MPI world (rank %d of %d)", rank, nranks, wrank, wsize);
        return ncclInvalidArgument;
    }
    /* every rank must hold rank 0's id */
    ncclUniqueId root = id;
    MPI_Bcast(root.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
    int same = memcmp(root.internal, id.internal, NCCL_UNIQUE_ID_BYTES) == 0, all = 0;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) {
        mt_emu_report("NCCL", "ncclCommInitRank: ranks were given different unique ids (rank %d)", rank);
        return ncclInvalidUsage;
    }
    ncclComm *c = (ncclComm *)calloc(1, sizeof *c);
    MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    c->rank = rank, c->size = nranks;
    *out = c;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    if (!c->dead) MPI_Comm_free(&c->comm);
    free(c);
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    c->dead = 1; /* no collective on an abort: the peers may be gone */
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *e) {
    if (!c || !e) return ncclInvalidArgument;
    *e = ncclSuccess;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dt,
                                      ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    if (!c || c->dead) {
        mt_emu_report("NCCL", "ncclAllReduce on a destroyed or aborted communicator");
        return ncclInvalidUsage;
    }
    MPI_Datatype t;
    size_t es;
    switch (dt) {
    case ncclFloat32: t = MPI_FLOAT, es = 4; break;
    case ncclFloat64: t = MPI_DOUBLE, es = 8; break;
    case ncclInt32: t = MPI_INT, es = 4; break;
    default:
        mt_emu_report("NCCL", "ncclAllReduce: data type %d not emulated", (int)dt);
        return ncclInvalidArgument;
    }
    if (op != ncclSum) {
        mt_emu_report("NCCL", "ncclAllReduce: reduction %d not emulated (only ncclSum)", (int)op);
        return ncclInvalidArgument;
    }
    if (count == 0) return ncclSuccess;
    if (!mt_emu_is_device_ptr(send, count * es) || !mt_emu_is_device_ptr(recv, count * es)) {
        mt_emu_report("NCCL", "ncclAllReduce: a buffer is not device memory of %zu elements", count);
        return ncclInvalidArgument;
    }
    if (count > (size_t)0x7fffffff) return ncclInvalidArgument;
    mt_emu_stream_flush(stream); /* what the stream waits for (its events) runs first */
    int r = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, t, MPI_SUM, c->comm);
    return r == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
