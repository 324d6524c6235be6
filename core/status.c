#include "core/status.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char g_msg[4096];

mt_status mt_error_set(mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return code;
}

mt_status mt_error_prefix(mt_status code, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", g_msg);
    size_t np = strlen(prefix);
    if (np >= sizeof g_msg) np = sizeof g_msg - 1;
    memcpy(g_msg, prefix, np);
    size_t no = strlen(old);
    if (np + no >= sizeof g_msg) no = sizeof g_msg - 1 - np;
    memcpy(g_msg + np, old, no);
    g_msg[np + no] = 0;
    return code;
}

const char *mt_error_msg(void) { return g_msg[0] ? g_msg : "unknown error"; }

void mt_error_clear(void) { g_msg[0] = 0; }

void mt_fatal(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "medtrain: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
