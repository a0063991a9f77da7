"""Shared test fixtures: where the shared media lies, and where tests keep artifacts.

Real media is read in place from ``../shared/media`` (beside the checkout, read-only in CI) or
from ``$ICONFACE_TEST_MEDIA``; tests that need it skip cleanly where it is absent. Outputs go to
pytest's temporary folders; pictures meant for a human look go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
MEDIA_DIR = Path(os.environ.get("ICONFACE_TEST_MEDIA", REPO_ROOT.parent / "shared" / "media"))
ARTIFACTS_DIR = Path(os.environ.get("ICONFACE_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not (MEDIA_DIR / "MANIFEST.md").is_file():
        pytest.skip(f"shared test media not found at {MEDIA_DIR}")
    return MEDIA_DIR


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``):
    the CI machine has two cores, and the results of these tests must not depend on the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
