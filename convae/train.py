"""Train the post's convolutional autoencoder on MNIST (or Fashion-MNIST).

Run ``convae-train --help`` (or ``python scripts/train.py --help``). The
default recipe is Adam at lr 1e-3 with batch 128; the loss is the mean squared
error between the reconstruction and the input, pixels in [0, 1).

Every epoch ends with one line like Lasagne's MNIST example (time, images/s,
training and validation loss), a line in ``OUT/metrics.jsonl``, the
parameters in ``OUT/model.npz`` (plain ``np.load`` +
``lasagne.layers.set_all_param_values``) and everything needed to resume in
``OUT/checkpoint.npz``. Files are written atomically; a NaN or infinite loss
stops training without touching the last good checkpoint; Ctrl-C saves where it
is and exits, and ``--resume`` continues exactly from there.
"""
import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional

import numpy as np

import convae
import lasagne
import theano
import theano.tensor as T

from convae import checkpoint, cli, data
from convae.files import save_params, write_atomically
from convae.model import build_convolutional_autoencoder
from convae.runtime import function_cache

OPTIMIZERS = ("adam", "nesterov")
DEFAULT_LR = {"adam": 1e-3, "nesterov": 0.01}


@dataclass(frozen=True)
class Settings:
    """What defines a training run; a resumed run continues with its checkpoint's.

    lr: learning rate; limit_train / limit_val: use only the first N images
    (None: all); noise: 'none', 'gaussian' (add N(0, noise_level^2), clip to
    [0, 1]) or 'mask' (zero each pixel with probability noise_level), what
    the network sees in training while the target stays the clean input.
    """

    dataset: str = "mnist"
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 1
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    noise: str = "none"
    noise_level: float = 0.3


# The settings that shape the compiled functions (the function cache's key).
GRAPH_SETTINGS = ("seed", "optimizer", "lr", "noise", "noise_level")


class TrainingError(Exception):
    """A user-facing training failure; the message is one line."""


class CompiledRun(NamedTuple):
    """A seeded network and its compiled functions; x is float32 (batch, 1, 28, 28).

    train_fn(x) -> mean squared error, after one optimizer step;
    val_fn(x) -> mean squared error with dropout off;
    reconstruct_fn(x) -> reconstructions with dropout off.
    """

    network: object
    input_var: object
    train_fn: object
    val_fn: object
    reconstruct_fn: object


def compile_run(settings, use_cache=True):
    """The network of ``settings`` (seeded) and its three compiled functions.

    Taken from convae's function cache when a previous process compiled the
    same (see ``convae.runtime.function_cache``), if the fast path is on and
    ``use_cache`` is true.
    """
    use_cache = use_cache and convae.runtime.enabled()
    key = function_cache.cache_key({name: getattr(settings, name) for name in GRAPH_SETTINGS})
    cached = function_cache.load(key) if use_cache else None
    if cached is not None:
        return cached
    lasagne.random.set_rng(np.random.RandomState(settings.seed))
    input_var = T.tensor4("inputs")
    network = build_convolutional_autoencoder(input_var)
    seen = corrupt(input_var, settings.noise, settings.noise_level)
    loss = lasagne.objectives.squared_error(
        lasagne.layers.get_output(network, seen), input_var).mean()
    params = lasagne.layers.get_all_params(network, trainable=True)
    if settings.optimizer == "adam":
        updates = lasagne.updates.adam(loss, params, learning_rate=settings.lr)
    else:
        updates = lasagne.updates.nesterov_momentum(
            loss, params, learning_rate=settings.lr, momentum=0.9)
    clean = lasagne.layers.get_output(network, deterministic=True)
    val_loss = lasagne.objectives.squared_error(clean, input_var).mean()
    compiled = CompiledRun(network, input_var,
                           theano.function([input_var], loss, updates=updates),
                           theano.function([input_var], val_loss),
                           theano.function([input_var], clean))
    if use_cache:
        function_cache.save(key, compiled)
    return compiled


def corrupt(input_var, noise, level):
    """Symbolic corrupted copy of input_var for denoising training."""
    if noise == "none":
        return input_var
    streams = theano.sandbox.rng_mrg.MRG_RandomStreams(
        lasagne.random.get_rng().randint(1, 2147462579))
    if noise == "gaussian":
        noisy = input_var + streams.normal(input_var.shape, std=level,
                                           dtype=input_var.dtype)
        return T.clip(noisy, 0, 1)
    keep = streams.binomial(input_var.shape, p=1 - level, dtype=input_var.dtype)
    return input_var * keep


def iterate_minibatches(inputs, batchsize, order=None):
    """Yield consecutive (batchsize, 1, 28, 28) batches of inputs, in ``order``.

    The last incomplete batch is dropped, as in Lasagne's MNIST example.
    """
    indices = np.arange(len(inputs)) if order is None else order
    for start in range(0, len(inputs) - batchsize + 1, batchsize):
        yield inputs[indices[start:start + batchsize]]


