"""The training checkpoint, ``OUT/checkpoint.npz``: written and read here, and only here.

An ``.npz`` of

* ``settings``: the run's settings (``convae.train.Settings``) as JSON;
* ``architecture``: the layers' types, output shapes and parameter shapes as
  JSON, so that a checkpoint of another network is refused;
* ``shared_0`` ... ``shared_n``: every shared variable the training function
  updates (the parameters, then the optimizer's state), in Theano's order;
* ``metrics``: the per-epoch records so far, as JSON;
* ``position``: [epoch, batch], the epochs and batches done; ``err_sum``: the
  sum of the training losses of the current epoch's batches so far;
* ``rng_keys``, ``rng_extra``: the shuffling generator's state at the start
  of the current epoch (NumPy's MT19937 state: keys, then pos, has_gauss,
  cached_gaussian).
"""
import json
from dataclasses import dataclass

import numpy as np

from convae.files import save_npz


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
    path: str = ""


def save(path, checkpoint):
    """Write ``checkpoint`` to ``path`` atomically."""
    _, keys, pos, has_gauss, gauss = checkpoint.rng_state
    arrays = {"shared_%d" % i: value for i, value in enumerate(checkpoint.state)}
    arrays.update(
        architecture=np.array(checkpoint.architecture),
        settings=np.array(json.dumps(checkpoint.settings)),
        metrics=np.array(json.dumps(checkpoint.metrics)),
        position=np.array([checkpoint.epoch, checkpoint.batch]),
        err_sum=np.array(checkpoint.err_sum),
        rng_keys=keys, rng_extra=np.array([pos, has_gauss, gauss]))
    save_npz(path, arrays)


def load(path):
    """The Checkpoint in ``path``; CheckpointError if it is not a readable convae checkpoint."""
    try:
        with np.load(path) as f:
            saved = {key: f[key] for key in f.files}
        state = [saved["shared_%d" % i]
                 for i in range(sum(key.startswith("shared_") for key in saved))]
        epoch, batch = (int(v) for v in saved["position"])
        pos, has_gauss, gauss = saved["rng_extra"]
        return Checkpoint(
            settings=json.loads(str(saved["settings"])),
            architecture=str(saved["architecture"]),
            state=state, metrics=json.loads(str(saved["metrics"])),
            epoch=epoch, batch=batch, err_sum=float(saved["err_sum"]),
            rng_state=("MT19937", saved["rng_keys"], int(pos), int(has_gauss), float(gauss)),
            path=path)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise CheckpointError("{}: corrupt or not a convae checkpoint ({})".format(path, e))
