/* medtrain CUDA emulator: cuDNN's legacy convolution API on the CPU
 * (include/cudnn.h). Written from the cuDNN API reference, not from the
 * callers, so that it catches misuse: every call validates its arguments as
 * the reference documents (status codes included), reads and writes tensors
 * through their descriptors' strides, and checks that data pointers are
 * emulated device memory (mt_emu_is_device_ptr).
 *
 * Arithmetic: naive loops, products and sums in double, blended as
 * out = alpha * result + beta * out (out not read when beta == 0), then
 * rounded to the output type (bf16: via float, round to nearest even, as a
 * float accumulator's epilogue would). Operands are rounded first as the
 * math type allows for float data: CUDNN_DEFAULT_MATH and CUDNN_TENSOR_OP_MATH
 * permit TF32 tensor cores (cuDNN 8+; NVIDIA_TF32_OVERRIDE=0 disables TF32),
 * CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION permits down-conversion to fp16,
 * CUDNN_FMA_MATH is true fp32. The emulator always takes the least accurate
 * permitted operand rounding, so a test's tolerance is never checked against
 * a more accurate path than a GPU may take (summation orders still differ).
 *
 * Supported configurations: FLOAT data with FLOAT compute, BFLOAT16 data
 * with FLOAT compute (PSEUDO_BFLOAT16_CONFIG), DOUBLE with DOUBLE; 4-d and 5-d
 * tensors (2-d and 3-d convolutions), NCHW or NHWC filters, groups,
 * dilation, both convolution modes. Two algorithms per pass "run" (one
 * without workspace, one with a few KiB); the others report NOT_SUPPORTED.
 *
 * Failures print one line on stderr (mt_emu_report; silenced by MT_EMU_QUIET set to a
 * value other than 0) naming the function, the argument and the status. */
#include "cudnn.h"
#include "emu_numeric.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

struct cudnnContext {
    cudaStream_t stream = nullptr;
};

struct cudnnTensorStruct {
    bool set = false;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    int nb = 0;
    int dims[CUDNN_DIM_MAX] = {};
    int strides[CUDNN_DIM_MAX] = {};
};

struct cudnnFilterStruct {
    bool set = false;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    cudnnTensorFormat_t fmt = CUDNN_TENSOR_NCHW;
    int nb = 0;
    int dims[CUDNN_DIM_MAX] = {};
};

struct cudnnConvolutionStruct {
    bool set = false;
    int len = 0; /* spatial dims */
    int pad[CUDNN_DIM_MAX] = {}, stride[CUDNN_DIM_MAX] = {}, dil[CUDNN_DIM_MAX] = {};
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    int groups = 1;                          /* cuDNN's default */
    cudnnMathType_t math = CUDNN_DEFAULT_MATH; /* cuDNN's default */
};

namespace {

/* ------------------------------------------------------------ diagnostics */

cudnnStatus_t fail(cudnnStatus_t st, const char *fn, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mt_emu_report("cuDNN", "%s: %s -> %s", fn, msg, cudnnGetErrorString(st));
    return st;
}

/* Live objects, to reject destroyed or never-created handles/descriptors. */
class Registry {
    std::mutex mu_;
    std::unordered_set<const void *> live_;

  public:
    void add(const void *p) {
        std::lock_guard<std::mutex> g(mu_);
        live_.insert(p);
    }
    bool remove(const void *p) {
        std::lock_guard<std::mutex> g(mu_);
        return live_.erase(p) == 1;
    }
    bool has(const void *p) {
        std::lock_guard<std::mutex> g(mu_);
        return live_.count(p) == 1;
    }
};
Registry g_handles, g_tensors, g_filters, g_convs;

/* ------------------------------------------------------------ numbers */

bool valid_dtype(int dt) { return dt >= CUDNN_DATA_FLOAT && dt <= CUDNN_DATA_COMPLEX_FP64; }

size_t elem_size(cudnnDataType_t dt) {
    switch (dt) {
    case CUDNN_DATA_FLOAT: return 4;
    case CUDNN_DATA_DOUBLE: return 8;
    case CUDNN_DATA_HALF:
    case CUDNN_DATA_BFLOAT16: return 2;
    default: return 0;
    }
}

using mt_emu::bf16_to_float;
using mt_emu::float_to_bf16;
using mt_emu::fp16_round;
using mt_emu::tf32_round;

enum class Rnd { none, tf32, fp16 };

/* How float operands may be degraded before the multiply (see the top). */
Rnd operand_rounding(cudnnDataType_t dt, cudnnMathType_t m) {
    if (dt != CUDNN_DATA_FLOAT || m == CUDNN_FMA_MATH) return Rnd::none;
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return Rnd::fp16;
    const char *o = getenv("NVIDIA_TF32_OVERRIDE");
    if (o && strcmp(o, "0") == 0) return Rnd::none;
    return Rnd::tf32;
}

double read_elem(const void *base, cudnnDataType_t dt, int64_t off) {
    switch (dt) {
    case CUDNN_DATA_FLOAT: return ((const float *)base)[off];
    case CUDNN_DATA_DOUBLE: return ((const double *)base)[off];
    case CUDNN_DATA_BFLOAT16: return bf16_to_float(((const uint16_t *)base)[off]);
    default: return NAN;
    }
}

void write_elem(void *base, cudnnDataType_t dt, int64_t off, double v) {
    switch (dt) {
    case CUDNN_DATA_FLOAT: ((float *)base)[off] = (float)v; break;
    case CUDNN_DATA_DOUBLE: ((double *)base)[off] = v; break;
    case CUDNN_DATA_BFLOAT16: ((uint16_t *)base)[off] = float_to_bf16((float)v); break;
    default: break;
    }
}

/* ------------------------------------------------------------ views */

/* A descriptor's logical dims and element strides. */
struct View {
    int nb = 0;
    int64_t dims[CUDNN_DIM_MAX] = {};
    int64_t strides[CUDNN_DIM_MAX] = {};
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;

