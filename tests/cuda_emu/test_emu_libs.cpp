/* Self-test of the emulated cuDNN and cuBLAS (emu_cudnn.cpp, emu_cublas.cpp):
 * hand-computed convolutions, independently written reference loops on
 * random data (forward, backward data, backward filter; groups, dilation,
 * strides, padding, 2-d and 3-d, both convolution modes), the adjoint
 * identities, strided descriptors, bf16 / TF32 rounding, alpha/beta
 * blending, workspaces, algorithm queries and argument errors; gemm in all
 * transpose combinations, batch strides, types and errors.
 *
 * Built with the emulator (tests/CMakeLists.txt, -DMT_CUDA_EMU=ON). The
 * argument-error checks are expected to fail, so their one-line reports are
 * silenced (MT_EMU_QUIET=1 unless set). Prints "N passed, M failed"; exit
 * status 1 on failure. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>


/* ------------------------------------------------------------ harness */

static int g_pass = 0, g_fail = 0;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (cond) {                                               \
            g_pass++;                                             \
        } else {                                                  \
            g_fail++;                                             \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        }                                                         \
    } while (0)
#define CHECK_ST(expr, want) \
    do { auto st_ = (expr); CHECK(st_ == (want), "got %d, want %d", (int)st_, (int)(want)); } while (0)

template <class T>
struct Dev {
    T *p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        if (cudaMalloc((void **)&p, count * sizeof(T) + (count ? 0 : 1)) != cudaSuccess) {
            printf("cudaMalloc failed\n");
            exit(2);
        }
    }
    ~Dev() { cudaFree(p); }
    Dev(const Dev &) = delete;
    Dev &operator=(const Dev &) = delete;
    T &operator[](size_t i) { return p[i]; }
};

static std::mt19937 g_rng(12345);
static double urand() { return std::uniform_real_distribution<double>(-1.0, 1.0)(g_rng); }

static uint16_t to_bf16(float f) { /* reference RNE, written separately */
    if (std::isnan(f)) return 0x7fc0;
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lower = u & 0xffff, upper = u >> 16;
    if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) upper++;
    return (uint16_t)upper;
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static bool close(double got, double want, double rtol = 1e-6) {
    return std::fabs(got - want) <= rtol * std::max(1.0, std::fabs(want));
}

/* ------------------------------------------------------------ conv problems */

/* Always 3 spatial dims; nsp == 2 drops dim 0 (which must then be trivial)
 * from the descriptors. */
struct Problem {
    int nsp = 3, n = 1, c = 1, k = 1, g = 1;
    int in[3] = {1, 1, 1}, ker[3] = {1, 1, 1}, pad[3] = {0, 0, 0}, str[3] = {1, 1, 1}, dil[3] = {1, 1, 1};
    int out(int i) const { return (in[i] + 2 * pad[i] - ((ker[i] - 1) * dil[i] + 1)) / str[i] + 1; }
    size_t xcount() const { return (size_t)n * c * in[0] * in[1] * in[2]; }
    size_t ycount() const { return (size_t)n * k * out(0) * out(1) * out(2); }
    size_t wcount() const { return (size_t)k * (c / g) * ker[0] * ker[1] * ker[2]; }
};

static int spatial(const Problem &p, const int *v, int *outv) { /* descriptor spatial values */
    int j = 0;
    for (int i = 3 - p.nsp; i < 3; i++) outv[j++] = v[i];
    return j;
}

