"""Start-to-start spread of one engine configuration, on the real H100 repeat (tests/data/vllm-h100-2026-11-25/
machine3-validation-1b-rep*.json: the Llama-3.2-1B shape started twice back to back on one machine, eager and CUDA
graphs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpuprobe.results.validation import ValidationLayout
from gpuprobe.validate.spread import spread_notes, start_spreads
from gpuprobe.validate.store import load_runs

REPEAT = Path(__file__).resolve().parents[1] / "data" / "vllm-h100-2026-11-25"


def _both_starts():
    first = load_runs(REPEAT / "machine3-validation-1b-rep1.json")
    second = load_runs(REPEAT / "machine3-validation-1b-rep2.json")
    for run in second.layouts:
        run.layout = dataclasses.replace(run.layout, start=2)
        first.layouts.append(run)
    return first


def test_layout_names_carry_the_start() -> None:
    lay = ValidationLayout(tp=1, enforce_eager=False)
    assert lay.name == lay.config_name == "tp1-pp1-graphs"
    second = dataclasses.replace(lay, start=2, gpus=[3])
    assert second.name == "tp1-pp1-graphs-g3-s2" and second.config_name == "tp1-pp1-graphs-g3"


def test_spread_between_real_engine_starts() -> None:
    spreads = {(s.config, s.figure, s.workload): s for s in start_spreads(_both_starts())}
    assert len(spreads) == 2 * 4 * 3  # two configurations, four workloads, three speed figures
    eager = spreads[("tp1-pp1-eager", "output_tokens_per_s", "n=8,in=512,out=128")]
    assert eager.values == pytest.approx([461.2, 709.6], abs=0.1)
    assert eager.spread == pytest.approx(709.6 / 461.2 - 1, rel=1e-3)
    notes = spread_notes(_both_starts())
    assert len(notes) == 2
    assert notes[0].startswith("tp1-pp1-eager: 2 engine starts; output tokens/s moved up to 54%")
    assert notes[1].startswith("tp1-pp1-graphs: 2 engine starts; output tokens/s moved up to 13%")


def test_one_start_has_no_spread() -> None:
    assert start_spreads(load_runs(REPEAT / "machine3-validation-1b-rep1.json")) == []
