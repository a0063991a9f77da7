"""Lock files that stop two runs from working on the same file at once: a batch's inputs, any
job's output (``job.output_lock``).

A lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS
v3+), holding who took it: process id, host name, run id and start time. While the holder works
it touches the file every ``heartbeat_s`` seconds, so the file's mtime says the holder is alive
even when it runs on another machine of a Ray cluster.

A lock is *stale*, and may be broken, when

- its holder is on this host and that process no longer exists (a crash or ``kill -9``), or
- its mtime is older than ``stale_after_s`` (a holder on another host that stopped heartbeating),
- or the file is unreadable (a holder killed between creating and writing it) and older than a few
  seconds.

Breaking a stale lock renames it aside first, so two runs that both find it stale cannot both
win: only one rename succeeds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_DIR_NAME = ".iconface-locks"
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_HEARTBEAT_S = 30.0
# A lock file with no readable content is a holder killed mid-write; give a live writer this long.
_UNREADABLE_GRACE_S = 5.0


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: process id, host, the batch run's id and when it was taken (epoch s)."""

    pid: int
    host: str
    run_id: str
    started: float

    def describe(self) -> str:
        age = time.time() - self.started
        return f"pid {self.pid} on {self.host} (run {self.run_id}, {age:.0f} s ago)"


class LockedError(Exception):
    """The input is being processed by a live holder; ``holder`` says who."""

    def __init__(self, path: Path, holder: LockInfo | None) -> None:
        who = holder.describe() if holder else "an unknown process"
        super().__init__(f"{path.name} is locked by {who}")
        self.path = path
        self.holder = holder


def lock_path_for(out_dir: Path, key: str) -> Path:
    """The lock file of the work item ``key`` (a file-name-safe string) in ``out_dir``."""
    return out_dir / LOCK_DIR_NAME / f"{key}.lock"


def read_lock(path: Path) -> LockInfo | None:
    """The holder written in ``path``, or None if the file is missing or not (yet) readable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockInfo(int(data["pid"]), str(data["host"]), str(data["run_id"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without sending)."""
    if os.name == "nt":  # os.kill would terminate it there; let the heartbeat's age decide
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(holder: LockInfo | None, mtime: float, now: float, stale_after_s: float, host: str) -> bool:
    """Whether a lock with this holder and file mtime may be broken (see the module docstring)."""
    age = now - mtime
    if holder is None:
        return age > _UNREADABLE_GRACE_S
    if holder.host == host and not pid_alive(holder.pid):
        return True
    return age > stale_after_s


class FileLock:
    """An acquired lock; ``release()`` (or leaving the ``with`` block) removes it.

    A daemon thread refreshes the file's mtime every ``heartbeat_s`` seconds while held.
    """

    def __init__(self, path: Path, info: LockInfo, heartbeat_s: float) -> None:
        self.path = path
        self.info = info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        self._thread.start()

    def _beat(self, heartbeat_s: float) -> None:
        while not self._stop.wait(heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:  # broken by someone who judged us stale; nothing left to refresh
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        # Remove only our own lock: if it was broken and retaken, the file is someone else's.
        if read_lock(self.path) == self.info:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    path: Path,
    run_id: str,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
) -> FileLock:
    """Take the lock at ``path`` or raise :class:`LockedError` naming the live holder.

    A stale lock is broken (renamed aside, then removed) and taken over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    info = LockInfo(pid=os.getpid(), host=host, run_id=run_id, started=time.time())
    for _ in range(3):  # a lost race against another breaker is retried, not reported
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _break_if_stale(path, stale_after_s, host)
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(asdict(info), handle)
        except BaseException:
            path.unlink(missing_ok=True)  # a full disk: leave no empty lock behind
            raise
        return FileLock(path, info, heartbeat_s)
    raise LockedError(path, read_lock(path))


def _break_if_stale(path: Path, stale_after_s: float, host: str) -> None:
    holder = read_lock(path)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return  # released meanwhile: just retry
    if not is_stale(holder, mtime, time.time(), stale_after_s, host):
        raise LockedError(path, holder)
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run broke it first
    moved = read_lock(aside)
    if moved != holder:
        # Between our read and our rename another run broke the stale lock and took a fresh one,
        # which we just moved: put it back (link fails if yet another lock appeared) and yield.
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        raise LockedError(path, moved)
    aside.unlink(missing_ok=True)
