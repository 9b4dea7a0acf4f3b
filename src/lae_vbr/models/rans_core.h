/*
 * The core of the bounds-checked rANS decoder, in plain C (no Python): the stream reader, one
 * symbol, and a run of symbols with their tables. _rans.c wraps it for Python; the fuzzing
 * harness of tests/fuzz calls it directly. See _rans.c for the algorithm and its checks.
 */
#ifndef LAE_VBR_RANS_CORE_H
#define LAE_VBR_RANS_CORE_H

#include <stddef.h>
#include <stdint.h>

#define PRECISION 16
#define BYPASS_PRECISION 4
#define MAX_BYPASS_VAL ((1u << BYPASS_PRECISION) - 1)
/* An int32 needs at most 8 groups of 4 bits; longer bypass runs cannot come from the encoder. */
#define MAX_BYPASS_GROUPS 8
#define RANS64_L (1ull << 31)

typedef struct {
    const uint8_t *data;
    ptrdiff_t n_words;
    ptrdiff_t pos;
    uint64_t x;
} Reader;

/* Errors are returned as messages (NULL: none), so decoding can run without the GIL. */
typedef const char *Error;

static Error read_word(Reader *r, uint32_t *word) {
    if (r->pos >= r->n_words) {
        return "the rANS stream ends before its symbols do";
    }
    const uint8_t *p = r->data + 4 * r->pos;
    *word = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
            ((uint32_t)p[3] << 24);
    r->pos += 1;
    return NULL;
}

static Error renormalize(Reader *r) {
    if (r->x < RANS64_L) {
        uint32_t word;
        Error err = read_word(r, &word);
        if (err) {
            return err;
        }
        r->x = (r->x << 32) | word;
    }
    return NULL;
}

static Error get_bits(Reader *r, uint32_t n_bits, uint32_t *val) {
    *val = (uint32_t)(r->x & ((1u << n_bits) - 1));
    r->x >>= n_bits;
    return renormalize(r);
}

/* The value of a symbol coded in bypass mode (beyond its table). */
static Error decode_bypass(Reader *r, int32_t max_value, int32_t *value) {
    uint32_t val;
    Error err = get_bits(r, BYPASS_PRECISION, &val);
    uint32_t n_bypass = val;
    while (!err && val == MAX_BYPASS_VAL && n_bypass <= MAX_BYPASS_GROUPS) {
        err = get_bits(r, BYPASS_PRECISION, &val);
        n_bypass += val;
    }
    if (err) {
        return err;
    }
    if (n_bypass > MAX_BYPASS_GROUPS) {
        return "corrupt rANS stream (bypass value too long)";
    }
    uint32_t raw = 0;
    for (uint32_t j = 0; j < n_bypass; ++j) {
        err = get_bits(r, BYPASS_PRECISION, &val);
        if (err) {
            return err;
        }
        raw |= val << (j * BYPASS_PRECISION);
    }
    int64_t v = (int64_t)(raw >> 1);
    v = (raw & 1) ? -v - 1 : v + max_value;
    if (v > INT32_MAX || v < INT32_MIN) {
        return "corrupt rANS stream (bypass value out of range)";
    }
    *value = (int32_t)v;
    return NULL;
}

static Error decode_symbol(Reader *r, const int32_t *cdf, int32_t size, int32_t *value) {
    uint32_t cum_freq = (uint32_t)(r->x & ((1u << PRECISION) - 1));
    /* the first entry above cum_freq ends the symbol's interval; the table ends at 1 << 16 */
    int32_t s = 0;
    while (s + 1 < size - 1 && (uint32_t)cdf[s + 1] <= cum_freq) {
        ++s;
    }
    uint32_t start = (uint32_t)cdf[s];
    uint32_t freq = (uint32_t)cdf[s + 1] - start;
    r->x = freq * (r->x >> PRECISION) + (r->x & ((1u << PRECISION) - 1)) - start;
    Error err = renormalize(r);
    if (err) {
        return err;
    }
    *value = s;
    return s == size - 2 ? decode_bypass(r, s, value) : NULL;
}

/* Decode n symbols, symbol i with table indexes[i] of the n_tables tables (rows of width
 * entries; row t has sizes[t] entries and its first symbol is offsets[t]) into out. */
static Error decode_symbols(Reader *r, const int32_t *indexes, ptrdiff_t n, const int32_t *tables,
                            ptrdiff_t n_tables, ptrdiff_t width, const int32_t *sizes,
                            const int32_t *offsets, int32_t *out) {
    for (ptrdiff_t i = 0; i < n; ++i) {
        int32_t t = indexes[i];
        if (t < 0 || t >= n_tables || sizes[t] < 2 || sizes[t] > width) {
            return "a symbol's table index is out of range";
        }
        int32_t value;
        Error err = decode_symbol(r, tables + (ptrdiff_t)t * width, sizes[t], &value);
        if (err) {
            return err;
        }
        int64_t symbol = (int64_t)value + offsets[t]; /* a bypass value near the int32 limits */
        if (symbol > INT32_MAX || symbol < INT32_MIN) {
            return "corrupt rANS stream (decoded value out of range)";
        }
        out[i] = (int32_t)symbol;
    }
    return NULL;
}

/* The reader of a whole stream: its first two words are the coder's state. */
static Error start_reader(const uint8_t *data, ptrdiff_t n_bytes, Reader *r) {
    r->data = data;
    r->n_words = n_bytes / 4;
    r->pos = 0;
    r->x = 0;
    if (n_bytes % 4) {
        return "a rANS stream is whole 32-bit words";
    }
    uint32_t lo = 0, hi = 0;
    Error err = read_word(r, &lo);
    if (!err) {
        err = read_word(r, &hi);
    }
    r->x = ((uint64_t)hi << 32) | lo;
    return err;
}

#endif
