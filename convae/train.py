"""Train the post's convolutional autoencoder on MNIST (or Fashion-MNIST).

Run ``convae-train --help`` (or ``python scripts/train.py --help``). The
default recipe is Adam at lr 1e-3 with batch 128; the loss is the mean squared
error between the reconstruction and the input, pixels in [0, 1).

Every epoch ends with one line like Lasagne's MNIST example (time, images/s,
training and validation loss), a line in ``OUT/metrics.jsonl``, the
parameters in ``OUT/model.npz`` (plain ``np.load`` +
``lasagne.layers.set_all_param_values``) and everything needed to resume in
``OUT/checkpoint.npz``. The three are written together (all or none of
them), atomically; a NaN or infinite loss stops training without touching
the last good checkpoint; Ctrl-C (or SIGTERM, or the SIGHUP of a closed
terminal) saves where it is and exits, and
``--resume`` continues exactly from there, with the same settings (a new
``--epochs`` or ``--lr`` applies from there on; any other change is refused).
"""
import argparse
import errno
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple, Optional

import numpy as np
from tqdm import tqdm

import convae
import lasagne
import theano
import theano.tensor as T

from convae import checkpoint, cli, data, files
from convae.codec import EVAL_BATCH, as_batch
from convae.model import build_convolutional_autoencoder
from convae.runtime import function_cache

OPTIMIZERS = ("adam", "nesterov")
NOISES = ("none", "gaussian", "mask")
DEFAULT_LR = {"adam": 1e-3, "nesterov": 0.01}
DEFAULT_EPOCHS = 20


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

    def __post_init__(self):
        """ValueError, naming the setting, for one the run cannot have: an
        unknown optimizer or noise (``optimizer="Adam"``) would otherwise
        train as Nesterov momentum or masking, a negative lr uphill, and
        ``batch_size=0`` or ``seed=-1`` fail deep inside NumPy or Theano. The
        numbers are held to what the command's flags take, and kept as
        Python's int and float: NumPy's (``np.int64(64)`` from an array of
        batch sizes) are no JSON, and the first save, an epoch in, failed."""
        for name, allowed in (("dataset", sorted(data.DATASETS)), ("optimizer", OPTIMIZERS),
                              ("noise", NOISES)):
            if getattr(self, name) not in allowed:
                raise ValueError("{}={!r}, not one of {}".format(
                    name, getattr(self, name), ", ".join(allowed)))
        for name, number in (("batch_size", cli.positive_int), ("lr", cli.positive_float),
                             ("seed", cli.seed), ("limit_train", cli.positive_int),
                             ("limit_val", cli.positive_int), ("noise_level", cli.fraction)):
            value, optional = getattr(self, name), name.startswith("limit_")
            if not (number.accepts(value) or (optional and value is None)):
                raise ValueError("{}={!r}, not {}{}".format(
                    name, value, number.wanted, " or None" if optional else ""))
            if value is not None:
                object.__setattr__(self, name, number.convert(value))  # frozen


# The settings that shape the compiled functions (the function cache's key;
# the learning rate is a shared variable in them).
GRAPH_SETTINGS = ("seed", "optimizer", "noise", "noise_level")
# What a resumed run may change; every other setting must stay as it was.
CHANGEABLE_ON_RESUME = ("lr",)


class TrainingError(Exception):
    """A user-facing training failure; the message is one line."""


class CompiledRun(NamedTuple):
    """A seeded network and its compiled functions; x is float32 (batch, 1, 28, 28).

    train_fn(x) -> mean squared error, after one optimizer step;
    val_fn(x) -> mean squared error with dropout off;
    reconstruct_fn(x) -> reconstructions with dropout off;
    learning_rate: the shared float32 learning rate the step uses.
    """

    network: object
    input_var: object
    train_fn: object
    val_fn: object
    reconstruct_fn: object
    learning_rate: object


