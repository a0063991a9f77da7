"""Core checkpoints: safetensors weights + a JSON sidecar; never a pickle.

``name.safetensors`` holds every tensor of the model's state dict; ``name.json`` beside it holds::

    {"format": "iconface-core", "version": 2, "config": {...CoreConfig...},
     "crop_size": 128, "template": "arcface", "id_encoder": "dlib",
     "training": {"sides": [128, 256], "recommended_steps": 1, ...}}

Version 2 is core v2 (convolutional tokenizer and decoder); version-1 checkpoints (pixel patches)
are refused with a one-line error, as their network no longer exists.

Loading builds the model from the sidecar's config and checks every tensor's name and shape before
copying anything; a mismatch raises ``BadWeightsError`` with one line naming what does not match.
Both files are written to temporary names and renamed when complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from iconface_video.errors import BadWeightsError, MissingModelError
from iconface_video.files import atomic_path

from .config import CoreConfig
from .model import IConFaceCore

FORMAT = "iconface-core"
VERSION = 2


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(path: str | Path, model: IConFaceCore, training: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) and its .json sidecar atomically; returns ``path``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    meta = {
        "format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
        "crop_size": cfg.crop_size, "template": cfg.template, "id_encoder": cfg.id_encoder,
        "training": training or {},
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    # The weights are renamed into place before the sidecar (the inner block finishes first).
    with atomic_path(sidecar_path(path)) as tmp_j, atomic_path(path) as tmp_w:
        save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "version": str(VERSION)})
        tmp_j.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The validated sidecar dict of checkpoint ``path``."""
    side = sidecar_path(path)
    if not side.is_file():
        raise MissingModelError(f"checkpoint config {side} is missing (it must sit beside {Path(path).name})")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadWeightsError(f"checkpoint config {side} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadWeightsError(f"{side} is not an iconface-core checkpoint config (format != {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise BadWeightsError(f"{side} has checkpoint version {meta.get('version')!r}; this program reads version {VERSION}")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[IConFaceCore, dict[str, Any]]:
    """Build the model from ``path``'s sidecar and load its weights; returns (model in eval mode, sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"restorer weights {path} not found; give an existing .safetensors checkpoint "
                                "(or leave the option out for the embedded one)")
    meta = read_sidecar(path)
    try:
        config = CoreConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadWeightsError(f"{sidecar_path(path)} has an unusable config: {err}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BadWeightsError(f"{path} is not a readable safetensors file ({err}); pickles are never loaded") from None
    model = IConFaceCore(config)
    check_state(model.state_dict(), tensors, path.name)
    model.load_state_dict({k: v for k, v in tensors.items()})
    return model.to(device).eval(), meta


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], name: str) -> None:
    """Raise BadWeightsError (one line) unless ``found`` has exactly ``expected``'s names and shapes."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k} {tuple(found[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in found and found[k].shape != v.shape]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): " + ", ".join(wrong[:3]) + (" …" if len(wrong) > 3 else ""))
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(missing[:3]) + (" …" if len(missing) > 3 else ""))
    if extra:
        problems.append(f"{len(extra)} unexpected: " + ", ".join(extra[:3]) + (" …" if len(extra) > 3 else ""))
    if problems:
        raise BadWeightsError(f"{name} does not fit its config: " + "; ".join(problems))
