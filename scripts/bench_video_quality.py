"""Video quality benchmark: clean talking-head clips, degraded as a video is, restored end to end.

    OMP_NUM_THREADS=1 python scripts/bench_video_quality.py [--clips A.mp4,B.mp4] [--frames 24]
        [--checkpoint CKPT] [--json OUT] [--overwrite] [--work DIR] [--seed 0]

For each clean clip (default: the dev clips below, read from ``../shared/media``):

1. The first ``--frames`` frames are the truth. The main face is detected on them once (the project's
   detector, largest face per frame); those landmarks, smoothed over time, define the face region of
   every frame for every setting, so the measurement never depends on the run being measured.
2. The clip is degraded the way a video is (:class:`ClipDegradation`, drawn from ``--seed`` and the
   clip's content): Gaussian blur, resize down (the face to 48-80 px wide) and back up, per-frame
   noise, then H.264 at a low bitrate through PyAV. The same seed gives the same file, byte for byte.
3. ``iconface-video`` runs on the degraded clip twice, as a user would: ``--no-refs``, and with its
   default harvested references (``--crf 0`` so that the output encoding adds no loss of its own).
4. In ArcFace-aligned face crops at about the face's own resolution, each setting (degraded input,
   restored without references, restored with references) is scored against the truth: PSNR and
   SSIM (``train.evaluate.psnr``/``ssim``), identity cosine (dlib embedder, output vs truth, per frame)
   and ``flicker`` (``train.evaluate.temporal_flicker``: frame-to-frame change the truth does not
   have, in 8-bit levels; 0 is as stable as the truth).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
# Talking-head clips from repositories that train_hr/ does not draw on (so no training overlap):
# a 512x512 close-up, an 844x844 close-up and a 1280x720 frame with a large face.
DEV_CLIPS = (
    "src/KwaiVGI__LivePortrait/assets/examples/driving/d3.mp4",
    "src/OpenTalker__video-retalking/examples/face/2.mp4",
    "src/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4",
)
SETTINGS = ("input", "restored_no_refs", "restored_refs")
ARCFACE_EYE_DISTANCE_112 = 35.24  # eye distance of the ArcFace 112 template, in pixels


@dataclass(frozen=True)
class ClipDegradation:
    """One clip's degradation, constant over its frames except the noise field."""

    blur_sigma: float  # Gaussian σ in source pixels, before down-sampling
    scale: float  # down-sampling factor (>1 shrinks), back up with bilinear
    noise_sigma: float  # per-frame Gaussian noise, 8-bit levels
    bits_per_pixel: float  # H.264 target bitrate / (width * height * fps)


def clip_key(path: Path) -> int:
    """A number that names the clip by its content, so a clip gets the same degradation whichever
    other clips are benchmarked with it and wherever it lies."""
    return zlib.crc32(path.read_bytes())


def sample_degradation(seed: int, clip: int, face_side: float) -> ClipDegradation:
    """Draw a degradation for a clip whose face box is ``face_side`` pixels: the face ends up 48-80 px
    wide (where restoration matters and the restorer's training degradations reach), blurred by
    0.6-1.2 px at that size, noise of 2-6 levels, and 0.02-0.05 bits per pixel."""
    from iconface_video.train.degrade import sample_rng

    rng = sample_rng(seed, 2027, clip)
    scale = max(1.0, face_side / float(rng.uniform(48.0, 80.0)))
    return ClipDegradation(blur_sigma=float(rng.uniform(0.6, 1.2)) * scale, scale=scale,
                           noise_sigma=float(rng.uniform(2.0, 6.0)), bits_per_pixel=float(rng.uniform(0.02, 0.05)))


