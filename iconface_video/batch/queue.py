"""The batch queue: plan which inputs to (re)do, hand work items to workers, record the results.

One driver process owns all state: the manifest, the lock files, the order of work. Workers
(local processes, one per device, or Ray tasks) only execute :class:`WorkItem` objects through
:func:`execute` and report back; so a worker that crashes loses nothing but its current item,
which is marked failed with the reason.

Work items:

- ``file``: the whole input through ``iconface_video.pipeline.restore_file``, analysis then
  render (exactly what the main command does, so a batch output equals a single run's frame
  for frame);
- ``analyze`` then ``segments`` (``--split-shots``): analyse the whole file once, then restore
  and encode groups of the render's segments (which start at shot starts) as independent items
  against that analysis; the driver joins them when the last one is in
  (``iconface_video.batch.split``).

A worker process loads the restorer once (``WorkerModels``) and reuses it for every item.

Items are dispatched lazily, at most one per free worker, and the driver takes an input's lock
only when it dispatches that input's first item: two batch runs sharing an output folder (two
machines on one NFS share, say) divide the inputs between them instead of colliding.
"""

from __future__ import annotations

import glob
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from iconface_video.batch import locks
from iconface_video.batch.manifest import FileRecord, manifest_path, read_manifest, set_state, update_manifest
from iconface_video.errors import InputError, OutputError, UserError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".nut")
Emit = Callable[..., None]  # emit(event_name, **fields)
ItemKind = Literal["file", "analyze", "segments"]


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. ``segments`` (kind "segments") are indices into the render's segment
    ranges; ``boundaries`` (shot starts) and ``process_key`` (work folder) name that render."""

    kind: ItemKind
    key: str
    input: str
    output: str
    segments: tuple[int, ...] = ()
    boundaries: tuple[int, ...] = ()
    process_key: str = ""

    @property
    def id(self) -> str:
        if self.kind == "segments":
            return f"{self.key}#seg{self.segments[0]}-{self.segments[-1]}"
        return self.key if self.kind == "file" else f"{self.key}#{self.kind}"


@dataclass(frozen=True)
class ItemResult:
    """How an item ended. ``boundaries`` and ``process_key`` (kind "analyze"): the render's shot
    starts and work-folder key, to split it by; ``traceback``: internal errors only."""

    item: WorkItem
    ok: bool
    reason: str | None = None
    frames: int | None = None
    seconds: float = 0.0
    worker: str = ""
    boundaries: tuple[int, ...] = ()
    process_key: str = ""
    traceback: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """What every file of a batch goes through: the main command's options.

    ``options`` is a ``render.RenderOptions`` (restoration and encoding), ``analyze`` an
    ``analysis.AnalyzeSettings`` (typed loosely: this module must not import torch).
    """

    options: Any
    analyze: Any


@dataclass(frozen=True)
class BatchOptions:
    """What a batch run does besides its inputs and job settings."""

    out_dir: Path
    split_shots: bool = False
    min_task_frames: int = 250  # split runs: frames per task at least
    overwrite: bool = False  # replace outputs this batch did not make
    retry_failed: bool = True
    stale_lock_s: float = locks.DEFAULT_STALE_AFTER_S
    heartbeat_s: float = locks.DEFAULT_HEARTBEAT_S


@dataclass
class Summary:
    """What a batch run did: keys done, failed (with reasons), skipped (with reasons)."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# --------------------------------------------------------------------------------------------
# Inputs and the plan


