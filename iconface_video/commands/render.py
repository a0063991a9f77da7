"""``iconface-video render ANALYSIS.json``: restore a video from an (optionally hand-edited) analysis file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from iconface_video.files import shown
from iconface_video.io.encoding import CODECS

if TYPE_CHECKING:
    from iconface_video.render.options import RenderOptions


def render_options(function):
    """The options every restoring command shares (``render`` here; ``run`` can reuse them)."""
    options = [
        click.option("--strength", type=click.FloatRange(0, 1), default=1.0, show_default=True,
                     help="How much of the restoration to paste: 0 keeps the input, 1 the restored face."),
        click.option("--temporal", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="Temporal smoothing of alignment, masks and colour within each track (0 = off)."),
        click.option("--refs", "refs", multiple=True, metavar="NAME=DIR",
                     help="Photos of a named person used as extra references (repeatable)."),
        click.option("--no-refs", is_flag=True, help="Restore without any reference face."),
        click.option("--identities", default=None, metavar="ID,NAME,...",
                     help="Restore only these people (ids or names from the analysis file)."),
        click.option("--start", default=None, help="Restore from here: seconds (12.5, 1:02.5) or a frame (300f)."),
        click.option("--end", default=None, help="Restore up to here (exclusive): seconds or a frame (450f)."),
        click.option("--codec", type=click.Choice(CODECS), default=None, help="Video encoder [default: libx264]."),
        click.option("--crf", type=click.IntRange(0, 63), default=None, help="Constant quality, lower is better."),
        click.option("--preset", default=None, help="Encoder speed preset (x264/x265: ultrafast..veryslow)."),
        click.option("--pix-fmt", default=None, help="Output pixel format [default: the source's bit depth]."),
        click.option("--segment-frames", type=click.IntRange(1), default=500, show_default=True,
                     help="Frames per resumable segment."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
                     help="Face crops restored at once (memory grows with it)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, help="Arithmetic of the restorer (auto: bf16 on GPU, fp32 on CPU)."),
        click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                     help="A restorer checkpoint (.safetensors) [default: the embedded one]."),
        click.option("--steps", type=click.IntRange(1, 64), default=None,
                     help="Sampling steps [default: the checkpoint's own; 1 for the embedded one]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Noise seed (one sample per track)."),
        click.option("--preview", is_flag=True, help="Write input | restored side by side instead."),
        click.option("--dry-run", is_flag=True, help="Report what would be restored; write nothing."),
        click.option("--min-eye-px", type=click.FloatRange(0), default=None,
                     help="Leave faces with eyes closer than this alone [default: from the restorer's crop size]."),
        click.option("--deinterlace", type=click.Choice(["auto", "refuse"]), default="auto", show_default=True,
                     help="Interlaced sources: deinterlace (yadif) or stop with an error."),
        click.option("--no-html", is_flag=True, help="Do not write the HTML report beside the output."),
        click.option("--models-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder with downloaded weights (also $ICONFACE_MODELS)."),
        click.option("--identity-guard", "identity_guard", type=click.FloatRange(min=0), default=0.05,
                     show_default=True, metavar="MARGIN",
                     help="Lower a face's restoration strength where restoring lowered its identity similarity by "
                          "more than MARGIN (0 turns it off)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def options_from(params: dict) -> RenderOptions:
    """``RenderOptions`` from the parsed values of ``render_options`` (plus ``overwrite``); the
    ``--refs`` photos are the analysis's (``ref_specs``)."""
    from iconface_video.render.options import RenderOptions

    identities = params.get("identities")
    models_dir = params.get("models_dir")
    return RenderOptions(
        strength=params["strength"], temporal=params["temporal"], no_refs=params["no_refs"],
        identities=tuple(s.strip() for s in identities.split(",") if s.strip()) if identities else None,
        start=params["start"], end=params["end"], codec=params["codec"], crf=params["crf"], preset=params["preset"],
        pix_fmt=params["pix_fmt"], segment_frames=params["segment_frames"], device=params["device"],
        batch_size=params["batch_size"], precision=params["precision"],
        checkpoint=str(params["checkpoint"]) if params["checkpoint"] else None, steps=params["steps"],
        seed=params["seed"], preview=params["preview"], dry_run=params["dry_run"], min_eye_px=params["min_eye_px"],
        deinterlace=params["deinterlace"], overwrite=params.get("overwrite", False), html=not params["no_html"],
        identity_guard=params["identity_guard"], models_dir=str(models_dir) if models_dir else None,
    )


def ref_specs(params: dict) -> tuple[tuple[str, Path], ...]:
    """The ``--refs NAME=DIR`` values, each checked (the folder exists and holds photos) before any model loads."""
    from iconface_video.faces.photos import parse_ref_spec

    return tuple(parse_ref_spec(spec) for spec in params.get("refs", ()))


@click.command(name="render")
@click.argument("analysis_path", metavar="ANALYSIS.json", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="The video [default: the one the analysis file names].")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Output file [default: VIDEO.restored.<ext> beside the video].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@render_options
@click.option("--json", "json_lines", is_flag=True, help="Progress as JSON lines on stdout instead of a bar.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def command(analysis_path: Path, input_path: Path | None, output_path: Path | None, json_lines: bool, quiet: bool,
            **params) -> None:
    """Restore the faces of ANALYSIS.json's video (see `iconface-video analyze`).

    Edit the analysis file first to rename or merge people or drop references. `--refs NAME=DIR`
    adds the photos to the analysis file as NAME's references (as `analyze --refs` does) before
    the render. An interrupted render resumes from its last finished segment when run again with
    the same options.
    """
    import json
    import tempfile

    from iconface_video.progress import Progress
    from iconface_video.render.video import render_video

    options = options_from(params)
    refs = ref_specs(params)
    progress = Progress.create(json_lines=json_lines, enabled=not quiet)
    with tempfile.TemporaryDirectory(prefix="iconface-dry-run-") as scratch:
        analysis = analysis_path
        if refs:
            if options.dry_run:  # nothing may be written: add the photos to a copy of the analysis
                analysis = _copy_analysis(analysis_path, Path(scratch))
            analysis = _with_photos(analysis, refs, options, progress)
        report = render_video(analysis, input_path, output_path, options, progress)
    if json_lines:
        progress.event("render", stage="render", report=report.to_json())
    elif options.dry_run:
        click.echo(shown(report.summary(), one_line=False))
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    elif not quiet:
        click.echo(shown(report.summary(), one_line=False), err=True)


def _with_photos(analysis_path: Path, refs: tuple[tuple[str, Path], ...], options: RenderOptions, progress):
    """The analysis file with ``refs`` added as references (the analysis resolves photos, never the render)."""
    from iconface_video.analysis.photos import add_photo_references
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.render.options import resolve_device

    settings = AnalyzeSettings(models_dir=options.models_dir, device=str(resolve_device(options.device)))
    return add_photo_references(analysis_path, refs, settings, progress=progress)


def _copy_analysis(analysis_path: Path, folder: Path) -> Path:
    """A copy of the analysis file in ``folder`` whose crop paths still point at the original crops."""
    from iconface_video.analysis.schema import load_analysis, save_analysis

    copy = folder / analysis_path.name
    save_analysis(load_analysis(analysis_path), copy)
    return copy
