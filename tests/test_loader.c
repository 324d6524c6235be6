/* LABELS: unit */
/* data/loader: batches are a function of (seed, rank, step) only:
 * bit-identical for 1, 2 and 3 workers, across runs, and against the
 * single-threaded mt_loader_make_batch; different rank or seed -> different
 * batches; start_step = k resumes with batch k; the documented order of
 * draws; the allocation hook; error propagation without hangs; shutdown with
 * batches queued or in flight (run under ASan for leaks). An alarm turns
 * any hang into a failure. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/loader.h"
#include "data/phantom.h"
#include "mt_test.h"

#define K 7 /* steps compared */

static mt_phantom_dataset g_ds;
static mt_sampler g_s;

static void setup(void) {
    mt_phantom_config pc;
    mt_phantom_config_default(&pc);
    pc.shape[0] = 30;
    pc.shape[1] = 35;
    pc.shape[2] = 27;
    pc.num_classes = 3;
    pc.seed = 4;
    MT_CHECK(mt_phantom_dataset_init(&g_ds, &pc, 0, 3) == MT_OK);
    mt_sampler_config sc;
    mt_sampler_config_default(&sc);
    sc.patch[0] = 17;
    sc.patch[1] = 20;
    sc.patch[2] = 17;
    sc.batch_size = 3;
    sc.num_classes = 3;
    sc.pad_value = -0.5f;
    MT_CHECK(mt_sampler_init(&g_s, &sc) == MT_OK);
    for (int i = 0; i < g_ds.num_cases; i++)
        MT_CHECK(mt_sampler_add_case(&g_s, g_ds.images[i], g_ds.labels[i]) == MT_OK);
}

/* every path exercised: resampling, elastic, rot90, all intensity transforms */
static void busy_augment(mt_augment_config *a) {
    mt_augment_config_default(a);
    a->p_rotation = a->p_scale = 0.5;
    a->p_elastic = 0.3;
    a->p_rot90 = 0.5;
    a->p_noise = a->p_blur = a->p_brightness = a->p_contrast = a->p_lowres = 0.4;
    a->p_gamma_inverted = a->p_gamma = 0.4;
}

static int same_batch(mt_tensor *a, mt_tensor *b) {
    return a && b && mt_tensor_nbytes(a) == mt_tensor_nbytes(b) &&
           memcmp(mt_tensor_data(a), mt_tensor_data(b), mt_tensor_nbytes(a)) == 0;
}

static mt_tensor *g_ref_im[K], *g_ref_lb[K];

static void test_reference_batches(const mt_augment_config *aug) {
    for (int k = 0; k < K; k++) {
        mt_status st = mt_loader_make_batch(&g_ref_im[k], &g_ref_lb[k], &g_s, aug, 1234, 0, k);
        CHECK_MSG(st == MT_OK, "make_batch %d: %s", k, mt_error_msg());
    }
    CHECK(g_ref_im[0]->ndim == 5 && g_ref_im[0]->shape[0] == 3 && g_ref_im[0]->shape[1] == 1 &&
          g_ref_im[0]->shape[2] == 17 && g_ref_im[0]->shape[3] == 20 && g_ref_im[0]->shape[4] == 17);
    CHECK(g_ref_lb[0]->dtype == MT_U8 && g_ref_lb[0]->shape[1] == 1 && g_ref_lb[0]->shape[3] == 20);
    /* labels in range, foreground present somewhere, batches differ from step to step */
    int64_t fg = 0, bad = 0;
    for (int k = 0; k < K; k++) {
        const uint8_t *l = mt_tensor_data(g_ref_lb[k]);
        for (int64_t i = 0; i < mt_tensor_numel(g_ref_lb[k]); i++) {
            fg += l[i] > 0;
            bad += l[i] > 2;
        }
    }
    CHECK(fg > 0 && bad == 0);
    CHECK(!same_batch(g_ref_im[0], g_ref_im[1]));
    /* the same call again: same bits */
    mt_tensor *im, *lb;
    CHECK(mt_loader_make_batch(&im, &lb, &g_s, aug, 1234, 0, 3) == MT_OK);
    CHECK(same_batch(im, g_ref_im[3]) && same_batch(lb, g_ref_lb[3]));
    mt_tensor_release(im);
    mt_tensor_release(lb);
}