static void packed_strides(int nb, const int *dims, int *strides) {
    strides[nb - 1] = 1;
    for (int i = nb - 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
}

struct Descs {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t c = nullptr;
    Descs() {
        cudnnCreateTensorDescriptor(&x);
        cudnnCreateTensorDescriptor(&y);
        cudnnCreateFilterDescriptor(&w);
        cudnnCreateConvolutionDescriptor(&c);
    }
    ~Descs() {
        cudnnDestroyTensorDescriptor(x);
        cudnnDestroyTensorDescriptor(y);
        cudnnDestroyFilterDescriptor(w);
        cudnnDestroyConvolutionDescriptor(c);
    }
};

/* Packed NC(D)HW descriptors for p; false (and a FAIL) if cuDNN refuses. */
static bool setup(Descs &d, const Problem &p, cudnnDataType_t dt, cudnnMathType_t math,
                  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION, cudnnTensorFormat_t wfmt = CUDNN_TENSOR_NCHW) {
    const int nb = p.nsp + 2;
    int xd[5] = {p.n, p.c}, yd[5] = {p.n, p.k}, wd[5] = {p.k, p.c / p.g}, st[5];
    int outs[3] = {p.out(0), p.out(1), p.out(2)};
    spatial(p, p.in, xd + 2);
    spatial(p, outs, yd + 2);
    spatial(p, p.ker, wd + 2);
    int pad[3], str[3], dil[3];
    spatial(p, p.pad, pad);
    spatial(p, p.str, str);
    spatial(p, p.dil, dil);
    const cudnnDataType_t ct = dt == CUDNN_DATA_DOUBLE ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    bool ok = true;
    packed_strides(nb, xd, st);
    ok &= cudnnSetTensorNdDescriptor(d.x, dt, nb, xd, st) == CUDNN_STATUS_SUCCESS;
    packed_strides(nb, yd, st);
    ok &= cudnnSetTensorNdDescriptor(d.y, dt, nb, yd, st) == CUDNN_STATUS_SUCCESS;
    ok &= cudnnSetFilterNdDescriptor(d.w, dt, wfmt, nb, wd) == CUDNN_STATUS_SUCCESS;
    ok &= cudnnSetConvolutionNdDescriptor(d.c, p.nsp, pad, str, dil, mode, ct) == CUDNN_STATUS_SUCCESS;
    ok &= cudnnSetConvolutionGroupCount(d.c, p.g) == CUDNN_STATUS_SUCCESS;
    ok &= cudnnSetConvolutionMathType(d.c, math) == CUDNN_STATUS_SUCCESS;
    CHECK(ok, "descriptor setup");
    return ok;
}

/* ---- independent references (double, dense NCDHW / KCDHW) */

struct Idx5 {
    int a, b, c, d, e;
    size_t operator()(int i, int j, int k, int l, int m) const {
        return ((((size_t)i * b + j) * c + k) * d + l) * e + m;
    }
};

static std::vector<double> ref_fwd(const Problem &p, const std::vector<double> &x, const std::vector<double> &w,
                                   bool flip = false) {
    const int O0 = p.out(0), O1 = p.out(1), O2 = p.out(2), cg = p.c / p.g, kg = p.k / p.g;
    Idx5 X{p.n, p.c, p.in[0], p.in[1], p.in[2]}, W{p.k, cg, p.ker[0], p.ker[1], p.ker[2]}, Y{p.n, p.k, O0, O1, O2};
    std::vector<double> y(p.ycount(), 0.0);
    for (int n = 0; n < p.n; n++)
        for (int k = 0; k < p.k; k++)
            for (int a = 0; a < O0; a++)
                for (int b = 0; b < O1; b++)
                    for (int e = 0; e < O2; e++) {
                        double s = 0;
                        for (int c = 0; c < cg; c++)
                            for (int f0 = 0; f0 < p.ker[0]; f0++)
                                for (int f1 = 0; f1 < p.ker[1]; f1++)
                                    for (int f2 = 0; f2 < p.ker[2]; f2++) {
                                        int i0 = a * p.str[0] - p.pad[0] + f0 * p.dil[0];
                                        int i1 = b * p.str[1] - p.pad[1] + f1 * p.dil[1];
                                        int i2 = e * p.str[2] - p.pad[2] + f2 * p.dil[2];
                                        if (i0 < 0 || i1 < 0 || i2 < 0 || i0 >= p.in[0] || i1 >= p.in[1] || i2 >= p.in[2])
                                            continue;
                                        int g0 = flip ? p.ker[0] - 1 - f0 : f0, g1 = flip ? p.ker[1] - 1 - f1 : f1,
                                            g2 = flip ? p.ker[2] - 1 - f2 : f2;
                                        s += x[X(n, (k / kg) * cg + c, i0, i1, i2)] * w[W(k, c, g0, g1, g2)];
                                    }
                        y[Y(n, k, a, b, e)] = s;
                    }
    return y;
}

/* dx by gathering (the output positions each input position feeds). */
static std::vector<double> ref_bwd_data(const Problem &p, const std::vector<double> &dy, const std::vector<double> &w) {
    const int O[3] = {p.out(0), p.out(1), p.out(2)}, cg = p.c / p.g, kg = p.k / p.g;
    Idx5 X{p.n, p.c, p.in[0], p.in[1], p.in[2]}, W{p.k, cg, p.ker[0], p.ker[1], p.ker[2]}, Y{p.n, p.k, O[0], O[1], O[2]};
    std::vector<double> dx(p.xcount(), 0.0);
    for (int n = 0; n < p.n; n++)
        for (int ci = 0; ci < p.c; ci++)
            for (int i0 = 0; i0 < p.in[0]; i0++)
                for (int i1 = 0; i1 < p.in[1]; i1++)
                    for (int i2 = 0; i2 < p.in[2]; i2++) {
                        double s = 0;
                        const int grp = ci / cg, c = ci % cg;
                        for (int k = grp * kg; k < (grp + 1) * kg; k++)
                            for (int f0 = 0; f0 < p.ker[0]; f0++)
                                for (int f1 = 0; f1 < p.ker[1]; f1++)
                                    for (int f2 = 0; f2 < p.ker[2]; f2++) {
                                        int i[3] = {i0, i1, i2}, f[3] = {f0, f1, f2}, o[3];
                                        bool ok = true;
                                        for (int q = 0; q < 3 && ok; q++) {
                                            int t = i[q] + p.pad[q] - f[q] * p.dil[q];
                                            ok = t >= 0 && t % p.str[q] == 0 && t / p.str[q] < O[q];
                                            o[q] = ok ? t / p.str[q] : 0;
                                        }
                                        if (ok) s += dy[Y(n, k, o[0], o[1], o[2])] * w[W(k, c, f0, f1, f2)];
                                    }
                        dx[X(n, ci, i0, i1, i2)] = s;
                    }
    return dx;
}

static std::vector<double> ref_bwd_filter(const Problem &p, const std::vector<double> &x,
                                          const std::vector<double> &dy) {
    const int O[3] = {p.out(0), p.out(1), p.out(2)}, cg = p.c / p.g, kg = p.k / p.g;
    Idx5 X{p.n, p.c, p.in[0], p.in[1], p.in[2]}, W{p.k, cg, p.ker[0], p.ker[1], p.ker[2]}, Y{p.n, p.k, O[0], O[1], O[2]};
    std::vector<double> dw(p.wcount(), 0.0);
    for (int k = 0; k < p.k; k++)
        for (int c = 0; c < cg; c++)
            for (int f0 = 0; f0 < p.ker[0]; f0++)
                for (int f1 = 0; f1 < p.ker[1]; f1++)
                    for (int f2 = 0; f2 < p.ker[2]; f2++) {
                        double s = 0;
                        for (int n = 0; n < p.n; n++)
                            for (int a = 0; a < O[0]; a++)
                                for (int b = 0; b < O[1]; b++)
                                    for (int e = 0; e < O[2]; e++) {
                                        int i0 = a * p.str[0] - p.pad[0] + f0 * p.dil[0];
                                        int i1 = b * p.str[1] - p.pad[1] + f1 * p.dil[1];
                                        int i2 = e * p.str[2] - p.pad[2] + f2 * p.dil[2];
                                        if (i0 < 0 || i1 < 0 || i2 < 0 || i0 >= p.in[0] || i1 >= p.in[1] || i2 >= p.in[2])
                                            continue;
                                        s += x[X(n, (k / kg) * cg + c, i0, i1, i2)] * dy[Y(n, k, a, b, e)];
                                    }
                        dw[W(k, c, f0, f1, f2)] = s;
                    }
    return dw;
}

/* ---- running the emulated library */

static cudnnHandle_t g_h = nullptr;

template <class T>
static void fill_random(Dev<T> &d, std::vector<double> &host);
template <>
void fill_random(Dev<float> &d, std::vector<double> &host) {
    host.resize(d.n);
    for (size_t i = 0; i < d.n; i++) host[i] = d[i] = (float)urand();
}
template <>
void fill_random(Dev<double> &d, std::vector<double> &host) {
    host.resize(d.n);
    for (size_t i = 0; i < d.n; i++) host[i] = d[i] = urand();
}
template <>
void fill_random(Dev<uint16_t> &d, std::vector<double> &host) {
    host.resize(d.n);
    for (size_t i = 0; i < d.n; i++) {
        d[i] = to_bf16((float)urand());
        host[i] = from_bf16(d[i]);
    }
}

/* Scalars in the type cuDNN expects for dt. */
struct Scal {
    float f;
    double d;
    const void *ptr(cudnnDataType_t dt) const { return dt == CUDNN_DATA_DOUBLE ? (const void *)&d : (const void *)&f; }
    Scal(double v) : f((float)v), d(v) {}
};

enum Pass { FWD, BWD_DATA, BWD_FILTER };

/* Runs a pass with algorithm `algo` and exactly the workspace it reports. */
static cudnnStatus_t run_pass(Pass pass, const Descs &d, cudnnDataType_t dt, void *x, void *w, void *y, double alpha,
                              double beta, int algo = 1) {
    size_t ws = 0;
    cudnnStatus_t st;
    if (pass == FWD)
        st = cudnnGetConvolutionForwardWorkspaceSize(g_h, d.x, d.w, d.c, d.y, (cudnnConvolutionFwdAlgo_t)algo, &ws);
    else if (pass == BWD_DATA)
        st = cudnnGetConvolutionBackwardDataWorkspaceSize(g_h, d.w, d.y, d.c, d.x, (cudnnConvolutionBwdDataAlgo_t)algo,
                                                          &ws);
    else
        st = cudnnGetConvolutionBackwardFilterWorkspaceSize(g_h, d.x, d.y, d.c, d.w,
                                                            (cudnnConvolutionBwdFilterAlgo_t)algo, &ws);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    Dev<char> wsb(ws);
    void *wp = ws ? wsb.p : nullptr;
    Scal a(alpha), b(beta);
    if (pass == FWD)
        return cudnnConvolutionForward(g_h, a.ptr(dt), d.x, x, d.w, w, d.c, (cudnnConvolutionFwdAlgo_t)algo, wp, ws,
                                       b.ptr(dt), d.y, y);
    if (pass == BWD_DATA)
        return cudnnConvolutionBackwardData(g_h, a.ptr(dt), d.w, w, d.y, y, d.c, (cudnnConvolutionBwdDataAlgo_t)algo, wp,
                                            ws, b.ptr(dt), d.x, x);
    return cudnnConvolutionBackwardFilter(g_h, a.ptr(dt), d.x, x, d.y, y, d.c, (cudnnConvolutionBwdFilterAlgo_t)algo, wp,
                                          ws, b.ptr(dt), d.w, w);
}

template <class T>
static std::vector<double> to_host(const Dev<T> &d) {
    std::vector<double> v(d.n);
    for (size_t i = 0; i < d.n; i++) v[i] = (double)d.p[i];
    return v;
}

/* ------------------------------------------------------------ conv tests */

static void test_hand() {
    /* x 1x1x3x3x3 = 1..27 (x[i][j][l] = 9i + 3j + l + 1), padding 1, stride 2:
     * output 2x2x2; window of output index a along a dim: {0,1} (a = 0) or
     * {1,2} (a = 1). */
    Problem p;
    for (int i = 0; i < 3; i++) {
        p.in[i] = 3;
        p.ker[i] = 3;
        p.pad[i] = 1;
        p.str[i] = 2;
    }
    Dev<float> x(27), w(27), y(8);
    for (int i = 0; i < 27; i++) x[i] = (float)(i + 1);
    {
        /* all-ones filter: y[a,b,c] = 36 s(a) + 12 s(b) + 4 s(c) + 8, s(0) = 1, s(1) = 3 */
        Descs d;
        if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH)) return;
        for (int i = 0; i < 27; i++) w[i] = 1.0f;
        CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        const int s[2] = {1, 3};
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                for (int c = 0; c < 2; c++) {
                    float want = (float)(36 * s[a] + 12 * s[b] + 4 * s[c] + 8);
                    CHECK(y[(a * 2 + b) * 2 + c] == want, "ones filter y[%d,%d,%d] = %g, want %g", a, b, c,
                          y[(a * 2 + b) * 2 + c], want);
                }
        CHECK(y[0] == 60.0f && y[7] == 164.0f, "corners %g %g", y[0], y[7]);
    }
    /* filter with a single 1 at [0,0,0]: cross-correlation reads x[2o - 1]
     * (only o = (1,1,1) is inside: x[1,1,1] = 14); convolution flips it to
     * [2,2,2], reading x[2o + 1] (only o = (0,0,0): 14). */
    for (int mode = 0; mode < 2; mode++) {
        Descs d;
        if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH, mode ? CUDNN_CROSS_CORRELATION : CUDNN_CONVOLUTION)) return;
        for (int i = 0; i < 27; i++) w[i] = i == 0 ? 1.0f : 0.0f;
        CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        for (int o = 0; o < 8; o++) {
            float want = (mode ? o == 7 : o == 0) ? 14.0f : 0.0f;
            CHECK(y[o] == want, "corner filter mode %d y[%d] = %g, want %g", mode, o, y[o], want);
        }
    }
}

