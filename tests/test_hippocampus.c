/* LABELS: slow integration */
/* The real-data path end to end on MSD Task04 hippocampus (issue 4), with
 * configs/hippocampus_cpu.yaml shortened to a few minutes on 2 CPU cores:
 * the store is prepared on first use from ../shared/data/Task04_Hippocampus,
 * training runs on fold 0 of splits.json (holdout never touched), and the
 * validation Dice on fold 0's 42 validation cases must reach the bar below
 * (stated in docs/results and experiments/RESULTS.md). Skipped (77) when the
 * data set is absent. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/config.h"
#include "launch/fsutil.h"
#include "launch/train.h"
#include "mt_test.h"

#define HIPPO MT_SHARED_DIR "/data/Task04_Hippocampus"
/* The bar: mean foreground validation Dice after STEPS steps at a constant
 * learning rate. (With a poly schedule over only 600 steps the posterior
 * class was never picked up, Dice 0.01: in the full 1950-step run it appears
 * between steps 250 and 500, while the rate is still high.) */
#define STEPS "1000"
#define DICE_BAR 0.75

int main(void) {
    if (!mt_fs_is_dir(HIPPO)) {
        printf("skipped: %s is absent\n", HIPPO);
        return 77;
    }
    char tmp[256];
    if (mt_test_mkdtemp(tmp, sizeof tmp, "hippocampus") != 0) return 1;
    char s_path[400], s_prep[400], s_splits[400], s_dir[400];
    snprintf(s_path, sizeof s_path, "data.hdf5.path=%s/hippo.h5", tmp);
    snprintf(s_prep, sizeof s_prep, "data.hdf5.prepare_from=%s", HIPPO);
    snprintf(s_splits, sizeof s_splits, "data.splits=%s/splits.json", HIPPO);
    snprintf(s_dir, sizeof s_dir, "run.dir=%s", tmp);
    const char *sets[] = {s_path, s_prep, s_splits, s_dir, "run.name=short", "train.steps=" STEPS,
                          "train.val_every=500", "sched.name=constant", "train.time_limit_min=0", "run.log_every=50"};
    mt_config *cfg = NULL;
    mt_status s = mt_config_load(&cfg, MT_SOURCE_DIR "/configs/hippocampus_cpu.yaml", (int)(sizeof sets / sizeof *sets),
                                 sets);
    CHECK_MSG(s == MT_OK, "config: %s", mt_error_msg());
    if (s == MT_OK) {
        s = mt_train_run(cfg, NULL);
        CHECK_MSG(s == MT_OK, "train: %s", mt_error_msg());
        mt_config_free(cfg);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/short/metrics.jsonl", tmp);
    char *met = NULL;
    size_t len = 0;
    if (s == MT_OK && mt_fs_read_file(p, &met, &len) == MT_OK) {
        double d = mt_test_json_last(met, "val_dice_mean"), a = mt_test_json_last(met, "val_dice_anterior"),
               b = mt_test_json_last(met, "val_dice_posterior");
        printf("hippocampus, %s steps: validation Dice anterior %.4f posterior %.4f mean %.4f (bar %.2f)\n", STEPS, a,
               b, d, DICE_BAR);
        CHECK_MSG(d >= DICE_BAR, "mean foreground Dice %.4f >= %.2f", d, DICE_BAR);
        free(met);
    } else {
        CHECK_MSG(0, "read %s", p);
    }
    mt_test_cleanup(tmp);
    return mt_test_finish();
}
