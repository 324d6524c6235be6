/* Segmentation metrics: confusion counts, overlap metrics, surface distances
 * through an exact separable Euclidean distance transform, and per-case
 * results with their aggregation. Definitions and conventions: eval/metrics.h
 * and docs/metrics.md. */
#include "eval/metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Work below this many voxels runs on one thread. */
#define PAR_MIN 32768

static const char *const metric_names[MT_METRIC_COUNT] = {
    "dice", "iou", "hd95", "asd", "sensitivity", "specificity", "precision", "npv"};

const char *mt_metric_name(mt_metric m) {
    MT_CHECK(m >= 0 && m < MT_METRIC_COUNT);
    return metric_names[m];
}

/* ------------------------------------------------------ overlap metrics */

static double ratio(int64_t num, int64_t den) { return den ? (double)num / (double)den : NAN; }

double mt_eval_dice(const mt_eval_confusion *c) {
    int64_t den = 2 * c->tp + c->fp + c->fn;
    return den ? 2.0 * (double)c->tp / (double)den : 1.0;
}

double mt_eval_iou(const mt_eval_confusion *c) {
    int64_t den = c->tp + c->fp + c->fn;
    return den ? (double)c->tp / (double)den : 1.0;
}

double mt_eval_sensitivity(const mt_eval_confusion *c) { return ratio(c->tp, c->tp + c->fn); }
double mt_eval_specificity(const mt_eval_confusion *c) { return ratio(c->tn, c->tn + c->fp); }
double mt_eval_precision(const mt_eval_confusion *c) { return ratio(c->tp, c->tp + c->fp); }
double mt_eval_npv(const mt_eval_confusion *c) { return ratio(c->tn, c->tn + c->fn); }

/* ------------------------------------------------------- label-map input */

static mt_status check_label_map(const mt_tensor *t, const char *what) {
    if (!t) return mt_error_set(MT_ERR_INVALID, "eval: %s label map is missing", what);
    if (t->dtype != MT_U8 && t->dtype != MT_I32)
        return mt_error_set(MT_ERR_INVALID, "eval: %s label map has dtype %s (expected u8 or i32)",
                            what, mt_dtype_name(t->dtype));
    if (t->ndim != 3) {
        char b[96];
        return mt_error_set(MT_ERR_INVALID, "eval: %s label map has shape %s (expected (D, H, W))",
                            what, mt_tensor_shape_str(t, b, sizeof b));
    }
    return MT_OK;
}

static mt_status check_pair(const mt_tensor *pred, const mt_tensor *ref) {
    MT_TRY(check_label_map(pred, "prediction"));
    MT_TRY(check_label_map(ref, "reference"));
    if (!mt_tensor_same_shape(pred, ref)) {
        char a[96], b[96];
        return mt_error_set(MT_ERR_INVALID,
                            "eval: prediction shape %s differs from reference shape %s",
                            mt_tensor_shape_str(pred, a, sizeof a), mt_tensor_shape_str(ref, b, sizeof b));
    }
    return MT_OK;
}

/* Labels as a malloc'd host int32 array in row-major order. */
static int32_t *host_labels(const mt_tensor *t) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    mt_tensor *c = mt_tensor_contiguous(h);
    int64_t n = mt_tensor_numel(c);
    int32_t *out = malloc((size_t)(n > 0 ? n : 1) * sizeof *out);
    MT_CHECK(out);
    if (c->dtype == MT_I32) {
        memcpy(out, mt_tensor_data(c), (size_t)n * sizeof *out);
    } else {
        const uint8_t *p = (const uint8_t *)mt_tensor_data(c);
        for (int64_t i = 0; i < n; i++) out[i] = p[i];
    }
    mt_tensor_release(c);
    mt_tensor_release(h);
    return out;
}

