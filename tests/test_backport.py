"""Lasagne master's layers on the installed Lasagne, against NumPy references."""
import numpy as np
import pytest
import theano
import theano.tensor as T

import lasagne
from convae.runtime import lasagne_backport
from convae.runtime.lasagne_backport import TransposedConv2DLayer, Upscale2DLayer
from lasagne.layers import InputLayer, get_output

import reference


def run_layer(layer_class, x, **kwargs):
    """Build ``layer_class`` on an input of x's shape, return (layer, output)."""
    var = T.tensor4()
    layer = layer_class(InputLayer(x.shape, input_var=var), **kwargs)
    f = theano.function([var], get_output(layer))
    return layer, f(x)


def test_lasagne_offers_masters_api():
    layers = lasagne.layers
    assert layers.Deconv2DLayer is layers.TransposedConv2DLayer
    assert layers.Upscale2DLayer is not None
    assert layers.Conv2DLayer((None, 1, 8, 8), 2, 3).flip_filters is True
    if lasagne_backport.BACKPORTED:
        assert layers.TransposedConv2DLayer is TransposedConv2DLayer
        assert layers.Upscale2DLayer is Upscale2DLayer


def test_conv2d_flip_filters_true_is_a_true_convolution():
    rng = np.random.RandomState(0)
    x = rng.rand(2, 3, 9, 7).astype("float32")
    W = rng.randn(4, 3, 3, 2).astype("float32")
    layer, out = run_layer(lasagne.layers.Conv2DLayer, x, num_filters=4,
                           filter_size=(3, 2), W=W, nonlinearity=None)
    assert layer.flip_filters
    np.testing.assert_allclose(out, reference.conv2d_valid(x, W), rtol=1e-5,
                               atol=1e-5)


CASES = [
    # filter_size, stride, crop, flip_filters, output_size, expected out (rows, cols)
    ((3, 3), (1, 1), 0, False, None, (7, 8)),
    ((3, 3), (1, 1), 0, True, None, (7, 8)),
    ((5, 5), (1, 1), "valid", False, None, (9, 10)),
    ((3, 3), (1, 1), "full", False, None, (3, 4)),
    ((3, 5), (1, 1), "same", True, None, (5, 6)),
    ((3, 3), (2, 2), 1, False, None, (9, 11)),
    ((4, 4), (2, 2), 0, True, None, (12, 14)),
    ((3, 2), (2, 3), (1, 0), False, None, (9, 17)),
    ((2, 3), (3, 1), (0, 1), True, None, (14, 6)),
    ((3, 3), (2, 2), 1, False, (10, 12), (10, 12)),
    ((5, 5), (3, 3), "full", True, (11, 14), (11, 14)),
]


@pytest.mark.parametrize("filter_size,stride,crop,flip,output_size,expected", CASES)
def test_transposed_conv_matches_reference(filter_size, stride, crop, flip,
                                           output_size, expected):
    rng = np.random.RandomState(1)
    x = rng.randn(2, 3, 5, 6).astype("float32")
    W = rng.randn(3, 2, *filter_size).astype("float32")
    b = rng.randn(2).astype("float32")
    layer, out = run_layer(TransposedConv2DLayer, x, num_filters=2,
                           filter_size=filter_size, stride=stride, crop=crop,
                           W=W, b=b, nonlinearity=None, flip_filters=flip,
                           output_size=output_size)
    crops = {"valid": (0, 0), "full": (filter_size[0] - 1, filter_size[1] - 1),
             "same": (filter_size[0] // 2, filter_size[1] // 2)}.get(crop, crop)
    crops = crops if isinstance(crops, tuple) else (crops, crops)
    want = reference.transposed_conv2d(x, W, stride, crops, flip, output_size)
    want += b[None, :, None, None]
    assert layer.output_shape == (2, 2) + expected
    assert out.shape == want.shape == (2, 2) + expected
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_transposed_conv_defaults_and_untied_biases():
    rng = np.random.RandomState(2)
    x = rng.randn(1, 2, 4, 3).astype("float32")
    layer = TransposedConv2DLayer((None, 2, 4, 3), 3, 3)
    assert layer.nonlinearity is lasagne.nonlinearities.rectify
    assert layer.flip_filters is False
    assert layer.crop == (0, 0) and layer.stride == (1, 1)
    assert layer.W.get_value().shape == (2, 3, 3, 3)
    W = rng.randn(2, 3, 3, 3).astype("float32")
    b = rng.randn(3, 6, 5).astype("float32")
    layer, out = run_layer(TransposedConv2DLayer, x, num_filters=3,
                           filter_size=3, W=W, b=b, untie_biases=True)
    assert layer.b.get_value().shape == (3, 6, 5)
    want = np.maximum(reference.transposed_conv2d(x, W) + b[None], 0)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,error", [
    (dict(crop="bogus"), ValueError),
    (dict(crop=-1), ValueError),
    (dict(crop=(1, 2, 3)), ValueError),
    (dict(crop=4), ValueError),
    (dict(stride=2, output_size=(13, 13)), ValueError),
    (dict(stride=2, output_size=(10, 10)), ValueError),
    (dict(filter_size=4, crop="same"), NotImplementedError),
])
def test_transposed_conv_rejects_bad_arguments(kwargs, error):
    args = dict(num_filters=2, filter_size=3)
    args.update(kwargs)
    with pytest.raises(error):
        TransposedConv2DLayer((None, 3, 5, 5), **args)


