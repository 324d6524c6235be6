/* LABELS: unit */
/* eval/metrics + eval/report: overlap metrics on hand-computed label maps
 * (including the empty-mask conventions of docs/metrics.md), surface
 * distances (HD95 / ASSD) on hand-computed cases with anisotropic spacing,
 * the exact EDT and surface metrics against brute force on random volumes,
 * aggregation, and the CSV / JSON reports (content, atomicity, errors). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/metrics.h"
#include "eval/report.h"
#include "mt_test.h"

static char g_dir[256];

#define CHECK_NAN(x) CHECK_MSG(isnan(x), "%s = %.9g, expected NaN", #x, (double)(x))

static mt_tensor *map_u8(int64_t D, int64_t H, int64_t W, const int *v) {
    mt_tensor *t = mt_tensor_new(MT_U8, MT_SHAPE(D, H, W), MT_DEVICE_CPU);
    uint8_t *p = (uint8_t *)mt_tensor_data(t);
    for (int64_t i = 0; i < D * H * W; i++) p[i] = (uint8_t)v[i];
    return t;
}

static mt_tensor *map_i32(int64_t D, int64_t H, int64_t W, const int *v) {
    mt_tensor *t = mt_tensor_new(MT_I32, MT_SHAPE(D, H, W), MT_DEVICE_CPU);
    int32_t *p = (int32_t *)mt_tensor_data(t);
    for (int64_t i = 0; i < D * H * W; i++) p[i] = v[i];
    return t;
}

/* ------------------------------------------------------ overlap metrics */

static void test_overlap_hand(void) {
    /* (1, 2, 5) maps, flat index order:
     * ref  0 1 1 2 0 | 1 1 0 2 2
     * pred 0 1 0 2 2 | 1 1 1 0 2
     * label 1: ref {1,2,5,6}, pred {1,5,6,7}: TP 3 FP 1 FN 1 TN 5
     * label 2: ref {3,8,9},   pred {3,4,9}:   TP 2 FP 1 FN 1 TN 6
     * label 3: absent from both:              TP 0 FP 0 FN 0 TN 10 */
    static const int ref[] = {0, 1, 1, 2, 0, 1, 1, 0, 2, 2};
    static const int pred[] = {0, 1, 0, 2, 2, 1, 1, 1, 0, 2};
    mt_tensor *r = map_i32(1, 2, 5, ref), *p = map_u8(1, 2, 5, pred);
    int labels[] = {1, 2, 3};
    mt_eval_confusion c[3];
    CHECK(mt_eval_confusion_count(c, p, r, 3, labels) == MT_OK);
    CHECK(c[0].tp == 3 && c[0].fp == 1 && c[0].fn == 1 && c[0].tn == 5);
    CHECK(c[1].tp == 2 && c[1].fp == 1 && c[1].fn == 1 && c[1].tn == 6);
    CHECK(c[2].tp == 0 && c[2].fp == 0 && c[2].fn == 0 && c[2].tn == 10);

    CHECK_NEAR(mt_eval_dice(&c[0]), 0.75, 1e-15);
    CHECK_NEAR(mt_eval_iou(&c[0]), 0.6, 1e-15);
    CHECK_NEAR(mt_eval_sensitivity(&c[0]), 0.75, 1e-15);
    CHECK_NEAR(mt_eval_specificity(&c[0]), 5.0 / 6.0, 1e-15);
    CHECK_NEAR(mt_eval_precision(&c[0]), 0.75, 1e-15);
    CHECK_NEAR(mt_eval_npv(&c[0]), 5.0 / 6.0, 1e-15);

    CHECK_NEAR(mt_eval_dice(&c[1]), 4.0 / 6.0, 1e-15);
    CHECK_NEAR(mt_eval_iou(&c[1]), 0.5, 1e-15);
    CHECK_NEAR(mt_eval_sensitivity(&c[1]), 2.0 / 3.0, 1e-15);
    CHECK_NEAR(mt_eval_specificity(&c[1]), 6.0 / 7.0, 1e-15);
    CHECK_NEAR(mt_eval_precision(&c[1]), 2.0 / 3.0, 1e-15);
    CHECK_NEAR(mt_eval_npv(&c[1]), 6.0 / 7.0, 1e-15);

    /* both empty: Dice = IoU = 1, sensitivity / precision undefined */
    CHECK_NEAR(mt_eval_dice(&c[2]), 1.0, 0);
    CHECK_NEAR(mt_eval_iou(&c[2]), 1.0, 0);
    CHECK_NAN(mt_eval_sensitivity(&c[2]));
    CHECK_NAN(mt_eval_precision(&c[2]));
    CHECK_NEAR(mt_eval_specificity(&c[2]), 1.0, 0);
    CHECK_NEAR(mt_eval_npv(&c[2]), 1.0, 0);

    /* the whole case (u8 prediction, i32 reference), spacing 1 */
    double sp[3] = {1, 1, 1};
    mt_eval_class_result res[3];
    CHECK(mt_eval_case(res, p, r, 3, labels, sp, 1) == MT_OK);
    CHECK_NEAR(res[0].v[MT_METRIC_DICE], 0.75, 1e-15);
    CHECK_NEAR(res[1].v[MT_METRIC_NPV], 6.0 / 7.0, 1e-15);
    CHECK_NEAR(res[2].v[MT_METRIC_HD95], 0.0, 0);
    CHECK_NEAR(res[2].v[MT_METRIC_ASD], 0.0, 0);
    CHECK(res[0].c.tp == 3 && res[1].c.fn == 1);
    /* without surface metrics HD95/ASD stay NaN */
    CHECK(mt_eval_case(res, p, r, 3, labels, NULL, 0) == MT_OK);
    CHECK_NAN(res[0].v[MT_METRIC_HD95]);
    CHECK_NAN(res[0].v[MT_METRIC_ASD]);
    CHECK_NEAR(res[0].v[MT_METRIC_IOU], 0.6, 1e-15);
    mt_tensor_release(r);
    mt_tensor_release(p);
}

