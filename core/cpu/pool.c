/* CPU pooling and resampling kernels: max/avg pool 3D and trilinear
 * resampling, forward and backward. Contracts: core/backend.h.
 * All tensors are contiguous f32 (indices i32) of shape (N, C, D, H, W);
 * backward kernels write (=) dx. bf16 x / y / dx / dy: the f32 kernel on f32
 * copies of the bf16 inputs, outputs rounded once to bf16 (the adapter of
 * core/cpu/bf16.c).
 *
 * Semantics follow PyTorch (floor mode, no dilation):
 *  - max pool: padding acts as -inf (padded positions are never selected);
 *    ties keep the first maximum in (d, h, w) scan order; a NaN wins.
 *    indices hold the flat position d*H*W + h*W + w in the (n, c) plane.
 *  - avg pool: sum over the in-bounds part of the window divided by the window
 *    size clipped to the padded input (count_include_pad) or by the number of
 *    in-bounds elements (otherwise).
 *  - trilinear: F.interpolate(mode='trilinear'); source index
 *    align_corners ? o * (in-1)/(out-1) : max(0, (o + 0.5) * in/out - 0.5)
 *    with the scale in f32 as PyTorch computes it (scale = in/out, i.e. an
 *    explicit output size, not a scale_factor); an axis whose size does not
 *    change is copied. Forward and backward are separable per axis.
 *
 * Parallelism: one task per output row (n, c, od, oh) or output slice for
 * forward passes, per input row / slice (gather form) or (n, c) plane for
 * backward passes, so no two threads write the same element and results do
 * not depend on the thread count.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_kernels.h"
#include "core/kernel_plan.h"

#define PAR_MIN 32768 /* below this many elements, stay on one thread */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    MT_CHECK_MSG(p, "pool: out of host memory (%zu bytes)", n);
    return p;
}

typedef struct {
    int64_t n, c, d, h, w;
} dims5;

static dims5 dims_of(const char *op, const mt_tensor *t) {
    MT_CHECK_MSG(t->ndim == 5, "%s: expected a 5-D tensor (N, C, D, H, W), got %d dims", op, t->ndim);
    MT_CHECK_MSG(mt_tensor_is_contiguous(t), "%s: expected a contiguous tensor", op);
    dims5 s = {t->shape[0], t->shape[1], t->shape[2], t->shape[3], t->shape[4]};
    return s;
}

/* Window of output o along one axis: in-bounds [lo, hi) and the divisor factor. */
typedef struct {
    int64_t lo, hi;
    int64_t fac; /* avg pool divisor factor for this axis */
} win;

static void windows(win *t, int64_t in, int64_t out, int k, int s, int pad, int include_pad) {
    for (int64_t o = 0; o < out; o++) {
        int64_t start = o * s - pad, end = start + k;
        int64_t end_pad = end < in + pad ? end : in + pad;
        int64_t pool = end_pad - start;
        int64_t lo = start > 0 ? start : 0, hi = end < in ? end : in;
        t[o].lo = lo;
        t[o].hi = hi;
        t[o].fac = include_pad ? pool : (hi - lo);
    }
}

/* Outputs covering input i along one axis: [olo, ohi). */
typedef struct {
    int64_t olo, ohi;
} cover;

static void covers(cover *cv, const win *t, int64_t in, int64_t out) {
    for (int64_t i = 0; i < in; i++) {
        cv[i].olo = out;
        cv[i].ohi = 0;
    }
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = t[o].lo; i < t[o].hi; i++) {
            if (o < cv[i].olo) cv[i].olo = o;
            if (o + 1 > cv[i].ohi) cv[i].ohi = o + 1;
        }
}

/* ------------------------------------------------------------- max pool */

