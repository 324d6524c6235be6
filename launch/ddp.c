/* Bucketed gradient all-reduce (launch/ddp.h). */
#include "launch/ddp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/backend.h"

typedef struct {
    struct mt_ddp *r;
    mt_tensor *param; /* borrowed from the params list */
    int index;        /* registration order */
    int bucket;
    int64_t offset, numel;
    int ready; /* gradient copied into the slot this step */
} slot;

typedef struct {
    int n, n_ready;
    int *params; /* parameter indices, in bucket order */
    int64_t numel;
    float *buf;      /* MPI path: host buffer */
    mt_tensor *dev;  /* NCCL path: (numel) f32 on the GPU */
    mt_dist_request *req;
    int launched;
} bucket;

struct mt_ddp {
    mt_dist *d;
    mt_nccl *nccl; /* NULL: MPI on host buffers */
    mt_named_tensors params;
    mt_named_tensors buffers; /* broadcast from rank 0 after each step */
    char *buf_bytes;
    size_t buf_nbytes;
    slot *slots;
    int n_buckets;
    bucket *buckets;
    int next_launch; /* buckets start strictly in order: same order on every rank */
    int64_t *reduce_count;
    int64_t started_in_backward;
    mt_status hook_status; /* first failure inside a hook, reported by finish */
    char hook_msg[512];
};

static mt_tensor *slot_view(const slot *s) {
    bucket *b = &s->r->buckets[s->bucket];
    if (b->dev) {
        mt_tensor *flat = mt_tensor_slice(b->dev, 0, s->offset, s->offset + s->numel, 1);
        mt_tensor *v = mt_tensor_view(flat, s->param->ndim, s->param->shape);
        MT_CHECK(v);
        mt_tensor_release(flat);
        return v;
    }
    return mt_tensor_wrap(MT_F32, s->param->ndim, s->param->shape, b->buf + s->offset);
}

static mt_status launch(mt_ddp *r, int bi) {
    bucket *b = &r->buckets[bi];
    b->launched = 1;
    for (int k = 0; k < b->n; k++) r->reduce_count[b->params[k]]++;
    if (r->nccl) return mt_nccl_allreduce_start(r->nccl, b->dev);
    return mt_dist_iallreduce_f32(r->d, b->buf, b->numel, &b->req);
}

/* Starts every bucket that is complete, in bucket order. */
static void launch_ready(mt_ddp *r) {
    while (r->next_launch < r->n_buckets) {
        bucket *b = &r->buckets[r->next_launch];
        if (b->n_ready < b->n) break;
        mt_status s = launch(r, r->next_launch);
        if (s != MT_OK && r->hook_status == MT_OK) {
            r->hook_status = s;
            snprintf(r->hook_msg, sizeof r->hook_msg, "%s", mt_error_msg());
        }
        r->started_in_backward++;
        r->next_launch++;
    }
    if (!r->nccl)
        for (int k = 0; k < r->next_launch; k++) mt_dist_progress(r->d, r->buckets[k].req);
}

static void grad_ready(mt_tensor *leaf, void *ctx) {
    slot *s = ctx;
    mt_ddp *r = s->r;
    MT_CHECK_MSG(!s->ready, "ddp: gradient of parameter %s ready twice in one step (one backward per step)",
                 r->params.items[s->index].name);
    MT_CHECK(leaf->grad);
    mt_tensor *v = slot_view(s);
    mt_tensor_copy_(v, leaf->grad);
    mt_tensor_release(v);
    s->ready = 1;
    r->buckets[s->bucket].n_ready++;
    launch_ready(r);
}

