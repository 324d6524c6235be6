/* CPU augmentation pipeline (see data/augment.h). No OpenMP inside: the
 * loader runs one sample per worker thread. */
#include "data/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AUG_PI 3.14159265358979323846

/* workspace slots */
#define WS_ELASTIC 0 /* coarse displacement grids and row lines */
#define WS_VOLUME 1  /* one channel volume (blur copy, low-res grid) */
#define WS_TABLE 2   /* per-axis index / weight tables, row index lists */
#define WS_LINE 3    /* padded line for the blur along w */

static const int g_planes[3][2] = {{0, 1}, {0, 2}, {1, 2}};

void mt_augment_config_default(mt_augment_config *c) {
    memset(c, 0, sizeof *c);
    c->p_rotation = 0.2;
    c->rotation_deg[0] = c->rotation_deg[1] = c->rotation_deg[2] = 30.0;
    c->p_scale = 0.2;
    c->scale_range[0] = 0.7;
    c->scale_range[1] = 1.4;
    c->p_elastic = 0.0;
    c->elastic_alpha[0] = 0.0;
    c->elastic_alpha[1] = 900.0;
    c->elastic_sigma[0] = 9.0;
    c->elastic_sigma[1] = 13.0;
    c->p_flip[0] = c->p_flip[1] = c->p_flip[2] = 0.5;
    c->p_rot90 = 0.0;
    c->rot90_planes[0] = c->rot90_planes[1] = c->rot90_planes[2] = 1;
    c->p_noise = 0.1;
    c->noise_std[0] = 0.0;
    c->noise_std[1] = 0.1;
    c->p_blur = 0.2;
    c->blur_sigma[0] = 0.5;
    c->blur_sigma[1] = 1.0;
    c->blur_p_channel = 0.5;
    c->p_brightness = 0.15;
    c->brightness_range[0] = 0.75;
    c->brightness_range[1] = 1.25;
    c->p_contrast = 0.15;
    c->contrast_range[0] = 0.75;
    c->contrast_range[1] = 1.25;
    c->p_lowres = 0.25;
    c->lowres_zoom[0] = 0.5;
    c->lowres_zoom[1] = 1.0;
    c->lowres_p_channel = 0.5;
    c->p_gamma_inverted = 0.1;
    c->p_gamma = 0.3;
    c->gamma_range[0] = 0.7;
    c->gamma_range[1] = 1.5;
}

void mt_augment_config_none(mt_augment_config *c) {
    mt_augment_config_default(c);
    c->p_rotation = c->p_scale = c->p_elastic = c->p_rot90 = 0.0;
    c->p_flip[0] = c->p_flip[1] = c->p_flip[2] = 0.0;
    c->p_noise = c->p_blur = c->p_brightness = c->p_contrast = c->p_lowres = 0.0;
    c->p_gamma_inverted = c->p_gamma = 0.0;
}

static mt_status check_prob(double p, const char *name) {
    if (!(p >= 0.0 && p <= 1.0))
        return mt_error_set(MT_ERR_CONFIG, "augment: %s = %g must be a probability in [0, 1]", name, p);
    return MT_OK;
}

/* lo <= hi, lo >= min (or > min when strict), hi <= max */
static mt_status check_range(const double r[2], double min, int strict, double max, const char *name) {
    int ok = r[0] <= r[1] && (strict ? r[0] > min : r[0] >= min) && r[1] <= max;
    if (!ok)
        return mt_error_set(MT_ERR_CONFIG, "augment: %s = [%g, %g] must satisfy %g %s lo <= hi <= %g", name, r[0], r[1],
                            min, strict ? "<" : "<=", max);
    return MT_OK;
}

mt_status mt_augment_config_check(const mt_augment_config *c) {
    static const char *const pf[3] = {"p_flip[0]", "p_flip[1]", "p_flip[2]"};
    MT_TRY(check_prob(c->p_rotation, "p_rotation"));
    MT_TRY(check_prob(c->p_scale, "p_scale"));
    MT_TRY(check_prob(c->p_elastic, "p_elastic"));
    for (int a = 0; a < 3; a++) MT_TRY(check_prob(c->p_flip[a], pf[a]));
    MT_TRY(check_prob(c->p_rot90, "p_rot90"));
    MT_TRY(check_prob(c->p_noise, "p_noise"));
    MT_TRY(check_prob(c->p_blur, "p_blur"));
    MT_TRY(check_prob(c->blur_p_channel, "blur_p_channel"));
    MT_TRY(check_prob(c->p_brightness, "p_brightness"));
    MT_TRY(check_prob(c->p_contrast, "p_contrast"));
    MT_TRY(check_prob(c->p_lowres, "p_lowres"));
    MT_TRY(check_prob(c->lowres_p_channel, "lowres_p_channel"));
    MT_TRY(check_prob(c->p_gamma_inverted, "p_gamma_inverted"));
    MT_TRY(check_prob(c->p_gamma, "p_gamma"));
    for (int a = 0; a < 3; a++)
        if (!(c->rotation_deg[a] >= 0.0 && c->rotation_deg[a] <= 180.0))
            return mt_error_set(MT_ERR_CONFIG, "augment: rotation_deg[%d] = %g must be in [0, 180]", a,
                                c->rotation_deg[a]);
    for (int a = 0; a < 3; a++)
        if (c->rot90_planes[a] != 0 && c->rot90_planes[a] != 1)
            return mt_error_set(MT_ERR_CONFIG, "augment: rot90_planes[%d] = %d must be 0 or 1", a, c->rot90_planes[a]);
    MT_TRY(check_range(c->scale_range, 0.0, 1, 100.0, "scale_range"));
    MT_TRY(check_range(c->elastic_alpha, 0.0, 0, 1e6, "elastic_alpha"));
    MT_TRY(check_range(c->elastic_sigma, 1.0, 0, 1e3, "elastic_sigma"));
    MT_TRY(check_range(c->noise_std, 0.0, 0, 1e6, "noise_std"));
    MT_TRY(check_range(c->blur_sigma, 0.0, 0, 100.0, "blur_sigma"));
    MT_TRY(check_range(c->brightness_range, 0.0, 1, 1e3, "brightness_range"));
    MT_TRY(check_range(c->contrast_range, 0.0, 1, 1e3, "contrast_range"));
    MT_TRY(check_range(c->lowres_zoom, 0.0, 1, 1.0, "lowres_zoom"));
    MT_TRY(check_range(c->gamma_range, 0.0, 1, 100.0, "gamma_range"));
    return MT_OK;
}

