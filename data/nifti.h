/* NIfTI-1 and NIfTI-2 reading and writing (own reader/writer over zlib).
 *
 * Files: single-file ".nii" and ".nii.gz" (magic "n+1" / "n+2"); reading
 * also takes header/image pairs (magic "ni1" / "ni2": "x.hdr[.gz]" with the
 * voxels in "x.img[.gz]"). gzread reads compressed and plain files alike.
 * Little- and big-endian files are read (detected from sizeof_hdr, as the
 * standard says); files are always written little-endian. Header
 * extensions are skipped on read and not written.
 *
 * Datatypes: u8, i8, i16, u16, i32, u32, i64, u64, f32, f64. RGB, RGBA,
 * complex, float128 and binary files are rejected (MT_ERR_UNSUPPORTED naming
 * the file and the type). dim[0] must be 3, 4 or 5.
 *
 * AXIS CONVENTION. NIfTI stores voxel (i, j, k, t, u) with i (x) varying
 * fastest. medtrain views those bytes, without reordering, as a C-order
 * array with the dimensions reversed:
 *     3-D: tensor (D, H, W)       = (nz, ny, nx) = (dim[3], dim[2], dim[1])
 *     4-D: tensor (T, D, H, W)    with T = dim[4] (e.g. channels)
 *     5-D: tensor (U, T, D, H, W) with U = dim[5]
 * so tensor element [d][h][w] is NIfTI voxel (i, j, k) = (w, h, d).
 * Spacing in tensor order is (pixdim[3], pixdim[2], pixdim[1]) (see
 * mt_nifti_spacing). Affines below are kept in NIfTI's own convention (a
 * 4x4 matrix mapping the column (i, j, k, 1) to world (x, y, z, 1), RAS+ mm
 * as in nibabel); for tensor index (d, h, w) use (i, j, k) = (w, h, d).
 *
 * SCALING. scl_slope / scl_inter follow nibabel: a slope of 0 or a
 * non-finite slope means "no scaling"; a non-finite intercept reads as 0.
 * When scaling applies, value = stored * slope + inter and the result is
 * f32. The header keeps the on-disk slope/intercept and datatype (nibabel
 * keeps them in img.dataobj and sets the header's to NaN instead).
 *
 * A tensor read from a file always holds real-world values (scaling
 * applied). mt_nifti_write inverts the header's scaling (if any) and
 * encodes the values as the header's datatype.
 */
#ifndef MT_NIFTI_H
#define MT_NIFTI_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NIfTI datatype codes (nifti1.h). */
enum {
    MT_NIFTI_UNKNOWN = 0,
    MT_NIFTI_BINARY = 1,
    MT_NIFTI_UINT8 = 2,
    MT_NIFTI_INT16 = 4,
    MT_NIFTI_INT32 = 8,
    MT_NIFTI_FLOAT32 = 16,
    MT_NIFTI_COMPLEX64 = 32,
    MT_NIFTI_FLOAT64 = 64,
    MT_NIFTI_RGB24 = 128,
    MT_NIFTI_INT8 = 256,
    MT_NIFTI_UINT16 = 512,
    MT_NIFTI_UINT32 = 768,
    MT_NIFTI_INT64 = 1024,
    MT_NIFTI_UINT64 = 1280,
    MT_NIFTI_FLOAT128 = 1536,
    MT_NIFTI_COMPLEX128 = 1792,
    MT_NIFTI_COMPLEX256 = 2048,
    MT_NIFTI_RGBA32 = 2304
};

/* Header fields, version-independent (NIfTI-2 widths). Reading fills every
 * field; writing takes every field except those it computes (sizeof_hdr,
 * magic, dim from the tensor, bitpix from datatype, vox_offset, glmax/glmin). */
typedef struct {
    int version;           /* 1 or 2: as read (writing takes the version argument) */
    int ndim;              /* dim[0]: 3..5 */
    int64_t dim[8];        /* dim[1..ndim] >= 1; unused entries 1 */
    double pixdim[8];      /* pixdim[0] = qfac (+-1); pixdim[1..3] voxel size (mm) */
    int datatype;          /* MT_NIFTI_* on disk; 0 when writing: from the tensor dtype */
    int bitpix;            /* bits per voxel (as read) */
    int64_t vox_offset;    /* as read */
    int swapped;           /* read: the file was big-endian */
    double scl_slope, scl_inter; /* as on disk (see SCALING above) */
    double cal_min, cal_max;
    double slice_duration, toffset;
    int64_t slice_start, slice_end;
    int slice_code, xyzt_units, dim_info;
    int intent_code;
    double intent_p1, intent_p2, intent_p3;
    char intent_name[17];
    char descrip[81];
    char aux_file[25];
    int qform_code, sform_code;  /* 0 unknown, 1 scanner, 2 aligned, 3 talairach, 4 mni */
    double quatern_b, quatern_c, quatern_d;
    double qoffset_x, qoffset_y, qoffset_z;
    double srow_x[4], srow_y[4], srow_z[4];
} mt_nifti_header;

typedef struct {
    mt_nifti_header hdr;
    mt_tensor *data; /* (D, H, W), (T, D, H, W) or (U, T, D, H, W): see AXIS CONVENTION */
} mt_nifti;

/* A header for new data: version 1, pixdim 1 mm with qfac 1, no scaling,
 * qform/sform codes 0, xyzt_units mm + s, datatype 0 (from the tensor). */
void mt_nifti_header_default(mt_nifti_header *hdr);

