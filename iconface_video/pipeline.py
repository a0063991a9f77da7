"""The main command's whole job: analyse a video, then render it (``restore_file``).

The analysis file is kept beside the output (``OUT.iconface.json``) so a user can inspect it,
edit it and re-render; ``batch.split`` reuses ``analyze_for_render`` and ``analysis_path_for``
to analyse once and render a file's segments in separate tasks.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from iconface_video.io.encoding import resolve_encoding
from iconface_video.io.probe import VideoInfo, check_video, probe
from iconface_video.job import check_paths, output_lock
from iconface_video.progress import Progress
from iconface_video.render.options import RenderOptions, default_output_for, frame_range, resolve_device

if TYPE_CHECKING:  # the models are imported when a job runs: a bad input fails before they load
    from iconface_video.analysis.schema import Analysis
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.core.restorer import Restorer
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder
    from iconface_video.render.guard import EmbedFn
    from iconface_video.render.report import RenderReport

def analysis_path_for(output_path: str | os.PathLike, analysis_dir: Path | None = None) -> Path:
    """Where a job keeps its analysis file: ``OUT.iconface.json`` beside the output (or in
    ``analysis_dir``), never beside the input, whose folder may be read-only."""
    output_path = Path(output_path)
    return (analysis_dir or output_path.parent) / f"{output_path.stem}.iconface.json"


def analyze_for_render(input_path: str | os.PathLike, analysis_path: Path, options: RenderOptions,
                       analyze: AnalyzeSettings, info: VideoInfo | None = None, progress: Progress | None = None, *,
                       detector: Detector | None = None, embedder: Embedder | None = None) -> Analysis:
    """Run the analysis the way a render with ``options`` needs it (its frame range and device).

    ``analyze.refs`` (the user's photos) become references here, once; the render reads them
    from the analysis file like any other reference.
    """
    from iconface_video.analysis.video import analyze_video

    start, end = frame_range(input_path, options.start, options.end, info)
    settings = replace(analyze, start=start, end=end, device=str(resolve_device(options.device)))
    return analyze_video(input_path, analysis_path, settings, progress, detector=detector, embedder=embedder)


def restore_file(input_path: str | os.PathLike, output_path: str | os.PathLike | None, options: RenderOptions,
                 analyze: AnalyzeSettings, progress: Progress | None = None, *, analysis_dir: Path | None = None,
                 restorer: Restorer | None = None, detector: Detector | None = None,
                 embedder: Embedder | None = None, embed: EmbedFn | None = None) -> RenderReport:
    """The whole job the main command runs: analyze ``input_path``, then render it.

    ``analyze``'s range and device are taken from ``options``. ``restorer``, ``detector``,
    ``embedder`` and ``embed`` (the identity guard's) may be passed in already loaded (batch
    workers keep them between files).
    Returns the render's report.
    """
    input_path = Path(input_path)
    info = probe(input_path)  # a bad input fails here, in one line, before any model loads
    output_path = Path(output_path) if output_path is not None else default_output_for(input_path, options.preview)
    check_video(info)
    if options.dry_run:
        return _restore(input_path, output_path, options, analyze, info, progress, analysis_dir, restorer, detector,
                        embedder, embed)
    check_paths(input_path, output_path, options.overwrite, codec=options.codec)
    resolve_encoding(options.encode_settings(), info, output_path)  # --pix-fmt, --preset: before any work
    with output_lock(output_path):
        return _restore(input_path, output_path, options, analyze, info, progress, analysis_dir, restorer, detector,
                        embedder, embed)


def _restore(input_path: Path, output_path: Path, options: RenderOptions, analyze: AnalyzeSettings, info: VideoInfo,
             progress: Progress | None, analysis_dir: Path | None, restorer: Restorer | None,
             detector: Detector | None, embedder: Embedder | None, embed: EmbedFn | None) -> RenderReport:
    from iconface_video.render.prepare import load_restorer
    from iconface_video.render.video import render_video

    # Load the model before the (long) analysis, so a missing or bad checkpoint fails at once.
    restorer = restorer or load_restorer(options, resolve_device(options.device))
    analysis_path = analysis_path_for(output_path, analysis_dir)
    analyze_for_render(input_path, analysis_path, options, analyze, info, progress, detector=detector, embedder=embedder)
    return render_video(analysis_path, input_path, output_path, options, progress, restorer=restorer, embed=embed)
