/* LABELS: unit integration mpi */
/* run.device end to end without a GPU (tests/loopback_backend.h: a "CUDA"
 * backend that runs the CPU kernels on its own page-protected memory, so any
 * host access to device memory faults and any kernel given a host tensor
 * aborts naming the slot and argument):
 *  - without a usable GPU (this build, or a CUDA build on a GPU-less host):
 *    run.device cuda fails with a message naming run.device and why, through
 *    mt_config_device, mt_train_run and the CLI's exit status; auto trains on
 *    the CPU and the log says why;
 *  - mt_device_parse with the loopback device (auto -> cuda:0, cuda:1 and
 *    "gpu" are errors); GPU selection of MPI ranks (mt_dist_gpu_index);
 *  - the loopback really checks: a host tensor given to a device kernel, or a
 *    host read of device memory, kills a child process;
 *  - a 20-step training run on cuda (batch norm, deep supervision, dropout,
 *    clipping, validation) gives the losses and Dice of the same run on the
 *    CPU (the kernels are the same: equal to 1e-6), writes checkpoints and a
 *    model.safetensors equal to the CPU run's and loadable on the CPU,
 *    reports peak_mem_mib, and resumes from a checkpoint with the
 *    uninterrupted losses;
 *  - prediction (sliding window with mirroring, mt_predict_preprocessed) with
 *    the model on the device equals the CPU's; --device parsing;
 *  - bf16-mixed on the device completes with finite losses equal to the CPU's;
 *  - under mpirun -np 2 (when mpirun exists): 2 ranks on the one loopback GPU
 *    are an error unless distributed.allow_gpu_sharing (cuda:N too), and with
 *    sharing a data-parallel device run (gradients all-reduced through host
 *    buffers, batch norm buffers broadcast) equals the 2-rank CPU run.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/autograd.h"
#include "core/backend.h"
#include "data/phantom.h"
#include "eval/sliding_window.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/dist.h"
#include "launch/fsutil.h"
#include "launch/predict.h"
#include "launch/safetensors.h"
#include "launch/train.h"
#include "loopback_backend.h"
#include "mt_test.h"

static char g_tmp[256];
static const mt_device CUDA0 = {MT_CUDA, 0};

static const char *TINY =
    "run: {threads: 2, log_every: 1}\n"
    "data:\n"
    "  phantom: {num_cases: 4, shape: [24, 24, 24]}\n"
    "  patch_size: [16, 16, 16]\n"
    "  val_cases: 1\n"
    "model: {features: [4, 8, 16], norm: batch, deep_supervision: true, dropout: 0.1}\n"
    "optim: {clip_grad_norm: 1.0}\n"
    "train: {steps: 20, batch_size: 2, checkpoint_every: 10, keep_checkpoints: 0, val_every: 10}\n";

static mt_config *make_cfg(const char *name, const char *device, const char *precision) {
    char s0[400], s1[100], s2[100], s3[100];
    snprintf(s0, sizeof s0, "run.dir=%s/runs", g_tmp);
    snprintf(s1, sizeof s1, "run.name=%s", name);
    snprintf(s2, sizeof s2, "run.device=%s", device);
    snprintf(s3, sizeof s3, "train.precision=%s", precision);
    const char *sets[] = {s0, s1, s2, s3};
    mt_config *cfg = NULL;
    mt_status s = mt_config_parse_string(&cfg, TINY, "tiny.yaml", 4, sets);
    CHECK_MSG(s == MT_OK, "config: %s", mt_error_msg());
    return cfg;
}

static char *run_file(const char *name, const char *rel) {
    char *p = malloc(1024);
    MT_CHECK(p);
    snprintf(p, 1024, "%s/runs/%s/%s", g_tmp, name, rel);
    return p;
}

static char *read_text(const char *path) {
    char *t = NULL;
    size_t n;
    if (mt_fs_read_file(path, &t, &n) != MT_OK) return NULL;
    return t;
}

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * (fabs(a) > 1 ? fabs(a) : 1); }

/* ----------------------------------------------------- without a GPU */

