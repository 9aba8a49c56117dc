"""scripts/emulate_cpu.sh: convae's Python, and every Python it starts, on an
emulated CPU that this machine is not (qemu-user), with /proc/cpuinfo to match.

What the emulated CPU runs is real: an instruction it lacks stops the
process. These tests check that the emulation is the CPU it names, for
convae's own view of it (the flags), for the CPUID that OpenBLAS and the C
kernels read, and in a child process; a whole test run there is slow (see the
README's speed section).
"""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "emulate_cpu.sh")

# Printed by the emulated Python: convae's flags, OpenBLAS's own pick of a
# core there (asked in a child process, as convae asks it), the core convae
# would force, and that child's executable.
PROBE = """
import subprocess, sys
from convae.runtime import openblas
flags = openblas.cpu_flags()
print(' '.join(sorted(f for f in ('avx', 'avx2', 'fma', 'avx512f') if f in flags)))
picked = openblas.probe_core(openblas.find_openblas())
print(picked, openblas.core_to_force(flags, picked))
print(subprocess.run([sys.executable, '-c', 'import sys; print(sys.executable)'],
                     capture_output=True, text=True).stdout.strip())
"""


def emulate(*args):
    return subprocess.run(["bash", SCRIPT] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("args", [["pentium4", "python", "-V"], ["zen3"], []])
def test_an_unknown_cpu_or_a_missing_command_is_a_one_line_error(args):
    done = emulate(*args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="emulate_cpu.sh needs root (a mount namespace)")
@pytest.mark.parametrize("cpu, flags, core", [
    ("zen3", "avx avx2 fma", "Zen"),          # AVX2, no AVX-512: OpenBLAS knows it
    ("sandybridge", "avx", "Sandybridge"),    # no AVX2: nothing to force either
])
def test_the_emulated_cpu_is_the_one_named(cpu, flags, core):
    done = emulate(cpu, "python", "-c", PROBE)
    assert done.returncode == 0, done.stderr
    seen_flags, cores, child = done.stdout.splitlines()
    assert seen_flags == flags
    assert cores == "{} None".format(core)
    assert child.endswith("convae-emulated-{}/venv/bin/python".format(cpu))
    assert "doesn't support requested feature" not in done.stderr  # qemu warns of none
