"""Split one long video at shot boundaries into frame ranges restored by independent tasks.

The render (``iconface_video.render.render``) already cuts its encode into segments that start
at every shot start, where all its temporal state restarts. A split run therefore:

1. analyses the whole file once (``analyze``: the main command's analysis, into the same file
   beside the output), and decides the render's segments and work folder from it;
2. hands groups of consecutive segments to different workers or Ray tasks (``render_segments``:
   each builds the render's frame transform against that analysis file and encodes its ranges
   into the shared work folder);
3. joins them with ``finish`` (the driver, when the last task is in).

Each segment is the same frames restored and encoded with the same settings as in a single
run, so the joined file equals the main command's output on the same file bit for bit (given a
reproducible encoder setting, e.g. x264 ``ultrafast``). Groups hold at least ``min_frames``
frames, so a fast-cut trailer does not become hundreds of tiny tasks. Unlike the main command,
a split run writes no render report (HTML page, ``render`` section of the analysis file): no
single process sees every frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from iconface_video.errors import UserError
from iconface_video.io.transcode import SegmentPlan, contiguous_runs, encode_stream, make_plan
from iconface_video.pipeline import analysis_path_for, analyze_for_render
from iconface_video.progress import Progress
from iconface_video.types import Frame


@dataclass(frozen=True)
class SplitPlan:
    """What the driver needs to split and join a file: the render's shot-start ``boundaries`` and
    its work-folder key ``process_key`` (from ``analyze``)."""

    boundaries: tuple[int, ...]
    process_key: str


def render_options(spec: Any) -> Any:
    """The ``RenderOptions`` a split task renders with: as ``pipeline.restore_file`` passes them
    to the render (``--refs`` photos went into the analysis; the batch owns its outputs)."""
    return replace(spec.options, refs=(), overwrite=True)


def analyze(input_path: str, output_path: str, spec: Any, restorer: Any, progress: Progress | None = None) -> SplitPlan:
    """Analyse ``input_path`` as the main command does, then decide the render's segments.

    ``spec`` is the batch's ``JobSpec``; ``restorer`` the worker's loaded one (its weights name
    the work folder). Stages "analyze" (the analysis's own progress).
    """
    from iconface_video.io.probe import probe
    from iconface_video.render.render import prepare_render

    info = probe(input_path)  # a bad input fails here, in one line, before the analysis
    analyze_for_render(input_path, analysis_path_for(output_path), spec.options, spec.analyze, info, progress)
    prepared = prepare_render(analysis_path_for(output_path), input_path, output_path, render_options(spec),
                              restorer=restorer)
    return SplitPlan(prepared.settings.boundaries, prepared.settings.process_key)


def plan_for(input_path: str | os.PathLike, output_path: str | os.PathLike, spec: Any, split: SplitPlan) -> SegmentPlan:
    """The segment plan the render makes for this file (same work folder, same ranges)."""
    return make_plan(input_path, output_path, spec.options.encode_settings(), None, split.boundaries, split.process_key)


def render_segments(input_path: str, output_path: str, spec: Any, split: SplitPlan, indices: tuple[int, ...],
                    restorer: Any, progress: Progress | None = None) -> int:
    """Restore and encode segments ``indices`` of the render (skipping finished ones) against the
    file's analysis; returns the frames encoded. Reports one "encode" stage over this task's frames.
    """
    from iconface_video.io.reader import read_frames
    from iconface_video.render.render import frame_process, prepare_render

    options = render_options(spec)
    prepared = prepare_render(analysis_path_for(output_path), input_path, output_path, options, restorer=restorer)
    if prepared.settings.process_key != split.process_key:
        raise UserError(f"{analysis_path_for(output_path)}: changed since this file was split; run the batch again")
    plan = plan_for(input_path, output_path, spec, split)
    done = plan.done()
    todo = [i for i in indices if not done[i]]
    total = sum(plan.ranges[i][1] - plan.ranges[i][0] for i in todo)
    _, _, process = frame_process(prepared, options)
    with (progress or Progress.silent()).stage("encode", total=total) as bar:
        for run in contiguous_runs(todo):
            start, end = plan.ranges[run[0]][0], plan.ranges[run[-1]][1]
            # One process call per run of whole segments, as run_job makes on a resume.
            for _ in encode_stream(plan, run, _counted(process(read_frames(input_path, start, end)), bar.update)):
                pass
    return total


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


def _counted(frames: Iterator[Frame], update: Callable[[int], None]) -> Iterator[Frame]:
    for frame in frames:
        update(1)
        yield frame
