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
 * Property: st_parse either fails with a message or returns tensors whose byte
 * ranges lie inside the image and match dtype x shape; it never crashes, leaks or
 * reads outside the buffer (ASan/UBSan). Seeds: fuzz/seeds/st/.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a private copy so ASan flags any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
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
