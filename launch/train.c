/* The training loop: config -> data -> model -> loss -> optimizer/schedule
 * -> steps with logging, validation and checkpoints -> final weights.
 *
 * Data: the synthetic phantom (generated in memory) or a prepared HDF5 store
 * (`medtrain prepare`; optionally prepared on first use), split into
 * training and validation cases by data.splits / data.fold or by
 * data.val_cases; every case is held in memory. Batches come from the
 * threaded loader (data/loader.h: patch sampling with foreground
 * oversampling, then augmentation).
 *
 * Validation (every train.val_every steps and at the end): sliding-window
 * Dice per class on the validation cases; the monitored metric
 * (train.early_stop.*) selects model_best.safetensors and stops training
 * early after `patience` validations without improvement. The final
 * weights go to model.safetensors.
 *
 * Determinism: a run is a function of the config. Parameters are initialised
 * from run.seed; batch k is a pure function of (run.seed, rank, k) whatever
 * the loader's worker count; the early-stopping state is saved in
 * checkpoints; so `--resume` continues with exactly the losses an
 * uninterrupted run would have produced (same thread count, same number of
 * ranks). Resuming with another number of ranks continues correctly (same
 * weights, optimizer state, step and schedule) but not bit-identically: the
 * ranks' batches from step k on depend on (seed, rank, k) and the global
 * batch size changes with the rank count.
 *
 * Data parallel (launch/dist.h, launch/ddp.h; `mpirun -np N medtrain ...`):
 * every rank trains on its own batches (loader rank = world rank), gradients
 * are averaged over ranks in buckets during backward (mt_ddp_finish before
 * the optimizer step), so all ranks hold the same weights. Only rank 0 opens
 * the run directory, logs, writes metrics (and TensorBoard events),
 * checkpoints and weights. The
 * logged loss is the mean over ranks. Validation cases are split across ranks
 * (case k on rank k % world) and the Dice sums all-reduced, so early stopping
 * sees the same values on every rank; the time limit flag is all-reduced
 * (max): all ranks stop at the same step. An error on one rank is printed
 * with its rank by the CLI, which aborts the job (MPI_Abort).
 * model.sync_batchnorm: the BatchNorm3d modules compute their training
 * statistics over all ranks (mt_sync_batch_norm) through the all-reduce hook
 * of autograd/ops.h, installed here for the run (several ranks only).
 */
#include "launch/train.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/autograd.h"
#include "core/alloc.h"
#include "core/backend.h"
#include "data/augment.h"
#include "data/h5store.h"
#include "data/loader.h"
#include "data/msd.h"
#include "data/phantom.h"
#include "data/sampler.h"
#include "eval/postprocess.h"
#include "eval/sliding_window.h"
#include "launch/checkpoint.h"
#include "launch/ddp.h"
#include "launch/nccl.h"
#include "launch/dist.h"
#include "launch/fsutil.h"
#include "launch/prepare.h"
#include "launch/tbevents.h"
#include "layers/models/unet3d.h"
#include "losses/losses.h"
#include "optim/optim.h"
#include "optim/schedule.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

/* Tests only (mt_train_set_shard_global_batch): ranks share rank 0's global batch. */
static int g_shard_global_batch = 0;

void mt_train_set_shard_global_batch(int on) { g_shard_global_batch = on; }

/* ------------------------------------------------------------ building */

/* The error just recorded (by a validator that does not know the config) as
 * a config error naming `key` and where it was set. */
static mt_status config_error_from_last(const mt_config *cfg, const char *key) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", mt_error_msg());
    return mt_config_error(cfg, key, "%s", msg);
}

mt_status mt_train_model_config(const mt_config *cfg, mt_unet3d_config *mc) {
    mt_unet3d_config_default(mc);
    int nf;
    const int64_t *f = mt_config_get_int_list(cfg, "model.features", &nf);
    if (nf > MT_UNET3D_MAX_LEVELS)
        return mt_config_error(cfg, "model.features", "at most %d levels", MT_UNET3D_MAX_LEVELS);
    mc->in_channels = (int)mt_config_get_int(cfg, "model.in_channels");
    mc->out_channels = (int)mt_config_get_int(cfg, "model.out_channels");
    mc->n_levels = nf;
    for (int k = 0; k < nf; k++) mc->features[k] = (int)f[k];
    static const mt_norm_type norms[] = {MT_NORM_BATCH, MT_NORM_INSTANCE, MT_NORM_GROUP};
    mc->norm = norms[mt_config_get_enum(cfg, "model.norm")];
    mc->norm_groups = (int)mt_config_get_int(cfg, "model.groups");
    mc->norm_affine = 1;
    static const mt_act_type acts[] = {MT_ACT_RELU, MT_ACT_LEAKY_RELU};
    mc->act = acts[mt_config_get_enum(cfg, "model.activation")];
    mc->act_slope = (float)mt_config_get_float(cfg, "model.negative_slope");
    static const mt_upsample_mode ups[] = {MT_UPSAMPLE_TRANSPOSED, MT_UPSAMPLE_TRILINEAR};
    mc->upsample = ups[mt_config_get_enum(cfg, "model.upsample")];
    mc->deep_supervision = mt_config_get_bool(cfg, "model.deep_supervision");
    mc->dropout = (float)mt_config_get_float(cfg, "model.dropout");
    if (mt_unet3d_config_validate(mc) != MT_OK) return config_error_from_last(cfg, "model.features");
    int np;
    const int64_t *patch = mt_config_get_int_list(cfg, "data.patch_size", &np);
    if (mt_unet3d_check_patch(mc, patch) != MT_OK) return config_error_from_last(cfg, "data.patch_size");
    return MT_OK;
}

static mt_status schedule_from(const mt_config *cfg, mt_schedule *s) {
    mt_schedule_kind kind;
    MT_TRY(mt_schedule_kind_from_name(mt_config_get_string(cfg, "sched.name"), &kind));
    *s = mt_schedule_default(kind, mt_config_get_float(cfg, "optim.lr"));
    int64_t steps = mt_config_get_int(cfg, "train.steps");
    s->warmup_steps = mt_config_get_int(cfg, "sched.warmup_steps");
    /* linear ramp base*(k+1)/(W+1) for k < W, then the main schedule */
    s->warmup_start_factor = 1.0 / (double)(s->warmup_steps + 1);
    s->max_steps = steps - s->warmup_steps > 0 ? steps - s->warmup_steps : 1;
    s->t0 = mt_config_get_int(cfg, "sched.t0");
    s->t_mult = mt_config_get_int(cfg, "sched.t_mult");
    s->eta_min = mt_config_get_float(cfg, "sched.eta_min");
    s->step_size = mt_config_get_int(cfg, "sched.step_size");
    s->gamma = mt_config_get_float(cfg, "sched.gamma");
    s->power = mt_config_get_float(cfg, "sched.poly_power");
    if (mt_schedule_validate(s) != MT_OK) return config_error_from_last(cfg, "sched.name");
    return MT_OK;
}

static mt_status optim_from(const mt_config *cfg, mt_optim *opt, mt_module *model) {
    mt_optim_hparams h;
    memset(&h, 0, sizeof h);
    MT_TRY(mt_optim_kind_from_name(mt_config_get_string(cfg, "optim.name"), &h.kind));
    h.lr = mt_config_get_float(cfg, "optim.lr");
    h.weight_decay = mt_config_get_float(cfg, "optim.weight_decay");
    h.momentum = mt_config_get_float(cfg, "optim.momentum");
    h.nesterov = mt_config_get_bool(cfg, "optim.nesterov") && h.momentum > 0;
    int nb;
    const double *betas = mt_config_get_float_list(cfg, "optim.betas", &nb);
    h.beta1 = betas[0];
    h.beta2 = betas[1];
    h.eps = mt_config_get_float(cfg, "optim.eps");
    mt_named_tensors params = {0};
    mt_module_named_parameters(model, &params);
    mt_tensor **ps = malloc(sizeof *ps * (size_t)(params.n ? params.n : 1));
    for (int k = 0; k < params.n; k++) ps[k] = params.items[k].tensor;
    mt_status s = mt_optim_init(opt, params.n, ps, &h);
    free(ps);
    mt_named_tensors_free(&params);
    if (s != MT_OK) return config_error_from_last(cfg, "optim.name");
    return MT_OK;
}

