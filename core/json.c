/* Strict JSON reader: see core/json.h. Recursive descent over a byte
 * buffer; containers are built in growable arrays of mt_json values. */
#include "core/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    int line;
    size_t line_start;
    const char *source;
    mt_status err; /* MT_OK until the first error */
} parser;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    MT_CHECK_MSG(q, "json: out of host memory (%zu bytes)", n);
    return q;
}

static int col_of(const parser *p, size_t pos) { return (int)(pos - p->line_start) + 1; }

#ifdef __GNUC__
__attribute__((format(printf, 3, 4)))
#endif
static mt_status fail_at(parser *p, size_t pos, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* pos lies on the current line (errors are raised before newlines are passed) */
    p->err = mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s", p->source, p->line, col_of(p, pos), msg);
    return p->err;
}

/* A short printable description of the byte at pos, for messages. */
static const char *describe(const parser *p, size_t pos, char *buf, size_t n) {
    if (pos >= p->len) return "end of input";
    unsigned char c = p->s[pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c == '\n') {
            p->pos++;
            p->line++;
            p->line_start = p->pos;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            p->pos++;
        } else {
            break;
        }
    }
}

static void free_contents(mt_json *v) {
    if (v->type == MT_JSON_STRING) free(v->string);
    if (v->type == MT_JSON_ARRAY || v->type == MT_JSON_OBJECT) {
        for (int i = 0; i < v->n; i++) {
            free_contents(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    v->items = NULL;
    v->keys = NULL;
    v->string = NULL;
    v->n = 0;
}

/* ------------------------------------------------------------ strings */

/* Length of the valid UTF-8 sequence at s[0..avail), or 0 if invalid
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static int utf8_seq_len(const unsigned char *s, size_t avail) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)n > avail) return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0; /* overlong */
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;                      /* surrogate */
    if (cp > 0x10ffff) return 0;
    return n;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at pos; -1 if not. */
static long hex4(const parser *p, size_t pos) {
    if (pos + 4 > p->len) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[pos + i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parses the string starting at the opening quote at p->pos. The decoded
 * text is never longer than the literal, so one allocation suffices. */
static mt_status parse_string(parser *p, char **out, size_t *out_len) {
    size_t start = p->pos;
    p->pos++; /* opening quote */
    size_t cap = p->len - p->pos + 1; /* no closing quote: at most the rest */
    /* find the closing quote to size the buffer (escaped quotes skipped) */
    for (size_t i = p->pos; i < p->len; i++) {
        if (p->s[i] == '\\') {
            i++;
            continue;
        }
        if (p->s[i] == '"') {
            cap = i - p->pos + 1;
            break;
        }
    }
    char *buf = xrealloc(NULL, cap);
    size_t n = 0;
    char desc[32];
    for (;;) {
        if (p->pos >= p->len) {
            free(buf);
            return fail_at(p, start, "unterminated string");
        }
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            free(buf);
            return fail_at(p, p->pos, "control character %s in string (escape it)",
                           describe(p, p->pos, desc, sizeof desc));
        }
        if (c == '\\') {
            size_t esc = p->pos;
            if (p->pos + 1 >= p->len) {
                free(buf);
                return fail_at(p, start, "unterminated string");
            }
            unsigned char e = p->s[p->pos + 1];
            p->pos += 2;
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                long u = hex4(p, p->pos);
                if (u < 0) {
                    free(buf);
                    return fail_at(p, esc, "invalid \\u escape (need four hex digits)");
                }
                p->pos += 4;
                uint32_t cp = (uint32_t)u;
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    free(buf);
                    return fail_at(p, esc, "lone low surrogate \\u%04lX", u);
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    long lo = -1;
                    if (p->pos + 1 < p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u')
                        lo = hex4(p, p->pos + 2);
                    if (lo < 0xdc00 || lo > 0xdfff) {
                        free(buf);
                        return fail_at(p, esc,
                                       "high surrogate \\u%04lX not followed by a low surrogate", u);
                    }
                    p->pos += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
                }
                if (cp == 0) {
                    free(buf);
                    return fail_at(p, esc, "\\u0000 is not supported in strings");
                }
                /* an escape is 6 (or 12) bytes long, its UTF-8 at most 3 (or 4): fits */
                n += put_utf8(buf + n, cp);
                break;
            }
            default:
                free(buf);
                return fail_at(p, esc, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            }
            continue;
        }
        int k = utf8_seq_len(p->s + p->pos, p->len - p->pos);
        if (k == 0) {
            free(buf);
            return fail_at(p, p->pos, "invalid UTF-8 (byte 0x%02x) in string", c);
        }
        memcpy(buf + n, p->s + p->pos, (size_t)k);
        n += (size_t)k;
        p->pos += (size_t)k;
    }
    MT_CHECK(n < cap);
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return MT_OK;
}

/* ------------------------------------------------------------ numbers */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static mt_status parse_number(parser *p, mt_json *v) {
    size_t start = p->pos, i = p->pos;
    int neg = 0, integral = 1;
    char desc[32];
    if (i < p->len && p->s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= p->len || !is_digit(p->s[i]))
        return fail_at(p, i, "invalid number: expected a digit, got %s",
                       describe(p, i, desc, sizeof desc));
    if (p->s[i] == '0') {
        i++;
        if (i < p->len && is_digit(p->s[i])) return fail_at(p, start, "invalid number: leading zero");
    } else {
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    if (i < p->len && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->len || !is_digit(p->s[i]))
            return fail_at(p, i, "invalid number: expected a digit after '.', got %s",
                           describe(p, i, desc, sizeof desc));
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || !is_digit(p->s[i]))
            return fail_at(p, i, "invalid number: expected a digit in the exponent, got %s",
                           describe(p, i, desc, sizeof desc));
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    size_t n = i - start;
    char small[64];
    char *lit = n < sizeof small ? small : xrealloc(NULL, n + 1);
    memcpy(lit, p->s + start, n);
    lit[n] = 0;
    errno = 0;
    double d = strtod(lit, NULL);
    if (lit != small) free(lit);
    if (!isfinite(d)) return fail_at(p, start, "number out of range of a double");
    v->type = MT_JSON_NUMBER;
    v->number = d;
    v->is_int = 0;
    if (integral) {
        /* exact int64 accumulation, negative side to reach INT64_MIN */
        int64_t acc = 0;
        int ok = 1;
        for (size_t k = start + (size_t)neg; k < i; k++) {
            int dgt = p->s[k] - '0';
            if (acc < (INT64_MIN + dgt) / 10) {
                ok = 0;
                break;
            }
            acc = acc * 10 - dgt;
        }
        if (ok && !neg && acc == INT64_MIN) ok = 0;
        if (ok) {
            v->is_int = 1;
            v->integer = neg ? acc : -acc;
        }
    }
    p->pos = i;
    return MT_OK;
}

/* ------------------------------------------------------------- values */

static mt_status parse_value(parser *p, mt_json *v, int depth);

static int match_word(const parser *p, const char *w) {
    size_t n = strlen(w);
    return p->pos + n <= p->len && memcmp(p->s + p->pos, w, n) == 0;
}

static mt_status parse_container(parser *p, mt_json *v, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    char desc[32];
    size_t open_pos = p->pos;
    int open_line = p->line;
    size_t open_line_start = p->line_start;
    if (depth >= MT_JSON_MAX_DEPTH)
        return fail_at(p, p->pos, "nesting deeper than %d levels", MT_JSON_MAX_DEPTH);
    v->type = is_object ? MT_JSON_OBJECT : MT_JSON_ARRAY;
    p->pos++;
    int cap = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return MT_OK;
    }
    for (;;) {
        skip_ws(p);
        char *key = NULL;
        if (is_object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') {
                if (p->pos >= p->len) {
                    p->line = open_line;
                    p->line_start = open_line_start;
                    return fail_at(p, open_pos, "unterminated object");
                }
                return fail_at(p, p->pos, "expected a string key, got %s",
                               describe(p, p->pos, desc, sizeof desc));
            }
            size_t key_pos = p->pos, key_len;
            MT_TRY(parse_string(p, &key, &key_len));
            for (int i = 0; i < v->n; i++)
                if (strcmp(v->keys[i], key) == 0) {
                    mt_status st = fail_at(p, key_pos, "duplicate key \"%s\"", key);
                    free(key);
                    return st;
                }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return fail_at(p, p->pos, "expected ':' after a key, got %s",
                               describe(p, p->pos, desc, sizeof desc));
            }
            p->pos++;
            skip_ws(p);
        }
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            v->items = xrealloc(v->items, (size_t)cap * sizeof *v->items);
            if (is_object) v->keys = xrealloc(v->keys, (size_t)cap * sizeof *v->keys);
        }
        mt_json *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        if (is_object) v->keys[v->n] = key;
        v->n++; /* counted now so that an error frees the key and partial item */
        MT_TRY(parse_value(p, item, depth + 1));
        skip_ws(p);
        if (p->pos >= p->len) {
            p->line = open_line;
            p->line_start = open_line_start;
            return fail_at(p, open_pos, "unterminated %s", is_object ? "object" : "array");
        }
        unsigned char c = p->s[p->pos];
        if (c == ',') {
            p->pos++;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == close)
                return fail_at(p, p->pos, "trailing comma before '%c'", close);
            continue;
        }
        if (c == close) {
            p->pos++;
            return MT_OK;
        }
        return fail_at(p, p->pos, "expected ',' or '%c', got %s", close,
                       describe(p, p->pos, desc, sizeof desc));
    }
}

