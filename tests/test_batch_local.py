"""The batch command on this machine: 2 worker processes, a corrupt input, reruns, and kill -9.

Every file goes through the real job of the main command (analysis with the real detector and
embedder, restoration, encode). The restorer is a small random core saved as a checkpoint
(``--checkpoint``), a real IConFace core whose output depends on its input, fast enough for CPU
tests; the comparisons are with ``iconface-video VIDEO`` run on the same file.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_media import audio_packets, face_clip, make_clip, make_corrupt, video_frames
from click.testing import CliRunner

from iconface_video.batch.items import JobSpec, WorkItem
from iconface_video.batch.local_backend import LocalBackend, worker_specs
from iconface_video.batch.manifest import manifest_path, read_manifest
from iconface_video.cli import cli, main

REPO = Path(__file__).resolve().parents[1]
# Bit-for-bit comparisons encode with x264's ultrafast preset: with macroblock-tree rate control
# (on in the default preset) x264's output varies from run to run on identical input (a timing
# effect, seen even in one process; reported to the I/O area), so two plain single runs can differ.
EXACT = ("--preset", "ultrafast")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random IConFace core as a checkpoint file (see the module docstring)."""
    from render_fixtures import tiny_restorer

    from iconface_video.core.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_restorer().model)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    good = [face_clip(src / "ep0.mp4", frames=12, first=30), face_clip(src / "ep1.mp4", frames=16, first=50, cut=8)]
    return src, good, make_corrupt(src / "broken.mp4")


def main_command(clip: Path, output: Path, *args: str) -> Path:
    """``iconface-video CLIP -o OUTPUT ARGS`` in this process (the reference for a batch output)."""
    try:
        main([str(clip), "-o", str(output), "-q", *args])
    except SystemExit as done:
        assert not done.code, f"main command failed on {clip}"
    return output


@pytest.fixture(scope="module")
def reference(clips, checkpoint, tmp_path_factory):
    """What the main command writes for each clip."""
    out = tmp_path_factory.mktemp("single")
    return {p.name: main_command(p, out / p.name, "--checkpoint", str(checkpoint), *EXACT) for p in clips[1]}


def faces_restored(analysis_path: Path) -> int:
    """How many faces the render recorded in the analysis file as restored."""
    return json.loads(analysis_path.read_text())["render"]["faces_restored"]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_same_video(a: Path, b: Path) -> None:
    pts_a, frames_a = video_frames(a)
    pts_b, frames_b = video_frames(b)
    assert pts_a == pts_b
    assert len(frames_a) == len(frames_b)
    for i, (x, y) in enumerate(zip(frames_a, frames_b, strict=True)):
        assert np.array_equal(x, y), f"frame {i} differs"
    assert audio_packets(a) == audio_packets(b)


