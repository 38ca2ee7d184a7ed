/*
 * skinnysip.sip._fields: the header-field loop of skinnysip.sip.message in C, and the
 * plain Via value of skinnysip.sip.headers (plain_via, below).
 *
 * A SIP head is a start line and header fields "name: value", each line ended by CRLF
 * (RFC 3261 §7, §7.3).  Cutting the head into lines, each line at its first ':', looking the
 * name up and stripping the value's blanks is the one loop of the parser that runs per header
 * field; in Python it is about half of what parsing a message costs.  This module does that
 * loop and nothing else: the name cache, names not yet in it (checked as RFC 3261 §25.1 tokens
 * and made canonical, by the caller's function), folded lines, bare LF line ends and every
 * error stay in skinnysip.sip.message, whose Python loop gives the same result (its tests
 * compare both on generated heads).
 *
 * Only the CPython API touches the strings (PyUnicode_FindChar, PyUnicode_READ,
 * PyUnicode_Substring), always within their length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

PyDoc_STRVAR(split_head_doc,
"split_head(text, cache, miss, /)\n"
"--\n\n"
"The start line and header fields of a SIP head: text up to, not including, the empty line,\n"
"its lines ended by CRLF.\n\n"
"For each line after the first, the text before its first ':' is looked up in the dict\n"
"cache (name as written -> (key, canonical name)); a name not there is given to miss(name),\n"
"which returns that pair or raises (its exception goes through).  The value is the text after\n"
"the ':' with spaces and tabs stripped at both ends (str.strip(\" \\t\")).\n\n"
"Returns (start line, items, last): items a list of (key, canonical name, value) in line\n"
"order, last a dict key -> index in items of the key's last field.  Returns None when a\n"
"'\\n' in text is not part of a CRLF (nothing called then), or when a header line has no ':'\n"
"(the caller's slower path decides what either means).");

/* 1 if every '\n' in text[0:length] follows a '\r', else 0; -1 on error */
static int
crlf_only(PyObject *text, Py_ssize_t length)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t at = 0;
    for (;;) {
        Py_ssize_t lf = PyUnicode_FindChar(text, '\n', at, length, 1);
        if (lf == -2)
            return -1;
        if (lf == -1)
            return 1;
        if (lf == 0 || PyUnicode_READ(kind, data, lf - 1) != '\r')
            return 0;
        at = lf + 1;
    }
}

/*
 * A memo of the name lookup, so that a name seen before costs no string: NAME_SLOTS slots,
 * each a name (a str) and its entry, the slot chosen by a hash of the name's characters and
 * checked by comparing them.  It only ever holds what the cache dict (or miss) answered for
 * the same name, and it is emptied when a call brings another cache dict than the one that
 * filled it, so it can never answer differently from that dict.  Guarded by the GIL.
 */
#define NAME_SLOTS 128
#define NAME_MAX_MEMO 64 /* longer names are looked up every time */

static struct {
    PyObject *name;
    PyObject *entry;
} memo[NAME_SLOTS];
static PyObject *memo_owner; /* the cache dict the memo was filled from (a strong reference) */

static void
memo_clear(void)
{
    for (int i = 0; i < NAME_SLOTS; i++) {
        Py_CLEAR(memo[i].name);
        Py_CLEAR(memo[i].entry);
    }
}

static size_t
name_hash(int kind, const void *data, Py_ssize_t start, Py_ssize_t end)
{
    size_t h = 2166136261u; /* FNV-1a over the code points and the length */
    for (Py_ssize_t i = start; i < end; i++)
        h = (h ^ PyUnicode_READ(kind, data, i)) * 16777619u;
    return (h ^ (size_t)(end - start)) * 16777619u;
}

/* The entry memorised for text[start:end] (a new reference), or NULL when there is none. */
static PyObject *
memo_get(size_t slot, PyObject *text, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *name = memo[slot].name;
    if (name == NULL || PyUnicode_GET_LENGTH(name) != end - start || PyUnicode_KIND(name) != PyUnicode_KIND(text))
        return NULL;
    int kind = PyUnicode_KIND(text);
    if (memcmp(PyUnicode_DATA(name), (const char *)PyUnicode_DATA(text) + start * kind, (size_t)(end - start) * kind) != 0)
        return NULL;
    Py_INCREF(memo[slot].entry);
    return memo[slot].entry;
}

