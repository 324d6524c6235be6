/* A small, strict JSON reader (RFC 8259) producing a DOM.
 *
 * Strict means: exactly one value (surrounded by optional whitespace), no
 * comments, no trailing commas, no single quotes, no NaN/Infinity, no leading
 * zeros or '+' signs, no raw control characters in strings, valid UTF-8
 * input, no lone UTF-16 surrogates in \u escapes, no duplicate keys in an
 * object, nesting at most MT_JSON_MAX_DEPTH deep. "\u0000" is rejected too
 * (strings are NUL-terminated C strings). \uXXXX escapes (surrogate pairs
 * included) are decoded to UTF-8.
 *
 * Every value remembers where it starts (1-based line and column, columns
 * counted in bytes) and the name of its source (a file path, or whatever the
 * caller passed), so parse errors and the type errors of the accessors below
 * read "<source>:<line>:<column>: <problem>".
 *
 * Ownership: mt_json_parse* returns a root that owns the whole tree; free it
 * with mt_json_free(root). Pointers returned by the lookup helpers point into
 * the tree and live as long as the root.
 *
 * (launch/safetensors.c has its own private JSON code from before this
 * reader existed; it could move onto this one.)
 */
#ifndef MT_JSON_H
#define MT_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_JSON_MAX_DEPTH 256

typedef enum {
    MT_JSON_NULL = 0,
    MT_JSON_BOOL = 1,
    MT_JSON_NUMBER = 2,
    MT_JSON_STRING = 3,
    MT_JSON_ARRAY = 4,
    MT_JSON_OBJECT = 5
} mt_json_type;

typedef struct mt_json {
    mt_json_type type;
    int line, col;          /* where the value starts, 1-based */
    const char *source;     /* name used in messages (owned by the root) */
    int boolean;            /* MT_JSON_BOOL */
    double number;          /* MT_JSON_NUMBER (strtod of the literal) */
    int is_int;             /* number literal without fraction/exponent that fits int64 */
    int64_t integer;        /* its exact value when is_int */
    char *string;           /* MT_JSON_STRING: decoded UTF-8, NUL-terminated */
    size_t string_len;
    int n;                  /* ARRAY / OBJECT: number of items */
    struct mt_json *items;  /* ARRAY / OBJECT: the n values, in document order */
    char **keys;            /* OBJECT: the n keys (decoded UTF-8) */
    int owns_source;        /* root only */
} mt_json;

/* Parses len bytes of text. source names the text in messages (e.g. a path;
 * NULL reads "<json>"). On error *out is NULL and the status is
 * MT_ERR_FORMAT with "<source>:<line>:<col>: <problem>". */
mt_status mt_json_parse(mt_json **out, const char *text, size_t len, const char *source);
/* Reads and parses a file; a missing/unreadable file is MT_ERR_IO naming it. */
mt_status mt_json_parse_file(mt_json **out, const char *path);
/* Frees a root returned by mt_json_parse* (NULL is fine). */
void mt_json_free(mt_json *root);

/* "null", "boolean", "number", "string", "array", "object". */
const char *mt_json_type_name(mt_json_type t);

/* Lookups (no error recorded): the value of key in an object, NULL if obj is
 * NULL, not an object or has no such key; item i of an array, NULL if out of
 * range or not an array; item count of an array/object, else 0. */
const mt_json *mt_json_get(const mt_json *obj, const char *key);
const mt_json *mt_json_at(const mt_json *arr, int i);
int mt_json_len(const mt_json *v);

/* Lookups that record an error: MT_ERR_FORMAT "<source>:<line>:<col>: missing
 * key "key"" when obj lacks key, or "... expected an object" when obj is no
 * object. *out may then be NULL. */
mt_status mt_json_require(const mt_json **out, const mt_json *obj, const char *key);

/* Typed access. `what` names the value in messages (a key or a path such as
 * "training[3].image"; NULL reads "value"). A wrong type is MT_ERR_FORMAT:
 * "<source>:<line>:<col>: <what>: expected <type>, got <type>".
 *  - as_int: a number with an integral value in int64 range (1.0 and 1e3 are
 *    accepted, 1.5 is not);
 *  - as_double: any number;
 *  - as_string: a string (pointer into the tree);
 *  - as_bool: true/false. */
mt_status mt_json_as_int(const mt_json *v, int64_t *out, const char *what);
mt_status mt_json_as_double(const mt_json *v, double *out, const char *what);
mt_status mt_json_as_string(const mt_json *v, const char **out, const char *what);
mt_status mt_json_as_bool(const mt_json *v, int *out, const char *what);
/* MT_ERR_FORMAT unless v is of type t (arrays/objects). */
mt_status mt_json_expect(const mt_json *v, mt_json_type t, const char *what);

#ifdef __cplusplus
}
#endif
#endif
