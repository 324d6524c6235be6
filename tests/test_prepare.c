/* LABELS: integration */
/* launch/prepare + data/preprocess + data/h5store, end to end:
 *  - a synthetic MSD folder in /tmp (3 cases, 2 channels "CT" and "T2" in one
 *    4-D file, labels 0..2, different voxel sizes and oblique affines, a zero
 *    border to crop and a zero hole inside) -> prepare -> HDF5 -> load:
 *    every recorded number (shapes, spacings, crop box, affines, orders,
 *    normalisation, class counts, fingerprint) against the test's own
 *    computation from the data it wrote; the stored voxels against the test's
 *    own crop + normalisation followed by data/resample (tested on its own
 *    in test_resample); the inverse mapping back to the source grid;
 *  - results independent of the thread count;
 *  - errors name the file: missing / not HDF5 / no /meta / truncated store,
 *    a dataset of the wrong shape, a missing case group; a failing prepare
 *    leaves an existing output untouched and no temporary file;
 *  - the `medtrain prepare` command line (in process): exit 2 naming the bad
 *    argument, exit 1 for data errors, --spacing in NIfTI (x, y, z) order;
 *  - the real Task04_Hippocampus (10 cases into /tmp) when present: median
 *    spacing 1 x 1 x 1, voxels and labels against the NIfTI files.
 * Exits 77 after the synthetic part when the real data is absent. */
#define _GNU_SOURCE /* nftw */
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include "core/json.h"
#include "data/h5store.h"
#include "data/msd.h"
#include "data/nifti.h"
#include "data/preprocess.h"
#include "launch/cli.h"
#include "launch/fsutil.h"
#include "launch/prepare.h"
#include "mt_test.h"

#define HIPPO MT_SHARED_DIR "/data/Task04_Hippocampus"
#define NCASE 3
#define NCH 2

static char g_dir[] = "/tmp/mt_test_prepare_XXXXXX";

static char *path_of(const char *rel) {
    static char buf[16][600];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 600, "%s/%s", g_dir, rel);
    return p;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    MT_CHECK(f);
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------------- synthetic data */

typedef struct {
    const char *id;
    int64_t shape[3];      /* (D, H, W) */
    double spacing[3];     /* (D, H, W) */
    int64_t lo[3], hi[3];  /* non-zero box */
    int64_t hole[3];       /* a zero voxel inside the box */
    double affine[4][4];
    mt_tensor *image;      /* (C, D, H, W) f32 as written */
    mt_tensor *label;      /* (1, D, H, W) u8 */
} synth_case;

static synth_case g_cases[NCASE] = {
    /* case 0 holds the median voxel size on every axis: its resampling is the identity */
    {"c0", {14, 17, 15}, {2.0, 1.0, 0.9}, {2, 3, 1}, {13, 15, 12}, {7, 8, 6}, {{0}}, NULL, NULL},
    /* 2.5 / 0.8 > 3: D (the largest spacing) is resampled separately (nearest) */
    {"c1", {12, 20, 13}, {2.5, 0.8, 1.1}, {1, 2, 2}, {11, 18, 12}, {5, 9, 7}, {{0}}, NULL, NULL},
    {"c2", {16, 15, 18}, {1.5, 1.2, 0.7}, {3, 1, 2}, {14, 13, 16}, {8, 7, 9}, {{0}}, NULL, NULL},
};

static const double g_median[3] = {2.0, 1.0, 0.9};

static float spacing_f(double v) { return (float)v; } /* NIfTI-1 stores pixdim as float32 */

