"""``analyze_video``: one video -> the analysis file (shots, face tracks, identities, references),
its reference crops and contact sheets.

The frames stream through ``stream.AnalysisStream`` (checkpointed, resumable); at the end
``assemble.assemble`` clusters the tracks into identities, pins the names of the user's photos
(``photos.photo_faces``) and chooses the references; the file is then written atomically.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from iconface_video.analysis.assemble import assemble
from iconface_video.analysis.photos import photo_faces
from iconface_video.analysis.schema import Analysis, save_analysis
from iconface_video.analysis.settings import AnalyzeSettings, default_output, refs_folder, settings_json
from iconface_video.analysis.stream import AnalysisStream, fingerprint, read_partial, save_partial
from iconface_video.errors import InputError, OutputError
from iconface_video.faces.orientation import rotation_candidates
from iconface_video.files import check_output_folder

if TYPE_CHECKING:
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder
    from iconface_video.io.probe import VideoInfo
    from iconface_video.progress import Progress


def _video_json(info: VideoInfo, input_path: Path, start: int, end: int) -> dict:
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
    check_output_folder(output_path)


def analyze_video(input_path: str | os.PathLike, output_path: str | os.PathLike | None = None,
                  settings: AnalyzeSettings = AnalyzeSettings(), progress: Progress | None = None, *,
                  detector: Detector | None = None, embedder: Embedder | None = None) -> Analysis:
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
    settings_file = settings_json(settings, detector.name, embedder.name, int(getattr(embedder, "dim", 0)))
    expected = fingerprint(input_path, settings_file)

    partial_path = output_path.with_name(output_path.name + ".partial")
    pool_dir = refs_folder(output_path).with_name(refs_folder(output_path).name + ".partial")
    stream = AnalysisStream(detector, embedder, video_json["rotation"], video_json["fps"], settings, pool_dir)
    first = start
    saved = read_partial(partial_path, expected)
    if saved is not None and pool_dir.is_dir():
        stream.load_state(saved)
        first = saved["resume_frame"]
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
                    save_partial(partial_path, expected, stream)
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

    analysis = assemble(stream, photos, settings, video_json, settings_file, output_path, pool_dir)
    save_analysis(analysis, output_path)
    if settings.contact_sheets:
        from iconface_video.analysis.contact_sheet import write_contact_sheets

        write_contact_sheets(analysis, refs_folder(output_path))
    shutil.rmtree(pool_dir, ignore_errors=True)
    _remove(partial_path)
    progress.event("done", stage="analyze", output=str(output_path), identities=len(analysis.identities),
                   tracks=len(analysis.tracks), rejected_tracks=len(analysis.rejected), shots=len(analysis.shots))
    return analysis


def _remove(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
