"""Faster execution of the same graph: what convae changes in how Theano runs it.

None of this changes the network or what it computes; each piece is a choice
about *how* Theano executes the graph, made through Theano's own extension
points, and all of it is switched off by setting ``CONVAE_FAST=0`` in the
environment before importing convae (to compare, or to rule it out):

* ``openmp=True`` (a Theano flag, added in ``convae.theano_setup`` unless the
  user set it): the gemm-based convolutions split the batch over the cores.
* OpenBLAS runs single-threaded (unless ``OPENBLAS_NUM_THREADS`` is set):
  the convolutions already split the batch over the cores with OpenMP, and
  OpenBLAS's own threads, waking for the small dense products, fought
  libgomp's spinning threads for the same two cores (every op got slower).
* glibc's malloc is told to keep freed memory and not to serve the large
  per-batch temporaries with fresh ``mmap`` calls, which otherwise cost a
  page-fault storm on every batch.
* float32 ``tanh`` is computed in single precision by a vectorised loop
  (``Float32Tanh``, on all cores): Theano's C code casts every value to
  double and calls ``tanh`` one at a time, which made tanh the largest single
  cost of a training step. Where tanh's (or rectify's) input is a layer's
  output plus its bias, ``BiasActivation`` adds the bias in the same pass.
  The graph rewrite runs before Theano's elementwise fusion (whose strided
  loops gcc does not vectorise).
* the convolutions (Theano's ``CorrMM`` and its two gradients) run as
  ``BatchedCorr`` (``convae.fastconv``): direct AVX2 kernels, or one matrix
  product per chunk of images instead of one per image;
* ``repeat`` (upscaling) and its gradient, 2x2 max pooling and its gradient,
  and the bias gradients run as plain contiguous loops on all cores
  (``convae.fastops``);
* Theano 1.0.5's compile cache misses in two ways on Python 3, so every new
  process recompiled a few modules (about 6 s of each warm start here): it
  never caches the module of an op whose ``__props__`` is empty (``Dot22``,
  ``Alloc``, ``DotModulo``, ...), mistaking the empty tuple for a missing
  version; and it versions ``COp`` modules (``DimShuffle``, ...) by Python's
  ``hash`` of their C source, which is salted afresh in every process. convae
  versions the first by their ops' and types' own cache versions and the
  second by a SHA-256 of the source, so each module is compiled once.
* the training command's compiled functions are kept for the next process
  (``convae.function_cache``, used by ``convae.train``), so that a warm start
  skips Theano's graph optimiser.

The graph rewrites carry the tag ``convae_fast`` in Theano's optimizer
database: ``mode.excluding("convae_fast")`` leaves them out of one function.
"""
import ctypes
import hashlib
import os

import numpy as np
import theano
import theano.tensor as T
from theano.gof import COp
from theano.gof.cc import CLinker

from convae import fastconv, fastops
from convae.theano_setup import fast_path_enabled

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc():
    """Keep freed per-batch temporaries in the heap instead of returning them to the OS.

    Blocks up to 128 MiB (a layer's output up to batch ~3000) come from the
    heap and are reused batch after batch; larger ones, such as the dataset
    arrays, still get their own mapping, which the kernel can back with huge
    pages (serving those from the heap made loading MNIST ten times slower).
    Returns True if glibc accepted the settings (False elsewhere, e.g. musl).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 128 << 20),   # mmap only blocks over 128 MiB
        (_M_TRIM_THRESHOLD, 1 << 30),     # give memory back only beyond 1 GiB free
        (_M_TOP_PAD, 64 << 20),           # grow the heap 64 MiB at a time
    ))


def single_threaded_blas():
    """Ask OpenBLAS for one thread, unless the user chose; True if set here.

    Takes effect because Theano loads OpenBLAS with its first compiled module,
    after ``import convae``.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


def libmvec_has_tanhf():
    """True if glibc's vector math library (2.35 and newer) has SIMD tanhf."""
    try:
        return hasattr(ctypes.CDLL("libmvec.so.1"), "_ZGVbN4v_tanhf")
    except OSError:
        return False


VECTOR_TANHF = libmvec_has_tanhf()


