/* Separable resampling (see data/resample.h for the conventions). */
#include "data/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COL_BLOCK 256          /* inner columns per task */
#define PAR_MIN_WORK 65536     /* below this many output values a pass runs serially */

const char *mt_interp_name(mt_interp order) {
    switch (order) {
    case MT_INTERP_NEAREST: return "nearest";
    case MT_INTERP_LINEAR: return "linear";
    case MT_INTERP_CUBIC: return "cubic";
    }
    return "unknown";
}

void mt_resample_shape(int64_t out_shape[3], const int64_t in_shape[3], const double in_spacing[3],
                       const double out_spacing[3]) {
    for (int a = 0; a < 3; a++) {
        MT_CHECK_MSG(in_spacing[a] > 0 && out_spacing[a] > 0, "resample: spacing must be > 0 (axis %d)", a);
        double v = (double)in_shape[a] * in_spacing[a] / out_spacing[a];
        int64_t m = (int64_t)llround(v);
        out_shape[a] = m < 1 ? 1 : m;
    }
}

double mt_resample_src_coord(double o, int64_t n_in, int64_t n_out) {
    return (o + 0.5) * (double)n_in / (double)n_out - 0.5;
}

void mt_resample_spacing(double out_spacing[3], const double in_spacing[3], const int64_t in_shape[3],
                         const int64_t out_shape[3]) {
    for (int a = 0; a < 3; a++) out_spacing[a] = in_spacing[a] * (double)in_shape[a] / (double)out_shape[a];
}

void mt_resample_affine(double out[4][4], const double in[4][4], const int64_t in_shape[3],
                        const int64_t out_shape[3]) {
    /* NIfTI column c (i, j, k) is tensor axis 2 - c (w, h, d). */
    double s[3], t[3];
    for (int c = 0; c < 3; c++) {
        int a = 2 - c;
        s[c] = (double)in_shape[a] / (double)out_shape[a];
        t[c] = 0.5 * s[c] - 0.5;
    }
    double res[4][4];
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 3; c++) res[r][c] = in[r][c] * s[c];
        res[r][3] = in[r][3];
        for (int c = 0; c < 3; c++) res[r][3] += in[r][c] * t[c];
    }
    memcpy(out, res, sizeof res);
}

/* ------------------------------------------------------------------ taps */

static __attribute__((noinline)) void *xalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    MT_CHECK_MSG(p, "resample: out of memory (%zu bytes)", n);
    return p;
}

typedef struct {
    int k;            /* taps per output: 1, 2 or 4 */
    int64_t *idx;     /* [m * k] */
    double *w;        /* [m * k] */
} taps;

static int64_t mirror_index(int64_t j, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * n - 2;
    if (j < 0) j = -j;
    j %= period;
    if (j >= n) j = period - j;
    return j;
}

static void make_taps(taps *t, int64_t n, int64_t m, mt_interp order) {
    unsigned k = order == MT_INTERP_NEAREST ? 1u : order == MT_INTERP_LINEAR ? 2u : 4u;
    t->k = (int)k;
    MT_CHECK(n >= 1 && m >= 1 && m < ((int64_t)1 << 40));
    size_t cnt = (size_t)m * k;
    t->idx = xalloc(sizeof(int64_t) * cnt);
    t->w = xalloc(sizeof(double) * cnt);
    for (int64_t o = 0; o < m; o++) {
        double x = mt_resample_src_coord((double)o, n, m);
        if (x < 0) x = 0;
        if (x > (double)(n - 1)) x = (double)(n - 1);
        int64_t *ix = t->idx + o * t->k;
        double *w = t->w + o * t->k;
        if (order == MT_INTERP_NEAREST) {
            int64_t i = (int64_t)floor(x + 0.5);
            if (i > n - 1) i = n - 1;
            ix[0] = i;
            w[0] = 1.0;
        } else if (order == MT_INTERP_LINEAR) {
            int64_t i0 = (int64_t)floor(x);
            if (i0 > n - 1) i0 = n - 1;
            int64_t i1 = i0 + 1 < n ? i0 + 1 : n - 1;
            double l1 = x - (double)i0;
            ix[0] = i0;
            ix[1] = i1;
            w[0] = 1.0 - l1;
            w[1] = l1;
        } else {
            int64_t i = (int64_t)floor(x);
            if (i > n - 1) i = n - 1;
            double u = x - (double)i, v = 1.0 - u;
            w[0] = v * v * v / 6.0;
            w[1] = 2.0 / 3.0 - u * u + 0.5 * u * u * u;
            w[2] = 2.0 / 3.0 - v * v + 0.5 * v * v * v;
            w[3] = u * u * u / 6.0;
            for (int q = 0; q < 4; q++) ix[q] = mirror_index(i - 1 + q, n);
        }
    }
}

