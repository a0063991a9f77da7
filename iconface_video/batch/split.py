"""Split one long video at shot boundaries into frame ranges processed by independent tasks.

The segmented encoder (``iconface_video.io.transcode``) already cuts a job into segments that
start at given boundaries; a split run passes the video's shot starts as those boundaries,
hands groups of consecutive segments to different workers or Ray tasks (``encode_range``), and
joins them with ``finish``. Because each segment is an independent encode of the same frames
with the same settings, the joined file equals a single-process ``run_job`` with the same
boundaries bit for bit, and has the same frames, pts and audio packets as one without.

Cutting at shots costs nothing in quality: face tracks and temporal smoothing never cross a
cut, and an encoder starts a new GOP at a cut anyway. Groups hold at least ``min_frames``
frames, so a fast-cut trailer does not become hundreds of tiny tasks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace

from iconface_video.io.transcode import SegmentPlan, make_plan
from iconface_video.pipeline import JobSettings
from iconface_video.progress import Progress
from iconface_video.types import Frame


def find_shot_starts(path: str | os.PathLike, progress: Progress | None = None) -> tuple[int, ...]:
    """First frame of every shot of ``path`` (0 first), from one streaming decode (stage "shots")."""
    from iconface_video.analysis.shots import ShotDetector
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames

    detector = ShotDetector()
    starts: list[int] = []
    with (progress or Progress.silent()).stage("shots", total=probe(path).frame_count) as bar:
        for frame in read_frames(path):
            starts.extend(b.frame_index for b in detector.push(frame.index, frame.image) if b.transition)
            bar.update(1)
    starts.extend(b.frame_index for b in detector.flush() if b.transition)
    return tuple(starts)


def split_settings(settings: JobSettings, shot_starts: tuple[int, ...]) -> JobSettings:
    """``settings`` with segments starting at every shot start (as well as its own boundaries)."""
    return replace(settings, boundaries=tuple(sorted({*settings.boundaries, *shot_starts})))


def plan_for(input_path: str | os.PathLike, output_path: str | os.PathLike, settings: JobSettings) -> SegmentPlan:
    """The segment plan ``run_job`` would make for these arguments (same work folder, same ranges)."""
    return make_plan(input_path, output_path, settings.encode, None, settings.boundaries, settings.process_key)


def group_segments(ranges: tuple[tuple[int, int], ...], pending: list[int], min_frames: int) -> list[tuple[int, ...]]:
    """Consecutive pending segment indices grouped into tasks of at least ``min_frames`` frames.

    ``ranges`` are the plan's [start, end) frame ranges. A group never spans a finished segment
    (it is reused, not redone); a short remainder joins the group before it when adjacent.
    """
    groups: list[list[int]] = []
    frames = 0
    for i in pending:
        contiguous = bool(groups) and groups[-1][-1] == i - 1
        if contiguous and frames < min_frames:
            groups[-1].append(i)
            frames += ranges[i][1] - ranges[i][0]
        else:
            groups.append([i])
            frames = ranges[i][1] - ranges[i][0]
    if len(groups) > 1 and frames < min_frames and groups[-2][-1] == groups[-1][0] - 1:
        groups[-2].extend(groups.pop())
    return [tuple(g) for g in groups]


def encode_segments(input_path: str, output_path: str, settings: JobSettings, indices: tuple[int, ...],
                    progress: Progress | None = None) -> int:
    """Encode segments ``indices`` of the split plan (skipping finished ones); returns frames encoded.

    Reports one "encode" stage over this task's frames. Restoration will plug in here the same
    way as into ``run_job`` (its ``process``, applied to ``read_frames``' output).
    """
    from iconface_video.io.reader import read_frames
    from iconface_video.io.transcode import encode_frames

    plan = plan_for(input_path, output_path, settings)
    done = plan.done()
    todo = [i for i in indices if not done[i]]
    total = sum(plan.ranges[i][1] - plan.ranges[i][0] for i in todo)
    with (progress or Progress.silent()).stage("encode", total=total) as bar:
        for i in todo:
            start, end = plan.ranges[i]
            encode_frames(plan, i, _counted(read_frames(input_path, start, end), bar.update))
    return total


def _counted(frames: Iterator[Frame], update: Callable[[int], None]) -> Iterator[Frame]:
    for frame in frames:
        update(1)
        yield frame
