"""Build of the optional C extension ``skinnysip.rtp._g711`` (the G.711 frame loops).

Everything else is in pyproject.toml.  The extension is optional: without a C compiler (or
without numpy's headers) the install goes on without it and :mod:`skinnysip.rtp.g711` uses its
numpy tables (``skinnysip.rtp.g711.IMPLEMENTATION`` says which).

numpy C API: ``NPY_TARGET_VERSION`` 1.25 makes a build against numpy 2.x headers import on any
runtime numpy >= 1.25 (our dependency is >= 1.26); numpy 2.x builds also run on later numpy.
"""

from setuptools import Extension, setup

try:
    import numpy
except ImportError:  # not through pip's isolated build (numpy is a build requirement): no extension
    numpy = None

ext_modules = []
if numpy is not None:
    ext_modules.append(Extension(
        "skinnysip.rtp._g711",
        sources=["src/skinnysip/rtp/_g711.c"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION")],
        optional=True,
    ))

setup(ext_modules=ext_modules)
