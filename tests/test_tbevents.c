/* LABELS: unit */
/* TensorBoard event files (launch/tbevents.h).
 *
 *  - CRC-32C known answers (RFC 3720 appendix B.4 and the usual check value
 *    "123456789"), against the library and against a bit-at-a-time CRC
 *    written here; extend over split buffers; the TFRecord mask.
 *  - A written file read back by an independent minimal reader in this file:
 *    TFRecord framing with both masked CRCs, then the protobuf fields of each
 *    Event (wall_time, step, file_version, summary.value.tag /
 *    simple_value), decoded field by field with unknown fields skipped. One
 *    record is also compared byte for byte with a hand-encoded payload.
 *  - The file is readable after mt_tb_flush, before mt_tb_close.
 *  - A second writer in the same directory makes a second file; the first
 *    is untouched.
 *  - Corruptions (payload byte, length byte, truncation) are detected by the
 *    reader, so the reader's checks can fail.
 *  - Errors name the events file's path: missing directory, a regular file
 *    as directory, a read-only directory (as root: /proc); a write failing
 *    (file size limit, RLIMIT_FSIZE) is reported by flush, stays reported
 *    and is reported by close.
 */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launch/fsutil.h"
#include "launch/tbevents.h"
#include "mt_test.h"

/* ------------------------------------------------- independent reader */

/* bit-at-a-time CRC-32C: reflected Castagnoli polynomial */
static uint32_t ref_crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static uint32_t ref_mask(uint32_t c) { return (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u); }

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

typedef struct {
    int has_wall, has_step, has_version, has_summary, n_values, has_value;
    double wall;
    int64_t step;
    char version[64];
    char tag[512];
    float value;
} event;

typedef struct {
    const uint8_t *p, *end;
    int bad;
} pb;

static uint64_t pb_varint(pb *b) {
    uint64_t v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (b->p >= b->end) {
            b->bad = 1;
            return 0;
        }
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) return v;
    }
    b->bad = 1;
    return 0;
}

/* Reads one field: *field, *wire; for wire 2 *sub is the body; for 0 / 1 / 5
 * *val holds the bits. Returns 0 at the end or on malformed input (b->bad). */
static int pb_field(pb *b, unsigned *field, unsigned *wire, uint64_t *val, pb *sub) {
    if (b->p >= b->end || b->bad) return 0;
    uint64_t key = pb_varint(b);
    *field = (unsigned)(key >> 3);
    *wire = (unsigned)(key & 7);
    switch (*wire) {
    case 0: *val = pb_varint(b); break;
    case 1:
    case 5: {
        int n = *wire == 1 ? 8 : 4;
        if (b->end - b->p < n) {
            b->bad = 1;
            return 0;
        }
        *val = rd_le(b->p, n);
        b->p += n;
        break;
    }
    case 2: {
        uint64_t n = pb_varint(b);
        if (b->bad || (uint64_t)(b->end - b->p) < n) {
            b->bad = 1;
            return 0;
        }
        sub->p = b->p;
        sub->end = b->p + n;
        sub->bad = 0;
        b->p += n;
        break;
    }
    default: b->bad = 1; return 0;
    }
    return !b->bad;
}

static void copy_str(char *dst, size_t cap, const pb *s) {
    size_t n = (size_t)(s->end - s->p);
    if (n >= cap) n = cap - 1;
    memcpy(dst, s->p, n);
    dst[n] = 0;
}

static int decode_value(pb *b, event *e) {
    unsigned f, w;
    uint64_t v;
    pb sub;
    while (pb_field(b, &f, &w, &v, &sub)) {
        if (f == 1 && w == 2) copy_str(e->tag, sizeof e->tag, &sub);
        else if (f == 2 && w == 5) {
            uint32_t u = (uint32_t)v;
            memcpy(&e->value, &u, 4);
            e->has_value = 1;
        }
    }
    return !b->bad;
}

static int decode_event(const uint8_t *p, size_t n, event *e) {
    memset(e, 0, sizeof *e);
    pb b = {p, p + n, 0}, sub, sub2;
    unsigned f, w;
    uint64_t v;
    while (pb_field(&b, &f, &w, &v, &sub)) {
        if (f == 1 && w == 1) {
            memcpy(&e->wall, &v, 8);
            e->has_wall = 1;
        } else if (f == 2 && w == 0) {
            e->step = (int64_t)v;
            e->has_step = 1;
        } else if (f == 3 && w == 2) {
            copy_str(e->version, sizeof e->version, &sub);
            e->has_version = 1;
        } else if (f == 5 && w == 2) {
            e->has_summary = 1;
            unsigned f2, w2;
            uint64_t v2;
            while (pb_field(&sub, &f2, &w2, &v2, &sub2))
                if (f2 == 1 && w2 == 2) {
                    e->n_values++;
                    if (!decode_value(&sub2, e)) return 0;
                }
            if (sub.bad) return 0;
        }
    }
    return !b.bad;
}

