/* HDF5 store of prepared cases (see data/h5store.h). */
#include "data/h5store.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#ifndef MT_VERSION
#define MT_VERSION "unknown"
#endif

/* ----------------------------------------------------------- helpers */

/* HDF5 keeps the automatic error printing per thread (thread-safe build):
 * switch it off in every thread that calls in. */
static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *ctx) {
    char *buf = ctx;
    if (n == 0 && e->desc) snprintf(buf, 200, "%s", e->desc);
    return 0;
}

/* The innermost HDF5 error message (then clears the stack). */
static const char *h5_err(char buf[200]) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
    H5Eclear2(H5E_DEFAULT);
    if (!buf[0]) snprintf(buf, 200, "unknown HDF5 error");
    return buf;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s ? s : "");
    MT_CHECK(d);
    return d;
}

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    MT_CHECK_MSG(p, "out of memory");
    return p;
}

static hid_t vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* ---------------------------------------------------------- attributes */

static herr_t put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims,
                       const void *data) {
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
    if (space < 0) return -1;
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = -1;
    if (a >= 0) {
        r = H5Awrite(a, mtype, data);
        H5Aclose(a);
    }
    H5Sclose(space);
    return r;
}

static herr_t put_str(hid_t obj, const char *name, const char *s) {
    hid_t t = vlen_str_type();
    const char *p = s ? s : "";
    herr_t r = put_attr(obj, name, t, t, 0, NULL, &p);
    H5Tclose(t);
    return r;
}

static herr_t put_strs(hid_t obj, const char *name, int n, char *const *s) {
    hid_t t = vlen_str_type();
    hsize_t d = (hsize_t)n;
    const char **p = xcalloc((size_t)n, sizeof *p);
    for (int i = 0; i < n; i++) p[i] = s[i] ? s[i] : "";
    herr_t r = put_attr(obj, name, t, t, 1, &d, p);
    free(p);
    H5Tclose(t);
    return r;
}

static herr_t put_f64(hid_t obj, const char *name, int rank, const hsize_t *dims, const double *v) {
    return put_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, rank, dims, v);
}
static herr_t put_i64(hid_t obj, const char *name, int rank, const hsize_t *dims, const int64_t *v) {
    return put_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, rank, dims, v);
}
static herr_t put_i32(hid_t obj, const char *name, int rank, const hsize_t *dims, const int32_t *v) {
    return put_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, rank, dims, v);
}

static herr_t put_norm(hid_t obj, int C, const mt_norm_params *norm) {
    char *schemes[MT_PREP_MAX_CHANNELS];
    int32_t use[MT_PREP_MAX_CHANNELS];
    double mean[MT_PREP_MAX_CHANNELS], sd[MT_PREP_MAX_CHANNELS], clip[MT_PREP_MAX_CHANNELS][2];
    for (int c = 0; c < C; c++) {
        schemes[c] = (char *)mt_norm_scheme_name(norm[c].scheme);
        use[c] = norm[c].use_mask;
        mean[c] = norm[c].mean;
        sd[c] = norm[c].std;
        clip[c][0] = norm[c].clip_lo;
        clip[c][1] = norm[c].clip_hi;
    }
    hsize_t d1 = (hsize_t)C, d2[2] = {(hsize_t)C, 2};
    herr_t r = 0;
    r |= put_strs(obj, "norm_scheme", C, schemes) < 0;
    r |= put_i32(obj, "norm_use_mask", 1, &d1, use) < 0;
    r |= put_f64(obj, "norm_mean", 1, &d1, mean) < 0;
    r |= put_f64(obj, "norm_std", 1, &d1, sd) < 0;
    r |= put_f64(obj, "norm_clip", 2, d2, &clip[0][0]) < 0;
    return r ? -1 : 0;
}

/* ------------------------------------------------------------ datasets */

static herr_t put_dataset(hid_t grp, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims,
                          const void *data, int chunked, int shuffle, int level) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return -1;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked) {
        hsize_t chunk[8];
        for (int i = 0; i < rank; i++) chunk[i] = dims[i] < 64 ? dims[i] : 64;
        if (rank == 4) chunk[0] = 1; /* as chunk_shape below */
        H5Pset_chunk(dcpl, rank, chunk);
        if (shuffle) H5Pset_shuffle(dcpl);
        if (level > 0) H5Pset_deflate(dcpl, (unsigned)level);
    }
    herr_t r = -1;
    hid_t ds = H5Dcreate2(grp, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds >= 0) {
        r = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
        H5Dclose(ds);
    }
    H5Pclose(dcpl);
    H5Sclose(space);
    return r;
}

/* Compressed chunks of a 4-D array, made by the calling (worker) thread
 * so that only the raw chunk writes happen under the writer's lock. Each
 * chunk is the full chunk shape (zero-padded at the edges, as HDF5 stores
 * them), byte-shuffled (HDF5's shuffle filter) if requested, then a zlib
 * stream (HDF5's deflate filter). */
typedef struct {
    hsize_t off[4];
    size_t size;
    unsigned char *buf;
} packed_chunk;

typedef struct {
    hsize_t dims[4], chunk[4];
    int n;
    packed_chunk *c;
} packed_array;

static void chunk_shape(hsize_t chunk[4], const hsize_t dims[4]) {
    chunk[0] = 1;
    for (int i = 1; i < 4; i++) chunk[i] = dims[i] < 64 ? dims[i] : 64;
}

static void packed_free(packed_array *p) {
    for (int i = 0; i < p->n; i++) free(p->c[i].buf);
    free(p->c);
    memset(p, 0, sizeof *p);
}

