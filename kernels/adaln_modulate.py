"""Fused LayerNorm (no affine) + per-row modulation: ``y = LN(x) * (1 + scale[row]) + shift[row]``.

The modulation tables hold one (shift, scale) row per (crop, segment); a per-token index picks the
row, so one call modulates a packed sequence whose segments use different conditions.
``adaln_modulate`` dispatches to the Triton kernels for CUDA tensors and to the exact PyTorch twin
``adaln_modulate_reference`` otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dispatch import TRITON_AVAILABLE, compute_dtype, use_triton

if TRITON_AVAILABLE:
    import triton
    import triton.language as tl


def check_rows(row: torch.Tensor, n_tokens: int, n_rows: int) -> None:
    """Raise ValueError unless ``row`` is an integer [n_tokens] index into a table of n_rows rows.

    The value range is checked only for CPU indices: on CUDA it would stall the stream on every
    call (a bad CUDA index fails in the twin's indexing; the kernels trust the caller)."""
    if row.dim() != 1 or row.shape[0] != n_tokens:
        raise ValueError(f"row index must be [{n_tokens}], got {tuple(row.shape)}")
    if row.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"row index must be int32 or int64, got {row.dtype}")
    if n_tokens and not row.is_cuda and (int(row.min()) < 0 or int(row.max()) >= n_rows):
        raise ValueError(f"row index out of range for a table of {n_rows} rows")


