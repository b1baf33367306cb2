"""The result model and its files (the contract between stages)."""

from gpuprobe.results.io import load_results, save_results
from gpuprobe.results.model import (
    RESULTS_KIND,
    SCHEMA_VERSION,
    DeviceInfo,
    GpuPair,
    Measurement,
    NvLink,
    Results,
    RunInfo,
    Stat,
    Topology,
)
from gpuprobe.results.stats import summarize

__all__ = [
    "RESULTS_KIND",
    "SCHEMA_VERSION",
    "DeviceInfo",
    "GpuPair",
    "Measurement",
    "NvLink",
    "Results",
    "RunInfo",
    "Stat",
    "Topology",
    "load_results",
    "save_results",
    "summarize",
]
