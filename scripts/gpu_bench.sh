#!/bin/bash
# ViT-L/16 pretraining-step benchmark on one GPU: eager (batch 24, smaller on OOM), then compiled.
#   bash scripts/gpu_bench.sh          (writes logs and summary.json files under $OUT)
set -u
OUT=${OUT:-runs/gpu-bench}; mkdir -p "$OUT"   # the device tool sets OUT; elsewhere runs/gpu-bench
export PYTHONUNBUFFERED=1 PYTHONPATH=.
BUDGET=${BUDGET:-395}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.limit --format=csv 2>&1 | tee $OUT/env.txt
python3 -c "import torch,accelerate;print('torch',torch.__version__,'cuda',torch.version.cuda,'accelerate',accelerate.__version__,torch.cuda.get_device_name())" 2>&1 | tee -a $OUT/env.txt
B=""
for b in 24 16 8; do
  echo "=== eager batch $b at ${SECONDS}s" | tee -a $OUT/env.txt
  timeout 150 python3 scripts/bench_pretrain.py --config configs/vitl16.yaml --batch-size $b --steps 10 --out $OUT/eager > $OUT/eager_b$b.log 2>&1
  rc=$?; tail -30 $OUT/eager_b$b.log
  echo "eager batch $b rc=$rc at ${SECONDS}s" | tee -a $OUT/env.txt
  if [ $rc -eq 0 ]; then B=$b; break; fi
  grep -q "OutOfMemoryError\|out of memory" $OUT/eager_b$b.log || break
done
[ -n "$B" ] || { echo "no eager run succeeded"; exit 1; }
left=$((BUDGET - SECONDS))
echo "=== compiled batch $B, timeout ${left}s, at ${SECONDS}s" | tee -a $OUT/env.txt
if [ $left -gt 60 ]; then
  TORCH_LOGS=recompiles timeout $left python3 scripts/bench_pretrain.py --config configs/vitl16.yaml --batch-size $B --steps 8 --compile --out $OUT/compiled > $OUT/compiled.log 2>&1
  rc=$?; tail -40 $OUT/compiled.log
  echo "compiled rc=$rc at ${SECONDS}s" | tee -a $OUT/env.txt
fi
echo "=== eager summary"; cat $OUT/eager/summary.json
[ -f $OUT/compiled/summary.json ] && { echo "=== compiled summary"; cat $OUT/compiled/summary.json; }
exit 0