/* ------------------------------------------------------------------ data */

/* Cases held in memory: images (C, D, H, W) f32, labels (1, D, H, W) u8. */
typedef struct {
    int n;
    mt_tensor **images;
    mt_tensor **labels;
    char **ids;
} case_list;

static void case_list_alloc(case_list *l, int n) {
    l->n = n;
    size_t m = (size_t)(n > 0 ? n : 1);
    l->images = calloc(m, sizeof *l->images);
    l->labels = calloc(m, sizeof *l->labels);
    l->ids = calloc(m, sizeof *l->ids);
    MT_CHECK(l->images && l->labels && l->ids);
}

static void case_list_free(case_list *l) {
    for (int k = 0; k < l->n; k++) {
        mt_tensor_release(l->images[k]);
        mt_tensor_release(l->labels[k]);
        free(l->ids[k]);
    }
    free(l->images);
    free(l->labels);
    free(l->ids);
    memset(l, 0, sizeof *l);
}

/* What the data section of the config resolved to. */
typedef struct {
    case_list train, val;
    int num_channels, num_classes;
    char **class_names;      /* [num_classes] */
    char **metric_names;     /* [num_classes]: "val_dice_<sanitised class name>" */
    mt_h5store *store;       /* hdf5: the open store (its meta goes into the weight file), else NULL */
    char desc[512];          /* one line for the log */
} dataset;

static void dataset_free(dataset *d) {
    case_list_free(&d->train);
    case_list_free(&d->val);
    for (int c = 0; c < d->num_classes; c++) {
        if (d->class_names) free(d->class_names[c]);
        if (d->metric_names) free(d->metric_names[c]);
    }
    free(d->class_names);
    free(d->metric_names);
    mt_h5store_close(d->store);
    memset(d, 0, sizeof *d);
}

/* "val_dice_" + the class name in lower case, other characters -> '_'. */
static char *metric_name(const char *cls) {
    size_t n = strlen(cls);
    char *m = malloc(n + 16);
    MT_CHECK(m);
    strcpy(m, "val_dice_");
    char *p = m + 9;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)cls[i];
        p[i] = isalnum(ch) ? (char)tolower(ch) : '_';
    }
    p[n] = 0;
    return m;
}

static void dataset_set_classes(dataset *d, int num_classes, const char *const *names) {
    d->num_classes = num_classes;
    d->class_names = calloc((size_t)num_classes, sizeof *d->class_names);
    d->metric_names = calloc((size_t)num_classes, sizeof *d->metric_names);
    MT_CHECK(d->class_names && d->metric_names);
    for (int c = 0; c < num_classes; c++) {
        char buf[32];
        snprintf(buf, sizeof buf, "class%d", c);
        const char *nm = names && names[c] && *names[c] ? names[c] : buf;
        d->class_names[c] = strdup(nm);
        d->metric_names[c] = metric_name(nm);
        MT_CHECK(d->class_names[c]);
    }
}

static mt_status load_phantom(dataset *d, const mt_config *cfg) {
    mt_phantom_config pc;
    mt_phantom_config_default(&pc);
    int ns;
    const int64_t *shape = mt_config_get_int_list(cfg, "data.phantom.shape", &ns);
    for (int a = 0; a < 3; a++) pc.shape[a] = shape[a];
    pc.num_classes = (int)mt_config_get_int(cfg, "data.phantom.num_classes");
    pc.seed = (uint64_t)mt_config_get_int(cfg, "data.phantom.seed");
    if (mt_phantom_config_check(&pc) != MT_OK) return config_error_from_last(cfg, "data.phantom.shape");
    int n_cases = (int)mt_config_get_int(cfg, "data.phantom.num_cases");
    int n_val = (int)mt_config_get_int(cfg, "data.val_cases");
    int n_train = n_cases - n_val;
    double t = now_s();
    mt_phantom_dataset tr, va;
    memset(&tr, 0, sizeof tr);
    memset(&va, 0, sizeof va);
    MT_TRY(mt_phantom_dataset_init(&tr, &pc, 0, n_train));
    mt_status s = n_val > 0 ? mt_phantom_dataset_init(&va, &pc, n_train, n_val) : MT_OK;
    if (s != MT_OK) {
        mt_phantom_dataset_free(&tr);
        return s;
    }
    mt_phantom_dataset *src[2] = {&tr, &va};
    case_list *dst[2] = {&d->train, &d->val};
    for (int k = 0; k < 2; k++) {
        case_list_alloc(dst[k], src[k]->num_cases);
        for (int i = 0; i < src[k]->num_cases; i++) {
            dst[k]->images[i] = mt_tensor_retain(src[k]->images[i]);
            dst[k]->labels[i] = mt_tensor_retain(src[k]->labels[i]);
            char id[32];
            snprintf(id, sizeof id, "phantom_%04lld", (long long)(src[k]->first_case + i));
            dst[k]->ids[i] = strdup(id);
        }
    }
    mt_phantom_dataset_free(&tr);
    mt_phantom_dataset_free(&va);
    const char *names[MT_PHANTOM_MAX_CLASSES + 1];
    for (int c = 0; c < pc.num_classes; c++) names[c] = mt_phantom_class_name(c);
    dataset_set_classes(d, pc.num_classes, names);
    d->num_channels = 1;
    snprintf(d->desc, sizeof d->desc,
             "synthetic phantom, %d train + %d validation cases of %lldx%lldx%lld, %d classes (generated in %.1fs)",
             n_train, n_val, (long long)pc.shape[0], (long long)pc.shape[1], (long long)pc.shape[2],
             pc.num_classes, now_s() - t);
    return MT_OK;
}

/* Store indices of the ids in list (errors name the splits file and id). */
static mt_status ids_to_indices(int *out, const mt_msd_id_list *list, const mt_h5store *st, const char *splits) {
    for (int k = 0; k < list->n; k++) {
        out[k] = mt_h5store_find(st, list->ids[k]);
        if (out[k] < 0)
            return mt_error_set(MT_ERR_INVALID, "%s: case \"%s\" is not in the store %s", splits, list->ids[k],
                                mt_h5store_path(st));
    }
    return MT_OK;
}

static mt_status load_cases(case_list *l, mt_h5store *st, const int *idx, int n) {
    case_list_alloc(l, n);
    for (int k = 0; k < n; k++) {
        mt_tensor *img = NULL, *lab = NULL;
        MT_TRY(mt_h5store_load_case(st, idx[k], &img, &lab, NULL));
        l->images[k] = img;
        l->labels[k] = lab;
        l->ids[k] = strdup(mt_h5store_case_id(st, idx[k]));
        MT_CHECK(l->ids[k]);
    }
    return MT_OK;
}