static void test_one_empty(void) {
    /* label 1 only in the reference, label 2 only in the prediction */
    static const int ref[] = {0, 1, 1, 0, 0, 0};
    static const int pred[] = {0, 0, 0, 2, 2, 0};
    mt_tensor *r = map_u8(1, 1, 6, ref), *p = map_u8(1, 1, 6, pred);
    int labels[] = {1, 2};
    double sp[3] = {1, 1, 1};
    mt_eval_class_result res[2];
    CHECK(mt_eval_case(res, p, r, 2, labels, sp, 1) == MT_OK);
    /* prediction empty */
    CHECK_NEAR(res[0].v[MT_METRIC_DICE], 0.0, 0);
    CHECK_NEAR(res[0].v[MT_METRIC_IOU], 0.0, 0);
    CHECK_NEAR(res[0].v[MT_METRIC_SENSITIVITY], 0.0, 0);
    CHECK_NAN(res[0].v[MT_METRIC_PRECISION]);
    CHECK_NEAR(res[0].v[MT_METRIC_SPECIFICITY], 1.0, 0);
    CHECK_NEAR(res[0].v[MT_METRIC_NPV], 4.0 / 6.0, 1e-15);
    CHECK_NAN(res[0].v[MT_METRIC_HD95]);
    CHECK_NAN(res[0].v[MT_METRIC_ASD]);
    /* reference empty */
    CHECK_NEAR(res[1].v[MT_METRIC_DICE], 0.0, 0);
    CHECK_NEAR(res[1].v[MT_METRIC_IOU], 0.0, 0);
    CHECK_NAN(res[1].v[MT_METRIC_SENSITIVITY]);
    CHECK_NEAR(res[1].v[MT_METRIC_PRECISION], 0.0, 0);
    CHECK_NEAR(res[1].v[MT_METRIC_SPECIFICITY], 4.0 / 6.0, 1e-15);
    CHECK_NAN(res[1].v[MT_METRIC_HD95]);
    CHECK_NAN(res[1].v[MT_METRIC_ASD]);

    /* everything foreground: no negatives -> specificity undefined; NPV too */
    static const int all1[] = {1, 1, 1, 1};
    mt_tensor *a = map_u8(1, 2, 2, all1);
    CHECK(mt_eval_case(res, a, a, 1, labels, sp, 1) == MT_OK);
    CHECK_NEAR(res[0].v[MT_METRIC_DICE], 1.0, 0);
    CHECK_NAN(res[0].v[MT_METRIC_SPECIFICITY]);
    CHECK_NAN(res[0].v[MT_METRIC_NPV]);
    CHECK_NEAR(res[0].v[MT_METRIC_HD95], 0.0, 0);
    CHECK_NEAR(res[0].v[MT_METRIC_ASD], 0.0, 0);
    mt_tensor_release(a);
    mt_tensor_release(r);
    mt_tensor_release(p);
}

