/* Crop, normalisation, resampling, fingerprint and the inverse mapping
 * (see data/preprocess.h). */
#include "data/preprocess.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "core/rng.h"

#define FPRINT_STREAM_TAG 0x46505254ull /* "FPRT" */

/* ------------------------------------------------------------- schemes */

const char *mt_norm_scheme_name(mt_norm_scheme s) {
    switch (s) {
    case MT_NORM_SCHEME_ZSCORE: return "zscore";
    case MT_NORM_SCHEME_CT: return "ct";
    case MT_NORM_SCHEME_NONE: return "none";
    }
    return "unknown";
}

mt_status mt_norm_scheme_parse(const char *s, mt_norm_scheme *out) {
    if (!strcmp(s, "zscore")) *out = MT_NORM_SCHEME_ZSCORE;
    else if (!strcmp(s, "ct")) *out = MT_NORM_SCHEME_CT;
    else if (!strcmp(s, "none")) *out = MT_NORM_SCHEME_NONE;
    else return mt_error_set(MT_ERR_INVALID, "unknown normalisation scheme '%s' (zscore, ct, none)", s);
    return MT_OK;
}

mt_norm_scheme mt_norm_scheme_for_channel(const char *name) {
    if (!strcasecmp(name, "CT")) return MT_NORM_SCHEME_CT;
    if (!strcmp(name, "noNorm")) return MT_NORM_SCHEME_NONE;
    return MT_NORM_SCHEME_ZSCORE;
}

/* ------------------------------------------------------------- helpers */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    MT_CHECK_MSG(p, "out of memory (%zu bytes)", n);
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile(v, q) (linear) of sorted doubles. */
static double percentile_sorted(const double *v, int64_t n, double q) {
    if (n <= 0) return 0;
    double pos = q / 100.0 * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return v[n - 1];
    double f = pos - (double)i;
    return v[i] + f * (v[i + 1] - v[i]);
}

static double percentile_sorted_f(const float *v, int64_t n, double q) {
    if (n <= 0) return 0;
    double pos = q / 100.0 * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return v[n - 1];
    double f = pos - (double)i;
    return (double)v[i] + f * ((double)v[i + 1] - (double)v[i]);
}

static double percentile(const double *v, int64_t n, double q) {
    double *c = xmalloc(sizeof(double) * (size_t)n);
    memcpy(c, v, sizeof(double) * (size_t)n);
    qsort(c, (size_t)n, sizeof(double), cmp_double);
    double r = percentile_sorted(c, n, q);
    free(c);
    return r;
}

/* ---------------------------------------------------------- crop / mask */

mt_tensor *mt_preprocess_nonzero_mask(const mt_tensor *image) {
    MT_CHECK_MSG(image->ndim == 4 && image->dtype == MT_F32, "nonzero_mask: expected (C, D, H, W) f32");
    mt_tensor *x = mt_tensor_contiguous(image);
    int64_t C = x->shape[0], D = x->shape[1], H = x->shape[2], W = x->shape[3], n = D * H * W;
    int64_t shape[3] = {D, H, W};
    mt_tensor *mask = mt_tensor_zeros(MT_U8, 3, shape, MT_DEVICE_CPU);
    uint8_t *m = mt_tensor_data(mask);
    const float *xp = MT_F32P(x);
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < n; i++)
            if (xp[c * n + i] != 0.0f) m[i] = 1;
    /* fill holes: zero voxels reachable from the border (6-connected) stay 0 */
    uint8_t *reached = calloc((size_t)(n ? n : 1), 1);
    int64_t *queue = xmalloc(sizeof(int64_t) * (size_t)n);
    MT_CHECK(reached);
    int64_t qh = 0, qt = 0;
    for (int64_t d = 0; d < D; d++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                if (!(d == 0 || d == D - 1 || h == 0 || h == H - 1 || w == 0 || w == W - 1)) {
                    w = W - 2; /* jump to the last column (interior rows only touch w = 0 and W - 1) */
                    continue;
                }
                int64_t i = (d * H + h) * W + w;
                if (!m[i] && !reached[i]) {
                    reached[i] = 1;
                    queue[qt++] = i;
                }
            }
    while (qh < qt) {
        int64_t i = queue[qh++];
        int64_t w = i % W, h = (i / W) % H, d = i / (W * H);
        int64_t nb[6];
        int k = 0;
        if (w > 0) nb[k++] = i - 1;
        if (w < W - 1) nb[k++] = i + 1;
        if (h > 0) nb[k++] = i - W;
        if (h < H - 1) nb[k++] = i + W;
        if (d > 0) nb[k++] = i - W * H;
        if (d < D - 1) nb[k++] = i + W * H;
        for (int q = 0; q < k; q++) {
            int64_t j = nb[q];
            if (!m[j] && !reached[j]) {
                reached[j] = 1;
                queue[qt++] = j;
            }
        }
    }
    for (int64_t i = 0; i < n; i++) m[i] = !reached[i];
    free(reached);
    free(queue);
    mt_tensor_release(x);
    return mask;
}

