"""What Lasagne master has and PyPI's Lasagne 0.1 lacks, for the post's network.

The post was written against Lasagne's GitHub master (0.2.dev1). The only
Lasagne on PyPI is 0.1 (2015), which

* does not import on Theano 1.0.x: its pooling layers import
  ``theano.tensor.signal.downsample``, a module Theano removed in 0.9;
* has no ``Upscale2DLayer``, no ``TransposedConv2DLayer`` and no
  ``Deconv2DLayer`` (master's alias of it);
* has no ``flip_filters`` on ``Conv2DLayer`` (0.1 always computes a true,
  flipped-filter convolution, which is master's default ``flip_filters=True``);
* computes Adam's ``1 - beta1`` and ``1 - beta2`` in double precision and
  rounds them to float32 (``0.1`` and ``0.001``), where master subtracts the
  float32 betas from a Theano constant 1 in float32 (``0.100000024`` and
  ``0.0009999871``): from the same parameters and gradients, three steps end
  up to 1.4e-5 apart.

Importing this module makes ``import lasagne`` work and, on 0.1 only, adds the
missing pieces to ``lasagne.layers`` and puts master's ``adam`` in
``lasagne.updates``, with master's documented signatures, defaults and
arithmetic. The rest of what convae trains with (``nesterov_momentum``,
``squared_error``, ``GlorotUniform``, dropout) computes the same on 0.1 as on
master; ``tests/test_backport.py`` checks all of them against NumPy. The code here is convae's own, written from master's
documentation and checked against NumPy references in ``tests/``. When the
installed Lasagne already has these layers (master), nothing is patched and
master's own classes are used.
"""
import sys
import types
import warnings
from collections import OrderedDict

import numpy as np
import theano
import theano.tensor as T


def _install_downsample_module():
    """Provide ``theano.tensor.signal.downsample.max_pool_2d`` for Lasagne 0.1.

    Theano 0.9 replaced it by ``theano.tensor.signal.pool.pool_2d``, which
    computes the same pooling under new argument names.
    """
    from theano.tensor.signal import pool

    def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0),
                    mode="max"):
        return pool.pool_2d(input, ws=ds, ignore_border=ignore_border,
                            stride=st, pad=padding, mode=mode)

    module = types.ModuleType("theano.tensor.signal.downsample")
    module.max_pool_2d = max_pool_2d
    sys.modules[module.__name__] = module
    theano.tensor.signal.downsample = module


def _import_lasagne():
    """Import Lasagne, first shimming Theano for Lasagne 0.1 if it is installed."""
    from importlib import metadata
    try:
        version = metadata.version("Lasagne")
    except metadata.PackageNotFoundError:
        version = None
    if version is not None and version.startswith("0.1"):
        _install_downsample_module()
        # 0.1's Conv2DLayer passes Theano's old argument name; harmless.
        warnings.filterwarnings(
            "ignore", category=UserWarning,
            message="The `image_shape` keyword argument to `tensor.nnet.conv2d`")
    import lasagne
    return lasagne


lasagne = _import_lasagne()
from lasagne import init, nonlinearities  # noqa: E402
from lasagne.layers import Layer  # noqa: E402
from lasagne.utils import as_tuple  # noqa: E402

BACKPORTED = not hasattr(lasagne.layers, "TransposedConv2DLayer")


def _check_4d(layer_name, input_shape):
    if len(input_shape) != 4:
        raise ValueError(
            "{} needs a 4-D input (batch, channels, rows, columns), got shape "
            "{}".format(layer_name, tuple(input_shape)))


class Upscale2DLayer(Layer):
    """Upscale the two trailing axes of a 4-D input by an integer factor.

    Lasagne master's ``Upscale2DLayer(incoming, scale_factor, mode='repeat')``.

    scale_factor : int or pair of int, each >= 1.
    mode : ``'repeat'`` repeats every value ``scale_factor`` times along each
        axis (nearest-neighbour upscaling); ``'dilate'`` puts each value at the
        top-left of its block and fills the rest of the block with zeros.

    Input (batch, channels, rows, cols) -> output
    (batch, channels, rows * scale_factor[0], cols * scale_factor[1]).
    """

    def __init__(self, incoming, scale_factor, mode="repeat", **kwargs):
        super(Upscale2DLayer, self).__init__(incoming, **kwargs)
        _check_4d("Upscale2DLayer", self.input_shape)
        self.scale_factor = as_tuple(scale_factor, 2)
        if self.scale_factor[0] < 1 or self.scale_factor[1] < 1:
            raise ValueError("Scale factor must be >= 1, not {0}".format(
                self.scale_factor))
        if mode not in ("repeat", "dilate"):
            raise ValueError("Upscale2DLayer mode must be 'repeat' or "
                             "'dilate', not {0!r}".format(mode))
        self.mode = mode

    def get_output_shape_for(self, input_shape):
        shape = list(input_shape)
        for axis, factor in zip((2, 3), self.scale_factor):
            if shape[axis] is not None:
                shape[axis] *= factor
        return tuple(shape)

    def get_output_for(self, input, **kwargs):
        rows, cols = self.scale_factor
        if self.mode == "dilate":
            shape = (input.shape[0], input.shape[1],
                     input.shape[2] * rows, input.shape[3] * cols)
            zeros = T.zeros(shape, dtype=input.dtype)
            return T.set_subtensor(zeros[:, :, ::rows, ::cols], input)
        # Columns first, then rows, as master: the values are the same
        # either way, but the gradient sums each block in this order.
        upscaled = input
        if cols > 1:
            upscaled = T.repeat(upscaled, cols, axis=3)
        if rows > 1:
            upscaled = T.repeat(upscaled, rows, axis=2)
        return upscaled


