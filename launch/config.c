/* Configuration: the schema table, YAML parsing (libyaml document API),
 * --set overrides, access, checks, serialization. See launch/config.h. */
#include "launch/config.h"
#include "launch/nccl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/backend.h"
#include "launch/fsutil.h"

#define INF HUGE_VAL
#define U32MAX 4294967295.0
#define BIG 1e12

/* ================================================================ schema */

#define I_(k, d, lo, hi, h) {k, MT_CFG_INT, d, lo, hi, 0, NULL, 0, 0, h}
#define F_(k, d, lo, hi, ex, h) {k, MT_CFG_FLOAT, d, lo, hi, ex, NULL, 0, 0, h}
#define B_(k, d, h) {k, MT_CFG_BOOL, d, 0, 0, 0, NULL, 0, 0, h}
#define S_(k, d, h) {k, MT_CFG_STRING, d, 0, 0, 0, NULL, 0, 0, h}
#define E_(k, d, ch, h) {k, MT_CFG_ENUM, d, 0, 0, 0, ch, 0, 0, h}
#define IL_(k, d, lo, hi, nlo, nhi, h) {k, MT_CFG_INT_LIST, d, lo, hi, 0, NULL, nlo, nhi, h}
#define FL_(k, d, lo, hi, ex, nlo, nhi, h) {k, MT_CFG_FLOAT_LIST, d, lo, hi, ex, NULL, nlo, nhi, h}

/* Keys of one section stay together (serialization relies on it). The
 * defaults train a small UNet3D on the synthetic phantom on a CPU. */
