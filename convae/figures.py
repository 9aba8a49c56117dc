"""The post's figures and a few it did not show, as matplotlib figures.

Every ``*_figure`` function takes NumPy arrays and returns a
``matplotlib.figure.Figure`` (headless, Agg), so a notebook shows it and a
script saves it with ``save_figure``. Images are (N, 1, 28, 28) or (N, 28, 28)
floats in [0, 1]. ``convae.codec.Codec`` computes what they show from a
trained network: reconstructions, the 256-unit codes, decoded codes.
"""
import json
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convae import cli
from convae.files import METRICS_FILE, in_run, write_atomically

# The figure formats a file name may ask for by its extension: matplotlib
# writes each of these by itself (its .pgf needs LaTeX, its .raw and .rgba
# are bare pixels).
FORMATS = ("png", "pdf", "svg", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")

# The most digit pairs one reconstruction figure shows: 1.1 inches a pair at
# 100 dpi make 500 pairs 55,000 pixels wide, and matplotlib draws pictures
# of at most 65,535.
MAX_PAIRS = 500

# What each line of a metrics.jsonl file holds (among others).
METRIC_KEYS = frozenset(("epoch", "train_loss", "val_loss"))


def pick_indices(labels, indices=None, n=None, seed=0):
    """Test-set indices to show: given ones, n random ones, or the first of each class.

    ValueError for an index that is not a whole number within the test set,
    an ``n`` that is not a positive integer, or more than MAX_PAIRS.
    """
    not_whole = [i for i in indices or () if not cli.whole_number.accepts(i)]
    if not_whole:
        raise ValueError("indices must be whole numbers, got {!r}".format(not_whole[0]))
    if n is not None and not cli.positive_int.accepts(n):
        raise ValueError("n={!r}, not {}".format(n, cli.positive_int.wanted))
    if len(indices or ()) > MAX_PAIRS or (n or 0) > MAX_PAIRS:
        raise ValueError("a figure shows at most {} digits; {} asked for".format(
            MAX_PAIRS, len(indices) if indices else n))
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(labels)]
        if bad:
            raise ValueError("index {} out of range: the test set has {} images "
                             "(0 to {})".format(bad[0], len(labels), len(labels) - 1))
        return [int(i) for i in indices]
    if n is not None:
        if n > len(labels):
            raise ValueError("--n must be between 1 and {}".format(len(labels)))
        return sorted(np.random.RandomState(seed).choice(len(labels), n,
                                                         replace=False).tolist())
    return [int(np.flatnonzero(labels == digit)[0]) for digit in np.unique(labels)]


def _images(x):
    x = np.asarray(x)
    return x[:, 0] if x.ndim == 4 else x


def _columns(**rows):
    """The rows' images (N, 28, 28) each, in the order given; ValueError unless
    every row holds as many (a short row would leave columns blank, a long
    one lose images, without a word), and at least one."""
    images = {name: _images(x) for name, x in rows.items()}
    counts = {name: len(x) for name, x in images.items()}
    if len(set(counts.values())) > 1 or not any(counts.values()):
        raise ValueError("one column per image, and at least one: got " + ", ".join(
            "{} {}".format(count, name) for name, count in counts.items()))
    return list(images.values())


def _grid(fig, rows, cols, images, row_labels=(), titles=()):
    """Draw images (rows * cols, 28, 28) on fig, row by row."""
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index < len(images):
            ax.imshow(images[index], cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
        else:
            ax.axis("off")
    for row, label in enumerate(row_labels):
        axes[row, 0].set_ylabel(label)
    for col, title in enumerate(titles):
        axes[0, col].set_title(title, fontsize=8)
    return axes


# The reconstructions' file, as convae-reconstruct and convae-figures write it.
RECONSTRUCTIONS = "reconstructions.png"


def captions(indices, labels, classes):
    """One title per test image: its index and its class, "#19 (7)", from
    labels (N,) and classes, the names of labels 0-9."""
    return ["#{} ({})".format(i, classes[labels[i]]) for i in indices]


def reconstruction_figure(originals, reconstructions, titles=()):
    """Originals above their reconstructions, one pair per column, as in the
    post; ``titles``: none, or one per column."""
    originals, reconstructions = _columns(originals=originals, reconstructions=reconstructions)
    n = len(originals)
    if titles and len(titles) != n:
        raise ValueError("one title per column: got {} titles for {} images".format(
            len(titles), n))
    fig = Figure(figsize=(1.1 * n, 2.6), dpi=100)
    _grid(fig, 2, n, np.concatenate([originals, np.clip(reconstructions, 0, 1)]),
          row_labels=("original", "reconstructed"), titles=titles)
    return fig


def denoising_figure(noisy, denoised, clean):
    """Rows: noisy input, the network's output, the clean digit."""
    noisy, denoised, clean = _columns(noisy=noisy, denoised=denoised, clean=clean)
    n = len(clean)
    fig = Figure(figsize=(1.1 * n, 3.8), dpi=100)
    _grid(fig, 3, n, np.concatenate([noisy, np.clip(denoised, 0, 1), clean]),
          row_labels=("noisy", "denoised", "clean"))
    return fig


def learning_curves_figure(metrics):
    """Training and validation loss (MSE) per epoch, from metrics.jsonl records."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    epochs = [m["epoch"] for m in metrics]
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="training (dropout on)")
    ax.plot(epochs, [m["val_loss"] for m in metrics], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: "1"
    ax.set_ylabel("mean squared error per pixel")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def filters_figure(filters):
    """The first-layer filters (32, 5, 5), or its W as Lasagne holds it (32, 1,
    5, 5), in a 4 x 8 grid, each scaled to its range."""
    filters = np.asarray(filters)
    if filters.shape == (32, 1, 5, 5):
        filters = filters[:, 0]
    if filters.shape != (32, 5, 5):  # 64 of them lost 32 without a word
        raise ValueError("filters must be the first layer's, (32, 5, 5) or (32, 1, 5, 5), "
                         "got shape {}".format(filters.shape))
    fig = Figure(figsize=(8, 4.4), dpi=100)
    axes = fig.subplots(4, 8)
    for ax, w in zip(axes.flat, filters):
        ax.imshow(w, cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("auto_conv1A filters (tied: also auto_deconv1B's)")
    return fig


def pca_2d(codes):
    """Project codes (N, D) on their first two principal components -> (N, 2);
    ValueError unless there are two (N and D at least 2)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or min(codes.shape) < 2:
        raise ValueError("codes must be (N, D) with N and D at least 2 for two principal "
                         "components, got shape {}".format(codes.shape))
    centred = codes - codes.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def code_pca_figure(codes, labels, classes):
    """Scatter of the codes' first two principal components, coloured by label
    (0-9), with ``classes``, the names of the labels, on the colour bar."""
    points = pca_2d(codes)
    fig = Figure(figsize=(6.5, 6), dpi=100)
    ax = fig.subplots()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10",
                         s=3, alpha=0.6, vmin=-0.5, vmax=9.5)
    digits = all(name.isdigit() for name in classes)  # MNIST's
    bar = fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit" if digits else "class")
    bar.ax.set_yticklabels(classes)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("256-unit code of the test set, PCA")
    fig.tight_layout()
    return fig


