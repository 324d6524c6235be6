/* A test-only "CUDA" backend that runs on the host (tests/loopback_backend.c).
 *
 * mt_loopback_register() installs it as the MT_CUDA table of the test
 * process (replacing the real CUDA table, if one is built in). Every kernel
 * slot first checks that each tensor argument lives on a MT_CUDA device
 * (aborting with the slot and argument named otherwise) and then runs the
 * CPU backend's kernel on CPU-tagged shallow copies of the headers, so the
 * numbers are exactly the CPU backend's. Memory: one anonymous mapping per
 * allocation, kept PROT_NONE except while a loopback slot (or its
 * memcpy_host) uses it: host code that reads or writes "device" memory
 * directly (mt_tensor_data on a CUDA tensor) faults at once. So a run on
 * the loopback device catches every place that mixes host and device
 * tensors, on a machine without a GPU.
 *
 * device_count 1 (cuda:0), memcpy_host = memcpy, memory_stats counts the
 * loopback's own allocations (in use, peak).
 */
#ifndef MT_LOOPBACK_BACKEND_H
#define MT_LOOPBACK_BACKEND_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The loopback table. */
extern const mt_backend mt_loopback_backend;

/* Registers the loopback table as MT_CUDA; returns the table it replaced
 * (NULL when this medtrain has no CUDA backend). */
const mt_backend *mt_loopback_register(void);
/* Puts the replaced table back. */
void mt_loopback_unregister(const mt_backend *previous);
/* Number of loopback kernel calls so far (slots other than memory ones). */
long mt_loopback_kernel_calls(void);
/* Host blocks handed out through host_alloc_pinned (mt_tensor_new_pinned). */
long mt_loopback_pinned_allocs(void);
/* Copies through memcpy_pinned_to_device (pinned host -> device). */
long mt_loopback_async_copies(void);

#ifdef __cplusplus
}
#endif
#endif