static const mt_cfg_schema_entry g_schema[] = {
    /* --- run --- */
    S_("run.name", "\"\"",
       "Run directory name under run.dir. Empty: <config file stem>-<YYYYmmdd-HHMMSS>. An existing "
       "run of that name is an error unless --resume is given."),
    S_("run.dir", "runs", "Directory that holds the run directories."),
    I_("run.seed", "42", 0, U32MAX, "Seed of parameter initialisation, patch sampling and augmentation."),
    I_("run.threads", "0", 0, 1024, "CPU threads for kernels (OpenMP, BLAS, oneDNN); 0 = all cores."),
    S_("run.device", "cpu",
       "Device to train on: auto | cpu | cuda | cuda:N. auto: cuda:0 if this medtrain has the CUDA "
       "backend and a GPU is usable, else the CPU (the log says why). cuda = cuda:0; with several MPI "
       "ranks, cuda gives each rank the GPU of its node-local rank (see distributed.allow_gpu_sharing). "
       "cuda without a usable GPU is an error."),
    I_("run.log_every", "10", 1, BIG, "Print and record the training loss every N steps."),
    B_("run.tensorboard", "true",
       "Also write the logged scalars (train/*, val/*) as TensorBoard events to "
       "<run>/events.out.tfevents.<time>.<host> (rank 0; a resumed run adds a file); view with "
       "`tensorboard --logdir runs/`."),
    /* --- data --- */
    E_("data.source", "phantom", "phantom|hdf5",
       "Training data: phantom = synthetic 3D shapes generated in memory; hdf5 = a store written by "
       "`medtrain prepare` (data.hdf5.path)."),
    S_("data.hdf5.path", "\"\"",
       "HDF5 store written by `medtrain prepare`, used when data.source is hdf5 (relative paths are "
       "relative to the working directory)."),
    S_("data.hdf5.prepare_from", "\"\"",
       "MSD / nnU-Net dataset folder: when data.hdf5.path does not exist yet, training first prepares "
       "it from this folder with `medtrain prepare`'s defaults. \"\" = the store must exist."),
    S_("data.splits", "\"\"",
       "hdf5: splits file (holdout / dev / folds, or nnU-Net's splits_final.json) choosing the training "
       "and validation cases by data.fold; holdout cases are never used. \"\" = train on every case of "
       "the store except the last data.val_cases, which validate."),
    I_("data.fold", "0", -1, 99,
       "With data.splits: train on folds[fold].train and validate on folds[fold].val; -1 = train on "
       "all of dev without validation."),
    I_("data.num_workers", "2", 1, 256,
       "Loader threads that sample and augment batches ahead of the training step."),
    I_("data.queue", "4", 1, 1024, "Batches the loader prepares ahead of the training step."),
    I_("data.phantom.num_cases", "16", 1, 100000, "Number of synthetic phantom volumes."),
    IL_("data.phantom.shape", "[40, 40, 40]", 8, 1024, 3, 3, "Phantom volume size D, H, W (voxels)."),
    I_("data.phantom.num_classes", "3", 2, 16, "Label classes of the phantom, background included."),
    I_("data.phantom.seed", "1234", 0, U32MAX, "Seed of the phantom generator."),
    IL_("data.patch_size", "[40, 40, 40]", 4, 1024, 3, 3,
        "Training patch size D, H, W; each must be divisible by 2^(number of U-Net levels - 1)."),
    I_("data.val_cases", "4", 0, 100000,
       "Cases held out for validation (the last ones of the data set); 0 = no validation. Not used "
       "when data.splits is set."),
    F_("data.foreground_oversample", "0.33", 0, 1, 0,
       "Fraction of patches forced to contain foreground (nnU-Net uses 0.33)."),
    /* --- augment (data/augment.h; probabilities per sample, nnU-Net's defaults) --- */
    F_("augment.p_rotation", "0.2", 0, 1, 0, "Probability of a random rotation."),
    FL_("augment.rotation_deg", "[30, 30, 30]", 0, 180, 0, 3, 3,
        "Rotation angle range about the D, H, W axes: uniform in [-r, r] degrees."),
    F_("augment.p_scale", "0.2", 0, 1, 0, "Probability of a random isotropic scaling."),
    FL_("augment.scale_range", "[0.7, 1.4]", 0.05, 20, 0, 2, 2,
        "Scale range [lo, hi] (lo <= 1 <= hi); < 1 zooms in."),
    F_("augment.p_elastic", "0", 0, 1, 0, "Probability of an elastic deformation (alpha 0..900, sigma 9..13)."),
    FL_("augment.p_flip", "[0.5, 0.5, 0.5]", 0, 1, 0, 3, 3, "Probability of mirroring along D, H, W."),
    F_("augment.p_rot90", "0", 0, 1, 0, "Probability of a k * 90 degree rotation (planes where the patch is cubic)."),
    F_("augment.p_noise", "0.1", 0, 1, 0, "Probability of additive Gaussian noise (std 0..0.1)."),
    F_("augment.p_blur", "0.2", 0, 1, 0, "Probability of Gaussian blur (sigma 0.5..1 voxels)."),
    F_("augment.p_brightness", "0.15", 0, 1, 0, "Probability of a multiplicative brightness change (0.75..1.25)."),
    F_("augment.p_contrast", "0.15", 0, 1, 0, "Probability of a contrast change (0.75..1.25)."),
    F_("augment.p_lowres", "0.25", 0, 1, 0, "Probability of simulated low resolution (zoom 0.5..1)."),
    F_("augment.p_gamma", "0.3", 0, 1, 0, "Probability of a gamma transform (0.7..1.5)."),
    F_("augment.p_gamma_inverted", "0.1", 0, 1, 0, "Probability of a gamma transform of the inverted image."),
    /* --- model --- */
    E_("model.name", "unet3d", "unet3d", "Network architecture."),
    I_("model.in_channels", "1", 1, 256, "Input channels (image modalities)."),
    I_("model.out_channels", "3", 1, 256,
       "Output channels: the number of classes for softmax losses (ce, dice_ce)."),
    IL_("model.features", "[8, 16, 32]", 1, 4096, 2, 8,
        "Channels per U-Net level, top to bottom; the number of entries is the number of levels."),
    E_("model.norm", "instance", "batch|instance|group", "Normalisation after each convolution."),
    B_("model.sync_batchnorm", "false",
       "Batch statistics over the samples of all ranks in training (PyTorch SyncBatchNorm; one small all-reduce "
       "per batch norm per forward and backward). Only with model.norm batch and several ranks (mpirun); with one "
       "rank it is plain batch norm."),
    I_("model.groups", "4", 1, 4096, "Groups of group normalisation (must divide every model.features entry)."),
    E_("model.activation", "leaky_relu", "relu|leaky_relu", "Activation after each normalisation."),
    F_("model.negative_slope", "0.01", 0, 1, 0, "Slope of leaky_relu for negative inputs."),
    E_("model.upsample", "transposed", "transposed|trilinear",
       "Decoder upsampling: transposed convolution, or trilinear interpolation + 1x1x1 convolution."),
    B_("model.deep_supervision", "false", "Add losses on the lower decoder levels' outputs (nnU-Net style)."),
    F_("model.dropout", "0", 0, 1, 2, "Dropout probability in each block; 0 = none."),
    /* --- loss --- */
    E_("loss.name", "dice_ce", "dice_ce|dice_bce|ce|bce|dice",
       "Training loss: soft Dice + cross-entropy (softmax), Dice + binary cross-entropy (sigmoid), or "
       "one of them alone."),
    F_("loss.lambda_dice", "1", 0, 1000, 0, "Weight of the Dice term."),
    F_("loss.lambda_ce", "1", 0, 1000, 0, "Weight of the (binary) cross-entropy term."),
    B_("loss.include_background", "false", "Include the background channel in the Dice term."),
    B_("loss.batch_dice", "false", "Compute Dice over the whole batch instead of per sample."),
    F_("loss.pos_weight", "1", 0, 1e6, 1, "Weight of positive voxels in binary cross-entropy."),
    /* --- optim --- */
    E_("optim.name", "adamw", "sgd|adam|adamw", "Optimizer (fp32 master weights and state)."),
    F_("optim.lr", "0.01", 0, 10, 1, "Peak learning rate."),
    F_("optim.weight_decay", "0.0001", 0, 1, 0,
       "Weight decay (L2 for sgd and adam, decoupled for adamw)."),
    F_("optim.momentum", "0.99", 0, 1, 2, "SGD momentum."),
    B_("optim.nesterov", "true", "Nesterov momentum for SGD."),
    FL_("optim.betas", "[0.9, 0.999]", 0, 1, 2, 2, 2, "Adam/AdamW beta1, beta2."),
    F_("optim.eps", "1e-08", 0, 1, 1, "Adam/AdamW epsilon."),
    F_("optim.clip_grad_norm", "0", 0, 1e6, 0, "Clip the global gradient L2 norm to this value; 0 = off."),
    /* --- sched --- */
    E_("sched.name", "poly", "constant|cosine_restarts|poly|step",
       "Learning-rate schedule over train.steps (after warmup): constant; cosine annealing with warm "
       "restarts (sched.t0, sched.t_mult, sched.eta_min); poly: lr * (1 - step/steps)^poly_power; step: "
       "lr * gamma^(step / step_size)."),
    I_("sched.warmup_steps", "0", 0, BIG, "Linear warmup from 0 to optim.lr over this many steps."),
    I_("sched.t0", "100", 1, BIG, "cosine_restarts: length of the first cycle in steps."),
    I_("sched.t_mult", "1", 1, 16, "cosine_restarts: each cycle is t_mult times longer than the previous."),
    F_("sched.eta_min", "0", 0, 10, 0, "cosine_restarts: lowest learning rate."),
    I_("sched.step_size", "100", 1, BIG, "step: multiply the learning rate by gamma every step_size steps."),
    F_("sched.gamma", "0.1", 0, 1, 1, "step: decay factor."),
    F_("sched.poly_power", "0.9", 0, 100, 0, "poly: exponent."),
    /* --- train --- */
    I_("train.steps", "300", 1, BIG,
       "Training length in optimizer steps (one step = one batch of train.batch_size patches). All "
       "intervals (log, validation, checkpoints, schedules) count these steps; there are no epochs."),
    I_("train.batch_size", "2", 1, 4096, "Patches per step (per rank in distributed training)."),
    E_("train.precision", "fp32", "fp32|tf32|bf16-mixed",
       "Arithmetic: fp32; tf32 (GPU matmul/conv inputs rounded to tf32; on the CPU the same as fp32); "
       "bf16-mixed (autocast: bf16 activations and conv/matmul inputs with fp32 accumulation, fp32 master "
       "weights, optimizer state, norm statistics and losses; on the CPU and the GPU)."),
    I_("train.checkpoint_every", "100", 0, BIG,
       "Write checkpoints/step_N.safetensors every N steps; 0 = only at the end."),
    I_("train.keep_checkpoints", "3", 0, 100000, "Step checkpoints kept on disk (the newest); 0 = all."),
    I_("train.val_every", "100", 0, BIG, "Validate every N steps; 0 = only at the end."),
    I_("train.eval_cases", "0", 0, 100000,
       "Validation cases evaluated at each validation; 0 = all validation cases."),
    F_("train.time_limit_min", "0", 0, 1e9, 0,
       "Stop training after this many minutes of wall time (validation included), then validate and "
       "save as at the end; 0 = no limit. The schedules still count train.steps."),
    S_("train.early_stop.monitor", "val_dice_mean",
       "Validation metric that selects model_best.safetensors and drives early stopping: "
       "val_dice_mean or val_dice_<class name>."),
    E_("train.early_stop.mode", "max", "max|min", "Whether a larger (max) or smaller (min) monitor value is better."),
    I_("train.early_stop.patience", "0", 0, 1000000,
       "Stop after this many validations without improvement of the monitor; 0 = never stop early."),
    F_("train.early_stop.min_delta", "0", 0, 1e9, 0, "Smallest change of the monitor that counts as an improvement."),
    /* --- distributed (launch/dist.h; ranks come from mpirun) --- */
    E_("distributed.backend", "auto", "auto|mpi|nccl",
       "Gradient all-reduce between ranks started by mpirun: mpi (host buffers, CPU), nccl (GPU; needs the "
       "CUDA backend), auto = nccl on a CUDA device, else mpi. Ignored with one rank."),
    F_("distributed.bucket_mb", "25", 0.001, 1e6, 0,
       "Size of a gradient all-reduce bucket in MiB (parameters grouped in reverse registration order)."),
    F_("distributed.first_bucket_mb", "1", 0.001, 1e6, 0,
       "Size of the first bucket (the last parameters' gradients, ready first) in MiB."),
    F_("distributed.timeout_s", "300", 1, 1e9, 0,
       "A collective not finished within this many seconds aborts the whole job (MPI_Abort), naming the "
       "operation and rank."),
    B_("distributed.allow_gpu_sharing", "false",
       "With run.device cuda: allow more ranks on a node than it has GPUs (ranks then share the GPUs "
       "round-robin, cuda:<local rank mod GPUs>, and gradients are all-reduced with MPI through host "
       "memory); otherwise that is an error."),
};
#define NSCHEMA ((int)(sizeof g_schema / sizeof g_schema[0]))

