/*
 * skinnysip.rtp._g711: the G.711 (ITU-T Rec. G.711) table loops of skinnysip.rtp.g711 in C.
 *
 * One 20 ms frame is 160 samples: at that size numpy's fixed cost per call (making arrays,
 * np.frombuffer) is several times the work, so the frame path is these loops, returning the
 * same types as the numpy implementation (an int16 ndarray of shape (n,) from a decode, bytes
 * from an encode).
 *
 * The tables are not computed here: skinnysip.rtp.g711 builds them (bit-exact with audioop,
 * which its tests check on every input) and hands them over once with load_tables(), together
 * with its numpy encoders, which this module calls for any input that is not a C-contiguous,
 * aligned, native-order int16 ndarray (lists, other dtypes, strided views: their conversion and
 * range errors stay in one place).
 *
 * numpy C API: built with NPY_TARGET_VERSION = NPY_1_25_API_VERSION (setup.py), so a build
 * against numpy 2.x headers imports on any runtime numpy >= 1.25 (numpy's rule: an extension
 * runs on the numpy it was built against and newer ones, and back to its target version).  Only
 * calls present since numpy 1.7 are used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

/* Above this many samples the loop runs without the GIL (a minute of audio: about 0.13 ms). */
#define NOGIL_SAMPLES 65536

static int16_t ulaw_dec[256], alaw_dec[256];
static uint8_t ulaw_enc[65536], alaw_enc[65536]; /* indexed by the sample's bits read as uint16 */
static PyObject *ulaw_encode_fallback, *alaw_encode_fallback;
static int tables_loaded;

PyDoc_STRVAR(load_tables_doc,
"load_tables(ulaw_decode, alaw_decode, ulaw_encode, alaw_encode, ulaw_fallback, alaw_fallback)\n"
"--\n\n"
"Install the tables: decode tables are 256 native-order int16 (512 bytes), encode tables 65536\n"
"uint8 indexed by the sample's bits read as uint16; the fallbacks encode any other input.");

static PyObject *
load_tables(PyObject *self, PyObject *args)
{
    PyObject *ud, *ad, *ue, *ae, *uf, *af;
    if (!PyArg_ParseTuple(args, "OOOOOO:load_tables", &ud, &ad, &ue, &ae, &uf, &af))
        return NULL;
    if (!PyCallable_Check(uf) || !PyCallable_Check(af)) {
        PyErr_SetString(PyExc_TypeError, "load_tables: the fallbacks must be callable");
        return NULL;
    }
    /* all four checked before any is copied: a refused call changes nothing */
    PyObject *sources[4] = {ud, ad, ue, ae};
    void *dests[4] = {ulaw_dec, alaw_dec, ulaw_enc, alaw_enc};
    Py_ssize_t sizes[4] = {sizeof ulaw_dec, sizeof alaw_dec, sizeof ulaw_enc, sizeof alaw_enc};
    Py_buffer views[4];
    int got = 0, ok = 1;
    for (; got < 4; got++) {
        if (PyObject_GetBuffer(sources[got], &views[got], PyBUF_SIMPLE) < 0) {
            ok = 0;
            break;
        }
        if (views[got].len != sizes[got]) {
            PyErr_Format(PyExc_ValueError, "load_tables: table %d has %zd bytes, expected %zd",
                         got + 1, views[got].len, sizes[got]);
            got++;
            ok = 0;
            break;
        }
    }
    for (int k = 0; k < got; k++) {
        if (ok)
            memcpy(dests[k], views[k].buf, (size_t)sizes[k]);
        PyBuffer_Release(&views[k]);
    }
    if (!ok)
        return NULL;
    PyObject *old_u = ulaw_encode_fallback, *old_a = alaw_encode_fallback;
    Py_INCREF(uf);
    Py_INCREF(af);
    ulaw_encode_fallback = uf;
    alaw_encode_fallback = af;
    Py_XDECREF(old_u);
    Py_XDECREF(old_a);
    tables_loaded = 1;
    Py_RETURN_NONE;
}

static int
check_loaded(void)
{
    if (!tables_loaded) {
        PyErr_SetString(PyExc_RuntimeError, "skinnysip.rtp._g711: tables not loaded (import skinnysip.rtp.g711)");
        return -1;
    }
    return 0;
}

