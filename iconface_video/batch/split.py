"""Split one long video at shot boundaries into frame ranges restored by independent tasks.

The render (``iconface_video.render.video``) already cuts its encode into segments that start
at every shot start, where all its temporal state restarts. A split run therefore:

1. analyses the whole file once (``analyze``: the main command's analysis, into the same file
   beside the output), and decides the render's segments and work folder from it;
2. hands groups of consecutive segments to different workers or Ray tasks (``render_segments``:
   each builds the render's frame transform against that analysis file and encodes its ranges
   into the shared work folder through ``job.encode_segments``, the loop every render uses);
3. joins them with ``finish`` (the driver, when the last task is in).

Each segment is the same frames restored and encoded with the same settings as in a single
run, so the joined file equals the main command's output on the same file bit for bit (given a
reproducible encoder setting, e.g. x264 ``ultrafast``). Tasks hold at least ``--min-task-frames``
frames (``schedule.group_segments``), so a fast-cut trailer does not become hundreds of tiny
tasks. Unlike the main command, a split run writes no render report (HTML page, ``render``
section of the analysis file): no single process sees every frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from iconface_video.batch.items import JobSpec
from iconface_video.errors import UserError
from iconface_video.io.probe import probe
from iconface_video.io.transcode import SegmentPlan, make_plan
from iconface_video.job import concealed_warning, encode_segments
from iconface_video.pipeline import analysis_path_for, analyze_for_render
from iconface_video.progress import Progress
from iconface_video.render.options import RenderOptions
from iconface_video.render.prepare import prepare_render
from iconface_video.render.transform import frame_process

if TYPE_CHECKING:
    from iconface_video.core.restorer import Restorer
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder
    from iconface_video.render.guard import EmbedFn


@dataclass(frozen=True)
class ShotSplit:
    """What the driver needs to split and join a file: the render's shot-start ``boundaries`` and
    its work-folder key ``process_key`` (from ``analyze``)."""

    boundaries: tuple[int, ...]
    process_key: str


def render_options(job: JobSpec) -> RenderOptions:
    """The ``RenderOptions`` every batch item renders with: the job's, replacing the output
    (the batch's own: scheduling refused outputs it did not make)."""
    return replace(job.options, overwrite=True)


def analyze(input_path: str, output_path: str, job: JobSpec, restorer: Restorer, progress: Progress | None = None, *,
            detector: Detector | None = None, embedder: Embedder | None = None) -> ShotSplit:
    """Analyse ``input_path`` as the main command does, then decide the render's segments.

    ``restorer`` is the worker's loaded one (its weights name the work folder); ``detector`` and
    ``embedder`` the worker's loaded analysis models (None: loaded for this file). Stages
    "analyze" (the analysis's own progress).
    """
    info = probe(input_path)  # a bad input fails here, in one line, before the analysis
    analyze_for_render(input_path, analysis_path_for(output_path), job.options, job.analyze, info, progress,
                       detector=detector, embedder=embedder)
    prepared = prepare_render(analysis_path_for(output_path), input_path, output_path, render_options(job),
                              restorer=restorer)
    return ShotSplit(prepared.settings.boundaries, prepared.settings.process_key)


def segment_plan(input_path: str | os.PathLike, output_path: str | os.PathLike, job: JobSpec,
                 shots: ShotSplit) -> SegmentPlan:
    """The segment plan the render makes for this file (same work folder, same ranges)."""
    return make_plan(input_path, output_path, job.options.encode_settings(), None, shots.boundaries, shots.process_key)


def render_segments(input_path: str, output_path: str, job: JobSpec, shots: ShotSplit, indices: tuple[int, ...],
                    restorer: Restorer, progress: Progress | None = None, *, embed: EmbedFn | None = None) -> int:
    """Restore and encode segments ``indices`` of the render (skipping finished ones) against the
    file's analysis; returns the frames encoded. Reports one "encode" stage over this task's frames.
    ``embed``: the identity guard's embedder, already loaded (None: loaded for this task).
    """
    options = render_options(job)
    prepared = prepare_render(analysis_path_for(output_path), input_path, output_path, options, restorer=restorer)
    if prepared.settings.process_key != shots.process_key:
        raise UserError(f"{analysis_path_for(output_path)}: changed since this file was split; run the batch again")
    plan = segment_plan(input_path, output_path, job, shots)
    done = plan.done()
    todo = [i for i in indices if not done[i]]
    total = sum(plan.ranges[i][1] - plan.ranges[i][0] for i in todo)
    _, _, process = frame_process(prepared, options, embed)
    progress = progress or Progress.silent()
    concealed: list[int] = []
    with progress.stage("encode", total=total) as bar:
        # As the main command: damage outside --start/--end repeats a frame instead of failing the task.
        encode_segments(plan, todo, process, bar.update, changed_range=prepared.settings.changed_range,
                        on_conceal=concealed.append)
    if concealed:
        progress.event("warning", stage="encode", message=concealed_warning(concealed))
    return total
