"""The PyTorch twins of the kernels: exact semantics, gradients, validation and CPU dispatch."""

from __future__ import annotations

import pytest
import torch
from iconface_video.kernels import adaln_modulate as adaln_mod
from iconface_video.kernels import gate_residual as gate_mod
from iconface_video.kernels import ranged_attention as attn_mod
from iconface_video.kernels.adaln_modulate import adaln_modulate, adaln_modulate_reference
from iconface_video.kernels.bench import crop_offsets, cross_table, one_way_table
from iconface_video.kernels.gate_residual import (
    gate_residual,
    gate_residual_adaln,
    gate_residual_adaln_reference,
    gate_residual_reference,
)
from iconface_video.kernels.ranged_attention import ranged_attention, ranged_attention_reference
from kernel_cases import attending_rows

KS = [0, 1, 3, 1]  # a batch mixing crops with 0, 1 and 3 references
N_SCENE, N_REF = 6, 3


def per_sequence_attention(q, k, v, table, scale=None):
    """Independent oracle: a loop over virtual sequences with the softmax written out."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.zeros_like(q)
    for q_start, q_len, a, a_len, b, b_len in table.tolist():
        keys = list(range(a, a + a_len)) + list(range(b, b + b_len))
        if q_len == 0 or not keys:
            continue
        qs = q[q_start : q_start + q_len]  # [q_len, H, Dh]
        weights = torch.softmax(torch.einsum("qhd,khd->hqk", qs, k[keys]) * scale, dim=-1)
        out[q_start : q_start + q_len] = torch.einsum("hqk,khd->qhd", weights, v[keys])
    return out


def _qkv(n_q, n_k, heads=2, head_dim=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randn(n, heads, head_dim, generator=g, dtype=dtype, requires_grad=True)  # noqa: E731
    return make(n_q), make(n_k), make(n_k)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_twin_equals_per_sequence_softmax(kind):
    n_tok = crop_offsets(KS, N_SCENE, N_REF)[-1]
    if kind == "self":
        table, n_k = one_way_table(KS, N_SCENE, N_REF), n_tok
    else:
        table, n_k = cross_table(KS, N_SCENE, N_REF), len(KS) * 2 * N_SCENE
    q, k, v = _qkv(n_tok, n_k)
    out = ranged_attention_reference(q, k, v, table)
    torch.testing.assert_close(out, per_sequence_attention(q, k, v, table), rtol=0, atol=1e-12)
    zero_rows = ~attending_rows(table, n_tok)
    if kind == "cross":
        assert zero_rows.any()
    assert bool((out[zero_rows] == 0).all())


def test_twin_custom_scale_and_float32():
    n_tok = crop_offsets(KS, N_SCENE, N_REF)[-1]
    table = one_way_table(KS, N_SCENE, N_REF).long()
    q, k, v = (t.detach().float() for t in _qkv(n_tok, n_tok))
    out = ranged_attention_reference(q, k, v, table, scale=0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, per_sequence_attention(q, k, v, table, scale=0.3), rtol=0, atol=1e-6)


def test_twin_zero_rows_and_empty_key_sequences_have_zero_output_and_gradient():
    # rows 0..3: keys in range 1 only; rows 4..5: no keys at all; rows 6..7: in no sequence.
    table = torch.tensor([[0, 4, 0, 0, 2, 5], [4, 2, 0, 0, 0, 0]], dtype=torch.int32)
    q, k, v = _qkv(8, 8)
    out = ranged_attention_reference(q, k, v, table)
    assert bool((out[4:] == 0).all())
    torch.testing.assert_close(out[:4], per_sequence_attention(q, k, v, table)[:4], rtol=0, atol=1e-12)
    out.sum().backward()
    assert bool((q.grad[4:] == 0).all())
    assert bool((k.grad[:2] == 0).all()) and bool((k.grad[7:] == 0).all())
    assert bool(torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all())


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_twin_gradcheck_ranged_attention(kind):
    ks, n_scene, n_ref = [0, 1, 3], 3, 2
    n_tok = crop_offsets(ks, n_scene, n_ref)[-1]
    if kind == "self":
        table, n_k = one_way_table(ks, n_scene, n_ref), n_tok
    else:
        table, n_k = cross_table(ks, n_scene, n_ref), len(ks) * 2 * n_scene
    q, k, v = _qkv(n_tok, n_k, heads=2, head_dim=4)
    # fast mode checks random directional derivatives: the full Jacobian needs ~1500 calls
    check = lambda a, b, c: ranged_attention_reference(a, b, c, table)  # noqa: E731
    assert torch.autograd.gradcheck(check, (q, k, v), fast_mode=True)


def test_twin_gradcheck_adaln_and_gate():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    shift, scale, gate = (torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    y = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    row = torch.tensor([0, 0, 2, 1, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda a, b, c: adaln_modulate_reference(a, b, c, row), (x, shift, scale))
    assert torch.autograd.gradcheck(lambda a, b, c: gate_residual_reference(a, b, c, row), (x, y, gate))


def test_twin_adaln_and_gate_formulas():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(9, 16, generator=g), torch.randn(9, 16, generator=g)
    shift, scale, gate = (torch.randn(4, 16, generator=g) for _ in range(3))
    row = torch.tensor([3, 0, 0, 1, 2, 2, 3, 1, 0], dtype=torch.int32)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * (1 + scale[row.long()]) + shift[row.long()]
    torch.testing.assert_close(adaln_modulate_reference(x, shift, scale, row), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(gate_residual_reference(x, y, gate, row), x + gate[row.long()] * y, rtol=0, atol=0)
    half = adaln_modulate_reference(x.half(), shift.half(), scale.half(), row)
    assert half.dtype == torch.float16


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (torch.zeros(2, 5, dtype=torch.int32), r"\[n_virtual, 6\]"),
        (torch.zeros(1, 6), "int32 or int64"),
        (torch.tensor([[0, 2, -1, 2, 0, 0]]), "negative"),
        (torch.tensor([[0, 2, 4, 3, 0, 0]]), "key range past"),
        (torch.tensor([[5, 2, 0, 3, 0, 0]]), "query range past"),
        (torch.tensor([[0, 3, 0, 6, 0, 0], [2, 2, 0, 6, 0, 0]]), "sharing query rows"),
    ],
)
def test_bad_tables_are_rejected(table, message):
    q, k, v = _qkv(6, 6)
    with pytest.raises(ValueError, match=message):
        ranged_attention_reference(q, k, v, table)


def test_bad_rows_are_rejected():
    x, tab = torch.randn(4, 8), torch.randn(2, 8)
    with pytest.raises(ValueError):
        adaln_modulate_reference(x, tab, tab, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError):
        gate_residual_reference(x, x, tab, torch.tensor([0, 1]))


def test_dispatchers_use_the_twins_on_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path must not run on CPU tensors")

    monkeypatch.setattr(attn_mod, "ranged_attention_triton", refuse)
    monkeypatch.setattr(adaln_mod, "adaln_modulate_triton", refuse)
    monkeypatch.setattr(gate_mod, "gate_residual_triton", refuse)
    monkeypatch.setattr(gate_mod, "gate_residual_adaln_triton", refuse)
    n_tok = crop_offsets(KS, N_SCENE, N_REF)[-1]
    table = one_way_table(KS, N_SCENE, N_REF)
    q, k, v = (t.detach().float() for t in _qkv(n_tok, n_tok, head_dim=32))
    twin = ranged_attention_reference(q, k, v, table)
    torch.testing.assert_close(ranged_attention(q, k, v, table), twin, rtol=0, atol=0)
    x, s, row = torch.randn(5, 8), torch.randn(2, 8), torch.tensor([0, 1, 1, 0, 1])
    torch.testing.assert_close(adaln_modulate(x, s, s, row), adaln_modulate_reference(x, s, s, row), rtol=0, atol=0)
    torch.testing.assert_close(gate_residual(x, x, s, row), gate_residual_reference(x, x, s, row), rtol=0, atol=0)
    fused, twin = gate_residual_adaln(x, x, s, s, s, row), gate_residual_adaln_reference(x, x, s, s, s, row)
    torch.testing.assert_close(fused, twin, rtol=0, atol=0)


def test_fused_twin_is_gate_residual_then_adaln():
    g = torch.Generator().manual_seed(3)
    h, y = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    gate, shift, scale = (torch.randn(2, 8, generator=g) for _ in range(3))
    row = torch.tensor([0, 0, 1, 1, 1, 0])
    h2, x = gate_residual_adaln_reference(h, y, gate, shift, scale, row)
    torch.testing.assert_close(h2, h + gate[row] * y, rtol=0, atol=1e-6)
    torch.testing.assert_close(x, adaln_modulate_reference(h + gate[row] * y, shift, scale, row), rtol=0, atol=1e-6)
