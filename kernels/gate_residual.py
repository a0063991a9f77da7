"""Fused gate + residual: ``h + gate[row] * y`` with one gate row per (crop, segment).

``gate_residual`` dispatches to the Triton kernels for CUDA tensors and to the exact PyTorch twin
``gate_residual_reference`` otherwise. ``gate_residual_adaln`` also applies the next sub-block's
LayerNorm + modulation in the same pass (it saves one read of the residual stream), with the twin
``gate_residual_adaln_reference``.
"""

from __future__ import annotations

import torch

from ._dispatch import TRITON_AVAILABLE, compute_dtype, use_triton
from .adaln_modulate import adaln_modulate_reference, check_rows

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


def gate_residual_adaln_reference(
    h: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact twin of the fused pair: ``h2 = h + gate[row] * y`` (rounded to h's dtype), then
    ``x = LN(h2) * (1 + scale[row]) + shift[row]``. h, y: [T, D]; gate, shift, scale: [R, D];
    row: int[T] → (h2 [T, D] in h's dtype, x [T, D] in h's dtype)."""
    h2 = gate_residual_reference(h, y, gate, row)
    return h2, adaln_modulate_reference(h2, shift, scale, row, eps)


def gate_residual_adaln(
    h: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
    force_reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gate_residual`` followed by ``adaln_modulate`` with the same row index, in one kernel on
    CUDA (twin otherwise). Returns (h2, x); both differentiable w.r.t. every tensor input."""
    if use_triton(h, y, gate, shift, scale, force_reference=force_reference):
        return gate_residual_adaln_triton(h, y, gate, shift, scale, row, eps)
    return gate_residual_adaln_reference(h, y, gate, shift, scale, row, eps)


def gate_residual_adaln_triton(
    h: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton gate + residual + LN + modulation (one forward and one backward kernel), same
    contract as the twin; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    if not TRITON_AVAILABLE:
        raise RuntimeError("Triton is not installed; use gate_residual_adaln_reference")
    tables = (gate, shift, scale)
    if h.dim() != 2 or y.shape != h.shape or any(t.shape != gate.shape or t.shape[1:] != h.shape[1:] for t in tables):
        raise ValueError(
            f"shape mismatch: h {tuple(h.shape)}, y {tuple(y.shape)}, gate/shift/scale "
            f"{[tuple(t.shape) for t in tables]}"
        )
    check_rows(row, h.shape[0], gate.shape[0])
    return _GateResidualAdaLN.apply(h, y, gate, shift, scale, row, float(eps))


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



class _GateResidualAdaLN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, y, gate, shift, scale, row, eps):  # type: ignore[override]
        h, y, gate, shift, scale = (t.contiguous() for t in (h, y, gate, shift, scale))
        row = row.to(device=h.device).contiguous()
        n_tok, dim = h.shape
        h2, x = torch.empty_like(h), torch.empty_like(h)
        mean = torch.empty(n_tok, device=h.device, dtype=torch.float32)
        rstd = torch.empty(n_tok, device=h.device, dtype=torch.float32)
        block_t, block_d = row_tiles(dim, h.device)
        if n_tok:
            _gate_adaln_fwd_kernel[(triton.cdiv(n_tok, block_t),)](
                h, y, gate, shift, scale, row, h2, x, mean, rstd, n_tok, dim, eps, BLOCK_T=block_t, BLOCK_D=block_d
            )
        ctx.save_for_backward(y, gate, scale, row, h2, mean, rstd)
        ctx.dtypes = (h.dtype, shift.dtype)
        return h2, x

    @staticmethod
    def backward(ctx, d_h2, d_x):  # type: ignore[override]
        y, gate, scale, row, h2, mean, rstd = ctx.saved_tensors
        h_dtype, shift_dtype = ctx.dtypes
        d_h2, d_x = d_h2.contiguous(), d_x.contiguous()
        n_tok, dim = y.shape
        dh = torch.empty(y.shape, device=y.device, dtype=h_dtype)
        dy = torch.empty_like(y)
        dgate, dshift, dscale = (torch.zeros(gate.shape, device=y.device, dtype=torch.float32) for _ in range(3))
        block_t, block_d = row_tiles(dim, y.device)
        if n_tok:
            _gate_adaln_bwd_kernel[(triton.cdiv(n_tok, block_t),)](
                d_h2, d_x, y, gate, scale, row, h2, mean, rstd, dh, dy, dgate, dshift, dscale, n_tok, dim,
                BLOCK_T=block_t, BLOCK_D=block_d,
            )
        return dh, dy, dgate.to(gate.dtype), dshift.to(shift_dtype), dscale.to(scale.dtype), None, None

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

    @triton.jit
    def _gate_adaln_fwd_kernel(H, Y, GATE, SHIFT, SCALE, ROW, H2, X, MEAN, RSTD, n_tok, n_cols, eps,
                               BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """H2 = H + GATE[ROW] * Y, then X = LN(H2) * (1 + SCALE[ROW]) + SHIFT[ROW]; the LN reads
        H2 as stored (rounded to its dtype), exactly as the twin's two steps do."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        mask = tok_mask[:, None] & (offs_d < n_cols)[None, :]
        tok = offs_t[:, None] * n_cols + offs_d[None, :]
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        tab = r[:, None] * n_cols + offs_d[None, :]
        h = tl.load(H + tok, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(Y + tok, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + tab, mask=mask, other=0.0).to(tl.float32)
        h2 = (h + g * y).to(H2.dtype.element_ty)
        tl.store(H2 + tok, h2, mask=mask)
        h2 = h2.to(tl.float32)
        mean = tl.sum(h2, 1) / n_cols
        hc = tl.where(mask, h2 - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(hc * hc, 1) / n_cols + eps)
        sc = tl.load(SCALE + tab, mask=mask, other=0.0).to(tl.float32)
        sh = tl.load(SHIFT + tab, mask=mask, other=0.0).to(tl.float32)
        tl.store(X + tok, (hc * rstd[:, None] * (1.0 + sc) + sh).to(X.dtype.element_ty), mask=mask)
        tl.store(MEAN + offs_t, mean, mask=tok_mask)
        tl.store(RSTD + offs_t, rstd, mask=tok_mask)

    @triton.jit
    def _gate_adaln_bwd_kernel(DH2, DX, Y, GATE, SCALE, ROW, H2, MEAN, RSTD, DH, DY, DGATE, DSHIFT, DSCALE,
                               n_tok, n_cols, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """The LN backward of dX joins dH2; the total flows to dH, dY and dGATE per table row;
        dSHIFT and dSCALE come from dX alone."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        col_mask = offs_d < n_cols
        mask = tok_mask[:, None] & col_mask[None, :]
        tok = offs_t[:, None] * n_cols + offs_d[None, :]
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        tab = r[:, None] * n_cols + offs_d[None, :]
        d_x = tl.load(DX + tok, mask=mask, other=0.0).to(tl.float32)
        h2 = tl.load(H2 + tok, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + offs_t, mask=tok_mask, other=0.0)
        rstd = tl.load(RSTD + offs_t, mask=tok_mask, other=0.0)
        sc = tl.load(SCALE + tab, mask=mask, other=0.0).to(tl.float32)
        x_hat = tl.where(mask, (h2 - mean[:, None]) * rstd[:, None], 0.0)
        gm = d_x * (1.0 + sc)
        mean_g = tl.sum(gm, 1) / n_cols
        mean_gx = tl.sum(gm * x_hat, 1) / n_cols
        d_h2 = tl.load(DH2 + tok, mask=mask, other=0.0).to(tl.float32)
        d_h2 += rstd[:, None] * (gm - mean_g[:, None] - x_hat * mean_gx[:, None])
        y = tl.load(Y + tok, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + tab, mask=mask, other=0.0).to(tl.float32)
        tl.store(DH + tok, d_h2.to(DH.dtype.element_ty), mask=mask)
        tl.store(DY + tok, (g * d_h2).to(DY.dtype.element_ty), mask=mask)
        add_rows(DGATE, r, d_h2 * y, tok_mask, col_mask, n_cols, BLOCK_D)
        add_rows(DSHIFT, r, d_x, tok_mask, col_mask, n_cols, BLOCK_D)
        add_rows(DSCALE, r, d_x * x_hat, tok_mask, col_mask, n_cols, BLOCK_D)