class Float32Tanh(theano.gof.OpenMPOp):
    """Elementwise tanh of a float32 tensor in single precision, any shape.

    Theano's own C code casts each value to double and calls ``tanh``. This
    op calls C's ``tanhf`` over the whole (C-contiguous) array in one loop;
    where glibc has SIMD variants of tanhf (libmvec, glibc 2.35 and newer),
    declaring them lets gcc vectorise that loop: glibc's scalar tanhf branches
    on its argument and costs about 20 ns a value on real activations, the
    SIMD one about 1. Gradient: g * (1 - tanh(x)^2).
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

    def c_support_code(self):
        if not VECTOR_TANHF:
            return ""
        return ('extern "C" __attribute__((__simd__("notinbranch"))) '
                'float tanhf(float) throw();')

    def c_code(self, node, name, inputs, outputs, sub):
        return """
        {
        PyArrayObject* x_contiguous = PyArray_GETCONTIGUOUS(%(x)s);
        if (x_contiguous == NULL) %(fail)s
        if (%(z)s == NULL || !PyArray_SAMESHAPE(%(z)s, x_contiguous)
                || !PyArray_IS_C_CONTIGUOUS(%(z)s)) {
            Py_XDECREF(%(z)s);
            %(z)s = (PyArrayObject*)PyArray_EMPTY(PyArray_NDIM(x_contiguous),
                PyArray_DIMS(x_contiguous), NPY_FLOAT32, 0);
            if (%(z)s == NULL) { Py_DECREF(x_contiguous); %(fail)s }
        }
        {
            const float* in = (const float*)PyArray_DATA(x_contiguous);
            float* out = (float*)PyArray_DATA(%(z)s);
            const npy_intp size = PyArray_SIZE(x_contiguous), block = 16384;
            #pragma omp parallel for schedule(static) if (size > 4 * block)
            for (npy_intp start = 0; start < size; start += block) {
                const npy_intp end = start + block < size ? start + block : size;
                for (npy_intp i = start; i < end; i++)
                    out[i] = tanhf(in[i]);
            }
        }
        Py_DECREF(x_contiguous);
        }
        """ % dict(x=inputs[0], z=outputs[0], fail=sub["fail"])

    def c_code_cache_version(self):
        return (2, VECTOR_TANHF, self.openmp)


float32_tanh = Float32Tanh()


class BiasActivation(Float32Tanh):
    """activation(x + b) for float32 x (N, C, ...) and a bias b (C,) per channel, in one pass.

    activation: 'tanh' (single-precision SIMD tanh, as Float32Tanh) or
    'relu' (0.5 * (v + |v|), Theano's and Lasagne's rectify, to the bit).
    What a layer's ``activation(output + b.dimshuffle('x', 0, 'x', 'x'))``
    computes, without Theano's separate broadcasting add (a slow strided loop
    that wrote the whole layer output once more). Put in after gradients are
    built, so it has no gradient of its own.
    """

    __props__ = ("activation",)
    EXPRESSIONS = {"tanh": "tanhf({})", "relu": "0.5f * ({0} + fabsf({0}))"}

    def __init__(self, activation, openmp=None):
        super().__init__(openmp=openmp)
        if activation not in self.EXPRESSIONS:
            raise ValueError("activation must be 'tanh' or 'relu'")
        self.activation = activation

    def make_node(self, x, b):
        x, b = T.as_tensor_variable(x), T.as_tensor_variable(b)
        if x.dtype != "float32" or b.dtype != "float32" or x.ndim < 2 or b.ndim != 1:
            raise TypeError("BiasActivation takes float32 x (N, C, ...) and b (C,)")
        return theano.Apply(self, [x, b], [x.type()])

    def perform(self, node, inputs, outputs):
        x, b = inputs
        v = x + b.reshape((1, -1) + (1,) * (x.ndim - 2))
        outputs[0][0] = np.tanh(v) if self.activation == "tanh" else 0.5 * (v + abs(v))

    def grad(self, inputs, output_grads):
        raise NotImplementedError("BiasActivation is put in after gradients are built")

    def infer_shape(self, node, shapes):
        return shapes[:1]

    def c_code(self, node, name, inputs, outputs, sub):
        expression = self.EXPRESSIONS[self.activation]
        return """
        {
        PyArrayObject* x = PyArray_GETCONTIGUOUS(%(x)s);
        PyArrayObject* b = PyArray_GETCONTIGUOUS(%(b)s);
        if (x == NULL || b == NULL) { Py_XDECREF(x); Py_XDECREF(b); %(fail)s }
        if (PyArray_DIMS(b)[0] != PyArray_DIMS(x)[1]) {
            PyErr_SetString(PyExc_ValueError, "BiasActivation: one bias per channel");
            Py_DECREF(x); Py_DECREF(b); %(fail)s
        }
        if (%(z)s == NULL || !PyArray_SAMESHAPE(%(z)s, x) || !PyArray_IS_C_CONTIGUOUS(%(z)s)) {
            Py_XDECREF(%(z)s);
            %(z)s = (PyArrayObject*)PyArray_EMPTY(PyArray_NDIM(x), PyArray_DIMS(x),
                                                  NPY_FLOAT32, 0);
            if (%(z)s == NULL) { Py_DECREF(x); Py_DECREF(b); %(fail)s }
        }
        {
            const float* in = (const float*)PyArray_DATA(x);
            const float* bias = (const float*)PyArray_DATA(b);
            float* out = (float*)PyArray_DATA(%(z)s);
            const npy_intp channels = PyArray_DIMS(x)[1];
            const npy_intp planes = PyArray_DIMS(x)[0] * channels;
            const npy_intp plane = planes ? PyArray_SIZE(x) / planes : 0;
            if (plane == 1) {  /* (N, C): one SIMD loop along each row */
                for (npy_intp n = 0; n < PyArray_DIMS(x)[0]; n++)
                    for (npy_intp c = 0; c < channels; c++) {
                        const float v = in[n * channels + c] + bias[c];
                        out[n * channels + c] = %(f)s;
                    }
            } else {
                #pragma omp parallel for schedule(static) if (planes * plane > 65536)
                for (npy_intp q = 0; q < planes; q++) {
                    const float shift = bias[q %% channels];
                    const float* src = in + q * plane;
                    float* dst = out + q * plane;
                    for (npy_intp i = 0; i < plane; i++) {
                        const float v = src[i] + shift;
                        dst[i] = %(f)s;
                    }
                }
            }
        }
        Py_DECREF(x); Py_DECREF(b);
        }
        """ % dict(x=inputs[0], b=inputs[1], z=outputs[0], fail=sub["fail"],
                   f=expression.format("v"))

    def c_code_cache_version(self):
        return (1, VECTOR_TANHF, self.openmp)


def channel_bias(var):
    """b if var is b.dimshuffle('x', 0, 'x', ...) of a vector b, else None."""
    owner = var.owner
    if (owner is not None and isinstance(owner.op, T.DimShuffle)
            and owner.inputs[0].ndim == 1
            and owner.op.new_order == ("x", 0) + ("x",) * (var.ndim - 2)):
        return owner.inputs[0]
    return None


def elemwise_node(var, scalar_op_class):
    """The Apply node of var if var = Elemwise{scalar_op_class}(...), else None."""
    owner = var.owner
    if (owner is not None and isinstance(owner.op, T.Elemwise)
            and isinstance(owner.op.scalar_op, scalar_op_class)):
        return owner
    return None


def with_channel_bias(var):
    """(x, b) if var = x + b.dimshuffle('x', 0, 'x', ...) with b float32, else None."""
    add = elemwise_node(var, theano.scalar.Add)
    if add is None or len(add.inputs) != 2:
        return None
    for value, shift in (add.inputs, add.inputs[::-1]):
        bias = channel_bias(shift)
        if bias is not None and value.type == var.type and bias.dtype == "float32":
            return value, bias
    return None


@theano.gof.local_optimizer([T.mul])
def local_relu_bias(node):
    """Replace 0.5 * (s + |s|), s = x + a per-channel bias, by BiasActivation('relu')
    where nothing else uses s. Theano may have moved a dimshuffle that adds a
    broadcastable axis (after the channel axis) from the output onto x: it is
    moved back."""
    out = node.outputs[0]
    if (elemwise_node(out, theano.scalar.Mul) is None or len(node.inputs) != 2
            or out.dtype != "float32"):
        return False
    for half, total in (node.inputs, node.inputs[::-1]):
        add = elemwise_node(total, theano.scalar.Add)
        if (not isinstance(half, T.TensorConstant) or not np.all(half.data == 0.5)
                or not all(half.broadcastable) or add is None or len(add.inputs) != 2):
            continue
        for s, absolute in (add.inputs, add.inputs[::-1]):
            magnitude = elemwise_node(absolute, theano.scalar.Abs)
            found = with_channel_bias(s)
            if magnitude is None or magnitude.inputs[0] is not s or found is None \
                    or len(s.clients) != 2:
                continue
            value, bias = found
            view = value.owner
            if (view is not None and isinstance(view.op, T.DimShuffle)
                    and view.op.new_order[:2] == (0, 1)
                    and [d for d in view.op.new_order if d != "x"]
                    == list(range(view.inputs[0].ndim))):
                result = BiasActivation("relu")(view.inputs[0], bias).dimshuffle(
                    view.op.new_order)
            else:
                result = BiasActivation("relu")(value, bias)
            if result.type == out.type:
                return [result]
    return False


@theano.gof.local_optimizer([T.tanh])
def local_float32_tanh(node):
    """Replace Elemwise{tanh} on float32 by Float32Tanh, or by BiasActivation
    where its input is x + a per-channel bias that nothing else uses."""
    if not (isinstance(node.op, T.Elemwise)
            and isinstance(node.op.scalar_op, theano.scalar.Tanh)
            and node.inputs[0].dtype == "float32"):
        return False
    (x,) = node.inputs
    found = with_channel_bias(x)
    if found is not None and len(x.clients) == 1:
        return [BiasActivation("tanh")(*found)]
    return [float32_tanh(x)]


def cache_version(linker, fgraph):
    """The C-module cache version of fgraph, ignoring ops' empty ``__props__``.

    A tuple of every op's and every input's and output's type's
    ``c_code_cache_version``, or () if any of them is unversioned.
    """
    version = []
    for node in linker.schedule(fgraph):
        version.append(node.op.c_code_cache_version_apply(node))
        version.extend(v.type.c_code_cache_version()
                       for v in node.inputs + node.outputs)
    return tuple(version) if all(version) else ()


def cop_cache_version(op):
    """A COp's cache version: a SHA-256 of its C source, the same in every process."""
    source = hashlib.sha256("\0".join(op.func_codes).encode()).hexdigest()
    version = (source,)
    if hasattr(op, "params_type"):
        version += (op.params_type.c_code_cache_version(),)
    return version


