/* Collectives as differentiable ops (all-reduce sum across data-parallel
 * ranks through a hook installed by launch/) and the synchronised batch norm
 * built on it (PyTorch SyncBatchNorm). No kernels of their own: the
 * all-reduce stages through host f64 buffers; sync batch norm is composed of
 * differentiable ops (sub, square, sum, concat, slice, mul, add, pow) so its
 * backward is exact by construction. See autograd/ops.h for the contracts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"

static mt_allreduce_hook g_hook;
static void *g_hook_ctx;

void mt_set_allreduce_hook(mt_allreduce_hook fn, void *ctx) {
    g_hook = fn;
    g_hook_ctx = fn ? ctx : NULL;
}

int mt_allreduce_hook_installed(void) { return g_hook != NULL; }

/* ------------------------------------------------------------ all-reduce */

/* The sum over ranks of x's values (no autograd): a new contiguous tensor of
 * dtype dt with x's shape on x's device (x copied when no hook is installed).
 * Values travel as f64 and are rounded to f32, then to dt. A failing hook
 * aborts: an op cannot return a status, and the peers are inside the same
 * collective, so there is nothing to recover (launch/'s hook ends the whole
 * job itself before it would return an error). */
static mt_tensor *reduce_values(const mt_tensor *x, mt_dtype dt) {
    mt_device dev = mt_tensor_device(x);
    if (!g_hook) {
        mt_tensor *out = mt_tensor_new(dt, x->ndim, x->shape, dev);
        if (mt_tensor_numel(out)) mt_tensor_copy_(out, x);
        return out;
    }
    int64_t n = mt_tensor_numel(x);
    double *buf = malloc(sizeof *buf * (size_t)(n ? n : 1));
    float *f = malloc(sizeof *f * (size_t)(n ? n : 1));
    MT_CHECK(buf && f);
    if (n) mt_tensor_to_f64_array(x, buf);
    /* every rank calls the hook, also for n == 0: it is a collective */
    mt_status s = g_hook(buf, n, g_hook_ctx);
    MT_CHECK_MSG(s == MT_OK, "all_reduce_sum: the all-reduce of %lld values across ranks failed: %s",
                 (long long)n, mt_error_msg());
    for (int64_t i = 0; i < n; i++) f[i] = (float)buf[i];
    mt_tensor *h = mt_tensor_from_data(MT_F32, x->ndim, x->shape, f);
    mt_tensor *out = mt_tensor_new(dt, x->ndim, x->shape, dev);
    if (n) mt_tensor_copy_(out, h); /* host f32 -> x's device and dtype */
    mt_tensor_release(h);
    free(buf);
    free(f);
    return out;
}

/* d(sum over ranks)/dx: the sum over ranks of the output gradients. */
static void all_reduce_backward(mt_node *node, mt_tensor **go, mt_tensor **gi) {
    gi[0] = reduce_values(go[0], node->dtype);
}

mt_tensor *mt_all_reduce_sum(const mt_tensor *x) {
    MT_CHECK_MSG(mt_dtype_is_float(x->dtype), "all_reduce_sum: input dtype %s is not a float type",
                 mt_dtype_name(x->dtype));
    if (!g_hook) return mt_tensor_retain((mt_tensor *)x);
    mt_tensor *out = reduce_values(x, x->dtype);
    mt_tensor *ins[1] = {(mt_tensor *)x};
    if (mt_any_requires_grad(1, ins)) {
        mt_node *n = mt_node_new("AllReduceSumBackward", all_reduce_backward, 1, ins, 1);
        n->dtype = x->dtype;
        mt_node_set_output(n, out, 0);
        mt_node_release(n);
    }
    return out;
}

/* ------------------------------------------------------- sync batch norm */

static void check_vec(const char *what, const mt_tensor *p, int64_t C, mt_device dev) {
    if (!p) return;
    char b1[64], b2[64];
    MT_CHECK_MSG(mt_tensor_numel(p) == C && p->ndim == 1, "sync_batch_norm: %s %s, expected (%lld)", what,
                 mt_tensor_shape_str(p, b1, sizeof b1), (long long)C);
    MT_CHECK_MSG(mt_device_eq(mt_tensor_device(p), dev), "sync_batch_norm: %s on %s, input on %s", what,
                 mt_device_name(mt_tensor_device(p), b1, sizeof b1), mt_device_name(dev, b2, sizeof b2));
}

/* Releases a list of tensor references (NULL entries allowed). */
static void release_all(int n, mt_tensor **ts) {
    for (int k = 0; k < n; k++) mt_tensor_release(ts[k]);
}

