"""What a batch run is made of: its job (``JobSpec``), its own options, the work items handed to
workers, their results, the messages backends report, and the run's summary.

Work items:

- ``file``: the whole input through ``iconface_video.pipeline.restore_file``, analysis then
  render (exactly what the main command does, so a batch output equals a single run's frame
  for frame);
- ``analyze`` then ``segments`` (``--split-shots``): analyse the whole file once, then restore
  and encode groups of the render's segments (which start at shot starts) as independent items
  against that analysis; the driver joins them when the last one is in
  (``iconface_video.batch.split``).

Imports nothing heavy: worker processes load this before they set their device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from iconface_video import locks

if TYPE_CHECKING:
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.render.options import RenderOptions

ItemKind = Literal["file", "analyze", "segments"]


@dataclass(frozen=True)
class JobSpec:
    """What every file of a batch goes through: the main command's options (``options``:
    restoration and encoding; ``analyze``: the analysis, with the ``--refs`` photos)."""

    options: RenderOptions
    analyze: AnalyzeSettings


@dataclass(frozen=True)
class BatchOptions:
    """What a batch run does besides its inputs and job."""

    out_dir: Path
    split_shots: bool = False
    min_task_frames: int = 250  # split runs: frames per task at least
    overwrite: bool = False  # replace outputs this batch did not make
    retry_failed: bool = True
    stale_lock_s: float = locks.DEFAULT_STALE_AFTER_S
    heartbeat_s: float = locks.DEFAULT_HEARTBEAT_S


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


# What a backend reports: an item started on a worker, a progress event of a running item (one
# ``Progress`` JSON line as a dict), or an item's end.
Message = (tuple[Literal["start"], WorkItem, str] | tuple[Literal["event"], WorkItem, str, dict[str, Any]]
           | tuple[Literal["end"], ItemResult])


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