static void
memo_put(size_t slot, PyObject *name, PyObject *entry)
{
    Py_INCREF(name);
    Py_INCREF(entry);
    Py_XSETREF(memo[slot].name, name);
    Py_XSETREF(memo[slot].entry, entry);
}

/* The field of the line text[start:end], added to items and last.
   1 done, 0 the line has no ':', -1 error. */
static int
add_field(PyObject *text, Py_ssize_t start, Py_ssize_t end, PyObject *cache, PyObject *miss,
          PyObject *items, PyObject *last)
{
    Py_ssize_t colon = PyUnicode_FindChar(text, ':', start, end, 1);
    if (colon == -2)
        return -1;
    if (colon == -1)
        return 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    int memorable = colon - start <= NAME_MAX_MEMO;
    size_t slot = memorable ? name_hash(kind, data, start, colon) % NAME_SLOTS : 0;
    PyObject *entry = memorable ? memo_get(slot, text, start, colon) : NULL;
    if (entry == NULL) {
        PyObject *name = PyUnicode_Substring(text, start, colon);
        if (name == NULL)
            return -1;
        entry = PyDict_GetItemWithError(cache, name); /* borrowed */
        if (entry != NULL)
            Py_INCREF(entry);
        else if (!PyErr_Occurred())
            entry = PyObject_CallOneArg(miss, name);
        if (entry == NULL) {
            Py_DECREF(name);
            return -1;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
            PyErr_SetString(PyExc_TypeError, "split_head: a name's entry must be a (key, name) tuple");
            Py_DECREF(name);
            Py_DECREF(entry);
            return -1;
        }
        if (memorable && cache == memo_owner) /* (miss() may have let another call refill it) */
            memo_put(slot, name, entry);
        Py_DECREF(name);
    }
    Py_ssize_t from = colon + 1, to = end;
    while (from < to) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, from);
        if (ch != ' ' && ch != '\t')
            break;
        from++;
    }
    while (to > from) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, to - 1);
        if (ch != ' ' && ch != '\t')
            break;
        to--;
    }
    PyObject *value = PyUnicode_Substring(text, from, to);
    if (value == NULL) {
        Py_DECREF(entry);
        return -1;
    }
    PyObject *key = PyTuple_GET_ITEM(entry, 0);
    PyObject *item = PyTuple_Pack(3, key, PyTuple_GET_ITEM(entry, 1), value);
    Py_DECREF(value);
    PyObject *index = item == NULL ? NULL : PyLong_FromSsize_t(PyList_GET_SIZE(items));
    int failed = index == NULL || PyList_Append(items, item) < 0 || PyDict_SetItem(last, key, index) < 0;
    Py_XDECREF(index);
    Py_XDECREF(item);
    Py_DECREF(entry);
    return failed ? -1 : 1;
}

