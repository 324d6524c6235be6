/* CUDA 3-D convolution kernels (contracts in core/backend.h; CPU peer
 * core/cpu/conv.c): forward, backward-data and backward-filter on contiguous
 * NCDHW tensors, weights (Cout, Cin/groups, kD, kH, kW), through cuDNN 9's
 * legacy convolution API.
 *
 * Descriptors: 5-d fully packed NCDHW tensors, an NCDHW filter, an Nd
 * cross-correlation descriptor with padding / stride / dilation / group count
 * and compute type float (bf16 data: cuDNN's "pseudo bf16" configuration,
 * bf16 storage with f32 accumulation). Math type:
 *  - bf16: CUDNN_TENSOR_OP_MATH;
 *  - f32 with mt_backend_allow_tf32(): CUDNN_DEFAULT_MATH, which lets cuDNN
 *    use TF32 tensor cores on sm_80+ (what PyTorch does). Not
 *    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: that mode also permits converting
 *    f32 data down to fp16, which is less accurate than tf32;
 *  - f32 otherwise: CUDNN_FMA_MATH (true fp32, no tensor-core conversion).
 * Results that report a tensor-core math type are never used for strict f32,
 * and ALLOW_CONVERSION results never for f32 at all.
 *
 * Algorithm choice ("benchmark mode", as torch.backends.cudnn.benchmark):
 * once per problem (pass, dtype, math, every shape and geometry parameter,
 * pointer alignments) cudnnFind*AlgorithmEx times the candidate algorithms on
 * the caller's own buffers (it only writes the pass's output: y, dx or dw,
 * which the call then overwrites anyway; inputs are never written) with a
 * scratch workspace from the caching allocator, freed right after. The
 * fastest result whose workspace fits the cap is kept, with its math type
 * and workspace size, in a hash map together with the descriptors, so a
 * steady-state call creates and allocates nothing: it takes the shared
 * workspace (mt_cuda_workspace) and runs one cuDNN call (plus the bias fill
 * or the bias-gradient reduction).
 *   MT_CUDNN_BENCHMARK=0 in the environment (read when a problem is first
 *   seen) uses cuDNN's heuristics (cudnnGet*Algorithm_v7, no timing runs,
 *   no synchronisation) instead of Find.
 *   MT_CUDNN_WORKSPACE_MB caps the workspace (default 1024 MiB, and never
 *   more than half of the memory the device and our cache have free).
 *
 * Output size. cuDNN takes symmetric padding and requires the y side to have
 * exactly its "natural" size nat = (in + 2 pad - span) / stride + 1. The
 * contract also allows a smaller y side (the transposed convolution with
 * output_padding >= stride, possible when dilation > stride): the last input
 * rows are then never read. That case runs cuDNN on a y-side scratch of the
 * natural size: forward computes it and copies out the leading rows;
 * backward-data and backward-filter use dy extended with zero rows (which
 * contribute nothing, so dx and dw are exactly those of the smaller problem).
 *
 * Bias (forward): y is first filled with the bias and cuDNN runs with
 * beta = 1, so y = conv + bias is formed in f32 inside cuDNN and rounded once
 * (bf16). Bias gradient: a deterministic two-pass reduction over N and the
 * spatial dims (f32 partials per channel and chunk, then a fixed-order sum).
 *
 * Outputs are written (=): y, dx, dw and db.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/cuda_common.h"
#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"
#include "core/kernel_plan.h"

typedef enum { PASS_FWD = 0, PASS_BWD_DATA = 1, PASS_BWD_FILTER = 2 } conv_pass;
typedef enum { MATH_F32 = 0, MATH_TF32 = 1, MATH_BF16 = 2 } conv_math;

/* Everything that defines a problem; all int64 so the struct has no padding
 * and can be hashed and compared bytewise. x side (N, Cin, in), y side
 * (N, Cout, out), weight (Cout, Cin/groups, k). align: alignment (bytes,
 * capped at 256) of the x-side, weight and y-side pointers cuDNN sees; an
 * algorithm chosen for aligned data may not run on misaligned data. */
