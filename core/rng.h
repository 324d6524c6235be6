/* Reproducible random numbers: Philox4x32-10, counter based, so the CPU and
 * CUDA backends produce the same stream for the same (seed, offset) and any
 * element can be generated independently of the others.
 *
 * mt_rng is a (seed, offset) pair; drawing n numbers consumes n counter
 * values. Its state is two integers, which is what checkpoints save.
 */
#ifndef MT_RNG_H
#define MT_RNG_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t seed;
    uint64_t offset;
} mt_rng;

void mt_rng_init(mt_rng *r, uint64_t seed);
/* Derives an independent stream, e.g. per (rank, worker): hashes seed and ids. */
void mt_rng_init_stream(mt_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c);

/* Philox4x32-10 block: 4 outputs for 128-bit counter (ctr_lo, ctr_hi) and key. */
void mt_philox4x32(uint32_t out[4], uint64_t ctr_lo, uint64_t ctr_hi, uint64_t key);
/* i-th uint32 of stream (seed, offset): out[i % 4] of block (offset + i) / 4... see rng.c */
uint32_t mt_philox_u32(uint64_t seed, uint64_t index);
/* Uniform in [0, 1) with 24 random bits, as float; same formula on every device. */
float mt_philox_uniform(uint64_t seed, uint64_t index);
/* Standard normal via Box-Muller from uniforms 2k, 2k+1 (index selects cos/sin). */
float mt_philox_normal(uint64_t seed, uint64_t index);

/* Host draws (advance r->offset). */
uint32_t mt_rng_u32(mt_rng *r);
double mt_rng_uniform(mt_rng *r);               /* [0, 1) with 53 bits */
double mt_rng_normal(mt_rng *r);
int64_t mt_rng_randint(mt_rng *r, int64_t lo, int64_t hi); /* [lo, hi) */

/* Tensor fills (advance r->offset by numel, rounded up to a multiple of 4). */
void mt_rng_fill_uniform(mt_tensor *t, mt_rng *r, float lo, float hi);
void mt_rng_fill_normal(mt_tensor *t, mt_rng *r, float mean, float std);

#ifdef __cplusplus
}
#endif
#endif
