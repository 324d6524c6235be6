/* CPU elementwise kernels: fill, copy/cast, binary with broadcasting, unary
 * and their backward, one-hot, channel argmax. Contracts: core/backend.h.
 *
 * bf16 (binary, unary, unary_backward): blocks of up to BLK elements are
 * widened to f32 on the stack, computed with the same expressions as the f32
 * loops (bin_apply / un_apply / un_deriv, or the f32 fast paths' own
 * expressions), and rounded once to bf16 when stored (mt_cpu_bf16_store, the
 * rule of mt_f32_to_bf16); the result is bit-identical to rounding the f32
 * kernel's output on the widened inputs. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/cpu/cpu_kernels.h"
#include "core/kernel_plan.h"

#define PAR_MIN 32768 /* below this many elements, stay on one thread */
#define BLK 512       /* bf16 paths: elements converted to f32 per block (stack buffers) */

/* bf16 -> f32 is exact (the top 16 bits of the f32). */
static inline float bf16_widen(mt_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Offset (elements) of logical flat index i in a strided tensor. */
static inline int64_t offset_of(const mt_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (i % n) * t->strides[d];
        i /= n;
    }
    return off;
}

static inline float load_f(const mt_tensor *t, const void *base, int64_t off) {
    switch (t->dtype) {
    case MT_F32: return ((const float *)base)[off];
    case MT_BF16: return mt_bf16_to_f32(((const mt_bf16 *)base)[off]);
    case MT_I32: return (float)((const int32_t *)base)[off];
    case MT_U8: return (float)((const uint8_t *)base)[off];
    default: return 0;
    }
}

/* Rows of the last dim: calls fn(start offset of row in t) for each row. The
 * iteration walks rows in logical order with incremental counters. */
typedef struct {
    int64_t rows, row_len;
    int64_t shape[MT_MAX_DIMS];
    int nd; /* dims excluding the last */
} row_iter;

static void row_iter_init(row_iter *it, const mt_tensor *t) {
    it->nd = t->ndim > 0 ? t->ndim - 1 : 0;
    it->row_len = t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
    it->rows = 1;
    for (int d = 0; d < it->nd; d++) {
        it->shape[d] = t->shape[d];
        it->rows *= t->shape[d];
    }
}

static inline int64_t row_offset(const mt_tensor *t, int nd, int64_t r) {
    int64_t off = t->offset;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (r % n) * t->strides[d];
        r /= n;
    }
    return off;
}

void mt_cpu_fill(mt_tensor *out, double value) {
    int64_t n = mt_tensor_numel(out);
    char *base = (char *)out->storage->data;
    if (mt_tensor_is_contiguous(out)) {
        void *p = mt_tensor_data(out);
        switch (out->dtype) {
        case MT_F32: {
            float v = (float)value, *o = p;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) o[i] = v;
            return;
        }
        case MT_BF16: {
            mt_bf16 v = mt_f32_to_bf16((float)value), *o = p;
            for (int64_t i = 0; i < n; i++) o[i] = v;
            return;
        }
        case MT_I32: {
            int32_t v = (int32_t)value, *o = p;
            for (int64_t i = 0; i < n; i++) o[i] = v;
            return;
        }
        case MT_U8: memset(p, (uint8_t)value, (size_t)n); return;
        default: break;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t off = offset_of(out, i);
        switch (out->dtype) {
        case MT_F32: ((float *)base)[off] = (float)value; break;
        case MT_BF16: ((mt_bf16 *)base)[off] = mt_f32_to_bf16((float)value); break;
        case MT_I32: ((int32_t *)base)[off] = (int32_t)value; break;
        case MT_U8: ((uint8_t *)base)[off] = (uint8_t)value; break;
        default: break;
        }
    }
}

