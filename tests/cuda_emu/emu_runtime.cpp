/* medtrain CUDA emulator: the runtime API and the kernel scheduler (see
 * include/cuda_runtime_api.h and include/mt_cuda_emu_device.h).
 *
 * Device memory is host memory from malloc, filled with 0xff bytes on
 * allocation (NaN for floats, -1 for integers) so a kernel that reads memory
 * nobody wrote shows it; allocations are registered, and every copy, memset,
 * kernel pointer argument and library operand is checked to lie inside a live
 * one. A capacity (MT_EMU_MEM_MIB, default 8192) makes cudaMalloc fail as a
 * full GPU would. MT_EMU_DEVICES sets the device count (default 1; 0
 * emulates a machine whose driver sees no GPU).
 *
 * Errors: a bad launch configuration is a launch error (cudaGetLastError);
 * a fault inside a kernel (trap, divergent barrier or shuffle) prints what
 * happened, which block and thread, and makes the context's error sticky:
 * every later call returns cudaErrorLaunchFailure, as on a GPU. Work runs
 * asynchronously and as late as allowed (see "Streams" below). */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <ucontext.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <set>
#include <vector>

#include "cuda_runtime_api.h"
#include "mt_cuda_emu_device.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* ------------------------------------------------------------ errors */

static thread_local cudaError_t t_last = cudaSuccess;
static cudaError_t g_sticky = cudaSuccess;

static cudaError_t ret(cudaError_t e) {
    if (e != cudaSuccess) t_last = e;
    return e;
}
#define STICKY_CHECK()                                     \
    do {                                                   \
        if (g_sticky != cudaSuccess) return ret(g_sticky); \
    } while (0)

extern "C" void mt_emu_report(const char *who, const char *fmt, ...) {
    const char *q = getenv("MT_EMU_QUIET");
    if (q && *q && strcmp(q, "0") != 0) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cuda emulator%s%s%s: %s\n", who ? " (" : "", who ? who : "", who ? ")" : "", msg);
}
#define emu_report(...) mt_emu_report(NULL, __VA_ARGS__)

/* ------------------------------------------------------------ call census */

/* MT_EMU_STATS=1 prints the census to stderr at exit; MT_EMU_STATS=PATH
 * appends it to the file PATH instead, one line per name:
 *   <calls> <threads> <largest block> <name>
 * (threads and block 0 for library calls and copies), which
 * launch_resources.py checks against the kernels' register use. */
struct Stat {
    unsigned long long calls, threads;
    unsigned max_block;
};
static pthread_mutex_t g_stat_lock = PTHREAD_MUTEX_INITIALIZER;
static std::map<std::string, Stat> *g_stats;

static void print_stats(void) {
    const char *dest = getenv("MT_EMU_STATS");
    if (dest && strcmp(dest, "1") != 0) {
        FILE *f = fopen(dest, "a");
        if (!f) {
            fprintf(stderr, "cuda emulator: cannot append the call census to %s\n", dest);
            return;
        }
        for (auto &e : *g_stats)
            fprintf(f, "%llu %llu %u %s\n", e.second.calls, e.second.threads, e.second.max_block, e.first.c_str());
        fclose(f);
        return;
    }
    std::vector<std::pair<std::string, Stat>> v(g_stats->begin(), g_stats->end());
    std::sort(v.begin(), v.end(), [](const auto &a, const auto &b) { return a.second.calls > b.second.calls; });
    unsigned long long kernels = 0, other = 0;
    for (auto &e : v) (e.second.threads ? kernels : other) += e.second.calls;
    fprintf(stderr, "cuda emulator: %llu kernel launches, %llu library calls and copies\n", kernels, other);
    for (auto &e : v)
        fprintf(stderr, "  %10llu  %-48s %14llu threads (blocks of up to %u)\n", e.second.calls, e.first.c_str(),
                e.second.threads, e.second.max_block);
}

static void record(const char *name, unsigned long long threads, unsigned block) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("MT_EMU_STATS");
        on = e && *e && strcmp(e, "0") != 0;
    }
    if (!on) return;
    pthread_mutex_lock(&g_stat_lock);
    if (!g_stats) {
        g_stats = new std::map<std::string, Stat>();
        atexit(print_stats);
    }
    Stat &st = (*g_stats)[name];
    st.calls++;
    st.threads += threads;
    if (block > st.max_block) st.max_block = block;
    pthread_mutex_unlock(&g_stat_lock);
}

extern "C" void mt_emu_stat(const char *name, unsigned long long threads) { record(name, threads, 0); }

