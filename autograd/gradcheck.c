/* Finite-difference gradient check used by the tests.
 *
 * For a scalar L = sum(f(x) * r) with fixed random r, compares dL/dx from
 * the backward engine with central differences (L(x + eps) - L(x - eps)) / 2eps
 * evaluated in double on f32 forward results. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/rng.h"

static double weighted_sum(const mt_tensor *out, const double *r) {
    int64_t n = mt_tensor_numel(out);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mt_tensor_to_f64_array(out, v);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i] * r[i];
    free(v);
    return s;
}

int mt_gradcheck(mt_gradcheck_fn f, void *ctx, int n_inputs, mt_tensor **inputs,
                 const mt_gradcheck_opts *opts) {
    mt_gradcheck_opts o = {1e-3, 1e-3, 1e-2, 4096, 7, 0};
    if (opts) {
        if (opts->eps > 0) o.eps = opts->eps;
        if (opts->atol > 0) o.atol = opts->atol;
        if (opts->rtol > 0) o.rtol = opts->rtol;
        if (opts->max_elems > 0) o.max_elems = opts->max_elems;
        if (opts->seed) o.seed = opts->seed;
        o.verbose = opts->verbose;
    }
    for (int k = 0; k < n_inputs; k++) {
        if (!inputs[k] || !inputs[k]->requires_grad) continue;
        MT_CHECK_MSG(inputs[k]->dtype == MT_F32 && mt_tensor_is_contiguous(inputs[k]) &&
                         mt_tensor_device(inputs[k]).type == MT_CPU,
                     "gradcheck: inputs must be contiguous f32 CPU tensors");
        mt_tensor_zero_grad(inputs[k]);
    }
    /* Analytic. */
    mt_tensor *out = f(inputs, ctx);
    MT_CHECK_MSG(out && out->requires_grad, "gradcheck: output does not require grad");
    int64_t no = mt_tensor_numel(out);
    mt_tensor *r = mt_tensor_new(MT_F32, out->ndim, out->shape, MT_DEVICE_CPU);
    mt_rng rng;
    mt_rng_init(&rng, o.seed);
    float *rp = MT_F32P(r);
    double *rd = malloc(sizeof(double) * (size_t)(no ? no : 1));
    for (int64_t i = 0; i < no; i++) {
        rp[i] = (float)(mt_rng_uniform(&rng) * 2.0 - 1.0);
        rd[i] = rp[i];
    }
    mt_status st = mt_backward(out, r, 0);
    MT_CHECK_MSG(st == MT_OK, "gradcheck: backward failed: %s", mt_error_msg());
    mt_tensor_release(out);
    mt_tensor_release(r);

    int ok = 1;
    int prev = mt_grad_set_enabled(0);
    for (int k = 0; k < n_inputs && ok; k++) {
        mt_tensor *x = inputs[k];
        if (!x || !x->requires_grad) continue;
        int64_t n = mt_tensor_numel(x);
        float *xp = MT_F32P(x);
        double *ga = malloc(sizeof(double) * (size_t)(n ? n : 1));
        if (x->grad)
            mt_tensor_to_f64_array(x->grad, ga);
        else
            for (int64_t i = 0; i < n; i++) ga[i] = 0;
        int64_t probes = n < o.max_elems ? n : o.max_elems;
        double worst = 0;
        int64_t wi = -1;
        double wa = 0, wn = 0;
        for (int64_t p = 0; p < probes; p++) {
            int64_t i = probes == n ? p : mt_rng_randint(&rng, 0, n);
            float orig = xp[i];
            xp[i] = (float)(orig + o.eps);
            double step_p = (double)xp[i] - orig;
            mt_tensor *yp = f(inputs, ctx);
            double lp = weighted_sum(yp, rd);
            mt_tensor_release(yp);
            xp[i] = (float)(orig - o.eps);
            double step_m = orig - (double)xp[i];
            mt_tensor *ym = f(inputs, ctx);
            double lm = weighted_sum(ym, rd);
            mt_tensor_release(ym);
            xp[i] = orig;
            double num = (lp - lm) / (step_p + step_m);
            double err = fabs(ga[i] - num) / (o.atol + o.rtol * fabs(num));
            if (!(err <= worst)) {
                worst = isnan(err) ? INFINITY : err;
                wi = i;
                wa = ga[i];
                wn = num;
            }
        }
        if (worst > 1.0) {
            ok = 0;
            fprintf(stderr,
                    "gradcheck: input %d element %lld: analytic %.8g vs numeric %.8g "
                    "(atol %g, rtol %g)\n",
                    k, (long long)wi, wa, wn, o.atol, o.rtol);
        } else if (o.verbose) {
            fprintf(stderr, "gradcheck: input %d ok (worst ratio %.3g)\n", k, worst);
        }
        free(ga);
    }
    mt_grad_set_enabled(prev);
    free(rd);
    return ok;
}