def test_transposed_conv_rejects_non_4d_input():
    with pytest.raises(ValueError, match="4-D"):
        TransposedConv2DLayer((None, 3, 5), 2, 3)


@pytest.mark.parametrize("shape,factor", [
    ((2, 3, 5, 7), 2), ((1, 2, 3, 1), (3, 2)), ((2, 1, 1, 5), (1, 3))])
@pytest.mark.parametrize("mode", ["repeat", "dilate"])
def test_upscale_matches_reference(shape, factor, mode):
    x = np.random.RandomState(3).randn(*shape).astype("float32")
    layer, out = run_layer(Upscale2DLayer, x, scale_factor=factor, mode=mode)
    factors = factor if isinstance(factor, tuple) else (factor, factor)
    if mode == "repeat":
        want = reference.upscale_repeat(x, factors)
        np.testing.assert_array_equal(
            out, np.repeat(np.repeat(x, factors[0], 2), factors[1], 3))
    else:
        want = reference.upscale_dilate(x, factors)
    assert layer.output_shape == want.shape
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("fast", [True, False])
def test_upscale_gradient_sums_each_block_as_master(fast):
    rng = np.random.RandomState(4)
    x = rng.randn(3, 4, 6, 5).astype("float32")
    g = rng.randn(3, 4, 12, 15).astype("float32")
    var = T.tensor4()
    out = get_output(Upscale2DLayer(InputLayer(x.shape, input_var=var), (2, 3)))
    mode = theano.compile.get_default_mode()
    grad = theano.function([var], theano.grad((out * g).sum(), var),
                           mode=mode if fast else mode.excluding("convae_fast"))
    # Rounded between the two sums: columns first, 163 of these 360 values
    # would differ in their last bits.
    np.testing.assert_array_equal(grad(x), reference.upscale_repeat_grad(g, (2, 3)))


def test_upscale_keeps_unknown_sizes_unknown():
    layer = Upscale2DLayer((None, 3, None, 4), 2)
    assert layer.output_shape == (None, 3, None, 8)
    assert layer.mode == "repeat"


@pytest.mark.parametrize("kwargs", [dict(scale_factor=0),
                                    dict(scale_factor=(2, 0)),
                                    dict(scale_factor=2, mode="nearest")])
def test_upscale_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Upscale2DLayer((None, 1, 4, 4), **kwargs)


def numpy_adam(params, grads_per_step, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
               as_lasagne_01=False):
    """Adam from the formula (Kingma and Ba), in float32 throughout, step by step:
    the arithmetic of Lasagne master, where every "1 -" is float32. With
    as_lasagne_01, 1 - beta1 and 1 - beta2 are rounded from double, as 0.1 does."""
    f = np.float32
    one_minus = (f(1 - beta1), f(1 - beta2)) if as_lasagne_01 else None
    lr, beta1, beta2, eps, one = f(lr), f(beta1), f(beta2), f(eps), f(1)
    one_minus = one_minus or (one - beta1, one - beta2)
    params = [p.copy() for p in params]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    t, history = f(0), []
    for grads in grads_per_step:
        t = t + f(1)
        rate = lr * np.sqrt(one - beta2 ** t) / (one - beta1 ** t)
        for i, g in enumerate(grads):
            first[i] = beta1 * first[i] + one_minus[0] * g
            second[i] = beta2 * second[i] + one_minus[1] * g * g
            params[i] = params[i] - rate * first[i] / (np.sqrt(second[i]) + eps)
        history.append([p.copy() for p in params])
    return history


