"""The range table of ``ranged_attention`` (rows ``(q_start, q_len, k0_start, k0_len, k1_start,
k1_len)``, see its module docstring): checked on the host before any kernel reads it, and
transposed for the backward kernel that computes dK and dV per key interval."""

from __future__ import annotations

import torch


def check_table(table: torch.Tensor, n_q: int, n_k: int) -> torch.Tensor:
    """Validate a range table against the query/key token counts; return it as int64 on the CPU.

    Pass tables on the CPU: a CUDA table must be copied back here, which waits for the GPU.
    Raises ValueError when the table is malformed: wrong shape or dtype, a negative entry, a range
    past the end of its token axis, or two virtual sequences sharing a query row.
    """
    if table.dim() != 2 or table.shape[1] != 6:
        raise ValueError(f"range table must be [n_virtual, 6], got {tuple(table.shape)}")
    if table.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"range table must be int32 or int64, got {table.dtype}")
    host = table.detach().to(device="cpu", dtype=torch.int64)
    if host.numel() == 0:
        return host
    if bool((host < 0).any()):
        raise ValueError("range table has a negative entry")
    q_start, q_len, k0_start, k0_len, k1_start, k1_len = host.unbind(1)
    if bool((q_start + q_len > n_q).any()):
        raise ValueError(f"range table has a query range past the {n_q} query rows")
    if bool((k0_start + k0_len > n_k).any()) or bool((k1_start + k1_len > n_k).any()):
        raise ValueError(f"range table has a key range past the {n_k} key rows")
    nonempty = q_len > 0
    starts, order = q_start[nonempty].sort()
    ends = (q_start + q_len)[nonempty][order]
    if bool((starts[1:] < ends[:-1]).any()):
        raise ValueError("range table has two virtual sequences sharing query rows")
    return host


def transposed_table(host_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For the dK/dV kernel: which query ranges read each part of the key axis.

    host_table: int64[n_virtual, 6] on the CPU (``check_table``'s result). The key axis is cut at
    every key-range boundary into disjoint *key intervals*; each interval is read by the query
    ranges of the virtual sequences whose key ranges cover it (a sequence whose two ranges both
    cover it is listed twice, matching the twin, which then sees the key twice).
    Returns (intervals int64[n_int, 4] rows (k_start, k_len, first_reader, n_readers),
    readers int64[n_readers, 2] rows (q_start, q_len)), CSR style; intervals nobody reads are
    dropped, so their dK and dV stay zero.
    """
    # one row (q_start, q_len, k_start, k_len) per (virtual sequence, key range)
    ranges = torch.cat([host_table[:, [0, 1, 2, 3]], host_table[:, [0, 1, 4, 5]]])
    ranges = ranges[(ranges[:, 1] > 0) & (ranges[:, 3] > 0)]
    if ranges.shape[0] == 0:
        return torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int64)
    k_start, k_end = ranges[:, 2], ranges[:, 2] + ranges[:, 3]
    cuts = torch.unique(torch.cat([k_start, k_end]))
    lo, hi = cuts[:-1], cuts[1:]
    covers = (k_start[None, :] <= lo[:, None]) & (k_end[None, :] >= hi[:, None])  # [n_int, n_ranges]
    n_readers = covers.sum(1)
    keep = n_readers > 0
    lo, hi, covers, n_readers = lo[keep], hi[keep], covers[keep], n_readers[keep]
    _, range_idx = covers.nonzero(as_tuple=True)  # row-major, so grouped by interval in order
    first = torch.cumsum(n_readers, 0) - n_readers
    intervals = torch.stack([lo, hi - lo, first, n_readers], dim=1)
    readers = ranges[range_idx][:, :2]
    return intervals, readers
