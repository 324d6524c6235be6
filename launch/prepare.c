/* `medtrain prepare` (see launch/prepare.h). */
#include "launch/prepare.h"

#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/h5store.h"
#include "data/msd.h"
#include "data/nifti.h"
#include "data/preprocess.h"
#include "launch/fsutil.h"

void mt_prepare_options_default(mt_prepare_options *o) {
    memset(o, 0, sizeof *o);
    o->order_image = MT_INTERP_CUBIC;
    o->order_label = MT_INTERP_LINEAR;
    o->order_aniso = MT_INTERP_NEAREST;
    o->aniso_threshold = 3.0;
    o->samples_per_case = 10000;
    o->seed = 1234;
    o->compress_level = 1;
    o->progress = 1;
    o->cache_bytes = (int64_t)2 << 30;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------- progress bar */

typedef struct {
    const char *what;
    int total, done;
    double t0, last_draw;
    int tty, last_decile, enabled;
} progress;

static void progress_begin(progress *p, const char *what, int total, int enabled) {
    memset(p, 0, sizeof *p);
    p->what = what;
    p->total = total;
    p->t0 = now_s();
    p->enabled = enabled;
    p->tty = enabled && isatty(fileno(stderr));
}

/* One more case done; call under a lock. */
static void progress_step(progress *p) {
    p->done++;
    if (!p->enabled) return;
    double t = now_s(), el = t - p->t0;
    double eta = p->done ? el / p->done * (p->total - p->done) : 0;
    int fin = p->done == p->total;
    if (p->tty) {
        if (!fin && t - p->last_draw < 0.1) return;
        p->last_draw = t;
        char bar[31];
        int fill = p->total ? (int)(30.0 * p->done / p->total) : 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '-';
        bar[30] = 0;
        fprintf(stderr, "\rprepare: %-11s [%s] %d/%d cases  %.1f s  ETA %.1f s ", p->what, bar, p->done, p->total, el,
                eta);
        if (fin) fputc('\n', stderr);
    } else {
        int dec = p->total ? p->done * 10 / p->total : 10;
        if (dec <= p->last_decile && !fin) return;
        if (fin && dec <= p->last_decile && p->last_decile == 10) return;
        p->last_decile = dec;
        fprintf(stderr, "prepare: %-11s %d/%d cases  %.1f s  ETA %.1f s\n", p->what, p->done, p->total, el, eta);
    }
    fflush(stderr);
}

/* An interrupted bar ends its line before the error message. */
static void progress_abort(progress *p) {
    if (p->enabled && p->tty && p->done < p->total) fputc('\n', stderr);
}

/* ------------------------------------------------------- shared errors */

typedef struct {
    int failed;        /* set once: workers skip the remaining cases */
    mt_status status;
    char msg[4096];
} first_error;

static void record_error(first_error *e, mt_status s) {
    const char *m = mt_error_msg();
#pragma omp critical(mt_prepare_error)
    {
        if (!e->failed) {
            e->status = s;
            snprintf(e->msg, sizeof e->msg, "%s", m);
            __atomic_store_n(&e->failed, 1, __ATOMIC_RELEASE);
        }
    }
}

static int has_failed(first_error *e) { return __atomic_load_n(&e->failed, __ATOMIC_ACQUIRE); }

/* ------------------------------------------------------------ one case */

static mt_status load_case(const mt_msd_dataset *ds, int i, mt_tensor **image /* (C, D, H, W) */,
                           mt_tensor **label /* (1, D, H, W) */, double spacing[3], double affine[4][4]) {
    mt_nifti_header hdr;
    MT_TRY(mt_msd_load_case(ds, i, image, label, &hdr));
    mt_nifti_spacing(&hdr, spacing);
    mt_nifti_best_affine(&hdr, affine);
    for (int a = 0; a < 3; a++)
        if (!(spacing[a] > 0)) {
            mt_tensor_release(*image);
            mt_tensor_release(*label);
            *image = *label = NULL;
            return mt_error_set(MT_ERR_FORMAT, "%s: voxel size %g x %g x %g (pixdim[1..3]) must be positive",
                                ds->cases[i].images[0], spacing[2], spacing[1], spacing[0]);
        }
    return MT_OK;
}

/* A case kept from the fingerprint pass (image NULL: not kept). */
typedef struct {
    mt_tensor *image; /* (C, D, H, W) */
    mt_tensor *label; /* (1, D, H, W) */
    double spacing[3], affine[4][4];
} cached_case;

static mt_status preprocess_and_write(const mt_msd_dataset *ds, int i, const mt_prep_plan *plan,
                                      mt_h5store_writer *w, cached_case *cc) {
    mt_tensor *image, *label;
    double spacing[3], affine[4][4];
    if (cc->image) { /* take over the cached references */
        image = cc->image;
        label = cc->label;
        memcpy(spacing, cc->spacing, sizeof spacing);
        memcpy(affine, cc->affine, sizeof affine);
        cc->image = cc->label = NULL;
    } else {
        MT_TRY(load_case(ds, i, &image, &label, spacing, affine));
    }
    mt_h5store_case_info info;
    memset(&info, 0, sizeof info);
    mt_tensor *pi = NULL, *pl = NULL;
    mt_status st = mt_preprocess_case(&pi, &pl, &info.geom, info.norm, image, label, spacing,
                                      (const double(*)[4])affine, plan);
    mt_tensor_release(image);
    mt_tensor_release(label);
    if (st != MT_OK) return mt_error_prefix(st, "case %s (%s): ", ds->cases[i].id, ds->cases[i].images[0]);
    info.num_channels = ds->num_channels;
    info.num_classes = ds->num_classes;
    const uint8_t *lp = mt_tensor_data(pl);
    int64_t n = mt_tensor_numel(pl);
    for (int64_t k = 0; k < n; k++) info.class_voxels[lp[k]]++;
    st = mt_h5store_write_case(w, ds->cases[i].id, pi, pl, &info);
    mt_tensor_release(pi);
    mt_tensor_release(pl);
    return st;
}

/* ------------------------------------------------------------- params */

static char *params_json(const char *dir, const mt_prepare_options *o, const mt_prep_plan *plan, const char *source,
                         int threads) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_puts(&sb, "{\"dataset_dir\": ");
    mt_strbuf_json_string(&sb, dir);
    mt_strbuf_puts(&sb, ", \"target_spacing\": [");
    for (int a = 0; a < 3; a++) {
        if (a) mt_strbuf_puts(&sb, ", ");
        mt_strbuf_double(&sb, plan->target_spacing[a]);
    }
    mt_strbuf_printf(&sb, "], \"target_spacing_source\": \"%s\", \"axis_order\": \"D, H, W\"", source);
    mt_strbuf_printf(&sb, ", \"order_image\": \"%s\", \"order_label\": \"%s\", \"order_aniso\": \"%s\"",
                     mt_interp_name(plan->order_image), mt_interp_name(plan->order_label),
                     mt_interp_name(plan->order_aniso));
    mt_strbuf_puts(&sb, ", \"aniso_threshold\": ");
    mt_strbuf_double(&sb, plan->aniso_threshold);
    mt_strbuf_printf(&sb, ", \"aniso_rule\": %s, \"samples_per_case\": %lld, \"seed\": %llu, \"compress_level\": %d",
                     o->aniso_rule ? "true" : "false", (long long)o->samples_per_case, (unsigned long long)o->seed,
                     o->compress_level);
    mt_strbuf_printf(&sb, ", \"threads\": %d, \"normalization\": [", threads);
    for (int c = 0; c < plan->num_channels; c++)
        mt_strbuf_printf(&sb, "%s\"%s\"", c ? ", " : "", mt_norm_scheme_name(plan->norm[c].scheme));
    mt_strbuf_puts(&sb, "]}");
    return mt_strbuf_take(&sb);
}

