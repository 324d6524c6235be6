/* LABELS: unit */
/* data/nifti: round trips for every datatype x NIfTI-1/2 x gzip/plain (the
 * bytes on disk checked against the test's own encoder), affines (qform,
 * sform, nibabel's best affine), scaling, big-endian and hand-made files
 * (the test's own header writer, independent of data/nifti.c), labels,
 * and corrupt / truncated / invalid files and writes: errors name the file. */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/nifti.h"
#include "mt_test.h"

static char g_dir[] = "/tmp/mt_test_nifti_XXXXXX";

static const char *tmp_path(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* ------------------------------------------------------- the test's encoder */

typedef struct {
    int code, size, is_int, is_signed;
    double lo, hi; /* test value range (exact in f32) */
} dt_case;

static const dt_case g_dts[] = {
    {MT_NIFTI_UINT8, 1, 1, 0, 0, 255},
    {MT_NIFTI_INT8, 1, 1, 1, -128, 127},
    {MT_NIFTI_INT16, 2, 1, 1, -32768, 32767},
    {MT_NIFTI_UINT16, 2, 1, 0, 0, 65535},
    {MT_NIFTI_INT32, 4, 1, 1, -16777216, 16777216},
    {MT_NIFTI_UINT32, 4, 1, 0, 0, 16777216},
    {MT_NIFTI_INT64, 8, 1, 1, -16777216, 16777216},
    {MT_NIFTI_UINT64, 8, 1, 0, 0, 16777216},
    {MT_NIFTI_FLOAT32, 4, 0, 1, -1e30, 1e30},
    {MT_NIFTI_FLOAT64, 8, 0, 1, -1e30, 1e30},
};

/* Stores value v as datatype code in n bytes, little- or big-endian. */
static void encode(uint8_t *dst, int code, double v, int be) {
    uint8_t b[8];
    int n = 0;
    uint64_t u = 0;
    switch (code) {
    case MT_NIFTI_UINT8: u = (uint8_t)v, n = 1; break;
    case MT_NIFTI_INT8: u = (uint8_t)(int8_t)v, n = 1; break;
    case MT_NIFTI_INT16: u = (uint16_t)(int16_t)v, n = 2; break;
    case MT_NIFTI_UINT16: u = (uint16_t)v, n = 2; break;
    case MT_NIFTI_INT32: u = (uint32_t)(int32_t)v, n = 4; break;
    case MT_NIFTI_UINT32: u = (uint32_t)v, n = 4; break;
    case MT_NIFTI_INT64: u = (uint64_t)(int64_t)v, n = 8; break;
    case MT_NIFTI_UINT64: u = (uint64_t)v, n = 8; break;
    case MT_NIFTI_FLOAT32: {
        float f = (float)v;
        uint32_t w;
        memcpy(&w, &f, 4);
        u = w, n = 4;
        break;
    }
    case MT_NIFTI_FLOAT64: memcpy(&u, &v, 8), n = 8; break;
    default: CHECK_MSG(0, "encode: code %d", code); return;
    }
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(u >> (8 * i)); /* little-endian */
    for (int i = 0; i < n; i++) dst[i] = be ? b[n - 1 - i] : b[i];
}

/* Whole file contents (gunzipped if gzip). */
static uint8_t *slurp(const char *path, size_t *n) {
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    int r;
    while ((r = gzread(f, buf + len, (unsigned)(cap - len))) > 0) {
        len += (size_t)r;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    gzclose(f);
    *n = len;
    return buf;
}

static int file_is_gzip(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char m[2] = {0, 0};
    size_t r = f ? fread(m, 1, 2, f) : 0;
    if (f) fclose(f);
    return r == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

static void write_bytes(const char *path, const void *data, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CHECK(f && gzwrite(f, data, (unsigned)n) == (int)n);
        if (f) gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(data, 1, n, f) == n);
        if (f) fclose(f);
    }
}

/* ---------------------------------------- the test's own header writer */

typedef struct {
    int version, be;
    int sizeof_hdr;      /* 0: 348 / 540 */
    const char *magic;   /* NULL: "n+1" / "n+2" */
    const char *eol;     /* NIfTI-2 bytes 8..11; NULL: "\r\n\032\n" */
    int64_t dim[8];
    int datatype, bitpix;
    double vox_offset;   /* 0: header + 4 */
    double pixdim[8];
    double slope, inter;
    int qform_code, sform_code;
    double quat[3], qoff[3], srow[3][4];
} spec;

static void spec_init(spec *s, int version, int datatype, int bitpix, int64_t nx, int64_t ny, int64_t nz) {
    memset(s, 0, sizeof *s);
    s->version = version;
    s->dim[0] = 3;
    s->dim[1] = nx;
    s->dim[2] = ny;
    s->dim[3] = nz;
    for (int i = 4; i < 8; i++) s->dim[i] = 1;
    s->datatype = datatype;
    s->bitpix = bitpix;
    for (int i = 0; i < 8; i++) s->pixdim[i] = 1;
    s->slope = 1;
}

static void put(uint8_t *b, int off, const void *v, int n, int be) {
    const uint8_t *s = v;
    for (int i = 0; i < n; i++) b[off + i] = be ? s[n - 1 - i] : s[i];
}
static void put_i16(uint8_t *b, int off, int16_t v, int be) { put(b, off, &v, 2, be); }
static void put_i32(uint8_t *b, int off, int32_t v, int be) { put(b, off, &v, 4, be); }
static void put_i64(uint8_t *b, int off, int64_t v, int be) { put(b, off, &v, 8, be); }
static void put_f32(uint8_t *b, int off, double v, int be) {
    float f = (float)v;
    put(b, off, &f, 4, be);
}
static void put_f64(uint8_t *b, int off, double v, int be) { put(b, off, &v, 8, be); }

/* Header bytes (plus 4 extension bytes) into b; returns its length. */
static size_t build_header(uint8_t *b, const spec *s) {
    int be = s->be;
    memset(b, 0, 544);
    if (s->version == 1) {
        put_i32(b, 0, s->sizeof_hdr ? s->sizeof_hdr : 348, be);
        for (int i = 0; i < 8; i++) put_i16(b, 40 + 2 * i, (int16_t)s->dim[i], be);
        put_i16(b, 70, (int16_t)s->datatype, be);
        put_i16(b, 72, (int16_t)s->bitpix, be);
        for (int i = 0; i < 8; i++) put_f32(b, 76 + 4 * i, s->pixdim[i], be);
        put_f32(b, 108, s->vox_offset ? s->vox_offset : 352, be);
        put_f32(b, 112, s->slope, be);
        put_f32(b, 116, s->inter, be);
        put_i16(b, 252, (int16_t)s->qform_code, be);
        put_i16(b, 254, (int16_t)s->sform_code, be);
        for (int i = 0; i < 3; i++) {
            put_f32(b, 256 + 4 * i, s->quat[i], be);
            put_f32(b, 268 + 4 * i, s->qoff[i], be);
        }
        for (int i = 0; i < 4; i++)
            for (int r = 0; r < 3; r++) put_f32(b, 280 + 16 * r + 4 * i, s->srow[r][i], be);
        memcpy(b + 344, s->magic ? s->magic : "n+1", 4);
        return 352;
    }
    put_i32(b, 0, s->sizeof_hdr ? s->sizeof_hdr : 540, be);
    memcpy(b + 4, s->magic ? s->magic : "n+2", 4);
    memcpy(b + 8, s->eol ? s->eol : "\r\n\032\n", 4);
    put_i16(b, 12, (int16_t)s->datatype, be);
    put_i16(b, 14, (int16_t)s->bitpix, be);
    for (int i = 0; i < 8; i++) put_i64(b, 16 + 8 * i, s->dim[i], be);
    for (int i = 0; i < 8; i++) put_f64(b, 104 + 8 * i, s->pixdim[i], be);
    put_i64(b, 168, s->vox_offset ? (int64_t)s->vox_offset : 544, be);
    put_f64(b, 176, s->slope, be);
    put_f64(b, 184, s->inter, be);
    put_i32(b, 344, s->qform_code, be);
    put_i32(b, 348, s->sform_code, be);
    for (int i = 0; i < 3; i++) {
        put_f64(b, 352 + 8 * i, s->quat[i], be);
        put_f64(b, 376 + 8 * i, s->qoff[i], be);
    }
    for (int i = 0; i < 4; i++)
        for (int r = 0; r < 3; r++) put_f64(b, 400 + 32 * r + 8 * i, s->srow[r][i], be);
    return 544;
}

/* Writes header + voxel values (encoded in the spec's byte order); extra, if
 * given, replaces the 4 extension bytes after the header (flag + extensions). */
static void craft(const char *path, const spec *s, const void *extra, size_t nextra, const double *vals,
                  int64_t nvals, int gz) {
    int size = 0;
    for (size_t i = 0; i < sizeof g_dts / sizeof *g_dts; i++)
        if (g_dts[i].code == s->datatype) size = g_dts[i].size;
    size_t cap = 544 + nextra + (size_t)nvals * 8;
    uint8_t *b = calloc(1, cap);
    size_t n = build_header(b, s);
    if (extra) {
        n -= 4;
        memcpy(b + n, extra, nextra);
        n += nextra;
    }
    for (int64_t k = 0; k < nvals; k++, n += (size_t)size) encode(b + n, s->datatype, vals[k], s->be);
    write_bytes(path, b, n, gz);
    free(b);
}

/* Expects reading path to fail with code and a message naming path and containing what. */
static void expect_read_error(const char *path, mt_status code, const char *what) {
    mt_nifti img;
    memset(&img, 0x5a, sizeof img);
    mt_status st = mt_nifti_read(path, &img);
    const char *m = mt_error_msg();
    CHECK_MSG(st == code, "%s: status %d, expected %d (%s)", path, st, code, m);
    CHECK_MSG(img.data == NULL, "%s: data set on error", path);
    int named = strstr(m, path) != NULL, has_what = strstr(m, what) != NULL;
    CHECK_MSG(named, "error does not name %s: %s", path, m);
    CHECK_MSG(has_what, "error for %s lacks \"%s\": %s", path, what, m);
    if (st == MT_OK) mt_nifti_free(&img);
}

/* -------------------------------------------------------------- tests */

static void fill_header(mt_nifti_header *h) {
    mt_nifti_header_default(h);
    h->pixdim[1] = 0.75;
    h->pixdim[2] = 1.25;
    h->pixdim[3] = 2.5;
    /* a rotation about z by 30 degrees, a flip (qfac -1) and an offset */
    double c = cos(M_PI / 6), s = sin(M_PI / 6);
    double A[4][4] = {{c * 0.75, -s * 1.25, 0, -12.5},
                      {s * 0.75, c * 1.25, 0, 33.25},
                      {0, 0, -2.5, 7},
                      {0, 0, 0, 1}};
    mt_nifti_set_qform(h, A, 1);
    double S[4][4] = {{0.7, 0.1, 0.05, 1.5}, {-0.2, 1.3, 0, -2}, {0.01, 0.02, 2.4, 3}, {0, 0, 0, 1}};
    mt_nifti_set_sform(h, S, 2);
    strcpy(h->descrip, "medtrain round trip");
    strcpy(h->intent_name, "labels?");
    strcpy(h->aux_file, "aux.txt");
    h->intent_code = 1002;
    h->intent_p1 = 0.5;
    h->cal_min = -3;
    h->cal_max = 99;
    h->toffset = 1.5;
    h->slice_duration = 0.25;
    h->slice_code = 1;
    h->slice_start = 0;
    h->slice_end = 2;
    h->dim_info = 57;
    h->xyzt_units = 10;
}

static int close_rel(double a, double b, double rel) { return fabs(a - b) <= rel * fmax(1.0, fabs(b)); }

static void compare_headers(const mt_nifti_header *got, const mt_nifti_header *want, int version,
                            const char *what) {
    double tol = version == 1 ? 1e-6 : 0; /* NIfTI-1 stores float32 */
    int ok = got->version == version && got->qform_code == want->qform_code &&
             got->sform_code == want->sform_code && got->xyzt_units == want->xyzt_units &&
             got->intent_code == want->intent_code && got->slice_code == want->slice_code &&
             got->slice_start == want->slice_start && got->slice_end == want->slice_end &&
             got->dim_info == want->dim_info && !got->swapped &&
             strcmp(got->descrip, want->descrip) == 0 && strcmp(got->intent_name, want->intent_name) == 0 &&
             strcmp(got->aux_file, want->aux_file) == 0;
    CHECK_MSG(ok, "%s: header codes/strings differ", what);
    double g[] = {got->quatern_b, got->quatern_c, got->quatern_d, got->qoffset_x, got->qoffset_y,
                  got->qoffset_z, got->intent_p1, got->cal_min, got->cal_max, got->toffset,
                  got->slice_duration, got->scl_slope, got->scl_inter};
    double w[] = {want->quatern_b, want->quatern_c, want->quatern_d, want->qoffset_x, want->qoffset_y,
                  want->qoffset_z, want->intent_p1, want->cal_min, want->cal_max, want->toffset,
                  want->slice_duration, want->scl_slope, want->scl_inter};
    for (size_t i = 0; i < sizeof g / sizeof *g; i++)
        CHECK_MSG(close_rel(g[i], w[i], tol), "%s: header value %zu: %g vs %g", what, i, g[i], w[i]);
    for (int i = 0; i < 4; i++) {
        ok = close_rel(got->pixdim[i], want->pixdim[i], tol) && close_rel(got->srow_x[i], want->srow_x[i], tol) &&
             close_rel(got->srow_y[i], want->srow_y[i], tol) && close_rel(got->srow_z[i], want->srow_z[i], tol);
        CHECK_MSG(ok, "%s: pixdim/srow column %d differs", what, i);
    }
    double Ag[4][4], Aw[4][4];
    CHECK(mt_nifti_best_affine(got, Ag) == 2);
    mt_nifti_best_affine(want, Aw);
    double Qg[4][4], Qw[4][4];
    mt_nifti_qform_affine(got, Qg);
    mt_nifti_qform_affine(want, Qw);
    double err = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) err = fmax(err, fmax(fabs(Ag[i][j] - Aw[i][j]), fabs(Qg[i][j] - Qw[i][j])));
    CHECK_MSG(err <= (version == 1 ? 1e-5 : 1e-12), "%s: affines differ by %g", what, err);
}

