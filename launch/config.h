/* Configuration (DESIGN.md decision 8): YAML through libyaml, parsed against
 * ONE schema table (launch/config.c: key, type, default, range, help).
 *
 * A config file is a YAML mapping of sections, e.g.
 *
 *     model:
 *       features: [8, 16, 32]
 *       norm: instance
 *
 * (a dotted key such as `model.features: [8, 16]` at any level means the same).
 * Every key of the schema has a default, so a file only lists what it changes.
 * Unknown keys, wrong types, out-of-range values, malformed YAML and missing
 * files are errors (MT_ERR_CONFIG / MT_ERR_IO) whose message starts with the
 * position and names the key:
 *
 *     configs/x.yaml:12:5: model.features[1]: expected integer in [1, 4096], got "abc"
 *
 * `--set key=value` overrides are applied after the file; the value is parsed
 * as YAML with the same typing rules (lists: `[32,32,32]` or `32,32,32`), and
 * an error names the argument: `--set 'model.depth=abc': model.depth: ...`.
 *
 * Typing rules: integers are plain decimal scalars; floats accept any decimal
 * or exponent form (1e-3, .5, 2); booleans are true/false/yes/no/on/off (any
 * case); enums must match one of the listed values exactly; strings are any
 * scalar (an empty value is the empty string). Quoted scalars are strings, so
 * `"8"` is not an integer. Lists are YAML sequences of such scalars.
 *
 * The getters abort (MT_CHECK) on a key that is not in the schema or is asked
 * for with the wrong type: that is a programming error, not a user error.
 */
#ifndef MT_CONFIG_H
#define MT_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_config mt_config;

typedef enum {
    MT_CFG_INT = 0,
    MT_CFG_FLOAT,
    MT_CFG_BOOL,
    MT_CFG_STRING,
    MT_CFG_ENUM,
    MT_CFG_INT_LIST,
    MT_CFG_FLOAT_LIST
} mt_cfg_type;

/* One schema entry. */
typedef struct {
    const char *key;     /* "model.features" */
    mt_cfg_type type;
    const char *def;     /* default, as YAML text parsed with the same rules */
    double min, max;     /* value range (ints, floats, list items); +-HUGE_VAL: unbounded */
    int excl;            /* 1: min excluded, 2: max excluded (bits) */
    const char *choices; /* enum: "batch|instance|group" */
    int min_len, max_len; /* lists: allowed number of items */
    const char *help;
} mt_cfg_schema_entry;

/* The schema table (and its size). */
const mt_cfg_schema_entry *mt_config_schema(int *n);

/* --- building a config (each returns a new config in *out, or an error and
 *     *out == NULL; release with mt_config_free) --- */
/* All schema defaults. */
mt_config *mt_config_default(void);
/* Parses the YAML file at `path`, then applies the n `sets` ("key=value"). */
mt_status mt_config_load(mt_config **out, const char *path, int nsets, const char *const *sets);
/* Same from YAML text in memory; `name` stands in for the file name in
 * messages and in mt_config_where. */
mt_status mt_config_parse_string(mt_config **out, const char *yaml, const char *name, int nsets,
                                 const char *const *sets);
/* A config stored in a weight file or checkpoint, possibly by another version
 * of medtrain: keys this version does not know, or whose value it cannot
 * read, are skipped (defaults kept) and listed in *skipped ("key (why), ...";
 * NULL when none; the caller frees it), except the keys that define the
 * model (model.*, data.patch_size, loss.*), which fail as in a user's
 * config: a weight file whose network this version cannot rebuild must not
 * load as a different one. */
mt_status mt_config_parse_stored(mt_config **out, const char *yaml, const char *name, char **skipped);
/* Applies one "key=value" override. On error cfg is unchanged. */
mt_status mt_config_set(mt_config *cfg, const char *assignment);
mt_config *mt_config_clone(const mt_config *cfg);
void mt_config_free(mt_config *cfg);

/* --- access (abort on a key not in the schema or of another type) --- */
int64_t mt_config_get_int(const mt_config *cfg, const char *key);
double mt_config_get_float(const mt_config *cfg, const char *key);
int mt_config_get_bool(const mt_config *cfg, const char *key);
/* Strings and enums; the pointer lives as long as cfg. */
const char *mt_config_get_string(const mt_config *cfg, const char *key);
/* Enum as the index of its value in the schema's choices. */
int mt_config_get_enum(const mt_config *cfg, const char *key);
/* Lists: the items (valid as long as cfg) and their number in *n. */
const int64_t *mt_config_get_int_list(const mt_config *cfg, const char *key, int *n);
const double *mt_config_get_float_list(const mt_config *cfg, const char *key, int *n);
/* Whether `key` is in the schema. */
int mt_config_has_key(const char *key);

/* Where the key's value came from: "file:line:col", "--set 'k=v'" or "default". */
const char *mt_config_where(const mt_config *cfg, const char *key);
/* The config file's path, or NULL when built from defaults only. */
const char *mt_config_source(const mt_config *cfg);
/* A semantic error about `key` found after parsing (e.g. by the trainer):
 * records "<where>: <key>: <message>" and returns MT_ERR_CONFIG. */
mt_status mt_config_error(const mt_config *cfg, const char *key, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Cross-key checks that need only the config (patch size vs. U-Net depth,
 * list lengths, group norm groups, loss vs. channels, ...). The trainer calls
 * it before building anything and may add checks of its own. */
mt_status mt_config_check(const mt_config *cfg);
/* run.device resolved by mt_device_parse (core/backend.h): auto -> cuda:0
 * if a GPU is usable, else the CPU; cuda / cuda:N without the CUDA backend,
 * without a usable GPU or with N out of range, and unknown names, are
 * MT_ERR_CONFIG errors naming run.device and saying why. */
mt_status mt_config_device(const mt_config *cfg, mt_device *out);

/* The resolved config as YAML text, every key with its value, in schema
 * order (malloc'd; free()). Parsing it gives the same values. */
char *mt_config_to_yaml(const mt_config *cfg);
/* Prints every key with type, default, range and help. */
void mt_config_explain(FILE *fp);

#ifdef __cplusplus
}
#endif
#endif
