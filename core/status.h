/* Error reporting for medtrain.
 *
 * Two kinds of failure (DESIGN.md decision 9):
 *  - user-caused (config, files, data, shapes, CLI): functions return an
 *    mt_status; MT_OK (0) is success, anything else is an error whose message
 *    was recorded with mt_error_set() and is read back with mt_error_msg().
 *  - internal (broken invariants, CUDA/cuDNN/NCCL/MPI failures): MT_CHECK and
 *    friends print the expression, file and line, then abort.
 */
#ifndef MT_STATUS_H
#define MT_STATUS_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_OK = 0,
    MT_ERR_INVALID = 1,   /* bad argument, shape or value */
    MT_ERR_IO = 2,        /* file missing, unreadable, truncated */
    MT_ERR_CONFIG = 3,    /* configuration error */
    MT_ERR_UNSUPPORTED = 4, /* kernel/dtype/device not available */
    MT_ERR_NOMEM = 5,
    MT_ERR_FORMAT = 6     /* corrupt or malformed file content */
} mt_status;

/* Records a printf-style message for the calling thread and returns code. */
mt_status mt_error_set(mt_status code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prepends context ("while loading X: ") to the current message. */
mt_status mt_error_prefix(mt_status code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *mt_error_msg(void);
void mt_error_clear(void);

void mt_fatal(const char *file, int line, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((noreturn, format(printf, 3, 4)))
#endif
    ;

/* Internal invariant: abort with expression, file and line. */
#define MT_CHECK(cond)                                                          \
    do {                                                                        \
        if (!(cond)) mt_fatal(__FILE__, __LINE__, "check failed: %s", #cond);   \
    } while (0)
#define MT_CHECK_MSG(cond, ...)                                                 \
    do {                                                                        \
        if (!(cond)) mt_fatal(__FILE__, __LINE__, __VA_ARGS__);                 \
    } while (0)
/* Propagate a non-OK status to the caller. */
#define MT_TRY(expr)                                                            \
    do {                                                                        \
        mt_status mt_try_s_ = (expr);                                           \
        if (mt_try_s_ != MT_OK) return mt_try_s_;                               \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
