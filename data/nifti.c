/* NIfTI-1 / NIfTI-2 reader and writer: see data/nifti.h.
 *
 * Headers are decoded field by field from their byte offsets (nifti1.h /
 * nifti2.h layouts), swapping bytes for big-endian files, into the
 * version-independent mt_nifti_header. Voxels are decoded in chunks through
 * double (exact for every supported integer type up to 2^53), then scaled and
 * stored as the requested medtrain dtype. Writing encodes chunks of the
 * tensor the other way and streams them through gzwrite (mode "wbT" writes a
 * plain file) into a temp file that is renamed over the destination.
 */
#include "data/nifti.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define N1_HDR 348
#define N2_HDR 540
#define CHUNK 65536 /* voxels decoded/encoded per step */
#define MAX_VOX_OFFSET ((int64_t)1 << 40)

/* ------------------------------------------------------------ datatypes */

typedef struct {
    int code;
    const char *name;
    int size;      /* bytes; 0 = unsupported */
    int bitpix;
    int is_int, is_signed;
} dtype_info;

static const dtype_info g_types[] = {
    {MT_NIFTI_UINT8, "uint8", 1, 8, 1, 0},       {MT_NIFTI_INT8, "int8", 1, 8, 1, 1},
    {MT_NIFTI_INT16, "int16", 2, 16, 1, 1},      {MT_NIFTI_UINT16, "uint16", 2, 16, 1, 0},
    {MT_NIFTI_INT32, "int32", 4, 32, 1, 1},      {MT_NIFTI_UINT32, "uint32", 4, 32, 1, 0},
    {MT_NIFTI_INT64, "int64", 8, 64, 1, 1},      {MT_NIFTI_UINT64, "uint64", 8, 64, 1, 0},
    {MT_NIFTI_FLOAT32, "float32", 4, 32, 0, 1},  {MT_NIFTI_FLOAT64, "float64", 8, 64, 0, 1},
    /* known but unsupported */
    {MT_NIFTI_BINARY, "binary (1 bit)", 0, 1, 0, 0},
    {MT_NIFTI_COMPLEX64, "complex64", 0, 64, 0, 0},
    {MT_NIFTI_RGB24, "rgb24", 0, 24, 0, 0},
    {MT_NIFTI_FLOAT128, "float128", 0, 128, 0, 0},
    {MT_NIFTI_COMPLEX128, "complex128", 0, 128, 0, 0},
    {MT_NIFTI_COMPLEX256, "complex256", 0, 256, 0, 0},
    {MT_NIFTI_RGBA32, "rgba32", 0, 32, 0, 0},
};

static const dtype_info *find_type(int code) {
    for (size_t i = 0; i < sizeof g_types / sizeof *g_types; i++)
        if (g_types[i].code == code) return &g_types[i];
    return NULL;
}

const char *mt_nifti_datatype_name(int datatype) {
    static _Thread_local char buf[32];
    const dtype_info *t = find_type(datatype);
    if (t) return t->name;
    snprintf(buf, sizeof buf, "code %d", datatype);
    return buf;
}

int mt_nifti_datatype_size(int datatype) {
    const dtype_info *t = find_type(datatype);
    return t ? t->size : 0;
}

/* ------------------------------------------------------------ bytes */

static void load_bytes(void *dst, const uint8_t *src, int n, int swap) {
    if (!swap) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    uint8_t *d = dst;
    for (int i = 0; i < n; i++) d[i] = src[n - 1 - i];
}

static int16_t rd_i16(const uint8_t *b, int off, int sw) {
    int16_t v;
    load_bytes(&v, b + off, 2, sw);
    return v;
}
static int32_t rd_i32(const uint8_t *b, int off, int sw) {
    int32_t v;
    load_bytes(&v, b + off, 4, sw);
    return v;
}
static int64_t rd_i64(const uint8_t *b, int off, int sw) {
    int64_t v;
    load_bytes(&v, b + off, 8, sw);
    return v;
}
static double rd_f32(const uint8_t *b, int off, int sw) {
    float v;
    load_bytes(&v, b + off, 4, sw);
    return v;
}
static double rd_f64(const uint8_t *b, int off, int sw) {
    double v;
    load_bytes(&v, b + off, 8, sw);
    return v;
}
static void rd_str(char *dst, const uint8_t *b, int off, int n) {
    memcpy(dst, b + off, (size_t)n);
    dst[n] = 0;
}

static int host_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* Little-endian stores (files are always written little-endian). */
static void store_le(uint8_t *dst, const void *src, int n) {
    load_bytes(dst, src, n, !host_little_endian());
}
static void wr_i16(uint8_t *b, int off, int16_t v) { store_le(b + off, &v, 2); }
static void wr_i32(uint8_t *b, int off, int32_t v) { store_le(b + off, &v, 4); }
static void wr_i64(uint8_t *b, int off, int64_t v) { store_le(b + off, &v, 8); }
static void wr_f32(uint8_t *b, int off, double v) {
    float f = (float)v;
    store_le(b + off, &f, 4);
}
static void wr_f64(uint8_t *b, int off, double v) { store_le(b + off, &v, 8); }
static void wr_str(uint8_t *b, int off, const char *s, int n) {
    size_t len = strnlen(s, (size_t)n);
    memcpy(b + off, s, len); /* the rest stays zero */
}

/* ------------------------------------------------------------ header */

void mt_nifti_header_default(mt_nifti_header *hdr) {
    memset(hdr, 0, sizeof *hdr);
    hdr->version = 1;
    hdr->ndim = 3;
    for (int i = 0; i < 8; i++) {
        hdr->dim[i] = 1;
        hdr->pixdim[i] = 1.0;
    }
    hdr->dim[0] = 3;
    hdr->scl_slope = 1.0;
    hdr->scl_inter = 0.0;
    hdr->xyzt_units = 2 | 8; /* NIFTI_UNITS_MM | NIFTI_UNITS_SEC */
    hdr->srow_x[0] = hdr->srow_y[1] = hdr->srow_z[2] = 1.0;
}

