/* Sliding-window inference with Gaussian importance weighting and mirroring
 * test-time augmentation (conventions in eval/sliding_window.h). */
#include "eval/sliding_window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "layers/models/unet3d.h"

void mt_eval_sw_opts_default(mt_eval_sw_opts *o, const int64_t *patch) {
    memset(o, 0, sizeof *o);
    for (int a = 0; a < 3; a++) o->patch[a] = patch ? patch[a] : 0;
    o->overlap = 0.5;
    o->batch = 1;
    o->gaussian = 1;
    o->sigma_scale = 1.0 / 8.0;
    o->mirror_axes = 0;
    o->accumulate = MT_EVAL_SW_LOGITS;
    o->pad_value = 0.0f;
}

mt_status mt_eval_sw_opts_validate(const mt_eval_sw_opts *o) {
    for (int a = 0; a < 3; a++)
        if (o->patch[a] <= 0)
            return mt_error_set(MT_ERR_INVALID, "sliding window: patch size %lld along axis %d",
                                (long long)o->patch[a], a);
    if (!(o->overlap >= 0 && o->overlap < 1))
        return mt_error_set(MT_ERR_INVALID, "sliding window: overlap %g is not in [0, 1)", o->overlap);
    if (o->batch < 1)
        return mt_error_set(MT_ERR_INVALID, "sliding window: batch %d (need >= 1)", o->batch);
    if (o->gaussian && !(o->sigma_scale > 0 && isfinite(o->sigma_scale)))
        return mt_error_set(MT_ERR_INVALID, "sliding window: sigma_scale %g (need > 0)",
                            o->sigma_scale);
    if (o->mirror_axes & ~7u)
        return mt_error_set(MT_ERR_INVALID,
                            "sliding window: mirror_axes 0x%x has bits beyond the 3 spatial axes",
                            o->mirror_axes);
    if (o->accumulate != MT_EVAL_SW_LOGITS && o->accumulate != MT_EVAL_SW_SOFTMAX &&
        o->accumulate != MT_EVAL_SW_SIGMOID)
        return mt_error_set(MT_ERR_INVALID, "sliding window: unknown accumulate mode %d",
                            (int)o->accumulate);
    return MT_OK;
}

/* ---------------------------------------------------------------- steps */

static double target_step(int64_t patch, double overlap) {
    double t = (double)patch * (1.0 - overlap);
    return t < 1.0 ? 1.0 : t;
}

int64_t mt_eval_sw_num_steps(int64_t size, int64_t patch, double overlap) {
    if (size <= patch) return 1;
    return (int64_t)ceil((double)(size - patch) / target_step(patch, overlap)) + 1;
}

void mt_eval_sw_steps(int64_t *starts, int64_t size, int64_t patch, double overlap) {
    int64_t n = mt_eval_sw_num_steps(size, patch, overlap);
    if (n == 1) {
        starts[0] = 0;
        return;
    }
    double step = (double)(size - patch) / (double)(n - 1);
    for (int64_t i = 0; i < n; i++) starts[i] = (int64_t)llrint(step * (double)i);
}

/* ------------------------------------------------------ importance map */

mt_tensor *mt_eval_gaussian_map(const int64_t *patch, double sigma_scale) {
    double *g[3];
    for (int a = 0; a < 3; a++) {
        int64_t P = patch[a], c = P / 2;
        double sigma = sigma_scale * (double)P;
        int64_t radius = (int64_t)(4.0 * sigma + 0.5);
        g[a] = malloc((size_t)P * sizeof *g[a]);
        MT_CHECK(g[a]);
        for (int64_t i = 0; i < P; i++) {
            double d = (double)(i - c);
            g[a][i] = llabs(i - c) <= radius ? exp(-d * d / (2.0 * sigma * sigma)) : 0.0;
        }
    }
    mt_tensor *t = mt_tensor_new(MT_F32, 3, patch, MT_DEVICE_CPU);
    float *w = MT_F32P(t);
    int64_t n = patch[0] * patch[1] * patch[2];
    float min_nz = INFINITY;
    for (int64_t i = 0; i < patch[0]; i++)
        for (int64_t j = 0; j < patch[1]; j++)
            for (int64_t k = 0; k < patch[2]; k++) {
                float v = (float)(g[0][i] * g[1][j] * g[2][k]);
                w[(i * patch[1] + j) * patch[2] + k] = v;
                if (v > 0 && v < min_nz) min_nz = v;
            }
    for (int64_t i = 0; i < n; i++)
        if (w[i] == 0) w[i] = min_nz;
    for (int a = 0; a < 3; a++) free(g[a]);
    return t;
}

/* -------------------------------------------------------- the window loop */