int mt_preprocess_bbox(int64_t lo[3], int64_t hi[3], const mt_tensor *mask) {
    MT_CHECK_MSG(mask->ndim == 3 && mask->dtype == MT_U8, "bbox: expected a (D, H, W) u8 mask");
    mt_tensor *mc = mt_tensor_contiguous(mask);
    const uint8_t *m = mt_tensor_data(mc);
    int64_t D = mask->shape[0], H = mask->shape[1], W = mask->shape[2];
    int64_t l[3] = {D, H, W}, h_[3] = {-1, -1, -1};
    for (int64_t d = 0; d < D; d++)
        for (int64_t h = 0; h < H; h++) {
            const uint8_t *row = m + (d * H + h) * W;
            for (int64_t w = 0; w < W; w++) {
                if (!row[w]) continue;
                if (d < l[0]) l[0] = d;
                if (d > h_[0]) h_[0] = d;
                if (h < l[1]) l[1] = h;
                if (h > h_[1]) h_[1] = h;
                if (w < l[2]) l[2] = w;
                if (w > h_[2]) h_[2] = w;
            }
        }
    mt_tensor_release(mc);
    if (h_[0] < 0) {
        lo[0] = lo[1] = lo[2] = 0;
        hi[0] = D;
        hi[1] = H;
        hi[2] = W;
        return 0;
    }
    for (int a = 0; a < 3; a++) {
        lo[a] = l[a];
        hi[a] = h_[a] + 1;
    }
    return 1;
}

mt_tensor *mt_preprocess_crop(const mt_tensor *x, const int64_t lo[3], const int64_t hi[3]) {
    MT_CHECK_MSG(x->ndim >= 3, "crop: expected at least 3 dims");
    mt_tensor *v = mt_tensor_retain((mt_tensor *)x);
    for (int a = 0; a < 3; a++) {
        int dim = x->ndim - 3 + a;
        MT_CHECK_MSG(lo[a] >= 0 && hi[a] <= x->shape[dim] && lo[a] < hi[a], "crop: box [%lld, %lld) on axis of %lld",
                     (long long)lo[a], (long long)hi[a], (long long)x->shape[dim]);
        mt_tensor *s = mt_tensor_slice(v, dim, lo[a], hi[a], 1);
        mt_tensor_release(v);
        v = s;
    }
    mt_tensor *c = mt_tensor_clone(v);
    mt_tensor_release(v);
    return c;
}

/* ---------------------------------------------------------- normalise */

void mt_preprocess_normalize_(mt_tensor *image, const mt_tensor *mask, const mt_prep_plan *plan, mt_norm_params *out) {
    MT_CHECK_MSG(image->ndim == 4 && image->dtype == MT_F32 && mt_tensor_is_contiguous(image),
                 "normalize: expected a contiguous (C, D, H, W) f32 tensor");
    int64_t C = image->shape[0], n = image->shape[1] * image->shape[2] * image->shape[3];
    MT_CHECK_MSG(C == plan->num_channels, "normalize: %lld channels, plan has %d", (long long)C, plan->num_channels);
    const uint8_t *m = NULL;
    if (mask) {
        MT_CHECK_MSG(mask->ndim == 3 && mask->dtype == MT_U8 && mt_tensor_is_contiguous(mask) &&
                         mask->shape[0] == image->shape[1] && mask->shape[1] == image->shape[2] &&
                         mask->shape[2] == image->shape[3],
                     "normalize: mask shape does not match the image");
        m = mt_tensor_data(mask);
    }
    float *xp = MT_F32P(image);
    for (int64_t c = 0; c < C; c++) {
        const mt_norm_params *pp = &plan->norm[c];
        mt_norm_params p = *pp;
        float *x = xp + c * n;
        if (p.scheme == MT_NORM_SCHEME_NONE) {
            p.use_mask = 0;
            p.mean = 0;
            p.std = 1;
            p.clip_lo = -HUGE_VAL;
            p.clip_hi = HUGE_VAL;
            out[c] = p;
            continue;
        }
        if (p.scheme == MT_NORM_SCHEME_ZSCORE) {
            int use_mask = p.use_mask && m;
            int64_t cnt = 0;
            double s = 0;
            for (int64_t i = 0; i < n; i++)
                if (!use_mask || m[i]) {
                    s += x[i];
                    cnt++;
                }
            if (cnt == 0) { /* empty mask: statistics over the whole volume */
                use_mask = 0;
                for (int64_t i = 0; i < n; i++) s += x[i];
                cnt = n;
            }
            double mean = cnt ? s / (double)cnt : 0, ss = 0;
            for (int64_t i = 0; i < n; i++)
                if (!use_mask || m[i]) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
            double sd = cnt ? sqrt(ss / (double)cnt) : 0;
            p.use_mask = use_mask;
            p.mean = mean;
            p.std = sd > 1e-8 ? sd : 1e-8;
            p.clip_lo = -HUGE_VAL;
            p.clip_hi = HUGE_VAL;
        } else { /* CT: dataset parameters from the plan */
            p.use_mask = 0;
            p.std = p.std > 1e-8 ? p.std : 1e-8;
        }
        double mean = p.mean, inv = 1.0 / p.std, lo = p.clip_lo, hi = p.clip_hi;
        for (int64_t i = 0; i < n; i++) {
            if (p.use_mask && !m[i]) {
                x[i] = 0.0f;
                continue;
            }
            double v = x[i];
            if (v < lo) v = lo;
            if (v > hi) v = hi;
            x[i] = (float)((v - mean) * inv);
        }
        out[c] = p;
    }
}

/* ------------------------------------------------------------- orders */

/* The single axis with the largest spacing if max/min > threshold, else -1. */
static int separate_axis(const double sp[3], double threshold) {
    if (threshold <= 0) return -1;
    double mx = sp[0], mn = sp[0];
    for (int a = 1; a < 3; a++) {
        if (sp[a] > mx) mx = sp[a];
        if (sp[a] < mn) mn = sp[a];
    }
    if (!(mx / mn > threshold)) return -1;
    int axis = -1, count = 0;
    for (int a = 0; a < 3; a++)
        if (sp[a] == mx) {
            axis = a;
            count++;
        }
    return count == 1 ? axis : -1;
}

