#include "mt_test.h"

#include "core/backend.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int mt_test_failures = 0;
int mt_test_passes = 0;
static mt_rng g_rng = {12345, 0};

void mt_test_check(int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        mt_test_passes++;
        return;
    }
    mt_test_failures++;
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int mt_test_finish(void) {
    printf("%d passed, %d failed\n", mt_test_passes, mt_test_failures);
    return mt_test_failures ? 1 : 0;
}

void mt_test_seed(uint64_t seed) { mt_rng_init(&g_rng, seed); }

mt_tensor *mt_test_rand(int ndim, const int64_t *shape, float lo, float hi) {
    mt_tensor *t = mt_tensor_new(MT_F32, ndim, shape, MT_DEVICE_CPU);
    int64_t n = mt_tensor_numel(t);
    float *p = MT_F32P(t);
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)mt_rng_uniform(&g_rng);
    return t;
}

mt_tensor *mt_test_randn(int ndim, const int64_t *shape) {
    mt_tensor *t = mt_tensor_new(MT_F32, ndim, shape, MT_DEVICE_CPU);
    int64_t n = mt_tensor_numel(t);
    float *p = MT_F32P(t);
    for (int64_t i = 0; i < n; i++) p[i] = (float)mt_rng_normal(&g_rng);
    return t;
}

double *mt_test_to_f64(const mt_tensor *t) {
    int64_t n = mt_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mt_tensor_to_f64_array(t, d);
    return d;
}

int mt_test_allclose(const mt_tensor *t, const double *ref, double atol, double rtol,
                     const char *what) {
    int64_t n = mt_tensor_numel(t);
    double *v = mt_test_to_f64(t);
    double worst = 0;
    int64_t wi = -1;
    for (int64_t i = 0; i < n; i++) {
        double den = atol + rtol * fabs(ref[i]), diff = fabs(v[i] - ref[i]);
        double err = den > 0 ? diff / den : (diff == 0 ? 0 : INFINITY); /* 0, 0: exact */
        if (!(err <= worst)) { /* also catches NaN */
            worst = isnan(err) ? INFINITY : err;
            wi = i;
        }
    }
    int ok = worst <= 1.0;
    if (!ok)
        mt_test_check(0, __FILE__, __LINE__, "%s: element %lld = %.9g, reference %.9g (atol %g rtol %g)",
                      what, (long long)wi, v[wi], ref[wi], atol, rtol);
    else
        mt_test_passes++;
    free(v);
    return ok;
}

int mt_test_allclose_t(const mt_tensor *a, const mt_tensor *b, double atol, double rtol,
                       const char *what) {
    if (mt_tensor_numel(a) != mt_tensor_numel(b)) {
        mt_test_check(0, __FILE__, __LINE__, "%s: element counts differ", what);
        return 0;
    }
    double *r = mt_test_to_f64(b);
    int ok = mt_test_allclose(a, r, atol, rtol, what);
    free(r);
    return ok;
}

/* The one tolerance table. bf16 stores 8 significant bits (relative step
 * 2^-8 = 3.9e-3): one rounding differs by at most half of that; results of
 * accumulations rounded once more may differ by one bf16 step. f32 GEMM rows
 * allow tf32 (10-bit mantissa inputs) when a test turns tf32 on. */
static const mt_test_tol g_tol[MT_NUM_DTYPES][MT_TOL_NUM_KINDS] = {
    [MT_F32] = {[MT_TOL_EXACT] = {0, 0},
                [MT_TOL_ELEMENTWISE] = {1e-6, 1e-5},
                [MT_TOL_REDUCE] = {1e-5, 1e-4},
                [MT_TOL_GEMM] = {1e-4, 1e-3}},
    [MT_BF16] = {[MT_TOL_EXACT] = {0, 0},
                 [MT_TOL_ELEMENTWISE] = {1e-3, 4e-3},
                 [MT_TOL_REDUCE] = {4e-3, 8e-3},
                 [MT_TOL_GEMM] = {1e-2, 1.6e-2}},
    [MT_I32] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}},
    [MT_U8] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}},
};