typedef struct {
    int64_t pass, dtype, math;
    int64_t n, cin, cout, groups;
    int64_t in[3], out[3], k[3];
    int64_t stride[3], pad[3], dil[3];
    int64_t align[3];
} conv_key;

typedef struct conv_entry {
    conv_key key;
    int64_t nat[3]; /* y-side size cuDNN computes (>= key.out) */
    int extended;   /* nat != out: cuDNN runs on a y-side scratch */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int algo;  /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t of the pass */
    size_t ws; /* workspace bytes of algo */
    struct conv_entry *next;
} conv_entry;

#define CONV_BUCKETS 256

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static conv_entry *g_buckets[CONV_BUCKETS];

static const char *pass_name(int64_t pass) {
    return pass == PASS_FWD ? "conv3d_forward"
                            : pass == PASS_BWD_DATA ? "conv3d_backward_data" : "conv3d_backward_filter";
}

static uint64_t key_hash(const conv_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int64_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    if (a == 0) return 256;
    uintptr_t low = a & (~a + 1); /* lowest set bit */
    return low >= 256 ? 256 : (int64_t)low;
}

static size_t elem_size(mt_dtype dt) { return dt == MT_BF16 ? 2 : 4; }

/* Fills the key from x-side (N, Cin, D, H, W), y-side (N, Cout, oD, oH, oW)
 * and weight shapes, checking the contract (core/kernel_plan.h, shared with
 * the CPU) and the dtypes: x, w, y one dtype, f32 or bf16. */
static void key_init(conv_key *k, conv_pass pass, const mt_tensor *x, const mt_tensor *w,
                     const mt_tensor *y, const mt_conv_params *p) {
    const char *op = pass_name(pass);
    if (x->dtype != MT_BF16) MT_KERNEL_DTYPE_CHECK(op, x, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, w, x->dtype);
    MT_KERNEL_DTYPE_CHECK(op, y, x->dtype);
    mt_conv_check_shapes(op, x, w, y, p);
    memset(k, 0, sizeof *k);
    k->pass = pass;
    k->dtype = x->dtype;
    k->math = x->dtype == MT_BF16 ? MATH_BF16 : mt_backend_allow_tf32() ? MATH_TF32 : MATH_F32;
    k->n = x->shape[0];
    k->cin = x->shape[1];
    k->cout = y->shape[1];
    k->groups = p->groups;
    for (int j = 0; j < 3; j++) {
        k->in[j] = x->shape[2 + j];
        k->out[j] = y->shape[2 + j];
        k->k[j] = w->shape[2 + j];
        k->stride[j] = p->stride[j];
        k->pad[j] = p->padding[j];
        k->dil[j] = p->dilation[j];
    }
}

/* cuDNN's legacy API takes int dims and strides. */
static void check_int_range(const conv_key *k, const int64_t *nat) {
    int64_t vin = k->in[0] * k->in[1] * k->in[2], vnat = nat[0] * nat[1] * nat[2];
    int64_t kv = k->k[0] * k->k[1] * k->k[2];
    MT_CHECK_MSG(k->n * k->cin * vin <= INT_MAX && k->n * k->cout * vnat <= INT_MAX &&
                     k->cout * (k->cin / k->groups) * kv <= INT_MAX,
                 "%s on cuda: tensors of 2^31 or more elements are not supported by cuDNN's "
                 "convolution API (N %lld, Cin %lld, Cout %lld, input %lldx%lldx%lld)",
                 pass_name(k->pass), (long long)k->n, (long long)k->cin, (long long)k->cout,
                 (long long)k->in[0], (long long)k->in[1], (long long)k->in[2]);
}

/* cuDNN's y-side size for the key (checked to fit cuDNN's int sizes);
 * returns 1 when it differs from key.out. */
static int natural_out(const conv_key *k, int64_t *nat) {
    int ext = 0;
    for (int j = 0; j < 3; j++) {
        int64_t span = k->dil[j] * (k->k[j] - 1) + 1;
        nat[j] = (k->in[j] + 2 * k->pad[j] - span) / k->stride[j] + 1;
        ext |= nat[j] != k->out[j];
    }
    check_int_range(k, nat);
    return ext;
}

