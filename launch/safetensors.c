/* safetensors reading and writing: see launch/safetensors.h.
 * The header is JSON; a small parser for it lives here (no JSON library). */
#include "launch/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/fsutil.h"

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit */
#define ST_MAX_DEPTH 64

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    MT_CHECK_MSG(d, "out of host memory");
    return d;
}

static void host_is_little_endian(void) {
    const uint16_t one = 1;
    MT_CHECK_MSG(*(const uint8_t *)&one == 1, "safetensors: big-endian hosts are not supported");
}

/* ============================================================ the list */

void mt_safetensors_init(mt_safetensors *st) { memset(st, 0, sizeof *st); }

void mt_safetensors_free(mt_safetensors *st) {
    for (int i = 0; i < st->n; i++) {
        free(st->names[i]);
        mt_tensor_release(st->tensors[i]);
    }
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->names);
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    memset(st, 0, sizeof *st);
}

mt_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->names[i], name)) return st->tensors[i];
    return NULL;
}

mt_status mt_safetensors_add(mt_safetensors *st, const char *name, mt_tensor *t) {
    MT_CHECK(t);
    if (!name || !*name) return mt_error_set(MT_ERR_INVALID, "safetensors: empty tensor name");
    if (!strcmp(name, "__metadata__"))
        return mt_error_set(MT_ERR_INVALID, "safetensors: \"__metadata__\" is reserved, not a tensor name");
    if (mt_safetensors_find(st, name))
        return mt_error_set(MT_ERR_INVALID, "safetensors: duplicate tensor name \"%s\"", name);
    if (st->n == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 16;
        st->names = realloc(st->names, (size_t)st->cap * sizeof *st->names);
        st->tensors = realloc(st->tensors, (size_t)st->cap * sizeof *st->tensors);
        MT_CHECK(st->names && st->tensors);
    }
    st->names[st->n] = xstrdup(name);
    st->tensors[st->n] = mt_tensor_retain(t);
    st->n++;
    return MT_OK;
}

void mt_safetensors_set_meta(mt_safetensors *st, const char *key, const char *value) {
    for (int i = 0; i < st->n_meta; i++) {
        if (!strcmp(st->meta_keys[i], key)) {
            free(st->meta_values[i]);
            st->meta_values[i] = xstrdup(value);
            return;
        }
    }
    if (st->n_meta == st->cap_meta) {
        st->cap_meta = st->cap_meta ? 2 * st->cap_meta : 8;
        st->meta_keys = realloc(st->meta_keys, (size_t)st->cap_meta * sizeof *st->meta_keys);
        st->meta_values = realloc(st->meta_values, (size_t)st->cap_meta * sizeof *st->meta_values);
        MT_CHECK(st->meta_keys && st->meta_values);
    }
    st->meta_keys[st->n_meta] = xstrdup(key);
    st->meta_values[st->n_meta] = xstrdup(value);
    st->n_meta++;
}

const char *mt_safetensors_get_meta(const mt_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

/* ============================================================== dtypes */

typedef enum { CONV_NONE, CONV_F64_F32, CONV_F16_F32, CONV_I64_I32 } conv_kind;

typedef struct {
    const char *name;
    size_t file_size; /* bytes per element in the file */
    mt_dtype dtype;   /* what it loads as */
    conv_kind conv;
    int rank; /* the reference implementation's Dtype order (write sort key) */
} st_dtype_info;

static const st_dtype_info st_dtypes[] = {
    {"F32", 4, MT_F32, CONV_NONE, 15},    {"BF16", 2, MT_BF16, CONV_NONE, 12},
    {"I32", 4, MT_I32, CONV_NONE, 13},    {"U8", 1, MT_U8, CONV_NONE, 4},
    {"F64", 8, MT_F32, CONV_F64_F32, 17}, {"F16", 2, MT_F32, CONV_F16_F32, 11},
    {"I64", 8, MT_I32, CONV_I64_I32, 18}, {"BOOL", 1, MT_U8, CONV_NONE, 0},
};

static const st_dtype_info *dtype_by_name(const char *name) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(st_dtypes[i].name, name)) return &st_dtypes[i];
    return NULL;
}