static std::vector<Problem> random_problems() {
    std::vector<Problem> v;
    Problem a; /* groups 2, mixed stride / pad / dilation per dim */
    a.n = 2, a.c = 4, a.k = 6, a.g = 2;
    int in_a[3] = {5, 6, 7}, k_a[3] = {3, 2, 3}, p_a[3] = {1, 0, 2}, s_a[3] = {2, 1, 2}, d_a[3] = {1, 2, 1};
    for (int i = 0; i < 3; i++) a.in[i] = in_a[i], a.ker[i] = k_a[i], a.pad[i] = p_a[i], a.str[i] = s_a[i], a.dil[i] = d_a[i];
    v.push_back(a);
    Problem b; /* dilation 2 everywhere, padding 2 */
    b.n = 1, b.c = 3, b.k = 2, b.g = 1;
    for (int i = 0; i < 3; i++) b.in[i] = 7, b.ker[i] = 3, b.pad[i] = 2, b.str[i] = 1, b.dil[i] = 2;
    v.push_back(b);
    Problem c; /* depthwise-like: groups == channels, stride 3 with leftover rows */
    c.n = 2, c.c = 3, c.k = 6, c.g = 3;
    int in_c[3] = {8, 4, 5}, k_c[3] = {2, 3, 1}, p_c[3] = {0, 1, 0}, s_c[3] = {3, 2, 1};
    for (int i = 0; i < 3; i++) c.in[i] = in_c[i], c.ker[i] = k_c[i], c.pad[i] = p_c[i], c.str[i] = s_c[i];
    v.push_back(c);
    Problem d2; /* 2-d (4-dim tensors), groups 2, dilation 2 */
    d2.nsp = 2, d2.n = 2, d2.c = 4, d2.k = 4, d2.g = 2;
    d2.in[1] = 9, d2.in[2] = 8, d2.ker[1] = 3, d2.ker[2] = 2, d2.pad[1] = 1, d2.pad[2] = 1, d2.str[1] = 2,
    d2.dil[1] = 2, d2.dil[2] = 2;
    v.push_back(d2);
    return v;
}

template <class T>
static double dot(const std::vector<double> &a, const std::vector<double> &b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

static void test_random_float() {
    int pi = 0;
    for (const Problem &p : random_problems()) {
        pi++;
        Descs d;
        if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH)) continue;
        Dev<float> x(p.xcount()), w(p.wcount()), y(p.ycount()), dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
        std::vector<double> hx, hw, hdy;
        fill_random(x, hx);
        fill_random(w, hw);
        fill_random(dy, hdy);
        for (int algo = 0; algo < 2; algo++) {
            CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0, algo), CUDNN_STATUS_SUCCESS);
            CHECK_ST(run_pass(BWD_DATA, d, CUDNN_DATA_FLOAT, dx.p, w.p, dy.p, 1.0, 0.0, algo), CUDNN_STATUS_SUCCESS);
            CHECK_ST(run_pass(BWD_FILTER, d, CUDNN_DATA_FLOAT, x.p, dw.p, dy.p, 1.0, 0.0, algo), CUDNN_STATUS_SUCCESS);
            std::vector<double> ry = ref_fwd(p, hx, hw), rdx = ref_bwd_data(p, hdy, hw), rdw = ref_bwd_filter(p, hx, hdy);
            int bad = 0;
            for (size_t i = 0; i < ry.size(); i++) bad += !close(y[i], ry[i]);
            CHECK(bad == 0, "problem %d algo %d forward: %d of %zu wrong", pi, algo, bad, ry.size());
            bad = 0;
            for (size_t i = 0; i < rdx.size(); i++) bad += !close(dx[i], rdx[i]);
            CHECK(bad == 0, "problem %d algo %d backward data: %d of %zu wrong", pi, algo, bad, rdx.size());
            bad = 0;
            for (size_t i = 0; i < rdw.size(); i++) bad += !close(dw[i], rdw[i]);
            CHECK(bad == 0, "problem %d algo %d backward filter: %d of %zu wrong", pi, algo, bad, rdw.size());
        }
        /* adjoint identities on the float results */
        double l = dot<double>(hdy, to_host(y)), r1 = dot<double>(to_host(dx), hx), r2 = dot<double>(to_host(dw), hw);
        CHECK(close(l, r1, 1e-5), "problem %d <dy, conv x> %.9g != <bwd_data dy, x> %.9g", pi, l, r1);
        CHECK(close(l, r2, 1e-5), "problem %d <dy, conv x> %.9g != <bwd_filter, w> %.9g", pi, l, r2);
        /* CUDNN_CONVOLUTION == cross-correlation with the flipped filter */
        Descs dc;
        if (!setup(dc, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH, CUDNN_CONVOLUTION)) continue;
        CHECK_ST(run_pass(FWD, dc, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        std::vector<double> rf = ref_fwd(p, hx, hw, true);
        int bad = 0;
        for (size_t i = 0; i < rf.size(); i++) bad += !close(y[i], rf[i]);
        CHECK(bad == 0, "problem %d CUDNN_CONVOLUTION: %d wrong", pi, bad);
    }
}

