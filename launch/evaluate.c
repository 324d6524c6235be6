/* `medtrain evaluate` (see launch/evaluate.h). */
#include "launch/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "data/h5store.h"
#include "data/msd.h"
#include "data/nifti.h"
#include "eval/report.h"
#include "launch/fsutil.h"

void mt_evaluate_options_default(mt_evaluate_options *o) {
    memset(o, 0, sizeof *o);
    mt_predict_options_default(&o->predict);
    o->split = "all";
    o->progress = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mt_status mt_evaluate_parse_split(const char *s, int *kind, int *fold) {
    *fold = -1;
    if (!s) s = "";
    if (!strcmp(s, "all")) *kind = 0;
    else if (!strcmp(s, "holdout")) *kind = 1;
    else if (!strcmp(s, "dev")) *kind = 2;
    else if (!strncmp(s, "fold:", 5)) {
        char *end;
        long k = strtol(s + 5, &end, 10);
        if (end == s + 5 || k < 0 || k > 100000 || (strcmp(end, ":val") && strcmp(end, ":train")))
            return mt_error_set(MT_ERR_CONFIG, "--split '%s': expected fold:K:val or fold:K:train with K >= 0", s);
        *fold = (int)k;
        *kind = !strcmp(end, ":val") ? 3 : 4;
    } else {
        return mt_error_set(MT_ERR_CONFIG, "--split '%s': expected all, holdout, dev, fold:K:val or fold:K:train", s);
    }
    return MT_OK;
}

typedef struct {
    mt_weights wl;            /* loaded here (when o->weights is NULL) */
    const mt_weights *w;
    int is_store;
    mt_h5store *store;
    mt_msd_dataset ds;        /* the dataset folder, or the store's source_dir */
    int ds_open;
    int ref_original;         /* store: reference from the original NIfTI labels */
    char ref_note[1024];
    char *splits_file;
    int n_sel;
    char **sel;               /* selected case ids (borrowed) */
    int *idx;                 /* their index in the store / dataset */
    int *ds_idx;              /* store with ref_original: index in ds */
} eval_ctx;

static void ctx_free(eval_ctx *c) {
    if (c->store) mt_h5store_close(c->store);
    if (c->ds_open) mt_msd_free(&c->ds);
    mt_weights_free(&c->wl);
    free(c->splits_file);
    free(c->sel);
    free(c->idx);
    free(c->ds_idx);
}

static int n_all_cases(const eval_ctx *c) { return c->is_store ? mt_h5store_num_cases(c->store) : c->ds.num_cases; }
static const char *case_id_at(const eval_ctx *c, int i) {
    return c->is_store ? mt_h5store_case_id(c->store, i) : c->ds.cases[i].id;
}
static int find_case(const eval_ctx *c, const char *id) {
    return c->is_store ? mt_h5store_find(c->store, id) : mt_msd_find(&c->ds, id);
}

/* The cases of the split. */
static mt_status select_cases(eval_ctx *c, const mt_evaluate_options *o, int kind, int fold) {
    if (kind == 0) {
        c->n_sel = n_all_cases(c);
        c->sel = calloc((size_t)(c->n_sel ? c->n_sel : 1), sizeof *c->sel);
        c->idx = calloc((size_t)(c->n_sel ? c->n_sel : 1), sizeof *c->idx);
        MT_CHECK(c->sel && c->idx);
        for (int i = 0; i < c->n_sel; i++) {
            c->sel[i] = (char *)case_id_at(c, i);
            c->idx[i] = i;
        }
        return MT_OK;
    }
    if (o->splits_path) {
        c->splits_file = strdup(o->splits_path);
    } else {
        const char *dir = c->is_store ? mt_h5store_get_meta(c->store)->source_dir : o->data_path;
        size_t n = strlen(dir ? dir : "") + 16;
        c->splits_file = malloc(n);
        MT_CHECK(c->splits_file);
        snprintf(c->splits_file, n, "%s/splits.json", dir ? dir : "");
    }
    MT_CHECK(c->splits_file);
    if (!mt_fs_is_file(c->splits_file))
        return mt_error_set(MT_ERR_IO, "--split %s needs a splits file: %s does not exist (give one with --splits FILE)",
                            o->split, c->splits_file);
    mt_msd_splits sp;
    MT_TRY(mt_msd_splits_read(&sp, c->splits_file));
    mt_status s = MT_OK;
    const mt_msd_id_list *list = NULL;
    if (kind == 1) list = &sp.holdout;
    else if (kind == 2) list = &sp.dev;
    else if (fold >= sp.num_folds)
        s = mt_error_set(MT_ERR_CONFIG, "--split %s: %s has %d fold(s)%s", o->split, c->splits_file, sp.num_folds,
                         sp.num_folds ? "" : " (none)");
    else list = kind == 3 ? &sp.val[fold] : &sp.train[fold];
    if (s == MT_OK && list->n == 0)
        s = mt_error_set(MT_ERR_INVALID, "--split %s: the list is empty in %s", o->split, c->splits_file);
    if (s == MT_OK) {
        c->n_sel = list->n;
        c->sel = calloc((size_t)list->n, sizeof *c->sel);
        c->idx = calloc((size_t)list->n, sizeof *c->idx);
        MT_CHECK(c->sel && c->idx);
        for (int i = 0; i < list->n && s == MT_OK; i++) {
            c->idx[i] = find_case(c, list->ids[i]);
            if (c->idx[i] < 0)
                s = mt_error_set(MT_ERR_INVALID, "%s: case '%s' (--split %s) is not in %s", c->splits_file,
                                 list->ids[i], o->split, o->data_path);
            else
                c->sel[i] = (char *)case_id_at(c, c->idx[i]); /* owned by the store / dataset */
        }
    }
    mt_msd_splits_free(&sp);
    return s;
}

/* Store: use the original labels when source_dir opens and holds every selected case. */
static void choose_reference(eval_ctx *c) {
    const mt_h5store_meta *m = mt_h5store_get_meta(c->store);
    c->ref_original = 0;
    if (!m->source_dir || !*m->source_dir || !mt_fs_is_dir(m->source_dir)) {
        snprintf(c->ref_note, sizeof c->ref_note,
                 "store labels mapped back to the original grid (source_dir %s is not available)",
                 m->source_dir && *m->source_dir ? m->source_dir : "(none)");
        return;
    }
    if (mt_msd_open(&c->ds, m->source_dir) != MT_OK) {
        snprintf(c->ref_note, sizeof c->ref_note, "store labels mapped back to the original grid (source_dir: %.900s)",
                 mt_error_msg());
        return;
    }
    c->ds_open = 1;
    c->ds_idx = calloc((size_t)(c->n_sel ? c->n_sel : 1), sizeof *c->ds_idx);
    MT_CHECK(c->ds_idx);
    for (int i = 0; i < c->n_sel; i++) {
        c->ds_idx[i] = mt_msd_find(&c->ds, c->sel[i]);
        if (c->ds_idx[i] < 0) {
            snprintf(c->ref_note, sizeof c->ref_note,
                     "store labels mapped back to the original grid (case '%s' is not in source_dir %s)", c->sel[i],
                     m->source_dir);
            return;
        }
    }
    c->ref_original = 1;
    snprintf(c->ref_note, sizeof c->ref_note, "original NIfTI labels from source_dir %s", m->source_dir);
}

/* One case: *pred and *ref (D, H, W) u8 on the original grid, spacing (D, H, W). */
static mt_status run_case(eval_ctx *c, const mt_evaluate_options *o, int k, mt_tensor **pred, mt_tensor **ref,
                          double spacing[3]) {
    *pred = *ref = NULL;
    const mt_weights *w = c->w;
    int i = c->idx[k];
    mt_status s = MT_OK;
    mt_tensor *image = NULL, *label = NULL;
    if (c->is_store) {
        mt_h5store_case_info info;
        MT_TRY(mt_h5store_load_case(c->store, i, o->hook ? NULL : &image, c->ref_original ? NULL : &label, &info));
        memcpy(spacing, info.geom.orig_spacing, sizeof(double) * 3);
        if (c->ref_original) {
            const char *lp = c->ds.cases[c->ds_idx[k]].label;
            mt_nifti nl;
            s = mt_nifti_read_labels(lp, &nl);
            if (s == MT_OK) {
                mt_tensor *t = nl.data;
                if (t->ndim != 3 || t->shape[0] != info.geom.orig_shape[0] || t->shape[1] != info.geom.orig_shape[1] ||
                    t->shape[2] != info.geom.orig_shape[2]) {
                    char b[96];
                    s = mt_error_set(MT_ERR_FORMAT,
                                     "%s: label %s (D, H, W) differs from the store's original shape %lld x %lld x %lld "
                                     "of case '%s'",
                                     lp, mt_tensor_shape_str(t, b, sizeof b), (long long)info.geom.orig_shape[0],
                                     (long long)info.geom.orig_shape[1], (long long)info.geom.orig_shape[2], c->sel[k]);
                    mt_nifti_free(&nl);
                } else {
                    *ref = t;
                }
            }
        } else {
            mt_tensor *inv = NULL;
            s = mt_preprocess_invert_labels(&inv, label, &info.geom);
            if (s == MT_OK) {
                *ref = mt_tensor_view(inv, 3, inv->shape + 1);
                mt_tensor_release(inv);
            }
        }
        if (s == MT_OK && !o->hook) s = mt_predict_preprocessed(pred, w, image, &info.geom, &o->predict);
    } else {
        mt_nifti_header hdr;
        MT_TRY(mt_msd_load_case(&c->ds, i, &image, &label, &hdr));
        mt_nifti_spacing(&hdr, spacing);
        *ref = mt_tensor_view(label, 3, label->shape + 1);
        if (!o->hook) {
            double affine[4][4];
            mt_nifti_best_affine(&hdr, affine);
            s = mt_predict_case(pred, w, image, spacing, (const double(*)[4])affine, &o->predict, NULL);
        }
    }
    mt_tensor_release(image);
    mt_tensor_release(label);
    if (s == MT_OK && o->hook) s = o->hook(o->hook_ctx, pred, c->sel[k], *ref);
    if (s != MT_OK) {
        mt_tensor_release(*pred);
        mt_tensor_release(*ref);
        *pred = *ref = NULL;
        mt_error_prefix(s, "case '%s': ", c->sel[k]);
    }
    return s;
}

static void json_kv_str(mt_strbuf *sb, const char *k, const char *v, int comma) {
    mt_strbuf_printf(sb, "%s\"%s\": ", comma ? ", " : "", k);
    if (v) mt_strbuf_json_string(sb, v);
    else mt_strbuf_puts(sb, "null");
}

static char *summary_extra(const eval_ctx *c, const mt_evaluate_options *o, const mt_eval_results *res,
                           double total_s, double infer_s) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_puts(&sb, "\"mean_foreground_dice\": ");
    mt_strbuf_json_number(&sb, mt_eval_results_class_mean(res, MT_METRIC_DICE));
    mt_strbuf_puts(&sb, ",\n  ");
    json_kv_str(&sb, "weights", o->weights_path ? o->weights_path : c->w->path, 0);
    json_kv_str(&sb, "data", o->data_path, 1);
    json_kv_str(&sb, "data_kind", c->is_store ? "prepared store" : "dataset folder", 1);
    mt_strbuf_puts(&sb, ",\n  ");
    json_kv_str(&sb, "split", o->split, 0);
    json_kv_str(&sb, "splits_file", c->splits_file, 1);
    mt_strbuf_puts(&sb, ",\n  \"grid\": \"original\"");
    mt_strbuf_puts(&sb, ",\n  ");
    json_kv_str(&sb, "reference",
                c->is_store ? (c->ref_original ? "original" : "inverted_store_labels") : "original", 0);
    json_kv_str(&sb, "reference_detail", c->is_store ? c->ref_note : "labelsTr of the dataset folder", 1);
    char devname[32] = "cpu";
    {
        mt_named_tensors ps = {0};
        mt_module_named_parameters(c->w->model, &ps);
        if (ps.n) mt_device_name(mt_tensor_device(ps.items[0].tensor), devname, sizeof devname);
        mt_named_tensors_free(&ps);
    }
    mt_strbuf_puts(&sb, ",\n  \"options\": {\"overlap\": ");
    mt_strbuf_json_number(&sb, o->predict.overlap);
    mt_strbuf_printf(&sb,
                     ", \"mirror\": %s, \"batch\": %d, \"largest_component\": %s, \"patch_size\": [%lld, %lld, %lld], "
                     "\"gaussian\": true, \"threads\": %d, \"device\": \"%s\"}",
                     o->predict.mirror ? "true" : "false", o->predict.batch,
                     o->predict.largest_component ? "true" : "false", (long long)c->w->patch[0],
                     (long long)c->w->patch[1], (long long)c->w->patch[2], mt_cpu_get_num_threads(), devname);
    mt_strbuf_puts(&sb, ",\n  \"timing\": {\"total_s\": ");
    mt_strbuf_json_number(&sb, total_s);
    mt_strbuf_puts(&sb, ", \"per_case_s\": ");
    mt_strbuf_json_number(&sb, res->n_cases ? infer_s / res->n_cases : NAN);
    mt_strbuf_puts(&sb, "}");
    mt_strbuf_printf(&sb, ",\n  \"medtrain_version\": \"%s\"", MT_VERSION);
    return mt_strbuf_take(&sb);
}

