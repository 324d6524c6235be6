/* CPU reductions (sum, sum of squares, max, min, absmax) and softmax with
 * its backward. Contracts: core/backend.h (outputs written (=), contiguous
 * f32 inputs and outputs).
 *
 * Reductions: the input's dims are merged into maximal groups of adjacent
 * kept / reduced dims (size-1 dims dropped). Two loop shapes cover every case:
 *  A. the innermost group is reduced: each output reduces contiguous runs of
 *     L elements (reduce-all, reduce trailing dims, (N, C, S) over N and S as
 *     for bias / batch-norm gradients);
 *  B. the innermost group is kept: vectors of up to JB outputs are
 *     accumulated row by row over the reduced dims ((N, C) over N, ...).
 * Work is cut into units (outputs x chunks of the reduced range) whose count
 * depends only on the shapes, and partial results are folded in a fixed
 * order, so results do not depend on the number of threads. SUM and SUMSQ
 * accumulate in double; MAX / MIN / ABSMAX propagate NaN (as PyTorch).
 *
 * bf16 (reduce: in bf16, out f32 or bf16; softmax and its backward: all
 * bf16): the f32 kernel on f32 copies of the bf16 inputs, bf16 outputs
 * rounded once (the adapter of core/cpu/bf16.c).
 *
 * Softmax along any dim: the input is viewed as (outer, n, inner); rows
 * (inner == 1) are done one per task, otherwise blocks of IB consecutive
 * inner positions are done together so the loops vectorise along inner.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_kernels.h"
#include "core/kernel_plan.h"

#define PAR_MIN 32768       /* below this many elements, stay on one thread */
#define CH ((int64_t)1 << 16) /* reduced elements per work unit */
#define JB 256              /* outputs per unit in loop shape B */
#define IB 256              /* inner positions per softmax unit */
#define LANES 16

/* ------------------------------------------------------------ helpers */

static inline double red_identity(mt_reduce_op op) {
    switch (op) {
    case MT_RED_MAX: return -INFINITY;
    case MT_RED_MIN: return INFINITY;
    default: return 0.0;
    }
}

/* NaN-propagating max / min. */
static inline float pick_max_f(float m, float v) { return ((v > m) | (v != v)) ? v : m; }
static inline float pick_min_f(float m, float v) { return ((v < m) | (v != v)) ? v : m; }
static inline double pick_max_d(double m, double v) { return ((v > m) | (v != v)) ? v : m; }
static inline double pick_min_d(double m, double v) { return ((v < m) | (v != v)) ? v : m; }

static inline double red_combine(mt_reduce_op op, double a, double b) {
    switch (op) {
    case MT_RED_SUM:
    case MT_RED_SUMSQ: return a + b;
    case MT_RED_MIN: return pick_min_d(a, b);
    default: return pick_max_d(a, b); /* MAX, ABSMAX (b already >= 0) */
    }
}