void mt_preprocess_orders(mt_interp orders[3], mt_interp base, const double spacing[3], const mt_prep_plan *plan) {
    for (int a = 0; a < 3; a++) orders[a] = base;
    int axis;
    double mx = spacing[0], mn = spacing[0];
    for (int a = 1; a < 3; a++) {
        if (spacing[a] > mx) mx = spacing[a];
        if (spacing[a] < mn) mn = spacing[a];
    }
    /* nnU-Net: the case's own spacing decides first, then the target's */
    if (plan->aniso_threshold > 0 && mx / mn > plan->aniso_threshold)
        axis = separate_axis(spacing, plan->aniso_threshold);
    else
        axis = separate_axis(plan->target_spacing, plan->aniso_threshold);
    if (axis >= 0) orders[axis] = plan->order_aniso;
}

/* ----------------------------------------------------------- one case */

static int finite_pos3(const double v[3]) {
    for (int a = 0; a < 3; a++)
        if (!(v[a] > 0) || !isfinite(v[a])) return 0;
    return 1;
}

mt_status mt_preprocess_case(mt_tensor **image_out, mt_tensor **label_out, mt_prep_geometry *geom,
                             mt_norm_params *norm, const mt_tensor *image, const mt_tensor *label,
                             const double spacing[3], const double affine[4][4], const mt_prep_plan *plan) {
    *image_out = NULL;
    if (label_out) *label_out = NULL;
    if (image->ndim != 4 || image->dtype != MT_F32)
        return mt_error_set(MT_ERR_INVALID, "preprocess: the image must be (C, D, H, W) f32");
    if (image->shape[0] != plan->num_channels)
        return mt_error_set(MT_ERR_INVALID, "preprocess: the image has %lld channel(s), the plan %d",
                            (long long)image->shape[0], plan->num_channels);
    if (label) {
        if (label->ndim != 4 || label->dtype != MT_U8 || label->shape[0] != 1 || label->shape[1] != image->shape[1] ||
            label->shape[2] != image->shape[2] || label->shape[3] != image->shape[3])
            return mt_error_set(MT_ERR_INVALID, "preprocess: the label must be (1, D, H, W) u8 matching the image");
        MT_CHECK_MSG(label_out, "preprocess: label given without label_out");
    }
    if (!finite_pos3(spacing))
        return mt_error_set(MT_ERR_INVALID, "preprocess: voxel size %g x %g x %g must be positive and finite",
                            spacing[0], spacing[1], spacing[2]);
    if (!finite_pos3(plan->target_spacing))
        return mt_error_set(MT_ERR_INVALID, "preprocess: target spacing %g x %g x %g must be positive and finite",
                            plan->target_spacing[0], plan->target_spacing[1], plan->target_spacing[2]);
    memset(geom, 0, sizeof *geom);
    for (int a = 0; a < 3; a++) {
        geom->orig_shape[a] = image->shape[1 + a];
        geom->orig_spacing[a] = spacing[a];
        geom->target_spacing[a] = plan->target_spacing[a];
    }
    memcpy(geom->orig_affine, affine, sizeof geom->orig_affine);

    mt_tensor *mask = mt_preprocess_nonzero_mask(image);
    mt_preprocess_bbox(geom->crop_lo, geom->crop_hi, mask);
    mt_tensor *img = mt_preprocess_crop(image, geom->crop_lo, geom->crop_hi);
    mt_tensor *mask_c = mt_preprocess_crop(mask, geom->crop_lo, geom->crop_hi);
    mt_tensor_release(mask);
    mt_tensor *lab = label ? mt_preprocess_crop(label, geom->crop_lo, geom->crop_hi) : NULL;

    mt_preprocess_normalize_(img, mask_c, plan, norm);
    mt_tensor_release(mask_c);

    int64_t cs[3];
    for (int a = 0; a < 3; a++) cs[a] = geom->crop_hi[a] - geom->crop_lo[a];
    mt_resample_shape(geom->shape, cs, spacing, plan->target_spacing);
    mt_preprocess_orders(geom->order_image, plan->order_image, spacing, plan);
    mt_preprocess_orders(geom->order_label, plan->order_label, spacing, plan);
    mt_resample_spacing(geom->spacing, spacing, cs, geom->shape);

    /* affine of the crop: index (i, j, k) -> (i + w0, j + h0, k + d0) */
    double ac[4][4];
    memcpy(ac, affine, sizeof ac);
    for (int r = 0; r < 4; r++)
        ac[r][3] = affine[r][3] + affine[r][0] * (double)geom->crop_lo[2] + affine[r][1] * (double)geom->crop_lo[1] +
                   affine[r][2] * (double)geom->crop_lo[0];
    mt_resample_affine(geom->affine, ac, cs, geom->shape);

    *image_out = mt_resample_image(img, geom->shape, geom->order_image);
    mt_tensor_release(img);
    if (lab) {
        *label_out = mt_resample_labels(lab, geom->shape, geom->order_label);
        mt_tensor_release(lab);
    }
    return MT_OK;
}

/* ------------------------------------------------------------ inverse */