/* Random test values for a datatype (both range ends included). */
static void test_values(double *v, int64_t n, const dt_case *t) {
    mt_tensor *r = mt_test_rand(1, (int64_t[]){n}, 0, 1);
    const float *p = MT_F32P(r);
    for (int64_t k = 0; k < n; k++) {
        if (t->is_int)
            v[k] = floor(t->lo + (double)p[k] * (t->hi - t->lo + 1));
        else
            v[k] = (float)((p[k] - 0.5) * 2000.0 * (1 + k % 7)); /* f32-exact */
        if (v[k] > t->hi) v[k] = t->hi;
    }
    v[0] = t->is_int ? t->lo : -1e30f;
    v[n - 1] = t->is_int ? t->hi : 3.5e-20f;
    mt_tensor_release(r);
}

static void test_round_trips(void) {
    const int64_t D = 5, H = 7, W = 3, n = D * H * W;
    double vals[5 * 7 * 3];
    int files = 0;
    for (size_t di = 0; di < sizeof g_dts / sizeof *g_dts; di++) {
        const dt_case *t = &g_dts[di];
        test_values(vals, n, t);
        for (int version = 1; version <= 2; version++)
            for (int gz = 0; gz <= 1; gz++) {
                char name[64], what[96];
                snprintf(name, sizeof name, "rt_%s_v%d.nii%s", mt_nifti_datatype_name(t->code), version,
                         gz ? ".gz" : "");
                snprintf(what, sizeof what, "%s", name);
                const char *path = tmp_path(name);
                mt_nifti img;
                fill_header(&img.hdr);
                img.hdr.datatype = t->code;
                img.data = mt_tensor_new(MT_F32, 3, (int64_t[]){D, H, W}, MT_DEVICE_CPU);
                for (int64_t k = 0; k < n; k++) MT_F32P(img.data)[k] = (float)vals[k];
                mt_status st = mt_nifti_write(path, &img, version, gz);
                CHECK_MSG(st == MT_OK, "%s: write: %s", what, mt_error_msg());
                CHECK_MSG(file_is_gzip(path) == gz, "%s: gzip magic %d", what, file_is_gzip(path));
                /* the bytes on disk, against the test's encoder */
                size_t len = 0;
                uint8_t *bytes = slurp(path, &len);
                size_t off = version == 1 ? 352 : 544;
                int ok = bytes && len == off + (size_t)(n * t->size);
                if (ok) {
                    int32_t sz;
                    memcpy(&sz, bytes, 4);
                    ok = sz == (version == 1 ? 348 : 540) &&
                         memcmp(bytes + (version == 1 ? 344 : 4), version == 1 ? "n+1" : "n+2\0\r\n\032\n",
                                version == 1 ? 4 : 8) == 0;
                    int16_t dt, dims[3];
                    int64_t dims64[4];
                    if (version == 1) {
                        memcpy(&dt, bytes + 70, 2);
                        memcpy(dims, bytes + 42, 6); /* dim[1..3] */
                        ok &= dims[0] == W && dims[1] == H && dims[2] == D;
                        float vo;
                        memcpy(&vo, bytes + 108, 4);
                        ok &= vo == 352.0f;
                    } else {
                        memcpy(&dt, bytes + 12, 2);
                        memcpy(dims64, bytes + 16, 32);
                        ok &= dims64[0] == 3 && dims64[1] == W && dims64[2] == H && dims64[3] == D;
                        int64_t vo;
                        memcpy(&vo, bytes + 168, 8);
                        ok &= vo == 544;
                    }
                    ok &= dt == t->code;
                    uint8_t enc[8];
                    for (int64_t k = 0; k < n && ok; k++) {
                        encode(enc, t->code, vals[k], 0);
                        ok = memcmp(enc, bytes + off + (size_t)(k * t->size), (size_t)t->size) == 0;
                    }
                }
                CHECK_MSG(ok, "%s: bytes on disk differ from the reference encoding", what);
                free(bytes);
                /* read back */
                mt_nifti back;
                st = mt_nifti_read(path, &back);
                CHECK_MSG(st == MT_OK, "%s: read: %s", what, mt_error_msg());
                if (st == MT_OK) {
                    CHECK_MSG(back.data->dtype == MT_F32 && back.data->ndim == 3 && back.data->shape[0] == D &&
                                  back.data->shape[1] == H && back.data->shape[2] == W,
                              "%s: shape/dtype", what);
                    CHECK(back.hdr.datatype == t->code && back.hdr.bitpix == 8 * t->size && back.hdr.ndim == 3);
                    CHECK(back.hdr.dim[1] == W && back.hdr.dim[2] == H && back.hdr.dim[3] == D);
                    int same = 1;
                    for (int64_t k = 0; k < n; k++) same &= MT_F32P(back.data)[k] == (float)vals[k];
                    CHECK_MSG(same, "%s: values differ", what);
                    compare_headers(&back.hdr, &img.hdr, version, what);
                    double sp[3];
                    mt_nifti_spacing(&back.hdr, sp);
                    CHECK(sp[0] == 2.5 && sp[1] == 1.25 && sp[2] == 0.75);
                    /* writing what was read reproduces the same voxel bytes */
                    const char *path2 = tmp_path("rt_again.nii");
                    CHECK(mt_nifti_write(path2, &back, version, 0) == MT_OK);
                    size_t len2 = 0;
                    uint8_t *b1 = slurp(path, &len), *b2 = slurp(path2, &len2);
                    CHECK_MSG(b1 && b2 && len == len2 && memcmp(b1, b2, len) == 0, "%s: rewrite differs", what);
                    free(b1);
                    free(b2);
                    mt_nifti_free(&back);
                }
                /* header only */
                mt_nifti_header hh;
                CHECK(mt_nifti_read_header(path, &hh) == MT_OK && hh.datatype == t->code && hh.dim[3] == D);
                mt_nifti_free(&img);
                files++;
            }
    }
    CHECK(files == 40);
}

