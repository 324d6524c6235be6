/* LABELS: unit */
/* core/: tensor creation, views, copies, dtypes, allocator, RNG. */
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"
#include "mt_test.h"

static void test_views(void) {
    mt_tensor *t = mt_test_rand(MT_SHAPE(2, 3, 4), -1, 1);
    CHECK(mt_tensor_is_contiguous(t));
    CHECK(mt_tensor_numel(t) == 24);
    /* permute + contiguous matches index mapping */
    mt_tensor *p = mt_tensor_permute(t, (int[]){2, 0, 1});
    CHECK(p->shape[0] == 4 && p->shape[1] == 2 && p->shape[2] == 3);
    CHECK(!mt_tensor_is_contiguous(p));
    mt_tensor *pc = mt_tensor_contiguous(p);
    int ok = 1;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++)
                ok &= mt_tensor_get(t, (int64_t[]){a, b, c}) == mt_tensor_get(pc, (int64_t[]){c, a, b});
    CHECK_MSG(ok, "permute/contiguous mapping");
    /* view of non-contiguous fails, reshape copies */
    CHECK(mt_tensor_view(p, MT_SHAPE(24)) == NULL);
    mt_tensor *r = mt_tensor_reshape(p, MT_SHAPE(8, 3));
    CHECK(r && r->shape[0] == 8 && mt_tensor_is_contiguous(r));
    CHECK(mt_tensor_get_flat(r, 5) == mt_tensor_get_flat(pc, 5));
    /* view with -1 and split/merge of contiguous chunks */
    mt_tensor *v = mt_tensor_view(t, MT_SHAPE(-1, 4));
    CHECK(v && v->shape[0] == 6 && v->storage == t->storage);
    /* slice with step */
    mt_tensor *s = mt_tensor_slice(t, 2, 1, 4, 2);
    CHECK(s->shape[2] == 2);
    CHECK(mt_tensor_get(s, (int64_t[]){1, 2, 1}) == mt_tensor_get(t, (int64_t[]){1, 2, 3}));
    /* expand */
    mt_tensor *row = mt_test_rand(MT_SHAPE(1, 4), 0, 1);
    mt_tensor *e = mt_tensor_expand(row, MT_SHAPE(3, 4));
    CHECK(e->strides[0] == 0 && mt_tensor_get(e, (int64_t[]){2, 3}) == mt_tensor_get(row, (int64_t[]){0, 3}));
    mt_tensor *u = mt_tensor_unsqueeze(t, 1);
    CHECK(u->ndim == 4 && u->shape[1] == 1);
    mt_tensor *q = mt_tensor_squeeze(u, 1);
    CHECK(mt_tensor_same_shape(q, t));
    mt_tensor *rel[] = {t, p, pc, r, v, s, row, e, u, q};
    for (size_t k = 0; k < sizeof rel / sizeof *rel; k++) mt_tensor_release(rel[k]);
}

static void test_dtypes(void) {
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f)) == 1.0f);
    /* round to nearest even: 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7 */
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
    mt_tensor *t = mt_test_rand(MT_SHAPE(5, 7), -3, 3);
    mt_tensor *b = mt_tensor_to_dtype(t, MT_BF16);
    mt_tensor *i = mt_tensor_to_dtype(t, MT_I32);
    mt_tensor *u = mt_tensor_to_dtype(t, MT_U8);
    int ok = 1;
    for (int64_t k = 0; k < 35; k++) {
        double v = mt_tensor_get_flat(t, k);
        ok &= fabs(mt_tensor_get_flat(b, k) - v) <= fabs(v) / 128;
        ok &= mt_tensor_get_flat(i, k) == (double)(int32_t)v;
        ok &= mt_tensor_get_flat(u, k) == (v < 0 ? 0 : (double)(uint8_t)v);
    }
    CHECK_MSG(ok, "casts");
    mt_tensor_release(t);
    mt_tensor_release(b);
    mt_tensor_release(i);
    mt_tensor_release(u);
}

static void test_alloc(void) {
    mt_alloc_stats s0, s1;
    mt_tensor *a = mt_tensor_zeros(MT_F32, MT_SHAPE(1000), MT_DEVICE_CPU);
    mt_tensor_release(a);
    mt_host_alloc_stats(&s0);
    for (int k = 0; k < 10; k++) {
        mt_tensor *b = mt_tensor_zeros(MT_F32, MT_SHAPE(1000), MT_DEVICE_CPU);
        mt_tensor_release(b);
    }
    mt_host_alloc_stats(&s1);
    CHECK_MSG(s1.sys_allocs == s0.sys_allocs, "cached blocks are reused (%lld -> %lld)",
              (long long)s0.sys_allocs, (long long)s1.sys_allocs);
    CHECK(mt_host_alloc_class(1000) >= 1000 && mt_host_alloc_class(1000) < 1300);
    CHECK(s1.peak_in_use >= 4000);
}

static void test_rng(void) {
    mt_rng r1, r2;
    mt_rng_init(&r1, 42);
    mt_rng_init(&r2, 42);
    mt_tensor *a = mt_tensor_new(MT_F32, MT_SHAPE(10000), MT_DEVICE_CPU);
    mt_tensor *b = mt_tensor_new(MT_F32, MT_SHAPE(10000), MT_DEVICE_CPU);
    mt_rng_fill_normal(a, &r1, 0, 1);
    mt_rng_fill_normal(b, &r2, 0, 1);
    CHECK(memcmp(MT_F32P(a), MT_F32P(b), 40000) == 0);
    double s = 0, s2 = 0;
    for (int k = 0; k < 10000; k++) {
        double v = MT_F32P(a)[k];
        s += v;
        s2 += v * v;
    }
    CHECK_NEAR(s / 10000, 0.0, 0.05);
    CHECK_NEAR(s2 / 10000, 1.0, 0.05);
    mt_rng_fill_uniform(a, &r1, 2, 3);
    double mn = 10, mx = -10;
    for (int k = 0; k < 10000; k++) {
        double v = MT_F32P(a)[k];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    CHECK(mn >= 2 && mx < 3 && mx > 2.99 && mn < 2.01);
    /* Philox known-answer (Random123 test vector, counter 0, key 0) */
    uint32_t o[4];
    mt_philox4x32(o, 0, 0, 0);
    CHECK(o[0] == 0x6627e8d5u && o[1] == 0xe169c58du && o[2] == 0xbc57ac4cu && o[3] == 0x9b00dbd8u);
    mt_tensor_release(a);
    mt_tensor_release(b);
}

/* mt_tensor_new_pinned on a device without pinned memory (the CPU): an
 * ordinary, usable CPU tensor, freed through the normal path. */
static void test_pinned_fallback(void) {
    mt_tensor *t = mt_tensor_new_pinned(MT_F32, MT_SHAPE(3, 4), MT_DEVICE_CPU);
    CHECK(t && t->storage->device.type == MT_CPU && t->storage->free_fn == NULL);
    mt_tensor_fill_(t, 2.5);
    CHECK(mt_tensor_get_flat(t, 11) == 2.5);
    mt_tensor_release(t);
}

int main(void) {
    test_views();
    test_pinned_fallback();
    test_dtypes();
    test_alloc();
    test_rng();
    return mt_test_finish();
}
