/* The medtrain command line.
 *
 *   medtrain [train] [CONFIG.yaml] [--set KEY=VALUE]... [--resume [PATH]]
 *   medtrain config --explain
 *   medtrain config --print [CONFIG.yaml] [--set KEY=VALUE]...
 *   medtrain config --check [CONFIG.yaml] [--set KEY=VALUE]...
 *   medtrain prepare DATASET_DIR OUT.h5 [--spacing X,Y,Z] [--threads N] (launch/prepare.c)
 *   medtrain predict WEIGHTS.safetensors INPUT OUTPUT [...] (launch/predict.c)
 *   medtrain evaluate WEIGHTS.safetensors (STORE.h5 | DATASET_DIR) --split S --out DIR [...] (launch/evaluate.c)
 *   medtrain --help | --version
 *
 * Without a config file the built-in defaults are used (the schema defaults,
 * which configs/default.yaml spells out), so `medtrain` alone works from any
 * directory. Errors print "medtrain: error: <message>" on stderr; the exit
 * status is 2 for usage and config errors, 1 for runtime errors.
 */
#include "launch/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "launch/config.h"
#include "launch/dist.h"
#include "launch/evaluate.h"
#include "launch/fsutil.h"
#include "launch/predict.h"
#include "launch/prepare.h"
#include "launch/train.h"

#define EXIT_USAGE 2
#define EXIT_RUNTIME 1

static void print_usage(FILE *fp) {
    fprintf(fp,
            "usage: medtrain [train] [CONFIG.yaml] [--set KEY=VALUE]... [--resume [PATH]]\n"
            "       medtrain config --explain\n"
            "       medtrain config --print [CONFIG.yaml] [--set KEY=VALUE]...\n"
            "       medtrain config --check [CONFIG.yaml] [--set KEY=VALUE]...\n"
            "       medtrain prepare DATASET_DIR OUT.h5 [--spacing X,Y,Z] [--threads N] (see prepare --help)\n"
            "       medtrain predict WEIGHTS.safetensors INPUT OUTPUT [--overlap X] [--mirror] (see predict --help)\n"
            "       medtrain evaluate WEIGHTS.safetensors (STORE.h5 | DATASET_DIR) --split S --out DIR\n"
            "                [--splits FILE] [--mirror] (see evaluate --help)\n"
            "       medtrain --help | --version\n"
            "\n"
            "Trains a 3D segmentation model described by CONFIG.yaml (without one: the built-in\n"
            "default, a small UNet3D on synthetic phantom data). Runs are written to\n"
            "<run.dir>/<run.name>/: config.yaml, train.log, metrics.jsonl, checkpoints/.\n"
            "\n"
            "options:\n"
            "  --set KEY=VALUE   override a config key (repeatable), e.g. --set optim.lr=0.01,\n"
            "                    --set data.patch_size=[48,48,48]\n"
            "  --resume [PATH]   continue from a checkpoint: PATH is a checkpoint file or a run\n"
            "                    directory (its newest checkpoint); without PATH, the run named\n"
            "                    by run.name. Without CONFIG.yaml the run's config.yaml is used.\n"
            "  --help            this text\n"
            "  --version         version and compiled-in backends\n"
            "\n"
            "config actions:\n"
            "  --explain         list every key with type, range, default and help\n"
            "  --print           print the resolved config (file + --set + defaults) as YAML\n"
            "  --check           parse and check the config (also cross-key rules) without training\n");
}

/* --help: the usage, then every config key with its help. */
static void print_help(void) {
    print_usage(stdout);
    printf("\nconfiguration keys (YAML sections; also `medtrain config --explain`):\n\n");
    mt_config_explain(stdout);
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "medtrain: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'medtrain --help'.\n");
    return EXIT_USAGE;
}

/* Prints the recorded error; returns `code`. Everything before training
 * (config file, --set, --resume resolution, checks) is a usage/config error. */
static int report(int code) {
    fprintf(stderr, "medtrain: error: %s\n", mt_error_msg());
    return code;
}

static int has_yaml_ext(const char *s) {
    size_t n = strlen(s);
    return (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

typedef struct {
    const char *config;  /* positional CONFIG.yaml or NULL */
    const char **sets;
    int nsets;
    int resume;          /* --resume given */
    const char *resume_arg;
    int explain, print, check; /* config actions */
} cli_args;

/* Parses options shared by train and config; returns -1 to go on, or an exit status. */
static int parse_args(cli_args *a, int argc, char **argv, int first, int is_config_cmd, int implicit_train) {
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--set")) {
            if (i + 1 >= argc) return usage_error("%s needs KEY=VALUE", arg);
            a->sets[a->nsets++] = argv[++i];
        } else if (!strncmp(arg, "--set=", 6)) {
            a->sets[a->nsets++] = arg + 6;
        } else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help();
            return 0;
        } else if (!is_config_cmd && !strcmp(arg, "--resume")) {
            a->resume = 1;
            if (i + 1 < argc && argv[i + 1][0] != '-' && !has_yaml_ext(argv[i + 1])) a->resume_arg = argv[++i];
        } else if (!is_config_cmd && !strncmp(arg, "--resume=", 9)) {
            a->resume = 1;
            a->resume_arg = arg + 9;
            if (!*a->resume_arg) return usage_error("%s needs a path", "--resume=");
        } else if (is_config_cmd && !strcmp(arg, "--explain")) {
            a->explain = 1;
        } else if (is_config_cmd && !strcmp(arg, "--print")) {
            a->print = 1;
        } else if (is_config_cmd && !strcmp(arg, "--check")) {
            a->check = 1;
        } else if (arg[0] == '-' && arg[1]) {
            return usage_error("unknown option '%s'", arg);
        } else if (a->config) {
            return usage_error("unexpected argument '%s' (only one config file is read)", arg);
        } else {
            if (implicit_train && i == first && !has_yaml_ext(arg) && !mt_fs_is_file(arg))
                return usage_error("unknown command '%s' (commands: train, config, prepare, predict, evaluate; a config file ends in .yaml)",
                                   arg);
            a->config = arg;
        }
    }
    return -1;
}

