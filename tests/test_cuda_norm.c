/* LABELS: gpu */
/* CUDA normalisation kernels (core/cuda/norm.cu) against the CPU backend
 * (core/cpu/norm.c) on the same inputs, f32 and bf16 activations (norm
 * parameters and statistics f32): group norm with G = 1, G = C (instance
 * norm) and in between, batch norm in training (batch statistics, running
 * stats updated in place) and eval mode, layer norm with narrow (one warp per
 * row) and wide (multi-block) rows; forward and backward (dx, dweight,
 * dbias), with and without weight / bias. Shapes: odd sizes, channel counts
 * that are not multiples of 8, planes shorter than the flat-kernel threshold,
 * planes of several chunks, inputs with a large mean against their spread
 * (statistics accuracy), and activations at a storage offset (misaligned for
 * 16-byte vectors: same residue for every tensor, or x alone). Outputs on the
 * GPU start as NaN so that an element left unwritten fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static const mt_device GPU = {MT_CUDA, 0};
static const mt_dtype FLOAT_DT[2] = {MT_F32, MT_BF16};

#define CPUK(slot) mt_kernel(MT_DEVICE_CPU, slot)
#define GPUK(slot) mt_kernel(GPU, slot)

static void rel(mt_tensor *t) {
    if (t) mt_tensor_release(t);
}

static mt_tensor *up(const mt_tensor *t) { return t ? mt_test_to_gpu(t) : NULL; }

/* A (shape) tensor of dtype dt on the CPU and its copy on the GPU. With
 * off != 0 both are views starting `off` leading slices into a buffer with
 * shape[0] + off leading slices (a storage offset). Random in [lo, hi), or
 * NaN (an output) when lo > hi. */
typedef struct {
    mt_tensor *c, *g;
} pair;

static pair make(int nd, const int64_t *shape, float lo, float hi, mt_dtype dt, int off) {
    int64_t full[MT_MAX_DIMS];
    memcpy(full, shape, sizeof(int64_t) * (size_t)nd);
    full[0] += off;
    mt_tensor *fc;
    if (lo > hi) {
        fc = mt_tensor_full(dt, nd, full, NAN, MT_DEVICE_CPU);
    } else {
        mt_tensor *f = mt_test_rand(nd, full, lo, hi);
        fc = mt_tensor_to_dtype(f, dt);
        mt_tensor_release(f);
    }
    mt_tensor *fg = mt_test_to_gpu(fc);
    pair p;
    p.c = mt_tensor_slice(fc, 0, off, off + shape[0], 1);
    p.g = mt_tensor_slice(fg, 0, off, off + shape[0], 1);
    mt_tensor_release(fc);
    mt_tensor_release(fg);
    return p;
}

static pair make_out(int nd, const int64_t *shape, mt_dtype dt, int off) {
    return make(nd, shape, 1.0f, 0.0f, dt, off);
}

static pair none(void) {
    pair p = {NULL, NULL};
    return p;
}

static void pfree(pair p) {
    rel(p.c);
    rel(p.g);
}

/* The CPU tensor as a GPU input (both sides then read identical values). */
static pair from_cpu(mt_tensor *c) {
    pair p = {c, up(c)};
    return p;
}

static void close_pair(pair p, mt_tol_kind kind, const char *what) {
    if (p.c) mt_test_close(p.g, p.c, kind, what);
}

/* ------------------------------------------------------------ group norm */

