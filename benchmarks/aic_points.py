"""NVIDIA AIConfigurator (AIC) predictions for aggregated vLLM serving points, to set beside gpuprobe's.

Each point is one `vllm bench serve --max-concurrency C` run: one vLLM server (tensor parallel `tp`) taking
fixed-length requests, `input_len` prompt tokens and `output_len` output tokens each. AIC models it as one
aggregated (in-flight batching) worker with batch size C:
`aiconfigurator cli estimate --backend vllm --estimate-mode agg --batch-size C ...`.

Install AIC in its own virtual environment, outside this repository (0.12.0 is the release this was written
against; its vLLM database was collected on vLLM 0.24.0):

    python3 -m venv /tmp/aic-venv
    /tmp/aic-venv/bin/pip install 'aiconfigurator==0.12.0'

Run (stdlib only; any Python >= 3.11; gpuprobe is not imported):

    python benchmarks/aic_points.py --aic /tmp/aic-venv/bin/python points.json -o aic.json
    python benchmarks/aic_points.py --aic /tmp/aic-venv/bin/aiconfigurator points.json -o aic.json

`--aic` is either that environment's Python (AIC's Python API, `aiconfigurator.cli.api.cli_estimate`, is
called in a child process and its result dict read back as JSON) or the `aiconfigurator` executable (the CLI
is run and its summary box parsed; figures are rounded to what it prints). Every point runs in its own child
process with a time limit (`--timeout`, 120 s); one point takes about 5-7 s, mostly loading AIC's database.

points.json is a list of objects:

    {"system": "h200_sxm", "model": "Llama-3.1-8B", "tp": 1, "concurrency": 64,
     "input_len": 1024, "output_len": 128, "quantization": null}

optional keys:
    quantization     null: as the checkpoint says (AIC reads quantization_config from config.json);
                     "bf16": force BF16; "fp8": per-tensor FP8 weights and activations (vLLM
                     `--quantization fp8` on a BF16 checkpoint); "fp8_block": 128x128 block FP8 (the
                     Qwen3-*-FP8 checkpoints); another AIC GEMM mode name is passed on as it is.
    kv_cache_dtype   "auto" (default: BF16 KV cache and attention, as vLLM's kv_cache_dtype=auto does even
                     for FP8 checkpoints, where AIC on its own would assume an FP8 KV cache) or "fp8".
    model_config     path to a Hugging Face config.json (or a folder holding one) for a model AIC does not
                     ship; without it AIC downloads config.json from the Hub, which needs network access.
    moe_ep           expert-parallel size for MoE models (default 1: vLLM without --enable-expert-parallel
                     shards experts by tensor parallelism, moe_tp = tp).
    ctx_tokens       AIC's prefill token budget per engine step (default: input_len).
    backend_version  AIC database version (default: AIC's "current" for the system).

Model names: short names of models AIC ships a config for are mapped to AIC's name (Llama-3.1-8B ->
meta-llama/Meta-Llama-3.1-8B; an -Instruct suffix maps to the base model, same shapes); `--model-configs DIR`
looks up DIR/<name in lower case>.json, with or without -instruct (the layout of tests/data/configs), for
other models; anything else is given to AIC as it is (a Hugging Face id or a local folder).

Output, per point: `output_tokens_per_s` (AIC's tokens/s: whole server, counting output_len - 1 tokens per
request, the first token being part of TTFT), `output_tokens_per_s_all_tokens` (the same x output_len /
(output_len - 1), which counts every output token as `vllm bench serve`'s output throughput does), `ttft_ms`,
`tpot_ms` (mean time per output token after the first, as vllm bench's TPOT), `request_latency_ms`,
`memory_gb`, the quantization modes AIC used, AIC's warnings, the command run, AIC's version and the
database (backend, version, system) it read; or `ok: false` and a `reason`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_TIMEOUT_S = 120.0

# Short names (lower case, organisation dropped) of models whose config.json AIC 0.12 ships, to AIC's name.
AIC_MODELS = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "llama-3.1-405b": "meta-llama/Meta-Llama-3.1-405B",
    "meta-llama-3.1-405b": "meta-llama/Meta-Llama-3.1-405B",
    "llama-3.1-70b-instruct-fp8": "nvidia/Llama-3.1-70B-Instruct-FP8",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-32b-fp8": "Qwen/Qwen3-32B-FP8",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-30b-a3b-fp8": "Qwen/Qwen3-30B-A3B-FP8",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "qwen3-235b-a22b-fp8": "Qwen/Qwen3-235B-A22B-FP8",
    "mixtral-8x7b-v0.1": "mistralai/Mixtral-8x7B-v0.1",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
}

# Point quantization -> AIC GEMM / MoE quant modes.
QUANT_MODES = {
    "bf16": ("bfloat16", "bfloat16"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "fp8": ("fp8", "fp8"),
    "fp8_block": ("fp8_block", "fp8_block"),
}
AIC_GEMM_MODES = {"bfloat16", "int8_wo", "int4_wo", "fp8", "fp8_static", "sq", "fp8_block", "fp8_ootb", "nvfp4",
                  "nvfp4_wo", "w4a16_nvfp4"}

# cli_estimate keyword -> CLI flag.
CLI_FLAGS = {
    "model_path": "--model-path",
    "system_name": "--system",
    "backend_name": "--backend",
    "mode": "--estimate-mode",
    "backend_version": "--perf-db-version",
    "isl": "--isl",
    "osl": "--osl",
    "batch_size": "--batch-size",
    "ctx_tokens": "--ctx-tokens",
    "tp_size": "--tp-size",
    "moe_tp_size": "--moe-tp-size",
    "moe_ep_size": "--moe-ep-size",
    "gemm_quant_mode": "--gemm-quant-mode",
    "moe_quant_mode": "--moe-quant-mode",
    "kvcache_quant_mode": "--kvcache-quant-mode",
    "fmha_quant_mode": "--fmha-quant-mode",
}

# Run by the AIC Python in a child process: one point, its result as one JSON line.
API_DRIVER = r"""
import json, logging, sys, warnings
warnings.filterwarnings("ignore")
kwargs = json.loads(sys.argv[1])
notes = []
class Keep(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            notes.append(record.getMessage())
for name in ("", "aiconfigurator", "aiconfigurator_core"):
    logging.getLogger(name).addHandler(Keep())
out = {}
try:
    import aiconfigurator
    out["version"] = getattr(aiconfigurator, "__version__", None)
    from importlib import metadata
    try:
        out["core_version"] = metadata.version("aiconfigurator-core")
    except Exception:
        out["core_version"] = None
    from aiconfigurator.cli.api import cli_estimate
    result = cli_estimate(**kwargs)
    out.update(ok=True, ttft=result.ttft, tpot=result.tpot, backend_version=result.backend_version,
               kv_cache_warning=result.kv_cache_warning, raw=result.raw)
except Exception as exc:
    out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
out["warnings"] = notes
plain = lambda o: o.item() if hasattr(o, "item") else str(o)
print("AIC_POINT_JSON " + json.dumps(out, default=plain), flush=True)
"""

# AIC log lines that say nothing about the point (database tables of other model families, the notice that
# the `aiconfigurator` distribution is moving to `aisimulate`).
NOISE = ("low-fidelity fallback rows", "deprecated AIConfigurator distribution", "DeprecationWarning",
         "sys.exit(main())")

DEFINITIONS = {
    "output_tokens_per_s": "AIC tokens/s: whole-server output throughput counting output_len - 1 tokens per "
                           "request (min of engine-step throughput and the Little's-law bound "
                           "C*(O-1)/(TTFT+TPOT*(O-1)))",
    "output_tokens_per_s_all_tokens": "output_tokens_per_s * O/(O-1): every output token counted, as vllm bench "
                                      "serve's output throughput",
    "ttft_ms": "AIC TTFT: prefill time of one request (ceil(I/ctx_tokens) steps) + 0.8 ms per layer, times "
               "min(1 + log2(C)/8, 2) for waiting behind other prefills; a calibrated factor, not a queue model",
    "tpot_ms": "AIC TPOT: mean engine-step time over the decode steps (first token excluded), as vllm bench's "
               "(latency - ttft)/(output_len - 1)",
    "request_latency_ms": "ttft_ms + tpot_ms * (O - 1)",
}


def _model_key(name: str) -> str:
    return name.rstrip("/").split("/")[-1].lower()


def resolve_model(point: dict, config_dirs: list[Path], work: Path) -> tuple[str, str | None]:
    """(model path given to AIC, source of a config.json that was copied for it, if any)."""
    model = str(point["model"])
    given = point.get("model_config")
    if given:
        src = Path(given)
        if src.is_dir():
            return str(src), str(src)
        return _config_folder(src, _model_key(model), work), str(src)
    if Path(model).is_dir():
        return model, None
    key = _model_key(model)
    for k in (key, key.removesuffix("-instruct")):
        if k in AIC_MODELS:
            return AIC_MODELS[k], None
    for folder in config_dirs:
        for k in dict.fromkeys((key, key.removesuffix("-instruct"), key.removesuffix("-instruct") + "-instruct")):
            src = folder / f"{k}.json"
            if src.is_file():
                return _config_folder(src, k, work), str(src)
    return model, None


def _config_folder(src: Path, key: str, work: Path) -> str:
    folder = work / re.sub(r"[^A-Za-z0-9._-]", "_", key)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / "config.json")
    return str(folder)


def estimate_kwargs(point: dict, model_path: str) -> dict:
    """cli_estimate keywords for one point (the CLI flags are derived from these)."""
    tp = int(point.get("tp", 1))
    ep = int(point.get("moe_ep", 1))
    if tp % ep:
        raise ValueError(f"moe_ep {ep} does not divide tp {tp}")
    kw = {
        "model_path": model_path,
        "system_name": str(point["system"]),
        "backend_name": "vllm",
        "mode": "agg",
        "isl": int(point["input_len"]),
        "osl": int(point["output_len"]),
        "batch_size": int(point["concurrency"]),
        "tp_size": tp,
        "moe_tp_size": tp // ep,
        "moe_ep_size": ep,
    }
    if point.get("ctx_tokens") is not None:
        kw["ctx_tokens"] = int(point["ctx_tokens"])
    if point.get("backend_version"):
        kw["backend_version"] = str(point["backend_version"])
    quant = point.get("quantization")
    if quant is not None:
        quant = str(quant).lower()
        if quant in QUANT_MODES:
            kw["gemm_quant_mode"], kw["moe_quant_mode"] = QUANT_MODES[quant]
        elif quant in AIC_GEMM_MODES:
            kw["gemm_quant_mode"] = quant
        else:
            raise ValueError(f"unknown quantization {quant!r}: use null, bf16, fp8, fp8_block or an AIC GEMM mode")
    kv = str(point.get("kv_cache_dtype") or "auto").lower()
    if kv in ("auto", "bf16", "bfloat16"):
        kw["kvcache_quant_mode"] = kw["fmha_quant_mode"] = "bfloat16"
    elif kv == "fp8":
        kw["kvcache_quant_mode"] = "fp8"
    else:
        raise ValueError(f"unknown kv_cache_dtype {kv!r}: use auto or fp8")
    return kw


def cli_args(kw: dict) -> list[str]:
    args = ["cli", "estimate"]
    for key, flag in CLI_FLAGS.items():
        if key in kw:
            args += [flag, str(kw[key])]
    return [*args, "--no-color", "--log-level", "INFO"]


def run_child(argv: list[str], timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None on time-out, stdout + stderr, seconds); the child's process group is killed."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", NO_COLOR="1")
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    return code, out or "", time.monotonic() - start


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.eE+-]", "", text.split()[0]))


def _useful_warnings(lines: list[str]) -> list[str]:
    kept = [w.strip() for w in lines if w.strip() and not any(n in w for n in NOISE)]
    return list(dict.fromkeys(kept))


def _error_reason(output: str, code: int | None) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not any(n in ln for n in NOISE)]
    for line in reversed(lines):
        if re.match(r"^([A-Za-z_.]*Error|Error|aiconfigurator \w+: error):", line):
            return line
    return lines[-1] if lines else f"exit code {code}, no output"


def parse_cli(output: str) -> dict:
    """Figures from `aiconfigurator cli estimate`'s summary box (and the quant-mode log line)."""
    box = {}
    for m in re.finditer(r"^\s{2}([A-Za-z/() ]+?):\s+(\S.*?)\s*$", output, re.M):
        box.setdefault(m.group(1).strip(), m.group(2))
    res = {"ttft": _number(box["TTFT"]), "tpot": _number(box["TPOT"]), "raw": {}}
    fields = {"tokens/s": "tokens/s", "tokens/s/gpu": "tokens/s/gpu", "tokens/s/user": "tokens/s/user",
              "seq/s": "seq/s", "Request Latency": "request_latency", "Memory (GPU)": "memory",
              "Concurrency": "concurrency"}
    for label, key in fields.items():
        if label in box:
            res["raw"][key] = _number(box[label])
    m = re.match(r"(\S+)\s*\(([^)]*)\)", box.get("Backend", ""))
    if m:
        res["raw"]["backend"], res["backend_version"] = m.group(1), m.group(2)
    res["raw"]["system"] = box.get("System")
    q = re.search(r"Resolved quant modes for \S+: (.*)$", output, re.M)
    if q:
        for part in q.group(1).split():
            name, _, value = part.partition("=")
            res["raw"][name] = value.rsplit(".", 1)[-1]
    warn = [ln.split("] ", 3)[-1] for ln in output.splitlines() if re.search(r"\[(W|WARNING)\]", ln)]
    res["warnings"] = warn
    res["kv_cache_warning"] = next((w for w in warn if "KV cache capacity" in w), None)
    return res


def one_point(point: dict, aic: str, mode: str, config_dirs: list[Path], work: Path, timeout: float) -> dict:
    row: dict = {"input": point, "ok": False}
    try:
        model_path, config_src = resolve_model(point, config_dirs, work)
        kw = estimate_kwargs(point, model_path)
    except (KeyError, ValueError, OSError) as exc:
        row["reason"] = f"bad point: {exc!r}"
        return row
    row["aic_model"] = model_path
    if config_src:
        row["model_config_source"] = config_src
    row["cli_equivalent"] = ["aiconfigurator", *cli_args(kw)]
    if mode == "api":
        argv = [aic, "-c", API_DRIVER, json.dumps(kw)]
        row["command"] = [aic, "-c", "<API_DRIVER in benchmarks/aic_points.py>", json.dumps(kw)]
        row["api_call"] = f"aiconfigurator.cli.api.cli_estimate(**{json.dumps(kw)})"
    else:
        argv = [aic, *cli_args(kw)]
        row["command"] = argv
    code, output, elapsed = run_child(argv, timeout)
    row["elapsed_s"] = round(elapsed, 2)
    if code is None:
        row["reason"] = f"timed out after {timeout:g} s"
        return row
    if mode == "api":
        line = next((ln for ln in reversed(output.splitlines()) if ln.startswith("AIC_POINT_JSON ")), None)
        if line is None:
            row["reason"] = _error_reason(output, code)
            return row
        res = json.loads(line.removeprefix("AIC_POINT_JSON "))
        row["aic_version"] = res.get("version")
        if not res.get("ok"):
            row["reason"] = res.get("error")
            row["warnings"] = _useful_warnings(res.get("warnings", []))
            return row
    else:
        if code != 0:
            row["reason"] = _error_reason(output, code)
            return row
        try:
            res = parse_cli(output)
        except (KeyError, ValueError, IndexError) as exc:
            row["reason"] = f"could not read AIC's output ({exc!r}): {_error_reason(output, code)}"
            return row
    raw = res.get("raw") or {}
    osl = kw["osl"]
    tps = raw.get("tokens/s")
    row.update(
        ok=True,
        output_tokens_per_s=tps,
        output_tokens_per_s_all_tokens=tps * osl / (osl - 1) if tps is not None and osl > 1 else None,
        ttft_ms=res["ttft"],
        tpot_ms=res["tpot"],
        request_latency_ms=raw.get("request_latency"),
        memory_gb=raw.get("memory"),
        database={"backend": raw.get("backend", "vllm"), "version": res.get("backend_version"),
                  "system": raw.get("system", kw["system_name"])},
        quant={k: raw.get(k) for k in ("gemm", "moe", "kvcache", "fmha", "comm")},
        kv_cache_warning=res.get("kv_cache_warning"),
        warnings=_useful_warnings(res.get("warnings", [])),
        reason=None,
    )
    return row


def aic_version(aic: str, mode: str, timeout: float) -> dict:
    if mode == "api":
        code = ("import json\nfrom importlib import metadata\nv = {}\nfor d in ('aiconfigurator', "
                "'aiconfigurator-core'):\n    try:\n        v[d] = metadata.version(d)\n    except Exception:\n"
                "        v[d] = None\nprint(json.dumps(v))")
        rc, out, _ = run_child([aic, "-c", code], timeout)
        try:
            v = json.loads(out.strip().splitlines()[-1])
            return {"version": v.get("aiconfigurator"), "core_version": v.get("aiconfigurator-core")}
        except (ValueError, IndexError):
            return {"version": None, "error": _error_reason(out, rc)}
    rc, out, _ = run_child([aic, "version"], timeout)
    m = re.search(r"aiconfigurator\s+(\S+)", out)
    return {"version": m.group(1)} if m else {"version": None, "error": _error_reason(out, rc)}


def pick_mode(aic: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "api" if Path(aic).name.lower().startswith("python") else "cli"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("points", type=Path, help="JSON list of points")
    p.add_argument("--aic", required=True, help="AIC's Python (API) or its aiconfigurator executable (CLI)")
    p.add_argument("-o", "--output", type=Path, help="output JSON (default: standard output)")
    p.add_argument("--mode", choices=("auto", "api", "cli"), default="auto",
                   help="auto: api when --aic names a python, else cli")
    p.add_argument("--model-configs", type=Path, action="append", default=[],
                   help="folder of <model name in lower case>.json config files (repeatable)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per point (default 120)")
    a = p.parse_args(argv)
    aic = shutil.which(a.aic) or a.aic
    if not Path(aic).exists():
        p.error(f"--aic {a.aic}: not found")
    points = json.loads(a.points.read_text())
    if not isinstance(points, list):
        p.error("points file must hold a JSON list")
    mode = pick_mode(aic, a.mode)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aic-points-") as tmp:
        rows = []
        for i, point in enumerate(points, 1):
            row = one_point(point, aic, mode, a.model_configs, Path(tmp), a.timeout)
            rows.append(row)
            shown = f"{row['output_tokens_per_s']:.0f} tok/s" if row["ok"] else f"no prediction: {row['reason']}"
            print(f"[{i}/{len(points)}] {point.get('system')} {point.get('model')} tp{point.get('tp', 1)} "
                  f"C={point.get('concurrency')}: {shown} ({row.get('elapsed_s', 0):.1f} s)", file=sys.stderr)
    version = aic_version(aic, mode, a.timeout)
    databases = sorted({f"{r['database']['system']}: {r['database']['backend']} {r['database']['version']}"
                        for r in rows if r["ok"]})
    doc = {
        "aic": {"path": aic, "mode": mode, **version, "databases": databases},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "timeout_s": a.timeout,
        "wall_s": round(time.monotonic() - started, 1),
        "definitions": DEFINITIONS,
        "points": rows,
    }
    text = json.dumps(doc, indent=2) + "\n"
    if a.output:
        a.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0 if not rows or any(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
