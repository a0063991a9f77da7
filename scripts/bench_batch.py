"""Throughput of the batch queue with 1 vs N local workers on this machine.

    python scripts/bench_batch.py                       # the default clips from ../shared/media
    python scripts/bench_batch.py --workers 1,2,4 --repeat 2 VIDEO...
    python scripts/bench_batch.py --checkpoint core.safetensors --preset ultrafast VIDEO...

Each configuration restores the same files (analysis, restoration, encode: the main command's
whole job) into a fresh temporary folder through the real ``batch`` machinery (spawned workers,
each loading its models once; manifest, locks), and the wall time includes the workers'
start-up, as a user would see it. Prints one line per run and a JSON summary; the machine's load
average is printed too, because on a shared machine it moves the numbers more than anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from iconface_video.analysis.settings import AnalyzeSettings
from iconface_video.batch.driver import run_batch
from iconface_video.batch.items import BatchOptions, JobSpec
from iconface_video.batch.local_backend import LocalBackend, worker_specs
from iconface_video.render.options import RenderOptions

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
DEFAULT_CLIPS = (
    "src/jnjaby__KEEP/assets/examples/real_3.mp4",
    "src/jnjaby__KEEP/assets/examples/synthetic_1.mp4",
    "src/jnjaby__KEEP/assets/examples/synthetic_2.mp4",
    "src/Weizhi-Zhong__IP_LAP/test/template_video/129.mp4",
    "src/ageitgey__face_recognition/examples/short_hamilton_clip.mp4",
    "src/kepengxu__PGTFormer/assets/inputdemovideo.mp4",
)


def bench(inputs: list[Path], workers: int, job: JobSpec) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        options = BatchOptions(out_dir=Path(folder))
        specs = worker_specs(workers, None)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        summary = run_batch(inputs, job, options, lambda: LocalBackend(specs, job), lambda *a, **k: None,
                            models={})
        seconds = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"bench: files failed: {summary.failed}")
    return {"workers": workers, "seconds": round(seconds, 2), "files": len(summary.done), "load_before": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="restorer checkpoint [default: the embedded one]")
    parser.add_argument("--preset", default=None, help="x264 preset [default: the encoder's]")
    args = parser.parse_args()
    inputs = [p.resolve() for p in args.videos] or [MEDIA / c for c in DEFAULT_CLIPS]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise SystemExit(f"bench: not found: {', '.join(missing)}")
    from iconface_video.io.probe import probe

    frames = sum(probe(p).frame_count for p in inputs)
    job = JobSpec(RenderOptions(checkpoint=args.checkpoint, preset=args.preset), AnalyzeSettings())
    print(f"{len(inputs)} files, {frames} frames; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}; "
          f"python {platform.python_version()}", file=sys.stderr)
    runs = []
    for _ in range(args.repeat):
        for count in (int(w) for w in args.workers.split(",")):
            run = bench(inputs, count, job)
            run["frames_per_s"] = round(frames / run["seconds"], 1)
            run["files_per_min"] = round(60 * run["files"] / run["seconds"], 1)
            runs.append(run)
            print(f"workers={count}: {run['seconds']:.2f} s, {run['frames_per_s']} frames/s, "
                  f"{run['files_per_min']} files/min (load avg before {run['load_before']})", file=sys.stderr)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "files": len(inputs),
                      "frames": frames, "cpus": os.cpu_count(), "runs": runs}))


if __name__ == "__main__":
    main()
