/* MPI communicator and the no-MPI single-process fallback (launch/dist.h). */
#include "launch/dist.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Internal MPI calls: abort printing the call, its error string and the rank. */
#define MT_MPI_CHECK(call)                                                                          \
    do {                                                                                            \
        int mt_mpi_rc_ = (call);                                                                    \
        if (mt_mpi_rc_ != MPI_SUCCESS) {                                                            \
            char mt_mpi_msg_[MPI_MAX_ERROR_STRING];                                                 \
            int mt_mpi_len_ = 0;                                                                    \
            MPI_Error_string(mt_mpi_rc_, mt_mpi_msg_, &mt_mpi_len_);                                \
            mt_fatal(__FILE__, __LINE__, "%s failed on rank %d: %s", #call, g_dist.rank, mt_mpi_msg_); \
        }                                                                                           \
    } while (0)

struct mt_dist_request {
    MPI_Request req;
    int done;
};

static mt_dist g_dist = {0, 1, 0, 1, 0, 300.0};
static int g_inited = 0;
static int g_finalized = 0;
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- watchdog: the op in flight (NULL: none) and since when ---- */
static const char *g_op = NULL;
static int64_t g_op_t0_ns = 0;
static pthread_t g_watchdog;
static int g_watchdog_on = 0;
static int g_watchdog_stop = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void op_begin(const char *op) {
    __atomic_store_n(&g_op_t0_ns, now_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&g_op, op, __ATOMIC_RELEASE);
}
static void op_end(void) { __atomic_store_n(&g_op, (const char *)NULL, __ATOMIC_RELEASE); }

static void *watchdog_main(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&g_watchdog_stop, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
        const char *op = __atomic_load_n(&g_op, __ATOMIC_ACQUIRE);
        double limit = g_dist.timeout_s;
        if (!op || limit <= 0) continue;
        double waited = 1e-9 * (double)(now_ns() - __atomic_load_n(&g_op_t0_ns, __ATOMIC_RELAXED));
        if (waited > limit && __atomic_load_n(&g_op, __ATOMIC_ACQUIRE) == op) {
            fprintf(stderr,
                    "medtrain: rank %d of %d: %s did not finish within %g s (distributed.timeout_s): another rank "
                    "failed or exited; aborting the job\n",
                    g_dist.rank, g_dist.world, op, limit);
            fflush(stderr);
            alarm(10); /* should MPI_Abort itself block (a loaded launcher), SIGALRM ends us */
            MPI_Abort(MPI_COMM_WORLD, 3);
            _exit(3);
        }
    }
    return NULL;
}

int mt_dist_launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE") || getenv("PMI_RANK");
}

void mt_dist_finalize(void) {
    pthread_mutex_lock(&g_init_lock);
    if (g_dist.use_mpi && !g_finalized) {
        if (g_watchdog_on) {
            __atomic_store_n(&g_watchdog_stop, 1, __ATOMIC_RELEASE);
            pthread_join(g_watchdog, NULL);
            g_watchdog_on = 0;
        }
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
        g_finalized = 1;
    }
    pthread_mutex_unlock(&g_init_lock);
}

static void init_mpi(void) {
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "medtrain: MPI_Init_thread failed (error %d)\n", rc);
        exit(1);
    }
    g_dist.use_mpi = 1;
    MT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g_dist.rank));
    MT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &g_dist.world));
    MPI_Comm node;
    MT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_dist.rank, MPI_INFO_NULL, &node));
    MT_MPI_CHECK(MPI_Comm_rank(node, &g_dist.local_rank));
    MT_MPI_CHECK(MPI_Comm_size(node, &g_dist.local_world));
    MT_MPI_CHECK(MPI_Comm_free(&node));
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (lr && *lr) g_dist.local_rank = atoi(lr);
    atexit(mt_dist_finalize);
    if (pthread_create(&g_watchdog, NULL, watchdog_main, NULL) == 0) g_watchdog_on = 1;
}

mt_dist *mt_dist_get(void) {
    pthread_mutex_lock(&g_init_lock);
    if (!g_inited) {
        g_inited = 1;
        if (mt_dist_launched_by_mpi()) init_mpi();
    }
    pthread_mutex_unlock(&g_init_lock);
    return &g_dist;
}

void mt_dist_set_timeout(mt_dist *d, double seconds) { d->timeout_s = seconds; }

/* A failed collective: a status naming the op and rank. */
static mt_status mpi_error(const mt_dist *d, const char *op, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return mt_error_set(MT_ERR_IO, "%s failed on rank %d of %d: %s", op, d->rank, d->world, msg);
}

static MPI_Op mpi_op(mt_dist_op op) { return op == MT_DIST_MAX ? MPI_MAX : op == MT_DIST_MIN ? MPI_MIN : MPI_SUM; }

