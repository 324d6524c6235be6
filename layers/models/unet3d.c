/* UNet3D (nnU-Net PlainConvUNet style); see layers/models/unet3d.h. */
#include "layers/models/unet3d.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mt_unet3d_config cfg;
    mt_module *enc[MT_UNET3D_MAX_LEVELS]; /* enc[l-1] = enc{l} */
    mt_module *up[MT_UNET3D_MAX_LEVELS];  /* up[l-1] = up{l}, l < L */
    mt_module *dec[MT_UNET3D_MAX_LEVELS];
    mt_module *ds[MT_UNET3D_MAX_LEVELS];  /* ds[l-1] = ds{l}, l >= 2 with deep supervision */
    mt_module *head;
} unet_impl;

const char *mt_norm_type_name(mt_norm_type t) {
    switch (t) {
    case MT_NORM_BATCH: return "batch";
    case MT_NORM_INSTANCE: return "instance";
    case MT_NORM_GROUP: return "group";
    case MT_NORM_NONE: return "none";
    }
    return "?";
}

void mt_unet3d_config_default(mt_unet3d_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->in_channels = 1;
    cfg->out_channels = 2;
    cfg->n_levels = 5;
    const int f[5] = {32, 64, 128, 256, 320};
    for (int l = 0; l < 5; l++) cfg->features[l] = f[l];
    cfg->norm = MT_NORM_INSTANCE;
    cfg->norm_groups = 8;
    cfg->norm_affine = 1;
    cfg->norm_eps = 1e-5f;
    cfg->bn_momentum = 0.1f;
    cfg->act = MT_ACT_LEAKY_RELU;
    cfg->act_slope = 0.01f;
    cfg->upsample = MT_UPSAMPLE_TRANSPOSED;
    cfg->downsample = MT_DOWNSAMPLE_CONV;
    cfg->deep_supervision = 0;
    cfg->dropout = 0.0f;
    cfg->conv_bias = 1;
}

mt_status mt_unet3d_config_validate(const mt_unet3d_config *c) {
    if (c->in_channels <= 0)
        return mt_error_set(MT_ERR_CONFIG, "unet3d: in_channels = %d must be positive",
                            c->in_channels);
    if (c->out_channels <= 0)
        return mt_error_set(MT_ERR_CONFIG, "unet3d: out_channels = %d must be positive",
                            c->out_channels);
    if (c->n_levels < 1 || c->n_levels > MT_UNET3D_MAX_LEVELS)
        return mt_error_set(MT_ERR_CONFIG,
                            "unet3d: features has %d levels; it must list 1 to %d channel counts",
                            c->n_levels, MT_UNET3D_MAX_LEVELS);
    for (int l = 0; l < c->n_levels; l++)
        if (c->features[l] <= 0)
            return mt_error_set(MT_ERR_CONFIG, "unet3d: features[%d] = %d must be positive", l,
                                c->features[l]);
    if (c->norm < MT_NORM_BATCH || c->norm > MT_NORM_NONE)
        return mt_error_set(MT_ERR_CONFIG, "unet3d: unknown norm type %d", (int)c->norm);
    if (c->norm == MT_NORM_GROUP) {
        if (c->norm_groups <= 0)
            return mt_error_set(MT_ERR_CONFIG, "unet3d: norm_groups = %d must be positive",
                                c->norm_groups);
        for (int l = 0; l < c->n_levels; l++)
            if (c->features[l] % c->norm_groups)
                return mt_error_set(MT_ERR_CONFIG,
                                    "unet3d: features[%d] = %d is not divisible by norm_groups = %d",
                                    l, c->features[l], c->norm_groups);
    }
    if (c->norm != MT_NORM_NONE && !(c->norm_eps > 0))
        return mt_error_set(MT_ERR_CONFIG, "unet3d: norm_eps = %g must be positive",
                            (double)c->norm_eps);
    if (c->norm == MT_NORM_BATCH && !(c->bn_momentum >= 0 && c->bn_momentum <= 1))
        return mt_error_set(MT_ERR_CONFIG, "unet3d: bn_momentum = %g outside [0, 1]",
                            (double)c->bn_momentum);
    if (c->act != MT_ACT_RELU && c->act != MT_ACT_LEAKY_RELU && c->act != MT_ACT_GELU)
        return mt_error_set(MT_ERR_CONFIG,
                            "unet3d: activation must be relu, leaky_relu or gelu (got type %d)",
                            (int)c->act);
    if (c->act == MT_ACT_LEAKY_RELU && !(c->act_slope >= 0 && c->act_slope < 1))
        return mt_error_set(MT_ERR_CONFIG, "unet3d: act_slope = %g outside [0, 1)",
                            (double)c->act_slope);
    if (c->upsample != MT_UPSAMPLE_TRANSPOSED && c->upsample != MT_UPSAMPLE_TRILINEAR)
        return mt_error_set(MT_ERR_CONFIG, "unet3d: unknown upsample mode %d", (int)c->upsample);
    if (c->downsample != MT_DOWNSAMPLE_CONV && c->downsample != MT_DOWNSAMPLE_MAXPOOL)
        return mt_error_set(MT_ERR_CONFIG, "unet3d: unknown downsample mode %d",
                            (int)c->downsample);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return mt_error_set(MT_ERR_CONFIG, "unet3d: dropout = %g outside [0, 1)",
                            (double)c->dropout);
    if (c->deep_supervision && c->n_levels < 3)
        return mt_error_set(MT_ERR_CONFIG,
                            "unet3d: deep_supervision needs at least 3 levels (features has %d)",
                            c->n_levels);
    return MT_OK;
}

