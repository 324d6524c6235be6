/* LABELS: unit */
/* launch/fsutil: mkdir -p, atomic writes, JSON lines, the run directory
 * (config.yaml, log tee, metrics.jsonl, checkpoints with last + pruning) and
 * --resume resolution. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/config.h"
#include "launch/fsutil.h"
#include "launch/safetensors.h"
#include "mt_test.h"

static char g_dir[256];

static char *tmp_path(const char *name) {
    static char buf[16][512];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path) {
    char *d = NULL;
    size_t n;
    if (mt_fs_read_file(path, &d, &n) != MT_OK) return NULL;
    return d;
}

static void test_strbuf(void) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    char *e = mt_strbuf_take(&sb);
    CHECK(e && !strcmp(e, ""));
    free(e);
    mt_strbuf_printf(&sb, "%d-%s", 42, "x");
    for (int i = 0; i < 1000; i++) mt_strbuf_puts(&sb, "ab");
    CHECK(sb.len == 2004 && !strncmp(sb.data, "42-xabab", 8) && sb.data[2004] == 0);
    mt_strbuf_free(&sb);
    double vals[] = {0.1, 1e-8, 3.0, 10.0, 123456.789, 1.0 / 3.0, -2.5e-300, 1e300};
    const char *want[] = {"0.1", "1e-08", "3", "10", "123456.789", "0.3333333333333333", "-2.5e-300", "1e+300"};
    for (int i = 0; i < 8; i++) {
        mt_strbuf_init(&sb);
        mt_strbuf_double(&sb, vals[i]);
        CHECK_MSG(!strcmp(sb.data, want[i]) && strtod(sb.data, NULL) == vals[i], "%s vs %s", sb.data, want[i]);
        mt_strbuf_free(&sb);
    }
    mt_strbuf_init(&sb);
    mt_strbuf_json_string(&sb, "a\"b\\c\n\t\x01\x1f\xc3\xa9/");
    CHECK(!strcmp(sb.data, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\xc3\xa9/\""));
    mt_strbuf_free(&sb);
}

static void test_files(void) {
    const char *deep = tmp_path("a/b/c/d");
    CHECK(mt_fs_mkdir_p(deep) == MT_OK && mt_fs_is_dir(deep));
    CHECK(mt_fs_mkdir_p(deep) == MT_OK);                 /* exists: fine */
    CHECK(mt_fs_mkdir_p(tmp_path("a/b/c/d/")) == MT_OK); /* trailing slash */
    const char *f = tmp_path("a/file");
    CHECK(mt_fs_write_atomic(f, "hello", 5) == MT_OK && mt_fs_is_file(f) && !mt_fs_is_dir(f));
    char *s = slurp(f);
    CHECK(s && !strcmp(s, "hello"));
    free(s);
    /* a file in the way */
    CHECK(mt_fs_mkdir_p(tmp_path("a/file/sub")) == MT_ERR_IO && strstr(mt_error_msg(), "a/file"));
    /* overwrite is atomic: no temp files remain */
    CHECK(mt_fs_write_atomic(f, "second version", 14) == MT_OK);
    s = slurp(f);
    CHECK(s && !strcmp(s, "second version"));
    free(s);
    CHECK(count_entries(tmp_path("a"), ".file.tmp") == 0);
    /* abort leaves the destination as it was */
    mt_atomic_file af;
    CHECK(mt_fs_atomic_open(&af, f) == MT_OK);
    CHECK(mt_fs_atomic_write(&af, "partial", 7) == MT_OK);
    CHECK(count_entries(tmp_path("a"), ".file.tmp") == 1);
    mt_fs_atomic_abort(&af);
    s = slurp(f);
    CHECK(s && !strcmp(s, "second version"));
    free(s);
    CHECK(count_entries(tmp_path("a"), ".file.tmp") == 0);
    /* streaming writes */
    CHECK(mt_fs_atomic_open(&af, f) == MT_OK);
    for (int i = 0; i < 100; i++) mt_fs_atomic_write(&af, "0123456789", 10);
    CHECK(mt_fs_atomic_commit(&af) == MT_OK);
    struct stat st;
    CHECK(stat(f, &st) == 0 && st.st_size == 1000);
    /* into a directory that does not exist: error naming the path, nothing written */
    const char *nodir = tmp_path("nodir/x.bin");
    CHECK(mt_fs_write_atomic(nodir, "x", 1) == MT_ERR_IO && strstr(mt_error_msg(), nodir));
    CHECK(!mt_fs_is_file(nodir));
    char *d;
    size_t n;
    CHECK(mt_fs_read_file(tmp_path("missing"), &d, &n) == MT_ERR_IO && strstr(mt_error_msg(), "missing"));
}

