"""Helpers shared by the kernel tests and the Triton-interpreter script they run in a subprocess.

The range-table layouts themselves come from ``iconface_video.kernels.bench``.
"""

from __future__ import annotations

import torch


def attending_rows(table: torch.Tensor, n_q: int) -> torch.Tensor:
    """bool[n_q]: query rows of a virtual sequence with at least one key; all others must be 0."""
    attending = torch.zeros(n_q, dtype=torch.bool)
    for q_start, q_len, _, k0_len, _, k1_len in table.tolist():
        attending[q_start : q_start + q_len] = k0_len + k1_len > 0
    return attending
