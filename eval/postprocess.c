/* Argmax, sigmoid threshold and largest-connected-component filtering
 * (conventions in eval/postprocess.h). */
#include "eval/postprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Host, contiguous f32 copy (or reference) of t. */
static mt_tensor *host_f32(const mt_tensor *t) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    mt_tensor *f = mt_tensor_to_dtype(h, MT_F32);
    mt_tensor *c = mt_tensor_contiguous(f);
    mt_tensor_release(f);
    mt_tensor_release(h);
    return c;
}

static mt_status check_scores(const mt_tensor *scores, const char *op) {
    if (!scores) return mt_error_set(MT_ERR_INVALID, "%s: no scores", op);
    if (scores->ndim != 4) {
        char b[96];
        return mt_error_set(MT_ERR_INVALID, "%s: scores have shape %s (expected (K, D, H, W))", op,
                            mt_tensor_shape_str(scores, b, sizeof b));
    }
    if (!mt_dtype_is_float(scores->dtype))
        return mt_error_set(MT_ERR_INVALID, "%s: scores have dtype %s (expected a float type)", op,
                            mt_dtype_name(scores->dtype));
    return MT_OK;
}

mt_status mt_eval_argmax(mt_tensor **labels, const mt_tensor *scores) {
    *labels = NULL;
    MT_TRY(check_scores(scores, "argmax"));
    int64_t K = scores->shape[0];
    if (K < 1 || K > 256)
        return mt_error_set(MT_ERR_INVALID, "argmax: %lld classes (u8 label maps hold 1..256)",
                            (long long)K);
    mt_tensor *s = host_f32(scores);
    const float *p = MT_F32P(s);
    int64_t n = mt_tensor_numel(s) / K;
    mt_tensor *out = mt_tensor_new(MT_U8, 3, scores->shape + 1, MT_DEVICE_CPU);
    uint8_t *o = (uint8_t *)mt_tensor_data(out);
#pragma omp parallel for if (n > 32768) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        float bv = p[i];
        for (int64_t k = 1; k < K; k++) {
            float v = p[k * n + i];
            if (v > bv || (isnan(bv) && !isnan(v))) {
                bv = v;
                best = (int)k;
            }
        }
        o[i] = (uint8_t)best;
    }
    mt_tensor_release(s);
    *labels = out;
    return MT_OK;
}

mt_status mt_eval_threshold(mt_tensor **masks, const mt_tensor *scores, double threshold,
                            int scores_are_logits) {
    *masks = NULL;
    MT_TRY(check_scores(scores, "threshold"));
    if (!(threshold > 0 && threshold < 1))
        return mt_error_set(MT_ERR_INVALID, "threshold: %g is not in (0, 1)", threshold);
    mt_tensor *s = host_f32(scores);
    const float *p = MT_F32P(s);
    int64_t n = mt_tensor_numel(s);
    mt_tensor *out = mt_tensor_new(MT_U8, 4, scores->shape, MT_DEVICE_CPU);
    uint8_t *o = (uint8_t *)mt_tensor_data(out);
#pragma omp parallel for if (n > 32768) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double v = p[i];
        if (scores_are_logits) v = 1.0 / (1.0 + exp(-v));
        o[i] = v >= threshold;
    }
    mt_tensor_release(s);
    *masks = out;
    return MT_OK;
}

/* ------------------------------------------------ connected components */

typedef struct {
    int64_t value;     /* class label */
    int64_t best;      /* component id */
    int64_t best_size;
} class_best;

static int is_selected(int64_t v, const int *classes, int n_classes) {
    if (!classes) return v > 0;
    for (int k = 0; k < n_classes; k++)
        if (classes[k] == v) return 1;
    return 0;
}

