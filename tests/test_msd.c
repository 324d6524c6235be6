/* LABELS: integration */
/* data/msd: MSD / nnU-Net dataset folders and splits.
 *  - synthetic folders written to /tmp: nnU-Net v2 (two channels _0000/_0001,
 *    discovered from imagesTr/, macOS "._*" junk skipped), MSD style with a
 *    4-D multi-channel file and nnU-Net v1 per-channel files, and error
 *    cases (missing files, bad JSON, label/shape/channel mismatches, splits);
 *  - the real Task04_Hippocampus set (shared/data, read in place): every case
 *    loads (f32 and u8 images, the two f32 label files), labels in {0, 1, 2},
 *    shapes agree, figures from its SOURCE.md, splits.json partitions.
 * Exits 77 (skipped) when the real data is absent, after the synthetic part. */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/msd.h"
#include "data/nifti.h"
#include "mt_test.h"

#define HIPPO MT_SHARED_DIR "/data/Task04_Hippocampus"

static char g_dir[] = "/tmp/mt_test_msd_XXXXXX";

static char *path_of(const char *rel) {
    static char buf[16][600];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 600, "%s/%s", g_dir, rel);
    return p;
}

static void write_text(const char *rel, const char *text) {
    FILE *f = fopen(path_of(rel), "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void write_volume(const char *rel, const mt_tensor *t, int datatype) {
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.hdr.datatype = datatype;
    img.hdr.pixdim[1] = 0.8, img.hdr.pixdim[2] = 0.9, img.hdr.pixdim[3] = 3;
    img.data = (mt_tensor *)t;
    mt_status st = mt_nifti_write(path_of(rel), &img, 1, strstr(rel, ".gz") != NULL);
    CHECK_MSG(st == MT_OK, "writing %s: %s", rel, mt_error_msg());
}

/* Expects mt_msd_open to fail with a message containing both strings. */
static void expect_open_error(const char *a, const char *b) {
    mt_msd_dataset ds;
    mt_status st = mt_msd_open(&ds, g_dir);
    const char *m = mt_error_msg();
    CHECK_MSG(st != MT_OK, "open succeeded; expected an error with \"%s\"", a);
    CHECK_MSG(strstr(m, a) && (!b || strstr(m, b)), "error lacks \"%s\" / \"%s\": %s", a, b ? b : "", m);
    CHECK(ds.num_cases == 0 && ds.cases == NULL);
    if (st == MT_OK) mt_msd_free(&ds);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void clear_dir(void) {
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    CHECK(mkdir(g_dir, 0700) == 0);
    mkdir(path_of("imagesTr"), 0700);
    mkdir(path_of("labelsTr"), 0700);
}

static const char *V2_JSON =
    "{\n"
    "  \"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"},\n"
    "  \"labels\": {\"background\": 0, \"peripheral\": 1, \"transition\": 2},\n"
    "  \"numTraining\": 2,\n"
    "  \"file_ending\": \".nii.gz\"\n"
    "}\n";

/* nnU-Net v2: two cases, two channels each */
static void test_nnunet_v2(void) {
    clear_dir();
    write_text("dataset.json", V2_JSON);
    const char *ids[2] = {"prostate_07", "prostate_12"};
    int64_t shapes[2][3] = {{5, 9, 7}, {4, 6, 11}};
    mt_tensor *ch[2][2], *lab[2];
    for (int c = 0; c < 2; c++) {
        for (int k = 0; k < 2; k++) {
            ch[c][k] = mt_test_rand(3, shapes[c], -100, 400);
            char rel[128];
            snprintf(rel, sizeof rel, "imagesTr/%s_%04d.nii.gz", ids[c], k);
            write_volume(rel, ch[c][k], MT_NIFTI_FLOAT32);
        }
        mt_tensor *r = mt_test_rand(3, shapes[c], 0, 3);
        lab[c] = mt_tensor_to_dtype(r, MT_U8); /* truncation: 0, 1, 2 */
        mt_tensor_release(r);
        char rel[128];
        snprintf(rel, sizeof rel, "labelsTr/%s.nii.gz", ids[c]);
        write_volume(rel, lab[c], c == 0 ? MT_NIFTI_UINT8 : MT_NIFTI_FLOAT32);
    }
    write_text("imagesTr/._prostate_07_0000.nii.gz", "macOS resource fork junk");
    write_text("imagesTr/.DS_Store", "junk");
    write_text("imagesTr/notes.txt", "not an image");

    mt_msd_dataset ds;
    mt_status st = mt_msd_open(&ds, g_dir);
    CHECK_MSG(st == MT_OK, "open v2: %s", mt_error_msg());
    if (st != MT_OK) goto out;
    CHECK(ds.style == MT_MSD_STYLE_NNUNET_V2 && ds.num_cases == 2 && ds.num_channels == 2);
    CHECK(strcmp(ds.file_ending, ".nii.gz") == 0 && strcmp(ds.name, "") == 0);
    CHECK(strcmp(ds.channel_names[0], "T2") == 0 && strcmp(ds.channel_names[1], "ADC") == 0);
    CHECK(ds.num_classes == 3 && strcmp(ds.class_names[2], "transition") == 0 &&
          strcmp(ds.class_names[0], "background") == 0);
    CHECK(strcmp(ds.cases[0].id, ids[0]) == 0 && strcmp(ds.cases[1].id, ids[1]) == 0);
    CHECK(ds.cases[1].num_files == 2 && strstr(ds.cases[1].images[1], "prostate_12_0001.nii.gz"));
    CHECK(mt_msd_find(&ds, "prostate_12") == 1 && mt_msd_find(&ds, "prostate_99") == -1);
    for (int c = 0; c < 2; c++) {
        mt_tensor *img = NULL, *l = NULL;
        mt_nifti_header h;
        st = mt_msd_load_case(&ds, c, &img, &l, &h);
        CHECK_MSG(st == MT_OK, "load case %d: %s", c, mt_error_msg());
        if (st != MT_OK) continue;
        CHECK(img->ndim == 4 && img->shape[0] == 2 && img->dtype == MT_F32);
        CHECK(l->ndim == 4 && l->shape[0] == 1 && l->dtype == MT_U8);
        for (int a = 0; a < 3; a++) CHECK(img->shape[a + 1] == shapes[c][a] && l->shape[a + 1] == shapes[c][a]);
        for (int k = 0; k < 2; k++) {
            mt_tensor *slice = mt_tensor_slice(img, 0, k, k + 1, 1);
            mt_tensor *sq = mt_tensor_squeeze(slice, 0);
            CHECK(mt_test_allclose_t(sq, ch[c][k], 1e-12, 0, "channel values"));
            mt_tensor_release(sq);
            mt_tensor_release(slice);
        }
        mt_tensor *lsq = mt_tensor_squeeze(l, 0);
        CHECK(mt_test_allclose_t(lsq, lab[c], 1e-12, 0, "label values"));
        mt_tensor_release(lsq);
        double sp[3];
        mt_nifti_spacing(&h, sp);
        CHECK(fabs(sp[0] - 3) < 1e-6 && fabs(sp[2] - 0.8) < 1e-6);
        mt_tensor_release(img);
        mt_tensor_release(l);
    }
    /* the label may be skipped */
    mt_tensor *only = NULL;
    CHECK(mt_msd_load_case(&ds, 0, &only, NULL, NULL) == MT_OK && only && only->shape[0] == 2);
    mt_tensor_release(only);
    mt_msd_free(&ds);

    /* errors: each names the culprit */
    unlink(path_of("imagesTr/prostate_12_0001.nii.gz"));
    expect_open_error(path_of("imagesTr/prostate_12_0001.nii.gz"), "missing image file");
    write_volume("imagesTr/prostate_12_0001.nii.gz", ch[1][1], MT_NIFTI_FLOAT32);
    write_volume("imagesTr/prostate_12_0002.nii.gz", ch[1][1], MT_NIFTI_FLOAT32);
    expect_open_error("prostate_12_0002.nii.gz", "declares 2 channel(s)");
    unlink(path_of("imagesTr/prostate_12_0002.nii.gz"));
    write_text("imagesTr/stray.nii.gz", "x");
    expect_open_error("stray.nii.gz", "_XXXX");
    unlink(path_of("imagesTr/stray.nii.gz"));
    unlink(path_of("labelsTr/prostate_07.nii.gz"));
    expect_open_error(path_of("labelsTr/prostate_07.nii.gz"), "missing label file");
    write_volume("labelsTr/prostate_07.nii.gz", lab[0], MT_NIFTI_UINT8);
    write_text("dataset.json", "{\n  \"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"},\n"
                               "  \"labels\": {\"background\": 0, \"a\": 1,},\n}\n");
    expect_open_error("dataset.json:3:38: trailing comma", NULL);
    write_text("dataset.json", "{\"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"}, \"labels\": "
                               "{\"background\": 0, \"a\": 1, \"b\": 2}, \"numTraining\": 3, "
                               "\"file_ending\": \".nii.gz\"}");
    expect_open_error("numTraining is 3 but the dataset has 2", NULL);
    write_text("dataset.json", "{\"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"}, \"labels\": "
                               "{\"background\": 0, \"a\": 1, \"b\": 5}, \"file_ending\": \".nii.gz\"}");
    expect_open_error("dataset.json:1:85: labels[\"b\"]: label value 5 out of range", NULL);
    write_text("dataset.json", "{\"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"}, \"labels\": "
                               "{\"background\": 0, \"ab\": [1, 2]}, \"file_ending\": \".nii.gz\"}");
    expect_open_error("region-based labels", NULL);
    write_text("dataset.json", "{\"channel_names\": {\"0\": \"T2\", \"1\": \"ADC\"}, \"labels\": "
                               "{\"background\": 0, \"a\": 1, \"b\": 2}, \"file_ending\": \".png\"}");
    expect_open_error("file_ending \".png\"", "only NIfTI");
    write_text("dataset.json", "{\"labels\": {\"background\": 0}, \"file_ending\": \".nii.gz\"}");
    expect_open_error("dataset.json: missing key \"channel_names\"", NULL);
    write_text("dataset.json", "{\"channel_names\": {\"0\": \"T2\", \"2\": \"ADC\"}, \"labels\": "
                               "{\"background\": 0}, \"file_ending\": \".nii.gz\"}");
    expect_open_error("key \"2\" is not a channel index 0..1", NULL);
    unlink(path_of("dataset.json"));
    expect_open_error("dataset.json: missing", NULL);
    /* load-time errors: a channel with another shape; a label value beyond the labels */
    write_text("dataset.json", V2_JSON);
    mt_tensor *odd = mt_test_rand(3, (int64_t[]){5, 9, 6}, 0, 1);
    write_volume("imagesTr/prostate_07_0001.nii.gz", odd, MT_NIFTI_FLOAT32);
    mt_tensor_release(odd);
    mt_tensor *badlab = mt_tensor_full(MT_U8, 3, shapes[1], 3, MT_DEVICE_CPU);
    write_volume("labelsTr/prostate_12.nii.gz", badlab, MT_NIFTI_UINT8);
    mt_tensor_release(badlab);
    st = mt_msd_open(&ds, g_dir);
    CHECK_MSG(st == MT_OK, "%s", mt_error_msg());
    if (st == MT_OK) {
        mt_tensor *img = (mt_tensor *)1, *l = (mt_tensor *)1;
        CHECK(mt_msd_load_case(&ds, 0, &img, &l, NULL) == MT_ERR_FORMAT && img == NULL && l == NULL);
        CHECK_MSG(strstr(mt_error_msg(), "prostate_07_0001.nii.gz: shape (5, 9, 6) differs"), "%s", mt_error_msg());
        CHECK(mt_msd_load_case(&ds, 1, &img, &l, NULL) == MT_ERR_FORMAT);
        CHECK_MSG(strstr(mt_error_msg(), "labelsTr/prostate_12.nii.gz: label value 3") &&
                      strstr(mt_error_msg(), "declares 3 labels"),
                  "%s", mt_error_msg());
        mt_msd_free(&ds);
    }
