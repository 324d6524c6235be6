/* LABELS: unit interop */
/* launch/safetensors: round trips of every dtype with metadata, byte-for-byte
 * agreement with files written by the Python `safetensors` package (bytes
 * recorded below, plus a live check when a Python with safetensors is
 * found: $MT_PYTHON or /root/torchvenv/bin/python), and corrupt or truncated
 * files rejected with errors naming the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/fsutil.h"
#include "launch/safetensors.h"
#include "mt_test.h"

static char g_dir[256];

static char *tmp_path(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static int contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *fp = fopen(path, "wb");
    MT_CHECK(fp);
    if (n) MT_CHECK(fwrite(b, 1, n, fp) == n);
    fclose(fp);
}

static int tensors_equal(const mt_tensor *a, const mt_tensor *b) {
    if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    mt_tensor *ca = mt_tensor_contiguous(a), *cb = mt_tensor_contiguous(b);
    int eq = mt_tensor_nbytes(ca) == mt_tensor_nbytes(cb) &&
             !memcmp(mt_tensor_data(ca), mt_tensor_data(cb), mt_tensor_nbytes(ca));
    mt_tensor_release(ca);
    mt_tensor_release(cb);
    return eq;
}

/* ------------------------------------------------------------ round trip */

static mt_tensor *rand_dtype(mt_dtype dt, int ndim, const int64_t *shape) {
    mt_tensor *f = mt_test_rand(ndim, shape, -3, 3);
    if (dt == MT_F32) return f;
    mt_tensor *t = mt_tensor_new(dt, ndim, shape, MT_DEVICE_CPU);
    int64_t n = mt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = mt_tensor_get_flat(f, i);
        if (dt == MT_BF16)
            ((mt_bf16 *)mt_tensor_data(t))[i] = mt_f32_to_bf16((float)v);
        else if (dt == MT_I32)
            ((int32_t *)mt_tensor_data(t))[i] = (int32_t)(v * 1e8);
        else
            ((uint8_t *)mt_tensor_data(t))[i] = (uint8_t)((v + 3) * 42);
    }
    mt_tensor_release(f);
    return t;
}

