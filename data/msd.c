/* MSD / nnU-Net dataset folders and splits: see data/msd.h. */
#include "data/msd.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"

/* ------------------------------------------------------------ helpers */

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    MT_CHECK_MSG(d, "msd: out of host memory");
    return d;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    MT_CHECK_MSG(p, "msd: out of host memory");
    return p;
}

#ifdef __GNUC__
__attribute__((format(printf, 1, 2)))
#endif
static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    MT_CHECK(n >= 0);
    char *s = malloc((size_t)n + 1);
    MT_CHECK_MSG(s, "msd: out of host memory");
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* root + "/" + rel, with a leading "./" of rel dropped. */
static char *join(const char *root, const char *rel) {
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    size_t n = strlen(root);
    int slash = n > 0 && root[n - 1] == '/';
    return str_printf("%s%s%s", root, slash ? "" : "/", rel);
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_case(mt_msd_case *c) {
    free(c->id);
    for (int f = 0; f < c->num_files; f++) free(c->images[f]);
    free(c->images);
    free(c->label);
    memset(c, 0, sizeof *c);
}

void mt_msd_free(mt_msd_dataset *ds) {
    if (!ds) return;
    free(ds->root);
    free(ds->json_path);
    free(ds->name);
    free(ds->file_ending);
    for (int i = 0; i < ds->num_channels; i++) free(ds->channel_names[i]);
    free(ds->channel_names);
    for (int i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    for (int i = 0; i < ds->num_cases; i++) free_case(&ds->cases[i]);
    free(ds->cases);
    memset(ds, 0, sizeof *ds);
}

int mt_msd_find(const mt_msd_dataset *ds, const char *id) {
    for (int i = 0; i < ds->num_cases; i++)
        if (strcmp(ds->cases[i].id, id) == 0) return i;
    return -1;
}

/* Parses a decimal index "0", "12" (no sign, no leading zeros but "0"). */
static int parse_index(const char *s, int64_t *out) {
    if (!s[0] || (s[0] == '0' && s[1])) return 0;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000000) return 0;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 1;
}

/* ------------------------------------------------------- dataset.json */

/* "channel_names" / "modality": {"0": name, ...} with keys 0 .. C-1. */
static mt_status parse_channels(mt_msd_dataset *ds, const mt_json *obj, const char *key) {
    MT_TRY(mt_json_expect(obj, MT_JSON_OBJECT, key));
    int n = obj->n;
    if (n == 0)
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s: no channels", obj->source, obj->line,
                            obj->col, key);
    ds->channel_names = xcalloc((size_t)n, sizeof(char *));
    ds->num_channels = n;
    for (int i = 0; i < n; i++) {
        int64_t idx;
        if (!parse_index(obj->keys[i], &idx) || idx >= n)
            return mt_error_set(MT_ERR_FORMAT,
                                "%s:%d:%d: %s: key \"%s\" is not a channel index 0..%d", obj->source,
                                obj->items[i].line, obj->items[i].col, key, obj->keys[i], n - 1);
        const char *name;
        char what[96];
        snprintf(what, sizeof what, "%s[\"%s\"]", key, obj->keys[i]);
        MT_TRY(mt_json_as_string(&obj->items[i], &name, what));
        ds->channel_names[idx] = xstrdup(name); /* keys are unique, so idx is new */
    }
    return MT_OK;
}

