/* CPU 3-D convolution kernels (contracts in core/backend.h): forward,
 * backward-data and backward-filter on contiguous NCDHW f32 tensors, weights
 * (Cout, Cin/groups, kD, kH, kW), through oneDNN primitives.
 *
 * Why oneDNN with its own (blocked) layouts, and plain layouts where blocking
 * does not pay (fewer than 8 channels, patchify forward; see entry_create), and
 * channels-last where "any" would fall back to gemm: measured against oneDNN on plain layouts and
 * against vol2col + sgemm in experiments/bench_conv.c; numbers in
 * experiments/RESULTS.md ("CPU conv3d (issue 2)").
 *
 * Each distinct problem (pass and every shape parameter) gets one cache
 * entry holding its primitive, the reorders between medtrain's plain layouts
 * (ncdhw; oidhw / goidhw) and the layouts oneDNN chose, and its memory
 * objects. Reordered tensors and scratchpads live in one shared arena that
 * only grows, so in the steady state a call creates and allocates nothing: it
 * points the memory objects at the caller's data and executes. Calls are
 * serialised by a mutex (the arena is shared); oneDNN threads each call with
 * OpenMP (Debian's build uses the OpenMP runtime), i.e. omp_get_max_threads()
 * of the calling thread, which mt_cpu_set_num_threads() sets.
 *
 * Outputs are written (=): y, dx, dw and db.
 *
 * bf16 (x, w, y, bias, dx, dy, dw, db all bf16): the f32 primitives on f32
 * copies of the bf16 inputs (f32 accumulation), outputs rounded once to bf16
 * (the adapter of core/cpu/bf16.c).
 */
#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cpu/cpu_kernels.h"
#include "core/kernel_plan.h"

#define DNNL_CHECK(expr)                                                                   \
    do {                                                                                   \
        dnnl_status_t dnnl_s_ = (expr);                                                    \
        MT_CHECK_MSG(dnnl_s_ == dnnl_success, "oneDNN call %s failed (status %d)", #expr, \
                     (int)dnnl_s_);                                                        \
    } while (0)

typedef enum { PASS_FWD = 0, PASS_BWD_DATA = 1, PASS_BWD_WEIGHTS = 2 } conv_pass;

/* Everything that defines a problem; all int64 so the struct has no padding
 * and can be hashed and compared bytewise. */
typedef struct {
    int64_t pass, has_bias;
    int64_t n, cin, cout, groups;
    int64_t in[3], out[3], k[3];
    int64_t stride[3], pad[3], dil[3];
} conv_key;

/* One tensor argument of the primitive. `user` wraps the caller's plain
 * tensor; `inner` is the primitive's layout in the arena, or NULL when the
 * primitive takes the plain layout directly. */
typedef struct {
    int arg;       /* DNNL_ARG_* of the convolution */
    int is_output;
    dnnl_memory_t user;
    dnnl_memory_t inner;
    dnnl_primitive_t reorder; /* user -> inner for inputs, inner -> user for outputs */
    size_t arena_off;
} conv_arg;

#define CONV_MAX_ARGS 4

typedef struct conv_entry {
    conv_key key;
    dnnl_primitive_t prim;
    conv_arg args[CONV_MAX_ARGS];
    int nargs;
    dnnl_memory_t scratch; /* NULL when the primitive needs none */
    size_t scratch_off;
    size_t arena_bytes;
    int x_cropped; /* the primitive sees only the first rows of x / dx */
    struct conv_entry *next;
} conv_entry;

#define CONV_BUCKETS 128
#define ARENA_ALIGN 4096

static struct {
    pthread_mutex_t lock;
    int ready;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    conv_entry *buckets[CONV_BUCKETS];
    unsigned char *arena;
    size_t arena_size;
} g_conv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t key_hash(const conv_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static void md_init(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag) {
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag));
}

/* Plain and "any" descriptors of the four tensors of a problem. */
typedef struct {
    dnnl_memory_desc_t src, wei, bias, dst;             /* plain (user) layouts */
    dnnl_memory_desc_t src_any, wei_any, bias_any, dst_any;
} conv_mds;

/* in_eff: the x-side spatial size the primitive sees (see entry_create);
 * when smaller than k->in, the user descriptor is a view of the first rows
 * of the full tensor (the full tensor's strides). */
