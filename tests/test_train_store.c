/* LABELS: integration */
/* Training from a prepared HDF5 store (launch/train.c, issue 4): a small
 * MSD folder written from phantom volumes, prepared on first use
 * (data.hdf5.prepare_from), split by a splits file and fold; the model
 * learns; model_best.safetensors follows the monitored metric; early
 * stopping and the wall-time limit end the run with the final validation,
 * checkpoint and weights; bad data settings (missing store, unknown fold,
 * a split id not in the store, channel / class mismatch, unknown monitor)
 * fail with a message naming the key or file and leave no run directory. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "core/backend.h"
#include "data/nifti.h"
#include "data/phantom.h"
#include "launch/config.h"
#include "launch/fsutil.h"
#include "launch/safetensors.h"
#include "launch/train.h"
#include "mt_test.h"

#define NCASE 10
static char g_tmp[256];
static char g_data[320], g_store[340], g_splits[320], g_bad_splits[320];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "open %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void write_nifti(const char *path, mt_tensor *t /* (1, D, H, W) */) {
    mt_nifti img;
    mt_nifti_header_default(&img.hdr);
    img.hdr.pixdim[1] = img.hdr.pixdim[2] = img.hdr.pixdim[3] = 1.0f;
    img.data = mt_tensor_squeeze(t, 0);
    mt_status s = mt_nifti_write(path, &img, 1, 1);
    CHECK_MSG(s == MT_OK, "writing %s: %s", path, mt_error_msg());
    mt_tensor_release(img.data);
}

/* An MSD folder of NCASE phantom cases (24^3, 3 classes) and two splits files. */
static void write_dataset(void) {
    snprintf(g_data, sizeof g_data, "%s/Task99_Phantom", g_tmp);
    char p[512];
    mkdir(g_data, 0700);
    snprintf(p, sizeof p, "%s/imagesTr", g_data);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/labelsTr", g_data);
    mkdir(p, 0700);
    mt_phantom_config pc;
    mt_phantom_config_default(&pc);
    pc.shape[0] = pc.shape[1] = pc.shape[2] = 24;
    pc.num_classes = 3;
    pc.seed = 7;
    mt_phantom_dataset ds;
    CHECK(mt_phantom_dataset_init(&ds, &pc, 0, NCASE) == MT_OK);
    mt_strbuf sb;
    mt_strbuf_init(&sb);
    mt_strbuf_printf(&sb, "{\"name\": \"Phantom\", \"modality\": {\"0\": \"MRI\"},\n"
                          " \"labels\": {\"0\": \"background\", \"1\": \"Front Part\", \"2\": \"back\"},\n"
                          " \"numTraining\": %d, \"training\": [",
                     NCASE);
    for (int k = 0; k < NCASE; k++) {
        mt_strbuf_printf(&sb, "%s\n  {\"image\": \"./imagesTr/ph_%02d.nii.gz\", \"label\": \"./labelsTr/ph_%02d.nii.gz\"}",
                         k ? "," : "", k, k);
        /* shift intensities so that no voxel is 0 (the non-zero crop keeps the volume) */
        mt_tensor *img = mt_add_scalar(ds.images[k], 10.0f);
        snprintf(p, sizeof p, "%s/imagesTr/ph_%02d.nii.gz", g_data, k);
        write_nifti(p, img);
        mt_tensor_release(img);
        snprintf(p, sizeof p, "%s/labelsTr/ph_%02d.nii.gz", g_data, k);
        write_nifti(p, ds.labels[k]);
    }
    mt_strbuf_puts(&sb, "\n]}\n");
    char *text = mt_strbuf_take(&sb);
    snprintf(p, sizeof p, "%s/dataset.json", g_data);
    write_text(p, text);
    free(text);
    mt_phantom_dataset_free(&ds);
    /* holdout ph_09; dev ph_00..ph_08; fold 0 validates ph_06..08, fold 1 ph_00..02 */
    snprintf(g_splits, sizeof g_splits, "%s/splits.json", g_tmp);
    write_text(g_splits,
               "{\"holdout\": [\"ph_09\"],\n"
               " \"dev\": [\"ph_00\", \"ph_01\", \"ph_02\", \"ph_03\", \"ph_04\", \"ph_05\", \"ph_06\", \"ph_07\", \"ph_08\"],\n"
               " \"folds\": [\n"
               "  {\"train\": [\"ph_00\", \"ph_01\", \"ph_02\", \"ph_03\", \"ph_04\", \"ph_05\"], \"val\": [\"ph_06\", \"ph_07\", \"ph_08\"]},\n"
               "  {\"train\": [\"ph_03\", \"ph_04\", \"ph_05\", \"ph_06\", \"ph_07\", \"ph_08\"], \"val\": [\"ph_00\", \"ph_01\", \"ph_02\"]}]}\n");
    snprintf(g_bad_splits, sizeof g_bad_splits, "%s/bad_splits.json", g_tmp);
    write_text(g_bad_splits, "{\"holdout\": [], \"dev\": [\"ph_00\", \"ph_77\"],\n"
                             " \"folds\": [{\"train\": [\"ph_00\"], \"val\": [\"ph_77\"]}]}\n");
    snprintf(g_store, sizeof g_store, "%s/prepared/phantom.h5", g_tmp);
}

