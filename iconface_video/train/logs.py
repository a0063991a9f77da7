"""A run's log (``RUN/log.jsonl``: one JSON line per logged step) and its loss plot (``RUN/loss.png``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from iconface_video.files import atomic_path, write_text_atomic
from iconface_video.train.distributed import Dist


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
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)


def reduce_window(window: list[dict[str, float]], d: Dist) -> dict[str, float]:
    """Means of the logged values over the window and over ranks."""
    keys = sorted(window[0])
    vals = torch.tensor([[w[k] for k in keys] for w in window], dtype=torch.float64).mean(0)
    if d.world > 1:
        vals = vals.to(d.device)
        dist.all_reduce(vals)
        vals = vals.cpu() / d.world
    return {k: float(v) for k, v in zip(keys, vals)}


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (a resumed run rewrites them)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic("".join(line + "\n" for line in keep), path)