/* Native reads keep integer types exact, beyond f32's 2^24. */
static void test_native(void) {
    const char *path = tmp_path("native_i32.nii.gz");
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.data = mt_tensor_new(MT_I32, 3, (int64_t[]){3, 2, 5}, MT_DEVICE_CPU);
    int32_t *p = mt_tensor_data(img.data);
    for (int k = 0; k < 30; k++) p[k] = (k % 2 ? 1 : -1) * (2147483647 - 977 * k);
    p[0] = INT32_MIN;
    CHECK(mt_nifti_write(path, &img, 2, 1) == MT_OK);
    mt_nifti back;
    CHECK(mt_nifti_read_native(path, &back) == MT_OK);
    if (back.data) {
        CHECK(back.hdr.datatype == MT_NIFTI_INT32 && back.data->dtype == MT_I32);
        CHECK(memcmp(mt_tensor_data(back.data), p, 30 * 4) == 0);
        mt_nifti_free(&back);
    }
    /* u8 stays u8; i16 -> i32; f64 -> f32 */
    struct {
        int code;
        mt_dtype want;
    } cases[] = {{MT_NIFTI_UINT8, MT_U8}, {MT_NIFTI_INT16, MT_I32}, {MT_NIFTI_UINT16, MT_I32},
                 {MT_NIFTI_INT8, MT_I32}, {MT_NIFTI_FLOAT64, MT_F32}, {MT_NIFTI_UINT32, MT_F32}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        img.hdr.datatype = cases[c].code;
        for (int k = 0; k < 30; k++) p[k] = (k * 37) % 120;
        CHECK(mt_nifti_write(path, &img, 1, 0) == MT_OK);
        CHECK(mt_nifti_read_native(path, &back) == MT_OK);
        if (!back.data) continue;
        CHECK_MSG(back.data->dtype == cases[c].want, "native %s -> %s", mt_nifti_datatype_name(cases[c].code),
                  mt_dtype_name(back.data->dtype));
        int same = 1;
        for (int k = 0; k < 30; k++) same &= mt_tensor_get_flat(back.data, k) == p[k];
        CHECK(same);
        mt_nifti_free(&back);
    }
    mt_nifti_free(&img);
}

