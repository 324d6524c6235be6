/* Synthetic phantom generator (see data/phantom.h for the model).
 *
 * Randomness comes from four Philox streams per case, derived from
 * (seed, case index, purpose): geometry, intensities, textures, noise. The
 * streams are independent, so e.g. changing the noise level leaves the
 * geometry and textures of a case unchanged. Geometry draws are retried (on
 * the same stream) until every class has at least a minimum volume.
 */
#include "data/phantom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define PH_TAG 0x5048414e544f4dull /* "PHANTOM" */
#define PH_GEOMETRY 0
#define PH_INTENSITY 1
#define PH_TEXTURE 2
#define PH_NOISE 3

#define MAX_GROUPS ((MT_PHANTOM_MAX_CLASSES - 1 + 2) / 3)
#define TUBE_SEG 24
#define NUM_LOBES 2
#define NUM_WAVES 2
#define MAX_ATTEMPTS 64

enum { KIND_ORGAN = 0, KIND_TAIL = 1, KIND_LESION = 2 };

static const char *const g_class_names[MT_PHANTOM_MAX_CLASSES] = {
    "background", "organ",  "tail",  "lesion",  "organ2", "tail2",  "lesion2", "organ3",
    "tail3",      "lesion3", "organ4", "tail4", "lesion4", "organ5", "tail5",   "lesion5"};

typedef struct {
    double c[3];        /* centre */
    double rot[3][3];   /* world -> local: q = rot (p - c) */
    double inv_r[3];    /* 1 / radii along the local axes */
    double lob_k[NUM_LOBES][3];
    double lob_a[NUM_LOBES];
    double lob_ph[NUM_LOBES];
    double reach;       /* 1 + sum |lob_a|: no point with |q / r| beyond it is inside */
} ellipsoid;

typedef struct {
    double pts[TUBE_SEG + 1][3];
    double rad[TUBE_SEG + 1];
    double lo[3], hi[3]; /* bounding box of the tube */
} tube;

typedef struct {
    int num_groups;
    int has_tail[MAX_GROUPS], has_lesion[MAX_GROUPS];
    ellipsoid organ[MAX_GROUPS], lesion[MAX_GROUPS], body;
    tube tail[MAX_GROUPS];
    double warp_k[3][NUM_WAVES][3], warp_a[3][NUM_WAVES], warp_ph[3][NUM_WAVES];
} geometry;

void mt_phantom_config_default(mt_phantom_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->shape[0] = 40;
    cfg->shape[1] = 48;
    cfg->shape[2] = 40;
    cfg->num_classes = 3;
    cfg->seed = 0;
    cfg->noise = 0.1f;
    cfg->contrast = 1.0f;
    cfg->texture = 0.08f;
    cfg->bias = 0.2f;
    cfg->blur_sigma = 0.7f;
    cfg->normalize = 1;
}

mt_status mt_phantom_config_check(const mt_phantom_config *cfg) {
    for (int a = 0; a < 3; a++)
        if (cfg->shape[a] < 8 || cfg->shape[a] > 1024)
            return mt_error_set(MT_ERR_INVALID, "phantom: shape[%d] = %lld must be in [8, 1024]", a,
                                (long long)cfg->shape[a]);
    if (cfg->num_classes < 2 || cfg->num_classes > MT_PHANTOM_MAX_CLASSES)
        return mt_error_set(MT_ERR_INVALID, "phantom: num_classes = %d must be in [2, %d]",
                            cfg->num_classes, MT_PHANTOM_MAX_CLASSES);
    if (!(cfg->noise >= 0 && cfg->noise <= 10))
        return mt_error_set(MT_ERR_INVALID, "phantom: noise = %g must be in [0, 10]", cfg->noise);
    if (!(cfg->contrast > 0 && cfg->contrast <= 10))
        return mt_error_set(MT_ERR_INVALID, "phantom: contrast = %g must be in (0, 10]",
                            cfg->contrast);
    if (!(cfg->texture >= 0 && cfg->texture <= 10))
        return mt_error_set(MT_ERR_INVALID, "phantom: texture = %g must be in [0, 10]",
                            cfg->texture);
    if (!(cfg->bias >= 0 && cfg->bias <= 3))
        return mt_error_set(MT_ERR_INVALID, "phantom: bias = %g must be in [0, 3]", cfg->bias);
    if (!(cfg->blur_sigma >= 0 && cfg->blur_sigma <= 10))
        return mt_error_set(MT_ERR_INVALID, "phantom: blur_sigma = %g must be in [0, 10]",
                            cfg->blur_sigma);
    if (cfg->normalize != 0 && cfg->normalize != 1)
        return mt_error_set(MT_ERR_INVALID, "phantom: normalize = %d must be 0 or 1",
                            cfg->normalize);
    return MT_OK;
}

