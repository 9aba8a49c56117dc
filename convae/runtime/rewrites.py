"""The graph rewrites that put convae's ops in place of Theano's, and their registration.

Each rewrite replaces a node only where convae's op computes the same thing
(the same shapes, dtypes and settings); everything else keeps Theano's op.
They carry the tag ``convae_fast`` in Theano's optimizer database, so
``mode.excluding("convae_fast")`` leaves them out of one function.
"""
import numpy as np
import theano
import theano.tensor as T
from theano.tensor.blas import Dot22, Dot22Scalar, ldflags
from theano.sandbox.rng_mrg import mrg_uniform
from theano.tensor.nnet.corr import CorrMM, CorrMM_gradInputs, CorrMM_gradWeights
from theano.tensor.signal.pool import MaxPoolGrad, Pool

from convae.runtime.contiguous import (AxisSum, BiasActivation, BiasActivationMaxPool2x2,
                                       ChannelSum, MaxPool2x2, MaxPool2x2Grad, Repeat,
                                       Upscale2x, float32_tanh)
from convae.runtime.corr import BatchedCorr
from convae.runtime.dot import ParallelDot
from convae.runtime.mrg import ParallelMRGUniform

TAG = "convae_fast"


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


def _is_plain(op):
    """True for a CorrMM-family op with the post's settings: valid, stride 1, no dilation, one group."""
    return (op.border_mode in ("valid", (0, 0)) and tuple(op.subsample) == (1, 1)
            and tuple(op.filter_dilation) == (1, 1) and op.num_groups == 1
            and not op.unshared)


CORR_DIRECTIONS = {CorrMM: "forward", CorrMM_gradInputs: "grad_inputs",
                   CorrMM_gradWeights: "grad_weights"}


@theano.gof.local_optimizer([CorrMM, CorrMM_gradInputs, CorrMM_gradWeights])
def local_batched_corr(node):
    """Replace a plain float32 CorrMM, CorrMM_gradInputs or CorrMM_gradWeights by BatchedCorr."""
    op = node.op
    if (type(op) not in CORR_DIRECTIONS or not _is_plain(op) or not ldflags()
            or any(v.dtype != "float32" for v in node.inputs[:2])):
        return False
    out = BatchedCorr(CORR_DIRECTIONS[type(op)])(node.inputs[0], node.inputs[1])
    if out.type != node.outputs[0].type:
        return False
    return [out]


def _constant(var):
    """The value of a Theano constant as a tuple of ints, or None."""
    if isinstance(var, T.TensorConstant):
        return tuple(int(v) for v in var.data.ravel())
    return None


def _is_2x2_pool(op, ws, stride, pad):
    return (op.mode == "max" and op.ignore_border and op.ndim == 2
            and _constant(ws) == (2, 2) and _constant(stride) == (2, 2)
            and _constant(pad) == (0, 0))


@theano.gof.local_optimizer([T.Alloc, T.Sum, Pool, MaxPoolGrad, T.add])
def local_contiguous_ops(node):
    """Swap in Repeat, AxisSum, ChannelSum, MaxPool2x2, MaxPool2x2Grad and
    BiasActivation('linear') where they compute the same."""
    op, out = node.op, node.outputs[0]
    if out.dtype != "float32" or any(v.dtype != "float32" for v in node.inputs[:1]):
        return False
    if elemwise_node(out, theano.scalar.Add) is not None:
        # A bias added to a layer's maps, where Theano's broadcasting loop is
        # slow (a transposed convolution's: its rectify needs the sum twice,
        # once for its gradient). A dense layer's is left for Theano to fuse.
        found = with_channel_bias(out)
        if found is None or out.ndim < 3:
            return False
        new = BiasActivation("linear")(*found)
    elif isinstance(op, T.Alloc):
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


@theano.gof.local_optimizer([MaxPool2x2])
def local_bias_activation_max_pool(node):
    """Replace MaxPool2x2(BiasActivation(x, b)) by BiasActivationMaxPool2x2 where
    nothing else reads the activations."""
    if not isinstance(node.op, MaxPool2x2):
        return False
    (y,) = node.inputs
    if (y.owner is None or type(y.owner.op) is not BiasActivation or y.ndim != 4
            or len(y.clients) != 1):
        return False
    return [BiasActivationMaxPool2x2(y.owner.op.activation)(*y.owner.inputs)]


@theano.gof.local_optimizer([T.mul])
def local_max_pool_tanh_grad(node):
    """Replace MaxPool2x2Grad(y, m, g) * (1 - sqr(y)), the gradient through
    pooling and then through the tanh that made y, by
    MaxPool2x2Grad(through_tanh=True) where nothing else reads pooling's
    gradient."""
    if elemwise_node(node.outputs[0], theano.scalar.Mul) is None or len(node.inputs) != 2:
        return False
    for routed, derivative in (node.inputs, node.inputs[::-1]):
        pool_grad, sub = routed.owner, elemwise_node(derivative, theano.scalar.Sub)
        if (pool_grad is None or type(pool_grad.op) is not MaxPool2x2Grad
                or pool_grad.op.through_tanh or len(routed.clients) != 1 or sub is None):
            continue
        one, square = sub.inputs
        sqr = elemwise_node(square, theano.scalar.Sqr)
        if (isinstance(one, T.TensorConstant) and np.all(one.data == 1)
                and sqr is not None and sqr.inputs[0] is pool_grad.inputs[0]):
            out = MaxPool2x2Grad(through_tanh=True)(*pool_grad.inputs)
            return [out] if out.type == node.outputs[0].type else False
    return False


