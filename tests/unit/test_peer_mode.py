"""peer_mode: staged copies turn peer access off both ways and always turn it back on (no GPU needed: the CUDA
door is replaced by a recorder of the calls, which is all this logic touches)."""

from __future__ import annotations

import pytest

from gpuprobe.options import ProbeOptions
from gpuprobe.probes.core.registry import ProbeContext
from gpuprobe.probes.p2p import peer_mode


class PeerRecorder:
    def __init__(self, can: bool) -> None:
        self.can = can
        self.calls: list[tuple[int, int, bool]] = []

    def can_access_peer(self, a: int, b: int) -> bool:
        return self.can

    def set_peer_access(self, a: int, b: int, enabled: bool) -> None:
        self.calls.append((a, b, enabled))


def _ctx(can: bool) -> ProbeContext:
    return ProbeContext(options=ProbeOptions(), gpus=[0, 1], cuda=PeerRecorder(can))


def test_staged_turns_access_off_then_back_on_even_on_failure() -> None:
    ctx = _ctx(True)
    with pytest.raises(RuntimeError), peer_mode(ctx, 0, 1, staged=True) as usable:
        assert usable
        assert ctx.cuda.calls == [(0, 1, False), (1, 0, False)]
        raise RuntimeError("a copy failed")
    assert ctx.cuda.calls[2:] == [(0, 1, True), (1, 0, True)]


def test_direct_mode_reports_missing_peer_access() -> None:
    ctx = _ctx(False)
    with peer_mode(ctx, 0, 1, staged=False) as usable:
        assert not usable
    with peer_mode(ctx, 0, 1, staged=True) as usable:
        assert usable  # staged copies need no peer access
    assert (0, 1, True) not in ctx.cuda.calls
