/* Module tree with PyTorch-compatible names (see layers/module.h). */
#include "layers/module.h"

#include "core/backend.h"

#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    MT_CHECK(d);
    memcpy(d, s, n);
    return d;
}

static void grow(void **items, int *cap, int need, size_t elem) {
    if (need <= *cap) return;
    int nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *p = realloc(*items, (size_t)nc * elem);
    MT_CHECK(p);
    *items = p;
    *cap = nc;
}

static int local_name_taken(const mt_module *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return 1;
    for (int i = 0; i < m->n_buffers; i++)
        if (!strcmp(m->buffers[i].name, name)) return 1;
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return 1;
    return 0;
}

static void check_local_name(const mt_module *m, const char *name) {
    MT_CHECK_MSG(name && name[0] && !strchr(name, '.'),
                 "module %s: invalid local name '%s'", m->type, name ? name : "(null)");
    MT_CHECK_MSG(!local_name_taken(m, name), "module %s: name '%s' registered twice", m->type,
                 name);
}

/* ------------------------------------------------------------ building */

mt_module *mt_module_new(const char *type, mt_module_forward_fn forward) {
    mt_module *m = calloc(1, sizeof *m);
    MT_CHECK(m);
    m->type = type;
    m->training = 1;
    m->forward = forward;
    return m;
}

mt_tensor *mt_module_add_param(mt_module *m, const char *name, mt_tensor *t) {
    check_local_name(m, name);
    MT_CHECK_MSG(t && t->dtype == MT_F32 && mt_tensor_is_leaf(t),
                 "module %s: parameter '%s' must be an f32 leaf tensor", m->type, name);
    grow((void **)&m->params, &m->cap_params, m->n_params + 1, sizeof *m->params);
    mt_tensor_retain(t);
    mt_tensor_set_requires_grad(t, 1);
    m->params[m->n_params].name = dup_str(name);
    m->params[m->n_params].tensor = t;
    m->n_params++;
    return t;
}

mt_tensor *mt_module_add_buffer(mt_module *m, const char *name, mt_tensor *t) {
    check_local_name(m, name);
    MT_CHECK(t);
    grow((void **)&m->buffers, &m->cap_buffers, m->n_buffers + 1, sizeof *m->buffers);
    m->buffers[m->n_buffers].name = dup_str(name);
    m->buffers[m->n_buffers].tensor = mt_tensor_retain(t);
    m->n_buffers++;
    return t;
}

mt_module *mt_module_add_child(mt_module *m, const char *name, mt_module *child) {
    check_local_name(m, name);
    MT_CHECK(child && child != m);
    grow((void **)&m->children, &m->cap_children, m->n_children + 1, sizeof *m->children);
    m->children[m->n_children].name = dup_str(name);
    m->children[m->n_children].module = child;
    m->n_children++;
    return child;
}

void mt_module_free(mt_module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_children; i++) {
        mt_module_free(m->children[i].module);
        free(m->children[i].name);
    }
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor_release(m->params[i].tensor);
        free(m->params[i].name);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        mt_tensor_release(m->buffers[i].tensor);
        free(m->buffers[i].name);
    }
    if (m->impl_free) m->impl_free(m->impl);
    free(m->children);
    free(m->params);
    free(m->buffers);
    free(m);
}

/* ----------------------------------------------------------------- use */

mt_tensor *mt_module_forward(mt_module *m, const mt_tensor *x) {
    MT_CHECK_MSG(m->forward, "module %s has no forward function", m->type);
    return m->forward(m, x);
}

mt_tensor *mt_module_sequential_forward(mt_module *m, const mt_tensor *x) {
    mt_tensor *cur = mt_tensor_retain((mt_tensor *)x);
    for (int i = 0; i < m->n_children; i++) {
        mt_tensor *next = mt_module_forward(m->children[i].module, cur);
        mt_tensor_release(cur);
        cur = next;
    }
    return cur;
}

void mt_module_train(mt_module *m, int on) {
    m->training = on ? 1 : 0;
    for (int i = 0; i < m->n_children; i++) mt_module_train(m->children[i].module, on);
}

mt_tensor *mt_module_param(const mt_module *m, const char *local_name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, local_name)) return m->params[i].tensor;
    return NULL;
}