static void free_taps(taps *t) {
    free(t->idx);
    free(t->w);
}

/* Cubic B-spline prefilter of nb columns (stride B in buf) of n samples
 * each, in place: buf[i * B + k] for i < n, k < nb. Mirror boundaries. */
static void prefilter_cols(double *buf, int64_t n, int64_t B, int64_t nb) {
    if (n < 2) return;
    const double z = sqrt(3.0) - 2.0;
    double c0[COL_BLOCK];
    MT_CHECK(nb >= 1 && nb <= COL_BLOCK);
    /* causal init: c+[0] = (s0 + z^(n-1) s_{n-1} + sum_{i=1}^{n-2} (z^i + z^(2n-2-i)) s_i) / (1 - z^(2n-2)) */
    double zn1 = pow(z, (double)(n - 1));
    double z2n2 = zn1 * zn1;
    for (int64_t k = 0; k < nb; k++) c0[k] = buf[k] + zn1 * buf[(n - 1) * B + k];
    double zi = z;
    for (int64_t i = 1; i <= n - 2; i++) {
        double wgt = zi + pow(z, (double)(2 * n - 2 - i));
        const double *row = buf + i * B;
        for (int64_t k = 0; k < nb; k++) c0[k] += wgt * row[k];
        zi *= z;
        if (fabs(zi) < 1e-300) zi = 0;
    }
    for (int64_t k = 0; k < nb; k++) buf[k] = c0[k] / (1.0 - z2n2);
    for (int64_t i = 1; i < n; i++) {
        double *row = buf + i * B;
        const double *prev = row - B;
        for (int64_t k = 0; k < nb; k++) row[k] += z * prev[k];
    }
    /* anticausal: c-[n-1] = z / (z^2 - 1) (c+[n-1] + z c+[n-2]); c-[i] = z (c-[i+1] - c+[i]) */
    double *last = buf + (n - 1) * B, *before = buf + (n - 2) * B;
    double g = z / (z * z - 1.0);
    for (int64_t k = 0; k < nb; k++) last[k] = g * (last[k] + z * before[k]);
    for (int64_t i = n - 2; i >= 0; i--) {
        double *row = buf + i * B;
        const double *next = row + B;
        for (int64_t k = 0; k < nb; k++) row[k] = z * (next[k] - row[k]);
    }
    for (int64_t i = 0; i < n; i++) {
        double *row = buf + i * B;
        for (int64_t k = 0; k < nb; k++) row[k] *= 6.0;
    }
}

