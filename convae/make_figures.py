"""Regenerate the six figures of figures/ from the shipped (or given) weights.

Usage: ``convae-figures`` (or ``python scripts/make_figures.py``). Writes
reconstructions.png, learning_curves.png, filters.png, code_pca.png,
interpolation.png and denoising.png into ``--out-dir`` (default ``figures``;
for ``--weights``, ``figures`` in the run directory, beside its model.npz).
"""
import argparse
import os
import sys
from typing import NamedTuple

import numpy as np

import convae
from convae import cli, data, figures
from convae.codec import Codec
from convae.files import METRICS_FILE, SHIPPED_DENOISING_WEIGHTS, SHIPPED_METRICS


def noisy_copies(images, noise="gaussian", level=0.3, seed=0):
    """Copies of images (N, 1, 28, 28) in [0, 1], corrupted as ``convae-train
    --noise`` corrupts its inputs: 'gaussian' adds N(0, level^2) and clips to
    [0, 1]; 'mask' zeroes each pixel with probability ``level``, a number in
    [0, 1) as training's (1.5 masked every pixel, NaN made NaN images)."""
    if not cli.fraction.accepts(level):
        raise ValueError("level={!r}, not {}".format(level, cli.fraction.wanted))
    rng = np.random.RandomState(seed)
    if noise == "mask":
        return np.where(rng.uniform(size=images.shape) < level, 0, images).astype(np.float32)
    if noise != "gaussian":  # "Mask" was Gaussian noise, without a word
        raise ValueError("noise={!r}, not one of gaussian, mask".format(noise))
    return np.clip(images + rng.normal(0, level, images.shape), 0, 1).astype(np.float32)


class Denoising(NamedTuple):
    """What the denoising figure shows: the run's network, the test set it
    trained on and its noise."""
    codec: Codec
    shown: data.LabelledImages
    noise: str  # 'gaussian' or 'mask'
    level: float


def denoising_run(weights, dataset):
    """(dataset, noise, level) of the run behind --denoising-weights
    ``weights``, from one read of its checkpoint: ``dataset`` (--dataset) if
    given, else the one it trained on; the noise and level it trained with,
    the shipped denoiser's ('gaussian', 0.3) where there is no checkpoint.
    PathError for a run trained without noise."""
    settings = cli.run_settings(weights, "the denoising figure takes its noise from it")
    if settings.get("noise") == "none":
        raise cli.PathError("--denoising-weights {}: that run trained without --noise, so "
                            "it never learned to denoise; give a --noise gaussian or "
                            "--noise mask run".format(weights))
    return (dataset or cli.trained_on(settings), settings.get("noise", "gaussian"),
            settings.get("noise_level", 0.3))


def run_metrics(weights):
    """The metrics.jsonl of the run whose ``--weights`` these are: the shipped
    run's for None, else the one beside the model.npz (or in its run
    directory). PathError if there is none: another run's learning curves
    beside these weights' figures would pass for theirs."""
    if cli.shipped(weights):
        return SHIPPED_METRICS
    path = cli.run_file(weights, METRICS_FILE)
    if not os.path.isfile(path):
        raise cli.PathError("--weights {}: no {} beside it for the learning curves; give "
                            "--metrics".format(weights, METRICS_FILE))
    return path


def make_all(codec, shown, metrics, denoising, out_dir):
    """Write all figures into out_dir; returns the list of paths written.

    shown: the test set (data.LabelledImages) whose digits the figures show;
    denoising: the denoising run, with the test set it trained on.
    """
    written = []

    def save(fig, name):
        path = cli.writable_path(os.path.join(out_dir, name))
        figures.save_figure(fig, path)
        written.append(path)

    X_test, y_test = shown.images, shown.labels
    picked = figures.pick_indices(y_test)
    save(figures.reconstruction_figure(
        X_test[picked], codec.reconstruct(X_test[picked]),
        figures.captions(picked, y_test, shown.classes)), figures.RECONSTRUCTIONS)
    save(figures.learning_curves_figure(metrics), "learning_curves.png")
    save(figures.filters_figure(codec.first_layer_filters()), "filters.png")
    codes = codec.encode(X_test)
    save(figures.code_pca_figure(codes, y_test, shown.classes), "code_pca.png")
    first, last = picked[4], picked[9]
    path = figures.interpolate_codes(codes[first], codes[last], 8)
    save(figures.interpolation_figure(codec.decode(path), X_test[first],
                                      X_test[last]), "interpolation.png")
    clean = denoising.shown.images[figures.pick_indices(denoising.shown.labels)]
    noisy = noisy_copies(clean, denoising.noise, denoising.level)
    save(figures.denoising_figure(noisy, denoising.codec.reconstruct(noisy), clean),
         "denoising.png")
    return written


def make_figures(args):
    """Write every figure as ``args`` asks; returns 0."""
    convae.runtime.enable()
    out_dir = args.out_dir or cli.figures_dir(args.weights)
    cli.writable_directory(out_dir, "--out-dir")  # before any work, not after it
    # Every file the user named is read before the data, which may need a download.
    codec = Codec(cli.weights_path(args.weights))
    denoiser = Codec(cli.weights_path(args.denoising_weights))
    denoiser_dataset, noise, level = denoising_run(args.denoising_weights, args.dataset)
    metrics = figures.read_metrics(args.metrics or run_metrics(args.weights))
    dataset = cli.dataset_to_show(args.dataset, args.weights)
    shown = data.labelled_test_set(dataset, args.data_dir)
    # The denoising run's figure shows the dataset that run trained on (from
    # where convae-train finds it, if --data-dir holds the other one).
    denoiser_shown = (shown if denoiser_dataset == dataset
                      else data.labelled_test_set(denoiser_dataset))
    denoising = Denoising(denoiser, denoiser_shown, noise, level)
    for path in make_all(codec, shown, metrics, denoising, out_dir):
        cli.say("wrote " + path)
    return 0


def main(argv=None):
    """The all-figures command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="convae-figures",
                                     description=__doc__.split("\n")[0])
    cli.common_arguments(parser)
    parser.add_argument("--metrics", type=cli.nonempty_path,
                        help="metrics.jsonl of the run, or its run directory "
                        "(default: the one beside --weights, or the shipped run's)")
    parser.add_argument("--denoising-weights", type=cli.nonempty_path,
                        default=SHIPPED_DENOISING_WEIGHTS,
                        help="weights of a --noise gaussian or mask run, shown with "
                        "its own noise (default: shipped)")
    parser.add_argument("--out-dir", type=cli.nonempty_path,
                        help="default: figures for the shipped weights, else figures in "
                        "the run directory of --weights")
    return cli.run_command("convae-figures", lambda: make_figures(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
