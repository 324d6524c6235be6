/* LABELS: unit */
/* launch/config: the schema, YAML parsing, --set, error messages (position and
 * key for every class of bad input), explain, YAML round trip, the shipped
 * configs and the semantic checks. */
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/nccl.h"
#include "launch/fsutil.h"
#include "mt_test.h"

static char g_dir[256];

static const char *write_tmp(const char *name, const char *text) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    FILE *fp = fopen(p, "w");
    MT_CHECK(fp);
    fputs(text, fp);
    fclose(fp);
    return p;
}

/* Loading `text` as file `name` must fail with `code` and exactly the message
 * "<path><want>" (want starts with the ":line:col: key: ..." part). */
static void expect_file_error(const char *name, const char *text, mt_status code, const char *want) {
    const char *path = write_tmp(name, text);
    mt_config *cfg = (mt_config *)1;
    mt_error_clear();
    mt_status s = mt_config_load(&cfg, path, 0, NULL);
    char full[1024];
    snprintf(full, sizeof full, "%s%s", path, want);
    CHECK_MSG(s == code && cfg == NULL && !strcmp(mt_error_msg(), full),
              "%s: status %d (want %d)\n    got:  %s\n    want: %s", name, s, code, mt_error_msg(), full);
}

/* Like expect_file_error but only requires the message to start with path + prefix. */
static void expect_file_error_prefix(const char *name, const char *text, const char *prefix, const char *also) {
    const char *path = write_tmp(name, text);
    mt_config *cfg = NULL;
    mt_status s = mt_config_load(&cfg, path, 0, NULL);
    char full[1024];
    snprintf(full, sizeof full, "%s%s", path, prefix);
    CHECK_MSG(s == MT_ERR_CONFIG && !strncmp(mt_error_msg(), full, strlen(full)) && strstr(mt_error_msg(), also),
              "%s: got \"%s\", want prefix \"%s\" and \"%s\"", name, mt_error_msg(), full, also);
    mt_config_free(cfg);
}

static void expect_set_error(const char *arg, const char *want) {
    mt_config *cfg = mt_config_default();
    char *before = mt_config_to_yaml(cfg);
    mt_status s = mt_config_set(cfg, arg);
    CHECK_MSG(s == MT_ERR_CONFIG && !strcmp(mt_error_msg(), want), "--set %s\n    got:  %s\n    want: %s", arg,
              mt_error_msg(), want);
    char *after = mt_config_to_yaml(cfg);
    CHECK_MSG(!strcmp(before, after), "failed --set %s changed the config", arg);
    free(before);
    free(after);
    mt_config_free(cfg);
}

static void test_defaults(void) {
    int n;
    const mt_cfg_schema_entry *sc = mt_config_schema(&n);
    CHECK(n >= 50);
    mt_config *cfg = mt_config_default();
    /* every default is inside its own range (mt_config_default parses them with the same rules) */
    for (int i = 0; i < n; i++) {
        CHECK_MSG(mt_config_has_key(sc[i].key), "%s", sc[i].key);
        CHECK_MSG(!strcmp(mt_config_where(cfg, sc[i].key), "default"), "%s", sc[i].key);
        CHECK_MSG(sc[i].help && strlen(sc[i].help) > 10, "%s has no help", sc[i].key);
        for (int j = 0; j < i; j++) CHECK_MSG(strcmp(sc[i].key, sc[j].key), "duplicate key %s", sc[i].key);
    }
    CHECK(mt_config_get_int(cfg, "train.batch_size") == 2);
    CHECK(!strcmp(mt_config_get_string(cfg, "model.name"), "unet3d"));
    CHECK(!strcmp(mt_config_get_string(cfg, "run.dir"), "runs"));
    CHECK(!strcmp(mt_config_get_string(cfg, "run.name"), ""));
    CHECK(mt_config_get_enum(cfg, "model.norm") == 1); /* batch|instance|group */
    int nf;
    const int64_t *f = mt_config_get_int_list(cfg, "model.features", &nf);
    CHECK(nf == 3 && f[0] == 8 && f[1] == 16 && f[2] == 32);
    int nb;
    const double *b = mt_config_get_float_list(cfg, "optim.betas", &nb);
    CHECK(nb == 2 && b[0] == 0.9 && b[1] == 0.999);
    CHECK(mt_config_get_float(cfg, "optim.eps") == 1e-8);
    CHECK(mt_config_get_bool(cfg, "optim.nesterov") == 1);
    CHECK(mt_config_source(cfg) == NULL);
    CHECK(mt_config_check(cfg) == MT_OK);
    mt_device dev;
    CHECK(mt_config_device(cfg, &dev) == MT_OK && dev.type == MT_CPU);
    CHECK(!mt_config_has_key("model") && !mt_config_has_key("model.depth"));
    mt_config_free(cfg);
}

