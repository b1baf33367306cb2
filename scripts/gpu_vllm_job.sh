#!/usr/bin/env bash
# On a GPU machine with vLLM importable: probe the machine, then run a plan of real vLLM validations
# (scripts/vllm_runs.py), all in the background so that it outlives the shell that started it.
#   bash scripts/gpu_vllm_job.sh PLAN.json OUTDIR DEADLINE_S
# Progress: OUTDIR/job.log (probe, then every plan step with its elapsed time); OUTDIR/progress.txt.
set -u
plan=$1 out=$2 deadline=${3:-900}
mkdir -p "$out"
setsid nohup bash -c "
  python3 -m gpuprobe probe -o '$out/probe.json' > '$out/probe.log' 2>&1
  python3 scripts/vllm_runs.py '$plan' '$out' --deadline-s '$deadline'
  echo JOB-DONE
" > "$out/job.log" 2>&1 < /dev/null &
echo "started (pid $!); log: $out/job.log"
