/* Per-case CSV and JSON summary of evaluation results, written atomically
 * (format in eval/report.h). eval/ may not use launch/fsutil, so the small
 * atomic-write helper lives here. */
#include "eval/report.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------- atomic writes */

typedef struct {
    const mt_eval_results *res;
    const char *extra; /* JSON members inserted into the summary object, or NULL */
} emit_ctx;

typedef void (*emit_fn)(FILE *f, const emit_ctx *ctx);

static void fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd); /* best effort: some file systems refuse directory fsync */
        close(fd);
    }
}

static mt_status write_atomic(const char *path, emit_fn emit, const emit_ctx *res) {
    if (!path || !*path) return mt_error_set(MT_ERR_INVALID, "eval report: empty output path");
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    MT_CHECK(tmp);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mt_status st = mt_error_set(MT_ERR_IO, "eval report: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    emit(f, res);
    int bad = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        unlink(tmp);
        free(tmp);
        return mt_error_set(MT_ERR_IO, "eval report: writing %s failed: %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        free(tmp);
        return mt_error_set(MT_ERR_IO, "eval report: cannot rename onto %s: %s", path, strerror(err));
    }
    free(tmp);
    fsync_parent_dir(path);
    return MT_OK;
}

/* ------------------------------------------------------------- numbers */

/* Shortest %.Ng text (N <= 17) that reads back as exactly v; non-finite
 * values as null (JSON, nan_text "null") or nan / inf / -inf (CSV). */
static void put_double(FILE *f, double v, const char *nan_text) {
    int json = !strcmp(nan_text, "null");
    if (isnan(v) || (json && isinf(v))) {
        fputs(nan_text, f);
        return;
    }
    if (isinf(v)) {
        fputs(v > 0 ? "inf" : "-inf", f);
        return;
    }
    char b[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(b, sizeof b, "%.*g", p, v);
        if (strtod(b, NULL) == v) break;
    }
    fputs(b, f);
}

/* ----------------------------------------------------------------- CSV */

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const mt_metric csv_order[MT_METRIC_COUNT] = {
    MT_METRIC_DICE,        MT_METRIC_IOU,         MT_METRIC_HD95,      MT_METRIC_ASD,
    MT_METRIC_SENSITIVITY, MT_METRIC_SPECIFICITY, MT_METRIC_PRECISION, MT_METRIC_NPV};

static void emit_csv(FILE *f, const emit_ctx *ctx) {
    const mt_eval_results *res = ctx->res;
    fputs("case,class,label", f);
    for (int m = 0; m < MT_METRIC_COUNT; m++) fprintf(f, ",%s", mt_metric_name(csv_order[m]));
    fputs(",tp,fp,fn,tn\n", f);
    for (int i = 0; i < res->n_cases; i++)
        for (int k = 0; k < res->n_classes; k++) {
            const mt_eval_class_result *r = &res->r[(size_t)i * res->n_classes + k];
            csv_field(f, res->case_names[i]);
            fputc(',', f);
            csv_field(f, res->class_names[k]);
            fprintf(f, ",%d", res->labels[k]);
            for (int m = 0; m < MT_METRIC_COUNT; m++) {
                fputc(',', f);
                put_double(f, r->v[csv_order[m]], "nan");
            }
            fprintf(f, ",%lld,%lld,%lld,%lld\n", (long long)r->c.tp, (long long)r->c.fp,
                    (long long)r->c.fn, (long long)r->c.tn);
        }
}

mt_status mt_eval_write_csv(const char *path, const mt_eval_results *res) {
    emit_ctx ctx = {res, NULL};
    MT_TRY(write_atomic(path, emit_csv, &ctx));
    return MT_OK;
}

/* ---------------------------------------------------------------- JSON */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void emit_json(FILE *f, const emit_ctx *ctx) {
    const mt_eval_results *res = ctx->res;
    fprintf(f, "{\n  \"n_cases\": %d,\n", res->n_cases);
    if (ctx->extra && *ctx->extra) fprintf(f, "  %s,\n", ctx->extra);
    fputs("  \"metrics\": [", f);
    for (int m = 0; m < MT_METRIC_COUNT; m++)
        fprintf(f, "%s\"%s\"", m ? ", " : "", mt_metric_name(csv_order[m]));
    fputs("],\n", f);
    fputs("  \"conventions\": {\n"
          "    \"dice_iou\": \"both masks empty: 1; one empty: 0\",\n"
          "    \"hd95\": \"max of the two directed 95th percentiles of surface-voxel distances "
          "(MONAI, numpy linear percentile), mm\",\n"
          "    \"asd\": \"average symmetric surface distance: mean of both directed distance sets "
          "pooled (MONAI symmetric=True), mm\",\n"
          "    \"surface\": \"voxels with a 6-neighbour outside the mask; outside the volume "
          "counts as outside\",\n"
          "    \"empty\": \"hd95/asd: both masks empty 0, one empty null; ratios with a zero "
          "denominator null\",\n"
          "    \"aggregation\": \"mean and sample std (n-1) over non-null values; count = "
          "non-null, n_nan = null\"\n"
          "  },\n",
          f);
    fputs("  \"classes\": [\n", f);
    for (int k = 0; k < res->n_classes; k++) {
        fprintf(f, "    {\"label\": %d, \"name\": ", res->labels[k]);
        json_string(f, res->class_names[k]);
        for (int m = 0; m < MT_METRIC_COUNT; m++) {
            mt_eval_stat s = mt_eval_results_stat(res, k, csv_order[m]);
            fprintf(f, ",\n     \"%s\": {\"mean\": ", mt_metric_name(csv_order[m]));
            put_double(f, s.mean, "null");
            fputs(", \"std\": ", f);
            put_double(f, s.std, "null");
            fprintf(f, ", \"count\": %lld, \"n_nan\": %lld}", (long long)s.count, (long long)s.n_nan);
        }
        fprintf(f, "}%s\n", k + 1 < res->n_classes ? "," : "");
    }
    fputs("  ],\n  \"foreground_mean\": {", f);
    for (int m = 0; m < MT_METRIC_COUNT; m++) {
        fprintf(f, "%s\"%s\": ", m ? ", " : "", mt_metric_name(csv_order[m]));
        put_double(f, mt_eval_results_class_mean(res, csv_order[m]), "null");
    }
    fputs("},\n  \"cases\": [\n", f);
    for (int i = 0; i < res->n_cases; i++) {
        fputs("    {\"case\": ", f);
        json_string(f, res->case_names[i]);
        fputs(", \"classes\": [", f);
        for (int k = 0; k < res->n_classes; k++) {
            const mt_eval_class_result *r = &res->r[(size_t)i * res->n_classes + k];
            fprintf(f, "%s{\"label\": %d, \"name\": ", k ? ", " : "", res->labels[k]);
            json_string(f, res->class_names[k]);
            for (int m = 0; m < MT_METRIC_COUNT; m++) {
                fprintf(f, ", \"%s\": ", mt_metric_name(csv_order[m]));
                put_double(f, r->v[csv_order[m]], "null");
            }
            fprintf(f, ", \"tp\": %lld, \"fp\": %lld, \"fn\": %lld, \"tn\": %lld}", (long long)r->c.tp,
                    (long long)r->c.fp, (long long)r->c.fn, (long long)r->c.tn);
        }
        fprintf(f, "]}%s\n", i + 1 < res->n_cases ? "," : "");
    }
    fputs("  ]\n}\n", f);
}

mt_status mt_eval_write_json(const char *path, const mt_eval_results *res) {
    return mt_eval_write_json_ex(path, res, NULL);
}

mt_status mt_eval_write_json_ex(const char *path, const mt_eval_results *res, const char *extra) {
    emit_ctx ctx = {res, extra};
    MT_TRY(write_atomic(path, emit_json, &ctx));
    return MT_OK;
}
