/* LABELS: interop */
/* Numerical interop with PyTorch: one UNet3D training step's loss, logits and
 * every parameter gradient agree with the PyTorch twin
 * (experiments/unet3d_torch.py) loaded with our initial weights.
 *
 * The test builds small models with the library, runs forward + dice_ce +
 * backward on a random batch, writes the bundle (weights / batch / grads as
 * safetensors; format in tests/interop_torch.py) into a temporary directory
 * and runs `PYTHON tests/interop_torch.py DIR`, which exits 0 only when
 * everything agrees. Configurations:
 *   A  features [4, 8, 16], instance norm (affine), leaky ReLU, transposed-conv
 *      upsampling, stride-2 conv downsampling (the default architecture);
 *   B  features [4, 8, 16], batch norm, ReLU, trilinear upsampling, max-pool
 *      downsampling, no stage-conv bias;
 * both with 2 input / 3 output channels, batch 2, patch 12 x 16 x 20.
 * Negative control: bundle A with one gradient scaled by 1.01 must be
 * rejected (exit status 1), so the comparison can fail.
 *
 * PYTHON: $MT_TORCH_PYTHON, else /root/torchvenv/bin/python, else python3,
 * the first that can `import torch, safetensors`; skipped (77) if none can.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "launch/fsutil.h"
#include "launch/safetensors.h"
#include "layers/models/unet3d.h"
#include "losses/losses.h"
#include "mt_test.h"

static const char *act_name(mt_act_type a) {
    return a == MT_ACT_RELU ? "relu" : a == MT_ACT_GELU ? "gelu" : "leaky_relu";
}

static void unet_json(char *buf, size_t n, const mt_unet3d_config *c) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "{\"in_channels\": %d, \"out_channels\": %d, \"features\": [",
                          c->in_channels, c->out_channels);
    for (int l = 0; l < c->n_levels; l++)
        k += (size_t)snprintf(buf + k, n - k, "%s%d", l ? ", " : "", c->features[l]);
    snprintf(buf + k, n - k,
             "], \"norm\": \"%s\", \"norm_groups\": %d, \"norm_affine\": %s, \"norm_eps\": %.9g, "
             "\"bn_momentum\": %.9g, \"act\": \"%s\", \"act_slope\": %.9g, \"upsample\": \"%s\", "
             "\"downsample\": \"%s\", \"deep_supervision\": false, \"dropout\": 0.0, \"conv_bias\": %s}",
             mt_norm_type_name(c->norm), c->norm_groups, c->norm_affine ? "true" : "false",
             (double)c->norm_eps, (double)c->bn_momentum, act_name(c->act), (double)c->act_slope,
             c->upsample == MT_UPSAMPLE_TRANSPOSED ? "transposed" : "trilinear",
             c->downsample == MT_DOWNSAMPLE_CONV ? "conv" : "maxpool", c->conv_bias ? "true" : "false");
}

static int save(mt_safetensors *st, const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    mt_status s = mt_safetensors_save(st, path);
    mt_safetensors_free(st);
    CHECK_MSG(s == MT_OK, "save %s: %s", path, s == MT_OK ? "" : mt_error_msg());
    return s == MT_OK;
}

/* Writes the bundle for cfg into dir; with perturb, the gradient of
 * `perturb` is scaled by 1.01 in the written file. Returns 1 on success. */
