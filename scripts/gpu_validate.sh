#!/usr/bin/env bash
# Validate gpuprobe's predictions against real vLLM on one GPU: a 1B-class and an 8B-class Llama-shaped
# config (dummy weights, config.json only), TP=1, four batch shapes per engine start, once eager and once
# with CUDA graphs (four engine starts in all). Writes under $OUT (default ./out/gpu-validate):
#   validation-1b.json, validation-8b.json   the validation files (measured, predicted, error per figure)
#   calibration.json (+ .fit.json)           factors fitted to both files, with the held-out error
#   tables.txt                               the comparison tables as text
#   logs.tar.gz                              every vLLM log
# Run from the repository root, after vLLM is installed (see ../shared/device/README.md):
#   source .vllm-stage/bin/env.sh && bash scripts/gpu_validate.sh
# SIZES="1b" runs only the 1B config. Extra arguments go to every 'gpuprobe validate' call (e.g. --system results.json, --timeout-s 300).
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

mkdir -p "$work/llama-1b" "$work/llama-8b"
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
for size in ${SIZES:-1b 8b}; do
  for mode in --enforce-eager --cuda-graphs; do
    echo "== llama-$size $mode ==" >&2
    "$PY" -m gpuprobe validate --model "$work/llama-$size" --layout tp=1 "${workloads[@]}" "$mode" \
      --max-model-len 4096 --max-num-seqs 64 --timeout-s 400 \
      -o "$OUT/validation-$size.json" --outdir "$OUT/logs-$size" "$@" || rc=$?
  done
done
{
  "$PY" -m gpuprobe validate --compare "$OUT/validation-1b.json" --compare "$OUT/validation-8b.json" \
    --fit-calibration "$OUT/calibration.json" "$@"
} > "$OUT/tables.txt" 2>&1 || rc=$?
cat "$OUT/tables.txt"
# only the logs travel as one archive (the per-layout scratch files are removed by the runner)
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs-1b logs-8b && rm -rf "$OUT/logs-1b" "$OUT/logs-8b"
ls -la "$OUT"
exit $rc