/* Returns 0, or -1 when zlib fails (no memory). */
static int pack_chunks(packed_array *p, const void *data, size_t esz, const hsize_t dims[4], int shuffle, int level) {
    memset(p, 0, sizeof *p);
    memcpy(p->dims, dims, sizeof p->dims);
    chunk_shape(p->chunk, dims);
    hsize_t nc[4];
    size_t total = 1;
    for (int i = 0; i < 4; i++) {
        nc[i] = (dims[i] + p->chunk[i] - 1) / p->chunk[i];
        total *= (size_t)nc[i];
    }
    size_t cel = (size_t)(p->chunk[0] * p->chunk[1] * p->chunk[2] * p->chunk[3]), cbytes = cel * esz;
    p->c = xcalloc(total, sizeof *p->c);
    unsigned char *raw = xcalloc(cbytes, 1), *shuf = shuffle && esz > 1 ? xcalloc(cbytes, 1) : NULL;
    const unsigned char *src = data;
    int rc = 0;
    for (size_t t = 0; t < total && rc == 0; t++) {
        packed_chunk *pc = &p->c[p->n++];
        size_t r = t;
        for (int i = 3; i >= 0; i--) {
            pc->off[i] = (r % nc[i]) * p->chunk[i];
            r /= nc[i];
        }
        memset(raw, 0, cbytes);
        hsize_t ext[4];
        for (int i = 0; i < 4; i++) ext[i] = dims[i] - pc->off[i] < p->chunk[i] ? dims[i] - pc->off[i] : p->chunk[i];
        for (hsize_t a = 0; a < ext[0]; a++)
            for (hsize_t b = 0; b < ext[1]; b++)
                for (hsize_t c = 0; c < ext[2]; c++) {
                    size_t from = (size_t)((((pc->off[0] + a) * dims[1] + pc->off[1] + b) * dims[2] + pc->off[2] + c) *
                                               dims[3] +
                                           pc->off[3]);
                    size_t to = (size_t)(((a * p->chunk[1] + b) * p->chunk[2] + c) * p->chunk[3]);
                    memcpy(raw + to * esz, src + from * esz, (size_t)ext[3] * esz);
                }
        const unsigned char *in = raw;
        if (shuf) { /* byte j of element i -> shuf[j * cel + i] */
            for (size_t i = 0; i < cel; i++)
                for (size_t j = 0; j < esz; j++) shuf[j * cel + i] = raw[i * esz + j];
            in = shuf;
        }
        uLongf bound = compressBound((uLong)cbytes);
        pc->buf = xcalloc((size_t)bound, 1);
        if (compress2(pc->buf, &bound, in, (uLong)cbytes, level) != Z_OK) rc = -1;
        pc->size = (size_t)bound;
    }
    free(raw);
    free(shuf);
    if (rc) packed_free(p);
    return rc;
}

/* Creates dataset name with the shuffle (if asked) + deflate pipeline and
 * writes the packed chunks raw. */
static herr_t put_packed(hid_t grp, const char *name, hid_t ftype, const packed_array *p, int shuffle, int level) {
    hid_t space = H5Screate_simple(4, p->dims, NULL);
    if (space < 0) return -1;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 4, p->chunk);
    if (shuffle) H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, (unsigned)level);
    herr_t r = -1;
    hid_t ds = H5Dcreate2(grp, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds >= 0) {
        r = 0;
        for (int i = 0; i < p->n && r >= 0; i++) r = H5Dwrite_chunk(ds, H5P_DEFAULT, 0, p->c[i].off, p->c[i].size, p->c[i].buf);
        H5Dclose(ds);
    }
    H5Pclose(dcpl);
    H5Sclose(space);
    return r;
}

/* -------------------------------------------------------------- writer */

struct mt_h5store_writer {
    char *path, *tmp;
    hid_t file, cases;
    int level;
    pthread_mutex_t lock;
    int meta_written, fp_written;
    int num_channels, num_classes;
    int num_ids;
    char **ids;
    unsigned char *written;
};

static int g_tmp_counter;

