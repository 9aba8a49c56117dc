"""Faster convolutions: the same three correlations as Theano's CorrMM (C in ``c_code/corr*.c``).

Theano's CPU convolution (``CorrMM`` and its two gradients) unrolls one image
at a time and multiplies it by the filters: for the post's second layer that
is a 32x800 by 800x64 product per image, a shape at which OpenBLAS runs at
about half its peak, after copying every input value 25 times. ``BatchedCorr``
computes the same three correlations two ways:

* where the filters (forward, gradient for the weights) or the input channels
  (gradient for the inputs) come in multiples of 32 and the CPU has AVX-512F,
  or in multiples of 16 and it has AVX2 and FMA (checked at run time), with
  direct kernels (``c_code/corr_simd.c``, for either width with the
  vocabulary of ``c_code/corr_avx512.c`` or ``c_code/corr_avx2.c``): the sums
  for 32 channels of 8 pixels (AVX-512) or 16 channels of 6 pixels (AVX2;
  for short sums, such as the first layer's 25 products, 8 filters of 8
  pixels) stay in vector registers, fed straight from the images with no
  unrolled copy, one image (or for the weights, one cache-sized chunk of
  images) per core at a time;
* for the gradient for the inputs of few channels (the post's last layer,
  with one), where the top's rows are 16 pixels or wider and the filters
  5x5 or 3x3: the sums for 32 top pixels of up to 13 filter taps (AVX-512)
  or 16 top pixels of 5 taps (AVX2) in registers, added into the image tap
  by tap afterwards (``convae_grad_inputs_scatter`` in ``corr_simd.c``);
* otherwise by unrolling a cache-sized chunk of images side by side for one
  larger BLAS product.

Where more than one of these can run a correlation, ``kernel='auto'`` runs
the one measured fastest on this machine for that shape and thread count,
timed on the first call and kept in Theano's compile directory
(``convae.runtime.kernel_choice``).

``convae.runtime.rewrites`` swaps it in for float32 ``CorrMM`` ops with the
post's settings (no padding, stride 1, no dilation, one group); anything else
keeps Theano's op.

Shapes: bottom (N, C, H, W), weights (F, C, kh, kw), top (N, F, H-kh+1,
W-kw+1); correlation means top[n,f,y,x] = sum over c,i,j of
bottom[n,c,y+i,x+j] * weights[f,c,i,j] (no filter flip, as CorrMM).
"""
import theano
import theano.tensor as T

from convae.runtime.base import BlasFloat32Op

# Each direction and kernel, and its name in c_code/corr.c's enums.
DIRECTIONS = {"forward": "CONVAE_FORWARD", "grad_inputs": "CONVAE_GRAD_INPUTS",
              "grad_weights": "CONVAE_GRAD_WEIGHTS"}
KERNELS = {"auto": "CONVAE_AUTO", "avx512": "CONVAE_AVX512", "avx2": "CONVAE_AVX2",
           "blas": "CONVAE_BLAS"}
# The CPU features (/proc/cpuinfo flags) each kernel needs.
KERNEL_FEATURES = {"avx512": ("avx512f",), "avx2": ("avx2", "fma"), "blas": ()}

# Which kernel ran each correlation in this process, as the C code reports it:
# "forward C=32 F=32 12x12 filter 5x5" -> "avx512".
KERNELS_RUN = {}


class BatchedCorr(BlasFloat32Op):
    """One of CorrMM's three valid, stride-1 float32 correlations, by direct kernels or BLAS.

    direction 'forward': (bottom, weights) -> top; 'grad_inputs':
    (weights, top) -> bottom; 'grad_weights': (bottom, top) -> weights. All
    4-D float32, shapes as in the module docstring; the output's
    broadcastable pattern is the one CorrMM's ops give. kernel: 'auto', or
    one of 'avx512' (the CPU has AVX-512F and the channels come in 32s),
    'avx2' (AVX2 and FMA, channels in 16s; either also for the gradient for
    the inputs where the shapes fit its scatter kernel) or 'blas' to force
    it (a ValueError when it cannot run). 'auto' runs the kernel kept for this
    CPU and shape (see convae.runtime.kernel_choice): where more than one
    can run, the first call times each and keeps the fastest, unless it is
    barely faster than the first of those three that can run.
    """

    __props__ = ("direction", "kernel")
    c_files = ("blas.h", "corr_avx2.c", "corr_simd.c", "corr_avx512.c", "corr_simd.c", "corr.c")

    def __init__(self, direction, kernel="auto", openmp=None):
        if direction not in DIRECTIONS:
            raise ValueError("direction must be one of {}".format(tuple(DIRECTIONS)))
        if kernel not in KERNELS:
            raise ValueError("kernel must be one of {}".format(tuple(KERNELS)))
        super().__init__(openmp=openmp)
        self.direction, self.kernel = direction, kernel

    def make_node(self, a, b):
        a, b = T.as_tensor_variable(a), T.as_tensor_variable(b)
        if (a.ndim, b.ndim, a.dtype, b.dtype) != (4, 4, "float32", "float32"):
            raise TypeError("BatchedCorr takes two 4-D float32 tensors")
        if self.direction == "forward":
            broadcastable = (a.broadcastable[0], b.broadcastable[0])
        elif self.direction == "grad_inputs":
            broadcastable = (b.broadcastable[0], a.broadcastable[1])
        else:
            broadcastable = (b.broadcastable[1], a.broadcastable[1])
        out = T.TensorType("float32", broadcastable + (False, False))()
        return theano.Apply(self, [a, b], [out])

    def infer_shape(self, node, shapes):
        (a0, a1, a2, a3), (b0, b1, b2, b3) = shapes
        if self.direction == "forward":
            return [(a0, b0, a2 - b2 + 1, a3 - b3 + 1)]
        if self.direction == "grad_inputs":
            return [(b0, a1, b2 + a2 - 1, b3 + a3 - 1)]
        return [(b1, a1, a2 - b2 + 1, a3 - b3 + 1)]

    def body(self):
        return """
        npy_intp sizes[7], dims[4];
        if (convae_corr_shapes(""" + DIRECTIONS[self.direction] + """, PyArray_DIMS(in0),
                               PyArray_DIMS(in1), sizes, dims)
                || convae_prepare(&%(out)s, 4, dims)) %(fail)s
        if (convae_corr(""" + DIRECTIONS[self.direction] + ", " + KERNELS[self.kernel] + """,
                        (const float*)PyArray_DATA(in0), (const float*)PyArray_DATA(in1),
                        (float*)PyArray_DATA(%(out)s), sizes)) %(fail)s
        """