const mt_cfg_schema_entry *mt_config_schema(int *n) {
    if (n) *n = NSCHEMA;
    return g_schema;
}

/* ================================================================ values */

typedef struct {
    int64_t i;
    double f;
    int b;
    char *s;
    int n; /* list length */
    int64_t *il;
    double *fl;
    char *where;
} cfg_val;

struct mt_config {
    cfg_val v[NSCHEMA];
    char *source;
};

static char *xstrdup(const char *s) {
    char *d = strdup(s ? s : "");
    MT_CHECK_MSG(d, "out of host memory");
    return d;
}

static void val_free(cfg_val *v) {
    free(v->s);
    free(v->il);
    free(v->fl);
    free(v->where);
    memset(v, 0, sizeof *v);
}

static void val_copy(cfg_val *dst, const cfg_val *src) {
    *dst = *src;
    dst->s = src->s ? xstrdup(src->s) : NULL;
    dst->where = src->where ? xstrdup(src->where) : NULL;
    dst->il = NULL;
    dst->fl = NULL;
    if (src->il) {
        dst->il = malloc((size_t)(src->n ? src->n : 1) * sizeof *dst->il);
        MT_CHECK(dst->il);
        memcpy(dst->il, src->il, (size_t)src->n * sizeof *dst->il);
    }
    if (src->fl) {
        dst->fl = malloc((size_t)(src->n ? src->n : 1) * sizeof *dst->fl);
        MT_CHECK(dst->fl);
        memcpy(dst->fl, src->fl, (size_t)src->n * sizeof *dst->fl);
    }
}

static int schema_index(const char *key) {
    for (int i = 0; i < NSCHEMA; i++)
        if (!strcmp(g_schema[i].key, key)) return i;
    return -1;
}

int mt_config_has_key(const char *key) { return schema_index(key) >= 0; }

/* Whether `prefix` names a section: some schema key starts with "prefix.". */
static int is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < NSCHEMA; i++)
        if (!strncmp(g_schema[i].key, prefix, n) && g_schema[i].key[n] == '.') return 1;
    return 0;
}

static const char *type_name(mt_cfg_type t) {
    switch (t) {
    case MT_CFG_INT: return "integer";
    case MT_CFG_FLOAT: return "number";
    case MT_CFG_BOOL: return "boolean";
    case MT_CFG_STRING: return "string";
    case MT_CFG_ENUM: return "enum";
    case MT_CFG_INT_LIST: return "integer list";
    case MT_CFG_FLOAT_LIST: return "number list";
    }
    return "?";
}

/* ------------------------------------------------- descriptions of types */

static void put_bound(mt_strbuf *sb, const mt_cfg_schema_entry *e, double v) {
    if (e->type == MT_CFG_INT || e->type == MT_CFG_INT_LIST)
        mt_strbuf_printf(sb, "%lld", (long long)v);
    else
        mt_strbuf_double(sb, v);
}

/* " in [lo, hi]", " >= lo", "" */
static void put_range(mt_strbuf *sb, const mt_cfg_schema_entry *e) {
    int lo = !isinf(e->min), hi = !isinf(e->max) && e->max < BIG;
    if (lo && hi) {
        mt_strbuf_puts(sb, (e->excl & 1) ? " in (" : " in [");
        put_bound(sb, e, e->min);
        mt_strbuf_puts(sb, ", ");
        put_bound(sb, e, e->max);
        mt_strbuf_puts(sb, (e->excl & 2) ? ")" : "]");
    } else if (lo) {
        mt_strbuf_puts(sb, (e->excl & 1) ? " > " : " >= ");
        put_bound(sb, e, e->min);
    } else if (hi) {
        mt_strbuf_puts(sb, (e->excl & 2) ? " < " : " <= ");
        put_bound(sb, e, e->max);
    }
}

static void put_choices(mt_strbuf *sb, const char *choices) {
    for (const char *p = choices; *p; p++) {
        if (*p == '|')
            mt_strbuf_puts(sb, ", ");
        else
            mt_strbuf_append(sb, p, 1);
    }
}

/* "integer in [1, 8]", "list of 3 integers in [4, 1024]", "one of a, b" */
static void describe(mt_strbuf *sb, const mt_cfg_schema_entry *e) {
    switch (e->type) {
    case MT_CFG_INT:
        mt_strbuf_puts(sb, "integer");
        put_range(sb, e);
        break;
    case MT_CFG_FLOAT:
        mt_strbuf_puts(sb, "number");
        put_range(sb, e);
        break;
    case MT_CFG_BOOL: mt_strbuf_puts(sb, "true or false"); break;
    case MT_CFG_STRING: mt_strbuf_puts(sb, "a string"); break;
    case MT_CFG_ENUM:
        mt_strbuf_puts(sb, "one of ");
        put_choices(sb, e->choices);
        break;
    case MT_CFG_INT_LIST:
    case MT_CFG_FLOAT_LIST:
        if (e->min_len == e->max_len)
            mt_strbuf_printf(sb, "a list of %d ", e->min_len);
        else
            mt_strbuf_printf(sb, "a list of %d to %d ", e->min_len, e->max_len);
        mt_strbuf_puts(sb, e->type == MT_CFG_INT_LIST ? "integers" : "numbers");
        put_range(sb, e);
        break;
    }
}

/* ============================================================== parsing */

/* Where values come from while parsing: a file (marks give line:col) or a
 * --set argument. */
typedef struct {
    const char *file; /* file name, or NULL for --set */
    const char *set_arg;
    yaml_document_t *doc;
} src_ctx;

static void pos_str(mt_strbuf *sb, const src_ctx *c, yaml_mark_t m) {
    if (c->file)
        mt_strbuf_printf(sb, "%s:%zu:%zu", c->file, m.line + 1, m.column + 1);
    else
        mt_strbuf_printf(sb, "--set '%s'", c->set_arg);
}

static mt_status fail_at(const src_ctx *c, yaml_mark_t m, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static mt_status fail_at(const src_ctx *c, yaml_mark_t m, const char *fmt, ...) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    pos_str(&sb, c, m);
    mt_strbuf_puts(&sb, ": ");
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mt_strbuf_puts(&sb, msg);
    mt_status s = mt_error_set(MT_ERR_CONFIG, "%s", sb.data);
    mt_strbuf_free(&sb);
    return s;
}

static const char *scalar_text(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }
static int scalar_plain(const yaml_node_t *n) { return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }
static int scalar_is_null(const yaml_node_t *n) {
    const char *s = scalar_text(n);
    return scalar_plain(n) && (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
                               !strcmp(s, "NULL"));
}

