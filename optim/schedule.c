/* Learning-rate schedules (see schedule.h for the formulas). */
#include "optim/schedule.h"

#include <math.h>
#include <string.h>

mt_schedule mt_schedule_default(mt_schedule_kind kind, double base_lr) {
    mt_schedule s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.base_lr = base_lr;
    s.step_size = 1;
    s.gamma = 0.1;
    s.max_steps = 1;
    s.power = 0.9;
    s.t0 = 1;
    s.t_mult = 1;
    s.eta_min = 0;
    s.warmup_steps = 0;
    s.warmup_start_factor = 1.0 / 3.0;
    return s;
}

const char *mt_schedule_kind_name(mt_schedule_kind kind) {
    switch (kind) {
    case MT_SCHED_CONSTANT: return "constant";
    case MT_SCHED_STEP: return "step";
    case MT_SCHED_POLY: return "poly";
    case MT_SCHED_COSINE_RESTARTS: return "cosine_restarts";
    }
    return "?";
}

mt_status mt_schedule_kind_from_name(const char *name, mt_schedule_kind *kind) {
    static const mt_schedule_kind kinds[] = {MT_SCHED_CONSTANT, MT_SCHED_STEP, MT_SCHED_POLY,
                                             MT_SCHED_COSINE_RESTARTS};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        if (name && strcmp(name, mt_schedule_kind_name(kinds[k])) == 0) {
            *kind = kinds[k];
            return MT_OK;
        }
    return mt_error_set(MT_ERR_CONFIG,
                        "unknown lr schedule '%s' (expected constant, step, poly or cosine_restarts)",
                        name ? name : "(null)");
}

mt_status mt_schedule_validate(const mt_schedule *s) {
    const char *kn = mt_schedule_kind_name(s->kind);
    if (!strcmp(kn, "?")) return mt_error_set(MT_ERR_CONFIG, "lr schedule: unknown kind %d", (int)s->kind);
    if (!(s->base_lr >= 0 && isfinite(s->base_lr)))
        return mt_error_set(MT_ERR_CONFIG, "lr schedule %s: base lr %g must be >= 0", kn, s->base_lr);
    if (s->warmup_steps < 0)
        return mt_error_set(MT_ERR_CONFIG, "lr schedule %s: warmup_steps %lld must be >= 0", kn,
                            (long long)s->warmup_steps);
    if (s->warmup_steps > 0 && !(s->warmup_start_factor > 0 && s->warmup_start_factor <= 1))
        return mt_error_set(MT_ERR_CONFIG,
                            "lr schedule %s: warmup_start_factor %g must be in (0, 1]", kn,
                            s->warmup_start_factor);
    switch (s->kind) {
    case MT_SCHED_CONSTANT: break;
    case MT_SCHED_STEP:
        if (s->step_size < 1)
            return mt_error_set(MT_ERR_CONFIG, "lr schedule step: step_size %lld must be >= 1",
                                (long long)s->step_size);
        if (!(s->gamma > 0 && isfinite(s->gamma)))
            return mt_error_set(MT_ERR_CONFIG, "lr schedule step: gamma %g must be > 0", s->gamma);
        break;
    case MT_SCHED_POLY:
        if (s->max_steps < 1)
            return mt_error_set(MT_ERR_CONFIG, "lr schedule poly: max_steps %lld must be >= 1",
                                (long long)s->max_steps);
        if (!(s->power >= 0 && isfinite(s->power)))
            return mt_error_set(MT_ERR_CONFIG, "lr schedule poly: power %g must be >= 0", s->power);
        break;
    case MT_SCHED_COSINE_RESTARTS:
        if (s->t0 < 1)
            return mt_error_set(MT_ERR_CONFIG, "lr schedule cosine_restarts: t0 %lld must be >= 1",
                                (long long)s->t0);
        if (s->t_mult < 1)
            return mt_error_set(MT_ERR_CONFIG,
                                "lr schedule cosine_restarts: t_mult %lld must be >= 1",
                                (long long)s->t_mult);
        if (!(s->eta_min >= 0 && isfinite(s->eta_min)))
            return mt_error_set(MT_ERR_CONFIG,
                                "lr schedule cosine_restarts: eta_min %g must be >= 0", s->eta_min);
        break;
    }
    return MT_OK;
}

/* Main schedule at step t >= 0 (after any warm-up). */
static double main_lr(const mt_schedule *s, int64_t t) {
    switch (s->kind) {
    case MT_SCHED_CONSTANT: return s->base_lr;
    case MT_SCHED_STEP: return s->base_lr * pow(s->gamma, (double)(t / s->step_size));
    case MT_SCHED_POLY:
        if (t >= s->max_steps) return 0.0;
        return s->base_lr * pow(1.0 - (double)t / (double)s->max_steps, s->power);
    case MT_SCHED_COSINE_RESTARTS: {
        int64_t t_i = s->t0, t_cur = t;
        if (s->t_mult == 1) {
            t_cur = t % s->t0;
        } else {
            while (t_cur >= t_i) { /* at most log_{t_mult}(t / t0) + 1 rounds */
                t_cur -= t_i;
                if (t_i > INT64_MAX / s->t_mult) break; /* the cycle is longer than any step */
                t_i *= s->t_mult;
            }
        }
        const double pi = 3.14159265358979323846;
        return s->eta_min +
               (s->base_lr - s->eta_min) * (1.0 + cos(pi * (double)t_cur / (double)t_i)) / 2.0;
    }
    }
    MT_CHECK_MSG(0, "lr schedule: unknown kind %d", (int)s->kind);
    return 0;
}

double mt_schedule_lr(const mt_schedule *s, int64_t step) {
    MT_CHECK_MSG(step >= 0, "lr schedule: step %lld", (long long)step);
    if (step < s->warmup_steps) {
        double f = s->warmup_start_factor;
        return s->base_lr * (f + (1.0 - f) * (double)step / (double)s->warmup_steps);
    }
    return main_lr(s, step - s->warmup_steps);
}