static mt_status parse_value(parser *p, mt_json *v, int depth) {
    char desc[32];
    skip_ws(p);
    v->line = p->line;
    v->col = col_of(p, p->pos);
    v->source = p->source;
    if (p->pos >= p->len) return fail_at(p, p->pos, "expected a value, got end of input");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"': {
        v->type = MT_JSON_STRING;
        return parse_string(p, &v->string, &v->string_len);
    }
    case 't':
    case 'f':
    case 'n':
        if (match_word(p, "true")) {
            v->type = MT_JSON_BOOL;
            v->boolean = 1;
            p->pos += 4;
        } else if (match_word(p, "false")) {
            v->type = MT_JSON_BOOL;
            v->boolean = 0;
            p->pos += 5;
        } else if (match_word(p, "null")) {
            v->type = MT_JSON_NULL;
            p->pos += 4;
        } else {
            return fail_at(p, p->pos, "invalid literal (expected true, false or null)");
        }
        /* "truex" / "null1": the literal must end here */
        if (p->pos < p->len && ((p->s[p->pos] >= 'a' && p->s[p->pos] <= 'z') ||
                                (p->s[p->pos] >= 'A' && p->s[p->pos] <= 'Z') ||
                                is_digit(p->s[p->pos])))
            return fail_at(p, p->pos, "unexpected %s after literal",
                           describe(p, p->pos, desc, sizeof desc));
        return MT_OK;
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, v);
        if (c == '\'') return fail_at(p, p->pos, "strings need double quotes");
        if (c == '/') return fail_at(p, p->pos, "comments are not allowed in JSON");
        return fail_at(p, p->pos, "expected a value, got %s", describe(p, p->pos, desc, sizeof desc));
    }
}

