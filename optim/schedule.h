/* Learning-rate schedules as pure functions of the step (an epoch or an
 * iteration: the caller decides what a step is and calls
 * mt_schedule_lr(s, step) with step = 0 for the first one).
 *
 *   constant        lr = base
 *   step            lr = base * gamma^floor(step / step_size)           (torch StepLR)
 *   poly            lr = base * (1 - step / max_steps)^power, 0 from max_steps on
 *                   (nnU-Net PolyLRScheduler; power 0.9)
 *   cosine_restarts lr = eta_min + (base - eta_min) (1 + cos(pi T_cur / T_i)) / 2 with
 *                   cycles of length T_0, T_0 T_mult, T_0 T_mult^2, ...; T_cur the
 *                   position in the current cycle (torch CosineAnnealingWarmRestarts
 *                   stepped once per step; integer arithmetic, so restart boundaries
 *                   are exact)
 *
 * Linear warm-up goes in front of any of them (torch SequentialLR of LinearLR
 * and the main schedule): for step < warmup_steps
 *   lr = base * (f + (1 - f) * step / warmup_steps),   f = warmup_start_factor,
 * and from warmup_steps on the main schedule runs with step - warmup_steps,
 * so its own parameters (max_steps, T_0, step_size) count steps after warm-up.
 */
#ifndef MT_SCHEDULE_H
#define MT_SCHEDULE_H

#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_SCHED_CONSTANT = 0,
    MT_SCHED_STEP,
    MT_SCHED_POLY,
    MT_SCHED_COSINE_RESTARTS
} mt_schedule_kind;

typedef struct {
    mt_schedule_kind kind;
    double base_lr;
    /* step */
    int64_t step_size;
    double gamma;
    /* poly */
    int64_t max_steps;
    double power;
    /* cosine_restarts */
    int64_t t0;
    int64_t t_mult;
    double eta_min;
    /* warm-up (0 steps: none) */
    int64_t warmup_steps;
    double warmup_start_factor;
} mt_schedule;

/* Defaults: constant, gamma 0.1, step_size 1, power 0.9, max_steps 1, t0 1,
 * t_mult 1, eta_min 0, no warm-up, warmup_start_factor 1/3 (torch LinearLR). */
mt_schedule mt_schedule_default(mt_schedule_kind kind, double base_lr);
/* MT_ERR_CONFIG naming the field for values outside their ranges:
 * base_lr >= 0, step_size >= 1, gamma > 0, max_steps >= 1, power >= 0,
 * t0 >= 1, t_mult >= 1, 0 <= eta_min, warmup_steps >= 0,
 * warmup_start_factor in (0, 1]. */
mt_status mt_schedule_validate(const mt_schedule *s);
/* "constant", "step", "poly", "cosine_restarts" -> kind. */
mt_status mt_schedule_kind_from_name(const char *name, mt_schedule_kind *kind);
const char *mt_schedule_kind_name(mt_schedule_kind kind);

/* The learning rate at `step` (>= 0). */
double mt_schedule_lr(const mt_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