static void test_errors(void) {
    static const int v[] = {0, 1, 0, 1, 1, 0};
    mt_tensor *a = map_u8(1, 2, 3, v), *b = map_u8(1, 3, 2, v);
    mt_tensor *f = mt_tensor_zeros(MT_F32, MT_SHAPE(1, 2, 3), MT_DEVICE_CPU);
    int labels[] = {1};
    double sp[3] = {1, 1, 1}, bad[3] = {1, 0, 1};
    mt_eval_class_result res[1];
    CHECK(mt_eval_case(res, a, b, 1, labels, sp, 1) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "(1, 2, 3)") && strstr(mt_error_msg(), "(1, 3, 2)"));
    CHECK(mt_eval_case(res, f, a, 1, labels, sp, 1) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "f32") != NULL);
    CHECK(mt_eval_case(res, a, a, 1, labels, bad, 1) == MT_ERR_INVALID);
    CHECK(strstr(mt_error_msg(), "spacing") != NULL);
    CHECK(mt_eval_case(res, a, a, 1, labels, NULL, 1) == MT_ERR_INVALID);
    mt_tensor *four = mt_tensor_zeros(MT_U8, MT_SHAPE(1, 1, 2, 3), MT_DEVICE_CPU);
    CHECK(mt_eval_case(res, four, four, 1, labels, sp, 0) == MT_ERR_INVALID);
    mt_eval_surface_result s;
    uint8_t m[6] = {1, 0, 0, 0, 0, 1};
    int64_t dims[3] = {1, 2, 3};
    CHECK(mt_eval_surface_distance(&s, m, m, dims, sp, 101) == MT_ERR_INVALID);
    mt_tensor_release(four);
    mt_tensor_release(a);
    mt_tensor_release(b);
    mt_tensor_release(f);
}

/* ------------------------------------------------------ surface metrics */

static void test_surface_line(void) {
    /* (1, 1, 8), spacing along W 2 mm; every voxel of a 1-voxel-thick
     * volume is a surface voxel (the outside counts as background).
     * pred x = 0..3, ref x = 2..6.
     * A (pred -> ref) = {4, 2, 0, 0} mm, B (ref -> pred) = {0, 0, 2, 4, 6} mm.
     * P95(A) = 2 + 0.85 * (4 - 2) = 3.7 (index 0.95 * 3 = 2.85);
     * P95(B) = 4 + 0.8 * (6 - 4) = 5.6 (index 0.95 * 4 = 3.8);
     * HD95 = 5.6; ASSD = (6 + 12) / 9 = 2; HD (P100) = 6. */
    static const int pred[] = {1, 1, 1, 1, 0, 0, 0, 0};
    static const int ref[] = {0, 0, 1, 1, 1, 1, 1, 0};
    uint8_t p[8], r[8];
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)pred[i];
        r[i] = (uint8_t)ref[i];
    }
    int64_t dims[3] = {1, 1, 8};
    double sp[3] = {3.0, 5.0, 2.0};
    mt_eval_surface_result s;
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 95) == MT_OK);
    CHECK_NEAR(s.hd, 5.6, 1e-12);
    CHECK_NEAR(s.asd, 2.0, 1e-12);
    CHECK(s.n_surf_pred == 4 && s.n_surf_ref == 5);
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 100) == MT_OK);
    CHECK_NEAR(s.hd, 6.0, 1e-12);
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 50) == MT_OK);
    /* P50(A) = 1 (between 0 and 2), P50(B) = 2 */
    CHECK_NEAR(s.hd, 2.0, 1e-12);

    /* the same through label maps and mt_eval_case */
    mt_tensor *tp = map_u8(1, 1, 8, pred), *tr = map_i32(1, 1, 8, ref);
    int labels[] = {1};
    mt_eval_class_result res[1];
    CHECK(mt_eval_case(res, tp, tr, 1, labels, sp, 1) == MT_OK);
    CHECK_NEAR(res[0].v[MT_METRIC_HD95], 5.6, 1e-12);
    CHECK_NEAR(res[0].v[MT_METRIC_ASD], 2.0, 1e-12);
    CHECK_NEAR(res[0].v[MT_METRIC_DICE], 2.0 * 2 / 9, 1e-15);
    mt_tensor_release(tp);
    mt_tensor_release(tr);
}

