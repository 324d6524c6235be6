/* CUDA fused optimizer kernels: SGD (momentum, dampening, Nesterov, weight
 * decay) and Adam / AdamW, single-tensor and multi-tensor. Contracts:
 * core/backend.h; arithmetic mirrors core/cpu/optim.c (PyTorch's
 * single-tensor implementations) operation by operation in f32, with the
 * scalar factors (bias corrections, step size, decoupled decay) computed in
 * double on the host exactly as the CPU computes them.
 *
 * Every f32 operation of the update is written with an explicit rounding
 * intrinsic (__fadd_rn, __fmul_rn, __fdiv_rn, __fsqrt_rn) so that the
 * compiler cannot contract or reorder it: the single-tensor and the
 * multi-tensor kernels run the same per-element function and produce the
 * same bits.
 *
 * Single tensor: grid-stride loop, float4 when all pointers are 16-byte
 * aligned. Multi-tensor (as PyTorch's multi_tensor_apply): the tensors are cut
 * into chunks of CHUNK elements; one launch carries, by value, up to
 * MAX_TENSORS tensors' pointers and sizes and a table of up to MAX_BLOCKS
 * (tensor, chunk) pairs, one block per pair (512 threads, float4 when the
 * tensor's pointers are aligned). A list that does not fit is sent in several
 * launches; a tensor cut by a launch boundary continues in the next one. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/cuda/cuda_device.cuh"
#include "core/cuda/cuda_kernels.h"

namespace {

constexpr int64_t CHUNK = 65536;
constexpr int MAX_TENSORS = 36;
constexpr int MAX_BLOCKS = 320;
constexpr unsigned SINGLE_THREADS = 256;
constexpr unsigned MULTI_THREADS = 512;

/* ------------------------------------------------------- per element */

struct SgdScal {
    float wd, neg_lr, mom, damp1;
    int use_buf, first, nesterov;
};

/* torch.optim.SGD on one element (the CPU's three loops). */
__device__ __forceinline__ void sgd_elem(float &p, float &b, float g, const SgdScal &s) {
    const float d = s.wd != 0.0f ? __fadd_rn(g, __fmul_rn(s.wd, p)) : g;
    float u;
    if (!s.use_buf) {
        u = d;
    } else if (s.first) {
        b = d;
        u = s.nesterov ? __fadd_rn(d, __fmul_rn(s.mom, d)) : d;
    } else {
        const float bi = __fadd_rn(__fmul_rn(b, s.mom), __fmul_rn(s.damp1, d));
        b = bi;
        u = s.nesterov ? __fadd_rn(d, __fmul_rn(s.mom, bi)) : bi;
    }
    p = __fadd_rn(p, __fmul_rn(s.neg_lr, u));
}

struct AdamScal {
    float decay, wd_coupled, w1, b2, w2, eps, step_size, bc2_sqrt;
    int lerp_lo;
};

/* torch.optim.Adam / AdamW on one element (the CPU's loop body). */
__device__ __forceinline__ void adam_elem(float &p, float &m, float &v, float g,
                                          const AdamScal &s) {
    const float pi = __fmul_rn(p, s.decay);
    const float gi = s.wd_coupled != 0.0f ? __fadd_rn(g, __fmul_rn(s.wd_coupled, pi)) : g;
    const float diff = __fsub_rn(gi, m);
    const float mi = s.lerp_lo ? __fadd_rn(m, __fmul_rn(s.w1, diff))
                               : __fsub_rn(gi, __fmul_rn(diff, __fsub_rn(1.0f, s.w1)));
    const float vi = __fadd_rn(__fmul_rn(v, s.b2), __fmul_rn(s.w2, __fmul_rn(gi, gi)));
    m = mi;
    v = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    p = __fsub_rn(pi, __fmul_rn(s.step_size, __fdiv_rn(mi, denom)));
}

/* Operations on element i / on the 4 elements from i (16-byte aligned). */
struct SgdOp {
    float *p, *b;
    const float *g;
    SgdScal s;
    __device__ __forceinline__ void one(int64_t i) const {
        float pv = p[i], bv = s.use_buf && !s.first ? b[i] : 0.0f;
        sgd_elem(pv, bv, g[i], s);
        p[i] = pv;
        if (s.use_buf) b[i] = bv;
    }
    __device__ __forceinline__ void vec(int64_t i) const {
        float4 pv = *reinterpret_cast<const float4 *>(p + i);
        const float4 gv = *reinterpret_cast<const float4 *>(g + i);
        float4 bv = s.use_buf && !s.first ? *reinterpret_cast<const float4 *>(b + i)
                                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        sgd_elem(pv.x, bv.x, gv.x, s);
        sgd_elem(pv.y, bv.y, gv.y, s);
        sgd_elem(pv.z, bv.z, gv.z, s);
        sgd_elem(pv.w, bv.w, gv.w, s);
        *reinterpret_cast<float4 *>(p + i) = pv;
        if (s.use_buf) *reinterpret_cast<float4 *>(b + i) = bv;
    }
};

