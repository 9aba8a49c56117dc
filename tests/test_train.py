"""The training loop on a slice of real MNIST: learning, determinism, resume, failures."""
import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lasagne
from convae import checkpoint, train
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
    second.restore(checkpoint.load(str(tmp_path / "parts" / "checkpoint.npz")))
    assert (second.epoch, second.batch) == (1, 3)
    assert second.train(X_train, X_val, 2)
    for a, b in zip(params_of(whole), params_of(second)):
        np.testing.assert_array_equal(a, b)
    assert ([(m["train_loss"], m["val_loss"]) for m in whole.metrics]
            == [(m["train_loss"], m["val_loss"]) for m in second.metrics])


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
    assert code == 1 and "corrupt or not a convae checkpoint" in err and "\n" not in err
    # A checkpoint of another network: same keys, other architecture.
    run_dir = tmp_path / "other"
    os.makedirs(run_dir)
    run = train.Run(settings(), str(run_dir), log=quiet)
    run.save()
    with np.load(run_dir / "checkpoint.npz") as f:
        saved = dict(f)
    saved["architecture"] = np.array("[]")
    np.savez(tmp_path / "checkpoint.npz", **saved)
    code, err = error_of(capsys, base)
    assert code == 1 and "another architecture" in err


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
                                   ["--batch-size", "x"], ["--dataset", "cifar"]])
def test_bad_flags_exit_with_usage_error(flags, capsys):
    with pytest.raises(SystemExit) as done:
        train.parse_args(flags)
    assert done.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_too_few_images_for_one_batch(mnist_dir, tmp_path, capsys):
    code, err = error_of(capsys, ["--data-dir", mnist_dir, "--out", str(tmp_path),
                                  "--limit-train", "50", "--batch-size", "100"])
    assert code == 1 and "do not fill one batch" in err


def test_ctrl_c_saves_and_resume_finishes(mnist_dir, tmp_path):
    """The real command, interrupted by SIGINT mid-run, then resumed."""
    command = [sys.executable, "-m", "convae.train", "--data-dir", mnist_dir,
               "--out", str(tmp_path), "--epochs", "3", "--limit-train", "3000",
               "--limit-val", "200", "--batch-size", "50"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("Compiling"):
            break
    # Interrupt once training is under way (compiling, then batches).
    deadline = time.time() + 300
    while not os.path.exists(tmp_path / "checkpoint.npz") and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "continue with --resume" in out and "Traceback" not in err
    done = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Resuming at epoch" in done.stdout and "Final test MSE" in done.stdout
    epochs = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 3
