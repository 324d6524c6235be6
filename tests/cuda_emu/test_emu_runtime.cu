/* The CUDA emulator's own tests (built only with -DMT_CUDA_EMU=ON): block
 * reductions through shuffles and barriers, grid-stride loops, and every
 * fault the emulator promises to find: a bad launch configuration, a
 * divergent __syncthreads, a shuffle waiting on an exited lane, a partial
 * warp in a full-mask shuffle, a host pointer passed to a kernel, __trap(),
 * copies outside an allocation, and the capacity limit. Faults make the
 * error sticky, so each runs in a child process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

static int g_pass = 0, g_fail = 0;
#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            g_pass++;                                      \
        } else {                                           \
            g_fail++;                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* One sum per block: shuffles, then a shared array across warps. */
__global__ void block_sum_k(const float *x, float *out, int n) {
    __shared__ float part[32];
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) v += x[i];
    v = warp_sum(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) part[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) out[blockIdx.x] = v;
    }
}

/* Shuffle modes against their definitions, width 8. */
__global__ void shfl_modes_k(int *out) {
    int l = threadIdx.x;
    out[l] = __shfl_sync(0xffffffffu, l * 10, 3, 8);
    out[32 + l] = __shfl_up_sync(0xffffffffu, l * 10, 2, 8);
    out[64 + l] = __shfl_down_sync(0xffffffffu, l * 10, 2, 8);
    out[96 + l] = __shfl_xor_sync(0xffffffffu, l * 10, 5, 8);
}

/* 3-d block and grid indices. */
__global__ void index_k(int *out) {
    int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    int nt = blockDim.x * blockDim.y * blockDim.z;
    out[b * nt + t] = b * 1000 + t;
}

__global__ void divergent_barrier_k(float *x) {
    if (threadIdx.x < 16) {
        __syncthreads();
        x[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
    }
}
__global__ void exited_lane_k(float *x) {
    if (threadIdx.x == 5) return;
    x[threadIdx.x] = warp_sum(1.0f);
}
__global__ void trap_k(float *x) {
    if (threadIdx.x == 7 && blockIdx.x == 1) __trap();
    x[threadIdx.x] = 0.0f;
}
__global__ void write_k(float *x) { x[threadIdx.x] = 2.0f; }
__global__ void past_end_k(float *x, int n) { x[n + threadIdx.x] = 1.0f; }

/* Runs fn in a child; returns its exit status (the fault makes it non-zero). */
static int in_child(int (*fn)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 2);
        _exit(fn());
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static float *dev_floats(int n) {
    void *p = NULL;
    if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) return NULL;
    return (float *)p;
}