static mt_eval_confusion count_label(const int32_t *p, const int32_t *r, int64_t n, int label) {
    int64_t tp = 0, fp = 0, fn = 0;
#pragma omp parallel for if (n > PAR_MIN) reduction(+ : tp, fp, fn) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int a = p[i] == label, b = r[i] == label;
        tp += a & b;
        fp += a & !b;
        fn += (!a) & b;
    }
    mt_eval_confusion c = {tp, fp, fn, n - tp - fp - fn};
    return c;
}

mt_status mt_eval_confusion_count(mt_eval_confusion *out, const mt_tensor *pred,
                                  const mt_tensor *ref, int n_labels, const int *labels) {
    MT_TRY(check_pair(pred, ref));
    int32_t *p = host_labels(pred), *r = host_labels(ref);
    int64_t n = mt_tensor_numel(pred);
    for (int k = 0; k < n_labels; k++) out[k] = count_label(p, r, n, labels[k]);
    free(p);
    free(r);
    return MT_OK;
}

/* ------------------------------------------------------------- surfaces */

void mt_eval_surface_voxels(uint8_t *surf, const uint8_t *mask, const int64_t *dims) {
    const int64_t D = dims[0], H = dims[1], W = dims[2], HW = H * W;
#pragma omp parallel for if (D * HW > PAR_MIN) schedule(static)
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = z * HW + y * W + x;
                uint8_t s = 0;
                if (mask[i]) {
                    s = z == 0 || z == D - 1 || y == 0 || y == H - 1 || x == 0 || x == W - 1 ||
                        !mask[i - HW] || !mask[i + HW] || !mask[i - W] || !mask[i + W] ||
                        !mask[i - 1] || !mask[i + 1];
                }
                surf[i] = s;
            }
}

/* ------------------------------------------------- distance transform */

/* 1-D squared distance transform of sampled function f (n samples at
 * positions q * s): d[q] = min_r (s (q - r))^2 + f[r] (Felzenszwalb &
 * Huttenlocher 2012, lower envelope of parabolas; +inf samples are skipped).
 * v[n], z[n + 1] are scratch. */
static void edt_1d(double *d, const double *f, int64_t n, double s, int64_t *v, double *z) {
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (isinf(f[q])) continue;
        double xq = (double)q * s, fq = f[q] + xq * xq;
        if (k < 0) {
            k = 0;
            v[0] = q;
            z[0] = -INFINITY;
            continue;
        }
        double sq;
        for (;;) {
            double xr = (double)v[k] * s;
            sq = (fq - (f[v[k]] + xr * xr)) / (2.0 * (xq - xr));
            if (sq <= z[k] && k > 0) k--;
            else break;
        }
        /* k == 0 and sq <= z[0] = -inf cannot happen (sq is finite) */
        k++;
        v[k] = q;
        z[k] = sq;
    }
    if (k < 0) {
        for (int64_t q = 0; q < n; q++) d[q] = INFINITY;
        return;
    }
    z[k + 1] = INFINITY;
    int64_t j = 0;
    for (int64_t q = 0; q < n; q++) {
        double xq = (double)q * s;
        while (z[j + 1] < xq) j++;
        double dx = xq - (double)v[j] * s;
        d[q] = dx * dx + f[v[j]];
    }
}

/* Transforms every line of `a` along axis `ax` in place. */
static void edt_axis(double *a, const int64_t *dims, int ax, double s) {
    int64_t L = dims[ax], inner = 1;
    for (int d = ax + 1; d < 3; d++) inner *= dims[d];
    int64_t n = dims[0] * dims[1] * dims[2], lines = n / L;
#pragma omp parallel if (n > PAR_MIN)
    {
        double *f = malloc((size_t)L * sizeof *f), *d = malloc((size_t)L * sizeof *d);
        double *z = malloc((size_t)(L + 1) * sizeof *z);
        int64_t *v = malloc((size_t)L * sizeof *v);
        MT_CHECK(f && d && z && v);
#pragma omp for schedule(static)
        for (int64_t l = 0; l < lines; l++) {
            int64_t base = (l / inner) * L * inner + l % inner;
            for (int64_t q = 0; q < L; q++) f[q] = a[base + q * inner];
            edt_1d(d, f, L, s, v, z);
            for (int64_t q = 0; q < L; q++) a[base + q * inner] = d[q];
        }
        free(f);
        free(d);
        free(z);
        free(v);
    }
}