static mt_status check_pred_shape(const mt_tensor *x /* (K, d, h, w) */, const mt_prep_geometry *g, const char *what) {
    if (x->ndim != 4 || x->shape[1] != g->shape[0] || x->shape[2] != g->shape[1] || x->shape[3] != g->shape[2]) {
        char b[96];
        return mt_error_set(MT_ERR_INVALID, "%s: prediction shape %s does not match the preprocessed case's (*, %lld, %lld, %lld)",
                            what, mt_tensor_shape_str(x, b, sizeof b), (long long)g->shape[0],
                            (long long)g->shape[1], (long long)g->shape[2]);
    }
    for (int a = 0; a < 3; a++)
        if (g->crop_lo[a] < 0 || g->crop_hi[a] > g->orig_shape[a] || g->crop_lo[a] >= g->crop_hi[a])
            return mt_error_set(MT_ERR_INVALID, "%s: crop box [%lld, %lld) outside the source's %lld voxels (axis %d)",
                                what, (long long)g->crop_lo[a], (long long)g->crop_hi[a], (long long)g->orig_shape[a], a);
    return MT_OK;
}

/* Copies src (K, cd, ch, cw) contiguous into dst (K, D, H, W) at lo. */
static void uncrop(mt_tensor *dst /* (K, D, H, W) */, const mt_tensor *src /* (K, cd, ch, cw) */, const int64_t lo[3],
                   size_t esz) {
    int64_t K = src->shape[0], cd = src->shape[1], ch = src->shape[2], cw = src->shape[3];
    int64_t D = dst->shape[1], H = dst->shape[2], W = dst->shape[3];
    const char *s = mt_tensor_data(src);
    char *d = mt_tensor_data(dst);
    for (int64_t k = 0; k < K; k++)
        for (int64_t z = 0; z < cd; z++)
            for (int64_t y = 0; y < ch; y++) {
                const char *sr = s + (size_t)(((k * cd + z) * ch + y) * cw) * esz;
                char *dr = d + (size_t)(((k * D + z + lo[0]) * H + y + lo[1]) * W + lo[2]) * esz;
                memcpy(dr, sr, (size_t)cw * esz);
            }
}

mt_status mt_preprocess_invert_image(mt_tensor **out, const mt_tensor *x, const mt_prep_geometry *g, mt_interp order,
                                     const float *fill) {
    *out = NULL;
    MT_TRY(check_pred_shape(x, g, "invert_image"));
    if (x->dtype != MT_F32) return mt_error_set(MT_ERR_INVALID, "invert_image: the prediction must be f32");
    int64_t cs[3];
    mt_interp orders[3];
    for (int a = 0; a < 3; a++) {
        cs[a] = g->crop_hi[a] - g->crop_lo[a];
        orders[a] = g->order_image[a] == MT_INTERP_NEAREST ? MT_INTERP_NEAREST : order;
    }
    mt_tensor *r = mt_resample_image(x, cs, orders);
    int64_t K = x->shape[0];
    int64_t shape[4] = {K, g->orig_shape[0], g->orig_shape[1], g->orig_shape[2]};
    mt_tensor *o = mt_tensor_new(MT_F32, 4, shape, MT_DEVICE_CPU);
    int64_t vol = shape[1] * shape[2] * shape[3];
    float *op = MT_F32P(o);
    for (int64_t k = 0; k < K; k++) {
        float f = fill ? fill[k] : 0.0f;
        for (int64_t i = 0; i < vol; i++) op[k * vol + i] = f;
    }
    uncrop(o, r, g->crop_lo, sizeof(float));
    mt_tensor_release(r);
    *out = o;
    return MT_OK;
}

mt_status mt_preprocess_invert_labels(mt_tensor **out, const mt_tensor *y, const mt_prep_geometry *g) {
    *out = NULL;
    MT_TRY(check_pred_shape(y, g, "invert_labels"));
    if (y->dtype != MT_U8 || y->shape[0] != 1)
        return mt_error_set(MT_ERR_INVALID, "invert_labels: the label map must be (1, d, h, w) u8");
    int64_t cs[3];
    for (int a = 0; a < 3; a++) cs[a] = g->crop_hi[a] - g->crop_lo[a];
    mt_tensor *r = mt_resample_labels(y, cs, g->order_label);
    int64_t shape[4] = {1, g->orig_shape[0], g->orig_shape[1], g->orig_shape[2]};
    mt_tensor *o = mt_tensor_zeros(MT_U8, 4, shape, MT_DEVICE_CPU);
    uncrop(o, r, g->crop_lo, 1);
    mt_tensor_release(r);
    *out = o;
    return MT_OK;
}

/* --------------------------------------------------------- fingerprint */

