"""The ONNX export: onnxruntime computes what convae's Theano network and NumPy compute."""
import os

import numpy as np
import onnx
import onnxruntime
import pytest

import lasagne
from convae import data, export, files
from convae.codec import Codec

import reference


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export.main(["--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return data.load_test_set("mnist", mnist_dir, fetch=False)[0]


def test_onnxruntime_equals_theano_and_numpy(exported, digits):
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    codec = Codec(files.SHIPPED_WEIGHTS)
    saved = files.read_npz(files.SHIPPED_WEIGHTS)
    values = [saved["arr_%d" % i] for i in range(len(saved))]
    for batch in (1, 7, 128):
        x = digits[100:100 + batch]
        got = session.run(None, {"input": x})[0]
        assert got.shape == (batch, 1, 28, 28) and got.dtype == np.float32
        np.testing.assert_allclose(got, codec.reconstruct(x), rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, reference.autoencoder_forward(values, x),
                                   rtol=0, atol=1e-5)


def test_the_decoder_filters_stay_tied_in_the_file(exported):
    import onnx
    model = onnx.load(str(exported))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    users = {name: [node.op_type for node in model.graph.node if name in node.input]
             for name in initializers}
    assert users["conv1_W"] == ["Conv", "ConvTranspose"]
    assert users["conv2_W"] == ["Conv", "ConvTranspose"]
    network = export.build_convolutional_autoencoder()
    trainable = sum(p.get_value().size for p in lasagne.layers.get_all_params(network))
    assert export.trained_values(model) == trainable == 289409
    # Any batch size: the batch axis is symbolic.
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_run_directory_is_exported_too(tmp_path, capsys):
    network = export.build_convolutional_autoencoder()
    # A run directory's model.npz, as Lasagne's examples save parameters.
    np.savez(tmp_path / "model.npz", *lasagne.layers.get_all_param_values(network))
    assert export.main(["--weights", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "289409 trained values" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "unwritable"])
def test_bad_weights_or_output_are_one_line(tmp_path, capsys, case):
    weights, out = tmp_path / "model.npz", tmp_path / "m.onnx"
    if case == "truncated":
        weights.write_bytes(open(files.SHIPPED_WEIGHTS, "rb").read()[:100])
    elif case == "foreign":
        np.savez(weights, np.zeros(3))
    elif case == "unwritable":
        weights = files.SHIPPED_WEIGHTS
        (tmp_path / "file").write_text("not a directory")
        out = tmp_path / "file" / "m.onnx"
    code = export.main(["--weights", str(weights), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("convae-export: error:") and "\n" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("out, written", [("model.npz", False), ("checkpoint.NPZ", False),
                                          ("notes.txt", False), ("model.ONNX", True),
                                          ("model", True)])
def test_an_out_named_as_another_kind_of_file_is_refused(tmp_path, capsys, out, written):
    """`convae-export --weights run/model.npz --out run/model.npz` replaced the
    trained parameters with the ONNX model. A name that ends in another
    extension than .onnx is refused, and the file there kept."""
    path = tmp_path / out
    path.write_bytes(b"a run's file")
    code = export.main(["--out", str(path)])
    err = capsys.readouterr().err
    if written:
        assert code == 0 and err == ""
        assert onnx.load(str(path)).graph.output[0].name == "reconstruction"
    else:
        assert (code, err) == (1, "convae-export: error: {}: an ONNX model is not written as "
                                  "{}; end the name in .onnx\n".format(path,
                                                                       os.path.splitext(out)[1]))
        assert path.read_bytes() == b"a run's file"
