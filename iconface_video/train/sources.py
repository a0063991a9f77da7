"""Where a run's batches come from: samples made and degraded on the host from an identity folder
(optionally in worker processes), or made on the training device from a face pack.

Sample number ``n`` of the run is ``FaceSampler.sample(n)`` and the times and noise of step ``s``
on rank ``r`` come from a generator seeded with ``(seed, s, r)``, so the data position *is* the
step counter and a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from iconface_video.core.batch import TrainBatch, training_times
from iconface_video.core.config import CoreConfig
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
from iconface_video.train.distributed import Dist


def collate(samples: list[Sample], core_config: CoreConfig, *, t: torch.Tensor, noise: torch.Tensor,
            track_base: int = 0) -> TrainBatch:
    """Stack samples into the core's ``TrainBatch`` (pixels in [-1, 1]); each sample is its own track.

    Anchor/tokens drops of §5.8 become ``ref_in_anchor`` / ``ref_in_tokens``; invalid references
    have ``ref_valid = False`` and are removed from both paths by the core.
    """
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


def prepare_features(cfg: TrainConfig, ids: IdentitySet, core_config: CoreConfig, run: Path, d: Dist,
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


def _hr_sampler(cfg: TrainConfig, core_config: CoreConfig, schedule: RefSchedule, run: Path, d: Dist) -> FaceSampler | None:
    """The sampler of the large-crop identity set (``cfg.hr_data`` at ``cfg.hr_side``), or None."""
    if not cfg.hr_data or cfg.hr_every <= 0:
        return None
    core_config.check_side(cfg.hr_side)
    ids = scan_identities(cfg.hr_data, template=core_config.template)
    feats = prepare_features(cfg.replace(features="auto"), ids, core_config, run, d, name="features-hr.npz")
    return FaceSampler(ids, crop_size=cfg.hr_side, ref_size=core_config.ref_size, template=core_config.template,
                       seed=cfg.seed + 1, buckets=dict(cfg.buckets), schedule=schedule, features=feats,
                       min_gap=cfg.min_gap)


@dataclass(frozen=True)
class Source:
    """Where a run's batches come from: ``batches(start)`` yields the ``TrainBatch`` of steps
    ``start..cfg.steps-1`` on the training device; ``split`` is what ``split.json`` records."""

    batches: Callable[[int], Iterator[TrainBatch]]
    sides: list[int]
    split: dict


def file_source(cfg: TrainConfig, data: str | Path, core_config: CoreConfig, run: Path, d: Dist) -> Source:
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

    def make(start: int) -> Iterator[TrainBatch]:
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
    return Source(make, sorted({core_config.crop_size} | ({cfg.hr_side} if hr_sampler is not None else set())), split)


def device_source(cfg: TrainConfig, core_config: CoreConfig, d: Dist) -> Source:
    """Batches made on the training device from a face pack (``scripts/pack_faces.py``): no host
    loader can cap a GPU. The data argument is not read: the pack holds the faces."""
    from iconface_video.train.device_data import DeviceBatches

    source = DeviceBatches(cfg.device_data, core_config, cfg, d.device)

    def make(start: int) -> Iterator[TrainBatch]:
        for step in range(start, cfg.steps):
            yield source.batch(step, d.rank, d.world)

    sides = sorted({source.side_of_step(0), *({cfg.hr_side} if len(source.stores) > 1 else ())})
    split = {"data": str(Path(cfg.device_data).resolve()), "train": list(source.people),
             "holdout": list(cfg.holdout), "train_images": source.n_images}
    return Source(make, sides, split)
