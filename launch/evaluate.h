/* `medtrain evaluate`: predict the cases of a split and score them against
 * their reference labels (eval/metrics.h), writing DIR/per_case.csv and
 * DIR/summary.json (eval/report.h, atomically).
 *
 * DATA:
 *  - a prepared store (STORE.h5, data/h5store.h): inference on the stored
 *    preprocessed case (mt_predict_preprocessed), the probabilities mapped
 *    back to the ORIGINAL grid; metrics there with the original voxel size,
 *    so numbers are comparable with nnU-Net's (which evaluates in the
 *    original image space). The reference is the original NIfTI label when
 *    the store's source_dir (meta) still opens as a dataset folder holding
 *    every selected case, else the store's label mapped back with
 *    mt_preprocess_invert_labels; the summary's "reference" says which.
 *  - a dataset folder (data/msd.h): each case read from NIfTI and
 *    preprocessed with the weight file's plan (mt_predict_case).
 * SPLITS (data/msd.h splits files): "all" (every case of the store /
 * folder, no splits file needed), "holdout", "dev", "fold:K:val",
 * "fold:K:train". The splits file is --splits, else <DATASET_DIR>/splits.json
 * (for a store: <source_dir>/splits.json).
 * METRICS per case and foreground class 1..K-1: Dice, IoU, HD95 and ASD in
 * mm, sensitivity, specificity, precision (PPV), NPV.
 */
#ifndef MT_EVALUATE_H
#define MT_EVALUATE_H

#include "core/status.h"
#include "core/tensor.h"
#include "eval/metrics.h"
#include "launch/checkpoint.h"
#include "launch/predict.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Testing hook: replaces the model's prediction of a case by *pred (D, H, W)
 * u8 on the original grid (a new reference), given the reference label
 * (D, H, W) u8 there. */
typedef mt_status (*mt_evaluate_predict_hook)(void *ctx, mt_tensor **pred /* (D, H, W) */, const char *case_id,
                                              const mt_tensor *reference /* (D, H, W) */);

typedef struct {
    const char *weights_path;    /* the weight file (or checkpoint; a dataset folder needs a weight file's plan) */
    const mt_weights *weights;   /* already loaded weights (then weights_path only names them); NULL: load */
    const char *data_path;       /* STORE.h5 (a file) or DATASET_DIR (a folder) */
    const char *split;           /* "all", "holdout", "dev", "fold:K:val", "fold:K:train" */
    const char *splits_path;     /* NULL: the default (see above) */
    const char *out_dir;         /* created if needed */
    mt_predict_options predict;
    int progress;                /* 1: a line per case and the table (default 1) */
    mt_evaluate_predict_hook hook; /* NULL: the model (testing only) */
    void *hook_ctx;
} mt_evaluate_options;

void mt_evaluate_options_default(mt_evaluate_options *o);

/* Parses a --split value: kind 0 all, 1 holdout, 2 dev, 3 fold val, 4 fold
 * train; *fold the K of fold:K:... (else -1). MT_ERR_CONFIG naming s. */
mt_status mt_evaluate_parse_split(const char *s, int *kind, int *fold);

/* Runs the evaluation described above. res (may be NULL) receives the
 * per-case results (free with mt_eval_results_free). Errors name the
 * culprit: the weight file, the store / folder, the splits file, a case id,
 * the output folder; a bad --split (syntax, or a fold the splits file does
 * not have) is MT_ERR_CONFIG. On error neither report file is written. */
mt_status mt_evaluate_run(const mt_evaluate_options *o, mt_eval_results *res);

/* The `medtrain evaluate` command: argv[0] is "evaluate", then
 *   WEIGHTS.safetensors (STORE.h5 | DATASET_DIR) --split S --out DIR
 *   [--splits FILE] [--overlap X] [--mirror] [--batch N]
 *   [--largest-component] [--device D] [--threads N] [--quiet] [--help]
 * Returns the exit status: 0; 2 for bad arguments (also a fold the splits
 * file lacks); 1 when evaluation fails. */
int mt_evaluate_cli(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