#define MAX_EVENTS 64

typedef struct {
    int n;
    event ev[MAX_EVENTS];
    size_t payload_off[MAX_EVENTS], payload_len[MAX_EVENTS];
    char err[256];
} events;

/* Parses a whole events file; returns 1, or 0 with err set. */
static int read_events(const uint8_t *d, size_t len, events *out) {
    memset(out, 0, sizeof *out);
    size_t at = 0;
    while (at < len) {
        if (len - at < 12) {
            snprintf(out->err, sizeof out->err, "record %d: truncated header", out->n);
            return 0;
        }
        uint64_t n = rd_le(d + at, 8);
        uint32_t lcrc = (uint32_t)rd_le(d + at + 8, 4);
        if (lcrc != ref_mask(ref_crc32c(d + at, 8))) {
            snprintf(out->err, sizeof out->err, "record %d: length CRC mismatch", out->n);
            return 0;
        }
        if (n > len - at - 12 || len - at - 12 - n < 4) {
            snprintf(out->err, sizeof out->err, "record %d: truncated payload", out->n);
            return 0;
        }
        const uint8_t *p = d + at + 12;
        uint32_t dcrc = (uint32_t)rd_le(p + n, 4);
        if (dcrc != ref_mask(ref_crc32c(p, (size_t)n))) {
            snprintf(out->err, sizeof out->err, "record %d: data CRC mismatch", out->n);
            return 0;
        }
        if (out->n == MAX_EVENTS) {
            snprintf(out->err, sizeof out->err, "more than %d records", MAX_EVENTS);
            return 0;
        }
        if (!decode_event(p, (size_t)n, &out->ev[out->n])) {
            snprintf(out->err, sizeof out->err, "record %d: malformed protobuf", out->n);
            return 0;
        }
        out->payload_off[out->n] = at + 12;
        out->payload_len[out->n] = (size_t)n;
        out->n++;
        at += 12 + n + 4;
    }
    return 1;
}

/* Names of the events files in dir (sorted), up to 8. */
static int list_events(const char *dir, char names[][256]) {
    int n = 0;
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    struct dirent *de;
    while ((de = readdir(dp)) && n < 8)
        if (!strncmp(de->d_name, "events.out.tfevents.", 20)) snprintf(names[n++], 256, "%s", de->d_name);
    closedir(dp);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[256];
            memcpy(t, names[j], 256);
            memcpy(names[j], names[j - 1], 256);
            memcpy(names[j - 1], t, 256);
        }
    return n;
}

/* ------------------------------------------------------------- tests */

static void test_crc(void) {
    const char *s = "123456789";
    CHECK_MSG(mt_crc32c(s, 9) == 0xE3069283u, "crc32c(\"123456789\") = %08x", mt_crc32c(s, 9));
    CHECK(ref_crc32c((const uint8_t *)s, 9) == 0xE3069283u);
    uint8_t b[32];
    memset(b, 0, 32);
    CHECK_MSG(mt_crc32c(b, 32) == 0x8A9136AAu, "32 zeros: %08x", mt_crc32c(b, 32));
    memset(b, 0xff, 32);
    CHECK_MSG(mt_crc32c(b, 32) == 0x62A8AB43u, "32 x 0xff: %08x", mt_crc32c(b, 32));
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)i;
    CHECK_MSG(mt_crc32c(b, 32) == 0x46DD794Eu, "0..31: %08x", mt_crc32c(b, 32));
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)(31 - i);
    CHECK_MSG(mt_crc32c(b, 32) == 0x113FDB5Cu, "31..0: %08x", mt_crc32c(b, 32));
    CHECK(mt_crc32c(NULL, 0) == 0);

    uint8_t r[1000];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 1000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        r[i] = (uint8_t)x;
    }
    for (size_t n = 0; n <= 1000; n += 37) {
        CHECK_MSG(mt_crc32c(r, n) == ref_crc32c(r, n), "crc32c of %zu random bytes", n);
        size_t h = n / 3;
        CHECK_MSG(mt_crc32c_extend(mt_crc32c(r, h), r + h, n - h) == mt_crc32c(r, n), "extend at %zu of %zu", h, n);
    }
    CHECK(mt_crc32c_mask(0) == 0xa282ead8u);
    CHECK(mt_crc32c_mask(0x12345678u) == ref_mask(0x12345678u));
    CHECK(mt_crc32c_mask(0x00008000u) == 0xa282ead9u); /* bit 15 rotates to bit 0 */
    CHECK(mt_crc32c_mask(0x00000001u) == 0xa284ead8u); /* bit 0 rotates to bit 17 */
}

