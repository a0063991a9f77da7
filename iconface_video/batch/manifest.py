"""The batch manifest: one JSON file in the output folder with every input's state.

``<output folder>/iconface-batch.json``::

    {"version": 1, "updated": 1764150000.0,
     "files": {"e01.restored.mkv": {"input": "/abs/season1/e01.mkv", "output": "/abs/restored/e01.restored.mkv",
                                     "state": "done", "reason": null, "attempts": 1, "settings": {...},
                                     "models": {...}, "worker": "cpu:0 pid 4242 on host", "started": ...,
                                     "finished": ..., "frames": 240, "seconds": 12.5}}}

Entries are keyed by the output's file name, which is unique within the output folder. States:
``pending`` (planned, never started), ``running`` (a worker took it; after a crash this stays, and
the next run redoes it), ``done``, ``failed`` (``reason`` says why, one line).

Every write is a read-modify-write of only the entries it changes, under an advisory ``flock``
on a sidecar file, and lands by atomic rename: two batch runs sharing an output folder never
lose each other's updates, and a ``kill -9`` mid-write leaves the previous manifest intact.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from iconface_video.files import write_text_atomic

try:  # POSIX; on Windows the manifest is still written atomically, only not cross-run locked
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]

MANIFEST_NAME = "iconface-batch.json"
MANIFEST_VERSION = 1

State = Literal["pending", "running", "done", "failed"]
STATES: tuple[State, ...] = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class FileRecord:
    """One input's entry in the manifest (see the module docstring for the fields' meaning)."""

    input: str
    output: str
    state: State = "pending"
    reason: str | None = None
    attempts: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    started: float | None = None
    finished: float | None = None
    frames: int | None = None
    seconds: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # newer writers may add fields
        if values.get("state") not in STATES:
            values["state"] = "pending"
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def manifest_path(out_dir: Path) -> Path:
    return out_dir / MANIFEST_NAME


def read_manifest(path: Path) -> dict[str, FileRecord]:
    """All entries of the manifest at ``path`` (empty if it does not exist yet).

    A manifest that is not valid JSON raises ``ValueError`` naming the file: it is never
    silently replaced, because it is the only record of what was done.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        return {key: FileRecord.from_json(value) for key, value in data["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a valid batch manifest ({error}); move it aside to start afresh") from error


def update_manifest(path: Path, records: Mapping[str, FileRecord]) -> dict[str, FileRecord]:
    """Write ``records`` (key -> new entry) into the manifest; returns the whole manifest after."""
    with _exclusive(path):
        current = read_manifest(path)
        current.update(records)
        _write_atomic(path, current)
        return current


def set_state(path: Path, key: str, state: State, **changes: Any) -> FileRecord:
    """Change one entry's state (and any other fields) and write it; returns the new entry."""
    with _exclusive(path):
        current = read_manifest(path)
        record = replace(current[key], state=state, **changes)
        current[key] = record
        _write_atomic(path, current)
        return record


def _write_atomic(path: Path, records: Mapping[str, FileRecord]) -> None:
    data = {
        "version": MANIFEST_VERSION,
        "updated": time.time(),
        "files": {key: record.to_json() for key, record in sorted(records.items())},
    }
    write_text_atomic(json.dumps(data, indent=1), path)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``.<manifest>.lock`` (hidden beside it) for one read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
