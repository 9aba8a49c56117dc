"""The training loop on a slice of real MNIST: learning, determinism, resume, failures."""
import dataclasses
import errno
import gc
import io
import itertools
import json
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lasagne
from convae import checkpoint, cli, files, train
from convae.model import build_convolutional_autoencoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--limit-train", "600", "--limit-val", "200", "--batch-size", "100"]


def settings(**changes):
    base = dict(dataset="mnist", batch_size=100, optimizer="adam", lr=1e-3,
                seed=3, limit_train=600, limit_val=200, noise="none",
                noise_level=0.0)
    base.update(changes)
    return train.Settings(**base)


@pytest.fixture(scope="module")
def small_data(mnist_dir):
    return train.prepare_data(settings(), mnist_dir)


def quiet(*args):
    pass


def params_of(run):
    return lasagne.layers.get_all_param_values(run.network)


def test_short_run_lowers_validation_loss(small_data, tmp_path):
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    before = train.mean_loss(run.compiled.val_fn, X_val)
    assert run.train(X_train, X_val, 3)
    losses = [m["val_loss"] for m in run.metrics]
    assert len(losses) == 3
    assert losses[-1] < losses[0] < before
    # Better than predicting a blank image, whose MSE is the mean squared pixel.
    assert losses[-1] < float(np.mean(X_val ** 2))


def test_float64_images_train_as_the_float32_ones_they_equal(small_data, tmp_path):
    """A notebook's float64 images (a NumPy default) were a Theano TypeError
    with a backtrace; MNIST's pixels, k/256, are the same numbers in both."""
    X_train, X_val, _ = small_data
    losses = []
    for dtype in (np.float32, np.float64):
        run = train.Run(settings(), str(tmp_path / np.dtype(dtype).name), log=quiet)
        assert run.train(X_train.astype(dtype), X_val.astype(dtype), 1)
        losses.append((run.metrics[0]["train_loss"], run.metrics[0]["val_loss"]))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("change, said", [
    (lambda X, V, E: ((X * 256).astype(np.uint8), V, E),
     "X_train must be floats in [0, 1): divide 8-bit pixels by 256, got uint8"),
    (lambda X, V, E: (X, V * 255, E),
     "X_val must be floats in [0, 1): divide 8-bit pixels by 256, got values from 0 to "),
    (lambda X, V, E: (X.reshape(len(X), 784), V, E),
     "X_train must be an array of shape (N, 1, 28, 28), got shape (600, 784)"),
    (lambda X, V, E: (X[:99], V, E), "X_train holds 99 images, fewer than a batch of 100"),
    (lambda X, V, E: (X, V[:0], E), "X_val holds no images"),
    (lambda X, V, E: (X, V, 0), "epochs=0, not a positive integer of at most 9223372036854775807"),
    (lambda X, V, E: (X, V, "2"), "epochs='2', not a positive integer of at most ")])
def test_run_train_refuses_what_it_cannot_train_on_saying_what(small_data, tmp_path,
                                                              change, said):
    """In a notebook, 0-255 pixels (uint8 or float) trained for good at a loss
    of 6,900 without a word; flat images, too few images, no validation image
    or epochs="2" ended in tracebacks from Theano or a ZeroDivisionError."""
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    with pytest.raises(ValueError) as error:
        run.train(*change(X_train, X_val, 2))
    assert str(error.value).startswith(said) and run.metrics == []
    assert os.listdir(str(tmp_path)) == []


def test_an_out_dir_that_cannot_hold_the_run_is_refused_before_training(small_data,
                                                                        tmp_path):
    """A notebook's Run(settings, "model.npz") trained a whole epoch, then failed
    to save it, saying "File exists: model.npz"."""
    X_train, X_val, _ = small_data
    (tmp_path / "model.npz").write_bytes(b"")
    for out, said in ((tmp_path / "model.npz", "not a directory"),
                      (tmp_path / "model.npz" / "run", "model.npz is not a directory")):
        run = train.Run(settings(), str(out), log=quiet)
        run.compiled = run.compiled._replace(train_fn=None)  # a step would fail the test
        with pytest.raises(ValueError) as error:
            run.train(X_train, X_val, 1)
        assert str(error.value).startswith("out_dir {}: ".format(out)), str(error.value)
        assert said in str(error.value)
    with pytest.raises(ValueError) as error:  # as --out '' is refused: it wrote into "."
        train.Run(settings(), "", log=quiet)
    assert str(error.value) == ("out_dir='' names no directory: give one ('.' for the working "
                                "directory)")


def test_a_new_run_in_a_notebook_refuses_the_directory_of_an_earlier_one(small_data,
                                                                         tmp_path):
    """train.Run(settings, "runs/default") in a notebook overwrote the
    command's 20-epoch run there, checkpoint and all, without a word (and left
    its test.json beside the new run's files)."""
    X_train, X_val, _ = small_data
    first = train.Run(settings(), str(tmp_path), log=quiet)
    assert first.train(X_train, X_val, 1)
    (tmp_path / "test.json").write_text('{"test_mse": 0.01}\n')
    before = snapshot(tmp_path)
    second = train.Run(settings(), str(tmp_path), log=quiet)
    with pytest.raises(train.TrainingError) as error:
        second.train(X_train, X_val, 2)
    assert str(error.value) == (
        "{0} holds checkpoint.npz and model.npz and metrics.jsonl and test.json of an "
        "earlier run, which this run would overwrite: choose another out_dir, or continue "
        "that run: run.restore(train.load_checkpoint('{0}/checkpoint.npz'))".format(tmp_path))
    assert snapshot(tmp_path) == before
    # Restored, it is that run: it continues there, as --resume does.
    second.restore(train.load_checkpoint(str(tmp_path / "checkpoint.npz")))
    assert second.train(X_train, X_val, 2) and [m["epoch"] for m in second.metrics] == [1, 2]
    assert second.train(X_train, X_val, 3)  # its own files: it goes on writing them
    (tmp_path / "checkpoint.npz").unlink()  # a run's parameters alone are kept too
    with pytest.raises(train.TrainingError, match="holds model.npz and metrics.jsonl and "
                       "test.json of an earlier run.*choose another out_dir$"):
        train.Run(settings(), str(tmp_path), log=quiet).train(X_train, X_val, 1)