/* ------------------------------------------------------------------ draw */

static double unif(mt_rng *r, double lo, double hi) { return lo + (hi - lo) * mt_rng_uniform(r); }

/* batchgenerators' split: with probability 1/2 from [lo, 1], else [1, hi]
 * (plain uniform when the range does not straddle 1). */
static double split_unif(mt_rng *r, const double rg[2]) {
    double u = mt_rng_uniform(r);
    if (rg[1] <= 1.0 || rg[0] >= 1.0) return unif(r, rg[0], rg[1]);
    return u < 0.5 ? unif(r, rg[0], 1.0) : unif(r, 1.0, rg[1]);
}

static uint64_t draw_seed(mt_rng *r) {
    uint64_t hi = mt_rng_u32(r);
    return (hi << 32) | mt_rng_u32(r);
}

static void mat_mul(double out[3][3], const double a[3][3], const double b[3][3]) {
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
    memcpy(out, t, sizeof t);
}

void mt_augment_draw(mt_augment_params *p, const mt_augment_config *c, int channels, const int64_t patch[3],
                     mt_rng *r) {
    MT_CHECK(channels >= 1 && channels <= MT_AUGMENT_MAX_CHANNELS);
    memset(p, 0, sizeof *p);
    p->channels = channels;
    for (int a = 0; a < 3; a++) {
        MT_CHECK(patch[a] >= 1);
        p->patch[a] = patch[a];
    }
    /* spatial */
    if (mt_rng_uniform(r) < c->p_rotation) {
        p->rotated = 1;
        for (int a = 0; a < 3; a++) {
            double m = c->rotation_deg[a] * AUG_PI / 180.0;
            p->angle[a] = unif(r, -m, m);
        }
    }
    p->scale = 1.0;
    if (mt_rng_uniform(r) < c->p_scale) {
        p->scaled = 1;
        p->scale = split_unif(r, c->scale_range);
    }
    if (mt_rng_uniform(r) < c->p_elastic) {
        p->elastic = 1;
        p->elastic_alpha = unif(r, c->elastic_alpha[0], c->elastic_alpha[1]);
        p->elastic_sigma = unif(r, c->elastic_sigma[0], c->elastic_sigma[1]);
        /* batchgenerators: gaussian_filter(U(-1, 1) noise, sigma) * alpha; white
         * noise of variance 1/3 smoothed by a normalised 3D Gaussian has
         * variance (1/3) / (2 sqrt(pi) sigma)^3 away from the borders. */
        p->elastic_std = p->elastic_alpha * sqrt(1.0 / 3.0) / pow(2.0 * sqrt(AUG_PI) * p->elastic_sigma, 1.5);
        p->elastic_seed = draw_seed(r);
    }
    for (int a = 0; a < 3; a++) p->flip[a] = mt_rng_uniform(r) < c->p_flip[a];
    if (mt_rng_uniform(r) < c->p_rot90) {
        int elig[3], ne = 0;
        for (int q = 0; q < 3; q++)
            if (c->rot90_planes[q] && patch[g_planes[q][0]] == patch[g_planes[q][1]]) elig[ne++] = q;
        if (ne > 0) {
            p->rot90_plane = elig[mt_rng_randint(r, 0, ne)];
            p->rot90_k = (int)mt_rng_randint(r, 1, 4);
        }
    }
    /* G = Q^k F */
    double g[3][3] = {{0}}, q[3][3] = {{0}};
    for (int a = 0; a < 3; a++) g[a][a] = p->flip[a] ? -1.0 : 1.0;
    for (int a = 0; a < 3; a++) q[a][a] = 1.0;
    if (p->rot90_k) {
        int a = g_planes[p->rot90_plane][0], b = g_planes[p->rot90_plane][1];
        q[a][a] = q[b][b] = 0.0;
        q[a][b] = -1.0;
        q[b][a] = 1.0;
        for (int k = 0; k < p->rot90_k; k++) mat_mul(g, q, g);
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) p->gather[i][j] = (int)lround(g[i][j]);
    /* M = scale * Rd(a0) Rh(a1) Rw(a2) */
    double cs[3], sn[3];
    for (int a = 0; a < 3; a++) {
        cs[a] = cos(p->angle[a]);
        sn[a] = sin(p->angle[a]);
    }
    double rd[3][3] = {{1, 0, 0}, {0, cs[0], -sn[0]}, {0, sn[0], cs[0]}};
    double rh[3][3] = {{cs[1], 0, sn[1]}, {0, 1, 0}, {-sn[1], 0, cs[1]}};
    double rw[3][3] = {{cs[2], -sn[2], 0}, {sn[2], cs[2], 0}, {0, 0, 1}};
    double m[3][3];
    mat_mul(m, rd, rh);
    mat_mul(m, m, rw);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) p->matrix[i][j] = p->scale * m[i][j];

    /* intensity */
    const int C = channels;
    if (mt_rng_uniform(r) < c->p_noise) {
        p->noise = 1;
        p->noise_std = unif(r, c->noise_std[0], c->noise_std[1]);
        p->noise_seed = draw_seed(r);
    }
    if (mt_rng_uniform(r) < c->p_blur)
        for (int ch = 0; ch < C; ch++)
            if (mt_rng_uniform(r) < c->blur_p_channel) {
                p->blur[ch] = 1;
                for (int a = 0; a < 3; a++) p->blur_sigma[ch][a] = unif(r, c->blur_sigma[0], c->blur_sigma[1]);
            }
    if (mt_rng_uniform(r) < c->p_brightness) {
        p->brightness = 1;
        for (int ch = 0; ch < C; ch++)
            p->brightness_factor[ch] = unif(r, c->brightness_range[0], c->brightness_range[1]);
    }
    if (mt_rng_uniform(r) < c->p_contrast) {
        p->contrast = 1;
        for (int ch = 0; ch < C; ch++) p->contrast_factor[ch] = split_unif(r, c->contrast_range);
    }
    if (mt_rng_uniform(r) < c->p_lowres)
        for (int ch = 0; ch < C; ch++)
            if (mt_rng_uniform(r) < c->lowres_p_channel) {
                p->lowres[ch] = 1;
                p->lowres_zoom[ch] = unif(r, c->lowres_zoom[0], c->lowres_zoom[1]);
            }
    if (mt_rng_uniform(r) < c->p_gamma_inverted) {
        p->gamma_inverted = 1;
        for (int ch = 0; ch < C; ch++) p->gamma_inv[ch] = split_unif(r, c->gamma_range);
    }
    if (mt_rng_uniform(r) < c->p_gamma) {
        p->gamma = 1;
        for (int ch = 0; ch < C; ch++) p->gamma_value[ch] = split_unif(r, c->gamma_range);
    }
}

