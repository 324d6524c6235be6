/* Training data loader (see data/loader.h): pthread workers, a ring of
 * per-step slots guarded by one mutex, batches delivered in step order. */
#include "data/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_EMPTY = 0, SLOT_READY = 1, SLOT_ERROR = 2 };

typedef struct {
    int state;
    int64_t step;
    mt_tensor *images; /* (N, C, d, h, w) f32 */
    mt_tensor *labels; /* (N, 1, d, h, w) u8 */
    mt_status status;
    char msg[1024];
} slot;

/* per-thread scratch: the sampler's patch (when resampling) and the augment workspace */
typedef struct {
    float *img;   /* (C, d, h, w) */
    uint8_t *lab; /* (1, d, h, w) */
    mt_augment_workspace ws;
} producer;

typedef struct {
    struct mt_loader *L;
    pthread_t thread;
    producer pr;
} worker;

struct mt_loader {
    mt_loader_config cfg;
    const mt_sampler *sampler;
    mt_augment_config aug;
    uint64_t seed;
    int rank;

    pthread_mutex_t mu;
    pthread_cond_t cv_work;  /* a slot was freed, or stop / failure */
    pthread_cond_t cv_ready; /* a slot was filled */
    int64_t next_step;       /* next step a worker claims */
    int64_t consume_step;    /* next step the consumer takes */
    int stop;                /* set by mt_loader_free (read atomically between samples) */
    int producer_failed;     /* a worker failed: claim no more steps */
    int failed;              /* the consumer received an error: every later call repeats it */
    mt_status fail_status;
    char fail_msg[1200];
    slot *slots;
    worker *workers;
    int num_started;
    mt_loader_stats stats;
};

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }

void mt_loader_config_default(mt_loader_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->num_workers = 2;
    cfg->queue_capacity = 4;
}

static mt_status producer_init(producer *pr, const mt_sampler *s) {
    memset(pr, 0, sizeof *pr);
    const int64_t *P = s->cfg.patch, vol = P[0] * P[1] * P[2];
    pr->img = malloc(sizeof(float) * (size_t)(vol * s->channels));
    pr->lab = malloc((size_t)vol);
    mt_augment_workspace_init(&pr->ws);
    if (!pr->img || !pr->lab) {
        free(pr->img);
        free(pr->lab);
        memset(pr, 0, sizeof *pr);
        return mt_error_set(MT_ERR_NOMEM, "loader: cannot allocate a %lld-voxel scratch patch", (long long)vol);
    }
    return MT_OK;
}

static void producer_free(producer *pr) {
    free(pr->img);
    free(pr->lab);
    mt_augment_workspace_free(&pr->ws);
    memset(pr, 0, sizeof *pr);
}

static mt_status alloc_batch_tensor(mt_tensor **out, mt_dtype dt, const int64_t shape[5], mt_loader_alloc_fn alloc,
                                    void *ctx) {
    *out = NULL;
    if (!alloc) {
        *out = mt_tensor_new(dt, 5, shape, MT_DEVICE_CPU);
        return MT_OK;
    }
    mt_tensor *t = NULL;
    mt_status st = alloc(&t, dt, 5, shape, ctx);
    if (st != MT_OK) {
        mt_tensor_release(t);
        return mt_error_prefix(st, "loader: batch allocator failed: ");
    }
    int ok = t && t->dtype == dt && t->ndim == 5 && mt_tensor_is_contiguous(t) && t->storage->device.type == MT_CPU;
    for (int a = 0; ok && a < 5; a++) ok = t->shape[a] == shape[a];
    if (!ok) {
        char b[96] = "NULL";
        const char *dn = "";
        if (t) {
            mt_tensor_shape_str(t, b, sizeof b);
            dn = mt_dtype_name(t->dtype);
        }
        mt_tensor_release(t);
        return mt_error_set(MT_ERR_INVALID,
                            "loader: batch allocator returned %s %s; expected a contiguous host %s tensor of "
                            "(%lld, %lld, %lld, %lld, %lld)",
                            b, dn, mt_dtype_name(dt), (long long)shape[0], (long long)shape[1], (long long)shape[2],
                            (long long)shape[3], (long long)shape[4]);
    }
    *out = t;
    return MT_OK;
}

