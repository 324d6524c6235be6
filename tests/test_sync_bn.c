/* LABELS: mpi */
/* SyncBatchNorm (autograd/collective.c: mt_all_reduce_sum, mt_sync_batch_norm;
 * layers/norm.c: mt_module_convert_sync_batchnorm).
 *
 * One process, fake hooks:
 *  - mt_all_reduce_sum: identity without a hook; with a hook that doubles the
 *    buffer (2 identical ranks) forward 2x and backward 2g; a failing hook
 *    aborts naming the op and the hook's message;
 *  - no hook: mt_sync_batch_norm is mt_batch_norm bit for bit (PyTorch's
 *    fallback with one process);
 *  - an identity hook (world 1) runs the composed sync path: equal to
 *    mt_batch_norm within 1e-5 relative, exactly 2 hook calls (1 forward,
 *    1 backward); with |mean| / std = 1000 the shift by running_mean keeps
 *    it so, while without the shift the f32 E[x^2] - mean^2 is far off;
 *  - a doubling hook (2 identical ranks) = mt_batch_norm on the concatenated
 *    batch (x, x): output, running stats (unbiased with the global count),
 *    dx, and weight/bias gradients (the concatenated batch's = 2 x one
 *    rank's, what DDP's sum gives); gradcheck of the sync path; bf16 input;
 *    on the loopback "GPU" (no host access to device memory) = the CPU;
 *  - the config key (model.norm other than batch: error naming it); under
 *    mpirun, launch/train.c with batch norm: 2 ranks x batch 1 with
 *    model.sync_batchnorm log the losses of 1 rank x batch 2 (8 steps), and
 *    without it they differ.
 * Two ranks (mpirun -np 2 --worker): UNet3D with batch norm in training mode,
 * each rank half of the batch with SyncBatchNorm and the all-reduce hook on
 * mt_dist_allreduce_f64, after one backward and the DDP all-reduce has the
 * gradients and the running statistics of one rank with the whole batch and
 * plain batch norm (per tensor: |a - b| <= 1e-5 max|b| + 1e-5 |b|), for 2
 * steps; without sync they differ by far more (the comparison can fail). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "launch/config.h"
#include "launch/ddp.h"
#include "launch/dist.h"
#include "launch/train.h"
#include "layers/models/unet3d.h"
#include "loopback_backend.h"
#include "mt_test.h"

#define TOL 1e-5

static int g_calls;

static mt_status hook_identity(double *buf, int64_t n, void *ctx) {
    (void)buf, (void)n, (void)ctx;
    g_calls++;
    return MT_OK;
}

static mt_status hook_double(double *buf, int64_t n, void *ctx) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++) buf[i] *= 2;
    g_calls++;
    return MT_OK;
}

static mt_status hook_fail(double *buf, int64_t n, void *ctx) {
    (void)buf, (void)n, (void)ctx;
    return mt_error_set(MT_ERR_IO, "peer 3 vanished");
}

static mt_status hook_mpi(double *buf, int64_t n, void *ctx) {
    g_calls++;
    return mt_dist_allreduce_f64((mt_dist *)ctx, buf, n, MT_DIST_SUM);
}

static double max_abs(const mt_tensor *t) {
    double *v = mt_test_to_f64(t), m = 0;
    for (int64_t i = 0; i < mt_tensor_numel(t); i++) m = fmax(m, fabs(v[i]));
    free(v);
    return m;
}

/* max |a - b| / max |b| */
static double rel_diff(const mt_tensor *a, const mt_tensor *b) {
    double *x = mt_test_to_f64(a), *y = mt_test_to_f64(b), d = 0, s = 0;
    for (int64_t i = 0; i < mt_tensor_numel(b); i++) {
        d = fmax(d, fabs(x[i] - y[i]));
        s = fmax(s, fabs(y[i]));
    }
    free(x);
    free(y);
    return s > 0 ? d / s : d;
}

/* a close to b: |a - b| <= tol max|b| + tol |b| elementwise */
static void close_scaled(const mt_tensor *a, const mt_tensor *b, double tol, const char *what) {
    mt_test_allclose_t(a, b, tol * fmax(max_abs(b), 1e-30), tol, what);
}

/* ------------------------------------------------------------- op level */

typedef mt_tensor *(*bn_fn_t)(const mt_tensor *, const mt_tensor *, const mt_tensor *, mt_tensor *,
                              mt_tensor *, int, float, float);

typedef struct {
    mt_tensor *y, *gx, *gw, *gb, *rm, *rv;
} bn_result;

static void bn_result_free(bn_result *r) {
    mt_tensor *t[] = {r->y, r->gx, r->gw, r->gb, r->rm, r->rv};
    for (int k = 0; k < 6; k++) mt_tensor_release(t[k]);
}

/* y = fn(x, w, b) in training with copies of rm0 / rv0 (NULL: none);
 * gradients of sum(y * R). Leaves x, w, b without .grad. */