/* "labels": MSD {"0": "background", ...} or nnU-Net v2 {"background": 0, ...}. */
static mt_status parse_labels(mt_msd_dataset *ds, const mt_json *obj) {
    MT_TRY(mt_json_expect(obj, MT_JSON_OBJECT, "labels"));
    int n = obj->n;
    if (n < 1 || n > 256)
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: labels: %d entries (need 1..256)", obj->source,
                            obj->line, obj->col, n);
    ds->class_names = xcalloc((size_t)n, sizeof(char *));
    ds->num_classes = n;
    for (int i = 0; i < n; i++) {
        const mt_json *v = &obj->items[i];
        const char *name;
        int64_t idx;
        char what[96];
        snprintf(what, sizeof what, "labels[\"%s\"]", obj->keys[i]);
        if (v->type == MT_JSON_STRING) { /* MSD: index -> name */
            if (!parse_index(obj->keys[i], &idx))
                return mt_error_set(MT_ERR_FORMAT,
                                    "%s:%d:%d: labels: key \"%s\" is not a label value (MSD style "
                                    "maps \"0\", \"1\", ... to names)",
                                    v->source, v->line, v->col, obj->keys[i]);
            name = v->string;
        } else if (v->type == MT_JSON_ARRAY) {
            return mt_error_set(MT_ERR_UNSUPPORTED,
                                "%s:%d:%d: %s: region-based labels (a list of values) are not "
                                "supported",
                                v->source, v->line, v->col, what);
        } else { /* nnU-Net v2: name -> index */
            MT_TRY(mt_json_as_int(v, &idx, what));
            name = obj->keys[i];
        }
        if (idx < 0 || idx >= n)
            return mt_error_set(MT_ERR_FORMAT,
                                "%s:%d:%d: %s: label value %lld out of range: with %d labels the "
                                "values must be 0..%d",
                                v->source, v->line, v->col, what, (long long)idx, n, n - 1);
        if (ds->class_names[idx])
            return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s: label value %lld is named twice",
                                v->source, v->line, v->col, what, (long long)idx);
        ds->class_names[idx] = xstrdup(name);
    }
    return MT_OK;
}

static mt_status set_file_ending(mt_msd_dataset *ds, const char *path, const mt_json *where) {
    const char *e = ends_with(path, ".nii.gz") ? ".nii.gz" : ends_with(path, ".nii") ? ".nii" : NULL;
    if (!e)
        return mt_error_set(MT_ERR_UNSUPPORTED,
                            "%s:%d:%d: \"%s\": only NIfTI files (.nii.gz, .nii) are read (convert "
                            "other formats first, see docs/data.md)",
                            where->source, where->line, where->col, path);
    if (!ds->file_ending) {
        ds->file_ending = xstrdup(e);
    } else if (strcmp(ds->file_ending, e) != 0) {
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: \"%s\": mixes %s and %s files", where->source,
                            where->line, where->col, path, ds->file_ending, e);
    }
    return MT_OK;
}