def fix_module_cache():
    """Make Theano's compile cache hit for modules it recompiles in every process."""
    theano_key = CLinker.cmodule_key_

    def cmodule_key_(self, fgraph, *args, **kwargs):
        key = theano_key(self, fgraph, *args, **kwargs)
        if key is None or key[0] != ():
            return key
        version = cache_version(self, fgraph)
        return (version + ("convae: empty __props__",), key[1]) if version else key

    CLinker.cmodule_key_ = cmodule_key_
    COp.c_code_cache_version = cop_cache_version


def enable():
    """Register the graph rewrite, fix module caching, set threads and malloc; a no-op if CONVAE_FAST=0."""
    if not fast_path_enabled() or "convae_float32_tanh" in theano.compile.optdb.__db__:
        return
    tune_malloc()
    single_threaded_blas()
    fix_module_cache()
    # Position 48.6: after the canonical and specialising passes, just before
    # elementwise fusion (49) would hide tanh inside fused loops.
    theano.compile.optdb.register(
        "convae_float32_tanh", theano.gof.opt.in2out(local_float32_tanh, local_relu_bias),
        48.6, "fast_run", "convae_fast")
    # After specialize_device (48.6), where Theano chooses CorrMM.
    theano.compile.optdb.register(
        "convae_batched_corr", theano.gof.opt.in2out(fastconv.local_batched_corr),
        48.65, "fast_run", "convae_fast")
    theano.compile.optdb.register(
        "convae_contiguous_ops", theano.gof.opt.in2out(fastops.local_contiguous_ops),
        48.66, "fast_run", "convae_fast")
