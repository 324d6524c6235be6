/* CPU random fills: element i of the tensor (logical order) takes Philox
 * stream value (offset + i) of `seed`, so results do not depend on threads. */
#include "core/cpu/cpu_kernels.h"
#include "core/rng.h"

void mt_cpu_rng_uniform(mt_tensor *out, uint64_t seed, uint64_t offset, float lo, float hi) {
    MT_KERNEL_DTYPE_CHECK("rng_uniform", out, MT_F32);
    MT_CHECK(mt_tensor_is_contiguous(out));
    int64_t n = mt_tensor_numel(out);
    float *o = MT_F32P(out), span = hi - lo;
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = lo + span * mt_philox_uniform(seed, offset + (uint64_t)i);
        o[i] = v < hi ? v : lo; /* guard rounding up to hi */
    }
}

void mt_cpu_rng_normal(mt_tensor *out, uint64_t seed, uint64_t offset, float mean, float std) {
    MT_KERNEL_DTYPE_CHECK("rng_normal", out, MT_F32);
    MT_CHECK(mt_tensor_is_contiguous(out));
    int64_t n = mt_tensor_numel(out);
    float *o = MT_F32P(out);
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) o[i] = mean + std * mt_philox_normal(seed, offset + (uint64_t)i);
}