mt_status mt_h5store_create(mt_h5store_writer **out, const char *path, int compress_level) {
    h5_quiet();
    *out = NULL;
    if (compress_level < 0 || compress_level > 9)
        return mt_error_set(MT_ERR_INVALID, "%s: compression level %d (0..9)", path, compress_level);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    char *dir = xcalloc(dlen + 2, 1);
    if (slash)
        memcpy(dir, path, dlen ? dlen : 1); /* "/x" -> "/" */
    else
        strcpy(dir, ".");
    const char *base = slash ? slash + 1 : path;
    struct stat st;
    if (!*base) {
        free(dir);
        return mt_error_set(MT_ERR_INVALID, "%s: not a file name", path);
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        mt_status s = mt_error_set(MT_ERR_IO, "%s: directory %s does not exist", path, dir);
        free(dir);
        return s;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        free(dir);
        return mt_error_set(MT_ERR_IO, "%s: is a directory", path);
    }
    mt_h5store_writer *w = xcalloc(1, sizeof *w);
    w->path = xstrdup(path);
    size_t n = strlen(dir) + strlen(base) + 64;
    w->tmp = xcalloc(n, 1);
    snprintf(w->tmp, n, "%s/.%s.tmp.%ld.%d", dir, base, (long)getpid(),
             __atomic_fetch_add(&g_tmp_counter, 1, __ATOMIC_RELAXED));
    free(dir);
    w->level = compress_level;
    w->file = w->cases = -1;
    pthread_mutex_init(&w->lock, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    w->file = H5Fcreate(w->tmp, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    char eb[200];
    if (w->file < 0) {
        mt_status s = mt_error_set(MT_ERR_IO, "%s: cannot create temporary file %s (HDF5: %s)", path, w->tmp, h5_err(eb));
        mt_h5store_abort(w);
        return s;
    }
    w->cases = H5Gcreate2(w->file, "cases", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (w->cases < 0) {
        mt_status s = mt_error_set(MT_ERR_IO, "%s: cannot create /cases (HDF5: %s)", path, h5_err(eb));
        mt_h5store_abort(w);
        return s;
    }
    *out = w;
    return MT_OK;
}

static herr_t put_plan(hid_t g, const mt_prep_plan *p) {
    hsize_t d3 = 3;
    herr_t r = 0;
    int32_t oi = p->order_image, ol = p->order_label, oa = p->order_aniso;
    r |= put_f64(g, "target_spacing", 1, &d3, p->target_spacing) < 0;
    r |= put_i32(g, "order_image", 0, NULL, &oi) < 0;
    r |= put_i32(g, "order_label", 0, NULL, &ol) < 0;
    r |= put_i32(g, "order_aniso", 0, NULL, &oa) < 0;
    r |= put_f64(g, "aniso_threshold", 0, NULL, &p->aniso_threshold) < 0;
    r |= put_norm(g, p->num_channels, p->norm) < 0;
    return r ? -1 : 0;
}

mt_status mt_h5store_write_meta(mt_h5store_writer *w, const mt_h5store_meta *m) {
    h5_quiet();
    if (m->num_channels < 1 || m->num_channels > MT_PREP_MAX_CHANNELS || m->num_channels != m->plan.num_channels)
        return mt_error_set(MT_ERR_INVALID, "%s: %d channel(s), plan %d (1..%d)", w->path, m->num_channels,
                            m->plan.num_channels, MT_PREP_MAX_CHANNELS);
    if (m->num_classes < 1 || m->num_classes > 256)
        return mt_error_set(MT_ERR_INVALID, "%s: %d classes (1..256)", w->path, m->num_classes);
    if (m->num_cases < 1) return mt_error_set(MT_ERR_INVALID, "%s: no cases", w->path);
    pthread_mutex_lock(&w->lock);
    mt_status st = MT_OK;
    char eb[200];
    if (w->meta_written) {
        st = mt_error_set(MT_ERR_INVALID, "%s: /meta written twice", w->path);
        goto done;
    }
    hid_t g = H5Gcreate2(w->file, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot create /meta (HDF5: %s)", w->path, h5_err(eb));
        goto done;
    }
    int32_t ver = MT_H5STORE_VERSION, nc = m->num_channels, nk = m->num_classes;
    herr_t r = 0;
    r |= put_str(g, "format", MT_H5STORE_FORMAT) < 0;
    r |= put_i32(g, "format_version", 0, NULL, &ver) < 0;
    r |= put_str(g, "medtrain_version", MT_VERSION) < 0;
    r |= put_str(g, "dataset_name", m->dataset_name) < 0;
    r |= put_str(g, "source_dir", m->source_dir) < 0;
    r |= put_i32(g, "num_channels", 0, NULL, &nc) < 0;
    r |= put_i32(g, "num_classes", 0, NULL, &nk) < 0;
    r |= put_strs(g, "channel_names", m->num_channels, m->channel_names) < 0;
    r |= put_strs(g, "class_names", m->num_classes, m->class_names) < 0;
    r |= put_strs(g, "case_ids", m->num_cases, m->case_ids) < 0;
    r |= put_plan(g, &m->plan) < 0;
    r |= put_str(g, "prepare_params", m->prepare_params ? m->prepare_params : "{}") < 0;
    H5Gclose(g);
    if (r) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot write /meta attributes (HDF5: %s)", w->path, h5_err(eb));
        goto done;
    }
    w->meta_written = 1;
    w->num_channels = m->num_channels;
    w->num_classes = m->num_classes;
    w->num_ids = m->num_cases;
    w->ids = xcalloc((size_t)m->num_cases, sizeof(char *));
    w->written = xcalloc((size_t)m->num_cases, 1);
    for (int i = 0; i < m->num_cases; i++) {
        for (int j = 0; j < i; j++)
            if (!strcmp(m->case_ids[i], m->case_ids[j])) {
                st = mt_error_set(MT_ERR_INVALID, "%s: case id '%s' listed twice", w->path, m->case_ids[i]);
                goto done;
            }
        if (!m->case_ids[i][0] || strchr(m->case_ids[i], '/')) {
            st = mt_error_set(MT_ERR_INVALID, "%s: case id '%s' is empty or holds '/'", w->path, m->case_ids[i]);
            goto done;
        }
        w->ids[i] = xstrdup(m->case_ids[i]);
    }
done:
    pthread_mutex_unlock(&w->lock);
    return st;
}

static int same_shape3(const mt_tensor *t /* (lead, s0, s1, s2)? */, int64_t lead, const int64_t s[3]) {
    return t->ndim == 4 && t->shape[0] == lead && t->shape[1] == s[0] && t->shape[2] == s[1] && t->shape[3] == s[2];
}

mt_status mt_h5store_write_case(mt_h5store_writer *w, const char *id, const mt_tensor *image,
                                const mt_tensor *label, const mt_h5store_case_info *info) {
    h5_quiet();
    const mt_prep_geometry *g = &info->geom;
    char b1[96];
    if (!w->meta_written) return mt_error_set(MT_ERR_INVALID, "%s: case %s written before /meta", w->path, id);
    if (image->dtype != MT_F32 || !same_shape3(image, w->num_channels, g->shape))
        return mt_error_set(MT_ERR_INVALID, "%s: case %s: image %s %s, expected f32 (%d, %lld, %lld, %lld)", w->path, id,
                            mt_dtype_name(image->dtype), mt_tensor_shape_str(image, b1, sizeof b1), w->num_channels,
                            (long long)g->shape[0], (long long)g->shape[1], (long long)g->shape[2]);
    if (label->dtype != MT_U8 || !same_shape3(label, 1, g->shape))
        return mt_error_set(MT_ERR_INVALID, "%s: case %s: label %s %s, expected u8 (1, %lld, %lld, %lld)", w->path, id,
                            mt_dtype_name(label->dtype), mt_tensor_shape_str(label, b1, sizeof b1),
                            (long long)g->shape[0], (long long)g->shape[1], (long long)g->shape[2]);
    if (info->num_channels != w->num_channels || info->num_classes != w->num_classes)
        return mt_error_set(MT_ERR_INVALID, "%s: case %s: info has %d channel(s) / %d classes, meta %d / %d", w->path, id,
                            info->num_channels, info->num_classes, w->num_channels, w->num_classes);
    int slot = -1;
    for (int i = 0; i < w->num_ids; i++)
        if (!strcmp(w->ids[i], id)) slot = i;
    if (slot < 0) return mt_error_set(MT_ERR_INVALID, "%s: case %s is not listed in /meta case_ids", w->path, id);
    mt_tensor *x = mt_tensor_contiguous(image), *y = mt_tensor_contiguous(label);
    mt_status st = MT_OK;
    char eb[200];
    hsize_t di[4] = {(hsize_t)w->num_channels, (hsize_t)g->shape[0], (hsize_t)g->shape[1], (hsize_t)g->shape[2]};
    hsize_t dl[4] = {1, di[1], di[2], di[3]};
    packed_array pi, pl;
    memset(&pi, 0, sizeof pi);
    memset(&pl, 0, sizeof pl);
    if (w->level > 0 && (pack_chunks(&pi, MT_F32P(x), sizeof(float), di, 1, w->level) != 0 ||
                         pack_chunks(&pl, mt_tensor_data(y), 1, dl, 0, w->level) != 0)) {
        packed_free(&pi);
        mt_tensor_release(x);
        mt_tensor_release(y);
        return mt_error_set(MT_ERR_NOMEM, "%s: case %s: compressing failed (out of memory)", w->path, id);
    }
    pthread_mutex_lock(&w->lock);
    if (w->written[slot]) {
        st = mt_error_set(MT_ERR_INVALID, "%s: case %s written twice", w->path, id);
        goto done;
    }
    hid_t grp = H5Gcreate2(w->cases, id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot create /cases/%s (HDF5: %s)", w->path, id, h5_err(eb));
        goto done;
    }
    herr_t r = 0;
    if (w->level > 0) {
        r |= put_packed(grp, "image", H5T_IEEE_F32LE, &pi, 1, w->level) < 0;
        r |= put_packed(grp, "label", H5T_STD_U8LE, &pl, 0, w->level) < 0;
    } else {
        r |= put_dataset(grp, "image", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, di, MT_F32P(x), 1, 0, 0) < 0;
        r |= put_dataset(grp, "label", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, dl, mt_tensor_data(y), 1, 0, 0) < 0;
    }
    hsize_t d3 = 3, d44[2] = {4, 4}, d23[2] = {2, 3}, dk = (hsize_t)info->num_classes;
    int64_t box[2][3];
    int32_t oi[3], ol[3];
    for (int a = 0; a < 3; a++) {
        box[0][a] = g->crop_lo[a];
        box[1][a] = g->crop_hi[a];
        oi[a] = g->order_image[a];
        ol[a] = g->order_label[a];
    }
    r |= put_i64(grp, "orig_shape", 1, &d3, g->orig_shape) < 0;
    r |= put_f64(grp, "orig_spacing", 1, &d3, g->orig_spacing) < 0;
    r |= put_f64(grp, "orig_affine", 2, d44, &g->orig_affine[0][0]) < 0;
    r |= put_i64(grp, "crop_box", 2, d23, &box[0][0]) < 0;
    r |= put_f64(grp, "target_spacing", 1, &d3, g->target_spacing) < 0;
    r |= put_i64(grp, "shape", 1, &d3, g->shape) < 0;
    r |= put_f64(grp, "spacing", 1, &d3, g->spacing) < 0;
    r |= put_f64(grp, "affine", 2, d44, &g->affine[0][0]) < 0;
    r |= put_i32(grp, "order_image", 1, &d3, oi) < 0;
    r |= put_i32(grp, "order_label", 1, &d3, ol) < 0;
    r |= put_norm(grp, info->num_channels, info->norm) < 0;
    r |= put_i64(grp, "class_voxels", 1, &dk, info->class_voxels) < 0;
    H5Gclose(grp);
    if (r) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot write /cases/%s (HDF5: %s)", w->path, id, h5_err(eb));
        goto done;
    }
    w->written[slot] = 1;
done:
    pthread_mutex_unlock(&w->lock);
    packed_free(&pi);
    packed_free(&pl);
    mt_tensor_release(x);
    mt_tensor_release(y);
    return st;
}

mt_status mt_h5store_write_fingerprint(mt_h5store_writer *w, const mt_fingerprint *fp, const char *json) {
    h5_quiet();
    if (fp->num_channels < 1 || fp->num_channels > MT_PREP_MAX_CHANNELS || fp->num_cases < 1 || fp->num_classes < 1)
        return mt_error_set(MT_ERR_INVALID, "%s: empty fingerprint", w->path);
    char *own = json ? NULL : mt_fingerprint_to_json(fp);
    mt_status st = MT_OK;
    char eb[200];
    pthread_mutex_lock(&w->lock);
    if (w->fp_written) {
        st = mt_error_set(MT_ERR_INVALID, "%s: /fingerprint written twice", w->path);
        goto done;
    }
    hid_t g = H5Gcreate2(w->file, "fingerprint", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot create /fingerprint (HDF5: %s)", w->path, h5_err(eb));
        goto done;
    }
    int N = fp->num_cases, C = fp->num_channels, K = fp->num_classes;
    hsize_t d3 = 3, dn3[2] = {(hsize_t)N, 3}, dk = (hsize_t)K, dc8[2] = {(hsize_t)C, 8};
    double *inten = xcalloc((size_t)C * 8, sizeof(double));
    for (int c = 0; c < C; c++) {
        const mt_intensity_stats *s = &fp->stats[c];
        double row[8] = {(double)s->n, s->mean, s->std, s->min, s->max, s->median, s->p00_5, s->p99_5};
        memcpy(inten + c * 8, row, sizeof row);
    }
    herr_t r = 0;
    r |= put_str(g, "json", json ? json : own) < 0;
    r |= put_f64(g, "median_spacing", 1, &d3, fp->median_spacing) < 0;
    r |= put_f64(g, "median_shape_after_crop", 1, &d3, fp->median_shape_after_crop) < 0;
    r |= put_f64(g, "median_relative_size_after_crop", 0, NULL, &fp->median_relative_size_after_crop) < 0;
    r |= put_i64(g, "samples_per_case", 0, NULL, &fp->samples_per_case) < 0;
    r |= put_dataset(g, "spacing", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dn3, fp->spacing, 0, 0, 0) < 0;
    r |= put_dataset(g, "shape_before_crop", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, dn3, fp->shape_before_crop, 0, 0, 0) < 0;
    r |= put_dataset(g, "shape_after_crop", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, dn3, fp->shape_after_crop, 0, 0, 0) < 0;
    r |= put_dataset(g, "class_voxels", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &dk, fp->class_voxels, 0, 0, 0) < 0;
    r |= put_dataset(g, "intensity", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dc8, inten, 0, 0, 0) < 0;
    free(inten);
    H5Gclose(g);
    if (r) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot write /fingerprint (HDF5: %s)", w->path, h5_err(eb));
        goto done;
    }
    w->fp_written = 1;
done:
    pthread_mutex_unlock(&w->lock);
    free(own);
    return st;
}