/* --------------------------------------------------------------- API */

mt_status mt_json_parse(mt_json **out, const char *text, size_t len, const char *source) {
    *out = NULL;
    mt_json *root = xrealloc(NULL, sizeof *root);
    memset(root, 0, sizeof *root);
    char *src = strdup(source ? source : "<json>");
    MT_CHECK_MSG(src, "json: out of host memory");
    parser p = {(const unsigned char *)text, len, 0, 1, 0, src, MT_OK};
    /* a UTF-8 byte-order mark is not JSON (RFC 8259 8.1: MUST NOT add one) */
    mt_status st = MT_OK;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        st = fail_at(&p, 0, "byte-order mark at the start of the file");
    if (st == MT_OK) st = parse_value(&p, root, 0);
    if (st == MT_OK) {
        skip_ws(&p);
        char desc[32];
        if (p.pos < p.len)
            st = fail_at(&p, p.pos, "unexpected %s after the value",
                         describe(&p, p.pos, desc, sizeof desc));
    }
    if (st != MT_OK) {
        free_contents(root);
        free(root);
        free(src);
        return st;
    }
    root->owns_source = 1;
    root->source = src;
    *out = root;
    return MT_OK;
}

mt_status mt_json_parse_file(mt_json **out, const char *path) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mt_error_set(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    int err = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return mt_error_set(MT_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    mt_status st = mt_json_parse(out, buf, n, path);
    free(buf);
    return st;
}

void mt_json_free(mt_json *root) {
    if (!root) return;
    free_contents(root);
    if (root->owns_source) free((char *)root->source);
    free(root);
}

const char *mt_json_type_name(mt_json_type t) {
    switch (t) {
    case MT_JSON_NULL: return "null";
    case MT_JSON_BOOL: return "boolean";
    case MT_JSON_NUMBER: return "number";
    case MT_JSON_STRING: return "string";
    case MT_JSON_ARRAY: return "array";
    case MT_JSON_OBJECT: return "object";
    }
    return "?";
}

const mt_json *mt_json_get(const mt_json *obj, const char *key) {
    if (!obj || obj->type != MT_JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const mt_json *mt_json_at(const mt_json *arr, int i) {
    if (!arr || arr->type != MT_JSON_ARRAY || i < 0 || i >= arr->n) return NULL;
    return &arr->items[i];
}

int mt_json_len(const mt_json *v) {
    if (!v || (v->type != MT_JSON_ARRAY && v->type != MT_JSON_OBJECT)) return 0;
    return v->n;
}

static mt_status type_error(const mt_json *v, const char *what, const char *expected) {
    return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s: expected %s, got %s", v->source, v->line,
                        v->col, what ? what : "value", expected, mt_json_type_name(v->type));
}

mt_status mt_json_require(const mt_json **out, const mt_json *obj, const char *key) {
    *out = NULL;
    MT_CHECK(obj);
    if (obj->type != MT_JSON_OBJECT) return type_error(obj, key, "an object");
    const mt_json *v = mt_json_get(obj, key);
    if (!v)
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: missing key \"%s\"", obj->source, obj->line,
                            obj->col, key);
    *out = v;
    return MT_OK;
}

mt_status mt_json_expect(const mt_json *v, mt_json_type t, const char *what) {
    MT_CHECK(v);
    if (v->type != t) {
        const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
        return type_error(v, what, names[t]);
    }
    return MT_OK;
}

mt_status mt_json_as_int(const mt_json *v, int64_t *out, const char *what) {
    MT_CHECK(v);
    if (v->type != MT_JSON_NUMBER) return type_error(v, what, "an integer");
    if (v->is_int) {
        *out = v->integer;
        return MT_OK;
    }
    double d = v->number;
    if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return mt_error_set(MT_ERR_FORMAT, "%s:%d:%d: %s: expected an integer, got %.17g", v->source,
                            v->line, v->col, what ? what : "value", d);
    *out = (int64_t)d;
    return MT_OK;
}

mt_status mt_json_as_double(const mt_json *v, double *out, const char *what) {
    MT_CHECK(v);
    if (v->type != MT_JSON_NUMBER) return type_error(v, what, "a number");
    *out = v->number;
    return MT_OK;
}

mt_status mt_json_as_string(const mt_json *v, const char **out, const char *what) {
    MT_CHECK(v);
    if (v->type != MT_JSON_STRING) return type_error(v, what, "a string");
    *out = v->string;
    return MT_OK;
}

mt_status mt_json_as_bool(const mt_json *v, int *out, const char *what) {
    MT_CHECK(v);
    if (v->type != MT_JSON_BOOL) return type_error(v, what, "a boolean");
    *out = v->boolean;
    return MT_OK;
}