/* ---------------------------------------------------------------- run */

mt_status mt_prepare_run(const char *dataset_dir, const char *out_path, const mt_prepare_options *opts) {
    mt_prepare_options defaults;
    mt_prepare_options_default(&defaults);
    const mt_prepare_options *o = opts ? opts : &defaults;
    if (o->num_threads < 0 || o->num_threads > 1024)
        return mt_error_set(MT_ERR_INVALID, "prepare: %d threads (0..1024)", o->num_threads);
    if (o->samples_per_case < 0) return mt_error_set(MT_ERR_INVALID, "prepare: negative samples_per_case");
    if (o->cache_bytes < 0) return mt_error_set(MT_ERR_INVALID, "prepare: negative cache_bytes");
    if (o->has_spacing)
        for (int a = 0; a < 3; a++)
            if (!(o->spacing[a] > 0) || o->spacing[a] > 1e6)
                return mt_error_set(MT_ERR_INVALID, "prepare: target spacing %g must be positive", o->spacing[a]);
    double t_start = now_s();
    mt_msd_dataset ds;
    MT_TRY(mt_msd_open(&ds, dataset_dir));
    mt_status st = MT_OK;
    if (ds.num_channels > MT_PREP_MAX_CHANNELS) {
        st = mt_error_set(MT_ERR_UNSUPPORTED, "%s: %d channels; prepare handles at most %d", ds.json_path,
                          ds.num_channels, MT_PREP_MAX_CHANNELS);
        mt_msd_free(&ds);
        return st;
    }
    /* which cases */
    int n = o->num_case_ids > 0 ? o->num_case_ids : ds.num_cases;
    int *idx = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    MT_CHECK(idx);
    for (int k = 0; k < n && st == MT_OK; k++) {
        if (o->num_case_ids > 0) {
            idx[k] = mt_msd_find(&ds, o->case_ids[k]);
            if (idx[k] < 0) st = mt_error_set(MT_ERR_INVALID, "prepare: no case '%s' in %s", o->case_ids[k], ds.json_path);
            for (int j = 0; j < k && st == MT_OK; j++)
                if (idx[j] == idx[k]) st = mt_error_set(MT_ERR_INVALID, "prepare: case '%s' requested twice", o->case_ids[k]);
        } else {
            idx[k] = k;
        }
    }
    if (st == MT_OK && n < 1) st = mt_error_set(MT_ERR_INVALID, "%s: no training cases", ds.json_path);
    mt_h5store_writer *w = NULL;
    if (st == MT_OK) st = mt_h5store_create(&w, out_path, o->compress_level);
    if (st != MT_OK) {
        free(idx);
        mt_msd_free(&ds);
        return st;
    }
    int threads = o->num_threads > 0 ? o->num_threads : omp_get_max_threads();
    if (threads > n) threads = n;
    if (o->progress)
        fprintf(stderr, "prepare: %s (%s): %d cases, %d channel(s), %d classes, %d thread(s) -> %s\n", ds.root,
                ds.name[0] ? ds.name : "unnamed", n, ds.num_channels, ds.num_classes, threads, out_path);

    /* ---- pass 1: fingerprint ---- */
    mt_fingerprint_case *fcs = calloc((size_t)n, sizeof *fcs);
    cached_case *cache = calloc((size_t)n, sizeof *cache);
    MT_CHECK(fcs && cache);
    int64_t cached = 0; /* bytes kept */
    first_error err;
    memset(&err, 0, sizeof err);
    progress pr;
    progress_begin(&pr, "fingerprint", n, o->progress);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int k = 0; k < n; k++) {
        if (has_failed(&err)) continue;
        mt_tensor *image, *label;
        double spacing[3], affine[4][4];
        mt_status s = load_case(&ds, idx[k], &image, &label, spacing, affine);
        if (s == MT_OK) {
            s = mt_fingerprint_case_compute(&fcs[k], image, label, spacing, ds.num_classes, o->samples_per_case, o->seed,
                                            idx[k]);
            if (s != MT_OK) s = mt_error_prefix(s, "%s: ", ds.cases[idx[k]].label);
            int64_t bytes = (int64_t)(mt_tensor_nbytes(image) + mt_tensor_nbytes(label));
            if (s == MT_OK && __atomic_add_fetch(&cached, bytes, __ATOMIC_RELAXED) <= o->cache_bytes) {
                cache[k].image = image;
                cache[k].label = label;
                memcpy(cache[k].spacing, spacing, sizeof spacing);
                memcpy(cache[k].affine, affine, sizeof affine);
            } else {
                mt_tensor_release(image);
                mt_tensor_release(label);
            }
        }
        if (s != MT_OK) record_error(&err, s);
#pragma omp critical(mt_prepare_progress)
        progress_step(&pr);
    }
    mt_fingerprint fp;
    memset(&fp, 0, sizeof fp);
    mt_h5store_meta meta;
    memset(&meta, 0, sizeof meta);
    char **ids = NULL;
    if (err.failed) {
        progress_abort(&pr);
        st = mt_error_set(err.status, "%s", err.msg);
    } else {
        st = mt_fingerprint_build(&fp, fcs, n);
    }
    for (int k = 0; k < n; k++) mt_fingerprint_case_free(&fcs[k]);
    free(fcs);

    /* ---- plan ---- */
    if (st == MT_OK) {
        double target[3];
        const char *source = "median";
        if (o->has_spacing) {
            memcpy(target, o->spacing, sizeof target);
            source = "user";
        } else {
            mt_fingerprint_target_spacing(target, &fp, o->aniso_rule);
            if (o->aniso_rule) source = "median+anisotropy rule";
        }
        mt_norm_scheme schemes[MT_PREP_MAX_CHANNELS];
        for (int c = 0; c < ds.num_channels; c++) schemes[c] = mt_norm_scheme_for_channel(ds.channel_names[c]);
        st = mt_prep_plan_init(&meta.plan, &fp, schemes, target);
        if (st == MT_OK) {
            meta.plan.order_image = o->order_image;
            meta.plan.order_label = o->order_label;
            meta.plan.order_aniso = o->order_aniso;
            meta.plan.aniso_threshold = o->aniso_threshold;
            ids = calloc((size_t)n, sizeof(char *));
            MT_CHECK(ids);
            for (int k = 0; k < n; k++) ids[k] = ds.cases[idx[k]].id;
            char *abs = realpath(dataset_dir, NULL);
            meta.dataset_name = ds.name;
            meta.source_dir = abs ? abs : (char *)dataset_dir;
            meta.num_channels = ds.num_channels;
            meta.channel_names = ds.channel_names;
            meta.num_classes = ds.num_classes;
            meta.class_names = ds.class_names;
            meta.num_cases = n;
            meta.case_ids = ids;
            meta.prepare_params = params_json(meta.source_dir, o, &meta.plan, source, threads);
            st = mt_h5store_write_meta(w, &meta);
            if (st == MT_OK) st = mt_h5store_write_fingerprint(w, &fp, NULL);
            if (o->progress && st == MT_OK) {
                fprintf(stderr, "prepare: median spacing (D, H, W) %g x %g x %g mm, target %g x %g x %g mm (%s)\n",
                        fp.median_spacing[0], fp.median_spacing[1], fp.median_spacing[2], target[0], target[1],
                        target[2], source);
                for (int c = 0; c < ds.num_channels; c++)
                    fprintf(stderr, "prepare: channel %d (%s): %s%s\n", c, ds.channel_names[c],
                            mt_norm_scheme_name(meta.plan.norm[c].scheme),
                            meta.plan.norm[c].use_mask ? " within the non-zero mask" : "");
            }
            free(meta.prepare_params);
            if (abs) free(abs);
        }
    }

    /* ---- pass 2: preprocess and write ---- */
    if (st == MT_OK) {
        progress_begin(&pr, "preprocess", n, o->progress);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int k = 0; k < n; k++) {
            if (has_failed(&err)) continue;
            mt_status s = preprocess_and_write(&ds, idx[k], &meta.plan, w, &cache[k]);
            if (s != MT_OK) record_error(&err, s);
#pragma omp critical(mt_prepare_progress)
            progress_step(&pr);
        }
        if (err.failed) {
            progress_abort(&pr);
            st = mt_error_set(err.status, "%s", err.msg);
        }
    }
    free(ids);
    for (int k = 0; k < n; k++) {
        if (cache[k].image) mt_tensor_release(cache[k].image);
        if (cache[k].label) mt_tensor_release(cache[k].label);
    }
    free(cache);
    mt_fingerprint_free(&fp);
    if (st == MT_OK) {
        st = mt_h5store_commit(w);
    } else {
        mt_h5store_abort(w);
    }
    if (st == MT_OK && o->progress) {
        struct stat sb;
        double mb = stat(out_path, &sb) == 0 ? (double)sb.st_size / (1024.0 * 1024.0) : 0;
        fprintf(stderr, "prepare: wrote %s (%d cases, %.1f MiB) in %.1f s\n", out_path, n, mb, now_s() - t_start);
    }
    free(idx);
    mt_msd_free(&ds);
    return st;
}