static int sh(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_no_gpu(void) {
    if (mt_device_available(CUDA0)) {
        printf("a GPU is usable: the no-GPU errors are not checked\n");
        return;
    }
    mt_device d;
    int built = mt_backend_get(MT_CUDA) != NULL;
    const char *why = built ? "no usable GPU" : "without the CUDA backend";
    CHECK(mt_device_parse("cuda", &d) != 0 && strstr(mt_error_msg(), why));
    CHECK(mt_device_parse("cuda:0", &d) != 0 && strstr(mt_error_msg(), why));
    CHECK(mt_device_parse("auto", &d) == 0 && d.type == MT_CPU);
    CHECK(mt_device_parse("gpu", &d) != 0 && strstr(mt_error_msg(), "unknown device 'gpu'"));
    mt_config *cfg = make_cfg("nogpu", "cuda", "fp32");
    if (!cfg) return;
    CHECK(mt_config_device(cfg, &d) == MT_ERR_CONFIG);
    CHECK_MSG(strstr(mt_error_msg(), "run.device") && strstr(mt_error_msg(), why), "%s", mt_error_msg());
    CHECK(mt_train_run(cfg, NULL) == MT_ERR_CONFIG && strstr(mt_error_msg(), "run.device"));
    char *dir = run_file("nogpu", "");
    CHECK_MSG(!mt_fs_is_dir(dir), "no run directory for a failed device: %s", dir);
    free(dir);
    mt_config_free(cfg);
    /* auto: the CPU, and the log says why */
    cfg = make_cfg("auto", "auto", "fp32");
    if (cfg) {
        CHECK(mt_config_set(cfg, "train.steps=2") == MT_OK && mt_config_set(cfg, "train.val_every=0") == MT_OK &&
              mt_config_set(cfg, "data.val_cases=0") == MT_OK);
        mt_status s = mt_train_run(cfg, NULL);
        CHECK_MSG(s == MT_OK, "auto run: %s", mt_error_msg());
        char *log = run_file("auto", "train.log");
        char *t = read_text(log);
        CHECK_MSG(t && strstr(t, "device: cpu") && strstr(t, "run.device auto: training on the CPU") &&
                      strstr(t, built ? "no usable GPU" : "without the CUDA backend"),
                  "train.log of an auto run on the CPU says why:\n%s", t ? t : "(none)");
        free(t);
        free(log);
        mt_config_free(cfg);
    }
    /* the CLI: exit status 2 and a message naming run.device */
    const char *bin = getenv("MT_MEDTRAIN");
    if (!bin) {
        printf("MT_MEDTRAIN not set: the CLI is not checked\n");
        return;
    }
    char cmd[2048], err[400];
    snprintf(err, sizeof err, "%s/cli.err", g_tmp);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' --set run.device=cuda --set train.steps=1 2> '%s' > /dev/null", g_tmp,
             bin, err);
    int rc = sh(cmd);
    char *t = read_text(err);
    CHECK_MSG(rc == 2 && t && strstr(t, "run.device") && strstr(t, why), "medtrain --set run.device=cuda: exit %d: %s",
              rc, t ? t : "");
    free(t);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' --set run.device=cuda:3 2> '%s' > /dev/null", g_tmp, bin, err);
    rc = sh(cmd);
    t = read_text(err);
    CHECK_MSG(rc == 2 && t && strstr(t, "run.device"), "medtrain --set run.device=cuda:3: exit %d: %s", rc, t ? t : "");
    free(t);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' --set run.device=gpu 2> '%s' > /dev/null", g_tmp, bin, err);
    rc = sh(cmd);
    t = read_text(err);
    CHECK_MSG(rc == 2 && t && strstr(t, "run.device") && strstr(t, "unknown device 'gpu'"),
              "medtrain --set run.device=gpu: exit %d: %s", rc, t ? t : "");
    free(t);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' predict w.safetensors in.nii out.nii --device cuda 2> '%s' > /dev/null",
             g_tmp, bin, err);
    rc = sh(cmd);
    t = read_text(err);
    CHECK_MSG(rc == 2 && t && strstr(t, "--device 'cuda'") && strstr(t, why), "predict --device cuda: exit %d: %s", rc,
              t ? t : "");
    free(t);
}