/* The MSD / nnU-Net v1 "training" list. */
static mt_status parse_training(mt_msd_dataset *ds, const mt_json *list) {
    MT_TRY(mt_json_expect(list, MT_JSON_ARRAY, "training"));
    ds->cases = xcalloc((size_t)list->n, sizeof(mt_msd_case));
    for (int i = 0; i < list->n; i++) {
        const mt_json *e = &list->items[i], *jimg, *jlab;
        char what[64], wimg[64], wlab[64];
        snprintf(what, sizeof what, "training[%d]", i);
        snprintf(wimg, sizeof wimg, "training[%d].image", i);
        snprintf(wlab, sizeof wlab, "training[%d].label", i);
        MT_TRY(mt_json_expect(e, MT_JSON_OBJECT, what));
        MT_TRY(mt_json_require(&jimg, e, "image"));
        MT_TRY(mt_json_require(&jlab, e, "label"));
        const char *img_rel, *lab_rel;
        MT_TRY(mt_json_as_string(jimg, &img_rel, wimg));
        MT_TRY(mt_json_as_string(jlab, &lab_rel, wlab));
        MT_TRY(set_file_ending(ds, img_rel, jimg));
        MT_TRY(set_file_ending(ds, lab_rel, jlab));
        mt_msd_case *c = &ds->cases[ds->num_cases++];
        const char *base = strrchr(img_rel, '/');
        base = base ? base + 1 : img_rel;
        c->id = xstrdup(base);
        c->id[strlen(c->id) - strlen(ds->file_ending)] = 0;
        for (int j = 0; j < ds->num_cases - 1; j++)
            if (strcmp(ds->cases[j].id, c->id) == 0)
                return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: case \"%s\" is listed twice",
                                    e->source, e->line, e->col, c->id);
        char *img = join(ds->root, img_rel);
        c->label = join(ds->root, lab_rel);
        if (is_file(img)) {
            c->num_files = 1;
            c->images = xcalloc(1, sizeof(char *));
            c->images[0] = img;
        } else {
            /* nnU-Net v1: x_0000<ending> .. beside the listed x<ending> */
            size_t stem = strlen(img) - strlen(ds->file_ending);
            c->images = xcalloc((size_t)ds->num_channels, sizeof(char *));
            c->num_files = ds->num_channels;
            for (int ch = 0; ch < ds->num_channels; ch++)
                c->images[ch] = str_printf("%.*s_%04d%s", (int)stem, img, ch, ds->file_ending);
            if (!is_file(c->images[0])) {
                mt_status st = mt_error_set(MT_ERR_IO, "%s: missing image file (listed in %s as %s)",
                                            img, ds->json_path, wimg);
                free(img);
                return st;
            }
            free(img);
            for (int ch = 1; ch < ds->num_channels; ch++)
                if (!is_file(c->images[ch]))
                    return mt_error_set(MT_ERR_IO, "%s: missing image file (channel %d of case %s)",
                                        c->images[ch], ch, c->id);
        }
        if (!is_file(c->label))
            return mt_error_set(MT_ERR_IO, "%s: missing label file (listed in %s as %s)", c->label,
                                ds->json_path, wlab);
    }
    return MT_OK;
}

/* nnU-Net v2: cases discovered in imagesTr/. */
static mt_status discover_cases(mt_msd_dataset *ds) {
    char *dir = join(ds->root, "imagesTr");
    DIR *d = opendir(dir);
    if (!d) {
        mt_status st = mt_error_set(MT_ERR_IO, "%s: cannot open the image folder: %s", dir,
                                    strerror(errno));
        free(dir);
        return st;
    }
    /* collect "<id>_<XXXX><ending>" names */
    size_t cap = 0, n = 0;
    char **names = NULL;
    struct dirent *e;
    size_t elen = strlen(ds->file_ending);
    mt_status st = MT_OK;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (nm[0] == '.') continue; /* ".", "..", hidden files, macOS "._*" junk */
        if (!ends_with(nm, ds->file_ending)) continue;
        size_t len = strlen(nm);
        int ok = len >= elen + 6 && nm[len - elen - 5] == '_';
        for (size_t k = len - elen - 4; ok && k < len - elen; k++) ok = nm[k] >= '0' && nm[k] <= '9';
        if (!ok) {
            st = mt_error_set(MT_ERR_FORMAT,
                              "%s/%s: image name lacks the channel suffix _XXXX (e.g. case_0000%s) "
                              "that nnU-Net v2 requires",
                              dir, nm, ds->file_ending);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof *names);
            MT_CHECK(names);
        }
        names[n++] = xstrdup(nm);
    }
    closedir(d);
    if (st == MT_OK && n == 0)
        st = mt_error_set(MT_ERR_FORMAT, "%s: no images <case>_XXXX%s found", dir, ds->file_ending);
    if (st == MT_OK) {
        qsort(names, n, sizeof *names, cmp_str_ptr);
        ds->cases = xcalloc(n, sizeof(mt_msd_case));
        for (size_t k = 0; k < n && st == MT_OK; k++) {
            const char *nm = names[k];
            size_t idlen = strlen(nm) - elen - 5;
            int ch = atoi(nm + idlen + 1);
            mt_msd_case *c = ds->num_cases ? &ds->cases[ds->num_cases - 1] : NULL;
            if (!c || strlen(c->id) != idlen || strncmp(c->id, nm, idlen) != 0) {
                c = &ds->cases[ds->num_cases++];
                c->id = str_printf("%.*s", (int)idlen, nm);
                c->num_files = ds->num_channels;
                c->images = xcalloc((size_t)ds->num_channels, sizeof(char *));
                c->label = str_printf("%s/labelsTr/%s%s", ds->root, c->id, ds->file_ending);
            }
            if (ch >= ds->num_channels) {
                st = mt_error_set(MT_ERR_FORMAT,
                                  "%s/%s: channel %04d, but %s declares %d channel(s) in "
                                  "channel_names",
                                  dir, nm, ch, ds->json_path, ds->num_channels);
                break;
            }
            c->images[ch] = str_printf("%s/%s", dir, nm);
        }
        /* every channel of every case, and its label */
        for (int i = 0; i < ds->num_cases && st == MT_OK; i++) {
            mt_msd_case *c = &ds->cases[i];
            for (int ch = 0; ch < ds->num_channels && st == MT_OK; ch++)
                if (!c->images[ch]) {
                    c->images[ch] = str_printf("%s/%s_%04d%s", dir, c->id, ch, ds->file_ending);
                    st = mt_error_set(MT_ERR_IO, "%s: missing image file (channel %d of case %s)",
                                      c->images[ch], ch, c->id);
                }
            if (st == MT_OK && !is_file(c->label))
                st = mt_error_set(MT_ERR_IO, "%s: missing label file of case %s", c->label, c->id);
        }
    }
    for (size_t k = 0; k < n; k++) free(names[k]);
    free(names);
    free(dir);
    return st;
}

