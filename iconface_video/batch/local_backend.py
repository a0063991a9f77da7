"""Who runs the work items: the ``Backend`` protocol the driver talks to, and the local backend,
spawned worker processes on this machine (one per GPU, or ``--workers N`` sharing the CPU).

A worker process loads its models once (``worker.WorkerModels``) and reuses them for every item.
Imports nothing heavy at module level: a worker imports this before it sets its device.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from iconface_video.batch.items import ItemResult, JobSpec, Message, WorkItem
from iconface_video.batch.worker import WorkerModels, execute


class Backend(Protocol):
    """Runs items somewhere; ``poll`` returns what happened since the last call."""

    slots: int  # items that can run at once

    def submit(self, item: WorkItem) -> None: ...

    def poll(self, timeout: float) -> list[Message]: ...

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

    def __init__(self, conn: Connection, item: WorkItem, worker: str) -> None:
        self._conn, self._item, self._worker = conn, item, worker

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._conn.send(("event", self._item, self._worker, json.loads(line)))
        return len(text)


def _worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A local worker process: receive the ``JobSpec``, then run items from ``conn`` until ``None``."""
    # First of all, so CUDA sees only this worker's device and torch sizes its thread pool from
    # OMP_NUM_THREADS. The job comes over the pipe, not as an argument, because unpickling it
    # imports the render's options (and torch), which must happen after this.
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
    models = WorkerModels(job)  # loaded once per worker process, reused for every item
    while (item := conn.recv()) is not None:
        conn.send(("start", item, spec.name))
        progress = Progress(json_lines=True, json_out=_PipeWriter(conn, item, spec.name))
        conn.send(("end", execute(item, job, progress, spec.name, models)))


def _drain(conn: Connection) -> list[Message]:
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

    def __init__(self, specs: Sequence[WorkerSpec], job: JobSpec, max_restarts: int = 8) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # fork + CUDA/threads is unsafe
        self._job = job
        self._workers: dict[str, tuple[BaseProcess, Connection]] = {}  # name -> (process, connection)
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
        ours.send(self._job)
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

    def poll(self, timeout: float) -> list[Message]:
        by_conn = {conn: name for name, (_, conn) in self._workers.items()}
        messages: list[Message] = []
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

    def _replace(self, names: set[str]) -> list[Message]:
        lost: list[Message] = []
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
