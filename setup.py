"""Build of the optional C extensions: ``skinnysip.rtp._g711`` (the G.711 frame loops) and
``skinnysip.sip._fields`` (the SIP parser's header-field loop and plain Via values).

Everything else is in pyproject.toml.  The extensions are optional: without a C compiler (or,
for ``_g711``, without numpy's headers) the install goes on without them, :mod:`skinnysip.rtp.g711`
uses its numpy tables and :mod:`skinnysip.sip.message` its Python loop (``IMPLEMENTATION`` in each
says which).

numpy C API: ``NPY_TARGET_VERSION`` 1.25 makes a build against numpy 2.x headers import on any
runtime numpy >= 1.25 (our dependency is >= 1.26); numpy 2.x builds also run on later numpy.
"""

from setuptools import Extension, setup

try:
    import numpy
except ImportError:  # not through pip's isolated build (numpy is a build requirement): no extension
    numpy = None

ext_modules = [Extension("skinnysip.sip._fields", sources=["src/skinnysip/sip/_fields.c"], optional=True)]
if numpy is not None:
    ext_modules.append(Extension(
        "skinnysip.rtp._g711",
        sources=["src/skinnysip/rtp/_g711.c"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION")],
        optional=True,
    ))

setup(ext_modules=ext_modules)
