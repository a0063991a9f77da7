"""The analysis file's format: its version, its JSON Schema, and every check a document must
pass before it is read (shape, values, cross-references). Each problem is one line naming the
field, e.g. ``tracks[3].identity refers to identity 9, which does not exist``; ``validate``
raises ``AnalysisFileError`` listing the first few on one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jsonschema
import numpy as np

from iconface_video.errors import InputError
from iconface_video.types import ReliabilityTerms

VERSION = 1
MAX_LISTED_PROBLEMS = 5

_NUMBER = {"type": "number"}
_POINT = {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}
_KPS5 = {"type": "array", "items": _POINT, "minItems": 5, "maxItems": 5}
_BOX = {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4}
_VECTOR = {"anyOf": [{"type": "null"}, {"type": "array", "items": _NUMBER, "minItems": 1}]}
_TERMS = {
    "type": "object",
    "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in ReliabilityTerms.__dataclass_fields__},
    "required": ["total"],
}

_TRACK = {
    "type": "object",
    "required": ["id", "shot", "identity", "obs"],
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "shot": {"type": "integer", "minimum": 0},
        "identity": {"type": ["integer", "null"]},
        "embedding": _VECTOR,
        "reason": {"type": "string"},
        "obs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["frame", "box", "score", "kps5"],
            "properties": {
                "frame": {"type": "integer", "minimum": 0},
                "box": _BOX,
                "score": _NUMBER,
                "kps5": _KPS5,
                "interpolated": {"type": "boolean"},
                "reliability": {"type": ["number", "null"]},
            },
        }},
    },
}

SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["version", "video", "shots", "tracks", "identities", "references", "settings"],
    "properties": {
        "version": {"type": "integer"},
        "video": {
            "type": "object",
            "required": ["path", "width", "height", "frame_count", "fps", "rotation"],
            "properties": {
                "path": {"type": "string"},
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
                "frame_count": {"type": "integer", "minimum": 0},
                "fps": {"type": "number", "exclusiveMinimum": 0},
                "rotation": {"type": "integer"},
                "detect_rotation": {"enum": [0, 90, 180, 270]},  # optional: files before it lack it
                "rotation_decision": {"type": "object", "properties": {"chosen": {"enum": [0, 90, 180, 270]}}},
            },
        },
        "shots": {"type": "array", "items": {
            "type": "object",
            "required": ["index", "start", "end", "start_time", "end_time", "transition"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "start": {"type": "integer", "minimum": 0},
                "end": {"type": "integer", "minimum": 0},
                "start_time": _NUMBER,
                "end_time": _NUMBER,
                "transition": {"enum": ["start", "cut", "fade", "dissolve", "wipe"]},
            },
        }},
        "tracks": {"type": "array", "items": _TRACK},
        # optional (files before it lack it): tracks kept out of identities, with the reason
        "rejected_tracks": {"type": "array", "items": {**_TRACK, "required": [*_TRACK["required"], "reason"]}},
        "identities": {"type": "array", "items": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "integer", "minimum": 0},
                "name": {"type": ["string", "null"]},
                "same_as": {"type": ["integer", "null"]},
                "centroid": _VECTOR,
                "face_verified": {"type": ["boolean", "null"]},
            },
        }},
        "references": {"type": "array", "items": {
            "type": "object",
            "required": ["identity", "crop", "crop_kps5", "reliability"],
            "properties": {
                "identity": {"type": "integer"},
                "track": {"type": ["integer", "null"]},
                "frame": {"type": ["integer", "null"]},
                "box": {"anyOf": [{"type": "null"}, _BOX]},
                "kps5": {"anyOf": [{"type": "null"}, _KPS5]},
                "crop": {"type": "string", "minLength": 1},
                "crop_kps5": _KPS5,
                "reliability": {"type": "number", "minimum": 0, "maximum": 1},
                "terms": {"anyOf": [{"type": "null"}, _TERMS]},
                "embedding": _VECTOR,
                "source": {"type": "string"},
            },
        }},
        "settings": {"type": "object"},
    },
}


class AnalysisFileError(InputError):
    """The analysis file is not valid; the message lists each problem on its own line."""




def _where(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problems(data: object) -> list[str]:
    """Shape problems, one line each, in document order."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_where(e.absolute_path)}: {e.message}" for e in errors]


def _coordinate_problems(where: str, values: object, limits: tuple[float, float] | None) -> list[str]:
    """Problems of nested ``[x, y, ...]`` pixel values: not finite, or (with ``limits`` = frame
    width, height) farther outside the frame than a whole frame. One line for the first bad value."""
    flat = np.asarray(values, np.float64).reshape(-1)
    for i, value in enumerate(flat):
        if not np.isfinite(value):
            return [f"{where}: {value} is not a finite number"]
        if limits is not None:
            side = limits[i % 2]
            if not -side <= value <= 2 * side:
                axis = "x" if i % 2 == 0 else "y"
                return [f"{where}: {axis} = {value:g} lies far outside the {limits[0]:g}x{limits[1]:g} frame"]
    return []