/* Decodes the fixed-size part of a header (hdr_size bytes in b). */
static void decode_header(mt_nifti_header *h, const uint8_t *b, int version, int sw) {
    memset(h, 0, sizeof *h);
    h->version = version;
    h->swapped = sw;
    if (version == 1) {
        h->dim_info = b[39];
        for (int i = 0; i < 8; i++) h->dim[i] = rd_i16(b, 40 + 2 * i, sw);
        h->intent_p1 = rd_f32(b, 56, sw);
        h->intent_p2 = rd_f32(b, 60, sw);
        h->intent_p3 = rd_f32(b, 64, sw);
        h->intent_code = rd_i16(b, 68, sw);
        h->datatype = rd_i16(b, 70, sw);
        h->bitpix = rd_i16(b, 72, sw);
        h->slice_start = rd_i16(b, 74, sw);
        for (int i = 0; i < 8; i++) h->pixdim[i] = rd_f32(b, 76 + 4 * i, sw);
        double vo = rd_f32(b, 108, sw);
        h->vox_offset = (isfinite(vo) && vo >= 0 && vo < (double)MAX_VOX_OFFSET && vo == floor(vo))
                            ? (int64_t)vo
                            : -1; /* validated below */
        h->scl_slope = rd_f32(b, 112, sw);
        h->scl_inter = rd_f32(b, 116, sw);
        h->slice_end = rd_i16(b, 120, sw);
        h->slice_code = b[122];
        h->xyzt_units = b[123];
        h->cal_max = rd_f32(b, 124, sw);
        h->cal_min = rd_f32(b, 128, sw);
        h->slice_duration = rd_f32(b, 132, sw);
        h->toffset = rd_f32(b, 136, sw);
        rd_str(h->descrip, b, 148, 80);
        rd_str(h->aux_file, b, 228, 24);
        h->qform_code = rd_i16(b, 252, sw);
        h->sform_code = rd_i16(b, 254, sw);
        h->quatern_b = rd_f32(b, 256, sw);
        h->quatern_c = rd_f32(b, 260, sw);
        h->quatern_d = rd_f32(b, 264, sw);
        h->qoffset_x = rd_f32(b, 268, sw);
        h->qoffset_y = rd_f32(b, 272, sw);
        h->qoffset_z = rd_f32(b, 276, sw);
        for (int i = 0; i < 4; i++) {
            h->srow_x[i] = rd_f32(b, 280 + 4 * i, sw);
            h->srow_y[i] = rd_f32(b, 296 + 4 * i, sw);
            h->srow_z[i] = rd_f32(b, 312 + 4 * i, sw);
        }
        rd_str(h->intent_name, b, 328, 16);
    } else {
        h->datatype = rd_i16(b, 12, sw);
        h->bitpix = rd_i16(b, 14, sw);
        for (int i = 0; i < 8; i++) h->dim[i] = rd_i64(b, 16 + 8 * i, sw);
        h->intent_p1 = rd_f64(b, 80, sw);
        h->intent_p2 = rd_f64(b, 88, sw);
        h->intent_p3 = rd_f64(b, 96, sw);
        for (int i = 0; i < 8; i++) h->pixdim[i] = rd_f64(b, 104 + 8 * i, sw);
        int64_t vo = rd_i64(b, 168, sw);
        h->vox_offset = (vo >= 0 && vo < MAX_VOX_OFFSET) ? vo : -1;
        h->scl_slope = rd_f64(b, 176, sw);
        h->scl_inter = rd_f64(b, 184, sw);
        h->cal_max = rd_f64(b, 192, sw);
        h->cal_min = rd_f64(b, 200, sw);
        h->slice_duration = rd_f64(b, 208, sw);
        h->toffset = rd_f64(b, 216, sw);
        h->slice_start = rd_i64(b, 224, sw);
        h->slice_end = rd_i64(b, 232, sw);
        rd_str(h->descrip, b, 240, 80);
        rd_str(h->aux_file, b, 320, 24);
        h->qform_code = rd_i32(b, 344, sw);
        h->sform_code = rd_i32(b, 348, sw);
        h->quatern_b = rd_f64(b, 352, sw);
        h->quatern_c = rd_f64(b, 360, sw);
        h->quatern_d = rd_f64(b, 368, sw);
        h->qoffset_x = rd_f64(b, 376, sw);
        h->qoffset_y = rd_f64(b, 384, sw);
        h->qoffset_z = rd_f64(b, 392, sw);
        for (int i = 0; i < 4; i++) {
            h->srow_x[i] = rd_f64(b, 400 + 8 * i, sw);
            h->srow_y[i] = rd_f64(b, 432 + 8 * i, sw);
            h->srow_z[i] = rd_f64(b, 464 + 8 * i, sw);
        }
        h->slice_code = rd_i32(b, 496, sw);
        h->xyzt_units = rd_i32(b, 500, sw);
        h->intent_code = rd_i32(b, 504, sw);
        rd_str(h->intent_name, b, 508, 16);
        h->dim_info = b[524];
    }
    h->ndim = (int)h->dim[0];
}

/* Validates a decoded header. pair: the voxels live in a separate .img file. */
static mt_status validate_header(const char *path, mt_nifti_header *h, int pair) {
    int64_t d0 = h->dim[0];
    if (d0 < 1 || d0 > 7)
        return mt_error_set(MT_ERR_FORMAT, "%s: corrupt NIfTI header: dim[0] = %lld (must be 1..7)",
                            path, (long long)d0);
    if (d0 < 3 || d0 > 5)
        return mt_error_set(MT_ERR_UNSUPPORTED,
                            "%s: %lld-D image: medtrain reads 3-D, 4-D and 5-D NIfTI files", path,
                            (long long)d0);
    for (int i = 1; i <= d0; i++)
        if (h->dim[i] < 1)
            return mt_error_set(MT_ERR_FORMAT,
                                "%s: corrupt NIfTI header: dim[%d] = %lld (must be >= 1)", path, i,
                                (long long)h->dim[i]);
    for (int i = (int)d0 + 1; i < 8; i++) h->dim[i] = 1;
    const dtype_info *t = find_type(h->datatype);
    if (!t)
        return mt_error_set(MT_ERR_FORMAT, "%s: corrupt NIfTI header: unknown datatype code %d",
                            path, h->datatype);
    if (t->size == 0)
        return mt_error_set(MT_ERR_UNSUPPORTED,
                            "%s: datatype %s is not supported (medtrain reads uint8, int8, int16, "
                            "uint16, int32, uint32, int64, uint64, float32 and float64 images)",
                            path, t->name);
    if (h->bitpix != t->bitpix)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: corrupt NIfTI header: bitpix = %d disagrees with datatype %s (%d bits)",
                            path, h->bitpix, t->name, t->bitpix);
    /* voxel count and byte size without overflow (< 2^62 bytes) */
    int64_t n = 1;
    for (int i = 1; i <= d0; i++) {
        if (h->dim[i] > ((int64_t)1 << 62) / t->size / n)
            return mt_error_set(MT_ERR_FORMAT, "%s: corrupt NIfTI header: dims give an impossible size",
                                path);
        n *= h->dim[i];
    }
    int hdr_size = h->version == 1 ? N1_HDR : N2_HDR;
    if (h->vox_offset < 0)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: corrupt NIfTI header: vox_offset is not a valid byte offset", path);
    if (!pair && h->vox_offset < hdr_size + 4)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: corrupt NIfTI header: vox_offset = %lld is inside the header "
                            "(a single-file NIfTI-%d needs >= %d)",
                            path, (long long)h->vox_offset, h->version, hdr_size + 4);
    for (int i = 1; i <= 3; i++)
        if (!isfinite(h->pixdim[i]) || h->pixdim[i] <= 0)
            return mt_error_set(MT_ERR_FORMAT,
                                "%s: pixdim[%d] = %g is not a positive voxel size", path, i,
                                h->pixdim[i]);
    if (h->qform_code > 0) {
        double q[] = {h->quatern_b, h->quatern_c, h->quatern_d,
                      h->qoffset_x, h->qoffset_y, h->qoffset_z, h->pixdim[0]};
        for (int i = 0; i < 7; i++)
            if (!isfinite(q[i]))
                return mt_error_set(MT_ERR_FORMAT, "%s: corrupt NIfTI header: non-finite qform",
                                    path);
    }
    if (h->sform_code > 0)
        for (int i = 0; i < 4; i++)
            if (!isfinite(h->srow_x[i]) || !isfinite(h->srow_y[i]) || !isfinite(h->srow_z[i]))
                return mt_error_set(MT_ERR_FORMAT, "%s: corrupt NIfTI header: non-finite sform",
                                    path);
    return MT_OK;
}