void mt_cpu_max_pool3d_forward(mt_tensor *y, mt_tensor *indices, const mt_tensor *x,
                               const mt_pool_params *p) {
    const char *op = "max_pool3d_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_max_pool3d_forward(mt_cpu_bf16_out(&c, y, 0), indices, x32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, x, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, y, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, indices, MT_I32);
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    MT_CHECK_MSG(i.d * i.h * i.w <= INT32_MAX, "%s: spatial volume too large for i32 indices", op);
    MT_CHECK_MSG(mt_tensor_numel(indices) == mt_tensor_numel(y), "%s: indices shape", op);
    win *wd = xmalloc(sizeof(win) * (size_t)(o.d + o.h + o.w)), *wh = wd + o.d, *ww = wh + o.h;
    windows(wd, i.d, o.d, p->kernel[0], p->stride[0], p->padding[0], 1);
    windows(wh, i.h, o.h, p->kernel[1], p->stride[1], p->padding[1], 1);
    windows(ww, i.w, o.w, p->kernel[2], p->stride[2], p->padding[2], 1);
    const float *xp = MT_F32P(x);
    float *yp = MT_F32P(y);
    int32_t *ip = (int32_t *)mt_tensor_data(indices);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    int64_t tasks = planes * o.d * o.h;
    int pair_w = p->kernel[2] == 2 && p->stride[2] == 2 && p->padding[2] == 0;
    /* One task per output row (n, c, od, oh): the window's input rows are
     * scanned in (d, h) order and, within a row, w ascending, which is the
     * (d, h, w) scan order of each output. */
#pragma omp parallel for schedule(static) if (planes * osz * 8 > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t pl = t / (o.d * o.h), od = (t / o.h) % o.d, oh = t % o.h;
        const float *xpl = xp + pl * isz;
        float *yr = yp + pl * osz + (od * o.h + oh) * o.w;
        int32_t *ir = ip + pl * osz + (od * o.h + oh) * o.w;
        int64_t first = (wd[od].lo * i.h + wh[oh].lo) * i.w;
        for (int64_t ow = 0; ow < o.w; ow++) {
            yr[ow] = -INFINITY;
            ir[ow] = (int32_t)(first + ww[ow].lo);
        }
        for (int64_t d = wd[od].lo; d < wd[od].hi; d++)
            for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++) {
                int64_t base = (d * i.h + h) * i.w;
                const float *r = xpl + base;
                if (pair_w) {
                    /* kernel 2, stride 2, no padding along w (the U-Net case) */
                    for (int64_t ow = 0; ow < o.w; ow++) {
                        float a = r[2 * ow], b = r[2 * ow + 1], best = yr[ow];
                        int32_t bi = ir[ow];
                        int ta = a > best || isnan(a);
                        best = ta ? a : best;
                        bi = ta ? (int32_t)(base + 2 * ow) : bi;
                        int tb = b > best || isnan(b);
                        yr[ow] = tb ? b : best;
                        ir[ow] = tb ? (int32_t)(base + 2 * ow + 1) : bi;
                    }
                    continue;
                }
                for (int64_t ow = 0; ow < o.w; ow++) {
                    float best = yr[ow];
                    int32_t bi = ir[ow];
                    for (int64_t w = ww[ow].lo; w < ww[ow].hi; w++) {
                        float v = r[w];
                        int tk = v > best || isnan(v);
                        best = tk ? v : best;
                        bi = tk ? (int32_t)(base + w) : bi;
                    }
                    yr[ow] = best;
                    ir[ow] = bi;
                }
            }
    }
    free(wd);
}

void mt_cpu_max_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *indices) {
    const char *op = "max_pool3d_backward";
    if (dx->dtype == MT_BF16 || dy->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy);
        mt_cpu_max_pool3d_backward(mt_cpu_bf16_out(&c, dx, 0), dy32, indices);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, dx, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, dy, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, indices, MT_I32);
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    MT_CHECK_MSG(mt_tensor_numel(indices) == mt_tensor_numel(dy), "%s: indices shape", op);
    float *dxp = MT_F32P(dx);
    const float *gp = MT_F32P(dy);
    const int32_t *ip = (const int32_t *)mt_tensor_data(indices);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    /* Scatter within each (n, c) plane: planes are independent. */
#pragma omp parallel for schedule(static) if (planes * (isz + osz) > PAR_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *d = dxp + pl * isz;
        const float *g = gp + pl * osz;
        const int32_t *ix = ip + pl * osz;
        memset(d, 0, sizeof(float) * (size_t)isz);
        for (int64_t k = 0; k < osz; k++) {
            MT_CHECK_MSG(ix[k] >= 0 && ix[k] < isz, "%s: index %d outside the input plane", op,
                         (int)ix[k]);
            d[ix[k]] += g[k];
        }
    }
}

