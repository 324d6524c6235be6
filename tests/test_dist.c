/* LABELS: mpi */
/* launch/dist.h: world 1 without mpirun (no MPI), then all-reduce / broadcast /
 * barrier on 2 ranks under mpirun (this executable with --worker), and the
 * timeout: a rank that exits early makes the other abort the job. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "launch/dist.h"
#include "mt_test.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Collectives on every rank of d (any world size). */
static void check_collectives(mt_dist *d) {
    int W = d->world, r = d->rank;
    CHECK(r >= 0 && r < W);
    CHECK(d->local_rank >= 0 && d->local_rank < d->local_world);

    float f[5];
    for (int i = 0; i < 5; i++) f[i] = (float)(r + 1) * (float)(i + 1);
    CHECK(mt_dist_allreduce_f32(d, f, 5, MT_DIST_SUM) == MT_OK);
    double tri = W * (W + 1) / 2.0; /* sum over ranks of (r + 1) */
    for (int i = 0; i < 5; i++) CHECK_NEAR(f[i], tri * (i + 1), 1e-5);

    double g[3] = {0.25 * r, -1.0, 1e300 / W};
    CHECK(mt_dist_allreduce_f64(d, g, 3, MT_DIST_SUM) == MT_OK);
    CHECK_NEAR(g[0], 0.25 * (W * (W - 1) / 2.0), 1e-12);
    CHECK_NEAR(g[1], -(double)W, 1e-12);
    CHECK(fabs(g[2] / 1e300 - 1.0) < 1e-12);

    int64_t k[2] = {((int64_t)1 << 40) + r, r};
    CHECK(mt_dist_allreduce_i64(d, k, 2, MT_DIST_SUM) == MT_OK);
    CHECK(k[0] == ((int64_t)W << 40) + W * (W - 1) / 2);
    int64_t mx = r;
    CHECK(mt_dist_allreduce_i64(d, &mx, 1, MT_DIST_MAX) == MT_OK);
    CHECK(mx == W - 1);
    double mn = 10.0 + r;
    CHECK(mt_dist_allreduce_f64(d, &mn, 1, MT_DIST_MIN) == MT_OK);
    CHECK(mn == 10.0);

    /* non-blocking: two requests in flight, waited in reverse order */
    enum { N = 100000 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (int i = 0; i < N; i++) {
        a[i] = (float)(i % 97) * (r + 1);
        b[i] = (float)r;
    }
    mt_dist_request *ra = NULL, *rb = NULL;
    CHECK(mt_dist_iallreduce_f32(d, a, N, &ra) == MT_OK);
    CHECK(mt_dist_iallreduce_f32(d, b, N, &rb) == MT_OK);
    mt_dist_progress(d, ra);
    CHECK(mt_dist_wait(d, rb) == MT_OK);
    CHECK(mt_dist_wait(d, ra) == MT_OK);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (fabsf(a[i] - (float)((i % 97) * tri)) > 1e-3f) bad++;
        if (b[i] != (float)(W * (W - 1) / 2)) bad++;
    }
    CHECK_MSG(bad == 0, "iallreduce: %d wrong elements", bad);
    free(a);
    free(b);

    char msg[64];
    memset(msg, 0, sizeof msg);
    if (r == 0) snprintf(msg, sizeof msg, "hello from rank 0 of %d", W);
    CHECK(mt_dist_broadcast(d, msg, sizeof msg) == MT_OK);
    char want[64];
    snprintf(want, sizeof want, "hello from rank 0 of %d", W);
    CHECK_MSG(!strcmp(msg, want), "broadcast: rank %d got \"%s\"", r, msg);
    CHECK(mt_dist_barrier(d) == MT_OK);
}

static int worker(void) {
    mt_dist *d = mt_dist_get();
    CHECK(d->use_mpi);
    CHECK(d->world == 2);
    CHECK(d->local_world == 2); /* one node */
    check_collectives(d);
    printf("rank %d: ", d->rank);
    return mt_test_finish();
}

/* Rank 1 leaves at once; rank 0 waits in an all-reduce until the timeout. */
static int worker_early_exit(void) {
    mt_dist *d = mt_dist_get();
    mt_dist_set_timeout(d, 3.0);
    if (d->rank == 1) exit(0);
    float x = 1;
    mt_dist_allreduce_f32(d, &x, 1, MT_DIST_SUM);
    fprintf(stderr, "rank 0: the all-reduce returned without its peer\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--worker")) return worker();
    if (argc > 1 && !strcmp(argv[1], "--worker-early-exit")) return worker_early_exit();

    /* world 1: no mpirun in the environment, so no MPI at all */
    CHECK(!mt_dist_launched_by_mpi());
    mt_dist *d = mt_dist_get();
    CHECK(!d->use_mpi);
    CHECK(d->world == 1 && d->rank == 0 && d->local_rank == 0);
    check_collectives(d);

    if (!mt_test_mpirun_path()) {
        printf("skipped: mpirun not found (MT_MPIRUN unset, no /usr/bin/mpirun)\n");
        mt_test_finish();
        return MT_TEST_SKIP;
    }
    int rc = mt_test_mpirun(2, "--worker", 120);
    CHECK_MSG(rc == 0, "mpirun -np 2 --worker exited with %d", rc);

    double t = now_s();
    rc = mt_test_mpirun(2, "--worker-early-exit", 60);
    double el = now_s() - t;
    CHECK_MSG(rc != 0 && rc != 124 && rc != 137, "early exit: mpirun exited with %d (want non-zero, not killed)", rc);
    CHECK_MSG(el < 30, "early exit took %.1f s (timeout 3 s)", el);
    printf("early exit of rank 1: mpirun exited with %d after %.1f s\n", rc, el);
    return mt_test_finish();
}
