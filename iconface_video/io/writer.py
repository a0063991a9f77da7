"""Encode frames and mux the result so that nothing but the picture changes.

Two halves:

* ``SegmentEncoder`` encodes a run of ``Frame`` objects into a video-only NUT file, keeping
  each frame's exact pts in the source's time base (NUT stores any time base, so nothing is
  rounded). Colour tags, SAR and the source's YUV matrix go into the encoder.
* ``mux_output`` joins segment files with every other stream of the input, copied packet for
  packet, into the final container: rotation, stream and container metadata, dispositions.
  Decode timestamps are rebuilt over the whole joined stream (see ``rebuilt_dts``), so the
  joins stay monotonic even with B-frames and variable frame rates.

Both write to a temporary name in the target folder, renamed at the end (``files.atomic_path``),
so an interrupted run never leaves a half file under the real name. The settings come resolved
(``encoding.Encoding``); which other streams the output can hold is ``streams``' job.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from iconface_video.errors import OutputError
from iconface_video.files import atomic_path, check_output_folder
from iconface_video.io.encoding import Encoding, format_for
from iconface_video.io.probe import VideoInfo, open_input
from iconface_video.io.reader import SWS_INTERPOLATION, sws_matrix, sws_range
from iconface_video.io.streams import stream_like, unfit_streams
from iconface_video.types import Frame


class SegmentEncoder:
    """Encode frames into one video-only NUT file (a segment), atomically.

    Use as a context manager: frames go in with ``write``; leaving the block without an error
    flushes the encoder and renames the file into place; an error leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike, encoding: Encoding, threads: int = 0) -> None:
        self.path = Path(path)
        self.encoding = encoding
        self.threads = threads
        self.frames = 0
        self._exit_stack = contextlib.ExitStack()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def __enter__(self) -> SegmentEncoder:
        with contextlib.ExitStack() as stack:
            check_output_folder(self.path)
            tmp = stack.enter_context(atomic_path(self.path))
            # Muxers shift timestamps to keep dts >= 0 unless told not to; a segment must keep
            # the source's pts exactly, so the shift is switched off.
            self._container = stack.enter_context(
                av.open(str(tmp), mode="w", format="nut", container_options={"avoid_negative_ts": "disabled"})
            )
            self._add_stream()
            self._exit_stack = stack.pop_all()
        return self

    def _add_stream(self) -> None:
        enc = self.encoding
        stream = self._container.add_stream(enc.codec, rate=enc.rate, options=enc.options())
        stream.width, stream.height, stream.pix_fmt = enc.width, enc.height, enc.pix_fmt
        stream.time_base = enc.time_base
        ctx = stream.codec_context
        ctx.time_base = enc.time_base
        ctx.thread_count = self.threads
        ctx.color_primaries, ctx.color_trc = enc.color_primaries, enc.color_trc
        ctx.colorspace, ctx.color_range = enc.colorspace, enc.color_range
        if enc.sar is not None:
            ctx.sample_aspect_ratio = enc.sar
        self._stream = stream

    def write(self, frame: Frame) -> None:
        """Encode one frame; ``frame.image`` must be ``uint8[H, W, 3]`` of the source's size."""
        enc = self.encoding
        image = frame.image
        if image.shape != (enc.height, enc.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {frame.index}: expected uint8[{enc.height}, {enc.width}, 3], got {image.dtype}{list(image.shape)}")
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format=enc.pix_fmt,
            dst_colorspace=sws_matrix(enc.colorspace),
            dst_color_range=sws_range(enc.color_range),
            interpolation=SWS_INTERPOLATION,
        )
        video_frame.pts = frame.pts if frame.pts is not None else self._pts_from_index(frame.index)
        video_frame.time_base = enc.time_base
        video_frame.color_primaries, video_frame.color_trc = enc.color_primaries, enc.color_trc
        video_frame.colorspace, video_frame.color_range = enc.colorspace, enc.color_range
        self._container.mux(self._stream.encode(video_frame))
        self.frames += 1

    def _pts_from_index(self, index: int) -> int:
        """For sources without timestamps (raw streams): the frame's time at the average rate."""
        rate = self.encoding.rate or Fraction(25)
        return round(Fraction(index) / rate / self.encoding.time_base)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: types.TracebackType | None) -> bool | None:
        # Flush the encoder only on success; the stack then closes the file and renames it
        # into place, or removes it when anything failed (the flush included).
        if exc_type is None:
            try:
                self._container.mux(self._stream.encode(None))
            except BaseException:
                if not self._exit_stack.__exit__(*sys.exc_info()):
                    raise
                return None
        return self._exit_stack.__exit__(exc_type, exc, tb)


@dataclass(frozen=True)
class SegmentStats:
    """What the joiner needs to know about one segment file before reading its packets."""

    packets: int
    reorder: int  # the decoder's reorder depth: max over packets of (decode position - presentation rank)
    first_pts: int  # smallest pts in the segment
    min_step: int  # smallest gap between consecutive presentation timestamps (1 if one frame)


def segment_stats(path: str | os.PathLike) -> SegmentStats:
    """Scan one segment's packets (no decoding) for its size and reordering."""
    container = av.open(str(path))
    try:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    finally:
        container.close()
    if not pts:
        raise OutputError(f"{path}: an empty segment; delete the work folder and rerun")
    if any(p is None for p in pts):
        raise OutputError(f"{path}: a segment packet has no timestamp")
    rank = {value: position for position, value in enumerate(sorted(pts))}
    ordered = sorted(pts)
    steps = [b - a for a, b in zip(ordered, ordered[1:]) if b > a]
    return SegmentStats(
        packets=len(pts),
        reorder=max(position - rank[value] for position, value in enumerate(pts)),
        first_pts=ordered[0],
        min_step=min(steps) if steps else 1,
    )