def expand_inputs(patterns: Iterable[str]) -> list[Path]:
    """Files named by ``patterns``: paths, quoted globs (``season1/*.mkv``, ``**`` recursive), or
    folders (their video files). Sorted and deduplicated; a pattern matching nothing is an error."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        elif path.exists():
            matches = [path]
        else:
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if Path(m).is_file()]
        if not matches:
            raise InputError(f"{pattern}: matches no video files; check the pattern (quote it, so the shell leaves it to iconface-video)")
        for match in matches:
            found.setdefault(match.resolve(), None)
    return list(found)


def output_for(input_path: Path, out_dir: Path) -> Path:
    """``season1/e01.mkv`` -> ``<out_dir>/e01.mkv`` (the folder says it is restored)."""
    return out_dir / input_path.name


def settings_json(spec: JobSpec, split_shots: bool) -> dict[str, Any]:
    """The settings recorded in the manifest; a rerun with different ones redoes finished files."""
    options = asdict(spec.options)
    options.pop("overwrite", None)  # the batch decides that per file
    data = {"options": options, "analyze": asdict(spec.analyze), "split_shots": split_shots}
    return json.loads(json.dumps(data, default=str))


def models_in_use(checkpoint: str | None, models_dir: str | Path | None = None) -> dict[str, str]:
    """The catalogued models found on this machine, with their pinned SHA-256, and the restorer
    as ``restorer``: the checkpoint's file name and SHA-256 (``checkpoint`` None: the embedded one)."""
    from iconface_video.weights import MODELS, is_present

    models = {m.name: (m.files[0].sha256 or "unpinned") for m in MODELS if is_present(m, models_dir)}
    models["restorer"] = restorer_version(checkpoint)
    return models


def restorer_version(checkpoint: str | None) -> str:
    """``"NAME sha256:HEX"`` of the restorer checkpoint a batch will load (None: the embedded one).

    A missing checkpoint is a one-line error here, before any worker starts.
    """
    import hashlib

    from iconface_video.core.restorer import EMBEDDED_CHECKPOINT
    from iconface_video.errors import MissingModelError

    path = Path(checkpoint) if checkpoint else EMBEDDED_CHECKPOINT
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise MissingModelError(f"restorer checkpoint {path} cannot be read ({error.strerror}); "
                                "pass one with --checkpoint") from None
    return f"{path.name} sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Skip:
    """An input this run leaves alone, and why."""

    input: Path
    output: Path
    reason: str


def plan(inputs: Sequence[Path], options: BatchOptions, settings: dict[str, Any],
         models: dict[str, str]) -> tuple[list[FileRecord], list[Skip]]:
    """Decide for each input whether it must be (re)done; writes the new entries to the manifest.

    Skips what is done with the same settings and still present; redoes what failed (unless
    ``retry_failed`` is off), what was running when a run died (the segmented encoder resumes it),
    what changed settings; refuses to replace an output this batch did not make unless
    ``overwrite``. Two inputs with the same file name would write the same output: an error.
    """
    out_dir = options.out_dir
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for path in inputs:
        other = by_name.setdefault(path.name, path)
        if other != path:
            raise InputError(f"{other} and {path} would both be written to {output_for(path, out_dir)}; "
                             "run them into different output folders")
        other = by_stem.setdefault(path.stem, path)
        if other != path:
            raise InputError(f"{other} and {path} would both write their analysis to "
                             f"{out_dir / (path.stem + '.iconface.json')}; run them into different output folders")
        if output_for(path, out_dir).resolve() == path:
            raise InputError(f"{path}: the output folder is the input's folder; choose another with -o")
    existing = read_manifest(manifest_path(out_dir))
    todo: list[FileRecord] = []
    skipped: list[Skip] = []
    for path in inputs:
        output = output_for(path, out_dir)
        key = output.name
        record = existing.get(key)
        new = FileRecord(input=str(path), output=str(output), settings=settings, models=models,
                         attempts=record.attempts if record else 0)
        reason = _skip_reason(record, new, output, options)
        if reason is not None:
            skipped.append(Skip(path, output, reason))
            continue
        todo.append(new)
    # Only new inputs are written now; a failed or interrupted entry keeps its state and reason
    # until a worker actually takes it up again.
    update_manifest(manifest_path(out_dir), {Path(r.output).name: r for r in todo if Path(r.output).name not in existing})
    return todo, skipped


def _skip_reason(record: FileRecord | None, new: FileRecord, output: Path, options: BatchOptions) -> str | None:
    if record is None:
        if output.exists() and not options.overwrite:
            return "output exists but was not made by this batch; pass --overwrite to replace it"
        return None
    same_model = record.models.get("restorer") == new.models.get("restorer")
    if record.state == "done" and output.exists() and record.settings == new.settings and same_model:
        return "done"
    if record.state == "failed" and not options.retry_failed:
        return f"failed before ({record.reason}); not retried"
    return None


# --------------------------------------------------------------------------------------------
# Executing one item (in a worker process or a Ray task)