/* --------------------------------------------------- parsing, selection */

static void test_parse_and_select(void) {
    mt_device d = {MT_CPU, 7};
    CHECK(mt_device_parse("auto", &d) == 0 && d.type == MT_CUDA && d.index == 0);
    CHECK(mt_device_parse("cuda", &d) == 0 && d.type == MT_CUDA && d.index == 0);
    CHECK(mt_device_parse("cuda:0", &d) == 0 && d.type == MT_CUDA && d.index == 0);
    CHECK(mt_device_parse("cpu", &d) == 0 && d.type == MT_CPU);
    CHECK_MSG(mt_device_parse("cuda:1", &d) != 0 && strstr(mt_error_msg(), "cuda:1") &&
                  strstr(mt_error_msg(), "only 1 GPU is visible"),
              "cuda:1: %s", mt_error_msg());
    CHECK(mt_device_parse("gpu", &d) != 0 && strstr(mt_error_msg(), "unknown device 'gpu'"));
    CHECK(mt_device_parse("cuda:x", &d) != 0 && strstr(mt_error_msg(), "bad device index"));
    CHECK(mt_device_parse("cuda:-1", &d) != 0 && strstr(mt_error_msg(), "bad device index"));
    mt_config *cfg = make_cfg("parse", "cuda:1", "fp32");
    if (cfg) {
        CHECK(mt_config_device(cfg, &d) == MT_ERR_CONFIG);
        CHECK_MSG(strstr(mt_error_msg(), "--set 'run.device=cuda:1': run.device: device 'cuda:1'"), "%s",
                  mt_error_msg());
        mt_config_free(cfg);
    }
    /* ranks on a node -> GPUs */
    int idx = -1;
    CHECK(mt_dist_gpu_index(0, 2, 2, 0, &idx) == MT_OK && idx == 0);
    CHECK(mt_dist_gpu_index(1, 2, 2, 0, &idx) == MT_OK && idx == 1);
    CHECK(mt_dist_gpu_index(1, 2, 8, 0, &idx) == MT_OK && idx == 1);
    CHECK(mt_dist_gpu_index(2, 3, 2, 0, &idx) != MT_OK && strstr(mt_error_msg(), "3 ranks run on this node") &&
          strstr(mt_error_msg(), "distributed.allow_gpu_sharing"));
    CHECK(mt_dist_gpu_index(2, 3, 2, 1, &idx) == MT_OK && idx == 0);
    CHECK(mt_dist_gpu_index(3, 4, 1, 1, &idx) == MT_OK && idx == 0);
    CHECK(mt_dist_gpu_index(0, 1, 0, 1, &idx) != MT_OK && strstr(mt_error_msg(), "no GPU"));
}

/* The loopback catches mixing: each case must kill a child. */
static void expect_child_dies(int which, const char *what) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* quiet child: the abort message goes to /dev/null */
        if (!freopen("/dev/null", "w", stderr)) _exit(0); /* counts as "not caught" */
        mt_tensor *h = mt_tensor_zeros(MT_F32, MT_SHAPE(4), MT_DEVICE_CPU);
        mt_tensor *g = mt_tensor_zeros(MT_F32, MT_SHAPE(4), CUDA0);
        if (which == 0) mt_kernel(CUDA0, binary)(MT_BIN_ADD, g, g, h); /* host tensor to a device kernel */
        volatile float v = 0;
        if (which == 1) v = MT_F32P(g)[0]; /* host read of device memory */
        if (which == 2) MT_F32P(g)[1] = 1; /* host write */
        (void)v;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    /* killed by the signal, or (under AddressSanitizer, which reports a SEGV and
     * exits 1) ended with a non-zero status: anything but the normal exit 0 */
    CHECK_MSG(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s: the child was not stopped (status %d)", what, st);
}