/* configs/default.yaml spells out exactly the built-in defaults */
static void test_shipped_configs(void) {
    mt_config *file = NULL, *def = mt_config_default();
    CHECK(mt_config_load(&file, MT_SOURCE_DIR "/configs/default.yaml", 0, NULL) == MT_OK);
    if (file) {
        char *a = mt_config_to_yaml(file), *b = mt_config_to_yaml(def);
        /* skip the first (comment) line, which names the source */
        CHECK_MSG(!strcmp(strchr(a, '\n'), strchr(b, '\n')),
                  "configs/default.yaml differs from the schema defaults:\n%s\nvs\n%s", a, b);
        /* its position: the line of "  features:" in the file, column of the value */
        char *text;
        size_t len;
        int line = 0;
        if (mt_fs_read_file(MT_SOURCE_DIR "/configs/default.yaml", &text, &len) == MT_OK) {
            const char *at = strstr(text, "\n  features: ");
            for (const char *q = text; at && q <= at; q++) line += *q == '\n';
            free(text);
        }
        char want[600];
        snprintf(want, sizeof want, "%s:%d:13", MT_SOURCE_DIR "/configs/default.yaml", line + 1);
        CHECK_MSG(line > 0 && !strcmp(mt_config_where(file, "model.features"), want), "%s vs %s",
                  mt_config_where(file, "model.features"), want);
        free(a);
        free(b);
        mt_config_free(file);
    }
    mt_config *u = NULL;
    CHECK(mt_config_load(&u, MT_SOURCE_DIR "/configs/unet3d.yaml", 0, NULL) == MT_OK);
    if (u) {
        int nf, np;
        const int64_t *f = mt_config_get_int_list(u, "model.features", &nf);
        const int64_t *p = mt_config_get_int_list(u, "data.patch_size", &np);
        CHECK(nf == 5 && f[0] == 32 && f[1] == 64 && f[2] == 128 && f[3] == 256 && f[4] == 320);
        CHECK(np == 3 && p[0] == 128 && p[1] == 128 && p[2] == 128);
        CHECK(!strcmp(mt_config_get_string(u, "train.precision"), "bf16-mixed"));
        CHECK(!strcmp(mt_config_get_string(u, "model.norm"), "instance"));
        CHECK(!strcmp(mt_config_get_string(u, "model.activation"), "leaky_relu"));
        CHECK(mt_config_get_int(u, "train.batch_size") == 2 && mt_config_get_int(u, "model.in_channels") == 1 &&
              mt_config_get_int(u, "model.out_channels") == 3);
        CHECK(mt_config_check(u) == MT_OK);
        mt_config_free(u);
    }
    /* every shipped config parses and passes the cross-key checks */
    DIR *dir = opendir(MT_SOURCE_DIR "/configs");
    CHECK(dir != NULL);
    int n_yaml = 0;
    for (struct dirent *e; dir && (e = readdir(dir));) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".yaml")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/configs/%s", MT_SOURCE_DIR, e->d_name);
        mt_config *c = NULL;
        mt_status s = mt_config_load(&c, path, 0, NULL);
        CHECK_MSG(s == MT_OK, "%s: %s", path, mt_error_msg());
        if (c) {
            s = mt_config_check(c);
            CHECK_MSG(s == MT_OK, "%s: %s", path, mt_error_msg());
            /* its run.device is a valid name (a GPU may be missing here, nothing else) */
            mt_device dev;
            s = mt_config_device(c, &dev);
            CHECK_MSG(s == MT_OK || (strstr(mt_error_msg(), "no usable GPU") ||
                                     strstr(mt_error_msg(), "without the CUDA backend")),
                      "%s: %s", path, mt_error_msg());
            n_yaml++;
        }
        mt_config_free(c);
    }
    if (dir) closedir(dir);
    CHECK_MSG(n_yaml >= 4, "shipped configs checked: %d", n_yaml);
    /* the hippocampus configs train on fold 0 of the shared splits, never on holdout */
    const char *hip[] = {"hippocampus.yaml", "hippocampus_cpu.yaml"};
    for (int k = 0; k < 2; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/configs/%s", MT_SOURCE_DIR, hip[k]);
        mt_config *c = NULL;
        if (mt_config_load(&c, path, 0, NULL) != MT_OK) continue;
        CHECK(!strcmp(mt_config_get_string(c, "data.source"), "hdf5"));
        CHECK(strstr(mt_config_get_string(c, "data.splits"), "Task04_Hippocampus/splits.json") != NULL);
        CHECK(mt_config_get_int(c, "data.fold") >= 0);
        mt_config_free(c);
    }
    mt_config_free(def);
}