/* ----------------------------------------------------------------- CLI */

static void prepare_usage(FILE *fp) {
    fprintf(fp,
            "usage: medtrain prepare DATASET_DIR OUT.h5 [--spacing X,Y,Z] [--threads N] [--cases ID,...]\n"
            "                        [--aniso-rule] [--compress 0..9] [--quiet]\n"
            "\n"
            "Preprocesses an MSD / nnU-Net dataset folder (dataset.json, imagesTr/, labelsTr/) into one\n"
            "HDF5 store: crop to the non-zero region, normalise (CT: dataset percentiles + z-score;\n"
            "others: per-case z-score), resample to the target spacing (cubic images, label-safe\n"
            "labels), plus the dataset fingerprint. OUT.h5 appears only when complete.\n"
            "\n"
            "options:\n"
            "  --spacing X,Y,Z   target voxel size in mm, NIfTI axis order (pixdim[1..3]); one value\n"
            "                    for isotropic (default: the dataset's median spacing)\n"
            "  --threads N       worker threads (default: all cores)\n"
            "  --cases ID,...    only these cases\n"
            "  --aniso-rule      nnU-Net's target spacing rule for anisotropic datasets\n"
            "  --compress N      deflate level 0..9 (default 1)\n"
            "  --quiet           no progress bar\n");
}

