/* LABELS: integration */
/* Checkpoints and bad input (launch/train.c, launch/checkpoint.c): --resume
 * reproduces the losses of an uninterrupted run bit for bit; a corrupt or
 * mismatched checkpoint and a bad config fail with a message naming the
 * culprit, without crashing (this test also runs under AddressSanitizer in
 * scripts/test.sh) and without leaving a run directory behind. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/fsutil.h"
#include "launch/train.h"
#include "mt_test.h"

static char g_tmp[256];

static mt_config *make_cfg(const char *yaml, int nsets, const char *const *sets) {
    mt_config *cfg = NULL;
    mt_status s = mt_config_parse_string(&cfg, yaml, "test.yaml", nsets, sets);
    CHECK_MSG(s == MT_OK, "config: %s", mt_error_msg());
    return cfg;
}

static const char *TINY =
    "run: {name: tiny, threads: 2, log_every: 1}\n"
    "data:\n"
    "  phantom: {num_cases: 4, shape: [24, 24, 24]}\n"
    "  patch_size: [16, 16, 16]\n"
    "  val_cases: 1\n"
    "model: {features: [4, 8]}\n"
    "train: {steps: 6, batch_size: 2, checkpoint_every: 3, keep_checkpoints: 0, val_every: 0}\n";

/* Resuming from step 3 gives the losses of the uninterrupted run exactly.
 * With dropout the masks' random streams must be restored too (saved as
 * rng.module.<path> offsets). */
static void test_resume_dropout(void) {
    char dir[300], sets0[400];
    snprintf(dir, sizeof dir, "%s/resume_drop", g_tmp);
    snprintf(sets0, sizeof sets0, "run.dir=%s", dir);
    const char *sets[] = {sets0, "model.dropout=0.3"};
    mt_config *cfg = make_cfg(TINY, 2, sets);
    if (!cfg) return;
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "uninterrupted run with dropout: %s", mt_error_msg());
    char ck[400], met[400];
    snprintf(ck, sizeof ck, "%s/tiny/checkpoints/step_00000003.safetensors", dir);
    snprintf(met, sizeof met, "%s/tiny/metrics.jsonl", dir);
    mt_test_metrics a, b;
    mt_test_read_metrics(met, &a);
    s = mt_train_run(cfg, ck);
    CHECK_MSG(s == MT_OK, "resumed run with dropout: %s", mt_error_msg());
    mt_test_read_metrics(met, &b);
    CHECK_MSG(a.n == 6 && b.n == 9, "6 then 9 logged losses, got %d, %d", a.n, b.n);
    if (a.n == 6 && b.n == 9)
        for (int k = 0; k < 3; k++)
            CHECK_MSG(b.loss[6 + k] == a.loss[3 + k],
                      "dropout: step %ld: resumed loss %.9g vs uninterrupted %.9g", a.step[3 + k],
                      b.loss[6 + k], a.loss[3 + k]);
    mt_config_free(cfg);
}

static void test_resume(void) {
    char dir[300], sets0[400];
    snprintf(dir, sizeof dir, "%s/resume", g_tmp);
    snprintf(sets0, sizeof sets0, "run.dir=%s", dir);
    const char *sets[] = {sets0};
    mt_config *cfg = make_cfg(TINY, 1, sets);
    if (!cfg) return;
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "uninterrupted run: %s", mt_error_msg());
    char ck[400], met[400];
    snprintf(ck, sizeof ck, "%s/tiny/checkpoints/step_00000003.safetensors", dir);
    snprintf(met, sizeof met, "%s/tiny/metrics.jsonl", dir);
    CHECK_MSG(mt_fs_is_file(ck), "checkpoint %s written", ck);
    mt_test_metrics a;
    mt_test_read_metrics(met, &a);
    CHECK_MSG(a.n == 6, "6 logged losses, got %d", a.n);
    /* Resume from step 3: the run continues in the same directory and appends. */
    s = mt_train_run(cfg, ck);
    CHECK_MSG(s == MT_OK, "resumed run: %s", mt_error_msg());
    mt_test_metrics b;
    mt_test_read_metrics(met, &b);
    CHECK_MSG(b.n == 9, "3 more losses after resuming, got %d", b.n);
    if (a.n == 6 && b.n == 9)
        for (int k = 0; k < 3; k++) {
            CHECK_MSG(b.step[6 + k] == a.step[3 + k], "step %ld vs %ld", b.step[6 + k], a.step[3 + k]);
            CHECK_MSG(b.loss[6 + k] == a.loss[3 + k], "step %ld: resumed loss %.9g vs uninterrupted %.9g",
                      a.step[3 + k], b.loss[6 + k], a.loss[3 + k]);
        }
    /* A corrupt checkpoint: error names the file, nothing crashes. */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", g_tmp);
    FILE *f = fopen(bad, "wb");
    fwrite("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", 1, 13, f);
    fclose(f);
    s = mt_train_run(cfg, bad);
    CHECK_MSG(s != MT_OK && strstr(mt_error_msg(), "bad.safetensors"), "corrupt checkpoint: %s",
              mt_error_msg());
    /* A checkpoint of another model: error names the tensor. */
    const char *sets2[] = {sets0, "model.features=[4,12]", "run.name=other"};
    mt_config *cfg2 = make_cfg(TINY, 3, sets2);
    s = mt_train_run(cfg2, ck);
    CHECK_MSG(s != MT_OK && strstr(mt_error_msg(), "step_00000003") && strstr(mt_error_msg(), "shape"),
              "mismatched checkpoint: %s", mt_error_msg());
    mt_config_free(cfg2);
    mt_config_free(cfg);
}

static void test_bad_config(void) {
    char dir[300], sets0[400];
    snprintf(dir, sizeof dir, "%s/bad", g_tmp);
    snprintf(sets0, sizeof sets0, "run.dir=%s", dir);
    /* patch not divisible by 2^(levels-1) = 4 */
    const char *sets[] = {sets0, "data.patch_size=[16,17,16]"};
    mt_config *cfg = make_cfg(TINY, 2, sets);
    if (!cfg) return;
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_ERR_CONFIG && strstr(mt_error_msg(), "data.patch_size") &&
                  strstr(mt_error_msg(), "--set"),
              "patch error: %s", mt_error_msg());
    CHECK_MSG(!mt_fs_is_dir(dir), "no run directory left behind for a bad config");
    mt_config_free(cfg);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/mt_test_checkpoint_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) return 1;
    test_bad_config();
    test_resume();
    test_resume_dropout();
    int rc = mt_test_finish();
    if (rc == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    }
    return rc;
}
