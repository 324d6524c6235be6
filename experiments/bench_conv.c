/* CPU conv3d / sgemm benchmark (issue 2).
 *
 *   bench_conv [--rounds R] [--reps N] [--json FILE] [--no-sgemm]
 *              [--impls lib,plain,v2c] [--shapes 0,1,..]
 *
 * 1. This machine's sgemm GFLOP/s: large square sgemm (2 threads unless
 *    OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise) through OpenBLAS
 *    (cblas_sgemm) and oneDNN (dnnl_sgemm); the larger is the reference.
 * 2. conv3d forward, backward-data and backward-filter GFLOP/s at U-Net
 *    shapes (N = 2), through
 *      lib    the library kernels (mt_cpu_conv3d_*: oneDNN, blocked layouts
 *             chosen by oneDNN, reorders from/to NCDHW included, cached);
 *      plain  oneDNN primitives on the plain layouts (ncdhw / oidhw), no
 *             reorders (the alternative kept here for the record);
 *      v2c    vol2col / col2vol + dnnl_sgemm (the other alternative).
 *    Each number is the best over R rounds of N repetitions, the rounds
 *    interleaved over all cases so that a stretch of load from other users of
 *    the (shared) machine does not spoil one case's every repetition.
 * --json writes the lib numbers for experiments/bench_conv_torch.py.
 *
 * FLOPs per pass = 2 * N * Cout * oD*oH*oW * Cin/groups * kD*kH*kW (the same
 * for the three passes; for the transposed conv, of its adjoint conv).
 */
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "core/rng.h"
#include "autograd/ops.h"
#include "core/tensor.h"

char *openblas_get_corename(void);
int openblas_get_num_threads(void);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int g_reps = 3;

/* Best time of fn(ctx) over g_reps runs after one warm-up run. */
static double best_time(void (*fn)(void *), void *ctx) {
    fn(ctx);
    double best = 1e30;
    for (int r = 0; r < g_reps; r++) {
        double t = now();
        fn(ctx);
        t = now() - t;
        if (t < best) best = t;
    }
    return best;
}

static void fill_rand(float *p, int64_t n, uint64_t seed) {
    mt_rng r;
    mt_rng_init(&r, seed);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mt_rng_uniform(&r) * 2.0 - 1.0);
}

/* ------------------------------------------------------------- sgemm */

typedef struct {
    int lib, n;
    float *a, *b, *c;
} sgemm_ctx;

static void sgemm_run(void *v) {
    sgemm_ctx *s = v;
    if (s->lib == 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0f, s->a, s->n,
                    s->b, s->n, 0.0f, s->c, s->n);
    else
        dnnl_sgemm('N', 'N', s->n, s->n, s->n, 1.0f, s->a, s->n, s->b, s->n, 0.0f, s->c, s->n);
}

static double measure_sgemm(int lib, int n) {
    sgemm_ctx s = {lib, n, malloc(sizeof(float) * n * n), malloc(sizeof(float) * n * n),
                   malloc(sizeof(float) * n * n)};
    fill_rand(s.a, (int64_t)n * n, 1);
    fill_rand(s.b, (int64_t)n * n, 2);
    double t = best_time(sgemm_run, &s);
    free(s.a);
    free(s.b);
    free(s.c);
    return 2.0 * n * (double)n * n / t / 1e9;
}

/* ------------------------------------------------------- problem shapes */

typedef struct {
    const char *name;
    int transposed; /* the op is conv_transpose3d whose adjoint conv is described */
    int n, cin, cout;    /* conv: x (N, Cin, in), y (N, Cout, out) */
    int in[3], k, stride, pad;
} shape;

