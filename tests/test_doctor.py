"""``iconface-video doctor``: one line per check, a fix for each problem, an honest exit code."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
from click.testing import CliRunner

from iconface_video.batch import doctor
from iconface_video.batch.doctor import Check, check_disk, check_weights, exit_code
from iconface_video.cli import cli
from iconface_video.weights import MODELS


@pytest.fixture(scope="module")
def report():
    """The doctor's JSON report of this machine (one run for the module: it imports torch & co)."""
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return result, [e for e in events if e["event"] == "check"], events[-1]


def test_every_area_is_checked_once_per_line(report):
    result, checks, _ = report
    names = [c["name"] for c in checks]
    for expected in ("python", "torch", "cuda", "triton", "codec libx264", "codec libx265", "codec libvpx-vp9",
                     "codec libsvtav1", "codec aac", "insightface", "facexlib", "dlib", "disk", "ray"):
        assert expected in names
    assert {f"weights {m.name}" for m in MODELS} <= set(names)
    assert len(names) == len(set(names))


def test_every_problem_says_what_to_do(report):
    _, checks, _ = report
    for check in checks:
        assert check["status"] in ("ok", "warn", "fail")
        if check["status"] != "ok":
            assert check["fix"], f"{check['name']} has no fix: {check}"


def test_exit_code_and_summary_follow_the_essential_checks(report):
    result, checks, summary = report
    essential_failures = [c["name"] for c in checks if c["status"] == "fail" and c["essential"]]
    assert summary == {**summary, "event": "doctor_done", "ok": not essential_failures, "failed": essential_failures}
    assert result.exit_code == (1 if essential_failures else 0)


def test_this_machine_is_reported_as_it_is(report):
    """What the sandbox really has: torch, PyAV's encoders, no visible GPU."""
    _, checks, _ = report
    by_name = {c["name"]: c for c in checks}
    assert by_name["torch"]["status"] == "ok"
    assert by_name["codec libx264"]["status"] == "ok" and by_name["codec libx264"]["essential"]
    import torch

    assert (by_name["cuda"]["status"] == "ok") == torch.cuda.is_available()


def test_weights_lines_carry_licences_and_find_a_models_dir(tmp_path):
    lines = {c.name: c for c in check_weights(tmp_path)}
    buffalo = lines["weights buffalo_l"]
    assert "NOT for commercial use" in buffalo.detail and buffalo.fix == "iconface-video models fetch buffalo_l"
    assert not buffalo.essential
    assert "commercial use OK" in lines["weights mtcnn"].detail
    # --models-dir comes first in the look-up: a damaged copy there is found and called corrupt,
    # and since MTCNN is an embedded default, that is an essential failure.
    (tmp_path / "mtcnn").mkdir()
    (tmp_path / "mtcnn" / "pnet.safetensors").write_bytes(b"not the weights")
    mtcnn = {c.name: c for c in check_weights(tmp_path)}["weights mtcnn"]
    assert (mtcnn.status, mtcnn.essential) == ("fail", True)
    bad = tmp_path / "mtcnn" / "pnet.safetensors"
    assert "corrupt" in mtcnn.detail and str(bad) in mtcnn.detail
    assert mtcnn.fix.startswith(f"delete {bad}") and mtcnn.fix.endswith("; the embedded copy is used then")


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(("free_gib", "status"), [(0.5, "fail"), (5, "warn"), (100, "ok")])
def test_disk_thresholds(monkeypatch, tmp_path, free_gib, status):
    # A stand-in for shutil.disk_usage: this test cannot fill the real disk.
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: Usage(0, 0, int(free_gib * doctor.GIB)))
    check = check_disk(tmp_path / "not" / "yet" / "made")
    assert check.status == status and str(tmp_path) in check.detail


def test_exit_code_ignores_warnings_and_optional_failures():
    assert exit_code([Check("a", "warn", "x", "y"), Check("b", "fail", "x", "y", essential=False)]) == 0
    assert exit_code([Check("a", "ok", "x"), Check("b", "fail", "x", "y", essential=True)]) == 1


def test_a_crashing_check_does_not_hide_the_others(monkeypatch):
    def boom():
        raise RuntimeError("broken driver")

    monkeypatch.setattr(doctor, "check_cuda", boom)
    checks = doctor.run_checks()
    cuda = next(c for c in checks if c.name == "cuda")
    assert cuda.status == "warn" and "broken driver" in cuda.detail
    assert any(c.name == "ray" for c in checks)
