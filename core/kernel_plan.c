/* Host-side kernel planning shared by the backends (core/kernel_plan.h). */
#include "core/kernel_plan.h"

#include <string.h>

void mt_gemm_operand_init(mt_gemm_operand *o, const mt_tensor *t, const char *name) {
    char buf[96];
    MT_CHECK_MSG(t->ndim == 2 || t->ndim == 3, "gemm: %s must be 2-D or 3-D, got %s", name,
                 mt_tensor_shape_str(t, buf, sizeof buf));
    int nd = t->ndim;
    o->batch = nd == 3 ? t->shape[0] : 1;
    o->bstride = nd == 3 ? t->strides[0] : 0;
    if (o->batch == 1) o->bstride = 0;
    o->rows = t->shape[nd - 2];
    o->cols = t->shape[nd - 1];
    o->ld = o->rows == 1 ? (o->cols > 0 ? o->cols : 1) : t->strides[nd - 2];
    MT_CHECK_MSG((o->cols <= 1 || t->strides[nd - 1] == 1) && o->ld >= o->cols && o->ld >= 1,
                 "gemm: %s %s must have contiguous rows", name,
                 mt_tensor_shape_str(t, buf, sizeof buf));
}

void mt_gemm_plan_init(mt_gemm_plan *p, const mt_tensor *c, const mt_tensor *a, const mt_tensor *b,
                       int trans_a, int trans_b) {
    mt_gemm_operand_init(&p->a, a, "a");
    mt_gemm_operand_init(&p->b, b, "b");
    mt_gemm_operand_init(&p->c, c, "c");
    p->m = trans_a ? p->a.cols : p->a.rows;
    p->k = trans_a ? p->a.rows : p->a.cols;
    int64_t kb = trans_b ? p->b.cols : p->b.rows;
    p->n = trans_b ? p->b.rows : p->b.cols;
    p->batch = p->c.batch;
    char sa[96], sb[96], sc[96];
    MT_CHECK_MSG(p->k == kb && p->c.rows == p->m && p->c.cols == p->n &&
                     (p->a.batch == p->batch || p->a.batch == 1) &&
                     (p->b.batch == p->batch || p->b.batch == 1) &&
                     (p->batch == 1 || p->c.bstride >= p->c.rows * p->c.ld),
                 "gemm: shapes a %s%s, b %s%s, c %s do not match",
                 mt_tensor_shape_str(a, sa, sizeof sa), trans_a ? "^T" : "",
                 mt_tensor_shape_str(b, sb, sizeof sb), trans_b ? "^T" : "",
                 mt_tensor_shape_str(c, sc, sizeof sc));
    p->fold_batch = p->batch > 1 && p->b.bstride == 0 && p->a.bstride == p->a.rows * p->a.ld && !trans_a &&
                    p->c.bstride == p->c.rows * p->c.ld && p->a.ld == p->a.cols && p->c.ld == p->c.cols;
}

void mt_reduce_check_shapes(const mt_tensor *out, const mt_tensor *in) {
    MT_CHECK_MSG(mt_tensor_is_contiguous(out) && mt_tensor_is_contiguous(in),
                 "reduce: tensors must be contiguous");
    char b1[128], b2[128];
    MT_CHECK_MSG(out->ndim == in->ndim, "reduce: output %s and input %s differ in rank",
                 mt_tensor_shape_str(out, b1, sizeof b1), mt_tensor_shape_str(in, b2, sizeof b2));
    for (int d = 0; d < in->ndim; d++)
        MT_CHECK_MSG(out->shape[d] == in->shape[d] || out->shape[d] == 1,
                     "reduce: output %s does not fit input %s",
                     mt_tensor_shape_str(out, b1, sizeof b1), mt_tensor_shape_str(in, b2, sizeof b2));
}

void mt_pool_check_params(const char *op, const mt_pool_params *p) {
    for (int a = 0; a < 3; a++)
        MT_CHECK_MSG(p->kernel[a] > 0 && p->stride[a] > 0 && p->padding[a] >= 0 &&
                         p->padding[a] <= p->kernel[a] / 2,
                     "%s: bad geometry on axis %d (kernel %d, stride %d, padding %d)", op, a,
                     p->kernel[a], p->stride[a], p->padding[a]);
}

void mt_reduce_plan_init(mt_reduce_plan *p, const mt_tensor *out, const mt_tensor *in) {
    memset(p, 0, sizeof *p);
    int prev = -1;
    for (int d = 0; d < in->ndim; d++) {
        int64_t s = in->shape[d];
        if (s == 1) continue;
        int r = out->shape[d] == 1;
        if (r) {
            if (prev == 1) {
                p->rs[p->nr - 1] *= s;
                p->rst[p->nr - 1] = in->strides[d];
            } else {
                p->rs[p->nr] = s;
                p->rst[p->nr++] = in->strides[d];
            }
        } else {
            if (prev == 0) {
                p->ks[p->nk - 1] *= s;
                p->kst[p->nk - 1] = in->strides[d];
            } else {
                p->ks[p->nk] = s;
                p->kst[p->nk++] = in->strides[d];
            }
        }
        prev = r;
    }
    p->last_reduced = prev == 1;
}

void mt_conv_check_shapes(const char *op, const mt_tensor *x, const mt_tensor *w,
                          const mt_tensor *y, const mt_conv_params *p) {
    char bx[96], bw[96], by[96];
    MT_CHECK_MSG(x->ndim == 5 && w->ndim == 5 && y->ndim == 5,
                 "%s: expected 5-D tensors, got x %s, w %s, y %s", op,
                 mt_tensor_shape_str(x, bx, sizeof bx), mt_tensor_shape_str(w, bw, sizeof bw),
                 mt_tensor_shape_str(y, by, sizeof by));
    MT_CHECK_MSG(mt_tensor_is_contiguous(x) && mt_tensor_is_contiguous(w) &&
                     mt_tensor_is_contiguous(y),
                 "%s: tensors must be contiguous", op);
    int64_t n = x->shape[0], cin = x->shape[1], cout = y->shape[1];
    int ok = p->groups >= 1 && cin % p->groups == 0 && cout % p->groups == 0 && y->shape[0] == n &&
             w->shape[0] == cout && w->shape[1] == cin / p->groups;
    for (int j = 0; j < 3; j++) {
        int64_t span = (int64_t)p->dilation[j] * (w->shape[2 + j] - 1) + 1;
        int64_t padded = x->shape[2 + j] + 2 * (int64_t)p->padding[j];
        ok = ok && p->stride[j] >= 1 && p->dilation[j] >= 1 && p->padding[j] >= 0 &&
             padded >= span && y->shape[2 + j] >= 1 &&
             y->shape[2 + j] <= (padded - span) / p->stride[j] + 1;
    }
    MT_CHECK_MSG(ok,
                 "%s: inconsistent shapes x %s, w %s, y %s for stride (%d,%d,%d) padding "
                 "(%d,%d,%d) dilation (%d,%d,%d) groups %d",
                 op, mt_tensor_shape_str(x, bx, sizeof bx), mt_tensor_shape_str(w, bw, sizeof bw),
                 mt_tensor_shape_str(y, by, sizeof by), p->stride[0], p->stride[1], p->stride[2],
                 p->padding[0], p->padding[1], p->padding[2], p->dilation[0], p->dilation[1],
                 p->dilation[2], p->groups);
}