mt_status mt_fingerprint_case_compute(mt_fingerprint_case *fc, const mt_tensor *image, const mt_tensor *label,
                                      const double spacing[3], int num_classes, int64_t samples_per_case,
                                      uint64_t seed, int64_t case_index) {
    memset(fc, 0, sizeof *fc);
    if (image->ndim != 4 || image->dtype != MT_F32)
        return mt_error_set(MT_ERR_INVALID, "fingerprint: the image must be (C, D, H, W) f32");
    if (image->shape[0] > MT_PREP_MAX_CHANNELS)
        return mt_error_set(MT_ERR_UNSUPPORTED, "fingerprint: %lld channels (at most %d)", (long long)image->shape[0],
                            MT_PREP_MAX_CHANNELS);
    if (label->ndim != 4 || label->dtype != MT_U8 || label->shape[0] != 1 || label->shape[1] != image->shape[1] ||
        label->shape[2] != image->shape[2] || label->shape[3] != image->shape[3])
        return mt_error_set(MT_ERR_INVALID, "fingerprint: the label must be (1, D, H, W) u8 matching the image");
    if (num_classes < 1 || num_classes > 256)
        return mt_error_set(MT_ERR_INVALID, "fingerprint: %d classes (1..256)", num_classes);
    if (samples_per_case < 0) return mt_error_set(MT_ERR_INVALID, "fingerprint: negative sample count");
    int64_t C = image->shape[0], D = image->shape[1], H = image->shape[2], W = image->shape[3], n = D * H * W;
    mt_tensor *x = mt_tensor_contiguous(image);
    mt_tensor *y = mt_tensor_contiguous(label);
    const float *xp = MT_F32P(x);
    const uint8_t *yp = mt_tensor_data(y);
    fc->num_channels = (int)C;
    fc->num_classes = num_classes;
    fc->class_voxels = calloc((size_t)num_classes, sizeof(int64_t));
    MT_CHECK(fc->class_voxels);
    mt_status st = MT_OK;
    for (int64_t i = 0; i < n; i++) {
        if (yp[i] >= num_classes) {
            st = mt_error_set(MT_ERR_FORMAT, "label value %d at voxel (d, h, w) = (%lld, %lld, %lld), but only %d classes",
                              yp[i], (long long)(i / (H * W)), (long long)(i / W % H), (long long)(i % W), num_classes);
            break;
        }
        fc->class_voxels[yp[i]]++;
    }
    if (st != MT_OK) {
        mt_tensor_release(x);
        mt_tensor_release(y);
        mt_fingerprint_case_free(fc);
        return st;
    }
    for (int a = 0; a < 3; a++) {
        fc->spacing[a] = spacing[a];
        fc->shape_before_crop[a] = image->shape[1 + a];
    }
    mt_tensor *mask = mt_preprocess_nonzero_mask(x);
    int64_t lo[3], hi[3];
    mt_preprocess_bbox(lo, hi, mask);
    mt_tensor_release(mask);
    for (int a = 0; a < 3; a++) fc->shape_after_crop[a] = hi[a] - lo[a];
    /* foreground voxels inside the crop box */
    int64_t nfg = 0;
    for (int64_t d = lo[0]; d < hi[0]; d++)
        for (int64_t h = lo[1]; h < hi[1]; h++)
            for (int64_t w = lo[2]; w < hi[2]; w++) nfg += yp[(d * H + h) * W + w] > 0;
    if (nfg > 0 && samples_per_case > 0) {
        int64_t *fg = xmalloc(sizeof(int64_t) * (size_t)nfg);
        int64_t k = 0;
        for (int64_t d = lo[0]; d < hi[0]; d++)
            for (int64_t h = lo[1]; h < hi[1]; h++)
                for (int64_t w = lo[2]; w < hi[2]; w++) {
                    int64_t i = (d * H + h) * W + w;
                    if (yp[i] > 0) fg[k++] = i;
                }
        fc->num_samples = samples_per_case;
        fc->samples = xmalloc(sizeof(float) * (size_t)(C * samples_per_case));
        mt_rng r;
        mt_rng_init_stream(&r, seed, (uint64_t)case_index, 0, FPRINT_STREAM_TAG);
        for (int64_t s = 0; s < samples_per_case; s++) {
            int64_t v = fg[mt_rng_randint(&r, 0, nfg)];
            for (int64_t c = 0; c < C; c++) fc->samples[c * samples_per_case + s] = xp[c * n + v];
        }
        free(fg);
    }
    mt_tensor_release(x);
    mt_tensor_release(y);
    return MT_OK;
}

void mt_fingerprint_case_free(mt_fingerprint_case *fc) {
    free(fc->samples);
    free(fc->class_voxels);
    memset(fc, 0, sizeof *fc);
}

mt_status mt_fingerprint_build(mt_fingerprint *fp, const mt_fingerprint_case *cases, int n) {
    memset(fp, 0, sizeof *fp);
    if (n < 1) return mt_error_set(MT_ERR_INVALID, "fingerprint: no cases");
    int C = cases[0].num_channels, K = cases[0].num_classes;
    for (int i = 1; i < n; i++)
        if (cases[i].num_channels != C || cases[i].num_classes != K)
            return mt_error_set(MT_ERR_INVALID, "fingerprint: case %d has %d channel(s) / %d classes, case 0 %d / %d", i,
                                cases[i].num_channels, cases[i].num_classes, C, K);
    fp->num_cases = n;
    fp->num_channels = C;
    fp->num_classes = K;
    fp->spacing = xmalloc(sizeof *fp->spacing * (size_t)n);
    fp->shape_before_crop = xmalloc(sizeof *fp->shape_before_crop * (size_t)n);
    fp->shape_after_crop = xmalloc(sizeof *fp->shape_after_crop * (size_t)n);
    fp->class_voxels = calloc((size_t)K, sizeof(int64_t));
    MT_CHECK(fp->class_voxels);
    double *col = xmalloc(sizeof(double) * (size_t)n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        memcpy(fp->spacing[i], cases[i].spacing, sizeof(double) * 3);
        memcpy(fp->shape_before_crop[i], cases[i].shape_before_crop, sizeof(int64_t) * 3);
        memcpy(fp->shape_after_crop[i], cases[i].shape_after_crop, sizeof(int64_t) * 3);
        for (int k = 0; k < K; k++) fp->class_voxels[k] += cases[i].class_voxels[k];
        total += cases[i].num_samples;
        if (cases[i].num_samples > fp->samples_per_case) fp->samples_per_case = cases[i].num_samples;
    }
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < n; i++) col[i] = fp->spacing[i][a];
        fp->median_spacing[a] = percentile(col, n, 50);
        for (int i = 0; i < n; i++) col[i] = (double)fp->shape_after_crop[i][a];
        fp->median_shape_after_crop[a] = percentile(col, n, 50);
    }
    for (int i = 0; i < n; i++) {
        double b = 1, c = 1;
        for (int a = 0; a < 3; a++) {
            b *= (double)fp->shape_before_crop[i][a];
            c *= (double)fp->shape_after_crop[i][a];
        }
        col[i] = c / b;
    }
    fp->median_relative_size_after_crop = percentile(col, n, 50);
    free(col);
    float *pool = xmalloc(sizeof(float) * (size_t)total);
    for (int c = 0; c < C; c++) {
        int64_t k = 0;
        for (int i = 0; i < n; i++) {
            memcpy(pool + k, cases[i].samples + (size_t)c * (size_t)cases[i].num_samples,
                   sizeof(float) * (size_t)cases[i].num_samples);
            k += cases[i].num_samples;
        }
        mt_intensity_stats *s = &fp->stats[c];
        memset(s, 0, sizeof *s);
        s->n = total;
        if (total == 0) continue;
        double sum = 0;
        for (int64_t i = 0; i < total; i++) sum += pool[i];
        s->mean = sum / (double)total;
        double ss = 0;
        for (int64_t i = 0; i < total; i++) ss += ((double)pool[i] - s->mean) * ((double)pool[i] - s->mean);
        s->std = sqrt(ss / (double)total);
        qsort(pool, (size_t)total, sizeof(float), cmp_float);
        s->min = pool[0];
        s->max = pool[total - 1];
        s->median = percentile_sorted_f(pool, total, 50);
        s->p00_5 = percentile_sorted_f(pool, total, 0.5);
        s->p99_5 = percentile_sorted_f(pool, total, 99.5);
    }
    free(pool);
    return MT_OK;
}

