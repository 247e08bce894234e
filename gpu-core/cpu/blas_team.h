/* How many OpenMP threads a CPU kernel's parallel region that calls BLAS should have (conv2d.c,
 * linear.c). */
#ifndef GPU_CORE_CPU_BLAS_TEAM_H
#define GPU_CORE_CPU_BLAS_TEAM_H

#include <cblas.h>
#include <omp.h>

/* All of OpenMP's threads when OpenBLAS is single-threaded, else 1 (OpenBLAS parallelises each
 * call itself); 1 inside another parallel region (the fused feed-forward calls the linear layer
 * from its threads), whose nested regions get one thread: work split for a team of 2 would leave
 * the second thread's share undone. */
static inline int blas_team(void) {
  if (omp_in_parallel()) return 1;
  return openblas_get_num_threads() > 1 ? 1 : omp_get_max_threads();
}

#endif
