"""OpenBLAS runs its real core: the decision, from CPU features and OpenBLAS's own choice."""
import os
import subprocess
import sys

import pytest

from convae.runtime import openblas

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZEN3 = {"sse4_2", "avx", "avx2", "fma", "bmi2"}
XEON_207 = ZEN3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "amx_tile"}
OLD = {"sse4_2", "avx"}


@pytest.mark.parametrize("flags,running,forced", [
    (XEON_207, "Prescott", "SkylakeX"),   # an OpenBLAS older than the CPU
    (ZEN3, "Prescott", "Haswell"),
    (XEON_207, "Cooperlake", None),       # it knows the CPU: left alone
    (XEON_207, "SkylakeX", None),
    (ZEN3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}, "Zen", None),
    (ZEN3, "Haswell", None),
    (ZEN3, "Zen", None),
    (OLD, "Sandybridge", None),           # no AVX2: nothing better to choose
    (XEON_207, None, None),               # no answer from OpenBLAS
    (XEON_207 - {"avx512bw"}, "Prescott", "Haswell"),
])
def test_core_to_force(flags, running, forced):
    assert openblas.core_to_force(flags, running) == forced


def core_in_fresh_process(**env_changes):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(env_changes)
    probe = ("import os, convae\nfrom convae.runtime import openblas\n"
             "print(os.environ.get('OPENBLAS_CORETYPE'), openblas.core_name())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(openblas.find_openblas() is None, reason="no OpenBLAS installed")
def test_this_machine_runs_the_core_its_cpu_deserves():
    """On this machine: the core OpenBLAS would choose, what convae sets, what runs."""
    own = openblas.probe_core(openblas.find_openblas())
    forced = openblas.core_to_force(openblas.cpu_flags(), own)
    env_value, running = core_in_fresh_process()
    assert env_value == str(forced)
    assert running == (forced or own)
    # A value the user set always wins, even one convae would not choose.
    assert core_in_fresh_process(OPENBLAS_CORETYPE="Haswell") == ["Haswell", "Haswell"]


@pytest.mark.parametrize("asked,running,warned", [
    (None, "SkylakeX", False), ("SkylakeX", "SkylakeX", False), ("haswell", "Haswell", False),
    ("Foo", "Cooperlake", True), ("", "Cooperlake", True), ("Haswell", None, False)])
def test_a_coretype_openblas_does_not_run_is_a_warning(asked, running, warned):
    problem = openblas.coretype_problem(asked, running)
    assert (problem is not None) == warned
    if warned:
        assert problem.startswith("OPENBLAS_CORETYPE={!r}: OpenBLAS runs its {} core "
                                  "instead".format(asked, running))


@pytest.mark.skipif(openblas.find_openblas() is None, reason="no OpenBLAS installed")
def test_the_fast_path_warns_of_a_coretype_openblas_does_not_know():
    probe = "import convae; convae.runtime.enable()"
    for value, warned in (("convae_no_such_core", True), ("haswell", False)):
        env = dict(os.environ, OPENBLAS_CORETYPE=value)
        done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert ("OPENBLAS_CORETYPE='convae_no_such_core': OpenBLAS runs its "
                in done.stderr) == warned, done.stderr
