"""Contiguous, multi-core C loops for the post's upscaling and 2x2 max pooling.

Theano builds ``repeat`` (what ``Upscale2DLayer`` calls) as an ``Alloc`` of a
broadcast view, which NumPy fills two floats at a time, and its gradient as a
float64-accumulated ``Sum`` over the repeated axis; its max pooling and
max-pooling gradient walk any window shape one element at a time. For the
post's network these took about a fifth of a training step. Each op here
computes the same values with one plain loop over C-contiguous float32 data,
split over the cores with OpenMP; ``convae.fast`` swaps them in with the
rewrites below, for the cases they cover:

* ``Repeat(axis, times)``: x with a new axis of length ``times`` inserted at
  ``axis``, every slice a copy of x (the ``Alloc`` inside ``repeat``);
* ``AxisSum(axis)``: the sum over one axis, accumulated in double precision
  as Theano does, rounded to float32; ``ChannelSum``: likewise over every
  axis but the channels (a bias gradient);
* ``MaxPool2x2`` / ``MaxPool2x2Grad``: 2x2 max pooling with stride 2, no
  padding, trailing odd rows and columns dropped (``ignore_border=True``); the
  gradient goes to every input equal to its window's maximum, as Theano's.
"""
import hashlib

import theano
import theano.tensor as T
from theano.tensor.signal.pool import MaxPoolGrad, Pool

HELPERS = r"""
/* Outer (before axis), length (of axis) and inner (after axis) sizes. */
static void convae_split(PyArrayObject* a, int axis, npy_intp* outer,
                         npy_intp* length, npy_intp* inner)
{
    *outer = 1; *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= PyArray_DIMS(a)[d];
    *length = PyArray_DIMS(a)[axis];
    for (int d = axis + 1; d < PyArray_NDIM(a); d++) *inner *= PyArray_DIMS(a)[d];
}

/* Make *out a C-contiguous float32 array of shape dims, reusing it if it is one. */
static int convae_prepare(PyArrayObject** out, int nd, npy_intp* dims)
{
    if (*out == NULL || PyArray_NDIM(*out) != nd || !PyArray_IS_C_CONTIGUOUS(*out)
            || !PyArray_CompareLists(PyArray_DIMS(*out), dims, nd)) {
        Py_XDECREF(*out);
        *out = (PyArrayObject*)PyArray_EMPTY(nd, dims, NPY_FLOAT32, 0);
    }
    return *out == NULL ? -1 : 0;
}
"""


class ContiguousFloat32Op(theano.gof.OpenMPOp):
    """Shared plumbing: float32 inputs made C-contiguous, C code with OpenMP.

    Subclasses give ``__props__``, ``make_node``, ``infer_shape`` and
    ``body``: C code that reads the contiguous inputs ``in0``, ``in1``, ...
    and fills ``%(out)s`` (``%(fail)s`` on error).
    """

    def c_headers(self):
        return ["<string.h>"] + super().c_headers()

    def c_support_code(self):
        return HELPERS

    def c_code(self, node, name, inputs, outputs, sub):
        grab = "".join(
            "PyArrayObject* in{0} = PyArray_GETCONTIGUOUS({1});\n".format(i, var)
            for i, var in enumerate(inputs))
        release = "".join("Py_XDECREF(in{});".format(i) for i in range(len(inputs)))
        check = " || ".join("in{} == NULL".format(i) for i in range(len(inputs)))
        fail = "{ " + release + " " + sub["fail"] + " }"
        body = self.body() % dict(out=outputs[0], fail=fail)
        return "{\n" + grab + "if (" + check + ") " + fail + "\n" + body + release + "\n}\n"

    def c_code_cache_version(self):
        source = hashlib.sha256((HELPERS + self.body()).encode()).hexdigest()
        return (source, self.openmp)


