"""The fast path computes the post's function (forward and gradients), and only enable() turns it on."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import theano
import theano.tensor as T

import lasagne
from convae import data
from convae.runtime import openblas
from convae.runtime.contiguous import float32_tanh
from convae.model import build_convolutional_autoencoder

import reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_MODE = theano.compile.get_default_mode().excluding("convae_fast")


def op_names(fn):
    return {type(node.op).__name__ for node in fn.maker.fgraph.toposort()}


def test_float32_tanh_forward_and_gradient():
    x = T.tensor4()
    w = np.random.RandomState(0).randn(3, 4, 5, 6).astype("float32")
    values = (3 * np.random.RandomState(1).randn(3, 4, 5, 6)).astype("float32")
    cost = (w * float32_tanh(x)).sum()
    f = theano.function([x], [float32_tanh(x), T.grad(cost, x)])
    y, g = f(values)
    np.testing.assert_allclose(y, np.tanh(values.astype(np.float64)), rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(g, w * (1 - np.tanh(values.astype(np.float64)) ** 2),
                               rtol=1e-5, atol=1e-6)
    # A strided view goes through the same loop.
    transposed = theano.function([x], float32_tanh(x.dimshuffle(3, 1, 0, 2)))
    np.testing.assert_allclose(transposed(values),
                               np.tanh(values.astype(np.float64)).transpose(3, 1, 0, 2),
                               rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_bias_activation_matches_numpy_and_is_used_for_layer_outputs(activation):
    rng = np.random.RandomState(6)
    # (3, 4, 5, 1, 6) is what Theano leaves after moving an upscale's
    # dimshuffle onto the layer output.
    for shape in [(3, 4, 5, 6), (7, 4), (3, 4, 5, 1, 6)]:
        values = (3 * rng.randn(*shape)).astype("float32")
        bias = rng.randn(shape[1]).astype("float32")
        shifted = values.astype(np.float64) + bias.reshape((1, -1) + (1,) * (len(shape) - 2))
        b = T.fvector()
        pattern = ("x", 0) + ("x",) * (len(shape) - 2)
        if len(shape) == 5:
            x = T.ftensor4()
            v = x.dimshuffle(0, 1, 2, "x", 3) + b.dimshuffle(*pattern)
            values = values[:, :, :, 0]
        else:
            x = T.TensorType("float32", (False,) * len(shape))()
            v = x + b.dimshuffle(*pattern)
        if activation == "tanh":
            out, expected = T.tanh(v), np.tanh(shifted)
        elif activation == "relu":
            out, expected = lasagne.nonlinearities.rectify(v), np.maximum(shifted, 0)
        else:
            out, expected = v, shifted
        f = theano.function([x, b], out)
        # A bias alone on a dense layer's output is left for Theano to fuse.
        assert ("BiasActivation" in op_names(f)) == (activation != "linear" or len(shape) > 2)
        np.testing.assert_allclose(f(values, bias), expected, rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_pooling_a_layer_output_that_nothing_else_reads_is_fused(activation):
    from theano.tensor.signal.pool import pool_2d
    rng = np.random.RandomState(7)
    # Odd sizes drop a border; a row of 130 windows takes two chunks; the
    # last shape goes parallel.
    for shape in [(4, 3, 8, 6), (2, 2, 7, 9), (2, 2, 5, 261), (40, 8, 16, 16)]:
        values = (3 * rng.randn(*shape)).astype("float32")
        bias = rng.randn(shape[1]).astype("float32")
        x, b = T.ftensor4(), T.fvector()
        v = x + b.dimshuffle("x", 0, "x", "x")
        y = T.tanh(v) if activation == "tanh" else lasagne.nonlinearities.rectify(v)
        pooled = pool_2d(y, (2, 2), ignore_border=True)
        fused = theano.function([x, b], pooled)
        apart = theano.function([x, b], [pooled, y])  # y read twice: not fused
        assert "BiasActivationMaxPool2x2" in op_names(fused)
        assert "BiasActivationMaxPool2x2" not in op_names(apart)
        assert {"BiasActivation", "MaxPool2x2"} <= op_names(apart)
        ours = fused(values, bias)
        # tanh: glibc's vector and scalar tanhf differ by up to 2 ulp.
        np.testing.assert_array_max_ulp(ours, apart(values, bias)[0],
                                        maxulp=2 if activation == "tanh" else 0)
        shifted = values.astype(np.float64) + bias.reshape(1, -1, 1, 1)
        activated = np.tanh(shifted) if activation == "tanh" else np.maximum(shifted, 0)
        rows, cols = shape[2] // 2 * 2, shape[3] // 2 * 2
        np.testing.assert_allclose(ours, reference.maxpool2(activated[:, :, :rows, :cols]),
                                   rtol=2e-6, atol=2e-7)


def test_the_gradient_through_pooling_and_tanh_is_one_pass():
    from theano.tensor.signal.pool import pool_2d
    rng = np.random.RandomState(8)
    values = (3 * rng.randn(6, 4, 10, 12)).astype("float32")
    bias = rng.randn(4).astype("float32")
    weights = rng.randn(6, 4, 5, 6).astype("float32")
    x, b = T.ftensor4(), T.fvector()
    y = T.tanh(x + b.dimshuffle("x", 0, "x", "x"))
    cost = (pool_2d(y, (2, 2), ignore_border=True) * weights).sum()
    gx = T.grad(cost, x)
    fused = theano.function([x, b], gx)
    pool_grad = theano.grad(cost, y)  # pooling's gradient read twice: not fused
    apart = theano.function([x, b], [gx, pool_grad])
    slow = theano.function([x, b], gx, mode=SLOW_MODE)

    def through(fn):
        return [node.op.through_tanh for node in fn.maker.fgraph.toposort()
                if type(node.op).__name__ == "MaxPool2x2Grad"]
    assert through(fused) == [True] and through(apart) == [False]
    assert "Elemwise" not in op_names(fused)
    np.testing.assert_array_equal(fused(values, bias), apart(values, bias)[0])
    np.testing.assert_allclose(fused(values, bias), slow(values, bias), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def setup(mnist_dir):
    images = data.read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"))
    x = (images[:4, None] / np.float32(256)).astype("float32")
    # Blank background makes exactly equal values in max-pool windows, where
    # Theano's gradient goes to every tied maximum: jitter breaks the ties.
    x += np.random.RandomState(5).uniform(0, 0.01, x.shape).astype("float32")
    lasagne.random.set_rng(np.random.RandomState(4))
    input_var = T.tensor4()
    net = build_convolutional_autoencoder(input_var)
    rng = np.random.RandomState(2)
    for param in lasagne.layers.get_all_params(net):
        value = param.get_value()
        param.set_value((0.2 * rng.randn(*value.shape)).astype("float32"))
    prediction = lasagne.layers.get_output(net, deterministic=True)
    loss = lasagne.objectives.squared_error(prediction, input_var).mean()
    params = lasagne.layers.get_all_params(net, trainable=True)
    grads = T.grad(loss, params)
    return x, net, input_var, loss, grads


def test_fast_path_is_on_and_can_be_left_out(setup):
    x, net, input_var, loss, grads = setup
    fast_fn = theano.function([input_var], grads)
    slow_fn = theano.function([input_var], grads, mode=SLOW_MODE)
    fast_ops = {"Float32Tanh", "BiasActivation", "BatchedCorr", "Upscale2x", "AxisSum",
                "ChannelSum", "MaxPool2x2", "MaxPool2x2Grad"}
    replaced = {"CorrMM", "CorrMM_gradInputs", "CorrMM_gradWeights", "Alloc", "Pool",
                "MaxPoolGrad"}
    assert fast_ops <= op_names(fast_fn) and not replaced & op_names(fast_fn)
    assert replaced <= op_names(slow_fn) and not fast_ops & op_names(slow_fn)
    for a, b in zip(fast_fn(x), slow_fn(x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_gradients_match_numpy_finite_differences(setup):
    """<grad, d> from Theano (fast path) = NumPy float64 central difference along d."""
    x, net, input_var, loss, grads = setup
    fn = theano.function([input_var], grads)
    values = [v.astype(np.float64) for v in lasagne.layers.get_all_param_values(net)]
    rng = np.random.RandomState(3)
    direction = [rng.randn(*v.shape) for v in values]
    analytic = sum(float((g * d).sum()) for g, d in zip(fn(x), direction))

    def numpy_loss(step):
        moved = [v + step * d for v, d in zip(values, direction)]
        return ((reference.autoencoder_forward(moved, x) - x) ** 2).mean()

    eps = 1e-5  # small enough that no ReLU or max-pool switches sides
    numeric = (numpy_loss(eps) - numpy_loss(-eps)) / (2 * eps)
    assert abs(analytic - numeric) <= 2e-3 * abs(numeric) + 1e-6


COMPILE_PROBE = """
import convae, theano, theano.tensor as T
convae.runtime.enable()
from theano.gof import cc
compiled = []
theano_compile = cc.CLinker.compile_cmodule
def counting(self, location=None):
    compiled.extend(type(node.op).__name__ for node in self.fgraph.toposort())
    return theano_compile(self, location)
