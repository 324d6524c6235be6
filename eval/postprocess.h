/* From network outputs to label maps, and label-map postprocessing.
 *
 *  - argmax over classes (ties: the lowest class index, as numpy/torch);
 *  - sigmoid threshold per channel: voxel on where sigmoid(score) >= t
 *    (MONAI AsDiscrete(threshold=t)); for probabilities: score >= t;
 *  - largest connected component per foreground class (nnU-Net's
 *    remove_all_but_largest_component, MONAI KeepLargestConnectedComponent):
 *    for each selected class, voxels of that class outside its largest
 *    connected component become background (0). Connectivity 26 (faces,
 *    edges and corners: the default of nnU-Net v2 / MONAI / skimage) or 6
 *    (faces only: scipy.ndimage.label's default). Components of equal size:
 *    the one whose first voxel comes first in row-major order is kept.
 */
#ifndef MT_EVAL_POSTPROCESS_H
#define MT_EVAL_POSTPROCESS_H

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* labels (D, H, W) u8 = argmax over K of scores (K, D, H, W) (any float
 * dtype, any device). K must be 1..256. */
mt_status mt_eval_argmax(mt_tensor **labels /* (D, H, W) u8 */,
                         const mt_tensor *scores /* (K, D, H, W) */);

/* masks (K, D, H, W) u8 in {0, 1}: sigmoid(scores) >= threshold when
 * scores_are_logits, else scores >= threshold. threshold in (0, 1). */
mt_status mt_eval_threshold(mt_tensor **masks /* (K, D, H, W) u8 */,
                            const mt_tensor *scores /* (K, D, H, W) */, double threshold,
                            int scores_are_logits);

/* In place on a host label map (u8 or i32, contiguous): keeps only the
 * largest connected component of each class in classes[n_classes] (NULL: every
 * label value > 0 present in the map). connectivity: 6 or 26. */
mt_status mt_eval_keep_largest_component(mt_tensor *labels /* (D, H, W) */, const int *classes,
                                         int n_classes, int connectivity);

#ifdef __cplusplus
}
#endif
#endif
