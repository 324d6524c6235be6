/* CPU data augmentation for 3D patches (nnU-Net style), used by the loader
 * threads (data/loader.h). Single-threaded inside: the parallelism is across
 * loader workers.
 *
 * One sample is augmented in two phases:
 *   1. mt_augment_draw(): every random decision and parameter of the sample
 *      (which transforms apply, angles, scale, factors, sub-seeds) is drawn
 *      from the caller's mt_rng into an mt_augment_params;
 *   2. mt_augment_spatial() then mt_augment_intensity() apply them.
 * So a sample is a pure function of (config, rng state, source).
 *
 * Spatial transforms are ONE combined coordinate map. For an output voxel o
 * with centred offset u = o - (P - 1) / 2 the source position is
 *     x = centre + Fs * M * (G u + D(u))
 * where M = scale * R (rotations about the d, h, w axes, isotropic scale),
 * D is the elastic displacement (in output voxels, as batchgenerators adds
 * it before rotating and scaling), G the flips and rot90 (a signed
 * permutation; rot90 only in planes where the patch is cubic) and Fs the
 * flips the patch sampler already chose. Images are sampled trilinearly,
 * labels by nearest neighbour, both through the same x, so they stay
 * aligned. The source is the whole case volume around the patch centre the
 * sampler picked (the "larger region" of nnU-Net taken to its limit): a
 * rotated or zoomed-out patch shows real neighbouring tissue, never
 * artificial padding; only positions outside the volume itself read
 * pad_value (label 0), exactly as the sampler pads. When no rotation,
 * scaling or elastic deformation is drawn the map is an integer gather
 * (exact copy, flips/rot90 as index permutations).
 *
 * Intensity transforms follow nnU-Net v2's order and parameterisation:
 * Gaussian noise -> Gaussian blur -> multiplicative brightness -> contrast
 * -> low-resolution simulation -> inverted gamma -> gamma. (nnU-Net mirrors
 * last; here flips are folded into the coordinate map, which gives the same
 * distribution because every intensity transform is mirror-symmetric in law.)
 * Low resolution is simulated as in nnU-Net v2 (nearest-exact downsampling,
 * trilinear upsampling); blur kernels are truncated at 4 sigma with
 * half-sample reflected edges (as scipy.ndimage).
 * Intensity transforms never touch labels.
 */
#ifndef MT_AUGMENT_H
#define MT_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_AUGMENT_MAX_CHANNELS 16

/* Probabilities are per sample unless said otherwise; ranges are [lo, hi]. */
typedef struct {
    /* ---- spatial (one coordinate map) ---- */
    double p_rotation;       /* 0.2 */
    double rotation_deg[3];  /* 30, 30, 30: angle about axis d, h, w uniform in [-r, r] */
    double p_scale;          /* 0.2 */
    double scale_range[2];   /* 0.7, 1.4: coordinate scale (source region = scale x patch,
                              * < 1 zooms in); with prob. 1/2 drawn from [lo, 1], else [1, hi] */
    double p_elastic;        /* 0 (nnU-Net 3d default) */
    double elastic_alpha[2]; /* 0, 900: batchgenerators' alpha */
    double elastic_sigma[2]; /* 9, 13: smoothness in voxels (>= 1) */
    double p_flip[3];        /* 0.5 per axis */
    double p_rot90;          /* 0 (nnU-Net has none): k * 90 deg, k uniform in {1, 2, 3} */
    int rot90_planes[3];     /* planes (d,h), (d,w), (h,w) allowed: 1, 1, 1; a plane is
                              * used only when the patch has equal sizes in it */
    /* ---- intensity ---- */
    double p_noise;             /* 0.1 */
    double noise_std[2];        /* 0, 0.1: one std for all channels. nnU-Net calls this range
                                 * noise_variance but batchgenerators passes the drawn value to
                                 * np.random.normal as the standard deviation; so do we */
    double p_blur;              /* 0.2 */
    double blur_sigma[2];       /* 0.5, 1: drawn per channel and per axis */
    double blur_p_channel;      /* 0.5 */
    double p_brightness;        /* 0.15 */
    double brightness_range[2]; /* 0.75, 1.25: multiplier per channel */
    double p_contrast;          /* 0.15 */
    double contrast_range[2];   /* 0.75, 1.25: per channel, range preserved, [lo,1]/[1,hi] split */
    double p_lowres;            /* 0.25 */
    double lowres_zoom[2];      /* 0.5, 1: per channel, same on every axis */
    double lowres_p_channel;    /* 0.5 */
    double p_gamma_inverted;    /* 0.1: gamma on the negated image */
    double p_gamma;             /* 0.3 */
    double gamma_range[2];      /* 0.7, 1.5: per channel, stats retained, [lo,1]/[1,hi] split */
} mt_augment_config;

