"""A run's checkpoints (``RUN/checkpoints/step_NNNNNNN/`` and ``latest``): writing, pruning,
resuming, warm starts, and the rules for what a resumed run may change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch.optim.swa_utils import AveragedModel

from iconface_video.config_files import load_config_file
from iconface_video.core.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from iconface_video.core.model import IConFaceCore
from iconface_video.errors import UserError
from iconface_video.files import write_text_atomic
from iconface_video.train.config import TrainConfig


def save_training_state(folder: Path, step: int, model: torch.nn.Module, ema: AveragedModel,
                        opt: torch.optim.Optimizer, meta: dict) -> None:
    """Write one complete checkpoint to ``folder`` (via a temporary folder, renamed at the end)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    save_model(ema, str(tmp / "ema.safetensors"))
    torch.save({"step": step, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
               tmp / "state.pt")
    save_checkpoint(tmp / "restorer.safetensors", ema.module, {**meta, "step": step, "weights": "ema"})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    write_text_atomic(folder.name + "\n", folder.parent / "latest")


def latest_checkpoint(run: Path) -> Path | None:
    marker = run / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    folder = run / "checkpoints" / marker.read_text().strip()
    return folder if folder.is_dir() else None


def load_training_state(folder: Path, model: torch.nn.Module, ema: AveragedModel, opt: torch.optim.Optimizer) -> int:
    """Restore model, EMA, optimizer and RNG states from ``folder``; returns the next step."""
    load_model(model, str(folder / "model.safetensors"))
    load_model(ema, str(folder / "ema.safetensors"))
    state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def warm_start(core: IConFaceCore, ema: AveragedModel, path: Path) -> None:
    """Start from other weights (e.g. the no-reference stage of §5.9) with a fresh optimizer.

    ``path`` is a core checkpoint (``.safetensors`` + sidecar) or a run's checkpoint folder, whose
    raw (not EMA) weights are taken: a short stage's EMA still leans on its initialisation.
    """
    if path.is_dir():
        _check_same_network(read_sidecar(path / "restorer.safetensors")["config"], core.config.to_dict(), path)
        load_model(core, str(path / "model.safetensors"))
    elif path.is_file():
        donor, _ = load_checkpoint(path)
        _check_same_network(donor.config.to_dict(), core.config.to_dict(), path)
        core.load_state_dict(donor.state_dict())
    else:
        raise UserError(f"init checkpoint not found: {path}")
    ema.module.load_state_dict(core.state_dict())


# Core config fields that change the objective or the sampler but not the network: a warm start
# may change them (e.g. a later stage that puts more weight on noisy times).
_NOT_ARCHITECTURE = {"name", "t_mu", "time_shift", "t_min_velocity", "t_max"}


def _check_same_network(donor: dict, mine: dict, path: Path) -> None:
    differ = sorted(k for k in set(donor) | set(mine) if k not in _NOT_ARCHITECTURE and donor.get(k) != mine.get(k))
    if differ:
        raise UserError(f"{path} has a different network ({', '.join(differ)}); it cannot start this run")


def prune(run: Path, keep: int) -> None:
    folders = sorted((run / "checkpoints").glob("step_*"))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def check_run_folder(run: Path, cfg: TrainConfig, resume: bool) -> None:
    if resume:
        saved = run / "train.yaml"
        if saved.is_file():
            old = load_config_file(saved, TrainConfig.from_dict, what="training config")
            changed = [k for k, v in cfg.to_dict().items() if old.to_dict().get(k) != v and k not in _RESUME_MAY_CHANGE]
            if changed:
                raise UserError(f"{run}: --resume with a different config ({', '.join(changed)}); use a new --out")
        return
    if latest_checkpoint(run) is not None:
        raise UserError(f"{run} already holds a training run; pass --resume to continue it or choose another --out")


# Keys that may change when resuming: bookkeeping, or (init) only read when a run starts.
# ``steps`` changes the learning-rate schedule from the resumed step on.
_RESUME_MAY_CHANGE = {"steps", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "log_every",
                      "plot_every", "threads", "workers", "init"}