/* One axis: src viewed as (outer, n, inner) -> dst (outer, m, inner). */
static void pass_axis(float *dst, const float *src, int64_t outer, int64_t n, int64_t inner, int64_t m,
                      mt_interp order) {
    taps t;
    make_taps(&t, n, m, order);
    int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;
    int64_t tasks = outer * nblk;
    int par = outer * m * inner > PAR_MIN_WORK;
    int cubic = order == MT_INTERP_CUBIC;
#pragma omp parallel if (par)
    {
        double *buf = cubic ? malloc(sizeof(double) * (size_t)(n * COL_BLOCK)) : NULL;
        MT_CHECK(!cubic || buf);
#pragma omp for schedule(dynamic, 4)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t ou = task / nblk, k0 = (task % nblk) * COL_BLOCK;
            int64_t nb = inner - k0 < COL_BLOCK ? inner - k0 : COL_BLOCK;
            const float *s = src + ou * n * inner + k0;
            float *d = dst + ou * m * inner + k0;
            if (cubic) {
                for (int64_t i = 0; i < n; i++)
                    for (int64_t k = 0; k < nb; k++) buf[i * COL_BLOCK + k] = s[i * inner + k];
                prefilter_cols(buf, n, COL_BLOCK, nb);
                for (int64_t o = 0; o < m; o++) {
                    const int64_t *ix = t.idx + o * 4;
                    const double *w = t.w + o * 4;
                    const double *r0 = buf + ix[0] * COL_BLOCK, *r1 = buf + ix[1] * COL_BLOCK;
                    const double *r2 = buf + ix[2] * COL_BLOCK, *r3 = buf + ix[3] * COL_BLOCK;
                    float *dr = d + o * inner;
                    for (int64_t k = 0; k < nb; k++)
                        dr[k] = (float)(w[0] * r0[k] + w[1] * r1[k] + w[2] * r2[k] + w[3] * r3[k]);
                }
            } else if (order == MT_INTERP_LINEAR) {
                for (int64_t o = 0; o < m; o++) {
                    const int64_t *ix = t.idx + o * 2;
                    double w0 = t.w[o * 2], w1 = t.w[o * 2 + 1];
                    const float *r0 = s + ix[0] * inner, *r1 = s + ix[1] * inner;
                    float *dr = d + o * inner;
                    for (int64_t k = 0; k < nb; k++) dr[k] = (float)(w0 * r0[k] + w1 * r1[k]);
                }
            } else {
                for (int64_t o = 0; o < m; o++) {
                    const float *r0 = s + t.idx[o] * inner;
                    memcpy(d + o * inner, r0, sizeof(float) * (size_t)nb);
                }
            }
        }
        free(buf);
    }
    free_taps(&t);
}

static void check_orders(const mt_interp order[3]) {
    for (int a = 0; a < 3; a++)
        MT_CHECK_MSG(order[a] == MT_INTERP_NEAREST || order[a] == MT_INTERP_LINEAR || order[a] == MT_INTERP_CUBIC,
                     "resample: unknown interpolation order %d on axis %d", (int)order[a], a);
}

/* Resamples a contiguous f32 (C, D, H, W) buffer; returns a new tensor. */
static mt_tensor *resample_f32(const float *x, int64_t C, const int64_t in_shape[3], const int64_t out_shape[3],
                               const mt_interp order[3]) {
    int64_t cur[3] = {in_shape[0], in_shape[1], in_shape[2]};
    /* shrinking axes first: later passes then touch fewer voxels */
    int axes[3] = {0, 1, 2};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++) {
            double ri = (double)out_shape[axes[i]] / (double)in_shape[axes[i]];
            double rj = (double)out_shape[axes[j]] / (double)in_shape[axes[j]];
            if (rj < ri) {
                int tmp = axes[i];
                axes[i] = axes[j];
                axes[j] = tmp;
            }
        }
    int64_t oshape[4] = {C, out_shape[0], out_shape[1], out_shape[2]};
    mt_tensor *out = mt_tensor_new(MT_F32, 4, oshape, MT_DEVICE_CPU);
    float *a = NULL, *b = NULL; /* ping-pong work buffers */
    const float *curp = x;
    int passes = 0;
    for (int q = 0; q < 3; q++) passes += out_shape[axes[q]] != in_shape[axes[q]];
    int done = 0;
    for (int q = 0; q < 3; q++) {
        int ax = axes[q];
        if (out_shape[ax] == in_shape[ax]) continue;
        int64_t outer = C, inner = 1;
        for (int i = 0; i < ax; i++) outer *= cur[i];
        for (int i = ax + 1; i < 3; i++) inner *= cur[i];
        int64_t n = cur[ax], m = out_shape[ax];
        float *dst;
        done++;
        if (done == passes) {
            dst = MT_F32P(out);
        } else {
            size_t need = sizeof(float) * (size_t)(outer * m * inner);
            float **slot = curp == a ? &b : &a;
            free(*slot);
            *slot = malloc(need ? need : 1);
            MT_CHECK(*slot);
            dst = *slot;
        }
        pass_axis(dst, curp, outer, n, inner, m, order[ax]);
        cur[ax] = m;
        curp = dst;
    }
    if (passes == 0) memcpy(MT_F32P(out), x, sizeof(float) * (size_t)mt_tensor_numel(out));
    free(a);
    free(b);
    return out;
}