/* ------------------------------------------------------------- avg pool */

void mt_cpu_avg_pool3d_forward(mt_tensor *y, const mt_tensor *x, const mt_pool_params *p) {
    const char *op = "avg_pool3d_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_avg_pool3d_forward(mt_cpu_bf16_out(&c, y, 0), x32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, x, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, y, MT_F32);
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    int inc = p->count_include_pad;
    win *wd = xmalloc(sizeof(win) * (size_t)(o.d + o.h + o.w)), *wh = wd + o.d, *ww = wh + o.h;
    windows(wd, i.d, o.d, p->kernel[0], p->stride[0], p->padding[0], inc);
    windows(wh, i.h, o.h, p->kernel[1], p->stride[1], p->padding[1], inc);
    windows(ww, i.w, o.w, p->kernel[2], p->stride[2], p->padding[2], inc);
    const float *xp = MT_F32P(x);
    float *yp = MT_F32P(y);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    int64_t tasks = planes * o.d * o.h;
    int pair_w = p->kernel[2] == 2 && p->stride[2] == 2 && p->padding[2] == 0;
    /* One task per output row; window rows are summed into it, then divided. */
#pragma omp parallel for schedule(static) if (planes * osz * 8 > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t pl = t / (o.d * o.h), od = (t / o.h) % o.d, oh = t % o.h;
        const float *xpl = xp + pl * isz;
        float *yr = yp + pl * osz + (od * o.h + oh) * o.w;
        for (int64_t ow = 0; ow < o.w; ow++) yr[ow] = 0.0f;
        for (int64_t d = wd[od].lo; d < wd[od].hi; d++)
            for (int64_t h = wh[oh].lo; h < wh[oh].hi; h++) {
                const float *r = xpl + (d * i.h + h) * i.w;
                if (pair_w) {
                    for (int64_t ow = 0; ow < o.w; ow++) yr[ow] += r[2 * ow] + r[2 * ow + 1];
                    continue;
                }
                for (int64_t ow = 0; ow < o.w; ow++) {
                    float s = 0;
                    for (int64_t w = ww[ow].lo; w < ww[ow].hi; w++) s += r[w];
                    yr[ow] += s;
                }
            }
        int64_t f = wd[od].fac * wh[oh].fac;
        for (int64_t ow = 0; ow < o.w; ow++) {
            int64_t div = f * ww[ow].fac;
            yr[ow] = div > 0 ? yr[ow] / (float)div : 0.0f;
        }
    }
    free(wd);
}

void mt_cpu_avg_pool3d_backward(mt_tensor *dx, const mt_tensor *dy, const mt_pool_params *p) {
    const char *op = "avg_pool3d_backward";
    if (dx->dtype == MT_BF16 || dy->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy);
        mt_cpu_avg_pool3d_backward(mt_cpu_bf16_out(&c, dx, 0), dy32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, dx, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, dy, MT_F32);
    mt_pool_check_params(op, p);
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    int inc = p->count_include_pad;
    win *wd = xmalloc(sizeof(win) * (size_t)(o.d + o.h + o.w)), *wh = wd + o.d, *ww = wh + o.h;
    windows(wd, i.d, o.d, p->kernel[0], p->stride[0], p->padding[0], inc);
    windows(wh, i.h, o.h, p->kernel[1], p->stride[1], p->padding[1], inc);
    windows(ww, i.w, o.w, p->kernel[2], p->stride[2], p->padding[2], inc);
    cover *cd = xmalloc(sizeof(cover) * (size_t)(i.d + i.h)), *ch = cd + i.d;
    covers(cd, wd, i.d, o.d);
    covers(ch, wh, i.h, o.h);
    float *dxp = MT_F32P(dx);
    const float *gp = MT_F32P(dy);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    int64_t tasks = planes * i.d * i.h;
    int pair_w = p->kernel[2] == 2 && p->stride[2] == 2 && p->padding[2] == 0;
    /* One task per input row (n, c, id, ih): it gathers the output rows whose
     * window covers it and scatters each dy / divisor along w, so no two tasks
     * write the same element. */
#pragma omp parallel for schedule(static) if (planes * isz * 8 > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t pl = t / (i.d * i.h), id = (t / i.h) % i.d, ih = t % i.h;
        const float *g = gp + pl * osz;
        float *dr = dxp + pl * isz + (id * i.h + ih) * i.w;
        for (int64_t iw = 0; iw < i.w; iw++) dr[iw] = 0.0f;
        for (int64_t od = cd[id].olo; od < cd[id].ohi; od++)
            for (int64_t oh = ch[ih].olo; oh < ch[ih].ohi; oh++) {
                const float *gr = g + (od * o.h + oh) * o.w;
                int64_t f = wd[od].fac * wh[oh].fac;
                if (pair_w) {
                    float div_w = (float)(f * 2);
                    for (int64_t ow = 0; ow < o.w; ow++) {
                        float v = gr[ow] / div_w;
                        dr[2 * ow] += v;
                        dr[2 * ow + 1] += v;
                    }
                    continue;
                }
                for (int64_t ow = 0; ow < o.w; ow++) {
                    float v = gr[ow] / (float)(f * ww[ow].fac);
                    for (int64_t w = ww[ow].lo; w < ww[ow].hi; w++) dr[w] += v;
                }
            }
    }
    free(cd);
    free(wd);
}

