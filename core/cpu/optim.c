/* CPU fused optimizer kernels: one pass over a parameter tensor updating the
 * parameter and its state in place. Contracts: core/backend.h (sgd_step,
 * adam_step). All tensors f32 and contiguous (the optimizer in optim/ makes
 * the gradient contiguous). The per-element arithmetic follows PyTorch's
 * single-tensor (foreach=False) implementations of torch.optim.SGD, Adam and
 * AdamW operation by operation in f32; scalar factors (bias corrections,
 * step size) are computed in double as Python does. The file is compiled with
 * -fno-math-errno (CMakeLists.txt) so that the loop with sqrtf vectorises. */
#include <math.h>
#include <omp.h>

#include "core/cpu/cpu_kernels.h"

#define PAR_MIN 32768 /* below this many elements, stay on one thread */

static void check_pair(const char *op, const mt_tensor *a, const mt_tensor *p) {
    MT_KERNEL_DTYPE_CHECK(op, a, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(a), "%s: state/gradient tensor not contiguous", op);
    MT_CHECK_MSG(mt_tensor_numel(a) == mt_tensor_numel(p), "%s: %lld elements vs param %lld", op,
                 (long long)mt_tensor_numel(a), (long long)mt_tensor_numel(p));
}

/* torch.optim.SGD:
 *   d = g + wd p;  buf = first ? d : momentum buf + (1 - dampening) d;
 *   d = nesterov ? d + momentum buf : buf;  p -= lr d.  */
void mt_cpu_sgd_step(mt_tensor *param, mt_tensor *buf, const mt_tensor *grad, float lr,
                     float momentum, float dampening, float weight_decay, int nesterov, int first) {
    MT_KERNEL_DTYPE_CHECK("sgd_step", param, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(param), "sgd_step: param not contiguous");
    check_pair("sgd_step", grad, param);
    int64_t n = mt_tensor_numel(param);
    float *p = MT_F32P(param);
    const float *g = MT_F32P(grad);
    const float wd = weight_decay, neg_lr = -lr;
    if (momentum == 0.0f) {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
            p[i] = p[i] + neg_lr * d;
        }
        return;
    }
    MT_CHECK_MSG(buf != NULL, "sgd_step: momentum %g without a buffer", momentum);
    check_pair("sgd_step", buf, param);
    float *b = MT_F32P(buf);
    const float mom = momentum, damp1 = 1.0f - dampening;
    if (first) {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
            b[i] = d;
            float u = nesterov ? d + mom * d : d;
            p[i] = p[i] + neg_lr * u;
        }
    } else {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
            float bi = b[i] * mom + damp1 * d;
            b[i] = bi;
            float u = nesterov ? d + mom * bi : bi;
            p[i] = p[i] + neg_lr * u;
        }
    }
}

/* torch.optim.Adam (decoupled = 0: g += wd p) and AdamW (decoupled != 0:
 * p *= 1 - lr wd), then
 *   m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2;
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).  */
void mt_cpu_adam_step(mt_tensor *param, mt_tensor *exp_avg, mt_tensor *exp_avg_sq,
                      const mt_tensor *grad, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int decoupled, int64_t step) {
    MT_KERNEL_DTYPE_CHECK("adam_step", param, MT_F32);
    MT_CHECK_MSG(mt_tensor_is_contiguous(param), "adam_step: param not contiguous");
    MT_CHECK_MSG(step >= 1, "adam_step: step %lld (counts from 1)", (long long)step);
    check_pair("adam_step", grad, param);
    check_pair("adam_step", exp_avg, param);
    check_pair("adam_step", exp_avg_sq, param);
    int64_t n = mt_tensor_numel(param);
    float *p = MT_F32P(param), *m = MT_F32P(exp_avg), *v = MT_F32P(exp_avg_sq);
    const float *g = MT_F32P(grad);
    /* Scalars in double, as Python floats in torch's _single_tensor_adam. */
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float w1 = 1.0f - beta1; /* lerp weight */
    const float b2 = beta2, w2 = 1.0f - beta2, fe = eps;
    const float wd_coupled = decoupled ? 0.0f : weight_decay;
    const float decay = decoupled ? (float)(1.0 - (double)lr * (double)weight_decay) : 1.0f;
    const int lerp_lo = w1 < 0.5f;
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i] * decay;
        float gi = wd_coupled != 0.0f ? g[i] + wd_coupled * pi : g[i];
        float mi = m[i];
        /* torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w) */
        mi = lerp_lo ? mi + w1 * (gi - mi) : gi - (gi - mi) * (1.0f - w1);
        float vi = v[i] * b2 + w2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + fe;
        p[i] = pi - step_size * (mi / denom);
    }
}

/* Multi-tensor forms: the single-tensor update over each set in turn (on the
 * CPU one launch per tensor costs nothing). */
void mt_cpu_sgd_step_multi(int n, mt_tensor *const *params, mt_tensor *const *bufs,
                           mt_tensor *const *grads, float lr, float momentum, float dampening,
                           float weight_decay, int nesterov, int first) {
    for (int i = 0; i < n; i++)
        mt_cpu_sgd_step(params[i], bufs ? bufs[i] : NULL, grads[i], lr, momentum, dampening,
                        weight_decay, nesterov, first);
}

void mt_cpu_adam_step_multi(int n, mt_tensor *const *params, mt_tensor *const *exp_avgs,
                            mt_tensor *const *exp_avg_sqs, mt_tensor *const *grads, float lr,
                            float beta1, float beta2, float eps, float weight_decay, int decoupled,
                            int64_t step) {
    for (int i = 0; i < n; i++)
        mt_cpu_adam_step(params[i], exp_avgs[i], exp_avg_sqs[i], grads[i], lr, beta1, beta2, eps,
                         weight_decay, decoupled, step);
}
