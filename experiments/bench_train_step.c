/* One training step of a UNet3D (issues 2 and the CUDA backend): forward +
 * Dice-CE loss + backward + optimizer step, timed against PyTorch by
 * experiments/bench_train_step.sh (CPU) and experiments/bench_unet3d_gpu.sh
 * (GPU); experiments/bench_train_step_torch.py is the PyTorch twin.
 *
 *   bench_train_step [--features 16,32,64,128] [--in 1] [--out 3] [--batch 2]
 *                    [--patch 64 | --patch 64,64,64] [--norm instance|batch|group|none]
 *                    [--no-affine] [--groups 8] [--act leaky_relu|relu|gelu]
 *                    [--upsample transposed|trilinear] [--batch-dice] [--threads 0]
 *                    [--device cpu|cuda|cuda:N] [--precision fp32|tf32|bf16-mixed]
 *                    [--optim adamw|sgd] [--peak-tflops X] [--profile-range]
 *                    [--warmup 3] [--steps 5] [--seed 0] [--json FILE] [--dump DIR]
 *
 * Input: standard-normal image, uniformly random labels in [0, out), built on
 * the host and copied to the device once. Loss: the default config's dice_ce
 * (softmax Dice without the background channel, per sample, or over the
 * batch with --batch-dice as configs/unet3d.yaml, smooth 1e-5 / 1e-5, plus
 * mean cross-entropy). Optimizer: --optim adamw (default): lr 1e-2, betas
 * (0.9, 0.999), eps 1e-8, weight decay 1e-4 (configs/default.yaml); --optim
 * sgd: lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5
 * (configs/unet3d.yaml). No gradient clipping, no lr schedule (neither in the
 * PyTorch twin).
 *
 * Device and precision: the model is initialised on the host, then moved
 * (mt_module_to_device); the optimizer state lives on the device. fp32: full
 * fp32; tf32: fp32 convolutions / matmuls may use tf32 tensor cores
 * (mt_backend_set_allow_tf32; no effect on the CPU); bf16-mixed: forward and
 * loss under mt_autocast_set(MT_BF16), backward and the step outside it,
 * f32 master weights and optimizer state (as launch/train.c).
 *
 * Each step is timed in three parts: forward (model + loss, recording the
 * tape, and reading the loss to the host as PyTorch's loss.item()), backward
 * (zero_grad + backward), optimizer step; on a GPU the backend's synchronize
 * slot is called before the clock is read at each boundary. After `warmup`
 * untimed steps, the median of `steps` steps is reported per part and for
 * the whole step, with samples/s = batch / median step. GFLOP per step = 3 x
 * mt_unet3d_flops (forward, backward-data, backward-filter of every conv);
 * achieved TFLOP/s = that / step time; MFU = achieved / --peak-tflops (not
 * reported without it; e.g. 989 for H100/H200 SXM dense bf16).
 *
 * Memory, from the device backend's allocator statistics (memory_stats: the
 * caching allocator, sizes rounded to its size classes; on the CPU oneDNN's
 * own buffers are not included): the peak bytes in use over the timed steps
 * (peak_mib, the peak is reset after warm-up) and over the whole run
 * (peak_run_mib: model, optimizer state, cuDNN algorithm search in the first
 * step and every step), the bytes the allocator holds at the end (in use +
 * cached, reserved_mib), and for the timed steps the allocations that reached
 * the system (0 in the steady state, DESIGN.md decision 4: no cudaMalloc),
 * plus the process's max RSS and minor page faults per step.
 *
 * --profile-range (CUDA): calls cudaProfilerStart before the first timed
 * step and cudaProfilerStop after the last, so `nsys profile
 * --capture-range=cudaProfilerApi` or `ncu --profile-from-start off` see the
 * timed steps only.
 *
 * --dump DIR (CPU only, before any timed step) writes the interop bundle that
 * tests/interop_torch.py checks against PyTorch:
 *   DIR/weights.safetensors  initial state_dict; __metadata__ "unet3d" (JSON
 *                            kwargs for experiments/unet3d_torch.py's UNet3D) and
 *                            "loss" (JSON loss options)
 *   DIR/batch.safetensors    "image" (N, Cin, D, H, W) f32, "label" (N, 1, D, H, W) u8
 *   DIR/grads.safetensors    "loss" (0-d), "logits" (N, Cout, D, H, W), and each
 *                            parameter's gradient after one backward, under its name
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/autograd.h"
#include "core/alloc.h"
#include "core/backend.h"
#include "core/rng.h"
#include "launch/fsutil.h"
#include "launch/safetensors.h"
#include "layers/models/unet3d.h"
#include "losses/losses.h"
#include "optim/optim.h"

/* The CUDA runtime's profiler range (--profile-range). Weak: resolved when the
 * CUDA backend (and with it libcudart) is linked in, NULL otherwise. The
 * return value is a cudaError_t (an int-sized enum). */
