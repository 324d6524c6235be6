/* LABELS: unit */
/* data/resample: every order against the test's own separable reference in
 * double precision (the cubic one solves the B-spline interpolation system
 * directly instead of the recursive prefilter); analytic volumes (a linear
 * ramp reproduced by trilinear, a smooth function by cubic); agreement with
 * mt_upsample_trilinear(align_corners = 0); labels keep their value set and
 * follow nnU-Net's per-class rule; shape / spacing / affine bookkeeping. */
#include <stdlib.h>
#include <string.h>

#include "data/resample.h"
#include "mt_test.h"

/* ------------------------------------------------ the test's own reference */

static double src_coord(int64_t o, int64_t n, int64_t m) { return ((double)o + 0.5) * (double)n / (double)m - 0.5; }

static double bspline3(double t) {
    t = fabs(t);
    if (t < 1) return 2.0 / 3.0 - t * t + 0.5 * t * t * t;
    if (t < 2) return (2 - t) * (2 - t) * (2 - t) / 6.0;
    return 0;
}

static int64_t mirror(int64_t j, int64_t n) {
    if (n == 1) return 0;
    while (j < 0 || j >= n) {
        if (j < 0) j = -j;
        if (j >= n) j = 2 * (n - 1) - j;
    }
    return j;
}

/* Dense (m x n) matrix of the 1-D operator n -> m for one order. */
static double *op_matrix(int64_t n, int64_t m, mt_interp order) {
    double *M = calloc((size_t)(m * n), sizeof(double));
    if (m == n) { /* identity: samples reproduced */
        for (int64_t i = 0; i < n; i++) M[i * n + i] = 1;
        return M;
    }
    double *Ainv = NULL;
    if (order == MT_INTERP_CUBIC && n > 1) {
        /* interpolation system A c = s with mirror extension, solved for every unit s */
        double *A = calloc((size_t)(n * n), sizeof(double));
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i - 2; j <= i + 2; j++) A[i * n + mirror(j, n)] += bspline3((double)(i - j));
        Ainv = calloc((size_t)(n * n), sizeof(double));
        for (int64_t i = 0; i < n; i++) Ainv[i * n + i] = 1;
        for (int64_t col = 0; col < n; col++) { /* Gauss-Jordan with partial pivoting */
            int64_t piv = col;
            for (int64_t r = col + 1; r < n; r++)
                if (fabs(A[r * n + col]) > fabs(A[piv * n + col])) piv = r;
            for (int64_t k = 0; k < n; k++) {
                double t = A[col * n + k];
                A[col * n + k] = A[piv * n + k];
                A[piv * n + k] = t;
                t = Ainv[col * n + k];
                Ainv[col * n + k] = Ainv[piv * n + k];
                Ainv[piv * n + k] = t;
            }
            double p = A[col * n + col];
            for (int64_t k = 0; k < n; k++) {
                A[col * n + k] /= p;
                Ainv[col * n + k] /= p;
            }
            for (int64_t r = 0; r < n; r++) {
                if (r == col) continue;
                double f = A[r * n + col];
                for (int64_t k = 0; k < n; k++) {
                    A[r * n + k] -= f * A[col * n + k];
                    Ainv[r * n + k] -= f * Ainv[col * n + k];
                }
            }
        }
        free(A);
    }
    for (int64_t o = 0; o < m; o++) {
        double x = src_coord(o, n, m);
        if (x < 0) x = 0;
        if (x > n - 1) x = (double)(n - 1);
        if (order == MT_INTERP_NEAREST) {
            M[o * n + (int64_t)floor(x + 0.5)] = 1;
        } else if (order == MT_INTERP_LINEAR) {
            int64_t i0 = (int64_t)floor(x);
            double f = x - (double)i0;
            M[o * n + i0] += 1 - f;
            if (f > 0) M[o * n + i0 + 1] += f;
        } else if (n == 1) {
            M[o] = 1;
        } else {
            /* value = sum_j c_j beta(x - j), c = Ainv s, j over the mirrored support */
            int64_t i = (int64_t)floor(x);
            for (int64_t j = i - 2; j <= i + 3; j++) {
                double b = bspline3(x - (double)j);
                if (b == 0) continue;
                int64_t jm = mirror(j, n);
                for (int64_t k = 0; k < n; k++) M[o * n + k] += b * Ainv[jm * n + k];
            }
        }
    }
    free(Ainv);
    return M;
}