/* ------------------------------------------------------------ reading */

/* zlib's message without the "<path>: " it puts in front. */
static const char *zlib_msg(const char *path, const char *m) {
    size_t n = strlen(path);
    if (!m || !*m) return "unknown error";
    if (strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ') return m + n + 2;
    return m;
}

/* A stream error. zlib decompresses ahead of what was asked for, so where in
 * the file the damage lies is not known precisely. */
static mt_status gz_fail(const char *path, gzFile f) {
    int errnum = 0;
    const char *m = gzerror(f, &errnum);
    if (errnum == Z_ERRNO)
        return mt_error_set(MT_ERR_IO, "%s: read error: %s", path, strerror(errno));
    if (errnum == Z_BUF_ERROR)
        return mt_error_set(MT_ERR_IO, "%s: truncated gzip stream (zlib: %s)", path, zlib_msg(path, m));
    return mt_error_set(MT_ERR_FORMAT, "%s: corrupt gzip stream (zlib: %s)", path, zlib_msg(path, m));
}

/* Reads exactly n bytes; *got receives how many were read before EOF.
 * Returns MT_OK (check *got) or an error on a stream error. */
static mt_status gz_read_full(const char *path, gzFile f, void *buf, size_t n, size_t *got) {
    size_t done = 0;
    while (done < n) {
        size_t want = n - done;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, (char *)buf + done, (unsigned)want);
        if (r < 0) {
            *got = done;
            return gz_fail(path, f);
        }
        if (r == 0) {
            int errnum = 0;
            gzerror(f, &errnum);
            if (errnum != Z_OK && errnum != Z_BUF_ERROR) {
                *got = done;
                return gz_fail(path, f);
            }
            break;
        }
        done += (size_t)r;
    }
    *got = done;
    return MT_OK;
}

/* zlib reports a truncated gzip stream as Z_BUF_ERROR ("unexpected end of file"). */
static const char *gz_truncation_note(gzFile f) {
    int errnum = 0;
    const char *m = gzerror(f, &errnum);
    return (errnum == Z_BUF_ERROR && m) ? m : NULL;
}

static gzFile gz_open_read(const char *path, mt_status *st) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        *st = mt_error_set(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        *st = mt_error_set(MT_ERR_IO, "%s: is a directory, not a NIfTI file", path);
        return NULL;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        *st = mt_error_set(MT_ERR_IO, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(f, 1u << 17);
    *st = MT_OK;
    return f;
}

/* Reads and validates the header from an open stream positioned at 0.
 * Leaves the stream just after the fixed-size header. */
static mt_status read_header_stream(const char *path, gzFile f, mt_nifti_header *h, int *pair) {
    uint8_t b[N2_HDR];
    size_t got;
    MT_TRY(gz_read_full(path, f, b, 4, &got));
    if (got == 0) return mt_error_set(MT_ERR_IO, "%s: empty file, not a NIfTI image", path);
    if (got < 4) return mt_error_set(MT_ERR_IO, "%s: truncated: %zu bytes, not a NIfTI header", path, got);
    int version = 0, sw = 0;
    int32_t sz = rd_i32(b, 0, 0), szs = rd_i32(b, 0, 1);
    if (sz == N1_HDR || szs == N1_HDR) {
        version = 1;
        sw = sz != N1_HDR;
    } else if (sz == N2_HDR || szs == N2_HDR) {
        version = 2;
        sw = sz != N2_HDR;
    } else {
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: not a NIfTI file: sizeof_hdr is %d (NIfTI-1 has 348, NIfTI-2 540)",
                            path, sz);
    }
    int hdr_size = version == 1 ? N1_HDR : N2_HDR;
    MT_TRY(gz_read_full(path, f, b + 4, (size_t)hdr_size - 4, &got));
    if (got < (size_t)hdr_size - 4) {
        const char *z = gz_truncation_note(f);
        return mt_error_set(MT_ERR_IO, "%s: truncated NIfTI-%d header: %zu of %d bytes%s%s%s", path,
                            version, got + 4, hdr_size, z ? " (zlib: " : "", z ? zlib_msg(path, z) : "",
                            z ? ")" : "");
    }
    const uint8_t *magic = version == 1 ? b + 344 : b + 4;
    char single = version == 1 ? '1' : '2';
    if (magic[0] == 'n' && magic[1] == '+' && magic[2] == single && magic[3] == 0) {
        *pair = 0;
    } else if (magic[0] == 'n' && magic[1] == 'i' && magic[2] == single && magic[3] == 0) {
        *pair = 1;
    } else {
        char shown[20];
        int k = 0;
        for (int i = 0; i < 4; i++) {
            if (magic[i] >= 0x20 && magic[i] < 0x7f)
                shown[k++] = (char)magic[i];
            else
                k += snprintf(shown + k, sizeof shown - (size_t)k, "\\x%02x", magic[i]);
        }
        shown[k] = 0;
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: not a NIfTI-%d file: magic is \"%s\" (expected \"n+%c\" or \"ni%c\")",
                            path, version, shown, single, single);
    }
    if (version == 2 && memcmp(b + 8, "\r\n\032\n", 4) != 0)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: corrupt NIfTI-2 header: the magic's end-of-line check bytes are "
                            "altered (text-mode transfer?)",
                            path);
    decode_header(h, b, version, sw);
    return validate_header(path, h, *pair);
}

mt_status mt_nifti_read_header(const char *path, mt_nifti_header *hdr) {
    mt_status st;
    gzFile f = gz_open_read(path, &st);
    if (!f) return st;
    int pair = 0;
    st = read_header_stream(path, f, hdr, &pair);
    gzclose(f);
    return st;
}

/* The .img file of a .hdr/.img pair ("x.hdr" -> "x.img", "x.hdr.gz" ->
 * "x.img.gz", falling back to the other compression). */