static int gather_is_identity(const mt_augment_params *p) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (p->gather[i][j] != (i == j)) return 0;
    return 1;
}

int mt_augment_needs_resample(const mt_augment_params *p) {
    return p->rotated || p->scaled || p->elastic || !gather_is_identity(p);
}

/* ------------------------------------------------------------- workspace */

void mt_augment_workspace_init(mt_augment_workspace *ws) { memset(ws, 0, sizeof *ws); }

void mt_augment_workspace_free(mt_augment_workspace *ws) {
    for (int i = 0; i < 4; i++) free(ws->buf[i]);
    memset(ws, 0, sizeof *ws);
}

static void *ws_get(mt_augment_workspace *ws, int slot, size_t nbytes) {
    if (nbytes == 0) nbytes = 1;
    if (ws->cap[slot] < nbytes) {
        free(ws->buf[slot]);
        ws->buf[slot] = malloc(nbytes);
        MT_CHECK_MSG(ws->buf[slot], "augment: out of memory (%zu bytes)", nbytes);
        ws->cap[slot] = nbytes;
    }
    return ws->buf[slot];
}

/* ------------------------------------------------------- Philox normals */

/* n standard normals of stream `seed` (Box-Muller on Philox4x32 blocks:
 * element i comes from block i / 4), added times std onto x. */
static void add_normals(float *x, int64_t n, uint64_t seed, float std) {
    const float inv = 1.0f / 16777216.0f, two_pi = 6.2831853071795864f;
    for (int64_t base = 0; base < n; base += 4) {
        uint32_t o[4];
        mt_philox4x32(o, (uint64_t)(base >> 2), 0, seed);
        float z[4];
        for (int h = 0; h < 2; h++) {
            float u1 = (float)(o[2 * h] >> 8) * inv, u2 = (float)(o[2 * h + 1] >> 8) * inv;
            float rr = sqrtf(-2.0f * logf(1.0f - u1)), th = two_pi * u2;
            z[2 * h] = rr * cosf(th);
            z[2 * h + 1] = rr * sinf(th);
        }
        int64_t m = n - base < 4 ? n - base : 4;
        for (int64_t t = 0; t < m; t++) x[base + t] += std * z[t];
    }
}

/* ----------------------------------------------------- elastic field */

