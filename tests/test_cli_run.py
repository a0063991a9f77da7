"""The main command ``iconface-video VIDEO``: default output name, refusals that protect the
user's files, bad inputs as one line with a non-zero exit, JSON progress, and Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from clipgen import (
    ClipSpec,
    frame_times,
    make_audio_only,
    make_clip,
    make_text_as_mp4,
    make_truncated,
    make_zero_frames,
    stream_packets,
)

from iconface_video.io.probe import probe


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_output_beside_input_with_spaces_and_non_ascii(tmp_path, capsys):
    folder = tmp_path / "my films été"
    folder.mkdir()
    clip = make_clip(folder / "holiday clip 日本.mp4", ClipSpec(frames=12, audio=True, rotation=90))
    before = digest(clip)
    code, out, err = run_cli([clip, "--preset", "ultrafast", "-q"], capsys)
    assert code == 0, err
    restored = folder / "holiday clip 日本.restored.mp4"
    assert restored.is_file() and digest(clip) == before
    assert frame_times(restored) == frame_times(clip)
    assert stream_packets(restored, "audio") == stream_packets(clip, "audio")
    assert probe(restored).video.rotation == 90
    # Beside the output: the analysis file (with the render report), its reference crops, the HTML report.
    report_files = ["holiday clip 日本.restored.iconface.json", "holiday clip 日本.restored.iconface.refs",
                    "holiday clip 日本.restored.report.html"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([clip.name, restored.name, *report_files])


def test_refuses_to_overwrite_input_or_existing_output(tmp_path, capsys):
    clip = make_clip(tmp_path / "a.mp4", ClipSpec(frames=6))
    before = digest(clip)
    code, _, err = run_cli([clip, "-o", clip, "--overwrite"], capsys)
    assert code == 2 and "is the input" in err and digest(clip) == before

    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"keep me")
    code, _, err = run_cli([clip, "-o", existing], capsys)
    assert code == 2 and "already exists" in err and existing.read_bytes() == b"keep me"
    code, _, err = run_cli([clip, "-o", existing, "--overwrite", "-q"], capsys)
    assert code == 0 and probe(existing).video.frame_count == 6


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: make_text_as_mp4(d / "text.mp4"), "not a readable video"),
        (lambda d: make_truncated(d / "cut.mkv", make_clip(d / "full.mkv", ClipSpec(frames=40, audio=True))), "truncated"),
        (lambda d: make_zero_frames(d / "zero.mp4"), "zero-frame"),
        (lambda d: make_audio_only(d / "song.m4a"), "no video stream"),
        (lambda d: d / "does not exist.mp4", "no such file"),
    ],
)
def test_bad_inputs_one_line_nonzero_nothing_lost(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    listing = {p.name: digest(p) for p in tmp_path.iterdir()}
    code, out, err = run_cli([path], capsys)
    assert code != 0 and needle in err
    assert err.count("\n") == 1 and err.startswith("iconface-video: error:") and "Traceback" not in err
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == listing


@pytest.mark.parametrize("output", ["no/such/folder/out.mp4", "file.txt/out.mp4", "/proc/out.mp4"])
def test_unwritable_output_folder(tmp_path, capsys, output):
    clip = make_clip(tmp_path / "a.mp4", ClipSpec(frames=4))
    (tmp_path / "file.txt").write_text("a file, not a folder")
    target = output if output.startswith("/") else tmp_path / output
    code, _, err = run_cli([clip, "-o", target], capsys)
    assert code == 2 and err.count("\n") == 1 and "folder" in err


def test_hard_inputs_work(tmp_path, capsys):
    """Odd size, AV1, rotated, 10-bit: processed, not refused."""
    for name, spec in {
        "odd.mp4": ClipSpec(frames=4, width=321, height=239, pix_fmt="yuv444p"),
        "av1.mkv": ClipSpec(frames=6, codec="libsvtav1", width=64, height=64),
        "ten.mkv": ClipSpec(frames=4, codec="libx265", pix_fmt="yuv420p10le", rotation=180),
    }.items():
        clip = make_clip(tmp_path / name, spec)
        code, _, err = run_cli([clip, "--preset", "ultrafast", "-q"], capsys)
        assert code == 0, err
        out = probe(tmp_path / name.replace(".", ".restored."))
        src = probe(clip)
        assert (out.video.width, out.video.height, out.video.frame_count, out.video.rotation, out.video.bit_depth) == (
            src.video.width, src.video.height, src.video.frame_count, src.video.rotation, src.video.bit_depth)


def test_json_progress_lines(tmp_path, capsys):
    clip = make_clip(tmp_path / "a.mp4", ClipSpec(frames=10))
    code, out, err = run_cli([clip, "--json", "--preset", "ultrafast", "--segment-frames", "4"], capsys)
    assert code == 0 and err == ""
    events = [json.loads(line) for line in out.splitlines()]
    for event in events:
        assert {"event", "stage", "frame", "total", "fps", "eta_s"} <= event.keys()
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert [e for e in events if e["event"] == "end"][0]["frame"] == 10
    assert events[-1]["stage"] == "job" and events[-1]["output"].endswith("a.restored.mp4")
    assert "timings" in events[-1]["report"]


def test_progress_bar_on_stderr(tmp_path, capsys):
    clip = make_clip(tmp_path / "a.mp4", ClipSpec(frames=5))
    code, out, err = run_cli([clip, "--preset", "ultrafast"], capsys)
    assert code == 0 and out == ""
    assert "5/5" in err and "frame/s" in err and "wrote" in err


def test_ctrl_c_keeps_earlier_output(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", ClipSpec(frames=300, width=320, height=240, audio=True))
    output = tmp_path / "out.mp4"
    output.write_bytes(b"yesterday's result")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iconface_video", str(clip), "-o", str(output), "--overwrite", "--json",
         "--preset", "veryslow", "--segment-frames", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.readline()
    assert json.loads(first)["event"] == "start"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().count("\n") == 0 and "interrupted" in err and "Traceback" not in err
    assert output.read_bytes() == b"yesterday's result"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
