/* LABELS: mpi integration */
/* Data-parallel training (launch/train.c with launch/ddp.h) under mpirun:
 *  - 20 steps with 2 ranks x batch 1 log the losses of 20 steps with 1 rank x
 *    batch 2 (mt_train_set_shard_global_batch: the ranks take the samples of
 *    the 1-rank global batch), and the same validation Dice (3 validation
 *    cases: 2 on rank 0, 1 on rank 1); only rank 0 writes the run directory
 *    (one TensorBoard events file; the 1-rank resume adds a second);
 *  - one rank under mpirun runs the reducer and equals the plain run exactly;
 *    distributed.backend nccl on the CPU is refused naming the key;
 *  - a rank that exits early makes the job exit non-zero within
 *    distributed.timeout_s. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launch/config.h"
#include "launch/dist.h"
#include "launch/train.h"
#include "mt_test.h"

#define STEPS 20

/* A small, fast run: 20 steps, a loss line every step, validation at 10 and 20. */
static mt_status train_from(const char *dir, const char *name, int batch, const char *extra, const char *resume) {
    mt_config *cfg = mt_config_default();
    char b0[512], b1[128], b2[64];
    snprintf(b0, sizeof b0, "run.dir=%s", dir);
    snprintf(b1, sizeof b1, "run.name=%s", name);
    snprintf(b2, sizeof b2, "train.batch_size=%d", batch);
    const char *sets[] = {b0, b1, b2, "train.steps=20", "run.log_every=1", "train.val_every=10",
                          "train.checkpoint_every=10", "run.threads=1", "data.num_workers=1",
                          "data.phantom.num_cases=7", "data.phantom.shape=[32, 32, 32]", "data.val_cases=3",
                          "data.patch_size=[16, 16, 16]", "model.features=[4, 8, 16]", "sched.warmup_steps=2",
                          extra};
    mt_status s = MT_OK;
    for (size_t k = 0; k < sizeof sets / sizeof *sets && s == MT_OK; k++)
        if (sets[k] && *sets[k]) s = mt_config_set(cfg, sets[k]);
    if (s == MT_OK) s = mt_train_run(cfg, resume);
    mt_config_free(cfg);
    return s;
}

static mt_status train(const char *dir, const char *name, int batch, const char *extra) {
    return train_from(dir, name, batch, extra, NULL);
}

static int worker(const char *dir) {
    mt_dist *d = mt_dist_get();
    CHECK(d->world == 2);
    mt_train_set_shard_global_batch(1);
    mt_status s = train(dir, "two", 1, "distributed.timeout_s=120");
    CHECK_MSG(s == MT_OK, "rank %d: %s", d->rank, mt_error_msg());
    printf("rank %d: ", d->rank);
    return mt_test_finish();
}

static int worker_early_exit(const char *dir) {
    mt_dist *d = mt_dist_get();
    if (d->rank == 1) exit(0); /* leaves before training */
    train(dir, "early", 1, "distributed.timeout_s=3");
    fprintf(stderr, "rank 0: training returned although rank 1 left\n");
    return 0;
}

/* One rank under mpirun: the distributed path runs (bucket copies, a 1-rank
 * all-reduce) and must give the losses of the plain run bit for bit; asking
 * for NCCL on the CPU is an error naming distributed.backend. */
