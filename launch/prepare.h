/* `medtrain prepare`: an MSD / nnU-Net dataset folder -> one HDF5 store.
 *
 *   1. fingerprint pass (parallel over cases): load each case, crop to the
 *      non-zero region, count classes, sample foreground intensities;
 *   2. plan: target spacing (the median by default), normalisation per
 *      channel from dataset.json's channel names (CT -> dataset percentile
 *      clip + z-score, noNorm -> none, else per-case z-score), orders;
 *   3. preprocessing pass (parallel over cases): load, crop, normalise,
 *      resample (data/preprocess.h), write the case into the store (HDF5
 *      writes serialised by the store's mutex);
 *   4. commit: the store appears at out_path only when complete (temp file +
 *      rename); on any error nothing is left behind and an existing file at
 *      out_path is untouched.
 * A progress bar (cases done / total, elapsed, ETA) goes to stderr: redrawn
 * in place on a terminal, a line per 10% otherwise. Layout and conventions of
 * the store: data/h5store.h; of the preprocessing: data/preprocess.h.
 */
#ifndef MT_PREPARE_H
#define MT_PREPARE_H

#include <stdint.h>

#include "core/status.h"
#include "data/resample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int num_threads;          /* worker threads; 0: OpenMP's default */
    int has_spacing;          /* 1: use spacing[] as the target */
    double spacing[3];        /* target voxel size (D, H, W) mm, i.e. NIfTI (z, y, x) */
    int aniso_rule;           /* 1: nnU-Net's target rule for anisotropic data (default 0) */
    mt_interp order_image;    /* default cubic */
    mt_interp order_label;    /* default linear (label-safe) */
    mt_interp order_aniso;    /* the out-of-plane axis of anisotropic cases: default nearest */
    double aniso_threshold;   /* default 3; <= 0 disables separate-z resampling */
    int64_t samples_per_case; /* foreground intensity samples per case (default 10000) */
    uint64_t seed;            /* sampling seed (default 1234) */
    int compress_level;       /* deflate level 0..9 (default 1: float data compresses little more at higher levels) */
    int progress;             /* 1: progress bar and summary on stderr (default 1) */
    int64_t cache_bytes;      /* cases loaded by the fingerprint pass are kept for the
                               * preprocessing pass while their total stays under this
                               * (default 2 GiB; 0: always read twice) */
    int num_case_ids;         /* > 0: prepare only these cases (in this order) */
    const char *const *case_ids;
} mt_prepare_options;

void mt_prepare_options_default(mt_prepare_options *o);

/* Prepares dataset_dir into out_path (see above). Errors name the culprit:
 * dataset.json / case files (data/msd.h), an unknown case id, the output
 * path. o may be NULL (defaults). */
mt_status mt_prepare_run(const char *dataset_dir, const char *out_path, const mt_prepare_options *o);

/* The `medtrain prepare` command: argv[0] is "prepare", then
 *   DATASET_DIR OUT.h5 [--spacing X,Y,Z | --spacing S] [--threads N]
 *   [--cases ID,ID,...] [--aniso-rule] [--compress 0..9] [--quiet] [--help]
 * --spacing is in NIfTI axis order (x, y, z) = pixdim[1..3] (one value:
 * isotropic). Returns the exit status: 0, 2 for bad arguments (the message
 * names the argument), 1 when preparing fails. */
int mt_prepare_cli(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