mt_status mt_ddp_init(mt_ddp **out, mt_dist *d, mt_module *m, double bucket_mb, double first_bucket_mb) {
    *out = NULL;
    /* every rank starts from rank 0's parameters and buffers */
    mt_named_tensors sd = {0};
    mt_module_state_dict(m, &sd);
    for (int k = 0; k < sd.n; k++) {
        mt_tensor *t = sd.items[k].tensor;
        /* MPI works on host memory: a device tensor goes through a host copy */
        int host = mt_tensor_is_contiguous(t) && mt_tensor_device(t).type == MT_CPU;
        mt_tensor *h = host ? mt_tensor_retain(t) : mt_tensor_to_device(t, MT_DEVICE_CPU);
        mt_tensor *hc = mt_tensor_contiguous(h);
        mt_tensor_release(h);
        mt_status s = mt_dist_broadcast(d, mt_tensor_data(hc), mt_tensor_nbytes(hc));
        if (s == MT_OK && hc != t) mt_tensor_copy_(t, hc);
        mt_tensor_release(hc);
        if (s != MT_OK) {
            mt_error_prefix(s, "broadcasting %s from rank 0: ", sd.items[k].name);
            mt_named_tensors_free(&sd);
            return s;
        }
    }
    mt_named_tensors_free(&sd);

    mt_ddp *r = calloc(1, sizeof *r);
    MT_CHECK(r);
    r->d = d;
    mt_module_named_parameters(m, &r->params);
    mt_module_named_buffers(m, &r->buffers);
    for (int k = 0; k < r->buffers.n; k++) r->buf_nbytes += mt_tensor_nbytes(r->buffers.items[k].tensor);
    r->buf_bytes = malloc(r->buf_nbytes ? r->buf_nbytes : 1);
    MT_CHECK(r->buf_bytes);
    int n = r->params.n;
    r->slots = calloc((size_t)(n ? n : 1), sizeof *r->slots);
    r->buckets = calloc((size_t)(n ? n : 1), sizeof *r->buckets);
    r->reduce_count = calloc((size_t)(n ? n : 1), sizeof *r->reduce_count);
    MT_CHECK(r->slots && r->buckets && r->reduce_count);
    int64_t cap_first = (int64_t)(first_bucket_mb * 1048576.0 / 4.0);
    int64_t cap = (int64_t)(bucket_mb * 1048576.0 / 4.0);
    if (cap_first < 1) cap_first = 1;
    if (cap < 1) cap = 1;
    /* reverse registration order */
    for (int i = n - 1; i >= 0; i--) {
        mt_tensor *p = r->params.items[i].tensor;
        int64_t ne = mt_tensor_numel(p);
        int bi = r->n_buckets - 1;
        if (bi < 0 || (r->buckets[bi].n > 0 && r->buckets[bi].numel + ne > (bi == 0 ? cap_first : cap))) {
            bi = r->n_buckets++;
            r->buckets[bi].params = calloc((size_t)n, sizeof(int));
            MT_CHECK(r->buckets[bi].params);
        }
        bucket *b = &r->buckets[bi];
        slot *s = &r->slots[i];
        s->r = r;
        s->param = p;
        s->index = i;
        s->bucket = bi;
        s->offset = b->numel;
        s->numel = ne;
        b->params[b->n++] = i;
        b->numel += ne;
    }
    for (int bi = 0; bi < r->n_buckets; bi++) {
        bucket *b = &r->buckets[bi];
        b->buf = malloc((size_t)(b->numel ? b->numel : 1) * sizeof(float));
        MT_CHECK(b->buf);
    }
    for (int i = 0; i < n; i++) mt_tensor_set_grad_hook(r->params.items[i].tensor, grad_ready, &r->slots[i]);
    *out = r;
    return MT_OK;
}

mt_status mt_ddp_use_nccl(mt_ddp *r, mt_nccl *c) {
    MT_CHECK_MSG(!r->nccl && c, "ddp: NCCL set twice or NULL");
    mt_device dev = r->params.n ? mt_tensor_device(r->params.items[0].tensor) : MT_DEVICE_CPU;
    MT_CHECK_MSG(dev.type == MT_CUDA, "ddp: the NCCL path needs the parameters on a GPU");
    for (int i = 0; i < r->params.n; i++)
        MT_CHECK_MSG(mt_device_eq(mt_tensor_device(r->params.items[i].tensor), dev),
                     "ddp: parameter %s is on another device", r->params.items[i].name);
    for (int bi = 0; bi < r->n_buckets; bi++) {
        bucket *b = &r->buckets[bi];
        int64_t n = b->numel ? b->numel : 1;
        b->dev = mt_tensor_zeros(MT_F32, 1, &n, dev);
        free(b->buf);
        b->buf = NULL;
    }
    r->nccl = c;
    return MT_OK;
}