static int worker_one(const char *dir) {
    mt_dist *d = mt_dist_get();
    CHECK(d->world == 1 && d->use_mpi);
    mt_status s = train(dir, "one_mpi", 2, "");
    CHECK_MSG(s == MT_OK, "1 rank under mpirun: %s", mt_error_msg());
    s = train(dir, "nccl_cpu", 2, "distributed.backend=nccl");
    CHECK_MSG(s != MT_OK && strstr(mt_error_msg(), "distributed.backend"), "nccl on the CPU: %s",
              s == MT_OK ? "accepted" : mt_error_msg());
    return mt_test_finish();
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--worker")) return worker(argv[2]);
    if (argc > 2 && !strcmp(argv[1], "--worker-early-exit")) return worker_early_exit(argv[2]);
    if (argc > 2 && !strcmp(argv[1], "--worker-one")) return worker_one(argv[2]);
    if (!mt_test_mpirun_path()) {
        printf("skipped: mpirun not found\n");
        return MT_TEST_SKIP;
    }
    char tmp[256];
    if (mt_test_mkdtemp(tmp, sizeof tmp, "train_dist") != 0) return 1;

    /* one rank, batch 2 (no mpirun: no MPI) */
    double t = now_s();
    mt_status s = train(tmp, "one", 2, "");
    CHECK_MSG(s == MT_OK, "1 rank: %s", mt_error_msg());
    double t1 = now_s() - t;

    char args[1200];
    snprintf(args, sizeof args, "--worker '%s'", tmp);
    t = now_s();
    int rc = mt_test_mpirun(2, args, 300);
    double t2 = now_s() - t;
    CHECK_MSG(rc == 0, "mpirun -np 2 --worker exited with %d", rc);

    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/one/metrics.jsonl", tmp);
    snprintf(p2, sizeof p2, "%s/two/metrics.jsonl", tmp);
    mt_test_metrics a, b;
    mt_test_read_metrics(p1, &a);
    mt_test_read_metrics(p2, &b);
    CHECK_MSG(a.n == STEPS && b.n == STEPS, "loss lines: %d and %d (want %d)", a.n, b.n, STEPS);
    double worst = 0;
    for (int k = 0; k < a.n && k < b.n; k++) worst = fmax(worst, fabs(a.loss[k] - b.loss[k]));
    CHECK_MSG(worst <= 1e-3, "2 ranks x batch 1 vs 1 rank x batch 2: max loss difference %.3g", worst);
    CHECK_MSG(a.dice_mean >= 0 && fabs(a.dice_mean - b.dice_mean) <= 1e-3, "val_dice_mean %.6f vs %.6f",
              a.dice_mean, b.dice_mean);
    printf("losses: first %.5f / %.5f, last %.5f / %.5f, max difference %.3g; val_dice_mean %.5f / %.5f; "
           "%.1f s (1 rank) vs %.1f s (mpirun -np 2)\n",
           a.loss[0], b.loss[0], a.loss[STEPS - 1], b.loss[STEPS - 1], worst, a.dice_mean, b.dice_mean, t1, t2);
    /* one rank under mpirun (the reducer runs) = the plain run, exactly */
    snprintf(args, sizeof args, "--worker-one '%s'", tmp);
    rc = mt_test_mpirun(1, args, 300);
    CHECK_MSG(rc == 0, "mpirun -np 1 --worker-one exited with %d", rc);
    snprintf(p2, sizeof p2, "%s/one_mpi/metrics.jsonl", tmp);
    mt_test_metrics m1;
    mt_test_read_metrics(p2, &m1);
    int same = m1.n == a.n;
    for (int k = 0; same && k < a.n; k++) same = m1.loss[k] == a.loss[k];
    CHECK_MSG(same && a.dice_mean == m1.dice_mean,
              "1 rank under mpirun (distributed path) gives the plain run's losses exactly");
    snprintf(p2, sizeof p2, "%s/two/metrics.jsonl", tmp);
    /* only rank 0 wrote: one log, checkpoints, weights */
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/two/model.safetensors", tmp);
    CHECK(stat(p, &st) == 0);
    snprintf(p, sizeof p, "%s/two/checkpoints/step_00000020.safetensors", tmp);
    CHECK(stat(p, &st) == 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test $(grep -c '^medtrain ' '%s/two/train.log') -eq 1", tmp);
    CHECK_MSG(system(cmd) == 0, "train.log has one header (rank 0 only)");
    snprintf(cmd, sizeof cmd, "test $(ls '%s/two' | grep -c '^events\\.out\\.tfevents\\.') -eq 1", tmp);
    CHECK_MSG(system(cmd) == 0, "one TensorBoard events file (rank 0 only)");

    /* --resume with another rank count: the 2-rank run's step-10 checkpoint
     * continued by 1 rank with the same global batch (batch 2 = the samples the
     * two ranks shared) gives the 2-rank run's losses for steps 11..20 */
    char ck[600];
    snprintf(ck, sizeof ck, "%s/two/checkpoints/step_00000010.safetensors", tmp);
    s = train_from(tmp, "two", 2, "", ck);
    CHECK_MSG(s == MT_OK, "resume of the 2-rank run with 1 rank: %s", mt_error_msg());
    mt_test_metrics c;
    mt_test_read_metrics(p2, &c);
    CHECK_MSG(c.n == STEPS + 10, "10 more losses after resuming, got %d", c.n - STEPS);
    double worst_r = 0;
    for (int k = 0; k < 10 && c.n == STEPS + 10 && b.n == STEPS; k++) {
        CHECK_MSG(c.step[STEPS + k] == b.step[10 + k], "resumed step %ld vs %ld", c.step[STEPS + k], b.step[10 + k]);
        worst_r = fmax(worst_r, fabs(c.loss[STEPS + k] - b.loss[10 + k]));
    }
    CHECK_MSG(worst_r <= 1e-3, "resumed with 1 rank vs 2 ranks: max loss difference %.3g", worst_r);
    snprintf(cmd, sizeof cmd, "test $(ls '%s/two' | grep -c '^events\\.out\\.tfevents\\.') -eq 2", tmp);
    CHECK_MSG(system(cmd) == 0, "the resumed run added a second TensorBoard events file");
    printf("resume of a 2-rank checkpoint with 1 rank: steps 11..20, max loss difference %.3g\n", worst_r);

    /* early exit of rank 1: the job ends non-zero within the timeout (3 s) */
    snprintf(args, sizeof args, "--worker-early-exit '%s'", tmp);
    t = now_s();
    rc = mt_test_mpirun(2, args, 120);
    double el = now_s() - t;
    CHECK_MSG(rc != 0 && rc != 124 && rc != 137, "early exit: mpirun exited with %d", rc);
    CHECK_MSG(el < 60, "early exit took %.1f s", el);
    printf("rank 1 exits early: mpirun exited with %d after %.1f s\n", rc, el);

    /* an error on one rank (rank 0: the run directory exists) through the CLI:
     * printed with the rank, the job aborted with the CLI's exit status */
    const char *bin = getenv("MT_MEDTRAIN");
    if (bin && access(bin, X_OK) == 0) {
        snprintf(args, sizeof args,
                 "--set run.dir='%s' --set run.name=two --set run.threads=1 --set data.patch_size=[16,16,16] "
                 "--set model.features=[4,8,16] > '%s/cli.out' 2>&1",
                 tmp, tmp);
        rc = mt_test_mpirun_exe(2, bin, args, 120);
        CHECK_MSG(rc == 2, "medtrain with an existing run directory under mpirun: exit %d (want 2)", rc);
        snprintf(cmd, sizeof cmd, "grep -q 'rank 0 of 2: .*already exists' '%s/cli.out'", tmp);
        CHECK_MSG(system(cmd) == 0, "the error names the rank (see %s/cli.out)", tmp);
    } else {
        printf("MT_MEDTRAIN not set: CLI error path not checked\n");
    }

    mt_test_cleanup(tmp);
    return mt_test_finish();
}