typedef struct {
    double g;     /* node spacing in output voxels */
    int64_t n[3]; /* nodes per axis; node t sits at output index t * g */
    float *field; /* (3, n0, n1, n2) displacement in output voxels */
    float *line;  /* (3, n2) one row interpolated in d and h */
    int64_t *kt0; /* per output w index: its lower node */
    float *kw;    /* per output w index: weight of the upper node */
} elastic_grid;

static int gauss_kernel(double *k, double sigma, int rmax) {
    int r = (int)ceil(4.0 * sigma);
    if (r < 1) r = 1;
    if (r > rmax) r = rmax;
    double s = 0;
    for (int t = -r; t <= r; t++) s += k[t + r] = exp(-0.5 * (t / sigma) * (t / sigma));
    for (int t = -r; t <= r; t++) k[t + r] /= s;
    return r;
}

/* Smooth white noise on a coarse grid (spacing sigma / 2, at least 1 voxel),
 * scaled to the displacement std of the drawn (alpha, sigma) and clipped at
 * 4 std; trilinear interpolation between nodes gives the per-voxel field. */
static void elastic_build(elastic_grid *eg, const mt_augment_params *p, mt_augment_workspace *ws) {
    eg->g = p->elastic_sigma / 2.0 > 1.0 ? p->elastic_sigma / 2.0 : 1.0;
    double sc = p->elastic_sigma / eg->g; /* smoothing sigma in nodes */
    double k[2 * 64 + 1];
    int r = gauss_kernel(k, sc, 64);
    double ksq = 0;
    for (int t = 0; t <= 2 * r; t++) ksq += k[t] * k[t];
    /* the separable 3D kernel's sum of squares is ksq^3: unit variance after dividing */
    float norm = (float)(p->elastic_std / sqrt(ksq * ksq * ksq));
    int64_t n[3], e[3];
    for (int a = 0; a < 3; a++) {
        n[a] = (int64_t)ceil((double)(p->patch[a] - 1) / eg->g) + 2;
        e[a] = n[a] + 2 * r;
        eg->n[a] = n[a];
    }
    size_t raw = (size_t)(e[0] * e[1] * e[2]), s1 = (size_t)(e[0] * e[1] * n[2]), s2 = (size_t)(e[0] * n[1] * n[2]),
           fin = (size_t)(n[0] * n[1] * n[2]);
    float *buf = ws_get(ws, WS_ELASTIC, sizeof(float) * (raw + s1 + s2 + 3 * fin + 3 * (size_t)n[2]));
    float *a0 = buf, *a1 = a0 + raw, *a2 = a1 + s1;
    eg->field = a2 + s2;
    eg->line = eg->field + 3 * fin;
    float lim = 4.0f * (float)p->elastic_std;
    for (int comp = 0; comp < 3; comp++) {
        memset(a0, 0, sizeof(float) * raw);
        /* independent stream per component: seed ^ component tag */
        add_normals(a0, (int64_t)raw, p->elastic_seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(comp + 1)), 1.0f);
        for (int64_t i = 0; i < e[0] * e[1]; i++) /* along w: valid part */
            for (int64_t z = 0; z < n[2]; z++) {
                double s = 0;
                for (int t = 0; t <= 2 * r; t++) s += k[t] * a0[i * e[2] + z + t];
                a1[i * n[2] + z] = (float)s;
            }
        for (int64_t i = 0; i < e[0]; i++) /* along h */
            for (int64_t y = 0; y < n[1]; y++)
                for (int64_t z = 0; z < n[2]; z++) {
                    double s = 0;
                    for (int t = 0; t <= 2 * r; t++) s += k[t] * a1[(i * e[1] + y + t) * n[2] + z];
                    a2[(i * n[1] + y) * n[2] + z] = (float)s;
                }
        float *f = eg->field + (size_t)comp * fin;
        for (int64_t x = 0; x < n[0]; x++) /* along d */
            for (int64_t yz = 0; yz < n[1] * n[2]; yz++) {
                double s = 0;
                for (int t = 0; t <= 2 * r; t++) s += k[t] * a2[(x + t) * n[1] * n[2] + yz];
                float v = (float)s * norm;
                f[x * n[1] * n[2] + yz] = v > lim ? lim : v < -lim ? -lim : v;
            }
    }
}

/* node index and weight of output index o along an axis with n nodes */
static void elastic_pos(int64_t *t0, float *w, const elastic_grid *eg, int64_t o, int64_t n) {
    double t = (double)o / eg->g;
    int64_t i = (int64_t)floor(t);
    if (i > n - 2) i = n - 2;
    if (i < 0) i = 0;
    *t0 = i;
    *w = (float)(t - (double)i);
}

