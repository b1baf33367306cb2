"""Layouts: every tp x pp x replicas the GPU count allows, the vLLM rules that stop one from starting,
and the best-connected GPUs for each TP group.

GPU choice ranks links by ``nvidia-smi topo -m`` class (NV# > PIX > PXB > PHB > NODE > SYS), then by measured
P2P bandwidth. This is a local ranking: it does not use ``gpuprobe.topology`` so that the predictor keeps
working on results files without a topology graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from math import comb

from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.system import SystemProfile

CUSTOM_AR_WORLD_SIZES = (2, 4, 6, 8)
"""vLLM 0.26 custom all-reduce world sizes (0.33 adds 16)."""
_MAX_COMBINATIONS = 5000


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    replicas: int
    groups: tuple[tuple[tuple[int, ...], ...], ...] = ()
    """GPU indices per replica, per pipeline stage: ``groups[r][s]`` is the TP group of stage s of replica r."""

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def gpus(self) -> list[int]:
        return sorted(g for rep in self.groups for stage in rep for g in stage)

    def replica_gpus(self, r: int) -> list[int]:
        """GPUs of replica r in vLLM rank order (stage-major: ranks 0..tp-1 form stage 0's TP group)."""
        return [g for stage in self.groups[r] for g in stage]

    @property
    def label(self) -> str:
        return f"TP{self.tp} PP{self.pp}" + (f" x{self.replicas}" if self.replicas > 1 else "")


def enumerate_shapes(num_gpus: int) -> list[tuple[int, int, int]]:
    """Every (tp, pp, replicas) with tp x pp x replicas <= num_gpus."""
    out = []
    for tp in range(1, num_gpus + 1):
        for pp in range(1, num_gpus // tp + 1):
            for rep in range(1, num_gpus // (tp * pp) + 1):
                out.append((tp, pp, rep))
    return out


def check_layout(spec: ModelSpec, tp: int, pp: int) -> str | None:
    """Why vLLM 0.26 would refuse this tp/pp for this model before touching memory (None: no reason)."""
    if spec.num_heads % tp:
        return f"attention heads ({spec.num_heads}) not divisible by tensor parallel size {tp}"
    if spec.mla is None and spec.num_kv_heads % tp and tp % spec.num_kv_heads:
        return f"KV heads ({spec.num_kv_heads}) and tensor parallel size {tp}: neither divides the other"
    if pp > spec.num_layers:
        return f"pipeline parallel size {pp} exceeds the model's {spec.num_layers} layers"
    widths = {"intermediate_size": spec.intermediate_size if len(spec.dense_layers) or not spec.is_moe else 0}
    if spec.is_moe:
        widths["moe_intermediate_size"] = spec.moe_intermediate_size
        if spec.shared_expert_intermediate_size:
            widths["shared expert width"] = spec.shared_expert_intermediate_size
    for name, w in widths.items():
        if w and w % tp:
            return f"{name} {w} not divisible by tensor parallel size {tp}"
    fmt = spec.weights
    align = None
    if fmt.kind in ("awq", "gptq"):
        align = fmt.group_size
        what = f"{fmt.kind.upper()} group size {align}"
    elif fmt.kind == "fp8" and fmt.block_size:
        align = fmt.block_size[0]
        what = f"FP8 block size {align}"
    if align and tp > 1:
        for name, w in widths.items():
            if w and (w // tp) % align:
                return (
                    f"{name} {w} / tp {tp} = {w // tp} is not a multiple of the {what} "
                    "(vLLM: weight shape not aligned with the quantized weight)"
                )
    return None


def _pair_score(system: SystemProfile, a: int, b: int) -> tuple[int, float]:
    key = (min(a, b), max(a, b))
    cls = system.path_class.get(key, "unknown").upper()
    m = re.match(r"NV(\d+)", cls)
    rank = 100 + int(m.group(1)) if m else {"PIX": 40, "PXB": 30, "PHB": 20, "NODE": 10, "SYS": 0}.get(cls, 5)
    bw = system.p2p_gbps[key].value if key in system.p2p_gbps else 0.0
    return rank, bw


def _group_score(system: SystemProfile, group: tuple[int, ...], prev: tuple[int, ...]) -> tuple:
    pairs = [_pair_score(system, a, b) for a, b in combinations(group, 2)]
    worst = min(pairs) if pairs else (1000, 0.0)
    total = sum(p[0] for p in pairs)
    link_prev = max((_pair_score(system, a, b) for a in prev for b in group), default=(0, 0.0))
    return worst, total, link_prev, tuple(-g for g in group)


def _best_group(system: SystemProfile, avail: list[int], size: int, prev: tuple[int, ...]) -> tuple[int, ...]:
    if size == len(avail):
        return tuple(avail)
    if comb(len(avail), size) <= _MAX_COMBINATIONS:
        return max(combinations(avail, size), key=lambda g: _group_score(system, g, prev))
    group = [max(avail, key=lambda g: (max((_pair_score(system, g, p) for p in prev), default=(0, 0.0)), -g))]
    while len(group) < size:
        rest = [g for g in avail if g not in group]
        group.append(max(rest, key=lambda g: (min(_pair_score(system, g, x) for x in group), -g)))
    return tuple(sorted(group))


def assign_gpus(system: SystemProfile, tp: int, pp: int, replicas: int) -> Layout:
    """Pick GPUs replica by replica, stage by stage: each TP group the best-connected set left, each next
    stage close to the previous one."""
    avail = list(range(system.gpu_count))
    groups = []
    for _ in range(replicas):
        stages: list[tuple[int, ...]] = []
        for _ in range(pp):
            g = _best_group(system, avail, tp, stages[-1] if stages else ())
            stages.append(g)
            avail = [x for x in avail if x not in g]
        groups.append(tuple(stages))
    return Layout(tp, pp, replicas, tuple(groups))