/* Adjoint identities in double precision (DOUBLE data and compute). */
static void test_adjoint_double() {
    int pi = 0;
    for (const Problem &p : random_problems()) {
        pi++;
        Descs d;
        if (!setup(d, p, CUDNN_DATA_DOUBLE, CUDNN_DEFAULT_MATH)) continue;
        Dev<double> x(p.xcount()), w(p.wcount()), y(p.ycount()), dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
        std::vector<double> hx, hw, hdy;
        fill_random(x, hx);
        fill_random(w, hw);
        fill_random(dy, hdy);
        CHECK_ST(run_pass(FWD, d, CUDNN_DATA_DOUBLE, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        CHECK_ST(run_pass(BWD_DATA, d, CUDNN_DATA_DOUBLE, dx.p, w.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        CHECK_ST(run_pass(BWD_FILTER, d, CUDNN_DATA_DOUBLE, x.p, dw.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        double l = dot<double>(hdy, to_host(y)), r1 = dot<double>(to_host(dx), hx), r2 = dot<double>(to_host(dw), hw);
        CHECK(close(l, r1, 1e-12), "problem %d double: <dy, conv x> %.17g != <bwd_data dy, x> %.17g", pi, l, r1);
        CHECK(close(l, r2, 1e-12), "problem %d double: <dy, conv x> %.17g != <bwd_filter, w> %.17g", pi, l, r2);
    }
}

/* Non-packed descriptors: x with padded, channels-last strides; y written
 * through gaps that must stay untouched; NHWC filter. */
static void test_strided() {
    Problem p = random_problems()[0];
    const int nb = 5;
    Descs d;
    if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH)) return;
    Dev<float> x(p.xcount()), w(p.wcount()), y(p.ycount());
    std::vector<double> hx, hw;
    fill_random(x, hx);
    fill_random(w, hw);
    CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);

    /* x as N D H W C with the W row padded by 3 elements */
    const int xdims[5] = {p.n, p.c, p.in[0], p.in[1], p.in[2]};
    int xs[5];
    xs[1] = 1;
    xs[4] = p.c;
    xs[3] = (p.in[2] + 3) * p.c;
    xs[2] = xs[3] * p.in[1];
    xs[0] = xs[2] * p.in[0];
    Dev<float> xcl((size_t)xs[0] * p.n);
    for (size_t i = 0; i < xcl.n; i++) xcl[i] = NAN; /* gaps must never be read */
    Idx5 X{p.n, p.c, p.in[0], p.in[1], p.in[2]};
    for (int n = 0; n < p.n; n++)
        for (int c = 0; c < p.c; c++)
            for (int a = 0; a < p.in[0]; a++)
                for (int b = 0; b < p.in[1]; b++)
                    for (int e = 0; e < p.in[2]; e++)
                        xcl[(size_t)n * xs[0] + c * xs[1] + a * xs[2] + b * xs[3] + e * xs[4]] = x[X(n, c, a, b, e)];
    /* y with every spatial row padded by 2 and a channel gap */
    const int ydims[5] = {p.n, p.k, p.out(0), p.out(1), p.out(2)};
    int ys[5];
    ys[4] = 1;
    ys[3] = ydims[4] + 2;
    ys[2] = ys[3] * ydims[3];
    ys[1] = ys[2] * ydims[2] + 5;
    ys[0] = ys[1] * ydims[1];
    Dev<float> ypad((size_t)ys[0] * p.n);
    for (size_t i = 0; i < ypad.n; i++) ypad[i] = 12345.0f;
    Descs ds;
    CHECK_ST(cudnnSetTensorNdDescriptor(ds.x, CUDNN_DATA_FLOAT, nb, xdims, xs), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnSetTensorNdDescriptor(ds.y, CUDNN_DATA_FLOAT, nb, ydims, ys), CUDNN_STATUS_SUCCESS);
    /* NHWC filter: K, kD, kH, kW, C/g */
    const int wdims[5] = {p.k, p.c / p.g, p.ker[0], p.ker[1], p.ker[2]};
    CHECK_ST(cudnnSetFilterNdDescriptor(ds.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, nb, wdims), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnSetConvolutionNdDescriptor(ds.c, 3, p.pad, p.str, p.dil, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnSetConvolutionGroupCount(ds.c, p.g), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnSetConvolutionMathType(ds.c, CUDNN_FMA_MATH), CUDNN_STATUS_SUCCESS);
    Dev<float> wl(p.wcount());
    Idx5 W{wdims[0], wdims[1], wdims[2], wdims[3], wdims[4]};
    Idx5 WL{wdims[0], wdims[2], wdims[3], wdims[4], wdims[1]};
    for (int k = 0; k < wdims[0]; k++)
        for (int c = 0; c < wdims[1]; c++)
            for (int a = 0; a < wdims[2]; a++)
                for (int b = 0; b < wdims[3]; b++)
                    for (int e = 0; e < wdims[4]; e++) wl[WL(k, a, b, e, c)] = w[W(k, c, a, b, e)];
    CHECK_ST(run_pass(FWD, ds, CUDNN_DATA_FLOAT, xcl.p, wl.p, ypad.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    Idx5 Y{ydims[0], ydims[1], ydims[2], ydims[3], ydims[4]};
    int bad = 0, touched = 0;
    std::vector<char> is_elem(ypad.n, 0);
    for (int n = 0; n < ydims[0]; n++)
        for (int k = 0; k < ydims[1]; k++)
            for (int a = 0; a < ydims[2]; a++)
                for (int b = 0; b < ydims[3]; b++)
                    for (int e = 0; e < ydims[4]; e++) {
                        size_t off = (size_t)n * ys[0] + k * ys[1] + a * ys[2] + b * ys[3] + e * ys[4];
                        is_elem[off] = 1;
                        bad += ypad[off] != y[Y(n, k, a, b, e)];
                    }
    for (size_t i = 0; i < ypad.n; i++) touched += !is_elem[i] && ypad[i] != 12345.0f;
    CHECK(bad == 0, "strided x / NHWC w / strided y: %d elements differ from the packed result", bad);
    CHECK(touched == 0, "strided y: %d gap elements written", touched);
}

static void test_bf16() {
    Problem p = random_problems()[0];
    Descs d;
    if (!setup(d, p, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH)) return;
    Dev<uint16_t> x(p.xcount()), w(p.wcount()), y(p.ycount()), dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
    std::vector<double> hx, hw, hdy, hy0;
    fill_random(x, hx);
    fill_random(w, hw);
    fill_random(dy, hdy);
    fill_random(y, hy0); /* prior y: a "bias" for beta = 1 */
    CHECK_ST(run_pass(FWD, d, CUDNN_DATA_BFLOAT16, x.p, w.p, y.p, 1.0, 1.0), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_DATA, d, CUDNN_DATA_BFLOAT16, dx.p, w.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_FILTER, d, CUDNN_DATA_BFLOAT16, x.p, dw.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    std::vector<double> ry = ref_fwd(p, hx, hw), rdx = ref_bwd_data(p, hdy, hw), rdw = ref_bwd_filter(p, hx, hdy);
    int bad = 0;
    for (size_t i = 0; i < ry.size(); i++) bad += y[i] != to_bf16((float)(ry[i] + hy0[i]));
    CHECK(bad == 0, "bf16 forward (beta 1): %d of %zu not the rounded reference", bad, ry.size());
    bad = 0;
    for (size_t i = 0; i < rdx.size(); i++) bad += dx[i] != to_bf16((float)rdx[i]);
    CHECK(bad == 0, "bf16 backward data: %d of %zu", bad, rdx.size());
    bad = 0;
    for (size_t i = 0; i < rdw.size(); i++) bad += dw[i] != to_bf16((float)rdw[i]);
    CHECK(bad == 0, "bf16 backward filter: %d of %zu", bad, rdw.size());

    /* rounding of single sums: 1x1 convolution of two channels */
    Problem q;
    q.c = 2;
    Descs d1;
    if (!setup(d1, q, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH)) return;
    Dev<uint16_t> x2(2), w2(2), y1(1);
    w2[0] = w2[1] = to_bf16(1.0f);
    struct {
        float a, b;
        uint16_t want;
    } cases[] = {
        {1.0f, 0.00390625f, 0x3f80},              /* 1 + 2^-8: tie, to even 1.0 */
        {1.0078125f, 0.00390625f, 0x3f82},        /* 1 + 2^-7 + 2^-8: tie, to even 1 + 2^-6 */
        {1.0f, 0.005859375f, 0x3f81},             /* 1 + 1.5 * 2^-8: above the tie */
        {-1.0f, -0.00390625f, 0xbf80},            /* negative tie */
        {3.0e38f, 3.0e38f, 0x7f80},               /* overflow to +Inf */
    };
    for (auto &cs : cases) {
        x2[0] = to_bf16(cs.a);
        x2[1] = to_bf16(cs.b);
        CHECK(from_bf16(x2[0]) + from_bf16(x2[1]) == (double)cs.a + cs.b || cs.a > 1e30f, "inputs representable");
        CHECK_ST(run_pass(FWD, d1, CUDNN_DATA_BFLOAT16, x2.p, w2.p, y1.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        CHECK(y1[0] == cs.want, "bf16 %g + %g -> 0x%04x, want 0x%04x", cs.a, cs.b, y1[0], cs.want);
    }
    x2[0] = 0x7fc0; /* NaN stays NaN */
    x2[1] = to_bf16(1.0f);
    CHECK_ST(run_pass(FWD, d1, CUDNN_DATA_BFLOAT16, x2.p, w2.p, y1.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    CHECK((y1[0] & 0x7f80) == 0x7f80 && (y1[0] & 0x7f) != 0, "bf16 NaN -> 0x%04x", y1[0]);
}

static void test_tf32() {
    Problem q; /* y = x * w, 1x1x1 */
    Dev<float> x(1), w(1), y(1);
    w[0] = 1.0f;
    struct {
        cudnnMathType_t m;
        float in, want;
    } cases[] = {
        {CUDNN_FMA_MATH, 1.0f + 0x1p-12f, 1.0f + 0x1p-12f},
        {CUDNN_DEFAULT_MATH, 1.0f + 0x1p-12f, 1.0f},
        {CUDNN_TENSOR_OP_MATH, 1.0f + 0x1p-12f, 1.0f},
        {CUDNN_DEFAULT_MATH, 1.0f + 0x1p-11f, 1.0f},                  /* tie -> even */
        {CUDNN_DEFAULT_MATH, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-9f},    /* tie -> even (up) */
        {CUDNN_DEFAULT_MATH, 1.0f + 0x1p-11f + 0x1p-20f, 1.0f + 0x1p-10f},
        {CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, 1.0e5f, INFINITY},    /* fp16 overflow */
        {CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, 1.0f + 0x1p-12f, 1.0f},
        {CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, 0x1p-26f, 0.0f},      /* below fp16 subnormals: to 0 (even) */
    };
    for (auto &cs : cases) {
        Descs d;
        if (!setup(d, q, CUDNN_DATA_FLOAT, cs.m)) return;
        x[0] = cs.in;
        CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
        CHECK(y[0] == cs.want, "math %d: %.9g -> %.9g, want %.9g", (int)cs.m, cs.in, y[0], cs.want);
    }
    setenv("NVIDIA_TF32_OVERRIDE", "0", 1);
    {
        Descs d;
        if (setup(d, q, CUDNN_DATA_FLOAT, CUDNN_DEFAULT_MATH)) {
            x[0] = 1.0f + 0x1p-12f;
            CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
            CHECK(y[0] == x[0], "NVIDIA_TF32_OVERRIDE=0 keeps fp32: %.9g", y[0]);
        }
    }
    unsetenv("NVIDIA_TF32_OVERRIDE");
}

static void test_alpha_beta() {
    Problem p = random_problems()[1];
    Descs d;
    if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH)) return;
    Dev<float> x(p.xcount()), w(p.wcount()), y(p.ycount()), dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
    std::vector<double> hx, hw, hy, hdy, hdx, hdw;
    fill_random(x, hx);
    fill_random(w, hw);
    fill_random(y, hy);
    fill_random(dy, hdy);
    fill_random(dx, hdx);
    fill_random(dw, hdw);
    CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 0.5, -2.0), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_DATA, d, CUDNN_DATA_FLOAT, dx.p, w.p, dy.p, -1.5, 0.25), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_FILTER, d, CUDNN_DATA_FLOAT, x.p, dw.p, dy.p, 2.0, 1.0), CUDNN_STATUS_SUCCESS);
    std::vector<double> ry = ref_fwd(p, hx, hw), rdx = ref_bwd_data(p, hdy, hw), rdw = ref_bwd_filter(p, hx, hdy);
    int bad = 0;
    for (size_t i = 0; i < ry.size(); i++) bad += !close(y[i], 0.5 * ry[i] - 2.0 * hy[i]);
    for (size_t i = 0; i < rdx.size(); i++) bad += !close(dx[i], -1.5 * rdx[i] + 0.25 * hdx[i]);
    for (size_t i = 0; i < rdw.size(); i++) bad += !close(dw[i], 2.0 * rdw[i] + hdw[i]);
    CHECK(bad == 0, "alpha/beta blending: %d wrong", bad);
    /* beta == 0 must not read the prior output (NaN there) */
    for (size_t i = 0; i < y.n; i++) y[i] = NAN;
    for (size_t i = 0; i < dx.n; i++) dx[i] = NAN;
    for (size_t i = 0; i < dw.n; i++) dw[i] = NAN;
    CHECK_ST(run_pass(FWD, d, CUDNN_DATA_FLOAT, x.p, w.p, y.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_DATA, d, CUDNN_DATA_FLOAT, dx.p, w.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    CHECK_ST(run_pass(BWD_FILTER, d, CUDNN_DATA_FLOAT, x.p, dw.p, dy.p, 1.0, 0.0), CUDNN_STATUS_SUCCESS);
    bad = 0;
    for (size_t i = 0; i < y.n; i++) bad += std::isnan(y[i]);
    for (size_t i = 0; i < dx.n; i++) bad += std::isnan(dx[i]);
    for (size_t i = 0; i < dw.n; i++) bad += std::isnan(dw[i]);
    CHECK(bad == 0, "beta = 0 read the NaN prior output: %d NaNs", bad);
}

static void test_output_dim() {
    Problem p;
    p.n = 2, p.c = 6, p.k = 5, p.g = 3;
    int in[3] = {7, 9, 11}, pad[3] = {1, 0, 2}, ker[3] = {3, 2, 3}, dil[3] = {1, 2, 1}, str[3] = {2, 1, 3};
    for (int i = 0; i < 3; i++) p.in[i] = in[i], p.pad[i] = pad[i], p.ker[i] = ker[i], p.dil[i] = dil[i], p.str[i] = str[i];
    p.k = 6;
    Descs d;
    if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH)) return;
    int od[5] = {0};
    CHECK_ST(cudnnGetConvolutionNdForwardOutputDim(d.c, d.x, d.w, 5, od), CUDNN_STATUS_SUCCESS);
    /* 1 + (in + 2 pad - ((k - 1) dil + 1)) / stride: 1 + 6/2, 1 + 6/1, 1 + 12/3 */
    CHECK(od[0] == 2 && od[1] == 6 && od[2] == 4 && od[3] == 7 && od[4] == 5, "output dims %d %d %d %d %d", od[0], od[1],
          od[2], od[3], od[4]);
    CHECK_ST(cudnnGetConvolutionNdForwardOutputDim(d.c, d.x, d.w, 6, od), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionGroupCount(d.c, 2), CUDNN_STATUS_SUCCESS); /* 2 * 2 != 6 channels */
    CHECK_ST(cudnnGetConvolutionNdForwardOutputDim(d.c, d.x, d.w, 5, od), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionGroupCount(d.c, 3), CUDNN_STATUS_SUCCESS);
    /* a dilated filter larger than the padded input */
    int big_dil[3] = {5, 1, 1}; /* span 11 > 7 + 2 */
    CHECK_ST(cudnnSetConvolutionNdDescriptor(d.c, 3, pad, str, big_dil, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnGetConvolutionNdForwardOutputDim(d.c, d.x, d.w, 5, od), CUDNN_STATUS_BAD_PARAM);
}

static void test_algos_and_workspace() {
    Problem p = random_problems()[0];
    Descs d;
    if (!setup(d, p, CUDNN_DATA_FLOAT, CUDNN_DEFAULT_MATH)) return;
    Dev<float> x(p.xcount()), w(p.wcount()), y(p.ycount());
    std::vector<double> hx, hw;
    fill_random(x, hx);
    fill_random(w, hw);
    int maxc = 0;
    CHECK_ST(cudnnGetConvolutionForwardAlgorithmMaxCount(g_h, &maxc), CUDNN_STATUS_SUCCESS);
    CHECK(maxc == CUDNN_CONVOLUTION_FWD_ALGO_COUNT, "max count %d", maxc);
    std::vector<cudnnConvolutionFwdAlgoPerf_t> r((size_t)maxc);
    int got = 0;
    CHECK_ST(cudnnGetConvolutionForwardAlgorithm_v7(g_h, d.x, d.w, d.c, d.y, maxc, &got, r.data()), CUDNN_STATUS_SUCCESS);
    CHECK(got == maxc, "v7 returned %d", got);
    size_t ws1 = 0;
    CHECK_ST(cudnnGetConvolutionForwardWorkspaceSize(g_h, d.x, d.w, d.c, d.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                                     &ws1),
             CUDNN_STATUS_SUCCESS);
    CHECK(ws1 > 0 && ws1 < (1 << 20), "algo 1 workspace %zu", ws1);
    CHECK(r[0].status == CUDNN_STATUS_SUCCESS && r[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
              r[0].memory == ws1 && r[0].mathType == CUDNN_DEFAULT_MATH,
          "v7 first result algo %d status %d memory %zu math %d", (int)r[0].algo, (int)r[0].status, r[0].memory,
          (int)r[0].mathType);
    CHECK(r[1].status == CUDNN_STATUS_SUCCESS && r[1].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM && r[1].memory == 0,
          "v7 second result");
    int unsupported = 0;
    for (int i = 2; i < got; i++) unsupported += r[(size_t)i].status == CUDNN_STATUS_NOT_SUPPORTED;
    CHECK(unsupported == got - 2, "v7: %d NOT_SUPPORTED entries", unsupported);
    CHECK_ST(cudnnGetConvolutionForwardAlgorithm_v7(g_h, d.x, d.w, d.c, d.y, 0, &got, r.data()), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnGetConvolutionForwardAlgorithm_v7(g_h, d.x, d.w, d.c, d.y, 1, &got, r.data()), CUDNN_STATUS_SUCCESS);
    CHECK(got == 1, "v7 with 1 requested returned %d", got);

    /* Find without workspace: algo 0 succeeds first, algo 1 cannot run; y left as garbage */
    CHECK_ST(cudnnFindConvolutionForwardAlgorithmEx(g_h, d.x, x.p, d.w, w.p, d.c, d.y, y.p, maxc, &got, r.data(), nullptr, 0),
             CUDNN_STATUS_SUCCESS);
    CHECK(r[0].status == CUDNN_STATUS_SUCCESS && r[0].algo == 0 && r[1].status != CUDNN_STATUS_SUCCESS && r[1].algo == 1,
          "Find without workspace: %d/%d, %d/%d", (int)r[0].algo, (int)r[0].status, (int)r[1].algo, (int)r[1].status);
    CHECK(std::isnan(y[0]), "Find leaves the output overwritten");
    Dev<char> ws(ws1);
    CHECK_ST(cudnnFindConvolutionForwardAlgorithmEx(g_h, d.x, x.p, d.w, w.p, d.c, d.y, y.p, maxc, &got, r.data(), ws.p, ws1),
             CUDNN_STATUS_SUCCESS);
    CHECK(r[0].status == CUDNN_STATUS_SUCCESS && r[0].algo == 1 && r[0].memory == ws1, "Find with workspace");
    CHECK_ST(cudnnFindConvolutionForwardAlgorithmEx(g_h, d.x, x.p, d.w, w.p, d.c, d.y, y.p, maxc, &got, r.data(), nullptr, 64),
             CUDNN_STATUS_BAD_PARAM);

    int bmax = 0, fmax = 0;
    CHECK_ST(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(g_h, &bmax), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(g_h, &fmax), CUDNN_STATUS_SUCCESS);
    CHECK(bmax == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT && fmax == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, "bwd max counts");
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> rb((size_t)bmax);
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> rf((size_t)fmax);
    CHECK_ST(cudnnGetConvolutionBackwardDataAlgorithm_v7(g_h, d.w, d.y, d.c, d.x, bmax, &got, rb.data()), CUDNN_STATUS_SUCCESS);
    CHECK(got == bmax && rb[0].status == CUDNN_STATUS_SUCCESS && rb[0].memory > 0, "bwd data v7");
    CHECK_ST(cudnnGetConvolutionBackwardFilterAlgorithm_v7(g_h, d.x, d.y, d.c, d.w, fmax, &got, rf.data()),
             CUDNN_STATUS_SUCCESS);
    CHECK(got == fmax && rf[0].status == CUDNN_STATUS_SUCCESS && rf[0].memory > 0, "bwd filter v7");
    Dev<float> dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
    CHECK_ST(cudnnFindConvolutionBackwardDataAlgorithmEx(g_h, d.w, w.p, d.y, dy.p, d.c, d.x, dx.p, bmax, &got, rb.data(),
                                                         nullptr, 0),
             CUDNN_STATUS_SUCCESS);
    CHECK(rb[0].status == CUDNN_STATUS_SUCCESS && rb[0].memory == 0 && std::isnan(dx[0]), "bwd data Find");
    CHECK_ST(cudnnFindConvolutionBackwardFilterAlgorithmEx(g_h, d.x, x.p, d.y, dy.p, d.c, d.w, dw.p, fmax, &got, rf.data(),
                                                           nullptr, 0),
             CUDNN_STATUS_SUCCESS);
    CHECK(rf[0].status == CUDNN_STATUS_SUCCESS && rf[0].memory == 0 && std::isnan(dw[0]), "bwd filter Find");

    /* executions honour the workspace */
    const float one = 1.0f, zero = 0.0f;
    const auto A1 = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, A1, nullptr, 0, &zero, d.y, y.p),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, A1, ws.p, ws1 - 256, &zero, d.y, y.p),
             CUDNN_STATUS_BAD_PARAM);
    std::vector<char> host_ws(ws1);
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, A1, host_ws.data(), ws1, &zero, d.y, y.p),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, A1, ws.p, ws1 + 256, &zero, d.y, y.p),
             CUDNN_STATUS_BAD_PARAM); /* claims more than the allocation holds */
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, A1, ws.p, ws1, &zero, d.y, y.p),
             CUDNN_STATUS_SUCCESS);
    CHECK(!std::isnan(y[0]), "forward after Find overwrote y");
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0,
                                     &zero, d.y, y.p),
             CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, CUDNN_CONVOLUTION_FWD_ALGO_FFT, ws.p, ws1, &zero,
                                     d.y, y.p),
             CUDNN_STATUS_NOT_SUPPORTED);
    CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, w.p, d.c, (cudnnConvolutionFwdAlgo_t)42, ws.p, ws1, &zero,
                                     d.y, y.p),
             CUDNN_STATUS_BAD_PARAM);
    size_t s = 0;
    CHECK_ST(cudnnGetConvolutionForwardWorkspaceSize(g_h, d.x, d.w, d.c, d.y, CUDNN_CONVOLUTION_FWD_ALGO_FFT, &s),
             CUDNN_STATUS_NOT_SUPPORTED);
    size_t wsd = 0, wsf = 0;
    CHECK_ST(cudnnGetConvolutionBackwardDataWorkspaceSize(g_h, d.w, d.y, d.c, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, &wsd),
             CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnGetConvolutionBackwardFilterWorkspaceSize(g_h, d.x, d.y, d.c, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                                            &wsf),
             CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnConvolutionBackwardData(g_h, &one, d.w, w.p, d.y, dy.p, d.c, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws.p,
                                          wsd - 1, &zero, d.x, dx.p),
             CUDNN_STATUS_BAD_PARAM);
    Dev<char> wsb(wsf);
    CHECK_ST(cudnnConvolutionBackwardFilter(g_h, &one, d.x, x.p, d.y, dy.p, d.c, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                            wsb.p, wsf - 1, &zero, d.w, dw.p),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnConvolutionBackwardFilter(g_h, &one, d.x, x.p, d.y, dy.p, d.c, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                            wsb.p, wsf, &zero, d.w, dw.p),
             CUDNN_STATUS_SUCCESS);
}

