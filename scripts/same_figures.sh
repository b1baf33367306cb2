#!/usr/bin/env bash
# Probe with two versions of gpuprobe on the same GPU, alternately, and compare the figures: the check that a
# restructuring changed no measurement. OLD_TREE is a copy of the older source tree (for example
# `git archive REV | tar -x -C OLD_TREE`). Each round runs the old then the new code; the two old runs are also
# compared with each other, so a change can be read against the machine's own run-to-run spread.
#   usage: [PROBE_ARGS='--tests all_reduce'] scripts/same_figures.sh OLD_TREE OUTDIR [ROUNDS]
set -euo pipefail
old="$(cd "$1" && pwd)"; mkdir -p "$2"; out="$(cd "$2" && pwd)"; rounds="${3:-2}"
new="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    tree="$old"; [ "$side" = new ] && tree="$new"
    echo "round $r: probe with the $side code ($tree)" >&2
    # run from inside the tree: 'python -m' puts the working folder first on the import path
    (cd "$tree" && PYTHONPATH="$tree" "$py" -m gpuprobe probe ${PROBE_ARGS:-} -o "$out/$side-$r.json" > "$out/$side-$r.txt" 2>&1)
    (cd "$tree" && "$py" -c 'import gpuprobe; print("code:", gpuprobe.__file__)') >> "$out/$side-$r.txt"
  done
done
PYTHONPATH="$new" "$py" -m gpuprobe compare "$out/old-1.json" "$out/new-1.json" --all > "$out/compare-old-new.txt"
PYTHONPATH="$new" "$py" -m gpuprobe compare "$out/old-1.json" "$out/new-1.json" --json > "$out/compare-old-new.json"
if [ "$rounds" -ge 2 ]; then
  PYTHONPATH="$new" "$py" -m gpuprobe compare "$out/old-1.json" "$out/old-2.json" --all > "$out/compare-old-old.txt"
  PYTHONPATH="$new" "$py" -m gpuprobe compare "$out/old-2.json" "$out/new-2.json" --all > "$out/compare-old-new-2.txt"
fi
echo "compared: $out/compare-old-new.txt" >&2
