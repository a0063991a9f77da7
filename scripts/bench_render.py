"""Per-stage timing of the whole job (analyse + render) against decode + encode alone.

    python scripts/bench_render.py [--clip 720p.mp4] [--frames 60] [--threads 1] [--preset cpu] [--max-side 512]

The first ``--frames`` frames of the clip are copied (H.264, CRF 18) so every run reads the
same file. Timed, each on that copy:

1. ``decode+encode``: ``run_job`` with no processing (the floor any job pays);
2. ``detect``: the embedded detector alone over every frame;
3. ``analyse``: the whole ``analyze_video`` (decode, shots, detect, track, embed, identify,
   harvest); ``track+embed+rest`` = analyse - decode - detect;
4. ``render``: ``render_video`` with a core of ``--preset`` (random weights: the speed of a
   trained core is the same), per stage as the renderer times them (decode, align, restore,
   guard, blend, encode) plus its total, and each track's crop side (``--max-side``: the
   largest side the core is taken to be trained at; default its crop size);
5. ``guard``: the identity guard alone on 32 crops of each side, once with restorations it
   keeps (two embeddings per face) and once with restorations it must back off (five).

Stages of the render overlap (threads), so its per-stage seconds add up to more than its wall
time; ``restore`` is the core's own compute.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared/media/src/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4"


def copy_head(source: Path, target: Path, frames: int) -> Path:
    import av

    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames

    fps = probe(source).video.avg_fps or Fraction(25)
    with av.open(str(target), "w") as out:
        stream = None
        for frame in read_frames(source, 0, frames):
            if stream is None:
                stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
                stream.height, stream.width = frame.image.shape[:2]
                stream.pix_fmt = "yuv420p"
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.image, format="rgb24")))
        out.mux(stream.encode(None))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default="cpu", help="core preset (configs/core/<preset>.yaml)")
    parser.add_argument("--max-side", type=int, default=None, help="largest crop side [default: the preset's crop size]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "bench_render")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.core.config import load_config
    from iconface_video.core.model import IConFaceCore
    from iconface_video.core.restorer import Restorer
    from iconface_video.faces.detect import load_detector
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames
    from iconface_video.job import JobSettings, run_job
    from iconface_video.render.options import RenderOptions
    from iconface_video.render.video import render_video

    args.out.mkdir(parents=True, exist_ok=True)
    clip = copy_head(args.clip, args.out / "clip.mp4", args.frames)
    video = probe(clip).video
    times: dict[str, float] = {}

    tick = time.perf_counter()
    run_job(clip, args.out / "plain.mp4", JobSettings(overwrite=True))
    times["decode+encode"] = time.perf_counter() - tick

    tick = time.perf_counter()
    frames = [f.image for f in read_frames(clip)]
    times["decode"] = time.perf_counter() - tick
    detector = load_detector("auto", device=args.device)
    tick = time.perf_counter()
    for i in range(0, len(frames), 8):
        detector.detect(frames[i : i + 8], list(range(i, min(i + 8, len(frames)))))
    times["detect"] = time.perf_counter() - tick
    del frames

    tick = time.perf_counter()
    analysis = analyze_video(clip, args.out / "clip.iconface.json", AnalyzeSettings(contact_sheets=False, device=args.device))
    times["analyse"] = time.perf_counter() - tick
    times["track+embed+rest"] = times["analyse"] - times["decode"] - times["detect"]

    torch.manual_seed(0)
    config = load_config(args.preset)
    restorer = Restorer(IConFaceCore(config), config, device=args.device,
                        trained_sides=(config.crop_size, args.max_side or config.crop_size))
    tick = time.perf_counter()
    report = render_video(analysis, clip, args.out / "restored.mp4",
                          RenderOptions(overwrite=True, html=False, device=args.device, batch_size=args.batch_size),
                          restorer=restorer)
    times["render"] = time.perf_counter() - tick
    stage = {k: report.timings[k] for k in ("decode", "align", "restore", "guard", "blend", "encode")}
    result = {
        "clip": str(args.clip), "size": f"{video.width}x{video.height}", "frames": args.frames,
        "faces": report.faces_restored, "core": f"{args.preset} (crop {config.crop_size})", "threads": args.threads,
        "device": args.device, "seconds": {**times, **{f"render.{k}": v for k, v in stage.items()}},
        "total (analyse + render)": times["analyse"] + times["render"],
        "tracks": report.tracks, "guard ms per face": guard_cost(restorer, args.device),
    }
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"{video.width}x{video.height}, {args.frames} frames, {report.faces_restored} faces, core {args.preset} "
          f"(crop {config.crop_size}), {args.threads} torch thread(s), {args.device}")
    for key, value in result["seconds"].items():
        print(f"  {key:22s} {value:7.2f} s  {args.frames / value if value > 0 else 0:7.1f} frames/s")
    total = result["total (analyse + render)"]
    print(f"  total analyse+render   {total:7.2f} s = {total / times['decode+encode']:.1f}x decode+encode alone")
    print("  crop side per track: " + ", ".join(f"{t['track']}: {t['side']}" for t in report.tracks))
    for key, value in result["guard ms per face"].items():
        print(f"  guard {key:16s} {value:7.1f} ms per face")


def guard_cost(restorer, device: str = "cpu", faces: int = 32) -> dict[str, float]:
    """Milliseconds per face of the identity guard on ``faces`` crops of random texture."""
    from iconface_video.render.guard import IdentityGuard
    from iconface_video.render.plan import side_template
    from iconface_video.render.transform import load_guard_embedder

    embed = load_guard_embedder(device)
    tracks = torch.zeros(faces, dtype=torch.int64).numpy()
    costs = {}
    for side in sorted({restorer.crop_size, restorer.max_side}):
        lq = torch.rand(faces, 3, side, side, generator=torch.Generator().manual_seed(side)).to(device)
        # A margin below -1 makes every face fail, so each one also tries every step (the worst case).
        for name, margin in (("kept", 0.05), ("backed off", -2.0)):
            guard = IdentityGuard(embed, {}, lambda s: side_template(restorer.template, restorer.crop_size, s), margin)
            tick = time.perf_counter()
            guard(lq, lq.clone(), tracks)
            costs[f"{side} px {name}"] = 1000 * (time.perf_counter() - tick) / faces
    return costs


if __name__ == "__main__":
    main()