def degrade_frame(image: np.ndarray, d: ClipDegradation, rng: np.random.Generator) -> np.ndarray:
    """Blur, resize down and up, add noise: ``uint8[H, W, 3]`` to ``uint8[H, W, 3]`` (compression comes later)."""
    h, w = image.shape[:2]
    x = cv2.GaussianBlur(image.astype(np.float32), (0, 0), d.blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    small = cv2.resize(x, (max(8, round(w / d.scale)), max(8, round(h / d.scale))), interpolation=cv2.INTER_AREA)
    x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    x = x + rng.standard_normal(x.shape).astype(np.float32) * d.noise_sigma
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def encode_h264(frames: Sequence[np.ndarray], fps: Fraction, path: Path, bits_per_pixel: float) -> Path:
    """Write ``uint8[H, W, 3]`` RGB frames as H.264 at a target bitrate (one encoder thread and, where
    x264's macroblock tree would read unset memory, without it, so the bytes repeat exactly)."""
    import av

    from iconface_video.io.encoding import x264_mbtree_is_deterministic

    h, w = frames[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    options = {"preset": "medium", "threads": "1"}
    if not x264_mbtree_is_deterministic(w):
        options["x264-params"] = "mbtree=0"
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = max(1000, int(bits_per_pixel * w * h * float(fps)))
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        out.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def degrade_clip(frames: Sequence[np.ndarray], fps: Fraction, d: ClipDegradation, seed: int, clip: int,
                 path: Path) -> Path:
    """The degraded clip written to ``path`` (each frame's noise from ``sample_rng(seed, clip, frame)``,
    ``clip`` being :func:`clip_key`)."""
    from iconface_video.train.degrade import sample_rng

    even = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]  # 4:2:0 needs even sides
    degraded = [degrade_frame(f, d, sample_rng(seed, clip, i)) for i, f in enumerate(even)]
    return encode_h264(degraded, fps, path, d.bits_per_pixel)


def region_size(eye_distance: float) -> int:
    """Side of the ArcFace-aligned face region that keeps about the face's own resolution
    (a multiple of 16, 64 to 512)."""
    return int(np.clip(round(112 * eye_distance / ARCFACE_EYE_DISTANCE_112 / 16) * 16, 64, 512))


def face_regions(frames: Sequence[np.ndarray], kps: dict[int, np.ndarray], size: int) -> np.ndarray:
    """``uint8[T, size, size, 3]`` ArcFace-aligned crops of ``frames`` at the frames in ``kps`` (sorted)."""
    from iconface_video.faces.align import align_crops

    return np.stack([align_crops(frames[t], k, "arcface", size)[0][0] for t, k in sorted(kps.items())])


def score_setting(regions: np.ndarray, truth: np.ndarray, frame_ids: np.ndarray,
                  feats: np.ndarray | None = None, truth_feats: np.ndarray | None = None) -> dict[str, float | None]:
    """PSNR, SSIM, identity cosine and flicker of aligned regions ``uint8[T, S, S, 3]`` against the truth's.

    ``frame_ids``: the frame number of each region (flicker only between consecutive frames);
    ``feats``/``truth_feats``: identity features ``float32[T, D]`` (None: no identity score)."""
    from iconface_video.render.temporal import contiguous_runs
    from iconface_video.train.evaluate import cosines, psnr, ssim, temporal_flicker

    out_f, truth_f = regions.astype(np.float32) / 255.0, truth.astype(np.float32) / 255.0
    pairs, flicker = 0, 0.0
    for run in contiguous_runs(frame_ids):
        n = run.stop - run.start - 1
        if n > 0:
            flicker += n * temporal_flicker(regions[run], truth[run])
            pairs += n
    return {
        "psnr": round(float(np.mean([psnr(o, t) for o, t in zip(out_f, truth_f)])), 3),
        "ssim": round(float(np.mean([ssim(o, t) for o, t in zip(out_f, truth_f)])), 4),
        "id_cos": None if feats is None else round(float(cosines(feats, truth_feats).mean()), 4),
        "flicker": round(flicker / pairs, 3) if pairs else None,
        "frames": int(len(regions)),
    }


def summarise(per_clip: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of each metric per setting over the clips (frames weigh equally within a clip, clips equally)."""
    out = {}
    for setting in SETTINGS:
        rows = [c["results"][setting] for c in per_clip if setting in c["results"]]
        out[setting] = {k: round(float(np.mean([r[k] for r in rows if r[k] is not None])), 4)
                        for k in ("psnr", "ssim", "id_cos", "flicker") if any(r[k] is not None for r in rows)}
    return out


# --- the parts that run models or the command -------------------------------------------------

def detect_main_face(frames: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """Frame number -> landmarks ``float32[5, 2]`` of the largest face, smoothed over each run of frames."""
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.photos import main_face
    from iconface_video.render.temporal import TemporalSettings, smooth_landmarks

    detector = load_detector("auto")
    found = {}
    for start in range(0, len(frames), 8):  # a few frames at a time: bounded memory
        chunk = list(frames[start:start + 8])
        for i, faces in enumerate(detector.detect(chunk, list(range(start, start + len(chunk))))):
            if faces:
                found[start + i] = main_face(faces).kps5
    if not found:
        return {}
    ids = np.array(sorted(found))
    smooth = smooth_landmarks(np.stack([found[i] for i in ids]), ids, TemporalSettings(1.0, 9, 2, 0.0))
    return {int(i): k.astype(np.float32) for i, k in zip(ids, smooth)}


def run_main_command(clip: Path, out: Path, extra: Sequence[str], checkpoint: Path | None) -> float:
    """Run ``iconface-video CLIP -o OUT`` (lossless output); seconds taken."""
    cmd = [sys.executable, "-m", "iconface_video", str(clip), "-o", str(out), "--overwrite", "-q",
           "--crf", "0", "--preset", "ultrafast", "--no-html", "--device", "cpu", *extra]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    tick = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - tick


def harvested_reference_count(output: Path) -> int:
    """References the run harvested, from the analysis file it keeps beside its output."""
    analysis = output.with_name(output.stem + ".iconface.json")
    return len(json.loads(analysis.read_text()).get("references", [])) if analysis.is_file() else 0


def bench_clip(path: Path, index: int, frames_n: int, seed: int, checkpoint: Path | None, work: Path,
               embed) -> dict:
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames

    fps = Fraction(probe(path).video.avg_fps or 25).limit_denominator(1001)
    truth = [f.image for f in read_frames(path, 0, frames_n)]
    truth = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in truth]
    kps = detect_main_face(truth)
    if not kps:
        return {"clip": str(path), "error": "no face found in the clean clip"}
    eyes = float(np.median([np.linalg.norm(k[1] - k[0]) for k in kps.values()]))
    face_side = eyes * 112 / ARCFACE_EYE_DISTANCE_112
    key = clip_key(path)
    d = sample_degradation(seed, key, face_side)
    folder = work / f"{index}_{path.stem}"
    folder.mkdir(parents=True, exist_ok=True)
    degraded = degrade_clip(truth, fps, d, seed, key, folder / "degraded.mp4")
    outputs, seconds = {"input": degraded}, {}
    for setting, extra in (("restored_no_refs", ["--no-refs"]), ("restored_refs", [])):
        outputs[setting] = folder / f"{setting}.mp4"
        seconds[setting] = round(run_main_command(degraded, outputs[setting], extra, checkpoint), 1)

    size = region_size(eyes)
    ids = np.array(sorted(kps))
    truth_r = face_regions(truth, kps, size)
    truth_feat = np.stack([embed(truth[t], kps[t])[0] for t in ids])
    results = {}
    for setting, video in outputs.items():
        frames = [f.image for f in read_frames(video, 0, frames_n)]
        if len(frames) != len(truth):
            raise RuntimeError(f"{video} has {len(frames)} frames, expected {len(truth)}")
        feats = np.stack([embed(frames[t], kps[t])[0] for t in ids])
        results[setting] = score_setting(face_regions(frames, kps, size), truth_r, ids, feats, truth_feat)
    return {"clip": str(path), "frames": len(truth), "faces": len(kps), "region_px": size,
            "face_px": round(face_side, 1), "degradation": dataclasses.asdict(d), "seconds": seconds,
            "refs_harvested": harvested_reference_count(outputs["restored_refs"]), "results": results}


def print_clip(c: dict) -> None:
    print(f"{Path(c['clip']).name}: " + (c.get("error") or
          f"{c['frames']} frames, face {c['face_px']} px, region {c['region_px']} px, "
          f"{c['refs_harvested']} refs harvested, run s {c['seconds']}"), flush=True)
    for setting, r in c.get("results", {}).items():
        print(f"  {setting:18s} PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.4f}  id_cos {r['id_cos']}  flicker {r['flicker']}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(str(MEDIA / c) for c in DEV_CLIPS),
                        help="comma-separated clean clips (default: the dev clips)")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip, from the start")
    parser.add_argument("--checkpoint", type=Path, default=None, help="core checkpoint (default: the embedded one)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--work", type=Path, default=None, help="keep the clips here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args()
    clips = [Path(c) for c in args.clips.split(",") if c]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        sys.exit(f"clip(s) not found: {', '.join(missing)} (the dev clips live in ../shared/media)")
    if args.json and args.json.exists() and not args.overwrite:
        sys.exit(f"{args.json} exists: choose another --json or add --overwrite")

    import torch

    from iconface_video.faces.embed import load_embedder
    from iconface_video.train.evaluate import write_json

    torch.set_num_threads(1)
    embed = load_embedder("dlib").embed
    per_clip = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, clip in enumerate(clips):
            per_clip.append(bench_clip(clip, i, args.frames, args.seed, args.checkpoint, args.work or Path(scratch), embed))
            print_clip(per_clip[-1])  # as each clip finishes: a long run shows its results early
    summary = summarise([c for c in per_clip if "results" in c])
    meta = {"frames": args.frames, "seed": args.seed, "checkpoint": str(args.checkpoint or "embedded")}
    if args.json:
        write_json(args.json, per_clip, {**meta, "summary": summary})
    print("mean over clips:")
    for setting, r in summary.items():
        print(f"  {setting:18s} " + "  ".join(f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