    int64_t count() const {
        int64_t n = 1;
        for (int i = 0; i < nb; i++) n *= dims[i];
        return n;
    }
    /* Bytes from the base pointer to the end of the last element. */
    size_t extent_bytes() const {
        int64_t last = 0;
        for (int i = 0; i < nb; i++) last += (dims[i] - 1) * strides[i];
        return (size_t)(last + 1) * elem_size(dt);
    }
};

View tensor_view(const cudnnTensorStruct *t) {
    View v;
    v.nb = t->nb;
    v.dt = t->dt;
    for (int i = 0; i < t->nb; i++) {
        v.dims[i] = t->dims[i];
        v.strides[i] = t->strides[i];
    }
    return v;
}

/* Filters are packed: NCHW = K, C, spatial...; NHWC = K, spatial..., C. */
View filter_view(const cudnnFilterStruct *f) {
    View v;
    v.nb = f->nb;
    v.dt = f->dt;
    for (int i = 0; i < f->nb; i++) v.dims[i] = f->dims[i];
    if (f->fmt == CUDNN_TENSOR_NHWC) {
        int64_t s = 1;
        v.strides[1] = s;
        s *= v.dims[1];
        for (int i = f->nb - 1; i >= 2; i--) {
            v.strides[i] = s;
            s *= v.dims[i];
        }
        v.strides[0] = s;
    } else {
        int64_t s = 1;
        for (int i = f->nb - 1; i >= 0; i--) {
            v.strides[i] = s;
            s *= v.dims[i];
        }
    }
    return v;
}

/* f(dense row-major index, element offset) for every element of v. */
template <class F>
void for_each_elem(const View &v, F f) {
    int64_t idx[CUDNN_DIM_MAX] = {};
    int64_t off = 0, n = v.count();
    for (int64_t i = 0; i < n; i++) {
        f(i, off);
        for (int d = v.nb - 1; d >= 0; d--) {
            off += v.strides[d];
            if (++idx[d] < v.dims[d]) break;
            off -= v.strides[d] * v.dims[d];
            idx[d] = 0;
        }
    }
}

std::vector<double> load(const View &v, const void *p, Rnd r) {
    std::vector<double> out((size_t)v.count());
    for_each_elem(v, [&](int64_t i, int64_t off) {
        double x = read_elem(p, v.dt, off);
        if (r == Rnd::tf32) x = tf32_round((float)x);
        else if (r == Rnd::fp16) x = fp16_round(x);
        out[(size_t)i] = x;
    });
    return out;
}

/* out = alpha * res + beta * out; out is not read when beta == 0. */
void store(const View &v, void *p, const std::vector<double> &res, double alpha, double beta) {
    for_each_elem(v, [&](int64_t i, int64_t off) {
        double r = alpha * res[(size_t)i];
        if (beta != 0.0) r += beta * read_elem(p, v.dt, off);
        write_elem(p, v.dt, off, r);
    });
}

void fill_nan(const View &v, void *p) {
    for_each_elem(v, [&](int64_t, int64_t off) { write_elem(p, v.dt, off, NAN); });
}

/* Whether two distinct indices of v can address the same element. */
bool overlapping(const View &v) {
    std::vector<std::pair<int64_t, int64_t>> sd;
    for (int i = 0; i < v.nb; i++)
        if (v.dims[i] > 1) sd.emplace_back(v.strides[i], v.dims[i]);
    std::sort(sd.begin(), sd.end());
    int64_t span = 0;
    for (auto &e : sd) {
        if (e.first <= span) return true;
        span += e.first * (e.second - 1);
    }
    return false;
}

/* ------------------------------------------------------------ problems */

enum Pass { FWD = 0, BWD_DATA = 1, BWD_FILTER = 2 };

const char *const k_xname[3] = {"xDesc", "dxDesc", "xDesc"};
const char *const k_yname[3] = {"yDesc", "dyDesc", "dyDesc"};
const char *const k_wname[3] = {"wDesc", "wDesc", "dwDesc"};

/* A validated problem in 3 spatial dims (2-d ones get a leading size-1 dim). */
struct Geom {
    int nsp;
    int64_t n, c, k, groups, cg, kg; /* batch, in/out channels, groups, per group */
    int64_t in[3], out[3], ker[3], pad[3], str[3], dil[3];
    bool flip; /* CUDNN_CONVOLUTION */
    cudnnDataType_t dt;
    cudnnMathType_t math;
    View xv, wv, yv;
};

int64_t out_dim(int64_t in, int64_t pad, int64_t k, int64_t dil, int64_t str) {
    return 1 + (in + 2 * pad - ((k - 1) * dil + 1)) / str;
}

const char *dt_name(cudnnDataType_t dt) {
    switch (dt) {
    case CUDNN_DATA_FLOAT: return "FLOAT";
    case CUDNN_DATA_DOUBLE: return "DOUBLE";
    case CUDNN_DATA_HALF: return "HALF";
    case CUDNN_DATA_BFLOAT16: return "BFLOAT16";
    default: return "other";
    }
}

cudnnStatus_t check_handle(const char *fn, cudnnHandle_t h) {
    if (!h) return fail(CUDNN_STATUS_BAD_PARAM, fn, "handle is NULL");
    if (!g_handles.has(h)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "handle %p was not created by cudnnCreate or was destroyed", (const void *)h);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_tensor(const char *fn, const char *name, const cudnnTensorStruct *t) {
    if (!t) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is NULL", name);
    if (!g_tensors.has(t)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is not a live tensor descriptor", name);
    if (!t->set) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s was never set", name);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_filter(const char *fn, const char *name, const cudnnFilterStruct *f) {
    if (!f) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is NULL", name);
    if (!g_filters.has(f)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is not a live filter descriptor", name);
    if (!f->set) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s was never set", name);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_conv(const char *fn, const cudnnConvolutionStruct *c) {
    if (!c) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is NULL");
    if (!g_convs.has(c)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is not a live convolution descriptor");
    if (!c->set) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc was never set (cudnnSetConvolutionNdDescriptor)");
    return CUDNN_STATUS_SUCCESS;
}

std::string dims_str(const int *d, int n) {
    std::string s;
    for (int i = 0; i < n; i++) {
        if (i) s += "x";
        s += std::to_string(d[i]);
    }
    return s;
}

/* The checks of cudnnConvolution{Forward,BackwardData,BackwardFilter} on the
 * descriptors (statuses as documented per pass), filling g. */
cudnnStatus_t check_problem(const char *fn, Pass pass, const cudnnTensorStruct *x,
                            const cudnnFilterStruct *w, const cudnnConvolutionStruct *cd,
                            const cudnnTensorStruct *y, Geom *g) {
    const char *xn = k_xname[pass], *yn = k_yname[pass], *wn = k_wname[pass];
    cudnnStatus_t st;
    if ((st = check_tensor(fn, xn, x)) || (st = check_filter(fn, wn, w)) || (st = check_conv(fn, cd)) ||
        (st = check_tensor(fn, yn, y)))
        return st;
    if (x->nb != y->nb) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s has %d dims, %s %d", xn, x->nb, yn, y->nb);
    if (x->nb != w->nb) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s has %d dims, %s %d", xn, x->nb, wn, w->nb);
    if (x->nb < 3) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s has fewer than 3 dims", xn);
    if (x->nb != cd->len + 2)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s has %d dims but convDesc has %d spatial dims", xn, x->nb, cd->len);
    if (x->nb != 4 && x->nb != 5)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "tensors have %d dims (4 or 5 supported)", x->nb);
    if (x->dt != y->dt || x->dt != w->dt)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "data types differ: %s %s, %s %s, %s %s", xn, dt_name(x->dt), wn,
                    dt_name(w->dt), yn, dt_name(y->dt));
    const bool cfg_ok = (x->dt == CUDNN_DATA_FLOAT && cd->ct == CUDNN_DATA_FLOAT) ||
                        (x->dt == CUDNN_DATA_BFLOAT16 && cd->ct == CUDNN_DATA_FLOAT) ||
                        (x->dt == CUDNN_DATA_DOUBLE && cd->ct == CUDNN_DATA_DOUBLE);
    if (!cfg_ok)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "data type %s with compute type %s is not a supported configuration%s",
                    dt_name(x->dt), dt_name(cd->ct), x->dt == CUDNN_DATA_HALF ? " (HALF not emulated)" : "");
    if (w->fmt != CUDNN_TENSOR_NCHW && w->fmt != CUDNN_TENSOR_NHWC)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "%s format %d is not supported for this data type", wn, (int)w->fmt);
    const int groups = cd->groups;
    if ((int64_t)w->dims[1] * groups != x->dims[1])
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s has %d input channels per group, %s has %d channels (groups %d)", wn,
                    w->dims[1], xn, x->dims[1], groups);
    if (w->dims[0] % groups != 0)
        return fail(pass == BWD_DATA ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM, fn,
                    "%s has %d output channels, not a multiple of the group count %d", wn, w->dims[0], groups);
    if (y->dims[0] != x->dims[0] || y->dims[1] != w->dims[0])
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is %s, expected N %d and C %d (from %s, %s)", yn,
                    dims_str(y->dims, y->nb).c_str(), x->dims[0], w->dims[0], xn, wn);
    const int nsp = x->nb - 2;
    int expect[CUDNN_DIM_MAX];
    for (int i = 0; i < nsp; i++) {
        int64_t span = (int64_t)(w->dims[2 + i] - 1) * cd->dil[i] + 1;
        if (span > (int64_t)x->dims[2 + i] + 2 * (int64_t)cd->pad[i])
            return fail(CUDNN_STATUS_BAD_PARAM, fn,
                        "spatial dim %d: dilated filter size %lld exceeds the padded input size %lld", i,
                        (long long)span, (long long)x->dims[2 + i] + 2 * cd->pad[i]);
        expect[i] = (int)out_dim(x->dims[2 + i], cd->pad[i], w->dims[2 + i], cd->dil[i], cd->stride[i]);
    }
    for (int i = 0; i < nsp; i++)
        if (y->dims[2 + i] != expect[i])
            return fail(pass == FWD ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM, fn,
                        "%s spatial dims %s do not match the convolution's output dims %s", yn,
                        dims_str(y->dims + 2, nsp).c_str(), dims_str(expect, nsp).c_str());
    for (int i = 0; i < x->nb; i++)
        if (x->strides[i] < 0 || y->strides[i] < 0)
            return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "negative tensor strides");

    g->nsp = nsp;
    g->n = x->dims[0];
    g->c = x->dims[1];
    g->k = w->dims[0];
    g->groups = groups;
    g->cg = w->dims[1];
    g->kg = g->k / groups;
    const int lead = 3 - nsp;
    for (int j = 0; j < 3; j++) {
        const int i = j - lead; /* spatial index in the descriptors, < 0: padding dim */
        g->in[j] = i < 0 ? 1 : x->dims[2 + i];
        g->out[j] = i < 0 ? 1 : y->dims[2 + i];
        g->ker[j] = i < 0 ? 1 : w->dims[2 + i];
        g->pad[j] = i < 0 ? 0 : cd->pad[i];
        g->str[j] = i < 0 ? 1 : cd->stride[i];
        g->dil[j] = i < 0 ? 1 : cd->dil[i];
    }
    g->flip = cd->mode == CUDNN_CONVOLUTION;
    g->dt = x->dt;
    g->math = cd->math;
    g->xv = tensor_view(x);
    g->yv = tensor_view(y);
    g->wv = filter_view(w);
    /* Emulator check: an output whose elements alias is undefined behaviour. */
    const View &ov = pass == FWD ? g->yv : g->xv;
    if (pass != BWD_FILTER && overlapping(ov))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s strides make output elements overlap (emulator check)",
                    pass == FWD ? yn : xn);
    return CUDNN_STATUS_SUCCESS;
}

