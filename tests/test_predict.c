/* LABELS: integration */
/* launch/predict + launch/evaluate + the weight-file metadata, end to end on
 * a synthetic MSD folder in /tmp (3 single-channel cases of 20 x 24 x 18
 * voxels (D, H, W) at 1.5 x 1 x 1 mm, prepared to 1 mm so that resampling
 * happens; case_0 has a zero border to crop) and a tiny random UNet3D:
 *  - the plan <-> JSON round trip (non-finite clip bounds included);
 *  - mt_weights_save / mt_weights_load: plan, channel and class names,
 *    weights; a checkpoint loads too; errors name the file (not medtrain,
 *    missing "config", shape mismatch, truncated); a file from another
 *    medtrain version loads with the settings this one does not know
 *    skipped and noted, unless they define the model;
 *  - `medtrain predict` (the real executable): a file -> a NIfTI with the
 *    input's header geometry, u8 labels in [0, K), equal to the in-process
 *    mt_predict_case; a folder -> one file per case; without resampling or
 *    cropping the prediction equals argmax of direct sliding-window
 *    inference on the preprocessed grid;
 *  - evaluate with an oracle predictor (the reference itself) through the
 *    real reference / metrics / report path: Dice 1, HD95 0, on a store
 *    (original labels, then, with source_dir gone, inverted store labels)
 *    and on a dataset folder; `medtrain evaluate` with the model;
 *  - bad input: missing / truncated / foreign weights, a non-NIfTI input, a
 *    wrong channel count, a plan-less weight file on raw NIfTI, an unknown
 *    fold, an unwritable output: exit status, a message naming the culprit,
 *    and no output file. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/json.h"
#include "data/h5store.h"
#include "data/nifti.h"
#include "data/preprocess.h"
#include "eval/postprocess.h"
#include "eval/sliding_window.h"
#include "launch/checkpoint.h"
#include "launch/evaluate.h"
#include "launch/fsutil.h"
#include "launch/predict.h"
#include "launch/prepare.h"
#include "launch/train.h"
#include "mt_test.h"

#define NCASE 3
#define K 3

static char g_dir[] = "/tmp/mt_test_predict_XXXXXX";
static const char *g_bin;
static char *g_err;

static char *P(const char *rel) {
    static char buf[16][700];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 700, "%s/%s", g_dir, rel);
    return p;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    MT_CHECK(f);
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------------------ data */

static const int64_t g_shape[3] = {20, 24, 18};
static const double g_spacing[3] = {1.5, 1.0, 1.0};

static void write_nifti(const char *path, const mt_tensor *t /* (D, H, W) or (C, D, H, W) */, const double sp[3],
                        int k) {
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    double a[4][4] = {{-sp[2], 0, 0, 12.5 + k}, {0, sp[1], 0.05, -3}, {0, 0, sp[0], 7}, {0, 0, 0, 1}};
    mt_nifti_set_sform(&img.hdr, (const double(*)[4])a, 2);
    mt_nifti_set_qform(&img.hdr, (const double(*)[4])a, 1);
    img.hdr.pixdim[1] = sp[2];
    img.hdr.pixdim[2] = sp[1];
    img.hdr.pixdim[3] = sp[0];
    img.data = (mt_tensor *)t;
    mt_status st = mt_nifti_write(path, &img, 1, 1);
    CHECK_MSG(st == MT_OK, "writing %s: %s", path, mt_error_msg());
}