extern "C" const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorAssert: return "cudaErrorAssert";
    }
    return "cudaErrorUnknown";
}
extern "C" const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorAssert: return "device-side assert triggered";
    }
    return "unknown error";
}
extern "C" cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_last;
    t_last = g_sticky;
    return e;
}
extern "C" cudaError_t cudaPeekAtLastError(void) { return t_last; }

/* ------------------------------------------------------------ devices */

static int env_int(const char *name, int dflt) {
    const char *s = getenv(name);
    return s && *s ? atoi(s) : dflt;
}
static int device_count(void) { return env_int("MT_EMU_DEVICES", 1); }
static thread_local int t_device = 0;
static const int EMU_SMS = 3; /* few, so grid-stride loops and per-SM splits wrap */

extern "C" cudaError_t cudaGetDeviceCount(int *n) {
    *n = device_count();
    return *n > 0 ? cudaSuccess : ret(cudaErrorNoDevice);
}
extern "C" cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= device_count()) return ret(cudaErrorInvalidDevice);
    t_device = d;
    return cudaSuccess;
}
extern "C" cudaError_t cudaGetDevice(int *d) {
    if (device_count() <= 0) return ret(cudaErrorNoDevice);
    *d = t_device;
    return cudaSuccess;
}
extern "C" cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    if (d < 0 || d >= device_count()) return ret(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "medtrain CUDA emulator (CPU)");
    p->totalGlobalMem = (size_t)env_int("MT_EMU_MEM_MIB", 8192) << 20;
    p->sharedMemPerBlock = 48 << 10;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->major = 9, p->minor = 0;
    p->multiProcessorCount = EMU_SMS;
    return cudaSuccess;
}
extern "C" cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    if (d < 0 || d >= device_count()) return ret(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 << 10; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *v = EMU_SMS; return cudaSuccess;
    }
    return ret(cudaErrorInvalidValue);
}
extern "C" cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return cudaSuccess;
}
static void flush_all(void);
extern "C" cudaError_t cudaDeviceSynchronize(void) {
    flush_all();
    STICKY_CHECK();
    return cudaSuccess;
}

/* ------------------------------------------------------------ memory */

static pthread_mutex_t g_mem_lock = PTHREAD_MUTEX_INITIALIZER;
static std::map<uintptr_t, size_t> g_dev;    /* device allocations: base -> bytes */
static std::map<uintptr_t, size_t> g_pinned; /* page-locked host allocations */
static size_t g_dev_bytes = 0;

static size_t capacity(void) { return (size_t)env_int("MT_EMU_MEM_MIB", 8192) << 20; }

/* The allocation of map m holding [p, p + n), or NULL. */
static int in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return 0;
    --it;
    return a >= it->first && a + n <= it->first + it->second;
}

extern "C" int mt_emu_is_device_ptr(const void *p, size_t nbytes) {
    pthread_mutex_lock(&g_mem_lock);
    int r = in_map(g_dev, p, nbytes);
    pthread_mutex_unlock(&g_mem_lock);
    return r;
}
static int is_pinned(const void *p, size_t n) {
    pthread_mutex_lock(&g_mem_lock);
    int r = in_map(g_pinned, p, n);
    pthread_mutex_unlock(&g_mem_lock);
    return r;
}

/* Each allocation is 256-byte aligned, as cudaMalloc's are, and ends as close
 * to a PROT_NONE page as that allows: a kernel running past the end of a
 * buffer faults at the page (the launch's SIGSEGV handler names the kernel
 * and thread), and the up to 255 bytes between the end and the page are a
 * canary of 0xff bytes (NaN to a read) checked after every launch, so a
 * write past the end is reported even when it does not reach the page. */
static const size_t PAGE = 4096;
struct Region {
    void *map;
    size_t len;
};
static std::map<uintptr_t, Region> g_regions; /* allocation base -> its mapping */

static size_t canary_len(uintptr_t base, size_t n, const Region &r) {
    return (size_t)((uintptr_t)r.map + r.len - PAGE - (base + n));
}

extern "C" cudaError_t cudaMalloc(void **p, size_t n) {
    STICKY_CHECK();
    if (!p) return ret(cudaErrorInvalidValue);
    *p = NULL;
    if (n == 0) return cudaSuccess;
    pthread_mutex_lock(&g_mem_lock);
    if (g_dev_bytes + n > capacity()) {
        pthread_mutex_unlock(&g_mem_lock);
        return ret(cudaErrorMemoryAllocation);
    }
    size_t pages = (n + 255 + PAGE - 1) / PAGE, len = (pages + 1) * PAGE;
    char *m = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        pthread_mutex_unlock(&g_mem_lock);
        return ret(cudaErrorMemoryAllocation);
    }
    mprotect(m + pages * PAGE, PAGE, PROT_NONE);
    char *q = (char *)((uintptr_t)(m + pages * PAGE - n) & ~(uintptr_t)255);
    memset(q, 0xff, (size_t)(m + pages * PAGE - q)); /* data and canary */
    g_dev[(uintptr_t)q] = n;
    g_regions[(uintptr_t)q] = Region{m, len};
    g_dev_bytes += n;
    pthread_mutex_unlock(&g_mem_lock);
    *p = q;
    return cudaSuccess;
}

