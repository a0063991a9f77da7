"""An interrupted render (killed, or Ctrl-C) resumes from its last finished segment and gives
exactly the frames and timestamps of a render that never stopped; no half output is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from render_fixtures import (
    ellipse_mask,
    make_analysis,
    textured_frames,
    tiny_restorer,
    write_clip,
)

from iconface_video.analysis.schema import save_analysis
from iconface_video.io.reader import read_frames
from iconface_video.render.options import RenderOptions
from iconface_video.render.video import render_video

N, CUT = 24, 10
# Lossless so decoded pictures are exact whatever multithreaded x264 decides (see test_render_video).
OPTIONS = dict(segment_frames=4, crf=0, preset="ultrafast", batch_size=2, html=False)

CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from iconface_video.render.options import RenderOptions
    from iconface_video.render.video import render_video
    from render_fixtures import ellipse_mask, tiny_restorer

    core = tiny_restorer()

    class Slow:  # the same core, slowed so the kill lands mid-render
        crop_size, template, ref_size, config, model = core.crop_size, core.template, core.ref_size, core.config, core.model
        min_side, max_side, stride = core.min_side, core.max_side, core.stride

        def restore(self, *args, **kwargs):
            time.sleep(0.25)
            return core.restore(*args, **kwargs)

    render_video({analysis!r}, {clip!r}, {out!r}, RenderOptions(**{options!r}), restorer=Slow(), mask=ellipse_mask)
""")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    clip = write_clip(tmp / "clip.mp4", textured_frames(N))
    analysis = make_analysis(clip, tmp, n=N, cut=CUT)
    analysis_path = tmp / "clip.iconface.json"
    save_analysis(analysis, analysis_path)
    torch.set_num_threads(1)
    whole = tmp / "whole.mp4"
    render_video(analysis_path, clip, whole, RenderOptions(**OPTIONS), restorer=tiny_restorer(), mask=ellipse_mask)
    return tmp, clip, analysis_path, whole


def _interrupt(tmp: Path, clip: Path, analysis_path: Path, out: Path, sig: int) -> None:
    script = CHILD.format(tests=str(Path(__file__).parent), analysis=str(analysis_path), clip=str(clip),
                          out=str(out), options=OPTIONS)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            done = list(tmp.glob(f".{out.name}.iconface-work-*/segment-*.nut"))
            if len(done) >= 2 or child.poll() is not None:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"the render ended before it could be interrupted: {child.stderr.read()[-500:]}"
        os.kill(child.pid, sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists(), "an interrupted render must not leave an output"


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["kill", "ctrl-c"])
def test_resumed_render_equals_uninterrupted(job, sig):
    tmp, clip, analysis_path, whole = job
    out = tmp / f"resumed-{int(sig)}.mp4"
    _interrupt(tmp, clip, analysis_path, out, sig)
    finished = list(tmp.glob(f".{out.name}.iconface-work-*/segment-*.nut"))
    assert 2 <= len(finished) < 7  # 6 full segments + the cut: some done, some not
    report = render_video(analysis_path, clip, out, RenderOptions(**OPTIONS), restorer=tiny_restorer(), mask=ellipse_mask)
    assert report.resumed_frames >= 8
    a, b = list(read_frames(whole)), list(read_frames(out))
    assert [f.pts for f in a] == [f.pts for f in b] and len(a) == N
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not list(tmp.glob(f".{out.name}.iconface-work-*"))


def test_segments_are_keyed_to_the_weights_options_and_analysis(job):
    import json

    from iconface_video.analysis.schema import load_analysis
    from iconface_video.render.prepare import _process_key

    tmp, clip, analysis_path, whole = job
    analysis = load_analysis(analysis_path)
    key = _process_key(analysis, analysis_path, RenderOptions(**OPTIONS), tiny_restorer())
    assert key == _process_key(analysis, analysis_path, RenderOptions(**OPTIONS), tiny_restorer())
    assert key != _process_key(analysis, analysis_path, RenderOptions(**OPTIONS), tiny_restorer(seed=5))
    assert key != _process_key(analysis, analysis_path, RenderOptions(**{**OPTIONS, "strength": 0.9}), tiny_restorer())
    # The batch size changes no pixel: a resume may use another one (after running out of memory).
    assert key == _process_key(analysis, analysis_path, RenderOptions(**{**OPTIONS, "batch_size": 7}), tiny_restorer())
    # Each finished render rewrites the file's render section; that must not orphan segments.
    data = json.loads(analysis_path.read_text())
    data["render"] = {"anything": 1}
    analysis_path.write_text(json.dumps(data))
    assert key == _process_key(analysis, analysis_path, RenderOptions(**OPTIONS), tiny_restorer())
