"""Shared builders for the core tests: small random models and mixed-K batches (not a test file)."""

from __future__ import annotations

import torch

from iconface_video.core.config import CoreConfig
from iconface_video.core.model import IConFaceCore

SMALL = {"crop_size": 32, "ref_size": 16, "min_side": 16, "max_side": 64, "enc_channels": (8, 12),
         "enc_blocks": (1, 1), "dec_blocks": (1, 1), "dim": 64, "heads": 2, "n_dual": 1, "n_single": 2,
         "lora_r": 4, "struct_r": 8, "id_encoder": "proxy", "id_dim": 32}


def small_config(**changes) -> CoreConfig:
    return CoreConfig(**{**SMALL, **changes})


def random_model(config: CoreConfig, seed: int = 0) -> IConFaceCore:
    """A model whose zero-initialised gates, LoRA and heads are randomised too.

    A fresh model has every gate at 0 (adaLN-zero, zero-init LoRA/structure/cross-attention gates,
    zero anchor gate), so references and conditions would have no effect and the invariance tests
    would pass vacuously; randomising them makes every pathway live.
    """
    torch.manual_seed(seed)
    model = IConFaceCore(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and bool((p == 0).all()):
                p.normal_(0.0, 0.3 if p.dim() == 0 else 0.05)
    return model.eval()


def mixed_inputs(config: CoreConfig, seed: int = 1):
    """Crops of 4 tracks with K = 0, 1, 3 and 1 references (track 12 has two frames).

    Returns (lq [5,3,R,R] in [0,1], track [5], refs [5,3,R,R] in [0,1], ref_track [5]).
    """
    g = torch.Generator().manual_seed(seed)
    r = config.crop_size
    track = torch.tensor([10, 11, 12, 12, 13])
    ref_track = torch.tensor([12, 11, 12, 12, 13])  # K(10)=0, K(11)=1, K(12)=3, K(13)=1
    lq = torch.rand(len(track), 3, r, r, generator=g)
    refs = torch.rand(len(ref_track), 3, r, r, generator=g)
    return lq, track, refs, ref_track
