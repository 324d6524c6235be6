/* The training loop (launch/train.c), called by the CLI's train action. */
#ifndef MT_TRAIN_H
#define MT_TRAIN_H

#include "core/status.h"
#include "launch/config.h"
#include "layers/models/unet3d.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Trains the model described by the resolved, schema-checked config `cfg`.
 * resume_path: NULL for a fresh run, otherwise the path of an existing
 * checkpoint file (.safetensors) that the CLI already resolved (see
 * mt_rundir_resolve_resume in launch/fsutil.h); training continues from it.
 * User-caused problems (semantic config errors via mt_config_error, data,
 * files) return a status with a message; MT_ERR_CONFIG makes the CLI exit 2,
 * any other error 1. */
mt_status mt_train_run(const mt_config *cfg, const char *resume_path);

/* Tests of data-parallel training only: with on = 1, rank r of W takes the
 * samples r, r + W, ... of the global batch that one rank with batch
 * train.batch_size * W would draw (data/loader.h shard_world), so W ranks
 * with batch B train exactly like one rank with batch B * W. Default off:
 * ranks draw their own batches from (run.seed, rank, step). */
void mt_train_set_shard_global_batch(int on);

/* The model section of a resolved config (model.*, and data.patch_size
 * checked against the depth) as a UNet3D config; errors name the key. Used
 * by training and by everything that rebuilds a model from the config
 * stored in a weight file (predict, evaluate). */
mt_status mt_train_model_config(const mt_config *cfg, mt_unet3d_config *mc);

#ifdef __cplusplus
}
#endif
#endif