def compile_run(settings, use_cache=True):
    """The network of ``settings`` (seeded) and its three compiled functions.

    Taken from convae's function cache when a previous process compiled the
    same (see ``convae.runtime.function_cache``), if the fast path is on and
    ``use_cache`` is true.
    """
    use_cache = use_cache and convae.runtime.enabled()
    key = function_cache.cache_key({name: getattr(settings, name) for name in GRAPH_SETTINGS})
    compiled = function_cache.load(key) if use_cache else None
    if compiled is None:
        lasagne.random.set_rng(np.random.RandomState(settings.seed))
        input_var = T.tensor4("inputs")
        network = build_convolutional_autoencoder(input_var)
        seen = corrupt(input_var, settings.noise, settings.noise_level)
        loss = lasagne.objectives.squared_error(
            lasagne.layers.get_output(network, seen), input_var).mean()
        params = lasagne.layers.get_all_params(network, trainable=True)
        learning_rate = theano.shared(np.float32(settings.lr), name="learning_rate")
        if settings.optimizer == "adam":
            updates = lasagne.updates.adam(loss, params, learning_rate=learning_rate)
        else:
            updates = lasagne.updates.nesterov_momentum(
                loss, params, learning_rate=learning_rate, momentum=0.9)
        clean = lasagne.layers.get_output(network, deterministic=True)
        val_loss = lasagne.objectives.squared_error(clean, input_var).mean()
        compiled = CompiledRun(network, input_var,
                               theano.function([input_var], loss, updates=updates),
                               theano.function([input_var], val_loss),
                               theano.function([input_var], clean), learning_rate)
        if use_cache:
            function_cache.save(key, compiled)
    compiled.learning_rate.set_value(np.float32(settings.lr))
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

    def __init__(self, settings, out_dir, log=cli.say, progress=False):
        """progress: a progress bar per epoch: True (always, as in a notebook),
        None (where stderr is a terminal, as the command has it) or False.
        ValueError for an empty out_dir (the run's files went into the working
        directory, where --out '' is refused)."""
        if not out_dir:
            raise ValueError("out_dir={!r} names no directory: give one ('.' for the working "
                             "directory)".format(out_dir))
        self.settings = settings
        self.out_dir = os.path.expanduser(out_dir)  # as --out: "~/runs/x" made a "~" here
        self.log = log
        self.progress = progress
        self.shuffle_rng = np.random.RandomState(settings.seed)
        self.compiled = compile_run(settings)
        self.network = self.compiled.network
        # What a checkpoint keeps: parameters and optimizer state (the
        # learning rate is a setting).
        self.state = [var for var in self.compiled.train_fn.get_shared()
                      if var is not self.compiled.learning_rate]
        self.epoch, self.batch, self.err_sum, self.metrics = 0, 0, 0.0, []
        self.epochs = -1
        self.train_images = -1  # what its epochs go over, once it has trained (-1: not yet)
        self.epoch_rng_state = self.shuffle_rng.get_state()
        self.dead_reported = False
        self.continues_out_dir = False  # saved there, or restored from there: its own

    # -- checkpoints -------------------------------------------------------
    def path(self, name):
        """The path of ``name`` in the run's directory."""
        return os.path.join(self.out_dir, name)

    def save(self):
        """Save parameters (model.npz), full state (checkpoint.npz) and metrics,
        all three or none of them."""
        state = checkpoint.encode(checkpoint.Checkpoint(
            settings=asdict(self.settings), architecture=architecture(self.network),
            state=[var.get_value() for var in self.state], metrics=self.metrics,
            epoch=self.epoch, batch=self.batch, err_sum=self.err_sum,
            rng_state=self.epoch_rng_state, epochs=self.epochs,
            train_images=self.train_images))
        params = files.npz_bytes(files.param_values(self.network))
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        try:
            files.write_files_atomically([
                (self.path(files.CHECKPOINT_FILE), lambda f: f.write(state), "wb"),
                (self.path(files.MODEL_FILE), lambda f: f.write(params), "wb"),
                (self.path(files.METRICS_FILE), lambda f: f.write(lines), "w")])
        except OSError as e:  # a full disk, say: what was saved before is all there is
            raise TrainingError("{}; {}".format(cli.describe(e), self.last_good_checkpoint()))
        self.continues_out_dir = True

    def restore(self, saved):
        """Continue from the Checkpoint ``saved``; TrainingError if it is not this run's
        kind, or if this Run's settings differ from its run's but for the lr (a Run of
        batch size 50 would take batch 3 of a run of 128 as its own batch 3)."""
        differ = [name for name, value in saved.settings.items()
                  if name not in CHANGEABLE_ON_RESUME and getattr(self.settings, name) != value]
        if differ:
            theirs = ", ".join("{}={!r}".format(name, saved.settings[name]) for name in differ)
            ours = ", ".join("{}={!r}".format(name, getattr(self.settings, name))
                             for name in differ)
            raise TrainingError("{}: the checkpoint's run has {}; this Run has {}: make the "
                                "Run with the run's own settings, train.Run(train.Settings("
                                "**saved.settings), out_dir)".format(saved.path, theirs, ours))
        if saved.architecture != architecture(self.network):
            raise TrainingError("{}: checkpoint of another architecture".format(saved.path))
        if len(saved.state) != len(self.state) or any(
                np.shape(value) != np.shape(var.get_value())
                for value, var in zip(saved.state, self.state)):
            raise TrainingError("{}: checkpoint of another training setup "
                                "(optimizer or noise)".format(saved.path))
        for value, var in zip(saved.state, self.state):
            if value.dtype != var.dtype:
                raise TrainingError(
                    "{}: checkpoint of a {} run; this one computes in {}: resume with "
                    "THEANO_FLAGS=floatX={}".format(saved.path, value.dtype, var.dtype,
                                                    value.dtype))
        for value, var in zip(saved.state, self.state):
            var.set_value(value)
        self.metrics = saved.metrics
        self.epoch, self.batch, self.err_sum = saved.epoch, saved.batch, saved.err_sum
        self.epochs = saved.epochs
        self.train_images = saved.train_images
        self.epoch_rng_state = saved.rng_state
        self.continues_out_dir = True

    def last_good_checkpoint(self):
        """How a failure message speaks of what is saved."""
        if os.path.exists(self.path(files.CHECKPOINT_FILE)):
            return "the last good checkpoint in {} is intact".format(self.out_dir)
        return "no checkpoint was saved yet"

    # -- the loop ----------------------------------------------------------
    def checked(self, X_train, X_val, epochs):
        """X_train and X_val as floatX (N, 1, 28, 28) arrays, if ``train`` can run
        ``epochs`` on them here. Other images (8-bit or 0-255 pixels, flat ones),
        too few training images for a batch, no validation image or an
        ``epochs`` that is not a positive integer, or fewer than the run has
        begun (it counts from the run's start), and other training images than
        an epoch stopped midway began on, are a ValueError saying so,
        as is an ``out_dir`` where the run's files cannot be written (a file,
        say: found before an epoch is trained, not when it is to be saved); an
        ``out_dir`` holding another run's files (not restored into this Run),
        which training would overwrite, a TrainingError."""
        shape = self.network.output_shape[1:]
        X_train = as_batch(X_train, shape, "X_train", pixels=True)
        X_val = as_batch(X_val, shape, "X_val", pixels=True)
        if len(X_train) < self.settings.batch_size:
            raise ValueError("X_train holds {} images, fewer than a batch of {}".format(
                len(X_train), self.settings.batch_size))
        if not len(X_val):
            raise ValueError("X_val holds no images")
        if not cli.epochs.accepts(epochs):
            raise ValueError("epochs={!r}, not {}".format(epochs, cli.epochs.wanted))
        begun = epochs_begun(self.epoch, self.batch)
        if epochs < begun:  # restored at epoch 5, train(3) would train nothing, saying nothing
            raise ValueError("epochs={} is fewer than the {} epochs this run has begun "
                             "(epochs counts from the run's start, not from here); give {} "
                             "or more".format(epochs, begun, begun))
        if self.batch and self.train_images not in (-1, len(X_train)):
            # Its order is a shuffle of those images, and its loss so far their sum:
            # 1,000 after 31 batches of 10,000 made an epoch's loss 0.24 for 0.03.
            raise ValueError("X_train holds {} images, but this run stopped in the middle of "
                             "epoch {} (after batch {}) of an epoch over {}: finish it on "
                             "those".format(len(X_train), self.epoch + 1, self.batch,
                                            self.train_images))
        cli.writable_directory(self.out_dir, "out_dir")
        earlier = [] if self.continues_out_dir else earlier_run(self.out_dir)
        if earlier:  # in a notebook, out_dir="runs/default" of a run of the command, say
            resume = self.path(files.CHECKPOINT_FILE) if files.CHECKPOINT_FILE in earlier else ""
            raise TrainingError("{} holds {} of an earlier run, which this run would "
                                "overwrite: choose another out_dir{}".format(
                                    self.out_dir, " and ".join(earlier), resume and (
                                        ", or continue that run: run.restore(train."
                                        "load_checkpoint({!r}))".format(resume))))
        return X_train, X_val

    def train(self, X_train, X_val, epochs, stop_requested=None):
        """Train until ``epochs`` epochs are done or stop_requested() is true.

        X_train, X_val: (N, 1, 28, 28) float images, pixels in [0, 1) (as
        ``convae.data`` loads them), as ``checked`` takes them.
        stop_requested: asked after each batch (the command's signal handlers
        answer it). Without it, in the main thread (a notebook), Ctrl-C or the
        notebook's interrupt stops training at the end of its batch, saves
        there and raises KeyboardInterrupt; ``train`` again continues. (Raised
        inside a step, it would leave the step's updates half made.)
        Returns True if all epochs finished, False if stopped early (state saved).
        Raises TrainingError on a NaN or infinite loss, leaving the last
        checkpoint as it was.
        """
        if stop_requested is None and threading.current_thread() is threading.main_thread():
            with cli.signals_noted(signal.SIGINT) as interrupts:
                finished = self.train(X_train, X_val, epochs, lambda: bool(interrupts))
            if interrupts and not finished:
                raise KeyboardInterrupt("saved in {}; train() again continues at epoch {}, "
                                        "batch {}".format(self.out_dir, self.epoch + 1,
                                                          self.batch + 1))
            return finished
        stop_requested = stop_requested or (lambda: False)
        X_train, X_val = self.checked(X_train, X_val, epochs)
        batch_size = self.settings.batch_size
        self.epochs, self.train_images = epochs, len(X_train)
        n_batches = len(X_train) // batch_size
        train_fn, val_fn = self.compiled.train_fn, self.compiled.val_fn
        while self.epoch < epochs:
            self.shuffle_rng.set_state(self.epoch_rng_state)
            order = self.shuffle_rng.permutation(len(X_train))
            start, first = time.time(), self.batch
            batches = iterate_minibatches(X_train, batch_size, order)
            with self.progress_bar(epochs, n_batches) as bar:
                for index, batch in enumerate(batches):
                    if index < self.batch:
                        continue
                    err = float(train_fn(batch))
                    if not np.isfinite(err):
                        raise TrainingError(
                            "training loss became {} in epoch {}, batch {}; stopped "
                            "without saving: {} (try a lower --lr)".format(
                                err, self.epoch + 1, index + 1, self.last_good_checkpoint()))
                    self.err_sum += err
                    self.batch = index + 1
                    bar.update(batch_size)
                    bar.set_postfix(loss="{:.6f}".format(self.err_sum / self.batch),
                                    refresh=False)
                    if stop_requested() and self.batch < n_batches:
                        self.save()
                        return False
            seconds = time.time() - start
            val_err = mean_loss(val_fn, X_val)
            if not np.isfinite(val_err):
                raise TrainingError("validation loss became {} in epoch {}; {}".format(
                    val_err, self.epoch + 1, self.last_good_checkpoint()))
            images_per_s = (self.batch - first) * batch_size / max(seconds, 1e-9)
            self.metrics.append(dict(
                epoch=self.epoch + 1, seconds=round(seconds, 3),
                images_per_s=round(images_per_s, 1),
                train_loss=self.err_sum / n_batches, val_loss=val_err))
            line = ("Epoch {} of {} took {:.1f}s ({:.0f} images/s): training loss {:.6f}, "
                    "validation loss {:.6f}".format(self.epoch + 1, epochs, seconds,
                                                    images_per_s, self.err_sum / n_batches,
                                                    val_err))
            self.epoch, self.batch, self.err_sum = self.epoch + 1, 0, 0.0
            self.epoch_rng_state = self.shuffle_rng.get_state()
            self.save()  # first: a line that cannot be written (a closed pipe) loses nothing
            self.log(line)
            self.report_dead_network(X_val)
            if stop_requested() and self.epoch < epochs:
                return False
        return True

    def progress_bar(self, epochs, n_batches):
        """A tqdm bar over this epoch's training images (rate, time left, running
        loss); it vanishes when the epoch ends (see ``progress``)."""
        batch_size = self.settings.batch_size
        # Standard error closed (2>&-) leaves sys.stderr None, which tqdm
        # cannot ask whether it is a terminal: it drew on None, and training
        # failed unseen. No bar then.
        shown = self.progress if sys.stderr is not None else False
        return tqdm(total=n_batches * batch_size, initial=self.batch * batch_size,
                    desc="Epoch {}/{}".format(self.epoch + 1, epochs), unit="img",
                    leave=False, dynamic_ncols=True,
                    disable=None if shown is None else not shown)

    def report_dead_network(self, X_val, images=100):
        """Say so, once, if the network gives every input the same reconstruction.

        That is what too large a learning rate leaves: every unit of a layer
        saturated or dead, no gradient left to bring them back.
        """
        if self.dead_reported or len(X_val) < 2:
            return
        outputs = self.compiled.reconstruct_fn(X_val[:images])
        if np.all(outputs == outputs[:1]):
            self.dead_reported = True
            self.log("Warning: the network now gives every input the same "
                     "reconstruction: its units have died and training cannot revive "
                     "them (lr {:g}); start again with a lower --lr".format(self.settings.lr))