/* ------------------------------------------------------------ trilinear */

/* Linear interpolation taps along one axis for output o. */
typedef struct {
    int64_t i0, i1;
    float l0, l1;
} tap;

static void linear_taps(tap *t, int64_t in, int64_t out, int align_corners) {
    if (in == out) {
        for (int64_t o = 0; o < out; o++) {
            t[o].i0 = t[o].i1 = o;
            t[o].l0 = 1.0f;
            t[o].l1 = 0.0f;
        }
        return;
    }
    float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f)
                                : (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        float src;
        if (align_corners) {
            src = scale * (float)o;
        } else {
            /* as PyTorch: f32 scale, (o + 0.5) in double, rounded to f32 */
            src = (float)((double)scale * ((double)o + 0.5) - 0.5);
            if (src < 0) src = 0;
        }
        int64_t i0 = (int64_t)floorf(src);
        if (i0 > in - 1) i0 = in - 1;
        float l1 = src - (float)i0;
        l1 = l1 < 0 ? 0 : (l1 > 1 ? 1 : l1);
        t[o].i0 = i0;
        t[o].i1 = i0 + (i0 < in - 1 ? 1 : 0);
        t[o].l1 = l1;
        t[o].l0 = 1.0f - l1;
    }
}

/* Interpolates one input depth slice xs (H, W) in (h, w) into out (oH, oW):
 * along w into rows[h] (oW) for the rows h that are used, then along h. */
static void interp_slice(float *out, float *rows, const float *xs, const dims5 *i, const dims5 *o,
                         const tap *th, const tap *tw, const unsigned char *row_used) {
    for (int64_t h = 0; h < i->h; h++) {
        if (!row_used[h]) continue;
        const float *r = xs + h * i->w;
        float *a = rows + h * o->w;
        for (int64_t ow = 0; ow < o->w; ow++)
            a[ow] = tw[ow].l0 * r[tw[ow].i0] + tw[ow].l1 * r[tw[ow].i1];
    }
    for (int64_t oh = 0; oh < o->h; oh++) {
        const float *a0 = rows + th[oh].i0 * o->w, *a1 = rows + th[oh].i1 * o->w;
        float l0 = th[oh].l0, l1 = th[oh].l1;
        float *orow = out + oh * o->w;
#pragma omp simd
        for (int64_t ow = 0; ow < o->w; ow++) orow[ow] = l0 * a0[ow] + l1 * a1[ow];
    }
}