static const shape g_shapes[] = {
    {"32->32 40x56x40 k3 p1", 0, 2, 32, 32, {40, 56, 40}, 3, 1, 1},
    {"64->64 20x28x20 k3 p1", 0, 2, 64, 64, {20, 28, 20}, 3, 1, 1},
    {"1->32 40x56x40 k3 p1", 0, 2, 1, 32, {40, 56, 40}, 3, 1, 1},
    {"down 32->64 k3 s2 p1", 0, 2, 32, 64, {40, 56, 40}, 3, 2, 1},
    {"down 32->64 k2 s2", 0, 2, 32, 64, {40, 56, 40}, 2, 2, 0},
    /* conv_transpose3d 64 -> 32, k2 s2, 20x28x20 -> 40x56x40: its adjoint
     * conv maps x (32 @ 40x56x40) to y (64 @ 20x28x20) */
    {"up T 64->32 k2 s2", 1, 2, 32, 64, {40, 56, 40}, 2, 2, 0},
    /* the segmentation head: 1x1x1 conv to 3 classes */
    {"head 32->3 k1", 0, 2, 32, 3, {40, 56, 40}, 1, 1, 0},
};

typedef struct {
    const shape *s;
    int out[3];
    mt_conv_params p;
    mt_tensor *x, *w, *y, *dy, *dx, *dw;
    int pass; /* 0 conv fwd, 1 conv bwd data, 2 conv bwd filter */
    /* plain-layout oneDNN */
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_primitive_t prim[3];
    dnnl_memory_t msrc, mwei, mdst;
    /* vol2col */
    float *col;
    int chunk; /* output depth planes per column buffer */
} prob;

static double prob_flops(const prob *p) {
    const shape *s = p->s;
    double ov = (double)p->out[0] * p->out[1] * p->out[2];
    return 2.0 * s->n * s->cout * ov * s->cin * s->k * s->k * s->k;
}

/* ---- lib */
static void lib_run(void *v) {
    prob *p = v;
    if (p->pass == 0) mt_cpu_conv3d_forward(p->y, p->x, p->w, NULL, &p->p);
    if (p->pass == 1) mt_cpu_conv3d_backward_data(p->dx, p->dy, p->w, &p->p);
    if (p->pass == 2) mt_cpu_conv3d_backward_filter(p->dw, NULL, p->x, p->dy, &p->p);
}