cc.CLinker.compile_cmodule = counting
x, y = T.fmatrix(), T.fmatrix()
theano.function([x, y], [T.dot(x, y), T.dot(x, y).T * 2, T.zeros_like(x)])
print(" ".join(compiled))
"""


def compiled_in_fresh_processes(fast_setting):
    """Op names of the C modules each of two fresh processes compiles for COMPILE_PROBE."""
    env = dict(os.environ, CONVAE_FAST=fast_setting)
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", COMPILE_PROBE], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split())
    return runs


def test_a_second_process_finds_every_module_in_the_cache():
    # Theano alone recompiles ops with empty __props__ (Dot22, Alloc) and COps
    # (DimShuffle, versioned by a salted hash) in every process.
    assert compiled_in_fresh_processes("0")[1] != []
    assert compiled_in_fresh_processes("1")[1] == []


def test_convae_fast_0_switches_everything_off(tmp_path):
    probe = ("import convae, theano, theano.tensor as T\n"
             "convae.runtime.enable()\n"
             "x = T.matrix()\n"
             "f = theano.function([x], T.tanh(x))\n"
             "print(theano.config.openmp, "
             "any(type(n.op).__name__ == 'Float32Tanh' for n in f.maker.fgraph.toposort()))\n")
    env = {k: v for k, v in os.environ.items() if k != "THEANO_FLAGS"}
    outputs = {}
    for setting in ("0", "1"):
        env["CONVAE_FAST"] = setting
        done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[setting] = done.stdout.split()
    assert outputs == {"0": ["False", "False"], "1": ["True", "True"]}


@pytest.mark.parametrize("setting", ["false", "off", "no"])
def test_a_convae_fast_other_than_0_or_1_is_one_line(setting):
    done = subprocess.run([sys.executable, "-c", "import convae"], cwd=REPO,
                          env=dict(os.environ, CONVAE_FAST=setting),
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("convae: error: CONVAE_FAST={!r}: give 0 to switch convae's fast "
                           "path off, or 1 (the default) to leave it on\n".format(setting))


SIDE_EFFECTS_PROBE = """
import json, os, sys
before = dict(os.environ)
import {module}
import convae, theano
from theano.gof import COp
from theano.gof.cc import CLinker
from convae.runtime import openblas

