/* `medtrain predict` and the per-case prediction (see launch/predict.h). */
#include "launch/predict.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "data/nifti.h"
#include "eval/postprocess.h"
#include "eval/sliding_window.h"
#include "launch/fsutil.h"

void mt_predict_options_default(mt_predict_options *o) {
    memset(o, 0, sizeof *o);
    o->overlap = 0.5;
    o->batch = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* In place over the class axis of x (K, d, h, w) f32 contiguous host:
 * softmax (sigmoid = 0) or elementwise sigmoid. */
static void to_probabilities_(mt_tensor *x, int sigmoid) {
    int64_t K = x->shape[0], n = mt_tensor_numel(x) / K;
    float *p = MT_F32P(x);
    if (sigmoid) {
        for (int64_t i = 0; i < K * n; i++) p[i] = (float)(1.0 / (1.0 + exp(-(double)p[i])));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double m = -HUGE_VAL, s = 0;
        for (int64_t k = 0; k < K; k++)
            if (p[k * n + i] > m) m = p[k * n + i];
        for (int64_t k = 0; k < K; k++) s += exp((double)p[k * n + i] - m);
        for (int64_t k = 0; k < K; k++) p[k * n + i] = (float)(exp((double)p[k * n + i] - m) / s);
    }
}

static mt_status check_options(const mt_predict_options *o) {
    if (!(o->overlap >= 0 && o->overlap < 1))
        return mt_error_set(MT_ERR_INVALID, "predict: overlap %g must be in [0, 1)", o->overlap);
    if (o->batch < 1) return mt_error_set(MT_ERR_INVALID, "predict: batch %d must be >= 1", o->batch);
    return MT_OK;
}

mt_status mt_predict_preprocessed(mt_tensor **labels, const mt_weights *w, const mt_tensor *image,
                                  const mt_prep_geometry *geom, const mt_predict_options *opts) {
    *labels = NULL;
    mt_predict_options def;
    mt_predict_options_default(&def);
    const mt_predict_options *o = opts ? opts : &def;
    MT_TRY(check_options(o));
    if (w->out_channels != w->num_classes)
        return mt_error_set(MT_ERR_UNSUPPORTED,
                            "%s: model.out_channels = %d but the file names %d classes; predict needs one output "
                            "channel per class (background included)",
                            w->path, w->out_channels, w->num_classes);
    if (image->ndim != 4 || image->shape[0] != w->in_channels) {
        char b[96];
        return mt_error_set(MT_ERR_INVALID, "predict: image %s does not have the model's %d channel(s) (%s)",
                            mt_tensor_shape_str(image, b, sizeof b), w->in_channels, w->path);
    }
    for (int a = 0; a < 3; a++)
        if (image->shape[1 + a] != geom->shape[a])
            return mt_error_set(MT_ERR_INVALID,
                                "predict: preprocessed image %lld x %lld x %lld differs from its geometry's %lld x "
                                "%lld x %lld",
                                (long long)image->shape[1], (long long)image->shape[2], (long long)image->shape[3],
                                (long long)geom->shape[0], (long long)geom->shape[1], (long long)geom->shape[2]);
    mt_eval_sw_opts so;
    mt_eval_sw_opts_default(&so, w->patch);
    so.overlap = o->overlap;
    so.batch = o->batch;
    so.mirror_axes = o->mirror ? 7u : 0u;
    so.accumulate = MT_EVAL_SW_LOGITS; /* nnU-Net: logits averaged, nonlinearity afterwards */
    mt_tensor *logits = NULL;
    MT_TRY(mt_eval_sliding_window_model(&logits, image, w->model, &so));
    mt_tensor *lc = mt_tensor_contiguous(logits);
    mt_tensor_release(logits);
    to_probabilities_(lc, w->sigmoid);
    float fill[256] = {0};
    fill[0] = 1.0f;
    mt_tensor *probs = NULL;
    mt_status s = mt_preprocess_invert_image(&probs, lc, geom, MT_INTERP_LINEAR, fill);
    mt_tensor_release(lc);
    if (s != MT_OK) return s;
    s = mt_eval_argmax(labels, probs);
    mt_tensor_release(probs);
    if (s == MT_OK && o->largest_component) s = mt_eval_keep_largest_component(*labels, NULL, 0, 26);
    if (s != MT_OK) {
        mt_tensor_release(*labels);
        *labels = NULL;
    }
    return s;
}

static mt_status no_plan_error(const mt_weights *w) {
    return mt_error_set(MT_ERR_INVALID,
                        "%s has no preprocessing plan (metadata \"preprocess\"), so raw NIfTI cases cannot be "
                        "preprocessed as in training: use the weight file (model.safetensors) of a model trained on "
                        "a prepared store%s",
                        w->path, w->is_checkpoint ? " (this file is a checkpoint)" : "");
}

mt_status mt_predict_case(mt_tensor **labels, const mt_weights *w, const mt_tensor *image, const double spacing[3],
                          const double affine[4][4], const mt_predict_options *o, mt_prep_geometry *geom_out) {
    *labels = NULL;
    if (!w->has_plan) return no_plan_error(w);
    if (image->ndim != 4 || image->shape[0] != w->plan.num_channels) {
        char b[96];
        return mt_error_set(MT_ERR_INVALID, "predict: image %s does not have the model's %d channel(s) (%s)",
                            mt_tensor_shape_str(image, b, sizeof b), w->plan.num_channels, w->path);
    }
    mt_prep_geometry geom;
    mt_norm_params norm[MT_PREP_MAX_CHANNELS];
    mt_tensor *pi = NULL;
    MT_TRY(mt_preprocess_case(&pi, NULL, &geom, norm, image, NULL, spacing, affine, &w->plan));
    mt_status s = mt_predict_preprocessed(labels, w, pi, &geom, o);
    mt_tensor_release(pi);
    if (s == MT_OK && geom_out) *geom_out = geom;
    return s;
}

/* ================================================================= CLI */

typedef struct {
    char *id;
    int n;        /* files */
    char **files; /* channel order */
    int grouped;  /* from <case>_NNNN files */
} pcase;

typedef struct {
    int n, cap;
    pcase *c;
} pcase_list;

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    MT_CHECK(d);
    return d;
}