/* dst[i] = table[src[i]]: decoding looks codes up (uint8 -> int16), encoding samples' bits
   (uint16 -> uint8) */
#define TABLE_LOOP(name, table_type, src_type)                                   \
    static void                                                                  \
    name(const void *table, const void *src, void *dst, Py_ssize_t n)            \
    {                                                                            \
        const table_type *t = table;                                             \
        const src_type *s = src;                                                 \
        table_type *d = dst;                                                     \
        for (Py_ssize_t i = 0; i < n; i++)                                       \
            d[i] = t[s[i]];                                                      \
    }
TABLE_LOOP(decode_loop, int16_t, uint8_t)
TABLE_LOOP(encode_loop, uint8_t, uint16_t)

/* one of the loops above, without the GIL for long runs */
static void
run_loop(void (*loop)(const void *, const void *, void *, Py_ssize_t), const void *table, const void *src,
         void *dst, Py_ssize_t n)
{
    if (n >= NOGIL_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        loop(table, src, dst, n);
        Py_END_ALLOW_THREADS
    }
    else
        loop(table, src, dst, n);
}

/* bytes-like (any object with a buffer; else what bytes() accepts) -> new int16 ndarray (n,) */
static PyObject *
decode_with(const int16_t *table, PyObject *data)
{
    const uint8_t *src;
    Py_ssize_t n;
    Py_buffer view;
    PyObject *copy = NULL;
    int have_view = 0;

    if (check_loaded() < 0)
        return NULL;
    if (PyBytes_CheckExact(data)) {
        src = (const uint8_t *)PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    }
    else if (PyObject_CheckBuffer(data) && PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0) {
        have_view = 1;
        src = (const uint8_t *)view.buf;
        n = view.len;
    }
    else {
        /* a strided buffer, a list of ints, ...: as bytes(data) reads them, but an int is a
           TypeError (not a run of zero bytes) */
        PyErr_Clear();
        if (PyLong_Check(data)) {
            PyErr_Format(PyExc_TypeError, "expected a bytes-like object, not '%.200s'", Py_TYPE(data)->tp_name);
            return NULL;
        }
        copy = PyBytes_FromObject(data);
        if (copy == NULL)
            return NULL;
        src = (const uint8_t *)PyBytes_AS_STRING(copy);
        n = PyBytes_GET_SIZE(copy);
    }
    npy_intp dims[1] = {n};
    PyObject *out = PyArray_SimpleNew(1, dims, NPY_INT16);
    if (out != NULL)
        run_loop(decode_loop, table, src, PyArray_DATA((PyArrayObject *)out), n);
    if (have_view)
        PyBuffer_Release(&view);
    Py_XDECREF(copy);
    return out;
}

/* int16 ndarray (C-contiguous, aligned, native order, exact type) -> bytes; else the fallback */
static PyObject *
encode_with(const uint8_t *table, PyObject *fallback, PyObject *samples)
{
    if (check_loaded() < 0)
        return NULL;
    if (!PyArray_CheckExact(samples))
        return PyObject_CallOneArg(fallback, samples);
    PyArrayObject *arr = (PyArrayObject *)samples;
    if (PyArray_TYPE(arr) != NPY_INT16 || !PyArray_ISCARRAY_RO(arr) || !PyArray_ISNOTSWAPPED(arr))
        return PyObject_CallOneArg(fallback, samples);
    Py_ssize_t n = (Py_ssize_t)PyArray_SIZE(arr);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    run_loop(encode_loop, table, PyArray_DATA(arr), PyBytes_AS_STRING(out), n);
    return out;
}

static PyObject *
ulaw_decode(PyObject *self, PyObject *data)
{
    return decode_with(ulaw_dec, data);
}

static PyObject *
alaw_decode(PyObject *self, PyObject *data)
{
    return decode_with(alaw_dec, data);
}

static PyObject *
ulaw_encode(PyObject *self, PyObject *samples)
{
    return encode_with(ulaw_enc, ulaw_encode_fallback, samples);
}

static PyObject *
alaw_encode(PyObject *self, PyObject *samples)
{
    return encode_with(alaw_enc, alaw_encode_fallback, samples);
}