/* image (1, D, H, W) f32 and label (1, D, H, W) u8 of case k; border: zero frame width. */
static void make_case(mt_tensor **image, mt_tensor **label, const int64_t shape[3], int k, int border) {
    int64_t D = shape[0], H = shape[1], W = shape[2];
    *image = mt_tensor_zeros(MT_F32, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
    *label = mt_tensor_zeros(MT_U8, 4, (int64_t[]){1, D, H, W}, MT_DEVICE_CPU);
    float *x = MT_F32P(*image);
    uint8_t *y = mt_tensor_data(*label);
    mt_rng r;
    mt_rng_init(&r, 50 + (uint64_t)k);
    for (int64_t d = 0; d < D; d++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                int64_t i = (d * H + h) * W + w;
                if (d < border || h < border || w < border || d >= D - border || h >= H - border || w >= W - border)
                    continue;
                double r1 = pow(d - D / 2.0 + 2, 2) + pow(h - H / 2.0, 2) + pow(w - W / 2.0 - 2, 2);
                double r2 = pow(d - D / 2.0 - 3, 2) + pow(h - H / 2.0 + 4, 2) + pow(w - W / 2.0 + 3, 2);
                uint8_t lab = r1 <= 16 + k ? 1 : (r2 <= 9 ? 2 : 0);
                y[i] = lab;
                x[i] = (float)(100 + 50 * lab + 10 * sin(0.3 * d + 0.2 * w) + 5 * mt_rng_uniform(&r));
            }
}

static void write_dataset(void) {
    mkdir(P("ds"), 0700);
    mkdir(P("ds/imagesTr"), 0700);
    mkdir(P("ds/labelsTr"), 0700);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "{\"name\": \"Synth\", \"modality\": {\"0\": \"MRI\"},\n"
                          " \"labels\": {\"0\": \"background\", \"1\": \"front\", \"2\": \"back\"},\n"
                          " \"numTraining\": %d, \"training\": [",
                     NCASE);
    for (int k = 0; k < NCASE; k++) {
        mt_tensor *im, *lb;
        make_case(&im, &lb, g_shape, k, k == 0 ? 2 : 0);
        char rel[64];
        snprintf(rel, sizeof rel, "ds/imagesTr/case_%d.nii.gz", k);
        mt_tensor *sq = mt_tensor_squeeze(im, 0);
        write_nifti(P(rel), sq, g_spacing, k);
        mt_tensor_release(sq);
        snprintf(rel, sizeof rel, "ds/labelsTr/case_%d.nii.gz", k);
        sq = mt_tensor_squeeze(lb, 0);
        write_nifti(P(rel), sq, g_spacing, k);
        mt_tensor_release(sq);
        mt_tensor_release(im);
        mt_tensor_release(lb);
        mt_strbuf_printf(&sb, "%s\n  {\"image\": \"./imagesTr/case_%d.nii.gz\", \"label\": \"./labelsTr/case_%d.nii.gz\"}",
                         k ? "," : "", k, k);
    }
    mt_strbuf_puts(&sb, "\n]}\n");
    char *t = mt_strbuf_take(&sb);
    write_text(P("ds/dataset.json"), t);
    free(t);
    write_text(P("ds/splits.json"), "{\"holdout\": [\"case_2\"], \"dev\": [\"case_0\", \"case_1\"],\n"
                                    " \"folds\": [{\"train\": [\"case_0\"], \"val\": [\"case_1\"]},\n"
                                    "           {\"train\": [\"case_1\"], \"val\": [\"case_0\"]}]}\n");
}

/* ------------------------------------------------------------ CLI */

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char args[3000], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >out.txt 2>err.txt", g_dir, g_bin, args);
    int st = system(cmd);
    free(g_err);
    size_t n;
    if (mt_fs_read_file(P("err.txt"), &g_err, &n) != MT_OK) g_err = strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void expect_run(int line, int rc, int code, const char *in_err) {
    int ok = rc == code && (!in_err || strstr(g_err, in_err));
    mt_test_check(ok, __FILE__, line, "exit %d (want %d), stderr: %s  wanted: %s", rc, code, g_err, in_err ? in_err : "-");
}
#define EXPECT_RUN(code, in_err, ...) expect_run(__LINE__, run(__VA_ARGS__), (code), (in_err))

/* Number of entries (hidden ones included) of a folder, -1 if absent. */
static int count_entries(const char *dir) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | wc -l > '%s/count.txt'; test -d '%s'", dir, g_dir, dir);
    if (system(cmd) != 0) return -1;
    char *t;
    size_t n;
    if (mt_fs_read_file(P("count.txt"), &t, &n) != MT_OK) return -1;
    int c = atoi(t);
    free(t);
    return c;
}

/* ------------------------------------------------------------ checks */

