"""Streaming decode: ``Frame`` objects with their exact pts, one at a time.

Only the frames being handed out live in memory. The last demuxed packet of the video stream
has ``dts None``; it is decoded like any other because it flushes the frames the decoder held
back for B-frame reordering (skipping it loses the last frames).

Frames are converted to RGB with the source's own matrix (BT.709, BT.601, BT.2020) and range,
so the writer, which converts back with the same matrix, round-trips colours.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from iconface_video.errors import InputError
from iconface_video.io.probe import _reason, main_video_stream, open_input, sorted_pts
from iconface_video.types import Frame

# swscale's matrix constants (SWS_CS_*) for FFmpeg's AVColorSpace values; anything untagged
# or unknown is BT.601, which is what FFmpeg itself assumes.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


# Exact rounding and full-resolution chroma for every YUV<->RGB conversion: swscale's fast
# default darkens a decode -> encode round trip by about one level each time (measured mean
# -1.2 on 8-bit); this costs ~8 ms per 720p frame, small beside encoding.
SWS_INTERPOLATION = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND


def sws_matrix(colorspace: int | None) -> int:
    """The swscale matrix constant for an AVColorSpace value (BT.601 when unknown)."""
    return _SWS_MATRIX.get(int(colorspace or 2), 5)


def sws_range(color_range: int | None) -> int:
    """AVColorRange for swscale: full (2) stays full, everything else is limited (1)."""
    return 2 if color_range == 2 else 1


def read_frames(path: str | os.PathLike, start: int | None = None, end: int | None = None) -> Iterator[Frame]:
    """Yield frames ``start`` .. ``end - 1`` (presentation order, 0-based) of the main video stream.

    Each ``Frame.image`` is ``uint8[H, W, 3]`` RGB in stored orientation (container rotation is
    *not* applied). ``start`` > 0 seeks to the keyframe before it (via a demux-only timestamp
    pass) and decodes forward, so a range costs about its own length, not the file's.
    """
    path = Path(path)
    start = max(0, start or 0)
    if end is not None and end <= start:
        return
    if start > 0:
        frames = _read(path, start, end, seek=True)
        try:
            first = next(frames)
        except StopIteration:
            return
        if first.index == start:
            yield first
            yield from frames
            return
        frames.close()  # the seek overshot (a broken index): decode from the start instead
    yield from _read(path, start, end, seek=False)


def _read(path: Path, start: int, end: int | None, seek: bool) -> Iterator[Frame]:
    container = open_input(path)
    try:
        stream = main_video_stream(container, path)
        stream.thread_type = "AUTO"
        codec = stream.codec_context
        matrix, colour_range = sws_matrix(codec.colorspace), sws_range(codec.color_range)
        time_base = stream.time_base or Fraction(1, 1)
        index_of = _seek_near(container, stream, path, start) if seek else None
        index = 0
        for frame in _decode(container, stream, path):
            if index_of is not None:
                index = index_of(frame.pts)
            if end is not None and index >= end:
                break
            if index >= start:
                image = frame.to_ndarray(format="rgb24", src_colorspace=matrix, src_color_range=colour_range,
                                         interpolation=SWS_INTERPOLATION)
                yield Frame(index=index, pts=frame.pts, time_base=time_base, image=np.ascontiguousarray(image))
            index += 1
    finally:
        container.close()


def frame_timestamps(path: str | os.PathLike) -> list[int]:
    """Every video frame's pts in presentation order, from a demux pass (no decoding)."""
    path = Path(path)
    container = open_input(path)
    try:
        stream = main_video_stream(container, path)
        packets = (p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        return list(sorted_pts(packets))
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: the file is damaged or truncated ({_reason(error)})") from None
    finally:
        container.close()


def _seek_near(container, stream, path: Path, start: int):
    """Seek to the keyframe at or before frame ``start``; return pts -> frame index.

    Returns None (and rewinds to the beginning) when the file has no usable timestamps, so
    the caller counts frames from 0 instead.
    """
    table = frame_timestamps(path)
    if len(table) != len(set(table)) or start >= len(table):
        container.seek(0, backward=True, any_frame=False, stream=stream)
        return None
    container.seek(table[start], backward=True, any_frame=False, stream=stream)

    def index_of(pts: int | None) -> int:
        # Frames before the keyframe's own GOP can surface after a seek; their index is exact too.
        if pts is None:
            raise InputError(f"{path}: a frame without a timestamp after seeking; read from the start")
        return bisect.bisect_left(table, pts)

    return index_of


def _decode(container, stream, path: Path) -> Iterator[av.VideoFrame]:
    """All frames of ``stream``, flush packet included; damage mid-file becomes an InputError."""
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                yield frame
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: the video stops decoding part-way ({_reason(error)})") from None
