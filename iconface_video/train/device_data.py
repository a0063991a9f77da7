"""Training batches made on the training device from a packed file of faces.

The faces are packed once (``scripts/pack_faces.py``) into one safetensors file (no pickle):

- ``jpeg``: uint8[total] the JPEG bytes of every image, back to back; ``offsets``: int64[N + 1];
- ``person``: int32[N] index into the metadata's ``people``; ``frame``: int32[N] video frame number
  of a track crop (-1: a photo); ``side``: int32[N] the stored square side;
- ``feat``: float32[N, D] identity features (zeros where ``has_feat`` is 0) and ``has_feat``:
  uint8[N], present when the pack was made with an encoder;
- metadata (strings): ``format`` = ``iconface-faces-pack``, ``version``, ``people`` (JSON list),
  ``template`` (every image is aligned to it at its own side), ``encoder`` (of ``feat``, or "").

:class:`DeviceBatches` decodes the pack once, brings every image to the core's crop size and
template, and keeps them as one ``uint8[N, R, R, 3]`` tensor on the device (plus the large images
at ``hr_side`` when the config has hr steps). Each ``batch(step, rank, world)`` then draws targets,
flips, buckets and references, degrades on the device (``device_degrade``) and returns the core's
``TrainBatch`` there. Everything random comes
from generators seeded by ``(seed, step, rank)``, so a step is the same whenever it is made
(resume, another worker) on the same kind of device. The sampling rules are those of
``data.FaceSampler.sample`` (uniform over images, the unified reference schedule of ``RefSchedule``,
references never the target, ``min_gap`` frames away for track crops, only images with features
when features are used); a person with a single image is a target without references.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from iconface_video.core.batch import TrainBatch, training_times
from iconface_video.core.config import CoreConfig
from iconface_video.errors import UserError
from iconface_video.files import atomic_path
from iconface_video.train import device_degrade as DD
from iconface_video.train.config import TrainConfig
from iconface_video.train.data import template_warp

PACK_FORMAT = "iconface-faces-pack"
PACK_VERSION = "1"


@dataclass(frozen=True)
class Pack:
    """The arrays of a pack file (see the module docstring), on the host."""

    jpeg: np.ndarray
    offsets: np.ndarray
    person: np.ndarray
    frame: np.ndarray
    side: np.ndarray
    feat: np.ndarray | None
    has_feat: np.ndarray | None
    people: tuple[str, ...]
    template: str
    encoder: str

    @property
    def n_images(self) -> int:
        return len(self.person)

    def image_bytes(self, i: int) -> np.ndarray:
        return self.jpeg[self.offsets[i]:self.offsets[i + 1]]


class PackWriter:
    """Collects images (JPEG bytes) and writes a pack file atomically."""

    def __init__(self, template: str = "arcface", encoder: str = "") -> None:
        self.template, self.encoder = template, encoder
        self.people: dict[str, int] = {}
        self.blobs: list[bytes] = []
        self.person: list[int] = []
        self.frame: list[int] = []
        self.side: list[int] = []
        self.feat: list[np.ndarray | None] = []

    @property
    def n_images(self) -> int:
        return len(self.blobs)

    @property
    def n_people(self) -> int:
        return len(self.people)

    @property
    def nbytes(self) -> int:
        dim = next((len(f) for f in self.feat if f is not None), 0)
        return sum(map(len, self.blobs)) + self.n_images * (8 + 12 + 1 + 4 * dim)

    def add(self, person: str, jpeg: bytes, *, frame: int, side: int, feat: np.ndarray | None = None) -> None:
        self.person.append(self.people.setdefault(person, len(self.people)))
        self.blobs.append(jpeg)
        self.frame.append(int(frame))
        self.side.append(int(side))
        self.feat.append(None if feat is None else np.asarray(feat, np.float32))

    def write(self, path: Path) -> None:
        if not self.blobs:
            raise UserError("nothing to pack: no images")
        lengths = np.array([len(b) for b in self.blobs], np.int64)
        arrays = {
            "jpeg": np.frombuffer(b"".join(self.blobs), np.uint8).copy(),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "person": np.array(self.person, np.int32),
            "frame": np.array(self.frame, np.int32),
            "side": np.array(self.side, np.int32),
        }
        dim = next((len(f) for f in self.feat if f is not None), 0)
        if dim:
            arrays["feat"] = np.stack([f if f is not None else np.zeros(dim, np.float32) for f in self.feat])
            arrays["has_feat"] = np.array([f is not None for f in self.feat], np.uint8)
        meta = {"format": PACK_FORMAT, "version": PACK_VERSION, "people": json.dumps(list(self.people)),
                "template": self.template, "encoder": self.encoder if dim else ""}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)


def read_pack(path: str | Path) -> Pack:
    """Read a pack written by :class:`PackWriter` (``UserError`` if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such face pack (make one with scripts/pack_faces.py)")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for a foreign file
        raise UserError(f"{path}: not a face pack ({error})") from None
    if meta.get("format") != PACK_FORMAT or meta.get("version") != PACK_VERSION:
        raise UserError(f"{path}: not a version-{PACK_VERSION} face pack; rebuild it with scripts/pack_faces.py")
    return Pack(jpeg=arrays["jpeg"], offsets=arrays["offsets"], person=arrays["person"], frame=arrays["frame"],
                side=arrays["side"], feat=arrays.get("feat"),
                has_feat=arrays["has_feat"].astype(bool) if "has_feat" in arrays else None,
                people=tuple(json.loads(meta["people"])), template=meta["template"], encoder=meta.get("encoder", ""))


def crop_to(rgb: np.ndarray, src_template: str, dst_template: str, size: int) -> np.ndarray:
    """An aligned crop ``uint8[s, s, 3]`` brought to ``dst_template`` at ``size``: a pure shrink (same
    template family) is an area resize, anything else the bicubic warp of ``data.load_crop``."""
    side = rgb.shape[0]
    warp = template_warp(src_template, side, dst_template, size)
    if warp is None:
        return rgb
    if side > size and abs(warp[0, 1]) < 1e-9 and np.allclose(warp[:, 2], 0, atol=1e-6):
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(rgb, warp, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


@dataclass(frozen=True)
class Plan:
    """The host-side draw of one batch: ``side``: the crop side; ``target``: long[B] image indices; ``flip``: bool[B];
    ``bucket``: long[B]; ``params``: the degradations; ``refs``: int64[N] image indices of the
    references, grouped by sample (``counts``: int64[B]); ``ref_valid``: bool[N];
    ``use_anchor``/``use_tokens``: bool[B]; ``generator``: the CPU generator, to draw the rest."""

    side: int
    target: torch.Tensor
    flip: torch.Tensor
    bucket: torch.Tensor
    params: DD.BatchParams
    refs: np.ndarray
    counts: np.ndarray
    ref_valid: np.ndarray
    use_anchor: np.ndarray
    use_tokens: np.ndarray
    generator: torch.Generator


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


class DeviceBatches:
    """Training batches from a face pack, made on ``device`` (see the module docstring).

    ``core_config``: the core's ``CoreConfig`` (crop_size, ref_size, template, t_mu, t_max,
    id_encoder); ``train_config``: the ``TrainConfig`` (seed, batch_size, buckets, the reference
    schedule, min_gap, p_t_max, holdout, hr_side/hr_every). People named in ``holdout`` are left out.

    Every image is stored at the crop size. With ``hr_every`` > 0, the images stored at ``hr_side``
    or larger (train_hr's crops) are also kept at ``hr_side``, and every ``hr_every``-th step is a
    batch of ``max(1, batch_size // 4)`` of them at that side, as the trainer does with ``hr_data``.
    References always come from the crop-size store (they are reduced to ``ref_size`` anyway).
    """

    def __init__(self, pack_path: str | Path, core_config: CoreConfig, train_config: TrainConfig, device: str | torch.device = "cpu",
                 threads: int = 8) -> None:
        self.core, self.cfg = core_config, train_config
        self.device = torch.device(device)
        pack = read_pack(pack_path)
        held = set(train_config.holdout)
        rows = np.flatnonzero([pack.people[p] not in held for p in pack.person])
        if not len(rows):
            raise UserError(f"{pack_path}: every image belongs to a held-out person")
        self.use_feat = core_config.id_encoder != "proxy" and train_config.p_no_ref < 1.0
        if self.use_feat and (pack.feat is None or pack.encoder != core_config.id_encoder):
            raise UserError(f"{pack_path}: the core needs {core_config.id_encoder} identity features but the pack has "
                            f"{pack.encoder or 'none'}; rebuild it with scripts/pack_faces.py --encoder {core_config.id_encoder}")
        names = sorted({pack.people[p] for p in pack.person[rows]})
        self.people = tuple(names)
        index = {n: i for i, n in enumerate(names)}
        self.person = np.array([index[pack.people[p]] for p in pack.person[rows]], np.int64)
        self.frame = pack.frame[rows].astype(np.int64)
        self.images_of = [np.flatnonzero(self.person == p) for p in range(len(names))]
        self.ref_ok = pack.has_feat[rows] if self.use_feat else np.ones(len(rows), bool)
        self.feat = torch.from_numpy(pack.feat[rows]).to(self.device) if self.use_feat else None

        def decode(i: int) -> np.ndarray:
            bgr = cv2.imdecode(pack.image_bytes(int(i)), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"{pack_path}: image {i} cannot be decoded; rebuild the pack")
            return np.ascontiguousarray(bgr[..., ::-1])

        sides = [core_config.crop_size]
        hr = train_config.hr_side
        if train_config.hr_every > 0 and hr != core_config.crop_size:
            core_config.check_side(hr)
            sides.append(hr)
        members = {core_config.crop_size: np.arange(len(rows))}
        if len(sides) > 1:
            members[hr] = np.flatnonzero(pack.side[rows] >= hr)
            if not len(members[hr]):
                raise UserError(f"{pack_path}: no image of {hr} px or more for the hr_every steps; set hr_every: 0")
        crops: dict[int, list[np.ndarray]] = {side: [] for side in sides}
        hr_set = set(members[hr].tolist()) if len(sides) > 1 else set()

        def load(j: int) -> list[tuple[int, np.ndarray]]:
            rgb = decode(rows[j])
            return [(side, crop_to(rgb, pack.template, core_config.template, side))
                    for side in sides if side == sides[0] or j in hr_set]

        with ThreadPoolExecutor(max(1, threads)) as pool:  # OpenCV releases the GIL
            for out in pool.map(load, range(len(rows))):
                for side, crop in out:
                    crops[side].append(crop)
        # per side: uint8[n, side, side, 3] on the device, and the row of each image (-1: absent)
        self.stores: dict[int, tuple[np.ndarray, torch.Tensor, np.ndarray]] = {}
        for side in sides:
            pos = np.full(len(rows), -1, np.int64)
            pos[members[side]] = np.arange(len(members[side]))
            self.stores[side] = (members[side], torch.from_numpy(np.stack(crops[side])).to(self.device), pos)

    @property
    def n_images(self) -> int:
        return len(self.person)

    def side_of_step(self, step: int) -> int:
        """The crop side of batch ``step`` (``hr_side`` on the trainer's hr steps)."""
        cfg = self.cfg
        if len(self.stores) > 1 and (step + 1) % cfg.hr_every == 0:
            return cfg.hr_side
        return self.core.crop_size

    def _pick_refs(self, rng: np.random.Generator, target: int, k: int) -> np.ndarray:
        """Up to ``k`` other images of the target's person (as data.pick_references)."""
        pool = self.images_of[self.person[target]]
        keep = (pool != target) & self.ref_ok[pool]
        if self.cfg.min_gap > 0 and self.frame[target] >= 0:
            keep &= np.abs(self.frame[pool] - self.frame[target]) >= self.cfg.min_gap
        cand = pool[keep]
        k = min(k, len(cand))
        return rng.choice(cand, size=k, replace=False) if k else np.zeros(0, np.int64)

    def plan(self, step: int, rank: int = 0) -> Plan:
        """What batch ``step`` of ``rank`` is made of (targets, references, drops), drawn on the host."""
        cfg = self.cfg
        side = self.side_of_step(step)
        b = cfg.batch_size if side == self.core.crop_size else max(1, cfg.batch_size // 4)
        members = self.stores[side][0]
        g = torch.Generator().manual_seed(_seed(cfg.seed, 0xDA7A, step, rank))
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 0x5EF5, step, rank])
        target = torch.from_numpy(members[torch.randint(0, len(members), (b,), generator=g).numpy()])
        flip = torch.rand(b, generator=g) < 0.5
        bucket = DD.pick_buckets(g, dict(cfg.buckets), b)
        # the unified reference schedule (data.RefSchedule), drawn as data.FaceSampler.sample does
        want = np.where(rng.random(b) < cfg.p_no_ref, 0, rng.integers(1, cfg.k_max + 1, b))
        picks = [self._pick_refs(rng, int(t), int(k)) for t, k in zip(target.tolist(), want)]
        counts = np.array([len(p) for p in picks], np.int64)
        refs = np.concatenate(picks).astype(np.int64) if counts.sum() else np.zeros(0, np.int64)
        drop = rng.random(b)
        has = counts > 0
        return Plan(side=side, target=target, flip=flip, bucket=bucket, params=DD.sample_params(g, bucket, side),
                    refs=refs, counts=counts, ref_valid=rng.random(len(refs)) >= cfg.p_invalid,
                    use_anchor=~(has & (drop < cfg.p_anchor_drop)),
                    use_tokens=~(has & (drop >= cfg.p_anchor_drop) & (drop < cfg.p_anchor_drop + cfg.p_tokens_drop)),
                    generator=g)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> TrainBatch:
        """The ``TrainBatch`` of ``step`` for ``rank`` (pixels in [-1, 1], on the device).

        ``world`` is accepted for the trainer's call shape; every rank draws its own samples from
        ``(seed, step, rank)``, so ranks never repeat each other's batch."""

        dev = self.device
        p = self.plan(step, rank)
        g, b = p.generator, len(p.target)
        g_dev = torch.Generator(device=dev).manual_seed(_seed(self.cfg.seed, 0xD1CE, step, rank))
        hq = self._pixels(p.target.numpy(), p.side)
        hq = torch.where(p.flip.to(dev)[:, None, None, None], hq.flip(-1), hq)
        lq = DD.apply(hq, p.params, g_dev)
        refs = DD.light_reference(self._pixels(p.refs, self.core.crop_size), g, self.core.ref_size)
        t = training_times(b, self.core, self.cfg.p_t_max, g)
        noise = torch.randn(hq.shape, generator=g_dev, device=dev, dtype=hq.dtype)
        track = np.arange(b)

        def on(x: np.ndarray, dtype) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dtype).to(dev)

        return TrainBatch(
            lq=lq * 2 - 1, hq=hq * 2 - 1, track=on(track, torch.int64), refs=refs * 2 - 1,
            ref_track=on(np.repeat(track, p.counts), torch.int64), ref_valid=on(p.ref_valid, torch.bool),
            t=t.to(dev), noise=noise,
            id_feat=self.feat[on(p.refs, torch.int64)] if self.feat is not None else None,
            ref_in_tokens=on(np.repeat(p.use_tokens, p.counts), torch.bool),
            ref_in_anchor=on(np.repeat(p.use_anchor, p.counts), torch.bool),
        )

    def _pixels(self, idx: np.ndarray, side: int) -> torch.Tensor:
        """float[n, 3, side, side] in [0, 1] of images ``idx`` (int64[n]) from the ``side`` store."""
        _, images, pos = self.stores[side]
        rows = torch.from_numpy(pos[idx]).to(self.device)
        return images[rows].permute(0, 3, 1, 2).float() / 255.0
