"""The timing core's interference sizing, on a simulated device clock.

``SimCuda`` plays the part of ``Cuda`` for ``measure_copies``: streams hold their enqueued copies and events
until ``release()``, then a fluid model runs them (each copy moves at ``alone`` GB/s while it is the only active
stream and at its ``shared`` rate while several are active) and gives every event its time. The checks are the
ones that keep a bidirectional figure honest: the interference must outlast the measured window in every kept
sample, a sample it failed to cover is thrown away, and known traffic is not padded twice over.
"""

from __future__ import annotations

import pytest

from gpuprobe.probes.core.timing import Copy, measure_copies

MiB = 1 << 20


class SimEvent:
    def __init__(self) -> None:
        self.t: float | None = None

    def record(self, stream: SimStream) -> None:
        stream.ops.append(("event", self))


class SimStream:
    def __init__(self) -> None:
        self.ops: list = []

    def synchronize(self) -> None:
        pass


class SimCuda:
    def __init__(self, alone: dict[tuple, float], shared: dict[tuple, float]) -> None:
        self.alone, self.shared = alone, shared  # (src, dst) -> GB/s
        self.streams: list[SimStream] = []
        self.copies_run: dict[tuple, int] = {}

    def stream(self, dev: int) -> SimStream:
        s = SimStream()
        self.streams.append(s)
        return s

    def event(self, dev: int) -> SimEvent:
        return SimEvent()

    def arm(self) -> None:
        for s in self.streams:
            s.ops.clear()

    def block(self, dev: int, stream: SimStream) -> None:
        pass

    def memcpy_async(self, dst: int, src: int, nbytes: int, stream: SimStream) -> None:
        stream.ops.append(("copy", (src, dst), float(nbytes)))

    def release(self) -> bool:
        """Run every stream from t = 0 until all are drained."""
        queues = [list(s.ops) for s in self.streams]
        left = [None] * len(queues)  # bytes left of the copy at the head of each stream
        t = 0.0
        while True:
            for i, q in enumerate(queues):  # stamp events at the heads, load the next copy
                while q and left[i] is None:
                    op = q[0]
                    if op[0] == "event":
                        op[1].t = t
                        q.pop(0)
                    else:
                        left[i] = op[2]
            active = [i for i in range(len(queues)) if left[i] is not None]
            if not active:
                return True
            rate = {i: (self.alone if len(active) == 1 else self.shared)[queues[i][0][1]] * 1e9 / 1e3 for i in active}
            dt = min(left[i] / rate[i] for i in active)  # ms until the first copy finishes
            t += dt
            for i in active:
                left[i] -= rate[i] * dt
                if left[i] <= 1e-6:
                    key = queues[i][0][1]
                    self.copies_run[key] = self.copies_run.get(key, 0) + 1
                    left[i] = None
                    queues[i].pop(0)

    def elapsed_ms(self, a: SimEvent, b: SimEvent) -> float:
        assert a.t is not None and b.t is not None
        return b.t - a.t

    def synchronize_all(self) -> None:
        pass


H2D, D2H = (1, 2), (3, 4)


def _copies(first: tuple, second: tuple) -> list[Copy]:
    return [Copy(0, first[0], first[1], 512 * MiB), Copy(0, second[0], second[1], 512 * MiB)]


def _run(sim: SimCuda, copies: list[Copy], rates: dict | None = None):
    return measure_copies(sim, copies, count=16, warmup=4, samples=3, verify=False, rates=rates)


def test_interference_covers_every_kept_sample_and_reports_the_shared_rate():
    sim = SimCuda(alone={H2D: 55.0, D2H: 55.0}, shared={H2D: 40.0, D2H: 52.0})
    res = _run(sim, _copies(H2D, D2H))
    assert len(res.gbps) == 3
    assert res.gbps == pytest.approx([40.0] * 3, rel=1e-9)  # only the shared rate inside the window
    assert not res.notes


def test_known_traffic_is_not_padded_twice_and_the_reverse_probe_reuses_it():
    rates: dict = {}
    sim = SimCuda(alone={H2D: 55.0, D2H: 55.0}, shared={H2D: 40.0, D2H: 52.0})
    _run(sim, _copies(H2D, D2H), rates)
    first = sim.copies_run[D2H]  # interference of the H2D-measured probe
    sim.copies_run.clear()
    res = _run(sim, _copies(D2H, H2D), rates)  # same traffic, the other direction measured
    assert res.gbps == pytest.approx([52.0] * 3, rel=1e-9)
    assert not res.notes
    # nvbandwidth-style twofold interference would be 2 x (4 + 16) + 2 x 2 x 16 = 104 copies
    assert sim.copies_run[H2D] <= 60
    assert first < 100


def test_a_sample_the_interference_did_not_cover_is_retaken():
    rates: dict = {}
    sim = SimCuda(alone={H2D: 55.0, D2H: 55.0}, shared={H2D: 40.0, D2H: 52.0})
    _run(sim, _copies(D2H, H2D), rates)
    # the link changes: the measured direction gets much slower, the remembered sizing no longer covers it
    sim.shared = {H2D: 40.0, D2H: 20.0}
    res = _run(sim, _copies(D2H, H2D), rates)
    assert len(res.gbps) == 3
    assert res.gbps == pytest.approx([20.0] * 3, rel=1e-9)
    assert any("taken again" in n for n in res.notes)