/* Pinned host memory of the device's backend: a host-readable CPU tensor
 * released through the backend's host_free_pinned, and its copy to the
 * device equals the data. */
static void test_pinned(void) {
    long n0 = mt_loopback_pinned_allocs();
    mt_tensor *h = mt_tensor_new_pinned(MT_F32, MT_SHAPE(2, 3, 5), CUDA0);
    CHECK(mt_loopback_pinned_allocs() == n0 + 1);
    CHECK(h->storage->device.type == MT_CPU && h->storage->free_fn != NULL);
    for (int64_t i = 0; i < 30; i++) mt_tensor_set_flat(h, i, (double)i * 0.5);
    long a0 = mt_loopback_async_copies();
    mt_tensor *d = mt_tensor_to_device(h, CUDA0);
    CHECK_MSG(mt_loopback_async_copies() == a0 + 1, "a pinned source is copied with memcpy_pinned_to_device");
    mt_tensor *back = mt_tensor_to_device(d, MT_DEVICE_CPU);
    int ok = 1;
    for (int64_t i = 0; i < 30; i++) ok &= mt_tensor_get_flat(back, i) == (double)i * 0.5;
    CHECK_MSG(ok, "pinned -> device -> host round trip");
    mt_tensor_release(h);
    mt_tensor_release(d);
    mt_tensor_release(back);
}

static void test_loopback_checks(void) {
    expect_child_dies(0, "host tensor given to a device kernel");
    expect_child_dies(1, "host read of device memory");
    expect_child_dies(2, "host write of device memory");
    /* and the legal paths work */
    mt_tensor *h = mt_test_rand(MT_SHAPE(3, 5), -1, 1);
    mt_tensor *g = mt_tensor_to_device(h, CUDA0);
    mt_tensor *g2 = mt_tensor_new(MT_F32, MT_SHAPE(3, 5), CUDA0);
    mt_kernel(CUDA0, unary)(MT_UN_MUL_SCALAR, g2, g, 2.0f);
    mt_tensor *back = mt_tensor_to_device(g2, MT_DEVICE_CPU);
    int ok = 1;
    for (int64_t i = 0; i < 15; i++) ok &= mt_tensor_get_flat(back, i) == 2.0 * mt_tensor_get_flat(h, i);
    CHECK_MSG(ok, "round trip through the loopback device");
    mt_tensor *rs[] = {h, g, g2, back};
    for (int k = 0; k < 4; k++) mt_tensor_release(rs[k]);
}

/* ------------------------------------------------------------ training */

static int read_run(const char *name, mt_test_metrics *m) {
    char *p = run_file(name, "metrics.jsonl");
    mt_test_read_metrics(p, m);
    free(p);
    return m->n;
}

/* Every tensor of two safetensors files equal (bitwise); the number of tensors compared. */
static int files_equal(const char *a, const char *b, int *n_cmp) {
    mt_safetensors x, y;
    mt_safetensors_init(&x);
    mt_safetensors_init(&y);
    *n_cmp = 0;
    int ok = mt_safetensors_load(&x, a) == MT_OK && mt_safetensors_load(&y, b) == MT_OK && x.n == y.n;
    for (int k = 0; ok && k < x.n; k++) {
        mt_tensor *t = mt_safetensors_find(&y, x.names[k]);
        ok = t && mt_tensor_same_shape(t, x.tensors[k]) && t->dtype == x.tensors[k]->dtype &&
             mt_tensor_nbytes(t) == mt_tensor_nbytes(x.tensors[k]);
        if (ok) {
            mt_tensor *ca = mt_tensor_contiguous(x.tensors[k]), *cb = mt_tensor_contiguous(t);
            ok = !memcmp(mt_tensor_data(ca), mt_tensor_data(cb), mt_tensor_nbytes(ca));
            if (!ok) printf("  %s differs\n", x.names[k]);
            mt_tensor_release(ca);
            mt_tensor_release(cb);
            (*n_cmp)++;
        }
    }
    mt_safetensors_free(&x);
    mt_safetensors_free(&y);
    return ok;
}