/* Copy one row of len elements with strides (so, si) and casts. */
static void copy_row(mt_dtype dto, void *ob, int64_t oo, int64_t so, mt_dtype dti, const void *ib,
                     int64_t io, int64_t si, int64_t len) {
    if (dto == dti && so == 1 && si == 1) {
        size_t es = mt_dtype_size(dto);
        memcpy((char *)ob + oo * (int64_t)es, (const char *)ib + io * (int64_t)es, (size_t)len * es);
        return;
    }
    if (dto == MT_F32 && dti == MT_F32) {
        float *o = (float *)ob + oo;
        const float *s = (const float *)ib + io;
        for (int64_t k = 0; k < len; k++) o[k * so] = s[k * si];
        return;
    }
    if (dto == MT_I32 && dti == MT_I32) {
        int32_t *o = (int32_t *)ob + oo;
        const int32_t *s = (const int32_t *)ib + io;
        for (int64_t k = 0; k < len; k++) o[k * so] = s[k * si];
        return;
    }
    for (int64_t k = 0; k < len; k++) {
        int64_t a = oo + k * so, b = io + k * si;
        double v;
        switch (dti) {
        case MT_F32: v = ((const float *)ib)[b]; break;
        case MT_BF16: v = mt_bf16_to_f32(((const mt_bf16 *)ib)[b]); break;
        case MT_I32: v = ((const int32_t *)ib)[b]; break;
        default: v = ((const uint8_t *)ib)[b]; break;
        }
        switch (dto) {
        case MT_F32: ((float *)ob)[a] = (float)v; break;
        case MT_BF16: ((mt_bf16 *)ob)[a] = mt_f32_to_bf16((float)v); break;
        case MT_I32: ((int32_t *)ob)[a] = (int32_t)v; break;
        default: {
            double c = v < 0 ? 0 : (v > 255 ? 255 : v);
            ((uint8_t *)ob)[a] = (uint8_t)c;
            break;
        }
        }
    }
}

void mt_cpu_copy(mt_tensor *out, const mt_tensor *in) {
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    if (mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in) && out->dtype == in->dtype) {
        memcpy(mt_tensor_data(out), mt_tensor_data(in), (size_t)n * mt_dtype_size(out->dtype));
        return;
    }
    row_iter it;
    row_iter_init(&it, out);
    int last = out->ndim - 1;
    int64_t so = out->ndim ? out->strides[last] : 1, si = in->ndim ? in->strides[last] : 1;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < it.rows; r++) {
        int64_t oo = row_offset(out, it.nd, r), io = row_offset(in, it.nd, r);
        copy_row(out->dtype, out->storage->data, oo, so, in->dtype, in->storage->data, io, si,
                 it.row_len);
    }
}


#define BIN_LOOP(EXPR)                                                       \
    for (int64_t k = 0; k < len; k++) {                                      \
        float x = pa[k * sa], y = pb[k * sb];                                \
        po[k] = (EXPR);                                                      \
    }

/* po[k] = pa[k] (op) pb[k], unit strides (the expressions of the f32 loops). */
static void bin_block(mt_binary_op op, float *po, const float *pa, const float *pb, int64_t len) {
    const int64_t sa = 1, sb = 1;
    switch (op) {
    case MT_BIN_ADD: BIN_LOOP(x + y); break;
    case MT_BIN_SUB: BIN_LOOP(x - y); break;
    case MT_BIN_MUL: BIN_LOOP(x * y); break;
    case MT_BIN_DIV: BIN_LOOP(x / y); break;
    case MT_BIN_MAX: BIN_LOOP(mt_binary_apply(MT_BIN_MAX, x, y)); break;
    case MT_BIN_MIN: BIN_LOOP(mt_binary_apply(MT_BIN_MIN, x, y)); break;
    case MT_BIN_EQ: BIN_LOOP(mt_binary_apply(MT_BIN_EQ, x, y)); break;
    case MT_BIN_GE: BIN_LOOP(mt_binary_apply(MT_BIN_GE, x, y)); break;
    default: BIN_LOOP(mt_binary_apply(op, x, y)); break;
    }
}

