"""Parameter counts and per-crop FLOPs of the core presets (prints JSON).

    python scripts/core_stats.py                 # cpu, gpu
    python scripts/core_stats.py cpu             # some presets
    python scripts/core_stats.py --time cpu      # + CPU timings: train step at batch 16 and
                                                 #   one-step inference per crop at the training
                                                 #   side and at 256 (wall and process CPU time)
    python scripts/core_stats.py --time --threads 2 cpu

FLOPs are counted, not estimated: forward hooks on every convolution (2·Cin/groups·k²·Cout per
output pixel), every linear layer (2·in·out per row), the segment-LoRA deltas (2·r·(in+out) per
cond row) and every ranged-attention call (4·H·Dh·Σ q_len·k_len from its range table), during a
real forward of one crop (one track) on the CPU. Elementwise work (norms, RoPE, activations,
gates) is not counted. Reported per crop at the preset's training side:

- ``fwd_k4`` / ``fwd_k0``: one joint forward with 4 references / none;
- ``cond_k4``: encoding the conditions once (degraded + 4 references, cached across steps);
- ``step_k4``: one cached sampling step (scene rows only);
- ``sample1_k4``: one-step sampling (the shipped default) = cond_k4 + step_k4 (references shared
  by a track's frames make the reference share of cond_k4 smaller still in video);
- ``train_k4`` ≈ 3·fwd_k4 (forward + backward).
Parameter counts exclude the frozen proxy identity encoder (the external encoders are not part of
the core either).
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn

from iconface_video.core.batch import TrainBatch, sample_t
from iconface_video.core.blocks import Attention, SegmentLoRALinear
from iconface_video.core.config import load_config
from iconface_video.core.losses import compute_losses
from iconface_video.core.model import IConFaceCore
from iconface_video.core.restorer import Restorer

PRESETS = ("cpu", "gpu")


class FlopCounter:
    """Adds FLOPs of hooked modules while active."""

    def __init__(self, model: nn.Module) -> None:
        self.flops = 0
        self.handles = []
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                self.handles.append(mod.register_forward_hook(self._conv))
            elif isinstance(mod, nn.Linear):
                self.handles.append(mod.register_forward_pre_hook(self._linear))
            elif isinstance(mod, SegmentLoRALinear):
                self.handles.append(mod.register_forward_pre_hook(self._lora))
            elif isinstance(mod, Attention):
                self.handles.append(mod.register_forward_pre_hook(self._attention))

    def _conv(self, mod: nn.Conv2d, args, out: torch.Tensor) -> None:
        per_pixel = 2 * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels
        self.flops += per_pixel * out.numel() // mod.out_channels

    def _linear(self, mod: nn.Linear, args) -> None:
        self.flops += 2 * mod.in_features * mod.out_features * args[0].numel() // mod.in_features

    def _lora(self, mod: SegmentLoRALinear, args) -> None:
        if mod.rank and len(args) > 1 and args[1] is not None:
            self.flops += 2 * mod.rank * (mod.base.in_features + mod.base.out_features) * args[0].shape[0]

    def _attention(self, mod: Attention, args) -> None:
        q, _, _, table = args
        pairs = int((table[:, 1] * (table[:, 3] + table[:, 5])).sum())
        self.flops += 4 * q.shape[1] * q.shape[2] * pairs

    def take(self) -> int:
        flops, self.flops = self.flops, 0
        return flops


def preset_stats(name: str) -> dict:
    cfg = load_config(name)
    torch.manual_seed(0)
    model = IConFaceCore(cfg).eval()
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("proxy_encoder."))
    r = cfg.crop_size
    lq = torch.rand(1, 3, r, r) * 2 - 1
    track = torch.zeros(1, dtype=torch.long)
    refs = torch.rand(4, 3, cfg.ref_size, cfg.ref_size) * 2 - 1
    feat = torch.randn(4, cfg.id_dim)
    x, t = torch.randn(1, 3, r, r), torch.full((1,), 0.5)
    counter = FlopCounter(model)
    out = {"preset": name, "params": params, "tokens_k4": None, "tokens_k0": None}
    with torch.no_grad():
        cond4 = model.conditions(lq, track, refs, torch.zeros(4, dtype=torch.long), id_feat=feat)
        cond0 = model.conditions(lq, track)
        counter.take()
        model(x, t, cond4)
        out["fwd_k4"] = counter.take()
        model(x, t, cond0)
        out["fwd_k0"] = counter.take()
        cache = model.encode_conditions(cond4)
        out["cond_k4"] = counter.take()
        model.scene_forward(x, t, cache)
        out["step_k4"] = counter.take()
    out["sample1_k4"] = out["cond_k4"] + out["step_k4"]
    out["train_k4"] = 3 * out["fwd_k4"]
    out["tokens_k4"] = 2 * cfg.grid**2 + 4 * cfg.ref_grid**2
    out["tokens_k0"] = 2 * cfg.grid**2
    for key in ("fwd_k4", "fwd_k0", "cond_k4", "step_k4", "sample1_k4", "train_k4"):
        out[key] = round(out[key] / 1e9, 3)  # GFLOP per crop
    out["params_M"] = round(params / 1e6, 2)
    return out


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall s, process CPU s) per call after one warm-up call."""
    fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def cpu_timings(name: str, train_batch: int = 16, infer_batch: int = 16, repeats: int = 5) -> dict:
    """CPU seconds of one AdamW train step (K cycling 0..3; pixel and flow terms, no identity
    network) and of one-step inference per crop at the training side and at 256."""
    cfg = load_config(name).replace(id_encoder="proxy", id_dim=128)
    torch.manual_seed(0)
    model = IConFaceCore(cfg)
    r, rr = cfg.crop_size, cfg.ref_size
    ks = torch.tensor([b % 4 for b in range(train_batch)])
    ref_track = torch.arange(train_batch).repeat_interleave(ks)
    hq = torch.rand(train_batch, 3, r, r) * 2 - 1
    batch = TrainBatch(lq=hq.flip(-1), hq=hq, track=torch.arange(train_batch),
                       refs=torch.rand(len(ref_track), 3, rr, rr) * 2 - 1, ref_track=ref_track,
                       ref_valid=torch.ones(len(ref_track), dtype=torch.bool), t=sample_t(train_batch),
                       noise=torch.randn_like(hq))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step() -> None:
        loss = compute_losses(model, batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_wall, train_cpu = _timed(train_step, repeats)
    restorer = Restorer(model.eval())
    track = torch.arange(infer_batch // 4).repeat_interleave(4)  # 4 frames per track, 2 refs each
    ref_t = torch.arange(infer_batch // 4).repeat_interleave(2)
    refs = torch.rand(len(ref_t), 3, rr, rr)
    out = {"preset": name, "threads": torch.get_num_threads(),
           f"train_step_b{train_batch}_s": round(train_wall, 3), "train_step_cpu_s": round(train_cpu, 3),
           "train_crops_per_s": round(train_batch / train_wall, 2)}
    for side in sorted({r, 256}):
        lq = torch.rand(infer_batch, 3, side, side)
        wall, cpu = _timed(lambda: restorer.restore(lq, track, refs, ref_t, steps=1), repeats)
        out[f"infer1_{side}_ms_per_crop"] = round(1000 * wall / infer_batch, 1)
        out[f"infer1_{side}_cpu_ms_per_crop"] = round(1000 * cpu / infer_batch, 1)
    return out


def main(argv: list[str]) -> None:
    threads = 1
    if "--threads" in argv:
        i = argv.index("--threads")
        threads = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    torch.set_num_threads(threads)
    timing = "--time" in argv
    names = [a for a in argv if a != "--time"] or list(PRESETS)
    for name in names:
        print(json.dumps(cpu_timings(name) if timing else preset_stats(name)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