static void set_tensor_desc(cudnnTensorDescriptor_t d, cudnnDataType_t dt, int64_t n, int64_t c,
                            const int64_t *sp) {
    int dims[5] = {(int)n, (int)c, (int)sp[0], (int)sp[1], (int)sp[2]};
    int strides[5];
    strides[4] = 1;
    for (int i = 3; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
    MT_CUDNN_CHECK(cudnnSetTensorNdDescriptor(d, dt, 5, dims, strides));
}

/* Workspace cap for a new problem: MT_CUDNN_WORKSPACE_MB (default 1 GiB),
 * at most half of what the device has free plus what our cache holds. */
static size_t workspace_cap(void) {
    size_t cap = (size_t)1 << 30;
    const char *s = getenv("MT_CUDNN_WORKSPACE_MB");
    if (s && *s) {
        long long mb = atoll(s);
        if (mb >= 0) cap = (size_t)mb << 20;
    }
    size_t fr = 0, tot = 0;
    MT_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    mt_alloc_stats st;
    mt_cuda_alloc_stats(&st);
    size_t avail = (fr + (size_t)(st.cached > 0 ? st.cached : 0)) / 2;
    return cap < avail ? cap : avail;
}

static int benchmark_mode(void) {
    const char *s = getenv("MT_CUDNN_BENCHMARK");
    return !(s && strcmp(s, "0") == 0);
}

/* Whether a perf result's math type may be used for this problem. */
static int math_ok(int64_t math, cudnnMathType_t m) {
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return math == MATH_BF16;
    if (math == MATH_F32) return m != CUDNN_TENSOR_OP_MATH;
    return 1;
}

/* Index of the first usable result (results come sorted, fastest or most
 * promising first), -1 if none. */
template <typename Perf>
static int pick_result(const Perf *r, int n, size_t cap, int64_t math) {
    for (int i = 0; i < n; i++)
        if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= cap && math_ok(math, r[i].mathType))
            return i;
    return -1;
}

/* Largest workspace among the usable heuristic candidates: what Find needs
 * to time all of them. */
template <typename Perf>
static size_t find_workspace(const Perf *r, int n, size_t cap, int64_t math) {
    size_t m = 0;
    for (int i = 0; i < n; i++)
        if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= cap && math_ok(math, r[i].mathType) &&
            r[i].memory > m)
            m = r[i].memory;
    return m;
}

[[noreturn]] static void no_algorithm(const conv_key *k) {
    mt_fatal(__FILE__, __LINE__,
             "%s on cuda: cuDNN has no usable algorithm for N %lld, Cin %lld, Cout %lld, input "
             "%lldx%lldx%lld, kernel %lldx%lldx%lld, stride (%lld,%lld,%lld), padding "
             "(%lld,%lld,%lld), dilation (%lld,%lld,%lld), groups %lld, dtype %s%s",
             pass_name(k->pass), (long long)k->n, (long long)k->cin, (long long)k->cout,
             (long long)k->in[0], (long long)k->in[1], (long long)k->in[2], (long long)k->k[0],
             (long long)k->k[1], (long long)k->k[2], (long long)k->stride[0],
             (long long)k->stride[1], (long long)k->stride[2], (long long)k->pad[0],
             (long long)k->pad[1], (long long)k->pad[2], (long long)k->dil[0], (long long)k->dil[1],
             (long long)k->dil[2], (long long)k->groups, mt_dtype_name((mt_dtype)k->dtype),
             k->math == MATH_TF32 ? " (tf32)" : "");
    abort(); /* not reached: mt_fatal aborts */
}

/* The math type to run with: strict f32 always FMA; otherwise the one the
 * chosen result was measured with (as PyTorch). */
static cudnnMathType_t run_math(int64_t math, cudnnMathType_t measured) {
    return math == MATH_F32 ? CUDNN_FMA_MATH : measured;
}

/* Chooses the algorithm of e (descriptors set) on the caller's buffers:
 * xp x side, wp weight, yp y side (of the natural size). Only the pass's
 * output (y for forward, x side for backward-data, w for backward-filter) is
 * written. */