EVAL_BATCH = 500


def mean_loss(fn, inputs, batchsize=EVAL_BATCH):
    """Mean squared error per pixel of fn over all of inputs, in batches."""
    total = 0.0
    for start in range(0, len(inputs), batchsize):
        batch = inputs[start:start + batchsize]
        total += float(fn(batch)) * len(batch)
    return total / len(inputs)


def architecture(network):
    """A description of the network's layers and parameter shapes, as JSON."""
    return json.dumps([[type(layer).__name__, layer.output_shape[1:],
                        [p.get_value().shape for p in layer.get_params()]]
                       for layer in lasagne.layers.get_all_layers(network)])


class Run:
    """One training run's state: compiled functions, data order, position and metrics."""

    def __init__(self, settings, out_dir, log=print, progress=None):
        self.settings = settings
        self.out_dir = out_dir
        self.log = log
        self.progress = progress
        self.shuffle_rng = np.random.RandomState(settings.seed)
        self.compiled = compile_run(settings)
        self.network = self.compiled.network
        self.state = self.compiled.train_fn.get_shared()
        self.epoch, self.batch, self.err_sum, self.metrics = 0, 0, 0.0, []
        self.epoch_rng_state = self.shuffle_rng.get_state()

    # -- checkpoints -------------------------------------------------------
    def checkpoint_path(self):
        return os.path.join(self.out_dir, "checkpoint.npz")

    def save(self):
        """Save parameters (model.npz), full state (checkpoint.npz), metrics."""
        save_params(os.path.join(self.out_dir, "model.npz"), self.network)
        checkpoint.save(self.checkpoint_path(), checkpoint.Checkpoint(
            settings=asdict(self.settings), architecture=architecture(self.network),
            state=[var.get_value() for var in self.state], metrics=self.metrics,
            epoch=self.epoch, batch=self.batch, err_sum=self.err_sum,
            rng_state=self.epoch_rng_state))
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        write_atomically(os.path.join(self.out_dir, "metrics.jsonl"),
                         lambda f: f.write(lines), mode="w")

    def restore(self, saved):
        """Continue from the Checkpoint ``saved``; TrainingError if it is not this run's kind."""
        if saved.architecture != architecture(self.network):
            raise TrainingError("{}: checkpoint of another architecture".format(saved.path))
        if len(saved.state) != len(self.state) or any(
                np.shape(value) != np.shape(var.get_value())
                for value, var in zip(saved.state, self.state)):
            raise TrainingError("{}: checkpoint of another training setup "
                                "(optimizer or noise)".format(saved.path))
        for value, var in zip(saved.state, self.state):
            var.set_value(value)
        self.metrics = saved.metrics
        self.epoch, self.batch, self.err_sum = saved.epoch, saved.batch, saved.err_sum
        self.epoch_rng_state = saved.rng_state

    # -- the loop ----------------------------------------------------------
    def train(self, X_train, X_val, epochs, stop_requested=lambda: False):
        """Train until ``epochs`` epochs are done or stop_requested() is true.

        Returns True if all epochs finished, False if stopped early (state saved).
        Raises TrainingError on a NaN or infinite loss, leaving the last
        checkpoint as it was.
        """
        batch_size = self.settings.batch_size
        n_batches = len(X_train) // batch_size
        train_fn, val_fn = self.compiled.train_fn, self.compiled.val_fn
        while self.epoch < epochs:
            self.shuffle_rng.set_state(self.epoch_rng_state)
            order = self.shuffle_rng.permutation(len(X_train))
            start, first = time.time(), self.batch
            batches = iterate_minibatches(X_train, batch_size, order)
            for index, batch in enumerate(batches):
                if index < self.batch:
                    continue
                err = float(train_fn(batch))
                if not np.isfinite(err):
                    raise TrainingError(
                        "training loss became {} in epoch {}, batch {}; stopped "
                        "without saving: the last good checkpoint in {} is "
                        "intact (try a lower --lr)".format(
                            err, self.epoch + 1, index + 1, self.out_dir))
                self.err_sum += err
                self.batch = index + 1
                if self.progress:
                    self.progress(self.epoch + 1, epochs, self.batch, n_batches,
                                  self.err_sum / self.batch)
                if stop_requested() and self.batch < n_batches:
                    self.save()
                    return False
            seconds = time.time() - start
            val_err = mean_loss(val_fn, X_val)
            if not np.isfinite(val_err):
                raise TrainingError("validation loss became {} in epoch {}; "
                                    "the last good checkpoint is intact".format(
                                        val_err, self.epoch + 1))
            images_per_s = (self.batch - first) * batch_size / max(seconds, 1e-9)
            self.metrics.append(dict(
                epoch=self.epoch + 1, seconds=round(seconds, 3),
                images_per_s=round(images_per_s, 1),
                train_loss=self.err_sum / n_batches, val_loss=val_err))
            self.log("Epoch {} of {} took {:.1f}s ({:.0f} images/s): training "
                     "loss {:.6f}, validation loss {:.6f}".format(
                         self.epoch + 1, epochs, seconds, images_per_s,
                         self.err_sum / n_batches, val_err))
            self.epoch, self.batch, self.err_sum = self.epoch + 1, 0, 0.0
            self.epoch_rng_state = self.shuffle_rng.get_state()
            self.save()
            if stop_requested() and self.epoch < epochs:
                return False
        return True


