"""The fuzz cases: each a command line over a mutated real file of tests/data, a hostile option value or a hostile
output path, with the checks its outcome must pass. Built deterministically (``fuzzgen``'s seeds come from the case
name); the bytes of a mutated file are made only when its case runs."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fuzzgen
from harness import (
    BAD_FILE,
    BAD_USAGE,
    DATA,
    MISSING,
    OK,
    PARTIAL,
    QUALIFY_FAIL,
    QUALIFY_WARN,
    Findings,
    Outcome,
    OutPath,
    check_out_path,
    check_results_accepted,
    check_stdout_json,
    check_written_results,
    make_out_path,
    strict_json,
)

COMMANDS = ("probe", "topo", "recommend", "validate", "qualify", "report", "compare", "import")

RESULTS_SOURCES = (
    "h100-probe-2026-11-25.json",
    "h100-probe-quick-2026-11-25.json",
    "h100-probe-2026-11-25-run2.json",
    "gloo/gloo-allreduce-3ranks-cpu.json",
    "vllm-h200-2026-12-01/probe-machine1.json",
    "vllm-h100-2026-11-25/machine2-probe.json",
)
TEXT_SOURCES = (
    "nvbandwidth/nvbandwidth-h100-2026-11-25.txt",
    "nvbandwidth/nvbandwidth-h200-2026-12-01.txt",
    "nccl-tests/nccl-tests-all_reduce-h100x1.txt",
    "nvidia-smi-topo/dgx1-v100-8gpu.txt",
    "nvidia-smi-topo/rtx5090-2gpu-phb.txt",
)
IMPORT_JSON_SOURCES = (
    "nvbandwidth/nvbandwidth-h100-2026-11-25.json",
    "nvbandwidth/nvbandwidth-h200-2026-12-01.json",
    "nccl-tests/nccl-tests-all_reduce-h100x1.json",
)
CONFIG_SOURCES = (
    "configs/llama-3.1-8b.json",
    "configs/qwen3-30b-a3b.json",
    "configs/deepseek-v3.json",
    "configs/gemma-2-9b.json",
    "configs/mixtral-8x7b-v0.1.json",
    "configs/qwen2.5-7b-instruct-awq.json",
)
VALIDATION_SOURCES = (
    "vllm/validation-cpu-tp1-tp2.json",
    "vllm-h200-2026-12-01/qwen3-8b-fp8-graphs.json",
    "vllm-h200-2026-12-01/mem-llama-3.1-8b-2l-s64-t2048.json",
    "vllm-h100-2026-11-25/machine3-validation-1b-rep1.json",
)
NVML_SOURCE = "nvml-h100-2026-11-25.json"
QUICK = DATA / "h100-probe-quick-2026-11-25.json"
FULL = DATA / "h100-probe-2026-11-25.json"
CONFIG = DATA / "configs" / "llama-3.2-1b.json"
SMALL = DATA / "nvidia-smi-topo" / "rtx5090-2gpu-phb.txt"
"""The quickest real input of a report (a topology, no plots): where the report's content is not the point."""
CALIBRATION = DATA.parent.parent / "reports" / "h100-2026-11-25" / "machine2" / "calibration.json"

THRESHOLDS_JSON = {
    "warn": 0.85, "fail": 0.75, "replay_fail": 80, "outlier_below_median": 0.85, "nvlinks_expected": 0,
    "tests": {"host_to_device_bidirectional_memcpy_ce": {"warn": 0.6, "fail": 0.4, "expected": 45.0, "skip": False},
              "device_to_device_*": {"warn": 0.7}},
    "gpus": {"H100": {"warn": 0.9, "tests": {"device_local_copy": {"expected": 1450}}}},
}  # fmt: skip
THRESHOLDS_TOML = """warn = 0.85
fail = 0.75
replay_fail = 80
outlier_below_median = 0.85
nvlinks_expected = 0

[tests.host_to_device_bidirectional_memcpy_ce]
warn = 0.6
fail = 0.4
expected = 45.0
skip = false

[gpus."H100"]
warn = 0.9
[gpus."H100".tests.device_local_copy]
expected = 1450
"""
LENGTHS_TEXT = "prompt,output,weight\n128,64,1\n1024,256,2\n4096,512,0.5\n# a comment\n\n2048 128\n"

QUALIFY_CODES = {OK, BAD_FILE, BAD_USAGE, QUALIFY_WARN, QUALIFY_FAIL}
QUALIFY_SUCCESS = {OK, QUALIFY_WARN, QUALIFY_FAIL}


@dataclass
class Plan:
    """What one case runs and how its outcome is judged."""

    argv: list[str]
    allowed: set[int]
    checks: list[Callable[[Findings], None]] = field(default_factory=list)
    success: set[int] = field(default_factory=lambda: {OK})


@dataclass(frozen=True)
class Case:
    command: str
    name: str
    build: Callable[[Path], Plan] = field(compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.command}-{self.name}"