mt_tensor *mt_sync_batch_norm(const mt_tensor *x, const mt_tensor *weight, const mt_tensor *bias,
                              mt_tensor *running_mean, mt_tensor *running_var, int training,
                              float momentum, float eps) {
    int use_batch = training || !running_mean;
    if (!use_batch || !g_hook)
        return mt_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps);

    char b[64];
    MT_CHECK_MSG(x->ndim >= 2 && x->ndim <= 5 && mt_dtype_is_float(x->dtype),
                 "sync_batch_norm: input %s (%s) must be a float (N, C, *) tensor with 0-3 spatial dims",
                 mt_tensor_shape_str(x, b, sizeof b), mt_dtype_name(x->dtype));
    MT_CHECK_MSG(!running_mean == !running_var,
                 "sync_batch_norm: running_mean and running_var must both be given or both be NULL");
    mt_device dev = mt_tensor_device(x);
    const int nd = x->ndim;
    const int64_t C = x->shape[1];
    MT_CHECK_MSG(C > 0, "sync_batch_norm: input %s has no channels", mt_tensor_shape_str(x, b, sizeof b));
    check_vec("weight", weight, C, dev);
    check_vec("bias", bias, C, dev);
    check_vec("running_mean", running_mean, C, dev);
    check_vec("running_var", running_var, C, dev);
    if (running_mean)
        MT_CHECK_MSG(running_mean->dtype == MT_F32 && running_var->dtype == MT_F32 &&
                         mt_tensor_is_contiguous(running_mean) && mt_tensor_is_contiguous(running_var),
                     "sync_batch_norm: running stats must be contiguous f32");
    const int64_t local = mt_tensor_numel(x) / C;
    int dims[MT_MAX_DIMS], nr = 0;
    int64_t cshape[MT_MAX_DIMS]; /* (1, C, 1, ...) */
    for (int d = 0; d < nd; d++) {
        cshape[d] = d == 1 ? C : 1;
        if (d != 1) dims[nr++] = d;
    }

    /* statistics in f32 (bf16 inputs cast with a differentiable cast) around
     * the shift c, a constant agreed by all ranks */
    mt_tensor *xf = mt_to_dtype(x, MT_F32);
    mt_tensor *c = running_mean ? mt_tensor_clone(running_mean) : mt_tensor_zeros(MT_F32, 1, &C, dev);
    mt_tensor *cv = mt_tensor_view(c, nd, cshape);
    MT_CHECK(cv);
    mt_tensor *xs = mt_sub(xf, cv);             /* x - c */
    mt_tensor *s1 = mt_sum(xs, nr, dims, 0);    /* (C) */
    mt_tensor *sq = mt_square(xs);
    mt_tensor *s2 = mt_sum(sq, nr, dims, 0);    /* (C) */
    mt_tensor *cnt = mt_tensor_full(MT_F32, 1, (int64_t[]){1}, (double)local, dev);
    mt_tensor *parts[3] = {s1, s2, cnt};
    mt_tensor *cat = mt_concat(3, parts, 0);    /* (2C + 1) */
    mt_tensor *tot = mt_all_reduce_sum(cat);    /* the one collective */
    /* global count (f32: exact up to 2^24 values per channel, else within 6e-8) */
    double n = 0;
    mt_tensor *tc = mt_tensor_slice(tot, 0, 2 * C, 2 * C + 1, 1);
    mt_tensor_to_f64_array(tc, &n); /* any device: copied to the host */
    mt_tensor_release(tc);
    MT_CHECK_MSG(!training || n > 1,
                 "sync_batch_norm: expected more than 1 value per channel over all ranks when training, "
                 "got %g (this rank's input %s)", n, mt_tensor_shape_str(x, b, sizeof b));
    mt_tensor *S1 = mt_slice(tot, 0, 0, C), *S2 = mt_slice(tot, 0, C, 2 * C);
    mt_tensor *ms = mt_mul_scalar(S1, (float)(1.0 / n));   /* E[x - c] */
    mt_tensor *m2 = mt_mul_scalar(S2, (float)(1.0 / n));   /* E[(x - c)^2] */
    mt_tensor *msq = mt_square(ms);
    mt_tensor *v0 = mt_sub(m2, msq);
    mt_tensor *var = mt_clamp_min(v0, 0.0f);                /* biased variance, rounding can go below 0 */
    mt_tensor *ve = mt_add_scalar(var, eps);
    mt_tensor *invstd = mt_pow_scalar(ve, -0.5f);
    /* y = (x - c) * a + (b - E[x - c] * a), a = invstd * w */
    mt_tensor *a = weight ? mt_mul(invstd, weight) : mt_tensor_retain(invstd);
    mt_tensor *msa = mt_mul(ms, a);
    mt_tensor *b2 = bias ? mt_sub(bias, msa) : mt_neg(msa);
    mt_tensor *av = mt_reshape(a, nd, cshape), *bv = mt_reshape(b2, nd, cshape);
    mt_tensor *ya = mt_mul(xs, av);
    mt_tensor *yf = mt_add(ya, bv);
    mt_tensor *y = mt_to_dtype(yf, x->dtype);

    if (training && running_mean) {
        /* running stats as PyTorch: r = (1 - m) r + m s, s = global mean and
         * unbiased variance (global count); no autograd */
        int prev = mt_grad_set_enabled(0);
        mt_tensor *mean = mt_add(c, ms);
        mt_tensor *uvar = mt_mul_scalar(var, (float)(n / (n - 1)));
        mt_tensor *r1 = mt_mul_scalar(running_mean, 1.0f - momentum), *r2 = mt_mul_scalar(mean, momentum);
        mt_tensor *v1 = mt_mul_scalar(running_var, 1.0f - momentum), *v2 = mt_mul_scalar(uvar, momentum);
        mt_tensor *nrm = mt_add(r1, r2), *nrv = mt_add(v1, v2);
        mt_tensor_copy_(running_mean, nrm);
        mt_tensor_copy_(running_var, nrv);
        mt_grad_set_enabled(prev);
        mt_tensor *rel[] = {mean, uvar, r1, r2, v1, v2, nrm, nrv};
        release_all((int)(sizeof rel / sizeof *rel), rel);
    }
    mt_tensor *rel[] = {xf, c, cv, xs, s1, sq, s2, cnt, cat, tot, S1, S2, ms, m2, msq, v0, var, ve, invstd,
                        a, msa, b2, av, bv, ya, yf};
    release_all((int)(sizeof rel / sizeof *rel), rel);
    return y;
}
