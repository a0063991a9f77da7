"""The core's GPU check: kernels vs twins, kernel vs SDPA, training/inference throughput, peak memory.

    python scripts/gpu_check.py                 # on one CUDA GPU; finishes in well under 3 minutes
    python scripts/gpu_check.py --kernels-only  # only the kernel sections (compile, twins agree): < 1 minute
    python scripts/gpu_check.py --smoke         # the same code path on the CPU at tiny shapes

Prints one JSON object. Sections:

- ``kernels_bf16_vs_twin`` / ``kernels_fp32_vs_twin``: max abs differences of the Triton kernels
  (forward and every gradient) against their PyTorch twins on S256-shaped mixed-K tables;
- ``attention_vs_sdpa``: ms per call, ranged kernel vs ``scaled_dot_product_attention`` on the same
  sequences padded (S256 shapes, batch 64, bf16);
- ``train_gpu``: AdamW train steps of the gpu preset (256 px) at batch 64 (K cycling 0..4, bf16
  autocast): s/step, crops/s, peak memory;
- ``infer_gpu``: 4-step cached sampling through ``Restorer.restore`` at batch 256 (32 tracks × 8
  frames, 0..4 references per track, bf16): crops/s, peak memory.
A failing section reports its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from iconface_video.core.batch import TrainBatch, sample_t
from iconface_video.core.config import load_config
from iconface_video.core.losses import LossWeights, compute_losses
from iconface_video.core.model import IConFaceCore
from iconface_video.core.restorer import Restorer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    started = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as err:  # noqa: BLE001 - keep the other numbers when one section fails
        report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=3)}
    report.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)


def train_throughput(preset: str, batch: int, steps: int, device: str, dtype: torch.dtype, proxy: bool) -> dict:
    cfg = load_config(preset)
    if proxy:
        cfg = cfg.replace(id_encoder="proxy", id_dim=128)
    torch.manual_seed(0)
    model = IConFaceCore(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    r, rr = cfg.crop_size, cfg.ref_size
    ks = torch.tensor([b % 5 for b in range(batch)])
    ref_track = torch.arange(batch).repeat_interleave(ks).to(device)
    n_refs = int(ks.sum())
    g = torch.Generator(device=device).manual_seed(0)

    def make_batch() -> TrainBatch:
        hq = torch.rand(batch, 3, r, r, device=device, generator=g) * 2 - 1
        return TrainBatch(
            lq=hq.flip(-1), hq=hq, track=torch.arange(batch, device=device),
            refs=torch.rand(n_refs, 3, rr, rr, device=device, generator=g) * 2 - 1, ref_track=ref_track,
            ref_valid=torch.ones(n_refs, dtype=torch.bool, device=device), t=sample_t(batch, device=device),
            noise=torch.randn(batch, 3, r, r, device=device, generator=g),
            id_feat=None if proxy else torch.randn(n_refs, cfg.id_dim, device=device, generator=g) + 0.5,
        )

    def step(b: TrainBatch) -> float:
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = compute_losses(model, b, None, LossWeights())["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    batches = [make_batch() for _ in range(2)]
    step(batches[0])  # warm-up: kernel compilation, allocator
    step(batches[1])
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    losses = [step(batches[i % 2]) for i in range(steps)]
    _sync(device)
    sec = (time.perf_counter() - started) / steps
    return {"preset": preset, "batch": batch, "dtype": str(dtype), "s_per_step": round(sec, 4),
            "crops_per_s": round(batch / sec, 1), "peak_gib": _peak_gib(device), "loss_last": round(losses[-1], 4),
            "params_M": round(sum(p.numel() for p in params) / 1e6, 2)}


def infer_throughput(preset: str, batch: int, frames_per_track: int, steps: int, device: str, precision: str,
                     proxy: bool, repeats: int) -> dict:
    cfg = load_config(preset)
    if proxy:
        cfg = cfg.replace(id_encoder="proxy", id_dim=128)
    torch.manual_seed(0)
    restorer = Restorer(IConFaceCore(cfg), device=device, precision=precision)
    r, rr = cfg.crop_size, cfg.ref_size
    n_tracks = batch // frames_per_track
    track = torch.arange(n_tracks).repeat_interleave(frames_per_track)
    ks = torch.tensor([t % 5 for t in range(n_tracks)])
    ref_track = torch.arange(n_tracks).repeat_interleave(ks)
    lq = torch.rand(batch, 3, r, r)
    refs = torch.rand(len(ref_track), 3, rr, rr)
    feat = None if proxy else torch.randn(len(ref_track), cfg.id_dim) + 0.5

    def run() -> torch.Tensor:
        return restorer.restore(lq, track, refs, ref_track, ref_feat=feat, seed=0, steps=steps).crops

    run()  # warm-up
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    _sync(device)
    sec = (time.perf_counter() - started) / repeats
    return {"preset": preset, "batch": batch, "tracks": n_tracks, "steps": steps, "precision": precision,
            "s_per_batch": round(sec, 4), "crops_per_s": round(batch / sec, 1), "peak_gib": _peak_gib(device),
            "note": "includes host->device copies of crops and references and the device->host copy of results"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="run on the CPU at tiny shapes (checks the script)")
    parser.add_argument("--kernels-only", action="store_true", help="only the kernel sections (CUDA)")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if args.smoke:
        torch.set_num_threads(1)
        device, preset, dtype, precision, proxy = "cpu", "cpu", torch.float32, "fp32", True
        train_batch, train_steps, infer_batch, frames, repeats = 4, 2, 8, 4, 1
        report["device"] = "cpu (smoke run, tiny shapes)"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device; use --smoke for a CPU dry run")
        device, preset, dtype, precision, proxy = "cuda", "gpu", torch.bfloat16, "bf16", False
        train_batch, train_steps, infer_batch, frames, repeats = 64, 10, 256, 8, 3
        report["device"] = torch.cuda.get_device_name()
        report["torch"] = torch.__version__
        from iconface_video.kernels.bench import (
            S256,
            compare_with_twins,
            time_attention,
        )

        _section(report, "kernels_bf16_vs_twin", lambda: compare_with_twins(16, S256, torch.bfloat16, "cuda"))
        _section(report, "kernels_fp32_vs_twin", lambda: compare_with_twins(4, S256, torch.float32, "cuda"))
        _section(report, "attention_vs_sdpa", lambda: time_attention(64, S256, torch.bfloat16, "cuda"))
        if args.kernels_only:
            print(json.dumps(report, indent=1))
            return
    _section(report, f"train_{preset}", lambda: train_throughput(preset, train_batch, train_steps, device, dtype, proxy))
    _section(report, f"infer_{preset}",
             lambda: infer_throughput(preset, infer_batch, frames, 4, device, precision, proxy, repeats))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
