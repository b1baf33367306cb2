"""Server qualification: judge a results file against expectations derived from its links and GPUs.

    from gpuprobe import load_results
    from gpuprobe.qualify import judge, load_thresholds

    q = judge(load_results("results.json"))              # defaults: WARN < 85 %, FAIL < 75 % of expected
    q = judge(results, load_thresholds("limits.toml"))   # per-GPU-model / per-test overrides
    q.verdict, q.exit_code, q.checks, q.outliers

The result dataclasses (``Qualification``, ``Check``, ``Outlier``) live in ``gpuprobe.results.qualification``;
``gpuprobe.qualify.outputs`` turns them into JSON, JUnit XML and a Prometheus textfile.
"""

from gpuprobe.qualify.expect import Expectation, NoExpectation, expectation
from gpuprobe.qualify.judge import judge
from gpuprobe.qualify.thresholds import Thresholds, ThresholdsError, load_thresholds, thresholds_from_data
from gpuprobe.results.qualification import (
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_WARN,
    Check,
    Outlier,
    Qualification,
    load_qualification,
)

__all__ = [
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_WARN",
    "Check",
    "Expectation",
    "NoExpectation",
    "Outlier",
    "Qualification",
    "Thresholds",
    "ThresholdsError",
    "expectation",
    "judge",
    "load_qualification",
    "load_thresholds",
    "thresholds_from_data",
]