out:
    for (int c = 0; c < 2; c++) {
        mt_tensor_release(ch[c][0]);
        mt_tensor_release(ch[c][1]);
        mt_tensor_release(lab[c]);
    }
}

/* MSD style: one 4-D file holding both channels (as MSD's BraTS), and
 * nnU-Net v1's per-channel files for a case listed without suffix. */
static void test_msd_style(void) {
    clear_dir();
    write_text("dataset.json",
               "{\"name\": \"Toy\", \"modality\": {\"0\": \"FLAIR\", \"1\": \"T1w\"},\n"
               " \"labels\": {\"0\": \"background\", \"1\": \"tumour\"}, \"numTraining\": 2,\n"
               " \"training\": [{\"image\": \"./imagesTr/toy_001.nii.gz\", \"label\": \"./labelsTr/toy_001.nii.gz\"},\n"
               "              {\"image\": \"./imagesTr/toy_002.nii.gz\", \"label\": \"./labelsTr/toy_002.nii.gz\"}],\n"
               " \"test\": []}\n");
    mt_tensor *four = mt_test_rand(4, (int64_t[]){2, 3, 4, 5}, 0, 10);
    write_volume("imagesTr/toy_001.nii.gz", four, MT_NIFTI_FLOAT32);
    mt_tensor *c0 = mt_test_rand(3, (int64_t[]){3, 4, 5}, 0, 10), *c1 = mt_test_rand(3, (int64_t[]){3, 4, 5}, 0, 10);
    write_volume("imagesTr/toy_002_0000.nii.gz", c0, MT_NIFTI_FLOAT32);
    write_volume("imagesTr/toy_002_0001.nii.gz", c1, MT_NIFTI_FLOAT32);
    mt_tensor *lab = mt_tensor_zeros(MT_U8, 3, (int64_t[]){3, 4, 5}, MT_DEVICE_CPU);
    ((uint8_t *)mt_tensor_data(lab))[17] = 1;
    write_volume("labelsTr/toy_001.nii.gz", lab, MT_NIFTI_UINT8);
    write_volume("labelsTr/toy_002.nii.gz", lab, MT_NIFTI_INT16);
    mt_msd_dataset ds;
    mt_status st = mt_msd_open(&ds, g_dir);
    CHECK_MSG(st == MT_OK, "open MSD style: %s", mt_error_msg());
    if (st == MT_OK) {
        CHECK(ds.style == MT_MSD_STYLE_MSD && strcmp(ds.name, "Toy") == 0 && ds.num_channels == 2);
        CHECK(ds.cases[0].num_files == 1 && ds.cases[1].num_files == 2);
        CHECK(strcmp(ds.cases[1].id, "toy_002") == 0 && strcmp(ds.class_names[1], "tumour") == 0);
        mt_tensor *img = NULL, *l = NULL;
        CHECK(mt_msd_load_case(&ds, 0, &img, &l, NULL) == MT_OK);
        if (img) {
            CHECK(mt_test_allclose_t(img, four, 1e-12, 0, "4-D multi-channel file"));
            CHECK(mt_tensor_get_flat(l, 17) == 1 && mt_tensor_get_flat(l, 16) == 0);
        }
        mt_tensor_release(img);
        mt_tensor_release(l);
        CHECK(mt_msd_load_case(&ds, 1, &img, &l, NULL) == MT_OK);
        if (img) {
            mt_tensor *s1 = mt_tensor_slice(img, 0, 1, 2, 1), *q1 = mt_tensor_squeeze(s1, 0);
            CHECK(mt_test_allclose_t(q1, c1, 1e-12, 0, "v1 channel 1"));
            mt_tensor_release(q1);
            mt_tensor_release(s1);
        }
        mt_tensor_release(img);
        mt_tensor_release(l);
        mt_msd_free(&ds);
    }
    /* a 4-D file whose channel count disagrees with "modality" */
    mt_tensor *three = mt_test_rand(4, (int64_t[]){3, 3, 4, 5}, 0, 1);
    write_volume("imagesTr/toy_001.nii.gz", three, MT_NIFTI_FLOAT32);
    mt_tensor_release(three);
    CHECK(mt_msd_open(&ds, g_dir) == MT_OK);
    if (ds.num_cases) {
        mt_tensor *img = NULL, *l = NULL;
        CHECK(mt_msd_load_case(&ds, 0, &img, &l, NULL) == MT_ERR_FORMAT);
        CHECK_MSG(strstr(mt_error_msg(), "toy_001.nii.gz: holds 3 volume(s)") &&
                      strstr(mt_error_msg(), "declares 2 channel(s)"),
                  "%s", mt_error_msg());
        mt_msd_free(&ds);
    }
    /* a listed file that is missing (and no per-channel files either) */
    unlink(path_of("imagesTr/toy_001.nii.gz"));
    expect_open_error(path_of("imagesTr/toy_001.nii.gz"), "training[0].image");
    write_volume("imagesTr/toy_001.nii.gz", four, MT_NIFTI_FLOAT32);
    unlink(path_of("labelsTr/toy_002.nii.gz"));
    expect_open_error(path_of("labelsTr/toy_002.nii.gz"), "training[1].label");
    mt_tensor_release(four);
    mt_tensor_release(c0);
    mt_tensor_release(c1);
    mt_tensor_release(lab);
}

