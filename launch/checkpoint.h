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
 *     the dropout RNG offsets of the model as "rng.module.<k>.offset", and,
 *     once a validation has run, the early-stopping state "early_stop.best",
 *     "early_stop.best_step", "early_stop.bad_validations".
 * A weight file (for deployment / predict) holds only the state_dict and
 *   "format" = "medtrain-weights", "medtrain_version", "config", "class_names"
 *   (comma-separated), "normalization", and, when the model was trained on a
 *   prepared store, "preprocess": JSON text
 *     {"plan": <mt_prep_plan_to_json (data/preprocess.h)>,
 *      "channel_names": ["T2", ...], "dataset_name": "Hippocampus"}
 *   (everything `medtrain predict` needs to preprocess a raw NIfTI case).
 */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include "core/rng.h"
#include "data/h5store.h"
#include "data/preprocess.h"
#include <stdio.h>

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
    /* early stopping / best model (train.early_stop.*): valid when has_best */
    int has_best;
    double best;             /* best monitor value so far */
    int64_t best_step;       /* step at which it was reached */
    int64_t bad_validations; /* validations since then without improvement */
} mt_train_state;

/* Fills an initialised, empty st with a checkpoint (references to the live
 * tensors: serialise before training continues). */
mt_status mt_checkpoint_build(mt_safetensors *st, const mt_config *cfg, mt_module *model,
                              mt_optim *opt, const mt_train_state *ts);
/* Loads `path` into model, opt and ts. Every key and shape is checked before
 * anything is changed where possible; errors name the file and the key. */
mt_status mt_checkpoint_restore(const char *path, mt_module *model, mt_optim *opt,
                                mt_train_state *ts);
/* Writes the weight file `path` atomically. class_names: num_classes names
 * (stored comma-separated: a comma inside a name becomes ';', an empty or
 * NULL name "class_<k>"). store: the prepared store the model was
 * trained on (its plan, channel names and dataset name go into the
 * "preprocess" metadata); NULL when the data did not come from a store
 * (phantom). */
mt_status mt_weights_save(const char *path, const mt_config *cfg, mt_module *model,
                          int num_classes, const char *const *class_names,
                          const char *normalization,
                          const mt_h5store_meta *store /* NULL: data not from a prepared store (phantom) */);

/* A weight file (or checkpoint) loaded for inference. */
typedef struct {
    char *path;            /* the file as given */
    int is_checkpoint;     /* 1: format medtrain-checkpoint */
    mt_config *cfg;        /* the stored resolved config */
    mt_module *model;      /* UNet3D from cfg, weights loaded strictly, eval mode */
    int in_channels;       /* model.in_channels */
    int out_channels;      /* model.out_channels */
    int64_t patch[3];      /* data.patch_size (D, H, W) */
    int sigmoid;           /* 1: loss.name is bce / dice_bce (sigmoid outputs) */
    int num_classes;       /* classes, background included */
    char **class_names;    /* [num_classes] ("class_<k>" where the file has none) */
    char *normalization;   /* "normalization" metadata ("" when absent) */
    int has_plan;          /* 1: the file has "preprocess" metadata */
    mt_prep_plan plan;     /* valid when has_plan */
    char **channel_names;  /* [plan.num_channels] when has_plan, else NULL */
    char *dataset_name;    /* when has_plan, else NULL */
    char *written_by;      /* "medtrain_version" metadata ("unknown" when absent) */
    char *skipped_config;  /* stored config keys this version skipped (mt_config_parse_stored), or NULL */
} mt_weights;

/* Loads a weight file (format medtrain-weights) or a checkpoint (format
 * medtrain-checkpoint: its optimizer state is ignored; it has no class names
 * or "preprocess" metadata). Errors name the file and the problem: not a
 * safetensors / medtrain file, a missing or malformed metadata key, a config
 * that does not parse or check, a missing, extra or wrongly shaped tensor.
 * On error *w is zeroed. */
mt_status mt_weights_load(const char *path, mt_weights *w);
/* Frees everything of w (a zeroed w is fine). */
void mt_weights_free(mt_weights *w);
/* When w's stored config had settings this version skipped (a file from
 * another medtrain version), one "note:" line on f naming them and the
 * version that wrote the file; nothing otherwise. */
void mt_weights_print_note(const mt_weights *w, FILE *f);
/* Moves the loaded model (mt_weights_load builds it on the CPU) to dev;
 * an unavailable device is an error naming the file and the device. */
mt_status mt_weights_to_device(mt_weights *w, mt_device dev);

#ifdef __cplusplus
}
#endif
#endif