/* What was drawn for one sample (also the record tests inspect). */
typedef struct {
    int channels;
    int64_t patch[3];
    /* spatial */
    int rotated;
    double angle[3]; /* radians */
    int scaled;
    double scale;
    int elastic;
    double elastic_alpha, elastic_sigma;
    double elastic_std; /* displacement std in voxels implied by (alpha, sigma) */
    uint64_t elastic_seed;
    int flip[3];
    int rot90_k;         /* 0: none */
    int rot90_plane;     /* 0: (d,h), 1: (d,w), 2: (h,w) */
    int gather[3][3];    /* G: signed permutation (flips, rot90) */
    double matrix[3][3]; /* M = scale * R */
    /* intensity */
    int noise;
    double noise_std;
    uint64_t noise_seed;
    int blur[MT_AUGMENT_MAX_CHANNELS];
    double blur_sigma[MT_AUGMENT_MAX_CHANNELS][3];
    int brightness;
    double brightness_factor[MT_AUGMENT_MAX_CHANNELS];
    int contrast;
    double contrast_factor[MT_AUGMENT_MAX_CHANNELS];
    int lowres[MT_AUGMENT_MAX_CHANNELS];
    double lowres_zoom[MT_AUGMENT_MAX_CHANNELS];
    int gamma_inverted;
    double gamma_inv[MT_AUGMENT_MAX_CHANNELS];
    int gamma;
    double gamma_value[MT_AUGMENT_MAX_CHANNELS];
} mt_augment_params;

/* Where one output patch is read from: a whole case volume and the volume
 * coordinate of the output patch's centre voxel position (P - 1) / 2. */
typedef struct {
    const float *image;   /* (C, D, H, W) */
    const uint8_t *label; /* (1, D, H, W); may be NULL (no label output then) */
    int channels;
    int64_t shape[3]; /* D, H, W */
    double centre[3];
    int flipped[3];  /* Fs: the patch frame is mirrored along these volume axes */
    float pad_value; /* image value outside the volume (label 0 there) */
} mt_augment_source;

/* Scratch buffers, grown on demand and reused (one per thread). */
typedef struct {
    void *buf[4];
    size_t cap[4]; /* bytes */
} mt_augment_workspace;

/* nnU-Net-like defaults, listed in the struct comments. */
void mt_augment_config_default(mt_augment_config *cfg);
/* Every probability 0: mt_augment_* then copies the patch unchanged. */
void mt_augment_config_none(mt_augment_config *cfg);
/* MT_ERR_CONFIG naming the offending field. */
mt_status mt_augment_config_check(const mt_augment_config *cfg);

/* Draws one sample's parameters for a (channels, patch) output. channels
 * must lie in [1, MT_AUGMENT_MAX_CHANNELS]; cfg must pass the check. */
void mt_augment_draw(mt_augment_params *p, const mt_augment_config *cfg, int channels, const int64_t patch[3],
                     mt_rng *rng);
/* 1 when the output differs from a plain (unflipped, unrotated) crop of the
 * source around its centre, i.e. mt_augment_spatial must resample. */
int mt_augment_needs_resample(const mt_augment_params *p);

/* Writes the spatially transformed patch (see the top of this file).
 * label_out may be NULL. */
void mt_augment_spatial(float *image_out /* (C, d, h, w) */, uint8_t *label_out /* (1, d, h, w) */,
                        const mt_augment_source *src, const mt_augment_params *p, mt_augment_workspace *ws);
/* Applies the intensity transforms in place. */
void mt_augment_intensity(float *image /* (C, d, h, w) */, const mt_augment_params *p, mt_augment_workspace *ws);

void mt_augment_workspace_init(mt_augment_workspace *ws);
void mt_augment_workspace_free(mt_augment_workspace *ws);

#ifdef __cplusplus
}
#endif
#endif