static void test_valid_parse(void) {
    const char *text = "# comment\n"
                       "run:\n"
                       "  name: \"exp: one\"   # quoted, with a colon\n"
                       "  seed: 7\n"
                       "model:\n"
                       "  features: [4, 8, 16, 32]\n"
                       "  norm: group\n"
                       "  deep_supervision: yes\n"
                       "  dropout: .25\n"
                       "data:\n"
                       "  phantom:\n"
                       "    shape:\n"
                       "      - 48\n"
                       "      - 40\n"
                       "      - 32\n"
                       "  patch_size: [32, 32, 16]\n"
                       "optim.lr: 1e-2\n"
                       "optim:\n"
                       "  betas: [0.5, 0.75]\n"
                       "  nesterov: Off\n"
                       "sched:\n"
                       "train:\n"
                       "  steps: +30\n";
    const char *path = write_tmp("valid.yaml", text);
    const char *sets[] = {"train.batch_size=3", "model.activation=relu", "data.patch_size=16, 16,16",
                          "run.dir=/tmp/x y"};
    mt_config *cfg = NULL;
    CHECK(mt_config_load(&cfg, path, 4, sets) == MT_OK);
    if (!cfg) return;
    CHECK(!strcmp(mt_config_get_string(cfg, "run.name"), "exp: one"));
    CHECK(mt_config_get_int(cfg, "run.seed") == 7);
    int n;
    const int64_t *f = mt_config_get_int_list(cfg, "model.features", &n);
    CHECK(n == 4 && f[3] == 32);
    CHECK(!strcmp(mt_config_get_string(cfg, "model.norm"), "group") && mt_config_get_enum(cfg, "model.norm") == 2);
    CHECK(mt_config_get_bool(cfg, "model.deep_supervision") == 1);
    CHECK(mt_config_get_float(cfg, "model.dropout") == 0.25);
    const int64_t *sh = mt_config_get_int_list(cfg, "data.phantom.shape", &n);
    CHECK(n == 3 && sh[0] == 48 && sh[1] == 40 && sh[2] == 32);
    CHECK(mt_config_get_float(cfg, "optim.lr") == 0.01);
    const double *b = mt_config_get_float_list(cfg, "optim.betas", &n);
    CHECK(n == 2 && b[0] == 0.5 && b[1] == 0.75);
    CHECK(mt_config_get_bool(cfg, "optim.nesterov") == 0);
    CHECK(mt_config_get_int(cfg, "train.steps") == 30);
    /* --set wins over the file */
    CHECK(mt_config_get_int(cfg, "train.batch_size") == 3);
    CHECK(!strcmp(mt_config_get_string(cfg, "model.activation"), "relu"));
    const int64_t *p = mt_config_get_int_list(cfg, "data.patch_size", &n);
    CHECK(n == 3 && p[0] == 16 && p[1] == 16 && p[2] == 16);
    CHECK(!strcmp(mt_config_get_string(cfg, "run.dir"), "/tmp/x y"));
    /* where each value came from */
    char want[600];
    snprintf(want, sizeof want, "%s:6:13", path);
    CHECK_MSG(!strcmp(mt_config_where(cfg, "model.features"), want), "%s", mt_config_where(cfg, "model.features"));
    snprintf(want, sizeof want, "%s:13:7", path);
    CHECK_MSG(!strcmp(mt_config_where(cfg, "data.phantom.shape"), want), "%s",
              mt_config_where(cfg, "data.phantom.shape"));
    snprintf(want, sizeof want, "%s:17:11", path);
    CHECK_MSG(!strcmp(mt_config_where(cfg, "optim.lr"), want), "%s", mt_config_where(cfg, "optim.lr"));
    CHECK(!strcmp(mt_config_where(cfg, "train.batch_size"), "--set 'train.batch_size=3'"));
    CHECK(!strcmp(mt_config_where(cfg, "loss.name"), "default"));
    CHECK(!strcmp(mt_config_source(cfg), path));
    /* semantic error reported at the key's position */
    CHECK(mt_config_check(cfg) == MT_OK);
    CHECK(mt_config_set(cfg, "model.groups=3") == MT_OK);
    CHECK(mt_config_check(cfg) == MT_ERR_CONFIG &&
          !strcmp(mt_error_msg(), "--set 'model.groups=3': model.groups: 3 does not divide model.features[0] = 4"));
    mt_config_free(cfg);
    /* distributed.backend nccl in a build without NCCL: an error naming the key
     * (with NCCL the config is fine; the device is checked when training starts) */
    cfg = mt_config_default();
    CHECK(mt_config_set(cfg, "distributed.backend=mpi") == MT_OK && mt_config_check(cfg) == MT_OK);
    CHECK(mt_config_set(cfg, "distributed.backend=nccl") == MT_OK);
    if (mt_nccl_available())
        CHECK_MSG(mt_config_check(cfg) == MT_OK, "%s", mt_error_msg());
    else
        CHECK_MSG(mt_config_check(cfg) == MT_ERR_CONFIG && strstr(mt_error_msg(), "distributed.backend") &&
                      strstr(mt_error_msg(), "NCCL"),
                  "%s", mt_error_msg());
    mt_config_free(cfg);

    /* an empty file and a file of comments give the defaults */
    mt_config *e = NULL;
    CHECK(mt_config_load(&e, write_tmp("empty.yaml", ""), 0, NULL) == MT_OK && e &&
          mt_config_get_int(e, "train.steps") == 300);
    mt_config_free(e);
    CHECK(mt_config_load(&e, write_tmp("comments.yaml", "# nothing\n---\n"), 0, NULL) == MT_OK && e);
    mt_config_free(e);
}

