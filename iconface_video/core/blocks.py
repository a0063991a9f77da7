"""Transformer blocks of the IConFace core (core-design §5.6).

Tokens are split into two compact streams (see ``packing``): *scene* rows (the tokens being
generated) and *cond* rows (degraded tokens, then reference tokens). Each block is written as
``*_pre`` (modulate, project to q/k/v) and ``*_post`` (output projection, gated residual, MLP) per
stream, so the model can run them jointly (one ranged-attention call over the flat layout: training,
uncached sampling, ``full`` topology) or split (cond once, cached; scene at every sampling step).

- ``DualBlock``: separate weights for the scene and the cond stream, one joint attention.
- ``SingleBlock``: one weight set, parallel attention + SwiGLU MLP (ViT-22B / FLUX style).
- ``SegmentLoRALinear``: cond-row linears get a per-segment low-rank delta (degraded vs
  reference), zero-initialised (§5.6 c).
- ``StructResidual``: scene token i += U·SiLU(V·LN(deg token i)) (§5.6 d).
- ``DegradedCrossAttention``: scene queries → two-route degraded memory (§5.6 e).

Modulation tables are shared by all blocks of a kind (FLUX.2): the model computes them once and
passes ``Mod`` rows in; a per-token row index picks (crop for scene rows, segment for cond rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iconface_video.kernels.adaln_modulate import adaln_modulate
from iconface_video.kernels.gate_residual import gate_residual, gate_residual_adaln
from iconface_video.kernels.ranged_attention import ranged_attention


@dataclass(frozen=True, eq=False)
class Mod:
    """Modulation rows for one stream: ``table`` float[R, n_chunks, D]; ``row`` int64[T]."""

    table: torch.Tensor
    row: torch.Tensor

    def chunk(self, i: int) -> torch.Tensor:
        return self.table[:, i]


def rope_angles(pos: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """complex64[T, head_dim/2] unit rotations for 3-axis positions float[T, 3] = (seg, h, w).

    The head dim is split 1/4 (seg), 3/8 (h), 3/8 (w), each axis with its own frequency ladder.
    """
    dims = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    angles = []
    for axis, d in enumerate(dims):
        freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=pos.device) / d)
        angles.append(pos[:, axis : axis + 1].float() * freqs)
    ang = torch.cat(angles, dim=1)
    return torch.polar(torch.ones_like(ang), ang)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x float[T, H, Dh] by complex rotations [T, Dh/2] (in float32)."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(xc * rope[:, None, :]).flatten(-2).to(x.dtype)


class QKNorm(nn.RMSNorm):
    """Per-head RMSNorm of queries/keys, computed in float32 whatever the activation dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)


class SegmentLoRALinear(nn.Module):
    """Bias-free linear; on cond rows a per-segment delta ``B_s A_s`` (s = degraded, reference).

    ``forward(x, n_deg)``: rows ``[:n_deg]`` are degraded tokens, the rest reference tokens;
    ``n_deg=None`` means scene rows (no delta). ``B_s`` starts at zero, so a fresh LoRA is a no-op.
    """

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.base = nn.Linear(d_in, d_out, bias=False)
        self.rank = rank
        if rank:
            self.lora_a = nn.Parameter(torch.randn(2, rank, d_in) / math.sqrt(d_in))
            self.lora_b = nn.Parameter(torch.zeros(2, d_out, rank))

    def forward(self, x: torch.Tensor, n_deg: int | None = None) -> torch.Tensor:
        y = self.base(x)
        if not self.rank or n_deg is None:
            return y
        parts = (x[:n_deg], x[n_deg:])
        delta = torch.cat([(p @ self.lora_a[s].T.to(p.dtype)) @ self.lora_b[s].T.to(p.dtype) for s, p in enumerate(parts)])
        return y + delta