def adaln_modulate_reference(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Exact PyTorch twin. x: [T, D]; shift, scale: [R, D]; row: int[T] → [T, D] in x's dtype.

    Computed in at least float32; differentiable w.r.t. x, shift and scale.
    """
    check_rows(row, x.shape[0], shift.shape[0])
    cd = compute_dtype(x.dtype)
    row = row.to(device=x.device, dtype=torch.int64)
    x_hat = F.layer_norm(x.to(cd), (x.shape[-1],), eps=eps)
    y = x_hat * (1 + scale.to(cd)[row]) + shift.to(cd)[row]
    return y.to(x.dtype)


def adaln_modulate(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
    force_reference: bool = False,
) -> torch.Tensor:
    """``LN(x) * (1 + scale[row]) + shift[row]``: Triton on CUDA when available, else the twin.

    x: [T, D]; shift, scale: [R, D]; row: int[T] (any device). Returns [T, D] in x's dtype.
    x, shift and scale may differ in dtype (e.g. an fp32 residual stream, bf16 modulation).
    """
    if use_triton(x, shift, scale, force_reference=force_reference):
        return adaln_modulate_triton(x, shift, scale, row, eps)
    return adaln_modulate_reference(x, shift, scale, row, eps)


def adaln_modulate_triton(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    row: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Triton LN + modulation (forward and backward kernels), same contract as the twin.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests). Statistics and
    accumulations in fp32; dshift/dscale are reduced per table row with fp32 atomics.
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError("Triton is not installed; use adaln_modulate_reference")
    if x.dim() != 2 or shift.shape != scale.shape or shift.shape[1:] != x.shape[1:]:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, shift {tuple(shift.shape)}, scale {tuple(scale.shape)}")
    check_rows(row, x.shape[0], shift.shape[0])
    return _AdaLNModulate.apply(x, shift, scale, row, float(eps))


def row_tiles(n_cols: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_D): a whole padded row per token, about 4096 elements per tile on GPU.
    The interpreter uses 4-token tiles so tiny tests cover tiles with one and several rows."""
    block_d = triton.next_power_of_2(n_cols)
    if device.type != "cuda":
        return 4, block_d
    return max(1, 4096 // block_d), block_d


class _AdaLNModulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, row, eps):  # type: ignore[override]
        x, shift, scale = x.contiguous(), shift.contiguous(), scale.contiguous()
        row = row.to(device=x.device).contiguous()
        n_tok, dim = x.shape
        y = torch.empty_like(x)
        mean = torch.empty(n_tok, device=x.device, dtype=torch.float32)
        rstd = torch.empty(n_tok, device=x.device, dtype=torch.float32)
        block_t, block_d = row_tiles(dim, x.device)
        if n_tok:
            _adaln_fwd_kernel[(triton.cdiv(n_tok, block_t),)](
                x, shift, scale, row, y, mean, rstd, n_tok, dim, eps, BLOCK_T=block_t, BLOCK_D=block_d
            )
        ctx.save_for_backward(x, scale, row, mean, rstd)
        ctx.shift_dtype = shift.dtype
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, scale, row, mean, rstd = ctx.saved_tensors
        dy = dy.contiguous()
        n_tok, dim = x.shape
        dx = torch.empty_like(x)
        dshift = torch.zeros(scale.shape, device=x.device, dtype=torch.float32)
        dscale = torch.zeros(scale.shape, device=x.device, dtype=torch.float32)
        block_t, block_d = row_tiles(dim, x.device)
        if n_tok:
            _adaln_bwd_kernel[(triton.cdiv(n_tok, block_t),)](
                x, dy, scale, row, mean, rstd, dx, dshift, dscale, n_tok, dim, BLOCK_T=block_t, BLOCK_D=block_d
            )
        return dx, dshift.to(ctx.shift_dtype), dscale.to(scale.dtype), None, None


if TRITON_AVAILABLE:

    @triton.jit
    def add_rows(ACC, r, vals, tok_mask, col_mask, n_cols, BLOCK_D: tl.constexpr):
        """ACC[r[t]] += vals[t] with fp32 atomics. Segments are contiguous runs of tokens, so a
        tile usually holds one row index: then it is summed in registers and added once."""
        r_lo = tl.min(tl.where(tok_mask, r, 2147483647), 0)
        r_hi = tl.max(tl.where(tok_mask, r, -1), 0)
        offs_d = tl.arange(0, BLOCK_D)
        if r_lo == r_hi:
            tile_sum = tl.sum(tl.where(tok_mask[:, None], vals, 0.0), 0)
            tl.atomic_add(ACC + r_lo * n_cols + offs_d, tile_sum, mask=col_mask)
        else:
            tl.atomic_add(ACC + r[:, None] * n_cols + offs_d[None, :], vals, mask=tok_mask[:, None] & col_mask[None, :])

    @triton.jit
    def _adaln_fwd_kernel(X, SHIFT, SCALE, ROW, Y, MEAN, RSTD, n_tok, n_cols, eps,
                          BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """BLOCK_T tokens per program: LayerNorm statistics in fp32, then the row's modulation."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        col_mask = offs_d < n_cols
        mask = tok_mask[:, None] & col_mask[None, :]
        x = tl.load(X + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        mean = tl.sum(x, 1) / n_cols
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / n_cols + eps)
        sc = tl.load(SCALE + r[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        sh = tl.load(SHIFT + r[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * (1.0 + sc) + sh
        tl.store(Y + offs_t[:, None] * n_cols + offs_d[None, :], y.to(Y.dtype.element_ty), mask=mask)
        tl.store(MEAN + offs_t, mean, mask=tok_mask)
        tl.store(RSTD + offs_t, rstd, mask=tok_mask)

    @triton.jit
    def _adaln_bwd_kernel(X, DY, SCALE, ROW, MEAN, RSTD, DX, DSHIFT, DSCALE, n_tok, n_cols,
                          BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """dx in closed form per token; dshift += dy and dscale += dy * x_hat per table row."""
        offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        tok_mask = offs_t < n_tok
        col_mask = offs_d < n_cols
        mask = tok_mask[:, None] & col_mask[None, :]
        x = tl.load(X + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs_t[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        r = tl.load(ROW + offs_t, mask=tok_mask, other=0)
        mean = tl.load(MEAN + offs_t, mask=tok_mask, other=0.0)
        rstd = tl.load(RSTD + offs_t, mask=tok_mask, other=0.0)
        sc = tl.load(SCALE + r[:, None] * n_cols + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * (1.0 + sc)
        mean_g = tl.sum(g, 1) / n_cols
        mean_gx = tl.sum(g * x_hat, 1) / n_cols
        dx = rstd[:, None] * (g - mean_g[:, None] - x_hat * mean_gx[:, None])
        tl.store(DX + offs_t[:, None] * n_cols + offs_d[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        add_rows(DSHIFT, r, dy, tok_mask, col_mask, n_cols, BLOCK_D)
        add_rows(DSCALE, r, dy * x_hat, tok_mask, col_mask, n_cols, BLOCK_D)
