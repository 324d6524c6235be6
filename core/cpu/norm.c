/* CPU normalisation kernels: batch norm, group norm (instance norm is group
 * norm with G = C), layer norm; forward and backward. Contracts: core/backend.h.
 *
 * Backward kernels write (=) every gradient they are given (dx, dweight,
 * dbias); the autograd engine does the accumulation into parameters.
 *
 * Numerics: statistics are accumulated in double over values shifted by the
 * first element of their group (sum(x - K), sum((x - K)^2)), which avoids
 * the cancellation of the naive one-pass formula, in a single read of x.
 * The variance used for normalisation is the biased one; batch norm's
 * running_var is updated with the unbiased one, as PyTorch:
 *   running = (1 - momentum) * running + momentum * batch_statistic.
 *
 * The normalisation itself is y = ((x - mean_hi) - mean_lo) * scale + shift
 * with the double mean split into two floats, so inputs whose mean is large
 * against their spread (raw intensities) keep f32 accuracy; mean/rstd outputs
 * hold the f32 rounding of the statistics.
 *
 * Parallelism: every (n, c) plane of S elements is split into fixed chunks
 * of CHUNK elements; partial sums per chunk are computed in parallel and
 * combined in a fixed order, so results do not depend on the thread count.
 *
 * bf16 (x, y, dy, dx bf16; weight, bias, dweight, dbias, statistics and
 * running stats f32): the f32 kernel on f32 copies of x and dy, y / dx
 * rounded once to bf16 (the adapter of core/cpu/bf16.c).
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_kernels.h"

#define CHUNK 16384       /* elements per parallel task */
#define PAR_MIN 32768     /* below this many elements, stay on one thread */

static inline int64_t n_chunks(int64_t len) { return len > 0 ? (len + CHUNK - 1) / CHUNK : 0; }
static inline int64_t chunk_len(int64_t len, int64_t ch) {
    int64_t rest = len - ch * CHUNK;
    return rest < CHUNK ? rest : CHUNK;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    MT_CHECK_MSG(p, "norm: out of host memory (%zu bytes)", n);
    return p;
}

/* Sums of (x - k) and (x - k)^2 over n contiguous elements, in double. */
static void shifted_sums(const float *x, int64_t n, double k, double *o1, double *o2) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - k;
        s1 += d;
        s2 += d * d;
    }
    *o1 = s1;
    *o2 = s2;
}

/* Sums of dy and dy * (x - m) over n contiguous elements, in double. */
static void grad_sums(const float *dy, const float *x, int64_t n, double m, double *o1,
                      double *o2) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; i++) {
        double g = dy[i];
        s1 += g;
        s2 += g * ((double)x[i] - m);
    }
    *o1 = s1;
    *o2 = s2;
}

/* y = ((x - mh) - ml) * a + b over n elements: the mean is carried as a
 * float pair mh + ml so that inputs with a large mean keep full precision. */
static inline void affine_row(float *y, const float *x, int64_t n, float mh, float ml, float a,
                              float b) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - mh) - ml) * a + b;
}

/* dx = dy * k1 + (x - m) * k2 + k3 over n elements. */
static inline void dx_row(float *dx, const float *dy, const float *x, int64_t n, float m, float k1,
                          float k2, float k3) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * k1 + (x[i] - m) * k2 + k3;
}

/* Splits a double into a float pair hi + lo. */
static inline void split_f(double v, float *hi, float *lo) {
    *hi = (float)v;
    *lo = (float)(v - (double)*hi);
}

static void check_f32(const char *op, const mt_tensor *t) {
    if (t) MT_KERNEL_DTYPE_CHECK(op, t, MT_F32);
}

/* Mean and biased variance from shifted sums over cnt elements. */
static void finish_stats(double k, double s1, double s2, double cnt, double *mean, double *var) {
    double ms = s1 / cnt;
    double v = (s2 - s1 * ms) / cnt;
    *mean = k + ms;
    *var = v > 0 ? v : 0;
}

