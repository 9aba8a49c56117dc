"""The benchmark: its errors (one line and a non-zero exit, never a traceback), how
it times (best windows, taking turns) and what it reports."""
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from convae import bench, data, timing


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
    assert err.startswith("python -m convae.bench: error: ") and "\n" not in err
    assert "has no train-images-idx3-ubyte.gz, and it could not be downloaded" in err


def fake_measuring(monkeypatch, sgemm_gflops, cpu_wait_share=0.01, kernels_unmeasured=(),
                   pytorch_cpu_wait_share=0.01):
    """Make the benchmark's children return set results, with a given sgemm reference
    (and, as a busy machine leaves them, waits for a CPU and unmeasured kernels)."""
    def child(args, compiledir, compile_only, no_function_cache=False):
        return dict(compile_s=1.0, first_step_s=2.0, train_images_per_s=2000.0,
                    eval_images_per_s=6000.0, forward_flops_per_image=8.921e6,
                    sgemm_gflops=sgemm_gflops, blas="OpenBLAS", blas_core="Prescott",
                    kernels={"forward C=32 F=32 12x12 filter 5x5": "avx2"},
                    kernel_ms={"forward N=128 C=32 F=32 12x12 filter 5x5 threads=2":
                               {"avx2": 3.1, "blas": 4.2}},
                    kernels_unmeasured=list(kernels_unmeasured),
                    cpu_wait_share=cpu_wait_share)

    def measure_in_turns(args, compiledir, data_dir):
        torch = {"train_images_per_s": 800.0, "eval_images_per_s": 2000.0,
                 "torch": "2.13.0+cpu", "cpu_wait_share": pytorch_cpu_wait_share}
        return child(args, compiledir, False), (torch if args.pytorch else None)
    monkeypatch.setattr(bench, "child", child)
    monkeypatch.setattr(bench, "measure_in_turns", measure_in_turns)