def test_a_notebook_s_paths_take_a_leading_tilde_as_the_flags_do(small_data, mnist_dir,
                                                                  tmp_path, monkeypatch):
    """Python leaves "~" in a path where a shell expands it: in a notebook,
    train.Run(settings, "~/runs/nb") trained into a directory named "~" in the
    working directory, Codec("~/runs/nb") could not read the run there, and
    load_dataset("mnist", "~/mnist") looked in (and would download into) "./~"."""
    from convae import data
    from convae.codec import Codec
    home, work = tmp_path / "home", tmp_path / "work"
    os.makedirs(home / "runs")
    os.makedirs(work)
    os.symlink(mnist_dir, home / "mnist")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    X_train, X_val, _ = small_data
    run = train.Run(settings(), "~/runs/nb", log=quiet)
    assert run.train(X_train, X_val, 1)
    assert os.listdir(work) == [] and (home / "runs" / "nb" / "checkpoint.npz").is_file()
    np.testing.assert_array_equal(Codec("~/runs/nb").reconstruct(X_val[:2]),
                                  run.compiled.reconstruct_fn(X_val[:2]))
    X_test, _ = data.load_test_set("mnist", "~/mnist", fetch=False)
    assert X_test.shape == (10000, 1, 28, 28) and os.listdir(work) == []
    # load_checkpoint: "~" too (it said "cannot be read"), and the run
    # directory, as Codec and --weights take it (it said "Is a directory").
    for path in ("~/runs/nb/checkpoint.npz", "~/runs/nb", str(home / "runs" / "nb")):
        saved = train.load_checkpoint(path)
        assert (saved.epoch, saved.path) == (1, str(home / "runs" / "nb" / "checkpoint.npz"))
    with pytest.raises(checkpoint.CheckpointError) as error:
        train.load_checkpoint("~/runs/nb/model.npz")
    assert str(error.value) == (
        "{}: a parameter file (model.npz), not a convae-train checkpoint: give the "
        "checkpoint.npz beside it, or the run directory".format(home / "runs" / "nb" / "model.npz"))


def test_an_epoch_is_saved_before_its_line_is_printed(small_data, tmp_path):
    """`convae-train | head -1`: the epoch line's write fails (a closed pipe);
    the epoch it reports is on disk already."""
    X_train, X_val, _ = small_data

    def closed_pipe(line):
        raise BrokenPipeError(32, "Broken pipe")
    run = train.Run(settings(), str(tmp_path), log=closed_pipe)
    with pytest.raises(BrokenPipeError):
        run.train(X_train, X_val, 2)
    with np.load(tmp_path / "checkpoint.npz") as saved:
        assert saved["position"].tolist() == [1, 0]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_same_seed_same_losses_bit_for_bit(small_data, tmp_path):
    X_train, X_val, _ = small_data
    runs = []
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        run = train.Run(settings(optimizer="nesterov", lr=0.01), str(tmp_path / name),
                        log=quiet)
        run.train(X_train, X_val, 2)
        runs.append(run)
    strip = [[(m["train_loss"], m["val_loss"]) for m in run.metrics] for run in runs]
    assert strip[0] == strip[1]
    for a, b in zip(params_of(runs[0]), params_of(runs[1])):
        np.testing.assert_array_equal(a, b)


def test_interrupted_and_resumed_equals_uninterrupted(small_data, tmp_path):
    X_train, X_val, _ = small_data
    whole = train.Run(settings(), str(tmp_path), log=quiet)
    assert whole.train(X_train, X_val, 2)

    os.makedirs(tmp_path / "parts")
    first = train.Run(settings(), str(tmp_path / "parts"), log=quiet)
    calls = itertools.count(1)
    # Asked after each of the 6 batches of an epoch and once at its end:
    # the 10th question comes after the 3rd batch of epoch 2.
    assert not first.train(X_train, X_val, 2, stop_requested=lambda: next(calls) == 10)
    assert (first.epoch, first.batch) == (1, 3)
    second = train.Run(settings(), str(tmp_path / "parts"), log=quiet)
    second.restore(train.load_checkpoint(str(tmp_path / "parts" / "checkpoint.npz")))
    assert (second.epoch, second.batch) == (1, 3)
    assert second.train(X_train, X_val, 2)
    for a, b in zip(params_of(whole), params_of(second)):
        np.testing.assert_array_equal(a, b)
    assert ([(m["train_loss"], m["val_loss"]) for m in whole.metrics]
            == [(m["train_loss"], m["val_loss"]) for m in second.metrics])


def test_restore_refuses_a_run_of_other_settings_but_takes_a_new_lr(small_data, tmp_path):
    """In a notebook, a Run of batch size 50 restored a run of 100 stopped after
    its batch 3 and went on from its own batch 3 (image 150, not 300): what
    --resume refuses."""
    X_train, X_val, _ = small_data
    first = train.Run(settings(), str(tmp_path), log=quiet)
    calls = itertools.count(1)
    assert not first.train(X_train, X_val, 2, stop_requested=lambda: next(calls) == 3)
    saved = train.load_checkpoint(str(tmp_path / "checkpoint.npz"))
    other = train.Run(settings(batch_size=50, seed=4), str(tmp_path), log=quiet)
    with pytest.raises(train.TrainingError) as error:
        other.restore(saved)
    assert str(error.value) == (
        "{}: the checkpoint's run has batch_size=100, seed=3; this Run has batch_size=50, "
        "seed=4: make the Run with the run's own settings, train.Run(train.Settings("
        "**saved.settings), out_dir)".format(saved.path))
    assert (other.epoch, other.batch, other.continues_out_dir) == (0, 0, False)
    faster = train.Run(settings(lr=5e-4), str(tmp_path), log=quiet)  # as --resume --lr
    faster.restore(saved)
    assert (faster.epoch, faster.batch) == (0, 3)