/* Per-(plane, chunk) shifted sums for planes x[P][S]; shift[p] per plane. */
static void plane_sums(double *part /* (P * nch, 2) */, const float *x, int64_t P, int64_t S,
                       const double *shift) {
    int64_t nch = n_chunks(S), tasks = P * nch;
#pragma omp parallel for schedule(static) if (P * S > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / nch, ch = t % nch;
        shifted_sums(x + p * S + ch * CHUNK, chunk_len(S, ch), shift[p], &part[2 * t],
                     &part[2 * t + 1]);
    }
}

/* Per-(plane, chunk) gradient sums; mean[p] per plane. */
static void plane_grad_sums(double *part /* (P * nch, 2) */, const float *dy, const float *x,
                            int64_t P, int64_t S, const double *mean) {
    int64_t nch = n_chunks(S), tasks = P * nch;
#pragma omp parallel for schedule(static) if (P * S > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / nch, ch = t % nch;
        int64_t o = p * S + ch * CHUNK;
        grad_sums(dy + o, x + o, chunk_len(S, ch), mean[p], &part[2 * t], &part[2 * t + 1]);
    }
}

/* Per-plane affine coefficients: y = ((x - mh) - ml) * a + b. */
typedef struct {
    float mh, ml, a, b;
} plane_affine_t;

static void plane_affine(float *y, const float *x, int64_t P, int64_t S, const plane_affine_t *c) {
    int64_t nch = n_chunks(S), tasks = P * nch;
#pragma omp parallel for schedule(static) if (P * S > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / nch, ch = t % nch, o = p * S + ch * CHUNK;
        affine_row(y + o, x + o, chunk_len(S, ch), c[p].mh, c[p].ml, c[p].a, c[p].b);
    }
}

/* Per-plane input-gradient coefficients: dx = dy * k1 + (x - m) * k2 + k3. */
typedef struct {
    float m, k1, k2, k3;
} plane_dx_t;

static void plane_dx(float *dx, const float *dy, const float *x, int64_t P, int64_t S,
                     const plane_dx_t *c) {
    int64_t nch = n_chunks(S), tasks = P * nch;
#pragma omp parallel for schedule(static) if (P * S > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / nch, ch = t % nch, o = p * S + ch * CHUNK;
        dx_row(dx + o, dy + o, x + o, chunk_len(S, ch), c[p].m, c[p].k1, c[p].k2, c[p].k3);
    }
}

/* x (N, C, *) -> N, C, S (product of spatial dims). */
static void nc_s(const mt_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
    MT_CHECK_MSG(x->ndim >= 2, "norm: input needs at least 2 dims (N, C, ...), got %d", x->ndim);
    *N = x->shape[0];
    *C = x->shape[1];
    int64_t s = 1;
    for (int d = 2; d < x->ndim; d++) s *= x->shape[d];
    *S = s;
}

/* ------------------------------------------------------------ batch norm */

