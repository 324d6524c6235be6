/* LABELS: unit */
/* data/: the synthetic phantom (config checks, determinism, labels, image
 * statistics, blur, dataset helper) and the patch sampler (shapes, content,
 * padding, flips keeping image and label aligned, foreground oversampling,
 * errors). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "data/phantom.h"
#include "data/sampler.h"
#include "mt_test.h"

static mt_phantom_config small_cfg(int num_classes) {
    mt_phantom_config c;
    mt_phantom_config_default(&c);
    c.shape[0] = 28;
    c.shape[1] = 33;
    c.shape[2] = 25;
    c.num_classes = num_classes;
    c.seed = 7;
    return c;
}

static int gen(const mt_phantom_config *cfg, int64_t idx, mt_tensor **im, mt_tensor **lb) {
    mt_status st = mt_phantom_generate(cfg, idx, im, lb);
    CHECK_MSG(st == MT_OK, "generate case %lld: %s", (long long)idx, mt_error_msg());
    return st == MT_OK;
}

static int same_bytes(const mt_tensor *a, const mt_tensor *b) {
    return mt_tensor_nbytes(a) == mt_tensor_nbytes(b) &&
           memcmp(mt_tensor_data(a), mt_tensor_data(b), mt_tensor_nbytes(a)) == 0;
}

static void test_config_errors(void) {
    mt_phantom_config c = small_cfg(3);
    CHECK(mt_phantom_config_check(&c) == MT_OK);
    c.num_classes = 1;
    CHECK(mt_phantom_config_check(&c) == MT_ERR_INVALID && strstr(mt_error_msg(), "num_classes"));
    c = small_cfg(3);
    c.shape[1] = 4;
    CHECK(mt_phantom_config_check(&c) == MT_ERR_INVALID && strstr(mt_error_msg(), "shape[1]"));
    c = small_cfg(3);
    c.noise = -0.5f;
    CHECK(mt_phantom_config_check(&c) == MT_ERR_INVALID && strstr(mt_error_msg(), "noise"));
    c = small_cfg(3);
    c.contrast = 0;
    CHECK(mt_phantom_config_check(&c) == MT_ERR_INVALID && strstr(mt_error_msg(), "contrast"));
    c = small_cfg(3);
    mt_tensor *im = (mt_tensor *)1, *lb = (mt_tensor *)1;
    CHECK(mt_phantom_generate(&c, -1, &im, &lb) == MT_ERR_INVALID && im == NULL && lb == NULL);
    c.blur_sigma = -1;
    CHECK(mt_phantom_generate(&c, 0, &im, &lb) == MT_ERR_INVALID && strstr(mt_error_msg(), "blur_sigma"));
    CHECK(strcmp(mt_phantom_class_name(0), "background") == 0);
    CHECK(strcmp(mt_phantom_class_name(2), "tail") == 0);
    CHECK(strcmp(mt_phantom_class_name(4), "organ2") == 0);
    CHECK(mt_phantom_class_name(MT_PHANTOM_MAX_CLASSES) == NULL && mt_phantom_class_name(-1) == NULL);
}

static void test_determinism(void) {
    mt_phantom_config c = small_cfg(4);
    mt_tensor *i1, *l1, *i2, *l2, *i3, *l3, *i4, *l4;
    if (!gen(&c, 2, &i1, &l1) || !gen(&c, 2, &i2, &l2) || !gen(&c, 3, &i3, &l3)) return;
    CHECK(i1->ndim == 4 && i1->shape[0] == 1 && i1->shape[1] == 28 && i1->shape[2] == 33 && i1->shape[3] == 25);
    CHECK(l1->dtype == MT_U8 && i1->dtype == MT_F32 && mt_tensor_same_shape(i1, l1));
    CHECK_MSG(same_bytes(i1, i2) && same_bytes(l1, l2), "same (seed, case) gives identical bytes");
    CHECK_MSG(!same_bytes(i1, i3) && !same_bytes(l1, l3), "different case differs");
    c.seed = 8;
    if (!gen(&c, 2, &i4, &l4)) return;
    CHECK_MSG(!same_bytes(i1, i4) && !same_bytes(l1, l4), "different seed differs");
    mt_tensor *rel[] = {i1, l1, i2, l2, i3, l3, i4, l4};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);

    /* independent of the thread count (the volume is large enough to run in parallel) */
    c = small_cfg(3);
    c.shape[0] = 40;
    c.shape[1] = 44;
    c.shape[2] = 36;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    int ok = gen(&c, 5, &i1, &l1);
    omp_set_num_threads(2);
    ok &= gen(&c, 5, &i2, &l2);
    omp_set_num_threads(nt);
    if (!ok) return;
    CHECK_MSG(same_bytes(i1, i2) && same_bytes(l1, l2), "1 thread vs 2 threads: identical bytes");
    mt_tensor_release(i1);
    mt_tensor_release(l1);
    mt_tensor_release(i2);
    mt_tensor_release(l2);
}