static bn_result run_bn(bn_fn_t fn, mt_tensor *x, mt_tensor *w, mt_tensor *b, const mt_tensor *rm0,
                        const mt_tensor *rv0, const mt_tensor *R) {
    bn_result r = {0};
    r.rm = rm0 ? mt_tensor_clone(rm0) : NULL;
    r.rv = rv0 ? mt_tensor_clone(rv0) : NULL;
    mt_tensor *y = fn(x, w, b, r.rm, r.rv, 1, 0.1f, 1e-5f);
    mt_tensor *p = mt_mul(y, R);
    mt_tensor *l = mt_sum_all(p);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    r.y = mt_tensor_detach(y);
    r.gx = mt_tensor_retain(x->grad);
    r.gw = mt_tensor_retain(w->grad);
    r.gb = mt_tensor_retain(b->grad);
    mt_tensor_zero_grad(x);
    mt_tensor_zero_grad(w);
    mt_tensor_zero_grad(b);
    mt_tensor_release(y);
    mt_tensor_release(p);
    mt_tensor_release(l);
    return r;
}

static mt_tensor *leaf(mt_tensor *t) {
    mt_tensor_set_requires_grad(t, 1);
    return t;
}

/* x (3, 5, 4, 3, 5) ~ N(offset, scale^2) per element, w, b, rm (near offset), rv, R */
typedef struct {
    mt_tensor *x, *w, *b, *rm, *rv, *R;
} bn_inputs;

static bn_inputs make_inputs(uint64_t seed, double offset, double scale, double rm_at) {
    bn_inputs in;
    mt_test_seed(seed);
    int64_t shape[5] = {3, 5, 4, 3, 5};
    mt_tensor *z = mt_test_randn(5, shape);
    in.x = mt_tensor_new(MT_F32, 5, shape, MT_DEVICE_CPU);
    for (int64_t i = 0; i < mt_tensor_numel(z); i++)
        mt_tensor_set_flat(in.x, i, offset + scale * mt_tensor_get_flat(z, i) + 0.1 * (i % 5));
    mt_tensor_release(z);
    leaf(in.x);
    in.w = leaf(mt_test_rand(MT_SHAPE(5), 0.5f, 1.5f));
    in.b = leaf(mt_test_rand(MT_SHAPE(5), -0.5f, 0.5f));
    in.rm = mt_test_rand(MT_SHAPE(5), (float)rm_at - 0.2f, (float)rm_at + 0.2f);
    in.rv = mt_test_rand(MT_SHAPE(5), 0.5f, 1.5f);
    in.R = mt_test_randn(5, shape);
    return in;
}

static void free_inputs(bn_inputs *in) {
    mt_tensor *t[] = {in->x, in->w, in->b, in->rm, in->rv, in->R};
    for (int k = 0; k < 6; k++) mt_tensor_release(t[k]);
}

