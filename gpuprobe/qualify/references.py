"""Reference figures shipped with gpuprobe: is this number normal for this kind of machine?

Each reference (``gpuprobe/data/references/*.json``, ``kind: gpuprobe.reference``) describes one system (GPU
name, GPU count, the link classes between its GPUs, the host link) and holds figures per test key, each with
its own source: a real capture (nvbandwidth, gpuprobe) or a published page (URL and what on it).
``docs/references.md`` lists them.

A results file is matched to the reference of the same system: the same GPU name, the same GPU count, the same
kinds of link between GPUs (NVLink or PCIe classes) and the same host link where both are known. Nothing
close enough means no reference (and a note naming what is shipped); a number is never borrowed from another
system. ``apply`` then puts the reference figure and the link's line rate beside each check: shown, not judged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from gpuprobe.qualify.expect import Facts, gpu_index, gpu_model, link_text
from gpuprobe.results.model import Results
from gpuprobe.results.qualification import Check, Qualification, ReferenceMatch

REFERENCE_KIND = "gpuprobe.reference"


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str
    ranks: int | None = None
    """For collective figures: the number of ranks it was measured with."""


@dataclass
class Reference:
    id: str
    title: str
    origin: str
    """``capture`` (a real run) or ``published`` (a public page)."""
    gpu: str
    gpu_count: int
    pair_classes: list[str]
    host_link: str | None
    source: str
    figures: dict[str, Figure] = field(default_factory=dict)

    def describe(self) -> str:
        links = f" ({', '.join(self.pair_classes)})" if self.pair_classes else ""
        return f"{self.gpu_count} × {self.gpu}{links}"


def reference_from_data(data: Any, origin: str = "reference") -> Reference:
    if not isinstance(data, dict) or data.get("kind") != REFERENCE_KIND:
        raise ValueError(f"{origin} is not a gpuprobe reference")
    system = data["system"]
    figures = {k: Figure(float(v["value"]), str(v["unit"]), str(v["source"]), v.get("ranks"))
               for k, v in data.get("figures", {}).items()}
    return Reference(id=data["id"], title=data["title"], origin=data["origin"], gpu=system["gpu"],
                     gpu_count=int(system["gpu_count"]), pair_classes=list(system.get("pair_classes") or []),
                     host_link=system.get("host_link"), source=data["source"], figures=figures)


def load_references() -> list[Reference]:
    """Every reference shipped in ``gpuprobe/data/references`` (sorted by id)."""
    folder = resources.files("gpuprobe") / "data" / "references"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out.append(reference_from_data(json.loads(entry.read_text(encoding="utf-8")), entry.name))
    return out


def system_of(results: Results) -> tuple[str | None, int, list[str], str | None]:
    """(GPU name, count, sorted distinct pair classes, host link) of a results file."""
    names = sorted({d.name for d in results.devices})
    name = names[0] if len(names) == 1 else None
    count = len(results.devices) or (results.topology.gpu_count if results.topology else 0)
    classes = sorted({p.path_class for p in (results.topology.pairs if results.topology else [])})
    host = None
    if results.devices:
        d = results.devices[0]
        gen = d.pcie_gen_max if d.pcie_gen_max is not None else d.pcie_gen_current
        width = d.pcie_width_max if d.pcie_width_max is not None else d.pcie_width_current
        if gen is not None:
            host = link_text(gen, width)
    return name, count, classes, host


def match(results: Results, references: list[Reference] | None = None) -> tuple[Reference | None, str]:
    """The reference of the same system, or None; the second value says why (or what is missing)."""
    refs = load_references() if references is None else references
    name, count, classes, host = system_of(results)
    here = f"{count} × {name or 'mixed or unknown GPUs'}" + (f" ({', '.join(classes)})" if classes else "")
    if name is None:
        return None, f"no reference: the GPUs are {'mixed' if results.devices else 'unknown'}"
    why_not = []
    for ref in refs:
        if ref.gpu.casefold() != name.casefold():
            continue
        if ref.gpu_count != count:
            why_not.append(f"{ref.id}: {ref.gpu_count} GPUs, here {count}")
            continue
        if count > 1 and classes and ref.pair_classes and classes != sorted(ref.pair_classes):
            why_not.append(f"{ref.id}: links {', '.join(ref.pair_classes)}, here {', '.join(classes)}")
            continue
        if ref.host_link and host and ref.host_link != host:
            why_not.append(f"{ref.id}: host link {ref.host_link}, here {host}")
            continue
        how = [f"GPU {name}", f"{count} GPU{'s' * (count != 1)}"]
        if ref.pair_classes:
            how.append(f"links {', '.join(ref.pair_classes)}" + ("" if classes else " (not recorded here)"))
        if ref.host_link:
            how.append(f"host link {ref.host_link}" + ("" if host else " (not recorded here)"))
        return ref, "same " + ", ".join(how)
    shipped = "; ".join(why_not) if why_not else "shipped: " + ", ".join(r.describe() for r in refs)
    return None, f"no reference for {here} ({shipped})"


def _applies(fig: Figure, check: Check) -> bool:
    if fig.ranks is not None:
        return check.subject.count("gpu") == fig.ranks
    return True


def line_rate(check: Check, facts: Facts) -> float | None:
    """The theoretical rate (GB/s per direction) of the link a bandwidth check crosses, where known."""
    if check.unit != "GB/s" or check.category not in ("bandwidth", "collective"):
        return None
    if check.category == "collective":
        ranks = [gpu_index(s) for s in check.subject.split(",")]
        if len(ranks) > 1 and all(r is not None for r in ranks):
            nv = facts.nvlink(ranks[0] or 0, ranks[1] or 0, check.path_class)
            return nv[0] if nv else None
        return None
    src, dst = gpu_index(check.src), gpu_index(check.dst)
    if check.src == "host" or check.dst == "host":
        g = dst if check.src == "host" else src
        pcie = facts.pcie(facts.devices.get(g)) if g is not None else None
        return pcie[0] if pcie else None
    if src is not None and src == dst:
        model = gpu_model(facts.devices[src].name if src in facts.devices else None)
        return float(model.hbm_gbps) if model else None
    if src is not None and dst is not None:
        nv = facts.nvlink(src, dst, check.path_class)
        if nv:
            return nv[0]
        pa = facts.pcie(facts.devices.get(src))
        pb = facts.pcie(facts.devices.get(dst))
        return min(pa[0], pb[0]) if pa and pb else None
    return None


def apply(q: Qualification, results: Results, references: list[Reference] | None = None) -> Reference | None:
    """Match ``results`` to a reference; put its figures and each link's line rate beside the checks."""
    ref, why = match(results, references)
    facts = Facts.from_results(results)
    for c in q.checks:
        if c.value is None or c.category not in ("bandwidth", "latency", "collective"):
            continue
        c.line_rate = line_rate(c, facts)
        fig = ref.figures.get(c.test) if ref else None
        if fig is not None and fig.unit == c.unit and _applies(fig, c):
            c.reference = fig.value
    if ref is None:
        q.reference, q.reference_note = None, why
        return None
    q.reference = ReferenceMatch(id=ref.id, title=ref.title, source=ref.source, why=why,
                                 figures={k: f.value for k, f in ref.figures.items()})
    q.reference_note = None
    return ref