def test_training_to_fewer_epochs_than_begun_is_refused(small_data, tmp_path):
    """In a notebook, run.train(X, V, 1) on a run two epochs into training returned
    True at once and trained nothing, without a word: --resume --epochs 1 is refused."""
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    assert not run.train(X_train, X_val, 3, stop_requested=lambda: (run.epoch, run.batch) == (1, 3))
    with pytest.raises(ValueError) as error:
        run.train(X_train, X_val, 1)
    assert str(error.value) == ("epochs=1 is fewer than the 2 epochs this run has begun (epochs "
                                "counts from the run's start, not from here); give 2 or more")
    assert (run.epoch, run.batch, len(run.metrics)) == (1, 3, 1)
    assert run.train(X_train, X_val, 2)  # the begun epoch, finished
    assert (run.epoch, run.batch, len(run.metrics)) == (2, 0, 2)


def test_an_interrupt_in_a_notebook_stops_at_a_batch_saved_and_continues_exactly(
        small_data, tmp_path):
    """The notebook's interrupt (SIGINT) during run.train() raised KeyboardInterrupt
    inside a training step, whose updates Theano makes in place: some made, some
    not, and nothing saved since the epoch before."""
    X_train, X_val, _ = small_data
    whole = train.Run(settings(), str(tmp_path / "whole"), log=quiet)
    assert whole.train(X_train, X_val, 2)
    run = train.Run(settings(), str(tmp_path / "parts"), log=quiet)
    steps, step = itertools.count(1), run.compiled.train_fn

    def interrupted_step(batch):  # the interrupt comes during the 8th step
        if next(steps) == 8:
            os.kill(os.getpid(), signal.SIGINT)
        return step(batch)
    run.compiled = run.compiled._replace(train_fn=interrupted_step)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run.train(X_train, X_val, 2)
    assert str(stopped.value) == ("saved in {}; train() again continues at epoch 2, batch 3"
                                  .format(tmp_path / "parts"))
    saved = train.load_checkpoint(str(tmp_path / "parts" / "checkpoint.npz"))
    assert (saved.epoch, saved.batch) == (run.epoch, run.batch) == (1, 2)  # 6 batches an epoch
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # as before
    run.compiled = run.compiled._replace(train_fn=step)
    assert run.train(X_train, X_val, 2)  # continued in the notebook
    resumed = train.Run(settings(), str(tmp_path / "parts"), log=quiet)
    resumed.restore(saved)  # or from what was saved
    assert resumed.train(X_train, X_val, 2)
    for a, b, c in zip(params_of(whole), params_of(run), params_of(resumed)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_an_epoch_stopped_midway_is_finished_on_as_many_training_images(small_data, tmp_path):
    """Stopped after 31 batches of 10,000 images and continued on 1,000 (7
    batches), an epoch skipped all of them and logged their 31 batches' loss
    over 7: 0.24 for 0.03, at 0 images/s, without a word. Between epochs, other
    images are the notebook's to choose."""
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    stops = iter([False, True])
    assert not run.train(X_train, X_val, 2, stop_requested=lambda: next(stops))
    assert (run.epoch, run.batch) == (0, 2)
    said = ("X_train holds 300 images, but this run stopped in the middle of epoch 1 (after "
            "batch 2) of an epoch over 600: finish it on those")
    for continued in (run, train.Run(settings(), str(tmp_path), log=quiet)):
        if continued is not run:  # the same, restored from its checkpoint
            continued.restore(train.load_checkpoint(str(tmp_path)))
        with pytest.raises(ValueError) as error:
            continued.train(X_train[:300], X_val, 2)
        assert str(error.value) == said and continued.metrics == []
    assert run.train(X_train, X_val, 1)  # the epoch finished on its own images
    assert run.train(X_train[:300], X_val, 2)  # then the next on others
    assert [m["epoch"] for m in run.metrics] == [1, 2]


def written_checkpoint(path, without=(), **fields):
    """``path`` (a str), holding a checkpoint of no network with ``fields``,
    less the keys ``without``, as a convae from before they were kept wrote it."""
    bare = dict(settings={}, architecture="[]", state=[], metrics=[], epoch=0, batch=0,
                err_sum=0.0, rng_state=np.random.RandomState(1).get_state())
    encoded = checkpoint.encode(checkpoint.Checkpoint(**dict(bare, **fields)))
    if without:
        arrays = dict(np.load(io.BytesIO(encoded)))
        for key in without:
            del arrays[key]
        encoded = files.npz_bytes(arrays)
    path.write_bytes(encoded)
    return str(path)


def test_a_checkpoint_from_before_train_images_were_kept_still_loads(tmp_path):
    new = written_checkpoint(tmp_path / "new.npz", batch=3, err_sum=0.5, epochs=2,
                             train_images=600)
    assert checkpoint.load(new, []).train_images == 600
    old = written_checkpoint(tmp_path / "old.npz", without=["train_images"], batch=3,
                             err_sum=0.5, epochs=2, train_images=600)
    assert checkpoint.load(old, []).train_images == -1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_data, tmp_path):
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    run.train(X_train, X_val, 1)
    saved = {name: (tmp_path / name).read_bytes()
             for name in ("checkpoint.npz", "model.npz", "metrics.jsonl")}
    W = lasagne.layers.get_all_params(run.network)[0]
    W.set_value(np.full_like(W.get_value(), np.nan))
    with pytest.raises(train.TrainingError, match="became nan"):
        run.train(X_train, X_val, 2)
    for name, blob in saved.items():
        assert (tmp_path / name).read_bytes() == blob


