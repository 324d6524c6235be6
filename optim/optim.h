/* Optimizers over a list of parameter tensors: SGD, Adam, AdamW (exactly
 * torch.optim.SGD / Adam / AdamW, single parameter group), gradient clipping
 * (torch.nn.utils.clip_grad_norm_), and state export for checkpoints.
 *
 * Parameters are f32 leaf tensors (fp32 master weights, DESIGN.md decision 6)
 * updated in place from their ->grad through the backend's fused kernels
 * (sgd_step / adam_step), so the update runs on the parameter's device.
 * Parameters whose ->grad is NULL are skipped by a step, as in PyTorch, and
 * their per-parameter step count does not advance.
 *
 * State tensors (momentum_buffer; exp_avg, exp_avg_sq) live on the
 * parameter's device and are allocated, zero-filled, at init so that a
 * checkpoint can be loaded into a fresh optimizer before its first step.
 * Per-parameter step counts say which state is meaningful: for SGD a
 * parameter with step 0 has no momentum buffer yet (PyTorch creates it on
 * the first step as a copy of the gradient).
 *
 * The optimizer holds a reference to each parameter.
 */
#ifndef MT_OPTIM_H
#define MT_OPTIM_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MT_OPTIM_SGD = 0, MT_OPTIM_ADAM, MT_OPTIM_ADAMW } mt_optim_kind;

typedef struct {
    mt_optim_kind kind;
    double lr;
    double weight_decay; /* SGD, Adam: added to the gradient; AdamW: decoupled */
    /* SGD */
    double momentum;
    double dampening;
    int nesterov;
    /* Adam, AdamW */
    double beta1, beta2;
    double eps;
} mt_optim_hparams;

typedef struct mt_optim {
    mt_optim_hparams h;   /* h.lr is the current learning rate (set by the schedule) */
    int n_params;
    mt_tensor **params;   /* [n_params] (shape of each parameter), references held */
    double *weight_decay; /* [n_params] per-parameter weight decay (init: h.weight_decay) */
    mt_tensor **state_a;  /* [n_params] SGD momentum_buffer (NULL if momentum 0) or Adam exp_avg */
    mt_tensor **state_b;  /* [n_params] Adam exp_avg_sq, NULL for SGD */
    int64_t *param_steps; /* [n_params] steps taken by each parameter */
    int64_t step;         /* calls of mt_optim_step */
} mt_optim;

/* Each init validates the hyperparameters as PyTorch does (lr >= 0,
 * momentum >= 0, weight_decay >= 0, nesterov needs momentum > 0 and
 * dampening 0, betas in [0, 1), eps >= 0) and the parameters (f32,
 * contiguous, all distinct); on error it returns MT_ERR_INVALID naming the
 * culprit and leaves *opt zeroed. params: n tensors, any shapes. */
mt_status mt_optim_init_sgd(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                            double momentum, double dampening, double weight_decay, int nesterov);
mt_status mt_optim_init_adam(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                             double beta1, double beta2, double eps, double weight_decay);
mt_status mt_optim_init_adamw(mt_optim *opt, int n, mt_tensor *const *params, double lr,
                              double beta1, double beta2, double eps, double weight_decay);
/* Generic form: dispatches on h->kind. */
mt_status mt_optim_init(mt_optim *opt, int n, mt_tensor *const *params, const mt_optim_hparams *h);
void mt_optim_free(mt_optim *opt);

/* "sgd", "adam", "adamw" -> kind; MT_ERR_CONFIG naming the string otherwise. */
mt_status mt_optim_kind_from_name(const char *name, mt_optim_kind *kind);
const char *mt_optim_kind_name(mt_optim_kind kind);

void mt_optim_set_lr(mt_optim *opt, double lr);
double mt_optim_get_lr(const mt_optim *opt);
/* Per-parameter weight decay (e.g. 0 for norms and biases). */
void mt_optim_set_weight_decay(mt_optim *opt, int param_index, double weight_decay);

/* One update of every parameter that has a gradient, with the current lr. */
void mt_optim_step(mt_optim *opt);
/* Releases every parameter's gradient (PyTorch's set_to_none=True). */
void mt_optim_zero_grad(mt_optim *opt);

/* torch.nn.utils.clip_grad_norm_: total = norm over all gradients (those not
 * NULL) of order norm_type (> 0 or INFINITY); every gradient is scaled by
 * min(1, max_norm / (total + 1e-6)). Returns total (0 if no gradients). A
 * non-finite total makes the gradients non-finite, as in PyTorch: check the
 * returned value and skip the step. */
double mt_optim_clip_grad_norm(mt_tensor *const *params, int n, double max_norm, double norm_type);
/* The same without reading anything back (no host synchronisation on a GPU):
 * the total as a new 1-element f32 tensor on the gradients' device (which
 * must be one device), or NULL when no parameter has a gradient. Arithmetic
 * in f32 on the device, as PyTorch. */
mt_tensor *mt_optim_clip_grad_norm_t(mt_tensor *const *params, int n, double max_norm, double norm_type);

/* ---- state for checkpoints ----
 * Entries with stable names, matching PyTorch's optimizer state_dict keys:
 *   "step"                      optimizer steps (i64, this struct's step)
 *   "lr"                        current learning rate (f64)
 *   "state.<i>.step"            per-parameter steps (i64)
 *   "state.<i>.momentum_buffer" SGD with momentum (tensor, shape of param i)
 *   "state.<i>.exp_avg"         Adam/AdamW (tensor)
 *   "state.<i>.exp_avg_sq"      Adam/AdamW (tensor)
 * Exactly one of tensor / i64 / f64 is non-NULL; they point into the
 * optimizer (borrowed), so saving reads through them and loading writes
 * through them (mt_tensor_copy_ into tensor, assignment to *i64 / *f64). */
typedef struct {
    char name[64];
    mt_tensor *tensor; /* (shape of the parameter) */
    int64_t *i64;
    double *f64;
} mt_optim_state_entry;

/* Number of entries (fixed after init). */
int mt_optim_state_count(const mt_optim *opt);
/* Fills entry k (0 <= k < count); the order is stable. */
void mt_optim_state_entry_get(mt_optim *opt, int k, mt_optim_state_entry *e);
/* Entry by name; MT_ERR_INVALID naming it if there is none. */
mt_status mt_optim_state_find(mt_optim *opt, const char *name, mt_optim_state_entry *e);

#ifdef __cplusplus
}
#endif
#endif