def interpolate_codes(start, end, steps):
    """Codes on the straight line from start to end (D,), as (steps, D), both
    ends included: ValueError unless ``steps`` is a whole number of 2 or more."""
    if not (cli.whole_number.accepts(steps) and steps >= 2):
        raise ValueError("steps={!r}, not a whole number of 2 or more (the line's two ends "
                         "and the codes between them)".format(steps))
    weights = np.linspace(0, 1, steps)[:, None]
    return ((1 - weights) * start + weights * end).astype(np.float32)


def interpolation_figure(decoded, first, last):
    """Decoded images along a line between two codes, ends shown as originals."""
    decoded = _images(decoded)
    images = np.concatenate([_images(first[None]), decoded, _images(last[None])])
    fig = Figure(figsize=(1.0 * len(images), 1.4), dpi=100)
    titles = ["start"] + ["" for _ in decoded] + ["end"]
    _grid(fig, 1, len(images), images, titles=titles)
    return fig


def figure_format(path):
    """The format ``path``'s extension names ('pdf' for x.pdf), 'png' if it has none.

    ValueError, naming the path, for an extension not in FORMATS: writing PNG
    bytes under the name x.pdf would leave a file nothing opens.
    """
    extension = os.path.splitext(path)[1][1:].lower()
    if not extension:
        return "png"
    if extension not in FORMATS:
        raise ValueError("{}: cannot write a figure as .{}; end the name in .{}".format(
            path, extension, ", .".join(FORMATS)))
    return extension


def save_figure(fig, path):
    """Write fig to path atomically, in the format of its extension (see
    ``figure_format``); creates the directory if needed."""
    kind = figure_format(path)
    write_atomically(path, lambda f: fig.savefig(f, format=kind))


def read_metrics(path):
    """Read a metrics.jsonl file (one JSON object per epoch), or its run
    directory's, into a list of dicts.

    ValueError, naming the file and line, if it is not one: unreadable text,
    a line that is not JSON, a record without epoch, train_loss, val_loss,
    epochs that do not count 1, 2, 3, ... (two runs' files run together), or
    a loss that is no mean squared error (not a finite number >= 0).
    """
    records, path = [], in_run(path, METRICS_FILE)  # a run directory, as --weights takes
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError("{}: not a metrics.jsonl file (not UTF-8 text)".format(path))
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError("{}, line {}: not JSON ({})".format(path, number, e))
        if not isinstance(record, dict) or not METRIC_KEYS <= set(record):
            raise ValueError("{}, line {}: not a metrics record (one has {})".format(
                path, number, ", ".join(sorted(METRIC_KEYS))))
        if record["epoch"] != len(records) + 1 or isinstance(record["epoch"], bool):
            raise ValueError("{}, line {}: epoch {!r} where epoch {} was due (a run's epochs "
                             "count up from 1)".format(path, number, record["epoch"],
                                                       len(records) + 1))
        for key in ("train_loss", "val_loss"):
            loss = record[key]
            numeric = isinstance(loss, (int, float)) and not isinstance(loss, bool)
            if not (numeric and 0 <= loss < float("inf")):
                raise ValueError("{}, line {}: {} {!r} is no mean squared error (a finite "
                                 "number >= 0)".format(path, number, key, loss))
        records.append(record)
    if not records:
        raise ValueError("{}: no metrics in it (a run writes one line per finished "
                         "epoch)".format(path))
    return records
