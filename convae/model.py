"""The post's convolutional autoencoder, layer for layer.

Encoder: two 5x5 tanh convolutions with 32 filters, each followed by 2x2 max
pooling, then dropout and a 256-unit tanh code. Decoder: a 512-unit tanh layer
reshaped to 32 maps of 4x4, then two rounds of 2x upscaling and a transposed
convolution whose filters *are* the matching encoder convolution's filters
(tied weights). Variable names follow the post.
"""
import lasagne
import theano
from lasagne.layers import (Conv2DLayer, Deconv2DLayer, DenseLayer,
                            FlattenLayer, InputLayer, MaxPool2DLayer,
                            ReshapeLayer, Upscale2DLayer, dropout)
from lasagne.nonlinearities import tanh


def build_convolutional_autoencoder(input_var=None):
    """Build the post's network and return its output layer.

    input_var: a Theano 4-D tensor of shape (batch, 1, 28, 28) of floatX, the
    parameters' dtype (a float64 one failed to compile, in Theano's words
    about "conv_dnn" and "conv_gemm"), or None for a fresh ``T.tensor4``.
    Pixel values are expected in [0, 1).

    Output: (batch, 1, 28, 28) reconstructions. Every layer carries its post
    variable name as ``layer.name``; the 256-unit code is ``'auto_dense1A'``.
    """
    if input_var is not None and (getattr(input_var, "ndim", None) != 4 or
                                  getattr(input_var, "dtype", None) != theano.config.floatX):
        raise ValueError(
            "input_var must be a 4-D Theano tensor (batch, 1, 28, 28) of {} (T.tensor4() "
            "makes one), got {!r} with ndim={}, dtype={}".format(
                theano.config.floatX, input_var, getattr(input_var, "ndim", None),
                getattr(input_var, "dtype", None)))

    l_in = InputLayer(shape=(None, 1, 28, 28), input_var=input_var,
                      name="l_in")
    auto_conv1A = Conv2DLayer(
        l_in, num_filters=32, filter_size=(5, 5),
        nonlinearity=tanh, W=lasagne.init.GlorotUniform(), name="auto_conv1A")
    auto_maxpool1A = MaxPool2DLayer(auto_conv1A, pool_size=(2, 2),
                                    name="auto_maxpool1A")
    auto_conv2A = Conv2DLayer(
        auto_maxpool1A, num_filters=32, filter_size=(5, 5),
        nonlinearity=tanh, name="auto_conv2A")
    auto_maxpool2A = MaxPool2DLayer(auto_conv2A, pool_size=(2, 2),
                                    name="auto_maxpool2A")
    auto_flattenA = FlattenLayer(auto_maxpool2A, name="auto_flattenA")
    auto_dense1A = DenseLayer(dropout(auto_flattenA, p=.5), num_units=256,
                              nonlinearity=tanh, name="auto_dense1A")
    auto_dense1B = DenseLayer(dropout(auto_dense1A, p=.5), num_units=512,
                              nonlinearity=tanh, name="auto_dense1B")
    auto_reshapeB = ReshapeLayer(auto_dense1B, shape=([0], 32, 4, 4),
                                 name="auto_reshapeB")
    auto_upscale2B = Upscale2DLayer(auto_reshapeB, scale_factor=2,
                                    name="auto_upscale2B")
    auto_deconv2B = Deconv2DLayer(
        auto_upscale2B, num_filters=auto_conv2A.input_shape[1],
        filter_size=auto_conv2A.filter_size, stride=auto_conv2A.stride,
        crop=auto_conv2A.pad, W=auto_conv2A.W,
        flip_filters=not auto_conv2A.flip_filters, name="auto_deconv2B")
    auto_upscale1B = Upscale2DLayer(auto_deconv2B, scale_factor=2,
                                    name="auto_upscale1B")
    auto_deconv1B = Deconv2DLayer(
        auto_upscale1B, num_filters=auto_conv1A.input_shape[1],
        filter_size=auto_conv1A.filter_size, stride=auto_conv1A.stride,
        crop=auto_conv1A.pad, W=auto_conv1A.W,
        flip_filters=not auto_conv1A.flip_filters, name="auto_deconv1B")
    return auto_deconv1B