static int prepare_usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "medtrain: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'medtrain prepare --help'.\n");
    return 2;
}

static int parse_positive(const char *s, double *out) {
    char *end;
    if (!*s) return 0;
    double v = strtod(s, &end);
    if (*end || !(v > 0) || v > 1e6) return 0;
    *out = v;
    return 1;
}

int mt_prepare_cli(int argc, char **argv) {
    mt_prepare_options o;
    mt_prepare_options_default(&o);
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    char *cases_buf = NULL;
    const char **case_ids = NULL;
    int rc = -1;
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        char name[32] = "";
        if (a[0] == '-' && a[1] == '-') {
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            if (len >= sizeof name) len = sizeof name - 1;
            memcpy(name, a, len);
            name[len] = 0;
            if (eq) val = eq + 1;
        }
        int takes_value = !strcmp(name, "--spacing") || !strcmp(name, "--threads") || !strcmp(name, "--cases") ||
                          !strcmp(name, "--compress");
        if (takes_value && !val) {
            if (i + 1 >= argc) {
                rc = prepare_usage_error("%s needs a value", name);
                break;
            }
            val = argv[++i];
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            prepare_usage(stdout);
            rc = 0;
        } else if (!strcmp(name, "--spacing")) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", val);
            double v[3];
            int k = 0, ok = 1;
            for (char *tok = strtok(buf, ","); tok && ok; tok = strtok(NULL, ",")) {
                if (k == 3 || !parse_positive(tok, &v[k])) ok = 0;
                k++;
            }
            if (!ok || (k != 1 && k != 3) || val[strlen(val) - 1] == ',' || val[0] == ',' || strstr(val, ",,")) {
                rc = prepare_usage_error("--spacing '%s': expected X,Y,Z or one value, positive numbers in mm", val);
            } else {
                if (k == 1) v[1] = v[2] = v[0];
                /* NIfTI (x, y, z) -> tensor (D, H, W) = (z, y, x) */
                o.has_spacing = 1;
                o.spacing[0] = v[2];
                o.spacing[1] = v[1];
                o.spacing[2] = v[0];
            }
        } else if (!strcmp(name, "--threads")) {
            char *end;
            long t = strtol(val, &end, 10);
            if (!*val || *end || t < 1 || t > 1024)
                rc = prepare_usage_error("--threads '%s': expected an integer in 1..1024", val);
            else
                o.num_threads = (int)t;
        } else if (!strcmp(name, "--compress")) {
            char *end;
            long t = strtol(val, &end, 10);
            if (!*val || *end || t < 0 || t > 9)
                rc = prepare_usage_error("--compress '%s': expected an integer in 0..9", val);
            else
                o.compress_level = (int)t;
        } else if (!strcmp(name, "--cases")) {
            free(cases_buf);
            free(case_ids);
            cases_buf = strdup(val);
            MT_CHECK(cases_buf);
            int cnt = 1;
            for (const char *c = val; *c; c++) cnt += *c == ',';
            case_ids = calloc((size_t)cnt, sizeof *case_ids);
            MT_CHECK(case_ids);
            int k = 0;
            for (char *tok = strtok(cases_buf, ","); tok; tok = strtok(NULL, ",")) case_ids[k++] = tok;
            if (k != cnt || k == 0) rc = prepare_usage_error("--cases '%s': expected ID,ID,... (no empty ids)", val);
            o.case_ids = case_ids;
            o.num_case_ids = k;
        } else if (!strcmp(a, "--aniso-rule")) {
            o.aniso_rule = 1;
        } else if (!strcmp(a, "--quiet")) {
            o.progress = 0;
        } else if (a[0] == '-' && a[1]) {
            rc = prepare_usage_error("unknown option '%s'", a);
        } else if (npos == 2) {
            rc = prepare_usage_error("unexpected argument '%s' (prepare takes DATASET_DIR OUT.h5)", a);
        } else {
            pos[npos++] = a;
        }
    }
    if (rc < 0 && npos < 2)
        rc = prepare_usage_error("%s", npos == 0 ? "prepare needs DATASET_DIR and OUT.h5" : "prepare needs OUT.h5 after DATASET_DIR");
    if (rc < 0 && !mt_fs_is_dir(pos[0]))
        rc = prepare_usage_error("DATASET_DIR '%s' is not a directory", pos[0]);
    if (rc < 0 && mt_fs_is_dir(pos[1]))
        rc = prepare_usage_error("OUT.h5 '%s' is a directory", pos[1]);
    if (rc < 0) {
        mt_status s = mt_prepare_run(pos[0], pos[1], &o);
        if (s != MT_OK) {
            fprintf(stderr, "medtrain: error: %s\n", mt_error_msg());
            rc = 1;
        } else {
            rc = 0;
        }
    }
    free(cases_buf);
    free(case_ids);
    return rc;
}