static void test_splits_synthetic(void) {
    write_text("s1.json", "{\"holdout\": [\"a\", \"b\"], \"dev\": [\"c\", \"d\", \"e\"],\n"
                          " \"folds\": [{\"train\": [\"c\", \"d\"], \"val\": [\"e\"]},\n"
                          "           {\"train\": [\"e\", \"d\"], \"val\": [\"c\"]}], \"about\": \"x\"}");
    mt_msd_splits s;
    CHECK_MSG(mt_msd_splits_read(&s, path_of("s1.json")) == MT_OK, "%s", mt_error_msg());
    CHECK(s.holdout.n == 2 && s.dev.n == 3 && s.num_folds == 2 && s.val[1].n == 1 &&
          strcmp(s.val[1].ids[0], "c") == 0);
    mt_msd_splits_free(&s);
    /* nnU-Net splits_final.json */
    write_text("s2.json", "[{\"train\": [\"x\", \"y\"], \"val\": [\"z\"]}, {\"train\": [\"z\", \"x\"], \"val\": [\"y\"]}]");
    CHECK_MSG(mt_msd_splits_read(&s, path_of("s2.json")) == MT_OK, "%s", mt_error_msg());
    CHECK(s.holdout.n == 0 && s.dev.n == 3 && s.num_folds == 2);
    CHECK(strcmp(s.dev.ids[0], "x") == 0 && strcmp(s.dev.ids[2], "z") == 0);
    mt_msd_splits_free(&s);
    struct {
        const char *json, *want;
    } bad[] = {
        {"{\"holdout\": [\"a\"], \"dev\": [\"a\", \"b\"]}", "\"a\" is in both holdout and dev"},
        {"{\"dev\": [\"a\", \"b\", \"a\"]}", "\"a\" appears twice in dev"},
        {"{\"dev\": [\"a\", \"b\"], \"folds\": [{\"train\": [\"a\", \"b\"], \"val\": [\"b\"]}]}",
         "\"b\" is in both folds[0].train and folds[0].val"},
        {"{\"dev\": [\"a\", \"b\"], \"folds\": [{\"train\": [\"a\"], \"val\": [\"q\"]}]}",
         "\"q\" is in folds[0].val but not in dev"},
        {"{\"dev\": [\"a\", \"b\", \"c\"], \"folds\": [{\"train\": [\"a\"], \"val\": [\"b\"]}]}",
         "hold 2 cases together, dev has 3"},
        {"{\"dev\": [\"a\", \"b\"], \"folds\": [{\"train\": [\"a\"], \"val\": [\"b\"]}, "
         "{\"train\": [\"a\"], \"val\": [\"b\"]}]}",
         "\"b\" is in both folds[1].val and folds[0].val"},
        {"{\"dev\": [\"a\", 7]}", "s3.json:1:15: dev[1]: expected a string, got number"},
        {"{\"holdout\": []}", "missing key \"dev\""},
        {"{\"dev\": [\"a\"], \"folds\": [{\"train\": [\"a\"]}]}", "missing key \"val\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_text("s3.json", bad[i].json);
        mt_status st = mt_msd_splits_read(&s, path_of("s3.json"));
        CHECK_MSG(st != MT_OK && strstr(mt_error_msg(), "s3.json") && strstr(mt_error_msg(), bad[i].want),
                  "splits case %zu: %s", i, mt_error_msg());
        CHECK(s.dev.n == 0 && s.train == NULL);
        if (st == MT_OK) mt_msd_splits_free(&s);
    }
    CHECK(mt_msd_splits_read(&s, path_of("nope.json")) == MT_ERR_IO && strstr(mt_error_msg(), "nope.json"));
}

/* ------------------------------------------------------------ real data */

static int in_list(const mt_msd_id_list *l, const char *id) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->ids[i], id) == 0) return 1;
    return 0;
}