static void test_surface_points_anisotropic(void) {
    /* single voxels: ref at (0, 0, 0), pred at (2, 1, 3) in a (3, 2, 4)
     * volume, spacing (1.5, 0.7, 2.0): distance sqrt(3^2 + 0.7^2 + 6^2) */
    uint8_t p[24] = {0}, r[24] = {0};
    r[0] = 1;
    p[(2 * 2 + 1) * 4 + 3] = 1;
    int64_t dims[3] = {3, 2, 4};
    double sp[3] = {1.5, 0.7, 2.0};
    mt_eval_surface_result s;
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 95) == MT_OK);
    double d = sqrt(9.0 + 0.49 + 36.0);
    CHECK_NEAR(s.hd, d, 1e-12);
    CHECK_NEAR(s.asd, d, 1e-12);
}

static void test_surface_cubes(void) {
    /* (7, 7, 7): ref = [1..5]^3, pred = [1..5] x [1..5] x [1..4] (one W layer
     * less). Surfaces: pred 5*5*4 - 3*3*2 = 82 voxels, ref 125 - 27 = 98.
     * A: the 9 pred voxels x = 4, (z, y) in [2..4]^2 are inside ref (their
     *    x + 1 neighbour is ref), 1 W step from the ref face x = 5; the other
     *    73 lie on the ref surface -> 73 zeros + 9 * sW.
     * B: the 25 ref voxels of the face x = 5 are 1 W step from pred's face
     *    x = 4; the other 73 are pred surface voxels -> 73 zeros + 25 * sW.
     * With spacing 1: P95(A): index 0.95 * 81 = 76.95 >= 73 -> 1; P95(B):
     * 92.15 -> 1; HD95 = 1, ASSD = 34 / 180.
     * With spacing (0.8, 1.3, 2.5) the 9 A voxels may be closer to the
     * z = 1 / 5 or y = 1 / 5 faces: (z, y) with z in {2, 4}: 0.8 (6 voxels);
     * z = 3, y in {2, 4}: 1.3 (2); (3, 3): min(1.6, 2.6, 2.5) = 1.6. Sum A = 9;
     * B stays 25 * 2.5 = 62.5 (every pred voxel has x <= 4).
     * P95(A) = 0.8 (indices 73..78), P95(B) = 2.5: HD95 = 2.5,
     * ASSD = 71.5 / 180. */
    uint8_t p[343] = {0}, r[343] = {0};
    for (int z = 1; z <= 5; z++)
        for (int y = 1; y <= 5; y++)
            for (int x = 1; x <= 5; x++) {
                r[(z * 7 + y) * 7 + x] = 1;
                p[(z * 7 + y) * 7 + x] = x <= 4;
            }
    int64_t dims[3] = {7, 7, 7};
    double iso[3] = {1, 1, 1}, sp[3] = {0.8, 1.3, 2.5};
    mt_eval_surface_result s;
    CHECK(mt_eval_surface_distance(&s, p, r, dims, iso, 95) == MT_OK);
    CHECK(s.n_surf_pred == 82 && s.n_surf_ref == 98);
    CHECK_NEAR(s.hd, 1.0, 1e-12);
    CHECK_NEAR(s.asd, 34.0 / 180.0, 1e-12);
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 95) == MT_OK);
    CHECK_NEAR(s.hd, 2.5, 1e-12);
    CHECK_NEAR(s.asd, 71.5 / 180.0, 1e-12);
    /* swapping the roles gives the same symmetric metrics */
    CHECK(mt_eval_surface_distance(&s, r, p, dims, sp, 95) == MT_OK);
    CHECK_NEAR(s.hd, 2.5, 1e-12);
    CHECK_NEAR(s.asd, 71.5 / 180.0, 1e-12);
    /* Hausdorff distance (P100): max(1.6, 2.5) */
    CHECK(mt_eval_surface_distance(&s, p, r, dims, sp, 100) == MT_OK);
    CHECK_NEAR(s.hd, 2.5, 1e-12);

    /* surface voxels of the ref cube: the 27 interior ones are not */
    uint8_t surf[343];
    mt_eval_surface_voxels(surf, r, dims);
    int n = 0, interior_ok = 1;
    for (int i = 0; i < 343; i++) n += surf[i];
    for (int z = 2; z <= 4; z++)
        for (int y = 2; y <= 4; y++)
            for (int x = 2; x <= 4; x++) interior_ok &= !surf[(z * 7 + y) * 7 + x];
    CHECK(n == 98 && interior_ok);
}