# -------------------------------------------------------------------------------------------------- helpers


def _write_mutated(tmp: Path, source: str, mutation: str, seed_name: str, how: str = "json",
                   name: str | None = None) -> Path:
    raw = (DATA / source).read_bytes()
    rng = fuzzgen.rng_for(seed_name)
    if how == "json":
        data = fuzzgen.mutate_json(raw, mutation, rng)
    elif how == "config":
        data = fuzzgen.mutate_config(raw, mutation, rng)
    else:
        data = fuzzgen.mutate_text(raw, mutation, rng)
    path = tmp / (name or Path(source).name)
    path.write_bytes(data)
    return path


def _when(outcome_codes: set[int], check: Callable[[Findings], None]) -> Callable[[Findings], None]:
    def run(f: Findings) -> None:
        if f.outcome.code in outcome_codes and f.outcome.exc is None:
            check(f)

    return run


def _accepted_results(path: Path, what: str, codes: set[int] | None = None) -> Callable[[Findings], None]:
    return _when(codes or {OK}, lambda f: check_results_accepted(f, path, what))


def _json_stdout(results: bool = False, codes: set[int] | None = None) -> Callable[[Findings], None]:
    return _when(codes or {OK}, lambda f: check_stdout_json(f, f.outcome.out, results=results))


def _bad_numbers(node: Any, where: str = "") -> list[str]:
    """Non-finite or negative numbers anywhere in a parsed JSON/TOML tree."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _bad_numbers(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _bad_numbers(v, f"{where}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool) and (not math.isfinite(node) or node < 0):
        out.append(f"{where or '.'}={node!r}")
    return out


def _accepted_numbers(path: Path, what: str, codes: set[int], toml: bool = False) -> Callable[[Findings], None]:
    """The command succeeded on ``path``: no non-finite or negative number in it may have been taken."""

    def check(f: Findings) -> None:
        import tomllib

        try:
            text = path.read_bytes().decode("utf-8")
            data = tomllib.loads(text) if toml else json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return  # not readable as such: the command did not take numbers from it
        bad = _bad_numbers(data)
        if bad:
            f.add("ACCEPTED", f"{what} accepted with non-finite or negative numbers: {', '.join(bad[:3])}")

    return _when(codes, check)


CORE_DIMS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "intermediate_size",
             "vocab_size", "max_position_embeddings", "head_dim", "num_experts", "num_local_experts",
             "num_experts_per_tok", "moe_intermediate_size", "n_routed_experts")


def _accepted_config(path: Path) -> Callable[[Findings], None]:
    """recommend succeeded: the config's dimensions it used must be positive finite numbers."""

    def check(f: Findings) -> None:
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(data, dict):
            return
        scopes = [data] + [data[k] for k in ("text_config",) if isinstance(data.get(k), dict)]
        bad = [f"{k}={s[k]!r}" for s in scopes for k in CORE_DIMS
               if isinstance(s.get(k), int | float) and not isinstance(s.get(k), bool)
               and (not math.isfinite(s[k]) or s[k] <= 0)]
        if bad:
            f.add("ACCEPTED", f"model config accepted with non-finite, zero or negative dimensions: {', '.join(bad)}")

    return _when({OK}, check)


def _written_json(path: Path, kind: str | None = None) -> Callable[[Findings], None]:
    def check(f: Findings) -> None:
        if not path.is_file():
            f.add("EXIT", f"exit code 0 but {path.name} was not written")
            return
        try:
            data = strict_json(path.read_text(encoding="utf-8"))
        except BaseException as exc:  # noqa: BLE001
            f.add("UNREADABLE", f"written {path.name} is not whole strict JSON: {type(exc).__name__}: {exc}"[:300])
            return
        if kind is not None and not (isinstance(data, dict) and data.get("kind") == kind):
            f.add("UNREADABLE", f"written {path.name} is not a {kind} document")

    return _when({OK}, check)


def _no_raw_script(path: Path) -> Callable[[Findings], None]:
    """An HTML report escapes every string from its inputs (README): no injected tag survives."""

    def check(f: Findings) -> None:
        if path.is_file() and "<script>alert(1)</script>" in path.read_text(encoding="utf-8", errors="replace"):
            f.add("UNESCAPED", f"{path.name} holds a <script> tag taken from an input file")

    return _when({OK}, check)


def _still_valid_runs(path: Path) -> Callable[[Findings], None]:
    def check(f: Findings) -> None:
        from gpuprobe.validate.store import load_runs

        try:
            strict_json(path.read_text(encoding="utf-8"))
            load_runs(path)
        except BaseException as exc:  # noqa: BLE001
            f.add("UNREADABLE", f"rewritten validation file does not load back: {type(exc).__name__}: {exc}"[:300])

    return _when({OK}, check)


