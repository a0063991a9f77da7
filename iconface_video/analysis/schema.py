"""The analysis file: a versioned JSON document between ``analyze`` and ``render``.

``save_analysis`` writes it atomically; ``load_analysis`` validates it (``validation``: JSON
Schema for shape, then values and cross-references) and builds an ``Analysis``. The format and
what a user may edit are documented in ``docs/analysis-file.md``.

``Analysis`` is what the render stage reads: shots, tracks (with per-frame ``FaceObs``),
identities, the references of each identity (crop PNG, its 5 points, reliability, embedding),
and ``faces_at(frame_index)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from iconface_video.analysis.validation import AnalysisFileError, problems_message, validate
from iconface_video.errors import InputError
from iconface_video.files import write_text_atomic
from iconface_video.imageio import imread
from iconface_video.types import FaceObs, Identity, Reference, ReliabilityTerms, Shot, Track


@dataclass(frozen=True, eq=False)
class HarvestedReference:
    """A reference as the render stage needs it.

    ``reference`` carries identity, track (-1 for a user photo), frame (-1 for a photo), box and
    5 points in the stored frame, reliability and its terms; ``crop_path`` is the loose crop PNG,
    ``crop_kps5`` float32[5, 2] its 5 points in crop pixels (align the crop with these to any
    template and size); ``embedding`` float32[D] is the identity encoder's unnormalised feature.
    """

    reference: Reference
    crop_path: Path
    crop_kps5: np.ndarray
    embedding: np.ndarray | None = None

    def load_crop(self) -> np.ndarray:
        """The crop as ``uint8[H, W, 3]`` RGB."""
        image = imread(str(self.crop_path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"{self.crop_path}: reference crop is missing or unreadable; rerun `iconface-video analyze`")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, eq=False)
class RejectedTrack:
    """A track kept out of the identities (and so out of the render), and why, e.g. ``"short:
    4 frames"``. A user promotes it by giving it an ``identity`` in the file."""

    track: Track
    reason: str


@dataclass(frozen=True, eq=False)
class Analysis:
    """A loaded (or freshly made) analysis; see the module docstring."""

    version: int
    video: dict
    shots: tuple[Shot, ...]
    tracks: tuple[Track, ...]
    identities: tuple[Identity, ...]
    references: tuple[HarvestedReference, ...]
    settings: dict
    track_embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> unit float32[D]
    obs_reliability: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> float32[N], NaN: not scored
    # identity id -> did a second detector confirm its best frames show a face (None: not checked)
    face_verified: dict[int, bool | None] = field(default_factory=dict)
    path: Path | None = None
    rejected: tuple[RejectedTrack, ...] = ()  # their embeddings and reliabilities are in the dicts above

    def track(self, track_id: int) -> Track:
        return self._tracks_by_id[track_id]

    def identity(self, identity_id: int) -> Identity:
        return self._identities_by_id[identity_id]

    def references_for(self, identity_id: int) -> tuple[HarvestedReference, ...]:
        """The identity's references, most reliable first."""
        refs = [r for r in self.references if r.reference.identity == identity_id]
        return tuple(sorted(refs, key=lambda r: -r.reference.reliability))

    def faces_at(self, frame_index: int) -> list[tuple[Track, FaceObs]]:
        """Every (track, observation) present in frame ``frame_index``."""
        return [(self._tracks_by_id[t], self._tracks_by_id[t].obs[i]) for t, i in self._by_frame.get(frame_index, ())]

    def shot_of(self, frame_index: int) -> Shot | None:
        for shot in self.shots:
            if shot.start <= frame_index <= shot.end:
                return shot
        return None

    @cached_property
    def _tracks_by_id(self) -> dict[int, Track]:
        return {t.id: t for t in self.tracks}

    @cached_property
    def _identities_by_id(self) -> dict[int, Identity]:
        return {i.id: i for i in self.identities}

    @cached_property
    def _by_frame(self) -> dict[int, list[tuple[int, int]]]:
        index: dict[int, list[tuple[int, int]]] = {}
        for track in self.tracks:
            for i, obs in enumerate(track.obs):
                index.setdefault(obs.frame_index, []).append((track.id, i))
        return index


def _resolve_same_as(identities: dict[int, dict]) -> tuple[dict[int, int], list[str]]:
    """identity id -> the id it finally merges into (following ``same_as`` chains)."""
    final, problems = {}, []
    for start in identities:
        seen, current = [start], start
        while identities[current].get("same_as") is not None:
            current = identities[current]["same_as"]
            if current in seen:
                problems.append(f"identities: same_as forms a loop ({' -> '.join(map(str, seen + [current]))})")
                break
            seen.append(current)
        final[start] = current
    return final, problems


