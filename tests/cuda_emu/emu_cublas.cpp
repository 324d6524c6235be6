/* medtrain CUDA emulator: the cuBLAS calls of core/cuda/ on the CPU
 * (include/cublas_v2.h). Written from the cuBLAS reference, not from the
 * callers: arguments are validated as documented (status codes included),
 * matrices are column-major with the given leading dimensions and batch
 * strides, and data pointers must be emulated device memory
 * (mt_emu_is_device_ptr), scalars host memory in pointer mode host.
 *
 * cublasGemmStridedBatchedEx: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b],
 * products and sums in double, C not read when beta == 0 (A and B not read
 * when alpha == 0 or k == 0), rounded to Ctype (bf16: via float, round to
 * nearest even). float operands are rounded first as the compute type allows:
 * CUBLAS_COMPUTE_32F_FAST_TF32 (or CUBLAS_COMPUTE_32F with the handle in
 * CUBLAS_TF32_TENSOR_OP_MATH) to TF32 unless NVIDIA_TF32_OVERRIDE=0,
 * _FAST_16BF to bf16, _FAST_16F to fp16; CUBLAS_COMPUTE_32F and _PEDANTIC are
 * true fp32. Supported types: 32F x 32F -> 32F, 16BF x 16BF -> 16BF or 32F
 * (compute 32F), 64F (compute 64F).
 *
 * Emulator checks beyond cuBLAS's own (undefined behaviour on a GPU): C
 * batches that overlap, scalars in the wrong memory for the pointer mode, a
 * workspace set by cublasSetWorkspace that is no longer allocated. Failures
 * print one line on stderr (mt_emu_report; MT_EMU_QUIET silences it). */
#include "cublas_v2.h"
#include "emu_numeric.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

struct cublasContext {
    cudaStream_t stream = nullptr;
    void *ws = nullptr; /* set by cublasSetWorkspace; reset by cublasSetStream */
    size_t ws_size = 0;
    bool user_ws = false;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
    cublasPointerMode_t pmode = CUBLAS_POINTER_MODE_HOST;
};

namespace {

cublasStatus_t fail(cublasStatus_t st, const char *fn, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mt_emu_report("cuBLAS", "%s: %s -> %s", fn, msg, cublasGetStatusName(st));
    return st;
}

std::mutex g_mu;
std::unordered_set<const void *> g_handles;

bool live(const void *h) {
    std::lock_guard<std::mutex> g(g_mu);
    return g_handles.count(h) == 1;
}

cublasStatus_t check_handle(const char *fn, cublasHandle_t h) {
    if (!h || !live(h))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, fn, "handle %p was not created by cublasCreate or was destroyed",
                    (const void *)h);
    return CUBLAS_STATUS_SUCCESS;
}

/* ------------------------------------------------------------ numbers */

size_t elem_size(cudaDataType t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    default: return 0;
    }
}

const char *type_name(cudaDataType t) {
    switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_64F: return "CUDA_R_64F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    case CUDA_R_16F: return "CUDA_R_16F";
    default: return "other";
    }
}

using mt_emu::bf16_to_float;
using mt_emu::float_to_bf16;
using mt_emu::fp16_round;
using mt_emu::tf32_round;

enum class Rnd { none, tf32, bf16, fp16 };

double round_operand(double x, Rnd r) {
    switch (r) {
    case Rnd::tf32: return tf32_round((float)x);
    case Rnd::bf16: return bf16_to_float(float_to_bf16((float)x));
    case Rnd::fp16: return fp16_round(x);
    default: return x;
    }
}

double read_elem(const void *base, cudaDataType t, int64_t off) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)base)[off];
    case CUDA_R_64F: return ((const double *)base)[off];
    case CUDA_R_16BF: return bf16_to_float(((const uint16_t *)base)[off]);
    default: return NAN;
    }
}

void write_elem(void *base, cudaDataType t, int64_t off, double v) {
    switch (t) {
    case CUDA_R_32F: ((float *)base)[off] = (float)v; break;
    case CUDA_R_64F: ((double *)base)[off] = v; break;
    case CUDA_R_16BF: ((uint16_t *)base)[off] = float_to_bf16((float)v); break;
    default: break;
    }
}