static uint8_t *slurp(const char *path, size_t *len) {
    char *d = NULL;
    mt_status s = mt_fs_read_file(path, &d, len);
    CHECK_MSG(s == MT_OK, "read %s: %s", path, s == MT_OK ? "" : mt_error_msg());
    return (uint8_t *)d;
}

static void write_file(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f) return;
    CHECK(fwrite(d, 1, n, f) == n);
    fclose(f);
}

static void test_roundtrip(const char *dir) {
    char host[256];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[255] = 0;

    double t_before = (double)time(NULL);
    mt_tb_writer *w = NULL;
    mt_status s = mt_tb_open(&w, dir);
    CHECK_MSG(s == MT_OK, "open: %s", s == MT_OK ? "" : mt_error_msg());
    if (s != MT_OK) return;
    char path[1024];
    snprintf(path, sizeof path, "%s", mt_tb_path(w));
    const char *base = strrchr(path, '/') + 1;
    long long secs = 0;
    char rest[300] = "";
    CHECK_MSG(sscanf(base, "events.out.tfevents.%lld.%299s", &secs, rest) == 2, "file name %s", base);
    CHECK_MSG(!strcmp(rest, host), "file name %s: host %s expected", base, host);
    CHECK_MSG(secs >= (long long)t_before && secs <= (long long)time(NULL), "file name %s: time", base);
    CHECK_MSG(!strncmp(path, dir, strlen(dir)), "path %s not in %s", path, dir);

    /* the scalars: plain ones, a long tag (2-byte length varint), a big and
     * a negative step (10-byte varint), special values, UTF-8 */
    char long_tag[301];
    memset(long_tag, 'x', 300);
    memcpy(long_tag, "grp/", 4);
    long_tag[300] = 0;
    struct {
        const char *tag;
        int64_t step;
        double value;
    } sc[] = {
        {"train/loss", 1, 1.25},        {"train/loss", 2, 0.875},       {"train/lr", 2, 3e-4},
        {"val/dice_liver", 10, 0.5},    {long_tag, 11, -7.0},           {"big", (int64_t)1 << 40, 1e30},
        {"neg", -3, 0.1},               {"inf", 12, INFINITY},          {"nan", 13, NAN},
        {"val/dice_f\xc3\xa9mur", 14, 0.9},
    };
    const int ns = (int)(sizeof sc / sizeof *sc);
    for (int k = 0; k < ns; k++) {
        s = mt_tb_scalar(w, sc[k].tag, sc[k].step, sc[k].value);
        CHECK_MSG(s == MT_OK, "scalar %d: %s", k, s == MT_OK ? "" : mt_error_msg());
    }
    /* one record with a fixed wall time, compared byte for byte below */
    CHECK(mt_tb_scalar_at(w, "a", 1, 1.0, 0.0) == MT_OK);
    CHECK(mt_tb_flush(w) == MT_OK);
    double t_after = (double)time(NULL) + 1;

    /* read back before close: flushed events are in the file */
    size_t len = 0;
    uint8_t *d = slurp(path, &len);
    events *E = calloc(1, sizeof *E);
    MT_CHECK(E);
    int ok = d && read_events(d, len, E);
    CHECK_MSG(ok, "reading %s: %s", path, E->err);
    CHECK_MSG(E->n == ns + 2, "%d records, %d expected", E->n, ns + 2);
    if (ok && E->n == ns + 2) {
        event *e = &E->ev[0];
        CHECK(e->has_version && !strcmp(e->version, "brain.Event:2"));
        CHECK(e->has_wall && e->wall >= t_before && e->wall <= t_after);
        CHECK(!e->has_summary);
        for (int k = 0; k < ns; k++) {
            e = &E->ev[k + 1];
            CHECK_MSG(e->has_summary && e->n_values == 1 && e->has_value, "record %d: one summary value", k + 1);
            CHECK_MSG(!strcmp(e->tag, sc[k].tag), "record %d: tag %s, expected %s", k + 1, e->tag, sc[k].tag);
            CHECK_MSG(e->has_step && e->step == sc[k].step, "record %d: step %lld, expected %lld", k + 1,
                      (long long)e->step, (long long)sc[k].step);
            float want = (float)sc[k].value;
            CHECK_MSG(isnan(want) ? isnan(e->value) : e->value == want, "record %d: value %g, expected %g", k + 1,
                      (double)e->value, (double)want);
            CHECK_MSG(e->has_wall && e->wall >= t_before && e->wall <= t_after && e->wall >= E->ev[k].wall,
                      "record %d: wall time %.3f not in [%.0f, %.0f] or decreasing", k + 1, e->wall, t_before,
                      t_after);
            CHECK(!e->has_version);
        }
        /* Event{wall_time 0.0, step 1, summary{value{tag "a", simple_value 1.0f}}}
         * by hand: 09 <8 zero bytes> | 10 01 | 2a 0a | 0a 08 | 0a 01 'a' | 15 00 00 80 3f */
        static const uint8_t want[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x01, 0x2a, 0x0a, 0x0a, 0x08,
                                       0x0a, 0x01, 'a', 0x15, 0x00, 0x00, 0x80, 0x3f};
        int last = ns + 1;
        CHECK_MSG(E->payload_len[last] == sizeof want && !memcmp(d + E->payload_off[last], want, sizeof want),
                  "hand-encoded record differs (%zu bytes)", E->payload_len[last]);
        /* the framing of that record: length 23 and its masked CRC */
        const uint8_t *h = d + E->payload_off[last] - 12;
        CHECK(rd_le(h, 8) == sizeof want && rd_le(h + 8, 4) == ref_mask(ref_crc32c(h, 8)));
    }
    CHECK(mt_tb_close(w) == MT_OK);
    CHECK(mt_tb_close(NULL) == MT_OK);

    /* a second writer (a resumed run): a new file, the first one unchanged */
    char names[8][256];
    CHECK(list_events(dir, names) == 1);
    mt_tb_writer *w2 = NULL;
    s = mt_tb_open(&w2, dir);
    CHECK_MSG(s == MT_OK, "second open: %s", s == MT_OK ? "" : mt_error_msg());
    if (s == MT_OK) {
        CHECK(mt_tb_scalar(w2, "train/loss", 15, 0.25) == MT_OK);
        CHECK(mt_tb_close(w2) == MT_OK);
    }
    int nf = list_events(dir, names);
    CHECK_MSG(nf == 2, "%d events files after a second writer", nf);
    if (nf == 2) {
        char p1[1024], p2[1024];
        snprintf(p1, sizeof p1, "%s/%s", dir, names[0]);
        snprintf(p2, sizeof p2, "%s/%s", dir, names[1]);
        /* the first in name order is the first written (TensorBoard reads in name order) */
        CHECK_MSG(!strcmp(p1, path), "first events file in name order is %s, not %s", p1, path);
        size_t l1 = 0, l2 = 0;
        uint8_t *d1 = slurp(p1, &l1), *d2 = slurp(p2, &l2);
        CHECK_MSG(d1 && l1 == len && !memcmp(d1, d, len), "first file %s changed", p1);
        events *E2 = calloc(1, sizeof *E2);
        MT_CHECK(E2);
        CHECK_MSG(d2 && read_events(d2, l2, E2) && E2->n == 2 && E2->ev[1].step == 15 &&
                      !strcmp(E2->ev[1].tag, "train/loss") && E2->ev[1].value == 0.25f,
                  "second file %s: %s", p2, E2->err);
        free(E2);
        free(d1);
        free(d2);
        unlink(p2);
    }

    /* corruptions are detected */
    if (ok && E->n >= 3) {
        uint8_t *c = malloc(len);
        MT_CHECK(c);
        events *C = calloc(1, sizeof *C);
        MT_CHECK(C);
        char cpath[1024];
        snprintf(cpath, sizeof cpath, "%s/corrupt.bin", dir);

        memcpy(c, d, len);
        c[E->payload_off[2] + 3] ^= 0x01; /* a payload byte of record 2 */
        write_file(cpath, c, len);
        size_t cl = 0;
        uint8_t *cd = slurp(cpath, &cl);
        CHECK_MSG(cd && !read_events(cd, cl, C) && strstr(C->err, "record 2: data CRC"),
                  "payload corruption not detected (%s)", C->err);
        free(cd);

        memcpy(c, d, len);
        c[E->payload_off[1] - 12] ^= 0x10; /* the length of record 1 */
        CHECK_MSG(!read_events(c, len, C) && strstr(C->err, "record 1: length CRC"),
                  "length corruption not detected (%s)", C->err);

        memcpy(c, d, len);
        c[E->payload_off[2] - 4] ^= 0x80; /* the length's CRC itself */
        CHECK_MSG(!read_events(c, len, C) && strstr(C->err, "record 2: length CRC"),
                  "length-CRC corruption not detected (%s)", C->err);

        memcpy(c, d, len);
        c[E->payload_off[1] + E->payload_len[1]] ^= 0x01; /* the data CRC of record 1 */
        CHECK_MSG(!read_events(c, len, C) && strstr(C->err, "record 1: data CRC"),
                  "data-CRC corruption not detected (%s)", C->err);

        CHECK_MSG(!read_events(d, len - 1, C) && strstr(C->err, "truncated"), "truncation not detected (%s)",
                  C->err);
        CHECK(read_events(d, E->payload_off[2] - 12, C) && C->n == 2); /* a whole-record prefix is fine */
        unlink(cpath);
        free(C);
        free(c);
    }
    free(E);
    free(d);
    unlink(path);
}

