"""Theano defaults: float32 and a linked OpenBLAS, never over the user's own settings."""
import importlib.util
import os
import subprocess
import sys

import pytest

from convae.runtime import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import convae, theano, theano.tensor as T, lasagne
convae.runtime.enable()
from convae.model import build_convolutional_autoencoder
x = T.tensor4()
f = theano.function([x], lasagne.layers.get_output(
    build_convolutional_autoencoder(x), deterministic=True))
ops = sorted({type(node.op).__name__ for node in f.maker.fgraph.toposort()})
print(theano.config.floatX, '|', theano.config.blas.ldflags, '|', ' '.join(ops))
"""


def probe(tmp_path, **env):
    """Run PROBE in a fresh interpreter with only ``env``'s Theano settings."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("THEANO_FLAGS", "THEANORC")}
    clean["THEANORC"] = str(tmp_path / "no-theanorc")
    clean.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    floatx, ldflags, ops = [part.strip() for part in done.stdout.split("|")]
    return floatx, ldflags, ops.split(), done.stderr


def test_defaults_give_float32_and_blas_backed_convolutions(tmp_path):
    # Theano's own gemm convolutions, with convae's fast path off...
    floatx, ldflags, ops, stderr = probe(tmp_path, CONVAE_FAST="0")
    assert floatx == "float32"
    assert "-lopenblas" in ldflags
    assert "CorrMM" in ops and "CorrMM_gradInputs" in ops and "Dot22" in ops
    assert "NumPy C-API based implementation for BLAS" not in stderr
    # ... and convae's (whose dense layers, and convolutions without AVX2, use the BLAS)
    # with it on.
    floatx, ldflags, ops, stderr = probe(tmp_path)
    assert floatx == "float32" and "-lopenblas" in ldflags
    assert "BatchedCorr" in ops and "ParallelDot" in ops and "CorrMM" not in ops
    assert "NumPy C-API based implementation for BLAS" not in stderr


def test_theano_flags_win(tmp_path):
    floatx, ldflags, _, _ = probe(tmp_path, THEANO_FLAGS="floatX=float64")
    assert floatx == "float64"
    assert "-lopenblas" in ldflags


def test_theanorc_wins(tmp_path):
    rc = tmp_path / "theanorc"
    rc.write_text("[global]\nfloatX = float64\n[blas]\nldflags = -lblas\n")
    floatx, ldflags, _, _ = probe(tmp_path, THEANORC=str(rc))
    assert (floatx, ldflags) == ("float64", "-lblas")