void mt_cpu_batch_norm_forward(mt_tensor *y, mt_tensor *save_mean, mt_tensor *save_invstd,
                               const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                               mt_tensor *running_mean, mt_tensor *running_var, int training,
                               float momentum, float eps) {
    const char *op = "batch_norm_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_batch_norm_forward(mt_cpu_bf16_out(&c, y, 0), save_mean, save_invstd, x32, weight,
                                  bias, running_mean, running_var, training, momentum, eps);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, y);
    check_f32(op, x);
    check_f32(op, weight);
    check_f32(op, bias);
    check_f32(op, save_mean);
    check_f32(op, save_invstd);
    check_f32(op, running_mean);
    check_f32(op, running_var);
    int64_t N, C, S;
    nc_s(x, &N, &C, &S);
    const float *xp = MT_F32P(x);
    float *sm = MT_F32P(save_mean), *si = MT_F32P(save_invstd);
    const float *w = weight ? MT_F32P(weight) : NULL, *b = bias ? MT_F32P(bias) : NULL;
    float *rm = running_mean ? MT_F32P(running_mean) : NULL;
    float *rv = running_var ? MT_F32P(running_var) : NULL;
    int64_t P = N * C, nch = n_chunks(S);
    double cnt = (double)N * (double)S;
    double *mean = xmalloc(sizeof(double) * 2 * (size_t)C), *invstd = mean + C;

    if (training) {
        MT_CHECK_MSG(cnt > 0, "batch_norm: empty batch");
        double *shift = xmalloc(sizeof(double) * (size_t)P);
        for (int64_t p = 0; p < P; p++) shift[p] = S ? xp[(p % C) * S] : 0; /* x[0, c, 0] */
        double *part = xmalloc(sizeof(double) * 2 * (size_t)(P * nch));
        plane_sums(part, xp, P, S, shift);
        for (int64_t c = 0; c < C; c++) {
            double s1 = 0, s2 = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t ch = 0; ch < nch; ch++) {
                    int64_t t = (n * C + c) * nch + ch;
                    s1 += part[2 * t];
                    s2 += part[2 * t + 1];
                }
            double var;
            finish_stats(shift[c], s1, s2, cnt, &mean[c], &var);
            invstd[c] = 1.0 / sqrt(var + (double)eps);
            if (rm) rm[c] = (1.0f - momentum) * rm[c] + momentum * (float)mean[c];
            if (rv) {
                MT_CHECK_MSG(cnt > 1, "batch_norm: expected more than 1 value per channel when training");
                rv[c] = (1.0f - momentum) * rv[c] + momentum * (float)(var * cnt / (cnt - 1));
            }
        }
        free(part);
        free(shift);
    } else {
        MT_CHECK_MSG(rm && rv, "batch_norm: eval mode needs running_mean and running_var");
        for (int64_t c = 0; c < C; c++) {
            mean[c] = rm[c];
            invstd[c] = 1.0 / sqrt((double)rv[c] + (double)eps);
        }
    }
    for (int64_t c = 0; c < C; c++) {
        sm[c] = (float)mean[c];
        si[c] = (float)invstd[c];
    }
    plane_affine_t *co = xmalloc(sizeof(plane_affine_t) * (size_t)P);
    for (int64_t p = 0; p < P; p++) {
        int64_t c = p % C;
        split_f(mean[c], &co[p].mh, &co[p].ml);
        co[p].a = (float)(invstd[c] * (w ? w[c] : 1.0f));
        co[p].b = b ? b[c] : 0.0f;
    }
    plane_affine(MT_F32P(y), xp, P, S, co);
    free(co);
    free(mean);
}

void mt_cpu_batch_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *save_mean, const mt_tensor *save_invstd,
                                int training) {
    const char *op = "batch_norm_backward";
    if ((dx && dx->dtype == MT_BF16) || dy->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy), *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_batch_norm_backward(mt_cpu_bf16_out(&c, dx, 0), dweight, dbias, dy32, x32, weight,
                                   save_mean, save_invstd, training);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, dx);
    check_f32(op, dweight);
    check_f32(op, dbias);
    check_f32(op, dy);
    check_f32(op, x);
    check_f32(op, weight);
    int64_t N, C, S;
    nc_s(x, &N, &C, &S);
    const float *xp = MT_F32P(x), *gp = MT_F32P(dy);
    const float *sm = MT_F32P(save_mean), *si = MT_F32P(save_invstd);
    const float *w = weight ? MT_F32P(weight) : NULL;
    int64_t P = N * C, nch = n_chunks(S);
    double cnt = (double)N * (double)S;
    int need_sums = training || dweight || dbias;
    double *sdy = xmalloc(sizeof(double) * 2 * (size_t)C), *sdyx = sdy + C; /* per channel */
    if (need_sums) {
        double *mean = xmalloc(sizeof(double) * (size_t)P);
        for (int64_t p = 0; p < P; p++) mean[p] = sm[p % C];
        double *part = xmalloc(sizeof(double) * 2 * (size_t)(P * nch));
        plane_grad_sums(part, gp, xp, P, S, mean);
        for (int64_t c = 0; c < C; c++) {
            double s1 = 0, s2 = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t ch = 0; ch < nch; ch++) {
                    int64_t t = (n * C + c) * nch + ch;
                    s1 += part[2 * t];
                    s2 += part[2 * t + 1];
                }
            sdy[c] = s1;
            sdyx[c] = s2; /* sum dy * (x - mean) */
        }
        free(part);
        free(mean);
        for (int64_t c = 0; c < C; c++) {
            if (dweight) MT_F32P(dweight)[c] = (float)(sdyx[c] * si[c]);
            if (dbias) MT_F32P(dbias)[c] = (float)sdy[c];
        }
    }
    if (dx) {
        plane_dx_t *co = xmalloc(sizeof(plane_dx_t) * (size_t)P);
        for (int64_t p = 0; p < P; p++) {
            int64_t c = p % C;
            double is = si[c], g = is * (w ? w[c] : 1.0f);
            co[p].m = sm[c];
            co[p].k1 = (float)g;
            if (training) {
                /* dx = g * (dy - mean(dy) - xhat * mean(dy * xhat)) */
                double A = sdy[c] / cnt, B = sdyx[c] * is / cnt;
                co[p].k2 = (float)(-g * is * B);
                co[p].k3 = (float)(-g * A);
            } else {
                co[p].k2 = 0.0f;
                co[p].k3 = 0.0f;
            }
        }
        plane_dx(MT_F32P(dx), gp, xp, P, S, co);
        free(co);
    }
    free(sdy);
}