static mt_status load_store(dataset *d, const mt_config *cfg) {
    const char *path = mt_config_get_string(cfg, "data.hdf5.path");
    const char *from = mt_config_get_string(cfg, "data.hdf5.prepare_from");
    mt_dist *D = mt_dist_get();
    if (D->rank == 0 && !mt_fs_is_file(path)) { /* several ranks: rank 0 prepares */
        if (!*from)
            return mt_config_error(cfg, "data.hdf5.path",
                                   "%s does not exist (create it with `medtrain prepare DATASET_DIR %s`, or set "
                                   "data.hdf5.prepare_from to the dataset folder)",
                                   path, path);
        fprintf(stderr, "medtrain: %s does not exist: preparing it from %s\n", path, from);
        char *dir = strdup(path);
        MT_CHECK(dir);
        char *slash = strrchr(dir, '/');
        mt_status s = MT_OK;
        if (slash && slash != dir) {
            *slash = 0;
            s = mt_fs_mkdir_p(dir);
        }
        free(dir);
        if (s == MT_OK) s = mt_prepare_run(from, path, NULL);
        if (s != MT_OK) return s;
    }
    if (D->world > 1) {
        /* the other ranks wait for rank 0's preparation: no timeout, it can take long
         * (if rank 0 fails, the CLI aborts the job) */
        double limit = D->timeout_s;
        mt_dist_set_timeout(D, 0);
        mt_status bs = mt_dist_barrier(D);
        mt_dist_set_timeout(D, limit);
        if (bs != MT_OK) return bs;
        if (!mt_fs_is_file(path)) return mt_error_set(MT_ERR_IO, "%s: not found after rank 0 prepared it", path);
    }
    double t = now_s();
    mt_h5store *st = NULL;
    MT_TRY(mt_h5store_open(&st, path));
    const mt_h5store_meta *meta = mt_h5store_get_meta(st);
    mt_status s = MT_OK;
    int *tr_idx = NULL, *va_idx = NULL, n_tr = 0, n_va = 0;
    mt_msd_splits sp;
    memset(&sp, 0, sizeof sp);
    const char *splits = mt_config_get_string(cfg, "data.splits");
    int fold = (int)mt_config_get_int(cfg, "data.fold");
    char how[256];
    if (*splits) {
        if ((s = mt_msd_splits_read(&sp, splits)) != MT_OK) goto out;
        const mt_msd_id_list *tl = &sp.dev, *vl = NULL;
        if (fold >= 0) {
            if (fold >= sp.num_folds) {
                s = mt_config_error(cfg, "data.fold", "%d, but %s has %d folds (0 .. %d; -1 = all of dev)", fold,
                                    splits, sp.num_folds, sp.num_folds - 1);
                goto out;
            }
            tl = &sp.train[fold];
            vl = &sp.val[fold];
        }
        n_tr = tl->n;
        n_va = vl ? vl->n : 0;
        tr_idx = malloc(sizeof *tr_idx * (size_t)(n_tr + 1));
        va_idx = malloc(sizeof *va_idx * (size_t)(n_va + 1));
        MT_CHECK(tr_idx && va_idx);
        if ((s = ids_to_indices(tr_idx, tl, st, splits)) != MT_OK) goto out;
        if (vl && (s = ids_to_indices(va_idx, vl, st, splits)) != MT_OK) goto out;
        if (fold >= 0)
            snprintf(how, sizeof how, "fold %d of %s (%d holdout cases not used)", fold, splits, sp.holdout.n);
        else
            snprintf(how, sizeof how, "all dev cases of %s (%d holdout cases not used)", splits, sp.holdout.n);
    } else {
        int n = mt_h5store_num_cases(st);
        n_va = (int)mt_config_get_int(cfg, "data.val_cases");
        if (n_va >= n) {
            s = mt_config_error(cfg, "data.val_cases", "%d leaves no training case (the store %s has %d cases)", n_va,
                                path, n);
            goto out;
        }
        n_tr = n - n_va;
        tr_idx = malloc(sizeof *tr_idx * (size_t)(n_tr + 1));
        va_idx = malloc(sizeof *va_idx * (size_t)(n_va + 1));
        MT_CHECK(tr_idx && va_idx);
        for (int k = 0; k < n_tr; k++) tr_idx[k] = k;
        for (int k = 0; k < n_va; k++) va_idx[k] = n_tr + k;
        snprintf(how, sizeof how, "the last %d cases validate", n_va);
    }
    if (n_tr == 0) {
        s = mt_config_error(cfg, *splits ? "data.splits" : "data.hdf5.path", "no training case");
        goto out;
    }
    if (meta->num_channels != mt_config_get_int(cfg, "model.in_channels")) {
        s = mt_config_error(cfg, "model.in_channels", "%lld, but the store %s has %d channel(s)",
                            (long long)mt_config_get_int(cfg, "model.in_channels"), path, meta->num_channels);
        goto out;
    }
    if (meta->num_classes != mt_config_get_int(cfg, "model.out_channels")) {
        s = mt_config_error(cfg, "model.out_channels",
                            "%lld, but the store %s has %d classes (background included): one output channel per "
                            "class",
                            (long long)mt_config_get_int(cfg, "model.out_channels"), path, meta->num_classes);
        goto out;
    }
    if ((s = load_cases(&d->train, st, tr_idx, n_tr)) != MT_OK) goto out;
    if ((s = load_cases(&d->val, st, va_idx, n_va)) != MT_OK) goto out;
    d->num_channels = meta->num_channels;
    dataset_set_classes(d, meta->num_classes, (const char *const *)meta->class_names);
    snprintf(d->desc, sizeof d->desc, "%s (%s): %d train + %d validation cases, %d channel(s), %d classes; %s (loaded in %.1fs)",
             path, meta->dataset_name && *meta->dataset_name ? meta->dataset_name : "prepared store", n_tr, n_va,
             meta->num_channels, meta->num_classes, how, now_s() - t);
out:
    free(tr_idx);
    free(va_idx);
    mt_msd_splits_free(&sp);
    if (s == MT_OK)
        d->store = st; /* kept open: the weight files take the plan and names from its meta */
    else
        mt_h5store_close(st);
    return s;
}

static mt_status augment_from(const mt_config *cfg, mt_augment_config *a) {
    mt_augment_config_default(a);
    int n;
    const double *v;
    a->p_rotation = mt_config_get_float(cfg, "augment.p_rotation");
    v = mt_config_get_float_list(cfg, "augment.rotation_deg", &n);
    for (int k = 0; k < 3; k++) a->rotation_deg[k] = v[k];
    a->p_scale = mt_config_get_float(cfg, "augment.p_scale");
    v = mt_config_get_float_list(cfg, "augment.scale_range", &n);
    a->scale_range[0] = v[0];
    a->scale_range[1] = v[1];
    a->p_elastic = mt_config_get_float(cfg, "augment.p_elastic");
    v = mt_config_get_float_list(cfg, "augment.p_flip", &n);
    for (int k = 0; k < 3; k++) a->p_flip[k] = v[k];
    a->p_rot90 = mt_config_get_float(cfg, "augment.p_rot90");
    a->p_noise = mt_config_get_float(cfg, "augment.p_noise");
    a->p_blur = mt_config_get_float(cfg, "augment.p_blur");
    a->p_brightness = mt_config_get_float(cfg, "augment.p_brightness");
    a->p_contrast = mt_config_get_float(cfg, "augment.p_contrast");
    a->p_lowres = mt_config_get_float(cfg, "augment.p_lowres");
    a->p_gamma = mt_config_get_float(cfg, "augment.p_gamma");
    a->p_gamma_inverted = mt_config_get_float(cfg, "augment.p_gamma_inverted");
    if (a->scale_range[0] > 1 || a->scale_range[1] < 1)
        return mt_config_error(cfg, "augment.scale_range", "[%g, %g] must contain 1 (lo <= 1 <= hi)",
                               a->scale_range[0], a->scale_range[1]);
    if (mt_augment_config_check(a) != MT_OK) return config_error_from_last(cfg, "augment.p_rotation");
    return MT_OK;
}

/* ------------------------------------------------------------- validation */