def test_a_diverged_network_fails_its_test_and_writes_no_test_json(mnist_dir, tmp_path,
                                                                  capsys):
    # At --lr 1e6 the losses of training and validation stay finite (about
    # 1e33) but the test set's overflows float32: the run must not end as a
    # success with "Final test MSE: inf" and a test.json that is not JSON.
    out = tmp_path / "run"
    code = train.main(["--data-dir", mnist_dir, "--epochs", "1", "--lr", "1e6",
                       "--out", str(out)] + SMALL)
    captured = capsys.readouterr()
    assert code == 1
    assert "Final test MSE" not in captured.out
    assert ("convae-train: error: test loss became inf: the network has diverged"
            in captured.err)
    assert "lower --lr" in captured.err
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.jsonl", "model.npz"]


def test_a_closed_pipe_at_the_last_line_stops_quietly_with_the_run_saved(
        mnist_dir, tmp_path, capsys, monkeypatch):
    """`convae-train | head -3`: the reader has gone by the test MSE line.
    The run stops as a Unix tool killed by SIGPIPE does, in silence with code
    141, and test.json is written all the same (it is written first)."""
    out = tmp_path / "run"

    def closed_at_the_end(line):
        if line.startswith("Final test MSE"):
            raise OSError(errno.EPIPE, "Broken pipe", cli.STDOUT)
    monkeypatch.setattr(cli, "say", closed_at_the_end)
    code = train.main(["--data-dir", mnist_dir, "--epochs", "1", "--out", str(out)] + SMALL)
    assert (code, capsys.readouterr().err) == (141, "")
    test_mse = json.loads((out / "test.json").read_text())["test_mse"]
    assert 0 < test_mse < 0.1


def test_a_full_standard_output_is_one_line_naming_it(mnist_dir, tmp_path):
    """`convae-train > log` on a full disk: one line that says what could not
    be written, before any work, and no --out left behind."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "scripts/train.py", "--data-dir", mnist_dir,
                               "--out", str(tmp_path / "run")] + SMALL, cwd=REPO,
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (
        1, "convae-train: error: No space left on device: standard output\n")
    assert os.listdir(tmp_path) == []


def test_saved_parameters_load_the_lasagne_way(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(["--data-dir", mnist_dir, "--epochs", "1", "--out", str(out)]
                      + SMALL)
    assert code == 0
    printed = capsys.readouterr().out
    assert "Epoch 1 of 1 took" in printed and "images/s" in printed
    assert "Final test MSE" in printed
    network = build_convolutional_autoencoder()
    with np.load(out / "model.npz") as f:
        values = [f["arr_%d" % i] for i in range(len(f.files))]
    lasagne.layers.set_all_param_values(network, values)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"val_loss"' in lines[0]
    # Running again into the same directory without --resume is refused.
    assert train.main(["--data-dir", mnist_dir, "--out", str(out)] + SMALL) == 1
    assert "--resume" in capsys.readouterr().err
    # Without its checkpoint (deleted to save space, say), the run's parameters
    # are still not overwritten by a new run.
    os.remove(out / "checkpoint.npz")
    model = (out / "model.npz").read_bytes()
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(out)] + SMALL)
    assert code == 1 and err == ("convae-train: error: {} holds model.npz and metrics.jsonl "
                                 "and test.json of an earlier run, which a new run would "
                                 "overwrite: choose another --out".format(out))
    assert (out / "model.npz").read_bytes() == model


def error_of(capsys, argv):
    code = train.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_checkpoints_are_refused(mnist_dir, tmp_path, capsys):
    base = ["--data-dir", mnist_dir, "--out", str(tmp_path), "--resume"] + SMALL
    code, err = error_of(capsys, base)
    assert code == 1 and "no checkpoint" in err and "\n" not in err
    (tmp_path / "checkpoint.npz").write_bytes(b"not a checkpoint at all")
    code, err = error_of(capsys, base)
    assert code == 1 and "checkpoint.npz: not an .npz file" in err and "\n" not in err
    # A checkpoint of another network: same keys, other architecture.
    run_dir = tmp_path / "other"
    os.makedirs(run_dir)
    run = train.Run(settings(), str(run_dir), log=quiet)
    run.save()
    with np.load(run_dir / "checkpoint.npz") as f:
        saved = dict(f)
    np.savez(tmp_path / "checkpoint.npz", **dict(saved, architecture=np.array("[]")))
    code, err = error_of(capsys, base)
    assert code == 1 and "another architecture" in err
    # A checkpoint of a run under THEANO_FLAGS=floatX=float64.
    np.savez(tmp_path / "checkpoint.npz", **{
        key: value.astype(np.float64) if key.startswith("shared_") else value
        for key, value in saved.items()})
    code, err = error_of(capsys, base)
    assert code == 1 and "\n" not in err
    assert err.endswith("checkpoint.npz: checkpoint of a float64 run; this one computes in "
                        "float32: resume with THEANO_FLAGS=floatX=float64")


def test_bad_data_is_a_one_line_error(mnist_dir, tmp_path, capsys):
    for name in os.listdir(mnist_dir):
        if name.endswith(".gz"):
            os.symlink(os.path.join(mnist_dir, name), tmp_path / name)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bjunk")
    code, err = error_of(capsys, ["--data-dir", str(tmp_path), "--out",
                                  str(tmp_path / "run")] + SMALL)
    assert code == 1 and "checksum mismatch" in err and "\n" not in err


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--lr", "-1"],
                                   ["--batch-size", "x"], ["--dataset", "cifar"],
                                   # Python reads these as 10, 300, 0.01: slips, not numbers
                                   ["--epochs", "1_0"], ["--limit-train", "\u0663\u0660\u0660"],
                                   ["--lr", "1_0e-3"],
                                   ["--noise", "mask", "--noise-level", "1"],
                                   ["--noise", "mask", "--noise-level", "nan"],
                                   ["--noise", "mask", "--noise-level", "-0.1"]])
def test_bad_flags_exit_with_usage_error(flags, capsys):
    with pytest.raises(SystemExit) as done:
        train.parse_args(flags)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("convae-train: error: argument {}: ".format(flags[-2])), err


def test_the_most_epochs_a_run_takes_is_what_its_checkpoint_holds(small_data, tmp_path,
                                                                   capsys):
    """--epochs 99999999999999999999 trained, but its checkpoints held the
    number as a Python object, which --resume could not read ("Object arrays
    cannot be loaded when allow_pickle=False"): the run could not go on."""
    assert train.parse_args(["--epochs", str(cli.MAX_EPOCHS)]).epochs == cli.MAX_EPOCHS
    with pytest.raises(SystemExit):
        train.parse_args(["--epochs", str(cli.MAX_EPOCHS + 1)])
    assert capsys.readouterr().err.endswith(
        "argument --epochs: must be a positive integer of at most 9223372036854775807, got "
        "'9223372036854775808'\n")
    most = written_checkpoint(tmp_path / "checkpoint.npz", epochs=cli.MAX_EPOCHS)
    assert checkpoint.load(most, []).epochs == cli.MAX_EPOCHS
    X_train, X_val, _ = small_data  # and in a notebook (stopped at once, were it taken)
    run = train.Run(settings(), str(tmp_path / "nb"), log=quiet)
    with pytest.raises(ValueError) as error:
        run.train(X_train, X_val, cli.MAX_EPOCHS + 1, stop_requested=lambda: True)
    assert str(error.value) == ("epochs=9223372036854775808, not a positive integer of at "
                                "most 9223372036854775807")


@pytest.mark.parametrize("flags", [["--noise-level", "0.5"],
                                   ["--noise", "none", "--noise-level", "0.5"],
                                   ["--resume", "--noise", "none", "--noise-level", "0.5"]])
def test_a_noise_level_without_noise_is_a_usage_error(flags, capsys):
    with pytest.raises(SystemExit) as done:
        train.parse_args(flags)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert done.value.code == 2 and "--noise-level needs --noise" in err


def test_a_noise_level_goes_with_noise_or_a_resumed_run():
    assert train.parse_args(["--noise", "mask", "--noise-level", "0.5"]).noise_level == 0.5
    # A resumed run has its own --noise; resumed_settings compares the level to it.
    assert train.parse_args(["--resume", "--noise-level", "0.5"]).noise_level == 0.5


def test_too_few_images_for_one_batch(mnist_dir, tmp_path, capsys):
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(tmp_path),
                                  "--limit-train", "50", "--batch-size", "100"])
    assert code == 1 and "do not fill one batch" in err