static const char *BASE =
    "run: {name: base, log_every: 5, threads: 2}\n"
    "data:\n"
    "  source: hdf5\n"
    "  patch_size: [16, 16, 16]\n"
    "  num_workers: 2\n"
    "model: {features: [8, 16, 32], deep_supervision: true}\n"
    "optim: {name: adamw, lr: 0.01}\n"
    "train: {steps: 60, batch_size: 2, val_every: 20, checkpoint_every: 0}\n";

/* A config: BASE + the store paths + sets. */
static mt_config *make_cfg(int nsets, const char *const *sets) {
    char path_set[400], prep_set[400], splits_set[400], dir_set[400];
    snprintf(path_set, sizeof path_set, "data.hdf5.path=%s", g_store);
    snprintf(prep_set, sizeof prep_set, "data.hdf5.prepare_from=%s", g_data);
    snprintf(splits_set, sizeof splits_set, "data.splits=%s", g_splits);
    snprintf(dir_set, sizeof dir_set, "run.dir=%s/runs", g_tmp);
    const char *all[32] = {path_set, prep_set, splits_set, dir_set};
    int n = 4;
    for (int k = 0; k < nsets && n < 32; k++) all[n++] = sets[k];
    mt_config *cfg = NULL;
    mt_status s = mt_config_parse_string(&cfg, BASE, "test.yaml", n, all);
    CHECK_MSG(s == MT_OK, "config: %s", mt_error_msg());
    return cfg;
}

static char *read_all(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (mt_fs_read_file(path, &text, &len) != MT_OK) return NULL;
    return text;
}

static int run_dir_exists(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/runs/%s", g_tmp, name);
    return mt_fs_is_dir(p);
}

/* Prepared on first use; fold 0; learns; best weights; metric names from the
 * dataset's class names. */
