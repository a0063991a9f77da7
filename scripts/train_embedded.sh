#!/usr/bin/env bash
# How the embedded restorer (iconface_video/weights/embedded/restorer/) was trained, exactly.
# Machine: the project's 2-core CPU sandbox, shared with other work, one torch thread.
# Data: faces112 (ArcFace-aligned 112x112 crops of 20 people sampled from Glint360k; research-only
# licence), the 15 training identities of configs/train/tiny-cpu.yaml (5 held out for evaluation).
#   DATA=/path/to/faces112 RUNS=/path/to/runs scripts/train_embedded.sh
# Each stage stops at its step count or at its wall-clock budget (minutes), always with a checkpoint;
# rerunning a stage with --resume continues it exactly.
set -euo pipefail
DATA=${DATA:-../shared/media/faces112}
RUNS=${RUNS:-/work/runs}
NOREF_MIN=${NOREF_MIN:-14}
UNIFIED_MIN=${UNIFIED_MIN:-68}
export OMP_NUM_THREADS=1

# Stage 1 (core-design §5.9): no references, so the structure path learns to restore alone.
iconface-video train --config configs/train/tiny-cpu-noref.yaml --data "$DATA" \
    --out "$RUNS/embedded-noref" --max-minutes "$NOREF_MIN"
NOREF=$(cat "$RUNS/embedded-noref/checkpoints/latest")
# Stage 2: the unified reference schedule of §5.8, started from stage 1's raw weights. Without
# FEATURES the dlib features of the 48-image reference pool per person are computed into the run
# folder first; the embedded run passed FEATURES=$RUNS/features/faces112-train-dlib.npz, made
# beforehand by the same call (data.compute_features over data.reference_pool(train, 48, seed 0)).
iconface-video train --config configs/train/tiny-cpu.yaml --data "$DATA" \
    --out "$RUNS/embedded-unified" --max-minutes "$UNIFIED_MIN" \
    ${FEATURES:+--features "$FEATURES"} \
    --init "$RUNS/embedded-noref/checkpoints/$NOREF"
