"""``iconface-video render ANALYSIS.json``: options reach the renderer, errors are one line."""

from __future__ import annotations

import json

import pytest
from render_fixtures import (
    make_analysis,
    textured_frames,
    tiny_restorer,
    write_clip,
)

from iconface_video.analysis.schema import save_analysis
from iconface_video.cli import main
from iconface_video.io.reader import read_frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from iconface_video.core.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("cli")
    clip = write_clip(tmp / "clip.mp4", textured_frames(10))
    analysis_path = tmp / "clip.iconface.json"
    save_analysis(make_analysis(clip, tmp, n=10, cut=5), analysis_path)
    checkpoint = save_checkpoint(tmp / "tiny.safetensors", tiny_restorer().model)
    return tmp, clip, analysis_path, checkpoint


def _cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _ok(capsys, *args) -> tuple[str, str]:
    main(list(args))
    return capsys.readouterr()


def test_dry_run_prints_the_plan(files, capsys):
    tmp, clip, analysis_path, checkpoint = files
    out, _ = _ok(capsys, "render", str(analysis_path), "--checkpoint", str(checkpoint), "--dry-run")
    assert "would restore 10 faces" in out and "too small" in out
    assert not (tmp / "clip.restored.mp4").exists()
    report = json.loads(out[out.index("{"):])
    assert report["dry_run"] and report["faces_skipped_small"] == 5


def test_render_writes_output_report_and_section(files, capsys):
    tmp, clip, analysis_path, checkpoint = files
    _, err = _ok(capsys, "render", str(analysis_path), "--checkpoint", str(checkpoint), "--strength", "0.7",
                 "--crf", "0", "--preset", "ultrafast", "--identities", "Anna", "-q")
    out = tmp / "clip.restored.mp4"
    assert out.is_file() and len(list(read_frames(out))) == 10
    assert (tmp / "clip.restored.report.html").is_file()
    section = json.loads(analysis_path.read_text())["render"]
    assert section["options"]["strength"] == 0.7 and section["faces_per_identity"] == {"Anna": 5}
    code, _, err = _cli(capsys, "render", str(analysis_path), "--checkpoint", str(checkpoint))
    assert code != 0 and "already exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--refs", "Anna"], "expected NAME=FOLDER"),
    (["--identities", "Zed"], "no identity 'Zed'"),
    (["--start", "soon"], "--start 'soon'"),
    (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
])
def test_bad_options_are_one_line(files, capsys, args, message):
    tmp, clip, analysis_path, checkpoint = files
    if "--checkpoint" not in args:
        args = ["--checkpoint", str(checkpoint), *args]
    code, _, err = _cli(capsys, "render", str(analysis_path), "--dry-run", *args)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


def test_json_events_show_each_tracks_side_and_identity_guard(files, capsys):
    tmp, clip, analysis_path, checkpoint = files
    out = tmp / "json.mp4"
    events, _ = _ok(capsys, "render", str(analysis_path), "--checkpoint", str(checkpoint), "-o", str(out),
                    "--crf", "0", "--preset", "ultrafast", "--identity-guard", "0.05", "--json")
    report = next(e for e in map(json.loads, events.splitlines()) if e["event"] == "render")["report"]
    tracks = {t["identity"]: t for t in report["tracks"]}
    assert set(tracks) == {"Anna", "identity 1"}
    for track in tracks.values():
        assert track["side"] >= 16 and track["faces_checked"] == track["faces"] == 5
        assert 0 <= track["guard_acted"] <= 5 and -1 <= track["similarity_after"] <= 1