static void test_round_trip(void) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_tensor *w = rand_dtype(MT_F32, MT_SHAPE(3, 5, 7));
    mt_tensor *h = rand_dtype(MT_BF16, MT_SHAPE(11, 3));
    mt_tensor *i = rand_dtype(MT_I32, MT_SHAPE(13));
    mt_tensor *u = rand_dtype(MT_U8, MT_SHAPE(2, 3, 5, 1, 7));
    mt_tensor *base = rand_dtype(MT_F32, MT_SHAPE(4, 6));
    mt_tensor *perm = mt_tensor_permute(base, (int[]){1, 0}); /* non-contiguous */
    mt_tensor *sc = mt_scalar(-0.375f);
    mt_tensor *empty = mt_tensor_new(MT_F32, MT_SHAPE(0, 4), MT_DEVICE_CPU);
    CHECK(mt_safetensors_add(&st, "enc.0.conv.weight", w) == MT_OK);
    CHECK(mt_safetensors_add(&st, "act_bf16", h) == MT_OK);
    CHECK(mt_safetensors_add(&st, "labels", i) == MT_OK);
    CHECK(mt_safetensors_add(&st, "mask", u) == MT_OK);
    CHECK(mt_safetensors_add(&st, "transposed", perm) == MT_OK);
    CHECK(mt_safetensors_add(&st, "step", sc) == MT_OK);
    CHECK(mt_safetensors_add(&st, "nothing", empty) == MT_OK);
    /* user errors */
    CHECK(mt_safetensors_add(&st, "mask", u) == MT_ERR_INVALID && contains(mt_error_msg(), "duplicate"));
    CHECK(mt_safetensors_add(&st, "__metadata__", u) == MT_ERR_INVALID);
    CHECK(mt_safetensors_add(&st, "", u) == MT_ERR_INVALID);
    const char *tricky = "quote\" backslash\\ newline\n tab\t ctl\x01\x1f unicode \xc3\xa9\xe2\x82\xac slash/";
    mt_safetensors_set_meta(&st, "format", "pt");
    mt_safetensors_set_meta(&st, "config", "model:\n  features: [8, 16]\n");
    mt_safetensors_set_meta(&st, "tricky", tricky);
    mt_safetensors_set_meta(&st, "format", "pt2"); /* replaces */
    CHECK(!strcmp(mt_safetensors_get_meta(&st, "format"), "pt2"));

    const char *path = tmp_path("round.safetensors");
    CHECK(mt_safetensors_save(&st, path) == MT_OK);
    /* header layout */
    char *bytes;
    size_t len;
    CHECK(mt_fs_read_file(path, &bytes, &len) == MT_OK);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | (unsigned char)bytes[k];
    CHECK(hlen % 8 == 0 && hlen + 8 <= len);
    CHECK(!strncmp(bytes + 8, "{\"__metadata__\":{", 17));
    CHECK(bytes[8 + hlen - 1] == ' ' || bytes[8 + hlen - 1] == '}');
    /* order: F32 (by name) then I32, BF16, U8 */
    const char *hdr = bytes + 8;
    const char *p_empty = strstr(hdr, "\"nothing\""), *p_step = strstr(hdr, "\"step\""),
               *p_tr = strstr(hdr, "\"transposed\""), *p_w = strstr(hdr, "\"enc.0.conv.weight\""),
               *p_i = strstr(hdr, "\"labels\""), *p_h = strstr(hdr, "\"act_bf16\""), *p_u = strstr(hdr, "\"mask\"");
    CHECK(p_w && p_empty && p_step && p_tr && p_i && p_h && p_u);
    CHECK(p_w < p_empty && p_empty < p_step && p_step < p_tr && p_tr < p_i && p_i < p_h && p_h < p_u);
    CHECK(contains(hdr, "\"step\":{\"dtype\":\"F32\",\"shape\":[],"));
    CHECK(contains(hdr, "\"nothing\":{\"dtype\":\"F32\",\"shape\":[0,4],"));
    CHECK(contains(hdr, "\"transposed\":{\"dtype\":\"F32\",\"shape\":[6,4],"));
    CHECK(len == 8 + hlen + 4 * (105 + 1 + 24) + 2 * 33 + 4 * 13 + 210);

    /* load and compare */
    mt_safetensors in;
    mt_safetensors_init(&in);
    CHECK(mt_safetensors_load(&in, path) == MT_OK);
    CHECK(in.n == 7);
    CHECK(tensors_equal(mt_safetensors_find(&in, "enc.0.conv.weight"), w));
    CHECK(tensors_equal(mt_safetensors_find(&in, "act_bf16"), h));
    CHECK(tensors_equal(mt_safetensors_find(&in, "labels"), i));
    CHECK(tensors_equal(mt_safetensors_find(&in, "mask"), u));
    CHECK(tensors_equal(mt_safetensors_find(&in, "transposed"), perm));
    CHECK(tensors_equal(mt_safetensors_find(&in, "step"), sc));
    mt_tensor *e2 = mt_safetensors_find(&in, "nothing");
    CHECK(e2 && e2->ndim == 2 && e2->shape[0] == 0 && e2->shape[1] == 4);
    CHECK(mt_safetensors_find(&in, "absent") == NULL);
    CHECK(in.n_meta == 3);
    CHECK(mt_safetensors_get_meta(&in, "tricky") && !strcmp(mt_safetensors_get_meta(&in, "tricky"), tricky));
    CHECK(!strcmp(mt_safetensors_get_meta(&in, "config"), "model:\n  features: [8, 16]\n"));
    CHECK(!strcmp(mt_safetensors_get_meta(&in, "format"), "pt2"));
    CHECK(mt_safetensors_get_meta(&in, "absent") == NULL);
    /* re-serializing what was loaded gives the same bytes */
    char *again;
    size_t alen;
    CHECK(mt_safetensors_serialize(&in, &again, &alen) == MT_OK);
    CHECK(alen == len && !memcmp(again, bytes, len));
    /* parse from memory too */
    mt_safetensors mem;
    mt_safetensors_init(&mem);
    CHECK(mt_safetensors_parse(&mem, again, alen, "mem") == MT_OK && mem.n == 7);
    CHECK(tensors_equal(mt_safetensors_find(&mem, "act_bf16"), h));
    mt_safetensors_free(&mem);
    /* no metadata: no __metadata__ entry */
    mt_safetensors nometa;
    mt_safetensors_init(&nometa);
    mt_safetensors_add(&nometa, "x", i);
    char *nb;
    size_t nlen;
    CHECK(mt_safetensors_serialize(&nometa, &nb, &nlen) == MT_OK);
    CHECK(!strncmp(nb + 8, "{\"x\":{\"dtype\":\"I32\",\"shape\":[13],\"data_offsets\":[0,52]}}", 55));
    free(nb);
    mt_safetensors_free(&nometa);
    free(again);
    free(bytes);
    mt_safetensors_free(&in);
    mt_safetensors_free(&st);
    mt_tensor_release(w);
    mt_tensor_release(h);
    mt_tensor_release(i);
    mt_tensor_release(u);
    mt_tensor_release(base);
    mt_tensor_release(perm);
    mt_tensor_release(sc);
    mt_tensor_release(empty);
    /* nothing left behind by atomic writes */
    CHECK(access(tmp_path(".round.safetensors.tmp"), F_OK) != 0);
}

