/* TensorBoard event files: see launch/tbevents.h (the format and where its
 * field numbers and constants were checked). */
#include "launch/tbevents.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ================================================================ CRC-32C */

/* Castagnoli polynomial 0x1EDC6F41, bit-reflected (the CRC is computed
 * least significant bit first, as iSCSI and TFRecord do). */
#define CRC32C_POLY_REFLECTED 0x82F63B78u
/* tensorflow crc32c.h: kMaskDelta */
#define CRC32C_MASK_DELTA 0xa282ead8u

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t mt_crc32c_extend(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
    return ~c;
}

uint32_t mt_crc32c(const void *data, size_t n) { return mt_crc32c_extend(0, data, n); }

uint32_t mt_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + CRC32C_MASK_DELTA; }

/* ======================================================== protobuf encoding */

/* Wire types (protobuf encoding): 0 varint, 1 fixed64, 2 length-delimited,
 * 5 fixed32; a field's key is (field number << 3) | wire type. */
enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

/* tensorflow.Event / Summary / Summary.Value field numbers */
enum {
    EVENT_WALL_TIME = 1,    /* double */
    EVENT_STEP = 2,         /* int64 */
    EVENT_FILE_VERSION = 3, /* string */
    EVENT_SUMMARY = 5,      /* Summary */
    SUMMARY_VALUE = 1,      /* repeated Value */
    VALUE_TAG = 1,          /* string */
    VALUE_SIMPLE_VALUE = 2  /* float */
};

struct mt_tb_writer {
    FILE *fp;
    char *path;
    uint8_t *buf; /* the record being built */
    size_t len, cap;
    int failed; /* errno of the first failed write, 0 while none */
};

static void buf_reserve(mt_tb_writer *w, size_t extra) {
    if (w->len + extra <= w->cap) return;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + extra) cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    MT_CHECK_MSG(b, "out of host memory (%zu bytes for a TensorBoard event)", cap);
    w->buf = b;
    w->cap = cap;
}

