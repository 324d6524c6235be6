/* LABELS: gpu mpi integration */
/* With a GPU present, one rank through NCCL gives the same steps as without
 * distribution (issue 5): 10 training steps on cuda:0 without mpirun (no
 * reducer), then the same run under `mpirun -np 1` with
 * distributed.backend: nccl (the reducer copies every gradient into GPU
 * buckets, NCCL all-reduces them on its own stream, mt_ddp_finish copies them
 * back): the logged losses must agree to 1e-4 relative (a one-rank
 * all-reduce is a copy and nothing is rescaled, so the reducer adds no
 * rounding; the tolerance covers cuDNN's non-deterministic algorithms, e.g.
 * backward-filter with atomics, in two separate processes; both use cuDNN's
 * heuristics, MT_CUDNN_BENCHMARK=0, so they pick the same algorithms).
 * With two GPUs or more, also 2 ranks x batch 1 through NCCL (each rank on
 * its own GPU, taking the samples of the 1-rank global batch:
 * mt_train_set_shard_global_batch) against the plain run's batch 2: the
 * averaged gradients give the same losses within 1e-3 relative (instance
 * norm is per sample; what differs is the summation order of the batch).
 * Exits 77 without a GPU, NCCL or mpirun. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/dist.h"
#include "launch/nccl.h"
#include "launch/train.h"
#include "mt_test.h"

static mt_status train(const char *dir, const char *name, const char *backend, int batch) {
    mt_config *cfg = mt_config_default();
    char b0[512], b1[128], b2[128], b3[64];
    snprintf(b0, sizeof b0, "run.dir=%s", dir);
    snprintf(b1, sizeof b1, "run.name=%s", name);
    snprintf(b2, sizeof b2, "distributed.backend=%s", backend);
    snprintf(b3, sizeof b3, "train.batch_size=%d", batch);
    const char *sets[] = {b0, b1, b2, b3, "run.device=cuda", "train.steps=10", "run.log_every=1",
                          "train.val_every=0", "train.checkpoint_every=0", "data.phantom.num_cases=4",
                          "data.phantom.shape=[32, 32, 32]", "data.val_cases=1", "data.patch_size=[16, 16, 16]",
                          "model.features=[8, 16, 32]", "distributed.timeout_s=120"};
    mt_status s = MT_OK;
    for (size_t k = 0; k < sizeof sets / sizeof *sets && s == MT_OK; k++) s = mt_config_set(cfg, sets[k]);
    if (s == MT_OK) s = mt_train_run(cfg, NULL);
    mt_config_free(cfg);
    return s;
}

static int worker(const char *dir) {
    mt_dist *d = mt_dist_get();
    CHECK(d->use_mpi && d->world == 1);
    mt_status s = train(dir, "nccl", "nccl", 2);
    CHECK_MSG(s == MT_OK, "1 rank through NCCL: %s", mt_error_msg());
    return mt_test_finish();
}

static int worker2(const char *dir) {
    mt_dist *d = mt_dist_get();
    CHECK(d->use_mpi && d->world == 2);
    mt_train_set_shard_global_batch(1);
    mt_status s = train(dir, "nccl2", "nccl", 1);
    CHECK_MSG(s == MT_OK, "rank %d of 2 through NCCL: %s", d->rank, mt_error_msg());
    printf("rank %d: ", d->rank);
    return mt_test_finish();
}

/* Worst relative difference of the logged losses of two runs (10 each). */
static double loss_diff(const char *tmp, const char *a_name, const char *b_name, int *na, int *nb) {
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/%s/metrics.jsonl", tmp, a_name);
    snprintf(p2, sizeof p2, "%s/%s/metrics.jsonl", tmp, b_name);
    mt_test_metrics a, b;
    mt_test_read_metrics(p1, &a);
    mt_test_read_metrics(p2, &b);
    double worst = a.n == 10 && b.n == 10 ? 0 : INFINITY;
    for (int k = 0; k < a.n && k < b.n; k++) worst = fmax(worst, fabs(a.loss[k] - b.loss[k]) / fabs(a.loss[k]));
    *na = a.n, *nb = b.n;
    return worst;
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--worker")) return worker(argv[2]);
    if (argc > 2 && !strcmp(argv[1], "--worker2")) return worker2(argv[2]);
    if (!mt_nccl_available()) {
        printf("skipped: built without NCCL\n");
        return MT_TEST_SKIP;
    }
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    if (!mt_test_mpirun_path()) {
        printf("skipped: mpirun not found\n");
        return MT_TEST_SKIP;
    }
    setenv("MT_CUDNN_BENCHMARK", "0", 1); /* inherited by the mpirun worker */
    char tmp[256];
    if (mt_test_mkdtemp(tmp, sizeof tmp, "gpu_nccl") != 0) return 1;
    mt_status s = train(tmp, "plain", "auto", 2);
    CHECK_MSG(s == MT_OK, "plain run on the GPU: %s", mt_error_msg());
    char args[600];
    snprintf(args, sizeof args, "--worker '%s'", tmp);
    int rc = mt_test_mpirun(1, args, 300);
    CHECK_MSG(rc == 0, "mpirun -np 1 --worker exited with %d", rc);
    int na = 0, nb = 0;
    double worst = loss_diff(tmp, "plain", "nccl", &na, &nb);
    printf("1 rank through NCCL vs plain: %d / %d losses, worst relative difference %.3g\n", nb, na, worst);
    CHECK_MSG(worst <= 1e-4, "10 losses through NCCL vs the plain run's: worst relative difference %.3g", worst);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "grep -q 'all-reduce with NCCL' '%s/nccl/train.log'", tmp);
    CHECK_MSG(system(cmd) == 0, "the log names NCCL as the all-reduce (%s/nccl/train.log)", tmp);

    const mt_backend *cuda = mt_backend_get(MT_CUDA);
    int ndev = cuda && cuda->device_count ? cuda->device_count() : 0;
    if (ndev >= 2) {
        snprintf(args, sizeof args, "--worker2 '%s'", tmp);
        rc = mt_test_mpirun(2, args, 300);
        CHECK_MSG(rc == 0, "mpirun -np 2 --worker2 exited with %d", rc);
        worst = loss_diff(tmp, "plain", "nccl2", &na, &nb);
        printf("2 ranks x batch 1 through NCCL vs 1 rank x batch 2: %d / %d losses, worst relative difference "
               "%.3g\n", nb, na, worst);
        CHECK_MSG(worst <= 1e-3, "2 ranks through NCCL vs the plain run: worst relative difference %.3g", worst);
    } else {
        printf("2 ranks through NCCL: skipped (%d GPU visible)\n", ndev);
    }
    mt_test_cleanup(tmp);
    return mt_test_finish();
}