/* ---- oneDNN, plain layouts */
#define DN(e)                                                                   \
    do {                                                                        \
        dnnl_status_t s_ = (e);                                                 \
        if (s_ != dnnl_success) {                                               \
            fprintf(stderr, "%s failed: %d\n", #e, (int)s_);                    \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

static void plain_init(prob *p) {
    const shape *s = p->s;
    DN(dnnl_engine_create(&p->eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&p->strm, p->eng, dnnl_stream_default_flags));
    dnnl_dims_t sd = {s->n, s->cin, s->in[0], s->in[1], s->in[2]};
    dnnl_dims_t dd = {s->n, s->cout, p->out[0], p->out[1], p->out[2]};
    dnnl_dims_t wd = {s->cout, s->cin, s->k, s->k, s->k};
    dnnl_memory_desc_t src, wei, dst;
    DN(dnnl_memory_desc_init_by_tag(&src, 5, sd, dnnl_f32, dnnl_ncdhw));
    DN(dnnl_memory_desc_init_by_tag(&dst, 5, dd, dnnl_f32, dnnl_ncdhw));
    DN(dnnl_memory_desc_init_by_tag(&wei, 5, wd, dnnl_f32, dnnl_oidhw));
    dnnl_dims_t st = {s->stride, s->stride, s->stride}, dl = {0, 0, 0};
    dnnl_dims_t pl = {s->pad, s->pad, s->pad}, pr;
    for (int j = 0; j < 3; j++)
        pr[j] = (p->out[j] - 1) * s->stride + s->k - s->in[j] - s->pad;
    dnnl_convolution_desc_t fd, bd, wdsc;
    DN(dnnl_dilated_convolution_forward_desc_init(&fd, dnnl_forward_training,
                                                  dnnl_convolution_direct, &src, &wei, NULL, &dst,
                                                  st, dl, pl, pr));
    dnnl_primitive_desc_t fpd, bpd, wpd;
    DN(dnnl_primitive_desc_create(&fpd, &fd, NULL, p->eng, NULL));
    DN(dnnl_dilated_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &src, &wei,
                                                        &dst, st, dl, pl, pr));
    DN(dnnl_primitive_desc_create(&bpd, &bd, NULL, p->eng, fpd));
    DN(dnnl_dilated_convolution_backward_weights_desc_init(&wdsc, dnnl_convolution_direct, &src,
                                                           &wei, NULL, &dst, st, dl, pl, pr));
    DN(dnnl_primitive_desc_create(&wpd, &wdsc, NULL, p->eng, fpd));
    DN(dnnl_primitive_create(&p->prim[0], fpd));
    DN(dnnl_primitive_create(&p->prim[1], bpd));
    DN(dnnl_primitive_create(&p->prim[2], wpd));
    const char *impl[3];
    DN(dnnl_primitive_desc_query(fpd, dnnl_query_impl_info_str, 0, &impl[0]));
    DN(dnnl_primitive_desc_query(bpd, dnnl_query_impl_info_str, 0, &impl[1]));
    DN(dnnl_primitive_desc_query(wpd, dnnl_query_impl_info_str, 0, &impl[2]));
    printf("    plain-layout oneDNN implementations: fwd %s, bwd_data %s, bwd_weights %s\n",
           impl[0], impl[1], impl[2]);
    DN(dnnl_memory_create(&p->msrc, &src, p->eng, DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&p->mwei, &wei, p->eng, DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&p->mdst, &dst, p->eng, DNNL_MEMORY_NONE));
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_desc_destroy(bpd);
    dnnl_primitive_desc_destroy(wpd);
}

static void plain_run(void *v) {
    prob *p = v;
    if (p->pass == 0) {
        DN(dnnl_memory_set_data_handle(p->msrc, MT_F32P(p->x)));
        DN(dnnl_memory_set_data_handle(p->mwei, MT_F32P(p->w)));
        DN(dnnl_memory_set_data_handle(p->mdst, MT_F32P(p->y)));
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, p->msrc}, {DNNL_ARG_WEIGHTS, p->mwei},
                                {DNNL_ARG_DST, p->mdst}};
        DN(dnnl_primitive_execute(p->prim[0], p->strm, 3, a));
    } else if (p->pass == 1) {
        DN(dnnl_memory_set_data_handle(p->msrc, MT_F32P(p->dx)));
        DN(dnnl_memory_set_data_handle(p->mwei, MT_F32P(p->w)));
        DN(dnnl_memory_set_data_handle(p->mdst, MT_F32P(p->dy)));
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_SRC, p->msrc}, {DNNL_ARG_WEIGHTS, p->mwei},
                                {DNNL_ARG_DIFF_DST, p->mdst}};
        DN(dnnl_primitive_execute(p->prim[1], p->strm, 3, a));
    } else {
        DN(dnnl_memory_set_data_handle(p->msrc, MT_F32P(p->x)));
        DN(dnnl_memory_set_data_handle(p->mwei, MT_F32P(p->dw)));
        DN(dnnl_memory_set_data_handle(p->mdst, MT_F32P(p->dy)));
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, p->msrc}, {DNNL_ARG_DIFF_WEIGHTS, p->mwei},
                                {DNNL_ARG_DIFF_DST, p->mdst}};
        DN(dnnl_primitive_execute(p->prim[2], p->strm, 3, a));
    }
    DN(dnnl_stream_wait(p->strm));
}

/* ---- vol2col + sgemm (groups 1) */

/* col (Cin*k^3, nd*oH*oW) from x_n (Cin, D, H, W) for output planes od0.. */
static void vol2col(const prob *p, const float *x, float *col, int od0, int nd) {
    const shape *s = p->s;
    const int K = s->k, rows = s->cin * K * K * K, ohw = p->out[1] * p->out[2];
    const int64_t ncols = (int64_t)nd * ohw;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int c = r / (K * K * K), kk = r % (K * K * K);
        int kd = kk / (K * K), kh = (kk / K) % K, kw = kk % K;
        float *dst = col + (int64_t)r * ncols;
        const float *xc = x + (int64_t)c * s->in[0] * s->in[1] * s->in[2];
        for (int od = od0; od < od0 + nd; od++) {
            int id = od * s->stride - s->pad + kd;
            for (int oh = 0; oh < p->out[1]; oh++) {
                int ih = oh * s->stride - s->pad + kh;
                float *d = dst + ((int64_t)(od - od0) * p->out[1] + oh) * p->out[2];
                if (id < 0 || id >= s->in[0] || ih < 0 || ih >= s->in[1]) {
                    memset(d, 0, sizeof(float) * p->out[2]);
                    continue;
                }
                const float *xr = xc + ((int64_t)id * s->in[1] + ih) * s->in[2];
                for (int ow = 0; ow < p->out[2]; ow++) {
                    int iw = ow * s->stride - s->pad + kw;
                    d[ow] = (iw >= 0 && iw < s->in[2]) ? xr[iw] : 0.0f;
                }
            }
        }
    }
}

