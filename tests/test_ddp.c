/* LABELS: mpi */
/* launch/ddp.h: bucketed gradient all-reduce. With W ranks each holding 1/W
 * of a batch, one backward + mt_ddp_finish gives the gradients of one rank
 * with the whole batch (UNet3D with instance norm: per-sample, so equal up to
 * float rounding); every parameter is reduced exactly once per step,
 * including the deep-supervision heads, which get no gradient from
 * mt_unet3d_forward. Rank 1 starts from different weights: mt_ddp_init
 * broadcasts rank 0's. Runs with world 1 (no mpirun), then 2 ranks. */
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "launch/ddp.h"
#include "layers/models/unet3d.h"
#include "mt_test.h"

#define NB 4 /* global batch */
#define STEPS 2

static void model_config(mt_unet3d_config *mc) {
    mt_unet3d_config_default(mc);
    mc->in_channels = 1;
    mc->out_channels = 3;
    mc->n_levels = 3;
    mc->features[0] = 4;
    mc->features[1] = 8;
    mc->features[2] = 8;
    mc->norm = MT_NORM_INSTANCE;
    mc->deep_supervision = 1; /* heads unused by mt_unet3d_forward: parameters without gradient */
}

/* loss = mean over the samples [lo, hi) of the global batch of mean(out * R) */
static mt_tensor *loss_of(mt_module *m, const mt_tensor *x, const mt_tensor *R, int lo, int hi) {
    mt_tensor *xs = mt_tensor_slice(x, 0, lo, hi, 1), *rs = mt_tensor_slice(R, 0, lo, hi, 1);
    mt_tensor *xc = mt_tensor_contiguous(xs);
    mt_tensor *out = mt_unet3d_forward(m, xc);
    mt_tensor *prod = mt_mul(out, rs);
    mt_tensor *l = mt_mean_all(prod);
    mt_tensor_release(xs);
    mt_tensor_release(rs);
    mt_tensor_release(xc);
    mt_tensor_release(out);
    mt_tensor_release(prod);
    return l;
}

static void run(mt_dist *d) {
    int W = d->world, rank = d->rank;
    CHECK(NB % W == 0);
    mt_unet3d_config mc;
    model_config(&mc);
    mt_module *ref = NULL, *model = NULL;
    CHECK(mt_unet3d_new(&ref, &mc, 1) == MT_OK);
    CHECK(mt_unet3d_new(&model, &mc, 1 + (uint64_t)rank) == MT_OK); /* rank 1: other weights */
    mt_ddp *r = NULL;
    /* tiny buckets so there are several (first bucket 1 KiB, others 4 KiB) */
    CHECK(mt_ddp_init(&r, d, model, 4.0 / 1024, 1.0 / 1024) == MT_OK);
    CHECK(mt_ddp_num_buckets(r) > 2);

    mt_named_tensors pr = {0}, pm = {0}, br = {0}, bm = {0};
    mt_module_named_parameters(ref, &pr);
    mt_module_named_parameters(model, &pm);
    mt_module_state_dict(ref, &br);
    mt_module_state_dict(model, &bm);
    CHECK(pr.n == pm.n && br.n == bm.n);
    /* broadcast: rank 0's weights everywhere */
    for (int k = 0; k < br.n; k++) mt_test_allclose_t(bm.items[k].tensor, br.items[k].tensor, 1e-30, 0, bm.items[k].name);
    /* buckets: reverse registration order, every parameter in exactly one */
    int expect = pm.n - 1, order_ok = 1;
    for (int b = 0; b < mt_ddp_num_buckets(r); b++)
        for (int k = 0; k < mt_ddp_bucket_size(r, b); k++) order_ok &= mt_ddp_bucket_param(r, b, k) == expect--;
    CHECK(order_ok && expect == -1);

    int per = NB / W;
    for (int step = 0; step < STEPS; step++) {
        mt_test_seed(100 + (uint64_t)step); /* same batch on every rank */
        mt_tensor *x = mt_test_randn(5, (int64_t[]){NB, 1, 8, 8, 8});
        mt_tensor *R = mt_test_randn(5, (int64_t[]){NB, 3, 8, 8, 8});
        /* reference: one rank, whole batch */
        mt_module_zero_grad(ref);
        mt_tensor *l = loss_of(ref, x, R, 0, NB);
        CHECK(mt_backward(l, NULL, 0) == MT_OK);
        mt_tensor_release(l);
        /* this rank's share */
        mt_module_zero_grad(model);
        l = loss_of(model, x, R, rank * per, (rank + 1) * per);
        /* the loss of a share is the mean over its samples: the mean over ranks is the global loss */
        CHECK(mt_backward(l, NULL, 0) == MT_OK);
        mt_tensor_release(l);
        CHECK(mt_ddp_finish(r) == MT_OK);
        int nograd = 0;
        for (int k = 0; k < pm.n; k++) {
            mt_tensor *gr = pr.items[k].tensor->grad, *gm = pm.items[k].tensor->grad;
            CHECK_MSG(gm != NULL, "%s has no .grad after finish", pm.items[k].name);
            if (!gm) continue;
            if (!gr) {
                nograd++;
                double mx = 0;
                for (int64_t i = 0; i < mt_tensor_numel(gm); i++) mx = fmax(mx, fabs(mt_tensor_get_flat(gm, i)));
                CHECK_MSG(mx == 0, "%s: no gradient in the reference, but %g after finish", pm.items[k].name, mx);
            } else {
                mt_test_allclose_t(gm, gr, 1e-7, 1e-4, pm.items[k].name);
            }
        }
        CHECK_MSG(nograd > 0, "expected parameters without gradient (deep-supervision heads)");
        /* same update on both models keeps them equal */
        for (int k = 0; k < pm.n; k++) {
            mt_tensor *gr = pr.items[k].tensor->grad;
            mt_tensor *gm = pm.items[k].tensor->grad;
            for (int64_t i = 0; i < mt_tensor_numel(gm); i++) {
                double g = gr ? mt_tensor_get_flat(gr, i) : 0.0;
                mt_tensor_set_flat(pr.items[k].tensor, i, mt_tensor_get_flat(pr.items[k].tensor, i) - 0.1 * g);
                mt_tensor_set_flat(pm.items[k].tensor, i, mt_tensor_get_flat(pm.items[k].tensor, i) - 0.1 * g);
            }
        }
        mt_tensor_release(x);
        mt_tensor_release(R);
    }
    int once = 1;
    for (int k = 0; k < pm.n; k++) once &= mt_ddp_reduce_count(r, k) == STEPS;
    CHECK_MSG(once, "every parameter reduced exactly once per step");
    CHECK(mt_ddp_started_in_backward(r) > 0); /* buckets overlapped with backward */
    printf("rank %d of %d: %d parameters in %d buckets, %lld bucket all-reduces started during backward\n", rank, W,
           pm.n, mt_ddp_num_buckets(r), (long long)mt_ddp_started_in_backward(r));
    mt_named_tensors_free(&pr);
    mt_named_tensors_free(&pm);
    mt_named_tensors_free(&br);
    mt_named_tensors_free(&bm);
    mt_ddp_free(r);
    mt_module_free(ref);
    mt_module_free(model);
}