def terminal_progress(epoch, epochs, batch, n_batches, loss):
    """Draw an in-place progress bar on stderr."""
    width = 30
    filled = width * batch // n_batches
    sys.stderr.write("\rEpoch {}/{} [{}{}] {}/{} loss {:.6f}".format(
        epoch, epochs, "#" * filled, "." * (width - filled), batch, n_batches,
        loss))
    if batch == n_batches:
        sys.stderr.write("\r" + " " * (width + 50) + "\r")
    sys.stderr.flush()


def parse_args(argv=None):
    """Command-line flags of the training command."""
    p = argparse.ArgumentParser(
        prog="convae-train",
        description="Train the post's convolutional autoencoder.")
    p.add_argument("--data-dir", help="directory with the four IDX files "
                   "(default: $CONVAE_DATA_DIR/<dataset> or a per-user cache; "
                   "missing files are downloaded)")
    p.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist")
    p.add_argument("--epochs", type=cli.positive_int, default=20)
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 for "
                   "adam, 0.01 for nesterov)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit-train", type=cli.positive_int, metavar="N",
                   help="use only the first N training images")
    p.add_argument("--limit-val", type=cli.positive_int, metavar="N",
                   help="use only the first N validation images")
    p.add_argument("--noise", choices=("none", "gaussian", "mask"),
                   default="none", help="corrupt the input (denoising "
                   "autoencoder); the target stays clean")
    p.add_argument("--noise-level", type=float, default=0.3,
                   help="std of the Gaussian noise, or masking probability")
    p.add_argument("--out", default="runs/default",
                   help="directory for checkpoints and metrics")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if not args.lr > 0 or not np.isfinite(args.lr):
        p.error("--lr must be a positive number")
    if args.noise != "none" and not 0 <= args.noise_level < 1:
        p.error("--noise-level must lie in [0, 1)")
    return args


def settings_of(args):
    """The Settings named by the command-line flags."""
    return Settings(dataset=args.dataset, batch_size=args.batch_size,
                    optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                    limit_train=args.limit_train, limit_val=args.limit_val,
                    noise=args.noise, noise_level=args.noise_level)


def prepare_data(settings, data_dir):
    """Training, validation and test images for ``settings`` (labels dropped)."""
    X_train, _, X_val, _, X_test, _ = data.load_dataset(settings.dataset, data_dir)
    if settings.limit_train:
        X_train = X_train[:settings.limit_train]
    if settings.limit_val:
        X_val = X_val[:settings.limit_val]
    if len(X_train) < settings.batch_size:
        raise TrainingError("{} training images do not fill one batch of {}".format(
            len(X_train), settings.batch_size))
    return X_train, X_val, X_test


def main(argv=None):
    """The training command; returns the process exit code."""
    args = parse_args(argv)
    settings = settings_of(args)
    convae.runtime.enable()
    try:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "checkpoint.npz")
        saved = None
        if args.resume:
            if not os.path.isfile(path):
                raise TrainingError("--resume: no checkpoint at " + path)
            saved = checkpoint.load(path)
            settings = Settings(**saved.settings)
        elif os.path.exists(path):
            raise TrainingError("{} holds a run already: pass --resume to "
                                "continue it, or choose another --out".format(args.out))
        X_train, X_val, X_test = prepare_data(settings, args.data_dir)
        print("Compiling the network (Theano caches this after the first run)...",
              flush=True)
        run = Run(settings, args.out, progress=terminal_progress
                  if sys.stderr.isatty() else None)
        if saved is not None:
            run.restore(saved)
            print("Resuming at epoch {}, batch {}".format(run.epoch + 1, run.batch + 1))
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(1))
        try:
            finished = run.train(X_train, X_val, args.epochs,
                                 stop_requested=lambda: bool(interrupted))
        finally:
            signal.signal(signal.SIGINT, previous)
        if not finished:
            print("Interrupted: state saved in {}; continue with --resume".format(
                args.out))
            return 130
        test_err = mean_loss(run.compiled.val_fn, X_test)
        print("Final test MSE: {:.6f}".format(test_err))
        write_atomically(os.path.join(args.out, "test.json"),
                         lambda f: f.write(json.dumps({"test_mse": test_err}) + "\n"),
                         mode="w")
        return 0
    except (TrainingError, checkpoint.CheckpointError, data.DataError, OSError) as e:
        return cli.report_error("convae-train", e)
    except KeyboardInterrupt:
        print("convae-train: interrupted before training started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