static void check_plan_json(void) {
    mt_prep_plan p;
    memset(&p, 0, sizeof p);
    p.num_channels = 2;
    p.target_spacing[0] = 2.5;
    p.target_spacing[1] = 0.7812500001;
    p.target_spacing[2] = 1.0 / 3.0;
    p.order_image = MT_INTERP_CUBIC;
    p.order_label = MT_INTERP_LINEAR;
    p.order_aniso = MT_INTERP_NEAREST;
    p.aniso_threshold = 3;
    p.norm[0] = (mt_norm_params){MT_NORM_SCHEME_CT, 0, 41.25, 123.456789012345, -1000.5, 2999.75};
    p.norm[1] = (mt_norm_params){MT_NORM_SCHEME_ZSCORE, 1, 0, 1, -HUGE_VAL, HUGE_VAL};
    char *j = mt_prep_plan_to_json(&p);
    mt_prep_plan q;
    mt_status st = mt_prep_plan_from_json(&q, j, "plan.json");
    CHECK_MSG(st == MT_OK, "plan from json: %s", mt_error_msg());
    CHECK(q.num_channels == 2 && q.order_image == p.order_image && q.order_label == p.order_label &&
          q.order_aniso == p.order_aniso && q.aniso_threshold == 3);
    for (int a = 0; a < 3; a++) CHECK(q.target_spacing[a] == p.target_spacing[a]);
    for (int c = 0; c < 2; c++)
        CHECK_MSG(q.norm[c].scheme == p.norm[c].scheme && q.norm[c].use_mask == p.norm[c].use_mask &&
                      q.norm[c].mean == p.norm[c].mean && q.norm[c].std == p.norm[c].std &&
                      q.norm[c].clip_lo == p.norm[c].clip_lo && q.norm[c].clip_hi == p.norm[c].clip_hi,
                  "norm[%d] round trip: %s", c, j);
    CHECK(strstr(j, "null") != NULL); /* infinite clip bounds */
    free(j);
    st = mt_prep_plan_from_json(&q, "{\"num_channels\": 1, \"target_spacing\": [1, 1]}", "bad.json");
    CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "bad.json:1:") && strstr(mt_error_msg(), "target_spacing"),
              "bad plan: %s", mt_error_msg());
}

static mt_config *tiny_config(const char *features) {
    char y[512];
    snprintf(y, sizeof y,
             "model:\n  features: %s\n  in_channels: 1\n  out_channels: 3\ndata:\n  patch_size: [16, 16, 16]\n"
             "  source: hdf5\n  hdf5:\n    path: store.h5\n",
             features);
    mt_config *cfg = NULL;
    mt_status st = mt_config_parse_string(&cfg, y, "tiny.yaml", 0, NULL);
    CHECK_MSG(st == MT_OK, "config: %s", mt_error_msg());
    return cfg;
}

static mt_module *tiny_model(const mt_config *cfg, uint64_t seed) {
    mt_unet3d_config mc;
    MT_CHECK(mt_train_model_config(cfg, &mc) == MT_OK);
    mt_module *m = NULL;
    MT_CHECK(mt_unet3d_new(&m, &mc, seed) == MT_OK);
    return m;
}

static int tensors_equal(const mt_tensor *a, const mt_tensor *b) {
    if (mt_tensor_numel(a) != mt_tensor_numel(b) || a->dtype != b->dtype) return 0;
    mt_tensor *ca = mt_tensor_contiguous(a), *cb = mt_tensor_contiguous(b);
    int eq = !memcmp(mt_tensor_data(ca), mt_tensor_data(cb), mt_tensor_nbytes(ca));
    mt_tensor_release(ca);
    mt_tensor_release(cb);
    return eq;
}

static void check_same_geometry(const mt_nifti_header *a, const mt_nifti_header *b, const char *what) {
    int ok = a->ndim == 3 && b->qform_code == a->qform_code && b->sform_code == a->sform_code;
    for (int i = 1; i <= 3; i++) ok &= a->dim[i] == b->dim[i] && a->pixdim[i] == b->pixdim[i];
    ok &= a->pixdim[0] == b->pixdim[0];
    for (int i = 0; i < 4; i++) ok &= a->srow_x[i] == b->srow_x[i] && a->srow_y[i] == b->srow_y[i] && a->srow_z[i] == b->srow_z[i];
    ok &= a->quatern_b == b->quatern_b && a->quatern_c == b->quatern_c && a->quatern_d == b->quatern_d;
    ok &= a->qoffset_x == b->qoffset_x && a->qoffset_y == b->qoffset_y && a->qoffset_z == b->qoffset_z;
    CHECK_MSG(ok, "%s: header geometry differs from the input's", what);
}

typedef struct {
    int calls;
} oracle_ctx;

static mt_status oracle(void *ctx, mt_tensor **pred, const char *id, const mt_tensor *ref) {
    (void)id;
    ((oracle_ctx *)ctx)->calls++;
    *pred = mt_tensor_clone(ref);
    return MT_OK;
}

static void check_perfect(const mt_eval_results *res, int n_cases, const char *what) {
    CHECK_MSG(res->n_cases == n_cases && res->n_classes == K - 1, "%s: %d cases, %d classes", what, res->n_cases,
              res->n_classes);
    for (int k = 0; k < res->n_classes; k++) {
        mt_eval_stat d = mt_eval_results_stat(res, k, MT_METRIC_DICE), h = mt_eval_results_stat(res, k, MT_METRIC_HD95);
        CHECK_MSG(d.mean == 1.0 && h.mean == 0.0, "%s: class %d Dice %g HD95 %g", what, k + 1, d.mean, h.mean);
    }
}

