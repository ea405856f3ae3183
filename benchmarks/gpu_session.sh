#!/usr/bin/env bash
# The GPU benchmark session behind docs/benchmarks.md ("GPU" section), in one command so
# it fits a short lease of a GPU machine:
#
#   OUT=gpu-out bash benchmarks/gpu_session.sh
#
# 1. model: per-stage latency and throughput vs batch, PyTorch CUDA fp32 and fp16, for
#    the paper network (thumos14) and the tiny one;
# 2. pipeline: N live synthetic 25 fps streams through the real `menet run` processes
#    with configs/stream-gpu.yaml (paper network, CUDA fp16).
# Random weights (no trained thumos14 checkpoint ships): latencies are representative.
# Each part has its own time limit so one slow part cannot swallow the others.
# Env: OUT (results), PY (python, default python3), STREAMS (default 8,32),
# MODEL_BACKENDS (default pytorch-cuda), MODEL_CONFIGS (default "thumos14 tiny"), BATCHES
# (default "1 4 16 32"), PIPE_CONFIG (default stream-gpu), DURATION (30).
set -u
OUT=${OUT:-gpu-out}
PY=${PY:-python3}
STREAMS=${STREAMS:-8,32}
MODEL_BACKENDS=${MODEL_BACKENDS:-pytorch-cuda}
PIPE_CONFIG=${PIPE_CONFIG:-stream-gpu}
DURATION=${DURATION:-30}
BATCHES=${BATCHES:-1 4 16 32}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
(nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
for cfg in ${MODEL_CONFIGS:-thumos14 tiny}; do
  limit=120; [ "$cfg" = tiny ] && limit=60
  timeout $limit $PY -m stream bench --config "$cfg" --only model --backends $MODEL_BACKENDS \
    --batches $BATCHES --repeats 20 --max-cell-s 10 --threads 4 \
    --out "$OUT" --json "$OUT/model-$cfg.json" --plots "$OUT" --plot-prefix "model-$cfg" \
    2>&1 | tee "$OUT/model-$cfg.log"
done
timeout 300 $PY -m stream bench --config "$PIPE_CONFIG" --only pipeline --streams "$STREAMS" \
  --duration "$DURATION" --hop 32 --out "$OUT" --json "$OUT/pipeline.json" --plots "$OUT" \
  --plot-prefix pipeline --logs /tmp/gpu-bench-logs 2>&1 | tee "$OUT/pipeline.log"
# the PNG plots travel as one archive (a lease returns few files)
(cd "$OUT" && tar cf plots.tar *.png && rm -f *.png)
ls -la "$OUT"