static int parse_float_text(const char *s, double *out);

/* What was found, for "got ..." */
static void describe_got(mt_strbuf *sb, const yaml_node_t *n) {
    if (n->type == YAML_MAPPING_NODE) {
        mt_strbuf_puts(sb, "a mapping");
    } else if (n->type == YAML_SEQUENCE_NODE) {
        mt_strbuf_puts(sb, "a list");
    } else if (scalar_is_null(n)) {
        mt_strbuf_puts(sb, "an empty value");
    } else {
        const char *s = scalar_text(n);
        double num;
        if (scalar_plain(n) && parse_float_text(s, &num)) { /* numbers as written */
            mt_strbuf_puts(sb, s);
            return;
        }
        if (!scalar_plain(n)) mt_strbuf_puts(sb, "quoted string ");
        if (strlen(s) > 80) {
            char buf[84];
            snprintf(buf, sizeof buf, "%.77s...", s);
            mt_strbuf_json_string(sb, buf);
        } else {
            mt_strbuf_json_string(sb, s);
        }
    }
}

static mt_status type_error(const src_ctx *c, const yaml_node_t *n, const char *key, int index,
                            const mt_cfg_schema_entry *e, int element) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_puts(&sb, "expected ");
    if (element) {
        mt_cfg_schema_entry item = *e;
        item.type = e->type == MT_CFG_INT_LIST ? MT_CFG_INT : MT_CFG_FLOAT;
        describe(&sb, &item);
    } else {
        describe(&sb, e);
    }
    mt_strbuf_puts(&sb, ", got ");
    describe_got(&sb, n);
    char idx[32] = "";
    if (index >= 0) snprintf(idx, sizeof idx, "[%d]", index);
    mt_status s = fail_at(c, n->start_mark, "%s%s: %s", key, idx, sb.data);
    mt_strbuf_free(&sb);
    return s;
}

static int parse_int_text(const char *s, int64_t *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return 0;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return 0;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) return 0;
    *out = v;
    return 1;
}

static int parse_float_text(const char *s, double *out) {
    const char *p = s;
    int digits = 0;
    if (*p == '+' || *p == '-') p++;
    while (isdigit((unsigned char)*p)) p++, digits++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) p++, digits++;
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return 0;
        while (isdigit((unsigned char)*p)) p++;
    }
    if (*p) return 0;
    double v = strtod(s, NULL);
    if (!isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_bool_text(const char *s, int *out) {
    static const char *t[] = {"true", "yes", "on"}, *f[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(s, t[i])) return *out = 1, 1;
        if (!strcasecmp(s, f[i])) return *out = 0, 1;
    }
    return 0;
}

static int in_range(const mt_cfg_schema_entry *e, double v) {
    if ((e->excl & 1) ? !(v > e->min) : !(v >= e->min)) return 0;
    if ((e->excl & 2) ? !(v < e->max) : !(v <= e->max)) return 0;
    return 1;
}

static int enum_index(const char *choices, const char *s) {
    int idx = 0;
    size_t n = strlen(s);
    for (const char *p = choices;; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, s, n)) return idx;
        if (!bar) return -1;
        p = bar + 1;
    }
}

/* One scalar item of type t (INT or FLOAT) into *iv / *fv. */
static mt_status convert_number(const src_ctx *c, const yaml_node_t *n, const char *key, int index,
                                const mt_cfg_schema_entry *e, int element, int64_t *iv, double *fv) {
    int is_int = e->type == MT_CFG_INT || e->type == MT_CFG_INT_LIST;
    if (n->type != YAML_SCALAR_NODE || !scalar_plain(n)) return type_error(c, n, key, index, e, element);
    const char *s = scalar_text(n);
    if (is_int) {
        if (!parse_int_text(s, iv) || !in_range(e, (double)*iv)) return type_error(c, n, key, index, e, element);
    } else {
        if (!parse_float_text(s, fv) || !in_range(e, *fv)) return type_error(c, n, key, index, e, element);
    }
    return MT_OK;
}

/* Converts node n to the schema entry's type into *out (a fresh value). */
static mt_status convert(cfg_val *out, const src_ctx *c, const yaml_node_t *n, const mt_cfg_schema_entry *e,
                         int split_commas) {
    memset(out, 0, sizeof *out);
    const char *key = e->key;
    switch (e->type) {
    case MT_CFG_INT: return convert_number(c, n, key, -1, e, 0, &out->i, NULL);
    case MT_CFG_FLOAT: return convert_number(c, n, key, -1, e, 0, NULL, &out->f);
    case MT_CFG_BOOL:
        if (n->type != YAML_SCALAR_NODE || !scalar_plain(n) || !parse_bool_text(scalar_text(n), &out->b))
            return type_error(c, n, key, -1, e, 0);
        return MT_OK;
    case MT_CFG_STRING:
        if (n->type != YAML_SCALAR_NODE) return type_error(c, n, key, -1, e, 0);
        out->s = xstrdup(scalar_is_null(n) ? "" : scalar_text(n));
        return MT_OK;
    case MT_CFG_ENUM:
        if (n->type != YAML_SCALAR_NODE || enum_index(e->choices, scalar_text(n)) < 0)
            return type_error(c, n, key, -1, e, 0);
        out->s = xstrdup(scalar_text(n));
        return MT_OK;
    case MT_CFG_INT_LIST:
    case MT_CFG_FLOAT_LIST: break;
    }
    int is_int = e->type == MT_CFG_INT_LIST;
    int count;
    yaml_node_t **items = NULL;
    yaml_node_t *split = NULL; /* --set a,b,c: scalar nodes made here */
    if (n->type == YAML_SEQUENCE_NODE) {
        count = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
        items = malloc((size_t)(count ? count : 1) * sizeof *items);
        MT_CHECK(items);
        for (int k = 0; k < count; k++) items[k] = yaml_document_get_node(c->doc, n->data.sequence.items.start[k]);
    } else if (split_commas && n->type == YAML_SCALAR_NODE && scalar_plain(n) && !scalar_is_null(n)) {
        const char *s = scalar_text(n);
        count = 1;
        for (const char *p = s; *p; p++) count += *p == ',';
        items = malloc((size_t)count * sizeof *items);
        split = calloc((size_t)count, sizeof *split);
        MT_CHECK(items && split);
        const char *p = s;
        for (int k = 0; k < count; k++) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            while (len && isspace((unsigned char)*p)) p++, len--;
            while (len && isspace((unsigned char)p[len - 1])) len--;
            split[k] = *n;
            split[k].data.scalar.value = (yaml_char_t *)strndup(p, len);
            MT_CHECK(split[k].data.scalar.value);
            split[k].data.scalar.length = len;
            items[k] = &split[k];
            p = comma ? comma + 1 : p + len;
        }
    } else {
        return type_error(c, n, key, -1, e, 0);
    }
    mt_status s = MT_OK;
    if (count < e->min_len || count > e->max_len) {
        mt_strbuf sb;
        mt_strbuf_init(&sb);
        describe(&sb, e);
        s = fail_at(c, n->start_mark, "%s: expected %s, got %d item%s", key, sb.data, count, count == 1 ? "" : "s");
        mt_strbuf_free(&sb);
    }
    out->n = count;
    if (is_int)
        out->il = calloc((size_t)(count ? count : 1), sizeof *out->il);
    else
        out->fl = calloc((size_t)(count ? count : 1), sizeof *out->fl);
    MT_CHECK(out->il || out->fl);
    for (int k = 0; k < count && s == MT_OK; k++)
        s = convert_number(c, items[k], key, k, e, 1, is_int ? &out->il[k] : NULL, is_int ? NULL : &out->fl[k]);
    if (split)
        for (int k = 0; k < count; k++) free(split[k].data.scalar.value);
    free(split);
    free(items);
    if (s != MT_OK) val_free(out);
    return s;
}

