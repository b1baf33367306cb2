"""Reference figures: every shipped reference has its source; a results file is matched to the reference of
its own system (GPU name, count, link classes, host link) and to none when nothing is close."""

from __future__ import annotations

import re
from pathlib import Path

from gpuprobe.qualify import judge
from gpuprobe.qualify.references import load_references, match
from gpuprobe.results import load_results
from tests.unit import qualify_derived as qd

DATA = Path(__file__).resolve().parents[1] / "data"
DOC = Path(__file__).resolve().parents[2] / "docs" / "references.md"


def test_every_reference_and_figure_names_its_source_and_is_listed_in_the_docs():
    refs = load_references()
    doc = DOC.read_text()
    assert len(refs) >= 4
    for ref in refs:
        assert ref.origin in ("capture", "published") and ref.source and ref.figures
        assert f"`{ref.id}`" in doc
        for key, fig in ref.figures.items():
            assert fig.source and fig.value > 0, key
            if ref.origin == "published":
                assert re.search(r"https://\S+", fig.source), key
            else:
                assert "tests/data/" in fig.source  # the capture is in the repository
                assert (DATA.parent.parent / re.search(r"(tests/data/\S+)", fig.source).group(1)).exists()


def test_capture_figures_equal_the_captures():
    h200 = next(r for r in load_references() if r.id == "h200-1gpu-pcie5-vm")
    assert h200.figures["host_to_device_memcpy_ce"].value == 55.43  # nvbandwidth-h200-2026-12-01.txt
    assert h200.figures["device_local_copy"].value == 2094.60
    assert h200.figures["host_device_latency_sm"].value == 1198.29


def test_the_real_runs_match_their_own_system():
    h200 = load_results(DATA / "vllm-h200-2026-12-01" / "probe-machine3.json")
    h100 = load_results(DATA / "h100-probe-2026-11-25.json")
    assert match(h200)[0].id == "h200-1gpu-pcie5-vm"
    assert match(h100)[0].id == "h100-1gpu-pcie5-vm"


def test_qualify_shows_measured_reference_and_line_rate_side_by_side():
    q = judge(load_results(DATA / "vllm-h200-2026-12-01" / "probe-machine3.json"))
    assert q.reference is not None and q.reference.id == "h200-1gpu-pcie5-vm" and "NVIDIA H200" in q.reference.why
    c = next(c for c in q.checks if c.test == "host_to_device_memcpy_ce")
    assert (round(c.value, 1), c.reference, c.line_rate) == (55.5, 55.43, 63.0)
    local = next(c for c in q.checks if c.test == "device_local_copy")
    assert local.reference == 2094.6 and local.line_rate == 4800.0  # H200 datasheet HBM


def test_eight_h100_nv18_matches_the_published_figure_for_eight_ranks_only():
    r = qd.multi_gpu(8, 18)
    ref, why = match(r)
    assert ref is not None and ref.id == "h100-8gpu-nvswitch-published" and "NV18" in why
    q = judge(r)
    ar = [c for c in q.checks if c.test == "all_reduce"]
    assert ar and all(c.reference == 480.0 for c in ar if c.subject.count("gpu") == 8)


def test_nothing_close_means_no_reference():
    two = qd.multi_gpu(2, 18)
    ref, why = match(two)
    assert ref is None and "2 × NVIDIA H100 80GB HBM3 (NV18)" in why and "8 GPUs, here 2" in why
    pcie = qd.multi_gpu(8, path="SYS")
    ref, why = match(pcie)
    assert ref is None and "SYS" in why
    a100 = qd.with_device("GPU renamed to an A100 for the test", name="NVIDIA A100-SXM4-80GB")
    ref, why = match(a100)
    assert ref is None and "no reference for 1 × NVIDIA A100-SXM4-80GB" in why
    q = judge(a100)
    assert q.reference is None and q.reference_note == why
    assert all(c.reference is None for c in q.checks)


def test_a_different_host_link_is_not_the_same_system():
    r = qd.with_device("GPU link maximum set to Gen4 for the test", pcie_gen_max=4, pcie_gen_current=4)
    ref, why = match(r)
    assert ref is None and "host link PCIe Gen5 x16, here PCIe Gen4 x16" in why
