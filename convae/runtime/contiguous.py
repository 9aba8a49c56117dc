"""Multi-core C loops over contiguous float32 data for the post's elementwise,
upscaling, pooling and summing steps (the C is ``c_code/contiguous.c``).

Theano computes float32 ``tanh`` in double precision one value at a time,
adds a layer's bias in a separate strided loop, builds ``repeat`` (what
``Upscale2DLayer`` calls) as an ``Alloc`` of a broadcast view, which NumPy
fills two floats at a time, sums its gradient and the bias gradients one
dependent add after another, and walks any pooling window one element at a
time. Each op here computes the same values with one plain loop, split over
the cores with OpenMP; ``convae.runtime.rewrites`` swaps them in:

* ``Float32Tanh``: tanh in single precision, vectorised where glibc has SIMD
  ``tanhf`` (libmvec, glibc 2.35 and newer; about 1 ns a value instead of 20);
* ``BiasActivation(activation)``: tanh, rectify or nothing of x plus a
  per-channel bias;
* ``BiasActivationMaxPool2x2(activation)``: the same, then 2x2 max pooling,
  without writing the activations out (where nothing else reads them);
* ``Repeat(axis, times)``: x with a new axis of length ``times`` inserted at
  ``axis``, every slice a copy of x (the ``Alloc`` inside ``repeat``);
* ``Upscale2x``: maps (N, C, H, W) upscaled to (N, C, 2H, 2W), each value
  a 2x2 block: what ``Upscale2DLayer``'s two calls of ``repeat`` give, in
  one pass;
* ``AxisSum(axis)``: the sum over one axis, accumulated in double precision
  as Theano does, rounded to float32; ``ChannelSum``: likewise over every
  axis but the channels (a bias gradient);
* ``MaxPool2x2`` / ``MaxPool2x2Grad``: 2x2 max pooling with stride 2, no
  padding, trailing odd rows and columns dropped (``ignore_border=True``); the
  gradient goes to every input equal to its window's maximum, as Theano's,
  and where the input is tanh's output can go on through tanh in the same
  pass.
"""
import ctypes

import numpy as np
import theano
import theano.tensor as T

from convae.runtime.base import ContiguousFloat32Op


def libmvec_has_tanhf():
    """True if glibc's vector math library (2.35 and newer) has SIMD tanhf."""
    try:
        return hasattr(ctypes.CDLL("libmvec.so.1"), "_ZGVbN4v_tanhf")
    except OSError:
        return False