/* ------------------------------------------------------------ group norm */

void mt_cpu_group_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                               const mt_tensor *weight, const mt_tensor *bias, int groups,
                               float eps) {
    const char *op = "group_norm_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_group_norm_forward(mt_cpu_bf16_out(&c, y, 0), mean, rstd, x32, weight, bias, groups,
                                  eps);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, y);
    check_f32(op, x);
    check_f32(op, weight);
    check_f32(op, bias);
    check_f32(op, mean);
    check_f32(op, rstd);
    int64_t N, C, S;
    nc_s(x, &N, &C, &S);
    MT_CHECK_MSG(groups > 0 && C % groups == 0, "group_norm: %lld channels not divisible by %d groups",
                 (long long)C, groups);
    int64_t G = groups, Cg = C / G, P = N * C, nch = n_chunks(S);
    const float *xp = MT_F32P(x);
    const float *w = weight ? MT_F32P(weight) : NULL, *b = bias ? MT_F32P(bias) : NULL;
    float *mp = MT_F32P(mean), *rp = MT_F32P(rstd);
    double cnt = (double)Cg * (double)S;
    MT_CHECK_MSG(cnt > 0, "group_norm: empty groups");

    double *shift = xmalloc(sizeof(double) * (size_t)P);
    for (int64_t p = 0; p < P; p++) {
        int64_t n = p / C, g = (p % C) / Cg;
        shift[p] = S ? xp[(n * C + g * Cg) * S] : 0; /* first element of the group */
    }
    double *part = xmalloc(sizeof(double) * 2 * (size_t)(P * nch));
    plane_sums(part, xp, P, S, shift);
    /* A group's planes are consecutive: (n, g) covers planes n*C + g*Cg .. + Cg. */
    plane_affine_t *co = xmalloc(sizeof(plane_affine_t) * (size_t)P);
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t p0 = ng * Cg;
        double s1 = 0, s2 = 0;
        for (int64_t t = p0 * nch; t < (p0 + Cg) * nch; t++) {
            s1 += part[2 * t];
            s2 += part[2 * t + 1];
        }
        double m, var;
        finish_stats(shift[p0], s1, s2, cnt, &m, &var);
        double r = 1.0 / sqrt(var + (double)eps);
        mp[ng] = (float)m;
        rp[ng] = (float)r;
        for (int64_t p = p0; p < p0 + Cg; p++) {
            int64_t c = p % C;
            split_f(m, &co[p].mh, &co[p].ml);
            co[p].a = (float)(r * (w ? w[c] : 1.0f));
            co[p].b = b ? b[c] : 0.0f;
        }
    }
    plane_affine(MT_F32P(y), xp, P, S, co);
    free(co);
    free(part);
    free(shift);
}