/* ------------------------------------------------------- unknown keys */

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

/* " (did you mean \"model.features\"?)" or "" */
static void suggest(mt_strbuf *sb, const char *key) {
    const char *best = NULL;
    const char *leaf = strrchr(key, '.');
    leaf = leaf ? leaf + 1 : key;
    /* same leaf in another section ("model.lr" -> "optim.lr") */
    for (int i = 0; i < NSCHEMA && !best; i++) {
        const char *l = strrchr(g_schema[i].key, '.');
        if (l && !strcmp(l + 1, leaf)) best = g_schema[i].key;
    }
    if (!best) {
        int bd = 1 << 30;
        for (int i = 0; i < NSCHEMA; i++) {
            int d = edit_distance(key, g_schema[i].key);
            if (d < bd) bd = d, best = g_schema[i].key;
        }
        int lim = (int)strlen(key) / 4;
        if (lim < 2) lim = 2;
        if (bd > lim) best = NULL;
    }
    if (best) mt_strbuf_printf(sb, " (did you mean \"%s\"?)", best);
}

static mt_status unknown_key(const src_ctx *c, yaml_mark_t m, const char *key) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    suggest(&sb, key);
    mt_status s = fail_at(c, m, "%s: unknown key%s; `medtrain config --explain` lists the keys", key,
                          sb.data ? sb.data : "");
    mt_strbuf_free(&sb);
    return s;
}

/* ---------------------------------------------------------- documents */

typedef struct {
    mt_config *cfg;
    src_ctx c;
    char **seen; /* full keys assigned from this document */
    yaml_mark_t *seen_at;
    int nseen, capseen;
    /* a config stored in a weight file by (maybe another version of)
     * medtrain: keys this version does not know, or whose value it cannot
     * read, are skipped and listed here unless they define the model (see
     * mt_config_parse_stored); NULL when parsing a user's config */
    mt_strbuf *skipped;
} walk_ctx;

/* Keys a weight file's model cannot do without (mt_config_parse_stored). */
static int defines_model(const char *key) {
    return !strncmp(key, "model.", 6) || !strcmp(key, "model") || !strcmp(key, "data.patch_size") ||
           !strncmp(key, "loss.", 5) || !strcmp(key, "loss");
}

/* In a stored config: skip key (recording why) instead of failing. The
 * error that s carries is dropped. */
static mt_status skip_stored(walk_ctx *w, const char *key, const char *why) {
    if (w->skipped->len) mt_strbuf_puts(w->skipped, ", ");
    mt_strbuf_printf(w->skipped, "%s (%s)", key, why);
    mt_error_clear();
    return MT_OK;
}

static void assign(mt_config *cfg, int idx, cfg_val *v, const char *where) {
    val_free(&cfg->v[idx]);
    cfg->v[idx] = *v;
    cfg->v[idx].where = xstrdup(where);
}

static mt_status walk_mapping(walk_ctx *w, const yaml_node_t *map, const char *prefix) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(w->c.doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(w->c.doc, p->value);
        if (kn->type != YAML_SCALAR_NODE || scalar_is_null(kn))
            return fail_at(&w->c, kn->start_mark, "keys must be plain names%s%s", *prefix ? " under " : "",
                           prefix);
        /* duplicate key inside this mapping */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qk = yaml_document_get_node(w->c.doc, q->key);
            if (qk->type == YAML_SCALAR_NODE && !strcmp(scalar_text(qk), scalar_text(kn)))
                return fail_at(&w->c, kn->start_mark, "%s%s%s: key given twice (first at line %zu)", prefix,
                               *prefix ? "." : "", scalar_text(kn), qk->start_mark.line + 1);
        }
        mt_strbuf full;
        mt_strbuf_init(&full);
        if (*prefix) mt_strbuf_printf(&full, "%s.", prefix);
        mt_strbuf_puts(&full, scalar_text(kn));
        mt_status s = MT_OK;
        int idx = schema_index(full.data);
        if (idx >= 0) {
            for (int k = 0; k < w->nseen; k++)
                if (!strcmp(w->seen[k], full.data))
                    s = fail_at(&w->c, kn->start_mark, "%s: key given twice (first at line %zu)", full.data,
                                w->seen_at[k].line + 1);
            cfg_val v;
            if (s == MT_OK) {
                s = convert(&v, &w->c, vn, &g_schema[idx], 0);
                if (s != MT_OK && w->skipped && !defines_model(full.data)) {
                    skip_stored(w, full.data, "value not readable by this version");
                    mt_strbuf_free(&full);
                    continue;
                }
            }
            if (s == MT_OK) {
                mt_strbuf where;
                mt_strbuf_init(&where);
                pos_str(&where, &w->c, vn->start_mark);
                assign(w->cfg, idx, &v, where.data);
                mt_strbuf_free(&where);
                if (w->nseen == w->capseen) {
                    w->capseen = w->capseen ? 2 * w->capseen : 64;
                    w->seen = realloc(w->seen, (size_t)w->capseen * sizeof *w->seen);
                    w->seen_at = realloc(w->seen_at, (size_t)w->capseen * sizeof *w->seen_at);
                    MT_CHECK(w->seen && w->seen_at);
                }
                w->seen[w->nseen] = xstrdup(full.data);
                w->seen_at[w->nseen++] = kn->start_mark;
            }
        } else if (is_section(full.data)) {
            if (vn->type == YAML_MAPPING_NODE)
                s = walk_mapping(w, vn, full.data);
            else if (!(vn->type == YAML_SCALAR_NODE && scalar_is_null(vn))) {
                mt_strbuf got;
                mt_strbuf_init(&got);
                describe_got(&got, vn);
                s = fail_at(&w->c, vn->start_mark, "%s: is a section; expected a mapping of its keys (%s.*), got %s",
                            full.data, full.data, got.data);
                mt_strbuf_free(&got);
            }
        } else if (w->skipped && !defines_model(full.data)) {
            s = skip_stored(w, full.data, "unknown to this version");
        } else {
            s = unknown_key(&w->c, kn->start_mark, full.data);
        }
        mt_strbuf_free(&full);
        if (s != MT_OK) return s;
    }
    return MT_OK;
}