def parse_args(argv=None):
    """Command-line flags of the training command.

    A setting not given on the command line is None here: a new run takes
    its default (``new_settings``), a resumed run its checkpoint's.
    """
    p = argparse.ArgumentParser(
        prog="convae-train",
        description="Train the post's convolutional autoencoder.")
    p.add_argument("--data-dir", type=cli.nonempty_path, help="directory with the four IDX files "
                   "(default: $CONVAE_DATA_DIR/<dataset> or a per-user cache; "
                   "missing files are downloaded)")
    p.add_argument("--dataset", choices=sorted(data.DATASETS),
                   help="default: mnist")
    p.add_argument("--epochs", type=cli.epochs,
                   help="default: {} (resumed: the run's own)".format(DEFAULT_EPOCHS))
    p.add_argument("--batch-size", type=cli.positive_int, help="default: 128")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adam")
    p.add_argument("--lr", type=cli.positive_float, help="learning rate (default: "
                   "1e-3 for adam, 0.01 for nesterov)")
    p.add_argument("--seed", type=cli.seed, help="default: 1")
    p.add_argument("--limit-train", type=cli.positive_int, metavar="N",
                   help="use only the first N training images")
    p.add_argument("--limit-val", type=cli.positive_int, metavar="N",
                   help="use only the first N validation images")
    p.add_argument("--noise", choices=NOISES,
                   help="corrupt the input (denoising autoencoder); the target "
                   "stays clean (default: none)")
    p.add_argument("--noise-level", type=cli.fraction,
                   help="std of the Gaussian noise, or masking probability (default: 0.3)")
    p.add_argument("--out", type=cli.nonempty_path, default="runs/default",
                   help="directory for checkpoints and metrics (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out")
    args = p.parse_args(argv)
    noiseless = args.noise == "none" or (args.noise is None and not args.resume)
    if args.noise_level is not None and noiseless:
        # Without noise the level is unused: a run the user meant to be a
        # denoising one would train as a plain one.
        p.error("--noise-level needs --noise gaussian or --noise mask")
    return args