/* Reads and validates the header only (sizeof_hdr, magic, dim, datatype and
 * bitpix, vox_offset, pixdim). Errors name the file: MT_ERR_IO (missing,
 * unreadable, truncated), MT_ERR_FORMAT (corrupt header),
 * MT_ERR_UNSUPPORTED (RGB/complex/... data, dim[0] outside 3..5). */
mt_status mt_nifti_read_header(const char *path, mt_nifti_header *hdr);

/* Reads header and voxels; img->data is f32 holding real-world values
 * (scaling applied). Integers above 2^24 in magnitude round to the nearest
 * f32. A file with fewer voxel bytes than the header promises (checked
 * against the file size before allocating: exactly for plain files, by
 * deflate's best ratio for gzip), or a corrupt gzip stream (read to its end,
 * CRC included; bytes after the voxels are allowed, as in nibabel), is an
 * error naming the file. On error img->data is NULL. */
mt_status mt_nifti_read(const char *path, mt_nifti *img);

/* As mt_nifti_read, but keeps the on-disk type where medtrain has it and
 * the scaling is a no-op: u8 -> MT_U8; i8, i16, u16, i32 -> MT_I32 (exact);
 * every other type, or any file with effective scaling -> MT_F32. */
mt_status mt_nifti_read_native(const char *path, mt_nifti *img);

/* Reads a label map: img->data is u8, same shape. Every value (after
 * scaling, computed in double) must be an integer in 0..255, whatever the
 * on-disk type (f32 label files with values 0.0/1.0/2.0 are fine); otherwise
 * MT_ERR_FORMAT naming the file, the value and the voxel (i, j, k). */
mt_status mt_nifti_read_labels(const char *path, mt_nifti *img);

/* Releases img->data (the header needs no freeing). */
void mt_nifti_free(mt_nifti *img);

/* Writes img to path atomically (a temp file in the same directory,
 * fsync, rename over path, fsync of the directory; on error the temp file is
 * removed and path is untouched). version 1 or 2; gzip 1 writes a gzip
 * stream (level 6), 0 a plain file (the name is not checked against it).
 *  - dim/ndim come from img->data's shape (3..5 dims, reversed as in AXIS
 *    CONVENTION); the data may be any dtype, strided or not.
 *  - on-disk datatype: img->hdr.datatype if set (any supported type), else
 *    from the tensor (u8 -> UINT8, i32 -> INT32, f32/bf16 -> FLOAT32).
 *  - values are mapped through the inverse scaling (v - inter) / slope when
 *    the header's scaling is effective; for integer types they are rounded
 *    to nearest, and a NaN or a value outside the type's range is
 *    MT_ERR_INVALID naming the file and the value.
 *  - everything else (pixdim, qform, sform, codes, descrip, intent, ...)
 *    is written from img->hdr; NIfTI-1 stores it as float32 / int16 and a
 *    value that does not fit (dim > 32767, codes) is MT_ERR_INVALID. */
mt_status mt_nifti_write(const char *path, const mt_nifti *img, int version, int gzip);

/* ------------------------------------------------------------ geometry */

/* Voxel size in tensor order (D, H, W) = (pixdim[3], pixdim[2], pixdim[1]). */
void mt_nifti_spacing(const mt_nifti_header *hdr, double spacing_dhw[3]);

/* The qform affine (quaternion b, c, d with a = sqrt(1 - b^2 - c^2 - d^2),
 * qfac = pixdim[0] < 0 ? -1 : 1, pixdim[1..3] scaling, qoffset), whatever
 * qform_code says. As nifti1_io's nifti_quatern_to_mat44. */
void mt_nifti_qform_affine(const mt_nifti_header *hdr, double affine[4][4]);
/* The sform affine (srow_x/y/z, last row 0 0 0 1), whatever sform_code says. */
void mt_nifti_sform_affine(const mt_nifti_header *hdr, double affine[4][4]);
/* nibabel's get_best_affine (for sform/qform codes >= 0): the sform if
 * sform_code > 0, else the qform if qform_code > 0, else nibabel's base
 * affine: diag(-pixdim[1], pixdim[2], pixdim[3]) centred on the volume,
 * translation (+(nx-1)/2 px, -(ny-1)/2 py, -(nz-1)/2 pz) (NOT the NIfTI
 * standard's "method 1" diag(pixdim) without offset). Returns which one:
 * 2 sform, 1 qform, 0 base. */
int mt_nifti_best_affine(const mt_nifti_header *hdr, double affine[4][4]);

/* Sets srow_x/y/z from rows 0..2 of affine and sform_code = code. */
void mt_nifti_set_sform(mt_nifti_header *hdr, const double affine[4][4], int code);
/* Sets the quaternion, qoffset, qfac (pixdim[0]) and pixdim[1..3] from
 * affine (as nifti1_io's nifti_mat44_to_quatern: column norms give the
 * voxel size, the closest orthogonal matrix the rotation, a negative
 * determinant qfac = -1) and qform_code = code. Shears are lost (a qform
 * cannot hold them); keep such matrices in the sform. */
void mt_nifti_set_qform(mt_nifti_header *hdr, const double affine[4][4], int code);

/* Name ("uint8", "float32", ...; "code N" for unknown codes) and size in
 * bytes (0 for unsupported types) of a NIfTI datatype. */
const char *mt_nifti_datatype_name(int datatype);
int mt_nifti_datatype_size(int datatype);

#ifdef __cplusplus
}
#endif
#endif