static void print_table(const mt_eval_results *res) {
    static const mt_metric ms[] = {MT_METRIC_DICE, MT_METRIC_IOU, MT_METRIC_HD95, MT_METRIC_ASD,
                                   MT_METRIC_SENSITIVITY, MT_METRIC_PRECISION};
    static const char *hd[] = {"Dice", "IoU", "HD95 mm", "ASD mm", "sens", "PPV"};
    int nm = (int)(sizeof ms / sizeof ms[0]);
    printf("%-16s", "class");
    for (int m = 0; m < nm; m++) printf(" %17s", hd[m]);
    printf("\n");
    for (int k = 0; k < res->n_classes; k++) {
        printf("%-16.16s", res->class_names[k]);
        for (int m = 0; m < nm; m++) {
            mt_eval_stat st = mt_eval_results_stat(res, k, ms[m]);
            char b[40];
            if (isnan(st.mean)) snprintf(b, sizeof b, "-");
            else if (isnan(st.std)) snprintf(b, sizeof b, "%.4f", st.mean);
            else snprintf(b, sizeof b, "%.4f +- %.4f", st.mean, st.std);
            printf(" %17s", b);
        }
        printf("\n");
    }
    printf("%-16s", "foreground mean");
    for (int m = 0; m < nm; m++) {
        double v = mt_eval_results_class_mean(res, ms[m]);
        char b[40];
        if (isnan(v)) snprintf(b, sizeof b, "-");
        else snprintf(b, sizeof b, "%.4f", v);
        printf(" %17s", b);
    }
    printf("\n");
    fflush(stdout);
}

