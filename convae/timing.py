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

Plain Python with no imports of convae's: ``scripts/bench_pytorch.py`` runs
this file in PyTorch's environment, so that both sides are timed alike.
"""
import sys
import time

ROUNDS = 10
WINDOW_S = 0.5
# What a process taking turns prints when it waits for its next round.
READY = "ready"


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