static const st_dtype_info *dtype_native(mt_dtype dt) {
    for (size_t i = 0; i < 4; i++)
        if (st_dtypes[i].dtype == dt) return &st_dtypes[i];
    MT_CHECK_MSG(0, "safetensors: no file dtype for %s", mt_dtype_name(dt));
    return NULL;
}

/* ============================================================== writing */

typedef struct {
    const char *name;
    mt_tensor *t; /* contiguous CPU copy (own reference) */
    const st_dtype_info *dt;
    uint64_t nbytes, begin;
} st_out;

static int cmp_out(const void *a, const void *b) {
    const st_out *x = a, *y = b;
    if (x->dt->rank != y->dt->rank) return y->dt->rank - x->dt->rank; /* larger first */
    return strcmp(x->name, y->name);
}

/* Orders the tensors and builds the padded header; returns the entries. */
static st_out *build_header(const mt_safetensors *st, mt_strbuf *hdr, uint64_t *data_len) {
    host_is_little_endian();
    st_out *outs = calloc((size_t)(st->n ? st->n : 1), sizeof *outs);
    MT_CHECK(outs);
    for (int i = 0; i < st->n; i++) {
        mt_tensor *cpu = mt_tensor_to_device(st->tensors[i], MT_DEVICE_CPU);
        outs[i].t = mt_tensor_contiguous(cpu);
        mt_tensor_release(cpu);
        outs[i].name = st->names[i];
        outs[i].dt = dtype_native(outs[i].t->dtype);
        outs[i].nbytes = (uint64_t)mt_tensor_nbytes(outs[i].t);
    }
    qsort(outs, (size_t)st->n, sizeof *outs, cmp_out);
    uint64_t off = 0;
    mt_strbuf_init(hdr);
    mt_strbuf_puts(hdr, "{");
    int first = 1;
    if (st->n_meta) {
        mt_strbuf_puts(hdr, "\"__metadata__\":{");
        for (int i = 0; i < st->n_meta; i++) {
            if (i) mt_strbuf_puts(hdr, ",");
            mt_strbuf_json_string(hdr, st->meta_keys[i]);
            mt_strbuf_puts(hdr, ":");
            mt_strbuf_json_string(hdr, st->meta_values[i]);
        }
        mt_strbuf_puts(hdr, "}");
        first = 0;
    }
    for (int i = 0; i < st->n; i++) {
        if (!first) mt_strbuf_puts(hdr, ",");
        first = 0;
        mt_strbuf_json_string(hdr, outs[i].name);
        mt_strbuf_printf(hdr, ":{\"dtype\":\"%s\",\"shape\":[", outs[i].dt->name);
        for (int d = 0; d < outs[i].t->ndim; d++)
            mt_strbuf_printf(hdr, "%s%lld", d ? "," : "", (long long)outs[i].t->shape[d]);
        outs[i].begin = off;
        off += outs[i].nbytes;
        mt_strbuf_printf(hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)outs[i].begin,
                         (unsigned long long)off);
    }
    mt_strbuf_puts(hdr, "}");
    while (hdr->len % 8) mt_strbuf_puts(hdr, " ");
    *data_len = off;
    return outs;
}

static void free_outs(st_out *outs, int n) {
    for (int i = 0; i < n; i++) mt_tensor_release(outs[i].t);
    free(outs);
}

static void put_le64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

mt_status mt_safetensors_serialize(const mt_safetensors *st, char **buf, size_t *len) {
    mt_strbuf hdr;
    uint64_t data_len;
    st_out *outs = build_header(st, &hdr, &data_len);
    size_t total = 8 + hdr.len + (size_t)data_len;
    char *b = malloc(total ? total : 1);
    if (!b) {
        free_outs(outs, st->n);
        mt_strbuf_free(&hdr);
        return mt_error_set(MT_ERR_NOMEM, "safetensors: cannot allocate %zu bytes", total);
    }
    put_le64((unsigned char *)b, hdr.len);
    memcpy(b + 8, hdr.data, hdr.len);
    for (int i = 0; i < st->n; i++)
        if (outs[i].nbytes) memcpy(b + 8 + hdr.len + outs[i].begin, mt_tensor_data(outs[i].t), outs[i].nbytes);
    free_outs(outs, st->n);
    mt_strbuf_free(&hdr);
    *buf = b;
    *len = total;
    return MT_OK;
}

