"""Time one prompt step of a block-FP8 model inside vLLM's engine, at token counts on both sides of a multiple
of 4, to see what the CUTLASS kernel's alignment costs in the engine (not in an isolated GEMM).

    python3 scripts/fp8_prompt_step.py OUT.json [--config tests/data/configs/qwen3-8b-fp8.json]

An offline ``vllm.LLM`` with dummy weights and vLLM's defaults otherwise (CUDA graphs, torch.compile), except the
token budget, raised so one prompt is one step, ``max_num_seqs`` 8 (one request at a time runs here) and prefix
caching off (a repeated count is computed again, not served from the cache). Each token count is one request of
that many random token ids and one output token, timed around ``generate`` (``--reps`` times, the median): the
prompt step plus a fixed host cost that cancels between neighbouring counts. Needs a CUDA build of vLLM; run with
``VLLM_USE_DEEP_GEMM=0`` for the CUTLASS path. The file records the device, versions and when it ran.
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

TOKENS = [1024, 1025, 1536, 1537, 2048, 2049, 3072, 3073, 4096, 4097, 6144, 6145, 8192, 8193, 12288, 12289]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--config", default="tests/data/configs/qwen3-8b-fp8.json")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import random

    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model_dir = Path(tempfile.mkdtemp(prefix="fp8-step-"))
    shutil.copy(args.config, model_dir / "config.json")
    budget = max(TOKENS) + 64
    doc: dict = {"kind": "fp8-prompt-step", "device_name": torch.cuda.get_device_name(0),
                 "torch_version": torch.__version__, "vllm_version": vllm.__version__, "cuda": torch.version.cuda,
                 "config": args.config, "reps": args.reps, "max_num_batched_tokens": budget,
                 "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "rows": []}
    llm = LLM(model=str(model_dir), load_format="dummy", skip_tokenizer_init=True, max_model_len=budget,
              max_num_batched_tokens=budget, max_num_seqs=8, enable_prefix_caching=False)
    vocab = json.loads(Path(args.config).read_text())["vocab_size"]
    rng = random.Random(0)
    params = SamplingParams(max_tokens=1, ignore_eos=True, detokenize=False)

    def once(m: int) -> float:
        prompt = TokensPrompt(prompt_token_ids=[rng.randrange(100, vocab - 100) for _ in range(m)])
        t0 = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        return (time.perf_counter() - t0) * 1e3

    for m in TOKENS:  # warm every shape once (compiled-graph specialisations, allocator)
        once(m)
    for m in TOKENS:
        times = [once(m) for _ in range(args.reps)]
        doc["rows"].append({"tokens": m, "ms_median": round(statistics.median(times), 3),
                            "ms_min": round(min(times), 3), "ms_all": [round(t, 3) for t in times]})
        print(f"M={m:6d} (%4={m % 4}) {statistics.median(times):9.2f} ms", flush=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    doc["ended_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
