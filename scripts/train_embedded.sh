#!/usr/bin/env bash
# How the embedded restorer (iconface_video/weights/embedded/restorer/) was trained, exactly.
# Machine: the project's 2-core CPU sandbox, shared with other work (load 8-13), one torch thread.
# Data: faces112 (ArcFace-aligned 112x112 crops of 20 people sampled from Glint360k; research-only
# licence), the 15 training identities of configs/train/tiny-cpu.yaml (5 held out for evaluation).
#   DATA=/path/to/faces112 RUNS=/path/to/runs scripts/train_embedded.sh
# Each stage stops at its step count or its wall-clock budget (minutes), always with a checkpoint,
# so the step counts of the shipped run depend on the machine's load; the model card gives them.
set -euo pipefail
DATA=${DATA:-../shared/media/faces112}
RUNS=${RUNS:-/work/runs}
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

# Stage 2: the unified reference schedule of §5.8 from stage 1's raw weights. Stage 3 branches
# from its step-900 checkpoint, so it stops there once, keeps a copy, and resumes (exactly). In the
# embedded run stage 2 went on (in one session, alongside stage 3) until step 2869, where it was
# stopped: on validation photos its one-step PSNR had fallen as it trained (see MODEL_CARD.md).
iconface-video train --config configs/train/tiny-cpu.yaml --data "$DATA" \
    --out "$RUNS/embedded-unified" --stop-at-step 900 \
    --features "$FEATURES" \
    --init "$RUNS/embedded-noref/checkpoints/$S1"
cp -r "$RUNS/embedded-unified/checkpoints/step_0000900" "$RUNS/stage2-step_0000900"
iconface-video train --config configs/train/tiny-cpu.yaml --data "$DATA" \
    --out "$RUNS/embedded-unified" --resume --stop-at-step 2869 --features "$FEATURES"

# Stage 3: from stage 2's step-900 checkpoint, training times weighted toward noise (t_mu = 1),
# lower learning rate, new samples (seed 1); 1500 steps.
iconface-video train --config configs/train/tiny-cpu-hinoise.yaml --data "$DATA" \
    --out "$RUNS/embedded-hinoise" --features "$FEATURES" \
    --init "$RUNS/stage2-step_0000900"

# Stage 4: from stage 3's final checkpoint, t_mu = 2, lower rate again, seed 2; 17-minute budget.
iconface-video train --config configs/train/tiny-cpu-hinoise2.yaml --data "$DATA" \
    --out "$RUNS/embedded-hinoise2" --max-minutes 17 --features "$FEATURES" \
    --init "$RUNS/embedded-hinoise/checkpoints/step_0001500"

# Choose among the stage finals (and 1 or 4 sampling steps) on validation photos of the held-out
# people that are not evaluation photos, evaluate the winner, and ship it.
python scripts/ship_embedded.py --data "$DATA" --stage1 "$RUNS/embedded-noref" \
    --candidates "$RUNS/embedded-unified" "$RUNS/embedded-hinoise" "$RUNS/embedded-hinoise2" \
    --lineage "$RUNS/embedded-unified" "$RUNS/embedded-hinoise" "$RUNS/embedded-hinoise2"
