"""``iconface-video movie.mp4``: the whole job, from one video to its restored copy.

For now the stages that exist are decode -> encode; restoration plugs into
``iconface_video.pipeline.run_job`` as its ``process``.
"""

from __future__ import annotations

from pathlib import Path

import click

from iconface_video.io.writer import CODECS, EncodeSettings
from iconface_video.pipeline import JobSettings, run_job
from iconface_video.progress import Progress


@click.command(name="run")
@click.argument("input_path", metavar="VIDEO", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Output file [default: VIDEO.restored.<ext> beside the input].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--codec", type=click.Choice(CODECS), default=None,
              help="Video encoder [default: libx264; libvpx-vp9 for .webm].")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Constant quality, lower is better [default: 18 x264, 20 x265, 30 VP9/AV1].")
@click.option("--preset", default=None, help="Encoder speed preset (x264/x265: ultrafast..veryslow; AV1: 0..13).")
@click.option("--pix-fmt", default=None,
              help="Output pixel format, e.g. yuv420p or yuv420p10le [default: the source's bit depth].")
@click.option("--segment-frames", type=click.IntRange(1), default=500, show_default=True,
              help="Frames per resumable segment.")
@click.option("--json", "json_lines", is_flag=True, help="Progress as JSON lines on stdout instead of a bar.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def command(input_path: Path, output_path: Path | None, overwrite: bool, codec: str | None, crf: int | None,
            preset: str | None, pix_fmt: str | None, segment_frames: int, json_lines: bool, quiet: bool) -> None:
    """Restore every face in VIDEO; write VIDEO.restored.<ext> (input untouched).

    Timing, audio, subtitles, colour tags and rotation are kept. An interrupted run resumes
    from its last finished segment when run again with the same options.
    """
    settings = JobSettings(
        encode=EncodeSettings(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, segment_frames=segment_frames),
        overwrite=overwrite,
    )
    progress = Progress.create(json_lines=json_lines, enabled=not quiet)
    result = run_job(input_path, output_path, settings, progress=progress)
    if not json_lines and not quiet:
        click.echo(f"wrote {result.output_path} ({result.frames} frames, {result.timings['total']:.1f} s)", err=True)
