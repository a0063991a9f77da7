"""The per-frame part of the analysis (``AnalysisStream``) and its checkpoint.

One pass over the video, holding only a few frames at a time:

1. each decoded frame goes to the shot detector, which answers with a lag of one or two frames;
2. a decided frame is released once its successor is decided too (so the last frame of a shot is
   known), and queued for detection: every frame, or every k-th frame of a shot plus its last;
3. a batch of queued frames is detected and embedded, then stepped through the tracker in order;
   each matched detection is scored and offered to its track's candidate pool (crops on disk).

The detector sees frames turned upright by the container's rotation tag, unless the content
clearly says otherwise: with ``rotation="auto"`` small copies of the first detected frames are
also searched in the other orientations, and one replaces the tag only with a clear margin
across several shots (``faces.orientation.OrientationVote``), because tags are sometimes wrong (frames
stored upright but tagged -90) or lost by a re-encode, but far more often right.

Faces are detected on the whole frame at each shot's start and every ``full_detect_s`` seconds;
in between, detectors that can (``follow``) look only at each live track's predicted box.

Every ``checkpoint_every`` frames the live state goes to ``<output>.partial`` (JSON) beside the
output (``save_partial``), with the candidate crops in ``<refs folder>.partial/``; a rerun with
the same input and settings continues from there (``read_partial``).
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iconface_video.analysis.harvest import ALIGNED_SIZE, CandidatePools, aligned_crops
from iconface_video.analysis.settings import AnalyzeSettings
from iconface_video.analysis.shots import Boundary, ShotDetector
from iconface_video.analysis.track import Tracker, TrackRecord, TrackSettings, box_iou, obs_from_json, obs_to_json
from iconface_video.faces.orientation import OrientationVote, probe_view, rotation_candidates, upright_confidence
from iconface_video.files import write_text_atomic
from iconface_video.types import FaceObs, Frame

if TYPE_CHECKING:
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder


@dataclass(eq=False)
class _ShotLog:
    """Shots found so far: (start frame, transition, start time) and the last frame/time seen."""

    starts: list[tuple[int, str, float]] = field(default_factory=list)
    last_frame: int = -1
    last_time: float = 0.0
    end_times: dict[int, float] = field(default_factory=dict)  # shot -> time of its last frame


class AnalysisStream:
    """The per-frame part of the analysis; ``push`` frames in order, then ``finish``."""

    def __init__(self, detector: Detector, embedder: Embedder, tag_rotation: int, fps: float, settings: AnalyzeSettings,
                 pool_dir: Path) -> None:
        self.detector = detector
        self.embedder = embedder
        self.orientation = OrientationVote(rotation_candidates(settings.rotation, tag_rotation),
                                           settings.orientation_frames, settings.orientation_probe_limit)
        self.fps = fps
        self.settings = settings
        self.shot_detector = ShotDetector(settings.shots)
        self.tracker = Tracker(self._track_settings())
        harvest = dataclasses.replace(settings.harvest, max_refs=settings.max_refs)
        self.pools = CandidatePools(pool_dir, harvest, fps, uses_norm=getattr(embedder, "name", "") == "adaface")
        self.records: list[TrackRecord] = []
        self.shots = _ShotLog()
        self.frames: dict[int, Frame] = {}  # decoded, not yet processed (a few)
        self.decided: deque[Boundary] = deque()  # decided, waiting for the next decision
        self.decided_upto = -1  # the shot detector has decided every frame up to here
        # (frame, shot, shot's first frame, "full" | "follow" | "skip": how faces are found)
        self.batch: list[tuple[Frame, int, int, str]] = []
        self.full_every = max(1, round(settings.full_detect_s * fps)) if settings.full_detect_s > 0 else 1
        self.obs_reliability: dict[int, dict[int, float]] = {}  # live track -> frame -> reliability
        self.processed = 0

    def _track_settings(self) -> TrackSettings:
        # A track must survive the frames the detector skips, plus a few real misses.
        base = self.settings.tracking
        k = self.settings.detect_every
        return dataclasses.replace(base, max_miss=max(base.max_miss, 2 * k + 1),
                                   min_detections=base.min_detections if k == 1 else 2)

    # frames in ------------------------------------------------------------------------------
    def push(self, frame: Frame) -> None:
        self.frames[frame.index] = frame
        if frame.index <= self.decided_upto:  # re-decoded after a resume: its decision is known
            self._release_ready()
            return
        for boundary in self.shot_detector.push(frame.index, frame.image):
            self._on_decided(boundary)

    def finish(self) -> None:
        for boundary in self.shot_detector.flush():
            self._on_decided(boundary)
        while self.decided:
            self._release(self.decided.popleft(), last_of_shot=not self.decided or self.decided[0].transition is not None)
        self._run_batch()
        self.orientation.finish()
        self.tracker.end_shot()
        self._collect_finished()
        if self.shots.starts:
            self.shots.end_times[len(self.shots.starts) - 1] = self.shots.last_time

    def _on_decided(self, boundary: Boundary) -> None:
        self.decided.append(boundary)
        self.decided_upto = boundary.frame_index
        self._release_ready()

    def _release_ready(self) -> None:
        while len(self.decided) >= 2 and self.decided[0].frame_index in self.frames:
            current = self.decided.popleft()
            self._release(current, last_of_shot=self.decided[0].transition is not None)

    def _release(self, boundary: Boundary, last_of_shot: bool) -> None:
        frame = self.frames.pop(boundary.frame_index)
        time = frame.time if frame.time is not None else frame.index / self.fps
        if boundary.transition is not None or not self.shots.starts:
            if self.shots.starts:
                self.shots.end_times[len(self.shots.starts) - 1] = self.shots.last_time
            self.shots.starts.append((frame.index, boundary.transition or "start", float(time)))
        self.shots.last_frame, self.shots.last_time = frame.index, float(time)
        shot = len(self.shots.starts) - 1
        offset = frame.index - self.shots.starts[-1][0]
        if self.settings.detect_every > 1:
            mode = "full" if offset % self.settings.detect_every == 0 or last_of_shot else "skip"
        else:
            mode = "full" if offset % self.full_every == 0 or not hasattr(self.detector, "follow") else "follow"
        self.batch.append((frame, shot, self.shots.starts[-1][0], mode))
        if len(self.batch) >= self.settings.batch:
            self._run_batch()

    # detection, tracking, scoring -------------------------------------------------------------
    def _run_batch(self) -> None:
        if not self.batch:
            return
        if self.orientation.chosen is None:
            self._probe_orientation()
        wanted = [frame for frame, _, _, mode in self.batch if mode == "full"]
        found: dict[int, list[FaceObs]] = {}
        if wanted:
            faces = self.detector.detect([f.image for f in wanted], [f.index for f in wanted], self.orientation.current())
            found = {frame.index: obs for frame, obs in zip(wanted, faces)}
        for frame, shot, shot_start, mode in self.batch:
            detections, crops = None, None
            if mode != "skip":
                faces = found[frame.index] if mode == "full" else self._follow(frame, shot)
                detections, crops = self._prepare(frame, shot, shot_start, faces)
            for track_id, obs in self.tracker.step(frame.index, shot, detections):
                position = next(i for i, d in enumerate(detections) if d is obs)
                terms_total = self.pools.offer(track_id, obs, frame.image, crops[position])
                self.obs_reliability.setdefault(track_id, {})[frame.index] = terms_total
            self._collect_finished()
            self.processed += 1
        self.batch.clear()

    def _probe_orientation(self) -> None:
        """While the orientation is undecided: small copies of the batch's frames searched in
        every candidate rotation, as evidence for the vote (``faces.orientation.OrientationVote``)."""
        vote = self.orientation
        views = [probe_view(frame.image) for frame, _, _, mode in self.batch if mode != "skip"]
        shots = [shot for _, shot, _, mode in self.batch if mode != "skip"]
        if not views:
            return
        probed = {r: self.detector.detect(views, None, r) for r in vote.candidates}
        for i, shot in enumerate(shots):
            vote.add_frame(shot, {r: upright_confidence(probed[r][i], r, vote.min_score) for r in vote.candidates})

    def _follow(self, frame: Frame, shot: int) -> list[FaceObs]:
        """Between full detections: the faces at the live tracks' predicted boxes."""
        boxes = self.tracker.predicted_boxes(shot, frame.index)
        return self.detector.follow(frame.image, boxes, frame.index, self.orientation.current()) if len(boxes) else []

    def detect_rotation(self) -> int:
        """The rotation the detector used (at the end: the one it decided on)."""
        return self.orientation.current()

    def _prepare(self, frame: Frame, shot: int, shot_start: int, obs: list[FaceObs]) -> tuple[list[FaceObs], np.ndarray]:
        """Embed the detections that need it; aligned crops of all (``harvest.aligned_crops``).

        The embedder is the slow part, so it runs on every detection only on scheduled frames
        (``embed_every_s`` apart); in between, only on faces the tracker cannot place by overlap
        alone (new, or overlapping two tracks).
        """
        if not obs:
            return [], np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        kps = np.stack([np.asarray(o.kps5, np.float32) for o in obs])
        crops = aligned_crops(frame.image, kps)
        k = self.settings.detect_every
        stride = max(1, int(round(self.settings.embed_every_s * self.fps / k)))
        if ((frame.index - shot_start) // k) % stride == 0:
            need = list(range(len(obs)))
        else:
            live = self.tracker.live_boxes(shot)
            overlap = box_iou(np.array([o.box for o in obs]), live) if len(live) else np.zeros((len(obs), 0))
            placed = (overlap >= self.settings.tracking.min_iou).sum(axis=1)
            need = [i for i in range(len(obs)) if placed[i] != 1]
        if need:
            vectors = self.embedder.embed(frame.image, kps[need])
            obs = list(obs)
            for i, vector in zip(need, vectors):
                obs[i] = dataclasses.replace(obs[i], embedding=vector)
        return obs, crops

    def _collect_finished(self) -> None:
        finished, dropped = self.tracker.pop_finished()
        for record in finished:
            scores = self.obs_reliability.pop(record.id, {})
            self.records.append(dataclasses.replace(
                record, reliability=np.array([scores.get(int(f), np.nan) for f in record.frames], np.float32)))
        for track_id in dropped:
            self.pools.forget(track_id)
            self.obs_reliability.pop(track_id, None)

    # checkpointing ------------------------------------------------------------------------------
    def resume_frame(self) -> int:
        """The first frame not yet fully processed (the next run decodes from here)."""
        pending = [b.frame_index for b in self.decided] + list(self.frames)
        return min(pending) if pending else self.decided_upto + 1

    def state(self) -> dict:
        """Everything needed to continue from ``resume_frame`` (call between batches)."""
        assert not self.batch, "checkpoint only between batches"
        return {
            "resume_frame": self.resume_frame(),
            "decided_upto": self.decided_upto,
            "decided": [[b.frame_index, b.transition] for b in self.decided],
            "shot_detector": self.shot_detector.state(),
            "tracker": self.tracker.state(),
            "pools": self.pools.state(),
            "records": [_record_to_json(r) for r in self.records],
            "shots": {"starts": self.shots.starts, "last_frame": self.shots.last_frame,
                      "last_time": self.shots.last_time, "end_times": {str(k): v for k, v in self.shots.end_times.items()}},
            "processed": self.processed,
            "orientation": self.orientation.state(),
            "obs_reliability": {str(t): {str(f): v for f, v in d.items()} for t, d in self.obs_reliability.items()},
        }

    def load_state(self, state: dict) -> None:
        self.decided_upto = state["decided_upto"]
        self.decided = deque(Boundary(i, t) for i, t in state["decided"])
        self.shot_detector = ShotDetector.from_state(state["shot_detector"], self.settings.shots)
        self.tracker = Tracker.from_state(state["tracker"], self._track_settings())
        self.pools.load_state(state["pools"])
        self.records = [_record_from_json(r) for r in state["records"]]
        s = state["shots"]
        self.shots = _ShotLog([tuple(x) for x in s["starts"]], s["last_frame"], s["last_time"],
                              {int(k): v for k, v in s["end_times"].items()})
        self.processed = state["processed"]
        self.orientation.load_state(state["orientation"])
        self.obs_reliability = {int(t): {int(f): v for f, v in d.items()} for t, d in state["obs_reliability"].items()}


def _record_to_json(record: TrackRecord) -> dict:
    obs = record.to_track().obs
    return {"id": record.id, "shot": record.shot, "obs": [obs_to_json(o) for o in obs],
            "embedding": None if record.embedding is None else record.embedding.tolist(),
            "reliability": None if record.reliability is None else _nan_to_none(record.reliability)}


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def _record_from_json(data: dict) -> TrackRecord:
    embedding = None if data["embedding"] is None else np.asarray(data["embedding"], np.float32)
    record = TrackRecord.from_obs(data["id"], data["shot"], [obs_from_json(o) for o in data["obs"]], embedding)
    if data.get("reliability") is None:
        return record
    return dataclasses.replace(record, reliability=np.array(
        [np.nan if v is None else v for v in data["reliability"]], np.float32))



# --- checkpoint ----------------------------------------------------------------------------------

def fingerprint(input_path: Path, settings_json: dict) -> dict:
    """What a checkpoint must match to be continued: the same input file and the same settings
    (those that change the result)."""
    stat = input_path.stat()
    relevant = {k: v for k, v in settings_json.items() if k not in ("checkpoint_every", "contact_sheets", "batch", "device")}
    return {"input": str(input_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "settings": relevant}


def save_partial(path: Path, expected: dict, stream: AnalysisStream) -> None:
    """Write the checkpoint of ``stream`` (between batches) atomically."""
    write_text_atomic(json.dumps({"fingerprint": expected, "state": stream.state()}), path)


def read_partial(path: Path, expected: dict) -> dict | None:
    """The saved stream state at ``path`` when its fingerprint is ``expected``, else None."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved["state"] if saved.get("fingerprint") == expected else None