static void test_learns_from_store(void) {
    const char *sets[] = {"run.name=learn"};
    mt_config *cfg = make_cfg(1, sets);
    CHECK(!mt_fs_is_file(g_store));
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "train: %s", mt_error_msg());
    mt_config_free(cfg);
    CHECK_MSG(mt_fs_is_file(g_store), "the store was prepared at %s", g_store);
    char p[512];
    snprintf(p, sizeof p, "%s/runs/learn/train.log", g_tmp);
    char *log = read_all(p);
    CHECK_MSG(log != NULL, "read %s", p);
    if (log) {
        CHECK_MSG(strstr(log, "6 train + 3 validation cases") != NULL, "fold 0 sizes in the log:\n%s", log);
        CHECK_MSG(strstr(log, "1 holdout cases not used") != NULL, "holdout reported:\n%s", log);
        CHECK_MSG(strstr(log, "model_best.safetensors") != NULL, "best weights reported:\n%s", log);
    }
    free(log);
    snprintf(p, sizeof p, "%s/runs/learn/metrics.jsonl", g_tmp);
    char *met = read_all(p);
    CHECK(met != NULL);
    if (met) {
        double d = mt_test_json_last(met, "val_dice_mean");
        double d1 = mt_test_json_last(met, "val_dice_front_part");
        /* the larger structure is learnt within 60 steps; the small one takes longer */
        CHECK_MSG(d1 >= 0.6, "Dice of \"Front Part\" after 60 steps %.4f >= 0.6", d1);
        CHECK_MSG(!isnan(mt_test_json_last(met, "val_dice_front_part")), "metric named after the class \"Front Part\"");
        CHECK_MSG(!isnan(mt_test_json_last(met, "val_dice_back")), "metric val_dice_back");
        double best = mt_test_json_last(met, "best");
        CHECK_MSG(best >= d - 1e-12, "best %.4f >= last %.4f", best, d);
        printf("store run: final mean Dice %.4f, best %.4f\n", d, best);
    }
    free(met);
    const char *files[] = {"model.safetensors", "model_best.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/runs/learn/%s", g_tmp, files[k]);
        mt_safetensors st;
        mt_safetensors_init(&st);
        mt_status ls = mt_safetensors_load(&st, p);
        CHECK_MSG(ls == MT_OK, "load %s: %s", p, mt_error_msg());
        if (ls == MT_OK) {
            const char *pre = mt_safetensors_get_meta(&st, "preprocess");
            CHECK_MSG(pre && strstr(pre, "target_spacing"), "%s holds the preprocessing plan", files[k]);
            const char *cn = mt_safetensors_get_meta(&st, "class_names");
            CHECK_MSG(cn && !strcmp(cn, "background,Front Part,back"), "class names %s", cn ? cn : "(none)");
        }
        mt_safetensors_free(&st);
    }
}

/* A learning rate too small to change anything: the second validation does
 * not improve, so patience 1 stops the run there (step 40 of 60). */
static void test_early_stopping(void) {
    const char *sets[] = {"run.name=early", "optim.lr=1e-12", "train.early_stop.patience=1",
                          "train.checkpoint_every=20"};
    mt_config *cfg = make_cfg(4, sets);
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "train: %s", mt_error_msg());
    mt_config_free(cfg);
    char p[512];
    snprintf(p, sizeof p, "%s/runs/early/train.log", g_tmp);
    char *log = read_all(p);
    CHECK(log != NULL);
    if (log) {
        CHECK_MSG(strstr(log, "early stopping: val_dice_mean did not improve for 1 validations") != NULL,
                  "early stop logged:\n%s", log);
        CHECK_MSG(strstr(log, "done: 40 steps") != NULL, "stopped at step 40:\n%s", log);
        CHECK_MSG(strstr(log, "step 60/60") == NULL, "no step beyond the stop");
    }
    free(log);
    snprintf(p, sizeof p, "%s/runs/early/checkpoints/step_00000040.safetensors", g_tmp);
    CHECK_MSG(mt_fs_is_file(p), "checkpoint at the stop: %s", p);
    mt_safetensors st;
    mt_safetensors_init(&st);
    if (mt_safetensors_load(&st, p) == MT_OK) {
        const char *b = mt_safetensors_get_meta(&st, "early_stop.bad_validations");
        CHECK_MSG(b && !strcmp(b, "1"), "early-stopping state in the checkpoint (%s)", b ? b : "none");
        const char *bs = mt_safetensors_get_meta(&st, "early_stop.best_step");
        CHECK_MSG(bs && !strcmp(bs, "20"), "best step 20 (%s)", bs ? bs : "none");
    }
    mt_safetensors_free(&st);
}

/* A wall-time limit ends the run after its first step. */
static void test_time_limit(void) {
    const char *sets[] = {"run.name=timed", "train.time_limit_min=1e-6", "data.fold=-1"};
    mt_config *cfg = make_cfg(3, sets);
    mt_status s = mt_train_run(cfg, NULL);
    CHECK_MSG(s == MT_OK, "train: %s", mt_error_msg());
    mt_config_free(cfg);
    char p[512];
    snprintf(p, sizeof p, "%s/runs/timed/train.log", g_tmp);
    char *log = read_all(p);
    CHECK(log != NULL);
    if (log) {
        CHECK_MSG(strstr(log, "stopped at step 1/60: train.time_limit_min reached") != NULL, "time limit:\n%s", log);
        CHECK_MSG(strstr(log, "9 train + 0 validation cases") != NULL, "fold -1 = all of dev:\n%s", log);
    }
    free(log);
    snprintf(p, sizeof p, "%s/runs/timed/model.safetensors", g_tmp);
    CHECK_MSG(mt_fs_is_file(p), "weights written at the limit");
}

