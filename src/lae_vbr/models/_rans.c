/*
 * A bounds-checked decoder for the rANS streams that CompressAI's BufferedRansEncoder writes.
 *
 * The algorithm and constants are those of CompressAI's RansDecoder (ryg_rans' rans64.h, CC0:
 * 64-bit state, 32-bit words, 16-bit probabilities, 4-bit bypass coding of values beyond a
 * table), so every stream CompressAI writes decodes to the same symbols. Unlike CompressAI's
 * decoder, which trusts its input, every read is checked against the end of the stream, every
 * table index against the tables, and the bypass length against what an int32 can hold: a
 * damaged or crafted stream raises ValueError instead of reading past its buffer, and every
 * loop is bounded by the stream length.
 *
 * decode(stream, pos, state, indexes, cdfs, width, cdf_sizes, offsets, out) -> (pos, state)
 *   stream     bytes-like, a whole number of little-endian 32-bit words
 *   pos, state the position (in words) and the coder state to continue from; (2, init) after
 *              init(stream)
 *   indexes    int32 buffer: the table of each symbol to decode
 *   cdfs       int32 buffer of rows × width: the quantised CDF tables (row i has cdf_sizes[i]
 *              entries, 0 … 65536, strictly increasing; checked by the caller once)
 *   offsets    int32 buffer: value of each table's first symbol
 *   out        writable int32 buffer of len(indexes): the decoded values
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define PRECISION 16
#define BYPASS_PRECISION 4
#define MAX_BYPASS_VAL ((1u << BYPASS_PRECISION) - 1)
/* An int32 needs at most 8 groups of 4 bits; longer bypass runs cannot come from the encoder. */
#define MAX_BYPASS_GROUPS 8
#define RANS64_L (1ull << 31)

typedef struct {
    const uint8_t *data;
    Py_ssize_t n_words;
    Py_ssize_t pos;
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

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous buffer", what);
        return -1;
    }
    return 0;
}

static PyObject *rans_init(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer stream;
    if (!PyArg_ParseTuple(args, "y*", &stream)) {
        return NULL;
    }
    Reader r = {(const uint8_t *)stream.buf, stream.len / 4, 0, 0};
    uint32_t lo = 0, hi = 0;
    Error err = stream.len % 4 ? "a rANS stream is whole 32-bit words" : read_word(&r, &lo);
    if (!err) {
        err = read_word(&r, &hi);
    }
    PyBuffer_Release(&stream);
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    uint64_t x = ((uint64_t)hi << 32) | lo;
    return Py_BuildValue("nK", r.pos, (unsigned long long)x);
}

static Error decode_all(Reader *r, Py_buffer *idx, Py_buffer *cdfs, Py_ssize_t width,
                        Py_buffer *sizes, Py_buffer *offs, Py_buffer *out) {
    Py_ssize_t n = idx->len / 4, n_tables = sizes->len / 4;
    const int32_t *indexes = idx->buf, *tables = cdfs->buf, *cdf_sizes = sizes->buf;
    const int32_t *offsets = offs->buf;
    int32_t *values = out->buf;
    if (out->len / 4 < n || offs->len / 4 < n_tables || cdfs->len / 4 < n_tables * width) {
        return "output or table buffers are too small";
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        int32_t t = indexes[i];
        if (t < 0 || t >= n_tables || cdf_sizes[t] < 2 || cdf_sizes[t] > width) {
            return "a symbol's table index is out of range";
        }
        int32_t value;
        Error err = decode_symbol(r, tables + (Py_ssize_t)t * width, cdf_sizes[t], &value);
        if (err) {
            return err;
        }
        values[i] = value + offsets[t];
    }
    return NULL;
}

static PyObject *rans_decode(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer stream, idx, cdfs, sizes, offs, out;
    Py_ssize_t pos, width;
    unsigned long long state;
    PyObject *o_idx, *o_cdfs, *o_sizes, *o_offs, *o_out;
    if (!PyArg_ParseTuple(args, "y*nKOOnOOO", &stream, &pos, &state, &o_idx, &o_cdfs, &width,
                          &o_sizes, &o_offs, &o_out)) {
        return NULL;
    }
    PyObject *result = NULL;
    int got = 0;
    if (get_buffer(o_idx, &idx, 0, "indexes") == 0) got = 1;
    if (got == 1 && get_buffer(o_cdfs, &cdfs, 0, "cdfs") == 0) got = 2;
    if (got == 2 && get_buffer(o_sizes, &sizes, 0, "cdf_sizes") == 0) got = 3;
    if (got == 3 && get_buffer(o_offs, &offs, 0, "offsets") == 0) got = 4;
    if (got == 4 && get_buffer(o_out, &out, 1, "out") == 0) got = 5;
    if (got == 5) {
        Reader r = {(const uint8_t *)stream.buf, stream.len / 4, pos, (uint64_t)state};
        Error err = NULL;
        if (pos < 0 || pos > r.n_words || width < 2) {
            err = "invalid decoder position or table width";
        } else {
            Py_BEGIN_ALLOW_THREADS
            err = decode_all(&r, &idx, &cdfs, width, &sizes, &offs, &out);
            Py_END_ALLOW_THREADS
        }
        if (err) {
            PyErr_SetString(PyExc_ValueError, err);
        } else {
            result = Py_BuildValue("nK", r.pos, (unsigned long long)r.x);
        }
    }
    if (got >= 5) PyBuffer_Release(&out);
    if (got >= 4) PyBuffer_Release(&offs);
    if (got >= 3) PyBuffer_Release(&sizes);
    if (got >= 2) PyBuffer_Release(&cdfs);
    if (got >= 1) PyBuffer_Release(&idx);
    PyBuffer_Release(&stream);
    return result;
}

static PyMethodDef methods[] = {
    {"init", rans_init, METH_VARARGS, "init(stream) -> (pos, state)"},
    {"decode", rans_decode, METH_VARARGS,
     "decode(stream, pos, state, indexes, cdfs, width, cdf_sizes, offsets, out) -> (pos, state)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rans", "Bounds-checked rANS decoding of CompressAI streams.", -1,
    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rans(void) { return PyModule_Create(&module); }