static void writer_free(mt_h5store_writer *w) {
    for (int i = 0; i < w->num_ids; i++) free(w->ids[i]);
    free(w->ids);
    free(w->written);
    free(w->path);
    free(w->tmp);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void mt_h5store_abort(mt_h5store_writer *w) {
    if (!w) return;
    h5_quiet();
    if (w->cases >= 0) H5Gclose(w->cases);
    if (w->file >= 0) H5Fclose(w->file);
    H5Eclear2(H5E_DEFAULT);
    unlink(w->tmp);
    writer_free(w);
}

static int fsync_path(const char *p, int dir) {
    int fd = open(p, dir ? O_RDONLY : O_RDWR);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

mt_status mt_h5store_commit(mt_h5store_writer *w) {
    h5_quiet();
    mt_status st = MT_OK;
    char eb[200];
    if (!w->meta_written)
        st = mt_error_set(MT_ERR_INVALID, "%s: /meta was not written", w->path);
    else if (!w->fp_written)
        st = mt_error_set(MT_ERR_INVALID, "%s: /fingerprint was not written", w->path);
    else
        for (int i = 0; i < w->num_ids; i++)
            if (!w->written[i]) {
                st = mt_error_set(MT_ERR_INVALID, "%s: case %s was not written", w->path, w->ids[i]);
                break;
            }
    if (st != MT_OK) {
        mt_h5store_abort(w);
        return st;
    }
    H5Gclose(w->cases);
    w->cases = -1;
    herr_t r = H5Fclose(w->file);
    w->file = -1;
    if (r < 0) {
        st = mt_error_set(MT_ERR_IO, "%s: closing %s failed (HDF5: %s)", w->path, w->tmp, h5_err(eb));
        mt_h5store_abort(w);
        return st;
    }
    if (fsync_path(w->tmp, 0) != 0 || rename(w->tmp, w->path) != 0) {
        st = mt_error_set(MT_ERR_IO, "%s: cannot move %s into place: %s", w->path, w->tmp, strerror(errno));
        mt_h5store_abort(w);
        return st;
    }
    /* the rename is durable once the directory is synced */
    char *dir = xstrdup(w->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash == dir ? (void)(slash[1] = 0) : (void)(*slash = 0);
    else
        strcpy(dir, ".");
    fsync_path(dir, 1);
    free(dir);
    writer_free(w);
    return MT_OK;
}

/* -------------------------------------------------------------- reader */

struct mt_h5store {
    char *path;
    hid_t file;
    mt_h5store_meta meta;
};

typedef struct {
    const char *path;  /* file */
    const char *where; /* object path, e.g. "/cases/x" */
} rctx;

static mt_status missing_attr(const rctx *c, const char *name) {
    return mt_error_set(MT_ERR_FORMAT, "%s: %s: missing attribute '%s'", c->path, c->where, name);
}

static int class_ok(hid_t ftype, H5T_class_t want) {
    H5T_class_t k = H5Tget_class(ftype);
    if (want == H5T_FLOAT) return k == H5T_FLOAT || k == H5T_INTEGER;
    return k == want;
}

static const char *class_name(H5T_class_t k) {
    switch (k) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    default: return "other";
    }
}

/* Reads attribute name of obj into out, checking its class and shape
 * (rank 0 accepts a scalar or a one-element array). */
static mt_status get_attr(const rctx *c, hid_t obj, const char *name, hid_t mtype, H5T_class_t cls, int rank,
                          const hsize_t *dims, void *out) {
    if (H5Aexists(obj, name) <= 0) return missing_attr(c, name);
    char eb[200];
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return mt_error_set(MT_ERR_FORMAT, "%s: %s: cannot open attribute '%s' (HDF5: %s)", c->path, c->where, name, h5_err(eb));
    hid_t space = H5Aget_space(a), ft = H5Aget_type(a);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t got[8] = {0};
    if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(space, got, NULL);
    mt_status st = MT_OK;
    int ok = 1;
    if (rank == 0) {
        ok = nd == 0 || (nd == 1 && got[0] == 1);
    } else {
        ok = nd == rank;
        for (int i = 0; ok && i < rank; i++) ok = got[i] == dims[i];
    }
    if (!class_ok(ft, cls)) {
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s: attribute '%s' is %s, expected %s", c->path, c->where, name,
                          class_name(H5Tget_class(ft)), class_name(cls));
    } else if (!ok) {
        char want[64] = "scalar", have[64] = "scalar";
        if (rank > 0) {
            int k = snprintf(want, sizeof want, "(");
            for (int i = 0; i < rank; i++) k += snprintf(want + k, sizeof want - k, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
            snprintf(want + k, sizeof want - k, ")");
        }
        if (nd > 0) {
            int k = snprintf(have, sizeof have, "(");
            for (int i = 0; i < nd && i < 8; i++) k += snprintf(have + k, sizeof have - k, "%s%llu", i ? ", " : "", (unsigned long long)got[i]);
            snprintf(have + k, sizeof have - k, ")");
        }
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s: attribute '%s' has shape %s, expected %s", c->path, c->where, name,
                          have, want);
    } else if (H5Aread(a, mtype, out) < 0) {
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s: cannot read attribute '%s' (HDF5: %s)", c->path, c->where, name, h5_err(eb));
    }
    H5Tclose(ft);
    H5Sclose(space);
    H5Aclose(a);
    return st;
}

static mt_status get_f64(const rctx *c, hid_t obj, const char *name, int rank, const hsize_t *dims, double *out) {
    return get_attr(c, obj, name, H5T_NATIVE_DOUBLE, H5T_FLOAT, rank, dims, out);
}
static mt_status get_i64(const rctx *c, hid_t obj, const char *name, int rank, const hsize_t *dims, int64_t *out) {
    return get_attr(c, obj, name, H5T_NATIVE_INT64, H5T_INTEGER, rank, dims, out);
}
static mt_status get_i32(const rctx *c, hid_t obj, const char *name, int rank, const hsize_t *dims, int32_t *out) {
    return get_attr(c, obj, name, H5T_NATIVE_INT32, H5T_INTEGER, rank, dims, out);
}

/* String attribute(s): a scalar (n < 0: *out is one malloc'd string) or a
 * 1-D array of n strings (n == 0: any length, count in *count). Variable- and
 * fixed-length strings are both read. */
static mt_status get_strings(const rctx *c, hid_t obj, const char *name, int n, char ***out, int *count) {
    *out = NULL;
    if (H5Aexists(obj, name) <= 0) return missing_attr(c, name);
    char eb[200];
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return mt_error_set(MT_ERR_FORMAT, "%s: %s: cannot open attribute '%s' (HDF5: %s)", c->path, c->where, name, h5_err(eb));
    hid_t space = H5Aget_space(a), ft = H5Aget_type(a);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t len = 1;
    if (nd == 1) H5Sget_simple_extent_dims(space, &len, NULL);
    mt_status st = MT_OK;
    if (H5Tget_class(ft) != H5T_STRING) {
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s: attribute '%s' is %s, expected string", c->path, c->where, name,
                          class_name(H5Tget_class(ft)));
    } else if ((n < 0 && nd != 0) || (n >= 0 && nd != 1) || (n > 0 && len != (hsize_t)n)) {
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s: attribute '%s' holds %llu string(s) (rank %d), expected %s%d", c->path,
                          c->where, name, (unsigned long long)(nd == 0 ? 1 : len), nd, n < 0 ? "a scalar " : "",
                          n < 0 ? 1 : n);
    } else {
        size_t k = (size_t)len;
        char **res = xcalloc(k, sizeof(char *));
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = vlen_str_type();
            char **tmp = xcalloc(k, sizeof(char *));
            if (H5Aread(a, mt, tmp) < 0) {
                st = mt_error_set(MT_ERR_FORMAT, "%s: %s: cannot read attribute '%s' (HDF5: %s)", c->path, c->where, name, h5_err(eb));
            } else {
                for (size_t i = 0; i < k; i++) {
                    res[i] = xstrdup(tmp[i]);
                    if (tmp[i]) H5free_memory(tmp[i]);
                }
            }
            free(tmp);
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(ft);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz);
            char *buf = xcalloc(k * sz + 1, 1);
            if (H5Aread(a, mt, buf) < 0) {
                st = mt_error_set(MT_ERR_FORMAT, "%s: %s: cannot read attribute '%s' (HDF5: %s)", c->path, c->where, name, h5_err(eb));
            } else {
                for (size_t i = 0; i < k; i++) {
                    res[i] = xcalloc(sz + 1, 1);
                    memcpy(res[i], buf + i * sz, sz);
                }
            }
            free(buf);
            H5Tclose(mt);
        }
        if (st == MT_OK) {
            *out = res;
            if (count) *count = (int)k;
        } else {
            for (size_t i = 0; i < k; i++) free(res[i]);
            free(res);
        }
    }
    H5Tclose(ft);
    H5Sclose(space);
    H5Aclose(a);
    return st;
}

