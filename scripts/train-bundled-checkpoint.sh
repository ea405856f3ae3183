#!/bin/sh
# Reproduces checkpoints/menet-tiny-synth.pt, the demo's bundled checkpoint: every step is a
# `menet` command with the shipped tiny config. About an hour and a half on 2 CPU cores (synth 6 min,
# backbone pretraining 25, extraction 18, training 36).
#
#   sh scripts/train-bundled-checkpoint.sh [WORK_DIR]        (default runs/bundled)
#
# Environment:
#   PRETRAIN=benchmark (default) pretrains the backbone on the benchmark's own 320 videos, as the
#            shipped checkpoint was; PRETRAIN=corpus pretrains it on 720 separate synthetic videos
#            (WORK_DIR/pretrain-corpus) that the detector never sees: corpus draws gave 65-92
#            average mAP on validation (the shipped checkpoint 74.9), in the order of the held-out
#            line the pretraining prints; run a few PRETRAIN_SEEDs and keep the best line
#            (docs/results.md "A third corpus draw", "The 91.8 corpus draw does not reproduce").
#   CHECKPOINT=PATH where step 5 writes the checkpoint (default checkpoints/menet-tiny-synth.pt).
#   PRETRAIN_SEED=N the pretraining's seed (default 0; with PRETRAIN=corpus choose among seeds by
#            the held-out line it prints, which never reads the validation videos).
# Writes WORK_DIR/{synth,idle-synth,backbone.pt,features,run/} (and pretrain-corpus/ with
# PRETRAIN=corpus) and copies run/best.pt to $CHECKPOINT (backbone included, no optimizer
# state, no local paths).
# best.pt is the schedule's last epoch (train.selection: last: the validation videos are never
# used to choose), with its segment classifier (model.labeller: segment) fitted by `menet train`
# on the frozen detector after the last epoch.
set -eu
WORK=${1:-runs/bundled}
PY=${PY:-.venv/bin/python}
PRETRAIN=${PRETRAIN:-benchmark}
PRETRAIN_SEED=${PRETRAIN_SEED:-0}
case "$PRETRAIN" in
  benchmark|corpus) ;;
  *) echo "PRETRAIN must be 'benchmark' or 'corpus', not '$PRETRAIN'" >&2; exit 2 ;;
esac
export OMP_NUM_THREADS=1
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CHECKPOINT=${CHECKPOINT:-checkpoints/menet-tiny-synth.pt}

# 1. the synthetic benchmark: 320 videos of 20-40 s, 240 training / 80 validation, seed 0
$PY -m stream synth --out "$WORK/synth" --num-videos 320 --seed 0
#    and 24 training videos of 80-120 s with one or two short actions each (idle_00000...): the
#    benchmark's training videos all fit one window that starts with the scene; these give windows
#    cut anywhere in a long, mostly idle scene around short actions. Three seeds: +6.5 average mAP,
#    +7.3 at tIoU 0.75 on the validation videos, false detections on idle time down (docs/results.md
#    "Idle scenes")
$PY -m stream synth --out "$WORK/idle-synth" --num-videos 24 --seed 11 --duration-range 80,120 \
    --max-actions 2 --scale-range 0.02,0.15 --val-fraction 0 --name-prefix idle_
