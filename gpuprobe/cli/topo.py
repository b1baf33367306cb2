"""``gpuprobe topo``: how the GPUs are connected (NVML), optionally with measured figures on the links."""

from __future__ import annotations

from pathlib import Path

import typer

from gpuprobe.cli.output import Output
from gpuprobe.errors import GpuprobeError
from gpuprobe.report.terminal_topo import render_topology
from gpuprobe.results import load_results
from gpuprobe.results.io import write_atomic
from gpuprobe.results.serde import to_data
from gpuprobe.system.inventory import SystemFacts, load_system
from gpuprobe.topology.graph import build_graph, to_dot, to_json


def topo(
    json_out: bool = typer.Option(False, "--json", help="Print devices, topology and graph as one JSON object."),
    dot: Path | None = typer.Option(None, "--dot", metavar="FILE", help="Write the graph as Graphviz DOT."),
    results: Path | None = typer.Option(
        None, "--results", metavar="FILE", help="Attach measurements from a results file (and use its machine facts)."
    ),
    nvml_snapshot: Path | None = typer.Option(
        None, "--nvml-snapshot", metavar="FILE", help="Read NVML answers from a recorded snapshot, not the driver."
    ),
    record_nvml: Path | None = typer.Option(
        None, "--record-nvml", metavar="FILE", help="Also record every NVML answer to FILE (for --nvml-snapshot)."
    ),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
) -> None:
    """Show the GPU topology like 'nvidia-smi topo -m', with PCIe link state, NVLinks and P2P status.

    With --results, the facts stored in the results file (the measured machine) are shown,
    unless --nvml-snapshot or --record-nvml is given.
    """
    out = Output(json_mode=json_out, wide=wide)
    res = load_results(results) if results is not None else None
    if res is not None and res.devices and res.topology and nvml_snapshot is None and record_nvml is None:
        driver = {"driver_version": res.run.driver_version, "cuda_driver_version": res.run.cuda_driver_version}
        facts = SystemFacts(res.devices, res.topology, driver, origin=f"results file {results}")
    else:
        facts = load_system(nvml_snapshot=nvml_snapshot, record_to=record_nvml)
    if record_nvml is not None:
        out.info(f"NVML snapshot written to {record_nvml}")
    graph = build_graph(facts.devices, facts.topology, res)
    if dot is not None:
        try:
            write_atomic(dot, to_dot(graph), "the DOT file")
        except OSError as exc:
            raise GpuprobeError(f"cannot write {dot}: {exc.strerror or exc}", hint="check the path") from None
    if json_out:
        out.data(
            {
                "kind": "gpuprobe.topology",
                "source": facts.origin,
                "driver": facts.driver,
                "devices": to_data(facts.devices),
                "topology": to_data(facts.topology),
                "graph": to_json(graph),
            }
        )
    else:
        out.data(render_topology(facts.devices, facts.topology, facts.driver, facts.origin))