/* One bf16 row: po[k] = pa[k * sa] (op) pb[k * sb], k < len. */
static void bin_row_bf16(mt_binary_op op, mt_bf16 *po, const mt_bf16 *pa, int64_t sa,
                         const mt_bf16 *pb, int64_t sb, int64_t len) {
    float xa[BLK], xb[BLK], xo[BLK];
    for (int64_t k0 = 0; k0 < len; k0 += BLK) {
        int64_t n = len - k0 < BLK ? len - k0 : BLK;
        mt_cpu_bf16_load(xa, pa + k0 * sa, sa, n);
        mt_cpu_bf16_load(xb, pb + k0 * sb, sb, n);
        bin_block(op, xo, xa, xb, n);
        mt_cpu_bf16_store(po + k0, 1, xo, n);
    }
}

/* One f32 row: po[k] = pa[k * sa] (op) pb[k * sb], k < len. */
static void bin_row_f32(mt_binary_op op, void *po_, const void *pa_, int64_t sa, const void *pb_,
                        int64_t sb, int64_t len) {
    float *po = po_;
    const float *pa = pa_, *pb = pb_;
    switch (op) {
    case MT_BIN_ADD: BIN_LOOP(x + y); break;
    case MT_BIN_SUB: BIN_LOOP(x - y); break;
    case MT_BIN_MUL: BIN_LOOP(x * y); break;
    case MT_BIN_DIV: BIN_LOOP(x / y); break;
    default: BIN_LOOP(mt_binary_apply(op, x, y)); break;
    }
}

static void bin_row_bf16_any(mt_binary_op op, void *po, const void *pa, int64_t sa, const void *pb,
                             int64_t sb, int64_t len) {
    bin_row_bf16(op, po, pa, sa, pb, sb, len);
}

/* One iteration for both dtypes (the row function differs): fully
 * contiguous operands are one long row split among threads, otherwise rows
 * of the last dim run in parallel. */
void mt_cpu_binary(mt_binary_op op, mt_tensor *out, const mt_tensor *a, const mt_tensor *b) {
    void (*row)(mt_binary_op, void *, const void *, int64_t, const void *, int64_t, int64_t);
    if (out->dtype == MT_BF16 || a->dtype == MT_BF16 || b->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME("binary", out, a, b);
        row = bin_row_bf16_any;
    } else {
        MT_KERNEL_DTYPE_CHECK("binary", out, MT_F32);
        MT_KERNEL_DTYPE_CHECK("binary", a, MT_F32);
        MT_KERNEL_DTYPE_CHECK("binary", b, MT_F32);
        row = bin_row_f32;
    }
    const int64_t es = (int64_t)mt_dtype_size(out->dtype);
    MT_CHECK(mt_tensor_is_contiguous(out));
    int64_t n = mt_tensor_numel(out);
    if (n == 0) return;
    row_iter it;
    row_iter_init(&it, out);
    int last = out->ndim - 1;
    int64_t sa = out->ndim ? a->strides[last] : 1, sb = out->ndim ? b->strides[last] : 1;
    int64_t len = it.row_len, rows = it.rows;
    /* Fully contiguous operands: one long row. */
    if (mt_tensor_is_contiguous(a) && mt_tensor_is_contiguous(b)) {
        len = n;
        rows = 1;
        sa = sb = 1;
    }
    char *ob = (char *)mt_tensor_data(out);
    const char *ab = (const char *)a->storage->data, *bb = (const char *)b->storage->data;
    if (rows == 1) {
        /* Split the long row among threads; rows == 1 means one row of the
         * last dim or fully contiguous operands: both start at their offset
         * and step by sa / sb. */
#pragma omp parallel if (len > PAR_MIN)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t chunk = (len + nt - 1) / nt, s = t * chunk, e = s + chunk < len ? s + chunk : len;
            if (s < e)
                row(op, ob + s * es, ab + (a->offset + s * sa) * es, sa, bb + (b->offset + s * sb) * es, sb,
                    e - s);
        }
        return;
    }
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        row(op, ob + r * len * es, ab + row_offset(a, it.nd, r) * es, sa, bb + row_offset(b, it.nd, r) * es, sb,
            len);
}