void mt_cpu_group_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *mean, const mt_tensor *rstd, int groups) {
    const char *op = "group_norm_backward";
    if ((dx && dx->dtype == MT_BF16) || dy->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy), *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_group_norm_backward(mt_cpu_bf16_out(&c, dx, 0), dweight, dbias, dy32, x32, weight,
                                   mean, rstd, groups);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, dx);
    check_f32(op, dweight);
    check_f32(op, dbias);
    check_f32(op, dy);
    check_f32(op, x);
    check_f32(op, weight);
    int64_t N, C, S;
    nc_s(x, &N, &C, &S);
    MT_CHECK_MSG(groups > 0 && C % groups == 0, "group_norm: %lld channels not divisible by %d groups",
                 (long long)C, groups);
    int64_t G = groups, Cg = C / G, P = N * C, nch = n_chunks(S);
    const float *xp = MT_F32P(x), *gp = MT_F32P(dy);
    const float *w = weight ? MT_F32P(weight) : NULL;
    const float *mp = MT_F32P(mean), *rp = MT_F32P(rstd);
    double cnt = (double)Cg * (double)S;

    double *pm = xmalloc(sizeof(double) * 3 * (size_t)P); /* plane mean, then sums */
    double *sdy = pm + P, *sdyx = pm + 2 * P;
    for (int64_t p = 0; p < P; p++) pm[p] = mp[p / Cg]; /* (n, g) = p / Cg */
    double *part = xmalloc(sizeof(double) * 2 * (size_t)(P * nch));
    plane_grad_sums(part, gp, xp, P, S, pm);
    for (int64_t p = 0; p < P; p++) {
        double s1 = 0, s2 = 0;
        for (int64_t t = p * nch; t < (p + 1) * nch; t++) {
            s1 += part[2 * t];
            s2 += part[2 * t + 1];
        }
        sdy[p] = s1;
        sdyx[p] = s2 * rp[p / Cg]; /* sum dy * xhat */
    }
    free(part);
    if (dweight || dbias) {
        for (int64_t c = 0; c < C; c++) {
            double a1 = 0, a2 = 0;
            for (int64_t n = 0; n < N; n++) {
                a1 += sdy[n * C + c];
                a2 += sdyx[n * C + c];
            }
            if (dweight) MT_F32P(dweight)[c] = (float)a2;
            if (dbias) MT_F32P(dbias)[c] = (float)a1;
        }
    }
    if (dx) {
        plane_dx_t *co = xmalloc(sizeof(plane_dx_t) * (size_t)P);
        for (int64_t ng = 0; ng < N * G; ng++) {
            /* dx = r * (w dy - A - xhat * B), A = mean(w dy), B = mean(w dy xhat) */
            double A = 0, B = 0;
            for (int64_t p = ng * Cg; p < (ng + 1) * Cg; p++) {
                double wc = w ? w[p % C] : 1.0;
                A += wc * sdy[p];
                B += wc * sdyx[p];
            }
            A /= cnt;
            B /= cnt;
            double r = rp[ng];
            for (int64_t p = ng * Cg; p < (ng + 1) * Cg; p++) {
                co[p].m = mp[ng];
                co[p].k1 = (float)(r * (w ? w[p % C] : 1.0f));
                co[p].k2 = (float)(-r * r * B);
                co[p].k3 = (float)(-r * A);
            }
        }
        plane_dx(MT_F32P(dx), gp, xp, P, S, co);
        free(co);
    }
    free(pm);
}

/* ------------------------------------------------------------ layer norm */

/* One row segment: y = ((x - mh) - ml) * r * w + b (w, b may be NULL). */
static inline void layer_norm_row(float *y, const float *x, int64_t n, float mh, float ml, float r,
                                  const float *w, const float *b) {
    if (w && b) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - mh) - ml) * r * w[j] + b[j];
    } else if (w) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - mh) - ml) * r * w[j];
    } else if (b) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = ((x[j] - mh) - ml) * r + b[j];
    } else {
        affine_row(y, x, n, mh, ml, r, 0.0f);
    }
}