/* eg->line <- field interpolated at output row (i, j), for w nodes ta..tb */
static void elastic_row(elastic_grid *eg, int64_t i, int64_t j, int64_t ta, int64_t tb) {
    int64_t d0, h0;
    float wd, wh;
    elastic_pos(&d0, &wd, eg, i, eg->n[0]);
    elastic_pos(&h0, &wh, eg, j, eg->n[1]);
    const int64_t n1 = eg->n[1], n2 = eg->n[2], fin = eg->n[0] * n1 * n2;
    for (int comp = 0; comp < 3; comp++) {
        const float *f = eg->field + comp * fin;
        const float *r00 = f + (d0 * n1 + h0) * n2, *r01 = r00 + n2, *r10 = r00 + n1 * n2, *r11 = r10 + n2;
        float *l = eg->line + comp * n2;
        for (int64_t z = ta; z <= tb; z++)
            l[z] = (1 - wd) * ((1 - wh) * r00[z] + wh * r01[z]) + wd * ((1 - wh) * r10[z] + wh * r11[z]);
    }
}

/* ------------------------------------------------------------- spatial */

/* Exact integer gather: out voxel o reads volume base + T o (T signed
 * permutation); outside the volume: pad / label 0. */
static void spatial_gather(float *img_out, uint8_t *lab_out, const mt_augment_source *src, const int T[3][3],
                           const int64_t base[3], const int64_t P[3], mt_augment_workspace *ws) {
    const int64_t D = src->shape[0], H = src->shape[1], W = src->shape[2], V = D * H * W;
    const int64_t vol = P[0] * P[1] * P[2];
    int64_t *idx = ws_get(ws, WS_TABLE, sizeof(int64_t) * (size_t)P[2]);
    const int64_t ds = T[0][2] * H * W + T[1][2] * W + T[2][2]; /* source step along an output row */
    for (int64_t i = 0; i < P[0]; i++)
        for (int64_t j = 0; j < P[1]; j++) {
            int64_t v0[3], v1[3];
            int in0 = 1, in1 = 1;
            for (int a = 0; a < 3; a++) {
                v0[a] = base[a] + T[a][0] * i + T[a][1] * j;
                v1[a] = v0[a] + T[a][2] * (P[2] - 1);
                in0 &= v0[a] >= 0 && v0[a] < src->shape[a];
                in1 &= v1[a] >= 0 && v1[a] < src->shape[a];
            }
            const int64_t o = (i * P[1] + j) * P[2];
            if (in0 && in1) { /* the row lies inside the volume (it is a segment) */
                const int64_t s0 = (v0[0] * H + v0[1]) * W + v0[2];
                for (int64_t c = 0; c < src->channels; c++) {
                    const float *s = src->image + c * V + s0;
                    float *d = img_out + c * vol + o;
                    if (ds == 1)
                        memcpy(d, s, sizeof(float) * (size_t)P[2]);
                    else
                        for (int64_t k = 0; k < P[2]; k++) d[k] = s[k * ds];
                }
                if (lab_out) {
                    const uint8_t *s = src->label + s0;
                    uint8_t *d = lab_out + o;
                    if (ds == 1)
                        memcpy(d, s, (size_t)P[2]);
                    else
                        for (int64_t k = 0; k < P[2]; k++) d[k] = s[k * ds];
                }
                continue;
            }
            for (int64_t k = 0; k < P[2]; k++) {
                int64_t z = v0[0] + T[0][2] * k, y = v0[1] + T[1][2] * k, x = v0[2] + T[2][2] * k;
                idx[k] = (z >= 0 && z < D && y >= 0 && y < H && x >= 0 && x < W) ? (z * H + y) * W + x : -1;
            }
            for (int64_t c = 0; c < src->channels; c++) {
                const float *s = src->image + c * V;
                float *d = img_out + c * vol + o;
                for (int64_t k = 0; k < P[2]; k++) d[k] = idx[k] >= 0 ? s[idx[k]] : src->pad_value;
            }
            if (lab_out)
                for (int64_t k = 0; k < P[2]; k++) lab_out[o + k] = idx[k] >= 0 ? src->label[idx[k]] : 0;
        }
}

/* Trilinear (image) / nearest (label) resampling through
 * x = centre + A u + B e(u), u the centred output offset, e the elastic
 * displacement (when eg is not NULL). */