static mt_tensor *host_f32(const mt_tensor *t) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    mt_tensor *f = mt_tensor_to_dtype(h, MT_F32);
    mt_tensor *c = mt_tensor_contiguous(f);
    mt_tensor_release(f);
    mt_tensor_release(h);
    return c;
}

typedef struct {
    int64_t C, K;
    int64_t Sp[3];      /* padded volume */
    int64_t P[3];       /* patch */
    int64_t Pv, Vp;     /* patch / padded volume voxel counts */
    const float *img;   /* (C, Sp) */
    const float *w;     /* (P) importance */
    float *acc;         /* (K, Sp) */
    float *wsum;        /* (Sp) */
} sw_state;

/* Copies window starts st[b][3] (flipped along the axes in mask m) into x (b, C, P). */
static void gather(float *x, const sw_state *s, int64_t (*st)[3], int64_t b, unsigned m) {
    const int64_t P0 = s->P[0], P1 = s->P[1], P2 = s->P[2];
    const int64_t S1 = s->Sp[1], S2 = s->Sp[2];
    int64_t rows = b * s->C * P0;
#pragma omp parallel for if (rows * P1 * P2 > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t j = r / (s->C * P0), c = (r / P0) % s->C, i = r % P0;
        int64_t si = (m & 1) ? P0 - 1 - i : i;
        for (int64_t jj = 0; jj < P1; jj++) {
            int64_t sj = (m & 2) ? P1 - 1 - jj : jj;
            const float *src = s->img + ((c * s->Sp[0] + st[j][0] + si) * S1 + st[j][1] + sj) * S2 + st[j][2];
            float *dst = x + ((j * s->C + c) * P0 + i) * P1 * P2 + jj * P2;
            if (m & 4)
                for (int64_t l = 0; l < P2; l++) dst[l] = src[P2 - 1 - l];
            else
                memcpy(dst, src, (size_t)P2 * sizeof *dst);
        }
    }
}

/* Adds scale * w * act(y) of window j (flipped back along mask m) into acc. */
static void accumulate(sw_state *s, const float *y /* (K, P) of window j */, const int64_t *st,
                       unsigned m, float scale, mt_eval_sw_accumulate mode) {
    const int64_t P0 = s->P[0], P1 = s->P[1], P2 = s->P[2], K = s->K, Pv = s->Pv, Vp = s->Vp;
    const int64_t S1 = s->Sp[1], S2 = s->Sp[2];
#pragma omp parallel for if (K * Pv > 32768) schedule(static)
    for (int64_t i = 0; i < P0; i++) {
        int64_t si = (m & 1) ? P0 - 1 - i : i;
        for (int64_t jj = 0; jj < P1; jj++) {
            int64_t sj = (m & 2) ? P1 - 1 - jj : jj;
            for (int64_t l = 0; l < P2; l++) {
                int64_t sl = (m & 4) ? P2 - 1 - l : l;
                int64_t sv = (si * P1 + sj) * P2 + sl;
                int64_t dv = ((st[0] + i) * S1 + st[1] + jj) * S2 + st[2] + l;
                float ww = scale * s->w[(i * P1 + jj) * P2 + l];
                if (mode == MT_EVAL_SW_LOGITS) {
                    for (int64_t k = 0; k < K; k++) s->acc[k * Vp + dv] += ww * y[k * Pv + sv];
                } else if (mode == MT_EVAL_SW_SIGMOID) {
                    for (int64_t k = 0; k < K; k++)
                        s->acc[k * Vp + dv] += ww * (float)(1.0 / (1.0 + exp(-(double)y[k * Pv + sv])));
                } else {
                    double mx = -INFINITY, sum = 0;
                    for (int64_t k = 0; k < K; k++)
                        if (y[k * Pv + sv] > mx) mx = y[k * Pv + sv];
                    for (int64_t k = 0; k < K; k++) sum += exp((double)y[k * Pv + sv] - mx);
                    for (int64_t k = 0; k < K; k++)
                        s->acc[k * Vp + dv] += ww * (float)(exp((double)y[k * Pv + sv] - mx) / sum);
                }
            }
        }
    }
}

static void add_weights(sw_state *s, const int64_t *st) {
    const int64_t P1 = s->P[1], P2 = s->P[2], S1 = s->Sp[1], S2 = s->Sp[2];
    for (int64_t i = 0; i < s->P[0]; i++)
        for (int64_t jj = 0; jj < P1; jj++) {
            float *dst = s->wsum + ((st[0] + i) * S1 + st[1] + jj) * S2 + st[2];
            const float *src = s->w + (i * P1 + jj) * P2;
            for (int64_t l = 0; l < P2; l++) dst[l] += src[l];
        }
}