static void test_shapes_and_strides(void) {
    /* 4-D and 5-D: dims reversed into the tensor shape */
    int64_t shapes[2][5] = {{2, 3, 4, 5, 0}, {2, 1, 3, 4, 5}};
    for (int s = 0; s < 2; s++) {
        int nd = s == 0 ? 4 : 5;
        mt_nifti img;
        mt_nifti_header_default(&img.hdr);
        img.data = mt_test_rand(nd, shapes[s], -5, 5);
        const char *path = tmp_path(s == 0 ? "four.nii.gz" : "five.nii");
        CHECK(mt_nifti_write(path, &img, s + 1, s == 0) == MT_OK);
        mt_nifti back;
        CHECK(mt_nifti_read(path, &back) == MT_OK);
        if (back.data) {
            CHECK(back.hdr.ndim == nd && back.data->ndim == nd && mt_tensor_same_shape(back.data, img.data));
            for (int a = 1; a <= nd; a++) CHECK(back.hdr.dim[a] == shapes[s][nd - a]);
            CHECK(mt_test_allclose_t(back.data, img.data, 1e-12, 0, "4-D/5-D values"));
            mt_nifti_free(&back);
        }
        mt_nifti_free(&img);
    }
    /* a strided view (permute) writes its logical contents; bf16 writes float32 */
    mt_tensor *base = mt_test_rand(3, (int64_t[]){4, 3, 5}, -2, 2);
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.data = mt_tensor_permute(base, (int[]){2, 0, 1});
    const char *path = tmp_path("strided.nii");
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_OK);
    mt_nifti back;
    CHECK(mt_nifti_read(path, &back) == MT_OK);
    if (back.data) {
        CHECK(back.data->shape[0] == 5 && back.data->shape[1] == 4 && back.data->shape[2] == 3);
        CHECK(mt_test_allclose_t(back.data, img.data, 1e-12, 0, "strided write"));
        mt_nifti_free(&back);
    }
    mt_tensor_release(img.data);
    img.data = mt_tensor_to_dtype(base, MT_BF16);
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_OK);
    CHECK(mt_nifti_read(path, &back) == MT_OK);
    if (back.data) {
        CHECK(back.hdr.datatype == MT_NIFTI_FLOAT32);
        CHECK(mt_test_allclose_t(back.data, img.data, 1e-12, 0, "bf16 write"));
        mt_nifti_free(&back);
    }
    mt_tensor_release(img.data);
    /* u8 / i32 tensors pick UINT8 / INT32 when hdr.datatype is 0 */
    img.data = mt_tensor_to_dtype(base, MT_U8);
    CHECK(mt_nifti_write(path, &img, 2, 0) == MT_OK);
    CHECK(mt_nifti_read_header(path, &back.hdr) == MT_OK && back.hdr.datatype == MT_NIFTI_UINT8);
    mt_tensor_release(img.data);
    img.data = mt_tensor_to_dtype(base, MT_I32);
    CHECK(mt_nifti_write(path, &img, 2, 0) == MT_OK);
    CHECK(mt_nifti_read_header(path, &back.hdr) == MT_OK && back.hdr.datatype == MT_NIFTI_INT32);
    mt_tensor_release(img.data);
    mt_tensor_release(base);
}