static void spatial_map(float *img_out, uint8_t *lab_out, const mt_augment_source *src, const double A[3][3],
                        const double B[3][3], elastic_grid *eg, const int64_t P[3]) {
    const int64_t D = src->shape[0], H = src->shape[1], W = src->shape[2], V = D * H * W;
    const int64_t HW = H * W, vol = P[0] * P[1] * P[2];
    const int C = src->channels;
    const float pad = src->pad_value;
    const double cu[3] = {(P[0] - 1) / 2.0, (P[1] - 1) / 2.0, (P[2] - 1) / 2.0};
    float a2[3], b[3][3];
    for (int a = 0; a < 3; a++) {
        a2[a] = (float)A[a][2];
        for (int q = 0; q < 3; q++) b[a][q] = (float)B[a][q];
    }
    /* tiles of (h, w) with every d inside: the source footprint of a tile
     * stays in cache and TLB while d advances (rotated rows cross planes) */
    const int64_t TJ = 16, TK = 32;
    for (int64_t j0 = 0; j0 < P[1]; j0 += TJ)
        for (int64_t k0 = 0; k0 < P[2]; k0 += TK) {
            const int64_t j1 = j0 + TJ < P[1] ? j0 + TJ : P[1], k1 = k0 + TK < P[2] ? k0 + TK : P[2];
            int64_t ta = 0, tb = 0;
            if (eg) {
                float w_;
                elastic_pos(&ta, &w_, eg, k0, eg->n[2]);
                elastic_pos(&tb, &w_, eg, k1 - 1, eg->n[2]);
                tb++;
            }
            for (int64_t i = 0; i < P[0]; i++)
                for (int64_t j = j0; j < j1; j++) {
                    float rb[3];
                    for (int a = 0; a < 3; a++)
                        rb[a] =
                            (float)(src->centre[a] + A[a][0] * (i - cu[0]) + A[a][1] * (j - cu[1]) - A[a][2] * cu[2]);
                    if (eg) elastic_row(eg, i, j, ta, tb);
                    const int64_t o0 = (i * P[1] + j) * P[2];
                    for (int64_t k = k0; k < k1; k++) {
                        float x[3];
                        for (int a = 0; a < 3; a++) x[a] = rb[a] + a2[a] * (float)k;
                        if (eg) {
                            const int64_t t0 = eg->kt0[k];
                            const float w = eg->kw[k];
                            float e[3];
                            for (int q = 0; q < 3; q++) {
                                const float *l = eg->line + q * eg->n[2];
                                e[q] = (1 - w) * l[t0] + w * l[t0 + 1];
                            }
                            for (int a = 0; a < 3; a++) x[a] += b[a][0] * e[0] + b[a][1] * e[1] + b[a][2] * e[2];
                        }
                        const int64_t o = o0 + k;
                        float fz = floorf(x[0]), fy = floorf(x[1]), fx = floorf(x[2]);
                        int64_t iz = (int64_t)fz, iy = (int64_t)fy, ix = (int64_t)fx;
                        float wz = x[0] - fz, wy = x[1] - fy, wx = x[2] - fx;
                        if (iz >= 0 && iz + 1 < D && iy >= 0 && iy + 1 < H && ix >= 0 && ix + 1 < W) {
                            const int64_t s0 = (iz * H + iy) * W + ix;
                            const float w00 = (1 - wz) * (1 - wy), w01 = (1 - wz) * wy, w10 = wz * (1 - wy),
                                        w11 = wz * wy;
                            for (int c = 0; c < C; c++) {
                                const float *s = src->image + c * V + s0;
                                float v = w00 * ((1 - wx) * s[0] + wx * s[1]) +
                                          w01 * ((1 - wx) * s[W] + wx * s[W + 1]) +
                                          w10 * ((1 - wx) * s[HW] + wx * s[HW + 1]) +
                                          w11 * ((1 - wx) * s[HW + W] + wx * s[HW + W + 1]);
                                img_out[c * vol + o] = v;
                            }
                        } else if (iz + 1 < 0 || iz >= D || iy + 1 < 0 || iy >= H || ix + 1 < 0 || ix >= W) {
                            for (int c = 0; c < C; c++) img_out[c * vol + o] = pad; /* wholly outside */
                        } else {
                            /* border: corners outside the volume read pad (zero weights skipped) */
                            int64_t off[8];
                            float wt[8];
                            int inside[8], nc = 0;
                            for (int dz = 0; dz < 2; dz++)
                                for (int dy = 0; dy < 2; dy++)
                                    for (int dx = 0; dx < 2; dx++) {
                                        float w = (dz ? wz : 1 - wz) * (dy ? wy : 1 - wy) * (dx ? wx : 1 - wx);
                                        if (w == 0.0f) continue;
                                        int64_t z = iz + dz, y = iy + dy, xx = ix + dx;
                                        inside[nc] = z >= 0 && z < D && y >= 0 && y < H && xx >= 0 && xx < W;
                                        off[nc] = inside[nc] ? (z * H + y) * W + xx : 0;
                                        wt[nc++] = w;
                                    }
                            for (int c = 0; c < C; c++) {
                                const float *s = src->image + c * V;
                                float v = 0;
                                for (int q = 0; q < nc; q++) v += wt[q] * (inside[q] ? s[off[q]] : pad);
                                img_out[c * vol + o] = v;
                            }
                        }
                        if (lab_out) {
                            int64_t z = (int64_t)floorf(x[0] + 0.5f), y = (int64_t)floorf(x[1] + 0.5f),
                                    xx = (int64_t)floorf(x[2] + 0.5f);
                            lab_out[o] = (z >= 0 && z < D && y >= 0 && y < H && xx >= 0 && xx < W)
                                             ? src->label[(z * H + y) * W + xx]
                                             : 0;
                        }
                    }
                }
        }
}

