"""The training loop: unified reference schedule, EMA, exact resume, DDP with the same command.

One command for one CPU, one GPU or many (``torchrun --nproc_per_node N -m iconface_video ...``
or ``torchrun ... $(which iconface-video) train ...``): the process group is initialised from
torchrun's environment (gloo on CPU, NCCL on CUDA) and each rank trains on its slice of every
global batch.

Reproducibility and resume: sample number ``n`` of the run is ``FaceSampler.sample(n)`` and the
times/noise of step ``s`` on rank ``r`` come from a generator seeded with ``(seed, s, r)``, so
the data position *is* the step counter; a checkpoint stores model, EMA, optimizer, scheduler,
the step and the RNG states, and a resumed run follows the identical loss trajectory.

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
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_model, save_model
from torch.optim.swa_utils import AveragedModel

from iconface_video.core.batch import training_times
from iconface_video.errors import UserError
from iconface_video.train.config import TrainConfig
from iconface_video.train.data import (
    FaceSampler,
    IdentitySet,
    RefSchedule,
    Sample,
    compute_features,
    load_features,
    reference_pool,
    save_features,
    scan_identities,
    split_identities,
)


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join torchrun's process group when its environment is set; NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, device=device)


# ----------------------------------------------------------------------------- batches
def collate(samples: list[Sample], core_config, *, t: torch.Tensor, noise: torch.Tensor, track_base: int = 0):
    """Stack samples into the core's ``TrainBatch`` (pixels in [-1, 1]); each sample is its own track.

    Anchor/tokens drops of §5.8 become ``ref_in_anchor`` / ``ref_in_tokens``; invalid references
    have ``ref_valid = False`` and are removed from both paths by the core.
    """
    from iconface_video.core.batch import TrainBatch

    def pm1(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() * 2 - 1

    b = len(samples)
    counts = [len(s.refs) for s in samples]
    rs = core_config.ref_size
    refs = np.concatenate([s.refs for s in samples]) if sum(counts) else np.zeros((0, rs, rs, 3), np.float32)
    feats = None
    if samples[0].ref_feat is not None:
        feats = torch.from_numpy(np.concatenate([s.ref_feat for s in samples])).float()
    return TrainBatch(
        lq=pm1(np.stack([s.lq for s in samples])),
        hq=pm1(np.stack([s.hq for s in samples])),
        track=torch.arange(track_base, track_base + b, dtype=torch.int64),
        refs=pm1(refs),
        ref_track=torch.from_numpy(np.repeat(np.arange(track_base, track_base + b), counts)).long(),
        ref_valid=torch.from_numpy(np.concatenate([s.ref_valid for s in samples]).astype(bool)) if sum(counts)
        else torch.zeros(0, dtype=torch.bool),
        t=t,
        noise=noise,
        id_feat=feats,
        ref_in_tokens=torch.tensor([s.use_tokens for s, c in zip(samples, counts) for _ in range(c)], dtype=torch.bool),
        ref_in_anchor=torch.tensor([s.use_anchor for s, c in zip(samples, counts) for _ in range(c)], dtype=torch.bool),
    )


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of t and noise for one step of one rank (independent of history)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, 1_000_003, step, rank]).generate_state(1)[0]))
    return g


class _StepSamples(torch.utils.data.Dataset):
    """Map-style view ``global sample index -> Sample`` (deterministic, so workers are free)."""

    def __init__(self, sampler: FaceSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:  # only for DataLoader bookkeeping; indices are unbounded
        return 2**62

    def __getitem__(self, index: int) -> Sample:
        return self.sampler.sample(int(index))


def _step_indices(start: int, steps: int, batch: int, rank: int, world: int) -> Iterator[list[int]]:
    for s in range(start, steps):
        base = (s * world + rank) * batch
        yield list(range(base, base + batch))


def batches(sampler: FaceSampler, start: int, steps: int, batch: int, d: Dist, workers: int) -> Iterator[list[Sample]]:
    """Lists of samples for steps ``start..steps-1`` of this rank, optionally from worker processes."""
    if workers == 0:
        for idx in _step_indices(start, steps, batch, d.rank, d.world):
            yield [sampler.sample(i) for i in idx]
        return
    loader = torch.utils.data.DataLoader(
        _StepSamples(sampler), batch_sampler=list(_step_indices(start, steps, batch, d.rank, d.world)),
        num_workers=workers, collate_fn=list, persistent_workers=False, prefetch_factor=4,
    )
    yield from loader


# ----------------------------------------------------------------------------- the model
class _LossModule(torch.nn.Module):
    """Wraps the core so DDP sees one forward that returns the loss dict."""

    def __init__(self, core: torch.nn.Module, encoder, weights) -> None:
        super().__init__()
        self.core = core
        self.encoder = encoder
        self.weights = weights

    def forward(self, batch) -> dict[str, torch.Tensor]:
        from iconface_video.core.losses import compute_losses

        return compute_losses(self.core, batch, self.encoder, self.weights)


def ema_fn(decay: float):
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


# ----------------------------------------------------------------------------- checkpoints
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_training_state(folder: Path, step: int, model, ema, opt, meta: dict) -> None:
    """Write one complete checkpoint to ``folder`` (via a temporary folder, renamed at the end)."""
    from iconface_video.core.checkpoint import save_checkpoint

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
    _atomic_write(folder.parent / "latest", folder.name + "\n")


def latest_checkpoint(run: Path) -> Path | None:
    marker = run / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    folder = run / "checkpoints" / marker.read_text().strip()
    return folder if folder.is_dir() else None


def load_training_state(folder: Path, model, ema, opt) -> int:
    """Restore model, EMA, optimizer and RNG states from ``folder``; returns the next step."""
    load_model(model, str(folder / "model.safetensors"))
    load_model(ema, str(folder / "ema.safetensors"))
    state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def _warm_start(core, ema, path: Path) -> None:
    """Start from other weights (e.g. the no-reference stage of §5.9) with a fresh optimizer.

    ``path`` is a core checkpoint (``.safetensors`` + sidecar) or a run's checkpoint folder, whose
    raw (not EMA) weights are taken: a short stage's EMA still leans on its initialisation.
    """
    from iconface_video.core.checkpoint import load_checkpoint, read_sidecar

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


def _prune(run: Path, keep: int) -> None:
    folders = sorted((run / "checkpoints").glob("step_*"))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- logs
def read_log(path: Path) -> list[dict]:
    """The JSON lines of a run's log (the last record wins for a step logged twice)."""
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def plot_losses(log: list[dict], path: Path) -> None:
    """Loss curves (raw and smoothed) of every logged loss term, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log:
        return
    keys = [k for k in log[-1] if k.startswith("loss_")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    steps = np.array([r["step"] for r in log])
    for ax, key in zip(axes[0], keys):
        vals = np.array([r.get(key, np.nan) for r in log], dtype=float)
        ax.plot(steps, vals, lw=0.6, alpha=0.4, label="logged")
        win = max(1, len(vals) // 30)
        if win > 1:
            smooth = np.convolve(np.nan_to_num(vals), np.ones(win) / win, mode="valid")
            ax.plot(steps[win - 1:], smooth, lw=1.6, label=f"mean of {win}")
        ax.set_title(key[5:])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the run
def prepare_features(cfg: TrainConfig, ids: IdentitySet, core_config, run: Path, d: Dist,
                     name: str = "features.npz") -> dict[str, np.ndarray] | None:
    """Identity features of every training image when the core's encoder is external (dlib,
    adaface): read from ``cfg.features`` or computed once into ``RUN/features.npz`` (for the
    ``ref_pool`` images per person only, when set: references come from those). None when the
    encoder is part of the model (proxy) or the run has no references (``p_no_ref = 1``)."""
    if core_config.id_encoder == "proxy" or cfg.p_no_ref >= 1.0:
        return None
    path = Path(cfg.features) if cfg.features != "auto" else run / name
    if not path.is_file():
        if cfg.features != "auto":
            raise UserError(f"identity features not found: {path}")
        if d.main:
            from iconface_video.faces.embed import load_embedder

            embed = load_embedder(core_config.id_encoder, device=str(d.device)).embed_aligned112
            pool = reference_pool(ids, cfg.ref_pool, cfg.seed) if cfg.ref_pool else None
            save_features(path, compute_features(ids, embed, paths=pool), {"encoder": core_config.id_encoder})
        if d.world > 1:
            dist.barrier()
    feats = load_features(path)
    return feats


def _hr_sampler(cfg: TrainConfig, core_config, schedule: RefSchedule, run: Path, d: Dist) -> FaceSampler | None:
    """The sampler of the large-crop identity set (``cfg.hr_data`` at ``cfg.hr_side``), or None."""
    if not cfg.hr_data or cfg.hr_every <= 0:
        return None
    core_config.check_side(cfg.hr_side)
    ids = scan_identities(cfg.hr_data, template=core_config.template)
    feats = prepare_features(cfg.replace(features="auto"), ids, core_config, run, d, name="features-hr.npz")
    return FaceSampler(ids, crop_size=cfg.hr_side, ref_size=core_config.ref_size, template=core_config.template,
                       seed=cfg.seed + 1, buckets=dict(cfg.buckets), schedule=schedule, features=feats,
                       min_gap=cfg.min_gap)


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


@dataclass(frozen=True)
class _Source:
    """Where a run's batches come from: ``batches(start)`` yields the ``TrainBatch`` of steps
    ``start..cfg.steps-1`` on the training device; ``split`` is what ``split.json`` records."""

    batches: Callable[[int], Iterator]
    sides: list[int]
    split: dict


def _file_source(cfg: TrainConfig, data: str | Path, core_config, run: Path, d: Dist) -> _Source:
    """Batches from an identity folder: samples made and degraded on the host (optionally in worker
    processes), every ``hr_every``-th step a quarter batch of large crops from ``hr_data``."""
    ids = scan_identities(data, template=core_config.template)
    train_ids, held = split_identities(ids, [p for p in cfg.holdout if p in ids.people])
    feats = prepare_features(cfg, train_ids, core_config, run, d)
    schedule = RefSchedule(cfg.p_no_ref, cfg.k_max, cfg.p_anchor_drop, cfg.p_tokens_drop, cfg.p_invalid)
    sampler = FaceSampler(
        train_ids, crop_size=core_config.crop_size, ref_size=core_config.ref_size, template=core_config.template,
        seed=cfg.seed, buckets=dict(cfg.buckets), schedule=schedule, features=feats, min_gap=cfg.min_gap,
    )
    hr_sampler = _hr_sampler(cfg, core_config, schedule, run, d)

    def make(start: int) -> Iterator:
        step = start
        for samples in batches(sampler, start, cfg.steps, cfg.batch_size, d, cfg.workers):
            if hr_sampler is not None and (step + 1) % cfg.hr_every == 0:
                # A large-crop step: same step index, so resume and ranks stay exact.
                n_hr = max(1, cfg.batch_size // 4)
                samples = [hr_sampler.sample(i) for i in next(_step_indices(step, step + 1, n_hr, d.rank, d.world))]
            side = samples[0].hq.shape[0]
            g = step_generator(cfg.seed, step, d.rank)
            t = training_times(len(samples), core_config, cfg.p_t_max, g)
            noise = torch.randn(len(samples), 3, side, side, generator=g)
            yield collate(samples, core_config, t=t, noise=noise, track_base=0).to(d.device)
            step += 1

    split = {"data": str(Path(data).resolve()), "train": list(train_ids.people), "holdout": list(held.people),
             "train_images": train_ids.n_images}
    return _Source(make, sorted({core_config.crop_size} | ({cfg.hr_side} if hr_sampler is not None else set())), split)


def _device_source(cfg: TrainConfig, core_config, d: Dist) -> _Source:
    """Batches made on the training device from a face pack (``scripts/pack_faces.py``): no host
    loader can cap a GPU. The data argument is not read: the pack holds the faces."""
    from iconface_video.train.device_data import DeviceBatches

    source = DeviceBatches(cfg.device_data, core_config, cfg, d.device)

    def make(start: int) -> Iterator:
        for step in range(start, cfg.steps):
            yield source.batch(step, d.rank, d.world)

    sides = sorted({source.side_of_step(0), *({cfg.hr_side} if len(source.stores) > 1 else ())})
    split = {"data": str(Path(cfg.device_data).resolve()), "train": list(source.people),
             "holdout": list(cfg.holdout), "train_images": source.n_images}
    return _Source(make, sides, split)


def _identity_net(cfg: TrainConfig, core_config, device: torch.device) -> _IdentityOnTemplate | None:
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
    from iconface_video.core.config import load_config
    from iconface_video.core.losses import LossWeights
    from iconface_video.core.model import IConFaceCore

    run = Path(run)
    d = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    core_config = load_config(cfg.core)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        _check_run_folder(run, cfg, resume)
        _atomic_write(run / "train.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        _atomic_write(run / "core.json", json.dumps(core_config.to_dict(), indent=2))
    if d.world > 1:
        dist.barrier()
    source = _device_source(cfg, core_config, d) if cfg.device_data else _file_source(cfg, data, core_config, run, d)
    if d.main:
        _atomic_write(run / "split.json", json.dumps(source.split, indent=2))
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
        _warm_start(core, ema, Path(cfg.init))
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
        _truncate_log(log_path, start)

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
            stopping = _agree(stop.requested or out_of_time, d)
            if step % cfg.log_every == 0 or step == cfg.steps or stopping:
                rec = _reduce_window(window, d)
                window = []
                if d.main:
                    rec = {"step": step, "lr": lr_at(cfg, step - 1), "elapsed_s": round(time.monotonic() - t_begin, 2),
                           "samples": step * cfg.batch_size * d.world, "world": d.world, **rec}
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
            due = step % cfg.checkpoint_every == 0 or time.monotonic() - t_ckpt > cfg.checkpoint_minutes * 60
            due = _agree(due, d)
            if due or stopping or step == cfg.steps:
                if d.main:
                    save_training_state(run / "checkpoints" / f"step_{step:07d}", step, core, ema, opt,
                                        {**meta, "wall_s": round(time.monotonic() - t_begin, 1)})
                    _prune(run, cfg.keep_checkpoints)
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


def _agree(flag: bool, d: Dist) -> bool:
    """True on every rank when any rank says so (ranks must checkpoint and stop together)."""
    if d.world == 1:
        return flag
    x = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item() > 0)


def _reduce_window(window: list[dict[str, float]], d: Dist) -> dict[str, float]:
    """Means of the logged values over the window and over ranks."""
    keys = sorted(window[0])
    vals = torch.tensor([[w[k] for k in keys] for w in window], dtype=torch.float64).mean(0)
    if d.world > 1:
        vals = vals.to(d.device)
        dist.all_reduce(vals)
        vals = vals.cpu() / d.world
    return {k: float(v) for k, v in zip(keys, vals)}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (a resumed run rewrites them)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    _atomic_write(path, "".join(line + "\n" for line in keep))


def _check_run_folder(run: Path, cfg: TrainConfig, resume: bool) -> None:
    if resume:
        saved = run / "train.yaml"
        if saved.is_file():
            old = TrainConfig.from_dict(yaml.safe_load(saved.read_text()))
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


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
