"""The runtime that makes Theano 1.0.5 run the post's code today, and run it fast.

Two steps, one automatic and one explicit:

* ``prepare()``, run by ``import convae``: what must happen before Theano and
  Lasagne are first imported, and nothing else. It sets Theano's defaults
  (float32, a linked OpenBLAS, OpenMP; see ``defaults``), each only if the
  user did not set it, lets Theano's Python convolutions find today's
  scipy.signal (``scipy_signal``), and makes ``import lasagne`` work with
  Lasagne master's layers on PyPI's Lasagne 0.1 (see ``lasagne_backport``).
* ``enable()``, called by convae's commands and by a notebook user in one
  line (``convae.runtime.enable()``): the fast path. It registers the graph
  rewrites that swap in convae's C ops (``rewrites``, ``corr``,
  ``contiguous``, ``mrg``, ``dot``), makes Theano's compile cache hit across processes
  (``module_cache``), runs OpenBLAS on one thread (OpenMP already splits the
  convolutions over the cores, and OpenBLAS's own threads fought its threads
  for them), warns where an OPENBLAS_CORETYPE you set is not the core
  OpenBLAS runs, keeps freed per-batch memory in the heap (``malloc``), and lets
  ``convae.train`` keep compiled functions for the next process
  (``function_cache``). Where more than one convolution kernel can run a
  layer, the fastest on this machine is measured once and kept
  (``kernel_choice``). None of it changes what the network computes.

``CONVAE_FAST=0`` in the environment switches the fast path off, for the
commands and for ``enable()`` alike.
"""
import importlib
import os
import sys
import warnings

from convae.runtime import defaults, scipy_signal

_enabled = False


def prepare():
    """Set Theano's defaults and make ``import lasagne`` work (see the module
    docstring). SettingError where this Python lacks convae's requirements
    (``python3 scripts/train.py`` with the system's Python, not .venv's)."""
    user = defaults.user_settings()
    defaults.configure(user)
    try:
        defaults.load_theano(user)
        scipy_signal.fix()
        importlib.import_module("convae.runtime.lasagne_backport")  # its import is its effect
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "convae":
            raise
        raise defaults.SettingError(
            "{} is not installed for this Python ({}): `bash scripts/setup.sh` installs "
            "convae's requirements into .venv; run .venv/bin/python, or .venv/bin/convae-train "
            "and the other commands".format(e.name, sys.executable)) from None


def enable():
    """Switch on convae's fast path in this process; returns whether it is on.

    A no-op returning False if ``CONVAE_FAST=0``; calling it again does
    nothing more. Call it before compiling the functions that should use it.
    """
    global _enabled
    if _enabled or not defaults.fast_path_enabled():
        return _enabled
    from convae.runtime import malloc, module_cache, openblas, rewrites
    malloc.keep_freed_memory()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        openblas.set_threads(1)
    problem = openblas.coretype_problem(os.environ.get("OPENBLAS_CORETYPE"),
                                        openblas.core_name())
    if problem:
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    module_cache.fix()
    rewrites.register()
    _enabled = True
    return True


def enabled():
    """True once ``enable()`` has switched the fast path on in this process."""
    return _enabled