static void pcases_free(pcase_list *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->c[i].id);
        for (int k = 0; k < l->c[i].n; k++) free(l->c[i].files[k]);
        free(l->c[i].files);
    }
    free(l->c);
    memset(l, 0, sizeof *l);
}

static pcase *pcases_add(pcase_list *l, const char *id) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->c = realloc(l->c, sizeof *l->c * (size_t)l->cap);
        MT_CHECK(l->c);
    }
    pcase *c = &l->c[l->n++];
    memset(c, 0, sizeof *c);
    c->id = xstrdup(id);
    return c;
}

static void pcase_add_file(pcase *c, const char *path) {
    c->files = realloc(c->files, sizeof *c->files * (size_t)(c->n + 1));
    MT_CHECK(c->files);
    c->files[c->n++] = xstrdup(path);
}

/* Length of the NIfTI ending of name (".nii.gz" 7, ".nii" 4), or 0. */
static size_t nifti_ext_len(const char *name) {
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".nii.gz")) return 7;
    if (n > 4 && !strcmp(name + n - 4, ".nii")) return 4;
    return 0;
}

/* Channel index of a stem ending in _NNNN, else -1. */
static int channel_suffix(const char *stem, size_t len) {
    if (len < 6 || stem[len - 5] != '_') return -1;
    int v = 0;
    for (size_t i = len - 4; i < len; i++) {
        if (stem[i] < '0' || stem[i] > '9') return -1;
        v = v * 10 + (stem[i] - '0');
    }
    return v;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* One case from a file INPUT. */
static mt_status cases_from_file(pcase_list *l, const char *path, int in_channels) {
    const char *name = base_name(path);
    size_t el = nifti_ext_len(name);
    if (!el) return mt_error_set(MT_ERR_INVALID, "INPUT %s: not a NIfTI file name (.nii or .nii.gz)", path);
    size_t stem_len = strlen(name) - el;
    char stem[1024];
    snprintf(stem, sizeof stem, "%.*s", (int)stem_len, name);
    int ch = channel_suffix(stem, stem_len);
    if (ch == 0) {
        stem[stem_len - 5] = 0; /* case id without _0000 */
        pcase *c = pcases_add(l, stem);
        pcase_add_file(c, path);
        /* siblings _0001 .. _{C-1} (and any further ones: the channel check reports them) */
        size_t dl = (size_t)(name - path);
        for (int k = 1; k < 10000; k++) {
            char sib[4096];
            snprintf(sib, sizeof sib, "%.*s%s_%04d%s", (int)dl, path, stem, k, name + stem_len);
            if (!mt_fs_is_file(sib)) {
                if (k < in_channels)
                    return mt_error_set(MT_ERR_IO, "INPUT %s: channel file %s is missing (the model expects %d channels)",
                                        path, sib, in_channels);
                break;
            }
            pcase_add_file(c, sib);
        }
    } else {
        pcase *c = pcases_add(l, stem);
        pcase_add_file(c, path);
    }
    return MT_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Cases of a folder INPUT: single files, and <case>_NNNN groups (channels 0..n-1). */
static mt_status cases_from_dir(pcase_list *l, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return mt_error_set(MT_ERR_IO, "INPUT %s: cannot open the folder", dir);
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !nifti_ext_len(e->d_name)) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!mt_fs_is_file(p)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, sizeof *names * (size_t)cap);
            MT_CHECK(names);
        }
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    mt_status s = MT_OK;
    for (int i = 0; i < n && s == MT_OK; i++) {
        const char *name = names[i];
        size_t el = nifti_ext_len(name), sl = strlen(name) - el;
        char stem[1024], p[4096];
        snprintf(stem, sizeof stem, "%.*s", (int)sl, name);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        int ch = channel_suffix(stem, sl);
        if (ch >= 0) stem[sl - 5] = 0;
        pcase *c = NULL;
        for (int k = 0; k < l->n; k++)
            if (!strcmp(l->c[k].id, stem)) c = &l->c[k];
        if (c && (ch < 0 || !c->grouped)) {
            s = mt_error_set(MT_ERR_INVALID, "INPUT %s: case '%s' is given twice (%s and %s)", dir, stem,
                             base_name(c->files[0]), name);
            break;
        }
        if (!c) {
            c = pcases_add(l, stem);
            c->grouped = ch >= 0;
        }
        if (ch >= 0 && ch != c->n) {
            s = mt_error_set(MT_ERR_INVALID, "INPUT %s: %s: channel file %s_%04d%s is missing", dir, name, stem, c->n,
                             name + sl);
            break;
        }
        pcase_add_file(c, p);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (s == MT_OK && l->n == 0) s = mt_error_set(MT_ERR_INVALID, "INPUT %s: no .nii / .nii.gz files in the folder", dir);
    return s;
}