/* Calls f(x index, w index, y index) for every multiply of the convolution,
 * indices dense row-major in the (N, C, D, H, W) / (K, C/g, kD, kH, kW) /
 * (N, K, oD, oH, oW) shapes of g. */
template <class F>
void for_each_tap(const Geom &g, F f) {
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t k = 0; k < g.k; k++) {
            const int64_t grp = k / g.kg;
            for (int64_t od = 0; od < g.out[0]; od++)
                for (int64_t oh = 0; oh < g.out[1]; oh++)
                    for (int64_t ow = 0; ow < g.out[2]; ow++) {
                        const int64_t yi = (((n * g.k + k) * g.out[0] + od) * g.out[1] + oh) * g.out[2] + ow;
                        for (int64_t c = 0; c < g.cg; c++) {
                            const int64_t ci = grp * g.cg + c;
                            for (int64_t fd = 0; fd < g.ker[0]; fd++) {
                                const int64_t id = od * g.str[0] - g.pad[0] + fd * g.dil[0];
                                if (id < 0 || id >= g.in[0]) continue;
                                for (int64_t fh = 0; fh < g.ker[1]; fh++) {
                                    const int64_t ih = oh * g.str[1] - g.pad[1] + fh * g.dil[1];
                                    if (ih < 0 || ih >= g.in[1]) continue;
                                    for (int64_t fw = 0; fw < g.ker[2]; fw++) {
                                        const int64_t iw = ow * g.str[2] - g.pad[2] + fw * g.dil[2];
                                        if (iw < 0 || iw >= g.in[2]) continue;
                                        const int64_t wd = g.flip ? g.ker[0] - 1 - fd : fd;
                                        const int64_t wh = g.flip ? g.ker[1] - 1 - fh : fh;
                                        const int64_t ww = g.flip ? g.ker[2] - 1 - fw : fw;
                                        const int64_t xi = (((n * g.c + ci) * g.in[0] + id) * g.in[1] + ih) * g.in[2] + iw;
                                        const int64_t wi = (((k * g.cg + c) * g.ker[0] + wd) * g.ker[1] + wh) * g.ker[2] + ww;
                                        f(xi, wi, yi);
                                    }
                                }
                            }
                        }
                    }
        }
}

