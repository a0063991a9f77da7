"""IConFaceCore: the restoration network (core-design §5.3–5.7).

Entry points:

- ``model.conditions(lq, track, refs, ref_track, token_mask, anchor_weight, id_feat)`` → ``Conditions``:
  everything that does not depend on the noisy input or t (layout, degraded/reference embeddings,
  the per-track identity anchor z_id).
- ``model(x_t, t, cond)`` → x̂0: the joint forward (training, uncached sampling, ``full`` topology).
- ``model.encode_conditions(cond)`` → ``ConditionCache``: the cond stream run once through every
  block (``one_way`` only): its keys/values, structure residuals and cross-attention memory.
- ``model.scene_forward(x_t, t, cache)`` → x̂0: one sampling step recomputing scene rows only.

Pixels are in [-1, 1]: lq, x_t, x̂0 float[B, 3, R, R] (R: any side the config allows; one R per
batch); refs float[N, 3, S, S] (any S, resized to ``ref_size``).
Flow convention: x_t = (1 − t)·x0 + t·ε, t = 1 is noise; the network predicts x0.

Pixels ↔ tokens (``tokenizer``, core-v2.md): one convolutional encoder turns the degraded crop and
each reference into token grids (a segment embedding tells them apart) and keeps the degraded
crop's feature map at every scale; a cheap strided stem turns the noisy scene into tokens; the
decoder turns the scene tokens back into pixels with the degraded skips added at every scale and
a zero-initialised head predicting x̂0 − lq.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iconface_video.kernels.adaln_modulate import adaln_modulate

from .batch import TrainBatch
from .blocks import (
    DegradedCrossAttention,
    DualBlock,
    Mod,
    SingleBlock,
    StructResidual,
    rope_angles,
)
from .config import CoreConfig
from .identity import IdentityAnchor, ProxyIdEncoder, WeightedIdentity
from .packing import Layout, build_layout
from .tokenizer import PixelDecoder, PixelEncoder, SceneStem, resize_square


@dataclass(frozen=True, eq=False)
class Conditions:
    """Time-independent inputs of one batch. Ts = B·ns scene rows, Tc cond rows (``packing``)."""

    layout: Layout
    lq: torch.Tensor  # float[B, 3, R, R] the degraded crops in [-1, 1] (the residual's base)
    deg_tokens: torch.Tensor  # float[B, ns, D] degraded tokens from the encoder (before the segment embedding)
    skips: tuple[torch.Tensor, ...]  # degraded feature maps per scale, finest first (decoder input)
    h_cond0: torch.Tensor  # float[Tc, D] initial cond embeddings (rows [:n_deg] = route-A memory)
    z_id: torch.Tensor  # float[B, D] identity anchor per crop (0 where its track has no reference)
    identity: WeightedIdentity  # per-track aggregate (diagnostics)
    rope_scene: torch.Tensor  # complex64[Ts, Dh/2] RoPE rotations
    rope_cond: torch.Tensor  # complex64[Tc, Dh/2]


@dataclass(frozen=True, eq=False)
class BlockCache:
    """One block's cached cond-side results (all independent of t and of the scene rows)."""

    k: torch.Tensor  # float[Tc, H, Dh]
    v: torch.Tensor  # float[Tc, H, Dh]
    deg_hidden: torch.Tensor  # float[n_deg, D] degraded stream after this block (inspection)
    struct: torch.Tensor | None  # float[n_deg, D] structure residual for the scene rows
    mem: tuple[torch.Tensor, torch.Tensor] | None  # cross-attention memory keys, values


@dataclass(frozen=True, eq=False)
class ConditionCache:
    cond: Conditions
    blocks: tuple[BlockCache, ...]


