"""Drive an OpenAI-compatible ``/v1/completions`` endpoint as ``vllm bench serve`` does, and time every request.

Closed loop (``concurrency`` requests in flight, the next sent the moment one finishes) or open loop (Poisson
arrivals at ``request_rate`` per second, optionally capped by ``concurrency``). Every request streams its
tokens (``stream: true`` with the usage summary) and asks for exactly ``output_len`` tokens (``ignore_eos``,
``min_tokens``). Figures follow ``vllm bench serve`` (``vllm/benchmarks/serve.py``): TTFT = send to the first
chunk carrying a choice; ITL = the gaps between such chunks; TPOT = (E2E − TTFT) / (output tokens − 1);
output throughput = output tokens of the successful requests / (first send → last token).

Standard library only (asyncio streams, HTTP/1.1 with chunked transfer), so it runs in any interpreter.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CONNECT_TIMEOUT_S = 10.0


@dataclass
class RequestRecord:
    input_tokens: int
    output_len: int
    """Tokens asked for."""
    start_s: float = 0.0
    """Send time relative to the workload's start."""
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2el_s: float | None = None
    output_tokens: int | None = None
    """From the server's usage summary (None when it sent none)."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None

    @property
    def tpot_s(self) -> float | None:
        n = self.output_tokens or 0
        if not self.ok or self.e2el_s is None or n < 2:
            return None
        return (self.e2el_s - (self.ttft_s or 0.0)) / (n - 1)


@dataclass
class LoadResult:
    requests: list[RequestRecord]
    duration_s: float
    """First send to the end of the last request."""

    @property
    def completed(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.ok]

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens or 0 for r in self.completed)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.completed)


class HttpError(Exception):
    pass


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("connection closed before a response")
    parts = status_line.decode("latin-1").split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise HttpError(f"bad status line {status_line[:80]!r}") from None
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):
    """Yield the response body as it arrives (chunked transfer encoding or a plain length / until close)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while data := await reader.read(65536):
            yield data


async def stream_completion(host: str, port: int, payload: dict, rec: RequestRecord, t0: float) -> None:
    """Send one streamed completion request and fill ``rec`` (timing, tokens, or the error)."""
    body = json.dumps(payload).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    st = time.perf_counter()
    rec.start_s = st - t0
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        writer.write(request)
        await writer.drain()
        status, headers = await _read_headers(reader)
        if status != 200:
            text = b"".join([c async for c in _body_chunks(reader, headers)])[:300]
            rec.error = f"HTTP {status}: {text.decode('utf-8', 'replace').strip()}"
            return
        buf = b""
        last = st
        async for chunk in _body_chunks(reader, headers):
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue
                    msg = json.loads(data)
                    if msg.get("choices"):
                        now = time.perf_counter()
                        if rec.ttft_s is None:
                            rec.ttft_s = now - st
                        else:
                            rec.itl_s.append(now - last)
                        last = now
                    elif isinstance(msg.get("usage"), dict):
                        rec.output_tokens = msg["usage"].get("completion_tokens")
                        rec.input_tokens = msg["usage"].get("prompt_tokens") or rec.input_tokens
                    elif "error" in msg:
                        rec.error = str(msg["error"])[:300]
        rec.e2el_s = last - st
        if rec.ttft_s is None and rec.error is None:
            rec.error = "no token was streamed back"
    except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if writer is not None:
            writer.close()


def poisson_delays(n: int, rate: float, rng: random.Random) -> list[float]:
    """Gaps between arrivals of a Poisson process (exponential, mean 1 / rate); the first request at t = 0."""
    return [0.0] + [rng.expovariate(rate) for _ in range(n - 1)]


async def run_load(
    host: str,
    port: int,
    model: str,
    prompts: list[tuple[str, int, int]],
    concurrency: int | None,
    request_rate: float | None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Send every (prompt text, prompt tokens, output tokens) request; return their records in send order."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency) if concurrency else None
    records = [RequestRecord(input_tokens=n_in, output_len=n_out) for _, n_in, n_out in prompts]
    done = 0
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal done
        text, _, n_out = prompts[i]
        payload = {
            "model": model, "prompt": text, "max_tokens": n_out, "min_tokens": n_out, "ignore_eos": True,
            "repetition_penalty": 1.0, "stream": True, "stream_options": {"include_usage": True},
        }  # fmt: skip
        if sem is None:
            await stream_completion(host, port, payload, records[i], t0)
        else:
            async with sem:
                await stream_completion(host, port, payload, records[i], t0)
        done += 1
        if progress:
            progress(done, len(prompts))

    tasks = []
    delays = poisson_delays(len(prompts), request_rate, rng) if request_rate else [0.0] * len(prompts)
    for i, delay in enumerate(delays):
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    ends = [r.start_s + (r.e2el_s or 0.0) for r in records if r.ok]
    return LoadResult(records, max(ends) if ends else time.perf_counter() - t0)


async def wait_ready(host: str, port: int, timeout_s: float, alive: Callable[[], bool]) -> float | None:
    """Poll ``GET /health`` until it answers 200; seconds waited, or None (timed out or the server died)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if not alive():
            return None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            status, _ = await asyncio.wait_for(_read_headers(reader), 5.0)
            writer.close()
            if status == 200:
                return time.perf_counter() - t0
        except (TimeoutError, OSError, HttpError):
            pass
        await asyncio.sleep(0.5)
    return None
