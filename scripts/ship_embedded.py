"""Choose, evaluate and ship the embedded restorer.

    python scripts/ship_embedded.py --data ../shared/media/faces112 --stage1 RUNS/embedded-noref \
        --candidates RUNS/embedded-unified RUNS/embedded-hinoise

1. Selection: each candidate run's latest EMA export, sampled with 1 and 4 steps, is scored (PSNR
   of ``model_ref``, all buckets) on *validation* photos of the held-out people: photos that are
   not among the evaluation photos. The best (run, steps) wins.
2. Evaluation of the winner on the evaluation photos (seed 0, 12 per person, 3 buckets).
3. Shipping: iconface_video/weights/embedded/restorer/iconface-restorer.{safetensors,json},
   docs/embedded-loss.png (all stages of the winner's lineage), docs/embedded-eval-grid.png, and
   RUN/eval.json + RUN/ship-summary.json beside the winning run. The model card is written by hand
   from ship-summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from iconface_video.core.checkpoint import load_checkpoint, save_checkpoint
from iconface_video.core.restorer import Restorer
from iconface_video.faces.embed import load_embedder
from iconface_video.train import degrade as D
from iconface_video.train.data import IdentitySet, scan_identities
from iconface_video.train.evaluate import (
    build_cases,
    choose_images,
    evaluate,
    restorer_fn,
    run_methods,
    score,
    with_reference_features,
    write_grid,
    write_json,
)
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


def branch_step(run: Path) -> int:
    """The step of the checkpoint folder a run was warm-started from (``.../step_0000900``)."""
    init = yaml.safe_load((run / "train.yaml").read_text()).get("init", "")
    return int(Path(init).name.split("_")[-1])


def validation_set(ids: IdentitySet, eval_per_person: int, seed: int) -> IdentitySet:
    """The held-out people's photos minus the evaluation photos (so selection never sees them)."""
    taken = {(p, i) for p, i in choose_images(ids, eval_per_person, seed)}
    paths = tuple(tuple(q for i, q in enumerate(ps) if (p, i) not in taken) for p, ps in enumerate(ids.paths))
    return dataclasses.replace(ids, paths=paths, frames=tuple(tuple(-1 for _ in ps) for ps in paths))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=Path, nargs="+", required=True, help="run folders")
    ap.add_argument("--stage1", type=Path, default=None)
    ap.add_argument("--lineage", type=Path, nargs="*", default=None,
                    help="run folders of stage 2, 3, ... in order (for the loss plot and the step counts)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--per-person", type=int, default=12)
    ap.add_argument("--val-per-person", type=int, default=4)
    ap.add_argument("--dest", type=Path, default=DEST, help="where the shipped checkpoint goes")
    ap.add_argument("--docs", type=Path, default=REPO / "docs", help="where the loss and grid PNGs go")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    embed = load_embedder("dlib").embed_aligned112
    split = json.loads((args.candidates[0] / "split.json").read_text())
    ids = scan_identities(args.data).subset(split["holdout"])

    val = validation_set(ids, args.per_person, 0)
    val_cases = build_cases(val, buckets=D.BUCKETS, per_person=args.val_per_person, k_refs=4, seed=1,
                            crop_size=112, template="arcface")
    val_cases = with_reference_features(val_cases, embed, "arcface", 128)
    selection = []
    for run in args.candidates:
        ckpt = latest_checkpoint(run) / "restorer.safetensors"
        model, _ = load_checkpoint(ckpt)
        for steps in args.steps:
            outs = run_methods(val_cases, restorer_fn(Restorer(model), steps=steps, seed=1))
            recs = score(val_cases, outs, None, "arcface")
            psnr_ref = float(np.mean([r["psnr"] for r in recs if r["method"] == "model_ref"]))
            psnr_in = float(np.mean([r["psnr"] for r in recs if r["method"] == "input"]))
            selection.append({"run": str(run), "checkpoint": str(ckpt), "steps": steps,
                              "val_psnr_model_ref": round(psnr_ref, 4), "val_psnr_input": round(psnr_in, 4)})
            print(selection[-1], flush=True)
    best = max(selection, key=lambda r: r["val_psnr_model_ref"])
    run, steps = Path(best["run"]), best["steps"]
    model, side = load_checkpoint(Path(best["checkpoint"]))

    t0 = time.time()
    records, cases, outs = evaluate(ids, restorer=Restorer(model), embed=embed, per_person=args.per_person,
                                    k_refs=4, seed=0, steps=steps)
    meta = {"checkpoint": best["checkpoint"], "people": list(ids.people), "per_person": args.per_person,
            "k_refs": 4, "steps": steps, "seed": 0, "seconds": round(time.time() - t0, 1)}
    write_json(run / "eval.json", records, meta)
    print(table(records), flush=True)
    write_grid(args.docs / "embedded-eval-grid.png", cases, outs, rows_per_bucket=1)

    logs = []
    if args.stage1 is not None:
        logs.append(("stage 1: no references", read_log(args.stage1 / "log.jsonl")))
    # The winner's lineage (--lineage: stage 2, 3, ... in order, ending at or past the winner): each
    # stage's log up to the step the next stage branched from.
    lineage = args.lineage or [run]
    lineage = lineage[: [Path(r) for r in lineage].index(run) + 1] if run in lineage else [run]
    for i, r in enumerate(lineage):
        log = read_log(r / "log.jsonl")
        if i + 1 < len(lineage):
            cut = branch_step(lineage[i + 1])
            log = [x for x in log if x["step"] <= cut]
        logs.append((f"stage {i + 2}: {r.name}", log))
    plot_stages(logs, args.docs / "embedded-loss.png")

    training = dict(side.get("training", {}))
    training.update({"licence": LICENCE, "recommended_steps": steps, "eval": records,
                     "stage_steps": {name: (log[-1]["step"] if log else 0) for name, log in logs}})
    args.dest.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.dest / "iconface-restorer.safetensors", model, training)
    summary = {"chosen": best, "selection": selection, "eval_meta": meta, "eval": records,
               "stage_steps": training["stage_steps"],
               "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), torch {torch.__version__}"}
    (run / "ship-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("eval",)}, indent=2))


if __name__ == "__main__":
    main()
