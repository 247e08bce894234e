/*
 * Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
 * mapping from (seed, index) to a standard normal shared by every backend, so a seed gives the
 * same noise on CPU and GPU:
 *   pair p = index / 2; (w0,w1,w2,w3) = philox4x32_10(counter = {p_lo, p_hi, 0, 0},
 *                                                     key = {seed_lo, seed_hi});
 *   u1 = (hi53(w0:w1) + 1) * 2^-53 in (0, 1]; u2 = hi53(w2:w3) * 2^-53 in [0, 1)
 *   (the 53 high bits of the 64-bit words (w0,w1) and (w2,w3));
 *   r = sqrt(-2 ln u1); even index -> r cos(2 pi u2), odd index -> r sin(2 pi u2),
 * computed in double and rounded to float.
 */
#ifndef GPU_CORE_PHILOX_H
#define GPU_CORE_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GC_HD __host__ __device__ __forceinline__
#else
#define GC_HD static inline
#endif

#define GC_PHILOX_M0 0xD2511F53u
#define GC_PHILOX_M1 0xCD9E8D57u
#define GC_PHILOX_W0 0x9E3779B9u
#define GC_PHILOX_W1 0xBB67AE85u

GC_HD void gc_philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
  uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
  uint32_t k0 = key_in[0], k1 = key_in[1];
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)GC_PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)GC_PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += GC_PHILOX_W0;
    k1 += GC_PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Normal number `index` of the stream keyed by `seed`. */
GC_HD double gc_philox_normal(uint64_t seed, uint64_t index) {
  uint64_t pair = index >> 1;
  uint32_t ctr[4] = {(uint32_t)pair, (uint32_t)(pair >> 32), 0u, 0u};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t w[4];
  gc_philox4x32_10(ctr, key, w);
  uint64_t a = (((uint64_t)w[0] << 32) | w[1]) >> 11;
  uint64_t b = (((uint64_t)w[2] << 32) | w[3]) >> 11;
  double u1 = ((double)a + 1.0) * 0x1.0p-53;
  double u2 = (double)b * 0x1.0p-53;
  double r = sqrt(-2.0 * log(u1));
  double theta = 6.283185307179586476925286766559 * u2;
  return (index & 1) ? r * sin(theta) : r * cos(theta);
}

#endif /* GPU_CORE_PHILOX_H */
