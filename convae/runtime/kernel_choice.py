"""Which of BatchedCorr's kernels runs each correlation on this machine: measured once, then kept.

Where more than one kernel can run a correlation (AVX-512, AVX2 or BLAS, as
the CPU and the channels allow), ``BatchedCorr(kernel='auto')`` asks here on
each call which one to run. The first call with a new shape finds nothing
kept: the C code then times every kernel that can run it, on that call's own
inputs (best of three rounds, round robin), and hands the times to
``remember``, which keeps the fastest in ``convae_kernels.json`` in Theano's
compile directory, under this CPU and the correlation's shape and thread
count. A measurement taken while other programs kept its threads waiting
for a CPU is not kept (times of up to 8 ms for a 1.7 ms kernel, a
scheduler's time slice, once kept OpenBLAS for a layer that AVX-512 runs
1.8x as fast): that process runs the rule's pick, and the next one measures
again. Once a choice is kept, that machine runs the same kernels, and so
the same arithmetic, in every process, without measuring again, for as long
as the same kernels can run that correlation and their C is the same: a
choice made among other kernels, or with other code (an older convae), is
measured afresh. ``theano-cache purge`` (or deleting the file) measures afresh too.

A choice learnt on one CPU holds on CPUs no one here has seen, where the
rule auto otherwise follows (the widest vectors the CPU has) may not pick
the fastest. On a shared machine one timing can be slow by chance, so the
rule's pick stays unless another kernel took less than ``MARGIN`` of its
time.
"""
import functools
import hashlib
import json
import os

import theano

from convae.files import write_atomically
from convae.timing import STEADY_WAIT, waited  # waited: the C asks it before and after timing

FILE_NAME = "convae_kernels.json"
# Another kernel replaces the rule's pick only if it takes under this share of its time.
MARGIN = 0.9

_kept = None  # {cpu: {correlation: {"kernel": name, "ms": {name: time}}}}, once read
_unsteady = {}  # {correlation: the rule's pick}, this process's, where the machine was busy


def path():
    """The file of kept choices, in Theano's compile directory."""
    return os.path.join(theano.config.compiledir, FILE_NAME)


@functools.lru_cache(maxsize=None)
def cpu_key():
    """This CPU, as a short text: its model name and a hash of its feature flags."""
    from convae.runtime.function_cache import cpu_description
    description = cpu_description()
    model = next((line.partition(":")[2].strip() for line in description.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return "{} ({})".format(model, hashlib.sha256(description.encode()).hexdigest()[:12])


def _read():
    """The kept choices in the file (none if it is missing or unreadable)."""
    try:
        with open(path()) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def kept_choices():
    """{correlation: {"kernel": name, "ms": {kernel: milliseconds}}} kept for this CPU."""
    global _kept
    if _kept is None:
        _kept = _read()
    choices = _kept.get(cpu_key(), {})
    return choices if isinstance(choices, dict) else {}


@functools.lru_cache(maxsize=None)
def kernels_version():
    """A short hash of BatchedCorr's C (its module-cache version), kept with each choice."""
    from convae.runtime.corr import BatchedCorr
    return BatchedCorr("forward", "auto").c_code_cache_version()[0][:12]


def chosen(correlation, candidates):
    """The kernel kept for ``correlation`` (e.g. 'forward N=128 C=32 F=32 12x12 filter
    5x5 threads=2') on this CPU, or None: None too where it was chosen among other
    kernels than ``candidates`` (the names of those that can run it now, comma
    separated: 'avx512,avx2,blas') or measured with other C."""
    if correlation in _unsteady:
        return _unsteady[correlation]
    entry = kept_choices().get(correlation)
    if not isinstance(entry, dict) or entry.get("version") != kernels_version():
        return None
    measured = entry.get("ms")
    if not isinstance(measured, dict) or sorted(measured) != sorted(candidates.split(",")):
        return None
    return entry.get("kernel")


def unmeasured():
    """The correlations whose measurement other programs disturbed in this process,
    sorted: each runs the rule's pick here, not a measured choice."""
    return sorted(_unsteady)


def pick(seconds, default):
    """The kernel to keep, from {kernel: best time in seconds} and the rule's pick."""
    fastest = min(seconds, key=seconds.get)
    return fastest if seconds[fastest] < MARGIN * seconds[default] else default


def remember(correlation, seconds, default, waited_before, timed):
    """Keep the kernel ``pick`` chooses for ``correlation``, with the times, and return
    its name; but where the process's threads waited for a CPU (since ``waited()``
    was ``waited_before``) for more than STEADY_WAIT of the ``timed`` seconds, other
    programs had the CPUs: run the rule's pick ``default`` in this process and keep
    nothing, so that the next process measures again (where Linux does not say
    how long they waited, ``waited`` None, the measurement is kept).
    Best effort: a file that cannot be written keeps the choice in memory."""
    global _kept
    waited_after = waited()
    if (None not in (waited_before, waited_after)
            and waited_after - waited_before > STEADY_WAIT * timed):
        _unsteady[correlation] = default
        return default
    kernel = pick(seconds, default)
    entry = {"kernel": kernel, "ms": {name: round(t * 1e3, 4) for name, t in seconds.items()},
             "version": kernels_version()}
    kept, cpu = _read(), cpu_key()  # with what other processes kept meanwhile
    if not isinstance(kept.get(cpu), dict):
        kept[cpu] = {}
    kept[cpu][correlation] = entry
    _kept = kept
    try:
        write_atomically(path(), lambda f: json.dump(kept, f, indent=1, sort_keys=True), "w")
    except OSError:
        pass
    return kernel