def given_settings(args):
    """The settings given on the command line, as a dict (flags left out are absent)."""
    return {field.name: getattr(args, field.name) for field in fields(Settings)
            if getattr(args, field.name) is not None}


def new_settings(args):
    """The Settings of a new run: the flags given, defaults for the rest."""
    given = given_settings(args)
    given.setdefault("lr", DEFAULT_LR[given.get("optimizer", Settings.optimizer)])
    return Settings(**given)


def resumed_settings(saved, args):
    """The Settings of a run resumed from ``saved``, and a line for each change.

    A new --lr applies from the resume point on; any other flag that differs
    from the run's own setting is refused (TrainingError), so that a resumed
    run is always the run it continues.
    """
    settings, notes = Settings(**saved), []
    for name, value in given_settings(args).items():
        old = getattr(settings, name)
        if value == old:
            continue
        flag = "--" + name.replace("_", "-")
        if name not in CHANGEABLE_ON_RESUME:
            raise TrainingError(
                "--resume: {} {} differs from the run's {}; a resumed run keeps its "
                "settings (only --epochs and --lr may change)".format(flag, value, old))
        notes.append("{} {:g} from here on (the run had {:g})".format(flag, value, old))
        settings = replace(settings, **{name: value})
    return settings, notes


def epochs_begun(epoch, batch):
    """Epochs a run has begun: ``epoch`` finished, and the next if ``batch`` batches of it are."""
    return epoch + (1 if batch > 0 else 0)


