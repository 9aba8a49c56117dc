"""The post as a notebook: it runs top to bottom in a fresh Jupyter kernel and draws its pictures."""
import os
import re

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "convolutional_autoencoder.ipynb")


def pictures(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if "image/png" in output.get("data", {})]


def test_the_stored_notebook_reads_with_its_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert len(pictures(notebook)) == 4
    assert all(cell.outputs or cell.source.startswith("%matplotlib")
               for cell in notebook.cells if cell.cell_type == "code")


def test_it_runs_top_to_bottom_in_a_fresh_kernel(mnist_dir, tmp_path, monkeypatch):
    # convae finds MNIST at $CONVAE_DATA_DIR/mnist, as a user's would.
    os.symlink(os.path.abspath(mnist_dir), tmp_path / "mnist")
    monkeypatch.setenv("CONVAE_DATA_DIR", str(tmp_path))
    # The kernel's temporary files go here: the run's checkpoints must not stay.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # A cell error raises CellExecutionError, failing the test.
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert len(pictures(notebook)) == 4
    printed = "".join(output.get("text", "") for cell in notebook.cells
                      if cell.cell_type == "code" for output in cell.outputs)
    assert "auto_deconv1B.W is auto_conv1A.W: True" in printed
    assert "trainable values: 289409" in printed
    losses = [float(v) for v in re.findall(r"validation loss ([0-9.]+)", printed)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert "img/s" in printed and "loss=" in printed  # the progress bar
    assert os.listdir(tmp_path / "tmp") == []