/* Applies the three 1-D operators to x (C, D, H, W) (double), returns (C, out). */
static double *ref_resample(const double *x, int64_t C, const int64_t in[3], const int64_t out[3],
                            const mt_interp order[3]) {
    int64_t cur[3] = {in[0], in[1], in[2]};
    double *a = malloc(sizeof(double) * (size_t)(C * in[0] * in[1] * in[2]));
    memcpy(a, x, sizeof(double) * (size_t)(C * in[0] * in[1] * in[2]));
    for (int ax = 0; ax < 3; ax++) {
        int64_t n = cur[ax], m = out[ax];
        double *M = op_matrix(n, m, order[ax]);
        int64_t outer = C, inner = 1;
        for (int i = 0; i < ax; i++) outer *= cur[i];
        for (int i = ax + 1; i < 3; i++) inner *= cur[i];
        double *b = calloc((size_t)(outer * m * inner), sizeof(double));
        for (int64_t u = 0; u < outer; u++)
            for (int64_t o = 0; o < m; o++)
                for (int64_t i = 0; i < n; i++) {
                    double wgt = M[o * n + i];
                    if (wgt == 0) continue;
                    for (int64_t k = 0; k < inner; k++) b[(u * m + o) * inner + k] += wgt * a[(u * n + i) * inner + k];
                }
        free(M);
        free(a);
        a = b;
        cur[ax] = m;
    }
    return a;
}

static void check_against_ref(int64_t C, const int64_t in[3], const int64_t out[3], const mt_interp order[3]) {
    int64_t shape[4] = {C, in[0], in[1], in[2]};
    mt_tensor *x = mt_test_rand(4, shape, -2.0f, 3.0f);
    double *xd = mt_test_to_f64(x);
    double *ref = ref_resample(xd, C, in, out, order);
    mt_tensor *y = mt_resample_image(x, out, order);
    char what[160];
    snprintf(what, sizeof what, "resample (%lld,%lld,%lld,%lld) -> (%lld,%lld,%lld) orders %s/%s/%s", (long long)C,
             (long long)in[0], (long long)in[1], (long long)in[2], (long long)out[0], (long long)out[1],
             (long long)out[2], mt_interp_name(order[0]), mt_interp_name(order[1]), mt_interp_name(order[2]));
    CHECK_MSG(y->ndim == 4 && y->shape[0] == C && y->shape[1] == out[0] && y->shape[2] == out[1] &&
                  y->shape[3] == out[2],
              "%s: output shape", what);
    mt_test_allclose(y, ref, 2e-5, 2e-5, what);
    free(ref);
    free(xd);
    mt_tensor_release(x);
    mt_tensor_release(y);
}

static void test_against_reference(void) {
    const mt_interp L = MT_INTERP_LINEAR, N = MT_INTERP_NEAREST, Q = MT_INTERP_CUBIC;
    check_against_ref(2, (int64_t[]){7, 9, 11}, (int64_t[]){13, 5, 17}, (mt_interp[]){L, L, L});
    check_against_ref(2, (int64_t[]){7, 9, 11}, (int64_t[]){13, 5, 17}, (mt_interp[]){Q, Q, Q});
    check_against_ref(1, (int64_t[]){7, 9, 11}, (int64_t[]){4, 14, 3}, (mt_interp[]){N, N, N});
    check_against_ref(3, (int64_t[]){6, 9, 5}, (int64_t[]){11, 4, 5}, (mt_interp[]){Q, L, N});
    check_against_ref(1, (int64_t[]){1, 2, 3}, (int64_t[]){3, 5, 1}, (mt_interp[]){Q, Q, Q});
    check_against_ref(1, (int64_t[]){5, 3, 9}, (int64_t[]){5, 8, 9}, (mt_interp[]){Q, Q, L});
    /* large enough to run the OpenMP path, downsampling and upsampling axes */
    check_against_ref(2, (int64_t[]){37, 23, 41}, (int64_t[]){29, 47, 31}, (mt_interp[]){Q, Q, Q});
    check_against_ref(2, (int64_t[]){37, 23, 41}, (int64_t[]){29, 47, 31}, (mt_interp[]){L, N, L});
}

