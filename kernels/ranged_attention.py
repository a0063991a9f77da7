"""Ranged variable-length attention: packed token axes, no padding, a table of virtual sequences.

A *range table* is ``int[n_virtual, 6]`` with rows ``(q_start, q_len, k0_start, k0_len, k1_start,
k1_len)`` indexing flat token axes: the queries ``q[q_start : q_start + q_len]`` of a virtual
sequence attend, with one softmax, to the union of the keys ``k[k0_start : k0_start + k0_len]``
and ``k[k1_start : k1_start + k1_len]`` (a range of length 0 is skipped). Every query row belongs to
at most one virtual sequence; rows in none, and virtual sequences without keys, give zeros.

``ranged_attention`` dispatches to the Triton kernels for CUDA tensors and to the exact PyTorch
twin ``ranged_attention_reference`` otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dispatch import TRITON_AVAILABLE, compute_dtype, use_triton
from .range_tables import check_table, transposed_table

if TRITON_AVAILABLE:
    import triton
    import triton.language as tl

SUPPORTED_HEAD_DIMS = (32, 64, 128)  # head dims of the Triton path (the twin takes any)


def ranged_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact PyTorch ranged attention: the CPU path and the test oracle of the Triton kernels.

    q: [Tq, H, Dh]; k, v: [Tk, H, Dh]; table: int[n_virtual, 6] (module docstring).
    Returns [Tq, H, Dh] in q's dtype, computed in at least float32, differentiable w.r.t. q, k, v.

    Vectorised by shape: virtual sequences with the same (q_len, k0_len, k1_len) form one bucket,
    gathered into a dense [n, H, q_len, k0_len + k1_len] problem for
    ``F.scaled_dot_product_attention`` (no padding, no mask), and the rows are scattered back once.
    A packed batch has few distinct shapes (one per reference count K and segment kind), so this
    is a handful of calls, faster on CPU than one padded, masked batch.
    """
    tq, heads, head_dim = q.shape
    host = check_table(table, tq, k.shape[0])
    cd = compute_dtype(q.dtype)
    qc, kc, vc = q.to(cd), k.to(cd), v.to(cd)
    host = host[(host[:, 1] > 0) & (host[:, 3] + host[:, 5] > 0)]  # the rest stays zero
    if host.shape[0] == 0:
        # Nothing attends to anything; keep the graph so callers can still backpropagate.
        return (qc * 0).to(q.dtype)
    shapes, bucket_of = torch.unique(host[:, [1, 3, 5]], dim=0, return_inverse=True)
    rows_out, values_out = [], []
    for bucket, (q_len, k0_len, k1_len) in enumerate(shapes.tolist()):
        seqs = host[bucket_of == bucket]
        q_idx = (seqs[:, 0, None] + torch.arange(q_len)).to(q.device, non_blocking=True)  # [n, q_len]
        k_idx = torch.cat([seqs[:, 2, None] + torch.arange(k0_len), seqs[:, 4, None] + torch.arange(k1_len)], 1)
        k_idx = k_idx.to(q.device, non_blocking=True)  # [n, k0_len + k1_len]
        o = F.scaled_dot_product_attention(
            qc[q_idx].transpose(1, 2), kc[k_idx].transpose(1, 2), vc[k_idx].transpose(1, 2), scale=scale
        )  # [n, H, q_len, Dh]
        rows_out.append(q_idx.reshape(-1))
        values_out.append(o.transpose(1, 2).reshape(-1, heads, head_dim))
    out = torch.zeros(tq, heads, head_dim, dtype=cd, device=q.device)
    # .to(cd): under autocast SDPA returns the autocast dtype, not the compute dtype.
    out = out.index_put((torch.cat(rows_out),), torch.cat(values_out).to(cd))
    return out.to(q.dtype)


def ranged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    scale: float | None = None,
    force_reference: bool = False,
) -> torch.Tensor:
    """Ranged attention (module docstring): Triton on CUDA when available, else the exact twin.

    q: [Tq, H, Dh]; k, v: [Tk, H, Dh]; table: int32/int64[n_virtual, 6]; scale defaults to
    Dh**-0.5. Returns [Tq, H, Dh], differentiable w.r.t. q, k, v. The Triton path supports
    head_dim 32, 64 and 128 and takes the twin for any other head_dim.
    """
    if use_triton(q, k, v, force_reference=force_reference) and q.shape[-1] in SUPPORTED_HEAD_DIMS:
        return ranged_attention_triton(q, k, v, table, scale)
    return ranged_attention_reference(q, k, v, table, scale)


LOG2_E = 1.4426950408889634
MAX_GRID_Z = 65535  # CUDA's limit on a launch grid's third axis


