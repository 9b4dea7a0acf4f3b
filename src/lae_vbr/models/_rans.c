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

#include "rans_core.h"

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
    Reader r;
    Error err = start_reader((const uint8_t *)stream.buf, stream.len, &r);
    PyBuffer_Release(&stream);
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    return Py_BuildValue("nK", (Py_ssize_t)r.pos, (unsigned long long)r.x);
}

static Error decode_all(Reader *r, Py_buffer *idx, Py_buffer *cdfs, Py_ssize_t width,
                        Py_buffer *sizes, Py_buffer *offs, Py_buffer *out) {
    Py_ssize_t n = idx->len / 4, n_tables = sizes->len / 4;
    if (out->len / 4 < n || offs->len / 4 < n_tables || cdfs->len / 4 < n_tables * width) {
        return "output or table buffers are too small";
    }
    return decode_symbols(r, idx->buf, n, cdfs->buf, n_tables, width, sizes->buf, offs->buf,
                          out->buf);
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