/* ------------------------------------------------------------ algorithms */

const int k_algo_count[3] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                             CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
/* The emulated algorithms of each pass, "fastest" first: algo 1 (workspace),
 * then algo 0 (none). */
const int k_algos[2] = {1, 0};

size_t round256(size_t n) { return (n + 255) / 256 * 256; }

/* Workspace of (pass, algo), SIZE_MAX when the emulator does not run it. */
size_t ws_required(Pass pass, int algo, const Geom &g) {
    if (algo == 0) return 0;
    if (algo != 1) return SIZE_MAX;
    const size_t kv = (size_t)(g.cg * g.ker[0] * g.ker[1] * g.ker[2]);
    switch (pass) {
    case FWD: return round256(4096 + 4 * kv);
    case BWD_DATA: return round256(8192 + 4 * kv);
    default: return round256(4096 + 4 * kv * (size_t)g.k);
    }
}

bool deterministic(Pass pass, int algo) { return pass == FWD || algo != 0; }

/* Fills perf results: the emulated algorithms (Find: status SUCCESS if the
 * given workspace suffices, else ALLOC_FAILED, successes first), then the
 * others as NOT_SUPPORTED, at most `requested`. */
template <class Perf, class Algo>
void fill_perf(Pass pass, const Geom &g, bool find, size_t ws_avail, int requested, int *returned, Perf *perf) {
    std::vector<Perf> all;
    for (int a : k_algos) {
        Perf p;
        memset(&p, 0, sizeof p);
        p.algo = (Algo)a;
        p.memory = ws_required(pass, a, g);
        p.status = (!find || p.memory <= ws_avail) ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
        p.time = find ? (a == 1 ? 0.5f : 1.0f) : -1.0f;
        p.determinism = deterministic(pass, a) ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        p.mathType = g.math;
        all.push_back(p);
    }
    std::stable_partition(all.begin(), all.end(), [](const Perf &p) { return p.status == CUDNN_STATUS_SUCCESS; });
    for (int a = 0; a < k_algo_count[pass]; a++) {
        if (a == 0 || a == 1) continue;
        Perf p;
        memset(&p, 0, sizeof p);
        p.algo = (Algo)a;
        p.status = CUDNN_STATUS_NOT_SUPPORTED;
        p.time = -1.0f;
        p.determinism = CUDNN_DETERMINISTIC;
        p.mathType = g.math;
        all.push_back(p);
    }
    int n = std::min(requested, (int)all.size());
    for (int i = 0; i < n; i++) perf[i] = all[(size_t)i];
    *returned = n;
}

/* ------------------------------------------------------------ execution */

cudnnStatus_t check_device(const char *fn, const char *name, const void *p, size_t nbytes) {
    if (!p) return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s is NULL", name);
    if (!mt_emu_is_device_ptr(p, nbytes))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s (%p) is not device memory of %zu bytes", name, p, nbytes);
    return CUDNN_STATUS_SUCCESS;
}

/* alpha/beta: host pointers to float (double for DOUBLE data). */
cudnnStatus_t read_scalars(const char *fn, const void *alpha, const void *beta, cudnnDataType_t dt, double *a,
                           double *b) {
    if (!alpha) return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha is NULL");
    if (!beta) return fail(CUDNN_STATUS_BAD_PARAM, fn, "beta is NULL");
    const size_t sz = dt == CUDNN_DATA_DOUBLE ? 8 : 4;
    if (mt_emu_is_device_ptr(alpha, sz)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha must point to host memory");
    if (mt_emu_is_device_ptr(beta, sz)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "beta must point to host memory");
    *a = dt == CUDNN_DATA_DOUBLE ? *(const double *)alpha : *(const float *)alpha;
    *b = dt == CUDNN_DATA_DOUBLE ? *(const double *)beta : *(const float *)beta;
    return CUDNN_STATUS_SUCCESS;
}

/* Checks the workspace of an execution against what algo needs, then
 * scribbles on the part it "uses" (so aliasing it with data shows). */
cudnnStatus_t use_workspace(const char *fn, size_t required, void *ws, size_t size) {
    if (!ws && size > 0)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace is NULL but workSpaceSizeInBytes is %zu", size);
    if (size < required)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpaceSizeInBytes %zu is less than the %zu bytes the algorithm needs",
                    size, required);
    if (ws && size > 0 && !mt_emu_is_device_ptr(ws, size))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace (%p) is not device memory of %zu bytes", ws, size);
    if (required > 0) memset(ws, 0xA5, required);
    return CUDNN_STATUS_SUCCESS;
}

/* One convolution pass: x-side, filter, y-side pointers (the pass's output
 * among them is written). */
