"""The fast path's C ops compute what the ops they replace compute.

Each is checked against NumPy/SciPy arithmetic (tests/reference.py) and
against the Theano op it stands in for, on shapes of the post's network and
on awkward ones (odd sizes, one image, a batch that does not split evenly).
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import theano
import theano.tensor as T
from numpy.lib.stride_tricks import sliding_window_view
from theano.tensor.nnet.corr import CorrMM, CorrMM_gradInputs, CorrMM_gradWeights
from theano.tensor.signal.pool import MaxPoolGrad, Pool

from convae.runtime.contiguous import (AxisSum, ChannelSum, MaxPool2x2, MaxPool2x2Grad, Repeat,
                                       Upscale2x)
from convae.runtime import kernel_choice
from convae.runtime.corr import KERNEL_FEATURES, KERNELS_RUN, BatchedCorr
from convae.runtime.dot import ParallelDot
from convae.runtime.mrg import ParallelMRGUniform
from convae.runtime.openblas import cpu_flags

import reference

# (images, channels, size, filters, filter size): conv1 and conv2 of the post,
# then a batch that does not split evenly over chunks and threads, a
# non-square filter on the AVX path (16 channels and filters), a short sum
# (2 channels, 3x3) on a non-square image, and shapes for the BLAS path
# (channels and filters not multiples of 16).
CONV_SHAPES = [(16, 1, 28, 32, 5), (16, 32, 12, 32, 5), (13, 32, 12, 32, 5),
               (5, 16, 10, 16, (3, 4)), (3, 2, 10, 16, 3), (1, 3, 9, 4, 3),
               (7, 2, 11, 5, (2, 4)),
               # For the AVX-512 kernels too: 64 filters (two blocks of 32), a
               # pixel count that is no multiple of 12, 32 input channels with
               # 5 filters (only the gradient for the inputs fits its blocks).
               (3, 32, 9, 64, (3, 2)), (4, 32, 10, 5, 3),
               # 32 channels, 5x5, rows of 11 top pixels: AVX-512's gradient for
               # the inputs in 8 pixels and then 3, a block short of a row.
               (3, 32, 15, 32, 5),
               # Rows of 39 pixels: two and a half vectors of 16 in the row kernels.
               (2, 1, 40, 32, 3),
               # Three input channels, five filters, top rows of 17: the
               # scatter kernels (AVX-512, AVX2) for the gradient for the inputs.
               (3, 3, 18, 5, 3),
               # One image and 32 filters: with two threads, one has no image
               # for the direct weight gradients (by rows of 17, and not).
               (1, 16, 18, 32, 3), (1, 16, 8, 32, 3),
               # Three channels, a 3x5 filter, rows of 16: the row kernels with
               # taps of every (c, i, j) of a filter that is not square.
               (2, 3, 20, 32, (3, 5))]
# The channels each direct kernel keeps in registers come in blocks of this many.
KERNEL_BLOCKS = {"avx512": 32, "avx2": 16, "blas": 1, "auto": 1}


def compiled(op, *values):
    """Run a one-op Theano function on float32 values."""
    inputs = [T.TensorType("float32", (False,) * v.ndim)() for v in values]
    return theano.function(inputs, op(*inputs))(*values)


def conv_case(shape, seed=0):
    n, c, size, f, k = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.RandomState(seed)
    bottom = rng.randn(n, c, size, size + 1).astype("float32")
    weights = rng.randn(f, c, kh, kw).astype("float32")
    top = rng.randn(n, f, size - kh + 1, size + 2 - kw).astype("float32")
    return bottom, weights, top


@pytest.fixture(autouse=True)
def kernel_store(tmp_path, monkeypatch):
    """An empty store of kept kernel choices for each test (auto measures
    afresh, and the user's store is left alone); its file's path."""
    store = tmp_path / kernel_choice.FILE_NAME
    monkeypatch.setattr(kernel_choice, "path", lambda: str(store))
    monkeypatch.setattr(kernel_choice, "_kept", None)
    monkeypatch.setattr(kernel_choice, "_unsteady", {})
    return store


@pytest.fixture
def quiet_machine(monkeypatch):
    """Every measurement taken as one the machine left alone (tests of what is
    kept, which another program running beside them must not fail)."""
    monkeypatch.setattr(kernel_choice, "waited", lambda: 0.0)


def fitting_kernels(channels):
    """The kernels this CPU can run for a correlation whose blocked channels number channels."""
    flags = cpu_flags()
    return [kernel for kernel in ("avx512", "avx2", "blas")
            if set(KERNEL_FEATURES[kernel]) <= flags and channels % KERNEL_BLOCKS[kernel] == 0]


def cpu_runs(kernel):
    """Skip, naming the missing CPU features, where this CPU cannot run ``kernel``."""
    missing = [flag for flag in KERNEL_FEATURES.get(kernel, ()) if flag not in cpu_flags()]
    if missing:
        pytest.skip("the {} kernel needs {}: this CPU lacks it".format(kernel, ", ".join(missing)))


@pytest.mark.parametrize("kernel", ["auto", "avx512", "avx2", "blas"])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_batched_corr_matches_numpy(shape, kernel):
    """Every kernel this CPU runs computes the three correlations; a forced
    kernel whose channel blocks do not fit the shape says so."""
    cpu_runs(kernel)
    bottom, weights, top = conv_case(shape)
    _, channels, _, filters, _ = shape
    b64, w64, t64 = (v.astype(np.float64) for v in (bottom, weights, top))
    # Correlation is convolution with the filters flipped.
    forward = reference.conv2d_valid(b64, w64[:, :, ::-1, ::-1])
    # Its gradient for the input: the full convolution of top with the filters.
    grad_inputs = reference.transposed_conv2d(t64, w64, flip_filters=True)
    # For the filters: top against every window of bottom.
    windows = sliding_window_view(b64, w64.shape[2:], axis=(2, 3))
    grad_weights = np.einsum("nfyx,ncyxij->fcij", t64, windows)
    for direction, args, expected in [("forward", (bottom, weights), forward),
                                      ("grad_inputs", (weights, top), grad_inputs),
                                      ("grad_weights", (bottom, top), grad_weights)]:
        op = BatchedCorr(direction, kernel)
        # The scatter kernels take any channels for the gradient for the
        # inputs, with top rows of 16 or more and 3x3 or 5x5 filters.
        scatter = (kernel in ("avx512", "avx2") and direction == "grad_inputs"
                   and top.shape[3] >= 16
                   and weights.shape[2] == weights.shape[3] and weights.shape[2] in (3, 5))
        if (channels if direction == "grad_inputs" else filters) % KERNEL_BLOCKS[kernel] \
                and not scatter:
            with pytest.raises(ValueError, match="the {} kernel cannot run".format(kernel)):
                compiled(op, *args)
            continue
        result = compiled(op, *args)
        assert result.dtype == np.float32 and result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("shape", CONV_SHAPES[:3])
def test_batched_corr_matches_theano_corrmm(shape):
    bottom, weights, top = conv_case(shape)
    kh, kw = weights.shape[2:]
    x, w, t = T.ftensor4(), T.ftensor4(), T.ftensor4()
    theano_ops = theano.function([x, w, t], [
        CorrMM()(x, w), CorrMM_gradInputs()(w, t, x.shape[2:]),
        CorrMM_gradWeights()(x, t, (kh, kw))],
        mode=theano.compile.get_default_mode().excluding("convae_fast"))
    expected = theano_ops(bottom, weights, top)
    ours = [compiled(BatchedCorr("forward"), bottom, weights),
            compiled(BatchedCorr("grad_inputs"), weights, top),
            compiled(BatchedCorr("grad_weights"), bottom, top)]
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_batched_corr_rejects_shapes_that_do_not_fit():
    bottom, weights, _ = conv_case((2, 3, 9, 4, 3))
    with pytest.raises(ValueError, match="do not fit"):
        compiled(BatchedCorr("forward"), bottom, weights[:, :2])


def test_repeat_and_its_adjoint_axis_sum():
    x = np.random.RandomState(1).randn(3, 4, 5, 6).astype("float32")
    for axis in range(5):
        for times in (2, 3):  # 2 on the last axis: the upscaling's pair loop
            expected = np.repeat(np.expand_dims(x, axis), times, axis=axis)
            np.testing.assert_array_equal(compiled(Repeat(axis, times), x), expected)
    for axis in range(4):
        expected = x.astype(np.float64).sum(axis=axis).astype(np.float32)
        np.testing.assert_array_equal(compiled(AxisSum(axis), x), expected)
    # Axes of two (upscaling's gradient, its own loops), large enough to go
    # parallel: whole planes (axis 1), rows (axis 3) and neighbours (axis 4).
    pairs = np.random.RandomState(4).randn(130, 2, 67, 2, 2).astype("float32")
    for axis in (1, 3, 4):
        expected = pairs.astype(np.float64).sum(axis=axis).astype(np.float32)
        np.testing.assert_array_equal(compiled(AxisSum(axis), pairs), expected)


def test_upscale_2x_puts_each_value_in_a_2x2_block():
    rng = np.random.RandomState(5)
    # odd sizes; the post's last upscaling, large enough to go parallel; one value
    for shape in [(3, 4, 5, 7), (128, 32, 12, 12), (1, 1, 1, 1)]:
        x = rng.randn(*shape).astype("float32")
        expected = np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)
        np.testing.assert_array_equal(compiled(Upscale2x(), x), expected)


def test_upscale_layer_is_one_upscale_2x_where_its_maps_shape_is_known():
    """Upscale2DLayer's two repeats become Upscale2x where C, H and W are
    constants of the graph (in the post's network, from a reshape of the
    dense layer's output and from the convolutions); elsewhere they stay."""
    from lasagne.layers import InputLayer, ReshapeLayer, Upscale2DLayer, get_output
    rng = np.random.RandomState(6)
    v = rng.randn(2, 3 * 5 * 7).astype("float32")
    expected = np.repeat(np.repeat(v.reshape(2, 3, 5, 7), 2, axis=2), 2, axis=3)
    flat, maps = T.fmatrix(), T.ftensor4()
    known = Upscale2DLayer(ReshapeLayer(InputLayer((None, 105), flat), ([0], 3, 5, 7)), 2)
    unknown = Upscale2DLayer(InputLayer((None, 3, 5, 7), maps), 2)
    for var, layer, value, fused in [(flat, known, v, True),
                                     (maps, unknown, v.reshape(2, 3, 5, 7), False)]:
        f = theano.function([var], get_output(layer))
        ops = {type(node.op).__name__ for node in f.maker.fgraph.toposort()}
        assert ("Upscale2x" in ops) == fused and ("Repeat" in ops) != fused, ops
        np.testing.assert_array_equal(f(value), expected)
        # Its gradient is the sum over each block, as before.
        g = theano.function([var], T.grad(get_output(layer).sum() * 1.5, var))
        np.testing.assert_array_equal(g(value), np.full(value.shape, 6.0, np.float32))


def test_channel_sum_is_a_bias_gradient():
    rng = np.random.RandomState(3)
    for shape in [(64, 32, 24, 24), (5, 3), (2, 4, 3, 1, 5)]:
        x = rng.randn(*shape).astype("float32")
        axes = (0,) + tuple(range(2, len(shape)))
        expected = x.astype(np.float64).sum(axis=axes)
        np.testing.assert_allclose(compiled(ChannelSum(), x), expected, rtol=1e-6, atol=1e-6)
        v = T.TensorType("float32", (False,) * len(shape))()
        f = theano.function([v], v.sum(axis=axes))
        ours = "ChannelSum" if len(shape) > 2 else "AxisSum"  # (N, C): one axis
        assert ours in {type(n.op).__name__ for n in f.maker.fgraph.toposort()}
        np.testing.assert_allclose(f(x), expected, rtol=1e-6, atol=1e-6)


def test_max_pool_2x2_and_gradient_match_numpy_and_theano():
    rng = np.random.RandomState(2)
    # Rounded values make ties inside windows; odd sizes have a dropped border;
    # rows of 130 windows take two chunks; 81,920 values go parallel.
    for shape in [(4, 3, 8, 6), (2, 2, 7, 9), (1, 1, 2, 2), (2, 2, 5, 261), (40, 8, 16, 16)]:
        x = np.round(rng.randn(*shape), 0).astype("float32")
        rows, cols = shape[2] // 2 * 2, shape[3] // 2 * 2
        pooled = compiled(MaxPool2x2(), x)
        np.testing.assert_array_equal(pooled, reference.maxpool2(x[:, :, :rows, :cols]))
        gz = rng.randn(*pooled.shape).astype("float32")
        # Every input equal to its window's maximum gets that window's gradient.
        owner = np.kron(pooled, np.ones((1, 1, 2, 2), "float32"))
        expected = np.zeros_like(x)
        expected[:, :, :rows, :cols] = np.where(
            x[:, :, :rows, :cols] == owner, np.kron(gz, np.ones((1, 1, 2, 2), "float32")), 0)
        np.testing.assert_array_equal(compiled(MaxPool2x2Grad(), x, pooled, gz), expected)

        v, m, g = T.ftensor4(), T.ftensor4(), T.ftensor4()
        theano_pool = theano.function(
            [v, m, g], [Pool(ignore_border=True)(v, (2, 2), (2, 2), (0, 0)),
                        MaxPoolGrad(ignore_border=True)(v, m, g, (2, 2), (2, 2), (0, 0))],
            mode=theano.compile.get_default_mode().excluding("convae_fast"))
        theano_pooled, theano_grad = theano_pool(x, pooled, gz)
        np.testing.assert_array_equal(pooled, theano_pooled)
        np.testing.assert_array_equal(expected, theano_grad)

        # Through tanh: y = tanh(x) pooled, the gradient for x in one pass.
        y = np.tanh(x)
        y[0, 0, -1, -1] = np.nan  # on the dropped border if the size is odd
        pooled_y = compiled(MaxPool2x2(), y)
        through = compiled(MaxPool2x2Grad(through_tanh=True), y, pooled_y, gz)
        routed = compiled(MaxPool2x2Grad(), y, pooled_y, gz)
        np.testing.assert_allclose(through, routed * (1 - y.astype(np.float64) ** 2),
                                   rtol=1e-6, atol=1e-7)
        theano_through = theano.function(
            [v, m, g], MaxPoolGrad(ignore_border=True)(v, m, g, (2, 2), (2, 2), (0, 0))
            * (1 - T.sqr(v)), mode=theano.compile.get_default_mode().excluding("convae_fast"))
        np.testing.assert_array_equal(through, theano_through(y, pooled_y, gz))


@pytest.mark.parametrize("shape, dtype", [
    ((128, 512), "float32"),  # the first dropout mask of the post's network
    ((40001,), "float32"),    # more samples than streams, split unevenly
    ((5, 3), "float64"),      # fewer samples than streams: the rest stay as they were
])
def test_parallel_mrg_uniform_draws_theanos_samples_and_states(shape, dtype):
    from theano.sandbox.rng_mrg import MRG_RandomStreams
    results = {}
    for name, mode in [("ours", theano.compile.get_default_mode()),
                       ("theano", theano.compile.get_default_mode().excluding("convae_fast"))]:
        streams = MRG_RandomStreams(seed=1234)
        sample = streams.uniform(shape, dtype=dtype, nstreams=15360)
        draw = theano.function([], sample, mode=mode)
        state = streams.state_updates[0][0]
        ops = {type(node.op) for node in draw.maker.fgraph.toposort()}
        assert (ParallelMRGUniform in ops) == (name == "ours")
        start = state.get_value()
        results[name] = [(draw(), state.get_value()) for _ in range(3)]
    n = int(np.prod(shape))
    states = start
    for (ours, our_state), (theirs, their_state) in zip(results["ours"], results["theano"]):
        expected, states = reference.mrg31k3p_uniform(states, n, np.dtype(dtype).type)
        assert ours.dtype == dtype and ours.shape == shape
        np.testing.assert_array_equal(ours.ravel(), expected)
        np.testing.assert_array_equal(our_state, states)
        np.testing.assert_array_equal(theirs, ours)
        np.testing.assert_array_equal(their_state, our_state)


@pytest.mark.parametrize("m, k, n", [(128, 512, 256), (3, 4, 5), (1, 7, 2),
                                     (4, 0, 3), (0, 5, 3)])  # empty sums and rows
def test_parallel_dot_is_the_dense_layers_products(m, k, n):
    """Dot22 and Dot22Scalar (a dense layer's forward and gradient products,
    transposed views included) become ParallelDot and compute the same."""
    rng = np.random.RandomState(8)
    x = rng.randn(m, k).astype("float32")
    w = rng.randn(k, n).astype("float32")
    g = rng.randn(m, n).astype("float32")
    a, b, c = T.fmatrix(), T.fmatrix(), T.fmatrix()
    outputs = [T.dot(a, b), np.float32(0.1) * T.dot(a.T, c), T.dot(c, b.T) * np.float32(2)]
    fast = theano.function([a, b, c], outputs)
    slow = theano.function([a, b, c], outputs,
                           mode=theano.compile.get_default_mode().excluding("convae_fast"))
    # Theano's own Dot22 refuses empty matrices ("no unit stride"); NumPy decides there.
    slow_values = slow(x, w, g) if m * k * n else [None] * 3
    ops = [node.op for node in fast.maker.fgraph.toposort()]
    assert sum(isinstance(op, ParallelDot) for op in ops) == 3
    assert not {"Dot22", "Dot22Scalar"} & {type(op).__name__ for op in ops}
    x64, w64, g64 = (v.astype(np.float64) for v in (x, w, g))
    expected = [x64 @ w64, 0.1 * x64.T @ g64, 2 * g64 @ w64.T]
    for ours, theirs, exact in zip(fast(x, w, g), slow_values, expected):
        assert ours.dtype == np.float32 and ours.shape == exact.shape
        scale = np.abs(exact).max(initial=0)
        np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-5 * scale)
        if theirs is not None:
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * scale)