mt_status mt_safetensors_save(const mt_safetensors *st, const char *path) {
    mt_strbuf hdr;
    uint64_t data_len;
    st_out *outs = build_header(st, &hdr, &data_len);
    mt_atomic_file af;
    mt_status s = mt_fs_atomic_open(&af, path);
    if (s == MT_OK) {
        unsigned char lenb[8];
        put_le64(lenb, hdr.len);
        s = mt_fs_atomic_write(&af, lenb, 8);
        if (s == MT_OK) s = mt_fs_atomic_write(&af, hdr.data, hdr.len);
        for (int i = 0; i < st->n && s == MT_OK; i++)
            s = mt_fs_atomic_write(&af, mt_tensor_data(outs[i].t), (size_t)outs[i].nbytes);
        if (s == MT_OK)
            s = mt_fs_atomic_commit(&af);
        else
            mt_fs_atomic_abort(&af);
    }
    free_outs(outs, st->n);
    mt_strbuf_free(&hdr);
    return s;
}

/* ========================================================= JSON parser */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype t;
    char *s;          /* J_STR: the decoded string; J_NUM: the literal text */
    int b;            /* J_BOOL */
    int n;            /* J_ARR / J_OBJ: number of items */
    struct jval *items;
    char **keys;      /* J_OBJ */
    size_t pos;       /* byte offset in the header (for messages) */
} jval;

typedef struct {
    const char *p, *start, *end;
    char err[256];
} jparser;

static void jfree(jval *v) {
    free(v->s);
    for (int i = 0; i < v->n; i++) {
        jfree(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static int jfail(jparser *jp, const char *what) {
    if (!jp->err[0]) {
        if (jp->p >= jp->end)
            snprintf(jp->err, sizeof jp->err, "%s at the end of the header", what);
        else
            snprintf(jp->err, sizeof jp->err, "%s at header byte %zu", what, (size_t)(jp->p - jp->start));
    }
    return 0;
}

static void jskip_ws(jparser *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r')) jp->p++;
}

static void utf8_put(mt_strbuf *sb, uint32_t cp) {
    char b[4];
    if (cp < 0x80) {
        b[0] = (char)cp;
        mt_strbuf_append(sb, b, 1);
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        mt_strbuf_append(sb, b, 2);
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        mt_strbuf_append(sb, b, 3);
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        mt_strbuf_append(sb, b, 4);
    }
}

static int jhex4(jparser *jp, uint32_t *out) {
    if (jp->end - jp->p < 4) return jfail(jp, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = jp->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return jfail(jp, "bad \\u escape");
    }
    jp->p += 4;
    *out = v;
    return 1;
}

/* A string; jp->p at the opening quote. */
static int jstring(jparser *jp, char **out) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    jp->p++;
    for (;;) {
        if (jp->p >= jp->end) {
            mt_strbuf_free(&sb);
            return jfail(jp, "unterminated string");
        }
        unsigned char c = (unsigned char)*jp->p;
        if (c == '"') {
            jp->p++;
            break;
        }
        if (c < 0x20) {
            mt_strbuf_free(&sb);
            return jfail(jp, "control character in string");
        }
        if (c != '\\') {
            mt_strbuf_append(&sb, jp->p, 1);
            jp->p++;
            continue;
        }
        jp->p++;
        if (jp->p >= jp->end) {
            mt_strbuf_free(&sb);
            return jfail(jp, "unterminated string");
        }
        char e = *jp->p++;
        const char *lit = NULL;
        switch (e) {
        case '"': lit = "\""; break;
        case '\\': lit = "\\"; break;
        case '/': lit = "/"; break;
        case 'b': lit = "\b"; break;
        case 'f': lit = "\f"; break;
        case 'n': lit = "\n"; break;
        case 'r': lit = "\r"; break;
        case 't': lit = "\t"; break;
        case 'u': {
            uint32_t cp;
            if (!jhex4(jp, &cp)) {
                mt_strbuf_free(&sb);
                return 0;
            }
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (jp->end - jp->p < 2 || jp->p[0] != '\\' || jp->p[1] != 'u') {
                    mt_strbuf_free(&sb);
                    return jfail(jp, "unpaired surrogate in \\u escape");
                }
                jp->p += 2;
                if (!jhex4(jp, &lo)) {
                    mt_strbuf_free(&sb);
                    return 0;
                }
                if (lo < 0xDC00 || lo >= 0xE000) {
                    mt_strbuf_free(&sb);
                    return jfail(jp, "unpaired surrogate in \\u escape");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                mt_strbuf_free(&sb);
                return jfail(jp, "unpaired surrogate in \\u escape");
            } else if (cp == 0) {
                mt_strbuf_free(&sb);
                return jfail(jp, "\\u0000 in string");
            }
            utf8_put(&sb, cp);
            continue;
        }
        default:
            jp->p--;
            mt_strbuf_free(&sb);
            return jfail(jp, "bad escape in string");
        }
        mt_strbuf_puts(&sb, lit);
    }
    *out = mt_strbuf_take(&sb);
    return 1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int jvalue(jparser *jp, jval *v, int depth);

static int jnumber(jparser *jp, jval *v) {
    const char *s = jp->p;
    if (jp->p < jp->end && *jp->p == '-') jp->p++;
    if (jp->p >= jp->end || !is_digit(*jp->p)) return jfail(jp, "bad number");
    if (*jp->p == '0') {
        jp->p++;
    } else {
        while (jp->p < jp->end && is_digit(*jp->p)) jp->p++;
    }
    if (jp->p < jp->end && *jp->p == '.') {
        jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) return jfail(jp, "bad number");
        while (jp->p < jp->end && is_digit(*jp->p)) jp->p++;
    }
    if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E')) {
        jp->p++;
        if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-')) jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) return jfail(jp, "bad number");
        while (jp->p < jp->end && is_digit(*jp->p)) jp->p++;
    }
    v->t = J_NUM;
    v->s = strndup(s, (size_t)(jp->p - s));
    MT_CHECK(v->s);
    return 1;
}

static int jlit(jparser *jp, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, lit, n)) return jfail(jp, "unexpected character");
    jp->p += n;
    return 1;
}

