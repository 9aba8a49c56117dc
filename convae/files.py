"""Files convae writes and reads: atomic writes, Lasagne-style parameter files, shipped weights.

A parameter file is what Lasagne's examples save: ``np.savez(path, *values)``
with ``values = lasagne.layers.get_all_param_values(network)``, read back with
``np.load`` into ``arr_0 .. arr_n``.
"""
import os
import tempfile

import numpy as np

import lasagne


WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# The shipped runs (see the README): parameters of the default recipe, its
# per-epoch metrics, and parameters of a denoising run.
SHIPPED_WEIGHTS = os.path.join(WEIGHTS_DIR, "mnist.npz")
SHIPPED_METRICS = os.path.join(WEIGHTS_DIR, "mnist_metrics.jsonl")
SHIPPED_DENOISING_WEIGHTS = os.path.join(WEIGHTS_DIR, "mnist_denoising.npz")


class ParameterFileError(Exception):
    """A parameter file is missing, unreadable or for another network (one line)."""


def write_atomically(path, write, mode="wb"):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place.

    A reader never sees a half-written ``path``: it has the old content or the new.
    The file gets the permissions a plain ``open`` would give it (0666 less the
    umask), not mkstemp's private 0600.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path, arrays):
    """Write a dict of arrays to ``path`` (.npz) atomically."""
    write_atomically(path, lambda f: np.savez(f, **arrays))


def save_params(path, network):
    """Save the network's parameters as ``arr_0 .. arr_n``, atomically."""
    values = lasagne.layers.get_all_param_values(network)
    save_npz(path, {"arr_%d" % i: v for i, v in enumerate(values)})


def load_params(path, network):
    """Load ``arr_0 .. arr_n`` from ``path`` into ``network``.

    Raises ParameterFileError if the file is missing, unreadable or holds
    parameters of another architecture.
    """
    try:
        with np.load(path) as f:
            values = [f["arr_%d" % i] for i in range(len(f.files))]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ParameterFileError(
            "{}: not a readable parameter file ({})".format(path, e))
    shapes = [p.get_value().shape for p in lasagne.layers.get_all_params(network)]
    if [v.shape for v in values] != shapes:
        raise ParameterFileError(
            "{}: parameters of another architecture ({} arrays, expected {} "
            "shaped {})".format(path, len(values), len(shapes), shapes))
    lasagne.layers.set_all_param_values(network, values)
