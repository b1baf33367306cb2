from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
H100_RESULTS = DATA / "h100-probe-2026-11-25.json"


@pytest.fixture
def h100_results_path() -> Path:
    """The real results file of a full ``gpuprobe probe`` run on one NVIDIA H100 80GB HBM3 (2026-11-25)."""
    return H100_RESULTS
