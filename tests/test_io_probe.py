"""probe(): what it reports for generated clips with known properties, real clips, and every
kind of bad input (each one clear InputError line)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from clipgen import ClipSpec, make_audio_only, make_clip, make_text_as_mp4, make_truncated, make_zero_frames
from iconface_video.errors import InputError
from iconface_video.io.probe import is_variable_rate, probe, sorted_pts

MEDIA = "src/Breakthrough__PySceneDetect/tests/resources"


def test_probe_reports_what_the_clip_was_made_with(tmp_path):
    spec = ClipSpec(frames=12, width=80, height=48, fps=25, rotation=90, audio=True, subtitles=True,
                    colour=(1, 1, 1, 1), sar=Fraction(4, 3), metadata=(("title", "probe me"),))
    info = probe(make_clip(tmp_path / "c.mp4", spec))
    v = info.video
    assert (v.codec, v.width, v.height, v.pix_fmt, v.bit_depth) == ("h264", 80, 48, "yuv420p", 8)
    assert v.rotation == 90
    assert v.sar == Fraction(4, 3)
    assert v.colour_names() == {"primaries": "bt709", "trc": "bt709", "space": "bt709", "range": "tv"}
    assert v.avg_fps == 25 and v.real_fps == 25 and v.vfr is False
    assert v.frame_count == 12
    assert [s.codec for s in info.audio] == ["aac"] and info.audio[0].channels == 2
    assert [s.codec for s in info.subtitles] == ["mov_text"]
    assert info.metadata["title"] == "probe me"
    assert info.duration == pytest.approx(12 / 25, abs=0.05)


def test_probe_vfr_and_ten_bit(tmp_path):
    vfr = probe(make_clip(tmp_path / "vfr.mkv", ClipSpec(vfr=True)))
    assert vfr.video.vfr is True and vfr.video.frame_count == 24
    deep = probe(make_clip(tmp_path / "ten.mp4", ClipSpec(frames=6, codec="libx265", pix_fmt="yuv420p10le")))
    assert deep.video.bit_depth == 10 and deep.video.pix_fmt == "yuv420p10le" and deep.video.codec == "hevc"


def test_probe_av1_odd_size_and_data_stream(tmp_path):
    av1 = probe(make_clip(tmp_path / "a.mp4", ClipSpec(frames=6, codec="libsvtav1", width=64, height=64)))
    assert av1.video.frame_count == 6 and av1.video.width == 64
    odd = probe(make_clip(tmp_path / "o.mp4", ClipSpec(frames=4, width=321, height=239, pix_fmt="yuv444p")))
    assert (odd.video.width, odd.video.height) == (321, 239)
    ts = probe(make_clip(tmp_path / "d.ts", ClipSpec(frames=6, data=True, audio=True)))
    assert len(ts.data) == 1 and len(ts.audio) == 1


def test_json_is_serialisable_and_names_colours(tmp_path):
    import json

    info = probe(make_clip(tmp_path / "c.mp4", ClipSpec(frames=4, colour=(1, 1, 1, 1))))
    data = json.loads(json.dumps(info.to_json()))
    video = data["streams"][data["video_index"]]
    assert video["colour"]["space"] == "bt709" and video["frame_count"] == 4 and Fraction(video["time_base"]) == Fraction(1, 12800)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: make_text_as_mp4(d / "list.mp4"), "not a readable video"),
        (lambda d: make_zero_frames(d / "zero.mp4"), "zero-frame"),
        (lambda d: make_audio_only(d / "song.m4a"), "no video stream"),
        (lambda d: make_truncated(d / "cut.mkv", make_clip(d / "full.mkv", ClipSpec(frames=40, audio=True))), "truncated"),
        (lambda d: make_truncated(d / "cut.mp4", make_clip(d / "full.mp4", ClipSpec(frames=40))), "truncated"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty"),
        (lambda d: d, "folder"),
    ],
)
def test_bad_inputs_give_one_clear_line(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        probe(path)
    message = str(caught.value)
    assert needle in message and "\n" not in message and str(path) in message


def test_sorted_pts_restores_presentation_order():
    decode_order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]
    assert list(sorted_pts(iter(decode_order), window=4)) == sorted(decode_order)


def test_variable_rate_threshold():
    assert not is_variable_rate(1001, 1001)
    assert not is_variable_rate(41, 42)  # 23.976 fps in a 1 ms time base: rounding, not VFR
    assert is_variable_rate(1001, 2002)


@pytest.mark.media
def test_real_clips(media_dir):
    rotated = probe(media_dir / MEDIA / "issue-134-rotate.mp4").video
    assert rotated.rotation == -90 and rotated.frame_count == 240 and not rotated.vfr
    assert rotated.avg_fps == Fraction(24000, 1001)
    vfr = probe(media_dir / MEDIA / "goldeneye-vfr-drop3.mp4").video
    assert vfr.vfr and vfr.frame_count == 160
    sar = probe(media_dir / MEDIA / "issue-195-aspect-ratio.mp4")
    assert sar.video.sar == Fraction(16, 11) and sar.video.frame_count == 628 and len(sar.audio) == 1
