/* Patch sampler (see data/sampler.h). */
#include "data/sampler.h"

#include <stdlib.h>
#include <string.h>

void mt_sampler_config_default(mt_sampler_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->patch[0] = cfg->patch[1] = cfg->patch[2] = 32;
    cfg->batch_size = 2;
    cfg->num_classes = 2;
    cfg->fg_prob = 1.0 / 3.0;
    cfg->flip[0] = cfg->flip[1] = cfg->flip[2] = 1;
    cfg->pad_value = 0.0f;
}

mt_status mt_sampler_init(mt_sampler *s, const mt_sampler_config *cfg) {
    memset(s, 0, sizeof *s);
    for (int a = 0; a < 3; a++)
        if (cfg->patch[a] < 1 || cfg->patch[a] > 4096)
            return mt_error_set(MT_ERR_INVALID, "sampler: patch[%d] = %lld must be in [1, 4096]", a,
                                (long long)cfg->patch[a]);
    if (cfg->batch_size < 1)
        return mt_error_set(MT_ERR_INVALID, "sampler: batch_size = %d must be >= 1", cfg->batch_size);
    if (cfg->num_classes < 2 || cfg->num_classes > 256)
        return mt_error_set(MT_ERR_INVALID, "sampler: num_classes = %d must be in [2, 256]",
                            cfg->num_classes);
    if (!(cfg->fg_prob >= 0 && cfg->fg_prob <= 1))
        return mt_error_set(MT_ERR_INVALID, "sampler: fg_prob = %g must be in [0, 1]", cfg->fg_prob);
    s->cfg = *cfg;
    s->channels = -1;
    return MT_OK;
}

void mt_sampler_free(mt_sampler *s) {
    for (int k = 0; k < s->num_cases; k++) {
        mt_sampler_case *c = &s->cases[k];
        mt_tensor_release(c->image);
        mt_tensor_release(c->label);
        free(c->class_start);
        free(c->class_voxels);
    }
    free(s->cases);
    memset(s, 0, sizeof *s);
}

mt_status mt_sampler_add_case(mt_sampler *s, mt_tensor *image, mt_tensor *label) {
    char b1[96], b2[96];
    int k = s->num_cases;
    if (!image || !label) return mt_error_set(MT_ERR_INVALID, "sampler: case %d: missing image or label", k);
    if (image->dtype != MT_F32 || image->ndim != 4)
        return mt_error_set(MT_ERR_INVALID, "sampler: case %d: image must be (C, D, H, W) f32, got %s %s", k,
                            mt_tensor_shape_str(image, b1, sizeof b1), mt_dtype_name(image->dtype));
    if (label->dtype != MT_U8 || label->ndim != 4 || label->shape[0] != 1)
        return mt_error_set(MT_ERR_INVALID, "sampler: case %d: label must be (1, D, H, W) u8, got %s %s", k,
                            mt_tensor_shape_str(label, b1, sizeof b1), mt_dtype_name(label->dtype));
    if (image->storage->device.type != MT_CPU || label->storage->device.type != MT_CPU)
        return mt_error_set(MT_ERR_INVALID, "sampler: case %d: image and label must be on the CPU", k);
    for (int a = 1; a < 4; a++)
        if (image->shape[a] != label->shape[a] || image->shape[a] < 1)
            return mt_error_set(MT_ERR_INVALID, "sampler: case %d: image %s and label %s differ in size", k,
                                mt_tensor_shape_str(image, b1, sizeof b1),
                                mt_tensor_shape_str(label, b2, sizeof b2));
    if (image->shape[0] < 1 || (s->channels >= 0 && image->shape[0] != s->channels))
        return mt_error_set(MT_ERR_INVALID, "sampler: case %d: image has %lld channels, earlier cases %d", k,
                            (long long)image->shape[0], s->channels);
    mt_tensor *lab = mt_tensor_contiguous(label);
    const uint8_t *l = mt_tensor_data(lab);
    int64_t n = mt_tensor_numel(lab), K = s->cfg.num_classes;
    int64_t *start = calloc((size_t)K + 1, sizeof *start);
    MT_CHECK(start);
    for (int64_t i = 0; i < n; i++) {
        if (l[i] >= K) {
            int64_t v = l[i];
            free(start);
            mt_tensor_release(lab);
            return mt_error_set(MT_ERR_INVALID,
                                "sampler: case %d: label value %lld at voxel %lld is outside [0, %lld)", k,
                                (long long)v, (long long)i, (long long)K);
        }
        start[l[i] + 1]++;
    }
    start[1] = 0; /* background not stored */
    for (int c = 1; c <= K; c++) start[c] += start[c - 1];
    int64_t *vox = malloc(sizeof *vox * (size_t)(start[K] > 0 ? start[K] : 1));
    int64_t *fill = malloc(sizeof *fill * (size_t)K);
    MT_CHECK(vox && fill);
    memcpy(fill, start, sizeof *fill * (size_t)K);
    for (int64_t i = 0; i < n; i++)
        if (l[i]) vox[fill[l[i]]++] = i;
    free(fill);

    if (s->num_cases == s->capacity) {
        int cap = s->capacity ? 2 * s->capacity : 16;
        mt_sampler_case *nc = realloc(s->cases, sizeof *nc * (size_t)cap);
        MT_CHECK(nc);
        s->cases = nc;
        s->capacity = cap;
    }
    mt_sampler_case *c = &s->cases[s->num_cases++];
    memset(c, 0, sizeof *c);
    c->image = mt_tensor_contiguous(image);
    c->label = lab;
    c->class_start = start;
    c->class_voxels = vox;
    for (int cls = 1; cls < K; cls++)
        if (start[cls + 1] > start[cls]) c->present[c->num_present++] = cls;
    s->channels = (int)image->shape[0];
    return MT_OK;
}