void mt_cpu_upsample_trilinear_forward(mt_tensor *y, const mt_tensor *x, int align_corners) {
    const char *op = "upsample_trilinear_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_upsample_trilinear_forward(mt_cpu_bf16_out(&c, y, 0), x32, align_corners);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, x, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, y, MT_F32);
    dims5 i = dims_of(op, x), o = dims_of(op, y);
    MT_CHECK_MSG(i.n == o.n && i.c == o.c, "%s: batch/channel mismatch", op);
    tap *td = xmalloc(sizeof(tap) * (size_t)(o.d + o.h + o.w)), *th = td + o.d, *tw = th + o.h;
    linear_taps(td, i.d, o.d, align_corners);
    linear_taps(th, i.h, o.h, align_corners);
    linear_taps(tw, i.w, o.w, align_corners);
    unsigned char *row_used = calloc((size_t)(i.h ? i.h : 1), 1);
    MT_CHECK(row_used);
    for (int64_t oh = 0; oh < o.h; oh++) row_used[th[oh].i0] = row_used[th[oh].i1] = 1;
    const float *xp = MT_F32P(x);
    float *yp = MT_F32P(y);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w, HW = i.h * i.w;
    int64_t tasks = planes * o.d, oHW = o.h * o.w;
    /* Separable: each output depth slice blends two input depth slices that are
     * interpolated in (h, w) first; the expression per output is
     * ld0 (lh0 (lw0 x + lw1 x) + lh1 (...)) + ld1 (...), as PyTorch nests it.
     * Each thread keeps its last two interpolated slices, which consecutive
     * output slices share when upsampling. */
#pragma omp parallel if (planes * osz * 4 > PAR_MIN)
    {
        float *rows = xmalloc(sizeof(float) * (size_t)(i.h * o.w));
        float *slab = xmalloc(sizeof(float) * 2 * (size_t)oHW);
        int64_t tag[2] = {-1, -1}; /* pl * D + d of each cached slice */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            int64_t pl = t / o.d, od = t % o.d;
            int64_t want[2] = {pl * i.d + td[od].i0, pl * i.d + td[od].i1};
            const float *sl[2];
            for (int k = 0; k < 2; k++) {
                int at = tag[0] == want[k] ? 0 : (tag[1] == want[k] ? 1 : -1);
                if (at < 0) {
                    /* evict the slot the other source does not use */
                    int other = k == 0 ? (tag[0] == want[1] ? 0 : (tag[1] == want[1] ? 1 : -1)) : -1;
                    if (k == 1) other = sl[0] == slab ? 0 : 1;
                    at = other == 0 ? 1 : 0;
                    interp_slice(slab + at * oHW, rows, xp + pl * isz + (want[k] - pl * i.d) * HW,
                                 &i, &o, th, tw, row_used);
                    tag[at] = want[k];
                }
                sl[k] = slab + at * oHW;
            }
            float l0 = td[od].l0, l1 = td[od].l1;
            float *yr = yp + pl * osz + od * oHW;
            const float *s0 = sl[0], *s1 = sl[1];
#pragma omp simd
            for (int64_t k = 0; k < oHW; k++) yr[k] = l0 * s0[k] + l1 * s1[k];
        }
        free(rows);
        free(slab);
    }
    free(row_used);
    free(td);
}

/* The transpose of linear interpolation along one axis, as sparse rows: input
 * k receives weight wt[e] from output idx[e] for e in [ptr[k], ptr[k + 1]). */
typedef struct {
    int64_t *ptr, *idx;
    float *wt;
} adj1d;

static adj1d adj_build(const tap *t, int64_t in, int64_t out) {
    adj1d a;
    a.ptr = xmalloc(sizeof(int64_t) * (size_t)(in + 1 + 2 * out));
    a.idx = a.ptr + in + 1;
    a.wt = xmalloc(sizeof(float) * (size_t)(2 * out + 1));
    for (int64_t k = 0; k <= in; k++) a.ptr[k] = 0;
    for (int64_t o = 0; o < out; o++) {
        a.ptr[t[o].i0 + 1]++;
        if (t[o].i1 != t[o].i0) a.ptr[t[o].i1 + 1]++;
    }
    for (int64_t k = 0; k < in; k++) a.ptr[k + 1] += a.ptr[k];
    int64_t *fill = xmalloc(sizeof(int64_t) * (size_t)(in ? in : 1));
    for (int64_t k = 0; k < in; k++) fill[k] = a.ptr[k];
    for (int64_t o = 0; o < out; o++) { /* outputs ascending within each row */
        int64_t i0 = t[o].i0, i1 = t[o].i1;
        if (i0 == i1) {
            a.idx[fill[i0]] = o;
            a.wt[fill[i0]++] = t[o].l0 + t[o].l1;
        } else {
            a.idx[fill[i0]] = o;
            a.wt[fill[i0]++] = t[o].l0;
            a.idx[fill[i1]] = o;
            a.wt[fill[i1]++] = t[o].l1;
        }
    }
    free(fill);
    return a;
}