static void test_semantic_errors(void) {
    const char *path = write_tmp("sem.yaml", "model:\n  features: [8, 16, 32, 64]\ndata:\n  patch_size: [32, 60, 32]\n"
                                             "  phantom:\n    shape: [64, 64, 64]\n");
    mt_config *cfg = NULL;
    CHECK(mt_config_load(&cfg, path, 0, NULL) == MT_OK);
    if (!cfg) return;
    char want[700];
    snprintf(want, sizeof want,
             "%s:4:15: data.patch_size: 60 (H) is not divisible by 2^(levels-1) = 8 (model.features has 4 levels)",
             path);
    CHECK_MSG(mt_config_check(cfg) == MT_ERR_CONFIG && !strcmp(mt_error_msg(), want), "%s", mt_error_msg());
    /* the trainer's own checks use the same hook */
    snprintf(want, sizeof want, "%s:2:13: model.features: too deep for this test", path);
    CHECK(mt_config_error(cfg, "model.features", "too deep for %s", "this test") == MT_ERR_CONFIG &&
          !strcmp(mt_error_msg(), want));
    snprintf(want, sizeof want, "%s: loss.name (default value): not good", path);
    CHECK(mt_config_error(cfg, "loss.name", "not good") == MT_ERR_CONFIG && !strcmp(mt_error_msg(), want));
    mt_config_free(cfg);
    cfg = mt_config_default();
    CHECK(mt_config_set(cfg, "data.val_cases=16") == MT_OK);
    CHECK(mt_config_check(cfg) == MT_ERR_CONFIG &&
          !strcmp(mt_error_msg(),
                  "--set 'data.val_cases=16': data.val_cases: 16 leaves no training case (data.phantom.num_cases = 16)"));
    CHECK(mt_config_set(cfg, "data.val_cases=2") == MT_OK && mt_config_check(cfg) == MT_OK);
    CHECK(mt_config_set(cfg, "data.patch_size=[48,32,32]") == MT_OK && mt_config_check(cfg) == MT_ERR_CONFIG &&
          strstr(mt_error_msg(), "48 (D) is larger than data.phantom.shape (40)"));
    CHECK(mt_config_set(cfg, "data.patch_size=[32,32,32]") == MT_OK);
    CHECK(mt_config_set(cfg, "model.out_channels=2") == MT_OK && mt_config_check(cfg) == MT_ERR_CONFIG &&
          strstr(mt_error_msg(), "model.out_channels: 2, but loss.name = dice_ce"));
    CHECK(mt_config_set(cfg, "loss.name=dice_bce") == MT_OK && mt_config_check(cfg) == MT_OK);
    CHECK(mt_config_set(cfg, "sched.warmup_steps=300") == MT_OK && mt_config_check(cfg) == MT_ERR_CONFIG &&
          strstr(mt_error_msg(), "sched.warmup_steps: 300 is not less than train.steps = 300"));
    CHECK(mt_config_set(cfg, "sched.warmup_steps=10") == MT_OK);
    CHECK(mt_config_set(cfg, "data.source=hdf5") == MT_OK && mt_config_check(cfg) == MT_ERR_CONFIG &&
          !strcmp(mt_error_msg(), "data.hdf5.path (default value): must be set when data.source is hdf5"));
    mt_device dev;
    CHECK(mt_config_set(cfg, "run.device=cuda") == MT_OK);
    if (!mt_device_available((mt_device){MT_CUDA, 0}))
        CHECK(mt_config_device(cfg, &dev) == MT_ERR_CONFIG && strstr(mt_error_msg(), "run.device: device 'cuda'") &&
              strstr(mt_error_msg(), mt_backend_get(MT_CUDA) ? "no usable GPU" : "without the CUDA backend"));
    /* run.device is a string checked by mt_device_parse: cuda:N and bad names */
    CHECK(mt_config_set(cfg, "run.device=cuda:1") == MT_OK && mt_config_device(cfg, &dev) == MT_ERR_CONFIG &&
          strstr(mt_error_msg(), "--set 'run.device=cuda:1': run.device: device 'cuda:1'"));
    CHECK(mt_config_set(cfg, "run.device=gpu") == MT_OK && mt_config_device(cfg, &dev) == MT_ERR_CONFIG &&
          strstr(mt_error_msg(), "run.device: unknown device 'gpu' (expected auto, cpu, cuda or cuda:N)"));
    CHECK(mt_config_set(cfg, "run.device=auto") == MT_OK && mt_config_device(cfg, &dev) == MT_OK);
    mt_config_free(cfg);
}