static void compare_runs(const char *cpu, const char *dev, double tol) {
    mt_test_metrics a, b;
    read_run(cpu, &a);
    read_run(dev, &b);
    CHECK_MSG(a.n == 20 && b.n == 20, "20 logged losses: %d (cpu), %d (device)", a.n, b.n);
    double maxd = 0;
    for (int k = 0; k < a.n && k < b.n; k++) {
        CHECK_MSG(isfinite(b.loss[k]), "%s: step %ld loss %g", dev, b.step[k], b.loss[k]);
        CHECK_MSG(close_rel(a.loss[k], b.loss[k], tol), "%s: step %ld loss %.9g (device) vs %.9g (cpu)", dev, b.step[k],
                  b.loss[k], a.loss[k]);
        if (fabs(a.loss[k] - b.loss[k]) > maxd) maxd = fabs(a.loss[k] - b.loss[k]);
    }
    CHECK_MSG(close_rel(a.dice_mean, b.dice_mean, tol) && b.dice_mean >= 0, "%s: Dice %.9g (device) vs %.9g (cpu)", dev,
              b.dice_mean, a.dice_mean);
    printf("%s vs %s: %d losses, max |difference| %.3g, final Dice %.4f / %.4f\n", dev, cpu, a.n, maxd, b.dice_mean,
           a.dice_mean);
}