def resumed_epochs(saved, args):
    """The epochs a resumed run trains to, and a line if --epochs changed them.

    TrainingError for an --epochs below the epochs the run has begun: it
    cannot go back, and cutting an epoch short would leave metrics for none.
    """
    if args.epochs is None:
        return (saved.epochs if saved.epochs > 0 else DEFAULT_EPOCHS), []
    begun = epochs_begun(saved.epoch, saved.batch)
    if args.epochs < begun:
        raise TrainingError("--resume: --epochs {} is fewer than the {} epochs the run has "
                            "begun; give {} or more".format(args.epochs, begun, begun))
    if args.epochs == saved.epochs:
        return args.epochs, []
    had = "the run had {}".format(saved.epochs) if saved.epochs > 0 else "not recorded"
    return args.epochs, ["--epochs {}: training to epoch {} ({})".format(
        args.epochs, args.epochs, had)]


def load_checkpoint(path):
    """The Checkpoint at ``path`` (a checkpoint.npz, or the run directory holding
    it; a leading ``~`` expanded), its settings those of a Settings
    (CheckpointError if not)."""
    path = files.in_run(path, files.CHECKPOINT_FILE)
    saved = checkpoint.load(path, [field.name for field in fields(Settings)])
    try:
        Settings(**saved.settings)
    except ValueError as e:
        raise checkpoint.CheckpointError("{}: its settings cannot be a run's ({})".format(
            path, e))
    return saved


