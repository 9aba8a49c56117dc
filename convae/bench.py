"""Benchmark: how fast the post's network trains and evaluates here, as one JSON object.

Usage: ``python -m convae.bench [--batch-size 128] [--threads 2] [--batches 60]
[--json]``; ``--threads`` defaults to the CPUs this process may run on, and
more than those are refused. Measured on real MNIST in fresh child processes
(so the thread count and compile directory are set before Theano loads):

* ``train_images_per_s`` / ``eval_images_per_s``: steady state, after compiling
  and a first step, calling the same compiled functions the training command
  calls on the batches in turn;
* ``forward_mflop_per_image``: multiply-adds x 2 of the convolutions,
  transposed convolutions and dense layers, from the layer shapes;
* ``train_gflops`` counts a training step as 3x the forward FLOPs;
  ``sgemm_gflops`` is a float32 2048x2048 matrix product through the same BLAS
  in the same child on all ``--threads``; each of the three rates is the best
  of short timing windows, the three taking turns (see ``convae.timing``);
  ``train_efficiency`` / ``eval_efficiency`` are the ratios (above 1.0 is
  impossible, and reported as an error);
* ``cpu`` (model name, family/model, the SIMD features convae's kernels
  use), ``blas_core`` (the OpenBLAS core that ran), ``kernels`` (the
  kernel each convolution ran with, as the C code reports it) and
  ``kernel_ms`` (for each convolution at this batch size and thread count,
  the milliseconds each kernel that can run it took when it was measured
  on this machine, see ``convae.runtime.kernel_choice``);
* ``cpu_wait_share``: the seconds convae's threads waited, runnable, for a
  CPU per second they timed (0.0-0.02 on a quiet machine; None, null in
  the JSON, where Linux does not say; see ``convae.timing``), and
  ``kernels_unmeasured``: the correlations whose kernel measurement other
  programs disturbed, run on the rule's pick; either says a busy machine,
  with a warning on standard error;
* with ``--pytorch PYTHON``: ``scripts/bench_pytorch.py`` (the same network
  in PyTorch, CPU eager, timed by the same code) run by that Python on the
  same batches and threads, taking turns with convae's measuring child round
  by round (see ``take_turns``): ``pytorch_train_images_per_s``,
  ``pytorch_eval_images_per_s`` and the ratios ``train_vs_pytorch``,
  ``eval_vs_pytorch``, and ``pytorch_cpu_wait_share`` (a busy machine
  slowing PyTorch would flatter the ratios: warned of as convae's);
* ``compile_cold_s`` / ``compile_warm_s``: getting the network and its three
  functions as the training command does, with an empty and with a filled
  compile directory (warm, that is loading them from convae's function cache,
  see ``convae.runtime.function_cache``; ``compile_warm_no_function_cache_s`` is the
  same with that cache left out: Theano's own warm compile);
  ``first_step_warm_s``: from launching a fresh ``python`` to the end of its
  first training step, cache filled (interpreter start, imports, data, build,
  compile, one step).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from convae import cli
from convae.timing import READY, ROUNDS, STEADY_WAIT, rates_and_cpu_wait, turn_waiter

# Images in MNIST's training set, less the validation set.
TRAINING_IMAGES = 50000


def forward_flops(network):
    """FLOPs (2 x multiply-adds) of one image through the network's linear layers."""
    import lasagne
    flops = 0
    for layer in lasagne.layers.get_all_layers(network):
        kind = type(layer).__name__
        if kind == "Conv2DLayer":
            _, out_channels, rows, cols = layer.output_shape
            in_channels = layer.input_shape[1]
            flops += 2 * rows * cols * out_channels * in_channels * int(
                layer.filter_size[0] * layer.filter_size[1])
        elif kind == "TransposedConv2DLayer":
            _, in_channels, rows, cols = layer.input_shape
            flops += 2 * rows * cols * in_channels * layer.num_filters * int(
                layer.filter_size[0] * layer.filter_size[1])
        elif kind == "DenseLayer":
            flops += 2 * layer.input_shape[1] * layer.num_units
    return flops


def cpu_description():
    """The CPU: model name, family/model, and the SIMD features convae's kernels use."""
    from convae.runtime import corr, openblas
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f.read().split("\n\n")[0].splitlines():
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = openblas.cpu_flags()
    used = sorted({flag for needed in corr.KERNEL_FEATURES.values() for flag in needed}
                  | openblas.AVX512_FLAGS | openblas.AVX2_FLAGS)
    return {"model_name": fields.get("model name"),
            "family_model": "{}/{}".format(fields.get("cpu family"), fields.get("model")),
            "simd": [flag for flag in used if flag in flags]}


