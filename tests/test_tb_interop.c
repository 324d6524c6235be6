/* LABELS: interop */
/* TensorBoard reads our event files (launch/tbevents.h).
 *
 * Writes a run directory the way training does: one events file with
 * scalars of several tags (grouped with '/', a long tag, NaN and infinite
 * values, explicit wall times), then a second file in the same directory (a
 * resumed run: steps continue), and runs tests/tb_read.py, which loads the
 * directory with TensorBoard's EventAccumulator (its own TFRecord reader,
 * which checks both CRCs) and compares tags, steps, float32 values and wall
 * times with an expectation written here as JSON. Negative controls: a wrong
 * expected value, and a corrupted data CRC in the last record (TensorBoard
 * drops that record), must both be rejected (exit status 1).
 *
 * PYTHON: $MT_TB_PYTHON, else /root/torchvenv/bin/python, else python3, the
 * first that can import tensorboard's event_accumulator; skipped (77) if
 * none can (`pip install tensorboard`).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch/fsutil.h"
#include "launch/tbevents.h"
#include "mt_test.h"

static int python_ok(const char *py) {
    if (!py || !*py) return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import tensorboard.backend.event_processing.event_accumulator' >/dev/null 2>&1", py);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static int run_read(const char *py, const char *dir, const char *expected) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/tb_read.py' '%s' '%s'", py, MT_SOURCE_DIR, dir, expected);
    fflush(stdout);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

typedef struct {
    const char *tag;
    int64_t step;
    double value, wall;
    int file; /* 0: first events file, 1: the resumed run's */
} scalar;

static void json_value(mt_strbuf *sb, double v) {
    if (isnan(v)) mt_strbuf_puts(sb, "NaN");
    else if (isinf(v)) mt_strbuf_puts(sb, v > 0 ? "Infinity" : "-Infinity");
    else mt_strbuf_printf(sb, "%.17g", v);
}

/* {"tag": [[step, value, wall], ...]} with the tags in first-seen order;
 * bad_index >= 0 writes that scalar's value changed by 1e-3. */
static int write_expected(const char *path, const scalar *sc, int n, int bad_index, int drop_last) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_puts(&sb, "{");
    int ntag = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= !strcmp(sc[j].tag, sc[i].tag);
        if (seen) continue;
        mt_strbuf_puts(&sb, ntag++ ? ", " : "");
        mt_strbuf_json_string(&sb, sc[i].tag);
        mt_strbuf_puts(&sb, ": [");
        int k = 0;
        for (int j = i; j < n - drop_last; j++) {
            if (strcmp(sc[j].tag, sc[i].tag)) continue;
            mt_strbuf_printf(&sb, "%s[%lld, ", k++ ? ", " : "", (long long)sc[j].step);
            json_value(&sb, sc[j].value + (j == bad_index ? 1e-3 : 0));
            mt_strbuf_printf(&sb, ", %.17g]", sc[j].wall);
        }
        mt_strbuf_puts(&sb, "]");
    }
    mt_strbuf_puts(&sb, "}\n");
    char *text = mt_strbuf_take(&sb);
    mt_status s = mt_fs_write_atomic(path, text, strlen(text));
    free(text);
    CHECK_MSG(s == MT_OK, "write %s: %s", path, s == MT_OK ? "" : mt_error_msg());
    return s == MT_OK;
}

