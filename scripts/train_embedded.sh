#!/usr/bin/env bash
# How the embedded restorer (iconface_video/weights/embedded/restorer/) was trained, exactly.
# Machines: stages 1-2 on the project's 2-core CPU sandbox (shared, load 8-13, one torch thread);
# stage 3 on one NVIDIA H100 (bf16), reached through the device tool, with a training subset.
# Data: faces112 (ArcFace-aligned 112x112 crops of 20 people sampled from Glint360k; research-only
# licence), the 15 training identities of configs/train/tiny-cpu.yaml (5 held out for evaluation).
#   DATA=/path/to/faces112 RUNS=/path/to/runs scripts/train_embedded.sh
# Each stage stops at its step count or its wall-clock budget (minutes), always with a checkpoint,
# so the step counts of the shipped run depend on the machine's load; the model card gives them.
set -euo pipefail
DATA=${DATA:-../shared/media/faces112}
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=1

# Stage 1 (core-design §5.9): no references, so the structure path learns to restore alone.
# (Embedded run: 14 min, 158 steps of 16.)
iconface-video train --config configs/train/tiny-cpu-noref.yaml --data "$DATA" \
    --out "$RUNS/embedded-noref" --max-minutes 14
S1=$(cat "$RUNS/embedded-noref/checkpoints/latest")

# dlib features of a fixed pool of 48 images per training person; references are drawn from this
# pool. (Without --features the trainer computes the same into its run folder.)
FEATURES=$RUNS/features/faces112-train-dlib.npz
[ -f "$FEATURES" ] || python - "$DATA" "$FEATURES" <<'PY'
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from iconface_video.faces.embed import load_embedder
from iconface_video.train.config import FACES112_HOLDOUT
from iconface_video.train.data import compute_features, reference_pool, save_features, scan_identities, split_identities
train, _ = split_identities(scan_identities(sys.argv[1]), FACES112_HOLDOUT)
feats = compute_features(train, load_embedder("dlib").embed_aligned112, paths=reference_pool(train, 48, 0))
save_features(Path(sys.argv[2]), feats, {"encoder": "dlib", "per_person": 48, "seed": 0})
PY

# Stage 2: the unified reference schedule of §5.8 from stage 1's raw weights, to step 1100.
iconface-video train --config configs/train/tiny-cpu.yaml --data "$DATA" \
    --out "$RUNS/embedded-unified" --stop-at-step 1100 --features "$FEATURES" \
    --init "$RUNS/embedded-noref/checkpoints/$S1"

# Stage 3, on a GPU: the same schedule at batch 64 in bf16, from stage 2's step-1100 EMA export.
# The embedded run had 8 minutes of one H100 in two sessions (the second with --resume) and saw a
# 240-image-per-person subset of the training people (which always includes the reference pool).
ICONFACE_KERNELS=reference iconface-video train --config configs/train/tiny-gpu.yaml --data "$DATA" \
    --out "$RUNS/embedded-gpu" --features "$FEATURES" --max-minutes 8 \
    --init "$RUNS/embedded-unified/checkpoints/step_0001100/restorer.safetensors"

# Evaluate on the held-out people (one sampling step, as shipped); MODEL_CARD.md has the numbers.
L=$(cat "$RUNS/embedded-gpu/checkpoints/latest")
iconface-video eval --data "$DATA" --people Daniel_Radcliffe,Jessica_Alba,Keanu_Reeves,Victoria_Beckham,Will_Smith \
    --per-person 12 --steps 1 --weights "$RUNS/embedded-gpu/checkpoints/$L/restorer.safetensors" \
    --json "$RUNS/embedded-gpu/eval.json" --grid docs/embedded-eval-grid.png