void mt_fingerprint_free(mt_fingerprint *fp) {
    free(fp->spacing);
    free(fp->shape_before_crop);
    free(fp->shape_after_crop);
    free(fp->class_voxels);
    memset(fp, 0, sizeof *fp);
}

/* A tiny growable string (data/ may not use launch/fsutil). */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        MT_CHECK(k >= 0);
        if (b->s && (size_t)k < room) {
            b->len += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + (size_t)k + 1) cap *= 2;
        b->s = realloc(b->s, cap);
        MT_CHECK(b->s);
        b->cap = cap;
    }
}

static void sb_num(sbuf *b, double v) {
    if (!isfinite(v)) {
        sb_printf(b, "null");
        return;
    }
    char t[40];
    for (int p = 15; p <= 17; p++) { /* shortest of 15..17 digits that reads back exactly */
        snprintf(t, sizeof t, "%.*g", p, v);
        if (strtod(t, NULL) == v) break;
    }
    sb_printf(b, "%s", t);
}

static void sb_vec3(sbuf *b, const double v[3]) {
    sb_printf(b, "[");
    for (int a = 0; a < 3; a++) {
        if (a) sb_printf(b, ", ");
        sb_num(b, v[a]);
    }
    sb_printf(b, "]");
}

char *mt_fingerprint_to_json(const mt_fingerprint *fp) {
    sbuf b = {0};
    sb_printf(&b, "{\n  \"num_cases\": %d,\n  \"num_channels\": %d,\n  \"num_classes\": %d,\n", fp->num_cases,
              fp->num_channels, fp->num_classes);
    sb_printf(&b, "  \"axis_order\": \"D, H, W (NIfTI k, j, i)\",\n  \"median_spacing\": ");
    sb_vec3(&b, fp->median_spacing);
    sb_printf(&b, ",\n  \"median_shape_after_crop\": ");
    sb_vec3(&b, fp->median_shape_after_crop);
    sb_printf(&b, ",\n  \"median_relative_size_after_crop\": ");
    sb_num(&b, fp->median_relative_size_after_crop);
    sb_printf(&b, ",\n  \"foreground_samples_per_case\": %lld,\n  \"foreground_intensity\": [",
              (long long)fp->samples_per_case);
    for (int c = 0; c < fp->num_channels; c++) {
        const mt_intensity_stats *s = &fp->stats[c];
        sb_printf(&b, "%s\n    {\"n\": %lld, \"mean\": ", c ? "," : "", (long long)s->n);
        sb_num(&b, s->mean);
        sb_printf(&b, ", \"std\": ");
        sb_num(&b, s->std);
        sb_printf(&b, ", \"min\": ");
        sb_num(&b, s->min);
        sb_printf(&b, ", \"max\": ");
        sb_num(&b, s->max);
        sb_printf(&b, ", \"median\": ");
        sb_num(&b, s->median);
        sb_printf(&b, ", \"percentile_00_5\": ");
        sb_num(&b, s->p00_5);
        sb_printf(&b, ", \"percentile_99_5\": ");
        sb_num(&b, s->p99_5);
        sb_printf(&b, "}");
    }
    sb_printf(&b, "\n  ],\n  \"class_voxels\": [");
    for (int k = 0; k < fp->num_classes; k++) sb_printf(&b, "%s%lld", k ? ", " : "", (long long)fp->class_voxels[k]);
    sb_printf(&b, "],\n  \"spacings\": [");
    for (int i = 0; i < fp->num_cases; i++) {
        sb_printf(&b, "%s", i ? ", " : "");
        sb_vec3(&b, fp->spacing[i]);
    }
    sb_printf(&b, "],\n  \"shapes_before_crop\": [");
    for (int i = 0; i < fp->num_cases; i++)
        sb_printf(&b, "%s[%lld, %lld, %lld]", i ? ", " : "", (long long)fp->shape_before_crop[i][0],
                  (long long)fp->shape_before_crop[i][1], (long long)fp->shape_before_crop[i][2]);
    sb_printf(&b, "],\n  \"shapes_after_crop\": [");
    for (int i = 0; i < fp->num_cases; i++)
        sb_printf(&b, "%s[%lld, %lld, %lld]", i ? ", " : "", (long long)fp->shape_after_crop[i][0],
                  (long long)fp->shape_after_crop[i][1], (long long)fp->shape_after_crop[i][2]);
    sb_printf(&b, "]\n}\n");
    return b.s;
}

