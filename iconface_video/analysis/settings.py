"""What an analysis is asked to do (``AnalyzeSettings``), where its outputs go, and how the
settings are recorded in, and read back from, the analysis file's ``settings``."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from iconface_video import __version__
from iconface_video.analysis.harvest import HarvestSettings
from iconface_video.analysis.identify import IdentifySettings, RejectSettings
from iconface_video.analysis.shots import ShotSettings
from iconface_video.analysis.track import TrackSettings


@dataclass(frozen=True)
class AnalyzeSettings:
    """Everything that changes the analysis (saved in the file's ``settings``)."""

    detect_every: int = 1  # > 1: detect every k-th frame only, interpolating between
    # With detect_every 1, faces are found on the whole frame this often (and at each shot's
    # start) and followed from their tracks' predicted boxes in between (detectors that can).
    full_detect_s: float = 0.25
    embed_every_s: float = 0.2  # every face is embedded at least this often (and whenever tracking needs it)
    max_refs: int = 4
    detector: str = "auto"
    embedder: str = "dlib"
    models_dir: Path | None = None
    device: str = "cpu"
    refs: tuple[tuple[str, Path], ...] = ()  # (name, folder of photos)
    start: int | None = None  # first frame to analyse
    end: int | None = None  # one past the last frame to analyse
    batch: int = 8  # frames per detector call
    checkpoint_every: int = 500  # frames between checkpoints (0: never)
    contact_sheets: bool = True
    shots: ShotSettings = ShotSettings()
    tracking: TrackSettings = TrackSettings()
    identify: IdentifySettings = IdentifySettings()
    reject: RejectSettings = RejectSettings()
    harvest: HarvestSettings = HarvestSettings()
    # Orientation the detector sees (see ROTATION_MODES): "auto" decides from the faces, "tag"
    # trusts the container, "none" uses the stored frames, a number forces that many degrees.
    rotation: str = "auto"
    orientation_frames: int = 5  # "auto": frames with faces that decide the orientation
    orientation_probe_limit: int = 150  # "auto": frames tried in every orientation at most


def default_output(input_path: Path) -> Path:
    """``movie.mp4`` -> ``movie.iconface.json`` beside it."""
    return input_path.with_name(input_path.stem + ".iconface.json")


def refs_folder(output_path: Path) -> Path:
    """Where the reference crops and contact sheets go: ``movie.iconface.refs/``."""
    name = output_path.name[:-5] if output_path.name.endswith(".json") else output_path.name
    return output_path.with_name(name + ".refs")


def _plain(obj: object) -> object:
    """Dataclasses as dicts, tuples as lists, paths as strings (JSON-ready)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def settings_json(settings: AnalyzeSettings, detector_name: str, embedder_name: str, embedder_dim: int) -> dict:
    """The file's ``settings``: every field of ``settings``, plus the models that ran."""
    out = _plain(settings)
    assert isinstance(out, dict)
    out["refs"] = [{"name": n, "folder": str(p)} for n, p in settings.refs]
    out["models"] = {"detector": detector_name, "embedder": embedder_name, "embedding_dim": embedder_dim,
                     "iconface_video": __version__}
    return out


def _tuples(value: object) -> object:
    """JSON lists back to the tuples the settings hold (nested, e.g. ``HarvestSettings.weights``)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _from_plain(cls: type, data: dict) -> object:
    """Inverse of ``_plain`` for a settings dataclass: absent or unknown keys keep the defaults
    (files written before a setting existed), nested settings and tuples are rebuilt."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            values[f.name] = _from_plain(kind, value)
        elif isinstance(value, str) and Path in typing.get_args(kind):
            values[f.name] = Path(value)
        else:
            values[f.name] = _tuples(value)
    return cls(**values)


def settings_from_json(data: dict) -> AnalyzeSettings:
    """The ``AnalyzeSettings`` an analysis file was made with, from its ``settings``."""
    plain = {k: v for k, v in data.items() if k not in ("refs", "models")}
    settings = _from_plain(AnalyzeSettings, plain)
    assert isinstance(settings, AnalyzeSettings)
    refs = tuple((r["name"], Path(r["folder"])) for r in data.get("refs", ()))
    return dataclasses.replace(settings, refs=refs)