static void test_training(void) {
    long calls0 = mt_loopback_kernel_calls();
    mt_config *ccpu = make_cfg("cpu", "cpu", "fp32"), *cdev = make_cfg("dev", "cuda", "fp32");
    if (!ccpu || !cdev) return;
    mt_status s = mt_train_run(ccpu, NULL);
    CHECK_MSG(s == MT_OK, "cpu run: %s", mt_error_msg());
    CHECK_MSG(mt_loopback_kernel_calls() == calls0, "the cpu run used no device kernel");
    long pinned0 = mt_loopback_pinned_allocs();
    s = mt_train_run(cdev, NULL);
    CHECK_MSG(s == MT_OK, "device run: %s", mt_error_msg());
    CHECK_MSG(mt_loopback_pinned_allocs() > pinned0, "the loader's batches for the device are pinned (%ld)",
              mt_loopback_pinned_allocs() - pinned0);
    CHECK_MSG(mt_loopback_async_copies() > 0, "batches go to the device with memcpy_pinned_to_device");
    long calls = mt_loopback_kernel_calls() - calls0;
    CHECK_MSG(calls > 1000, "the device run ran on the device (%ld kernel calls)", calls);
    compare_runs("cpu", "dev", 1e-6);

    /* log and metrics: the device and its peak memory */
    char *log = run_file("dev", "train.log"), *met = run_file("dev", "metrics.jsonl");
    char *lt = read_text(log), *mtxt = read_text(met);
    CHECK_MSG(lt && strstr(lt, "device: cuda:0") && strstr(lt, "cuda:0 memory peak"), "train.log:\n%s", lt ? lt : "");
    double peak = mtxt ? mt_test_json_last(mtxt, "peak_mem_mib") : NAN;
    CHECK_MSG(peak > 0, "peak_mem_mib %g in metrics.jsonl", peak);
    free(lt);
    free(mtxt);
    free(log);
    free(met);

    /* weight files and checkpoints: the same bytes as the cpu run's, loadable on the CPU */
    const char *files[] = {"model.safetensors", "model_best.safetensors", "checkpoints/step_00000010.safetensors",
                           "checkpoints/step_00000020.safetensors"};
    for (int k = 0; k < 4; k++) {
        char *a = run_file("cpu", files[k]), *b = run_file("dev", files[k]);
        int n = 0;
        CHECK_MSG(files_equal(a, b, &n) && n > 10, "%s of the device run equals the cpu run's (%d tensors)", files[k],
                  n);
        free(a);
        free(b);
    }
    char *wp = run_file("dev", "model.safetensors");
    mt_weights w, wd;
    s = mt_weights_load(wp, &w);
    CHECK_MSG(s == MT_OK, "device run's weights load on the CPU: %s", mt_error_msg());
    CHECK(mt_weights_load(wp, &wd) == MT_OK);
    free(wp);
    mt_config_free(ccpu);
    mt_config_free(cdev);

    /* resume a device run from step 10: the uninterrupted losses (without
     * dropout: its RNG state is not in checkpoints, so a resumed run with
     * model.dropout > 0 draws other masks, on the CPU as well) */
    mt_config *cres = make_cfg("resume", "cuda", "fp32");
    if (cres && mt_config_set(cres, "model.dropout=0") == MT_OK) {
        s = mt_train_run(cres, NULL);
        CHECK_MSG(s == MT_OK, "device run: %s", mt_error_msg());
        mt_test_metrics a;
        read_run("resume", &a);
        char *ck = run_file("resume", "checkpoints/step_00000010.safetensors");
        s = mt_train_run(cres, ck);
        CHECK_MSG(s == MT_OK, "resumed device run: %s", mt_error_msg());
        free(ck);
        mt_test_metrics b;
        read_run("resume", &b);
        CHECK_MSG(b.n == 30, "10 more losses after resuming, got %d", b.n);
        for (int k = 0; k < 10 && b.n == 30 && a.n == 20; k++)
            CHECK_MSG(b.step[20 + k] == a.step[10 + k] && b.loss[20 + k] == a.loss[10 + k],
                      "resumed step %ld: loss %.9g vs uninterrupted %.9g", b.step[20 + k], b.loss[20 + k],
                      a.loss[10 + k]);
    }
    mt_config_free(cres);

    /* ---- prediction with the model on the device ---- */
    mt_predict_options po;
    mt_predict_options_default(&po);
    po.device = "cuda";
    CHECK(mt_predict_set_device(&wd, &po) == MT_OK);
    {
        mt_named_tensors ps = {0};
        mt_module_state_dict(wd.model, &ps);
        int all = ps.n > 0;
        for (int k = 0; k < ps.n; k++) all &= mt_tensor_device(ps.items[k].tensor).type == MT_CUDA;
        CHECK_MSG(all, "every model tensor on the device after --device cuda");
        mt_named_tensors_free(&ps);
    }
    /* a phantom case of another shape than the patch grid */
    mt_phantom_config pc;
    mt_phantom_config_default(&pc);
    pc.shape[0] = 21;
    pc.shape[1] = 26;
    pc.shape[2] = 19;
    mt_phantom_dataset ds;
    memset(&ds, 0, sizeof ds);
    CHECK(mt_phantom_dataset_init(&ds, &pc, 7, 1) == MT_OK);
    mt_tensor *img = ds.images[0];
    mt_eval_sw_opts so;
    mt_eval_sw_opts_default(&so, w.patch);
    so.batch = 3;
    so.mirror_axes = 5;
    mt_tensor *lc = NULL, *ld = NULL;
    CHECK(mt_eval_sliding_window_model(&lc, img, w.model, &so) == MT_OK);
    CHECK(mt_eval_sliding_window_model(&ld, img, wd.model, &so) == MT_OK);
    if (lc && ld) {
        CHECK(mt_tensor_device(ld).type == MT_CPU); /* the result is on the host */
        mt_test_allclose_t(ld, lc, 1e-6, 1e-6, "sliding-window logits, device vs cpu"); /* counts a check */
    }
    mt_tensor_release(lc);
    mt_tensor_release(ld);
    mt_prep_geometry g;
    memset(&g, 0, sizeof g);
    for (int a3 = 0; a3 < 3; a3++) {
        g.orig_shape[a3] = g.shape[a3] = img->shape[1 + a3];
        g.crop_hi[a3] = img->shape[1 + a3];
        g.orig_spacing[a3] = g.spacing[a3] = g.target_spacing[a3] = 1.0;
        g.order_image[a3] = MT_INTERP_LINEAR;
        g.order_label[a3] = MT_INTERP_NEAREST;
    }
    for (int i = 0; i < 4; i++) g.orig_affine[i][i] = g.affine[i][i] = 1.0;
    mt_tensor *pcpu = NULL, *pdev = NULL;
    mt_predict_options_default(&po);
    po.mirror = 1;
    po.batch = 2;
    mt_status s1 = mt_predict_preprocessed(&pcpu, &w, img, &g, &po);
    mt_status s2 = mt_predict_preprocessed(&pdev, &wd, img, &g, &po);
    CHECK_MSG(s1 == MT_OK && s2 == MT_OK, "predict: %s", mt_error_msg());
    if (pcpu && pdev) {
        int64_t n = mt_tensor_numel(pcpu), diff = 0;
        for (int64_t i = 0; i < n; i++) diff += mt_tensor_get_flat(pcpu, i) != mt_tensor_get_flat(pdev, i);
        CHECK_MSG(mt_tensor_same_shape(pcpu, pdev) && diff == 0, "device prediction equals the CPU's (%lld voxels differ)",
                  (long long)diff);
    }
    mt_tensor_release(pcpu);
    mt_tensor_release(pdev);
    /* --device through the shared option parser */
    {
        char *argv[] = {"predict", "--device", "cuda:0", "--device=cpu", "--device", "gpu"};
        int i = 1, th = 0;
        mt_predict_options_default(&po);
        CHECK(mt_predict_parse_option("predict", 6, argv, &i, &po, &th) == 1 && i == 2 && !strcmp(po.device, "cuda:0"));
        i = 3;
        CHECK(mt_predict_parse_option("predict", 6, argv, &i, &po, &th) == 1 && !strcmp(po.device, "cpu"));
        i = 4;
        fprintf(stderr, "(an expected usage error follows)\n");
        CHECK(mt_predict_parse_option("predict", 6, argv, &i, &po, &th) == -2);
    }
    mt_phantom_dataset_free(&ds);
    mt_weights_free(&wd);
    mt_weights_free(&w);
}