def stoppable_command(mnist_dir, out):
    """The training command for 3 short epochs into ``out``, as the stopping tests run it."""
    return [sys.executable, "-m", "convae.train", "--data-dir", mnist_dir,
            "--out", str(out), "--epochs", "3", "--limit-train", "3000",
            "--limit-val", "200", "--batch-size", "50"]


@pytest.mark.parametrize("stop,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_and_resume_finishes(mnist_dir, tmp_path, stop, code):
    """The real command, stopped by Ctrl-C (SIGINT) or a scheduler's SIGTERM
    mid-run, then resumed."""
    command = stoppable_command(mnist_dir, tmp_path)
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("Compiling"):
            break
    # Interrupt once training is under way (compiling, then batches).
    deadline = time.time() + 300
    while not os.path.exists(tmp_path / "checkpoint.npz") and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "continue with --resume" in out and "Traceback" not in err
    done = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Resuming at epoch" in done.stdout and "Final test MSE" in done.stdout
    epochs = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 3


# -- what a skeptical user tried (issue 12) ---------------------------------

def run_small(mnist_dir, out, *flags):
    return train.main(["--data-dir", mnist_dir, "--out", str(out)] + SMALL + list(flags))


def snapshot(directory):
    """Every file in ``directory`` with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_closed_terminal_saves_and_resume_finishes(mnist_dir, tmp_path):
    """An SSH session that drops: the kernel sends SIGHUP, and the terminal
    the progress bar writes to is gone. This killed training, losing the epoch."""
    command = stoppable_command(mnist_dir, tmp_path)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        try:
            os.chdir(REPO)
            os.execv(sys.executable, command)
        finally:  # never back into pytest in the child
            os._exit(127)
    deadline = time.time() + 300
    while not os.path.exists(tmp_path / "checkpoint.npz") and time.time() < deadline:
        try:  # keep the terminal's buffer drained
            select.select([terminal], [], [], 0.1)[0] and os.read(terminal, 65536)
        except OSError:
            break
    time.sleep(0.3)  # into epoch 2
    os.close(terminal)  # hang up
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129
    with np.load(tmp_path / "checkpoint.npz") as saved:
        assert saved["position"].tolist() != [1, 0]  # kept what epoch 2 had done
    done = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_hang_up_where_the_streams_are_not_files(capsys):
    """train.main() run in a notebook: its streams have no file to point at /dev/null."""
    with cli.signals_noted(signal.SIGHUP) as stops:  # under capsys, as in a notebook
        os.kill(os.getpid(), signal.SIGHUP)  # no fileno() to point at /dev/null
        time.sleep(0.01)  # Python runs the handler between bytecodes, at once
    assert stops == [signal.SIGHUP]


def test_resume_refuses_other_settings_and_applies_epochs_and_lr(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    capsys.readouterr()
    before = snapshot(out)
    for flags, named in [(["--batch-size", "64"], "--batch-size 64 differs from the run's 100"),
                         (["--optimizer", "nesterov"], "--optimizer nesterov differs"),
                         (["--seed", "4"], "--seed 4 differs from the run's 1"),
                         (["--noise", "mask"], "--noise mask differs")]:
        # The run's own value given again is no change.
        code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(out), "--resume",
                                      "--limit-train", "600"] + flags)
        assert code == 1 and named in err and "\n" not in err, err
        assert snapshot(out) == before  # nothing in --out touched
    code = train.main(["--data-dir", mnist_dir, "--out", str(out), "--resume",
                       "--epochs", "2", "--lr", "0.0005"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "--lr 0.0005 from here on (the run had 0.001)" in printed
    assert "--epochs 2: training to epoch 2 (the run had 1)" in printed
    saved = train.load_checkpoint(str(out / "checkpoint.npz"))
    assert saved.settings["lr"] == 0.0005 and saved.epochs == 2 and saved.epoch == 2
    # Resumed again without flags: the run's own epochs, nothing left to train.
    assert train.main(["--data-dir", mnist_dir, "--out", str(out), "--resume"]) == 0
    assert "Epoch" not in capsys.readouterr().out


def test_resumed_lr_is_the_one_the_step_uses(small_data, tmp_path):
    X_train, X_val, _ = small_data
    runs = {}
    for lr in (1e-3, 5e-4):
        os.makedirs(tmp_path / str(lr))
        run = train.Run(settings(lr=lr), str(tmp_path / str(lr)), log=quiet)
        assert run.compiled.learning_rate.get_value() == np.float32(lr)
        run.train(X_train, X_val, 1)
        runs[lr] = params_of(run)
    assert not np.array_equal(runs[1e-3][0], runs[5e-4][0])


@pytest.mark.parametrize("damage", ["truncated", "flipped", "npy", "settings key",
                                    "settings value"])
def test_a_damaged_checkpoint_is_one_line_naming_it(mnist_dir, tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    path = out / "checkpoint.npz"
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[:100])
    elif damage == "flipped":
        with np.load(path) as f:
            offset = blob.index(f["shared_21"].tobytes()[:64])  # inside shared_21's data
        path.write_bytes(blob[:offset] + bytes([blob[offset] ^ 1]) + blob[offset + 1:])
    elif damage == "npy":
        np.save(open(path, "wb"), np.zeros(3))
    else:
        with np.load(path) as f:
            arrays = dict(f)
        kept = {k: v for k, v in train.asdict(settings()).items() if k != "limit_train"}
        if damage == "settings value":  # resumed, it trained on with Nesterov momentum
            kept = dict(train.asdict(settings()), optimizer="sgd")
        arrays["settings"] = np.array(json.dumps(kept))
        np.savez(open(path, "wb"), **arrays)
    capsys.readouterr()
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(out), "--resume"])
    assert code == 1 and str(path) in err and "\n" not in err, err
    if damage == "settings key":
        assert "lack 'limit_train'" in err
    if damage == "settings value":
        assert err == ("convae-train: error: {}: its settings cannot be a run's "
                       "(optimizer='sgd', not one of adam, nesterov)".format(path))


@pytest.mark.parametrize("setting, value, said", [
    ("optimizer", "Adam", "optimizer='Adam', not one of adam, nesterov"),
    ("noise", "Gaussian", "noise='Gaussian', not one of none, gaussian, mask"),
    ("dataset", "MNIST", "dataset='MNIST', not one of fashion, mnist"),
    ("lr", -1e-3, "lr=-0.001, not a positive number"),
    ("lr", float("nan"), "lr=nan, not a positive number"),
    ("noise_level", 1.0, "noise_level=1.0, not a number in [0, 1)"),
    ("noise_level", "0.3", "noise_level='0.3', not a number in [0, 1)"),
    ("lr", "1e-3", "lr='1e-3', not a positive number"),
    ("batch_size", 0, "batch_size=0, not a positive integer"),
    ("batch_size", 50.0, "batch_size=50.0, not a positive integer"),
    ("batch_size", True, "batch_size=True, not a positive integer"),
    ("seed", -1, "seed=-1, not an integer from 0 to 4294967295"),
    ("seed", 2 ** 32, "seed=4294967296, not an integer from 0 to 4294967295"),
    ("limit_train", 0, "limit_train=0, not a positive integer or None"),
    ("limit_val", -5, "limit_val=-5, not a positive integer or None")])
def test_settings_a_run_cannot_have_are_refused_in_a_notebook_too(setting, value, said):
    """In a notebook, Settings(optimizer="Adam") trained with Nesterov momentum
    and noise="Gaussian" with masking, without a word; a negative lr uphill;
    batch_size=0 ended in a ZeroDivisionError, seed=-1 in NumPy's traceback,
    lr="1e-3" in a TypeError; limit_train=0 meant no limit."""
    with pytest.raises(ValueError) as error:
        train.Settings(**{setting: value})
    assert str(error.value) == said


def test_settings_take_the_numbers_the_flags_take_of_any_python_kind():
    """NumPy's integers and floats, and an integer learning rate, are numbers too."""
    taken = train.Settings(batch_size=np.int64(50), seed=np.uint32(2 ** 32 - 1), lr=1,
                           limit_train=np.int32(500), limit_val=None,
                           noise_level=np.float32(0.5))
    assert taken.batch_size == 50 and taken.seed == 2 ** 32 - 1 and taken.lr == 1


def test_a_run_of_numpy_numbers_saves_its_settings(small_data, tmp_path):
    """Settings(batch_size=np.int64(100)), from an array of batch sizes, trained
    an epoch and then failed to save it: "Object of type int64 is not JSON
    serializable", a traceback, and the epoch lost. They are kept as Python's."""
    given = dict(batch_size=np.int64(100), lr=np.float32(1e-3), seed=np.uint32(3),
                 limit_train=np.int32(600), noise="mask", noise_level=np.float32(0.25))
    made = settings(**given)
    assert {name: type(getattr(made, name)) for name in given} == dict(
        batch_size=int, lr=float, seed=int, limit_train=int, noise=str, noise_level=float)
    assert made == settings(batch_size=100, lr=float(np.float32(1e-3)), seed=3, noise="mask",
                            noise_level=float(np.float32(0.25)))
    X_train, X_val, _ = small_data
    run = train.Run(made, str(tmp_path), log=quiet)
    assert run.train(X_train, X_val, 1)
    assert train.load_checkpoint(str(tmp_path)).settings == dataclasses.asdict(made)


def test_disk_full_keeps_one_consistent_point_and_says_one_line(
        mnist_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    capsys.readouterr()
    before = snapshot(out)
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the disk fills up while the resumed run's files are written
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    code = train.main(["--data-dir", mnist_dir, "--out", str(out), "--resume", "--epochs", "2"])
    gc.collect()  # a half-written zip file would complain when collected
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0, err
    assert err == ("convae-train: error: cannot write {}: No space left on device; the last "
                   "good checkpoint in {} is intact".format(out / "model.npz", out))
    after = snapshot(out)
    assert after.keys() == before.keys()  # no temporary files left behind
    assert after["checkpoint.npz"] == before["checkpoint.npz"]
    assert after["model.npz"] == before["model.npz"]
    assert after["metrics.jsonl"] == before["metrics.jsonl"]


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a read-only file system (which stops root too)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only file system here: " + done.stderr.strip())
    yield directory
    subprocess.run(["umount", str(directory)], check=True)


def test_read_only_out_is_refused_before_compiling(mnist_dir, read_only_dir, capsys,
                                                   monkeypatch):
    def no_compiling(*args):
        raise AssertionError("compiled although --out cannot be written")
    monkeypatch.setattr(train, "compile_run", no_compiling)
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(read_only_dir)] + SMALL)
    assert code == 1 and "\n" not in err
    assert "--out {}: cannot write there (Read-only file system)".format(read_only_dir) in err