/* 0 = PCMU, 8 = PCMA (RFC 3551 section 6), -1 = neither (ValueError set), -2 = error */
static int
law_of(PyObject *payload_type)
{
    if (PyLong_CheckExact(payload_type)) {
        int overflow;
        long pt = PyLong_AsLongAndOverflow(payload_type, &overflow);
        if (pt == 0 || pt == 8)
            return (int)pt;
    }
    else {  /* a numpy integer, a float...: compared as Python compares it to 0 and 8 */
        for (long pt = 0; pt <= 8; pt += 8) {
            PyObject *value = PyLong_FromLong(pt);
            if (value == NULL)
                return -2;
            int equal = PyObject_RichCompareBool(payload_type, value, Py_EQ);
            Py_DECREF(value);
            if (equal < 0)
                return -2;
            if (equal)
                return (int)pt;
        }
    }
    PyErr_Format(PyExc_ValueError, "not a G.711 payload type: %S", payload_type);
    return -1;
}

typedef PyObject *(*coder)(PyObject *, PyObject *);

/* (payload_type, argument) -> the µ-law or the A-law coder's result */
static PyObject *
by_payload_type(const char *name, coder ulaw, coder alaw, PyObject *self, PyObject *const *args,
                Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 positional arguments (%zd given)", name, nargs);
        return NULL;
    }
    int law = law_of(args[0]);
    if (law < 0)
        return NULL;
    return (law == 0 ? ulaw : alaw)(self, args[1]);
}

static PyObject *
encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return by_payload_type("encode", ulaw_encode, alaw_encode, self, args, nargs);
}

static PyObject *
decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return by_payload_type("decode", ulaw_decode, alaw_decode, self, args, nargs);
}

PyDoc_STRVAR(ulaw_decode_doc,
"ulaw_decode(data, /)\n--\n\n"
"n bytes of \xc2\xb5-law (any bytes-like object, or what bytes() accepts) -> int16 array of n samples\n"
"(shape (n,)).  TypeError for a str or an int, ValueError for ints outside 0..255.");
PyDoc_STRVAR(alaw_decode_doc,
"alaw_decode(data, /)\n--\n\n"
"n bytes of A-law (any bytes-like object, or what bytes() accepts) -> int16 array of n samples\n"
"(shape (n,)).  TypeError for a str or an int, ValueError for ints outside 0..255.");
PyDoc_STRVAR(ulaw_encode_doc,
"ulaw_encode(samples, /)\n--\n\n"
"16-bit linear PCM (int16 array, shape (n,), or anything numpy converts to one) -> n bytes of\n"
"\xc2\xb5-law.  ValueError if a non-int16 input has values outside the int16 range.");
PyDoc_STRVAR(alaw_encode_doc,
"alaw_encode(samples, /)\n--\n\n"
"16-bit linear PCM (int16 array, shape (n,), or anything numpy converts to one) -> n bytes of\n"
"A-law.  ValueError if a non-int16 input has values outside the int16 range.");
PyDoc_STRVAR(encode_doc,
"encode(payload_type, samples, /)\n--\n\n"
"Encode for an RTP payload type: 0 (PCMU) or 8 (PCMA), RFC 3551 section 6.  ValueError for others.");
PyDoc_STRVAR(decode_doc,
"decode(payload_type, data, /)\n--\n\n"
"Decode for an RTP payload type: 0 (PCMU) or 8 (PCMA), RFC 3551 section 6.  ValueError for others.");

static PyMethodDef g711_methods[] = {
    {"load_tables", load_tables, METH_VARARGS, load_tables_doc},
    {"ulaw_decode", ulaw_decode, METH_O, ulaw_decode_doc},
    {"alaw_decode", alaw_decode, METH_O, alaw_decode_doc},
    {"ulaw_encode", ulaw_encode, METH_O, ulaw_encode_doc},
    {"alaw_encode", alaw_encode, METH_O, alaw_encode_doc},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL, encode_doc},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef g711_module = {
    PyModuleDef_HEAD_INIT, "_g711",
    "G.711 table loops for skinnysip.rtp.g711 (use that module: it loads the tables).",
    -1, g711_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__g711(void)
{
    import_array();
    return PyModule_Create(&g711_module);
}