def test_an_efficiency_above_one_is_an_error_not_a_number(mnist_dir, capsys, monkeypatch):
    # 2000 training images/s are 53.5 GFLOP/s: a 42 GFLOP/s "BLAS" cannot be the real one.
    fake_measuring(monkeypatch, 42.0)
    assert bench.main(["--data-dir", mnist_dir, "--no-cold"]) == 1
    out, err = capsys.readouterr()
    assert "train_efficiency came out at 1.27" in err and "\n" not in err.strip()
    assert "train_efficiency" not in out
    fake_measuring(monkeypatch, 240.0)
    assert bench.main(["--data-dir", mnist_dir, "--no-cold", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_efficiency"] == round(3 * 8.921e6 * 2000 / 1e9 / 240, 3)
    assert report["blas_core"] == "Prescott" and report["kernels"]
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    family = [line.split(":")[1].strip() for line in first.splitlines()
              if line.startswith(("cpu family", "model\t"))]
    assert report["cpu"]["family_model"] == "/".join(family)


@pytest.mark.parametrize("wait, unmeasured, torch_wait, said", [
    (0.43, [], 0.02, "convae's threads waited for a CPU 0.43 s per second timed"),
    (0.02, ["grad_weights N=128 C=1 F=32 28x28 filter 7x7 threads=2"], 0.02,
     "1 correlation ran the widest kernel unmeasured"),
    # A busy machine slowing PyTorch's turns alone would flatter convae's ratios.
    (0.02, [], 0.3, "PyTorch's threads waited for a CPU 0.3 s per second timed"),
    (0.02, [], 0.02, None),
    (None, [], None, None)])  # Linux does not say: no warning, and no TypeError
def test_a_busy_machine_is_reported_with_its_numbers(mnist_dir, tmp_path, capsys, monkeypatch,
                                                     wait, unmeasured, torch_wait, said):
    """Other programs running beside the benchmark left no trace in its report."""
    fake_measuring(monkeypatch, 240.0, wait, unmeasured, torch_wait)
    python = tmp_path / "python"  # a program, for the --pytorch check; never run here
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    assert bench.main(["--data-dir", mnist_dir, "--no-cold", "--json",
                       "--pytorch", str(python)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["cpu_wait_share"], report["kernels_unmeasured"],
            report["pytorch_cpu_wait_share"]) == (wait, unmeasured, torch_wait)
    assert err == ("" if said is None else "python -m convae.bench: warning: other programs "
                   "were running ({}): these rates understate this machine; measure again "
                   "with nothing else running\n".format(said))


def test_the_wait_for_a_cpu_is_measured_over_the_timing_not_the_turns(busy_cpus):
    """With a busy program on every CPU, a thread timing windows waits for a CPU
    about a third of the time; the turns' waits (blocked, 1.5 s a round here, 3x
    the timing) are left out, or the share would read 0.08, as on a quiet machine."""

    def spin(_):
        start = time.perf_counter()
        while time.perf_counter() - start < 0.01:
            pass

    with busy_cpus():
        rates, share = timing.rates_and_cpu_wait({"spin": (spin, 1.0)}, 2,
                                                 lambda: time.sleep(1.5))
    assert set(rates) == {"spin"} and share > timing.STEADY_WAIT


def test_a_missing_pytorch_python_is_one_line_before_measuring(mnist_dir, tmp_path, capsys,
                                                                monkeypatch):
    fake_measuring(monkeypatch, 240.0)
    missing = str(tmp_path / "no-python")
    assert bench.main(["--data-dir", mnist_dir, "--pytorch", missing]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "python -m convae.bench: error: --pytorch {}: no such Python".format(missing)
    not_a_program = tmp_path / "notes.txt"  # a file that exists: "no such Python" misled
    not_a_program.write_text("torch\n")
    assert bench.main(["--data-dir", mnist_dir, "--pytorch", str(not_a_program)]) == 1
    assert capsys.readouterr().err.strip() == (
        "python -m convae.bench: error: --pytorch {}: not a program (it cannot be "
        "run)".format(not_a_program))


def test_more_threads_than_cpus_to_run_them_are_refused(mnist_dir, capsys, monkeypatch):
    """`--threads 64` on 2 CPUs (or 2 under `taskset -c 0`) would time the
    threads' contention: refused in one line; by default it takes as many
    threads as the CPUs this process may run on, not os.cpu_count()."""
    fake_measuring(monkeypatch, 240.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # as under taskset -c 0
    assert bench.main(["--data-dir", mnist_dir, "--no-cold", "--threads", "2"]) == 1
    assert capsys.readouterr().err == (
        "python -m convae.bench: error: --threads 2: this process may run on 1 CPU here; "
        "more threads than that time their contention, not convae\n")
    assert bench.main(["--data-dir", mnist_dir, "--no-cold", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threads"] == 1


class FakeClock:
    """time.perf_counter for convae.timing: each step moves it on by a set time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_window_counts_calls_until_half_a_second_after_an_untimed_one(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    calls = []

    def step(i):
        calls.append(i)
        clock.now += 0.15
    # The untimed call, then calls 0-3: 0.60 s, the first elapsed time >= 0.5 s.
    assert timing.window_rate(step, work=128) == pytest.approx(4 * 128 / 0.6)
    assert calls == [0, 0, 1, 2, 3]


def test_the_rates_take_turns_and_each_keeps_its_best_window(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    seconds = {"train": [0.5, 0.25, 0.5], "sgemm": [0.1, 0.5, 0.5]}  # per call, by round
    order = []

    def timed(name):
        def step(i):
            if i == 0 and (not order or order[-1][0] != name):
                order.append((name, len(order) // 2))
            clock.now += seconds[name][order[-1][1]]
        return step
    best = timing.interleaved_rates({"train": (timed("train"), 128),
                                     "sgemm": (timed("sgemm"), 17.2)}, rounds=3)
    assert order == [("train", 0), ("sgemm", 0), ("train", 1), ("sgemm", 1),
                     ("train", 2), ("sgemm", 2)]
    assert best == {"train": pytest.approx(128 / 0.25), "sgemm": pytest.approx(17.2 / 0.1)}


# A process that takes turns as the benchmark's children do (convae.timing):
# each window of each of its two rates appends "NAME ROUND RATE" to a log,
# and its rates are set by round. Then it prints its JSON, or fails.
TURN_TAKER = """
import json, runpy, sys
timing = runpy.run_path({timing!r})
name, log, fail_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
round_ = [-1]
def waiter(wait=timing["turn_waiter"]()):
    wait()
    round_[0] += 1
    if round_[0] == fail_after:
        sys.exit(name + " broke in round " + str(round_[0]))
def step(rate):
    def window(i):
        if i == 0:
            with open(log, "a") as f:
                f.write("{{}} {{}} {{}}\\n".format(name, round_[0], rate))
    return window
timing["time"].perf_counter = iter(range(10 ** 6)).__next__  # one second a call
rates = timing["interleaved_rates"](
    {{"fast": (step("fast"), 100.0 * (1 + round_[0] % 2)), "slow": (step("slow"), 1.0)}},
    rounds=3, before_round=waiter)
print(json.dumps(rates))
"""


def turn_taker(tmp_path, name, fail_after=-1):
    script = tmp_path / "turns.py"
    script.write_text(TURN_TAKER.format(timing=timing.__file__))
    return (name, [sys.executable, str(script), name, str(tmp_path / "log"), str(fail_after)],
            dict(os.environ))


def test_children_take_turns_round_by_round_and_keep_their_best(tmp_path):
    results = bench.take_turns([turn_taker(tmp_path, "convae"),
                                turn_taker(tmp_path, "pytorch")], rounds=3)
    calls = (tmp_path / "log").read_text().split("\n")[:-1]
    # A window's untimed first call and its first timed one both log it.
    windows = calls[::2]
    assert calls[1::2] == windows
    # One process at a time, a whole round each: both rates of convae's
    # round 0, then PyTorch's, then convae's round 1, ...
    assert windows == ["{} {} {}".format(name, r, rate) for r in range(3)
                       for name in ("convae", "pytorch") for rate in ("fast", "slow")]
    for rates, launched in results:
        # The best window of each rate: round 1's fast one ran at 200.
        assert rates == {"fast": 200.0, "slow": 1.0} and launched > 0


def test_a_child_that_fails_in_its_turn_is_one_line_and_none_is_left(tmp_path):
    with pytest.raises(bench.BenchError) as raised:
        bench.take_turns([turn_taker(tmp_path, "convae"),
                          turn_taker(tmp_path, "--pytorch python", fail_after=1)], rounds=3)
    assert str(raised.value) == "--pytorch python: --pytorch python broke in round 1"
    # Nothing is still running: a third process would find no log growing.
    size = (tmp_path / "log").stat().st_size
    subprocess.run(["sleep", "0.3"])
    assert (tmp_path / "log").stat().st_size == size


def test_a_child_that_ends_without_a_word_says_so(tmp_path):
    """`--pytorch /bin/true` said "--pytorch /bin/true: exit code 0", an error
    that read as a success."""
    quiet = ("--pytorch /bin/true", [sys.executable, "-c", "pass"], dict(os.environ))
    with pytest.raises(bench.BenchError) as raised:
        bench.take_turns([turn_taker(tmp_path, "convae"), quiet], rounds=3)
    assert str(raised.value) == "--pytorch /bin/true: ended with exit code 0, saying nothing"


def test_the_timing_file_runs_without_convae_as_bench_pytorch_runs_it():
    # scripts/bench_pytorch.py runs convae/timing.py as a file in PyTorch's
    # environment, which has neither Theano nor convae.
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "convae", "timing.py")
    code = ("import runpy, sys; sys.modules['convae'] = None; "
            "t = runpy.run_path({!r}); rates, wait = t['rates_and_cpu_wait']("
            "{{'x': (lambda i: None, 1.0)}}, rounds=1); print(sorted(rates), wait >= 0)"
            .format(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "['x'] True", done.stderr


def test_the_sgemm_window_leaves_openblas_on_the_networks_thread_count():
    from convae.runtime import openblas
    before = openblas.threads()
    openblas.set_threads(1)
    try:
        step, gflop = bench.sgemm_step(threads=2, n=64)
        step(0)
        assert openblas.threads() == 1 and gflop == 2 * 64 ** 3 / 1e9
    finally:
        openblas.set_threads(before)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_PYTORCH = os.path.join(REPO, "scripts", "bench_pytorch.py")


def torch_python():
    """A Python with PyTorch for scripts/bench_pytorch.py, or skip: PyTorch is not
    one of convae's requirements (the README's .venv-torch, or $CONVAE_TEST_TORCH_PYTHON)."""
    python = os.environ.get("CONVAE_TEST_TORCH_PYTHON",
                            os.path.join(REPO, ".venv-torch", "bin", "python"))
    if not os.path.isfile(python):
        pytest.skip("no Python with PyTorch at {} (see the README's Speed section)".format(
            python))
    return python, BENCH_PYTORCH


def test_bench_pytorch_in_a_python_without_pytorch_is_one_line(mnist_dir):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("the tests' Python has PyTorch")
    done = subprocess.run([sys.executable, BENCH_PYTORCH, "--data-dir", mnist_dir],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "bench_pytorch: no PyTorch in {}: run this with a Python of its " \
        "own that has it (see this file's docstring)\n".format(sys.executable)


@pytest.mark.parametrize("flags,code,message", [
    (["--batches", "0"], 2, "argument --batches: must be a positive integer, got '0'"),
    (["--batch-size", "0"], 2, "argument --batch-size: must be a positive integer"),
    (["--threads", "-1"], 2, "argument --threads: must be a positive integer"),
    (["--data-dir", "/nonexistent"], 1, "/nonexistent/train-images-idx3-ubyte.gz: cannot "
     "be read (No such file or directory)"),
])
def test_bench_pytorch_bad_input_is_one_line(flags, code, message, mnist_dir):
    python, script = torch_python()
    done = subprocess.run([python, script, "--data-dir", mnist_dir] + flags,
                          capture_output=True, text=True)
    assert done.returncode == code and done.stdout == ""
    assert message in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr


def test_bench_pytorch_reads_an_uncompressed_images_file_as_convae_does(mnist_dir, tmp_path):
    python, script = torch_python()
    with gzip.open(os.path.join(mnist_dir, "train-images-idx3-ubyte.gz")) as f:
        (tmp_path / "train-images-idx3-ubyte").write_bytes(f.read(16 + 2 * 128 * 784))
    done = subprocess.run([python, script, "--data-dir", str(tmp_path), "--batches", "2",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["train_images_per_s"] > 0 and 0 <= result["cpu_wait_share"] < 10


def test_waited_sums_the_threads_waits_and_is_none_where_linux_does_not_say(
        tmp_path, monkeypatch):
    """Where no thread's schedstat could be read it said 0.0, and the report
    a quiet machine: it cannot tell, and says None (null in the JSON)."""
    for task, line in (("101", "5000 1500000000 7\n"), ("102", "9 250000000 1\n"),
                       ("103", "garbled\n")):  # schedstat: run time, run_delay (ns), slices
        (tmp_path / task).mkdir()
        (tmp_path / task / "schedstat").write_text(line)
    (tmp_path / "104").mkdir()  # a thread gone between listing and reading
    monkeypatch.setattr(timing, "TASKS_DIR", str(tmp_path))
    assert timing.waited() == 1.75
    monkeypatch.setattr(timing, "TASKS_DIR", str(tmp_path / "no" / "such"))
    assert timing.waited() is None
    rates, share = timing.rates_and_cpu_wait({"sleep": (lambda i: time.sleep(0.01), 1.0)},
                                             rounds=1)
    assert share is None and 50 < rates["sleep"] < 101