mt_status mt_eval_keep_largest_component(mt_tensor *labels, const int *classes, int n_classes,
                                         int connectivity) {
    if (!labels || labels->ndim != 3 || (labels->dtype != MT_U8 && labels->dtype != MT_I32))
        return mt_error_set(MT_ERR_INVALID,
                            "largest component: expected a (D, H, W) u8 or i32 label map");
    if (labels->storage->device.type != MT_CPU || !mt_tensor_is_contiguous(labels))
        return mt_error_set(MT_ERR_INVALID,
                            "largest component: the label map must be a contiguous host tensor");
    if (connectivity != 6 && connectivity != 26)
        return mt_error_set(MT_ERR_INVALID, "largest component: connectivity %d (use 6 or 26)",
                            connectivity);
    const int64_t D = labels->shape[0], H = labels->shape[1], W = labels->shape[2];
    const int64_t n = D * H * W;
    int is_u8 = labels->dtype == MT_U8;
    uint8_t *l8 = is_u8 ? (uint8_t *)mt_tensor_data(labels) : NULL;
    int32_t *l32 = is_u8 ? NULL : (int32_t *)mt_tensor_data(labels);
#define LAB(i) (is_u8 ? (int64_t)l8[i] : (int64_t)l32[i])

    int off[26][3], n_off = 0;
    for (int dz = -1; dz <= 1; dz++)
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int m = abs(dz) + abs(dy) + abs(dx);
                if (m == 0 || (connectivity == 6 && m > 1)) continue;
                off[n_off][0] = dz;
                off[n_off][1] = dy;
                off[n_off][2] = dx;
                n_off++;
            }

    int64_t *comp = malloc((size_t)(n > 0 ? n : 1) * sizeof *comp);
    int64_t *queue = malloc((size_t)(n > 0 ? n : 1) * sizeof *queue);
    MT_CHECK(comp && queue);
    for (int64_t i = 0; i < n; i++) comp[i] = -1;
    int n_cls = 0, cap_cls = 8;
    class_best *cb = malloc((size_t)cap_cls * sizeof *cb);
    MT_CHECK(cb);
    int64_t n_comp = 0;
    for (int64_t s = 0; s < n; s++) {
        if (comp[s] >= 0) continue;
        int64_t v = LAB(s);
        if (!is_selected(v, classes, n_classes)) continue;
        /* flood fill the component of s */
        int64_t id = n_comp++, head = 0, tail = 0;
        comp[s] = id;
        queue[tail++] = s;
        while (head < tail) {
            int64_t i = queue[head++];
            int64_t z = i / (H * W), y = (i / W) % H, x = i % W;
            for (int k = 0; k < n_off; k++) {
                int64_t zz = z + off[k][0], yy = y + off[k][1], xx = x + off[k][2];
                if (zz < 0 || zz >= D || yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                int64_t j = (zz * H + yy) * W + xx;
                if (comp[j] < 0 && LAB(j) == v) {
                    comp[j] = id;
                    queue[tail++] = j;
                }
            }
        }
        int c = 0;
        while (c < n_cls && cb[c].value != v) c++;
        if (c == n_cls) {
            if (n_cls == cap_cls) {
                cap_cls *= 2;
                cb = realloc(cb, (size_t)cap_cls * sizeof *cb);
                MT_CHECK(cb);
            }
            cb[n_cls].value = v;
            cb[n_cls].best = -1;
            cb[n_cls].best_size = 0;
            n_cls++;
        }
        if (tail > cb[c].best_size) { /* strict: the earlier component wins ties */
            cb[c].best_size = tail;
            cb[c].best = id;
        }
    }
    /* component id -> keep? */
    uint8_t *keep = calloc((size_t)(n_comp > 0 ? n_comp : 1), 1);
    MT_CHECK(keep);
    for (int c = 0; c < n_cls; c++) keep[cb[c].best] = 1;
    for (int64_t i = 0; i < n; i++)
        if (comp[i] >= 0 && !keep[comp[i]]) {
            if (is_u8) l8[i] = 0;
            else l32[i] = 0;
        }
#undef LAB
    free(keep);
    free(cb);
    free(queue);
    free(comp);
    return MT_OK;
}