def pooled_shape(shape):
    """The shape of 2x2 max pooling's output for an input (N, C, H, W)."""
    n, c, h, w = shape
    return (n, c, h // 2, w // 2)


class Pooled2x2:
    """What the ops whose output is 2x2-pooled in0 share: its shape, in Python and C."""

    # C: xd, in0's shape, and dims, the output's.
    DIMS_C = """
        const npy_intp* xd = PyArray_DIMS(in0);
        const npy_intp dims[4] = {xd[0], xd[1], xd[2] / 2, xd[3] / 2};
        """

    def infer_shape(self, node, shapes):
        return [pooled_shape(shapes[0])]


class OfMaps:
    """What the ops of one float32 tensor of maps (N, C, H, W) share: their node."""

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32" or x.ndim != 4:
            raise TypeError("{} takes a 4-D float32 tensor".format(type(self).__name__))
        return theano.Apply(self, [x], [x.type()])


class ContiguousLoop(ContiguousFloat32Op):
    """An op whose loop is a function of ``c_code/contiguous.c``."""

    c_files = ("contiguous.c",)
    c_defines = ("CONVAE_VECTOR_TANHF",) if libmvec_has_tanhf() else ()


class Float32Tanh(ContiguousLoop):
    """Elementwise tanh of a float32 tensor in single precision, any shape.

    Gradient: g * (1 - tanh(x)^2).
    """

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32":
            raise TypeError("Float32Tanh takes float32, not " + x.dtype)
        return theano.Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = np.tanh(inputs[0])

    def grad(self, inputs, output_grads):
        y = self(inputs[0])
        return [output_grads[0] * (1 - y * y)]

    def infer_shape(self, node, shapes):
        return shapes

    def body(self):
        return """
        if (convae_prepare(&%(out)s, PyArray_NDIM(in0), PyArray_DIMS(in0))) %(fail)s
        convae_tanh((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                    PyArray_SIZE(in0));
        """


float32_tanh = Float32Tanh()


class BiasActivation(ContiguousLoop):
    """activation(x + b) for float32 x (N, C, ...) and a bias b (C,) per channel, in one pass.

    activation: 'tanh' (single-precision SIMD tanh, as Float32Tanh),
    'relu' (0.5 * (v + |v|), Theano's and Lasagne's rectify, to the bit) or
    'linear' (the sum alone: a bias that Theano adds in a slow strided loop).
    What a layer's ``activation(output + b.dimshuffle('x', 0, 'x', 'x'))``
    computes, without Theano's separate broadcasting add (a slow strided loop
    that wrote the whole layer output once more). Put in after gradients are
    built, so it has no gradient of its own.
    """

    __props__ = ("activation",)
    C_ACTIVATIONS = {"tanh": "CONVAE_TANH", "relu": "CONVAE_RELU", "linear": "CONVAE_LINEAR"}

    def __init__(self, activation, openmp=None):
        super().__init__(openmp=openmp)
        if activation not in self.C_ACTIVATIONS:
            raise ValueError("activation must be 'tanh', 'relu' or 'linear'")
        self.activation = activation

    def make_node(self, x, b):
        x, b = T.as_tensor_variable(x), T.as_tensor_variable(b)
        if x.dtype != "float32" or b.dtype != "float32" or x.ndim < 2 or b.ndim != 1:
            raise TypeError("BiasActivation takes float32 x (N, C, ...) and b (C,)")
        return theano.Apply(self, [x, b], [x.type()])

    def perform(self, node, inputs, outputs):
        x, b = inputs
        v = x + b.reshape((1, -1) + (1,) * (x.ndim - 2))
        outputs[0][0] = {"tanh": np.tanh, "relu": lambda v: 0.5 * (v + abs(v)),
                         "linear": lambda v: v}[self.activation](v)

    def grad(self, inputs, output_grads):
        raise NotImplementedError("BiasActivation is put in after gradients are built")

    def infer_shape(self, node, shapes):
        return shapes[:1]

    def body(self):
        return """
        const npy_intp n = PyArray_DIMS(in0)[0], channels = PyArray_DIMS(in0)[1];
        if (PyArray_DIMS(in1)[0] != channels) {
            PyErr_SetString(PyExc_ValueError, "BiasActivation: one bias per channel");
            %(fail)s
        }
        if (convae_prepare(&%(out)s, PyArray_NDIM(in0), PyArray_DIMS(in0))) %(fail)s
        convae_bias_activation<""" + self.C_ACTIVATIONS[self.activation] + """>(
            (const float*)PyArray_DATA(in0), (const float*)PyArray_DATA(in1),
            (float*)PyArray_DATA(%(out)s), n, channels,
            n * channels ? PyArray_SIZE(in0) / (n * channels) : 0);
        """


class BiasActivationMaxPool2x2(Pooled2x2, BiasActivation):
    """2x2 max pooling (as MaxPool2x2) of activation(x + b), float32 x (N, C, H, W).

    What a convolution layer followed by pooling computes where nothing else
    needs the layer's own output (evaluation). It pools x + b and activates
    the maxima alone: rounding x + b keeps the order of x and both
    activations increase, so the values are those of BiasActivation then
    MaxPool2x2, to the bit for rectify; for tanh up to 2 ulp where one took
    glibc's vector tanhf and the other its scalar one (at the ends of rows).
    """

    def make_node(self, x, b):
        x, b = T.as_tensor_variable(x), T.as_tensor_variable(b)
        if x.dtype != "float32" or b.dtype != "float32" or x.ndim != 4 or b.ndim != 1:
            raise TypeError("BiasActivationMaxPool2x2 takes float32 x (N, C, H, W) and b (C,)")
        return theano.Apply(self, [x, b], [x.type()])

    def perform(self, node, inputs, outputs):
        super().perform(node, inputs, outputs)
        y = outputs[0][0]
        n, c, h, w = pooled_shape(y.shape)
        outputs[0][0] = y[:, :, :2 * h, :2 * w].reshape(n, c, h, 2, w, 2).max(axis=(3, 5))

    def body(self):
        return self.DIMS_C + """
        if (PyArray_DIMS(in1)[0] != xd[1]) {
            PyErr_SetString(PyExc_ValueError, "BiasActivationMaxPool2x2: one bias per channel");
            %(fail)s
        }
        if (convae_prepare(&%(out)s, 4, dims)) %(fail)s
        convae_bias_activation_max_pool_2x2<""" + self.C_ACTIVATIONS[self.activation] + """>(
            (const float*)PyArray_DATA(in0), (const float*)PyArray_DATA(in1),
            (float*)PyArray_DATA(%(out)s), xd[0], xd[1], xd[2], xd[3]);
        """


class Repeat(ContiguousLoop):
    """x (any shape) -> x with a new axis of length ``times`` at ``axis``, each slice = x."""

    __props__ = ("axis", "times")

    def __init__(self, axis, times, openmp=None):
        super().__init__(openmp=openmp)
        self.axis, self.times = int(axis), int(times)

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32" or not 0 <= self.axis <= x.ndim:
            raise TypeError("Repeat takes float32 and an axis in 0..ndim")
        pattern = list(x.broadcastable)
        pattern.insert(self.axis, self.times == 1)
        return theano.Apply(self, [x], [T.TensorType("float32", pattern)()])

    def infer_shape(self, node, shapes):
        shape = list(shapes[0])
        shape.insert(self.axis, self.times)
        return [tuple(shape)]

    def body(self):
        return """
        const int nd = PyArray_NDIM(in0);
        npy_intp dims[NPY_MAXDIMS], outer, length, inner;
        for (int d = 0, e = 0; d <= nd; d++)
            dims[d] = d == %(axis)d ? %(times)d : PyArray_DIMS(in0)[e++];
        if (convae_prepare(&%(out)s, nd + 1, dims)) %(fail)s
        convae_split(%(out)s, %(axis)d, &outer, &length, &inner);
        convae_repeat((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                      outer, inner, %(times)d);
        """


class Upscale2x(OfMaps, ContiguousLoop):
    """x (N, C, H, W) -> (N, C, 2H, 2W): each value of x in a 2x2 block."""

    __props__ = ()

    def infer_shape(self, node, shapes):
        n, c, h, w = shapes[0]
        return [(n, c, 2 * h, 2 * w)]

    def body(self):
        return """
        const npy_intp* xd = PyArray_DIMS(in0);
        const npy_intp dims[4] = {xd[0], xd[1], 2 * xd[2], 2 * xd[3]};
        if (convae_prepare(&%(out)s, 4, dims)) %(fail)s
        convae_upscale_2x((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                          xd[0] * xd[1] * xd[2], xd[3]);
        """


class AxisSum(ContiguousLoop):
    """Sum of float32 x over ``axis``, accumulated in double, as float32 (one axis fewer)."""

    __props__ = ("axis",)

    def __init__(self, axis, openmp=None):
        super().__init__(openmp=openmp)
        self.axis = int(axis)

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32" or not 0 <= self.axis < x.ndim:
            raise TypeError("AxisSum takes float32 and an axis in 0..ndim-1")
        pattern = list(x.broadcastable)
        del pattern[self.axis]
        return theano.Apply(self, [x], [T.TensorType("float32", pattern)()])

    def infer_shape(self, node, shapes):
        shape = list(shapes[0])
        del shape[self.axis]
        return [tuple(shape)]

    def body(self):
        return """
        const int nd = PyArray_NDIM(in0);
        npy_intp dims[NPY_MAXDIMS], outer, length, inner;
        for (int d = 0, e = 0; d < nd; d++)
            if (d != %(axis)d) dims[e++] = PyArray_DIMS(in0)[d];
        convae_split(in0, %(axis)d, &outer, &length, &inner);
        if (convae_prepare(&%(out)s, nd - 1, dims)) %(fail)s
        convae_axis_sum((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                        outer, length, inner);
        """


class ChannelSum(ContiguousLoop):
    """Sum of float32 x (N, C, ...) over every axis but 1, accumulated in double, as (C,).

    A layer's bias gradient; the channels are split over the cores.
    """

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32" or x.ndim < 2:
            raise TypeError("ChannelSum takes float32 with at least 2 axes")
        return theano.Apply(self, [x], [T.TensorType("float32", (x.broadcastable[1],))()])

    def infer_shape(self, node, shapes):
        return [(shapes[0][1],)]

    def body(self):
        return """
        npy_intp outer, channels, inner;
        convae_split(in0, 1, &outer, &channels, &inner);
        if (convae_prepare(&%(out)s, 1, &channels)) %(fail)s
        convae_channel_sum((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                           outer, channels, inner);
        """


class MaxPool2x2(Pooled2x2, OfMaps, ContiguousLoop):
    """x (N, C, H, W) -> (N, C, H // 2, W // 2): the maximum of each 2x2 block."""

    __props__ = ()

    def body(self):
        return self.DIMS_C + """
        if (convae_prepare(&%(out)s, 4, dims)) %(fail)s
        convae_max_pool_2x2((const float*)PyArray_DATA(in0), (float*)PyArray_DATA(%(out)s),
                            xd[0] * xd[1], xd[2], xd[3]);
        """


class MaxPool2x2Grad(ContiguousLoop):
    """(x, maxout, gz) -> gx, shaped like x: gz goes to every x equal to its 2x2 block's maximum.

    through_tanh: x is tanh's output, and gx is multiplied by tanh's
    derivative, 1 - x * x: the gradient for the input of a tanh layer that
    is pooled, without writing pooling's gradient out and reading it back.
    """

    __props__ = ("through_tanh",)

    def __init__(self, through_tanh=False, openmp=None):
        super().__init__(openmp=openmp)
        self.through_tanh = bool(through_tanh)

    def make_node(self, x, maxout, gz):
        x, maxout, gz = (T.as_tensor_variable(v) for v in (x, maxout, gz))
        if any(v.dtype != "float32" or v.ndim != 4 for v in (x, maxout, gz)):
            raise TypeError("MaxPool2x2Grad takes three 4-D float32 tensors")
        return theano.Apply(self, [x, maxout, gz], [x.type()])

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def body(self):
        return """
        const npy_intp* xd = PyArray_DIMS(in0);
        const npy_intp pooled[4] = {xd[0], xd[1], xd[2] / 2, xd[3] / 2};
        if (!PyArray_CompareLists(PyArray_DIMS(in1), pooled, 4)
                || !PyArray_CompareLists(PyArray_DIMS(in2), pooled, 4)) {
            PyErr_SetString(PyExc_ValueError, "MaxPool2x2Grad: shapes do not fit");
            %(fail)s
        }
        if (convae_prepare(&%(out)s, 4, xd)) %(fail)s
        convae_max_pool_2x2_grad<""" + ("true" if self.through_tanh else "false") + """>(
                                 (const float*)PyArray_DATA(in0),
                                 (const float*)PyArray_DATA(in1),
                                 (const float*)PyArray_DATA(in2),
                                 (float*)PyArray_DATA(%(out)s), xd[0] * xd[1], xd[2], xd[3]);
        """