mt_tensor *mt_module_buffer(const mt_module *m, const char *local_name) {
    for (int i = 0; i < m->n_buffers; i++)
        if (!strcmp(m->buffers[i].name, local_name)) return m->buffers[i].tensor;
    return NULL;
}

mt_module *mt_module_child(const mt_module *m, const char *local_name) {
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, local_name)) return m->children[i].module;
    return NULL;
}

/* Child named by the first len characters of name. */
static mt_module *child_n(const mt_module *m, const char *name, size_t len) {
    for (int i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len && !strncmp(m->children[i].name, name, len))
            return m->children[i].module;
    return NULL;
}

mt_module *mt_module_find(mt_module *m, const char *path) {
    const char *p = path;
    while (m && *p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        m = child_n(m, p, len);
        p = dot ? dot + 1 : p + len;
    }
    return m;
}

/* The tensor slot (parameter or buffer) for a full name, or NULL. */
static mt_named_tensor *find_slot(mt_module *m, const char *full_name, int *is_param) {
    const char *p = full_name;
    const char *dot;
    while ((dot = strchr(p, '.')) != NULL) {
        m = child_n(m, p, (size_t)(dot - p));
        if (!m) return NULL;
        p = dot + 1;
    }
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, p)) {
            if (is_param) *is_param = 1;
            return &m->params[i];
        }
    for (int i = 0; i < m->n_buffers; i++)
        if (!strcmp(m->buffers[i].name, p)) {
            if (is_param) *is_param = 0;
            return &m->buffers[i];
        }
    return NULL;
}

mt_tensor *mt_module_get_tensor(mt_module *m, const char *full_name) {
    mt_named_tensor *s = find_slot(m, full_name, NULL);
    return s ? mt_tensor_retain(s->tensor) : NULL;
}

/* ------------------------------------------------------------- listing */

void mt_named_tensors_append(mt_named_tensors *l, const char *name, mt_tensor *t) {
    grow((void **)&l->items, &l->cap, l->n + 1, sizeof *l->items);
    l->items[l->n].name = dup_str(name);
    l->items[l->n].tensor = mt_tensor_retain(t);
    l->n++;
}

void mt_named_tensors_free(mt_named_tensors *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].name);
        mt_tensor_release(l->items[i].tensor);
    }
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

int mt_named_tensors_find(const mt_named_tensors *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name)) return i;
    return -1;
}

static char *join(const char *prefix, const char *name) {
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 2);
    MT_CHECK(s);
    if (a) {
        memcpy(s, prefix, a);
        s[a] = '.';
        memcpy(s + a + 1, name, b + 1);
    } else {
        memcpy(s, name, b + 1);
    }
    return s;
}

enum { LIST_PARAMS = 1, LIST_BUFFERS = 2 };

/* mode LIST_PARAMS or LIST_BUFFERS: own tensors then children (named_parameters
 * order); both: per module own params, own buffers, then children (state_dict). */
static void list_rec(const mt_module *m, const char *prefix, int mode, mt_named_tensors *out) {
    if (mode & LIST_PARAMS)
        for (int i = 0; i < m->n_params; i++) {
            char *n = join(prefix, m->params[i].name);
            mt_named_tensors_append(out, n, m->params[i].tensor);
            free(n);
        }
    if (mode & LIST_BUFFERS)
        for (int i = 0; i < m->n_buffers; i++) {
            char *n = join(prefix, m->buffers[i].name);
            mt_named_tensors_append(out, n, m->buffers[i].tensor);
            free(n);
        }
    for (int i = 0; i < m->n_children; i++) {
        char *p = join(prefix, m->children[i].name);
        list_rec(m->children[i].module, p, mode, out);
        free(p);
    }
}

void mt_module_named_parameters(const mt_module *m, mt_named_tensors *out) {
    list_rec(m, "", LIST_PARAMS, out);
}

void mt_module_named_buffers(const mt_module *m, mt_named_tensors *out) {
    list_rec(m, "", LIST_BUFFERS, out);
}

void mt_module_state_dict(const mt_module *m, mt_named_tensors *out) {
    list_rec(m, "", LIST_PARAMS | LIST_BUFFERS, out);
}

int64_t mt_module_num_params(const mt_module *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += mt_tensor_numel(m->params[i].tensor);
    for (int i = 0; i < m->n_children; i++) n += mt_module_num_params(m->children[i].module);
    return n;
}

