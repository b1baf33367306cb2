"""The served runs' synthetic tokenizer, loaded by the real ``transformers`` as ``vllm serve --tokenizer`` does:
every word is one token for every model family, including those whose ``model_type`` names a tokenizer class."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gpuprobe.results.validation import ValidationLayout, Workload
from gpuprobe.validate import serve

transformers = pytest.importorskip("transformers")

CONFIGS = Path(__file__).parent.parent / "data" / "configs"


@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen2.5-14b-instruct", "qwen3-30b-a3b", "mistral-7b-v0.3"])
def test_a_prompt_of_n_words_is_n_tokens_and_decodes_back(tmp_path: Path, name: str) -> None:
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config))  # as the runner lays the model folder out
    tok_dir = serve.write_tokenizer(model_dir, int(config["vocab_size"]))
    args = serve.serve_args(ValidationLayout(tp=1, serve=True), model_dir, 8000)
    assert args[args.index("--tokenizer") + 1] == str(tok_dir)
    assert json.loads((model_dir / "config.json").read_text()) == config  # the model's own config is untouched
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    wl = Workload(num_requests=20, input_len=300, output_len=8, range_ratio=0.5)
    for text, n_in, _ in serve.prompts(wl, int(config["vocab_size"]), random.Random(0)):
        ids = tok(text)["input_ids"]
        assert len(ids) == n_in
        assert tok.decode(ids) == text
    # the last ids are the special tokens; a word spelled like a number near them is still one word
    assert tok.convert_ids_to_tokens([int(config["vocab_size"]) - 1]) == ["</s>"]
    assert len(tok("t1 t17 t171")["input_ids"]) == 3