static mt_status pair_image_path(const char *hdr_path, char **out) {
    size_t n = strlen(hdr_path);
    int gz = n > 7 && strcmp(hdr_path + n - 7, ".hdr.gz") == 0;
    int plain = n > 4 && strcmp(hdr_path + n - 4, ".hdr") == 0;
    if (!gz && !plain)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: header of a .hdr/.img pair (magic \"ni1\"/\"ni2\") but the name "
                            "does not end in .hdr or .hdr.gz",
                            hdr_path);
    size_t stem = n - (gz ? 7 : 4);
    char *a = malloc(stem + 8), *b = malloc(stem + 8);
    MT_CHECK(a && b);
    memcpy(a, hdr_path, stem);
    memcpy(b, hdr_path, stem);
    strcpy(a + stem, gz ? ".img.gz" : ".img");
    strcpy(b + stem, gz ? ".img" : ".img.gz");
    struct stat sb;
    if (stat(a, &sb) == 0) {
        free(b);
        *out = a;
        return MT_OK;
    }
    if (stat(b, &sb) == 0) {
        free(a);
        *out = b;
        return MT_OK;
    }
    mt_status st = mt_error_set(MT_ERR_IO, "%s: its image file %s is missing", hdr_path, a);
    free(a);
    free(b);
    return st;
}

/* Skips n bytes of the stream (header extensions) before the voxels at
 * vox_offset; a file that ends first is reported as truncated. */
static mt_status gz_skip(const char *path, gzFile f, int64_t n, int64_t vox_offset) {
    uint8_t buf[4096];
    while (n > 0) {
        size_t want = n > (int64_t)sizeof buf ? sizeof buf : (size_t)n;
        size_t got;
        MT_TRY(gz_read_full(path, f, buf, want, &got));
        if (got < want)
            return mt_error_set(MT_ERR_IO, "%s: truncated: the file ends before the voxel data at "
                                "vox_offset %lld", path, (long long)vox_offset);
        n -= (int64_t)got;
    }
    return MT_OK;
}

/* After the voxels: read the rest of a gzip stream so that zlib checks its
 * CRC and length; trailing bytes are allowed (as nibabel does). */
static mt_status gz_check_tail(const char *path, gzFile f) {
    if (gzdirect(f)) return MT_OK;
    uint8_t buf[8192];
    for (;;) {
        int r = gzread(f, buf, sizeof buf);
        if (r < 0) return gz_fail(path, f);
        if (r == 0) {
            int errnum = 0;
            gzerror(f, &errnum);
            return errnum == Z_OK ? MT_OK : gz_fail(path, f);
        }
    }
}

enum { OUT_F32, OUT_NATIVE, OUT_LABELS };

/* Effective scaling (nibabel): slope 0 or non-finite means none. */
static int scaling(const mt_nifti_header *h, double *slope, double *inter) {
    double s = h->scl_slope, i = h->scl_inter;
    if (s == 0 || !isfinite(s)) {
        *slope = 1;
        *inter = 0;
        return 0;
    }
    if (!isfinite(i)) i = 0;
    *slope = s;
    *inter = i;
    return !(s == 1 && i == 0);
}

/* Decodes n voxels of datatype dt from raw into doubles. */
static void decode_chunk(double *dst, const uint8_t *raw, int64_t n, int dt, int sw) {
#define DEC(T, SZ)                                                                         \
    for (int64_t k = 0; k < n; k++) {                                                      \
        T v;                                                                               \
        load_bytes(&v, raw + k * (SZ), (SZ), sw);                                          \
        dst[k] = (double)v;                                                                \
    }                                                                                      \
    break
    switch (dt) {
    case MT_NIFTI_UINT8: DEC(uint8_t, 1);
    case MT_NIFTI_INT8: DEC(int8_t, 1);
    case MT_NIFTI_INT16: DEC(int16_t, 2);
    case MT_NIFTI_UINT16: DEC(uint16_t, 2);
    case MT_NIFTI_INT32: DEC(int32_t, 4);
    case MT_NIFTI_UINT32: DEC(uint32_t, 4);
    case MT_NIFTI_INT64: DEC(int64_t, 8);
    case MT_NIFTI_UINT64: DEC(uint64_t, 8);
    case MT_NIFTI_FLOAT32: DEC(float, 4);
    case MT_NIFTI_FLOAT64: DEC(double, 8);
    default: MT_CHECK_MSG(0, "nifti: decode of datatype %d", dt);
    }
#undef DEC
}

/* (i, j, k[, t[, u]]) of flat voxel index f, for messages. */
static void voxel_str(char *buf, size_t n, const mt_nifti_header *h, int64_t f) {
    int k = 0;
    k += snprintf(buf + k, n - (size_t)k, "(");
    for (int a = 1; a <= h->ndim; a++) {
        int64_t c = f % h->dim[a];
        f /= h->dim[a];
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", a > 1 ? ", " : "", (long long)c);
        if ((size_t)k >= n) return;
    }
    snprintf(buf + k, n - (size_t)k, ")");
}