def prepare_data(settings, data_dir):
    """Training, validation and test images for ``settings`` (labels dropped);
    TrainingError for a limit beyond its split or too few images for a batch."""
    X_train, _, X_val, _, X_test, _ = data.load_dataset(settings.dataset, data_dir)
    for flag, limit, images, split in (("--limit-train", settings.limit_train, X_train, "training"),
                                       ("--limit-val", settings.limit_val, X_val, "validation")):
        if limit and limit > len(images):
            raise TrainingError("{} {} is more than the {} {} images of {}".format(
                flag, limit, len(images), split, settings.dataset))
    if settings.limit_train:
        X_train = X_train[:settings.limit_train]
    if settings.limit_val:
        X_val = X_val[:settings.limit_val]
    if len(X_train) < settings.batch_size:
        raise TrainingError("--batch-size {}: the {} training images do not fill one "
                            "batch".format(settings.batch_size, len(X_train)))
    return X_train, X_val, X_test


def earlier_run(out_dir):
    """The names of the files of a run in ``out_dir``, which a new run would
    overwrite (checkpoint.npz, model.npz, metrics.jsonl, test.json): [] if none."""
    return [name for name in (files.CHECKPOINT_FILE, files.MODEL_FILE, files.METRICS_FILE,
                              files.TEST_FILE)
            if os.path.exists(os.path.join(out_dir, name))]


def run_to_start(args):
    """What ``args`` ask for, checked against ``--out`` before anything is
    compiled: (the Checkpoint to resume or None, Settings, epochs, lines to
    print on resuming). TrainingError where ``--out`` does not fit the ask."""
    path = os.path.join(args.out, files.CHECKPOINT_FILE)
    if args.resume:
        if not os.path.isfile(path):
            raise TrainingError("--resume: no checkpoint at " + path)
        saved = load_checkpoint(path)
        settings, notes = resumed_settings(saved.settings, args)
        epochs, epoch_notes = resumed_epochs(saved, args)
        return saved, settings, epochs, notes + epoch_notes
    earlier = earlier_run(args.out)
    if files.CHECKPOINT_FILE in earlier:
        raise TrainingError("{} holds a run already: pass --resume to continue "
                            "it, or choose another --out".format(args.out))
    if earlier:  # a run whose checkpoint is gone: a new one would overwrite them
        raise TrainingError("{} holds {} of an earlier run, which a new run would "
                            "overwrite: choose another --out".format(
                                args.out, " and ".join(earlier)))
    return None, new_settings(args), args.epochs or DEFAULT_EPOCHS, []