/* Reads a case's files into image (C, D, H, W) f32; hdr = the first file's header. */
static mt_status read_case(const pcase *c, const mt_weights *w, mt_tensor **image, mt_nifti_header *hdr) {
    *image = NULL;
    mt_nifti *imgs = calloc((size_t)c->n, sizeof *imgs);
    MT_CHECK(imgs);
    mt_status s = MT_OK;
    int64_t C = 0;
    const int64_t *sp = NULL;
    double spacing0[3] = {0};
    for (int k = 0; k < c->n && s == MT_OK; k++) {
        if ((s = mt_nifti_read(c->files[k], &imgs[k]))) break;
        const mt_tensor *t = imgs[k].data;
        if (t->ndim == 5) {
            s = mt_error_set(MT_ERR_UNSUPPORTED, "%s: 5-D image (dim[0] = 5); predict reads 3-D or 4-D (channels) files",
                             c->files[k]);
            break;
        }
        const int64_t *shp = t->shape + (t->ndim - 3);
        double spc[3];
        mt_nifti_spacing(&imgs[k].hdr, spc);
        if (k == 0) {
            sp = shp;
            memcpy(spacing0, spc, sizeof spc);
            for (int a = 0; a < 3; a++)
                if (!(spc[a] > 0) || !isfinite(spc[a]))
                    s = mt_error_set(MT_ERR_FORMAT, "%s: voxel size %g x %g x %g (pixdim[1..3]) must be positive",
                                     c->files[k], spc[2], spc[1], spc[0]);
        } else {
            for (int a = 0; a < 3 && s == MT_OK; a++)
                if (shp[a] != sp[a] || fabs(spc[a] - spacing0[a]) > 1e-4 * spacing0[a])
                    s = mt_error_set(MT_ERR_FORMAT,
                                     "%s: size %lld x %lld x %lld, voxel %g x %g x %g differs from %s's %lld x %lld x "
                                     "%lld, %g x %g x %g",
                                     c->files[k], (long long)shp[2], (long long)shp[1], (long long)shp[0], spc[2],
                                     spc[1], spc[0], c->files[0], (long long)sp[2], (long long)sp[1], (long long)sp[0],
                                     spacing0[2], spacing0[1], spacing0[0]);
        }
        C += t->ndim == 4 ? t->shape[0] : 1;
    }
    if (s == MT_OK && C != w->in_channels) {
        char chn[512] = "";
        if (w->has_plan)
            for (int k = 0; k < w->plan.num_channels; k++)
                snprintf(chn + strlen(chn), sizeof chn - strlen(chn), "%s%s", k ? ", " : "", w->channel_names[k]);
        s = mt_error_set(MT_ERR_INVALID,
                         "%s: case '%s' has %lld channel(s) in %d file(s), but the model in %s expects %d%s%s%s%s",
                         c->files[0], c->id, (long long)C, c->n, w->path, w->in_channels, chn[0] ? " (" : "", chn,
                         chn[0] ? ")" : "",
                         w->in_channels > 1 && c->n == 1 ? "; give the _0000 file of a case with per-channel files" : "");
    }
    if (s == MT_OK) {
        int64_t shape[4] = {C, sp[0], sp[1], sp[2]};
        mt_tensor *img = mt_tensor_new(MT_F32, 4, shape, MT_DEVICE_CPU);
        int64_t vox = sp[0] * sp[1] * sp[2], off = 0;
        for (int k = 0; k < c->n; k++) {
            mt_tensor *t = mt_tensor_contiguous(imgs[k].data);
            int64_t nk = mt_tensor_numel(t);
            memcpy(MT_F32P(img) + off, MT_F32P(t), sizeof(float) * (size_t)nk);
            off += nk;
            mt_tensor_release(t);
        }
        MT_CHECK(off == C * vox);
        *image = img;
        *hdr = imgs[0].hdr;
    }
    for (int k = 0; k < c->n; k++) mt_nifti_free(&imgs[k]);
    free(imgs);
    return s;
}

