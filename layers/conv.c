/* Conv3d and ConvTranspose3d modules (ops: autograd/conv.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

typedef struct {
    mt_conv3d_opts o;
    int in_channels, out_channels;
    int transposed;
} conv_impl;

mt_conv3d_opts mt_conv3d_opts_make(int k, int stride, int padding, int bias) {
    mt_conv3d_opts o;
    memset(&o, 0, sizeof o);
    for (int d = 0; d < 3; d++) {
        o.kernel[d] = k;
        o.stride[d] = stride;
        o.padding[d] = padding;
        o.dilation[d] = 1;
        o.output_padding[d] = 0;
    }
    o.groups = 1;
    o.bias = bias;
    return o;
}

static mt_conv_params to_params(const mt_conv3d_opts *o) {
    mt_conv_params p;
    memset(&p, 0, sizeof p);
    for (int d = 0; d < 3; d++) {
        p.stride[d] = o->stride[d];
        p.padding[d] = o->padding[d];
        p.dilation[d] = o->dilation[d];
        p.output_padding[d] = o->output_padding[d];
    }
    p.groups = o->groups;
    return p;
}

static mt_tensor *conv_forward(mt_module *m, const mt_tensor *x) {
    conv_impl *c = m->impl;
    MT_CHECK_MSG(x->ndim == 5 && x->shape[1] == c->in_channels,
                 "%s: expected input (N, %d, D, H, W), got %d dims with %lld channels", m->type,
                 c->in_channels, x->ndim, (long long)(x->ndim > 1 ? x->shape[1] : -1));
    mt_conv_params p = to_params(&c->o);
    mt_tensor *w = mt_module_param(m, "weight");
    mt_tensor *b = mt_module_param(m, "bias");
    return c->transposed ? mt_conv_transpose3d(x, w, b, &p) : mt_conv3d(x, w, b, &p);
}

static mt_module *conv_new(int transposed, int cin, int cout, const mt_conv3d_opts *o,
                           mt_rng *rng) {
    MT_CHECK_MSG(cin > 0 && cout > 0 && o->groups > 0 && cin % o->groups == 0 &&
                     cout % o->groups == 0,
                 "conv: channels %d -> %d not divisible by groups %d", cin, cout, o->groups);
    for (int d = 0; d < 3; d++)
        MT_CHECK_MSG(o->kernel[d] > 0 && o->stride[d] > 0 && o->dilation[d] > 0 &&
                         o->padding[d] >= 0,
                     "conv: invalid geometry on axis %d", d);
    conv_impl *c = calloc(1, sizeof *c);
    MT_CHECK(c);
    c->o = *o;
    c->in_channels = cin;
    c->out_channels = cout;
    c->transposed = transposed;
    mt_module *m = mt_module_new(transposed ? "ConvTranspose3d" : "Conv3d", conv_forward);
    m->impl = c;
    m->impl_free = free;

    int64_t kvol = (int64_t)o->kernel[0] * o->kernel[1] * o->kernel[2];
    int64_t shape[5] = {transposed ? cin : cout, transposed ? cout / o->groups : cin / o->groups,
                        o->kernel[0], o->kernel[1], o->kernel[2]};
    /* torch: fan_in = weight.size(1) * receptive field, both for Conv and ConvTranspose. */
    int64_t fan_in = shape[1] * kvol;
    float bound = (float)(1.0 / sqrt((double)fan_in));
    mt_tensor *w = mt_tensor_new(MT_F32, 5, shape, MT_DEVICE_CPU);
    mt_rng_fill_uniform(w, rng, -bound, bound);
    mt_module_add_param(m, "weight", w);
    mt_tensor_release(w);
    if (o->bias) {
        mt_tensor *b = mt_tensor_new(MT_F32, MT_SHAPE(cout), MT_DEVICE_CPU);
        mt_rng_fill_uniform(b, rng, -bound, bound);
        mt_module_add_param(m, "bias", b);
        mt_tensor_release(b);
    }
    return m;
}

mt_module *mt_conv3d_new(int in_channels, int out_channels, const mt_conv3d_opts *o, mt_rng *rng) {
    return conv_new(0, in_channels, out_channels, o, rng);
}

mt_module *mt_conv_transpose3d_new(int in_channels, int out_channels, const mt_conv3d_opts *o,
                                   mt_rng *rng) {
    return conv_new(1, in_channels, out_channels, o, rng);
}

const mt_conv3d_opts *mt_conv3d_get_opts(const mt_module *conv) {
    MT_CHECK_MSG(conv->forward == conv_forward, "module %s is not a convolution", conv->type);
    return &((const conv_impl *)conv->impl)->o;
}