static void test_file_errors(void) {
    /* malformed YAML */
    expect_file_error_prefix("bad1.yaml", "model:\n  features: [8, 16\n  norm: batch\n", ":3:",
                             "malformed YAML");
    expect_file_error("bad2.yaml", "model:\n  norm: batch\n    x: 1\n", MT_ERR_CONFIG,
                      ":3:6: malformed YAML: mapping values are not allowed in this context");
    expect_file_error_prefix("bad3.yaml", "model:\n\tnorm: batch\n", ":2:1: malformed YAML", "cannot start any token");
    expect_file_error("bad4.yaml", "run:\n  name: a\n---\nrun:\n  name: b\n", MT_ERR_CONFIG,
                      ":4:1: a second YAML document; a config holds one");
    expect_file_error("bad5.yaml", "- 1\n- 2\n", MT_ERR_CONFIG,
                      ":1:1: the config must be a mapping of sections (run:, data:, model:, loss:, optim:, sched:, "
                      "train:)");
    /* unknown keys, with suggestions */
    expect_file_error("unk1.yaml", "model:\n  featurs: [8, 16]\n", MT_ERR_CONFIG,
                      ":2:3: model.featurs: unknown key (did you mean \"model.features\"?); `medtrain config "
                      "--explain` lists the keys");
    expect_file_error("unk2.yaml", "model:\n  lr: 0.1\n", MT_ERR_CONFIG,
                      ":2:3: model.lr: unknown key (did you mean \"optim.lr\"?); `medtrain config --explain` lists "
                      "the keys");
    expect_file_error("unk3.yaml", "train:\n  steps: 5\nbogus_section:\n  x: 1\n", MT_ERR_CONFIG,
                      ":3:1: bogus_section: unknown key; `medtrain config --explain` lists the keys");
    expect_file_error("unk4.yaml", "data:\n  phantom:\n    shapes: [1, 2, 3]\n", MT_ERR_CONFIG,
                      ":3:5: data.phantom.shapes: unknown key (did you mean \"data.phantom.shape\"?); `medtrain config "
                      "--explain` lists the keys");
    /* wrong types */
    expect_file_error("type1.yaml", "train:\n  batch_size: abc\n", MT_ERR_CONFIG,
                      ":2:15: train.batch_size: expected integer in [1, 4096], got \"abc\"");
    expect_file_error("type2.yaml", "train:\n  batch_size: 2.5\n", MT_ERR_CONFIG,
                      ":2:15: train.batch_size: expected integer in [1, 4096], got 2.5");
    expect_file_error("type3.yaml", "train:\n  steps: \"8\"\n", MT_ERR_CONFIG,
                      ":2:10: train.steps: expected integer >= 1, got quoted string \"8\"");
    expect_file_error("type4.yaml", "optim:\n  nesterov: maybe\n", MT_ERR_CONFIG,
                      ":2:13: optim.nesterov: expected true or false, got \"maybe\"");
    expect_file_error("type5.yaml", "model:\n  features: 8\n", MT_ERR_CONFIG,
                      ":2:13: model.features: expected a list of 2 to 8 integers in [1, 4096], got 8");
    expect_file_error("type6.yaml", "model:\n  features: [8, x16, 32]\n", MT_ERR_CONFIG,
                      ":2:17: model.features[1]: expected integer in [1, 4096], got \"x16\"");
    expect_file_error("type7.yaml", "model: 3\n", MT_ERR_CONFIG,
                      ":1:8: model: is a section; expected a mapping of its keys (model.*), got 3");
    expect_file_error("type8.yaml", "run:\n  name: {a: 1}\n", MT_ERR_CONFIG,
                      ":2:9: run.name: expected a string, got a mapping");
    expect_file_error("type9.yaml", "optim:\n  lr:\n", MT_ERR_CONFIG,
                      ":2:6: optim.lr: expected number in (0, 10], got an empty value");
    expect_file_error("type10.yaml", "optim:\n  lr: .nan\n", MT_ERR_CONFIG,
                      ":2:7: optim.lr: expected number in (0, 10], got \".nan\"");
    /* out of range */
    expect_file_error("range1.yaml", "train:\n  batch_size: 0\n", MT_ERR_CONFIG,
                      ":2:15: train.batch_size: expected integer in [1, 4096], got 0");
    expect_file_error("range2.yaml", "model:\n  dropout: 1\n", MT_ERR_CONFIG,
                      ":2:12: model.dropout: expected number in [0, 1), got 1");
    expect_file_error("range3.yaml", "optim:\n  lr: 0\n", MT_ERR_CONFIG,
                      ":2:7: optim.lr: expected number in (0, 10], got 0");
    expect_file_error("range4.yaml", "data:\n  patch_size: [32, 32]\n", MT_ERR_CONFIG,
                      ":2:15: data.patch_size: expected a list of 3 integers in [4, 1024], got 2 items");
    expect_file_error("range5.yaml", "optim:\n  betas: [0.9, 1.0]\n", MT_ERR_CONFIG,
                      ":2:16: optim.betas[1]: expected number in [0, 1), got 1.0");
    expect_file_error("range6.yaml", "run:\n  seed: 99999999999999999999999\n", MT_ERR_CONFIG,
                      ":2:9: run.seed: expected integer in [0, 4294967295], got 99999999999999999999999");
    /* bad enum */
    expect_file_error("enum1.yaml", "model:\n  norm: bach\n", MT_ERR_CONFIG,
                      ":2:9: model.norm: expected one of batch, instance, group, got \"bach\"");
    expect_file_error("enum2.yaml", "train:\n  precision: BF16\n", MT_ERR_CONFIG,
                      ":2:14: train.precision: expected one of fp32, tf32, bf16-mixed, got \"BF16\"");
    /* duplicates */
    expect_file_error("dup1.yaml", "train:\n  steps: 5\n  steps: 6\n", MT_ERR_CONFIG,
                      ":3:3: train.steps: key given twice (first at line 2)");
    expect_file_error("dup2.yaml", "train:\n  steps: 5\ntrain.steps: 6\n", MT_ERR_CONFIG,
                      ":3:1: train.steps: key given twice (first at line 2)");
    /* missing file */
    mt_config *cfg = (mt_config *)1;
    const char *missing = "/nonexistent/dir/cfg.yaml";
    CHECK(mt_config_load(&cfg, missing, 0, NULL) == MT_ERR_IO && cfg == NULL &&
          !strcmp(mt_error_msg(), "config: cannot open /nonexistent/dir/cfg.yaml: No such file or directory"));
    CHECK(mt_config_load(&cfg, g_dir, 0, NULL) == MT_ERR_IO && strstr(mt_error_msg(), "is a directory"));
    /* the message survives a --set error after a good file: names the argument */
    const char *okp = write_tmp("ok.yaml", "train:\n  steps: 5\n");
    const char *bad_set[] = {"train.steps=7", "train.batch_size=two"};
    CHECK(mt_config_load(&cfg, okp, 2, bad_set) == MT_ERR_CONFIG && cfg == NULL &&
          !strcmp(mt_error_msg(),
                  "--set 'train.batch_size=two': train.batch_size: expected integer in [1, 4096], got \"two\""));
}