/* Writes labels (D, H, W) u8 with the input header's geometry. */
static mt_status write_labels(const char *path, const mt_tensor *labels, const mt_nifti_header *in) {
    mt_nifti out;
    out.hdr = *in;
    out.hdr.ndim = 3;
    for (int k = 4; k < 8; k++) out.hdr.dim[k] = 1;
    out.hdr.datatype = MT_NIFTI_UINT8;
    out.hdr.scl_slope = 0;
    out.hdr.scl_inter = 0;
    out.hdr.cal_min = 0;
    out.hdr.cal_max = 0;
    out.data = (mt_tensor *)labels;
    size_t n = strlen(path);
    int gz = n > 3 && !strcmp(path + n - 3, ".gz");
    return mt_nifti_write(path, &out, in->version == 2 ? 2 : 1, gz);
}

static void predict_usage(FILE *fp) {
    fprintf(fp,
            "usage: medtrain predict WEIGHTS.safetensors INPUT OUTPUT [--overlap X] [--mirror] [--batch N]\n"
            "                        [--largest-component] [--device D] [--threads N] [--quiet]\n"
            "\n"
            "Segments NIfTI images with a weight file written by training (runs/<name>/model.safetensors):\n"
            "preprocesses each case with the plan stored in the file (crop, normalise, resample), runs\n"
            "sliding-window inference (Gaussian weighting, patch = the training patch size), maps the\n"
            "class probabilities back to the image grid and writes a uint8 label map with the input's\n"
            "header geometry.\n"
            "\n"
            "INPUT   a .nii / .nii.gz file (3-D, or 4-D with every channel; for multi-channel models the\n"
            "        channel-0 file <case>_0000.nii.gz, whose siblings _0001.. are read with it), or a\n"
            "        folder of such files\n"
            "OUTPUT  a .nii / .nii.gz file, or a folder receiving <case>.nii.gz per case (created for a\n"
            "        folder INPUT)\n"
            "\n"
            "options:\n"
            "  --overlap X          sliding-window overlap in [0, 1) (default 0.5)\n"
            "  --mirror             test-time mirroring on all three axes (8 passes)\n"
            "  --batch N            windows per forward pass (default 1)\n"
            "  --largest-component  keep only the largest connected component of each class\n"
            "  --device D           auto | cpu | cuda | cuda:N (default cpu; auto: the GPU if usable)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --quiet              no progress lines\n");
}

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "medtrain: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'medtrain %s --help'.\n", cmd);
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_overlap(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 0 && v < 1)) return 0;
    *out = v;
    return 1;
}

