"""Terminal rendering helpers of ``gpuprobe topo``."""

from __future__ import annotations

import pytest

from gpuprobe.report.terminal_topo import format_cpu_list


@pytest.mark.parametrize(
    "ids, text",
    [
        (list(range(16)), "0-15"),  # the H100 VM (nvidia-smi topo -m: 0-15)
        ([0, 1, 2, 3, 8, 9, 12], "0-3,8-9,12"),
        ([5], "5"),
        ([3, 1, 2, 2], "1-3"),
        ([], "N/A"),
        (None, "N/A"),
    ],
)
def test_format_cpu_list(ids, text):
    assert format_cpu_list(ids) == text