static void choose_algorithm(conv_entry *e, const void *xp, const void *wp, const void *yp) {
    const conv_key *k = &e->key;
    cudnnHandle_t h = mt_cuda_cudnn();
    const size_t cap = workspace_cap();
    const int bench = benchmark_mode();
    int maxc = 0, got = 0, i;
    void *buf = NULL;
    size_t fws = 0, ws = 0;
    if (k->pass == PASS_FWD) {
        MT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &maxc));
        cudnnConvolutionFwdAlgoPerf_t *r =
            (cudnnConvolutionFwdAlgoPerf_t *)calloc((size_t)(maxc > 0 ? maxc : 1), sizeof *r);
        MT_CHECK(r != NULL);
        MT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, e->xd, e->wd, e->cd, e->yd, maxc,
                                                              &got, r));
        if (bench) {
            fws = find_workspace(r, got, cap, k->math);
            if (fws) buf = mt_cuda_alloc(fws);
            MT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
                h, e->xd, xp, e->wd, wp, e->cd, e->yd, (void *)yp, maxc, &got, r, buf, fws));
            if (buf) mt_cuda_free(buf, fws);
        }
        i = pick_result(r, got, bench ? fws : cap, k->math);
        if (i < 0) no_algorithm(k);
        e->algo = (int)r[i].algo;
        MT_CUDNN_CHECK(cudnnSetConvolutionMathType(e->cd, run_math(k->math, r[i].mathType)));
        MT_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, e->xd, e->wd, e->cd, e->yd,
                                                               r[i].algo, &ws));
        e->ws = ws > r[i].memory ? ws : r[i].memory;
        free(r);
    } else if (k->pass == PASS_BWD_DATA) {
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &maxc));
        cudnnConvolutionBwdDataAlgoPerf_t *r =
            (cudnnConvolutionBwdDataAlgoPerf_t *)calloc((size_t)(maxc > 0 ? maxc : 1), sizeof *r);
        MT_CHECK(r != NULL);
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, e->wd, e->yd, e->cd, e->xd,
                                                                   maxc, &got, r));
        if (bench) {
            fws = find_workspace(r, got, cap, k->math);
            if (fws) buf = mt_cuda_alloc(fws);
            MT_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
                h, e->wd, wp, e->yd, yp, e->cd, e->xd, (void *)xp, maxc, &got, r, buf, fws));
            if (buf) mt_cuda_free(buf, fws);
        }
        i = pick_result(r, got, bench ? fws : cap, k->math);
        if (i < 0) no_algorithm(k);
        e->algo = (int)r[i].algo;
        MT_CUDNN_CHECK(cudnnSetConvolutionMathType(e->cd, run_math(k->math, r[i].mathType)));
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, e->wd, e->yd, e->cd, e->xd,
                                                                    r[i].algo, &ws));
        e->ws = ws > r[i].memory ? ws : r[i].memory;
        free(r);
    } else {
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &maxc));
        cudnnConvolutionBwdFilterAlgoPerf_t *r =
            (cudnnConvolutionBwdFilterAlgoPerf_t *)calloc((size_t)(maxc > 0 ? maxc : 1), sizeof *r);
        MT_CHECK(r != NULL);
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, e->xd, e->yd, e->cd, e->wd,
                                                                     maxc, &got, r));
        if (bench) {
            fws = find_workspace(r, got, cap, k->math);
            if (fws) buf = mt_cuda_alloc(fws);
            MT_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                h, e->xd, xp, e->yd, yp, e->cd, e->wd, (void *)wp, maxc, &got, r, buf, fws));
            if (buf) mt_cuda_free(buf, fws);
        }
        i = pick_result(r, got, bench ? fws : cap, k->math);
        if (i < 0) no_algorithm(k);
        e->algo = (int)r[i].algo;
        MT_CUDNN_CHECK(cudnnSetConvolutionMathType(e->cd, run_math(k->math, r[i].mathType)));
        MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, e->xd, e->yd, e->cd, e->wd,
                                                                      r[i].algo, &ws));
        e->ws = ws > r[i].memory ? ws : r[i].memory;
        free(r);
    }
}

