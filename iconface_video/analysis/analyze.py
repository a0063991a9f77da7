"""The streaming analysis: frames -> shots, tracks, identities, references -> the analysis file.

One pass over the video, holding only a few frames at a time:

1. each decoded frame goes to the shot detector, which answers with a lag of one or two frames;
2. a decided frame is released once its successor is decided too (so the last frame of a shot is
   known), and queued for detection: every frame, or every k-th frame of a shot plus its last;
3. a batch of queued frames is detected and embedded, then stepped through the tracker in order;
   each matched detection is scored and offered to its track's candidate pool (crops on disk);
4. at the end, tracks are clustered into identities, user photos pin names, the top K
   references per identity are chosen, and the file, crops and contact sheets are written.

The detector sees frames turned upright by the container's rotation tag, unless the content
clearly says otherwise: with ``rotation="auto"`` small copies of the first detected frames are
also searched in the other orientations, and one replaces the tag only with a clear margin
across several shots (``orientation.OrientationVote``), because tags are sometimes wrong (frames
stored upright but tagged -90) or lost by a re-encode, but far more often right.

Faces are detected on the whole frame at each shot's start and every ``full_detect_s`` seconds;
in between, detectors that can (``follow``) look only at each live track's predicted box.

Every ``checkpoint_every`` frames the live state goes to ``<output>.partial`` (JSON) beside the
output, with the candidate crops in ``<refs folder>.partial/``; a rerun with the same input and
settings continues from there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from iconface_video import __version__
from iconface_video.analysis.harvest import (
    ALIGNED_SIZE,
    CandidatePools,
    HarvestSettings,
    agreement_term,
    aligned_crops,
    load_verifier,
    loose_crop,
    native_quality,
    observation_terms,
    reliability,
    score_against_centroid,
    select_references,
)
from iconface_video.analysis.identify import (
    IdentifySettings,
    RejectSettings,
    TrackSummary,
    build_identities,
    pin_names,
    rejection_reason,
)
from iconface_video.analysis.orientation import (
    ROTATION_MODES,
    OrientationVote,
    probe_view,
    rotation_candidates,
    upright_confidence,
)
from iconface_video.analysis.schema import (
    VERSION,
    Analysis,
    HarvestedReference,
    RejectedTrack,
    save_analysis,
)
from iconface_video.analysis.shots import Boundary, ShotDetector, ShotSettings
from iconface_video.analysis.track import (
    Tracker,
    TrackRecord,
    TrackSettings,
    box_iou,
    obs_from_json,
    obs_to_json,
)
from iconface_video.errors import InputError, OutputError
from iconface_video.files import write_text_atomic
from iconface_video.imageio import imread, imwrite
from iconface_video.types import FaceObs, Frame, Reference, Shot

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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


def parse_ref_spec(spec: str) -> tuple[str, Path]:
    """``"Name=dir/"`` -> (name, folder); a one-line ``InputError`` when malformed or empty."""
    name, sep, folder = spec.partition("=")
    name, path = name.strip(), Path(folder.strip()).expanduser()
    if not sep or not name or not folder.strip():
        raise InputError(f"--refs {spec!r}: expected NAME=FOLDER, e.g. --refs \"Anna=photos/anna/\"")
    if not path.is_dir():
        raise InputError(f"--refs {spec!r}: {path} is not a folder; give a folder of photos of that person")
    if not photo_files(path):
        raise InputError(f"--refs {spec!r}: {path} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
    return name, path


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def _settings_json(settings: AnalyzeSettings, detector_name: str, embedder_name: str, embedder_dim: int) -> dict:
    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (tuple, list)):
            return [plain(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    out = plain(settings)
    out["refs"] = [{"name": n, "folder": str(p)} for n, p in settings.refs]
    out["models"] = {"detector": detector_name, "embedder": embedder_name, "embedding_dim": embedder_dim,
                     "iconface_video": __version__}
    return out


def _fingerprint(input_path: Path, settings_json: dict) -> dict:
    stat = input_path.stat()
    relevant = {k: v for k, v in settings_json.items() if k not in ("checkpoint_every", "contact_sheets", "batch", "device")}
    return {"input": str(input_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "settings": relevant}


# --- the stream --------------------------------------------------------------------------------

@dataclass(eq=False)
class _ShotLog:
    """Shots found so far: (start frame, transition, start time) and the last frame/time seen."""

    starts: list[tuple[int, str, float]] = field(default_factory=list)
    last_frame: int = -1
    last_time: float = 0.0
    end_times: dict[int, float] = field(default_factory=dict)  # shot -> time of its last frame


class AnalysisStream:
    """The per-frame part of the analysis; ``push`` frames in order, then ``finish``."""

    def __init__(self, detector, embedder, tag_rotation: int, fps: float, settings: AnalyzeSettings, pool_dir: Path) -> None:
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
        every candidate rotation, as evidence for the vote (``orientation.OrientationVote``)."""
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