static void test_all_reduce_op(void) {
    mt_set_allreduce_hook(NULL, NULL);
    mt_tensor *x = leaf(mt_test_randn(MT_SHAPE(3, 4)));
    mt_tensor *y = mt_all_reduce_sum(x);
    CHECK_MSG(y == x, "no hook: the all-reduce is the identity (same tensor)");
    mt_tensor_release(y);

    mt_set_allreduce_hook(hook_double, NULL);
    g_calls = 0;
    y = mt_all_reduce_sum(x);
    mt_tensor *R = mt_test_randn(MT_SHAPE(3, 4));
    mt_tensor *p = mt_mul(y, R), *l = mt_sum_all(p);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    mt_tensor *x2 = mt_mul_scalar(x, 2.0f), *R2 = mt_mul_scalar(R, 2.0f);
    mt_test_allclose_t(y, x2, 1e-30, 0, "all_reduce_sum forward with 2 identical ranks = 2x");
    mt_test_allclose_t(x->grad, R2, 1e-30, 0, "all_reduce_sum backward = all-reduce of the gradient = 2g");
    CHECK_MSG(g_calls == 2, "hook calls: %d (1 forward + 1 backward)", g_calls);
    mt_tensor *rel[] = {y, R, p, l, x2, R2};
    for (int k = 0; k < 6; k++) mt_tensor_release(rel[k]);

    /* a failing hook aborts naming the op and the hook's message */
    int fd[2];
    CHECK(pipe(fd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        mt_set_allreduce_hook(hook_fail, NULL);
        mt_tensor *z = mt_all_reduce_sum(x);
        (void)z;
        _exit(0);
    }
    close(fd[1]);
    char msg[2048] = "";
    size_t got = 0;
    ssize_t k;
    while (got < sizeof msg - 1 && (k = read(fd[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)k;
    msg[got] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "failing hook: the process aborts (status %d)", st);
    CHECK_MSG(strstr(msg, "all_reduce_sum") && strstr(msg, "peer 3 vanished"),
              "failing hook: the message names the op and the hook's error: %s", msg);
    mt_tensor_release(x);
    mt_set_allreduce_hook(NULL, NULL);
}

static void test_no_hook_exact(void) {
    mt_set_allreduce_hook(NULL, NULL);
    bn_inputs in = make_inputs(1, 0.7, 1.3, 0.5);
    bn_result a = run_bn(mt_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    bn_result s = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_test_allclose_t(s.y, a.y, 1e-30, 0, "no hook: sync bn output = batch_norm exactly");
    mt_test_allclose_t(s.rm, a.rm, 1e-30, 0, "no hook: running_mean exactly");
    mt_test_allclose_t(s.rv, a.rv, 1e-30, 0, "no hook: running_var exactly");
    mt_test_allclose_t(s.gx, a.gx, 1e-30, 0, "no hook: dx exactly");
    mt_test_allclose_t(s.gw, a.gw, 1e-30, 0, "no hook: dweight exactly");
    mt_test_allclose_t(s.gb, a.gb, 1e-30, 0, "no hook: dbias exactly");
    bn_result_free(&a);
    bn_result_free(&s);
    free_inputs(&in);
}

/* identity hook: the composed sync path against the batch_norm kernel */
static void test_identity_hook(double offset, double scale, double rm_at, double tol, const char *what) {
    bn_inputs in = make_inputs(2, offset, scale, rm_at);
    bn_result a = run_bn(mt_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_set_allreduce_hook(hook_identity, NULL);
    g_calls = 0;
    bn_result s = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_set_allreduce_hook(NULL, NULL);
    CHECK_MSG(g_calls == 2, "%s: %d all-reduces, expected 1 per forward + 1 per backward", what, g_calls);
    char b[256];
    printf("%s: relative differences y %.2e, running_mean %.2e, running_var %.2e, dx %.2e, dw %.2e, db %.2e\n",
           what, rel_diff(s.y, a.y), rel_diff(s.rm, a.rm), rel_diff(s.rv, a.rv), rel_diff(s.gx, a.gx),
           rel_diff(s.gw, a.gw), rel_diff(s.gb, a.gb));
    snprintf(b, sizeof b, "%s: output", what);
    close_scaled(s.y, a.y, tol, b);
    snprintf(b, sizeof b, "%s: running_mean", what);
    close_scaled(s.rm, a.rm, tol, b);
    snprintf(b, sizeof b, "%s: running_var", what);
    close_scaled(s.rv, a.rv, tol, b);
    snprintf(b, sizeof b, "%s: dx", what);
    close_scaled(s.gx, a.gx, tol, b);
    snprintf(b, sizeof b, "%s: dweight", what);
    close_scaled(s.gw, a.gw, tol, b);
    snprintf(b, sizeof b, "%s: dbias", what);
    close_scaled(s.gb, a.gb, tol, b);
    bn_result_free(&a);
    bn_result_free(&s);
    free_inputs(&in);
}

/* |mean| / std = 1000 with running_mean 0: the unshifted f32 E[x^2] - mean^2
 * is far off (this is why the sync path shifts by running_mean) */
static void test_unshifted_is_inaccurate(void) {
    bn_inputs in = make_inputs(2, 1000.0, 1.0, 0.0);
    bn_result a = run_bn(mt_batch_norm, in.x, in.w, in.b, NULL, NULL, in.R);
    mt_set_allreduce_hook(hook_identity, NULL);
    bn_result s = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, NULL, NULL, in.R);
    mt_set_allreduce_hook(NULL, NULL);
    double d = rel_diff(s.y, a.y);
    printf("mean/std 1000, no shift: relative output difference %.2e\n", d);
    CHECK_MSG(d > 100 * TOL, "without the shift the f32 statistics should be inaccurate here (%.2e)", d);
    bn_result_free(&a);
    bn_result_free(&s);
    free_inputs(&in);
}

/* doubling hook (2 identical ranks) against batch_norm on concat(x, x) */
static void test_doubling_hook(void) {
    bn_inputs in = make_inputs(3, -0.4, 0.8, -0.3);
    mt_tensor *xx[2] = {in.x, in.x}, *RR[2] = {in.R, in.R};
    mt_tensor *zc = mt_concat(2, xx, 0), *R2 = mt_concat(2, RR, 0);
    mt_tensor *z = leaf(mt_tensor_detach(zc));
    bn_result a = run_bn(mt_batch_norm, z, in.w, in.b, in.rm, in.rv, R2);
    mt_set_allreduce_hook(hook_double, NULL);
    bn_result s = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_set_allreduce_hook(NULL, NULL);
    int64_t N = in.x->shape[0];
    mt_tensor *ya = mt_tensor_slice(a.y, 0, 0, N, 1), *ga = mt_tensor_slice(a.gx, 0, 0, N, 1);
    mt_tensor *gw2 = mt_mul_scalar(s.gw, 2.0f), *gb2 = mt_mul_scalar(s.gb, 2.0f);
    printf("2 identical ranks vs concatenated batch: relative differences y %.2e, running_var %.2e, dx %.2e, "
           "dw %.2e\n", rel_diff(s.y, ya), rel_diff(s.rv, a.rv), rel_diff(s.gx, ga), rel_diff(gw2, a.gw));
    close_scaled(s.y, ya, TOL, "2 identical ranks: output = batch_norm of (x, x)");
    close_scaled(s.rm, a.rm, TOL, "2 identical ranks: running_mean");
    close_scaled(s.rv, a.rv, TOL, "2 identical ranks: running_var (unbiased with the global count 2n)");
    close_scaled(s.gx, ga, TOL, "2 identical ranks: dx = d/dx of the concatenated batch's loss");
    close_scaled(gw2, a.gw, TOL, "2 identical ranks: dweight summed over ranks");
    close_scaled(gb2, a.gb, TOL, "2 identical ranks: dbias summed over ranks");
    /* the local running_var update differs: shows the global count matters */
    mt_set_allreduce_hook(hook_identity, NULL);
    bn_result one = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_set_allreduce_hook(NULL, NULL);
    CHECK_MSG(rel_diff(one.rv, a.rv) > 10 * TOL, "1-rank and 2-rank running_var should differ (n/(n-1))");
    mt_tensor *rel[] = {zc, R2, z, ya, ga, gw2, gb2};
    for (int k = 0; k < 7; k++) mt_tensor_release(rel[k]);
    bn_result_free(&one);
    bn_result_free(&a);
    bn_result_free(&s);
    free_inputs(&in);
}

static mt_tensor *sync_fn(mt_tensor **in, void *ctx) {
    (void)ctx;
    return mt_sync_batch_norm(in[0], in[1], in[2], NULL, NULL, 1, 0.1f, 1e-5f);
}

static void test_gradcheck(void) {
    mt_test_seed(4);
    mt_tensor *in[3] = {leaf(mt_test_randn(MT_SHAPE(2, 3, 3, 2, 2))), leaf(mt_test_rand(MT_SHAPE(3), 0.5f, 1.5f)),
                        leaf(mt_test_rand(MT_SHAPE(3), -0.5f, 0.5f))};
    mt_set_allreduce_hook(hook_double, NULL);
    mt_test_gradcheck("sync batch norm, 2 identical ranks (x, w, b)", sync_fn, NULL, 3, in, 1e-2, 2e-3, 1e-2);
    mt_set_allreduce_hook(hook_identity, NULL);
    mt_test_gradcheck("sync batch norm, 1 rank (x, w, b)", sync_fn, NULL, 3, in, 1e-2, 2e-3, 1e-2);
    mt_set_allreduce_hook(NULL, NULL);
    for (int k = 0; k < 3; k++) mt_tensor_release(in[k]);
}

/* bf16 input: statistics in f32, output and dx bf16, parameter gradients f32 */
static void test_bf16(void) {
    bn_inputs in = make_inputs(5, 0.3, 1.1, 0.2);
    mt_tensor *xb = leaf(mt_tensor_to_dtype(in.x, MT_BF16));
    mt_tensor *Rb = mt_tensor_to_dtype(in.R, MT_BF16);
    bn_result a = run_bn(mt_batch_norm, xb, in.w, in.b, in.rm, in.rv, Rb);
    mt_set_allreduce_hook(hook_identity, NULL);
    bn_result s = run_bn(mt_sync_batch_norm, xb, in.w, in.b, in.rm, in.rv, Rb);
    mt_set_allreduce_hook(NULL, NULL);
    CHECK(s.y->dtype == MT_BF16 && s.gx->dtype == MT_BF16 && s.gw->dtype == MT_F32 && s.rm->dtype == MT_F32);
    printf("bf16: relative differences y %.2e, dx %.2e, dw %.2e, running_var %.2e\n", rel_diff(s.y, a.y),
           rel_diff(s.gx, a.gx), rel_diff(s.gw, a.gw), rel_diff(s.rv, a.rv));
    close_scaled(s.y, a.y, 1e-2, "bf16: output (one bf16 rounding apart)");
    close_scaled(s.gx, a.gx, 1e-2, "bf16: dx");
    close_scaled(s.gw, a.gw, 1e-4, "bf16: dweight (f32 from the same bf16 values)");
    close_scaled(s.gb, a.gb, 1e-4, "bf16: dbias");
    close_scaled(s.rm, a.rm, TOL, "bf16: running_mean");
    close_scaled(s.rv, a.rv, TOL, "bf16: running_var");
    mt_tensor_release(xb);
    mt_tensor_release(Rb);
    bn_result_free(&a);
    bn_result_free(&s);
    free_inputs(&in);
}

/* On a "GPU" (tests/loopback_backend.h: device tensors in page-protected
 * memory, the CPU kernels): no host access to device memory, results on the
 * device, equal to the CPU's. */
static void test_loopback(void) {
    const mt_backend *prev = mt_loopback_register();
    const mt_device G = {MT_CUDA, 0};
    bn_inputs in = make_inputs(6, 0.2, 1.0, 0.1);
    mt_tensor *x = leaf(mt_tensor_to_device(in.x, G)), *w = leaf(mt_tensor_to_device(in.w, G)),
              *b = leaf(mt_tensor_to_device(in.b, G));
    mt_tensor *rm = mt_tensor_to_device(in.rm, G), *rv = mt_tensor_to_device(in.rv, G),
              *R = mt_tensor_to_device(in.R, G);
    mt_set_allreduce_hook(hook_double, NULL);
    long calls = mt_loopback_kernel_calls();
    bn_result d = run_bn(mt_sync_batch_norm, x, w, b, rm, rv, R);
    calls = mt_loopback_kernel_calls() - calls;
    bn_result h = run_bn(mt_sync_batch_norm, in.x, in.w, in.b, in.rm, in.rv, in.R);
    mt_set_allreduce_hook(NULL, NULL);
    CHECK_MSG(calls > 0, "the device run used the device's kernels");
    mt_tensor *dt[] = {d.y, d.gx, d.gw, d.gb, d.rm, d.rv};
    int on_dev = 1;
    for (int k = 0; k < 6; k++) on_dev &= mt_tensor_device(dt[k]).type == MT_CUDA;
    CHECK_MSG(on_dev, "output, gradients and running stats stay on the device");
    mt_test_allclose_t(d.y, h.y, 1e-30, 0, "device: output = the CPU's");
    mt_test_allclose_t(d.gx, h.gx, 1e-30, 0, "device: dx = the CPU's");
    mt_test_allclose_t(d.gw, h.gw, 1e-30, 0, "device: dweight = the CPU's");
    mt_test_allclose_t(d.gb, h.gb, 1e-30, 0, "device: dbias = the CPU's");
    mt_test_allclose_t(d.rm, h.rm, 1e-30, 0, "device: running_mean = the CPU's");
    mt_test_allclose_t(d.rv, h.rv, 1e-30, 0, "device: running_var = the CPU's");
    bn_result_free(&d);
    bn_result_free(&h);
    mt_tensor *rel[] = {x, w, b, rm, rv, R};
    for (int k = 0; k < 6; k++) mt_tensor_release(rel[k]);
    free_inputs(&in);
    mt_loopback_unregister(prev);
}

/* ------------------------------------------------------------- UNet3D */

#define NB 4 /* global batch */
#define STEPS 2

static void model_config(mt_unet3d_config *mc, mt_norm_type norm) {
    mt_unet3d_config_default(mc);
    mc->in_channels = 1;
    mc->out_channels = 3;
    mc->n_levels = 3;
    mc->features[0] = 4;
    mc->features[1] = 8;
    mc->features[2] = 8;
    mc->norm = norm;
}

static void test_convert(void) {
    mt_unet3d_config mc;
    model_config(&mc, MT_NORM_BATCH);
    mt_module *m = NULL;
    CHECK(mt_unet3d_new(&m, &mc, 1) == MT_OK);
    mt_module *bn = mt_module_find(m, "enc1.norm1");
    CHECK(bn && !mt_batch_norm3d_is_sync(bn));
    int n = mt_module_convert_sync_batchnorm(m, 1);
    CHECK_MSG(n == 10, "3-level UNet3D: 10 BatchNorm3d, converted %d", n); /* 2 x (3 encoder + 2 decoder) */
    CHECK(bn && mt_batch_norm3d_is_sync(bn));
    CHECK(mt_module_convert_sync_batchnorm(m, 0) == 10 && !mt_batch_norm3d_is_sync(bn));
    mt_module_free(m);
    model_config(&mc, MT_NORM_INSTANCE);
    CHECK(mt_unet3d_new(&m, &mc, 1) == MT_OK);
    CHECK(mt_module_convert_sync_batchnorm(m, 1) == 0);
    mt_module_free(m);
}

/* The stage convs' biases (enc{l}.conv{k}.bias, dec{l}.conv{k}.bias) feed a
 * batch norm, which removes any per-channel constant: their gradient is 0. */
static int before_norm(const char *name) {
    return (!strncmp(name, "enc", 3) || !strncmp(name, "dec", 3)) && strstr(name, ".conv") &&
           strstr(name, ".bias");
}

/* loss = mean over the samples [lo, hi) of the global batch of mean(out * R) */
static mt_tensor *loss_of(mt_module *m, const mt_tensor *x, const mt_tensor *R, int lo, int hi) {
    mt_tensor *xs = mt_tensor_slice(x, 0, lo, hi, 1), *rs = mt_tensor_slice(R, 0, lo, hi, 1);
    mt_tensor *xc = mt_tensor_contiguous(xs);
    mt_tensor *out = mt_unet3d_forward(m, xc);
    mt_tensor *prod = mt_mul(out, rs);
    mt_tensor *l = mt_mean_all(prod);
    mt_tensor *rel[] = {xs, rs, xc, out, prod};
    for (int k = 0; k < 5; k++) mt_tensor_release(rel[k]);
    return l;
}

/* W ranks x NB/W samples with (sync = 1) or without SyncBatchNorm against one
 * model with the whole batch and plain batch norm, STEPS steps; returns the
 * worst relative gradient difference (and of the running stats in *worst_buf). */
static double run_unet(mt_dist *d, int sync, double *worst_buf) {
    int W = d->world, rank = d->rank, per = NB / W;
    CHECK(NB % W == 0);
    mt_unet3d_config mc;
    model_config(&mc, MT_NORM_BATCH);
    mt_module *ref = NULL, *model = NULL;
    CHECK(mt_unet3d_new(&ref, &mc, 1) == MT_OK);
    CHECK(mt_unet3d_new(&model, &mc, 1 + (uint64_t)rank) == MT_OK); /* rank 1: other weights, DDP broadcasts */
    if (sync) {
        CHECK(mt_module_convert_sync_batchnorm(model, 1) == 10);
        mt_set_allreduce_hook(hook_mpi, d);
    }
    mt_ddp *r = NULL;
    CHECK(mt_ddp_init(&r, d, model, 4.0 / 1024, 1.0 / 1024) == MT_OK);
    mt_named_tensors pr = {0}, pm = {0}, br = {0}, bm = {0};
    mt_module_named_parameters(ref, &pr);
    mt_module_named_parameters(model, &pm);
    mt_module_named_buffers(ref, &br);
    mt_module_named_buffers(model, &bm);
    CHECK(pr.n == pm.n && br.n == bm.n);
    double worst = 0, wbuf = 0, worst_zero = 0;
    for (int step = 0; step < STEPS; step++) {
        mt_test_seed(300 + (uint64_t)step); /* same global batch on every rank */
        mt_tensor *x0 = mt_test_randn(5, (int64_t[]){NB, 1, 8, 8, 8});
        mt_tensor *x = mt_add_scalar(x0, 0.5f);
        mt_tensor *R = mt_test_randn(5, (int64_t[]){NB, 3, 8, 8, 8});
        mt_module_zero_grad(ref);
        mt_tensor *l = loss_of(ref, x, R, 0, NB);
        CHECK(mt_backward(l, NULL, 0) == MT_OK);
        mt_tensor_release(l);
        mt_module_zero_grad(model);
        g_calls = 0;
        l = loss_of(model, x, R, rank * per, (rank + 1) * per);
        CHECK(mt_backward(l, NULL, 0) == MT_OK);
        mt_tensor_release(l);
        CHECK(mt_ddp_finish(r) == MT_OK);
        if (sync) CHECK_MSG(g_calls == 20, "step %d: %d statistics all-reduces, expected 10 forward + 10 backward", step, g_calls);
        for (int k = 0; k < bm.n; k++) {
            if (bm.items[k].tensor->dtype != MT_F32) continue; /* num_batches_tracked */
            double e = rel_diff(bm.items[k].tensor, br.items[k].tensor);
            wbuf = fmax(wbuf, e);
            if (sync) close_scaled(bm.items[k].tensor, br.items[k].tensor, TOL, bm.items[k].name);
        }
        double gscale = 0; /* largest gradient element of the reference */
        for (int k = 0; k < pr.n; k++)
            if (pr.items[k].tensor->grad) gscale = fmax(gscale, max_abs(pr.items[k].tensor->grad));
        for (int k = 0; k < pm.n; k++) {
            mt_tensor *gr = pr.items[k].tensor->grad, *gm = pm.items[k].tensor->grad;
            CHECK_MSG(gr && gm, "%s: missing gradient", pm.items[k].name);
            if (!gr || !gm) continue;
            if (before_norm(pm.items[k].name)) {
                /* a per-channel constant before batch norm cancels: the gradient
                 * is 0 up to rounding in both (relative comparison meaningless) */
                double z = fmax(max_abs(gm), max_abs(gr)) / gscale;
                worst_zero = fmax(worst_zero, z);
                CHECK_MSG(z <= 1e-5, "step %d: %s gradient should be ~0 (bias before batch norm): %.3e of the "
                          "largest gradient", step, pm.items[k].name, z);
                continue;
            }
            double e = rel_diff(gm, gr);
            worst = fmax(worst, e);
            if (sync) {
                char what[256];
                snprintf(what, sizeof what, "step %d: %s gradient", step, pm.items[k].name);
                close_scaled(gm, gr, TOL, what);
            }
        }
        /* the same SGD step on both keeps them equal */
        for (int k = 0; k < pm.n; k++) {
            mt_tensor *gr = pr.items[k].tensor->grad;
            for (int64_t i = 0; gr && i < mt_tensor_numel(gr); i++) {
                double g = mt_tensor_get_flat(gr, i);
                mt_tensor_set_flat(pr.items[k].tensor, i, mt_tensor_get_flat(pr.items[k].tensor, i) - 0.1 * g);
                mt_tensor_set_flat(pm.items[k].tensor, i, mt_tensor_get_flat(pm.items[k].tensor, i) - 0.1 * g);
            }
        }
        /* running stats: the reference's on both (as mt_ddp_sync_buffers would
         * give rank 0's), so step 2 compares one step's update */
        for (int k = 0; k < bm.n; k++) mt_tensor_copy_(bm.items[k].tensor, br.items[k].tensor);
        mt_tensor_release(x0);
        mt_tensor_release(x);
        mt_tensor_release(R);
    }
    mt_set_allreduce_hook(NULL, NULL);
    printf("rank %d of %d, %s: worst relative gradient difference %.3e, running stats %.3e (vs 1 rank, whole "
           "batch, plain batch norm); biases before a norm: |grad| <= %.1e of the largest gradient\n", rank, W,
           sync ? "SyncBatchNorm" : "local batch norm", worst, wbuf, worst_zero);
    mt_named_tensors_free(&pr);
    mt_named_tensors_free(&pm);
    mt_named_tensors_free(&br);
    mt_named_tensors_free(&bm);
    mt_ddp_free(r);
    mt_module_free(ref);
    mt_module_free(model);
    *worst_buf = wbuf;
    return worst;
}

/* ------------------------------------------------------------- training */

#define TSTEPS 8

/* A small run of launch/train.c with batch norm: 8 steps, a loss every step. */
static mt_status train(const char *dir, const char *name, int batch, const char *sync) {
    mt_config *cfg = mt_config_default();
    char b0[512], b1[128], b2[64];
    snprintf(b0, sizeof b0, "run.dir=%s", dir);
    snprintf(b1, sizeof b1, "run.name=%s", name);
    snprintf(b2, sizeof b2, "train.batch_size=%d", batch);
    const char *sets[] = {b0, b1, b2, "train.steps=8", "run.log_every=1", "train.val_every=8",
                          "train.checkpoint_every=8", "run.threads=1", "data.num_workers=1",
                          "data.phantom.num_cases=4", "data.phantom.shape=[32, 32, 32]", "data.val_cases=1",
                          "data.patch_size=[16, 16, 16]", "model.features=[4, 8, 16]", "sched.warmup_steps=2",
                          "model.norm=batch", "distributed.timeout_s=120", sync};
    mt_status s = MT_OK;
    for (size_t k = 0; k < sizeof sets / sizeof *sets && s == MT_OK; k++) s = mt_config_set(cfg, sets[k]);
    if (s == MT_OK) s = mt_train_run(cfg, NULL);
    mt_config_free(cfg);
    return s;
}

/* 2 ranks x batch 1 taking the samples of the 1-rank batch of 2 (test-only
 * loader mode), with and without SyncBatchNorm */
static int worker_train(const char *dir) {
    mt_dist *d = mt_dist_get();
    CHECK(d->world == 2);
    mt_train_set_shard_global_batch(1);
    mt_status s = train(dir, "two_sync", 1, "model.sync_batchnorm=true");
    CHECK_MSG(s == MT_OK, "rank %d: %s", d->rank, mt_error_msg());
    CHECK_MSG(!mt_allreduce_hook_installed(), "the run removes its all-reduce hook");
    s = train(dir, "two_local", 1, "model.sync_batchnorm=false");
    CHECK_MSG(s == MT_OK, "rank %d: %s", d->rank, mt_error_msg());
    printf("rank %d: ", d->rank);
    return mt_test_finish();
}

static double loss_diff(const mt_test_metrics *a, const mt_test_metrics *b) {
    double w = 0;
    for (int k = 0; k < a->n && k < b->n; k++) w = fmax(w, fabs(a->loss[k] - b->loss[k]));
    return w;
}

static void test_train(void) {
    /* the key: model.norm other than batch is a config error naming it */
    mt_config *cfg = mt_config_default();
    CHECK(mt_config_set(cfg, "model.sync_batchnorm=true") == MT_OK);
    CHECK(mt_config_set(cfg, "model.norm=instance") == MT_OK);
    mt_status s = mt_config_check(cfg);
    CHECK_MSG(s != MT_OK && strstr(mt_error_msg(), "model.sync_batchnorm"), "sync with instance norm: %s",
              s == MT_OK ? "accepted" : mt_error_msg());
    CHECK(mt_config_set(cfg, "model.norm=batch") == MT_OK);
    CHECK_MSG(mt_config_check(cfg) == MT_OK, "sync with batch norm: %s", mt_error_msg());
    mt_config_free(cfg);
    if (!mt_test_mpirun_path()) return;

    char tmp[256];
    CHECK(mt_test_mkdtemp(tmp, sizeof tmp, "sync_bn") == 0);
    /* one rank, batch 2: sync_batchnorm accepted, plain batch norm */
    s = train(tmp, "one", 2, "model.sync_batchnorm=true");
    CHECK_MSG(s == MT_OK, "1 rank: %s", mt_error_msg());
    char args[600];
    snprintf(args, sizeof args, "--worker-train '%s'", tmp);
    int rc = mt_test_mpirun(2, args, 300);
    CHECK_MSG(rc == 0, "mpirun -np 2 --worker-train exited with %d", rc);
    char p[600];
    mt_test_metrics one, sync, local;
    snprintf(p, sizeof p, "%s/one/metrics.jsonl", tmp);
    mt_test_read_metrics(p, &one);
    snprintf(p, sizeof p, "%s/two_sync/metrics.jsonl", tmp);
    mt_test_read_metrics(p, &sync);
    snprintf(p, sizeof p, "%s/two_local/metrics.jsonl", tmp);
    mt_test_read_metrics(p, &local);
    CHECK_MSG(one.n == TSTEPS && sync.n == TSTEPS && local.n == TSTEPS, "loss lines %d, %d, %d", one.n, sync.n,
              local.n);
    double ds = loss_diff(&one, &sync), dl = loss_diff(&one, &local);
    printf("training, 2 ranks x batch 1 vs 1 rank x batch 2 (batch norm): max loss difference %.3g with "
           "SyncBatchNorm, %.3g without; val_dice_mean %.6f / %.6f / %.6f\n", ds, dl,
           one.dice_mean, sync.dice_mean, local.dice_mean);
    CHECK_MSG(ds <= 1e-4, "SyncBatchNorm: 2 ranks x batch 1 = 1 rank x batch 2 (loss difference %.3g)", ds);
    CHECK_MSG(dl > 100 * ds && dl > 1e-3, "without sync the losses should differ (%.3g)", dl);
    /* validation runs in eval mode on the running statistics: the global ones */
    CHECK_MSG(one.dice_mean >= 0 && fabs(one.dice_mean - sync.dice_mean) <= 1e-4, "val_dice_mean %.6f vs %.6f",
              one.dice_mean, sync.dice_mean);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "grep -q 'sync batch norm: 10 BatchNorm3d module(s) compute training statistics "
             "over all ranks' '%s/two_sync/train.log'", tmp);
    CHECK_MSG(system(cmd) == 0, "train.log names sync batch norm (%s/two_sync/train.log)", tmp);
    snprintf(cmd, sizeof cmd, "grep -q 'one rank: plain batch norm' '%s/one/train.log'", tmp);
    CHECK_MSG(system(cmd) == 0, "1 rank: train.log says plain batch norm");
    mt_test_cleanup(tmp);
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--worker-train")) return worker_train(argv[2]);
    if (argc > 1 && !strcmp(argv[1], "--worker")) {
        mt_dist *d = mt_dist_get();
        CHECK(d->world == 2);
        double wb_sync = 0, wb_local = 0;
        double ws = run_unet(d, 1, &wb_sync);
        double wl = run_unet(d, 0, &wb_local);
        CHECK_MSG(ws <= TOL, "SyncBatchNorm gradients within %g: %.3e", TOL, ws);
        CHECK_MSG(wl > 100 * TOL && wb_local > 100 * TOL,
                  "without sync the gradients (%.3e) and running stats (%.3e) should differ from the whole batch's",
                  wl, wb_local);
        printf("rank %d: ", d->rank);
        return mt_test_finish();
    }
    test_all_reduce_op();
    test_no_hook_exact();
    test_identity_hook(0.7, 1.3, 0.5, TOL, "identity hook");
    /* 1e-4: the reference itself is limited here (its f32 batch mean near
     * 1000 is known to ulp(1000) / 2 = 3e-5 of the std, which shifts every
     * normalised value: about 1e-5 in dweight) */
    test_identity_hook(1000.0, 1.0, 1000.0, 1e-4, "identity hook, mean/std 1000, running_mean near the mean");
    test_unshifted_is_inaccurate();
    test_doubling_hook();
    test_gradcheck();
    test_bf16();
    test_loopback();
    test_convert();
    double wb = 0;
    double w1 = run_unet(mt_dist_get(), 1, &wb); /* world 1: the identity all-reduce */
    CHECK_MSG(w1 <= TOL, "world 1 sync vs plain: %.3e", w1);
    test_train(); /* the config key always; the training runs need mpirun */
    if (!mt_test_mpirun_path()) {
        printf("skipped: mpirun not found\n");
        mt_test_finish();
        return MT_TEST_SKIP;
    }
    int rc = mt_test_mpirun(2, "--worker", 300);
    CHECK_MSG(rc == 0, "mpirun -np 2 --worker exited with %d", rc);
    return mt_test_finish();
}