static void expect_error(const char *name, int nsets, const char *const *sets, const char *want1, const char *want2) {
    mt_config *cfg = make_cfg(nsets, sets);
    mt_error_clear();
    mt_status s = mt_train_run(cfg, NULL);
    const char *msg = mt_error_msg();
    CHECK_MSG(s != MT_OK, "%s: fails", name);
    CHECK_MSG(strstr(msg, want1) != NULL, "%s: message names '%s': %s", name, want1, msg);
    if (want2) CHECK_MSG(strstr(msg, want2) != NULL, "%s: message names '%s': %s", name, want2, msg);
    CHECK_MSG(!run_dir_exists("bad"), "%s: no run directory left", name);
    mt_config_free(cfg);
}

static void test_bad_input(void) {
    char missing[400], bad_splits[400];
    snprintf(missing, sizeof missing, "data.hdf5.path=%s/nowhere.h5", g_tmp);
    snprintf(bad_splits, sizeof bad_splits, "data.splits=%s", g_bad_splits);
    {
        const char *sets[] = {"run.name=bad", missing, "data.hdf5.prepare_from="};
        expect_error("missing store", 3, sets, "data.hdf5.path", "nowhere.h5");
    }
    {
        const char *sets[] = {"run.name=bad", "data.fold=5"};
        expect_error("fold out of range", 2, sets, "data.fold", "2 folds");
    }
    {
        const char *sets[] = {"run.name=bad", bad_splits};
        expect_error("unknown split id", 2, sets, "bad_splits.json", "ph_77");
    }
    {
        const char *sets[] = {"run.name=bad", "model.in_channels=2"};
        expect_error("channel mismatch", 2, sets, "model.in_channels", "1 channel");
    }
    {
        const char *sets[] = {"run.name=bad", "model.out_channels=4"};
        expect_error("class mismatch", 2, sets, "model.out_channels", "3 classes");
    }
    {
        const char *sets[] = {"run.name=bad", "train.early_stop.monitor=val_dice_nothing"};
        expect_error("unknown monitor", 2, sets, "train.early_stop.monitor", "val_dice_front_part");
    }
    {
        const char *sets[] = {"run.name=bad", "augment.scale_range=[1.2, 1.4]"};
        expect_error("scale range", 2, sets, "augment.scale_range", "contain 1");
    }
    {
        char prep[400];
        snprintf(prep, sizeof prep, "data.hdf5.prepare_from=%s/no_such_dataset", g_tmp);
        char path[400];
        snprintf(path, sizeof path, "data.hdf5.path=%s/other.h5", g_tmp);
        const char *sets[] = {"run.name=bad", path, prep};
        expect_error("bad dataset folder", 3, sets, "no_such_dataset", NULL);
        char p[400];
        snprintf(p, sizeof p, "%s/other.h5", g_tmp);
        CHECK_MSG(!mt_fs_is_file(p), "no store left behind by a failed prepare");
    }
    {
        /* data.splits with the phantom source is a config error */
        mt_config *cfg = mt_config_default();
        char sp[400];
        snprintf(sp, sizeof sp, "data.splits=%s", g_splits);
        CHECK(mt_config_set(cfg, sp) == MT_OK);
        mt_status s = mt_config_check(cfg);
        CHECK_MSG(s == MT_ERR_CONFIG && strstr(mt_error_msg(), "data.splits"), "splits with phantom: %s",
                  mt_error_msg());
        mt_config_free(cfg);
    }
}

int main(void) {
    if (mt_test_mkdtemp(g_tmp, sizeof g_tmp, "train_store") != 0) return 1;
    write_dataset();
    test_learns_from_store();
    test_early_stopping();
    test_time_limit();
    test_bad_input();
    mt_test_cleanup(g_tmp);
    return mt_test_finish();
}