static void test_json(void) {
    mt_json_obj o;
    mt_json_obj_begin(&o);
    mt_json_obj_int(&o, "step", 120);
    mt_json_obj_float(&o, "loss", 0.25);
    mt_json_obj_float(&o, "bad", NAN);
    mt_json_obj_float(&o, "big", 1e20);
    mt_json_obj_string(&o, "phase", "tr\"ain");
    mt_json_obj_bool(&o, "best", 1);
    CHECK(!strcmp(mt_json_obj_end(&o),
                  "{\"step\": 120, \"loss\": 0.25, \"bad\": null, \"big\": 1e+20, \"phase\": \"tr\\\"ain\", \"best\": true}"));
    mt_json_obj_free(&o);
}

static mt_config *run_config(const char *name) {
    mt_config *cfg = mt_config_default();
    char a[600], b[600];
    snprintf(a, sizeof a, "run.dir=%s", tmp_path("runs"));
    snprintf(b, sizeof b, "run.name=%s", name);
    MT_CHECK(mt_config_set(cfg, a) == MT_OK && mt_config_set(cfg, b) == MT_OK);
    MT_CHECK(mt_config_set(cfg, "train.steps=77") == MT_OK);
    return cfg;
}

static void save_step(mt_rundir *rd, int64_t step) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_tensor *w = mt_tensor_full(MT_F32, MT_SHAPE(3, 2), (double)step, MT_DEVICE_CPU);
    mt_safetensors_add(&st, "w", w);
    mt_safetensors_set_meta(&st, "step", "x");
    char *written = NULL;
    CHECK(mt_rundir_save_checkpoint(rd, &st, step, 2, &written) == MT_OK);
    CHECK(written && strstr(written, "checkpoints/step_") && mt_fs_is_file(written));
    free(written);
    mt_tensor_release(w);
    mt_safetensors_free(&st);
}

static double ckpt_value(const char *path) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    double v = -1;
    if (mt_safetensors_load(&st, path) == MT_OK && mt_safetensors_find(&st, "w"))
        v = mt_tensor_get_flat(mt_safetensors_find(&st, "w"), 5);
    mt_safetensors_free(&st);
    return v;
}