static void test_bf16(void) {
    mt_config *ccpu = make_cfg("bf16cpu", "cpu", "bf16-mixed"), *cdev = make_cfg("bf16dev", "cuda", "bf16-mixed");
    if (!ccpu || !cdev) return;
    mt_status s = mt_train_run(cdev, NULL);
    CHECK_MSG(s == MT_OK, "bf16-mixed device run: %s", mt_error_msg());
    CHECK(mt_autocast_get() == MT_F32); /* restored */
    s = mt_train_run(ccpu, NULL);
    CHECK_MSG(s == MT_OK, "bf16-mixed cpu run: %s", mt_error_msg());
    compare_runs("bf16cpu", "bf16dev", 1e-6);
    mt_test_metrics f;
    read_run("cpu", &f);
    mt_test_metrics b;
    read_run("bf16dev", &b);
    /* bf16 really changes the numbers (autocast active), but not by much */
    int differs = 0;
    for (int k = 0; k < b.n && k < f.n; k++) differs |= b.loss[k] != f.loss[k];
    CHECK_MSG(differs, "bf16-mixed losses differ from fp32 ones (autocast is on)");
    if (b.n > 0 && f.n > 0)
        CHECK_MSG(fabs(b.loss[0] - f.loss[0]) < 0.05 * fabs(f.loss[0]), "first loss bf16 %.5f vs fp32 %.5f", b.loss[0],
                  f.loss[0]);
    mt_config_free(ccpu);
    mt_config_free(cdev);
}

/* Under mpirun -np 2 (one node, one loopback GPU per process): the GPU
 * selection errors, then a data-parallel device run (ranks sharing the GPU,
 * gradients through host buffers) against the same run on the CPU. */
