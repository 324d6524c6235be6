/* Files and the run directory: see launch/fsutil.h. */
#include "launch/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "launch/config.h"
#include "launch/safetensors.h"

/* ================================================================ strings */

void mt_strbuf_init(mt_strbuf *sb) { memset(sb, 0, sizeof *sb); }

void mt_strbuf_free(mt_strbuf *sb) {
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}

static void strbuf_reserve(mt_strbuf *sb, size_t extra) {
    if (sb->len + extra + 1 <= sb->cap) return;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + extra + 1) cap *= 2;
    char *d = realloc(sb->data, cap);
    MT_CHECK_MSG(d, "out of host memory (%zu bytes of text)", cap);
    sb->data = d;
    sb->cap = cap;
}

void mt_strbuf_append(mt_strbuf *sb, const char *s, size_t n) {
    strbuf_reserve(sb, n);
    if (n) memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = 0;
}

void mt_strbuf_puts(mt_strbuf *sb, const char *s) { mt_strbuf_append(sb, s, strlen(s)); }

void mt_strbuf_printf(mt_strbuf *sb, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    MT_CHECK(n >= 0);
    strbuf_reserve(sb, (size_t)n);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    sb->len += (size_t)n;
}

void mt_strbuf_double(mt_strbuf *sb, double v) {
    if (isnan(v)) {
        mt_strbuf_puts(sb, "nan");
        return;
    }
    if (isinf(v)) {
        mt_strbuf_puts(sb, v > 0 ? "inf" : "-inf");
        return;
    }
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, sizeof buf, "%.0f", v); /* 10 -> "10", not "1e+01" */
        mt_strbuf_puts(sb, buf);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    mt_strbuf_puts(sb, buf);
}

void mt_strbuf_json_string(mt_strbuf *sb, const char *s) {
    static const char hex[] = "0123456789abcdef";
    mt_strbuf_append(sb, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        switch (c) {
        case '"': mt_strbuf_append(sb, "\\\"", 2); break;
        case '\\': mt_strbuf_append(sb, "\\\\", 2); break;
        case '\n': mt_strbuf_append(sb, "\\n", 2); break;
        case '\r': mt_strbuf_append(sb, "\\r", 2); break;
        case '\t': mt_strbuf_append(sb, "\\t", 2); break;
        case '\b': mt_strbuf_append(sb, "\\b", 2); break;
        case '\f': mt_strbuf_append(sb, "\\f", 2); break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                mt_strbuf_append(sb, e, 6);
            } else {
                mt_strbuf_append(sb, (const char *)p, 1);
            }
        }
    }
    mt_strbuf_append(sb, "\"", 1);
}

char *mt_strbuf_take(mt_strbuf *sb) {
    if (!sb->data) strbuf_reserve(sb, 0), sb->data[0] = 0;
    char *d = sb->data;
    memset(sb, 0, sizeof *sb);
    return d;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    MT_CHECK_MSG(d, "out of host memory");
    return d;
}

static char *path_join(const char *a, const char *b) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_puts(&sb, a);
    if (sb.len && sb.data[sb.len - 1] != '/') mt_strbuf_puts(&sb, "/");
    mt_strbuf_puts(&sb, b);
    return mt_strbuf_take(&sb);
}

/* The directory part of path ("." when it has none). */
static char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *path_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* ================================================================== files */

int mt_fs_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mt_fs_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