static conv_entry *entry_create(const conv_key *k, const void *xp, const void *wp, const void *yp) {
    conv_entry *e = (conv_entry *)calloc(1, sizeof *e);
    MT_CHECK(e != NULL);
    e->key = *k;
    e->extended = natural_out(k, e->nat);
    const cudnnDataType_t dt = k->dtype == MT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->xd));
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->yd));
    MT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&e->wd));
    MT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&e->cd));
    set_tensor_desc(e->xd, dt, k->n, k->cin, k->in);
    set_tensor_desc(e->yd, dt, k->n, k->cout, e->nat);
    int wdims[5] = {(int)k->cout, (int)(k->cin / k->groups), (int)k->k[0], (int)k->k[1],
                    (int)k->k[2]};
    MT_CUDNN_CHECK(cudnnSetFilterNdDescriptor(e->wd, dt, CUDNN_TENSOR_NCHW, 5, wdims));
    int pad[3], str[3], dil[3];
    for (int j = 0; j < 3; j++) {
        pad[j] = (int)k->pad[j];
        str[j] = (int)k->stride[j];
        dil[j] = (int)k->dil[j];
    }
    MT_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(e->cd, 3, pad, str, dil, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    MT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(e->cd, (int)k->groups));
    MT_CUDNN_CHECK(cudnnSetConvolutionMathType(
        e->cd, k->math == MATH_BF16 ? CUDNN_TENSOR_OP_MATH
                                    : k->math == MATH_TF32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    /* cuDNN must agree with our output size (a mismatch would be a bug here). */
    int od[5];
    MT_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(e->cd, e->xd, e->wd, 5, od));
    MT_CHECK_MSG(od[0] == k->n && od[1] == k->cout && od[2] == e->nat[0] && od[3] == e->nat[1] &&
                     od[4] == e->nat[2],
                 "%s on cuda: cuDNN output size %dx%dx%d, expected %lldx%lldx%lld",
                 pass_name(k->pass), od[2], od[3], od[4], (long long)e->nat[0],
                 (long long)e->nat[1], (long long)e->nat[2]);
    choose_algorithm(e, xp, wp, yp);
    return e;
}

/* The entry of problem k, created (and its algorithm chosen on the given
 * buffers) on first use. */
static conv_entry *entry_get(const conv_key *k, const void *xp, const void *wp, const void *yp) {
    uint64_t h = key_hash(k) % CONV_BUCKETS;
    pthread_mutex_lock(&g_lock);
    conv_entry *e;
    for (e = g_buckets[h]; e; e = e->next)
        if (memcmp(&e->key, k, sizeof *k) == 0) break;
    if (!e) {
        e = entry_create(k, xp, wp, yp);
        e->next = g_buckets[h];
        g_buckets[h] = e;
    }
    pthread_mutex_unlock(&g_lock);
    return e;
}

/* ------------------------------------------------------------ helper kernels */

/* dst (NC, d2, h2, w2) <- src (NC, d1, h1, w1) on the common leading box,
 * zeros elsewhere. E: the element's bits (uint32_t for f32, uint16_t for
 * bf16): a pure copy, no rounding. */
template <typename E>
__global__ void box_copy_kernel(E *__restrict__ dst, const E *__restrict__ src, int64_t total,
                                int64_t d2, int64_t h2, int64_t w2, int64_t d1, int64_t h1,
                                int64_t w1) {
    MT_GRID_STRIDE(i, total) {
        int64_t t = i;
        int64_t w = t % w2;
        t /= w2;
        int64_t h = t % h2;
        t /= h2;
        int64_t d = t % d2;
        t /= d2; /* plane n * C + c */
        E v = 0;
        if (d < d1 && h < h1 && w < w1) v = src[((t * d1 + d) * h1 + h) * w1 + w];
        dst[i] = v;
    }
}

