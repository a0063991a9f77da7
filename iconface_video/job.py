"""One job: one input video in, one output video out (the seam every restoring command uses).

``run_job`` is decode -> (optional ``process``) -> encode -> mux; restoration plugs in as
``process``: a function from an iterator of ``Frame`` to an iterator of ``Frame`` with the same
count, order and pts, looking ahead a bounded number of frames. ``encode_segments`` is the one
decode -> process -> encode loop over a plan's segments: ``run_job`` calls it for the whole
file, a split batch task (``batch.split``) for its own segments.

Encoding is segmented and resumable (``iconface_video.io.transcode``): after a crash or Ctrl-C,
rerunning the same command skips the finished segments. On resume ``process`` is called with
frames starting at the first unfinished segment, so a process whose state resets at segment
starts (pass shot starts as ``JobSettings.boundaries``) gives the same output as a run that
never stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from iconface_video.errors import InputError, OutputError
from iconface_video.files import check_name_fits, check_new_file, check_output_folder
from iconface_video.locks import LockedError, acquire, read_lock
from iconface_video.io.probe import VideoInfo, check_video, probe
from iconface_video.io.reader import read_frames
from iconface_video.io.transcode import (
    FrameProcess,
    SegmentPlan,
    contiguous_runs,
    encode_stream,
    finish,
    make_plan,
)
from iconface_video.io.encoding import EncodeSettings, check_container, video_codec_for
from iconface_video.io.streams import check_copyable
from iconface_video.progress import Progress
from iconface_video.types import Frame


@dataclass(frozen=True)
class JobSettings:
    """Everything that decides a job's output besides the input and ``process``.

    ``process_key`` names the frame transform (model, strength, analysis file hash ...); it is
    part of the work folder's name, so segments made by a different transform are never reused.
    ``boundaries`` are frame indices where a segment must start (shot starts).
    ``changed_range``: the ``[start, end)`` frames ``process`` may change; a frame outside it that
    cannot be decoded (damage) repeats the frame before it, with a warning, instead of stopping
    the job. None: the whole video, so any damage stops the job with a one-line error.
    ``side_by_side``: ``process`` returns frames twice the source's width (``--preview``: input |
    restored), so the encoder's width is doubled.
    """

    encode: EncodeSettings = field(default_factory=EncodeSettings)
    overwrite: bool = False
    process_key: str = ""
    boundaries: tuple[int, ...] = ()
    changed_range: tuple[int, int] | None = None
    side_by_side: bool = False


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced; ``timings`` are seconds per stage."""

    output_path: Path
    frames: int
    timings: dict[str, float]
    resumed_frames: int = 0
    warnings: tuple[str, ...] = ()


def default_output(input_path: str | os.PathLike) -> Path:
    """``movie.mp4`` -> ``movie.restored.mp4`` beside it."""
    input_path = Path(input_path)
    return input_path.with_name(f"{input_path.stem}.restored{input_path.suffix or '.mp4'}")


def check_paths(input_path: Path, output_path: Path, overwrite: bool, *, info: VideoInfo | None = None,
                codec: str | None = None) -> None:
    """Everything about the output that can be wrong, checked before any work: it is the input,
    or exists without ``overwrite``, or is a folder; its folder is missing or read-only; its
    name leaves no room for the files derived from it; its extension is not a video container
    (which also keeps it off the job's own side files: the analysis, report, work folder and
    lock); its container cannot hold ``codec`` (None: the default for the extension). With
    ``info``, a still picture as input is refused too."""
    input_path, output_path = Path(input_path), Path(output_path)
    if info is not None:
        check_video(info)
    check_new_file(output_path, overwrite=overwrite, inputs=[input_path])
    check_name_fits(output_path)
    check_container(output_path, codec or video_codec_for(output_path))
    check_output_folder(output_path)


@contextlib.contextmanager
def output_lock(output_path: str | os.PathLike) -> Iterator[None]:
    """Hold ``output_path`` for this run: a second run writing the same output stops at once with
    one line instead of mixing its segments, analysis and references with this one's.

    The lock is a file beside the output (``.OUT.iconface-lock``, see ``locks``); a lock
    left by a killed run is broken by the next. Re-entrant within a process, so the main command
    holds it across analysis and render while ``run_job`` inside it takes it again.
    """
    output_path = Path(output_path)
    path = output_path.with_name(f".{output_path.name}.iconface-lock")
    holder = read_lock(path)
    if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
        yield
        return
    try:
        lock = acquire(path, f"{output_path.name}-{os.getpid()}")
    except LockedError as error:
        who = error.holder.describe() if error.holder else "another process"
        raise OutputError(f"{output_path}: another run ({who}) is writing this output; wait for it to finish, "
                          "or choose another -o") from None
    with lock:
        yield


def run_job(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    settings: JobSettings,
    process: FrameProcess | None = None,
    progress: Progress | None = None,
) -> JobResult:
    """Decode ``input_path``, pass the frames through ``process``, encode and mux to ``output_path``.

    Raises ``InputError``/``OutputError`` (one line each) before any work for bad inputs and
    outputs. The output appears only when complete; the input is only ever read.
    """
    started = time.perf_counter()
    progress = progress or Progress.silent()
    input_path = Path(input_path)
    output_path = Path(output_path) if output_path is not None else default_output(input_path)
    info = probe(input_path)
    check_paths(input_path, output_path, settings.overwrite, info=info, codec=settings.encode.codec)
    with output_lock(output_path):
        return _run_locked_job(input_path, output_path, settings, info, process, progress, started)