static void conv_mds_init(conv_mds *m, const conv_key *k, const int64_t *in_eff) {
    int64_t sd[5] = {k->n, k->cin, in_eff[0], in_eff[1], in_eff[2]};
    int64_t dd[5] = {k->n, k->cout, k->out[0], k->out[1], k->out[2]};
    int64_t bd[1] = {k->cout};
    if (in_eff[0] == k->in[0] && in_eff[1] == k->in[1] && in_eff[2] == k->in[2]) {
        md_init(&m->src, 5, sd, dnnl_ncdhw);
    } else {
        int64_t vol = k->in[0] * k->in[1] * k->in[2];
        dnnl_dims_t d, st = {k->cin * vol, vol, k->in[1] * k->in[2], k->in[2], 1};
        for (int i = 0; i < 5; i++) d[i] = sd[i];
        DNNL_CHECK(dnnl_memory_desc_init_by_strides(&m->src, 5, d, dnnl_f32, st));
    }
    md_init(&m->dst, 5, dd, dnnl_ncdhw);
    md_init(&m->bias, 1, bd, dnnl_x);
    md_init(&m->src_any, 5, sd, dnnl_format_tag_any);
    md_init(&m->dst_any, 5, dd, dnnl_format_tag_any);
    md_init(&m->bias_any, 1, bd, dnnl_format_tag_any);
    if (k->groups == 1) {
        int64_t wd[5] = {k->cout, k->cin, k->k[0], k->k[1], k->k[2]};
        md_init(&m->wei, 5, wd, dnnl_oidhw);
        md_init(&m->wei_any, 5, wd, dnnl_format_tag_any);
    } else {
        int64_t g = k->groups;
        int64_t wd[6] = {g, k->cout / g, k->cin / g, k->k[0], k->k[1], k->k[2]};
        md_init(&m->wei, 6, wd, dnnl_goidhw);
        md_init(&m->wei_any, 6, wd, dnnl_format_tag_any);
    }
}

/* Sets up argument `a` of entry `e`: the user memory with plain layout
 * `user_md`, and if the primitive chose another layout `prim_md`, an arena
 * buffer plus the reorder between them. */
static void arg_init(conv_entry *e, int arg, int is_output, const dnnl_memory_desc_t *user_md,
                     const dnnl_memory_desc_t *prim_md, size_t *arena_used) {
    conv_arg *a = &e->args[e->nargs++];
    MT_CHECK(e->nargs <= CONV_MAX_ARGS);
    a->arg = arg;
    a->is_output = is_output;
    DNNL_CHECK(dnnl_memory_create(&a->user, user_md, g_conv.engine, DNNL_MEMORY_NONE));
    a->inner = NULL;
    a->reorder = NULL;
    if (dnnl_memory_desc_equal(user_md, prim_md)) return;
    DNNL_CHECK(dnnl_memory_create(&a->inner, prim_md, g_conv.engine, DNNL_MEMORY_NONE));
    a->arena_off = *arena_used;
    *arena_used += align_up(dnnl_memory_desc_get_size(prim_md), ARENA_ALIGN);
    dnnl_primitive_desc_t rpd;
    const dnnl_memory_desc_t *from = is_output ? prim_md : user_md;
    const dnnl_memory_desc_t *to = is_output ? user_md : prim_md;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&rpd, from, g_conv.engine, to, g_conv.engine, NULL));
    DNNL_CHECK(dnnl_primitive_create(&a->reorder, rpd));
    DNNL_CHECK(dnnl_primitive_desc_destroy(rpd));
}

/* Creates the primitive descriptor of pass k->pass on the descriptors m
 * (*fpd: the forward descriptor, the primitive itself for PASS_FWD, else the
 * hint oneDNN requires; *pd == *fpd for PASS_FWD). Returns oneDNN's status;
 * on failure nothing is left allocated. */