def _cycle(items: tuple | list, i: int) -> Any:
    return items[i % len(items)]


# ------------------------------------------------------------------------------------------- file mutations

JSON_MUTATIONS = fuzzgen.json_mutation_names()
TEXT_MUTATIONS = fuzzgen.text_mutation_names()
CONFIG_MUTATIONS = fuzzgen.config_mutation_names()


def probe_file_cases() -> list[Case]:
    cases = []
    for rep in range(4):
        for j, mut in enumerate(JSON_MUTATIONS):
            src = _cycle(RESULTS_SOURCES, rep + j)
            name = f"input-{Path(src).stem}-{mut}-{rep}"
            json_mode = (rep + j) % 2 == 0

            def build(tmp: Path, src=src, mut=mut, name=name, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, src, mut, "probe" + name)
                argv = ["probe", "--input", str(path), *(["--json"] if json_mode else []),
                        *(["--all"] if "1" in name[-1:] else [])]
                checks = [_accepted_results(path, "probe --input")]
                if json_mode:
                    checks.append(_json_stdout(results=True))
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, checks)

            cases.append(Case("probe", name, build))
    return cases


def topo_file_cases() -> list[Case]:
    cases = []
    for rep in range(2):
        for j, mut in enumerate(JSON_MUTATIONS):
            src = _cycle(RESULTS_SOURCES, rep * 2 + j)
            name = f"results-{Path(src).stem}-{mut}-{rep}"
            json_mode = (rep + j) % 2 == 1

            def build(tmp: Path, src=src, mut=mut, name=name, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, src, mut, "topo" + name)
                argv = ["topo", "--results", str(path), *(["--json"] if json_mode else [])]
                checks = [_accepted_results(path, "topo --results")]
                if json_mode:
                    checks.append(_json_stdout())
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE, MISSING}, checks)

            cases.append(Case("topo", name, build))
        for j, mut in enumerate(JSON_MUTATIONS):
            name = f"nvml-snapshot-{mut}-{rep}"
            json_mode = (rep + j) % 2 == 0

            def build(tmp: Path, mut=mut, name=name, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, NVML_SOURCE, mut, "topo" + name)
                argv = ["topo", "--nvml-snapshot", str(path), *(["--json"] if json_mode else [])]
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE, MISSING}, [_json_stdout()] if json_mode else [])

            cases.append(Case("topo", name, build))
    return cases


def qualify_file_cases() -> list[Case]:
    cases = []
    for rep in range(4):
        for j, mut in enumerate(JSON_MUTATIONS):
            src = _cycle(RESULTS_SOURCES, rep + 3 * j)
            name = f"input-{Path(src).stem}-{mut}-{rep}"
            json_mode = (rep + j) % 3 == 0

            def build(tmp: Path, src=src, mut=mut, name=name, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, src, mut, "qualify" + name)
                argv = ["qualify", "--input", str(path), *(["--json"] if json_mode else [])]
                checks = [_accepted_results(path, "qualify --input", QUALIFY_SUCCESS)]
                if json_mode:
                    checks.append(_json_stdout(codes=QUALIFY_SUCCESS))
                return Plan(argv, QUALIFY_CODES, checks, QUALIFY_SUCCESS)

            cases.append(Case("qualify", name, build))
    for mut in JSON_MUTATIONS:
        name = f"thresholds-json-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            raw = json.dumps(THRESHOLDS_JSON, indent=1).encode()
            path = tmp / "thresholds.json"
            path.write_bytes(fuzzgen.mutate_json(raw, mut, fuzzgen.rng_for("qualify" + name)))
            argv = ["qualify", "--input", str(QUICK), "--thresholds", str(path)]
            return Plan(argv, QUALIFY_CODES, [_accepted_numbers(path, "thresholds file", QUALIFY_SUCCESS)],
                        QUALIFY_SUCCESS)

        cases.append(Case("qualify", name, build))
    for mut in TEXT_MUTATIONS:
        name = f"thresholds-toml-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            path = tmp / "thresholds.toml"
            path.write_bytes(fuzzgen.mutate_text(THRESHOLDS_TOML.encode(), mut, fuzzgen.rng_for("qualify" + name)))
            argv = ["qualify", "--input", str(QUICK), "--thresholds", str(path)]
            return Plan(argv, QUALIFY_CODES, [_accepted_numbers(path, "thresholds file", QUALIFY_SUCCESS, toml=True)],
                        QUALIFY_SUCCESS)

        cases.append(Case("qualify", name, build))
    return cases