static void expect_open_error(const char *dir, const char *why) {
    mt_tb_writer *w = (mt_tb_writer *)1;
    mt_status s = mt_tb_open(&w, dir);
    CHECK_MSG(s == MT_ERR_IO, "%s: open returned %d", why, (int)s);
    CHECK_MSG(w == NULL, "%s: writer not NULL", why);
    if (s != MT_OK) {
        const char *m = mt_error_msg();
        char want[1024];
        snprintf(want, sizeof want, "%s/events.out.tfevents.", dir);
        CHECK_MSG(strstr(m, want) != NULL, "%s: message does not name the file: %s", why, m);
        printf("%s: %s\n", why, m);
    } else {
        mt_tb_close(w);
    }
}

static void test_errors(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/missing", dir);
    expect_open_error(p, "missing directory");
    snprintf(p, sizeof p, "%s/plain_file", dir);
    write_file(p, (const uint8_t *)"x", 1);
    expect_open_error(p, "a file as directory");
    unlink(p);
    snprintf(p, sizeof p, "%s/readonly", dir);
    CHECK(mkdir(p, 0555) == 0);
    /* root writes into a 0555 directory; /proc takes new files from nobody */
    if (geteuid() != 0) expect_open_error(p, "read-only directory");
    else if (mt_fs_is_dir("/proc/self")) expect_open_error("/proc", "read-only directory (root: /proc)");
    rmdir(p);
}