/* A strided (permuted) input gives the same result as its contiguous copy. */
static void test_strided_input(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(9, 2, 7, 5), -1.0f, 1.0f);
    mt_tensor *p = mt_tensor_permute(x, (int[]){1, 0, 2, 3}); /* (2, 9, 7, 5), not contiguous */
    CHECK(!mt_tensor_is_contiguous(p));
    mt_tensor *pc = mt_tensor_clone(p);
    const int64_t out[3] = {12, 4, 8};
    const mt_interp ord[3] = {MT_INTERP_CUBIC, MT_INTERP_LINEAR, MT_INTERP_CUBIC};
    mt_tensor *a = mt_resample_image(p, out, ord), *b = mt_resample_image(pc, out, ord);
    mt_test_allclose_t(a, b, 1e-7, 0, "strided input");
    mt_tensor_release(a);
    mt_tensor_release(b);
    mt_tensor_release(pc);
    mt_tensor_release(p);
    mt_tensor_release(x);
}

/* ------------------------------------------------------ analytic volumes */

/* A linear ramp is reproduced exactly by trilinear: output voxel o holds the
 * ramp at the clamped source coordinate. */
static void test_linear_ramp(void) {
    const int64_t in[3] = {11, 8, 13};
    const int64_t outs[3][3] = {{23, 5, 13}, {4, 19, 7}, {31, 31, 31}};
    const double a = 0.75, b = -1.25, c = 0.5, e = 3.0;
    mt_tensor *x = mt_tensor_new(MT_F32, MT_SHAPE(1, 11, 8, 13), MT_DEVICE_CPU);
    float *xp = MT_F32P(x);
    for (int64_t d = 0; d < in[0]; d++)
        for (int64_t h = 0; h < in[1]; h++)
            for (int64_t w = 0; w < in[2]; w++) xp[(d * in[1] + h) * in[2] + w] = (float)(a * d + b * h + c * w + e);
    for (int k = 0; k < 3; k++) {
        const int64_t *out = outs[k];
        const mt_interp ord[3] = {MT_INTERP_LINEAR, MT_INTERP_LINEAR, MT_INTERP_LINEAR};
        mt_tensor *y = mt_resample_image(x, out, ord);
        double *ref = malloc(sizeof(double) * (size_t)(out[0] * out[1] * out[2]));
        for (int64_t d = 0; d < out[0]; d++)
            for (int64_t h = 0; h < out[1]; h++)
                for (int64_t w = 0; w < out[2]; w++) {
                    double cd = fmin(fmax(src_coord(d, in[0], out[0]), 0), in[0] - 1);
                    double ch = fmin(fmax(src_coord(h, in[1], out[1]), 0), in[1] - 1);
                    double cw = fmin(fmax(src_coord(w, in[2], out[2]), 0), in[2] - 1);
                    ref[(d * out[1] + h) * out[2] + w] = a * cd + b * ch + c * cw + e;
                }
        mt_test_allclose(y, ref, 1e-5, 1e-6, "linear ramp reproduced by trilinear");
        free(ref);
        mt_tensor_release(y);
    }
    mt_tensor_release(x);
}

/* A smooth function sampled at voxel centres is interpolated by the cubic
 * B-spline to ~1e-4 away from the borders (the mirror boundary's influence
 * decays as 0.27^distance), far better than by trilinear. A constant is
 * reproduced exactly everywhere. */
