/* Files and the run directory (DESIGN.md decision 10).
 *
 *  - mt_strbuf: a growable string used to build text (YAML, JSON).
 *  - atomic writes: data goes to a temp file in the destination's directory,
 *    then fflush, fsync, rename over the destination, fsync of the directory.
 *    A reader sees the old file or the complete new one, never half of one.
 *  - mt_rundir: runs/<name>/ with config.yaml, train.log (a tee of the
 *    terminal output), metrics.jsonl (one JSON object per line) and
 *    checkpoints/ (step_%08d.safetensors written atomically, and
 *    last.safetensors, an atomically replaced hard link to the newest).
 *
 * Only rank 0 opens a run directory (DESIGN.md decision 7).
 */
#ifndef MT_FSUTIL_H
#define MT_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mt_config;
struct mt_safetensors;

/* ------------------------------------------------------------ strings */
typedef struct {
    char *data; /* NUL-terminated (NULL while empty and never grown) */
    size_t len, cap;
} mt_strbuf;

void mt_strbuf_init(mt_strbuf *sb);
void mt_strbuf_free(mt_strbuf *sb);
void mt_strbuf_append(mt_strbuf *sb, const char *s, size_t n);
void mt_strbuf_puts(mt_strbuf *sb, const char *s);
void mt_strbuf_printf(mt_strbuf *sb, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Appends the shortest decimal text that reads back as exactly v (%.17g at
 * most), e.g. 0.001 -> "0.001". Non-finite values as "nan", "inf", "-inf". */
void mt_strbuf_double(mt_strbuf *sb, double v);
/* Appends v as a JSON number (mt_strbuf_double), or null when not finite. */
void mt_strbuf_json_number(mt_strbuf *sb, double v);
/* Appends s as a JSON string literal, quotes included (escapes " \ and
 * control characters as serde_json does; other bytes are copied). */
void mt_strbuf_json_string(mt_strbuf *sb, const char *s);
/* Takes the malloc'd text (an empty string if nothing was appended) and
 * leaves sb empty. */
char *mt_strbuf_take(mt_strbuf *sb);

/* -------------------------------------------------------------- files */
/* Whether path exists and is a directory / a regular file. */
int mt_fs_is_dir(const char *path);
int mt_fs_is_file(const char *path);
/* mkdir -p (mode 0777 & ~umask). */
mt_status mt_fs_mkdir_p(const char *path);
/* Reads a whole file; *data is malloc'd and NUL-terminated (not counted in *len). */
mt_status mt_fs_read_file(const char *path, char **data, size_t *len);

/* A file being written atomically. */
typedef struct {
    FILE *fp;
    char *path;     /* destination */
    char *tmp_path; /* <dir>/.<name>.tmp.<pid>.<n> */
    int failed;     /* a write failed; commit will report it */
    int err;        /* errno of the failure */
} mt_atomic_file;

mt_status mt_fs_atomic_open(mt_atomic_file *af, const char *path);
mt_status mt_fs_atomic_write(mt_atomic_file *af, const void *data, size_t n);
/* fflush, fsync, close, rename over the destination, fsync the directory.
 * On error the temp file is removed and the destination is untouched. */
mt_status mt_fs_atomic_commit(mt_atomic_file *af);
/* Closes and removes the temp file; the destination is untouched. */
void mt_fs_atomic_abort(mt_atomic_file *af);
/* Whole-buffer convenience. */
mt_status mt_fs_write_atomic(const char *path, const void *data, size_t n);

/* ----------------------------------------------------------- metrics */
/* One JSON object, built key by key, for metrics.jsonl. */
typedef struct {
    mt_strbuf sb;
    int n;
} mt_json_obj;

void mt_json_obj_begin(mt_json_obj *o);
void mt_json_obj_int(mt_json_obj *o, const char *key, int64_t v);
/* Non-finite values are written as null (JSON has no NaN). */
void mt_json_obj_float(mt_json_obj *o, const char *key, double v);
void mt_json_obj_string(mt_json_obj *o, const char *key, const char *v);
void mt_json_obj_bool(mt_json_obj *o, const char *key, int v);
/* Closes the object; returns its text (owned by o until mt_json_obj_free). */
const char *mt_json_obj_end(mt_json_obj *o);
void mt_json_obj_free(mt_json_obj *o);

/* -------------------------------------------------------- run directory */
typedef struct {
    char *path;      /* runs/<name> */
    char *name;      /* <name> */
    char *ckpt_dir;  /* runs/<name>/checkpoints */
    FILE *log;       /* runs/<name>/train.log (append) */
    FILE *metrics;   /* runs/<name>/metrics.jsonl (append) */
} mt_rundir;

/* Creates (or, when resuming, reopens) the run directory for cfg and writes
 * the resolved config to <path>/config.yaml atomically.
 *  - resume_path == NULL: <run.dir>/<run.name>; run.name "" picks
 *    "<config file stem>-YYYYmmdd-HHMMSS" (with a -2, -3... suffix if taken).
 *    An existing non-empty directory is an error naming it (use --resume or
 *    another run.name).
 *  - resume_path != NULL: if it lies in "<run>/checkpoints/", the run goes
 *    on in <run>; otherwise as for a fresh run, but an existing directory is
 *    accepted. log and metrics are appended to. */
mt_status mt_rundir_open(mt_rundir *rd, const struct mt_config *cfg, const char *resume_path);
void mt_rundir_close(mt_rundir *rd);

/* printf to stdout and to the run's log (rd may be NULL: stdout only);
 * both flushed. */
void mt_rundir_log(mt_rundir *rd, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Appends one line to metrics.jsonl and flushes it. */
mt_status mt_rundir_metrics(mt_rundir *rd, mt_json_obj *o);

/* Writes checkpoints/step_%08d.safetensors atomically, then points
 * checkpoints/last.safetensors at it (hard link + rename; a copy where links
 * are not supported). *written (may be NULL) gets the step file's path
 * (malloc'd). keep_last > 0 removes older step files beyond that many. */
mt_status mt_rundir_save_checkpoint(mt_rundir *rd, const struct mt_safetensors *st, int64_t step,
                                    int keep_last, char **written);

/* The checkpoint to resume from, for `--resume [arg]` (malloc'd in *out):
 *  - arg a file: that file;
 *  - arg a directory: <arg>/checkpoints/ or <arg> itself, taking
 *    last.safetensors, else the step_*.safetensors with the highest step;
 *  - arg NULL: the run directory <run.dir>/<run.name> of cfg (run.name must
 *    be set).
 * Errors name what was looked for. */
mt_status mt_rundir_resolve_resume(char **out, const char *arg, const struct mt_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