bool valid_compute(int ct) {
    switch (ct) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
    case CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT:
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC: return true;
    default: return false;
    }
}

bool valid_algo(int a) { return a == -1 || (a >= 0 && a <= 23) || (a >= 99 && a <= 115) || a == 999; }

/* Whether (A, B, C, compute) is an emulated combination of the cublasGemmEx
 * table; *missing when it is a real one the emulator lacks (fp16, int8). */
bool supported_types(cudaDataType a, cudaDataType b, cudaDataType c, cublasComputeType_t ct, bool *missing) {
    *missing = false;
    if (a != b) return false;
    switch (ct) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        if (a == CUDA_R_32F) return c == CUDA_R_32F;
        if (a == CUDA_R_16BF) return c == CUDA_R_16BF || c == CUDA_R_32F;
        if (a == CUDA_R_16F) *missing = c == CUDA_R_16F || c == CUDA_R_32F;
        return false;
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32: return a == CUDA_R_32F && c == CUDA_R_32F;
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC: return a == CUDA_R_64F && c == CUDA_R_64F;
    default: *missing = true; return false;
    }
}

bool tf32_allowed() {
    const char *o = getenv("NVIDIA_TF32_OVERRIDE");
    return !(o && strcmp(o, "0") == 0);
}

Rnd operand_rounding(cudaDataType a, cublasComputeType_t ct, cublasMath_t math) {
    if (a != CUDA_R_32F) return Rnd::none;
    switch (ct) {
    case CUBLAS_COMPUTE_32F_FAST_TF32: return tf32_allowed() ? Rnd::tf32 : Rnd::none;
    case CUBLAS_COMPUTE_32F_FAST_16BF: return Rnd::bf16;
    case CUBLAS_COMPUTE_32F_FAST_16F: return Rnd::fp16;
    case CUBLAS_COMPUTE_32F:
        return ((int)math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH && tf32_allowed() ? Rnd::tf32 : Rnd::none;
    default: return Rnd::none;
    }
}

/* The bytes a strided batch of (rows x cols, ld) column-major matrices
 * spans: [base + lo, base + lo + span). */
void batch_span(int64_t rows, int64_t cols, int64_t ld, long long stride, int batch, size_t es, int64_t *lo,
                size_t *span) {
    const int64_t extent = (cols - 1) * ld + rows;
    const int64_t last = (int64_t)(batch - 1) * stride;
    const int64_t a = std::min<int64_t>(0, last), b = std::max<int64_t>(0, last) + extent;
    *lo = a * (int64_t)es;
    *span = (size_t)(b - a) * es;
}

cublasStatus_t check_matrix(const char *fn, const char *name, const void *p, int64_t rows, int64_t cols, int64_t ld,
                            long long stride, int batch, cudaDataType t) {
    if (!p) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "%s is NULL", name);
    int64_t lo;
    size_t span;
    batch_span(rows, cols, ld, stride, batch, elem_size(t), &lo, &span);
    const char *q = (const char *)p + lo;
    if (!mt_emu_is_device_ptr(q, span))
        return fail(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                    "%s (%p, %lldx%lld, ld %lld, stride %lld, %d batches) is not device memory of %zu bytes from %p",
                    name, p, (long long)rows, (long long)cols, (long long)ld, stride, batch, span, (const void *)q);
    return CUBLAS_STATUS_SUCCESS;
}

/* Whether two elements of C's batches (m x n, ldc, strideC) can coincide:
 * dims sorted by |stride|, each stride must exceed the span of the smaller
 * ones (sufficient for no overlap; interleaved batches pass). */
bool batches_overlap(int m, int n, int ldc, long long strideC, int batch) {
    std::vector<std::pair<long long, long long>> sd;
    if (m > 1) sd.emplace_back(1, m);
    if (n > 1) sd.emplace_back(ldc, n);
    if (batch > 1) sd.emplace_back(strideC < 0 ? -strideC : strideC, batch);
    std::sort(sd.begin(), sd.end());
    long long span = 0;
    for (auto &e : sd) {
        if (e.first <= span) return true;
        span += e.first * (e.second - 1);
    }
    return false;
}

} // namespace