def compare_file_cases() -> list[Case]:
    cases = []
    for rep in range(3):
        for j, mut in enumerate(JSON_MUTATIONS):
            src = _cycle(RESULTS_SOURCES, rep + j)
            side = "a" if (rep + j) % 2 == 0 else "b"
            name = f"{side}-{Path(src).stem}-{mut}-{rep}"
            json_mode = rep % 2 == 1

            def build(tmp: Path, src=src, mut=mut, name=name, side=side, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, src, mut, "compare" + name)
                other = str(FULL if "quick" in src else QUICK)
                pair = [str(path), other] if side == "a" else [other, str(path)]
                argv = ["compare", *pair, *(["--json"] if json_mode else [])]
                checks = [_accepted_results(path, "compare")]
                if json_mode:
                    checks.append(_json_stdout())
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, checks)

            cases.append(Case("compare", name, build))
    for rep in range(2):
        for j, mut in enumerate(TEXT_MUTATIONS):
            src = _cycle(TEXT_SOURCES[:3], rep + j)
            name = f"capture-{Path(src).stem}-{mut}-{rep}"

            def build(tmp: Path, src=src, mut=mut, name=name) -> Plan:
                path = _write_mutated(tmp, src, mut, "compare" + name, how="text")
                argv = ["compare", str(DATA / src), str(path)]
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [_accepted_results(path, "compare")])

            cases.append(Case("compare", name, build))
    return cases


def import_file_cases() -> list[Case]:
    cases = []
    for rep in range(2):
        for src in TEXT_SOURCES:
            for j, mut in enumerate(TEXT_MUTATIONS):
                name = f"{Path(src).stem}-{mut}-{rep}"
                mode = (rep + j) % 3  # 0: -o FILE, 1: --json, 2: the table
                kind = None
                if rep == 1 and j % 4 == 0:
                    kind = "nvbandwidth" if "nvbandwidth" in src else "nccl-tests" if "nccl" in src else "topo"

                def build(tmp: Path, src=src, mut=mut, name=name, mode=mode, kind=kind) -> Plan:
                    return _import_plan(tmp, src, mut, "import" + name, "text", mode, kind)

                cases.append(Case("import", name, build))
    for rep in range(2):
        for src in IMPORT_JSON_SOURCES:
            for j, mut in enumerate(JSON_MUTATIONS):
                name = f"{Path(src).stem}-json-{mut}-{rep}"
                mode = (rep + j) % 3

                def build(tmp: Path, src=src, mut=mut, name=name, mode=mode) -> Plan:
                    return _import_plan(tmp, src, mut, "import" + name, "json", mode, None)

                cases.append(Case("import", name, build))
    return cases


def _import_plan(tmp: Path, src: str, mut: str, seed: str, how: str, mode: int, kind: str | None) -> Plan:
    path = _write_mutated(tmp, src, mut, seed, how=how)
    argv = ["import", str(path), *(["--kind", kind] if kind else [])]
    checks = [_accepted_results(path, "import")]
    if mode == 0:
        out = tmp / "imported.json"
        argv += ["-o", str(out)]
        checks.append(_when({OK}, lambda f: check_written_results(f, out)))
    elif mode == 1:
        argv.append("--json")
        checks.append(_json_stdout(results=True))
    else:
        argv.append("--all")
    return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, checks)


def recommend_file_cases() -> list[Case]:
    cases = []
    for rep in range(3):
        for j, mut in enumerate(CONFIG_MUTATIONS):
            src = _cycle(CONFIG_SOURCES, rep * 3 + j)
            name = f"config-{Path(src).stem}-{mut}-{rep}"
            variant = (rep + j) % 4  # 0, 1: --system QUICK; 2: --gpu H100-SXM --num-gpus 8; 3: --json -o

            def build(tmp: Path, src=src, mut=mut, name=name, variant=variant) -> Plan:
                folder = tmp / "model"
                folder.mkdir()
                path = _write_mutated(folder, src, mut, "recommend" + name, how="config", name="config.json")
                system = ["--gpu", "H100-SXM", "--num-gpus", "8"] if variant == 2 else ["--system", str(QUICK)]
                argv = ["recommend", "--model", str(folder if variant == 1 else path), *system]
                checks = [_accepted_config(path)]
                if variant == 3:
                    out = tmp / "rec.json"
                    argv += ["--json", "-o", str(out)]
                    checks += [_json_stdout(), _written_json(out, "gpuprobe.recommendation")]
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, checks)

            cases.append(Case("recommend", name, build))
    for j, mut in enumerate(JSON_MUTATIONS):
        src = _cycle(RESULTS_SOURCES, j)
        name = f"system-{Path(src).stem}-{mut}"

        def build(tmp: Path, src=src, mut=mut, name=name) -> Plan:
            path = _write_mutated(tmp, src, mut, "recommend" + name)
            argv = ["recommend", "--model", str(CONFIG), "--system", str(path)]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [_accepted_results(path, "recommend --system")])

        cases.append(Case("recommend", name, build))
    for mut in TEXT_MUTATIONS:
        name = f"lengths-text-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            path = tmp / "lengths.csv"
            path.write_bytes(fuzzgen.mutate_text(LENGTHS_TEXT.encode(), mut, fuzzgen.rng_for("recommend" + name)))
            argv = ["recommend", "--model", str(CONFIG), "--system", str(QUICK), "--lengths", str(path)]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [])

        cases.append(Case("recommend", name, build))
    for mut in JSON_MUTATIONS:
        name = f"lengths-json-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            path = tmp / "lengths.json"
            raw = json.dumps([[128, 64], [1024, 256, 2.0], [4096, 512, 0.5]]).encode()
            path.write_bytes(fuzzgen.mutate_json(raw, mut, fuzzgen.rng_for("recommend" + name)))
            argv = ["recommend", "--model", str(CONFIG), "--system", str(QUICK), "--lengths", str(path)]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [_accepted_numbers(path, "lengths file", {OK})])

        cases.append(Case("recommend", name, build))
    for mut in JSON_MUTATIONS:
        name = f"calibration-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            path = tmp / "calibration.json"
            raw = CALIBRATION.read_bytes()
            path.write_bytes(fuzzgen.mutate_json(raw, mut, fuzzgen.rng_for("recommend" + name)))
            argv = ["recommend", "--model", str(CONFIG), "--system", str(QUICK), "--calibration", str(path)]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [_accepted_numbers(path, "calibration file", {OK})])

        cases.append(Case("recommend", name, build))
    return cases


