"""The batch's bookkeeping without video: manifest writes, lock files, scheduling, task grouping."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from iconface_video import locks
from iconface_video.batch.manifest import FileRecord, manifest_path, read_manifest, set_state, update_manifest
from iconface_video.batch.items import BatchOptions
from iconface_video.batch.local_backend import worker_specs
from iconface_video.batch.schedule import Skip, expand_inputs, files_to_do, group_segments, restorer_version
from iconface_video.errors import InputError


def _record(name: str, state: str = "pending") -> FileRecord:
    return FileRecord(input=f"/in/{name}", output=f"/out/{name}", state=state, settings={"crf": 18})


# ---------------------------------------------------------------------------- manifest


def test_manifest_round_trip_and_state_change(tmp_path):
    path = manifest_path(tmp_path)
    update_manifest(path, {"a.mp4": _record("a.mp4"), "b.mp4": _record("b.mp4")})
    after = set_state(path, "a.mp4", "failed", reason="bad input", attempts=1)
    loaded = read_manifest(path)
    assert loaded["a.mp4"] == after
    assert (loaded["a.mp4"].state, loaded["a.mp4"].reason, loaded["a.mp4"].attempts) == ("failed", "bad input", 1)
    assert loaded["b.mp4"].state == "pending"
    assert json.loads(path.read_text())["version"] == 1
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name], "temporary files left behind"


def _hammer(path: str, prefix: str, count: int) -> None:
    for i in range(count):
        update_manifest(Path(path), {f"{prefix}{i}": _record(f"{prefix}{i}")})


def test_concurrent_writers_lose_no_entries(tmp_path):
    """Two processes updating different entries at once: every entry survives (flock + merge)."""
    path = manifest_path(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(path), prefix, 25)) for prefix in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(read_manifest(path)) == 50


def test_corrupt_manifest_is_reported_not_replaced(tmp_path):
    path = manifest_path(tmp_path)
    path.write_text("{ not json")
    with pytest.raises(ValueError, match="not a valid batch manifest"):
        read_manifest(path)
    with pytest.raises(ValueError):
        update_manifest(path, {"a.mp4": _record("a.mp4")})
    assert path.read_text() == "{ not json"


# ---------------------------------------------------------------------------- locks


def test_lock_excludes_a_second_holder_and_is_released(tmp_path):
    path = locks.lock_path_for(tmp_path, "a.mp4")
    with locks.acquire(path, "run1") as held:
        assert locks.read_lock(path) == held.info
        with pytest.raises(locks.LockedError, match=f"pid {os.getpid()}"):
            locks.acquire(path, "run2")
    assert not path.exists()
    locks.acquire(path, "run3").release()


def test_lock_of_a_dead_process_is_broken(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    path = locks.lock_path_for(tmp_path, "a.mp4")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "run_id": "old", "started": time.time()}))
    lock = locks.acquire(path, "new")
    assert locks.read_lock(path).run_id == "new"
    lock.release()


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    path = locks.lock_path_for(tmp_path, "a.mp4")
    path.parent.mkdir(parents=True)
    # A live process on another machine: its pid means nothing here, only the file's age counts.
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "run_id": "remote", "started": time.time()}))
    with pytest.raises(locks.LockedError, match="elsewhere"):
        locks.acquire(path, "new", stale_after_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))
    locks.acquire(path, "new", stale_after_s=60).release()


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    path = locks.lock_path_for(tmp_path, "a.mp4")
    lock = locks.acquire(path, "run", heartbeat_s=0.05)
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5
    lock.release()


def test_release_does_not_remove_a_lock_taken_over_by_another_run(tmp_path):
    path = locks.lock_path_for(tmp_path, "a.mp4")
    lock = locks.acquire(path, "first", heartbeat_s=3600)
    path.write_text(json.dumps({"pid": os.getpid(), "host": "h", "run_id": "second", "started": time.time()}))
    lock.release()
    assert locks.read_lock(path).run_id == "second"


def test_unreadable_lock_is_stale_only_after_a_grace_period():
    now = time.time()
    assert not locks.is_stale(None, now - 1, now, 600, "h")
    assert locks.is_stale(None, now - 60, now, 600, "h")


# ---------------------------------------------------------------------------- scheduling


def test_expand_inputs_globs_folders_and_errors(tmp_path):
    for name in ("b.mkv", "a.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([str(tmp_path / "*.m*")])] == ["a.mp4", "b.mkv"]
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.mp4", "b.mkv"]
    assert len(expand_inputs([str(tmp_path / "a.mp4"), str(tmp_path / "*.mp4")])) == 1
    with pytest.raises(InputError, match="matches no video files"):
        expand_inputs([str(tmp_path / "*.avi")])


def test_files_to_do_skips_done_retries_failed_and_redoes_changed_settings(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    inputs = []
    for name in ("done.mp4", "failed.mp4", "running.mp4", "changed.mp4", "new.mp4", "vanished.mp4"):
        (src / name).write_bytes(b"x")
        inputs.append(src / name)
    settings = {"crf": 18}
    options = BatchOptions(out_dir=out)

    def entry(name, state, settings=settings):
        (out / name).write_bytes(b"restored") if name != "vanished.mp4" else None
        return FileRecord(str(src / name), str(out / name), state=state, settings=settings, attempts=1)

    update_manifest(manifest_path(out), {
        "done.mp4": entry("done.mp4", "done"),
        "failed.mp4": entry("failed.mp4", "failed"),
        "running.mp4": entry("running.mp4", "running"),
        "changed.mp4": entry("changed.mp4", "done", {"crf": 30}),
        "vanished.mp4": entry("vanished.mp4", "done"),
    })
    todo, skipped = files_to_do(inputs, options, settings, {})
    assert sorted(Path(r.output).name for r in todo) == ["changed.mp4", "failed.mp4", "new.mp4", "running.mp4", "vanished.mp4"]
    assert skipped == [Skip(src / "done.mp4", out / "done.mp4", "done")]
    manifest = read_manifest(manifest_path(out))
    assert manifest["new.mp4"].state == "pending" and manifest["done.mp4"].state == "done"
    # Until a worker takes them up again, earlier outcomes stay on record.
    assert manifest["failed.mp4"].state == "failed" and manifest["changed.mp4"].settings == {"crf": 30}
    assert [r.attempts for r in todo if r.output.endswith("failed.mp4")] == [1]

    todo, skipped = files_to_do(inputs, replace(options, retry_failed=False), settings, {})
    assert [s.output.name for s in skipped] == ["done.mp4", "failed.mp4"]


def test_files_to_do_redoes_done_files_when_the_restorer_changes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    (out / "a.mp4").write_bytes(b"restored")
    old = {"restorer": "core.safetensors sha256:aaaa"}
    update_manifest(manifest_path(out), {"a.mp4": FileRecord(str(src / "a.mp4"), str(out / "a.mp4"), state="done",
                                                             settings={"crf": 18}, models=old)})
    assert files_to_do([src / "a.mp4"], BatchOptions(out_dir=out), {"crf": 18}, old)[0] == []
    todo, _ = files_to_do([src / "a.mp4"], BatchOptions(out_dir=out), {"crf": 18}, {"restorer": "core.safetensors sha256:bbbb"})
    assert [r.models["restorer"] for r in todo] == ["core.safetensors sha256:bbbb"]


def test_restorer_version_names_and_hashes_the_checkpoint(tmp_path):
    import hashlib

    from iconface_video.errors import MissingModelError

    path = tmp_path / "core.safetensors"
    path.write_bytes(b"weights")
    assert restorer_version(str(path)) == f"core.safetensors sha256:{hashlib.sha256(b'weights').hexdigest()}"
    with pytest.raises(MissingModelError, match="missing.safetensors cannot be read"):
        restorer_version(str(tmp_path / "missing.safetensors"))


def test_files_to_do_refuses_foreign_outputs_and_name_clashes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "e01.mkv").write_bytes(b"x")
    with pytest.raises(InputError, match="would both be written"):
        files_to_do([tmp_path / "a" / "e01.mkv", tmp_path / "b" / "e01.mkv"], BatchOptions(out_dir=out), {}, {})
    (tmp_path / "b" / "e01.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="would both write their analysis to"):
        files_to_do([tmp_path / "a" / "e01.mkv", tmp_path / "b" / "e01.mp4"], BatchOptions(out_dir=out), {}, {})
    with pytest.raises(InputError, match="output folder is the input's folder"):
        files_to_do([tmp_path / "a" / "e01.mkv"], BatchOptions(out_dir=tmp_path / "a"), {}, {})
    (out / "e01.mkv").write_bytes(b"someone else's")
    todo, skipped = files_to_do([tmp_path / "a" / "e01.mkv"], BatchOptions(out_dir=out), {}, {})
    assert not todo and "not made by this batch" in skipped[0].reason
    todo, _ = files_to_do([tmp_path / "a" / "e01.mkv"], BatchOptions(out_dir=out, overwrite=True), {}, {})
    assert len(todo) == 1


def test_group_segments_never_spans_finished_segments():
    ranges = ((0, 10), (10, 20), (20, 100), (100, 105), (105, 110), (110, 400))
    assert group_segments(ranges, [0, 1, 2, 3, 4, 5], 50) == [(0, 1, 2), (3, 4, 5)]
    assert group_segments(ranges, [0, 2, 3, 4], 50) == [(0,), (2, 3, 4)]  # the short tail joins its neighbour
    assert group_segments(ranges, [0, 1, 2, 3, 4, 5], 1) == [(0,), (1,), (2,), (3,), (4,), (5,)]
    assert group_segments(ranges, [], 10) == []


def test_worker_specs_pin_one_gpu_each_or_share_cpu_threads():
    gpus = worker_specs(None, ["0", "3"])
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"]) for s in gpus] == [("cuda:0", "0"), ("cuda:3", "3")]
    cpus = worker_specs(2, None)
    assert [s.name for s in cpus] == ["cpu:0", "cpu:1"]
    assert int(cpus[0].env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