/* ------------------------------------------- reference bytes from Python */

/* Written by safetensors 0.8.0 (Python, torch 2.x):
 *   save({"weight": tensor([[0.5, -1.25, 3.0], [0.125, -7.0, 100.0]], float32),
 *         "bias": tensor([1.0, -2.5, 0.1875], bfloat16), "idx": tensor([7, -3], int32),
 *         "mask": tensor([[0, 1], [255, 3]], uint8), "scalar": tensor(2.0, float32)},
 *        metadata={"note": "a\"b\\c\nd\x01\t\u00e9/"}) */
static const unsigned char g_ref[] = {
    0x58, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x5f, 0x5f, 0x6d, 0x65, 0x74, 0x61,
    0x64, 0x61, 0x74, 0x61, 0x5f, 0x5f, 0x22, 0x3a, 0x7b, 0x22, 0x6e, 0x6f, 0x74, 0x65, 0x22, 0x3a,
    0x22, 0x61, 0x5c, 0x22, 0x62, 0x5c, 0x5c, 0x63, 0x5c, 0x6e, 0x64, 0x5c, 0x75, 0x30, 0x30, 0x30,
    0x31, 0x5c, 0x74, 0xc3, 0xa9, 0x2f, 0x22, 0x7d, 0x2c, 0x22, 0x73, 0x63, 0x61, 0x6c, 0x61, 0x72,
    0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x46, 0x33, 0x32, 0x22,
    0x2c, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x5b, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74,
    0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x30, 0x2c, 0x34, 0x5d,
    0x7d, 0x2c, 0x22, 0x77, 0x65, 0x69, 0x67, 0x68, 0x74, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79,
    0x70, 0x65, 0x22, 0x3a, 0x22, 0x46, 0x33, 0x32, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65,
    0x22, 0x3a, 0x5b, 0x32, 0x2c, 0x33, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66,
    0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x34, 0x2c, 0x32, 0x38, 0x5d, 0x7d, 0x2c, 0x22,
    0x69, 0x64, 0x78, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x49,
    0x33, 0x32, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x5b, 0x32, 0x5d, 0x2c,
    0x22, 0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b,
    0x32, 0x38, 0x2c, 0x33, 0x36, 0x5d, 0x7d, 0x2c, 0x22, 0x62, 0x69, 0x61, 0x73, 0x22, 0x3a, 0x7b,
    0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x42, 0x46, 0x31, 0x36, 0x22, 0x2c, 0x22,
    0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x5b, 0x33, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, 0x61,
    0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x33, 0x36, 0x2c, 0x34, 0x32,
    0x5d, 0x7d, 0x2c, 0x22, 0x6d, 0x61, 0x73, 0x6b, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70,
    0x65, 0x22, 0x3a, 0x22, 0x55, 0x38, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a,
    0x5b, 0x32, 0x2c, 0x32, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73,
    0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x34, 0x32, 0x2c, 0x34, 0x36, 0x5d, 0x7d, 0x7d, 0x20, 0x20,
    0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0xa0, 0xbf, 0x00, 0x00, 0x40, 0x40,
    0x00, 0x00, 0x00, 0x3e, 0x00, 0x00, 0xe0, 0xc0, 0x00, 0x00, 0xc8, 0x42, 0x07, 0x00, 0x00, 0x00,
    0xfd, 0xff, 0xff, 0xff, 0x80, 0x3f, 0x20, 0xc0, 0x40, 0x3e, 0x00, 0x01, 0xff, 0x03,
};

