"""Synthetic identity folders and the smallest core config shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MICRO_CORE = {
    "version": 2, "name": "micro", "crop_size": 32, "ref_size": 16, "min_side": 16, "max_side": 64,
    "enc_channels": [8, 8], "enc_blocks": [1, 1], "dec_blocks": [1, 1], "template": "arcface",
    "dim": 32, "heads": 2, "n_dual": 1, "n_single": 1, "mlp_ratio": 2, "lora_r": 4, "struct_r": 4,
    "id_encoder": "proxy", "id_dim": 16,
}


def make_identity_folder(root: Path, people: int = 3, per_person: int = 5, size: int = 32) -> Path:
    """Random square crops in ``root/<person>/<n>.png``; each person has its own mean colour."""
    rng = np.random.default_rng(0)
    for p in range(people):
        folder = root / f"person{p}"
        folder.mkdir(parents=True)
        for i in range(per_person):
            img = np.clip(rng.normal(60 + 60 * p, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return root
