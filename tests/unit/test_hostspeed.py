"""The host facts every results file records: the processor's name and numbers, and the fixed Python loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gpuprobe.results.serde import from_data
from gpuprobe.results.validation import ValidationRuns
from gpuprobe.system import hostspeed

DATA = Path(__file__).resolve().parents[1] / "data" / "vllm-h200-2026-12-02"

TWO_PROCESSORS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R)   Processor
stepping\t: 2

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Another Processor
stepping\t: 8
"""


def test_cpu_model_is_the_first_processors_name_with_its_numbers(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(TWO_PROCESSORS)
    assert hostspeed.cpu_model(f) == "Intel(R) Xeon(R) Processor (family 6, model 207, stepping 2)"


def test_cpu_model_without_numbers_or_without_a_file(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Ampere Altra\n")
    assert hostspeed.cpu_model(f) == "Ampere Altra"
    missing = hostspeed.cpu_model(tmp_path / "absent")
    assert missing is None or isinstance(missing, str)  # platform.processor(): '' on many Linux builds -> None


def test_the_loop_is_a_fixed_workload_and_its_time_is_a_real_duration() -> None:
    assert hostspeed._loop(50_000) == hostspeed._loop(50_000)  # the same work every time
    ns = hostspeed.python_loop_ns(iterations=5_000, samples=3, gap_s=0.0)
    assert math.isfinite(ns) and 1.0 < ns < 100_000.0


def test_recorded_runs_carry_the_host_facts() -> None:
    """Machine 13's probe, served runs and idle-engine steps each recorded the host: the same processor, and a
    loop time that moved between 100 and 215 ns within 20 minutes on the one machine (the host's single-core speed
    is not a constant of the machine)."""
    probe = json.loads((DATA / "probe-machine13.json").read_text())
    served = [from_data(ValidationRuns, json.loads((DATA / f"{m}-serve-machine13.json").read_text()))
              for m in ("qwen3-4b", "llama-3.2-1b")]
    steps = [json.loads((DATA / f"prompt-step-{m}-machine13.json").read_text())
             for m in ("llama-3.2-1b", "qwen3-4b", "llama-3.1-8b")]
    names = {probe["run"]["cpu_model"], *(r.run.cpu_model for r in served), *(s["cpu_model"] for s in steps)}
    assert len(names) == 1 and next(iter(names)).startswith("Intel(R) Xeon(R) Processor")
    loops = [probe["run"]["host_python_loop_ns"], *(r.run.host_python_loop_ns for r in served),
             *(s["host_python_loop_ns"] for s in steps)]
    assert all(100.0 < x < 215.0 for x in loops)
    assert max(loops) / min(loops) > 1.5


def test_every_served_load_records_the_host_loop_before_it() -> None:
    """Machine 14's served runs (the first made with the per-load figure) hold the loop's time before each of their
    14 loads: 112-223 ns within ten minutes on one machine, beside the same processor name as the probe's."""
    probe = json.loads((DATA / "probe-machine14.json").read_text())
    served = [from_data(ValidationRuns, json.loads((DATA / f"{m}-serve-machine14.json").read_text()))
              for m in ("qwen2.5-7b", "qwen3-4b")]
    loops = [x for r in served for run in r.layouts if run.measured for w in run.measured.workloads
             if (x := w.host_python_loop_ns) is not None]
    assert len(loops) == 14 and all(100.0 < x < 250.0 for x in loops)
    assert max(loops) / min(loops) > 1.5
    assert {r.run.cpu_model for r in served} == {probe["run"]["cpu_model"]}
