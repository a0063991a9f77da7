"""The batch on a local Ray instance: same outputs as the main command; a split-at-shots file joins cleanly.

One Ray session for the whole module (its start-up is the slow part on this 2-core machine).
Files are restored with a small random core saved as a checkpoint, as in test_batch_local.py;
a split file is analysed once and its shots restored by separate tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from batch_media import audio_packets, face_clip, make_clip, make_corrupt, video_frames
from click.testing import CliRunner

from iconface_video.batch.manifest import manifest_path, read_manifest
from iconface_video.cli import cli, main

ray = pytest.importorskip("ray")
# Bit-for-bit comparisons use x264's ultrafast preset; see EXACT in test_batch_local.py for why.
EXACT = ("--preset", "ultrafast")

# Ray's start-up alone takes 5-15 s here. Ray runs its tasks with one thread (OMP_NUM_THREADS=1),
# so the in-process runs these tests compare against must too: float sums differ with the count.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from render_fixtures import tiny_restorer

    from iconface_video.core.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_restorer().model)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_ray_batch_matches_single_runs(ray_session, checkpoint, tmp_path):
    src = tmp_path / "src"
    good = [face_clip(src / "ep0.mp4", frames=10, first=20), face_clip(src / "ep1.mp4", frames=14, first=60, cut=7)]
    make_corrupt(src / "broken.mp4")
    out = tmp_path / "restored"
    restore = ("--checkpoint", str(checkpoint), *EXACT)
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(out), "--ray", "auto", "--json", *restore])
    assert result.exit_code == 1, result.output
    events = _events(result.stdout)
    done = [e for e in events if e["event"] == "file_done"]
    assert len(done) == 2 and [e["event"] for e in events].count("file_failed") == 1, result.stdout
    manifest = read_manifest(manifest_path(out))
    assert manifest["broken.mp4"].state == "failed" and "broken.mp4" in manifest["broken.mp4"].reason
    assert manifest["ep0.mp4"].worker.startswith("ray ") and " pid " in manifest["ep0.mp4"].worker
    (tmp_path / "single").mkdir()
    for clip in good:
        single = tmp_path / "single" / clip.name
        try:
            main([str(clip), "-o", str(single), "-q", *restore])
        except SystemExit as end:
            assert not end.code
        assert json.loads((out / f"{clip.stem}.iconface.json").read_text())["render"]["faces_restored"] >= 1
        pts_a, frames_a = video_frames(out / clip.name)
        pts_b, frames_b = video_frames(single)
        assert pts_a == pts_b
        assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b, strict=True)) and len(frames_a) == len(frames_b)
        assert audio_packets(out / clip.name) == audio_packets(single)


def test_split_at_shots_through_ray_equals_the_main_command(ray_session, checkpoint, tmp_path):
    clip = face_clip(tmp_path / "multi.mp4", frames=30, first=30, cut=15)
    out = tmp_path / "restored"
    restore = ("--checkpoint", str(checkpoint), *EXACT)
    result = CliRunner().invoke(cli, ["batch", str(clip), "-o", str(out), "--ray", "auto", "--split-shots",
                                      "--min-task-frames", "1", "--json", *restore])
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    split = next(e for e in events if e["event"] == "file_split")
    assert (split["shots"], split["tasks"]) == (2, 2)
    tasks = [e for e in events if e["event"] == "segment_done"]
    assert sorted(e["frames"] for e in tasks) == [15, 15]
    assert all(e["worker"].startswith("ray ") for e in tasks)

    whole = tmp_path / "whole.mp4"
    try:
        main([str(clip), "-o", str(whole), "-q", *restore])
    except SystemExit as end:
        assert not end.code
    pts_split, frames_split = video_frames(out / "multi.mp4")
    pts_whole, frames_whole = video_frames(whole)
    assert len(frames_split) == len(frames_whole) == 30
    assert pts_split == pts_whole
    assert audio_packets(out / "multi.mp4") == audio_packets(whole)
    # The render segments at shot starts too, so the split file is the main command's bit for bit.
    assert all(np.array_equal(a, b) for a, b in zip(frames_split, frames_whole, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(frames_split, video_frames(clip)[1]))
    assert not [p for p in out.iterdir() if "iconface-work" in p.name]


def test_rerun_through_ray_skips_what_a_local_run_finished(ray_session, checkpoint, tmp_path):
    """Local and Ray runs share one manifest format: either can resume the other's batch."""
    src = tmp_path / "src"
    clips = [make_clip(src / f"c{i}.mp4", frames=16, seed=40 + i, audio=False) for i in range(2)]
    out = tmp_path / "out"
    restore = ("--checkpoint", str(checkpoint))
    local = CliRunner().invoke(cli, ["batch", str(clips[0]), "-o", str(out), "--workers", "1", "-q", *restore])
    assert local.exit_code == 0, local.output
    mtime = (out / "c0.mp4").stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["batch", str(src / "*.mp4"), "-o", str(out), "--ray", "auto", "--json",
                                      *restore])
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    assert [Path(e["file"]).name for e in events if e["event"] == "file_skipped"] == ["c0.mp4"]
    assert [Path(e["file"]).name for e in events if e["event"] == "file_done"] == ["c1.mp4"]
    assert (out / "c0.mp4").stat().st_mtime_ns == mtime
