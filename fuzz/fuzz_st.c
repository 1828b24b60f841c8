/*
 * fuzz_st: libFuzzer harness for the safetensors header parser (st_parse).
 *
 * Input: arbitrary bytes taken as a whole safetensors file image:
 *
 *   | OFFSET | SIZE | WHAT                                   |
 *   |--------|------|----------------------------------------|
 *   | 0      | 8    | header length N, u64 little-endian     |
 *   | 8      | N    | JSON header                            |
 *   | 8 + N  | rest | data section                           |
 *
 * Two modes, chosen by the first byte: even = the rest is a raw file image; odd = the
 * rest is header JSON, wrapped with a correct length and a 256-byte data section, so
 * mutations explore the JSON validation rather than the length check.
 *
 * Property: st_parse either fails with a message or returns tensors whose byte
 * ranges lie inside the image and match dtype x shape; it never crashes, leaks or
 * reads outside the buffer (ASan/UBSan). Seeds: fuzz/seeds/st/.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    bool wrap = data[0] & 1;
    data++, size--;
    /* a private copy so ASan flags any read past the end */
    size_t extra = wrap ? 8 + 256 : 0;
    uint8_t *buf = calloc(1, size + extra);
    if (wrap) {
        for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)size >> (8 * i));
        memcpy(buf + 8, data, size);
        size += extra;
    } else if (size) memcpy(buf, data, size);
    st_file_t f;
    char err[512];
    if (st_parse(buf, size, "fuzz", &f, err, sizeof err) == HS_OK) {
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor_t *t = &f.tensors[i];
            assert(t->data >= buf + 8 + f.header_len && t->data + (t->end - t->begin) <= buf + size);
            assert(t->end - t->begin == (uint64_t)t->n_elem * hs_dtype_size(t->dtype));
            volatile uint8_t x = 0;
            if (t->end > t->begin) x ^= t->data[t->end - t->begin - 1];
            (void)x;
        }
        st_file_close(&f);
    } else {
        assert(memchr(err, 0, sizeof err) != NULL);
    }
    free(buf);
    return 0;
}