/* Batch `step` into new tensors. *cancelled (if stop is not NULL) is set
 * when *stop was raised between samples; the tensors are then released. */
static mt_status produce(mt_tensor **im_out, mt_tensor **lb_out, producer *pr, const mt_sampler *s,
                         const mt_augment_config *aug, uint64_t seed, int rank, int shard_world, int64_t step,
                         mt_loader_alloc_fn alloc, void *ctx, const int *stop, int *cancelled) {
    *im_out = *lb_out = NULL;
    if (cancelled) *cancelled = 0;
    const int64_t *P = s->cfg.patch, N = s->cfg.batch_size, C = s->channels;
    const int64_t vol = P[0] * P[1] * P[2];
    mt_tensor *im = NULL, *lb = NULL;
    MT_TRY(alloc_batch_tensor(&im, MT_F32, (int64_t[]){N, C, P[0], P[1], P[2]}, alloc, ctx));
    mt_status st = alloc_batch_tensor(&lb, MT_U8, (int64_t[]){N, 1, P[0], P[1], P[2]}, alloc, ctx);
    if (st != MT_OK) {
        mt_tensor_release(im);
        return st;
    }
    float *img = mt_tensor_data(im);
    uint8_t *lab = mt_tensor_data(lb);
    mt_rng r;
    /* shard_world > 1: the samples rank, rank + shard_world, ... of rank 0's batch of
     * N * shard_world samples (the others are drawn into scratch and dropped) */
    int SW = shard_world > 1 ? shard_world : 1;
    mt_rng_init_stream(&r, seed, SW > 1 ? 0 : (uint64_t)rank, (uint64_t)step, MT_LOADER_STREAM_TAG);
    for (int64_t g = 0; g < N * SW; g++) {
        int64_t b = g / SW;
        if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
            mt_tensor_release(im);
            mt_tensor_release(lb);
            if (cancelled) *cancelled = 1;
            return MT_OK;
        }
        mt_augment_params prm;
        mt_augment_draw(&prm, aug, (int)C, P, &r);
        int ci = (int)mt_rng_randint(&r, 0, s->num_cases);
        int fg = mt_rng_uniform(&r) < s->cfg.fg_prob;
        if (SW > 1 && g % SW != rank) {
            mt_sampler_patch(pr->img, pr->lab, s, ci, fg, &r, NULL); /* same draws, output dropped */
            continue;
        }
        float *oi = img + b * C * vol;
        uint8_t *ol = lab + b * vol;
        if (!mt_augment_needs_resample(&prm)) {
            mt_sampler_patch(oi, ol, s, ci, fg, &r, NULL);
        } else if (!prm.rotated && !prm.scaled && !prm.elastic) {
            /* flips / rot90 only: an index permutation of the sampler's patch */
            mt_sampler_patch(pr->img, pr->lab, s, ci, fg, &r, NULL);
            mt_augment_source src;
            memset(&src, 0, sizeof src);
            src.image = pr->img;
            src.label = pr->lab;
            src.channels = (int)C;
            for (int a = 0; a < 3; a++) {
                src.shape[a] = P[a];
                src.centre[a] = (double)(P[a] - 1) / 2.0;
            }
            src.pad_value = s->cfg.pad_value;
            mt_augment_spatial(oi, ol, &src, &prm, &pr->ws);
        } else {
            /* resampled from the whole case volume around the placed patch's centre */
            mt_patch_info info;
            mt_sampler_patch(pr->img, pr->lab, s, ci, fg, &r, &info);
            const mt_sampler_case *cs = &s->cases[ci];
            mt_augment_source src;
            memset(&src, 0, sizeof src);
            src.image = mt_tensor_data(cs->image);
            src.label = mt_tensor_data(cs->label);
            src.channels = (int)C;
            for (int a = 0; a < 3; a++) {
                src.shape[a] = cs->label->shape[1 + a];
                src.centre[a] = (double)info.start[a] + (double)(P[a] - 1) / 2.0;
                src.flipped[a] = info.flipped[a];
            }
            src.pad_value = s->cfg.pad_value;
            mt_augment_spatial(oi, ol, &src, &prm, &pr->ws);
        }
        mt_augment_intensity(oi, &prm, &pr->ws);
    }
    *im_out = im;
    *lb_out = lb;
    return MT_OK;
}