mt_status mt_unet3d_check_patch(const mt_unet3d_config *c, const int64_t *patch) {
    int64_t f = (int64_t)1 << (c->n_levels - 1);
    for (int d = 0; d < 3; d++)
        if (patch[d] <= 0 || patch[d] % f)
            return mt_error_set(MT_ERR_CONFIG,
                                "unet3d: patch size %lldx%lldx%lld is not divisible by %lld "
                                "(2^(levels-1) for %d levels) along axis %d (%lld)",
                                (long long)patch[0], (long long)patch[1], (long long)patch[2],
                                (long long)f, c->n_levels, d, (long long)patch[d]);
    return MT_OK;
}

/* -------------------------------------------------------------- building */

static mt_module *make_norm(const mt_unet3d_config *c, int ch) {
    switch (c->norm) {
    case MT_NORM_BATCH: return mt_batch_norm3d_new(ch, c->norm_eps, c->bn_momentum);
    case MT_NORM_INSTANCE: return mt_instance_norm3d_new(ch, c->norm_eps, c->norm_affine);
    case MT_NORM_GROUP: return mt_group_norm_new(c->norm_groups, ch, c->norm_eps, 1);
    case MT_NORM_NONE: return NULL;
    }
    return NULL;
}

/* Stage: [pool] conv1 [drop1] norm1 act1 conv2 [drop2] norm2 act2. */
static mt_module *make_stage(const mt_unet3d_config *c, int cin, int cout, int first_stride,
                             int pool, mt_rng *rng, uint64_t drop_seed) {
    mt_module *s = mt_module_new("ConvStage", mt_module_sequential_forward);
    if (pool) mt_module_add_child(s, "pool", mt_max_pool3d_new(2, 2, 0));
    for (int k = 1; k <= 2; k++) {
        char name[16];
        mt_conv3d_opts o = mt_conv3d_opts_make(3, k == 1 ? first_stride : 1, 1, c->conv_bias);
        snprintf(name, sizeof name, "conv%d", k);
        mt_module_add_child(s, name, mt_conv3d_new(k == 1 ? cin : cout, cout, &o, rng));
        if (c->dropout > 0) {
            snprintf(name, sizeof name, "drop%d", k);
            mt_module_add_child(s, name, mt_dropout_new(c->dropout, drop_seed + (uint64_t)k));
        }
        mt_module *n = make_norm(c, cout);
        if (n) {
            snprintf(name, sizeof name, "norm%d", k);
            mt_module_add_child(s, name, n);
        }
        snprintf(name, sizeof name, "act%d", k);
        mt_module_add_child(s, name, mt_activation_new(c->act, c->act_slope));
    }
    return s;
}