extern int cudaProfilerStart(void) __attribute__((weak));
extern int cudaProfilerStop(void) __attribute__((weak));

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *s = malloc(sizeof *s * (size_t)n);
    memcpy(s, v, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--features 16,32,64,128] [--in 1] [--out 3] [--batch 2] [--patch 64|D,H,W]\n"
            "          [--norm instance|batch|group|none] [--no-affine] [--groups 8]\n"
            "          [--act leaky_relu|relu|gelu] [--upsample transposed|trilinear] [--batch-dice]\n"
            "          [--threads 0] [--device cpu|cuda|cuda:N] [--precision fp32|tf32|bf16-mixed]\n"
            "          [--optim adamw|sgd] [--peak-tflops X] [--profile-range]\n"
            "          [--warmup 3] [--steps 5] [--seed 0] [--json FILE] [--dump DIR]\n",
            prog);
}

/* "a,b,c" -> up to max positive ints; returns the count, 0 on a parse error. */
static int parse_ints(const char *s, int *out, int max) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || n == max) return 0;
        out[n++] = (int)v;
        s = end;
        if (*s == ',' || *s == 'x') s++;
        else if (*s) return 0;
    }
    return n;
}

static const char *act_name(mt_act_type a) {
    switch (a) {
    case MT_ACT_RELU: return "relu";
    case MT_ACT_LEAKY_RELU: return "leaky_relu";
    case MT_ACT_GELU: return "gelu";
    default: return "?";
    }
}

/* The JSON kwargs of experiments/unet3d_torch.py's UNet3D for cfg. */
static void unet_json(char *buf, size_t n, const mt_unet3d_config *c) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "{\"in_channels\": %d, \"out_channels\": %d, \"features\": [",
                          c->in_channels, c->out_channels);
    for (int l = 0; l < c->n_levels; l++)
        k += (size_t)snprintf(buf + k, n - k, "%s%d", l ? ", " : "", c->features[l]);
    snprintf(buf + k, n - k,
             "], \"norm\": \"%s\", \"norm_groups\": %d, \"norm_affine\": %s, \"norm_eps\": %.9g, "
             "\"bn_momentum\": %.9g, \"act\": \"%s\", \"act_slope\": %.9g, \"upsample\": \"%s\", "
             "\"downsample\": \"%s\", \"deep_supervision\": false, \"dropout\": 0.0, \"conv_bias\": %s}",
             mt_norm_type_name(c->norm), c->norm_groups, c->norm_affine ? "true" : "false",
             (double)c->norm_eps, (double)c->bn_momentum, act_name(c->act), (double)c->act_slope,
             c->upsample == MT_UPSAMPLE_TRANSPOSED ? "transposed" : "trilinear",
             c->downsample == MT_DOWNSAMPLE_CONV ? "conv" : "maxpool", c->conv_bias ? "true" : "false");
}

static void loss_json(char *buf, size_t n, const mt_loss_config *l) {
    snprintf(buf, n,
             "{\"kind\": \"dice_ce\", \"include_background\": %s, \"batch\": %s, \"smooth_nr\": %.9g, "
             "\"smooth_dr\": %.9g, \"lambda_dice\": %.9g, \"lambda_ce\": %.9g}",
             l->dice.include_background ? "true" : "false", l->dice.batch ? "true" : "false",
             l->dice.smooth_nr, l->dice.smooth_dr, l->lambda_dice, l->lambda_ce);
}