static void test_set_errors(void) {
    expect_set_error("train.steps", "--set 'train.steps': expected KEY=VALUE (e.g. --set optim.lr=0.01)");
    expect_set_error("=5", "--set '=5': expected KEY=VALUE (e.g. --set optim.lr=0.01)");
    expect_set_error("train.stepz=5",
                     "--set 'train.stepz=5': train.stepz: unknown key (did you mean \"train.steps\"?); `medtrain "
                     "config --explain` lists the keys");
    expect_set_error("model=5", "--set 'model=5': model is a section; set one of its keys (model.*)");
    expect_set_error("model.depth=abc",
                     "--set 'model.depth=abc': model.depth: unknown key; `medtrain config --explain` lists the keys");
    expect_set_error("optim.lr=fast", "--set 'optim.lr=fast': optim.lr: expected number in (0, 10], got \"fast\"");
    expect_set_error("optim.lr=", "--set 'optim.lr=': optim.lr: expected number in (0, 10], got an empty value");
    expect_set_error("model.features=[8,16", "--set 'model.features=[8,16': malformed YAML: did not find expected ',' "
                                             "or ']' (while parsing a flow sequence)");
    expect_set_error("model.features=8,x,32",
                     "--set 'model.features=8,x,32': model.features[1]: expected integer in [1, 4096], got \"x\"");
    expect_set_error("model.features=[8]",
                     "--set 'model.features=[8]': model.features: expected a list of 2 to 8 integers in [1, 4096], "
                     "got 1 item");
    expect_set_error("model.norm=layer",
                     "--set 'model.norm=layer': model.norm: expected one of batch, instance, group, got \"layer\"");
    expect_set_error("model.deep_supervision=2",
                     "--set 'model.deep_supervision=2': model.deep_supervision: expected true or false, got 2");
    /* strings are verbatim; surrounding spaces in the key are ignored */
    mt_config *cfg = mt_config_default();
    CHECK(mt_config_set(cfg, " run.name = a: b # c") == MT_OK && !strcmp(mt_config_get_string(cfg, "run.name"), " a: b # c"));
    CHECK(mt_config_set(cfg, "optim.betas=0.8,0.9") == MT_OK);
    int n;
    const double *b = mt_config_get_float_list(cfg, "optim.betas", &n);
    CHECK(n == 2 && b[0] == 0.8 && b[1] == 0.9);
    mt_config_free(cfg);
}

