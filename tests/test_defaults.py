"""Theano defaults: float32 and a linked OpenBLAS, never over the user's own settings."""
import os
import subprocess
import sys

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
    # Theano raises a TypeError on import for anything but one integer.
    for value in ("abc", "4,2"):
        done = subprocess.run(
            [sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS=value), capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == ("convae: error: OMP_NUM_THREADS={!r}: Theano takes one whole "
                               "number of threads there, such as 2 (or leave it "
                               "unset)\n".format(value))
    done = subprocess.run([sys.executable, "-m", "convae.train", "--help"], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "--resume" in done.stdout


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
