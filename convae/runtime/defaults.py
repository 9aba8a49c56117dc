"""Theano defaults for convae, applied when convae is imported, before Theano is.

Theano 1.0.5 reads its configuration once, at import time, from the
``THEANO_FLAGS`` environment variable and the ``.theanorc`` files. convae
needs three things there:

* ``floatX=float32``: the post's network is single precision;
* ``openmp=True`` unless ``CONVAE_FAST=0`` (see ``convae.runtime.enable``)
  or no BLAS is linked: Theano 1.0.5's convolutions then call its NumPy-based
  BLAS from OpenMP's threads, without the interpreter's lock, and the
  process dies ("Fatal Python error: PyEval_SaveThread");
* ``blas.ldflags``: without it Theano 1.0.5 asks numpy's distutils for a BLAS,
  which fails on the numpy it has to run with on CPython 3.11, and without a
  linked BLAS every dot product and convolution takes a slow path. convae links
  OpenBLAS from Debian's ``libopenblas-dev`` (see the README for why).

This is the only place where convae sets Theano defaults. A value the user set
in ``THEANO_FLAGS`` or in a ``.theanorc`` file always wins, and if Theano was
imported before convae, its configuration is left exactly as it is. The one
other setting that must precede loading, OpenBLAS's core, is made here too.
"""
import configparser
import contextlib
import importlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import warnings

from convae.runtime.openblas import choose_core, find_openblas

MISSING_BLAS_HINT = (
    "convae: no linkable OpenBLAS found (libopenblas.so); Theano will fall back "
    "to slow NumPy-based BLAS. Install it with: apt-get install libopenblas-dev"
)


# How a SettingError about Theano's own settings begins.
SETTINGS = "Theano's settings (THEANO_FLAGS, .theanorc): "
# Theano's settings that ask for its GPU backend (and with it for pygpu).
GPU_SETTINGS = ("device", "init_gpu_device", "contexts")


class SettingError(ValueError):
    """An environment setting Theano cannot be loaded with; the message is one line."""


def check_environment():
    """SettingError if Theano would stop at import on the environment.

    Theano 1.0.5 takes ``OMP_NUM_THREADS`` as one integer and raises a
    TypeError (a traceback out of ``import convae``, even for ``--help``) on
    anything else, such as ``abc`` or OpenMP's nested ``4,2``; OpenMP takes
    1 or more, and says "Invalid value" in the middle of a run for ``0``.
    """
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and not (re.fullmatch(r"\s*[0-9]+\s*", threads) and int(threads) >= 1):
        raise SettingError("OMP_NUM_THREADS={!r}: Theano and OpenMP take one whole number "
                           "of threads there, 1 or more, such as 2 (or leave it "
                           "unset)".format(threads))


def load_theano(user):
    """Import Theano with the settings as they are (``user``: those the user
    set, as ``user_settings`` reads them).

    SettingError, in one line, where Theano refuses them at import (a
    ValueError such as 'Invalid value ("float8") for configuration variable
    "floatX"', or a compile directory it cannot create), or where they would
    fail at the first compiled function or kill the process at the first
    convolution (see ``check_blas``).
    """
    if "theano" in sys.modules:
        return
    check_environment()
    gpu = gpu_without_backend(user)
    try:
        with silenced("theano.gpuarray") if gpu else contextlib.nullcontext():
            theano = importlib.import_module("theano")
    except ValueError as e:
        said = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        raise SettingError(SETTINGS + (said.splitlines()[0] if said else type(e).__name__))
    if gpu:
        warnings.warn(SETTINGS + "{}: Theano's GPU backend needs pygpu, which is not "
                      "installed; convae runs on the CPU".format(gpu),
                      RuntimeWarning, stacklevel=3)
    check_modes(theano.config)
    check_blas(theano.config)