static void test_hippocampus(void) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mt_msd_dataset ds;
    mt_status st = mt_msd_open(&ds, HIPPO);
    CHECK_MSG(st == MT_OK, "open %s: %s", HIPPO, mt_error_msg());
    if (st != MT_OK) return;
    CHECK(ds.style == MT_MSD_STYLE_MSD && ds.num_cases == 260 && ds.num_channels == 1);
    CHECK(strcmp(ds.name, "Hippocampus") == 0 && strcmp(ds.channel_names[0], "MRI") == 0);
    CHECK(ds.num_classes == 3 && strcmp(ds.class_names[1], "Anterior") == 0 &&
          strcmp(ds.class_names[2], "Posterior") == 0);
    int img_f32 = 0, img_u8 = 0, lab_f32 = 0, lab_u8 = 0, loaded = 0, all_present = 0;
    int f32_label_ids_ok = 1;
    double nvox = 0, count[3] = {0, 0, 0};
    for (int i = 0; i < ds.num_cases; i++) {
        mt_tensor *img = NULL, *lab = NULL;
        mt_nifti_header h, lh;
        st = mt_msd_load_case(&ds, i, &img, &lab, &h);
        CHECK_MSG(st == MT_OK, "case %s: %s", ds.cases[i].id, mt_error_msg());
        if (st != MT_OK) continue;
        loaded++;
        CHECK(mt_nifti_read_header(ds.cases[i].label, &lh) == MT_OK);
        img_f32 += h.datatype == MT_NIFTI_FLOAT32;
        img_u8 += h.datatype == MT_NIFTI_UINT8;
        lab_f32 += lh.datatype == MT_NIFTI_FLOAT32;
        lab_u8 += lh.datatype == MT_NIFTI_UINT8;
        if (lh.datatype == MT_NIFTI_FLOAT32)
            f32_label_ids_ok &= !strcmp(ds.cases[i].id, "hippocampus_003") || !strcmp(ds.cases[i].id, "hippocampus_243");
        CHECK(img->ndim == 4 && img->shape[0] == 1 && lab->ndim == 4 && lab->shape[0] == 1);
        CHECK(img->shape[1] == lab->shape[1] && img->shape[2] == lab->shape[2] && img->shape[3] == lab->shape[3]);
        /* (D, H, W) = (dim[3], dim[2], dim[1]) */
        CHECK(img->shape[1] == h.dim[3] && img->shape[3] == h.dim[1]);
        const uint8_t *lp = mt_tensor_data(lab);
        int64_t n = mt_tensor_numel(lab), c[3] = {0, 0, 0};
        int ok = 1;
        for (int64_t k = 0; k < n; k++) {
            ok &= lp[k] <= 2;
            if (lp[k] <= 2) c[lp[k]]++;
        }
        CHECK_MSG(ok, "%s: label outside {0, 1, 2}", ds.cases[i].id);
        all_present += c[1] > 0 && c[2] > 0;
        nvox += (double)n;
        for (int k = 0; k < 3; k++) count[k] += (double)c[k];
        /* the SOURCE.md examples */
        const float *ip = MT_F32P(img);
        float mn = ip[0], mx = ip[0];
        for (int64_t k = 1; k < n; k++) mn = fminf(mn, ip[k]), mx = fmaxf(mx, ip[k]);
        CHECK_MSG(mn >= 0, "%s: negative intensity %g", ds.cases[i].id, mn);
        if (!strcmp(ds.cases[i].id, "hippocampus_001")) {
            CHECK(h.datatype == MT_NIFTI_UINT8 && mn == 2 && mx == 139);
            CHECK(img->shape[1] == 35 && img->shape[2] == 51 && img->shape[3] == 35);
        }
        if (!strcmp(ds.cases[i].id, "hippocampus_367")) {
            CHECK(h.datatype == MT_NIFTI_FLOAT32 && fabs(mx - 1932.4) < 0.05);
            CHECK(img->shape[1] == 37 && img->shape[2] == 57 && img->shape[3] == 36);
        }
        if (!strcmp(ds.cases[i].id, "hippocampus_210")) CHECK_NEAR(mx, 1704295, 1);
        double A[4][4];
        CHECK(mt_nifti_best_affine(&h, A) == 2 && A[0][0] == 1 && A[1][1] == 1 && A[2][2] == 1);
        mt_tensor_release(img);
        mt_tensor_release(lab);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("hippocampus: %d cases loaded in %.2f s; images f32 %d / u8 %d, labels f32 %d / u8 %d; "
           "label 1 %.3f %%, label 2 %.3f %%\n",
           loaded, secs, img_f32, img_u8, lab_f32, lab_u8, 100 * count[1] / nvox, 100 * count[2] / nvox);
    CHECK(loaded == 260 && all_present == 260);
    CHECK(img_f32 == 205 && img_u8 == 55 && lab_f32 == 2 && lab_u8 == 258 && f32_label_ids_ok);
    CHECK(fabs(100 * count[1] / nvox - 2.73) < 0.005 && fabs(100 * count[2] / nvox - 2.52) < 0.005);

    /* splits.json: holdout + dev = all cases, folds partition dev */
    mt_msd_splits s;
    st = mt_msd_splits_read(&s, HIPPO "/splits.json");
    CHECK_MSG(st == MT_OK, "%s", mt_error_msg());
    if (st == MT_OK) {
        CHECK(mt_msd_splits_check(&s, &ds, HIPPO "/splits.json") == MT_OK);
        CHECK(s.holdout.n == 52 && s.dev.n == 208 && s.num_folds == 5);
        int ok = 1;
        for (int i = 0; i < ds.num_cases; i++)
            ok &= in_list(&s.holdout, ds.cases[i].id) + in_list(&s.dev, ds.cases[i].id) == 1;
        CHECK_MSG(ok, "holdout and dev do not partition the 260 cases");
        for (int i = 0; i < s.dev.n; i++) {
            int in_val = 0;
            for (int f = 0; f < 5; f++) {
                in_val += in_list(&s.val[f], s.dev.ids[i]);
                ok &= in_list(&s.val[f], s.dev.ids[i]) + in_list(&s.train[f], s.dev.ids[i]) == 1;
            }
            ok &= in_val == 1;
        }
        CHECK_MSG(ok, "the folds do not partition dev");
        CHECK(!strcmp(s.holdout.ids[0], "hippocampus_001") && !strcmp(s.holdout.ids[1], "hippocampus_008"));
        /* an id unknown to the dataset */
        free(s.holdout.ids[3]);
        s.holdout.ids[3] = strdup("hippocampus_999");
        CHECK(mt_msd_splits_check(&s, &ds, "splits.json") == MT_ERR_FORMAT &&
              strstr(mt_error_msg(), "holdout case \"hippocampus_999\" is not in the dataset"));
        mt_msd_splits_free(&s);
    }
    mt_msd_free(&ds);
}

int main(void) {
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    mt_test_seed(4);
    test_nnunet_v2();
    test_msd_style();
    test_splits_synthetic();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    struct stat sb;
    if (stat(HIPPO "/dataset.json", &sb) != 0) {
        printf("skipping the real-data part: %s is absent\n", HIPPO);
        return mt_test_failures ? mt_test_finish() : MT_TEST_SKIP;
    }
    test_hippocampus();
    return mt_test_finish();
}
