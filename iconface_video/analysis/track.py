"""Face tracks within a shot: detections linked frame to frame, gaps filled by interpolation.

Each detected frame, live tracks and new detections are matched with the Hungarian method
(``scipy.optimize.linear_sum_assignment``) on a cost that mixes box overlap with the track's
last box and identity-embedding similarity with the track's mean embedding. Pairs that neither
overlap nor look alike (or look clearly different) are forbidden. A track that finds its face
again after a few missed frames (occlusion, a missed detection, or frames skipped by
``--detect-every``) gets interpolated boxes and landmarks for the gap (``FaceObs.interpolated``).
A track ends after ``max_miss`` frames without a match, and every track ends at a cut.

Finished tracks are kept compactly (``TrackRecord``: a few numpy arrays per track, no frames and
no per-frame embeddings), so memory grows with the number of observations, never with pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from iconface_video.types import FaceObs, Track

FORBIDDEN = 1e6  # cost of a pair that must not be matched


@dataclass(frozen=True)
class TrackSettings:
    """Association thresholds. Similarities are cosines of identity embeddings."""

    min_iou: float = 0.2  # boxes this overlapping may match on overlap alone
    max_center_shift: float = 0.6  # ... or centres this close (in face widths per missed frame)
    same_similarity: float = 0.90  # ... if the faces also look alike at least this much
    reject_similarity: float = 0.80  # faces less alike than this never match, overlap or not
    iou_weight: float = 0.5  # cost = 1 - (w * IoU + (1 - w) * similarity score)
    max_miss: int = 12  # frames a track may go without a detection before it ends
    min_detections: int = 3  # shorter tracks are dropped as false detections


@dataclass(frozen=True, eq=False)
class TrackRecord:
    """A finished track, stored compactly; ``to_track`` gives the shared ``Track`` type.

    ``frames`` int32[N], ``boxes`` float32[N, 4], ``scores`` float32[N], ``kps5`` float32[N, 5, 2],
    ``interpolated`` bool[N]; ``embedding`` float32[D] is the unit mean of its detections'
    embeddings (None when the embedder gave none).
    """

    id: int
    shot: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    kps5: np.ndarray
    interpolated: np.ndarray
    embedding: np.ndarray | None
    reliability: np.ndarray | None = None  # float32[N] per observation (NaN where not scored)

    @property
    def detections(self) -> int:
        return int((~self.interpolated).sum())

    def to_track(self, identity: int | None = None) -> Track:
        obs = tuple(
            FaceObs(int(f), tuple(float(v) for v in b), float(s), k.copy(), None, bool(i))
            for f, b, s, k, i in zip(self.frames, self.boxes, self.scores, self.kps5, self.interpolated)
        )
        return Track(id=self.id, shot=self.shot, obs=obs, identity=identity)

    @classmethod
    def from_obs(cls, track_id: int, shot: int, obs: list[FaceObs], embedding: np.ndarray | None) -> TrackRecord:
        return cls(
            id=track_id,
            shot=shot,
            frames=np.array([o.frame_index for o in obs], np.int32),
            boxes=np.array([o.box for o in obs], np.float32).reshape(-1, 4),
            scores=np.array([o.score for o in obs], np.float32),
            kps5=np.array([o.kps5 for o in obs], np.float32).reshape(-1, 5, 2),
            interpolated=np.array([o.interpolated for o in obs], bool),
            embedding=embedding,
        )


@dataclass(eq=False)
class _Live:
    """A track still being followed (mutable; only the tracker touches it)."""

    id: int
    shot: int
    obs: list[FaceObs]
    last: FaceObs  # the last *detected* observation
    embedding_sum: np.ndarray | None = None
    detections: int = 1

    def mean_embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None:
            return None
        return self.embedding_sum / max(float(np.linalg.norm(self.embedding_sum)), 1e-12)

    def add_embedding(self, embedding: np.ndarray | None) -> None:
        if embedding is None:
            return
        unit = unit_vector(embedding)
        self.embedding_sum = unit if self.embedding_sum is None else self.embedding_sum + unit


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """``float32[D]`` scaled to length 1 (zero stays zero)."""
    vector = np.asarray(vector, np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` float[N, 4] and ``b`` float[M, 4] (x0, y0, x1, y1) -> float[N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def interpolate(a: FaceObs, b: FaceObs, frame_index: int) -> FaceObs:
    """The face between detections ``a`` and ``b`` at ``frame_index`` (linear in box and points)."""
    t = (frame_index - a.frame_index) / (b.frame_index - a.frame_index)
    box = tuple(float((1 - t) * p + t * q) for p, q in zip(a.box, b.box))
    kps = ((1 - t) * a.kps5 + t * b.kps5).astype(np.float32)
    return FaceObs(frame_index, box, float(min(a.score, b.score)), kps, None, True)


def association_cost(live: list[_Live], detections: list[FaceObs], frame_index: int,
                     settings: TrackSettings) -> np.ndarray:
    """Cost ``float64[T, D]`` of giving detection d to live track t; ``FORBIDDEN`` where not allowed."""
    if not live or not detections:
        return np.zeros((len(live), len(detections)))
    iou = box_iou(np.array([t.last.box for t in live]), np.array([d.box for d in detections]))
    cost = np.full(iou.shape, FORBIDDEN)
    for i, track in enumerate(live):
        mean = track.mean_embedding()
        gap = max(1, frame_index - track.last.frame_index)
        x0, y0, x1, y1 = track.last.box
        width = max(x1 - x0, 1.0)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        for j, det in enumerate(detections):
            similarity = None
            if mean is not None and det.embedding is not None:
                similarity = float(mean @ unit_vector(det.embedding))
                if similarity < settings.reject_similarity:
                    continue
            dx0, dy0, dx1, dy1 = det.box
            shift = np.linalg.norm(np.array([(dx0 + dx1) / 2, (dy0 + dy1) / 2]) - centre) / width
            overlaps = iou[i, j] >= settings.min_iou
            near_and_alike = (similarity is not None and similarity >= settings.same_similarity
                              and shift <= settings.max_center_shift * gap)
            if not (overlaps or near_and_alike):
                continue
            alike = 0.5 if similarity is None else float(np.clip(
                (similarity - settings.reject_similarity) / (1 - settings.reject_similarity), 0, 1))
            cost[i, j] = 1.0 - (settings.iou_weight * iou[i, j] + (1 - settings.iou_weight) * alike)
    return cost


class Tracker:
    """Streaming tracker over one video: call ``step`` for every frame in order.

    ``step`` returns the (track id, detection) pairs made on that frame (new tracks included) so
    the caller can score them; finished tracks are collected with ``pop_finished``.
    """

    def __init__(self, settings: TrackSettings = TrackSettings(), next_id: int = 0) -> None:
        self.settings = settings
        self.next_id = next_id
        self._live: list[_Live] = []
        self._finished: list[TrackRecord] = []
        self._dropped: list[int] = []
        self._shot: int | None = None

    def step(self, frame_index: int, shot: int, detections: list[FaceObs] | None) -> list[tuple[int, FaceObs]]:
        """Advance to ``frame_index`` of ``shot``; ``detections`` None means the detector skipped it."""
        if shot != self._shot:
            self.end_shot()
            self._shot = shot
        for track in [t for t in self._live if frame_index - t.last.frame_index > self.settings.max_miss]:
            self._finish(track)
        if detections is None:
            return []
        cost = association_cost(self._live, detections, frame_index, self.settings)
        matched: list[tuple[int, FaceObs]] = []
        taken: set[int] = set()
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] >= FORBIDDEN:
                    continue
                track, det = self._live[i], detections[j]
                track.obs.extend(interpolate(track.last, det, f) for f in range(track.last.frame_index + 1, frame_index))
                track.obs.append(det)
                track.last = det
                track.detections += 1
                track.add_embedding(det.embedding)
                taken.add(j)
                matched.append((track.id, det))
        for j, det in enumerate(detections):
            if j in taken:
                continue
            track = _Live(self.next_id, shot, [det], det)
            track.add_embedding(det.embedding)
            self.next_id += 1
            self._live.append(track)
            matched.append((track.id, det))
        return matched

    def end_shot(self) -> None:
        """Close every live track (a cut, or the end of the video)."""
        for track in list(self._live):
            self._finish(track)

    def live_boxes(self, shot: int) -> np.ndarray:
        """Last detected boxes ``float32[T, 4]`` of the tracks live in ``shot`` (none after a cut)."""
        boxes = [t.last.box for t in self._live if t.shot == shot]
        return np.array(boxes, np.float32).reshape(-1, 4)

    def predicted_boxes(self, shot: int, frame_index: int) -> np.ndarray:
        """Where each live track of ``shot`` is expected at ``frame_index``: its last detected box
        moved on at the speed between its last two detections. ``float32[T, 4]``."""
        boxes = []
        for track in self._live:
            if track.shot != shot:
                continue
            last = np.asarray(track.last.box, np.float32)
            previous = next((o for o in reversed(track.obs[:-1]) if not o.interpolated), None)
            velocity = np.zeros(4, np.float32)
            if previous is not None and previous.frame_index < track.last.frame_index:
                velocity = (last - np.asarray(previous.box, np.float32)) / (track.last.frame_index - previous.frame_index)
            boxes.append(last + velocity * (frame_index - track.last.frame_index))
        return np.array(boxes, np.float32).reshape(-1, 4)

    def pop_finished(self) -> tuple[list[TrackRecord], list[int]]:
        """Tracks finished since the last call: (kept records oldest first, ids dropped as too short)."""
        finished, dropped = self._finished, self._dropped
        self._finished, self._dropped = [], []
        return finished, dropped

    def _finish(self, track: _Live) -> None:
        self._live.remove(track)
        if track.detections < self.settings.min_detections:
            self._dropped.append(track.id)
            return
        self._finished.append(TrackRecord.from_obs(track.id, track.shot, track.obs, track.mean_embedding()))

    # --- checkpointing -------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON-able live state (finished tracks are the caller's, via ``pop_finished``)."""
        return {
            "next_id": self.next_id,
            "shot": self._shot,
            "live": [
                {"id": t.id, "shot": t.shot, "detections": t.detections,
                 "embedding_sum": None if t.embedding_sum is None else t.embedding_sum.tolist(),
                 "obs": [obs_to_json(o) for o in t.obs],
                 "last_embedding": None if t.last.embedding is None else np.asarray(t.last.embedding).tolist()}
                for t in self._live
            ],
        }

    @classmethod
    def from_state(cls, state: dict, settings: TrackSettings = TrackSettings()) -> Tracker:
        tracker = cls(settings, next_id=state["next_id"])
        tracker._shot = state["shot"]
        for item in state["live"]:
            obs = [obs_from_json(o) for o in item["obs"]]
            last_index = max(i for i, o in enumerate(obs) if not o.interpolated)
            last = obs[last_index]
            if item["last_embedding"] is not None:
                last = FaceObs(last.frame_index, last.box, last.score, last.kps5,
                               np.asarray(item["last_embedding"], np.float32), False)
                obs[last_index] = last
            embedding_sum = None if item["embedding_sum"] is None else np.asarray(item["embedding_sum"], np.float32)
            tracker._live.append(_Live(item["id"], item["shot"], obs, last, embedding_sum, item["detections"]))
        return tracker


def obs_to_json(obs: FaceObs) -> dict:
    """One observation as the analysis file stores it (no embedding: those live per track/reference)."""
    return {
        "frame": int(obs.frame_index),
        "box": [round(float(v), 2) for v in obs.box],
        "score": round(float(obs.score), 4),
        "kps5": [[round(float(x), 2), round(float(y), 2)] for x, y in np.asarray(obs.kps5)],
        "interpolated": bool(obs.interpolated),
    }


def obs_from_json(data: dict) -> FaceObs:
    return FaceObs(int(data["frame"]), tuple(float(v) for v in data["box"]), float(data["score"]),
                   np.asarray(data["kps5"], np.float32), None, bool(data.get("interpolated", False)))