static void test_rundir(void) {
    mt_config *cfg = run_config("exp1");
    mt_rundir rd;
    CHECK(mt_rundir_open(&rd, cfg, NULL) == MT_OK);
    CHECK(!strcmp(rd.name, "exp1") && !strcmp(rd.path, tmp_path("runs/exp1")));
    CHECK(mt_fs_is_dir(tmp_path("runs/exp1/checkpoints")));
    /* config.yaml is the resolved config */
    mt_config *back = NULL;
    CHECK(mt_config_load(&back, tmp_path("runs/exp1/config.yaml"), 0, NULL) == MT_OK && back &&
          mt_config_get_int(back, "train.steps") == 77 && !strcmp(mt_config_get_string(back, "run.name"), "exp1"));
    mt_config_free(back);
    /* log tee and metrics */
    mt_rundir_log(&rd, "step %d loss %.3f\n", 1, 0.5);
    mt_json_obj o;
    mt_json_obj_begin(&o);
    mt_json_obj_int(&o, "step", 1);
    mt_json_obj_end(&o);
    CHECK(mt_rundir_metrics(&rd, &o) == MT_OK);
    mt_json_obj_free(&o);
    mt_json_obj_begin(&o);
    mt_json_obj_int(&o, "step", 2);
    mt_json_obj_end(&o);
    CHECK(mt_rundir_metrics(&rd, &o) == MT_OK);
    mt_json_obj_free(&o);
    char *log = slurp(tmp_path("runs/exp1/train.log")), *met = slurp(tmp_path("runs/exp1/metrics.jsonl"));
    CHECK(log && !strcmp(log, "step 1 loss 0.500\n"));
    CHECK(met && !strcmp(met, "{\"step\": 1}\n{\"step\": 2}\n"));
    free(log);
    free(met);
    /* checkpoints: keep the newest 2, last -> newest */
    for (int64_t s = 10; s <= 40; s += 10) save_step(&rd, s);
    CHECK(count_entries(rd.ckpt_dir, "step_") == 2);
    CHECK(mt_fs_is_file(tmp_path("runs/exp1/checkpoints/step_00000030.safetensors")));
    CHECK(mt_fs_is_file(tmp_path("runs/exp1/checkpoints/step_00000040.safetensors")));
    CHECK(ckpt_value(tmp_path("runs/exp1/checkpoints/last.safetensors")) == 40);
    CHECK(count_entries(rd.ckpt_dir, ".") == 0); /* no temp files */
    mt_rundir_close(&rd);

    /* the same name again without --resume: error naming the directory */
    CHECK(mt_rundir_open(&rd, cfg, NULL) == MT_ERR_CONFIG && strstr(mt_error_msg(), tmp_path("runs/exp1")) &&
          strstr(mt_error_msg(), "--resume"));
    /* --resume resolution */
    char *ck = NULL;
    CHECK(mt_rundir_resolve_resume(&ck, NULL, cfg) == MT_OK && ck &&
          !strcmp(ck, tmp_path("runs/exp1/checkpoints/last.safetensors")));
    free(ck);
    CHECK(mt_rundir_resolve_resume(&ck, tmp_path("runs/exp1"), NULL) == MT_OK && ck &&
          !strcmp(ck, tmp_path("runs/exp1/checkpoints/last.safetensors")));
    free(ck);
    CHECK(mt_rundir_resolve_resume(&ck, tmp_path("runs/exp1/checkpoints/step_00000030.safetensors"), NULL) == MT_OK &&
          ck && ckpt_value(ck) == 30);
    /* resuming reopens the checkpoint's run directory and appends */
    mt_config *other = run_config("something-else");
    CHECK(mt_rundir_open(&rd, other, ck) == MT_OK && !strcmp(rd.path, tmp_path("runs/exp1")));
    mt_rundir_log(&rd, "resumed\n");
    mt_rundir_close(&rd);
    free(ck);
    log = slurp(tmp_path("runs/exp1/train.log"));
    CHECK(log && !strcmp(log, "step 1 loss 0.500\nresumed\n"));
    free(log);
    CHECK(!mt_fs_is_dir(tmp_path("runs/something-else")));
    /* without last.safetensors the highest step wins */
    unlink(tmp_path("runs/exp1/checkpoints/last.safetensors"));
    CHECK(mt_rundir_resolve_resume(&ck, tmp_path("runs/exp1"), NULL) == MT_OK && ck && ckpt_value(ck) == 40);
    free(ck);
    /* errors */
    CHECK(mt_rundir_resolve_resume(&ck, tmp_path("runs/nope"), NULL) == MT_ERR_IO && strstr(mt_error_msg(), "runs/nope"));
    CHECK(mt_rundir_resolve_resume(&ck, tmp_path("a"), NULL) == MT_ERR_IO && strstr(mt_error_msg(), "no checkpoint"));
    mt_config *noname = run_config("");
    CHECK(mt_rundir_resolve_resume(&ck, NULL, noname) == MT_ERR_CONFIG && strstr(mt_error_msg(), "run.name"));
    mt_config *bad = run_config("a/b");
    CHECK(mt_rundir_open(&rd, bad, NULL) == MT_ERR_CONFIG && strstr(mt_error_msg(), "run.name"));
    /* automatic names: <stem>-<date>-<time>, made unique */
    mt_rundir r1, r2;
    CHECK(mt_rundir_open(&r1, noname, NULL) == MT_OK && mt_rundir_open(&r2, noname, NULL) == MT_OK);
    CHECK_MSG(!strncmp(r1.name, "default-", 8) && strlen(r1.name) == 8 + 15, "%s", r1.name);
    CHECK(strcmp(r1.path, r2.path) && mt_fs_is_dir(r1.path) && mt_fs_is_dir(r2.path));
    mt_rundir_close(&r1);
    mt_rundir_close(&r2);
    mt_config_free(noname);
    mt_config_free(bad);
    mt_config_free(other);
    mt_config_free(cfg);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mt_test_fsutil_XXXXXX");
    MT_CHECK(mkdtemp(g_dir));
    test_strbuf();
    test_files();
    test_json();
    test_rundir();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return mt_test_finish();
}
