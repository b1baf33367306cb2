"""Time one prompt step, and one decode step, inside an idle vLLM engine: what a step costs without a server,
other requests or a queue around it.

    python3 scripts/prompt_step.py OUT.json --config tests/data/configs/qwen3-4b.json [--tokens 256,512,513,1024]

An offline ``vllm.LLM`` with dummy weights at vLLM's defaults except: the token budget, raised so one prompt is
one step; ``max_num_seqs`` (default 256, so the CUDA-graph capture sizes reach 512 tokens as they do at the
serving default of 1,024: a prompt of up to 512 tokens replays a piecewise graph, a longer one runs the
torch.compile'd model without graphs); and prefix caching off (a repeated count is computed again). Each token
count is one request of that many random token ids and one output token, timed around ``generate``
(``--reps`` times, the median): the prompt step plus a fixed host cost. ``--decode-steps K`` also times a
128-token prompt with K + 1 output tokens against 1: the difference over K is one decode step of one request
(a full CUDA graph). The file records the device, the host (``gpuprobe.system.hostspeed``), versions and when
it ran.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuprobe.system import hostspeed

TOKENS = [128, 256, 512, 513, 1024, 2048, 4096, 8192]


def _write(out: str, doc: dict) -> None:
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


def main(argv: list[str] | None = None, *, tokens: list[int] = TOKENS, kind: str = "prompt-step",
         config: str = "tests/data/configs/qwen3-4b.json", max_num_seqs: int = 256) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--config", default=config)
    ap.add_argument("--tokens", default=",".join(map(str, tokens)), help="comma-separated prompt lengths")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-num-seqs", type=int, default=max_num_seqs)
    ap.add_argument("--decode-steps", type=int, default=0)
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.tokens.split(",")]
    import random

    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model_dir = Path(tempfile.mkdtemp(prefix="prompt-step-"))
    shutil.copy(args.config, model_dir / "config.json")
    budget = max(counts) + 64
    doc: dict = {"kind": kind, "device_name": torch.cuda.get_device_name(0), "torch_version": torch.__version__,
                 "vllm_version": vllm.__version__, "cuda": torch.version.cuda, "cpu_model": hostspeed.cpu_model(),
                 "host_python_loop_ns": hostspeed.python_loop_ns(), "config": args.config,
                 "reps": args.reps, "max_num_batched_tokens": budget, "max_num_seqs": args.max_num_seqs,
                 "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "rows": []}
    llm = LLM(model=str(model_dir), load_format="dummy", skip_tokenizer_init=True, max_model_len=budget,
              max_num_batched_tokens=budget, max_num_seqs=args.max_num_seqs, enable_prefix_caching=False)
    vocab = json.loads(Path(args.config).read_text())["vocab_size"]
    rng = random.Random(0)

    def once(m: int, out_tokens: int = 1) -> float:
        prompt = TokensPrompt(prompt_token_ids=[rng.randrange(100, vocab - 100) for _ in range(m)])
        params = SamplingParams(max_tokens=out_tokens, ignore_eos=True, detokenize=False)
        t0 = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        return (time.perf_counter() - t0) * 1e3

    for m in counts:  # warm every shape once (compiled-graph specialisations, allocator)
        once(m)
    for m in counts:
        times = [once(m) for _ in range(args.reps)]
        doc["rows"].append({"tokens": m, "ms_median": round(statistics.median(times), 3),
                            "ms_min": round(min(times), 3), "ms_all": [round(t, 3) for t in times]})
        print(f"M={m:6d} (%4={m % 4}) {statistics.median(times):9.2f} ms", flush=True)
        _write(args.out, doc)
    if args.decode_steps:
        k = args.decode_steps
        once(128, k + 1)
        one = [once(128) for _ in range(args.reps)]
        many = [once(128, k + 1) for _ in range(args.reps)]
        doc["decode"] = {"prompt_tokens": 128, "steps": k, "ms_one_token": round(statistics.median(one), 3),
                         "ms_with_steps": round(statistics.median(many), 3),
                         "ms_per_step": round((statistics.median(many) - statistics.median(one)) / k, 4)}
        print(f"decode step (1 request): {doc['decode']['ms_per_step']:.3f} ms", flush=True)
    doc["ended_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    _write(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