const char *mt_phantom_class_name(int cls) {
    if (cls < 0 || cls >= MT_PHANTOM_MAX_CLASSES) return NULL;
    return g_class_names[cls];
}

/* ---------------------------------------------------------------- blur --- */

static void blur_axis(float *vol, const int64_t shape[3], int axis, const float *kern, int rad) {
    int64_t n = shape[axis];
    int64_t stride = axis == 2 ? 1 : axis == 1 ? shape[2] : shape[1] * shape[2];
    int64_t lines = shape[0] * shape[1] * shape[2] / n;
#pragma omp parallel if (lines * n > 32768)
    {
        float *buf = malloc(sizeof(float) * (size_t)(n + 2 * rad));
        MT_CHECK(buf);
#pragma omp for schedule(static)
        for (int64_t l = 0; l < lines; l++) {
            /* line l: the other two coordinates, in row-major order */
            int64_t base;
            if (axis == 2) base = l * n;
            else if (axis == 1) base = (l / shape[2]) * shape[1] * shape[2] + l % shape[2];
            else base = l;
            for (int64_t i = -rad; i < n + rad; i++) {
                int64_t s = i < 0 ? 0 : i >= n ? n - 1 : i;
                buf[i + rad] = vol[base + s * stride];
            }
            for (int64_t i = 0; i < n; i++) {
                float acc = 0;
                for (int k = -rad; k <= rad; k++) acc += kern[k + rad] * buf[i + rad + k];
                vol[base + i * stride] = acc;
            }
        }
        free(buf);
    }
}

void mt_phantom_blur(float *vol, const int64_t shape[3], double sigma) {
    if (!(sigma > 0)) return;
    int rad = (int)ceil(3.0 * sigma);
    float *kern = malloc(sizeof(float) * (size_t)(2 * rad + 1));
    MT_CHECK(kern);
    double sum = 0;
    for (int k = -rad; k <= rad; k++) sum += exp(-0.5 * k * k / (sigma * sigma));
    for (int k = -rad; k <= rad; k++) kern[k + rad] = (float)(exp(-0.5 * k * k / (sigma * sigma)) / sum);
    for (int axis = 2; axis >= 0; axis--) blur_axis(vol, shape, axis, kern, rad);
    free(kern);
}

/* ------------------------------------------------------------ geometry --- */

static double uni(mt_rng *r, double lo, double hi) { return lo + (hi - lo) * mt_rng_uniform(r); }

static void random_rotation(double m[3][3], mt_rng *r) {
    double q[4], n = 0;
    do {
        n = 0;
        for (int i = 0; i < 4; i++) {
            q[i] = mt_rng_normal(r);
            n += q[i] * q[i];
        }
    } while (n < 1e-6);
    n = sqrt(n);
    double w = q[0] / n, x = q[1] / n, y = q[2] / n, z = q[3] / n;
    m[0][0] = 1 - 2 * (y * y + z * z); m[0][1] = 2 * (x * y - w * z);     m[0][2] = 2 * (x * z + w * y);
    m[1][0] = 2 * (x * y + w * z);     m[1][1] = 1 - 2 * (x * x + z * z); m[1][2] = 2 * (y * z - w * x);
    m[2][0] = 2 * (x * z - w * y);     m[2][1] = 2 * (y * z + w * x);     m[2][2] = 1 - 2 * (x * x + y * y);
}