def rebuilt_dts(pts_in_decode_order: Iterable[int], reorder: int, first_pts: int, step: int) -> Iterator[int]:
    """Decode timestamps for a joined stream: the presentation timestamps shifted ``reorder`` frames.

    With reorder depth r, the packet at decode position i never shows before the (i - r)-th
    smallest pts, so dts[i] = that pts is monotonic and never exceeds pts[i]. The first r
    packets get timestamps just before the first frame, as encoders do. Holds at most r + 1
    values in memory.
    """
    heap: list[int] = []
    for i, pts in enumerate(pts_in_decode_order):
        heapq.heappush(heap, pts)
        if i < reorder:
            yield first_pts - (reorder - i) * step
        else:
            yield heapq.heappop(heap)


def mux_output(
    input_path: str | os.PathLike,
    segments: Sequence[str | os.PathLike],
    output_path: str | os.PathLike,
    info: VideoInfo,
    *,
    overwrite: bool = False,
    expected_frames: int | None = None,
) -> list[str]:
    """Join ``segments`` (video) with the input's other streams into ``output_path``, atomically.

    Audio, subtitle and data packets are copied byte for byte with their timestamps; container
    and stream metadata, chapters, dispositions and the display rotation are kept. Returns warnings (one
    line each) for streams the output container cannot hold, which are left out.
    """
    stats = [segment_stats(path) for path in segments]
    total = sum(s.packets for s in stats)
    if expected_frames is not None and total != expected_frames:
        raise OutputError(f"the segments hold {total} frames, expected {expected_frames}; delete the work folder and rerun")
    reorder = max(s.reorder for s in stats)
    unfit = unfit_streams(input_path, output_path, info)
    warnings = [warning for _, warning in unfit]
    left_out = {index for index, _ in unfit}
    source = open_input(input_path)
    first_segment = av.open(str(segments[0]))
    try:
        check_output_folder(output_path)
        with atomic_path(output_path, overwrite=overwrite) as tmp:
            out = av.open(str(tmp), mode="w", format=format_for(output_path))
            try:
                out.metadata.update(_clean_metadata(info.metadata))
                if source.chapters():
                    out.set_chapters(source.chapters())
                mapping = {}
                for stream in source.streams:
                    if stream.index in left_out:
                        continue
                    template = first_segment.streams.video[0] if stream.index == info.video_index else stream
                    try:
                        out_stream = stream_like(out, template)
                    except (ValueError, av.error.FFmpegError) as error:
                        raise OutputError(f"{output_path}: cannot hold the {stream.type} stream {stream.index} ({error}); "
                                          "choose another --codec or output extension") from None
                    out_stream.metadata.update(_clean_metadata(dict(stream.metadata)))
                    out_stream.disposition = stream.disposition
                    if stream.index == info.video_index:
                        out_stream.time_base = stream.time_base
                        if info.video.rotation:
                            out_stream.set_display_rotation(info.video.rotation)
                    mapping[stream.index] = out_stream
                video_out = mapping[info.video_index]
                copied = [s for s in source.streams if s.index != info.video_index and s.index in mapping]
                video_packets = _segment_packets(segments, stats, reorder)
                other_packets = _copied_packets(source, copied)
                for packet, stream_index in heapq.merge(video_packets, other_packets, key=_packet_time):
                    packet.stream = video_out if stream_index == _VIDEO else mapping[stream_index]
                    out.mux(packet)
            finally:
                out.close()
    finally:
        first_segment.close()
        source.close()
    return warnings


# A packet to mux and the input stream it belongs to (``_VIDEO`` for the encoded video).
_Tagged = tuple[av.packet.Packet, int]


def _segment_packets(segments: Sequence[str | os.PathLike], stats: Sequence[SegmentStats], reorder: int) -> Iterator[_Tagged]:
    """(packet, -1) for every video packet of every segment, in order, with rebuilt dts."""
    first_pts, step = stats[0].first_pts, stats[0].min_step

    def packets() -> Iterator[av.packet.Packet]:
        for path in segments:
            container = av.open(str(path))
            try:
                for packet in container.demux(container.streams.video[0]):
                    if packet.size:
                        yield packet
            finally:
                container.close()

    pending: collections.deque[av.packet.Packet] = collections.deque()

    def pts_feed() -> Iterator[int]:
        for packet in packets():
            pending.append(packet)
            yield packet.pts

    for dts in rebuilt_dts(pts_feed(), reorder, first_pts, step):
        packet = pending.popleft()
        packet.dts = dts
        yield packet, _VIDEO


_VIDEO = -1


def _copied_packets(source: av.container.InputContainer, streams: Sequence[av.stream.Stream]) -> Iterator[_Tagged]:
    """(packet, stream index) for every real packet of the copied streams, in file order."""
    if not streams:
        return
    for packet in source.demux(streams):
        if packet.size == 0 or (packet.dts is None and packet.pts is None):
            continue  # the flush packet at the end of each stream
        yield packet, packet.stream.index


def _packet_time(item: _Tagged) -> Fraction:
    packet, _ = item
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base


def _clean_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata to carry over: everything except what the muxer writes for itself."""
    return {k: v for k, v in metadata.items() if k.lower() not in ("encoder", "duration", "major_brand", "minor_version", "compatible_brands")}