static void test_reference_bytes(void) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_tensor *w = mt_tensor_from_data(MT_F32, MT_SHAPE(2, 3), (float[]){0.5f, -1.25f, 3.0f, 0.125f, -7.0f, 100.0f});
    mt_bf16 bh[3] = {mt_f32_to_bf16(1.0f), mt_f32_to_bf16(-2.5f), mt_f32_to_bf16(0.1875f)};
    mt_tensor *b = mt_tensor_from_data(MT_BF16, MT_SHAPE(3), bh);
    mt_tensor *idx = mt_tensor_from_data(MT_I32, MT_SHAPE(2), (int32_t[]){7, -3});
    mt_tensor *m = mt_tensor_from_data(MT_U8, MT_SHAPE(2, 2), (uint8_t[]){0, 1, 255, 3});
    mt_tensor *s = mt_scalar(2.0f);
    /* insertion order differs from the file's: the writer sorts */
    mt_safetensors_add(&st, "mask", m);
    mt_safetensors_add(&st, "weight", w);
    mt_safetensors_add(&st, "bias", b);
    mt_safetensors_add(&st, "scalar", s);
    mt_safetensors_add(&st, "idx", idx);
    mt_safetensors_set_meta(&st, "note", "a\"b\\c\nd\x01\t\xc3\xa9/");
    char *buf;
    size_t len;
    CHECK(mt_safetensors_serialize(&st, &buf, &len) == MT_OK);
    CHECK_MSG(len == sizeof g_ref && !memcmp(buf, g_ref, len), "serialized bytes differ from safetensors' (%zu vs %zu)",
              len, sizeof g_ref);
    free(buf);
    /* and the reference file loads with the right values */
    const char *path = tmp_path("ref.safetensors");
    write_bytes(path, g_ref, sizeof g_ref);
    mt_safetensors in;
    mt_safetensors_init(&in);
    CHECK(mt_safetensors_load(&in, path) == MT_OK);
    CHECK(in.n == 5);
    CHECK(tensors_equal(mt_safetensors_find(&in, "weight"), w));
    CHECK(tensors_equal(mt_safetensors_find(&in, "bias"), b));
    CHECK(tensors_equal(mt_safetensors_find(&in, "idx"), idx));
    CHECK(tensors_equal(mt_safetensors_find(&in, "mask"), m));
    CHECK(tensors_equal(mt_safetensors_find(&in, "scalar"), s));
    CHECK(mt_safetensors_find(&in, "bias") && mt_tensor_get_flat(mt_safetensors_find(&in, "bias"), 2) == 0.1875);
    CHECK(!strcmp(mt_safetensors_get_meta(&in, "note"), "a\"b\\c\nd\x01\t\xc3\xa9/"));
    mt_safetensors_free(&in);
    mt_safetensors_free(&st);
    mt_tensor_release(w);
    mt_tensor_release(b);
    mt_tensor_release(idx);
    mt_tensor_release(m);
    mt_tensor_release(s);
}

/* -------------------------------------------- live interop with Python */

static const char *find_python(void) {
    static char cmd[600];
    const char *cands[2] = {getenv("MT_PYTHON"), "/root/torchvenv/bin/python"};
    for (int k = 0; k < 2; k++) {
        if (!cands[k] || access(cands[k], X_OK)) continue;
        /* cheap probe: safetensors + torch installed (without importing torch, which is slow) */
        snprintf(cmd, sizeof cmd,
                 "'%s' -c 'import importlib.util as u, sys; "
                 "sys.exit(not (u.find_spec(\"safetensors\") and u.find_spec(\"torch\")))' >/dev/null 2>&1",
                 cands[k]);
        if (system(cmd) == 0) return cands[k];
    }
    return NULL;
}

