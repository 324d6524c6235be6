/* The training loop: config -> data -> model -> loss -> optimizer/schedule
 * -> steps with logging, validation and checkpoints -> final weights.
 *
 * Determinism: a run is a function of the config. Parameters are initialised
 * from run.seed; patches come from one Philox stream (rng, saved in
 * checkpoints); so `--resume` continues with exactly the losses an
 * uninterrupted run would have produced (same thread count).
 */
#include "launch/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "data/phantom.h"
#include "data/sampler.h"
#include "eval/postprocess.h"
#include "eval/sliding_window.h"
#include "launch/checkpoint.h"
#include "launch/fsutil.h"
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

/* ------------------------------------------------------------ building */

static mt_status model_config_from(const mt_config *cfg, mt_unet3d_config *mc) {
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
    if (mt_unet3d_config_validate(mc) != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "model.features", "%s", msg);
    }
    int np;
    const int64_t *patch = mt_config_get_int_list(cfg, "data.patch_size", &np);
    if (mt_unet3d_check_patch(mc, patch) != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "data.patch_size", "%s", msg);
    }
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
    if (mt_schedule_validate(s) != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "sched.name", "%s", msg);
    }
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
    if (s != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "optim.name", "%s", msg);
    }
    return MT_OK;
}

/* ------------------------------------------------------------- validation */

/* Dice per class (index 1..C-1) as the mean over cases of per-case Dice,
 * from sliding-window inference with the training patch size (overlap 0.5,
 * Gaussian weighting, as nnU-Net validates); a class absent from both
 * prediction and reference scores 1. */
