"""Run a plan of real vLLM validations (offline batches and served load) in one go, importing vLLM once.

    python scripts/vllm_runs.py PLAN.json OUTDIR [--deadline-s SECONDS] [--only NAME ...]

PLAN.json is a list of entries, each one ``gpuprobe validate`` call:
``{"name", "config": PATH (a config.json, relative to the repository), "config_overrides": {...},
"layout": {ValidationLayout fields}, "serve": bool, "workloads": ["n=..,in=..,out=..[,c=..][,rate=..]"],
"starts": N, "env": {...}, "timeout_s": S, "warm_each": bool}``. Each writes OUTDIR/NAME.json (the validation file) and
OUTDIR/NAME-logs/. Entries run in order; once ``--deadline-s`` has passed since the start, the rest are
skipped (the plan lists the most important first). Progress lines go to stdout with the elapsed time, and
OUTDIR/progress.txt records each entry's outcome as it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.cli.validate import parse_workload  # noqa: E402
from gpuprobe.results.validation import ValidationLayout  # noqa: E402
from gpuprobe.validate import runner  # noqa: E402
from gpuprobe.validate.options import ValidateOptions  # noqa: E402
from gpuprobe.validate.process import PreloadPool  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", type=Path)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--deadline-s", type=float, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    plan = json.loads(args.plan.read_text())
    args.outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    pool = PreloadPool()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {msg}", flush=True)

    try:
        for entry in plan:
            name = entry["name"]
            if args.only and name not in args.only:
                continue
            if args.deadline_s is not None and time.monotonic() - t0 > args.deadline_s:
                say(f"{name}: skipped, past the deadline")
                _mark(args.outdir, name, "skipped (deadline)")
                continue
            config = json.loads((ROOT / entry["config"]).read_text())
            config.update(entry.get("config_overrides", {}))
            model = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=args.outdir)) / "config.json"
            model.write_text(json.dumps(config, indent=1))
            layout = ValidationLayout(**entry.get("layout", {"tp": 1}))
            layout = dataclasses.replace(layout, serve=bool(entry.get("serve")))
            starts = int(entry.get("starts", 1))
            layouts = [dataclasses.replace(layout, start=k) for k in range(1, starts + 1)]
            opts = ValidateOptions(
                model=str(model), layouts=layouts, workloads=[parse_workload(w) for w in entry["workloads"]],
                output=args.outdir / f"{name}.json", outdir=args.outdir / f"{name}-logs",
                timeout_s=float(entry.get("timeout_s", 600)), env=dict(entry.get("env", {})), pool=pool,
                warm_each=bool(entry.get("warm_each", False)),
            )  # fmt: skip
            say(f"{name}: start")
            try:
                runs = runner.run_validation(opts, progress=lambda m, n=name: say(f"{n}: {m}"))
                outcome = ", ".join(f"{r.layout.name} {r.status}" for r in runs.layouts)
            except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the plan
                outcome = f"error {type(exc).__name__}: {exc}"
            say(f"{name}: {outcome}")
            _mark(args.outdir, name, outcome)
    finally:
        pool.close()
    say("plan done")
    return 0


def _mark(outdir: Path, name: str, outcome: str) -> None:
    with open(outdir / "progress.txt", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {name}: {outcome}\n")


if __name__ == "__main__":
    sys.exit(main())