static PyObject *
split_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "split_head expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *text = args[0], *cache = args[1], *miss = args[2];
    if (!PyUnicode_Check(text) || !PyDict_Check(cache) || !PyCallable_Check(miss)) {
        PyErr_SetString(PyExc_TypeError, "split_head(str, dict, callable)");
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return NULL;
#endif
    if (cache != memo_owner) { /* another dict: what the memo holds may not be its answers */
        memo_clear();
        Py_INCREF(cache);
        Py_XSETREF(memo_owner, cache);
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int plain = crlf_only(text, length);
    if (plain < 0)
        return NULL;
    if (plain == 0)
        Py_RETURN_NONE;
    /* every '\n' ends a CRLF: each line ends at the '\r' before one, the last at the end */
    Py_ssize_t lf = PyUnicode_FindChar(text, '\n', 0, length, 1);
    if (lf == -2)
        return NULL;
    PyObject *start = PyUnicode_Substring(text, 0, lf < 0 ? length : lf - 1);
    PyObject *items = PyList_New(0), *last = PyDict_New();
    if (start == NULL || items == NULL || last == NULL)
        goto error;
    while (lf >= 0) {
        Py_ssize_t from = lf + 1;
        lf = PyUnicode_FindChar(text, '\n', from, length, 1);
        if (lf == -2)
            goto error;
        Py_ssize_t end = lf < 0 ? length : lf - 1;
        int got = add_field(text, from, end, cache, miss, items, last);
        if (got < 0)
            goto error;
        if (got == 0) {
            Py_DECREF(start);
            Py_DECREF(items);
            Py_DECREF(last);
            Py_RETURN_NONE;
        }
    }
    PyObject *result = PyTuple_Pack(3, start, items, last);
    Py_DECREF(start);
    Py_DECREF(items);
    Py_DECREF(last);
    return result;

error:
    Py_XDECREF(start);
    Py_XDECREF(items);
    Py_XDECREF(last);
    return NULL;
}

/* ------------------------------------------------------------------ plain Via values */

PyDoc_STRVAR(plain_via_doc,
"plain_via(value, /)\n"
"--\n\n"
"The parts of a plain Via value (RFC 3261 §20.42): \"SIP/2.0/\" transport SP host [\":\" port]\n"
"*(\";\" name [\"=\" value]), where transport and names are RFC 3261 §25.1 tokens, host a\n"
"host name or IPv4 address ([A-Za-z0-9_][A-Za-z0-9-_.]*) or an IPv6 reference (hex digits,\n"
"':' and '.', at least one ':', in brackets), port at most 65535 in 1 to 5 digits, and a\n"
"parameter value made of token characters, ':', '[' and ']' (no blanks, quotes, commas).\n\n"
"Returns (transport upper-cased, host without brackets, port or None, params) with params a\n"
"dict of lower-cased names -> value or None (a flag; a later duplicate wins), or None for\n"
"anything else: the same language and result as skinnysip.sip.headers' _PLAIN_VIA_RE path,\n"
"whose tests compare both.");

enum {
    C_TOKEN = 1,      /* RFC 3261 token: alphanum and -.!%*_+`'~ */
    C_HOST_FIRST = 2, /* alphanum and _ */
    C_HOST = 4,       /* alphanum and -_. */
    C_IPV6 = 8,       /* hex digits, ':' and '.' */
    C_VALUE = 16,     /* token characters, ':', '[' and ']' */
    C_DIGIT = 32,
};

static unsigned char via_class[128];

static void
via_class_init(void)
{
    for (int c = 0; c < 128; c++) {
        unsigned char k = 0;
        int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (alnum || strchr("-.!%*_+`'~", c) != NULL)
            k |= C_TOKEN | C_VALUE;
        if (c != 0 && strchr(":[]", c) != NULL)
            k |= C_VALUE;
        if (alnum || c == '_')
            k |= C_HOST_FIRST;
        if (alnum || c == '-' || c == '_' || c == '.')
            k |= C_HOST;
        if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f') || c == ':' || c == '.')
            k |= C_IPV6;
        if (c >= '0' && c <= '9')
            k |= C_DIGIT;
        via_class[c] = c == 0 ? 0 : k;
    }
}

/* text[start:end] (ASCII) as a new str, letters changed by delta for those in [from, to] */
static PyObject *
ascii_recased(const Py_UCS1 *text, Py_ssize_t start, Py_ssize_t end, char from, char to, int delta)
{
    PyObject *out = PyUnicode_New(end - start, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *dst = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS1 c = text[i];
        dst[i - start] = (c >= (Py_UCS1)from && c <= (Py_UCS1)to) ? (Py_UCS1)(c + delta) : c;
    }
    return out;
}

#define IS(c, k) (via_class[(c)] & (k))

static PyObject *
plain_via(PyObject *module, PyObject *value)
{
    if (!PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "plain_via() argument must be str");
        return NULL;
    }
    if (PyUnicode_READY(value) < 0)
        return NULL;
    /* every character the grammar allows is ASCII: anything else is not plain */
    if (!PyUnicode_IS_ASCII(value))
        Py_RETURN_NONE;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    Py_ssize_t i = 8;
    if (n < 10 || memcmp(s, "SIP/2.0/", 8) != 0)
        Py_RETURN_NONE;
    Py_ssize_t transport_end;
    while (i < n && IS(s[i], C_TOKEN))
        i++;
    if (i == 8 || i >= n || s[i] != ' ')
        Py_RETURN_NONE;
    transport_end = i++;
    Py_ssize_t host_start, host_end;
    if (i < n && s[i] == '[') {
        int colon = 0;
        host_start = ++i;
        while (i < n && IS(s[i], C_IPV6)) {
            colon |= s[i] == ':';
            i++;
        }
        if (!colon || i >= n || s[i] != ']')
            Py_RETURN_NONE;
        host_end = i++;
    }
    else {
        if (i >= n || !IS(s[i], C_HOST_FIRST))
            Py_RETURN_NONE;
        host_start = i++;
        while (i < n && IS(s[i], C_HOST))
            i++;
        host_end = i;
    }
    long port = -1;
    if (i < n && s[i] == ':') {
        Py_ssize_t digits = ++i;
        port = 0;
        while (i < n && IS(s[i], C_DIGIT) && i - digits < 6) {
            port = port * 10 + (s[i] - '0');
            i++;
        }
        if (i == digits || i - digits > 5 || port > 65535)
            Py_RETURN_NONE;
    }
    /* the parameters: checked first, so nothing is built for a value that is not plain */
    Py_ssize_t params_start = i;
    while (i < n) {
        if (s[i] != ';')
            Py_RETURN_NONE;
        Py_ssize_t name = ++i;
        while (i < n && IS(s[i], C_TOKEN))
            i++;
        if (i == name)
            Py_RETURN_NONE;
        if (i < n && s[i] == '=') {
            i++;
            while (i < n && IS(s[i], C_VALUE))
                i++;
        }
    }
    PyObject *transport = NULL, *host = NULL, *port_obj = NULL, *params = NULL;
    transport = ascii_recased(s, 8, transport_end, 'a', 'z', 'A' - 'a');
    host = PyUnicode_Substring(value, host_start, host_end);
    if (port < 0) {
        port_obj = Py_None;
        Py_INCREF(port_obj);
    }
    else
        port_obj = PyLong_FromLong(port);
    params = PyDict_New();
    if (transport == NULL || host == NULL || port_obj == NULL || params == NULL)
        goto error;
    i = params_start;
    while (i < n) {
        Py_ssize_t name_start = ++i; /* past the ';' */
        while (i < n && IS(s[i], C_TOKEN))
            i++;
        Py_ssize_t name_end = i;
        PyObject *item;
        if (i < n && s[i] == '=') {
            Py_ssize_t item_start = ++i;
            while (i < n && IS(s[i], C_VALUE))
                i++;
            item = PyUnicode_Substring(value, item_start, i);
        }
        else {
            item = Py_None;
            Py_INCREF(item);
        }
        PyObject *key = ascii_recased(s, name_start, name_end, 'A', 'Z', 'a' - 'A');
        int failed = item == NULL || key == NULL || PyDict_SetItem(params, key, item) < 0;
        Py_XDECREF(key);
        Py_XDECREF(item);
        if (failed)
            goto error;
    }
    return Py_BuildValue("(NNNN)", transport, host, port_obj, params);

error:
    Py_XDECREF(transport);
    Py_XDECREF(host);
    Py_XDECREF(port_obj);
    Py_XDECREF(params);
    return NULL;
}

#undef IS

static PyMethodDef methods[] = {
    {"split_head", (PyCFunction)(void (*)(void))split_head, METH_FASTCALL, split_head_doc},
    {"plain_via", (PyCFunction)plain_via, METH_O, plain_via_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "skinnysip.sip._fields",
    "The header-field loop of skinnysip.sip.message and the plain Via value of skinnysip.sip.headers in C.",
    0,
    methods,
};

PyMODINIT_FUNC
PyInit__fields(void)
{
    via_class_init();
    return PyModule_Create(&module);
}
