"""Keep compiled, optimised Theano functions for the next process.

Theano caches the C code it compiles, but every new process still runs its
graph optimiser (about 3 s of a warm start here, for the post's three
functions) and probes the compiler again. Theano can pickle a compiled
function together with its shared variables and does not optimise it again
when unpickled (the Theano flag ``reoptimize_unpickled_function`` is off by
default), so convae stores the network and its functions, pickled right
after compiling, in Theano's compile directory (``theano.config.compiledir``;
``theano-cache purge`` deletes it), under a key made of everything that
shapes the optimised graph: the training settings that enter it, all of convae's
source (.py, .c and .h files, subfolders included), the Theano and Lasagne
versions, the Theano flags and the CPU. With
them go three things Theano works out once per process: g++'s flags for
this CPU, whether g++ supports OpenMP, and the small function that seeds
random streams (``rng_mrg.multMatVect``; compiling it took 0.7 s).

The functions are pickled right after compiling, before their first call,
so a cached entry holds the run's initial state (weights, zeroed optimiser
state, random generator states), which is why the seed is part of the key;
Lasagne's random generator, as building left it, is kept and restored too.
"""
import hashlib
import os
import pickle
import sys

import numpy as np
import theano
from theano.gof import OpenMPOp
from theano.gof.cmodule import GCC_compiler
from theano.sandbox import rng_mrg

import lasagne
from convae.files import write_atomically

# Pickling a Theano graph recurses once per node along its longest path.
RECURSION_LIMIT = 20000
# Entries (about 7 MB each) kept: the most recently used.
KEEP = 8
# The source that shapes the graphs and their compiled code: all of convae.
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_SUFFIXES = (".py", ".c", ".h")


def cpu_description():
    """The model name and feature flags of this machine's CPU, as text ('' if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines if line.startswith(("model name", "flags")))


def source_files():
    """Every .py, .c and .h file of convae, subfolders included, in a fixed order."""
    found = []
    for directory, subdirectories, names in os.walk(SOURCE_DIR):
        subdirectories.sort()
        found.extend(os.path.join(directory, name) for name in sorted(names)
                     if name.endswith(SOURCE_SUFFIXES))
    return found


def cache_key(settings):
    """A hex digest of ``settings`` (a dict of JSON-able values) and of everything
    else that shapes the optimised graph and its compiled code."""
    digest = hashlib.sha256()
    for path in source_files():
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, SOURCE_DIR).encode() + b"\0" + f.read())
    config = theano.config
    context = [sorted(settings.items()), sys.version, np.__version__,
               theano.__version__, lasagne.__version__, lasagne.__file__,
               config.floatX, config.mode, config.optimizer, config.openmp,
               config.blas.ldflags, config.optimizer_including,
               config.optimizer_excluding, config.cxx, config.gcc.cxxflags,
               cpu_description()]
    digest.update(repr(context).encode())
    return digest.hexdigest()


def cache_path(key):
    """Where the functions for ``key`` are kept."""
    return os.path.join(theano.config.compiledir, "convae-functions", key + ".pkl")


def _with_recursion_limit(action):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, RECURSION_LIMIT))
    try:
        return action()
    finally:
        sys.setrecursionlimit(old)


def save(key, objects):
    """Pickle ``objects`` (anything holding compiled functions, not yet called)
    with Lasagne's random generator and this process's compiler probes; best
    effort: a cache that cannot be written is no error."""
    def write(f):
        # The probes first: unpickling a function compiles it, which needs them.
        pickle.dump((GCC_compiler.march_flags, OpenMPOp.gxx_support_openmp), f)
        pickle.dump((objects, lasagne.random.get_rng(), rng_mrg.multMatVect.dot_modulo),
                    f, pickle.HIGHEST_PROTOCOL)

    path = cache_path(key)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _with_recursion_limit(lambda: write_atomically(path, write))
        prune(os.path.dirname(path))
    except (OSError, pickle.PicklingError, RecursionError, TypeError, AttributeError):
        pass


def prune(directory):
    """Delete all but the KEEP most recently used entries in ``directory``."""
    entries = sorted((os.path.join(directory, name) for name in os.listdir(directory)
                      if name.endswith(".pkl")), key=os.path.getmtime, reverse=True)
    for path in entries[KEEP:]:
        os.remove(path)


def load(key):
    """The ``objects`` ``save`` kept under ``key``, or None. Restores Lasagne's
    random generator as it was when they were saved, and puts the compiler
    probes in place where this process has not made its own."""
    path = cache_path(key)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            march_flags, openmp = pickle.load(f)
            if GCC_compiler.march_flags is None:
                GCC_compiler.march_flags = march_flags
            if OpenMPOp.gxx_support_openmp is None:
                OpenMPOp.gxx_support_openmp = openmp
            objects, rng, dot_modulo = _with_recursion_limit(lambda: pickle.load(f))
    except Exception:  # a stale or damaged cache entry of any kind is a miss
        return None
    if rng_mrg.multMatVect.dot_modulo is None:
        rng_mrg.multMatVect.dot_modulo = dot_modulo
    lasagne.random.set_rng(rng)
    try:
        os.utime(path)  # used now: the last to be pruned
    except OSError:
        pass
    return objects
