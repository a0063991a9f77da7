"""The Triton kernels equal their PyTorch twins, checked on CPU under the Triton interpreter.

``TRITON_INTERPRET=1`` only takes effect if set before Triton is first imported, and other tests
in the same run may import Triton first, so the comparisons run in a fresh Python process
(``kernels_interpret_check.py``) and this test checks the numbers it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).with_name("kernels_interpret_check.py")
FP32_TOL = 1e-5
FP16_TOL = 1e-2  # relative to max(1, |twin|): fp16 in and out, fp32 arithmetic on both paths


def assert_fp16_close(diffs: dict, case: str) -> None:
    for key in ("out", "d0", "d1", "d2"):
        assert diffs[key] <= FP16_TOL * max(1.0, diffs[f"{key}_ref"]), (case, key, diffs[key])


@pytest.fixture(scope="module")
def report() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=SCRIPT.parent
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


ATTENTION_FP32 = [
    "attn_self_fp32_d32",
    "attn_cross_fp32_d32",
    "attn_edges_fp32_d32",
    "attn_self_fp32_d64",
    "attn_cross_fp32_d128",
]


@pytest.mark.parametrize("case", ATTENTION_FP32)
def test_ranged_attention_forward_and_gradients_equal_twin_fp32(report, case):
    diffs = report[case]
    for key in ("out", "d0", "d1", "d2"):  # output, dq, dk, dv
        assert diffs[key] <= FP32_TOL, (case, key, diffs[key])
    assert diffs["zero_rows_out"] == 0.0 and diffs["zero_rows_dq"] == 0.0


def test_tables_really_have_rows_outside_every_sequence(report):
    # the cross-attention table leaves degraded and reference rows out; the edge table has rows in
    # no sequence and a sequence without keys: the zero checks above must have had rows to check
    assert report["attn_cross_fp32_d32"]["n_zero_rows"] > 0
    assert report["attn_edges_fp32_d32"]["n_zero_rows"] == 8 + 5


def test_ranged_attention_on_strided_qkv_views(report):
    diffs = report["attn_strided_fp32_d32"]
    assert diffs["out"] <= FP32_TOL and diffs["d0"] <= FP32_TOL


def test_ranged_attention_fp16(report):
    assert_fp16_close(report["attn_self_fp16_d32"], "attn_self_fp16_d32")


@pytest.mark.parametrize("case", ["adaln_fp32", "gate_fp32"])
def test_row_kernels_equal_twin_fp32(report, case):
    diffs = report[case]
    for key in ("out", "d0", "d1", "d2"):  # adaln: y, dx, dshift, dscale; gate: out, dh, dy, dgate
        assert diffs[key] <= FP32_TOL, (case, key, diffs[key])
    unused = diffs["unused_row_dshift" if case.startswith("adaln") else "unused_row_dgate"]
    assert unused == 0.0


def test_fused_gate_residual_adaln_equals_twin_fp32(report):
    diffs = report["gate_adaln_fp32"]
    for key in ("out", "d0", "d1", "d2", "d3", "d4"):  # (h2 ‖ x), dh, dy, dgate, dshift, dscale
        assert diffs[key] <= FP32_TOL, (key, diffs[key])


@pytest.mark.parametrize("case", ["adaln_fp16", "gate_fp16", "gate_adaln_fp16"])
def test_row_kernels_fp16(report, case):
    assert_fp16_close(report[case], case)


def test_gpu_check_comparison_runs_and_agrees(report):
    # iconface_video.kernels.bench.compare_with_twins is what scripts/gpu_check.py calls on CUDA
    smoke = report["bench_smoke"]
    assert set(smoke) == {"attention_self", "attention_cross", "adaln_modulate", "gate_residual", "gate_residual_adaln"}
    for name, diffs in smoke.items():
        for key, value in diffs.items():
            if key.endswith("_rel"):
                assert value <= FP32_TOL, (name, key, value)
    names = ("ranged", "twin", "sdpa_masked", "sdpa_unmasked")
    timed = {f"{name}_{part}_ms" for name in names for part in ("fwd", "fwd_bwd")}
    assert timed | {"tokens", "useful_gflop_fwd", "ranged_fwd_tflops"} == set(report["bench_timing_keys"])