void mt_cpu_layer_norm_forward(mt_tensor *y, mt_tensor *mean, mt_tensor *rstd, const mt_tensor *x,
                               const mt_tensor *weight, const mt_tensor *bias, int64_t norm_numel,
                               float eps) {
    const char *op = "layer_norm_forward";
    if (y->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, y, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_layer_norm_forward(mt_cpu_bf16_out(&c, y, 0), mean, rstd, x32, weight, bias,
                                  norm_numel, eps);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, y);
    check_f32(op, x);
    check_f32(op, weight);
    check_f32(op, bias);
    check_f32(op, mean);
    check_f32(op, rstd);
    int64_t D = norm_numel, total = mt_tensor_numel(x);
    MT_CHECK_MSG(D > 0 && total % D == 0, "layer_norm: %lld elements not divisible by norm_numel %lld",
                 (long long)total, (long long)D);
    int64_t M = total / D, nch = n_chunks(D);
    const float *xp = MT_F32P(x);
    const float *w = weight ? MT_F32P(weight) : NULL, *b = bias ? MT_F32P(bias) : NULL;
    float *yp = MT_F32P(y), *mp = MT_F32P(mean), *rp = MT_F32P(rstd);
    if (nch == 1) {
        /* Rows fit one chunk: one task per row. */
#pragma omp parallel for schedule(static) if (total > PAR_MIN)
        for (int64_t m = 0; m < M; m++) {
            const float *xr = xp + m * D;
            double s1, s2, mu, var;
            shifted_sums(xr, D, xr[0], &s1, &s2);
            finish_stats(xr[0], s1, s2, (double)D, &mu, &var);
            float mh, ml, r = (float)(1.0 / sqrt(var + (double)eps));
            split_f(mu, &mh, &ml);
            mp[m] = mh;
            rp[m] = r;
            layer_norm_row(yp + m * D, xr, D, mh, ml, r, w, b);
        }
        return;
    }
    /* Wide rows: chunks of a row in parallel, partial sums combined per row. */
    double *shift = xmalloc(sizeof(double) * (size_t)M);
    for (int64_t m = 0; m < M; m++) shift[m] = xp[m * D];
    double *part = xmalloc(sizeof(double) * 2 * (size_t)(M * nch));
    plane_sums(part, xp, M, D, shift);
    float *ml = xmalloc(sizeof(float) * (size_t)M);
    for (int64_t m = 0; m < M; m++) {
        double s1 = 0, s2 = 0, mu, var;
        for (int64_t t = m * nch; t < (m + 1) * nch; t++) {
            s1 += part[2 * t];
            s2 += part[2 * t + 1];
        }
        finish_stats(shift[m], s1, s2, (double)D, &mu, &var);
        split_f(mu, &mp[m], &ml[m]);
        rp[m] = (float)(1.0 / sqrt(var + (double)eps));
    }
    free(part);
    free(shift);
#pragma omp parallel for schedule(static) if (total > PAR_MIN)
    for (int64_t t = 0; t < M * nch; t++) {
        int64_t m = t / nch, j0 = (t % nch) * CHUNK, len = chunk_len(D, t % nch);
        layer_norm_row(yp + m * D + j0, xp + m * D + j0, len, mp[m], ml[m], rp[m],
                       w ? w + j0 : NULL, b ? b + j0 : NULL);
    }
    free(ml);
}

/* dweight[j] = sum_m dy[m, j] * xhat[m, j], dbias[j] = sum_m dy[m, j]. */
static void layer_norm_param_grads(float *dw, float *db, const float *gp, const float *xp,
                                   const float *mp, const float *rp, int64_t M, int64_t D) {
    enum { COLS = 1024, MAX_RB = 64 };
    if (D > 8 * COLS || M < 2) {
        /* Wide rows: column blocks in parallel, each walks every row. */
        int64_t ncb = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (M * D > PAR_MIN)
        for (int64_t cb = 0; cb < ncb; cb++) {
            double aw[COLS], ab[COLS];
            int64_t j0 = cb * COLS, len = D - j0 < COLS ? D - j0 : COLS;
            for (int64_t j = 0; j < len; j++) aw[j] = ab[j] = 0;
            for (int64_t m = 0; m < M; m++) {
                const float *g = gp + m * D + j0, *x = xp + m * D + j0;
                double mu = mp[m], r = rp[m];
#pragma omp simd
                for (int64_t j = 0; j < len; j++) {
                    aw[j] += (double)g[j] * (((double)x[j] - mu) * r);
                    ab[j] += g[j];
                }
            }
            for (int64_t j = 0; j < len; j++) {
                if (dw) dw[j0 + j] = (float)aw[j];
                if (db) db[j0 + j] = (float)ab[j];
            }
        }
        return;
    }
    /* Narrow rows: fixed row blocks with partial sums, then a column reduction. */
    int64_t nrb = M < MAX_RB ? M : MAX_RB, rows = (M + nrb - 1) / nrb;
    nrb = (M + rows - 1) / rows;
    double *part = xmalloc(sizeof(double) * 2 * (size_t)(nrb * D));
#pragma omp parallel for schedule(static) if (M * D > PAR_MIN)
    for (int64_t rb = 0; rb < nrb; rb++) {
        double *aw = part + 2 * rb * D, *ab = aw + D;
        for (int64_t j = 0; j < D; j++) aw[j] = ab[j] = 0;
        int64_t m1 = (rb + 1) * rows < M ? (rb + 1) * rows : M;
        for (int64_t m = rb * rows; m < m1; m++) {
            const float *g = gp + m * D, *x = xp + m * D;
            double mu = mp[m], r = rp[m];
#pragma omp simd
            for (int64_t j = 0; j < D; j++) {
                aw[j] += (double)g[j] * (((double)x[j] - mu) * r);
                ab[j] += g[j];
            }
        }
    }
    for (int64_t j = 0; j < D; j++) {
        double sw = 0, sb = 0;
        for (int64_t rb = 0; rb < nrb; rb++) {
            sw += part[2 * rb * D + j];
            sb += part[2 * rb * D + D + j];
        }
        if (dw) dw[j] = (float)sw;
        if (db) db[j] = (float)sb;
    }
    free(part);
}