def _crop_amounts(crop, filter_size):
    """Normalise ``crop`` to master's stored form: 'full', 'same' or an int pair."""
    if crop == "valid":
        return (0, 0)
    if crop == "same":
        if any(size % 2 == 0 for size in filter_size):
            raise NotImplementedError("`same` padding requires odd filter size.")
        return crop
    if crop == "full":
        return crop
    if isinstance(crop, str):
        raise ValueError("crop must be an int, a pair of ints, 'valid', "
                         "'full' or 'same', not {0!r}".format(crop))
    amounts = as_tuple(crop, 2, int)
    if any(amount < 0 for amount in amounts):
        raise ValueError("crop must not be negative, got {0}".format(amounts))
    return amounts


def transposed_conv_length(input_length, filter_size, stride, crop):
    """Smallest output length of a transposed convolution along one axis.

    This is the input length of the forward convolution it transposes:
    ``(input_length - 1) * stride + filter_size - 2 * crop``, where the crop of
    'full' is ``filter_size - 1`` and that of 'same' is ``filter_size // 2``.
    """
    if input_length is None:
        return None
    if crop == "full":
        crop = filter_size - 1
    elif crop == "same":
        crop = filter_size // 2
    return (input_length - 1) * stride + filter_size - 2 * crop


class TransposedConv2DLayer(Layer):
    """2-D transposed convolution ("deconvolution"), as in Lasagne master.

    Computes the gradient of a 2-D convolution with respect to its input: the
    input is dilated by ``stride`` (``stride - 1`` zeros between values), padded
    with ``filter_size - 1 - crop`` zeros, and cross-correlated with the filters
    (convolved if ``flip_filters=True``).

    num_filters : output channels.
    filter_size, stride : int or pair of int.
    crop : int, pair of int, 'valid' (= 0, a full convolution), 'full' (crop
        ``filter_size - 1``: a valid convolution) or 'same' (crop
        ``filter_size // 2``, odd filters only).
    untie_biases : one bias per output position instead of per channel.
    W : shape (input channels, num_filters, rows, cols), the shape of the W of
        the forward ``Conv2DLayer`` this layer transposes, so that layer's W can
        be passed in to tie the weights.
    b : shape (num_filters,), or (num_filters, out_rows, out_cols) if untied;
        None for no bias.
    nonlinearity : default rectify; None for linear.
    flip_filters : default False. Pass ``not conv.flip_filters`` to transpose
        ``conv`` exactly.
    output_size : int or pair; for stride > 1, which of the ``stride`` possible
        output sizes to produce (default: the smallest).

    Input (batch, in_channels, rows, cols) -> output
    (batch, num_filters, (rows - 1) * stride + filter_size - 2 * crop, ...).
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1),
                 crop=0, untie_biases=False, W=init.GlorotUniform(),
                 b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 flip_filters=False, output_size=None, **kwargs):
        super(TransposedConv2DLayer, self).__init__(incoming, **kwargs)
        _check_4d("TransposedConv2DLayer", self.input_shape)
        self.num_filters = num_filters
        self.filter_size = as_tuple(filter_size, 2, int)
        self.stride = as_tuple(stride, 2, int)
        if min(self.filter_size) < 1 or min(self.stride) < 1:
            raise ValueError("filter_size and stride must be >= 1, got {0} and "
                             "{1}".format(self.filter_size, self.stride))
        self.crop = _crop_amounts(crop, self.filter_size)
        self.untie_biases = untie_biases
        self.flip_filters = flip_filters
        self.nonlinearity = (nonlinearities.identity if nonlinearity is None
                             else nonlinearity)
        self.output_size = None
        smallest = self.get_output_shape_for(self.input_shape)[2:]
        if any(size is not None and size < 1 for size in smallest):
            raise ValueError("crop {0} leaves no output for input shape "
                             "{1}".format(crop, self.input_shape))
        if output_size is not None:
            output_size = as_tuple(output_size, 2, int)
            for size, low, step in zip(output_size, smallest, self.stride):
                if low is not None and not low <= size < low + step:
                    raise ValueError(
                        "output_size {0} is not reachable: with this input, "
                        "filter, stride and crop each size must lie in "
                        "[{1}, {1} + stride - 1]".format(output_size, smallest))
            self.output_size = output_size

        self.W = self.add_param(W, self.get_W_shape(), name="W")
        if b is None:
            self.b = None
        else:
            if untie_biases:
                bias_shape = (num_filters,) + tuple(self.output_shape[2:])
            else:
                bias_shape = (num_filters,)
            self.b = self.add_param(b, bias_shape, name="b",
                                    regularizable=False)

    def get_W_shape(self):
        """(input channels, num_filters, filter rows, filter cols)."""
        return (self.input_shape[1], self.num_filters) + self.filter_size

    def get_output_shape_for(self, input_shape):
        if self.output_size is not None:
            return (input_shape[0], self.num_filters) + self.output_size
        crops = (self.crop,) * 2 if isinstance(self.crop, str) else self.crop
        return (input_shape[0], self.num_filters) + tuple(
            transposed_conv_length(length, size, step, amount)
            for length, size, step, amount in
            zip(input_shape[2:], self.filter_size, self.stride, crops))

    def get_output_for(self, input, **kwargs):
        out_rows, out_cols = self.output_shape[2:]
        if out_rows is None or out_cols is None:
            out_rows, out_cols = self.get_output_shape_for(input.shape)[2:]
        border_mode = "half" if self.crop == "same" else self.crop
        conved = T.nnet.abstract_conv.conv2d_grad_wrt_inputs(
            input, self.W,
            input_shape=(None, self.num_filters, out_rows, out_cols),
            filter_shape=self.get_W_shape(),
            border_mode=border_mode, subsample=self.stride,
            filter_flip=not self.flip_filters)
        if self.b is None:
            activation = conved
        elif self.untie_biases:
            activation = conved + self.b.dimshuffle("x", 0, 1, 2)
        else:
            activation = conved + self.b.dimshuffle("x", 0, "x", "x")
        return self.nonlinearity(activation)


def adam(loss_or_grads, params, learning_rate=0.001, beta1=0.9, beta2=0.999,
         epsilon=1e-8):
    """Adam updates (Kingma and Ba, 2014) with Lasagne master's float32 arithmetic.

    Returns an OrderedDict of updates: for each parameter p with gradient g,
    m := beta1 m + (1 - beta1) g, v := beta2 v + (1 - beta2) g^2 and
    p := p - a_t m / (sqrt(v) + epsilon), where a_t = learning_rate
    sqrt(1 - beta2^t) / (1 - beta1^t) at step t (counted in a shared scalar).
    Every "1 -" subtracts from an integer Theano constant, so that with float32
    betas nothing is computed in double (master's ``one = T.constant(1)``).
    """
    grads = lasagne.updates.get_or_compute_grads(loss_or_grads, params)
    one = T.constant(1)
    step_before = theano.shared(lasagne.utils.floatX(0.0))
    step = step_before + 1
    rate = learning_rate * T.sqrt(one - beta2 ** step) / (one - beta1 ** step)
    updates = OrderedDict()
    for param, grad in zip(params, grads):
        value = param.get_value(borrow=True)
        first, second = (theano.shared(np.zeros(value.shape, dtype=value.dtype),
                                       broadcastable=param.broadcastable)
                         for _ in range(2))
        new_first = beta1 * first + (one - beta1) * grad
        new_second = beta2 * second + (one - beta2) * grad ** 2
        updates[first] = new_first
        updates[second] = new_second
        updates[param] = param - rate * new_first / (T.sqrt(new_second) + epsilon)
    updates[step_before] = step
    return updates


if BACKPORTED:
    lasagne.updates.adam = adam
    lasagne.layers.Upscale2DLayer = Upscale2DLayer
    lasagne.layers.TransposedConv2DLayer = TransposedConv2DLayer
    lasagne.layers.Deconv2DLayer = TransposedConv2DLayer
    # 0.1's Conv2DLayer always convolves with flipped filters (Theano's conv2d
    # default), which is what master calls flip_filters=True.
    lasagne.layers.Conv2DLayer.flip_filters = True
