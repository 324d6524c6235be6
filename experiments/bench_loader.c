/* Loader throughput (issue 4): patches/s of mt_loader with augmentation at
 * the hippocampus plan (patch 40x56x40, batch 9, phantom volumes 64x80x64)
 * and at 128^3 (batch 2, phantom volumes 160^3), for 1 and 2 workers, with
 * no augmentation, nnU-Net-default probabilities and the worst case (every
 * probability 1, elastic and rot90 included).
 *
 *   bench_loader [batches_small] [batches_large] [max_workers]
 *
 * Prints a markdown table: per row the time per batch the loader delivers
 * (the GPU training step must take at least this long for the loader to keep
 * up) and patches/s. Timing starts once the batches queued during start-up
 * (queue capacity + 1) have been taken, and the consumer does no work of its
 * own, so it measures the workers' steady throughput.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/loader.h"
#include "data/phantom.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_loader: %s: %s\n", what, mt_error_msg());
    exit(1);
}

typedef struct {
    const char *name;
    int64_t vol[3], patch[3];
    int batch, cases;
} setup_t;

static void aug_worst(mt_augment_config *a) {
    mt_augment_config_default(a);
    a->p_rotation = a->p_scale = a->p_elastic = a->p_rot90 = 1.0;
    a->p_flip[0] = a->p_flip[1] = a->p_flip[2] = 1.0;
    a->p_noise = a->p_blur = a->p_brightness = a->p_contrast = a->p_lowres = 1.0;
    a->p_gamma_inverted = a->p_gamma = 1.0;
    a->blur_p_channel = a->lowres_p_channel = 1.0;
}

int main(int argc, char **argv) {
    int nb_small = argc > 1 ? atoi(argv[1]) : 20, nb_large = argc > 2 ? atoi(argv[2]) : 6;
    int max_workers = argc > 3 ? atoi(argv[3]) : 2;
    const setup_t setups[2] = {
        {"40x56x40 (hippocampus), batch 9", {64, 80, 64}, {40, 56, 40}, 9, 6},
        {"128^3, batch 2", {160, 160, 160}, {128, 128, 128}, 2, 3},
    };
    printf("| patch / batch | augmentation | workers | wall ms / batch | patches/s | CPU ms / batch | patches per "
           "CPU-s |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < 2; si++) {
        const setup_t *su = &setups[si];
        mt_phantom_config pc;
        mt_phantom_config_default(&pc);
        memcpy(pc.shape, su->vol, sizeof pc.shape);
        pc.num_classes = 3;
        mt_phantom_dataset ds;
        double t0 = now_s();
        if (mt_phantom_dataset_init(&ds, &pc, 0, su->cases) != MT_OK) die("phantom");
        fprintf(stderr, "%s: %d phantom cases in %.1f s\n", su->name, su->cases, now_s() - t0);
        mt_sampler_config sc;
        mt_sampler_config_default(&sc);
        memcpy(sc.patch, su->patch, sizeof sc.patch);
        sc.batch_size = su->batch;
        sc.num_classes = 3;
        sc.flip[0] = sc.flip[1] = sc.flip[2] = 0; /* flips come from the augmentation */
        mt_sampler s;
        if (mt_sampler_init(&s, &sc) != MT_OK) die("sampler");
        for (int i = 0; i < ds.num_cases; i++)
            if (mt_sampler_add_case(&s, ds.images[i], ds.labels[i]) != MT_OK) die("add case");
        for (int ai = 0; ai < 3; ai++) {
            mt_augment_config aug;
            const char *aname;
            if (ai == 0) {
                mt_augment_config_none(&aug);
                aname = "none";
            } else if (ai == 1) {
                mt_augment_config_default(&aug);
                aname = "nnU-Net default p";
            } else {
                aug_worst(&aug);
                aname = "all p = 1 (worst)";
            }
            for (int w = 1; w <= max_workers; w++) {
                mt_loader_config lc;
                mt_loader_config_default(&lc);
                lc.num_workers = w;
                lc.queue_capacity = 2 * w;
                mt_loader *L;
                if (mt_loader_init(&L, &lc, &s, &aug, 1, 0, 0) != MT_OK) die("loader");
                int nb = si == 0 ? nb_small : nb_large;
                mt_tensor *im, *lb;
                for (int b = 0; b <= lc.queue_capacity; b++) { /* warm-up: drain what was queued */
                    if (mt_loader_next(L, &im, &lb) != MT_OK) die("next");
                    mt_tensor_release(im);
                    mt_tensor_release(lb);
                }
                mt_loader_stats s0, s1;
                mt_loader_get_stats(L, &s0);
                double t = now_s();
                for (int b = 0; b < nb; b++) {
                    if (mt_loader_next(L, &im, &lb) != MT_OK) die("next");
                    mt_tensor_release(im);
                    mt_tensor_release(lb);
                }
                double dt = now_s() - t;
                mt_loader_get_stats(L, &s1);
                /* worker CPU time per batch finished meanwhile */
                double cpu = (s1.produce_cpu_s - s0.produce_cpu_s) / (double)(s1.produced - s0.produced);
                mt_loader_free(L);
                printf("| %s | %s | %d | %.1f | %.1f | %.1f | %.1f |\n", su->name, aname, w, 1e3 * dt / nb,
                       nb * su->batch / dt, 1e3 * cpu, su->batch / cpu);
                fflush(stdout);
            }
        }
        mt_sampler_free(&s);
        mt_phantom_dataset_free(&ds);
    }
    return 0;
}
