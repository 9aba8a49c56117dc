"""The benchmark command's errors: one line and a non-zero exit, never a traceback."""
import pytest

from convae import bench, data


@pytest.mark.parametrize("flags", [["--batches", "0"], ["--batch-size", "0"],
                                   ["--threads", "-2"], ["--batches", "x"]])
def test_bad_numbers_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as done:
        bench.main(flags)
    assert done.value.code == 2 and flags[0] in capsys.readouterr().err


def test_more_images_than_mnist_has(mnist_dir, capsys):
    assert bench.main(["--data-dir", mnist_dir, "--batches", "400"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "51200 images" in err and "50000" in err


def test_no_mnist_anywhere_is_one_line(tmp_path, capsys, monkeypatch):
    # Nothing on disk, and the only mirror (on this machine) has nothing.
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ("http://127.0.0.1:9/",))
    assert bench.main(["--data-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("convae-bench: error: could not download") and "\n" not in err