static dnnl_status_t pd_create(dnnl_primitive_desc_t *pd, dnnl_primitive_desc_t *fpd,
                               const conv_key *k, const conv_mds *m, const_dnnl_primitive_attr_t attr,
                               const int64_t *strides, const int64_t *dil, const int64_t *pad_l,
                               const int64_t *pad_r) {
    const int has_bias = (int)k->has_bias;
    dnnl_convolution_desc_t fd;
    DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
        &fd, dnnl_forward_training, dnnl_convolution_direct, &m->src_any, &m->wei_any,
        has_bias ? &m->bias_any : NULL, &m->dst_any, strides, dil, pad_l, pad_r));
    dnnl_status_t st = dnnl_primitive_desc_create(fpd, &fd, k->pass == PASS_FWD ? attr : NULL,
                                                  g_conv.engine, NULL);
    if (st != dnnl_success) return st;
    *pd = *fpd;
    if (k->pass == PASS_BWD_DATA) {
        dnnl_convolution_desc_t bd;
        DNNL_CHECK(dnnl_dilated_convolution_backward_data_desc_init(
            &bd, dnnl_convolution_direct, &m->src_any, &m->wei_any, &m->dst_any, strides, dil,
            pad_l, pad_r));
        st = dnnl_primitive_desc_create(pd, &bd, attr, g_conv.engine, *fpd);
    } else if (k->pass == PASS_BWD_WEIGHTS) {
        dnnl_convolution_desc_t wd;
        DNNL_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
            &wd, dnnl_convolution_direct, &m->src_any, &m->wei_any, has_bias ? &m->bias_any : NULL,
            &m->dst_any, strides, dil, pad_l, pad_r));
        st = dnnl_primitive_desc_create(pd, &wd, attr, g_conv.engine, *fpd);
    }
    if (st != dnnl_success) DNNL_CHECK(dnnl_primitive_desc_destroy(*fpd));
    return st;
}

/* 1 when oneDNN implements pd with its im2col + gemm or reference code. */
static int pd_is_fallback(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strstr(impl, "gemm") != NULL || strncmp(impl, "ref", 3) == 0;
}

static void pd_destroy(dnnl_primitive_desc_t pd, dnnl_primitive_desc_t fpd) {
    if (pd != fpd) DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
    DNNL_CHECK(dnnl_primitive_desc_destroy(fpd));
}

static conv_entry *entry_create(const conv_key *k) {
    dnnl_dims_t strides, dil, pad_l, pad_r;
    int64_t in_eff[3];
    for (int j = 0; j < 3; j++) {
        strides[j] = k->stride[j];
        dil[j] = k->dil[j] - 1; /* oneDNN counts dilation from 0 */
        pad_l[j] = k->pad[j];
        /* Right padding that makes the output size consistent. It is
         * negative when the last input rows are never read; oneDNN accepts
         * pad_r > -stride, beyond that the primitive sees only the rows it
         * reads (x-side view of the first in_eff rows, pad_r = 0). */
        in_eff[j] = k->in[j];
        pad_r[j] = (k->out[j] - 1) * k->stride[j] + k->dil[j] * (k->k[j] - 1) + 1 - k->in[j] -
                   k->pad[j];
        if (pad_r[j] + k->stride[j] <= 0) {
            in_eff[j] = k->in[j] + pad_r[j];
            pad_r[j] = 0;
        }
    }
    conv_mds m;
    conv_mds_init(&m, k, in_eff);
    /* Layouts (measured, experiments/RESULTS.md): oneDNN's own blocked
     * layouts (format "any"; 16-channel blocks with AVX-512), reordered
     * from/to NCDHW around the primitive, are 2-4x faster than its plain-layout
     * (gemm-based) convolutions wherever the channel counts fill the blocks,
     * and still 3-5x faster with 8 channels (padded to a block of 16; the
     * 8-feature top level of configs/default.yaml, "CPU training step vs
     * PyTorch"). With fewer than 8 channels per group blocking pads too much
     * and loses: plain layouts for every pass when Cout/groups < 8 (e.g. the
     * segmentation head) and for backward-data when Cin/groups < 8 (e.g. the
     * first layer; its forward and filter gradient stay blocked, oneDNN then
     * reads the plain input directly). The forward pass of a "patchify"
     * convolution (kernel == stride, no padding or dilation: the k2 s2
     * down-sampling conv, the input gradient of the k2 s2 transposed conv)
     * reads every input once, so the reorders cost more than they save:
     * plain there too. */
    int patchify = 1;
    for (int j = 0; j < 3; j++)
        patchify = patchify && k->k[j] == k->stride[j] && k->pad[j] == 0 && k->dil[j] == 1;
    const int plain = k->cout / k->groups < 8 ||
                      (k->pass == PASS_BWD_DATA && k->cin / k->groups < 8) ||
                      (k->pass == PASS_FWD && patchify);
    if (plain) {
        m.src_any = m.src;
        m.wei_any = m.wei;
        m.bias_any = m.bias;
        m.dst_any = m.dst;
    }
    const int has_bias = (int)k->has_bias;

    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));

    dnnl_primitive_desc_t fpd, pd;
    DNNL_CHECK(pd_create(&pd, &fpd, k, &m, attr, strides, dil, pad_l, pad_r));
    /* With format "any" oneDNN 2.6 has no blocked kernel for some problems
     * (seen: backward-weights with 8 input channels, 8 -> 8 k3 and 8 -> 16
     * k3 s2) and falls back to im2col + gemm on plain layouts, 4.6x slower
     * at 8 -> 8 (40^3, N 2) than its channels-last (ndhwc) kernel: ask for
     * channels-last activations then, and keep whichever is not a fallback
     * (the choice is made once per problem; tests/test_conv.c covers it). */
    if (!plain && pd_is_fallback(pd)) {
        conv_mds mc = m;
        int64_t sd[5] = {k->n, k->cin, in_eff[0], in_eff[1], in_eff[2]};
        int64_t dd[5] = {k->n, k->cout, k->out[0], k->out[1], k->out[2]};
        md_init(&mc.src_any, 5, sd, dnnl_ndhwc);
        md_init(&mc.dst_any, 5, dd, dnnl_ndhwc);
        dnnl_primitive_desc_t fpd2, pd2;
        if (pd_create(&pd2, &fpd2, k, &mc, attr, strides, dil, pad_l, pad_r) == dnnl_success) {
            if (pd_is_fallback(pd2)) {
                pd_destroy(pd2, fpd2);
            } else {
                pd_destroy(pd, fpd);
                pd = pd2;
                fpd = fpd2;
            }
        }
    }

    conv_entry *e = calloc(1, sizeof *e);
    MT_CHECK(e != NULL);
    e->key = *k;
    e->x_cropped = in_eff[0] != k->in[0] || in_eff[1] != k->in[1] || in_eff[2] != k->in[2];
    size_t used = 0;