static void random_unit(double v[3], mt_rng *r) {
    double n;
    do {
        n = 0;
        for (int i = 0; i < 3; i++) {
            v[i] = mt_rng_normal(r);
            n += v[i] * v[i];
        }
    } while (n < 1e-6);
    n = sqrt(n);
    for (int i = 0; i < 3; i++) v[i] /= n;
}

static void ellipsoid_make(ellipsoid *e, const double c[3], const double radii[3], double lobe_amp,
                           mt_rng *r) {
    memcpy(e->c, c, sizeof e->c);
    random_rotation(e->rot, r);
    for (int a = 0; a < 3; a++) e->inv_r[a] = 1.0 / radii[a];
    e->reach = 1;
    for (int j = 0; j < NUM_LOBES; j++) {
        double k[3];
        random_unit(k, r);
        double f = uni(r, 2.0, 4.0);
        for (int a = 0; a < 3; a++) e->lob_k[j][a] = f * k[a];
        e->lob_a[j] = lobe_amp * uni(r, 0.5, 1.0);
        e->lob_ph[j] = uni(r, 0, 2 * M_PI);
        e->reach += fabs(e->lob_a[j]);
    }
}

/* Local coordinates q = rot (p - c) of a world point. */
static void to_local(double q[3], const ellipsoid *e, const double p[3]) {
    double d[3] = {p[0] - e->c[0], p[1] - e->c[1], p[2] - e->c[2]};
    for (int a = 0; a < 3; a++) q[a] = e->rot[a][0] * d[0] + e->rot[a][1] * d[1] + e->rot[a][2] * d[2];
}

static int ellipsoid_inside(const ellipsoid *e, const double p[3]) {
    double q[3];
    to_local(q, e, p);
    double u[3] = {q[0] * e->inv_r[0], q[1] * e->inv_r[1], q[2] * e->inv_r[2]};
    double f2 = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
    if (f2 >= e->reach * e->reach) return 0;
    double f = sqrt(f2);
    if (f < 1e-12) return 1;
    double thr = 1;
    for (int j = 0; j < NUM_LOBES; j++)
        thr += e->lob_a[j] * sin((e->lob_k[j][0] * u[0] + e->lob_k[j][1] * u[1] +
                                  e->lob_k[j][2] * u[2]) / f + e->lob_ph[j]);
    return f < thr;
}

/* Distance from the centre to the (unlobulated) surface along unit direction d. */
static double surface_distance(const ellipsoid *e, const double d[3]) {
    double q[3] = {0, 0, 0};
    for (int a = 0; a < 3; a++) q[a] = (e->rot[a][0] * d[0] + e->rot[a][1] * d[1] + e->rot[a][2] * d[2]) * e->inv_r[a];
    return 1.0 / sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]);
}

static int in_box(const double p[3], double lim) {
    return fabs(p[0]) <= lim && fabs(p[1]) <= lim && fabs(p[2]) <= lim;
}

/* A curved tapering tube starting inside the organ (so that they touch) and
 * leaving it roughly along the organ's longest axis. 0 if no direction fits. */
