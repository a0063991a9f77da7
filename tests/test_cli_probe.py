"""``iconface-video probe``: the human table and ``--json`` carry the facts; bad files give one line."""

from __future__ import annotations

import json

from cli_helpers import run_cli
from clipgen import ClipSpec, make_clip, make_text_as_mp4


def test_table_shows_streams_timing_and_colour(tmp_path, capsys):
    clip = make_clip(tmp_path / "c.mkv", ClipSpec(frames=10, vfr=True, rotation=-90, audio=True, subtitles=True, colour=(1, 1, 1, 1)))
    code, out, err = run_cli(["probe", str(clip)], capsys)
    assert code == 0 and err == ""
    assert "h264 (restored)" in out and "64x48" in out and "rotation -90" in out
    assert "VFR" in out and "10 frames" in out and "bt709/bt709/bt709/tv" in out
    assert "audio" in out and "48000 Hz" in out and "subtitle" in out


def test_json_output_parses(tmp_path, capsys):
    clip = make_clip(tmp_path / "c.mp4", ClipSpec(frames=5, audio=True))
    code, out, _ = run_cli(["probe", "--json", str(clip)], capsys)
    data = json.loads(out)
    video = data["streams"][data["video_index"]]
    assert video["frame_count"] == 5 and video["vfr"] is False and video["avg_fps"] == "25/1"
    assert [s["type"] for s in data["streams"]] == ["video", "audio"]


def test_bad_file_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(["probe", str(make_text_as_mp4(tmp_path / "notes.mp4"))], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("iconface-video: error:") and "Traceback" not in err
