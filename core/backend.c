#include "core/backend.h"

#include <stdio.h>

static const mt_backend *g_backends[MT_NUM_DEVICE_TYPES] = {&mt_cpu_backend, NULL};

const mt_backend *mt_backend_get(mt_device_type type) {
    if ((int)type < 0 || type >= MT_NUM_DEVICE_TYPES) return NULL;
    return g_backends[type];
}

void mt_backend_register(mt_device_type type, const mt_backend *b) {
    MT_CHECK((int)type >= 0 && type < MT_NUM_DEVICE_TYPES);
    g_backends[type] = b;
}

int mt_device_available(mt_device d) { return mt_backend_get(d.type) != NULL; }

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