def value_problems(data: dict) -> list[str]:
    """Numbers a hand edit can break that the shape check passes: NaN or infinite values, and
    boxes or points far outside the frame (e.g. 1e30), each with its field's path."""
    limits = (float(data["video"]["width"]), float(data["video"]["height"]))
    problems = []
    for key in ("tracks", "rejected_tracks"):
        for i, track in enumerate(data.get(key, [])):
            for j, obs in enumerate(track["obs"]):
                where = f"{key}[{i}].obs[{j}]"
                problems += _coordinate_problems(f"{where}.box", obs["box"], limits)
                problems += _coordinate_problems(f"{where}.kps5", obs["kps5"], limits)
                problems += _coordinate_problems(f"{where}.score", [obs["score"]], None)
                if obs.get("reliability") is not None:
                    problems += _coordinate_problems(f"{where}.reliability", [obs["reliability"]], None)
            if track.get("embedding") is not None:
                problems += _coordinate_problems(f"{key}[{i}].embedding", track["embedding"], None)
    for i, identity in enumerate(data["identities"]):
        if identity.get("centroid") is not None:
            problems += _coordinate_problems(f"identities[{i}].centroid", identity["centroid"], None)
    for i, ref in enumerate(data["references"]):
        photo = ref.get("frame") is None  # a user photo's box is in photo pixels
        for name in ("box", "kps5"):
            if ref.get(name) is not None:
                problems += _coordinate_problems(f"references[{i}].{name}", ref[name], None if photo else limits)
        problems += _coordinate_problems(f"references[{i}].crop_kps5", ref["crop_kps5"], None)
        for name in ("reliability", "embedding"):
            if ref.get(name) is not None:
                problems += _coordinate_problems(f"references[{i}].{name}", np.ravel(ref[name]).tolist(), None)
        for name, value in (ref.get("terms") or {}).items():
            problems += _coordinate_problems(f"references[{i}].terms.{name}", [value], None)
    return problems


def reference_problems(data: dict) -> list[str]:
    """Cross-reference problems (ids that do not exist, duplicates, frames outside their shot)."""
    problems = []
    if data["version"] != VERSION:
        problems.append(f"version: this file is version {data['version']}, this iconface-video reads version {VERSION}")
    frame_count = data["video"]["frame_count"]
    shots = {}
    for i, shot in enumerate(data["shots"]):
        if shot["index"] in shots:
            problems.append(f"shots[{i}].index: shot {shot['index']} appears twice")
        if shot["end"] < shot["start"]:
            problems.append(f"shots[{i}]: ends (frame {shot['end']}) before it starts (frame {shot['start']})")
        shots[shot["index"]] = shot
    identities = {}
    for i, identity in enumerate(data["identities"]):
        if identity["id"] in identities:
            problems.append(f"identities[{i}].id: identity {identity['id']} appears twice")
        identities[identity["id"]] = identity
    for i, identity in enumerate(data["identities"]):
        target = identity.get("same_as")
        if target is not None and target not in identities:
            problems.append(f"identities[{i}].same_as refers to identity {target}, which does not exist")
    tracks = {}
    for key in ("tracks", "rejected_tracks"):
        for i, track in enumerate(data.get(key, [])):
            if track["id"] in tracks:
                problems.append(f"{key}[{i}].id: track {track['id']} appears twice")
            tracks[track["id"]] = track
            if track["identity"] is not None and track["identity"] not in identities:
                problems.append(f"{key}[{i}].identity refers to identity {track['identity']}, which does not exist")
            shot = shots.get(track["shot"])
            if shot is None:
                problems.append(f"{key}[{i}].shot refers to shot {track['shot']}, which does not exist")
            frames = [o["frame"] for o in track["obs"]]
            if any(b <= a for a, b in zip(frames, frames[1:])):
                problems.append(f"{key}[{i}].obs: frames must increase strictly")
            if shot is not None and (frames[0] < shot["start"] or frames[-1] > shot["end"]):
                problems.append(f"{key}[{i}].obs: frames {frames[0]}..{frames[-1]} leave shot {shot['index']} "
                                f"({shot['start']}..{shot['end']})")
            if frames[-1] >= frame_count > 0:
                problems.append(f"{key}[{i}].obs: frame {frames[-1]} is past the video's last frame {frame_count - 1}")
    for i, ref in enumerate(data["references"]):
        if ref["identity"] not in identities:
            problems.append(f"references[{i}].identity refers to identity {ref['identity']}, which does not exist")
        if ref.get("track") is not None and ref["track"] not in tracks:
            problems.append(f"references[{i}].track refers to track {ref['track']}, which does not exist")
    return problems


def problems_message(path: Path | None, problems: list[str]) -> str:
    """One line: where, how many problems, the first few, and what to do."""
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    head = f"{path}: " if path is not None else ""
    listed = "; ".join(shown) + (f"; ... and {more} more" if more else "")
    # One line, like every user error: the problems, then what to do.
    return (f"{head}not a valid analysis file ({len(problems)} problem{'s' if len(problems) != 1 else ''}: "
            f"{listed}); fix the file or make a new one with `iconface-video analyze VIDEO`")


def validate(data: object, path: Path | None = None) -> None:
    """Raise ``AnalysisFileError`` listing the problems (the first few) on one line."""
    problems = schema_problems(data)
    if not problems:
        assert isinstance(data, dict)  # the schema says so
        problems = value_problems(data) or reference_problems(data)
    if problems:
        raise AnalysisFileError(problems_message(path, problems))