static int jcontainer(jparser *jp, jval *v, int depth, int is_obj) {
    char close = is_obj ? '}' : ']';
    int cap = 0;
    v->t = is_obj ? J_OBJ : J_ARR;
    jp->p++;
    jskip_ws(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        return 1;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? 2 * cap : 8;
            v->items = realloc(v->items, (size_t)cap * sizeof *v->items);
            MT_CHECK(v->items);
            if (is_obj) {
                v->keys = realloc(v->keys, (size_t)cap * sizeof *v->keys);
                MT_CHECK(v->keys);
            }
        }
        jval *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        if (is_obj) {
            jskip_ws(jp);
            if (jp->p >= jp->end || *jp->p != '"') return jfail(jp, "expected a string key");
            char *key;
            if (!jstring(jp, &key)) return 0;
            v->keys[v->n] = key;
            v->n++; /* counted now so jfree releases the key */
            jskip_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') return jfail(jp, "expected ':'");
            jp->p++;
            if (!jvalue(jp, item, depth + 1)) return 0;
        } else {
            v->n++;
            if (!jvalue(jp, item, depth + 1)) return 0;
        }
        jskip_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == close) {
            jp->p++;
            return 1;
        }
        return jfail(jp, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jvalue(jparser *jp, jval *v, int depth) {
    if (depth > ST_MAX_DEPTH) return jfail(jp, "nesting too deep");
    jskip_ws(jp);
    v->pos = (size_t)(jp->p - jp->start);
    if (jp->p >= jp->end) return jfail(jp, "expected a value");
    switch (*jp->p) {
    case '{': return jcontainer(jp, v, depth, 1);
    case '[': return jcontainer(jp, v, depth, 0);
    case '"': v->t = J_STR; return jstring(jp, &v->s);
    case 't': v->t = J_BOOL; v->b = 1; return jlit(jp, "true");
    case 'f': v->t = J_BOOL; v->b = 0; return jlit(jp, "false");
    case 'n': v->t = J_NULL; return jlit(jp, "null");
    default: return jnumber(jp, v);
    }
}

/* ============================================================== reading */

/* Reads n bytes at offset of the data source. */
typedef struct {
    int fd;              /* file, or -1 */
    const unsigned char *mem;
    uint64_t size;
    const char *name;
} st_src;

static mt_status src_read(const st_src *src, uint64_t off, void *dst, size_t n) {
    if (off + n > src->size) return mt_error_set(MT_ERR_FORMAT, "%s: truncated file", src->name);
    if (src->fd < 0) {
        if (n) memcpy(dst, src->mem + off, n);
        return MT_OK;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(src->fd, (char *)dst + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mt_error_set(MT_ERR_IO, "%s: read error: %s", src->name, strerror(errno));
        if (r == 0) return mt_error_set(MT_ERR_FORMAT, "%s: truncated file", src->name);
        done += (size_t)r;
    }
    return MT_OK;
}

typedef struct {
    const char *name; /* borrowed from the parsed header */
    const st_dtype_info *dt;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

/* A JSON number that is a non-negative integer (no sign, fraction or exponent). */
static int juint(const jval *v, uint64_t *out) {
    if (v->t != J_NUM) return 0;
    uint64_t x = 0;
    for (const char *p = v->s; *p; p++) {
        if (!is_digit(*p)) return 0;
        if (x > (UINT64_MAX - 9) / 10) return 0;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    *out = x;
    return 1;
}

static int cmp_entry_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static float f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0) {
        if (m == 0) {
            u = s;
        } else { /* subnormal: normalise */
            e = 127 - 15 + 1;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            m &= 0x3FF;
            u = s | (e << 23) | (m << 13);
        }
    } else if (e == 31) {
        u = s | 0x7F800000u | (m << 13);
    } else {
        u = s | ((e + 127 - 15) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Validates one tensor entry of the header. */
static mt_status parse_entry(st_entry *e, const char *name, const jval *v, const char *file) {
    memset(e, 0, sizeof *e);
    e->name = name;
    if (v->t != J_OBJ)
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": header entry is not an object", file, name);
    const jval *dtype = NULL, *shape = NULL, *offs = NULL;
    for (int i = 0; i < v->n; i++) {
        const jval **slot = !strcmp(v->keys[i], "dtype")          ? &dtype
                            : !strcmp(v->keys[i], "shape")        ? &shape
                            : !strcmp(v->keys[i], "data_offsets") ? &offs
                                                                  : NULL;
        if (!slot)
            return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": unknown field \"%s\" in header", file, name,
                                v->keys[i]);
        if (*slot)
            return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": field \"%s\" given twice", file, name,
                                v->keys[i]);
        *slot = &v->items[i];
    }
    if (!dtype || !shape || !offs)
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": header entry lacks \"%s\"", file, name,
                            !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dtype->t != J_STR) return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": dtype is not a string", file, name);
    e->dt = dtype_by_name(dtype->s);
    if (!e->dt)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: tensor \"%s\": dtype \"%s\" is not supported (F32, BF16, I32, U8, F64, F16, "
                            "I64, BOOL)", file, name, dtype->s);
    if (shape->t != J_ARR)
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": shape is not an array", file, name);
    if (shape->n > MT_MAX_DIMS)
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": %d dimensions (medtrain supports at most %d)",
                            file, name, shape->n, MT_MAX_DIMS);
    uint64_t numel = 1;
    e->ndim = shape->n;
    for (int d = 0; d < shape->n; d++) {
        uint64_t s;
        if (!juint(&shape->items[d], &s) || s > (uint64_t)INT64_MAX)
            return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", file,
                                name, d);
        e->shape[d] = (int64_t)s;
        if (s && numel > UINT64_MAX / s)
            return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": shape too large", file, name);
        numel *= s;
    }
    if (offs->t != J_ARR || offs->n != 2 || !juint(&offs->items[0], &e->begin) || !juint(&offs->items[1], &e->end))
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": data_offsets is not [begin, end]", file, name);
    if (e->end < e->begin)
        return mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] end before begin", file,
                            name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (numel > UINT64_MAX / e->dt->file_size || e->end - e->begin != numel * e->dt->file_size)
        return mt_error_set(MT_ERR_FORMAT,
                            "%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, but %s shape needs %llu",
                            file, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)(e->end - e->begin), e->dt->name,
                            (unsigned long long)(numel * e->dt->file_size));
    return MT_OK;
}