static void test_affines(void) {
    mt_nifti_header h;
    mt_nifti_header_default(&h);
    /* reference values computed with nibabel 5.4.2 (Nifti2Header.get_qform) for
     * quaternion (b, c, d) = (0.1, 0.2, 0.3), qfac -1, pixdim 1.5 2 2.5, offset 1 2 3 */
    h.quatern_b = 0.1, h.quatern_c = 0.2, h.quatern_d = 0.3;
    h.pixdim[0] = -1, h.pixdim[1] = 1.5, h.pixdim[2] = 2, h.pixdim[3] = 2.5;
    h.qoffset_x = 1, h.qoffset_y = 2, h.qoffset_z = 3;
    h.qform_code = 1;
    double ref[3][4] = {{1.11, -1.0328342195, -1.0773618495, 1},
                        {0.8946256646, 1.6, 0.1636809248, 2},
                        {-0.4664171097, 0.6109447398, -2.25, 3}};
    double A[4][4];
    CHECK(mt_nifti_best_affine(&h, A) == 1);
    double err = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) err = fmax(err, fabs(A[i][j] - ref[i][j]));
    CHECK_MSG(err < 1e-9, "qform vs nibabel: max error %g", err);
    CHECK(A[3][0] == 0 && A[3][1] == 0 && A[3][2] == 0 && A[3][3] == 1);
    /* set_qform(A) then qform gives A back (and the same quaternion) */
    mt_nifti_header h2;
    mt_nifti_header_default(&h2);
    mt_nifti_set_qform(&h2, A, 2);
    CHECK(h2.qform_code == 2 && h2.pixdim[0] == -1);
    CHECK_NEAR(h2.quatern_b, 0.1, 1e-12);
    CHECK_NEAR(h2.quatern_c, 0.2, 1e-12);
    CHECK_NEAR(h2.quatern_d, 0.3, 1e-12);
    CHECK_NEAR(h2.pixdim[1], 1.5, 1e-12);
    CHECK_NEAR(h2.pixdim[3], 2.5, 1e-12);
    /* a 180-degree rotation about x (a = 0: the trace branch of mat44_to_quatern) */
    double R[4][4] = {{2, 0, 0, -1}, {0, -3, 0, 4}, {0, 0, -4, 5}, {0, 0, 0, 1}};
    mt_nifti_set_qform(&h2, R, 1);
    CHECK_NEAR(h2.quatern_b, 1.0, 1e-12);
    CHECK_NEAR(h2.quatern_c, 0.0, 1e-12);
    CHECK(h2.pixdim[0] == 1);
    double B[4][4];
    mt_nifti_qform_affine(&h2, B);
    err = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) err = fmax(err, fabs(B[i][j] - R[i][j]));
    CHECK_MSG(err < 1e-12, "180-degree qform round trip: %g", err);
    /* sform wins over qform; code 0 for both: nibabel's base affine, which
     * nibabel gives as [[-2,0,0,4],[0,3,0,-9],[0,0,4,-4]] for shape (5, 7, 3), zooms (2, 3, 4) */
    double S[4][4] = {{0, 0, 1, 10}, {0, 1, 0, 20}, {1, 0, 0, 30}, {0, 0, 0, 1}};
    mt_nifti_set_sform(&h, S, 4);
    CHECK(mt_nifti_best_affine(&h, A) == 2 && A[0][2] == 1 && A[2][3] == 30);
    h.sform_code = 0;
    h.qform_code = 0;
    h.ndim = 3;
    h.dim[1] = 5, h.dim[2] = 7, h.dim[3] = 3;
    h.pixdim[1] = 2, h.pixdim[2] = 3, h.pixdim[3] = 4;
    CHECK(mt_nifti_best_affine(&h, A) == 0);
    double base[3][4] = {{-2, 0, 0, 4}, {0, 3, 0, -9}, {0, 0, 4, -4}};
    err = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) err = fmax(err, fabs(A[i][j] - base[i][j]));
    CHECK_MSG(err == 0, "base affine differs from nibabel's by %g", err);
}

static void test_scaling(void) {
    /* writing real values through slope/inter stores (v - inter) / slope */
    const char *path = tmp_path("scaled_i16.nii.gz");
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.hdr.datatype = MT_NIFTI_INT16;
    img.hdr.scl_slope = 0.5;
    img.hdr.scl_inter = 10;
    img.data = mt_tensor_new(MT_F32, 3, (int64_t[]){3, 4, 5}, MT_DEVICE_CPU);
    for (int k = 0; k < 60; k++) MT_F32P(img.data)[k] = (float)((k * 131 % 1000 - 500) * 0.5 + 10);
    CHECK(mt_nifti_write(path, &img, 1, 1) == MT_OK);
    size_t len;
    uint8_t *bytes = slurp(path, &len);
    int ok = bytes && len == 352 + 120;
    for (int k = 0; k < 60 && ok; k++) {
        int16_t raw;
        memcpy(&raw, bytes + 352 + 2 * k, 2);
        ok = raw == k * 131 % 1000 - 500;
    }
    CHECK_MSG(ok, "scaled int16 raw values on disk");
    free(bytes);
    mt_nifti back;
    CHECK(mt_nifti_read(path, &back) == MT_OK);
    if (back.data) {
        CHECK(back.hdr.scl_slope == 0.5 && back.hdr.scl_inter == 10);
        CHECK(mt_test_allclose_t(back.data, img.data, 1e-12, 0, "scaled read"));
        mt_nifti_free(&back);
    }
    CHECK(mt_nifti_read_native(path, &back) == MT_OK); /* effective scaling -> f32 */
    if (back.data) {
        CHECK(back.data->dtype == MT_F32 && mt_test_allclose_t(back.data, img.data, 1e-12, 0, "native scaled"));
        mt_nifti_free(&back);
    }
    mt_nifti_free(&img);
    /* integer types round to nearest (ties to even, as numpy's rint) */
    mt_nifti_header_default(&img.hdr);
    img.hdr.datatype = MT_NIFTI_INT16;
    img.data = mt_tensor_from_data(MT_F32, 3, (int64_t[]){1, 2, 3},
                                   (float[]){2.5f, 3.5f, -2.6f, 0.4999f, -0.5f, 7.51f});
    CHECK(mt_nifti_write(path, &img, 2, 0) == MT_OK);
    CHECK(mt_nifti_read(path, &back) == MT_OK);
    if (back.data) CHECK(mt_test_allclose(back.data, (double[]){2, 4, -3, 0, 0, 8}, 1e-12, 0, "rounding"));
    mt_nifti_free(&back);
    mt_nifti_free(&img);
    /* hand-made files: slope 2 inter -3; slope 0 and NaN slope mean no scaling */
    double raw[24];
    for (int k = 0; k < 24; k++) raw[k] = (k * 7) % 11;
    double slopes[] = {2, 0, NAN, 1};
    double inters[] = {-3, 5, 5, NAN};
    for (int c = 0; c < 4; c++) {
        spec s;
        spec_init(&s, 1 + c % 2, MT_NIFTI_UINT8, 8, 4, 3, 2);
        s.slope = slopes[c];
        s.inter = inters[c];
        const char *p = tmp_path("scl.nii");
        craft(p, &s, NULL, 0, raw, 24, 0);
        CHECK_MSG(mt_nifti_read(p, &back) == MT_OK, "scl case %d: %s", c, mt_error_msg());
        if (!back.data) continue;
        double ref[24];
        for (int k = 0; k < 24; k++) ref[k] = c == 0 ? raw[k] * 2 - 3 : raw[k];
        CHECK(mt_test_allclose(back.data, ref, 1e-12, 0, "crafted scaling"));
        mt_nifti_free(&back);
        CHECK(mt_nifti_read_native(p, &back) == MT_OK);
        if (back.data) CHECK(back.data->dtype == (c == 0 ? MT_F32 : MT_U8));
        mt_nifti_free(&back);
    }
}

