/* Checkpoint and weight-file writing and restoring (see checkpoint.h). */
#include "launch/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "launch/fsutil.h"
#include "launch/train.h"

#define CKPT_FORMAT "medtrain-checkpoint"
#define WEIGHTS_FORMAT "medtrain-weights"

static void set_meta_i64(mt_safetensors *st, const char *key, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    mt_safetensors_set_meta(st, key, buf);
}

static void set_meta_u64(mt_safetensors *st, const char *key, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    mt_safetensors_set_meta(st, key, buf);
}

/* Adds t, through a host copy when it lives on a GPU: the safetensors
 * object then holds host tensors only, a snapshot of the training state. */
static mt_status add_host(mt_safetensors *st, const char *name, mt_tensor *t) {
    mt_tensor *h = mt_tensor_to_device(t, MT_DEVICE_CPU);
    mt_status s = mt_safetensors_add(st, name, h);
    mt_tensor_release(h);
    return s;
}

static mt_status add_state_dict(mt_safetensors *st, mt_module *model) {
    mt_named_tensors sd = {0};
    mt_module_state_dict(model, &sd);
    mt_status s = MT_OK;
    for (int k = 0; k < sd.n && s == MT_OK; k++) s = add_host(st, sd.items[k].name, sd.items[k].tensor);
    mt_named_tensors_free(&sd);
    return s;
}

static void add_common_meta(mt_safetensors *st, const mt_config *cfg, const char *format) {
    mt_safetensors_set_meta(st, "format", format);
    mt_safetensors_set_meta(st, "medtrain_version", MT_VERSION);
    char *yaml = mt_config_to_yaml(cfg);
    mt_safetensors_set_meta(st, "config", yaml);
    free(yaml);
}

/* Dropout mask streams, by module path: "rng.module.<path>" = offset (their
 * seeds come from the config). Calls fn for every Dropout under m. */
typedef void (*rng_visit_fn)(const char *path, mt_rng *rng, void *ctx);

static void visit_module_rngs(mt_module *m, const char *prefix, rng_visit_fn fn, void *ctx) {
    mt_rng *r = mt_dropout_rng(m);
    if (r) fn(prefix, r, ctx);
    for (int k = 0; k < m->n_children; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", m->children[k].name);
        visit_module_rngs(m->children[k].module, path, fn, ctx);
    }
}

static void save_rng(const char *path, mt_rng *rng, void *ctx) {
    char key[600];
    snprintf(key, sizeof key, "rng.module.%s", path);
    set_meta_u64((mt_safetensors *)ctx, key, rng->offset);
}

static mt_status meta_u64(const mt_safetensors *st, const char *path, const char *key, uint64_t *out);

#define MAX_MODULE_RNGS 1024
typedef struct {
    const mt_safetensors *st;
    const char *file;
    mt_status status;
    int n, found;
    char missing[600];
    uint64_t offsets[MAX_MODULE_RNGS];
} rng_load_ctx;

/* Reads every Dropout's offset; counts those present (a checkpoint written
 * before these were saved has none: the streams then stay as built). */
static void read_rng(const char *path, mt_rng *rng, void *ctx) {
    rng_load_ctx *c = ctx;
    char key[600];
    snprintf(key, sizeof key, "rng.module.%s", path);
    (void)rng;
    if (c->status != MT_OK) return;
    if (c->n >= MAX_MODULE_RNGS) {
        c->status = mt_error_set(MT_ERR_INVALID, "%s: more than %d dropout modules", c->file,
                                 MAX_MODULE_RNGS);
        return;
    }
    uint64_t *o = &c->offsets[c->n++];
    if (!mt_safetensors_get_meta(c->st, key)) {
        snprintf(c->missing, sizeof c->missing, "%s", key);
        *o = rng->offset;
        return;
    }
    c->found++;
    c->status = meta_u64(c->st, c->file, key, o);
}

typedef struct {
    const uint64_t *offsets;
    int i;
} rng_apply_ctx;

static void apply_rng(const char *path, mt_rng *rng, void *ctx) {
    rng_apply_ctx *c = ctx;
    (void)path;
    rng->offset = c->offsets[c->i++];
}