/* After a launch: every allocation's canary intact, else the kernel wrote
 * past the end of that buffer. Returns 0 and reports when one is not. */
static int canaries_ok(const char *kernel) {
    int ok = 1;
    pthread_mutex_lock(&g_mem_lock);
    for (auto &kv : g_dev) {
        const Region &r = g_regions[kv.first];
        const unsigned char *c = (const unsigned char *)(kv.first + kv.second);
        size_t len = canary_len(kv.first, kv.second, r);
        for (size_t i = 0; i < len; i++)
            if (c[i] != 0xff) {
                emu_report("kernel '%s' wrote past the end of a %zu-byte device allocation at %p "
                           "(byte %zu after its end changed)",
                           kernel, kv.second, (void *)kv.first, i);
                ok = 0;
                break;
            }
    }
    pthread_mutex_unlock(&g_mem_lock);
    return ok;
}
extern "C" cudaError_t cudaFree(void *p) {
    STICKY_CHECK();
    flush_all(); /* cudaFree waits for the device's work */
    if (!p) return cudaSuccess;
    pthread_mutex_lock(&g_mem_lock);
    auto it = g_dev.find((uintptr_t)p);
    if (it == g_dev.end()) {
        pthread_mutex_unlock(&g_mem_lock);
        emu_report("cudaFree of %p, which is not the start of a device allocation", p);
        return ret(cudaErrorInvalidValue);
    }
    g_dev_bytes -= it->second;
    g_dev.erase(it);
    auto r = g_regions.find((uintptr_t)p);
    Region reg = r->second;
    g_regions.erase(r);
    pthread_mutex_unlock(&g_mem_lock);
    munmap(reg.map, reg.len);
    return cudaSuccess;
}
extern "C" cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    STICKY_CHECK();
    *p = NULL;
    if (n == 0) return cudaSuccess;
    void *q = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
    if (!q) return ret(cudaErrorMemoryAllocation);
    memset(q, 0xff, n);
    pthread_mutex_lock(&g_mem_lock);
    g_pinned[(uintptr_t)q] = n;
    pthread_mutex_unlock(&g_mem_lock);
    *p = q;
    return cudaSuccess;
}
extern "C" cudaError_t cudaMallocHost(void **p, size_t n) { return cudaHostAlloc(p, n, 0); }
extern "C" cudaError_t cudaFreeHost(void *p) {
    STICKY_CHECK();
    flush_all();
    if (!p) return cudaSuccess;
    pthread_mutex_lock(&g_mem_lock);
    auto it = g_pinned.find((uintptr_t)p);
    int ok = it != g_pinned.end();
    if (ok) g_pinned.erase(it);
    pthread_mutex_unlock(&g_mem_lock);
    if (!ok) {
        emu_report("cudaFreeHost of %p, which cudaHostAlloc did not return", p);
        return ret(cudaErrorInvalidValue);
    }
    free(p);
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    STICKY_CHECK();
    pthread_mutex_lock(&g_mem_lock);
    size_t cap = capacity();
    *free_bytes = cap > g_dev_bytes ? cap - g_dev_bytes : 0;
    *total_bytes = cap;
    pthread_mutex_unlock(&g_mem_lock);
    return cudaSuccess;
}

/* ------------------------------------------------------------ streams, events */

/* Streams. The emulator is adversarial about asynchrony, as a busy GPU can
 * be (MT_EMU_ASYNC=0 instead runs every operation when it is issued, which
 * reports a kernel's fault at its launch): kernels, memsets, device-to-device copies and copies from or to
 * page-locked host memory are queued on their stream and run as late as the
 * program's own synchronisation allows: at cudaStreamSynchronize /
 * cudaEventSynchronize / cudaDeviceSynchronize, a synchronous copy (the
 * legacy stream, which waits for blocking streams only), cudaFree, a library
 * call on the stream, or when another stream that waits on one of its events
 * needs it. cudaEventQuery answers cudaErrorNotReady once for pending work
 * (and runs it), so polling loops see both answers. A host buffer reused
 * before the copy that reads it has run, a stream that forgets to wait for
 * another's event, or a result read without synchronising then computes
 * something else, and the tests comparing with the CPU fail. Pageable host
 * copies stay synchronous with the host, as in CUDA. */