static int make_bundle(const char *dir, const mt_unet3d_config *cfg, uint64_t seed, const char *perturb) {
    const int64_t patch[3] = {12, 16, 20};
    const int batch = 2;
    mt_module *model = NULL;
    mt_status s = mt_unet3d_new(&model, cfg, seed);
    CHECK_MSG(s == MT_OK, "unet3d_new: %s", s == MT_OK ? "" : mt_error_msg());
    if (s != MT_OK) return 0;
    mt_loss_config lc = mt_loss_config_default(MT_LOSS_DICE_CE);
    lc.dice.include_background = 0;
    lc.dice.batch = 0;

    mt_rng rng;
    mt_rng_init(&rng, seed + 17);
    mt_tensor *x = mt_tensor_new(MT_F32, MT_SHAPE(batch, cfg->in_channels, patch[0], patch[1], patch[2]),
                                 MT_DEVICE_CPU);
    mt_rng_fill_normal(x, &rng, 0.5f, 1.0f);
    mt_tensor *y = mt_tensor_new(MT_U8, MT_SHAPE(batch, 1, patch[0], patch[1], patch[2]), MT_DEVICE_CPU);
    uint8_t *yp = (uint8_t *)mt_tensor_data(y);
    for (int64_t i = 0, n = mt_tensor_numel(y); i < n; i++)
        yp[i] = (uint8_t)mt_rng_randint(&rng, 0, cfg->out_channels);

    int ok = 1;
    char js[2048];
    mt_safetensors st;
    mt_safetensors_init(&st);
    mt_named_tensors sd = {0};
    mt_module_state_dict(model, &sd);
    for (int k = 0; k < sd.n; k++) CHECK(mt_safetensors_add(&st, sd.items[k].name, sd.items[k].tensor) == MT_OK);
    mt_named_tensors_free(&sd);
    unet_json(js, sizeof js, cfg);
    mt_safetensors_set_meta(&st, "unet3d", js);
    snprintf(js, sizeof js,
             "{\"kind\": \"dice_ce\", \"include_background\": false, \"batch\": false, \"smooth_nr\": "
             "%.9g, \"smooth_dr\": %.9g, \"lambda_dice\": %.9g, \"lambda_ce\": %.9g}",
             lc.dice.smooth_nr, lc.dice.smooth_dr, lc.lambda_dice, lc.lambda_ce);
    mt_safetensors_set_meta(&st, "loss", js);
    ok &= save(&st, dir, "weights.safetensors");

    mt_safetensors_init(&st);
    CHECK(mt_safetensors_add(&st, "image", x) == MT_OK);
    CHECK(mt_safetensors_add(&st, "label", y) == MT_OK);
    ok &= save(&st, dir, "batch.safetensors");

    mt_tensor *logits = mt_unet3d_forward(model, x), *loss = NULL;
    s = mt_loss_compute(&loss, logits, y, &lc);
    CHECK_MSG(s == MT_OK, "loss: %s", s == MT_OK ? "" : mt_error_msg());
    if (s == MT_OK) {
        s = mt_backward(loss, NULL, 0);
        CHECK_MSG(s == MT_OK, "backward: %s", s == MT_OK ? "" : mt_error_msg());
    }
    ok &= s == MT_OK;
    mt_safetensors_init(&st);
    if (ok) {
        CHECK(mt_safetensors_add(&st, "loss", loss) == MT_OK);
        mt_tensor *ld = mt_tensor_detach(logits);
        CHECK(mt_safetensors_add(&st, "logits", ld) == MT_OK);
        mt_tensor_release(ld);
        mt_named_tensors ps = {0};
        mt_module_named_parameters(model, &ps);
        int found = perturb == NULL;
        for (int k = 0; k < ps.n; k++) {
            mt_tensor *g = ps.items[k].tensor->grad;
            CHECK_MSG(g != NULL, "parameter %s got no gradient", ps.items[k].name);
            if (!g) {
                ok = 0;
                continue;
            }
            if (perturb && !strcmp(perturb, ps.items[k].name)) {
                mt_tensor *gp = mt_mul_scalar(g, 1.01f);
                CHECK(mt_safetensors_add(&st, ps.items[k].name, gp) == MT_OK);
                mt_tensor_release(gp);
                found = 1;
            } else {
                CHECK(mt_safetensors_add(&st, ps.items[k].name, g) == MT_OK);
            }
        }
        CHECK_MSG(found, "parameter %s to perturb not found", perturb);
        mt_named_tensors_free(&ps);
        ok &= save(&st, dir, "grads.safetensors");
    } else {
        mt_safetensors_free(&st);
    }
    mt_tensor_release(logits);
    mt_tensor_release(loss);
    mt_tensor_release(x);
    mt_tensor_release(y);
    mt_module_free(model);
    return ok;
}

static int python_ok(const char *py) {
    if (!py || !*py) return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, safetensors' >/dev/null 2>&1", py);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

/* Exit status of interop_torch.py on dir, -1 if it did not exit normally. */
static int run_check(const char *py, const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/interop_torch.py' '%s'", py, MT_SOURCE_DIR, dir);
    fflush(stdout);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void remove_bundle(const char *dir) {
    const char *files[] = {"weights.safetensors", "batch.safetensors", "grads.safetensors"};
    char path[1024];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    const char *cands[] = {getenv("MT_TORCH_PYTHON"), "/root/torchvenv/bin/python", "python3"};
    const char *py = NULL;
    for (int k = 0; k < 3 && !py; k++)
        if (python_ok(cands[k])) py = cands[k];
    if (!py) {
        printf("SKIP: no python with torch and safetensors (set MT_TORCH_PYTHON)\n");
        return MT_TEST_SKIP;
    }
    printf("python: %s\n", py);
    mt_cpu_set_num_threads(2);

    mt_unet3d_config a;
    mt_unet3d_config_default(&a);
    a.in_channels = 2;
    a.out_channels = 3;
    a.n_levels = 3;
    a.features[0] = 4;
    a.features[1] = 8;
    a.features[2] = 16;
    mt_unet3d_config b = a;
    b.norm = MT_NORM_BATCH;
    b.act = MT_ACT_RELU;
    b.upsample = MT_UPSAMPLE_TRILINEAR;
    b.downsample = MT_DOWNSAMPLE_MAXPOOL;
    b.conv_bias = 0;

    struct {
        const char *name;
        const mt_unet3d_config *cfg;
        uint64_t seed;
        const char *perturb;
        int want;
    } cases[] = {
        {"A (instance norm, leaky ReLU, transposed conv)", &a, 11, NULL, 0},
        {"B (batch norm, ReLU, trilinear, max-pool)", &b, 12, NULL, 0},
        {"negative control (A, enc2.conv2.weight gradient x 1.01)", &a, 11, "enc2.conv2.weight", 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char dir[] = "/tmp/mt_interop_XXXXXX";
        if (!mkdtemp(dir)) {
            CHECK_MSG(0, "mkdtemp failed");
            continue;
        }
        printf("--- %s\n", cases[k].name);
        if (make_bundle(dir, cases[k].cfg, cases[k].seed, cases[k].perturb)) {
            int rc = run_check(py, dir);
            CHECK_MSG(rc == cases[k].want, "%s: interop_torch.py exited %d, expected %d", cases[k].name,
                      rc, cases[k].want);
        }
        remove_bundle(dir);
    }
    return mt_test_finish();
}
