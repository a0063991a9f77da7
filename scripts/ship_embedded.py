"""Evaluate a finished embedded run on the held-out people and ship its EMA weights into the package.

    python scripts/ship_embedded.py --run /work/runs/embedded-unified --stage1 /work/runs/embedded-noref \
        --data ../shared/media/faces112 --steps 1 4

Writes iconface_video/weights/embedded/restorer/{iconface-restorer.safetensors,.json,MODEL_CARD.md},
docs/embedded-loss.png (both stages) and docs/embedded-eval-grid.png, and the eval records as JSON
beside the run (RUN/eval-steps<N>.json). The checkpoint shipped is the run's latest EMA export.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from iconface_video.core.checkpoint import load_checkpoint, save_checkpoint
from iconface_video.core.restorer import Restorer
from iconface_video.faces.embed import load_embedder
from iconface_video.train import degrade as D
from iconface_video.train.data import scan_identities
from iconface_video.train.evaluate import evaluate, write_grid, write_json
from iconface_video.train.trainer import latest_checkpoint, read_log

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "iconface_video" / "weights" / "embedded" / "restorer"
LICENCE = ("research-only, non-commercial: trained on faces112 (ArcFace-aligned crops sampled from Glint360k, "
           "non-commercial research use); the weights inherit that licence")


def plot_stages(logs: list[tuple[str, list[dict]]], path: Path) -> None:
    """Flow-matching loss of consecutive stages on one step axis (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    offset = 0
    for name, log in logs:
        steps = np.array([r["step"] for r in log]) + offset
        vals = np.array([r["loss_fm"] for r in log])
        ax.plot(steps, vals, lw=0.6, alpha=0.35)
        win = max(1, len(vals) // 25)
        if win > 1:
            ax.plot(steps[win - 1:], np.convolve(vals, np.ones(win) / win, mode="valid"), lw=1.8, label=f"{name} (mean of {win} logs)")
        offset = int(steps[-1]) if len(steps) else offset
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(records: list[dict]) -> str:
    rows = ["| bucket | method | PSNR (dB) | SSIM | identity cosine | n |", "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (D.BUCKETS.index(r["bucket"]), r["method"])):
        rows.append(f"| {r['bucket']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['id_cos']:.4f} | {r['n']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--stage1", type=Path, default=None)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--per-person", type=int, default=12)
    ap.add_argument("--ship-steps", type=int, default=None, help="recommended sampling steps (default: best PSNR)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    folder = latest_checkpoint(args.run)
    ckpt = folder / "restorer.safetensors"
    model, side = load_checkpoint(ckpt)
    split = json.loads((args.run / "split.json").read_text())
    ids = scan_identities(args.data).subset(split["holdout"])
    embed = load_embedder("dlib").embed_aligned112
    results = {}
    for steps in args.steps:
        t0 = time.time()
        records, cases, outs = evaluate(ids, restorer=Restorer(model), embed=embed, per_person=args.per_person,
                                        k_refs=4, seed=0, steps=steps)
        meta = {"checkpoint": str(ckpt), "people": list(ids.people), "per_person": args.per_person, "k_refs": 4,
                "steps": steps, "seed": 0, "seconds": round(time.time() - t0, 1)}
        write_json(args.run / f"eval-steps{steps}.json", records, meta)
        results[steps] = (records, cases, outs)
        print(f"steps={steps}\n{table(records)}\n", flush=True)

    def mean_psnr(records):
        return np.mean([r["psnr"] for r in records if r["method"] == "model_ref"])

    best = args.ship_steps or max(results, key=lambda s: mean_psnr(results[s][0]))
    records, cases, outs = results[best]
    write_grid(REPO / "docs" / "embedded-eval-grid.png", cases, outs, rows_per_bucket=2)
    logs = []
    if args.stage1 is not None:
        logs.append(("stage 1: no references", read_log(args.stage1 / "log.jsonl")))
    logs.append(("stage 2: unified references", read_log(args.run / "log.jsonl")))
    plot_stages(logs, REPO / "docs" / "embedded-loss.png")

    training = dict(side.get("training", {}))
    training.update({"licence": LICENCE, "recommended_steps": best, "eval": records,
                     "stage1_steps": logs[0][1][-1]["step"] if args.stage1 is not None else 0})
    DEST.mkdir(parents=True, exist_ok=True)
    save_checkpoint(DEST / "iconface-restorer.safetensors", model, training)
    summary = {"checkpoint_from": str(ckpt), "recommended_steps": best, "eval_by_steps": {s: r[0] for s, r in results.items()},
               "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), torch {torch.__version__}"}
    (args.run / "ship-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "eval_by_steps"}, indent=2))
    shutil.copy2(REPO / "docs" / "embedded-loss.png", args.run / "embedded-loss.png")


if __name__ == "__main__":
    main()