mt_status mt_predict_set_device(mt_weights *w, const mt_predict_options *o) {
    if (!o->device) return MT_OK;
    mt_device d;
    if (mt_device_parse(o->device, &d) != 0) return mt_error_prefix(MT_ERR_INVALID, "--device '%s': ", o->device);
    return mt_weights_to_device(w, d);
}

/* Shared option parsing of predict and evaluate: returns 1 if argv[*i] was
 * one of --overlap/--mirror/--batch/--largest-component/--device/--threads (consuming
 * its value), 0 if not, or -(exit status) on a usage error. */
int mt_predict_parse_option(const char *cmd, int argc, char **argv, int *i, mt_predict_options *o, int *threads) {
    const char *a = argv[*i];
    const char *eq = strchr(a, '=');
    char name[32] = "";
    if (a[0] != '-' || a[1] != '-') return 0;
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (len >= sizeof name) return 0;
    memcpy(name, a, len);
    name[len] = 0;
    if (!strcmp(name, "--mirror") || !strcmp(name, "--largest-component")) {
        if (eq) return -usage_error(cmd, "%s takes no value", name);
        if (!strcmp(name, "--mirror")) o->mirror = 1;
        else o->largest_component = 1;
        return 1;
    }
    if (strcmp(name, "--overlap") && strcmp(name, "--batch") && strcmp(name, "--threads") && strcmp(name, "--device"))
        return 0;
    const char *val = eq ? eq + 1 : NULL;
    if (!val) {
        if (*i + 1 >= argc) return -usage_error(cmd, "%s needs a value", name);
        val = argv[++*i];
    }
    if (!strcmp(name, "--overlap")) {
        if (!parse_overlap(val, &o->overlap)) return -usage_error(cmd, "--overlap '%s': expected a number in [0, 1)", val);
    } else if (!strcmp(name, "--batch")) {
        if (!parse_int(val, 1, 4096, &o->batch)) return -usage_error(cmd, "--batch '%s': expected an integer in 1..4096", val);
    } else if (!strcmp(name, "--device")) {
        mt_device d;
        if (mt_device_parse(val, &d) != 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "--device '%s': %s", val, mt_error_msg());
            return -usage_error(cmd, "%s", msg);
        }
        o->device = val;
    } else {
        if (!parse_int(val, 1, 1024, threads)) return -usage_error(cmd, "--threads '%s': expected an integer in 1..1024", val);
    }
    return 1;
}

/* The output path of case c. */
/* 1 when both paths exist and name the same file. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static char *output_path(const char *out, int out_is_dir, const char *id) {
    if (!out_is_dir) return xstrdup(out);
    size_t n = strlen(out) + strlen(id) + 16;
    char *p = malloc(n);
    MT_CHECK(p);
    snprintf(p, n, "%s/%s.nii.gz", out, id);
    return p;
}

/* The directory part of path ("." when none). */
static void dir_of(char *buf, size_t n, const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) snprintf(buf, n, ".");
    else if (s == path) snprintf(buf, n, "/");
    else snprintf(buf, n, "%.*s", (int)(s - path), path);
}

