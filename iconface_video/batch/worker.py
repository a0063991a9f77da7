"""Executing one work item, in a local worker process or a Ray task (``execute``), with the models
that worker keeps loaded between items (``WorkerModels``)."""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING

from iconface_video.batch.items import ItemResult, JobSpec, WorkItem
from iconface_video.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from iconface_video.batch.split import ShotSplit
    from iconface_video.core.restorer import Restorer
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder
    from iconface_video.progress import Progress
    from iconface_video.render.guard import EmbedFn


class WorkerModels:
    """The models one worker keeps from item to item, each loaded when an item first needs it:
    the restorer, the analysis's face detector and embedder (on the device the analysis of a
    render with the job's options runs on), and the identity guard's embedder."""

    def __init__(self, job: JobSpec) -> None:
        self._job = job
        self._restorer: Restorer | None = None
        self._faces: tuple[Detector, Embedder] | None = None
        self._guard: EmbedFn | None = None

    def restorer(self) -> Restorer:
        if self._restorer is None:
            from iconface_video.render.options import resolve_device
            from iconface_video.render.prepare import load_restorer

            options = self._job.options
            self._restorer = load_restorer(options, resolve_device(options.device))
        return self._restorer

    def face_models(self) -> tuple[Detector, Embedder]:
        """(detector, embedder), loaded as ``analysis.video.analyze_video`` would load them."""
        if self._faces is None:
            from iconface_video.faces.detect import load_detector
            from iconface_video.faces.embed import load_embedder
            from iconface_video.render.options import resolve_device

            analyze = self._job.analyze
            device = str(resolve_device(self._job.options.device))  # as pipeline.analyze_for_render sets it
            self._faces = (load_detector(analyze.detector, analyze.models_dir, device),
                           load_embedder(analyze.embedder, analyze.models_dir, device))
        return self._faces

    def guard_embed(self, crops: np.ndarray) -> np.ndarray:
        """The identity guard's ``EmbedFn`` (``render.transform.load_guard_embedder``), loaded on
        its first call: a job whose guard is off never loads it."""
        if self._guard is None:
            from iconface_video.render.options import resolve_device
            from iconface_video.render.transform import load_guard_embedder

            options = self._job.options
            self._guard = load_guard_embedder(resolve_device(options.device), options.models_dir)
        return self._guard(crops)


def execute(item: WorkItem, job: JobSpec, progress: Progress | None = None, worker: str = "",
            models: WorkerModels | None = None) -> ItemResult:
    """Run one work item; never raises for a failure of the item itself (the result says why).

    ``progress`` reports the item's stages; ``models`` are the calling worker's loaded ones
    (None: load them for this item alone).
    """
    started = time.perf_counter()
    try:
        frames, split = _execute(item, job, progress, models or WorkerModels(job))
    except UserError as error:
        return ItemResult(item, False, str(error), seconds=time.perf_counter() - started, worker=worker)
    except Exception as error:  # a bug or an environment problem: keep the traceback for the report
        reason = f"internal error: {type(error).__name__}: {error}"
        return ItemResult(item, False, reason, seconds=time.perf_counter() - started, worker=worker,
                          traceback=traceback.format_exc(limit=8))
    return ItemResult(item, True, frames=frames, seconds=time.perf_counter() - started, worker=worker,
                      boundaries=split.boundaries if split else (), process_key=split.process_key if split else "")


def _execute(item: WorkItem, job: JobSpec, progress: Progress | None,
             models: WorkerModels) -> tuple[int | None, ShotSplit | None]:
    """(frames encoded, the ``ShotSplit`` of an "analyze" item or None)."""
    from iconface_video.batch import split

    if item.kind == "file":
        from iconface_video.pipeline import restore_file

        detector, embedder = models.face_models()
        # overwrite: the output is this batch's own (scheduling refused foreign ones). The
        # analysis goes beside the output, as the main command puts it.
        report = restore_file(item.input, item.output, split.render_options(job), job.analyze, progress,
                              restorer=models.restorer(), detector=detector, embedder=embedder,
                              embed=models.guard_embed)
        return report.frames, None
    if item.kind == "analyze":
        detector, embedder = models.face_models()
        return None, split.analyze(item.input, item.output, job, models.restorer(), progress,
                                   detector=detector, embedder=embedder)
    shots = split.ShotSplit(item.boundaries, item.process_key)
    frames = split.render_segments(item.input, item.output, job, shots, item.segments, models.restorer(), progress,
                                   embed=models.guard_embed)
    return frames, None