static void test_big_endian_and_crafted(void) {
    /* big-endian NIfTI-1 int16 and NIfTI-2 float32 with a qform, an extension
     * block before the voxels, gzip and plain */
    double v[60];
    for (int k = 0; k < 60; k++) v[k] = (k % 2 ? -1 : 1) * (k * 523 % 30000);
    for (int version = 1; version <= 2; version++)
        for (int gz = 0; gz <= 1; gz++) {
            spec s;
            spec_init(&s, version, version == 1 ? MT_NIFTI_INT16 : MT_NIFTI_FLOAT32,
                      version == 1 ? 16 : 32, 5, 4, 3);
            s.be = 1;
            s.qform_code = 1;
            s.quat[2] = 1; /* 180 degrees about z */
            s.qoff[0] = 7;
            s.pixdim[1] = 0.5;
            uint8_t ext[36] = {1, 0, 0, 0}; /* extension flag, then one 32-byte extension */
            put_i32(ext, 4, 32, 1);
            put_i32(ext, 8, 6, 1); /* NIFTI_ECODE_COMMENT */
            memcpy(ext + 12, "a comment", 9);
            s.vox_offset = (version == 1 ? 348 : 540) + 36;
            const char *p = tmp_path(gz ? "be.nii.gz" : "be.nii");
            craft(p, &s, ext, sizeof ext, v, 60, gz);
            mt_nifti back;
            mt_status st = mt_nifti_read(p, &back);
            CHECK_MSG(st == MT_OK, "big-endian v%d gz%d: %s", version, gz, mt_error_msg());
            if (st != MT_OK) continue;
            CHECK(back.hdr.swapped == 1 && back.hdr.version == version);
            CHECK(back.data->shape[0] == 3 && back.data->shape[1] == 4 && back.data->shape[2] == 5);
            CHECK(mt_test_allclose(back.data, v, 1e-12, 0, "big-endian values"));
            double A[4][4];
            CHECK(mt_nifti_best_affine(&back.hdr, A) == 1);
            CHECK(A[0][0] == -0.5 && A[1][1] == -1 && A[2][2] == 1 && A[0][3] == 7);
            /* written back: little-endian, same values */
            const char *p2 = tmp_path("be_to_le.nii");
            CHECK(mt_nifti_write(p2, &back, version, 0) == MT_OK);
            mt_nifti le;
            CHECK(mt_nifti_read(p2, &le) == MT_OK);
            if (le.data) {
                CHECK(!le.hdr.swapped && le.hdr.datatype == back.hdr.datatype);
                CHECK(mt_test_allclose(le.data, v, 1e-12, 0, "big-endian rewritten"));
                mt_nifti_free(&le);
            }
            mt_nifti_free(&back);
        }
    /* .hdr/.img pairs (magic ni1 / ni2), plain and gzip */
    for (int version = 1; version <= 2; version++) {
        spec s;
        spec_init(&s, version, MT_NIFTI_FLOAT64, 64, 3, 2, 2);
        s.magic = version == 1 ? "ni1" : "ni2";
        s.vox_offset = 0;
        uint8_t hb[544];
        size_t hn = build_header(hb, &s);
        /* vox_offset 0 in the .hdr: patch it (build_header writes the default when 0) */
        if (version == 1)
            put_f32(hb, 108, 0, 0);
        else
            put_i64(hb, 168, 0, 0);
        const char *hp = tmp_path(version == 1 ? "pair.hdr" : "pair2.hdr.gz");
        const char *ip = tmp_path(version == 1 ? "pair.img" : "pair2.img.gz");
        write_bytes(hp, hb, hn - 4, version == 2);
        uint8_t data[12 * 8];
        for (int k = 0; k < 12; k++) encode(data + 8 * k, MT_NIFTI_FLOAT64, k * 0.125 - 1, 0);
        write_bytes(ip, data, sizeof data, version == 2);
        mt_nifti back;
        mt_status st = mt_nifti_read(hp, &back);
        CHECK_MSG(st == MT_OK, "pair v%d: %s", version, mt_error_msg());
        if (st == MT_OK) {
            double ref[12];
            for (int k = 0; k < 12; k++) ref[k] = k * 0.125 - 1;
            CHECK(mt_test_allclose(back.data, ref, 1e-12, 0, "hdr/img pair"));
            mt_nifti_free(&back);
        }
        unlink(ip);
        expect_read_error(hp, MT_ERR_IO, "is missing");
    }
}

static void test_labels(void) {
    double v[30];
    for (int k = 0; k < 30; k++) v[k] = k % 3;
    spec s;
    spec_init(&s, 1, MT_NIFTI_FLOAT32, 32, 5, 3, 2);
    const char *p = tmp_path("lab_f32.nii.gz");
    craft(p, &s, NULL, 0, v, 30, 1);
    mt_nifti lab;
    CHECK(mt_nifti_read_labels(p, &lab) == MT_OK);
    if (lab.data) {
        CHECK(lab.data->dtype == MT_U8 && lab.hdr.datatype == MT_NIFTI_FLOAT32);
        CHECK(mt_test_allclose(lab.data, v, 1e-12, 0, "f32 labels"));
        mt_nifti_free(&lab);
    }
    /* scaled labels: raw 0/1 with slope 2 -> 0/2 */
    spec_init(&s, 2, MT_NIFTI_INT16, 16, 5, 3, 2);
    s.slope = 2;
    for (int k = 0; k < 30; k++) v[k] = k % 2;
    craft(p, &s, NULL, 0, v, 30, 1);
    CHECK(mt_nifti_read_labels(p, &lab) == MT_OK);
    if (lab.data) {
        double ref[30];
        for (int k = 0; k < 30; k++) ref[k] = 2 * (k % 2);
        CHECK(mt_test_allclose(lab.data, ref, 1e-12, 0, "scaled labels"));
        mt_nifti_free(&lab);
    }
    /* not an integer in 0..255: error naming the file, the value and the voxel */
    struct {
        double bad;
        const char *text;
    } bads[] = {{1.5, "label value 1.5 at voxel (2, 3, 1)"}, {256, "256"}, {-1, "-1"}, {NAN, "nan"}};
    for (int c = 0; c < 4; c++) {
        spec_init(&s, 1, MT_NIFTI_FLOAT32, 32, 5, 4, 2);
        double w[40];
        for (int k = 0; k < 40; k++) w[k] = k % 3;
        w[1 * 20 + 3 * 5 + 2] = bads[c].bad; /* voxel (i, j, k) = (2, 3, 1) */
        craft(p, &s, NULL, 0, w, 40, 1);
        memset(&lab, 0, sizeof lab);
        mt_status st = mt_nifti_read_labels(p, &lab);
        CHECK_MSG(st == MT_ERR_FORMAT && lab.data == NULL, "bad label %g accepted", bads[c].bad);
        CHECK_MSG(strstr(mt_error_msg(), p) && strstr(mt_error_msg(), bads[c].text), "%s", mt_error_msg());
    }
}

