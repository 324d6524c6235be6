/* Checkpoints and weight files (DESIGN.md decisions 10 and 11).
 *
 * A checkpoint is one safetensors file holding
 *   - the model's state_dict under PyTorch names ("enc1.conv1.weight", ...);
 *   - optimizer state tensors under "optimizer.<entry>" (optim/optim.h names,
 *     e.g. "optimizer.state.3.exp_avg");
 *   - in __metadata__: "format" = "medtrain-checkpoint", "medtrain_version",
 *     "config" (the resolved YAML), "step" (optimizer steps done), the
 *     optimizer's scalar entries as "optimizer.<entry>" (decimal text, lr with
 *     17 significant digits), the sampling RNG as "rng.seed"/"rng.offset", and
 *     the dropout RNG offsets of the model as "rng.module.<k>.offset".
 * A weight file (for deployment / predict) holds only the state_dict and
 *   "format" = "medtrain-weights", "medtrain_version", "config", "class_names"
 *   (comma-separated), "normalization".
 */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include "core/rng.h"
#include "launch/config.h"
#include "launch/safetensors.h"
#include "layers/module.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t step;    /* optimizer steps completed */
    mt_rng rng;      /* patch-sampling stream */
} mt_train_state;

/* Fills an initialised, empty st with a checkpoint (references to the live
 * tensors: serialise before training continues). */
mt_status mt_checkpoint_build(mt_safetensors *st, const mt_config *cfg, mt_module *model,
                              mt_optim *opt, const mt_train_state *ts);
/* Loads `path` into model, opt and ts. Every key and shape is checked before
 * anything is changed where possible; errors name the file and the key. */
mt_status mt_checkpoint_restore(const char *path, mt_module *model, mt_optim *opt,
                                mt_train_state *ts);
/* Writes the weight file `path` atomically. class_names: num_classes names. */
mt_status mt_weights_save(const char *path, const mt_config *cfg, mt_module *model,
                          int num_classes, const char *const *class_names,
                          const char *normalization);

#ifdef __cplusplus
}
#endif
#endif
