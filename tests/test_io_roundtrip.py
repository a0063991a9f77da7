"""Reader and writer: a decode -> encode round trip keeps frame count, every pts, copied
packets byte for byte, colour tags, rotation, SAR, metadata; segmented encoding joins cleanly,
splits across processes, and resumes after a kill to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np
import pytest

from clipgen import ClipSpec, frame_image, frame_times, make_clip, stream_packets
from iconface_video.errors import OutputError, UserError
from iconface_video.io.encoding import EncodeSettings
from iconface_video.io.probe import probe
from iconface_video.io.reader import read_frames
from iconface_video.io.transcode import encode_range, finish, make_plan, segment_ranges
from iconface_video.io.writer import rebuilt_dts
from iconface_video.job import JobSettings, run_job

REPO = Path(__file__).resolve().parents[1]
MEDIA = "src/Breakthrough__PySceneDetect/tests/resources"


def fast(segment_frames: int = 500, **kwargs) -> JobSettings:
    return JobSettings(encode=EncodeSettings(preset="ultrafast", segment_frames=segment_frames, **kwargs))


def assert_kept(source: Path, output: Path) -> None:
    """Everything but the picture is the same in ``output`` as in ``source``."""
    a, b = probe(source), probe(output)
    assert b.video.frame_count == a.video.frame_count
    assert frame_times(output) == frame_times(source)
    assert b.video.rotation == a.video.rotation
    for tag in ("color_primaries", "color_trc", "colorspace"):
        assert getattr(b.video, tag) == getattr(a.video, tag), tag
    # untagged range means limited ("tv") for YUV; encoders may leave a limited range untagged
    assert (b.video.color_range or 1) == (a.video.color_range or 1)
    assert (b.video.sar or 1) == (a.video.sar or 1)
    assert b.video.vfr == a.video.vfr
    for kind in ("audio", "subtitle", "data"):
        assert stream_packets(output, kind) == stream_packets(source, kind), kind
    assert chapters(output) == chapters(source)
    for key, value in a.metadata.items():
        if key.lower() not in ("encoder", "major_brand", "minor_version", "compatible_brands"):
            assert b.metadata.get(key) == value, key


def chapters(path: Path) -> list[tuple[Fraction, Fraction, str]]:
    with av.open(str(path)) as container:
        return [(c["start"] * c["time_base"], c["end"] * c["time_base"], c["metadata"].get("title")) for c in container.chapters()]


def test_reader_gives_exact_frames_and_ranges(tmp_path):
    spec = ClipSpec(frames=30, vfr=True, codec="libx264", pix_fmt="yuv444p")
    clip = make_clip(tmp_path / "c.mkv", spec)
    frames = list(read_frames(clip))
    assert [f.index for f in frames] == list(range(30))
    assert [f.time for f in frames] == [float(t) for t in frame_times(clip)]
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    # content survives ultrafast x264 4:4:4 closely: it is the picture we encoded, not another
    error = np.abs(frames[7].image.astype(int) - frame_image(7, 64, 48)).mean()
    assert error < 6
    part = list(read_frames(clip, 11, 17))
    assert [f.index for f in part] == list(range(11, 17))
    for f in part:
        assert np.array_equal(f.image, frames[f.index].image) and f.pts == frames[f.index].pts
    assert list(read_frames(clip, 5, 5)) == []


@pytest.mark.parametrize(
    "name, spec",
    [
        ("vfr_av_subs.mp4", ClipSpec(frames=30, vfr=True, audio=True, subtitles=True, metadata=(("title", "t"),))),
        ("vfr_av_subs.mkv", ClipSpec(frames=30, vfr=True, audio=True, subtitles=True, chapters=True)),
        ("rotated_709.mp4", ClipSpec(frames=20, rotation=90, colour=(1, 1, 1, 1), audio=True)),
        ("sar.mov", ClipSpec(frames=12, sar=Fraction(16, 11))),
        ("data.ts", ClipSpec(frames=20, audio=True, data=True)),
        ("odd_321x239.mp4", ClipSpec(frames=5, width=321, height=239, pix_fmt="yuv444p")),
        ("av1.mp4", ClipSpec(frames=8, codec="libsvtav1", width=64, height=64)),
    ],
)
def test_round_trip_keeps_everything(tmp_path, name, spec):
    source = make_clip(tmp_path / name, spec)
    out = tmp_path / f"out{source.suffix}"
    result = run_job(source, out, fast(segment_frames=7))
    assert result.output_path == out and result.frames == spec.frames and not result.warnings
    assert_kept(source, out)
    assert not list(tmp_path.glob(".*")), "temporary files or work folders left behind"


def test_ten_bit_stays_ten_bit(tmp_path):
    source = make_clip(tmp_path / "ten.mkv", ClipSpec(frames=8, codec="libx265", pix_fmt="yuv420p10le"))
    for codec in ("libx264", "libx265"):
        out = tmp_path / f"{codec}.mkv"
        run_job(source, out, fast(codec=codec))
        assert probe(out).video.pix_fmt == "yuv420p10le" and probe(out).video.bit_depth == 10
        assert_kept(source, out)
    eight = tmp_path / "eight.mkv"
    run_job(source, eight, fast(pix_fmt="yuv420p"))
    assert probe(eight).video.bit_depth == 8


def test_other_codecs(tmp_path):
    with_audio = make_clip(tmp_path / "c.mkv", ClipSpec(frames=10, audio=True))
    silent = make_clip(tmp_path / "s.mkv", ClipSpec(frames=10))
    for source, codec, suffix, names in (
        (with_audio, "libx265", ".mp4", ("hevc",)),
        (silent, "libvpx-vp9", ".webm", ("vp9", "libvpx-vp9")),
        (with_audio, "libsvtav1", ".mkv", ("av1", "libdav1d")),
    ):
        out = tmp_path / f"o{suffix}"
        result = run_job(source, out, JobSettings(encode=EncodeSettings(codec=codec, segment_frames=4)))
        assert probe(out).video.codec in names and not result.warnings
        assert frame_times(out) == frame_times(source)
        # payload and start time of every audio packet; durations are container bookkeeping
        # (Matroska rounds them to 1 ms, MP4 derives them from the next packet)
        assert [p[:2] for p in stream_packets(out, "audio")] == [p[:2] for p in stream_packets(source, "audio")]
    with pytest.raises(OutputError, match="webm file cannot hold libx264"):
        run_job(silent, tmp_path / "x.webm", fast(codec="libx264"))


def test_pictures_survive_the_round_trip(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=6, width=96, height=64, colour=(1, 1, 1, 1)))
    out = tmp_path / "o.mp4"
    run_job(source, out, JobSettings(encode=EncodeSettings(crf=0, preset="ultrafast")))
    for a, b in zip(read_frames(source), read_frames(out)):
        # x264 at crf 0 is lossless in YUV; what differs is 4:2:0 chroma resampling between
        # RGB and YUV (a few levels on this noisy picture), never a brightness drift
        diff = b.image.astype(int) - a.image.astype(int)
        assert np.abs(diff).mean() < 4 and abs(diff.mean()) < 0.25


def test_process_callable_changes_pictures_only(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=9, audio=True))

    def invert(frames):
        for f in frames:
            yield type(f)(f.index, f.pts, f.time_base, 255 - f.image)

    out = tmp_path / "o.mp4"
    run_job(source, out, fast(segment_frames=4), process=invert)
    assert_kept(source, out)
    a, b = next(read_frames(source)), next(read_frames(out))
    assert np.abs((255 - a.image.astype(int)) - b.image).mean() < 6


def test_segment_ranges_respect_boundaries():
    assert segment_ranges(10, 4) == ((0, 4), (4, 8), (8, 10))
    assert segment_ranges(10, 4, [3, 9, 0, 42]) == ((0, 3), (3, 7), (7, 9), (9, 10))


def test_rebuilt_dts_is_monotonic_and_never_after_pts():
    # two B-pyramid GOPs (decode order), as x264 emits them, joined
    gop = [0, 4, 2, 1, 3]
    pts = gop + [p + 5 for p in gop]
    dts = list(rebuilt_dts(pts, reorder=2, first_pts=0, step=1))
    assert all(b > a for a, b in zip(dts, dts[1:]))
    assert all(d <= p for d, p in zip(dts, pts))


def _encode_one(args):
    plan, i = args
    return str(encode_range(plan, i))


def test_segments_from_separate_processes_join_glitch_free(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=40, vfr=True, audio=True, subtitles=True))
    out = tmp_path / "joined.mp4"
    # default encoder settings: the bytes must not depend on which process encoded a segment
    plan = make_plan(source, out, EncodeSettings(), boundaries=[9, 23, 31])
    assert len(plan.ranges) == 4
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        list(pool.map(_encode_one, [(plan, i) for i in reversed(range(len(plan.ranges)))]))
    assert plan.pending() == []
    finish(plan)
    assert not plan.work_dir.exists()
    assert_kept(source, out)
    # the same job in one process makes the same bytes
    single = tmp_path / "single.mp4"
    run_job(source, single, JobSettings(encode=EncodeSettings(), boundaries=(9, 23, 31)))
    assert single.read_bytes() == out.read_bytes()


def test_changed_settings_never_reuse_segments(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=10))
    a = make_plan(source, tmp_path / "o.mp4", EncodeSettings(crf=18))
    b = make_plan(source, tmp_path / "o.mp4", EncodeSettings(crf=20))
    c = make_plan(source, tmp_path / "o.mp4", EncodeSettings(crf=18))
    assert a.work_dir != b.work_dir and a.work_dir == c.work_dir
    assert a.work_dir.parent == tmp_path


SLOW_JOB = """
import sys, time
from iconface_video.io.encoding import EncodeSettings
from iconface_video.job import JobSettings, run_job
from iconface_video.progress import Progress