/* Reduces n contiguous elements. */
static double seg_reduce(mt_reduce_op op, const float *x, int64_t n) {
    int64_t i = 0;
    switch (op) {
    case MT_RED_SUM:
    case MT_RED_SUMSQ: {
        double acc[LANES] = {0};
        if (op == MT_RED_SUM) {
            for (; i + LANES <= n; i += LANES)
                for (int k = 0; k < LANES; k++) acc[k] += (double)x[i + k];
            for (; i < n; i++) acc[0] += (double)x[i];
        } else {
            for (; i + LANES <= n; i += LANES)
                for (int k = 0; k < LANES; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
            for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
        }
        double s = 0;
        for (int k = 0; k < LANES; k++) s += acc[k];
        return s;
    }
    case MT_RED_MAX: {
        float m = -INFINITY;
        int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
        for (int64_t k = 0; k < n; k++) {
            m = x[k] > m ? x[k] : m;
            nan |= x[k] != x[k];
        }
        return nan ? NAN : m;
    }
    case MT_RED_MIN: {
        float m = INFINITY;
        int nan = 0;
#pragma omp simd reduction(min : m) reduction(| : nan)
        for (int64_t k = 0; k < n; k++) {
            m = x[k] < m ? x[k] : m;
            nan |= x[k] != x[k];
        }
        return nan ? NAN : m;
    }
    case MT_RED_ABSMAX: {
        float m = 0.0f;
        int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
        for (int64_t k = 0; k < n; k++) {
            float a = fabsf(x[k]);
            m = a > m ? a : m;
            nan |= x[k] != x[k];
        }
        return nan ? NAN : m;
    }
    default: MT_CHECK(0);
    }
    return 0;
}

/* acc[j] <- acc[j] (op) x[j], j < n (one row of loop shape B). */
static inline void row_accumulate(mt_reduce_op op, double *acc, const float *x, int64_t n) {
    switch (op) {
    case MT_RED_SUM:
#pragma omp simd
        for (int64_t j = 0; j < n; j++) acc[j] += (double)x[j];
        break;
    case MT_RED_SUMSQ:
#pragma omp simd
        for (int64_t j = 0; j < n; j++) acc[j] += (double)x[j] * (double)x[j];
        break;
    case MT_RED_MAX:
        for (int64_t j = 0; j < n; j++) acc[j] = pick_max_d(acc[j], x[j]);
        break;
    case MT_RED_MIN:
        for (int64_t j = 0; j < n; j++) acc[j] = pick_min_d(acc[j], x[j]);
        break;
    default:
        for (int64_t j = 0; j < n; j++) acc[j] = pick_max_d(acc[j], fabsf(x[j]));
        break;
    }
}

/* Odometer over n dims (outer to inner) tracking an element offset. */
typedef struct {
    int n;
    int64_t idx[MT_MAX_DIMS];
    const int64_t *size, *stride;
    int64_t off;
} odometer;

static inline void odo_set(odometer *o, int n, const int64_t *size, const int64_t *stride,
                           int64_t flat) {
    o->n = n;
    o->size = size;
    o->stride = stride;
    o->off = 0;
    for (int g = n - 1; g >= 0; g--) {
        o->idx[g] = flat % size[g];
        flat /= size[g];
        o->off += o->idx[g] * stride[g];
    }
}

static inline void odo_next(odometer *o) {
    for (int g = o->n - 1; g >= 0; g--) {
        o->idx[g]++;
        o->off += o->stride[g];
        if (o->idx[g] < o->size[g]) return;
        o->off -= o->idx[g] * o->stride[g];
        o->idx[g] = 0;
    }
}

static inline int64_t flat_offset(int n, const int64_t *size, const int64_t *stride, int64_t flat) {
    int64_t off = 0;
    for (int g = n - 1; g >= 0; g--) {
        off += (flat % size[g]) * stride[g];
        flat /= size[g];
    }
    return off;
}


static inline float finish(double v) { return (float)v; }

/* Loop shape A: innermost group reduced. */
static void reduce_inner(mt_reduce_op op, float *y, const float *x, const mt_reduce_plan *p,
                         int64_t numel) {
    int64_t L = p->rs[p->nr - 1];
    int nrow = p->nr - 1; /* reduced groups outside the contiguous run */
    int64_t rows = 1, O = 1;
    for (int g = 0; g < nrow; g++) rows *= p->rs[g];
    for (int g = 0; g < p->nk; g++) O *= p->ks[g];
    int64_t T = rows * L;
    int64_t nc = (T + CH - 1) / CH;
    int64_t U = O * nc;
    double *part = nc > 1 ? malloc(sizeof(double) * (size_t)U) : NULL;
    MT_CHECK(nc == 1 || part);
    double ident = red_identity(op);
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
    for (int64_t u = 0; u < U; u++) {
        int64_t o = u / nc, c = u % nc;
        int64_t base = flat_offset(p->nk, p->ks, p->kst, o);
        int64_t pos = c * CH, end = pos + CH < T ? pos + CH : T;
        double acc = ident;
        odometer rw;
        int64_t r = pos / L, j = pos % L;
        odo_set(&rw, nrow, p->rs, p->rst, r);
        while (pos < end) {
            int64_t n = L - j < end - pos ? L - j : end - pos;
            acc = red_combine(op, acc, seg_reduce(op, x + base + rw.off + j, n));
            pos += n;
            j = 0;
            odo_next(&rw);
        }
        if (nc == 1)
            y[o] = finish(acc);
        else
            part[u] = acc;
    }
    if (nc > 1) {
#pragma omp parallel for if (O > 4096) schedule(static)
        for (int64_t o = 0; o < O; o++) {
            double acc = part[o * nc];
            for (int64_t c = 1; c < nc; c++) acc = red_combine(op, acc, part[o * nc + c]);
            y[o] = finish(acc);
        }
        free(part);
    }
}

/* Loop shape B: innermost group kept. */
static void reduce_outer(mt_reduce_op op, float *y, const float *x, const mt_reduce_plan *p,
                         int64_t numel) {
    int64_t L = p->ks[p->nk - 1];
    int nko = p->nk - 1;
    int64_t Oo = 1, rows = 1;
    for (int g = 0; g < nko; g++) Oo *= p->ks[g];
    for (int g = 0; g < p->nr; g++) rows *= p->rs[g];
    int64_t jb = L < JB ? L : JB;
    int64_t nb = (L + jb - 1) / jb;
    int64_t rc = CH / jb > 0 ? CH / jb : 1; /* rows per unit */
    int64_t nc = (rows + rc - 1) / rc;
    int64_t U = Oo * nb * nc;
    double *part = nc > 1 ? malloc(sizeof(double) * (size_t)(Oo * L * nc)) : NULL;
    MT_CHECK(nc == 1 || part);
    double ident = red_identity(op);
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
    for (int64_t u = 0; u < U; u++) {
        int64_t c = u % nc, b = (u / nc) % nb, o = u / (nc * nb);
        int64_t j0 = b * jb, jl = L - j0 < jb ? L - j0 : jb;
        int64_t base = flat_offset(nko, p->ks, p->kst, o) + j0;
        double acc[JB];
        for (int64_t j = 0; j < jl; j++) acc[j] = ident;
        int64_t r0 = c * rc, r1 = r0 + rc < rows ? r0 + rc : rows;
        odometer rw;
        odo_set(&rw, p->nr, p->rs, p->rst, r0);
        for (int64_t r = r0; r < r1; r++) {
            row_accumulate(op, acc, x + base + rw.off, jl);
            odo_next(&rw);
        }
        float *yo = y + o * L + j0;
        if (nc == 1) {
            for (int64_t j = 0; j < jl; j++) yo[j] = finish(acc[j]);
        } else {
            double *po = part + (o * L + j0) * nc + c;
            for (int64_t j = 0; j < jl; j++) po[j * nc] = acc[j];
        }
    }
    if (nc > 1) {
        int64_t O = Oo * L;
#pragma omp parallel for if (O > 4096) schedule(static)
        for (int64_t o = 0; o < O; o++) {
            double acc = part[o * nc];
            for (int64_t c = 1; c < nc; c++) acc = red_combine(op, acc, part[o * nc + c]);
            y[o] = finish(acc);
        }
        free(part);
    }
}

void mt_cpu_reduce(mt_reduce_op op, mt_tensor *out, const mt_tensor *in) {
    if (in->dtype == MT_BF16 || out->dtype == MT_BF16) {
        /* in bf16, out f32 or bf16: the f32 reduction of the widened input,
         * a bf16 output rounded once (core/cpu/bf16.c) */
        MT_CHECK_MSG(in->dtype == MT_BF16 && (out->dtype == MT_F32 || out->dtype == MT_BF16),
                     "kernel 'reduce' on cpu does not support dtype %s to %s (in f32|bf16, out "
                     "f32 or the input's dtype)",
                     mt_dtype_name(in->dtype), mt_dtype_name(out->dtype));
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x = mt_cpu_bf16_in(&c, in);
        mt_cpu_reduce(op, mt_cpu_bf16_out(&c, out, 0), x);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("reduce", out, MT_F32);
    MT_KERNEL_DTYPE_CHECK("reduce", in, MT_F32);
    MT_CHECK_MSG(op >= 0 && op < MT_NUM_REDUCE_OPS, "reduce: bad op %d", (int)op);
    mt_reduce_check_shapes(out, in);
    int64_t n_out = mt_tensor_numel(out), numel = mt_tensor_numel(in);
    if (n_out == 0) return;
    float *y = MT_F32P(out);
    const float *x = MT_F32P(in);
    if (numel == 0) { /* reduction over an empty dim: the identity */
        float v = (float)red_identity(op);
        for (int64_t i = 0; i < n_out; i++) y[i] = v;
        return;
    }
    mt_reduce_plan p;
    mt_reduce_plan_init(&p, out, in);
    if (p.nr == 0) { /* nothing reduced: out has in's layout */
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < numel; i++) {
            float v = x[i];
            y[i] = op == MT_RED_SUMSQ ? v * v : op == MT_RED_ABSMAX ? fabsf(v) : v;
        }
        return;
    }
    if (p.last_reduced)
        reduce_inner(op, y, x, &p, numel);
    else
        reduce_outer(op, y, x, &p, numel);
}

/* ------------------------------------------------------------ softmax */

/* exp(x) for x <= 0 (Cephes polynomial, ~2 ulp; 0 below -87.3; NaN stays
 * NaN); vectorises. */
static inline float exp_nonpos(float x) {
    float xc = x > -87.0f ? (x < 0.0f ? x : 0.0f) : -87.0f; /* NaN -> -87 */
    float n = rintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    return x != x ? x : (x < -87.3f ? 0.0f : e);
}

/* log(x) for x >= 1 (a softmax denominator; Cephes polynomial, ~1 ulp);
 * NaN stays NaN; vectorises. */
static inline float log_ge1(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    float e = (float)(((bits >> 23) & 0xff) - 127);
    bits = (bits & 0x007fffff) | 0x3f800000; /* mantissa in [1, 2) */
    float m;
    memcpy(&m, &bits, sizeof m);
    int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e = big ? e + 1.0f : e;
    float f = m - 1.0f, z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    float r = f + y + 0.693359375f * e;
    return x != x ? x : r;
}

/* The exp loops write floats and the double accumulation runs as a separate
 * loop: GCC does not vectorise exp_nonpos and a double reduction together. */
static void softmax_row(float *y, const float *x, int64_t n, int use_log) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    if (use_log) {
        float tmp[IB];
        for (int64_t i0 = 0; i0 < n; i0 += IB) {
            int64_t len = n - i0 < IB ? n - i0 : IB;
#pragma omp simd
            for (int64_t k = 0; k < len; k++) tmp[k] = exp_nonpos(x[i0 + k] - mx);
            s += seg_reduce(MT_RED_SUM, tmp, len);
        }
        float ls = (float)((double)mx + log(s));
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = x[j] - ls;
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = exp_nonpos(x[i] - mx);
        s = seg_reduce(MT_RED_SUM, y, n);
        float inv = (float)(1.0 / s);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] *= inv;
    }
}