/* Writes that fail: RLIMIT_FSIZE just above the file_version record makes
 * the kernel refuse the bytes (EFBIG; SIGXFSZ ignored). */
static void test_write_error(const char *dir) {
    mt_tb_writer *w = NULL;
    mt_status s = mt_tb_open(&w, dir);
    CHECK_MSG(s == MT_OK, "open: %s", s == MT_OK ? "" : mt_error_msg());
    if (s != MT_OK) return;
    char path[1024];
    snprintf(path, sizeof path, "%s", mt_tb_path(w));
    struct stat st;
    CHECK(stat(path, &st) == 0);
    struct rlimit old, lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 100;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    /* ~40 bytes per record, past 100 bytes within stdio's buffer: the error
     * comes at the latest from the flush */
    s = MT_OK;
    for (int k = 0; k < 200 && s == MT_OK; k++) s = mt_tb_scalar(w, "train/loss", k, 0.5);
    if (s == MT_OK) s = mt_tb_flush(w);
    CHECK_MSG(s == MT_ERR_IO && strstr(mt_error_msg(), path) && strstr(mt_error_msg(), "too large"),
              "write past RLIMIT_FSIZE: status %d, %s", (int)s, s == MT_OK ? "no error" : mt_error_msg());
    printf("write failure: %s\n", mt_error_msg());
    mt_error_clear();
    CHECK_MSG(mt_tb_scalar(w, "train/loss", 1000, 0.5) == MT_ERR_IO && strstr(mt_error_msg(), path),
              "a write after the failure still reports it");
    mt_error_clear();
    s = mt_tb_close(w);
    CHECK_MSG(s == MT_ERR_IO && strstr(mt_error_msg(), path), "close after a failed write: %d", (int)s);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, prev);
    unlink(path);
}

int main(void) {
    test_crc();
    char dir[] = "/tmp/mt_tbevents_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return mt_test_finish();
    }
    test_roundtrip(dir);
    test_errors(dir);
    test_write_error(dir);
    CHECK_MSG(rmdir(dir) == 0, "%s not empty at the end", dir);
    return mt_test_finish();
}
