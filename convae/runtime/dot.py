"""The dense layers' matrix products on every core (the C is ``c_code/dot.c``).

Theano's ``Dot22`` and ``Dot22Scalar`` make one BLAS call, and convae runs
OpenBLAS on one thread (its own threads fought OpenMP's for the cores; see
``convae.runtime.enable``): the post's dense layers then used one core for
their eight products of a training step. ``ParallelDot`` splits the rows of
the product over OpenMP's threads, each making one single-threaded OpenBLAS
call on its part; ``convae.runtime.rewrites`` swaps it in.
"""
import numpy as np
import theano
import theano.tensor as T

from convae.runtime.base import BlasFloat32Op


class ParallelDot(BlasFloat32Op):
    """scale * x . y for float32 matrices x (M, K) and y (K, N): (M, N).

    scale: a Python float (Dot22Scalar's constant), 1.0 for Dot22.
    trans_x, trans_y: the op is given x.T (K, M) or y.T (N, K) instead, the
    variables a transposing dimshuffle was taken of, so that the product reads
    them as they are (a layer's W.T, the batch's x.T) rather than a copy.
    """

    __props__ = ("scale", "trans_x", "trans_y")
    c_files = ("blas.h", "dot.c")

    def __init__(self, scale=1.0, trans_x=False, trans_y=False, openmp=None):
        super().__init__(openmp=openmp)
        self.scale, self.trans_x, self.trans_y = float(scale), bool(trans_x), bool(trans_y)

    def make_node(self, x, y):
        x, y = T.as_tensor_variable(x), T.as_tensor_variable(y)
        if (x.ndim, y.ndim, x.dtype, y.dtype) != (2, 2, "float32", "float32"):
            raise TypeError("ParallelDot takes two float32 matrices")
        rows = x.broadcastable[1 if self.trans_x else 0]
        cols = y.broadcastable[0 if self.trans_y else 1]
        return theano.Apply(self, [x, y], [T.TensorType("float32", (rows, cols))()])

    def perform(self, node, inputs, outputs):
        x, y = inputs
        x, y = (x.T if self.trans_x else x), (y.T if self.trans_y else y)
        outputs[0][0] = (np.float32(self.scale) * np.dot(x, y)).astype("float32")

    def infer_shape(self, node, shapes):
        (x0, x1), (y0, y1) = shapes
        return [(x1 if self.trans_x else x0, y0 if self.trans_y else y1)]

    def body(self):
        return """
        const npy_intp* xd = PyArray_DIMS(in0);
        const npy_intp* yd = PyArray_DIMS(in1);
        const npy_intp M = xd[%(trans_x)d], K = xd[1 - %(trans_x)d];
        const npy_intp N = yd[1 - %(trans_y)d];
        if (yd[%(trans_y)d] != K) {
            PyErr_SetString(PyExc_ValueError, "ParallelDot: shapes do not fit");
            %(fail)s
        }
        const npy_intp dims[2] = {M, N};
        if (convae_prepare(&%(out)s, 2, dims)) %(fail)s
        convae_dot((const float*)PyArray_DATA(in0), (const float*)PyArray_DATA(in1),
                   (float*)PyArray_DATA(%(out)s), M, K, N, (float)%(scale)r,
                   %(trans_x)d, %(trans_y)d);
        """
