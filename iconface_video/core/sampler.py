"""Few-step Euler sampling of the x-prediction flow (core-design §5.10).

Step from t to t' < t: x ← x̂0 + (t'/t)·(x − x̂0) (exact for the straight path through x̂0); the
last step (t' = 0) returns x̂0. The network is queried at min(t, ``config.t_max``): it never sees
t = 1 in training. With the ``one_way`` topology the cond stream is encoded once and
every step recomputes scene rows only; ``cached=False`` (or ``full``) runs the joint pass per step.

Optional reference guidance (§5.10): x̂0 = x̂0_noref + w·(x̂0_ref − x̂0_noref), where the no-reference
prediction comes from the same crops with the reference segment and anchor removed (the unified
training makes that branch available for free). w = 1 is plain sampling, w = 0 ignores the
references, w > 1 leans harder on them; it doubles the cost. Crops whose track has no reference
are unaffected (both branches are identical for them).

Noise is drawn once per *track* from a generator seeded by (seed, track id), so a crop's result
does not depend on its batch-mates and every frame of a track starts from the same noise field
(crops are aligned, so the same noise lands on the same facial region: temporally stable).
"""

from __future__ import annotations

import itertools

import torch

from .model import Conditions, IConFaceCore


def time_schedule(steps: int, shift: float = 1.0) -> list[float]:
    """steps+1 times from 1 to 0, FLUX-style shifted: t' = s·t / (1 + (s − 1)·t)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ts = [1.0 - i / steps for i in range(steps + 1)]
    return [shift * t / (1 + (shift - 1) * t) for t in ts]


def _track_seed(seed: int, track_id: int) -> int:
    # SplitMix-style mixing keeps nearby (seed, track) pairs far apart and fits a 63-bit seed.
    z = (seed * 0x9E3779B97F4A7C15 + track_id * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & (2**64 - 1)
    z ^= z >> 31
    return z & (2**63 - 1)


def track_noise(track: torch.Tensor, seed: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """float32[B, *shape] on the CPU: one standard-normal sample per distinct track id, repeated."""
    ids = track.detach().cpu().tolist()
    per_track: dict[int, torch.Tensor] = {}
    for tid in dict.fromkeys(ids):
        gen = torch.Generator().manual_seed(_track_seed(seed, int(tid)))
        per_track[tid] = torch.randn(shape, generator=gen)
    return torch.stack([per_track[t] for t in ids]) if ids else torch.zeros(0, *shape)


def _predictor(model: IConFaceCore, cond: Conditions, cached: bool):
    """x_t, t → x̂0 for one set of conditions, with the condition stream encoded once if possible."""
    if cached and model.config.topology == "one_way":
        cache = model.encode_conditions(cond)
        return lambda x, t: model.scene_forward(x, t, cache)
    return lambda x, t: model(x, t, cond)


@torch.no_grad()
def sample(model: IConFaceCore, cond: Conditions, noise: torch.Tensor, steps: int = 4, cached: bool = True,
           uncond: Conditions | None = None, guidance: float = 1.0) -> torch.Tensor:
    """Euler-sample x̂0 float[B, 3, R, R] in [-1, 1] from noise float[B, 3, R, R].

    ``uncond`` (the same crops without references) and ``guidance`` w enable reference guidance;
    it is skipped when w = 1 or ``uncond`` is None.
    """
    ts = time_schedule(steps, model.config.time_shift)
    predict = _predictor(model, cond, cached)
    predict_noref = _predictor(model, uncond, cached) if uncond is not None and guidance != 1.0 else None
    x = noise
    b = noise.shape[0]
    for t, t_next in itertools.pairwise(ts):
        tt = torch.full((b,), min(t, model.config.t_max), device=noise.device, dtype=torch.float32)
        x0 = predict(x, tt)
        if predict_noref is not None:
            x0_noref = predict_noref(x, tt)
            x0 = x0_noref + guidance * (x0 - x0_noref)
        x = x0 if t_next == 0 else x0 + (t_next / t) * (x - x0)
    return x
