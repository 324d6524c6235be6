/* LABELS: integration */
/* The medtrain executable ($MT_MEDTRAIN, set by CTest): help, version, config
 * actions, and bad input (unknown flags and commands, missing or bad config
 * files, bad --set, bad --resume, semantic errors) giving exit status 2 and
 * "medtrain: error: ..." messages. Skipped (77) when the binary is absent.
 * Nothing here starts a training run. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/fsutil.h"
#include "mt_test.h"

static const char *g_bin;
static char g_dir[256];
static char *g_out, *g_err;

/* Runs medtrain with `args` (shell words) in the temp dir; returns its exit status. */
static int run(const char *args) {
    free(g_out);
    free(g_err);
    g_out = g_err = NULL;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >out.txt 2>err.txt", g_dir, g_bin, args);
    int st = system(cmd);
    char p[600];
    size_t n;
    snprintf(p, sizeof p, "%s/out.txt", g_dir);
    if (mt_fs_read_file(p, &g_out, &n) != MT_OK) g_out = strdup("");
    snprintf(p, sizeof p, "%s/err.txt", g_dir);
    if (mt_fs_read_file(p, &g_err, &n) != MT_OK) g_err = strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void expect(const char *args, int code, const char *in_err, const char *in_out) {
    int rc = run(args);
    int ok = rc == code;
    if (in_err) ok &= strstr(g_err, in_err) != NULL;
    if (in_out) ok &= strstr(g_out, in_out) != NULL;
    CHECK_MSG(ok, "medtrain %s: exit %d (want %d)\n  stderr: %s  stdout: %.300s\n  wanted in stderr: %s", args, rc,
              code, g_err, g_out, in_err ? in_err : "-");
}

static void write_file(const char *name, const char *text) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *fp = fopen(p, "w");
    MT_CHECK(fp);
    fputs(text, fp);
    fclose(fp);
}

int main(void) {
    g_bin = getenv("MT_MEDTRAIN");
    if (!g_bin || access(g_bin, X_OK)) {
        printf("skipped: medtrain executable not found (MT_MEDTRAIN=%s)\n", g_bin ? g_bin : "unset");
        return MT_TEST_SKIP;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/mt_test_cli_XXXXXX");
    MT_CHECK(mkdtemp(g_dir));

    expect("--help", 0, NULL, "usage: medtrain");
    expect("config --help", 0, NULL, "usage: medtrain");
    expect("--version", 0, NULL, "medtrain " MT_VERSION);

    /* usage errors */
    expect("--bogus", 2, "medtrain: error: unknown option '--bogus'", NULL);
    expect("train --bogus", 2, "medtrain: error: unknown option '--bogus'", NULL);
    expect("frobnicate", 2, "medtrain: error: unknown command 'frobnicate'", NULL);
    expect("a.yaml b.yaml", 2, "medtrain: error: unexpected argument 'b.yaml'", NULL);
    expect("--set", 2, "medtrain: error: --set needs KEY=VALUE", NULL);
    expect("config", 2, "config needs exactly one of --explain, --print, --check", NULL);
    expect("config --explain --print", 2, "config needs exactly one of", NULL);
    expect("config --explain x.yaml", 2, "takes no config file", NULL);
    expect("config --resume", 2, "unknown option '--resume'", NULL);

    /* config files */
    expect("missing.yaml", 2, "medtrain: error: config: cannot open missing.yaml: No such file or directory", NULL);
    expect("train missing.yaml", 2, "cannot open missing.yaml", NULL);
    write_file("bad.yaml", "model:\n  features: [8, 16]\n  norm: batchnorm\n");
    expect("bad.yaml", 2, "medtrain: error: bad.yaml:3:9: model.norm: expected one of batch, instance, group, got \"batchnorm\"",
           NULL);
    expect("config --print bad.yaml", 2, "bad.yaml:3:9: model.norm", NULL);
    write_file("broken.yaml", "model:\n  features: [8, 16\n");
    expect("broken.yaml", 2, "medtrain: error: broken.yaml:3:1: malformed YAML", NULL);
    write_file("unknown.yaml", "train:\n  stepss: 10\n");
    expect("unknown.yaml", 2, "unknown.yaml:2:3: train.stepss: unknown key (did you mean \"train.steps\"?)", NULL);
    expect("--set train.steps=ten", 2,
           "medtrain: error: --set 'train.steps=ten': train.steps: expected integer >= 1, got \"ten\"", NULL);
    expect("--set=model.nrom=batch", 2, "--set 'model.nrom=batch': model.nrom: unknown key", NULL);
    /* semantic checks run before training starts */
    expect("--set data.patch_size=[30,32,32]", 2,
           "--set 'data.patch_size=[30,32,32]': data.patch_size: 30 (D) is not divisible by 2^(levels-1) = 4", NULL);
    write_file("sem.yaml", "data:\n  patch_size: [32, 32, 36]\nmodel:\n  features: [8, 16, 32, 64]\n");
    expect("sem.yaml", 2, "sem.yaml:2:15: data.patch_size: 36 (W) is not divisible by 2^(levels-1) = 8", NULL);
    expect("config --check sem.yaml", 2, "sem.yaml:2:15: data.patch_size", NULL);
    /* without a usable GPU (no CUDA backend, or one without a GPU): exit 2 naming run.device and why */
    if (!mt_device_available((mt_device){MT_CUDA, 0}))
        expect("--set run.device=cuda", 2,
               mt_backend_get(MT_CUDA) ? "run.device: device 'cuda': no usable GPU"
                                       : "run.device: device 'cuda': this medtrain was built without the CUDA backend",
               NULL);
    expect("--set run.device=gpu", 2, "run.device: unknown device 'gpu'", NULL);

    /* --resume */
    expect("--resume nowhere", 2, "--resume: nowhere: no such file or directory", NULL);
    expect("--resume", 2, "--resume without a path needs run.name", NULL);
    expect("--resume --set run.name=ghost", 2, "run directory runs/ghost does not exist", NULL);

    /* config actions */
    expect("config --explain", 0, NULL, "model.features");
    {
        int n;
        const mt_cfg_schema_entry *sc = mt_config_schema(&n);
        int all = 1;
        for (int i = 0; i < n; i++) all &= strstr(g_out, sc[i].key) != NULL;
        CHECK_MSG(all, "config --explain misses keys");
    }
    expect("config --print --set optim.lr=0.05 --set model.features=[4,8,16,32]", 0, NULL, "lr: 0.05");
    {
        mt_config *cfg = NULL;
        CHECK(mt_config_parse_string(&cfg, g_out, "printed", 0, NULL) == MT_OK && cfg);
        if (cfg) {
            int nf;
            mt_config_get_int_list(cfg, "model.features", &nf);
            CHECK(mt_config_get_float(cfg, "optim.lr") == 0.05 && nf == 4);
            mt_config_free(cfg);
        }
    }
    expect("config --print " MT_SOURCE_DIR "/configs/unet3d.yaml", 0, NULL, "features: [32, 64, 128, 256, 320]");
    expect("config --check " MT_SOURCE_DIR "/configs/default.yaml", 0, NULL, "OK");
    expect("config --check", 0, NULL, "built-in default config: OK");
    /* nothing was created in the working directory by failing commands */
    char runs[600];
    snprintf(runs, sizeof runs, "%s/runs", g_dir);
    CHECK(!mt_fs_is_dir(runs));

    free(g_out);
    free(g_err);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return mt_test_finish();
}