/* ------------------------------------------- brute-force comparisons */

static int in_mask(const uint8_t *m, const int64_t *d, int64_t z, int64_t y, int64_t x) {
    if (z < 0 || y < 0 || x < 0 || z >= d[0] || y >= d[1] || x >= d[2]) return 0;
    return m[(z * d[1] + y) * d[2] + x] != 0;
}

static void naive_surface(uint8_t *s, const uint8_t *m, const int64_t *d) {
    for (int64_t z = 0; z < d[0]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[2]; x++) {
                int inside = in_mask(m, d, z, y, x);
                int all = in_mask(m, d, z - 1, y, x) && in_mask(m, d, z + 1, y, x) &&
                          in_mask(m, d, z, y - 1, x) && in_mask(m, d, z, y + 1, x) &&
                          in_mask(m, d, z, y, x - 1) && in_mask(m, d, z, y, x + 1);
                s[(z * d[1] + y) * d[2] + x] = (uint8_t)(inside && !all);
            }
}

static double naive_dist2(const int64_t *d, const double *sp, int64_t i, int64_t j) {
    int64_t zi = i / (d[1] * d[2]), yi = (i / d[2]) % d[1], xi = i % d[2];
    int64_t zj = j / (d[1] * d[2]), yj = (j / d[2]) % d[1], xj = j % d[2];
    double a = (double)(zi - zj) * sp[0], b = (double)(yi - yj) * sp[1], c = (double)(xi - xj) * sp[2];
    return a * a + b * b + c * c;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double naive_pct(double *v, int64_t n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmpd);
    double pos = q / 100.0 * (double)(n - 1);
    int64_t k = (int64_t)pos;
    if (k >= n - 1) return v[n - 1];
    return v[k] * (1.0 - (pos - (double)k)) + v[k + 1] * (pos - (double)k);
}

/* directed distances from surface s1 to surface s2 */
static int64_t naive_directed(double *out, double *sum, const uint8_t *s1, const uint8_t *s2,
                              const int64_t *d, const double *sp) {
    int64_t n = d[0] * d[1] * d[2], m = 0;
    *sum = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!s1[i]) continue;
        double best = INFINITY;
        for (int64_t j = 0; j < n; j++)
            if (s2[j]) {
                double v = naive_dist2(d, sp, i, j);
                if (v < best) best = v;
            }
        out[m++] = sqrt(best);
        *sum += sqrt(best);
    }
    return m;
}