static mt_status open_impl(mt_msd_dataset *ds, const char *root, mt_json **json) {
    ds->root = xstrdup(root);
    ds->json_path = join(root, "dataset.json");
    struct stat sb;
    if (stat(root, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mt_error_set(MT_ERR_IO, "%s: no such dataset folder", root);
    if (!is_file(ds->json_path))
        return mt_error_set(MT_ERR_IO, "%s: missing (not an MSD / nnU-Net dataset folder?)",
                            ds->json_path);
    MT_TRY(mt_json_parse_file(json, ds->json_path));
    const mt_json *j = *json, *v;
    MT_TRY(mt_json_expect(j, MT_JSON_OBJECT, "dataset.json"));
    const char *s = "";
    if ((v = mt_json_get(j, "name"))) MT_TRY(mt_json_as_string(v, &s, "name"));
    ds->name = xstrdup(s);
    if ((v = mt_json_get(j, "channel_names")))
        MT_TRY(parse_channels(ds, v, "channel_names"));
    else if ((v = mt_json_get(j, "modality")))
        MT_TRY(parse_channels(ds, v, "modality"));
    else
        return mt_error_set(MT_ERR_FORMAT, "%s: missing key \"channel_names\" (or MSD's \"modality\")",
                            ds->json_path);
    MT_TRY(mt_json_require(&v, j, "labels"));
    MT_TRY(parse_labels(ds, v));
    const mt_json *training = mt_json_get(j, "training");
    if (training) {
        ds->style = MT_MSD_STYLE_MSD;
        MT_TRY(parse_training(ds, training));
    } else {
        ds->style = MT_MSD_STYLE_NNUNET_V2;
        const char *ending;
        MT_TRY(mt_json_require(&v, j, "file_ending"));
        MT_TRY(mt_json_as_string(v, &ending, "file_ending"));
        if (strcmp(ending, ".nii.gz") != 0 && strcmp(ending, ".nii") != 0)
            return mt_error_set(MT_ERR_UNSUPPORTED,
                                "%s:%d:%d: file_ending \"%s\": only NIfTI (.nii.gz, .nii) is read "
                                "(convert other formats first, see docs/data.md)",
                                v->source, v->line, v->col, ending);
        ds->file_ending = xstrdup(ending);
        MT_TRY(discover_cases(ds));
    }
    if (ds->num_cases == 0)
        return mt_error_set(MT_ERR_FORMAT, "%s: the dataset has no training cases", ds->json_path);
    if ((v = mt_json_get(j, "numTraining"))) {
        int64_t nt;
        MT_TRY(mt_json_as_int(v, &nt, "numTraining"));
        if (nt != ds->num_cases)
            return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: numTraining is %lld but the dataset has %d "
                                "training cases", v->source, v->line, v->col, (long long)nt,
                                ds->num_cases);
    }
    return MT_OK;
}

mt_status mt_msd_open(mt_msd_dataset *ds, const char *root) {
    memset(ds, 0, sizeof *ds);
    mt_json *json = NULL;
    mt_status st = open_impl(ds, root, &json);
    mt_json_free(json);
    if (st != MT_OK) mt_msd_free(ds);
    return st;
}

/* ------------------------------------------------------------ loading */

static int spacing_close(const mt_nifti_header *a, const mt_nifti_header *b) {
    for (int i = 1; i <= 3; i++)
        if (fabs(a->pixdim[i] - b->pixdim[i]) > 1e-4 * fmax(fabs(a->pixdim[i]), fabs(b->pixdim[i])))
            return 0;
    return 1;
}

/* Spatial (D, H, W) of a tensor read from a file: its last three dims. */
static int same_spatial(const mt_tensor *a, const mt_tensor *b) {
    for (int k = 1; k <= 3; k++)
        if (a->shape[a->ndim - k] != b->shape[b->ndim - k]) return 0;
    return 1;
}

static const char *spatial_str(const mt_tensor *t, char *buf, size_t n) {
    snprintf(buf, n, "(%lld, %lld, %lld)", (long long)t->shape[t->ndim - 3],
             (long long)t->shape[t->ndim - 2], (long long)t->shape[t->ndim - 1]);
    return buf;
}

/* Leading dims of a 4-D/5-D volume (1 for 3-D). */
static int64_t leading(const mt_tensor *t) {
    int64_t n = 1;
    for (int a = 0; a < t->ndim - 3; a++) n *= t->shape[a];
    return n;
}

mt_status mt_msd_load_case(const mt_msd_dataset *ds, int i, mt_tensor **image, mt_tensor **label,
                           mt_nifti_header *hdr_out) {
    *image = NULL;
    if (label) *label = NULL;
    MT_CHECK_MSG(i >= 0 && i < ds->num_cases, "msd: case %d of %d", i, ds->num_cases);
    const mt_msd_case *c = &ds->cases[i];
    int C = ds->num_channels;
    mt_nifti first = {0};
    mt_tensor *out = NULL;
    mt_status st = MT_OK;
    char b1[64], b2[64];
    for (int f = 0; f < c->num_files && st == MT_OK; f++) {
        mt_nifti img = {0};
        st = mt_nifti_read(c->images[f], &img);
        if (st != MT_OK) break;
        int64_t lead = leading(img.data);
        int64_t want = c->num_files == 1 ? C : 1;
        if (lead != want) {
            st = mt_error_set(MT_ERR_FORMAT,
                              "%s: holds %lld volume(s) (dims beyond the 3rd) but %s declares %d "
                              "channel(s)%s",
                              c->images[f], (long long)lead, ds->json_path, C,
                              c->num_files == 1 ? "" : " in separate files");
        } else if (f == 0) {
            int64_t shape[4] = {C, img.data->shape[img.data->ndim - 3],
                                img.data->shape[img.data->ndim - 2], img.data->shape[img.data->ndim - 1]};
            out = mt_tensor_new(MT_F32, 4, shape, MT_DEVICE_CPU);
            first.hdr = img.hdr;
        } else if (!same_spatial(img.data, out)) {
            st = mt_error_set(MT_ERR_FORMAT, "%s: shape %s differs from %s's %s (case %s)",
                              c->images[f], spatial_str(img.data, b1, sizeof b1), c->images[0],
                              spatial_str(out, b2, sizeof b2), c->id);
        } else if (!spacing_close(&img.hdr, &first.hdr)) {
            st = mt_error_set(MT_ERR_FORMAT,
                              "%s: voxel size %g x %g x %g differs from %s's %g x %g x %g (case %s)",
                              c->images[f], img.hdr.pixdim[1], img.hdr.pixdim[2], img.hdr.pixdim[3],
                              c->images[0], first.hdr.pixdim[1], first.hdr.pixdim[2],
                              first.hdr.pixdim[3], c->id);
        }
        if (st == MT_OK) {
            size_t vol = (size_t)mt_tensor_numel(img.data);
            memcpy(MT_F32P(out) + (size_t)f * (c->num_files == 1 ? 0 : vol), MT_F32P(img.data),
                   vol * sizeof(float));
        }
        mt_nifti_free(&img);
    }
    if (st == MT_OK && label) {
        mt_nifti lab = {0};
        st = mt_nifti_read_labels(c->label, &lab);
        if (st == MT_OK) {
            if (leading(lab.data) != 1) {
                st = mt_error_set(MT_ERR_FORMAT, "%s: a label map must be a single 3-D volume",
                                  c->label);
            } else if (!same_spatial(lab.data, out)) {
                st = mt_error_set(MT_ERR_FORMAT, "%s: label shape %s differs from image %s's %s",
                                  c->label, spatial_str(lab.data, b1, sizeof b1), c->images[0],
                                  spatial_str(out, b2, sizeof b2));
            } else if (!spacing_close(&lab.hdr, &first.hdr)) {
                st = mt_error_set(MT_ERR_FORMAT,
                                  "%s: label voxel size %g x %g x %g differs from image %s's "
                                  "%g x %g x %g",
                                  c->label, lab.hdr.pixdim[1], lab.hdr.pixdim[2], lab.hdr.pixdim[3],
                                  c->images[0], first.hdr.pixdim[1], first.hdr.pixdim[2],
                                  first.hdr.pixdim[3]);
            } else {
                const uint8_t *p = mt_tensor_data(lab.data);
                int64_t n = mt_tensor_numel(lab.data);
                for (int64_t k = 0; k < n; k++)
                    if (p[k] >= ds->num_classes) {
                        st = mt_error_set(MT_ERR_FORMAT,
                                          "%s: label value %d, but %s declares %d labels (0..%d)",
                                          c->label, p[k], ds->json_path, ds->num_classes,
                                          ds->num_classes - 1);
                        break;
                    }
            }
            if (st == MT_OK) {
                int64_t shape[4] = {1, out->shape[1], out->shape[2], out->shape[3]};
                *label = mt_tensor_reshape(lab.data, 4, shape);
            }
        }
        mt_nifti_free(&lab);
    }
    if (st != MT_OK) {
        mt_tensor_release(out);
        return st;
    }
    *image = out;
    if (hdr_out) *hdr_out = first.hdr;
    return MT_OK;
}

/* ------------------------------------------------------------- splits */

static void free_list(mt_msd_id_list *l) {
    for (int i = 0; i < l->n; i++) free(l->ids[i]);
    free(l->ids);
    l->ids = NULL;
    l->n = 0;
}

void mt_msd_splits_free(mt_msd_splits *s) {
    if (!s) return;
    free_list(&s->holdout);
    free_list(&s->dev);
    for (int f = 0; f < s->num_folds; f++) {
        free_list(&s->train[f]);
        free_list(&s->val[f]);
    }
    free(s->train);
    free(s->val);
    memset(s, 0, sizeof *s);
}

static mt_status read_list(mt_msd_id_list *l, const mt_json *arr, const char *what) {
    MT_TRY(mt_json_expect(arr, MT_JSON_ARRAY, what));
    l->ids = xcalloc((size_t)arr->n, sizeof(char *));
    for (int i = 0; i < arr->n; i++) {
        const char *s;
        char w[96];
        snprintf(w, sizeof w, "%s[%d]", what, i);
        MT_TRY(mt_json_as_string(&arr->items[i], &s, w));
        l->ids[l->n++] = xstrdup(s);
    }
    return MT_OK;
}

/* Sorted copy of a list's pointers (not the strings). */
static char **sorted(const mt_msd_id_list *l) {
    char **s = xcalloc((size_t)l->n, sizeof(char *));
    if (l->n) memcpy(s, l->ids, (size_t)l->n * sizeof(char *));
    qsort(s, (size_t)l->n, sizeof(char *), cmp_str_ptr);
    return s;
}

static int in_sorted(char **s, int n, const char *id) {
    return bsearch(&id, s, (size_t)n, sizeof(char *), cmp_str_ptr) != NULL;
}

static mt_status check_unique(const mt_msd_id_list *l, const char *path, const char *what) {
    char **s = sorted(l);
    mt_status st = MT_OK;
    for (int i = 1; i < l->n; i++)
        if (strcmp(s[i - 1], s[i]) == 0) {
            st = mt_error_set(MT_ERR_FORMAT, "%s: \"%s\" appears twice in %s", path, s[i], what);
            break;
        }
    free(s);
    return st;
}

/* Error if a and b share an id. */
static mt_status check_disjoint(const mt_msd_id_list *a, const char *wa, const mt_msd_id_list *b,
                                const char *wb, const char *path) {
    char **s = sorted(b);
    mt_status st = MT_OK;
    for (int i = 0; i < a->n; i++)
        if (in_sorted(s, b->n, a->ids[i])) {
            st = mt_error_set(MT_ERR_FORMAT, "%s: \"%s\" is in both %s and %s", path, a->ids[i], wa, wb);
            break;
        }
    free(s);
    return st;
}

/* Error unless every id of a is in b. */
static mt_status check_subset(const mt_msd_id_list *a, const char *wa, const mt_msd_id_list *b,
                              const char *wb, const char *path) {
    char **s = sorted(b);
    mt_status st = MT_OK;
    for (int i = 0; i < a->n; i++)
        if (!in_sorted(s, b->n, a->ids[i])) {
            st = mt_error_set(MT_ERR_FORMAT, "%s: \"%s\" is in %s but not in %s", path, a->ids[i], wa, wb);
            break;
        }
    free(s);
    return st;
}

static mt_status read_folds(mt_msd_splits *s, const mt_json *arr, const char *what) {
    MT_TRY(mt_json_expect(arr, MT_JSON_ARRAY, what));
    s->train = xcalloc((size_t)arr->n, sizeof(mt_msd_id_list));
    s->val = xcalloc((size_t)arr->n, sizeof(mt_msd_id_list));
    s->num_folds = arr->n;
    for (int f = 0; f < arr->n; f++) {
        const mt_json *fold = &arr->items[f], *t, *v;
        char w[64];
        snprintf(w, sizeof w, "%s[%d]", what, f);
        MT_TRY(mt_json_expect(fold, MT_JSON_OBJECT, w));
        MT_TRY(mt_json_require(&t, fold, "train"));
        MT_TRY(mt_json_require(&v, fold, "val"));
        snprintf(w, sizeof w, "%s[%d].train", what, f);
        MT_TRY(read_list(&s->train[f], t, w));
        snprintf(w, sizeof w, "%s[%d].val", what, f);
        MT_TRY(read_list(&s->val[f], v, w));
    }
    return MT_OK;
}

static mt_status splits_impl(mt_msd_splits *s, const char *path, const mt_json *j) {
    const char *folds_name = "folds";
    if (j->type == MT_JSON_ARRAY) { /* nnU-Net splits_final.json */
        folds_name = "fold";
        MT_TRY(read_folds(s, j, "fold"));
        /* dev = union of the folds' cases, first-seen order */
        int cap = 0;
        for (int f = 0; f < s->num_folds; f++) cap += s->train[f].n + s->val[f].n;
        s->dev.ids = xcalloc((size_t)cap, sizeof(char *));
        for (int f = 0; f < s->num_folds; f++)
            for (int part = 0; part < 2; part++) {
                const mt_msd_id_list *l = part ? &s->val[f] : &s->train[f];
                for (int i = 0; i < l->n; i++) {
                    int seen = 0;
                    for (int k = 0; k < s->dev.n && !seen; k++) seen = strcmp(s->dev.ids[k], l->ids[i]) == 0;
                    if (!seen) s->dev.ids[s->dev.n++] = xstrdup(l->ids[i]);
                }
            }
    } else {
        MT_TRY(mt_json_expect(j, MT_JSON_OBJECT, "splits"));
        const mt_json *v;
        if ((v = mt_json_get(j, "holdout"))) MT_TRY(read_list(&s->holdout, v, "holdout"));
        MT_TRY(mt_json_require(&v, j, "dev"));
        MT_TRY(read_list(&s->dev, v, "dev"));
        if ((v = mt_json_get(j, "folds"))) MT_TRY(read_folds(s, v, "folds"));
    }
    MT_TRY(check_unique(&s->holdout, path, "holdout"));
    MT_TRY(check_unique(&s->dev, path, "dev"));
    MT_TRY(check_disjoint(&s->holdout, "holdout", &s->dev, "dev", path));
    for (int f = 0; f < s->num_folds; f++) {
        char wt[64], wv[64];
        snprintf(wt, sizeof wt, "%s[%d].train", folds_name, f);
        snprintf(wv, sizeof wv, "%s[%d].val", folds_name, f);
        MT_TRY(check_unique(&s->train[f], path, wt));
        MT_TRY(check_unique(&s->val[f], path, wv));
        MT_TRY(check_disjoint(&s->train[f], wt, &s->val[f], wv, path));
        MT_TRY(check_subset(&s->train[f], wt, &s->dev, "dev", path));
        MT_TRY(check_subset(&s->val[f], wv, &s->dev, "dev", path));
        if (s->train[f].n + s->val[f].n != s->dev.n)
            return mt_error_set(MT_ERR_FORMAT, "%s: %s and %s hold %d cases together, dev has %d",
                                path, wt, wv, s->train[f].n + s->val[f].n, s->dev.n);
        for (int g = 0; g < f; g++) {
            char wg[64];
            snprintf(wg, sizeof wg, "%s[%d].val", folds_name, g);
            MT_TRY(check_disjoint(&s->val[f], wv, &s->val[g], wg, path));
        }
    }
    return MT_OK;
}

mt_status mt_msd_splits_read(mt_msd_splits *s, const char *path) {
    memset(s, 0, sizeof *s);
    mt_json *j = NULL;
    mt_status st = mt_json_parse_file(&j, path);
    if (st == MT_OK) st = splits_impl(s, path, j);
    mt_json_free(j);
    if (st != MT_OK) mt_msd_splits_free(s);
    return st;
}

mt_status mt_msd_splits_check(const mt_msd_splits *s, const mt_msd_dataset *ds, const char *path) {
    mt_msd_id_list all = {ds->num_cases, xcalloc((size_t)ds->num_cases, sizeof(char *))};
    for (int i = 0; i < ds->num_cases; i++) all.ids[i] = ds->cases[i].id;
    char **sorted_all = sorted(&all);
    free(all.ids);
    const mt_msd_id_list *lists[] = {&s->holdout, &s->dev};
    const char *names[] = {"holdout", "dev"};
    mt_status st = MT_OK;
    for (int l = 0; l < 2 && st == MT_OK; l++)
        for (int i = 0; i < lists[l]->n; i++)
            if (!in_sorted(sorted_all, ds->num_cases, lists[l]->ids[i])) {
                st = mt_error_set(MT_ERR_FORMAT, "%s: %s case \"%s\" is not in the dataset %s", path,
                                  names[l], lists[l]->ids[i], ds->json_path);
                break;
            }
    free(sorted_all);
    return st;
}