def report_file_cases() -> list[Case]:
    cases = []
    for j, mut in enumerate(JSON_MUTATIONS):
        src = "h100-probe-quick-2026-11-25.json" if j % 2 else "gloo/gloo-allreduce-3ranks-cpu.json"
        name = f"results-{Path(src).stem}-{mut}"
        html = j % 3 != 2

        def build(tmp: Path, src=src, mut=mut, name=name, html=html) -> Plan:
            path = _write_mutated(tmp, src, mut, "report" + name)
            out = tmp / ("report.html" if html else "report.md")
            argv = ["report", str(path), "--html" if html else "--markdown", str(out)]
            checks = [_accepted_results(path, "report")]
            if html:
                checks.append(_no_raw_script(out))
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, checks)

        cases.append(Case("report", name, build))
    for j, mut in enumerate(TEXT_MUTATIONS[::2]):
        src = _cycle(TEXT_SOURCES, j)
        name = f"capture-{Path(src).stem}-{mut}"

        def build(tmp: Path, src=src, mut=mut, name=name) -> Plan:
            path = _write_mutated(tmp, src, mut, "report" + name, how="text")
            out = tmp / "report.md"
            return Plan(["report", str(path), "--markdown", str(out), "--no-qualify"], {OK, BAD_FILE, BAD_USAGE},
                        [_accepted_results(path, "report")])

        cases.append(Case("report", name, build))
    for j, mut in enumerate(JSON_MUTATIONS[::2]):
        src = _cycle(VALIDATION_SOURCES, j)
        name = f"validation-{Path(src).stem}-{mut}"

        def build(tmp: Path, src=src, mut=mut, name=name) -> Plan:
            path = _write_mutated(tmp, src, mut, "report" + name)
            out = tmp / "report.html"
            argv = ["report", str(SMALL), "--validation", str(path), "--html", str(out), "--no-qualify"]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [_no_raw_script(out)])

        cases.append(Case("report", name, build))
    return cases


def validate_file_cases() -> list[Case]:
    cases = []
    for rep in range(2):
        for j, mut in enumerate(JSON_MUTATIONS):
            src = _cycle(VALIDATION_SOURCES, rep + j)
            name = f"compare-{Path(src).stem}-{mut}-{rep}"
            json_mode = (rep + j) % 2 == 0

            def build(tmp: Path, src=src, mut=mut, name=name, json_mode=json_mode) -> Plan:
                path = _write_mutated(tmp, src, mut, "validate" + name)
                argv = ["validate", "--compare", str(path), *(["--json"] if json_mode else [])]
                checks = [_still_valid_runs(path)]
                if json_mode:
                    checks.append(_json_stdout())
                return Plan(argv, {OK, BAD_FILE, BAD_USAGE, PARTIAL}, checks)

            cases.append(Case("validate", name, build))
    for mut in JSON_MUTATIONS:
        name = f"recommendation-{mut}"

        def build(tmp: Path, mut=mut, name=name) -> Plan:
            from harness import run_cli

            base = tmp / "rec-base.json"
            run_cli(["recommend", "--model", str(CONFIG), "--system", str(QUICK), "-o", str(base)])
            path = tmp / "rec.json"
            path.write_bytes(fuzzgen.mutate_json(base.read_bytes(), mut, fuzzgen.rng_for("validate" + name)))
            argv = ["validate", "--model", str(CONFIG), "--recommendation", str(path), "-o", str(tmp / "v.json")]
            return Plan(argv, {OK, BAD_FILE, BAD_USAGE}, [])

        cases.append(Case("validate", name, build))
    return cases


