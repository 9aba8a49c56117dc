"""Figures and the reconstruction command, checked against NumPy."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from convae import (bench, checkpoint, cli, data, export, figures, files, make_figures,
                    reconstruct, train)
from convae.codec import Codec

import reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pixels(fig):
    """Render fig with Agg: (height, width, 3) uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3]


def assert_not_blank(image):
    dark = (image.mean(axis=2) < 128).mean()
    assert 0.01 < dark < 0.99, dark


@pytest.fixture(scope="module")
def codec():
    """A random (untrained) network: figures must work without training."""
    import lasagne
    lasagne.random.set_rng(np.random.RandomState(5))
    return Codec()


@pytest.fixture(scope="module")
def digits(mnist_dir):
    from convae import data
    _, _, _, _, X_test, y_test = data.load_dataset("mnist", mnist_dir, fetch=False)
    return X_test[:1000], y_test[:1000]


def test_reconstruction_and_denoising_figures(codec, digits):
    X, _ = digits
    image = pixels(figures.reconstruction_figure(X[:10], codec.reconstruct(X[:10])))
    assert image.shape == (260, 1100, 3)
    assert_not_blank(image)
    image = pixels(figures.denoising_figure(
        make_figures.noisy_copies(X[:6]), codec.reconstruct(X[:6]), X[:6]))
    assert image.shape == (380, 660, 3)
    assert_not_blank(image)


def test_filters_pca_interpolation_and_curves(codec, digits):
    X, y = digits
    filters = codec.first_layer_filters()
    assert filters.shape == (32, 5, 5)
    image = pixels(figures.filters_figure(filters))
    assert image.shape == (440, 800, 3)
    assert_not_blank(image)
    codes = codec.encode(X)
    assert codes.shape == (1000, 256)
    classes = data.DATASETS["mnist"]["classes"]
    assert pixels(figures.code_pca_figure(codes, y, classes)).shape == (600, 650, 3)
    path = figures.interpolate_codes(codes[0], codes[1], 5)
    np.testing.assert_allclose(path[0], codes[0])
    np.testing.assert_allclose(path[-1], codes[1])
    np.testing.assert_allclose(path[2], (codes[0] + codes[1]) / 2, rtol=1e-6)
    decoded = codec.decode(path)
    assert decoded.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(decoded[0], codec.reconstruct(X[:1])[0], rtol=1e-5,
                               atol=1e-6)
    image = pixels(figures.interpolation_figure(decoded, X[0], X[1]))
    assert image.shape == (140, 700, 3)
    assert_not_blank(image)
    metrics = [dict(epoch=i, train_loss=0.03 / i, val_loss=0.02 / i) for i in (1, 2, 3)]
    image = pixels(figures.learning_curves_figure(metrics))
    assert image.shape == (400, 600, 3)
    assert_not_blank(image)


@pytest.mark.parametrize("draw, message", [
    (lambda a: figures.reconstruction_figure(a, a[:5]),
     "one column per image, and at least one: got 10 originals, 5 reconstructions"),
    (lambda a: figures.reconstruction_figure(a[:5], a),
     "one column per image, and at least one: got 5 originals, 10 reconstructions"),
    (lambda a: figures.reconstruction_figure(a, a, ["#0 (7)"] * 3),
     "one title per column: got 3 titles for 10 images"),
    (lambda a: figures.denoising_figure(a, a[:3], a),
     "one column per image, and at least one: got 10 noisy, 3 denoised, 10 clean"),
    # These failed inside NumPy or matplotlib ("Number of columns must be a
    # positive integer, not 0"; "Invalid shape (1, 5, 5) for image data";
    # "index 1 is out of bounds"), or lost 32 of 64 filters without a word.
    (lambda a: figures.reconstruction_figure(a[:0], a[:0]),
     "one column per image, and at least one: got 0 originals, 0 reconstructions"),
    (lambda a: figures.filters_figure(np.zeros((64, 5, 5))),
     "filters must be the first layer's, (32, 5, 5) or (32, 1, 5, 5), got shape (64, 5, 5)"),
    (lambda a: figures.code_pca_figure(a[:1].reshape(1, 784), [7], list("0123456789")),
     "codes must be (N, D) with N and D at least 2 for two principal components, got "
     "shape (1, 784)"),
    (lambda a: figures.interpolate_codes(a[0, 0, 0], a[1, 0, 0], 2.5),
     "steps=2.5, not a whole number of 2 or more (the line's two ends and the codes "
     "between them)"),
    (lambda a: figures.interpolate_codes(a[0, 0, 0], a[1, 0, 0], 1),
     "steps=1, not a whole number of 2 or more (the line's two ends and the codes "
     "between them)")])
def test_what_a_figure_cannot_draw_is_refused_saying_what(draw, message):
    """In a notebook, a short row left blank columns and a long one lost
    images, in a figure that looked fine; other input the figures cannot
    draw is named too."""
    with pytest.raises(ValueError) as error:
        draw(np.zeros((10, 1, 28, 28), np.float32))
    assert str(error.value) == message


def test_the_filters_figure_takes_the_layer_s_w_as_lasagne_holds_it():
    """Lasagne's W of the first layer is (32, 1, 5, 5): the same picture as
    its filters (32, 5, 5)."""
    W = np.random.RandomState(0).uniform(-1, 1, (32, 1, 5, 5))
    np.testing.assert_array_equal(pixels(figures.filters_figure(W)),
                                  pixels(figures.filters_figure(W[:, 0])))