static void test_worker_counts(const mt_augment_config *aug) {
    const int workers[] = {1, 2, 3, 2}, caps[] = {1, 2, 4, 3}; /* the last repeats a run */
    for (int w = 0; w < 4; w++) {
        mt_loader_config cfg;
        mt_loader_config_default(&cfg);
        cfg.num_workers = workers[w];
        cfg.queue_capacity = caps[w];
        mt_loader *L;
        mt_status st = mt_loader_init(&L, &cfg, &g_s, aug, 1234, 0, 0);
        CHECK_MSG(st == MT_OK, "init: %s", mt_error_msg());
        if (st != MT_OK) continue;
        int same = 1;
        for (int k = 0; k < K; k++) {
            CHECK(mt_loader_step(L) == k);
            mt_tensor *im, *lb;
            st = mt_loader_next(L, &im, &lb);
            CHECK_MSG(st == MT_OK, "next: %s", mt_error_msg());
            same &= st == MT_OK && same_batch(im, g_ref_im[k]) && same_batch(lb, g_ref_lb[k]);
            mt_tensor_release(im);
            mt_tensor_release(lb);
        }
        CHECK_MSG(same, "%d workers (capacity %d): batches differ from the reference", workers[w], caps[w]);
        mt_loader_stats s;
        mt_loader_get_stats(L, &s);
        CHECK(s.batches == K && s.produced >= K && s.produced <= K + caps[w] && s.produce_s > 0 && s.produce_cpu_s > 0);
        mt_loader_free(L); /* batches still queued / in flight */
    }
}

static void test_rank_seed_resume(const mt_augment_config *aug) {
    mt_loader_config cfg;
    mt_loader_config_default(&cfg);
    mt_tensor *im, *lb;
    /* rank 1 and another seed: different batches */
    mt_loader *L;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 1, 0) == MT_OK);
    CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
    CHECK(!same_batch(im, g_ref_im[0]));
    mt_tensor_release(im);
    mt_tensor_release(lb);
    mt_loader_free(L);
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1235, 0, 0) == MT_OK);
    CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
    CHECK(!same_batch(im, g_ref_im[0]));
    mt_tensor_release(im);
    mt_tensor_release(lb);
    mt_loader_free(L);
    /* resume at step 4: batches 4, 5, 6 of the run from 0 */
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 0, 4) == MT_OK);
    for (int k = 4; k < K; k++) {
        CHECK(mt_loader_step(L) == k);
        CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
        CHECK_MSG(same_batch(im, g_ref_im[k]) && same_batch(lb, g_ref_lb[k]), "resumed batch %d differs", k);
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    CHECK(mt_loader_step(L) == K);
    mt_loader_free(L);
}

/* The documented order of draws on the batch stream and the wiring of the
 * sampler's placement into the spatial paths. With no augmentation a batch
 * is exactly what mt_sampler_patch gives for that sequence of draws; with a
 * zero-angle rotation (the resampling path from the case volume, sampler
 * flips included) too; with flips on every axis it is that patch mirrored. */