int mt_predict_cli(int argc, char **argv) {
    mt_predict_options o;
    mt_predict_options_default(&o);
    int threads = 0, quiet = 0;
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            predict_usage(stdout);
            return 0;
        }
        int r = mt_predict_parse_option("predict", argc, argv, &i, &o, &threads);
        if (r < 0) return -r;
        if (r > 0) continue;
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("predict", "unknown option '%s'", a);
        } else if (npos == 3) {
            return usage_error("predict", "unexpected argument '%s' (predict takes WEIGHTS INPUT OUTPUT)", a);
        } else {
            pos[npos++] = a;
        }
    }
    if (npos < 3)
        return usage_error("predict", "%s",
                           npos == 0   ? "predict needs WEIGHTS.safetensors, INPUT and OUTPUT"
                           : npos == 1 ? "predict needs INPUT and OUTPUT after WEIGHTS"
                                       : "predict needs OUTPUT after INPUT");
    const char *wpath = pos[0], *in = pos[1], *out = pos[2];
    int in_dir = mt_fs_is_dir(in);
    if (!in_dir && !mt_fs_is_file(in)) {
        fprintf(stderr, "medtrain: error: INPUT %s: no such file or folder\n", in);
        return 1;
    }
    int out_dir = mt_fs_is_dir(out);
    if (in_dir && !out_dir && mt_fs_is_file(out))
        return usage_error("predict", "OUTPUT '%s' is a file, but INPUT is a folder: give a folder", out);
    if (!in_dir && !out_dir && !nifti_ext_len(base_name(out)))
        return usage_error("predict", "OUTPUT '%s': expected a .nii / .nii.gz file name or an existing folder", out);
    if (!in_dir && !nifti_ext_len(base_name(in))) {
        fprintf(stderr, "medtrain: error: INPUT %s: not a NIfTI file name (.nii or .nii.gz)\n", in);
        return 1;
    }
    if (threads > 0) mt_cpu_set_num_threads(threads);

    mt_weights w;
    if (mt_weights_load(wpath, &w) != MT_OK || mt_predict_set_device(&w, &o) != MT_OK) {
        fprintf(stderr, "medtrain: error: %s\n", mt_error_msg());
        mt_weights_free(&w);
        return 1;
    }
    if (!quiet) mt_weights_print_note(&w, stderr);
    int rc = 0;
    mt_status s = MT_OK;
    pcase_list cases = {0};
    if (!w.has_plan) s = no_plan_error(&w);
    if (s == MT_OK) s = in_dir ? cases_from_dir(&cases, in) : cases_from_file(&cases, in, w.in_channels);
    /* the output location must be writable before any work is done */
    if (s == MT_OK) {
        char d[4096];
        if (in_dir && !out_dir) {
            if ((s = mt_fs_mkdir_p(out))) mt_error_prefix(s, "OUTPUT %s: ", out);
            out_dir = 1;
        }
        if (s == MT_OK) {
            if (out_dir) snprintf(d, sizeof d, "%s", out);
            else dir_of(d, sizeof d, out);
            if (!mt_fs_is_dir(d))
                s = mt_error_set(MT_ERR_IO, "OUTPUT %s: folder %s does not exist", out, d);
            else if (access(d, W_OK) != 0)
                s = mt_error_set(MT_ERR_IO, "OUTPUT %s: folder %s is not writable", out, d);
        }
    }
    double t_all = now_s();
    for (int i = 0; i < cases.n && s == MT_OK; i++) {
        double t0 = now_s();
        const pcase *c = &cases.c[i];
        mt_tensor *image = NULL, *labels = NULL;
        mt_nifti_header hdr;
        if ((s = read_case(c, &w, &image, &hdr))) break;
        double spacing[3], affine[4][4];
        mt_nifti_spacing(&hdr, spacing);
        mt_nifti_best_affine(&hdr, affine);
        mt_prep_geometry geom;
        s = mt_predict_case(&labels, &w, image, spacing, (const double(*)[4])affine, &o, &geom);
        mt_tensor_release(image);
        if (s) {
            mt_error_prefix(s, "case '%s' (%s): ", c->id, c->files[0]);
            break;
        }
        char *op = output_path(out, out_dir, c->id);
        /* never overwrite an input image with its label map */
        for (int f = 0; f < c->n && s == MT_OK; f++)
            if (same_file(op, c->files[f]))
                s = mt_error_set(MT_ERR_INVALID, "OUTPUT %s is the input image %s itself: choose another output",
                                 op, c->files[f]);
        if (s == MT_OK) s = write_labels(op, labels, &hdr);
        mt_tensor_release(labels);
        if (s == MT_OK && !quiet)
            fprintf(stderr,
                    "predict: [%d/%d] %s: %lld x %lld x %lld, %g x %g x %g mm -> %lld x %lld x %lld -> %s (%.1f s)\n",
                    i + 1, cases.n, c->id, (long long)hdr.dim[1], (long long)hdr.dim[2], (long long)hdr.dim[3],
                    hdr.pixdim[1], hdr.pixdim[2], hdr.pixdim[3], (long long)geom.shape[2], (long long)geom.shape[1],
                    (long long)geom.shape[0], op, now_s() - t0);
        free(op);
    }
    if (s != MT_OK) {
        fprintf(stderr, "medtrain: error: %s\n", mt_error_msg());
        rc = 1;
    } else if (!quiet && cases.n > 1) {
        fprintf(stderr, "predict: %d cases in %.1f s\n", cases.n, now_s() - t_all);
    }
    pcases_free(&cases);
    mt_weights_free(&w);
    return rc;
}
