"""The OpenBLAS that Theano links: where it is, and its thread count.

Theano compiles its dot products and convae's BLAS-path convolutions against
``blas.ldflags``; convae points that at Debian's ``libopenblas-dev`` (see
``convae.runtime.defaults``). This module loads the same library with
ctypes, so that a setting made here is the one Theano's compiled code sees.
"""
import ctypes
import glob

# Where Debian (and most Linux distributions) put the linkable OpenBLAS.
LIBRARY_GLOBS = (
    "/usr/lib/*/libopenblas.so",
    "/usr/lib/libopenblas.so",
    "/usr/lib64/libopenblas.so",
    "/usr/local/lib/libopenblas.so",
)


def find_openblas():
    """Return the path of a linkable ``libopenblas.so``, or None."""
    for pattern in LIBRARY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def library():
    """The OpenBLAS library loaded in this process (ctypes.CDLL), or None."""
    path = find_openblas()
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def set_threads(threads):
    """Make OpenBLAS use ``threads`` threads in this process; False if there is no OpenBLAS."""
    lib = library()
    if lib is None or not hasattr(lib, "openblas_set_num_threads"):
        return False
    lib.openblas_set_num_threads(int(threads))
    return True


def _text(function):
    """What OpenBLAS's ``function`` (a char* query) answers, or None."""
    lib = library()
    if lib is None or not hasattr(lib, function):
        return None
    query = getattr(lib, function)
    query.restype = ctypes.c_char_p
    return query().decode()


def core_name():
    """The name of the OpenBLAS core running in this process ('Haswell', ...), or None."""
    return _text("openblas_get_corename")


def config():
    """OpenBLAS's build description (version, options, core), or None."""
    return _text("openblas_get_config")