/* jl columns (stride between channels: st) of an (n, inner) block. */
static void softmax_cols(float *y, const float *x, int64_t n, int64_t st, int64_t jl, int use_log) {
    float m[IB], tmp[IB];
    double s[IB];
    for (int64_t j = 0; j < jl; j++) {
        m[j] = x[j];
        s[j] = 0;
    }
    for (int64_t c = 1; c < n; c++) {
        const float *xc = x + c * st;
#pragma omp simd
        for (int64_t j = 0; j < jl; j++) m[j] = xc[j] > m[j] ? xc[j] : m[j];
    }
    for (int64_t c = 0; c < n; c++) {
        const float *xc = x + c * st;
        float *e = use_log ? tmp : y + c * st;
#pragma omp simd
        for (int64_t j = 0; j < jl; j++) e[j] = exp_nonpos(xc[j] - m[j]);
#pragma omp simd
        for (int64_t j = 0; j < jl; j++) s[j] += (double)e[j];
    }
    if (use_log) {
        for (int64_t j = 0; j < jl; j++) tmp[j] = (float)s[j];
#pragma omp simd
        for (int64_t j = 0; j < jl; j++) m[j] += log_ge1(tmp[j]);
        for (int64_t c = 0; c < n; c++) {
            const float *xc = x + c * st;
            float *yc = y + c * st;
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) yc[j] = xc[j] - m[j];
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < jl; j++) m[j] = (float)(1.0 / s[j]);
        for (int64_t c = 0; c < n; c++) {
            float *yc = y + c * st;
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) yc[j] *= m[j];
        }
    }
}

