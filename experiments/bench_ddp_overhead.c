/* Overhead of the distributed path with one rank (issue 5: target <= 2 % of
 * the step time): one process, the default config's model and batch, training
 * steps timed in interleaved blocks WITH the gradient reducer (launch/ddp.h:
 * hooks copying each gradient into its bucket during backward, the bucket
 * all-reduces, mt_ddp_finish copying back) and WITHOUT it (hooks removed).
 * Interleaving in one process cancels the drift and neighbours' load that
 * made separate runs inconclusive on a shared machine.
 *
 *   mpirun --allow-run-as-root -np 1 bench_ddp_overhead [--rounds 8] [--block 10]
 *          [--warmup 3] [--threads 0] [--features 8,16,32] [--patch 40] [--batch 2]
 *
 * Under mpirun the all-reduces go through MPI (one rank); without it through
 * the no-MPI communicator (world 1). Prints per-arm medians of the step time,
 * the ratio, and the time spent in mt_ddp_finish. MPI_Init's own effect on the
 * process (both arms run after it) is not part of this figure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/autograd.h"
#include "core/backend.h"
#include "launch/ddp.h"
#include "launch/dist.h"
#include "layers/models/unet3d.h"
#include "losses/losses.h"
#include "optim/optim.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int parse_ints(const char *s, int *out, int max) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || n == max) return 0;
        out[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return 0;
    }
    return n;
}

int main(int argc, char **argv) {
    int rounds = 8, block = 10, warmup = 3, threads = 0, batch = 2, patch = 40;
    int feats[MT_UNET3D_MAX_LEVELS] = {8, 16, 32}, nf = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (!strcmp(a, "--rounds") && ok) rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--block") && ok) block = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && ok) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && ok) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--batch") && ok) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--patch") && ok) patch = atoi(argv[++i]);
        else if (!strcmp(a, "--features") && ok) ok = (nf = parse_ints(argv[++i], feats, MT_UNET3D_MAX_LEVELS)) > 0;
        else ok = 0;
        if (!ok || rounds < 1 || block < 1 || warmup < 0 || batch < 1 || patch < 1) {
            fprintf(stderr, "usage: %s [--rounds 8] [--block 10] [--warmup 3] [--threads 0] "
                            "[--features 8,16,32] [--patch 40] [--batch 2]\n", argv[0]);
            return 2;
        }
    }
    mt_cpu_set_num_threads(threads);
    mt_dist *d = mt_dist_get();

    mt_unet3d_config mc;
    mt_unet3d_config_default(&mc);
    mc.in_channels = 1;
    mc.out_channels = 3;
    mc.n_levels = nf;
    for (int k = 0; k < nf; k++) mc.features[k] = feats[k];
    mt_module *model = NULL;
    if (mt_unet3d_new(&model, &mc, 0) != MT_OK) {
        fprintf(stderr, "model: %s\n", mt_error_msg());
        return 2;
    }
    mt_named_tensors ps = {0};
    mt_module_named_parameters(model, &ps);
    mt_tensor **pv = malloc(sizeof *pv * (size_t)ps.n);
    for (int k = 0; k < ps.n; k++) pv[k] = ps.items[k].tensor;
    mt_optim opt;
    MT_CHECK(mt_optim_init_adamw(&opt, ps.n, pv, 1e-3, 0.9, 0.999, 1e-8, 1e-4) == MT_OK);
    mt_loss_config lc = mt_loss_config_default(MT_LOSS_DICE_CE);
    lc.dice.include_background = 0;

    mt_rng rng;
    mt_rng_init(&rng, 1);
    mt_tensor *x = mt_tensor_new(MT_F32, MT_SHAPE(batch, 1, patch, patch, patch), MT_DEVICE_CPU);
    mt_rng_fill_normal(x, &rng, 0, 1);
    mt_tensor *y = mt_tensor_new(MT_U8, MT_SHAPE(batch, 1, patch, patch, patch), MT_DEVICE_CPU);
    for (int64_t i = 0; i < mt_tensor_numel(y); i++) mt_tensor_set_flat(y, i, (double)(mt_rng_u32(&rng) % 3));

    int n_steps = rounds * block;
    double *t_on = malloc(sizeof(double) * (size_t)n_steps), *t_off = malloc(sizeof(double) * (size_t)n_steps);
    double *t_fin = malloc(sizeof(double) * (size_t)n_steps);
    int n_on = 0, n_off = 0;
    mt_ddp *ddp = NULL;
    for (int r = -1; r < 2 * rounds; r++) {
        /* r = -1: warm-up (with the reducer); then ABBA order per pair of blocks */
        int with = r < 0 ? 1 : ((r % 4 == 0 || r % 4 == 3) ? 1 : 0);
        if (with && !ddp) MT_CHECK(mt_ddp_init(&ddp, d, model, 25, 1) == MT_OK);
        if (!with && ddp) {
            mt_ddp_free(ddp);
            ddp = NULL;
        }
        int steps = r < 0 ? warmup : block;
        for (int s = 0; s < steps; s++) {
            double t0 = now_s();
            mt_tensor *logits = mt_unet3d_forward(model, x);
            mt_tensor *loss = NULL;
            MT_CHECK(mt_loss_compute(&loss, logits, y, &lc) == MT_OK);
            mt_tensor_release(logits);
            mt_optim_zero_grad(&opt);
            MT_CHECK(mt_backward(loss, NULL, 0) == MT_OK);
            mt_tensor_release(loss);
            double tf = now_s();
            if (ddp) MT_CHECK(mt_ddp_finish(ddp) == MT_OK);
            double tf1 = now_s();
            mt_optim_step(&opt);
            double t1 = now_s();
            if (r < 0) continue;
            if (with) {
                t_fin[n_on] = tf1 - tf;
                t_on[n_on++] = t1 - t0;
            } else {
                t_off[n_off++] = t1 - t0;
            }
        }
    }
    mt_ddp_free(ddp);
    double fin = median(t_fin, n_on), on = median(t_on, n_on), off = median(t_off, n_off);
    printf("distributed path with 1 rank (%s), model features", d->use_mpi ? "MPI, under mpirun" : "no MPI");
    for (int k = 0; k < nf; k++) printf("%s%d", k ? "-" : " ", feats[k]);
    printf(", patch %d^3, batch %d, %d threads, %d parameters in %d steps per arm (ABBA blocks of %d)\n",
           patch, batch, mt_cpu_get_num_threads(), ps.n, n_on, block);
    printf("median step: with reducer %.2f ms, without %.2f ms, ratio %.4f (%+.2f %%); "
           "mt_ddp_finish median %.3f ms (%.2f %% of the step)\n",
           on * 1e3, off * 1e3, on / off, (on / off - 1) * 100, fin * 1e3, fin / on * 100);
    mt_optim_free(&opt);
    free(pv);
    mt_named_tensors_free(&ps);
    mt_module_free(model);
    mt_tensor_release(x);
    mt_tensor_release(y);
    free(t_on);
    free(t_off);
    free(t_fin);
    return 0;
}
