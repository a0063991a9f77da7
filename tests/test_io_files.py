"""``files.atomic_path``, the one way files are written: a temporary name beside the target that
keeps its extension, renamed on success, removed on failure, ordinary permissions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from iconface_video.errors import OutputError
from iconface_video.files import atomic_path, write_text_atomic


def test_the_file_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.suffix == ".mp4"
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_writer_that_replaces_the_file_still_gives_ordinary_permissions(tmp_path):
    # safetensors writes a new, private (0600) file in place of the one it is given.
    from safetensors.numpy import save_file

    target = tmp_path / "pack.safetensors"
    with atomic_path(target) as tmp:
        save_file({"a": np.zeros(3, np.float32)}, str(tmp))
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "loss.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def test_overwrite_and_folder_problems_are_one_line_output_errors(tmp_path):
    target = tmp_path / "a.json"
    write_text_atomic("{}", target)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"), atomic_path(target, overwrite=False):
        pass
    with pytest.raises(OutputError, match="cannot write there"):
        write_text_atomic("{}", tmp_path / "no-such-folder" / "a.json")
