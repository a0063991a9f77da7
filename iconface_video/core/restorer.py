"""The inference API of the core, used by the render stage.

    r = Restorer.from_checkpoint(None, device="cuda", precision="bf16")   # None = embedded checkpoint
    out = r.restore(lq, track, refs=refs, ref_track=ref_track, ref_weight=w, seed=0, steps=4)
    out.crops          # float32[B, 3, R, R] in [0, 1]
    out.diagnostics    # one dict per crop

Inputs are aligned crops (``r.template`` scaled to the crop side) grouped by track. Any square side
that is a multiple of ``r.stride`` in [``r.min_side``, ``r.max_side``] works with one checkpoint;
``max_side`` is the largest side the checkpoint was trained at (its sidecar records the sides), so
a caller never asks for detail the network has not learnt to draw. All crops of one call share a side. References are per
track; a reference with weight 0 is dropped from every path (tokens and anchor), so it is the same
as absent. A crop's result depends only on its own crop, its track's references and (seed, track
id): never on its batch-mates. The render stage bounds memory by the batch it passes in.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iconface_video.errors import MissingModelError

from .checkpoint import load_checkpoint
from .config import CoreConfig
from .identity import IdEncoderFn, load_id_encoder
from .model import IConFaceCore
from .sampler import sample, track_noise

EMBEDDED_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "embedded" / "restorer" / "iconface-restorer.safetensors"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, eq=False)
class RestoreOutput:
    crops: torch.Tensor  # float32[B, 3, R, R] in [0, 1], on the CPU
    diagnostics: list[dict[str, Any]]


class Restorer:
    """Restore batches of aligned face crops with an IConFace core."""

    def __init__(self, model: IConFaceCore, config: CoreConfig | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", id_encoder: IdEncoderFn | None = None, default_steps: int = 1,
                 trained_sides: tuple[int, ...] = ()) -> None:
        """``id_encoder`` overrides the config's external encoder (dlib/adaface) for references
        given without ``ref_feat``; it is loaded lazily on first need otherwise. ``default_steps``
        is the sampling step count used when ``restore`` is given none. ``trained_sides``: the crop
        sides the weights were trained at (default: the config's ``crop_size``)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        self.config = config or model.config
        if self.config != model.config:
            raise ValueError("the config does not match the model's config")
        self.device = torch.device(device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self._id_encoder = id_encoder
        self.default_steps = default_steps
        self.trained_sides = tuple(sorted(trained_sides)) or (self.config.crop_size,)
        self.checkpoint: Path | None = None  # the file the weights came from, if any
        self.models_dir: str | Path | None = None  # where an external identity encoder's weights are

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str | torch.device = "cpu",
                        precision: str = "fp32", models_dir: str | Path | None = None) -> Restorer:
        """Load ``path`` (.safetensors + .json sidecar), or the embedded checkpoint when None;
        ``models_dir`` is where an external identity encoder's weights are."""
        if path is None:
            path = EMBEDDED_CHECKPOINT
            if not path.is_file():
                raise MissingModelError(
                    f"the embedded restorer checkpoint {path} is missing; reinstall iconface-video or pass a checkpoint path")
        model, sidecar = load_checkpoint(path, device=device)
        # A checkpoint names the step count it was evaluated best at and the sides it was trained at.
        training = sidecar.get("training", {})
        steps = int(training.get("recommended_steps", 1))
        sides = tuple(int(x) for x in training.get("sides", ()))
        restorer = cls(model, device=device, precision=precision, default_steps=steps, trained_sides=sides)
        restorer.checkpoint = Path(path)
        restorer.models_dir = models_dir
        return restorer

    @property
    def crop_size(self) -> int:
        """The side the checkpoint was trained at (mainly)."""
        return self.config.crop_size

    @property
    def stride(self) -> int:
        """Crop sides must be multiples of this."""
        return self.config.stride

    @property
    def min_side(self) -> int:
        return self.config.min_side

    @property
    def max_side(self) -> int:
        """The largest crop side worth asking for: the largest side the weights were trained at."""
        return min(max(self.trained_sides), self.config.max_side)

    @property
    def template(self) -> str:
        return self.config.template

    @property
    def ref_size(self) -> int:
        return self.config.ref_size

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _features(self, refs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
        """float[N, id_dim] external-encoder features of the references in use (None for proxy)."""
        if self.config.id_encoder == "proxy" and self._id_encoder is None:
            return None
        feat = torch.zeros(refs.shape[0], self.config.id_dim)
        used = torch.nonzero(weight > 0).flatten()
        if used.numel():
            if self._id_encoder is None:
                self._id_encoder = load_id_encoder(self.config.id_encoder, self.config.template, device=self.device,
                                                   models_dir=self.models_dir)
            feat[used] = self._id_encoder(refs[used]).float().cpu()
        return feat

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, track: torch.Tensor, refs: torch.Tensor | None = None,
                ref_track: torch.Tensor | None = None, ref_weight: torch.Tensor | None = None,
                ref_feat: torch.Tensor | None = None, seed: int = 0, steps: int | None = None,
                ref_guidance: float = 1.0) -> RestoreOutput:
        """Restore aligned crops. lq float32[B, 3, R, R] in [0, 1] (R: see ``config.check_side``); track int64[B]; refs
        float32[N, 3, S, S] in [0, 1] (any square S, resized as needed); ref_track int64[N];
        ref_weight float32[N] reliability in [0, 1] (default 1; 0 = invalid); ref_feat
        float32[N, id_dim] optional precomputed raw identity features; ref_guidance: reference
        guidance weight (1 = off, 0 = ignore references, > 1 = stronger; ≠ 1 doubles the cost);
        steps: sampling steps (None: ``default_steps``, the checkpoint's own choice)."""
        steps = self.default_steps if steps is None else steps
        if lq.dim() != 4 or lq.shape[1] != 3 or lq.shape[2] != lq.shape[3]:
            raise ValueError(f"lq must be float[B, 3, S, S] ({self.template}-aligned), got {tuple(lq.shape)}")
        b, r = lq.shape[0], int(lq.shape[-1])
        self.config.check_side(r)
        if not lq.is_floating_point() or not bool(torch.isfinite(lq).all()):
            raise ValueError(f"lq must hold finite floats in [0, 1], got dtype {lq.dtype}")
        if track.shape != (b,):
            raise ValueError(f"track must be int64[{b}], got {tuple(track.shape)}")
        n = 0 if refs is None else refs.shape[0]
        if n and (ref_track is None or ref_track.shape != (n,) or refs.dim() != 4 or refs.shape[1] != 3
                  or refs.shape[2] != refs.shape[3]):
            raise ValueError("refs must be float[N, 3, S, S] with ref_track int64[N]")
        if ref_weight is not None and ref_weight.shape != (n,):
            raise ValueError(f"ref_weight must be float[{n}], got {tuple(ref_weight.shape)}")
        if ref_feat is not None and ref_feat.shape != (n, self.config.id_dim):
            raise ValueError(f"ref_feat must be float[{n}, {self.config.id_dim}], got {tuple(ref_feat.shape)}")
        if b == 0:
            return RestoreOutput(crops=lq.new_zeros(0, 3, r, r).float().cpu(), diagnostics=[])
        refs = refs if n else lq.new_zeros(0, 3, self.ref_size, self.ref_size)
        ref_track = ref_track if n else track.new_zeros(0)
        weight = torch.ones(n) if ref_weight is None else ref_weight.float().cpu().clamp(0, 1)
        feat = ref_feat.float() if ref_feat is not None else self._features(refs.float().cpu(), weight)

        dev = self.device
        with self._autocast():
            cond = self.model.conditions(
                lq.to(dev, torch.float32) * 2 - 1, track.to(dev), refs.to(dev, torch.float32) * 2 - 1,
                ref_track.to(dev), token_mask=(weight > 0).to(dev), anchor_weight=weight.to(dev),
                id_feat=None if feat is None else feat.to(dev))
            uncond = None
            if ref_guidance != 1.0 and bool((weight > 0).any()):
                uncond = self.model.conditions(lq.to(dev, torch.float32) * 2 - 1, track.to(dev))
            noise = track_noise(track, seed, (3, r, r)).to(dev)
            x0 = sample(self.model, cond, noise, steps=steps, uncond=uncond, guidance=ref_guidance)
        crops = ((x0.float() + 1) / 2).clamp(0, 1).cpu()
        return RestoreOutput(crops=crops, diagnostics=self._diagnostics(cond, track, seed, steps, ref_guidance))

    def _diagnostics(self, cond, track: torch.Tensor, seed: int, steps: int, ref_guidance: float) -> list[dict[str, Any]]:
        lay, ident = cond.layout, cond.identity
        ct = lay.crop_track.cpu()
        tokens = lay.refs_per_track.cpu()[ct].tolist()
        anchor = ident.count.cpu()[ct].tolist()
        agree = ident.agree.float().cpu()[ct].tolist()
        norm = ident.norm.float().cpu()[ct].tolist()
        z = cond.z_id.float().norm(dim=1).cpu().tolist()
        return [
            {"track": int(tid), "n_refs_used": int(tokens[i]), "n_refs_anchor": int(anchor[i]),
             "anchor_agreement": float(agree[i]), "anchor_norm": float(norm[i]), "anchor_z_norm": float(z[i]),
             "steps": steps, "seed": seed, "ref_guidance": ref_guidance}
            for i, tid in enumerate(track.tolist())
        ]