static void test_python_live(void) {
    const char *py = find_python();
    if (!py) {
        printf("note: no Python with safetensors + torch found; live interop check skipped "
               "(the recorded reference bytes were checked)\n");
        return;
    }
    const char *script = tmp_path("interop.py");
    FILE *fp = fopen(script, "w");
    MT_CHECK(fp);
    fputs("import sys, torch\n"
          "from safetensors.torch import load_file, save_file\n"
          "ours, resaved, theirs = sys.argv[1:4]\n"
          "from safetensors import safe_open\n"
          "with safe_open(ours, 'pt') as f: meta = f.metadata()\n"
          "save_file(load_file(ours), resaved, metadata=meta)\n"
          "g = torch.Generator().manual_seed(7)\n"
          "t = {'a.weight': torch.randn(5, 3, 3, 3, 2, generator=g),\n"
          "     'a.bias': torch.randn(5, generator=g).to(torch.bfloat16),\n"
          "     'bn.num_batches_tracked': torch.tensor(12345, dtype=torch.int64),\n"
          "     'ids': torch.randint(-1000, 1000, (7, 3), generator=g, dtype=torch.int32),\n"
          "     'm': torch.randint(0, 256, (9,), generator=g, dtype=torch.uint8),\n"
          "     'd': torch.randn(4, generator=g, dtype=torch.float64),\n"
          "     'h': torch.randn(6, generator=g).to(torch.float16),\n"
          "     'flag': torch.tensor([True, False, True])}\n"
          "save_file(t, theirs, metadata={'format': 'pt'})\n"
          "with open(theirs + '.txt', 'w') as out:\n"
          "    for k in sorted(t):\n"
          "        out.write(k + ' ' + ' '.join(repr(float(x)) for x in t[k].flatten().tolist()) + '\\n')\n",
          fp);
    fclose(fp);

    /* ours: every native dtype, one metadata key (Python keeps it in a hash map) */
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_tensor *a = rand_dtype(MT_F32, MT_SHAPE(4, 3, 5)), *b = rand_dtype(MT_BF16, MT_SHAPE(7)),
              *c = rand_dtype(MT_I32, MT_SHAPE(2, 9)), *d = rand_dtype(MT_U8, MT_SHAPE(3, 3, 3));
    mt_safetensors_add(&st, "zeta.w", a);
    mt_safetensors_add(&st, "alpha.b", b);
    mt_safetensors_add(&st, "count", c);
    mt_safetensors_add(&st, "bytes", d);
    mt_safetensors_set_meta(&st, "config", "run:\n  name: \"x\\\"y\"\n");
    const char *ours = tmp_path("ours.safetensors"), *resaved = tmp_path("resaved.safetensors"),
               *theirs = tmp_path("theirs.safetensors");
    CHECK(mt_safetensors_save(&st, ours) == MT_OK);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s' '%s'", py, script, ours, resaved, theirs);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "python interop script failed (%d)", rc);
    if (rc) goto done;
    {
        char *x, *y;
        size_t nx, ny;
        CHECK(mt_fs_read_file(ours, &x, &nx) == MT_OK && mt_fs_read_file(resaved, &y, &ny) == MT_OK);
        CHECK_MSG(nx == ny && !memcmp(x, y, nx), "Python re-saved our file with different bytes");
        free(x);
        free(y);
    }
    {
        /* their file: values as Python printed them; F64/F16 -> F32, I64 -> I32, BOOL -> U8 */
        mt_safetensors in;
        mt_safetensors_init(&in);
        CHECK(mt_safetensors_load(&in, theirs) == MT_OK);
        CHECK(in.n == 8 && !strcmp(mt_safetensors_get_meta(&in, "format"), "pt"));
        char txt[600];
        snprintf(txt, sizeof txt, "%s.txt", theirs);
        FILE *f = fopen(txt, "r");
        CHECK(f != NULL);
        char line[65536];
        int lines = 0, ok = 1;
        while (f && fgets(line, sizeof line, f)) {
            char *save = NULL, *name = strtok_r(line, " \n", &save);
            mt_tensor *t = mt_safetensors_find(&in, name);
            if (!t) {
                ok = 0;
                continue;
            }
            int64_t k = 0;
            for (char *tok; (tok = strtok_r(NULL, " \n", &save)); k++) {
                double want = strtod(tok, NULL);
                double got = mt_tensor_get_flat(t, k);
                if (!strcmp(name, "d")) want = (double)(float)want;
                if (got != want) ok = 0;
            }
            if (k != mt_tensor_numel(t)) ok = 0;
            lines++;
        }
        if (f) fclose(f);
        CHECK_MSG(ok && lines == 8, "values of the Python-written file differ");
        mt_tensor *nb = mt_safetensors_find(&in, "bn.num_batches_tracked");
        CHECK(nb && nb->dtype == MT_I32 && nb->ndim == 0 && mt_tensor_item(nb) == 12345);
        mt_tensor *fl = mt_safetensors_find(&in, "flag");
        CHECK(fl && fl->dtype == MT_U8 && mt_tensor_get_flat(fl, 1) == 0 && mt_tensor_get_flat(fl, 2) == 1);
        mt_safetensors_free(&in);
    }
done:
    mt_safetensors_free(&st);
    mt_tensor_release(a);
    mt_tensor_release(b);
    mt_tensor_release(c);
    mt_tensor_release(d);
}