static mt_status get_str(const rctx *c, hid_t obj, const char *name, char **out) {
    char **v;
    *out = NULL;
    MT_TRY(get_strings(c, obj, name, -1, &v, NULL));
    *out = v[0];
    free(v);
    return MT_OK;
}

static void free_strs(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static mt_status parse_order(const rctx *c, const char *name, int32_t v, mt_interp *out) {
    if (v != MT_INTERP_NEAREST && v != MT_INTERP_LINEAR && v != MT_INTERP_CUBIC)
        return mt_error_set(MT_ERR_FORMAT, "%s: %s: attribute '%s' = %d is no interpolation order (0, 1, 3)", c->path,
                            c->where, name, v);
    *out = (mt_interp)v;
    return MT_OK;
}

static mt_status get_norm(const rctx *c, hid_t obj, int C, mt_norm_params *norm) {
    char **schemes = NULL;
    int32_t use[MT_PREP_MAX_CHANNELS];
    double mean[MT_PREP_MAX_CHANNELS], sd[MT_PREP_MAX_CHANNELS], clip[MT_PREP_MAX_CHANNELS][2];
    hsize_t d1 = (hsize_t)C, d2[2] = {(hsize_t)C, 2};
    mt_status st = get_strings(c, obj, "norm_scheme", C, &schemes, NULL);
    if (st == MT_OK) st = get_i32(c, obj, "norm_use_mask", 1, &d1, use);
    if (st == MT_OK) st = get_f64(c, obj, "norm_mean", 1, &d1, mean);
    if (st == MT_OK) st = get_f64(c, obj, "norm_std", 1, &d1, sd);
    if (st == MT_OK) st = get_f64(c, obj, "norm_clip", 2, d2, &clip[0][0]);
    for (int i = 0; st == MT_OK && i < C; i++) {
        st = mt_norm_scheme_parse(schemes[i], &norm[i].scheme);
        if (st != MT_OK) st = mt_error_prefix(st, "%s: %s: norm_scheme[%d]: ", c->path, c->where, i);
        norm[i].use_mask = use[i];
        norm[i].mean = mean[i];
        norm[i].std = sd[i];
        norm[i].clip_lo = clip[i][0];
        norm[i].clip_hi = clip[i][1];
    }
    free_strs(schemes, C);
    return st;
}

void mt_h5store_meta_free(mt_h5store_meta *m) {
    free(m->dataset_name);
    free(m->source_dir);
    free(m->medtrain_version);
    free_strs(m->channel_names, m->num_channels);
    free_strs(m->class_names, m->num_classes);
    free_strs(m->case_ids, m->num_cases);
    free(m->prepare_params);
    memset(m, 0, sizeof *m);
}

static mt_status read_meta(mt_h5store *s) {
    rctx c = {s->path, "/meta"};
    mt_h5store_meta *m = &s->meta;
    if (H5Lexists(s->file, "meta", H5P_DEFAULT) <= 0)
        return mt_error_set(MT_ERR_FORMAT, "%s: no /meta group: not a medtrain prepared store", s->path);
    hid_t g = H5Gopen2(s->file, "meta", H5P_DEFAULT);
    if (g < 0) return mt_error_set(MT_ERR_FORMAT, "%s: /meta is not a group", s->path);
    char *format = NULL;
    int32_t ver = 0, nc = 0, nk = 0, oi = 0, ol = 0, oa = 0;
    hsize_t d3 = 3;
    mt_status st = get_str(&c, g, "format", &format);
    if (st == MT_OK && strcmp(format, MT_H5STORE_FORMAT))
        st = mt_error_set(MT_ERR_FORMAT, "%s: /meta format is '%s', expected '%s'", s->path, format, MT_H5STORE_FORMAT);
    free(format);
    if (st == MT_OK) st = get_i32(&c, g, "format_version", 0, NULL, &ver);
    if (st == MT_OK && ver != MT_H5STORE_VERSION)
        st = mt_error_set(MT_ERR_FORMAT, "%s: store format version %d; this medtrain reads version %d (run prepare again)",
                          s->path, ver, MT_H5STORE_VERSION);
    if (st == MT_OK) st = get_str(&c, g, "medtrain_version", &m->medtrain_version);
    if (st == MT_OK) st = get_str(&c, g, "dataset_name", &m->dataset_name);
    if (st == MT_OK) st = get_str(&c, g, "source_dir", &m->source_dir);
    if (st == MT_OK) st = get_i32(&c, g, "num_channels", 0, NULL, &nc);
    if (st == MT_OK) st = get_i32(&c, g, "num_classes", 0, NULL, &nk);
    if (st == MT_OK && (nc < 1 || nc > MT_PREP_MAX_CHANNELS || nk < 1 || nk > 256))
        st = mt_error_set(MT_ERR_FORMAT, "%s: /meta: %d channel(s) / %d classes out of range", s->path, nc, nk);
    if (st == MT_OK) {
        st = get_strings(&c, g, "channel_names", nc, &m->channel_names, NULL);
        if (st == MT_OK) m->num_channels = nc;
    }
    if (st == MT_OK) {
        st = get_strings(&c, g, "class_names", nk, &m->class_names, NULL);
        if (st == MT_OK) m->num_classes = nk;
    }
    if (st == MT_OK) st = get_strings(&c, g, "case_ids", 0, &m->case_ids, &m->num_cases);
    if (st == MT_OK) {
        m->plan.num_channels = nc;
        st = get_f64(&c, g, "target_spacing", 1, &d3, m->plan.target_spacing);
    }
    if (st == MT_OK) st = get_i32(&c, g, "order_image", 0, NULL, &oi);
    if (st == MT_OK) st = get_i32(&c, g, "order_label", 0, NULL, &ol);
    if (st == MT_OK) st = get_i32(&c, g, "order_aniso", 0, NULL, &oa);
    if (st == MT_OK) st = parse_order(&c, "order_image", oi, &m->plan.order_image);
    if (st == MT_OK) st = parse_order(&c, "order_label", ol, &m->plan.order_label);
    if (st == MT_OK) st = parse_order(&c, "order_aniso", oa, &m->plan.order_aniso);
    if (st == MT_OK) st = get_f64(&c, g, "aniso_threshold", 0, NULL, &m->plan.aniso_threshold);
    if (st == MT_OK) st = get_norm(&c, g, nc, m->plan.norm);
    if (st == MT_OK) st = get_str(&c, g, "prepare_params", &m->prepare_params);
    H5Gclose(g);
    if (st != MT_OK) return st;
    if (H5Lexists(s->file, "cases", H5P_DEFAULT) <= 0)
        return mt_error_set(MT_ERR_FORMAT, "%s: no /cases group", s->path);
    hid_t cg = H5Gopen2(s->file, "cases", H5P_DEFAULT);
    if (cg < 0) return mt_error_set(MT_ERR_FORMAT, "%s: /cases is not a group", s->path);
    for (int i = 0; i < m->num_cases && st == MT_OK; i++)
        if (!m->case_ids[i][0] || strchr(m->case_ids[i], '/') || H5Lexists(cg, m->case_ids[i], H5P_DEFAULT) <= 0)
            st = mt_error_set(MT_ERR_FORMAT, "%s: case '%s' is listed in /meta case_ids but /cases/%s is missing", s->path,
                              m->case_ids[i], m->case_ids[i]);
    H5Gclose(cg);
    H5Eclear2(H5E_DEFAULT);
    return st;
}

mt_status mt_h5store_open(mt_h5store **out, const char *path) {
    h5_quiet();
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return mt_error_set(MT_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return mt_error_set(MT_ERR_IO, "%s: is a directory, expected an HDF5 store", path);
    htri_t is = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is <= 0) return mt_error_set(MT_ERR_FORMAT, "%s: not an HDF5 file (run `medtrain prepare` to make a store)", path);
    char eb[200];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) return mt_error_set(MT_ERR_IO, "%s: cannot open (HDF5: %s)", path, h5_err(eb));
    mt_h5store *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(path);
    s->file = f;
    mt_status st = read_meta(s);
    if (st != MT_OK) {
        mt_h5store_close(s);
        return st;
    }
    *out = s;
    return MT_OK;
}