static void test_group_norm_case(const int64_t *shape, int groups, mt_dtype dt, float lo, float hi,
                                 int affine, int off_mode) {
    const int nd = 5;
    const int64_t N = shape[0], C = shape[1];
    /* off_mode 0: aligned; 1: every activation at one sample's offset; 2: x alone */
    int ox = off_mode ? 1 : 0, oo = off_mode == 1 ? 1 : 0;
    char what[160];
    snprintf(what, sizeof what, "group_norm (%lld,%lld,%lld,%lld,%lld) G=%d %s affine=%d off=%d",
             (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3],
             (long long)shape[4], groups, mt_dtype_name(dt), affine, off_mode);
    pair x = make(nd, shape, lo, hi, dt, ox);
    pair w = affine ? make(MT_SHAPE(C), 0.5f, 1.5f, MT_F32, 0) : none();
    pair b = affine ? make(MT_SHAPE(C), -0.5f, 0.5f, MT_F32, 0) : none();
    pair y = make_out(nd, shape, dt, oo);
    pair mean = make_out(MT_SHAPE(N * groups), MT_F32, 0);
    pair rstd = make_out(MT_SHAPE(N * groups), MT_F32, 0);
    const float eps = 1e-5f;
    CPUK(group_norm_forward)(y.c, mean.c, rstd.c, x.c, w.c, b.c, groups, eps);
    GPUK(group_norm_forward)(y.g, mean.g, rstd.g, x.g, w.g, b.g, groups, eps);
    char sub[200];
    snprintf(sub, sizeof sub, "%s: y", what);
    close_pair(y, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: mean", what);
    close_pair(mean, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: rstd", what);
    close_pair(rstd, MT_TOL_REDUCE, sub);

    /* backward from the CPU statistics (identical inputs on both sides) */
    pair m2 = from_cpu(mt_tensor_retain(mean.c)), r2 = from_cpu(mt_tensor_retain(rstd.c));
    pair dy = make(nd, shape, -1.0f, 1.0f, dt, oo);
    pair dx = make_out(nd, shape, dt, oo);
    int with_params = affine || off_mode == 0; /* also without weight but with dweight/dbias */
    pair dw = with_params ? make_out(MT_SHAPE(C), MT_F32, 0) : none();
    pair db = with_params ? make_out(MT_SHAPE(C), MT_F32, 0) : none();
    CPUK(group_norm_backward)(dx.c, dw.c, db.c, dy.c, x.c, w.c, m2.c, r2.c, groups);
    GPUK(group_norm_backward)(dx.g, dw.g, db.g, dy.g, x.g, w.g, m2.g, r2.g, groups);
    snprintf(sub, sizeof sub, "%s: dx", what);
    close_pair(dx, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dweight", what);
    close_pair(dw, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dbias", what);
    close_pair(db, MT_TOL_REDUCE, sub);

    /* parameter gradients alone (dx NULL) */
    if (with_params) {
        pair dw2 = make_out(MT_SHAPE(C), MT_F32, 0);
        GPUK(group_norm_backward)(NULL, dw2.g, NULL, dy.g, x.g, w.g, m2.g, r2.g, groups);
        snprintf(sub, sizeof sub, "%s: dweight without dx", what);
        mt_test_close(dw2.g, dw.c, MT_TOL_REDUCE, sub);
        pfree(dw2);
    }
    pfree(x), pfree(w), pfree(b), pfree(y), pfree(mean), pfree(rstd), pfree(m2), pfree(r2);
    pfree(dy), pfree(dx), pfree(dw), pfree(db);
}

static void test_group_norm(void) {
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = FLOAT_DT[di];
        /* odd sizes, C = 5: G = 1 and G = C (instance norm); offsets */
        const int64_t a[5] = {2, 5, 7, 9, 11};
        for (int off = 0; off < 3; off++) {
            test_group_norm_case(a, 1, dt, -2.0f, 3.0f, 1, off);
            test_group_norm_case(a, 5, dt, -2.0f, 3.0f, off != 1, off);
        }
        /* planes of 60 elements (flat elementwise kernels), G in {1, 2, 3, 6} */
        const int64_t b[5] = {3, 6, 5, 4, 3};
        const int gb[4] = {1, 2, 3, 6};
        for (int k = 0; k < 4; k++) test_group_norm_case(b, gb[k], dt, -1.0f, 1.0f, k & 1, 0);
        /* planes of several chunks, mean 51 against spread 1 */
        const int64_t c[5] = {2, 3, 20, 30, 31};
        test_group_norm_case(c, 1, dt, 50.0f, 52.0f, 1, 0);
        test_group_norm_case(c, 3, dt, 50.0f, 52.0f, 0, 2);
        /* planes of one element (groups of 5 planes) */
        const int64_t d[5] = {4, 10, 1, 1, 1};
        test_group_norm_case(d, 2, dt, -1.0f, 1.0f, 1, 0);
    }
    /* statistics accuracy: 262144-element instance-norm planes around 1000 */
    const int64_t e[5] = {1, 2, 64, 64, 64};
    test_group_norm_case(e, 2, MT_F32, 1000.0f, 1001.0f, 1, 0);
    test_group_norm_case(e, 2, MT_BF16, 1000.0f, 1008.0f, 0, 0);
}

/* ------------------------------------------------------------ batch norm */

static void test_batch_norm_case(const int64_t *shape, int nd, mt_dtype dt, float lo, float hi,
                                 int affine, int training, int off_mode) {
    const int64_t C = shape[1];
    int ox = off_mode ? 1 : 0, oo = off_mode == 1 ? 1 : 0;
    char what[160], sub[220];
    snprintf(what, sizeof what, "batch_norm nd=%d (%lld,%lld,...) %s affine=%d training=%d off=%d",
             nd, (long long)shape[0], (long long)shape[1], mt_dtype_name(dt), affine, training,
             off_mode);
    pair x = make(nd, shape, lo, hi, dt, ox);
    pair w = affine ? make(MT_SHAPE(C), 0.5f, 1.5f, MT_F32, 0) : none();
    pair b = affine ? make(MT_SHAPE(C), -0.5f, 0.5f, MT_F32, 0) : none();
    pair rm = make(MT_SHAPE(C), -0.5f, 0.5f, MT_F32, 0);
    pair rv = make(MT_SHAPE(C), 0.5f, 2.0f, MT_F32, 0);
    pair y = make_out(nd, shape, dt, oo);
    pair sm = make_out(MT_SHAPE(C), MT_F32, 0), si = make_out(MT_SHAPE(C), MT_F32, 0);
    const float momentum = 0.1f, eps = 1e-5f;
    CPUK(batch_norm_forward)(y.c, sm.c, si.c, x.c, w.c, b.c, rm.c, rv.c, training, momentum, eps);
    GPUK(batch_norm_forward)(y.g, sm.g, si.g, x.g, w.g, b.g, rm.g, rv.g, training, momentum, eps);
    snprintf(sub, sizeof sub, "%s: y", what);
    close_pair(y, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: save_mean", what);
    close_pair(sm, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: save_invstd", what);
    close_pair(si, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: running_mean", what);
    close_pair(rm, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: running_var", what);
    close_pair(rv, MT_TOL_REDUCE, sub);

    /* training without running stats */
    if (training) {
        pair y2 = make_out(nd, shape, dt, oo);
        pair sm2 = make_out(MT_SHAPE(C), MT_F32, 0), si2 = make_out(MT_SHAPE(C), MT_F32, 0);
        GPUK(batch_norm_forward)(y2.g, sm2.g, si2.g, x.g, w.g, b.g, NULL, NULL, 1, momentum, eps);
        snprintf(sub, sizeof sub, "%s: y without running stats", what);
        mt_test_close(y2.g, y.c, MT_TOL_REDUCE, sub);
        snprintf(sub, sizeof sub, "%s: save_invstd without running stats", what);
        mt_test_close(si2.g, si.c, MT_TOL_REDUCE, sub);
        pfree(y2), pfree(sm2), pfree(si2);
    }

    /* backward from the CPU's saved statistics */
    pair sm3 = from_cpu(mt_tensor_retain(sm.c)), si3 = from_cpu(mt_tensor_retain(si.c));
    pair dy = make(nd, shape, -1.0f, 1.0f, dt, oo);
    pair dx = make_out(nd, shape, dt, oo);
    pair dw = make_out(MT_SHAPE(C), MT_F32, 0), db = make_out(MT_SHAPE(C), MT_F32, 0);
    CPUK(batch_norm_backward)(dx.c, dw.c, db.c, dy.c, x.c, w.c, sm3.c, si3.c, training);
    GPUK(batch_norm_backward)(dx.g, dw.g, db.g, dy.g, x.g, w.g, sm3.g, si3.g, training);
    snprintf(sub, sizeof sub, "%s: dx", what);
    close_pair(dx, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dweight", what);
    close_pair(dw, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dbias", what);
    close_pair(db, MT_TOL_REDUCE, sub);
    /* dx alone (eval: no reduction at all) */
    pair dx2 = make_out(nd, shape, dt, oo);
    GPUK(batch_norm_backward)(dx2.g, NULL, NULL, dy.g, x.g, w.g, sm3.g, si3.g, training);
    snprintf(sub, sizeof sub, "%s: dx without parameter gradients", what);
    mt_test_close(dx2.g, dx.c, MT_TOL_REDUCE, sub);

    pfree(x), pfree(w), pfree(b), pfree(rm), pfree(rv), pfree(y), pfree(sm), pfree(si);
    pfree(sm3), pfree(si3), pfree(dy), pfree(dx), pfree(dw), pfree(db), pfree(dx2);
}

static void test_batch_norm(void) {
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = FLOAT_DT[di];
        const int64_t a[5] = {2, 5, 7, 9, 11};
        for (int training = 0; training < 2; training++) {
            test_batch_norm_case(a, 5, dt, -2.0f, 3.0f, 1, training, 0);
            test_batch_norm_case(a, 5, dt, -2.0f, 3.0f, 0, training, 1);
            test_batch_norm_case(a, 5, dt, -2.0f, 3.0f, 1, training, 2);
            /* planes of 60 elements: flat elementwise kernels */
            const int64_t b[5] = {3, 6, 5, 4, 3};
            test_batch_norm_case(b, 5, dt, -1.0f, 1.0f, 1, training, 0);
            /* (N, C) input: planes of one element */
            const int64_t c[2] = {9, 13};
            test_batch_norm_case(c, 2, dt, -1.0f, 1.0f, training, training, 0);
            /* planes of several chunks, mean 51 */
            const int64_t d[5] = {2, 3, 20, 30, 31};
            test_batch_norm_case(d, 5, dt, 50.0f, 52.0f, 1, training, 0);
        }
    }
}

/* ------------------------------------------------------------ layer norm */

static void test_layer_norm_case(const int64_t *shape, int nd, int64_t D, mt_dtype dt, float lo,
                                 float hi, int affine, int off_mode) {
    int64_t total = 1;
    for (int d = 0; d < nd; d++) total *= shape[d];
    const int64_t M = total / D;
    int ox = off_mode ? 1 : 0, oo = off_mode == 1 ? 1 : 0;
    char what[160], sub[220];
    snprintf(what, sizeof what, "layer_norm M=%lld D=%lld %s affine=%d off=%d", (long long)M,
             (long long)D, mt_dtype_name(dt), affine, off_mode);
    pair x = make(nd, shape, lo, hi, dt, ox);
    /* affine: 0 none, 1 weight and bias, 2 weight only, 3 bias only */
    pair w = (affine == 1 || affine == 2) ? make(MT_SHAPE(D), 0.5f, 1.5f, MT_F32, 0) : none();
    pair b = (affine == 1 || affine == 3) ? make(MT_SHAPE(D), -0.5f, 0.5f, MT_F32, 0) : none();
    pair y = make_out(nd, shape, dt, oo);
    pair mean = make_out(MT_SHAPE(M), MT_F32, 0), rstd = make_out(MT_SHAPE(M), MT_F32, 0);
    const float eps = 1e-5f;
    CPUK(layer_norm_forward)(y.c, mean.c, rstd.c, x.c, w.c, b.c, D, eps);
    GPUK(layer_norm_forward)(y.g, mean.g, rstd.g, x.g, w.g, b.g, D, eps);
    snprintf(sub, sizeof sub, "%s: y", what);
    close_pair(y, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: mean", what);
    close_pair(mean, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: rstd", what);
    close_pair(rstd, MT_TOL_REDUCE, sub);

    pair m2 = from_cpu(mt_tensor_retain(mean.c)), r2 = from_cpu(mt_tensor_retain(rstd.c));
    pair dy = make(nd, shape, -1.0f, 1.0f, dt, oo);
    pair dx = make_out(nd, shape, dt, oo);
    pair dw = make_out(MT_SHAPE(D), MT_F32, 0), db = make_out(MT_SHAPE(D), MT_F32, 0);
    CPUK(layer_norm_backward)(dx.c, dw.c, db.c, dy.c, x.c, w.c, m2.c, r2.c, D);
    GPUK(layer_norm_backward)(dx.g, dw.g, db.g, dy.g, x.g, w.g, m2.g, r2.g, D);
    snprintf(sub, sizeof sub, "%s: dx", what);
    close_pair(dx, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dweight", what);
    close_pair(dw, MT_TOL_REDUCE, sub);
    snprintf(sub, sizeof sub, "%s: dbias", what);
    close_pair(db, MT_TOL_REDUCE, sub);
    pfree(x), pfree(w), pfree(b), pfree(y), pfree(mean), pfree(rstd), pfree(m2), pfree(r2);
    pfree(dy), pfree(dx), pfree(dw), pfree(db);
}

static void test_layer_norm(void) {
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = FLOAT_DT[di];
        const int64_t a[3] = {6, 7, 45};
        for (int affine = 0; affine < 4; affine++) {
            test_layer_norm_case(a, 3, 45, dt, -2.0f, 3.0f, affine, affine == 3 ? 2 : 0);
            test_layer_norm_case(a, 3, 315, dt, -2.0f, 3.0f, affine, affine == 1 ? 1 : 0);
        }
        /* short rows, many of them */
        const int64_t b[2] = {1037, 3};
        test_layer_norm_case(b, 2, 3, dt, -1.0f, 1.0f, 1, 0);
        /* wide rows: one chunk, and several chunks, mean 51 */
        const int64_t c[2] = {3, 5001};
        test_layer_norm_case(c, 2, 5001, dt, -1.0f, 1.0f, 1, 0);
        test_layer_norm_case(c, 2, 5001, dt, -1.0f, 1.0f, 2, 2);
        const int64_t d[2] = {2, 40007};
        test_layer_norm_case(d, 2, 40007, dt, 50.0f, 52.0f, 1, 1);
        test_layer_norm_case(d, 2, 40007, dt, 50.0f, 52.0f, 0, 0);
    }
}

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(20240611);
    test_group_norm();
    test_batch_norm();
    test_layer_norm();
    return mt_test_finish();
}
