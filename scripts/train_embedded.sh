#!/usr/bin/env bash
# How the embedded restorer (iconface_video/weights/embedded/restorer/) was trained, exactly.
# Core v2, preset configs/core/cpu.yaml; machine: the project's 2-core CPU sandbox, shared with
# other work (one torch thread at raised priority, one data-loader worker). No GPU.
# Data: faces112 (ArcFace-aligned 112x112 crops of 20 people from Glint360k; research-only licence),
# its 15 training people (5 held out for evaluation), and 256-px crops of the train_hr clips
# (scripts/prepare_train_hr.py; the licence of every source file is in the folder's licences.csv).
#   MEDIA=/path/to/shared/media RUNS=/path/to/runs scripts/train_embedded.sh
# Each stage stops at its step count (or when interrupted, with a checkpoint; --resume continues).
set -euo pipefail
MEDIA=${MEDIA:-../shared/media}
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=1
mkdir -p "$RUNS"

# 256-px training crops of the train_hr clips and photos (one folder per track).
[ -d "$RUNS/train_hr256" ] || python scripts/prepare_train_hr.py "$MEDIA/train_hr" --out "$RUNS/train_hr256" --every 12

# The two stage configs, derived from configs/train/cpu.yaml (written beside the runs).
python - "$RUNS" <<'PY'
import sys
from pathlib import Path
import yaml
from iconface_video.train.config import load_train_config
runs = Path(sys.argv[1]).resolve()
base = load_train_config("cpu").replace(threads=1, workers=1)
# Stage 1: pixel and flow terms only, faces112 at 128 px.
stage1 = base.replace(id_loss_weight=0.0, ref_loss_weight=0.0)
# Stage 2: + identity loss and reference hinge (the PyTorch dlib network), every 4th step a quarter
# batch of 256-px train_hr crops, from stage 1's raw weights with a fresh optimizer.
stage2 = base.replace(steps=4800, lr=8e-4, min_lr=5e-5, warmup=50, hr_data=str(runs / "train_hr256"), hr_every=4,
                      features=str(runs / "stage1" / "features.npz"), init=str(runs / "stage1" / "checkpoints" / "step_0000523"))
for name, cfg in (("stage1", stage1), ("stage2", stage2)):
    (runs / f"{name}.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
PY

# Stage 1 (the shipped run stopped it by hand at step 523, ~10 minutes of the loaded machine).
iconface-video train --config "$RUNS/stage1.yaml" --data "$MEDIA/faces112" --out "$RUNS/stage1" --stop-at-step 523

# Stage 2 (the shipped run was stopped by hand at step 4528 of 4800, ~88 minutes).
iconface-video train --config "$RUNS/stage2.yaml" --data "$MEDIA/faces112" --out "$RUNS/stage2" --stop-at-step 4528

# Evaluate on the held-out people (the checkpoint's recommended one sampling step); the model card
# and BENCHMARKS.md have the numbers.
L=$(cat "$RUNS/stage2/checkpoints/latest")
iconface-video eval --data "$MEDIA/faces112" --people Daniel_Radcliffe,Jessica_Alba,Keanu_Reeves,Victoria_Beckham,Will_Smith \
    --per-person 12 --weights "$RUNS/stage2/checkpoints/$L/restorer.safetensors" \
    --json "$RUNS/stage2/eval.json" --grid docs/embedded-eval-grid.png --overwrite
