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

typedef struct {
    int n;
    long step[4096];
    double loss[4096];
    double dice_mean; /* last val_dice_mean, -1 if none */
} metrics;

static double json_num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void read_metrics(const char *path, metrics *m) {
    memset(m, 0, sizeof *m);
    m->dice_mean = -1;
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "open %s", path);
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        double l = json_num(line, "loss");
        if (!isnan(l) && m->n < 4096) {
            m->step[m->n] = (long)json_num(line, "step");
            m->loss[m->n++] = l;
        }
        double d = json_num(line, "val_dice_mean");
        if (!isnan(d)) m->dice_mean = d;
    }
    fclose(f);
}

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
    metrics m;
    read_metrics(met, &m);
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
    snprintf(g_tmp, sizeof g_tmp, "%s/mt_test_train_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) return 1;
    test_learns_phantom();
    int rc = mt_test_finish();
    if (rc == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    }
    return rc;
}
