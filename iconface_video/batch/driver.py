"""The batch driver: the one process that owns a run's state. It takes each input's lock when it
dispatches that input's first item, hands items to a backend at most one per free slot, keeps
the manifest, joins split files, and reports events.

Workers (local processes or Ray tasks) only execute items and report back, so a worker that
crashes loses nothing but its current item, which is marked failed with the reason. Dispatching
lazily and locking per input lets two batch runs that share an output folder (two machines on
one NFS share, say) divide the inputs between them instead of colliding.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iconface_video import locks
from iconface_video.batch.items import BatchOptions, ItemKind, ItemResult, JobSpec, Message, Summary, WorkItem
from iconface_video.batch.manifest import FileRecord, manifest_path, set_state
from iconface_video.batch.schedule import files_to_do, group_segments, models_in_use, settings_json
from iconface_video.errors import OutputError, UserError
from iconface_video.files import check_output_folder

if TYPE_CHECKING:
    from iconface_video.batch.local_backend import Backend

Emit = Callable[..., None]  # emit(event_name, **fields)


@dataclass
class _FileState:
    record: FileRecord
    lock: locks.FileLock | None = None
    waiting: set[str] = field(default_factory=set)  # ids of items still out
    boundaries: tuple[int, ...] = ()
    process_key: str = ""
    frames: int = 0
    failure: str | None = None
    started: float = 0.0
    worker: str | None = None  # "cpu:0 on HOST", or "ray HOST pid P" once a Ray task reports


class Driver:
    """Runs one batch: dispatches items to a backend, keeps the manifest and locks, emits events."""

    def __init__(self, records: Sequence[FileRecord], job: JobSpec, options: BatchOptions, backend: Backend,
                 emit: Emit, run_id: str | None = None) -> None:
        self.job = job
        self.options = options
        self.backend = backend
        self.emit = emit
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.manifest = manifest_path(options.out_dir)
        self.files = {Path(r.output).name: _FileState(r) for r in records}
        self.queue: deque[WorkItem] = deque(self._first_item(r) for r in records)
        self.summary = Summary()

    def _first_item(self, record: FileRecord) -> WorkItem:
        kind: ItemKind = "analyze" if self.options.split_shots else "file"
        return WorkItem(kind, Path(record.output).name, record.input, record.output)

    def run(self) -> Summary:
        started = time.perf_counter()
        in_flight: dict[str, WorkItem] = {}
        aborted = True
        try:
            while self.queue or in_flight:
                while self.queue and len(in_flight) < max(1, self.backend.slots):
                    item = self.queue.popleft()
                    if self._claim(item):
                        in_flight[item.id] = item
                        self.files[item.key].waiting.add(item.id)
                        self.backend.submit(item)
                for message in self.backend.poll(0.5):
                    if message[0] == "end":
                        in_flight.pop(message[1].item.id, None)
                    self._handle(message)
            aborted = False
        finally:
            # Interrupted (Ctrl-C) files stay "running" in the manifest: the next run resumes them.
            self.backend.close(abort=aborted)
            for state in self.files.values():
                if state.lock is not None:
                    state.lock.release()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _claim(self, item: WorkItem) -> bool:
        """Before an input's first item: take its lock (skip the input if another run holds it)."""
        state = self.files[item.key]
        if state.lock is not None:
            return True
        path = locks.lock_path_for(self.options.out_dir, item.key)
        try:
            state.lock = locks.acquire(path, self.run_id, stale_after_s=self.options.stale_lock_s,
                                       heartbeat_s=self.options.heartbeat_s)
        except locks.LockedError as error:
            reason = f"skipped: {error}"
            self.summary.skipped[item.key] = reason
            self.emit("file_skipped", file=item.input, output=item.output, reason=reason)
            return False
        state.started = time.time()
        record = state.record
        state.record = set_state(self.manifest, item.key, "running", reason=None, attempts=record.attempts + 1,
                                 started=state.started, finished=None, worker=None, input=record.input,
                                 settings=record.settings, models=record.models)
        return True

    def _handle(self, message: Message) -> None:
        kind = message[0]
        if kind == "start":
            _, item, worker = message
            state = self.files[item.key]
            if item.kind != "segments":
                self.emit("file_start", file=item.input, output=item.output, worker=worker,
                          attempt=state.record.attempts, split=self.options.split_shots)
                if worker != "ray":  # a Ray "start" is only a submission; the task names its node when done
                    state.worker = f"{worker} on {socket.gethostname()}"
                    state.record = set_state(self.manifest, item.key, "running", worker=state.worker)
            else:
                self.emit("segment_start", file=item.input, worker=worker, segments=list(item.segments))
        elif kind == "event":
            _, item, worker, event = message
            # Tasks of one split file run side by side: worker and segments tell their events apart.
            where = {"segments": list(item.segments)} if item.kind == "segments" else {}
            self.emit(event.pop("event"), file=item.input, worker=worker, **where, **event)
        else:
            self._finished(message[1])

    def _finished(self, result: ItemResult) -> None:
        item = result.item
        state = self.files[item.key]
        state.waiting.discard(item.id)
        if item.kind != "segments" and result.worker.startswith("ray "):
            state.worker = result.worker
        if not result.ok:
            state.failure = state.failure or result.reason
            if result.traceback:
                self.emit("traceback", file=item.input, traceback=result.traceback)
        elif item.kind == "analyze":
            self._queue_segments(item, result.boundaries, result.process_key)
        elif item.kind == "segments":
            state.frames += result.frames or 0
            self.emit("segment_done", file=item.input, segments=list(item.segments), frames=result.frames,
                      seconds=round(result.seconds, 3), worker=result.worker)
        else:
            state.frames = result.frames or 0
        if state.waiting:
            return
        if state.failure is None and item.kind != "file":
            self._join(state)
        self._close_file(state)

    def _queue_segments(self, item: WorkItem, boundaries: tuple[int, ...], process_key: str) -> None:
        from iconface_video.batch import split

        state = self.files[item.key]
        state.boundaries, state.process_key = boundaries, process_key
        try:
            segments = split.segment_plan(item.input, item.output, self.job, split.ShotSplit(boundaries, process_key))
        except UserError as error:
            state.failure = str(error)
            return
        pending = segments.pending()
        groups = group_segments(segments.ranges, pending, self.options.min_task_frames)
        items = [WorkItem("segments", item.key, item.input, item.output, group, boundaries, process_key)
                 for group in groups]
        state.waiting.update(i.id for i in items)
        self.emit("file_split", file=item.input, shots=len(boundaries) + 1, segments=len(segments.ranges),
                  tasks=len(groups), reused=len(segments.ranges) - len(pending))
        # To the front of the queue: finish files one by one rather than all at the end.
        self.queue.extendleft(reversed(items))

    def _join(self, state: _FileState) -> None:
        from iconface_video.batch import split
        from iconface_video.io.transcode import finish

        record = state.record
        started = time.perf_counter()
        try:
            segments = split.segment_plan(record.input, record.output, self.job,
                                          split.ShotSplit(state.boundaries, state.process_key))
            warnings = finish(segments, overwrite=True)
        except UserError as error:
            state.failure = str(error)
            return
        except Exception as error:
            state.failure = f"internal error while joining: {type(error).__name__}: {error}"
            return
        state.frames = segments.frame_count
        for warning in warnings:
            self.emit("warning", file=record.input, stage="mux", message=warning)
        self.emit("file_joined", file=record.input, output=record.output, segments=len(segments.ranges),
                  seconds=round(time.perf_counter() - started, 3))

    def _close_file(self, state: _FileState) -> None:
        key = Path(state.record.output).name
        now = time.time()
        seconds = round(now - state.started, 3)
        if state.failure is None:
            state.record = set_state(self.manifest, key, "done", reason=None, finished=now, frames=state.frames,
                                     seconds=seconds, worker=state.worker)
            self.summary.done.append(key)
            self.emit("file_done", file=state.record.input, output=state.record.output, frames=state.frames,
                      seconds=seconds)
        else:
            state.record = set_state(self.manifest, key, "failed", reason=state.failure, finished=now, seconds=seconds,
                                     worker=state.worker)
            self.summary.failed[key] = state.failure
            self.emit("file_failed", file=state.record.input, output=state.record.output, reason=state.failure)
        if state.lock is not None:
            state.lock.release()
            state.lock = None