/* ----------------------------------------------------- corrupt files */

/* A file from header JSON (padded here) and data bytes. */
static const char *make_file(const char *name, const char *json, const void *data, size_t dlen) {
    size_t hl = strlen(json);
    size_t padded = (hl + 7) / 8 * 8;
    size_t total = 8 + padded + dlen;
    unsigned char *b = calloc(total, 1);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    memcpy(b + 8, json, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    if (dlen) memcpy(b + 8 + padded, data, dlen);
    const char *path = tmp_path(name);
    write_bytes(path, b, total);
    free(b);
    return path;
}

/* Loading must fail with `code` and a message naming the file and containing `what`. */
static void expect_bad(const char *path, mt_status code, const char *what) {
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_error_clear();
    mt_status s = mt_safetensors_load(&st, path);
    CHECK_MSG(s == code && contains(mt_error_msg(), path) && contains(mt_error_msg(), what),
              "%s: status %d (want %d), message \"%s\" (want \"%s\")", path, s, code, mt_error_msg(), what);
    CHECK(st.n == 0 && st.n_meta == 0);
    mt_safetensors_free(&st);
}

static void test_corrupt(void) {
    float data[6] = {1, 2, 3, 4, 5, 6};
    const char *ok_json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    /* sanity: the helper makes a valid file */
    {
        mt_safetensors st;
        mt_safetensors_init(&st);
        CHECK(mt_safetensors_load(&st, make_file("ok.st", ok_json, data, 24)) == MT_OK && st.n == 1);
        mt_safetensors_free(&st);
    }
    expect_bad(tmp_path("missing.safetensors"), MT_ERR_IO, "cannot open");
    write_bytes(tmp_path("short.st"), "\x10\0\0", 3);
    expect_bad(tmp_path("short.st"), MT_ERR_FORMAT, "truncated");
    /* header length beyond the file */
    {
        unsigned char b[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
        write_bytes(tmp_path("hlen.st"), b, 16);
        expect_bad(tmp_path("hlen.st"), MT_ERR_FORMAT, "truncated");
        unsigned char big[16] = {0, 0, 0, 0, 1, 0, 0, 0, '{', '}'};
        write_bytes(tmp_path("huge.st"), big, 16);
        expect_bad(tmp_path("huge.st"), MT_ERR_FORMAT, "exceeds");
    }
    /* data cut short */
    {
        char *full;
        size_t n;
        CHECK(mt_fs_read_file(tmp_path("ok.st"), &full, &n) == MT_OK);
        write_bytes(tmp_path("cut.st"), full, n - 5);
        expect_bad(tmp_path("cut.st"), MT_ERR_FORMAT, "beyond the data block");
        write_bytes(tmp_path("cut2.st"), full, 20);
        expect_bad(tmp_path("cut2.st"), MT_ERR_FORMAT, "truncated");
        free(full);
    }
    expect_bad(make_file("json1.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}", data, 24),
               MT_ERR_FORMAT, "bad JSON header");
    expect_bad(make_file("json2.st", "{\"a\":{\"dtype\":F32,\"shape\":[2,3],\"data_offsets\":[0,24]}}", data, 24),
               MT_ERR_FORMAT, "bad JSON header");
    expect_bad(make_file("json3.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}} x", data, 24),
               MT_ERR_FORMAT, "trailing");
    expect_bad(make_file("json4.st", "[1,2]", data, 24), MT_ERR_FORMAT, "JSON object expected");
    expect_bad(make_file("json5.st", "{\"a\\q\":{}}", data, 24), MT_ERR_FORMAT, "bad escape");
    expect_bad(make_file("dtype.st", "{\"a\":{\"dtype\":\"Q8\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", data, 24),
               MT_ERR_FORMAT, "dtype \"Q8\"");
    expect_bad(make_file("count.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", data, 20),
               MT_ERR_FORMAT, "shape needs 24");
    expect_bad(make_file("count2.st", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", data, 24),
               MT_ERR_FORMAT, "shape needs 12");
    expect_bad(make_file("range.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]}}", data, 24),
               MT_ERR_FORMAT, "beyond the data block");
    expect_bad(make_file("order.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[24,0]}}", data, 24),
               MT_ERR_FORMAT, "end before begin");
    expect_bad(make_file("overlap.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", data, 24),
               MT_ERR_FORMAT, "overlap \"a\"");
    expect_bad(make_file("gap.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", data, 20),
               MT_ERR_FORMAT, "gap");
    {
        float more[8] = {0};
        expect_bad(make_file("tail2.st", ok_json, more, 32), MT_ERR_FORMAT, "cover 24");
    }
    expect_bad(make_file("dup.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", data, 24),
               MT_ERR_FORMAT, "given twice");
    expect_bad(make_file("meta.st", "{\"__metadata__\":{\"k\":3},\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}",
                         data, 24), MT_ERR_FORMAT, "not a string");
    expect_bad(make_file("field.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24],\"x\":1}}", data, 24),
               MT_ERR_FORMAT, "unknown field \"x\"");
    expect_bad(make_file("shape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-6],\"data_offsets\":[0,24]}}", data, 24),
               MT_ERR_FORMAT, "shape[0]");
    expect_bad(make_file("nofield.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[6]}}", data, 24), MT_ERR_FORMAT,
               "lacks \"data_offsets\"");
    expect_bad(make_file("i64.st", "{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                         (int64_t[]){(int64_t)1 << 40}, 8), MT_ERR_FORMAT, "does not fit");
    /* a directory is not a file */
    expect_bad(g_dir, MT_ERR_IO, "directory");
}

/* escapes and unicode in keys decode; conversions of foreign dtypes */
static void test_parser_details(void) {
    double dv[2] = {0.1, -2.5};
    uint16_t hv[3] = {0x3C00, 0xC000, 0x0001}; /* 1, -2, smallest subnormal */
    const char *path = make_file("conv.st",
                                 "{ \"__metadata__\" : { \"k\\u00e9\\ud83d\\ude00\" : \"v\\/\\n\" } ,\n"
                                 "  \"d\": {\"shape\": [2], \"dtype\": \"F64\", \"data_offsets\": [0, 16]},\n"
                                 "  \"h\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [16, 22]}}",
                                 NULL, 0);
    /* rebuild with data */
    char *b;
    size_t n;
    CHECK(mt_fs_read_file(path, &b, &n) == MT_OK);
    unsigned char *full = malloc(n + 22);
    memcpy(full, b, n);
    memcpy(full + n, dv, 16);
    memcpy(full + n + 16, hv, 6);
    write_bytes(path, full, n + 22);
    free(full);
    free(b);
    mt_safetensors st;
    mt_safetensors_init(&st);
    CHECK(mt_safetensors_load(&st, path) == MT_OK);
    CHECK(st.n_meta == 1 && !strcmp(st.meta_keys[0], "k\xc3\xa9\xf0\x9f\x98\x80") && !strcmp(st.meta_values[0], "v/\n"));
    mt_tensor *d = mt_safetensors_find(&st, "d"), *h = mt_safetensors_find(&st, "h");
    CHECK(d && d->dtype == MT_F32 && mt_tensor_get_flat(d, 0) == (double)0.1f && mt_tensor_get_flat(d, 1) == -2.5);
    CHECK(h && h->dtype == MT_F32 && mt_tensor_get_flat(h, 0) == 1.0 && mt_tensor_get_flat(h, 1) == -2.0 &&
          mt_tensor_get_flat(h, 2) == ldexp(1.0, -24));
    mt_safetensors_free(&st);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mt_test_safetensors_XXXXXX");
    MT_CHECK(mkdtemp(g_dir));
    mt_test_seed(11);
    test_round_trip();
    test_reference_bytes();
    test_corrupt();
    test_parser_details();
    test_python_live();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return mt_test_finish();
}