def test_two_workers_match_single_runs_and_survive_a_corrupt_file(clips, reference, checkpoint, tmp_path):
    src, good, bad = clips
    out = tmp_path / "restored"
    args = ["batch", str(src / "*.mp4"), "-o", str(out), "--workers", "2", "--json", "--checkpoint", str(checkpoint),
            *EXACT]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # one file failed
    events = _events(result.stdout)
    names = [e["event"] for e in events]
    assert names[0] == "batch_start" and names[-1] == "batch_done"
    assert names.count("file_done") == 2 and names.count("file_failed") == 1
    assert {e["worker"] for e in events if e["event"] == "file_start"} == {"cpu:0", "cpu:1"}
    # Every stage's progress comes through, tagged with its file: the analysis, then the render.
    for stage in ("analyze", "encode"):
        assert {e["file"] for e in events if e["event"] == "progress" and e["stage"] == stage} >= {str(p) for p in good}
    failed = next(e for e in events if e["event"] == "file_failed")
    assert failed["file"] == str(bad) and "broken.mp4" in failed["reason"]
    assert events[-1]["failures"] == [{"output": "broken.mp4", "reason": failed["reason"]}]

    manifest = read_manifest(manifest_path(out))
    assert {k: r.state for k, r in manifest.items()} == {"ep0.mp4": "done", "ep1.mp4": "done", "broken.mp4": "failed"}
    assert manifest["broken.mp4"].reason == failed["reason"]
    record = manifest["ep1.mp4"]
    assert record.frames == 16 and record.settings["options"]["segment_frames"] == 500
    assert record.settings["options"]["checkpoint"] == str(checkpoint)
    assert record.settings["analyze"]["detector"] == "auto"
    digest = __import__("hashlib").sha256(checkpoint.read_bytes()).hexdigest()
    assert record.models["restorer"] == f"tiny.safetensors sha256:{digest}"
    assert not list((out / ".iconface-locks").iterdir()), "locks left behind"
    for clip in good:
        # Restored (the analysis beside the output says so, and the pixels changed) ...
        assert faces_restored(out / f"{clip.stem}.iconface.json") >= 1
        assert any(not np.array_equal(a, b) for a, b in zip(video_frames(out / clip.name)[1], video_frames(clip)[1]))
        # ... exactly as the main command restores it.
        assert_same_video(out / clip.name, reference[clip.name])

    # A rerun redoes nothing that is done and retries the failure.
    mtimes = {p.name: (out / p.name).stat().st_mtime_ns for p in good}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1
    events = _events(again.stdout)
    assert events[0]["event"] == "batch_start" and (events[0]["todo"], events[0]["skipped"]) == (1, 2)
    assert sorted(Path(e["file"]).name for e in events if e["event"] == "file_skipped") == sorted(mtimes)
    assert [Path(e["file"]).name for e in events if e["event"] == "file_start"] == ["broken.mp4"]
    assert {p.name: (out / p.name).stat().st_mtime_ns for p in good} == mtimes
    assert read_manifest(manifest_path(out))["broken.mp4"].attempts == 2