mt_status mt_checkpoint_build(mt_safetensors *st, const mt_config *cfg, mt_module *model,
                              mt_optim *opt, const mt_train_state *ts) {
    add_common_meta(st, cfg, CKPT_FORMAT);
    MT_TRY(add_state_dict(st, model));
    int n = mt_optim_state_count(opt);
    for (int k = 0; k < n; k++) {
        mt_optim_state_entry e;
        mt_optim_state_entry_get(opt, k, &e);
        char key[96];
        snprintf(key, sizeof key, "optimizer.%s", e.name);
        if (e.tensor) {
            MT_TRY(add_host(st, key, e.tensor));
        } else if (e.i64) {
            set_meta_i64(st, key, *e.i64);
        } else if (e.f64) {
            char buf[40];
            snprintf(buf, sizeof buf, "%.17g", *e.f64);
            mt_safetensors_set_meta(st, key, buf);
        }
    }
    set_meta_i64(st, "step", ts->step);
    set_meta_u64(st, "rng.seed", ts->rng.seed);
    set_meta_u64(st, "rng.offset", ts->rng.offset);
    visit_module_rngs(model, "", save_rng, st);
    if (ts->has_best) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.17g", ts->best);
        mt_safetensors_set_meta(st, "early_stop.best", buf);
        set_meta_i64(st, "early_stop.best_step", ts->best_step);
        set_meta_i64(st, "early_stop.bad_validations", ts->bad_validations);
    }
    return MT_OK;
}