/* (outer, n, inner) decomposition of t around dim. */
static void softmax_dims(const mt_tensor *t, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    *n = t->ndim ? t->shape[dim] : 1;
    for (int d = 0; d < dim; d++) *outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

void mt_cpu_softmax(mt_tensor *out, const mt_tensor *in, int dim, int use_log) {
    if (out->dtype == MT_BF16 || in->dtype == MT_BF16) { /* core/cpu/bf16.c */
        MT_CPU_CHECK_FLOAT_SAME("softmax", out, in);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x = mt_cpu_bf16_in(&c, in);
        mt_cpu_softmax(mt_cpu_bf16_out(&c, out, 0), x, dim, use_log);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("softmax", out, MT_F32);
    MT_KERNEL_DTYPE_CHECK("softmax", in, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in) &&
                     mt_tensor_same_shape(out, in),
                 "softmax: tensors must be contiguous and of one shape");
    dim = mt_tensor_dim(in, dim);
    int64_t outer, n, inner, numel = mt_tensor_numel(in);
    if (numel == 0) return;
    softmax_dims(in, dim, &outer, &n, &inner);
    float *y = MT_F32P(out);
    const float *x = MT_F32P(in);
    if (inner == 1) {
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++) softmax_row(y + o * n, x + o * n, n, use_log);
        return;
    }
    int64_t nb = (inner + IB - 1) / IB;
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
    for (int64_t u = 0; u < outer * nb; u++) {
        int64_t o = u / nb, j0 = (u % nb) * IB;
        int64_t jl = inner - j0 < IB ? inner - j0 : IB;
        int64_t off = o * n * inner + j0;
        softmax_cols(y + off, x + off, n, inner, jl, use_log);
    }
}