/* Dice per class (index 1..C-1) as the mean over cases of per-case Dice,
 * from sliding-window inference with the training patch size (overlap 0.5,
 * Gaussian weighting, as nnU-Net validates) on the training grid (for a
 * prepared store: the preprocessed grid; `medtrain evaluate` reports on the
 * original one); a class absent from both prediction and reference scores 1. */
static mt_status validate(mt_module *model, const case_list *val, int n_eval, int num_classes,
                          const int64_t *patch, double *dice /* [num_classes] */, mt_dist *D, mt_dtype autocast) {
    mt_eval_sw_opts o;
    mt_eval_sw_opts_default(&o, patch);
    for (int c = 0; c < num_classes; c++) dice[c] = 0;
    /* case k on rank k % world; the per-class sums are all-reduced below, so
     * every rank gets the same numbers whatever its number of cases */
    for (int k = D->rank; k < n_eval; k += D->world) {
        mt_tensor *scores = NULL, *pred = NULL;
        /* the windows run on the model's device (eval/sliding_window.c moves each
         * batch there and the logits back); bf16-mixed: under autocast as in training */
        mt_dtype prev_autocast = mt_autocast_set(autocast);
        mt_status s = mt_eval_sliding_window_model(&scores, val->images[k], model, &o);
        mt_autocast_set(prev_autocast);
        if (s != MT_OK) return s;
        s = mt_eval_argmax(&pred, scores);
        mt_tensor_release(scores);
        if (s != MT_OK) return s;
        const uint8_t *p = (const uint8_t *)mt_tensor_data(pred);
        mt_tensor *lab = mt_tensor_contiguous(val->labels[k]);
        const uint8_t *g = (const uint8_t *)mt_tensor_data(lab);
        int64_t n = mt_tensor_numel(lab);
        MT_CHECK(mt_tensor_numel(pred) == n);
        for (int c = 1; c < num_classes; c++) {
            int64_t tp = 0, np = 0, ng = 0;
            for (int64_t i = 0; i < n; i++) {
                int pi = p[i] == c, gi = g[i] == c;
                tp += pi & gi;
                np += pi;
                ng += gi;
            }
            dice[c] += (np + ng) ? 2.0 * (double)tp / (double)(np + ng) : 1.0;
        }
        mt_tensor_release(pred);
        mt_tensor_release(lab);
    }
    MT_TRY(mt_dist_allreduce_f64(D, dice, num_classes, MT_DIST_SUM));
    /* rank 0's sums, bit for bit, everywhere: best-model and early-stopping
     * decisions cannot differ between ranks */
    MT_TRY(mt_dist_broadcast(D, dice, sizeof *dice * (size_t)num_classes));
    for (int c = 1; c < num_classes; c++) dice[c] /= n_eval;
    return MT_OK;
}

/* ------------------------------------------------------------------ loop */

typedef struct {
    dataset data;
    mt_sampler sampler;
    mt_loader *loader;
    mt_module *model;
    mt_optim opt;
    int opt_ready;
    mt_schedule sched;
    mt_loss_config loss;
    mt_tensor *pos_weight;
    mt_rundir rd;
    int rd_open;
    mt_tb_writer *tb; /* run.tensorboard: the events file (rank 0), NULL after a failed write */
    mt_ddp *ddp;   /* under mpirun: bucketed gradient all-reduce */
    mt_nccl *nccl; /* its NCCL communicator (GPU ranks), or NULL */
    mt_dtype autocast; /* MT_BF16 for train.precision bf16-mixed, else MT_F32 (off) */
    int sync_bn_hook;  /* model.sync_batchnorm installed the all-reduce hook */
} trainer;

/* model.sync_batchnorm: the all-reduce of mt_all_reduce_sum (autograd/ops.h)
 * on the process communicator. A failed collective cannot be returned through
 * an op in the middle of a forward or backward, and the peers are inside the
 * same collective: the whole job ends here (mt_dist_abort: MPI_Abort, printing
 * the rank and the failure) instead of one rank aborting alone. */
static mt_status sync_bn_allreduce(double *buf, int64_t n, void *ctx) {
    mt_dist *D = ctx;
    if (mt_dist_allreduce_f64(D, buf, n, MT_DIST_SUM) != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "model.sync_batchnorm: batch-norm statistics all-reduce failed: %s",
                 mt_error_msg());
        mt_dist_abort(D, 1, msg);
    }
    return MT_OK;
}

static void trainer_free(trainer *t) {
    /* the hook is process-wide: a later run in this process starts without it */
    if (t->sync_bn_hook) mt_set_allreduce_hook(NULL, NULL);
    mt_loader_free(t->loader); /* stops the workers before the cases go */
    mt_sampler_free(&t->sampler);
    dataset_free(&t->data);
    if (t->opt_ready) mt_optim_free(&t->opt);
    mt_module_free(t->model);
    mt_tensor_release(t->pos_weight);
    mt_nccl_free(t->nccl); /* synchronises its stream before the buckets go */
    mt_ddp_free(t->ddp);
    mt_tb_close(t->tb);
    if (t->rd_open) mt_rundir_close(&t->rd);
}

/* Loss of one batch, with deep supervision (weights 1, 1/2, 1/4, ...
 * normalised to sum 1, as nnU-Net) when enabled. */
/* run.tensorboard: the scalars of metrics.jsonl also go to the events file
 * (launch/tbevents.h), flushed at every log step and validation so a crashed
 * run keeps its curves. A failed write is logged once and ends the events
 * file; training goes on (metrics.jsonl holds the same numbers). */
static void tb_failed(trainer *t) {
    mt_rundir_log(&t->rd, "warning: %s; no more TensorBoard events in this run\n", mt_error_msg());
    mt_tb_close(t->tb);
    t->tb = NULL;
}

static void tb_scalar(trainer *t, const char *tag, int64_t step, double v) {
    if (t->tb && mt_tb_scalar(t->tb, tag, step, v) != MT_OK) tb_failed(t);
}

static void tb_flush(trainer *t) {
    if (t->tb && mt_tb_flush(t->tb) != MT_OK) tb_failed(t);
}

static mt_status batch_loss(mt_tensor **loss, trainer *t, const mt_tensor *x, const mt_tensor *y) {
    mt_tensor *ds[MT_UNET3D_MAX_LEVELS];
    int n_ds = 0;
    /* bf16-mixed: forward and loss under autocast (backward and the optimizer
     * step run outside it; the losses compute in f32 themselves) */
    mt_dtype prev_autocast = mt_autocast_set(t->autocast);
    mt_tensor *logits = mt_unet3d_forward_ds(t->model, x, ds, &n_ds);
    mt_tensor *total = NULL;
    mt_status s = mt_loss_compute(&total, logits, y, &t->loss);
    mt_tensor_release(logits);
    if (s == MT_OK && n_ds > 0) {
        double wsum = 1.0, w = 1.0;
        for (int k = 0; k < n_ds; k++) wsum += (w *= 0.5);
        mt_tensor *acc = mt_mul_scalar(total, (float)(1.0 / wsum));
        mt_tensor_release(total);
        total = acc;
        w = 1.0;
        for (int k = 0; k < n_ds && s == MT_OK; k++) {
            w *= 0.5;
            int64_t stride = (int64_t)1 << (k + 1);
            mt_tensor *a = mt_tensor_slice(y, 2, 0, y->shape[2], stride);
            mt_tensor *b = mt_tensor_slice(a, 3, 0, y->shape[3], stride);
            mt_tensor *c = mt_tensor_slice(b, 4, 0, y->shape[4], stride);
            mt_tensor *yk = mt_tensor_contiguous(c);
            mt_tensor *lk = NULL;
            s = mt_loss_compute(&lk, ds[k], yk, &t->loss);
            if (s == MT_OK) {
                mt_tensor *wk = mt_mul_scalar(lk, (float)(w / wsum));
                mt_tensor *sum = mt_add(total, wk);
                mt_tensor_release(total);
                mt_tensor_release(wk);
                total = sum;
            }
            mt_tensor *rel[] = {a, b, c, yk, lk};
            for (size_t r = 0; r < sizeof rel / sizeof *rel; r++) mt_tensor_release(rel[r]);
        }
    }
    for (int k = 0; k < n_ds; k++) mt_tensor_release(ds[k]);
    mt_autocast_set(prev_autocast);
    if (s != MT_OK) {
        mt_tensor_release(total);
        return s;
    }
    *loss = total;
    return MT_OK;
}