def gpu_without_backend(user):
    """The ``user``'s setting that asks for a GPU ('device=cuda', as in many a
    Lasagne user's .theanorc) where pygpu, Theano's GPU backend, is not
    installed; None otherwise. Theano then runs on the CPU anyway, after a
    logged 'ERROR (theano.gpuarray)' and a stray 'NoneType: None'."""
    for key in GPU_SETTINGS:
        value = user.get(key, "").strip()
        if value.startswith(("cuda", "opencl")) or (key == "contexts" and value):
            if importlib.util.find_spec("pygpu") is not None:
                return None  # the backend is there: the GPU is Theano's to use
            return "{}={}".format(key, value)
    return None


@contextlib.contextmanager
def silenced(name):
    """Within the block, the logger ``name`` says nothing."""
    logger = logging.getLogger(name)
    before, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = before


def check_modes(config):
    """SettingError for a setting of Theano's ``config`` under which the post's
    network cannot run, where Theano would fail only at the first function,
    with a page of traceback:

    * a ``floatX`` other than float32 and float64: with float16, Lasagne's
      updates come out float32 and Theano refuses them;
    * no C++ compiler (``cxx`` empty): convae's ops, and Theano 1.0.5's
      convolutions, exist only as C;
    * Theano's Python linker (``mode=FAST_COMPILE``, or ``linker=py``), for
      the same reason;
    * ``mode=DebugMode``: it runs Theano's Python pooling too, which indexes
      arrays in a way numpy 1.23 refuses.
    """
    if config.floatX not in ("float32", "float64"):
        raise SettingError(SETTINGS + "floatX={}: convae's network trains in float32 "
                           "(or float64)".format(config.floatX))
    if not config.cxx:
        raise SettingError(SETTINGS + "no C++ compiler (cxx is empty): Theano compiles "
                           "this network's ops with one; install g++ (apt-get install g++)")
    python_linker = ("mode=FAST_COMPILE" if config.mode == "FAST_COMPILE"
                     else "linker=py" if config.mode == "Mode" and config.linker == "py"
                     else None)
    if python_linker:
        raise SettingError(SETTINGS + "{} runs Python code, which Theano 1.0.5's "
                           "convolutions and convae's ops do not have; "
                           "optimizer=fast_compile compiles fast too".format(python_linker))
    if config.mode in ("DebugMode", "DEBUG_MODE"):
        raise SettingError(SETTINGS + "mode={} runs Theano 1.0.5's Python pooling, which "
                           "fails on numpy 1.23; NanGuardMode or optimizer=fast_compile "
                           "work".format(config.mode))


def check_blas(config):
    """SettingError for a BLAS setting of Theano's ``config`` that cannot work.

    * ``openmp`` on with an empty ``blas.ldflags`` (convae leaves OpenMP off
      then; see the module docstring): the first convolution would kill the
      process;
    * a ``blas.ldflags`` other than convae's own (so the user's) that the
      compiler cannot link with, such as a library that is not installed:
      every compiled function would fail with a page of compiler output.
      convae's own is not linked here: that would cost every start 35-65 ms.
    """
    ldflags = config.blas.ldflags.strip()
    if config.openmp and not ldflags:
        raise SettingError(SETTINGS + "openmp=True with no BLAS in blas.ldflags kills "
                           "Theano 1.0.5 at its first convolution; link one (apt-get "
                           "install libopenblas-dev) or leave openmp unset")
    if ldflags and ldflags != openblas_ldflags():  # check_modes has refused an empty cxx
        problem = link_problem(config.cxx, ldflags)
        if problem:
            raise SettingError(SETTINGS + "blas.ldflags={!r} does not link: {}".format(
                ldflags, problem))


