"""Range-table layouts of the core's packed batches, and kernel-vs-twin / kernel-vs-SDPA checks.

The GPU check script calls ``compare_with_twins`` (bf16 kernels vs their fp32-computing twins)
and ``time_attention`` (ranged kernel vs its twin and ``scaled_dot_product_attention`` on the same work, padded).
``python -m iconface_video.kernels.bench`` prints both as JSON on CUDA, and the CPU timings
(twin and SDPA, no kernel) elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .adaln_modulate import adaln_modulate_reference, adaln_modulate_triton
from .gate_residual import (
    gate_residual_adaln_reference,
    gate_residual_adaln_triton,
    gate_residual_reference,
    gate_residual_triton,
)
from .ranged_attention import ranged_attention_reference, ranged_attention_triton

S256 = {"n_scene": 256, "n_ref": 64, "heads": 8, "head_dim": 64, "dim": 512}  # core-design §5.12
TINY = {"n_scene": 64, "n_ref": 16, "heads": 4, "head_dim": 32, "dim": 128}


def crop_offsets(ks: list[int], n_scene: int, n_ref: int) -> list[int]:
    """Start of each crop on the flat token axis ``[scene | degraded | K refs]`` per crop, plus the
    total token count at the end."""
    starts = [0]
    for k in ks:
        starts.append(starts[-1] + 2 * n_scene + k * n_ref)
    return starts


def one_way_table(ks: list[int], n_scene: int, n_ref: int) -> torch.Tensor:
    """Self-attention table, one-way topology (core-design §5.5): scene → [scene ‖ degraded] and
    the crop's refs as the second key range; degraded → itself; refs → themselves.
    A crop with K = 0 has an empty second key range and no reference sequence. int32[n, 6]."""
    rows = []
    starts = crop_offsets(ks, n_scene, n_ref)
    for b, k in enumerate(ks):
        s = starts[b]
        deg, refs, n_refs = s + n_scene, s + 2 * n_scene, k * n_ref
        rows.append([s, n_scene, s, 2 * n_scene, refs, n_refs])
        rows.append([deg, n_scene, deg, n_scene, 0, 0])
        if k:
            rows.append([refs, n_refs, refs, n_refs, 0, 0])
    return torch.tensor(rows, dtype=torch.int32)


def cross_table(ks: list[int], n_scene: int, n_ref: int) -> torch.Tensor:
    """Degraded cross-attention table: the scene rows of the packed axis → a separate memory laid
    out [route A_b | route B_b] per crop (n_scene rows each). Other rows are in no sequence."""
    starts = crop_offsets(ks, n_scene, n_ref)
    rows = [[starts[b], n_scene, 2 * b * n_scene, n_scene, (2 * b + 1) * n_scene, n_scene] for b in range(len(ks))]
    return torch.tensor(rows, dtype=torch.int32)


def mixed_ks(batch: int) -> list[int]:
    """Reference counts cycling 0..4, as in training (K = 0 for some crops, up to 4 refs)."""
    return [b % 5 for b in range(batch)]


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def _grad_pair(fast: Callable, twin: Callable, inputs: list[torch.Tensor], seed: int) -> dict[str, float]:
    out_f, out_t = fast(*inputs), twin(*inputs)
    g = torch.Generator(device=out_f.device).manual_seed(seed)
    d_out = torch.randn(out_f.shape, generator=g, device=out_f.device).to(out_f.dtype)
    grads_f = torch.autograd.grad(out_f, inputs, d_out)
    grads_t = torch.autograd.grad(out_t, inputs, d_out)
    pairs = [("out", out_f, out_t)] + [(f"d{i}", a, b) for i, (a, b) in enumerate(zip(grads_f, grads_t, strict=True))]
    result = {}
    for key, fast_value, twin_value in pairs:
        result[key] = _max_abs(fast_value, twin_value)
        result[f"{key}_rel"] = result[key] / max(float(twin_value.detach().float().abs().max()), 1e-30)
    return result


def compare_with_twins(
    batch: int = 16, shape: dict = S256, dtype: torch.dtype = torch.bfloat16, device: str = "cuda", seed: int = 0
) -> dict[str, dict[str, float]]:
    """Max abs differences, Triton kernel vs twin, same inputs in ``dtype`` and one upstream
    gradient, for the self-attention and cross-attention tables of a mixed-K batch and for the
    row kernels. Keys per entry: out, d0, d1, d2 (attention: dq, dk, dv; adaln: dx, dshift,
    dscale; gate: dh, dy, dgate; the fused gate + adaln adds d3, d4). Expect ~1e-2 in bf16 (the
    twin computes in fp32). Each key also has a ``_rel`` twin: the difference over max |twin|."""
    g = torch.Generator(device=device).manual_seed(seed)
    ks = mixed_ks(batch)
    n_tok = crop_offsets(ks, shape["n_scene"], shape["n_ref"])[-1]
    n_mem = 2 * batch * shape["n_scene"]
    heads, head_dim, dim = shape["heads"], shape["head_dim"], shape["dim"]

    def leaf(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g, device=device).to(dtype).requires_grad_()

    result = {}
    for name, table, n_k in [
        ("attention_self", one_way_table(ks, shape["n_scene"], shape["n_ref"]), n_tok),
        ("attention_cross", cross_table(ks, shape["n_scene"], shape["n_ref"]), n_mem),
    ]:
        result[name] = _grad_pair(
            lambda q, k, v, t=table: ranged_attention_triton(q, k, v, t),
            lambda q, k, v, t=table: ranged_attention_reference(q, k, v, t),
            [leaf(n_tok, heads, head_dim), leaf(n_k, heads, head_dim), leaf(n_k, heads, head_dim)],
            seed,
        )
    row = torch.repeat_interleave(torch.arange(3 * batch, device=device), n_tok // (3 * batch) + 1)[:n_tok]
    x, y = leaf(n_tok, dim), leaf(n_tok, dim)
    shift, scale, gate = leaf(3 * batch, dim), leaf(3 * batch, dim), leaf(3 * batch, dim)
    result["adaln_modulate"] = _grad_pair(
        lambda a, b, c: adaln_modulate_triton(a, b, c, row),
        lambda a, b, c: adaln_modulate_reference(a, b, c, row),
        [x, shift, scale],
        seed,
    )
    result["gate_residual"] = _grad_pair(
        lambda a, b, c: gate_residual_triton(a, b, c, row),
        lambda a, b, c: gate_residual_reference(a, b, c, row),
        [x, y, gate],
        seed,
    )
    result["gate_residual_adaln"] = _grad_pair(  # out = (h2 ‖ x); d0..d4: dh, dy, dgate, dshift, dscale
        lambda *a: torch.cat(gate_residual_adaln_triton(*a, row), dim=1),
        lambda *a: torch.cat(gate_residual_adaln_reference(*a, row), dim=1),
        [x, y, gate, shift, scale],
        seed,
    )
    return result


def _padded(q, k, v, table):
    """The same attention work as dense padded tensors [n, H, L, Dh] and a key mask [n, 1, 1, Lk]."""
    tab = table.long().to(q.device)
    q_start, q_len, k0_start, k0_len, k1_start, k1_len = tab.unbind(1)
    k_len = k0_len + k1_len
    pos_q = torch.arange(int(q_len.max()), device=q.device)
    pos_k = torch.arange(int(k_len.max()), device=q.device)
    q_idx = torch.where(pos_q < q_len[:, None], q_start[:, None] + pos_q, 0)
    k_idx = torch.where(pos_k < k0_len[:, None], k0_start[:, None] + pos_k, k1_start[:, None] + pos_k - k0_len[:, None])
    k_idx = torch.where(pos_k < k_len[:, None], k_idx, 0)
    mask = (pos_k < k_len[:, None])[:, None, None, :]
    return q[q_idx].transpose(1, 2), k[k_idx].transpose(1, 2), v[k_idx].transpose(1, 2), mask


def _time_ms(fn: Callable[[], object], iters: int, device: str, warmup: int) -> float:
    for _ in range(warmup):  # compiles the kernels and settles the allocator
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iters):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000 / iters


def time_attention(
    batch: int = 64,
    shape: dict = S256,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cuda",
    iters: int = 20,
    warmup: int = 3,
    include_kernel: bool | None = None,
) -> dict[str, float]:
    """Milliseconds per call on the self-attention table of a mixed-K batch, forward and
    forward + backward: the ranged Triton kernel (``ranged``, by default only on CUDA), the twin
    (``twin``), and ``F.scaled_dot_product_attention`` on the same sequences padded to the longest,
    with the key mask (``sdpa_masked``, the same work) and without it (``sdpa_unmasked``: more
    work, but the flash backend runs). Also the useful GFLOP of the forward and, with the kernel,
    its TFLOP/s."""
    if include_kernel is None:
        include_kernel = device == "cuda"
    ks = mixed_ks(batch)
    table = one_way_table(ks, shape["n_scene"], shape["n_ref"])
    n_tok = crop_offsets(ks, shape["n_scene"], shape["n_ref"])[-1]
    heads, head_dim = shape["heads"], shape["head_dim"]
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(n_tok, heads, head_dim, generator=g, device=device).to(dtype).requires_grad_() for _ in range(3)
    )
    pq, pk, pv, mask = (t.detach().requires_grad_() if t.is_floating_point() else t for t in _padded(q, k, v, table))
    flops = 4.0 * heads * head_dim * float((table[:, 1].long() * (table[:, 3] + table[:, 5]).long()).sum())
    result = {"tokens": float(n_tok), "useful_gflop_fwd": flops / 1e9}
    contenders: dict[str, tuple[Callable[[], torch.Tensor], tuple[torch.Tensor, ...]]] = {
        "twin": (lambda: ranged_attention_reference(q, k, v, table), (q, k, v)),
        "sdpa_masked": (lambda: F.scaled_dot_product_attention(pq, pk, pv, attn_mask=mask), (pq, pk, pv)),
        "sdpa_unmasked": (lambda: F.scaled_dot_product_attention(pq, pk, pv), (pq, pk, pv)),
    }
    if include_kernel:
        contenders["ranged"] = (lambda: ranged_attention_triton(q, k, v, table), (q, k, v))
    for name, (fn, inputs) in contenders.items():
        with torch.no_grad():
            result[f"{name}_fwd_ms"] = _time_ms(fn, iters, device, warmup)
        result[f"{name}_fwd_bwd_ms"] = _time_ms(
            lambda fn=fn, inputs=inputs: torch.autograd.grad(fn().float().sum(), inputs), iters, device, warmup
        )
    if include_kernel:
        result["ranged_fwd_tflops"] = flops / result["ranged_fwd_ms"] / 1e9
    return result


def main() -> None:
    if torch.cuda.is_available():
        report = {
            "device": torch.cuda.get_device_name(),
            "bf16_vs_twin_s256_b16": compare_with_twins(16, S256, torch.bfloat16, "cuda"),
            "fp32_vs_twin_s256_b4": compare_with_twins(4, S256, torch.float32, "cuda"),
            "timing_s256_b64_bf16": time_attention(64, S256, torch.bfloat16, "cuda"),
        }
    else:
        torch.set_num_threads(1)
        timing = time_attention(16, TINY, torch.float32, "cpu", 10)
        report = {"device": "cpu (1 thread)", "timing_tiny_b16_fp32": timing}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