static void make_case(synth_case *c, int k) {
    int64_t D = c->shape[0], H = c->shape[1], W = c->shape[2];
    c->image = mt_tensor_zeros(MT_F32, 4, (int64_t[]){NCH, D, H, W}, MT_DEVICE_CPU);
    c->label = mt_tensor_zeros(MT_U8, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
    float *x = MT_F32P(c->image);
    uint8_t *y = mt_tensor_data(c->label);
    mt_rng r;
    mt_rng_init(&r, 100 + (uint64_t)k);
    double c1[3], c2[3];
    for (int a = 0; a < 3; a++) {
        double mid = 0.5 * (double)(c->lo[a] + c->hi[a] - 1);
        c1[a] = mid - 1.5;
        c2[a] = mid + 2.0;
    }
    for (int64_t d = c->lo[0]; d < c->hi[0]; d++)
        for (int64_t h = c->lo[1]; h < c->hi[1]; h++)
            for (int64_t w = c->lo[2]; w < c->hi[2]; w++) {
                int64_t i = (d * H + h) * W + w;
                double p[3] = {(double)d, (double)h, (double)w};
                double r1 = 0, r2 = 0;
                for (int a = 0; a < 3; a++) {
                    r1 += (p[a] - c1[a]) * (p[a] - c1[a]);
                    r2 += (p[a] - c2[a]) * (p[a] - c2[a]);
                }
                uint8_t lab = r1 <= 3.2 * 3.2 ? 1 : (r2 <= 2.6 * 2.6 ? 2 : 0);
                y[i] = lab;
                /* never exactly 0 inside the box */
                x[i] = (float)(40 + 60 * lab + 20 * sin(0.4 * d + 0.3 * h) + 10 * mt_rng_uniform(&r) + 1);
                x[D * H * W + i] = (float)(300 + 80 * lab + 50 * cos(0.3 * w - 0.2 * h) + 20 * mt_rng_uniform(&r));
            }
    int64_t hi = (c->hole[0] * H + c->hole[1]) * W + c->hole[2];
    x[hi] = x[D * H * W + hi] = 0.0f;
    y[hi] = 0;
    /* an oblique affine: rotation about z, x flipped, offset; columns scaled by the voxel size */
    double th = 0.2 + 0.1 * k, cs = cos(th), sn = sin(th);
    double R[3][3] = {{-cs, -sn, 0}, {sn, -cs, 0.1}, {0, 0.1, 1}};
    double vox[3] = {spacing_f(c->spacing[2]), spacing_f(c->spacing[1]), spacing_f(c->spacing[0])}; /* i, j, k */
    for (int row = 0; row < 3; row++) {
        for (int col = 0; col < 3; col++) c->affine[row][col] = R[row][col] * vox[col];
        c->affine[row][3] = 10.0 * (row + 1) - 7.5 * k;
    }
    c->affine[3][0] = c->affine[3][1] = c->affine[3][2] = 0;
    c->affine[3][3] = 1;
}

static void write_nifti(const char *path, const mt_tensor *t, const synth_case *c) {
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.hdr.pixdim[1] = c->spacing[2];
    img.hdr.pixdim[2] = c->spacing[1];
    img.hdr.pixdim[3] = c->spacing[0];
    mt_nifti_set_sform(&img.hdr, (const double(*)[4])c->affine, 2);
    /* an image (C, D, H, W) is written 4-D with the channels as dim[4] */
    img.data = (mt_tensor *)t;
    mt_tensor *sq = NULL;
    if (t->shape[0] == 1) img.data = sq = mt_tensor_squeeze(t, 0);
    mt_status st = mt_nifti_write(path, &img, 1, 1);
    CHECK_MSG(st == MT_OK, "writing %s: %s", path, mt_error_msg());
    if (sq) mt_tensor_release(sq);
}

/* The dataset folder `name` under g_dir (bad_label: case c1's label holds a 3). */
static const char *write_dataset(const char *name, int bad_label) {
    static char root[600];
    snprintf(root, sizeof root, "%s/%s", g_dir, name);
    mkdir(root, 0700);
    char p[700];
    snprintf(p, sizeof p, "%s/imagesTr", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/labelsTr", root);
    mkdir(p, 0700);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "{\"name\": \"Synth\", \"modality\": {\"0\": \"CT\", \"1\": \"T2\"},\n"
                          " \"labels\": {\"0\": \"background\", \"1\": \"front\", \"2\": \"back\"},\n"
                          " \"numTraining\": %d, \"training\": [",
                     NCASE);
    for (int k = 0; k < NCASE; k++) {
        synth_case *c = &g_cases[k];
        mt_strbuf_printf(&sb, "%s\n  {\"image\": \"./imagesTr/%s.nii.gz\", \"label\": \"./labelsTr/%s.nii.gz\"}",
                         k ? "," : "", c->id, c->id);
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, c->id);
        write_nifti(p, c->image, c);
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, c->id);
        if (bad_label && k == 1) {
            mt_tensor *l = mt_tensor_clone(c->label);
            ((uint8_t *)mt_tensor_data(l))[5] = 3;
            write_nifti(p, l, c);
            mt_tensor_release(l);
        } else {
            write_nifti(p, c->label, c);
        }
    }
    mt_strbuf_puts(&sb, "\n]}\n");
    snprintf(p, sizeof p, "%s/dataset.json", root);
    char *text = mt_strbuf_take(&sb);
    write_text(p, text);
    free(text);
    return root;
}

/* ------------------------------------------------- the test's references */

static double src_coord(double o, int64_t n, int64_t m) { return (o + 0.5) * (double)n / (double)m - 0.5; }

/* Foreground values of channel ch of case c inside its box. */
static double *fg_values(const synth_case *c, int ch, int64_t *n) {
    int64_t D = c->shape[0], H = c->shape[1], W = c->shape[2];
    const float *x = MT_F32P(c->image) + ch * D * H * W;
    const uint8_t *y = mt_tensor_data(c->label);
    double *v = malloc(sizeof(double) * (size_t)(D * H * W));
    *n = 0;
    for (int64_t i = 0; i < D * H * W; i++)
        if (y[i] > 0) v[(*n)++] = x[i];
    return v;
}