def test_learning_curves_mark_whole_epochs_only():
    for epochs in (1, 2, 20):
        metrics = [dict(epoch=i, train_loss=0.03 / i, val_loss=0.02 / i)
                   for i in range(1, epochs + 1)]
        ax = figures.learning_curves_figure(metrics).axes[0]
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(t == int(t) and 1 <= t <= epochs for t in shown), shown


def test_codec_takes_float_batches_of_the_network_s_shapes(codec, digits):
    X, _ = digits
    x = X[:3]
    np.testing.assert_array_equal(codec.reconstruct(x.astype(np.float64)), codec.reconstruct(x))
    z = codec.encode(x)
    assert z.shape == (3, 256) and z.dtype == np.float32
    np.testing.assert_array_equal(codec.decode(z.tolist()), codec.decode(z))
    assert codec.reconstruct(X[:0]).shape == (0, 1, 28, 28)
    # Theano's floatX, empty or not (float64 under THEANO_FLAGS=floatX=float64).
    assert codec.reconstruct(X[:0]).dtype == codec.reconstruct(x).dtype == np.float32
    assert codec.reconstruct(np.ones((1, 1, 28, 28))).shape == (1, 1, 28, 28)  # pixels / 255
    assert codec.encode(X[:0]).shape == (0, 256)
    assert codec.decode(np.zeros((0, 256), np.float32)).shape == (0, 1, 28, 28)


def test_codec_calls_its_functions_on_slices_of_at_most_eval_batch(codec, digits):
    """A whole test set in one call took 1 GB more and up to 10x the time."""
    from convae import codec as codec_module
    X = np.concatenate([digits[0]] * 2)[:codec_module.EVAL_BATCH * 2 + 3]
    one_by_one = np.concatenate([codec._reconstruct(X[i:i + 1]) for i in range(len(X))])
    calls = []
    function = codec._reconstruct
    codec._reconstruct = lambda batch: calls.append(len(batch)) or function(batch)
    try:
        sliced = codec.reconstruct(X)
    finally:
        codec._reconstruct = function
    assert calls == [codec_module.EVAL_BATCH] * 2 + [3]
    # Another batch size may run other kernels, which sum in another order.
    np.testing.assert_allclose(sliced, one_by_one, rtol=0, atol=1e-6)


def test_codec_loads_a_run_directory_as_the_commands_do(codec, digits, tmp_path):
    from convae import files
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / "model.npz", **files.param_values(codec.network))
    x = digits[0][:3]
    np.testing.assert_array_equal(Codec(str(tmp_path / "run")).reconstruct(x),
                                  codec.reconstruct(x))
    with pytest.raises(ValueError) as error:  # it said ": cannot be read (No such file ...)"
        Codec("")
    assert str(error.value) == "an empty path names no file: give a model.npz or its run directory"


@pytest.mark.parametrize("call,values,message", [
    ("reconstruct", np.zeros((2, 28, 28), np.float32), "shape (N, 1, 28, 28), got shape (2, 28, 28)"),
    ("encode", np.zeros((2, 3, 28, 28), np.float32), "got shape (2, 3, 28, 28)"),
    ("reconstruct", np.arange(2 * 784).reshape(2, 1, 28, 28) % 256,
     "divide 8-bit pixels by 256, got int64"),
    # Binarized digits were told to be divided by 256 too: near black, and accepted.
    ("reconstruct", np.eye(28, dtype=bool)[None, None].repeat(2, 0),
     "images must be floats in [0, 1): convert binarized pixels (0 and 1) as they are, "
     "without dividing, got bool"),
    ("encode", np.eye(28, dtype=np.uint8)[None, None], "(0 and 1) as they are, without "
     "dividing, got uint8"),
    ("encode", np.full((1, 1, 28, 28), -3), "images must be floats in [0, 1), got int64"),
    ("reconstruct", np.full((2, 1, 28, 28), 255, np.float32),
     "images must be floats in [0, 1): divide 8-bit pixels by 256, got values from 255 to 255"),
    ("encode", np.linspace(-0.5, 1, 2 * 784, dtype=np.float32).reshape(2, 1, 28, 28),
     "got values from -0.5 to 1"),
    ("decode", np.zeros((2, 255), np.float32), "shape (N, 256), got shape (2, 255)"),
    ("decode", np.zeros((2, 256), np.int64), "codes must be floats, got int64"),
    # NaN pixels were told to be divided by 256; NaN codes decoded without a word.
    ("reconstruct", np.full((2, 1, 28, 28), np.nan, np.float32),
     "images must be finite, got NaN or infinite values"),
    ("decode", np.array([[0.5] * 255 + [np.inf]]), "codes must be finite, got NaN or infinite"),
])
def test_codec_refuses_other_input_saying_what_it_takes(codec, call, values, message):
    with pytest.raises(ValueError) as raised:
        getattr(codec, call)(values)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_pca_2d_matches_the_covariance_eigenvectors():
    rng = np.random.RandomState(0)
    codes = rng.randn(500, 6) @ rng.randn(6, 6)
    points = figures.pca_2d(codes)
    eigenvalues = np.linalg.eigvalsh(np.cov(codes, rowvar=False))[::-1]
    np.testing.assert_allclose(points.var(axis=0, ddof=1), eigenvalues[:2], rtol=1e-8)
    assert abs(np.corrcoef(points.T)[0, 1]) < 1e-8