def run_batch(inputs: Sequence[Path], job: JobSpec, options: BatchOptions, backend_factory: Callable[[], Backend],
              emit: Emit, models: dict[str, str] | None = None) -> Summary:
    """Schedule, run and summarise one batch; ``backend_factory`` is called only if there is work.

    ``models`` (what the manifest records; None: ``models_in_use``) is for tests and benchmarks.
    """
    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{options.out_dir}: cannot create the output folder ({error.strerror})") from None
    check_output_folder(manifest_path(options.out_dir))
    if models is None:
        models = models_in_use(job.options.checkpoint, job.analyze.models_dir)
    records, skipped = files_to_do(inputs, options, settings_json(job, options.split_shots), models)
    emit("batch_start", files=len(inputs), todo=len(records), skipped=len(skipped),
         output_dir=str(options.out_dir), manifest=str(manifest_path(options.out_dir)))
    summary = Summary(skipped={skip.output.name: skip.reason for skip in skipped})
    for skip in skipped:
        emit("file_skipped", file=str(skip.input), output=str(skip.output), reason=skip.reason)
    if records:
        result = Driver(records, job, options, backend_factory(), emit).run()
        result.skipped = {**summary.skipped, **result.skipped}
        summary = result
    emit("batch_done", done=len(summary.done), failed=len(summary.failed), skipped=len(summary.skipped),
         seconds=round(summary.seconds, 3), failures=[{"output": k, "reason": v} for k, v in summary.failed.items()])
    return summary