static int tube_make(tube *t, const ellipsoid *organ, double scale, mt_rng *r) {
    /* local axis 0 is the longest (radii are drawn that way) */
    double axis[3] = {organ->rot[0][0], organ->rot[0][1], organ->rot[0][2]};
    double r0 = uni(r, 0.22, 0.28) * scale, r1 = r0 * uni(r, 0.7, 0.9);
    for (int tries = 0; tries < 16; tries++) {
        double sgn = (tries & 1) ? -1 : 1, jit[3], d[3], dn = 0;
        random_unit(jit, r);
        for (int a = 0; a < 3; a++) {
            d[a] = sgn * axis[a] + 0.35 * jit[a];
            dn += d[a] * d[a];
        }
        dn = sqrt(dn);
        for (int a = 0; a < 3; a++) d[a] /= dn;
        double p0[3], p1[3], p2[3], bend[3], dist = 0.8 * surface_distance(organ, d);
        for (int a = 0; a < 3; a++) p0[a] = organ->c[a] + dist * d[a];
        /* curve away: end direction bent by a random perpendicular component */
        random_unit(bend, r);
        double bd = bend[0] * d[0] + bend[1] * d[1] + bend[2] * d[2];
        for (int a = 0; a < 3; a++) bend[a] -= bd * d[a];
        double len = uni(r, 0.75, 1.05) * scale + dist * 0.2, curv = uni(r, 0.15, 0.3);
        int fits = 0;
        for (; len >= 0.35 * scale + 0.2 * dist; len *= 0.85) {
            for (int a = 0; a < 3; a++) {
                p2[a] = p0[a] + len * (d[a] + 0.6 * curv * bend[a]);
                p1[a] = p0[a] + 0.5 * len * d[a] + curv * len * bend[a];
            }
            if (in_box(p2, 0.88 - r0) && in_box(p1, 0.88 - r0)) {
                fits = 1;
                break;
            }
        }
        if (!fits) continue;
        for (int a = 0; a < 3; a++) {
            t->lo[a] = 1e30;
            t->hi[a] = -1e30;
        }
        for (int i = 0; i <= TUBE_SEG; i++) {
            double s = (double)i / TUBE_SEG;
            for (int a = 0; a < 3; a++) {
                t->pts[i][a] = (1 - s) * (1 - s) * p0[a] + 2 * (1 - s) * s * p1[a] + s * s * p2[a];
                if (t->pts[i][a] - r0 < t->lo[a]) t->lo[a] = t->pts[i][a] - r0;
                if (t->pts[i][a] + r0 > t->hi[a]) t->hi[a] = t->pts[i][a] + r0;
            }
            t->rad[i] = r0 + (r1 - r0) * s;
        }
        return 1;
    }
    return 0;
}

static int tube_inside(const tube *t, const double p[3]) {
    for (int a = 0; a < 3; a++)
        if (p[a] < t->lo[a] || p[a] > t->hi[a]) return 0;
    for (int i = 0; i < TUBE_SEG; i++) {
        const double *A = t->pts[i], *B = t->pts[i + 1];
        double v[3] = {B[0] - A[0], B[1] - A[1], B[2] - A[2]};
        double w[3] = {p[0] - A[0], p[1] - A[1], p[2] - A[2]};
        double vv = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        double s = vv > 0 ? (w[0] * v[0] + w[1] * v[1] + w[2] * v[2]) / vv : 0;
        s = s < 0 ? 0 : s > 1 ? 1 : s;
        double e[3] = {w[0] - s * v[0], w[1] - s * v[1], w[2] - s * v[2]};
        double rad = t->rad[i] + s * (t->rad[i + 1] - t->rad[i]);
        if (e[0] * e[0] + e[1] * e[1] + e[2] * e[2] < rad * rad) return 1;
    }
    return 0;
}

