"""A render decided up to its first frame: which faces, at which sides, with which references,
with which model and mask, into which work folder (``prepare_render``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iconface_video.analysis.schema import Analysis, load_analysis
from iconface_video.core.restorer import Restorer
from iconface_video.errors import InputError
from iconface_video.io.probe import VideoInfo, probe
from iconface_video.io.transcode import segment_ranges
from iconface_video.job import JobSettings, check_paths
from iconface_video.render.engine import MaskFn
from iconface_video.render.interlace import FieldInfo, detect_interlace
from iconface_video.render.options import RenderOptions, default_output_for, frame_range, resolve_device, resolve_precision
from iconface_video.render.plan import RenderPlan, plan_faces, select_tracks
from iconface_video.render.references import TrackReferences, identity_references
from iconface_video.render.report import identity_label
from iconface_video.render.temporal import TemporalSettings


def load_restorer(options: RenderOptions, device: torch.device) -> Restorer:
    """The core from ``options.checkpoint`` (None = the embedded checkpoint) on ``device``."""
    return Restorer.from_checkpoint(options.checkpoint, device, resolve_precision(options.precision, device),
                                    models_dir=options.models_dir)


def default_mask(device: torch.device, models_dir: str | os.PathLike | None = None) -> tuple[MaskFn, str]:
    """Soft masks in crop space and their kind: face parsing (facexlib BiSeNet) when its weights
    are in ``models_dir`` (None: ``$ICONFACE_MODELS`` or the default store), the feathered landmark ellipse otherwise (no download needed).

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


def _analysis_and_input(analysis_or_path: Analysis | str | os.PathLike,
                        input_path: str | os.PathLike | None) -> tuple[Analysis, Path, Path | None]:
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


def _process_key(analysis: Analysis, analysis_path: Path | None, options: RenderOptions, restorer: Restorer) -> str:
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
    digest.update(describe(restorer).encode())
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
    settings: JobSettings
    segment_starts: tuple[int, ...]
    interlace: FieldInfo
    device: torch.device
    restorer: Restorer
    mask: MaskFn
    plan: RenderPlan
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
    restorer: Restorer | None = None,
    mask: MaskFn | None = None,
) -> PreparedRender:
    """Everything ``render_video`` decides before decoding (arguments as there); raises the same
    one-line errors. ``transform.frame_process`` then gives the frame transform."""
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
    by_identity = identity_references(analysis, options.no_refs, restorer.template, restorer.ref_size)
    mask_kind = "given"
    if mask is None:
        mask, mask_kind = default_mask(device, options.models_dir)
    timings["plan"] = time.perf_counter() - tick

    report_base = dict(
        input=str(input_path), output=str(output_path), analysis=str(analysis_path) if analysis_path else None,
        options=dataclasses.asdict(options), frames=info.frame_count, range=(start, end if end is not None else info.frame_count),
        plan=plan, references={names[i]: list(r.sources) for i, r in by_identity.items() if i in names},
        reference_weights={names[i]: [round(float(w), 4) for w in r.weights] for i, r in by_identity.items() if i in names},
        interlaced=fields.interlaced, device=str(device), restorer=describe(restorer), mask=mask_kind,
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


def describe(restorer: Restorer) -> str:
    """One line naming the core, its sides and where its weights came from (the report's)."""
    config = getattr(restorer, "config", None)
    name = getattr(config, "name", type(restorer).__name__)
    source = getattr(restorer, "checkpoint", None) or "in-memory"
    return (f"{name} crop {restorer.crop_size}, sides {restorer.min_side}-{restorer.max_side} ({restorer.template}) "
            f"from {source}")