struct AdamOp {
    float *p, *m, *v;
    const float *g;
    AdamScal s;
    __device__ __forceinline__ void one(int64_t i) const {
        float pv = p[i], mv = m[i], vv = v[i];
        adam_elem(pv, mv, vv, g[i], s);
        p[i] = pv;
        m[i] = mv;
        v[i] = vv;
    }
    __device__ __forceinline__ void vec(int64_t i) const {
        float4 pv = *reinterpret_cast<const float4 *>(p + i);
        float4 mv = *reinterpret_cast<const float4 *>(m + i);
        float4 vv = *reinterpret_cast<const float4 *>(v + i);
        const float4 gv = *reinterpret_cast<const float4 *>(g + i);
        adam_elem(pv.x, mv.x, vv.x, gv.x, s);
        adam_elem(pv.y, mv.y, vv.y, gv.y, s);
        adam_elem(pv.z, mv.z, vv.z, gv.z, s);
        adam_elem(pv.w, mv.w, vv.w, gv.w, s);
        *reinterpret_cast<float4 *>(p + i) = pv;
        *reinterpret_cast<float4 *>(m + i) = mv;
        *reinterpret_cast<float4 *>(v + i) = vv;
    }
};

__device__ __forceinline__ bool aligned16(const void *a, const void *b, const void *c,
                                          const void *d) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15u) == 0;
}

/* Elements [a, b) (a a multiple of 4) by workers start, start + step, ...:
 * float4 over the whole vectors when vec, the rest one by one. */
template <class Op>
__device__ __forceinline__ void run_range(const Op &op, int64_t a, int64_t b, int64_t start,
                                          int64_t step, bool vec) {
    int64_t vb = a;
    if (vec) {
        vb = a + ((b - a) & ~(int64_t)3);
        for (int64_t i = a + 4 * start; i < vb; i += 4 * step) op.vec(i);
    }
    for (int64_t i = vb + start; i < b; i += step) op.one(i);
}

template <class Op>
__global__ void single_kernel(Op op, int64_t n, int vec) {
    run_range(op, 0, n, (int64_t)blockIdx.x * blockDim.x + threadIdx.x,
              (int64_t)blockDim.x * gridDim.x, vec != 0);
}

/* ------------------------------------------------------- multi-tensor */

/* Slot lists: 0 param, 1 grad, 2 buf / exp_avg, 3 exp_avg_sq (unused: NULL). */
struct TensorTable {
    float *ptr[4][MAX_TENSORS];
    int64_t n[MAX_TENSORS];
    int chunk_of[MAX_BLOCKS];
    unsigned char tensor_of[MAX_BLOCKS];
};
static_assert(sizeof(TensorTable) + sizeof(AdamScal) + 64 <= 4096,
              "multi-tensor kernel argument must fit the 4 KB parameter space");

__global__ void sgd_multi_kernel(TensorTable tab, SgdScal s) {
    const int t = tab.tensor_of[blockIdx.x];
    const int64_t a = (int64_t)tab.chunk_of[blockIdx.x] * CHUNK, n = tab.n[t];
    const int64_t b = a + CHUNK < n ? a + CHUNK : n;
    SgdOp op;
    op.p = tab.ptr[0][t];
    op.g = tab.ptr[1][t];
    op.b = tab.ptr[2][t];
    op.s = s;
    run_range(op, a, b, threadIdx.x, blockDim.x, aligned16(op.p, op.g, op.b, nullptr));
}

__global__ void adam_multi_kernel(TensorTable tab, AdamScal s) {
    const int t = tab.tensor_of[blockIdx.x];
    const int64_t a = (int64_t)tab.chunk_of[blockIdx.x] * CHUNK, n = tab.n[t];
    const int64_t b = a + CHUNK < n ? a + CHUNK : n;
    AdamOp op;
    op.p = tab.ptr[0][t];
    op.g = tab.ptr[1][t];
    op.m = tab.ptr[2][t];
    op.v = tab.ptr[3][t];
    op.s = s;
    run_range(op, a, b, threadIdx.x, blockDim.x, aligned16(op.p, op.g, op.m, op.v));
}

