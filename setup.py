"""Builds the Cython core: every ext/<name>.pyx becomes pillion._ext.<name>.

PILLION_NO_EXTENSIONS=1 at build time skips the extensions (pure twins only);
PILLION_DEBUG=1 adds line tracing and the PILLION_DEBUG C define;
PILLION_CYTHON_ANNOTATE=1 writes the HTML annotation next to each .pyx.
"""

import os
import re
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "src/pillion/_version.py").read_text()
).group(1)


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def extensions():
    if _flag("PILLION_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = _flag("PILLION_DEBUG")
    macros = [("PILLION_DEBUG", "1"), ("CYTHON_TRACE", "1")] if debug else []
    modules = [
        Extension(
            f"pillion._ext.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            extra_compile_args=["-O2", "-Wall", "-Wsign-compare"],
            define_macros=macros,
        )
        for pyx in sorted((HERE / "ext").glob("*.pyx"))
    ]
    return cythonize(
        modules,
        language_level=3,
        include_path=["ext", "ext/includes"],
        annotate=_flag("PILLION_CYTHON_ANNOTATE"),
        compiler_directives={"linetrace": debug, "binding": False},
    )


setup(version=VERSION, ext_modules=extensions())