static void softmax_bwd_row(float *gi, const float *go, const float *y, int64_t n, int use_log) {
    double acc[LANES] = {0};
    int64_t i = 0;
    if (use_log) {
        for (; i + LANES <= n; i += LANES)
            for (int k = 0; k < LANES; k++) acc[k] += go[i + k];
        for (; i < n; i++) acc[0] += go[i];
    } else {
        for (; i + LANES <= n; i += LANES)
            for (int k = 0; k < LANES; k++) acc[k] += (double)go[i + k] * y[i + k];
        for (; i < n; i++) acc[0] += (double)go[i] * y[i];
    }
    double s = 0;
    for (int k = 0; k < LANES; k++) s += acc[k];
    float sf = (float)s;
    if (use_log) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) gi[j] = go[j] - exp_nonpos(y[j]) * sf;
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) gi[j] = y[j] * (go[j] - sf);
    }
}

static void softmax_bwd_cols(float *gi, const float *go, const float *y, int64_t n, int64_t st,
                             int64_t jl, int use_log) {
    double s[IB];
    float sf[IB];
    for (int64_t j = 0; j < jl; j++) s[j] = 0;
    for (int64_t c = 0; c < n; c++) {
        const float *gc = go + c * st, *yc = y + c * st;
        if (use_log) {
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) s[j] += gc[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) s[j] += (double)gc[j] * yc[j];
        }
    }
    for (int64_t j = 0; j < jl; j++) sf[j] = (float)s[j];
    for (int64_t c = 0; c < n; c++) {
        const float *gc = go + c * st, *yc = y + c * st;
        float *ic = gi + c * st;
        if (use_log) {
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) ic[j] = gc[j] - exp_nonpos(yc[j]) * sf[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < jl; j++) ic[j] = yc[j] * (gc[j] - sf[j]);
        }
    }
}

void mt_cpu_softmax_backward(mt_tensor *grad_in, const mt_tensor *grad_out, const mt_tensor *out,
                             int dim, int use_log) {
    if (grad_in->dtype == MT_BF16 || grad_out->dtype == MT_BF16 || out->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME("softmax_backward", grad_in, grad_out, out);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *g = mt_cpu_bf16_in(&c, grad_out), *y = mt_cpu_bf16_in(&c, out);
        mt_cpu_softmax_backward(mt_cpu_bf16_out(&c, grad_in, 0), g, y, dim, use_log);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("softmax_backward", grad_in, MT_F32);
    MT_KERNEL_DTYPE_CHECK("softmax_backward", grad_out, MT_F32);
    MT_KERNEL_DTYPE_CHECK("softmax_backward", out, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(grad_in) && mt_tensor_is_contiguous(grad_out) &&
                     mt_tensor_is_contiguous(out) && mt_tensor_same_shape(grad_in, out) &&
                     mt_tensor_same_shape(grad_out, out),
                 "softmax_backward: tensors must be contiguous and of one shape");
    dim = mt_tensor_dim(out, dim);
    int64_t outer, n, inner, numel = mt_tensor_numel(out);
    if (numel == 0) return;
    softmax_dims(out, dim, &outer, &n, &inner);
    float *gi = MT_F32P(grad_in);
    const float *go = MT_F32P(grad_out), *y = MT_F32P(out);
    if (inner == 1) {
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++)
            softmax_bwd_row(gi + o * n, go + o * n, y + o * n, n, use_log);
        return;
    }
    int64_t nb = (inner + IB - 1) / IB;
#pragma omp parallel for if (numel > PAR_MIN) schedule(static)
    for (int64_t u = 0; u < outer * nb; u++) {
        int64_t o = u / nb, j0 = (u % nb) * IB;
        int64_t jl = inner - j0 < IB ? inner - j0 : IB;
        int64_t off = o * n * inner + j0;
        softmax_bwd_cols(gi + off, go + off, y + off, n, inner, jl, use_log);
    }
}