static void test_corrupt(void) {
    double v[24];
    for (int k = 0; k < 24; k++) v[k] = k;
    spec s;
    const char *p;
    /* missing, empty, a directory, a text file */
    expect_read_error(tmp_path("does_not_exist.nii.gz"), MT_ERR_IO, "cannot open");
    p = tmp_path("empty.nii");
    write_bytes(p, "", 0, 0);
    expect_read_error(p, MT_ERR_IO, "empty file");
    expect_read_error(g_dir, MT_ERR_IO, "directory");
    p = tmp_path("text.nii");
    write_bytes(p, "hello, this is not an image at all, not even close to 348 bytes", 64, 0);
    expect_read_error(p, MT_ERR_FORMAT, "sizeof_hdr");
    /* truncated header */
    spec_init(&s, 1, MT_NIFTI_INT16, 16, 4, 3, 2);
    uint8_t hb[544];
    build_header(hb, &s);
    p = tmp_path("short_header.nii.gz");
    write_bytes(p, hb, 200, 1);
    expect_read_error(p, MT_ERR_IO, "truncated NIfTI-1 header: 200 of 348");
    /* truncated voxel data, plain and gzip */
    for (int gz = 0; gz <= 1; gz++) {
        p = tmp_path(gz ? "trunc.nii.gz" : "trunc.nii");
        craft(p, &s, NULL, 0, v, 23, gz); /* one voxel short */
        expect_read_error(p, MT_ERR_IO, "truncated");
        expect_read_error(p, MT_ERR_IO, "promises 48 bytes");
    }
    /* a gzip stream cut short in the middle (as a partial download) */
    spec_init(&s, 2, MT_NIFTI_FLOAT32, 32, 40, 30, 20);
    int64_t big = 40 * 30 * 20;
    double *bv = malloc((size_t)big * sizeof(double));
    for (int64_t k = 0; k < big; k++) bv[k] = sin((double)k) * 1000;
    p = tmp_path("cut.nii.gz");
    craft(p, &s, NULL, 0, bv, big, 1);
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    CHECK(truncate(p, sb.st_size / 2) == 0);
    expect_read_error(p, MT_ERR_IO, "truncated");
    /* corrupt gzip: bytes flipped inside the deflate stream */
    craft(p, &s, NULL, 0, bv, big, 1);
    {
        FILE *f = fopen(p, "r+b");
        CHECK(f != NULL);
        if (f) {
            fseek(f, sb.st_size / 2, SEEK_SET);
            uint8_t junk[64];
            for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 73 + 11);
            fwrite(junk, 1, sizeof junk, f);
            fclose(f);
        }
        expect_read_error(p, MT_ERR_FORMAT, "corrupt");
    }
    /* corrupt gzip trailer (CRC) after complete voxel data */
    craft(p, &s, NULL, 0, bv, big, 1);
    CHECK(stat(p, &sb) == 0);
    {
        FILE *f = fopen(p, "r+b");
        if (f) {
            fseek(f, sb.st_size - 8, SEEK_SET);
            fputc(0x5a ^ 0xff, f);
            fputc(0x13, f);
            fclose(f);
        }
        expect_read_error(p, MT_ERR_FORMAT, "corrupt");
    }
    free(bv);
    /* trailing bytes after the voxels are allowed, but the gzip stream is
     * still checked to its end (CRC) */
    {
        spec_init(&s, 1, MT_NIFTI_FLOAT32, 32, 4, 3, 2);
        size_t tail = 4 << 20, n = 352 + 24 * 4 + tail;
        uint8_t *b = calloc(1, n);
        build_header(b, &s);
        for (int k = 0; k < 24; k++) encode(b + 352 + 4 * k, MT_NIFTI_FLOAT32, v[k], 0);
        p = tmp_path("trailing.nii.gz");
        write_bytes(p, b, n, 1);
        free(b);
        mt_nifti ok;
        CHECK_MSG(mt_nifti_read(p, &ok) == MT_OK, "trailing bytes: %s", mt_error_msg());
        if (ok.data) CHECK(mt_test_allclose(ok.data, v, 1e-12, 0, "voxels before trailing bytes"));
        mt_nifti_free(&ok);
        CHECK(stat(p, &sb) == 0);
        FILE *f = fopen(p, "r+b");
        if (f) {
            fseek(f, sb.st_size - 8, SEEK_SET);
            int c = fgetc(f);
            fseek(f, sb.st_size - 8, SEEK_SET);
            fputc(c ^ 0xff, f);
            fclose(f);
        }
        expect_read_error(p, MT_ERR_FORMAT, "corrupt gzip stream (zlib: incorrect data check)");
    }
    /* wrong magic, NIfTI-2 end-of-line bytes */
    spec_init(&s, 1, MT_NIFTI_INT16, 16, 4, 3, 2);
    s.magic = "n+3";
    p = tmp_path("magic.nii");
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "magic is \"n+3\\x00\"");
    spec_init(&s, 2, MT_NIFTI_INT16, 16, 4, 3, 2);
    s.eol = "\n\n\032\n";
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "end-of-line");
    /* bad dims */
    struct {
        int d0, which;
        int64_t val;
        mt_status code;
        const char *text;
    } dims[] = {{0, 0, 0, MT_ERR_FORMAT, "dim[0] = 0"},     {8, 0, 0, MT_ERR_FORMAT, "dim[0] = 8"},
                {-3, 0, 0, MT_ERR_FORMAT, "dim[0] = -3"},   {2, 0, 0, MT_ERR_UNSUPPORTED, "2-D image"},
                {6, 0, 0, MT_ERR_UNSUPPORTED, "6-D image"}, {3, 2, 0, MT_ERR_FORMAT, "dim[2] = 0"},
                {3, 3, -4, MT_ERR_FORMAT, "dim[3] = -4"}};
    for (size_t c = 0; c < sizeof dims / sizeof *dims; c++)
        for (int version = 1; version <= 2; version++) {
            spec_init(&s, version, MT_NIFTI_INT16, 16, 4, 3, 2);
            s.dim[0] = dims[c].d0;
            if (dims[c].which) s.dim[dims[c].which] = dims[c].val;
            p = tmp_path("dims.nii");
            craft(p, &s, NULL, 0, v, 24, 0);
            expect_read_error(p, dims[c].code, dims[c].text);
        }
    /* datatype problems */
    struct {
        int dt, bitpix;
        mt_status code;
        const char *text;
    } dts[] = {{MT_NIFTI_INT16, 32, MT_ERR_FORMAT, "bitpix = 32 disagrees with datatype int16"},
               {3, 8, MT_ERR_FORMAT, "unknown datatype code 3"},
               {MT_NIFTI_RGB24, 24, MT_ERR_UNSUPPORTED, "datatype rgb24 is not supported"},
               {MT_NIFTI_COMPLEX64, 64, MT_ERR_UNSUPPORTED, "datatype complex64 is not supported"},
               {MT_NIFTI_RGBA32, 32, MT_ERR_UNSUPPORTED, "rgba32"},
               {MT_NIFTI_FLOAT128, 128, MT_ERR_UNSUPPORTED, "float128"}};
    for (size_t c = 0; c < sizeof dts / sizeof *dts; c++) {
        spec_init(&s, 1 + (int)c % 2, dts[c].dt, dts[c].bitpix, 4, 3, 2);
        p = tmp_path("dtype.nii.gz");
        craft(p, &s, NULL, 0, NULL, 0, 1);
        expect_read_error(p, dts[c].code, dts[c].text);
    }
    /* vox_offset inside the header, fractional, past the end */
    spec_init(&s, 1, MT_NIFTI_INT16, 16, 4, 3, 2);
    s.vox_offset = 100;
    p = tmp_path("vox.nii");
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "vox_offset = 100 is inside the header");
    s.vox_offset = 352.5;
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "vox_offset");
    s.vox_offset = 4096;
    craft(p, &s, NULL, 0, NULL, 0, 0);
    expect_read_error(p, MT_ERR_IO, "promises 48 bytes of int16 voxels (24 voxels) at offset 4096, the file has 352");
    p = tmp_path("vox.nii.gz");
    craft(p, &s, NULL, 0, NULL, 0, 1);
    expect_read_error(p, MT_ERR_IO, "ends before the voxel data at vox_offset 4096");
    /* a corrupt header promising 216 TB: refused before any allocation */
    spec_init(&s, 1, MT_NIFTI_FLOAT64, 64, 30000, 30000, 30000);
    p = tmp_path("huge.nii.gz");
    craft(p, &s, NULL, 0, v, 24, 1);
    expect_read_error(p, MT_ERR_IO, "more than a");
    p = tmp_path("huge.nii");
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_IO, "the file has 544 bytes");
    p = tmp_path("vox.nii");
    /* voxel sizes */
    spec_init(&s, 2, MT_NIFTI_INT16, 16, 4, 3, 2);
    s.pixdim[2] = 0;
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "pixdim[2] = 0");
    s.pixdim[2] = NAN;
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "pixdim[2]");
    /* non-finite sform in use */
    spec_init(&s, 1, MT_NIFTI_INT16, 16, 4, 3, 2);
    s.sform_code = 1;
    s.srow[1][3] = INFINITY;
    craft(p, &s, NULL, 0, v, 24, 0);
    expect_read_error(p, MT_ERR_FORMAT, "sform");
    /* read_header reports the same problems */
    mt_nifti_header h;
    CHECK(mt_nifti_read_header(p, &h) == MT_ERR_FORMAT && strstr(mt_error_msg(), p));
}