# --- loading -----------------------------------------------------------------------------------

def _vector(value: list[float] | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, np.float32)


def _terms(value: dict[str, float] | None) -> ReliabilityTerms | None:
    """A reference's terms; None when absent or missing a term (a term added later, with a
    default, such as ``occlusion``, may be absent: files written before it still have terms)."""
    if value is None:
        return None
    fields = dataclasses.fields(ReliabilityTerms)
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    if not all(k in value for k in required):
        return None
    return ReliabilityTerms(**{f.name: float(value[f.name]) for f in fields if f.name in value})


def analysis_from_json(data: dict, base: Path, path: Path | None = None) -> Analysis:
    """Build an ``Analysis`` from validated JSON; crops resolve relative to ``base``; ``same_as`` merges apply."""
    identities_json = {i["id"]: i for i in data["identities"]}
    final, problems = _resolve_same_as(identities_json)
    if problems:
        raise AnalysisFileError(problems_message(path, problems))
    shots = tuple(Shot(s["index"], s["start"], s["end"], float(s["start_time"]), float(s["end_time"]), s["transition"])
                  for s in data["shots"])
    tracks, embeddings, reliabilities, rejected = [], {}, {}, []
    # A rejected track the user gave an identity is promoted: it becomes an ordinary track.
    for t in data["tracks"] + data.get("rejected_tracks", []):
        identity = None if t["identity"] is None else final[t["identity"]]
        obs = tuple(FaceObs(o["frame"], tuple(float(v) for v in o["box"]), float(o["score"]),
                            np.asarray(o["kps5"], np.float32), None, bool(o.get("interpolated", False)))
                    for o in t["obs"])
        track = Track(t["id"], t["shot"], obs, identity)
        if "reason" in t and identity is None:
            rejected.append(RejectedTrack(track, t["reason"]))
        else:
            tracks.append(track)
        if t.get("embedding") is not None:
            embeddings[t["id"]] = _vector(t["embedding"])
        scores = [o.get("reliability") for o in t["obs"]]
        if any(v is not None for v in scores):
            reliabilities[t["id"]] = np.array([np.nan if v is None else v for v in scores], np.float32)
    members: dict[int, list[int]] = {}
    for t in tracks:
        if t.identity is not None:
            members.setdefault(t.identity, []).append(t.id)
    identities, verified = [], {}
    for identity_id, item in identities_json.items():
        if final[identity_id] != identity_id:
            continue  # merged into another identity
        names = [identities_json[i].get("name") for i in identities_json if final[i] == identity_id]
        name = item.get("name") or next((n for n in names if n), None)
        identities.append(Identity(identity_id, tuple(members.get(identity_id, ())), _vector(item.get("centroid")), name))
        flags = [identities_json[i].get("face_verified") for i in identities_json if final[i] == identity_id]
        verified[identity_id] = True if True in flags else (False if False in flags else None)
    references = []
    for r in data["references"]:
        terms = _terms(r.get("terms"))
        reference = Reference(
            identity=final[r["identity"]],
            track=-1 if r.get("track") is None else int(r["track"]),
            frame_index=-1 if r.get("frame") is None else int(r["frame"]),
            box=tuple(float(v) for v in (r.get("box") or (0, 0, 0, 0))),
            kps5=tuple((float(x), float(y)) for x, y in (r.get("kps5") or r["crop_kps5"])),
            reliability=float(r["reliability"]),
            terms=terms,
            source=r.get("source", "video"),
        )
        references.append(HarvestedReference(reference, (base / r["crop"]).resolve(),
                                              np.asarray(r["crop_kps5"], np.float32), _vector(r.get("embedding"))))
    return Analysis(data["version"], data["video"], shots, tuple(tracks), tuple(identities), tuple(references),
                    data["settings"], embeddings, reliabilities, verified, path, tuple(rejected))



