/* The loopback "CUDA" backend for tests (see loopback_backend.h). */
#define _GNU_SOURCE
#include "loopback_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"

/* ------------------------------------------------------------- memory */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_in_use, g_peak;
static long g_kernel_calls;

static size_t page_size(void) {
    static size_t ps;
    if (!ps) ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

static size_t round_pages(size_t n) {
    size_t ps = page_size();
    return (n + ps - 1) / ps * ps;
}

static void *lb_alloc(size_t nbytes) {
    size_t len = round_pages(nbytes ? nbytes : 1);
    void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MT_CHECK_MSG(p != MAP_FAILED, "loopback backend: mmap of %zu bytes failed", len);
    pthread_mutex_lock(&g_lock);
    g_in_use += (int64_t)nbytes;
    if (g_in_use > g_peak) g_peak = g_in_use;
    pthread_mutex_unlock(&g_lock);
    return p;
}

static void lb_free(void *p, size_t nbytes) {
    if (!p) return;
    MT_CHECK(munmap(p, round_pages(nbytes ? nbytes : 1)) == 0);
    pthread_mutex_lock(&g_lock);
    g_in_use -= (int64_t)nbytes;
    pthread_mutex_unlock(&g_lock);
}

/* Makes [p, p + n) (rounded out to pages) accessible (on) or not. */
static void set_access(const void *p, size_t n, int on) {
    if (!n) return;
    uintptr_t ps = page_size(), a = (uintptr_t)p / ps * ps, e = ((uintptr_t)p + n + ps - 1) / ps * ps;
    MT_CHECK_MSG(mprotect((void *)a, e - a, on ? PROT_READ | PROT_WRITE : PROT_NONE) == 0,
                 "loopback backend: mprotect failed");
}

static void lb_memcpy_host(void *dst, const void *src, size_t nbytes, int to_host) {
    if (!nbytes) return;
    pthread_mutex_lock(&g_lock);
    const void *dev = to_host ? src : dst;
    set_access(dev, nbytes, 1);
    memcpy(dst, src, nbytes);
    set_access(dev, nbytes, 0);
    pthread_mutex_unlock(&g_lock);
}

static void lb_synchronize(void) {}
static int lb_device_count(void) { return 1; }
static const char *lb_device_error(void) { return NULL; }

static int lb_set_device(int index) {
    if (index == 0) return 0;
    mt_error_set(MT_ERR_INVALID, "loopback backend: there is one device (cuda:0), not cuda:%d", index);
    return -1;
}

static void lb_memory_stats(mt_alloc_stats *out) {
    pthread_mutex_lock(&g_lock);
    memset(out, 0, sizeof *out);
    out->in_use = g_in_use;
    out->peak_in_use = g_peak;
    pthread_mutex_unlock(&g_lock);
}

/* "Pinned" host memory: ordinary host memory (readable on the host, as
 * page-locked memory is), counted so tests can see it used. */
static long g_pinned_allocs = 0;

static void *lb_host_alloc_pinned(size_t nbytes) {
    void *p = malloc(nbytes ? nbytes : 1);
    MT_CHECK(p);
    __atomic_add_fetch(&g_pinned_allocs, 1, __ATOMIC_RELAXED);
    return p;
}

static void lb_host_free_pinned(void *p, size_t nbytes) {
    (void)nbytes;
    free(p);
}

long mt_loopback_pinned_allocs(void) { return __atomic_load_n(&g_pinned_allocs, __ATOMIC_RELAXED); }

static long g_async_copies = 0;

static void lb_memcpy_pinned_to_device(void *dst, const void *src, size_t nbytes) {
    __atomic_add_fetch(&g_async_copies, 1, __ATOMIC_RELAXED);
    lb_memcpy_host(dst, src, nbytes, 0);
}

long mt_loopback_async_copies(void) { return __atomic_load_n(&g_async_copies, __ATOMIC_RELAXED); }

static void lb_memory_reset_peak(void) {
    pthread_mutex_lock(&g_lock);
    g_peak = g_in_use;
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------- argument checking */

/* One kernel call: CPU views of its tensor arguments, and the storages it
 * opened (closed again when the call ends). */
typedef struct {
    mt_tensor t;
    mt_storage s;
} lb_view;

typedef struct {
    const char *slot;
    lb_view *views;
    int n, cap;
} lb_call;

static void call_begin(lb_call *c, const char *slot, int cap) {
    pthread_mutex_lock(&g_lock);
    g_kernel_calls++;
    c->slot = slot;
    c->n = 0;
    c->cap = cap;
    c->views = calloc((size_t)cap, sizeof *c->views);
    MT_CHECK(c->views);
}

static void call_end(lb_call *c) {
    for (int i = 0; i < c->n; i++) set_access(c->views[i].s.data, c->views[i].s.nbytes, 0);
    free(c->views);
    pthread_mutex_unlock(&g_lock);
}

/* The CPU view of device tensor t (NULL stays NULL); aborts naming the slot
 * and argument when t is not on the CUDA device. */
static mt_tensor *view(lb_call *c, const mt_tensor *t, const char *arg) {
    if (!t) return NULL;
    char b[32];
    MT_CHECK_MSG(t->storage, "loopback backend: kernel '%s': argument '%s' has no storage", c->slot, arg);
    mt_device d = t->storage->device;
    if (d.type != MT_CUDA || d.index != 0) {
        pthread_mutex_unlock(&g_lock);
        mt_fatal(__FILE__, __LINE__,
                 "loopback backend: kernel '%s': argument '%s' is on %s, not on cuda:0 (host and device "
                 "tensors mixed)",
                 c->slot, arg, mt_device_name(d, b, sizeof b));
    }
    MT_CHECK_MSG(c->n < c->cap, "loopback backend: kernel '%s': too many tensor arguments", c->slot);
    lb_view *v = &c->views[c->n++];
    v->s = *t->storage;
    v->s.device = MT_DEVICE_CPU;
    v->s.external = 1; /* never freed through the view */
    v->s.refcount = 1 << 20;
    v->t = *t;
    v->t.refcount = 1 << 20;
    v->t.storage = &v->s;
    v->t.requires_grad = 0;
    v->t.grad = NULL;
    v->t.grad_fn = NULL;
    v->t.grad_acc = NULL;
    v->t.hook = NULL;
    v->t.hook_ctx = NULL;
    if (v->s.data) set_access(v->s.data, v->s.nbytes, 1);
    return &v->t;
}

#define CPU mt_cpu_backend
#define BEGIN(slot, n) \
    lb_call c_;        \
    call_begin(&c_, #slot, n)
#define V(t) view(&c_, (t), #t)
#define END call_end(&c_)

/* ------------------------------------------------------------ kernels */

static void lb_fill(mt_tensor *out, double value) {
    BEGIN(fill, 1);
    CPU.fill(V(out), value);
    END;
}

static void lb_copy(mt_tensor *out, const mt_tensor *in) {
    BEGIN(copy, 2);
    CPU.copy(V(out), V(in));
    END;
}

static void lb_binary(mt_binary_op op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b) {
    BEGIN(binary, 3);
    CPU.binary(op, V(out), V(a), V(b));
    END;
}

static void lb_unary(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) {
    BEGIN(unary, 2);
    CPU.unary(op, V(out), V(in), alpha);
    END;
}

static void lb_unary_backward(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out,
                              const mt_tensor *in, const mt_tensor *out, float alpha) {
    BEGIN(unary_backward, 4);
    CPU.unary_backward(op, V(grad_in), V(grad_out), V(in), V(out), alpha);
    END;
}

static void lb_one_hot(mt_tensor *out, const mt_tensor *labels, int num_classes) {
    BEGIN(one_hot, 2);
    CPU.one_hot(V(out), V(labels), num_classes);
    END;
}

static void lb_argmax_channel(mt_tensor *out, const mt_tensor *in) {
    BEGIN(argmax_channel, 2);
    CPU.argmax_channel(V(out), V(in));
    END;
}

static void lb_reduce(mt_reduce_op op, mt_tensor *out, const mt_tensor *in) {
    BEGIN(reduce, 2);
    CPU.reduce(op, V(out), V(in));
    END;
}

static void lb_softmax(mt_tensor *out, const mt_tensor *in, int dim, int log) {
    BEGIN(softmax, 2);
    CPU.softmax(V(out), V(in), dim, log);
    END;
}

static void lb_softmax_backward(mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *out, int dim,
                                int log) {
    BEGIN(softmax_backward, 3);
    CPU.softmax_backward(V(grad_in), V(grad_out), V(out), dim, log);
    END;
}

static void lb_rng_uniform(mt_tensor *out, uint64_t seed, uint64_t offset, float lo, float hi) {
    BEGIN(rng_uniform, 1);
    CPU.rng_uniform(V(out), seed, offset, lo, hi);
    END;
}

static void lb_rng_normal(mt_tensor *out, uint64_t seed, uint64_t offset, float mean, float std) {
    BEGIN(rng_normal, 1);
    CPU.rng_normal(V(out), seed, offset, mean, std);
    END;
}

static void lb_gemm(mt_tensor *cc, const mt_tensor *a, const mt_tensor *b, int trans_a, int trans_b, float alpha,
                    float beta) {
    BEGIN(gemm, 3);
    CPU.gemm(view(&c_, cc, "c"), V(a), V(b), trans_a, trans_b, alpha, beta);
    END;
}

static void lb_conv3d_forward(mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *bias,
                              const mt_conv_params *p) {
    BEGIN(conv3d_forward, 4);
    CPU.conv3d_forward(V(y), V(x), V(w), V(bias), p);
    END;
}

static void lb_conv3d_backward_data(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w,
                                    const mt_conv_params *p) {
    BEGIN(conv3d_backward_data, 3);
    CPU.conv3d_backward_data(V(dx), V(dy), V(w), p);
    END;
}

static void lb_conv3d_backward_filter(mt_tensor *dw, mt_tensor *db, const mt_tensor *x, const mt_tensor *dy,
                                      const mt_conv_params *p) {
    BEGIN(conv3d_backward_filter, 4);
    CPU.conv3d_backward_filter(V(dw), V(db), V(x), V(dy), p);
    END;
}

static void lb_batch_norm_forward(mt_tensor *y, mt_tensor *save_mean, mt_tensor *save_invstd, const mt_tensor *x,
                                  const mt_tensor *weight, const mt_tensor *bias, mt_tensor *running_mean,
                                  mt_tensor *running_var, int training, float momentum, float eps) {
    BEGIN(batch_norm_forward, 8);
    CPU.batch_norm_forward(V(y), V(save_mean), V(save_invstd), V(x), V(weight), V(bias), V(running_mean),
                           V(running_var), training, momentum, eps);
    END;
}

static void lb_batch_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy,
                                   const mt_tensor *x, const mt_tensor *weight, const mt_tensor *save_mean,
                                   const mt_tensor *save_invstd, int training) {
    BEGIN(batch_norm_backward, 8);
    CPU.batch_norm_backward(V(dx), V(dweight), V(dbias), V(dy), V(x), V(weight), V(save_mean), V(save_invstd),
                            training);
    END;
}

static void lb_group_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                                  const mt_tensor *weight, const mt_tensor *bias, int groups, float eps) {
    BEGIN(group_norm_forward, 6);
    CPU.group_norm_forward(V(y), V(mean), V(rstd), V(x), V(weight), V(bias), groups, eps);
    END;
}

static void lb_group_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy,
                                   const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean,
                                   const mt_tensor *rstd, int groups) {
    BEGIN(group_norm_backward, 8);
    CPU.group_norm_backward(V(dx), V(dweight), V(dbias), V(dy), V(x), V(weight), V(mean), V(rstd), groups);
    END;
}