void mt_eval_edt_sq(double *out, const uint8_t *feature, const int64_t *dims,
                    const double *spacing) {
    int64_t n = dims[0] * dims[1] * dims[2];
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = feature[i] ? 0.0 : INFINITY;
    for (int ax = 2; ax >= 0; ax--) edt_axis(out, dims, ax, spacing[ax]);
}

/* ------------------------------------------------------ surface metrics */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile(a, q) with the default linear interpolation; a sorted, n > 0. */
static double percentile_sorted(const double *a, int64_t n, double q) {
    double idx = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(idx);
    if (lo < 0) lo = 0;
    if (lo >= n - 1) return a[n - 1];
    double t = idx - (double)lo;
    return a[lo] + (a[lo + 1] - a[lo]) * t;
}

/* Distances from each voxel of `from` to the nearest voxel of `to` (mm),
 * sorted ascending into *out (malloc'd); returns the count and their sum. */
static int64_t directed_distances(double **out, double *sum, const uint8_t *from,
                                  const uint8_t *to, const int64_t *dims, const double *spacing,
                                  double *scratch) {
    int64_t n = dims[0] * dims[1] * dims[2], m = 0;
    for (int64_t i = 0; i < n; i++) m += from[i] != 0;
    mt_eval_edt_sq(scratch, to, dims, spacing);
    double *d = malloc((size_t)(m > 0 ? m : 1) * sizeof *d);
    MT_CHECK(d);
    int64_t k = 0;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        if (from[i]) {
            d[k] = sqrt(scratch[i]);
            s += d[k];
            k++;
        }
    qsort(d, (size_t)m, sizeof *d, cmp_double);
    *out = d;
    *sum = s;
    return m;
}

mt_status mt_eval_surface_distance(mt_eval_surface_result *out, const uint8_t *pred,
                                   const uint8_t *ref, const int64_t *dims,
                                   const double *spacing, double percentile) {
    for (int a = 0; a < 3; a++) {
        if (dims[a] <= 0)
            return mt_error_set(MT_ERR_INVALID, "eval: volume size %lld along axis %d",
                                (long long)dims[a], a);
        if (!(spacing[a] > 0) || !isfinite(spacing[a]))
            return mt_error_set(MT_ERR_INVALID, "eval: spacing %g along axis %d is not a positive number",
                                spacing[a], a);
    }
    if (!(percentile >= 0 && percentile <= 100))
        return mt_error_set(MT_ERR_INVALID, "eval: percentile %g outside [0, 100]", percentile);
    const int64_t D = dims[0], H = dims[1], W = dims[2];
    /* bounding box of pred | ref; emptiness of each */
    int64_t lo[3] = {D, H, W}, hi[3] = {-1, -1, -1};
    int any_p = 0, any_r = 0;
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                int p = pred[i] != 0, r = ref[i] != 0;
                any_p |= p;
                any_r |= r;
                if (p | r) {
                    int64_t c[3] = {z, y, x};
                    for (int a = 0; a < 3; a++) {
                        if (c[a] < lo[a]) lo[a] = c[a];
                        if (c[a] > hi[a]) hi[a] = c[a];
                    }
                }
            }
    out->n_surf_pred = out->n_surf_ref = 0;
    if (!any_p && !any_r) {
        out->hd = 0.0;
        out->asd = 0.0;
        return MT_OK;
    }
    /* crop: outside the box both masks are empty, which is how the volume's
     * outside is treated too, so surfaces and distances are unchanged */
    int64_t cd[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
    int64_t cn = cd[0] * cd[1] * cd[2];
    uint8_t *mp = malloc((size_t)cn), *mr = malloc((size_t)cn);
    uint8_t *sp = malloc((size_t)cn), *sr = malloc((size_t)cn);
    MT_CHECK(mp && mr && sp && sr);
    for (int64_t z = 0; z < cd[0]; z++)
        for (int64_t y = 0; y < cd[1]; y++)
            for (int64_t x = 0; x < cd[2]; x++) {
                int64_t i = ((z + lo[0]) * H + (y + lo[1])) * W + (x + lo[2]);
                int64_t j = (z * cd[1] + y) * cd[2] + x;
                mp[j] = pred[i] != 0;
                mr[j] = ref[i] != 0;
            }
    mt_eval_surface_voxels(sp, mp, cd);
    mt_eval_surface_voxels(sr, mr, cd);
    for (int64_t j = 0; j < cn; j++) {
        out->n_surf_pred += sp[j];
        out->n_surf_ref += sr[j];
    }
    if (!any_p || !any_r) {
        out->hd = NAN;
        out->asd = NAN;
    } else {
        double *scratch = malloc((size_t)cn * sizeof *scratch);
        MT_CHECK(scratch);
        double *da, *db, sa, sb;
        int64_t na = directed_distances(&da, &sa, sp, sr, cd, spacing, scratch);
        int64_t nb = directed_distances(&db, &sb, sr, sp, cd, spacing, scratch);
        double pa = percentile_sorted(da, na, percentile), pb = percentile_sorted(db, nb, percentile);
        out->hd = pa > pb ? pa : pb;
        out->asd = (sa + sb) / (double)(na + nb);
        free(da);
        free(db);
        free(scratch);
    }
    free(mp);
    free(mr);
    free(sp);
    free(sr);
    return MT_OK;
}

