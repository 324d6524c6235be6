#include "core/rng.h"

#include <math.h>

#include "core/backend.h"

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void mt_rng_init(mt_rng *r, uint64_t seed) {
    r->seed = seed;
    r->offset = 0;
}

void mt_rng_init_stream(mt_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ a);
    h = splitmix64(h ^ (b * 0x632be59bd9b4e019ull));
    h = splitmix64(h ^ (c * 0x8cb92ba72f3d8dd7ull));
    r->seed = h;
    r->offset = 0;
}

void mt_philox4x32(uint32_t out[4], uint64_t ctr_lo, uint64_t ctr_hi, uint64_t key) {
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int i = 0; i < 10; i++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

uint32_t mt_philox_u32(uint64_t seed, uint64_t index) {
    uint32_t o[4];
    mt_philox4x32(o, index >> 2, 0, seed);
    return o[index & 3];
}

float mt_philox_uniform(uint64_t seed, uint64_t index) {
    return (float)(mt_philox_u32(seed, index) >> 8) * (1.0f / 16777216.0f);
}

float mt_philox_normal(uint64_t seed, uint64_t index) {
    uint64_t base = index & ~(uint64_t)1;
    float u1 = mt_philox_uniform(seed, base);
    float u2 = mt_philox_uniform(seed, base + 1);
    float r = sqrtf(-2.0f * logf(1.0f - u1)); /* 1 - u1 in (0, 1] */
    float th = 6.2831853071795864f * u2;
    return (index & 1) ? r * sinf(th) : r * cosf(th);
}

uint32_t mt_rng_u32(mt_rng *r) { return mt_philox_u32(r->seed, r->offset++); }

double mt_rng_uniform(mt_rng *r) {
    uint64_t hi = mt_rng_u32(r) >> 5, lo = mt_rng_u32(r) >> 6; /* 27 + 26 bits */
    return ((double)hi * 67108864.0 + (double)lo) * (1.0 / 9007199254740992.0);
}

double mt_rng_normal(mt_rng *r) {
    double u1 = mt_rng_uniform(r), u2 = mt_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

int64_t mt_rng_randint(mt_rng *r, int64_t lo, int64_t hi) {
    MT_CHECK(hi > lo);
    uint64_t span = (uint64_t)(hi - lo);
    uint64_t x = ((uint64_t)mt_rng_u32(r) << 32) | mt_rng_u32(r);
    return lo + (int64_t)(x % span);
}

static void advance(mt_rng *r, int64_t n) { r->offset += ((uint64_t)n + 3) & ~(uint64_t)3; }

void mt_rng_fill_uniform(mt_tensor *t, mt_rng *r, float lo, float hi) {
    int64_t n = mt_tensor_numel(t);
    if (n) mt_kernel(t->storage->device, rng_uniform)(t, r->seed, r->offset, lo, hi);
    advance(r, n);
}

void mt_rng_fill_normal(mt_tensor *t, mt_rng *r, float mean, float std) {
    int64_t n = mt_tensor_numel(t);
    if (n) mt_kernel(t->storage->device, rng_normal)(t, r->seed, r->offset, mean, std);
    advance(r, n);
}