static int mpi_worker(const char *dir) {
    snprintf(g_tmp, sizeof g_tmp, "%s", dir);
    mt_dist *d = mt_dist_get();
    CHECK(d->world == 2 && d->local_world == 2);
    mt_loopback_register();
    mt_train_set_shard_global_batch(1);
    const char *extra[] = {"train.batch_size=1", "data.num_workers=1", "distributed.timeout_s=120"};
    mt_config *c = make_cfg("mnoshare", "cuda", "fp32");
    for (int k = 0; c && k < 3; k++) CHECK(mt_config_set(c, extra[k]) == MT_OK);
    if (c) {
        mt_status s = mt_train_run(c, NULL);
        CHECK_MSG(s == MT_ERR_CONFIG && strstr(mt_error_msg(), "distributed.allow_gpu_sharing") &&
                      strstr(mt_error_msg(), "2 ranks run on this node but only 1 GPU is visible"),
                  "rank %d, 2 ranks on 1 GPU without sharing: %s", d->rank, mt_error_msg());
        CHECK(mt_config_set(c, "run.device=cuda:0") == MT_OK && mt_config_set(c, "distributed.allow_gpu_sharing=true") == MT_OK);
        s = mt_train_run(c, NULL);
        CHECK_MSG(s == MT_ERR_CONFIG && strstr(mt_error_msg(), "run.device") &&
                      strstr(mt_error_msg(), "each rank takes cuda:<node-local rank>"),
                  "rank %d, cuda:0 with 2 ranks on the node: %s", d->rank, mt_error_msg());
        mt_config_free(c);
    }
    mt_config *cc = make_cfg("mcpu", "cpu", "fp32"), *cd = make_cfg("mdev", "cuda", "fp32");
    for (int k = 0; cc && cd && k < 3; k++) CHECK(mt_config_set(cc, extra[k]) == MT_OK && mt_config_set(cd, extra[k]) == MT_OK);
    if (cc && cd) {
        CHECK(mt_config_set(cd, "distributed.allow_gpu_sharing=true") == MT_OK);
        mt_status s = mt_train_run(cc, NULL);
        CHECK_MSG(s == MT_OK, "rank %d, 2-rank cpu run: %s", d->rank, mt_error_msg());
        s = mt_train_run(cd, NULL);
        CHECK_MSG(s == MT_OK, "rank %d, 2-rank device run: %s", d->rank, mt_error_msg());
        if (d->rank == 0) {
            compare_runs("mcpu", "mdev", 1e-6);
            char *log = run_file("mdev", "train.log");
            char *t = read_text(log);
            CHECK_MSG(t && strstr(t, "rank 0 (node-local rank 0 of 2) uses cuda:0 of 1 GPU(s) (shared"), "train.log:\n%s",
                      t ? t : "");
            free(t);
            free(log);
        }
    }
    mt_config_free(cc);
    mt_config_free(cd);
    printf("rank %d: ", d->rank);
    return mt_test_finish();
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--mpi-worker")) return mpi_worker(argv[2]);
    if (mt_test_mkdtemp(g_tmp, sizeof g_tmp, "device") != 0) return 1;
    mt_cpu_set_num_threads(2);
    test_no_gpu();
    const mt_backend *prev = mt_loopback_register();
    test_parse_and_select();
    test_loopback_checks();
    test_pinned();
    test_training();
    test_bf16();
    mt_loopback_unregister(prev);
    if (mt_test_mpirun_path()) {
        char args[400];
        snprintf(args, sizeof args, "--mpi-worker '%s'", g_tmp);
        int rc = mt_test_mpirun(2, args, 300);
        CHECK_MSG(rc == 0, "mpirun -np 2 --mpi-worker (device data parallel) exited with %d", rc);
    } else {
        printf("mpirun not found: the data-parallel device run is not checked\n");
    }
    mt_test_cleanup(g_tmp);
    return mt_test_finish();
}