static mt_status save_one(const char *dir, const char *file, mt_safetensors *st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    mt_status s = mt_safetensors_save(st, path);
    mt_safetensors_free(st);
    return s;
}

/* One forward + loss + backward from the initial weights; writes the bundle. */
static mt_status dump_bundle(const char *dir, mt_module *model, const mt_unet3d_config *mc,
                             const mt_loss_config *lc, mt_tensor *x, mt_tensor *y) {
    MT_TRY(mt_fs_mkdir_p(dir));
    char js[2048];
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_named_tensors sd = {0};
    mt_module_state_dict(model, &sd);
    mt_status s = MT_OK;
    for (int k = 0; k < sd.n && s == MT_OK; k++) s = mt_safetensors_add(&st, sd.items[k].name, sd.items[k].tensor);
    mt_named_tensors_free(&sd);
    unet_json(js, sizeof js, mc);
    mt_safetensors_set_meta(&st, "unet3d", js);
    loss_json(js, sizeof js, lc);
    mt_safetensors_set_meta(&st, "loss", js);
    if (s != MT_OK) {
        mt_safetensors_free(&st);
        return s;
    }
    MT_TRY(save_one(dir, "weights.safetensors", &st));

    mt_safetensors_init(&st);
    s = mt_safetensors_add(&st, "image", x);
    if (s == MT_OK) s = mt_safetensors_add(&st, "label", y);
    if (s != MT_OK) {
        mt_safetensors_free(&st);
        return s;
    }
    MT_TRY(save_one(dir, "batch.safetensors", &st));

    mt_module_zero_grad(model);
    mt_tensor *logits = mt_unet3d_forward(model, x), *loss = NULL;
    s = mt_loss_compute(&loss, logits, y, lc);
    if (s == MT_OK) s = mt_backward(loss, NULL, 0);
    mt_safetensors_init(&st);
    if (s == MT_OK) s = mt_safetensors_add(&st, "loss", loss);
    if (s == MT_OK) {
        mt_tensor *ld = mt_tensor_detach(logits);
        s = mt_safetensors_add(&st, "logits", ld);
        mt_tensor_release(ld);
    }
    mt_named_tensors ps = {0};
    mt_module_named_parameters(model, &ps);
    for (int k = 0; k < ps.n && s == MT_OK; k++) {
        mt_tensor *g = ps.items[k].tensor->grad;
        if (!g) {
            s = mt_error_set(MT_ERR_INVALID, "dump: parameter %s got no gradient", ps.items[k].name);
            break;
        }
        s = mt_safetensors_add(&st, ps.items[k].name, g);
    }
    mt_named_tensors_free(&ps);
    mt_tensor_release(logits);
    mt_tensor_release(loss);
    mt_module_zero_grad(model);
    if (s != MT_OK) {
        mt_safetensors_free(&st);
        return s;
    }
    return save_one(dir, "grads.safetensors", &st);
}

/* A JSON number, or null when v is not finite (a diverged loss). */
static const char *json_num(char *buf, size_t n, double v) {
    if (isfinite(v))
        snprintf(buf, n, "%.9g", v);
    else
        snprintf(buf, n, "null");
    return buf;
}

static void sync_device(const mt_backend *b) {
    if (b->synchronize) b->synchronize();
}

static void mem_stats(const mt_backend *b, mt_alloc_stats *st) {
    memset(st, 0, sizeof *st);
    if (b->memory_stats) b->memory_stats(st);
}

static void mem_reset_peak(const mt_backend *b) {
    if (b->memory_reset_peak) b->memory_reset_peak();
}

