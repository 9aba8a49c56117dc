"""Plot test digits above their reconstructions, as the post does, and print the errors.

Usage: ``convae-reconstruct`` (or ``python scripts/reconstruct.py``) with the
weights shipped in the package, or ``--weights`` a ``model.npz`` (or the run
directory holding it) from ``convae-train``. Digits: one of each class by
default, ``--indices 0,7,42``, or ``--n 12 --seed 3`` at random. Writes the
figure to ``--out`` (default ``figures/reconstructions.png``, in the run
directory for ``--weights``; its extension picks the format: .png, .pdf,
.svg, ...) and prints the squared error per image and its mean (MSE per
pixel, pixels in [0, 1)).
"""
import argparse
import os
import sys

import numpy as np

import convae
from convae import cli, data
from convae.codec import Codec
from convae.figures import (MAX_PAIRS, RECONSTRUCTIONS, captions, figure_format,
                            pick_indices, reconstruction_figure, save_figure)


def squared_errors(originals, reconstructions):
    """Mean squared error per image: (N, 1, 28, 28) x 2 -> (N,)."""
    diff = reconstructions.astype(np.float64) - originals.astype(np.float64)
    return (diff ** 2).mean(axis=(1, 2, 3))


def parse_indices(text):
    """argparse type: comma-separated test-set indices, at least one.

    An empty entry ("1,,2") is refused: it is more likely a lost digit than a
    wish for two pairs."""
    try:
        indices = [cli.plain_number(part, int) for part in text.split(",")]
    except ValueError:
        indices = []
    if not indices:
        raise argparse.ArgumentTypeError(
            "expected comma-separated integers such as 0,7,42, got {!r}".format(text))
    return indices


def reconstruct(args):
    """Plot and print what ``args`` asks for; returns 0."""
    convae.runtime.enable()
    out = args.out or os.path.join(cli.figures_dir(args.weights), RECONSTRUCTIONS)
    figure_format(out)  # a name it cannot be written as: before any work
    out = cli.writable_path(out)
    codec = Codec(cli.weights_path(args.weights))  # before the data, which may need a download
    shown = data.labelled_test_set(cli.dataset_to_show(args.dataset, args.weights),
                                   args.data_dir)
    indices = pick_indices(shown.labels, args.indices, args.n, args.seed or 0)
    originals = shown.images[indices]
    reconstructions = codec.reconstruct(originals)
    save_figure(reconstruction_figure(originals, reconstructions,
                                      captions(indices, shown.labels, shown.classes)), out)
    errors = squared_errors(originals, reconstructions)  # said after: `| head -1` loses no figure
    for index, error in zip(indices, errors):
        cli.say("test image {:5d} (label {}): MSE {:.6f}".format(
            index, shown.classes[shown.labels[index]], error))
    cli.say("mean MSE over {} image{}: {:.6f}".format(
        len(indices), "" if len(indices) == 1 else "s", errors.mean()))
    cli.say("wrote " + out)
    return 0


def main(argv=None):
    """The reconstruction command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="convae-reconstruct", description=__doc__.split("\n")[0])
    cli.common_arguments(parser)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--indices", type=parse_indices, help="test-set indices, e.g. 0,7,42")
    choice.add_argument("--n", type=cli.positive_int,
                        help="this many random test digits (at most {})".format(MAX_PAIRS))
    parser.add_argument("--seed", type=cli.seed, help="seed for --n (default 0)")
    parser.add_argument("--out", type=cli.nonempty_path,
                        help="the figure; .png, .pdf, .svg, ... as its name ends "
                        "(default: figures/{0} for the shipped weights, else "
                        "figures/{0} in the run directory of --weights)".format(
                            RECONSTRUCTIONS))
    args = parser.parse_args(argv)
    if args.seed is not None and args.n is None:  # it would pick nothing: say so
        parser.error("--seed picks the --n random digits; give --n too")
    return cli.run_command("convae-reconstruct", lambda: reconstruct(args))


if __name__ == "__main__":
    sys.exit(main())
