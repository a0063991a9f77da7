"""Interlaced sources: detect them, and deinterlace with FFmpeg's yadif before restoration.

A restorer fed combed frames "restores" the comb teeth, and pasting a progressive face into
an interlaced frame tears on every field. Archival TV material is often interlaced, so it is
deinterlaced (one output frame per input frame: frame count and timing are unchanged) rather
than refused.

yadif looks one frame back and one ahead. It restarts at every encoder segment, so a resumed
render deinterlaces each segment exactly as an uninterrupted render did.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from iconface_video.io.probe import main_video_stream, open_input
from iconface_video.types import Frame


@dataclass(frozen=True)
class FieldInfo:
    """Whether decoded frames are flagged interlaced, and which field comes first."""

    interlaced: bool
    top_field_first: bool = True


def detect_interlace(path: str | os.PathLike, frames: int = 12) -> FieldInfo:
    """Field flags of the first ``frames`` decoded frames, and the stream's field order.

    Interlaced when most of the sampled frames say so; an untagged source counts as progressive.
    """
    container = open_input(path)
    try:
        stream = main_video_stream(container, path)
        flags = []
        for frame in container.decode(stream):
            flags.append(bool(frame.interlaced_frame))
            if len(flags) >= frames:
                break
        order = stream.codec_context.field_order
    finally:
        container.close()
    if not flags or sum(flags) * 2 <= len(flags):
        return FieldInfo(False)
    # AVFieldOrder: 3 = AV_FIELD_BB and 5 = AV_FIELD_BT put the bottom field first; unknown
    # (0) is taken as top first, the more common order (and yadif's own guess for most sources).
    return FieldInfo(True, top_field_first=order not in (3, 5, "bb", "bt"))


def _graph(width: int, height: int, top_field_first: bool) -> av.filter.Graph:
    graph = av.filter.Graph()
    source = graph.add_buffer(width=width, height=height, format="rgb24", time_base="1/1000")
    chain = [
        graph.add("format", "gbrp"),  # yadif works on planar formats
        graph.add("yadif", f"mode=send_frame:parity={'tff' if top_field_first else 'bff'}:deint=all"),
        graph.add("format", "rgb24"),
        graph.add("buffersink"),
    ]
    previous = source
    for node in chain:
        previous.link_to(node)
        previous = node
    graph.configure()
    return graph


def _drain(graph: av.filter.Graph) -> Iterator[np.ndarray]:
    while True:
        try:
            yield graph.pull().to_ndarray(format="rgb24")
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def deinterlace(frames: Iterable[Frame], fields: FieldInfo, segment_starts: Iterable[int]) -> Iterator[Frame]:
    """``frames`` deinterlaced one for one (same index, pts and size), yadif restarted per segment."""
    starts = frozenset(segment_starts)
    graph, held = None, []
    for frame in frames:
        if graph is not None and frame.index in starts:
            graph.push(None)
            yield from _release(held, _drain(graph))
            graph, held = None, []
        if graph is None:
            height, width = frame.image.shape[:2]
            graph = _graph(width, height, fields.top_field_first)
        video = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        video.pts = len(held)
        graph.push(video)
        held.append(frame)
        # yadif holds one frame back; hand out what it has released so far.
        released = list(_drain(graph))
        yield from _release(held[: len(released)], iter(released))
        held = held[len(released):]
    if graph is not None:
        graph.push(None)
        yield from _release(held, _drain(graph))


def _release(frames: list[Frame], images: Iterator[np.ndarray]) -> Iterator[Frame]:
    for frame, image in zip(frames, images, strict=True):
        yield Frame(index=frame.index, pts=frame.pts, time_base=frame.time_base, image=np.ascontiguousarray(image))