static void test_edt_random(void) {
    mt_rng rng;
    mt_rng_init(&rng, 77);
    static const int64_t shapes[][3] = {{7, 9, 6}, {5, 1, 8}, {1, 11, 3}, {4, 4, 4}, {9, 2, 13}};
    double worst = 0;
    int inf_ok = 1;
    for (int trial = 0; trial < 20; trial++) {
        const int64_t *d = shapes[trial % 5];
        int64_t n = d[0] * d[1] * d[2];
        double sp[3];
        for (int a = 0; a < 3; a++) sp[a] = 0.3 + 2.5 * mt_rng_uniform(&rng);
        double density = trial < 15 ? 0.02 + 0.3 * mt_rng_uniform(&rng) : 0.0;
        uint8_t *f = calloc((size_t)n, 1);
        int64_t nf = 0;
        for (int64_t i = 0; i < n; i++) nf += f[i] = mt_rng_uniform(&rng) < density;
        if (trial == 15) f[n / 2] = 1, nf = 1; /* single feature */
        double *e = malloc((size_t)n * sizeof *e);
        mt_eval_edt_sq(e, f, d, sp);
        for (int64_t i = 0; i < n; i++) {
            double best = INFINITY;
            for (int64_t j = 0; j < n; j++)
                if (f[j]) {
                    double v = naive_dist2(d, sp, i, j);
                    if (v < best) best = v;
                }
            if (isinf(best)) {
                inf_ok &= isinf(e[i]) && e[i] > 0;
            } else {
                double err = fabs(e[i] - best) / (1.0 + best);
                if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
            }
        }
        (void)nf;
        free(f);
        free(e);
    }
    CHECK_MSG(worst < 1e-12, "EDT vs brute force: worst relative error %g", worst);
    CHECK(inf_ok);
}

static void test_surface_random(void) {
    mt_rng rng;
    mt_rng_init(&rng, 991);
    double worst_hd = 0, worst_asd = 0;
    int surf_ok = 1;
    for (int trial = 0; trial < 12; trial++) {
        int64_t d[3] = {3 + (int64_t)(mt_rng_uniform(&rng) * 6), 3 + (int64_t)(mt_rng_uniform(&rng) * 7),
                        2 + (int64_t)(mt_rng_uniform(&rng) * 8)};
        int64_t n = d[0] * d[1] * d[2];
        double sp[3];
        for (int a = 0; a < 3; a++) sp[a] = 0.5 + 2.0 * mt_rng_uniform(&rng);
        /* blobby masks: random seeds dilated once, so surfaces have interiors */
        uint8_t *p = calloc((size_t)n, 1), *r = calloc((size_t)n, 1);
        for (int k = 0; k < 2; k++) {
            uint8_t *m = k ? r : p;
            uint8_t *seed = calloc((size_t)n, 1);
            for (int64_t i = 0; i < n; i++) seed[i] = mt_rng_uniform(&rng) < 0.12;
            for (int64_t z = 0; z < d[0]; z++)
                for (int64_t y = 0; y < d[1]; y++)
                    for (int64_t x = 0; x < d[2]; x++)
                        m[(z * d[1] + y) * d[2] + x] =
                            in_mask(seed, d, z, y, x) || in_mask(seed, d, z - 1, y, x) ||
                            in_mask(seed, d, z, y + 1, x) || in_mask(seed, d, z, y, x - 1);
            free(seed);
        }
        uint8_t *sp1 = malloc((size_t)n), *sr1 = malloc((size_t)n), *chk = malloc((size_t)n);
        naive_surface(sp1, p, d);
        naive_surface(sr1, r, d);
        mt_eval_surface_voxels(chk, p, d);
        surf_ok &= !memcmp(chk, sp1, (size_t)n);
        double *da = malloc((size_t)n * sizeof *da), *db = malloc((size_t)n * sizeof *db), sa, sb;
        int64_t na = naive_directed(da, &sa, sp1, sr1, d, sp);
        int64_t nb = naive_directed(db, &sb, sr1, sp1, d, sp);
        mt_eval_surface_result s;
        CHECK(mt_eval_surface_distance(&s, p, r, d, sp, 95) == MT_OK);
        if (na > 0 && nb > 0) {
            double ha = naive_pct(da, na, 95), hb = naive_pct(db, nb, 95);
            double hd = ha > hb ? ha : hb, asd = (sa + sb) / (double)(na + nb);
            double e1 = fabs(s.hd - hd), e2 = fabs(s.asd - asd);
            if (!(e1 <= worst_hd)) worst_hd = isnan(e1) ? INFINITY : e1;
            if (!(e2 <= worst_asd)) worst_asd = isnan(e2) ? INFINITY : e2;
            CHECK(s.n_surf_pred == na && s.n_surf_ref == nb);
        }
        free(p);
        free(r);
        free(sp1);
        free(sr1);
        free(chk);
        free(da);
        free(db);
    }
    CHECK(surf_ok);
    CHECK_MSG(worst_hd < 1e-10, "HD95 vs brute force: worst error %g", worst_hd);
    CHECK_MSG(worst_asd < 1e-10, "ASSD vs brute force: worst error %g", worst_asd);
}