static mt_json *read_json(const char *path) {
    mt_json *j = NULL;
    mt_status st = mt_json_parse_file(&j, path);
    CHECK_MSG(st == MT_OK, "%s: %s", path, mt_error_msg());
    return j;
}

int main(void) {
    MT_CHECK(mkdtemp(g_dir));
    g_bin = getenv("MT_MEDTRAIN");
    int have_bin = g_bin && !access(g_bin, X_OK);
    mt_status st;

    check_plan_json();

    /* ---- data, store, model, weight files ---- */
    write_dataset();
    mt_prepare_options po;
    mt_prepare_options_default(&po);
    po.progress = 0;
    po.num_threads = 1;
    po.has_spacing = 1;
    po.spacing[0] = po.spacing[1] = po.spacing[2] = 1.0;
    st = mt_prepare_run(P("ds"), P("store.h5"), &po);
    CHECK_MSG(st == MT_OK, "prepare: %s", mt_error_msg());
    mt_h5store *store = NULL;
    st = mt_h5store_open(&store, P("store.h5"));
    CHECK_MSG(st == MT_OK, "open store: %s", mt_error_msg());
    if (st != MT_OK) return mt_test_finish();
    const mt_h5store_meta *meta = mt_h5store_get_meta(store);
    mt_config *cfg = tiny_config("[4, 8]");
    mt_module *model = tiny_model(cfg, 7);
    const char *names[K] = {"background", "front", "back"};
    st = mt_weights_save(P("w.safetensors"), cfg, model, K, names, "zscore", meta);
    CHECK_MSG(st == MT_OK, "save: %s", mt_error_msg());
    st = mt_weights_save(P("noplan.safetensors"), cfg, model, K, names, "per-case z-score", NULL);
    CHECK_MSG(st == MT_OK, "save: %s", mt_error_msg());

    mt_weights w;
    st = mt_weights_load(P("w.safetensors"), &w);
    CHECK_MSG(st == MT_OK, "load: %s", mt_error_msg());
    if (st != MT_OK) return mt_test_finish();
    CHECK(w.has_plan && !w.is_checkpoint && w.num_classes == K && w.in_channels == 1 && w.patch[0] == 16);
    CHECK(!strcmp(w.class_names[2], "back") && !strcmp(w.channel_names[0], "MRI") && !strcmp(w.dataset_name, "Synth"));
    CHECK(w.plan.num_channels == 1 && w.plan.target_spacing[0] == 1.0 && w.plan.norm[0].scheme == meta->plan.norm[0].scheme &&
          w.plan.norm[0].clip_hi == HUGE_VAL && w.plan.order_image == meta->plan.order_image);
    {
        mt_named_tensors a = {0}, b = {0};
        mt_module_state_dict(model, &a);
        mt_module_state_dict(w.model, &b);
        int eq = a.n == b.n;
        for (int i = 0; i < a.n && eq; i++) eq = tensors_equal(a.items[i].tensor, b.items[i].tensor);
        CHECK_MSG(eq, "loaded weights differ");
        mt_named_tensors_free(&a);
        mt_named_tensors_free(&b);
    }
    /* a checkpoint loads too (no plan) */
    {
        mt_named_tensors params = {0};
        mt_module_named_parameters(model, &params);
        mt_tensor **ps = malloc(sizeof *ps * (size_t)params.n);
        for (int i = 0; i < params.n; i++) ps[i] = params.items[i].tensor;
        mt_optim opt;
        MT_CHECK(mt_optim_init_sgd(&opt, params.n, ps, 0.01, 0.9, 0, 0, 1) == MT_OK);
        mt_train_state ts;
        memset(&ts, 0, sizeof ts);
        ts.step = 3;
        mt_safetensors ck;
        mt_safetensors_init(&ck);
        MT_CHECK(mt_checkpoint_build(&ck, cfg, model, &opt, &ts) == MT_OK);
        MT_CHECK(mt_safetensors_save(&ck, P("ckpt.safetensors")) == MT_OK);
        mt_safetensors_free(&ck);
        mt_optim_free(&opt);
        free(ps);
        mt_named_tensors_free(&params);
        mt_weights cw;
        st = mt_weights_load(P("ckpt.safetensors"), &cw);
        CHECK_MSG(st == MT_OK && cw.is_checkpoint && !cw.has_plan && cw.num_classes == K, "checkpoint: %s",
                  st ? mt_error_msg() : "wrong fields");
        if (st == MT_OK) {
            mt_tensor *lb = NULL, *im = mt_tensor_zeros(MT_F32, 4, (int64_t[]){1, 8, 8, 8}, MT_DEVICE_CPU);
            double sp[3] = {1, 1, 1}, af[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
            st = mt_predict_case(&lb, &cw, im, sp, (const double(*)[4])af, NULL, NULL);
            CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "ckpt.safetensors has no preprocessing plan"), "%s",
                      mt_error_msg());
            mt_tensor_release(im);
        }
        mt_weights_free(&cw);
    }
    /* loader errors name the file */
    {
        mt_weights bad;
        mt_config *cfg2 = tiny_config("[4, 16]");
        MT_CHECK(mt_weights_save(P("mismatch.safetensors"), cfg2, model, K, names, NULL, NULL) == MT_OK);
        st = mt_weights_load(P("mismatch.safetensors"), &bad);
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "mismatch.safetensors") && strstr(mt_error_msg(), "shape"),
                  "mismatch: %s", mt_error_msg());
        mt_config_free(cfg2);
        mt_safetensors s2;
        mt_safetensors_init(&s2);
        mt_safetensors_set_meta(&s2, "format", "medtrain-weights");
        mt_safetensors_set_meta(&s2, "class_names", "a,b,c");
        MT_CHECK(mt_safetensors_save(&s2, P("noconfig.safetensors")) == MT_OK);
        mt_safetensors_set_meta(&s2, "format", "something-else");
        MT_CHECK(mt_safetensors_save(&s2, P("foreign.safetensors")) == MT_OK);
        mt_safetensors_free(&s2);
        st = mt_weights_load(P("noconfig.safetensors"), &bad);
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "noconfig.safetensors: metadata lacks \"config\""), "%s",
                  mt_error_msg());
        st = mt_weights_load(P("foreign.safetensors"), &bad);
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "foreign.safetensors: not a medtrain weight file"), "%s",
                  mt_error_msg());
        char *buf;
        size_t n;
        MT_CHECK(mt_fs_read_file(P("w.safetensors"), &buf, &n) == MT_OK);
        MT_CHECK(mt_fs_write_atomic(P("trunc.safetensors"), buf, n / 2) == MT_OK);
        free(buf);
        st = mt_weights_load(P("trunc.safetensors"), &bad);
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "trunc.safetensors"), "%s", mt_error_msg());
    }
    /* a weight file from another medtrain version: settings this version does
     * not know (or cannot read) are skipped with a note unless they define the
     * model, which fails naming the key and the writer's version */
    {
        mt_safetensors s3;
        mt_safetensors_init(&s3);
        MT_CHECK(mt_safetensors_load(&s3, P("w.safetensors")) == MT_OK);
        const char *yaml = mt_safetensors_get_meta(&s3, "config");
        MT_CHECK(yaml);
        char *later = malloc(strlen(yaml) + 400);
        sprintf(later, "%s\ntelemetry: {endpoint: none}\n", yaml);
        /* a key added to train:, and optim.name with a value this version lacks */
        char *t = strstr(later, "train:\n");
        MT_CHECK(t);
        mt_strbuf y;
        mt_strbuf_init(&y);
        mt_strbuf_printf(&y, "%.*strain:\n  future_knob: 3\n%s", (int)(t - later), later, t + strlen("train:\n"));
        char *yy = mt_strbuf_take(&y);
        char *on = strstr(yy, "  name: sgd");
        if (!on) on = strstr(yy, "  name: adamw");
        MT_CHECK(on);
        mt_strbuf y2;
        mt_strbuf_init(&y2);
        mt_strbuf_printf(&y2, "%.*s  name: lion%s", (int)(on - yy), yy, strchr(on, '\n'));
        char *ystored = mt_strbuf_take(&y2);
        mt_safetensors_set_meta(&s3, "config", ystored);
        mt_safetensors_set_meta(&s3, "medtrain_version", "9.9.0");
        MT_CHECK(mt_safetensors_save(&s3, P("later.safetensors")) == MT_OK);
        mt_weights lw;
        st = mt_weights_load(P("later.safetensors"), &lw);
        CHECK_MSG(st == MT_OK, "weights from a later version: %s", mt_error_msg());
        if (st == MT_OK) {
            const char *sk = lw.skipped_config ? lw.skipped_config : "";
            CHECK_MSG(strstr(sk, "train.future_knob (unknown to this version)") && strstr(sk, "telemetry (unknown") &&
                          strstr(sk, "optim.name (value not readable by this version)") &&
                          !strcmp(lw.written_by, "9.9.0"),
                      "skipped: %s", sk);
            CHECK(lw.num_classes == K && lw.has_plan && lw.in_channels == 1);
        }
        mt_weights_free(&lw);
        /* a model key this version does not know must not load */
        char *m = strstr(ystored, "model:\n");
        MT_CHECK(m);
        mt_strbuf y3;
        mt_strbuf_init(&y3);
        mt_strbuf_printf(&y3, "%.*smodel:\n  attention_gates: true\n%s", (int)(m - ystored), ystored,
                         m + strlen("model:\n"));
        char *ymodel = mt_strbuf_take(&y3);
        mt_safetensors_set_meta(&s3, "config", ymodel);
        MT_CHECK(mt_safetensors_save(&s3, P("later_model.safetensors")) == MT_OK);
        st = mt_weights_load(P("later_model.safetensors"), &lw);
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "model.attention_gates: unknown key") &&
                      strstr(mt_error_msg(), "written by medtrain 9.9.0") &&
                      strstr(mt_error_msg(), "later_model.safetensors"),
                  "unknown model key: %s", mt_error_msg());
        mt_weights_free(&lw);
        free(ymodel);
        free(ystored);
        free(yy);
        free(later);
        mt_safetensors_free(&s3);
    }

    /* ---- no resampling, no crop: predict == argmax of direct inference ---- */
    {
        mt_tensor *im, *lb, *pred = NULL, *pi = NULL, *logits = NULL, *direct = NULL;
        make_case(&im, &lb, (int64_t[]){20, 20, 20}, 5, 0);
        float *x = MT_F32P(im);
        for (int64_t i = 0; i < mt_tensor_numel(im); i++) x[i] += 1.0f; /* no zero voxel: no crop */
        double sp[3] = {1, 1, 1}, af[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
        mt_prep_geometry g;
        st = mt_predict_case(&pred, &w, im, sp, (const double(*)[4])af, NULL, &g);
        CHECK_MSG(st == MT_OK, "predict_case: %s", mt_error_msg());
        mt_norm_params np[1];
        mt_prep_geometry g2;
        MT_CHECK(mt_preprocess_case(&pi, NULL, &g2, np, im, NULL, sp, (const double(*)[4])af, &w.plan) == MT_OK);
        CHECK(g2.shape[0] == 20 && g2.shape[1] == 20 && g2.shape[2] == 20 && g2.crop_lo[0] == 0 && g2.crop_hi[2] == 20);
        mt_eval_sw_opts so;
        mt_eval_sw_opts_default(&so, w.patch);
        MT_CHECK(mt_eval_sliding_window_model(&logits, pi, w.model, &so) == MT_OK);
        MT_CHECK(mt_eval_argmax(&direct, logits) == MT_OK);
        CHECK_MSG(pred && tensors_equal(pred, direct), "prediction without resampling differs from direct inference");
        /* the model is random but not constant: several classes appear */
        int seen[K] = {0};
        const uint8_t *pp = pred ? mt_tensor_data(pred) : NULL;
        for (int64_t i = 0; pp && i < mt_tensor_numel(pred); i++) seen[pp[i] < K ? pp[i] : 0] = 1;
        printf("classes predicted without resampling: %d %d %d\n", seen[0], seen[1], seen[2]);
        mt_tensor_release(im);
        mt_tensor_release(lb);
        mt_tensor_release(pred);
        mt_tensor_release(pi);
        mt_tensor_release(logits);
        mt_tensor_release(direct);
    }

    /* ---- evaluate with an oracle through the real reference / report path ---- */
    {
        mt_evaluate_options eo;
        mt_evaluate_options_default(&eo);
        eo.weights = &w;
        eo.weights_path = P("w.safetensors");
        eo.data_path = P("store.h5");
        eo.split = "dev";
        eo.out_dir = P("eval_oracle");
        eo.progress = 0;
        oracle_ctx oc = {0};
        eo.hook = oracle;
        eo.hook_ctx = &oc;
        mt_eval_results res;
        st = mt_evaluate_run(&eo, &res);
        CHECK_MSG(st == MT_OK, "evaluate (store, oracle): %s", mt_error_msg());
        if (st == MT_OK) {
            check_perfect(&res, 2, "store dev");
            CHECK(oc.calls == 2 && !strcmp(res.case_names[0], "case_0") && !strcmp(res.class_names[0], "front"));
            mt_eval_results_free(&res);
            mt_json *j = read_json(P("eval_oracle/summary.json"));
            const mt_json *ref = mt_json_get(j, "reference"), *fg = mt_json_get(j, "mean_foreground_dice");
            CHECK_MSG(ref && ref->type == MT_JSON_STRING && !strcmp(ref->string, "original"), "reference");
            CHECK(fg && fg->type == MT_JSON_NUMBER && fg->number == 1.0);
            CHECK(mt_json_get(j, "options") && mt_json_get(j, "timing") && mt_json_get(j, "weights"));
            mt_json_free(j);
            CHECK(mt_fs_is_file(P("eval_oracle/per_case.csv")));
        }
        /* the original label files gone: the store's labels mapped back */
        CHECK(rename(P("ds"), P("ds_moved")) == 0);
        eo.split = "fold:1:train";
        eo.splits_path = P("ds_moved/splits.json");
        eo.out_dir = P("eval_oracle2");
        st = mt_evaluate_run(&eo, &res);
        CHECK_MSG(st == MT_OK, "evaluate (store, inverted): %s", mt_error_msg());
        if (st == MT_OK) {
            check_perfect(&res, 1, "store inverted");
            mt_eval_results_free(&res);
            mt_json *j = read_json(P("eval_oracle2/summary.json"));
            const mt_json *ref = mt_json_get(j, "reference");
            CHECK_MSG(ref && ref->type == MT_JSON_STRING && !strcmp(ref->string, "inverted_store_labels"), "reference");
            mt_json_free(j);
        }
        CHECK(rename(P("ds_moved"), P("ds")) == 0);
        /* a dataset folder */
        eo.data_path = P("ds");
        eo.split = "all";
        eo.splits_path = NULL;
        eo.out_dir = P("eval_oracle3");
        st = mt_evaluate_run(&eo, &res);
        CHECK_MSG(st == MT_OK, "evaluate (dataset, oracle): %s", mt_error_msg());
        if (st == MT_OK) {
            check_perfect(&res, 3, "dataset all");
            mt_eval_results_free(&res);
        }
        /* an unknown fold: MT_ERR_CONFIG naming it, no reports */
        eo.split = "fold:7:val";
        eo.out_dir = P("eval_badfold");
        st = mt_evaluate_run(&eo, &res);
        CHECK_MSG(st == MT_ERR_CONFIG && strstr(mt_error_msg(), "fold:7:val") && strstr(mt_error_msg(), "2 fold(s)"),
                  "bad fold: %s", mt_error_msg());
        CHECK(!mt_fs_is_file(P("eval_badfold/summary.json")) && !mt_fs_is_file(P("eval_badfold/per_case.csv")));
    }

    /* ---- the executable ---- */
    if (!have_bin) {
        printf("skipping the CLI part: medtrain executable not found (MT_MEDTRAIN=%s)\n", g_bin ? g_bin : "unset");
    } else {
        mkdir(P("out"), 0700);
        EXPECT_RUN(0, "predict: [1/1] case_1", "predict w.safetensors ds/imagesTr/case_1.nii.gz out/c1.nii.gz");
        /* another version's weight file: a note names what was ignored */
        EXPECT_RUN(0, "note: later.safetensors was written by medtrain 9.9.0",
                   "predict later.safetensors ds/imagesTr/case_1.nii.gz out/c1.nii.gz");
        CHECK_MSG(strstr(g_err, "train.future_knob"), "note lists the skipped key: %s", g_err);
        mt_nifti in, out;
        memset(&out, 0, sizeof out);
        st = mt_nifti_read(P("ds/imagesTr/case_1.nii.gz"), &in);
        MT_CHECK(st == MT_OK);
        st = mt_nifti_read_native(P("out/c1.nii.gz"), &out);
        CHECK_MSG(st == MT_OK, "read prediction: %s", mt_error_msg());
        if (st == MT_OK) {
            check_same_geometry(&out.hdr, &in.hdr, "out/c1.nii.gz");
            CHECK(out.hdr.datatype == MT_NIFTI_UINT8 && out.data->dtype == MT_U8 && out.hdr.scl_slope == 0);
            const uint8_t *y = mt_tensor_data(out.data);
            int ok = 1;
            for (int64_t i = 0; i < mt_tensor_numel(out.data); i++) ok &= y[i] < K;
            CHECK_MSG(ok, "labels outside [0, %d)", K);
            /* the same as in process */
            mt_tensor *im = mt_tensor_unsqueeze(in.data, 0), *pred = NULL;
            double sp[3], af[4][4];
            mt_nifti_spacing(&in.hdr, sp);
            mt_nifti_best_affine(&in.hdr, af);
            st = mt_predict_case(&pred, &w, im, sp, (const double(*)[4])af, NULL, NULL);
            CHECK_MSG(st == MT_OK && tensors_equal(pred, out.data), "CLI prediction differs from mt_predict_case");
            mt_tensor_release(pred);
            mt_tensor_release(im);
            mt_nifti_free(&out);
        }
        mt_nifti_free(&in);
        EXPECT_RUN(0, "predict: 3 cases", "predict w.safetensors ds/imagesTr outdir --mirror --largest-component");
        CHECK_MSG(count_entries(P("outdir")) == 3 && mt_fs_is_file(P("outdir/case_0.nii.gz")) &&
                      mt_fs_is_file(P("outdir/case_2.nii.gz")),
                  "folder prediction: %d entries", count_entries(P("outdir")));
        EXPECT_RUN(0, NULL, "evaluate w.safetensors store.h5 --split fold:0:val --out evalout --quiet");
        {
            mt_json *j = read_json(P("evalout/summary.json"));
            const mt_json *n = mt_json_get(j, "n_cases");
            CHECK(n && n->type == MT_JSON_NUMBER && n->number == 1);
            mt_json_free(j);
        }
        EXPECT_RUN(0, "evaluate: [1/1] case_2", "evaluate w.safetensors ds --split holdout --out evalds");

        /* bad input: message naming the culprit, no output */
        EXPECT_RUN(1, "nowhere.safetensors", "predict nowhere.safetensors ds/imagesTr/case_0.nii.gz out/bad1.nii.gz");
        EXPECT_RUN(1, "trunc.safetensors", "predict trunc.safetensors ds/imagesTr/case_0.nii.gz out/bad2.nii.gz");
        EXPECT_RUN(1, "foreign.safetensors: not a medtrain weight file",
                   "predict foreign.safetensors ds/imagesTr/case_0.nii.gz out/bad3.nii.gz");
        write_text(P("junk.nii.gz"), "this is not a NIfTI file\n");
        EXPECT_RUN(1, "junk.nii.gz", "predict w.safetensors junk.nii.gz out/bad4.nii.gz");
        {
            mt_tensor *two = mt_tensor_full(MT_F32, 4, (int64_t[]){2, 8, 9, 10}, 3.0, MT_DEVICE_CPU);
            write_nifti(P("two.nii.gz"), two, g_spacing, 0);
            mt_tensor_release(two);
        }
        EXPECT_RUN(1, "has 2 channel(s)", "predict w.safetensors two.nii.gz out/bad5.nii.gz");
        EXPECT_RUN(1, "noplan.safetensors has no preprocessing plan",
                   "predict noplan.safetensors ds/imagesTr/case_0.nii.gz out/bad6.nii.gz");
        EXPECT_RUN(1, "nosuchdir", "predict w.safetensors ds/imagesTr/case_0.nii.gz nosuchdir/x.nii.gz");
        EXPECT_RUN(1, "missing.nii.gz", "predict w.safetensors missing.nii.gz out/bad7.nii.gz");
        EXPECT_RUN(1, "is the input image", "predict w.safetensors ds/imagesTr/case_0.nii.gz ds/imagesTr/case_0.nii.gz");
        EXPECT_RUN(2, "OUTPUT 'out/x.txt'", "predict w.safetensors ds/imagesTr/case_0.nii.gz out/x.txt");
        EXPECT_RUN(2, "unknown option '--frob'", "predict w.safetensors a b --frob");
        EXPECT_RUN(2, "--overlap '1.5'", "predict w.safetensors a b --overlap 1.5");
        CHECK_MSG(count_entries(P("out")) == 1, "bad predictions left files: %d entries in out/", count_entries(P("out")));
        EXPECT_RUN(2, "fold:7:val", "evaluate w.safetensors store.h5 --split fold:7:val --out evalbad");
        EXPECT_RUN(2, "--split 'fold:x'", "evaluate w.safetensors store.h5 --split fold:x --out evalbad");
        EXPECT_RUN(2, "needs --out", "evaluate w.safetensors store.h5 --split all");
        CHECK(count_entries(P("evalbad")) <= 0);
        write_text(P("afile"), "x\n");
        EXPECT_RUN(1, "afile/sub", "evaluate w.safetensors store.h5 --split all --out afile/sub");
        EXPECT_RUN(1, "trunc.safetensors", "evaluate trunc.safetensors store.h5 --split all --out evalbad2");
        CHECK(!mt_fs_is_file(P("evalbad2/summary.json")));
        EXPECT_RUN(1, "nostore.h5", "evaluate w.safetensors nostore.h5 --split all --out evalbad3");
        EXPECT_RUN(0, NULL, "predict --help");
        {
            char *o;
            size_t n;
            CHECK(mt_fs_read_file(P("out.txt"), &o, &n) == MT_OK && strstr(o, "usage: medtrain predict"));
            free(o);
        }
    }

    mt_weights_free(&w);
    mt_module_free(model);
    mt_config_free(cfg);
    mt_h5store_close(store);
    free(g_err);
    if (mt_test_failures == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    } else {
        printf("files kept in %s\n", g_dir);
    }
    return mt_test_finish();
}