static void test_cubic_smooth(void) {
    const int64_t in[3] = {29, 27, 31}, out[3] = {51, 47, 55};
    mt_tensor *x = mt_tensor_new(MT_F32, MT_SHAPE(1, 29, 27, 31), MT_DEVICE_CPU);
    float *xp = MT_F32P(x);
#define F(d, h, w) (sin(0.31 * (d) + 0.2) * cos(0.27 * (h) - 0.4) + 0.5 * sin(0.23 * (w) + 0.1))
    for (int64_t d = 0; d < in[0]; d++)
        for (int64_t h = 0; h < in[1]; h++)
            for (int64_t w = 0; w < in[2]; w++) xp[(d * in[1] + h) * in[2] + w] = (float)F(d, h, w);
    const mt_interp cub[3] = {MT_INTERP_CUBIC, MT_INTERP_CUBIC, MT_INTERP_CUBIC};
    const mt_interp lin[3] = {MT_INTERP_LINEAR, MT_INTERP_LINEAR, MT_INTERP_LINEAR};
    mt_tensor *yc = mt_resample_image(x, out, cub), *yl = mt_resample_image(x, out, lin);
    const float *cp = MT_F32P(yc), *lp = MT_F32P(yl);
    double errc = 0, errl = 0;
    int64_t npts = 0;
    for (int64_t d = 0; d < out[0]; d++)
        for (int64_t h = 0; h < out[1]; h++)
            for (int64_t w = 0; w < out[2]; w++) {
                double cd = src_coord(d, in[0], out[0]), ch = src_coord(h, in[1], out[1]), cw = src_coord(w, in[2], out[2]);
                if (cd < 7 || cd > in[0] - 8 || ch < 7 || ch > in[1] - 8 || cw < 7 || cw > in[2] - 8) continue;
                double f = F(cd, ch, cw);
                int64_t i = (d * out[1] + h) * out[2] + w;
                errc = fmax(errc, fabs(cp[i] - f));
                errl = fmax(errl, fabs(lp[i] - f));
                npts++;
            }
#undef F
    CHECK_MSG(npts > 1000, "interior points %lld", (long long)npts);
    CHECK_MSG(errc < 1e-4, "cubic interior error %.3g", errc);
    CHECK_MSG(errc * 10 < errl, "cubic error %.3g vs linear %.3g", errc, errl);
    mt_tensor_release(yc);
    mt_tensor_release(yl);
    mt_tensor_fill_(x, 2.5);
    mt_tensor *k = mt_resample_image(x, out, cub);
    double *ref = malloc(sizeof(double) * (size_t)mt_tensor_numel(k));
    for (int64_t i = 0; i < mt_tensor_numel(k); i++) ref[i] = 2.5;
    mt_test_allclose(k, ref, 1e-6, 0, "cubic reproduces a constant");
    free(ref);
    mt_tensor_release(k);
    mt_tensor_release(x);
}

/* The spline passes through the samples: 5 -> 15 places output 1 + 3i exactly
 * on input i (x(o) = (o - 1) / 3); a B-spline without the prefilter would not. */
static void test_cubic_interpolates(void) {
    mt_tensor *x = mt_test_rand(MT_SHAPE(2, 5, 4, 3), -1.0f, 1.0f);
    const int64_t out[3] = {15, 4, 3};
    const mt_interp cub[3] = {MT_INTERP_CUBIC, MT_INTERP_CUBIC, MT_INTERP_CUBIC};
    mt_tensor *y = mt_resample_image(x, out, cub);
    double worst = 0;
    for (int64_t c = 0; c < 2; c++)
        for (int64_t i = 0; i < 5; i++)
            for (int64_t h = 0; h < 4; h++)
                for (int64_t w = 0; w < 3; w++) {
                    double a = mt_tensor_get(y, (int64_t[]){c, 1 + 3 * i, h, w});
                    double b = mt_tensor_get(x, (int64_t[]){c, i, h, w});
                    worst = fmax(worst, fabs(a - b));
                }
    CHECK_MSG(worst < 1e-5, "cubic at the sample positions differs by %.3g", worst);
    mt_tensor_release(y);
    mt_tensor_release(x);
}