/* ------------------------------------------------------------ per case */

mt_status mt_eval_case(mt_eval_class_result *out, const mt_tensor *pred, const mt_tensor *ref,
                       int n_labels, const int *labels, const double *spacing, int surface) {
    MT_TRY(check_pair(pred, ref));
    if (surface) {
        if (!spacing) return mt_error_set(MT_ERR_INVALID, "eval: surface metrics need a spacing");
        for (int a = 0; a < 3; a++)
            if (!(spacing[a] > 0) || !isfinite(spacing[a]))
                return mt_error_set(MT_ERR_INVALID,
                                    "eval: spacing %g along axis %d is not a positive number",
                                    spacing[a], a);
    }
    int32_t *p = host_labels(pred), *r = host_labels(ref);
    int64_t n = mt_tensor_numel(pred);
    uint8_t *mp = surface ? malloc((size_t)n) : NULL, *mr = surface ? malloc((size_t)n) : NULL;
    MT_CHECK(!surface || (mp && mr));
    mt_status st = MT_OK;
    for (int k = 0; k < n_labels && st == MT_OK; k++) {
        mt_eval_class_result *o = &out[k];
        o->c = count_label(p, r, n, labels[k]);
        o->v[MT_METRIC_DICE] = mt_eval_dice(&o->c);
        o->v[MT_METRIC_IOU] = mt_eval_iou(&o->c);
        o->v[MT_METRIC_SENSITIVITY] = mt_eval_sensitivity(&o->c);
        o->v[MT_METRIC_SPECIFICITY] = mt_eval_specificity(&o->c);
        o->v[MT_METRIC_PRECISION] = mt_eval_precision(&o->c);
        o->v[MT_METRIC_NPV] = mt_eval_npv(&o->c);
        o->v[MT_METRIC_HD95] = NAN;
        o->v[MT_METRIC_ASD] = NAN;
        if (surface) {
            int lab = labels[k];
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) {
                mp[i] = p[i] == lab;
                mr[i] = r[i] == lab;
            }
            mt_eval_surface_result s;
            st = mt_eval_surface_distance(&s, mp, mr, pred->shape, spacing, 95.0);
            if (st == MT_OK) {
                o->v[MT_METRIC_HD95] = s.hd;
                o->v[MT_METRIC_ASD] = s.asd;
            }
        }
    }
    free(mp);
    free(mr);
    free(p);
    free(r);
    return st;
}

