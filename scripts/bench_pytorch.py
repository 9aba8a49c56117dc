#!/usr/bin/env python
"""The post's network in PyTorch (CPU, eager), timed as ``python -m convae.bench`` times convae.

Same shapes, tied weights (each transposed convolution uses the matching
convolution's filters, plus a bias of its own), dropout 0.5 before and after
the code, Adam at lr 1e-3, squared error, batch 128, float32, real MNIST.
PyTorch is not one of convae's requirements: run this in an environment of
its own (see the README's Speed section), e.g.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 'numpy<2'
    .venv-torch/bin/python scripts/bench_pytorch.py --data-dir ../shared/data/mnist

Prints one JSON object: train_images_per_s and eval_images_per_s at steady
state, timed by the same code as convae's (``convae/timing.py``: the best of
short windows, training and evaluation taking turns, on --batches batches
in turn), cpu_wait_share (how long its threads waited for a CPU per second
timed: above 0.1, other programs had the CPUs; null where Linux does not
say), threads, batch size and the PyTorch version.
``python -m convae.bench --pytorch PYTHON`` runs it in the same run as
convae's own measurement, with ``--turns``: its rounds of windows then take
turns with convae's, one round at a time (see ``convae/timing.py``).
"""
import argparse
import gzip
import json
import os
import runpy
import sys
import zlib

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # convae's own environment, say: PyTorch is not one of its requirements
    sys.exit("bench_pytorch: no PyTorch in {}: run this with a Python of its own that has it "
             "(see this file's docstring)".format(sys.executable))

IMAGES = "train-images-idx3-ubyte.gz"
# convae's timing code, run as a file: importing convae would import Theano.
TIMING = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "convae",
                      "timing.py")


class ConvolutionalAutoencoder(nn.Module):
    """(N, 1, 28, 28) -> (N, 1, 28, 28), the post's layers with tied filters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 32, 5)
        self.code = nn.Linear(512, 256)
        self.expand = nn.Linear(256, 512)
        self.deconv2_bias = nn.Parameter(torch.zeros(32))
        self.deconv1_bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        h = F.max_pool2d(torch.tanh(self.conv2(h)), 2)
        h = torch.tanh(self.code(F.dropout(h.flatten(1), 0.5, self.training)))
        h = torch.tanh(self.expand(F.dropout(h, 0.5, self.training)))
        h = F.interpolate(h.view(-1, 32, 4, 4), scale_factor=2, mode="nearest")
        h = F.relu(F.conv_transpose2d(h, self.conv2.weight, self.deconv2_bias))
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        return F.relu(F.conv_transpose2d(h, self.conv1.weight, self.deconv1_bias))


def training_images(data_dir, count):
    """The first ``count`` MNIST training images, float32 (count, 1, 28, 28) / 256,
    from the IDX file in ``data_dir``, gzip-compressed or not (as convae takes it)."""
    path = os.path.join(data_dir, IMAGES)
    if not os.path.exists(path) and os.path.exists(path[:-len(".gz")]):
        path = path[:-len(".gz")]
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(16 + count * 784)
    except (OSError, EOFError, zlib.error) as e:  # missing, unreadable, truncated, corrupt
        sys.exit("bench_pytorch: {}: cannot be read ({})".format(
            path, getattr(e, "strerror", None) or e))
    if len(raw) < 16 + count * 784 or int.from_bytes(raw[:4], "big") != 2051:
        sys.exit("bench_pytorch: {} is not an MNIST image file of {} images".format(
            path, count))
    pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(count, 1, 28, 28)
    return torch.from_numpy(pixels.astype(np.float32) / np.float32(256))


def positive_int(text):
    """argparse type: an integer >= 1 (a batch of none, or no threads, times nothing)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got {!r}".format(text))
    return int(text)


def main(argv=None):
    """Time training and evaluation; prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="directory with MNIST's IDX files")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--batches", type=positive_int, default=60)
    parser.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)),
                        help="default: the CPUs this process may run on")
    parser.add_argument("--rounds", type=positive_int, help="rounds of timing windows "
                        "(default: convae/timing.py's ROUNDS)")
    parser.add_argument("--turns", action="store_true",
                        help="wait for a line on standard input before each round")
    args = parser.parse_args(argv)
    timing = runpy.run_path(TIMING)
    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    images = training_images(args.data_dir, args.batch_size * args.batches)
    batches = list(images.split(args.batch_size))
    model = ConvolutionalAutoencoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(i):
        x = batches[i % len(batches)]
        model.train()
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), x)
        loss.backward()
        optimizer.step()
        return loss.item()

    def eval_step(i):
        x = batches[i % len(batches)]
        model.eval()
        with torch.no_grad():
            return F.mse_loss(model(x), x).item()

    rates, cpu_wait_share = timing["rates_and_cpu_wait"]({
        "train_images_per_s": (train_step, args.batch_size),
        "eval_images_per_s": (eval_step, args.batch_size)},
        rounds=args.rounds or timing["ROUNDS"],
        before_round=timing["turn_waiter"]() if args.turns else None)
    print(json.dumps({**{name: round(value, 1) for name, value in rates.items()},
                      "cpu_wait_share": cpu_wait_share, "threads": args.threads,
                      "batch_size": args.batch_size, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