# ------------------------------------------------------------------------------------------ hostile options


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def invalid_int(minimum: int = 1) -> Callable[[str], bool | None]:
    """True when ``value`` parses as an integer below ``minimum`` (typer refuses what is not an integer)."""

    def judge(value: str) -> bool | None:
        try:
            return int(value) < minimum
        except ValueError:
            return None

    return judge


def invalid_float(low: float = 0.0, high: float = math.inf, low_open: bool = True,
                  high_open: bool = False) -> Callable[[str], bool | None]:
    """True when ``value`` is a number outside the range, or not finite (typer parses 'nan', 'inf', '1e309')."""

    def judge(value: str) -> bool | None:
        x = _num(value)
        if x is None:
            return None
        if not math.isfinite(x):
            return True
        below = x <= low if low_open else x < low
        above = x >= high if high_open else x > high
        return below or above

    return judge


def text_option(value: str) -> bool | None:
    return None


@dataclass(frozen=True)
class OptionSpec:
    command: str
    option: str
    base: tuple[str, ...]
    invalid: Callable[[str], bool | None]
    """True: the value is outside the option's domain and must be refused (exit 1 or 2)."""
    allowed: frozenset[int] = frozenset({OK, BAD_FILE, BAD_USAGE})
    accepted: frozenset[int] = frozenset({OK})
    """Exit codes that mean the value was taken."""
    values: tuple[str, ...] = tuple(fuzzgen.OPTION_VALUES)


PROBE_RUN = ("probe", "-t", "host_to_device_memcpy_ce")
QUALIFY_RUN = ("qualify", "-t", "host_to_device_memcpy_ce")
REC = ("recommend", "--model", str(CONFIG), "--system", str(QUICK))
REC_GPU = ("recommend", "--model", str(CONFIG), "--gpu", "H100-SXM")
VAL = ("validate", "--model", str(CONFIG), "--layout", "tp=1", "-o", "v.json")
VAL_CMP = ("validate", "--compare", "@validation")
RUN_CODES = frozenset({BAD_FILE, BAD_USAGE, MISSING})
"""probe/qualify without a GPU: nothing measured is exit 3 (README); a refused value 1 or 2."""

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("probe", "-b", PROBE_RUN, invalid_int(1), RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "-i", PROBE_RUN, invalid_int(1), RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "--gpus", PROBE_RUN, invalid_int(0), RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "--backend", PROBE_RUN, text_option, RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "--cpu-ranks", PROBE_RUN, invalid_int(1), RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "--allreduce-max-bytes", PROBE_RUN, invalid_int(8), RUN_CODES, frozenset({MISSING})),
    OptionSpec("probe", "-t", ("probe", "--list"), text_option),
    OptionSpec("probe", "--input", ("probe",), text_option),
    OptionSpec("qualify", "-b", QUALIFY_RUN, invalid_int(1), RUN_CODES, frozenset({MISSING})),
    OptionSpec("qualify", "--samples", QUALIFY_RUN, invalid_int(1), RUN_CODES, frozenset({MISSING})),
    OptionSpec("qualify", "--gpus", QUALIFY_RUN, invalid_int(0), RUN_CODES, frozenset({MISSING})),
    OptionSpec("qualify", "--input", ("qualify",), text_option, frozenset(QUALIFY_CODES | {MISSING}),
               frozenset(QUALIFY_SUCCESS)),
    OptionSpec("qualify", "--thresholds", ("qualify", "--input", str(QUICK)), text_option, frozenset(QUALIFY_CODES),
               frozenset(QUALIFY_SUCCESS)),
    OptionSpec("recommend", "--num-gpus", REC_GPU, invalid_int(1)),
    OptionSpec("recommend", "--gpu", ("recommend", "--model", str(CONFIG), "--num-gpus", "2"), text_option),
    OptionSpec("recommend", "--gpu-memory-utilization", REC, invalid_float(0.0, 1.0)),
    OptionSpec("recommend", "--max-model-len", REC, invalid_int(1)),
    OptionSpec("recommend", "--max-num-seqs", REC, invalid_int(1)),
    OptionSpec("recommend", "--max-num-batched-tokens", REC, invalid_int(1)),
    OptionSpec("recommend", "--input-len", REC, invalid_int(1)),
    OptionSpec("recommend", "--output-len", REC, invalid_int(1)),
    OptionSpec("recommend", "--concurrency", REC, invalid_int(1)),
    OptionSpec("recommend", "--request-rate", REC, invalid_float(0.0)),
    OptionSpec("recommend", "--num-requests", REC, invalid_int(1)),
    OptionSpec("recommend", "--range-ratio", REC, invalid_float(0.0, 1.0, low_open=False, high_open=True)),
    OptionSpec("recommend", "--max-ttft-ms", REC, invalid_float(0.0)),
    OptionSpec("recommend", "--max-tpot-ms", REC, invalid_float(0.0)),
    OptionSpec("recommend", "--kv-cache-dtype", REC, text_option),
    OptionSpec("recommend", "--quantization", REC, text_option),
    OptionSpec("recommend", "--objective", REC, text_option),
    OptionSpec("recommend", "--serve-model", REC, text_option),
    OptionSpec("recommend", "--model", ("recommend", "--system", str(QUICK)), text_option),
    OptionSpec("compare", "--k", ("compare", str(QUICK), str(FULL)), invalid_float(0.0, low_open=False)),
    OptionSpec("compare", "--floor-pct", ("compare", str(QUICK), str(FULL)), invalid_float(0.0, low_open=False)),
    OptionSpec("compare", "A", ("compare",), text_option),
    OptionSpec("import", "--kind", ("import", str(DATA / TEXT_SOURCES[0])), text_option),
    OptionSpec("import", "FILE", ("import",), text_option),
    OptionSpec("topo", "--results", ("topo",), text_option, frozenset({OK, BAD_FILE, BAD_USAGE, MISSING})),
    OptionSpec("topo", "--nvml-snapshot", ("topo",), text_option, frozenset({OK, BAD_FILE, BAD_USAGE, MISSING})),
    OptionSpec("report", "RESULTS", ("report", "--markdown", "r.md"), text_option),
    OptionSpec("report", "--validation", ("report", str(QUICK), "--markdown", "r.md"), text_option),
    OptionSpec("validate", "--top", ("validate", "--model", str(CONFIG), "--recommendation", "@recommendation"),
               invalid_int(1)),
    OptionSpec("validate", "--max-model-len", VAL, invalid_int(1)),
    OptionSpec("validate", "--gpu-memory-utilization", VAL, invalid_float(0.0, 1.0)),
    OptionSpec("validate", "--max-num-seqs", VAL, invalid_int(1)),
    OptionSpec("validate", "--max-num-batched-tokens", VAL, invalid_int(1)),
    OptionSpec("validate", "--timeout-s", VAL, invalid_float(0.0)),
    OptionSpec("validate", "--starts", VAL, invalid_int(1)),
    OptionSpec("validate", "--layout", ("validate", "--model", str(CONFIG), "-o", "v.json"), text_option),
    OptionSpec("validate", "--workload", VAL, text_option),
    OptionSpec("validate", "--env", VAL, text_option),
    OptionSpec("validate", "--model", ("validate", "--layout", "tp=1", "-o", "v.json"), text_option),
    OptionSpec("validate", "--compare", ("validate",), text_option),
    OptionSpec("validate", "--system", VAL_CMP, text_option),
)

