"""``gpuprobe probe``: run the measurement suite and write a results file."""

from __future__ import annotations