struct CUstream_st {
    unsigned flags;
    std::deque<std::function<void()>> q;
    unsigned long long enq = 0, done = 0; /* operations issued / run */
};
struct CUevent_st {
    unsigned flags;
    int recorded;
    CUstream_st *s = NULL; /* where it was last recorded */
    unsigned long long pos = 0; /* s->enq at the record */
    int answered_not_ready = 0;
};
static std::set<void *> g_streams, g_events;
static CUstream_st g_legacy{cudaStreamDefault}; /* stream 0 */
static std::recursive_mutex g_q_lock;

static int async_mode(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("MT_EMU_ASYNC");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}
static CUstream_st *S(cudaStream_t s) { return s ? s : &g_legacy; }

/* Runs stream s's operations until `upto` of them have run. */
static void flush_to(CUstream_st *s, unsigned long long upto) {
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    while (s->done < upto && !s->q.empty()) {
        std::function<void()> op = std::move(s->q.front());
        s->q.pop_front();
        op();
        s->done++;
    }
}
static void flush(CUstream_st *s) { flush_to(s, s->enq); }
static void flush_all(void) {
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    flush(&g_legacy);
    for (void *p : g_streams) flush((CUstream_st *)p);
}
/* The legacy stream (synchronous copies) waits for itself and for every
 * blocking stream, not for cudaStreamNonBlocking ones. */
static void flush_legacy(void) {
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    flush(&g_legacy);
    for (void *p : g_streams)
        if (!(((CUstream_st *)p)->flags & cudaStreamNonBlocking)) flush((CUstream_st *)p);
}

static void enqueue(cudaStream_t st, std::function<void()> op) {
    if (!async_mode()) {
        op();
        return;
    }
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    CUstream_st *s = S(st);
    s->q.push_back(std::move(op));
    s->enq++;
}

extern "C" void mt_emu_stream_flush(cudaStream_t s) { flush(S(s)); }

static int stream_ok(cudaStream_t s) {
    if (!s) return 1; /* the legacy default stream */
    pthread_mutex_lock(&g_mem_lock);
    int r = g_streams.count(s) != 0;
    pthread_mutex_unlock(&g_mem_lock);
    return r;
}
static int event_ok(cudaEvent_t e) {
    pthread_mutex_lock(&g_mem_lock);
    int r = e && g_events.count(e) != 0;
    pthread_mutex_unlock(&g_mem_lock);
    return r;
}

extern "C" cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    STICKY_CHECK();
    *s = new CUstream_st{flags};
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    pthread_mutex_lock(&g_mem_lock);
    g_streams.insert(*s);
    pthread_mutex_unlock(&g_mem_lock);
    return cudaSuccess;
}
extern "C" cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
extern "C" cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority) {
    if (priority > 0 || priority < -5) return ret(cudaErrorInvalidValue);
    return cudaStreamCreateWithFlags(s, flags);
}
extern "C" cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || !stream_ok(s)) return ret(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    flush(s); /* CUDA finishes a destroyed stream's work */
    pthread_mutex_lock(&g_mem_lock);
    g_streams.erase(s);
    pthread_mutex_unlock(&g_mem_lock);
    delete s;
    return cudaSuccess;
}
extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (!stream_ok(s)) return ret(cudaErrorInvalidResourceHandle);
    if (s) flush(s);
    else flush_legacy();
    STICKY_CHECK();
    return cudaSuccess;
}
extern "C" cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    (void)flags;
    if (!stream_ok(s) || !event_ok(e)) return ret(cudaErrorInvalidResourceHandle);
    STICKY_CHECK();
    if (e->s) {
        CUstream_st *src = e->s;
        unsigned long long pos = e->pos;
        enqueue(s, [src, pos] { flush_to(src, pos); });
    }
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    STICKY_CHECK();
    *e = new CUevent_st{flags, 0};
    pthread_mutex_lock(&g_mem_lock);
    g_events.insert(*e);
    pthread_mutex_unlock(&g_mem_lock);
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
extern "C" cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!event_ok(e)) return ret(cudaErrorInvalidResourceHandle);
    pthread_mutex_lock(&g_mem_lock);
    g_events.erase(e);
    pthread_mutex_unlock(&g_mem_lock);
    delete e;
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!event_ok(e) || !stream_ok(s)) return ret(cudaErrorInvalidResourceHandle);
    STICKY_CHECK();
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    e->recorded = 1;
    e->s = S(s);
    e->pos = e->s->enq;
    e->answered_not_ready = 0;
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!event_ok(e)) return ret(cudaErrorInvalidResourceHandle);
    STICKY_CHECK();
    std::lock_guard<std::recursive_mutex> g(g_q_lock);
    if (e->s && e->s->done < e->pos) {
        if (!e->answered_not_ready) {
            e->answered_not_ready = 1;
            return cudaErrorNotReady; /* not an error: cudaGetLastError stays clean */
        }
        flush_to(e->s, e->pos);
    }
    STICKY_CHECK();
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!event_ok(e)) return ret(cudaErrorInvalidResourceHandle);
    if (e->s) flush_to(e->s, e->pos);
    STICKY_CHECK();
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!event_ok(a) || !event_ok(b)) return ret(cudaErrorInvalidResourceHandle);
    if ((a->flags | b->flags) & cudaEventDisableTiming) return ret(cudaErrorInvalidResourceHandle);
    *ms = 0.0f;
    return cudaSuccess;
}