void mt_h5store_close(mt_h5store *s) {
    if (!s) return;
    h5_quiet();
    if (s->file >= 0) H5Fclose(s->file);
    H5Eclear2(H5E_DEFAULT);
    mt_h5store_meta_free(&s->meta);
    free(s->path);
    free(s);
}

const char *mt_h5store_path(const mt_h5store *s) { return s->path; }
const mt_h5store_meta *mt_h5store_get_meta(const mt_h5store *s) { return &s->meta; }
int mt_h5store_num_cases(const mt_h5store *s) { return s->meta.num_cases; }

const char *mt_h5store_case_id(const mt_h5store *s, int i) {
    MT_CHECK_MSG(i >= 0 && i < s->meta.num_cases, "h5store: case %d of %d", i, s->meta.num_cases);
    return s->meta.case_ids[i];
}

int mt_h5store_find(const mt_h5store *s, const char *id) {
    for (int i = 0; i < s->meta.num_cases; i++)
        if (!strcmp(s->meta.case_ids[i], id)) return i;
    return -1;
}

/* Opens dataset name in grp, checking class and shape (dims[i] < 0: any). */
static mt_status open_dataset(const rctx *c, hid_t grp, const char *name, H5T_class_t cls, int rank,
                              const int64_t *dims, hid_t *out) {
    *out = -1;
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0)
        return mt_error_set(MT_ERR_FORMAT, "%s: %s: missing dataset '%s'", c->path, c->where, name);
    char eb[200];
    hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT);
    if (ds < 0) return mt_error_set(MT_ERR_FORMAT, "%s: %s/%s is not a dataset (HDF5: %s)", c->path, c->where, name, h5_err(eb));
    hid_t space = H5Dget_space(ds), ft = H5Dget_type(ds);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t got[8] = {0};
    if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(space, got, NULL);
    mt_status st = MT_OK;
    int ok = nd == rank;
    for (int i = 0; ok && i < rank; i++) ok = dims[i] < 0 || got[i] == (hsize_t)dims[i];
    if (H5Tget_class(ft) != cls) {
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s/%s is %s, expected %s", c->path, c->where, name,
                          class_name(H5Tget_class(ft)), class_name(cls));
    } else if (!ok) {
        char want[96], have[96];
        int k = snprintf(want, sizeof want, "(");
        for (int i = 0; i < rank; i++) {
            if (dims[i] < 0)
                k += snprintf(want + k, sizeof want - k, "%s*", i ? ", " : "");
            else
                k += snprintf(want + k, sizeof want - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
        }
        snprintf(want + k, sizeof want - k, ")");
        k = snprintf(have, sizeof have, "(");
        for (int i = 0; i < nd && i < 8; i++) k += snprintf(have + k, sizeof have - k, "%s%llu", i ? ", " : "", (unsigned long long)got[i]);
        snprintf(have + k, sizeof have - k, ")");
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s/%s has shape %s, expected %s", c->path, c->where, name, have, want);
    }
    H5Tclose(ft);
    H5Sclose(space);
    if (st != MT_OK) {
        H5Dclose(ds);
        return st;
    }
    *out = ds;
    return MT_OK;
}

