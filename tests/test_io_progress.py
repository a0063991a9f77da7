"""Progress reporting: JSON lines carry the documented fields; the bar goes to stderr only."""

from __future__ import annotations

import io
import json
import time

from iconface_video.progress import Progress


def test_json_lines_have_the_documented_fields():
    out = io.StringIO()
    progress = Progress(json_lines=True, json_out=out)
    with progress.stage("decode", total=4) as stage:
        for _ in range(4):
            time.sleep(0.01)
            stage.update()
    progress.event("done", stage="run", output="x.mp4")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-2]["event"] == "end" and events[-1]["event"] == "done"
    for event in events:
        assert {"event", "stage", "frame", "total", "fps", "eta_s"} <= event.keys()
    end = events[-2]
    assert end["frame"] == 4 and end["total"] == 4 and end["eta_s"] == 0 and 0 < end["fps"] < 400
    assert events[-1]["output"] == "x.mp4"


def test_resumed_frames_do_not_inflate_fps():
    out = io.StringIO()
    stage = Progress(json_lines=True, json_out=out).stage("encode", total=1000, initial=900)
    time.sleep(0.05)
    stage.update(10)
    fps = stage.fps()
    assert fps is not None and fps < 10 / 0.05 * 1.01  # 10 frames in >= 50 ms, not 910
    assert stage.eta_s() > 0


def test_bar_writes_to_its_stream_and_silent_writes_nothing():
    bar_out, json_out = io.StringIO(), io.StringIO()
    with Progress(bar_out=bar_out, json_out=json_out).stage("render", total=3) as stage:
        stage.update(3)
    assert "render" in bar_out.getvalue() and "3/3" in bar_out.getvalue() and json_out.getvalue() == ""
    quiet = io.StringIO()
    with Progress(enabled=False, bar_out=quiet, json_out=quiet).stage("render", total=3) as stage:
        stage.update(3)
    assert quiet.getvalue() == "" and stage.frame == 3
