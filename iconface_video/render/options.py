"""The user's controls of a render (``RenderOptions``) and how they read: positions, device, precision."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iconface_video.errors import UserError
from iconface_video.io.probe import VideoInfo, probe
from iconface_video.io.reader import frame_timestamps
from iconface_video.io.encoding import EncodeSettings

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RenderOptions:
    """Every user control of a render; each one changes the output (tests prove it).

    ``strength`` in [0, 1]: 0 keeps the input, 1 pastes the full restoration.
    ``temporal`` in [0, 1]: smoothing of alignment, masks and colour correction within a track.
    ``no_refs``: restore without any reference (the core's structure-only mode). Photos of a
    person (``--refs``) are the analysis's business: they become references there.
    ``identities``: ids or names to restore (None = everyone).
    ``start``/``end``: restore only this range: seconds (``"12.5"``, ``"1:02.5"``) or a frame
    number with an ``f`` suffix (``"300f"``); ``end`` is exclusive. Frames outside stay untouched.
    ``codec``/``crf``/``preset``/``pix_fmt``/``segment_frames``: passed to the encoder.
    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...; ``precision``: auto, fp32, bf16, fp16.
    ``checkpoint``: a core checkpoint (None = the embedded one). ``preview``: the output shows
    input | restored side by side. ``dry_run``: plan and report only, write nothing.
    ``min_eye_px``: faces with eyes closer than this are left alone (None = from the core's smallest crop side).
    ``deinterlace``: ``auto`` (deinterlace flagged sources) or ``refuse``.
    ``models_dir``: where downloaded weights are (the mask parser, the guard's embedder, an
    external identity encoder); None: ``$ICONFACE_MODELS`` or the default store.
    ``identity_guard``: the largest drop in identity similarity (cosine, to the track's
    references, or to the face itself without references) a restoration may cause; a face
    whose restoration drops it more is restored less, or left as it was. 0 turns it off.
    """

    strength: float = 1.0
    temporal: float = 0.5
    no_refs: bool = False
    identities: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    segment_frames: int = 500
    device: str = "auto"
    batch_size: int = 16
    precision: str = "auto"
    checkpoint: str | None = None
    steps: int | None = None  # None: the checkpoint's own step count
    seed: int = 0
    preview: bool = False
    dry_run: bool = False
    min_eye_px: float | None = None
    deinterlace: str = "auto"
    overwrite: bool = False
    html: bool = True
    identity_guard: float = 0.05
    models_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise UserError(f"--strength {self.strength} is out of range; use a value from 0 (input) to 1 (fully restored)")
        if not 0.0 <= self.temporal <= 1.0:
            raise UserError(f"--temporal {self.temporal} is out of range; use a value from 0 (off) to 1 (strongest)")
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.deinterlace not in ("auto", "refuse"):
            raise UserError("--deinterlace: choose auto or refuse")
        if self.steps is not None and self.steps < 1:
            raise UserError("--steps must be at least 1")
        if not 0.0 <= self.identity_guard <= 1.0:
            raise UserError(f"--identity-guard {self.identity_guard} is out of range; use a similarity margin "
                            "from 0 (off) to 1, e.g. 0.05")

    def encode_settings(self) -> EncodeSettings:
        return EncodeSettings(codec=self.codec, crf=self.crf, preset=self.preset, pix_fmt=self.pix_fmt,
                              segment_frames=self.segment_frames)

    def output_key(self) -> dict:
        """The options that decide the output's pixels (names the encoder's work folder)."""
        keep = ("strength", "temporal", "no_refs", "identities", "start", "end", "checkpoint", "steps",
                "seed", "preview", "min_eye_px", "deinterlace", "precision", "identity_guard")
        return {k: getattr(self, k) for k in keep}


_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


def parse_position(text: str | None, timestamps: list[int], time_base, *, option: str) -> int | None:
    """A frame index from ``"300f"`` (a frame), ``"12.5"``/``"12.5s"`` or ``"1:02.5"`` (a time).

    A time maps to the first frame shown at or after it (the source's own timestamps, so a
    variable-frame-rate video is handled exactly).
    """
    if text is None:
        return None
    value = text.strip().lower()
    try:
        if value.endswith("f"):
            frame = int(value[:-1])
            if frame < 0:
                raise ValueError
            return min(frame, len(timestamps))
        match = _CLOCK.match(value)
        if match:
            hours, minutes, seconds = match.groups()
            if (hours is not None and int(minutes) >= 60) or float(seconds) >= 60:
                raise ValueError  # 1:99:99 is a typo, not 2:40:39
            seconds_total = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
        else:
            seconds_total = float(value.removesuffix("s"))
        if seconds_total < 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{option} {text!r}: give seconds (12.5, 1:02.5) or a frame number with f (300f)") from None
    if not timestamps:
        return 0
    first = timestamps[0]
    times = (np.asarray(timestamps, dtype=np.float64) - first) * float(time_base)
    return int(np.searchsorted(times, seconds_total - 1e-6))


def frame_range(input_path: str | os.PathLike, start: str | None, end: str | None,
                info: VideoInfo | None = None) -> tuple[int, int | None]:
    """``--start``/``--end`` as frame indices ``(start, end or None)`` of ``input_path``.

    The main command can analyse just this range (``AnalyzeSettings(start=..., end=...)``).
    """
    if start is None and end is None:
        return 0, None
    info = info or probe(input_path)
    stamps = frame_timestamps(input_path)
    first = parse_position(start, stamps, info.video.time_base, option="--start") or 0
    last = parse_position(end, stamps, info.video.time_base, option="--end")
    if last is not None and last <= first:
        raise UserError(f"--end ({end}) must come after --start ({start or 0})")
    return first, last


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available to torch here; use --device cpu")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def default_output_for(input_path: Path, preview: bool) -> Path:
    tag = "preview" if preview else "restored"
    return input_path.with_name(f"{input_path.stem}.{tag}{input_path.suffix or '.mp4'}")