static void geometry_draw(geometry *g, int num_classes, mt_rng *r) {
    memset(g, 0, sizeof *g);
    int nfg = num_classes - 1;
    g->num_groups = (nfg + 2) / 3;
    double scale = pow((double)g->num_groups, -1.0 / 3.0);
    for (int k = 0; k < g->num_groups; k++) {
        g->has_tail[k] = 3 * k + 2 <= nfg;
        g->has_lesion[k] = 3 * k + 3 <= nfg;
    }
    /* body: air in the corners */
    double bc[3], brad[3];
    for (int a = 0; a < 3; a++) {
        bc[a] = uni(r, -0.05, 0.05);
        brad[a] = uni(r, 1.12, 1.3);
    }
    ellipsoid_make(&g->body, bc, brad, 0.03, r);
    /* organs: long axis first; later groups placed away from earlier ones */
    double lim = g->num_groups == 1 ? 0.15 : 0.45;
    for (int k = 0; k < g->num_groups; k++) {
        double c[3], rad[3] = {uni(r, 0.5, 0.62) * scale, uni(r, 0.33, 0.42) * scale,
                               uni(r, 0.3, 0.38) * scale};
        for (int tries = 0; tries < 200; tries++) {
            for (int a = 0; a < 3; a++) c[a] = uni(r, -lim, lim);
            int ok = 1;
            for (int j = 0; j < k && ok; j++) {
                double d2 = 0;
                for (int a = 0; a < 3; a++) d2 += (c[a] - g->organ[j].c[a]) * (c[a] - g->organ[j].c[a]);
                ok = sqrt(d2) > 1.05 * scale;
            }
            if (ok) break;
        }
        ellipsoid_make(&g->organ[k], c, rad, 0.08, r);
    }
    for (int k = 0; k < g->num_groups; k++) {
        const ellipsoid *o = &g->organ[k];
        if (g->has_tail[k] && !tube_make(&g->tail[k], o, scale, r)) g->has_tail[k] = -1;
        if (g->has_lesion[k]) {
            double rmin = 1 / o->inv_r[0];
            for (int a = 1; a < 3; a++)
                if (1 / o->inv_r[a] < rmin) rmin = 1 / o->inv_r[a];
            double u[3], lc[3], lrad[3];
            random_unit(u, r);
            double rr = uni(r, 0.0, 0.25);
            double ql[3];
            for (int a = 0; a < 3; a++) ql[a] = rr * u[a] / o->inv_r[a]; /* local offset */
            for (int a = 0; a < 3; a++) /* world = c + rot^T ql */
                lc[a] = o->c[a] + o->rot[0][a] * ql[0] + o->rot[1][a] * ql[1] + o->rot[2][a] * ql[2];
            for (int a = 0; a < 3; a++) lrad[a] = rmin * uni(r, 0.4, 0.55);
            ellipsoid_make(&g->lesion[k], lc, lrad, 0.05, r);
        }
    }
    /* smooth warp shared by all structures */
    for (int a = 0; a < 3; a++)
        for (int j = 0; j < NUM_WAVES; j++) {
            double k[3];
            random_unit(k, r);
            double f = uni(r, 1.5, 3.0);
            for (int b = 0; b < 3; b++) g->warp_k[a][j][b] = f * k[b];
            g->warp_a[a][j] = uni(r, 0.02, 0.045);
            g->warp_ph[a][j] = uni(r, 0, 2 * M_PI);
        }
}

/* Labels (and the air mask) of every voxel. */
static void geometry_paint(uint8_t *label, uint8_t *air, const geometry *g, const int64_t shape[3]) {
    int64_t D = shape[0], H = shape[1], W = shape[2];
#pragma omp parallel for schedule(static) if (D * H * W > 32768)
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                double p0[3] = {(z + 0.5) / D * 2 - 1, (y + 0.5) / H * 2 - 1, (x + 0.5) / W * 2 - 1};
                double p[3];
                for (int a = 0; a < 3; a++) {
                    p[a] = p0[a];
                    for (int j = 0; j < NUM_WAVES; j++)
                        p[a] += g->warp_a[a][j] * sin(g->warp_k[a][j][0] * p0[0] + g->warp_k[a][j][1] * p0[1] +
                                                      g->warp_k[a][j][2] * p0[2] + g->warp_ph[a][j]);
                }
                int lab = 0;
                for (int k = 0; k < g->num_groups && !lab; k++)
                    if (ellipsoid_inside(&g->organ[k], p)) lab = 3 * k + 1;
                for (int k = 0; k < g->num_groups && !lab; k++)
                    if (g->has_tail[k] == 1 && tube_inside(&g->tail[k], p)) lab = 3 * k + 2;
                for (int k = 0; k < g->num_groups; k++)
                    if (g->has_lesion[k] && lab == 3 * k + 1 && ellipsoid_inside(&g->lesion[k], p))
                        lab = 3 * k + 3;
                int64_t i = (z * H + y) * W + x;
                label[i] = (uint8_t)lab;
                air[i] = !lab && !ellipsoid_inside(&g->body, p);
            }
}

/* ---------------------------------------------------------- intensity --- */

static void fill_normal(float *buf, const int64_t shape[3], mt_rng *r) {
    mt_tensor *t = mt_tensor_wrap(MT_F32, 3, shape, buf);
    mt_rng_fill_normal(t, r, 0.0f, 1.0f);
    mt_tensor_release(t);
}