static mt_status yaml_error(const yaml_parser_t *ps, const src_ctx *c) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "malformed YAML: %s", ps->problem ? ps->problem : "parse error");
    if (ps->context) {
        mt_strbuf_printf(&sb, " (%s", ps->context);
        if (c->file) mt_strbuf_printf(&sb, " started at line %zu", ps->context_mark.line + 1);
        mt_strbuf_puts(&sb, ")");
    }
    yaml_mark_t m = ps->problem_mark;
    if (ps->error == YAML_READER_ERROR) m.line = 0, m.column = ps->problem_offset;
    mt_status s = fail_at(c, m, "%s", sb.data);
    mt_strbuf_free(&sb);
    return s;
}

/* Loads exactly one document from text (an empty text gives one without a
 * root node). */
static mt_status load_document(yaml_document_t *doc, const char *text, size_t len, const src_ctx *c) {
    yaml_parser_t ps;
    MT_CHECK(yaml_parser_initialize(&ps));
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    if (!yaml_parser_load(&ps, doc)) {
        mt_status s = yaml_error(&ps, c);
        yaml_parser_delete(&ps);
        return s;
    }
    if (yaml_document_get_root_node(doc)) {
        yaml_document_t extra;
        if (!yaml_parser_load(&ps, &extra)) {
            mt_status s = yaml_error(&ps, c);
            yaml_document_delete(doc);
            yaml_parser_delete(&ps);
            return s;
        }
        yaml_node_t *root = yaml_document_get_root_node(&extra);
        if (root) {
            mt_status s = fail_at(c, root->start_mark, "a second YAML document; a config holds one");
            yaml_document_delete(&extra);
            yaml_document_delete(doc);
            yaml_parser_delete(&ps);
            return s;
        }
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&ps);
    return MT_OK;
}

/* Applies a YAML document's keys to cfg (cfg unchanged on error). */
static mt_status apply_text(mt_config *cfg, const char *text, size_t len, const char *name, mt_strbuf *skipped) {
    src_ctx c = {name, NULL, NULL};
    yaml_document_t doc;
    MT_TRY(load_document(&doc, text, len, &c));
    c.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    mt_status s = MT_OK;
    if (root && !(root->type == YAML_SCALAR_NODE && scalar_is_null(root))) {
        if (root->type != YAML_MAPPING_NODE) {
            s = fail_at(&c, root->start_mark,
                        "the config must be a mapping of sections (run:, data:, model:, loss:, optim:, sched:, "
                        "train:)");
        } else {
            mt_config *tmp = mt_config_clone(cfg);
            walk_ctx w = {tmp, c, NULL, NULL, 0, 0, skipped};
            s = walk_mapping(&w, root, "");
            for (int k = 0; k < w.nseen; k++) free(w.seen[k]);
            free(w.seen);
            free(w.seen_at);
            if (s == MT_OK)
                for (int i = 0; i < NSCHEMA; i++) {
                    cfg_val t = cfg->v[i];
                    cfg->v[i] = tmp->v[i];
                    tmp->v[i] = t;
                }
            mt_config_free(tmp);
        }
    }
    yaml_document_delete(&doc);
    return s;
}

/* =========================================================== public API */

static mt_config *config_alloc(void) {
    mt_config *cfg = calloc(1, sizeof *cfg);
    MT_CHECK_MSG(cfg, "out of host memory");
    return cfg;
}

mt_config *mt_config_default(void) {
    mt_config *cfg = config_alloc();
    for (int i = 0; i < NSCHEMA; i++) {
        const mt_cfg_schema_entry *e = &g_schema[i];
        src_ctx c = {"<schema default>", NULL, NULL};
        yaml_document_t doc;
        mt_status s = load_document(&doc, e->def, strlen(e->def), &c);
        MT_CHECK_MSG(s == MT_OK, "config schema: default of %s: %s", e->key, mt_error_msg());
        c.doc = &doc;
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        MT_CHECK_MSG(root, "config schema: empty default for %s", e->key);
        cfg_val v;
        s = convert(&v, &c, root, e, 0);
        MT_CHECK_MSG(s == MT_OK, "config schema: default of %s: %s", e->key, mt_error_msg());
        assign(cfg, i, &v, "default");
        yaml_document_delete(&doc);
    }
    return cfg;
}

mt_config *mt_config_clone(const mt_config *cfg) {
    mt_config *c = config_alloc();
    for (int i = 0; i < NSCHEMA; i++) val_copy(&c->v[i], &cfg->v[i]);
    c->source = cfg->source ? xstrdup(cfg->source) : NULL;
    return c;
}

void mt_config_free(mt_config *cfg) {
    if (!cfg) return;
    for (int i = 0; i < NSCHEMA; i++) val_free(&cfg->v[i]);
    free(cfg->source);
    free(cfg);
}

mt_status mt_config_set(mt_config *cfg, const char *assignment) {
    src_ctx c = {NULL, assignment, NULL};
    yaml_mark_t m0 = {0, 0, 0};
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return fail_at(&c, m0, "expected KEY=VALUE (e.g. --set optim.lr=0.01)");
    char *key = strndup(assignment, (size_t)(eq - assignment));
    MT_CHECK(key);
    /* tolerate spaces around the key */
    char *k = key;
    while (isspace((unsigned char)*k)) k++;
    size_t kl = strlen(k);
    while (kl && isspace((unsigned char)k[kl - 1])) k[--kl] = 0;
    const char *value = eq + 1;
    int idx = schema_index(k);
    mt_status s = MT_OK;
    if (idx < 0) {
        if (is_section(k))
            s = fail_at(&c, m0, "%s is a section; set one of its keys (%s.*)", k, k);
        else
            s = unknown_key(&c, m0, k);
        free(key);
        return s;
    }
    const mt_cfg_schema_entry *e = &g_schema[idx];
    cfg_val v;
    if (e->type == MT_CFG_STRING) {
        /* strings are taken verbatim */
        memset(&v, 0, sizeof v);
        v.s = xstrdup(value);
    } else {
        yaml_document_t doc;
        s = load_document(&doc, value, strlen(value), &c);
        if (s == MT_OK) {
            c.doc = &doc;
            yaml_node_t *root = yaml_document_get_root_node(&doc);
            yaml_node_t empty;
            if (!root) {
                memset(&empty, 0, sizeof empty);
                empty.type = YAML_SCALAR_NODE;
                empty.data.scalar.value = (yaml_char_t *)"";
                empty.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
                root = &empty;
            }
            s = convert(&v, &c, root, e, 1);
            yaml_document_delete(&doc);
        }
    }
    if (s == MT_OK) {
        mt_strbuf where;
        mt_strbuf_init(&where);
        mt_strbuf_printf(&where, "--set '%s'", assignment);
        assign(cfg, idx, &v, where.data);
        mt_strbuf_free(&where);
    }
    free(key);
    return s;
}

static mt_status apply_sets(mt_config *cfg, int nsets, const char *const *sets) {
    for (int i = 0; i < nsets; i++) MT_TRY(mt_config_set(cfg, sets[i]));
    return MT_OK;
}

mt_status mt_config_parse_string(mt_config **out, const char *yaml, const char *name, int nsets,
                                 const char *const *sets) {
    *out = NULL;
    mt_config *cfg = mt_config_default();
    cfg->source = xstrdup(name ? name : "<string>");
    mt_status s = apply_text(cfg, yaml, strlen(yaml), cfg->source, NULL);
    if (s == MT_OK) s = apply_sets(cfg, nsets, sets);
    if (s != MT_OK) {
        mt_config_free(cfg);
        return s;
    }
    *out = cfg;
    return MT_OK;
}

