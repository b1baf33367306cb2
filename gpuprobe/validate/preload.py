"""An interpreter that imports vLLM once and forks a fresh process for each run (``validate --preload``).

Importing vLLM and torch takes 10–30 s; a validation run of several layouts paid it once per engine (and again
per ``vllm serve``). This process imports them once, then for each request from the runner forks a child
in its own session (so the runner can kill the child's whole process group), points the child's output at
the run's log, and runs either the offline worker (``gpuprobe.validate.worker``) or ``vllm serve``. vLLM
itself forks its engine processes the same way; the preloaded process never touches CUDA, so the children
start with none.

Protocol (one JSON object per line). Runner → here: ``{"id", "kind": "worker"|"serve", "args": [...],
"log": PATH, "env": {...}}``. Here → runner: ``{"ready": true, "import_s": X}`` once, then ``{"id", "pid"}``
when a child starts and ``{"id", "exit": CODE}`` when it ends.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

_lock = threading.Lock()


def _say(obj: dict) -> None:
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _child(kind: str, args: list[str], log: str, env: dict[str, str]) -> int:
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.environ.update(env)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    level = env.get("VLLM_LOGGING_LEVEL")
    if level:  # vLLM configured its logger at import, with the interpreter's level
        import logging

        vllm_logger = logging.getLogger("vllm")
        vllm_logger.setLevel(level)
        for handler in vllm_logger.handlers:
            handler.setLevel(level)
    try:
        if kind == "worker":
            from gpuprobe.validate.worker import main

            return main(args)
        from gpuprobe.validate.vllm_cli import main as vllm_main

        return vllm_main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports every failure in its log and exit code
        traceback.print_exc()
        return 1


def _reap(ident: int, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    _say({"id": ident, "exit": code})


def main() -> int:
    t0 = time.perf_counter()
    import torch  # noqa: F401
    import vllm  # noqa: F401
    from vllm.entrypoints.cli import main as _cli  # noqa: F401 - the serve entry point's imports

    _say({"ready": True, "import_s": time.perf_counter() - t0})
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(req["kind"], list(req["args"]), req["log"], dict(req.get("env") or {}))
            finally:
                os._exit(code)
        _say({"id": req["id"], "pid": pid})
        threading.Thread(target=_reap, args=(req["id"], pid), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