def blas_description():
    """Name, version and core of the OpenBLAS Theano links, if it is OpenBLAS."""
    import theano
    from convae.runtime import openblas
    config = openblas.config()
    if config is None:
        return "Theano ldflags: {!r}".format(theano.config.blas.ldflags)
    return "{} (core {}; Theano ldflags {})".format(
        config, openblas.core_name(), theano.config.blas.ldflags)


def sgemm_step(threads, n=2048):
    """(step, GFLOP per step): a float32 n x n matrix product through Theano's
    linked BLAS on ``threads`` threads; OpenBLAS goes back to the thread count
    it had after each step, so the network's own calls keep theirs."""
    import numpy as np
    import theano
    import theano.tensor as T
    from convae.runtime import openblas
    rng = np.random.RandomState(0)
    a = theano.shared(rng.rand(n, n).astype("float32"))
    b = theano.shared(rng.rand(n, n).astype("float32"))
    c = theano.shared(np.zeros((n, n), "float32"))
    product = theano.function([], [], updates=[(c, T.dot(a, b))])
    own = openblas.threads()

    def step(_):
        openblas.set_threads(threads)  # another BLAS chooses its own thread count
        product()
        if own is not None:
            openblas.set_threads(own)
    return step, 2 * n ** 3 / 1e9


def measure(args):
    """In a child process: compile, time the first step, then throughput."""
    import convae
    from convae import data, train
    from convae.runtime import corr, kernel_choice, openblas
    convae.runtime.enable()
    images = data.load_dataset("mnist", args.data_dir)[0]
    size = args.batch_size
    batches = [images[i * size:(i + 1) * size] for i in range(args.batches)]
    settings = train.Settings(seed=1, optimizer="adam", lr=1e-3, noise="none",
                              noise_level=0.0)
    compile_start = time.time()
    run = train.compile_run(settings, use_cache=not args.no_function_cache)
    compile_s = time.time() - compile_start
    run.train_fn(batches[0])
    result = {"compile_s": compile_s, "first_step_done": time.time()}
    if not args.compile_only:
        rates, cpu_wait_share = rates_and_cpu_wait({
            "train_images_per_s": (lambda i: run.train_fn(batches[i % len(batches)]), size),
            "eval_images_per_s": (lambda i: run.val_fn(batches[i % len(batches)]), size),
            "sgemm_gflops": sgemm_step(args.threads)},
            args.rounds or ROUNDS, turn_waiter() if args.turns else None)
        result.update(
            rates, forward_flops_per_image=forward_flops(run.network), blas=blas_description(),
            blas_core=openblas.core_name(), kernels=dict(sorted(corr.KERNELS_RUN.items())),
            kernel_ms={key: entry["ms"] for key, entry in sorted(
                kernel_choice.kept_choices().items())
                if " N={} ".format(size) in key
                and key.endswith(" threads={}".format(args.threads))},
            kernels_unmeasured=kernel_choice.unmeasured(), cpu_wait_share=cpu_wait_share)
    print(json.dumps(result))
    return 0


def convae_command(args, compiledir, compile_only=False, no_function_cache=False,
                   turns=False):
    """The command and environment that run ``measure`` in a fresh interpreter
    with the thread count and compile dir set.

    The thread count goes to OpenMP; OpenBLAS's is left to convae (see
    convae.runtime) except for the sgemm reference, which uses all threads.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    flags = [env.get("THEANO_FLAGS", ""), "base_compiledir=" + compiledir]
    env["THEANO_FLAGS"] = ",".join(f for f in flags if f)
    command = [sys.executable, "-m", "convae.bench", "--measure",
               "--batch-size", str(args.batch_size), "--batches", str(args.batches),
               "--threads", str(args.threads)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if compile_only:
        command.append("--compile-only")
    if no_function_cache:
        command.append("--no-function-cache")
    if turns:
        command += ["--turns", "--rounds", str(TURN_ROUNDS)]
    return command, env


def child(args, compiledir, compile_only, no_function_cache=False):
    """``measure``'s results from a fresh interpreter (see convae_command), with
    ``first_step_s`` counted from its launch."""
    command, env = convae_command(args, compiledir, compile_only, no_function_cache)
    launched = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError("measuring failed: " + last_line(done.stderr, done.returncode))
    return with_first_step(json.loads(done.stdout.strip().splitlines()[-1]), launched)


def with_first_step(result, launched):
    """``measure``'s result with its first step's end as seconds after ``launched``."""
    result["first_step_s"] = result.pop("first_step_done") - launched
    return result


def last_line(text, code):
    """The last non-blank line of a failed child's standard error, or its exit code."""
    said = [line for line in text.splitlines() if line.strip()]
    return said[-1] if said else "ended with exit code {}, saying nothing".format(code)


class BenchError(ValueError):
    """The benchmark cannot run or measured nonsense; the message is one line."""