static mt_status read_dataset(const rctx *c, hid_t grp, const char *name, hid_t mtype, H5T_class_t cls, int rank,
                              const int64_t *dims, void *out) {
    hid_t ds;
    MT_TRY(open_dataset(c, grp, name, cls, rank, dims, &ds));
    char eb[200];
    mt_status st = MT_OK;
    if (H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        st = mt_error_set(MT_ERR_FORMAT, "%s: %s/%s: read failed (HDF5: %s)", c->path, c->where, name, h5_err(eb));
    H5Dclose(ds);
    return st;
}

static mt_status read_case_info(const rctx *c, hid_t g, const mt_h5store_meta *m, mt_h5store_case_info *info) {
    memset(info, 0, sizeof *info);
    mt_prep_geometry *ge = &info->geom;
    hsize_t d3 = 3, d44[2] = {4, 4}, d23[2] = {2, 3}, dk = (hsize_t)m->num_classes;
    int64_t box[2][3];
    int32_t oi[3], ol[3];
    info->num_channels = m->num_channels;
    info->num_classes = m->num_classes;
    MT_TRY(get_i64(c, g, "orig_shape", 1, &d3, ge->orig_shape));
    MT_TRY(get_f64(c, g, "orig_spacing", 1, &d3, ge->orig_spacing));
    MT_TRY(get_f64(c, g, "orig_affine", 2, d44, &ge->orig_affine[0][0]));
    MT_TRY(get_i64(c, g, "crop_box", 2, d23, &box[0][0]));
    MT_TRY(get_f64(c, g, "target_spacing", 1, &d3, ge->target_spacing));
    MT_TRY(get_i64(c, g, "shape", 1, &d3, ge->shape));
    MT_TRY(get_f64(c, g, "spacing", 1, &d3, ge->spacing));
    MT_TRY(get_f64(c, g, "affine", 2, d44, &ge->affine[0][0]));
    MT_TRY(get_i32(c, g, "order_image", 1, &d3, oi));
    MT_TRY(get_i32(c, g, "order_label", 1, &d3, ol));
    for (int a = 0; a < 3; a++) {
        ge->crop_lo[a] = box[0][a];
        ge->crop_hi[a] = box[1][a];
        MT_TRY(parse_order(c, "order_image", oi[a], &ge->order_image[a]));
        MT_TRY(parse_order(c, "order_label", ol[a], &ge->order_label[a]));
        if (ge->shape[a] < 1 || ge->orig_shape[a] < 1 || box[0][a] < 0 || box[0][a] >= box[1][a] ||
            box[1][a] > ge->orig_shape[a])
            return mt_error_set(MT_ERR_FORMAT, "%s: %s: inconsistent geometry on axis %d (shape %lld, source %lld, crop [%lld, %lld))",
                                c->path, c->where, a, (long long)ge->shape[a], (long long)ge->orig_shape[a],
                                (long long)box[0][a], (long long)box[1][a]);
    }
    MT_TRY(get_norm(c, g, m->num_channels, info->norm));
    MT_TRY(get_i64(c, g, "class_voxels", 1, &dk, info->class_voxels));
    return MT_OK;
}

mt_status mt_h5store_load_case(mt_h5store *s, int i, mt_tensor **image, mt_tensor **label, mt_h5store_case_info *info) {
    h5_quiet();
    if (image) *image = NULL;
    if (label) *label = NULL;
    if (i < 0 || i >= s->meta.num_cases)
        return mt_error_set(MT_ERR_INVALID, "%s: case index %d out of range (%d cases)", s->path, i, s->meta.num_cases);
    const char *id = s->meta.case_ids[i];
    size_t n = strlen(id) + 16;
    char *where = xcalloc(n, 1);
    snprintf(where, n, "/cases/%s", id);
    rctx c = {s->path, where};
    hid_t g = H5Gopen2(s->file, where, H5P_DEFAULT);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        mt_status st = mt_error_set(MT_ERR_FORMAT, "%s: missing group %s", s->path, where);
        free(where);
        return st;
    }
    mt_h5store_case_info ci;
    mt_status st = read_case_info(&c, g, &s->meta, &ci);
    mt_tensor *x = NULL, *y = NULL;
    if (st == MT_OK && image) {
        int64_t dims[4] = {s->meta.num_channels, ci.geom.shape[0], ci.geom.shape[1], ci.geom.shape[2]};
        x = mt_tensor_new(MT_F32, 4, dims, MT_DEVICE_CPU);
        st = read_dataset(&c, g, "image", H5T_NATIVE_FLOAT, H5T_FLOAT, 4, dims, MT_F32P(x));
    }
    if (st == MT_OK && label) {
        int64_t dims[4] = {1, ci.geom.shape[0], ci.geom.shape[1], ci.geom.shape[2]};
        y = mt_tensor_new(MT_U8, 4, dims, MT_DEVICE_CPU);
        st = read_dataset(&c, g, "label", H5T_NATIVE_UINT8, H5T_INTEGER, 4, dims, mt_tensor_data(y));
    }
    H5Gclose(g);
    free(where);
    if (st != MT_OK) {
        if (x) mt_tensor_release(x);
        if (y) mt_tensor_release(y);
        return st;
    }
    if (image) *image = x;
    if (label) *label = y;
    if (info) *info = ci;
    return MT_OK;
}

