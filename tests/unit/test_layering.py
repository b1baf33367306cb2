"""The import rule between stages (A may import B): the result model stays the contract, nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gpuprobe"
OPEN = {"errors", "options", "__init__"}
ALLOWED = {
    "results": set(),
    "system": {"results"},
    "probes": {"results", "system", "probes"},
    "topology": {"results", "system", "topology"},
    "predict": {"results", "topology", "predict"},
    "validate": {"results", "system", "predict", "validate"},
    "report": {"results", "report"},
    "qualify": {"results", "system", "topology", "qualify"},
    "importers": {"results", "importers"},
    "cluster": {"results", "system", "probes", "cluster"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpuprobe"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("gpuprobe"))
    return names


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_stages_import_only_what_the_rule_allows() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        stage = rel[0] if len(rel) > 1 else None
        if stage is None or stage == "cli":
            continue
        for name in _imports(path):
            target = _stage(name)
            if target is None or target in OPEN or target == "__version__":
                continue
            if target == "cli" or target not in ALLOWED.get(stage, set()) | {stage}:
                bad.append(f"{'/'.join(rel)} imports {name}")
    assert not bad, "\n".join(sorted(bad))


ONE_WAY = {
    # module: the gpuprobe modules it must not import (they use it, not the other way round)
    "probes/allreduce_world.py": {"gpuprobe.probes.allreduce"},
    "probes/allreduce_worker.py": {"gpuprobe.probes.allreduce", "gpuprobe.probes.allreduce_world"},
    "validate/options.py": {"gpuprobe.validate.runner", "gpuprobe.validate.offline", "gpuprobe.validate.served"},
    "validate/offline.py": {"gpuprobe.validate.runner", "gpuprobe.validate.served"},
    "validate/served.py": {"gpuprobe.validate.runner", "gpuprobe.validate.offline"},
    "validate/gpumem.py": {"gpuprobe.validate.runner", "gpuprobe.validate.offline", "gpuprobe.validate.served",
                           "gpuprobe.validate.options"},
    "validate/process.py": {"gpuprobe.validate.runner", "gpuprobe.validate.offline", "gpuprobe.validate.served",
                            "gpuprobe.validate.options"},
    # qualification levels: the orchestration uses the parts, the parts never the orchestration or each other's
    # callers; the judgement does not run levels
    "qualify/judge.py": {"gpuprobe.qualify.levels", "gpuprobe.qualify.burnin", "gpuprobe.qualify.health_events",
                         "gpuprobe.qualify.confirm", "gpuprobe.qualify.node_outputs"},
    "qualify/references.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels"},
    "qualify/peers.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels"},
    "qualify/confirm.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels"},
    "qualify/health_events.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels", "gpuprobe.system"},
    "qualify/burnin.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels", "gpuprobe.system"},
    "qualify/node_outputs.py": {"gpuprobe.qualify.judge", "gpuprobe.qualify.levels", "gpuprobe.system"},
}
ONLY = {
    # module: the only gpuprobe modules it may import (the result model's documents stay self-contained)
    "results/run_info.py": set(),
    "results/model.py": {"gpuprobe.results.run_info"},
    "results/validation.py": {"gpuprobe.results.run_info"},
    # the sampler reads NVML only through the gateway and writes only the result model's timeline
    "system/sampler.py": {"gpuprobe.system.nvml", "gpuprobe.results.qualification"},
    "report/plots_health.py": {"gpuprobe.report.plots", "gpuprobe.results.qualification"},
    "results/cluster_view.py": {"gpuprobe.results.model"},
    "cluster/launch.py": {"gpuprobe.errors"},
}


def _hits(name: str, modules: set[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def test_modules_within_a_stage_import_one_way() -> None:
    bad = []
    for rel, forbidden in ONE_WAY.items():
        bad += [f"{rel} imports {n}" for n in _imports(PKG / rel) if _hits(n, forbidden)]
    for rel, allowed in ONLY.items():
        bad += [f"{rel} imports {n}" for n in _imports(PKG / rel) if not _hits(n, allowed)]
    for path in (PKG / "probes" / "core").rglob("*.py"):  # the shared machinery knows no probe
        bad += [f"probes/core/{path.name} imports {n}" for n in _imports(path)
                if n.startswith("gpuprobe.probes.") and not n.startswith("gpuprobe.probes.core")]
    assert not bad, "\n".join(sorted(bad))