static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float softplus_f(float x) { return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)); }
static inline float sigmoid_f(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static inline float un_apply(mt_unary_op op, float x, float a) {
    switch (op) {
    case MT_UN_NEG: return -x;
    case MT_UN_EXP: return expf(x);
    case MT_UN_LOG: return logf(x);
    case MT_UN_SQRT: return sqrtf(x);
    case MT_UN_RSQRT: return 1.0f / sqrtf(x);
    case MT_UN_ABS: return fabsf(x);
    case MT_UN_SQUARE: return x * x;
    case MT_UN_RECIP: return 1.0f / x;
    case MT_UN_RELU: return x > 0 ? x : 0;
    case MT_UN_LEAKY_RELU: return x > 0 ? x : a * x;
    case MT_UN_GELU: return gelu_f(x);
    case MT_UN_SIGMOID: return sigmoid_f(x);
    case MT_UN_TANH: return tanhf(x);
    case MT_UN_SOFTPLUS: return softplus_f(x);
    case MT_UN_LOG_SIGMOID: return -softplus_f(-x);
    case MT_UN_ADD_SCALAR: return x + a;
    case MT_UN_MUL_SCALAR: return x * a;
    case MT_UN_POW_SCALAR: return powf(x, a);
    case MT_UN_CLAMP_MIN: return x < a ? a : x;
    case MT_UN_CLAMP_MAX: return x > a ? a : x;
    default: return 0;
    }
}

/* d f(x) / dx given x and y = f(x). */
static inline float un_deriv(mt_unary_op op, float x, float y, float a) {
    switch (op) {
    case MT_UN_NEG: return -1.0f;
    case MT_UN_EXP: return y;
    case MT_UN_LOG: return 1.0f / x;
    case MT_UN_SQRT: return 0.5f / y;
    case MT_UN_RSQRT: return -0.5f * y * y * y;
    case MT_UN_ABS: return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
    case MT_UN_SQUARE: return 2.0f * x;
    case MT_UN_RECIP: return -y * y;
    case MT_UN_RELU: return x > 0 ? 1.0f : 0.0f;
    case MT_UN_LEAKY_RELU: return x > 0 ? 1.0f : a;
    case MT_UN_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    case MT_UN_SIGMOID: return y * (1.0f - y);
    case MT_UN_TANH: return 1.0f - y * y;
    case MT_UN_SOFTPLUS: return sigmoid_f(x);
    case MT_UN_LOG_SIGMOID: return sigmoid_f(-x);
    case MT_UN_ADD_SCALAR: return 1.0f;
    case MT_UN_MUL_SCALAR: return a;
    case MT_UN_POW_SCALAR: return a == 0.0f ? 0.0f : a * powf(x, a - 1.0f);
    case MT_UN_CLAMP_MIN: return x >= a ? 1.0f : 0.0f;
    case MT_UN_CLAMP_MAX: return x <= a ? 1.0f : 0.0f;
    default: return 0;
    }
}

/* o[i] = f(x[i]) with a loop per op (constant op: un_apply inlines to the
 * op's expression, the same as the f32 kernel's). */
#define UN_CASE(OPC)                                                   \
    case OPC:                                                          \
        for (int64_t i = 0; i < n; i++) o[i] = un_apply(OPC, x[i], a); \
        break;
static void unary_block(mt_unary_op op, float *o, const float *x, int64_t n, float a) {
    switch (op) {
        UN_CASE(MT_UN_NEG)
        UN_CASE(MT_UN_EXP)
        UN_CASE(MT_UN_LOG)
        UN_CASE(MT_UN_SQRT)
        UN_CASE(MT_UN_RSQRT)
        UN_CASE(MT_UN_ABS)
        UN_CASE(MT_UN_SQUARE)
        UN_CASE(MT_UN_RECIP)
        UN_CASE(MT_UN_RELU)
        UN_CASE(MT_UN_LEAKY_RELU)
        UN_CASE(MT_UN_GELU)
        UN_CASE(MT_UN_SIGMOID)
        UN_CASE(MT_UN_TANH)
        UN_CASE(MT_UN_SOFTPLUS)
        UN_CASE(MT_UN_LOG_SIGMOID)
        UN_CASE(MT_UN_ADD_SCALAR)
        UN_CASE(MT_UN_MUL_SCALAR)
        UN_CASE(MT_UN_POW_SCALAR)
        UN_CASE(MT_UN_CLAMP_MIN)
        UN_CASE(MT_UN_CLAMP_MAX)
    default:
        for (int64_t i = 0; i < n; i++) o[i] = un_apply(op, x[i], a);
        break;
    }
}
#undef UN_CASE

static void unary_bf16(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) {
    MT_CHECK(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in));
    int64_t n = mt_tensor_numel(out), nb = (n + BLK - 1) / BLK;
    mt_bf16 *o = (mt_bf16 *)mt_tensor_data(out);
    const mt_bf16 *x = (const mt_bf16 *)mt_tensor_data(in);
#pragma omp parallel for if (n > PAR_MIN / 8) schedule(static)
    for (int64_t blk = 0; blk < nb; blk++) {
        float xf[BLK], of[BLK];
        int64_t i0 = blk * BLK, len = n - i0 < BLK ? n - i0 : BLK;
        mt_cpu_bf16_load(xf, x + i0, 1, len);
        unary_block(op, of, xf, len, alpha);
        mt_cpu_bf16_store(o + i0, 1, of, len);
    }
}