def link_problem(cxx, ldflags):
    """The linker's first complaint (one line) about linking a shared library
    with ``ldflags`` by the compiler ``cxx``, as Theano links its modules, or
    None if it links."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            done = subprocess.run([cxx, "-shared", "-x", "c++", os.devnull, "-o",
                                   os.path.join(directory, "probe.so")] + ldflags.split(),
                                  capture_output=True, text=True)
        except OSError:  # no such compiler: Theano says so itself
            return None
    if done.returncode == 0:
        return None
    said = [line for line in done.stderr.splitlines() if line.strip()]
    return re.sub(r"^\S*ld: ", "", said[0]) if said else "exit status {}".format(
        done.returncode)


def fast_path_enabled():
    """False if the user set ``CONVAE_FAST=0`` to turn convae's fast path off;
    True if it is 1, empty or unset. SettingError for anything else: ``false``
    or ``off`` would leave it on unnoticed."""
    value = os.environ.get("CONVAE_FAST", "")
    if value not in ("", "0", "1"):
        raise SettingError("CONVAE_FAST={!r}: give 0 to switch convae's fast path off, or 1 "
                           "(the default) to leave it on".format(value))
    return value != "0"


def default_flags(user):
    """The Theano flags convae wants, as a dict of 'section.option' -> value,
    given those the ``user`` set (see ``user_settings``).

    ``openmp=True`` lets the convolutions use every core; it is part of
    convae's fast path and left out when ``CONVAE_FAST=0``, or when no BLAS
    will be linked (see the module docstring). Theano reads it when an op is
    made, so it is set here, before Theano is imported.
    """
    ldflags = openblas_ldflags()
    flags = {"floatX": "float32", "blas.ldflags": ldflags}
    if fast_path_enabled() and user.get("blas.ldflags", ldflags).strip():
        flags["openmp"] = "True"
    return flags


def openblas_ldflags():
    """convae's ``blas.ldflags``: the linkable OpenBLAS found, or '' if none is."""
    blas = find_openblas()
    return "-L{} -lopenblas".format(os.path.dirname(blas)) if blas else ""


def user_settings():
    """Flags the user set, {'section.option': value}, from THEANO_FLAGS and
    the .theanorc files (THEANO_FLAGS wins, as in Theano)."""
    files = [os.path.expanduser(name) for name in
             os.environ.get("THEANORC", "~/.theanorc").split(os.pathsep)]
    rc = configparser.RawConfigParser()
    rc.read(files)
    settings = {}
    for section in rc.sections():
        for option in rc.options(section):
            key = option if section == "global" else "{}.{}".format(section, option)
            settings[key] = rc.get(section, option)
    for item in os.environ.get("THEANO_FLAGS", "").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            settings[key.strip().lower()] = value
    # THEANO_FLAGS may also name global options as 'global.floatX'.
    return {key[len("global."):] if key.startswith("global.") else key: value
            for key, value in settings.items()}


def missed_defaults(config, user):
    """convae's defaults, of those the ``user`` left unset, that a Theano
    imported first (its ``config``) runs without: ['floatX=float64 (convae's:
    float32)', ...]."""
    missed = []
    for key, wanted in default_flags(user).items():
        if key.lower() in user:
            continue
        value = config
        for name in key.split("."):
            value = getattr(value, name)
        if str(value) != wanted:
            missed.append("{}={} (convae's: {})".format(key, value, wanted))
    return missed


def configure(user):
    """Add convae's defaults to THEANO_FLAGS for any flag the ``user`` left
    unset (``user``: the flags the user set, as ``user_settings`` reads them).

    Once Theano has been imported its configuration is fixed, and belongs to
    whoever imported it: then it only warns of the defaults missed. First, OpenBLAS is
    told its core where it would run a generic one (see
    ``convae.runtime.openblas.choose_core``), if it is not loaded yet.
    """
    choose_core()
    if "theano" in sys.modules:
        missed = missed_defaults(sys.modules["theano"].config, user)
        if missed:
            warnings.warn("Theano was imported before convae, so convae's defaults are "
                          "not in force: {}. Import convae before theano and lasagne, in a "
                          "fresh process (or a restarted kernel)".format(", ".join(missed)),
                          RuntimeWarning, stacklevel=3)
        return
    additions = ["{}={}".format(key, value)
                 for key, value in default_flags(user).items()
                 if key.lower() not in user]
    if "blas.ldflags" not in user and not find_openblas():
        warnings.warn(MISSING_BLAS_HINT, RuntimeWarning, stacklevel=2)
    if additions:
        current = os.environ.get("THEANO_FLAGS", "")
        os.environ["THEANO_FLAGS"] = ",".join(
            part for part in (current, ",".join(additions)) if part)
