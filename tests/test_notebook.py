"""The Colab notebook runs top to bottom on a tiny checkpoint (as CI executes it)."""
import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "experiments", "notebooks", "genie_colab.ipynb")


def test_colab_notebook_executes(tiny_world, tmp_path, monkeypatch):
  monkeypatch.setenv("GENIE_WORKDIR", tiny_world["world"])
  monkeypatch.setenv("GENIE_STEPS", "2")
  monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device in the kernel
  monkeypatch.setenv("PYTHONPATH", os.path.abspath(os.path.join(os.path.dirname(NOTEBOOK), "..", "..")))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  assert any("image/gif" in o.get("data", {}) for o in outputs), "the rollout GIF was not shown"
  assert os.path.getsize(tmp_path / "rollout.gif") > 0
