// The CPU's fp32 peak as the issue means it: every thread issuing independent AVX-512 fused
// multiply-adds (12 chains of 16 lanes, enough to cover the latency of two FMA units), no
// memory traffic. Built and run by scripts/fp32-peak.sh.
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERATIONS 400000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#define CHAIN(i) __m512 a##i = _mm512_set1_ps((float)i);
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, b, c);

static void *run(void *result) {
  __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-9f);
  CHAIN(0) CHAIN(1) CHAIN(2) CHAIN(3) CHAIN(4) CHAIN(5)
  CHAIN(6) CHAIN(7) CHAIN(8) CHAIN(9) CHAIN(10) CHAIN(11)
  for (long n = 0; n < ITERATIONS; n++) {
    STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
    STEP(6) STEP(7) STEP(8) STEP(9) STEP(10) STEP(11)
    // Keeps the chains in registers and the loop from being folded away.
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),
                     "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
  }
  __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  *(float *)result = _mm512_reduce_add_ps(sum);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 256) {
    fprintf(stderr, "fp32_peak: threads must be 1-256\n");
    return 2;
  }
  pthread_t workers[256];
  float results[256];
  double start = now();
  for (int i = 0; i < threads; i++) pthread_create(&workers[i], NULL, run, &results[i]);
  for (int i = 0; i < threads; i++) pthread_join(workers[i], NULL);
  double seconds = now() - start;
  double flops = (double)threads * ITERATIONS * 12 * 16 * 2;
  printf("fp32 peak: %.1f GFLOP/s on %d threads (AVX-512 FMA, %.2f s)\n", flops / seconds / 1e9,
         threads, seconds);
  return 0;
}