def usable_cpus():
    """How many CPUs this process may run on: those of ``taskset`` or a
    container's cpuset, which may be fewer than the machine has."""
    return len(os.sched_getaffinity(0))


def check_threads(args):
    """BenchError for more ``--threads`` than CPUs to run them: the rates would
    time the threads' waiting for each other, not the network."""
    cpus = usable_cpus()
    if args.threads > cpus:
        raise BenchError("--threads {}: this process may run on {} CPU{} here; more threads "
                         "than that time their contention, not convae".format(
                             args.threads, cpus, "" if cpus == 1 else "s"))


def check_data(args):
    """Find (or download) the MNIST training files before any child starts;
    returns the directory that holds them."""
    from convae import data
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    paths = data.dataset_files("mnist", args.data_dir, names=names)
    if args.batch_size * args.batches > TRAINING_IMAGES:
        raise BenchError("--batches {} of --batch-size {} need {} images; MNIST's "
                         "training set has {}".format(args.batches, args.batch_size,
                                                      args.batch_size * args.batches,
                                                      TRAINING_IMAGES))
    return os.path.dirname(paths[names[0]])


# Rounds of timing windows in the measuring children that take turns; as many
# windows of each rate as two turns of whole processes took before.
TURN_ROUNDS = 2 * ROUNDS


def pytorch_command(args, data_dir):
    """The command that runs scripts/bench_pytorch.py with ``args.pytorch``, taking turns."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "scripts", "bench_pytorch.py")
    if not os.path.isfile(script):
        raise BenchError("--pytorch: no {} (it comes with convae's source)".format(script))
    return [args.pytorch, script, "--data-dir", data_dir, "--batch-size",
            str(args.batch_size), "--batches", str(args.batches), "--threads",
            str(args.threads), "--turns", "--rounds", str(TURN_ROUNDS)]


def take_turns(children, rounds):
    """Run processes that take turns (see convae.timing) and return the JSON
    each prints last, with the time it was launched.

    children: (name, command, env) triples, ``name`` beginning a failure's
    message. Each starts once the one before is ready, so that no set-up
    overlaps another's timing (convae's first step included); then the
    processes time ``rounds`` rounds, one process at a time, round by round:
    every rate compared is timed over the same stretch of the machine.
    """
    running = []
    try:
        for name, command, env in children:
            err = tempfile.TemporaryFile(mode="w+")
            launched = time.time()
            try:
                process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=err, text=True)
            except OSError as e:
                err.close()
                raise BenchError("{}: {}".format(name, e.strerror))
            running.append((name, process, err, launched))
            await_ready(name, process, err)
        for turn in range(rounds):
            for name, process, err, _ in running:
                try:
                    process.stdin.write("\n")
                    process.stdin.flush()
                except BrokenPipeError:  # it ended before its turn
                    raise BenchError(name + ": " + failure(process, err))
                if turn < rounds - 1:
                    await_ready(name, process, err)
                elif process.wait() != 0:
                    raise BenchError(name + ": " + failure(process, err))
        return [(json.loads(process.stdout.read().strip().splitlines()[-1]), launched)
                for _, process, _, launched in running]
    finally:
        for _, process, err, _ in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stdout, err):
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


def await_ready(name, process, err):
    """Read ``process``'s output up to its READY line; BenchError if it ends first."""
    for line in process.stdout:
        if line.strip() == READY:
            return
    raise BenchError(name + ": " + failure(process, err))


def failure(process, err):
    """The last line a failed child wrote on standard error, or its exit code."""
    code = process.wait()
    err.seek(0)
    return last_line(err.read(), code)


def measure_in_turns(args, compiledir, data_dir):
    """convae's measured results (``measure``'s, with ``first_step_s``) and,
    with ``--pytorch``, PyTorch's (or None), timed taking turns."""
    children = [("measuring failed", *convae_command(args, compiledir, turns=True))]
    if args.pytorch:
        children.append(("--pytorch " + args.pytorch, pytorch_command(args, data_dir),
                         dict(os.environ)))
    results = take_turns(children, TURN_ROUNDS)
    convae_result = with_first_step(*results[0])
    return convae_result, (results[1][0] if args.pytorch else None)