/* Each returns 0 when the emulator reported the fault as promised. */
static int fault_config(void) {
    float *d = dev_floats(32);
    write_k<<<1, 2048>>>(d);
    if (cudaGetLastError() != cudaErrorInvalidConfiguration) return 1;
    write_k<<<dim3(1, 70000), 32>>>(d);
    if (cudaGetLastError() != cudaErrorInvalidConfiguration) return 2;
    write_k<<<1, dim3(1, 1, 65)>>>(d);
    if (cudaGetLastError() != cudaErrorInvalidConfiguration) return 3;
    write_k<<<1, 32>>>(d); /* a bad configuration is not sticky */
    return cudaGetLastError() == cudaSuccess ? 0 : 4;
}
static int fault_divergent(void) {
    float *d = dev_floats(32);
    divergent_barrier_k<<<1, 32>>>(d);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure ? 0 : 1;
}
static int fault_exited_lane(void) {
    float *d = dev_floats(32);
    exited_lane_k<<<1, 32>>>(d);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure ? 0 : 1;
}
static int fault_partial_warp(void) {
    float *x = dev_floats(48), *o = dev_floats(2);
    block_sum_k<<<1, 48>>>(x, o, 48);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure ? 0 : 1;
}
static int fault_host_pointer(void) {
    static float host[32];
    write_k<<<1, 32>>>(host);
    cudaError_t e = cudaDeviceSynchronize();
    /* sticky: everything after fails too */
    void *p;
    return e == cudaErrorIllegalAddress && cudaMalloc(&p, 4) != cudaSuccess ? 0 : 1;
}
static int fault_trap(void) {
    float *d = dev_floats(32);
    trap_k<<<2, 32>>>(d);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure ? 0 : 1;
}
static int fault_copy_range(void) {
    float *d = dev_floats(8);
    float h[16] = {0};
    if (cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice) != cudaErrorInvalidValue) return 1;
    if (cudaMemcpy(h, d, 4, cudaMemcpyHostToDevice) != cudaErrorInvalidValue) return 2; /* kind swapped */
    if (cudaMemset(d + 4, 0, 5 * sizeof(float)) != cudaErrorInvalidValue) return 3;
    return cudaMemcpy(h, d, 8 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : 4;
}
static int fault_past_end(void) {
    float *d = dev_floats(1000);
    past_end_k<<<1, 256>>>(d, 1000); /* reaches the guard page */
    cudaDeviceSynchronize();          /* (the queued kernel runs here) */
    return 0; /* not reached: the fault handler exits with 139 */
}
static int fault_canary(void) {
    float *d = dev_floats(999); /* 4 bytes short of the 256-byte alignment: a canary follows */
    past_end_k<<<1, 1>>>(d, 999);
    return cudaDeviceSynchronize() == cudaErrorIllegalAddress ? 0 : 1;
}
static int fault_capacity(void) {
    setenv("MT_EMU_MEM_MIB", "16", 1);
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, 12 << 20) != cudaSuccess) return 1;
    if (cudaMalloc(&b, 8 << 20) != cudaErrorMemoryAllocation) return 2;
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    /* the parent's allocations are inherited: a little less than 4 MiB free */
    if (tot != (16u << 20) || fr > (4u << 20) || fr + (1u << 20) < (4u << 20)) return 3;
    cudaFree(a);
    return cudaMalloc(&b, 8 << 20) == cudaSuccess ? 0 : 4;
}

__global__ void set_k(float *x, float v) { x[threadIdx.x] = v; }
__global__ void add_k(float *y, const float *x) { y[threadIdx.x] += x[threadIdx.x]; }

/* Work runs as late as the program's synchronisation allows (the default). */
static void async_semantics(void) {
    cudaStream_t s1, s2;
    cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
    float *d = dev_floats(32), *e = dev_floats(32), *pin = NULL, h[32];
    cudaHostAlloc((void **)&pin, 32 * sizeof(float), 0);
    for (int i = 0; i < 32; i++) pin[i] = 1.0f;
    /* a copy from page-locked memory reads it when it runs, not when issued */
    cudaMemcpyAsync(d, pin, 32 * sizeof(float), cudaMemcpyHostToDevice, s1);
    for (int i = 0; i < 32; i++) pin[i] = 2.0f; /* the bug the emulator must expose */
    cudaStreamSynchronize(s1);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2.0f, "a deferred copy from pinned memory read %g (want the later 2)", h[0]);
    /* a pending event answers cudaErrorNotReady once, then runs its work */
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    set_k<<<1, 32, 0, s1>>>(d, 3.0f);
    cudaEventRecord(ev, s1);
    cudaError_t q1 = cudaEventQuery(ev), q2 = cudaEventQuery(ev);
    CHECK(q1 == cudaErrorNotReady && q2 == cudaSuccess && cudaGetLastError() == cudaSuccess,
          "event query: %d then %d", (int)q1, (int)q2);
    /* the legacy stream (cudaMemcpy) does not wait for a non-blocking stream */
    set_k<<<1, 32, 0, s1>>>(d, 4.0f);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 3.0f, "cudaMemcpy waited for a non-blocking stream (%g)", h[0]);
    cudaStreamSynchronize(s1);
    /* a stream waiting on another's event sees its work; without the wait it need not */
    set_k<<<1, 32, 0, s1>>>(e, 5.0f);
    cudaEventRecord(ev, s1);
    cudaStreamWaitEvent(s2, ev, 0);
    add_k<<<1, 32, 0, s2>>>(d, e); /* d = 4 + 5 */
    cudaStreamSynchronize(s2);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 9.0f, "cross-stream wait: %g (want 9)", h[0]);
    set_k<<<1, 32, 0, s1>>>(e, 6.0f);
    add_k<<<1, 32, 0, s2>>>(d, e); /* no wait: runs before s1's set */
    cudaStreamSynchronize(s2);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 14.0f, "an unordered stream saw the other's later write (%g, want 9 + 5)", h[0]);
    cudaDeviceSynchronize();
    cudaEventDestroy(ev);
    cudaStreamDestroy(s1);
    cudaStreamDestroy(s2);
    cudaFreeHost(pin);
}