def test_adam_is_masters_float32_arithmetic_step_for_step():
    rng = np.random.RandomState(0)
    start = [(0.01 * rng.randn(32, 1, 5, 5)).astype("float32"),
             (0.01 * rng.randn(256)).astype("float32")]
    grads_per_step = [[(0.01 * rng.randn(*p.shape)).astype("float32") for p in start]
                      for _ in range(3)]
    params = [theano.shared(p.copy()) for p in start]
    grad_vars = [T.TensorType("float32", (False,) * p.ndim)() for p in start]
    step = theano.function(grad_vars, [], updates=lasagne.updates.adam(
        grad_vars, params, learning_rate=0.01))
    expected = numpy_adam(start, grads_per_step)
    lasagne_01 = numpy_adam(start, grads_per_step, as_lasagne_01=True)
    for grads, want, other in zip(grads_per_step, expected, lasagne_01):
        step(*grads)
        for param, value, far in zip(params, want, other):
            got = param.get_value()
            assert got.dtype == np.float32
            # Theano may fuse a multiply and an add into one FMA: a last-bit
            # difference, far below the distance to 0.1's arithmetic.
            last_bits = 2 * np.spacing(np.abs(value).max())
            np.testing.assert_allclose(got, value, rtol=0, atol=last_bits)
            assert np.abs(far - value).max() > 4 * last_bits
    if lasagne_backport.BACKPORTED:
        assert lasagne.updates.adam is lasagne_backport.adam


def test_nesterov_momentum_squared_error_glorot_and_dropout_are_masters():
    f = np.float32
    rng = np.random.RandomState(1)
    start = (0.1 * rng.randn(7, 5)).astype("float32")
    grads = [(0.01 * rng.randn(7, 5)).astype("float32") for _ in range(3)]
    param = theano.shared(start.copy())
    g = T.fmatrix()
    step = theano.function([g], [], updates=lasagne.updates.nesterov_momentum(
        [g], [param], learning_rate=0.01, momentum=0.9))
    # Master: x = momentum * velocity + (p - lr g) - p; velocity := x;
    # p := momentum * x + (p - lr g).
    p, velocity = start.copy(), np.zeros_like(start)
    for grad in grads:
        step(grad)
        sgd = p - f(0.01) * grad
        velocity = f(0.9) * velocity + sgd - p
        p = f(0.9) * velocity + sgd
        np.testing.assert_allclose(param.get_value(), p, rtol=0,
                                   atol=2 * np.spacing(np.abs(p).max()))

    a, b = T.fmatrix(), T.fmatrix()
    x, y = rng.randn(2, 4, 6).astype("float32")
    np.testing.assert_array_equal(
        theano.function([a, b], lasagne.objectives.squared_error(a, b))(x, y), (x - y) ** 2)

    # Glorot uniform: U(-limit, limit), limit = sqrt(3) sqrt(2 / ((n_in + n_out) field)).
    lasagne.random.set_rng(np.random.RandomState(5))
    W = lasagne.init.GlorotUniform().sample((32, 1, 5, 5))
    limit = np.sqrt(3) * np.sqrt(2.0 / ((32 + 1) * 25))
    want = np.random.RandomState(5).uniform(-limit, limit, (32, 1, 5, 5)).astype("float32")
    np.testing.assert_array_equal(W, want)

    # Dropout: zero with probability p, the rest scaled by 1 / (1 - p); off
    # when deterministic.
    lasagne.random.set_rng(np.random.RandomState(6))
    v = T.fmatrix()
    layer = lasagne.layers.dropout(InputLayer((None, 1000), input_var=v), p=0.5)
    values = rng.uniform(0.5, 1, (20, 1000)).astype("float32")
    out = theano.function([v], get_output(layer))(values)
    kept = out != 0
    np.testing.assert_array_equal(out[kept], values[kept] * f(2))
    assert 0.48 < kept.mean() < 0.52
    np.testing.assert_array_equal(
        theano.function([v], get_output(layer, deterministic=True))(values), values)