static mt_status read_impl(const char *path, mt_nifti *img, int mode) {
    img->data = NULL;
    mt_nifti_header *h = &img->hdr;
    mt_status st;
    gzFile f = gz_open_read(path, &st);
    if (!f) return st;
    int pair = 0;
    char *img_path = NULL;
    const char *data_path = path;
    st = read_header_stream(path, f, h, &pair);
    if (st != MT_OK) {
        gzclose(f);
        return st;
    }
    int hdr_size = h->version == 1 ? N1_HDR : N2_HDR;
    int64_t skip = h->vox_offset - hdr_size;
    if (pair) {
        gzclose(f);
        st = pair_image_path(path, &img_path);
        if (st != MT_OK) return st;
        data_path = img_path;
        f = gz_open_read(data_path, &st);
        if (!f) {
            free(img_path);
            return st;
        }
        skip = h->vox_offset;
    }
    const dtype_info *t = find_type(h->datatype);
    int64_t n = 1;
    for (int a = 1; a <= h->ndim; a++) n *= h->dim[a];
    size_t nbytes = (size_t)n * (size_t)t->size;
    double slope, inter;
    int scaled = scaling(h, &slope, &inter);

    mt_dtype out_dt = MT_F32;
    if (mode == OUT_LABELS) out_dt = MT_U8;
    if (mode == OUT_NATIVE && !scaled) {
        if (h->datatype == MT_NIFTI_UINT8)
            out_dt = MT_U8;
        else if (h->datatype == MT_NIFTI_INT8 || h->datatype == MT_NIFTI_INT16 ||
                 h->datatype == MT_NIFTI_UINT16 || h->datatype == MT_NIFTI_INT32)
            out_dt = MT_I32;
    }
    /* the file must be able to hold what the header promises: exactly for
     * plain files, by deflate's best ratio (1032:1) for gzip streams; checked
     * before allocating (a corrupt header must not ask for terabytes) */
    mt_tensor *out = NULL;
    struct stat sb;
    if (stat(data_path, &sb) == 0) {
        double fsize = (double)sb.st_size, need = (double)h->vox_offset + (double)nbytes;
        if (gzdirect(f) && fsize < need) {
            st = mt_error_set(MT_ERR_IO,
                              "%s: truncated: the header promises %zu bytes of %s voxels (%lld voxels) "
                              "at offset %lld, the file has %lld bytes",
                              data_path, nbytes, t->name, (long long)n, (long long)h->vox_offset,
                              (long long)sb.st_size);
            goto done;
        }
        if (!gzdirect(f) && need > fsize * 1100.0 + 65536.0) {
            st = mt_error_set(MT_ERR_IO,
                              "%s: truncated or corrupt: the header promises %zu bytes of %s voxels, "
                              "more than a %lld-byte gzip file can hold",
                              data_path, nbytes, t->name, (long long)sb.st_size);
            goto done;
        }
    }
    int64_t shape[MT_MAX_DIMS];
    for (int a = 0; a < h->ndim; a++) shape[a] = h->dim[h->ndim - a];
    out = mt_tensor_new(out_dt, h->ndim, shape, MT_DEVICE_CPU);

    if (skip > 0) {
        st = gz_skip(data_path, f, skip, h->vox_offset);
        if (st != MT_OK) goto done;
    }
    /* stream the voxels in chunks: raw bytes -> double -> scaled -> output */
    {
        uint8_t *raw = malloc((size_t)CHUNK * 8);
        double *vals = malloc((size_t)CHUNK * sizeof(double));
        MT_CHECK_MSG(raw && vals, "nifti: out of host memory");
        void *dst = mt_tensor_data(out);
        size_t total = 0;
        for (int64_t k0 = 0; k0 < n && st == MT_OK; k0 += CHUNK) {
            int64_t m = n - k0 < CHUNK ? n - k0 : CHUNK;
            size_t want = (size_t)m * (size_t)t->size, got;
            st = gz_read_full(data_path, f, raw, want, &got);
            total += got;
            if (st != MT_OK) break;
            if (got < want) {
                const char *z = gz_truncation_note(f);
                st = mt_error_set(MT_ERR_IO,
                                  "%s: truncated: the header promises %zu bytes of %s voxels "
                                  "(%lld voxels) at offset %lld, the file holds %zu%s%s%s",
                                  data_path, nbytes, t->name, (long long)n,
                                  (long long)h->vox_offset, total,
                                  z ? " (zlib: " : "", z ? zlib_msg(data_path, z) : "",
                                  z ? ")" : "");
                break;
            }
            decode_chunk(vals, raw, m, h->datatype, h->swapped);
            if (out_dt == MT_F32) {
                float *o = (float *)dst + k0;
                for (int64_t k = 0; k < m; k++) o[k] = (float)(vals[k] * slope + inter);
            } else if (out_dt == MT_I32) {
                int32_t *o = (int32_t *)dst + k0;
                for (int64_t k = 0; k < m; k++) o[k] = (int32_t)vals[k];
            } else if (mode == OUT_NATIVE) { /* u8 native */
                uint8_t *o = (uint8_t *)dst + k0;
                for (int64_t k = 0; k < m; k++) o[k] = (uint8_t)vals[k];
            } else { /* labels */
                uint8_t *o = (uint8_t *)dst + k0;
                for (int64_t k = 0; k < m; k++) {
                    double v = scaled ? vals[k] * slope + inter : vals[k];
                    if (!(v >= 0 && v <= 255 && v == floor(v))) {
                        char vox[96];
                        voxel_str(vox, sizeof vox, h, k0 + k);
                        st = mt_error_set(MT_ERR_FORMAT,
                                          "%s: label value %.9g at voxel %s is not an integer in "
                                          "0..255 (a label map must hold class indices)",
                                          path, v, vox);
                        break;
                    }
                    o[k] = (uint8_t)v;
                }
            }
        }
        free(raw);
        free(vals);
    }
    if (st == MT_OK) st = gz_check_tail(data_path, f);
done:
    gzclose(f);
    free(img_path);
    if (st != MT_OK) {
        mt_tensor_release(out);
        return st;
    }
    img->data = out;
    return MT_OK;
}

mt_status mt_nifti_read(const char *path, mt_nifti *img) { return read_impl(path, img, OUT_F32); }

mt_status mt_nifti_read_native(const char *path, mt_nifti *img) {
    return read_impl(path, img, OUT_NATIVE);
}

mt_status mt_nifti_read_labels(const char *path, mt_nifti *img) {
    return read_impl(path, img, OUT_LABELS);
}

void mt_nifti_free(mt_nifti *img) {
    if (!img) return;
    mt_tensor_release(img->data);
    img->data = NULL;
}

/* ------------------------------------------------------------ writing */