def test_an_out_that_is_a_file_is_refused_before_compiling(mnist_dir, tmp_path, capsys,
                                                          monkeypatch):
    def no_compiling(*args):
        raise AssertionError("compiled although --out is a file")
    monkeypatch.setattr(train, "compile_run", no_compiling)
    (tmp_path / "notes.txt").write_text("a file")
    for resume in ([], ["--resume"]):  # not "no checkpoint at notes.txt/checkpoint.npz"
        code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out",
                                      str(tmp_path / "notes.txt")] + SMALL + resume)
        assert code == 1 and err == "convae-train: error: --out {}: not a directory".format(
            tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "a file"


def test_a_second_run_in_the_same_out_is_refused_while_the_first_runs(mnist_dir, tmp_path,
                                                                      capsys):
    from convae import files
    out = tmp_path / "run"
    out.mkdir()
    (out / ".convae-tmp-writing").write_bytes(b"the first run's checkpoint, half written")
    refused = ("convae-train: error: --out {}: another convae-train is running there; let "
               "it finish, or choose another --out".format(out))
    for resume in ([], ["--resume"]):
        first = files.lock(str(out))  # as a running first run holds it
        try:
            code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(out)]
                                 + SMALL + resume)
            assert (code, err) == (1, refused)
            assert (out / ".convae-tmp-writing").exists()  # the first run's files left alone
        finally:
            os.close(first)
        # Released (as when the first run ends, or is killed): the next run goes.
        assert run_small(mnist_dir, out, "--epochs", str(1 + len(resume)), *resume) == 0
        assert not (out / ".convae-tmp-writing").exists()
        (out / ".convae-tmp-writing").write_bytes(b"half written")


