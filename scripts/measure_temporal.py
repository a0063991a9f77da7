"""Temporal stability of rendered faces on a clip with independent per-frame degradation.

    python scripts/measure_temporal.py [--clip CLEAN.mp4] [--frames 48] [--checkpoint CKPT] [--out DIR]

A clean talking-head clip is the truth. Every frame is degraded on its own (blur, down- and
up-sampling, noise and JPEG with per-frame random strengths), the degraded clip is analysed
(``analyze_video``) and rendered under several settings. In aligned face crops (one fixed,
heavily smoothed alignment per frame, the same for every setting) the script measures:

- ``flicker``: mean |(out[t+1] - out[t]) - (truth[t+1] - truth[t])| inside the face mask, in
  8-bit levels: frame-to-frame change that the truth does not have (0 = as stable as the truth);
- ``change``: mean |out[t+1] - out[t]| (the truth's own value is printed as ``truth``);
- ``psnr``: fidelity of the face crops to the truth.

Settings: the degraded input; every frame restored alone (each frame its own track: own noise,
own anchor, no smoothing); tracks with temporal 0, 0.5 and 1. Without a trained checkpoint the
restorer is a seeded random tiny core (its output is not a restoration, but how much it
flickers still depends on exactly the levers measured here); the result says which was used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared/media/src/KwaiVGI__LivePortrait/assets/examples/driving/d3.mp4"


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame degraded with its own random strengths (independent of its neighbours)."""
    h, w = image.shape[:2]
    sigma = rng.uniform(1.0, 2.5)
    out = cv2.GaussianBlur(image, (0, 0), sigma)
    factor = rng.uniform(3.0, 5.0)
    small = cv2.resize(out, (max(8, int(w / factor)), max(8, int(h / factor))), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    out += rng.normal(0, rng.uniform(3, 10), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    quality = int(rng.integers(30, 70))
    _, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def write_lossless(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "0", "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def one_track_per_frame(analysis):
    """The same faces, each frame its own track (own noise, own anchor, nothing to smooth)."""
    from iconface_video.types import Track

    tracks, next_id = [], 0
    for track in analysis.tracks:
        for obs in track.obs:
            tracks.append(Track(next_id, track.shot, (obs,), track.identity))
            next_id += 1
    return dataclasses.replace(analysis, tracks=tuple(tracks), path=None)


def aligned(frames: list[np.ndarray], M: np.ndarray, size: int) -> torch.Tensor:
    from iconface_video.faces.align import images_to_tensor, warp_faces

    return torch.cat([warp_faces(images_to_tensor(f), torch.from_numpy(m[None]), size) for f, m in zip(frames, M)]) * 255


def measure(out: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    weight = mask.expand_as(out)[1:]
    d_out, d_truth = out[1:] - out[:-1], truth[1:] - truth[:-1]
    mean = lambda x: float((x * weight).sum() / weight.sum())
    mse = float((((out - truth) ** 2) * mask.expand_as(out)).sum() / mask.expand_as(out).sum())
    return {"flicker": mean((d_out - d_truth).abs()), "change": mean(d_out.abs()), "truth": mean(d_truth.abs()),
            "psnr": 10 * np.log10(255**2 / max(mse, 1e-9))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--checkpoint", default=None, help="core checkpoint (default: embedded, else a random tiny core)")
    parser.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "measure_temporal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "tests"))

    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.faces.align import estimate_affine
    from iconface_video.faces.masks import landmark_mask
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames
    from iconface_video.render.options import RenderOptions
    from iconface_video.render.video import render_video
    from iconface_video.render.temporal import TemporalSettings, smooth_landmarks

    args.out.mkdir(parents=True, exist_ok=True)
    fps = float(probe(args.clip).video.avg_fps or 25)
    truth = [f.image for f in read_frames(args.clip, 0, args.frames)]
    rng = np.random.default_rng(args.seed)
    degraded = [degrade(f, rng) for f in truth]
    clip = write_lossless(args.out / "degraded.mp4", degraded, fps)
    analysis_path = args.out / "degraded.iconface.json"
    tick = time.perf_counter()
    analysis = analyze_video(clip, analysis_path, AnalyzeSettings(contact_sheets=False))
    analyse_s = time.perf_counter() - tick

    try:
        from iconface_video.core.restorer import Restorer

        restorer = Restorer.from_checkpoint(args.checkpoint, "cpu", "fp32")
        core = args.checkpoint or "embedded checkpoint"
    except Exception as error:  # noqa: BLE001 - the script says which core it measured
        from render_fixtures import tiny_restorer

        restorer, core = tiny_restorer(), f"random tiny core (no trained checkpoint: {type(error).__name__})"

    # The measuring frame: the main track's landmarks, smoothed hard, at the core's crop size.
    main_track = max(analysis.tracks, key=lambda t: len(t.obs))
    frames_idx = np.array([o.frame_index for o in main_track.obs])
    kps = smooth_landmarks(np.stack([o.kps5 for o in main_track.obs]), frames_idx, TemporalSettings(1.0, 15, 2, 0.0))
    size = 128
    M = estimate_affine(kps, "ffhq", size)
    truth_c = aligned([truth[i] for i in frames_idx], M, size)
    from iconface_video.faces.align import template

    mask = landmark_mask(size, template("ffhq", size)[None])[:1]

    settings = {
        "input (degraded)": None,
        "each frame alone": (one_track_per_frame(analysis), 0.0),
        "tracks, temporal 0": (analysis, 0.0),
        "tracks, temporal 0.5": (analysis, 0.5),
        "tracks, temporal 1": (analysis, 1.0),
    }
    results = {}
    for name, setting in settings.items():
        tick = time.perf_counter()
        if setting is None:
            frames = degraded
        else:
            source, temporal = setting
            out = args.out / f"{name.replace(' ', '_').replace(',', '')}.mp4"
            render_video(source, clip, out, RenderOptions(temporal=temporal, crf=0, preset="ultrafast", overwrite=True,
                                                          html=False), restorer=restorer)
            frames = [f.image for f in read_frames(out)]
        results[name] = measure(aligned([frames[i] for i in frames_idx], M, size), truth_c, mask)
        results[name]["seconds"] = time.perf_counter() - tick
    summary = {"clip": str(args.clip), "frames": args.frames, "faces": len(main_track.obs), "core": core,
               "analyse_s": analyse_s, "results": results}
    (args.out / "temporal.json").write_text(json.dumps(summary, indent=2))
    print(f"clip {args.clip.name}, {args.frames} frames, main track {len(main_track.obs)} faces; core: {core}")
    print(f"{'setting':24s} {'flicker':>8s} {'change':>8s} {'truth':>8s} {'psnr':>7s}")
    for name, r in results.items():
        print(f"{name:24s} {r['flicker']:8.2f} {r['change']:8.2f} {r['truth']:8.2f} {r['psnr']:7.2f}")


if __name__ == "__main__":
    main()