static void test_draw_order(void) {
    const int64_t *P = g_s.cfg.patch, vol = P[0] * P[1] * P[2];
    float *ei = malloc(sizeof(float) * (size_t)vol);
    uint8_t *el = malloc((size_t)vol);
    for (int mode = 0; mode < 3; mode++) {
        mt_augment_config aug;
        mt_augment_config_none(&aug);
        if (mode == 1) {
            aug.p_rotation = 1.0;
            aug.rotation_deg[0] = aug.rotation_deg[1] = aug.rotation_deg[2] = 0.0;
        } else if (mode == 2) {
            aug.p_flip[0] = aug.p_flip[1] = aug.p_flip[2] = 1.0;
        }
        mt_tensor *im, *lb;
        CHECK(mt_loader_make_batch(&im, &lb, &g_s, &aug, 77, 2, 5 + mode) == MT_OK);
        mt_rng r;
        mt_rng_init_stream(&r, 77, 2, 5 + mode, MT_LOADER_STREAM_TAG);
        int ok = 1, flipped_seen = 0;
        for (int b = 0; b < g_s.cfg.batch_size; b++) {
            mt_augment_params p;
            mt_augment_draw(&p, &aug, 1, P, &r);
            ok &= mode != 1 || mt_augment_needs_resample(&p);
            int ci = (int)mt_rng_randint(&r, 0, g_s.num_cases);
            int fg = mt_rng_uniform(&r) < g_s.cfg.fg_prob;
            mt_patch_info info;
            mt_sampler_patch(ei, el, &g_s, ci, fg, &r, &info);
            flipped_seen += info.flipped[0] + info.flipped[1] + info.flipped[2];
            const float *oi = (const float *)mt_tensor_data(im) + b * vol;
            const uint8_t *ol = (const uint8_t *)mt_tensor_data(lb) + b * vol;
            for (int64_t i = 0; i < P[0]; i++)
                for (int64_t j = 0; j < P[1]; j++)
                    for (int64_t k = 0; k < P[2]; k++) {
                        int64_t o = (i * P[1] + j) * P[2] + k;
                        int64_t e = mode == 2 ? ((P[0] - 1 - i) * P[1] + (P[1] - 1 - j)) * P[2] + (P[2] - 1 - k) : o;
                        ok &= fabsf(oi[o] - ei[e]) <= 1e-6f * (1.0f + fabsf(ei[e])) && ol[o] == el[e];
                    }
        }
        CHECK_MSG(ok, "mode %d: loader batch is not the documented sequence of draws", mode);
        CHECK(flipped_seen > 0); /* the sampler's own flips were exercised */
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    free(ei);
    free(el);
}

/* ---------------------------------------------------- allocation hook */

typedef struct {
    int calls;
    int fail_at;   /* call number that fails (0: never) */
    int bad_shape; /* return a wrong shape */
} hook_ctx;

static mt_status test_alloc(mt_tensor **out, mt_dtype dt, int ndim, const int64_t *shape, void *vctx) {
    hook_ctx *c = vctx;
    int n = __atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
    *out = NULL;
    if (c->fail_at && n >= c->fail_at) return mt_error_set(MT_ERR_NOMEM, "test allocator: no pinned memory left");
    int64_t s[5];
    memcpy(s, shape, sizeof s);
    if (c->bad_shape) s[0] += 1;
    *out = mt_tensor_new(dt, ndim, s, MT_DEVICE_CPU);
    return MT_OK;
}

static void test_alloc_hook(const mt_augment_config *aug) {
    mt_loader_config cfg;
    mt_loader_config_default(&cfg);
    hook_ctx hc = {0, 0, 0};
    cfg.alloc = test_alloc;
    cfg.alloc_ctx = &hc;
    mt_loader *L;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 0, 0) == MT_OK);
    int same = 1;
    for (int k = 0; k < 3; k++) {
        mt_tensor *im, *lb;
        CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
        same &= same_batch(im, g_ref_im[k]) && same_batch(lb, g_ref_lb[k]);
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    mt_loader_free(L);
    CHECK(same);
    CHECK(hc.calls >= 6);

    /* failing allocator: the consumer gets the error (no hang), again on the next call */
    for (int workers = 1; workers <= 3; workers += 2) {
        hook_ctx fc = {0, 7, 0};
        cfg.alloc_ctx = &fc;
        cfg.num_workers = workers;
        CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 0, 0) == MT_OK);
        mt_status st = MT_OK;
        int got = 0;
        while (got < 20) {
            mt_tensor *im, *lb;
            st = mt_loader_next(L, &im, &lb);
            if (st != MT_OK) {
                CHECK(im == NULL && lb == NULL);
                break;
            }
            CHECK(same_batch(im, g_ref_im[got]));
            mt_tensor_release(im);
            mt_tensor_release(lb);
            got++;
        }
        CHECK_MSG(st == MT_ERR_NOMEM && got <= 3, "workers %d: status %d after %d batches", workers, (int)st, got);
        CHECK_MSG(strstr(mt_error_msg(), "test allocator") && strstr(mt_error_msg(), "batch"), "message: %s",
                  mt_error_msg());
        mt_tensor *im, *lb;
        CHECK(mt_loader_next(L, &im, &lb) == MT_ERR_NOMEM && strstr(mt_error_msg(), "test allocator"));
        mt_loader_free(L);
    }

    /* wrong shape from the hook: named in the error */
    hook_ctx bc = {0, 0, 1};
    cfg.alloc_ctx = &bc;
    cfg.num_workers = 2;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 0, 0) == MT_OK);
    mt_tensor *im, *lb;
    CHECK(mt_loader_next(L, &im, &lb) == MT_ERR_INVALID && strstr(mt_error_msg(), "(3, 1, 17, 20, 17)"));
    mt_loader_free(L);
}

