"""``iconface-video eval``: score a restoration core on held-out identity photos.

Each photo is degraded reproducibly per bucket and restored without and with the person's other
photos as references; PSNR, SSIM and identity cosine are reported per (method, bucket) against the
degraded input and a bicubic/unsharp baseline. See ``iconface_video/train/evaluate.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from iconface_video.errors import OutputError, UserError
from iconface_video.files import check_new_file


@click.command("eval")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="A folder with one sub-folder of aligned face crops per person (people not seen in training).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Core checkpoint (.safetensors); default: the embedded restorer.")
@click.option("--json", "json_out", required=True, type=click.Path(path_type=Path), help="Write the records here.")
@click.option("--grid", type=click.Path(path_type=Path), default=None, help="Write a PNG grid input / outputs / truth.")
@click.option("--people", default=None, help="Comma-separated people to use (default: every folder in --data).")
@click.option("--per-person", type=int, default=12, show_default=True, help="Photos per person.")
@click.option("--refs", "k_refs", type=int, default=4, show_default=True, help="References per photo (other photos of the person).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Sampling steps of the restorer (default: the checkpoint's recommended steps).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--buckets", default="standard,severe,video", show_default=True)
@click.option("--align-to", type=click.Path(path_type=Path), default=None,
              help="--data holds ordinary photos: detect and align them into this folder first.")
@click.option("--no-model", is_flag=True, help="Only the input and the classical baseline (no checkpoint needed).")
@click.option("--overwrite", is_flag=True, help="Replace existing --json and --grid files.")
def command(data: Path, weights: Path | None, json_out: Path, grid: Path | None, people: str | None, per_person: int,
            k_refs: int, steps: int | None, seed: int, buckets: str, align_to: Path | None, no_model: bool,
            overwrite: bool) -> None:
    """Evaluate a restorer on photos of people grouped in folders; writes JSON records (and a grid)."""
    check_outputs(json_out, grid, [data, *([align_to] if align_to else []), *([weights] if weights else [])], overwrite)
    import torch

    from iconface_video.faces.embed import load_embedder
    from iconface_video.train import degrade as D
    from iconface_video.train.data import align_photo_folder, scan_identities
    from iconface_video.train.evaluate import evaluate, write_grid, write_json

    chosen = tuple(b.strip() for b in buckets.split(",") if b.strip())
    bad = [b for b in chosen if b not in D.BUCKETS]
    if bad:
        raise UserError(f"unknown bucket(s) {', '.join(bad)}; choose from {', '.join(D.BUCKETS)}")
    restorer = None
    if not no_model:
        from iconface_video.core.restorer import Restorer

        restorer = Restorer.from_checkpoint(weights)
    template, size = (restorer.template, restorer.crop_size) if restorer is not None else ("arcface", 112)
    if align_to is not None:
        data = align_photo_folder(data, align_to, template=template, size=size).root
    ids = scan_identities(data, template=template)
    if people:
        names = [p.strip() for p in people.split(",") if p.strip()]
        missing = sorted(set(names) - set(ids.people))
        if missing:
            raise UserError(f"not found in {data}: {', '.join(missing)}")
        ids = ids.subset(names)
    torch.manual_seed(seed)
    embed = load_embedder("dlib").embed_aligned112
    records, cases, outs = evaluate(ids, restorer=restorer, embed=embed, buckets=chosen, per_person=per_person,
                                    k_refs=k_refs, seed=seed, steps=steps)
    meta = {"data": str(data.resolve()), "people": list(ids.people), "weights": None if no_model else str(weights or "embedded"),
            "per_person": per_person, "k_refs": k_refs, "seed": seed, "buckets": list(chosen),
            "steps": steps if steps is not None or restorer is None else restorer.default_steps,
            "id_encoder": "dlib", "n_cases": len(cases)}
    write_json(json_out, records, meta)
    if grid is not None:
        write_grid(grid, cases, outs)
    for r in records:
        click.echo(f"{r['bucket']:>9} {r['method']:>16}  PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.4f}  "
                   f"id_cos {'-' if r['id_cos'] is None else format(r['id_cos'], '.4f')}  n={r['n']}")


def check_outputs(json_out: Path, grid: Path | None, inputs: list[Path], overwrite: bool) -> None:
    """Before any work: the records and grid go to new files (or ``overwrite``), never onto an
    input (a photo under ``--data``, the checkpoint) and not onto each other."""
    if json_out.suffix.lower() != ".json":
        raise OutputError(f"{json_out}: --json writes JSON; give a name ending in .json")
    if grid is not None and grid.suffix.lower() != ".png":
        raise OutputError(f"{grid}: --grid writes a PNG; give a name ending in .png")
    for option, path in (("--json", json_out), ("--grid", grid)):
        if path is None:
            continue
        for source in inputs:
            if path.exists() and _within(path, source):
                raise OutputError(f"{path}: is an input of this evaluation (in {source}); choose another {option}")
        check_new_file(path, overwrite=overwrite, inputs=[p for p in inputs if p.is_file()], option=option)
    if grid is not None and _within(grid, json_out):
        raise OutputError(f"{grid}: --grid and --json name the same file; give each its own")


def _within(path: Path, source: Path) -> bool:
    """Whether ``path`` is ``source`` or lies inside the folder ``source``."""
    path, source = Path(os.path.realpath(path)), Path(os.path.realpath(source))
    return path == source or source in path.parents