/* Fraction of voxels of label != 0 whose 6 in-volume neighbours all carry the same label. */
static double interior_fraction(const uint8_t *l, const int64_t *s, int cls, int64_t *count) {
    int64_t D = s[0], H = s[1], W = s[2], n = 0, inner = 0;
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                if (l[i] != cls) continue;
                n++;
                int same = 1;
                if (z > 0) same &= l[i - H * W] == cls;
                if (z < D - 1) same &= l[i + H * W] == cls;
                if (y > 0) same &= l[i - W] == cls;
                if (y < H - 1) same &= l[i + W] == cls;
                if (x > 0) same &= l[i - 1] == cls;
                if (x < W - 1) same &= l[i + 1] == cls;
                inner += same;
            }
    *count = n;
    return n ? (double)inner / n : 0;
}

/* Number of (a-voxel, b-voxel) 6-neighbour pairs. */
static int64_t contacts(const uint8_t *l, const int64_t *s, int a, int b) {
    int64_t D = s[0], H = s[1], W = s[2], n = 0;
    for (int64_t z = 0; z < D; z++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                int64_t i = (z * H + y) * W + x;
                if (l[i] != a) continue;
                if (z > 0) n += l[i - H * W] == b;
                if (z < D - 1) n += l[i + H * W] == b;
                if (y > 0) n += l[i - W] == b;
                if (y < H - 1) n += l[i + W] == b;
                if (x > 0) n += l[i - 1] == b;
                if (x < W - 1) n += l[i + 1] == b;
            }
    return n;
}

static void test_labels(void) {
    static const int ks[] = {2, 3, 4, 7};
    for (size_t q = 0; q < sizeof ks / sizeof *ks; q++) {
        int K = ks[q];
        mt_phantom_config c = small_cfg(K);
        c.shape[0] = 32;
        c.shape[1] = 36;
        c.shape[2] = 30;
        for (int64_t idx = 0; idx < 4; idx++) {
            mt_tensor *im, *lb;
            if (!gen(&c, idx, &im, &lb)) return;
            const uint8_t *l = mt_tensor_data(lb);
            int64_t n = mt_tensor_numel(lb), cnt[256] = {0};
            for (int64_t i = 0; i < n; i++) cnt[l[i]]++;
            int64_t out_of_range = 0;
            for (int v = K; v < 256; v++) out_of_range += cnt[v];
            CHECK_MSG(out_of_range == 0, "K=%d case %lld: %lld labels >= K", K, (long long)idx,
                      (long long)out_of_range);
            CHECK_MSG(cnt[0] > 0.7 * n, "K=%d case %lld: background fraction %.3f", K, (long long)idx,
                      (double)cnt[0] / n);
            for (int cls = 1; cls < K; cls++) {
                double f = (double)cnt[cls] / n;
                CHECK_MSG(f > 4e-4 && f < 0.15, "K=%d case %lld: class %d volume fraction %.5f", K,
                          (long long)idx, cls, f);
                int64_t m;
                double inner = interior_fraction(l, c.shape, cls, &m);
                /* smooth compact structures, not speckle (a random field of this density would have
                 * ~f^6 interior voxels); structures here are 2-8 voxels thick, lesions the thinnest */
                double want = (cls - 1) % 3 == 0 ? 0.35 : (cls - 1) % 3 == 1 ? 0.25 : 0.05;
                CHECK_MSG(inner > want, "K=%d case %lld class %d: interior fraction %.3f", K, (long long)idx,
                          cls, inner);
            }
            if (K >= 3)
                CHECK_MSG(contacts(l, c.shape, 2, 1) > 0, "K=%d case %lld: tail touches organ", K,
                          (long long)idx);
            if (K >= 4) { /* lesion nested in the organ */
                int64_t with_organ = contacts(l, c.shape, 3, 1), with_bg = contacts(l, c.shape, 3, 0);
                CHECK_MSG(with_organ > 4 * with_bg, "K=%d case %lld: lesion borders organ %lld, background %lld",
                          K, (long long)idx, (long long)with_organ, (long long)with_bg);
            }
            mt_tensor_release(im);
            mt_tensor_release(lb);
        }
    }
}