mt_status mt_config_parse_stored(mt_config **out, const char *yaml, const char *name, char **skipped) {
    *out = NULL;
    *skipped = NULL;
    mt_config *cfg = mt_config_default();
    cfg->source = xstrdup(name ? name : "<string>");
    mt_strbuf sk;
    mt_strbuf_init(&sk);
    mt_status s = apply_text(cfg, yaml, strlen(yaml), cfg->source, &sk);
    if (s != MT_OK) {
        mt_strbuf_free(&sk);
        mt_config_free(cfg);
        return s;
    }
    *skipped = sk.len ? mt_strbuf_take(&sk) : NULL;
    mt_strbuf_free(&sk);
    *out = cfg;
    return MT_OK;
}

mt_status mt_config_load(mt_config **out, const char *path, int nsets, const char *const *sets) {
    *out = NULL;
    char *text;
    size_t len;
    mt_status s = mt_fs_read_file(path, &text, &len);
    if (s != MT_OK) return mt_error_prefix(MT_ERR_IO, "config: ");
    if (strlen(text) != len) {
        free(text);
        return mt_error_set(MT_ERR_CONFIG, "%s: not a text file (contains NUL bytes)", path);
    }
    mt_config *cfg = mt_config_default();
    cfg->source = xstrdup(path);
    s = apply_text(cfg, text, len, path, NULL);
    free(text);
    if (s == MT_OK) s = apply_sets(cfg, nsets, sets);
    if (s != MT_OK) {
        mt_config_free(cfg);
        return s;
    }
    *out = cfg;
    return MT_OK;
}

/* ---------------------------------------------------------------- access */

static const cfg_val *get(const mt_config *cfg, const char *key, mt_cfg_type t1, mt_cfg_type t2, int *idx_out) {
    MT_CHECK(cfg);
    int idx = schema_index(key);
    MT_CHECK_MSG(idx >= 0, "config: key \"%s\" is not in the schema", key);
    MT_CHECK_MSG(g_schema[idx].type == t1 || g_schema[idx].type == t2, "config: %s is a %s, not a %s", key,
                 type_name(g_schema[idx].type), type_name(t1));
    if (idx_out) *idx_out = idx;
    return &cfg->v[idx];
}

int64_t mt_config_get_int(const mt_config *cfg, const char *key) {
    return get(cfg, key, MT_CFG_INT, MT_CFG_INT, NULL)->i;
}

double mt_config_get_float(const mt_config *cfg, const char *key) {
    return get(cfg, key, MT_CFG_FLOAT, MT_CFG_FLOAT, NULL)->f;
}

int mt_config_get_bool(const mt_config *cfg, const char *key) {
    return get(cfg, key, MT_CFG_BOOL, MT_CFG_BOOL, NULL)->b;
}

const char *mt_config_get_string(const mt_config *cfg, const char *key) {
    return get(cfg, key, MT_CFG_STRING, MT_CFG_ENUM, NULL)->s;
}

int mt_config_get_enum(const mt_config *cfg, const char *key) {
    int idx;
    const cfg_val *v = get(cfg, key, MT_CFG_ENUM, MT_CFG_ENUM, &idx);
    int k = enum_index(g_schema[idx].choices, v->s);
    MT_CHECK(k >= 0);
    return k;
}

const int64_t *mt_config_get_int_list(const mt_config *cfg, const char *key, int *n) {
    const cfg_val *v = get(cfg, key, MT_CFG_INT_LIST, MT_CFG_INT_LIST, NULL);
    if (n) *n = v->n;
    return v->il;
}

const double *mt_config_get_float_list(const mt_config *cfg, const char *key, int *n) {
    const cfg_val *v = get(cfg, key, MT_CFG_FLOAT_LIST, MT_CFG_FLOAT_LIST, NULL);
    if (n) *n = v->n;
    return v->fl;
}

const char *mt_config_where(const mt_config *cfg, const char *key) {
    int idx = schema_index(key);
    MT_CHECK_MSG(idx >= 0, "config: key \"%s\" is not in the schema", key);
    return cfg->v[idx].where ? cfg->v[idx].where : "default";
}

const char *mt_config_source(const mt_config *cfg) { return cfg->source; }

mt_status mt_config_error(const mt_config *cfg, const char *key, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *where = mt_config_where(cfg, key);
    if (!strcmp(where, "default")) {
        if (cfg->source)
            return mt_error_set(MT_ERR_CONFIG, "%s: %s (default value): %s", cfg->source, key, msg);
        return mt_error_set(MT_ERR_CONFIG, "%s (default value): %s", key, msg);
    }
    return mt_error_set(MT_ERR_CONFIG, "%s: %s: %s", where, key, msg);
}

/* --------------------------------------------------------------- checks */

mt_status mt_config_check(const mt_config *cfg) {
    int nf, np, ns;
    const int64_t *features = mt_config_get_int_list(cfg, "model.features", &nf);
    const int64_t *patch = mt_config_get_int_list(cfg, "data.patch_size", &np);
    const int64_t *shape = mt_config_get_int_list(cfg, "data.phantom.shape", &ns);
    const char *axes = "DHW";
    int64_t div = (int64_t)1 << (nf - 1);
    /* NCCL comes with the CUDA backend (launch/nccl.h); whether the run is on a
     * GPU is checked when the device is chosen (launch/train.c). */
    if (!strcmp(mt_config_get_string(cfg, "distributed.backend"), "nccl") && !mt_nccl_available())
        return mt_config_error(cfg, "distributed.backend",
                               "nccl: this medtrain was built without NCCL (needs the CUDA backend and NCCL at "
                               "configure time); use mpi or auto");
    for (int d = 0; d < np; d++)
        if (patch[d] % div)
            return mt_config_error(cfg, "data.patch_size",
                                   "%lld (%c) is not divisible by 2^(levels-1) = %lld (model.features has %d levels)",
                                   (long long)patch[d], axes[d], (long long)div, nf);
    const char *source = mt_config_get_string(cfg, "data.source");
    if (strcmp(source, "hdf5") && *mt_config_get_string(cfg, "data.splits"))
        return mt_config_error(cfg, "data.splits", "applies to data.source hdf5 only (data.source is %s)", source);
    if (!strcmp(source, "phantom")) {
        for (int d = 0; d < np; d++)
            if (patch[d] > shape[d])
                return mt_config_error(cfg, "data.patch_size", "%lld (%c) is larger than data.phantom.shape (%lld)",
                                       (long long)patch[d], axes[d], (long long)shape[d]);
        int64_t cases = mt_config_get_int(cfg, "data.phantom.num_cases");
        int64_t val = mt_config_get_int(cfg, "data.val_cases");
        if (val >= cases)
            return mt_config_error(cfg, "data.val_cases",
                                   "%lld leaves no training case (data.phantom.num_cases = %lld)", (long long)val,
                                   (long long)cases);
        const char *loss = mt_config_get_string(cfg, "loss.name");
        int64_t classes = mt_config_get_int(cfg, "data.phantom.num_classes");
        int64_t out = mt_config_get_int(cfg, "model.out_channels");
        if ((!strcmp(loss, "ce") || !strcmp(loss, "dice_ce")) && out != classes)
            return mt_config_error(cfg, "model.out_channels",
                                   "%lld, but loss.name = %s (softmax) needs one channel per class: "
                                   "data.phantom.num_classes = %lld", (long long)out, loss, (long long)classes);
    } else if (!strcmp(source, "hdf5")) {
        if (!*mt_config_get_string(cfg, "data.hdf5.path"))
            return mt_config_error(cfg, "data.hdf5.path", "must be set when data.source is hdf5");

    }
    if (mt_config_get_bool(cfg, "model.sync_batchnorm") && strcmp(mt_config_get_string(cfg, "model.norm"), "batch"))
        return mt_config_error(cfg, "model.sync_batchnorm", "true needs model.norm batch (model.norm is %s)",
                               mt_config_get_string(cfg, "model.norm"));
    if (!strcmp(mt_config_get_string(cfg, "model.norm"), "group")) {
        int64_t g = mt_config_get_int(cfg, "model.groups");
        for (int i = 0; i < nf; i++)
            if (features[i] % g)
                return mt_config_error(cfg, "model.groups", "%lld does not divide model.features[%d] = %lld",
                                       (long long)g, i, (long long)features[i]);
    }
    int64_t eval = mt_config_get_int(cfg, "train.eval_cases");
    int64_t val = mt_config_get_int(cfg, "data.val_cases");
    int with_splits = !strcmp(source, "hdf5") && *mt_config_get_string(cfg, "data.splits");
    if (!with_splits && eval > val)
        return mt_config_error(cfg, "train.eval_cases", "%lld is more than data.val_cases = %lld", (long long)eval,
                               (long long)val);
    int64_t steps = mt_config_get_int(cfg, "train.steps");
    int64_t warm = mt_config_get_int(cfg, "sched.warmup_steps");
    if (warm >= steps)
        return mt_config_error(cfg, "sched.warmup_steps", "%lld is not less than train.steps = %lld",
                               (long long)warm, (long long)steps);
    return MT_OK;
}