class WorkerModels:
    """The models one worker process keeps from item to item: the restorer, loaded for its first
    item and reused for every later one. (The analysis's detector and embedder are still loaded
    per file: ``pipeline.restore_file`` takes no loaded ones.)"""

    def __init__(self, spec: JobSpec) -> None:
        self._spec = spec
        self._restorer: Any = None

    def restorer(self) -> Any:
        if self._restorer is None:
            from iconface_video.render.render import load_restorer, resolve_device

            options = self._spec.options
            self._restorer = load_restorer(options, resolve_device(options.device))
        return self._restorer


def execute(item: WorkItem, spec: JobSpec, progress: Any = None, worker: str = "",
            models: WorkerModels | None = None) -> ItemResult:
    """Run one work item; never raises for a failure of the item itself (the result says why).

    ``spec`` is the batch's ``JobSpec``; ``progress`` a ``Progress`` for the stages; ``models``
    the calling worker's loaded models (None: load them for this item alone).
    """
    started = time.perf_counter()
    try:
        frames, split = _execute(item, spec, progress, models or WorkerModels(spec))
    except UserError as error:
        return ItemResult(item, False, str(error), seconds=time.perf_counter() - started, worker=worker)
    except Exception as error:  # a bug or an environment problem: keep the traceback for the report
        reason = f"internal error: {type(error).__name__}: {error}"
        return ItemResult(item, False, reason, seconds=time.perf_counter() - started, worker=worker,
                          traceback=traceback.format_exc(limit=8))
    return ItemResult(item, True, frames=frames, seconds=time.perf_counter() - started, worker=worker,
                      boundaries=split.boundaries if split else (), process_key=split.process_key if split else "")


def _execute(item: WorkItem, spec: JobSpec, progress: Any, models: WorkerModels) -> tuple[int | None, Any]:
    """(frames encoded, the ``split.SplitPlan`` of an "analyze" item or None)."""
    if item.kind == "file":
        from iconface_video.pipeline import restore_file

        # overwrite: the output is this batch's own (planning refused foreign ones). The analysis
        # goes beside the output, as the main command puts it.
        report = restore_file(item.input, item.output, replace(spec.options, overwrite=True), spec.analyze,
                              progress, restorer=models.restorer())
        return report.frames, None
    from iconface_video.batch import split

    if item.kind == "analyze":
        return None, split.analyze(item.input, item.output, spec, models.restorer(), progress)
    plan = split.SplitPlan(item.boundaries, item.process_key)
    return split.render_segments(item.input, item.output, spec, plan, item.segments, models.restorer(), progress), None


# --------------------------------------------------------------------------------------------
# Backends: who runs the items


class Backend(Protocol):
    """Runs items somewhere; ``poll`` returns what happened since the last call."""

    slots: int  # items that can run at once

    def submit(self, item: WorkItem) -> None: ...

    # Messages: ("start", item, worker) | ("event", item, worker, dict) | ("end", ItemResult).
    def poll(self, timeout: float) -> list[tuple]: ...

    def close(self, abort: bool = False) -> None: ...  # abort: stop running items now (Ctrl-C)


@dataclass(frozen=True)
class WorkerSpec:
    """A local worker: its name (``cuda:1``, ``cpu:0``) and the environment it starts with."""

    name: str
    env: dict[str, str]


def worker_specs(workers: int | None, devices: Sequence[str] | None) -> list[WorkerSpec]:
    """One worker per GPU in ``devices`` (each sees only its GPU), else ``workers`` CPU workers.

    With neither, one worker per visible GPU, or a single CPU worker on a machine without one.
    CPU workers share the cores: each gets ``cores / workers`` math threads, so two workers do
    not oversubscribe the machine.
    """
    if devices:
        return [WorkerSpec(f"cuda:{d}", {"CUDA_VISIBLE_DEVICES": str(d)}) for d in devices]
    if workers is None:
        import torch

        count = torch.cuda.device_count()
        if count:
            return worker_specs(None, [str(i) for i in range(count)])
        workers = 1
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return [WorkerSpec(f"cpu:{i}", dict(env)) for i in range(workers)]


class _PipeWriter(io.TextIOBase):
    """A text stream for ``Progress(json_out=...)`` that forwards each JSON line to the driver."""

    def __init__(self, conn: Any, item: WorkItem, worker: str) -> None:
        self._conn, self._item, self._worker = conn, item, worker

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._conn.send(("event", self._item, self._worker, json.loads(line)))
        return len(text)


