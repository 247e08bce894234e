/* Per-thread scratch for the CPU kernels (scratch.c). */
#ifndef GPU_CORE_CPU_SCRATCH_H
#define GPU_CORE_CPU_SCRATCH_H

#include <stddef.h>

/* This thread's grow-on-demand buffer of at least `bytes` (64-byte aligned), or NULL when out of
 * memory. OpenMP threads persist, so it is reused across calls; one buffer per thread, shared by
 * every kernel, so a call may not keep it past returning, and a kernel that calls another while
 * holding it must call one that does not use it (the fused feed-forward calls the linear layer's
 * forward, which uses the oneDNN buffer below or none). */
void *cpu_scratch(size_t bytes);

/* A second such buffer of the calling thread, for data it shares with its OpenMP team during one
 * call (the Winograd weights): the team's members use cpu_scratch meanwhile, the caller too. A
 * heap block per call would cost an mmap, its page faults and an munmap each time (these run to
 * hundreds of KB, past glibc's mmap threshold). */
void *cpu_scratch_team(size_t bytes);

/* A third, for a oneDNN call's operands in its own layouts and its scratchpad (dnnl_call.c):
 * kernels make such calls while holding cpu_scratch. */
void *cpu_scratch_dnnl(size_t bytes);

#endif