static void put_bytes(mt_tb_writer *w, const void *p, size_t n) {
    buf_reserve(w, n);
    if (n) memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_varint(mt_tb_writer *w, uint64_t v) {
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    put_bytes(w, b, n);
}

static void put_key(mt_tb_writer *w, unsigned field, unsigned wire) { put_varint(w, (uint64_t)(field << 3 | wire)); }

static void le_store(uint8_t *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static void put_double(mt_tb_writer *w, unsigned field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t b[8];
    le_store(b, u, 8);
    put_key(w, field, WT_FIXED64);
    put_bytes(w, b, 8);
}

static void put_float(mt_tb_writer *w, unsigned field, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t b[4];
    le_store(b, u, 4);
    put_key(w, field, WT_FIXED32);
    put_bytes(w, b, 4);
}

/* key + length of a length-delimited field; the caller appends the body */
static void put_len(mt_tb_writer *w, unsigned field, size_t n) {
    put_key(w, field, WT_LEN);
    put_varint(w, (uint64_t)n);
}

/* ================================================================ records */

static mt_status write_error(mt_tb_writer *w, int err) {
    if (!w->failed) w->failed = err ? err : EIO;
    return mt_error_set(MT_ERR_IO, "cannot write TensorBoard events file %s: %s", w->path, strerror(w->failed));
}

/* Frames w->buf[0, len) as one TFRecord and writes it. */
static mt_status write_record(mt_tb_writer *w) {
    if (w->failed) return write_error(w, w->failed);
    uint8_t head[12], foot[4];
    le_store(head, (uint64_t)w->len, 8);
    le_store(head + 8, mt_crc32c_mask(mt_crc32c(head, 8)), 4);
    le_store(foot, mt_crc32c_mask(mt_crc32c(w->buf, w->len)), 4);
    errno = 0;
    if (fwrite(head, 1, sizeof head, w->fp) != sizeof head || fwrite(w->buf, 1, w->len, w->fp) != w->len ||
        fwrite(foot, 1, sizeof foot, w->fp) != sizeof foot)
        return write_error(w, errno);
    return MT_OK;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mt_status mt_tb_open(mt_tb_writer **out, const char *dir) {
    *out = NULL;
    char host[256];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    long long secs = (long long)time(NULL);
    size_t plen = strlen(dir) + strlen(host) + 64;
    char *path = malloc(plen);
    MT_CHECK(path);
    int fd = -1;
    for (int k = 1; k <= 1000; k++) {
        if (k == 1)
            snprintf(path, plen, "%s/events.out.tfevents.%lld.%s", dir, secs, host);
        else
            snprintf(path, plen, "%s/events.out.tfevents.%lld.%s.%d", dir, secs, host, k);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        mt_status st = mt_error_set(MT_ERR_IO, "cannot create TensorBoard events file %s: %s", path, strerror(errno));
        free(path);
        return st;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int e = errno;
        close(fd);
        unlink(path);
        mt_status st = mt_error_set(MT_ERR_IO, "cannot open TensorBoard events file %s: %s", path, strerror(e));
        free(path);
        return st;
    }
    mt_tb_writer *w = calloc(1, sizeof *w);
    MT_CHECK(w);
    w->fp = fp;
    w->path = path;

    static const char version[] = "brain.Event:2";
    w->len = 0;
    put_double(w, EVENT_WALL_TIME, wall_now());
    put_len(w, EVENT_FILE_VERSION, sizeof version - 1);
    put_bytes(w, version, sizeof version - 1);
    mt_status st = write_record(w);
    if (st == MT_OK) st = mt_tb_flush(w);
    if (st != MT_OK) {
        fclose(w->fp);
        unlink(w->path);
        free(w->path);
        free(w->buf);
        free(w);
        return st;
    }
    *out = w;
    return MT_OK;
}

const char *mt_tb_path(const mt_tb_writer *w) { return w->path; }

mt_status mt_tb_scalar_at(mt_tb_writer *w, const char *tag, int64_t step, double value, double wall_time) {
    MT_CHECK_MSG(w && tag, "mt_tb_scalar: no writer or no tag");
    size_t tl = strlen(tag);
    /* Value {tag, simple_value}: key + length + text, key + 4 bytes */
    size_t vlen = 1 + varint_size(tl) + tl + 1 + 4;
    /* Summary {value}: key + length + Value */
    size_t slen = 1 + varint_size(vlen) + vlen;
    w->len = 0;
    put_double(w, EVENT_WALL_TIME, wall_time);
    put_key(w, EVENT_STEP, WT_VARINT);
    put_varint(w, (uint64_t)step); /* int64: negative steps take 10 bytes, as protobuf writes them */
    put_len(w, EVENT_SUMMARY, slen);
    size_t at = w->len;
    put_len(w, SUMMARY_VALUE, vlen);
    put_len(w, VALUE_TAG, tl);
    put_bytes(w, tag, tl);
    put_float(w, VALUE_SIMPLE_VALUE, (float)value);
    MT_CHECK(w->len - at == slen);
    return write_record(w);
}

mt_status mt_tb_scalar(mt_tb_writer *w, const char *tag, int64_t step, double value) {
    return mt_tb_scalar_at(w, tag, step, value, wall_now());
}

mt_status mt_tb_flush(mt_tb_writer *w) {
    if (w->failed) return write_error(w, w->failed);
    errno = 0;
    if (fflush(w->fp) != 0) return write_error(w, errno);
    return MT_OK;
}

mt_status mt_tb_close(mt_tb_writer *w) {
    if (!w) return MT_OK;
    mt_status st = MT_OK;
    errno = 0;
    int bad = fflush(w->fp) != 0;
    int e = errno;
    if (fclose(w->fp) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (w->failed || bad) st = write_error(w, w->failed ? w->failed : e);
    free(w->path);
    free(w->buf);
    free(w);
    return st;
}