/* dx_n += col2vol(col) (parallel over channels: no write conflicts). */
static void col2vol(const prob *p, const float *col, float *dx, int od0, int nd) {
    const shape *s = p->s;
    const int K = s->k, K3 = K * K * K, ohw = p->out[1] * p->out[2];
    const int64_t ncols = (int64_t)nd * ohw;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < s->cin; c++) {
        float *xc = dx + (int64_t)c * s->in[0] * s->in[1] * s->in[2];
        for (int kk = 0; kk < K3; kk++) {
            int kd = kk / (K * K), kh = (kk / K) % K, kw = kk % K;
            const float *src = col + (int64_t)(c * K3 + kk) * ncols;
            for (int od = od0; od < od0 + nd; od++) {
                int id = od * s->stride - s->pad + kd;
                if (id < 0 || id >= s->in[0]) continue;
                for (int oh = 0; oh < p->out[1]; oh++) {
                    int ih = oh * s->stride - s->pad + kh;
                    if (ih < 0 || ih >= s->in[1]) continue;
                    const float *sr = src + ((int64_t)(od - od0) * p->out[1] + oh) * p->out[2];
                    float *xr = xc + ((int64_t)id * s->in[1] + ih) * s->in[2];
                    for (int ow = 0; ow < p->out[2]; ow++) {
                        int iw = ow * s->stride - s->pad + kw;
                        if (iw >= 0 && iw < s->in[2]) xr[iw] += sr[ow];
                    }
                }
            }
        }
    }
}

static void v2c_run(void *v) {
    prob *p = v;
    const shape *s = p->s;
    const int K3 = s->k * s->k * s->k, rows = s->cin * K3;
    const int64_t ovol = (int64_t)p->out[0] * p->out[1] * p->out[2], ohw = p->out[1] * p->out[2];
    const int64_t xvol = (int64_t)s->in[0] * s->in[1] * s->in[2];
    if (p->pass == 1) memset(MT_F32P(p->dx), 0, mt_tensor_nbytes(p->dx));
    for (int n = 0; n < s->n; n++) {
        const float *xn = MT_F32P(p->x) + n * s->cin * xvol;
        float *yn = MT_F32P(p->y) + n * s->cout * ovol;
        const float *dyn = MT_F32P(p->dy) + n * s->cout * ovol;
        float *dxn = MT_F32P(p->dx) + n * s->cin * xvol;
        for (int od0 = 0; od0 < p->out[0]; od0 += p->chunk) {
            int nd = p->out[0] - od0 < p->chunk ? p->out[0] - od0 : p->chunk;
            int64_t ncols = nd * ohw, off = od0 * ohw;
            if (p->pass == 0) {
                vol2col(p, xn, p->col, od0, nd);
                dnnl_sgemm('N', 'N', s->cout, ncols, rows, 1.0f, MT_F32P(p->w), rows, p->col,
                           ncols, 0.0f, yn + off, ovol);
            } else if (p->pass == 1) {
                dnnl_sgemm('T', 'N', rows, ncols, s->cout, 1.0f, MT_F32P(p->w), rows, dyn + off,
                           ovol, 0.0f, p->col, ncols);
                col2vol(p, p->col, dxn, od0, nd);
            } else {
                vol2col(p, xn, p->col, od0, nd);
                dnnl_sgemm('N', 'T', s->cout, rows, ncols, 1.0f, dyn + off, ovol, p->col, ncols,
                           (n == 0 && od0 == 0) ? 0.0f : 1.0f, MT_F32P(p->dw), rows);
            }
        }
    }
}

/* ------------------------------------------------------------------ main */