def timestep_embedding(t: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """float[B] t ∈ [0, 1] → float[B, channels] sinusoids of 1000·t (FLUX convention)."""
    half = channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs
    return torch.cat([args.cos(), args.sin()], dim=1)


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class IConFaceCore(nn.Module):
    def __init__(self, config: CoreConfig) -> None:
        super().__init__()
        c = self.config = config
        d = c.dim
        self.encoder = PixelEncoder(c.enc_channels, c.enc_blocks, d)  # degraded crops and references
        self.scene_stem = SceneStem(c.stride, d)
        self.scene_in = nn.Linear(2 * d if c.hybrid_concat else d, d)
        self.seg_emb = nn.Parameter(torch.randn(3, d) * 0.02)  # scene, degraded, reference
        self.time_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.cond_emb = nn.Parameter(torch.randn(2, d) * 0.02)  # c_deg, c_ref: time-independent
        # adaLN-zero: every gate starts at 0, so each block starts as the identity.
        self.mod_dual_scene = _zero_linear(d, 6 * d)
        self.mod_dual_cond = _zero_linear(d, 6 * d)
        self.mod_single = _zero_linear(d, 3 * d)
        self.mod_head = _zero_linear(d, 2 * d)
        self.anchor = IdentityAnchor(c.id_dim, d, c.id_gamma, c.id_norm_min)
        self.proxy_encoder = ProxyIdEncoder(c.id_dim) if c.id_encoder == "proxy" else None
        self.blocks = nn.ModuleList(
            [DualBlock(d, c.heads, c.mlp_ratio, c.lora_r) for _ in range(c.n_dual)]
            + [SingleBlock(d, c.heads, c.mlp_ratio, c.lora_r) for _ in range(c.n_single)]
        )
        self.struct = nn.ModuleDict(
            {str(i): StructResidual(d, c.struct_r) for i in range(c.n_blocks)} if c.struct_r else {}
        )
        self.xattn = nn.ModuleDict(
            {str(i): DegradedCrossAttention(d, c.heads, c.xattn_routes) for i in range(c.n_blocks) if c.has_xattn(i)}
        )
        self.head = nn.Linear(d, d)
        self.decoder = PixelDecoder(c.enc_channels, c.dec_blocks, d)

    # ----------------------------------------------------------------- conditions (t-independent)
    def conditions(
        self,
        lq: torch.Tensor,
        track: torch.Tensor,
        refs: torch.Tensor | None = None,
        ref_track: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        anchor_weight: torch.Tensor | None = None,
        id_feat: torch.Tensor | None = None,
    ) -> Conditions:
        """Embed the degraded crops and references and build the per-track identity anchor.

        lq: float[B, 3, R, R] in [-1, 1] (R allowed by ``config.check_side``); track: int64[B]; refs: float[N, 3, S, S] in [-1, 1];
        ref_track: int64[N]; token_mask: bool[N] references entering the sequence (default all);
        anchor_weight: float[N] reliability in the anchor (0 = left out; default 1); id_feat:
        float[N, id_dim] raw identity features (computed by the proxy encoder when None).
        """
        c = self.config
        dev = lq.device
        c.check_side(int(lq.shape[-1]))
        n_refs = 0 if refs is None else int(refs.shape[0])
        if n_refs == 0:
            refs = lq.new_zeros(0, 3, c.ref_size, c.ref_size)
            ref_track = track.new_zeros(0)
        token_mask = torch.ones(n_refs, dtype=torch.bool, device=dev) if token_mask is None else token_mask.bool()
        anchor_weight = torch.ones(n_refs, device=dev) if anchor_weight is None else anchor_weight.float()

        tok = torch.nonzero(token_mask).flatten()
        grid = int(lq.shape[-1]) // c.stride
        layout = build_layout(track, ref_track[tok], grid, c.ref_grid, c.topology, device=dev, unit_grid=c.grid)
        deg_tokens, skips = self.encoder(lq)
        ref_pix = resize_square(refs[tok][layout.ref_source], c.ref_size)
        h_deg = deg_tokens.flatten(0, 1) + self.seg_emb[1]
        if ref_pix.shape[0]:
            h_ref = self.encoder(ref_pix)[0].flatten(0, 1) + self.seg_emb[2]
        else:
            h_ref = h_deg.new_zeros(0, c.dim)

        # Identity anchor, once per track; references of tracks absent from the batch count nowhere.
        pos = torch.searchsorted(layout.tracks, ref_track).clamp_max(max(len(layout.tracks) - 1, 0))
        in_batch = layout.tracks[pos] == ref_track if n_refs else torch.zeros(0, dtype=torch.bool, device=dev)
        weight = torch.where(in_batch, anchor_weight, 0.0)
        if id_feat is None:
            id_feat = self._encode_identity(refs, weight)
        z_track, identity = self.anchor(id_feat, weight, pos, len(layout.tracks))

        return Conditions(
            layout=layout,
            lq=lq,
            deg_tokens=deg_tokens,
            skips=tuple(skips),
            h_cond0=torch.cat([h_deg, h_ref]),
            z_id=z_track[layout.crop_track],
            identity=identity,
            rope_scene=rope_angles(layout.scene_pos, c.head_dim, c.rope_theta),
            rope_cond=rope_angles(layout.cond_pos, c.head_dim, c.rope_theta),
        )

    def _encode_identity(self, refs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """float[N, id_dim] proxy features of the references that enter the anchor (zeros elsewhere).

        References are first resized to ``ref_size`` so the features do not depend on the size
        the caller happened to pass.
        """
        feat = refs.new_zeros(refs.shape[0], self.config.id_dim)
        used = torch.nonzero(weight > 0).flatten()
        if used.numel() == 0:
            return feat
        if self.proxy_encoder is None:
            raise ValueError(f"id_feat is required: the {self.config.id_encoder!r} identity encoder is not part of the model")
        return feat.index_copy(0, used, self.proxy_encoder((resize_square(refs[used], self.config.ref_size) + 1) / 2).to(feat.dtype))

    # ----------------------------------------------------------------------------- modulation
    def _scene_mods(self, t: torch.Tensor, z_id: torch.Tensor, layout: Layout) -> tuple[Mod, Mod, Mod]:
        """(dual, single, head) modulation for scene rows: one row per crop from c = temb + z_id."""
        c_scene = F.silu(self.time_mlp(timestep_embedding(t).to(z_id.dtype)) + z_id)
        b, d = c_scene.shape
        row = layout.scene_row
        return (Mod(self.mod_dual_scene(c_scene).view(b, 6, d), row),
                Mod(self.mod_single(c_scene).view(b, 3, d), row),
                Mod(self.mod_head(c_scene).view(b, 2, d), row))

    def _cond_mods(self, layout: Layout) -> tuple[Mod, Mod]:
        """(dual, single) modulation for cond rows: row 0 = degraded, 1 = reference (no t, no z_id)."""
        c = F.silu(self.cond_emb)
        d = c.shape[1]
        return (Mod(self.mod_dual_cond(c).view(2, 6, d), layout.cond_row),
                Mod(self.mod_single(c).view(2, 3, d), layout.cond_row))

    # ----------------------------------------------------------------------- structure pathway
    def _cond_side(self, i: int, h_deg: torch.Tensor, cond: Conditions
                   ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """Block i's structure residual float[n_deg, D] and cross-attention memory (keys, values)
        from the degraded stream after the block; None where the block has no such module."""
        key = str(i)
        struct = self.struct[key](h_deg) if key in self.struct else None
        mem = self.xattn[key].memory(cond.h_cond0[: h_deg.shape[0]], h_deg, cond.rope_scene) if key in self.xattn else None
        return struct, mem

    def _scene_side(self, i: int, h_s: torch.Tensor, struct: torch.Tensor | None,
                    mem: tuple[torch.Tensor, torch.Tensor] | None, cond: Conditions, xtable: torch.Tensor) -> torch.Tensor:
        """Add block i's structure residual and degraded cross-attention to the scene rows."""
        if struct is not None:
            h_s = h_s + struct
        if mem is not None:
            h_s = self.xattn[str(i)](h_s, mem[0], mem[1], xtable, cond.rope_scene)
        return h_s

    # ---------------------------------------------------------------------------------- passes
    def _scene_embed(self, x_t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        tokens = self.scene_stem(x_t)
        if self.config.hybrid_concat:
            tokens = torch.cat([tokens, cond.deg_tokens.to(tokens.dtype)], dim=2)
        return (self.scene_in(tokens) + self.seg_emb[0]).flatten(0, 1)

    def _head(self, h_s: torch.Tensor, mod: Mod, cond: Conditions) -> torch.Tensor:
        b = cond.layout.n_crops
        tokens = self.head(adaln_modulate(h_s, mod.chunk(0), mod.chunk(1), mod.row)).view(b, -1, self.config.dim)
        out = self.decoder(tokens, list(cond.skips))
        return out + cond.lq.to(out.dtype) if self.config.x0_residual else out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Joint pass over scene and cond rows: x_t float[B, 3, R, R], t float[B] → x̂0 [B, 3, R, R]."""
        lay = cond.layout
        n_scene, n_deg = lay.n_scene, lay.n_deg
        unperm = torch.empty_like(lay.perm)
        unperm[lay.perm] = torch.arange(len(lay.perm), device=lay.perm.device)
        xtable = lay.xattn_table(len(self.config.xattn_routes))
        dual_s, single_s, head_s = self._scene_mods(t, cond.z_id, lay)
        dual_c, single_c = self._cond_mods(lay)
        h_s, h_c = self._scene_embed(x_t, cond), cond.h_cond0
        for i, blk in enumerate(self.blocks):
            ms, mc = (dual_s, dual_c) if i < self.config.n_dual else (single_s, single_c)
            (qs, ks, vs), aux_s = blk.scene_pre(h_s, ms, cond.rope_scene)
            (qc, kc, vc), aux_c = blk.cond_pre(h_c, mc, cond.rope_cond, n_deg)
            q, k, v = (torch.cat(pair)[lay.perm] for pair in ((qs, qc), (ks, kc), (vs, vc)))
            o = blk.attn(q, k, v, lay.table_joint)[unperm]
            h_c = blk.cond_post(h_c, o[n_scene:], aux_c, mc, n_deg)
            h_s = blk.scene_post(h_s, o[:n_scene], aux_s, ms)
            struct, mem = self._cond_side(i, h_c[:n_deg], cond)
            h_s = self._scene_side(i, h_s, struct, mem, cond, xtable)
        return self._head(h_s, head_s, cond)

    def encode_conditions(self, cond: Conditions) -> ConditionCache:
        """Run the cond stream once through every block (``one_way`` topology only)."""
        if self.config.topology != "one_way":
            raise ValueError("condition caching needs topology 'one_way' (conditions attend to the scene in 'full')")
        lay = cond.layout
        n_deg = lay.n_deg
        dual_c, single_c = self._cond_mods(lay)
        h_c = cond.h_cond0
        blocks = []
        for i, blk in enumerate(self.blocks):
            mc = dual_c if i < self.config.n_dual else single_c
            (qc, kc, vc), aux_c = blk.cond_pre(h_c, mc, cond.rope_cond, n_deg)
            h_c = blk.cond_post(h_c, blk.attn(qc, kc, vc, lay.table_cond), aux_c, mc, n_deg)
            struct, mem = self._cond_side(i, h_c[:n_deg], cond)
            blocks.append(BlockCache(k=kc, v=vc, deg_hidden=h_c[:n_deg], struct=struct, mem=mem))
        return ConditionCache(cond=cond, blocks=tuple(blocks))

    def scene_forward(self, x_t: torch.Tensor, t: torch.Tensor, cache: ConditionCache) -> torch.Tensor:
        """One step with cached conditions: only scene rows are computed. Same result as ``forward``."""
        cond = cache.cond
        lay = cond.layout
        xtable = lay.xattn_table(len(self.config.xattn_routes))
        dual_s, single_s, head_s = self._scene_mods(t, cond.z_id, lay)
        h_s = self._scene_embed(x_t, cond)
        for i, (blk, bc) in enumerate(zip(self.blocks, cache.blocks)):
            ms = dual_s if i < self.config.n_dual else single_s
            (qs, ks, vs), aux_s = blk.scene_pre(h_s, ms, cond.rope_scene)
            k = torch.cat([ks, bc.k.to(ks.dtype)])[lay.perm]
            v = torch.cat([vs, bc.v.to(vs.dtype)])[lay.perm]
            h_s = blk.scene_post(h_s, blk.attn(qs, k, v, lay.table_scene), aux_s, ms)
            h_s = self._scene_side(i, h_s, bc.struct, bc.mem, cond, xtable)
        return self._head(h_s, head_s, cond)

    # ------------------------------------------------------------------------------- training
    def batch_conditions(self, batch: TrainBatch) -> Conditions:
        return self.conditions(batch.lq, batch.track, batch.refs, batch.ref_track,
                               batch.token_mask(), batch.anchor_weight(), batch.id_feat)