static void test_explain(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    mt_config_explain(fp);
    fclose(fp);
    int n;
    const mt_cfg_schema_entry *sc = mt_config_schema(&n);
    for (int i = 0; i < n; i++) {
        char pat[128];
        snprintf(pat, sizeof pat, "  %s ", sc[i].key);
        const char *line = strstr(text, pat);
        CHECK_MSG(line != NULL, "explain lacks %s", sc[i].key);
        if (!line) continue;
        const char *eol = strchr(line, '\n');
        CHECK_MSG(eol && strstr(line, "; default ") && strstr(line, "; default ") < eol, "explain: %s has no default",
                  sc[i].key);
        /* the help text follows (its first words) */
        char first[24];
        snprintf(first, sizeof first, "%s", sc[i].help);
        char *sp = strrchr(first, ' ');
        if (sp) *sp = 0;
        CHECK_MSG(eol && !strncmp(eol + 1, "      ", 6) && !strncmp(eol + 7, first, strlen(first)),
                  "explain: %s lacks its help", sc[i].key);
    }
    CHECK(strstr(text, "model.features               a list of 2 to 8 integers in [1, 4096]; default [8, 16, 32]"));
    CHECK(strstr(text, "model.norm                   one of batch, instance, group; default instance"));
    CHECK(strstr(text, "optim.lr                     number in (0, 10]; default 0.01"));
    free(text);
}