static void lb_layer_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                                  const mt_tensor *weight, const mt_tensor *bias, int64_t norm_numel, float eps) {
    BEGIN(layer_norm_forward, 6);
    CPU.layer_norm_forward(V(y), V(mean), V(rstd), V(x), V(weight), V(bias), norm_numel, eps);
    END;
}

static void lb_layer_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias, const mt_tensor *dy,
                                   const mt_tensor *x, const mt_tensor *weight, const mt_tensor *mean,
                                   const mt_tensor *rstd, int64_t norm_numel) {
    BEGIN(layer_norm_backward, 8);
    CPU.layer_norm_backward(V(dx), V(dweight), V(dbias), V(dy), V(x), V(weight), V(mean), V(rstd), norm_numel);
    END;
}

static void lb_max_pool3d_forward(mt_tensor *y, mt_tensor *indices, const mt_tensor *x, const mt_pool_params *p) {
    BEGIN(max_pool3d_forward, 3);
    CPU.max_pool3d_forward(V(y), V(indices), V(x), p);
    END;
}

static void lb_max_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *indices) {
    BEGIN(max_pool3d_backward, 3);
    CPU.max_pool3d_backward(V(dx), V(dy), V(indices));
    END;
}

static void lb_avg_pool3d_forward(mt_tensor *y, const mt_tensor *x, const mt_pool_params *p) {
    BEGIN(avg_pool3d_forward, 2);
    CPU.avg_pool3d_forward(V(y), V(x), p);
    END;
}