/* Encodes header h (dims already set) as version 1 or 2 into b. */
static mt_status encode_header(const char *path, uint8_t *b, const mt_nifti_header *h, int version,
                               int datatype, int bitpix) {
    if (version == 1) {
        memset(b, 0, N1_HDR + 4);
        for (int i = 0; i < 8; i++)
            if (h->dim[i] > INT16_MAX)
                return mt_error_set(MT_ERR_INVALID,
                                    "%s: dim[%d] = %lld does not fit NIfTI-1 (max 32767): write NIfTI-2",
                                    path, i, (long long)h->dim[i]);
        struct {
            const char *name;
            int64_t v;
        } shorts[] = {{"intent_code", h->intent_code}, {"slice_start", h->slice_start},
                      {"slice_end", h->slice_end},     {"qform_code", h->qform_code},
                      {"sform_code", h->sform_code}};
        for (size_t i = 0; i < sizeof shorts / sizeof *shorts; i++)
            if (shorts[i].v < INT16_MIN || shorts[i].v > INT16_MAX)
                return mt_error_set(MT_ERR_INVALID, "%s: %s = %lld does not fit NIfTI-1 (int16)",
                                    path, shorts[i].name, (long long)shorts[i].v);
        struct {
            const char *name;
            int v;
        } bytes[] = {{"dim_info", h->dim_info}, {"slice_code", h->slice_code},
                     {"xyzt_units", h->xyzt_units}};
        for (size_t i = 0; i < sizeof bytes / sizeof *bytes; i++)
            if (bytes[i].v < 0 || bytes[i].v > 255)
                return mt_error_set(MT_ERR_INVALID, "%s: %s = %d does not fit NIfTI-1 (one byte)",
                                    path, bytes[i].name, bytes[i].v);
        wr_i32(b, 0, N1_HDR);
        b[38] = 'r'; /* "regular", as nifti1_io and nibabel write */
        b[39] = (uint8_t)h->dim_info;
        for (int i = 0; i < 8; i++) wr_i16(b, 40 + 2 * i, (int16_t)h->dim[i]);
        wr_f32(b, 56, h->intent_p1);
        wr_f32(b, 60, h->intent_p2);
        wr_f32(b, 64, h->intent_p3);
        wr_i16(b, 68, (int16_t)h->intent_code);
        wr_i16(b, 70, (int16_t)datatype);
        wr_i16(b, 72, (int16_t)bitpix);
        wr_i16(b, 74, (int16_t)h->slice_start);
        for (int i = 0; i < 8; i++) wr_f32(b, 76 + 4 * i, h->pixdim[i]);
        wr_f32(b, 108, N1_HDR + 4);
        wr_f32(b, 112, h->scl_slope);
        wr_f32(b, 116, h->scl_inter);
        wr_i16(b, 120, (int16_t)h->slice_end);
        b[122] = (uint8_t)h->slice_code;
        b[123] = (uint8_t)h->xyzt_units;
        wr_f32(b, 124, h->cal_max);
        wr_f32(b, 128, h->cal_min);
        wr_f32(b, 132, h->slice_duration);
        wr_f32(b, 136, h->toffset);
        wr_str(b, 148, h->descrip, 80);
        wr_str(b, 228, h->aux_file, 24);
        wr_i16(b, 252, (int16_t)h->qform_code);
        wr_i16(b, 254, (int16_t)h->sform_code);
        wr_f32(b, 256, h->quatern_b);
        wr_f32(b, 260, h->quatern_c);
        wr_f32(b, 264, h->quatern_d);
        wr_f32(b, 268, h->qoffset_x);
        wr_f32(b, 272, h->qoffset_y);
        wr_f32(b, 276, h->qoffset_z);
        for (int i = 0; i < 4; i++) {
            wr_f32(b, 280 + 4 * i, h->srow_x[i]);
            wr_f32(b, 296 + 4 * i, h->srow_y[i]);
            wr_f32(b, 312 + 4 * i, h->srow_z[i]);
        }
        wr_str(b, 328, h->intent_name, 16);
        memcpy(b + 344, "n+1", 4);
    } else {
        memset(b, 0, N2_HDR + 4);
        if (h->dim_info < 0 || h->dim_info > 255)
            return mt_error_set(MT_ERR_INVALID, "%s: dim_info = %d does not fit one byte", path,
                                h->dim_info);
        wr_i32(b, 0, N2_HDR);
        memcpy(b + 4, "n+2\0\r\n\032\n", 8);
        wr_i16(b, 12, (int16_t)datatype);
        wr_i16(b, 14, (int16_t)bitpix);
        for (int i = 0; i < 8; i++) wr_i64(b, 16 + 8 * i, h->dim[i]);
        wr_f64(b, 80, h->intent_p1);
        wr_f64(b, 88, h->intent_p2);
        wr_f64(b, 96, h->intent_p3);
        for (int i = 0; i < 8; i++) wr_f64(b, 104 + 8 * i, h->pixdim[i]);
        wr_i64(b, 168, N2_HDR + 4);
        wr_f64(b, 176, h->scl_slope);
        wr_f64(b, 184, h->scl_inter);
        wr_f64(b, 192, h->cal_max);
        wr_f64(b, 200, h->cal_min);
        wr_f64(b, 208, h->slice_duration);
        wr_f64(b, 216, h->toffset);
        wr_i64(b, 224, h->slice_start);
        wr_i64(b, 232, h->slice_end);
        wr_str(b, 240, h->descrip, 80);
        wr_str(b, 320, h->aux_file, 24);
        wr_i32(b, 344, h->qform_code);
        wr_i32(b, 348, h->sform_code);
        wr_f64(b, 352, h->quatern_b);
        wr_f64(b, 360, h->quatern_c);
        wr_f64(b, 368, h->quatern_d);
        wr_f64(b, 376, h->qoffset_x);
        wr_f64(b, 384, h->qoffset_y);
        wr_f64(b, 392, h->qoffset_z);
        for (int i = 0; i < 4; i++) {
            wr_f64(b, 400 + 8 * i, h->srow_x[i]);
            wr_f64(b, 432 + 8 * i, h->srow_y[i]);
            wr_f64(b, 464 + 8 * i, h->srow_z[i]);
        }
        wr_i32(b, 496, h->slice_code);
        wr_i32(b, 500, h->xyzt_units);
        wr_i32(b, 504, h->intent_code);
        wr_str(b, 508, h->intent_name, 16);
        b[524] = (uint8_t)h->dim_info;
    }
    /* the 4 extension bytes after the header stay 0: no extensions */
    return MT_OK;
}

/* Encodes m doubles (real-world values) as datatype dt, little-endian. */
static mt_status encode_chunk(const char *path, uint8_t *raw, const double *v, int64_t m, int dt,
                              int scaled, double slope, double inter) {
    const dtype_info *t = find_type(dt);
    for (int64_t k = 0; k < m; k++) {
        double r = scaled ? (v[k] - inter) / slope : v[k];
        uint8_t *o = raw + k * t->size;
        if (t->is_int) {
            if (isnan(r))
                return mt_error_set(MT_ERR_INVALID, "%s: NaN cannot be stored as %s", path, t->name);
            double q = nearbyint(r);
            double lo, hi; /* representable range as doubles */
            switch (dt) {
            case MT_NIFTI_UINT8: lo = 0, hi = 255; break;
            case MT_NIFTI_INT8: lo = -128, hi = 127; break;
            case MT_NIFTI_INT16: lo = -32768, hi = 32767; break;
            case MT_NIFTI_UINT16: lo = 0, hi = 65535; break;
            case MT_NIFTI_INT32: lo = -2147483648.0, hi = 2147483647.0; break;
            case MT_NIFTI_UINT32: lo = 0, hi = 4294967295.0; break;
            case MT_NIFTI_INT64: lo = -9223372036854775808.0, hi = 9223372036854774784.0; break;
            default: lo = 0, hi = 18446744073709549568.0; break; /* uint64 */
            }
            if (!(q >= lo && q <= hi))
                return mt_error_set(MT_ERR_INVALID,
                                    "%s: value %.9g%s does not fit the file's datatype %s", path,
                                    v[k], scaled ? " (after inverse scaling)" : "", t->name);
            switch (dt) {
            case MT_NIFTI_UINT8: o[0] = (uint8_t)q; break;
            case MT_NIFTI_INT8: o[0] = (uint8_t)(int8_t)q; break;
            case MT_NIFTI_INT16: { int16_t x = (int16_t)q; store_le(o, &x, 2); break; }
            case MT_NIFTI_UINT16: { uint16_t x = (uint16_t)q; store_le(o, &x, 2); break; }
            case MT_NIFTI_INT32: { int32_t x = (int32_t)q; store_le(o, &x, 4); break; }
            case MT_NIFTI_UINT32: { uint32_t x = (uint32_t)q; store_le(o, &x, 4); break; }
            case MT_NIFTI_INT64: { int64_t x = (int64_t)q; store_le(o, &x, 8); break; }
            default: { uint64_t x = (uint64_t)q; store_le(o, &x, 8); break; }
            }
        } else if (dt == MT_NIFTI_FLOAT32) {
            if (isfinite(r) && fabs(r) > FLT_MAX)
                return mt_error_set(MT_ERR_INVALID, "%s: value %.9g does not fit float32", path, r);
            float x = (float)r;
            store_le(o, &x, 4);
        } else {
            store_le(o, &r, 8);
        }
    }
    return MT_OK;
}