def test_a_thread_count_theano_cannot_read_is_one_line_not_a_traceback():
    # Theano raises a TypeError on import for anything but one integer;
    # OpenMP complains mid-run of one below 1.
    for value in ("abc", "4,2", "0", "-1", "1_0"):
        done = subprocess.run(
            [sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS=value), capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == ("convae: error: OMP_NUM_THREADS={!r}: Theano and OpenMP take "
                               "one whole number of threads there, 1 or more, such as 2 (or "
                               "leave it unset)\n".format(value))
    done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "--resume" in done.stdout


@pytest.mark.parametrize("command", [["scripts/train.py"], ["scripts/reconstruct.py"],
                                     ["scripts/make_figures.py"], ["scripts/export.py"],
                                     ["-m", "convae.train"]])
def test_a_python_without_the_requirements_is_told_which_to_use(command):
    """`python3 scripts/train.py`, as a Lasagne user ran `python mnist.py`, with
    a Python that setup did not install into (here: -S, without its
    site-packages): one line naming that Python and the one to use, not a
    ModuleNotFoundError traceback."""
    done = subprocess.run([sys.executable, "-S"] + command + ["--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "convae: error: theano is not installed for this Python ({}): `bash scripts/setup.sh` "
        "installs convae's requirements into .venv; run .venv/bin/python, or "
        ".venv/bin/convae-train and the other commands\n".format(sys.executable))


def test_theano_settings_theano_refuses_are_one_line_not_a_traceback(tmp_path):
    env = dict(os.environ, THEANORC=str(tmp_path / "no-theanorc"))
    for flags, said in [("floatX=float8", 'Invalid value ("float8") for configuration '
                         'variable "floatX". Valid options are'),
                        ("openmp=maybe", 'Invalid value (maybe) for configuration variable '
                         '"openmp".'),
                        ("base_compiledir=" + str(tmp_path / "file" / "dir"),
                         "Unable to create the compiledir directory")]:
        (tmp_path / "file").write_text("a file, not a directory")
        done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                              env=dict(env, THEANO_FLAGS=flags), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert done.stderr.startswith("convae: error: Theano's settings (THEANO_FLAGS, "
                                      ".theanorc): " + said), done.stderr
        assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("theano_flags, theanorc, said", [
    ("device=cuda", "", "device=cuda"),
    ("floatX=float32,contexts=dev0->cuda0", "", "contexts=dev0->cuda0"),
    ("", "[global]\ndevice = cuda0\nfloatX = float32\n", "device=cuda0")])
def test_a_gpu_without_theano_s_gpu_backend_is_one_warning(tmp_path, theano_flags, theanorc,
                                                          said):
    """The .theanorc of many a Lasagne user says device=cuda. Without pygpu
    Theano logs 'ERROR (theano.gpuarray): pygpu was configured but could not
    be imported' and a stray 'NoneType: None', then runs on the CPU: convae
    says so in one warning instead, and the command works."""
    assert importlib.util.find_spec("pygpu") is None  # as requirements.txt installs
    (tmp_path / "theanorc").write_text(theanorc)
    done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                          env=dict(os.environ, THEANO_FLAGS=theano_flags,
                                   THEANORC=str(tmp_path / "theanorc")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--resume" in done.stdout
    warned = [line for line in done.stderr.splitlines() if "Warning" in line]
    assert len(warned) == 1 and warned[0].endswith(
        "RuntimeWarning: Theano's settings (THEANO_FLAGS, .theanorc): {}: Theano's GPU "
        "backend needs pygpu, which is not installed; convae runs on the CPU".format(said))
    assert "ERROR" not in done.stderr and "NoneType" not in done.stderr, done.stderr


def test_openmp_only_where_a_blas_is_linked(monkeypatch):
    from convae.runtime import defaults
    monkeypatch.delenv("CONVAE_FAST", raising=False)
    monkeypatch.setattr(defaults, "find_openblas", lambda: "/usr/lib/x/libopenblas.so")
    assert defaults.default_flags({}) == {
        "floatX": "float32", "blas.ldflags": "-L/usr/lib/x -lopenblas", "openmp": "True"}
    assert "openmp" not in defaults.default_flags({"blas.ldflags": " "})
    assert defaults.default_flags({"blas.ldflags": "-lblas"})["openmp"] == "True"
    monkeypatch.setattr(defaults, "find_openblas", lambda: None)
    assert defaults.default_flags({}) == {"floatX": "float32", "blas.ldflags": ""}
    assert defaults.default_flags({"blas.ldflags": "-lblas"})["openmp"] == "True"


def testuser_settings_are_read_with_their_values(tmp_path, monkeypatch):
    from convae.runtime import defaults
    rc = tmp_path / "theanorc"
    rc.write_text("[global]\nfloatX = float64\nopenmp = False\n[blas]\nldflags = -lblas\n")
    monkeypatch.setenv("THEANORC", str(rc))
    monkeypatch.setenv("THEANO_FLAGS", "global.openmp=True, Blas.LDFLAGS=")
    assert defaults.user_settings() == {"floatx": "float64", "openmp": "True",
                                         "blas.ldflags": ""}


ERROR = "convae: error: Theano's settings (THEANO_FLAGS, .theanorc): "


# Runs a convolution: with OpenMP on and no BLAS, Theano 1.0.5's CorrMM calls
# its NumPy-based gemm from OpenMP's threads and the interpreter dies.
CONVOLVE = """
import numpy as np, convae, theano, theano.tensor as T
x, w = T.tensor4(), T.tensor4()
f = theano.function([x, w], T.nnet.conv2d(x, w))
out = f(np.ones((2, 1, 8, 8), 'float32'), np.ones((3, 1, 5, 5), 'float32'))
print(theano.config.openmp, out.shape, np.unique(out))
"""


def test_without_a_blas_convolutions_run_without_openmp(tmp_path):
    env = dict(os.environ, THEANORC=str(tmp_path / "no-theanorc"), THEANO_FLAGS="blas.ldflags=")
    env.pop("CONVAE_FAST", None)
    done = subprocess.run([sys.executable, "-c", CONVOLVE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # Every output is the sum of a 5x5 window of ones.
    assert done.stdout == "False (2, 3, 4, 4) [25.]\n"


def test_blas_settings_that_cannot_work_are_one_line_not_a_crash(tmp_path):
    env = dict(os.environ, THEANORC=str(tmp_path / "no-theanorc"))
    # Theano itself warns, on import, that it has no BLAS to link.
    no_blas = ("WARNING (theano.tensor.blas): Using NumPy C-API based implementation for "
               "BLAS functions.\n")
    for flags, said in [
            ("blas.ldflags=,openmp=True", no_blas + ERROR + "openmp=True with no BLAS in "
             "blas.ldflags kills Theano 1.0.5 at its first convolution; link one "
             "(apt-get install libopenblas-dev) or leave openmp unset\n"),
            ("blas.ldflags=-lconvae_no_such_library", ERROR + "blas.ldflags="
             "'-lconvae_no_such_library' does not link: cannot find "
             "-lconvae_no_such_library")]:
        done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                              env=dict(env, THEANO_FLAGS=flags), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        # The linker's own words follow its complaint (": No such file ..." with GNU ld).
        assert done.stderr.startswith(said) and done.stderr.count("\n") == said.count("\n") + (
            not said.endswith("\n")), done.stderr


def test_theano_modes_the_network_cannot_run_in_are_one_line_not_a_traceback(tmp_path):
    """Each failed at the first function, with a page of traceback."""
    env = dict(os.environ, THEANORC=str(tmp_path / "no-theanorc"))
    python = ("runs Python code, which Theano 1.0.5's convolutions and convae's ops do not "
              "have; optimizer=fast_compile compiles fast too")
    pooling = ("runs Theano 1.0.5's Python pooling, which fails on numpy 1.23; NanGuardMode "
               "or optimizer=fast_compile work")
    for flags, said in [
            ("floatX=float16", "floatX=float16: convae's network trains in float32 (or float64)"),
            ("cxx=", "no C++ compiler (cxx is empty): Theano compiles this network's ops "
             "with one; install g++ (apt-get install g++)"),
            ("mode=FAST_COMPILE", "mode=FAST_COMPILE " + python),
            ("linker=py", "linker=py " + python),
            ("mode=DebugMode", "mode=DebugMode " + pooling),
            ("mode=DEBUG_MODE", "mode=DEBUG_MODE " + pooling),
            # Not refused: each trained the post's network on 256 images in a trial.
            ("floatX=float64", None), ("optimizer=fast_compile", None),
            ("mode=NanGuardMode", None), ("linker=c|py", None), ("mode=FAST_RUN", None)]:
        done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                              env=dict(env, THEANO_FLAGS=flags), capture_output=True,
                              text=True, timeout=300)
        if said is None:
            assert done.returncode == 0 and "usage: convae-train" in done.stdout, done.stderr
            continue
        assert done.returncode == 1 and done.stdout == "", done.stderr
        # Without a compiler Theano warns first, in two lines of its own.
        assert done.stderr.endswith(ERROR + said + "\n"), done.stderr
        assert done.stderr.count("\n") == (3 if flags == "cxx=" else 1), done.stderr


def test_a_start_with_convae_s_own_blas_links_nothing():
    # The link check is for a blas.ldflags the user set: run at every import,
    # it cost each start 35-65 ms of g++.
    spy = ("import subprocess\nrun = subprocess.run\ncalls = []\n"
           "subprocess.run = lambda args, **kw: calls.append(args) or run(args, **kw)\n"
           "import convae, theano\n"
           "print(theano.config.blas.ldflags, '|', sum('-shared' in c for c in calls))")
    env = {k: v for k, v in os.environ.items() if k not in ("THEANO_FLAGS", "THEANORC")}
    for flags, linked in (("", "0"), ("blas.ldflags=-lblas", "1")):
        done = subprocess.run([sys.executable, "-c", spy], cwd=REPO, timeout=300, text=True,
                              env=dict(env, THEANORC=os.devnull, THEANO_FLAGS=flags),
                              capture_output=True)
        assert done.returncode == 0, done.stderr
        ldflags, links = [part.strip() for part in done.stdout.split("|")]
        assert links == linked and ldflags, done.stdout


def mount_small_disk(path, size):
    """Mount a tmpfs of ``size`` at ``path``; skip the test where that takes a
    root this is not."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + mounted.stderr.strip())


@pytest.mark.parametrize("module, flags, size", [
    # Room for Theano's start, then a file of the network's ops fails to be written...
    ("convae.reconstruct", ["--out", "out/pairs.png"], "512k"),
    # ... or the compiler fails as it writes.
    ("convae.train", ["--out", "out", "--epochs", "1", "--limit-train", "500"], "2m")])
def test_a_full_disk_under_theano_s_compile_directory_is_one_line(
        tmp_path, mnist_dir, module, flags, size):
    """A home directory over its quota, say: Theano's compiler fails there."""
    disk = tmp_path / "small"
    mount_small_disk(disk, size)
    try:
        env = dict(os.environ, THEANO_FLAGS="base_compiledir=" + str(disk))
        done = subprocess.run([sys.executable, "-m", module, "--data-dir", mnist_dir] + flags,
                              cwd=str(tmp_path), env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    # Theano may log its own line first.
    assert done.stderr.splitlines()[-1].startswith(
        module.replace(".", "-") + ": error: Theano cannot compile: No space left on device "
        "in its compile directory " + str(disk))
    assert not (tmp_path / "out").exists()


def test_theano_imported_before_convae_is_warned_of_with_the_defaults_missed(tmp_path):
    """``import theano`` first (a Lasagne-era notebook's first line): Theano's
    configuration is fixed before convae can set its defaults; say which."""
    def imported_first(flags):
        env = {k: v for k, v in os.environ.items() if k not in ("THEANO_FLAGS", "THEANORC")}
        env.update(THEANORC=str(tmp_path / "no-theanorc"), THEANO_FLAGS=flags)
        done = subprocess.run([sys.executable, "-c", "import theano, convae\n"
                               "print(theano.config.floatX)"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), done.stderr
    ldflags = defaults.openblas_ldflags()
    floatx, stderr = imported_first("blas.ldflags=" + ldflags)  # Theano needs one to import
    assert floatx == "float64"
    assert ("RuntimeWarning: Theano was imported before convae, so convae's defaults are "
            "not in force: floatX=float64 (convae's: float32), openmp=False (convae's: "
            "True). Import convae before theano and lasagne") in stderr
    # The user's own settings are theirs, and nothing is missed.
    floatx, stderr = imported_first("blas.ldflags={},floatX=float64,openmp=False".format(
        ldflags))
    assert floatx == "float64" and "imported before convae" not in stderr
