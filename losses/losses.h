/* Segmentation losses built from differentiable ops (autograd/ops.h): each
 * returns a 0-d f32 loss tensor that carries autograd history back to the
 * logits. Losses are computed in f32 whatever the logits' dtype (DESIGN.md
 * decision 6).
 *
 * Shapes: logits (N, C, *) with * the spatial dims (D, H, W) or fewer.
 * Targets come in two forms:
 *   - labels: integer (i32/u8) or integral f32 class indices, (N, 1, *) or (N, *);
 *   - dense:  f32 of the logits' shape (one-hot, multi-label or probabilities).
 *
 *   bce      torch.nn.BCEWithLogitsLoss, mean reduction; pos_weight (C) is applied
 *            per channel (torch's pos_weight viewed as (C, 1, 1, 1)).
 *   ce       torch.nn.CrossEntropyLoss, mean reduction: labels with optional class
 *            weights (weighted mean: sum w_y l / sum w_y), or dense class
 *            probabilities (sum over classes of -w_c t_c log p_c, mean over voxels).
 *   dice     MONAI DiceLoss (sigmoid / softmax / none, include_background,
 *            to_onehot_y, batch, squared_pred, smooth_nr, smooth_dr; mean over the
 *            (N, C) or, with batch, (C) per-class losses).
 *   dice_ce  MONAI DiceCELoss: lambda_dice dice + lambda_ce ce, where ce is BCE on
 *            the logits when C == 1 (as MONAI), and uses the labels directly.
 *   dice_bce lambda_dice dice (sigmoid) + lambda_ce bce (pos_weight), the sigmoid
 *            (multi-label) analogue of dice_ce.
 *
 * Conversion of labels to a dense target (dice, bce): with C == 1 the labels
 * are used as the one channel (values 0/1); otherwise they are one-hot encoded
 * into C channels when to_onehot_y is set, and are an error when it is not.
 * Label values must lie in [0, C): the one-hot kernel aborts otherwise (data
 * are validated where they are loaded).
 */
#ifndef MT_LOSSES_H
#define MT_LOSSES_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_LOSS_DICE_CE = 0,
    MT_LOSS_DICE_BCE,
    MT_LOSS_CE,
    MT_LOSS_BCE,
    MT_LOSS_DICE
} mt_loss_kind;

typedef enum { MT_LOSS_ACT_NONE = 0, MT_LOSS_ACT_SIGMOID, MT_LOSS_ACT_SOFTMAX } mt_loss_activation;

typedef struct {
    mt_loss_activation activation; /* on the logits before Dice (softmax ignored when C == 1) */
    int include_background;        /* 0: drop channel 0 (when C > 1) */
    int to_onehot_y;               /* one-hot encode label targets */
    int batch;                     /* sum over the batch too (one Dice per class) */
    int squared_pred;              /* squares in the denominator */
    double smooth_nr, smooth_dr;   /* MONAI defaults 1e-5, 1e-5 */
} mt_dice_options;

typedef struct {
    mt_loss_kind kind;
    mt_dice_options dice;
    double lambda_dice, lambda_ce; /* combined losses; lambda_ce weighs the BCE in dice_bce */
    const mt_tensor *ce_weight;    /* (C) class weights for CE, or NULL; borrowed, any device */
    const mt_tensor *pos_weight;   /* (C) BCE positive-class weights, or NULL; borrowed */
} mt_loss_config;

/* Defaults per kind: lambdas 1; dice: smooth 1e-5 / 1e-5, include_background 1,
 * to_onehot_y 1, batch 0, squared_pred 0, activation softmax (dice, dice_ce) or
 * sigmoid (dice_bce, bce); no class or positive weights. */
mt_loss_config mt_loss_config_default(mt_loss_kind kind);
/* "dice_ce", "dice_bce", "ce", "bce", "dice" -> kind; MT_ERR_CONFIG naming the string. */
mt_status mt_loss_kind_from_name(const char *name, mt_loss_kind *kind);
const char *mt_loss_kind_name(mt_loss_kind kind);

/* Checks that logits and target fit the configuration (shapes, dtypes, weight
 * sizes, channel counts); MT_ERR_INVALID naming the mismatch. */
mt_status mt_loss_check(const mt_tensor *logits, const mt_tensor *target, const mt_loss_config *cfg);
/* *loss <- the configured loss (0-d, f32, on the logits' device), after mt_loss_check. */
mt_status mt_loss_compute(mt_tensor **loss, const mt_tensor *logits /* (N, C, *) */,
                          const mt_tensor *target /* (N, C, *) or (N, 1, *) or (N, *) */,
                          const mt_loss_config *cfg);

/* The individual losses; shape mismatches abort (use mt_loss_check first for
 * user-supplied data). Return new 0-d references. */
mt_tensor *mt_loss_bce_with_logits(const mt_tensor *logits /* (N, C, *) */,
                                   const mt_tensor *target /* (N, C, *) f32 */,
                                   const mt_tensor *pos_weight /* (C) or NULL */);
mt_tensor *mt_loss_cross_entropy(const mt_tensor *logits /* (N, C, *) */,
                                 const mt_tensor *target /* labels (N, 1, *) / (N, *), or (N, C, *) f32 */,
                                 const mt_tensor *weight /* (C) or NULL */);
mt_tensor *mt_loss_dice(const mt_tensor *logits /* (N, C, *) */,
                        const mt_tensor *target /* labels or (N, C, *) */,
                        const mt_dice_options *opt);

#ifdef __cplusplus
}
#endif
#endif