/* ------------------------------------------------------- aggregation */

static void fill_result(mt_eval_class_result *r, double dice, double hd) {
    memset(r, 0, sizeof *r);
    for (int m = 0; m < MT_METRIC_COUNT; m++) r->v[m] = 0.5;
    r->v[MT_METRIC_DICE] = dice;
    r->v[MT_METRIC_HD95] = hd;
    r->c.tp = 1;
    r->c.fp = 2;
    r->c.fn = 3;
    r->c.tn = 4;
}

static void build_results(mt_eval_results *res) {
    int labels[] = {1, 2};
    const char *names[] = {"anterior", NULL};
    CHECK(mt_eval_results_init(res, 2, labels, names) == MT_OK);
    mt_eval_class_result r[2];
    fill_result(&r[0], 0.5, 2.0);
    fill_result(&r[1], 1.0, NAN);
    CHECK(mt_eval_results_add(res, "case_a", r) == MT_OK);
    fill_result(&r[0], 0.75, 4.0);
    fill_result(&r[1], 0.25, NAN);
    CHECK(mt_eval_results_add(res, "case,\"b\"", r) == MT_OK);
    fill_result(&r[0], 1.0, NAN);
    fill_result(&r[1], 0.0, 3.0);
    CHECK(mt_eval_results_add(res, "case_c", r) == MT_OK);
}

static void test_aggregate(void) {
    mt_eval_results res;
    build_results(&res);
    CHECK(res.n_cases == 3 && !strcmp(res.class_names[1], "class_2"));
    mt_eval_stat s = mt_eval_results_stat(&res, 0, MT_METRIC_DICE);
    CHECK_NEAR(s.mean, 0.75, 1e-15);
    CHECK_NEAR(s.std, 0.25, 1e-15); /* sample std of 0.5, 0.75, 1 */
    CHECK(s.count == 3 && s.n_nan == 0);
    s = mt_eval_results_stat(&res, 0, MT_METRIC_HD95);
    CHECK_NEAR(s.mean, 3.0, 1e-15);
    CHECK_NEAR(s.std, sqrt(2.0), 1e-15);
    CHECK(s.count == 2 && s.n_nan == 1);
    s = mt_eval_results_stat(&res, 1, MT_METRIC_HD95);
    CHECK_NEAR(s.mean, 3.0, 0);
    CHECK_NAN(s.std);
    CHECK(s.count == 1 && s.n_nan == 2);
    /* class mean: (0.75 + (1 + 0.25 + 0) / 3) / 2 */
    CHECK_NEAR(mt_eval_results_class_mean(&res, MT_METRIC_DICE), (0.75 + 1.25 / 3.0) / 2.0, 1e-15);
    CHECK_NEAR(mt_eval_results_class_mean(&res, MT_METRIC_HD95), 3.0, 1e-15);
    mt_eval_results_free(&res);
    mt_eval_results bad;
    CHECK(mt_eval_results_init(&bad, 0, NULL, NULL) == MT_ERR_INVALID);
    mt_eval_results_free(&bad);
}

