"""Other tools' outputs read into the result model, so every gpuprobe stage works on them.

``import_file(path, kind=None)`` detects the kind when not given: nvbandwidth (text or ``-j`` JSON),
nccl-tests (text or ``-J`` JSON) or ``nvidia-smi topo -m`` text. ``load_any(path)`` also accepts a gpuprobe
results file, so commands can take either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers import nccl_tests, nvbandwidth, nvidia_smi_topo
from gpuprobe.results.io import parse_json, read_input, results_from_data
from gpuprobe.results.model import RESULTS_KIND, Results
from gpuprobe.results.serde import to_data

Kind = Literal["nvbandwidth", "nccl-tests", "topo"]
KINDS: tuple[str, ...] = ("nvbandwidth", "nccl-tests", "topo")


def _read_text(path: Path) -> str:
    return read_input(path, "input", replace_errors=True)


def detect(text: str) -> tuple[str, bool]:
    """(kind, is_json) of an output; kind is ``results`` for gpuprobe's own files, ``unknown`` if unrecognised."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)  # only to tell the kind: the importer parses it again with every check
        except (ValueError, RecursionError):
            return "unknown", True
        if isinstance(data, dict):
            if data.get("kind") == RESULTS_KIND:
                return "results", True
            if "nvbandwidth" in data:
                return "nvbandwidth", True
            if isinstance(data.get("results"), list) and ("args" in data or "config" in data):
                return "nccl-tests", True
        return "unknown", True
    if "nvbandwidth Version" in text or "\nRunning host_to_device" in text or "memcpy CE" in text:
        return "nvbandwidth", False
    if "# nccl-tests version" in text or "# Collective test starting" in text or "out-of-place" in text:
        return "nccl-tests", False
    if "GPU0" in text and ("Legend" in text or "CPU Affinity" in text):
        return "topo", False
    return "unknown", False


def import_text(text: str, kind: str | None = None, origin: str = "input") -> Results:
    """Results from the text of another tool's output (``kind`` detected when None).

    What comes out is checked as a results file is on the way in, so an import never writes a file that gpuprobe
    then refuses; a damaged input is one ResultsFileError line naming the file and the field."""
    results = _import_text(text, kind, origin)
    try:
        return results_from_data(to_data(results), origin=origin)
    except ResultsFileError as exc:
        raise ResultsFileError(f"{origin}: {exc.message.removeprefix(origin).lstrip(': ')}",
                               hint="import the tool's unedited output") from None


def _import_text(text: str, kind: str | None, origin: str) -> Results:
    found, is_json = detect(text)
    kind = kind or found
    if kind == "nvbandwidth":
        if is_json:
            return nvbandwidth.from_json(parse_json(text, origin), origin)
        return nvbandwidth.from_text(text, origin)
    if kind == "nccl-tests":
        if is_json:
            return nccl_tests.from_json(parse_json(text, origin), origin)
        return nccl_tests.from_text(text, origin)
    if kind == "topo":
        return nvidia_smi_topo.from_text(text, origin)
    if kind == "results":
        raise ResultsFileError(f"{origin} is already a gpuprobe results file", hint="use it as it is")
    raise ResultsFileError(f"cannot tell what {origin} is", hint="pass --kind " + "|".join(KINDS))


def import_file(path: str | os.PathLike[str], kind: str | None = None) -> Results:
    path = Path(path)
    return import_text(_read_text(path), kind, origin=str(path))


def load_any(path: str | os.PathLike[str]) -> Results:
    """A gpuprobe results file, or another tool's output imported on the fly."""
    path = Path(path)
    text = _read_text(path)
    kind, is_json = detect(text)
    if kind == "results" or (is_json and kind == "unknown"):
        return results_from_data(parse_json(text, str(path)), origin=str(path))
    return import_text(text, None, origin=str(path))


__all__ = ["KINDS", "detect", "import_file", "import_text", "load_any"]
