"""The batch command on this machine: 2 worker processes, a corrupt input, reruns, and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_media import audio_packets, make_clip, make_corrupt, video_frames
from click.testing import CliRunner

from iconface_video.batch.manifest import manifest_path, read_manifest
from iconface_video.cli import cli
from iconface_video.io.writer import EncodeSettings
from iconface_video.pipeline import JobSettings, run_job

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    good = [make_clip(src / f"ep{i}.mp4", frames=24 + 6 * i, shots=(12,), seed=i) for i in range(3)]
    return src, good, make_corrupt(src / "broken.mp4")


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """What the main command writes for each clip, run in this single process."""
    out = tmp_path_factory.mktemp("single")
    return {p.name: run_job(p, out / p.name, JobSettings()).output_path for p in clips[1]}


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_same_video(a: Path, b: Path) -> None:
    pts_a, frames_a = video_frames(a)
    pts_b, frames_b = video_frames(b)
    assert pts_a == pts_b
    assert len(frames_a) == len(frames_b)
    for i, (x, y) in enumerate(zip(frames_a, frames_b)):
        assert np.array_equal(x, y), f"frame {i} differs"
    assert audio_packets(a) == audio_packets(b)


def test_two_workers_match_single_runs_and_survive_a_corrupt_file(clips, reference, tmp_path):
    src, good, bad = clips
    out = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["batch", str(src / "*.mp4"), "-o", str(out), "--workers", "2", "--json"])
    assert result.exit_code == 1, result.output  # one file failed
    events = _events(result.stdout)
    names = [e["event"] for e in events]
    assert names[0] == "batch_start" and names[-1] == "batch_done"
    assert names.count("file_done") == 3 and names.count("file_failed") == 1
    assert {e["worker"] for e in events if e["event"] == "file_start"} == {"cpu:0", "cpu:1"}
    # Every stage's progress comes through, tagged with its file.
    assert {e["file"] for e in events if e["event"] == "progress" and e["stage"] == "encode"} >= {str(p) for p in good}
    failed = next(e for e in events if e["event"] == "file_failed")
    assert failed["file"] == str(bad) and "broken.mp4" in failed["reason"]
    assert events[-1]["failures"] == [{"output": "broken.mp4", "reason": failed["reason"]}]

    manifest = read_manifest(manifest_path(out))
    assert {k: r.state for k, r in manifest.items()} == {
        "ep0.mp4": "done", "ep1.mp4": "done", "ep2.mp4": "done", "broken.mp4": "failed"}
    assert manifest["broken.mp4"].reason == failed["reason"]
    assert manifest["ep1.mp4"].frames == 30 and manifest["ep1.mp4"].settings["encode"]["segment_frames"] == 500
    assert not list((out / ".iconface-locks").iterdir()), "locks left behind"
    for clip in good:
        assert_same_video(out / clip.name, reference[clip.name])

    # A rerun redoes nothing that is done and retries the failure.
    mtimes = {p.name: (out / p.name).stat().st_mtime_ns for p in good}
    again = CliRunner().invoke(cli, ["batch", str(src / "*.mp4"), "-o", str(out), "--workers", "2", "--json"])
    assert again.exit_code == 1
    events = _events(again.stdout)
    assert sorted(Path(e["file"]).name for e in events if e["event"] == "file_skipped") == sorted(mtimes)
    assert [Path(e["file"]).name for e in events if e["event"] == "file_start"] == ["broken.mp4"]
    assert {p.name: (out / p.name).stat().st_mtime_ns for p in good} == mtimes
    assert read_manifest(manifest_path(out))["broken.mp4"].attempts == 2


def test_human_output_ends_with_a_summary_of_failures(clips, tmp_path):
    src, good, bad = clips
    result = CliRunner().invoke(cli, ["batch", str(bad), str(good[0]), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("batch: 1 done, 1 failed, 0 skipped")
    assert lines[-1].startswith("  failed: broken.mp4: ")


def test_kill_9_mid_batch_then_rerun_finishes_only_the_rest(tmp_path):
    src = tmp_path / "src"
    clips = [make_clip(src / f"k{i}.mp4", frames=160, size=(160, 120), shots=(60,), seed=10 + i) for i in range(4)]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "iconface_video", "batch", str(src / "*.mp4"), "-o", str(out),
               "--workers", "1", "--json", "--segment-frames", "8"]
    # A new session, so the kill takes the worker too, as a crash of the whole machine would.
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                             start_new_session=True)
    try:
        # One worker takes the files in order: kill once k1 has two finished segments.
        deadline = time.monotonic() + 60
        while len(list(out.glob(".k1.mp4.iconface-work-*/segment-*.nut"))) < 2:
            assert batch.poll() is None and time.monotonic() < deadline, "batch ended before the kill"
            time.sleep(0.01)
        os.killpg(batch.pid, signal.SIGKILL)
    finally:
        batch.wait(30)

    before = read_manifest(manifest_path(out))
    done = {k for k, r in before.items() if r.state == "done"}
    assert "k0.mp4" in done and len(done) < 4
    assert before["k1.mp4"].state == "running", "the file in progress stays marked running"
    mtimes = {k: (out / k).stat().st_mtime_ns for k in done}

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    events = _events(rerun.stdout)
    assert {Path(e["output"]).name for e in events if e["event"] == "file_skipped"} == done
    assert {Path(e["output"]).name for e in events if e["event"] == "file_done"} == {c.name for c in clips} - done
    # k1 picks up its finished segments instead of starting over ...
    resumed = [e for e in events if e["event"] == "resume" and e["file"] == str(clips[1])]
    assert resumed and resumed[0]["frame"] >= 16
    after = read_manifest(manifest_path(out))
    assert all(r.state == "done" for r in after.values())
    assert after["k1.mp4"].attempts == 2
    assert {k: (out / k).stat().st_mtime_ns for k in done} == mtimes
    assert not [p for p in out.iterdir() if "iconface-work" in p.name], "work folders left behind"
    # ... and matches an uninterrupted single run: same frames, pts and audio packets. Pixels are
    # compared by PSNR, not bit for bit: with many segments, encode_stream's x264 output is not
    # reproducible from one decode of the input to the next (reported to the I/O area), so two
    # uninterrupted runs differ the same way.
    single = run_job(clips[1], tmp_path / "k1.mp4", JobSettings(encode=EncodeSettings(segment_frames=8)))
    pts_a, frames_a = video_frames(out / "k1.mp4")
    pts_b, frames_b = video_frames(single.output_path)
    assert pts_a == pts_b and len(frames_a) == 160
    assert audio_packets(out / "k1.mp4") == audio_packets(single.output_path)
    for a, b in zip(frames_a, frames_b):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        assert mse == 0 or 10 * np.log10(255**2 / mse) > 35