/* Reads one tensor's bytes (converting where the dtype needs it). */
static mt_status read_tensor(mt_tensor **out, const st_entry *e, const st_src *src, uint64_t data_start) {
    *out = NULL;
    mt_tensor *t = mt_tensor_new(e->dt->dtype, e->ndim, e->shape, MT_DEVICE_CPU);
    uint64_t nbytes = e->end - e->begin;
    int64_t numel = mt_tensor_numel(t);
    mt_status s = MT_OK;
    if (e->dt->conv == CONV_NONE) {
        s = src_read(src, data_start + e->begin, mt_tensor_data(t), (size_t)nbytes);
    } else {
        unsigned char *raw = malloc(nbytes ? nbytes : 1);
        if (!raw) {
            mt_tensor_release(t);
            return mt_error_set(MT_ERR_NOMEM, "%s: tensor \"%s\": cannot allocate %llu bytes", src->name, e->name,
                                (unsigned long long)nbytes);
        }
        s = src_read(src, data_start + e->begin, raw, (size_t)nbytes);
        for (int64_t i = 0; s == MT_OK && i < numel; i++) {
            if (e->dt->conv == CONV_F64_F32) {
                double d;
                memcpy(&d, raw + 8 * i, 8);
                ((float *)mt_tensor_data(t))[i] = (float)d;
            } else if (e->dt->conv == CONV_F16_F32) {
                uint16_t h;
                memcpy(&h, raw + 2 * i, 2);
                ((float *)mt_tensor_data(t))[i] = f16_to_f32(h);
            } else {
                int64_t x;
                memcpy(&x, raw + 8 * i, 8);
                if (x < INT32_MIN || x > INT32_MAX)
                    s = mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": I64 value %lld does not fit in I32",
                                     src->name, e->name, (long long)x);
                else
                    ((int32_t *)mt_tensor_data(t))[i] = (int32_t)x;
            }
        }
        free(raw);
    }
    if (s != MT_OK) {
        mt_tensor_release(t);
        return s;
    }
    *out = t;
    return MT_OK;
}

