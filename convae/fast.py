"""Faster execution of the same graph: what convae changes in how Theano runs it.

None of this changes the network or what it computes; each piece is a choice
about *how* Theano executes the graph, made through Theano's own extension
points, and all of it is switched off by setting ``CONVAE_FAST=0`` in the
environment before importing convae (to compare, or to rule it out):

* ``openmp=True`` (a Theano flag, added in ``convae.theano_setup`` unless the
  user set it): the gemm-based convolutions split the batch over the cores.
* glibc's malloc is told to keep freed memory and not to serve the large
  per-batch temporaries with fresh ``mmap`` calls, which otherwise cost a
  page-fault storm on every batch.
* float32 ``tanh`` runs through NumPy's vectorised kernel instead of Theano's
  C loop, which calls the double-precision ``tanh`` one value at a time (the
  largest single cost of a training step). The graph rewrite is registered in
  Theano's optimizer database under the tag ``convae_fast``.
"""
import ctypes
import os

import numpy as np
import theano
import theano.tensor as T

ENABLED = os.environ.get("CONVAE_FAST", "1") != "0"

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_malloc():
    """Keep large freed blocks in the heap instead of returning them to the OS.

    Returns True if glibc accepted the settings (False elsewhere, e.g. musl).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0),                 # no mmap for large blocks: reuse the heap
        (_M_TRIM_THRESHOLD, 1 << 30),     # give memory back only beyond 1 GiB free
        (_M_TOP_PAD, 64 << 20),           # grow the heap 64 MiB at a time
    ))


class Float32Tanh(theano.Op):
    """Elementwise tanh of a float32 tensor by NumPy's vectorised kernel.

    Same shape in and out. Gradient: g * (1 - tanh(x)^2).
    """

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.dtype != "float32":
            raise TypeError("Float32Tanh takes float32, not " + x.dtype)
        return theano.Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        x, = inputs
        out = outputs[0][0]
        if out is None or out.shape != x.shape:
            out = np.empty(x.shape, dtype=np.float32)
        np.tanh(x, out=out)
        outputs[0][0] = out

    def grad(self, inputs, output_grads):
        y = self(inputs[0])
        return [output_grads[0] * (1 - y * y)]

    def infer_shape(self, node, shapes):
        return shapes


float32_tanh = Float32Tanh()


@theano.gof.local_optimizer([T.tanh])
def local_float32_tanh(node):
    """Replace Elemwise{tanh} on float32 by Float32Tanh."""
    if (isinstance(node.op, T.Elemwise)
            and isinstance(node.op.scalar_op, theano.scalar.Tanh)
            and node.inputs[0].dtype == "float32"):
        return [float32_tanh(node.inputs[0])]
    return False


def enable():
    """Register the graph rewrite and tune malloc; a no-op if CONVAE_FAST=0."""
    if not ENABLED or "convae_float32_tanh" in theano.compile.optdb.__db__:
        return
    tune_malloc()
    # Position 48.6: after the canonical and specialising passes, just before
    # elementwise fusion (49) would hide tanh inside fused loops.
    theano.compile.optdb.register(
        "convae_float32_tanh", theano.gof.opt.in2out(local_float32_tanh),
        48.6, "fast_run", "convae_fast")