#define PD_MD(q) dnnl_primitive_desc_query_md(pd, (q), 0)
    switch ((conv_pass)k->pass) {
    case PASS_FWD:
        arg_init(e, DNNL_ARG_SRC, 0, &m.src, PD_MD(dnnl_query_src_md), &used);
        arg_init(e, DNNL_ARG_WEIGHTS, 0, &m.wei, PD_MD(dnnl_query_weights_md), &used);
        if (has_bias)
            arg_init(e, DNNL_ARG_BIAS, 0, &m.bias,
                     dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1), &used);
        arg_init(e, DNNL_ARG_DST, 1, &m.dst, PD_MD(dnnl_query_dst_md), &used);
        break;
    case PASS_BWD_DATA:
        arg_init(e, DNNL_ARG_DIFF_DST, 0, &m.dst, PD_MD(dnnl_query_diff_dst_md), &used);
        arg_init(e, DNNL_ARG_WEIGHTS, 0, &m.wei, PD_MD(dnnl_query_weights_md), &used);
        arg_init(e, DNNL_ARG_DIFF_SRC, 1, &m.src, PD_MD(dnnl_query_diff_src_md), &used);
        break;
    case PASS_BWD_WEIGHTS:
        arg_init(e, DNNL_ARG_SRC, 0, &m.src, PD_MD(dnnl_query_src_md), &used);
        arg_init(e, DNNL_ARG_DIFF_DST, 0, &m.dst, PD_MD(dnnl_query_diff_dst_md), &used);
        arg_init(e, DNNL_ARG_DIFF_WEIGHTS, 1, &m.wei, PD_MD(dnnl_query_diff_weights_md), &used);
        if (has_bias)
            arg_init(e, DNNL_ARG_DIFF_BIAS, 1, &m.bias,
                     dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1), &used);
        break;
    }
    const dnnl_memory_desc_t *smd = PD_MD(dnnl_query_scratchpad_md);
#undef PD_MD
    size_t sbytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (sbytes > 0) {
        DNNL_CHECK(dnnl_memory_create(&e->scratch, smd, g_conv.engine, DNNL_MEMORY_NONE));
        e->scratch_off = used;
        used += align_up(sbytes, ARENA_ALIGN);
    }
    e->arena_bytes = used;
    DNNL_CHECK(dnnl_primitive_create(&e->prim, pd));
    pd_destroy(pd, fpd);
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    return e;
}

