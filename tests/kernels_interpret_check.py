"""Triton kernels vs their PyTorch twins under the Triton interpreter, on CPU tensors.

Run as ``TRITON_INTERPRET=1 python tests/kernels_interpret_check.py``: the variable must be set
before Triton is first imported, so ``test_kernels_triton.py`` runs this in a fresh process.
Prints one JSON object: for each case, the max abs difference of the output and of every
gradient between the Triton path and the twin (same upstream gradient), and the max abs value
the Triton path leaves on rows that must be zero.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from iconface_video.kernels.adaln_modulate import adaln_modulate_reference, adaln_modulate_triton
from iconface_video.kernels.bench import compare_with_twins, crop_offsets, cross_table, one_way_table, time_attention
from iconface_video.kernels.gate_residual import (
    gate_residual_adaln_reference,
    gate_residual_adaln_triton,
    gate_residual_reference,
    gate_residual_triton,
)
from iconface_video.kernels.ranged_attention import ranged_attention_reference, ranged_attention_triton
from kernel_cases import attending_rows

KS = [0, 1, 3, 1]  # crops with 0, 1 and 3 references in one batch
N_SCENE, N_REF = 20, 7  # ragged lengths that cross the interpreter's 16-row tiles


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _max_abs(a: torch.Tensor) -> float:
    return float(a.detach().double().abs().max()) if a.numel() else 0.0


def _compare(triton_fn, twin_fn, inputs: list[torch.Tensor], seed: int) -> tuple[dict[str, float], list, list]:
    """Run both paths with one upstream gradient; return differences and both gradient lists."""
    out_t = triton_fn(*inputs)
    out_r = twin_fn(*inputs)
    d_out = torch.randn(out_t.shape, generator=torch.Generator().manual_seed(seed)).to(out_t.dtype)
    grads_t = torch.autograd.grad(out_t, inputs, d_out)
    grads_r = torch.autograd.grad(out_r, inputs, d_out)
    diffs = {"out": _max_diff(out_t, out_r), "out_ref": _max_abs(out_r)}
    for i, (gt, gr) in enumerate(zip(grads_t, grads_r, strict=True)):
        diffs[f"d{i}"], diffs[f"d{i}_ref"] = _max_diff(gt, gr), _max_abs(gr)
    return diffs, [out_t, *grads_t], [out_r, *grads_r]


def _leaves(shapes, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]


def attention_case(table, n_q, n_k, heads, head_dim, dtype, seed):
    q, k, v = _leaves([(n_q, heads, head_dim), (n_k, heads, head_dim), (n_k, heads, head_dim)], dtype, seed)
    diffs, got, _ = _compare(
        lambda a, b, c: ranged_attention_triton(a, b, c, table),
        lambda a, b, c: ranged_attention_reference(a, b, c, table),
        [q, k, v],
        seed,
    )
    out, dq = got[0], got[1]
    zero_rows = ~attending_rows(table, n_q)
    diffs["zero_rows_out"] = float(out.detach()[zero_rows].abs().max()) if zero_rows.any() else 0.0
    diffs["zero_rows_dq"] = float(dq[zero_rows].abs().max()) if zero_rows.any() else 0.0
    diffs["n_zero_rows"] = int(zero_rows.sum())
    return diffs


def strided_attention_case(table, n_tok, heads, head_dim, seed):
    """q, k, v as views of one packed qkv projection (row stride 3·H·Dh), as a model makes them."""
    (qkv,) = _leaves([(n_tok, 3, heads, head_dim)], torch.float32, seed)
    diffs, _, _ = _compare(
        lambda x: ranged_attention_triton(x[:, 0], x[:, 1], x[:, 2], table),
        lambda x: ranged_attention_reference(x[:, 0], x[:, 1], x[:, 2], table),
        [qkv],
        seed,
    )
    return diffs


def row_cases(dtype, seed):
    n_tok, dim, n_rows = 37, 48, 6
    # contiguous runs (the core's layout) plus one stray token, so tiles hold one or several rows
    row = torch.tensor([0] * 9 + [1] * 8 + [2] * 3 + [4] * 11 + [5] * 5 + [1])
    token_shape, table_shape = (n_tok, dim), (n_rows, dim)
    x, shift, scale, y, gate = _leaves([token_shape, table_shape, table_shape, token_shape, table_shape], dtype, seed)
    adaln, got, _ = _compare(
        lambda a, b, c: adaln_modulate_triton(a, b, c, row),
        lambda a, b, c: adaln_modulate_reference(a, b, c, row),
        [x, shift, scale],
        seed,
    )
    adaln["unused_row_dshift"] = float(got[2][3].abs().max())  # row 3 is never indexed
    gated, got, _ = _compare(
        lambda a, b, c: gate_residual_triton(a, b, c, row),
        lambda a, b, c: gate_residual_reference(a, b, c, row),
        [x, y, gate],
        seed,
    )
    gated["unused_row_dgate"] = float(got[3][3].abs().max())
    shift2, scale2 = _leaves([(n_rows, dim), (n_rows, dim)], dtype, seed + 100)
    fused, _, _ = _compare(
        lambda *a: _concat_pair(gate_residual_adaln_triton(*a, row)),
        lambda *a: _concat_pair(gate_residual_adaln_reference(*a, row)),
        [x, y, gate, shift2, scale2],
        seed,
    )
    return adaln, gated, fused


def _concat_pair(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(h2, x) as one [T, 2D] tensor, so one upstream gradient drives both outputs."""
    return torch.cat(pair, dim=1)


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1 before running this script")
    torch.set_num_threads(1)
    started = time.perf_counter()
    n_tok = crop_offsets(KS, N_SCENE, N_REF)[-1]
    self_table = one_way_table(KS, N_SCENE, N_REF)
    xattn_table = cross_table(KS, N_SCENE, N_REF)
    n_mem = len(KS) * 2 * N_SCENE
    # edge rows: keys only in range 1; no keys at all; zero queries; the two key ranges overlapping
    # (a key in both counts twice, as in the twin); rows 40..47 in no sequence; int64 table
    edge_table = torch.tensor(
        [[0, 17, 0, 0, 3, 30], [17, 5, 0, 0, 0, 0], [22, 0, 1, 4, 0, 0], [22, 18, 10, 25, 20, 19]],
        dtype=torch.int64,
    )
    results = {
        "attn_self_fp32_d32": attention_case(self_table, n_tok, n_tok, 2, 32, torch.float32, 0),
        "attn_cross_fp32_d32": attention_case(xattn_table, n_tok, n_mem, 2, 32, torch.float32, 1),
        "attn_edges_fp32_d32": attention_case(edge_table, 48, 50, 1, 32, torch.float32, 2),
        "attn_self_fp32_d64": attention_case(self_table, n_tok, n_tok, 1, 64, torch.float32, 3),
        "attn_cross_fp32_d128": attention_case(xattn_table, n_tok, n_mem, 1, 128, torch.float32, 4),
        "attn_strided_fp32_d32": strided_attention_case(self_table, n_tok, 2, 32, 5),
        "attn_self_fp16_d32": attention_case(self_table, n_tok, n_tok, 2, 32, torch.float16, 6),
    }
    results["adaln_fp32"], results["gate_fp32"], results["gate_adaln_fp32"] = row_cases(torch.float32, 7)
    results["adaln_fp16"], results["gate_fp16"], results["gate_adaln_fp16"] = row_cases(torch.float16, 8)
    # the GPU check's comparison function itself, on a tiny layout (its numbers are relative)
    tiny = {"n_scene": 16, "n_ref": 5, "heads": 2, "head_dim": 32, "dim": 40}
    results["bench_smoke"] = compare_with_twins(2, tiny, torch.float32, "cpu", seed=9)
    timing = time_attention(2, tiny, torch.float32, "cpu", iters=1, warmup=0, include_kernel=True)
    results["bench_timing_keys"] = sorted(timing)
    results["seconds"] = time.perf_counter() - started
    print(json.dumps(results))


if __name__ == "__main__":
    main()
