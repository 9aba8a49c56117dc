"""How the benchmarks time things: the best of short windows, taking turns.

On a shared machine the speed swings within seconds: the sgemm reference,
timed again and again, came out anywhere between 110 and 260 GFLOP/s within
one minute on a 2-core Xeon (family 6, model 207) VM. A rate timed in one long pass and a
reference timed in short bursts a few seconds later are then not comparable.
So every rate the benchmarks report (convae's training and evaluation, the
BLAS's matrix product, PyTorch's training and evaluation) is the best of
ROUNDS windows of at least WINDOW_S seconds, and the rates compared in one
process take turns, one window each per round: all are timed over the same
stretch of the machine's ups and downs, in windows of the same length, and
the best window is what the cores can do.

Rates compared across processes (convae's against PyTorch's, which live in
environments of their own) take turns the same way: each process, started
with ``--turns``, announces READY on its standard output before each round
(its setup done, or its last round) and waits for a line on its standard
input before timing the round (see ``turn_waiter``), so that the benchmark
lets exactly one of them time a round at a time, round by round.

Whether other programs had the CPUs meanwhile is measured too (see
``rates_and_cpu_wait``): the best window is what the cores can do only if
some windows had them.

Plain Python with no imports of convae's: ``scripts/bench_pytorch.py`` runs
this file in PyTorch's environment, so that both sides are timed alike.
"""
import os
import sys
import time

ROUNDS = 10
WINDOW_S = 0.5
# What a process taking turns prints when it waits for its next round.
READY = "ready"
# A timing during which the process's threads waited for a CPU, in all, for
# more than this share of its time was disturbed by other programs (and a
# kernel choice is not kept from it). On an idle machine they waited 0-2% of
# a training step's time, beside one busy program 50-90% (the Xeon of family
# 6, model 207, 2 threads); a call that waited not at all was not disturbed,
# busy machine or not.
STEADY_WAIT = 0.1
# Where Linux says how long each thread has waited for a CPU (schedstat's run_delay).
TASKS_DIR = "/proc/self/task"


def window_rate(step, work):
    """Work per second of calling ``step(i)`` (i = 0, 1, ...) until WINDOW_S
    seconds have passed, after one untimed call; each call does ``work``."""
    step(0)
    start = time.perf_counter()
    calls = 0
    while True:
        step(calls)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= WINDOW_S:
            return calls * work / elapsed


def interleaved_rates(timings, rounds=ROUNDS, before_round=None):
    """{name: best rate}: ``rounds`` rounds, each timing one window of every
    ``timings[name] = (step, work)`` in turn (see ``window_rate``), each
    after ``before_round()`` if given (see ``turn_waiter``)."""
    best = dict.fromkeys(timings, 0.0)
    for _ in range(rounds):
        if before_round is not None:
            before_round()
        for name, (step, work) in timings.items():
            best[name] = max(best[name], window_rate(step, work))
    return best


def turn_waiter():
    """A ``before_round`` for a process taking turns with another: prints
    READY and blocks until a line comes on standard input."""
    def wait():
        print(READY, flush=True)
        if not sys.stdin.readline():
            raise SystemExit("timing: standard input closed while waiting for a turn")
    return wait


def waited():
    """Seconds the process's threads have waited, runnable, for a CPU, in all
    (Linux's schedstat run_delay, summed over threads); None where Linux does
    not say (a kernel without schedstat, some sandboxes): not 0.0, which
    would read as a quiet machine."""
    total, told = 0, False
    try:
        tasks = os.listdir(TASKS_DIR)
    except OSError:
        tasks = []
    for task in tasks:
        try:
            with open(os.path.join(TASKS_DIR, task, "schedstat")) as f:
                total += int(f.read().split()[1])
            told = True
        except (OSError, ValueError, IndexError):  # a thread gone; no schedstat
            pass
    return total / 1e9 if told else None


def rates_and_cpu_wait(timings, rounds=ROUNDS, before_round=None):
    """``interleaved_rates(timings, rounds, before_round)``, and the seconds this
    process's threads waited, runnable, for a CPU per second of that timing
    (see ``waited``; the time in ``before_round``, waiting for a turn, is not
    timing): above STEADY_WAIT, other programs had the CPUs; None where Linux
    does not say."""
    turns = []

    def timed_turn():
        start = time.perf_counter()
        before_round()
        turns.append(time.perf_counter() - start)
    start, waited_before = time.perf_counter(), waited()
    rates = interleaved_rates(timings, rounds, timed_turn if before_round is not None else None)
    timed = time.perf_counter() - start - sum(turns)
    waited_after = waited()
    if waited_before is None or waited_after is None:
        return rates, None
    return rates, round((waited_after - waited_before) / timed, 3)
