#include "core/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MT_HAVE_CUDA
extern const mt_backend mt_cuda_backend; /* core/cuda/backend_cuda.cu */
#define MT_CUDA_TABLE (&mt_cuda_backend)
#else
#define MT_CUDA_TABLE NULL
#endif

static const mt_backend *g_backends[MT_NUM_DEVICE_TYPES] = {&mt_cpu_backend, MT_CUDA_TABLE};
static int g_allow_tf32 = 0;

void mt_backend_set_allow_tf32(int allow) { g_allow_tf32 = allow != 0; }
int mt_backend_allow_tf32(void) { return g_allow_tf32; }

const mt_backend *mt_backend_get(mt_device_type type) {
    if ((int)type < 0 || type >= MT_NUM_DEVICE_TYPES) return NULL;
    return g_backends[type];
}

void mt_backend_register(mt_device_type type, const mt_backend *b) {
    MT_CHECK((int)type >= 0 && type < MT_NUM_DEVICE_TYPES);
    g_backends[type] = b;
}

int mt_device_available(mt_device d) {
    const mt_backend *b = mt_backend_get(d.type);
    if (!b) return 0;
    if (d.type == MT_CPU) return d.index == 0;
    int n = b->device_count ? b->device_count() : 0;
    return d.index >= 0 && d.index < n;
}

int mt_device_parse(const char *s, mt_device *out) {
    mt_device cuda0 = {MT_CUDA, 0};
    if (!s) s = "";
    if (!strcmp(s, "cpu")) {
        *out = MT_DEVICE_CPU;
        return 0;
    }
    if (!strcmp(s, "auto")) {
        *out = mt_device_available(cuda0) ? cuda0 : MT_DEVICE_CPU;
        return 0;
    }
    if (strncmp(s, "cuda", 4) != 0 || (s[4] != 0 && s[4] != ':')) {
        mt_error_set(MT_ERR_INVALID, "unknown device '%s' (expected auto, cpu, cuda or cuda:N)", s);
        return -1;
    }
    long idx = 0;
    if (s[4] == ':') {
        char *end = NULL;
        idx = strtol(s + 5, &end, 10);
        if (end == s + 5 || *end || idx < 0 || idx > 1023) {
            mt_error_set(MT_ERR_INVALID, "bad device index in '%s' (expected cuda:N, N >= 0)", s);
            return -1;
        }
    }
    const mt_backend *b = mt_backend_get(MT_CUDA);
    if (!b) {
        mt_error_set(MT_ERR_INVALID,
                     "device '%s': this medtrain was built without the CUDA backend (configured "
                     "with MT_CUDA=OFF, or nvcc / cuDNN were not found); use cpu",
                     s);
        return -1;
    }
    int n = b->device_count ? b->device_count() : 0;
    if (n == 0) {
        mt_error_set(MT_ERR_INVALID, "device '%s': no usable GPU (%s); use cpu", s,
                     (b->device_error && b->device_error()) ? b->device_error() : "the CUDA driver reports no devices");
        return -1;
    }
    if (idx >= n) {
        mt_error_set(MT_ERR_INVALID, "device '%s': only %d GPU%s visible (cuda:0%s)", s, n,
                     n == 1 ? " is" : "s are", n == 1 ? "" : " .. cuda:N-1");
        return -1;
    }
    out->type = MT_CUDA;
    out->index = (int)idx;
    return 0;
}

const mt_backend *mt_backend_require(mt_device dev, size_t slot_offset, const char *op) {
    char name[32];
    const mt_backend *b = mt_backend_get(dev.type);
    if (!b)
        mt_fatal(__FILE__, __LINE__, "op '%s': no backend for device %s is compiled in", op,
                 mt_device_name(dev, name, sizeof name));
    const void *fn = *(const void *const *)((const char *)b + slot_offset);
    if (!fn)
        mt_fatal(__FILE__, __LINE__, "op '%s' is not implemented on device %s", op,
                 mt_device_name(dev, name, sizeof name));
    return b;
}