/* Lowest and highest start of a patch of size p in a volume of size n:
 * inside the volume if it fits, else overhanging it on both sides. */
static void start_range(int64_t *lo, int64_t *hi, int64_t n, int64_t p) {
    *lo = n - p < 0 ? n - p : 0;
    *hi = n - p > 0 ? n - p : 0;
}

void mt_sampler_patch(float *image_out, uint8_t *label_out, const mt_sampler *s, int case_index, int fg,
                      mt_rng *rng, mt_patch_info *info) {
    MT_CHECK(case_index >= 0 && case_index < s->num_cases);
    const mt_sampler_case *c = &s->cases[case_index];
    const int64_t *p = s->cfg.patch;
    const int64_t dims[3] = {c->label->shape[1], c->label->shape[2], c->label->shape[3]};
    mt_patch_info inf;
    memset(&inf, 0, sizeof inf);
    inf.case_index = case_index;
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; a++) start_range(&lo[a], &hi[a], dims[a], p[a]);
    if (fg && c->num_present > 0) {
        int cls = c->present[mt_rng_randint(rng, 0, c->num_present)];
        int64_t v = c->class_voxels[mt_rng_randint(rng, c->class_start[cls], c->class_start[cls + 1])];
        inf.fg_class = cls;
        inf.fg_voxel[0] = v / (dims[1] * dims[2]);
        inf.fg_voxel[1] = (v / dims[2]) % dims[1];
        inf.fg_voxel[2] = v % dims[2];
        for (int a = 0; a < 3; a++) {
            int64_t st = inf.fg_voxel[a] - p[a] / 2;
            inf.start[a] = st < lo[a] ? lo[a] : st > hi[a] ? hi[a] : st;
        }
    } else {
        for (int a = 0; a < 3; a++) inf.start[a] = mt_rng_randint(rng, lo[a], hi[a] + 1);
    }
    for (int a = 0; a < 3; a++) inf.flipped[a] = s->cfg.flip[a] ? mt_rng_uniform(rng) < 0.5 : 0;

    const int64_t C = s->channels, D = dims[0], H = dims[1], W = dims[2];
    const float *img = mt_tensor_data(c->image);
    const uint8_t *lab = mt_tensor_data(c->label);
    const float pad = s->cfg.pad_value;
    /* volume x for output column k, and the range of k inside the volume */
    int64_t xs = inf.start[2], k_lo, k_hi; /* [k_lo, k_hi) */
    if (!inf.flipped[2]) {
        k_lo = -xs;
        k_hi = W - xs;
    } else { /* x = xs + p2 - 1 - k */
        k_lo = xs + p[2] - W;
        k_hi = xs + p[2];
    }
    k_lo = k_lo < 0 ? 0 : k_lo > p[2] ? p[2] : k_lo;
    k_hi = k_hi < k_lo ? k_lo : k_hi > p[2] ? p[2] : k_hi;
    for (int64_t i = 0; i < p[0]; i++) {
        int64_t z = inf.start[0] + (inf.flipped[0] ? p[0] - 1 - i : i);
        for (int64_t j = 0; j < p[1]; j++) {
            int64_t y = inf.start[1] + (inf.flipped[1] ? p[1] - 1 - j : j);
            int inside = z >= 0 && z < D && y >= 0 && y < H;
            uint8_t *lrow = label_out + (i * p[1] + j) * p[2];
            for (int64_t ch = 0; ch < C; ch++) {
                float *orow = image_out + ((ch * p[0] + i) * p[1] + j) * p[2];
                if (!inside) {
                    for (int64_t k = 0; k < p[2]; k++) orow[k] = pad;
                    continue;
                }
                const float *src = img + ((ch * D + z) * H + y) * W;
                for (int64_t k = 0; k < k_lo; k++) orow[k] = pad;
                if (!inf.flipped[2])
                    memcpy(orow + k_lo, src + xs + k_lo, sizeof(float) * (size_t)(k_hi - k_lo));
                else
                    for (int64_t k = k_lo; k < k_hi; k++) orow[k] = src[xs + p[2] - 1 - k];
                for (int64_t k = k_hi; k < p[2]; k++) orow[k] = pad;
            }
            if (!inside) {
                memset(lrow, 0, (size_t)p[2]);
                continue;
            }
            const uint8_t *src = lab + (z * H + y) * W;
            memset(lrow, 0, (size_t)k_lo);
            if (!inf.flipped[2])
                memcpy(lrow + k_lo, src + xs + k_lo, (size_t)(k_hi - k_lo));
            else
                for (int64_t k = k_lo; k < k_hi; k++) lrow[k] = src[xs + p[2] - 1 - k];
            memset(lrow + k_hi, 0, (size_t)(p[2] - k_hi));
        }
    }
    if (info) *info = inf;
}

