"""notebooks/results.ipynb runs top to bottom on the committed real H100 capture (so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def test_results_notebook_executes(monkeypatch) -> None:
    monkeypatch.delenv("GPUPROBE_RESULTS", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "NVIDIA H100 80GB HBM3" in text and "host_to_device_memcpy_ce host gpu0 55.03 GB/s" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3
