#include "core/dtype.h"

size_t mt_dtype_size(mt_dtype dt) {
    switch (dt) {
    case MT_F32: return 4;
    case MT_BF16: return 2;
    case MT_I32: return 4;
    case MT_U8: return 1;
    default: return 0;
    }
}

const char *mt_dtype_name(mt_dtype dt) {
    switch (dt) {
    case MT_F32: return "f32";
    case MT_BF16: return "bf16";
    case MT_I32: return "i32";
    case MT_U8: return "u8";
    default: return "?";
    }
}

int mt_dtype_is_float(mt_dtype dt) { return dt == MT_F32 || dt == MT_BF16; }

mt_bf16 mt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (mt_bf16)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (mt_bf16)(u >> 16);
}

float mt_bf16_to_f32(mt_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