/* Trilinear upsampling block: 1x1x1 conv then x2 trilinear interpolation. */
static mt_tensor *up_trilinear_forward(mt_module *m, const mt_tensor *x) {
    mt_tensor *y = mt_module_forward(m->children[0].module, x);
    int64_t size[3] = {2 * y->shape[2], 2 * y->shape[3], 2 * y->shape[4]};
    mt_tensor *u = mt_upsample_trilinear(y, size, 0);
    mt_tensor_release(y);
    return u;
}

static mt_tensor *unet_forward(mt_module *m, const mt_tensor *x) {
    return mt_unet3d_forward(m, x);
}

mt_status mt_unet3d_new(mt_module **out, const mt_unet3d_config *cfg, uint64_t seed) {
    *out = NULL;
    MT_TRY(mt_unet3d_config_validate(cfg));
    const mt_unet3d_config *c = cfg;
    int L = c->n_levels;
    mt_rng rng;
    mt_rng_init(&rng, seed);
    mt_module *m = mt_module_new("UNet3D", unet_forward);
    unet_impl *u = calloc(1, sizeof *u);
    MT_CHECK(u);
    u->cfg = *cfg;
    m->impl = u;
    m->impl_free = free;
    char name[16];
    for (int l = 1; l <= L; l++) {
        int cin = l == 1 ? c->in_channels : c->features[l - 2];
        int down = l > 1;
        int conv_stride = down && c->downsample == MT_DOWNSAMPLE_CONV ? 2 : 1;
        int pool = down && c->downsample == MT_DOWNSAMPLE_MAXPOOL;
        snprintf(name, sizeof name, "enc%d", l);
        u->enc[l - 1] = mt_module_add_child(
            m, name,
            make_stage(c, cin, c->features[l - 1], conv_stride, pool, &rng, seed * 1000003u + 16u * l));
    }
    for (int l = L - 1; l >= 1; l--) {
        int chi = c->features[l], clo = c->features[l - 1];
        snprintf(name, sizeof name, "up%d", l);
        if (c->upsample == MT_UPSAMPLE_TRANSPOSED) {
            mt_conv3d_opts o = mt_conv3d_opts_make(2, 2, 0, 1);
            u->up[l - 1] = mt_module_add_child(m, name, mt_conv_transpose3d_new(chi, clo, &o, &rng));
        } else {
            mt_module *up = mt_module_new("UpsampleConv", up_trilinear_forward);
            mt_conv3d_opts o = mt_conv3d_opts_make(1, 1, 0, 1);
            mt_module_add_child(up, "conv", mt_conv3d_new(chi, clo, &o, &rng));
            u->up[l - 1] = mt_module_add_child(m, name, up);
        }
        snprintf(name, sizeof name, "dec%d", l);
        u->dec[l - 1] = mt_module_add_child(
            m, name, make_stage(c, 2 * clo, clo, 1, 0, &rng, seed * 1000003u + 16u * (L + l)));
        if (c->deep_supervision && l >= 2) {
            mt_conv3d_opts o = mt_conv3d_opts_make(1, 1, 0, 1);
            snprintf(name, sizeof name, "ds%d", l);
            u->ds[l - 1] = mt_module_add_child(m, name, mt_conv3d_new(clo, c->out_channels, &o, &rng));
        }
    }
    mt_conv3d_opts o = mt_conv3d_opts_make(1, 1, 0, 1);
    u->head = mt_module_add_child(m, "head", mt_conv3d_new(c->features[0], c->out_channels, &o, &rng));
    *out = m;
    return MT_OK;
}

const mt_unet3d_config *mt_unet3d_get_config(const mt_module *model) {
    MT_CHECK_MSG(model->forward == unet_forward, "module %s is not a UNet3D", model->type);
    return &((const unet_impl *)model->impl)->cfg;
}

/* --------------------------------------------------------------- forward */