static void box_copy(void *dst, const int64_t *dsz, const void *src, const int64_t *ssz, int64_t nc,
                     mt_dtype dt) {
    int64_t total = nc * dsz[0] * dsz[1] * dsz[2];
    if (total == 0) return;
    const unsigned threads = 256;
    unsigned blocks = mt_cuda_blocks(total, threads);
    cudaStream_t s = mt_cuda_stream();
    if (dt == MT_BF16)
        box_copy_kernel<uint16_t><<<blocks, threads, 0, s>>>((uint16_t *)dst, (const uint16_t *)src,
                                                             total, dsz[0], dsz[1], dsz[2], ssz[0],
                                                             ssz[1], ssz[2]);
    else
        box_copy_kernel<uint32_t><<<blocks, threads, 0, s>>>((uint32_t *)dst, (const uint32_t *)src,
                                                             total, dsz[0], dsz[1], dsz[2], ssz[0],
                                                             ssz[1], ssz[2]);
    MT_CUDA_LAUNCH_CHECK("conv3d box_copy");
}

/* y (N*C planes of s elements) <- bias[plane % C]; a bit copy (same dtype). */
template <typename E>
__global__ void fill_bias_kernel(E *__restrict__ y, const E *__restrict__ bias, int64_t nc,
                                 int64_t c, int64_t s) {
    for (int64_t plane = blockIdx.y; plane < nc; plane += gridDim.y) {
        const E v = bias[plane % c];
        E *row = y + plane * s;
        for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < s;
             j += (int64_t)gridDim.x * blockDim.x)
            row[j] = v;
    }
}

static void fill_bias(void *y, const void *bias, int64_t n, int64_t c, int64_t s, mt_dtype dt) {
    int64_t nc = n * c;
    if (nc == 0 || s == 0) return;
    const unsigned threads = 256;
    int64_t gx = (s + threads - 1) / threads;
    if (gx > 1024) gx = 1024;
    int64_t gy = nc < 65535 ? nc : 65535;
    dim3 grid((unsigned)gx, (unsigned)gy);
    cudaStream_t st = mt_cuda_stream();
    if (dt == MT_BF16)
        fill_bias_kernel<uint16_t><<<grid, threads, 0, st>>>((uint16_t *)y, (const uint16_t *)bias, nc,
                                                             c, s);
    else
        fill_bias_kernel<uint32_t><<<grid, threads, 0, st>>>((uint32_t *)y, (const uint32_t *)bias, nc,
                                                             c, s);
    MT_CUDA_LAUNCH_CHECK("conv3d fill_bias");
}

/* Bias gradient, pass 1: part[ch * splits + sp] <- sum over n of
 * dy[n, ch, s0 .. s1) with [s0, s1) the sp-th chunk of the spatial range.
 * grid (splits, min(C, 65535)), block 256. */
template <typename T>
__global__ void db_partial_kernel(float *__restrict__ part, const T *__restrict__ dy, int64_t n,
                                  int64_t c, int64_t s, int64_t chunk, int splits) {
    const int sp = blockIdx.x;
    const int64_t s0 = (int64_t)sp * chunk;
    const int64_t s1 = s0 + chunk < s ? s0 + chunk : s;
    for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
        float acc = 0.0f;
        for (int64_t b = 0; b < n; b++) {
            const T *row = dy + (b * c + ch) * s;
            for (int64_t j = s0 + threadIdx.x; j < s1; j += blockDim.x) acc += mt_ld(row + j);
        }
        acc = mt_block_sum(acc);
        if (threadIdx.x == 0) part[ch * splits + sp] = acc;
    }
}

/* Pass 2: db[ch] <- sum of the splits partials, one warp per channel, fixed
 * order (deterministic). */
template <typename T>
__global__ void db_final_kernel(T *__restrict__ db, const float *__restrict__ part, int64_t c,
                                int splits) {
    for (int64_t ch = blockIdx.x; ch < c; ch += gridDim.x) {
        float acc = 0.0f;
        for (int j = threadIdx.x; j < splits; j += 32) acc += part[ch * splits + j];
        acc = mt_warp_sum(acc);
        if (threadIdx.x == 0) mt_st(db + ch, acc);
    }
}

