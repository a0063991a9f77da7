"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickles."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from iconface_video.errors import BadWeightsError


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a damaged file raises ``BadWeightsError`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise BadWeightsError(f"{path}: not a readable safetensors file ({error}); delete it and fetch it again") from None


def safe_load_torch(path: str | Path, device: str = "cpu") -> object:
    """``torch.load`` that only rebuilds tensors and plain containers.

    A pickle that would run code (any global outside torch's allow-list) is refused with
    ``BadWeightsError``; a truncated or non-torch file gets the same one-line treatment.
    """
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is long; its useful line names the refused global ("Unsupported global: ...").
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = next((line for line in lines if "global" in line.lower() or "Can only" in line), lines[0] if lines else "unsafe content")
        raise BadWeightsError(
            f"{path}: refused: the file is a pickle that would run code or build objects other than "
            f"tensors ({first}); use a safetensors or plain state-dict file from a trusted source"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise BadWeightsError(f"{path}: not a readable torch weight file ({type(error).__name__}: {error}); fetch it again") from None


def state_dict_of(checkpoint: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint (a state dict, or a dict holding ``state_dict``),
    keeping keys that start with ``prefix`` and removing it."""
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise BadWeightsError(f"expected a state dict, found {type(checkpoint).__name__}")
    return {
        key[len(prefix):]: value
        for key, value in checkpoint.items()
        if key.startswith(prefix) and isinstance(value, torch.Tensor)
    }


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path = "weights") -> None:
    """Raise ``BadWeightsError`` naming the first missing, unexpected or wrong-shaped tensor."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise BadWeightsError(f"{source}: tensor {missing[0]!r} is missing ({len(missing)} missing in all); wrong model file?")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise BadWeightsError(f"{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all); wrong model file?")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise BadWeightsError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}; wrong model file?"
            )
