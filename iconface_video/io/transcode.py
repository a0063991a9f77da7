"""Segmented, resumable encoding: the video is encoded in frame ranges, each finished atomically.

A job's segments live in a work folder beside the output, named from the output, and a hash
of the input file (path, size, mtime), the resolved encoding, the segment ranges and the
caller's ``process_key`` (which names whatever transforms the frames), so a rerun with changed
settings never reuses old work. A rerun after an interruption skips finished segments; because
each segment is an independent encode of the same frames with the same settings, the joined
result is identical to an uninterrupted run, byte for byte, provided the encoder is repeatable.
With the options ``Encoding.options`` gives, x264, x265, VP9 and SVT-AV1 are, given the same
library builds, the same CPU instruction sets and the same encoder thread count (by default
derived from the CPUs the process may use). x264 needed one change for that: see
``encoding.x264_mbtree_is_deterministic``. Segments encoded on a machine that differs in those
respects are still a valid encode of the same frames at the same settings, but not the same bytes.

The job's encode loop (``job.encode_segments``) decodes each run of consecutive pending
segments once and hands the frames to ``encode_stream``, which cuts them into segment files.
Segments of one file may be encoded by different processes or machines sharing the folder
(batch tasks split at shot starts), each running that loop over its own segments; one caller
then calls ``finish(plan)``, which muxes everything into the output and removes the folder.

Why segments rather than one continuous encode with checkpoints: an encoder's internal state
(look-ahead, rate control, reference frames) cannot be saved and restored, so a continuous
encode cannot resume; closed segments can, and they split across processes for free. The
cost is one keyframe per segment (negligible at the default 500 frames).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from iconface_video import __version__
from iconface_video.errors import OutputError
from iconface_video.io.probe import VideoInfo, probe
from iconface_video.io.reader import read_frames
from iconface_video.io.encoding import EncodeSettings, Encoding, resolve_encoding
from iconface_video.io.writer import SegmentEncoder, mux_output
from iconface_video.types import Frame

FrameProcess = Callable[[Iterator[Frame]], Iterator[Frame]]


@dataclass(frozen=True)
class SegmentPlan:
    """Where a job's segments go and which frames each holds (``ranges`` are [start, end))."""

    input_path: Path
    output_path: Path
    work_dir: Path
    ranges: tuple[tuple[int, int], ...]
    encoding: Encoding
    frame_count: int

    def segment_path(self, i: int) -> Path:
        start, end = self.ranges[i]
        return self.work_dir / f"segment-{i:05d}-{start:09d}-{end:09d}.nut"

    def done(self) -> list[bool]:
        """Which segments are finished (a segment file exists only once complete)."""
        return [self.segment_path(i).is_file() for i in range(len(self.ranges))]

    def pending(self) -> list[int]:
        return [i for i, finished in enumerate(self.done()) if not finished]


def segment_ranges(frame_count: int, segment_frames: int, boundaries: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
    """[start, end) ranges covering ``0..frame_count``.

    Ranges start at every boundary given (e.g. shot starts) and are cut further so none is
    longer than ``segment_frames``.
    """
    starts = sorted({0, *(b for b in (boundaries or ()) if 0 < b < frame_count)})
    ranges = []
    for start, stop in zip(starts, [*starts[1:], frame_count]):
        for s in range(start, stop, segment_frames):
            ranges.append((s, min(s + segment_frames, stop)))
    return tuple(ranges)


def make_plan(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    settings: EncodeSettings,
    info: VideoInfo | None = None,
    boundaries: Sequence[int] | None = None,
    process_key: str = "",
) -> SegmentPlan:
    """The plan for encoding ``input_path`` into ``output_path``; creates nothing on disk."""
    input_path, output_path = Path(input_path), Path(output_path)
    info = info or probe(input_path)
    encoding = resolve_encoding(settings, info, output_path)
    ranges = segment_ranges(info.frame_count, settings.segment_frames, boundaries)
    stat = input_path.stat()
    key = json.dumps(
        {
            "input": str(input_path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "encoding": {k: str(v) for k, v in dataclasses.asdict(encoding).items()},
            # The options the encoder really gets, so segments made before a change in how they
            # are derived from the encoding (e.g. mbtree switched off) are never joined to new ones.
            "options": encoding.options(),
            "ranges": ranges,
            "process": process_key,
            "version": __version__,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    work_dir = output_path.parent / f".{output_path.name}.iconface-work-{digest}"
    return SegmentPlan(input_path, output_path, work_dir, ranges, encoding, info.frame_count)


def prepare(plan: SegmentPlan) -> None:
    """Create the work folder (idempotent; safe when several processes race)."""
    try:
        plan.work_dir.mkdir(parents=False, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{plan.work_dir.parent}: cannot create the work folder ({error.strerror})") from None


def encode_frames(plan: SegmentPlan, i: int, frames: Iterable[Frame]) -> Path:
    """Encode exactly the frames of segment ``i`` (taken from ``frames``) into its file."""
    start, end = plan.ranges[i]
    prepare(plan)
    with SegmentEncoder(plan.segment_path(i), plan.encoding) as encoder:
        for frame in frames:
            if frame.index != start + encoder.frames:
                raise ValueError(f"segment {i}: expected frame {start + encoder.frames}, got {frame.index}")
            encoder.write(frame)
        if encoder.frames != end - start:
            raise ValueError(f"segment {i}: got {encoder.frames} frames, expected {end - start}")
    return plan.segment_path(i)


def encode_range(plan: SegmentPlan, i: int, process: FrameProcess | None = None) -> Path:
    """Decode, process and encode segment ``i`` on its own, from a seek to its first frame."""
    start, end = plan.ranges[i]
    frames = read_frames(plan.input_path, start, end)
    return encode_frames(plan, i, process(frames) if process else frames)


def encode_stream(plan: SegmentPlan, indices: Sequence[int], frames: Iterator[Frame]) -> Iterator[int]:
    """Encode consecutive segments ``indices`` from one frame stream; yield each index when done.

    ``frames`` must start at the first segment's first frame and run through the last one's.
    """
    frames = iter(frames)
    for i in indices:
        start, end = plan.ranges[i]
        encode_frames(plan, i, _take(frames, end - start))
        yield i


def finish(plan: SegmentPlan, *, overwrite: bool = False, info: VideoInfo | None = None) -> list[str]:
    """Mux all segments plus the input's other streams into the output; remove the work folder.

    Returns one-line warnings for streams the output container could not hold.
    """
    missing = plan.pending()
    if missing:
        raise OutputError(f"{plan.output_path}: segments {missing[:5]} are not encoded yet; cannot finish")
    info = info or probe(plan.input_path)
    segments = [plan.segment_path(i) for i in range(len(plan.ranges))]
    warnings = mux_output(plan.input_path, segments, plan.output_path, info,
                          overwrite=overwrite, expected_frames=plan.frame_count)
    shutil.rmtree(plan.work_dir, ignore_errors=True)
    return warnings


def contiguous_runs(indices: Sequence[int]) -> list[list[int]]:
    """Group sorted segment indices into runs of consecutive ones ([1, 2, 5] -> [[1, 2], [5]])."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _take(frames: Iterator[Frame], n: int) -> Iterator[Frame]:
    for _ in range(n):
        try:
            yield next(frames)
        except StopIteration:
            return