/* Called with the lock held. */
static conv_entry *entry_get(const conv_key *k) {
    if (!g_conv.ready) {
        DNNL_CHECK(dnnl_engine_create(&g_conv.engine, dnnl_cpu, 0));
        DNNL_CHECK(dnnl_stream_create(&g_conv.stream, g_conv.engine, dnnl_stream_default_flags));
        g_conv.ready = 1;
    }
    uint64_t h = key_hash(k) % CONV_BUCKETS;
    for (conv_entry *e = g_conv.buckets[h]; e; e = e->next)
        if (memcmp(&e->key, k, sizeof *k) == 0) return e;
    conv_entry *e = entry_create(k);
    e->next = g_conv.buckets[h];
    g_conv.buckets[h] = e;
    if (e->arena_bytes > g_conv.arena_size) {
        free(g_conv.arena);
        g_conv.arena = aligned_alloc(ARENA_ALIGN, e->arena_bytes);
        MT_CHECK_MSG(g_conv.arena != NULL, "conv3d: cannot allocate %zu bytes of workspace",
                     e->arena_bytes);
        g_conv.arena_size = e->arena_bytes;
    }
    return e;
}

/* Executes entry e on the caller's buffers, given in the order of e->args. */
static void entry_run(conv_entry *e, void *const *data) {
    dnnl_exec_arg_t exec[CONV_MAX_ARGS + 1];
    int ne = 0;
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        DNNL_CHECK(dnnl_memory_set_data_handle(a->user, data[i]));
        if (a->inner) DNNL_CHECK(dnnl_memory_set_data_handle(a->inner, g_conv.arena + a->arena_off));
        exec[ne++] = (dnnl_exec_arg_t){a->arg, a->inner ? a->inner : a->user};
    }
    if (e->scratch) {
        DNNL_CHECK(dnnl_memory_set_data_handle(e->scratch, g_conv.arena + e->scratch_off));
        exec[ne++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
    }
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder && !a->is_output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->user}, {DNNL_ARG_TO, a->inner}};
            DNNL_CHECK(dnnl_primitive_execute(a->reorder, g_conv.stream, 2, r));
        }
    }
    DNNL_CHECK(dnnl_primitive_execute(e->prim, g_conv.stream, ne, exec));
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder && a->is_output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->inner}, {DNNL_ARG_TO, a->user}};
            DNNL_CHECK(dnnl_primitive_execute(a->reorder, g_conv.stream, 2, r));
        }
    }
    DNNL_CHECK(dnnl_stream_wait(g_conv.stream));
}

/* Fills the key from x-side (N, Cin, D, H, W), y-side (N, Cout, oD, oH, oW)
 * and weight shapes, checking the contract. */
static void key_init(conv_key *k, conv_pass pass, int has_bias, const mt_tensor *x,
                     const mt_tensor *w, const mt_tensor *y, const mt_conv_params *p,
                     const char *op) {
    mt_conv_check_shapes(op, x, w, y, p);
    memset(k, 0, sizeof *k);
    k->pass = pass;
    k->has_bias = has_bias;
    k->n = x->shape[0];
    k->cin = x->shape[1];
    k->cout = y->shape[1];
    k->groups = p->groups;
    /* The y side may be smaller than the usual output size (transposed conv
     * with output_padding >= stride): then the last input rows are never
     * read (see pad_r in entry_create). */
    for (int j = 0; j < 3; j++) {
        k->in[j] = x->shape[2 + j];
        k->out[j] = y->shape[2 + j];
        k->k[j] = w->shape[2 + j];
        k->stride[j] = p->stride[j];
        k->pad[j] = p->padding[j];
        k->dil[j] = p->dilation[j];
    }
}

