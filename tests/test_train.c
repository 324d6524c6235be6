/* LABELS: integration */
/* End to end (launch/train.c): the built-in default config (a small UNet3D
 * on the synthetic phantom, what `medtrain` with no arguments runs) learns:
 * the loss falls and the mean foreground Dice reaches 0.8. Checkpoint/resume
 * and bad input are in test_checkpoint.c. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/fsutil.h"
#include "launch/train.h"
#include "mt_test.h"

static char g_tmp[256];

static void test_learns_phantom(void) {
    char sets0[400];
    snprintf(sets0, sizeof sets0, "run.dir=%s/learn", g_tmp);
    const char *sets[] = {sets0, "run.name=learn"};
    /* The built-in default config, as `medtrain` with no arguments runs it. */
    mt_config *cfg = mt_config_default();
    for (int k = 0; k < 2; k++) CHECK(mt_config_set(cfg, sets[k]) == MT_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mt_status s = mt_train_run(cfg, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_MSG(s == MT_OK, "default run: %s", mt_error_msg());
    char met[400];
    snprintf(met, sizeof met, "%s/learn/learn/metrics.jsonl", g_tmp);
    mt_test_metrics m;
    mt_test_read_metrics(met, &m);
    CHECK_MSG(m.n >= 4, "losses logged (%d)", m.n);
    if (m.n >= 4) {
        double first = (m.loss[0] + m.loss[1]) / 2, last = (m.loss[m.n - 1] + m.loss[m.n - 2]) / 2;
        CHECK_MSG(last < 0.6 * first, "loss falls: %.4f -> %.4f", first, last);
    }
    CHECK_MSG(m.dice_mean >= 0.8, "mean foreground Dice %.4f >= 0.8", m.dice_mean);
    printf("default config: %.1f s, final mean Dice %.4f\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), m.dice_mean);
    mt_config_free(cfg);
}

int main(void) {
    if (mt_test_mkdtemp(g_tmp, sizeof g_tmp, "train") != 0) return 1;
    test_learns_phantom();
    mt_test_cleanup(g_tmp);
    return mt_test_finish();
}
