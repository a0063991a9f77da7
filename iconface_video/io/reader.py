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
from collections.abc import Callable, Iterator
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


def read_frames(path: str | os.PathLike, start: int | None = None, end: int | None = None, *,
                conceal_outside: tuple[int, int] | None = None,
                on_conceal: Callable[[int], None] | None = None) -> Iterator[Frame]:
    """Yield frames ``start`` .. ``end - 1`` (presentation order, 0-based) of the main video stream.

    Each ``Frame.image`` is ``uint8[H, W, 3]`` RGB in stored orientation (container rotation is
    *not* applied). ``start`` > 0 seeks to the keyframe before it (via a demux-only timestamp
    pass) and decodes forward, so a range costs about its own length, not the file's.

    A frame that cannot be decoded (damage in the file) stops the read with a one-line
    ``InputError`` naming the frame, unless it lies outside ``conceal_outside`` (the ``[a, b)``
    range a job changes): there the frame before it is repeated, with the lost frame's own
    timestamp, and ``on_conceal(index)`` is called, so damage the job does not touch does not
    stop it.
    """
    path = Path(path)
    start = max(0, start or 0)
    if end is not None and end <= start:
        return
    if start > 0:
        frames = _read(path, start, end, True, conceal_outside, on_conceal)
        try:
            first = next(frames)
        except StopIteration:
            return
        if first.index == start:
            yield first
            yield from frames
            return
        frames.close()  # the seek overshot (a broken index): decode from the start instead
    yield from _read(path, start, end, False, conceal_outside, on_conceal)


def _read(path: Path, start: int, end: int | None, seek: bool, conceal_outside: tuple[int, int] | None,
          on_conceal: Callable[[int], None] | None) -> Iterator[Frame]:
    container = open_input(path)
    try:
        stream = main_video_stream(container, path)
        stream.thread_type = "AUTO"
        codec = stream.codec_context
        matrix, colour_range = sws_matrix(codec.colorspace), sws_range(codec.color_range)
        time_base = stream.time_base or Fraction(1, 1)
        index_of = _seek_near(container, stream, path, start) if seek else None
        index = 0  # the next frame expected
        table: list[int] | None = None  # every frame's pts, loaded at the first damage
        previous: Frame | None = None

        def lost(first: int, stop: int, reason: str) -> Iterator[Frame]:
            """Frames ``first .. stop - 1`` could not be decoded: repeat ``previous`` or stop."""
            for missing in range(first, stop if end is None else min(stop, end)):
                inside = conceal_outside is None or conceal_outside[0] <= missing < conceal_outside[1]
                if inside or (previous is None and missing >= start):
                    hint = (f"restore the part before it with --end {missing}f, or repair the file" if missing > 0
                            else "repair the file")
                    raise InputError(f"{path}: the video stops decoding at frame {missing} ({reason}); {hint}")
                if on_conceal is not None:
                    on_conceal(missing)
                if missing >= start:
                    yield Frame(index=missing, pts=table[missing], time_base=time_base, image=previous.image.copy())

        reason = ""
        for item in _decode(container, stream):
            if isinstance(item, av.error.FFmpegError):
                reason = _reason(item)
                if conceal_outside is None:
                    yield from lost(index, index + 1, reason)
                if table is None:
                    table = frame_timestamps(path)
                    index_of = index_of or (lambda pts, t=table: bisect.bisect_left(t, pts))
                continue
            position = index_of(item.pts) if index_of is not None and (item.pts is not None or table is None) else index
            if table is not None:  # after damage: fill the frames lost, skip any shown twice
                if position < index:
                    continue
                yield from lost(index, position, reason)
            index = position
            if end is not None and index >= end:
                break
            if index >= start:
                image = item.to_ndarray(format="rgb24", src_colorspace=matrix, src_color_range=colour_range,
                                        interpolation=SWS_INTERPOLATION)
                previous = Frame(index=index, pts=item.pts, time_base=time_base, image=np.ascontiguousarray(image))
                yield previous
            index += 1
        if table is not None and index < len(table):
            yield from lost(index, len(table), reason)
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


def _seek_near(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path,
               start: int) -> Callable[[int | None], int] | None:
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
            raise InputError(f"{path}: a frame without a timestamp after seeking; restore the whole file (leave out --start)")
        return bisect.bisect_left(table, pts)

    return index_of


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame | av.error.FFmpegError]:
    """All frames of ``stream``, flush packet included; a packet that fails to decode yields its
    error instead (the decoder goes on with the next packet), a demuxing failure ends the stream
    with its error."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError as error:
                yield error
    except av.error.FFmpegError as error:
        yield error
