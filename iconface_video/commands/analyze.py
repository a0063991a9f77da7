"""``iconface-video analyze movie.mp4``: shots, face tracks, identities and references -> the analysis file."""

from __future__ import annotations

from pathlib import Path

import click

from iconface_video.errors import OutputError


@click.command("analyze")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Analysis file to write (default: VIDEO's name with .iconface.json, beside it).")
@click.option("--detect-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the face detector every k-th frame of a shot and interpolate between (faster).")
@click.option("--refs", "refs", multiple=True, metavar="NAME=DIR",
              help="Photos of a person: names the identity they match and adds them as references (repeatable).")
@click.option("--max-refs", type=click.IntRange(min=0), default=4, show_default=True,
              help="References kept per identity.")
@click.option("--detector", type=click.Choice(["auto", "mtcnn", "insightface", "facexlib"]), default="auto",
              show_default=True, help="Face detector (auto: the strongest whose weights are present).")
@click.option("--embedder", type=click.Choice(["dlib", "arcface", "adaface"]), default="dlib", show_default=True,
              help="Identity encoder for tracking and identities.")
@click.option("--rotation", type=click.Choice(["auto", "tag", "none", "0", "90", "180", "270"]), default="auto",
              show_default=True,
              help="Which way the face detector turns frames: auto (tries each way on the first faces; for files "
                   "whose rotation tag is wrong), tag (as the container says), none (as stored), or degrees CCW.")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder holding downloaded model weights.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the detector (cpu, cuda, cuda:1).")
@click.option("--start", default=None, help="Analyse from here: seconds (12.5, 1:02.5) or a frame (300f).")
@click.option("--end", default=None, help="Stop before here (exclusive): seconds or a frame (450f).")
@click.option("--overwrite", is_flag=True, help="Replace an existing analysis file.")
@click.option("--no-contact-sheets", is_flag=True, help="Do not write the per-identity contact sheets.")
@click.option("--json", "json_lines", is_flag=True, help="Progress as JSON lines on stdout (for scripts).")
def command(video: Path, output: Path | None, detect_every: int, refs: tuple[str, ...], max_refs: int,
            detector: str, embedder: str, rotation: str, models_dir: Path | None, device: str, start: str | None,
            end: str | None, overwrite: bool, no_contact_sheets: bool, json_lines: bool) -> None:
    """Find shots, face tracks, identities and references in VIDEO; write the analysis file.

    \b
    iconface-video analyze movie.mp4                       # -> movie.iconface.json + movie.iconface.refs/
    iconface-video analyze movie.mp4 --refs "Anna=photos/anna/" --detect-every 4
    """
    from iconface_video.analysis.settings import AnalyzeSettings, default_output, refs_folder
    from iconface_video.analysis.video import analyze_video
    from iconface_video.faces.photos import parse_ref_spec
    from iconface_video.files import check_name_fits, check_new_file, shown
    from iconface_video.io.probe import check_video, probe
    from iconface_video.progress import Progress
    from iconface_video.render.options import frame_range

    info = probe(video)
    check_video(info)
    output = output or default_output(video)
    if output.suffix.lower() != ".json":
        raise OutputError(f"{output}: the analysis file is JSON; give -o a name ending in .json")
    check_new_file(output, overwrite=overwrite, inputs=[video])
    check_name_fits(output)  # its references folder and checkpoint are named after it
    first, last = frame_range(video, start, end, info)  # the same positions as run and render take
    settings = AnalyzeSettings(
        detect_every=detect_every, max_refs=max_refs, detector=detector, embedder=embedder, models_dir=models_dir,
        device=device, refs=tuple(parse_ref_spec(spec) for spec in refs), start=first or None, end=last,
        contact_sheets=not no_contact_sheets, rotation=rotation,
    )
    progress = Progress.create(json_lines=json_lines)
    analysis = analyze_video(video, output, settings, progress)
    if not json_lines:
        named = sum(1 for i in analysis.identities if i.name)
        click.echo(
            f"{shown(output)}: {len(analysis.shots)} shots, {len(analysis.tracks)} face tracks, "
            f"{len(analysis.identities)} identities ({named} named), {len(analysis.references)} references; "
            f"crops and contact sheets in {shown(refs_folder(output))}/",
            err=True,
        )