/* db (C) <- sum of dy (N, C, S) over N and S (f32 accumulation). */
static void bias_grad(mt_tensor *db, const mt_tensor *dy) {
    int64_t n = dy->shape[0], c = dy->shape[1], s = 1;
    for (int k = 2; k < dy->ndim; k++) s *= dy->shape[k];
    if (c == 0) return;
    if (n * s == 0) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(db), 0, mt_tensor_nbytes(db), mt_cuda_stream()));
        return;
    }
    /* about 4096 spatial elements (times N) per block; enough blocks to fill
     * the GPU for the channel counts of a UNet (32 channels at 128^3: 512
     * chunks each). */
    int64_t splits64 = (s + 4095) / 4096;
    if (splits64 > 4096) splits64 = 4096;
    const int splits = (int)splits64;
    const int64_t chunk = (s + splits - 1) / splits;
    const size_t pbytes = sizeof(float) * (size_t)(c * splits);
    float *part = (float *)mt_cuda_alloc(pbytes);
    cudaStream_t st = mt_cuda_stream();
    dim3 grid1((unsigned)splits, (unsigned)(c < 65535 ? c : 65535));
    unsigned grid2 = (unsigned)(c < 65535 ? c : 65535);
    MT_CUDA_DISPATCH_FLOAT("conv3d_backward_filter", dy->dtype, {
        db_partial_kernel<T><<<grid1, 256, 0, st>>>(part, mt_ptr<const T>(dy), n, c, s, chunk, splits);
        MT_CUDA_LAUNCH_CHECK("conv3d db_partial");
        db_final_kernel<T><<<grid2, 32, 0, st>>>(mt_ptr<T>(db), part, c, splits);
        MT_CUDA_LAUNCH_CHECK("conv3d db_final");
    });
    mt_cuda_free(part, pbytes);
}

/* ------------------------------------------------------------ entry points */

static const float k_one = 1.0f, k_zero = 0.0f;

extern "C" void mt_cuda_conv3d_forward(mt_tensor *y, const mt_tensor *x, const mt_tensor *w,
                                       const mt_tensor *bias, const mt_conv_params *p) {
    conv_key k;
    key_init(&k, PASS_FWD, x, w, y, p);
    if (bias) {
        MT_KERNEL_DTYPE_CHECK("conv3d_forward", bias, y->dtype);
        MT_CHECK_MSG(mt_tensor_numel(bias) == k.cout && mt_tensor_is_contiguous(bias),
                     "conv3d_forward: bias must be contiguous with Cout = %lld elements",
                     (long long)k.cout);
    }
    if (mt_tensor_numel(y) == 0) return;
    const int64_t vout = k.out[0] * k.out[1] * k.out[2];
    if (mt_tensor_numel(x) == 0 || mt_tensor_numel(w) == 0) { /* nothing to convolve */
        if (bias)
            fill_bias(mt_tensor_data(y), mt_tensor_data(bias), k.n, k.cout, vout, y->dtype);
        else
            MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(y), 0, mt_tensor_nbytes(y), mt_cuda_stream()));
        return;
    }
    int64_t nat[3];
    const int ext = natural_out(&k, nat);
    const size_t ybytes = (size_t)(k.n * k.cout * nat[0] * nat[1] * nat[2]) * elem_size(y->dtype);
    void *yb = ext ? mt_cuda_alloc(ybytes) : mt_tensor_data(y);
    const void *xp = mt_tensor_data(x), *wp = mt_tensor_data(w);
    k.align[0] = ptr_align(xp);
    k.align[1] = ptr_align(wp);
    k.align[2] = ptr_align(yb);
    conv_entry *e = entry_get(&k, xp, wp, yb);
    const float *beta = &k_zero;
    if (bias) {
        fill_bias(yb, mt_tensor_data(bias), k.n, k.cout, nat[0] * nat[1] * nat[2], y->dtype);
        beta = &k_one;
    }
    void *ws = e->ws ? mt_cuda_workspace(e->ws) : NULL;
    MT_CUDNN_CHECK(cudnnConvolutionForward(mt_cuda_cudnn(), &k_one, e->xd, xp, e->wd, wp, e->cd,
                                           (cudnnConvolutionFwdAlgo_t)e->algo, ws, e->ws, beta,
                                           e->yd, yb));
    if (ext) {
        box_copy(mt_tensor_data(y), k.out, yb, nat, k.n * k.cout, y->dtype);
        mt_cuda_free(yb, ybytes);
    }
}