mt_status mt_eval_sliding_window(mt_tensor **out, const mt_tensor *image, mt_eval_predict_fn fn,
                                 void *ctx, const mt_eval_sw_opts *o) {
    *out = NULL;
    MT_TRY(mt_eval_sw_opts_validate(o));
    if (!fn) return mt_error_set(MT_ERR_INVALID, "sliding window: no predictor");
    if (!image || image->ndim != 4 || !mt_dtype_is_float(image->dtype)) {
        char b[96] = "(none)";
        if (image) mt_tensor_shape_str(image, b, sizeof b);
        return mt_error_set(MT_ERR_INVALID,
                            "sliding window: image %s %s (expected a float (C, D, H, W) volume)", b,
                            image ? mt_dtype_name(image->dtype) : "");
    }
    for (int a = 0; a < 4; a++)
        if (image->shape[a] <= 0)
            return mt_error_set(MT_ERR_INVALID, "sliding window: empty image (dim %d is %lld)", a,
                                (long long)image->shape[a]);

    sw_state s = {0};
    s.C = image->shape[0];
    const int64_t *S = image->shape + 1;
    int64_t lo[3], nsteps[3], *starts[3];
    for (int a = 0; a < 3; a++) {
        s.P[a] = o->patch[a];
        s.Sp[a] = S[a] > s.P[a] ? S[a] : s.P[a];
        lo[a] = (s.Sp[a] - S[a]) / 2;
        nsteps[a] = mt_eval_sw_num_steps(s.Sp[a], s.P[a], o->overlap);
        starts[a] = malloc((size_t)nsteps[a] * sizeof *starts[a]);
        MT_CHECK(starts[a]);
        mt_eval_sw_steps(starts[a], s.Sp[a], s.P[a], o->overlap);
    }
    s.Pv = s.P[0] * s.P[1] * s.P[2];
    s.Vp = s.Sp[0] * s.Sp[1] * s.Sp[2];

    /* padded host image */
    mt_tensor *himg = host_f32(image);
    float *pimg = malloc((size_t)(s.C * s.Vp) * sizeof *pimg);
    MT_CHECK(pimg);
    for (int64_t i = 0; i < s.C * s.Vp; i++) pimg[i] = o->pad_value;
    const float *src = MT_F32P(himg);
    for (int64_t c = 0; c < s.C; c++)
        for (int64_t z = 0; z < S[0]; z++)
            for (int64_t y = 0; y < S[1]; y++)
                memcpy(pimg + ((c * s.Sp[0] + z + lo[0]) * s.Sp[1] + y + lo[1]) * s.Sp[2] + lo[2],
                       src + ((c * S[0] + z) * S[1] + y) * S[2], (size_t)S[2] * sizeof *pimg);
    mt_tensor_release(himg);
    s.img = pimg;

    mt_tensor *wmap = NULL;
    float *ones = NULL;
    if (o->gaussian) {
        wmap = mt_eval_gaussian_map(s.P, o->sigma_scale);
        s.w = MT_F32P(wmap);
    } else {
        ones = malloc((size_t)s.Pv * sizeof *ones);
        MT_CHECK(ones);
        for (int64_t i = 0; i < s.Pv; i++) ones[i] = 1.0f;
        s.w = ones;
    }
    s.wsum = calloc((size_t)s.Vp, sizeof *s.wsum);
    MT_CHECK(s.wsum);

    unsigned mirrors[8];
    int nm = 0;
    for (unsigned m = 0; m < 8; m++)
        if ((m & ~o->mirror_axes) == 0) mirrors[nm++] = m;
    float inv_nm = 1.0f / (float)nm;

    int64_t nw = nsteps[0] * nsteps[1] * nsteps[2];
    int64_t(*st)[3] = malloc((size_t)o->batch * sizeof *st);
    MT_CHECK(st);
    mt_status status = MT_OK;
    for (int64_t w0 = 0; w0 < nw && status == MT_OK; w0 += o->batch) {
        int64_t b = nw - w0 < o->batch ? nw - w0 : o->batch;
        for (int64_t j = 0; j < b; j++) {
            int64_t id = w0 + j;
            st[j][0] = starts[0][id / (nsteps[1] * nsteps[2])];
            st[j][1] = starts[1][(id / nsteps[2]) % nsteps[1]];
            st[j][2] = starts[2][id % nsteps[2]];
        }
        for (int mi = 0; mi < nm && status == MT_OK; mi++) {
            int64_t xs[5] = {b, s.C, s.P[0], s.P[1], s.P[2]};
            mt_tensor *x = mt_tensor_new(MT_F32, 5, xs, MT_DEVICE_CPU);
            gather(MT_F32P(x), &s, st, b, mirrors[mi]);
            mt_tensor *y = fn(ctx, x);
            mt_tensor_release(x);
            if (!y) {
                status = mt_error_prefix(MT_ERR_INVALID, "sliding window: predictor failed: ");
                break;
            }
            int ok = y->ndim == 5 && y->shape[0] == b && y->shape[1] >= 1 &&
                     y->shape[2] == s.P[0] && y->shape[3] == s.P[1] && y->shape[4] == s.P[2] &&
                     mt_dtype_is_float(y->dtype) && (s.K == 0 || y->shape[1] == s.K);
            if (!ok) {
                char a[96];
                status = mt_error_set(MT_ERR_INVALID,
                                      "sliding window: predictor returned %s %s for a batch of %lld "
                                      "windows of %lldx%lldx%lld (expected float (%lld, K%s, %lld, "
                                      "%lld, %lld))",
                                      mt_tensor_shape_str(y, a, sizeof a), mt_dtype_name(y->dtype),
                                      (long long)b, (long long)s.P[0], (long long)s.P[1],
                                      (long long)s.P[2], (long long)b, s.K ? " as before" : "",
                                      (long long)s.P[0], (long long)s.P[1], (long long)s.P[2]);
                mt_tensor_release(y);
                break;
            }
            if (s.K == 0) {
                s.K = y->shape[1];
                s.acc = calloc((size_t)(s.K * s.Vp), sizeof *s.acc);
                MT_CHECK(s.acc);
            }
            mt_tensor *yh = host_f32(y);
            mt_tensor_release(y);
            const float *yp = MT_F32P(yh);
            for (int64_t j = 0; j < b; j++)
                accumulate(&s, yp + j * s.K * s.Pv, st[j], mirrors[mi], inv_nm, o->accumulate);
            mt_tensor_release(yh);
        }
        if (status == MT_OK)
            for (int64_t j = 0; j < b; j++) add_weights(&s, st[j]);
    }

    if (status == MT_OK) {
        int64_t os[4] = {s.K, S[0], S[1], S[2]};
        mt_tensor *res = mt_tensor_new(MT_F32, 4, os, MT_DEVICE_CPU);
        float *r = MT_F32P(res);
        for (int64_t k = 0; k < s.K; k++)
            for (int64_t z = 0; z < S[0]; z++)
                for (int64_t y = 0; y < S[1]; y++) {
                    int64_t dv = ((z + lo[0]) * s.Sp[1] + y + lo[1]) * s.Sp[2] + lo[2];
                    const float *a = s.acc + k * s.Vp + dv, *ws = s.wsum + dv;
                    float *d = r + ((k * S[0] + z) * S[1] + y) * S[2];
                    for (int64_t x = 0; x < S[2]; x++) d[x] = a[x] / ws[x];
                }
        *out = res;
    }
    free(st);
    free(s.acc);
    free(s.wsum);
    free(ones);
    mt_tensor_release(wmap);
    free(pimg);
    for (int a = 0; a < 3; a++) free(starts[a]);
    return status;
}