static void adj_free(adj1d *a) {
    free(a->ptr);
    free(a->wt);
}

void mt_cpu_upsample_trilinear_backward(mt_tensor *dx, const mt_tensor *dy, int align_corners) {
    const char *op = "upsample_trilinear_backward";
    if (dx->dtype == MT_BF16 || dy->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy);
        mt_cpu_upsample_trilinear_backward(mt_cpu_bf16_out(&c, dx, 0), dy32, align_corners);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK(op, dx, MT_F32);
    MT_KERNEL_DTYPE_CHECK(op, dy, MT_F32);
    dims5 i = dims_of(op, dx), o = dims_of(op, dy);
    MT_CHECK_MSG(i.n == o.n && i.c == o.c, "%s: batch/channel mismatch", op);
    tap *td = xmalloc(sizeof(tap) * (size_t)(o.d + o.h + o.w)), *th = td + o.d, *tw = th + o.h;
    linear_taps(td, i.d, o.d, align_corners);
    linear_taps(th, i.h, o.h, align_corners);
    linear_taps(tw, i.w, o.w, align_corners);
    adj1d ad = adj_build(td, i.d, o.d), ah = adj_build(th, i.h, o.h), aw = adj_build(tw, i.w, o.w);
    const float *gp = MT_F32P(dy);
    float *dxp = MT_F32P(dx);
    int64_t planes = i.n * i.c, isz = i.d * i.h * i.w, osz = o.d * o.h * o.w;
    int64_t tasks = planes * i.d, oHW = o.h * o.w;
    /* Gather form of the separable transpose: for input slice (n, c, id),
     * z = sum_od A_d[od, id] dy[od] (oH, oW), then r = A_h^T z (H, oW), then
     * dx[id] = r A_w (H, W). Each task writes only its own slice. */
#pragma omp parallel if (planes * osz * 4 > PAR_MIN)
    {
        float *z = xmalloc(sizeof(float) * (size_t)oHW);
        float *r = xmalloc(sizeof(float) * (size_t)(i.h * o.w));
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            int64_t pl = t / i.d, id = t % i.d;
            const float *g = gp + pl * osz;
            float *out = dxp + pl * isz + id * i.h * i.w;
            for (int64_t k = 0; k < oHW; k++) z[k] = 0.0f;
            for (int64_t e = ad.ptr[id]; e < ad.ptr[id + 1]; e++) {
                const float *gs = g + ad.idx[e] * oHW;
                float wgt = ad.wt[e];
#pragma omp simd
                for (int64_t k = 0; k < oHW; k++) z[k] += wgt * gs[k];
            }
            for (int64_t h = 0; h < i.h; h++) {
                float *rr = r + h * o.w;
                for (int64_t ow = 0; ow < o.w; ow++) rr[ow] = 0.0f;
                for (int64_t e = ah.ptr[h]; e < ah.ptr[h + 1]; e++) {
                    const float *zs = z + ah.idx[e] * o.w;
                    float wgt = ah.wt[e];
#pragma omp simd
                    for (int64_t ow = 0; ow < o.w; ow++) rr[ow] += wgt * zs[ow];
                }
                float *orow = out + h * i.w;
                for (int64_t w = 0; w < i.w; w++) {
                    float acc = 0.0f;
                    for (int64_t e = aw.ptr[w]; e < aw.ptr[w + 1]; e++) acc += aw.wt[e] * rr[aw.idx[e]];
                    orow[w] = acc;
                }
            }
        }
        free(z);
        free(r);
    }
    adj_free(&ad);
    adj_free(&ah);
    adj_free(&aw);
    free(td);
}