static mt_status load_src(mt_safetensors *st, const st_src *src) {
    host_is_little_endian();
    const char *file = src->name;
    MT_CHECK_MSG(st->n == 0 && st->n_meta == 0, "mt_safetensors_load: list not empty");
    if (src->size < 8)
        return mt_error_set(MT_ERR_FORMAT, "%s: truncated file (%llu bytes; a safetensors file starts with an "
                            "8-byte header length)", file, (unsigned long long)src->size);
    unsigned char lenb[8];
    MT_TRY(src_read(src, 0, lenb, 8));
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenb[i];
    if (hlen > ST_MAX_HEADER)
        return mt_error_set(MT_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes (not a "
                            "safetensors file?)", file, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > src->size - 8)
        return mt_error_set(MT_ERR_FORMAT, "%s: truncated file: header length %llu but only %llu bytes follow",
                            file, (unsigned long long)hlen, (unsigned long long)(src->size - 8));
    char *hdr = malloc(hlen + 1);
    MT_CHECK(hdr);
    mt_status s = src_read(src, 8, hdr, (size_t)hlen);
    if (s != MT_OK) {
        free(hdr);
        return s;
    }
    hdr[hlen] = 0;
    jparser jp = {hdr, hdr, hdr + hlen, {0}};
    jval root;
    memset(&root, 0, sizeof root);
    if (hlen == 0 || hdr[0] != '{') {
        free(hdr);
        return mt_error_set(MT_ERR_FORMAT, "%s: bad header: JSON object expected at header byte 0", file);
    }
    if (!jvalue(&jp, &root, 0)) {
        jfree(&root);
        free(hdr);
        return mt_error_set(MT_ERR_FORMAT, "%s: bad JSON header: %s", file, jp.err);
    }
    jskip_ws(&jp);
    if (jp.p != jp.end) {
        jfail(&jp, "trailing characters after the JSON object");
        jfree(&root);
        free(hdr);
        return mt_error_set(MT_ERR_FORMAT, "%s: bad JSON header: %s", file, jp.err);
    }
    free(hdr);

    st_entry *ents = calloc((size_t)root.n + 1, sizeof *ents);
    st_entry **order = calloc((size_t)root.n + 1, sizeof *order);
    MT_CHECK(ents && order);
    int ne = 0, seen_meta = 0;
    for (int i = 0; i < root.n && s == MT_OK; i++) {
        const char *key = root.keys[i];
        const jval *v = &root.items[i];
        if (!strcmp(key, "__metadata__")) {
            if (seen_meta++) {
                s = mt_error_set(MT_ERR_FORMAT, "%s: \"__metadata__\" given twice", file);
                break;
            }
            if (v->t != J_OBJ) {
                s = mt_error_set(MT_ERR_FORMAT, "%s: \"__metadata__\" is not an object", file);
                break;
            }
            for (int k = 0; k < v->n && s == MT_OK; k++) {
                if (v->items[k].t != J_STR)
                    s = mt_error_set(MT_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", file,
                                     v->keys[k]);
                else if (mt_safetensors_get_meta(st, v->keys[k]))
                    s = mt_error_set(MT_ERR_FORMAT, "%s: __metadata__ key \"%s\" given twice", file, v->keys[k]);
                else
                    mt_safetensors_set_meta(st, v->keys[k], v->items[k].s);
            }
            continue;
        }
        for (int j = 0; j < ne; j++)
            if (!strcmp(ents[j].name, key)) s = mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\" given twice", file, key);
        if (s != MT_OK) break;
        s = parse_entry(&ents[ne], key, v, file);
        if (s == MT_OK) {
            order[ne] = &ents[ne];
            ne++;
        }
    }
    /* the data block: tensors packed from 0 to its end, no overlap, no gap */
    uint64_t data_start = 8 + hlen, data_len = src->size - data_start;
    if (s == MT_OK) {
        qsort(order, (size_t)ne, sizeof *order, cmp_entry_begin);
        uint64_t at = 0;
        const char *at_name = "";
        for (int i = 0; i < ne && s == MT_OK; i++) {
            const st_entry *e = order[i];
            if (e->end > data_len)
                s = mt_error_set(MT_ERR_FORMAT,
                                 "%s: tensor \"%s\": data_offsets [%llu, %llu] beyond the data block (%llu bytes; "
                                 "file truncated?)", file, e->name, (unsigned long long)e->begin,
                                 (unsigned long long)e->end, (unsigned long long)data_len);
            else if (e->begin < at)
                s = mt_error_set(MT_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] overlap \"%s\"", file,
                                 e->name, (unsigned long long)e->begin, (unsigned long long)e->end, at_name);
            else if (e->begin > at)
                s = mt_error_set(MT_ERR_FORMAT,
                                 "%s: tensor \"%s\": data_offsets [%llu, %llu] leave a gap after byte %llu", file,
                                 e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                                 (unsigned long long)at);
            if (e->end > at || !*at_name) at = e->end > at ? e->end : at, at_name = e->name;
        }
        if (s == MT_OK && at != data_len)
            s = mt_error_set(MT_ERR_FORMAT, "%s: the data block has %llu bytes but the tensors cover %llu", file,
                             (unsigned long long)data_len, (unsigned long long)at);
    }
    for (int i = 0; i < ne && s == MT_OK; i++) {
        mt_tensor *t;
        s = read_tensor(&t, &ents[i], src, data_start);
        if (s == MT_OK) {
            s = mt_safetensors_add(st, ents[i].name, t);
            if (s != MT_OK) mt_error_prefix(s, "%s: ", file);
            mt_tensor_release(t);
        }
    }
    free(ents);
    free(order);
    jfree(&root);
    if (s != MT_OK) mt_safetensors_free(st);
    return s;
}

mt_status mt_safetensors_parse(mt_safetensors *st, const void *buf, size_t len, const char *name) {
    st_src src = {-1, buf, len, name ? name : "<memory>"};
    return load_src(st, &src);
}

mt_status mt_safetensors_load(mt_safetensors *st, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mt_error_set(MT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return mt_error_set(MT_ERR_IO, "cannot read %s: %s", path, S_ISDIR(sb.st_mode) ? "is a directory" : strerror(e));
    }
    st_src src = {fd, NULL, (uint64_t)sb.st_size, path};
    mt_status s = load_src(st, &src);
    close(fd);
    return s;
}
