"""``iconface-video train``: train a restoration core on face photos grouped by person.

The same command runs on one CPU, one GPU or several (``torchrun --nproc_per_node N
$(which iconface-video) train ...``); see ``iconface_video/train/trainer.py``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.option("--config", "config", required=True, help="Training YAML, or a name in configs/train/ (cpu, gpu-window).")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="A folder with one sub-folder of aligned face crops per person, or a path,identity CSV.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this much wall time.")
@click.option("--steps", type=int, default=None, help="Override the config's step count.")
@click.option("--stop-at-step", type=int, default=None,
              help="Stop (with a checkpoint) at this step without changing the schedule; --resume continues.")
@click.option("--features", default=None, help="Precomputed identity features (.npz from a previous run).")
@click.option("--align-to", type=click.Path(path_type=Path), default=None,
              help="--data holds ordinary photos: detect and align them into this folder first.")
@click.option("--init", "init", default=None, help="Start from this core checkpoint's weights (.safetensors).")
def command(config: str, data: Path, out: Path | None, resume: bool, max_minutes: float | None,
            steps: int | None, stop_at_step: int | None, features: str | None, align_to: Path | None,
            init: str | None) -> None:
    """Train a restoration core; checkpoints, logs and loss curves go to the run folder."""
    from iconface_video.train.config import load_train_config
    from iconface_video.train.trainer import train

    cfg = load_train_config(config)
    changes = {k: v for k, v in {"steps": steps, "features": features, "init": init}.items() if v is not None}
    cfg = cfg.replace(**changes)
    if align_to is not None:
        from iconface_video.core.config import load_config
        from iconface_video.train.data import align_photo_folder

        core = load_config(cfg.core)
        data = align_photo_folder(data, align_to, template=core.template, size=core.crop_size).root
    run = out or Path("runs") / Path(config).stem
    train(cfg, data, run, resume=resume, max_minutes=max_minutes, until_step=stop_at_step)
    click.echo(f"run folder: {run}")
