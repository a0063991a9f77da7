"""A resumed encode equals an uninterrupted one with the DEFAULT encoder settings: the same frames
encoded twice give the same segment bytes, and a job resumed in a new process after some
segments were done gives the same output file, byte for byte.

The repeats run in separate processes whose C heap starts filled with different bytes (glibc's
MALLOC_PERTURB_), so an encoder that reads memory it never wrote gives different output every
time. x264 did, where a frame is not a multiple of 8 macroblocks (128 pixels) wide (see
``writer.x264_mbtree_is_deterministic``); in one process the difference showed only now and
then, depending on what the process had freed before. Elsewhere than glibc the variable is
ignored and the repeats differ only by timing and thread scheduling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from clipgen import ClipSpec, make_clip

from iconface_video.io.encoding import (
    CODECS,
    EncodeSettings,
    x264_mbtree_is_deterministic,
)
from iconface_video.io.transcode import encode_range, finish, make_plan

# (clip, codec): 128 px = 8 macroblocks, where x264 keeps macroblock-tree; 160 px = 10, where
# 8-bit x264 must go without; 10-bit x264 keeps it at any width.
JOBS = [*((f"c{w}", codec) for w in (128, 160) for codec in CODECS), ("c160-10bit", "libx264")]

ENCODE_ALL = """
import hashlib, json, shutil, sys
from pathlib import Path
from iconface_video.io.transcode import encode_range, make_plan
from iconface_video.io.encoding import EncodeSettings

digests = {}
for job in sys.argv[3:]:
    clip, codec = job.split(":")
    plan = make_plan(Path(sys.argv[1]) / f"{clip}.mp4", Path(sys.argv[2]) / f"{clip}-{codec}.mkv",
                     EncodeSettings(codec=codec, segment_frames=8))
    digests[job] = [hashlib.sha256(encode_range(plan, i).read_bytes()).hexdigest() for i in range(len(plan.ranges))]
    shutil.rmtree(plan.work_dir)
print(json.dumps(digests))
"""


def run_python(code: str, args: list[str], perturb: int) -> str:
    """Run ``code`` in a new Python whose freed and fresh heap memory is filled with ``perturb``."""
    env = {**os.environ, "MALLOC_PERTURB_": str(perturb)}
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    return done.stdout.strip()


def test_same_frames_encode_to_same_bytes_with_default_settings(tmp_path):
    # 24 frames in 8-frame segments: shorter than x264's 40-frame look-ahead, as resumed tails are
    clips = tmp_path / "clips"
    clips.mkdir()
    for width in (128, 160):
        make_clip(clips / f"c{width}.mp4", ClipSpec(frames=24, width=width, height=120))
    make_clip(clips / "c160-10bit.mp4", ClipSpec(frames=24, width=160, height=120, pix_fmt="yuv420p10le"))
    jobs = [f"{clip}:{codec}" for clip, codec in JOBS]
    runs = []
    for perturb in (0x55, 0xAA):
        out = tmp_path / f"out{perturb}"
        out.mkdir()
        runs.append(json.loads(run_python(ENCODE_ALL, [str(clips), str(out), *jobs], perturb)))
    assert sorted(runs[0]) == sorted(jobs)
    assert all(len(segments) == 3 for segments in runs[0].values())
    differing = [key for key in runs[0] if runs[0][key] != runs[1][key]]
    assert differing == [], differing


def test_mbtree_is_kept_only_where_x264_repeats_itself():
    assert [w for w in (128, 256, 640, 1280, 1920, 3840) if not x264_mbtree_is_deterministic(w)] == []
    # a partial macroblock counts as one: 1281 px is 81 macroblocks
    assert [w for w in (64, 160, 176, 704, 720, 1281, 1440) if x264_mbtree_is_deterministic(w)] == []
    assert not x264_mbtree_is_deterministic(720, "yuv444p")
    assert x264_mbtree_is_deterministic(720, "yuv420p10le") and x264_mbtree_is_deterministic(161, "yuv444p10le")


RESUME_JOB = """
import sys
from iconface_video.io.transcode import encode_range, finish, make_plan
from iconface_video.io.encoding import EncodeSettings

plan = make_plan(sys.argv[1], sys.argv[2], EncodeSettings(segment_frames=8))
todo = plan.pending() if sys.argv[3] == "pending" else [int(i) for i in sys.argv[3].split(",")]
for i in todo:
    encode_range(plan, i)
if sys.argv[4] == "finish":
    finish(plan, overwrite=True)
print(",".join(map(str, todo)))
"""


def test_resumed_job_gives_the_uninterrupted_bytes(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=40, width=160, height=120, audio=True))
    uninterrupted, resumed = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert run_python(RESUME_JOB, [str(source), str(uninterrupted), "pending", "finish"], 0x55) == "0,1,2,3,4"
    # the interrupted run finished segments 0 and 1; the rerun, another process, does the rest
    assert run_python(RESUME_JOB, [str(source), str(resumed), "0,1", "stop"], 0xAA) == "0,1"
    assert run_python(RESUME_JOB, [str(source), str(resumed), "pending", "finish"], 0x33) == "2,3,4"
    assert resumed.read_bytes() == uninterrupted.read_bytes()


def test_same_process_repeats_match(tmp_path):
    """The main command encodes segment after segment in one process: a segment encoded after
    others equals the same segment encoded first."""
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=24, width=160, height=120))
    plan = make_plan(source, tmp_path / "o.mp4", EncodeSettings(segment_frames=8))
    first = [encode_range(plan, i).read_bytes() for i in range(len(plan.ranges))]
    for i in reversed(range(len(plan.ranges))):
        plan.segment_path(i).unlink()
        assert encode_range(plan, i).read_bytes() == first[i], i
    finish(plan)