def test_an_edit_to_any_c_file_changes_the_module_cache_version(tmp_path, monkeypatch):
    from convae.runtime import base
    ops = {"corr": BatchedCorr("forward"), "repeat": Repeat(2, 2),
           "mrg": ParallelMRGUniform(T.fmatrix().type), "dot": ParallelDot()}
    versions = {name: op.c_code_cache_version() for name, op in ops.items()}
    copy = tmp_path / "c_code"
    shutil.copytree(base.C_CODE_DIR, copy)
    monkeypatch.setattr(base, "C_CODE_DIR", str(copy))
    assert {name: op.c_code_cache_version() for name, op in ops.items()} == versions
    for edited, changes in [("corr_avx2.c", {"corr"}), ("contiguous.c", {"repeat"}),
                            ("mrg.c", {"mrg"}), ("blas.h", {"corr", "dot"}),
                            ("convae_ops.h", {"corr", "repeat", "dot"})]:
        original = (copy / edited).read_text()
        (copy / edited).write_text(original + "\n/* edited */\n")
        changed = {name for name, op in ops.items()
                   if op.c_code_cache_version() != versions[name]}
        assert changed == changes, edited
        (copy / edited).write_text(original)


def test_auto_measures_each_kernel_that_fits_once_and_keeps_the_choice(kernel_store,
                                                                        quiet_machine):
    bottom, weights, _ = conv_case((4, 32, 12, 32, 5))
    KERNELS_RUN.clear()
    auto = compiled(BatchedCorr("forward"), bottom, weights)
    expected = reference.conv2d_valid(bottom.astype(np.float64),
                                      weights[:, :, ::-1, ::-1].astype(np.float64))
    np.testing.assert_allclose(auto, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    fitting = fitting_kernels(32)
    if len(fitting) == 1:  # BLAS alone: nothing to measure or keep
        assert not kernel_store.exists() and KERNELS_RUN == {
            "forward C=32 F=32 12x13 filter 5x5": "blas"}
        pytest.skip("no AVX2 (avx2, fma) or AVX-512 (avx512f): BLAS is the only kernel here")
    kept = json.loads(kernel_store.read_text())[kernel_choice.cpu_key()]
    (key, entry), = kept.items()
    assert key.startswith("forward N=4 C=32 F=32 12x13 filter 5x5 threads=")
    assert sorted(entry["ms"]) == sorted(fitting)
    seconds = {kernel: ms / 1e3 for kernel, ms in entry["ms"].items()}
    assert entry["kernel"] == kernel_choice.pick(seconds, fitting[0])
    assert KERNELS_RUN["forward C=32 F=32 12x13 filter 5x5"] == entry["kernel"]

    assert entry["version"] == kernel_choice.kernels_version()

    def keep(entry):
        kept[key] = entry
        kernel_store.write_text(json.dumps({kernel_choice.cpu_key(): kept}))
        kernel_choice._kept = None

    def measured_afresh():
        KERNELS_RUN.clear()
        compiled(BatchedCorr("forward"), bottom, weights)
        now = json.loads(kernel_store.read_text())[kernel_choice.cpu_key()][key]
        return (sorted(now["ms"]) == sorted(fitting) and now["ms"] != made_up
                and now["version"] == kernel_choice.kernels_version()
                and KERNELS_RUN["forward C=32 F=32 12x13 filter 5x5"] == now["kernel"])

    # A kept choice is run as it is, without measuring again.
    other = next(kernel for kernel in fitting if kernel != entry["kernel"])
    made_up = {kernel: 1.0 + i for i, kernel in enumerate(fitting)}
    keep({"kernel": other, "ms": made_up, "version": kernel_choice.kernels_version()})
    np.testing.assert_allclose(compiled(BatchedCorr("forward"), bottom, weights), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert KERNELS_RUN["forward C=32 F=32 12x13 filter 5x5"] == other
    assert json.loads(kernel_store.read_text())[kernel_choice.cpu_key()][key]["ms"] == made_up

    # Measured afresh: a kept name of no kernel that can run here; a choice made
    # among other kernels (one added since, as a newer convae may); a choice
    # measured with other C (an older convae's kernels).
    keep({"kernel": "avx1024", "ms": made_up, "version": kernel_choice.kernels_version()})
    assert measured_afresh()
    keep({"kernel": other, "ms": {other: 1.0}, "version": kernel_choice.kernels_version()})
    assert measured_afresh()
    keep({"kernel": other, "ms": made_up, "version": "older C"})
    assert measured_afresh()
    keep({"kernel": other, "ms": made_up})
    assert measured_afresh()


def test_a_damaged_or_unwritable_store_is_measured_afresh(kernel_store, monkeypatch,
                                                          quiet_machine):
    bottom, weights, top = conv_case((3, 32, 10, 32, 3))
    if len(fitting_kernels(32)) == 1:
        pytest.skip("no AVX2 (avx2, fma) or AVX-512 (avx512f): BLAS is the only kernel here")
    kernel_store.write_text("{not json")
    compiled(BatchedCorr("grad_weights"), bottom, top)
    assert len(json.loads(kernel_store.read_text())[kernel_choice.cpu_key()]) == 1
    monkeypatch.setattr(kernel_choice, "path", lambda: str(kernel_store / "no" / "such"))
    monkeypatch.setattr(kernel_choice, "_kept", None)
    KERNELS_RUN.clear()
    compiled(BatchedCorr("forward"), bottom, weights)  # measured, kept in memory only
    assert KERNELS_RUN and kernel_choice.kept_choices()


def test_a_measurement_other_programs_disturbed_is_not_kept(kernel_store, busy_cpus):
    """Timed while another program had the CPUs (the test suite, a compile), a
    kept choice ran conv1's weight gradient on OpenBLAS for good on the Xeon of
    family 6, model 207: 3.0 ms a batch where AVX-512 takes 1.7, training at
    3,850 images/s instead of 5,280. Now that process runs the rule's pick,
    keeps nothing, and the next one measures again."""
    bottom, _, top = conv_case((16, 32, 12, 32, 5))
    fitting = fitting_kernels(32)
    if len(fitting) == 1:
        pytest.skip("no AVX2 (avx2, fma) or AVX-512 (avx512f): BLAS is the only kernel here")
    expected = compiled(BatchedCorr("grad_weights", fitting[0]), bottom, top)
    b, t = T.tensor4(dtype="float32"), T.tensor4(dtype="float32")
    function = theano.function([b, t], BatchedCorr("grad_weights")(b, t))
    with busy_cpus():  # about half of each CPU is ours
        KERNELS_RUN.clear()
        np.testing.assert_array_equal(function(bottom, top), expected)
        assert KERNELS_RUN == {"grad_weights C=32 F=32 12x13 filter 5x5": fitting[0]}
        assert not kernel_store.exists()
    KERNELS_RUN.clear()  # this process goes on with the rule's pick, not measuring again
    np.testing.assert_array_equal(function(bottom, top), expected)
    assert not kernel_store.exists()
    kernel_choice._unsteady.clear()  # as in the next process, on a machine now quiet
    function(bottom, top)
    kept, = json.loads(kernel_store.read_text())[kernel_choice.cpu_key()].values()
    assert sorted(kept["ms"]) == sorted(fitting)


def test_where_linux_does_not_say_how_long_threads_waited_the_measurement_is_kept(
        kernel_store, monkeypatch):
    """No schedstat (some kernels and sandboxes): ``waited`` is None, and the
    kernel choice goes on as on a quiet machine, through the C and back."""
    bottom, _, top = conv_case((16, 32, 12, 32, 5))
    fitting = fitting_kernels(32)
    if len(fitting) == 1:
        pytest.skip("no AVX2 (avx2, fma) or AVX-512 (avx512f): BLAS is the only kernel here")
    monkeypatch.setattr(kernel_choice, "waited", lambda: None)
    expected = compiled(BatchedCorr("grad_weights", fitting[0]), bottom, top)
    KERNELS_RUN.clear()
    np.testing.assert_array_equal(compiled(BatchedCorr("grad_weights"), bottom, top), expected)
    kept, = json.loads(kernel_store.read_text())[kernel_choice.cpu_key()].values()
    assert sorted(kept["ms"]) == sorted(fitting) and kernel_choice.unmeasured() == []


INTERRUPTED_CODEC = """
import os, signal, threading, time
import numpy as np
import convae
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if ignored
convae.runtime.enable()
from convae.codec import Codec
codec = Codec()
images = np.random.RandomState(0).rand(500, 1, 28, 28).astype(np.float32) * 0.99
codec.reconstruct(images)  # each correlation's kernel measured and kept first
for attempt in range(5):
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.time()
    try:
        while time.time() - start < 10:
            codec.reconstruct(images)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
"""


def test_ctrl_c_while_the_correlations_run_reaches_the_program(tmp_path):
    """Python runs a signal's handler at the first Python code after it: most
    often the kernel choice's lookup the C makes before a correlation, which
    cleared every error. Ctrl-C in a figure command, a notebook or the test
    evaluation was lost there 3 times in 4, the work going on to the end."""
    ran = subprocess.run([sys.executable, "-c", INTERRUPTED_CODEC], capture_output=True,
                         text=True, timeout=300, cwd=str(tmp_path))
    assert ran.stdout.split() == ["interrupted"] * 5, ran.stdout + ran.stderr[-2000:]




def test_the_rules_pick_stays_unless_another_kernel_is_clearly_faster():
    assert kernel_choice.pick({"avx512": 1.0, "avx2": 0.95, "blas": 2.0}, "avx512") == "avx512"
    assert kernel_choice.pick({"avx512": 1.0, "avx2": 0.85, "blas": 2.0}, "avx512") == "avx2"
    assert kernel_choice.pick({"avx2": 3.2, "blas": 2.8}, "avx2") == "blas"