EXTRA_STRINGS = {
    "--layout": ["tp=0", "tp=-1,pp=1", "tp=nan", "tp=1,pp=1,replicas=99999999999999999999", "tp=1,gpus=-1",
                 "tp=1,gpus=0+0", "tp=1,,", "=", "tp", "tp=1,foo=2", "tp=1e3"],
    "--workload": ["n=0,in=1,out=1", "n=1,in=-1,out=1", "n=1,in=1,out=1,c=0", "n=1,in=1,out=1,rate=nan",
                   "n=1,in=1,out=1,range=1", "n=1,in=1,out=1,range=nan", "n=nan,in=1,out=1",
                   "n=1,in=1,out=1,rate=inf", "n=1,in=1", "n=99999999999999999999,in=1,out=1"],
    "--env": ["=x", "NOEQUALS", "A=\x1b[2J", "[bold]X[/bold]=1"],
    "--gpus": ["0,0", "-1", "0,-1", "0,,1", "99999999999999999999", "0.5"],
    "--kind": ["NVBANDWIDTH", "results", "topo ", "nccl_tests"],
    "--backend": ["NCCL", "mpi", "gloo "],
    "--objective": ["goodput", "Throughput"],
    "--gpu": ["H100", "h100-sxm", "B200", "V100-SXM2-16GB"],
}


def option_cases() -> list[Case]:
    cases = []
    for spec in OPTION_SPECS:
        values = list(spec.values) + EXTRA_STRINGS.get(spec.option, [])
        for k, value in enumerate(values):
            name = f"{spec.option.lstrip('-')}-{k}"

            def build(tmp: Path, spec=spec, value=value) -> Plan:
                base = [_resolve(tmp, a) for a in spec.base]
                argv = [*base, value] if spec.option.isupper() else [*base, spec.option, value]
                return Plan(argv, set(spec.allowed), [_refused(spec, value)], set(spec.accepted))

            cases.append(Case(spec.command, f"option-{name}", build))
    return cases


def _resolve(tmp: Path, arg: str) -> str:
    """Placeholders of a base command line: a fresh copy of a validation file, a recommendation file."""
    if arg == "@validation":
        path = tmp / "validation.json"
        shutil.copy(DATA / VALIDATION_SOURCES[0], path)
        return str(path)
    if arg == "@recommendation":
        from harness import run_cli

        path = tmp / "rec.json"
        run_cli(["recommend", "--model", str(CONFIG), "--system", str(QUICK), "-o", str(path)])
        return str(path)
    return arg


