"""``iconface-video models list|fetch|verify``: where each model's weights are, checksums, licences."""

from __future__ import annotations

from pathlib import Path

import click

from iconface_video.errors import UserError

MODELS_DIR = click.option(
    "--models-dir", type=click.Path(path_type=Path), default=None,
    help="Folder searched first (then $ICONFACE_MODELS, the user cache, the embedded copies); fetch writes here.",
)


@click.group("models")
def command() -> None:
    """List, fetch and verify model weights (licences included: some are non-commercial)."""


@command.command("list")
@MODELS_DIR
def list_models(models_dir: Path | None) -> None:
    """Every model: present or missing, where, licence, and whether commercial use is allowed."""
    from iconface_video.weights import MODELS, find_model_file, is_present, search_dirs

    click.echo("search order: " + ", ".join(str(d) for d in search_dirs(models_dir)) + ", embedded")
    for model in MODELS:
        present = is_present(model, models_dir)
        where = str(find_model_file(model, model.files[0].name, models_dir).parent) if present else "-"
        commercial = "commercial use OK" if model.commercial_use else "NON-COMMERCIAL"
        origin = "embedded" if model.embedded else "converted" if model.derived_from else "download"
        click.echo(f"{model.name:14} {model.kind:17} {'present' if present else 'missing':8} {origin:8} {commercial:17} {where}")
        click.echo(f"{'':14} {model.description}; licence: {model.licence}")


@command.command("fetch")
@click.argument("names", nargs=-1, required=True)
@MODELS_DIR
def fetch_models(names: tuple[str, ...], models_dir: Path | None) -> None:
    """Download NAMES (checksums checked where upstream publishes them)."""
    from iconface_video.weights import fetch, get_model, verify

    for name in names:
        try:
            model = get_model(name)
        except KeyError as error:
            raise UserError(str(error.args[0])) from None
        if model.derived_from:
            raise UserError(f"{name} is not downloaded: it is made from {model.derived_from} on first use "
                            "(e.g. by `iconface-video faces PHOTO --embed`)")
        if not model.commercial_use:
            click.echo(f"note: {model.name} is licensed {model.licence}", err=True)
        if not (model.archive or any(f.urls for f in model.files)):
            raise UserError(f"{name} has no download URL: {model.obtain}; then put its files in --models-dir")
        for path in fetch(model, models_dir):
            click.echo(f"fetched {path}")
        for check in verify(model, models_dir):
            click.echo(f"{check.status:9} {check.file} {check.detail}")


@command.command("verify")
@click.argument("names", nargs=-1)
@MODELS_DIR
def verify_models(names: tuple[str, ...], models_dir: Path | None) -> None:
    """Check size and SHA-256 of the present weight files (all models, or NAMES)."""
    from iconface_video.weights import MODELS, get_model, verify

    try:
        models = [get_model(n) for n in names] if names else list(MODELS)
    except KeyError as error:
        raise UserError(str(error.args[0])) from None
    bad = 0
    for model in models:
        for check in verify(model, models_dir):
            if check.status == "missing" and not names:
                continue  # only named models must be present
            bad += check.status in ("missing", "mismatch")
            where = check.path if check.path else ""
            click.echo(f"{check.status:9} {model.name:14} {check.file} {where} {check.detail}".rstrip())
    if bad:
        raise UserError(f"{bad} weight file(s) missing or not matching their checksum; run `iconface-video models fetch NAME`", exit_code=1)