void mt_cpu_layer_norm_backward(mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                                const mt_tensor *dy, const mt_tensor *x, const mt_tensor *weight,
                                const mt_tensor *mean, const mt_tensor *rstd, int64_t norm_numel) {
    const char *op = "layer_norm_backward";
    if ((dx && dx->dtype == MT_BF16) || dy->dtype == MT_BF16 || x->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME(op, dx, dy, x);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy), *x32 = mt_cpu_bf16_in(&c, x);
        mt_cpu_layer_norm_backward(mt_cpu_bf16_out(&c, dx, 0), dweight, dbias, dy32, x32, weight,
                                   mean, rstd, norm_numel);
        mt_cpu_bf16_done(&c);
        return;
    }
    check_f32(op, dx);
    check_f32(op, dweight);
    check_f32(op, dbias);
    check_f32(op, dy);
    check_f32(op, x);
    check_f32(op, weight);
    int64_t D = norm_numel, total = mt_tensor_numel(x);
    MT_CHECK_MSG(D > 0 && total % D == 0, "layer_norm: %lld elements not divisible by norm_numel %lld",
                 (long long)total, (long long)D);
    int64_t M = total / D;
    const float *xp = MT_F32P(x), *gp = MT_F32P(dy);
    const float *w = weight ? MT_F32P(weight) : NULL;
    const float *mp = MT_F32P(mean), *rp = MT_F32P(rstd);
    if (dweight || dbias)
        layer_norm_param_grads(dweight ? MT_F32P(dweight) : NULL, dbias ? MT_F32P(dbias) : NULL,
                               gp, xp, mp, rp, M, D);
    if (!dx) return;
    float *dxp = MT_F32P(dx);
    /* dx = r * (w dy - A - xhat * B), A = mean_j(w dy), B = mean_j(w dy xhat). Rows in
     * parallel, each read twice (sums, then dx). */
#pragma omp parallel for schedule(static) if (total > PAR_MIN)
    for (int64_t m = 0; m < M; m++) {
        const float *g = gp + m * D, *xr = xp + m * D;
        double mu = mp[m], r = rp[m], A = 0, B = 0;
#pragma omp simd reduction(+ : A, B)
        for (int64_t j = 0; j < D; j++) {
            double wg = (double)g[j] * (w ? w[j] : 1.0f);
            A += wg;
            B += wg * ((double)xr[j] - mu);
        }
        A /= (double)D;
        B = B * r / (double)D;
        float mf = mp[m], rf = (float)r, k2 = (float)(-r * r * B), k3 = (float)(-r * A);
        float *o = dxp + m * D;
        if (w) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) o[j] = g[j] * w[j] * rf + (xr[j] - mf) * k2 + k3;
        } else {
            dx_row(o, g, xr, D, mf, rf, k2, k3);
        }
    }
}