static int selected(const char *list, const char *item) {
    if (!list) return 1;
    size_t n = strlen(item);
    for (const char *q = list; *q;) {
        size_t len = strcspn(q, ",");
        if (len == n && !strncmp(q, item, len)) return 1;
        q += len + (q[len] == ',');
    }
    return 0;
}

static void prob_init(prob *p, const shape *s) {
    memset(p, 0, sizeof *p);
    p->s = s;
    for (int j = 0; j < 3; j++) p->out[j] = (s->in[j] + 2 * s->pad - s->k) / s->stride + 1;
    p->p = mt_conv_params_make(s->stride, s->pad, 1, 1);
    p->x = mt_tensor_new(MT_F32, MT_SHAPE(s->n, s->cin, s->in[0], s->in[1], s->in[2]), MT_DEVICE_CPU);
    p->dx = mt_tensor_new_like(p->x);
    p->w = mt_tensor_new(MT_F32, MT_SHAPE(s->cout, s->cin, s->k, s->k, s->k), MT_DEVICE_CPU);
    p->dw = mt_tensor_new_like(p->w);
    p->y = mt_tensor_new(MT_F32, MT_SHAPE(s->n, s->cout, p->out[0], p->out[1], p->out[2]), MT_DEVICE_CPU);
    p->dy = mt_tensor_new_like(p->y);
    fill_rand(MT_F32P(p->x), mt_tensor_numel(p->x), 3);
    fill_rand(MT_F32P(p->w), mt_tensor_numel(p->w), 4);
    fill_rand(MT_F32P(p->dy), mt_tensor_numel(p->dy), 5);
    printf("%s: x (%d, %d, %d, %d, %d) -> y (%d, %d, %d, %d, %d), %.3f GFLOP per pass\n", s->name,
           s->n, s->cin, s->in[0], s->in[1], s->in[2], s->n, s->cout, p->out[0], p->out[1],
           p->out[2], prob_flops(p) / 1e9);
    plain_init(p);
    int64_t ohw = (int64_t)p->out[1] * p->out[2], rows = (int64_t)s->cin * s->k * s->k * s->k;
    p->chunk = (int)((8ll << 20) / (rows * ohw)); /* ~32 MB column buffer */
    if (p->chunk < 1) p->chunk = 1;
    if (p->chunk > p->out[0]) p->chunk = p->out[0];
    p->col = malloc(sizeof(float) * rows * p->chunk * ohw);
}

static void prob_free(prob *p) {
    free(p->col);
    for (int k = 0; k < 3; k++) dnnl_primitive_destroy(p->prim[k]);
    dnnl_memory_destroy(p->msrc);
    dnnl_memory_destroy(p->mwei);
    dnnl_memory_destroy(p->mdst);
    dnnl_stream_destroy(p->strm);
    dnnl_engine_destroy(p->eng);
    mt_tensor *rel[] = {p->x, p->dx, p->w, p->dw, p->y, p->dy};
    for (int k = 0; k < 6; k++) mt_tensor_release(rel[k]);
}