def slow(frames):
    for f in frames:
        time.sleep(0.03)
        yield f

run_job(sys.argv[1], sys.argv[2], JobSettings(encode=EncodeSettings(segment_frames=8), overwrite=True,
        process_key="slow-identity"), process=slow, progress=Progress.create(json_lines=True))
"""


def test_killed_run_resumes_to_identical_bytes(tmp_path):
    # 96 frames at >= 30 ms each: the kill (after ~20-35 frames) lands well before the end
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=96, audio=True))
    reference, out = tmp_path / "reference.mp4", tmp_path / "out.mp4"
    subprocess.run([sys.executable, "-c", SLOW_JOB, source, reference], check=True, capture_output=True)

    out.write_bytes(b"an older output the user still has")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_JOB, source, out], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # kill once two segments are safely done
        event = json.loads(line)
        if event["event"] == "progress" and event["frame"] >= 20:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == b"an older output the user still has"
    work = [p for p in tmp_path.iterdir() if ".iconface-work-" in p.name]
    assert len(work) == 1 and len(list(work[0].glob("segment-*.nut"))) >= 2

    rerun = subprocess.run([sys.executable, "-c", SLOW_JOB, source, out], check=True, capture_output=True, text=True)
    events = [json.loads(line) for line in rerun.stdout.splitlines()]
    resume = [e for e in events if e["event"] == "resume"]
    assert resume and resume[0]["frame"] >= 16
    assert out.read_bytes() == reference.read_bytes()
    assert not work[0].exists()


def test_output_that_cannot_hold_the_audio_is_refused_before_encoding(tmp_path):
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=4, audio=True, subtitles=True))
    with pytest.raises(OutputError, match="cannot hold the input's aac audio"):
        run_job(source, tmp_path / "o.webm", fast(codec="libvpx-vp9"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_data_stream_the_container_cannot_hold_is_a_warning(tmp_path):
    source = make_clip(tmp_path / "c.ts", ClipSpec(frames=6, audio=True, data=True))
    result = run_job(source, tmp_path / "o.mkv", fast())
    assert len(result.warnings) == 1 and "data" in result.warnings[0] and "left out" in result.warnings[0]
    # Matroska stores AAC without the ADTS headers MPEG-TS carries (its muxer strips them);
    # the audio payload itself is copied unchanged.
    kept = stream_packets(result.output_path, "audio")
    assert [p for p, _, _ in kept] == [adts_payload(p) for p, _, _ in stream_packets(source, "audio")]
    # Matroska's clock ticks in milliseconds
    assert [round(t, 3) for _, t, _ in kept] == [round(t, 3) for _, t, _ in stream_packets(source, "audio")]


def adts_payload(packet: bytes) -> bytes:
    """An AAC frame without its ADTS header (7 bytes, or 9 with a CRC)."""
    assert packet[0] == 0xFF and packet[1] & 0xF0 == 0xF0
    return packet[7 if packet[1] & 1 else 9:]


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        EncodeSettings(codec="mpeg2video")
    with pytest.raises(UserError):
        EncodeSettings(crf=99)
    source = make_clip(tmp_path / "c.mp4", ClipSpec(frames=2))
    with pytest.raises(UserError, match="no preset 'fastest'"):
        run_job(source, tmp_path / "o.mp4", JobSettings(encode=EncodeSettings(preset="fastest")))
    with pytest.raises(UserError, match="cannot encode pixel format"):
        run_job(source, tmp_path / "o.mp4", JobSettings(encode=EncodeSettings(pix_fmt="rgb48le")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


@pytest.mark.media
def test_real_rotated_and_vfr_clips_round_trip(media_dir, tmp_path):
    for name in ("issue-134-rotate.mp4", "goldeneye-vfr-drop3.mp4"):
        source = media_dir / MEDIA / name
        out = tmp_path / f"out-{name}"
        started = time.perf_counter()
        run_job(source, out, fast(segment_frames=100))
        assert time.perf_counter() - started < 60
        assert_kept(source, out)


@pytest.mark.media
def test_real_vfr_range_read_matches_full_decode(media_dir):
    source = media_dir / MEDIA / "goldeneye-vfr-drop3.mp4"
    full = {f.index: f for f in read_frames(source, 0, 104)}
    part = list(read_frames(source, 100, 104))
    assert [f.index for f in part] == [100, 101, 102, 103]
    for f in part:
        assert f.pts == full[f.index].pts and np.array_equal(f.image, full[f.index].image)
