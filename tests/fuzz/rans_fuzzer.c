/*
 * libFuzzer harness of the bounds-checked rANS decoder (src/lae_vbr/models/rans_core.h), built
 * with -fsanitize=fuzzer,address,undefined by tests/fuzz/run.sh, on the real CDF tables of the
 * bundled model (written by rans_tables.py to the file named by $LAE_FUZZ_TABLES).
 *
 * Input: two bytes (little-endian) give the number of symbols n (at most 4096), then n bytes
 * give their table indexes (signed: out-of-range ones included), then the rANS stream. The
 * decoder must return (a value or an error message) for every input: a crash, a read out of
 * bounds, undefined behaviour or a hang is a finding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lae_vbr/models/rans_core.h"

static int32_t *tables, *sizes, *offsets;
static int32_t n_tables, width;

/* The tables file: int32 n_tables, int32 width, then sizes[n_tables], offsets[n_tables] and
 * cdfs[n_tables * width], little-endian. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("LAE_FUZZ_TABLES");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f || fread(&n_tables, 4, 1, f) != 1 || fread(&width, 4, 1, f) != 1 || n_tables < 1 ||
        width < 2) {
        fprintf(stderr, "set LAE_FUZZ_TABLES to a tables file (tests/fuzz/rans_tables.py)\n");
        exit(2);
    }
    sizes = malloc(4 * (size_t)n_tables);
    offsets = malloc(4 * (size_t)n_tables);
    tables = malloc(4 * (size_t)n_tables * (size_t)width);
    if (fread(sizes, 4, n_tables, f) != (size_t)n_tables ||
        fread(offsets, 4, n_tables, f) != (size_t)n_tables ||
        fread(tables, 4, (size_t)n_tables * width, f) != (size_t)n_tables * width) {
        fprintf(stderr, "short tables file\n");
        exit(2);
    }
    fclose(f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) {
        return 0;
    }
    size_t n = (size_t)(data[0] | (data[1] << 8)) % 4097;
    if (size < 2 + n) {
        return 0;
    }
    int32_t *indexes = malloc(4 * (n ? n : 1)), *out = malloc(4 * (n ? n : 1));
    for (size_t i = 0; i < n; ++i) {
        /* mostly valid tables, some out of range on either side */
        indexes[i] = (int32_t)(int8_t)data[2 + i] % (n_tables + 2);
    }
    const uint8_t *stream = data + 2 + n;
    size_t stream_len = size - 2 - n;
    /* the decoder reads the stream in place: a copy of exactly its length makes ASan see any
     * read past its end */
    uint8_t *copy = malloc(stream_len ? stream_len : 1);
    memcpy(copy, stream, stream_len);
    Reader r;
    Error err = start_reader(copy, (ptrdiff_t)stream_len, &r);
    if (!err) {
        err = decode_symbols(&r, indexes, (ptrdiff_t)n, tables, n_tables, width, sizes, offsets,
                             out);
    }
    (void)err;
    free(copy);
    free(indexes);
    free(out);
    return 0;
}