def _refused(spec: OptionSpec, value: str) -> Callable[[Findings], None]:
    def check(f: Findings) -> None:
        if spec.invalid(value) is not True:
            return
        o: Outcome = f.outcome
        if o.would_start_vllm:
            f.add("ACCEPTED", f"{spec.option} {value!r} passed the option checks (validate would start vLLM)")
        elif o.exc is None and o.code in spec.accepted:
            f.add("ACCEPTED", f"{spec.option} {value!r} accepted (exit {o.code}); out of range values are bad usage")

    return check


# ------------------------------------------------------------------------------------------ hostile output paths


@dataclass(frozen=True)
class Writer:
    command: str
    name: str
    argv: Callable[[Path, str], list[str]]
    """The command line writing to the output path (the second argument)."""
    allowed: frozenset[int] = frozenset({OK, BAD_FILE, BAD_USAGE})
    success: frozenset[int] = frozenset({OK})
    validate: Callable[[Findings, Path], None] | None = None
    suffix: str = ".json"


def _validate_json(kind: str | None) -> Callable[[Findings, Path], None]:
    def check(f: Findings, p: Path) -> None:
        _written_json(p, kind)(f)

    return check


def _validate_text(marker: str) -> Callable[[Findings, Path], None]:
    def check(f: Findings, p: Path) -> None:
        text = p.read_text(encoding="utf-8", errors="replace")
        if marker not in text:
            f.add("UNREADABLE", f"written {p.name} is not whole (no {marker!r})")

    return check


WRITERS: tuple[Writer, ...] = (
    Writer("import", "o", lambda t, p: ["import", str(DATA / TEXT_SOURCES[0]), "-o", p],
           validate=lambda f, p: check_written_results(f, p)),
    Writer("recommend", "o", lambda t, p: [*REC, "-o", p], validate=_validate_json("gpuprobe.recommendation")),
    Writer("qualify", "junit", lambda t, p: ["qualify", "--input", str(QUICK), "--junit", p], frozenset(QUALIFY_CODES),
           frozenset(QUALIFY_SUCCESS), _validate_text("</testsuite"), ".xml"),
    Writer("qualify", "prometheus", lambda t, p: ["qualify", "--input", str(QUICK), "--prometheus", p],
           frozenset(QUALIFY_CODES), frozenset(QUALIFY_SUCCESS), _validate_text("gpuprobe"), ".prom"),
    Writer("topo", "dot", lambda t, p: ["topo", "--nvml-snapshot", str(DATA / NVML_SOURCE), "--dot", p],
           validate=_validate_text("}"), suffix=".dot"),
    Writer("report", "html", lambda t, p: ["report", str(SMALL), "--no-qualify", "--html", p],
           validate=_validate_text("</html>"), suffix=".html"),
    Writer("report", "markdown", lambda t, p: ["report", str(SMALL), "--no-qualify", "--markdown", p],
           validate=_validate_text("#"), suffix=".md"),
    Writer("validate", "fit-calibration", lambda t, p: ["validate", "--compare", _resolve(t, "@validation"),
                                                         "--fit-calibration", p],
           validate=_validate_json(None)),
    Writer("probe", "o", lambda t, p: [*PROBE_RUN, "-o", p], frozenset({BAD_FILE, BAD_USAGE, MISSING}),
           frozenset()),
    Writer("qualify", "o", lambda t, p: [*QUALIFY_RUN, "-o", p], frozenset({BAD_FILE, BAD_USAGE, MISSING}),
           frozenset()),
)


def path_cases() -> list[Case]:
    from harness import PATH_KINDS

    cases = []
    for w in WRITERS:
        for kind in PATH_KINDS:
            def build(tmp: Path, w=w, kind=kind) -> Plan:
                op = make_out_path(kind, tmp / "out", "out" + w.suffix)
                if op is None:
                    op = OutPath(kind, str(tmp / "out" / ("fallback" + w.suffix)))
                argv = w.argv(tmp, op.path)

                def check(f: Findings, op=op) -> None:
                    succeeded = f.outcome.exc is None and f.outcome.code in w.success
                    check_out_path(f, op, succeeded, (lambda p: w.validate(f, p)) if w.validate else None)

                return Plan(argv, set(w.allowed), [check], set(w.success))

            cases.append(Case(w.command, f"path-{w.name}-{kind}", build))
    return cases


def all_cases() -> list[Case]:
    cases = (probe_file_cases() + topo_file_cases() + qualify_file_cases() + compare_file_cases()
             + import_file_cases() + recommend_file_cases() + report_file_cases() + validate_file_cases()
             + option_cases() + path_cases())
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate case ids: {sorted(dupes)[:5]}"
    return cases