/* Index of the monitored metric: 0 = val_dice_mean, c >= 1 = class c;
 * a config error listing the choices otherwise. */
static mt_status monitor_index(const mt_config *cfg, const dataset *d, int *out) {
    const char *m = mt_config_get_string(cfg, "train.early_stop.monitor");
    if (!strcmp(m, "val_dice_mean")) {
        *out = 0;
        return MT_OK;
    }
    for (int c = 1; c < d->num_classes; c++)
        if (!strcmp(m, d->metric_names[c])) {
            *out = c;
            return MT_OK;
        }
    char list[1024];
    size_t len = (size_t)snprintf(list, sizeof list, "val_dice_mean");
    for (int c = 1; c < d->num_classes && len < sizeof list; c++)
        len += (size_t)snprintf(list + len, sizeof list - len, ", %s", d->metric_names[c]);
    return mt_config_error(cfg, "train.early_stop.monitor", "\"%s\" is not a validation metric of this data (%s)", m,
                           list);
}

static mt_status save_weights(const char *path, const mt_config *cfg, trainer *T) {
    const mt_h5store_meta *store = T->data.store ? mt_h5store_get_meta(T->data.store) : NULL;
    const char *norm = store ? "see preprocess (prepared store)" : "per-case z-score";
    return mt_weights_save(path, cfg, T->model, T->data.num_classes, (const char *const *)T->data.class_names, norm,
                           store);
}

/* The device this rank trains on (run.device already resolved to *dev by
 * mt_config_device) made current; note: a line for the log (auto on the CPU
 * and why; GPU selection of MPI ranks). */
static mt_status select_device(const mt_config *cfg, const mt_dist *D, mt_device *dev, char *note, size_t nn) {
    const char *req = mt_config_get_string(cfg, "run.device");
    note[0] = 0;
    if (dev->type == MT_CPU) {
        if (!strcmp(req, "auto")) {
            const mt_backend *cb = mt_backend_get(MT_CUDA);
            const char *why = !cb ? "this medtrain was built without the CUDA backend"
                              : (cb->device_error && cb->device_error()) ? cb->device_error()
                                                                          : "the CUDA driver reports no GPU";
            snprintf(note, nn, "run.device auto: training on the CPU (%s%s)", cb ? "no usable GPU: " : "", why);
        }
        return MT_OK;
    }
    if (D->world > 1) {
        /* one GPU per node-local rank (or shared round-robin when allowed) */
        if (strchr(req, ':') && D->local_world > 1)
            return mt_config_error(cfg, "run.device",
                                   "%s names one GPU, but %d ranks run on this node: use cuda (each rank takes "
                                   "cuda:<node-local rank>)",
                                   req, D->local_world);
        int n_gpus = mt_backend_get(MT_CUDA)->device_count();
        int idx = dev->index;
        if (!strchr(req, ':') &&
            mt_dist_gpu_index(D->local_rank, D->local_world, n_gpus,
                              mt_config_get_bool(cfg, "distributed.allow_gpu_sharing"), &idx) != MT_OK)
            return config_error_from_last(cfg, "distributed.allow_gpu_sharing");
        dev->index = idx;
        snprintf(note, nn, "distributed: rank %d (node-local rank %d of %d) uses cuda:%d of %d GPU(s)%s", D->rank,
                 D->local_rank, D->local_world, idx, n_gpus,
                 D->local_world > n_gpus ? " (shared: distributed.allow_gpu_sharing)" : "");
    }
    if (mt_kernel(*dev, set_device)(dev->index) != 0) return config_error_from_last(cfg, "run.device");
    return MT_OK;
}

/* Loader batch allocation (data/loader.h) for a run on a GPU: page-locked
 * host memory of that device's backend. ctx: the mt_device. */
static mt_status pinned_batch_alloc(mt_tensor **out, mt_dtype dtype, int ndim, const int64_t *shape, void *ctx) {
    *out = mt_tensor_new_pinned(dtype, ndim, shape, *(const mt_device *)ctx);
    return MT_OK;
}

/* The gradient all-reduce of ranks started by mpirun (distributed.backend):
 * NCCL on GPU memory, or MPI on host buffers (the CPU, GPUs shared by several
 * ranks, or a build without NCCL). *use_nccl <- the choice. */
static mt_status select_comm(const mt_config *cfg, const mt_dist *D, mt_device dev, int *use_nccl) {
    const char *be = mt_config_get_string(cfg, "distributed.backend");
    *use_nccl = 0;
    if (!D->use_mpi) return MT_OK;
    int sharing = 0;
    if (dev.type == MT_CUDA) {
        int n_gpus = mt_backend_get(MT_CUDA)->device_count();
        sharing = D->local_world > n_gpus;
    }
    if (!strcmp(be, "nccl")) {
        if (dev.type != MT_CUDA)
            return mt_config_error(cfg, "distributed.backend", "nccl needs run.device cuda (this run is on %s)",
                                   "the CPU");
        if (!mt_nccl_available())
            return mt_config_error(cfg, "distributed.backend",
                                   "nccl: this medtrain was built without NCCL; use mpi or auto");
        if (sharing)
            return mt_config_error(cfg, "distributed.backend",
                                   "nccl needs one GPU per rank, but %d ranks share this node's GPUs; use mpi",
                                   D->local_world);
        *use_nccl = 1;
    } else if (!strcmp(be, "auto")) {
        *use_nccl = dev.type == MT_CUDA && mt_nccl_available() && !sharing;
    }
    return MT_OK;
}

/* Reads the n pending (detached, 0-d) losses back to the host (one wait for
 * the device at the first), adds them to *acc / *n_acc and releases them; a
 * non-finite loss is an error naming its step. */
static mt_status read_losses(mt_tensor **pending, const int64_t *step, int *n, double *acc, int64_t *n_acc) {
    mt_status s = MT_OK;
    for (int k = 0; k < *n; k++) {
        if (s == MT_OK) {
            double v = mt_tensor_item(pending[k]);
            if (!isfinite(v))
                s = mt_error_set(MT_ERR_INVALID,
                                 "training diverged: loss is %g at step %lld (lower optim.lr or set "
                                 "optim.clip_grad_norm)",
                                 v, (long long)step[k]);
            *acc += v;
            (*n_acc)++;
        }
        mt_tensor_release(pending[k]);
    }
    *n = 0;
    return s;
}

/* Peak memory of the training device in MiB (the host allocator's on the CPU). */
static double peak_mem_mib(const mt_backend *b) {
    mt_alloc_stats st;
    memset(&st, 0, sizeof st);
    if (b && b->memory_stats)
        b->memory_stats(&st);
    else
        mt_host_alloc_stats(&st);
    return (double)st.peak_in_use / 1048576.0;
}