def test_an_out_on_a_file_system_without_locks_trains_and_says_so(mnist_dir, tmp_path, capsys,
                                                                  no_locks):
    """On a file system without flock (some NFS mounts) training stopped before
    it began with "convae-train: error: No locks available", naming nothing."""
    out = tmp_path / "run"
    assert train.main(["--data-dir", mnist_dir, "--epochs", "1", "--out", str(out)] + SMALL) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == ("--out {}: its file system takes no locks, so nothing would stop a "
                       "second convae-train there".format(out))
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.jsonl", "model.npz",
                                       "test.json"]


@pytest.mark.parametrize("flag, value, message", [
    ("--limit-train", "50001", "--limit-train 50001 is more than the 50000 training images "
     "of mnist"),
    ("--limit-val", "10001", "--limit-val 10001 is more than the 10000 validation images "
     "of mnist"),
    ("--batch-size", "700", "--batch-size 700: the 600 training images do not fill one batch")])
def test_limits_beyond_the_data_are_refused_and_leave_no_out(mnist_dir, tmp_path, capsys,
                                                            flag, value, message):
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out",
                                  str(tmp_path / "runs" / "x")] + SMALL + [flag, value])
    assert (code, err) == (1, "convae-train: error: " + message)
    assert os.listdir(tmp_path) == []  # neither runs nor runs/x made


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_while_compiling_leaves_no_out(mnist_dir, tmp_path, capsys,
                                                         monkeypatch, number, code):
    def compiling(*args):
        os.kill(os.getpid(), number)
        time.sleep(30)  # the signal ends this at once
    monkeypatch.setattr(train, "compile_run", compiling)
    assert error_of(capsys, ["--data-dir", mnist_dir, "--out", str(tmp_path / "run")]
                    + SMALL) == (code, "convae-train: interrupted before training started")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_in_the_final_test_evaluation_says_so(mnist_dir, tmp_path, capsys, monkeypatch):
    real_mean_loss = train.mean_loss

    def interrupted_on_the_test_set(fn, inputs, *args):
        if len(inputs) == 10000:
            raise KeyboardInterrupt
        return real_mean_loss(fn, inputs, *args)
    monkeypatch.setattr(train, "mean_loss", interrupted_on_the_test_set)
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(tmp_path / "run"),
                                  "--epochs", "1"] + SMALL)
    assert code == 130 and "during the final test evaluation" in err
    assert "training is complete and saved" in err and "before training started" not in err


