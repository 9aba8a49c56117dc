"""Theano defaults for convae, applied when convae is imported, before Theano is.

Theano 1.0.5 reads its configuration once, at import time, from the
``THEANO_FLAGS`` environment variable and the ``.theanorc`` files. convae
needs three things there:

* ``floatX=float32``: the post's network is single precision;
* ``openmp=True`` unless ``CONVAE_FAST=0`` (see ``convae.runtime.enable``);
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
import importlib
import os
import sys
import warnings

from convae.runtime.openblas import choose_core, find_openblas

MISSING_BLAS_HINT = (
    "convae: no linkable OpenBLAS found (libopenblas.so); Theano will fall back "
    "to slow NumPy-based BLAS. Install it with: apt-get install libopenblas-dev"
)


class SettingError(ValueError):
    """An environment setting Theano cannot be loaded with; the message is one line."""


def check_environment():
    """SettingError if Theano would stop at import on the environment.

    Theano 1.0.5 takes ``OMP_NUM_THREADS`` as one integer and raises a
    TypeError (a traceback out of ``import convae``, even for ``--help``) on
    anything else, such as ``abc`` or OpenMP's nested ``4,2``.
    """
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        try:
            int(threads)
        except ValueError:
            raise SettingError("OMP_NUM_THREADS={!r}: Theano takes one whole number of "
                               "threads there, such as 2 (or leave it unset)".format(threads))


def load_theano():
    """Import Theano with the settings as they are.

    SettingError, in one line, where Theano refuses them at import (a
    ValueError such as 'Invalid value ("float8") for configuration variable
    "floatX"', or a compile directory it cannot create).
    """
    if "theano" in sys.modules:
        return
    check_environment()
    try:
        importlib.import_module("theano")
    except ValueError as e:
        said = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        raise SettingError("Theano's settings (THEANO_FLAGS, .theanorc): {}".format(
            said.splitlines()[0] if said else type(e).__name__))


def fast_path_enabled():
    """False if the user set ``CONVAE_FAST=0`` to turn convae's fast path off."""
    return os.environ.get("CONVAE_FAST", "1") != "0"


def default_flags():
    """The Theano flags convae wants, as a dict of 'section.option' -> value.

    ``openmp=True`` lets the convolutions use every core; it is part of
    convae's fast path and left out when ``CONVAE_FAST=0``. Theano reads it
    when an op is made, so it is set here, before Theano is imported.
    """
    blas = find_openblas()
    ldflags = "-L{} -lopenblas".format(os.path.dirname(blas)) if blas else ""
    flags = {"floatX": "float32", "blas.ldflags": ldflags}
    if fast_path_enabled():
        flags["openmp"] = "True"
    return flags


def _user_settings():
    """Flags the user set: THEANO_FLAGS keys and options of the .theanorc files."""
    flags = os.environ.get("THEANO_FLAGS", "")
    keys = {item.split("=", 1)[0].strip().lower()
            for item in flags.split(",") if "=" in item}
    files = [os.path.expanduser(name) for name in
             os.environ.get("THEANORC", "~/.theanorc").split(os.pathsep)]
    rc = configparser.RawConfigParser()
    rc.read(files)
    for section in rc.sections():
        for option in rc.options(section):
            keys.add(option if section == "global"
                     else "{}.{}".format(section, option))
    # THEANO_FLAGS may also name global options as 'global.floatX'.
    return {key[len("global."):] if key.startswith("global.") else key
            for key in keys}


def configure():
    """Add convae's defaults to THEANO_FLAGS for any flag the user left unset.

    Does nothing once Theano has been imported: its configuration is then
    already fixed, and belongs to whoever imported it. First, OpenBLAS is
    told its core where it would run a generic one (see
    ``convae.runtime.openblas.choose_core``), if it is not loaded yet.
    """
    choose_core()
    if "theano" in sys.modules:
        return
    user = _user_settings()
    additions = ["{}={}".format(key, value)
                 for key, value in default_flags().items()
                 if key.lower() not in user]
    if "blas.ldflags" not in user and not find_openblas():
        warnings.warn(MISSING_BLAS_HINT, RuntimeWarning, stacklevel=2)
    if additions:
        current = os.environ.get("THEANO_FLAGS", "")
        os.environ["THEANO_FLAGS"] = ",".join(
            part for part in (current, ",".join(additions)) if part)