int main(void) {
    int n = 10000;
    float *hx = (float *)malloc(n * sizeof(float));
    double want = 0.0;
    for (int i = 0; i < n; i++) {
        hx[i] = (float)((i * 37) % 101) / 7.0f;
        want += hx[i];
    }
    float *dx = dev_floats(n), *dout = dev_floats(4);
    CHECK(dx && dout, "cudaMalloc");
    CHECK(cudaMemcpy(dx, hx, n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess, "copy in");
    block_sum_k<<<4, 256>>>(dx, dout, n);
    CHECK(cudaGetLastError() == cudaSuccess, "block_sum launch");
    float hout[4];
    CHECK(cudaMemcpy(hout, dout, sizeof hout, cudaMemcpyDeviceToHost) == cudaSuccess, "copy out");
    double got = (double)hout[0] + hout[1] + hout[2] + hout[3];
    CHECK(got > want * (1 - 1e-5) && got < want * (1 + 1e-5), "block sum %g, want %g", got, want);

    int *dm = NULL;
    cudaMalloc((void **)&dm, 128 * sizeof(int));
    shfl_modes_k<<<1, 32>>>(dm);
    int hm[128];
    cudaMemcpy(hm, dm, sizeof hm, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int l = 0; l < 32; l++) {
        int seg = l & ~7;
        bad += hm[l] != (seg + 3) * 10;
        bad += hm[32 + l] != (l - 2 >= seg ? l - 2 : l) * 10;
        bad += hm[64 + l] != (l + 2 < seg + 8 ? l + 2 : l) * 10;
        bad += hm[96 + l] != (l ^ 5) * 10;
    }
    CHECK(bad == 0, "%d shuffle results differ from CUDA's definitions", bad);

    int *di = NULL;
    cudaMalloc((void **)&di, 2 * 3 * 2 * 4 * 2 * 3 * sizeof(int));
    index_k<<<dim3(2, 3, 2), dim3(4, 2, 3)>>>(di);
    int hi[2 * 3 * 2 * 24];
    cudaMemcpy(hi, di, sizeof hi, cudaMemcpyDeviceToHost);
    bad = 0;
    for (int b = 0; b < 12; b++)
        for (int t = 0; t < 24; t++) bad += hi[b * 24 + t] != b * 1000 + t;
    CHECK(bad == 0, "%d 3-d indices wrong", bad);

    /* fresh allocations are NaN-filled, so unwritten reads show */
    float *dn = dev_floats(4), hn[4];
    cudaMemcpy(hn, dn, sizeof hn, cudaMemcpyDeviceToHost);
    CHECK(hn[0] != hn[0], "new device memory is not NaN-filled");

    if (!(getenv("MT_EMU_ASYNC") && !strcmp(getenv("MT_EMU_ASYNC"), "0"))) async_semantics();

    CHECK(in_child(fault_config) == 0, "launch configuration errors (child %d)", in_child(fault_config));
    CHECK(in_child(fault_divergent) == 0, "divergent __syncthreads not reported");
    CHECK(in_child(fault_exited_lane) == 0, "shuffle with an exited lane not reported");
    CHECK(in_child(fault_partial_warp) == 0, "full-mask shuffle in a partial warp not reported");
    CHECK(in_child(fault_host_pointer) == 0, "host pointer kernel argument not reported");
    CHECK(in_child(fault_trap) == 0, "__trap not reported");
    CHECK(in_child(fault_copy_range) == 0, "copy range checks (child %d)", in_child(fault_copy_range));
    CHECK(in_child(fault_past_end) == 139, "write past the end of an allocation not caught");
    CHECK(in_child(fault_canary) == 0, "write into the canary after an allocation not caught");
    CHECK(in_child(fault_capacity) == 0, "capacity (child %d)", in_child(fault_capacity));
    free(hx);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