/* Best Dice of any intensity interval [a, b] for class cls (an oracle threshold classifier). */
static double best_interval_dice(const float *x, const uint8_t *l, int64_t n, int cls) {
    enum { NB = 160 };
    double lo = 1e30, hi = -1e30;
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    static double hin[NB], hall[NB];
    memset(hin, 0, sizeof hin);
    memset(hall, 0, sizeof hall);
    double tot = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = (int)((x[i] - lo) / (hi - lo + 1e-9) * NB);
        hall[b]++;
        if (l[i] == cls) {
            hin[b]++;
            tot++;
        }
    }
    double best = 0;
    for (int a = 0; a < NB; a++) {
        double tp = 0, all = 0;
        for (int b = a; b < NB; b++) {
            tp += hin[b];
            all += hall[b];
            double d = 2 * tp / (all + tot);
            best = d > best ? d : best;
        }
    }
    return best;
}

static void class_means(double *mean, const mt_tensor *im, const mt_tensor *lb, int K) {
    const float *x = mt_tensor_data(im);
    const uint8_t *l = mt_tensor_data(lb);
    double cnt[MT_PHANTOM_MAX_CLASSES] = {0};
    for (int k = 0; k < K; k++) mean[k] = 0;
    for (int64_t i = 0; i < mt_tensor_numel(lb); i++) {
        mean[l[i]] += x[i];
        cnt[l[i]]++;
    }
    for (int k = 0; k < K; k++) mean[k] /= cnt[k];
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median of the background voxels above `floor` (tissue, not air). */
static double tissue_median(const mt_tensor *im, const mt_tensor *lb, double floor) {
    const float *x = mt_tensor_data(im);
    const uint8_t *l = mt_tensor_data(lb);
    int64_t n = mt_tensor_numel(lb), m = 0;
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        if (!l[i] && x[i] > floor) v[m++] = x[i];
    qsort(v, (size_t)m, sizeof *v, cmp_float);
    double med = m ? v[m / 2] : 0;
    free(v);
    return med;
}

static void test_image_stats(void) {
    /* z-score */
    mt_phantom_config c = small_cfg(4);
    mt_tensor *im, *lb;
    if (!gen(&c, 1, &im, &lb)) return;
    const float *x = mt_tensor_data(im);
    int64_t n = mt_tensor_numel(im);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    for (int64_t i = 0; i < n; i++) s2 += (x[i] - s / n) * (x[i] - s / n);
    CHECK_NEAR(s / n, 0.0, 1e-4);
    CHECK_NEAR(sqrt(s2 / n), 1.0, 1e-3);
    /* moderate overlap: the organ is mostly but not perfectly separable by intensity,
     * the tail needs context (measured at this size: about 0.8 and 0.3) */
    double d_organ = 0, d_tail = 0;
    for (int64_t idx = 0; idx < 3; idx++) {
        mt_tensor *a, *b;
        mt_phantom_config d = small_cfg(3);
        if (!gen(&d, idx, &a, &b)) return;
        d_organ += best_interval_dice(mt_tensor_data(a), mt_tensor_data(b), n, 1) / 3;
        d_tail += best_interval_dice(mt_tensor_data(a), mt_tensor_data(b), n, 2) / 3;
        mt_tensor_release(a);
        mt_tensor_release(b);
    }
    printf("intensity-only oracle Dice (best interval): organ %.3f, tail %.3f\n", d_organ, d_tail);
    CHECK_MSG(d_organ > 0.55 && d_organ < 0.97, "organ intensity-only oracle Dice %.3f", d_organ);
    CHECK_MSG(d_tail > 0.02 && d_tail < 0.6, "tail intensity-only oracle Dice %.3f", d_tail);
    mt_tensor_release(im);
    mt_tensor_release(lb);

    /* raw intensities: organ brighter than tail brighter than tissue, lesion darker than organ,
     * second-group organ darker than tissue */
    c = small_cfg(7);
    c.shape[0] = 36;
    c.shape[1] = 36;
    c.shape[2] = 32;
    c.normalize = 0;
    if (!gen(&c, 0, &im, &lb)) return;
    double mean[MT_PHANTOM_MAX_CLASSES];
    class_means(mean, im, lb, 7);
    double med = tissue_median(im, lb, 0.5);
    CHECK_MSG(med > 0.75 && med < 1.25, "tissue median %.3f", med);
    CHECK_MSG(mean[1] > mean[2] + 0.05 && mean[2] > med + 0.1, "organ %.3f tail %.3f tissue %.3f", mean[1],
              mean[2], med);
    CHECK_MSG(mean[3] < mean[1] - 0.2, "lesion %.3f organ %.3f", mean[3], mean[1]);
    CHECK_MSG(mean[4] < med - 0.15, "organ2 %.3f tissue %.3f", mean[4], med);
    mt_tensor_release(im);
    mt_tensor_release(lb);

    /* contrast scales the organ-tissue difference; labels unchanged */
    c = small_cfg(3);
    c.normalize = 0;
    c.noise = 0;
    c.texture = 0;
    c.bias = 0;
    c.blur_sigma = 0;
    mt_tensor *i2, *l2;
    if (!gen(&c, 4, &im, &lb)) return;
    c.contrast = 2;
    if (!gen(&c, 4, &i2, &l2)) return;
    CHECK(same_bytes(lb, l2));
    double m1[3], m2[3];
    class_means(m1, im, lb, 3);
    class_means(m2, i2, l2, 3);
    double t1 = tissue_median(im, lb, 0.5), t2 = tissue_median(i2, l2, 0.5);
    CHECK_NEAR(t1, 1.0, 1e-6); /* no texture, bias or noise: tissue is exactly 1 */
    CHECK_NEAR(t2, 1.0, 1e-6);
    CHECK_NEAR((m2[1] - t2) / (m1[1] - t1), 2.0, 1e-4);
    CHECK_NEAR((m2[2] - t2) / (m1[2] - t1), 2.0, 1e-4);
    /* every organ voxel has the same value without texture/bias/blur/noise */
    {
        const float *y = mt_tensor_data(im);
        const uint8_t *l = mt_tensor_data(lb);
        double lo = 1e9, hi = -1e9;
        for (int64_t i = 0; i < mt_tensor_numel(lb); i++)
            if (l[i] == 1) {
                lo = y[i] < lo ? y[i] : lo;
                hi = y[i] > hi ? y[i] : hi;
            }
        CHECK_MSG(hi - lo < 1e-6 && lo > 1.2, "organ constant %.6f .. %.6f", lo, hi);
    }
    mt_tensor_release(i2);
    mt_tensor_release(l2);

    /* bias field alone: tissue spans a smooth multiplicative range within [e^-b, e^b] */
    c.contrast = 1;
    c.bias = 0.3f;
    if (!gen(&c, 4, &i2, &l2)) return;
    {
        const float *y = mt_tensor_data(i2);
        const uint8_t *l = mt_tensor_data(l2);
        double lo = 1e9, hi = -1e9;
        for (int64_t i = 0; i < mt_tensor_numel(l2); i++)
            if (!l[i] && y[i] > 0.5) {
                lo = y[i] < lo ? y[i] : lo;
                hi = y[i] > hi ? y[i] : hi;
            }
        CHECK_MSG(hi / lo > 1.1 && lo >= exp(-0.3) - 1e-5 && hi <= exp(0.3) + 1e-5, "bias range %.4f .. %.4f",
                  lo, hi);
    }
    mt_tensor_release(i2);
    mt_tensor_release(l2);

    /* noise: same case with and without noise differs by ~N(0, sigma) in tissue (Rician ~ Gaussian at SNR 10) */
    c.bias = 0.25f;
    c.texture = 0.1f;
    c.blur_sigma = 0.7f;
    c.noise = 0;
    if (!gen(&c, 4, &i2, &l2)) return;
    mt_tensor_release(im);
    mt_tensor_release(lb);
    c.noise = 0.1f;
    if (!gen(&c, 4, &im, &lb)) return;
    CHECK(same_bytes(lb, l2));
    {
        const float *a = mt_tensor_data(im), *b = mt_tensor_data(i2);
        double sd = 0, sm = 0, m = 0;
        for (int64_t i = 0; i < mt_tensor_numel(im); i++)
            if (b[i] > 0.6) {
                sm += a[i] - b[i];
                sd += (a[i] - b[i]) * (a[i] - b[i]);
                m++;
            }
        sm /= m;
        double sdev = sqrt(sd / m - sm * sm);
        CHECK_NEAR(sdev, 0.1, 0.008);
        CHECK_NEAR(sm, 0.0, 0.01);
    }
    mt_tensor_release(im);
    mt_tensor_release(lb);
    mt_tensor_release(i2);
    mt_tensor_release(l2);
}

static void test_blur(void) {
    const int64_t s[3] = {7, 9, 11};
    mt_tensor *t = mt_test_rand(3, s, -1, 2);
    double *in = mt_test_to_f64(t);
    double sigma = 1.3;
    int R = (int)ceil(3 * sigma);
    double k[64], ks = 0;
    for (int a = -R; a <= R; a++) ks += k[a + R] = exp(-0.5 * a * a / (sigma * sigma));
    for (int a = -R; a <= R; a++) k[a + R] /= ks;
    double *ref = calloc(7 * 9 * 11, sizeof *ref);
#define CL(v, n) ((v) < 0 ? 0 : (v) >= (n) ? (n) - 1 : (v))
    for (int z = 0; z < 7; z++)
        for (int y = 0; y < 9; y++)
            for (int x = 0; x < 11; x++) {
                double acc = 0;
                for (int a = -R; a <= R; a++)
                    for (int b = -R; b <= R; b++)
                        for (int c = -R; c <= R; c++)
                            acc += k[a + R] * k[b + R] * k[c + R] *
                                   in[(CL(z + a, 7) * 9 + CL(y + b, 9)) * 11 + CL(x + c, 11)];
                ref[(z * 9 + y) * 11 + x] = acc;
            }
#undef CL
    mt_phantom_blur(MT_F32P(t), s, sigma);
    mt_test_allclose(t, ref, 1e-5, 1e-5, "blur vs naive 3D convolution");
    mt_tensor *u = mt_tensor_clone(t);
    mt_phantom_blur(MT_F32P(u), s, 0);
    CHECK(same_bytes(t, u));
    free(in);
    free(ref);
    mt_tensor_release(t);
    mt_tensor_release(u);
}

static void test_dataset(void) {
    mt_phantom_config c = small_cfg(3);
    mt_phantom_dataset ds;
    CHECK(mt_phantom_dataset_init(&ds, &c, 5, 0) == MT_ERR_INVALID);
    if (mt_phantom_dataset_init(&ds, &c, 5, 3) != MT_OK) {
        CHECK_MSG(0, "dataset init: %s", mt_error_msg());
        return;
    }
    CHECK(ds.num_cases == 3 && ds.first_case == 5);
    mt_tensor *im, *lb;
    if (gen(&c, 6, &im, &lb)) {
        CHECK(same_bytes(ds.images[1], im) && same_bytes(ds.labels[1], lb));
        CHECK(!same_bytes(ds.images[0], im));
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    mt_phantom_dataset_free(&ds);
    CHECK(ds.num_cases == 0 && ds.images == NULL);
}

/* ------------------------------------------------------------ sampler --- */

/* label = f(image channel 0), with f(pad value 0) = 0 */
static uint8_t label_of(float v) { return (uint8_t)((v > 0.35f) + (v > 0.7f)); }

static mt_tensor *label_from_image(const mt_tensor *im) {
    int64_t D = im->shape[1], H = im->shape[2], W = im->shape[3];
    mt_tensor *lb = mt_tensor_new(MT_U8, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
    const float *x = mt_tensor_data(im);
    uint8_t *l = mt_tensor_data(lb);
    for (int64_t i = 0; i < D * H * W; i++) l[i] = label_of(x[i]);
    return lb;
}

static void test_sampler_content(void) {
    mt_tensor *im[2] = {mt_test_rand(MT_SHAPE(2, 9, 11, 13), 0.01f, 1), mt_test_rand(MT_SHAPE(2, 12, 7, 10), 0.01f, 1)};
    mt_tensor *lb[2] = {label_from_image(im[0]), label_from_image(im[1])};
    mt_sampler_config cfg;
    mt_sampler_config_default(&cfg);
    cfg.patch[0] = 8;
    cfg.patch[1] = 14; /* larger than both volumes: padding */
    cfg.patch[2] = 6;
    cfg.batch_size = 5;
    cfg.num_classes = 3;
    cfg.fg_prob = 0.5;
    cfg.pad_value = 0;
    mt_sampler s;
    CHECK(mt_sampler_init(&s, &cfg) == MT_OK);
    for (int k = 0; k < 2; k++) CHECK(mt_sampler_add_case(&s, im[k], lb[k]) == MT_OK);
    CHECK(s.num_cases == 2 && s.channels == 2);
    mt_rng rng;
    mt_rng_init(&rng, 99);
    int64_t flips[3] = {0}, fgc = 0, total = 0, bad_content = 0, bad_align = 0, bad_fg = 0, padded = 0;
    int cases_seen[2] = {0};
    const int64_t *p = cfg.patch;
    for (int it = 0; it < 200; it++) {
        mt_tensor *bi, *bl;
        mt_patch_info info[5];
        mt_rng before = rng;
        if (mt_sampler_batch(&bi, &bl, &s, &rng, info) != MT_OK) {
            CHECK_MSG(0, "batch: %s", mt_error_msg());
            return;
        }
        if (it == 0) {
            CHECK(bi->ndim == 5 && bi->shape[0] == 5 && bi->shape[1] == 2 && bi->shape[2] == 8 && bi->shape[3] == 14 &&
                  bi->shape[4] == 6);
            CHECK(bl->ndim == 5 && bl->shape[0] == 5 && bl->shape[1] == 1 && bl->shape[2] == 8 && bl->dtype == MT_U8);
            /* same rng state -> same batch */
            mt_tensor *ci, *cl;
            CHECK(mt_sampler_batch(&ci, &cl, &s, &before, NULL) == MT_OK);
            CHECK(same_bytes(ci, bi) && same_bytes(cl, bl) && before.offset == rng.offset);
            mt_tensor_release(ci);
            mt_tensor_release(cl);
        }
        const float *x = mt_tensor_data(bi);
        const uint8_t *y = mt_tensor_data(bl);
        for (int b = 0; b < 5; b++) {
            const mt_patch_info *f = &info[b];
            const mt_tensor *src = im[f->case_index], *srl = lb[f->case_index];
            int64_t D = src->shape[1], H = src->shape[2], W = src->shape[3];
            const float *sx = mt_tensor_data(src);
            const uint8_t *sl = mt_tensor_data(srl);
            cases_seen[f->case_index]++;
            total++;
            for (int a = 0; a < 3; a++) flips[a] += f->flipped[a];
            for (int64_t i = 0; i < p[0]; i++)
                for (int64_t j = 0; j < p[1]; j++)
                    for (int64_t k = 0; k < p[2]; k++) {
                        int64_t z = f->start[0] + (f->flipped[0] ? p[0] - 1 - i : i);
                        int64_t yy = f->start[1] + (f->flipped[1] ? p[1] - 1 - j : j);
                        int64_t xx = f->start[2] + (f->flipped[2] ? p[2] - 1 - k : k);
                        int in = z >= 0 && z < D && yy >= 0 && yy < H && xx >= 0 && xx < W;
                        padded += !in;
                        int64_t o = (i * p[1] + j) * p[2] + k;
                        uint8_t lv = y[b * p[0] * p[1] * p[2] + o];
                        for (int ch = 0; ch < 2; ch++) {
                            float v = x[(b * 2 + ch) * p[0] * p[1] * p[2] + o];
                            float want = in ? sx[((ch * D + z) * H + yy) * W + xx] : 0.0f;
                            bad_content += v != want;
                        }
                        bad_content += lv != (in ? sl[(z * H + yy) * W + xx] : 0);
                        bad_align += lv != label_of(x[(b * 2 + 0) * p[0] * p[1] * p[2] + o]);
                    }
            if (f->fg_class > 0) {
                fgc++;
                int64_t idx[3];
                int inside = 1;
                for (int a = 0; a < 3; a++) {
                    idx[a] = f->flipped[a] ? f->start[a] + p[a] - 1 - f->fg_voxel[a] : f->fg_voxel[a] - f->start[a];
                    inside &= idx[a] >= 0 && idx[a] < p[a];
                }
                bad_fg += !inside || y[b * p[0] * p[1] * p[2] + (idx[0] * p[1] + idx[1]) * p[2] + idx[2]] != f->fg_class;
            }
        }
        mt_tensor_release(bi);
        mt_tensor_release(bl);
    }
    CHECK_MSG(bad_content == 0, "%lld patch voxels differ from the volume", (long long)bad_content);
    CHECK_MSG(bad_align == 0, "%lld patch voxels lost label = f(image) alignment", (long long)bad_align);
    CHECK_MSG(bad_fg == 0, "%lld foreground-centred patches miss their voxel", (long long)bad_fg);
    CHECK_MSG(padded > 0, "padding exercised");
    for (int a = 0; a < 3; a++)
        CHECK_MSG(flips[a] > 0.4 * total && flips[a] < 0.6 * total, "axis %d flipped %lld of %lld", a,
                  (long long)flips[a], (long long)total);
    CHECK_MSG(fgc > 0.4 * total && fgc < 0.6 * total, "fg-centred %lld of %lld", (long long)fgc, (long long)total);
    CHECK(cases_seen[0] > 0.35 * total && cases_seen[1] > 0.35 * total);
    mt_sampler_free(&s);

    /* flips off: never flipped, patch smaller than volume: never padded */
    cfg.flip[0] = cfg.flip[1] = cfg.flip[2] = 0;
    cfg.patch[1] = 5;
    CHECK(mt_sampler_init(&s, &cfg) == MT_OK);
    for (int k = 0; k < 2; k++) CHECK(mt_sampler_add_case(&s, im[k], lb[k]) == MT_OK);
    int64_t nflip = 0, npad = 0;
    for (int it = 0; it < 100; it++) {
        mt_tensor *bi, *bl;
        mt_patch_info info[5];
        CHECK(mt_sampler_batch(&bi, &bl, &s, &rng, info) == MT_OK);
        for (int b = 0; b < 5; b++)
            for (int a = 0; a < 3; a++) {
                int64_t n = lb[info[b].case_index]->shape[1 + a];
                nflip += info[b].flipped[a];
                npad += info[b].start[a] < 0 || info[b].start[a] + cfg.patch[a] > n;
            }
        mt_tensor_release(bi);
        mt_tensor_release(bl);
    }
    CHECK(nflip == 0 && npad == 0);
    mt_sampler_free(&s);
    for (int k = 0; k < 2; k++) {
        mt_tensor_release(im[k]);
        mt_tensor_release(lb[k]);
    }
}

static int patch_has_fg(const uint8_t *l, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (l[i]) return 1;
    return 0;
}

static void test_sampler_fg_rate(void) {
    mt_phantom_config pc = small_cfg(3);
    pc.shape[0] = pc.shape[1] = pc.shape[2] = 32;
    mt_phantom_dataset ds;
    if (mt_phantom_dataset_init(&ds, &pc, 0, 4) != MT_OK) {
        CHECK_MSG(0, "dataset: %s", mt_error_msg());
        return;
    }
    mt_sampler_config cfg;
    mt_sampler_config_default(&cfg);
    cfg.patch[0] = cfg.patch[1] = cfg.patch[2] = 6;
    cfg.batch_size = 10;
    cfg.num_classes = 3;
    const int64_t pv = 6 * 6 * 6;
    double rate[2];
    int64_t forced = 0, per_class[3] = {0}, draws = 4000;
    for (int pass = 0; pass < 2; pass++) {
        cfg.fg_prob = pass == 0 ? 0.0 : 0.33;
        mt_sampler s;
        CHECK(mt_sampler_init(&s, &cfg) == MT_OK);
        for (int k = 0; k < ds.num_cases; k++) CHECK(mt_sampler_add_case(&s, ds.images[k], ds.labels[k]) == MT_OK);
        mt_rng rng;
        mt_rng_init_stream(&rng, 3, 1, 2, (uint64_t)pass);
        int64_t with_fg = 0;
        for (int64_t it = 0; it < draws / cfg.batch_size; it++) {
            mt_tensor *bi, *bl;
            mt_patch_info info[10];
            CHECK(mt_sampler_batch(&bi, &bl, &s, &rng, info) == MT_OK);
            const uint8_t *l = mt_tensor_data(bl);
            for (int b = 0; b < 10; b++) {
                int has = patch_has_fg(l + b * pv, pv);
                with_fg += has;
                if (info[b].fg_class > 0) {
                    forced++;
                    per_class[info[b].fg_class]++;
                    if (!has) CHECK_MSG(0, "forced patch without foreground");
                }
            }
            mt_tensor_release(bi);
            mt_tensor_release(bl);
        }
        rate[pass] = (double)with_fg / draws;
        if (pass == 0) CHECK(forced == 0);
        mt_sampler_free(&s);
    }
    double p0 = rate[0], want = 0.33 + 0.67 * p0;
    printf("fg oversampling: random patches with fg %.3f; fg_prob 0.33: forced %.3f, with fg %.3f (expected %.3f)\n",
           p0, (double)forced / draws, rate[1], want);
    CHECK_MSG(p0 < 0.5, "random 6^3 patches rarely hold foreground (%.3f)", p0);
    CHECK_NEAR((double)forced / draws, 0.33, 4 * sqrt(0.33 * 0.67 / draws));
    CHECK_NEAR(rate[1], want, 0.035);
    CHECK_NEAR((double)per_class[1] / forced, 0.5, 0.08); /* classes chosen uniformly */

    /* fg_prob 1: always foreground; a case without any falls back to a uniform patch */
    cfg.fg_prob = 1.0;
    mt_sampler s;
    CHECK(mt_sampler_init(&s, &cfg) == MT_OK);
    mt_tensor *empty = mt_tensor_zeros(MT_U8, MT_SHAPE(1, 32, 32, 32), MT_DEVICE_CPU);
    CHECK(mt_sampler_add_case(&s, ds.images[0], empty) == MT_OK);
    CHECK(mt_sampler_add_case(&s, ds.images[1], ds.labels[1]) == MT_OK);
    mt_rng rng;
    mt_rng_init(&rng, 5);
    int64_t bad = 0;
    float *pi = malloc(sizeof(float) * pv);
    uint8_t *pl = malloc(pv);
    for (int it = 0; it < 200; it++) {
        mt_patch_info info;
        mt_sampler_patch(pi, pl, &s, it & 1, 1, &rng, &info);
        if (it & 1) bad += !(info.fg_class > 0 && patch_has_fg(pl, pv));
        else bad += info.fg_class != 0;
    }
    CHECK(bad == 0);
    free(pi);
    free(pl);
    mt_tensor_release(empty);
    mt_sampler_free(&s);
    mt_phantom_dataset_free(&ds);
}

static void test_sampler_errors(void) {
    mt_sampler_config cfg;
    mt_sampler_config_default(&cfg);
    mt_sampler s;
    cfg.patch[2] = 0;
    CHECK(mt_sampler_init(&s, &cfg) == MT_ERR_INVALID && strstr(mt_error_msg(), "patch[2]"));
    mt_sampler_config_default(&cfg);
    cfg.batch_size = 0;
    CHECK(mt_sampler_init(&s, &cfg) == MT_ERR_INVALID && strstr(mt_error_msg(), "batch_size"));
    mt_sampler_config_default(&cfg);
    cfg.fg_prob = 1.5;
    CHECK(mt_sampler_init(&s, &cfg) == MT_ERR_INVALID && strstr(mt_error_msg(), "fg_prob"));
    mt_sampler_config_default(&cfg);
    cfg.num_classes = 1;
    CHECK(mt_sampler_init(&s, &cfg) == MT_ERR_INVALID && strstr(mt_error_msg(), "num_classes"));
    mt_sampler_config_default(&cfg);
    cfg.num_classes = 3;
    CHECK(mt_sampler_init(&s, &cfg) == MT_OK);
    mt_tensor *bi, *bl;
    CHECK(mt_sampler_batch(&bi, &bl, &s, &(mt_rng){1, 0}, NULL) == MT_ERR_INVALID && bi == NULL);
    mt_tensor *im = mt_test_rand(MT_SHAPE(1, 5, 6, 7), 0, 1);
    mt_tensor *lb = mt_tensor_zeros(MT_U8, MT_SHAPE(1, 5, 6, 7), MT_DEVICE_CPU);
    mt_tensor_set_flat(lb, 17, 3); /* out of range for 3 classes */
    CHECK(mt_sampler_add_case(&s, im, lb) == MT_ERR_INVALID && strstr(mt_error_msg(), "label value 3"));
    mt_tensor_set_flat(lb, 17, 2);
    mt_tensor *im3 = mt_test_rand(MT_SHAPE(5, 6, 7), 0, 1);
    CHECK(mt_sampler_add_case(&s, im3, lb) == MT_ERR_INVALID && strstr(mt_error_msg(), "image"));
    mt_tensor *lbf = mt_tensor_zeros(MT_F32, MT_SHAPE(1, 5, 6, 7), MT_DEVICE_CPU);
    CHECK(mt_sampler_add_case(&s, im, lbf) == MT_ERR_INVALID && strstr(mt_error_msg(), "label"));
    mt_tensor *lbs = mt_tensor_zeros(MT_U8, MT_SHAPE(1, 5, 6, 8), MT_DEVICE_CPU);
    CHECK(mt_sampler_add_case(&s, im, lbs) == MT_ERR_INVALID && strstr(mt_error_msg(), "differ in size"));
    CHECK(s.num_cases == 0);
    CHECK(mt_sampler_add_case(&s, im, lb) == MT_OK);
    mt_tensor *im2 = mt_test_rand(MT_SHAPE(2, 5, 6, 7), 0, 1);
    CHECK(mt_sampler_add_case(&s, im2, lb) == MT_ERR_INVALID && strstr(mt_error_msg(), "channels"));
    CHECK(s.num_cases == 1 && s.cases[0].num_present == 1 && s.cases[0].present[0] == 2);
    mt_sampler_free(&s);
    mt_tensor *rel[] = {im, lb, im3, lbf, lbs, im2};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

int main(void) {
    test_config_errors();
    test_determinism();
    test_labels();
    test_image_stats();
    test_blur();
    test_dataset();
    test_sampler_content();
    test_sampler_fg_rate();
    test_sampler_errors();
    return mt_test_finish();
}