static mt_status meta_i64(const mt_safetensors *st, const char *path, const char *key, int64_t *out) {
    const char *v = mt_safetensors_get_meta(st, key);
    if (!v) return mt_error_set(MT_ERR_FORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v)
        return mt_error_set(MT_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not an integer", path, key, v);
    *out = x;
    return MT_OK;
}

static mt_status meta_u64(const mt_safetensors *st, const char *path, const char *key, uint64_t *out) {
    const char *v = mt_safetensors_get_meta(st, key);
    if (!v) return mt_error_set(MT_ERR_FORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-')
        return mt_error_set(MT_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not an unsigned integer", path,
                            key, v);
    *out = x;
    return MT_OK;
}

static mt_status meta_f64(const mt_safetensors *st, const char *path, const char *key, double *out) {
    const char *v = mt_safetensors_get_meta(st, key);
    if (!v) return mt_error_set(MT_ERR_FORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v)
        return mt_error_set(MT_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not a number", path, key, v);
    *out = x;
    return MT_OK;
}

mt_status mt_checkpoint_restore(const char *path, mt_module *model, mt_optim *opt,
                                mt_train_state *ts) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    MT_TRY(mt_safetensors_load(&st, path));
    mt_status s = MT_OK;
    const char *fmt = mt_safetensors_get_meta(&st, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        s = mt_error_set(MT_ERR_FORMAT, "%s: not a medtrain checkpoint (metadata format = %s%s%s)", path,
                         fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
        goto done;
    }
    /* 1. Check everything before changing anything. */
    int64_t step;
    uint64_t seed, offset;
    if ((s = meta_i64(&st, path, "step", &step)) || (s = meta_u64(&st, path, "rng.seed", &seed)) ||
        (s = meta_u64(&st, path, "rng.offset", &offset)))
        goto done;
    if (step < 0) {
        s = mt_error_set(MT_ERR_FORMAT, "%s: negative step %lld", path, (long long)step);
        goto done;
    }
    /* early-stopping state: present once a validation has run */
    int has_best = mt_safetensors_get_meta(&st, "early_stop.best") != NULL;
    double best = 0;
    int64_t best_step = 0, bad = 0;
    if (has_best && ((s = meta_f64(&st, path, "early_stop.best", &best)) ||
                     (s = meta_i64(&st, path, "early_stop.best_step", &best_step)) ||
                     (s = meta_i64(&st, path, "early_stop.bad_validations", &bad))))
        goto done;
    int n = mt_optim_state_count(opt);
    for (int k = 0; k < n; k++) {
        mt_optim_state_entry e;
        mt_optim_state_entry_get(opt, k, &e);
        char key[96];
        snprintf(key, sizeof key, "optimizer.%s", e.name);
        if (e.tensor) {
            mt_tensor *t = mt_safetensors_find(&st, key);
            char b1[128], b2[128];
            if (!t) {
                s = mt_error_set(MT_ERR_FORMAT, "%s: optimizer state \"%s\" is missing (was the checkpoint "
                                 "written with another optimizer?)", path, key);
                goto done;
            }
            if (!mt_tensor_same_shape(t, e.tensor)) {
                s = mt_error_set(MT_ERR_FORMAT, "%s: \"%s\" has shape %s, expected %s", path, key,
                                 mt_tensor_shape_str(t, b1, sizeof b1),
                                 mt_tensor_shape_str(e.tensor, b2, sizeof b2));
                goto done;
            }
        } else if (!mt_safetensors_get_meta(&st, key)) {
            s = mt_error_set(MT_ERR_FORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
            goto done;
        }
    }
    /* 2. Model (mt_module_load checks all names and shapes before copying;
     * it copies onto the model's device, as step 3 onto the optimizer state's). */
    mt_named_tensors sd = {0}, all = {0};
    mt_module_state_dict(model, &sd);
    for (int k = 0; k < sd.n; k++) {
        mt_tensor *t = mt_safetensors_find(&st, sd.items[k].name);
        if (!t) {
            s = mt_error_set(MT_ERR_FORMAT, "%s: model tensor \"%s\" is missing (model config differs?)",
                             path, sd.items[k].name);
            mt_named_tensors_free(&sd);
            goto done;
        }
        mt_named_tensors_append(&all, sd.items[k].name, t);
    }
    mt_named_tensors_free(&sd);
    /* dropout streams: read (and checked) before anything is changed */
    rng_load_ctx *rc = calloc(1, sizeof *rc);
    MT_CHECK(rc);
    rc->st = &st;
    rc->file = path;
    visit_module_rngs(model, "", read_rng, rc);
    if (rc->status == MT_OK && rc->found > 0 && rc->found < rc->n)
        rc->status = mt_error_set(MT_ERR_FORMAT, "%s: checkpoint metadata lacks \"%s\"", path,
                                  rc->missing);
    if ((s = rc->status) != MT_OK) {
        free(rc);
        mt_named_tensors_free(&all);
        goto done;
    }
    s = mt_module_load(model, &all, 1);
    mt_named_tensors_free(&all);
    if (s) {
        free(rc);
        mt_error_prefix(s, "%s: ", path);
        goto done;
    }
    if (rc->found > 0) {
        rng_apply_ctx ac = {rc->offsets, 0};
        visit_module_rngs(model, "", apply_rng, &ac);
    }
    free(rc);
    /* 3. Optimizer and training state. */
    for (int k = 0; k < n; k++) {
        mt_optim_state_entry e;
        mt_optim_state_entry_get(opt, k, &e);
        char key[96];
        snprintf(key, sizeof key, "optimizer.%s", e.name);
        if (e.tensor) mt_tensor_copy_(e.tensor, mt_safetensors_find(&st, key));
        else if (e.i64 && (s = meta_i64(&st, path, key, e.i64))) goto done;
        else if (e.f64 && (s = meta_f64(&st, path, key, e.f64))) goto done;
    }
    ts->step = step;
    ts->rng.seed = seed;
    ts->rng.offset = offset;
    ts->has_best = has_best;
    ts->best = best;
    ts->best_step = best_step;
    ts->bad_validations = bad;
done:
    mt_safetensors_free(&st);
    return s;
}

static char *preprocess_json(const mt_h5store_meta *m) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    char *plan = mt_prep_plan_to_json(&m->plan);
    mt_strbuf_puts(&sb, "{\"plan\": ");
    mt_strbuf_puts(&sb, plan);
    free(plan);
    mt_strbuf_puts(&sb, ", \"channel_names\": [");
    for (int c = 0; c < m->plan.num_channels; c++) {
        if (c) mt_strbuf_puts(&sb, ", ");
        mt_strbuf_json_string(&sb, c < m->num_channels && m->channel_names && m->channel_names[c] ? m->channel_names[c] : "");
    }
    mt_strbuf_puts(&sb, "], \"dataset_name\": ");
    mt_strbuf_json_string(&sb, m->dataset_name ? m->dataset_name : "");
    mt_strbuf_puts(&sb, "}");
    return mt_strbuf_take(&sb);
}

mt_status mt_weights_save(const char *path, const mt_config *cfg, mt_module *model,
                          int num_classes, const char *const *class_names,
                          const char *normalization, const mt_h5store_meta *store) {
    if (store && store->plan.num_channels != store->num_channels)
        return mt_error_set(MT_ERR_INVALID, "%s: store plan has %d channels, store meta %d", path,
                            store->plan.num_channels, store->num_channels);
    mt_safetensors st;
    mt_safetensors_init(&st);
    add_common_meta(&st, cfg, WEIGHTS_FORMAT);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    for (int c = 0; c < num_classes; c++) {
        if (c) mt_strbuf_puts(&sb, ",");
        if (!class_names[c] || !class_names[c][0]) {
            mt_strbuf_printf(&sb, "class_%d", c);
            continue;
        }
        for (const char *p = class_names[c]; *p; p++) mt_strbuf_append(&sb, *p == ',' ? ";" : p, 1);
    }
    char *names = mt_strbuf_take(&sb);
    mt_safetensors_set_meta(&st, "class_names", names);
    free(names);
    mt_safetensors_set_meta(&st, "normalization", normalization ? normalization : "none");
    if (store) {
        char *pj = preprocess_json(store);
        mt_safetensors_set_meta(&st, "preprocess", pj);
        free(pj);
    }
    mt_status s = add_state_dict(&st, model);
    if (s == MT_OK) s = mt_safetensors_save(&st, path);
    mt_safetensors_free(&st);
    return s;
}

/* ------------------------------------------------------------- loading */

static char *xstrdup(const char *s) {
    char *d = strdup(s ? s : "");
    MT_CHECK(d);
    return d;
}

static mt_status load_preprocess(mt_weights *w, const char *text) {
    char what[1100];
    snprintf(what, sizeof what, "%s: metadata \"preprocess\"", w->path);
    mt_json *root = NULL;
    MT_TRY(mt_json_parse(&root, text, strlen(text), what));
    mt_status s = MT_OK;
    const mt_json *plan, *names, *dn;
    const char *str;
    if ((s = mt_json_expect(root, MT_JSON_OBJECT, "preprocess")) || (s = mt_json_require(&plan, root, "plan")) ||
        (s = mt_json_expect(plan, MT_JSON_OBJECT, "plan")) || (s = mt_json_require(&names, root, "channel_names")) ||
        (s = mt_json_expect(names, MT_JSON_ARRAY, "channel_names")) ||
        (s = mt_json_require(&dn, root, "dataset_name")) || (s = mt_json_as_string(dn, &str, "dataset_name")))
        goto done;
    w->dataset_name = xstrdup(str);
    if ((s = mt_prep_plan_from_json_value(&w->plan, plan))) goto done;
    if (mt_json_len(names) != w->plan.num_channels) {
        s = mt_error_set(MT_ERR_FORMAT, "%s: %d channel_names for %d channels", what, mt_json_len(names),
                         w->plan.num_channels);
        goto done;
    }
    w->channel_names = calloc((size_t)w->plan.num_channels, sizeof *w->channel_names);
    MT_CHECK(w->channel_names);
    for (int c = 0; c < w->plan.num_channels; c++) {
        if ((s = mt_json_as_string(mt_json_at(names, c), &str, "channel_names[]"))) goto done;
        w->channel_names[c] = xstrdup(str);
    }
    w->has_plan = 1;
done:
    mt_json_free(root);
    return s;
}

static void free_strv(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

void mt_weights_free(mt_weights *w) {
    if (!w) return;
    free_strv(w->class_names, w->num_classes);
    free_strv(w->channel_names, w->channel_names ? w->plan.num_channels : 0);
    mt_module_free(w->model);
    mt_config_free(w->cfg);
    free(w->path);
    free(w->normalization);
    free(w->dataset_name);
    free(w->written_by);
    free(w->skipped_config);
    memset(w, 0, sizeof *w);
}

void mt_weights_print_note(const mt_weights *w, FILE *f) {
    if (!w->skipped_config) return;
    fprintf(f,
            "medtrain: note: %s was written by medtrain %s; this version (%s) ignored settings it does not know "
            "and that do not define the model: %s\n",
            w->path, w->written_by ? w->written_by : "unknown", MT_VERSION, w->skipped_config);
}

mt_status mt_weights_load(const char *path, mt_weights *w) {
    memset(w, 0, sizeof *w);
    mt_safetensors st;
    mt_safetensors_init(&st);
    MT_TRY(mt_safetensors_load(&st, path));
    w->path = xstrdup(path);
    mt_status s = MT_OK;
    const char *fmt = mt_safetensors_get_meta(&st, "format");
    if (!fmt || (strcmp(fmt, WEIGHTS_FORMAT) && strcmp(fmt, CKPT_FORMAT))) {
        s = mt_error_set(MT_ERR_FORMAT,
                         "%s: not a medtrain weight file or checkpoint (metadata format = %s%s%s; expected \"%s\" or "
                         "\"%s\")",
                         path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", WEIGHTS_FORMAT, CKPT_FORMAT);
        goto done;
    }
    w->is_checkpoint = !strcmp(fmt, CKPT_FORMAT);
    const char *yaml = mt_safetensors_get_meta(&st, "config");
    if (!yaml) {
        s = mt_error_set(MT_ERR_FORMAT, "%s: metadata lacks \"config\"", path);
        goto done;
    }
    char cname[1100];
    snprintf(cname, sizeof cname, "%s: metadata \"config\"", path);
    const char *ver = mt_safetensors_get_meta(&st, "medtrain_version");
    w->written_by = xstrdup(ver ? ver : "unknown");
    if ((s = mt_config_parse_stored(&w->cfg, yaml, cname, &w->skipped_config))) {
        if (ver && strcmp(ver, MT_VERSION))
            mt_error_prefix(s, "(written by medtrain %s; this is %s) ", ver, MT_VERSION);
        goto done;
    }
    mt_unet3d_config mc;
    if ((s = mt_train_model_config(w->cfg, &mc))) goto done;
    w->in_channels = mc.in_channels;
    w->out_channels = mc.out_channels;
    int np;
    const int64_t *patch = mt_config_get_int_list(w->cfg, "data.patch_size", &np);
    for (int a = 0; a < 3; a++) w->patch[a] = patch[a];
    const char *loss = mt_config_get_string(w->cfg, "loss.name");
    w->sigmoid = !strcmp(loss, "bce") || !strcmp(loss, "dice_bce");
    /* classes */
    const char *names = mt_safetensors_get_meta(&st, "class_names");
    if (!w->is_checkpoint && !names) {
        s = mt_error_set(MT_ERR_FORMAT, "%s: metadata lacks \"class_names\"", path);
        goto done;
    }
    if (names) {
        int n = 1;
        for (const char *c = names; *c; c++) n += *c == ',';
        w->class_names = calloc((size_t)n, sizeof *w->class_names);
        MT_CHECK(w->class_names);
        const char *b = names;
        for (int k = 0; k < n; k++) {
            const char *e = strchr(b, ',');
            size_t len = e ? (size_t)(e - b) : strlen(b);
            w->class_names[k] = malloc(len + 1);
            MT_CHECK(w->class_names[k]);
            memcpy(w->class_names[k], b, len);
            w->class_names[k][len] = 0;
            b = e ? e + 1 : b + len;
        }
        w->num_classes = n;
        if (n < 2 || n > 256) {
            s = mt_error_set(MT_ERR_FORMAT, "%s: metadata \"class_names\" lists %d classes (2..256)", path, n);
            goto done;
        }
    } else {
        w->num_classes = mc.out_channels;
        w->class_names = calloc((size_t)w->num_classes, sizeof *w->class_names);
        MT_CHECK(w->class_names);
        for (int k = 0; k < w->num_classes; k++) {
            char b[32];
            snprintf(b, sizeof b, "class_%d", k);
            w->class_names[k] = xstrdup(b);
        }
    }
    const char *norm = mt_safetensors_get_meta(&st, "normalization");
    w->normalization = xstrdup(norm ? norm : "");
    const char *pre = mt_safetensors_get_meta(&st, "preprocess");
    if (pre) {
        if ((s = load_preprocess(w, pre))) goto done;
        if (w->plan.num_channels != w->in_channels) {
            s = mt_error_set(MT_ERR_FORMAT, "%s: the preprocessing plan has %d channels but model.in_channels = %d",
                             path, w->plan.num_channels, w->in_channels);
            goto done;
        }
    }
    /* model: every tensor of the file (a checkpoint's optimizer state aside) must be a model tensor */
    if ((s = mt_unet3d_new(&w->model, &mc, 0))) {
        mt_error_prefix(s, "%s: ", path);
        goto done;
    }
    mt_named_tensors src = {0};
    for (int k = 0; k < st.n; k++) {
        if (w->is_checkpoint && !strncmp(st.names[k], "optimizer.", 10)) continue;
        mt_named_tensors_append(&src, st.names[k], st.tensors[k]);
    }
    s = mt_module_load(w->model, &src, 1);
    mt_named_tensors_free(&src);
    if (s) {
        mt_error_prefix(s, "%s: ", path);
        goto done;
    }
    mt_module_train(w->model, 0);
done:
    mt_safetensors_free(&st);
    if (s) mt_weights_free(w);
    return s;
}

mt_status mt_weights_to_device(mt_weights *w, mt_device dev) {
    mt_status s = mt_module_to_device(w->model, dev);
    if (s != MT_OK) mt_error_prefix(s, "%s: ", w->path);
    return s;
}