mt_status mt_config_device(const mt_config *cfg, mt_device *out) {
    const char *d = mt_config_get_string(cfg, "run.device");
    mt_device dev;
    if (mt_device_parse(d, &dev) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        return mt_config_error(cfg, "run.device", "%s", msg);
    }
    *out = dev;
    return MT_OK;
}

/* ------------------------------------------------------------ serialize */

static void put_value(mt_strbuf *sb, const mt_cfg_schema_entry *e, const cfg_val *v) {
    switch (e->type) {
    case MT_CFG_INT: mt_strbuf_printf(sb, "%lld", (long long)v->i); break;
    case MT_CFG_FLOAT: mt_strbuf_double(sb, v->f); break;
    case MT_CFG_BOOL: mt_strbuf_puts(sb, v->b ? "true" : "false"); break;
    case MT_CFG_STRING: mt_strbuf_json_string(sb, v->s); break; /* JSON strings are YAML */
    case MT_CFG_ENUM: mt_strbuf_puts(sb, v->s); break;
    case MT_CFG_INT_LIST:
    case MT_CFG_FLOAT_LIST:
        mt_strbuf_puts(sb, "[");
        for (int k = 0; k < v->n; k++) {
            if (k) mt_strbuf_puts(sb, ", ");
            if (e->type == MT_CFG_INT_LIST)
                mt_strbuf_printf(sb, "%lld", (long long)v->il[k]);
            else
                mt_strbuf_double(sb, v->fl[k]);
        }
        mt_strbuf_puts(sb, "]");
        break;
    }
}

/* Splits "a.b.c" into components (at most 8). */
static int split_key(const char *key, char parts[8][64]) {
    int n = 0;
    const char *p = key;
    while (n < 8) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        MT_CHECK(len < 64);
        memcpy(parts[n], p, len);
        parts[n][len] = 0;
        n++;
        if (!dot) break;
        p = dot + 1;
    }
    return n;
}

char *mt_config_to_yaml(const mt_config *cfg) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "# medtrain %s resolved config", MT_VERSION);
    if (cfg->source) {
        mt_strbuf_puts(&sb, " (from ");
        for (const char *p = cfg->source; *p; p++) mt_strbuf_append(&sb, *p == '\n' ? " " : p, 1);
        mt_strbuf_puts(&sb, ")");
    }
    mt_strbuf_puts(&sb, "\n");
    char prev[8][64], cur[8][64];
    int nprev = 0;
    for (int i = 0; i < NSCHEMA; i++) {
        int n = split_key(g_schema[i].key, cur);
        int common = 0;
        while (common < nprev - 1 && common < n - 1 && !strcmp(prev[common], cur[common])) common++;
        if (common == 0 && i > 0) mt_strbuf_puts(&sb, "\n");
        for (int d = common; d < n - 1; d++) mt_strbuf_printf(&sb, "%*s%s:\n", 2 * d, "", cur[d]);
        mt_strbuf_printf(&sb, "%*s%s: ", 2 * (n - 1), "", cur[n - 1]);
        put_value(&sb, &g_schema[i], &cfg->v[i]);
        mt_strbuf_puts(&sb, "\n");
        memcpy(prev, cur, sizeof prev);
        nprev = n;
    }
    return mt_strbuf_take(&sb);
}

static void wrap(FILE *fp, const char *text, int indent, int width) {
    const char *p = text;
    while (*p) {
        int col = indent;
        fprintf(fp, "%*s", indent, "");
        const char *line_start = p;
        const char *last_break = NULL;
        const char *q = p;
        while (*q && col < width) {
            if (*q == ' ') last_break = q;
            q++, col++;
        }
        const char *end = !*q ? q : (last_break && last_break > line_start ? last_break : q);
        fwrite(p, 1, (size_t)(end - p), fp);
        fputc('\n', fp);
        p = end;
        while (*p == ' ') p++;
    }
}

void mt_config_explain(FILE *fp) {
    mt_config *def = mt_config_default();
    fprintf(fp,
            "medtrain configuration keys. Set them in a YAML file (sections, e.g. `model:` then\n"
            "`  features: [8, 16, 32]`) or with --set KEY=VALUE; unlisted keys keep their default.\n");
    char prevsec[64] = "";
    for (int i = 0; i < NSCHEMA; i++) {
        const mt_cfg_schema_entry *e = &g_schema[i];
        char parts[8][64];
        split_key(e->key, parts);
        if (strcmp(parts[0], prevsec)) {
            fprintf(fp, "\n%s:\n", parts[0]);
            snprintf(prevsec, sizeof prevsec, "%s", parts[0]);
        }
        mt_strbuf sb;
        mt_strbuf_init(&sb);
        describe(&sb, e);
        mt_strbuf d;
        mt_strbuf_init(&d);
        put_value(&d, e, &def->v[i]);
        fprintf(fp, "  %-28s %s; default %s\n", e->key, sb.data, d.data);
        wrap(fp, e->help, 6, 100);
        mt_strbuf_free(&sb);
        mt_strbuf_free(&d);
    }
    mt_config_free(def);
}
