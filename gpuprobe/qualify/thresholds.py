"""The efficiency band and health limits, with overrides per GPU model and per test from a file.

A thresholds file is TOML (``.toml``) or JSON (anything else); every key is optional::

    warn = 0.85                  # WARN below 85 % of the expectation (default)
    fail = 0.75                  # FAIL below 75 % (default)
    replay_fail = 80             # PCIe replay counter: WARN above 0, FAIL above this (DCGM's max_pcie_replays)
    outlier_below_median = 0.85  # a GPU or pair below 85 % of the median of the same test is an outlier
    nvlinks_expected = 18        # active NVLinks every GPU must have (0 or absent: not enforced)

    [tests.host_to_device_bidirectional_memcpy_ce]   # a probe or health key, or a glob ("device_to_device_*")
    warn = 0.6
    fail = 0.4
    expected = 45.0              # replace the derived expectation by this figure (in the test's unit)
    skip = false                 # true: do not judge this test (reported as SKIP)

    [gpus."H100"]                # a regular expression searched in the NVML device name (at most 200
                                 # characters, no repeated group that itself repeats or alternates)
    warn = 0.9
    nvlinks_expected = 18
    [gpus."H100".tests.device_local_copy]
    expected = 1450

Precedence, most specific first: GPU model + test, test, GPU model, the top level, the defaults. An exact
test key wins over a glob; among globs (and among GPU patterns) the first in the file wins.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.errors import GpuprobeError
from gpuprobe.results.io import parse_json, read_input

DEFAULT_WARN = 0.85
DEFAULT_FAIL = 0.75
DEFAULT_REPLAY_FAIL = 80
DEFAULT_OUTLIER = 0.85

_BAND_KEYS = {"warn", "fail", "expected", "skip"}
_TOP_KEYS = {"warn", "fail", "replay_fail", "outlier_below_median", "nvlinks_expected", "tests", "gpus"}
_GPU_KEYS = {"warn", "fail", "replay_fail", "nvlinks_expected", "tests"}


class ThresholdsError(GpuprobeError):
    """A thresholds file that cannot be read or has unknown keys or bad values."""

    default_hint = "see 'gpuprobe qualify --help' for the thresholds file format"


@dataclass
class Band:
    """Overrides of one test (None: inherit)."""

    warn: float | None = None
    fail: float | None = None
    expected: float | None = None
    skip: bool = False


@dataclass
class GpuRule:
    pattern: str
    warn: float | None = None
    fail: float | None = None
    replay_fail: int | None = None
    nvlinks_expected: int | None = None
    tests: dict[str, Band] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """The band that applies to one check, and where it came from."""

    warn: float
    fail: float
    expected: float | None = None
    skip: bool = False
    origin: str = "defaults"


@dataclass
class Thresholds:
    warn: float = DEFAULT_WARN
    fail: float = DEFAULT_FAIL
    replay_fail: int = DEFAULT_REPLAY_FAIL
    outlier_below_median: float = DEFAULT_OUTLIER
    nvlinks_expected: int | None = None
    tests: dict[str, Band] = field(default_factory=dict)
    gpus: list[GpuRule] = field(default_factory=list)
    source: str = "defaults"

    def summary(self) -> dict[str, Any]:
        return {"warn_below": self.warn, "fail_below": self.fail, "replay_fail_above": self.replay_fail,
                "outlier_below_median": self.outlier_below_median, "nvlinks_expected": self.nvlinks_expected,
                "test_overrides": sorted(self.tests), "gpu_overrides": [g.pattern for g in self.gpus]}

    def _gpu_rule(self, gpu_name: str | None) -> GpuRule | None:
        if not gpu_name:
            return None
        return next((g for g in self.gpus if re.search(g.pattern, gpu_name[:MAX_NAME], re.IGNORECASE)), None)

    def band(self, test: str, gpu_name: str | None = None) -> Applied:
        """The band for ``test`` on a GPU named ``gpu_name`` (most specific override first)."""
        warn, fail, origin = self.warn, self.fail, "defaults" if self.source == "defaults" else self.source
        expected, skip = None, False
        layers: list[tuple[Band | GpuRule | None, str]] = []
        rule = self._gpu_rule(gpu_name)
        if rule is not None:
            layers.append((rule, f"gpus.{rule.pattern!r}"))
        test_band = _match(self.tests, test)
        if test_band is not None:
            layers.append((test_band[1], f"tests.{test_band[0]}"))
        if rule is not None:
            gt = _match(rule.tests, test)
            if gt is not None:
                layers.append((gt[1], f"gpus.{rule.pattern!r}.tests.{gt[0]}"))
        for layer, name in layers:
            if layer is None:
                continue
            if layer.warn is not None:
                warn, origin = layer.warn, name
            if layer.fail is not None:
                fail, origin = layer.fail, name
            if isinstance(layer, Band):
                if layer.expected is not None:
                    expected, origin = layer.expected, name
                if layer.skip:
                    skip, origin = True, name
        return Applied(warn, fail, expected, skip, origin)

    def replay_limit(self, gpu_name: str | None) -> int:
        rule = self._gpu_rule(gpu_name)
        return rule.replay_fail if rule and rule.replay_fail is not None else self.replay_fail

    def nvlinks_required(self, gpu_name: str | None) -> int | None:
        rule = self._gpu_rule(gpu_name)
        n = rule.nvlinks_expected if rule and rule.nvlinks_expected is not None else self.nvlinks_expected
        return n or None


def _match(tests: dict[str, Band], test: str) -> tuple[str, Band] | None:
    if test in tests:
        return test, tests[test]
    for pattern, band in tests.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(test, pattern):
            return pattern, band
    return None


def _ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise ThresholdsError(f"{where} must be a number between 0 and 10 (a fraction of the expectation), "
                              f"got {value!r}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ThresholdsError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ThresholdsError(f"{where}: unknown key(s) {extra}; known: {sorted(allowed)}")


def _band(data: Any, where: str) -> Band:
    if not isinstance(data, dict):
        raise ThresholdsError(f"{where} must be a table/object")
    _unknown(data, _BAND_KEYS, where)
    band = Band()
    if "warn" in data:
        band.warn = _ratio(data["warn"], f"{where}.warn")
    if "fail" in data:
        band.fail = _ratio(data["fail"], f"{where}.fail")
    if "expected" in data:
        v = data["expected"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
            raise ThresholdsError(f"{where}.expected must be a positive number, got {v!r}")
        band.expected = float(v)
    if "skip" in data:
        if not isinstance(data["skip"], bool):
            raise ThresholdsError(f"{where}.skip must be true or false")
        band.skip = data["skip"]
    return band


MAX_NAME = 256
"""The part of a GPU name patterns are searched in."""
MAX_PATTERN = 200
"""The longest GPU name pattern; NVML device names are at most 96 characters."""
_REPEATED_GROUP = re.compile(r"\)(?:[*+]|\{\d*,?\d*\})")


def _safe_pattern(pattern: str, where: str) -> re.Pattern[str]:
    """Compile a GPU name pattern, refusing what could make ``re.search`` backtrack for hours: patterns over
    MAX_PATTERN characters, and a repeated group whose body itself repeats or alternates (``(.*.*)*Z``,
    ``(a|a)+``), the shapes of catastrophic backtracking."""
    if len(pattern) > MAX_PATTERN:
        raise ThresholdsError(f"{where}: the pattern is too long ({len(pattern)} characters; at most {MAX_PATTERN})")
    plain = re.sub(r"\\.", "_", pattern)  # escaped characters are literals
    for m in _REPEATED_GROUP.finditer(plain):
        depth, i = 0, m.start()
        while i >= 0:
            depth += {")": 1, "(": -1}.get(plain[i], 0)
            if depth == 0:
                break
            i -= 1
        body = plain[i + 1:m.start()]
        if any(ch in body for ch in "*+{|?"):
            raise ThresholdsError(f"{where}: nested quantifiers in {pattern[:60]!r} (a repeated group that repeats "
                                  "or alternates inside) could take hours to match",
                                  hint="match a substring of the GPU name instead, e.g. \"H100\"")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ThresholdsError(f"{where}: not a regular expression ({exc})") from None


def _tests(data: Any, where: str) -> dict[str, Band]:
    if not isinstance(data, dict):
        raise ThresholdsError(f"{where} must be a table/object of test keys")
    return {str(k): _band(v, f"{where}.{k}") for k, v in data.items()}


def thresholds_from_data(data: Any, source: str = "thresholds") -> Thresholds:
    """Build Thresholds from parsed TOML/JSON; ThresholdsError names the bad key."""
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source}: the top level must be a table/object")
    _unknown(data, _TOP_KEYS, source)
    t = Thresholds(source=source)
    for key, parse in (("warn", _ratio), ("fail", _ratio), ("replay_fail", _count),
                       ("outlier_below_median", _ratio), ("nvlinks_expected", _count)):
        if key in data:
            setattr(t, key, parse(data[key], key))
    if "tests" in data:
        t.tests = _tests(data["tests"], "tests")
    gpus = data.get("gpus", {})
    if not isinstance(gpus, dict):
        raise ThresholdsError("gpus must be a table/object of GPU name patterns")
    for pattern, rule_data in gpus.items():
        where = f"gpus.{pattern}"
        _safe_pattern(pattern, where)
        if not isinstance(rule_data, dict):
            raise ThresholdsError(f"{where} must be a table/object")
        _unknown(rule_data, _GPU_KEYS, where)
        rule = GpuRule(pattern)
        if "warn" in rule_data:
            rule.warn = _ratio(rule_data["warn"], f"{where}.warn")
        if "fail" in rule_data:
            rule.fail = _ratio(rule_data["fail"], f"{where}.fail")
        if "replay_fail" in rule_data:
            rule.replay_fail = _count(rule_data["replay_fail"], f"{where}.replay_fail")
        if "nvlinks_expected" in rule_data:
            rule.nvlinks_expected = _count(rule_data["nvlinks_expected"], f"{where}.nvlinks_expected")
        if "tests" in rule_data:
            rule.tests = _tests(rule_data["tests"], f"{where}.tests")
        t.gpus.append(rule)
    return t


def load_thresholds(path: str | os.PathLike[str]) -> Thresholds:
    """Read a thresholds file (TOML if it ends in .toml, else JSON)."""
    path = Path(path)
    text = read_input(path, "thresholds file", ThresholdsError)
    if path.suffix.lower() != ".toml":
        return thresholds_from_data(parse_json(text, f"thresholds file {path}", ThresholdsError), source=str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"thresholds file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ThresholdsError(f"thresholds file {path} is nested too deeply") from None
    return thresholds_from_data(data, source=str(path))
