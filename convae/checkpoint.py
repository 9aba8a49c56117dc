"""The training checkpoint, ``OUT/checkpoint.npz``: written and read here, and only here.

An ``.npz`` of

* ``settings``: the run's settings (``convae.train.Settings``) as JSON;
* ``architecture``: the layers' types, output shapes and parameter shapes as
  JSON, so that a checkpoint of another network is refused;
* ``shared_0`` ... ``shared_n``: every shared variable the training function
  updates (the parameters, then the optimizer's state), in Theano's order;
* ``metrics``: the per-epoch records so far, as JSON;
* ``epochs``: the number of epochs the run was told to train (-1: unknown,
  in checkpoints written before it was kept);
* ``train_images``: how many training images its epochs go over (-1: unknown,
  as ``epochs``), so that an epoch stopped midway is finished on as many;
* ``position``: [epoch, batch], the epochs and batches done; ``err_sum``: the
  sum of the training losses of the current epoch's batches so far;
* ``rng_keys``, ``rng_extra``: the shuffling generator's state at the start
  of the current epoch (NumPy's MT19937 state: keys, then pos, has_gauss,
  cached_gaussian).
"""
import json
from dataclasses import dataclass

import numpy as np

from convae.files import NpzFileError, npz_bytes, read_npz


class CheckpointError(Exception):
    """A checkpoint is unreadable or not a convae checkpoint; the message is one line."""


@dataclass
class Checkpoint:
    """Everything a training run needs to continue exactly where it stopped."""

    settings: dict
    architecture: str
    state: list
    metrics: list
    epoch: int
    batch: int
    err_sum: float
    rng_state: tuple
    epochs: int = -1
    train_images: int = -1
    path: str = ""


def encode(checkpoint):
    """The bytes of the .npz file holding ``checkpoint``."""
    _, keys, pos, has_gauss, gauss = checkpoint.rng_state
    arrays = {"shared_%d" % i: value for i, value in enumerate(checkpoint.state)}
    arrays.update(
        architecture=np.array(checkpoint.architecture),
        settings=np.array(json.dumps(checkpoint.settings)),
        metrics=np.array(json.dumps(checkpoint.metrics)),
        position=np.array([checkpoint.epoch, checkpoint.batch]),
        err_sum=np.array(checkpoint.err_sum), epochs=np.array(checkpoint.epochs),
        train_images=np.array(checkpoint.train_images),
        rng_keys=keys, rng_extra=np.array([pos, has_gauss, gauss]))
    return npz_bytes(arrays)


def settings_of(path):
    """The run's settings (a dict) in the checkpoint ``path`` (read whole, and
    so checked whole, by ``files.read_npz``: a few MB); CheckpointError if it
    is not a readable convae checkpoint."""
    try:
        settings = json.loads(str(read_npz(path)["settings"]))
    except NpzFileError as e:
        raise CheckpointError(str(e))
    except (ValueError, KeyError) as e:
        raise _not_a_checkpoint(path, e)
    if not isinstance(settings, dict):
        raise _not_a_checkpoint(path, ValueError("settings are not a mapping"))
    return settings


def _not_a_checkpoint(path, error):
    """The CheckpointError for a file that ``error`` shows is no convae checkpoint."""
    return CheckpointError("{}: not a convae checkpoint ({}{})".format(
        path, "no " if isinstance(error, KeyError) else "", error))


def load(path, setting_names):
    """The Checkpoint in ``path``; CheckpointError if it is not a readable convae checkpoint.

    setting_names: the names its settings must have, every one of them.
    """
    try:
        saved = read_npz(path)
    except NpzFileError as e:
        raise CheckpointError(str(e))
    try:
        settings = json.loads(str(saved["settings"]))
        missing = [name for name in setting_names if name not in settings]
        unknown = sorted(set(settings) - set(setting_names))
        if missing or unknown:
            raise CheckpointError("{}: its settings {} {}".format(
                path, "lack" if missing else "have unknown",
                ", ".join(repr(name) for name in missing or unknown)))
        state = [saved["shared_%d" % i]
                 for i in range(sum(key.startswith("shared_") for key in saved))]
        epoch, batch = (int(v) for v in saved["position"])
        pos, has_gauss, gauss = saved["rng_extra"]
        return Checkpoint(
            settings=settings, architecture=str(saved["architecture"]),
            state=state, metrics=json.loads(str(saved["metrics"])),
            epoch=epoch, batch=batch, err_sum=float(saved["err_sum"]),
            rng_state=("MT19937", saved["rng_keys"], int(pos), int(has_gauss), float(gauss)),
            epochs=int(saved["epochs"]) if "epochs" in saved else -1,
            train_images=int(saved["train_images"]) if "train_images" in saved else -1,
            path=path)
    except (ValueError, KeyError, TypeError) as e:
        if "arr_0" in saved and "settings" not in saved:  # the reverse: files.load_params
            raise CheckpointError("{}: a parameter file (model.npz), not a convae-train "
                                  "checkpoint: give the checkpoint.npz beside it, or the run "
                                  "directory".format(path))
        raise _not_a_checkpoint(path, e)
