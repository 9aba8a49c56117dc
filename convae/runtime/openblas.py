"""The OpenBLAS that Theano links: where it is, its core and its thread count.

Theano compiles its dot products and convae's BLAS-path convolutions against
``blas.ldflags``; convae points that at Debian's ``libopenblas-dev`` (see
``convae.runtime.defaults``). This module loads the same library with
ctypes, so that a setting made here is the one Theano's compiled code sees.

Debian bookworm's OpenBLAS 0.3.21 does not know CPUs newer than itself (an
Intel Xeon of family 6, model 207, say): it falls back to its generic
'Prescott' core and multiplies matrices about 4x slower than it can.
``choose_core`` tells it the right core before it loads, unless the user
set ``OPENBLAS_CORETYPE``.
"""
import ctypes
import functools
import glob
import os
import subprocess
import sys

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


@functools.lru_cache(maxsize=None)
def library():
    """The OpenBLAS library loaded in this process (ctypes.CDLL), or None.

    Looked up once per process: finding and opening it again on every call
    cost more than setting a thread count, which the benchmark's sgemm step
    does twice per matrix product.
    """
    path = find_openblas()
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def _function(name):
    """OpenBLAS's C function ``name`` (a ctypes function), or None if there is none."""
    lib = library()
    return getattr(lib, name) if lib is not None and hasattr(lib, name) else None


def set_threads(threads):
    """Make OpenBLAS use ``threads`` threads in this process; False if there is no OpenBLAS."""
    function = _function("openblas_set_num_threads")
    if function is None:
        return False
    function(int(threads))
    return True


def threads():
    """The number of threads OpenBLAS uses in this process, or None if there is no OpenBLAS."""
    function = _function("openblas_get_num_threads")
    return None if function is None else function()


def _text(name):
    """What OpenBLAS's function ``name`` (a char* query) answers, or None."""
    query = _function(name)
    if query is None:
        return None
    query.restype = ctypes.c_char_p
    return query().decode()


def core_name():
    """The name of the OpenBLAS core running in this process ('Haswell', ...), or None."""
    return _text("openblas_get_corename")


def config():
    """OpenBLAS's build description (version, options, core), or None."""
    return _text("openblas_get_config")


# OpenBLAS cores whose kernels use AVX2 and FMA (Haswell, Zen) or AVX-512
# (SkylakeX and its successors): any other core is a generic one.
AVX2_CORES = ("Haswell", "Zen")
AVX512_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")
AVX2_FLAGS = frozenset(("avx2", "fma"))
AVX512_FLAGS = frozenset(("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"))


def cpu_flags():
    """The feature flags of this machine's CPU (``/proc/cpuinfo``), as a set."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def core_to_force(flags, running_core):
    """The core OpenBLAS should be told to use, or None to leave it as it chose.

    flags: the CPU's feature flags; running_core: the core OpenBLAS picks by
    itself. Only where it picked a generic core (an OpenBLAS older than the
    CPU falls back to 'Prescott') although the CPU has AVX-512 (SkylakeX's
    kernels) or AVX2 with FMA (Haswell's).
    """
    if running_core is None or running_core in AVX2_CORES + AVX512_CORES:
        return None
    if AVX512_FLAGS <= flags:
        return "SkylakeX"
    if AVX2_FLAGS <= flags:
        return "Haswell"
    return None


def loaded(path):
    """True if the library at ``path`` is loaded in this process already."""
    try:
        with open("/proc/self/maps") as f:
            return os.path.realpath(path) in f.read()
    except OSError:
        return False


PROBE = ("import ctypes, sys; q = ctypes.CDLL(sys.argv[1]).openblas_get_corename; "
         "q.restype = ctypes.c_char_p; print(q().decode())")


def probe_core(path):
    """The core the OpenBLAS at ``path`` picks by itself on this CPU, asked in a
    fresh process (a library, once loaded, keeps its core); None if unknown."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, path], env=env,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return done.stdout.strip()


def coretype_problem(asked, running):
    """A warning, in one line, where the user's OPENBLAS_CORETYPE ``asked`` is
    not the core OpenBLAS runs (``running``), else None.

    OpenBLAS takes a name it has no core for (a typo, or an empty value)
    without a word and runs another: 0.3.21 runs 'Cooperlake' for 'Foo' on
    the Xeon of family 6, model 207, whose own choice convae would make
    'SkylakeX'. Names are matched as OpenBLAS matches them, in any case.
    """
    if asked is None or running is None or asked.strip().lower() == running.lower():
        return None
    return ("OPENBLAS_CORETYPE={!r}: OpenBLAS runs its {} core instead (no core of "
            "that name in this OpenBLAS); unset it to let convae choose".format(asked, running))


def choose_core():
    """Set OPENBLAS_CORETYPE before OpenBLAS loads where it would run a generic core.

    For this process and every process it starts. A value the user set is
    always kept. Returns the core set here, or None.
    """
    path = find_openblas()
    if "OPENBLAS_CORETYPE" in os.environ or path is None or loaded(path):
        return None
    core = core_to_force(cpu_flags(), probe_core(path))
    if core is not None:
        os.environ["OPENBLAS_CORETYPE"] = core
    return core