void mt_sampler_fill_batch(mt_tensor *images, mt_tensor *labels, const mt_sampler *s, mt_rng *rng,
                           mt_patch_info *infos) {
    const int64_t *p = s->cfg.patch;
    int64_t N = s->cfg.batch_size;
    MT_CHECK_MSG(s->num_cases > 0, "sampler: no cases");
    MT_CHECK(images->dtype == MT_F32 && images->ndim == 5 && mt_tensor_is_contiguous(images));
    MT_CHECK(labels->dtype == MT_U8 && labels->ndim == 5 && mt_tensor_is_contiguous(labels));
    MT_CHECK(images->storage->device.type == MT_CPU && labels->storage->device.type == MT_CPU);
    MT_CHECK(images->shape[0] == N && images->shape[1] == s->channels && labels->shape[0] == N &&
             labels->shape[1] == 1);
    for (int a = 0; a < 3; a++) MT_CHECK(images->shape[2 + a] == p[a] && labels->shape[2 + a] == p[a]);
    int64_t vol = p[0] * p[1] * p[2];
    float *img = mt_tensor_data(images);
    uint8_t *lab = mt_tensor_data(labels);
    for (int64_t b = 0; b < N; b++) {
        int ci = (int)mt_rng_randint(rng, 0, s->num_cases);
        int fg = mt_rng_uniform(rng) < s->cfg.fg_prob;
        mt_sampler_patch(img + b * s->channels * vol, lab + b * vol, s, ci, fg, rng, infos ? &infos[b] : NULL);
    }
}

mt_status mt_sampler_batch(mt_tensor **images_out, mt_tensor **labels_out, const mt_sampler *s, mt_rng *rng,
                           mt_patch_info *infos) {
    *images_out = *labels_out = NULL;
    if (s->num_cases < 1) return mt_error_set(MT_ERR_INVALID, "sampler: no cases to sample from");
    const int64_t *p = s->cfg.patch;
    int64_t N = s->cfg.batch_size;
    mt_tensor *im = mt_tensor_new(MT_F32, 5, (int64_t[]){N, s->channels, p[0], p[1], p[2]}, MT_DEVICE_CPU);
    mt_tensor *lb = mt_tensor_new(MT_U8, 5, (int64_t[]){N, 1, p[0], p[1], p[2]}, MT_DEVICE_CPU);
    mt_sampler_fill_batch(im, lb, s, rng, infos);
    *images_out = im;
    *labels_out = lb;
    return MT_OK;
}
