/* Medical Segmentation Decathlon / nnU-Net dataset folders, and splits.
 *
 * A dataset folder holds dataset.json, imagesTr/ and labelsTr/ (NIfTI,
 * .nii.gz or .nii). dataset.json comes in two styles, told apart by its
 * content:
 *
 *  - MSD (and nnU-Net v1): "modality": {"0": "MRI", ...}, "labels":
 *    {"0": "background", "1": "Anterior", ...}, "numTraining", and
 *    "training": [{"image": "./imagesTr/x.nii.gz", "label":
 *    "./labelsTr/x.nii.gz"}, ...]. The listed image is either one file
 *    (3-D for one channel, or 4-D (C, D, H, W) holding all channels, as
 *    MSD's BraTS) or, when that file is absent, nnU-Net v1's per-channel
 *    files x_0000.nii.gz .. x_000{C-1}.nii.gz beside it.
 *  - nnU-Net v2: "channel_names": {"0": "T2", "1": "ADC"}, "labels":
 *    {"background": 0, "PZ": 1, ...}, "numTraining", "file_ending":
 *    ".nii.gz", no case list: cases are discovered in imagesTr/ as
 *    <case>_<XXXX><file_ending> (XXXX = channel, 4 digits, 0000 .. C-1),
 *    with the label labelsTr/<case><file_ending>. Region-based labels
 *    (a label mapped to a list of values) are not supported.
 *
 * In both styles labels must be the values 0 .. K-1 (K <= 256), each named
 * once; numTraining, where present, must equal the number of cases. Hidden
 * files (names starting with '.', such as macOS "._*" resource forks) in
 * imagesTr/ are skipped. Every image and label file must exist: a missing
 * one is an error naming it. MSD's "test" list (imagesTs/) is not read.
 *
 * DICOM is not read: convert it with dcm2niix first (docs/data.md).
 */
#ifndef MT_MSD_H
#define MT_MSD_H

#include "core/status.h"
#include "core/tensor.h"
#include "data/nifti.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MT_MSD_STYLE_MSD = 0, MT_MSD_STYLE_NNUNET_V2 = 1 } mt_msd_style;

typedef struct {
    char *id;       /* case id: the image file name without channel suffix and ending */
    int num_files;  /* 1 (one file holds every channel) or the channel count */
    char **images;  /* num_files paths, channel order */
    char *label;    /* labelsTr/<id><ending> */
} mt_msd_case;

typedef struct {
    char *root;             /* the folder as given */
    char *json_path;        /* <root>/dataset.json */
    char *name;             /* "name" from dataset.json ("" if absent) */
    mt_msd_style style;
    char *file_ending;      /* ".nii.gz" or ".nii" */
    int num_channels;
    char **channel_names;   /* [num_channels] */
    int num_classes;        /* K: labels 0 .. K-1, background included */
    char **class_names;     /* [num_classes], indexed by label value */
    int num_cases;
    mt_msd_case *cases;     /* MSD: in dataset.json order; v2: sorted by id */
} mt_msd_dataset;

/* Opens the dataset folder root: parses dataset.json, lists the cases and
 * checks that every file exists. Errors name dataset.json (with line:column
 * for content errors) or the missing file. On error ds is left empty. */
mt_status mt_msd_open(mt_msd_dataset *ds, const char *root);
void mt_msd_free(mt_msd_dataset *ds);

/* Index of the case with that id, or -1. */
int mt_msd_find(const mt_msd_dataset *ds, const char *id);

/* Loads case i:
 *   *image: (C, D, H, W) f32, real-world intensities (scaling applied);
 *   *label: (1, D, H, W) u8 with values in 0 .. num_classes-1 (pass NULL
 *           to skip the label);
 *   *hdr:   the first image file's header (may be NULL): its geometry
 *           (spacing, affine) is the case's.
 * Every channel and the label must have the same spatial shape and voxel
 * size (relative tolerance 1e-4), as nnU-Net checks; origin and direction
 * are not compared (nnU-Net only warns). Errors name the file(s). */
mt_status mt_msd_load_case(const mt_msd_dataset *ds, int i,
                           mt_tensor **image /* (C, D, H, W) f32 */,
                           mt_tensor **label /* (1, D, H, W) u8 */, mt_nifti_header *hdr);

/* ------------------------------------------------------------- splits */

typedef struct {
    int n;
    char **ids;
} mt_msd_id_list;

typedef struct {
    mt_msd_id_list holdout; /* reported results only (may be empty) */
    mt_msd_id_list dev;     /* training and tuning */
    int num_folds;
    mt_msd_id_list *train;  /* [num_folds] */
    mt_msd_id_list *val;    /* [num_folds] */
} mt_msd_splits;

/* Reads a splits file in one of two forms:
 *  - {"holdout": [ids], "dev": [ids], "folds": [{"train": [ids], "val":
 *    [ids]}, ...], ...other keys ignored} (shared/data/.../splits.json);
 *    holdout may be absent (empty);
 *  - nnU-Net's splits_final.json: [{"train": [...], "val": [...]}, ...];
 *    dev is then the union of the folds' cases (first-seen order), no holdout.
 * and checks its consistency: no id twice in a list; holdout and dev
 * disjoint; in every fold, train and val disjoint with train + val = dev;
 * the folds' val lists pairwise disjoint. Errors name the file and the id. */
mt_status mt_msd_splits_read(mt_msd_splits *s, const char *path);
/* Checks that every id of s is a case of ds; errors name path and the id. */
mt_status mt_msd_splits_check(const mt_msd_splits *s, const mt_msd_dataset *ds, const char *path);
void mt_msd_splits_free(mt_msd_splits *s);

#ifdef __cplusplus
}
#endif
#endif