void mt_cpu_conv3d_forward(mt_tensor *y, const mt_tensor *x, const mt_tensor *w,
                           const mt_tensor *bias, const mt_conv_params *p) {
    if (x->dtype == MT_BF16 || w->dtype == MT_BF16 || y->dtype == MT_BF16 ||
        (bias && bias->dtype == MT_BF16)) {
        MT_CPU_CHECK_FLOAT_SAME("conv3d_forward", y, x, w, bias);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x), *w32 = mt_cpu_bf16_in(&c, w);
        const mt_tensor *b32 = mt_cpu_bf16_in(&c, bias);
        mt_cpu_conv3d_forward(mt_cpu_bf16_out(&c, y, 0), x32, w32, b32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("conv3d_forward", x, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_forward", w, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_forward", y, MT_F32);
    conv_key k;
    key_init(&k, PASS_FWD, bias != NULL, x, w, y, p, "conv3d_forward");
    if (bias) {
        MT_KERNEL_DTYPE_CHECK("conv3d_forward", bias, MT_F32);
        MT_CHECK_MSG(mt_tensor_numel(bias) == k.cout && mt_tensor_is_contiguous(bias),
                     "conv3d_forward: bias must be contiguous with Cout = %lld elements",
                     (long long)k.cout);
    }
    if (mt_tensor_numel(y) == 0) return;
    void *data[4];
    int n = 0;
    data[n++] = mt_tensor_data(x);
    data[n++] = mt_tensor_data(w);
    if (bias) data[n++] = mt_tensor_data(bias);
    data[n++] = mt_tensor_data(y);
    pthread_mutex_lock(&g_conv.lock);
    entry_run(entry_get(&k), data);
    pthread_mutex_unlock(&g_conv.lock);
}

void mt_cpu_conv3d_backward_data(mt_tensor *dx, const mt_tensor *dy, const mt_tensor *w,
                                 const mt_conv_params *p) {
    if (dx->dtype == MT_BF16 || dy->dtype == MT_BF16 || w->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME("conv3d_backward_data", dx, dy, w);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *dy32 = mt_cpu_bf16_in(&c, dy), *w32 = mt_cpu_bf16_in(&c, w);
        mt_cpu_conv3d_backward_data(mt_cpu_bf16_out(&c, dx, 0), dy32, w32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_data", dx, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_data", dy, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_data", w, MT_F32);
    conv_key k;
    key_init(&k, PASS_BWD_DATA, 0, dx, w, dy, p, "conv3d_backward_data");
    if (mt_tensor_numel(dx) == 0) return;
    if (mt_tensor_numel(dy) == 0 || mt_tensor_numel(w) == 0) {
        memset(mt_tensor_data(dx), 0, mt_tensor_nbytes(dx));
        return;
    }
    void *data[3] = {mt_tensor_data(dy), mt_tensor_data(w), mt_tensor_data(dx)};
    pthread_mutex_lock(&g_conv.lock);
    conv_entry *e = entry_get(&k);
    /* rows the convolution never reads get no gradient */
    if (e->x_cropped) memset(mt_tensor_data(dx), 0, mt_tensor_nbytes(dx));
    entry_run(e, data);
    pthread_mutex_unlock(&g_conv.lock);
}

void mt_cpu_conv3d_backward_filter(mt_tensor *dw, mt_tensor *db, const mt_tensor *x,
                                   const mt_tensor *dy, const mt_conv_params *p) {
    if (dw->dtype == MT_BF16 || x->dtype == MT_BF16 || dy->dtype == MT_BF16 ||
        (db && db->dtype == MT_BF16)) {
        MT_CPU_CHECK_FLOAT_SAME("conv3d_backward_filter", dw, db, x, dy);
        mt_cpu_bf16_ctx c = {0};
        const mt_tensor *x32 = mt_cpu_bf16_in(&c, x), *dy32 = mt_cpu_bf16_in(&c, dy);
        mt_tensor *dw32 = mt_cpu_bf16_out(&c, dw, 0), *db32 = mt_cpu_bf16_out(&c, db, 0);
        mt_cpu_conv3d_backward_filter(dw32, db32, x32, dy32, p);
        mt_cpu_bf16_done(&c);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_filter", dw, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_filter", x, MT_F32);
    MT_KERNEL_DTYPE_CHECK("conv3d_backward_filter", dy, MT_F32);
    conv_key k;
    key_init(&k, PASS_BWD_WEIGHTS, db != NULL, x, dw, dy, p, "conv3d_backward_filter");
    if (db) {
        MT_KERNEL_DTYPE_CHECK("conv3d_backward_filter", db, MT_F32);
        MT_CHECK_MSG(mt_tensor_numel(db) == k.cout && mt_tensor_is_contiguous(db),
                     "conv3d_backward_filter: db must be contiguous with Cout = %lld elements",
                     (long long)k.cout);
    }
    if (mt_tensor_numel(dw) == 0) return;
    if (mt_tensor_numel(x) == 0 || mt_tensor_numel(dy) == 0) {
        memset(mt_tensor_data(dw), 0, mt_tensor_nbytes(dw));
        if (db) memset(mt_tensor_data(db), 0, mt_tensor_nbytes(db));
        return;
    }
    void *data[4];
    int n = 0;
    data[n++] = mt_tensor_data(x);
    data[n++] = mt_tensor_data(dy);
    data[n++] = mt_tensor_data(dw);
    if (db) data[n++] = mt_tensor_data(db);
    pthread_mutex_lock(&g_conv.lock);
    entry_run(entry_get(&k), data);
    pthread_mutex_unlock(&g_conv.lock);
}
