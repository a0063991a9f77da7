"""Packed token layout and attention range tables for a batch of crops (core-design §5.4–5.5).

Tokens live in two compact tensors, so the scene stream can be recomputed at every sampling step
while the condition stream is cached:

- scene ``[Ts = B·ns]``: crop-major, raster order within a crop;
- cond  ``[Tc = B·ns + M·nr]``: all degraded tokens (crop-major), then all reference tokens.

Attention sees a *flat* layout built from both by one gather (``perm``):

- ``one_way``: ``[scene_0 | deg_0 | scene_1 | deg_1 | … | refs of track 0 | refs of track 1 | …]``.
  References are stored once per *track* and shared by every frame of it; a scene query of crop b
  reads two key ranges: its own ``[scene_b | deg_b]`` and its track's reference block.
  Degraded queries read only ``deg_b``; reference queries read only their track's references.
- ``full`` (ablation): ``[scene_0 | deg_0 | refs of crop 0 | scene_1 | …]``; references are
  copied per crop and every token attends to its whole crop (nothing can be cached).

A track with no kept reference has no reference tokens at all (no placeholders).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import grid_coords

# RoPE segment-axis values (FLUX.2 uses multiples of 10 per condition image). All references share
# one value because they are an unordered set.
SEG_SCENE, SEG_DEG, SEG_REF = 0.0, 10.0, 20.0


@dataclass(frozen=True, eq=False)
class Layout:
    """Where every token of a batch lives. Index tensors are int64 on ``device``; the range tables
    stay on the CPU, where the attention kernels read them (no device-to-host sync per call).

    Shapes: B crops, ns tokens per crop and segment, nr tokens per reference image, M reference
    images in the layout (per track for ``one_way``, per crop for ``full``).
    """

    n_crops: int
    ns: int
    nr: int
    topology: str
    crop_track: torch.Tensor  # int64[B]   index of each crop's track in ``tracks``
    tracks: torch.Tensor  # int64[n_tracks]  the track ids, sorted
    ref_source: torch.Tensor  # int64[M]  which input reference fills each reference slot
    refs_per_track: torch.Tensor  # int64[n_tracks]  kept references per track
    perm: torch.Tensor  # int64[T]  flat position -> row of cat([scene, cond])
    table_joint: torch.Tensor  # int64[n, 6]  flat queries -> flat keys
    table_cond: torch.Tensor  # int64[n, 6]  compact cond queries -> compact cond keys (one_way)
    table_scene: torch.Tensor  # int64[B, 6]  compact scene queries -> flat keys
    cond_row: torch.Tensor  # int64[Tc]  0 = degraded, 1 = reference (modulation row)
    scene_row: torch.Tensor  # int64[Ts]  crop index (modulation row)
    scene_pos: torch.Tensor  # float32[Ts, 3]  RoPE (seg, h, w)
    cond_pos: torch.Tensor  # float32[Tc, 3]

    @property
    def n_scene(self) -> int:
        return self.n_crops * self.ns

    @property
    def n_deg(self) -> int:
        return self.n_crops * self.ns

    @property
    def n_ref_tokens(self) -> int:
        return int(self.ref_source.shape[0]) * self.nr

    def xattn_table(self, n_routes: int) -> torch.Tensor:
        """int64[B, 6]: scene queries of crop b → its memory rows in ``[route 0 (B·ns) | route 1]``."""
        b = torch.arange(self.n_crops)
        q0 = b * self.ns
        ns = torch.full_like(b, self.ns)
        zero = torch.zeros_like(b)
        k1_start, k1_len = (q0 + self.n_deg, ns) if n_routes == 2 else (zero, zero)
        return torch.stack([q0, ns, q0, ns, k1_start, k1_len], dim=1)


def _positions(grid: int, scale: float, seg: float, n_images: int) -> torch.Tensor:
    """float32[n_images · grid², 3] RoPE coordinates (seg, h, w), (h, w) scaled onto the scene grid."""
    hw = grid_coords(grid, scale)
    return torch.cat([torch.full((hw.shape[0], 1), seg), hw], dim=1).repeat(n_images, 1)


def build_layout(
    track: torch.Tensor,
    ref_track: torch.Tensor,
    grid: int,
    ref_grid: int,
    topology: str = "one_way",
    device: torch.device | str = "cpu",
    unit_grid: int | None = None,
) -> Layout:
    """Lay out B crops and their *kept* references (invalid ones must already be removed).

    track: int64[B] track id per crop; ref_track: int64[N] track id per kept reference (references
    of a track absent from ``track`` are left out). grid/ref_grid: tokens per side of a crop / a
    reference. Within a track, references keep their input order (the result does not depend on
    it: attention over a set is order-free and all references share one RoPE position set).
    ``unit_grid`` (default ``grid``): RoPE positions are measured in tokens of this grid, so a token
    keeps its facial position whatever the crop side (crops of any size share one position frame).
    """
    track = track.detach().to("cpu", torch.int64)
    ref_track = ref_track.detach().to("cpu", torch.int64)
    ns, nr = grid * grid, ref_grid * ref_grid
    n_crops = int(track.shape[0])
    tracks, crop_track = torch.unique(track, sorted=True, return_inverse=True)
    n_tracks = int(tracks.shape[0])

    # Reference images per track, in input order.
    present = torch.isin(ref_track, tracks)
    ref_ids = torch.nonzero(present).flatten()
    ref_tidx = torch.searchsorted(tracks, ref_track[ref_ids])
    order = torch.sort(ref_tidx, stable=True).indices
    ref_ids, ref_tidx = ref_ids[order], ref_tidx[order]
    refs_per_track = torch.bincount(ref_tidx, minlength=n_tracks)
    track_ref_start = torch.cumsum(refs_per_track, 0) - refs_per_track  # in images

    if topology == "one_way":
        ref_source = ref_ids
    elif topology == "full":
        per_crop = [ref_ids[ref_tidx == int(t)] for t in crop_track]
        ref_source = torch.cat(per_crop) if per_crop else ref_ids[:0]
    else:
        raise ValueError(f"unknown topology {topology!r}")
    n_slots = int(ref_source.shape[0])
    n_scene, n_deg = n_crops * ns, n_crops * ns

    # Flat layout -> rows of cat([scene (Ts), cond (Tc)]).
    perm_parts: list[torch.Tensor] = []
    joint_rows: list[list[int]] = []
    scene_rows: list[list[int]] = []
    cond_rows: list[list[int]] = []
    ar_ns = torch.arange(ns)
    if topology == "one_way":
        ref_flat0 = 2 * n_scene
        for b in range(n_crops):
            t = int(crop_track[b])
            base = 2 * b * ns
            perm_parts += [b * ns + ar_ns, n_scene + b * ns + ar_ns]
            k1 = (ref_flat0 + int(track_ref_start[t]) * nr, int(refs_per_track[t]) * nr)
            joint_rows.append([base, ns, base, 2 * ns, *k1])
            joint_rows.append([base + ns, ns, base + ns, ns, 0, 0])
            scene_rows.append([b * ns, ns, base, 2 * ns, *k1])
            cond_rows.append([b * ns, ns, b * ns, ns, 0, 0])
        perm_parts.append(n_scene + n_deg + torch.arange(n_slots * nr))
        for t in range(n_tracks):
            k = int(refs_per_track[t]) * nr
            if k:
                start = int(track_ref_start[t]) * nr
                joint_rows.append([ref_flat0 + start, k, ref_flat0 + start, k, 0, 0])
                cond_rows.append([n_deg + start, k, n_deg + start, k, 0, 0])
    else:
        base = 0
        slot = 0
        for b in range(n_crops):
            k = len(per_crop[b])
            perm_parts += [b * ns + ar_ns, n_scene + b * ns + ar_ns,
                           n_scene + n_deg + slot * nr + torch.arange(k * nr)]
            whole = 2 * ns + k * nr
            joint_rows.append([base, whole, base, whole, 0, 0])
            scene_rows.append([b * ns, ns, base, whole, 0, 0])
            base += whole
            slot += k

    def table(rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 6)

    cond_row = torch.cat([torch.zeros(n_deg, dtype=torch.int64), torch.ones(n_slots * nr, dtype=torch.int64)])
    unit = grid if unit_grid is None else unit_grid
    scene_pos = _positions(grid, unit / grid, SEG_SCENE, n_crops)
    cond_pos = torch.cat([_positions(grid, unit / grid, SEG_DEG, n_crops),
                          _positions(ref_grid, unit / ref_grid, SEG_REF, n_slots)])
    return Layout(
        n_crops=n_crops, ns=ns, nr=nr, topology=topology,
        crop_track=crop_track.to(device), tracks=tracks.to(device),
        ref_source=ref_source.to(device),
        refs_per_track=refs_per_track.to(device),
        perm=torch.cat(perm_parts).to(device) if perm_parts else torch.zeros(0, dtype=torch.int64, device=device),
        table_joint=table(joint_rows), table_cond=table(cond_rows), table_scene=table(scene_rows),
        cond_row=cond_row.to(device), scene_row=torch.arange(n_crops).repeat_interleave(ns).to(device),
        scene_pos=scene_pos.to(device), cond_pos=cond_pos.to(device),
    )
