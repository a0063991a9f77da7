"""Run the main command on every real clip and check that the output keeps the input's timing.

    OMP_NUM_THREADS=1 nice python scripts/run_all_clips.py [--media ../shared/media] [--out OUT_DIR]
        [--detect-every 4] [--deadline HH:MM] [--only NAME ...]

For every video listed in ``MANIFEST.md`` (smallest first: width x height x frames), runs
``python -m iconface_video CLIP -o OUT/NAME.restored.mp4 --overwrite -q --detect-every K`` as a
subprocess (the command a user runs, with the embedded models) and then compares output with
input through PyAV: frame count, every frame's presentation time (exact, in seconds), every audio
packet (payload, pts and duration, byte-identical), the four colour tags, rotation and SAR.
``--detect-every 4`` is the default here only because this CPU is slow; the checks do not depend
on it. Faces restored come from the ``render`` section of ``OUT/NAME.restored.iconface.json``.

Prints a Markdown table and writes ``OUT/results.json`` after every clip, so a run stopped by
``--deadline`` (no new clip starts after it, UTC) still leaves the clips that finished.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

from iconface_video.io.probe import probe
from iconface_video.io.reader import frame_timestamps

REPO = Path(__file__).resolve().parents[1]
# A manifest row: | `src/.../clip.mp4` | h264 388x512 20.000fps 248f 12.4s | what it shows |
_ROW = re.compile(r"^\|\s*`(src/[^`]+\.(?:mp4|mov|mkv|webm|avi))`\s*\|\s*\S+\s+(\d+)x(\d+)\s+\S+\s+(\d+)f")


def manifest_clips(media: Path) -> list[tuple[Path, int]]:
    """(path, width*height*frames) of every video in the manifest, smallest work first."""
    clips = []
    for line in (media / "MANIFEST.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rel, width, height, frames = match.groups()
            clips.append((media / rel, int(width) * int(height) * int(frames)))
    return sorted(clips, key=lambda clip: clip[1])


def clip_name(path: Path) -> str:
    """A unique, readable output stem: ``owner__repo-stem`` (several repos ship ``1.mp4``)."""
    return f"{path.parts[path.parts.index('src') + 1]}-{path.stem}"


def frame_times(path: Path) -> list[Fraction]:
    """Every video frame's presentation time in seconds, exactly, in presentation order."""
    time_base = probe(path).video.time_base
    return [pts * time_base for pts in frame_timestamps(path)]


def audio_packets(path: Path) -> list[tuple[bytes, Fraction | None, Fraction]]:
    """(payload, pts in seconds, duration in seconds) of every non-empty audio packet, file order."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            return []
        return [(bytes(p), None if p.pts is None else p.pts * p.time_base, (p.duration or 0) * p.time_base)
                for p in container.demux(streams) if p.size]


def compare(source: Path, output: Path) -> list[str]:
    """Every way ``output`` differs from ``source`` in what the tool promises to keep ([] = none)."""
    problems = []
    info_in, info_out = probe(source), probe(output)
    v_in, v_out = info_in.video, info_out.video
    if info_in.frame_count != info_out.frame_count:
        problems.append(f"frames {info_in.frame_count} -> {info_out.frame_count}")
    times_in, times_out = frame_times(source), frame_times(output)
    if times_in != times_out:
        first = next((i for i, (a, b) in enumerate(zip(times_in, times_out)) if a != b),
                     min(len(times_in), len(times_out)))
        a = times_in[first] if first < len(times_in) else None
        b = times_out[first] if first < len(times_out) else None
        problems.append(f"pts differ from frame {first}: {a} s -> {b} s")
    audio_in, audio_out = audio_packets(source), audio_packets(output)
    if audio_in != audio_out:
        same = sum(1 for x, y in zip(audio_in, audio_out) if x == y)
        problems.append(f"audio packets {len(audio_in)} -> {len(audio_out)} ({same} identical)")
    if v_in.colour_names() != v_out.colour_names():
        problems.append(f"colour {v_in.colour_names()} -> {v_out.colour_names()}")
    if v_in.rotation != v_out.rotation:
        problems.append(f"rotation {v_in.rotation} -> {v_out.rotation}")
    if (v_in.sar or Fraction(1)) != (v_out.sar or Fraction(1)):
        problems.append(f"SAR {v_in.sar} -> {v_out.sar}")
    return problems


def run_clip(source: Path, out_dir: Path, detect_every: int, timeout: float) -> dict:
    """Run the main command on one clip, check its output; one result row."""
    output = out_dir / f"{clip_name(source)}.restored.mp4"
    command = [sys.executable, "-m", "iconface_video", str(source), "-o", str(output), "--overwrite", "-q",
               "--detect-every", str(detect_every)]
    row = {"clip": str(source), "name": clip_name(source), "command": " ".join(command)}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              check=False)
    except subprocess.TimeoutExpired:
        return row | {"wall_s": round(time.perf_counter() - start, 1), "ok": False,
                      "reason": f"timed out after {timeout:.0f} s"}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return row | {"ok": False, "reason": f"exit {done.returncode}: {lines[-1] if lines else '(no stderr)'}",
                      "stderr_tail": done.stderr[-3000:]}
    render = json.loads(output.with_suffix(".iconface.json").read_text()).get("render", {})
    row |= {"frames": render.get("frames"), "faces_restored": render.get("faces_restored"),
            "frames_with_faces": render.get("frames_with_faces"), "restorer": render.get("restorer"),
            "warnings": render.get("warnings", [])}
    try:
        problems = compare(source, output)
    except Exception as error:  # noqa: BLE001 - a check that cannot even read the output is itself a failure
        problems = [f"check failed: {type(error).__name__}: {error}"]
    return row | {"ok": not problems, "reason": "; ".join(problems) or "ok"}


def markdown(rows: list[dict]) -> str:
    """The result table, one row per clip."""
    lines = ["| clip | frames | faces restored | wall s | result |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row.get('frames', '-')} | {row.get('faces_restored', '-')} "
                     f"| {row['wall_s']} | {'PASS' if row['ok'] else 'FAIL'}: {row['reason']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared/media")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the outputs [default: a new temporary folder, printed]")
    parser.add_argument("--detect-every", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per clip")
    parser.add_argument("--deadline", help="HH:MM UTC: start no clip after this")
    parser.add_argument("--only", nargs="*", help="clip names (owner__repo-stem) to run")
    args = parser.parse_args()
    clips = manifest_clips(args.media)
    if args.only:
        clips = [c for c in clips if clip_name(c[0]) in args.only]
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="iconface-allclips-"))
        print(f"outputs in {args.out}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for source, _ in clips:
        now = dt.datetime.now(dt.timezone.utc)
        if args.deadline and now.strftime("%H:%M") >= args.deadline:
            print(f"deadline {args.deadline} UTC reached; not started: {clip_name(source)}", flush=True)
            rows.append({"clip": str(source), "name": clip_name(source), "wall_s": "-", "ok": False,
                         "reason": "not run (deadline)"})
            continue
        row = run_clip(source, args.out, args.detect_every, args.timeout)
        rows.append(row)
        print(f"{now:%H:%M:%S} {row['name']}: {'PASS' if row['ok'] else 'FAIL'} {row['wall_s']} s {row['reason']}",
              flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    done = [r for r in rows if r.get("frames") is not None]
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} pass; {sum(r['frames'] for r in done)} frames, "
          f"{sum(r['faces_restored'] or 0 for r in done)} faces restored, "
          f"{sum(r['wall_s'] for r in rows if isinstance(r['wall_s'], float)):.0f} s wall")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