static mt_status allreduce(mt_dist *d, void *buf, int64_t n, MPI_Datatype dt, size_t esize, mt_dist_op op,
                           const char *name) {
    if (!d->use_mpi || d->world == 1 || n == 0) return MT_OK;
    char *p = buf;
    while (n > 0) {
        int c = n > INT_MAX ? INT_MAX : (int)n;
        op_begin(name);
        int rc = MPI_Allreduce(MPI_IN_PLACE, p, c, dt, mpi_op(op), MPI_COMM_WORLD);
        op_end();
        if (rc != MPI_SUCCESS) return mpi_error(d, name, rc);
        p += (size_t)c * esize;
        n -= c;
    }
    return MT_OK;
}

mt_status mt_dist_allreduce_f32(mt_dist *d, float *buf, int64_t n, mt_dist_op op) {
    return allreduce(d, buf, n, MPI_FLOAT, sizeof *buf, op, "MPI_Allreduce (f32)");
}
mt_status mt_dist_allreduce_f64(mt_dist *d, double *buf, int64_t n, mt_dist_op op) {
    return allreduce(d, buf, n, MPI_DOUBLE, sizeof *buf, op, "MPI_Allreduce (f64)");
}
mt_status mt_dist_allreduce_i64(mt_dist *d, int64_t *buf, int64_t n, mt_dist_op op) {
    return allreduce(d, buf, n, MPI_INT64_T, sizeof *buf, op, "MPI_Allreduce (i64)");
}

mt_status mt_dist_iallreduce_f32(mt_dist *d, float *buf, int64_t n, mt_dist_request **out) {
    mt_dist_request *r = calloc(1, sizeof *r);
    MT_CHECK(r);
    r->req = MPI_REQUEST_NULL;
    *out = r;
    if (!d->use_mpi || d->world == 1 || n == 0) {
        r->done = 1;
        return MT_OK;
    }
    MT_CHECK_MSG(n <= INT_MAX, "all-reduce bucket of %lld elements exceeds INT_MAX", (long long)n);
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r->req);
    if (rc != MPI_SUCCESS) {
        free(r);
        *out = NULL;
        return mpi_error(d, "MPI_Iallreduce (f32)", rc);
    }
    return MT_OK;
}

void mt_dist_progress(mt_dist *d, mt_dist_request *r) {
    if (!d->use_mpi || !r || r->done) return;
    int flag = 0;
    if (MPI_Test(&r->req, &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) r->done = 1;
}

mt_status mt_dist_wait(mt_dist *d, mt_dist_request *r) {
    if (!r) return MT_OK;
    mt_status s = MT_OK;
    if (!r->done) {
        op_begin("MPI_Wait (gradient all-reduce)");
        int rc = MPI_Wait(&r->req, MPI_STATUS_IGNORE);
        op_end();
        if (rc != MPI_SUCCESS) s = mpi_error(d, "MPI_Wait (gradient all-reduce)", rc);
    }
    free(r);
    return s;
}

mt_status mt_dist_broadcast(mt_dist *d, void *buf, size_t n) {
    if (!d->use_mpi || d->world == 1) return MT_OK;
    char *p = buf;
    while (n > 0) {
        int c = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        op_begin("MPI_Bcast");
        int rc = MPI_Bcast(p, c, MPI_BYTE, 0, MPI_COMM_WORLD);
        op_end();
        if (rc != MPI_SUCCESS) return mpi_error(d, "MPI_Bcast", rc);
        p += c;
        n -= (size_t)c;
    }
    return MT_OK;
}

mt_status mt_dist_barrier(mt_dist *d) {
    if (!d->use_mpi || d->world == 1) return MT_OK;
    op_begin("MPI_Barrier");
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    op_end();
    return rc == MPI_SUCCESS ? MT_OK : mpi_error(d, "MPI_Barrier", rc);
}

void mt_dist_abort(mt_dist *d, int code, const char *msg) {
    if (d->world > 1)
        fprintf(stderr, "medtrain: rank %d of %d: %s\n", d->rank, d->world, msg);
    else
        fprintf(stderr, "medtrain: %s\n", msg);
    fflush(stderr);
    if (d->use_mpi) {
        alarm(10); /* bounded even if MPI_Abort blocks */
        MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    }
    _exit(code ? code : 1);
}

mt_status mt_dist_gpu_index(int local_rank, int local_world, int n_gpus, int allow_sharing, int *index) {
    MT_CHECK(local_rank >= 0 && local_world >= 1 && local_rank < local_world);
    if (n_gpus < 1) return mt_error_set(MT_ERR_INVALID, "no GPU is visible on this node");
    if (local_world > n_gpus && !allow_sharing)
        return mt_error_set(MT_ERR_INVALID,
                            "%d ranks run on this node but only %d GPU%s visible: start at most %d rank%s per "
                            "node, or set distributed.allow_gpu_sharing: true to let ranks share GPUs "
                            "(round-robin)",
                            local_world, n_gpus, n_gpus == 1 ? " is" : "s are", n_gpus, n_gpus == 1 ? "" : "s");
    *index = local_rank % n_gpus;
    return MT_OK;
}
