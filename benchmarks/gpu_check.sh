#!/usr/bin/env bash
# GPU readiness check (issue #17), under 10 minutes on one GPU: CUDA paths (fp32 vs bf16 attack
# strength, channels-last, torch.compile, OOM back-off), ViT-B-32-size throughput for PGD and APGD
# against the matmul rate (benchmarks/gpu_check.py), then a 2-process torchrun evaluation whose
# records must equal a 1-process run's (2 ranks share GPU 0; the process group is gloo).
# `--dry-run`: CPU only, toy sizes (what CI and machines without a GPU can run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if [ -n "$DRY" ] || ! "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  DEVICE=cpu SAMPLES=8 DRY=--dry-run
else
  DEVICE=cuda:0 SAMPLES=200
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
timeout 420 "$PY" benchmarks/gpu_check.py $DRY
MODEL=$("$PY" -c 'from zsrobust_bench.demo import demo_model_path; print(demo_model_path())')
ARGS=(evaluate "$MODEL" --protocol synthetic-pgd --datasets synth-color --samples "$SAMPLES" --device "$DEVICE" --batch-size 32 --shard-size 16 --json)
timeout 90 "$PY" -m zsrobust_bench.cli "${ARGS[@]}" --out "$OUT/one" > /dev/null
timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m zsrobust_bench.cli "${ARGS[@]}" --out "$OUT/two" > /dev/null
if cmp -s "$OUT/one/samples/synth-color.jsonl" "$OUT/two/samples/synth-color.jsonl"; then
  echo '{"section": "torchrun", "identical_records": true}'
else
  echo '{"section": "torchrun", "identical_records": false}'; exit 1
fi