static void test_write_errors(void) {
    const char *path = tmp_path("keep.nii");
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.data = mt_test_rand(3, (int64_t[]){2, 3, 4}, 0, 100);
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_OK);
    size_t len0;
    uint8_t *before = slurp(path, &len0);
    /* a value out of the datatype's range / NaN: error naming the file, destination untouched */
    img.hdr.datatype = MT_NIFTI_UINT8;
    MT_F32P(img.data)[5] = 300;
    CHECK(mt_nifti_write(path, &img, 2, 1) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), path) && strstr(mt_error_msg(), "300") && strstr(mt_error_msg(), "uint8"),
              "%s", mt_error_msg());
    img.hdr.datatype = MT_NIFTI_INT16;
    MT_F32P(img.data)[5] = NAN;
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), path) && strstr(mt_error_msg(), "NaN"), "%s", mt_error_msg());
    MT_F32P(img.data)[5] = 1;
    img.hdr.datatype = MT_NIFTI_RGB24;
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_ERR_UNSUPPORTED && strstr(mt_error_msg(), path));
    img.hdr.datatype = 0;
    CHECK(mt_nifti_write(path, &img, 3, 0) == MT_ERR_INVALID && strstr(mt_error_msg(), "version 3"));
    size_t len1;
    uint8_t *after = slurp(path, &len1);
    CHECK_MSG(before && after && len0 == len1 && memcmp(before, after, len0) == 0,
              "a failed write changed the destination");
    free(before);
    free(after);
    /* no temp files left behind */
    int leftovers = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -c '\\.tmp\\.'", g_dir);
    FILE *ls = popen(cmd, "r");
    if (ls) {
        if (fscanf(ls, "%d", &leftovers) != 1) leftovers = -1;
        pclose(ls);
    }
    CHECK_MSG(leftovers == 0, "%d temp files left", leftovers);
    /* NIfTI-1 cannot hold dim > 32767 (NIfTI-2 can); codes must fit int16 */
    mt_nifti wide;
    mt_nifti_header_default(&wide.hdr);
    wide.data = mt_tensor_zeros(MT_U8, 3, (int64_t[]){1, 1, 40000}, MT_DEVICE_CPU);
    const char *wp = tmp_path("wide.nii.gz");
    CHECK(mt_nifti_write(wp, &wide, 1, 1) == MT_ERR_INVALID);
    CHECK_MSG(strstr(mt_error_msg(), wp) && strstr(mt_error_msg(), "40000"), "%s", mt_error_msg());
    CHECK(mt_nifti_write(wp, &wide, 2, 1) == MT_OK);
    mt_nifti back;
    CHECK(mt_nifti_read(wp, &back) == MT_OK && back.data && back.data->shape[2] == 40000);
    mt_nifti_free(&back);
    mt_nifti_free(&wide);
    img.hdr.sform_code = 40000;
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_ERR_INVALID && strstr(mt_error_msg(), "sform_code"));
    img.hdr.sform_code = 0;
    /* a missing directory; a 2-D tensor */
    const char *nodir = tmp_path("no/such/dir/x.nii");
    CHECK(mt_nifti_write(nodir, &img, 1, 0) == MT_ERR_IO && strstr(mt_error_msg(), nodir));
    mt_tensor_release(img.data);
    img.data = mt_test_rand(2, (int64_t[]){3, 4}, 0, 1);
    CHECK(mt_nifti_write(path, &img, 1, 0) == MT_ERR_INVALID && strstr(mt_error_msg(), "2-D"));
    mt_nifti_free(&img);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    mt_test_seed(9);
    test_round_trips();
    test_native();
    test_shapes_and_strides();
    test_affines();
    test_scaling();
    test_big_endian_and_crafted();
    test_labels();
    test_corrupt();
    test_write_errors();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mt_test_finish();
}
