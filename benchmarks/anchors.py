"""Fidelity and speed of a results file against the nvbandwidth anchor figures of the same kind of GPU.

    python benchmarks/anchors.py RESULTS.json [ANCHORS.json]

Prints a Markdown table: gpuprobe's median, the anchor, and the ratio oriented so that >= 1 means "at
least as good as the anchor" (bandwidth: ours / anchor; latency: anchor / ours), plus the probe times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpuprobe.results.io import load_results

HERE = Path(__file__).resolve().parent


def compare(results_path: str, anchors_path: str = str(HERE / "anchors_h100.json")) -> str:
    res = load_results(results_path)
    anchors = json.loads(Path(anchors_path).read_text())
    gpu = ", ".join(sorted({d.name for d in res.devices})) or "?"
    lines = [f"GPU: {gpu}; gpuprobe {res.run.gpuprobe_version}, {res.run.started_utc}, driver "
             f"{res.run.driver_version}, CUDA runtime {res.run.cuda_runtime_version}",
             f"Anchor: {anchors['source']}", "",
             "| test | gpuprobe (median) | anchor | ratio | gpuprobe time (s) |", "|---|---:|---:|---:|---:|"]
    anchor_time = 0.0
    for key, a in anchors["figures"].items():
        ms = [m for m in res.measurements if m.probe == key and m.status == "ok" and m.value is not None]
        secs = res.probe_seconds.get(key)
        anchor_time += secs or 0.0
        if not ms:
            lines.append(f"| {key} | not measured | {a['value']} {a['unit']} | — | — |")
            continue
        v = ms[0].value
        ratio = v / a["value"] if a["unit"] == "GB/s" else a["value"] / v
        lines.append(f"| {key} | {v:,.2f} {a['unit']} | {a['value']:,.2f} {a['unit']} | {ratio:.3f} | {secs:.2f} |")
    total = sum(res.probe_seconds.values())
    nvb = anchors["whole_run_seconds"]
    lines += ["", f"Time for the same {anchors['whole_run_tests']} tests: {anchor_time:.2f} s of probe time "
              f"(nvbandwidth: {nvb} s wall; {nvb / anchor_time:.1f}x)" if anchor_time else "",
              f"Whole gpuprobe suite ({len(res.probe_seconds)} probes): {total:.2f} s of probe time, "
              f"{res.setup_seconds or 0:.2f} s setup."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(*sys.argv[1:]))