void mt_cpu_unary(mt_unary_op op, mt_tensor *out, const mt_tensor *in, float alpha) {
    if (out->dtype == MT_BF16 || in->dtype == MT_BF16) {
        MT_CPU_CHECK_FLOAT_SAME("unary", out, in);
        unary_bf16(op, out, in, alpha);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("unary", out, MT_F32);
    MT_KERNEL_DTYPE_CHECK("unary", in, MT_F32);
    MT_CHECK(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in));
    int64_t n = mt_tensor_numel(out);
    float *o = MT_F32P(out);
    const float *x = MT_F32P(in);
    switch (op) {
    case MT_UN_RELU:
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : 0;
        return;
    case MT_UN_LEAKY_RELU:
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : alpha * x[i];
        return;
    case MT_UN_MUL_SCALAR:
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * alpha;
        return;
    case MT_UN_ADD_SCALAR:
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] + alpha;
        return;
    default:
#pragma omp parallel for if (n > PAR_MIN / 8) schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = un_apply(op, x[i], alpha);
        return;
    }
}

/* gi[i] = go[i] * f'(x[i], y[i]) over one block: the f32 kernel's
 * expressions (its RELU / LEAKY_RELU forms, un_deriv otherwise). */
#define UNB_CASE(OPC)                                                                        \
    case OPC:                                                                                \
        for (int64_t i = 0; i < n; i++)                                                      \
            gi[i] = go[i] * un_deriv(OPC, x ? x[i] : 0.0f, y ? y[i] : 0.0f, a);              \
        break;
static void unary_bwd_block(mt_unary_op op, float *gi, const float *go, const float *x,
                            const float *y, int64_t n, float a) {
    switch (op) {
    case MT_UN_RELU:
        if (x)
            for (int64_t i = 0; i < n; i++) gi[i] = x[i] > 0 ? go[i] : 0;
        else
            for (int64_t i = 0; i < n; i++) gi[i] = y[i] > 0 ? go[i] : 0;
        break;
    case MT_UN_LEAKY_RELU:
        if (x)
            for (int64_t i = 0; i < n; i++) gi[i] = x[i] > 0 ? go[i] : a * go[i];
        else
            for (int64_t i = 0; i < n; i++) gi[i] = y[i] > 0 ? go[i] : a * go[i];
        break;
        UNB_CASE(MT_UN_NEG)
        UNB_CASE(MT_UN_EXP)
        UNB_CASE(MT_UN_LOG)
        UNB_CASE(MT_UN_SQRT)
        UNB_CASE(MT_UN_RSQRT)
        UNB_CASE(MT_UN_ABS)
        UNB_CASE(MT_UN_SQUARE)
        UNB_CASE(MT_UN_RECIP)
        UNB_CASE(MT_UN_GELU)
        UNB_CASE(MT_UN_SIGMOID)
        UNB_CASE(MT_UN_TANH)
        UNB_CASE(MT_UN_SOFTPLUS)
        UNB_CASE(MT_UN_LOG_SIGMOID)
        UNB_CASE(MT_UN_ADD_SCALAR)
        UNB_CASE(MT_UN_MUL_SCALAR)
        UNB_CASE(MT_UN_POW_SCALAR)
        UNB_CASE(MT_UN_CLAMP_MIN)
        UNB_CASE(MT_UN_CLAMP_MAX)
    default:
        for (int64_t i = 0; i < n; i++)
            gi[i] = go[i] * un_deriv(op, x ? x[i] : 0.0f, y ? y[i] : 0.0f, a);
        break;
    }
}
#undef UNB_CASE