int main(void) {
    const char *cands[] = {getenv("MT_TB_PYTHON"), "/root/torchvenv/bin/python", "python3"};
    const char *py = NULL;
    for (int k = 0; k < 3 && !py; k++)
        if (python_ok(cands[k])) py = cands[k];
    if (!py) {
        printf("SKIP: no python that can import tensorboard (pip install tensorboard; or set MT_TB_PYTHON)\n");
        return MT_TEST_SKIP;
    }
    printf("python: %s\n", py);

    char dir[] = "/tmp/mt_tb_interop_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return mt_test_finish();
    }
    char logdir[1024];
    snprintf(logdir, sizeof logdir, "%s/run", dir);
    CHECK(mt_fs_mkdir_p(logdir) == MT_OK);

    static char long_tag[201];
    memset(long_tag, 'k', 200);
    memcpy(long_tag, "val/", 4);
    const double w0 = 1.7e9;
    const scalar sc[] = {
        {"train/loss", 10, 1.25, w0 + 1.0, 0},         {"train/lr", 10, 3e-4, w0 + 1.0, 0},
        {"train/samples_per_s", 10, 12.5, w0 + 1.0, 0}, {"train/loss", 20, 0.875, w0 + 2.5, 0},
        {"train/lr", 20, 2.9e-4, w0 + 2.5, 0},          {"val/dice_liver", 20, 0.4321, w0 + 3.0, 0},
        {"val/dice_mean", 20, 0.4321, w0 + 3.0, 0},     {long_tag, 20, -1e-20, w0 + 3.0, 0},
        {"train/peak_mem_mib", 20, NAN, w0 + 3.0, 0},   {"train/samples_per_s", 20, INFINITY, w0 + 3.0, 0},
        {"train/loss", 30, 0.5, w0 + 100.0, 1},         {"train/lr", 30, 2.5e-4, w0 + 100.0, 1},
        {"val/dice_liver", 30, 0.6, w0 + 101.25, 1},    {"train/loss", 40, 0.25, w0 + 102.0, 1},
    };
    const int n = (int)(sizeof sc / sizeof *sc);
    char files[2][1024] = {"", ""};
    for (int f = 0; f < 2; f++) {
        mt_tb_writer *w = NULL;
        mt_status s = mt_tb_open(&w, logdir);
        CHECK_MSG(s == MT_OK, "open: %s", s == MT_OK ? "" : mt_error_msg());
        if (s != MT_OK) break;
        snprintf(files[f], sizeof files[f], "%s", mt_tb_path(w));
        for (int i = 0; i < n; i++)
            if (sc[i].file == f) CHECK(mt_tb_scalar_at(w, sc[i].tag, sc[i].step, sc[i].value, sc[i].wall) == MT_OK);
        CHECK(mt_tb_close(w) == MT_OK);
        printf("wrote %s\n", files[f]);
    }

    char exp_ok[1024], exp_bad[1024], exp_drop[1024];
    snprintf(exp_ok, sizeof exp_ok, "%s/expected.json", dir);
    snprintf(exp_bad, sizeof exp_bad, "%s/expected_bad.json", dir);
    snprintf(exp_drop, sizeof exp_drop, "%s/expected_drop.json", dir);
    if (*files[1] && write_expected(exp_ok, sc, n, -1, 0) && write_expected(exp_bad, sc, n, 3, 0) &&
        write_expected(exp_drop, sc, n, -1, 1)) {
        printf("--- both files, as written\n");
        int rc = run_read(py, logdir, exp_ok);
        CHECK_MSG(rc == 0, "tb_read.py exited %d on the written files, expected 0", rc);
        printf("--- negative control: train/loss at step 20 expected 1e-3 larger\n");
        rc = run_read(py, logdir, exp_bad);
        CHECK_MSG(rc == 1, "tb_read.py exited %d with a wrong expectation, expected 1", rc);

        /* flip a bit of the last record's data CRC (the file's last 4 bytes):
         * TensorBoard must drop that record, so the full expectation fails
         * and the one without the last scalar passes */
        char *d = NULL;
        size_t len = 0;
        CHECK(mt_fs_read_file(files[1], &d, &len) == MT_OK && len > 4);
        if (d && len > 4) {
            d[len - 1] ^= 0x01;
            CHECK(mt_fs_write_atomic(files[1], d, len) == MT_OK);
            printf("--- negative control: corrupt data CRC of the last record\n");
            rc = run_read(py, logdir, exp_ok);
            CHECK_MSG(rc == 1, "tb_read.py exited %d on a corrupt CRC, expected 1", rc);
            printf("--- the same file, without the last scalar expected\n");
            rc = run_read(py, logdir, exp_drop);
            CHECK_MSG(rc == 0, "tb_read.py exited %d without the corrupt record, expected 0", rc);
        }
        free(d);
    }
    for (int f = 0; f < 2; f++)
        if (*files[f]) unlink(files[f]);
    unlink(exp_ok);
    unlink(exp_bad);
    unlink(exp_drop);
    rmdir(logdir);
    CHECK_MSG(rmdir(dir) == 0, "%s not empty at the end", dir);
    return mt_test_finish();
}
