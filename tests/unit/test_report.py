"""Report content, HTML and Markdown from the real H100 results, validation files and imported outputs."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from gpuprobe.importers import import_file
from gpuprobe.report import plots
from gpuprobe.report.content import Figure, Table, build_document
from gpuprobe.report.html import render_html
from gpuprobe.report.markdown import md_escape, render_markdown
from gpuprobe.results import load_results
from gpuprobe.results.model import DeviceInfo, GpuPair, Measurement, Topology
from gpuprobe.results.stats import summarize
from gpuprobe.validate.store import load_runs

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
H100 = DATA / "h100-probe-2026-11-25.json"
VALIDATIONS = [ROOT / "reports" / "h100-2026-11-25" / f"validation-{m}.json" for m in ("1b", "8b")]


def _blocks(doc, kind):
    return [b for s in doc.sections for b in s.blocks if isinstance(b, kind)]


def test_document_of_the_real_h100_run() -> None:
    res = load_results(H100)
    doc = build_document([(str(H100), res)], [(v.name, load_runs(v)) for v in VALIDATIONS])
    titles = [s.title for s in doc.sections]
    assert titles[:3] == ["Host and software", "Topology", "Bandwidth"]
    assert {"Latency", "All-reduce", "Predicted vs measured (real vLLM runs)"} <= set(titles)
    text = " ".join(t for _, t in doc.summary)
    assert "host → GPU 55.0 GB/s" in text and "HBM copy 1,492 GB/s" in text and "none failed" in text
    bw = next(t for t in _blocks(doc, Table) if t.columns[0] == "test" and "median GB/s" in t.columns)
    row = next(r for r in bw.rows if r[0] == "host_to_device_memcpy_ce")
    assert row[1:4] == ["host → gpu0", "512 MiB", "55.03"]
    names = {f.name for f in _blocks(doc, Figure)}
    assert {"allreduce", "validation"} <= names
    # the nccl-tests anchor of the same GPU model and rank count is named
    assert any("nccl-tests 2.19.6" in x for s in doc.sections for b in s.blocks if isinstance(b, list) for x in b)


def test_anchor_only_when_the_gpu_model_matches() -> None:
    res = load_results(H100)
    assert plots.matching_anchors(res, 1)
    assert not plots.matching_anchors(res, 2)
    other = copy.deepcopy(res)
    other.devices[0].name = "NVIDIA A100-SXM4-80GB"
    assert not plots.matching_anchors(other, 1)


def test_html_is_self_contained_and_escapes_file_strings() -> None:
    res = load_results(H100)
    evil = "<script>alert(1)</script>"
    res.run.hostname = evil
    res.problems.append(f"probe crashed: {evil} & more")
    res.measurements[0].reason = evil
    page = render_html(build_document([("evil.json", res)]))
    assert "<script" not in page.lower()
    assert html.escape(evil) in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external asset
    assert page.count("data:image/png;base64,") >= 3


def test_markdown_writes_pngs_and_escapes(tmp_path: Path) -> None:
    res = load_results(H100)
    res.run.hostname = "a|b<c>"
    written = render_markdown(build_document([(str(H100), res)]), tmp_path / "r.md")
    md = written[0].read_text()
    assert "a\\|b&lt;c&gt;" in md
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for p in pngs:
        assert f"]({p.name})" in md
    assert md_escape("x|y\nz") == "x\\|y z"


def test_several_files_side_by_side_and_imported_outputs() -> None:
    a = load_results(H100)
    b = load_results(DATA / "h100-probe-2026-11-25-run2.json")
    nvb = import_file(DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.txt")
    doc = build_document([("run1.json", a), ("run2.json", b), ("nvb.txt", nvb)])
    host = _blocks(doc, Table)[0]
    assert host.columns == ["", "run1.json", "run2.json", "nvb.txt (nvbandwidth)"]
    bw = next(t for t in _blocks(doc, Table) if t.columns[:3] == ["test", "route", "size"])
    row = next(r for r in bw.rows if r[0] == "host_to_device_memcpy_ce")
    assert row[-1] == "52.78" and len(row) == 6
    assert any(f.name == "host-bars" for f in _blocks(doc, Figure))
    page = render_html(doc)
    assert "nvbandwidth" in page


def test_pairwise_heatmap_and_path_matrix_for_several_gpus() -> None:
    res = import_file(DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt")
    for a in range(8):
        for b in range(8):
            if a != b:
                res.measurements.append(Measurement(
                    probe="device_to_device_memcpy_read_ce", status="ok", unit="GB/s", src=f"gpu{a}",
                    dst=f"gpu{b}", direction="d2d", stat=summarize([20.0 + a + b])))
    assert plots.pair_probes(res) == ["device_to_device_memcpy_read_ce"]
    assert plots.pair_heatmap(res, "device_to_device_memcpy_read_ce") is not None
    assert plots.path_matrix_figure(res) is not None and plots.topology_figure(res) is not None
    doc = build_document([("dgx1.txt", res)])
    topo_table = next(t for t in _blocks(doc, Table) if t.caption == "path classes")
    assert topo_table.rows[0][:4] == ["GPU0", "X", "NV1", "NV2"]
    assert render_html(doc).count("data:image/png") >= 3


def test_qualification_verdicts_are_rendered() -> None:
    qm = pytest.importorskip("gpuprobe.qualify")
    res = load_results(H100)
    q = qm.judge(res)
    doc = build_document([("h100.json", res)], qualifications=[q])
    sec = next(s for s in doc.sections if s.title == "Qualification")
    table = next(b for b in sec.blocks if isinstance(b, Table))
    assert len(table.rows) == len(q.checks)
    assert doc.summary[0][1].startswith(f"qualification {q.verdict}")


def test_topology_figure_without_devices_is_none() -> None:
    res = load_results(H100)
    res.devices, res.measurements, res.topology = [], [], None
    assert plots.topology_figure(res) is None
    res.devices = [DeviceInfo(index=0, name="x"), DeviceInfo(index=1, name="x")]
    res.topology = Topology(gpu_count=2, pairs=[GpuPair(0, 1, "PHB")])
    assert plots.topology_figure(res) is not None


def test_ranks_label_keeps_a_large_group_short():
    from gpuprobe.report.fmt import ranks_label

    assert ranks_label([0, 1, 2, 3]) == "0,1,2,3"
    assert ranks_label(list(range(1024))) == "0-1023 (1,024 ranks)"
    assert ranks_label([0, 8, 16, 24, 32, 40, 48, 56, 64]) == "0,8,16,24,... (9 ranks)"