mt_status mt_evaluate_run(const mt_evaluate_options *o, mt_eval_results *res_out) {
    if (res_out) memset(res_out, 0, sizeof *res_out);
    double t0 = now_s();
    if (!o->data_path || !*o->data_path) return mt_error_set(MT_ERR_INVALID, "evaluate: no store or dataset folder given");
    if (!o->out_dir || !*o->out_dir) return mt_error_set(MT_ERR_INVALID, "evaluate: no output folder given");
    if (!o->weights && !o->weights_path) return mt_error_set(MT_ERR_INVALID, "evaluate: no weight file given");
    int kind, fold;
    MT_TRY(mt_evaluate_parse_split(o->split, &kind, &fold));
    if (!(o->predict.overlap >= 0 && o->predict.overlap < 1) || o->predict.batch < 1)
        return mt_error_set(MT_ERR_INVALID, "evaluate: overlap %g must be in [0, 1) and batch %d >= 1",
                            o->predict.overlap, o->predict.batch);
    /* the output folder first: fail before any work */
    mt_status s = mt_fs_mkdir_p(o->out_dir);
    if (s != MT_OK) return mt_error_prefix(s, "output folder %s: ", o->out_dir);
    if (!mt_fs_is_dir(o->out_dir) || access(o->out_dir, W_OK) != 0)
        return mt_error_set(MT_ERR_IO, "output folder %s is not a writable folder", o->out_dir);

    eval_ctx c;
    memset(&c, 0, sizeof c);
    if (o->weights) {
        c.w = o->weights;
    } else {
        MT_TRY(mt_weights_load(o->weights_path, &c.wl));
        if (o->progress) mt_weights_print_note(&c.wl, stderr);
        if ((s = mt_predict_set_device(&c.wl, &o->predict)) != MT_OK) {
            mt_weights_free(&c.wl);
            return s;
        }
        c.w = &c.wl;
    }
    const mt_weights *w = c.w;
    mt_eval_results res;
    memset(&res, 0, sizeof res);
    int *labels = NULL;
    if (mt_fs_is_dir(o->data_path)) {
        if ((s = mt_msd_open(&c.ds, o->data_path))) goto done;
        c.ds_open = 1;
        if (!w->has_plan) {
            s = mt_error_set(MT_ERR_INVALID,
                             "%s has no preprocessing plan (metadata \"preprocess\"): evaluating on a dataset folder "
                             "needs the weight file of a model trained on a prepared store (or evaluate on the "
                             "store itself)",
                             w->path);
            goto done;
        }
        if (c.ds.num_channels != w->in_channels || c.ds.num_classes != w->num_classes) {
            s = mt_error_set(MT_ERR_INVALID, "%s: %d channel(s) and %d classes, but the model in %s has %d and %d",
                             c.ds.json_path, c.ds.num_channels, c.ds.num_classes, w->path, w->in_channels,
                             w->num_classes);
            goto done;
        }
    } else if (mt_fs_is_file(o->data_path)) {
        c.is_store = 1;
        if ((s = mt_h5store_open(&c.store, o->data_path))) goto done;
        const mt_h5store_meta *m = mt_h5store_get_meta(c.store);
        if (m->num_channels != w->in_channels || m->num_classes != w->num_classes) {
            s = mt_error_set(MT_ERR_INVALID, "%s: %d channel(s) and %d classes, but the model in %s has %d and %d",
                             o->data_path, m->num_channels, m->num_classes, w->path, w->in_channels, w->num_classes);
            goto done;
        }
        if (w->has_plan && o->progress)
            for (int a = 0; a < 3; a++)
                if (fabs(w->plan.target_spacing[a] - m->plan.target_spacing[a]) > 1e-6 * m->plan.target_spacing[a]) {
                    fprintf(stderr,
                            "evaluate: warning: %s was trained at %g x %g x %g mm (D, H, W) but %s holds cases at "
                            "%g x %g x %g mm\n",
                            w->path, w->plan.target_spacing[0], w->plan.target_spacing[1], w->plan.target_spacing[2],
                            o->data_path, m->plan.target_spacing[0], m->plan.target_spacing[1],
                            m->plan.target_spacing[2]);
                    break;
                }
    } else {
        s = mt_error_set(MT_ERR_IO, "%s: no such store file or dataset folder", o->data_path);
        goto done;
    }
    if ((s = select_cases(&c, o, kind, fold))) goto done;
    if (c.n_sel == 0) {
        s = mt_error_set(MT_ERR_INVALID, "%s: no cases to evaluate", o->data_path);
        goto done;
    }
    if (c.is_store) choose_reference(&c);
    /* classes 1..K-1, named by the data (else the weight file) */
    int K = w->num_classes;
    labels = malloc(sizeof(int) * (size_t)K);
    const char **names = malloc(sizeof(char *) * (size_t)K);
    MT_CHECK(labels && names);
    for (int k = 1; k < K; k++) {
        labels[k - 1] = k;
        names[k - 1] = c.is_store ? mt_h5store_get_meta(c.store)->class_names[k]
                       : c.ds_open ? c.ds.class_names[k]
                                   : w->class_names[k];
    }
    s = mt_eval_results_init(&res, K - 1, labels, names);
    free(names);
    if (s) goto done;
    if (o->progress)
        fprintf(stderr, "evaluate: %s on %s (%s), split %s: %d case(s); reference: %s\n", w->path, o->data_path,
                c.is_store ? "prepared store" : "dataset folder", o->split, c.n_sel,
                c.is_store ? c.ref_note : "labelsTr");
    double infer_s = 0;
    mt_eval_class_result *r = calloc((size_t)K, sizeof *r);
    MT_CHECK(r);
    for (int k = 0; k < c.n_sel && s == MT_OK; k++) {
        double tc = now_s();
        mt_tensor *pred = NULL, *ref = NULL;
        double spacing[3];
        if ((s = run_case(&c, o, k, &pred, &ref, spacing))) break;
        double tp = now_s() - tc;
        infer_s += tp;
        s = mt_eval_case(r, pred, ref, K - 1, labels, spacing, 1);
        if (s == MT_OK) s = mt_eval_results_add(&res, c.sel[k], r);
        else mt_error_prefix(s, "case '%s': ", c.sel[k]);
        mt_tensor_release(pred);
        mt_tensor_release(ref);
        if (s == MT_OK && o->progress) {
            fprintf(stderr, "evaluate: [%d/%d] %s: Dice", k + 1, c.n_sel, c.sel[k]);
            for (int j = 0; j < K - 1; j++) fprintf(stderr, " %s %.4f", res.class_names[j], r[j].v[MT_METRIC_DICE]);
            fprintf(stderr, " (%.1f s)\n", now_s() - tc);
        }
    }
    free(r);
    if (s) goto done;
    /* reports */
    {
        size_t n = strlen(o->out_dir) + 32;
        char *csv = malloc(n), *js = malloc(n);
        MT_CHECK(csv && js);
        snprintf(csv, n, "%s/per_case.csv", o->out_dir);
        snprintf(js, n, "%s/summary.json", o->out_dir);
        char *extra = summary_extra(&c, o, &res, now_s() - t0, infer_s);
        s = mt_eval_write_csv(csv, &res);
        if (s == MT_OK) {
            s = mt_eval_write_json_ex(js, &res, extra);
            if (s != MT_OK) unlink(csv);
        }
        free(extra);
        if (s == MT_OK && o->progress) {
            print_table(&res);
            printf("mean foreground Dice %.4f over %d case(s) (%s); wrote %s and %s\n",
                   mt_eval_results_class_mean(&res, MT_METRIC_DICE), res.n_cases,
                   c.is_store && !c.ref_original ? "reference: store labels mapped back" : "original grid", csv, js);
        }
        free(csv);
        free(js);
    }
done:
    free(labels);
    if (s == MT_OK && res_out) {
        *res_out = res;
    } else {
        mt_eval_results_free(&res);
    }
    ctx_free(&c);
    return s;
}

