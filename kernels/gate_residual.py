"""Fused gate + residual: ``h + gate[row] * y`` with one gate row per (crop, segment).

``gate_residual`` dispatches to the Triton kernels for CUDA tensors and to the exact PyTorch twin
``gate_residual_reference`` otherwise.
"""

from __future__ import annotations

import torch

from ._dispatch import TRITON_AVAILABLE, compute_dtype, use_triton
from .adaln_modulate import check_rows

if TRITON_AVAILABLE:
    import triton
    import triton.language as tl

    from .adaln_modulate import add_rows, row_tiles


def gate_residual_reference(
    h: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, row: torch.Tensor
) -> torch.Tensor:
    """Exact PyTorch twin. h, y: [T, D]; gate: [R, D]; row: int[T] → [T, D] in h's dtype.

    Computed in at least float32; differentiable w.r.t. h, y and gate.
    """
    if y.shape != h.shape:
        raise ValueError(f"h and y must have the same shape, got {tuple(h.shape)} and {tuple(y.shape)}")
    check_rows(row, h.shape[0], gate.shape[0])
    cd = compute_dtype(h.dtype)
    row = row.to(device=h.device, dtype=torch.int64)
    return (h.to(cd) + gate.to(cd)[row] * y.to(cd)).to(h.dtype)


def gate_residual(
    h: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, row: torch.Tensor, force_reference: bool = False
) -> torch.Tensor:
    """``h + gate[row] * y``: Triton on CUDA when available, else the twin.

    h, y: [T, D]; gate: [R, D]; row: int[T] (any device). Returns [T, D] in h's dtype; h, y and
    gate may differ in dtype.
    """
    if use_triton(h, y, gate, force_reference=force_reference):
        return gate_residual_triton(h, y, gate, row)
    return gate_residual_reference(h, y, gate, row)


def gate_residual_triton(h: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Triton gate + residual (forward and backward kernels), same contract as the twin.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests); dgate is
    reduced per table row with fp32 atomics.
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError("Triton is not installed; use gate_residual_reference")
    if h.dim() != 2 or y.shape != h.shape or gate.shape[1:] != h.shape[1:]:
        raise ValueError(f"shape mismatch: h {tuple(h.shape)}, y {tuple(y.shape)}, gate {tuple(gate.shape)}")
    check_rows(row, h.shape[0], gate.shape[0])
    return _GateResidual.apply(h, y, gate, row)


class _GateResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, y, gate, row):  # type: ignore[override]
        h, y, gate = h.contiguous(), y.contiguous(), gate.contiguous()
        row = row.to(device=h.device).contiguous()
        n_tok, dim = h.shape
        out = torch.empty_like(h)
        block_t, block_d = row_tiles(dim, h.device)
        if n_tok:
            _gate_fwd_kernel[(triton.cdiv(n_tok, block_t),)](
                h, y, gate, row, out, n_tok, dim, BLOCK_T=block_t, BLOCK_D=block_d
            )
        ctx.save_for_backward(y, gate, row)
        ctx.h_dtype = h.dtype
        return out

    @staticmethod
    def backward(ctx, d_out):  # type: ignore[override]
        y, gate, row = ctx.saved_tensors
        d_out = d_out.contiguous()
        n_tok, dim = y.shape
        dy = torch.empty_like(y)
        dgate = torch.zeros(gate.shape, device=y.device, dtype=torch.float32)
        block_t, block_d = row_tiles(dim, y.device)
        if n_tok:
            _gate_bwd_kernel[(triton.cdiv(n_tok, block_t),)](
                d_out, y, gate, row, dy, dgate, n_tok, dim, BLOCK_T=block_t, BLOCK_D=block_d
            )
        return d_out.to(ctx.h_dtype), dy, dgate.to(gate.dtype), None


if TRITON_AVAILABLE:

    @triton.jit
    def _gate_fwd_kernel(H, Y, GATE, ROW, OUT, n_tok, n_cols, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """OUT = H + GATE[ROW] * Y, BLOCK_T tokens per program, fp32 arithmetic."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        mask = tok_mask[:, None] & (offs_d < n_cols)[None, :]
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        h = tl.load(H + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        y = tl.load(Y + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + r[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(OUT + offs_t[:, None] * n_cols + offs_d[None, :], (h + g * y).to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_bwd_kernel(DOUT, Y, GATE, ROW, DY, DGATE, n_tok, n_cols, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """dY = GATE[ROW] * dOUT; dGATE[ROW] += dOUT * Y (dH is dOUT itself)."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        col_mask = offs_d < n_cols
        mask = tok_mask[:, None] & col_mask[None, :]
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        d_out = tl.load(DOUT + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        y = tl.load(Y + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + r[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DY + offs_t[:, None] * n_cols + offs_d[None, :], (g * d_out).to(DY.dtype.element_ty), mask=mask)
        add_rows(DGATE, r, d_out * y, tok_mask, col_mask, n_cols, BLOCK_D)