def to_device_int32(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host index tensor as contiguous int32 on ``device``. The copy is non-blocking so it does
    not wait for queued kernels (a blocking copy from pageable memory would sync the stream)."""
    return index.to(torch.int32).contiguous().to(device, non_blocking=True)


def ranged_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Triton ranged attention (forward and backward kernels), same contract as the twin.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests). head_dim must be
    32, 64 or 128; fp16, bf16 or fp32 inputs (k and v are cast to q's dtype), fp32 accumulation.
    The launch grid's third axis counts virtual sequences (in the backward, key intervals), which
    CUDA caps at 65535. Pass the table on the CPU (``check_table``).
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError("Triton is not installed; use ranged_attention_reference")
    head_dim = q.shape[-1]
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"Triton ranged attention supports head_dim {SUPPORTED_HEAD_DIMS}, got {head_dim}")
    # tl.dot needs one operand dtype; the cast is differentiable and a no-op in the usual case
    k, v = k.to(q.dtype), v.to(q.dtype)
    if k.shape != v.shape or k.shape[1:] != q.shape[1:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    host = check_table(table, q.shape[0], k.shape[0])
    if host.shape[0] > MAX_GRID_Z:
        raise ValueError(f"at most {MAX_GRID_Z} virtual sequences per call, got {host.shape[0]}; split the batch")
    if scale is None:
        scale = head_dim**-0.5
    return _RangedAttention.apply(q, k, v, host, float(scale))


def _blocks(head_dim: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps). The interpreter runs the same code with small tiles so the
    tests cross block boundaries and masked tails on tiny shapes."""
    if device.type != "cuda":
        return 16, 16, 4
    if head_dim <= 64:
        return 64, 64, 4
    return 64, 32, 8


class _RangedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, host, scale):  # type: ignore[override]
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        tq, heads, head_dim = q.shape
        table = to_device_int32(host, q.device)
        out = torch.zeros_like(q)
        lse = torch.zeros(heads, tq, device=q.device, dtype=torch.float32)
        n_virtual = host.shape[0]
        max_q = int(host[:, 1].max()) if n_virtual else 0
        block_m, block_n, warps = _blocks(head_dim, q.device)
        if max_q > 0 and k.shape[0] > 0:
            grid = (triton.cdiv(max_q, block_m), heads, n_virtual)
            _fwd_kernel[grid](
                q, k, v, out, lse, table, scale * LOG2_E,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                out.stride(0), out.stride(1), tq,
                HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                PRECISION=_precision(q.dtype), num_warps=warps,
            )
        ctx.save_for_backward(q, k, v, out, lse, table)
        ctx.host = host
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, d_out):  # type: ignore[override]
        q, k, v, out, lse, table = ctx.saved_tensors
        host, scale = ctx.host, ctx.scale
        d_out = d_out.contiguous()
        tq, heads, head_dim = q.shape
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        n_virtual = host.shape[0]
        max_q = int(host[:, 1].max()) if n_virtual else 0
        if max_q == 0 or k.shape[0] == 0:
            return dq, dk, dv, None, None
        block_m, block_n, warps = _blocks(head_dim, q.device)
        precision = _precision(q.dtype)

        delta = torch.empty(heads, tq, device=q.device, dtype=torch.float32)
        _delta_kernel[(triton.cdiv(tq, block_m), heads)](
            out, d_out, delta, out.stride(0), out.stride(1), d_out.stride(0), d_out.stride(1), tq,
            HEAD_DIM=head_dim, BLOCK_M=block_m, num_warps=warps,
        )
        _dq_kernel[(triton.cdiv(max_q, block_m), heads, n_virtual)](
            q, k, v, d_out, dq, lse, delta, table, scale * LOG2_E, scale,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            d_out.stride(0), d_out.stride(1), dq.stride(0), dq.stride(1), tq,
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, PRECISION=precision, num_warps=warps,
        )
        intervals, readers = transposed_table(host)
        if intervals.shape[0]:
            max_k = int(intervals[:, 1].max())
            if intervals.shape[0] > MAX_GRID_Z:
                n_int = intervals.shape[0]
                raise ValueError(f"at most {MAX_GRID_Z} key intervals per call, got {n_int}; split the batch")
            intervals_dev = to_device_int32(intervals, q.device)
            readers_dev = to_device_int32(readers, q.device)
            _dkdv_kernel[(triton.cdiv(max_k, block_n), heads, intervals.shape[0])](
                q, k, v, d_out, dk, dv, lse, delta, intervals_dev, readers_dev, scale * LOG2_E, scale,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                d_out.stride(0), d_out.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), tq,
                HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, PRECISION=precision, num_warps=warps,
            )
        return dq, dk, dv, None, None


