/* `medtrain predict`: a weight file + NIfTI case(s) -> NIfTI label map(s),
 * and the per-case prediction shared with `medtrain evaluate`.
 *
 * ONE CASE (mt_predict_case, as nnU-Net v2 predicts):
 *   1. preprocess the real-world intensities with the weight file's plan
 *      (data/preprocess.h: crop to the non-zero region, normalise, resample to
 *      the plan's target spacing; no label);
 *   2. sliding window over the preprocessed case (eval/sliding_window.h):
 *      patch = the stored config's data.patch_size, Gaussian importance
 *      weighting, the given overlap, optional mirroring on all three axes;
 *      window logits averaged;
 *   3. softmax over classes (sigmoid for models trained with bce / dice_bce);
 *   4. the probabilities mapped back to the original grid
 *      (mt_preprocess_invert_image, linear, nearest on a separate-z axis;
 *      outside the crop box background = 1): probabilities are resampled,
 *      not labels;
 *   5. argmax (ties: lowest class), optionally only the largest connected
 *      component (26-connectivity) of each foreground class kept.
 * mt_predict_preprocessed runs steps 2-5 on a case that is already
 * preprocessed (e.g. one from a prepared store) given its geometry.
 */
#ifndef MT_PREDICT_H
#define MT_PREDICT_H

#include "core/status.h"
#include "core/tensor.h"
#include "data/preprocess.h"
#include "launch/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double overlap;        /* sliding-window overlap in [0, 1); default 0.5 */
    int mirror;            /* 1: average over all 8 mirrorings (axes D, H, W); default 0 */
    int batch;             /* windows per forward pass, >= 1; default 1 */
    int largest_component; /* 1: keep the largest component of each foreground class; default 0 */
    /* Device for the model where the weights are loaded (the predict CLI,
     * mt_evaluate_run without preloaded weights): auto | cpu | cuda | cuda:N
     * (mt_device_parse); NULL = the CPU. The prediction functions below run
     * on whatever device the model is on. */
    const char *device;
} mt_predict_options;

void mt_predict_options_default(mt_predict_options *o);

/* Steps 2-5 on a preprocessed case image (C, d, h, w) f32 (C == the model's
 * in_channels, (d, h, w) == geom->shape): *labels (D, H, W) u8 on the
 * original grid geom->orig_shape. o may be NULL (defaults). Errors name the
 * weight file (class count, channel count) or the invalid option. */
mt_status mt_predict_preprocessed(mt_tensor **labels /* (D, H, W) u8 */, const mt_weights *w,
                                  const mt_tensor *image /* (C, d, h, w) */, const mt_prep_geometry *geom,
                                  const mt_predict_options *o);

/* The whole pipeline on a raw case: image (C, D, H, W) f32 holding
 * real-world intensities, spacing (D, H, W) mm and affine (NIfTI) of its
 * file. Needs the weight file's plan (w->has_plan; a checkpoint or a weight
 * file of a phantom-trained model has none: MT_ERR_INVALID naming the file).
 * *labels (D, H, W) u8 on the image's grid. geom (may be NULL) receives the
 * preprocessing geometry. */
mt_status mt_predict_case(mt_tensor **labels /* (D, H, W) u8 */, const mt_weights *w,
                          const mt_tensor *image /* (C, D, H, W) */, const double spacing[3],
                          const double affine[4][4], const mt_predict_options *o, mt_prep_geometry *geom);

/* Moves w's model to the device named by o->device (NULL: nothing to do);
 * errors (unknown name, no usable GPU) name the option --device. */
mt_status mt_predict_set_device(mt_weights *w, const mt_predict_options *o);

/* Option parsing shared by the predict and evaluate CLIs: if argv[*i] is
 * --overlap, --mirror, --batch, --largest-component, --device or --threads (also in
 * --name=value form) it is applied to o / *threads, its value consumed (*i
 * advanced) and 1 returned; 0 if it is none of them; -2 after printing a
 * usage error naming the option (cmd names the command in the hint). */
int mt_predict_parse_option(const char *cmd, int argc, char **argv, int *i, mt_predict_options *o, int *threads);

/* The `medtrain predict` command: argv[0] is "predict", then
 *   WEIGHTS.safetensors INPUT OUTPUT [--overlap X] [--mirror] [--batch N]
 *   [--largest-component] [--device D] [--threads N] [--quiet] [--help]
 * INPUT: a NIfTI file (3-D, or 4-D holding every channel; for a multi-channel
 * model also the channel-0 file <case>_0000.nii[.gz], whose siblings
 * <case>_0001.. are read with it) or a folder of such files (one case per
 * single file or per _0000 file; other _NNNN files are channels of those).
 * OUTPUT: for a file INPUT a .nii / .nii.gz path, or an existing folder
 * (<folder>/<case>.nii.gz); for a folder INPUT a folder (created if needed)
 * receiving <case>.nii.gz per case. The label map (u8) keeps the input's
 * header geometry (dim, pixdim, qform, sform and their codes) with the
 * scaling and cal_min/cal_max cleared; every file is written atomically.
 * Returns the exit status: 0; 2 for bad arguments; 1 when a case fails
 * (already written cases stay, no partial file). */
int mt_predict_cli(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