def view_base(var):
    """The variable var is a view of through DimShuffles that only add or drop
    broadcastable axes (the views around repeat's copies)."""
    while (var.owner is not None and isinstance(var.owner.op, T.DimShuffle)
           and [d for d in var.owner.op.new_order if d != "x"]
           == [d for d in range(var.owner.inputs[0].ndim)
               if d not in var.owner.op.drop]):
        var = var.owner.inputs[0]
    return var


def _trailing_constants(shape, count):
    """The last ``count`` entries of a shape vector or tuple as ints, or None
    where any is not a constant."""
    try:
        return tuple(int(T.get_scalar_constant_value(shape[i]))
                     for i in range(-count, 0))
    except T.NotScalarConstantError:
        return None


def _repeated_twice(var, axis):
    """The Apply node of var = Repeat(axis, 2)(...), else None."""
    owner = var.owner
    if (owner is not None and isinstance(owner.op, Repeat)
            and (owner.op.axis, owner.op.times) == (axis, 2)):
        return owner
    return None


@theano.gof.local_optimizer([T.Reshape])
def local_upscale_2x(node):
    """Replace Upscale2DLayer's two repeats (of columns, then of rows) of
    maps x (N, C, H, W) by Upscale2x(x): Reshape{4}(Repeat{axis=3}(a view
    of Reshape{4}(Repeat{axis=4}(x)))), where the reshapes give
    (N, C, H, 2W) and then (N, C, 2H, 2W). C, H and W must be known
    constants (the post's are); each reshape keeps the number of values, so
    its first axis is then N."""
    if not isinstance(node.op, T.Reshape) or node.outputs[0].ndim != 4:
        return False
    rows = _repeated_twice(node.inputs[0], 3)
    middle = view_base(rows.inputs[0]) if rows is not None else None
    if middle is None or middle.owner is None or not isinstance(middle.owner.op, T.Reshape) \
            or middle.ndim != 4:
        return False
    columns = _repeated_twice(middle.owner.inputs[0], 4)
    x = columns.inputs[0] if columns is not None else None
    shape_feature = getattr(node.fgraph, "shape_feature", None)
    if x is None or x.ndim != 4 or shape_feature is None:
        return False
    c, h, w = _trailing_constants(shape_feature.shape_of[x], 3) or (None,) * 3
    if (c is None or _trailing_constants(middle.owner.inputs[1], 3) != (c, h, 2 * w)
            or _trailing_constants(node.inputs[1], 3) != (c, 2 * h, 2 * w)):
        return False
    out = Upscale2x()(x)
    return [out] if out.type == node.outputs[0].type else False


@theano.gof.local_optimizer([Dot22, Dot22Scalar])
def local_parallel_dot(node):
    """Replace float32 Dot22, and Dot22Scalar by a constant, by ParallelDot."""
    if not isinstance(node.op, (Dot22, Dot22Scalar)) or not ldflags() \
            or any(v.dtype != "float32" for v in node.inputs[:2]):
        return False
    scale = 1.0
    if isinstance(node.op, Dot22Scalar):
        value = T.get_scalar_constant_value(node.inputs[2], only_process_constants=True) \
            if isinstance(node.inputs[2], T.TensorConstant) else None
        if value is None:
            return False
        scale = float(value)
    operands, transposed = [], []
    for v in node.inputs[:2]:  # read a transposed view's variable as it is
        owner = v.owner
        flip = (owner is not None and isinstance(owner.op, T.DimShuffle)
                and owner.op.new_order == (1, 0))
        operands.append(owner.inputs[0] if flip else v)
        transposed.append(flip)
    out = ParallelDot(scale, *transposed)(*operands)
    return [out] if out.type == node.outputs[0].type else False


@theano.gof.local_optimizer([mrg_uniform])
def local_parallel_mrg_uniform(node):
    """Replace Theano's CPU mrg_uniform (float32 or float64) by ParallelMRGUniform."""
    op = node.op
    if type(op) is not mrg_uniform or op.output_type.dtype not in ("float32", "float64"):
        return False
    return ParallelMRGUniform(op.output_type, inplace=op.inplace)(*node.inputs)


# convae's passes in Theano's optimizer database: name, rewrites, position.
# 48.6: after the canonical and specialising passes, just before elementwise
# fusion (49) would hide tanh inside fused loops; Theano chooses CorrMM at
# 48.6 (specialize_device), so the convolutions come after it, and the ops
# built from the ops of earlier passes after those. Theano's in-place pass
# (99) then makes ParallelMRGUniform in-place as it did its own op.
PASSES = [
    ("convae_float32_tanh", (local_float32_tanh, local_relu_bias), 48.6),
    ("convae_batched_corr", (local_batched_corr,), 48.65),
    ("convae_contiguous_ops", (local_contiguous_ops,), 48.66),
    ("convae_fusions", (local_bias_activation_max_pool, local_max_pool_tanh_grad,
                        local_upscale_2x), 48.665),
    ("convae_parallel_dot", (local_parallel_dot,), 48.668),
    ("convae_parallel_mrg_uniform", (local_parallel_mrg_uniform,), 48.67),
]


def register():
    """Add the rewrites to Theano's optimizer database (once per process)."""
    if PASSES[0][0] in theano.compile.optdb.__db__:
        return
    for name, rewrites, position in PASSES:
        theano.compile.optdb.register(name, theano.gof.opt.in2out(*rewrites), position,
                                      "fast_run", TAG)