/* Mean and std over n values, summed serially in double (thread-independent). */
static void mean_std(const float *v, int64_t n, double *mean, double *std) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (v[i] - m) * (v[i] - m);
    *mean = m;
    *std = sqrt(s2 / (double)n);
}

/* Smooth zero-mean unit-std noise: white noise blurred with sigma voxels. */
static void smooth_noise(float *buf, const int64_t shape[3], double sigma, mt_rng *r) {
    int64_t n = shape[0] * shape[1] * shape[2];
    fill_normal(buf, shape, r);
    mt_phantom_blur(buf, shape, sigma);
    double m, s;
    mean_std(buf, n, &m, &s);
    if (s < 1e-12) s = 1;
    for (int64_t i = 0; i < n; i++) buf[i] = (float)((buf[i] - m) / s);
}

mt_status mt_phantom_generate(const mt_phantom_config *cfg, int64_t case_index, mt_tensor **image_out,
                              mt_tensor **label_out) {
    *image_out = NULL;
    *label_out = NULL;
    MT_TRY(mt_phantom_config_check(cfg));
    if (case_index < 0)
        return mt_error_set(MT_ERR_INVALID, "phantom: case index %lld must be >= 0", (long long)case_index);
    const int64_t *shape = cfg->shape;
    int64_t n = shape[0] * shape[1] * shape[2];
    int K = cfg->num_classes;

    /* geometry: redraw until every class has a minimum volume */
    mt_rng rg;
    mt_rng_init_stream(&rg, cfg->seed, (uint64_t)case_index, PH_TAG, PH_GEOMETRY);
    mt_tensor *label = mt_tensor_new(MT_U8, 4, (int64_t[]){1, shape[0], shape[1], shape[2]}, MT_DEVICE_CPU);
    uint8_t *lab = mt_tensor_data(label);
    uint8_t *air = malloc((size_t)n);
    MT_CHECK(air);
    int64_t min_count = n / 4000 > 8 ? n / 4000 : 8;
    int ok = 0;
    for (int attempt = 0; attempt < MAX_ATTEMPTS && !ok; attempt++) {
        geometry g;
        geometry_draw(&g, K, &rg);
        geometry_paint(lab, air, &g, shape);
        int64_t count[MT_PHANTOM_MAX_CLASSES] = {0};
        for (int64_t i = 0; i < n; i++) count[lab[i]]++;
        ok = 1;
        for (int c = 1; c < K; c++) ok &= count[c] >= min_count;
    }
    if (!ok) {
        free(air);
        mt_tensor_release(label);
        return mt_error_set(MT_ERR_INVALID,
                            "phantom: could not fit %d classes into shape %lldx%lldx%lld; use a larger "
                            "shape or fewer classes",
                            K, (long long)shape[0], (long long)shape[1], (long long)shape[2]);
    }

    /* class means: organ brighter, tail less so, lesion darker; odd groups reversed */
    mt_rng ri;
    mt_rng_init_stream(&ri, cfg->seed, (uint64_t)case_index, PH_TAG, PH_INTENSITY);
    static const double base_delta[3] = {0.55, 0.4, -0.4};
    double mean[MT_PHANTOM_MAX_CLASSES] = {1.0};
    for (int c = 1; c < MT_PHANTOM_MAX_CLASSES; c++) {
        int kind = (c - 1) % 3, group = (c - 1) / 3;
        double sign = (group & 1) ? -0.9 : 1.0;
        mean[c] = 1.0 + cfg->contrast * sign * base_delta[kind] * uni(&ri, 0.85, 1.15);
    }
    double bias_c[9], bias_norm = 0;
    for (int j = 0; j < 9; j++) {
        bias_c[j] = mt_rng_normal(&ri);
        bias_norm += fabs(bias_c[j]);
    }
    for (int j = 0; j < 9; j++) bias_c[j] *= cfg->bias / bias_norm;

    /* textures: coarse for the background tissue, finer inside structures */
    mt_rng rt;
    mt_rng_init_stream(&rt, cfg->seed, (uint64_t)case_index, PH_TAG, PH_TEXTURE);
    int64_t min_dim = shape[0] < shape[1] ? shape[0] : shape[1];
    if (shape[2] < min_dim) min_dim = shape[2];
    double coarse = min_dim / 10.0;
    coarse = coarse < 2 ? 2 : coarse > 8 ? 8 : coarse;
    mt_tensor *image = mt_tensor_new(MT_F32, 4, (int64_t[]){1, shape[0], shape[1], shape[2]}, MT_DEVICE_CPU);
    float *img = mt_tensor_data(image);
    float *tex_bg = malloc(sizeof(float) * (size_t)n), *tex_fg = malloc(sizeof(float) * (size_t)n);
    MT_CHECK(tex_bg && tex_fg);
    smooth_noise(tex_bg, shape, coarse, &rt);
    smooth_noise(tex_fg, shape, 1.2, &rt);

    int64_t D = shape[0], H = shape[1], W = shape[2];
    float tex = cfg->texture;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                double v;
                if (lab[i]) v = mean[lab[i]] + 0.5 * tex * tex_fg[i];
                else if (air[i]) v = 0;
                else v = 1.0 + tex * tex_bg[i];
                double pz = (z + 0.5) / D * 2 - 1, py = (y + 0.5) / H * 2 - 1, px = (x + 0.5) / W * 2 - 1;
                double phi[9] = {pz, py, px, pz * py, py * px, px * pz,
                                 1.5 * (pz * pz - 1.0 / 3), 1.5 * (py * py - 1.0 / 3), 1.5 * (px * px - 1.0 / 3)};
                double b = 0;
                for (int j = 0; j < 9; j++) b += bias_c[j] * phi[j];
                img[i] = (float)(v * exp(b));
            }
    free(tex_bg);
    free(air);
    mt_phantom_blur(img, shape, cfg->blur_sigma);

    /* Rician noise: magnitude of (signal + n1, n2) */
    mt_rng rn;
    mt_rng_init_stream(&rn, cfg->seed, (uint64_t)case_index, PH_TAG, PH_NOISE);
    float *n1 = tex_fg; /* reuse */
    float *n2 = malloc(sizeof(float) * (size_t)n);
    MT_CHECK(n2);
    fill_normal(n1, shape, &rn);
    fill_normal(n2, shape, &rn);
    float sig = cfg->noise;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        float re = img[i] + sig * n1[i], im = sig * n2[i];
        img[i] = sqrtf(re * re + im * im);
    }
    free(n1);
    free(n2);

    if (cfg->normalize) {
        double m, s;
        mean_std(img, n, &m, &s);
        if (s < 1e-12) s = 1;
        for (int64_t i = 0; i < n; i++) img[i] = (float)((img[i] - m) / s);
    }
    *image_out = image;
    *label_out = label;
    return MT_OK;
}

