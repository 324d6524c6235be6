/* Checkpoint and weight-file writing and restoring (see checkpoint.h). */
#include "launch/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/fsutil.h"

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

static mt_status add_state_dict(mt_safetensors *st, mt_module *model) {
    mt_named_tensors sd = {0};
    mt_module_state_dict(model, &sd);
    mt_status s = MT_OK;
    for (int k = 0; k < sd.n && s == MT_OK; k++) s = mt_safetensors_add(st, sd.items[k].name, sd.items[k].tensor);
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
            MT_TRY(mt_safetensors_add(st, key, e.tensor));
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
    /* 2. Model (mt_module_load checks all names and shapes before copying). */
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
    s = mt_module_load(model, &all, 1);
    mt_named_tensors_free(&all);
    if (s) {
        mt_error_prefix(s, "%s: ", path);
        goto done;
    }
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
done:
    mt_safetensors_free(&st);
    return s;
}

mt_status mt_weights_save(const char *path, const mt_config *cfg, mt_module *model,
                          int num_classes, const char *const *class_names,
                          const char *normalization) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    add_common_meta(&st, cfg, WEIGHTS_FORMAT);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    for (int c = 0; c < num_classes; c++) {
        if (c) mt_strbuf_puts(&sb, ",");
        mt_strbuf_puts(&sb, class_names[c]);
    }
    char *names = mt_strbuf_take(&sb);
    mt_safetensors_set_meta(&st, "class_names", names);
    free(names);
    mt_safetensors_set_meta(&st, "normalization", normalization ? normalization : "none");
    mt_status s = add_state_dict(&st, model);
    if (s == MT_OK) s = mt_safetensors_save(&st, path);
    mt_safetensors_free(&st);
    return s;
}
