#!/usr/bin/env bash
# The GPU path, measured on one CUDA GPU in under 8 minutes (docs/cost.md, "GPU"):
#   1. the CUDA-only tests (balancer contract on cuda, MARIGOLD's CUDA test)
#   2. balancebench bench --device cuda for K = 2 ... 1024 (every balancer's step time and memory)
#   3. one QM9 epoch at full size per O(1) balancer: seconds per epoch and the ratio to uniform
#   4. a 1-GPU DDP smoke run (torchrun, nccl) and a bf16 / fp16 run
# Usage: scripts/gpu_check.sh [OUT_DIR]   (run from the repository root; writes OUT_DIR/*.md)
# Each part has its own time limit (475 s in all), so one slow part cannot take the whole budget;
# a part that reaches its limit counts as failed.
set -u -o pipefail
OUT="${1:-runs/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
bb() { python -m balancebench.main "$@"; }
status=0
part() { echo "== $1"; }

part "CUDA-only tests"
timeout 45 python -m pytest -q tests/balancers/test_contract.py tests/balancers/test_marigold.py -k cuda -p no:cacheprovider || status=1

part "bench --device cuda, K = 2 ... 1024"
timeout 90 bb bench --device cuda --ks 2,8,32,128,512,1024 --repeats 5 --warmup 3 --ok-max-k 32 --out "$OUT/bench" || status=1

part "QM9, one full-size epoch per O(1) balancer"
for b in uniform famo marigold si rlw uw dwa; do
  timeout 40 bb train --config configs/qm9.yaml --scale full --balancer "$b" --device cuda --quiet --out "$OUT/qm9" --set train.epochs=1 --set train.evaluate_test=false --set name="qm9_$b" || status=1
done
python - "$OUT/qm9" > "$OUT/qm9_epoch.md" <<'PY' || status=1
import csv, sys
from pathlib import Path
rows = {}
for run in sorted(Path(sys.argv[1]).glob("qm9_*")):
    last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    rows[run.name[4:]] = float(last["epoch_seconds"])
base = rows.get("uniform")
print("| balancer | s / epoch | ratio to uniform |\n|---|---|---|")
for name, sec in rows.items():
    print(f"| {name} | {sec:.1f} | {sec / base:.2f} |" if base else f"| {name} | {sec:.1f} | - |")
PY
cat "$OUT/qm9_epoch.md"

part "1-GPU DDP smoke run (torchrun, nccl) and mixed precision"
timeout 30 python -m torch.distributed.run --standalone --nproc_per_node 1 -m balancebench.main train --config configs/synthetic.yaml --scale tiny --balancer famo --device cuda --quiet --out "$OUT/ddp" || status=1
timeout 15 bb train --config configs/synthetic.yaml --scale tiny --balancer marigold --device cuda --quiet --out "$OUT/amp" --set train.precision=fp16 || status=1
timeout 15 bb train --config configs/synthetic.yaml --scale tiny --balancer famo --device cuda --quiet --out "$OUT/amp" --set train.precision=bf16 || status=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/machine.txt" 2>/dev/null || true
echo "gpu_check: $([ $status = 0 ] && echo all parts passed || echo SOME PARTS FAILED) (results in $OUT)"
exit $status