def _run_locked_job(input_path: Path, output_path: Path, settings: JobSettings, info: VideoInfo,
                    process: FrameProcess | None, progress: Progress, started: float) -> JobResult:
    timings: dict[str, float] = {}
    preflight_warnings = check_copyable(input_path, output_path, info)
    plan = make_plan(input_path, output_path, settings.encode, info, settings.boundaries, settings.process_key)
    if settings.side_by_side:
        plan = replace(plan, encoding=replace(plan.encoding, width=2 * plan.encoding.width))
    timings["probe"] = time.perf_counter() - started

    pending = plan.pending()
    done_frames = plan.frame_count - sum(plan.ranges[i][1] - plan.ranges[i][0] for i in pending)
    if done_frames:
        progress.event("resume", stage="encode", frame=done_frames, total=plan.frame_count,
                       message=f"resuming: {done_frames} of {plan.frame_count} frames already encoded")

    clocks = {"decode": 0.0, "process": 0.0}
    concealed: list[int] = []
    encode_started = time.perf_counter()
    with progress.stage("encode", total=plan.frame_count, initial=done_frames) as bar:
        encode_segments(plan, pending, process, bar.update, changed_range=settings.changed_range,
                        on_conceal=concealed.append, clocks=clocks)
    stream_time = time.perf_counter() - encode_started
    # The clocks nest (process pulls from decode), so each stage's own time is a difference.
    timings["decode"] = clocks["decode"]
    timings["process"] = max(0.0, clocks["process"] - clocks["decode"]) if process else 0.0
    timings["encode"] = stream_time - (clocks["process"] if process else clocks["decode"])

    mux_started = time.perf_counter()
    with _disk_full_is_user_error(output_path):
        warnings = finish(plan, overwrite=settings.overwrite, info=info)
    if concealed:
        warnings.append(concealed_warning(concealed))
    warnings = list(dict.fromkeys([*preflight_warnings, *warnings]))
    for warning in warnings:
        progress.event("warning", stage="mux", message=warning)
    timings["mux"] = time.perf_counter() - mux_started
    timings["total"] = time.perf_counter() - started
    progress.event("done", stage="run", frame=plan.frame_count, total=plan.frame_count,
                   output=str(output_path), timings={k: round(v, 3) for k, v in timings.items()})
    return JobResult(output_path, plan.frame_count, timings, done_frames, tuple(warnings))


def encode_segments(plan: SegmentPlan, segments: Sequence[int], process: FrameProcess | None,
                    update: Callable[[int], None], *, changed_range: tuple[int, int] | None = None,
                    on_conceal: Callable[[int], None] | None = None,
                    clocks: dict[str, float] | None = None) -> None:
    """Decode, ``process`` and encode ``plan``'s ``segments`` (sorted indices), one ``process``
    call per run of consecutive segments; ``update(1)`` per frame handed to the encoder.

    ``changed_range``/``on_conceal``: damage outside the frames ``process`` changes repeats the
    frame before it (``io.reader.read_frames``). ``clocks`` (``{"decode": s, "process": s}``)
    accumulates the seconds spent producing frames at each step. A full disk becomes a one-line
    ``OutputError`` (finished segments stay for the rerun); damage that stops the job removes the
    work folder, which no rerun could finish.
    """
    clocks = clocks if clocks is not None else {"decode": 0.0, "process": 0.0}
    with _disk_full_is_user_error(plan.output_path), _damage_ends_the_work(plan.work_dir):
        for run in contiguous_runs(segments):
            start, end = plan.ranges[run[0]][0], plan.ranges[run[-1]][1]
            frames = read_frames(plan.input_path, start, end, conceal_outside=changed_range, on_conceal=on_conceal)
            frames = _timed(frames, clocks, "decode")
            if process is not None:
                frames = _timed(process(frames), clocks, "process")
            for _ in encode_stream(plan, run, _counted(frames, update)):
                pass


def concealed_warning(concealed: Sequence[int]) -> str:
    """The one-line warning for frames ``encode_segments`` repeated because damage hid them."""
    return (f"{len(concealed)} damaged frame(s) outside the restored range could not be decoded and "
            f"repeat the frame before them (first: frame {concealed[0]})")


@contextlib.contextmanager
def _disk_full_is_user_error(output_path: Path) -> Iterator[None]:
    """A full disk is the user's to fix: one line, finished segments kept for the rerun."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OutputError(f"{output_path.parent}: disk full while writing; free space and rerun to resume") from None


@contextlib.contextmanager
def _damage_ends_the_work(work_dir: Path) -> Iterator[None]:
    """A frame that cannot be decoded fails every rerun at the same place, so the segments made
    so far can never be finished: remove them rather than leave a folder no rerun can use."""
    try:
        yield
    except InputError:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise


def _timed(frames: Iterator[Frame], clocks: dict[str, float], key: str) -> Iterator[Frame]:
    """Pass ``frames`` through, adding the time spent producing each one to ``clocks[key]``."""
    iterator = iter(frames)
    while True:
        tick = time.perf_counter()
        try:
            frame = next(iterator)
        except StopIteration:
            clocks[key] += time.perf_counter() - tick
            return
        clocks[key] += time.perf_counter() - tick
        yield frame


def _counted(frames: Iterator[Frame], update: Callable[[int], None]) -> Iterator[Frame]:
    """Pass ``frames`` through, reporting each one as it is handed to the encoder."""
    for frame in frames:
        update(1)
        yield frame