mt_status mt_h5store_read_fingerprint(mt_h5store *s, mt_fingerprint *fp, char **json) {
    h5_quiet();
    memset(fp, 0, sizeof *fp);
    if (json) *json = NULL;
    rctx c = {s->path, "/fingerprint"};
    if (H5Lexists(s->file, "fingerprint", H5P_DEFAULT) <= 0)
        return mt_error_set(MT_ERR_FORMAT, "%s: missing group /fingerprint", s->path);
    hid_t g = H5Gopen2(s->file, "fingerprint", H5P_DEFAULT);
    if (g < 0) return mt_error_set(MT_ERR_FORMAT, "%s: /fingerprint is not a group", s->path);
    int N = s->meta.num_cases, C = s->meta.num_channels, K = s->meta.num_classes;
    fp->num_cases = N;
    fp->num_channels = C;
    fp->num_classes = K;
    fp->spacing = xcalloc((size_t)N, sizeof *fp->spacing);
    fp->shape_before_crop = xcalloc((size_t)N, sizeof *fp->shape_before_crop);
    fp->shape_after_crop = xcalloc((size_t)N, sizeof *fp->shape_after_crop);
    fp->class_voxels = xcalloc((size_t)K, sizeof(int64_t));
    double *inten = xcalloc((size_t)C * 8, sizeof(double));
    hsize_t d3 = 3;
    int64_t dn3[2] = {N, 3}, dk = K, dc8[2] = {C, 8};
    mt_status st = get_f64(&c, g, "median_spacing", 1, &d3, fp->median_spacing);
    if (st == MT_OK) st = get_f64(&c, g, "median_shape_after_crop", 1, &d3, fp->median_shape_after_crop);
    if (st == MT_OK) st = get_f64(&c, g, "median_relative_size_after_crop", 0, NULL, &fp->median_relative_size_after_crop);
    if (st == MT_OK) st = get_i64(&c, g, "samples_per_case", 0, NULL, &fp->samples_per_case);
    if (st == MT_OK) st = read_dataset(&c, g, "spacing", H5T_NATIVE_DOUBLE, H5T_FLOAT, 2, dn3, fp->spacing);
    if (st == MT_OK)
        st = read_dataset(&c, g, "shape_before_crop", H5T_NATIVE_INT64, H5T_INTEGER, 2, dn3, fp->shape_before_crop);
    if (st == MT_OK)
        st = read_dataset(&c, g, "shape_after_crop", H5T_NATIVE_INT64, H5T_INTEGER, 2, dn3, fp->shape_after_crop);
    if (st == MT_OK) st = read_dataset(&c, g, "class_voxels", H5T_NATIVE_INT64, H5T_INTEGER, 1, &dk, fp->class_voxels);
    if (st == MT_OK) st = read_dataset(&c, g, "intensity", H5T_NATIVE_DOUBLE, H5T_FLOAT, 2, dc8, inten);
    if (st == MT_OK && json) st = get_str(&c, g, "json", json);
    for (int ch = 0; st == MT_OK && ch < C; ch++) {
        const double *r = inten + ch * 8;
        mt_intensity_stats *t = &fp->stats[ch];
        t->n = (int64_t)r[0];
        t->mean = r[1];
        t->std = r[2];
        t->min = r[3];
        t->max = r[4];
        t->median = r[5];
        t->p00_5 = r[6];
        t->p99_5 = r[7];
    }
    free(inten);
    H5Gclose(g);
    if (st != MT_OK) {
        mt_fingerprint_free(fp);
        if (json) {
            free(*json);
            *json = NULL;
        }
    }
    return st;
}