/* ----------------------------------------------------------------- CLI */

static void evaluate_usage(FILE *fp) {
    fprintf(fp,
            "usage: medtrain evaluate WEIGHTS.safetensors (STORE.h5 | DATASET_DIR) --split SPLIT --out DIR\n"
            "                         [--splits FILE] [--overlap X] [--mirror] [--batch N]\n"
            "                         [--largest-component] [--device D] [--threads N] [--quiet]\n"
            "\n"
            "Predicts every case of a split and scores it against its reference label on the original\n"
            "image grid: Dice, IoU, HD95 and ASD (mm), sensitivity, specificity, PPV, NPV per class.\n"
            "Writes DIR/per_case.csv and DIR/summary.json and prints a table.\n"
            "\n"
            "STORE.h5     a store from `medtrain prepare`: inference on the preprocessed cases; reference =\n"
            "             the original NIfTI labels if the store's source folder still exists, else the\n"
            "             stored labels mapped back (summary.json says which)\n"
            "DATASET_DIR  an MSD / nnU-Net folder: cases preprocessed with the weight file's plan\n"
            "\n"
            "options:\n"
            "  --split S            all | holdout | dev | fold:K:val | fold:K:train\n"
            "  --splits FILE        splits file (default: splits.json in DATASET_DIR or the store's source folder)\n"
            "  --out DIR            output folder (created if needed)\n"
            "  --overlap X          sliding-window overlap in [0, 1) (default 0.5)\n"
            "  --mirror             test-time mirroring on all three axes (8 passes)\n"
            "  --batch N            windows per forward pass (default 1)\n"
            "  --largest-component  keep only the largest connected component of each class\n"
            "  --device D           auto | cpu | cuda | cuda:N (default cpu; auto: the GPU if usable)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --quiet              no progress lines or table\n");
}