mt_status mt_ddp_finish(mt_ddp *r) {
    mt_status s = r->hook_status;
    if (s != MT_OK) mt_error_set(s, "%s", r->hook_msg);
    /* parameters without a gradient this step contribute zeros */
    for (int bi = r->next_launch; bi < r->n_buckets && s == MT_OK; bi++) {
        bucket *b = &r->buckets[bi];
        for (int k = 0; k < b->n; k++) {
            slot *sl = &r->slots[b->params[k]];
            if (sl->ready) continue;
            if (b->dev) {
                mt_tensor *v = slot_view(sl);
                mt_tensor_fill_(v, 0.0);
                mt_tensor_release(v);
            } else {
                memset(b->buf + sl->offset, 0, (size_t)sl->numel * sizeof(float));
            }
        }
        s = launch(r, bi);
    }
    if (r->nccl) { /* one wait covers every bucket (one NCCL stream, in order) */
        mt_status w = mt_nccl_wait(r->nccl);
        if (s == MT_OK) s = w;
    }
    /* wait for all (also after a failure: no request is left behind) */
    for (int bi = 0; bi < r->n_buckets; bi++) {
        bucket *b = &r->buckets[bi];
        if (b->req) {
            mt_status w = mt_dist_wait(r->d, b->req);
            if (s == MT_OK) s = w;
            b->req = NULL;
        }
    }
    if (s == MT_OK) {
        float inv = 1.0f / (float)r->d->world;
        for (int bi = 0; bi < r->n_buckets; bi++) {
            bucket *b = &r->buckets[bi];
            if (r->d->world > 1 && b->dev && b->numel)
                mt_kernel(mt_tensor_device(b->dev), unary)(MT_UN_MUL_SCALAR, b->dev, b->dev, inv);
            else if (r->d->world > 1)
                for (int64_t i = 0; i < b->numel; i++) b->buf[i] *= inv;
        }
        for (int i = 0; i < r->params.n; i++) {
            slot *sl = &r->slots[i];
            mt_tensor *p = sl->param;
            if (!p->grad) p->grad = mt_tensor_new(MT_F32, p->ndim, p->shape, mt_tensor_device(p));
            mt_tensor *v = slot_view(sl);
            mt_tensor_copy_(p->grad, v);
            mt_tensor_release(v);
        }
    }
    /* reset the per-step state */
    for (int i = 0; i < r->params.n; i++) r->slots[i].ready = 0;
    for (int bi = 0; bi < r->n_buckets; bi++) {
        r->buckets[bi].n_ready = 0;
        r->buckets[bi].launched = 0;
    }
    r->next_launch = 0;
    r->hook_status = MT_OK;
    return s;
}

mt_status mt_ddp_sync_buffers(mt_ddp *r) {
    if (r->d->world == 1 || r->buf_nbytes == 0) return MT_OK;
    /* packed into one host buffer (device buffers through host copies: mt_tensor_copy_
     * between a host view of the packed bytes and the buffer, either direction) */
    size_t off = 0;
    for (int k = 0; k < r->buffers.n; k++) {
        mt_tensor *t = r->buffers.items[k].tensor;
        size_t nb = mt_tensor_nbytes(t);
        if (r->d->rank == 0) {
            mt_tensor *v = mt_tensor_wrap(t->dtype, t->ndim, t->shape, r->buf_bytes + off);
            mt_tensor_copy_(v, t);
            mt_tensor_release(v);
        }
        off += nb;
    }
    MT_TRY(mt_dist_broadcast(r->d, r->buf_bytes, r->buf_nbytes));
    off = 0;
    for (int k = 0; k < r->buffers.n; k++) {
        mt_tensor *t = r->buffers.items[k].tensor;
        size_t nb = mt_tensor_nbytes(t);
        if (r->d->rank != 0) {
            mt_tensor *v = mt_tensor_wrap(t->dtype, t->ndim, t->shape, r->buf_bytes + off);
            mt_tensor_copy_(t, v);
            mt_tensor_release(v);
        }
        off += nb;
    }
    return MT_OK;
}

int mt_ddp_num_buckets(const mt_ddp *r) { return r->n_buckets; }
int mt_ddp_bucket_size(const mt_ddp *r, int b) { return r->buckets[b].n; }
int mt_ddp_bucket_param(const mt_ddp *r, int b, int k) { return r->buckets[b].params[k]; }
int64_t mt_ddp_reduce_count(const mt_ddp *r, int i) { return r->reduce_count[i]; }
int64_t mt_ddp_started_in_backward(const mt_ddp *r) { return r->started_in_backward; }

void mt_ddp_free(mt_ddp *r) {
    if (!r) return;
    for (int i = 0; i < r->params.n; i++) mt_tensor_set_grad_hook(r->params.items[i].tensor, NULL, NULL);
    for (int bi = 0; bi < r->n_buckets; bi++) {
        if (r->buckets[bi].req) mt_dist_wait(r->d, r->buckets[bi].req);
        free(r->buckets[bi].buf);
        mt_tensor_release(r->buckets[bi].dev);
        free(r->buckets[bi].params);
    }
    free(r->buckets);
    free(r->slots);
    free(r->reduce_count);
    mt_named_tensors_free(&r->params);
    mt_named_tensors_free(&r->buffers);
    free(r->buf_bytes);
    free(r);
}
