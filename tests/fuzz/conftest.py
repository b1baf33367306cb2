"""The fuzz suite: every test here carries the ``fuzz`` marker, and the summary counts the cases per command."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # fuzzgen, harness and cases sit beside the tests

_counts: Counter[str] = Counter()


def _command(item: pytest.Item) -> str:
    name = getattr(item, "originalname", item.name)
    return name.removeprefix("test_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.fuzz)
            _counts[_command(item)] += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _counts:
        return
    parts = ", ".join(f"{k} {v}" for k, v in sorted(_counts.items()))
    terminalreporter.write_line(f"fuzz cases: {sum(_counts.values())} ({parts})")