class Repeat(ContiguousFloat32Op):
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
        int nd = PyArray_NDIM(in0);
        npy_intp dims[NPY_MAXDIMS], outer = 1, inner = 1;
        for (int d = 0, e = 0; d <= nd; d++)
            dims[d] = d == %(axis)d ? %(times)d : PyArray_DIMS(in0)[e++];
        for (int d = 0; d < %(axis)d; d++) outer *= PyArray_DIMS(in0)[d];
        for (int d = %(axis)d; d < nd; d++) inner *= PyArray_DIMS(in0)[d];
        if (convae_prepare(&%%(out)s, nd + 1, dims)) %%(fail)s
        const float* x = (const float*)PyArray_DATA(in0);
        float* y = (float*)PyArray_DATA(%%(out)s);
        #pragma omp parallel for schedule(static) if (outer * inner > 65536)
        for (npy_intp o = 0; o < outer; o++) {
            if (inner == 1) {
                for (int t = 0; t < %(times)d; t++)
                    y[o * %(times)d + t] = x[o];
                continue;
            }
            for (int t = 0; t < %(times)d; t++)
                memcpy(y + (o * %(times)d + t) * inner, x + o * inner,
                       inner * sizeof(float));
        }
        """ % dict(axis=self.axis, times=self.times)


class AxisSum(ContiguousFloat32Op):
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
        int nd = PyArray_NDIM(in0);
        npy_intp dims[NPY_MAXDIMS], outer, length, inner;
        for (int d = 0, e = 0; d < nd; d++)
            if (d != %(axis)d) dims[e++] = PyArray_DIMS(in0)[d];
        convae_split(in0, %(axis)d, &outer, &length, &inner);
        if (convae_prepare(&%%(out)s, nd - 1, dims)) %%(fail)s
        const float* x = (const float*)PyArray_DATA(in0);
        float* y = (float*)PyArray_DATA(%%(out)s);
        /* 64 sums at a time, each its own double, so that no sum waits for
           the one before: 64 inner positions of one outer index, or where
           there is one inner position (a repeat's gradient: sums of
           neighbours), 64 outer indices. Block b, element j, summand t. */
        const npy_intp per_outer = (inner + 63) / 64;
        const npy_intp blocks = inner == 1 ? (outer + 63) / 64 : outer * per_outer;
        #pragma omp parallel for schedule(static) if (outer * length * inner > 65536)
        for (npy_intp b = 0; b < blocks; b++) {
            const npy_intp o = inner == 1 ? b * 64 : b / per_outer;
            const npy_intp i0 = inner == 1 ? 0 : b %%%% per_outer * 64;
            const npy_intp left = inner == 1 ? outer - o : inner - i0;
            const npy_intp n = left < 64 ? left : 64;
            const npy_intp stride_j = inner == 1 ? length : 1;
            const float* first = x + o * length * inner + i0;
            double sums[64];
            for (npy_intp j = 0; j < n; j++) sums[j] = 0;
            for (npy_intp t = 0; t < length; t++)
                for (npy_intp j = 0; j < n; j++)
                    sums[j] += first[t * inner + j * stride_j];
            for (npy_intp j = 0; j < n; j++)
                y[o * inner + i0 + j] = (float)sums[j];
        }
        """ % dict(axis=self.axis)


