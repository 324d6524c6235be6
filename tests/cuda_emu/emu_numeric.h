/* medtrain CUDA emulator: the number formats the cuDNN and cuBLAS stand-ins
 * round through (emu_cudnn.cpp, emu_cublas.cpp), written from their IEEE /
 * NVIDIA definitions. C++ only, header-only. */
#ifndef MT_EMU_NUMERIC_H
#define MT_EMU_NUMERIC_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mt_emu {

inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; NaN stays (quiet) NaN. */
inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* TF32: 10 explicit mantissa bits, round to nearest even; Inf/NaN kept. */
inline float tf32_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;
    u += 0xfffu + ((u >> 13) & 1u);
    u &= 0xffffe000u;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE fp16 value (round to nearest even, subnormals, overflow to Inf). */
inline double fp16_round(double v) {
    if (!std::isfinite(v) || v == 0.0) return v;
    double a = std::fabs(v);
    if (a >= 65520.0) return std::copysign(INFINITY, v);
    int e;
    std::frexp(a, &e); /* a in [2^(e-1), 2^e) */
    double q = std::ldexp(1.0, std::max(e - 1 - 10, -24));
    return std::copysign(std::nearbyint(a / q) * q, v);
}

} // namespace mt_emu

#endif