def state():
    lib = openblas.library()
    return dict(
        changed_env=sorted(k for k in os.environ if os.environ[k] != before.get(k)),
        theano_cache_key=CLinker.cmodule_key_.__module__.startswith("theano"),
        theano_cop_version=COp.c_code_cache_version.__module__.startswith("theano"),
        rewrites="convae_float32_tanh" in theano.compile.optdb.__db__,
        blas_threads=lib.openblas_get_num_threads())

imported = state()
print(json.dumps(dict(imported=imported, enabled=convae.runtime.enable(),
                      after=state())))
"""


@pytest.mark.parametrize("module", ["convae.model", "convae.data"])
def test_import_only_sets_defaults_and_enable_switches_the_fast_path_on(module):
    env = {k: v for k, v in os.environ.items() if k not in (
        "THEANO_FLAGS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE")}
    env["CONVAE_FAST"] = "1"
    # Before OpenBLAS loads, its core where it would run a generic one.
    expected_env = ["THEANO_FLAGS"]
    if openblas.core_to_force(openblas.cpu_flags(),
                              openblas.probe_core(openblas.find_openblas())):
        expected_env.insert(0, "OPENBLAS_CORETYPE")
    done = subprocess.run([sys.executable, "-c", SIDE_EFFECTS_PROBE.format(module=module)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    imported, after = result["imported"], result["after"]
    # Import: Theano's flags (read once, at Theano's import), OpenBLAS's core,
    # and nothing else.
    assert imported["changed_env"] == expected_env
    assert imported["theano_cache_key"] and imported["theano_cop_version"]
    assert not imported["rewrites"]
    assert imported["blas_threads"] == os.cpu_count()
    # enable(): the rewrites, the compile-cache fixes, one BLAS thread.
    assert result["enabled"]
    assert after["changed_env"] == expected_env
    assert not after["theano_cache_key"] and not after["theano_cop_version"]
    assert after["rewrites"] and after["blas_threads"] == 1


# With optimizer=None, Theano runs its abstract convolution's Python code.
PYTHON_CONVOLUTION = """
import sys
import numpy as np, convae, theano, theano.tensor as T
sys.path.insert(0, "tests")
import reference
x, w = T.tensor4(), T.tensor4()
f = theano.function([x, w], T.nnet.conv2d(x, w))
assert [type(n.op).__name__ for n in f.maker.fgraph.toposort()] == ["AbstractConv2d"]
rng = np.random.RandomState(0)
xv, wv = rng.randn(2, 3, 9, 8).astype("float32"), rng.randn(4, 3, 3, 2).astype("float32")
np.testing.assert_allclose(f(xv, wv), reference.conv2d_valid(xv, wv), rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_theano_s_python_convolution_finds_today_s_scipy(tmp_path):
    """Theano 1.0.5 looked for scipy.signal's internals where scipy 1.8 no longer has them."""
    env = dict(os.environ, THEANORC=str(tmp_path / "no-theanorc"), THEANO_FLAGS="optimizer=None")
    done = subprocess.run([sys.executable, "-c", PYTHON_CONVOLUTION], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]