/* Linear equals mt_upsample_trilinear(align_corners = 0) (PyTorch's rule). */
static void test_matches_upsample_trilinear(void) {
    const int64_t outs[2][3] = {{17, 6, 25}, {5, 20, 9}};
    mt_tensor *x = mt_test_rand(MT_SHAPE(3, 9, 11, 13), -1.0f, 2.0f);
    mt_tensor *x5 = mt_tensor_unsqueeze(x, 0);
    for (int k = 0; k < 2; k++) {
        const mt_interp lin[3] = {MT_INTERP_LINEAR, MT_INTERP_LINEAR, MT_INTERP_LINEAR};
        mt_tensor *a = mt_resample_image(x, outs[k], lin);
        mt_tensor *b = mt_upsample_trilinear(x5, outs[k], 0);
        mt_tensor *b4 = mt_tensor_squeeze(b, 0);
        mt_test_allclose_t(a, b4, 1e-5, 1e-5, "linear vs mt_upsample_trilinear(align_corners=0)");
        mt_tensor_release(a);
        mt_tensor_release(b);
        mt_tensor_release(b4);
    }
    mt_tensor_release(x5);
    mt_tensor_release(x);
}

/* ----------------------------------------------------------------- labels */

static mt_tensor *random_labels(const int64_t s[3], const uint8_t *values, int nv) {
    /* a few random balls of the given values over background */
    mt_tensor *y = mt_tensor_zeros(MT_U8, 4, (int64_t[]){1, s[0], s[1], s[2]}, MT_DEVICE_CPU);
    uint8_t *p = mt_tensor_data(y);
    mt_rng r;
    mt_rng_init(&r, 1234);
    for (int b = 0; b < 3 * nv; b++) {
        uint8_t v = values[b % nv];
        double c[3], rad = 1.5 + 3 * mt_rng_uniform(&r);
        for (int a = 0; a < 3; a++) c[a] = mt_rng_uniform(&r) * (double)s[a];
        for (int64_t d = 0; d < s[0]; d++)
            for (int64_t h = 0; h < s[1]; h++)
                for (int64_t w = 0; w < s[2]; w++) {
                    double r2 = (d - c[0]) * (d - c[0]) + (h - c[1]) * (h - c[1]) + (w - c[2]) * (w - c[2]);
                    if (r2 <= rad * rad) p[(d * s[1] + h) * s[2] + w] = v;
                }
    }
    return y;
}

static void test_labels(void) {
    const int64_t in[3] = {19, 23, 17};
    const uint8_t vals[3] = {1, 2, 7};
    mt_tensor *y = random_labels(in, vals, 3);
    const uint8_t *yp = mt_tensor_data(y);
    int present_in[256] = {0};
    for (int64_t i = 0; i < mt_tensor_numel(y); i++) present_in[yp[i]] = 1;
    CHECK(present_in[0] && present_in[1] && present_in[2] && present_in[7]);
    const int64_t outs[3][3] = {{27, 15, 31}, {10, 11, 9}, {19, 23, 17}};
    const mt_interp ords[3][3] = {{MT_INTERP_LINEAR, MT_INTERP_LINEAR, MT_INTERP_LINEAR},
                                  {MT_INTERP_CUBIC, MT_INTERP_LINEAR, MT_INTERP_NEAREST},
                                  {MT_INTERP_NEAREST, MT_INTERP_NEAREST, MT_INTERP_NEAREST}};
    double *ind = malloc(sizeof(double) * (size_t)mt_tensor_numel(y));
    for (int k = 0; k < 3; k++) {
        for (int q = 0; q < 3; q++) {
            const int64_t *out = outs[k];
            mt_tensor *r = mt_resample_labels(y, out, ords[q]);
            CHECK(r->dtype == MT_U8 && r->shape[0] == 1 && r->shape[1] == out[0] && r->shape[2] == out[1] &&
                  r->shape[3] == out[2]);
            const uint8_t *rp = mt_tensor_data(r);
            int64_t m = mt_tensor_numel(r);
            int present_out[256] = {0}, bad = 0;
            for (int64_t i = 0; i < m; i++) {
                present_out[rp[i]] = 1;
                if (!present_in[rp[i]]) bad++;
            }
            CHECK_MSG(bad == 0, "labels: %d voxels with values absent from the input", bad);
            /* the balls are big enough for every value to survive */
            for (int v = 0; v < 256; v++)
                if (present_in[v]) CHECK_MSG(present_out[v], "labels: value %d lost", v);
            /* nnU-Net's rule against the reference: value v where its resampled indicator >= 0.5 */
            uint8_t *expect = calloc((size_t)m, 1);
            double *margin = malloc(sizeof(double) * (size_t)m);
            for (int64_t i = 0; i < m; i++) margin[i] = 1;
            for (int v = 1; v < 256; v++) {
                if (!present_in[v]) continue;
                for (int64_t i = 0; i < mt_tensor_numel(y); i++) ind[i] = yp[i] == v;
                double *rr = ref_resample(ind, 1, in, out, ords[q]);
                for (int64_t i = 0; i < m; i++) {
                    if (rr[i] >= 0.5) expect[i] = (uint8_t)v;
                    margin[i] = fmin(margin[i], fabs(rr[i] - 0.5));
                }
                free(rr);
            }
            int64_t mismatch = 0;
            for (int64_t i = 0; i < m; i++)
                if (expect[i] != rp[i] && margin[i] > 1e-5) mismatch++;
            CHECK_MSG(mismatch == 0, "labels (%lld,%lld,%lld) orders %d: %lld voxels differ from the per-class rule",
                      (long long)out[0], (long long)out[1], (long long)out[2], q, (long long)mismatch);
            if (out[0] == in[0] && out[1] == in[1] && out[2] == in[2])
                CHECK_MSG(!memcmp(rp, yp, (size_t)m), "labels: same shape must copy exactly");
            free(expect);
            free(margin);
            mt_tensor_release(r);
        }
    }
    free(ind);
    mt_tensor_release(y);
}

