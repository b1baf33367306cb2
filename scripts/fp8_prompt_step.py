"""Time one prompt step of a block-FP8 model inside vLLM's engine, at token counts on both sides of a multiple
of 4, to see what the CUTLASS kernel's alignment costs in the engine (not in an isolated GEMM).

    python3 scripts/fp8_prompt_step.py OUT.json [--config tests/data/configs/qwen3-8b-fp8.json]

An offline ``vllm.LLM`` with dummy weights and vLLM's defaults otherwise (CUDA graphs, torch.compile), except the
token budget, raised so one prompt is one step, ``max_num_seqs`` 8 (one request at a time runs here) and prefix
caching off (a repeated count is computed again, not served from the cache). Each token count is one request of
that many random token ids and one output token, timed around ``generate`` (``--reps`` times, the median): the
prompt step plus a fixed host cost that cancels between neighbouring counts. Needs a CUDA build of vLLM; run with
``VLLM_USE_DEEP_GEMM=0`` for the CUTLASS path. The file records the device, versions and when it ran.
The timing is ``scripts/prompt_step.py``'s, with these token counts and settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prompt_step import main

TOKENS = [1024, 1025, 1536, 1537, 2048, 2049, 3072, 3073, 4096, 4097, 6144, 6145, 8192, 8193, 12288, 12289]

if __name__ == "__main__":
    sys.exit(main(tokens=TOKENS, kind="fp8-prompt-step", config="tests/data/configs/qwen3-8b-fp8.json",
                  max_num_seqs=8))