def open_run(settings, out_dir, saved, epochs, notes):
    """The compiled Run, continued from ``saved`` (if not None) and saved again,
    so that ``out_dir`` describes the resume point whatever was cut off."""
    cli.say("Compiling the network (Theano caches this after the first run)...")
    run = Run(settings, out_dir, progress=None)
    if saved is not None:
        run.restore(saved)
        run.epochs = epochs
        run.save()
        if run.epoch >= epochs:  # a finished run: only the test set is left
            cli.say("Training was done ({} of {} epochs); evaluating on the test set "
                    "again".format(run.epoch, epochs))
        else:
            cli.say("Resuming at epoch {}, batch {}".format(run.epoch + 1, run.batch + 1))
        for note in notes:
            cli.say(note)
    return run


def lock_out(out):
    """A descriptor holding the lock on the directory ``out``, or None where its
    file system takes no locks (some NFS mounts: said in a line, and training
    goes on). TrainingError where another convae-train holds it."""
    try:
        return files.lock(out)
    except BlockingIOError:
        raise TrainingError("--out {}: another convae-train is running there; let it "
                            "finish, or choose another --out".format(out))
    except OSError as e:  # said "error: No locks available", naming nothing
        if e.errno != errno.ENOLCK:
            raise
    cli.say("--out {}: its file system takes no locks, so nothing would stop a second "
            "convae-train there".format(out))
    return None


def train_until_stopped(run, X_train, X_val, epochs):
    """``run.train`` until done, or until Ctrl-C, the SIGTERM a batch scheduler
    sends before it kills a job, or the SIGHUP of a closed terminal (an SSH
    session that dropped), which save the state at the current batch first.
    Returns the number of the signal that stopped it, or None."""
    with cli.signals_noted(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as stops:
        finished = run.train(X_train, X_val, epochs, stop_requested=lambda: bool(stops))
    return None if finished else stops[0]


def main(argv=None):
    """The training command; returns the process exit code."""
    args = parse_args(argv)
    convae.runtime.enable()
    with cli.stopping_signals_interrupt():
        stage = "before training started"
        lock, made = None, []
        try:
            cli.writable_directory(args.out, "--out")
            saved, settings, epochs, notes = run_to_start(args)
            X_train, X_val, X_test = prepare_data(settings, args.data_dir)
            made = files.make_directories(args.out)  # removed again if left empty
            lock = lock_out(args.out)
            files.remove_temporaries(args.out, idle_s=0)  # no other run writes here now
            run = open_run(settings, args.out, saved, epochs, notes)
            stage = "while training"
            stopped_by = train_until_stopped(run, X_train, X_val, epochs)
            if stopped_by:
                cli.say("Interrupted: state saved in {}; continue with --resume".format(
                    args.out))
                return 128 + stopped_by  # the shell's code for that signal: 130, 143, 129
            stage = ("during the final test evaluation; training is complete and saved "
                     "in {} (--resume evaluates again)".format(args.out))
            test_err = mean_loss(run.compiled.val_fn, X_test)
            if not np.isfinite(test_err):  # would also be no JSON in test.json
                raise TrainingError(
                    "test loss became {}: the network has diverged; its epochs are saved "
                    "in {}, but start again with a lower --lr".format(test_err, args.out))
            files.write_atomically(os.path.join(args.out, files.TEST_FILE),
                                   lambda f: f.write(json.dumps({"test_mse": test_err}) + "\n"),
                                   mode="w")
            cli.say("Final test MSE: {:.6f}".format(test_err))  # saved first, as each epoch
            return 0
        except MemoryError as e:  # a batch too large for this machine
            return cli.report_error("convae-train", TrainingError(
                "out of memory {} ({}): a smaller --batch-size needs less".format(
                    stage, cli.describe(e))))
        except Exception as e:
            if not cli.reported_in_one_line(e, (TrainingError, checkpoint.CheckpointError,
                                                data.DataError, cli.PathError, OSError)):
                raise
            return cli.report_error("convae-train", e)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM or SIGHUP outside training
            print("convae-train: interrupted " + stage, file=sys.stderr)
            return cli.exit_code(e)
        finally:
            if lock is not None:
                os.close(lock)
            files.remove_empty(made)


if __name__ == "__main__":
    sys.exit(main())