def _precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: exact IEEE for fp32 (it would default to TF32 on GPU)."""
    return "ieee" if dtype == torch.float32 else "tf32"


if TRITON_AVAILABLE:

    @triton.jit
    def _fwd_range(acc, l_i, m_i, q, K, V, k_start, k_len, stride_kt, stride_vt, head_off_k, head_off_v,
                   qk_scale, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
        """Online-softmax (base 2) accumulation of one key range into (acc, l_i, m_i)."""
        offs_d = tl.arange(0, HEAD_DIM)
        for start_n in range(0, k_len, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = offs_n < k_len
            keys = (k_start + offs_n).to(tl.int64)
            kt = tl.load(K + head_off_k + keys[None, :] * stride_kt + offs_d[:, None],
                         mask=n_mask[None, :], other=0.0)  # [HEAD_DIM, BLOCK_N]
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
            s = tl.where(n_mask[None, :], s, float("-inf"))
            # the block holds at least one valid key, so m_new is finite
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vb = tl.load(V + head_off_v + keys[:, None] * stride_vt + offs_d[None, :],
                         mask=n_mask[:, None], other=0.0)  # [BLOCK_N, HEAD_DIM]
            acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PRECISION)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _fwd_kernel(Q, K, V, OUT, LSE, TABLE, qk_scale,
                    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                    n_q_rows, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    PRECISION: tl.constexpr):
        """Grid (q blocks, heads, virtual sequences): one query tile against both key ranges.
        Stores OUT and the base-2 log-sum-exp LSE[head, row] (fp32) for the backward."""
        pid_m = tl.program_id(0)
        head = tl.program_id(1)
        row = TABLE + tl.program_id(2) * 6
        q_start = tl.load(row)
        q_len = tl.load(row + 1)
        if pid_m * BLOCK_M < q_len:
            k0_start = tl.load(row + 2)
            k0_len = tl.load(row + 3)
            k1_start = tl.load(row + 4)
            k1_len = tl.load(row + 5)
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_d = tl.arange(0, HEAD_DIM)
            m_mask = offs_m < q_len
            rows = (q_start + offs_m).to(tl.int64)
            q = tl.load(Q + head * stride_qh + rows[:, None] * stride_qt + offs_d[None, :],
                        mask=m_mask[:, None], other=0.0)
            acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            acc, l_i, m_i = _fwd_range(acc, l_i, m_i, q, K, V, k0_start, k0_len, stride_kt, stride_vt,
                                       head * stride_kh, head * stride_vh, qk_scale, HEAD_DIM, BLOCK_N, PRECISION)
            acc, l_i, m_i = _fwd_range(acc, l_i, m_i, q, K, V, k1_start, k1_len, stride_kt, stride_vt,
                                       head * stride_kh, head * stride_vh, qk_scale, HEAD_DIM, BLOCK_N, PRECISION)
            has_keys = l_i > 0.0  # a sequence without keys gives zeros
            out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
            lse = tl.where(has_keys, m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0)), 0.0)
            tl.store(OUT + head * stride_oh + rows[:, None] * stride_ot + offs_d[None, :],
                     out.to(OUT.dtype.element_ty), mask=m_mask[:, None])
            tl.store(LSE + head * n_q_rows + rows, lse, mask=m_mask)

    @triton.jit
    def _delta_kernel(OUT, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, n_q_rows,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        """DELTA[head, row] = sum_d OUT * dO (fp32), the softmax-backward row term."""
        head = tl.program_id(1)
        offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_d = tl.arange(0, HEAD_DIM)
        m_mask = offs_m < n_q_rows
        o = tl.load(OUT + head * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                    mask=m_mask[:, None], other=0.0)
        do = tl.load(DO + head * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                     mask=m_mask[:, None], other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + head * n_q_rows + offs_m, delta, mask=m_mask)

    @triton.jit
    def _dq_range(dq, q, do, lse, delta, K, V, k_start, k_len, stride_kt, stride_vt, head_off_k, head_off_v,
                  qk_scale, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
        """Accumulate dS @ K over one key range (dq still lacks the softmax scale)."""
        offs_d = tl.arange(0, HEAD_DIM)
        for start_n in range(0, k_len, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = offs_n < k_len
            keys = (k_start + offs_n).to(tl.int64)
            kt = tl.load(K + head_off_k + keys[None, :] * stride_kt + offs_d[:, None],
                         mask=n_mask[None, :], other=0.0)  # [HEAD_DIM, BLOCK_N]
            vt = tl.load(V + head_off_v + keys[None, :] * stride_vt + offs_d[:, None],
                         mask=n_mask[None, :], other=0.0)
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
            p = tl.where(n_mask[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, vt, input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
        return dq

    @triton.jit
    def _dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, TABLE, qk_scale, sm_scale,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                   stride_dqt, stride_dqh, n_q_rows, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
        """Grid as the forward: dQ of one query tile from both key ranges."""
        pid_m = tl.program_id(0)
        head = tl.program_id(1)
        row = TABLE + tl.program_id(2) * 6
        q_start = tl.load(row)
        q_len = tl.load(row + 1)
        if pid_m * BLOCK_M < q_len:
            k0_start = tl.load(row + 2)
            k0_len = tl.load(row + 3)
            k1_start = tl.load(row + 4)
            k1_len = tl.load(row + 5)
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_d = tl.arange(0, HEAD_DIM)
            m_mask = offs_m < q_len
            rows = (q_start + offs_m).to(tl.int64)
            q = tl.load(Q + head * stride_qh + rows[:, None] * stride_qt + offs_d[None, :],
                        mask=m_mask[:, None], other=0.0)
            do = tl.load(DO + head * stride_doh + rows[:, None] * stride_dot + offs_d[None, :],
                         mask=m_mask[:, None], other=0.0)
            lse = tl.load(LSE + head * n_q_rows + rows, mask=m_mask, other=0.0)
            delta = tl.load(DELTA + head * n_q_rows + rows, mask=m_mask, other=0.0)
            dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
            dq = _dq_range(dq, q, do, lse, delta, K, V, k0_start, k0_len, stride_kt, stride_vt,
                           head * stride_kh, head * stride_vh, qk_scale, HEAD_DIM, BLOCK_N, PRECISION)
            dq = _dq_range(dq, q, do, lse, delta, K, V, k1_start, k1_len, stride_kt, stride_vt,
                           head * stride_kh, head * stride_vh, qk_scale, HEAD_DIM, BLOCK_N, PRECISION)
            tl.store(DQ + head * stride_dqh + rows[:, None] * stride_dqt + offs_d[None, :],
                     (dq * sm_scale).to(DQ.dtype.element_ty), mask=m_mask[:, None])

    @triton.jit
    def _dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, INTERVALS, READERS, qk_scale, sm_scale,
                     stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                     stride_dkt, stride_dkh, stride_dvt, stride_dvh, n_q_rows,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     PRECISION: tl.constexpr):
        """Grid (key blocks, heads, key intervals) over the transposed table: one key tile
        accumulates dK and dV from every query range that reads its interval. Intervals are
        disjoint, so each dK/dV row is written by exactly one program (no atomics)."""
        pid_n = tl.program_id(0)
        head = tl.program_id(1)
        interval = INTERVALS + tl.program_id(2) * 4
        k_start = tl.load(interval)
        k_len = tl.load(interval + 1)
        if pid_n * BLOCK_N < k_len:
            first = tl.load(interval + 2)
            n_readers = tl.load(interval + 3)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            offs_d = tl.arange(0, HEAD_DIM)
            n_mask = offs_n < k_len
            keys = (k_start + offs_n).to(tl.int64)
            kb = tl.load(K + head * stride_kh + keys[:, None] * stride_kt + offs_d[None, :],
                         mask=n_mask[:, None], other=0.0)
            vb = tl.load(V + head * stride_vh + keys[:, None] * stride_vt + offs_d[None, :],
                         mask=n_mask[:, None], other=0.0)
            dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
            dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
            for r in range(0, n_readers):
                q_start = tl.load(READERS + (first + r) * 2)
                q_len = tl.load(READERS + (first + r) * 2 + 1)
                for start_m in range(0, q_len, BLOCK_M):
                    offs_m = start_m + tl.arange(0, BLOCK_M)
                    m_mask = offs_m < q_len
                    rows = (q_start + offs_m).to(tl.int64)
                    qt = tl.load(Q + head * stride_qh + rows[None, :] * stride_qt + offs_d[:, None],
                                 mask=m_mask[None, :], other=0.0)  # [HEAD_DIM, BLOCK_M]
                    do = tl.load(DO + head * stride_doh + rows[:, None] * stride_dot + offs_d[None, :],
                                 mask=m_mask[:, None], other=0.0)  # [BLOCK_M, HEAD_DIM]
                    lse = tl.load(LSE + head * n_q_rows + rows, mask=m_mask, other=0.0)
                    delta = tl.load(DELTA + head * n_q_rows + rows, mask=m_mask, other=0.0)
                    st = tl.dot(kb, qt, input_precision=PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M]
                    pt = tl.where(m_mask[None, :], tl.math.exp2(st - lse[None, :]), 0.0)
                    dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
                    dpt = tl.dot(vb, tl.trans(do), input_precision=PRECISION)
                    dst = pt * (dpt - delta[None, :])
                    dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=PRECISION)
            tl.store(DK + head * stride_dkh + keys[:, None] * stride_dkt + offs_d[None, :],
                     (dk * sm_scale).to(DK.dtype.element_ty), mask=n_mask[:, None])
            tl.store(DV + head * stride_dvh + keys[:, None] * stride_dvt + offs_d[None, :],
                     dv.to(DV.dtype.element_ty), mask=n_mask[:, None])