cudnnStatus_t run(const char *fn, Pass pass, cudnnHandle_t h, const void *alpha, const cudnnTensorStruct *xd,
                  const void *x, const cudnnFilterStruct *wd, const void *w, const cudnnConvolutionStruct *cd,
                  const cudnnTensorStruct *yd, const void *y, int algo, void *ws, size_t ws_size, const void *beta) {
    cudnnStatus_t st;
    mt_emu_stat(fn, 0);
    if ((st = check_handle(fn, h))) return st;
    mt_emu_stream_flush(h->stream); /* runs in stream order */
    Geom g;
    if ((st = check_problem(fn, pass, xd, wd, cd, yd, &g))) return st;
    double a = 0.0, b = 0.0;
    if ((st = read_scalars(fn, alpha, beta, g.dt, &a, &b))) return st;
    const char *names[3] = {pass == BWD_DATA ? "dx" : "x", pass == BWD_FILTER ? "dw" : "w", pass == FWD ? "y" : "dy"};
    if (!x || !w || !y)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "%s pointer is NULL", !x ? names[0] : !w ? names[1] : names[2]);
    if (algo < 0 || algo >= k_algo_count[pass]) return fail(CUDNN_STATUS_BAD_PARAM, fn, "algo %d is out of range", algo);
    const size_t need = ws_required(pass, algo, g);
    if (need == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "algo %d does not support this problem", algo);
    if ((st = check_device(fn, names[0], x, g.xv.extent_bytes())) || (st = check_device(fn, names[1], w, g.wv.extent_bytes())) ||
        (st = check_device(fn, names[2], y, g.yv.extent_bytes())))
        return st;
    if ((st = use_workspace(fn, need, ws, ws_size))) return st;

    const Rnd r = operand_rounding(g.dt, g.math);
    if (pass == FWD) {
        std::vector<double> xs = load(g.xv, x, r), wsv = load(g.wv, w, r), acc((size_t)g.yv.count(), 0.0);
        for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { acc[(size_t)yi] += xs[(size_t)xi] * wsv[(size_t)wi]; });
        store(g.yv, (void *)y, acc, a, b);
    } else if (pass == BWD_DATA) {
        std::vector<double> dys = load(g.yv, y, r), wsv = load(g.wv, w, r), acc((size_t)g.xv.count(), 0.0);
        for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { acc[(size_t)xi] += dys[(size_t)yi] * wsv[(size_t)wi]; });
        store(g.xv, (void *)x, acc, a, b);
    } else {
        std::vector<double> xs = load(g.xv, x, r), dys = load(g.yv, y, r), acc((size_t)g.wv.count(), 0.0);
        for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { acc[(size_t)wi] += xs[(size_t)xi] * dys[(size_t)yi]; });
        store(g.wv, (void *)w, acc, a, b);
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t max_count(const char *fn, cudnnHandle_t h, int *count, Pass pass) {
    cudnnStatus_t st;
    if ((st = check_handle(fn, h))) return st;
    if (!count) return fail(CUDNN_STATUS_BAD_PARAM, fn, "count is NULL");
    *count = k_algo_count[pass];
    return CUDNN_STATUS_SUCCESS;
}

template <class Perf, class Algo>
cudnnStatus_t get_v7(const char *fn, Pass pass, cudnnHandle_t h, const cudnnTensorStruct *xd,
                     const cudnnFilterStruct *wd, const cudnnConvolutionStruct *cd, const cudnnTensorStruct *yd,
                     int requested, int *returned, Perf *perf) {
    cudnnStatus_t st;
    if ((st = check_handle(fn, h))) return st;
    mt_emu_stream_flush(h->stream); /* its timing runs read and write the operands */
    if (!returned || !perf) return fail(CUDNN_STATUS_BAD_PARAM, fn, "returnedAlgoCount or perfResults is NULL");
    if (requested <= 0) return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount %d <= 0", requested);
    Geom g;
    if ((st = check_problem(fn, pass, xd, wd, cd, yd, &g))) return st;
    fill_perf<Perf, Algo>(pass, g, false, 0, requested, returned, perf);
    return CUDNN_STATUS_SUCCESS;
}

/* Find*Ex: validates like an execution, "times" the algorithms (the output
 * is left holding garbage, NaN, as after real timing runs). */
template <class Perf, class Algo>
cudnnStatus_t find_ex(const char *fn, Pass pass, cudnnHandle_t h, const cudnnTensorStruct *xd, const void *x,
                      const cudnnFilterStruct *wd, const void *w, const cudnnConvolutionStruct *cd,
                      const cudnnTensorStruct *yd, const void *y, int requested, int *returned, Perf *perf, void *ws,
                      size_t ws_size) {
    cudnnStatus_t st;
    if ((st = check_handle(fn, h))) return st;
    mt_emu_stream_flush(h->stream); /* its timing runs read and write the operands */
    if (!returned || !perf) return fail(CUDNN_STATUS_BAD_PARAM, fn, "returnedAlgoCount or perfResults is NULL");
    if (requested <= 0) return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount %d <= 0", requested);
    Geom g;
    if ((st = check_problem(fn, pass, xd, wd, cd, yd, &g))) return st;
    const char *names[3] = {pass == BWD_DATA ? "dx" : "x", pass == BWD_FILTER ? "dw" : "w", pass == FWD ? "y" : "dy"};
    if ((st = check_device(fn, names[0], x, g.xv.extent_bytes())) || (st = check_device(fn, names[1], w, g.wv.extent_bytes())) ||
        (st = check_device(fn, names[2], y, g.yv.extent_bytes())))
        return st;
    if (!ws && ws_size > 0)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace is NULL but workSpaceSizeInBytes is %zu", ws_size);
    if (ws && ws_size > 0) {
        if (!mt_emu_is_device_ptr(ws, ws_size))
            return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace (%p) is not device memory of %zu bytes", ws, ws_size);
        memset(ws, 0xA5, ws_size);
    }
    if (pass == FWD) fill_nan(g.yv, (void *)y);
    else if (pass == BWD_DATA) fill_nan(g.xv, (void *)x);
    else fill_nan(g.wv, (void *)w);
    fill_perf<Perf, Algo>(pass, g, true, ws ? ws_size : 0, requested, returned, perf);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ws_size(const char *fn, Pass pass, cudnnHandle_t h, const cudnnTensorStruct *xd,
                      const cudnnFilterStruct *wd, const cudnnConvolutionStruct *cd, const cudnnTensorStruct *yd,
                      int algo, size_t *size) {
    cudnnStatus_t st;
    if ((st = check_handle(fn, h))) return st;
    if (!size) return fail(CUDNN_STATUS_BAD_PARAM, fn, "sizeInBytes is NULL");
    Geom g;
    if ((st = check_problem(fn, pass, xd, wd, cd, yd, &g))) return st;
    if (algo < 0 || algo >= k_algo_count[pass]) return fail(CUDNN_STATUS_BAD_PARAM, fn, "algo %d is out of range", algo);
    const size_t need = ws_required(pass, algo, g);
    if (need == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "algo %d does not support this problem", algo);
    *size = need;
    return CUDNN_STATUS_SUCCESS;
}

} // namespace