static int64_t prod3(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

/* Checks the store at path against the synthetic cases (target: the
 * expected target spacing, up to float32 rounding of the NIfTI voxel sizes). */
static void check_store(const char *path, const double target_approx[3]) {
    mt_h5store *s = NULL;
    mt_status st = mt_h5store_open(&s, path);
    CHECK_MSG(st == MT_OK, "open %s: %s", path, mt_error_msg());
    if (st != MT_OK) return;
    const mt_h5store_meta *m = mt_h5store_get_meta(s);
    CHECK(!strcmp(m->dataset_name, "Synth"));
    CHECK(m->num_channels == NCH && !strcmp(m->channel_names[0], "CT") && !strcmp(m->channel_names[1], "T2"));
    CHECK(m->num_classes == 3 && !strcmp(m->class_names[1], "front") && !strcmp(m->class_names[2], "back"));
    CHECK(mt_h5store_num_cases(s) == NCASE);
    for (int k = 0; k < NCASE; k++) CHECK(!strcmp(mt_h5store_case_id(s, k), g_cases[k].id));
    CHECK(mt_h5store_find(s, "c2") == 2 && mt_h5store_find(s, "nope") == -1);
    CHECK(!strcmp(m->medtrain_version, MT_VERSION));
    for (int a = 0; a < 3; a++) CHECK_NEAR(m->plan.target_spacing[a], target_approx[a], 1e-6);
    const double *target = m->plan.target_spacing;
    CHECK(m->plan.order_image == MT_INTERP_CUBIC && m->plan.order_label == MT_INTERP_LINEAR &&
          m->plan.order_aniso == MT_INTERP_NEAREST && m->plan.aniso_threshold == 3.0);
    CHECK(m->plan.norm[0].scheme == MT_NORM_SCHEME_CT && m->plan.norm[1].scheme == MT_NORM_SCHEME_ZSCORE);
    mt_json *pj = NULL;
    CHECK_MSG(mt_json_parse(&pj, m->prepare_params, strlen(m->prepare_params), "prepare_params") == MT_OK,
              "prepare_params is JSON: %s", mt_error_msg());
    CHECK(mt_json_len(mt_json_get(pj, "target_spacing")) == 3);
    mt_json_free(pj);

    /* ---- fingerprint ---- */
    mt_fingerprint fp;
    char *json = NULL;
    st = mt_h5store_read_fingerprint(s, &fp, &json);
    CHECK_MSG(st == MT_OK, "fingerprint: %s", mt_error_msg());
    if (st != MT_OK) {
        mt_h5store_close(s);
        return;
    }
    CHECK(fp.num_cases == NCASE && fp.num_channels == NCH && fp.num_classes == 3);
    for (int a = 0; a < 3; a++) CHECK_NEAR(fp.median_spacing[a], spacing_f(g_median[a]), 1e-9);
    int64_t cls[3] = {0, 0, 0};
    double rel[NCASE];
    for (int k = 0; k < NCASE; k++) {
        const synth_case *c = &g_cases[k];
        int64_t after[3];
        for (int a = 0; a < 3; a++) {
            after[a] = c->hi[a] - c->lo[a];
            CHECK_NEAR(fp.spacing[k][a], spacing_f(c->spacing[a]), 1e-9);
            CHECK(fp.shape_before_crop[k][a] == c->shape[a]);
            CHECK_MSG(fp.shape_after_crop[k][a] == after[a], "case %s axis %d: shape after crop %lld, want %lld",
                      c->id, a, (long long)fp.shape_after_crop[k][a], (long long)after[a]);
        }
        rel[k] = (double)prod3(after) / (double)prod3(c->shape);
        const uint8_t *y = mt_tensor_data(c->label);
        for (int64_t i = 0; i < mt_tensor_numel(c->label); i++) cls[y[i]]++;
    }
    for (int q = 0; q < 3; q++) CHECK(fp.class_voxels[q] == cls[q]);
    /* median of three */
    double r0 = rel[0], r1 = rel[1], r2 = rel[2];
    double med = fmax(fmin(r0, r1), fmin(fmax(r0, r1), r2));
    CHECK_NEAR(fp.median_relative_size_after_crop, med, 1e-12);
    CHECK(fp.median_relative_size_after_crop < 0.75); /* so z-score uses the mask */
    CHECK(m->plan.norm[1].use_mask == 1 && m->plan.norm[0].use_mask == 0);
    for (int ch = 0; ch < NCH; ch++) {
        /* equal weight per case: the pooled mean estimates the mean of the per-case means */
        double mean_ref = 0, lo = HUGE_VAL, hi = -HUGE_VAL, var_ref = 0;
        for (int k = 0; k < NCASE; k++) {
            int64_t n;
            double *v = fg_values(&g_cases[k], ch, &n);
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < n; i++) {
                s1 += v[i];
                s2 += v[i] * v[i];
                lo = fmin(lo, v[i]);
                hi = fmax(hi, v[i]);
            }
            mean_ref += s1 / (double)n / NCASE;
            var_ref += s2 / (double)n / NCASE;
            free(v);
        }
        double std_ref = sqrt(var_ref - mean_ref * mean_ref);
        const mt_intensity_stats *t = &fp.stats[ch];
        CHECK(t->n == NCASE * fp.samples_per_case && fp.samples_per_case == 4000);
        CHECK_MSG(fabs(t->mean - mean_ref) < 0.05 * std_ref, "channel %d: mean %g vs %g", ch, t->mean, mean_ref);
        CHECK_MSG(fabs(t->std - std_ref) < 0.05 * std_ref, "channel %d: std %g vs %g", ch, t->std, std_ref);
        CHECK(t->min >= lo && t->max <= hi && t->min < t->p00_5 + 1e-9 && t->p00_5 <= t->median &&
              t->median <= t->p99_5 && t->p99_5 <= t->max);
        CHECK(t->min < mean_ref - std_ref && t->max > mean_ref + std_ref);
        /* CT channel: the plan takes the dataset statistics */
        if (ch == 0) {
            CHECK(m->plan.norm[0].mean == t->mean && m->plan.norm[0].std == t->std &&
                  m->plan.norm[0].clip_lo == t->p00_5 && m->plan.norm[0].clip_hi == t->p99_5);
        }
    }
    mt_json *fj = NULL;
    CHECK_MSG(json && mt_json_parse(&fj, json, strlen(json), "fingerprint json") == MT_OK, "fingerprint json: %s",
              mt_error_msg());
    const mt_json *ms = mt_json_get(fj, "median_spacing");
    CHECK(mt_json_len(ms) == 3 && fabs(mt_json_at(ms, 0)->number - fp.median_spacing[0]) < 1e-12);
    CHECK(mt_json_len(mt_json_get(fj, "class_voxels")) == 3 &&
          mt_json_at(mt_json_get(fj, "class_voxels"), 2)->integer == cls[2]);
    mt_json_free(fj);
    free(json);

    /* ---- cases ---- */
    for (int k = 0; k < NCASE; k++) {
        const synth_case *c = &g_cases[k];
        mt_tensor *img = NULL, *lab = NULL;
        mt_h5store_case_info info;
        st = mt_h5store_load_case(s, k, &img, &lab, &info);
        CHECK_MSG(st == MT_OK, "load %s: %s", c->id, mt_error_msg());
        if (st != MT_OK) continue;
        const mt_prep_geometry *g = &info.geom;
        int64_t cs[3], shape[3];
        double sp[3];
        for (int a = 0; a < 3; a++) {
            sp[a] = spacing_f(c->spacing[a]);
            cs[a] = c->hi[a] - c->lo[a];
            shape[a] = (int64_t)llround((double)cs[a] * sp[a] / target[a]);
            CHECK(g->orig_shape[a] == c->shape[a]);
            CHECK_NEAR(g->orig_spacing[a], sp[a], 1e-12);
            CHECK_MSG(g->crop_lo[a] == c->lo[a] && g->crop_hi[a] == c->hi[a], "%s: crop box axis %d [%lld, %lld)",
                      c->id, a, (long long)g->crop_lo[a], (long long)g->crop_hi[a]);
            CHECK_NEAR(g->target_spacing[a], target[a], 1e-12);
            CHECK(g->shape[a] == shape[a]);
            CHECK_NEAR(g->spacing[a], (double)cs[a] * sp[a] / (double)shape[a], 1e-12);
        }
        CHECK(img->ndim == 4 && img->shape[0] == NCH && img->shape[1] == shape[0] && img->shape[2] == shape[1] &&
              img->shape[3] == shape[2]);
        CHECK(lab->ndim == 4 && lab->shape[0] == 1 && lab->dtype == MT_U8 && lab->shape[1] == shape[0]);
        /* affines: the source's (float32 in NIfTI-1), and the preprocessed one maps voxel centres
         * onto the source's continuous coordinates lo + x(o) */
        double worst = 0;
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 4; q++) worst = fmax(worst, fabs(g->orig_affine[r][q] - c->affine[r][q]));
        CHECK_MSG(worst < 1e-5, "%s: source affine differs by %g", c->id, worst);
        worst = 0;
        for (int64_t d = 0; d < shape[0]; d += 3)
            for (int64_t h = 0; h < shape[1]; h += 4)
                for (int64_t w = 0; w < shape[2]; w += 5) {
                    double o[4] = {(double)w, (double)h, (double)d, 1};
                    double in[4] = {c->lo[2] + src_coord(w, cs[2], shape[2]), c->lo[1] + src_coord(h, cs[1], shape[1]),
                                    c->lo[0] + src_coord(d, cs[0], shape[0]), 1};
                    for (int r = 0; r < 3; r++) {
                        double a = 0, b = 0;
                        for (int q = 0; q < 4; q++) {
                            a += g->affine[r][q] * o[q];
                            b += g->orig_affine[r][q] * in[q];
                        }
                        worst = fmax(worst, fabs(a - b));
                    }
                }
        CHECK_MSG(worst < 1e-9, "%s: preprocessed affine off by %g mm", c->id, worst);
        /* orders: separate z for the anisotropic case c1 only */
        mt_interp want_d = k == 1 ? MT_INTERP_NEAREST : MT_INTERP_CUBIC;
        CHECK_MSG(g->order_image[0] == want_d && g->order_image[1] == MT_INTERP_CUBIC &&
                      g->order_image[2] == MT_INTERP_CUBIC,
                  "%s: image orders %d %d %d", c->id, g->order_image[0], g->order_image[1], g->order_image[2]);
        CHECK(g->order_label[0] == (k == 1 ? MT_INTERP_NEAREST : MT_INTERP_LINEAR) &&
              g->order_label[1] == MT_INTERP_LINEAR);

        /* the test's own crop + normalisation, then data/resample */
        int64_t D = c->shape[0], H = c->shape[1], W = c->shape[2];
        mt_tensor *crop = mt_tensor_new(MT_F32, 4, (int64_t[]){NCH, cs[0], cs[1], cs[2]}, MT_DEVICE_CPU);
        mt_tensor *lcrop = mt_tensor_new(MT_U8, 4, (int64_t[]){1, cs[0], cs[1], cs[2]}, MT_DEVICE_CPU);
        float *cp = MT_F32P(crop);
        uint8_t *lp = mt_tensor_data(lcrop);
        const float *x = MT_F32P(c->image);
        const uint8_t *y = mt_tensor_data(c->label);
        int64_t nc = prod3(cs);
        for (int ch = 0; ch < NCH; ch++)
            for (int64_t d = 0; d < cs[0]; d++)
                for (int64_t h = 0; h < cs[1]; h++)
                    for (int64_t w = 0; w < cs[2]; w++) {
                        int64_t src = ((d + c->lo[0]) * H + h + c->lo[1]) * W + w + c->lo[2];
                        cp[ch * nc + (d * cs[1] + h) * cs[2] + w] = x[ch * D * H * W + src];
                        if (ch == 0) lp[(d * cs[1] + h) * cs[2] + w] = y[src];
                    }
        /* CT: clip to the fingerprint percentiles, dataset mean/std */
        const mt_intensity_stats *t = &fp.stats[0];
        for (int64_t i = 0; i < nc; i++) {
            double v = fmin(fmax(cp[i], t->p00_5), t->p99_5);
            cp[i] = (float)((v - t->mean) / t->std);
        }
        /* T2: z-score over the non-zero mask, which is the whole box (hole filled) */
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < nc; i++) s1 += cp[nc + i];
        double mean = s1 / (double)nc;
        for (int64_t i = 0; i < nc; i++) s2 += (cp[nc + i] - mean) * (cp[nc + i] - mean);
        double sd = sqrt(s2 / (double)nc);
        CHECK_NEAR(info.norm[1].mean, mean, 1e-9 * fabs(mean));
        CHECK_NEAR(info.norm[1].std, sd, 1e-9 * sd);
        CHECK(info.norm[1].scheme == MT_NORM_SCHEME_ZSCORE && info.norm[1].use_mask == 1);
        CHECK(info.norm[0].scheme == MT_NORM_SCHEME_CT && info.norm[0].clip_lo == t->p00_5 && info.norm[0].mean == t->mean);
        for (int64_t i = 0; i < nc; i++) cp[nc + i] = (float)((cp[nc + i] - mean) / sd);
        mt_tensor *ref = mt_resample_image(crop, shape, g->order_image);
        mt_test_allclose_t(img, ref, 1e-4, 1e-4, c->id);
        mt_tensor *lref = mt_resample_labels(lcrop, shape, g->order_label);
        CHECK_MSG(!memcmp(mt_tensor_data(lref), mt_tensor_data(lab), (size_t)prod3(shape)), "%s: stored label", c->id);
        int64_t cv[3] = {0, 0, 0};
        const uint8_t *sl = mt_tensor_data(lab);
        for (int64_t i = 0; i < prod3(shape); i++) cv[sl[i]]++;
        CHECK(info.class_voxels[0] == cv[0] && info.class_voxels[1] == cv[1] && info.class_voxels[2] == cv[2]);
        CHECK(cv[1] > 0 && cv[2] > 0);
        if (k == 0) {
            /* identity resampling: the hole holds (0 - mean) / std, not 0 (it is inside the filled mask) */
            int64_t hv = ((c->hole[0] - c->lo[0]) * cs[1] + c->hole[1] - c->lo[1]) * cs[2] + c->hole[2] - c->lo[2];
            CHECK_NEAR(MT_F32P(img)[nc + hv], -mean / sd, 1e-4);
        }

        /* ---- inverse mapping to the source grid ---- */
        mt_tensor *back = NULL;
        st = mt_preprocess_invert_labels(&back, lab, g);
        CHECK_MSG(st == MT_OK, "invert labels: %s", mt_error_msg());
        if (st == MT_OK) {
            CHECK(back->shape[1] == D && back->shape[2] == H && back->shape[3] == W);
            const uint8_t *bp = mt_tensor_data(back);
            if (k == 0) {
                CHECK_MSG(!memcmp(bp, y, (size_t)(D * H * W)), "c0: inverse labels reproduce the source exactly");
            } else {
                for (int q = 1; q < 3; q++) {
                    int64_t inter = 0, na = 0, nb = 0;
                    for (int64_t i = 0; i < D * H * W; i++) {
                        inter += bp[i] == q && y[i] == q;
                        na += bp[i] == q;
                        nb += y[i] == q;
                    }
                    double dice = 2.0 * inter / (double)(na + nb);
                    CHECK_MSG(dice > 0.85, "%s class %d: Dice after the round trip %.3f", c->id, q, dice);
                }
            }
            int64_t outside = 0;
            for (int64_t d = 0; d < D; d++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t w = 0; w < W; w++) {
                        int in = d >= c->lo[0] && d < c->hi[0] && h >= c->lo[1] && h < c->hi[1] && w >= c->lo[2] &&
                                 w < c->hi[2];
                        if (!in && bp[(d * H + h) * W + w]) outside++;
                    }
            CHECK(outside == 0);
            mt_tensor_release(back);
        }
        float fill[NCH] = {-7.0f, 3.0f};
        st = mt_preprocess_invert_image(&back, img, g, MT_INTERP_LINEAR, fill);
        CHECK_MSG(st == MT_OK, "invert image: %s", mt_error_msg());
        if (st == MT_OK) {
            CHECK(back->shape[0] == NCH && back->shape[1] == D && back->shape[2] == H && back->shape[3] == W);
            if (k == 0) { /* identity: normalised crop at the box, fill elsewhere */
                double *r = malloc(sizeof(double) * (size_t)(NCH * D * H * W));
                for (int ch = 0; ch < NCH; ch++)
                    for (int64_t d = 0; d < D; d++)
                        for (int64_t h = 0; h < H; h++)
                            for (int64_t w = 0; w < W; w++) {
                                int in = d >= c->lo[0] && d < c->hi[0] && h >= c->lo[1] && h < c->hi[1] &&
                                         w >= c->lo[2] && w < c->hi[2];
                                r[((ch * D + d) * H + h) * W + w] =
                                    in ? cp[ch * nc + ((d - c->lo[0]) * cs[1] + h - c->lo[1]) * cs[2] + w - c->lo[2]]
                                       : fill[ch];
                            }
                mt_test_allclose(back, r, 1e-5, 1e-5, "c0 inverse image");
                free(r);
            } else {
                CHECK(MT_F32P(back)[0] == fill[0] && MT_F32P(back)[D * H * W] == fill[1]);
            }
            mt_tensor_release(back);
        }
        /* a prediction of the wrong size is an error naming both shapes */
        mt_tensor *wrong = mt_tensor_zeros(MT_U8, 4, (int64_t[]){1, shape[0] + 1, shape[1], shape[2]}, MT_DEVICE_CPU);
        st = mt_preprocess_invert_labels(&back, wrong, g);
        CHECK(st == MT_ERR_INVALID && back == NULL && strstr(mt_error_msg(), "does not match"));
        mt_tensor_release(wrong);

        mt_tensor_release(ref);
        mt_tensor_release(lref);
        mt_tensor_release(crop);
        mt_tensor_release(lcrop);
        mt_tensor_release(img);
        mt_tensor_release(lab);
    }
    /* image only / label only */
    mt_tensor *only = NULL;
    st = mt_h5store_load_case(s, 1, NULL, &only, NULL);
    CHECK(st == MT_OK && only && only->dtype == MT_U8);
    if (only) mt_tensor_release(only);
    st = mt_h5store_load_case(s, 3, &only, NULL, NULL);
    CHECK(st == MT_ERR_INVALID && strstr(mt_error_msg(), path));
    mt_fingerprint_free(&fp);
    mt_h5store_close(s);
}

