"""The post's network: structure, tied weights, dropout and a real forward pass."""
import os

import numpy as np
import pytest
import theano
import theano.tensor as T

import lasagne
from convae import data
from convae.model import build_convolutional_autoencoder

import reference

EXPECTED_SHAPES = [
    ("l_in", (None, 1, 28, 28)),
    ("auto_conv1A", (None, 32, 24, 24)),
    ("auto_maxpool1A", (None, 32, 12, 12)),
    ("auto_conv2A", (None, 32, 8, 8)),
    ("auto_maxpool2A", (None, 32, 4, 4)),
    ("auto_flattenA", (None, 512)),
    (None, (None, 512)),  # dropout
    ("auto_dense1A", (None, 256)),
    (None, (None, 256)),  # dropout
    ("auto_dense1B", (None, 512)),
    ("auto_reshapeB", (None, 32, 4, 4)),
    ("auto_upscale2B", (None, 32, 8, 8)),
    ("auto_deconv2B", (None, 32, 12, 12)),
    ("auto_upscale1B", (None, 32, 24, 24)),
    ("auto_deconv1B", (None, 1, 28, 28)),
]


@pytest.fixture(scope="module")
def net():
    return build_convolutional_autoencoder()


def layers_by_name(net):
    return {layer.name: layer for layer in lasagne.layers.get_all_layers(net)}


def test_every_layer_has_the_posts_shape(net):
    got = [(layer.name, layer.output_shape)
           for layer in lasagne.layers.get_all_layers(net)]
    assert got == EXPECTED_SHAPES
    kinds = [type(layer).__name__ for layer in lasagne.layers.get_all_layers(net)]
    assert kinds.count("DropoutLayer") == 2
    assert all(layer.p == 0.5 for layer in lasagne.layers.get_all_layers(net)
               if type(layer).__name__ == "DropoutLayer")


def test_decoder_weights_are_the_encoders(net):
    named = layers_by_name(net)
    for enc, dec in (("auto_conv1A", "auto_deconv1B"),
                     ("auto_conv2A", "auto_deconv2B")):
        conv, deconv = named[enc], named[dec]
        assert deconv.W is conv.W
        assert deconv.b is not conv.b
        assert deconv.flip_filters is (not conv.flip_filters)
        assert deconv.nonlinearity is lasagne.nonlinearities.rectify
        # Updating the encoder's filters changes what the decoder computes with.
        new = np.random.RandomState(0).randn(
            *conv.W.get_value().shape).astype("float32")
        conv.W.set_value(new)
        np.testing.assert_array_equal(deconv.W.get_value(), new)
    assert named["auto_deconv2B"].b.get_value().shape == (32,)
    assert named["auto_deconv1B"].b.get_value().shape == (1,)


def test_parameter_count(net):
    by_hand = ((32 * 1 * 5 * 5 + 32) + (32 * 32 * 5 * 5 + 32)
               + (512 * 256 + 256) + (256 * 512 + 512) + 32 + 1)
    assert by_hand == 289409
    assert lasagne.layers.count_params(net, trainable=True) == 289409
    params = lasagne.layers.get_all_params(net, trainable=True)
    assert sum(p.get_value().size for p in params) == 289409


def test_dropout_on_in_training_off_when_deterministic(net):
    named = layers_by_name(net)
    dropout = [layer for layer in lasagne.layers.get_all_layers(net)
               if type(layer).__name__ == "DropoutLayer"][0]
    x = T.tensor4()
    train = theano.function([x], lasagne.layers.get_output(
        [named["auto_flattenA"], dropout], x))
    test = theano.function([x], lasagne.layers.get_output(
        [named["auto_flattenA"], dropout], x, deterministic=True))
    images = np.random.RandomState(1).rand(64, 1, 28, 28).astype("float32")
    before, after = train(images)
    dropped = after == 0
    assert 0.45 < dropped[before != 0].mean() < 0.55
    np.testing.assert_allclose(after[~dropped], 2 * before[~dropped], rtol=1e-6)
    before, after = test(images)
    np.testing.assert_array_equal(before, after)


def test_rejects_an_input_var_that_is_not_4d():
    with pytest.raises(ValueError, match="4-D"):
        build_convolutional_autoencoder(T.matrix())


def test_rejects_an_input_var_of_another_dtype_than_the_parameters():
    """T.tensor4(dtype="float64") built a network that failed to compile, in
    Theano's words about conv_dnn and conv_gemm."""
    with pytest.raises(ValueError) as error:
        build_convolutional_autoencoder(T.tensor4("x", dtype="float64"))
    assert str(error.value) == (
        "input_var must be a 4-D Theano tensor (batch, 1, 28, 28) of float32 (T.tensor4() "
        "makes one), got x with ndim=4, dtype=float64")


def test_forward_pass_on_real_mnist_matches_numpy(mnist_dir):
    images = data.read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"))
    x = (images[:8, None] / np.float32(256)).astype("float32")
    input_var = T.tensor4("inputs")
    net = build_convolutional_autoencoder(input_var)
    # Random non-zero values everywhere, biases included, so every term counts.
    rng = np.random.RandomState(2)
    for param in lasagne.layers.get_all_params(net):
        value = param.get_value()
        param.set_value((0.2 * rng.randn(*value.shape)).astype("float32"))
    forward = theano.function(
        [input_var], lasagne.layers.get_output(net, deterministic=True))
    got = forward(x)
    want = reference.autoencoder_forward(
        lasagne.layers.get_all_param_values(net), x)
    assert got.shape == (8, 1, 28, 28)
    assert (want > 0).mean() > 0.1  # the rectified output is not all zero
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