static mt_tensor *forward_impl(mt_module *m, const mt_tensor *x, mt_tensor **ds, int *n_ds) {
    MT_CHECK_MSG(m->forward == unet_forward, "module %s is not a UNet3D", m->type);
    unet_impl *u = m->impl;
    const mt_unet3d_config *c = &u->cfg;
    int L = c->n_levels;
    MT_CHECK_MSG(x->ndim == 5 && x->shape[1] == c->in_channels,
                 "UNet3D: expected input (N, %d, D, H, W), got %d dims with %lld channels",
                 c->in_channels, x->ndim, (long long)(x->ndim > 1 ? x->shape[1] : -1));
    mt_status st = mt_unet3d_check_patch(c, x->shape + 2);
    MT_CHECK_MSG(st == MT_OK, "UNet3D forward: %s", mt_error_msg());
    if (n_ds) *n_ds = 0;
    mt_tensor *skip[MT_UNET3D_MAX_LEVELS] = {0};
    mt_tensor *cur = mt_tensor_retain((mt_tensor *)x);
    for (int l = 1; l <= L; l++) {
        mt_tensor *next = mt_module_forward(u->enc[l - 1], cur);
        mt_tensor_release(cur);
        cur = next;
        if (l < L) skip[l - 1] = mt_tensor_retain(cur);
    }
    for (int l = L - 1; l >= 1; l--) {
        mt_tensor *up = mt_module_forward(u->up[l - 1], cur);
        mt_tensor_release(cur);
        mt_tensor *pair[2] = {up, skip[l - 1]};
        mt_tensor *cat = mt_concat(2, pair, 1);
        mt_tensor_release(up);
        mt_tensor_release(skip[l - 1]);
        skip[l - 1] = NULL;
        cur = mt_module_forward(u->dec[l - 1], cat);
        mt_tensor_release(cat);
        if (ds && u->ds[l - 1]) {
            ds[l - 2] = mt_module_forward(u->ds[l - 1], cur);
            if (*n_ds < l - 1) *n_ds = l - 1;
        }
    }
    mt_tensor *logits = mt_module_forward(u->head, cur);
    mt_tensor_release(cur);
    return logits;
}

mt_tensor *mt_unet3d_forward(mt_module *model, const mt_tensor *x) {
    return forward_impl(model, x, NULL, NULL);
}

mt_tensor *mt_unet3d_forward_ds(mt_module *model, const mt_tensor *x, mt_tensor **ds, int *n_ds) {
    MT_CHECK(ds && n_ds);
    return forward_impl(model, x, ds, n_ds);
}

/* ----------------------------------------------------------------- FLOPs */

double mt_unet3d_flops(const mt_unet3d_config *c, int64_t batch, const int64_t *patch) {
    int L = c->n_levels;
    double vox[MT_UNET3D_MAX_LEVELS];
    for (int l = 0; l < L; l++) {
        int64_t f = (int64_t)1 << l;
        vox[l] = (double)(patch[0] / f) * (double)(patch[1] / f) * (double)(patch[2] / f);
    }
    double macs = 0;
    for (int l = 0; l < L; l++) { /* encoder: 3x3x3 convs at output resolution */
        double cin = l == 0 ? c->in_channels : c->features[l - 1], co = c->features[l];
        macs += vox[l] * co * cin * 27 + vox[l] * co * co * 27;
    }
    for (int l = 0; l < L - 1; l++) {
        double chi = c->features[l + 1], clo = c->features[l];
        /* transposed k2 s2: every output voxel gets one tap per input channel;
         * trilinear: 1x1x1 conv at the coarse resolution */
        macs += c->upsample == MT_UPSAMPLE_TRANSPOSED ? vox[l] * chi * clo : vox[l + 1] * chi * clo;
        macs += vox[l] * clo * 2 * clo * 27 + vox[l] * clo * clo * 27;
        if (c->deep_supervision && l >= 1) macs += vox[l] * clo * c->out_channels;
    }
    macs += vox[0] * c->features[0] * c->out_channels;
    return 2.0 * macs * (double)batch;
}