/* ------------------------------------------------------------- results */

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    MT_CHECK(d);
    memcpy(d, s, n);
    return d;
}

mt_status mt_eval_results_init(mt_eval_results *res, int n_classes, const int *labels,
                               const char *const *names) {
    memset(res, 0, sizeof *res);
    if (n_classes <= 0)
        return mt_error_set(MT_ERR_INVALID, "eval: %d classes to evaluate (need at least one)",
                            n_classes);
    res->n_classes = n_classes;
    res->labels = malloc((size_t)n_classes * sizeof *res->labels);
    res->class_names = calloc((size_t)n_classes, sizeof *res->class_names);
    MT_CHECK(res->labels && res->class_names);
    for (int k = 0; k < n_classes; k++) {
        res->labels[k] = labels[k];
        if (names && names[k]) {
            res->class_names[k] = dup_str(names[k]);
        } else {
            char b[32];
            snprintf(b, sizeof b, "class_%d", labels[k]);
            res->class_names[k] = dup_str(b);
        }
    }
    return MT_OK;
}

mt_status mt_eval_results_add(mt_eval_results *res, const char *case_name,
                              const mt_eval_class_result *r) {
    if (!case_name) return mt_error_set(MT_ERR_INVALID, "eval: case without a name");
    if (res->n_cases == res->cap_cases) {
        int cap = res->cap_cases ? 2 * res->cap_cases : 16;
        char **cn = realloc(res->case_names, (size_t)cap * sizeof *cn);
        MT_CHECK(cn);
        res->case_names = cn;
        mt_eval_class_result *rr = realloc(res->r, (size_t)cap * res->n_classes * sizeof *rr);
        MT_CHECK(rr);
        res->r = rr;
        res->cap_cases = cap;
    }
    res->case_names[res->n_cases] = dup_str(case_name);
    memcpy(res->r + (size_t)res->n_cases * res->n_classes, r, (size_t)res->n_classes * sizeof *r);
    res->n_cases++;
    return MT_OK;
}

void mt_eval_results_free(mt_eval_results *res) {
    if (!res) return;
    for (int k = 0; k < res->n_classes; k++) free(res->class_names ? res->class_names[k] : NULL);
    for (int i = 0; i < res->n_cases; i++) free(res->case_names[i]);
    free(res->class_names);
    free(res->labels);
    free(res->case_names);
    free(res->r);
    memset(res, 0, sizeof *res);
}

mt_eval_stat mt_eval_results_stat(const mt_eval_results *res, int class_idx, mt_metric m) {
    MT_CHECK(class_idx >= 0 && class_idx < res->n_classes && m >= 0 && m < MT_METRIC_COUNT);
    mt_eval_stat s = {NAN, NAN, 0, 0};
    double sum = 0;
    for (int i = 0; i < res->n_cases; i++) {
        double v = res->r[(size_t)i * res->n_classes + class_idx].v[m];
        if (isnan(v)) {
            s.n_nan++;
        } else {
            sum += v;
            s.count++;
        }
    }
    if (s.count == 0) return s;
    s.mean = sum / (double)s.count;
    if (s.count >= 2) {
        double ss = 0;
        for (int i = 0; i < res->n_cases; i++) {
            double v = res->r[(size_t)i * res->n_classes + class_idx].v[m];
            if (!isnan(v)) ss += (v - s.mean) * (v - s.mean);
        }
        s.std = sqrt(ss / (double)(s.count - 1));
    }
    return s;
}

double mt_eval_results_class_mean(const mt_eval_results *res, mt_metric m) {
    double sum = 0;
    int n = 0;
    for (int k = 0; k < res->n_classes; k++) {
        mt_eval_stat s = mt_eval_results_stat(res, k, m);
        if (s.count > 0) {
            sum += s.mean;
            n++;
        }
    }
    return n ? sum / n : NAN;
}