/* The resolved config: CONFIG.yaml, else the resumed run's config.yaml, else the defaults. */
static mt_status load_config(mt_config **cfg, const cli_args *a, const char *resume_ckpt) {
    if (a->config) return mt_config_load(cfg, a->config, a->nsets, a->sets);
    if (resume_ckpt) {
        /* <run>/checkpoints/<file> -> <run>/config.yaml */
        char *dup = strdup(resume_ckpt);
        MT_CHECK(dup);
        char *slash = strrchr(dup, '/');
        mt_status s = MT_ERR_IO;
        if (slash) {
            *slash = 0;
            char *s2 = strrchr(dup, '/');
            const char *dirname = s2 ? s2 + 1 : dup;
            if (!strcmp(dirname, "checkpoints")) {
                if (s2)
                    *s2 = 0;
                else
                    strcpy(dup, ".");
                size_t n = strlen(dup) + 16;
                char *path = malloc(n);
                MT_CHECK(path);
                snprintf(path, n, "%s/config.yaml", dup);
                if (mt_fs_is_file(path)) {
                    s = mt_config_load(cfg, path, a->nsets, a->sets);
                    free(path);
                    free(dup);
                    return s;
                }
                free(path);
            }
        }
        free(dup);
    }
    *cfg = mt_config_default();
    for (int i = 0; i < a->nsets; i++) {
        mt_status s = mt_config_set(*cfg, a->sets[i]);
        if (s != MT_OK) {
            mt_config_free(*cfg);
            *cfg = NULL;
            return s;
        }
    }
    return MT_OK;
}

static int cmd_config(cli_args *a) {
    if (a->explain + a->print + a->check != 1)
        return usage_error("%s", "config needs exactly one of --explain, --print, --check");
    if (a->explain) {
        if (a->config || a->nsets) return usage_error("%s", "config --explain takes no config file or --set");
        mt_config_explain(stdout);
        return 0;
    }
    mt_config *cfg;
    mt_status s = load_config(&cfg, a, NULL);
    if (s != MT_OK) return report(EXIT_USAGE);
    if (a->print) {
        char *y = mt_config_to_yaml(cfg);
        fputs(y, stdout);
        free(y);
    } else {
        mt_device dev;
        s = mt_config_check(cfg);
        if (s == MT_OK) s = mt_config_device(cfg, &dev);
        if (s != MT_OK) {
            mt_config_free(cfg);
            return report(EXIT_USAGE);
        }
        printf("%s: OK\n", a->config ? a->config : "built-in default config");
    }
    mt_config_free(cfg);
    return 0;
}

static int cmd_train(cli_args *a) {
    char *ckpt = NULL;
    mt_status s;
    /* a resume path resolves first: without CONFIG.yaml it names the config */
    if (a->resume && a->resume_arg) {
        s = mt_rundir_resolve_resume(&ckpt, a->resume_arg, NULL);
        if (s != MT_OK) return report(EXIT_USAGE);
    }
    mt_config *cfg;
    s = load_config(&cfg, a, ckpt);
    if (s != MT_OK) {
        free(ckpt);
        return report(EXIT_USAGE);
    }
    if (a->resume && !a->resume_arg) {
        s = mt_rundir_resolve_resume(&ckpt, NULL, cfg);
        mt_config_free(cfg);
        cfg = NULL;
        /* without CONFIG.yaml, the run's own config.yaml (plus --set) */
        if (s == MT_OK) s = load_config(&cfg, a, ckpt);
        if (s != MT_OK) {
            free(ckpt);
            return report(EXIT_USAGE);
        }
    }
    mt_device dev;
    s = mt_config_check(cfg);
    if (s == MT_OK) s = mt_config_device(cfg, &dev);
    if (s == MT_OK) {
        mt_error_clear();
        s = mt_train_run(cfg, ckpt);
    }
    int rc = 0;
    if (s != MT_OK && mt_dist_launched_by_mpi() && mt_dist_get()->world > 1) {
        /* the other ranks would wait in a collective: end the whole job */
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", mt_error_msg());
        mt_dist_abort(mt_dist_get(), s == MT_ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME, msg);
    }
    if (s != MT_OK) rc = report(s == MT_ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME);
    mt_config_free(cfg);
    free(ckpt);
    return rc;
}

int mt_cli_main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
        print_help();
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("medtrain %s (backends: cpu%s)\n", MT_VERSION, mt_backend_get(MT_CUDA) ? ", cuda" : "");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "prepare")) return mt_prepare_cli(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "predict")) return mt_predict_cli(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "evaluate")) return mt_evaluate_cli(argc - 1, argv + 1);
    cli_args a;
    memset(&a, 0, sizeof a);
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    MT_CHECK(a.sets);
    int rc;
    if (argc >= 2 && !strcmp(argv[1], "config")) {
        rc = parse_args(&a, argc, argv, 2, 1, 0);
        if (rc < 0) rc = cmd_config(&a);
    } else {
        int train = argc >= 2 && !strcmp(argv[1], "train");
        rc = parse_args(&a, argc, argv, train ? 2 : 1, 0, !train);
        if (rc < 0) rc = cmd_train(&a);
    }
    free(a.sets);
    return rc;
}