static mt_status validate(mt_module *model, const mt_phantom_dataset *val, int n_eval, int num_classes,
                          const int64_t *patch, double *dice /* [num_classes] */) {
    mt_eval_sw_opts o;
    mt_eval_sw_opts_default(&o, patch);
    for (int c = 0; c < num_classes; c++) dice[c] = 0;
    for (int k = 0; k < n_eval; k++) {
        mt_tensor *scores = NULL, *pred = NULL;
        MT_TRY(mt_eval_sliding_window_model(&scores, val->images[k], model, &o));
        mt_status s = mt_eval_argmax(&pred, scores);
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
    for (int c = 1; c < num_classes; c++) dice[c] /= n_eval;
    return MT_OK;
}

/* ------------------------------------------------------------------ loop */

typedef struct {
    mt_phantom_dataset train, val;
    mt_sampler sampler;
    mt_module *model;
    mt_optim opt;
    int opt_ready;
    mt_schedule sched;
    mt_loss_config loss;
    mt_tensor *pos_weight;
    mt_rundir rd;
    int rd_open;
} trainer;

static void trainer_free(trainer *t) {
    mt_phantom_dataset_free(&t->train);
    mt_phantom_dataset_free(&t->val);
    mt_sampler_free(&t->sampler);
    if (t->opt_ready) mt_optim_free(&t->opt);
    mt_module_free(t->model);
    mt_tensor_release(t->pos_weight);
    if (t->rd_open) mt_rundir_close(&t->rd);
}

/* Loss of one batch, with deep supervision (weights 1, 1/2, 1/4, ...
 * normalised to sum 1, as nnU-Net) when enabled. */
static mt_status batch_loss(mt_tensor **loss, trainer *t, const mt_tensor *x, const mt_tensor *y) {
    mt_tensor *ds[MT_UNET3D_MAX_LEVELS];
    int n_ds = 0;
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
    if (s != MT_OK) {
        mt_tensor_release(total);
        return s;
    }
    *loss = total;
    return MT_OK;
}

mt_status mt_train_run(const mt_config *cfg, const char *resume_path) {
    trainer T;
    memset(&T, 0, sizeof T);
    mt_status s = MT_OK;

    /* ---- everything checkable before any output is written ---- */
    MT_TRY(mt_config_check(cfg));
    mt_device dev;
    MT_TRY(mt_config_device(cfg, &dev));
    if (dev.type != MT_CPU)
        return mt_config_error(cfg, "run.device", "only the CPU backend is built into this medtrain");
    const char *precision = mt_config_get_string(cfg, "train.precision");
    if (!strcmp(precision, "bf16-mixed"))
        return mt_config_error(cfg, "train.precision",
                               "bf16-mixed is not available yet in this build; use fp32");
    if (strcmp(mt_config_get_string(cfg, "data.source"), "phantom") != 0)
        return mt_config_error(cfg, "data.source",
                               "only the synthetic phantom is available in this build (HDF5 stores "
                               "come with `medtrain prepare`)");
    mt_unet3d_config mc;
    MT_TRY(model_config_from(cfg, &mc));
    MT_TRY(schedule_from(cfg, &T.sched));

    int num_classes = (int)mt_config_get_int(cfg, "data.phantom.num_classes");
    mt_loss_kind lk;
    MT_TRY(mt_loss_kind_from_name(mt_config_get_string(cfg, "loss.name"), &lk));
    T.loss = mt_loss_config_default(lk);
    T.loss.lambda_dice = mt_config_get_float(cfg, "loss.lambda_dice");
    T.loss.lambda_ce = mt_config_get_float(cfg, "loss.lambda_ce");
    T.loss.dice.include_background = mt_config_get_bool(cfg, "loss.include_background");
    T.loss.dice.batch = mt_config_get_bool(cfg, "loss.batch_dice");
    double pw = mt_config_get_float(cfg, "loss.pos_weight");
    if (pw != 1.0) {
        T.pos_weight = mt_tensor_full(MT_F32, MT_SHAPE(mc.out_channels), pw, dev);
        T.loss.pos_weight = T.pos_weight;
    }

    int threads = (int)mt_config_get_int(cfg, "run.threads");
    mt_cpu_set_num_threads(threads);

    /* ---- data ---- */
    mt_phantom_config pc;
    mt_phantom_config_default(&pc);
    int ns;
    const int64_t *shape = mt_config_get_int_list(cfg, "data.phantom.shape", &ns);
    for (int a = 0; a < 3; a++) pc.shape[a] = shape[a];
    pc.num_classes = num_classes;
    pc.seed = (uint64_t)mt_config_get_int(cfg, "data.phantom.seed");
    if ((s = mt_phantom_config_check(&pc)) != MT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "data.phantom.shape", "%s", msg);
    }
    int n_cases = (int)mt_config_get_int(cfg, "data.phantom.num_cases");
    int n_val = (int)mt_config_get_int(cfg, "data.val_cases");
    int n_train = n_cases - n_val;
    int n_eval = (int)mt_config_get_int(cfg, "train.eval_cases");
    if (n_eval == 0 || n_eval > n_val) n_eval = n_val;

    double t_data = now_s();
    if ((s = mt_phantom_dataset_init(&T.train, &pc, 0, n_train)) != MT_OK) goto out;
    if (n_val > 0 && (s = mt_phantom_dataset_init(&T.val, &pc, n_train, n_val)) != MT_OK) goto out;
    t_data = now_s() - t_data;

    mt_sampler_config scfg;
    mt_sampler_config_default(&scfg);
    int np;
    const int64_t *patch = mt_config_get_int_list(cfg, "data.patch_size", &np);
    for (int a = 0; a < 3; a++) scfg.patch[a] = patch[a];
    scfg.batch_size = (int)mt_config_get_int(cfg, "train.batch_size");
    scfg.num_classes = num_classes;
    scfg.fg_prob = mt_config_get_float(cfg, "data.foreground_oversample");
    if ((s = mt_sampler_init(&T.sampler, &scfg)) != MT_OK) goto out;
    for (int k = 0; k < n_train; k++)
        if ((s = mt_sampler_add_case(&T.sampler, T.train.images[k], T.train.labels[k])) != MT_OK) goto out;

    /* ---- model, optimizer ---- */
    uint64_t seed = (uint64_t)mt_config_get_int(cfg, "run.seed");
    if ((s = mt_unet3d_new(&T.model, &mc, seed)) != MT_OK) goto out;
    if ((s = optim_from(cfg, &T.opt, T.model)) != MT_OK) goto out;
    T.opt_ready = 1;

    mt_train_state ts;
    ts.step = 0;
    mt_rng_init_stream(&ts.rng, seed, 0x5a3b1e, 0 /* rank */, 0 /* worker */);
    if (resume_path && (s = mt_checkpoint_restore(resume_path, T.model, &T.opt, &ts)) != MT_OK) goto out;

    /* ---- run directory (only now: nothing is written for a bad config) ---- */
    if ((s = mt_rundir_open(&T.rd, cfg, resume_path)) != MT_OK) goto out;
    T.rd_open = 1;

    int64_t steps = mt_config_get_int(cfg, "train.steps");
    int64_t log_every = mt_config_get_int(cfg, "run.log_every");
    int64_t val_every = mt_config_get_int(cfg, "train.val_every");
    int64_t ckpt_every = mt_config_get_int(cfg, "train.checkpoint_every");
    int keep = (int)mt_config_get_int(cfg, "train.keep_checkpoints");
    double clip = mt_config_get_float(cfg, "optim.clip_grad_norm");
    int batch = scfg.batch_size;

    mt_rundir_log(&T.rd, "medtrain %s: run %s\n", MT_VERSION, T.rd.path);
    mt_rundir_log(&T.rd,
                  "data: synthetic phantom, %d train + %d validation cases of %lldx%lldx%lld, %d classes "
                  "(generated in %.1fs)\n",
                  n_train, n_val, (long long)pc.shape[0], (long long)pc.shape[1], (long long)pc.shape[2],
                  num_classes, t_data);
    mt_rundir_log(&T.rd, "model: UNet3D %d levels, %lld parameters, %.2f GFLOP per training step\n",
                  mc.n_levels, (long long)mt_module_num_params(T.model),
                  3.0 * mt_unet3d_flops(&mc, batch, patch) * 1e-9);
    mt_rundir_log(&T.rd, "device: cpu, %d threads; batch %d (global batch %d), patch %lldx%lldx%lld; %s\n",
                  mt_cpu_get_num_threads(), batch, batch, (long long)patch[0], (long long)patch[1],
                  (long long)patch[2], precision);
    if (!strcmp(precision, "tf32"))
        mt_rundir_log(&T.rd, "note: tf32 only changes GPU tensor-core matmuls; the CPU computes in fp32\n");
    if (resume_path) mt_rundir_log(&T.rd, "resumed from %s at step %lld\n", resume_path, (long long)ts.step);

    double *dice = calloc((size_t)num_classes, sizeof *dice);
    double t0 = now_s(), t_last = t0, loss_acc = 0, val_time = 0;
    int64_t step_last = ts.step, loss_n = 0;
    mt_alloc_stats ast;
    int validated = 0; /* dice[] holds the model's current state */
    if (ts.step >= steps)
        mt_rundir_log(&T.rd, "checkpoint is at step %lld: train.steps = %lld already reached\n",
                      (long long)ts.step, (long long)steps);
    while (ts.step < steps) {
        double lr = mt_schedule_lr(&T.sched, ts.step);
        mt_optim_set_lr(&T.opt, lr);
        mt_tensor *x = NULL, *y = NULL, *loss = NULL;
        if ((s = mt_sampler_batch(&x, &y, &T.sampler, &ts.rng, NULL)) != MT_OK) break;
        s = batch_loss(&loss, &T, x, y);
        mt_tensor_release(x);
        mt_tensor_release(y);
        if (s != MT_OK) break;
        double lv = mt_tensor_item(loss);
        if (!isfinite(lv)) {
            mt_tensor_release(loss);
            s = mt_error_set(MT_ERR_INVALID,
                             "training diverged: loss is %g at step %lld (lower optim.lr or set "
                             "optim.clip_grad_norm)",
                             lv, (long long)ts.step + 1);
            break;
        }
        mt_optim_zero_grad(&T.opt);
        s = mt_backward(loss, NULL, 0);
        mt_tensor_release(loss);
        if (s != MT_OK) break;
        if (clip > 0) mt_optim_clip_grad_norm(T.opt.params, T.opt.n_params, clip, 2.0);
        mt_optim_step(&T.opt);
        ts.step++;
        loss_acc += lv;
        loss_n++;

        int last = ts.step == steps;
        if (ts.step % log_every == 0 || last) {
            double t = now_s();
            double sps = (double)(ts.step - step_last) * batch / (t - t_last - 0.0);
            double rate = (double)(ts.step - step_last) / (t - t_last);
            char eta[32];
            fmt_duration(eta, sizeof eta, (double)(steps - ts.step) / rate);
            mt_host_alloc_stats(&ast);
            mt_rundir_log(&T.rd, "step %lld/%lld  loss %.4f  lr %.3e  %.1f samples/s  ETA %s\n",
                          (long long)ts.step, (long long)steps, loss_acc / loss_n, lr, sps, eta);
            mt_json_obj o;
            mt_json_obj_begin(&o);
            mt_json_obj_int(&o, "step", ts.step);
            mt_json_obj_float(&o, "loss", loss_acc / loss_n);
            mt_json_obj_float(&o, "lr", lr);
            mt_json_obj_float(&o, "samples_per_s", sps);
            mt_json_obj_float(&o, "time_s", t - t0);
            mt_json_obj_int(&o, "host_peak_bytes", ast.peak_in_use);
            mt_json_obj_end(&o);
            mt_rundir_metrics(&T.rd, &o);
            mt_json_obj_free(&o);
            loss_acc = 0;
            loss_n = 0;
            t_last = now_s();
            step_last = ts.step;
        }
        if (n_eval > 0 && ((val_every > 0 && ts.step % val_every == 0) || last)) {
            double tv = now_s();
            if ((s = validate(T.model, &T.val, n_eval, num_classes, patch, dice)) != MT_OK) break;
            validated = last;
            double mean = 0;
            mt_json_obj o;
            mt_json_obj_begin(&o);
            mt_json_obj_int(&o, "step", ts.step);
            char line[1024];
            size_t len = 0;
            for (int c = 1; c < num_classes; c++) {
                char key[96];
                const char *cn = mt_phantom_class_name(c);
                snprintf(key, sizeof key, "val_dice_%s", cn ? cn : "class");
                mt_json_obj_float(&o, key, dice[c]);
                mean += dice[c];
                len += (size_t)snprintf(line + len, sizeof line - len, "  %s %.4f", cn ? cn : "?", dice[c]);
            }
            mean /= (num_classes - 1);
            mt_json_obj_float(&o, "val_dice_mean", mean);
            mt_json_obj_end(&o);
            mt_rundir_metrics(&T.rd, &o);
            mt_json_obj_free(&o);
            mt_rundir_log(&T.rd, "validation at step %lld (%d cases): Dice%s  mean %.4f\n",
                          (long long)ts.step, n_eval, line, mean);
            val_time += now_s() - tv;
            t_last += now_s() - tv; /* keep samples/s about training */
        }
        if ((ckpt_every > 0 && ts.step % ckpt_every == 0) || last) {
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
    if (s == MT_OK) {
        double total = now_s() - t0;
        char dur[32];
        fmt_duration(dur, sizeof dur, total);
        const char *names[MT_PHANTOM_MAX_CLASSES + 1];
        for (int c = 0; c < num_classes; c++) names[c] = mt_phantom_class_name(c);
        size_t plen = strlen(T.rd.path) + 32;
        char *wpath = malloc(plen);
        snprintf(wpath, plen, "%s/model.safetensors", T.rd.path);
        s = mt_weights_save(wpath, cfg, T.model, num_classes, names, "per-case z-score");
        if (s == MT_OK) {
            mt_host_alloc_stats(&ast);
            mt_rundir_log(&T.rd, "done: %lld steps in %s (validation %.0fs); host memory peak %.1f MiB\n",
                          (long long)steps, dur, val_time, (double)ast.peak_in_use / 1048576.0);
            if (n_eval > 0 && !validated) s = validate(T.model, &T.val, n_eval, num_classes, patch, dice);
            if (n_eval > 0 && s == MT_OK) {
                double mean = 0;
                for (int c = 1; c < num_classes; c++) {
                    mt_rundir_log(&T.rd, "final Dice %-10s %.4f\n", names[c], dice[c]);
                    mean += dice[c];
                }
                mt_rundir_log(&T.rd, "final Dice %-10s %.4f\n", "mean", mean / (num_classes - 1));
            }
            if (s == MT_OK) mt_rundir_log(&T.rd, "weights: %s\n", wpath);
        }
        free(wpath);
    }
    free(dice);
out:
    trainer_free(&T);
    return s;
}
