/* medtrain CUDA emulator: the subset of CUDA's library_types.h that the
 * backend uses (values as in the CUDA toolkit). */
#ifndef MT_EMU_LIBRARY_TYPES_H
#define MT_EMU_LIBRARY_TYPES_H

typedef enum cudaDataType_t {
    CUDA_R_16F = 2,
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16BF = 14,
} cudaDataType_t;
typedef cudaDataType_t cudaDataType;

#endif