static int eval_usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "medtrain: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'medtrain evaluate --help'.\n");
    return 2;
}

int mt_evaluate_cli(int argc, char **argv) {
    mt_evaluate_options o;
    mt_evaluate_options_default(&o);
    o.split = NULL;
    int threads = 0;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            evaluate_usage(stdout);
            return 0;
        }
        int r = mt_predict_parse_option("evaluate", argc, argv, &i, &o.predict, &threads);
        if (r < 0) return -r;
        if (r > 0) continue;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const char **dst = NULL;
        if (len == 7 && !strncmp(a, "--split", 7)) dst = &o.split;
        else if (len == 8 && !strncmp(a, "--splits", 8)) dst = &o.splits_path;
        else if (len == 5 && !strncmp(a, "--out", 5)) dst = &o.out_dir;
        if (dst) {
            const char *val = eq ? eq + 1 : NULL;
            if (!val) {
                if (i + 1 >= argc) return eval_usage_error("%s needs a value", a);
                val = argv[++i];
            }
            if (!*val) return eval_usage_error("%s needs a non-empty value", a);
            *dst = val;
        } else if (!strcmp(a, "--quiet")) {
            o.progress = 0;
        } else if (a[0] == '-' && a[1]) {
            return eval_usage_error("unknown option '%s'", a);
        } else if (npos == 2) {
            return eval_usage_error("unexpected argument '%s' (evaluate takes WEIGHTS and STORE.h5 or DATASET_DIR)", a);
        } else {
            pos[npos++] = a;
        }
    }
    if (npos < 2)
        return eval_usage_error("%s", npos == 0 ? "evaluate needs WEIGHTS.safetensors and STORE.h5 or DATASET_DIR"
                                                : "evaluate needs STORE.h5 or DATASET_DIR after WEIGHTS");
    if (!o.split) return eval_usage_error("%s", "evaluate needs --split (all, holdout, dev, fold:K:val, fold:K:train)");
    if (!o.out_dir) return eval_usage_error("%s", "evaluate needs --out DIR");
    int kind, fold;
    if (mt_evaluate_parse_split(o.split, &kind, &fold) != MT_OK) {
        fprintf(stderr, "medtrain: error: %s\nTry 'medtrain evaluate --help'.\n", mt_error_msg());
        return 2;
    }
    if (threads > 0) mt_cpu_set_num_threads(threads);
    o.weights_path = pos[0];
    o.data_path = pos[1];
    mt_status s = mt_evaluate_run(&o, NULL);
    if (s != MT_OK) {
        fprintf(stderr, "medtrain: error: %s\n", mt_error_msg());
        return s == MT_ERR_CONFIG ? 2 : 1;
    }
    return 0;
}