static void lb_avg_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_pool_params *p) {
    BEGIN(avg_pool3d_backward, 2);
    CPU.avg_pool3d_backward(V(dx), V(dy), p);
    END;
}

static void lb_upsample_trilinear_forward(mt_tensor *y, const mt_tensor *x, int align_corners) {
    BEGIN(upsample_trilinear_forward, 2);
    CPU.upsample_trilinear_forward(V(y), V(x), align_corners);
    END;
}

static void lb_upsample_trilinear_backward(mt_tensor *dx, const mt_tensor *dy, int align_corners) {
    BEGIN(upsample_trilinear_backward, 2);
    CPU.upsample_trilinear_backward(V(dx), V(dy), align_corners);
    END;
}

static void lb_sgd_step(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad, float lr, float momentum,
                        float dampening, float weight_decay, int nesterov, int first) {
    BEGIN(sgd_step, 3);
    CPU.sgd_step(V(param), V(buf), V(grad), lr, momentum, dampening, weight_decay, nesterov, first);
    END;
}

static void lb_adam_step(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq, const mt_tensor *grad,
                         float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled,
                         int64_t step) {
    BEGIN(adam_step, 4);
    CPU.adam_step(V(param), V(exp_avg), V(exp_avg_sq), V(grad), lr, beta1, beta2, eps, weight_decay, decoupled,
                  step);
    END;
}

