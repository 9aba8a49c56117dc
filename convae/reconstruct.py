"""Plot test digits above their reconstructions, as the post does, and print the errors.

Usage: ``convae-reconstruct`` (or ``python scripts/reconstruct.py``) with the
weights shipped in the package, or ``--weights`` a ``model.npz`` (or the run
directory holding it) from ``convae-train``. Digits: one of each class by
default, ``--indices 0,7,42``, or ``--n 12 --seed 3`` at random. Writes a PNG
(``--out``, default ``figures/reconstructions.png``) and prints the squared
error per image and its mean (MSE per pixel, pixels in [0, 1)).
"""
import argparse
import os
import sys

import numpy as np

from convae import data
from convae.files import ParameterFileError

# What the figure commands report as a one-line error rather than a traceback.
USER_ERRORS = (ValueError, data.DataError, ParameterFileError, OSError)


def pick_indices(labels, indices=None, n=None, seed=0):
    """Test-set indices to show: given ones, n random ones, or the first of each class."""
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(labels)]
        if bad:
            raise ValueError("index {} out of range: the test set has {} images "
                             "(0 to {})".format(bad[0], len(labels), len(labels) - 1))
        return list(indices)
    if n is not None:
        if not 0 < n <= len(labels):
            raise ValueError("--n must be between 1 and {}".format(len(labels)))
        return sorted(np.random.RandomState(seed).choice(len(labels), n,
                                                         replace=False).tolist())
    return [int(np.flatnonzero(labels == digit)[0]) for digit in np.unique(labels)]


def squared_errors(originals, reconstructions):
    """Mean squared error per image: (N, 1, 28, 28) x 2 -> (N,)."""
    diff = reconstructions.astype(np.float64) - originals.astype(np.float64)
    return (diff ** 2).mean(axis=(1, 2, 3))


def writable_path(path):
    """Create path's directory if needed; ValueError if it cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError("cannot create {}: {}".format(directory, e.strerror))
    if not os.access(directory, os.W_OK) or os.path.isdir(path):
        raise ValueError("cannot write {}".format(path))
    return path


def weights_path(path):
    """The model.npz for --weights: the file itself, or DIR/model.npz."""
    from convae.figures import SHIPPED_WEIGHTS
    if path is None:
        return SHIPPED_WEIGHTS
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    if not os.path.isfile(path):
        raise ValueError("no weights at {}".format(path))
    return path


def common_arguments(parser):
    """Flags shared by the figure commands: data and weights."""
    parser.add_argument("--weights", help="model.npz from convae-train, or its run "
                        "directory (default: the weights shipped with convae)")
    parser.add_argument("--data-dir", help="directory with the IDX files "
                        "(default: as convae-train)")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist")


def parse_indices(text):
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got " + text)


def main(argv=None):
    """The reconstruction command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="convae-reconstruct", description=__doc__.split("\n")[0])
    common_arguments(parser)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--indices", type=parse_indices, help="test-set indices, e.g. 0,7,42")
    choice.add_argument("--n", type=int, help="this many random test digits")
    parser.add_argument("--seed", type=int, default=0, help="seed for --n")
    parser.add_argument("--out", default=os.path.join("figures", "reconstructions.png"))
    args = parser.parse_args(argv)
    try:
        out = writable_path(args.out)
        weights = weights_path(args.weights)
        _, _, _, _, X_test, y_test = data.load_dataset(args.dataset, args.data_dir)
        indices = pick_indices(y_test, args.indices, args.n, args.seed)
        from convae.figures import Codec, reconstruction_figure, save_figure
        codec = Codec(weights)
        originals = X_test[indices]
        reconstructions = codec.reconstruct(originals)
        errors = squared_errors(originals, reconstructions)
        for index, error in zip(indices, errors):
            print("test image {:5d} (label {}): MSE {:.6f}".format(
                index, y_test[index], error))
        print("mean MSE over {} images: {:.6f}".format(len(indices), errors.mean()))
        titles = ["#{} ({})".format(i, y_test[i]) for i in indices]
        save_figure(reconstruction_figure(originals, reconstructions, titles), out)
        print("wrote " + out)
        return 0
    except USER_ERRORS as e:
        print("convae-reconstruct: error: {}".format(e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
