"""The qualification levels' GPU parts on a real GPU (skipped where there is none). On the GPU machine:
``PYTHONPATH=. python -m pytest tests/gpu/test_qualify_levels_gpu.py -q -rs``.

Checks: the live NVML sampler reads every field the judgement uses (or names the NVML call that refused), the
XID watch registers or says why not, the torch burn-in measures a bf16 matmul alone and under load with a ratio,
and ``gpuprobe qualify --level quick`` runs end to end and writes a qualification with its timeline.
"""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

from gpuprobe.qualify.burnin import TorchBurnIn  # noqa: E402
from gpuprobe.qualify.health_events import judge_timeline  # noqa: E402
from gpuprobe.system.nvml import LiveNvml  # noqa: E402
from gpuprobe.system.sampler import Sampler  # noqa: E402


def test_live_sampler_reads_the_fields_the_judgement_uses():
    with LiveNvml() as nvml:
        s = Sampler(nvml, [0], interval_s=0.2)
        with s:
            s.phase("idle")
            time.sleep(1.0)
        tl = s.timeline
    print("NVML notes:", tl.notes, "XID:", tl.xid_supported, tl.xid_note)
    assert len(tl.samples) >= 3 and not [n for n in tl.notes if n.startswith("a reading failed")]
    first = tl.samples[0]
    for field in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "clocks_event_reasons",
                  "pcie_replay", "ecc_uncorrected"):
        assert getattr(first, field) is not None, field
    assert tl.devices[0].sm_clock_max_mhz and tl.devices[0].power_limit_w
    assert tl.xid_supported or tl.xid_note
    checks = judge_timeline(tl)
    assert checks and not [c for c in checks if c.verdict == "FAIL"], [c.cause for c in checks if c.verdict == "FAIL"]


def test_torch_burn_in_matmul_alone_and_under_load():
    backend = TorchBurnIn([0])
    alone, problems = backend.matmul_alone(3.0)
    assert not problems and alone[0] > 50, alone  # bf16 dense on a Hopper GPU: hundreds of TFLOP/s
    figures = backend.load(5.0, threading.Event())
    print("alone", alone, "under load", figures.matmul_tflops, "copies", figures.copies_gbps, figures.problems,
          figures.notes)
    assert not figures.problems and figures.matmul_tflops[0] > 0 and figures.copies_gbps[0] > 100
    assert 3.0 < figures.ran_s < 30


def test_quick_level_end_to_end(tmp_path):
    from gpuprobe.cli.app import main
    from gpuprobe.results.qualification import load_qualification

    q_path = tmp_path / "q.json"
    code = main(["qualify", "--level", "quick", "-o", str(tmp_path / "r.json"), "--qualification-out", str(q_path)])
    assert code in (0, 10, 11)
    q = load_qualification(q_path)
    assert q.level == "quick" and q.timeline is not None and len(q.timeline.samples) >= 2
