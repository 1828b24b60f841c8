/*
 * bench_membw: this machine's memory read bandwidth, the floor for CPU decode (every
 * weight byte is read once per step). Reads a 1 GiB buffer (8x the last-level
 * caches of any CPU here) with 1 and with all threads, best of 5 passes each.
 *   ./build/bench/bench_membw [MiB]
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

static double pass(const uint64_t *p, size_t n, int threads, uint64_t *sink) {
    double t0 = hs_now();
    uint64_t acc = 0;
#pragma omp parallel for num_threads(threads) reduction(^ : acc) schedule(static)
    for (size_t i = 0; i < n; i += 8) /* 64-byte lines, every word touched */
        acc ^= p[i] + p[i + 1] + p[i + 2] + p[i + 3] + p[i + 4] + p[i + 5] + p[i + 6] + p[i + 7];
    *sink ^= acc;
    return hs_now() - t0;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    size_t n = mib * (1u << 20) / 8;
    uint64_t *p = hs_malloc(n * 8), sink = 0;
    for (size_t i = 0; i < n; i++) p[i] = i * 2654435761u;
    int tmax = omp_get_num_procs();
    for (int th = 1; th <= tmax; th = th == tmax ? tmax + 1 : (th * 2 > tmax ? tmax : th * 2)) {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t = pass(p, n, th, &sink);
            if (t < best) best = t;
        }
        printf("read bandwidth, %d thread%s: %.2f GB/s (%zu MiB in %.1f ms)\n", th, th > 1 ? "s" : "",
               (double)n * 8 / best / 1e9, mib, best * 1e3);
    }
    free(p);
    return (int)(sink & 0); /* keep the reads */
}
