"""Carry the trained network out of Theano: write it as an ONNX model.

Usage: ``convae-export`` (or ``python scripts/export.py``) with the weights
shipped in the package, or ``--weights`` a ``model.npz`` (or the run
directory holding it) from ``convae-train``; ``--out`` names the file
(default ``model.onnx``; a name ending in another extension, such as
``model.npz``, is refused). The model is the deterministic pass (no dropout)
for any batch size: input ``input`` float32 (batch, 1, 28, 28) in [0, 1),
output ``reconstruction`` of the same shape. Load it with onnxruntime::

    session = onnxruntime.InferenceSession("model.onnx")
    reconstruction = session.run(None, {"input": digits})[0]

The decoder's filters stay tied in the file: each convolution's filters are
one initializer, used by the convolution and by its transposed convolution,
so the model holds the network's 289,409 trained values. Lasagne's
convolutions are true (flipped-filter) convolutions and its transposed ones
transpose them; ONNX's Conv is a cross-correlation, so the initializer holds
the filters flipped, which is what both ONNX ops then need.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import lasagne
from convae import cli, files
from convae.model import build_convolutional_autoencoder

OPSET = 17
INPUT, OUTPUT = "input", "reconstruction"


def parameters(weights):
    """The network's parameters from a parameter file, by name: W and b of each
    convolution (W flipped: cross-correlation filters), dense layer and
    transposed convolution (b only: its filters are the convolution's)."""
    network = build_convolutional_autoencoder()
    files.load_params(weights, network)
    (conv1_W, conv1_b, conv2_W, conv2_b, code_W, code_b, expand_W, expand_b,
     deconv2_b, deconv1_b) = [np.asarray(v, np.float32) for v in
                              lasagne.layers.get_all_param_values(network)]
    return {"conv1_W": conv1_W[:, :, ::-1, ::-1], "conv1_b": conv1_b,
            "conv2_W": conv2_W[:, :, ::-1, ::-1], "conv2_b": conv2_b,
            "code_W": code_W, "code_b": code_b, "expand_W": expand_W, "expand_b": expand_b,
            "deconv2_b": deconv2_b, "deconv1_b": deconv1_b}


def _node(op, inputs, output, **attributes):
    return helper.make_node(op, inputs, [output], name=output, **attributes)


def onnx_model(params):
    """The ONNX model (onnx.ModelProto) of the network with ``params`` (see ``parameters``)."""
    upscale = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")
    nodes = [
        # The two constants: the code's shape as maps, and the upscaling factors.
        _node("Constant", [], "code_shape",
              value=numpy_helper.from_array(np.array([-1, 32, 4, 4], np.int64))),
        _node("Constant", [], "twice",
              value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32))),
        _node("Conv", [INPUT, "conv1_W", "conv1_b"], "auto_conv1A_linear"),
        _node("Tanh", ["auto_conv1A_linear"], "auto_conv1A"),
        _node("MaxPool", ["auto_conv1A"], "auto_maxpool1A", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Conv", ["auto_maxpool1A", "conv2_W", "conv2_b"], "auto_conv2A_linear"),
        _node("Tanh", ["auto_conv2A_linear"], "auto_conv2A"),
        _node("MaxPool", ["auto_conv2A"], "auto_maxpool2A", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Flatten", ["auto_maxpool2A"], "auto_flattenA", axis=1),
        _node("Gemm", ["auto_flattenA", "code_W", "code_b"], "auto_dense1A_linear"),
        _node("Tanh", ["auto_dense1A_linear"], "auto_dense1A"),
        _node("Gemm", ["auto_dense1A", "expand_W", "expand_b"], "auto_dense1B_linear"),
        _node("Tanh", ["auto_dense1B_linear"], "auto_dense1B"),
        _node("Reshape", ["auto_dense1B", "code_shape"], "auto_reshapeB"),
        _node("Resize", ["auto_reshapeB", "", "twice"], "auto_upscale2B", **upscale),
        _node("ConvTranspose", ["auto_upscale2B", "conv2_W", "deconv2_b"], "auto_deconv2B_linear"),
        _node("Relu", ["auto_deconv2B_linear"], "auto_deconv2B"),
        _node("Resize", ["auto_deconv2B", "", "twice"], "auto_upscale1B", **upscale),
        _node("ConvTranspose", ["auto_upscale1B", "conv1_W", "deconv1_b"], "auto_deconv1B_linear"),
        _node("Relu", ["auto_deconv1B_linear"], OUTPUT),
    ]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(value), name)
                    for name, value in params.items()]
    shape = ["batch", 1, 28, 28]
    graph = helper.make_graph(
        nodes, "convolutional_autoencoder",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, shape)],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="convae")
    onnx.checker.check_model(model)
    return model


def onnx_name(path):
    """``path``, or ValueError naming it where its extension is not .onnx (a
    name without one is fine): ``--out model.npz`` would replace a run's
    parameters with the model."""
    extension = os.path.splitext(path)[1]
    if extension and extension.lower() != ".onnx":
        raise ValueError("{}: an ONNX model is not written as {}; end the name in .onnx".format(
            path, extension))
    return path


def export(args):
    """Write the ONNX model that ``args`` asks for; returns 0."""
    out = cli.writable_path(onnx_name(args.out))
    model = onnx_model(parameters(cli.weights_path(args.weights)))
    data = model.SerializeToString()
    files.write_atomically(out, lambda f: f.write(data))
    cli.say("wrote {} ({} trained values)".format(out, trained_values(model)))
    return 0


def trained_values(model):
    """How many values the model's initializers (its trained parameters) hold."""
    return sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)


def main(argv=None):
    """The export command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="convae-export", description=__doc__.split("\n")[0])
    cli.weights_argument(parser)
    parser.add_argument("--out", type=cli.nonempty_path, default="model.onnx",
                        help="the ONNX file to write, its name ending in .onnx or in no "
                        "extension (default: %(default)s)")
    return cli.run_command("convae-export", lambda: export(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