def test_leftover_temporary_files_are_removed(mnist_dir, tmp_path):
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    (out / ".convae-tmp-k1ll3d").write_bytes(b"half a checkpoint")  # SIGKILL during a save
    assert train.main(["--data-dir", mnist_dir, "--out", str(out), "--resume"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz", "metrics.jsonl", "model.npz", "test.json"]


def test_resuming_a_finished_run_says_so_and_evaluates_again(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    first = capsys.readouterr().out
    test_line = [line for line in first.splitlines() if line.startswith("Final test MSE")]
    params = (out / "model.npz").read_bytes()
    assert run_small(mnist_dir, out, "--resume") == 0
    again = capsys.readouterr().out
    assert "Training was done (1 of 1 epochs); evaluating on the test set again" in again
    assert "Resuming at epoch" not in again and "Epoch " not in again
    assert [line for line in again.splitlines() if line.startswith("Final test MSE")] == test_line
    assert (out / "model.npz").read_bytes() == params
    # It cannot be taken back to fewer epochs than it has.
    assert run_small(mnist_dir, out, "--resume", "--epochs", "2") == 0
    capsys.readouterr()
    before = snapshot(out)
    assert run_small(mnist_dir, out, "--resume", "--epochs", "1") == 1
    assert capsys.readouterr().err.strip() == (
        "convae-train: error: --resume: --epochs 1 is fewer than the 2 epochs the run has "
        "begun; give 2 or more")
    assert snapshot(out) == before


def test_a_checkpoint_given_as_weights_says_which_file_to_give(mnist_dir, tmp_path, capsys):
    from convae import export
    out = tmp_path / "run"
    assert run_small(mnist_dir, out, "--epochs", "1") == 0
    capsys.readouterr()
    assert export.main(["--weights", str(out / "checkpoint.npz"),
                        "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("convae-export: error: {}: a convae-train checkpoint, not a parameter "
                   "file: give the model.npz beside it, or the run directory".format(
                       out / "checkpoint.npz"))
    assert export.main(["--weights", str(out), "--out", str(tmp_path / "m.onnx")]) == 0


@pytest.mark.parametrize("seed", ["-1", "99999999999", "x"])
def test_bad_seed_is_a_usage_error(seed, capsys):
    with pytest.raises(SystemExit) as done:
        train.parse_args(["--seed", seed])
    assert done.value.code == 2 and "--seed" in capsys.readouterr().err


def test_nan_without_a_checkpoint_says_none_was_saved(small_data, tmp_path):
    X_train, X_val, _ = small_data
    run = train.Run(settings(), str(tmp_path), log=quiet)
    W = lasagne.layers.get_all_params(run.network)[0]
    W.set_value(np.full_like(W.get_value(), np.nan))
    with pytest.raises(train.TrainingError, match="no checkpoint was saved yet"):
        run.train(X_train, X_val, 1)


def test_a_dead_network_is_reported(small_data, tmp_path):
    X_train, X_val, _ = small_data
    said = []
    run = train.Run(settings(lr=100.0), str(tmp_path), log=said.append)
    run.train(X_train, X_val, 2)
    warnings = [line for line in said if line.startswith("Warning")]
    assert len(warnings) == 1 and "same reconstruction" in warnings[0]
    outputs = run.compiled.reconstruct_fn(X_val[:50])
    assert np.all(outputs == outputs[0])  # it is dead: the same image for every input


INTERRUPT_DURING_IMPORT = """
import sys
class Interrupt:  # Ctrl-C arriving while Lasagne loads
    def find_spec(self, name, path=None, target=None):
        if name == "lasagne":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["convae-train"]
from convae.train import main
"""


def test_ctrl_c_while_loading_is_one_line():
    done = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORT], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip() == "convae: interrupted while loading Theano and Lasagne"


def run_on(mnist_dir, out, terminal):
    """The training command's stderr, with stderr a terminal (a pty) or a pipe."""
    command = [sys.executable, "-m", "convae.train", "--data-dir", mnist_dir, "--out", str(out),
               "--epochs", "1", "--limit-train", "2000", "--limit-val", "200",
               "--batch-size", "50"]
    if not terminal:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stderr
    import fcntl
    import pty
    import struct
    import termios
    main_fd, child_fd = pty.openpty()
    # A terminal of 24 rows and 100 columns (a new pty has none: no room for a bar).
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=child_fd)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=600) == 0
    os.close(main_fd)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(mnist_dir, tmp_path):
    shown = run_on(mnist_dir, tmp_path / "tty", terminal=True)
    # tqdm's bar: the epoch, images done of the total, rate, time left, loss.
    assert "Epoch 1/1" in shown and "/2000" in shown and "img/s" in shown
    assert "<" in shown and "loss=0." in shown
    assert run_on(mnist_dir, tmp_path / "pipe", terminal=False) == ""


def test_training_with_standard_error_closed(mnist_dir, tmp_path):
    """convae-train 2>&- (Python's sys.stderr is then None): tqdm's test for
    a terminal wrote to None after compiling, and the command exited 1 with
    its traceback unseen, having trained nothing."""
    done = subprocess.run(
        [sys.executable, "-m", "convae.train", "--data-dir", mnist_dir, "--out",
         str(tmp_path / "run"), "--epochs", "1"] + SMALL,
        cwd=REPO, preexec_fn=lambda: os.close(2), stdout=subprocess.PIPE, text=True,
        timeout=600)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-2].startswith("Epoch 1 of 1 took ")
    assert sorted(os.listdir(tmp_path / "run")) == sorted(
        ["checkpoint.npz", "metrics.jsonl", "model.npz", "test.json"])


def test_a_batch_too_large_for_the_memory_is_one_line(mnist_dir, tmp_path):
    """--batch-size 20000 in 6 GB of address space: NumPy's MemoryError in the
    first batch, reported in one line naming the flag, and no --out left."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))
    done = subprocess.run(
        [sys.executable, "-m", "convae.train", "--data-dir", mnist_dir, "--out",
         str(tmp_path / "run"), "--batch-size", "20000", "--limit-train", "20000",
         "--limit-val", "100", "--epochs", "1"],
        cwd=REPO, preexec_fn=limit_memory, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("convae-train: error: out of memory while training (Unable to "
                           "allocate ") and last.endswith(
                               "): a smaller --batch-size needs less"), last
    assert os.listdir(tmp_path) == []