static void test_conv_errors() {
    const float one = 1.0f, zero = 0.0f;
    cudnnTensorDescriptor_t t;
    cudnnFilterDescriptor_t f;
    cudnnConvolutionDescriptor_t c;
    CHECK_ST(cudnnCreateTensorDescriptor(&t), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnCreateFilterDescriptor(&f), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnCreateConvolutionDescriptor(&c), CUDNN_STATUS_SUCCESS);
    int dims[9] = {1, 2, 3, 4, 5, 1, 1, 1, 1}, st[9];
    packed_strides(9, dims, st);
    CHECK_ST(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 2, dims, st + 7), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 9, dims, st), CUDNN_STATUS_NOT_SUPPORTED);
    int zd[5] = {1, 0, 3, 4, 5};
    CHECK_ST(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 5, zd, st + 4), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 5, dims, nullptr), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetTensorNdDescriptor(t, (cudnnDataType_t)99, 5, dims, st + 4), CUDNN_STATUS_BAD_PARAM);
    int huge[5] = {65536, 65536, 1, 1, 1}, hs[5] = {0, 0, 0, 0, 1};
    CHECK_ST(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 5, huge, hs), CUDNN_STATUS_NOT_SUPPORTED);
    CHECK_ST(cudnnSetFilterNdDescriptor(f, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 2, dims), CUDNN_STATUS_BAD_PARAM);
    int nd[5] = {2, -1, 3, 3, 3};
    CHECK_ST(cudnnSetFilterNdDescriptor(f, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, nd), CUDNN_STATUS_BAD_PARAM);
    int one3[3] = {1, 1, 1}, zero3[3] = {0, 0, 0}, neg3[3] = {0, -1, 0};
    CHECK_ST(cudnnSetConvolutionNdDescriptor(c, 3, neg3, one3, one3, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionNdDescriptor(c, 3, zero3, zero3, one3, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionNdDescriptor(c, 3, zero3, one3, zero3, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionNdDescriptor(c, 3, zero3, one3, one3, (cudnnConvolutionMode_t)5, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_BAD_PARAM);
    int one7[7] = {1, 1, 1, 1, 1, 1, 1}, zero7[7] = {0};
    CHECK_ST(cudnnSetConvolutionNdDescriptor(c, 7, zero7, one7, one7, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             CUDNN_STATUS_NOT_SUPPORTED);
    CHECK_ST(cudnnSetConvolutionGroupCount(c, 0), CUDNN_STATUS_BAD_PARAM);
    CHECK_ST(cudnnSetConvolutionMathType(c, (cudnnMathType_t)7), CUDNN_STATUS_BAD_PARAM);
    cudnnDestroyTensorDescriptor(t);
    cudnnDestroyFilterDescriptor(f);
    cudnnDestroyConvolutionDescriptor(c);

    /* a valid problem, then one thing wrong at a time */
    Problem p = random_problems()[0];
    Dev<float> x(p.xcount()), w(p.wcount()), y(p.ycount()), dx(p.xcount()), dw(p.wcount()), dy(p.ycount());
    auto fwd = [&](Descs &d, const void *xp = nullptr, const void *a = nullptr) {
        return cudnnConvolutionForward(g_h, a ? a : &one, d.x, xp ? xp : x.p, d.w, w.p, d.c,
                                       CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, d.y, y.p);
    };
    auto bwd_data = [&](Descs &d) {
        return cudnnConvolutionBackwardData(g_h, &one, d.w, w.p, d.y, dy.p, d.c, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, nullptr,
                                            0, &zero, d.x, dx.p);
    };
    auto bwd_filter = [&](Descs &d) {
        return cudnnConvolutionBackwardFilter(g_h, &one, d.x, x.p, d.y, dy.p, d.c, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                                              nullptr, 0, &zero, d.w, dw.p);
    };
    {
        Descs d;
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        CHECK_ST(fwd(d), CUDNN_STATUS_SUCCESS);
        CHECK_ST(bwd_data(d), CUDNN_STATUS_SUCCESS);
        CHECK_ST(bwd_filter(d), CUDNN_STATUS_SUCCESS);
        /* y spatial size off by one */
        int yd[5] = {p.n, p.k, p.out(0) + 1, p.out(1), p.out(2)}, ys[5];
        packed_strides(5, yd, ys);
        CHECK_ST(cudnnSetTensorNdDescriptor(d.y, CUDNN_DATA_FLOAT, 5, yd, ys), CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_NOT_SUPPORTED);
        CHECK_ST(bwd_data(d), CUDNN_STATUS_BAD_PARAM);
        CHECK_ST(bwd_filter(d), CUDNN_STATUS_BAD_PARAM);
        /* y channels wrong */
        int yc[5] = {p.n, p.k + 1, p.out(0), p.out(1), p.out(2)};
        packed_strides(5, yc, ys);
        CHECK_ST(cudnnSetTensorNdDescriptor(d.y, CUDNN_DATA_FLOAT, 5, yc, ys), CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
    }
    {
        Descs d; /* group count inconsistent with x channels / w */
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        CHECK_ST(cudnnSetConvolutionGroupCount(d.c, 1), CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
    }
    {
        Problem q = p; /* K = 5 not a multiple of groups 2 (x channels still consistent) */
        q.k = 5;
        Descs d;
        setup(d, q, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
        CHECK_ST(bwd_data(d), CUDNN_STATUS_NOT_SUPPORTED);
    }
    {
        Descs d; /* data types differ */
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        const int wd[5] = {p.k, p.c / p.g, p.ker[0], p.ker[1], p.ker[2]};
        CHECK_ST(cudnnSetFilterNdDescriptor(d.w, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NCHW, 5, wd), CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
    }
    {
        Descs d; /* bf16 data with bf16 compute: not a cuDNN configuration */
        setup(d, p, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH);
        CHECK_ST(cudnnSetConvolutionNdDescriptor(d.c, 3, p.pad, p.str, p.dil, CUDNN_CROSS_CORRELATION, CUDNN_DATA_BFLOAT16),
                 CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_NOT_SUPPORTED);
    }
    {
        Descs d; /* conv descriptor with 2 spatial dims for 5-dim tensors */
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        CHECK_ST(cudnnSetConvolutionNdDescriptor(d.c, 2, p.pad, p.str, p.dil, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                 CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
    }
    {
        Descs d; /* 1-d convolution (3-dim tensors): the legacy API takes 4 or 5 dims */
        int xd[3] = {1, 1, 5}, xs[3] = {5, 5, 1}, wdd[3] = {1, 1, 1}, pd[1] = {0}, sd[1] = {1};
        CHECK_ST(cudnnSetTensorNdDescriptor(d.x, CUDNN_DATA_FLOAT, 3, xd, xs), CUDNN_STATUS_SUCCESS);
        CHECK_ST(cudnnSetTensorNdDescriptor(d.y, CUDNN_DATA_FLOAT, 3, xd, xs), CUDNN_STATUS_SUCCESS);
        CHECK_ST(cudnnSetFilterNdDescriptor(d.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 3, wdd), CUDNN_STATUS_SUCCESS);
        CHECK_ST(cudnnSetConvolutionNdDescriptor(d.c, 1, pd, sd, sd, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                 CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_NOT_SUPPORTED);
    }
    {
        Descs d; /* pointers: host memory, too-small allocation, NULL, alpha on the device */
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        std::vector<float> hx(p.xcount());
        CHECK_ST(fwd(d, hx.data()), CUDNN_STATUS_BAD_PARAM);
        Dev<float> small(p.xcount() / 2);
        CHECK_ST(fwd(d, small.p), CUDNN_STATUS_BAD_PARAM);
        CHECK_ST(cudnnConvolutionForward(g_h, &one, d.x, x.p, d.w, nullptr, d.c, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                         nullptr, 0, &zero, d.y, y.p),
                 CUDNN_STATUS_BAD_PARAM);
        CHECK_ST(cudnnConvolutionForward(g_h, nullptr, d.x, x.p, d.w, w.p, d.c, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                         nullptr, 0, &zero, d.y, y.p),
                 CUDNN_STATUS_BAD_PARAM);
        Dev<float> dev_alpha(1);
        dev_alpha[0] = 1.0f;
        CHECK_ST(fwd(d, nullptr, dev_alpha.p), CUDNN_STATUS_BAD_PARAM);
        CHECK_ST(cudnnConvolutionForward(nullptr, &one, d.x, x.p, d.w, w.p, d.c, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                         nullptr, 0, &zero, d.y, y.p),
                 CUDNN_STATUS_BAD_PARAM);
        /* an output descriptor whose elements overlap (stride 0) */
        int yd[5] = {p.n, p.k, p.out(0), p.out(1), p.out(2)}, ys[5];
        packed_strides(5, yd, ys);
        ys[1] = 0;
        CHECK_ST(cudnnSetTensorNdDescriptor(d.y, CUDNN_DATA_FLOAT, 5, yd, ys), CUDNN_STATUS_SUCCESS);
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
    }
    {
        Descs d; /* unset and destroyed descriptors */
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
        cudnnTensorDescriptor_t gone;
        cudnnCreateTensorDescriptor(&gone);
        cudnnDestroyTensorDescriptor(gone);
        setup(d, p, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        cudnnTensorDescriptor_t keep = d.x;
        d.x = gone;
        CHECK_ST(fwd(d), CUDNN_STATUS_BAD_PARAM);
        d.x = keep;
        CHECK_ST(fwd(d), CUDNN_STATUS_SUCCESS);
    }
    CHECK(strcmp(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM") == 0, "error string");
    CHECK(strcmp(cudnnGetErrorString(CUDNN_STATUS_NOT_SUPPORTED), "CUDNN_STATUS_NOT_SUPPORTED") == 0, "error string");
}

/* ------------------------------------------------------------ gemm tests */

static cublasHandle_t g_b = nullptr;

/* Column-major reference: C = op(A) op(B), dense m x n. */
static std::vector<double> ref_gemm(bool ta, bool tb, int m, int n, int k, const std::vector<double> &A, int lda,
                                    const std::vector<double> &B, int ldb) {
    std::vector<double> C((size_t)m * n, 0.0);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++) {
                double a = ta ? A[(size_t)l + (size_t)i * lda] : A[(size_t)i + (size_t)l * lda];
                double b = tb ? B[(size_t)j + (size_t)l * ldb] : B[(size_t)l + (size_t)j * ldb];
                s += a * b;
            }
            C[(size_t)i + (size_t)j * m] = s;
        }
    return C;
}

static void test_gemm_float() {
    const int m = 5, n = 4, k = 3, batch = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
            const long long sA = (long long)lda * (ta ? m : k) + 7, sB = 0 /* broadcast B */, sC = (long long)ldc * n + 1;
            Dev<float> A((size_t)sA * batch), B((size_t)ldb * (tb ? k : n)), C((size_t)sC * batch);
            std::vector<double> hA, hB, hC;
            fill_random(A, hA);
            fill_random(B, hB);
            fill_random(C, hC);
            const float alpha = 0.75f, beta = -0.5f;
            cublasOperation_t opa = ta ? (tb ? CUBLAS_OP_C : CUBLAS_OP_T) : CUBLAS_OP_N; /* C == T for real */
            cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            CHECK_ST(cublasGemmStridedBatchedEx(g_b, opa, opb, m, n, k, &alpha, A.p, CUDA_R_32F, lda, sA, B.p, CUDA_R_32F,
                                                ldb, sB, &beta, C.p, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
            int bad = 0, touched = 0;
            for (int b = 0; b < batch; b++) {
                std::vector<double> Ab(hA.begin() + b * sA, hA.begin() + (b + 1) * sA);
                std::vector<double> r = ref_gemm(ta, tb, m, n, k, Ab, lda, hB, ldb);
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < ldc; i++) {
                        size_t off = (size_t)b * sC + (size_t)j * ldc + i;
                        if (i < m)
                            bad += !close(C[off], alpha * r[(size_t)i + (size_t)j * m] + beta * hC[off]);
                        else
                            touched += C[off] != (float)hC[off];
                    }
            }
            CHECK(bad == 0, "gemm ta %d tb %d: %d wrong", ta, tb, bad);
            CHECK(touched == 0, "gemm ta %d tb %d: %d elements outside C written", ta, tb, touched);
        }
}

static void test_gemm_types() {
    const int m = 6, n = 5, k = 7;
    Dev<uint16_t> A((size_t)m * k), B((size_t)k * n), Cb((size_t)m * n);
    Dev<float> Cf((size_t)m * n);
    std::vector<double> hA, hB, hCb, hCf;
    fill_random(A, hA);
    fill_random(B, hB);
    fill_random(Cb, hCb);
    fill_random(Cf, hCf);
    const float one = 1.0f, zero = 0.0f;
    std::vector<double> r = ref_gemm(false, false, m, n, k, hA, m, hB, k);
    /* bf16 x bf16 -> f32 */
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_16BF, m, 0, B.p,
                                        CUDA_R_16BF, k, 0, &zero, Cf.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    int bad = 0;
    for (size_t i = 0; i < r.size(); i++) bad += Cf[i] != (float)r[i];
    CHECK(bad == 0, "bf16 -> f32 gemm: %d wrong", bad);
    /* bf16 x bf16 -> bf16 with beta 1: rounded once */
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_16BF, m, 0, B.p,
                                        CUDA_R_16BF, k, 0, &one, Cb.p, CUDA_R_16BF, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    bad = 0;
    for (size_t i = 0; i < r.size(); i++) bad += Cb[i] != to_bf16((float)(r[i] + hCb[i]));
    CHECK(bad == 0, "bf16 -> bf16 gemm: %d wrong", bad);
    /* bf16 with FAST_TF32 is not a cuBLAS combination */
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_16BF, m, 0, B.p,
                                        CUDA_R_16BF, k, 0, &zero, Cf.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F_FAST_TF32,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_NOT_SUPPORTED);
    /* f32 A with bf16 B */
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, Cf.p, CUDA_R_32F, m, 0, B.p,
                                        CUDA_R_16BF, k, 0, &zero, Cf.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_NOT_SUPPORTED);

    /* TF32: 1 x (1 + 2^-12) */
    Dev<float> a1(1), b1(1), c1(1);
    a1[0] = 1.0f;
    b1[0] = 1.0f + 0x1p-12f;
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a1.p, CUDA_R_32F, 1, 0, b1.p,
                                        CUDA_R_32F, 1, 0, &zero, c1.p, CUDA_R_32F, 1, 0, 1, CUBLAS_COMPUTE_32F_FAST_TF32,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    CHECK(c1[0] == 1.0f, "FAST_TF32 rounds operands: %.9g", c1[0]);
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a1.p, CUDA_R_32F, 1, 0, b1.p,
                                        CUDA_R_32F, 1, 0, &zero, c1.p, CUDA_R_32F, 1, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    CHECK(c1[0] == 1.0f + 0x1p-12f, "COMPUTE_32F is true fp32: %.9g", c1[0]);
    CHECK_ST(cublasSetMathMode(g_b, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a1.p, CUDA_R_32F, 1, 0, b1.p,
                                        CUDA_R_32F, 1, 0, &zero, c1.p, CUDA_R_32F, 1, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    CHECK(c1[0] == 1.0f, "COMPUTE_32F with CUBLAS_TF32_TENSOR_OP_MATH: %.9g", c1[0]);
    CHECK_ST(cublasSetMathMode(g_b, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);

    /* beta = 0 never reads C; k = 0 gives beta * C */
    for (size_t i = 0; i < Cf.n; i++) Cf[i] = NAN;
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_16BF, m, 0, B.p,
                                        CUDA_R_16BF, k, 0, &zero, Cf.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    bad = 0;
    for (size_t i = 0; i < Cf.n; i++) bad += std::isnan(Cf[i]);
    CHECK(bad == 0, "beta = 0 read C: %d NaNs", bad);
    const float two = 2.0f;
    std::vector<float> before(Cf.p, Cf.p + Cf.n);
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &one, A.p, CUDA_R_16BF, m, 0, B.p,
                                        CUDA_R_16BF, 1, 0, &two, Cf.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_SUCCESS);
    bad = 0;
    for (size_t i = 0; i < Cf.n; i++) bad += Cf[i] != 2.0f * before[i];
    CHECK(bad == 0, "k = 0: C = beta C (%d wrong)", bad);
}

static void test_gemm_errors() {
    const int m = 4, n = 3, k = 2;
    Dev<float> A(64), B(64), C(64);
    std::vector<double> h;
    fill_random(A, h);
    fill_random(B, h);
    const float one = 1.0f, zero = 0.0f;
    auto g = [&](cublasOperation_t ta, cublasOperation_t tb, int mm, int lda, int ldb, int ldc, const void *Ap = nullptr,
                 long long sC = 0, int batch = 1) {
        return cublasGemmStridedBatchedEx(g_b, ta, tb, mm, n, k, &one, Ap ? Ap : A.p, CUDA_R_32F, lda, 0, B.p, CUDA_R_32F,
                                          ldb, 0, &zero, C.p, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT);
    };
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m - 1, k, m), CUBLAS_STATUS_INVALID_VALUE); /* lda < m */
    CHECK_ST(g(CUBLAS_OP_T, CUBLAS_OP_N, m, k, k, m), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(g(CUBLAS_OP_T, CUBLAS_OP_N, m, k - 1, k, m), CUBLAS_STATUS_INVALID_VALUE); /* lda < k */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k - 1, m), CUBLAS_STATUS_INVALID_VALUE); /* ldb < k */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_T, m, m, n - 1, m), CUBLAS_STATUS_INVALID_VALUE); /* ldb < n */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m - 1), CUBLAS_STATUS_INVALID_VALUE); /* ldc < m */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, -1, m, k, m), CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(g(CUBLAS_OP_CONJG, CUBLAS_OP_N, m, m, k, m), CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, 0, 1, k, 1), CUBLAS_STATUS_SUCCESS); /* empty: no-op */
    std::vector<float> host(64);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m, host.data()), CUBLAS_STATUS_EXECUTION_FAILED);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, 200, k, m), CUBLAS_STATUS_EXECUTION_FAILED); /* A past its allocation */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m, nullptr, 4 * 3 - 1, 2), CUBLAS_STATUS_INVALID_VALUE); /* C overlap */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m, nullptr, 4 * 3, 2), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, 2 * m, nullptr, m, 2), CUBLAS_STATUS_SUCCESS); /* interleaved */
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, 2 * m, nullptr, m - 1, 2), CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, A.p, A.p, CUDA_R_32F, m, 0, B.p, CUDA_R_32F,
                                        k, 0, &zero, C.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_INVALID_VALUE); /* alpha on the device in pointer mode host */
    CHECK_ST(cublasGemmStridedBatchedEx(g_b, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_32F, m, 0, B.p, CUDA_R_32F,
                                        k, 0, &zero, C.p, CUDA_R_32F, m, 0, 1, (cublasComputeType_t)1234,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(cublasGemmStridedBatchedEx(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.p, CUDA_R_32F, m, 0, B.p,
                                        CUDA_R_32F, k, 0, &zero, C.p, CUDA_R_32F, m, 0, 1, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
             CUBLAS_STATUS_NOT_INITIALIZED);

    /* workspace: 256-aligned device memory; cublasSetStream drops it */
    void *ws = nullptr;
    cudaMalloc(&ws, 1 << 16);
    CHECK_ST(cublasSetWorkspace(g_b, (char *)ws + 16, 1024), CUBLAS_STATUS_INVALID_VALUE);
    std::vector<char> hws(4096);
    CHECK_ST(cublasSetWorkspace(g_b, hws.data() + (256 - (uintptr_t)hws.data() % 256), 1024), CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(cublasSetWorkspace(g_b, ws, 1 << 16), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m), CUBLAS_STATUS_SUCCESS);
    cudaFree(ws);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m), CUBLAS_STATUS_EXECUTION_FAILED); /* workspace freed */
    CHECK_ST(cublasSetStream(g_b, nullptr), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(g(CUBLAS_OP_N, CUBLAS_OP_N, m, m, k, m), CUBLAS_STATUS_SUCCESS);
    CHECK(cublasGetStatusString(CUBLAS_STATUS_INVALID_VALUE) != nullptr &&
              strcmp(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE") == 0,
          "status strings");
    cublasHandle_t dead;
    CHECK_ST(cublasCreate(&dead), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(cublasDestroy(dead), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(cublasSetStream(dead, nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
}

int main() {
    /* argument-error cases print their diagnostics unless quiet */
    if (!getenv("MT_EMU_QUIET")) setenv("MT_EMU_QUIET", "1", 1);
    CHECK_ST(cudnnCreate(&g_h), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnSetStream(g_h, nullptr), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cublasCreate(&g_b), CUBLAS_STATUS_SUCCESS);
    test_hand();
    test_random_float();
    test_adjoint_double();
    test_strided();
    test_bf16();
    test_tf32();
    test_alpha_beta();
    test_output_dim();
    test_algos_and_workspace();
    test_conv_errors();
    test_gemm_float();
    test_gemm_types();
    test_gemm_errors();
    CHECK_ST(cublasDestroy(g_b), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(cudnnDestroy(g_h), CUDNN_STATUS_SUCCESS);
    CHECK_ST(cudnnDestroy(g_h), CUDNN_STATUS_BAD_PARAM); /* already destroyed */
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
