#!/usr/bin/env bash
# Validate gpuprobe's predictions against real vLLM on one GPU: Llama- and Qwen-shaped configs (dummy
# weights, config.json only), TP=1, four batch shapes per engine start, once eager and once with CUDA graphs.
# Models: 1b (Llama-3.2-1B shape), 3b (Llama-3.2-3B), 8b (Llama-3.1-8B), qwen7b (Qwen2.5-7B-Instruct, the
# published config in tests/data/configs). Writes under $OUT (default ./out/gpu-validate):
#   validation-<size>.json                   the validation files (measured, predicted, error per figure)
#   calibration.json (+ .fit.json)           factors fitted to every file, with the held-out error
#   tables.txt                               the comparison tables as text
#   logs.tar.gz                              every vLLM log
# Run from the repository root with a Python that imports vLLM (PYTHON=... to name it):
#   bash scripts/gpu_validate.sh
# SIZES="1b 8b" (the default) picks the models; NOFIT=1 skips the comparison and fit at the end. Extra
# arguments go to every 'gpuprobe validate' call (e.g. --system results.json, --timeout-s 300).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu-validate}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export VLLM_USE_FLASHINFER_SAMPLER="${VLLM_USE_FLASHINFER_SAMPLER:-0}"
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/llama-1b" "$work/llama-3b" "$work/llama-8b" "$work/llama-qwen7b"
sed 's/^{/{"_name_or_path": "qwen2.5-7b-shape",/' tests/data/configs/qwen2.5-7b-instruct.json \
  > "$work/llama-qwen7b/config.json"
cat > "$work/llama-3b/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "_name_or_path": "llama-3.2-3b-shape",
 "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
 "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": true,
 "attention_bias": false, "mlp_bias": false, "bos_token_id": 128000, "eos_token_id": 128001,
 "torch_dtype": "bfloat16"}
JSON
cat > "$work/llama-1b/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "_name_or_path": "llama-3.2-1b-shape",
 "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
 "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": true,
 "attention_bias": false, "mlp_bias": false, "bos_token_id": 128000, "eos_token_id": 128001,
 "torch_dtype": "bfloat16"}
JSON
cat > "$work/llama-8b/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "_name_or_path": "llama-3.1-8b-shape",
 "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
 "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": false,
 "attention_bias": false, "mlp_bias": false, "bos_token_id": 128000, "eos_token_id": 128001,
 "torch_dtype": "bfloat16"}
JSON

workloads=(--workload n=1,in=128,out=128 --workload n=8,in=512,out=128
           --workload n=32,in=1024,out=128 --workload n=64,in=256,out=256)
rc=0
sizes="${SIZES:-1b 8b}"
for size in $sizes; do
  for mode in --enforce-eager --cuda-graphs; do
    echo "== llama-$size $mode ==" >&2
    "$PY" -m gpuprobe validate --model "$work/llama-$size" --layout tp=1 "${workloads[@]}" "$mode" \
      --max-model-len 4096 --max-num-seqs 64 --timeout-s 400 \
      -o "$OUT/validation-$size.json" --outdir "$OUT/logs-$size" "$@" || rc=$?
  done
done
if [ -z "${NOFIT:-}" ]; then
  compare=()
  for size in $sizes; do compare+=(--compare "$OUT/validation-$size.json"); done
  "$PY" -m gpuprobe validate "${compare[@]}" --fit-calibration "$OUT/calibration.json" "$@" \
    > "$OUT/tables.txt" 2>&1 || rc=$?
  cat "$OUT/tables.txt"
fi
# only the logs travel, as one archive per call (the per-layout scratch files are removed by the runner)
logs=(); for size in $sizes; do logs+=("logs-$size"); done
tar -czf "$OUT/logs-${sizes// /-}.tar.gz" -C "$OUT" "${logs[@]}" && (cd "$OUT" && rm -rf "${logs[@]}")
ls -la "$OUT"
exit $rc