/* Views of a list of n tensors (NULL list stays NULL); argument names "name[k]". */
static mt_tensor **view_list(lb_call *c, int n, mt_tensor *const *ts, const char *name) {
    if (!ts) return NULL;
    mt_tensor **out = calloc((size_t)(n > 0 ? n : 1), sizeof *out);
    MT_CHECK(out);
    for (int k = 0; k < n; k++) {
        char arg[48];
        snprintf(arg, sizeof arg, "%s[%d]", name, k);
        /* the name must outlive the abort message only */
        out[k] = view(c, ts[k], arg);
    }
    return out;
}

static void lb_sgd_step_multi(int n, mt_tensor *const *params, mt_tensor *const *bufs, mt_tensor *const *grads,
                              float lr, float momentum, float dampening, float weight_decay, int nesterov,
                              int first) {
    BEGIN(sgd_step_multi, 3 * n + 1);
    mt_tensor **p = view_list(&c_, n, params, "params"), **b = view_list(&c_, n, bufs, "bufs"),
              **g = view_list(&c_, n, grads, "grads");
    CPU.sgd_step_multi(n, p, b, g, lr, momentum, dampening, weight_decay, nesterov, first);
    free(p);
    free(b);
    free(g);
    END;
}

static void lb_adam_step_multi(int n, mt_tensor *const *params, mt_tensor *const *exp_avgs,
                               mt_tensor *const *exp_avg_sqs, mt_tensor *const *grads, float lr, float beta1,
                               float beta2, float eps, float weight_decay, int decoupled, int64_t step) {
    BEGIN(adam_step_multi, 4 * n + 1);
    mt_tensor **p = view_list(&c_, n, params, "params"), **a = view_list(&c_, n, exp_avgs, "exp_avgs"),
              **s = view_list(&c_, n, exp_avg_sqs, "exp_avg_sqs"), **g = view_list(&c_, n, grads, "grads");
    CPU.adam_step_multi(n, p, a, s, g, lr, beta1, beta2, eps, weight_decay, decoupled, step);
    free(p);
    free(a);
    free(s);
    free(g);
    END;
}