void mt_fingerprint_target_spacing(double target[3], const mt_fingerprint *fp, int aniso_rule) {
    memcpy(target, fp->median_spacing, sizeof(double) * 3);
    if (!aniso_rule || fp->num_cases < 1) return;
    int worst = 0;
    for (int a = 1; a < 3; a++)
        if (target[a] > target[worst]) worst = a;
    double max_other_sp = 0, min_other_sz = HUGE_VAL;
    for (int a = 0; a < 3; a++) {
        if (a == worst) continue;
        if (target[a] > max_other_sp) max_other_sp = target[a];
        if (fp->median_shape_after_crop[a] < min_other_sz) min_other_sz = fp->median_shape_after_crop[a];
    }
    int aniso_spacing = target[worst] > 3.0 * max_other_sp;
    int aniso_voxels = fp->median_shape_after_crop[worst] * 3.0 < min_other_sz;
    if (aniso_spacing && aniso_voxels) {
        double *col = xmalloc(sizeof(double) * (size_t)fp->num_cases);
        for (int i = 0; i < fp->num_cases; i++) col[i] = fp->spacing[i][worst];
        double t = percentile(col, fp->num_cases, 10);
        free(col);
        if (t < max_other_sp) t = (max_other_sp > t ? max_other_sp : t) + 1e-5;
        target[worst] = t;
    }
}

mt_status mt_prep_plan_init(mt_prep_plan *plan, const mt_fingerprint *fp, const mt_norm_scheme *schemes,
                            const double *target_spacing) {
    memset(plan, 0, sizeof *plan);
    if (fp->num_channels < 1 || fp->num_channels > MT_PREP_MAX_CHANNELS)
        return mt_error_set(MT_ERR_INVALID, "plan: %d channels (1..%d)", fp->num_channels, MT_PREP_MAX_CHANNELS);
    plan->num_channels = fp->num_channels;
    if (target_spacing)
        memcpy(plan->target_spacing, target_spacing, sizeof plan->target_spacing);
    else
        memcpy(plan->target_spacing, fp->median_spacing, sizeof plan->target_spacing);
    if (!finite_pos3(plan->target_spacing))
        return mt_error_set(MT_ERR_INVALID, "plan: target spacing %g x %g x %g must be positive and finite",
                            plan->target_spacing[0], plan->target_spacing[1], plan->target_spacing[2]);
    plan->order_image = MT_INTERP_CUBIC;
    plan->order_label = MT_INTERP_LINEAR;
    plan->order_aniso = MT_INTERP_NEAREST;
    plan->aniso_threshold = 3.0;
    int use_mask = fp->median_relative_size_after_crop < 0.75;
    for (int c = 0; c < fp->num_channels; c++) {
        mt_norm_params *p = &plan->norm[c];
        p->scheme = schemes[c];
        p->mean = 0;
        p->std = 1;
        p->clip_lo = -HUGE_VAL;
        p->clip_hi = HUGE_VAL;
        if (schemes[c] == MT_NORM_SCHEME_CT) {
            const mt_intensity_stats *s = &fp->stats[c];
            if (s->n == 0)
                return mt_error_set(MT_ERR_INVALID, "plan: CT channel %d has no foreground voxels to take statistics from", c);
            p->mean = s->mean;
            p->std = s->std > 1e-8 ? s->std : 1e-8;
            p->clip_lo = s->p00_5;
            p->clip_hi = s->p99_5;
        } else if (schemes[c] == MT_NORM_SCHEME_ZSCORE) {
            p->use_mask = use_mask;
        }
    }
    return MT_OK;
}

/* ------------------------------------------------------- plan <-> JSON */

char *mt_prep_plan_to_json(const mt_prep_plan *plan) {
    sbuf b = {0};
    sb_printf(&b, "{\"num_channels\": %d, \"axis_order\": \"D, H, W\", \"target_spacing\": ", plan->num_channels);
    sb_vec3(&b, plan->target_spacing);
    sb_printf(&b, ", \"order_image\": \"%s\", \"order_label\": \"%s\", \"order_aniso\": \"%s\", \"aniso_threshold\": ",
              mt_interp_name(plan->order_image), mt_interp_name(plan->order_label), mt_interp_name(plan->order_aniso));
    sb_num(&b, plan->aniso_threshold);
    sb_printf(&b, ", \"norm\": [");
    for (int c = 0; c < plan->num_channels && c < MT_PREP_MAX_CHANNELS; c++) {
        const mt_norm_params *p = &plan->norm[c];
        sb_printf(&b, "%s{\"scheme\": \"%s\", \"use_mask\": %s, \"mean\": ", c ? ", " : "", mt_norm_scheme_name(p->scheme),
                  p->use_mask ? "true" : "false");
        sb_num(&b, p->mean);
        sb_printf(&b, ", \"std\": ");
        sb_num(&b, p->std);
        sb_printf(&b, ", \"clip\": [");
        sb_num(&b, p->clip_lo);
        sb_printf(&b, ", ");
        sb_num(&b, p->clip_hi);
        sb_printf(&b, "]}");
    }
    sb_printf(&b, "]}");
    return b.s;
}

