/* LABELS: gpu */
/* CUDA reductions and softmax (core/cuda/reduce.cu) against the CPU backend
 * on the same inputs: every reduce op over many dim sets of odd shapes
 * (every loop shape of the kernel: few and many reduced elements per
 * output, split reductions with a second pass, innermost dim kept or
 * reduced), f32 and bf16 inputs with f32 or bf16 outputs, NaN propagation,
 * empty reductions; softmax / log-softmax forward and backward over dim 1
 * and the last dim (all four kernel shapes), f32 and bf16. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "mt_test.h"

static const mt_device GPU = {MT_CUDA, 0};
static const char *op_name[] = {"sum", "sumsq", "max", "min", "absmax"};

static mt_tensor *rand_dt(int nd, const int64_t *shape, float lo, float hi, mt_dtype dt) {
    mt_tensor *x = mt_test_rand(nd, shape, lo, hi);
    mt_tensor *y = mt_tensor_to_dtype(x, dt);
    mt_tensor_release(x);
    return y;
}

static const char *shape_str(int nd, const int64_t *s, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int d = 0; d < nd && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)s[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* Sums: both devices accumulate in double, so they agree to about an f32
 * rounding (REDUCE row); max / min / absmax select an input: exact. */
static mt_tol_kind red_tol(mt_reduce_op op) {
    return op == MT_RED_SUM || op == MT_RED_SUMSQ ? MT_TOL_REDUCE : MT_TOL_EXACT;
}

/* Reduces x (CPU) and its GPU copy gx over the dims with red[d] != 0, out dtype odt. */
static void reduce_case(mt_reduce_op op, const mt_tensor *x, const mt_tensor *gx, const int *red,
                        mt_dtype odt) {
    int64_t os[MT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) os[d] = red[d] ? 1 : x->shape[d];
    mt_tensor *co = mt_tensor_new(odt, x->ndim, os, MT_DEVICE_CPU);
    mt_tensor *go = mt_tensor_new(odt, x->ndim, os, GPU);
    mt_kernel(MT_DEVICE_CPU, reduce)(op, co, x);
    mt_kernel(GPU, reduce)(op, go, gx);
    char what[256], b1[96], b2[96];
    snprintf(what, sizeof what, "reduce %s %s %s -> %s %s", op_name[op], mt_dtype_name(x->dtype),
             shape_str(x->ndim, x->shape, b1, sizeof b1), shape_str(x->ndim, os, b2, sizeof b2),
             mt_dtype_name(odt));
    mt_test_close(go, co, red_tol(op), what);
    mt_tensor_release(co);
    mt_tensor_release(go);
}

/* All reduce ops over each dim set (bit masks over the dims). */
static void reduce_shape(int nd, const int64_t *shape, int nsets, const int *masks, int both_out) {
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = di ? MT_BF16 : MT_F32;
        mt_tensor *x = rand_dt(nd, shape, -1.0f, 1.0f, dt);
        mt_tensor *gx = mt_test_to_gpu(x);
        for (int k = 0; k < nsets; k++) {
            int red[MT_MAX_DIMS];
            for (int d = 0; d < nd; d++) red[d] = (masks[k] >> d) & 1;
            for (int op = 0; op < MT_NUM_REDUCE_OPS; op++) {
                reduce_case((mt_reduce_op)op, x, gx, red, MT_F32);
                if (dt == MT_BF16 && both_out) reduce_case((mt_reduce_op)op, x, gx, red, MT_BF16);
            }
        }
        mt_tensor_release(x);
        mt_tensor_release(gx);
    }
}

static void test_reduce(void) {
    /* odd 5-d shape, many dim sets (bit d = dim d reduced) */
    {
        int64_t s[5] = {3, 5, 7, 9, 11};
        int masks[] = {0x00, 0x10, 0x01, 0x02, 0x15, 0x0a, 0x1f, 0x1c, 0x11, 0x03, 0x0e, 0x1d};
        reduce_shape(5, s, (int)(sizeof masks / sizeof masks[0]), masks, 1);
    }
    /* a UNet-like activation (N, C, D, H, W): loss sums, per-channel sums
     * (bias / batch-norm gradients), per-(N, C) spatial sums (Dice), over
     * channels (kept innermost dims), over the batch */
    {
        int64_t s[5] = {2, 13, 37, 41, 43};
        int masks[] = {0x1f, 0x1d, 0x1c, 0x02, 0x01, 0x1e};
        reduce_shape(5, s, (int)(sizeof masks / sizeof masks[0]), masks, 1);
    }
    /* innermost kept with few columns and many rows (split rows), and few
     * reduced elements per output with many outputs */
    {
        int64_t s[2] = {100003, 3};
        int masks[] = {0x01, 0x02, 0x03};
        reduce_shape(2, s, 3, masks, 0);
    }
    /* long rows, few outputs (split with a second pass); short runs (L < 128)
     * with many rows */
    {
        int64_t s[2] = {3, 70001};
        int masks[] = {0x02, 0x01};
        reduce_shape(2, s, 2, masks, 0);
        int64_t t[3] = {6007, 7, 5};
        int tm[] = {0x05, 0x01, 0x04};
        reduce_shape(3, t, 3, tm, 0);
    }
}

/* One row of a max reduction holds a NaN: it must come out NaN, the others
 * as on the CPU. */
