"""``render_video`` end to end on a tiny clip: every user control changes the output as it says.

The clip is synthetic (gradients + grain, 16 frames, a cut at frame 8) and the analysis is
built in the test: "Anna" (identity 0, one harvested reference) in shot 0, identity 1 in shot 1,
and a face too small to restore. The restorer is a small random core (``Restorer(model,
config)``) or the identity "restorer"; masks are a soft ellipse (``ellipse_mask``).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from render_fixtures import (
    IdentityRestorer,
    ellipse_mask,
    make_analysis,
    textured_frames,
    tiny_restorer,
    write_clip,
)

from iconface_video.analysis.schema import save_analysis
from iconface_video.errors import InputError, UserError
from iconface_video.io.encoding import EncodeSettings
from iconface_video.io.reader import read_frames
from iconface_video.job import JobSettings, run_job
from iconface_video.render.blend import is_greyscale
from iconface_video.render.options import RenderOptions
from iconface_video.render.video import render_video

N, CUT = 16, 8
# Multithreaded x264 is not deterministic here (the same frames encoded twice decode to
# different pictures at crf 18), so renders are compared through a lossless encode, whose
# decoded pictures are exact whatever the encoder decided.
LOSSLESS = {"crf": 0, "preset": "ultrafast"}
# The random core draws no face, so the identity guard would leave many faces as they were and
# hide what each option does; the guard has its own tests (test_render_guard.py).
NO_GUARD = {"identity_guard": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    clip = write_clip(tmp / "clip.mp4", textured_frames(N))
    analysis = make_analysis(clip, tmp, n=N, cut=CUT)
    restorer = tiny_restorer()
    # Renders start a segment at every shot start; the plain re-encode does the same.
    plain = run_job(clip, tmp / "plain.mp4", JobSettings(encode=EncodeSettings(**LOSSLESS), boundaries=(CUT,))).output_path
    base = _render(tmp, clip, analysis, restorer, "base")
    return {"tmp": tmp, "clip": clip, "analysis": analysis, "restorer": restorer, "plain": _frames(plain),
            "base": _frames(base)}


def _render(tmp, clip, analysis, restorer, name, mask=ellipse_mask, **options) -> Path:
    out = tmp / f"{name}.mp4"
    render_video(analysis, clip, out, RenderOptions(html=False, **{**LOSSLESS, **NO_GUARD, **options}), restorer=restorer,
                 mask=mask)
    return out


def _frames(path) -> list[np.ndarray]:
    return [f.image for f in read_frames(path)]


def _same(a, b) -> list[bool]:
    return [np.array_equal(x, y) for x, y in zip(a, b, strict=True)]


def _run(setup, name, restorer=None, **options):
    return _frames(_render(setup["tmp"], setup["clip"], setup["analysis"], restorer or setup["restorer"], name, **options))


def test_identity_restorer_gives_the_plain_reencode_and_keeps_timing_and_audio(setup):
    out = _render(setup["tmp"], setup["clip"], setup["analysis"], IdentityRestorer(), "identity")
    assert all(_same(_frames(out), setup["plain"]))
    src_pts = [f.pts for f in read_frames(setup["clip"])]
    assert [f.pts for f in read_frames(out)] == src_pts
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
    # A real (random) core changes every frame that has a face.
    assert not any(_same(setup["base"], setup["plain"]))


def test_strength(setup):
    zero = _run(setup, "s0", strength=0.0)
    half = _run(setup, "s05", strength=0.5)
    assert all(_same(zero, setup["plain"]))
    assert not any(_same(half, setup["base"]))
    d_half = sum(np.abs(h.astype(int) - p).sum() for h, p in zip(half, setup["plain"]))
    d_full = sum(np.abs(b.astype(int) - p).sum() for b, p in zip(setup["base"], setup["plain"]))
    assert 0 < d_half < d_full


def test_no_refs_changes_only_the_person_with_references(setup):
    no_refs = _run(setup, "norefs", no_refs=True)
    same = _same(no_refs, setup["base"])
    assert not any(same[:CUT]), "Anna has a reference: without it her frames change"
    assert all(same[CUT:]), "identity 1 has no reference: nothing changes"


def test_refs_from_a_photo_folder_join_the_analysis(setup, media_dir, tmp_path):
    """``render --refs``: the photos become references in the analysis file (the analysis resolves
    photos, never the render), and the render then restores Anna, and only her, differently."""
    from iconface_video.analysis.photos import add_photo_references
    from iconface_video.analysis.settings import AnalyzeSettings

    source = media_dir / "src/ageitgey__face_recognition/examples/obama-480p.jpg"
    if not source.is_file():
        pytest.skip("reference photo missing from the shared media")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "obama.jpg").write_bytes(source.read_bytes())
    analysis_path = tmp_path / "clip.iconface.json"
    save_analysis(setup["analysis"], analysis_path)  # the file rounds landmarks: compare renders of files
    before = _frames(_render(setup["tmp"], setup["clip"], analysis_path, setup["restorer"], "no-photo"))
    with pytest.raises(InputError, match="no identity named"):
        add_photo_references(analysis_path, (("Nobody", photos),), AnalyzeSettings())
    analysis = add_photo_references(analysis_path, (("anna", photos),), AnalyzeSettings())
    anna = [r for r in analysis.references_for(0)]
    assert [r.reference.source for r in anna if r.reference.frame_index < 0] == [str(photos / "obama.jpg")]
    assert all(r.crop_path.is_file() for r in anna)
    out = _render(setup["tmp"], setup["clip"], analysis_path, setup["restorer"], "photo")
    same = _same(_frames(out), before)
    assert not any(same[:CUT]) and all(same[CUT:])


def test_identities_selects_people(setup):
    anna = _run(setup, "anna", identities=("anna",))
    assert all(_same(anna[:CUT], setup["base"][:CUT])) and all(_same(anna[CUT:], setup["plain"][CUT:]))
    other = _run(setup, "other", identities=("1",))
    assert all(_same(other[:CUT], setup["plain"][:CUT])) and all(_same(other[CUT:], setup["base"][CUT:]))
    with pytest.raises(UserError, match="no identity 'Bob'"):
        _run(setup, "bob", identities=("Bob",))


def test_start_end_by_frame_and_time(setup):
    ranged = _run(setup, "range", start="4f", end="11f")
    same_plain = _same(ranged, setup["plain"])
    assert all(same_plain[:4]) and all(same_plain[11:]) and not any(same_plain[4:11])
    by_time = _run(setup, "range_t", start="0.16", end="0.44")  # 25 fps: frames 4 .. 10
    assert all(_same(by_time, ranged))
    with pytest.raises(UserError, match="--end"):
        _run(setup, "range_bad", start="10f", end="5f")


def test_codec_crf_preset_reach_the_encoder(setup):
    tmp = setup["tmp"]
    low = _render(tmp, setup["clip"], setup["analysis"], setup["restorer"], "crf40", crf=40)
    hevc = _render(tmp, setup["clip"], setup["analysis"], setup["restorer"], "hevc", codec="libx265")
    assert low.stat().st_size < (tmp / "base.mp4").stat().st_size
    assert not any(_same(_frames(low), setup["base"]))
    with av.open(str(hevc)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"


def test_device_batch_size_and_precision(setup):
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            _run(setup, "cuda", device="cuda")
    seen = []
    restorer = setup["restorer"]

    class Counting:
        crop_size, template, ref_size = restorer.crop_size, restorer.template, restorer.ref_size
        min_side, max_side, stride = restorer.min_side, restorer.max_side, restorer.stride
        config = restorer.config

        def restore(self, lq, *args, **kwargs):
            seen.append(len(lq))
            return restorer.restore(lq, *args, **kwargs)

    one = _run(setup, "bs1", restorer=Counting(), batch_size=1)
    assert max(seen) == 1 and len(seen) == 16
    seen.clear()
    four = _run(setup, "bs4", restorer=Counting(), batch_size=4)
    assert max(seen) == 4 and len(seen) < 16
    # The batch size changes memory and speed, not the picture: the core is batch-invariant up
    # to float rounding (~1e-6), which may flip a rare pixel by a level (two after 4:2:0).
    for frames in (one, four):
        diff = np.stack([np.abs(a.astype(int) - b) for a, b in zip(frames, setup["base"])])
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3
    bf16 = _run(setup, "bf16", restorer=type(restorer)(restorer.model, restorer.config, precision="bf16",
                                                       trained_sides=restorer.trained_sides))
    assert not all(_same(bf16, setup["base"]))


def test_temporal_changes_the_output(setup):
    off = _run(setup, "t0", temporal=0.0)
    strong = _run(setup, "t1", temporal=1.0)
    assert not all(_same(off, setup["base"])) and not all(_same(strong, off))


def test_preview_is_side_by_side(setup):
    out = setup["tmp"] / "clip.preview.mp4"
    render_video(setup["analysis"], setup["clip"], None, RenderOptions(preview=True, html=False, **LOSSLESS, **NO_GUARD),
                 restorer=setup["restorer"], mask=ellipse_mask)
    frames = _frames(out)
    assert len(frames) == N and frames[0].shape == (120, 320, 3)
    left = np.abs(frames[5][:, :160].astype(int) - setup["plain"][5]).mean()
    right = np.abs(frames[5][:, 160:].astype(int) - setup["base"][5]).mean()
    assert left < 2 and right < 2


def test_dry_run_writes_nothing_and_reports_the_plan(setup, tmp_path):
    analysis_path = tmp_path / "clip.iconface.json"
    save_analysis(setup["analysis"], analysis_path)
    before = analysis_path.read_bytes()
    out = tmp_path / "dry.mp4"
    report = render_video(analysis_path, setup["clip"], out, RenderOptions(dry_run=True, **LOSSLESS), restorer=setup["restorer"],
                          mask=ellipse_mask)
    assert not out.exists() and analysis_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anna-ref.png", "clip.iconface.json"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["clip.iconface.json"]
    assert report.dry_run and report.faces_restored == 2 * CUT
    assert report.faces_skipped_small == CUT and report.tracks_with_small_faces == 1
    assert "would restore 16 faces" in report.summary()


def test_report_section_and_html(setup, tmp_path):
    analysis_path = tmp_path / "clip.iconface.json"
    save_analysis(setup["analysis"], analysis_path)
    out = tmp_path / "out.mp4"
    report = render_video(analysis_path, setup["clip"], out, RenderOptions(**LOSSLESS), restorer=setup["restorer"],
                          mask=ellipse_mask)
    import json

    data = json.loads(analysis_path.read_text())
    assert data["render"]["faces_restored"] == 16 and data["render"]["output"] == str(out)
    from iconface_video.analysis.schema import load_analysis

    load_analysis(analysis_path)  # still a valid analysis file
    page = Path(report.html).read_text()
    assert page.count("data:image/png;base64") == 5  # before + after for both people, Anna's contact sheet
    assert report.references == {"Anna": ["frame 3"]}
    for stage in ("decode", "align", "restore", "blend", "encode"):
        assert report.timings[stage] >= 0


def test_black_and_white_stays_black_and_white(tmp_path):
    frames = textured_frames(N, grey=True)
    clip = write_clip(tmp_path / "grey.mp4", frames)
    analysis = make_analysis(clip, tmp_path, n=N, cut=CUT, with_reference=False)
    out = tmp_path / "grey.out.mp4"
    report = render_video(analysis, clip, out, RenderOptions(html=False, **LOSSLESS, **NO_GUARD), restorer=tiny_restorer(), mask=ellipse_mask)
    decoded = _frames(out)
    assert all(is_greyscale(f, tolerance=1, fraction=0.0) for f in decoded)
    assert not all(_same(decoded, _frames(clip)))
    assert report.grey_faces == 2 * CUT


def test_interlaced_source_is_deinterlaced_or_refused(tmp_path):
    frames = textured_frames(N)
    clip = tmp_path / "interlaced.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": "interlaced=1:tff=1", "crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")))
        out.mux(stream.encode(None))
    analysis = make_analysis(clip, tmp_path, n=N, cut=CUT, with_reference=False)
    with pytest.raises(InputError, match="interlaced"):
        render_video(analysis, clip, tmp_path / "x.mp4", RenderOptions(deinterlace="refuse"),
                     restorer=IdentityRestorer(), mask=ellipse_mask)
    report = render_video(analysis, clip, tmp_path / "d.mp4", RenderOptions(html=False), restorer=IdentityRestorer(),
                          mask=ellipse_mask)
    assert report.interlaced
    assert len(_frames(tmp_path / "d.mp4")) == N


def test_everything_outside_the_faces_is_untouched(setup):
    from iconface_video.render.blend import crop_box
    from iconface_video.render.plan import plan_faces
    from iconface_video.render.temporal import TemporalSettings

    restorer = setup["restorer"]
    plan = plan_faces(setup["analysis"].tracks, crop_size=restorer.crop_size, template_name=restorer.template,
                      temporal=TemporalSettings.from_strength(0.5), sides=(restorer.min_side, restorer.max_side),
                      side_step=restorer.stride)
    for index, (out, plain) in enumerate(zip(setup["base"], setup["plain"])):
        outside = np.ones(out.shape[:2], bool)
        for job in plan.jobs.get(index, ()):
            x0, y0, x1, y1 = crop_box(job.M, job.side, *out.shape[:2])
            # 4:2:0 chroma is shared by 2x2 blocks: allow one block of spill around each box.
            outside[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False
        assert outside.mean() > 0.3
        assert np.array_equal(out[outside], plain[outside]), f"frame {index}"