extern "C" void mt_cuda_conv3d_backward_data(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w,
                                             const mt_conv_params *p) {
    conv_key k;
    key_init(&k, PASS_BWD_DATA, dx, w, dy, p);
    if (mt_tensor_numel(dx) == 0) return;
    if (mt_tensor_numel(dy) == 0 || mt_tensor_numel(w) == 0) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dx), 0, mt_tensor_nbytes(dx), mt_cuda_stream()));
        return;
    }
    int64_t nat[3];
    const int ext = natural_out(&k, nat);
    const size_t ybytes = (size_t)(k.n * k.cout * nat[0] * nat[1] * nat[2]) * elem_size(dy->dtype);
    void *dyb = mt_tensor_data(dy);
    if (ext) { /* dy extended with zero rows to cuDNN's size */
        dyb = mt_cuda_alloc(ybytes);
        box_copy(dyb, nat, mt_tensor_data(dy), k.out, k.n * k.cout, dy->dtype);
    }
    void *dxp = mt_tensor_data(dx);
    const void *wp = mt_tensor_data(w);
    k.align[0] = ptr_align(dxp);
    k.align[1] = ptr_align(wp);
    k.align[2] = ptr_align(dyb);
    conv_entry *e = entry_get(&k, dxp, wp, dyb);
    void *ws = e->ws ? mt_cuda_workspace(e->ws) : NULL;
    MT_CUDNN_CHECK(cudnnConvolutionBackwardData(mt_cuda_cudnn(), &k_one, e->wd, wp, e->yd, dyb, e->cd,
                                                (cudnnConvolutionBwdDataAlgo_t)e->algo, ws, e->ws,
                                                &k_zero, e->xd, dxp));
    if (ext) mt_cuda_free(dyb, ybytes);
}

extern "C" void mt_cuda_conv3d_backward_filter(mt_tensor *dw, mt_tensor *db, const mt_tensor *x,
                                               const mt_tensor *dy, const mt_conv_params *p) {
    conv_key k;
    key_init(&k, PASS_BWD_FILTER, x, dw, dy, p);
    if (db) {
        MT_KERNEL_DTYPE_CHECK("conv3d_backward_filter", db, dy->dtype);
        MT_CHECK_MSG(mt_tensor_numel(db) == k.cout && mt_tensor_is_contiguous(db),
                     "conv3d_backward_filter: db must be contiguous with Cout = %lld elements",
                     (long long)k.cout);
    }
    if (db) bias_grad(db, dy); /* independent of dw; zero when dy is empty */
    if (mt_tensor_numel(dw) == 0) return;
    if (mt_tensor_numel(x) == 0 || mt_tensor_numel(dy) == 0) {
        MT_CUDA_CHECK(cudaMemsetAsync(mt_tensor_data(dw), 0, mt_tensor_nbytes(dw), mt_cuda_stream()));
        return;
    }
    int64_t nat[3];
    const int ext = natural_out(&k, nat);
    const size_t ybytes = (size_t)(k.n * k.cout * nat[0] * nat[1] * nat[2]) * elem_size(dy->dtype);
    void *dyb = mt_tensor_data(dy);
    if (ext) {
        dyb = mt_cuda_alloc(ybytes);
        box_copy(dyb, nat, mt_tensor_data(dy), k.out, k.n * k.cout, dy->dtype);
    }
    const void *xp = mt_tensor_data(x);
    void *dwp = mt_tensor_data(dw);
    k.align[0] = ptr_align(xp);
    k.align[1] = ptr_align(dwp);
    k.align[2] = ptr_align(dyb);
    conv_entry *e = entry_get(&k, xp, dwp, dyb);
    void *ws = e->ws ? mt_cuda_workspace(e->ws) : NULL;
    MT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(mt_cuda_cudnn(), &k_one, e->xd, xp, e->yd, dyb,
                                                  e->cd, (cudnnConvolutionBwdFilterAlgo_t)e->algo, ws,
                                                  e->ws, &k_zero, e->wd, dwp));
    if (ext) mt_cuda_free(dyb, ybytes);
}