static mt_status check_inputs(const mt_sampler *s, const mt_augment_config *aug, int rank, int64_t step) {
    if (!s || s->num_cases < 1) return mt_error_set(MT_ERR_INVALID, "loader: the sampler has no cases");
    if (s->channels < 1 || s->channels > MT_AUGMENT_MAX_CHANNELS)
        return mt_error_set(MT_ERR_INVALID, "loader: %d image channels; at most %d are supported", s->channels,
                            MT_AUGMENT_MAX_CHANNELS);
    if (!aug) return mt_error_set(MT_ERR_INVALID, "loader: no augmentation config");
    MT_TRY(mt_augment_config_check(aug));
    if (rank < 0) return mt_error_set(MT_ERR_INVALID, "loader: rank = %d must be >= 0", rank);
    if (step < 0) return mt_error_set(MT_ERR_INVALID, "loader: step = %lld must be >= 0", (long long)step);
    return MT_OK;
}

mt_status mt_loader_make_batch(mt_tensor **images, mt_tensor **labels, const mt_sampler *s,
                               const mt_augment_config *aug, uint64_t seed, int rank, int64_t step) {
    *images = *labels = NULL;
    MT_TRY(check_inputs(s, aug, rank, step));
    producer pr;
    MT_TRY(producer_init(&pr, s));
    mt_status st = produce(images, labels, &pr, s, aug, seed, rank, 1, step, NULL, NULL, NULL, NULL);
    producer_free(&pr);
    return st;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    mt_loader *L = w->L;
    const int64_t cap = L->cfg.queue_capacity;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        if (L->stop || L->producer_failed) break;
        int64_t k = L->next_step;
        if (k - L->consume_step >= cap) { /* slot k % cap still holds batch k - cap */
            pthread_cond_wait(&L->cv_work, &L->mu);
            continue;
        }
        L->next_step++;
        pthread_mutex_unlock(&L->mu);

        double t0 = now_s(), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        mt_tensor *im = NULL, *lb = NULL;
        int cancelled = 0;
        mt_status st = produce(&im, &lb, &w->pr, L->sampler, &L->aug, L->seed, L->rank, L->cfg.shard_world, k, L->cfg.alloc,
                               L->cfg.alloc_ctx, &L->stop, &cancelled);
        double t1 = now_s(), c1 = clock_s(CLOCK_THREAD_CPUTIME_ID);

        pthread_mutex_lock(&L->mu);
        L->stats.produce_s += t1 - t0;
        L->stats.produce_cpu_s += c1 - c0;
        if (cancelled) break;
        slot *sl = &L->slots[k % cap];
        MT_CHECK(sl->state == SLOT_EMPTY);
        sl->step = k;
        if (st == MT_OK) {
            L->stats.produced++;
            sl->state = SLOT_READY;
            sl->images = im;
            sl->labels = lb;
        } else {
            sl->state = SLOT_ERROR;
            sl->status = st;
            snprintf(sl->msg, sizeof sl->msg, "%s", mt_error_msg());
            L->producer_failed = 1;
            pthread_cond_broadcast(&L->cv_work);
        }
        pthread_cond_broadcast(&L->cv_ready);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

mt_status mt_loader_init(mt_loader **out, const mt_loader_config *cfg, const mt_sampler *s,
                         const mt_augment_config *aug, uint64_t seed, int rank, int64_t start_step) {
    *out = NULL;
    if (!cfg) return mt_error_set(MT_ERR_INVALID, "loader: no config");
    if (cfg->num_workers < 1 || cfg->num_workers > 256)
        return mt_error_set(MT_ERR_CONFIG, "loader: num_workers = %d must be in [1, 256]", cfg->num_workers);
    if (cfg->queue_capacity < 1 || cfg->queue_capacity > 1024)
        return mt_error_set(MT_ERR_CONFIG, "loader: queue_capacity = %d must be in [1, 1024]", cfg->queue_capacity);
    MT_TRY(check_inputs(s, aug, rank, start_step));
    if (cfg->shard_world > 1 && rank >= cfg->shard_world)
        return mt_error_set(MT_ERR_INVALID, "loader: rank %d with shard_world %d", rank, cfg->shard_world);

    mt_loader *L = calloc(1, sizeof *L);
    MT_CHECK(L);
    L->cfg = *cfg;
    L->sampler = s;
    L->aug = *aug;
    L->seed = seed;
    L->rank = rank;
    L->next_step = L->consume_step = start_step;
    L->slots = calloc((size_t)cfg->queue_capacity, sizeof *L->slots);
    L->workers = calloc((size_t)cfg->num_workers, sizeof *L->workers);
    MT_CHECK(L->slots && L->workers);
    MT_CHECK(pthread_mutex_init(&L->mu, NULL) == 0);
    MT_CHECK(pthread_cond_init(&L->cv_work, NULL) == 0);
    MT_CHECK(pthread_cond_init(&L->cv_ready, NULL) == 0);
    mt_status st = MT_OK;
    for (int i = 0; i < cfg->num_workers && st == MT_OK; i++) {
        st = producer_init(&L->workers[i].pr, s);
        L->workers[i].L = L;
    }
    for (int i = 0; i < cfg->num_workers && st == MT_OK; i++) {
        int e = pthread_create(&L->workers[i].thread, NULL, worker_main, &L->workers[i]);
        if (e != 0) {
            st = mt_error_set(MT_ERR_NOMEM, "loader: cannot start worker thread %d of %d (error %d)", i,
                              cfg->num_workers, e);
            break;
        }
        L->num_started++;
    }
    if (st != MT_OK) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        mt_loader_free(L);
        return mt_error_set(st, "%s", msg);
    }
    *out = L;
    return MT_OK;
}

