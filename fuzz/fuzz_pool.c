/*
 * libFuzzer harness for the page pool over an encoded operation stream.
 *
 * Input: bytes 0..7 pick the pool (layout, E, block size, pages, host pages, slots,
 * hash_bits, kv_only_hits, prefix caching, state checkpoints); the rest is the random source of tests/pool_driver.h, four
 * bytes per draw, which picks operations and their arguments exactly as the property
 * test does (admit with shared-prefix prompts, append with look-ahead, publish, free,
 * swap, bad calls). After every operation pool_check() runs; any violation, any
 * check/commit disagreement or any content mismatch on the shadow device aborts. At the
 * end everything is freed and the pool must equal its initial state.
 *
 *   CC=clang cmake -S . -B build-fuzz -DHYSERVE_FUZZ=ON -DHYSERVE_CUDA=OFF && cmake --build build-fuzz -j2
 *   ./build-fuzz/fuzz/fuzz_pool -max_total_time=30 corpusdir fuzz/seeds/pool
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define DRV_FAIL(msg)                                  \
    do {                                               \
        fprintf(stderr, "fuzz_pool: %s\n", (msg));     \
        abort();                                       \
    } while (0)
#include "../tests/pool_driver.h"

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    int done;
} src_t;

static uint32_t src_next(void *ctx) {
    src_t *s = ctx;
    if (s->pos + 4 > s->size) {
        s->done = 1;
        return 0;
    }
    uint32_t v = (uint32_t)s->data[s->pos] | (uint32_t)s->data[s->pos + 1] << 8 |
                 (uint32_t)s->data[s->pos + 2] << 16 | (uint32_t)s->data[s->pos + 3] << 24;
    s->pos += 4;
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    pool_config_t c;
    pool_config_default(&c);
    c.kind = (layout_kind_t)(data[0] % 3);
    c.state_pages = data[1] % 7;
    c.block_size = 1 << (data[2] % 5);
    c.n_slots = 1 + data[6] % 4;
    int64_t slot_pages = c.kind == LAYOUT_SLOTS ? (int64_t)c.n_slots * c.state_pages : 0;
    c.n_pages = slot_pages + c.state_pages + 1 + data[3] % 96;
    c.n_host_pages = data[4] % 48;
    c.hash_bits = data[5] % 4 == 0 ? 1 + data[5] % 5 : 0;
    c.kv_only_hits = data[7] & 1;
    c.prefix_caching = (data[7] & 6) != 6;
    c.max_seqs = 1 + (data[7] >> 3) % 40;
    c.max_seq_tokens = 1024;
    c.state_checkpoints = (data[6] & 0x10) && c.kind != LAYOUT_SLOTS && c.state_pages > 0 && c.prefix_caching;
    src_t src = {data, size, 8, 0};
    drv_t d;
    if (drv_init(&d, &c, true, src_next, &src, data[1]) != HS_OK) return 0; /* a config the pool refuses */
    for (int k = 0; k < 100000 && !src.done; k++) drv_step(&d);
    drv_finish(&d);
    return 0;
}
