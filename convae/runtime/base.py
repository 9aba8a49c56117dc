"""The one base of convae's C ops: contiguous float32 inputs, C read from ``c_code/``.

Each op's C lives in files of ``c_code/`` (as Theano's own ``corr.py`` reads
``c_code/corr_gemm.c``); the op itself gives only a short body that computes
its output's shape, prepares the output and calls a function of those files.
The module-cache version of an op is a SHA-256 of all the C it compiles, so
an edit to any of its files compiles it afresh.
"""
import hashlib
import os

import theano
from theano.tensor import blas_headers
from theano.tensor.blas import ldflags

C_CODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_code")
COMMON_HEADER = "convae_ops.h"


def read_c_code(name):
    """The text of ``c_code/<name>``."""
    with open(os.path.join(C_CODE_DIR, name)) as f:
        return f.read()


class ContiguousFloat32Op(theano.gof.OpenMPOp):
    """An op whose float32 inputs are made C-contiguous and whose C comes from c_code/.

    Subclasses give ``__props__``, ``make_node``, ``infer_shape``, the files
    their C needs (``c_files``, after ``convae_ops.h``), the macros to define
    before them (``c_defines``) and ``body()``: C that reads the contiguous
    inputs ``in0``, ``in1``, ... and fills the output ``%(out)s`` (``%(fail)s``
    on error). The body is formatted once, with ``out``, ``fail`` and the op's
    attributes (``%(axis)d``), so a literal ``%`` in it is written ``%%``.
    """

    c_files = ()
    c_defines = ()

    def c_headers(self):
        return ["<math.h>"] + super().c_headers()

    def c_support_code(self):
        defines = "".join("#define {}\n".format(name) for name in self.c_defines)
        return defines + "".join(read_c_code(name)
                                 for name in (COMMON_HEADER,) + tuple(self.c_files))

    def body(self):
        raise NotImplementedError

    def c_code(self, node, name, inputs, outputs, sub):
        grab = "".join("PyArrayObject* in{} = PyArray_GETCONTIGUOUS({});\n".format(i, var)
                       for i, var in enumerate(inputs))
        release = "".join("Py_XDECREF(in{});".format(i) for i in range(len(inputs)))
        check = " || ".join("in{} == NULL".format(i) for i in range(len(inputs)))
        fail = "{ " + release + " " + sub["fail"] + " }"
        body = self.body() % dict(vars(self), out=outputs[0], fail=fail)
        return "{\n" + grab + "if (" + check + ") " + fail + "\n" + body + release + "\n}\n"

    def c_code_cache_version(self):
        source = hashlib.sha256((self.c_support_code() + self.body()).encode()).hexdigest()
        return (source, self.openmp)


class BlasFloat32Op(ContiguousFloat32Op):
    """A ContiguousFloat32Op whose C calls the BLAS Theano links (``sgemm_``),
    with ``c_code/blas.h``: OpenBLAS on one thread while OpenMP's call it."""

    def c_support_code(self):
        return blas_headers.blas_header_text() + super().c_support_code()

    def c_libraries(self):
        return ldflags()

    def c_lib_dirs(self):
        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self):
        return ldflags(libs=False, include_dir=True)

    def c_compile_args(self):
        return ldflags(libs=False, flags=True) + super().c_compile_args()
