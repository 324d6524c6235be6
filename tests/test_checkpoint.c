/* LABELS: integration */
/* Checkpoints and bad input (launch/train.c, launch/checkpoint.c): --resume
 * reproduces the losses of an uninterrupted run bit for bit; a corrupt or
 * mismatched checkpoint and a bad config fail with a message naming the
 * culprit, without crashing (this test also runs under AddressSanitizer in
 * scripts/test.sh) and without leaving a run directory behind. TensorBoard
 * events (run.tensorboard): the first run writes one events file with the
 * losses of metrics.jsonl; the resumed run adds a second one whose steps
 * continue (4..6); run.tensorboard=false writes none. */
#include <dirent.h>
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

/* The run directory's events files, sorted by name (TensorBoard's order). */
static int events_files(const char *run, char names[][512], int max) {
    int n = 0;
    DIR *dp = opendir(run);
    if (!dp) return 0;
    struct dirent *de;
    while ((de = readdir(dp)))
        if (!strncmp(de->d_name, "events.out.tfevents.", 20) && n < max) snprintf(names[n++], 512, "%s/%s", run, de->d_name);
    closedir(dp);
    if (n == 2 && strcmp(names[0], names[1]) > 0) {
        char t[512];
        memcpy(t, names[0], 512);
        memcpy(names[0], names[1], 512);
        memcpy(names[1], t, 512);
    }
    return n;
}

static uint64_t pb_varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    for (int s = 0; *p < end && s < 64; s += 7) {
        uint8_t c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) break;
    }
    return v;
}

/* Steps and values of the scalars tagged `tag` in an events file (TFRecord
 * records of tensorflow.Event; CRCs are checked in tests/test_tbevents.c).
 * Returns how many, -1 if the framing is broken. */
static int tb_scalars(const char *path, const char *tag, int64_t *steps, float *vals, int max) {
    char *d = NULL;
    size_t len = 0;
    if (mt_fs_read_file(path, &d, &len) != MT_OK) return -1;
    int n = 0;
    size_t at = 0;
    while (at + 12 <= len) {
        uint64_t rl = 0;
        for (int i = 7; i >= 0; i--) rl = rl << 8 | (uint8_t)d[at + i];
        if (rl > len - at - 12 || len - at - 12 - rl < 4) break;
        const uint8_t *p = (const uint8_t *)d + at + 12, *end = p + rl;
        at += 12 + rl + 4;
        int64_t step = 0;
        int match = 0;
        float v = 0;
        while (p < end) { /* Event: 1 wall_time, 2 step, 5 summary {1 value {1 tag, 2 simple_value}} */
            uint64_t key = pb_varint(&p, end);
            if ((key & 7) == 1) p += 8;
            else if ((key & 7) == 0) {
                uint64_t x = pb_varint(&p, end);
                if (key >> 3 == 2) step = (int64_t)x;
            } else if ((key & 7) == 2) {
                uint64_t l = pb_varint(&p, end);
                if (key >> 3 == 5) { /* summary -> value -> fields */
                    const uint8_t *q = p, *qe = p + l;
                    if (q < qe && *q++ == 0x0a) {
                        uint64_t vl = pb_varint(&q, qe);
                        const uint8_t *ve = q + vl;
                        while (q < ve) {
                            uint64_t k2 = pb_varint(&q, ve);
                            if (k2 == 0x0a) {
                                uint64_t tl = pb_varint(&q, ve);
                                match = tl == strlen(tag) && !memcmp(q, tag, tl);
                                q += tl;
                            } else if (k2 == 0x15) {
                                memcpy(&v, q, 4); /* little-endian host */
                                q += 4;
                            } else break;
                        }
                    }
                }
                p += l;
            } else break;
        }
        if (match && n < max) {
            steps[n] = step;
            vals[n++] = v;
        }
    }
    int ok = at == len;
    free(d);
    return ok ? n : -1;
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
    const char *sets[] = {sets0, "model.dropout=0.3", "run.tensorboard=false"};
    mt_config *cfg = make_cfg(TINY, 3, sets);
    if (!cfg) return;
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "uninterrupted run with dropout: %s", mt_error_msg());
    char run[400], ev[1][512];
    snprintf(run, sizeof run, "%s/tiny", dir);
    CHECK_MSG(mt_fs_is_dir(run) && events_files(run, ev, 1) == 0, "run.tensorboard=false: no events file");
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
    char run[400], ev[3][512];
    snprintf(run, sizeof run, "%s/tiny", dir);
    int64_t tsteps[16];
    float tvals[16];
    CHECK_MSG(events_files(run, ev, 3) == 1, "one events file after the first run");
    int nt = tb_scalars(ev[0], "train/loss", tsteps, tvals, 16);
    CHECK_MSG(nt == 6, "first events file: %d train/loss scalars (want 6)", nt);
    for (int k = 0; k < nt && k < a.n; k++)
        CHECK_MSG(tsteps[k] == a.step[k] && tvals[k] == (float)a.loss[k], "events: step %lld loss %.9g vs %ld %.9g",
                  (long long)tsteps[k], (double)tvals[k], a.step[k], a.loss[k]);
    /* Resume from step 3: the run continues in the same directory and appends. */
    s = mt_train_run(cfg, ck);
    CHECK_MSG(s == MT_OK, "resumed run: %s", mt_error_msg());
    mt_test_metrics b;
    mt_test_read_metrics(met, &b);
    CHECK_MSG(b.n == 9, "3 more losses after resuming, got %d", b.n);
    /* a second events file (TensorBoard merges the directory's files): steps 4..6 */
    CHECK_MSG(events_files(run, ev, 3) == 2, "two events files after resuming");
    nt = tb_scalars(ev[1], "train/loss", tsteps, tvals, 16);
    CHECK_MSG(nt == 3, "resumed run's events file %s: %d train/loss scalars (want 3)", ev[1], nt);
    for (int k = 0; k < nt && b.n == 9; k++)
        CHECK_MSG(tsteps[k] == b.step[6 + k] && tsteps[k] == 4 + k && tvals[k] == (float)b.loss[6 + k],
                  "resumed events: step %lld loss %.9g vs %ld %.9g", (long long)tsteps[k], (double)tvals[k],
                  b.step[6 + k], b.loss[6 + k]);
    CHECK(tb_scalars(ev[0], "train/loss", tsteps, tvals, 16) == 6); /* the first file untouched */
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
    if (mt_test_mkdtemp(g_tmp, sizeof g_tmp, "checkpoint") != 0) return 1;
    test_bad_config();
    test_resume();
    test_resume_dropout();
    mt_test_cleanup(g_tmp);
    return mt_test_finish();
}
