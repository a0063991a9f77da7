"""The training loop: unified reference schedule, EMA, exact resume, DDP with the same command.

One command for one CPU, one GPU or many (``torchrun --nproc_per_node N -m iconface_video ...``
or ``torchrun ... $(which iconface-video) train ...``): the process group is initialised from
torchrun's environment (gloo on CPU, NCCL on CUDA) and each rank trains on its slice of every
global batch.

Reproducibility and resume: the data position *is* the step counter (``sources``); a checkpoint
stores model, EMA, optimizer, scheduler, the step and the RNG states (``checkpoints``), and a
resumed run follows the identical loss trajectory. The log and loss plot are ``logs``' job, the
process group ``distributed``'s.

Run folder::

    RUN/train.yaml  core.json  split.json        the resolved configs and the identity split
    RUN/log.jsonl                                one JSON line per logged step
    RUN/loss.png                                 loss curves (rewritten every ``plot_every``)
    RUN/checkpoints/step_000200/                 model.safetensors, ema.safetensors, state.pt,
                                                 restorer.safetensors + restorer.json (EMA export)
    RUN/checkpoints/latest                       name of the newest complete checkpoint
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
import yaml
from torch.optim.swa_utils import AveragedModel

from iconface_video.core.batch import TrainBatch
from iconface_video.core.config import CoreConfig, load_config
from iconface_video.core.losses import LossWeights, compute_losses
from iconface_video.core.model import IConFaceCore
from iconface_video.errors import UserError
from iconface_video.files import write_text_atomic
from iconface_video.train.checkpoints import (
    check_run_folder,
    latest_checkpoint,
    load_training_state,
    prune,
    save_training_state,
    warm_start,
)
from iconface_video.train.config import TrainConfig
from iconface_video.train.distributed import agree, init_distributed
from iconface_video.train.logs import plot_losses, read_log, reduce_window, truncate_log
from iconface_video.train.sources import device_source, file_source


class _LossModule(torch.nn.Module):
    """Wraps the core so DDP sees one forward that returns the loss dict."""

    def __init__(self, core: IConFaceCore, encoder: _IdentityOnTemplate | None, weights: LossWeights) -> None:
        super().__init__()
        self.core = core
        self.encoder = encoder
        self.weights = weights

    def forward(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        return compute_losses(self.core, batch, self.encoder, self.weights)


def ema_fn(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """EMA update with the usual warm-up ``min(decay, (1 + n) / (10 + n))``: early averages follow
    the weights instead of clinging to the random initialisation (short CPU runs need this)."""

    def update(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg + (new - avg) * (1.0 - d)

    return update


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class _IdentityOnTemplate(torch.nn.Module):
    """The PyTorch dlib network on the core's crops: ``(crops) → descriptors`` and ``features``."""

    def __init__(self, template: str, device: torch.device) -> None:
        super().__init__()
        from iconface_video.faces.dlib_resnet import load_dlib_identity

        self.net = load_dlib_identity(device=device)
        self.template = template

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net.embed(crops, self.template)

    def features(self, crops: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(crops, self.template)


def _identity_net(cfg: TrainConfig, core_config: CoreConfig, device: torch.device) -> _IdentityOnTemplate | None:
    """The differentiable identity network for the identity/feature losses, or None when unused.

    Only the dlib network shares the anchor's feature space (the reference hinge compares with it)."""
    if not (cfg.id_loss_weight or cfg.feat_loss_weight or cfg.ref_loss_weight) or core_config.id_encoder != "dlib":
        return None
    return _IdentityOnTemplate(core_config.template, device)


def train(cfg: TrainConfig, data: str | Path, run: str | Path, *, resume: bool = False,
          max_minutes: float | None = None, until_step: int | None = None) -> Path:
    """Train a core on the identity set ``data``; writes everything under ``run``. Returns ``run``.

    Stops after ``cfg.steps`` steps, at ``until_step`` (an interruption that leaves the schedule
    unchanged), after ``max_minutes``, or on SIGTERM/SIGINT, always with a checkpoint. ``resume``
    continues from ``RUN/checkpoints/latest`` (an error if there is none).
    """
    run = Path(run)
    d = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    core_config = load_config(cfg.core)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        check_run_folder(run, cfg, resume)
        write_text_atomic(yaml.safe_dump(cfg.to_dict(), sort_keys=False), run / "train.yaml")
        write_text_atomic(json.dumps(core_config.to_dict(), indent=2), run / "core.json")
    if d.world > 1:
        dist.barrier()
    source = device_source(cfg, core_config, d) if cfg.device_data else file_source(cfg, data, core_config, run, d)
    if d.main:
        write_text_atomic(json.dumps(source.split, indent=2), run / "split.json")
    sides = source.sides

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    core = IConFaceCore(core_config).to(d.device)
    weights = LossWeights(l1=cfg.l1_loss_weight, grad=cfg.grad_loss_weight, id=cfg.id_loss_weight,
                          feat=cfg.feat_loss_weight, ref=cfg.ref_loss_weight, ref_margin=cfg.ref_margin)
    module = _LossModule(core, _identity_net(cfg, core_config, d.device), weights)
    ema = AveragedModel(core, avg_fn=ema_fn(cfg.ema_decay), use_buffers=True)
    params = [p for p in core.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    start = 0
    if cfg.init and not resume:
        warm_start(core, ema, Path(cfg.init))
    if resume:
        folder = latest_checkpoint(run)
        if folder is None:
            raise UserError(f"{run}: nothing to resume (no checkpoints/latest); start without --resume")
        start = load_training_state(folder, core, ema, opt)
    step_module = module
    if d.world > 1:
        step_module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[d.device.index] if d.device.type == "cuda" else None, find_unused_parameters=True)
    log_path = run / "log.jsonl"
    if d.main and resume:
        truncate_log(log_path, start)

    stop = _StopFlag()
    amp = autocast_dtype(cfg, d.device)
    t_begin, t_ckpt = time.monotonic(), time.monotonic()
    step = start
    meta = {"train_config": cfg.to_dict(), "data": source.split["data"], "holdout": source.split["holdout"],
            "template": core_config.template, "crop_size": core_config.crop_size, "sides": sides,
            "recommended_steps": 1}
    window: list[dict[str, float]] = []
    log_f = log_path.open("a") if d.main else None
    try:
        for batch in source.batches(start):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            with torch.autocast(d.device.type, dtype=amp, enabled=amp is not None):
                losses = step_module(batch)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            ema.update_parameters(core)
            step += 1
            window.append({f"loss_{k}": float(v.detach()) for k, v in losses.items()} | {"grad_norm": float(gnorm)})
            out_of_time = (max_minutes is not None and time.monotonic() - t_begin > max_minutes * 60) \
                or (until_step is not None and step >= until_step)
            stopping = agree(stop.requested or out_of_time, d)
            if step % cfg.log_every == 0 or step == cfg.steps or stopping:
                rec = reduce_window(window, d)
                window = []
                if d.main:
                    rec = {"step": step, "lr": lr_at(cfg, step - 1), "elapsed_s": round(time.monotonic() - t_begin, 2),
                           "samples": step * cfg.batch_size * d.world, "world": d.world, **rec}
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
            due = step % cfg.checkpoint_every == 0 or time.monotonic() - t_ckpt > cfg.checkpoint_minutes * 60
            due = agree(due, d)
            if due or stopping or step == cfg.steps:
                if d.main:
                    save_training_state(run / "checkpoints" / f"step_{step:07d}", step, core, ema, opt,
                                        {**meta, "wall_s": round(time.monotonic() - t_begin, 1)})
                    prune(run, cfg.keep_checkpoints)
                t_ckpt = time.monotonic()
            if d.main and (step % cfg.plot_every == 0 or stopping or step == cfg.steps):
                plot_losses(read_log(log_path), run / "loss.png")
            if stopping:
                break
    finally:
        stop.restore()
        if log_f is not None:
            log_f.close()
        if d.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    return run


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Callable | int | None] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
