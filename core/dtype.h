/* Element types and bf16 conversion (round to nearest even, NaN kept). */
#ifndef MT_DTYPE_H
#define MT_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MT_F32 = 0, MT_BF16 = 1, MT_I32 = 2, MT_U8 = 3, MT_NUM_DTYPES = 4 } mt_dtype;

typedef uint16_t mt_bf16;

size_t mt_dtype_size(mt_dtype dt);
const char *mt_dtype_name(mt_dtype dt);
int mt_dtype_is_float(mt_dtype dt);

/* bf16 <-> f32, identical rounding on CPU and GPU backends. */
mt_bf16 mt_f32_to_bf16(float f);
float mt_bf16_to_f32(mt_bf16 h);

#ifdef __cplusplus
}
#endif
#endif
