"""The streaming face renderer: frames in, frames with restored faces out, same count and order.

Three threads joined by bounded queues, so decoding, restoration and encoding overlap:

```
caller's frames ──► [decode + align] ──q──► [restore + blend] ──q──► yielded to the encoder
```

The first thread pulls frames (decoding happens there), warps each planned face to an aligned
crop of its track's side on the device and groups frames into *units* of at most ``batch_size``
crops and ``batch_size`` frames. The second restores a unit's crops (one restorer call per crop
side, so each call holds crops of one side), lets the identity guard scale back restorations
that changed who the face is, smooths colour correction, masks and detail over time within each
track, and pastes the changes back. Memory is bounded by the queues: a few units of frames and
crops are alive, whatever the video's length.

A unit never spans two encoder segments, and temporal averages restart at each segment. So a
resumed render, which starts at a segment boundary, computes bit for bit what an uninterrupted
render computed there.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from iconface_video.faces.align import images_to_tensor, warp_faces
from iconface_video.render.blend import (
    border_taper,
    colour_correction,
    face_change,
    paste,
)
from iconface_video.render.plan import FaceJob, RenderPlan
from iconface_video.render.temporal import TemporalSettings, TrackAverages
from iconface_video.types import Frame

# Units waiting between two stages. With one unit in each stage, at most about 2 + 2 * depth
# units (each at most ``batch_size`` frames) are alive: memory follows the batch size.
_QUEUE_DEPTH = 2
# A grey source decoded from YUV gives R = G = B up to rounding; crops are bilinear mixes of
# such pixels, so their channels stay within a level of each other.
_GREY_SPREAD = 3.0 / 255.0

RestoreFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
MaskFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
# (lq, restored, tracks) -> the fraction of each restoration to keep, float32[B] in [0, 1].
GuardFn = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]


@dataclass
class StageTimes:
    """Seconds spent per stage (each stage is timed by the one thread that runs it)."""

    decode: float = 0.0
    align: float = 0.0
    restore: float = 0.0
    guard: float = 0.0
    blend: float = 0.0
    encode: float = 0.0
    frames: int = 0
    faces: int = 0
    grey_faces: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _Unit:
    frames: list[Frame] = field(default_factory=list)
    jobs: list[FaceJob] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list)
    reset: bool = False


_DONE = object()


class FaceEngine:
    """Restores the faces of ``plan`` in a stream of frames.

    Each face is cropped at its job's ``side`` (R below; one side per call). ``restore`` maps
    ``lq float32[B, 3, R, R]`` and ``tracks int[B]`` to restored crops;
    ``mask`` maps the input crops ``float32[B, 3, R, R]`` and their landmarks in crop pixels
    ``float32[B, 5, 2]`` to soft masks ``float32[B, 1, R, R]`` (tapered to zero at the crop's
    border here, whatever the mask, so no crop edge can show). ``guard`` (None: off) maps
    ``(lq, restored, tracks)`` to the fraction of each restoration to keep (the identity
    guard). ``strength`` in [0, 1] blends input (0) and restoration (1);
    ``segment_starts`` are the first frames of the encoder's segments (temporal averages restart
    there); ``preview`` returns input | output side by side. ``observer(job, before, after)``
    sees each restored face with its frame's input and output ``uint8[H, W, 3]`` (the report's
    before/after stills).
    """

    def __init__(
        self,
        plan: RenderPlan,
        restore: RestoreFn,
        mask: MaskFn,
        *,
        guard: GuardFn | None = None,
        strength: float = 1.0,
        temporal: TemporalSettings | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        segment_starts: Iterable[int] = (0,),
        preview: bool = False,
        observer: Callable[[FaceJob, np.ndarray, np.ndarray], None] | None = None,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.plan = plan
        self.restore = restore
        self.mask = mask
        self.guard = guard
        self.strength = strength
        self.temporal = temporal or TemporalSettings.from_strength(0.0)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.segment_starts = frozenset(segment_starts)
        self.preview = preview
        self.observer = observer
        self.times = StageTimes()
        self._tapers: dict[int, torch.Tensor] = {}
        # Running averages in aligned space, per track: colour correction, mask, and the
        # restored detail itself (lighter: it moves with expressions, which must not ghost).
        self._averages = {name: TrackAverages(decay) for name, decay in (
            ("colour", self.temporal.decay), ("mask", self.temporal.decay), ("detail", self.temporal.detail_decay))}

    # -- public -----------------------------------------------------------------------------

    def process(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Frames with restored faces, one for each input frame, in the same order."""
        stop = threading.Event()
        units: queue.Queue = queue.Queue(_QUEUE_DEPTH)
        done: queue.Queue = queue.Queue(_QUEUE_DEPTH)
        workers = [
            threading.Thread(target=self._guard, args=(self._read, frames, units, stop), daemon=True,
                             name="render-align"),
            threading.Thread(target=self._guard, args=(self._work, units, done, stop), daemon=True,
                             name="render-restore"),
        ]
        for worker in workers:
            worker.start()
        try:
            while True:
                item = _get(done, stop)
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                for frame in item:
                    started = time.perf_counter()
                    yield frame
                    self.times.encode += time.perf_counter() - started
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=5.0)

    # -- stage 1: decode and align ------------------------------------------------------------

    def _read(self, frames: Iterable[Frame], out: queue.Queue, stop: threading.Event) -> None:
        unit = _Unit(reset=True)
        n_crops = 0
        iterator = iter(frames)
        while not stop.is_set():
            started = time.perf_counter()
            frame = next(iterator, None)
            self.times.decode += time.perf_counter() - started
            if frame is None:
                break
            at_boundary = frame.index in self.segment_starts
            # A unit closes at a segment start, when it holds a batch of crops, or when it holds
            # batch_size frames (frames without faces must not pile up waiting for a batch).
            if unit.frames and (at_boundary or n_crops >= self.batch_size or len(unit.frames) >= self.batch_size):
                _put(out, unit, stop)
                unit, n_crops = _Unit(reset=at_boundary), 0
            jobs = self.plan.jobs.get(frame.index, ())
            if jobs:
                started = time.perf_counter()
                unit.crops.extend(self._align(frame, jobs))
                unit.jobs.extend(jobs)
                n_crops += len(jobs)
                self.times.align += time.perf_counter() - started
            unit.frames.append(frame)
        if unit.frames:
            _put(out, unit, stop)
        _put(out, _DONE, stop)

    def _align(self, frame: Frame, jobs: tuple[FaceJob, ...]) -> list[torch.Tensor]:
        """One aligned crop ``float32[3, side, side]`` per job, in the jobs' order."""
        image = images_to_tensor(frame.image, self.device)
        crops: list[torch.Tensor] = [torch.empty(0)] * len(jobs)
        for side, rows in _by_side(jobs).items():
            M = torch.from_numpy(np.stack([jobs[i].M for i in rows]))
            for i, crop in zip(rows, warp_faces(image.expand(len(rows), -1, -1, -1), M, side)):
                crops[i] = crop
        return crops

    # -- stage 2: restore and paste back ---------------------------------------------------------

    def _work(self, units: queue.Queue, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            unit = _get(units, stop)
            if unit is _DONE or unit is None:
                break
            if isinstance(unit, BaseException):
                _put(out, unit, stop)
                return
            _put(out, self._render_unit(unit), stop)
        _put(out, _DONE, stop)

    def _render_unit(self, unit: _Unit) -> list[Frame]:
        if unit.reset:
            for average in self._averages.values():
                average.reset()
        self.times.frames += len(unit.frames)
        if not unit.jobs:
            return self._finish(unit.frames, {})
        changes: list[torch.Tensor] = [torch.empty(0)] * len(unit.jobs)
        with torch.inference_mode():
            # Crops of one side are restored together; a track has one side, so each group
            # still holds its tracks' crops in frame order for the running averages.
            for side, rows in _by_side(unit.jobs).items():
                jobs = [unit.jobs[i] for i in rows]
                for i, change in zip(rows, self._render_side(torch.stack([unit.crops[i] for i in rows]), jobs, side)):
                    changes[i] = change
        started = time.perf_counter()
        by_frame: dict[int, list[int]] = {}
        for i, job in enumerate(unit.jobs):
            by_frame.setdefault(job.frame, []).append(i)
        frames = self._finish(unit.frames, {f: ([changes[i] for i in ix], [unit.jobs[i] for i in ix])
                                            for f, ix in by_frame.items()})
        self.times.blend += time.perf_counter() - started
        # Averages of tracks that ended are dropped, so memory follows the live tracks only.
        for average in self._averages.values():
            average.forget_before(unit.frames[-1].index)
        return frames

    def _render_side(self, lq: torch.Tensor, jobs: list[FaceJob], side: int) -> torch.Tensor:
        """The changes ``float32[B, 4, side, side]`` to paste for crops ``lq`` of one side."""
        tracks = np.array([job.track for job in jobs], dtype=np.int64)
        started = time.perf_counter()
        restored = torch.cat([
            self.restore(lq[i : i + self.batch_size], tracks[i : i + self.batch_size])
            for i in range(0, len(lq), self.batch_size)
        ]).to(lq.device, torch.float32)
        self.times.restore += time.perf_counter() - started
        if self.guard is not None and self.strength > 0:
            started = time.perf_counter()
            gain = self.guard(lq, restored, tracks).to(lq.device).view(-1, 1, 1, 1)
            # Kept restorations stay bit-exact; the others move toward their input.
            restored = torch.where(gain < 1, lq + gain * (restored - lq), restored)
            self.times.guard += time.perf_counter() - started

        started = time.perf_counter()
        correction = colour_correction(restored, lq)
        masks = self.mask(lq, np.stack([job.kps_crop for job in jobs])).to(lq.device) * self._taper(side)
        colour, mask, detail = (self._averages[k] for k in ("colour", "mask", "detail"))
        for i, job in enumerate(jobs):
            correction[i] = colour.update(job.track, job.frame, correction[i])
            masks[i] = mask.update(job.track, job.frame, masks[i])
        residual = restored + correction - lq
        for i, job in enumerate(jobs):
            residual[i] = detail.update(job.track, job.frame, residual[i])
        grey = (lq.amax(dim=1) - lq.amin(dim=1)).flatten(1).amax(dim=1) <= _GREY_SPREAD
        self.times.faces += len(jobs)
        self.times.grey_faces += int(grey.sum())
        changes = face_change(residual, masks, self.strength, grey)
        self.times.blend += time.perf_counter() - started
        return changes

    def _taper(self, side: int) -> torch.Tensor:
        if side not in self._tapers:
            self._tapers[side] = border_taper(side).to(self.device)
        return self._tapers[side]

    def _finish(self, frames: list[Frame], changes: dict[int, tuple[list[torch.Tensor], list[FaceJob]]]) -> list[Frame]:
        out = []
        for frame in frames:
            image = frame.image
            if frame.index in changes:
                change, jobs = changes[frame.index]
                pixels = torch.from_numpy(frame.image).to(self.device)
                image = paste(pixels, change, np.stack([job.M for job in jobs])).cpu().numpy()
                if self.observer is not None:
                    for job in jobs:
                        self.observer(job, frame.image, image)
            if self.preview:
                image = np.concatenate([frame.image, image], axis=1)
            out.append(Frame(index=frame.index, pts=frame.pts, time_base=frame.time_base, image=image))
        return out

    # -- plumbing ---------------------------------------------------------------------------------

    @staticmethod
    def _guard(target, source, out: queue.Queue, stop: threading.Event) -> None:
        """Run a stage; an exception travels downstream instead of dying with the thread."""
        try:
            target(source, out, stop)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer's thread
            _put(out, error, stop)


def _by_side(jobs: Sequence[FaceJob]) -> dict[int, list[int]]:
    """Indices of ``jobs`` grouped by crop side, in order within each group."""
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.side, []).append(i)
    return groups


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return None