static int configs_equal(const mt_config *a, const mt_config *b) {
    int n, ok = 1;
    const mt_cfg_schema_entry *sc = mt_config_schema(&n);
    for (int i = 0; i < n; i++) {
        const char *k = sc[i].key;
        int same = 1;
        switch (sc[i].type) {
        case MT_CFG_INT: same = mt_config_get_int(a, k) == mt_config_get_int(b, k); break;
        case MT_CFG_FLOAT: same = mt_config_get_float(a, k) == mt_config_get_float(b, k); break;
        case MT_CFG_BOOL: same = mt_config_get_bool(a, k) == mt_config_get_bool(b, k); break;
        case MT_CFG_STRING:
        case MT_CFG_ENUM: same = !strcmp(mt_config_get_string(a, k), mt_config_get_string(b, k)); break;
        case MT_CFG_INT_LIST: {
            int na, nb;
            const int64_t *x = mt_config_get_int_list(a, k, &na), *y = mt_config_get_int_list(b, k, &nb);
            same = na == nb && !memcmp(x, y, (size_t)na * sizeof *x);
            break;
        }
        case MT_CFG_FLOAT_LIST: {
            int na, nb;
            const double *x = mt_config_get_float_list(a, k, &na), *y = mt_config_get_float_list(b, k, &nb);
            same = na == nb;
            for (int j = 0; same && j < na; j++) same = x[j] == y[j];
            break;
        }
        }
        if (!same) fprintf(stderr, "  differs: %s\n", k);
        ok &= same;
    }
    return ok;
}

static void test_round_trip(void) {
    const char *sets[] = {
        "run.name=we\"ird: \\name\t# not a comment\x01 \xc3\xa9",
        "run.dir=yes",  /* a string that looks like a bool */
        "data.hdf5.path=123",
        "run.seed=4294967295",
        "optim.lr=0.1",
        "optim.eps=1.2345678901234567e-09",
        "optim.weight_decay=0.30000000000000004",
        "sched.eta_min=1e-07",
        "optim.betas=[0.123456789012345678, 0.99]",
        "model.features=[3, 5, 7, 11, 13, 17, 19, 23]",
        "model.deep_supervision=true",
        "model.negative_slope=0.2",
        "train.precision=bf16-mixed",
        "train.steps=1000000000000",
        "loss.pos_weight=1000000",
        "data.phantom.shape=8,9,1024",
    };
    int nsets = (int)(sizeof sets / sizeof sets[0]);
    mt_config *a = NULL;
    CHECK(mt_config_parse_string(&a, "model:\n  norm: batch\n", "<test>", nsets, sets) == MT_OK);
    if (!a) return;
    char *y = mt_config_to_yaml(a);
    mt_config *b = NULL;
    CHECK_MSG(mt_config_parse_string(&b, y, "<round trip>", 0, NULL) == MT_OK, "%s\n%s", mt_error_msg(), y);
    if (b) {
        CHECK_MSG(configs_equal(a, b), "round trip changed values:\n%s", y);
        /* every key was written, so every key now comes from the text */
        int n;
        const mt_cfg_schema_entry *sc = mt_config_schema(&n);
        int all = 1;
        for (int i = 0; i < n; i++) all &= !strncmp(mt_config_where(b, sc[i].key), "<round trip>:", 13);
        CHECK_MSG(all, "resolved YAML misses keys");
        char *y2 = mt_config_to_yaml(b);
        CHECK(!strcmp(strchr(y, '\n'), strchr(y2, '\n')));
        free(y2);
        mt_config_free(b);
    }
    /* a clone is equal and independent */
    mt_config *c = mt_config_clone(a);
    CHECK(configs_equal(a, c));
    CHECK(mt_config_set(c, "model.features=[8,8]") == MT_OK);
    int nf;
    mt_config_get_int_list(a, "model.features", &nf);
    CHECK(nf == 8);
    mt_config_free(c);
    free(y);
    mt_config_free(a);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mt_test_config_XXXXXX");
    MT_CHECK(mkdtemp(g_dir));
    test_defaults();
    test_shipped_configs();
    test_valid_parse();
    test_semantic_errors();
    test_file_errors();
    test_set_errors();
    test_explain();
    test_round_trip();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return mt_test_finish();
}
