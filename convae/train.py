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

import numpy as np

import convae  # noqa: F401  (Theano defaults before Theano is imported)
import lasagne
import theano
import theano.tensor as T

from convae import data, function_cache
from convae.files import save_npz, save_params, write_atomically
from convae.model import build_convolutional_autoencoder
from convae.theano_setup import fast_path_enabled

OPTIMIZERS = ("adam", "nesterov")
DEFAULT_LR = {"adam": 1e-3, "nesterov": 0.01}
# Settings a resumed run must share with the run it continues.
RUN_SETTINGS = ("dataset", "batch_size", "optimizer", "lr", "seed",
                "limit_train", "limit_val", "noise", "noise_level")


class TrainingError(Exception):
    """A user-facing training failure; the message is one line."""


def training_graph(network, input_var, optimizer="adam", lr=1e-3, noise="none",
                   noise_level=0.0):
    """The symbolic training step and evaluations, not yet compiled.

    Returns (loss, updates, val_loss, clean): the mean squared error of the
    (possibly corrupted, see ``build_functions``) training pass, the
    optimizer's updates (an ordered dict), and the mean squared error and
    reconstructions with dropout off.
    """
    target = input_var
    seen = corrupt(input_var, noise, noise_level)
    prediction = lasagne.layers.get_output(network, seen)
    loss = lasagne.objectives.squared_error(prediction, target).mean()
    params = lasagne.layers.get_all_params(network, trainable=True)
    if optimizer == "adam":
        updates = lasagne.updates.adam(loss, params, learning_rate=lr)
    else:
        updates = lasagne.updates.nesterov_momentum(
            loss, params, learning_rate=lr, momentum=0.9)
    clean = lasagne.layers.get_output(network, deterministic=True)
    val_loss = lasagne.objectives.squared_error(clean, target).mean()
    return loss, updates, val_loss, clean


def build_functions(network, input_var, optimizer="adam", lr=1e-3,
                    noise="none", noise_level=0.0):
    """Compile the three Theano functions the loop needs, once.

    network: output layer of ``build_convolutional_autoencoder(input_var)``.
    noise: 'none', 'gaussian' (add N(0, noise_level^2), clip to [0, 1]) or
    'mask' (zero each pixel with probability noise_level): corrupts what the
    network sees in training while the target stays the clean input.

    Returns train_fn(x) -> mean squared error (and one optimizer step),
    val_fn(x) -> mean squared error with dropout off, and
    reconstruct_fn(x) -> reconstructions with dropout off; x is float32
    (batch, 1, 28, 28).
    """
    graph = training_graph(network, input_var, optimizer, lr, noise, noise_level)
    return compile_graph(input_var, graph)


def compile_graph(input_var, graph):
    """train_fn, val_fn, reconstruct_fn of a ``training_graph``."""
    loss, updates, val_loss, clean = graph
    return (theano.function([input_var], loss, updates=updates),
            theano.function([input_var], val_loss),
            theano.function([input_var], clean))