class Attention(nn.Module):
    """Ranged attention as a module, so tools (scripts/core_stats.py) can hook every call.

    Autocast is switched off around the kernel: q, k, v arrive in one dtype (the kernels and their
    twins accumulate in float32 themselves), and cached keys may come from another autocast region.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):
            return ranged_attention(q, k.to(q.dtype), v.to(q.dtype), table)


Tensor = torch.Tensor
QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # each float[T, H, Dh]


class _Stream(nn.Module):
    """One stream's weights of a dual block: QKV, QK-RMSNorm, output, SwiGLU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, lora_r: int) -> None:
        super().__init__()
        self.heads = heads
        hidden = mlp_ratio * dim
        self.qkv = SegmentLoRALinear(dim, 3 * dim, lora_r)
        self.q_norm = QKNorm(dim // heads, eps=1e-6)
        self.k_norm = QKNorm(dim // heads, eps=1e-6)
        self.out = SegmentLoRALinear(dim, dim, lora_r)
        self.mlp_in = SegmentLoRALinear(dim, 2 * hidden, lora_r)
        self.mlp_out = SegmentLoRALinear(hidden, dim, lora_r)

    def pre(self, h: Tensor, mod: Mod, rope: Tensor, n_deg: int | None) -> QKV:
        x = adaln_modulate(h, mod.chunk(0), mod.chunk(1), mod.row)
        q, k, v = self.qkv(x, n_deg).unflatten(1, (3, self.heads, -1)).unbind(1)
        return apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope), v

    def post(self, h: torch.Tensor, o: torch.Tensor, mod: Mod, n_deg: int | None) -> torch.Tensor:
        # Attention residual and the MLP's LN + modulation in one pass over h (one kernel on CUDA).
        h, x = gate_residual_adaln(h, self.out(o.flatten(1), n_deg), mod.chunk(2), mod.chunk(3), mod.chunk(4), mod.row)
        gate, up = self.mlp_in(x, n_deg).chunk(2, dim=1)
        return gate_residual(h, self.mlp_out(F.silu(gate) * up, n_deg), mod.chunk(5), mod.row)


class DualBlock(nn.Module):
    """Separate scene / cond weights, one joint attention. Mod tables have 6 chunks:
    (shift, scale, gate) for attention, then for the MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, lora_r: int) -> None:
        super().__init__()
        self.scene = _Stream(dim, heads, mlp_ratio, 0)
        self.cond = _Stream(dim, heads, mlp_ratio, lora_r)
        self.attn = Attention()

    # ``*_pre`` returns (q, k, v) and what ``*_post`` needs besides the attention output (nothing here).
    def scene_pre(self, h: Tensor, mod: Mod, rope: Tensor) -> tuple[QKV, None]:
        return self.scene.pre(h, mod, rope, None), None

    def cond_pre(self, h: Tensor, mod: Mod, rope: Tensor, n_deg: int) -> tuple[QKV, None]:
        return self.cond.pre(h, mod, rope, n_deg), None

    def scene_post(self, h: Tensor, o: Tensor, aux: None, mod: Mod) -> Tensor:
        return self.scene.post(h, o, mod, None)

    def cond_post(self, h: Tensor, o: Tensor, aux: None, mod: Mod, n_deg: int) -> Tensor:
        return self.cond.post(h, o, mod, n_deg)


class SingleBlock(nn.Module):
    """Shared weights for every row, parallel attention + SwiGLU; cond rows add segment LoRA.
    Mod tables have 3 chunks: (shift, scale, gate)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, lora_r: int) -> None:
        super().__init__()
        self.heads = heads
        self.hidden = mlp_ratio * dim
        self.lin_in = SegmentLoRALinear(dim, 3 * dim + 2 * self.hidden, lora_r)
        self.lin_out = SegmentLoRALinear(dim + self.hidden, dim, lora_r)
        self.q_norm = QKNorm(dim // heads, eps=1e-6)
        self.k_norm = QKNorm(dim // heads, eps=1e-6)
        self.attn = Attention()

    def _pre(self, h: Tensor, mod: Mod, rope: Tensor, n_deg: int | None) -> tuple[QKV, Tensor]:
        x = adaln_modulate(h, mod.chunk(0), mod.chunk(1), mod.row)
        qkv, mlp = self.lin_in(x, n_deg).split([3 * h.shape[1], 2 * self.hidden], dim=1)
        q, k, v = qkv.unflatten(1, (3, self.heads, -1)).unbind(1)
        gate, up = mlp.chunk(2, dim=1)
        return (apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope), v), F.silu(gate) * up

    def _post(self, h: Tensor, o: Tensor, aux: Tensor, mod: Mod, n_deg: int | None) -> Tensor:
        return gate_residual(h, self.lin_out(torch.cat([o.flatten(1), aux], dim=1), n_deg), mod.chunk(2), mod.row)

    # ``aux`` is the SwiGLU activation computed in ``*_pre`` (the MLP runs parallel to attention).
    def scene_pre(self, h: Tensor, mod: Mod, rope: Tensor) -> tuple[QKV, Tensor]:
        return self._pre(h, mod, rope, None)

    def cond_pre(self, h: Tensor, mod: Mod, rope: Tensor, n_deg: int) -> tuple[QKV, Tensor]:
        return self._pre(h, mod, rope, n_deg)

    def scene_post(self, h: Tensor, o: Tensor, aux: Tensor, mod: Mod) -> Tensor:
        return self._post(h, o, aux, mod, None)

    def cond_post(self, h: Tensor, o: Tensor, aux: Tensor, mod: Mod, n_deg: int) -> Tensor:
        return self._post(h, o, aux, mod, n_deg)


class StructResidual(nn.Module):
    """Aligned low-rank structure residual: delta[i] = U·SiLU(V·LN(h_deg[i])), U zero-initialised.

    Scene token i and degraded token i cover the same pixels (same compact index), so the delta is
    added row for row. It depends on the degraded stream only, so it is cached across steps.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, h_deg: torch.Tensor) -> torch.Tensor:
        return self.up(F.silu(self.down(self.norm(h_deg))))


class DegradedCrossAttention(nn.Module):
    """Scene queries → two-route degraded memory, one softmax over both routes (§5.6 e).

    Route A (static) = the degraded crop's input embedding; route B (contextual) = the degraded
    stream's hidden state after this block. ``routes`` ∈ {"AB", "A", "B"}. References never enter
    the memory. ``memory`` is cond-only (cacheable); ``forward`` is the per-step scene part. Output
    gate tanh(g), g = 0 at init, so training starts from the plain concat model.
    """

    def __init__(self, dim: int, heads: int, routes: str) -> None:
        super().__init__()
        self.heads = heads
        self.routes = routes
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=False)
        self.q_norm = QKNorm(dim // heads, eps=1e-6)
        self.k_norm = QKNorm(dim // heads, eps=1e-6)
        self.kv = nn.ModuleDict({r: nn.Linear(dim, 2 * dim, bias=False) for r in routes})
        self.route_emb = nn.ParameterDict({r: nn.Parameter(torch.randn(dim) * 0.02) for r in routes})
        self.out = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))
        self.attn = Attention()

    def memory(self, m_a: Tensor, m_b: Tensor, rope: Tensor) -> tuple[Tensor, Tensor]:
        """m_a, m_b float[n_deg, D] → keys, values float[n_routes · n_deg, H, Dh] (routes in order).

        ``rope`` is the scene rows' rotation: degraded token i sits on scene token i's (h, w) and
        segment, so the only positional signal in cross-attention is spatial locality.
        """
        ks, vs = [], []
        for r, m in (("A", m_a), ("B", m_b)):
            if r in self.routes:
                k, v = self.kv[r](self.norm(m)).chunk(2, dim=1)
                k = (k + self.route_emb[r]).unflatten(1, (self.heads, -1))
                ks.append(apply_rope(self.k_norm(k), rope))
                vs.append(v.unflatten(1, (self.heads, -1)))
        return torch.cat(ks), torch.cat(vs)

    def forward(self, h_s: Tensor, mem_k: Tensor, mem_v: Tensor, table: Tensor, rope: Tensor) -> Tensor:
        """h_s float[Ts, D] scene rows; memory from ``memory``; table int64[B, 6] (CPU) → new h_s."""
        q = apply_rope(self.q_norm(self.q(self.norm(h_s)).unflatten(1, (self.heads, -1))), rope)
        o = self.attn(q, mem_k, mem_v, table)
        return h_s + torch.tanh(self.gate) * self.out(o.flatten(1))