/* Batch norm: each rank's forward (its own data) moves the running statistics;
 * after mt_ddp_sync_buffers every rank holds rank 0's. */
static void run_batchnorm(mt_dist *d) {
    mt_unet3d_config mc;
    model_config(&mc);
    mc.norm = MT_NORM_BATCH;
    mc.deep_supervision = 0;
    mt_module *model = NULL;
    CHECK(mt_unet3d_new(&model, &mc, 5) == MT_OK);
    mt_ddp *r = NULL;
    CHECK(mt_ddp_init(&r, d, model, 25, 1) == MT_OK);
    mt_test_seed(200 + (uint64_t)d->rank); /* different data per rank */
    mt_tensor *x = mt_test_randn(5, (int64_t[]){2, 1, 8, 8, 8});
    mt_tensor *R = mt_test_randn(5, (int64_t[]){2, 3, 8, 8, 8});
    mt_tensor *l = loss_of(model, x, R, 0, 2);
    CHECK(mt_backward(l, NULL, 0) == MT_OK);
    CHECK(mt_ddp_finish(r) == MT_OK);
    mt_named_tensors b = {0};
    mt_module_named_buffers(model, &b);
    CHECK(b.n > 0);
    double before = 0;
    for (int k = 0; k < b.n; k++)
        for (int64_t i = 0; i < mt_tensor_numel(b.items[k].tensor); i++)
            before += mt_tensor_get_flat(b.items[k].tensor, i) * (double)(k + 1);
    double bmx = before, bmn = before;
    CHECK(mt_dist_allreduce_f64(d, &bmx, 1, MT_DIST_MAX) == MT_OK);
    CHECK(mt_dist_allreduce_f64(d, &bmn, 1, MT_DIST_MIN) == MT_OK);
    if (d->world > 1) CHECK_MSG(bmx != bmn, "buffers already equal before the sync: the check proves nothing");
    CHECK(mt_ddp_sync_buffers(r) == MT_OK);
    double sum = 0;
    for (int k = 0; k < b.n; k++)
        for (int64_t i = 0; i < mt_tensor_numel(b.items[k].tensor); i++)
            sum += mt_tensor_get_flat(b.items[k].tensor, i) * (double)(k + 1);
    double mx = sum, mn = sum;
    CHECK(mt_dist_allreduce_f64(d, &mx, 1, MT_DIST_MAX) == MT_OK);
    CHECK(mt_dist_allreduce_f64(d, &mn, 1, MT_DIST_MIN) == MT_OK);
    CHECK_MSG(mx == mn, "batch-norm buffers differ across ranks after sync (%.17g vs %.17g)", mn, mx);
    mt_named_tensors_free(&b);
    mt_tensor_release(l);
    mt_tensor_release(x);
    mt_tensor_release(R);
    mt_ddp_free(r);
    mt_module_free(model);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--worker")) {
        mt_dist *d = mt_dist_get();
        CHECK(d->world == 2);
        run(d);
        run_batchnorm(d);
        printf("rank %d: ", d->rank);
        return mt_test_finish();
    }
    run(mt_dist_get()); /* world 1 */
    run_batchnorm(mt_dist_get());
    if (!mt_test_mpirun_path()) {
        printf("skipped: mpirun not found\n");
        mt_test_finish();
        return MT_TEST_SKIP;
    }
    int rc = mt_test_mpirun(2, "--worker", 300);
    CHECK_MSG(rc == 0, "mpirun -np 2 --worker exited with %d", rc);
    return mt_test_finish();
}