static mt_status interp_from_json(const mt_json *obj, const char *key, mt_interp *out, const char *what) {
    const mt_json *v;
    const char *s;
    MT_TRY(mt_json_require(&v, obj, key));
    MT_TRY(mt_json_as_string(v, &s, key));
    if (!strcmp(s, "nearest")) *out = MT_INTERP_NEAREST;
    else if (!strcmp(s, "linear")) *out = MT_INTERP_LINEAR;
    else if (!strcmp(s, "cubic")) *out = MT_INTERP_CUBIC;
    else
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s.%s: expected \"nearest\", \"linear\" or \"cubic\", got \"%s\"",
                            what, v->line, v->col, "plan", key, s);
    return MT_OK;
}

/* A number, or null standing for `null_value` (non-finite values are written as null). */
static mt_status num_or_null(const mt_json *v, double *out, double null_value, const char *what) {
    if (v && v->type == MT_JSON_NULL) {
        *out = null_value;
        return MT_OK;
    }
    return mt_json_as_double(v, out, what);
}

mt_status mt_prep_plan_from_json_value(mt_prep_plan *plan, const mt_json *root) {
    memset(plan, 0, sizeof *plan);
    const char *what = root && root->source ? root->source : "<json>";
    mt_status s = MT_OK;
    const mt_json *v, *ts, *norm;
    int64_t nc;
    if ((s = mt_json_expect(root, MT_JSON_OBJECT, "plan")) || (s = mt_json_require(&v, root, "num_channels")) ||
        (s = mt_json_as_int(v, &nc, "num_channels")))
        goto done;
    if (nc < 1 || nc > MT_PREP_MAX_CHANNELS) {
        s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: num_channels: %lld is outside 1..%d", what, v->line, v->col,
                         (long long)nc, MT_PREP_MAX_CHANNELS);
        goto done;
    }
    plan->num_channels = (int)nc;
    if ((s = mt_json_require(&ts, root, "target_spacing")) || (s = mt_json_expect(ts, MT_JSON_ARRAY, "target_spacing")))
        goto done;
    if (mt_json_len(ts) != 3) {
        s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: target_spacing: expected 3 numbers, got %d", what, ts->line, ts->col,
                         mt_json_len(ts));
        goto done;
    }
    for (int a = 0; a < 3; a++)
        if ((s = mt_json_as_double(mt_json_at(ts, a), &plan->target_spacing[a], "target_spacing"))) goto done;
    if (!finite_pos3(plan->target_spacing)) {
        s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: target_spacing must be positive", what, ts->line, ts->col);
        goto done;
    }
    if ((s = interp_from_json(root, "order_image", &plan->order_image, what)) ||
        (s = interp_from_json(root, "order_label", &plan->order_label, what)) ||
        (s = interp_from_json(root, "order_aniso", &plan->order_aniso, what)) ||
        (s = mt_json_require(&v, root, "aniso_threshold")) ||
        (s = mt_json_as_double(v, &plan->aniso_threshold, "aniso_threshold")))
        goto done;
    if ((s = mt_json_require(&norm, root, "norm")) || (s = mt_json_expect(norm, MT_JSON_ARRAY, "norm"))) goto done;
    if (mt_json_len(norm) != plan->num_channels) {
        s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: norm: %d entries for %d channels", what, norm->line, norm->col,
                         mt_json_len(norm), plan->num_channels);
        goto done;
    }
    for (int c = 0; c < plan->num_channels; c++) {
        const mt_json *e = mt_json_at(norm, c), *clip;
        mt_norm_params *p = &plan->norm[c];
        const char *name;
        char w[32];
        snprintf(w, sizeof w, "norm[%d]", c);
        if ((s = mt_json_expect(e, MT_JSON_OBJECT, w)) || (s = mt_json_require(&v, e, "scheme")) ||
            (s = mt_json_as_string(v, &name, "scheme")))
            goto done;
        if (mt_norm_scheme_parse(name, &p->scheme) != MT_OK) {
            s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s.scheme: unknown scheme \"%s\" (zscore, ct, none)", what,
                             v->line, v->col, w, name);
            goto done;
        }
        if ((s = mt_json_require(&v, e, "use_mask")) || (s = mt_json_as_bool(v, &p->use_mask, "use_mask")) ||
            (s = mt_json_require(&v, e, "mean")) || (s = num_or_null(v, &p->mean, NAN, "mean")) ||
            (s = mt_json_require(&v, e, "std")) || (s = num_or_null(v, &p->std, NAN, "std")) ||
            (s = mt_json_require(&clip, e, "clip")) || (s = mt_json_expect(clip, MT_JSON_ARRAY, "clip")))
            goto done;
        if (mt_json_len(clip) != 2) {
            s = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s.clip: expected [lo, hi]", what, clip->line, clip->col, w);
            goto done;
        }
        if ((s = num_or_null(mt_json_at(clip, 0), &p->clip_lo, -HUGE_VAL, "clip[0]")) ||
            (s = num_or_null(mt_json_at(clip, 1), &p->clip_hi, HUGE_VAL, "clip[1]")))
            goto done;
    }
done:
    if (s != MT_OK) memset(plan, 0, sizeof *plan);
    return s;
}

mt_status mt_prep_plan_from_json(mt_prep_plan *plan, const char *json, const char *what) {
    memset(plan, 0, sizeof *plan);
    mt_json *root = NULL;
    MT_TRY(mt_json_parse(&root, json, strlen(json), what));
    mt_status s = mt_prep_plan_from_json_value(plan, root);
    mt_json_free(root);
    return s;
}