/* ------------------------------------------------------------ host side */

static void check_param(const char *op, const mt_tensor *p) {
    MT_KERNEL_DTYPE_CHECK(op, p, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(p), "%s: param not contiguous", op);
}

static void check_pair(const char *op, const mt_tensor *a, const mt_tensor *p) {
    MT_KERNEL_DTYPE_CHECK(op, a, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(a), "%s: state/gradient tensor not contiguous", op);
    MT_CHECK_MSG(mt_tensor_numel(a) == mt_tensor_numel(p), "%s: %lld elements vs param %lld", op,
                 (long long)mt_tensor_numel(a), (long long)mt_tensor_numel(p));
}

static float *fp(const mt_tensor *t) { return t ? (float *)mt_tensor_data(t) : nullptr; }

static SgdScal sgd_scalars(float lr, float momentum, float dampening, float weight_decay,
                           int nesterov, int first) {
    SgdScal s;
    s.wd = weight_decay;
    s.neg_lr = -lr;
    s.mom = momentum;
    s.damp1 = 1.0f - dampening;
    s.use_buf = momentum != 0.0f;
    s.first = first != 0;
    s.nesterov = nesterov != 0;
    return s;
}

/* As the CPU: scalars in double (Python floats in torch's _single_tensor_adam). */
static AdamScal adam_scalars(float lr, float beta1, float beta2, float eps, float weight_decay,
                             int decoupled, int64_t step) {
    AdamScal s;
    const double bc1 = 1.0 - pow((double)beta1, (double)step);
    const double bc2 = 1.0 - pow((double)beta2, (double)step);
    s.step_size = (float)((double)lr / bc1);
    s.bc2_sqrt = (float)sqrt(bc2);
    s.w1 = 1.0f - beta1;
    s.b2 = beta2;
    s.w2 = 1.0f - beta2;
    s.eps = eps;
    s.wd_coupled = decoupled ? 0.0f : weight_decay;
    s.decay = decoupled ? (float)(1.0 - (double)lr * (double)weight_decay) : 1.0f;
    s.lerp_lo = s.w1 < 0.5f;
    return s;
}

static int all_aligned(const float *a, const float *b, const float *c, const float *d) {
    return ((((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15u) == 0) ? 1 : 0;
}

template <class Op>
static void launch_single(const Op &op, int64_t n, int vec, const char *name) {
    if (n == 0) return;
    const int64_t work = vec ? (n + 3) / 4 : n;
    single_kernel<Op><<<mt_cuda_blocks(work, SINGLE_THREADS), SINGLE_THREADS, 0, mt_cuda_stream()>>>(
        op, n, vec);
    MT_CUDA_LAUNCH_CHECK(name);
}

/* Builds the (tensor, chunk) tables for n tensor sets and calls launch(tab,
 * blocks) whenever a table is full or the list ends. lists[k][i] is tensor i
 * of slot list k (NULL list: slot unused). */
template <class Launch>
static void for_each_table(int n, mt_tensor *const *const lists[4], Launch launch) {
    TensorTable tab;
    memset(&tab, 0, sizeof tab);
    int nt = 0, nb = 0;
    for (int i = 0; i < n; i++) {
        const int64_t len = mt_tensor_numel(lists[0][i]);
        if (len == 0) continue;
        for (int k = 0; k < 4; k++) tab.ptr[k][nt] = lists[k] ? fp(lists[k][i]) : nullptr;
        tab.n[nt] = len;
        const int64_t nch = (len + CHUNK - 1) / CHUNK;
        MT_CHECK_MSG(nch <= INT32_MAX, "multi-tensor step: tensor of %lld elements too large",
                     (long long)len);
        for (int64_t c = 0; c < nch; c++) {
            tab.tensor_of[nb] = (unsigned char)nt;
            tab.chunk_of[nb] = (int)c;
            nb++;
            const bool done = c == nch - 1;
            if (nb == MAX_BLOCKS || (done && nt + 1 == MAX_TENSORS)) {
                launch(tab, nb);
                nb = 0;
                if (done) {
                    nt = -1; /* the next tensor takes slot 0 */
                } else {
                    /* the rest of this tensor continues in slot 0 of the next table */
                    for (int k = 0; k < 4; k++) tab.ptr[k][0] = tab.ptr[k][nt];
                    tab.n[0] = tab.n[nt];
                    nt = 0;
                }
            }
        }
        nt++;
    }
    if (nb > 0) launch(tab, nb);
}

} /* namespace */

/* ------------------------------------------------------------ single */

extern "C" void mt_cuda_sgd_step(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad,
                                 float lr, float momentum, float dampening, float weight_decay,
                                 int nesterov, int first) {
    check_param("sgd_step", param);
    check_pair("sgd_step", grad, param);
    const SgdScal s = sgd_scalars(lr, momentum, dampening, weight_decay, nesterov, first);
    if (s.use_buf) {
        MT_CHECK_MSG(buf != NULL, "sgd_step: momentum %g without a buffer", momentum);
        check_pair("sgd_step", buf, param);
    }
    SgdOp op;
    op.p = fp(param);
    op.g = fp(grad);
    op.b = s.use_buf ? fp(buf) : nullptr;
    op.s = s;
    launch_single(op, mt_tensor_numel(param), all_aligned(op.p, op.g, op.b, nullptr), "sgd_step");
}

extern "C" void mt_cuda_adam_step(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq,
                                  const mt_tensor *grad, float lr, float beta1, float beta2,
                                  float eps, float weight_decay, int decoupled, int64_t step) {
    check_param("adam_step", param);
    MT_CHECK_MSG(step >= 1, "adam_step: step %lld (counts from 1)", (long long)step);
    check_pair("adam_step", grad, param);
    check_pair("adam_step", exp_avg, param);
    check_pair("adam_step", exp_avg_sq, param);
    AdamOp op;
    op.p = fp(param);
    op.m = fp(exp_avg);
    op.v = fp(exp_avg_sq);
    op.g = fp(grad);
    op.s = adam_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, step);
    launch_single(op, mt_tensor_numel(param), all_aligned(op.p, op.m, op.v, op.g), "adam_step");
}

