"""``render_video``: an analysis file and its video in, the video with restored faces out.

```
analysis ─► plan (smoothed transforms, each track's crop side, small faces and unwanted identities set aside)
video ─► decode ─► [deinterlace] ─► align ─► restore (per-track refs + noise) ─► identity guard ─► blend ─► encode
```

Decoding, segmenting, encoding, muxing and resuming are the I/O stage's (``run_job``); this
module supplies the frame transform, the options that change it, and the report. Segments
start at every shot start, where all temporal state restarts anyway, so segment boundaries cost
nothing in stability and a resumed render equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iconface_video.analysis.schema import Analysis, load_analysis
from iconface_video.errors import InputError, UserError
from iconface_video.io.probe import VideoInfo, probe
from iconface_video.io.reader import frame_timestamps
from iconface_video.io.transcode import FrameProcess, segment_ranges
from iconface_video.io.writer import EncodeSettings
from iconface_video.progress import Progress
from iconface_video.render.engine import FaceEngine, MaskFn
from iconface_video.render.guard import EmbedFn, IdentityGuard, reference_anchor
from iconface_video.render.interlace import deinterlace, detect_interlace
from iconface_video.render.plan import plan_faces, select_tracks, side_template
from iconface_video.render.report import RenderReport, StillCollector, identity_label
from iconface_video.render.restore import (
    BatchRestorer,
    TrackReferences,
    make_references,
    with_features,
)
from iconface_video.render.temporal import TemporalSettings
from iconface_video.types import Frame

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class RenderOptions:
    """Every user control of a render; each one changes the output (tests prove it).

    ``strength`` in [0, 1]: 0 keeps the input, 1 pastes the full restoration.
    ``temporal`` in [0, 1]: smoothing of alignment, masks and colour correction within a track.
    ``refs``: ``("Name", "dir/")`` pairs, photos of a named identity used as extra references.
    ``no_refs``: restore without any reference (the core's structure-only mode).
    ``identities``: ids or names to restore (None = everyone).
    ``start``/``end``: restore only this range: seconds (``"12.5"``, ``"1:02.5"``) or a frame
    number with an ``f`` suffix (``"300f"``); ``end`` is exclusive. Frames outside stay untouched.
    ``codec``/``crf``/``preset``/``pix_fmt``/``segment_frames``: passed to the encoder.
    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...; ``precision``: auto, fp32, bf16, fp16.
    ``checkpoint``: a core checkpoint (None = the embedded one). ``preview``: the output shows
    input | restored side by side. ``dry_run``: plan and report only, write nothing.
    ``min_eye_px``: faces with eyes closer than this are left alone (None = from the core's smallest crop side).
    ``deinterlace``: ``auto`` (deinterlace flagged sources) or ``refuse``.
    ``identity_guard``: the largest drop in identity similarity (cosine, to the track's
    references, or to the face itself without references) a restoration may cause; a face
    whose restoration drops it more is restored less, or left as it was. 0 turns it off.
    """

    strength: float = 1.0
    temporal: float = 0.5
    refs: tuple[tuple[str, str], ...] = ()
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
        keep = ("strength", "temporal", "refs", "no_refs", "identities", "start", "end", "checkpoint", "steps",
                "seed", "preview", "min_eye_px", "deinterlace", "precision", "identity_guard")
        return {k: getattr(self, k) for k in keep}


def parse_refs(values: tuple[str, ...] | list[str]) -> tuple[tuple[str, str], ...]:
    """``("Anna=photos/anna/", ...)`` -> ``(("Anna", "photos/anna/"), ...)``; bad items are a user error."""
    pairs = []
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise UserError(f"--refs {value!r}: expected NAME=FOLDER, e.g. --refs \"Anna=photos/anna/\"")
        pairs.append((name.strip(), folder.strip()))
    return tuple(pairs)


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


def load_restorer(options: RenderOptions, device: torch.device):
    """The core from ``options.checkpoint`` (None = the embedded checkpoint) on ``device``."""
    from iconface_video.core.restorer import Restorer

    return Restorer.from_checkpoint(options.checkpoint, device, resolve_precision(options.precision, device))


def default_mask(device: torch.device, models_dir: str | None = None) -> tuple[MaskFn, str]:
    """Soft masks in crop space and their kind: face parsing (facexlib BiSeNet) when its weights
    are in the model store, the feathered landmark ellipse otherwise (no download needed).

    The landmark mask's feather is a fixed fraction of the face's size in the crop, so after the
    inverse warp it scales with the face in the frame.
    """
    from iconface_video.errors import MissingModelError
    from iconface_video.faces import masks

    try:
        parser = masks.load_parser("bisenet", models_dir, device=str(device))
    except (MissingModelError, ImportError, KeyError):
        return (lambda lq, kps: masks.landmark_mask(lq.shape[-1], kps)), "landmark"
    return (lambda lq, kps: masks.parsing_mask(lq, parser)), "parsing (bisenet)"


# --- references ----------------------------------------------------------------------------------

def video_references(analysis: Analysis, identity: int, template: str, size: int) -> TrackReferences | None:
    """An identity's harvested references, aligned for the core; None when it has none."""
    refs = analysis.references_for(identity)
    if not refs:
        return None
    weights = torch.tensor([r.reference.reliability for r in refs], dtype=torch.float32)
    sources = tuple(f"frame {r.reference.frame_index}" if r.reference.frame_index >= 0 else str(r.reference.source)
                    for r in refs)
    return make_references([r.load_crop() for r in refs], np.stack([r.crop_kps5 for r in refs]), template, size,
                           weights, sources)


def photo_references(folder: str | os.PathLike, template: str, size: int, detector=None) -> TrackReferences:
    """References from a folder of photos of one person: the largest face of each photo."""
    import cv2

    from iconface_video.faces.detect import load_detector
    from iconface_video.imageio import imread

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--refs: {folder} is not a folder of photos")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"--refs: {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    detector = detector or load_detector("auto")
    images, points, sources = [], [], []
    for path in paths:
        bgr = imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"--refs: {path} is not a readable image")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = detector.detect([image])[0]
        if not faces:
            continue
        best = max(faces, key=lambda f: f.eye_distance)
        images.append(image)
        points.append(best.kps5)
        sources.append(str(path))
    if not images:
        raise UserError(f"--refs: no face found in any photo of {folder}")
    # A photo the user chose is a trusted witness of the identity.
    return make_references(images, np.stack(points), template, size, torch.ones(len(images)), tuple(sources))


def identity_references(analysis: Analysis, options: RenderOptions, template: str, size: int,
                        detector=None) -> dict[int, TrackReferences]:
    """References per identity: the user's photos (``--refs``) first, then the harvested ones."""
    if options.no_refs:
        return {}
    by_identity: dict[int, TrackReferences] = {}
    for identity in analysis.identities:
        refs = video_references(analysis, identity.id, template, size)
        if refs is not None:
            by_identity[identity.id] = refs
    names = {i.name.casefold(): i.id for i in analysis.identities if i.name}
    names.update({str(i.id): i.id for i in analysis.identities})
    for name, folder in options.refs:
        identity = names.get(name.casefold())
        if identity is None:
            known = ", ".join(sorted(str(i.name or i.id) for i in analysis.identities)) or "none"
            raise UserError(f"--refs {name}=...: no identity named {name!r} in the analysis file "
                            f"(known: {known}); name one in the file or use its id")
        photos = photo_references(folder, template, size, detector)
        held = by_identity.get(identity)
        if held is not None:
            photos = TrackReferences(torch.cat([photos.crops, held.crops]), torch.cat([photos.weights, held.weights]),
                                     photos.sources + held.sources,
                                     id_crops=np.concatenate([photos.id_crops, held.id_crops]))
        by_identity[identity] = photos
    return by_identity


def per_track(analysis: Analysis, by_identity: dict[int, TrackReferences]) -> dict[int, TrackReferences]:
    """Each track gets its identity's references (an unassigned track gets none); they are the
    same objects for every track of a person, so their features are computed once per person."""
    return {t.id: by_identity[t.identity] for t in analysis.tracks if t.identity in by_identity}


# --- the job --------------------------------------------------------------------------------------

def _analysis_and_input(analysis_or_path, input_path) -> tuple[Analysis, Path, Path | None]:
    if isinstance(analysis_or_path, Analysis):
        analysis, analysis_path = analysis_or_path, analysis_or_path.path
    else:
        analysis_path = Path(analysis_or_path)
        analysis = load_analysis(analysis_path)
    if input_path is None:
        recorded = Path(analysis.video["path"])
        if not recorded.is_absolute() and analysis_path is not None:
            recorded = (Path(analysis_path).parent / recorded).resolve()
        input_path = recorded
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(f"{input_path}: the analysed video is not there; pass the video's path")
    return analysis, input_path, Path(analysis_path) if analysis_path is not None else None


def _check_analysis_matches(analysis: Analysis, info: VideoInfo, input_path: Path) -> None:
    video = info.video
    recorded = (analysis.video.get("width"), analysis.video.get("height"), analysis.video.get("frame_count"))
    actual = (video.width, video.height, info.frame_count)
    if recorded != actual:
        raise InputError(f"{input_path}: is {actual[0]}x{actual[1]} with {actual[2]} frames, but the analysis file "
                         f"describes {recorded[0]}x{recorded[1]} with {recorded[2]} frames; analyse this video first")


def default_output_for(input_path: Path, preview: bool) -> Path:
    tag = "preview" if preview else "restored"
    return input_path.with_name(f"{input_path.stem}.{tag}{input_path.suffix or '.mp4'}")


def _process_key(analysis: Analysis, analysis_path: Path | None, options: RenderOptions, restorer) -> str:
    """What decides the rendered pixels: the analysis (less its ``render`` section, which each
    finished render rewrites), the options that change pixels, and the core's weights."""
    digest = hashlib.sha256()
    if analysis_path is not None and analysis_path.is_file():
        data = json.loads(analysis_path.read_text(encoding="utf-8"))
        data.pop("render", None)
        digest.update(json.dumps(data, sort_keys=True).encode())
    else:
        digest.update(repr([(t.id, t.identity, [o.kps5.tobytes() for o in t.obs]) for t in analysis.tracks]).encode())
        digest.update(repr([(r.crop_path, r.reference.reliability) for r in analysis.references]).encode())
    digest.update(json.dumps(options.output_key(), sort_keys=True, default=str).encode())
    digest.update(_describe(restorer).encode())
    model = getattr(restorer, "model", None)
    if model is not None:
        # The weights' exact bytes, so a retrained checkpoint under the same name never resumes the
        # old one's segments. (Float sums would depend on the thread count, and break resume
        # between runs with different --workers.)
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return "render-" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class PreparedRender:
    """A render decided up to its first frame (``prepare_render``): which faces, with which
    references, into which work folder. ``settings`` are ``run_job``'s: the encode settings,
    the work-folder key (``process_key``) and the shot starts segments begin at (``boundaries``);
    a caller encoding only some segments uses them with ``io.transcode.make_plan``."""

    analysis: Analysis
    analysis_path: Path | None
    input_path: Path
    output_path: Path
    info: VideoInfo
    settings: Any  # pipeline.JobSettings
    segment_starts: tuple[int, ...]
    interlace: Any  # interlace.FieldInfo
    device: torch.device
    restorer: Any
    mask: MaskFn
    plan: Any  # plan.RenderPlan
    by_identity: dict[int, TrackReferences]
    names: dict[int, str]
    report_base: dict[str, Any]
    timings: dict[str, float]


def prepare_render(
    analysis: Analysis | str | os.PathLike,
    input_path: str | os.PathLike | None,
    output_path: str | os.PathLike | None,
    options: RenderOptions = RenderOptions(),
    *,
    restorer=None,
    mask: MaskFn | None = None,
    detector=None,
) -> PreparedRender:
    """Everything ``render_video`` decides before decoding (arguments as there); raises the same
    one-line errors. ``frame_process`` then gives the frame transform."""
    from iconface_video.pipeline import JobSettings, check_paths

    analysis, input_path, analysis_path = _analysis_and_input(analysis, input_path)
    output_path = Path(output_path) if output_path is not None else default_output_for(input_path, options.preview)
    info = probe(input_path)
    _check_analysis_matches(analysis, info, input_path)
    if not options.dry_run:
        check_paths(input_path, output_path, options.overwrite)
    fields = detect_interlace(input_path)
    if fields.interlaced and options.deinterlace == "refuse":
        raise InputError(f"{input_path}: the video is interlaced; rerun with --deinterlace auto to deinterlace it (yadif)")

    timings: dict[str, float] = {}
    tick = time.perf_counter()
    device = resolve_device(options.device)
    if restorer is None:
        restorer = load_restorer(options, device)
    timings["load_model"] = time.perf_counter() - tick

    tick = time.perf_counter()
    start, end = frame_range(input_path, options.start, options.end, info)
    names = {i.id: identity_label(i) for i in analysis.identities}
    tracks, left_out = select_tracks(analysis.tracks, analysis.identities, options.identities)
    temporal = TemporalSettings.from_strength(options.temporal)
    plan = plan_faces(tracks, crop_size=restorer.crop_size, template_name=restorer.template, temporal=temporal,
                      sides=(restorer.min_side, restorer.max_side), side_step=restorer.stride, start=start, end=end,
                      min_eye_px=options.min_eye_px, skipped_identity=left_out, identity_names=names)
    by_identity = identity_references(analysis, options, restorer.template, restorer.ref_size, detector)
    mask_kind = "given"
    if mask is None:
        mask, mask_kind = default_mask(device)
    timings["plan"] = time.perf_counter() - tick

    report_base = dict(
        input=str(input_path), output=str(output_path), analysis=str(analysis_path) if analysis_path else None,
        options=dataclasses.asdict(options), frames=info.frame_count, range=(start, end if end is not None else info.frame_count),
        plan=plan, references={names[i]: list(r.sources) for i, r in by_identity.items() if i in names},
        reference_weights={names[i]: [round(float(w), 4) for w in r.weights] for i, r in by_identity.items() if i in names},
        interlaced=fields.interlaced, device=str(device), restorer=_describe(restorer), mask=mask_kind,
    )
    boundaries = tuple(s.start for s in analysis.shots if s.start > 0)
    segment_starts = tuple(r[0] for r in segment_ranges(info.frame_count, options.segment_frames, boundaries))
    settings = JobSettings(encode=options.encode_settings(), overwrite=options.overwrite,
                           process_key=_process_key(analysis, analysis_path, options, restorer),
                           boundaries=boundaries, side_by_side=options.preview,
                           # damage outside the restored range only repeats a frame there
                           changed_range=(start, end if end is not None else info.frame_count))
    return PreparedRender(analysis, analysis_path, input_path, output_path, info, settings, segment_starts, fields,
                          device, restorer, mask, plan, by_identity, names, report_base, timings)


def load_guard_embedder(device: torch.device | str = "cpu", models_dir: str | os.PathLike | None = None) -> EmbedFn:
    """The identity guard's features: the pipeline's dlib embedder on ``device`` (ArcFace-112
    uint8 crops in, ``float32[N, 128]`` out)."""
    from iconface_video.errors import MissingModelError
    from iconface_video.faces.embed import load_embedder

    try:
        return load_embedder("dlib", models_dir, device=str(device)).embed_aligned112
    except MissingModelError as error:
        raise MissingModelError(f"{error}; or turn the identity guard off with --identity-guard 0") from None


def identity_guard(prepared: PreparedRender, options: RenderOptions,
                   embed: EmbedFn | None = None) -> IdentityGuard | None:
    """The render's identity guard (None when ``options`` turn it off): each track's anchor from
    its identity's references, computed once per identity."""
    if options.identity_guard <= 0 or options.strength <= 0:
        return None
    embed = embed or load_guard_embedder(prepared.device)
    restorer = prepared.restorer
    by_identity = {i: reference_anchor(embed, r.id_crops, r.weights.numpy()) for i, r in prepared.by_identity.items()}
    anchors = {t.id: by_identity[t.identity] for t in prepared.analysis.tracks
               if by_identity.get(t.identity) is not None}
    return IdentityGuard(embed, anchors, lambda side: side_template(restorer.template, restorer.crop_size, side),
                         options.identity_guard, options.strength)


def frame_process(prepared: PreparedRender, options: RenderOptions,
                  embed: EmbedFn | None = None) -> tuple[FaceEngine, StillCollector, FrameProcess]:
    """The render's frame transform (and its engine and stills, for the report).

    ``embed`` replaces the identity guard's embedder (``load_guard_embedder``), e.g. one already
    loaded. ``process`` may be called on any run of whole segments (frames from a segment start
    on), one call per run: all state restarts at segment starts, so the frames equal a
    whole-file render's. Different processes may render different segments of one file this way.
    """
    restorer = prepared.restorer
    stills = StillCollector(prepared.names)
    engine = FaceEngine(
        prepared.plan,
        BatchRestorer(restorer, per_track(prepared.analysis,
                                          {i: with_features(r, restorer) for i, r in prepared.by_identity.items()}),
                      seed=options.seed, steps=options.steps),
        prepared.mask,
        guard=identity_guard(prepared, options, embed),
        strength=options.strength,
        temporal=TemporalSettings.from_strength(options.temporal),
        device=prepared.device,
        batch_size=options.batch_size,
        segment_starts=list(prepared.segment_starts),
        preview=options.preview,
        observer=stills.observe,
    )
    fields = prepared.interlace

    def process(frames: Iterator[Frame]) -> Iterator[Frame]:
        if fields.interlaced:
            frames = deinterlace(frames, fields, list(prepared.segment_starts))
        return engine.process(frames)

    return engine, stills, process


def render_video(
    analysis: Analysis | str | os.PathLike,
    input_path: str | os.PathLike | None,
    output_path: str | os.PathLike | None,
    options: RenderOptions = RenderOptions(),
    progress: Progress | None = None,
    *,
    restorer=None,
    mask: MaskFn | None = None,
    detector=None,
    embed: EmbedFn | None = None,
) -> RenderReport:
    """Restore the faces of ``analysis``'s tracks in ``input_path``; write ``output_path``.

    ``analysis`` is an ``Analysis`` or the path of an analysis file; ``input_path`` None means
    the video the analysis names; ``output_path`` None means ``VIDEO.restored.<ext>`` (or
    ``VIDEO.preview.<ext>`` with ``preview``). ``restorer`` (a ``core.restorer.Restorer``),
    ``mask``, ``detector`` (for ``--refs`` photos) and ``embed`` (the identity guard's
    ``embed_aligned112``) replace the defaults (tests, the batch runner sharing one loaded model).
    An interrupted render resumes when run again with the same options. Returns the report, also
    written into the analysis file (``render``) and, with ``options.html``, as an HTML page beside
    the output.
    """
    from iconface_video.pipeline import run_job

    started = time.perf_counter()
    progress = progress or Progress.silent()
    prepared = prepare_render(analysis, input_path, output_path, options, restorer=restorer, mask=mask,
                              detector=detector)
    timings = dict(prepared.timings)
    if options.dry_run:
        timings["total"] = time.perf_counter() - started
        return RenderReport.build(**prepared.report_base, timings=timings, dry_run=True)

    engine, stills, process = frame_process(prepared, options, embed)
    result = run_job(prepared.input_path, prepared.output_path, prepared.settings, process=process, progress=progress)
    timings.update({f"job_{k}": v for k, v in result.timings.items()})
    timings.update(engine.times.as_dict())
    timings["total"] = time.perf_counter() - started
    report = RenderReport.build(**prepared.report_base, timings=timings, dry_run=False,
                                resumed_frames=result.resumed_frames, stats=engine.times, stills=stills,
                                guard=engine.guard.stats if engine.guard is not None else None,
                                warnings=result.warnings,
                                sheets=_contact_sheets(prepared.analysis, prepared.names) if options.html else {})
    report.save(prepared.analysis_path, prepared.output_path, html=options.html)
    return report


def _contact_sheets(analysis: Analysis, names: dict[int, str]) -> dict:
    """The analysis's contact sheet of each identity with references (for the HTML page)."""
    from iconface_video.analysis.contact_sheet import contact_sheet

    sheets = {}
    for identity in analysis.identities:
        try:
            sheet = contact_sheet(analysis, identity.id)
        except InputError:  # a reference crop was deleted: the page goes without that sheet
            continue
        if sheet is not None:
            sheets[names[identity.id]] = sheet
    return sheets


def _describe(restorer) -> str:
    config = getattr(restorer, "config", None)
    name = getattr(config, "name", type(restorer).__name__)
    source = getattr(restorer, "checkpoint", None) or "in-memory"
    return (f"{name} crop {restorer.crop_size}, sides {restorer.min_side}-{restorer.max_side} ({restorer.template}) "
            f"from {source}")
