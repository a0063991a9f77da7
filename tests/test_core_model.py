"""Mechanics of the IConFace core on tiny shapes (core-design §5.13): packing, asymmetry,
batch independence, invalid ≡ absent references, order invariance, cache equivalence."""

from __future__ import annotations

import itertools

import pytest
import torch
from core_cases import mixed_inputs, random_model, small_config

from iconface_video.core.batch import TrainBatch
from iconface_video.core.config import TEMPLATES, CoreConfig, load_config
from iconface_video.core.losses import compute_losses
from iconface_video.core.packing import build_layout
from iconface_video.core.restorer import Restorer
from iconface_video.core.sampler import sample, time_schedule, track_noise

torch.set_num_threads(1)
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return random_model(small_config())


@pytest.fixture(scope="module")
def restorer(model):
    return Restorer(model)


def _conditions(model, lq, track, refs, ref_track, weight=None, feat=None):
    w = torch.ones(len(ref_track)) if weight is None else weight
    return model.conditions(lq * 2 - 1, track, refs * 2 - 1, ref_track, w > 0, w, feat)


def test_presets_load_and_record_crop_and_template():
    for name in ("cpu", "gpu"):
        cfg = load_config(name)
        assert cfg.name == name and cfg.template in TEMPLATES
        assert cfg.stride == 16 and (cfg.min_side, cfg.max_side) == (96, 512)
    cpu = load_config("cpu")
    assert (cpu.crop_size, cpu.template) == (128, "arcface")
    assert CoreConfig.from_dict(cpu.to_dict()) == cpu
    assert CoreConfig.from_dict(cpu.to_dict() | {"enc_channels": list(cpu.enc_channels)}) == cpu  # YAML lists
    with pytest.raises(ValueError, match="unknown core config keys"):
        CoreConfig.from_dict({**cpu.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="multiples of the token stride"):
        cpu.replace(crop_size=100)
    with pytest.raises(ValueError, match="multiple of 16"):
        cpu.check_side(520)


def test_a_fresh_core_returns_its_input_at_every_side():
    """The zero-initialised residual head: before training the core is "return the degraded crop",
    at any allowed side (convolutional ends, side-independent RoPE positions)."""
    torch.manual_seed(0)
    from iconface_video.core.model import IConFaceCore

    fresh = Restorer(IConFaceCore(small_config()))
    for side in (16, 32, 48, 64):
        lq = torch.rand(2, 3, side, side)
        out = fresh.restore(lq, torch.tensor([1, 2]), steps=2)
        assert torch.allclose(out.crops, lq, atol=1e-6)
    with pytest.raises(ValueError, match="crop side 36"):
        fresh.restore(torch.rand(1, 3, 36, 36), torch.tensor([1]))


def test_a_trained_core_runs_at_other_sides_with_the_same_facial_positions(model):
    """RoPE positions are measured in training-grid units: a crop twice the side gets the same
    position range, so the scene tokens of one face cover the same positions at both sides."""
    lq, track, refs, ref_track = mixed_inputs(model.config)
    small = _conditions(model, lq, track, refs, ref_track)
    big_lq = torch.nn.functional.interpolate(lq, scale_factor=2, mode="bilinear")
    big = _conditions(model, big_lq, track, refs, ref_track)
    ns_small, ns_big = small.layout.ns, big.layout.ns
    assert ns_big == 4 * ns_small
    pos_s, pos_b = small.rope_scene[:ns_small], big.rope_scene[:ns_big]
    assert pos_s.shape[0] * 4 == pos_b.shape[0]
    for lay in (small.layout, big.layout):
        hw = lay.scene_pos[: lay.ns, 1:]
        assert float(hw.min()) > -0.5 and float(hw.max()) < model.config.grid - 0.5
    out = Restorer(model).restore(big_lq, track, refs=refs, ref_track=ref_track)
    assert out.crops.shape == big_lq.shape and bool(torch.isfinite(out.crops).all())


def test_layout_has_no_reference_tokens_for_k0_and_shares_refs_per_track():
    track = torch.tensor([3, 3, 5, 7])
    ref_track = torch.tensor([7, 3, 7, 7, 99])  # 99 is not in the batch: left out
    lay = build_layout(track, ref_track, grid=2, ref_grid=1)
    assert lay.refs_per_track.tolist() == [1, 0, 3]
    assert lay.n_ref_tokens == 4  # one copy per track, not per frame
    # Crops 0 and 1 (track 3) read the same reference key range; crop 2 (track 5) reads none.
    assert lay.table_scene[0, 4:].tolist() == lay.table_scene[1, 4:].tolist()
    assert lay.table_scene[2, 5].item() == 0
    # Degraded queries read only their own degraded tokens.
    deg_rows = lay.table_joint[lay.table_joint[:, 1] == 4][1::2]
    assert (deg_rows[:, 0] == deg_rows[:, 2]).all() and (deg_rows[:, 5] == 0).all()
    # The flat layout is a permutation of all scene + cond rows.
    assert sorted(lay.perm.tolist()) == list(range(4 * 4 * 2 + 4))
    none = build_layout(track, torch.zeros(0, dtype=torch.long), grid=2, ref_grid=1)
    assert none.n_ref_tokens == 0 and none.table_cond.shape[0] == 4


def test_crop_output_does_not_depend_on_batch_mates(restorer):
    cfg = restorer.config
    lq, track, refs, ref_track = mixed_inputs(cfg)
    full = restorer.restore(lq, track, refs, ref_track, seed=3).crops
    for i in range(len(track)):
        keep = ref_track == track[i]
        alone = restorer.restore(lq[i : i + 1], track[i : i + 1], refs[keep], ref_track[keep], seed=3).crops
        assert (alone[0] - full[i]).abs().max() <= TOL, f"crop {i} changed with its batch-mates"
    # And without any reference in the batch at all.
    k0 = restorer.restore(lq, track, seed=3).crops
    assert (k0[0] - full[0]).abs().max() <= TOL  # track 10 has K = 0 in both


def test_invalid_references_equal_absent_ones(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    extra = torch.rand(3, *refs.shape[1:])
    with_invalid = restorer.restore(lq, track, torch.cat([refs, extra]), torch.cat([ref_track, torch.tensor([10, 12, 13])]),
                                    ref_weight=torch.tensor([1, 1, 1, 1, 1, 0, 0, 0.0]), seed=1)
    absent = restorer.restore(lq, track, refs, ref_track, seed=1)
    assert (with_invalid.crops - absent.crops).abs().max() <= TOL
    all_invalid = restorer.restore(lq, track, refs, ref_track, ref_weight=torch.zeros(5), seed=1)
    no_refs = restorer.restore(lq, track, seed=1)
    assert (all_invalid.crops - no_refs.crops).abs().max() <= TOL
    assert all(d["n_refs_used"] == 0 and d["anchor_z_norm"] == 0.0 for d in all_invalid.diagnostics)


def test_reference_order_does_not_matter(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    w = torch.tensor([0.9, 0.5, 0.3, 1.0, 0.7])
    base = restorer.restore(lq, track, refs, ref_track, ref_weight=w, seed=2).crops
    perm = torch.tensor([3, 0, 4, 2, 1])
    shuffled = restorer.restore(lq, track, refs[perm], ref_track[perm], ref_weight=w[perm], seed=2).crops
    assert (base - shuffled).abs().max() <= TOL


def test_references_never_reach_the_degraded_stream_or_memory(model):
    lq, track, refs, ref_track = mixed_inputs(model.config)
    a = model.encode_conditions(_conditions(model, lq, track, refs, ref_track))
    other = torch.rand_like(refs)
    b = model.encode_conditions(_conditions(model, lq, track, other, ref_track))
    n_deg = a.cond.layout.n_deg
    for ba, bb in zip(a.blocks, b.blocks):
        assert torch.equal(ba.deg_hidden, bb.deg_hidden)
        assert torch.equal(ba.k[:n_deg], bb.k[:n_deg]) and torch.equal(ba.v[:n_deg], bb.v[:n_deg])
        assert ba.struct is not None and torch.equal(ba.struct, bb.struct)
        assert ba.mem is not None and all(torch.equal(x, y) for x, y in zip(ba.mem, bb.mem))
    # Not vacuous: the references do change the reference rows and the scene output.
    assert not torch.equal(a.blocks[0].k[n_deg:], b.blocks[0].k[n_deg:])
    x, t = torch.randn(5, 3, 32, 32), torch.full((5,), 0.6)
    out_a, out_b = model.scene_forward(x, t, a), model.scene_forward(x, t, b)
    assert (out_a[2] - out_b[2]).abs().max() > 1e-4  # track 12 has references
    assert (out_a[0] - out_b[0]).abs().max() <= TOL  # track 10 has none


def test_identity_anchor_is_zero_without_references_and_modulates_scene_only(model):
    lq, track, refs, ref_track = mixed_inputs(model.config)
    feat = torch.randn(5, model.config.id_dim)
    cond = _conditions(model, lq, track, refs, ref_track, feat=feat)
    assert torch.equal(cond.z_id[0], torch.zeros_like(cond.z_id[0]))  # track 10: K = 0
    assert cond.z_id[1].norm() > 0
    assert torch.equal(cond.z_id[2], cond.z_id[3])  # one anchor per track, shared by its frames
    cond2 = _conditions(model, lq, track, refs, ref_track, feat=feat * torch.linspace(0.5, 2, 5)[:, None] + 0.3)
    a, b = model.encode_conditions(cond), model.encode_conditions(cond2)
    assert all(torch.equal(x.k, y.k) and torch.equal(x.deg_hidden, y.deg_hidden) for x, y in zip(a.blocks, b.blocks))
    assert not torch.equal(cond.z_id[2], cond2.z_id[2])


def test_cached_sampling_equals_uncached_and_joint_forward(model):
    lq, track, refs, ref_track = mixed_inputs(model.config)
    cond = _conditions(model, lq, track, refs, ref_track)
    x, t = torch.randn(5, 3, 32, 32), torch.full((5,), 0.4)
    with torch.no_grad():
        joint = model(x, t, cond)
        split = model.scene_forward(x, t, model.encode_conditions(cond))
    assert (joint - split).abs().max() <= TOL
    noise = track_noise(track, 0, (3, 32, 32))
    cached = sample(model, cond, noise, steps=4, cached=True)
    uncached = sample(model, cond, noise, steps=4, cached=False)
    assert (cached - uncached).abs().max() <= TOL


def test_full_topology_lets_references_reach_the_degraded_stream():
    model = random_model(small_config(topology="full"))
    lq, track, refs, ref_track = mixed_inputs(model.config)
    x, t = torch.randn(5, 3, 32, 32), torch.full((5,), 0.5)
    with torch.no_grad():
        a = model(x, t, _conditions(model, lq, track, refs, ref_track))
        b = model(x, t, _conditions(model, lq, track, torch.rand_like(refs), ref_track))
    assert (a[2] - b[2]).abs().max() > 1e-4 and (a[0] - b[0]).abs().max() <= TOL
    with pytest.raises(ValueError, match="one_way"):
        model.encode_conditions(_conditions(model, lq, track, refs, ref_track))
    out = sample(model, _conditions(model, lq, track, refs, ref_track), torch.randn(5, 3, 32, 32), steps=2)
    assert out.shape == (5, 3, 32, 32) and torch.isfinite(out).all()


def test_track_noise_is_shared_per_track_and_seeded():
    track = torch.tensor([4, 4, 9])
    n = track_noise(track, 7, (3, 8, 8))
    assert torch.equal(n[0], n[1]) and not torch.equal(n[0], n[2])
    assert torch.equal(n, track_noise(track, 7, (3, 8, 8)))
    assert torch.equal(n[2], track_noise(torch.tensor([9]), 7, (3, 8, 8))[0])
    assert not torch.equal(n, track_noise(track, 8, (3, 8, 8)))
    ts = time_schedule(4)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and all(a > b for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize("changes", [{}, {"xattn_routes": "A", "struct_r": 0, "lora_r": 0, "hybrid_concat": False},
                                     {"xattn_routes": "B", "xattn_every": 2}, {"xattn_every": 0, "id_gamma": 0.0}])
def test_every_trainable_parameter_gets_a_gradient(changes):
    model = random_model(small_config(**changes)).train()
    lq, track, refs, ref_track = mixed_inputs(model.config)
    batch = TrainBatch(lq=lq * 2 - 1, hq=lq * 2 - 1, track=track, refs=refs * 2 - 1, ref_track=ref_track,
                       ref_valid=torch.ones(5, dtype=torch.bool), t=torch.full((5,), 0.5), noise=torch.randn_like(lq))
    losses = compute_losses(model, batch)
    assert set(losses) == {"fm", "l1", "grad", "total"} and torch.isfinite(losses["total"])
    losses["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().max() == 0)]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(p.grad is None for p in model.proxy_encoder.parameters())  # the proxy encoder is frozen