static void test_shutdown(const mt_augment_config *aug) {
    mt_loader_config cfg;
    mt_loader_config_default(&cfg);
    cfg.num_workers = 3;
    cfg.queue_capacity = 6;
    /* freed at once: workers mid-batch */
    mt_loader *L;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 9, 0, 0) == MT_OK);
    mt_loader_free(L);
    /* freed with a full queue */
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 9, 0, 0) == MT_OK);
    mt_tensor *im, *lb;
    CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
    mt_tensor_release(im);
    mt_tensor_release(lb);
    for (int i = 0; i < 200; i++) { /* wait (bounded) until the ring is full */
        mt_loader_stats s;
        mt_loader_get_stats(L, &s);
        if (s.produce_s > 0 && i > 20) break;
        usleep(5000);
    }
    mt_loader_free(L);
    mt_loader_free(NULL);
    CHECK(1); /* reached: no hang */
}

/* Loader-level alignment: cases whose label is a function of a smooth image
 * keep label == class(image) in the interior of every augmented patch, on
 * every spatial path of the loader (plain, permuted, resampled). */
static uint8_t classify(float v) { return v > 0.6f ? 2 : v > 0.15f ? 1 : 0; }

static void test_alignment(void) {
    mt_sampler_config sc;
    mt_sampler_config_default(&sc);
    sc.patch[0] = 17;
    sc.patch[1] = 20;
    sc.patch[2] = 17;
    sc.batch_size = 4;
    sc.num_classes = 3;
    sc.pad_value = -0.5f;
    mt_sampler s;
    CHECK(mt_sampler_init(&s, &sc) == MT_OK);
    for (int c = 0; c < 2; c++) {
        const int64_t D = 33 + c, H = 37, W = 31;
        mt_tensor *im = mt_tensor_new(MT_F32, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
        mt_tensor *lb = mt_tensor_new(MT_U8, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
        float *x = mt_tensor_data(im);
        uint8_t *l = mt_tensor_data(lb);
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t i = (z * H + y) * W + w;
                    x[i] =
                        sinf(0.23f * z + 0.4f + c) * cosf(0.19f * y - 0.2f) + 0.6f * sinf(0.15f * w + 0.12f * y + 1.0f);
                    l[i] = classify(x[i]);
                }
        CHECK(mt_sampler_add_case(&s, im, lb) == MT_OK);
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    mt_augment_config aug;
    mt_augment_config_none(&aug);
    aug.p_rotation = aug.p_scale = aug.p_elastic = aug.p_rot90 = 0.5;
    aug.p_flip[0] = aug.p_flip[1] = aug.p_flip[2] = 0.5;
    const int64_t *P = sc.patch, vol = P[0] * P[1] * P[2], s1 = P[2], s0 = P[1] * P[2];
    int64_t n = 0, agree = 0;
    for (int step = 0; step < 6; step++) {
        mt_tensor *im, *lb;
        CHECK(mt_loader_make_batch(&im, &lb, &s, &aug, 5, 0, step) == MT_OK);
        for (int b = 0; b < sc.batch_size; b++) {
            const float *x = (const float *)mt_tensor_data(im) + b * vol;
            const uint8_t *l = (const uint8_t *)mt_tensor_data(lb) + b * vol;
            for (int64_t i = 1; i + 1 < P[0]; i++)
                for (int64_t j = 1; j + 1 < P[1]; j++)
                    for (int64_t k = 1; k + 1 < P[2]; k++) {
                        int64_t o = i * s0 + j * s1 + k;
                        uint8_t v = l[o];
                        if (l[o - 1] != v || l[o + 1] != v || l[o - s1] != v || l[o + s1] != v || l[o - s0] != v ||
                            l[o + s0] != v)
                            continue;
                        n++;
                        agree += classify(x[o]) == v;
                    }
        }
        mt_tensor_release(im);
        mt_tensor_release(lb);
    }
    CHECK_MSG(n > 6 * 4 * vol / 4 && agree >= 0.99 * n, "loader patches: label agrees with the image on %lld of %lld",
              (long long)agree, (long long)n);
    mt_sampler_free(&s);
}

static void test_errors(const mt_augment_config *aug) {
    mt_loader_config cfg;
    mt_loader_config_default(&cfg);
    mt_loader *L = (mt_loader *)&cfg;
    cfg.num_workers = 0;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1, 0, 0) == MT_ERR_CONFIG && L == NULL &&
          strstr(mt_error_msg(), "num_workers"));
    mt_loader_config_default(&cfg);
    cfg.queue_capacity = 0;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1, 0, 0) == MT_ERR_CONFIG && strstr(mt_error_msg(), "queue_capacity"));
    mt_loader_config_default(&cfg);
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1, -1, 0) == MT_ERR_INVALID && strstr(mt_error_msg(), "rank"));
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1, 0, -3) == MT_ERR_INVALID && strstr(mt_error_msg(), "step"));
    mt_augment_config bad = *aug;
    bad.p_blur = 2.0;
    CHECK(mt_loader_init(&L, &cfg, &g_s, &bad, 1, 0, 0) == MT_ERR_CONFIG && strstr(mt_error_msg(), "p_blur"));
    mt_sampler empty;
    mt_sampler_config sc;
    mt_sampler_config_default(&sc);
    CHECK(mt_sampler_init(&empty, &sc) == MT_OK);
    CHECK(mt_loader_init(&L, &cfg, &empty, aug, 1, 0, 0) == MT_ERR_INVALID && strstr(mt_error_msg(), "no cases"));
    mt_sampler_free(&empty);
}

