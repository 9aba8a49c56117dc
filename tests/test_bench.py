"""The benchmark command's errors: one line and a non-zero exit, never a traceback."""
import json

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


def fake_child(sgemm_gflops):
    """What ``bench.child`` returns, with a given sgemm reference."""
    def child(args, compiledir, compile_only, no_function_cache=False):
        return dict(compile_s=1.0, first_step_s=2.0, train_images_per_s=2000.0,
                    eval_images_per_s=6000.0, forward_flops_per_image=8.921e6,
                    sgemm_gflops=sgemm_gflops, blas="OpenBLAS", blas_core="Prescott",
                    kernels={"forward C=32 F=32 12x12 filter 5x5": "avx2"},
                    kernel_ms={"forward N=128 C=32 F=32 12x12 filter 5x5 threads=2":
                               {"avx2": 3.1, "blas": 4.2}})
    return child


def test_an_efficiency_above_one_is_an_error_not_a_number(mnist_dir, capsys, monkeypatch):
    # 2000 training images/s are 53.5 GFLOP/s: a 42 GFLOP/s "BLAS" cannot be the real one.
    monkeypatch.setattr(bench, "child", fake_child(42.0))
    assert bench.main(["--data-dir", mnist_dir, "--no-cold"]) == 1
    out, err = capsys.readouterr()
    assert "train_efficiency came out at 1.27" in err and "\n" not in err.strip()
    assert "train_efficiency" not in out
    monkeypatch.setattr(bench, "child", fake_child(240.0))
    assert bench.main(["--data-dir", mnist_dir, "--no-cold", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_efficiency"] == round(3 * 8.921e6 * 2000 / 1e9 / 240, 3)
    assert report["blas_core"] == "Prescott" and report["kernels"]
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    family = [line.split(":")[1].strip() for line in first.splitlines()
              if line.startswith(("cpu family", "model\t"))]
    assert report["cpu"]["family_model"] == "/".join(family)


def test_a_missing_pytorch_python_is_one_line_before_measuring(mnist_dir, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(bench, "child", fake_child(240.0))
    missing = str(tmp_path / "no-python")
    assert bench.main(["--data-dir", mnist_dir, "--pytorch", missing]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "convae-bench: error: --pytorch {}: no such Python".format(missing)
