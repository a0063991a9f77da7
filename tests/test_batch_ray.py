"""The batch on a local Ray instance: same outputs as single runs; a split-at-shots file joins cleanly.

One Ray session for the whole module (its start-up is the slow part on this 2-core machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from batch_media import audio_packets, make_clip, make_corrupt, video_frames
from click.testing import CliRunner

from iconface_video.batch.manifest import manifest_path, read_manifest
from iconface_video.cli import cli
from iconface_video.io.writer import EncodeSettings
from iconface_video.pipeline import JobSettings, run_job

ray = pytest.importorskip("ray")
# Bit-for-bit comparisons use x264's ultrafast preset; see EXACT in test_batch_local.py for why.
EXACT = ("--preset", "ultrafast")
EXACT_SETTINGS = JobSettings(encode=EncodeSettings(preset="ultrafast"))

pytestmark = pytest.mark.slow  # Ray's start-up alone takes 5-15 s here


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_ray_batch_matches_single_runs(ray_session, tmp_path):
    src = tmp_path / "src"
    good = [make_clip(src / f"ep{i}.mp4", frames=20 + 4 * i, shots=(10,), seed=20 + i) for i in range(3)]
    make_corrupt(src / "broken.mp4")
    out = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(out), "--ray", "auto", "--json", *EXACT])
    assert result.exit_code == 1, result.output
    events = _events(result.stdout)
    done = [e for e in events if e["event"] == "file_done"]
    assert len(done) == 3 and [e["event"] for e in events].count("file_failed") == 1, result.stdout
    manifest = read_manifest(manifest_path(out))
    assert manifest["broken.mp4"].state == "failed" and "broken.mp4" in manifest["broken.mp4"].reason
    assert manifest["ep0.mp4"].worker.startswith("ray ") and " pid " in manifest["ep0.mp4"].worker
    (tmp_path / "single").mkdir()
    for clip in good:
        single = run_job(clip, tmp_path / "single" / clip.name, EXACT_SETTINGS)
        pts_a, frames_a = video_frames(out / clip.name)
        pts_b, frames_b = video_frames(single.output_path)
        assert pts_a == pts_b
        assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b, strict=True)) and len(frames_a) == len(frames_b)
        assert audio_packets(out / clip.name) == audio_packets(single.output_path)


def test_split_at_shots_through_ray_equals_the_unsplit_run(ray_session, tmp_path):
    cuts = (30, 55)
    clip = make_clip(tmp_path / "multi.mp4", frames=90, shots=cuts, seed=7)
    out = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["batch", str(clip), "-o", str(out), "--ray", "auto", "--split-shots",
                                      "--min-task-frames", "1", "--json", *EXACT])
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    split = next(e for e in events if e["event"] == "file_split")
    assert (split["shots"], split["tasks"]) == (3, 3)
    tasks = [e for e in events if e["event"] == "segment_done"]
    assert sorted(e["frames"] for e in tasks) == [25, 30, 35]
    assert len({e["worker"] for e in tasks}) >= 1 and all(e["worker"].startswith("ray ") for e in tasks)

    unsplit = run_job(clip, tmp_path / "unsplit.mp4", EXACT_SETTINGS)
    pts_split, frames_split = video_frames(out / "multi.mp4")
    pts_whole, frames_whole = video_frames(unsplit.output_path)
    assert len(frames_split) == len(frames_whole) == 90
    assert pts_split == pts_whole
    assert audio_packets(out / "multi.mp4") == audio_packets(unsplit.output_path)
    assert len(audio_packets(out / "multi.mp4")) > 150
    # With the same segment boundaries a single run encodes the very same segments.
    same_cuts = run_job(clip, tmp_path / "same-cuts.mp4", JobSettings(encode=EXACT_SETTINGS.encode, boundaries=cuts))
    assert all(np.array_equal(a, b) for a, b in zip(frames_split, video_frames(same_cuts.output_path)[1], strict=True))
    assert not [p for p in out.iterdir() if "iconface-work" in p.name]


def test_rerun_through_ray_skips_what_a_local_run_finished(ray_session, tmp_path):
    """Local and Ray runs share one manifest format: either can resume the other's batch."""
    src = tmp_path / "src"
    clips = [make_clip(src / f"c{i}.mp4", frames=16, seed=40 + i, audio=False) for i in range(2)]
    out = tmp_path / "out"
    local = CliRunner().invoke(cli, ["batch", str(clips[0]), "-o", str(out), "--workers", "1", "-q"])
    assert local.exit_code == 0, local.output
    mtime = (out / "c0.mp4").stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["batch", str(src / "*.mp4"), "-o", str(out), "--ray", "auto", "--json"])
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    assert [Path(e["file"]).name for e in events if e["event"] == "file_skipped"] == ["c0.mp4"]
    assert [Path(e["file"]).name for e in events if e["event"] == "file_done"] == ["c1.mp4"]
    assert (out / "c0.mp4").stat().st_mtime_ns == mtime
