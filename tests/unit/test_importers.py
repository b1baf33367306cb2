"""Other tools' real outputs read into the result model give exactly the figures they printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers import detect, import_file, import_text, load_any
from gpuprobe.results.io import results_from_data
from gpuprobe.results.serde import to_data

DATA = Path(__file__).resolve().parents[1] / "data"
NVB_TXT = DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.txt"
NVB_JSON = DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.json"
NCCL_TXT = DATA / "nccl-tests" / "nccl-tests-all_reduce-h100x1.txt"
NCCL_JSON = DATA / "nccl-tests" / "nccl-tests-all_reduce-h100x1.json"
TOPO_DGX1 = DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt"
TOPO_2GPU = DATA / "nvidia-smi-topo" / "rtx5090-2gpu-phb.txt"


def _round_trip(path: Path):
    """Import, then save and reload through the results-file contract (what `gpuprobe import -o` writes)."""
    res = import_file(path)
    return results_from_data(json.loads(json.dumps(to_data(res), allow_nan=False)))


def test_nvbandwidth_text_gives_the_printed_figures() -> None:
    res = _round_trip(NVB_TXT)
    assert res.run.source == "nvbandwidth" and res.run.options["tool_version"] == "v0.8"
    assert (res.run.hostname, res.run.driver_version, res.run.cuda_runtime_version) == ("vm", "580.159.04", "13.0")
    assert [(d.index, d.name, d.pci_bus_id) for d in res.devices] == [(0, "NVIDIA H100 80GB HBM3", "00000000:00:06")]
    got = {m.probe: (m.value, m.unit, m.src, m.dst) for m in res.measurements}
    assert got == {
        "host_to_device_memcpy_ce": (52.78, "GB/s", "host", "gpu0"),
        "device_to_host_memcpy_ce": (55.11, "GB/s", "gpu0", "host"),
        "host_to_device_bidirectional_memcpy_ce": (42.48, "GB/s", "host", "gpu0"),
        "device_to_host_bidirectional_memcpy_ce": (29.41, "GB/s", "gpu0", "host"),
        "host_to_device_memcpy_sm": (30.65, "GB/s", "host", "gpu0"),
        "device_to_host_memcpy_sm": (52.39, "GB/s", "gpu0", "host"),
        "device_local_copy": (1488.21, "GB/s", "gpu0", "gpu0"),
        "host_device_latency_sm": (1200.14, "ns", "host", "gpu0"),
    }
    bidir = res.find("host_to_device_bidirectional_memcpy_ce")[0]
    assert bidir.traffic == "bidirectional" and bidir.engine == "ce" and bidir.direction == "h2d"
    assert res.find("device_local_copy")[0].path_class == "HBM"
    assert all(m.status == "ok" and m.stat and m.stat.n == 1 for m in res.measurements)
    assert res.status == "complete"


def test_nvbandwidth_json_gives_the_strings_of_its_matrix() -> None:
    res = _round_trip(NVB_JSON)
    got = {m.probe: m.value for m in res.measurements}
    assert got == {"host_to_device_memcpy_ce": 52.5877, "device_to_host_memcpy_ce": 55.0941}
    assert res.devices[0].name == "NVIDIA H100 80GB HBM3" and res.run.hostname == "vm"


def test_nvbandwidth_pairwise_orientation_waived_and_na() -> None:
    gpus = ["0: A (00000000:01:00): (h)", "1: A (00000000:02:00): (h)"]
    doc = {"nvbandwidth": {"version": "v0.8", "GPU Device list": gpus,
                           "testcases": [
                               {"name": "device_to_device_memcpy_read_ce", "status": "Passed",
                                "bandwidth_description": "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)",
                                "bandwidth_matrix": [["N/A", "10.5"], ["20.25", "N/A"]], "sum": 30.75},
                               {"name": "device_to_device_memcpy_write_ce", "status": "Passed",
                                "bandwidth_description": "memcpy CE GPU(row) <- GPU(column) bandwidth (GB/s)",
                                "bandwidth_matrix": [["N/A", "11"], ["N/A", "N/A"]], "sum": 11},
                               {"name": "device_to_device_memcpy_read_sm", "status": "Waived"}]}}
    res = import_text(json.dumps(doc))
    read = {(m.src, m.dst, m.initiator): m.value for m in res.find("device_to_device_memcpy_read_ce")}
    assert read == {("gpu1", "gpu0", "gpu0"): 10.5, ("gpu0", "gpu1", "gpu1"): 20.25}  # row pulls from column
    write = [(m.src, m.dst, m.initiator, m.value) for m in res.find("device_to_device_memcpy_write_ce")]
    assert write == [("gpu0", "gpu1", "gpu0", 11.0)]  # row pushes into column
    assert res.find("device_to_device_memcpy_read_sm")[0].status == "waived"


def _nccl_text_rows() -> list[list[str]]:
    return [ln.split() for ln in NCCL_TXT.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_nccl_tests_text_gives_every_column_per_size() -> None:
    res = _round_trip(NCCL_TXT)
    assert res.run.source == "nccl-tests" and res.run.options["tool_version"] == "2.19.6"
    assert res.run.nccl_version == "2.28.9" and res.devices[0].name == "NVIDIA H100 80GB HBM3"
    rows = _nccl_text_rows()
    assert len(rows) == 28
    inplace = {m.size_bytes: m for m in res.find("all_reduce")}
    outplace = {m.size_bytes: m for m in res.find("all_reduce_out_of_place")}
    for c in rows:
        size = int(c[0])
        for m, off in ((outplace[size], 5), (inplace[size], 9)):
            assert (m.value, m.algbw_gbps, m.busbw_gbps, m.wrong_elements) == (
                float(c[off]), float(c[off + 1]), float(c[off + 2]), int(c[off + 3]))
            assert m.unit == "us" and m.ranks == [0] and m.direction == "collective" and m.verified is True
    assert outplace[1073741824].value == 713.25 and outplace[1073741824].algbw_gbps == 1505.4
    assert inplace[1073741824].algbw_gbps == 3e6


def test_nccl_tests_json_gives_every_figure_per_size() -> None:
    res = _round_trip(NCCL_JSON)
    data = json.loads(NCCL_JSON.read_text())
    assert res.run.options["tool_start_time_local"] == "2026-11-25 13:22:09"
    assert res.run.command[0] == "./build/all_reduce_perf"
    for r in data["results"]:
        for probe, place in (("all_reduce", "in_place"), ("all_reduce_out_of_place", "out_of_place")):
            (m,) = res.find(probe, size_bytes=r["size"])
            assert (m.value, m.algbw_gbps, m.busbw_gbps) == (
                r[place]["time"], r[place]["alg_bw"], r[place]["bus_bw"])
    assert len(res.measurements) == 2 * len(data["results"]) == 26  # 8 B ... 128 MiB by x4: 13 sizes


def test_nccl_tests_wrong_elements_is_a_mismatch() -> None:
    text = NCCL_TXT.read_text().replace("     6.60    0.00    0.00       0", "     6.60    0.00    0.00       3")
    res = import_text(text)
    (m,) = res.find("all_reduce_out_of_place", size_bytes=8)
    assert m.status == "mismatch" and m.wrong_elements == 3 and m.verified is False
    assert res.status == "partial"


def test_topo_dgx1_path_classes_nvlinks_and_affinity() -> None:
    res = _round_trip(TOPO_DGX1)
    topo = res.topology
    assert topo is not None and topo.gpu_count == 8 and len(topo.pairs) == 28
    cls = {(p.a, p.b): (p.path_class, p.nvlink_count) for p in topo.pairs}
    assert cls[0, 1] == ("NV1", 1) and cls[0, 2] == ("NV2", 2) and cls[0, 7] == ("NV2", 2)
    assert cls[0, 4] == ("SYS", 0) and cls[3, 4] == ("NV1", 1) and cls[5, 6] == ("NV1", 1)
    # symmetric in the source: every pair read from row a equals the one read from row b
    rows = [ln.split() for ln in TOPO_DGX1.read_text().splitlines() if ln.startswith("GPU")]
    for a, row in enumerate(rows):
        for b in range(8):
            if a != b:
                assert cls[min(a, b), max(a, b)][0] == row[1 + b]
    assert sum(1 for v in cls.values() if v[0].startswith("NV")) == 16
    assert res.devices[0].cpu_affinity == [*range(0, 12), *range(24, 36)]
    assert [d.numa_node for d in res.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert any("mlx5_0" in n for n in res.notes) and res.run.source == "nvidia-smi"


def test_topo_tab_separated_with_gpu_numa_id() -> None:
    res = import_file(TOPO_2GPU)
    assert [(p.a, p.b, p.path_class, p.nvlink_count) for p in res.topology.pairs] == [(0, 1, "PHB", 0)]
    assert res.devices[1].cpu_affinity == list(range(64)) and res.devices[1].numa_node == 0


def test_detect_and_load_any() -> None:
    assert detect(NVB_TXT.read_text()) == ("nvbandwidth", False)
    assert detect(NVB_JSON.read_text()) == ("nvbandwidth", True)
    assert detect(NCCL_TXT.read_text()) == ("nccl-tests", False)
    assert detect(NCCL_JSON.read_text()) == ("nccl-tests", True)
    assert detect(TOPO_DGX1.read_text()) == ("topo", False)
    h100 = DATA / "h100-probe-2026-11-25.json"
    assert detect(h100.read_text()) == ("results", True)
    assert load_any(h100).run.source == "gpuprobe"
    assert load_any(NVB_TXT).run.source == "nvbandwidth"


def test_unknown_input_is_one_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("hello\n")
    with pytest.raises(ResultsFileError, match="cannot tell"):
        import_file(p)
    with pytest.raises(ResultsFileError, match="not nvbandwidth"):
        import_file(p, kind="nvbandwidth")
    with pytest.raises(ResultsFileError, match="does not exist"):
        import_file(tmp_path / "missing.txt")
