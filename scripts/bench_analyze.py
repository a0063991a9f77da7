"""Benchmark the analysis: its time as a ratio to a plain PyAV decode of the same frames, at 720p
and 1080p, measured in one run; and peak memory for a short clip against a long one (the same real
clip looped through PyAV into a temporary file).

    python scripts/bench_analyze.py [--media ../shared/media] [--frames 180] [--loops 8] [--threads 1]
                                    [--device cpu|cuda] [--only throughput|memory]

Each measurement runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.
In it the models are loaded first, then the clip is decoded once (``decode_s``: frames to RGB
arrays, as the analysis receives them) and analysed (``seconds``, excluding model loading);
``ratio`` = seconds / decode_s. The ratio cancels much of a shared machine's load, but not all:
say what else ran when quoting it. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIP_720P = "src/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4"  # 1280x720 talking head
CLIP_1080P = "src/timesler__facenet-pytorch/examples/video.mp4"  # 1920x1080 crowd, 105 frames
CLIP_SHORT = "src/jnjaby__KEEP/assets/examples/synthetic_1.mp4"  # 128x128, 265 frames


def loop_clip(source: Path, target: Path, loops: int) -> int:
    """Write ``source``'s video ``loops`` times over into ``target`` (H.264, constant rate); returns the frame count."""
    import av

    count = 0
    with av.open(str(source)) as probe_src:
        video = probe_src.streams.video[0]
        rate, width, height = video.average_rate, video.width, video.height
    with av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for _ in range(loops):
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                    image.pts = count  # the stream's time base is 1/rate: one tick per frame
                    out.mux(stream.encode(image.reformat(format="yuv420p")))
                    count += 1
        out.mux(stream.encode(None))
    return count


def run_one(video: str, start: int | None, end: int | None, detect_every: int, threads: int, device: str) -> dict:
    """One analysis in this process; returns timing and peak memory."""
    import torch

    torch.set_num_threads(threads)
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames

    info = probe(video)
    settings = AnalyzeSettings(detect_every=detect_every, start=start, end=end, checkpoint_every=0, device=device)
    detector = load_detector(settings.detector, None, device)
    embedder = load_embedder(settings.embedder, None, device)
    began = time.perf_counter()
    end = None if end is None else min(end, info.frame_count)
    settings = dataclasses.replace(settings, end=end)
    decoded = sum(1 for _ in read_frames(video, start=start or 0, end=end))
    decode_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        analysis = analyze_video(video, Path(folder) / "bench.iconface.json", settings, detector=detector, embedder=embedder)
        elapsed = time.perf_counter() - began
    frames = decoded
    return {
        "video": Path(video).name, "size": f"{info.video.width}x{info.video.height}", "frames": frames,
        "detect_every": detect_every, "device": device, "threads": threads, "seconds": round(elapsed, 2),
        "decode_s": round(decode_s, 3), "decoded": decoded, "ratio": round(elapsed / decode_s, 2), "fps": round(frames / elapsed, 3),
        "detect_rotation": analysis.video.get("detect_rotation"),
        "tracks": len(analysis.tracks), "identities": len(analysis.identities),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "media")
    parser.add_argument("--frames", type=int, default=180, help="frames per throughput run (at most the clip's)")
    parser.add_argument("--loops", type=int, default=8, help="how many times the long clip repeats the short one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("throughput", "memory"), default=None)
    parser.add_argument("--device", default="cpu", help="torch device for the detector (cpu, cuda)")
    parser.add_argument("--one", nargs=6, metavar=("VIDEO", "START", "END", "K", "THREADS", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        video, start, end, k, threads, device = args.one
        print(json.dumps(run_one(video, int(start) if start != "-" else None, int(end) if end != "-" else None,
                                 int(k), int(threads), device)))
        return
    for name, clip in (("720p", CLIP_720P), ("1080p", CLIP_1080P)) if args.only != "memory" else ():
        result = measure([str(args.media / clip), "0", str(args.frames), "1", str(args.threads), args.device])
        print(json.dumps({"measure": f"throughput_{name}", **result}), flush=True)
    if args.only == "throughput":
        return
    short = args.media / CLIP_SHORT
    with tempfile.TemporaryDirectory() as folder:
        long_clip = Path(folder) / "long.mp4"
        frames = loop_clip(short, long_clip, args.loops)
        print(json.dumps({"measure": "long_clip_written", "frames": frames}), flush=True)
        for name, path in (("memory_short", short), ("memory_long", long_clip)):
            print(json.dumps({"measure": name, **measure([str(path), "-", "-", "4", str(args.threads), args.device])}), flush=True)


if __name__ == "__main__":
    main()
