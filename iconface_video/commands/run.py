"""``iconface-video movie.mp4``: the whole job, from one video to its restored copy.

Analyze (shots, tracks, identities, references) then render (restore, smooth, paste back,
encode). The analysis file is kept beside the output (``OUT.iconface.json``, with the render
report in it), so a user can inspect it, edit it and re-render with ``iconface-video render``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from iconface_video.commands.render import options_from, ref_specs, render_options
from iconface_video.files import shown

if TYPE_CHECKING:
    from iconface_video.analysis.settings import AnalyzeSettings


def analysis_options(function):
    """The analysis options of the main command (``batch`` reuses them; ``--refs`` and
    ``--models-dir`` come with ``render_options``); see ``analyze_settings``."""
    options = [
        click.option("--detect-every", type=click.IntRange(1), default=1, show_default=True,
                     help="Run the face detector every k-th frame and interpolate between (faster)."),
        click.option("--detector", type=click.Choice(["auto", "mtcnn", "insightface", "facexlib"]), default="auto",
                     show_default=True, help="Face detector (auto: the best whose weights are present)."),
        click.option("--embedder", type=click.Choice(["dlib", "arcface", "adaface"]), default="dlib",
                     show_default=True, help="Identity embedder used to link tracks into people."),
        click.option("--rotation", type=click.Choice(["auto", "tag", "none", "0", "90", "180", "270"]),
                     default="auto", show_default=True,
                     help="Which way the face detector turns frames: auto (tries each way on the first faces; for "
                          "files whose rotation tag is wrong), tag (as the container says), none (as stored), or "
                          "degrees CCW."),
        click.option("--max-refs", type=click.IntRange(0), default=4, show_default=True,
                     help="References harvested per person."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command(name="run")
@click.argument("input_path", metavar="VIDEO", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Output file [default: VIDEO.restored.<ext> beside the input].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@render_options
@analysis_options
@click.option("--json", "json_lines", is_flag=True, help="Progress as JSON lines on stdout instead of a bar.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def command(input_path: Path, output_path: Path | None, json_lines: bool, quiet: bool, **params) -> None:
    """Restore every face in VIDEO; write VIDEO.restored.<ext> (input untouched).

    Timing, audio, subtitles, colour tags and rotation are kept. An interrupted run resumes
    from its last finished segment when run again with the same options.
    """
    from iconface_video.pipeline import restore_file

    options = options_from(params)
    analyze = analyze_settings(params)
    progress = _progress(json_lines, quiet)
    if options.dry_run:
        # Nothing may be written, not even the analysis: keep it in a temporary folder.
        with tempfile.TemporaryDirectory(prefix="iconface-dry-run-") as scratch:
            report = restore_file(input_path, output_path, options, analyze, progress, analysis_dir=Path(scratch))
        click.echo(shown(report.summary(), one_line=False))
        return
    report = restore_file(input_path, output_path, options, analyze, progress)
    if json_lines:
        # The last line a script reads: the finished job, its output and the whole report.
        progress.event("done", stage="job", output=report.output, report=report.to_json())
    elif not quiet:
        click.echo(shown(report.summary(), one_line=False), err=True)


def _progress(json_lines: bool, quiet: bool):
    from iconface_video.progress import Progress

    return Progress.create(json_lines=json_lines, enabled=not quiet)


def analyze_settings(params: dict) -> AnalyzeSettings:
    """``AnalyzeSettings`` from the parsed values of ``analysis_options`` and ``render_options``
    (``--refs``, ``--models-dir``)."""
    from iconface_video.analysis.settings import AnalyzeSettings

    return AnalyzeSettings(detect_every=params["detect_every"], detector=params["detector"],
                           embedder=params["embedder"], rotation=params["rotation"], max_refs=params["max_refs"],
                           models_dir=params.get("models_dir"), refs=ref_specs(params))