static unsigned g_tmp_counter;

/* fsync of the directory holding path (best effort where unsupported). */
static mt_status fsync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    MT_CHECK(dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    mt_status st = MT_OK;
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
            st = mt_error_set(MT_ERR_IO, "%s: fsync of its directory failed: %s", path, strerror(errno));
        close(fd);
    }
    free(dir);
    return st;
}

mt_status mt_nifti_write(const char *path, const mt_nifti *img, int version, int gzip) {
    if (version != 1 && version != 2)
        return mt_error_set(MT_ERR_INVALID, "%s: NIfTI version %d (must be 1 or 2)", path, version);
    const mt_tensor *data = img->data;
    if (!data) return mt_error_set(MT_ERR_INVALID, "%s: no image data to write", path);
    if (data->ndim < 3 || data->ndim > 5)
        return mt_error_set(MT_ERR_INVALID, "%s: a %d-D tensor cannot be written (3-D to 5-D)", path,
                            data->ndim);
    mt_nifti_header h = img->hdr;
    int dt = h.datatype;
    if (dt == 0) dt = data->dtype == MT_U8 ? MT_NIFTI_UINT8 : data->dtype == MT_I32 ? MT_NIFTI_INT32
                                                                                   : MT_NIFTI_FLOAT32;
    const dtype_info *t = find_type(dt);
    if (!t || t->size == 0)
        return mt_error_set(MT_ERR_UNSUPPORTED, "%s: cannot write datatype %s", path,
                            mt_nifti_datatype_name(dt));
    h.ndim = data->ndim;
    h.dim[0] = data->ndim;
    for (int a = 1; a < 8; a++) h.dim[a] = a <= data->ndim ? data->shape[data->ndim - a] : 1;
    for (int a = 1; a <= data->ndim; a++)
        if (h.dim[a] < 1)
            return mt_error_set(MT_ERR_INVALID, "%s: cannot write an empty image (dim[%d] = 0)", path, a);
    uint8_t hb[N2_HDR + 4];
    MT_TRY(encode_header(path, hb, &h, version, dt, t->bitpix));
    size_t hdr_bytes = (size_t)(version == 1 ? N1_HDR : N2_HDR) + 4;
    double slope, inter;
    int scaled = scaling(&h, &slope, &inter);

    /* temp file next to the destination */
    size_t plen = strlen(path);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    char *tmp = malloc(plen + 64);
    MT_CHECK(tmp);
    unsigned cnt = __atomic_fetch_add(&g_tmp_counter, 1, __ATOMIC_RELAXED);
    snprintf(tmp, plen + 64, "%.*s.%s.tmp.%ld.%u", (int)dlen, path, path + dlen, (long)getpid(), cnt);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        mt_status st = mt_error_set(MT_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return st;
    }
    mt_status st = MT_OK;
    int dupfd = dup(fd);
    gzFile gz = dupfd >= 0 ? gzdopen(dupfd, gzip ? "wb6" : "wbT") : NULL;
    if (!gz) {
        if (dupfd >= 0) close(dupfd);
        st = mt_error_set(MT_ERR_IO, "%s: cannot start writing %s", path, tmp);
        goto fail;
    }
    gzbuffer(gz, 1u << 17);
    if (gzwrite(gz, hb, (unsigned)hdr_bytes) != (int)hdr_bytes) {
        st = mt_error_set(MT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        gzclose(gz);
        goto fail;
    }
    {
        mt_tensor *cpu = mt_tensor_device(data).type == MT_CPU ? mt_tensor_retain((mt_tensor *)data)
                                                               : mt_tensor_to_device(data, MT_DEVICE_CPU);
        mt_tensor *c = mt_tensor_contiguous(cpu);
        mt_tensor_release(cpu);
        int64_t n = mt_tensor_numel(c);
        const void *src = mt_tensor_data(c);
        double *vals = malloc((size_t)CHUNK * sizeof(double));
        uint8_t *raw = malloc((size_t)CHUNK * 8);
        MT_CHECK_MSG(vals && raw, "nifti: out of host memory");
        for (int64_t k0 = 0; k0 < n && st == MT_OK; k0 += CHUNK) {
            int64_t m = n - k0 < CHUNK ? n - k0 : CHUNK;
            switch (c->dtype) {
            case MT_F32:
                for (int64_t k = 0; k < m; k++) vals[k] = ((const float *)src)[k0 + k];
                break;
            case MT_BF16:
                for (int64_t k = 0; k < m; k++) vals[k] = mt_bf16_to_f32(((const mt_bf16 *)src)[k0 + k]);
                break;
            case MT_I32:
                for (int64_t k = 0; k < m; k++) vals[k] = ((const int32_t *)src)[k0 + k];
                break;
            case MT_U8:
                for (int64_t k = 0; k < m; k++) vals[k] = ((const uint8_t *)src)[k0 + k];
                break;
            default: MT_CHECK_MSG(0, "nifti: write of dtype %d", (int)c->dtype);
            }
            st = encode_chunk(path, raw, vals, m, dt, scaled, slope, inter);
            if (st != MT_OK) break;
            unsigned nb = (unsigned)(m * t->size);
            if (gzwrite(gz, raw, nb) != (int)nb)
                st = mt_error_set(MT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        free(vals);
        free(raw);
        mt_tensor_release(c);
    }
    {
        int zr = gzclose(gz);
        if (st == MT_OK && zr != Z_OK)
            st = mt_error_set(MT_ERR_IO, "%s: write failed (%s)", path,
                              zr == Z_ERRNO ? strerror(errno) : "zlib error");
    }
    if (st != MT_OK) goto fail;
    if (fsync(fd) != 0) {
        st = mt_error_set(MT_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = mt_error_set(MT_ERR_IO, "%s: close failed: %s", path, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        goto fail;
    }
    free(tmp);
    return fsync_dir_of(path);
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return st;
}

/* ------------------------------------------------------------ geometry */

void mt_nifti_spacing(const mt_nifti_header *hdr, double spacing_dhw[3]) {
    spacing_dhw[0] = hdr->pixdim[3];
    spacing_dhw[1] = hdr->pixdim[2];
    spacing_dhw[2] = hdr->pixdim[1];
}

static void set_last_row(double A[4][4]) {
    A[3][0] = A[3][1] = A[3][2] = 0;
    A[3][3] = 1;
}

void mt_nifti_qform_affine(const mt_nifti_header *h, double A[4][4]) {
    double b = h->quatern_b, c = h->quatern_c, d = h->quatern_d;
    double a = 1.0 - (b * b + c * c + d * d);
    if (a < 1e-7) { /* special case (nifti1_io): renormalise b, c, d; a = 0 */
        double s = sqrt(b * b + c * c + d * d);
        if (s > 0) {
            b /= s;
            c /= s;
            d /= s;
        }
        a = 0;
    } else {
        a = sqrt(a);
    }
    double xd = h->pixdim[1] > 0 ? h->pixdim[1] : 1;
    double yd = h->pixdim[2] > 0 ? h->pixdim[2] : 1;
    double zd = h->pixdim[3] > 0 ? h->pixdim[3] : 1;
    if (h->pixdim[0] < 0) zd = -zd;
    A[0][0] = (a * a + b * b - c * c - d * d) * xd;
    A[0][1] = 2 * (b * c - a * d) * yd;
    A[0][2] = 2 * (b * d + a * c) * zd;
    A[1][0] = 2 * (b * c + a * d) * xd;
    A[1][1] = (a * a + c * c - b * b - d * d) * yd;
    A[1][2] = 2 * (c * d - a * b) * zd;
    A[2][0] = 2 * (b * d - a * c) * xd;
    A[2][1] = 2 * (c * d + a * b) * yd;
    A[2][2] = (a * a + d * d - c * c - b * b) * zd;
    A[0][3] = h->qoffset_x;
    A[1][3] = h->qoffset_y;
    A[2][3] = h->qoffset_z;
    set_last_row(A);
}

void mt_nifti_sform_affine(const mt_nifti_header *h, double A[4][4]) {
    for (int i = 0; i < 4; i++) {
        A[0][i] = h->srow_x[i];
        A[1][i] = h->srow_y[i];
        A[2][i] = h->srow_z[i];
    }
    set_last_row(A);
}

int mt_nifti_best_affine(const mt_nifti_header *h, double A[4][4]) {
    if (h->sform_code > 0) {
        mt_nifti_sform_affine(h, A);
        return 2;
    }
    if (h->qform_code > 0) {
        mt_nifti_qform_affine(h, A);
        return 1;
    }
    /* nibabel's shape_zoom_affine(shape, zooms, x_flip=True) */
    memset(A, 0, 16 * sizeof(double));
    for (int a = 0; a < 3; a++) {
        int64_t n = a + 1 <= h->ndim ? h->dim[a + 1] : 1;
        double z = h->pixdim[a + 1];
        double sign = a == 0 ? -1.0 : 1.0;
        A[a][a] = sign * z;
        A[a][3] = -sign * z * (double)(n - 1) / 2.0;
    }
    A[3][3] = 1;
    return 0;
}

void mt_nifti_set_sform(mt_nifti_header *h, const double A[4][4], int code) {
    for (int i = 0; i < 4; i++) {
        h->srow_x[i] = A[0][i];
        h->srow_y[i] = A[1][i];
        h->srow_z[i] = A[2][i];
    }
    h->sform_code = code;
}

static double det3(const double m[3][3]) {
    return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
           m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
           m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
}

/* Closest orthogonal matrix (polar decomposition) by Newton's iteration
 * X <- (X + X^-T) / 2; returns 0 if m is singular. */
static int polar3(double m[3][3]) {
    for (int it = 0; it < 100; it++) {
        double det = det3(m);
        if (fabs(det) < 1e-12) return 0;
        double inv_t[3][3]; /* (m^-1)^T = cofactor(m) / det */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                int i1 = (i + 1) % 3, i2 = (i + 2) % 3, j1 = (j + 1) % 3, j2 = (j + 2) % 3;
                inv_t[i][j] = (m[i1][j1] * m[i2][j2] - m[i1][j2] * m[i2][j1]) / det;
            }
        double diff = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                double nv = 0.5 * (m[i][j] + inv_t[i][j]);
                diff += fabs(nv - m[i][j]);
                m[i][j] = nv;
            }
        if (diff < 1e-15) break;
    }
    return 1;
}

void mt_nifti_set_qform(mt_nifti_header *h, const double A[4][4], int code) {
    double r[3][3];
    double dd[3];
    for (int j = 0; j < 3; j++) {
        double s = sqrt(A[0][j] * A[0][j] + A[1][j] * A[1][j] + A[2][j] * A[2][j]);
        if (s == 0) { /* degenerate column: unit vector along its own axis */
            for (int i = 0; i < 3; i++) r[i][j] = i == j;
            s = 1;
        } else {
            for (int i = 0; i < 3; i++) r[i][j] = A[i][j] / s;
        }
        dd[j] = s;
    }
    if (!polar3(r))
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) r[i][j] = i == j;
    double qfac = 1;
    if (det3(r) < 0) {
        qfac = -1;
        for (int i = 0; i < 3; i++) r[i][2] = -r[i][2];
    }
    double a = r[0][0] + r[1][1] + r[2][2] + 1, b, c, d;
    if (a > 0.5) {
        a = 0.5 * sqrt(a);
        b = 0.25 * (r[2][1] - r[1][2]) / a;
        c = 0.25 * (r[0][2] - r[2][0]) / a;
        d = 0.25 * (r[1][0] - r[0][1]) / a;
    } else {
        double xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        double yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        double zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if (xd > 1.0) {
            b = 0.5 * sqrt(xd);
            c = 0.25 * (r[0][1] + r[1][0]) / b;
            d = 0.25 * (r[0][2] + r[2][0]) / b;
            a = 0.25 * (r[2][1] - r[1][2]) / b;
        } else if (yd > 1.0) {
            c = 0.5 * sqrt(yd);
            b = 0.25 * (r[0][1] + r[1][0]) / c;
            d = 0.25 * (r[1][2] + r[2][1]) / c;
            a = 0.25 * (r[0][2] - r[2][0]) / c;
        } else {
            d = 0.5 * sqrt(zd);
            b = 0.25 * (r[0][2] + r[2][0]) / d;
            c = 0.25 * (r[1][2] + r[2][1]) / d;
            a = 0.25 * (r[1][0] - r[0][1]) / d;
        }
        if (a < 0) {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    h->quatern_b = b;
    h->quatern_c = c;
    h->quatern_d = d;
    h->qoffset_x = A[0][3];
    h->qoffset_y = A[1][3];
    h->qoffset_z = A[2][3];
    h->pixdim[0] = qfac;
    h->pixdim[1] = dd[0];
    h->pixdim[2] = dd[1];
    h->pixdim[3] = dd[2];
    h->qform_code = code;
}