int main(int argc, char **argv) {
    const char *json = NULL, *impl_sel = "lib,plain,v2c", *shape_sel = NULL;
    int rounds = 3, no_sgemm = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--impls") && i + 1 < argc) impl_sel = argv[++i];
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shape_sel = argv[++i];
        else if (!strcmp(argv[i], "--no-sgemm")) no_sgemm = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--rounds R] [--reps N] [--json FILE] [--no-sgemm] "
                    "[--impls lib,plain,v2c] [--shapes 0,1,...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rounds < 1) rounds = 1;
    mt_cpu_set_num_threads(0);
    printf("threads: OpenMP (oneDNN) %d, OpenBLAS %d (core %s), library %d\n",
           omp_get_max_threads(), openblas_get_num_threads(), openblas_get_corename(),
           mt_cpu_get_num_threads());
    const dnnl_version_t *ver = dnnl_version();
    printf("oneDNN %d.%d.%d (cpu runtime %s)\n", ver->major, ver->minor, ver->patch,
           ver->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
    printf("best of %d rounds x %d repetitions per number, rounds interleaved over all cases\n\n",
           rounds, g_reps);

    enum { NSH = sizeof g_shapes / sizeof *g_shapes };
    static const char *pass_conv[3] = {"fwd", "bwd_data", "bwd_filter"};
    /* for a transposed shape, conv pass k is this pass of the op */
    static const char *pass_tr[3] = {"bwd_data", "fwd", "bwd_filter"};
    static const char *impls[3] = {"lib", "plain", "v2c"};
    void (*fns[3])(void *) = {lib_run, plain_run, v2c_run};
    static prob probs[NSH];
    int use[NSH];
    double best[NSH][3][3]; /* seconds */
    for (int si = 0; si < NSH; si++) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", si);
        use[si] = selected(shape_sel, idx);
        if (use[si]) prob_init(&probs[si], &g_shapes[si]);
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) best[si][a][b] = 1e30;
    }
    double sg_ob = 0, sg_dn = 0;
    const int sizes[2] = {2048, 3072};
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 2 && !no_sgemm; i++) {
            double a = measure_sgemm(0, sizes[i]), b = measure_sgemm(1, sizes[i]);
            if (a > sg_ob) sg_ob = a;
            if (b > sg_dn) sg_dn = b;
        }
        for (int si = 0; si < NSH; si++) {
            if (!use[si]) continue;
            for (int pass = 0; pass < 3; pass++) {
                probs[si].pass = pass;
                for (int im = 0; im < 3; im++) {
                    if (!selected(impl_sel, impls[im])) continue;
                    double t = best_time(fns[im], &probs[si]);
                    if (t < best[si][pass][im]) best[si][pass][im] = t;
                }
            }
        }
        fprintf(stderr, "round %d/%d done\n", r + 1, rounds);
    }
    double sg = sg_ob > sg_dn ? sg_ob : sg_dn;
    if (!no_sgemm)
        printf("\nsgemm (square 2048 and 3072, best): OpenBLAS %.1f GFLOP/s, oneDNN %.1f GFLOP/s\n"
               "machine sgemm: %.1f GFLOP/s\n",
               sg_ob, sg_dn, sg);
    printf("\nGFLOP/s (ms)\n%-24s %-11s %16s %16s %16s  %s\n", "shape (N=2)", "pass", "lib", "plain",
           "v2c", "lib / sgemm");
    FILE *f = NULL;
    if (json) {
        f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\"sgemm_gflops\": %.2f, \"sgemm_openblas_gflops\": %.2f, "
                   "\"sgemm_onednn_gflops\": %.2f, \"results\": [",
                sg, sg_ob, sg_dn);
    }
    int first = 1;
    for (int si = 0; si < NSH; si++) {
        if (!use[si]) continue;
        const shape *s = &g_shapes[si];
        double fl = prob_flops(&probs[si]);
        for (int pass = 0; pass < 3; pass++) {
            const char *pname = s->transposed ? pass_tr[pass] : pass_conv[pass];
            char cell[3][32];
            for (int im = 0; im < 3; im++) {
                double t = best[si][pass][im];
                if (t >= 1e29) {
                    snprintf(cell[im], sizeof cell[im], "-");
                    continue;
                }
                snprintf(cell[im], sizeof cell[im], "%.1f (%.2f)", fl / t / 1e9, t * 1e3);
                if (f) {
                    fprintf(f, "%s\n  {\"shape\": \"%s\", \"pass\": \"%s\", \"impl\": \"%s\", "
                               "\"ms\": %.4f, \"gflops\": %.2f}",
                            first ? "" : ",", s->name, pname, impls[im], t * 1e3, fl / t / 1e9);
                    first = 0;
                }
            }
            double lib_t = best[si][pass][0];
            char ratio[16] = "-";
            if (sg > 0 && lib_t < 1e29) snprintf(ratio, sizeof ratio, "%.2f", fl / lib_t / 1e9 / sg);
            printf("%-24s %-11s %16s %16s %16s  %s\n", pass == 0 ? s->name : "", pname, cell[0],
                   cell[1], cell[2], ratio);
        }
    }
    if (f) {
        fprintf(f, "\n]}\n");
        fclose(f);
    }
    for (int si = 0; si < NSH; si++)
        if (use[si]) prob_free(&probs[si]);
    return 0;
}
