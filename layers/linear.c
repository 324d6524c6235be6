/* Linear module (op: autograd/matmul.c mt_linear). */
#include <math.h>
#include <stdlib.h>

#include "layers/layers.h"

typedef struct {
    int in_features, out_features;
} linear_impl;

static mt_tensor *linear_forward(mt_module *m, const mt_tensor *x) {
    linear_impl *l = m->impl;
    MT_CHECK_MSG(x->ndim >= 1 && x->shape[x->ndim - 1] == l->in_features,
                 "Linear: expected input (*, %d), last dim is %lld", l->in_features,
                 (long long)(x->ndim ? x->shape[x->ndim - 1] : -1));
    return mt_linear(x, mt_module_param(m, "weight"), mt_module_param(m, "bias"));
}

mt_module *mt_linear_new(int in_features, int out_features, int bias, mt_rng *rng) {
    MT_CHECK_MSG(in_features > 0 && out_features > 0, "Linear: features %d -> %d", in_features,
                 out_features);
    mt_module *m = mt_module_new("Linear", linear_forward);
    linear_impl *l = calloc(1, sizeof *l);
    MT_CHECK(l);
    l->in_features = in_features;
    l->out_features = out_features;
    m->impl = l;
    m->impl_free = free;
    /* kaiming_uniform_(a = sqrt(5)) -> U(+-1/sqrt(fan_in)); bias from the same bound. */
    float bound = (float)(1.0 / sqrt((double)in_features));
    mt_tensor *w = mt_tensor_new(MT_F32, MT_SHAPE(out_features, in_features), MT_DEVICE_CPU);
    mt_rng_fill_uniform(w, rng, -bound, bound);
    mt_module_add_param(m, "weight", w);
    mt_tensor_release(w);
    if (bias) {
        mt_tensor *b = mt_tensor_new(MT_F32, MT_SHAPE(out_features), MT_DEVICE_CPU);
        mt_rng_fill_uniform(b, rng, -bound, bound);
        mt_module_add_param(m, "bias", b);
        mt_tensor_release(b);
    }
    return m;
}