mt_test_tol mt_test_tolerance(mt_dtype dt, mt_tol_kind kind) {
    MT_CHECK(dt >= 0 && dt < MT_NUM_DTYPES && kind >= 0 && kind < MT_TOL_NUM_KINDS);
    return g_tol[dt][kind];
}

int mt_test_close(const mt_tensor *a, const mt_tensor *b, mt_tol_kind kind, const char *what) {
    mt_test_tol t = mt_test_tolerance(a->dtype, kind);
    mt_tensor *ah = mt_test_to_cpu(a), *bh = mt_test_to_cpu(b);
    int ok = mt_test_allclose_t(ah, bh, t.atol, t.rtol, what);
    mt_tensor_release(ah);
    mt_tensor_release(bh);
    return ok;
}

int mt_test_have_gpu(void) {
    mt_device d;
    if (mt_device_parse("cuda:0", &d) != 0) {
        printf("no GPU: %s\n", mt_error_msg());
        return 0;
    }
    return 1;
}

mt_tensor *mt_test_to_gpu(const mt_tensor *t) {
    mt_device d = {MT_CUDA, 0};
    return mt_tensor_to_device(t, d);
}

mt_tensor *mt_test_to_cpu(const mt_tensor *t) { return mt_tensor_to_device(t, MT_DEVICE_CPU); }

void mt_test_gradcheck(const char *what, mt_gradcheck_fn f, void *ctx, int n, mt_tensor **inputs,
                       double eps, double atol, double rtol) {
    mt_gradcheck_opts o = {0};
    o.eps = eps;
    o.atol = atol;
    o.rtol = rtol;
    o.seed = 7;
    int ok = mt_gradcheck(f, ctx, n, inputs, &o);
    mt_test_check(ok, __FILE__, __LINE__, "gradcheck %s", what);
}

const char *mt_test_mpirun_path(void) {
    const char *p = getenv("MT_MPIRUN");
    if (p && *p && access(p, X_OK) == 0) return p;
    if (access("/usr/bin/mpirun", X_OK) == 0) return "/usr/bin/mpirun";
    return NULL;
}

int mt_test_mpirun(int np, const char *args, double timeout_s) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    return mt_test_mpirun_exe(np, self, args, timeout_s);
}

int mt_test_mpirun_exe(int np, const char *self, const char *args, double timeout_s) {
    const char *mpirun = mt_test_mpirun_path();
    if (!mpirun) return MT_TEST_SKIP;
    char cmd[16384];
    /* root (CI, containers) needs --allow-run-as-root; 2 ranks on 2 cores --oversubscribe;
     * one OpenMP thread per rank; no CMA single copy (not permitted in containers) */
    snprintf(cmd, sizeof cmd,
             "timeout -k 5 %.0f '%s' --allow-run-as-root --oversubscribe --bind-to none "
             "--mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=passive "
             "-np %d '%s' %s",
             timeout_s, mpirun, np, self, args);
    fflush(stdout);
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

double mt_test_json_last(const char *text, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    double v = NAN;
    for (const char *p = text; (p = strstr(p, pat)); p += strlen(pat)) v = strtod(p + strlen(pat), NULL);
    return v;
}

void mt_test_read_metrics(const char *path, mt_test_metrics *m) {
    memset(m, 0, sizeof *m);
    m->dice_mean = -1;
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "open %s", path);
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        double l = mt_test_json_last(line, "loss");
        if (!isnan(l) && m->n < MT_TEST_MAX_LOSSES) {
            m->step[m->n] = (long)mt_test_json_last(line, "step");
            m->loss[m->n++] = l;
        }
        double d = mt_test_json_last(line, "val_dice_mean");
        if (!isnan(d)) m->dice_mean = d;
    }
    fclose(f);
}

int mt_test_mkdtemp(char *buf, size_t size, const char *name) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, size, "%s/mt_test_%s_XXXXXX", t && *t ? t : "/tmp", name);
    return mkdtemp(buf) ? 0 : -1;
}

void mt_test_cleanup(const char *dir) {
    if (mt_test_failures != 0) return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