class ChannelSum(ContiguousFloat32Op):
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
        const float* x = (const float*)PyArray_DATA(in0);
        float* y = (float*)PyArray_DATA(%(out)s);
        #pragma omp parallel for schedule(static) if (outer * channels * inner > 65536)
        for (npy_intp c = 0; c < channels; c++) {
            double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};  /* 8 sums: a SIMD loop */
            for (npy_intp o = 0; o < outer; o++) {
                const float* plane = x + (o * channels + c) * inner;
                npy_intp i = 0;
                for (; i + 8 <= inner; i += 8)
                    for (int l = 0; l < 8; l++)
                        lanes[l] += plane[i + l];
                for (; i < inner; i++)
                    lanes[0] += plane[i];
            }
            y[c] = (float)(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                           + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])));
        }
        """


class MaxPool2x2(ContiguousFloat32Op):
    """x (N, C, H, W) -> (N, C, H // 2, W // 2): the maximum of each 2x2 block."""

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32" or x.ndim != 4:
            raise TypeError("MaxPool2x2 takes a 4-D float32 tensor")
        return theano.Apply(self, [x], [x.type()])

    def infer_shape(self, node, shapes):
        n, c, h, w = shapes[0]
        return [(n, c, h // 2, w // 2)]

    def body(self):
        return """
        const npy_intp* xd = PyArray_DIMS(in0);
        npy_intp dims[4] = {xd[0], xd[1], xd[2] / 2, xd[3] / 2};
        if (convae_prepare(&%(out)s, 4, dims)) %(fail)s
        const npy_intp planes = xd[0] * xd[1], H = xd[2], W = xd[3];
        const npy_intp oh = dims[2], ow = dims[3];
        const float* x = (const float*)PyArray_DATA(in0);
        float* y = (float*)PyArray_DATA(%(out)s);
        #pragma omp parallel for schedule(static) if (planes * H * W > 65536)
        for (npy_intp p = 0; p < planes; p++)
            for (npy_intp r = 0; r < oh; r++) {
                const float* top = x + (p * H + 2 * r) * W;
                const float* bottom = top + W;
                float* out = y + (p * oh + r) * ow;
                for (npy_intp c = 0; c < ow; c++) {
                    float a = top[2 * c] > top[2 * c + 1] ? top[2 * c] : top[2 * c + 1];
                    float b = bottom[2 * c] > bottom[2 * c + 1] ? bottom[2 * c] : bottom[2 * c + 1];
                    out[c] = a > b ? a : b;
                }
            }
        """


class MaxPool2x2Grad(ContiguousFloat32Op):
    """(x, maxout, gz) -> gx, shaped like x: gz goes to every x equal to its 2x2 block's maximum."""

    __props__ = ()

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
        npy_intp dims[4] = {xd[0], xd[1], xd[2], xd[3]};
        const npy_intp planes = xd[0] * xd[1], H = xd[2], W = xd[3];
        const npy_intp oh = H / 2, ow = W / 2;
        for (int d = 0; d < 4; d++)
            if (PyArray_DIMS(in1)[d] != (d < 2 ? xd[d] : (d == 2 ? oh : ow))
                    || PyArray_DIMS(in2)[d] != PyArray_DIMS(in1)[d]) {
                PyErr_SetString(PyExc_ValueError, "MaxPool2x2Grad: shapes do not fit");
                %(fail)s
            }
        if (convae_prepare(&%(out)s, 4, dims)) %(fail)s
        const float* x = (const float*)PyArray_DATA(in0);
        const float* m = (const float*)PyArray_DATA(in1);
        const float* g = (const float*)PyArray_DATA(in2);
        float* gx = (float*)PyArray_DATA(%(out)s);
        #pragma omp parallel for schedule(static) if (planes * H * W > 65536)
        for (npy_intp p = 0; p < planes; p++) {
            for (npy_intp r = 0; r < 2 * oh; r++) {
                const float* xr = x + (p * H + r) * W;
                const float* mr = m + (p * oh + r / 2) * ow;
                const float* gr = g + (p * oh + r / 2) * ow;
                float* out = gx + (p * H + r) * W;
                for (npy_intp c = 0; c < ow; c++) {
                    out[2 * c] = xr[2 * c] == mr[c] ? gr[c] : 0.0f;
                    out[2 * c + 1] = xr[2 * c + 1] == mr[c] ? gr[c] : 0.0f;
                }
                if (W %% 2) out[W - 1] = 0.0f;
            }
            if (H %% 2) memset(gx + (p * H + H - 1) * W, 0, W * sizeof(float));
        }
        """


def _constant(var):
    """The value of a Theano constant as a tuple of ints, or None."""
    if isinstance(var, T.TensorConstant):
        return tuple(int(v) for v in var.data.ravel())
    return None


def _is_2x2_pool(op, ws, stride, pad):
    return (op.mode == "max" and op.ignore_border and op.ndim == 2
            and _constant(ws) == (2, 2) and _constant(stride) == (2, 2)
            and _constant(pad) == (0, 0))


@theano.gof.local_optimizer([T.Alloc, T.Sum, Pool, MaxPoolGrad])
def local_contiguous_ops(node):
    """Swap in Repeat, AxisSum, ChannelSum, MaxPool2x2 and MaxPool2x2Grad where
    they compute the same."""
    op, out = node.op, node.outputs[0]
    if out.dtype != "float32" or any(v.dtype != "float32" for v in node.inputs[:1]):
        return False
    if isinstance(op, T.Alloc):
        # repeat's Alloc: a view of x with one length-1 axis, broadcast along
        # that axis to a constant length, every other axis as it is.
        view = node.inputs[0]
        if view.ndim != out.ndim or sum(view.broadcastable) != 1:
            return False
        axis = view.broadcastable.index(True)
        times = _constant(node.inputs[1 + axis])
        if times is None:
            return False
        x = view.dimshuffle([d for d in range(view.ndim) if d != axis])
        new = Repeat(axis, times[0])(x)
    elif isinstance(op, T.Sum):
        x = node.inputs[0]
        if op.axis is None or op.acc_dtype != "float64":
            return False
        if len(op.axis) == 1:
            new = AxisSum(op.axis[0])(x)
        elif x.ndim >= 2 and sorted(op.axis) == [0] + list(range(2, x.ndim)):
            new = ChannelSum()(x)
        else:
            return False
    elif isinstance(op, Pool):
        if not _is_2x2_pool(op, *node.inputs[1:]):
            return False
        new = MaxPool2x2()(node.inputs[0])
    elif isinstance(op, MaxPoolGrad):
        if not _is_2x2_pool(op, *node.inputs[3:]):
            return False
        new = MaxPool2x2Grad()(*node.inputs[:3])
    else:
        return False
    return [new] if new.type == out.type else False