void mt_augment_spatial(float *img_out, uint8_t *lab_out, const mt_augment_source *src, const mt_augment_params *p,
                        mt_augment_workspace *ws) {
    MT_CHECK(src->channels == p->channels);
    MT_CHECK(src->shape[0] >= 1 && src->shape[1] >= 1 && src->shape[2] >= 1);
    if (!src->label) lab_out = NULL;
    const int64_t *P = p->patch;
    double fs[3];
    for (int a = 0; a < 3; a++) fs[a] = src->flipped[a] ? -1.0 : 1.0;
    if (!p->rotated && !p->scaled && !p->elastic) {
        /* integer gather when the patch start is a whole voxel */
        int64_t base[3];
        int T[3][3], exact = 1;
        for (int a = 0; a < 3; a++) {
            double st = src->centre[a] - (P[a] - 1) / 2.0;
            if (fabs(st - llround(st)) > 1e-9) exact = 0;
            for (int b = 0; b < 3; b++) T[a][b] = (int)fs[a] * p->gather[a][b];
        }
        if (exact) {
            for (int a = 0; a < 3; a++) {
                /* 2 base = 2 centre - sum_b T_ab (P_b - 1) */
                int64_t twice = 2 * llround(src->centre[a] - (P[a] - 1) / 2.0) + (P[a] - 1);
                for (int b = 0; b < 3; b++) twice -= T[a][b] * (P[b] - 1);
                MT_CHECK(twice % 2 == 0);
                base[a] = twice / 2;
            }
            spatial_gather(img_out, lab_out, src, T, base, P, ws);
            return;
        }
    }
    double B[3][3], A[3][3], g[3][3];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            B[a][b] = fs[a] * p->matrix[a][b];
            g[a][b] = p->gather[a][b];
        }
    mat_mul(A, B, g);
    elastic_grid eg;
    if (p->elastic) {
        elastic_build(&eg, p, ws);
        eg.kt0 = ws_get(ws, WS_TABLE, (sizeof(int64_t) + sizeof(float)) * (size_t)P[2]);
        eg.kw = (float *)(eg.kt0 + P[2]);
        for (int64_t k = 0; k < P[2]; k++) elastic_pos(&eg.kt0[k], &eg.kw[k], &eg, k, eg.n[2]);
    }
    spatial_map(img_out, lab_out, src, A, B, p->elastic ? &eg : NULL, P);
}

/* ----------------------------------------------------------- intensity */

static void stats(const float *x, int64_t n, double *mean, double *sd, float *mn, float *mx) {
    double s = 0, s2 = 0;
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += ((double)x[i] - m) * ((double)x[i] - m);
    if (mean) *mean = m;
    if (sd) *sd = sqrt(s2 / (double)n);
    if (mn) *mn = lo;
    if (mx) *mx = hi;
}

static int64_t reflect(int64_t i, int64_t n) {
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - 1 - i;
    return i;
}

/* Separable Gaussian blur of one channel volume, sigma per axis,
 * kernel truncated at 4 sigma, half-sample reflected edges. */
static void blur_channel(float *x, const int64_t P[3], const double sigma[3], mt_augment_workspace *ws) {
    const int64_t vol = P[0] * P[1] * P[2], HW = P[1] * P[2];
    for (int a = 0; a < 3; a++) {
        if (!(sigma[a] > 0)) continue;
        double kd[2 * 400 + 1];
        int r = gauss_kernel(kd, sigma[a], 400);
        float k[2 * 400 + 1];
        for (int t = 0; t <= 2 * r; t++) k[t] = (float)kd[t];
        const int64_t n = P[a];
        if (a < 2) {
            float *tmp = ws_get(ws, WS_VOLUME, sizeof(float) * (size_t)vol);
            memcpy(tmp, x, sizeof(float) * (size_t)vol);
            /* a = 0: slabs are planes of HW; a = 1: rows of P2 inside each plane */
            const int64_t outer = a == 0 ? 1 : P[0], len = a == 0 ? HW : P[2];
            const int64_t ostride = a == 0 ? 0 : HW;
            for (int64_t q = 0; q < outer; q++)
                for (int64_t i = 0; i < n; i++) {
                    float *d = x + q * ostride + i * len;
                    for (int64_t e = 0; e < len; e++) d[e] = 0;
                    for (int t = 0; t <= 2 * r; t++) {
                        const float *s = tmp + q * ostride + reflect(i + t - r, n) * len;
                        const float kt = k[t];
                        for (int64_t e = 0; e < len; e++) d[e] += kt * s[e];
                    }
                }
        } else {
            float *line = ws_get(ws, WS_LINE, sizeof(float) * (size_t)(n + 2 * r));
            for (int64_t row = 0; row < P[0] * P[1]; row++) {
                float *d = x + row * n;
                for (int64_t e = -r; e < n + r; e++) line[e + r] = d[reflect(e, n)];
                for (int64_t e = 0; e < n; e++) {
                    float s = 0;
                    for (int t = 0; t <= 2 * r; t++) s += k[t] * line[e + t];
                    d[e] = s;
                }
            }
        }
    }
}

/* nnU-Net v2 low resolution: nearest-exact down to round(P zoom), trilinear
 * (align_corners = False) back up. */