static void unary_backward_bf16(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out,
                                const mt_tensor *in, const mt_tensor *out, float alpha) {
    MT_CHECK_MSG(mt_tensor_is_contiguous(grad_in) && mt_tensor_is_contiguous(grad_out) &&
                     (!in || mt_tensor_is_contiguous(in)) && (!out || mt_tensor_is_contiguous(out)),
                 "unary_backward: tensors must be contiguous");
    if (op == MT_UN_LEAKY_RELU && !in) MT_CHECK(alpha > 0);
    int64_t n = mt_tensor_numel(grad_in), nb = (n + BLK - 1) / BLK;
    mt_bf16 *gi = (mt_bf16 *)mt_tensor_data(grad_in);
    const mt_bf16 *go = (const mt_bf16 *)mt_tensor_data(grad_out);
    const mt_bf16 *x = in ? (const mt_bf16 *)mt_tensor_data(in) : NULL;
    const mt_bf16 *y = out ? (const mt_bf16 *)mt_tensor_data(out) : NULL;
#pragma omp parallel for if (n > PAR_MIN / 8) schedule(static)
    for (int64_t blk = 0; blk < nb; blk++) {
        float gof[BLK], xf[BLK], yf[BLK], gif[BLK];
        int64_t i0 = blk * BLK, len = n - i0 < BLK ? n - i0 : BLK;
        mt_cpu_bf16_load(gof, go + i0, 1, len);
        if (x) mt_cpu_bf16_load(xf, x + i0, 1, len);
        if (y) mt_cpu_bf16_load(yf, y + i0, 1, len);
        unary_bwd_block(op, gif, gof, x ? xf : NULL, y ? yf : NULL, len, alpha);
        mt_cpu_bf16_store(gi + i0, 1, gif, len);
    }
}

void mt_cpu_unary_backward(mt_unary_op op, mt_tensor *grad_in, const mt_tensor *grad_out,
                           const mt_tensor *in, const mt_tensor *out, float alpha) {
    if (grad_in->dtype == MT_BF16 || grad_out->dtype == MT_BF16 || (in && in->dtype == MT_BF16) ||
        (out && out->dtype == MT_BF16)) {
        MT_CPU_CHECK_FLOAT_SAME("unary_backward", grad_in, grad_out, in, out);
        unary_backward_bf16(op, grad_in, grad_out, in, out, alpha);
        return;
    }
    MT_KERNEL_DTYPE_CHECK("unary_backward", grad_in, MT_F32);
    MT_KERNEL_DTYPE_CHECK("unary_backward", grad_out, MT_F32);
    if (in) MT_KERNEL_DTYPE_CHECK("unary_backward", in, MT_F32);
    if (out) MT_KERNEL_DTYPE_CHECK("unary_backward", out, MT_F32);
    int64_t n = mt_tensor_numel(grad_in);
    float *gi = MT_F32P(grad_in);
    const float *go = MT_F32P(grad_out);
    const float *x = in ? MT_F32P(in) : NULL, *y = out ? MT_F32P(out) : NULL;
    switch (op) {
    case MT_UN_RELU:
        if (x) {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) gi[i] = x[i] > 0 ? go[i] : 0;
        } else {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) gi[i] = y[i] > 0 ? go[i] : 0;
        }
        return;
    case MT_UN_LEAKY_RELU:
        /* y has the sign of x when alpha > 0, so either may be given. */
        if (x) {
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) gi[i] = x[i] > 0 ? go[i] : alpha * go[i];
        } else {
            MT_CHECK(alpha > 0);
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++) gi[i] = y[i] > 0 ? go[i] : alpha * go[i];
        }
        return;
    default:
#pragma omp parallel for if (n > PAR_MIN / 8) schedule(static)
        for (int64_t i = 0; i < n; i++)
            gi[i] = go[i] * un_deriv(op, x ? x[i] : 0.0f, y ? y[i] : 0.0f, alpha);
        return;
    }
}

void mt_cpu_one_hot(mt_tensor *out, const mt_tensor *labels, int num_classes) {
    if (out->dtype != MT_BF16) MT_KERNEL_DTYPE_CHECK("one_hot", out, MT_F32);
    MT_CHECK(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(labels));
    int64_t N = out->shape[0], C = num_classes;
    MT_CHECK(out->shape[1] == C);
    int64_t S = mt_tensor_numel(out) / (N * C);
    MT_CHECK(mt_tensor_numel(labels) == N * S);
    int bf = out->dtype == MT_BF16;
    float *o = bf ? NULL : MT_F32P(out);
    mt_bf16 *ob = bf ? (mt_bf16 *)mt_tensor_data(out) : NULL;
    const mt_bf16 one_bf = mt_f32_to_bf16(1.0f);
    const void *lb = mt_tensor_data(labels);
    memset(mt_tensor_data(out), 0, mt_dtype_size(out->dtype) * (size_t)(N * C * S));
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            int64_t v = labels->dtype == MT_U8 ? ((const uint8_t *)lb)[n * S + s]
                        : labels->dtype == MT_I32 ? ((const int32_t *)lb)[n * S + s]
                                                  : (int64_t)load_f(labels, lb, n * S + s);
            MT_CHECK_MSG(v >= 0 && v < C, "one_hot: label %lld outside [0, %lld)", (long long)v,
                         (long long)C);
            if (bf)
                ob[(n * C + v) * S + s] = one_bf;
            else
                o[(n * C + v) * S + s] = 1.0f;
        }
}

void mt_cpu_argmax_channel(mt_tensor *out, const mt_tensor *in) {
    MT_KERNEL_DTYPE_CHECK("argmax_channel", out, MT_I32);
    int64_t N = in->shape[0], C = in->shape[1], S = mt_tensor_numel(in) / (N * C);
    int32_t *o = (int32_t *)mt_tensor_data(out);
    if (in->dtype == MT_BF16) {
        /* the f32 loop on the widened values */
        const mt_bf16 *x = (const mt_bf16 *)mt_tensor_data(in);
        for (int64_t n = 0; n < N; n++)
#pragma omp parallel for if (S > PAR_MIN) schedule(static)
            for (int64_t s = 0; s < S; s++) {
                int best = 0;
                float bv = bf16_widen(x[n * C * S + s]);
                for (int64_t c = 1; c < C; c++) {
                    float v = bf16_widen(x[(n * C + c) * S + s]);
                    if (v > bv) {
                        bv = v;
                        best = (int)c;
                    }
                }
                o[n * S + s] = best;
            }
        return;
    }
    MT_KERNEL_DTYPE_CHECK("argmax_channel", in, MT_F32);
    const float *x = MT_F32P(in);
    for (int64_t n = 0; n < N; n++)
#pragma omp parallel for if (S > PAR_MIN) schedule(static)
        for (int64_t s = 0; s < S; s++) {
            int best = 0;
            float bv = x[n * C * S + s];
            for (int64_t c = 1; c < C; c++) {
                float v = x[(n * C + c) * S + s];
                if (v > bv) {
                    bv = v;
                    best = (int)c;
                }
            }
            o[n * S + s] = best;
        }
}