/* ------------------------------------------------------------ copies */

static cudaError_t check_range(const char *call, const char *what, const void *p, size_t n,
                               int device) {
    int ok = device ? mt_emu_is_device_ptr(p, n) : !mt_emu_is_device_ptr(p, 1);
    if (!ok) {
        emu_report("%s: %s %p (+%zu bytes) is %s", call, what, p, n,
                   device ? "not inside a device allocation" : "device memory, not host memory");
        return ret(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

/* sync: the synchronous cudaMemcpy / cudaMemset (legacy stream semantics). */
static cudaError_t copy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s, int sync) {
    STICKY_CHECK();
    if (!stream_ok(s)) return ret(cudaErrorInvalidResourceHandle);
    if (n == 0) return cudaSuccess;
    int dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    int sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (k == cudaMemcpyDefault) {
        dd = mt_emu_is_device_ptr(dst, n);
        sd = mt_emu_is_device_ptr(src, n);
    }
    if (check_range("cudaMemcpy", "destination", dst, n, dd) != cudaSuccess ||
        check_range("cudaMemcpy", "source", src, n, sd) != cudaSuccess)
        return t_last;
    mt_emu_stat(dd && sd ? "cudaMemcpy device->device" : dd ? "cudaMemcpy host->device" : "cudaMemcpy device->host",
                0);
    /* a pageable host buffer is read or written before the call returns (CUDA
     * stages it); device and page-locked memory are touched when the copy runs */
    const void *host = dd && !sd ? src : !dd ? dst : NULL;
    if (sync || (host && !is_pinned(host, n))) {
        if (sync) flush_legacy();
        else flush(S(s));
        STICKY_CHECK();
        memmove(dst, src, n);
        return cudaSuccess;
    }
    enqueue(s, [dst, src, n] { memmove(dst, src, n); });
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
                                       cudaStream_t s) {
    return copy(dst, src, n, k, s, 0);
}
extern "C" cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    return copy(dst, src, n, k, 0, 1);
}
extern "C" cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    STICKY_CHECK();
    if (!stream_ok(s)) return ret(cudaErrorInvalidResourceHandle);
    if (n == 0) return cudaSuccess;
    if (check_range("cudaMemset", "destination", p, n, 1) != cudaSuccess) return t_last;
    mt_emu_stat("cudaMemset", 0);
    enqueue(s, [p, v, n] { memset(p, v, n); });
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemset(void *p, int v, size_t n) {
    cudaError_t e = cudaMemsetAsync(p, v, n, 0);
    flush_legacy();
    return e;
}

/* ------------------------------------------------------------ kernels */

enum { F_RUN, F_BARRIER, F_SHFL, F_DONE };

/* Fiber switches. Launches run one fiber per CUDA thread, hundreds of
 * thousands per elementwise launch, so on x86-64 a switch is a few
 * instructions (callee-saved registers and the stack pointer; ucontext's
 * swapcontext makes a system call each time); elsewhere ucontext. */
#if defined(__x86_64__)
extern "C" void mt_emu_switch(void **save_sp, void *new_sp);
asm(R"(
    .text
    .globl mt_emu_switch
    .type mt_emu_switch, @function
mt_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mt_emu_switch, .-mt_emu_switch
)");
struct Ctx {
    void *sp;
};
static void ctx_make(Ctx *c, char *stack, size_t size, void (*entry)(void)) {
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;            /* the entry's return address: it never returns */
    *--sp = (void *)entry;   /* popped by mt_emu_switch's ret */
    for (int i = 0; i < 6; i++) *--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
    c->sp = sp;
}
static void ctx_switch(Ctx *from, Ctx *to) { mt_emu_switch(&from->sp, to->sp); }
#else
struct Ctx {
    ucontext_t uc;
};
static void ctx_make(Ctx *c, char *stack, size_t size, void (*entry)(void)) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
static void ctx_switch(Ctx *from, Ctx *to) { swapcontext(&from->uc, &to->uc); }
#endif

struct Fiber {
    Ctx ctx;
    int state;
    const char *file; /* sync site */
    int line;
    unsigned mask;
    int mode, arg, width;
    uint64_t val, res;
};

struct Launch {
    const char *name;
    void (*fn)(void *);
    void *ctx;
    Ctx sched;
    std::vector<Fiber> f;
    int cur;
    int failed;
};

static const size_t STACK = 64 << 10, GUARD = 4096;
static std::vector<char *> g_stacks; /* reused across launches (launches hold g_launch_lock) */
static pthread_mutex_t g_launch_lock = PTHREAD_MUTEX_INITIALIZER;
static Launch *g_L;

static char *stack_of(size_t i) {
    while (g_stacks.size() <= i) {
        char *m = (char *)mmap(NULL, STACK + GUARD, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            emu_report("cannot map a fiber stack");
            abort();
        }
        mprotect(m, GUARD, PROT_NONE); /* stacks grow down: overflow faults */
        g_stacks.push_back(m);
    }
    return g_stacks[i] + GUARD;
}

static void yield_to_sched(void) {
    Launch *L = g_L;
    ctx_switch(&L->f[L->cur].ctx, &L->sched);
}

static void fiber_entry(void) {
    Launch *L = g_L;
    L->fn(L->ctx);
    L->f[L->cur].state = F_DONE;
    yield_to_sched(); /* never resumed */
    abort();
}

static void fail(Launch *L, const char *fmt, ...) {
    if (L->failed) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emu_report("kernel '%s' block (%u,%u,%u): %s", L->name, blockIdx.x, blockIdx.y, blockIdx.z, msg);
    L->failed = 1;
    g_sticky = cudaErrorLaunchFailure;
    t_last = cudaErrorLaunchFailure;
}

static void set_tid(int t) {
    threadIdx.x = (unsigned)t % blockDim.x;
    threadIdx.y = ((unsigned)t / blockDim.x) % blockDim.y;
    threadIdx.z = (unsigned)t / (blockDim.x * blockDim.y);
}

extern "C" void mt_emu_syncthreads(const char *file, int line) {
    Launch *L = g_L;
    Fiber &f = L->f[L->cur];
    f.state = F_BARRIER, f.file = file, f.line = line;
    yield_to_sched();
}

extern "C" uint64_t mt_emu_shfl(unsigned mask, uint64_t bits, int mode, int arg, int width,
                                const char *file, int line) {
    Launch *L = g_L;
    Fiber &f = L->f[L->cur];
    f.state = F_SHFL, f.file = file, f.line = line;
    f.mask = mask, f.mode = mode, f.arg = arg, f.width = width, f.val = bits;
    yield_to_sched();
    return L->f[L->cur].res;
}

extern "C" void mt_emu_trap(const char *file, int line) {
    Launch *L = g_L;
    int t = L->cur;
    fail(L, "thread (%u,%u,%u) executed __trap() at %s:%d", threadIdx.x, threadIdx.y, threadIdx.z,
         file, line);
    (void)t;
    yield_to_sched(); /* never resumed */
}

/* Releases the shuffle of warp w if every lane its mask names has reached it.
 * Returns 1 when released, 0 when still waiting, -1 on a fault. */
static int resolve_warp(Launch *L, int w, int n) {
    int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
    int first = -1;
    for (int t = lo; t < hi; t++)
        if (L->f[t].state == F_SHFL) {
            first = t;
            break;
        }
    if (first < 0) return 0;
    const Fiber &a = L->f[first];
    for (int b = 0; b < 32; b++) {
        if (!(a.mask >> b & 1u)) continue;
        int t = lo + b;
        if (t >= n) {
            fail(L, "shuffle at %s:%d names lane %d with mask 0x%08x, but the block has only %d "
                 "threads (blockDim not a multiple of 32?)", a.file, a.line, b, a.mask, n);
            return -1;
        }
        const Fiber &o = L->f[t];
        if (o.state == F_DONE) {
            fail(L, "shuffle at %s:%d (mask 0x%08x) waits for lane %d (thread %d), which has "
                 "exited", a.file, a.line, a.mask, b, t);
            return -1;
        }
        if (o.state != F_SHFL) return 0;
        if (o.file != a.file || o.line != a.line || o.mask != a.mask) {
            fail(L, "divergent shuffles in warp %d: %s:%d mask 0x%08x and %s:%d mask 0x%08x", w,
                 a.file, a.line, a.mask, o.file, o.line, o.mask);
            return -1;
        }
    }
    for (int b = 0; b < 32; b++) {
        if (!(a.mask >> b & 1u)) continue;
        Fiber &me = L->f[lo + b];
        int wd = me.width, seg = b & ~(wd - 1), src = b;
        switch (me.mode) {
        case 0: src = seg + (me.arg & (wd - 1)); break;
        case 1: src = b - me.arg >= seg ? b - me.arg : b; break;
        case 2: src = b + me.arg < seg + wd ? b + me.arg : b; break;
        case 3: src = (b ^ me.arg) < seg + wd && (b ^ me.arg) >= seg ? b ^ me.arg : b; break;
        }
        if (!(a.mask >> src & 1u)) {
            fail(L, "shuffle at %s:%d reads lane %d, outside mask 0x%08x", a.file, a.line, src,
                 a.mask);
            return -1;
        }
        me.res = L->f[lo + src].val;
    }
    for (int b = 0; b < 32; b++)
        if (a.mask >> b & 1u) L->f[lo + b].state = F_RUN;
    return 1;
}

/* MT_EMU_SCHEDULE=reverse runs blocks and threads last to first: a kernel
 * whose result depends on the order blocks or threads run in (which a GPU
 * does not fix) then gives another result. */
static int g_reverse = -1;

static void run_block(Launch *L, int n) {
    for (int t = 0; t < n; t++) {
        Fiber &f = L->f[t];
        ctx_make(&f.ctx, stack_of((size_t)t), STACK, fiber_entry);
        f.state = F_RUN;
    }
    for (;;) {
        for (int k = 0; k < n && !L->failed; k++) {
            int t = g_reverse ? n - 1 - k : k;
            if (L->f[t].state != F_RUN) continue;
            L->cur = t;
            set_tid(t);
            ctx_switch(&L->sched, &L->f[t].ctx);
        }
        if (L->failed) return;
        int released = 0, live = 0, at_bar = 0;
        for (int w = 0; w * 32 < n; w++) {
            int r = resolve_warp(L, w, n);
            if (r < 0) return;
            released += r;
        }
        if (released) continue;
        const Fiber *bar = NULL;
        for (int t = 0; t < n; t++) {
            const Fiber &f = L->f[t];
            if (f.state == F_DONE) continue;
            live++;
            if (f.state == F_BARRIER) {
                at_bar++;
                if (!bar) bar = &f;
                else if (f.file != bar->file || f.line != bar->line) {
                    fail(L, "divergent __syncthreads: thread %d at %s:%d, another at %s:%d", t,
                         f.file, f.line, bar->file, bar->line);
                    return;
                }
            }
        }
        if (live == 0) return;
        if (at_bar == live) {
            for (int t = 0; t < n; t++)
                if (L->f[t].state == F_BARRIER) L->f[t].state = F_RUN;
            continue;
        }
        for (int t = 0; t < n; t++)
            if (L->f[t].state == F_SHFL) {
                fail(L, "deadlock: thread %d waits in a shuffle at %s:%d while other lanes of its "
                     "warp wait at __syncthreads", t, L->f[t].file, L->f[t].line);
                return;
            }
        fail(L, "deadlock (no thread can proceed)");
        return;
    }
}

extern "C" int mt_emu_launch_begin(const char *name, const char *file, int line,
                                   const struct mt_emu_cfg *c) {
    if (g_sticky != cudaSuccess) {
        t_last = g_sticky;
        return 0;
    }
    const char *why = NULL;
    unsigned long long threads = (unsigned long long)c->block.x * c->block.y * c->block.z;
    if (!c->grid.x || !c->grid.y || !c->grid.z || !c->block.x || !c->block.y || !c->block.z)
        why = "a zero grid or block dimension";
    else if (threads > 1024)
        why = "more than 1024 threads per block";
    else if (c->block.z > 64)
        why = "blockDim.z above 64";
    else if (c->grid.x > 2147483647u || c->grid.y > 65535 || c->grid.z > 65535)
        why = "a grid dimension above the limit (x 2^31-1, y and z 65535)";
    else if (c->smem > (48u << 10))
        why = "more than 48 KiB of dynamic shared memory";
    if (why) {
        emu_report("launch of '%s' at %s:%d: grid (%u,%u,%u) block (%u,%u,%u) smem %zu: %s", name,
                   file, line, c->grid.x, c->grid.y, c->grid.z, c->block.x, c->block.y, c->block.z,
                   c->smem, why);
        t_last = cudaErrorInvalidConfiguration;
        return 0;
    }
    if (c->smem) {
        emu_report("launch of '%s' at %s:%d: dynamic shared memory is not emulated", name, file,
                   line);
        t_last = cudaErrorInvalidConfiguration;
        return 0;
    }
    if (!stream_ok(c->stream)) {
        emu_report("launch of '%s' at %s:%d: invalid stream", name, file, line);
        t_last = cudaErrorInvalidResourceHandle;
        return 0;
    }
    return 1;
}

extern "C" void mt_emu_check_ptr_arg(const char *name, int index, const void *p) {
    if (!p || g_sticky != cudaSuccess) return;
    if (mt_emu_is_device_ptr(p, 0)) return;
    /* one past the end of an allocation (an empty range) is fine */
    if (mt_emu_is_device_ptr((const char *)p - 1, 1)) return;
    emu_report("launch of '%s': pointer argument %d (%p) is %s", name, index, p,
               is_pinned(p, 1) ? "page-locked host memory, not device memory"
                               : "not device memory");
    g_sticky = cudaErrorIllegalAddress;
    t_last = cudaErrorIllegalAddress;
}

/* A fault inside a kernel (past the end of an allocation, a misaligned
 * vector access, a fiber stack overflow): name the kernel, block and thread,
 * and the allocation nearest the address, then exit as a crash would. */
static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    Launch *L = g_L;
    if (!L) { /* not in a kernel: crash as usual */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    char buf[512];
    uintptr_t a = (uintptr_t)si->si_addr;
    const char *near = "outside every device allocation";
    char nb[160];
    auto it = g_dev.upper_bound(a);
    if (it != g_dev.begin()) {
        --it;
        snprintf(nb, sizeof nb, "%zu bytes past the end of a %zu-byte device allocation at %p",
                 (size_t)(a - (it->first + it->second)), it->second, (void *)it->first);
        if (a >= it->first + it->second && a - (it->first + it->second) < PAGE) near = nb;
    }
    int len = snprintf(buf, sizeof buf,
                       "cuda emulator: %s in kernel '%s' block (%u,%u,%u) thread (%u,%u,%u) at "
                       "address %p (%s)\n",
                       sig == SIGBUS ? "bus error" : "memory fault", L->name, blockIdx.x,
                       blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, si->si_addr,
                       near);
    if (write(2, buf, (size_t)len) < 0) _exit(139);
    _exit(139);
}

static void install_fault_handler(void) {
    static thread_local char *altstack = NULL; /* per thread: a fiber's overflow needs it */
    if (!altstack) {
        altstack = (char *)malloc(64 << 10);
        stack_t ss;
        ss.ss_sp = altstack, ss.ss_size = 64 << 10, ss.ss_flags = 0;
        sigaltstack(&ss, NULL);
    }
    static int done = 0;
    if (done) return;
    done = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

static void execute_kernel(const char *name, const struct mt_emu_cfg *c, void (*fn)(void *), void *ctx) {
    if (g_sticky != cudaSuccess) return;
    pthread_mutex_lock(&g_launch_lock);
    install_fault_handler();
    Launch L;
    L.name = name, L.fn = fn, L.ctx = ctx, L.cur = 0, L.failed = 0;
    int n = (int)(c->block.x * c->block.y * c->block.z);
    L.f.resize((size_t)n);
    g_L = &L;
    blockDim = c->block;
    gridDim = c->grid;
    if (g_reverse < 0) {
        const char *e = getenv("MT_EMU_SCHEDULE");
        g_reverse = e && strcmp(e, "reverse") == 0;
    }
    for (unsigned z = 0; z < c->grid.z && !L.failed; z++)
        for (unsigned y = 0; y < c->grid.y && !L.failed; y++)
            for (unsigned x = 0; x < c->grid.x && !L.failed; x++) {
                blockIdx.x = g_reverse ? c->grid.x - 1 - x : x;
                blockIdx.y = g_reverse ? c->grid.y - 1 - y : y;
                blockIdx.z = g_reverse ? c->grid.z - 1 - z : z;
                run_block(&L, n);
            }
    g_L = NULL;
    if (!L.failed && !canaries_ok(name)) {
        g_sticky = cudaErrorIllegalAddress;
        t_last = cudaErrorIllegalAddress;
    }
    pthread_mutex_unlock(&g_launch_lock);
}

extern "C" void mt_emu_launch_run(const char *name, const struct mt_emu_cfg *c, void (*fn)(void *),
                                  void *ctx, void (*drop)(void *)) {
    unsigned block = c->block.x * c->block.y * c->block.z;
    record(name, (unsigned long long)c->grid.x * c->grid.y * c->grid.z * block, block);
    mt_emu_cfg cfg = *c;
    enqueue(c->stream, [name, cfg, fn, ctx, drop] {
        execute_kernel(name, &cfg, fn, ctx);
        drop(ctx);
    });
}
