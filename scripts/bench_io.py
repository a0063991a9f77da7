"""Measure the I/O layer: round-trip overhead and memory that does not grow with length.

1. Wall time of ``run_job`` (decode -> RGB frames -> segmented encode -> mux with audio copy)
   against a plain PyAV loop doing the same work in one pass (decode -> RGB ndarray -> encode,
   audio packets copied), same codec, CRF and preset. Target: ratio <= 1.1.
2. Peak RSS (``ru_maxrss``) of ``run_job`` in a fresh subprocess for a 10-second and a
   5-minute generated clip. Target: equal within 10 %.

    python scripts/bench_io.py                  # both measurements
    python scripts/bench_io.py --clip movie.mp4 # round trip on your own clip
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from clipgen import ClipSpec, make_clip  # noqa: E402  (test helper that generates clips)

from iconface_video.io.encoding import EncodeSettings  # noqa: E402
from iconface_video.job import JobSettings, run_job  # noqa: E402


def plain_pyav(source: Path, output: Path, crf: int, preset: str) -> None:
    """The baseline: what a PyAV user writes to re-encode a video through RGB frames."""
    src = av.open(str(source))
    dst = av.open(str(output), mode="w")
    video_in = src.streams.video[0]
    video_in.thread_type = "AUTO"
    video_out = dst.add_stream("libx264", rate=video_in.average_rate, options={"crf": str(crf), "preset": preset})
    video_out.width, video_out.height, video_out.pix_fmt = video_in.width, video_in.height, "yuv420p"
    video_out.time_base = video_in.time_base
    video_out.codec_context.time_base = video_in.time_base
    audio = {s.index: dst.add_stream_from_template(s) for s in src.streams.audio}
    for packet in src.demux():
        if packet.stream.index in audio:
            if packet.dts is not None:
                packet.stream = audio[packet.stream.index]
                dst.mux(packet)
            continue
        if packet.stream.index != video_in.index:
            continue
        for frame in packet.decode():
            image = frame.to_ndarray(format="rgb24")
            out = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            out.pts, out.time_base = frame.pts, frame.time_base
            dst.mux(video_out.encode(out))
    dst.mux(video_out.encode(None))
    dst.close()
    src.close()


def round_trip(clip: Path, work: Path, crf: int, preset: str, repeats: int) -> dict:
    """Wall and CPU seconds (all threads of this process) for both, alternating runs.

    On a shared machine wall time swings with other users' load; CPU time does not, so both
    are reported, with ratios of minima and of medians.
    """
    runs = {"ours": ([], []), "plain_pyav": ([], [])}

    def ours(i: int) -> None:
        run_job(clip, work / f"ours{i}{clip.suffix}", JobSettings(encode=EncodeSettings(crf=crf, preset=preset), overwrite=True))

    def base(i: int) -> None:
        plain_pyav(clip, work / f"base{i}{clip.suffix}", crf, preset)

    for i in range(repeats):  # alternate, so machine load hits both alike
        for name, job in (("ours", ours), ("plain_pyav", base)):
            wall, cpu = time.perf_counter(), time.process_time()
            job(i)
            runs[name][0].append(time.perf_counter() - wall)
            runs[name][1].append(time.process_time() - cpu)
    (ours_wall, ours_cpu), (base_wall, base_cpu) = runs["ours"], runs["plain_pyav"]
    return {
        "clip": str(clip),
        "ours_wall_s": [round(x, 3) for x in ours_wall], "plain_pyav_wall_s": [round(x, 3) for x in base_wall],
        "ours_cpu_s": [round(x, 3) for x in ours_cpu], "plain_pyav_cpu_s": [round(x, 3) for x in base_cpu],
        "wall_ratio_min": round(min(ours_wall) / min(base_wall), 3),
        "wall_ratio_median": round(statistics.median(ours_wall) / statistics.median(base_wall), 3),
        "cpu_ratio_min": round(min(ours_cpu) / min(base_cpu), 3),
    }


# Linux carries ru_maxrss across fork + exec (it is kept per process, not per address space),
# so a child started by a big parent reports the parent's peak. VmHWM in /proc/self/status is
# the peak of the child's own address space; both are printed, and the clips are made in a
# separate process so that this parent stays small.
RSS_JOB = """
import resource, sys
from iconface_video.io.encoding import EncodeSettings
from iconface_video.job import JobSettings, run_job
run_job(sys.argv[1], sys.argv[2], JobSettings(encode=EncodeSettings(preset="ultrafast"), overwrite=True))
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm)
"""

MAKE_CLIP = """
import sys
sys.path.insert(0, sys.argv[1])
from clipgen import ClipSpec, make_clip
make_clip(sys.argv[2], ClipSpec(frames=int(sys.argv[3]), width=int(sys.argv[4]), height=int(sys.argv[5]), audio=True))
"""


def peak_rss(work: Path, seconds: list[int], size: tuple[int, int]) -> dict:
    result = {}
    for s in seconds:
        clip = work / f"rss_{s}s.mp4"
        subprocess.run([sys.executable, "-c", MAKE_CLIP, str(REPO / "tests"), str(clip), str(s * 25), *map(str, size)], check=True)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", RSS_JOB, str(clip), str(work / f"rss_{s}s_out.mp4")],
                             check=True, capture_output=True, text=True)
        maxrss_kib, hwm_kib = map(int, out.stdout.split()[-2:])
        result[f"{s}s"] = {"frames": s * 25, "ru_maxrss_mib": round(maxrss_kib / 1024, 1),
                           "vm_hwm_mib": round(hwm_kib / 1024, 1), "wall_s": round(time.perf_counter() - t, 2)}
    runs = list(result.values())
    for key in ("ru_maxrss_mib", "vm_hwm_mib"):
        values = [r[key] for r in runs]
        result[f"{key}_max_over_min"] = round(max(values) / min(values), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, help="clip for the round trip [default: a generated 10 s 640x360 clip]")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-seconds", type=int, nargs="+", default=[10, 300])
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-round-trip", action="store_true")
    args = parser.parse_args()
    report = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}, PyAV {av.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_rss:  # first, while this parent process is still small
            report["peak_rss"] = peak_rss(work, args.rss_seconds, (320, 240))
        if not args.skip_round_trip:
            clip = args.clip or make_clip(work / "rt.mp4", ClipSpec(frames=250, width=640, height=360, audio=True))
            report["round_trip"] = round_trip(clip, work, args.crf, args.preset, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
