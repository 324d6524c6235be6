/* Parameter-free modules: MaxPool3d, Dropout, activations. */
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

/* ------------------------------------------------------------ MaxPool3d */

static mt_tensor *max_pool_forward(mt_module *m, const mt_tensor *x) {
    MT_CHECK_MSG(x->ndim == 5, "MaxPool3d: expected (N, C, D, H, W), got %d dims", x->ndim);
    return mt_max_pool3d(x, (const mt_pool_params *)m->impl);
}

mt_module *mt_max_pool3d_new(int kernel, int stride, int padding) {
    MT_CHECK_MSG(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel,
                 "MaxPool3d: kernel %d stride %d padding %d", kernel, stride, padding);
    mt_module *m = mt_module_new("MaxPool3d", max_pool_forward);
    mt_pool_params *p = calloc(1, sizeof *p);
    MT_CHECK(p);
    for (int d = 0; d < 3; d++) {
        p->kernel[d] = kernel;
        p->stride[d] = stride;
        p->padding[d] = padding;
    }
    m->impl = p;
    m->impl_free = free;
    return m;
}

/* -------------------------------------------------------------- Dropout */

typedef struct {
    float p;
    mt_rng rng;
} dropout_impl;

static mt_tensor *dropout_forward(mt_module *m, const mt_tensor *x) {
    dropout_impl *d = m->impl;
    return mt_dropout(x, d->p, m->training, &d->rng);
}

mt_rng *mt_dropout_rng(mt_module *m) {
    if (!m || !m->type || strcmp(m->type, "Dropout") != 0) return NULL;
    return &((dropout_impl *)m->impl)->rng;
}

mt_module *mt_dropout_new(float p, uint64_t seed) {
    MT_CHECK_MSG(p >= 0 && p < 1, "Dropout: p = %g outside [0, 1)", p);
    mt_module *m = mt_module_new("Dropout", dropout_forward);
    dropout_impl *d = calloc(1, sizeof *d);
    MT_CHECK(d);
    d->p = p;
    mt_rng_init(&d->rng, seed);
    m->impl = d;
    m->impl_free = free;
    return m;
}

/* ---------------------------------------------------------- activations */

typedef struct {
    mt_act_type type;
    float slope;
} act_impl;

const char *mt_act_type_name(mt_act_type t) {
    switch (t) {
    case MT_ACT_RELU: return "ReLU";
    case MT_ACT_LEAKY_RELU: return "LeakyReLU";
    case MT_ACT_GELU: return "GELU";
    case MT_ACT_SIGMOID: return "Sigmoid";
    case MT_ACT_IDENTITY: return "Identity";
    }
    return "?";
}

mt_tensor *mt_activation_apply(mt_act_type type, float slope, const mt_tensor *x) {
    switch (type) {
    case MT_ACT_RELU: return mt_relu(x);
    case MT_ACT_LEAKY_RELU: return mt_leaky_relu(x, slope);
    case MT_ACT_GELU: return mt_gelu(x);
    case MT_ACT_SIGMOID: return mt_sigmoid(x);
    case MT_ACT_IDENTITY: return mt_tensor_retain((mt_tensor *)x);
    }
    MT_CHECK_MSG(0, "activation: unknown type %d", (int)type);
    return NULL;
}

static mt_tensor *act_forward(mt_module *m, const mt_tensor *x) {
    act_impl *a = m->impl;
    return mt_activation_apply(a->type, a->slope, x);
}

mt_module *mt_activation_new(mt_act_type type, float slope) {
    MT_CHECK_MSG(type >= MT_ACT_RELU && type <= MT_ACT_IDENTITY, "activation: unknown type %d",
                 (int)type);
    mt_module *m = mt_module_new(mt_act_type_name(type), act_forward);
    act_impl *a = calloc(1, sizeof *a);
    MT_CHECK(a);
    a->type = type;
    a->slope = slope;
    m->impl = a;
    m->impl_free = free;
    return m;
}