def test_reconstruct_with_shipped_weights_matches_numpy(mnist_dir, digits, tmp_path,
                                                        capsys):
    out = tmp_path / "pairs.png"
    code = reconstruct.main(["--data-dir", mnist_dir, "--indices", "0,7,42",
                             "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    per_image = [float(v) for v in re.findall(r"label \d\): MSE ([0-9.]+)", printed)]
    mean = float(re.search(r"mean MSE over 3 images: ([0-9.]+)", printed).group(1))
    X, _ = digits
    with np.load(files.SHIPPED_WEIGHTS) as f:
        values = [f["arr_%d" % i] for i in range(len(f.files))]
    want = ((reference.autoencoder_forward(values, X[[0, 7, 42]]) - X[[0, 7, 42]]) ** 2
            ).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(per_image, want, atol=2e-6)
    assert abs(mean - want.mean()) < 2e-6
    assert want.mean() < 0.02  # the shipped weights reconstruct well
    image = pixels_of_png(out)
    assert image.shape[:2] == (260, 330)


def pixels_of_png(path):
    import matplotlib.image
    return matplotlib.image.imread(str(path))


def test_default_picks_one_of_each_class(digits):
    _, y = digits
    shown = figures.pick_indices(y)
    assert [y[i] for i in shown] == list(range(10))
    assert all(y[j] != y[i] for i in shown for j in range(i))
    assert figures.pick_indices(y, n=5, seed=1) == figures.pick_indices(y, n=5, seed=1)


@pytest.mark.parametrize("asked, message", [
    (dict(indices=[0, 1.5]), "indices must be whole numbers, got 1.5"),
    (dict(indices=[1, True]), "indices must be whole numbers, got True"),
    (dict(n=2.5), "n=2.5, not a positive integer"),
    (dict(n="5"), "n='5', not a positive integer"),
])
def test_picked_indices_are_whole_numbers(digits, asked, message):
    """In Python, pick_indices(y, indices=[1.5]) returned [1.5], which failed
    later in NumPy's indexing; n=2.5 failed in NumPy's sampling."""
    _, y = digits
    with pytest.raises(ValueError) as error:
        figures.pick_indices(y, **asked)
    assert str(error.value) == message
    assert figures.pick_indices(y, indices=[np.int64(3), 4]) == [3, 4]


def test_the_most_pairs_fit_in_a_picture_matplotlib_can_draw(digits):
    x, _ = digits
    fig = figures.reconstruction_figure(x[:3], x[:3])
    width = fig.get_size_inches()[0] * fig.dpi
    # Agg, matplotlib's renderer, refuses pictures of 2**16 pixels or more a side.
    assert figures.MAX_PAIRS * width / 3 < 2 ** 16 <= (figures.MAX_PAIRS + 100) * width / 3


@pytest.mark.parametrize("argv,message", [
    (["--indices", "10000"], "out of range"),
    (["--indices", "-1"], "out of range"),
    (["--weights", "/nonexistent/model.npz"], "no weights"),
    (["--n", "501"], "a figure shows at most 500 digits; 501 asked for"),
    (["--indices", ",".join(["7"] * 501)], "a figure shows at most 500 digits; 501 asked for"),
])
def test_reconstruct_bad_input(mnist_dir, tmp_path, capsys, argv, message):
    code = reconstruct.main(["--data-dir", mnist_dir, "--out",
                             str(tmp_path / "x.png")] + argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and "\n" not in err


def test_reconstruct_refuses_foreign_weights_and_unwritable_output(mnist_dir, tmp_path,
                                                                  capsys):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, np.zeros((3, 3)))
    code = reconstruct.main(["--data-dir", mnist_dir, "--weights", str(foreign),
                             "--out", str(tmp_path / "figs" / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "another architecture" in err and "\n" not in err
    assert os.listdir(tmp_path) == ["foreign.npz"]  # figs/ is not made for nothing
    (tmp_path / "file").write_text("not a directory")
    code = reconstruct.main(["--data-dir", mnist_dir, "--out",
                             str(tmp_path / "file" / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "cannot" in err and "\n" not in err


@pytest.mark.parametrize("command,flag", [
    (reconstruct, "--out"), (reconstruct, "--weights"), (reconstruct, "--data-dir"),
    (make_figures, "--out-dir"), (make_figures, "--metrics"),
    (make_figures, "--denoising-weights"), (export, "--out"), (export, "--weights"),
    (train, "--out"), (train, "--data-dir"), (bench, "--data-dir"), (bench, "--pytorch")])
@pytest.mark.parametrize("name, message", [
    ("", "must name a file or directory, got ''"),
    ("-", "'-' (standard input or output) is not taken: give a file or directory name "
     "(./- for one named -)"),
    ("runs/a/model.npz\nruns/b/model.npz", "'runs/a/model.npz\\nruns/b/model.npz' holds a "
     "line break: give one file or directory name")])
def test_an_empty_name_a_dash_or_two_lines_for_a_path_flag_is_a_usage_error(
        command, flag, name, message, capsys, tmp_path, monkeypatch):
    # Before, an empty name fell back to a default or the current directory,
    # or failed after the work naming nothing (or a temporary file); "-",
    # standard output to many tools, made a file or directory named "-"; two
    # names on two lines ("$(ls runs/*/model.npz)") were cut to the first in
    # the one-line error ("no weights at runs/a/model.npz", which exists).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        command.main([flag, name])
    err = capsys.readouterr().err.splitlines()[-1]
    assert done.value.code == 2
    assert err.endswith("error: argument {}: {}".format(flag, message))
    assert os.listdir(tmp_path) == []


LONG = "a" * 300  # a name longer than the 255 bytes ext4 and tmpfs take


@pytest.mark.parametrize("command,argv,message", [
    (reconstruct, ["--out", LONG + ".png"],
     "cannot write {}.png: its name is 304 bytes long; the file system takes at most 255"
     .format(LONG)),
    (export, ["--out", "x/{}/y.onnx".format(LONG)],
     "cannot write x/{0}/y.onnx: {{cwd}}/x/{0}: a name in it is 300 bytes long; its "
     "file system takes at most 255".format(LONG)),
    (make_figures, ["--out-dir", LONG + "/b"],
     "--out-dir {}/b: a name in it is 300 bytes long; its file system takes at most 255"
     .format(LONG)),
    (train, ["--out", LONG],
     "--out {}: a name in it is 300 bytes long; its file system takes at most 255"
     .format(LONG))])
def test_a_name_too_long_is_refused_before_any_work(command, argv, message, tmp_path, capsys,
                                                    monkeypatch):
    # Before, each did its work and then failed naming a temporary file
    # ("File name too long: ./.convae-tmp-p5nawf68"), or naming no flag.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "weights_path", lambda path: pytest.fail("did work first"))
    assert command.main(argv + ["--data-dir", "unused"] * (command is train)) == 1
    err = capsys.readouterr().err
    assert err.startswith("convae-") and err.endswith(": error: {}\n".format(
        message.format(cwd=tmp_path)))
    assert err.count("\n") == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("target,said", [
    ("/nonexistent/runs", "a symbolic link to /nonexistent/runs, which does not exist"),
    ("link", "a loop of symbolic links")])  # once 'a symbolic link leading nowhere (to link)'
@pytest.mark.parametrize("command,argv,shown", [
    (train, ["--out", "link", "--data-dir", "unused"], "--out link: "),
    (make_figures, ["--out-dir", "link"], "--out-dir link: "),
    (reconstruct, ["--out", "link/x.png"], "cannot write link/x.png: {cwd}/link: ")])
def test_a_link_leading_nowhere_is_refused_before_any_work(command, argv, shown, target, said,
                                                           tmp_path, capsys, monkeypatch):
    # Before: "File exists: link", after the work, naming no flag.
    monkeypatch.chdir(tmp_path)
    os.symlink(target, "link")
    monkeypatch.setattr(cli, "weights_path", lambda path: pytest.fail("did work first"))
    assert command.main(argv) == 1
    err = capsys.readouterr().err
    assert err.endswith(": error: {}{}\n".format(shown.format(cwd=tmp_path), said))
    assert err.count("\n") == 1 and os.listdir(tmp_path) == ["link"]


@pytest.mark.parametrize("command,out", [(reconstruct, "out.png"), (export, "out.onnx")])
@pytest.mark.parametrize("target,said", [
    ("/proc/version", "/proc: cannot write there (No such file or directory)"),
    ("out.link", "it is a loop of symbolic links")])
def test_a_file_link_that_cannot_be_written_through_is_refused_before_any_work(
        command, out, target, said, tmp_path, capsys, monkeypatch):
    """--out a link is written through, so where the link leads is judged.
    Before, a link into /proc did the work and then failed naming a temporary
    file ("No such file or directory: /proc/.convae-tmp-r7oj_z8j"); a loop of
    links was replaced by the file, the link lost."""
    monkeypatch.chdir(tmp_path)
    os.symlink(target, out)
    os.symlink(out, "out.link")
    monkeypatch.setattr(cli, "weights_path", lambda path: pytest.fail("did work first"))
    assert command.main(["--out", out]) == 1
    err = capsys.readouterr().err
    assert err.endswith(": error: cannot write {}: {}\n".format(out, said))
    assert err.count("\n") == 1
    assert os.readlink(out) == target and sorted(os.listdir(tmp_path)) == sorted([out, "out.link"])


def test_a_failed_rename_is_reported_with_the_file_it_was_to_make():
    error = OSError(36, "File name too long", "out/.convae-tmp-p5nawf68", None, "out/model.onnx")
    assert cli.describe(error) == "File name too long: out/model.onnx"
    assert cli.describe(FileNotFoundError(2, "No such file", "x.npz")) == "No such file: x.npz"


def test_a_tilde_in_a_path_flag_means_the_home_directory(mnist_dir, tmp_path, capsys,
                                                         monkeypatch):
    """The shell leaves '~' alone in --out=~/x: it made a directory named '~' here."""
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "cwd")
    assert reconstruct.main(["--data-dir", mnist_dir, "--indices", "3",
                             "--out=~/figs/x.png"]) == 0
    (tmp_path / "home" / "w.npz").write_bytes(open(files.SHIPPED_WEIGHTS, "rb").read())
    assert export.main(["--weights=~/w.npz", "--out=~/model.onnx"]) == 0
    assert sorted(os.listdir(tmp_path / "home")) == ["figs", "model.onnx", "w.npz"]
    assert os.listdir(tmp_path / "home" / "figs") == ["x.png"]
    assert os.listdir(tmp_path / "cwd") == []


def test_reconstruct_refuses_an_out_that_names_no_file(mnist_dir, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figs").mkdir()
    for out, message in [("new/", "cannot write new/: it names a directory; give a file name"),
                         ("x.png/", "cannot write x.png/: it names a directory"),
                         ("figs", "cannot write figs: it names a directory")]:
        code = reconstruct.main(["--data-dir", mnist_dir, "--out", out])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("convae-reconstruct: error: " + message), err
        assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["figs"] and os.listdir(tmp_path / "figs") == []


# How each format's files begin (their specifications), or what they hold.
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<svg", "eps": b"%!PS-Adobe",
         "ps": b"%!PS-Adobe", "jpg": b"\xff\xd8\xff", "jpeg": b"\xff\xd8\xff",
         "tif": b"II*\x00", "tiff": b"II*\x00", "webp": b"WEBP"}


@pytest.mark.parametrize("name,kind", [("pairs." + k, k) for k in figures.FORMATS]
                         + [("pairs.PDF", "pdf"), ("pairs", "png")])
def test_a_figure_is_written_in_the_format_its_name_asks_for(tmp_path, name, kind):
    fig = figures.reconstruction_figure(np.zeros((2, 1, 28, 28), np.float32),
                                        np.ones((2, 1, 28, 28), np.float32), ["a", "b"])
    figures.save_figure(fig, str(tmp_path / name))
    content = (tmp_path / name).read_bytes()
    assert MAGIC[kind] in content[:400], content[:16]
    assert os.listdir(tmp_path) == [name]


def test_reconstruct_refuses_a_name_no_figure_format_has(mnist_dir, tmp_path, capsys):
    out = tmp_path / "new" / "pairs.txt"
    code = reconstruct.main(["--data-dir", mnist_dir, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert str(out) in err and ".txt" in err and ".pdf" in err
    assert not (tmp_path / "new").exists()  # refused before anything was made


def test_reconstruct_writes_a_pdf_when_asked(mnist_dir, tmp_path, capsys):
    out = tmp_path / "pairs.pdf"
    assert reconstruct.main(["--data-dir", mnist_dir, "--indices", "3", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF-")
    assert "mean MSE over 1 image: " in capsys.readouterr().out  # not "1 images"


def test_an_out_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    def no_loading(*args):
        raise AssertionError("loaded the test set although --out-dir is a file")
    monkeypatch.setattr(make_figures.data, "load_test_set", no_loading)
    (tmp_path / "figs").write_text("a file")
    assert make_figures.main(["--out-dir", str(tmp_path / "figs")]) == 1
    assert capsys.readouterr().err.strip() == (
        "convae-figures: error: --out-dir {}: not a directory".format(tmp_path / "figs"))


def test_metrics_are_read_from_a_run_directory_as_weights_are(tmp_path, monkeypatch):
    """--metrics runs/x, the directory as --weights takes it, said "Is a
    directory: runs/x", naming no flag."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(open(files.SHIPPED_METRICS).read())
    shipped = figures.read_metrics(files.SHIPPED_METRICS)
    assert figures.read_metrics(str(run)) == shipped
    drawn = []
    monkeypatch.setattr(make_figures.data, "load_test_set",
                        lambda dataset, data_dir=None: (dataset, None))
    monkeypatch.setattr(make_figures, "make_all", lambda *args: drawn.append(args) or [])
    assert make_figures.main(["--metrics", str(run), "--out-dir", str(tmp_path / "figs")]) == 0
    assert drawn[0][2] == shipped


def test_shipped_run_is_documented():
    metrics = figures.read_metrics(files.SHIPPED_METRICS)
    assert [m["epoch"] for m in metrics] == list(range(1, len(metrics) + 1))
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert "{:.6f}".format(metrics[-1]["val_loss"]) in readme


@pytest.mark.parametrize("damage", ["truncated", "npy", "text"])
def test_damaged_weights_are_one_line_naming_them(mnist_dir, tmp_path, capsys, damage):
    weights = tmp_path / "model.npz"
    blob = open(files.SHIPPED_WEIGHTS, "rb").read()
    if damage == "truncated":
        weights.write_bytes(blob[:100])
    elif damage == "npy":
        np.save(open(weights, "wb"), np.zeros(3))
    else:
        weights.write_text("not weights")
    # Damaged test files too: the weights are read first, before any data
    # (which, missing, would be downloaded).
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data_dir / name).write_bytes(b"\x1f\x8bjunk")
    for command in (reconstruct.main, make_figures.main):
        flag = "--weights" if command is reconstruct.main else "--denoising-weights"
        out = ["--out", str(tmp_path / "x.png")] if command is reconstruct.main else [
            "--out-dir", str(tmp_path / "figs")]
        code = command(["--data-dir", str(data_dir), flag, str(weights)] + out)
        err = capsys.readouterr().err.strip()
        assert code == 1 and str(weights) in err and "\n" not in err, err


def test_a_seed_without_n_is_a_usage_error(capsys):
    """It picks the --n random digits; without --n it was silently ignored."""
    for argv in (["--seed", "5"], ["--indices", "3", "--seed", "5"]):
        with pytest.raises(SystemExit) as done:
            reconstruct.main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.endswith(
            "error: --seed picks the --n random digits; give --n too\n")


@pytest.mark.parametrize("indices", [",", "", "a,b", "1,,2", "1,2,", "1_0", "\u0663"])
def test_indices_not_a_plain_list_of_integers_are_a_usage_error(indices, capsys):
    with pytest.raises(SystemExit) as done:
        reconstruct.main(["--indices", indices])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--indices" in err and "Traceback" not in err


@pytest.mark.parametrize("content,message", [
    (b'{"epoch": 1, "train_loss": 0.1, "val_loss": 0.1}\n{"epoch": 2\n', "line 2: not JSON"),
    (b"\xc8\x00\xff binary", "not UTF-8 text"),
    (b'{"epoch": 1}\n', "line 1: not a metrics record (one has epoch, train_loss, val_loss)"),
    (b"\n", "no metrics in it"),
    # Two runs' files run together (cat a b > m), or epochs out of order.
    (b'{"epoch": 1, "train_loss": 0.1, "val_loss": 0.1}\n'
     b'{"epoch": 1, "train_loss": 0.1, "val_loss": 0.1}\n',
     "line 2: epoch 1 where epoch 2 was due (a run's epochs count up from 1)"),
    (b'{"epoch": 2, "train_loss": 0.1, "val_loss": 0.1}\n', "line 1: epoch 2 where epoch 1"),
    # Drawn as categories, or as nothing, in a figure that looked finished.
    (b'{"epoch": 1, "train_loss": "abc", "val_loss": 0.1}\n',
     "line 1: train_loss 'abc' is no mean squared error (a finite number >= 0)"),
    (b'{"epoch": 1, "train_loss": 0.1, "val_loss": NaN}\n', "line 1: val_loss nan is no"),
    (b'{"epoch": 1, "train_loss": -0.1, "val_loss": 0.1}\n', "line 1: train_loss -0.1 is no"),
])
def test_bad_metrics_files_are_one_line_naming_them(mnist_dir, tmp_path, capsys, content,
                                                    message):
    metrics = tmp_path / "bad.jsonl"
    metrics.write_bytes(content)
    code = make_figures.main(["--data-dir", mnist_dir, "--metrics", str(metrics),
                              "--out-dir", str(tmp_path / "figs")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and str(metrics) in err and message in err and "\n" not in err, err


def test_reconstruct_needs_only_the_test_files(mnist_dir, tmp_path, capsys):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(os.path.join(mnist_dir, name), tmp_path / name)
    code = reconstruct.main(["--data-dir", str(tmp_path), "--indices", "3",
                             "--out", str(tmp_path / "x.png")])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["t10k-images-idx3-ubyte.gz",
                                            "t10k-labels-idx1-ubyte.gz", "x.png"]


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_command_stopped_while_compiling_says_so_in_one_line(
        tmp_path, capsys, monkeypatch, number, code):
    """Ctrl-C, or the SIGTERM of ``timeout`` or a batch scheduler, in a cold
    compile (a minute and more): one line and the shell's code for the signal,
    not a traceback; SIGTERM no longer kills it where it stands."""
    slept_through = []

    def compiling(*args):
        os.kill(os.getpid(), number)
        time.sleep(30)  # the signal ends this at once
        slept_through.append(True)
    monkeypatch.setattr(reconstruct, "Codec", compiling)
    before = signal.getsignal(signal.SIGTERM)
    assert reconstruct.main(["--out", str(tmp_path / "pairs.png")]) == code
    assert not slept_through
    assert capsys.readouterr().err == "convae-reconstruct: interrupted\n"
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == before  # put back as it was


@pytest.mark.parametrize("reader, code, err", [
    ("gone", 141, ""),
    ("a full disk", 1, "convae-reconstruct: error: No space left on device: standard output\n")])
def test_report_lines_that_cannot_be_written_cost_no_figure(mnist_dir, tmp_path, reader, code,
                                                             err):
    """`convae-reconstruct | head -1` (the reader gone: quiet, as a Unix tool
    killed by SIGPIPE, code 141) or `> log` on a full disk (one line naming
    standard output): either way the figure is written first."""
    if reader == "gone":
        read_end, stdout = os.pipe()
        os.close(read_end)
    else:
        stdout = os.open("/dev/full", os.O_WRONLY)
    try:
        done = subprocess.run([sys.executable, "scripts/reconstruct.py", "--data-dir", mnist_dir,
                               "--n", "3", "--out", str(tmp_path / "pairs.png")], cwd=REPO,
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(stdout)
    assert (done.returncode, done.stderr) == (code, err)
    assert (tmp_path / "pairs.png").read_bytes().startswith(MAGIC["png"])


def test_a_name_the_output_cannot_encode_is_written_escaped(mnist_dir, tmp_path):
    """Under PYTHONIOENCODING=ascii, `--out ré.png` wrote the figure and then
    failed on its "wrote" line: "error: 'ascii' codec can't encode character"."""
    out = tmp_path / "r\u00e9.png"
    done = subprocess.run([sys.executable, "scripts/reconstruct.py", "--data-dir", mnist_dir,
                           "--n", "1", "--out", str(out)], cwd=REPO, capture_output=True,
                          env=dict(os.environ, PYTHONIOENCODING="ascii"), timeout=300)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode("ascii").splitlines()[-1] == "wrote {}".format(
        tmp_path / "r\\xe9.png")
    assert out.read_bytes().startswith(MAGIC["png"])


def test_the_learning_curves_are_those_of_the_run_the_weights_come_from(tmp_path, capsys,
                                                                       monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(files.SHIPPED_WEIGHTS, run / "model.npz")
    (run / "metrics.jsonl").write_text(open(files.SHIPPED_METRICS).readline())
    assert make_figures.run_metrics(str(run)) == str(run / "metrics.jsonl")
    assert make_figures.run_metrics(str(run / "model.npz")) == str(run / "metrics.jsonl")
    assert make_figures.run_metrics(None) == files.SHIPPED_METRICS
    assert make_figures.run_metrics(files.SHIPPED_WEIGHTS) == files.SHIPPED_METRICS
    # Weights alone, away from their run: the shipped run's curves would pass
    # for theirs. Refused before the test set is loaded.
    shutil.copy(files.SHIPPED_WEIGHTS, tmp_path / "alone.npz")

    def no_loading(*args):
        raise AssertionError("loaded the test set")
    monkeypatch.setattr(make_figures.data, "load_test_set", no_loading)
    assert make_figures.main(["--weights", str(tmp_path / "alone.npz"),
                              "--out-dir", str(tmp_path / "figs")]) == 1
    assert capsys.readouterr().err == (
        "convae-figures: error: --weights {}: no metrics.jsonl beside it for the learning "
        "curves; give --metrics\n".format(tmp_path / "alone.npz"))


def run_with_checkpoint(run, **settings):
    """A run directory: the shipped model.npz, and a checkpoint.npz whose
    settings are train.Settings(**settings)."""
    run.mkdir()
    shutil.copy(files.SHIPPED_WEIGHTS, run / "model.npz")
    rng = np.random.RandomState(0).get_state()
    (run / "checkpoint.npz").write_bytes(checkpoint.encode(checkpoint.Checkpoint(
        settings=dict(train.Settings(**settings).__dict__), architecture="[]", state=[],
        metrics=[], epoch=1, batch=0, err_sum=0.0, rng_state=rng)))
    return run


def test_the_digits_shown_are_from_the_dataset_the_weights_were_trained_on(
        tmp_path, capsys, monkeypatch):
    """convae-train --dataset fashion --out runs/f, then convae-reconstruct
    --weights runs/f: Fashion-MNIST, as its checkpoint says, not MNIST digits
    the network never saw."""
    run = run_with_checkpoint(tmp_path / "run", dataset="fashion")
    assert cli.dataset_to_show(None, str(run)) == "fashion"
    assert cli.dataset_to_show(None, str(run / "model.npz")) == "fashion"
    assert cli.dataset_to_show("mnist", str(run)) == "mnist"  # the user's word wins
    assert cli.dataset_to_show(None, None) == "mnist"  # the shipped weights
    shutil.copy(files.SHIPPED_WEIGHTS, tmp_path / "alone.npz")
    assert cli.dataset_to_show(None, str(tmp_path / "alone.npz")) == "mnist"
    loaded = []

    def load_test_set(dataset, data_dir):
        loaded.append(dataset)
        raise data.DataError("stop here")
    monkeypatch.setattr(reconstruct.data, "load_test_set", load_test_set)
    assert reconstruct.main(["--weights", str(run), "--out", str(tmp_path / "x.png")]) == 1
    assert loaded == ["fashion"]
    # All figures: the run's dataset, from --data-dir; the shipped denoising
    # run's figure shows what it trained on, MNIST, from where it is found.
    sets = []

    def test_set(dataset, data_dir=None):
        sets.append((dataset, data_dir))
        return dataset, None
    drawn = []
    monkeypatch.setattr(make_figures.data, "load_test_set", test_set)
    monkeypatch.setattr(make_figures, "make_all", lambda *args: drawn.append(args) or [])
    (run / "metrics.jsonl").write_text(open(files.SHIPPED_METRICS).readline())
    assert make_figures.main(["--weights", str(run), "--data-dir", "fashion-dir"]) == 0
    assert sets == [("fashion", "fashion-dir"), ("mnist", None)]
    codec, shown, metrics, denoising, out_dir = drawn[0]
    assert (shown.images, denoising.shown.images) == ("fashion", "mnist")
    assert shown.classes[9] == "Ankle boot"  # Fashion-MNIST's names, not digits
    assert denoising.shown.classes == data.DATASETS["mnist"]["classes"]
    assert metrics == figures.read_metrics(str(run / "metrics.jsonl"))
    sets.clear()
    assert make_figures.main(["--weights", str(run), "--dataset", "mnist"]) == 0
    assert sets == [("mnist", None)]  # the user's --dataset, for both
    # A checkpoint that cannot be read: one line, and the way round it.
    (run / "checkpoint.npz").write_bytes(b"not a checkpoint")
    assert reconstruct.main(["--weights", str(run), "--out", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "convae-reconstruct: error: {}: not an .npz file; give --dataset".format(
            run / "checkpoint.npz"))


def test_noisy_copies_corrupt_as_training_does():
    images = np.random.RandomState(1).uniform(0, 1, (200, 1, 28, 28)).astype(np.float32)
    noise = np.random.RandomState(0).normal(0, 0.3, images.shape)
    np.testing.assert_array_equal(make_figures.noisy_copies(images),
                                  np.clip(images + noise, 0, 1).astype(np.float32))
    masked = make_figures.noisy_copies(images, "mask", 0.5)
    zeroed = masked == 0
    np.testing.assert_array_equal(masked[~zeroed], images[~zeroed])  # the rest untouched
    assert abs(zeroed.mean() - 0.5) < 0.01  # 156,800 pixels: the std is 0.0013
    with pytest.raises(ValueError, match="noise='Mask', not one of gaussian, mask"):
        make_figures.noisy_copies(images, "Mask", 0.5)
    for level in (1.5, -0.2, float("nan")):  # all zeros, untouched, NaN: without a word
        with pytest.raises(ValueError, match=r"level=.*, not a number in \[0, 1\)"):
            make_figures.noisy_copies(images, "mask", level)


def test_the_denoising_figure_shows_the_noise_its_run_trained_with(tmp_path, capsys,
                                                                   monkeypatch):
    """A --noise mask --noise-level 0.5 run is shown with masks, not with the
    shipped run's Gaussian noise; a run trained without noise is refused."""
    drawn = []
    monkeypatch.setattr(make_figures.data, "load_test_set", lambda *args: ("test set", None))
    monkeypatch.setattr(make_figures, "make_all", lambda *args: drawn.append(args) or [])
    masked = run_with_checkpoint(tmp_path / "masked", noise="mask", noise_level=0.5)
    assert make_figures.main(["--denoising-weights", str(masked)]) == 0
    assert make_figures.main([]) == 0  # the shipped denoiser: no checkpoint
    assert [(args[3].noise, args[3].level) for args in drawn] == [("mask", 0.5), ("gaussian", 0.3)]
    plain = run_with_checkpoint(tmp_path / "plain")
    assert make_figures.main(["--denoising-weights", str(plain)]) == 1
    assert capsys.readouterr().err == (
        "convae-figures: error: --denoising-weights {}: that run trained without --noise, "
        "so it never learned to denoise; give a --noise gaussian or --noise mask run\n"
        .format(plain))


def test_fashion_mnist_is_captioned_with_its_class_names(codec, digits):
    X, y = digits
    fashion = data.DATASETS["fashion"]["classes"]
    assert figures.captions([0, 1], y, data.DATASETS["mnist"]["classes"]) == [
        "#0 ({})".format(y[0]), "#1 ({})".format(y[1])]
    assert figures.captions([0, 1], np.array([9, 0]), fashion) == [
        "#0 (Ankle boot)", "#1 (T-shirt/top)"]
    codes = codec.encode(X[:200])
    for classes, label, ticks in ((data.DATASETS["mnist"]["classes"], "digit", list("0123456789")),
                                  (fashion, "class", list(fashion))):
        fig = figures.code_pca_figure(codes, y[:200], classes)
        pixels(fig)  # drawn, so that the colour bar has its tick labels
        bar = fig.axes[1]
        assert bar.get_ylabel() == label
        assert [t.get_text() for t in bar.get_yticklabels()] == ticks


def test_reconstruct_names_fashion_mnist_classes(tmp_path, capsys):
    directory = data.DATASETS["fashion"]["debian_dir"]
    if not os.path.isdir(directory):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / "f.png"
    assert reconstruct.main(["--dataset", "fashion", "--data-dir", directory,
                             "--indices", "0,1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    # Fashion-MNIST's first two test images: an ankle boot and a pullover.
    assert printed[0].startswith("test image     0 (label Ankle boot): MSE ")
    assert printed[1].startswith("test image     1 (label Pullover): MSE ")
    assert out.exists()


def test_a_run_s_figures_go_beside_it_and_the_shipped_ones_stay(mnist_dir, tmp_path, capsys,
                                                                 monkeypatch):
    """convae-reconstruct --weights runs/mine (the README's example) wrote
    figures/reconstructions.png, the shipped figure the README shows; so did
    convae-figures --weights with all six."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    run = run_with_checkpoint(tmp_path / "runs" / "mine")
    (run / "metrics.jsonl").write_text(open(files.SHIPPED_METRICS).readline())
    assert reconstruct.main(["--weights", "runs/mine", "--data-dir", mnist_dir]) == 0
    assert make_figures.main(["--weights", "runs/mine", "--data-dir", mnist_dir]) == 0
    written = capsys.readouterr().out
    assert "wrote runs/mine/figures/reconstructions.png" in written
    assert sorted(os.listdir(run / "figures")) == sorted(
        ["reconstructions.png", "learning_curves.png", "filters.png", "code_pca.png",
         "interpolation.png", "denoising.png"])
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # no figures/ here
    # The shipped weights, named or not, still draw into figures/.
    assert reconstruct.main(["--data-dir", mnist_dir, "--indices", "0"]) == 0
    assert reconstruct.main(["--weights", files.SHIPPED_WEIGHTS, "--data-dir", mnist_dir,
                             "--indices", "1"]) == 0
    assert capsys.readouterr().out.count("wrote figures/reconstructions.png") == 2