/* Same store content whatever the thread count. */
static void check_same(const char *a, const char *b) {
    mt_h5store *s = NULL, *t = NULL;
    if (mt_h5store_open(&s, a) != MT_OK || mt_h5store_open(&t, b) != MT_OK) {
        CHECK_MSG(0, "open: %s", mt_error_msg());
        mt_h5store_close(s);
        return;
    }
    mt_fingerprint f1, f2;
    CHECK(mt_h5store_read_fingerprint(s, &f1, NULL) == MT_OK && mt_h5store_read_fingerprint(t, &f2, NULL) == MT_OK);
    CHECK(!memcmp(f1.stats, f2.stats, sizeof f1.stats));
    for (int k = 0; k < NCASE; k++) {
        mt_tensor *x1, *x2, *y1, *y2;
        CHECK(mt_h5store_load_case(s, k, &x1, &y1, NULL) == MT_OK && mt_h5store_load_case(t, k, &x2, &y2, NULL) == MT_OK);
        CHECK(mt_tensor_same_shape(x1, x2) &&
              !memcmp(mt_tensor_data(x1), mt_tensor_data(x2), mt_tensor_nbytes(x1)) &&
              !memcmp(mt_tensor_data(y1), mt_tensor_data(y2), mt_tensor_nbytes(y1)));
        mt_tensor_release(x1);
        mt_tensor_release(x2);
        mt_tensor_release(y1);
        mt_tensor_release(y2);
    }
    mt_fingerprint_free(&f1);
    mt_fingerprint_free(&f2);
    mt_h5store_close(s);
    mt_h5store_close(t);
}