static void lowres_channel(float *x, const int64_t P[3], double zoom, mt_augment_workspace *ws) {
    int64_t dn[3], tot = 0;
    for (int a = 0; a < 3; a++) {
        dn[a] = (int64_t)llround((double)P[a] * zoom);
        if (dn[a] < 1) dn[a] = 1;
        tot += P[a] > dn[a] ? P[a] : dn[a];
    }
    float *low = ws_get(ws, WS_VOLUME, sizeof(float) * (size_t)(dn[0] * dn[1] * dn[2]));
    /* tables: nearest index per low voxel; lower index, upper index, weight per output voxel */
    int64_t *tab = ws_get(ws, WS_TABLE, sizeof(int64_t) * (size_t)(4 * tot));
    int64_t *near[3], *i0[3], *i1[3];
    float *wt[3];
    int64_t *cur = tab;
    for (int a = 0; a < 3; a++) {
        near[a] = cur;
        cur += dn[a];
        i0[a] = cur;
        cur += P[a];
        i1[a] = cur;
        cur += P[a];
        wt[a] = (float *)cur;
        cur += P[a]; /* floats in int64 slots: room to spare */
        double sdown = (double)P[a] / (double)dn[a], sup = (double)dn[a] / (double)P[a];
        for (int64_t i = 0; i < dn[a]; i++) {
            int64_t s = (int64_t)floor(((double)i + 0.5) * sdown);
            near[a][i] = s < P[a] - 1 ? s : P[a] - 1;
        }
        for (int64_t o = 0; o < P[a]; o++) {
            double s = ((double)o + 0.5) * sup - 0.5;
            if (s < 0) s = 0;
            int64_t l = (int64_t)floor(s);
            if (l > dn[a] - 1) l = dn[a] - 1;
            i0[a][o] = l;
            i1[a][o] = l + 1 < dn[a] ? l + 1 : dn[a] - 1;
            wt[a][o] = (float)(s - (double)l);
        }
    }
    for (int64_t i = 0; i < dn[0]; i++)
        for (int64_t j = 0; j < dn[1]; j++)
            for (int64_t k = 0; k < dn[2]; k++)
                low[(i * dn[1] + j) * dn[2] + k] = x[(near[0][i] * P[1] + near[1][j]) * P[2] + near[2][k]];
    const int64_t L1 = dn[1] * dn[2], L2 = dn[2];
    for (int64_t i = 0; i < P[0]; i++)
        for (int64_t j = 0; j < P[1]; j++) {
            const float wz = wt[0][i], wy = wt[1][j];
            const float *r00 = low + i0[0][i] * L1 + i0[1][j] * L2, *r01 = low + i0[0][i] * L1 + i1[1][j] * L2;
            const float *r10 = low + i1[0][i] * L1 + i0[1][j] * L2, *r11 = low + i1[0][i] * L1 + i1[1][j] * L2;
            float *d = x + (i * P[1] + j) * P[2];
            for (int64_t k = 0; k < P[2]; k++) {
                const int64_t a = i0[2][k], b = i1[2][k];
                const float wx = wt[2][k];
                float v00 = (1 - wx) * r00[a] + wx * r00[b], v01 = (1 - wx) * r01[a] + wx * r01[b];
                float v10 = (1 - wx) * r10[a] + wx * r10[b], v11 = (1 - wx) * r11[a] + wx * r11[b];
                d[k] = (1 - wz) * ((1 - wy) * v00 + wy * v01) + wz * ((1 - wy) * v10 + wy * v11);
            }
        }
}

/* batchgenerators augment_gamma with retain_stats (per channel). */
static void gamma_channel(float *x, int64_t n, double gamma, int invert) {
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
    double mean, sd;
    float mn, mx;
    stats(x, n, &mean, &sd, &mn, &mx);
    const float rng = mx - mn, g = (float)gamma;
    const float inv = 1.0f / (rng + 1e-7f);
    for (int64_t i = 0; i < n; i++) x[i] = powf((x[i] - mn) * inv, g) * rng + mn;
    double m2, sd2;
    stats(x, n, &m2, &sd2, NULL, NULL);
    const float f = (float)(sd / (sd2 + 1e-8)), sh = (float)(mean - m2 * sd / (sd2 + 1e-8));
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * f + sh;
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
}

void mt_augment_intensity(float *img, const mt_augment_params *p, mt_augment_workspace *ws) {
    const int64_t *P = p->patch, vol = P[0] * P[1] * P[2];
    const int C = p->channels;
    if (p->noise) add_normals(img, (int64_t)C * vol, p->noise_seed, (float)p->noise_std);
    for (int c = 0; c < C; c++)
        if (p->blur[c]) blur_channel(img + c * vol, P, p->blur_sigma[c], ws);
    if (p->brightness)
        for (int c = 0; c < C; c++) {
            float *x = img + c * vol, f = (float)p->brightness_factor[c];
            for (int64_t i = 0; i < vol; i++) x[i] *= f;
        }
    if (p->contrast)
        for (int c = 0; c < C; c++) {
            float *x = img + c * vol, mn, mx;
            double mean;
            stats(x, vol, &mean, NULL, &mn, &mx);
            const float f = (float)p->contrast_factor[c], m = (float)mean;
            for (int64_t i = 0; i < vol; i++) {
                float v = (x[i] - m) * f + m;
                x[i] = v < mn ? mn : v > mx ? mx : v;
            }
        }
    for (int c = 0; c < C; c++)
        if (p->lowres[c]) lowres_channel(img + c * vol, P, p->lowres_zoom[c], ws);
    if (p->gamma_inverted)
        for (int c = 0; c < C; c++) gamma_channel(img + c * vol, vol, p->gamma_inv[c], 1);
    if (p->gamma)
        for (int c = 0; c < C; c++) gamma_channel(img + c * vol, vol, p->gamma_value[c], 0);
}