def test_human_output_ends_with_a_summary_of_failures(clips, checkpoint, tmp_path):
    bad = clips[2]
    result = CliRunner().invoke(cli, ["batch", str(bad), "-o", str(tmp_path / "o"), "-q",
                                      "--checkpoint", str(checkpoint)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("batch: 0 done, 1 failed, 0 skipped")
    assert lines[-1].startswith("  failed: broken.mp4: ")


@pytest.mark.slow  # two full batch processes, ~60 s on the loaded 2-core machine
def test_kill_9_mid_batch_then_rerun_finishes_only_the_rest(checkpoint, tmp_path):
    src = tmp_path / "src"
    # k1 is killed after two segments (0-8, 8-16), so it resumes inside its first shot (0-20);
    # k0 is done before that, k2 not yet started.
    clips = [face_clip(src / "k0.mp4", frames=12, first=0), face_clip(src / "k1.mp4", frames=28, first=10, cut=20),
             face_clip(src / "k2.mp4", frames=12, first=20, cut=6)]
    out = tmp_path / "out"
    restore = ("--checkpoint", str(checkpoint), "--segment-frames", "8", *EXACT)
    command = [sys.executable, "-m", "iconface_video", "batch", str(src / "*.mp4"), "-o", str(out),
               "--workers", "1", "--json", *restore]
    # A new session, so the kill takes the worker too, as a crash of the whole machine would.
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                             start_new_session=True)
    try:
        # One worker takes the files in order: kill once k1 has two finished segments.
        deadline = time.monotonic() + 240  # generous: the machine may be busy; the kill point is what counts
        while len(list(out.glob(".k1.mp4.iconface-work-*/segment-*.nut"))) < 2:
            assert batch.poll() is None and time.monotonic() < deadline, "batch ended before the kill"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended (then the assertion says so)
            os.killpg(batch.pid, signal.SIGKILL)
        batch.wait(30)

    before = read_manifest(manifest_path(out))
    done = {k for k, r in before.items() if r.state == "done"}
    assert "k0.mp4" in done and len(done) < len(clips)
    assert before["k1.mp4"].state == "running", "the file in progress stays marked running"
    mtimes = {k: (out / k).stat().st_mtime_ns for k in done}

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
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
    # ... and equals an uninterrupted run of the main command frame for frame.
    assert faces_restored(out / "k1.iconface.json") >= 1
    assert_same_video(out / "k1.mp4", main_command(clips[1], tmp_path / "k1.mp4", *restore))


def test_a_worker_that_dies_fails_only_its_item_and_is_replaced(clips, checkpoint, tmp_path):
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.render.options import RenderOptions

    long_clip = make_clip(tmp_path / "long.mp4", frames=400, size=(256, 192), seed=5, audio=False)
    out = tmp_path / "out"
    out.mkdir()
    backend = LocalBackend(worker_specs(1, None), JobSpec(RenderOptions(checkpoint=str(checkpoint)), AnalyzeSettings()))
    try:
        backend.submit(WorkItem("file", "long.mp4", str(long_clip), str(out / "long.mp4")))
        messages = _poll_until(backend, "start")
        os.kill(backend.pids()["cpu:0"], signal.SIGKILL)
        assert [m[0] for m in messages] == ["start"], "the job ended before the kill; make the clip longer"
        crashed = _poll_until(backend, "end")[-1][1]
        assert not crashed.ok and "worker cpu:0 died (exit code -9)" in crashed.reason
        assert messages[0][1].id == "long.mp4"
        # A new worker took the dead one's place and takes the next item.
        assert backend.slots == 1
        clip = clips[1][0]
        backend.submit(WorkItem("file", clip.name, str(clip), str(out / clip.name)))
        finished = _poll_until(backend, "end")[-1][1]
        assert finished.ok and finished.frames == 12 and (out / clip.name).is_file()
        assert faces_restored(out / f"{clip.stem}.iconface.json") >= 1
        assert not (out / "long.mp4").exists()
    finally:
        backend.close()


def test_a_worker_loads_its_models_for_its_first_item_only(clips, checkpoint, tmp_path, monkeypatch):
    """The restorer, the analysis's detector and embedder and the identity guard's embedder are
    loaded once per worker and reused by its later items: whole files, split analyses and split
    segments alike. The real loaders run, wrapped to count their calls."""
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.batch.worker import WorkerModels, execute
    from iconface_video.core.restorer import Restorer
    from iconface_video.faces import detect, embed
    from iconface_video.render.options import RenderOptions

    loads: collections.Counter[str] = collections.Counter()

    def counting(name, load):
        def counted(*args, **kwargs):
            loads[name] += 1
            return load(*args, **kwargs)
        return counted

    monkeypatch.setattr(detect, "load_detector", counting("detector", detect.load_detector))
    monkeypatch.setattr(embed, "load_embedder", counting("embedder", embed.load_embedder))
    monkeypatch.setattr(Restorer, "from_checkpoint", staticmethod(counting("restorer", Restorer.from_checkpoint)))
    job = JobSpec(RenderOptions(checkpoint=str(checkpoint), end="4f", preset="ultrafast"), AnalyzeSettings())
    models = WorkerModels(job)
    first, second = clips[1]
    (tmp_path / "split").mkdir()
    result = execute(WorkItem("file", first.name, str(first), str(tmp_path / first.name)), job, models=models)
    assert result.ok, result.reason
    loaded = dict(loads)
    assert loaded == {"restorer": 1, "detector": 1, "embedder": 2}  # the analysis's and the guard's
    split_output = str(tmp_path / "split" / second.name)
    for item in (WorkItem("file", second.name, str(second), str(tmp_path / second.name)),
                 WorkItem("analyze", second.name, str(second), split_output)):
        result = execute(item, job, models=models)
        assert result.ok, result.reason
    segments = WorkItem("segments", second.name, str(second), split_output, (0,), result.boundaries, result.process_key)
    result = execute(segments, job, models=models)
    assert result.ok and result.frames, result.reason
    assert dict(loads) == loaded, "a later item loaded a model again"
    assert faces_restored(tmp_path / f"{second.stem}.iconface.json") >= 1


def _poll_until(backend, kind: str, timeout: float = 240) -> list[tuple]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(backend.poll(0.01))
        if any(m[0] == kind for m in seen):
            return seen
    raise AssertionError(f"no {kind!r} message within {timeout} s: {seen}")


@pytest.mark.slow  # two full batch processes, ~60 s on the loaded 2-core machine
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(checkpoint, tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        make_clip(src / f"c{i}.mp4", frames=32, size=(160, 120), seed=30 + i)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "iconface_video", "batch", str(src / "*.mp4"), "-o", str(out),
               "--workers", "2", "--segment-frames", "8", "--checkpoint", str(checkpoint)]
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob(".c*.mp4.iconface-work-*/segment-*.nut")):
        assert batch.poll() is None and time.monotonic() < deadline, "batch ended before the interrupt"
        time.sleep(0.01)
    os.killpg(batch.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = batch.communicate(timeout=120)
    assert batch.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert not list((out / ".iconface-locks").iterdir()), "an interrupted run must release its locks"
    assert "running" in {r.state for r in read_manifest(manifest_path(out)).values()}

    rerun = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert any(e["event"] == "resume" for e in _events(rerun.stdout))
    assert {r.state for r in read_manifest(manifest_path(out)).values()} == {"done"}


def test_a_file_locked_by_another_live_run_is_skipped(clips, checkpoint, tmp_path):
    """Also --devices on this GPU-less machine: the worker runs (on the CPU) under its GPU's name."""
    from iconface_video import locks

    src, good, _ = clips
    out = tmp_path / "out"
    held = locks.acquire(locks.lock_path_for(out, good[0].name), "other-run")
    try:
        result = CliRunner().invoke(cli, ["batch", str(good[0]), str(good[1]), "-o", str(out), "--json",
                                          "--devices", "0", "--checkpoint", str(checkpoint)])
    finally:
        held.release()
    assert result.exit_code == 0, result.output  # skipped is not failed
    events = _events(result.stdout)
    skipped = [e for e in events if e["event"] == "file_skipped"]
    assert len(skipped) == 1 and skipped[0]["file"] == str(good[0])
    assert f"locked by pid {os.getpid()}" in skipped[0]["reason"] and "other-run" in skipped[0]["reason"]
    assert not (out / good[0].name).exists() and (out / good[1].name).is_file()
    manifest = read_manifest(manifest_path(out))
    assert manifest[good[0].name].state == "pending"
    assert [e["worker"] for e in events if e["event"] == "file_start"] == ["cuda:0"]
    assert manifest[good[1].name].worker.startswith("cuda:0 on ")


@pytest.mark.parametrize(("args", "message"), [
    (["--ray", "auto", "--workers", "2"], "leave out --workers and --devices"),
    (["--workers", "2", "--devices", "0"], "either --workers"),
    (["--devices", "0,x"], "GPU numbers"),
    (["--dry-run"], "--dry-run is for one file"),
    (["--split-shots", "--preview"], "--split-shots cannot make --preview"),
    (["--checkpoint", "missing.safetensors"], "missing.safetensors cannot be read"),
    (["--refs", "Anna=no-such-folder"], "no-such-folder is not a folder"),  # the analysis's photos, checked first
])
def test_conflicting_options_are_one_line_errors(clips, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["batch", str(clips[1][0]), "-o", str(tmp_path), *args])
    assert result.exit_code != 0
    assert message in (str(result.exception) if result.exception else "") + result.output
    assert not (tmp_path / "iconface-batch.json").exists()


@pytest.mark.slow  # three full jobs, ~30-70 s on the loaded 2-core machine
def test_restoration_options_reach_the_job_and_a_change_redoes_done_files(clips, reference, checkpoint, tmp_path):
    clip = clips[1][0]
    out = tmp_path / "out"
    options = ("--checkpoint", str(checkpoint), "--strength", "0.5", "--crf", "40", "--max-refs", "1", *EXACT)
    first = CliRunner().invoke(cli, ["batch", str(clip), "-o", str(out), "-q", *options])
    assert first.exit_code == 0, first.output
    single = main_command(clip, tmp_path / "single.mp4", *options)
    assert_same_video(out / clip.name, single)
    _, full = video_frames(reference[clip.name])  # the default --strength 1 and --crf
    assert any(not np.array_equal(a, b) for a, b in zip(video_frames(out / clip.name)[1], full))
    settings = read_manifest(manifest_path(out))[clip.name].settings
    assert (settings["options"]["strength"], settings["options"]["crf"], settings["analyze"]["max_refs"]) == (0.5, 40, 1)

    again = CliRunner().invoke(cli, ["batch", str(clip), "-o", str(out), "--json", *options, "--strength", "0.8"])
    assert again.exit_code == 0
    assert [e["event"] for e in _events(again.stdout)].count("file_done") == 1
    record = read_manifest(manifest_path(out))[clip.name]
    assert (record.settings["options"]["strength"], record.attempts) == (0.8, 2)


@pytest.mark.slow  # an analysis, three tasks and the main command: ~40-80 s on the loaded 2-core machine
def test_split_run_restores_like_the_main_command_and_reuses_finished_segments(checkpoint, tmp_path):
    """--split-shots: one analysis, segments restored by separate tasks, joined: the main command's
    output bit for bit (its render also starts segments at shot starts)."""
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.render.options import RenderOptions

    clip = face_clip(tmp_path / "m.mp4", frames=24, first=40, cut=12)
    out = tmp_path / "out"
    out.mkdir()
    restore = ("--checkpoint", str(checkpoint), "--segment-frames", "8", *EXACT)
    # An earlier, interrupted split run analysed the file and restored its second segment, in a
    # worker like the batch's (same thread count: the render's work-folder key depends on it).
    job = JobSpec(RenderOptions(checkpoint=str(checkpoint), segment_frames=8, preset="ultrafast"), AnalyzeSettings())
    backend = LocalBackend(worker_specs(2, None)[:1], job)
    try:
        backend.submit(WorkItem("analyze", "m.mp4", str(clip), str(out / "m.mp4")))
        analysed = _poll_until(backend, "end")[-1][1]
        assert analysed.ok, analysed.reason
        assert analysed.boundaries == (12,), "the analysis finds the cut"
        backend.submit(WorkItem("segments", "m.mp4", str(clip), str(out / "m.mp4"), (1,), analysed.boundaries,
                                analysed.process_key))
        assert _poll_until(backend, "end")[-1][1].frames == 4  # segments: 0-8, 8-12 (the cut), 12-20, 20-24
    finally:
        backend.close()

    result = CliRunner().invoke(cli, ["batch", str(clip), "-o", str(out), "--split-shots", "--min-task-frames", "1",
                                      "--workers", "2", "--json", *restore])
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    split = next(e for e in events if e["event"] == "file_split")
    assert (split["shots"], split["segments"], split["reused"], split["tasks"]) == (2, 4, 1, 3)
    assert sorted(e["segments"] for e in events if e["event"] == "segment_done") == [[0], [2], [3]]
    assert {e["worker"] for e in events if e["event"] == "segment_done"} == {"cpu:0", "cpu:1"}
    assert [e["stage"] for e in events if e["event"] == "start"].count("analyze") == 1, "analysed once"
    assert not [p for p in out.iterdir() if "iconface-work" in p.name], "work folders left behind"
    assert any(not np.array_equal(a, b) for a, b in zip(video_frames(out / "m.mp4")[1], video_frames(clip)[1]))
    assert_same_video(out / "m.mp4", main_command(clip, tmp_path / "whole.mp4", *restore))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_one_line_error(clips, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = CliRunner().invoke(cli, ["batch", str(clips[1][0]), "-o", str(out)])
    finally:
        out.chmod(0o755)
    assert result.exit_code != 0 and "cannot write to the output folder" in str(result.exception)


def test_output_folder_that_cannot_be_made_is_a_one_line_error(clips, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = CliRunner().invoke(cli, ["batch", str(clips[1][0]), "-o", str(tmp_path / "a-file" / "out")])
    assert result.exit_code != 0 and "cannot create the output folder" in str(result.exception)