/* shard_world (tests of data-parallel training): ranks r = 0, 1 with batch 3
 * get the samples r, r + 2, r + 4 of rank 0's batch of 6. */
static void test_shard(const mt_augment_config *aug) {
    mt_sampler big;
    mt_sampler_config sc = g_s.cfg;
    sc.batch_size = 6;
    MT_CHECK(mt_sampler_init(&big, &sc) == MT_OK);
    for (int i = 0; i < g_ds.num_cases; i++)
        MT_CHECK(mt_sampler_add_case(&big, g_ds.images[i], g_ds.labels[i]) == MT_OK);
    mt_tensor *gim, *glb;
    CHECK(mt_loader_make_batch(&gim, &glb, &big, aug, 1234, 0, 2) == MT_OK);
    const int64_t *P = g_s.cfg.patch;
    size_t vol = (size_t)(P[0] * P[1] * P[2]), ibytes = vol * sizeof(float) * (size_t)g_s.channels;
    for (int r = 0; r < 2; r++) {
        mt_loader_config cfg;
        mt_loader_config_default(&cfg);
        cfg.shard_world = 2;
        mt_loader *L;
        CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, r, 2) == MT_OK);
        mt_tensor *im, *lb;
        CHECK(mt_loader_next(L, &im, &lb) == MT_OK);
        int ok = 1;
        for (int j = 0; j < 3; j++) {
            int g = r + 2 * j;
            ok &= !memcmp((char *)mt_tensor_data(im) + j * ibytes, (char *)mt_tensor_data(gim) + g * ibytes, ibytes);
            ok &= !memcmp((char *)mt_tensor_data(lb) + j * vol, (char *)mt_tensor_data(glb) + g * vol, vol);
        }
        CHECK_MSG(ok, "shard rank %d: samples differ from the global batch", r);
        mt_tensor_release(im);
        mt_tensor_release(lb);
        mt_loader_free(L);
    }
    mt_loader_config cfg;
    mt_loader_config_default(&cfg);
    cfg.shard_world = 2;
    mt_loader *L = NULL;
    CHECK(mt_loader_init(&L, &cfg, &g_s, aug, 1234, 2, 0) == MT_ERR_INVALID && L == NULL);
    mt_tensor_release(gim);
    mt_tensor_release(glb);
    mt_sampler_free(&big);
}

int main(void) {
    alarm(120); /* a hang fails the test */
    setup();
    mt_augment_config aug;
    busy_augment(&aug);
    test_reference_batches(&aug);
    test_worker_counts(&aug);
    test_rank_seed_resume(&aug);
    test_draw_order();
    test_alloc_hook(&aug);
    test_shutdown(&aug);
    test_alignment();
    test_errors(&aug);
    test_shard(&aug);
    for (int k = 0; k < K; k++) {
        mt_tensor_release(g_ref_im[k]);
        mt_tensor_release(g_ref_lb[k]);
    }
    mt_sampler_free(&g_s);
    mt_phantom_dataset_free(&g_ds);
    return mt_test_finish();
}
