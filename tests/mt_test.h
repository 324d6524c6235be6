/* Minimal test support: checks that count failures, random tensors, and
 * comparisons against double-precision references. A test's main() returns
 * mt_test_finish(): non-zero if any check failed, and prints
 * "N passed, M failed". Tests that need a GPU return MT_TEST_SKIP (77). */
#ifndef MT_TEST_H
#define MT_TEST_H

#include <math.h>
#include <stdio.h>

#include "autograd/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

#define MT_TEST_SKIP 77

extern int mt_test_failures;
extern int mt_test_passes;

void mt_test_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CHECK(cond) mt_test_check(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) mt_test_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_NEAR(a, b, tol)                                                            \
    mt_test_check(fabs((double)(a) - (double)(b)) <= (tol), __FILE__, __LINE__,           \
                  "%s = %.9g vs %s = %.9g (tol %g)", #a, (double)(a), #b, (double)(b),   \
                  (double)(tol))

/* Prints the summary line and returns the exit status. */
int mt_test_finish(void);
/* A fresh folder $TMPDIR/mt_test_<name>_XXXXXX (/tmp without TMPDIR) into
 * buf; 0 on success. */
int mt_test_mkdtemp(char *buf, size_t size, const char *name);
/* Removes folder dir (a test's scratch) when the test has no failures so far;
 * a failing test keeps its files to inspect. */
void mt_test_cleanup(const char *dir);

/* A run's metrics.jsonl (launch/train.c): the logged training losses in
 * order (with their steps) and the last value of any key. */
#define MT_TEST_MAX_LOSSES 4096
typedef struct {
    int n;
    long step[MT_TEST_MAX_LOSSES];
    double loss[MT_TEST_MAX_LOSSES];
    double dice_mean; /* last val_dice_mean, -1 if none */
} mt_test_metrics;
/* Reads path into m (a failed open is a test failure). */
void mt_test_read_metrics(const char *path, mt_test_metrics *m);
/* The number after the last "key": in text, NAN if none. */
double mt_test_json_last(const char *text, const char *key);

/* Random f32 CPU tensor, uniform in [lo, hi), from a fixed test stream. */
mt_tensor *mt_test_rand(int ndim, const int64_t *shape, float lo, float hi);
mt_tensor *mt_test_randn(int ndim, const int64_t *shape);
void mt_test_seed(uint64_t seed);
/* Max |t - ref| / (atol + rtol |ref|) <= 1 over all elements; reports the worst. */
int mt_test_allclose(const mt_tensor *t, const double *ref, double atol, double rtol,
                     const char *what);
int mt_test_allclose_t(const mt_tensor *a, const mt_tensor *b, double atol, double rtol,
                       const char *what);
/* Logical contents as a malloc'd double array (caller frees). */
double *mt_test_to_f64(const mt_tensor *t);

/* Per-dtype tolerances for comparing a kernel with a reference (another
 * backend, or the f32 result of the same op), kept in one table (mt_test.c).
 * kind: MT_TOL_EXACT (copies, indices, max), MT_TOL_ELEMENTWISE (one rounding),
 * MT_TOL_REDUCE (sums, norms, softmax: accumulation order differs),
 * MT_TOL_GEMM (conv / matmul: long dot products; tf32 when allowed). */
typedef enum { MT_TOL_EXACT = 0, MT_TOL_ELEMENTWISE, MT_TOL_REDUCE, MT_TOL_GEMM, MT_TOL_NUM_KINDS } mt_tol_kind;
typedef struct {
    double atol, rtol;
} mt_test_tol;
mt_test_tol mt_test_tolerance(mt_dtype dt, mt_tol_kind kind);
/* mt_test_allclose_t with the table's tolerance for (a's dtype, kind). */
int mt_test_close(const mt_tensor *a, const mt_tensor *b, mt_tol_kind kind, const char *what);

/* GPU tests: returns 1 if cuda:0 is usable, else prints why and returns 0
 * (the test then returns MT_TEST_SKIP). */
int mt_test_have_gpu(void);
/* A copy of t on cuda:0 / on the CPU. */
mt_tensor *mt_test_to_gpu(const mt_tensor *t);
mt_tensor *mt_test_to_cpu(const mt_tensor *t);

/* gradcheck with test defaults, counting a check. */
void mt_test_gradcheck(const char *what, mt_gradcheck_fn f, void *ctx, int n, mt_tensor **inputs,
                       double eps, double atol, double rtol);

/* mpirun for tests labelled `mpi`: $MT_MPIRUN (set by CTest) or /usr/bin/mpirun; NULL if absent. */
const char *mt_test_mpirun_path(void);
/* Runs `mpirun -np np <this test executable> args` (as root, oversubscribed,
 * one OpenMP thread per rank), killed after timeout_s. Returns the exit
 * status, MT_TEST_SKIP when mpirun is missing, -1 when it could not run. */
int mt_test_mpirun(int np, const char *args, double timeout_s);
/* The same for another executable (args: shell words, may redirect output). */
int mt_test_mpirun_exe(int np, const char *exe, const char *args, double timeout_s);

#endif