# --- user photos -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PhotoFace:
    """The main face of one user photo, ready to become a reference."""

    name: str
    path: Path
    obs: FaceObs  # with its embedding
    image: np.ndarray  # uint8[H, W, 3]
    aligned: np.ndarray  # uint8[S, S, 3], see harvest.aligned_crops


def photo_faces(refs: tuple[tuple[str, Path], ...], detector, embedder) -> list[PhotoFace]:
    """The largest face of every photo in each ``--refs`` folder (photos without a face are skipped)."""
    faces = []
    for name, folder in refs:
        for path in photo_files(folder):
            bgr = imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            found = detector.detect([image], [0], 0)[0]
            if not found:
                continue
            main = max(found, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
            kps = np.asarray(main.kps5, np.float32)[None]
            embedding = embedder.embed(image, kps)[0]
            aligned = aligned_crops(image, kps)[0]
            faces.append(PhotoFace(name, path, dataclasses.replace(main, embedding=embedding, frame_index=-1), image, aligned))
    named = {n for n, _ in refs}
    missing = named - {f.name for f in faces}
    if missing:
        raise InputError(f"--refs: no face found in the photos for {', '.join(sorted(missing))}; use clearer, larger photos")
    return faces


# --- the whole analysis --------------------------------------------------------------------------

def _video_json(info, input_path: Path, start: int, end: int) -> dict:
    video = info.video
    fps = float(video.avg_fps or video.real_fps or 25)
    return {
        "path": str(input_path),
        "width": int(video.width), "height": int(video.height),
        "frame_count": int(info.frame_count), "fps": round(fps, 6),
        "rotation": int(video.rotation or 0),
        "time_base": None if video.time_base is None else f"{video.time_base.numerator}/{video.time_base.denominator}",
        "vfr": bool(video.vfr),
        "sar": None if video.sar is None else f"{video.sar.numerator}/{video.sar.denominator}",
        "analysed_frames": {"start": start, "end": end},
    }


def _check_output(input_path: Path, output_path: Path) -> None:
    if output_path.resolve() == input_path.resolve():
        raise OutputError(f"{output_path}: the output would overwrite the input video; choose another -o")
    if not output_path.parent.is_dir():
        raise OutputError(f"{output_path.parent}: output folder does not exist")
    if not os.access(output_path.parent, os.W_OK):
        raise OutputError(f"{output_path.parent}: output folder is not writable")


def analyze_video(input_path: str | os.PathLike, output_path: str | os.PathLike | None = None,
                  settings: AnalyzeSettings = AnalyzeSettings(), progress=None, *, detector=None,
                  embedder=None) -> Analysis:
    """Analyse ``input_path`` and write the analysis file (default ``movie.iconface.json``).

    ``progress`` is an ``iconface_video.progress.Progress`` (None: silent). ``detector`` and
    ``embedder`` may be passed in already loaded (the ``run`` command shares them); otherwise they
    are loaded from ``settings``. Resumes from ``<output>.partial`` when it matches.
    """
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames
    from iconface_video.progress import Progress

    input_path = Path(input_path)
    output_path = Path(output_path) if output_path is not None else default_output(input_path)
    if settings.detect_every < 1:
        raise InputError(f"--detect-every {settings.detect_every}: must be 1 or more")
    if settings.max_refs < 0:
        raise InputError(f"--max-refs {settings.max_refs}: must be 0 or more")
    rotation_candidates(settings.rotation, 0)  # a bad --rotation fails before any model loads
    info = probe(input_path)
    _check_output(input_path, output_path)
    progress = progress or Progress.silent()
    detector = detector or load_detector(settings.detector, settings.models_dir, settings.device)
    embedder = embedder or load_embedder(settings.embedder, settings.models_dir, settings.device)
    photos = photo_faces(settings.refs, detector, embedder)

    start = max(0, settings.start or 0)
    end = min(info.frame_count, settings.end) if settings.end is not None else info.frame_count
    if end <= start:
        raise InputError(f"{input_path}: the frame range {start}..{end} is empty (the video has {info.frame_count} frames)")
    video_json = _video_json(info, input_path, start, end)
    settings_json = _settings_json(settings, detector.name, embedder.name, int(getattr(embedder, "dim", 0)))
    fingerprint = _fingerprint(input_path, settings_json)

    partial_path = output_path.with_name(output_path.name + ".partial")
    pool_dir = refs_folder(output_path).with_name(refs_folder(output_path).name + ".partial")
    stream = AnalysisStream(detector, embedder, video_json["rotation"], video_json["fps"], settings, pool_dir)
    first = start
    saved = _read_partial(partial_path, fingerprint)
    if saved is not None and pool_dir.is_dir():
        stream.load_state(saved["state"])
        first = saved["state"]["resume_frame"]
        progress.event("resume", stage="analyze", frame=first, message=f"continuing {input_path.name} from frame {first}")
    else:
        shutil.rmtree(pool_dir, ignore_errors=True)

    since_checkpoint = 0
    try:
        with progress.stage("analyze", total=end - start, initial=first - start) as bar:
            for frame in read_frames(input_path, start=first, end=end):
                before = stream.processed
                stream.push(frame)
                done = stream.processed - before
                bar.update(done)
                since_checkpoint += done
                if settings.checkpoint_every and since_checkpoint >= settings.checkpoint_every and not stream.batch:
                    write_text_atomic(json.dumps({"fingerprint": fingerprint, "state": stream.state()}), partial_path)
                    since_checkpoint = 0
            before = stream.processed
            stream.finish()
            bar.update(stream.processed - before)
    except BaseException:
        if not partial_path.is_file():  # no checkpoint refers to the candidate crops: nothing to resume
            shutil.rmtree(pool_dir, ignore_errors=True)
        raise

    video_json["detect_rotation"] = stream.detect_rotation()
    video_json["rotation_decision"] = {"mode": settings.rotation, **stream.orientation.report()}
    if video_json["detect_rotation"] != video_json["rotation"] % 360:
        # A warning, so a terminal user sees it: the file will play with its people turned sideways.
        progress.event("warning", stage="analyze", kind="rotation", detect_rotation=video_json["detect_rotation"],
                       message=f"{input_path.name}: the container says rotate {video_json['rotation']} degrees; "
                               f"detecting at {video_json['detect_rotation']} because {stream.orientation.how} "
                               f"(players may show the faces turned; --rotation tag trusts the container)")

    analysis = _assemble(stream, photos, settings, video_json, settings_json, output_path, pool_dir)
    save_analysis(analysis, output_path)
    if settings.contact_sheets:
        from iconface_video.analysis.contact_sheet import write_contact_sheets

        write_contact_sheets(analysis, refs_folder(output_path))
    shutil.rmtree(pool_dir, ignore_errors=True)
    _remove(partial_path)
    progress.event("done", stage="analyze", output=str(output_path), identities=len(analysis.identities),
                   tracks=len(analysis.tracks), rejected_tracks=len(analysis.rejected), shots=len(analysis.shots))
    return analysis


def _read_partial(path: Path, fingerprint: dict) -> dict | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def _remove(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _assemble(stream: AnalysisStream, photos: list[PhotoFace], settings: AnalyzeSettings, video_json: dict,
              settings_json: dict, output_path: Path, pool_dir: Path) -> Analysis:
    """Identities and references from the finished stream; copies chosen crops to the refs folder."""
    harvest = stream.pools.settings
    fps = stream.fps
    shots = tuple(
        Shot(i, s, (stream.shots.starts[i + 1][0] - 1) if i + 1 < len(stream.shots.starts) else stream.shots.last_frame,
             t, stream.shots.end_times.get(i, t), kind)
        for i, (s, kind, t) in enumerate(stream.shots.starts)
    )
    rejected: dict[int, str] = {}
    for r in stream.records:
        shot = shots[r.shot]
        reason = rejection_reason(r.frames, r.scores, r.kps5, ~r.interpolated, shot.end - shot.start + 1, fps, settings.reject)
        if reason is not None:
            rejected[r.id] = reason
    all_records = sorted(stream.records, key=lambda r: r.id)
    records = [r for r in all_records if r.id not in rejected]
    # A track's identity vector: its reliability-weighted mean, else the tracker's plain mean.
    embeddings = {}
    for r in all_records:
        vector = stream.pools.track_embedding(r.id)
        vector = r.embedding if vector is None else vector
        if vector is not None:
            embeddings[r.id] = vector
    summaries = [TrackSummary(r.id, r.shot, int(r.frames[0]), int(r.frames[-1]), embeddings[r.id], float(r.detections))
                 for r in records if r.id in embeddings]
    identities, owner = build_identities(summaries, settings.identify)
    named = {}
    for face in photos:
        named.setdefault(face.name, []).append(face.obs.embedding)
    identities, name_to_id = pin_names(identities, list(named.items()), settings.identify)
    tracks = tuple(r.to_track(owner.get(r.id)) for r in records)

    verifier = load_verifier(settings.models_dir)
    settings_json["models"]["verifier"] = None if verifier is None else "dlib-mmod"

    def verify(candidate) -> bool:
        if verifier is None:
            return True
        crop = imread(str(pool_dir / candidate.crop_file), cv2.IMREAD_COLOR)
        return crop is not None and verifier.is_face(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), candidate.crop_kps5)

    final_dir = refs_folder(output_path)
    staging = final_dir.with_name(final_dir.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    references: list[HarvestedReference] = []
    face_verified: dict[int, bool | None] = {}
    for identity in identities:
        candidates = [c for t in identity.tracks for c in stream.pools.pools.get(t, [])]
        chosen_photos = _photo_references(identity, [p for p in photos if name_to_id.get(p.name) == identity.id],
                                          harvest, staging, final_dir)
        room = settings.max_refs - min(len(chosen_photos), (settings.max_refs + 1) // 2) if candidates else 0
        scored = score_against_centroid(candidates, identity.centroid, harvest, stream.pools.uses_norm)
        video_refs = select_references(scored, harvest, fps, k=max(room, 0), verify=verify)
        # Whether the second detector saw a face in this identity's best frames: False flags a
        # likely false detection (a hand, a microphone) whose tracks render may leave alone.
        tried = verifier is not None and room > 0 and any(c.terms.total > 0 for c in scored)
        face_verified[identity.id] = bool(video_refs) if tried else None
        photo_refs = chosen_photos[: settings.max_refs - len(video_refs)]
        for number, pick in enumerate(video_refs):
            c = pick.candidate
            name = f"identity{identity.id:03d}_ref{number}_f{c.frame_index:07d}.png"
            shutil.copyfile(pool_dir / c.crop_file, staging / name)
            reference = Reference(identity.id, c.track, c.frame_index, c.box, tuple(map(tuple, c.kps5.tolist())),
                                  pick.terms.total, pick.terms, "video")
            references.append(HarvestedReference(reference, (final_dir / name).resolve(), c.crop_kps5, c.embedding))
        references.extend(photo_refs)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(staging, final_dir)
    set_aside = tuple(RejectedTrack(r.to_track(None), rejected[r.id]) for r in all_records if r.id in rejected)
    return Analysis(VERSION, video_json, shots, tracks, tuple(identities), tuple(references),
                    settings_json, {r.id: embeddings[r.id] for r in all_records if r.id in embeddings},
                    {r.id: r.reliability for r in all_records if r.reliability is not None}, face_verified, output_path,
                    set_aside)


def _photo_references(identity, photos: list[PhotoFace], harvest: HarvestSettings, staging: Path,
                      final_dir: Path) -> list[HarvestedReference]:
    """User photos of ``identity`` as references, most reliable first (their crops written to ``staging``)."""
    out = []
    for number, photo in enumerate(photos):
        terms = observation_terms(photo.aligned, photo.obs, harvest, native=native_quality(photo.image, photo.obs.box))
        unit = photo.obs.embedding / max(float(np.linalg.norm(photo.obs.embedding)), 1e-12)
        similarity = 1.0 if identity.centroid is None else float(identity.centroid @ unit)
        terms["centroid_agreement"] = agreement_term(similarity, harvest)
        full = reliability(terms, harvest, uses_norm=False)
        crop = loose_crop(photo.image, photo.obs, harvest.crop_scale, harvest.max_crop_side)
        name = f"identity{identity.id:03d}_photo{number}.png"
        imwrite(str(staging / name), cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR))
        reference = Reference(identity.id, -1, -1, tuple(float(v) for v in photo.obs.box),
                              tuple(map(tuple, np.asarray(photo.obs.kps5).tolist())), full.total, full, str(photo.path))
        out.append(HarvestedReference(reference, (final_dir / name).resolve(), crop.kps5, photo.obs.embedding))
    return sorted(out, key=lambda r: -r.reference.reliability)


__all__ = ["ROTATION_MODES", "AnalysisStream", "AnalyzeSettings", "analyze_video", "default_output", "parse_ref_spec",
           "refs_folder"]
