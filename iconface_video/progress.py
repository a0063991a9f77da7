"""Progress reporting for every stage: a tqdm bar on stderr, or JSON lines on stdout.

Usage::

    progress = Progress.create(json_lines=False)     # or json_lines=True, or enabled=False
    with progress.stage("encode", total=n_frames) as bar:
        for frame in frames:
            ...
            bar.update()          # one frame done
    progress.event("done", stage="run", output="movie.restored.mp4")

JSON mode prints one object per line on stdout, each with at least ``event`` ("start",
"progress", "end" or a caller's own), ``stage``, ``frame``, ``total``, ``fps`` and ``eta_s``
(null where unknown). Progress lines are throttled to a few per second; "start" and "end"
always appear.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from tqdm import tqdm

_JSON_INTERVAL_S = 0.5


@dataclass
class StageProgress:
    """Progress of one stage; call ``update(n)`` after each ``n`` frames."""

    name: str
    total: int | None
    _json_out: IO[str] | None = None
    _bar: tqdm | None = None
    frame: int = 0
    initial: int = 0  # frames already done before this run (a resumed job), not counted in fps
    _started: float = field(default_factory=time.monotonic)
    _last_emit: float = 0.0

    def update(self, n: int = 1) -> None:
        self.frame += n
        if self._bar is not None:
            self._bar.update(n)
        if self._json_out is not None:
            now = time.monotonic()
            if now - self._last_emit >= _JSON_INTERVAL_S or self.frame == self.total:
                self._last_emit = now
                self._emit("progress")

    def fps(self) -> float | None:
        elapsed = time.monotonic() - self._started
        done = self.frame - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta_s(self) -> float | None:
        fps = self.fps()
        if self.total is None or not fps:
            return None
        return max(0.0, (self.total - self.frame) / fps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._json_out is not None:
            self._emit("end", elapsed_s=round(time.monotonic() - self._started, 3))

    def _emit(self, event: str, **extra: Any) -> None:
        fps, eta = self.fps(), self.eta_s()
        record = {
            "event": event,
            "stage": self.name,
            "frame": self.frame,
            "total": self.total,
            "fps": None if fps is None else round(fps, 2),
            "eta_s": None if eta is None else round(eta, 2),
            **extra,
        }
        _write_json(self._json_out, record)

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Progress:
    """Where progress goes: ``json_lines`` to stdout, else a bar on stderr (unless disabled)."""

    json_lines: bool = False
    enabled: bool = True
    json_out: IO[str] | None = None  # defaults to sys.stdout at the time of writing
    bar_out: IO[str] | None = None  # defaults to sys.stderr

    @classmethod
    def create(cls, json_lines: bool = False, enabled: bool = True) -> Progress:
        return cls(json_lines=json_lines, enabled=enabled)

    @classmethod
    def silent(cls) -> Progress:
        return cls(enabled=False)

    def stage(self, name: str, total: int | None = None, initial: int = 0) -> StageProgress:
        """Start reporting stage ``name`` (``total`` frames, ``initial`` already done)."""
        if not self.enabled:
            return StageProgress(name, total, frame=initial, initial=initial)
        if self.json_lines:
            stage = StageProgress(name, total, _json_out=self.json_out or sys.stdout, frame=initial, initial=initial)
            stage._emit("start")
            return stage
        bar = tqdm(total=total, initial=initial, desc=name, unit="frame", file=self.bar_out or sys.stderr,
                   dynamic_ncols=True, leave=True, smoothing=0.1)
        return StageProgress(name, total, _bar=bar, frame=initial, initial=initial)

    def event(self, event: str, stage: str, **fields: Any) -> None:
        """A one-off event (``done``, ``resume``, ``warning`` ...): JSON line, or a line on stderr."""
        if not self.enabled:
            return
        if self.json_lines:
            record = {"event": event, "stage": stage, "frame": fields.pop("frame", None),
                      "total": fields.pop("total", None), "fps": fields.pop("fps", None),
                      "eta_s": fields.pop("eta_s", None), **fields}
            _write_json(self.json_out or sys.stdout, record)
        elif event in ("warning", "resume"):
            message = fields.get("message", "")
            print(f"iconface-video: {event}: {message}", file=self.bar_out or sys.stderr)


def _write_json(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, default=str) + "\n")
    out.flush()
