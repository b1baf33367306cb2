"""The ``gpuprobe`` command: registers the subcommands and maps errors to one line and an exit code.

Exit codes (the same for every command):
  0  success
  1  an error the user can fix (bad file, bad config, an output path that cannot be written, a vLLM run that
     failed, ...): one ``Error:`` line
  2  bad usage (unknown option, bad value)
  3  a capability is missing: no GPU, no NVML, no CUDA/torch/vLLM package
  4  the run finished but some measurements failed or did not verify (results are still written)
  10 qualify: the verdict is WARN (some figure or link fact below the warn band; nothing failed)
  11 qualify: the verdict is FAIL (a figure below the fail band, data that did not verify, a link down)
  130 / 143 / 129 stopped by SIGINT (Ctrl-C) / SIGTERM / SIGHUP: one line says what was stopped and where the
      figures measured so far are written (status ``interrupted``)
Set GPUPROBE_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import os
import sys

import typer

from gpuprobe import __version__
from gpuprobe.cli.signals import CURRENT, SignalsAsInterrupts, stop_line
from gpuprobe.errors import GpuprobeError

app = typer.Typer(
    name="gpuprobe",
    help="Measure a GPU server's interconnect and pick the vLLM layout to deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Measure a GPU server's interconnect and pick the vLLM layout to deploy."""


# Subcommands: each module defines one function; registration order is the order in --help.
SHORT = {
    "probe": "Measure bandwidth, latency and all-reduce of this machine's GPUs.",
    "recommend": "Rank a model's vLLM layouts on a measured or datasheet system.",
    "validate": "Run layouts in real vLLM and compare with the prediction.",
    "topo": "How the GPUs are connected (NVML facts, like nvidia-smi topo -m).",
    "qualify": "Judge every figure and link of a server: PASS, WARN or FAIL.",
    "report": "Write an HTML or Markdown report of results files.",
    "compare": "Two results files side by side: what changed beyond the noise.",
    "import": "Read nvbandwidth, nccl-tests or nvidia-smi topo -m output.",
}
"""One line each in 'gpuprobe --help' (the first sentence of a docstring would be cut)."""
from gpuprobe.cli import probe as _probe  # noqa: E402

app.command("probe", short_help=SHORT["probe"])(_probe.probe)
# (more commands are registered below this line)
from gpuprobe.cli import recommend as _recommend  # noqa: E402

app.command("recommend", short_help=SHORT["recommend"])(_recommend.recommend)
from gpuprobe.cli import validate as _validate  # noqa: E402

app.command("validate", short_help=SHORT["validate"])(_validate.validate)
from gpuprobe.cli import topo as _topo  # noqa: E402

app.command("topo", short_help=SHORT["topo"])(_topo.topo)
from gpuprobe.cli import qualify as _qualify  # noqa: E402

app.command("qualify", short_help=SHORT["qualify"])(_qualify.qualify)
from gpuprobe.cli import report as _report  # noqa: E402

app.command("report", short_help=SHORT["report"])(_report.report)
from gpuprobe.cli import compare as _compare  # noqa: E402

app.command("compare", short_help=SHORT["compare"])(_compare.compare)
from gpuprobe.cli import importer as _importer  # noqa: E402

app.command("import", short_help=SHORT["import"])(_importer.import_output)


def _from_interrupt(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    debug = os.environ.get("GPUPROBE_DEBUG") not in (None, "", "0")
    signals = SignalsAsInterrupts()
    CURRENT.what = CURRENT.output = None
    failed = False
    with signals:  # the handlers stay in place until the last line is printed: a second signal cannot cut it short
        try:
            app(args=argv, prog_name="gpuprobe", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if signals.received is None and _from_interrupt(exc):
                print("Interrupted.", file=sys.stderr)  # typer turns an interrupt into exit 130 without a word
        except GpuprobeError as exc:
            if debug:
                raise
            msg = f"Error: {exc.message}"
            if exc.hint:
                msg += f"\n  hint: {exc.hint}"
            print(msg, file=sys.stderr)
            code, failed = exc.exit_code, True
        except KeyboardInterrupt:
            code = 130
            if signals.received is None:
                print("Interrupted.", file=sys.stderr)
        if signals.received is not None:  # typer turns the interrupt into exit 130: say which signal it was
            print(stop_line(signals.name or "", saved=not failed), file=sys.stderr)
            code = 128 + signals.received
            if argv is None:  # the process ends now: a late signal must not cut it short on the way out
                signals.ignore_rest()
    if argv is None:
        sys.exit(code)
    return code