/* ---------------------------------------------------------------- errors */

static void expect_open_error(const char *path, mt_status code, const char *also) {
    mt_h5store *s = NULL;
    mt_status st = mt_h5store_open(&s, path);
    const char *m = mt_error_msg();
    CHECK_MSG(st == code && s == NULL, "open %s: status %d (want %d): %s", path, st, code, m);
    CHECK_MSG(strstr(m, path) && (!also || strstr(m, also)), "error lacks \"%s\" / \"%s\": %s", path,
              also ? also : "", m);
    if (s) mt_h5store_close(s);
}

static int copy_file(const char *from, const char *to, long nbytes) {
    char *data;
    size_t n;
    if (mt_fs_read_file(from, &data, &n) != MT_OK) return -1;
    if (nbytes >= 0 && (size_t)nbytes < n) n = (size_t)nbytes;
    FILE *f = fopen(to, "wb");
    if (!f) {
        free(data);
        return -1;
    }
    fwrite(data, 1, n, f);
    fclose(f);
    free(data);
    return 0;
}

static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_errors(const char *good, const char *dataset_bad) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    expect_open_error(path_of("missing.h5"), MT_ERR_IO, "No such file");
    write_text(path_of("text.h5"), "this is not HDF5\n");
    expect_open_error(path_of("text.h5"), MT_ERR_FORMAT, "not an HDF5 file");
    hid_t f = H5Fcreate(path_of("empty.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    H5Fclose(f);
    expect_open_error(path_of("empty.h5"), MT_ERR_FORMAT, "/meta");
    struct stat sb;
    CHECK(stat(good, &sb) == 0);
    CHECK(copy_file(good, path_of("trunc.h5"), sb.st_size / 2) == 0);
    {
        mt_h5store *s = NULL;
        mt_status st = mt_h5store_open(&s, path_of("trunc.h5"));
        int ok = st != MT_OK;
        /* if the superblock survives, reading the cases must fail */
        for (int k = 0; st == MT_OK && k < mt_h5store_num_cases(s); k++) {
            mt_tensor *x, *y;
            mt_status sk = mt_h5store_load_case(s, k, &x, &y, NULL);
            if (sk != MT_OK) {
                ok = 1;
                break;
            }
            mt_tensor_release(x);
            mt_tensor_release(y);
        }
        CHECK_MSG(ok, "a truncated store reads without error");
        CHECK_MSG(strstr(mt_error_msg(), path_of("trunc.h5")), "truncated: error names the file: %s", mt_error_msg());
        if (s) mt_h5store_close(s);
    }
    /* a label of the wrong shape */
    CHECK(copy_file(good, path_of("shape.h5"), -1) == 0);
    f = H5Fopen(path_of("shape.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    CHECK(H5Ldelete(f, "/cases/c1/label", H5P_DEFAULT) >= 0);
    hsize_t dims[4] = {1, 3, 4, 5};
    hid_t sp = H5Screate_simple(4, dims, NULL);
    hid_t ds = H5Dcreate2(f, "/cases/c1/label", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(ds >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    /* and a missing case group */
    CHECK(H5Ldelete(f, "/cases/c2", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_open_error(path_of("shape.h5"), MT_ERR_FORMAT, "/cases/c2");
    f = H5Fopen(path_of("shape.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "/cases/c2", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(g >= 0);
    H5Gclose(g);
    H5Fclose(f);
    mt_h5store *s = NULL;
    mt_status st = mt_h5store_open(&s, path_of("shape.h5"));
    CHECK_MSG(st == MT_OK, "open: %s", mt_error_msg());
    if (st == MT_OK) {
        mt_tensor *x = NULL, *y = NULL;
        st = mt_h5store_load_case(s, 1, &x, &y, NULL);
        CHECK_MSG(st == MT_ERR_FORMAT && x == NULL && y == NULL && strstr(mt_error_msg(), path_of("shape.h5")) &&
                      strstr(mt_error_msg(), "/cases/c1/label has shape (1, 3, 4, 5)"),
                  "wrong label shape: %s", mt_error_msg());
        st = mt_h5store_load_case(s, 2, &x, &y, NULL); /* an empty group: attributes missing */
        CHECK_MSG(st == MT_ERR_FORMAT && strstr(mt_error_msg(), "/cases/c2") && strstr(mt_error_msg(), "missing attribute"),
                  "empty case group: %s", mt_error_msg());
        mt_h5store_close(s);
    }

    /* a failing prepare leaves the existing output as it was and no temporary file */
    char out[600];
    snprintf(out, sizeof out, "%s", path_of("keep.h5"));
    write_text(out, "previous content\n");
    mt_prepare_options o;
    mt_prepare_options_default(&o);
    o.progress = 0;
    o.num_threads = 2;
    st = mt_prepare_run(dataset_bad, out, &o);
    CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "labelsTr/c1.nii.gz"), "bad label: %s", mt_error_msg());
    char *data;
    size_t n;
    CHECK(mt_fs_read_file(out, &data, &n) == MT_OK && !strcmp(data, "previous content\n"));
    free(data);
    CHECK(count_tmp_files() == 0);
    st = mt_prepare_run(dataset_bad, path_of("no/such/dir/out.h5"), &o);
    CHECK_MSG(st == MT_ERR_IO && strstr(mt_error_msg(), "no/such/dir"), "missing dir: %s", mt_error_msg());
    const char *ids[2] = {"c0", "zz"};
    o.case_ids = ids;
    o.num_case_ids = 2;
    st = mt_prepare_run(dataset_bad, path_of("sub.h5"), &o);
    CHECK_MSG(st == MT_ERR_INVALID && strstr(mt_error_msg(), "'zz'"), "unknown case: %s", mt_error_msg());
    CHECK(count_tmp_files() == 0 && !mt_fs_is_file(path_of("sub.h5")));
}

/* ------------------------------------------------------------------- CLI */

static char *g_err;

/* Runs mt_cli_main in process with stderr captured into g_err. */
static int run_cli(int argc, const char **argv) {
    free(g_err);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path_of("stderr.txt"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, 2);
    close(fd);
    int rc = mt_cli_main(argc, (char **)argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t n;
    if (mt_fs_read_file(path_of("stderr.txt"), &g_err, &n) != MT_OK) g_err = strdup("");
    return rc;
}

static void cli_expect(int code, const char *want, int argc, const char **argv, const char *what) {
    int rc = run_cli(argc, argv);
    int ok = rc == code && (!want || strstr(g_err, want));
    CHECK_MSG(ok, "%s: exit %d (want %d), stderr: %s", what, rc, code, g_err);
}

#define CLI(code, want, ...)                                                                                  \
    do {                                                                                                      \
        const char *argv_[] = {"medtrain", __VA_ARGS__};                                                      \
        cli_expect((code), (want), (int)(sizeof argv_ / sizeof *argv_), argv_, #__VA_ARGS__);                 \
    } while (0)

static void test_cli(const char *dataset, const char *dataset_bad) {
    char *out = strdup(path_of("cli.h5")); /* path_of's buffers rotate */
    CLI(2, "prepare needs DATASET_DIR and OUT.h5", "prepare");
    CLI(2, "prepare needs OUT.h5", "prepare", dataset);
    CLI(2, "--spacing '1,x,2'", "prepare", dataset, out, "--spacing", "1,x,2");
    CLI(2, "--spacing '1,2'", "prepare", dataset, out, "--spacing", "1,2");
    CLI(2, "--spacing '-1'", "prepare", dataset, out, "--spacing=-1");
    CLI(2, "--threads '0'", "prepare", dataset, out, "--threads", "0");
    CLI(2, "--threads needs a value", "prepare", dataset, out, "--threads");
    CLI(2, "--compress '12'", "prepare", dataset, out, "--compress", "12");
    CLI(2, "unknown option '--bogus'", "prepare", dataset, out, "--bogus");
    CLI(2, "unexpected argument 'extra'", "prepare", dataset, out, "extra");
    CLI(2, "is not a directory", "prepare", path_of("nowhere"), out);
    CHECK(!mt_fs_is_file(out));
    CLI(1, "labelsTr/c1.nii.gz", "prepare", dataset_bad, out, "--quiet");
    CHECK(!mt_fs_is_file(out) && count_tmp_files() == 0);
    /* --spacing is NIfTI (x, y, z); the store keeps (D, H, W) = (z, y, x) */
    CLI(0, NULL, "prepare", dataset, out, "--spacing", "0.9,1.25,2", "--threads", "2", "--quiet", "--cases", "c2,c0");
    mt_h5store *s = NULL;
    mt_status st = mt_h5store_open(&s, out);
    CHECK_MSG(st == MT_OK, "cli store: %s", mt_error_msg());
    if (st == MT_OK) {
        const mt_h5store_meta *m = mt_h5store_get_meta(s);
        CHECK(m->plan.target_spacing[0] == 2.0 && m->plan.target_spacing[1] == 1.25 && m->plan.target_spacing[2] == 0.9);
        CHECK(m->num_cases == 2 && !strcmp(m->case_ids[0], "c2") && !strcmp(m->case_ids[1], "c0"));
        mt_tensor *x;
        mt_h5store_case_info info;
        CHECK(mt_h5store_load_case(s, 1, &x, NULL, &info) == MT_OK);
        CHECK(info.geom.shape[1] == llround(12 * 1.0 / 1.25)); /* c0: H box 12 voxels of 1 mm */
        mt_tensor_release(x);
        mt_h5store_close(s);
    }
    /* progress output (not a terminal: one line per 10%) and the summary */
    CLI(0, "prepare: wrote", "prepare", dataset, out, "--threads", "1");
    CHECK(strstr(g_err, "fingerprint 3/3 cases") && strstr(g_err, "preprocess  3/3 cases"));
    free(g_err);
    g_err = NULL;
    free(out);
}

/* ------------------------------------------------------------- real data */

static void test_hippocampus(void) {
    mt_msd_dataset ds;
    mt_status st = mt_msd_open(&ds, HIPPO);
    CHECK_MSG(st == MT_OK, "open %s: %s", HIPPO, mt_error_msg());
    if (st != MT_OK) return;
    enum { N = 10 };
    const char *ids[N];
    for (int k = 0; k < N; k++) ids[k] = ds.cases[k * 25].id;
    mt_prepare_options o;
    mt_prepare_options_default(&o);
    o.progress = 0;
    o.case_ids = ids;
    o.num_case_ids = N;
    char out[600];
    snprintf(out, sizeof out, "%s", path_of("hippo10.h5"));
    st = mt_prepare_run(HIPPO, out, &o);
    CHECK_MSG(st == MT_OK, "prepare hippocampus: %s", mt_error_msg());
    mt_h5store *s = NULL;
    if (st == MT_OK) st = mt_h5store_open(&s, out);
    CHECK_MSG(st == MT_OK, "open: %s", mt_error_msg());
    if (st != MT_OK) {
        mt_msd_free(&ds);
        return;
    }
    const mt_h5store_meta *m = mt_h5store_get_meta(s);
    CHECK(m->num_cases == N && m->num_channels == 1 && m->num_classes == 3 && !strcmp(m->dataset_name, "Hippocampus"));
    CHECK(!strcmp(m->class_names[1], "Anterior") && !strcmp(m->class_names[2], "Posterior"));
    CHECK(m->plan.norm[0].scheme == MT_NORM_SCHEME_ZSCORE);
    mt_fingerprint fp;
    st = mt_h5store_read_fingerprint(s, &fp, NULL);
    CHECK_MSG(st == MT_OK, "fingerprint: %s", mt_error_msg());
    if (st == MT_OK) {
        CHECK_MSG(fp.median_spacing[0] == 1 && fp.median_spacing[1] == 1 && fp.median_spacing[2] == 1,
                  "median spacing %g %g %g", fp.median_spacing[0], fp.median_spacing[1], fp.median_spacing[2]);
        CHECK(m->plan.target_spacing[0] == 1 && m->plan.target_spacing[1] == 1 && m->plan.target_spacing[2] == 1);
        CHECK(fp.class_voxels[0] > 0 && fp.class_voxels[1] > 0 && fp.class_voxels[2] > 0);
        CHECK(fp.stats[0].n == N * 10000 && fp.stats[0].std > 0 && fp.stats[0].min < fp.stats[0].max);
        CHECK(m->plan.norm[0].use_mask == (fp.median_relative_size_after_crop < 0.75));
    }
    for (int k = 0; k < N; k++) {
        mt_tensor *img = NULL, *lab = NULL, *src = NULL, *slab = NULL;
        mt_h5store_case_info info;
        st = mt_h5store_load_case(s, k, &img, &lab, &info);
        CHECK_MSG(st == MT_OK, "load %s: %s", ids[k], mt_error_msg());
        mt_status s2 = mt_msd_load_case(&ds, mt_msd_find(&ds, ids[k]), &src, &slab, NULL);
        CHECK(s2 == MT_OK);
        if (st != MT_OK || s2 != MT_OK) continue;
        const mt_prep_geometry *g = &info.geom;
        /* 1 mm already: the preprocessed case is the crop of the source, z-scored */
        int64_t cs[3];
        for (int a = 0; a < 3; a++) {
            cs[a] = g->crop_hi[a] - g->crop_lo[a];
            CHECK(g->orig_shape[a] == src->shape[a + 1] && g->shape[a] == cs[a]);
        }
        mt_tensor *cimg = mt_preprocess_crop(src, g->crop_lo, g->crop_hi);
        mt_tensor *clab = mt_preprocess_crop(slab, g->crop_lo, g->crop_hi);
        CHECK_MSG(!memcmp(mt_tensor_data(clab), mt_tensor_data(lab), (size_t)mt_tensor_numel(lab)), "%s: label", ids[k]);
        int64_t n = mt_tensor_numel(cimg);
        double *ref = malloc(sizeof(double) * (size_t)n), s1 = 0, ss = 0;
        const float *cp = MT_F32P(cimg);
        for (int64_t i = 0; i < n; i++) s1 += cp[i];
        double mean = s1 / (double)n;
        for (int64_t i = 0; i < n; i++) ss += (cp[i] - mean) * (cp[i] - mean);
        double sd = sqrt(ss / (double)n);
        /* nothing to crop in this dataset (median relative size 1): z-score over the whole volume */
        CHECK(!info.norm[0].use_mask);
        for (int64_t i = 0; i < n; i++) ref[i] = (cp[i] - mean) / sd;
        mt_test_allclose(img, ref, 1e-4, 1e-4, ids[k]);
        mt_tensor *back = NULL;
        CHECK(mt_preprocess_invert_labels(&back, lab, g) == MT_OK &&
              !memcmp(mt_tensor_data(back), mt_tensor_data(slab), (size_t)mt_tensor_numel(slab)));
        if (back) mt_tensor_release(back);
        free(ref);
        mt_tensor_release(cimg);
        mt_tensor_release(clab);
        mt_tensor_release(img);
        mt_tensor_release(lab);
        mt_tensor_release(src);
        mt_tensor_release(slab);
    }
    if (st == MT_OK) mt_fingerprint_free(&fp);
    mt_h5store_close(s);
    mt_msd_free(&ds);
}

int main(void) {
    mt_test_seed(11);
    MT_CHECK(mkdtemp(g_dir));
    for (int k = 0; k < NCASE; k++) make_case(&g_cases[k], k);
    const char *ds_good = strdup(write_dataset("synth", 0));
    const char *ds_bad = strdup(write_dataset("synth_bad", 1));

    mt_prepare_options o;
    mt_prepare_options_default(&o);
    o.progress = 0;
    o.samples_per_case = 4000;
    o.num_threads = 1;
    char *p1 = strdup(path_of("p1.h5")), *p3 = strdup(path_of("p3.h5"));
    mt_status st = mt_prepare_run(ds_good, p1, &o);
    CHECK_MSG(st == MT_OK, "prepare: %s", mt_error_msg());
    o.num_threads = 3;
    st = mt_prepare_run(ds_good, p3, &o);
    CHECK_MSG(st == MT_OK, "prepare (3 threads): %s", mt_error_msg());
    /* without the case cache (each case read twice) and without compression */
    char *p0 = strdup(path_of("p0.h5"));
    o.cache_bytes = 0;
    o.compress_level = 0;
    mt_status st0 = mt_prepare_run(ds_good, p0, &o);
    CHECK_MSG(st0 == MT_OK, "prepare (no cache, no compression): %s", mt_error_msg());
    CHECK(count_tmp_files() == 0);
    struct stat s0, s3;
    CHECK(stat(p0, &s0) == 0 && stat(p3, &s3) == 0 && s3.st_size < s0.st_size); /* compressed */
    if (st == MT_OK) {
        check_store(p3, g_median);
        check_same(p1, p3);
        if (st0 == MT_OK) check_same(p1, p0);
        test_errors(p3, ds_bad);
    }
    test_cli(ds_good, ds_bad);

    for (int k = 0; k < NCASE; k++) {
        mt_tensor_release(g_cases[k].image);
        mt_tensor_release(g_cases[k].label);
    }
    int have_real = mt_fs_is_dir(HIPPO);
    if (have_real) test_hippocampus();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free((char *)ds_good);
    free((char *)ds_bad);
    free(p0);
    free(p1);
    free(p3);
    if (!have_real) {
        printf("skipping the real-data part: %s is absent\n", HIPPO);
        return mt_test_failures ? mt_test_finish() : MT_TEST_SKIP;
    }
    return mt_test_finish();
}