/* ------------------------------------------------------------ bookkeeping */

static void test_bookkeeping(void) {
    int64_t o[3];
    mt_resample_shape(o, (int64_t[]){35, 51, 35}, (double[]){1.0, 1.0, 1.0}, (double[]){0.7, 2.0, 3.3});
    CHECK(o[0] == 50 && o[1] == 26 && o[2] == 11); /* round(50), round(25.5), round(10.6) */
    mt_resample_shape(o, (int64_t[]){3, 1, 2}, (double[]){1.0, 1.0, 1.0}, (double[]){10.0, 4.0, 8.0});
    CHECK(o[0] == 1 && o[1] == 1 && o[2] == 1); /* never below one voxel */
    double sp[3];
    mt_resample_spacing(sp, (double[]){1.0, 0.8, 2.5}, (int64_t[]){35, 51, 20}, (int64_t[]){50, 26, 10});
    CHECK_NEAR(sp[0], 0.7, 1e-12);
    CHECK_NEAR(sp[1], 0.8 * 51 / 26, 1e-12);
    CHECK_NEAR(sp[2], 5.0, 1e-12);
    CHECK_NEAR(mt_resample_src_coord(0, 10, 5), 0.5, 1e-12); /* downsample by 2: between voxels 0 and 1 */
    CHECK_NEAR(mt_resample_src_coord(3, 10, 20), 1.25, 1e-12);

    /* the resampled affine maps output voxel centres onto the input's continuous coordinates */
    double A[4][4] = {{-0.9, 0.1, 0.05, 12.0}, {0.08, 1.1, -0.2, -30.0}, {0.02, 0.15, 2.4, 5.0}, {0, 0, 0, 1}};
    const int64_t in[3] = {20, 31, 17}, out[3] = {9, 44, 17}; /* (D, H, W) */
    double B[4][4];
    mt_resample_affine(B, A, in, out);
    double worst = 0;
    for (int64_t d = 0; d < out[0]; d += 4)
        for (int64_t h = 0; h < out[1]; h += 7)
            for (int64_t w = 0; w < out[2]; w += 3) {
                double ijk_out[4] = {(double)w, (double)h, (double)d, 1};
                double ijk_in[4] = {src_coord(w, in[2], out[2]), src_coord(h, in[1], out[1]), src_coord(d, in[0], out[0]), 1};
                for (int r = 0; r < 3; r++) {
                    double a = 0, b = 0;
                    for (int k = 0; k < 4; k++) {
                        a += B[r][k] * ijk_out[k];
                        b += A[r][k] * ijk_in[k];
                    }
                    worst = fmax(worst, fabs(a - b));
                }
            }
    CHECK_MSG(worst < 1e-9, "affine mismatch %.3g mm", worst);
    CHECK(B[3][0] == 0 && B[3][1] == 0 && B[3][2] == 0 && B[3][3] == 1);
    /* unchanged W axis: column 0 kept */
    CHECK_NEAR(B[0][0], A[0][0], 1e-15);
    /* column norms are the new voxel sizes (NIfTI i = W, k = D) */
    double n2 = sqrt(A[0][2] * A[0][2] + A[1][2] * A[1][2] + A[2][2] * A[2][2]);
    double m2 = sqrt(B[0][2] * B[0][2] + B[1][2] * B[1][2] + B[2][2] * B[2][2]);
    CHECK_NEAR(m2, n2 * 20.0 / 9.0, 1e-12);

    /* downsampling keeps the volume's extent: the outer faces line up */
    double I[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    mt_resample_affine(B, I, (int64_t[]){8, 8, 8}, (int64_t[]){4, 4, 4});
    CHECK_NEAR(B[0][0], 2.0, 1e-15);
    CHECK_NEAR(B[0][3], 0.5, 1e-15); /* centre of output voxel 0 = -0.5 + 1 */
    CHECK(!strcmp(mt_interp_name(MT_INTERP_CUBIC), "cubic"));
}

/* Downsample then upsample back: shape and spacing bookkeeping round-trips
 * and a smooth volume comes back close. */
static void test_down_up(void) {
    const int64_t in[3] = {24, 30, 18};
    const double sp[3] = {1.0, 0.75, 1.5}, target[3] = {2.0, 1.5, 1.5};
    int64_t mid[3], back[3];
    mt_resample_shape(mid, in, sp, target);
    CHECK(mid[0] == 12 && mid[1] == 15 && mid[2] == 18);
    double msp[3];
    mt_resample_spacing(msp, sp, in, mid);
    CHECK_NEAR(msp[0], 2.0, 1e-12);
    CHECK_NEAR(msp[1], 1.5, 1e-12);
    mt_resample_shape(back, mid, msp, sp);
    CHECK(back[0] == in[0] && back[1] == in[1] && back[2] == in[2]);
    mt_tensor *x = mt_tensor_new(MT_F32, MT_SHAPE(1, 24, 30, 18), MT_DEVICE_CPU);
    float *xp = MT_F32P(x);
    for (int64_t d = 0; d < in[0]; d++)
        for (int64_t h = 0; h < in[1]; h++)
            for (int64_t w = 0; w < in[2]; w++)
                xp[(d * in[1] + h) * in[2] + w] = (float)(sin(0.15 * d) + cos(0.1 * h) * sin(0.2 * w + 0.3));
    const mt_interp cub[3] = {MT_INTERP_CUBIC, MT_INTERP_CUBIC, MT_INTERP_CUBIC};
    mt_tensor *y = mt_resample_image(x, mid, cub);
    mt_tensor *z = mt_resample_image(y, back, cub);
    /* away from the borders (edge clamp and mirror boundary of the coarse grid) */
    double worst = 0;
    for (int64_t d = 4; d < in[0] - 4; d++)
        for (int64_t h = 4; h < in[1] - 4; h++)
            for (int64_t w = 4; w < in[2] - 4; w++) {
                int64_t i = (d * in[1] + h) * in[2] + w;
                worst = fmax(worst, fabs(MT_F32P(z)[i] - xp[i]));
            }
    CHECK_MSG(worst < 0.02, "down then up: interior error %.3g", worst);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_tensor_release(z);
}

int main(void) {
    mt_test_seed(7);
    test_against_reference();
    test_strided_input();
    test_linear_ramp();
    test_cubic_smooth();
    test_cubic_interpolates();
    test_matches_upsample_trilinear();
    test_labels();
    test_bookkeeping();
    test_down_up();
    return mt_test_finish();
}