def load_analysis(path: str | os.PathLike) -> Analysis:
    """Read, validate and build the analysis at ``path`` (crop paths are relative to its folder)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such analysis file (make one with `iconface-video analyze VIDEO`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnalysisFileError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                                "fix the file or make a new one with `iconface-video analyze VIDEO`") from None
    except UnicodeDecodeError:
        raise AnalysisFileError(f"{path}: not a text file; expected the JSON written by `iconface-video analyze`") from None
    validate(data, path)
    return analysis_from_json(data, path.parent, path)


# --- saving ------------------------------------------------------------------------------------

def _round_list(values, digits: int) -> list:
    return [round(float(v), digits) for v in np.asarray(values).ravel()]


def _score(values: np.ndarray | None, n: int) -> float | None:
    if values is None or not np.isfinite(values[n]):
        return None
    return round(float(values[n]), 4)


def analysis_to_json(analysis: Analysis, base: Path) -> dict:
    """The JSON document for ``analysis``; crop paths are written relative to ``base``."""
    def rel(p: Path) -> str:
        try:
            return Path(os.path.relpath(p, base)).as_posix()
        except ValueError:  # another drive on Windows
            return str(p)

    def track_json(t: Track) -> dict:
        return {
            "id": t.id, "shot": t.shot, "identity": t.identity,
            "embedding": None if t.id not in analysis.track_embeddings else _round_list(analysis.track_embeddings[t.id], 6),
            "obs": [{"frame": o.frame_index, "box": _round_list(o.box, 2), "score": round(float(o.score), 4),
                     "kps5": np.round(np.asarray(o.kps5, np.float64), 2).tolist(), "interpolated": bool(o.interpolated),
                     "reliability": _score(analysis.obs_reliability.get(t.id), n)}
                    for n, o in enumerate(t.obs)],
        }

    return {
        "version": analysis.version,
        "video": analysis.video,
        "shots": [{"index": s.index, "start": s.start, "end": s.end, "start_time": round(s.start_time, 6),
                   "end_time": round(s.end_time, 6), "transition": s.transition} for s in analysis.shots],
        "tracks": [track_json(t) for t in analysis.tracks],
        "rejected_tracks": [{**track_json(r.track), "reason": r.reason} for r in analysis.rejected],
        "identities": [{"id": i.id, "name": i.name, "face_verified": analysis.face_verified.get(i.id),
                        "centroid": None if i.centroid is None else _round_list(i.centroid, 6)}
                       for i in analysis.identities],
        "references": [{
            "identity": r.reference.identity,
            "track": None if r.reference.track < 0 else r.reference.track,
            "frame": None if r.reference.frame_index < 0 else r.reference.frame_index,
            "box": _round_list(r.reference.box, 2),
            "kps5": np.round(np.asarray(r.reference.kps5, np.float64), 2).tolist(),
            "crop": rel(r.crop_path),
            "crop_kps5": np.round(np.asarray(r.crop_kps5, np.float64), 2).tolist(),
            "reliability": round(float(r.reference.reliability), 4),
            "terms": None if r.reference.terms is None else {
                k: round(float(getattr(r.reference.terms, k)), 4) for k in ReliabilityTerms.__dataclass_fields__},
            "embedding": None if r.embedding is None else _round_list(r.embedding, 6),
            "source": r.reference.source,
        } for r in analysis.references],
        "settings": analysis.settings,
    }


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def dumps_readable(data: dict) -> str:
    """JSON with one shot, identity, reference or observation per line: easy to read, edit and diff."""
    lines = ["{"]
    keys = list(data)
    for n, key in enumerate(keys):
        value, comma = data[key], "," if n + 1 < len(keys) else ""
        if isinstance(value, list):
            lines.append(f"{json.dumps(key)}: [")
            for i, item in enumerate(value):
                end = "," if i + 1 < len(value) else ""
                if isinstance(item, dict) and isinstance(item.get("obs"), list):
                    head = {k: v for k, v in item.items() if k != "obs"}
                    lines.append("  " + _compact(head)[:-1] + ', "obs": [')
                    lines += [f"    {_compact(o)}" + ("," if j + 1 < len(item["obs"]) else "") for j, o in enumerate(item["obs"])]
                    lines.append(f"  ]}}{end}")
                else:
                    lines.append(f"  {_compact(item)}{end}")
            lines.append(f"]{comma}")
        else:
            body = json.dumps(value, ensure_ascii=False, indent=2)
            lines.append(f"{json.dumps(key)}: {body}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_analysis(analysis: Analysis, path: str | os.PathLike) -> None:
    """Validate and write ``analysis`` to ``path`` atomically (crop paths stored relative to its folder)."""
    path = Path(path)
    data = analysis_to_json(analysis, path.parent.resolve())
    validate(data, path)
    write_text_atomic(dumps_readable(data), path)