mt_status mt_train_run(const mt_config *cfg, const char *resume_path) {
    trainer T;
    memset(&T, 0, sizeof T);
    mt_status s = MT_OK;

    /* ---- everything checkable before any output is written ---- */
    MT_TRY(mt_config_check(cfg));
    mt_device dev;
    MT_TRY(mt_config_device(cfg, &dev));
    const char *precision = mt_config_get_string(cfg, "train.precision");
    /* fp32: full fp32; tf32: fp32 convolutions/matmuls may use tf32 inputs
     * (GPU only); bf16-mixed: autocast to bf16 around forward + loss */
    T.autocast = !strcmp(precision, "bf16-mixed") ? MT_BF16 : MT_F32;
    mt_backend_set_allow_tf32(!strcmp(precision, "tf32"));
    mt_unet3d_config mc;
    MT_TRY(mt_train_model_config(cfg, &mc));
    MT_TRY(schedule_from(cfg, &T.sched));
    mt_augment_config aug;
    MT_TRY(augment_from(cfg, &aug));

    mt_loss_kind lk;
    MT_TRY(mt_loss_kind_from_name(mt_config_get_string(cfg, "loss.name"), &lk));
    T.loss = mt_loss_config_default(lk);
    T.loss.lambda_dice = mt_config_get_float(cfg, "loss.lambda_dice");
    T.loss.lambda_ce = mt_config_get_float(cfg, "loss.lambda_ce");
    T.loss.dice.include_background = mt_config_get_bool(cfg, "loss.include_background");
    T.loss.dice.batch = mt_config_get_bool(cfg, "loss.batch_dice");

    int threads = (int)mt_config_get_int(cfg, "run.threads");
    mt_cpu_set_num_threads(threads);

    /* ---- ranks (launch/dist.h): MPI only when started by mpirun ---- */
    mt_dist *D = mt_dist_get();
    mt_dist_set_timeout(D, mt_config_get_float(cfg, "distributed.timeout_s"));
    const int rank = D->rank, world = D->world, is0 = rank == 0;
    char dev_note[512] = "";
    if ((s = select_device(cfg, D, &dev, dev_note, sizeof dev_note)) != MT_OK) goto out;
    int use_nccl = 0;
    if ((s = select_comm(cfg, D, dev, &use_nccl)) != MT_OK) goto out;
/* Only rank 0 writes: log lines, metrics, checkpoints and weights. */
#define RLOG(...)                                                                                                    \
    do {                                                                                                             \
        if (is0) mt_rundir_log(&T.rd, __VA_ARGS__);                                                                  \
    } while (0)

    /* ---- data ---- */
    const char *source = mt_config_get_string(cfg, "data.source");
    s = !strcmp(source, "phantom") ? load_phantom(&T.data, cfg) : load_store(&T.data, cfg);
    if (s != MT_OK) goto out;
    int num_classes = T.data.num_classes;
    int monitor = 0;
    if ((s = monitor_index(cfg, &T.data, &monitor)) != MT_OK) goto out;
    double pw = mt_config_get_float(cfg, "loss.pos_weight");
    if (pw != 1.0) {
        T.pos_weight = mt_tensor_full(MT_F32, MT_SHAPE(mc.out_channels), pw, dev);
        T.loss.pos_weight = T.pos_weight;
    }
    int n_val = T.data.val.n;
    int n_eval = (int)mt_config_get_int(cfg, "train.eval_cases");
    if (n_eval == 0 || n_eval > n_val) n_eval = n_val;

    mt_sampler_config scfg;
    mt_sampler_config_default(&scfg);
    int np;
    const int64_t *patch = mt_config_get_int_list(cfg, "data.patch_size", &np);
    for (int a = 0; a < 3; a++) scfg.patch[a] = patch[a];
    for (int a = 0; a < 3; a++) scfg.flip[a] = 0; /* mirroring is augment.p_flip */
    scfg.batch_size = (int)mt_config_get_int(cfg, "train.batch_size");
    scfg.num_classes = num_classes;
    scfg.fg_prob = mt_config_get_float(cfg, "data.foreground_oversample");
    if ((s = mt_sampler_init(&T.sampler, &scfg)) != MT_OK) goto out;
    for (int k = 0; k < T.data.train.n; k++)
        if ((s = mt_sampler_add_case(&T.sampler, T.data.train.images[k], T.data.train.labels[k])) != MT_OK) {
            mt_error_prefix(s, "training case %s: ", T.data.train.ids[k]);
            goto out;
        }

    /* ---- model, optimizer ---- */
    uint64_t seed = (uint64_t)mt_config_get_int(cfg, "run.seed");
    if ((s = mt_unet3d_new(&T.model, &mc, seed)) != MT_OK) goto out;
    /* parameters are initialised on the host (same values on every device),
     * then moved; the optimizer state is created on the parameters' device */
    if (dev.type != MT_CPU && (s = mt_module_to_device(T.model, dev)) != MT_OK) goto out;
    if ((s = optim_from(cfg, &T.opt, T.model)) != MT_OK) goto out;
    T.opt_ready = 1;

    mt_train_state ts;
    memset(&ts, 0, sizeof ts);
    mt_rng_init_stream(&ts.rng, seed, 0x5a3b1e, 0 /* rank */, 0 /* worker */);
    if (resume_path && (s = mt_checkpoint_restore(resume_path, T.model, &T.opt, &ts)) != MT_OK) goto out;
    /* every rank starts from rank 0's weights (ranks restore the same
     * checkpoint, so the optimizer state agrees too); buckets and hooks */
    /* (under mpirun even with one rank: the distributed path really runs) */
    if (D->use_mpi &&
        (s = mt_ddp_init(&T.ddp, D, T.model, mt_config_get_float(cfg, "distributed.bucket_mb"),
                         mt_config_get_float(cfg, "distributed.first_bucket_mb"))) != MT_OK)
        goto out;
    if (T.ddp && use_nccl) {
        if ((s = mt_nccl_init(&T.nccl, D, mt_config_get_float(cfg, "distributed.timeout_s"))) != MT_OK) goto out;
        if ((s = mt_ddp_use_nccl(T.ddp, T.nccl)) != MT_OK) goto out;
    }
    /* SyncBatchNorm: flag every BatchNorm3d; the statistics all-reduce goes
     * through the autograd hook (host f64 buffers over MPI, also for GPU
     * ranks), installed only with several ranks: with one it is plain batch norm */
    int sync_bn = mt_config_get_bool(cfg, "model.sync_batchnorm");
    int n_sync_bn = sync_bn ? mt_module_convert_sync_batchnorm(T.model, 1) : 0;
    if (sync_bn && D->use_mpi && world > 1) {
        mt_set_allreduce_hook(sync_bn_allreduce, D);
        T.sync_bn_hook = 1;
    }

    /* ---- loader: batch k depends only on (seed, rank, k), so a resumed run
     * continues with the batches an uninterrupted one would have seen ---- */
    mt_loader_config lcfg;
    mt_loader_config_default(&lcfg);
    lcfg.num_workers = (int)mt_config_get_int(cfg, "data.num_workers");
    lcfg.queue_capacity = (int)mt_config_get_int(cfg, "data.queue");
    if (g_shard_global_batch) lcfg.shard_world = world;
    /* batches for a GPU in page-locked host memory (faster copies) */
    if (dev.type != MT_CPU) {
        lcfg.alloc = pinned_batch_alloc;
        lcfg.alloc_ctx = &dev;
    }
    if ((s = mt_loader_init(&T.loader, &lcfg, &T.sampler, &aug, seed, rank, ts.step)) != MT_OK) goto out;

    /* ---- run directory (only now: nothing is written for a bad config);
     * rank 0 only: the other ranks write nothing ---- */
    if (is0) {
        if ((s = mt_rundir_open(&T.rd, cfg, resume_path)) != MT_OK) goto out;
        T.rd_open = 1;
        /* a resumed run adds a new events file; TensorBoard merges the files of a directory */
        if (mt_config_get_bool(cfg, "run.tensorboard") && (s = mt_tb_open(&T.tb, T.rd.path)) != MT_OK) goto out;
    }

    int64_t steps = mt_config_get_int(cfg, "train.steps");
    int64_t log_every = mt_config_get_int(cfg, "run.log_every");
    int64_t val_every = mt_config_get_int(cfg, "train.val_every");
    int64_t ckpt_every = mt_config_get_int(cfg, "train.checkpoint_every");
    int keep = (int)mt_config_get_int(cfg, "train.keep_checkpoints");
    double clip = mt_config_get_float(cfg, "optim.clip_grad_norm");
    double time_limit = 60.0 * mt_config_get_float(cfg, "train.time_limit_min");
    int64_t patience = mt_config_get_int(cfg, "train.early_stop.patience");
    int mode_max = !strcmp(mt_config_get_string(cfg, "train.early_stop.mode"), "max");
    double min_delta = mt_config_get_float(cfg, "train.early_stop.min_delta");
    const char *monitor_name = mt_config_get_string(cfg, "train.early_stop.monitor");
    int batch = scfg.batch_size;

    const char *rdpath = is0 ? T.rd.path : "";
    size_t plen = strlen(rdpath) + 32;
    char *wpath = malloc(plen), *bpath = malloc(plen);
    MT_CHECK(wpath && bpath);
    snprintf(wpath, plen, "%s/model.safetensors", rdpath);
    snprintf(bpath, plen, "%s/model_best.safetensors", rdpath);

    RLOG("medtrain %s: run %s\n", MT_VERSION, rdpath);
    if (T.ddp)
        RLOG("distributed: %d rank%s, gradient all-reduce with %s%s in %d bucket(s) (%g MiB, first %g MiB)%s\n",
             world, world == 1 ? "" : "s", T.nccl ? "NCCL " : "MPI",
             T.nccl ? mt_nccl_version() : " (host buffers)", mt_ddp_num_buckets(T.ddp), mt_config_get_float(cfg, "distributed.bucket_mb"),
             mt_config_get_float(cfg, "distributed.first_bucket_mb"),
             g_shard_global_batch ? "; test mode: ranks share rank 0's global batch" : "");
    if (sync_bn)
        RLOG("sync batch norm: %d BatchNorm3d module(s) %s\n", n_sync_bn,
             T.sync_bn_hook ? "compute training statistics over all ranks (one MPI all-reduce each per forward "
                              "and per backward)"
                            : "flagged, but one rank: plain batch norm");
    RLOG("data: %s\n", T.data.desc);
    RLOG("model: UNet3D %d levels, %lld parameters, %.2f GFLOP per training step\n", mc.n_levels,
         (long long)mt_module_num_params(T.model), 3.0 * mt_unet3d_flops(&mc, batch, patch) * 1e-9);
    {
        char dn[32];
        mt_device_name(dev, dn, sizeof dn);
        RLOG("device: %s%s, %d CPU threads; batch %d (global batch %d = %d x %d ranks), patch %lldx%lldx%lld; %s; "
             "%d loader worker(s)\n",
             dn, dev.type == MT_CPU ? "" : world > 1 ? " (this rank's)" : "", mt_cpu_get_num_threads(), batch,
             batch * world, batch, world, (long long)patch[0], (long long)patch[1], (long long)patch[2], precision,
             lcfg.num_workers);
    }
    if (*dev_note) RLOG("%s\n", dev_note);
    if (!strcmp(precision, "tf32") && dev.type == MT_CPU)
        RLOG("note: tf32 only changes GPU tensor-core matmuls; the CPU computes in fp32\n");
    if (dev.type != MT_CPU)
        RLOG("note: the training loss is read back from the device at log steps only (run.log_every), so a "
             "non-finite loss is detected at the next log step\n");
    if (resume_path) RLOG("resumed from %s at step %lld\n", resume_path, (long long)ts.step);

    double *dice = calloc((size_t)num_classes, sizeof *dice);
    MT_CHECK(dice);
    /* losses not yet read back (device: until the next log step; CPU: read at once) */
    int cap_pending = log_every < 1024 ? (int)log_every : 1024;
    mt_tensor **pending = calloc((size_t)cap_pending, sizeof *pending);
    int64_t *pending_step = calloc((size_t)cap_pending, sizeof *pending_step);
    int n_pending = 0;
    MT_CHECK(pending && pending_step);
    const mt_backend *devb = mt_backend_get(dev.type);
    double t0 = now_s(), t_last = t0, loss_acc = 0, val_time = 0;
    int64_t step_last = ts.step, loss_n = 0;
    mt_alloc_stats ast;
    int validated = 0; /* dice[] holds the model's current state */
    const char *stop_reason = NULL;
    if (ts.step >= steps)
        RLOG("checkpoint is at step %lld: train.steps = %lld already reached\n", (long long)ts.step, (long long)steps);
    while (ts.step < steps && !stop_reason) {
        double lr = mt_schedule_lr(&T.sched, ts.step);
        mt_optim_set_lr(&T.opt, lr);
        mt_tensor *x = NULL, *y = NULL, *loss = NULL;
        if ((s = mt_loader_next(T.loader, &x, &y)) != MT_OK) break;
        if (dev.type != MT_CPU) {
            /* image f32, labels u8 (the losses one-hot them on the device) */
            mt_tensor *xd = mt_tensor_to_device(x, dev), *yd = mt_tensor_to_device(y, dev);
            mt_tensor_release(x);
            mt_tensor_release(y);
            x = xd;
            y = yd;
        }
        s = batch_loss(&loss, &T, x, y);
        mt_tensor_release(x);
        mt_tensor_release(y);
        if (s != MT_OK) break;
        pending[n_pending] = mt_tensor_detach(loss);
        pending_step[n_pending++] = ts.step + 1;
        /* on the CPU reading the loss costs nothing: a divergence stops before its update;
         * (a device run with log_every > 1024 reads them every 1024 steps) */
        if ((dev.type == MT_CPU || n_pending == cap_pending) &&
            (s = read_losses(pending, pending_step, &n_pending, &loss_acc, &loss_n)) != MT_OK) {
            mt_tensor_release(loss);
            break;
        }
        mt_optim_zero_grad(&T.opt);
        s = mt_backward(loss, NULL, 0);
        mt_tensor_release(loss);
        if (s != MT_OK) break;
        /* world > 1: wait for the bucket all-reduces; .grad = mean over ranks */
        if (T.ddp && (s = mt_ddp_finish(T.ddp)) != MT_OK) break;
        /* batch norm running statistics: rank 0's everywhere */
        if (T.ddp && (s = mt_ddp_sync_buffers(T.ddp)) != MT_OK) break;
        if (clip > 0) /* on the device: nothing read back */
            mt_tensor_release(mt_optim_clip_grad_norm_t(T.opt.params, T.opt.n_params, clip, 2.0));
        mt_optim_step(&T.opt);
        ts.step++;

        if (time_limit > 0) {
            /* every rank stops at the same step: the flag is all-reduced (max) */
            int64_t over = now_s() - t0 >= time_limit;
            if ((s = mt_dist_allreduce_i64(D, &over, 1, MT_DIST_MAX)) != MT_OK) break;
            if (over) stop_reason = "train.time_limit_min reached";
        }
        int last = ts.step == steps || stop_reason;
        if (ts.step % log_every == 0 || last) {
            if ((s = read_losses(pending, pending_step, &n_pending, &loss_acc, &loss_n)) != MT_OK) break;
            /* the loss of the global batch: mean over ranks */
            if (world > 1) {
                if ((s = mt_dist_allreduce_f64(D, &loss_acc, 1, MT_DIST_SUM)) != MT_OK) break;
                loss_acc /= world;
            }
            double t = now_s();
            double sps = (double)(ts.step - step_last) * batch * world / (t - t_last);
            double rate = (double)(ts.step - step_last) / (t - t_last);
            char eta[32];
            fmt_duration(eta, sizeof eta, (double)(steps - ts.step) / rate);
            mt_host_alloc_stats(&ast);
            double peak_mib = peak_mem_mib(devb);
            RLOG("step %lld/%lld  loss %.4f  lr %.3e  %.1f samples/s  ETA %s  peak mem %.0f MiB\n", (long long)ts.step,
                 (long long)steps, loss_acc / loss_n, lr, sps, eta, peak_mib);
            mt_json_obj o;
            mt_json_obj_begin(&o);
            mt_json_obj_int(&o, "step", ts.step);
            mt_json_obj_float(&o, "loss", loss_acc / loss_n);
            mt_json_obj_float(&o, "lr", lr);
            mt_json_obj_float(&o, "samples_per_s", sps);
            mt_json_obj_float(&o, "time_s", t - t0);
            mt_json_obj_int(&o, "host_peak_bytes", ast.peak_in_use);
            mt_json_obj_float(&o, "peak_mem_mib", peak_mib);
            mt_json_obj_end(&o);
            if (is0) mt_rundir_metrics(&T.rd, &o);
            mt_json_obj_free(&o);
            tb_scalar(&T, "train/loss", ts.step, loss_acc / loss_n);
            tb_scalar(&T, "train/lr", ts.step, lr);
            tb_scalar(&T, "train/samples_per_s", ts.step, sps);
            tb_scalar(&T, "train/peak_mem_mib", ts.step, peak_mib);
            tb_flush(&T);
            loss_acc = 0;
            loss_n = 0;
            t_last = now_s();
            step_last = ts.step;
        }
        if (n_eval > 0 && ((val_every > 0 && ts.step % val_every == 0) || last)) {
            double tv = now_s();
            if ((s = validate(T.model, &T.data.val, n_eval, num_classes, patch, dice, D, T.autocast)) != MT_OK) break;
            validated = 1;
            double mean = 0;
            mt_json_obj o;
            mt_json_obj_begin(&o);
            mt_json_obj_int(&o, "step", ts.step);
            mt_json_obj_float(&o, "time_s", now_s() - t0);
            char line[1024];
            size_t len = 0;
            for (int c = 1; c < num_classes; c++) {
                mt_json_obj_float(&o, T.data.metric_names[c], dice[c]);
                mean += dice[c];
                if (len < sizeof line)
                    len += (size_t)snprintf(line + len, sizeof line - len, "  %s %.4f", T.data.class_names[c], dice[c]);
            }
            mean /= (num_classes - 1);
            mt_json_obj_float(&o, "val_dice_mean", mean);
            /* best model and early stopping */
            double v = monitor ? dice[monitor] : mean;
            int better = !ts.has_best || (mode_max ? v > ts.best + min_delta : v < ts.best - min_delta);
            if (better) {
                ts.has_best = 1;
                ts.best = v;
                ts.best_step = ts.step;
                ts.bad_validations = 0;
                if (is0 && (s = save_weights(bpath, cfg, &T)) != MT_OK) {
                    mt_json_obj_free(&o);
                    break;
                }
            } else {
                ts.bad_validations++;
            }
            mt_json_obj_float(&o, "best", ts.best);
            mt_json_obj_int(&o, "best_step", ts.best_step);
            mt_json_obj_end(&o);
            if (is0) mt_rundir_metrics(&T.rd, &o);
            mt_json_obj_free(&o);
            if (T.tb) { /* val_dice_<class> -> val/dice_<class>; val/best_<monitor>: best so far */
                char tag[256];
                for (int c = 1; c < num_classes; c++) {
                    snprintf(tag, sizeof tag, "val/%s", T.data.metric_names[c] + 4);
                    tb_scalar(&T, tag, ts.step, dice[c]);
                }
                tb_scalar(&T, "val/dice_mean", ts.step, mean);
                snprintf(tag, sizeof tag, "val/best_%s",
                         strncmp(monitor_name, "val_", 4) ? monitor_name : monitor_name + 4);
                tb_scalar(&T, tag, ts.step, ts.best);
                tb_flush(&T);
            }
            RLOG("validation at step %lld (%d cases): Dice%s  mean %.4f  (%s best %.4f at step %lld%s)\n",
                 (long long)ts.step, n_eval, line, mean, monitor_name, ts.best, (long long)ts.best_step,
                 better ? ", new best" : "");
            if (patience > 0 && ts.bad_validations >= patience && !stop_reason) {
                stop_reason = "early stopping";
                RLOG("early stopping: %s did not improve for %lld validations (best %.4f at step "
                     "%lld)\n",
                     monitor_name, (long long)ts.bad_validations, ts.best, (long long)ts.best_step);
                last = 1;
            }
            val_time += now_s() - tv;
            t_last += now_s() - tv; /* keep samples/s about training */
        } else {
            validated = 0;
        }
        if (is0 && ((ckpt_every > 0 && ts.step % ckpt_every == 0) || last)) {
            mt_safetensors st;
            mt_safetensors_init(&st);
            char *written = NULL;
            s = mt_checkpoint_build(&st, cfg, T.model, &T.opt, &ts);
            if (s == MT_OK) s = mt_rundir_save_checkpoint(&T.rd, &st, ts.step, keep, &written);
            mt_safetensors_free(&st);
            free(written);
            if (s != MT_OK) break;
        }
    }
    if (s == MT_OK && stop_reason && strcmp(stop_reason, "early stopping"))
        RLOG("stopped at step %lld/%lld: %s\n", (long long)ts.step, (long long)steps, stop_reason);
    if (s == MT_OK) {
        double total = now_s() - t0;
        char dur[32];
        fmt_duration(dur, sizeof dur, total);
        if (is0) s = save_weights(wpath, cfg, &T);
        if (s == MT_OK) {
            mt_host_alloc_stats(&ast);
            mt_loader_stats lst;
            mt_loader_get_stats(T.loader, &lst);
            char dn[32];
            mt_device_name(dev, dn, sizeof dn);
            if (dev.type == MT_CPU)
                RLOG("done: %lld steps in %s (validation %.0fs, waiting for data %.1fs); host memory peak %.1f "
                     "MiB\n",
                     (long long)ts.step, dur, val_time, lst.wait_s, (double)ast.peak_in_use / 1048576.0);
            else
                RLOG("done: %lld steps in %s (validation %.0fs, waiting for data %.1fs); %s memory peak %.1f MiB, "
                     "host memory peak %.1f MiB\n",
                     (long long)ts.step, dur, val_time, lst.wait_s, dn, peak_mem_mib(devb),
                     (double)ast.peak_in_use / 1048576.0);
            if (n_eval > 0 && !validated) s = validate(T.model, &T.data.val, n_eval, num_classes, patch, dice, D, T.autocast);
            if (n_eval > 0 && s == MT_OK) {
                double mean = 0;
                for (int c = 1; c < num_classes; c++) {
                    RLOG("final Dice %-10s %.4f\n", T.data.class_names[c], dice[c]);
                    mean += dice[c];
                }
                RLOG("final Dice %-10s %.4f\n", "mean", mean / (num_classes - 1));
            }
            if (s == MT_OK) {
                RLOG("weights: %s\n", wpath);
                if (ts.has_best)
                    RLOG("best weights (%s %.4f at step %lld): %s\n", monitor_name, ts.best, (long long)ts.best_step,
                         bpath);
            }
        }
    }
    for (int k = 0; k < n_pending; k++) mt_tensor_release(pending[k]);
    free(pending);
    free(pending_step);
    free(wpath);
    free(bpath);
    free(dice);
out:
    trainer_free(&T);
    return s;
#undef RLOG
}