def main(argv=None):
    """The benchmark command; prints the results and returns 0 (1 on an error)."""
    parser = argparse.ArgumentParser(prog="python -m convae.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=cli.positive_int, default=128)
    parser.add_argument("--threads", type=cli.positive_int, default=usable_cpus(),
                        help="at most the CPUs this process may run on (default: all of them)")
    parser.add_argument("--batches", type=cli.positive_int, default=60,
                        help="distinct batches the timings take in turn")
    parser.add_argument("--data-dir", type=cli.nonempty_path,
                        help="MNIST directory (default: as convae-train)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the cold compile (about a minute)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--pytorch", metavar="PYTHON", type=cli.nonempty_path,
                        help="also time scripts/bench_pytorch.py with this Python (one "
                        "with PyTorch), in the same run")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=cli.positive_int, help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-function-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return cli.run_command(parser.prog, lambda: measure(args))
    return cli.run_command(parser.prog, lambda: bench(args))


def bench(args):
    """Measure in child processes and print the report; returns 0."""
    from convae.runtime.defaults import default_flags, user_settings
    check_threads(args)
    data_dir = check_data(args)
    if args.pytorch and not shutil.which(args.pytorch):
        raise BenchError("--pytorch {}: {}".format(args.pytorch, (
            "not a program (it cannot be run)" if os.path.isfile(args.pytorch)
            else "no such Python")))
    report = {"batch_size": args.batch_size, "threads": args.threads}
    cold_dir = tempfile.mkdtemp(prefix="convae-bench-")
    try:
        if not args.no_cold:
            report["compile_cold_s"] = round(child(args, cold_dir, True)["compile_s"], 2)
            warm_dir = cold_dir
        else:
            warm_dir = os.path.expanduser("~/.theano")
        child(args, warm_dir, True)  # make sure the cache is filled
        warm, torch = measure_in_turns(args, warm_dir, data_dir)
        theano_warm = child(args, warm_dir, True, no_function_cache=True)
    finally:
        shutil.rmtree(cold_dir, ignore_errors=True)
    flops = warm.pop("forward_flops_per_image")
    train_gflops = 3 * flops * warm["train_images_per_s"] / 1e9
    eval_gflops = flops * warm["eval_images_per_s"] / 1e9
    report.update(
        train_images_per_s=round(warm["train_images_per_s"], 1),
        eval_images_per_s=round(warm["eval_images_per_s"], 1),
        forward_mflop_per_image=round(flops / 1e6, 3),
        train_gflops=round(train_gflops, 2), eval_gflops=round(eval_gflops, 2),
        sgemm_gflops=round(warm["sgemm_gflops"], 1),
        train_efficiency=round(train_gflops / warm["sgemm_gflops"], 3),
        eval_efficiency=round(eval_gflops / warm["sgemm_gflops"], 3),
        compile_warm_s=round(warm["compile_s"], 2),
        compile_warm_no_function_cache_s=round(theano_warm["compile_s"], 2),
        first_step_warm_s=round(warm["first_step_s"], 2),
        cpu=cpu_description(), blas=warm["blas"], blas_core=warm["blas_core"],
        kernels=warm["kernels"], kernel_ms=warm["kernel_ms"],
        kernels_unmeasured=warm["kernels_unmeasured"], cpu_wait_share=warm["cpu_wait_share"],
        theano_defaults=default_flags(user_settings()))
    if args.pytorch:
        report.update(
            pytorch_train_images_per_s=torch["train_images_per_s"],
            pytorch_eval_images_per_s=torch["eval_images_per_s"],
            train_vs_pytorch=round(report["train_images_per_s"]
                                   / torch["train_images_per_s"], 2),
            eval_vs_pytorch=round(report["eval_images_per_s"]
                                  / torch["eval_images_per_s"], 2),
            pytorch_cpu_wait_share=torch["cpu_wait_share"], pytorch=torch["torch"])
    for name in ("train_efficiency", "eval_efficiency"):
        if report[name] > 1.0:
            raise BenchError("{} came out at {}: faster than the BLAS's own matrix product "
                             "({} GFLOP/s, core {}) cannot be; that reference did not run at "
                             "the BLAS's real speed".format(name, report[name],
                                                            report["sgemm_gflops"],
                                                            report["blas_core"]))
    busy = busy_warning(report)
    if busy:
        print("python -m convae.bench: warning: " + busy, file=sys.stderr)
    if not args.json:
        for key, value in report.items():
            cli.say("# {:24s} {}".format(key, value))
    cli.say(json.dumps(report))
    return 0


def busy_warning(report):
    """A line saying so where other programs had the CPUs while convae's
    measuring child ran (``cpu_wait_share``, ``kernels_unmeasured``) or
    PyTorch's (``pytorch_cpu_wait_share``), else None."""
    said = ["{}'s threads waited for a CPU {} s per second timed".format(who, report[key])
            for who, key in (("convae", "cpu_wait_share"), ("PyTorch", "pytorch_cpu_wait_share"))
            if (report.get(key) or 0) > STEADY_WAIT]  # None: Linux does not say
    unmeasured = len(report["kernels_unmeasured"])
    if unmeasured:
        said.append("{} correlation{} ran the widest kernel unmeasured".format(
            unmeasured, "" if unmeasured == 1 else "s"))
    if not said:
        return None
    return ("other programs were running ({}): these rates understate this machine; "
            "measure again with nothing else running".format("; ".join(said)))


if __name__ == "__main__":
    sys.exit(main())