mt_status mt_fs_mkdir_p(const char *path) {
    if (!path || !*path) return mt_error_set(MT_ERR_INVALID, "mkdir: empty path");
    char *p = xstrdup(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                mt_status st = mt_error_set(MT_ERR_IO, "cannot create directory %s: %s", p, strerror(e));
                free(p);
                return st;
            }
            if (!mt_fs_is_dir(p)) {
                mt_status st = mt_error_set(MT_ERR_IO, "cannot create directory %s: a file of that name exists", p);
                free(p);
                return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return MT_OK;
}

mt_status mt_fs_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    if (len) *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mt_error_set(MT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || S_ISDIR(st.st_mode)) {
        fclose(fp);
        return mt_error_set(MT_ERR_IO, "cannot read %s: %s", path,
                            S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
    }
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) mt_strbuf_append(&sb, chunk, got);
    if (ferror(fp)) {
        int e = errno;
        fclose(fp);
        mt_strbuf_free(&sb);
        return mt_error_set(MT_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    fclose(fp);
    if (len) *len = sb.len;
    *data = mt_strbuf_take(&sb);
    return MT_OK;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd); /* some file systems refuse (EINVAL): the rename still happened */
    close(fd);
}

mt_status mt_fs_atomic_open(mt_atomic_file *af, const char *path) {
    static int counter;
    memset(af, 0, sizeof *af);
    char *dir = path_dirname(path);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        sb.len = 0;
        mt_strbuf_printf(&sb, "%s/.%s.tmp.%ld.%d", dir, path_basename(path), (long)getpid(),
                         __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        fd = open(sb.data, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    free(dir);
    if (fd < 0) {
        int e = errno;
        mt_strbuf_free(&sb);
        return mt_error_set(MT_ERR_IO, "cannot write %s: creating a temp file: %s", path, strerror(e));
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        int e = errno;
        close(fd);
        unlink(sb.data);
        mt_strbuf_free(&sb);
        return mt_error_set(MT_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    af->tmp_path = mt_strbuf_take(&sb);
    af->path = xstrdup(path);
    return MT_OK;
}

mt_status mt_fs_atomic_write(mt_atomic_file *af, const void *data, size_t n) {
    if (af->failed) return mt_error_set(MT_ERR_IO, "cannot write %s: %s", af->path, strerror(af->err));
    if (n && fwrite(data, 1, n, af->fp) != n) {
        af->failed = 1;
        af->err = errno ? errno : EIO;
        return mt_error_set(MT_ERR_IO, "cannot write %s: %s", af->path, strerror(af->err));
    }
    return MT_OK;
}

static void atomic_release(mt_atomic_file *af) {
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

void mt_fs_atomic_abort(mt_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_release(af);
}

mt_status mt_fs_atomic_commit(mt_atomic_file *af) {
    int e = af->failed ? af->err : 0;
    if (!e && fflush(af->fp) != 0) e = errno;
    if (!e && fsync(fileno(af->fp)) != 0 && errno != EINVAL) e = errno;
    if (fclose(af->fp) != 0 && !e) e = errno;
    af->fp = NULL;
    if (!e && rename(af->tmp_path, af->path) != 0) e = errno;
    if (e) {
        mt_status st = mt_error_set(MT_ERR_IO, "cannot write %s: %s", af->path, strerror(e));
        unlink(af->tmp_path);
        atomic_release(af);
        return st;
    }
    char *dir = path_dirname(af->path);
    fsync_dir(dir);
    free(dir);
    atomic_release(af);
    return MT_OK;
}

mt_status mt_fs_write_atomic(const char *path, const void *data, size_t n) {
    mt_atomic_file af;
    MT_TRY(mt_fs_atomic_open(&af, path));
    mt_status st = mt_fs_atomic_write(&af, data, n);
    if (st != MT_OK) {
        mt_fs_atomic_abort(&af);
        return st;
    }
    return mt_fs_atomic_commit(&af);
}

/* ================================================================ metrics */

void mt_json_obj_begin(mt_json_obj *o) {
    mt_strbuf_init(&o->sb);
    o->n = 0;
    mt_strbuf_puts(&o->sb, "{");
}

static void json_key(mt_json_obj *o, const char *key) {
    if (o->n++) mt_strbuf_puts(&o->sb, ", ");
    mt_strbuf_json_string(&o->sb, key);
    mt_strbuf_puts(&o->sb, ": ");
}

void mt_json_obj_int(mt_json_obj *o, const char *key, int64_t v) {
    json_key(o, key);
    mt_strbuf_printf(&o->sb, "%lld", (long long)v);
}

void mt_strbuf_json_number(mt_strbuf *sb, double v) {
    /* JSON numbers need a digit before '.' ("%g" never omits it) */
    if (isfinite(v))
        mt_strbuf_double(sb, v);
    else
        mt_strbuf_puts(sb, "null");
}

void mt_json_obj_float(mt_json_obj *o, const char *key, double v) {
    json_key(o, key);
    mt_strbuf_json_number(&o->sb, v);
}

void mt_json_obj_string(mt_json_obj *o, const char *key, const char *v) {
    json_key(o, key);
    mt_strbuf_json_string(&o->sb, v ? v : "");
}

void mt_json_obj_bool(mt_json_obj *o, const char *key, int v) {
    json_key(o, key);
    mt_strbuf_puts(&o->sb, v ? "true" : "false");
}

const char *mt_json_obj_end(mt_json_obj *o) {
    mt_strbuf_puts(&o->sb, "}");
    return o->sb.data;
}

void mt_json_obj_free(mt_json_obj *o) { mt_strbuf_free(&o->sb); }

/* ========================================================== run directory */

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    }
    closedir(d);
    return empty;
}

/* "<stem of the config file>-YYYYmmdd-HHMMSS" */
static char *auto_run_name(const mt_config *cfg) {
    const char *src = mt_config_source(cfg);
    char stem[128] = "default";
    if (src) {
        snprintf(stem, sizeof stem, "%s", path_basename(src));
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem && (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml"))) *dot = 0;
        if (!strcmp(stem, "config") && src) {
            /* runs/<name>/config.yaml: keep the run's name as the stem */
            char *dir = path_dirname(src);
            if (strcmp(dir, ".") && strcmp(dir, "/")) snprintf(stem, sizeof stem, "%s", path_basename(dir));
            free(dir);
        }
    }
    for (char *p = stem; *p; p++) /* a plain directory name */
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            *p = '_';
    if (stem[0] == '.' || !stem[0]) stem[0] = '_', stem[1] = 0;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "%s-%s", stem, ts);
    return mt_strbuf_take(&sb);
}

/* If path is "<run>/checkpoints/<file>", returns "<run>" (malloc'd), else NULL. */
static char *run_of_checkpoint(const char *path) {
    char *dir = path_dirname(path);
    char *run = NULL;
    if (!strcmp(path_basename(dir), "checkpoints")) run = path_dirname(dir);
    free(dir);
    return run;
}

void mt_rundir_close(mt_rundir *rd) {
    if (!rd) return;
    if (rd->log) fclose(rd->log);
    if (rd->metrics) fclose(rd->metrics);
    free(rd->path);
    free(rd->name);
    free(rd->ckpt_dir);
    memset(rd, 0, sizeof *rd);
}

mt_status mt_rundir_open(mt_rundir *rd, const mt_config *cfg, const char *resume_path) {
    memset(rd, 0, sizeof *rd);
    const char *root = mt_config_get_string(cfg, "run.dir");
    const char *name = mt_config_get_string(cfg, "run.name");
    if (!*root) return mt_config_error(cfg, "run.dir", "must not be empty");
    if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return mt_config_error(cfg, "run.name", "\"%s\" is not a plain directory name", name);

    char *path = resume_path ? run_of_checkpoint(resume_path) : NULL;
    if (!path && *name) {
        path = path_join(root, name);
        if (!resume_path && mt_fs_is_dir(path) && !dir_is_empty(path)) {
            mt_status st = mt_config_error(
                cfg, "run.name",
                "run directory %s already exists: continue it with --resume, or pick another "
                "name with --set run.name=NAME", path);
            free(path);
            return st;
        }
    } else if (!path) {
        char *base = auto_run_name(cfg);
        path = path_join(root, base);
        for (int k = 2; mt_fs_is_dir(path) && k < 10000; k++) {
            free(path);
            mt_strbuf sb;
            mt_strbuf_init(&sb);
            mt_strbuf_printf(&sb, "%s-%d", base, k);
            char *b2 = mt_strbuf_take(&sb);
            path = path_join(root, b2);
            free(b2);
        }
        free(base);
    }
    rd->path = path;
    rd->name = xstrdup(path_basename(path));
    rd->ckpt_dir = path_join(path, "checkpoints");
    mt_status st = mt_fs_mkdir_p(rd->ckpt_dir);
    if (st != MT_OK) goto fail;

    char *yaml = mt_config_to_yaml(cfg);
    char *cfg_path = path_join(path, "config.yaml");
    st = mt_fs_write_atomic(cfg_path, yaml, strlen(yaml));
    free(yaml);
    free(cfg_path);
    if (st != MT_OK) goto fail;

    char *log_path = path_join(path, "train.log");
    rd->log = fopen(log_path, "a");
    if (!rd->log) st = mt_error_set(MT_ERR_IO, "cannot open %s: %s", log_path, strerror(errno));
    free(log_path);
    if (st != MT_OK) goto fail;
    char *met_path = path_join(path, "metrics.jsonl");
    rd->metrics = fopen(met_path, "a");
    if (!rd->metrics) st = mt_error_set(MT_ERR_IO, "cannot open %s: %s", met_path, strerror(errno));
    free(met_path);
    if (st != MT_OK) goto fail;
    return MT_OK;
fail:
    mt_rundir_close(rd);
    return st;
}

void mt_rundir_log(mt_rundir *rd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (rd && rd->log) {
        va_list ap2;
        va_copy(ap2, ap);
        vfprintf(rd->log, fmt, ap2);
        va_end(ap2);
        fflush(rd->log);
    }
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}

mt_status mt_rundir_metrics(mt_rundir *rd, mt_json_obj *o) {
    MT_CHECK_MSG(rd && rd->metrics, "mt_rundir_metrics: run directory not open");
    const char *text = o->sb.data;
    MT_CHECK_MSG(text && o->sb.len && text[o->sb.len - 1] == '}', "mt_rundir_metrics: call mt_json_obj_end first");
    if (fprintf(rd->metrics, "%s\n", text) < 0 || fflush(rd->metrics) != 0)
        return mt_error_set(MT_ERR_IO, "cannot write %s/metrics.jsonl: %s", rd->path, strerror(errno));
    return MT_OK;
}

/* step of "step_%d.safetensors", or -1 */
static int64_t step_of_name(const char *name) {
    if (strncmp(name, "step_", 5)) return -1;
    const char *p = name + 5;
    if (*p < '0' || *p > '9') return -1;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (strcmp(end, ".safetensors")) return -1;
    return v;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The steps of step_*.safetensors in dir, sorted ascending (malloc'd). */
static int64_t *list_steps(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 0;
    int64_t *steps = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of_name(e->d_name);
        if (s < 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            steps = realloc(steps, (size_t)cap * sizeof *steps);
            MT_CHECK(steps);
        }
        steps[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(steps, (size_t)*n, sizeof *steps, cmp_i64);
    return steps;
}

static char *step_path(const char *dir, int64_t step) {
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "%s/step_%08lld.safetensors", dir, (long long)step);
    return mt_strbuf_take(&sb);
}

/* Copies src to dst atomically. */
static mt_status copy_file_atomic(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return mt_error_set(MT_ERR_IO, "cannot open %s: %s", src, strerror(errno));
    mt_atomic_file af;
    mt_status st = mt_fs_atomic_open(&af, dst);
    if (st != MT_OK) {
        fclose(in);
        return st;
    }
    char buf[1 << 16];
    size_t got;
    while (st == MT_OK && (got = fread(buf, 1, sizeof buf, in)) > 0) st = mt_fs_atomic_write(&af, buf, got);
    if (st == MT_OK && ferror(in)) st = mt_error_set(MT_ERR_IO, "cannot read %s: %s", src, strerror(errno));
    fclose(in);
    if (st != MT_OK) {
        mt_fs_atomic_abort(&af);
        return st;
    }
    return mt_fs_atomic_commit(&af);
}

mt_status mt_rundir_save_checkpoint(mt_rundir *rd, const mt_safetensors *st, int64_t step, int keep_last,
                                    char **written) {
    MT_CHECK_MSG(rd && rd->ckpt_dir, "mt_rundir_save_checkpoint: run directory not open");
    if (written) *written = NULL;
    char *path = step_path(rd->ckpt_dir, step);
    mt_status s = mt_safetensors_save(st, path);
    if (s != MT_OK) {
        free(path);
        return s;
    }
    /* last.safetensors: hard link under a temp name, then rename over it */
    char *last = path_join(rd->ckpt_dir, "last.safetensors");
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "%s/.last.safetensors.link.%ld", rd->ckpt_dir, (long)getpid());
    char *tmp = mt_strbuf_take(&sb);
    unlink(tmp);
    if (link(path, tmp) == 0) {
        if (rename(tmp, last) != 0) {
            int e = errno;
            unlink(tmp);
            s = mt_error_set(MT_ERR_IO, "cannot write %s: %s", last, strerror(e));
        } else {
            fsync_dir(rd->ckpt_dir);
        }
    } else {
        s = copy_file_atomic(path, last);
    }
    free(tmp);
    free(last);
    if (s == MT_OK && keep_last > 0) {
        int n;
        int64_t *steps = list_steps(rd->ckpt_dir, &n);
        for (int i = 0; i + keep_last < n; i++) {
            if (steps[i] == step) continue;
            char *old = step_path(rd->ckpt_dir, steps[i]);
            unlink(old);
            free(old);
        }
        free(steps);
    }
    if (s == MT_OK && written)
        *written = path;
    else
        free(path);
    return s;
}

/* A checkpoint inside dir: last.safetensors, else the highest step file. */
static char *checkpoint_in_dir(const char *dir) {
    char *last = path_join(dir, "last.safetensors");
    if (mt_fs_is_file(last)) return last;
    free(last);
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *best = NULL;
    int64_t best_step = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of_name(e->d_name);
        if (s > best_step) {
            free(best);
            best = path_join(dir, e->d_name);
            best_step = s;
        }
    }
    closedir(d);
    return best;
}

mt_status mt_rundir_resolve_resume(char **out, const char *arg, const mt_config *cfg) {
    *out = NULL;
    char *run = NULL;
    if (!arg) {
        const char *name = mt_config_get_string(cfg, "run.name");
        if (!*name)
            return mt_error_set(MT_ERR_CONFIG,
                                "--resume without a path needs run.name (set it in the config or with "
                                "--set run.name=NAME), or give the run directory or checkpoint: "
                                "--resume runs/NAME");
        run = path_join(mt_config_get_string(cfg, "run.dir"), name);
        if (!mt_fs_is_dir(run)) {
            mt_status st = mt_error_set(MT_ERR_IO, "--resume: run directory %s does not exist", run);
            free(run);
            return st;
        }
        arg = run;
    }
    if (mt_fs_is_file(arg)) {
        *out = xstrdup(arg);
        free(run);
        return MT_OK;
    }
    if (!mt_fs_is_dir(arg)) {
        mt_status st = mt_error_set(MT_ERR_IO, "--resume: %s: no such file or directory", arg);
        free(run);
        return st;
    }
    char *ck = path_join(arg, "checkpoints");
    char *found = mt_fs_is_dir(ck) ? checkpoint_in_dir(ck) : NULL;
    if (!found) found = checkpoint_in_dir(arg);
    free(ck);
    if (!found) {
        mt_status st = mt_error_set(MT_ERR_IO,
                                    "--resume: no checkpoint in %s (looked for checkpoints/last.safetensors "
                                    "and checkpoints/step_*.safetensors)", arg);
        free(run);
        return st;
    }
    free(run);
    *out = found;
    return MT_OK;
}