mt_status mt_phantom_dataset_init(mt_phantom_dataset *ds, const mt_phantom_config *cfg, int64_t first_case,
                                  int num_cases) {
    memset(ds, 0, sizeof *ds);
    if (num_cases < 1)
        return mt_error_set(MT_ERR_INVALID, "phantom: dataset needs at least one case (got %d)", num_cases);
    if (first_case < 0)
        return mt_error_set(MT_ERR_INVALID, "phantom: first case %lld must be >= 0", (long long)first_case);
    MT_TRY(mt_phantom_config_check(cfg));
    ds->images = calloc((size_t)num_cases, sizeof *ds->images);
    ds->labels = calloc((size_t)num_cases, sizeof *ds->labels);
    MT_CHECK(ds->images && ds->labels);
    ds->first_case = first_case;
    for (int k = 0; k < num_cases; k++) {
        mt_status st = mt_phantom_generate(cfg, first_case + k, &ds->images[k], &ds->labels[k]);
        if (st != MT_OK) {
            mt_phantom_dataset_free(ds);
            return st;
        }
        ds->num_cases = k + 1;
    }
    return MT_OK;
}

void mt_phantom_dataset_free(mt_phantom_dataset *ds) {
    if (ds->images)
        for (int k = 0; k < ds->num_cases; k++) mt_tensor_release(ds->images[k]);
    if (ds->labels)
        for (int k = 0; k < ds->num_cases; k++) mt_tensor_release(ds->labels[k]);
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}