# 2. the tiny backbone learns snippet classes (stands in for the paper's Kinetics pretraining):
#    4000 steps with the rate decayed to 0 (clip accuracy 89 %; 1000 constant steps stopped at 68 %
#    and left a quarter of the found actions mislabelled, docs/results.md "Longer backbone pretraining")
#    The draw matters: --seed 1 and --seed 2 of this command gave detectors 16 and 21 points lower
#    (both still ahead of the peer on their own features; docs/results.md "Other draws of the
#    backbone's pretraining"). Seed 0 on one thread (OMP_NUM_THREADS=1 above) reproduces the shipped draw.
#    PRETRAIN=corpus: the same pretraining on 720 other videos of the same generator (seed 100, no
#    video of the benchmark), 24 of them held out: the backbone pretrained on the benchmark's own
#    training videos names their classes far better than unseen videos' (session 22, "Why the
#    draw matters"); on a separate corpus the held-out line it prints predicts the detector.
if [ ! -f "$WORK/backbone.pt" ]; then
  if [ "$PRETRAIN" = corpus ]; then
    [ -f "$WORK/pretrain-corpus/annotations.json" ] || $PY -m stream synth --out "$WORK/pretrain-corpus" \
        --num-videos 720 --seed 100 --val-fraction 0 --name-prefix pre_
    $PY -m stream pretrain-backbone --config tiny --videos "$WORK/pretrain-corpus/videos" \
        --annotations "$WORK/pretrain-corpus/annotations.json" --out "$WORK/backbone.pt" --steps 4000 \
        --schedule cosine --seed "$PRETRAIN_SEED" --held-out-videos 24 --no-progress
  else
    $PY -m stream pretrain-backbone --config tiny --videos "$WORK/synth/videos" \
        --annotations "$WORK/synth/annotations.json" --out "$WORK/backbone.pt" --steps 4000 --schedule cosine \
        --seed "$PRETRAIN_SEED" --no-progress
  fi
fi
# the detector: configs/tiny.yaml + that backbone + an EMA of the weights (decay 0.995, ~200 steps
# of memory over the 1800 steps; not in the paper, which is silent on weight averaging: two seeds
# +1.3 average mAP, +1.3 at tIoU 0.75, +1.4 on the long unseen videos, docs/results.md "Training
# recipe"). Kept out of configs/tiny.yaml: an average of 200 steps would hide short runs' training.
# train.best_match: the paper's positives at tIoU > 0.9, plus each ground truth that no anchor
# reaches at 0.9 (short actions between snippet edges) takes its best anchors as positives (three
# seeds, with the MFE labeller, against the previous recipe: +1.5 average, +1.6 at 0.75, +2.4 at
# 0.8, +2.1 on the long videos, docs/results.md "An MFE labeller"); kept out of configs/tiny.yaml
# because the paper's assignment is explicit.
# The windows of those videos that hold no action are dropped, as G-TAD does (train.idle_windows:
# true keeps them: three seeds, 1.9 points lower average mAP for no clear gain on idle time).
cat > "$WORK/tiny-backbone.yaml" <<YAML
extends: $REPO/configs/tiny.yaml
model:
  backbone_weights: $WORK/backbone.pt
train:
  ema_decay: 0.995
  best_match: true
YAML
# 3. MFE features of every video, both sets in one store (resumable)
$PY -m stream extract --config "$WORK/tiny-backbone.yaml" --videos "$WORK/synth/videos" --out "$WORK/features" \
    --no-progress
$PY -m stream extract --config "$WORK/tiny-backbone.yaml" --videos "$WORK/idle-synth/videos" --out "$WORK/features" \
    --no-progress
# 4. two-stage training (validation loss after every epoch; the mAP is scored once, below), then the
#    segment classifier on the frozen detector's MFE features (configs/tiny.yaml
#    model.segment_input); best.pt = the last epoch. The same command as
#    benchmarks/ablation_seeds.py's runs, so the shipped checkpoint is its `best-match-mfe` seed 0
#    (the two annotation files there merged into one file of the same videos).
$PY -m stream train --config "$WORK/tiny-backbone.yaml" --features "$WORK/features" \
    --annotations "$WORK/synth/annotations.json" "$WORK/idle-synth/annotations.json" --out "$WORK/run" \
    --schedule two-stage --threads 1 \
    --no-val-map --no-progress
# 5. ship it: the same tensors and config, without the path of this machine's backbone file
$PY - "$WORK/run/best.pt" "$CHECKPOINT" <<'PYEOF'
import dataclasses, sys
from engine.checkpoint import load_checkpoint, save_checkpoint
ckpt = load_checkpoint(sys.argv[1])
ckpt.config.model.backbone_weights = None  # the backbone's tensors travel inside the checkpoint
save_checkpoint(sys.argv[2], dataclasses.replace(ckpt, optimizer=None))
last = ckpt.history[-1]
print(f"{sys.argv[2]}: epoch {ckpt.epoch + 1}, train loss {last['train']['total']:.4f}, "
      f"validation loss {last['val']['total']:.4f} (its mAP: menet infer + menet eval, docs/results.md)")
PYEOF