int mt_module_num_param_tensors(const mt_module *m) {
    int n = m->n_params;
    for (int i = 0; i < m->n_children; i++) n += mt_module_num_param_tensors(m->children[i].module);
    return n;
}

/* --------------------------------------------------------------- state */

mt_status mt_module_load(mt_module *m, const mt_named_tensors *src, int strict) {
    char b1[128], b2[128];
    /* Check everything first so that a failed load leaves the module unchanged. */
    for (int i = 0; i < src->n; i++) {
        mt_named_tensor *s = find_slot(m, src->items[i].name, NULL);
        if (!s) {
            if (strict)
                return mt_error_set(MT_ERR_INVALID, "load: unexpected key '%s' (not in the %s model)",
                                    src->items[i].name, m->type);
            continue;
        }
        if (!mt_tensor_same_shape(s->tensor, src->items[i].tensor))
            return mt_error_set(MT_ERR_INVALID,
                                "load: size mismatch for '%s': source has shape %s, model has %s",
                                src->items[i].name,
                                mt_tensor_shape_str(src->items[i].tensor, b1, sizeof b1),
                                mt_tensor_shape_str(s->tensor, b2, sizeof b2));
    }
    if (strict) {
        mt_named_tensors all = {0};
        mt_module_state_dict(m, &all);
        for (int i = 0; i < all.n; i++)
            if (mt_named_tensors_find(src, all.items[i].name) < 0) {
                mt_status st = mt_error_set(MT_ERR_INVALID, "load: missing key '%s'",
                                            all.items[i].name);
                mt_named_tensors_free(&all);
                return st;
            }
        mt_named_tensors_free(&all);
    }
    for (int i = 0; i < src->n; i++) {
        mt_named_tensor *s = find_slot(m, src->items[i].name, NULL);
        if (s) mt_tensor_copy_(s->tensor, src->items[i].tensor);
    }
    return MT_OK;
}

static mt_status to_device_rec(mt_module *m, mt_device dev) {
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *old = m->params[i].tensor;
        if (mt_device_eq(mt_tensor_device(old), dev)) continue;
        mt_tensor *t = mt_tensor_new(old->dtype, old->ndim, old->shape, dev);
        mt_tensor_copy_(t, old);
        mt_tensor_set_requires_grad(t, 1);
        if (old->hook) mt_tensor_set_grad_hook(t, old->hook, old->hook_ctx);
        m->params[i].tensor = t;
        mt_tensor_release(old);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        mt_tensor *old = m->buffers[i].tensor;
        if (mt_device_eq(mt_tensor_device(old), dev)) continue;
        m->buffers[i].tensor = mt_tensor_to_device(old, dev);
        mt_tensor_release(old);
    }
    for (int i = 0; i < m->n_children; i++) MT_TRY(to_device_rec(m->children[i].module, dev));
    return MT_OK;
}

mt_status mt_module_to_device(mt_module *m, mt_device dev) {
    if (!mt_device_available(dev)) {
        char b[32];
        return mt_error_set(MT_ERR_UNSUPPORTED, "module to_device: device %s is not available",
                            mt_device_name(dev, b, sizeof b));
    }
    return to_device_rec(m, dev);
}

void mt_module_zero_grad(mt_module *m) {
    for (int i = 0; i < m->n_params; i++) mt_tensor_zero_grad(m->params[i].tensor);
    for (int i = 0; i < m->n_children; i++) mt_module_zero_grad(m->children[i].module);
}

void mt_module_set_grad_hook(mt_module *m, mt_grad_hook hook, void *ctx) {
    for (int i = 0; i < m->n_params; i++) mt_tensor_set_grad_hook(m->params[i].tensor, hook, ctx);
    for (int i = 0; i < m->n_children; i++) mt_module_set_grad_hook(m->children[i].module, hook, ctx);
}

mt_status mt_module_set_param_grad_hook(mt_module *m, const char *full_name, mt_grad_hook hook,
                                        void *ctx) {
    int is_param = 0;
    mt_named_tensor *s = find_slot(m, full_name, &is_param);
    if (!s || !is_param)
        return mt_error_set(MT_ERR_INVALID, "set_grad_hook: no parameter named '%s'", full_name);
    mt_tensor_set_grad_hook(s->tensor, hook, ctx);
    return MT_OK;
}
