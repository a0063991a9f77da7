"""On a CUDA machine: the compiled Triton kernels vs their twins, and dispatch to Triton.

Skipped where no GPU is present (the CPU suite checks the same kernels under the interpreter).
The bf16 bounds are relative to the twin's largest magnitude: bf16 keeps 8 significant bits.
"""

from __future__ import annotations

import pytest
import torch
from iconface_video.kernels import ranged_attention as attn_mod
from iconface_video.kernels.bench import S256, compare_with_twins, one_way_table

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("triton")

BOUNDS = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_compiled_kernels_equal_twins(dtype, head_dim):
    shape = dict(S256, n_scene=64, n_ref=16, heads=2, head_dim=head_dim, dim=192)
    report = compare_with_twins(5, shape, dtype, "cuda")
    for name, diffs in report.items():
        for key, value in diffs.items():
            if key.endswith("_rel"):
                assert value <= BOUNDS[dtype], (name, key, value)


def test_dispatcher_uses_triton_on_cuda(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the twin must not run for CUDA tensors")

    monkeypatch.setattr(attn_mod, "ranged_attention_reference", refuse)
    table = one_way_table([0, 2], 8, 4)
    q = torch.randn(40, 2, 32, device="cuda", dtype=torch.bfloat16)
    assert attn_mod.ranged_attention(q, q, q, table).shape == q.shape
