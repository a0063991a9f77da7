"""The embedded MTCNN weights are exactly what scripts/extract_mtcnn_weights.py makes from the
facenet-pytorch 2.6.0 wheel (skipped where the wheel is not at hand: `pip download --no-deps
facenet-pytorch==2.6.0 -d wheels` in the checkout, or set $FACENET_PYTORCH_WHEEL)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

from iconface_video.weights import get_model

REPO = Path(__file__).resolve().parents[1]
WHEEL = Path(os.environ.get("FACENET_PYTORCH_WHEEL", REPO / "wheels" / "facenet_pytorch-2.6.0-py3-none-any.whl"))
SCRIPT = REPO / "scripts" / "extract_mtcnn_weights.py"


@pytest.mark.skipif(not WHEEL.is_file(), reason=f"facenet-pytorch wheel not found at {WHEEL}")
def test_extraction_is_reproducible_and_matches_the_catalogue(tmp_path):
    spec = importlib.util.spec_from_file_location("extract_mtcnn_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = {p.name: p for p in module.extract(WHEEL, tmp_path)}
    assert "LICENSE.md" in written and "MIT License" in written["LICENSE.md"].read_text()
    for file in get_model("mtcnn").files:
        data = written[file.name].read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256
        assert len(data) == file.size