mt_tensor *mt_resample_image(const mt_tensor *x, const int64_t out_shape[3], const mt_interp order[3]) {
    MT_CHECK_MSG(x->ndim == 4 && x->dtype == MT_F32, "resample_image: expected a (C, D, H, W) f32 tensor");
    MT_CHECK_MSG(x->storage->device.type == MT_CPU, "resample_image: CPU tensors only");
    for (int a = 0; a < 3; a++) MT_CHECK_MSG(out_shape[a] >= 1, "resample_image: output size %lld", (long long)out_shape[a]);
    check_orders(order);
    mt_tensor *xc = mt_tensor_contiguous(x);
    int64_t in_shape[3] = {x->shape[1], x->shape[2], x->shape[3]};
    mt_tensor *out = resample_f32(MT_F32P(xc), x->shape[0], in_shape, out_shape, order);
    mt_tensor_release(xc);
    return out;
}

mt_tensor *mt_resample_labels(const mt_tensor *y, const int64_t out_shape[3], const mt_interp order[3]) {
    MT_CHECK_MSG(y->ndim == 4 && y->shape[0] == 1 && y->dtype == MT_U8,
                 "resample_labels: expected a (1, D, H, W) u8 tensor");
    MT_CHECK_MSG(y->storage->device.type == MT_CPU, "resample_labels: CPU tensors only");
    for (int a = 0; a < 3; a++) MT_CHECK_MSG(out_shape[a] >= 1, "resample_labels: output size %lld", (long long)out_shape[a]);
    check_orders(order);
    mt_tensor *yc = mt_tensor_contiguous(y);
    const uint8_t *yp = mt_tensor_data(yc);
    int64_t n = mt_tensor_numel(yc);
    int64_t in_shape[3] = {y->shape[1], y->shape[2], y->shape[3]};
    int64_t oshape[4] = {1, out_shape[0], out_shape[1], out_shape[2]};
    mt_tensor *out = mt_tensor_zeros(MT_U8, 4, oshape, MT_DEVICE_CPU);
    uint8_t *op = mt_tensor_data(out);
    int64_t m = mt_tensor_numel(out);
    int present[256] = {0};
    for (int64_t i = 0; i < n; i++) present[yp[i]] = 1;
    float *ind = malloc(sizeof(float) * (size_t)(n ? n : 1));
    MT_CHECK(ind);
    for (int v = 1; v < 256; v++) {
        if (!present[v]) continue;
        for (int64_t i = 0; i < n; i++) ind[i] = yp[i] == v ? 1.0f : 0.0f;
        mt_tensor *r = resample_f32(ind, 1, in_shape, out_shape, order);
        const float *rp = MT_F32P(r);
        for (int64_t i = 0; i < m; i++)
            if (rp[i] >= 0.5f) op[i] = (uint8_t)v;
        mt_tensor_release(r);
    }
    free(ind);
    mt_tensor_release(yc);
    return out;
}