def build_network_and_functions(settings, use_cache=True):
    """The seeded network and its compiled functions, as a training run needs them.

    settings: a dict with 'seed', 'optimizer', 'lr', 'noise', 'noise_level'.
    Returns (network, input_var, train_fn, val_fn, reconstruct_fn), exactly
    as ``build_convolutional_autoencoder`` and ``build_functions`` would
    give them, but taken from convae's function cache when a previous
    process compiled the same (see ``convae.function_cache``), unless
    ``use_cache`` is false or ``CONVAE_FAST=0``.
    """
    names = ("seed", "optimizer", "lr", "noise", "noise_level")
    use_cache = use_cache and fast_path_enabled()
    key = function_cache.cache_key({name: settings[name] for name in names})
    cached = function_cache.load(key) if use_cache else None
    if cached is not None:
        return cached
    lasagne.random.set_rng(np.random.RandomState(settings["seed"]))
    input_var = T.tensor4("inputs")
    network = build_convolutional_autoencoder(input_var)
    graph = training_graph(network, input_var, *(settings[name] for name in names[1:]))
    compiled = (network, input_var) + compile_graph(input_var, graph)
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
    """One training run's state: compiled functions, data, RNG and metrics."""

    def __init__(self, settings, out_dir, log=print, progress=None):
        self.settings = settings
        self.out_dir = out_dir
        self.log = log
        self.progress = progress
        self.shuffle_rng = np.random.RandomState(settings["seed"])
        (self.network, self.input_var, self.train_fn, self.val_fn,
         self.reconstruct_fn) = build_network_and_functions(settings)
        self.state = self.train_fn.get_shared()
        self.epoch, self.batch, self.err_sum, self.metrics = 0, 0, 0.0, []
        self.epoch_rng_state = self.shuffle_rng.get_state()

    # -- checkpoints -------------------------------------------------------
    def checkpoint_path(self):
        return os.path.join(self.out_dir, "checkpoint.npz")

    def save(self):
        """Save parameters (model.npz), full state (checkpoint.npz), metrics."""
        save_params(os.path.join(self.out_dir, "model.npz"), self.network)
        kind, keys, pos, has_gauss, gauss = self.epoch_rng_state
        arrays = {"shared_%d" % i: var.get_value()
                  for i, var in enumerate(self.state)}
        arrays.update(
            architecture=np.array(architecture(self.network)),
            settings=np.array(json.dumps(self.settings)),
            metrics=np.array(json.dumps(self.metrics)),
            position=np.array([self.epoch, self.batch]),
            err_sum=np.array(self.err_sum),
            rng_keys=keys, rng_extra=np.array([pos, has_gauss, gauss]))
        save_npz(self.checkpoint_path(), arrays)
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        write_atomically(os.path.join(self.out_dir, "metrics.jsonl"),
                         lambda f: f.write(lines), mode="w")

    def restore(self, path):
        """Continue from checkpoint ``path``; TrainingError if it is not ours."""
        try:
            with np.load(path) as f:
                saved = {key: f[key] for key in f.files}
            if str(saved["architecture"]) != architecture(self.network):
                raise TrainingError(
                    "{}: checkpoint of another architecture".format(path))
            if len([k for k in saved if k.startswith("shared_")]) != len(self.state):
                raise TrainingError("{}: checkpoint of another training setup "
                                    "(optimizer or noise)".format(path))
            for i, var in enumerate(self.state):
                value = saved["shared_%d" % i]
                if np.shape(value) != np.shape(var.get_value()):
                    raise TrainingError("{}: checkpoint of another training "
                                        "setup".format(path))
                var.set_value(value)
            self.metrics = json.loads(str(saved["metrics"]))
            self.epoch, self.batch = (int(v) for v in saved["position"])
            self.err_sum = float(saved["err_sum"])
            pos, has_gauss, gauss = saved["rng_extra"]
            self.epoch_rng_state = ("MT19937", saved["rng_keys"], int(pos),
                                    int(has_gauss), float(gauss))
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise TrainingError("{}: corrupt or not a convae checkpoint "
                                "({})".format(path, e))

    # -- the loop ----------------------------------------------------------
    def train(self, X_train, X_val, epochs, stop_requested=lambda: False):
        """Train until ``epochs`` epochs are done or stop_requested() is true.

        Returns True if all epochs finished, False if stopped early (state saved).
        Raises TrainingError on a NaN or infinite loss, leaving the last
        checkpoint as it was.
        """
        batch_size = self.settings["batch_size"]
        n_batches = len(X_train) // batch_size
        while self.epoch < epochs:
            self.shuffle_rng.set_state(self.epoch_rng_state)
            order = self.shuffle_rng.permutation(len(X_train))
            start, first = time.time(), self.batch
            batches = iterate_minibatches(X_train, batch_size, order)
            for index, batch in enumerate(batches):
                if index < self.batch:
                    continue
                err = float(self.train_fn(batch))
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
            val_err = mean_loss(self.val_fn, X_val)
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


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got %s" % text)
    return value


def parse_args(argv=None):
    """Command-line flags of the training command."""
    p = argparse.ArgumentParser(
        prog="convae-train",
        description="Train the post's convolutional autoencoder.")
    p.add_argument("--data-dir", help="directory with the four IDX files "
                   "(default: $CONVAE_DATA_DIR/<dataset> or a per-user cache; "
                   "missing files are downloaded)")
    p.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 for "
                   "adam, 0.01 for nesterov)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit-train", type=positive_int, metavar="N",
                   help="use only the first N training images")
    p.add_argument("--limit-val", type=positive_int, metavar="N",
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


def prepare_data(settings, data_dir):
    """Training, validation and test images for ``settings`` (labels dropped)."""
    X_train, _, X_val, _, X_test, _ = data.load_dataset(
        settings["dataset"], data_dir)
    if settings["limit_train"]:
        X_train = X_train[:settings["limit_train"]]
    if settings["limit_val"]:
        X_val = X_val[:settings["limit_val"]]
    if len(X_train) < settings["batch_size"]:
        raise TrainingError("{} training images do not fill one batch of {}".format(
            len(X_train), settings["batch_size"]))
    return X_train, X_val, X_test


def main(argv=None):
    """The training command; returns the process exit code."""
    args = parse_args(argv)
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    try:
        os.makedirs(args.out, exist_ok=True)
        checkpoint = os.path.join(args.out, "checkpoint.npz")
        if args.resume:
            if not os.path.isfile(checkpoint):
                raise TrainingError("--resume: no checkpoint at " + checkpoint)
            try:
                with np.load(checkpoint) as f:
                    settings = json.loads(str(f["settings"]))
            except (OSError, ValueError, KeyError, EOFError) as e:
                raise TrainingError("{}: corrupt or not a convae checkpoint "
                                    "({})".format(checkpoint, e))
        elif os.path.exists(checkpoint):
            raise TrainingError("{} holds a run already: pass --resume to "
                                "continue it, or choose another --out".format(args.out))
        X_train, X_val, X_test = prepare_data(settings, args.data_dir)
        print("Compiling the network (Theano caches this after the first run)...",
              flush=True)
        run = Run(settings, args.out, progress=terminal_progress
                  if sys.stderr.isatty() else None)
        if args.resume:
            run.restore(checkpoint)
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
        test_err = mean_loss(run.val_fn, X_test)
        print("Final test MSE: {:.6f}".format(test_err))
        write_atomically(os.path.join(args.out, "test.json"),
                         lambda f: f.write(json.dumps({"test_mse": test_err}) + "\n"),
                         mode="w")
        return 0
    except (TrainingError, data.DataError, OSError) as e:
        print("convae-train: error: {}".format(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("convae-train: interrupted before training started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