int main(int argc, char **argv) {
    mt_unet3d_config mc;
    mt_unet3d_config_default(&mc);
    mc.in_channels = 1;
    mc.out_channels = 3;
    mc.n_levels = 4;
    const int f0[4] = {16, 32, 64, 128};
    for (int l = 0; l < 4; l++) mc.features[l] = f0[l];
    int batch = 2, threads = 0, warmup = 3, steps = 5, batch_dice = 0, use_sgd = 0, profile_range = 0;
    int64_t patch[3] = {64, 64, 64};
    uint64_t seed = 0;
    double peak_tflops = 0.0;
    const char *json = NULL, *dump = NULL, *device_arg = "cpu", *precision = "fp32";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1, used = 1;
        if (!strcmp(a, "--features") && v) {
            int n = parse_ints(v, mc.features, MT_UNET3D_MAX_LEVELS);
            ok = n > 0;
            mc.n_levels = n;
        } else if (!strcmp(a, "--in") && v) {
            ok = (mc.in_channels = atoi(v)) > 0;
        } else if (!strcmp(a, "--out") && v) {
            ok = (mc.out_channels = atoi(v)) > 1;
        } else if (!strcmp(a, "--batch") && v) {
            ok = (batch = atoi(v)) > 0;
        } else if (!strcmp(a, "--patch") && v) {
            int p[3], n = parse_ints(v, p, 3);
            ok = n == 1 || n == 3;
            for (int k = 0; k < 3 && ok; k++) patch[k] = p[n == 1 ? 0 : k];
        } else if (!strcmp(a, "--norm") && v) {
            if (!strcmp(v, "instance")) mc.norm = MT_NORM_INSTANCE;
            else if (!strcmp(v, "batch")) mc.norm = MT_NORM_BATCH;
            else if (!strcmp(v, "group")) mc.norm = MT_NORM_GROUP;
            else if (!strcmp(v, "none")) mc.norm = MT_NORM_NONE;
            else ok = 0;
        } else if (!strcmp(a, "--groups") && v) {
            ok = (mc.norm_groups = atoi(v)) > 0;
        } else if (!strcmp(a, "--act") && v) {
            if (!strcmp(v, "leaky_relu")) mc.act = MT_ACT_LEAKY_RELU;
            else if (!strcmp(v, "relu")) mc.act = MT_ACT_RELU;
            else if (!strcmp(v, "gelu")) mc.act = MT_ACT_GELU;
            else ok = 0;
        } else if (!strcmp(a, "--upsample") && v) {
            if (!strcmp(v, "transposed")) mc.upsample = MT_UPSAMPLE_TRANSPOSED;
            else if (!strcmp(v, "trilinear")) mc.upsample = MT_UPSAMPLE_TRILINEAR;
            else ok = 0;
        } else if (!strcmp(a, "--threads") && v) {
            threads = atoi(v);
            ok = threads >= 0;
        } else if (!strcmp(a, "--device") && v) {
            device_arg = v;
        } else if (!strcmp(a, "--precision") && v) {
            ok = !strcmp(v, "fp32") || !strcmp(v, "tf32") || !strcmp(v, "bf16-mixed");
            precision = v;
        } else if (!strcmp(a, "--optim") && v) {
            ok = !strcmp(v, "adamw") || !strcmp(v, "sgd");
            use_sgd = !strcmp(v, "sgd");
        } else if (!strcmp(a, "--peak-tflops") && v) {
            char *end;
            peak_tflops = strtod(v, &end);
            ok = end != v && !*end && peak_tflops > 0.0;
        } else if (!strcmp(a, "--warmup") && v) {
            ok = (warmup = atoi(v)) >= 0;
        } else if (!strcmp(a, "--steps") && v) {
            ok = (steps = atoi(v)) > 0;
        } else if (!strcmp(a, "--seed") && v) {
            seed = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--json") && v) {
            json = v;
        } else if (!strcmp(a, "--dump") && v) {
            dump = v;
        } else if (!strcmp(a, "--no-affine")) {
            mc.norm_affine = 0;
            used = 0;
        } else if (!strcmp(a, "--batch-dice")) {
            batch_dice = 1;
            used = 0;
        } else if (!strcmp(a, "--profile-range")) {
            profile_range = 1;
            used = 0;
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "bench_train_step: bad argument '%s%s%s'\n", a, v && used ? " " : "",
                    v && used ? v : "");
            usage(argv[0]);
            return 2;
        }
        i += used;
    }
    if (mt_unet3d_config_validate(&mc) != MT_OK || mt_unet3d_check_patch(&mc, patch) != MT_OK) {
        fprintf(stderr, "bench_train_step: %s\n", mt_error_msg());
        return 2;
    }
    mt_device dev;
    if (mt_device_parse(device_arg, &dev) != 0) {
        fprintf(stderr, "bench_train_step: --device %s: %s\n", device_arg, mt_error_msg());
        return 2;
    }
    const mt_backend *be = mt_backend_get(dev.type);
    if (dev.type != MT_CPU && be->set_device && be->set_device(dev.index) != 0) {
        fprintf(stderr, "bench_train_step: --device %s: %s\n", device_arg, mt_error_msg());
        return 2;
    }
    if (dump && dev.type != MT_CPU) {
        fprintf(stderr, "bench_train_step: --dump needs --device cpu\n");
        return 2;
    }
    char dev_name[32];
    mt_device_name(dev, dev_name, sizeof dev_name);
    const mt_dtype autocast = !strcmp(precision, "bf16-mixed") ? MT_BF16 : MT_F32;
    mt_backend_set_allow_tf32(!strcmp(precision, "tf32"));
    mt_cpu_set_num_threads(threads);

    mt_module *model = NULL;
    if (mt_unet3d_new(&model, &mc, seed) != MT_OK ||
        (dev.type != MT_CPU && mt_module_to_device(model, dev) != MT_OK)) {
        fprintf(stderr, "bench_train_step: %s\n", mt_error_msg());
        return 1;
    }
    /* the parameters after the move (mt_module_to_device replaces them) */
    mt_named_tensors ps = {0};
    mt_module_named_parameters(model, &ps);
    mt_tensor **pv = malloc(sizeof *pv * (size_t)ps.n);
    for (int k = 0; k < ps.n; k++) pv[k] = ps.items[k].tensor;
    mt_optim opt;
    mt_status os = use_sgd ? mt_optim_init_sgd(&opt, ps.n, pv, 1e-2, 0.99, 0.0, 3e-5, 1)
                           : mt_optim_init_adamw(&opt, ps.n, pv, 1e-2, 0.9, 0.999, 1e-8, 1e-4);
    if (os != MT_OK) {
        fprintf(stderr, "bench_train_step: %s\n", mt_error_msg());
        return 1;
    }
    free(pv);
    mt_named_tensors_free(&ps);
    const char *opt_name = use_sgd ? "SGD" : "AdamW";

    mt_loss_config lc = mt_loss_config_default(MT_LOSS_DICE_CE);
    lc.dice.include_background = 0; /* configs/default.yaml and configs/unet3d.yaml */
    lc.dice.batch = batch_dice;

    mt_rng rng;
    mt_rng_init_stream(&rng, seed, 0xbe7c4, 1, 0);
    mt_tensor *xh = mt_tensor_new(MT_F32, MT_SHAPE(batch, mc.in_channels, patch[0], patch[1], patch[2]),
                                  MT_DEVICE_CPU);
    mt_rng_fill_normal(xh, &rng, 0.0f, 1.0f);
    mt_tensor *yh = mt_tensor_new(MT_U8, MT_SHAPE(batch, 1, patch[0], patch[1], patch[2]), MT_DEVICE_CPU);
    uint8_t *yp = (uint8_t *)mt_tensor_data(yh);
    for (int64_t i = 0, n = mt_tensor_numel(yh); i < n; i++)
        yp[i] = (uint8_t)mt_rng_randint(&rng, 0, mc.out_channels);
    mt_tensor *x = mt_tensor_to_device(xh, dev), *y = mt_tensor_to_device(yh, dev);
    mt_tensor_release(xh);
    mt_tensor_release(yh);

    if (dump) {
        if (dump_bundle(dump, model, &mc, &lc, x, y) != MT_OK) {
            fprintf(stderr, "bench_train_step: --dump %s: %s\n", dump, mt_error_msg());
            return 1;
        }
        printf("interop bundle written to %s (check: python3 tests/interop_torch.py %s)\n", dump, dump);
    }

    double gflop = 3.0 * mt_unet3d_flops(&mc, batch, patch) * 1e-9;
    if (dev.type == MT_CPU)
        printf("medtrain UNet3D training step (CPU, %d threads, %s, %s)\n", mt_cpu_get_num_threads(), precision,
               opt_name);
    else
        printf("medtrain UNet3D training step (%s, %s, %s)\n", dev_name, precision, opt_name);
    printf("  features [");
    for (int l = 0; l < mc.n_levels; l++) printf("%s%d", l ? "," : "", mc.features[l]);
    printf("], %s norm%s, %s, %s upsampling, in %d / out %d, batch %d, patch %lldx%lldx%lld%s\n",
           mt_norm_type_name(mc.norm), mc.norm == MT_NORM_INSTANCE && mc.norm_affine ? " (affine)" : "",
           act_name(mc.act), mc.upsample == MT_UPSAMPLE_TRANSPOSED ? "transposed-conv" : "trilinear",
           mc.in_channels, mc.out_channels, batch, (long long)patch[0], (long long)patch[1],
           (long long)patch[2], batch_dice ? ", batch Dice" : "");
    printf("  %lld parameters, %.2f GFLOP per step (3 x forward); %d warm-up + %d timed steps\n",
           (long long)mt_module_num_params(model), gflop, warmup, steps);
    if (!strcmp(precision, "tf32") && dev.type == MT_CPU)
        printf("  note: tf32 has no effect on the CPU (it computes in full fp32)\n");
    if (profile_range && dev.type == MT_CPU)
        printf("  note: --profile-range has no effect on the CPU\n");
    if (profile_range && dev.type != MT_CPU && !cudaProfilerStart)
        printf("  note: --profile-range: cudaProfilerStart is not linked in; no range marked\n");
    fflush(stdout);

    double *tf = calloc((size_t)steps, sizeof *tf), *tb = calloc((size_t)steps, sizeof *tb);
    double *to = calloc((size_t)steps, sizeof *to), *tt = calloc((size_t)steps, sizeof *tt);
    double first_loss = NAN, last_loss = NAN;
    mt_alloc_stats a0, a1;
    int64_t peak_warmup = 0;
    struct rusage ru0, ru;
    int profiling = 0;
    for (int it = 0; it < warmup + steps; it++) {
        if (it == warmup) {
            sync_device(be);
            mem_stats(be, &a0);
            peak_warmup = a0.peak_in_use;
            mem_reset_peak(be);
            mem_stats(be, &a0);
            getrusage(RUSAGE_SELF, &ru0);
            if (profile_range && dev.type != MT_CPU && cudaProfilerStart) profiling = cudaProfilerStart() == 0;
        }
        sync_device(be);
        double t0 = now_s();
        mt_dtype prev_autocast = mt_autocast_set(autocast);
        mt_tensor *logits = mt_unet3d_forward(model, x), *loss = NULL;
        mt_status ls = mt_loss_compute(&loss, logits, y, &lc);
        mt_autocast_set(prev_autocast);
        if (ls != MT_OK) {
            fprintf(stderr, "bench_train_step: loss: %s\n", mt_error_msg());
            return 1;
        }
        mt_tensor_release(logits);
        double lv = mt_tensor_item(loss);
        sync_device(be);
        double t1 = now_s();
        mt_optim_zero_grad(&opt);
        if (mt_backward(loss, NULL, 0) != MT_OK) {
            fprintf(stderr, "bench_train_step: backward: %s\n", mt_error_msg());
            return 1;
        }
        mt_tensor_release(loss);
        sync_device(be);
        double t2 = now_s();
        mt_optim_step(&opt);
        sync_device(be);
        double t3 = now_s();
        if (it == 0) first_loss = lv;
        last_loss = lv;
        if (it >= warmup) {
            int k = it - warmup;
            tf[k] = t1 - t0;
            tb[k] = t2 - t1;
            to[k] = t3 - t2;
            tt[k] = t3 - t0;
        }
    }
    if (profiling) cudaProfilerStop();
    mem_stats(be, &a1);
    getrusage(RUSAGE_SELF, &ru);
    double mf = median(tf, steps), mb = median(tb, steps), mo = median(to, steps), mt = median(tt, steps);
    double best = tt[0];
    for (int k = 1; k < steps; k++) best = tt[k] < best ? tt[k] : best;
    const double MiB = 1048576.0;
    double peak_mib = (double)a1.peak_in_use / MiB;
    double peak_run_mib = (double)(a1.peak_in_use > peak_warmup ? a1.peak_in_use : peak_warmup) / MiB;
    double reserved_mib = (double)(a1.in_use + a1.cached) / MiB;
    double sps = batch / mt, tflops = gflop / mt * 1e-3;
    double mfu = peak_tflops > 0.0 ? tflops / peak_tflops : NAN;
    long long sys_timed = (long long)(a1.sys_allocs - a0.sys_allocs);
    printf("  forward+loss  %9.1f ms\n", 1e3 * mf);
    printf("  backward      %9.1f ms\n", 1e3 * mb);
    printf("  %-13s %9.1f ms\n", use_sgd ? "SGD step" : "AdamW step", 1e3 * mo);
    printf("  step (median) %9.1f ms   (best %.1f ms)  %.1f GFLOP/s\n", 1e3 * mt, 1e3 * best, gflop / mt);
    printf("  throughput    %9.2f samples/s, %.2f TFLOP/s", sps, tflops);
    if (peak_tflops > 0.0)
        printf(", MFU %.1f%% of %.0f TFLOP/s\n", 100.0 * mfu, peak_tflops);
    else
        printf(" (MFU: pass --peak-tflops)\n");
    printf("  loss: first %.6f, last %.6f\n", first_loss, last_loss);
    if (dev.type == MT_CPU) {
        printf("  host memory: peak in use %.1f MiB (%.1f MiB before the step; whole run %.1f MiB), max RSS "
               "%.1f MiB\n",
               peak_mib, (double)a0.in_use / MiB, peak_run_mib, (double)ru.ru_maxrss / 1024.0);
        printf("  timed steps: %lld allocations reached the system, %.0f minor page faults per step\n", sys_timed,
               (double)(ru.ru_minflt - ru0.ru_minflt) / steps);
    } else {
        printf("  %s memory: peak in use %.1f MiB over the timed steps, %.1f MiB over the whole run "
               "(warm-up included); %.1f MiB in use before the timed steps; allocator holds %.1f MiB\n",
               dev_name, peak_mib, peak_run_mib, (double)a0.in_use / MiB, reserved_mib);
        printf("  timed steps: %lld device allocations reached cudaMalloc (0 = steady state); host max RSS "
               "%.1f MiB\n",
               sys_timed, (double)ru.ru_maxrss / 1024.0);
    }
    if (profiling) printf("  profiler range: the %d timed steps\n", steps);

    if (json) {
        FILE *fp = fopen(json, "w");
        if (!fp) {
            fprintf(stderr, "bench_train_step: cannot write %s\n", json);
            return 1;
        }
        char mfu_s[32], l0_s[32], l1_s[32];
        json_num(mfu_s, sizeof mfu_s, mfu); /* null without --peak-tflops */
        json_num(l0_s, sizeof l0_s, first_loss);
        json_num(l1_s, sizeof l1_s, last_loss);
        fprintf(fp,
                "{\"impl\": \"medtrain\", \"device\": \"%s\", \"precision\": \"%s\", \"optim\": \"%s\", "
                "\"threads\": %d, \"batch\": %d, \"gflop\": %.6f, \"params\": %lld, "
                "\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"opt_ms\": %.3f, \"step_ms\": %.3f, "
                "\"best_step_ms\": %.3f, \"gflops\": %.3f, \"samples_per_s\": %.4f, \"tflops\": %.4f, "
                "\"peak_tflops\": %.3f, \"mfu\": %s, \"peak_mib\": %.3f, \"peak_run_mib\": %.3f, "
                "\"reserved_mib\": %.3f, \"maxrss_mib\": %.3f, \"first_loss\": %s, \"last_loss\": %s, "
                "\"sys_allocs_timed\": %lld, \"warmup\": %d, \"steps\": %d}\n",
                dev_name, precision, use_sgd ? "sgd" : "adamw", mt_cpu_get_num_threads(), batch, gflop,
                (long long)mt_module_num_params(model), 1e3 * mf, 1e3 * mb, 1e3 * mo, 1e3 * mt, 1e3 * best,
                gflop / mt, sps, tflops, peak_tflops, mfu_s, peak_mib, peak_run_mib, reserved_mib,
                (double)ru.ru_maxrss / 1024.0, l0_s, l1_s, sys_timed, warmup, steps);
        fclose(fp);
    }
    free(tf);
    free(tb);
    free(to);
    free(tt);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_optim_free(&opt);
    mt_module_free(model);
    return 0;
}