mt_status mt_loader_next(mt_loader *L, mt_tensor **images, mt_tensor **labels) {
    *images = *labels = NULL;
    pthread_mutex_lock(&L->mu);
    if (!L->failed) {
        const int64_t k = L->consume_step;
        slot *sl = &L->slots[k % L->cfg.queue_capacity];
        double t0 = now_s();
        while (!(sl->state != SLOT_EMPTY && sl->step == k)) pthread_cond_wait(&L->cv_ready, &L->mu);
        L->stats.wait_s += now_s() - t0;
        if (sl->state == SLOT_READY) {
            *images = sl->images;
            *labels = sl->labels;
            sl->images = sl->labels = NULL;
            sl->state = SLOT_EMPTY;
            L->consume_step++;
            L->stats.batches++;
            pthread_cond_broadcast(&L->cv_work);
            pthread_mutex_unlock(&L->mu);
            return MT_OK;
        }
        L->failed = 1;
        L->fail_status = sl->status;
        snprintf(L->fail_msg, sizeof L->fail_msg, "loader: batch %lld: %s", (long long)k, sl->msg);
        sl->state = SLOT_EMPTY;
    }
    mt_status st = L->fail_status;
    char msg[sizeof L->fail_msg];
    memcpy(msg, L->fail_msg, sizeof msg);
    pthread_mutex_unlock(&L->mu);
    return mt_error_set(st, "%s", msg);
}

int64_t mt_loader_step(const mt_loader *L) {
    mt_loader *l = (mt_loader *)L;
    pthread_mutex_lock(&l->mu);
    int64_t k = l->consume_step;
    pthread_mutex_unlock(&l->mu);
    return k;
}

void mt_loader_get_stats(const mt_loader *L, mt_loader_stats *out) {
    mt_loader *l = (mt_loader *)L;
    pthread_mutex_lock(&l->mu);
    *out = l->stats;
    pthread_mutex_unlock(&l->mu);
}

void mt_loader_free(mt_loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    __atomic_store_n(&L->stop, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&L->cv_work);
    pthread_cond_broadcast(&L->cv_ready);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->num_started; i++) MT_CHECK(pthread_join(L->workers[i].thread, NULL) == 0);
    for (int i = 0; i < L->cfg.queue_capacity; i++) {
        mt_tensor_release(L->slots[i].images);
        mt_tensor_release(L->slots[i].labels);
    }
    for (int i = 0; i < L->cfg.num_workers; i++) producer_free(&L->workers[i].pr);
    pthread_cond_destroy(&L->cv_ready);
    pthread_cond_destroy(&L->cv_work);
    pthread_mutex_destroy(&L->mu);
    free(L->slots);
    free(L->workers);
    free(L);
}