/* ------------------------------------------------------------ multi */

extern "C" void mt_cuda_sgd_step_multi(int n, mt_tensor *const *params, mt_tensor *const *bufs,
                                       mt_tensor *const *grads, float lr, float momentum,
                                       float dampening, float weight_decay, int nesterov,
                                       int first) {
    const SgdScal s = sgd_scalars(lr, momentum, dampening, weight_decay, nesterov, first);
    for (int i = 0; i < n; i++) {
        check_param("sgd_step_multi", params[i]);
        check_pair("sgd_step_multi", grads[i], params[i]);
        if (s.use_buf) {
            MT_CHECK_MSG(bufs && bufs[i], "sgd_step_multi: momentum %g without a buffer (tensor %d)",
                         momentum, i);
            check_pair("sgd_step_multi", bufs[i], params[i]);
        }
    }
    mt_tensor *const *const lists[4] = {params, grads, s.use_buf ? bufs : nullptr, nullptr};
    for_each_table(n, lists, [&](const TensorTable &tab, int blocks) {
        sgd_multi_kernel<<<(unsigned)blocks, MULTI_THREADS, 0, mt_cuda_stream()>>>(tab, s);
        MT_CUDA_LAUNCH_CHECK("sgd_step_multi");
    });
}

extern "C" void mt_cuda_adam_step_multi(int n, mt_tensor *const *params,
                                        mt_tensor *const *exp_avgs, mt_tensor *const *exp_avg_sqs,
                                        mt_tensor *const *grads, float lr, float beta1,
                                        float beta2, float eps, float weight_decay, int decoupled,
                                        int64_t step) {
    MT_CHECK_MSG(step >= 1, "adam_step_multi: step %lld (counts from 1)", (long long)step);
    for (int i = 0; i < n; i++) {
        check_param("adam_step_multi", params[i]);
        check_pair("adam_step_multi", grads[i], params[i]);
        check_pair("adam_step_multi", exp_avgs[i], params[i]);
        check_pair("adam_step_multi", exp_avg_sqs[i], params[i]);
    }
    const AdamScal s = adam_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, step);
    mt_tensor *const *const lists[4] = {params, grads, exp_avgs, exp_avg_sqs};
    for_each_table(n, lists, [&](const TensorTable &tab, int blocks) {
        adam_multi_kernel<<<(unsigned)blocks, MULTI_THREADS, 0, mt_cuda_stream()>>>(tab, s);
        MT_CUDA_LAUNCH_CHECK("adam_step_multi");
    });
}