/* ================================================================ API */

extern "C" {

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
#define S(x) \
    case x: return #x;
        S(CUDNN_STATUS_SUCCESS)
        S(CUDNN_STATUS_NOT_INITIALIZED)
        S(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
        S(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
        S(CUDNN_STATUS_DEPRECATED)
        S(CUDNN_STATUS_LICENSE_ERROR)
        S(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
        S(CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
        S(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
        S(CUDNN_STATUS_BAD_PARAM)
        S(CUDNN_STATUS_INVALID_VALUE)
        S(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
        S(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)
        S(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
        S(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND)
        S(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
        S(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES)
        S(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
        S(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
        S(CUDNN_STATUS_NOT_SUPPORTED)
        S(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
        S(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)
        S(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
        S(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT)
        S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
        S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART)
        S(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
        S(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
        S(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
        S(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT)
        S(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
        S(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM)
        S(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
        S(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE)
        S(CUDNN_STATUS_INTERNAL_ERROR)
        S(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
        S(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM)
        S(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
        S(CUDNN_STATUS_EXECUTION_FAILED)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
        S(CUDNN_STATUS_EXECUTION_FAILED_CURAND)
#undef S
    }
    return "CUDNN_STATUS_UNKNOWN";
}

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (!handle) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreate", "handle is NULL");
    *handle = new cudnnContext();
    g_handles.add(*handle);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    if (!handle) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy", "handle is NULL");
    if (!g_handles.remove(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy", "handle is not live");
    delete handle;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
    cudnnStatus_t st;
    if ((st = check_handle("cudnnSetStream", handle))) return st;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t *streamId) {
    cudnnStatus_t st;
    if ((st = check_handle("cudnnGetStream", handle))) return st;
    if (!streamId) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream", "streamId is NULL");
    *streamId = handle->stream;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- tensor descriptors */

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateTensorDescriptor", "tensorDesc is NULL");
    *d = new cudnnTensorStruct();
    g_tensors.add(*d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    if (!d) return CUDNN_STATUS_SUCCESS; /* destroying NULL is a no-op */
    if (!g_tensors.remove(d)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyTensorDescriptor", "tensorDesc is not live");
    delete d;
    return CUDNN_STATUS_SUCCESS;
}

/* dims in [3, CUDNN_DIM_MAX] (fewer: BAD_PARAM, more: NOT_SUPPORTED), each
 * dim > 0, at most 2^31-1 elements (NOT_SUPPORTED). */
cudnnStatus_t cudnnSetTensorNdDescriptor(cudnnTensorDescriptor_t d, cudnnDataType_t dataType, int nbDims,
                                         const int dimA[], const int strideA[]) {
    const char *fn = "cudnnSetTensorNdDescriptor";
    if (!d || !g_tensors.has(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "tensorDesc is NULL or not live");
    if (!valid_dtype(dataType)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dataType %d is invalid", (int)dataType);
    if (nbDims > CUDNN_DIM_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "nbDims %d > CUDNN_DIM_MAX", nbDims);
    if (nbDims < 3) return fail(CUDNN_STATUS_BAD_PARAM, fn, "nbDims %d < 3", nbDims);
    if (!dimA || !strideA) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dimA or strideA is NULL");
    int64_t n = 1;
    for (int i = 0; i < nbDims; i++) {
        if (dimA[i] <= 0) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dimA[%d] = %d is not positive", i, dimA[i]);
        n *= dimA[i];
    }
    if (n > INT32_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "%lld elements exceed 2^31-1", (long long)n);
    if (elem_size(dataType) == 0)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "dataType %d is not emulated", (int)dataType);
    d->dt = dataType;
    d->nb = nbDims;
    for (int i = 0; i < nbDims; i++) {
        d->dims[i] = dimA[i];
        d->strides[i] = strideA[i];
    }
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetTensorNdDescriptor(const cudnnTensorDescriptor_t d, int nbDimsRequested,
                                         cudnnDataType_t *dataType, int *nbDims, int dimA[], int strideA[]) {
    const char *fn = "cudnnGetTensorNdDescriptor";
    cudnnStatus_t st;
    if ((st = check_tensor(fn, "tensorDesc", d))) return st;
    if (nbDimsRequested < 0 || !dataType || !nbDims || (nbDimsRequested > 0 && (!dimA || !strideA)))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "bad output arguments");
    *dataType = d->dt;
    *nbDims = d->nb;
    for (int i = 0; i < std::min(nbDimsRequested, d->nb); i++) {
        dimA[i] = d->dims[i];
        strideA[i] = d->strides[i];
    }
    return CUDNN_STATUS_SUCCESS;
}

/* ---- filter descriptors */

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateFilterDescriptor", "filterDesc is NULL");
    *d = new cudnnFilterStruct();
    g_filters.add(*d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    if (!d) return CUDNN_STATUS_SUCCESS;
    if (!g_filters.remove(d)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyFilterDescriptor", "filterDesc is not live");
    delete d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilterNdDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dataType,
                                         cudnnTensorFormat_t format, int nbDims, const int filterDimA[]) {
    const char *fn = "cudnnSetFilterNdDescriptor";
    if (!d || !g_filters.has(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterDesc is NULL or not live");
    if (!valid_dtype(dataType)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dataType %d is invalid", (int)dataType);
    if (format < CUDNN_TENSOR_NCHW || format > CUDNN_TENSOR_NCHW_VECT_C)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "format %d is invalid", (int)format);
    if (nbDims > CUDNN_DIM_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "nbDims %d > CUDNN_DIM_MAX", nbDims);
    if (nbDims < 3) return fail(CUDNN_STATUS_BAD_PARAM, fn, "nbDims %d < 3", nbDims);
    if (!filterDimA) return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterDimA is NULL");
    int64_t n = 1;
    for (int i = 0; i < nbDims; i++) {
        if (filterDimA[i] <= 0)
            return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterDimA[%d] = %d is not positive", i, filterDimA[i]);
        n *= filterDimA[i];
    }
    if (n > INT32_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "%lld elements exceed 2^31-1", (long long)n);
    if (format == CUDNN_TENSOR_NCHW_VECT_C)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "CUDNN_TENSOR_NCHW_VECT_C is not emulated");
    if (elem_size(dataType) == 0)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "dataType %d is not emulated", (int)dataType);
    d->dt = dataType;
    d->fmt = format;
    d->nb = nbDims;
    for (int i = 0; i < nbDims; i++) d->dims[i] = filterDimA[i];
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- convolution descriptors */

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateConvolutionDescriptor", "convDesc is NULL");
    *d = new cudnnConvolutionStruct();
    g_convs.add(*d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    if (!d) return CUDNN_STATUS_SUCCESS;
    if (!g_convs.remove(d))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyConvolutionDescriptor", "convDesc is not live");
    delete d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t mathType) {
    const char *fn = "cudnnSetConvolutionMathType";
    if (!d || !g_convs.has(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is NULL or not live");
    if (mathType < CUDNN_DEFAULT_MATH || mathType > CUDNN_FMA_MATH)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "mathType %d is invalid", (int)mathType);
    d->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t *mathType) {
    const char *fn = "cudnnGetConvolutionMathType";
    if (!d || !g_convs.has(d) || !mathType) return fail(CUDNN_STATUS_BAD_PARAM, fn, "bad arguments");
    *mathType = d->math;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groupCount) {
    const char *fn = "cudnnSetConvolutionGroupCount";
    if (!d || !g_convs.has(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is NULL or not live");
    if (groupCount < 1) return fail(CUDNN_STATUS_BAD_PARAM, fn, "groupCount %d < 1", groupCount);
    d->groups = groupCount;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int *groupCount) {
    const char *fn = "cudnnGetConvolutionGroupCount";
    if (!d || !g_convs.has(d) || !groupCount) return fail(CUDNN_STATUS_BAD_PARAM, fn, "bad arguments");
    *groupCount = d->groups;
    return CUDNN_STATUS_SUCCESS;
}

/* arrayLength in [1, CUDNN_DIM_MAX - 2] (more: NOT_SUPPORTED); pads >= 0,
 * strides and dilations > 0; valid mode and compute type. */
cudnnStatus_t cudnnSetConvolutionNdDescriptor(cudnnConvolutionDescriptor_t d, int arrayLength, const int padA[],
                                              const int filterStrideA[], const int dilationA[],
                                              cudnnConvolutionMode_t mode, cudnnDataType_t computeType) {
    const char *fn = "cudnnSetConvolutionNdDescriptor";
    if (!d || !g_convs.has(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is NULL or not live");
    if (arrayLength <= 0) return fail(CUDNN_STATUS_BAD_PARAM, fn, "arrayLength %d <= 0", arrayLength);
    if (arrayLength > CUDNN_DIM_MAX - 2)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "arrayLength %d > CUDNN_DIM_MAX - 2", arrayLength);
    if (!padA || !filterStrideA || !dilationA) return fail(CUDNN_STATUS_BAD_PARAM, fn, "an array argument is NULL");
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "mode %d is invalid", (int)mode);
    if (!valid_dtype(computeType)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "computeType %d is invalid", (int)computeType);
    for (int i = 0; i < arrayLength; i++) {
        if (padA[i] < 0) return fail(CUDNN_STATUS_BAD_PARAM, fn, "padA[%d] = %d is negative", i, padA[i]);
        if (filterStrideA[i] <= 0)
            return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterStrideA[%d] = %d is not positive", i, filterStrideA[i]);
        if (dilationA[i] <= 0)
            return fail(CUDNN_STATUS_BAD_PARAM, fn, "dilationA[%d] = %d is not positive", i, dilationA[i]);
    }
    d->len = arrayLength;
    for (int i = 0; i < arrayLength; i++) {
        d->pad[i] = padA[i];
        d->stride[i] = filterStrideA[i];
        d->dil[i] = dilationA[i];
    }
    d->mode = mode;
    d->ct = computeType;
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionNdForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int nbDims, int out[]) {
    const char *fn = "cudnnGetConvolutionNdForwardOutputDim";
    cudnnStatus_t st;
    if ((st = check_conv(fn, cd)) || (st = check_tensor(fn, "inputTensorDesc", x)) ||
        (st = check_filter(fn, "filterDesc", w)))
        return st;
    if (w->nb != x->nb)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterDesc has %d dims, inputTensorDesc %d", w->nb, x->nb);
    if (cd->len != x->nb - 2)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc has %d spatial dims, inputTensorDesc %d dims", cd->len, x->nb);
    if ((int64_t)w->dims[1] * cd->groups != x->dims[1])
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "filter has %d input channels per group, input %d channels (groups %d)",
                    w->dims[1], x->dims[1], cd->groups);
    if (nbDims < 0 || nbDims > x->nb)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "nbDims %d is negative or exceeds the input's %d", nbDims, x->nb);
    if (nbDims > 0 && !out) return fail(CUDNN_STATUS_BAD_PARAM, fn, "tensorOuputDimA is NULL");
    int res[CUDNN_DIM_MAX];
    res[0] = x->dims[0];
    res[1] = w->dims[0];
    for (int i = 0; i < cd->len; i++) {
        int64_t span = (int64_t)(w->dims[2 + i] - 1) * cd->dil[i] + 1;
        if (span > (int64_t)x->dims[2 + i] + 2 * (int64_t)cd->pad[i])
            return fail(CUDNN_STATUS_BAD_PARAM, fn, "spatial dim %d: dilated filter %lld exceeds padded input %lld", i,
                        (long long)span, (long long)x->dims[2 + i] + 2 * cd->pad[i]);
        res[2 + i] = (int)out_dim(x->dims[2 + i], cd->pad[i], w->dims[2 + i], cd->dil[i], cd->stride[i]);
    }
    for (int i = 0; i < nbDims; i++) out[i] = res[i];
    return CUDNN_STATUS_SUCCESS;
}

/* ---- forward */

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count("cudnnGetConvolutionForwardAlgorithmMaxCount", handle, count, FWD);
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
                                                     const cudnnFilterDescriptor_t filterDesc,
                                                     const cudnnConvolutionDescriptor_t convDesc,
                                                     const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount,
                                                     int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults) {
    return get_v7<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
        "cudnnGetConvolutionForwardAlgorithm_v7", FWD, handle, srcDesc, filterDesc, convDesc, destDesc,
        requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                     const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
                                                     const cudnnConvolutionDescriptor_t convDesc,
                                                     const cudnnTensorDescriptor_t yDesc, void *y,
                                                     const int requestedAlgoCount, int *returnedAlgoCount,
                                                     cudnnConvolutionFwdAlgoPerf_t *perfResults, void *workSpace,
                                                     size_t workSpaceSizeInBytes) {
    return find_ex<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
        "cudnnFindConvolutionForwardAlgorithmEx", FWD, handle, xDesc, x, wDesc, w, convDesc, yDesc, y,
        requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                      const cudnnFilterDescriptor_t wDesc,
                                                      const cudnnConvolutionDescriptor_t convDesc,
                                                      const cudnnTensorDescriptor_t yDesc,
                                                      cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes) {
    return ws_size("cudnnGetConvolutionForwardWorkspaceSize", FWD, handle, xDesc, wDesc, convDesc, yDesc, (int)algo,
                   sizeInBytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                      const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
                                      const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo,
                                      void *workSpace, size_t workSpaceSizeInBytes, const void *beta,
                                      const cudnnTensorDescriptor_t yDesc, void *y) {
    return run("cudnnConvolutionForward", FWD, handle, alpha, xDesc, x, wDesc, w, convDesc, yDesc, y, (int)algo,
               workSpace, workSpaceSizeInBytes, beta);
}

/* ---- backward data */

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count("cudnnGetConvolutionBackwardDataAlgorithmMaxCount", handle, count, BWD_DATA);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc,
                                                          const cudnnTensorDescriptor_t diffDesc,
                                                          const cudnnConvolutionDescriptor_t convDesc,
                                                          const cudnnTensorDescriptor_t gradDesc,
                                                          const int requestedAlgoCount, int *returnedAlgoCount,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perfResults) {
    return get_v7<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
        "cudnnGetConvolutionBackwardDataAlgorithm_v7", BWD_DATA, handle, gradDesc, filterDesc, convDesc, diffDesc,
        requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc,
                                                          const void *w, const cudnnTensorDescriptor_t dyDesc,
                                                          const void *dy, const cudnnConvolutionDescriptor_t convDesc,
                                                          const cudnnTensorDescriptor_t dxDesc, void *dx,
                                                          const int requestedAlgoCount, int *returnedAlgoCount,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perfResults,
                                                          void *workSpace, size_t workSpaceSizeInBytes) {
    return find_ex<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
        "cudnnFindConvolutionBackwardDataAlgorithmEx", BWD_DATA, handle, dxDesc, dx, wDesc, w, convDesc, dyDesc, dy,
        requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc,
                                                           const cudnnTensorDescriptor_t dyDesc,
                                                           const cudnnConvolutionDescriptor_t convDesc,
                                                           const cudnnTensorDescriptor_t dxDesc,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes) {
    return ws_size("cudnnGetConvolutionBackwardDataWorkspaceSize", BWD_DATA, handle, dxDesc, wDesc, convDesc, dyDesc,
                   (int)algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha, const cudnnFilterDescriptor_t wDesc,
                                           const void *w, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workSpace,
                                           size_t workSpaceSizeInBytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxDesc, void *dx) {
    return run("cudnnConvolutionBackwardData", BWD_DATA, handle, alpha, dxDesc, dx, wDesc, w, convDesc, dyDesc, dy,
               (int)algo, workSpace, workSpaceSizeInBytes, beta);
}

/* ---- backward filter */

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count("cudnnGetConvolutionBackwardFilterAlgorithmMaxCount", handle, count, BWD_FILTER);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
                                                            const cudnnTensorDescriptor_t diffDesc,
                                                            const cudnnConvolutionDescriptor_t convDesc,
                                                            const cudnnFilterDescriptor_t gradDesc,
                                                            const int requestedAlgoCount, int *returnedAlgoCount,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perfResults) {
    return get_v7<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
        "cudnnGetConvolutionBackwardFilterAlgorithm_v7", BWD_FILTER, handle, srcDesc, gradDesc, convDesc, diffDesc,
        requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                            const void *x, const cudnnTensorDescriptor_t dyDesc,
                                                            const void *y, const cudnnConvolutionDescriptor_t convDesc,
                                                            const cudnnFilterDescriptor_t dwDesc, void *dw,
                                                            const int requestedAlgoCount, int *returnedAlgoCount,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perfResults,
                                                            void *workSpace, size_t workSpaceSizeInBytes) {
    return find_ex<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
        "cudnnFindConvolutionBackwardFilterAlgorithmEx", BWD_FILTER, handle, xDesc, x, dwDesc, dw, convDesc, dyDesc, y,
        requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                             const cudnnTensorDescriptor_t dyDesc,
                                                             const cudnnConvolutionDescriptor_t convDesc,
                                                             const cudnnFilterDescriptor_t gradDesc,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes) {
    return ws_size("cudnnGetConvolutionBackwardFilterWorkspaceSize", BWD_FILTER, handle, xDesc, gradDesc, convDesc,
                   dyDesc, (int)algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                             const void *x, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace,
                                             size_t workSpaceSizeInBytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwDesc, void *dw) {
    return run("cudnnConvolutionBackwardFilter", BWD_FILTER, handle, alpha, xDesc, x, dwDesc, dw, convDesc, dyDesc, dy,
               (int)algo, workSpace, workSpaceSizeInBytes, beta);
}

} // extern "C"
