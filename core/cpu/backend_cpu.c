/* The CPU backend's kernel table. Kernels live in one file per op family
 * (core/cpu/<family>.c) and are named mt_cpu_<slot>. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"

static void cpu_memcpy_host(void *dst, const void *src, size_t nbytes, int to_host) {
    (void)to_host;
    memcpy(dst, src, nbytes);
}

static void cpu_synchronize(void) {}
static int cpu_device_count(void) { return 1; }
static int cpu_set_device(int index) {
    if (index == 0) return 0;
    mt_error_set(MT_ERR_INVALID, "there is one CPU device (cpu), not cpu:%d", index);
    return -1;
}

const mt_backend mt_cpu_backend = {
    .name = "cpu",
    .alloc = mt_host_alloc,
    .free = mt_host_free,
    .memcpy_host = cpu_memcpy_host,
    .synchronize = cpu_synchronize,
    .device_count = cpu_device_count,
    .set_device = cpu_set_device,
    .memory_stats = mt_host_alloc_stats,
    .memory_reset_peak = mt_host_alloc_reset_peak,
    .fill = mt_cpu_fill,
    .copy = mt_cpu_copy,
    .binary = mt_cpu_binary,
    .unary = mt_cpu_unary,
    .unary_backward = mt_cpu_unary_backward,
    .one_hot = mt_cpu_one_hot,
    .argmax_channel = mt_cpu_argmax_channel,
    .reduce = mt_cpu_reduce,
    .softmax = mt_cpu_softmax,
    .softmax_backward = mt_cpu_softmax_backward,
    .rng_uniform = mt_cpu_rng_uniform,
    .rng_normal = mt_cpu_rng_normal,
    .gemm = mt_cpu_gemm,
    .conv3d_forward = mt_cpu_conv3d_forward,
    .conv3d_backward_data = mt_cpu_conv3d_backward_data,
    .conv3d_backward_filter = mt_cpu_conv3d_backward_filter,
    .batch_norm_forward = mt_cpu_batch_norm_forward,
    .batch_norm_backward = mt_cpu_batch_norm_backward,
    .group_norm_forward = mt_cpu_group_norm_forward,
    .group_norm_backward = mt_cpu_group_norm_backward,
    .layer_norm_forward = mt_cpu_layer_norm_forward,
    .layer_norm_backward = mt_cpu_layer_norm_backward,
    .max_pool3d_forward = mt_cpu_max_pool3d_forward,
    .max_pool3d_backward = mt_cpu_max_pool3d_backward,
    .avg_pool3d_forward = mt_cpu_avg_pool3d_forward,
    .avg_pool3d_backward = mt_cpu_avg_pool3d_backward,
    .upsample_trilinear_forward = mt_cpu_upsample_trilinear_forward,
    .upsample_trilinear_backward = mt_cpu_upsample_trilinear_backward,
    .sgd_step = mt_cpu_sgd_step,
    .adam_step = mt_cpu_adam_step,
    .sgd_step_multi = mt_cpu_sgd_step_multi,
    .adam_step_multi = mt_cpu_adam_step_multi,
};

static int g_threads = 0;

void mt_cpu_set_num_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    if (mt_cpu_blas_set_num_threads) mt_cpu_blas_set_num_threads(n);
}

int mt_cpu_get_num_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }
