/* LABELS: unit */
/* data/augment: the combined spatial map (against a double-precision
 * reference on coordinate-encoding volumes, image/label alignment after every
 * spatial transform, no padding artefacts inside the volume), intensity
 * transforms (against naive references; labels untouched), probabilities
 * (p = 0: identity, bit for bit; p = 1: changed), parameter ranges,
 * determinism and config errors. */
#include <stdlib.h>
#include <string.h>

#include "data/augment.h"
#include "mt_test.h"

/* ------------------------------------------------------------- helpers */

typedef struct {
    int64_t shape[3];
    int C;
    float *img;   /* (C, D, H, W) */
    uint8_t *lab; /* (1, D, H, W) */
} vol_t;

static float smooth_f(int64_t z, int64_t y, int64_t x, int64_t D) {
    return sinf(0.23f * (float)z + 0.4f) * cosf(0.19f * (float)y - 0.2f) +
           0.6f * sinf(0.15f * (float)x + 0.12f * (float)y + 1.0f) + 0.02f * ((float)z - 0.5f * (float)D);
}

static uint8_t classify(float v) { return v > 0.6f ? 2 : v > 0.15f ? 1 : 0; }

/* Channel 0 smooth, channel 1 = 2 f (linear: pad 0 keeps it so); label = classify(channel 0). */
static void make_smooth(vol_t *v, int64_t D, int64_t H, int64_t W, int C) {
    v->shape[0] = D;
    v->shape[1] = H;
    v->shape[2] = W;
    v->C = C;
    int64_t V = D * H * W;
    v->img = malloc(sizeof(float) * (size_t)(V * C));
    v->lab = malloc((size_t)V);
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                float f = smooth_f(z, y, x, D);
                v->img[i] = f;
                if (C > 1) v->img[V + i] = 2.0f * f;
                v->lab[i] = classify(f);
            }
}

/* Channels = z, y, x coordinates (trilinear interpolation of a linear
 * function is exact); label = a hash of the integer voxel. */
static uint8_t coord_label(int64_t z, int64_t y, int64_t x) { return (uint8_t)((z * 7 + y * 3 + x * 11) % 251); }

static void make_coords(vol_t *v, int64_t D, int64_t H, int64_t W) {
    v->shape[0] = D;
    v->shape[1] = H;
    v->shape[2] = W;
    v->C = 3;
    int64_t V = D * H * W;
    v->img = malloc(sizeof(float) * (size_t)(V * 3));
    v->lab = malloc((size_t)V);
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                v->img[i] = (float)z;
                v->img[V + i] = (float)y;
                v->img[2 * V + i] = (float)x;
                v->lab[i] = coord_label(z, y, x);
            }
}

static void vol_free(vol_t *v) {
    free(v->img);
    free(v->lab);
}

static mt_augment_source source_of(const vol_t *v, const double centre[3], const int flipped[3], float pad) {
    mt_augment_source s;
    memset(&s, 0, sizeof s);
    s.image = v->img;
    s.label = v->lab;
    s.channels = v->C;
    for (int a = 0; a < 3; a++) {
        s.shape[a] = v->shape[a];
        s.centre[a] = centre[a];
        s.flipped[a] = flipped ? flipped[a] : 0;
    }
    s.pad_value = pad;
    return s;
}

/* Plain crop: output o reads volume start + o (pad outside). */
static void plain_crop(float *img, uint8_t *lab, const vol_t *v, const int64_t start[3], const int64_t P[3],
                       float pad) {
    const int64_t D = v->shape[0], H = v->shape[1], W = v->shape[2], V = D * H * W, vol = P[0] * P[1] * P[2];
    for (int64_t i = 0; i < P[0]; i++)
        for (int64_t j = 0; j < P[1]; j++)
            for (int64_t k = 0; k < P[2]; k++) {
                int64_t z = start[0] + i, y = start[1] + j, x = start[2] + k, o = (i * P[1] + j) * P[2] + k;
                int in = z >= 0 && z < D && y >= 0 && y < H && x >= 0 && x < W;
                for (int c = 0; c < v->C; c++) img[c * vol + o] = in ? v->img[c * V + (z * H + y) * W + x] : pad;
                lab[o] = in ? v->lab[(z * H + y) * W + x] : 0;
            }
}

/* Fraction of interior output voxels (not on the patch border, label equal
 * to all 6 neighbours) whose label equals the class derived from image
 * channel 0; *counted gets their number. */
static double agreement(const float *img0, const uint8_t *lab, const int64_t P[3], int64_t *counted) {
    int64_t n = 0, agree = 0;
    const int64_t s1 = P[2], s0 = P[1] * P[2];
    for (int64_t i = 1; i + 1 < P[0]; i++)
        for (int64_t j = 1; j + 1 < P[1]; j++)
            for (int64_t k = 1; k + 1 < P[2]; k++) {
                int64_t o = i * s0 + j * s1 + k;
                uint8_t l = lab[o];
                if (lab[o - 1] != l || lab[o + 1] != l || lab[o - s1] != l || lab[o + s1] != l || lab[o - s0] != l ||
                    lab[o + s0] != l)
                    continue;
                n++;
                agree += classify(img0[o]) == l;
            }
    *counted = n;
    return n ? (double)agree / (double)n : 0.0;
}

static int64_t count_diff(const float *a, const float *b, int64_t n, float tol) {
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) d += fabsf(a[i] - b[i]) > tol;
    return d;
}

/* ------------------------------------------------------ spatial, exact */

/* Coordinate volumes: every output voxel must show exactly the source
 * coordinate centre + Fs M (G u) (double reference), and its label the
 * label of the nearest voxel, for rotation + scale + flips + rot90 + sampler
 * flips together. */
static void test_spatial_reference(void) {
    vol_t v;
    make_coords(&v, 71, 77, 73);
    const int64_t P[3] = {19, 24, 19};
    const int64_t vol = P[0] * P[1] * P[2];
    mt_augment_config cfg;
    mt_augment_config_none(&cfg);
    cfg.p_rotation = cfg.p_scale = cfg.p_rot90 = 1.0;
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    float *img = malloc(sizeof(float) * (size_t)(3 * vol));
    uint8_t *lab = malloc((size_t)vol);
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 11);
    int rot90_seen = 0;
    for (int trial = 0; trial < 12; trial++) {
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 3, P, &r);
        rot90_seen += p.rot90_k > 0;
        CHECK(p.rot90_k == 0 || p.rot90_plane == 1); /* only (d, w) has equal sizes */
        double centre[3] = {35.0 + 0.5 * (trial % 2), 38.25, 36.0 - 0.5 * (trial % 3)};
        int fl[3] = {trial & 1, (trial >> 1) & 1, (trial >> 2) & 1};
        mt_augment_source src = source_of(&v, centre, fl, -1000.0f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        double A[3][3];
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                double s = 0;
                for (int q = 0; q < 3; q++) s += p.matrix[a][q] * p.gather[q][b];
                A[a][b] = (fl[a] ? -1.0 : 1.0) * s;
            }
        double worst = 0;
        int64_t lab_bad = 0, lab_checked = 0;
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++)
                for (int64_t k = 0; k < P[2]; k++) {
                    double u[3] = {i - (P[0] - 1) / 2.0, j - (P[1] - 1) / 2.0, k - (P[2] - 1) / 2.0};
                    int64_t o = (i * P[1] + j) * P[2] + k;
                    double x[3];
                    int ambiguous = 0;
                    for (int a = 0; a < 3; a++) {
                        x[a] = centre[a] + A[a][0] * u[0] + A[a][1] * u[1] + A[a][2] * u[2];
                        double e = fabs(img[a * vol + o] - x[a]);
                        worst = e > worst ? e : worst;
                        double fr = x[a] - floor(x[a]);
                        if (fabs(fr - 0.5) < 1e-3) ambiguous = 1;
                    }
                    if (ambiguous) continue;
                    lab_checked++;
                    lab_bad += lab[o] != coord_label((int64_t)floor(x[0] + 0.5), (int64_t)floor(x[1] + 0.5),
                                                     (int64_t)floor(x[2] + 0.5));
                }
        CHECK_MSG(worst < 2e-3, "trial %d: source coordinate off by %g voxels", trial, worst);
        CHECK_MSG(lab_bad == 0 && lab_checked > vol / 2, "trial %d: %lld of %lld labels not the nearest voxel's", trial,
                  (long long)lab_bad, (long long)lab_checked);
    }
    CHECK(rot90_seen > 0);
    /* scale and rotation really change the coordinates: M is far from I */
    mt_augment_params p;
    mt_augment_draw(&p, &cfg, 3, P, &r);
    double off = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) off += fabs(p.matrix[a][b] - (a == b));
    CHECK(off > 1e-3);
    mt_augment_workspace_free(&ws);
    free(img);
    free(lab);
    vol_free(&v);
}

/* Integer paths (flips, rot90, sampler flips, no resampling) are exact
 * index permutations of the plain crop. */
static void test_gather_exact(void) {
    vol_t v;
    make_smooth(&v, 33, 35, 29, 2);
    const int64_t P[3] = {21, 16, 21}, vol = P[0] * P[1] * P[2];
    const int64_t start[3] = {7, 12, -3}; /* overhangs in w: padding */
    double centre[3];
    for (int a = 0; a < 3; a++) centre[a] = (double)start[a] + (P[a] - 1) / 2.0;
    float *crop = malloc(sizeof(float) * (size_t)(2 * vol)), *img = malloc(sizeof(float) * (size_t)(2 * vol));
    uint8_t *clab = malloc((size_t)vol), *lab = malloc((size_t)vol);
    plain_crop(crop, clab, &v, start, P, 0.25f);
    mt_augment_config cfg;
    mt_augment_config_none(&cfg);
    cfg.p_rot90 = 1.0;
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 5);
    for (int trial = 0; trial < 10; trial++) {
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 2, P, &r);
        CHECK(p.rot90_k >= 1 && p.rot90_k <= 3 && p.rot90_plane == 1);
        CHECK(mt_augment_needs_resample(&p));
        int fl[3] = {trial & 1, 0, (trial >> 1) & 1};
        mt_augment_source src = source_of(&v, centre, fl, 0.25f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        /* reference: output u reads crop-frame offset Fs G u */
        int64_t bad = 0;
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++)
                for (int64_t k = 0; k < P[2]; k++) {
                    double u[3] = {i - (P[0] - 1) / 2.0, j - (P[1] - 1) / 2.0, k - (P[2] - 1) / 2.0};
                    int64_t s[3];
                    for (int a = 0; a < 3; a++) {
                        double g = p.gather[a][0] * u[0] + p.gather[a][1] * u[1] + p.gather[a][2] * u[2];
                        s[a] = llround((P[a] - 1) / 2.0 + (fl[a] ? -g : g));
                    }
                    int64_t o = (i * P[1] + j) * P[2] + k, so = (s[0] * P[1] + s[1]) * P[2] + s[2];
                    bad += img[o] != crop[so] || img[vol + o] != crop[vol + so] || lab[o] != clab[so];
                }
        CHECK_MSG(bad == 0, "trial %d: %lld voxels differ from the permuted crop", trial, (long long)bad);
        /* the rotation is proper: det G * det F = +-1 with G's h axis fixed */
        CHECK(abs(p.gather[1][1]) == 1);
    }
    /* flips only, p = 1 on every axis: out[i, j, k] = crop[P - 1 - i, ...] */
    mt_augment_config_none(&cfg);
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 1.0;
    mt_augment_params p;
    mt_augment_draw(&p, &cfg, 2, P, &r);
    CHECK(p.flip[0] && p.flip[1] && p.flip[2]);
    mt_augment_source src = source_of(&v, centre, NULL, 0.25f);
    mt_augment_spatial(img, lab, &src, &p, &ws);
    int64_t bad = 0;
    for (int64_t i = 0; i < P[0]; i++)
        for (int64_t j = 0; j < P[1]; j++)
            for (int64_t k = 0; k < P[2]; k++) {
                int64_t o = (i * P[1] + j) * P[2] + k;
                int64_t so = ((P[0] - 1 - i) * P[1] + (P[1] - 1 - j)) * P[2] + (P[2] - 1 - k);
                bad += img[o] != crop[so] || lab[o] != clab[so];
            }
    CHECK(bad == 0);
    mt_augment_workspace_free(&ws);
    free(crop);
    free(img);
    free(clab);
    free(lab);
    vol_free(&v);
}

/* ------------------------------------------------------ alignment */

typedef struct {
    const char *name;
    double p_rot, p_scale, p_elastic, p_rot90, p_flip;
} spatial_case;

static void test_alignment(void) {
    vol_t v;
    make_smooth(&v, 61, 67, 59, 2);
    const int64_t P[3] = {27, 34, 27}, vol = P[0] * P[1] * P[2];
    const int64_t start[3] = {17, 16, 16};
    double centre[3];
    for (int a = 0; a < 3; a++) centre[a] = (double)start[a] + (P[a] - 1) / 2.0;
    float *crop = malloc(sizeof(float) * (size_t)(2 * vol)), *img = malloc(sizeof(float) * (size_t)(2 * vol));
    float *img2 = malloc(sizeof(float) * (size_t)(2 * vol));
    uint8_t *clab = malloc((size_t)vol), *lab = malloc((size_t)vol), *lab2 = malloc((size_t)vol);
    plain_crop(crop, clab, &v, start, P, 0.0f);
    int64_t n0;
    CHECK(agreement(crop, clab, P, &n0) == 1.0 && n0 > vol / 3);
    const spatial_case cases[] = {
        {"rotation", 1, 0, 0, 0, 0}, {"scaling", 0, 1, 0, 0, 0}, {"elastic", 0, 0, 1, 0, 0},
        {"rot90", 0, 0, 0, 1, 0},    {"flips", 0, 0, 0, 0, 1},   {"all", 1, 1, 1, 1, 0.5},
    };
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 99);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const spatial_case *sc = &cases[ci];
        mt_augment_config cfg;
        mt_augment_config_none(&cfg);
        cfg.p_rotation = sc->p_rot;
        cfg.p_scale = sc->p_scale;
        cfg.p_elastic = sc->p_elastic;
        cfg.elastic_alpha[0] = 1500.0; /* strong: ~3-5 voxel displacements */
        cfg.elastic_alpha[1] = 2500.0;
        cfg.p_rot90 = sc->p_rot90;
        cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = sc->p_flip;
        for (int trial = 0; trial < 4; trial++) {
            mt_augment_params p;
            mt_augment_draw(&p, &cfg, 2, P, &r);
            int fl[3] = {trial & 1, (trial >> 1) & 1, 0};
            mt_augment_source src = source_of(&v, centre, fl, 0.0f);
            mt_augment_spatial(img, lab, &src, &p, &ws);
            int64_t n;
            double ag = agreement(img, lab, P, &n);
            CHECK_MSG(ag >= 0.99 && n > vol / 4, "%s trial %d: image/label agreement %.4f on %lld voxels", sc->name,
                      trial, ag, (long long)n);
            /* both channels went through the same map: channel 1 = 2 ch0 */
            double worst = 0;
            for (int64_t i = 0; i < vol; i++) {
                double e = fabs(img[vol + i] - 2.0 * img[i]);
                worst = e > worst ? e : worst;
            }
            CHECK_MSG(worst < 1e-4, "%s: channels misaligned by %g", sc->name, worst);
            /* p = 1: the patch really changed (against the crop in the same sampler frame) */
            if (trial == 0) {
                CHECK_MSG(count_diff(img, crop, vol, 1e-3f) > vol / 10, "%s: output equals the plain crop", sc->name);
                if (sc->p_elastic > 0) {
                    /* elastic alone: displacement std as drawn, and not an affine map */
                    CHECK(p.elastic && p.elastic_std > 2.5 && p.elastic_std < 8.5);
                }
            }
        }
    }
    /* the check has power: a label produced by a different rotation disagrees */
    {
        mt_augment_config cfg;
        mt_augment_config_none(&cfg);
        cfg.p_rotation = 1.0;
        mt_augment_params p1, p2;
        mt_augment_draw(&p1, &cfg, 2, P, &r);
        do mt_augment_draw(&p2, &cfg, 2, P, &r);
        while (fabs(p2.angle[0] - p1.angle[0]) + fabs(p2.angle[1] - p1.angle[1]) + fabs(p2.angle[2] - p1.angle[2]) <
               0.5);
        mt_augment_source src = source_of(&v, centre, NULL, 0.0f);
        mt_augment_spatial(img, lab, &src, &p1, &ws);
        mt_augment_spatial(img2, lab2, &src, &p2, &ws);
        int64_t n;
        double ag = agreement(img, lab2, P, &n);
        CHECK_MSG(ag < 0.95, "mismatched maps still agree at %.4f", ag);
    }
    mt_augment_workspace_free(&ws);
    free(crop);
    free(img);
    free(img2);
    free(clab);
    free(lab);
    free(lab2);
    vol_free(&v);
}

/* Elastic displacement statistics on a coordinate volume: output minus the
 * affine position is the displacement; its std is near the drawn one and it
 * is smooth (neighbouring voxels move together). */
static void test_elastic_field(void) {
    vol_t v;
    make_coords(&v, 90, 90, 90);
    const int64_t P[3] = {41, 41, 41}, vol = P[0] * P[1] * P[2];
    mt_augment_config cfg;
    mt_augment_config_none(&cfg);
    cfg.p_elastic = 1.0;
    cfg.elastic_alpha[0] = cfg.elastic_alpha[1] = 900.0;
    cfg.elastic_sigma[0] = cfg.elastic_sigma[1] = 9.0;
    float *img = malloc(sizeof(float) * (size_t)(3 * vol));
    uint8_t *lab = malloc((size_t)vol);
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 3);
    double ss = 0, sd2 = 0, expect = 0;
    int64_t n = 0, nd = 0;
    for (int trial = 0; trial < 3; trial++) {
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 3, P, &r);
        expect = p.elastic_std;
        double centre[3] = {44.5, 45.0, 44.0};
        mt_augment_source src = source_of(&v, centre, NULL, -1000.0f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++)
                for (int64_t k = 0; k < P[2]; k++) {
                    int64_t o = (i * P[1] + j) * P[2] + k;
                    double u[3] = {i - 20.0, j - 20.0, k - 20.0};
                    for (int a = 0; a < 3; a++) {
                        double d = img[a * vol + o] - (centre[a] + u[a]);
                        ss += d * d;
                        n++;
                        if (k > 0) {
                            double dp = img[a * vol + o - 1] - (centre[a] + u[a] - (a == 2));
                            sd2 += (d - dp) * (d - dp);
                            nd++;
                        }
                    }
                }
    }
    double std = sqrt(ss / (double)n), step = sqrt(sd2 / (double)nd);
    CHECK_MSG(std > 0.5 * expect && std < 1.6 * expect, "elastic displacement std %.3f, expected about %.3f", std,
              expect);
    CHECK_MSG(step < 0.25 * std, "elastic field not smooth: neighbour difference %.3f vs std %.3f", step, std);
    mt_augment_workspace_free(&ws);
    free(img);
    free(lab);
    vol_free(&v);
}

/* Extreme rotation + zoom-out + elastic well inside a volume: no output
 * voxel is influenced by the pad value (the map reads real tissue); near the
 * volume's edge, pad appears with label 0, as the sampler pads. */
static void test_no_padding_artefacts(void) {
    vol_t v;
    make_smooth(&v, 71, 71, 71, 1);
    for (int64_t i = 0; i < 71 * 71 * 71; i++) v.img[i] += 3.0f; /* values in [1, 6] */
    const int64_t P[3] = {21, 21, 21}, vol = P[0] * P[1] * P[2];
    mt_augment_config cfg;
    mt_augment_config_none(&cfg);
    cfg.p_rotation = cfg.p_scale = cfg.p_elastic = 1.0;
    cfg.scale_range[0] = cfg.scale_range[1] = 1.4;
    cfg.elastic_alpha[1] = 300.0;
    float *img = malloc(sizeof(float) * (size_t)vol);
    uint8_t *lab = malloc((size_t)vol);
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 8);
    float lo = 1e30f;
    for (int trial = 0; trial < 5; trial++) {
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 1, P, &r);
        mt_augment_source src = source_of(&v, (double[]){35, 35, 35}, NULL, -100.0f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        for (int64_t i = 0; i < vol; i++) lo = img[i] < lo ? img[i] : lo;
    }
    CHECK_MSG(lo > 0.5f, "pad value leaked into a patch inside the volume: min %g", lo);
    /* at the corner: pad appears, label 0 there */
    mt_augment_params p;
    mt_augment_draw(&p, &cfg, 1, P, &r);
    mt_augment_source src = source_of(&v, (double[]){2, 3, 1}, NULL, -100.0f);
    mt_augment_spatial(img, lab, &src, &p, &ws);
    int64_t npad = 0, bad = 0;
    for (int64_t i = 0; i < vol; i++)
        if (img[i] == -100.0f) {
            npad++;
            bad += lab[i] != 0;
        }
    CHECK(npad > vol / 10 && bad == 0);
    mt_augment_workspace_free(&ws);
    free(img);
    free(lab);
    vol_free(&v);
}

/* ------------------------------------------------------ probabilities */

static void test_identity_p0(void) {
    vol_t v;
    make_smooth(&v, 30, 37, 26, 2);
    const int64_t P[3] = {17, 22, 13}, vol = P[0] * P[1] * P[2];
    const int64_t start[3] = {5, -2, 9};
    double centre[3];
    for (int a = 0; a < 3; a++) centre[a] = (double)start[a] + (P[a] - 1) / 2.0;
    float *crop = malloc(sizeof(float) * (size_t)(2 * vol)), *img = malloc(sizeof(float) * (size_t)(2 * vol));
    uint8_t *clab = malloc((size_t)vol), *lab = malloc((size_t)vol);
    plain_crop(crop, clab, &v, start, P, -1.5f);
    mt_augment_config cfg;
    mt_augment_config_none(&cfg);
    CHECK(mt_augment_config_check(&cfg) == MT_OK);
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 1);
    for (int trial = 0; trial < 20; trial++) {
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 2, P, &r);
        CHECK(!mt_augment_needs_resample(&p));
        mt_augment_source src = source_of(&v, centre, NULL, -1.5f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        mt_augment_intensity(img, &p, &ws);
        CHECK(memcmp(img, crop, sizeof(float) * (size_t)(2 * vol)) == 0);
        CHECK(memcmp(lab, clab, (size_t)vol) == 0);
    }
    mt_augment_workspace_free(&ws);
    free(crop);
    free(img);
    free(clab);
    free(lab);
    vol_free(&v);
}

typedef enum { T_NOISE, T_BLUR, T_BRIGHT, T_CONTRAST, T_LOWRES, T_GAMMA_INV, T_GAMMA, T_COUNT } itrans;
static const char *const g_iname[T_COUNT] = {"noise", "blur", "brightness", "contrast", "lowres", "gamma_inv", "gamma"};

static void config_only(mt_augment_config *c, itrans t) {
    mt_augment_config_none(c);
    c->blur_p_channel = c->lowres_p_channel = 1.0;
    switch (t) {
    case T_NOISE:
        c->p_noise = 1;
        c->noise_std[0] = 0.05;
        break;
    case T_BLUR:
        c->p_blur = 1;
        break;
    case T_BRIGHT:
        c->p_brightness = 1;
        break;
    case T_CONTRAST:
        c->p_contrast = 1;
        break;
    case T_LOWRES:
        c->p_lowres = 1;
        c->lowres_zoom[1] = 0.8;
        break;
    case T_GAMMA_INV:
        c->p_gamma_inverted = 1;
        break;
    case T_GAMMA:
        c->p_gamma = 1;
        break;
    default:
        break;
    }
}

static int64_t refl(int64_t i, int64_t n) {
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - 1 - i;
    return i;
}

/* naive double references of one channel */
static void ref_blur(double *x, const int64_t P[3], const double sig[3]) {
    const int64_t vol = P[0] * P[1] * P[2];
    double *t = malloc(sizeof(double) * (size_t)vol);
    for (int a = 0; a < 3; a++) {
        int r = (int)ceil(4.0 * sig[a]);
        if (r < 1) r = 1;
        double k[64], s = 0;
        for (int q = -r; q <= r; q++) s += k[q + r] = exp(-0.5 * q * q / (sig[a] * sig[a]));
        memcpy(t, x, sizeof(double) * (size_t)vol);
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++)
                for (int64_t l = 0; l < P[2]; l++) {
                    double acc = 0;
                    for (int q = -r; q <= r; q++) {
                        int64_t c[3] = {i, j, l};
                        c[a] = refl(c[a] + q, P[a]);
                        acc += k[q + r] / s * t[(c[0] * P[1] + c[1]) * P[2] + c[2]];
                    }
                    x[(i * P[1] + j) * P[2] + l] = acc;
                }
    }
    free(t);
}

static void ref_lowres(double *x, const int64_t P[3], double zoom) {
    int64_t dn[3];
    for (int a = 0; a < 3; a++) {
        dn[a] = llround(P[a] * zoom);
        if (dn[a] < 1) dn[a] = 1;
    }
    double *low = malloc(sizeof(double) * (size_t)(dn[0] * dn[1] * dn[2]));
    for (int64_t i = 0; i < dn[0]; i++)
        for (int64_t j = 0; j < dn[1]; j++)
            for (int64_t l = 0; l < dn[2]; l++) {
                int64_t c[3] = {i, j, l};
                for (int a = 0; a < 3; a++) {
                    int64_t s = (int64_t)floor((c[a] + 0.5) * (double)P[a] / (double)dn[a]);
                    c[a] = s < P[a] - 1 ? s : P[a] - 1;
                }
                low[(i * dn[1] + j) * dn[2] + l] = x[(c[0] * P[1] + c[1]) * P[2] + c[2]];
            }
    for (int64_t i = 0; i < P[0]; i++)
        for (int64_t j = 0; j < P[1]; j++)
            for (int64_t l = 0; l < P[2]; l++) {
                int64_t o[3] = {i, j, l}, i0[3], i1[3];
                double w[3];
                for (int a = 0; a < 3; a++) {
                    double s = (o[a] + 0.5) * (double)dn[a] / (double)P[a] - 0.5;
                    if (s < 0) s = 0;
                    i0[a] = (int64_t)floor(s);
                    if (i0[a] > dn[a] - 1) i0[a] = dn[a] - 1;
                    i1[a] = i0[a] + 1 < dn[a] ? i0[a] + 1 : dn[a] - 1;
                    w[a] = s - (double)i0[a];
                }
                double acc = 0;
                for (int c = 0; c < 8; c++) {
                    int64_t z = (c & 4) ? i1[0] : i0[0], y = (c & 2) ? i1[1] : i0[1], xx = (c & 1) ? i1[2] : i0[2];
                    double wt = ((c & 4) ? w[0] : 1 - w[0]) * ((c & 2) ? w[1] : 1 - w[1]) * ((c & 1) ? w[2] : 1 - w[2]);
                    acc += wt * low[(z * dn[1] + y) * dn[2] + xx];
                }
                x[(i * P[1] + j) * P[2] + l] = acc;
            }
    free(low);
}

static void ref_gamma(double *x, int64_t n, double g, int inv) {
    if (inv)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
    double m = 0, mn = x[0], mx = x[0];
    for (int64_t i = 0; i < n; i++) {
        m += x[i];
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    m /= n;
    double sd = 0;
    for (int64_t i = 0; i < n; i++) sd += (x[i] - m) * (x[i] - m);
    sd = sqrt(sd / n);
    for (int64_t i = 0; i < n; i++) x[i] = pow((x[i] - mn) / (mx - mn + 1e-7), g) * (mx - mn) + mn;
    double m2 = 0, sd2 = 0;
    for (int64_t i = 0; i < n; i++) m2 += x[i];
    m2 /= n;
    for (int64_t i = 0; i < n; i++) sd2 += (x[i] - m2) * (x[i] - m2);
    sd2 = sqrt(sd2 / n);
    for (int64_t i = 0; i < n; i++) x[i] = (x[i] - m2) / (sd2 + 1e-8) * sd + m;
    if (inv)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
}

/* Each intensity transform alone with p = 1: the image changes as the naive
 * reference says, the label (through the whole pipeline) does not. */
static void test_intensity(void) {
    vol_t v;
    make_smooth(&v, 25, 28, 23, 2);
    const int64_t P[3] = {19, 22, 17}, vol = P[0] * P[1] * P[2];
    const int64_t start[3] = {3, 2, 4};
    double centre[3];
    for (int a = 0; a < 3; a++) centre[a] = (double)start[a] + (P[a] - 1) / 2.0;
    float *crop = malloc(sizeof(float) * (size_t)(2 * vol)), *img = malloc(sizeof(float) * (size_t)(2 * vol));
    uint8_t *clab = malloc((size_t)vol), *lab = malloc((size_t)vol);
    double *ref = malloc(sizeof(double) * (size_t)vol);
    plain_crop(crop, clab, &v, start, P, 0.0f);
    mt_augment_workspace ws;
    mt_augment_workspace_init(&ws);
    mt_rng r;
    mt_rng_init(&r, 21);
    for (int t = 0; t < T_COUNT; t++) {
        mt_augment_config cfg;
        config_only(&cfg, (itrans)t);
        CHECK(mt_augment_config_check(&cfg) == MT_OK);
        mt_augment_params p;
        mt_augment_draw(&p, &cfg, 2, P, &r);
        CHECK(!mt_augment_needs_resample(&p));
        mt_augment_source src = source_of(&v, centre, NULL, 0.0f);
        mt_augment_spatial(img, lab, &src, &p, &ws);
        mt_augment_intensity(img, &p, &ws);
        CHECK_MSG(memcmp(lab, clab, (size_t)vol) == 0, "%s touched the label", g_iname[t]);
        CHECK_MSG(count_diff(img, crop, 2 * vol, 1e-4f) > vol / 2, "%s: p = 1 left the image unchanged", g_iname[t]);
        for (int c = 0; c < 2; c++) {
            const float *in = crop + c * vol;
            for (int64_t i = 0; i < vol; i++) ref[i] = in[i];
            double atol = 1e-4;
            switch ((itrans)t) {
            case T_NOISE: { /* statistics only: mean ~ 0, std ~ drawn */
                double s = 0, s2 = 0;
                for (int64_t i = 0; i < vol; i++) {
                    double d = img[c * vol + i] - in[i];
                    s += d;
                    s2 += d * d;
                }
                double m = s / vol, sd = sqrt(s2 / vol - m * m);
                CHECK_MSG(fabs(m) < 0.05 * p.noise_std && fabs(sd / p.noise_std - 1) < 0.05,
                          "noise mean %g std %g, drawn std %g", m, sd, p.noise_std);
                continue;
            }
            case T_BLUR:
                ref_blur(ref, P, p.blur_sigma[c]);
                break;
            case T_BRIGHT:
                for (int64_t i = 0; i < vol; i++) ref[i] *= p.brightness_factor[c];
                break;
            case T_CONTRAST: {
                double m = 0, mn = ref[0], mx = ref[0];
                for (int64_t i = 0; i < vol; i++) {
                    m += ref[i];
                    mn = ref[i] < mn ? ref[i] : mn;
                    mx = ref[i] > mx ? ref[i] : mx;
                }
                m /= vol;
                for (int64_t i = 0; i < vol; i++) {
                    double y = (ref[i] - m) * p.contrast_factor[c] + m;
                    ref[i] = y < mn ? mn : y > mx ? mx : y;
                }
                break;
            }
            case T_LOWRES:
                ref_lowres(ref, P, p.lowres_zoom[c]);
                break;
            case T_GAMMA_INV:
                ref_gamma(ref, vol, p.gamma_inv[c], 1);
                atol = 1e-3;
                break;
            case T_GAMMA:
                ref_gamma(ref, vol, p.gamma_value[c], 0);
                atol = 1e-3;
                break;
            default:
                break;
            }
            double worst = 0;
            for (int64_t i = 0; i < vol; i++) {
                double e = fabs(img[c * vol + i] - ref[i]) / (atol + 1e-4 * fabs(ref[i]));
                worst = e > worst ? e : worst;
            }
            CHECK_MSG(worst <= 1.0, "%s channel %d: error %g x tolerance against the reference", g_iname[t], c, worst);
        }
    }
    mt_augment_workspace_free(&ws);
    free(crop);
    free(img);
    free(clab);
    free(lab);
    free(ref);
    vol_free(&v);
}

/* ------------------------------------------------- ranges and rates */

static void test_ranges(void) {
    mt_augment_config c;
    mt_augment_config_default(&c);
    CHECK(mt_augment_config_check(&c) == MT_OK);
    c.p_rotation = c.p_scale = c.p_elastic = c.p_rot90 = c.p_noise = c.p_blur = 1.0;
    c.p_brightness = c.p_contrast = c.p_lowres = c.p_gamma_inverted = c.p_gamma = 1.0;
    c.blur_p_channel = c.lowres_p_channel = 1.0;
    c.rotation_deg[0] = 10;
    c.rotation_deg[1] = 20;
    c.rotation_deg[2] = 45;
    const int64_t P[3] = {16, 16, 12};
    mt_rng r;
    mt_rng_init(&r, 77);
    int scale_lo = 0, scale_hi = 0, ok = 1, planes[3] = {0, 0, 0};
    double amax[3] = {0, 0, 0};
    for (int t = 0; t < 3000; t++) {
        mt_augment_params p;
        mt_augment_draw(&p, &c, 3, P, &r);
        ok &= p.rotated && p.scaled && p.elastic && p.noise && p.brightness && p.contrast && p.gamma &&
              p.gamma_inverted && p.rot90_k >= 1 && p.rot90_k <= 3;
        for (int a = 0; a < 3; a++) {
            ok &= fabs(p.angle[a]) <= c.rotation_deg[a] * M_PI / 180.0 + 1e-12;
            amax[a] = fabs(p.angle[a]) > amax[a] ? fabs(p.angle[a]) : amax[a];
        }
        ok &= p.scale >= 0.7 && p.scale <= 1.4;
        scale_lo += p.scale < 1;
        scale_hi += p.scale > 1;
        ok &= p.elastic_alpha >= 0 && p.elastic_alpha <= 900 && p.elastic_sigma >= 9 && p.elastic_sigma <= 13;
        ok &= p.noise_std >= 0 && p.noise_std <= 0.1;
        planes[p.rot90_plane]++;
        for (int ch = 0; ch < 3; ch++) {
            ok &= p.blur[ch] && p.lowres[ch];
            for (int a = 0; a < 3; a++) ok &= p.blur_sigma[ch][a] >= 0.5 && p.blur_sigma[ch][a] <= 1.0;
            ok &= p.brightness_factor[ch] >= 0.75 && p.brightness_factor[ch] <= 1.25;
            ok &= p.contrast_factor[ch] >= 0.75 && p.contrast_factor[ch] <= 1.25;
            ok &= p.lowres_zoom[ch] >= 0.5 && p.lowres_zoom[ch] <= 1.0;
            ok &= p.gamma_value[ch] >= 0.7 && p.gamma_value[ch] <= 1.5;
            ok &= p.gamma_inv[ch] >= 0.7 && p.gamma_inv[ch] <= 1.5;
        }
        /* G is a signed permutation, det +-1 */
        for (int a = 0; a < 3; a++) {
            int nz = 0;
            for (int b = 0; b < 3; b++) nz += p.gather[a][b] != 0;
            ok &= nz == 1;
        }
    }
    CHECK_MSG(ok, "a drawn parameter left its configured range");
    /* the [lo, 1] / [1, hi] split: about half each */
    CHECK(scale_lo > 1300 && scale_hi > 1300);
    /* the ranges are used up to their ends */
    for (int a = 0; a < 3; a++) CHECK(amax[a] > 0.95 * c.rotation_deg[a] * M_PI / 180.0);
    /* only the (d, h) plane has equal sizes */
    CHECK(planes[0] == 3000 && planes[1] == 0 && planes[2] == 0);

    /* rates follow the probabilities */
    mt_augment_config_default(&c);
    c.p_rotation = 0.3;
    int nrot = 0, nflip = 0, nnoise = 0, ngamma = 0;
    const int T = 4000;
    for (int t = 0; t < T; t++) {
        mt_augment_params p;
        mt_augment_draw(&p, &c, 1, P, &r);
        nrot += p.rotated;
        nflip += p.flip[2];
        nnoise += p.noise;
        ngamma += p.gamma;
    }
    CHECK_NEAR((double)nrot / T, 0.3, 0.03);
    CHECK_NEAR((double)nflip / T, 0.5, 0.03);
    CHECK_NEAR((double)nnoise / T, 0.1, 0.02);
    CHECK_NEAR((double)ngamma / T, 0.3, 0.03);
}

/* Same rng state -> same bits; different state -> different output. */
static void test_determinism(void) {
    vol_t v;
    make_smooth(&v, 40, 44, 38, 2);
    const int64_t P[3] = {24, 24, 24}, vol = P[0] * P[1] * P[2];
    mt_augment_config cfg;
    mt_augment_config_default(&cfg);
    cfg.p_rotation = cfg.p_scale = cfg.p_elastic = cfg.p_noise = cfg.p_blur = cfg.p_lowres = cfg.p_gamma = 1.0;
    float *a = malloc(sizeof(float) * (size_t)(2 * vol)), *b = malloc(sizeof(float) * (size_t)(2 * vol));
    uint8_t *la = malloc((size_t)vol), *lb = malloc((size_t)vol);
    mt_augment_workspace w1, w2;
    mt_augment_workspace_init(&w1);
    mt_augment_workspace_init(&w2);
    mt_augment_source src = source_of(&v, (double[]){19.5, 21.5, 18.5}, NULL, 0.0f);
    mt_rng r1, r2;
    mt_rng_init_stream(&r1, 42, 0, 7, 0);
    r2 = r1;
    mt_augment_params p1, p2;
    mt_augment_draw(&p1, &cfg, 2, P, &r1);
    mt_augment_draw(&p2, &cfg, 2, P, &r2);
    CHECK(memcmp(&p1, &p2, sizeof p1) == 0 && r1.offset == r2.offset);
    mt_augment_spatial(a, la, &src, &p1, &w1);
    mt_augment_intensity(a, &p1, &w1);
    mt_augment_spatial(b, lb, &src, &p2, &w2);
    mt_augment_intensity(b, &p2, &w2);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(2 * vol)) == 0 && memcmp(la, lb, (size_t)vol) == 0);
    mt_augment_draw(&p2, &cfg, 2, P, &r2); /* the next draw differs */
    mt_augment_spatial(b, lb, &src, &p2, &w2);
    mt_augment_intensity(b, &p2, &w2);
    CHECK(count_diff(a, b, 2 * vol, 1e-3f) > vol / 2);
    mt_augment_workspace_free(&w1);
    mt_augment_workspace_free(&w2);
    free(a);
    free(b);
    free(la);
    free(lb);
    vol_free(&v);
}

static void test_config_errors(void) {
    mt_augment_config c;
    mt_augment_config_default(&c);
    c.p_gamma = 1.5;
    CHECK(mt_augment_config_check(&c) == MT_ERR_CONFIG && strstr(mt_error_msg(), "p_gamma"));
    mt_augment_config_default(&c);
    c.scale_range[0] = 1.5;
    CHECK(mt_augment_config_check(&c) == MT_ERR_CONFIG && strstr(mt_error_msg(), "scale_range"));
    mt_augment_config_default(&c);
    c.lowres_zoom[1] = 1.2;
    CHECK(mt_augment_config_check(&c) == MT_ERR_CONFIG && strstr(mt_error_msg(), "lowres_zoom"));
    mt_augment_config_default(&c);
    c.p_flip[1] = -0.1;
    CHECK(mt_augment_config_check(&c) == MT_ERR_CONFIG && strstr(mt_error_msg(), "p_flip[1]"));
    mt_augment_config_default(&c);
    c.elastic_sigma[0] = 0.5;
    CHECK(mt_augment_config_check(&c) == MT_ERR_CONFIG && strstr(mt_error_msg(), "elastic_sigma"));
}

int main(void) {
    test_spatial_reference();
    test_gather_exact();
    test_alignment();
    test_elastic_field();
    test_no_padding_artefacts();
    test_identity_p0();
    test_intensity();
    test_ranges();
    test_determinism();
    test_config_errors();
    return mt_test_finish();
}
