/* NCCL communicator for GPU ranks (launch/nccl.h). */
#include "launch/nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef MT_HAVE_NCCL
#include <nccl.h>

#include "core/cuda/cuda_common.h"

#define MT_NCCL_CHECK(expr)                                                               \
    do {                                                                                  \
        ncclResult_t mt_r_ = (expr);                                                      \
        if (mt_r_ != ncclSuccess)                                                         \
            mt_fatal(__FILE__, __LINE__, "NCCL call failed: %s: %s", #expr,               \
                     ncclGetErrorString(mt_r_));                                          \
    } while (0)

struct mt_nccl {
    mt_dist *d;
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t ready, done;
    int pending; /* all-reduces queued since the last wait */
    double timeout_s;
    int aborted;
};

int mt_nccl_available(void) { return 1; }

const char *mt_nccl_version(void) {
    static char buf[32];
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
    snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mt_status mt_nccl_init(mt_nccl **out, mt_dist *d, double timeout_s) {
    *out = NULL;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (d->rank == 0) MT_NCCL_CHECK(ncclGetUniqueId(&id));
    mt_status s = mt_dist_broadcast(d, &id, sizeof id);
    if (s != MT_OK) return mt_error_prefix(s, "NCCL setup (broadcasting the unique id): ");
    mt_nccl *c = calloc(1, sizeof *c);
    MT_CHECK(c);
    c->d = d;
    c->timeout_s = timeout_s;
    (void)mt_cuda_stream(); /* the device is current and the compute stream exists */
    int lo = 0, hi = 0;
    MT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    /* the highest priority, so reductions are not starved by backward kernels */
    MT_CUDA_CHECK(cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking, hi));
    MT_CUDA_CHECK(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
    MT_CUDA_CHECK(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
    ncclResult_t r = ncclCommInitRank(&c->comm, d->world, id, d->rank);
    if (r != ncclSuccess) {
        cudaEventDestroy(c->ready);
        cudaEventDestroy(c->done);
        cudaStreamDestroy(c->stream);
        free(c);
        return mt_error_set(MT_ERR_INVALID,
                            "rank %d: NCCL communicator of %d ranks could not be created: %s (one GPU per "
                            "rank is required; use distributed.backend: mpi to share GPUs)",
                            d->rank, d->world, ncclGetErrorString(r));
    }
    *out = c;
    return MT_OK;
}

mt_status mt_nccl_allreduce_start(mt_nccl *c, mt_tensor *buf) {
    MT_CHECK_MSG(buf->dtype == MT_F32 && mt_tensor_is_contiguous(buf) &&
                     mt_tensor_device(buf).type == MT_CUDA,
                 "nccl all-reduce: buffer must be a contiguous f32 GPU tensor");
    if (c->aborted) return mt_error_set(MT_ERR_INVALID, "rank %d: NCCL communicator was aborted", c->d->rank);
    MT_CUDA_CHECK(cudaEventRecord(c->ready, mt_cuda_stream()));
    MT_CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->ready, 0));
    void *p = mt_tensor_data(buf);
    ncclResult_t r = ncclAllReduce(p, p, (size_t)mt_tensor_numel(buf), ncclFloat, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess) {
        ncclCommAbort(c->comm);
        c->aborted = 1;
        return mt_error_set(MT_ERR_INVALID, "rank %d: NCCL all-reduce of %lld floats failed: %s", c->d->rank,
                            (long long)mt_tensor_numel(buf), ncclGetErrorString(r));
    }
    c->pending++;
    return MT_OK;
}

mt_status mt_nccl_wait(mt_nccl *c) {
    if (c->aborted) return mt_error_set(MT_ERR_INVALID, "rank %d: NCCL communicator was aborted", c->d->rank);
    if (c->pending == 0) return MT_OK;
    MT_CUDA_CHECK(cudaEventRecord(c->done, c->stream));
    MT_CUDA_CHECK(cudaStreamWaitEvent(mt_cuda_stream(), c->done, 0));
    double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) MT_CUDA_CHECK(e);
        ncclResult_t ae = ncclSuccess;
        MT_NCCL_CHECK(ncclCommGetAsyncError(c->comm, &ae));
        if (ae != ncclSuccess && ae != ncclInProgress) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return mt_error_set(MT_ERR_INVALID, "rank %d: NCCL all-reduce failed (a peer may have died): %s",
                                c->d->rank, ncclGetErrorString(ae));
        }
        if (c->timeout_s > 0 && now_s() - t0 > c->timeout_s) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return mt_error_set(MT_ERR_INVALID,
                                "rank %d: NCCL all-reduce did not finish within distributed.timeout_s = %g s "
                                "(another rank stopped or hangs)",
                                c->d->rank, c->timeout_s);
        }
        struct timespec ts = {0, 20000}; /* 20 us */
        nanosleep(&ts, NULL);
    }
    c->pending = 0;
    return MT_OK;
}

void mt_nccl_free(mt_nccl *c) {
    if (!c) return;
    if (c->aborted) {
        /* already aborted: nothing more may be called on the communicator */
    } else {
        cudaStreamSynchronize(c->stream);
        ncclCommDestroy(c->comm);
    }
    cudaEventDestroy(c->ready);
    cudaEventDestroy(c->done);
    cudaStreamDestroy(c->stream);
    free(c);
}

#else /* no NCCL in this build */

struct mt_nccl {
    int unused;
};

int mt_nccl_available(void) { return 0; }
const char *mt_nccl_version(void) { return "none"; }

mt_status mt_nccl_init(mt_nccl **out, mt_dist *d, double timeout_s) {
    (void)d;
    (void)timeout_s;
    *out = NULL;
    return mt_error_set(MT_ERR_UNSUPPORTED,
                        "this medtrain was built without NCCL (needs the CUDA backend and nccl.h / "
                        "libnccl at configure time; MT_NCCL_ROOT); use distributed.backend: mpi");
}

mt_status mt_nccl_allreduce_start(mt_nccl *c, mt_tensor *buf) {
    (void)c;
    (void)buf;
    return mt_error_set(MT_ERR_UNSUPPORTED, "NCCL is not built in");
}

mt_status mt_nccl_wait(mt_nccl *c) {
    (void)c;
    return MT_OK;
}

void mt_nccl_free(mt_nccl *c) { (void)c; }

#endif