/* ================================================================ API */

extern "C" {

const char *cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "the functionality requested requires some license";
    }
    return "unknown error";
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate", "handle is NULL");
    *handle = new cublasContext();
    std::lock_guard<std::mutex> g(g_mu);
    g_handles.insert(*handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    {
        std::lock_guard<std::mutex> g(g_mu);
        if (!handle || g_handles.erase(handle) != 1)
            return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy", "handle is not live");
    }
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

/* Also resets the workspace to cuBLAS's default pool (as documented). */
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    cublasStatus_t st;
    if ((st = check_handle("cublasSetStream", handle))) return st;
    handle->stream = streamId;
    handle->ws = nullptr;
    handle->ws_size = 0;
    handle->user_ws = false;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *streamId) {
    cublasStatus_t st;
    if ((st = check_handle("cublasGetStream", handle))) return st;
    if (!streamId) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetStream", "streamId is NULL");
    *streamId = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

/* workspace aligned to 256 bytes (INVALID_VALUE otherwise); emulator: it
 * must be device memory of the given size. */
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t size) {
    const char *fn = "cublasSetWorkspace";
    cublasStatus_t st;
    if ((st = check_handle(fn, handle))) return st;
    if (size > 0 && !workspace) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "workspace is NULL with size %zu", size);
    if ((uintptr_t)workspace % 256 != 0)
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "workspace %p is not aligned to 256 bytes", workspace);
    if (size > 0 && !mt_emu_is_device_ptr(workspace, size))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "workspace %p is not device memory of %zu bytes", workspace, size);
    handle->ws = workspace;
    handle->ws_size = size;
    handle->user_ws = true;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode) {
    cublasStatus_t st;
    if ((st = check_handle("cublasGetPointerMode", handle))) return st;
    if (!mode) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetPointerMode", "mode is NULL");
    *mode = handle->pmode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
    cublasStatus_t st;
    if ((st = check_handle("cublasSetPointerMode", handle))) return st;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetPointerMode", "mode %d is invalid", (int)mode);
    handle->pmode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    cublasStatus_t st;
    if ((st = check_handle("cublasGetMathMode", handle))) return st;
    if (!mode) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetMathMode", "mode is NULL");
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    cublasStatus_t st;
    if ((st = check_handle("cublasSetMathMode", handle))) return st;
    const int base = (int)mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (!(base == 0 || base == 1 || base == 2 || base == 3 || base == 4 || base == 8))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode", "mode %d is invalid", (int)mode);
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                          int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo) {
    const char *fn = "cublasGemmStridedBatchedEx";
    mt_emu_stat(fn, 0);
    cublasStatus_t st;
    if ((st = check_handle(fn, handle))) return st;
    mt_emu_stream_flush(handle->stream); /* runs in stream order */
    auto op_ok = [](cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; };
    if (!op_ok(transa) || !op_ok(transb))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "transa %d / transb %d is not N, T or C", (int)transa, (int)transb);
    if (m < 0 || n < 0 || k < 0 || batchCount < 0)
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "negative size: m %d n %d k %d batchCount %d", m, n, k, batchCount);
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N; /* C = T for real types */
    const int64_t rows_a = ta ? k : m, cols_a = ta ? m : k, rows_b = tb ? n : k, cols_b = tb ? k : n;
    if (lda < std::max<int64_t>(1, rows_a))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "lda %d < max(1, %lld) (transa %d)", lda, (long long)rows_a,
                    (int)transa);
    if (ldb < std::max<int64_t>(1, rows_b))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "ldb %d < max(1, %lld) (transb %d)", ldb, (long long)rows_b,
                    (int)transb);
    if (ldc < std::max(1, m)) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "ldc %d < max(1, m = %d)", ldc, m);
    if (!valid_algo(algo)) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "algo %d is invalid", (int)algo);
    if (!valid_compute(computeType))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "computeType %d is invalid", (int)computeType);
    bool missing;
    if (!supported_types(Atype, Btype, Ctype, computeType, &missing))
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, fn, "Atype %s, Btype %s, Ctype %s with computeType %d%s",
                    type_name(Atype), type_name(Btype), type_name(Ctype), (int)computeType,
                    missing ? " (a real combination, not emulated)" : " is not a supported combination");
    if (!alpha || !beta) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha or beta is NULL");
    const bool f64 = computeType == CUBLAS_COMPUTE_64F || computeType == CUBLAS_COMPUTE_64F_PEDANTIC;
    const size_t ssz = f64 ? 8 : 4; /* scale type: float, double for 64F */
    if (handle->pmode == CUBLAS_POINTER_MODE_HOST) {
        if (mt_emu_is_device_ptr(alpha, ssz) || mt_emu_is_device_ptr(beta, ssz))
            return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha/beta are device pointers in pointer mode host");
    } else if (!mt_emu_is_device_ptr(alpha, ssz) || !mt_emu_is_device_ptr(beta, ssz)) {
        return fail(CUBLAS_STATUS_EXECUTION_FAILED, fn, "alpha/beta are not device pointers in pointer mode device");
    }
    const double a = f64 ? *(const double *)alpha : *(const float *)alpha;
    const double b = f64 ? *(const double *)beta : *(const float *)beta;

    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    if (batchCount > 1 && batches_overlap(m, n, ldc, strideC, batchCount))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                    "strideC %lld makes the %d batches of C (%dx%d, ldc %d) overlap (undefined in cuBLAS; emulator check)",
                    strideC, batchCount, m, n, ldc);
    const bool use_ab = k > 0 && a != 0.0;
    if (use_ab) {
        if ((st = check_matrix(fn, "A", A, rows_a, cols_a, lda, strideA, batchCount, Atype)) ||
            (st = check_matrix(fn, "B", B, rows_b, cols_b, ldb, strideB, batchCount, Btype)))
            return st;
    }
    if ((st = check_matrix(fn, "C", C, m, n, ldc, strideC, batchCount, Ctype))) return st;
    if (handle->user_ws && handle->ws_size > 0) {
        if (!mt_emu_is_device_ptr(handle->ws, handle->ws_size))
            return fail(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                        "the workspace set by cublasSetWorkspace (%p, %zu bytes) is no longer device memory", handle->ws,
                        handle->ws_size);
        memset(handle->ws, 0xA5, std::min<size_t>(handle->ws_size, 64 << 10)); /* "use" it */
    }

    const Rnd r = operand_rounding(Atype, computeType, handle->math);
    const size_t esa = elem_size(Atype), esb = elem_size(Btype), esc = elem_size(Ctype);
    std::vector<double> opa, opb; /* op(A) m x k, op(B) k x n, row-major dense */
    for (int bi = 0; bi < batchCount; bi++) {
        const char *Ab = (const char *)A + (int64_t)bi * strideA * (int64_t)esa;
        const char *Bb = (const char *)B + (int64_t)bi * strideB * (int64_t)esb;
        char *Cb = (char *)C + (int64_t)bi * strideC * (int64_t)esc;
        if (use_ab) {
            opa.assign((size_t)m * k, 0.0);
            opb.assign((size_t)k * n, 0.0);
            for (int64_t i = 0; i < m; i++)
                for (int64_t l = 0; l < k; l++)
                    opa[(size_t)(i * k + l)] = round_operand(read_elem(Ab, Atype, ta ? l + i * lda : i + l * lda), r);
            for (int64_t l = 0; l < k; l++)
                for (int64_t j = 0; j < n; j++)
                    opb[(size_t)(l * n + j)] = round_operand(read_elem(Bb, Btype, tb ? j + l * ldb : l + j * ldb), r);
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                double acc = 0.0;
                if (use_ab)
                    for (int64_t l = 0; l < k; l++) acc += opa[(size_t)(i * k + l)] * opb[(size_t)(l * n + j)];
                const int64_t off = i + j * (int64_t)ldc;
                double v = use_ab ? a * acc : 0.0;
                if (b != 0.0) v += b * read_elem(Cb, Ctype, off);
                write_elem(Cb, Ctype, off, v);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