const mt_backend mt_loopback_backend = {
    .name = "cuda-loopback",
    .alloc = lb_alloc,
    .free = lb_free,
    .host_alloc_pinned = lb_host_alloc_pinned,
    .memcpy_pinned_to_device = lb_memcpy_pinned_to_device,
    .host_free_pinned = lb_host_free_pinned,
    .memcpy_host = lb_memcpy_host,
    .synchronize = lb_synchronize,
    .device_count = lb_device_count,
    .device_error = lb_device_error,
    .set_device = lb_set_device,
    .memory_stats = lb_memory_stats,
    .memory_reset_peak = lb_memory_reset_peak,
    .fill = lb_fill,
    .copy = lb_copy,
    .binary = lb_binary,
    .unary = lb_unary,
    .unary_backward = lb_unary_backward,
    .one_hot = lb_one_hot,
    .argmax_channel = lb_argmax_channel,
    .reduce = lb_reduce,
    .softmax = lb_softmax,
    .softmax_backward = lb_softmax_backward,
    .rng_uniform = lb_rng_uniform,
    .rng_normal = lb_rng_normal,
    .gemm = lb_gemm,
    .conv3d_forward = lb_conv3d_forward,
    .conv3d_backward_data = lb_conv3d_backward_data,
    .conv3d_backward_filter = lb_conv3d_backward_filter,
    .batch_norm_forward = lb_batch_norm_forward,
    .batch_norm_backward = lb_batch_norm_backward,
    .group_norm_forward = lb_group_norm_forward,
    .group_norm_backward = lb_group_norm_backward,
    .layer_norm_forward = lb_layer_norm_forward,
    .layer_norm_backward = lb_layer_norm_backward,
    .max_pool3d_forward = lb_max_pool3d_forward,
    .max_pool3d_backward = lb_max_pool3d_backward,
    .avg_pool3d_forward = lb_avg_pool3d_forward,
    .avg_pool3d_backward = lb_avg_pool3d_backward,
    .upsample_trilinear_forward = lb_upsample_trilinear_forward,
    .upsample_trilinear_backward = lb_upsample_trilinear_backward,
    .sgd_step = lb_sgd_step,
    .adam_step = lb_adam_step,
    .sgd_step_multi = lb_sgd_step_multi,
    .adam_step_multi = lb_adam_step_multi,
};

const mt_backend *mt_loopback_register(void) {
    const mt_backend *prev = mt_backend_get(MT_CUDA);
    mt_backend_register(MT_CUDA, &mt_loopback_backend);
    return prev;
}

void mt_loopback_unregister(const mt_backend *previous) { mt_backend_register(MT_CUDA, previous); }

long mt_loopback_kernel_calls(void) {
    pthread_mutex_lock(&g_lock);
    long n = g_kernel_calls;
    pthread_mutex_unlock(&g_lock);
    return n;
}
