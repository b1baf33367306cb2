"""The result model: lossless JSON round trip of a real capture, atomic writes, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe import load_results, save_results
from gpuprobe.errors import ResultsFileError
from gpuprobe.results.model import SCHEMA_VERSION, Measurement, Results, RunInfo, reverse_note
from gpuprobe.results.serde import SerdeError, from_data, to_data
from gpuprobe.results.stats import summarize


def test_real_capture_round_trips_losslessly(h100_results_path: Path, tmp_path: Path) -> None:
    res = load_results(h100_results_path)
    assert res.schema_version == SCHEMA_VERSION
    assert res.devices and res.devices[0].name.startswith("NVIDIA H100")
    assert res.run.driver_version and res.run.cuda_runtime_version and res.run.started_utc.startswith("2026-11-25")
    out = tmp_path / "copy.json"
    save_results(res, out)
    again = load_results(out)
    assert again == res
    # the same document, with the fields added since written out at their defaults
    before = json.loads(h100_results_path.read_text())
    before = {**before, "cuda_unavailable": None, "cluster": None,
              "run": {**before["run"], "cpu_model": None, "host_python_loop_ns": None},
              "measurements": [{**m, "reverse_gbps": None} for m in before["measurements"]]}
    assert json.loads(out.read_text()) == before


def test_reverse_rate_is_read_from_the_field_or_from_an_older_file_note(h100_results_path: Path) -> None:
    res = load_results(h100_results_path)
    bidir = [m for m in res.measurements if m.probe.startswith("host_to_device_bidirectional") and m.status == "ok"]
    assert bidir and all(m.reverse_gbps is None for m in bidir)  # written before the field
    m = bidir[0]
    rate = m.reverse_rate_gbps()
    assert rate is not None and reverse_note(rate) in m.notes
    m.reverse_gbps = 12.5
    assert m.reverse_rate_gbps() == 12.5
    one_way = next(x for x in res.measurements if x.traffic == "unidirectional")
    assert one_way.reverse_rate_gbps() is None


def test_real_capture_has_every_measurement_with_samples_and_stats(h100_results_path: Path) -> None:
    res = load_results(h100_results_path)
    ok = [m for m in res.measurements if m.status == "ok"]
    assert len(ok) >= 15
    for m in ok:
        assert m.samples and m.stat is not None and m.stat.n == len(m.samples)
        assert m.stat.min <= m.stat.median <= m.stat.max
        assert summarize(m.samples) == m.stat
        assert m.unit in ("GB/s", "us", "ns")
    for m in res.measurements:
        if m.status == "waived":
            assert m.reason and m.value is None


def test_summarize_statistics() -> None:
    s = summarize([3.0, 1.0, 2.0, float("nan")])
    assert (s.n, s.median, s.min, s.max, s.mean) == (3, 2.0, 1.0, 3.0, 2.0)
    assert s.cv == pytest.approx(s.stdev / 2.0) and s.p95 == 3.0
    assert summarize([]) is None


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    res = Results(run=RunInfo(gpuprobe_version="0", started_utc="2026-11-25T00:00:00+00:00"))
    path = tmp_path / "r.json"
    save_results(res, path)
    res.measurements.append(Measurement(probe="x", status="waived", unit="GB/s", reason="because"))
    save_results(res, path)
    assert load_results(path).measurements[0].reason == "because"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[1, 2]", "not a gpuprobe results file"),
        ('{"kind": "something else"}', "not a gpuprobe results file"),
        ('{"kind": "gpuprobe.results", "schema_version": 99}', "schema version 99"),
        ('{"kind": "gpuprobe.results", "schema_version": 1}', "missing field 'run'"),
        ('{"kind": "gpuprobe.results", "schema_version": 1, "run": {"gpuprobe_version": 1, "started_utc": "x"}}',
         "expected a string"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, content: str, fragment: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ResultsFileError) as exc:
        load_results(p)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="does not exist"):
        load_results(tmp_path / "nope.json")
    with pytest.raises(ResultsFileError, match="is a directory"):
        load_results(tmp_path)


def test_serde_rejects_unknown_fields_and_bad_literals() -> None:
    with pytest.raises(SerdeError, match="unknown field"):
        from_data(Measurement, {"probe": "p", "status": "ok", "unit": "GB/s", "bogus": 1})
    with pytest.raises(SerdeError, match="is not one of"):
        from_data(Measurement, {"probe": "p", "status": "fine", "unit": "GB/s"})
    m = Measurement(probe="p", status="ok", unit="GB/s", samples=[1.0, float("inf")])
    assert to_data(m)["samples"] == [1.0, None]