def _worker_main(spec: WorkerSpec, conn: Any) -> None:
    """A local worker process: receive the ``JobSpec``, then run items from ``conn`` until ``None``."""
    # First of all, so CUDA sees only this worker's device and torch sizes its thread pool from
    # OMP_NUM_THREADS. The settings come over the pipe, not as an argument, because unpickling
    # them imports the pipeline, which must happen after this.
    os.environ.update(spec.env)
    _exit_with_parent()
    # Ctrl-C reaches the whole process group; the driver decides (it stops the workers itself),
    # so workers do not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threads = spec.env.get("OMP_NUM_THREADS")
    if threads:  # CPU workers split the cores between them (torch's pool, OpenCV's)
        import cv2
        import torch

        torch.set_num_threads(int(threads))
        cv2.setNumThreads(int(threads))
    from iconface_video.progress import Progress

    job = conn.recv()
    models = WorkerModels(job)  # one restorer per worker process, reused for every file
    while (item := conn.recv()) is not None:
        conn.send(("start", item, spec.name))
        progress = Progress(json_lines=True, json_out=_PipeWriter(conn, item, spec.name))
        conn.send(("end", execute(item, job, progress, spec.name, models)))


def _drain(conn: Any) -> list[tuple]:
    """Whatever complete messages are left in a dead worker's pipe."""
    messages = []
    try:
        while conn.poll():
            messages.append(conn.recv())
    except (EOFError, OSError):
        pass
    return messages


def _exit_with_parent() -> None:
    """Exit this worker as soon as the driver dies (``kill -9``), so no orphan keeps a GPU busy."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


class LocalBackend:
    """Spawned worker processes on this machine, one per :class:`WorkerSpec`.

    Each worker talks to the driver over its own pipe (one writer, one reader, no shared lock),
    so the driver always knows which item a worker holds, and a worker killed mid-message (out
    of memory, ``kill -9``) breaks only its own pipe: exactly its item fails, and a new worker
    takes its place.
    """

    def __init__(self, specs: Sequence[WorkerSpec], settings: JobSpec, max_restarts: int = 8) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # fork + CUDA/threads is unsafe
        self._settings = settings
        self._workers: dict[str, tuple[Any, Any]] = {}  # name -> (process, connection)
        self._busy: dict[str, WorkItem] = {}
        self._specs = {spec.name: spec for spec in specs}
        self._restarts_left = max_restarts
        self.slots = len(specs)
        for spec in specs:
            self._start(spec)

    def _start(self, spec: WorkerSpec) -> None:
        ours, theirs = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(spec, theirs),
                                    name=f"iconface-batch-{spec.name}", daemon=True)
        process.start()
        theirs.close()  # so that the worker's death reads as end-of-file here
        ours.send(self._settings)
        self._workers[spec.name] = (process, ours)

    def pids(self) -> dict[str, int]:
        """Each live worker's process id, by worker name."""
        return {name: process.pid for name, (process, _) in self._workers.items()}

    def submit(self, item: WorkItem) -> None:
        name = next(n for n in self._workers if n not in self._busy)
        self._busy[name] = item
        try:
            self._workers[name][1].send(item)
        except OSError:
            pass  # it just died: the next poll finds it gone and fails the item

    def poll(self, timeout: float) -> list[tuple]:
        by_conn = {conn: name for name, (_, conn) in self._workers.items()}
        messages: list[tuple] = []
        dead: set[str] = set()
        for conn in multiprocessing.connection.wait(list(by_conn), timeout):
            try:
                while conn.poll():
                    messages.append(conn.recv())
            except (EOFError, OSError):  # end of file: the worker is gone
                dead.add(by_conn[conn])
        dead |= {name for name, (process, _) in self._workers.items() if not process.is_alive()}
        for name in dead:  # what a worker said just before it died still counts
            messages.extend(_drain(self._workers[name][1]))
        for message in messages:
            if message[0] == "end":
                self._busy.pop(message[1].worker, None)
        if dead:
            messages.extend(self._replace(dead))
        return messages

    def _replace(self, names: set[str]) -> list[tuple]:
        lost = []
        for name in names:
            process, conn = self._workers.pop(name)
            process.join(timeout=5)
            conn.close()
            item = self._busy.pop(name, None)
            if item is not None:
                reason = f"worker {name} died (exit code {process.exitcode}) while processing it"
                lost.append(("end", ItemResult(item, False, reason, worker=name)))
            if self._restarts_left > 0:
                self._restarts_left -= 1
                self._start(self._specs[name])
        self.slots = len(self._workers)
        if not self._workers:
            raise RuntimeError("every batch worker died; see the failures above")
        return lost

    def close(self, abort: bool = False) -> None:
        """Let idle workers exit; with ``abort``, stop busy ones too (finished segments are kept)."""
        for name, (process, conn) in self._workers.items():
            if abort and name in self._busy:
                process.terminate()
            try:
                conn.send(None)
            except OSError:
                pass  # already gone
        for process, conn in self._workers.values():
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
            conn.close()