/* ---------------------------------------------------- model as predictor */

static const mt_tensor *first_param(const mt_module *m) {
    if (m->n_params > 0) return m->params[0].tensor;
    for (int i = 0; i < m->n_children; i++) {
        const mt_tensor *t = first_param(m->children[i].module);
        if (t) return t;
    }
    return NULL;
}

mt_tensor *mt_eval_module_predict(void *ctx, const mt_tensor *x) {
    mt_module *model = ctx;
    const mt_tensor *p = first_param(model);
    mt_device dev = p ? p->storage->device : MT_DEVICE_CPU;
    mt_tensor *xd = mt_tensor_to_device(x, dev);
    mt_tensor *y = mt_module_forward(model, xd);
    mt_tensor_release(xd);
    return y;
}

mt_status mt_eval_sliding_window_model(mt_tensor **out, const mt_tensor *image, mt_module *model,
                                       const mt_eval_sw_opts *o) {
    *out = NULL;
    if (!model) return mt_error_set(MT_ERR_INVALID, "sliding window: no model");
    MT_TRY(mt_eval_sw_opts_validate(o));
    if (model->type && !strcmp(model->type, "UNet3D"))
        MT_TRY(mt_unet3d_check_patch(mt_unet3d_get_config(model), o->patch));
    int was_training = model->training;
    mt_module_train(model, 0);
    int prev = mt_grad_set_enabled(0);
    mt_status st = mt_eval_sliding_window(out, image, mt_eval_module_predict, model, o);
    mt_grad_set_enabled(prev);
    mt_module_train(model, was_training);
    return st;
}