/* ----------------------------------------------------------- reports */

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void test_reports(void) {
    mt_eval_results res;
    build_results(&res);
    char csv[320], json[320];
    snprintf(csv, sizeof csv, "%s/metrics.csv", g_dir);
    snprintf(json, sizeof json, "%s/summary.json", g_dir);
    CHECK(mt_eval_write_csv(csv, &res) == MT_OK);
    CHECK(mt_eval_write_json(json, &res) == MT_OK);
    CHECK(count_files(g_dir) == 2); /* no temp files left */

    char *c = read_all(csv);
    CHECK(c != NULL);
    if (c) {
        const char *expect =
            "case,class,label,dice,iou,hd95,asd,sensitivity,specificity,precision,npv,tp,fp,fn,tn\n"
            "case_a,anterior,1,0.5,0.5,2,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n"
            "case_a,class_2,2,1,0.5,nan,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n"
            "\"case,\"\"b\"\"\",anterior,1,0.75,0.5,4,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n"
            "\"case,\"\"b\"\"\",class_2,2,0.25,0.5,nan,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n"
            "case_c,anterior,1,1,0.5,nan,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n"
            "case_c,class_2,2,0,0.5,3,0.5,0.5,0.5,0.5,0.5,1,2,3,4\n";
        CHECK_MSG(!strcmp(c, expect), "CSV content:\n%s", c);
    }
    free(c);
    char *j = read_all(json);
    CHECK(j != NULL);
    if (j) {
        CHECK(strstr(j, "\"n_cases\": 3") != NULL);
        CHECK(strstr(j, "{\"label\": 1, \"name\": \"anterior\",\n     \"dice\": {\"mean\": 0.75, "
                        "\"std\": 0.25, \"count\": 3, \"n_nan\": 0}") != NULL);
        CHECK(strstr(j, "\"hd95\": {\"mean\": 3, \"std\": null, \"count\": 1, \"n_nan\": 2}") != NULL);
        CHECK(strstr(j, "{\"case\": \"case,\\\"b\\\"\", \"classes\": [{\"label\": 1, \"name\": "
                        "\"anterior\", \"dice\": 0.75, \"iou\": 0.5, \"hd95\": 4,") != NULL);
        CHECK(strstr(j, "\"hd95\": null") != NULL);
        CHECK(strstr(j, "\"foreground_mean\": {\"dice\": 0.58333") != NULL);
        int bare_nan = 0; /* "nan" other than inside "n_nan" */
        for (const char *q = strstr(j, "nan"); q; q = strstr(q + 1, "nan"))
            bare_nan |= q == j || q[-1] != '_';
        CHECK(!bare_nan);
        /* balanced brackets outside strings */
        int depth = 0, ok = 1, in_str = 0;
        for (const char *q = j; *q; q++) {
            if (in_str) {
                if (*q == '\\') q++;
                else if (*q == '"') in_str = 0;
                continue;
            }
            if (*q == '"') in_str = 1;
            else if (*q == '{' || *q == '[') depth++;
            else if (*q == '}' || *q == ']') ok &= --depth >= 0;
        }
        CHECK(ok && depth == 0 && !in_str);
    }
    free(j);

    /* an existing file is replaced whole */
    mt_eval_class_result r[2];
    fill_result(&r[0], 0.125, 1.0);
    fill_result(&r[1], 0.125, 1.0);
    CHECK(mt_eval_results_add(&res, "case_d", r) == MT_OK);
    CHECK(mt_eval_write_csv(csv, &res) == MT_OK);
    c = read_all(csv);
    CHECK(c && strstr(c, "case_d,class_2,2,0.125,") && strstr(c, "case_a,anterior"));
    free(c);

    /* unwritable destination: an I/O error naming it, nothing created */
    char bad[360];
    snprintf(bad, sizeof bad, "%s/missing_dir/out.csv", g_dir);
    CHECK(mt_eval_write_csv(bad, &res) == MT_ERR_IO);
    CHECK(strstr(mt_error_msg(), "missing_dir") != NULL);
    CHECK(mt_eval_write_json(bad, &res) == MT_ERR_IO);
    CHECK(count_files(g_dir) == 2);
    mt_eval_results_free(&res);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mt_test_metrics_XXXXXX");
    MT_CHECK(mkdtemp(g_dir));
    test_overlap_hand();
    test_one_empty();
    test_errors();
    test_surface_line();
    test_surface_points_anisotropic();
    test_surface_cubes();
    test_edt_random();
    test_surface_random();
    test_aggregate();
    test_reports();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return mt_test_finish();
}
