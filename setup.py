"""Declares the compiled core; all metadata lives in pyproject.toml."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTBATCH_DEBUG") == "1"

directives = {
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
    "linetrace": DEBUG,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

compile_args = ["/std:c++17"] if os.name == "nt" else ["-std=c++17", "-O2"]

extensions = [
    Extension(
        "fastbatch.core._core",
        ["src/fastbatch/core/_core.pyx"],
        # Inlined into _core.cpp: a change to either must rebuild the extension.
        depends=["src/fastbatch/core/_numeric.pxd", "src/fastbatch/core/_sync.hpp"],
        include_dirs=[numpy.get_include(), "src/fastbatch/core"],
        define_macros=macros,
        language="c++",
        extra_compile_args=compile_args,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=DEBUG,
    ),
)