static void test_reduce_nan(void) {
    int64_t s[2] = {6, 5000}, os[2] = {6, 1};
    mt_tensor *x = mt_test_rand(2, s, -1, 1);
    MT_F32P(x)[2 * 5000 + 1234] = NAN;
    mt_tensor *gx = mt_test_to_gpu(x);
    for (int op = MT_RED_MAX; op <= MT_RED_ABSMAX; op++) {
        mt_tensor *go = mt_tensor_new(MT_F32, 2, os, GPU);
        mt_kernel(GPU, reduce)((mt_reduce_op)op, go, gx);
        double v[6];
        mt_tensor_to_f64_array(go, v);
        for (int r = 0; r < 6; r++) {
            if (r == 2)
                CHECK_MSG(isnan(v[r]), "reduce %s: NaN row gave %g", op_name[op], v[r]);
            else
                CHECK_MSG(!isnan(v[r]), "reduce %s: row %d without NaN gave NaN", op_name[op], r);
        }
        mt_tensor_release(go);
    }
    mt_tensor_release(x);
    mt_tensor_release(gx);
}

/* Reduction over an empty dim gives the identity. */
static void test_reduce_empty(void) {
    int64_t s[3] = {3, 0, 5}, os[3] = {3, 1, 5};
    mt_tensor *gx = mt_tensor_new(MT_F32, 3, s, GPU);
    const double want[MT_NUM_REDUCE_OPS] = {0.0, 0.0, -INFINITY, INFINITY, 0.0};
    for (int op = 0; op < MT_NUM_REDUCE_OPS; op++) {
        mt_tensor *go = mt_tensor_new(MT_F32, 3, os, GPU);
        mt_kernel(GPU, reduce)((mt_reduce_op)op, go, gx);
        double v[15];
        mt_tensor_to_f64_array(go, v);
        int ok = 1;
        for (int i = 0; i < 15; i++) ok &= v[i] == want[op];
        CHECK_MSG(ok, "reduce %s over an empty dim: %g, want %g", op_name[op], v[0], want[op]);
        mt_tensor_release(go);
    }
    mt_tensor_release(gx);
}

/* ------------------------------------------------------------------ softmax */

static void softmax_case(int nd, const int64_t *shape, int dim, mt_dtype dt) {
    char b1[96];
    shape_str(nd, shape, b1, sizeof b1);
    for (int use_log = 0; use_log < 2; use_log++) {
        const char *name = use_log ? "log_softmax" : "softmax";
        mt_tensor *x0 = mt_test_randn(nd, shape);
        int64_t n = mt_tensor_numel(x0);
        for (int64_t i = 0; i < n; i++) MT_F32P(x0)[i] *= 3.0f;
        mt_tensor *x = mt_tensor_to_dtype(x0, dt);
        mt_tensor *gx = mt_test_to_gpu(x);
        mt_tensor *cy = mt_tensor_new(dt, nd, shape, MT_DEVICE_CPU);
        mt_tensor *gy = mt_tensor_new(dt, nd, shape, GPU);
        mt_kernel(MT_DEVICE_CPU, softmax)(cy, x, dim, use_log);
        mt_kernel(GPU, softmax)(gy, gx, dim, use_log);
        char what[192];
        snprintf(what, sizeof what, "%s %s %s dim %d", name, mt_dtype_name(dt), b1, dim);
        mt_test_close(gy, cy, MT_TOL_REDUCE, what);

        /* backward from the CPU's forward output on both devices */
        mt_tensor *go = rand_dt(nd, shape, -1.0f, 1.0f, dt);
        mt_tensor *ggo = mt_test_to_gpu(go), *gyc = mt_test_to_gpu(cy);
        mt_tensor *cgi = mt_tensor_new(dt, nd, shape, MT_DEVICE_CPU);
        mt_tensor *ggi = mt_tensor_new(dt, nd, shape, GPU);
        mt_kernel(MT_DEVICE_CPU, softmax_backward)(cgi, go, cy, dim, use_log);
        mt_kernel(GPU, softmax_backward)(ggi, ggo, gyc, dim, use_log);
        snprintf(what, sizeof what, "%s backward %s %s dim %d", name, mt_dtype_name(dt), b1, dim);
        mt_test_close(ggi, cgi, MT_TOL_REDUCE, what);
        mt_tensor *rel[] = {x0, x, gx, cy, gy, go, ggo, gyc, cgi, ggi};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) mt_tensor_release(rel[i]);
    }
}

static void test_softmax(void) {
    for (int di = 0; di < 2; di++) {
        mt_dtype dt = di ? MT_BF16 : MT_F32;
        /* dim 1, few channels: one thread per position, values in registers */
        int64_t a[5] = {2, 4, 5, 7, 9};
        softmax_case(5, a, 1, dt);
        /* last dim, short rows: one thread per row */
        int64_t b[4] = {3, 5, 7, 10};
        softmax_case(4, b, -1, dt);
        softmax_case(4, b, 3, dt);
        /* dim 1, many channels, many positions: one thread per position */
        int64_t c[5] = {2, 20, 9, 15, 17};
        softmax_case(5, c, 1, dt);
        /* last dim, rows of 300: one warp per row */
        int64_t d[3] = {7, 11, 300};
        softmax_case(3, d, 2, dt);
        /* dim 1 with few positions: one warp per strided row */
        int64_t e[4] = {2, 50, 3, 7};
        softmax_case(4, e, 1, dt);
        /* long rows: one block per row, contiguous (last dim) and strided (dim 0) */
        int64_t f[2] = {3, 5000};
        softmax_case(2, f, 1, dt);
        int64_t g[2] = {3000, 5};
        softmax_case(2, g, 0, dt);
    }
}

int main(void) {
    if (!mt_test_have_gpu()) return MT_TEST_SKIP;
    mt_test_seed(77);
    test_reduce();
    test_reduce_nan();
    test_reduce_empty();
    test_softmax();
    return mt_test_finish();
}