# --------------------------------------------------------------------------------------------
# The driver


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

    def __init__(self, records: Sequence[FileRecord], settings: Any, options: BatchOptions, backend: Backend,
                 emit: Emit, run_id: str | None = None) -> None:
        self.settings = settings
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

    def _handle(self, message: tuple) -> None:
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
            plan = split.plan_for(item.input, item.output, self.settings, split.SplitPlan(boundaries, process_key))
        except UserError as error:
            state.failure = str(error)
            return
        groups = split.group_segments(plan.ranges, plan.pending(), self.options.min_task_frames)
        items = [WorkItem("segments", item.key, item.input, item.output, group, boundaries, process_key)
                 for group in groups]
        state.waiting.update(i.id for i in items)
        self.emit("file_split", file=item.input, shots=len(boundaries) + 1, segments=len(plan.ranges),
                  tasks=len(groups), reused=len(plan.ranges) - len(plan.pending()))
        # To the front of the queue: finish files one by one rather than all at the end.
        self.queue.extendleft(reversed(items))

    def _join(self, state: _FileState) -> None:
        from iconface_video.batch import split
        from iconface_video.io.transcode import finish

        record = state.record
        started = time.perf_counter()
        try:
            plan = split.plan_for(record.input, record.output, self.settings,
                                  split.SplitPlan(state.boundaries, state.process_key))
            warnings = finish(plan, overwrite=True)
        except UserError as error:
            state.failure = str(error)
            return
        except Exception as error:
            state.failure = f"internal error while joining: {type(error).__name__}: {error}"
            return
        state.frames = plan.frame_count
        for warning in warnings:
            self.emit("warning", file=record.input, stage="mux", message=warning)
        self.emit("file_joined", file=record.input, output=record.output, segments=len(plan.ranges),
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


def run_batch(inputs: Sequence[Path], settings: JobSpec, options: BatchOptions, backend_factory: Callable[[], Backend],
              emit: Emit, models: dict[str, str] | None = None) -> Summary:
    """Plan, run and summarise one batch; ``backend_factory`` is called only if there is work.

    ``models`` (what the manifest records; None: ``models_in_use``) is for tests and benchmarks.
    """
    from iconface_video.io.writer import check_output_folder

    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{options.out_dir}: cannot create the output folder ({error.strerror})") from None
    check_output_folder(manifest_path(options.out_dir))
    if models is None:
        models = models_in_use(settings.options.checkpoint, settings.analyze.models_dir)
    records, skipped = plan(inputs, options, settings_json(settings, options.split_shots), models)
    emit("batch_start", files=len(inputs), todo=len(records), skipped=len(skipped),
         output_dir=str(options.out_dir), manifest=str(manifest_path(options.out_dir)))
    summary = Summary(skipped={skip.output.name: skip.reason for skip in skipped})
    for skip in skipped:
        emit("file_skipped", file=str(skip.input), output=str(skip.output), reason=skip.reason)
    if records:
        result = Driver(records, settings, options, backend_factory(), emit).run()
        result.skipped = {**summary.skipped, **result.skipped}
        summary = result
    emit("batch_done", done=len(summary.done), failed=len(summary.failed), skipped=len(summary.skipped),
         seconds=round(summary.seconds, 3), failures=[{"output": k, "reason": v} for k, v in summary.failed.items()])
    return summary
