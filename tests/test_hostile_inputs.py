"""Bad, odd and hostile inputs for every command, as a new user with bad intentions would try.

Each case runs the real entry point (``iconface_video.cli.main``, in-process: the same error
handling as the installed command) and checks the promises every command makes:

- a refusal is one line on stderr (``iconface-video: error: ...``), a non-zero exit, no
  traceback and no "internal error", and it says what to do;
- every file in the test's folder is byte-identical afterwards (inputs are never modified) and
  nothing is created there (no output, work folder, analysis, lock or temporary file);
- cases that should work, work.

Most cases are refused before any model loads, so the whole file runs in a couple of minutes;
the few that run a whole job use the bundled 90-frame sample or clips of a few frames.
Subprocesses are used only where the exit code of a crash (a segfault) or a second process
(the output lock) is the point.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from clipgen import (
    ClipSpec,
    frame_times,
    make_audio_only,
    make_clip,
    make_text_as_mp4,
    make_truncated,
    make_zero_frames,
)

from iconface_video.imageio import imwrite

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "sample.mp4"
# Words with which a message tells the user what to do next.
ADVICE = ("use ", "give ", "choose ", "pass ", "rerun", "fix ", "check ", "free ", "repair", "wait ", "create ",
          "see ", "try ", "analyse ", "delete ", "put ", "run ", "name ", "restore ", "leave ", "drop ", "shows ",
          "must ", "expected ", "e.g.", "known", "make one", "fetch ")


# --- helpers --------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too): its content hash, or its kind."""
    state = {}
    for path in sorted(folder.rglob("*")):
        name = os.fsdecode(path.relative_to(folder))
        if path.is_symlink():
            state[name] = "link"
        elif path.is_dir():
            state[name] = "dir"
        elif path.is_file():
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[name] = "special"  # a FIFO: never opened
    return state


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("iconface-video: error: "), line
    assert "Traceback" not in err and "internal error" not in err, err
    assert any(word in line for word in ADVICE), f"does not say what to do: {line}"
    return line


def refused(args, folder: Path, capsys, *needles: str) -> str:
    """Run ``args``; assert a clean one-line refusal mentioning ``needles`` that touched nothing."""
    before = snapshot(folder)
    code, _, err = run_cli(args, capsys)
    assert code != 0, err
    line = one_line_error(err)
    for needle in needles:
        assert needle in line, line
    assert snapshot(folder) == before, f"files changed or left behind by: {line}"
    return line


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "sample.mp4"
    shutil.copyfile(SAMPLE, path)
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_clip(tmp_path / "clip.mp4", ClipSpec(frames=6, width=64, height=48))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    assert imwrite(path, np.full((64, 64, 3), 120, np.uint8))
    return path


@pytest.fixture
def people(tmp_path) -> Path:
    """An evaluation folder: two people with three tiny photos each."""
    root = tmp_path / "people"
    rng = np.random.default_rng(0)
    for person in ("ann", "bob"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            assert imwrite(root / person / f"{i:03d}.png", rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    """A real analysis file (made by ``analyze``) of a 6-frame clip like the ``clip`` fixture's."""
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video

    folder = tmp_path_factory.mktemp("analysed")
    video = make_clip(folder / "clip.mp4", ClipSpec(frames=6, width=64, height=48))
    output = folder / "clip.iconface.json"
    analyze_video(video, output, AnalyzeSettings(detector="mtcnn", contact_sheets=False))
    return output


def analysis_for(folder: Path, video: Path, analysed: Path) -> Path:
    """A copy of the ``analysed`` file in ``folder``, naming ``video`` (same size and length)."""
    data = json.loads(analysed.read_text())
    data["video"]["path"] = video.name
    path = folder / "a.iconface.json"
    path.write_text(json.dumps(data))
    return path


# --- the main command: outputs refused before any work (issue item 5) ----------------------------

@pytest.mark.parametrize("name, needle", [
    ("out.wav", "not a video container"),
    ("out.mp3", "not a video container"),
    ("out.txt", "not a video container"),
    ("outnoext", "without an extension"),
    ("x.iconface.json", "not a video container"),
    ("x.report.html", "not a video container"),
    ("out.png", "not a video container"),
])
def test_run_output_not_a_video_container(tmp_path, capsys, sample, name, needle):
    refused([sample, "-o", tmp_path / name], tmp_path, capsys, needle)


@pytest.mark.parametrize("extra, name, needle", [
    (["--codec", "libx264"], "out.webm", "cannot hold libx264"),
    (["--codec", "libvpx-vp9"], "out.mov", "cannot hold libvpx-vp9"),
    (["--codec", "libx265"], "out.avi", "cannot hold libx265"),
    (["--pix-fmt", "rgb48be"], "out.mp4", "cannot encode pixel format"),
    (["--preset", "warp9"], "out.mp4", "has no preset"),
    (["--codec", "h264"], "out.mp4", "Invalid value for '--codec'"),
    (["--crf", "99"], "out.mp4", "--crf"),
    (["--strength", "2"], "out.mp4", "--strength"),
    (["--identity-guard", "-1"], "out.mp4", "--identity-guard"),
    (["--segment-frames", "0"], "out.mp4", "--segment-frames"),
    (["--refs", "no-equals-sign"], "out.mp4", "NAME=FOLDER"),
    (["--start", "soon"], "out.mp4", "--start"),
    (["--start", "2", "--end", "1"], "out.mp4", "must come after"),
    (["--device", "quantum"], "out.mp4", "--device"),
    (["--precision", "fp8"], "out.mp4", "--precision"),
])
def test_run_bad_options_refused_before_work(tmp_path, capsys, sample, extra, name, needle):
    refused([sample, "-o", tmp_path / name, *extra], tmp_path, capsys, needle)


def test_run_end_time_with_99_minutes_is_refused(tmp_path, capsys, clip):
    refused([clip, "--end", "1:99:99"], tmp_path, capsys, "--end")


def test_run_still_image_input_refused(tmp_path, capsys, photo):
    """Default output would be ``photo.restored.png``; with -o, a 1-frame video without a word."""
    refused([photo], tmp_path, capsys, "still image")
    refused([photo, "-o", tmp_path / "photo.mp4"], tmp_path, capsys, "still image")


def test_run_output_is_input_or_existing(tmp_path, capsys, sample):
    refused([sample, "-o", sample, "--overwrite"], tmp_path, capsys, "is the input")
    link = tmp_path / "link.mp4"
    link.symlink_to(sample)
    refused([sample, "-o", link, "--overwrite"], tmp_path, capsys, "is the input")
    (tmp_path / "old.mp4").write_bytes(b"yesterday")
    refused([sample, "-o", tmp_path / "old.mp4"], tmp_path, capsys, "--overwrite")
    (tmp_path / "dir.mp4").mkdir()
    refused([sample, "-o", tmp_path / "dir.mp4", "--overwrite"], tmp_path, capsys, "is a folder")
    refused([sample, "-o", tmp_path / "missing" / "o.mp4"], tmp_path, capsys, "does not exist")


def test_run_output_name_too_long_for_derived_files(tmp_path, capsys):
    """A 229-character input name: its work folder's name would pass 255 bytes (ENAMETOOLONG)."""
    long_input = tmp_path / ("x" * 225 + ".mp4")
    shutil.copyfile(SAMPLE, long_input)
    refused([long_input], tmp_path, capsys, "shorter name")


def test_run_options_before_the_input_and_double_dash(tmp_path, capsys, sample):
    # Parsed as the main command's options (the refusal is about the output, not "No such option").
    refused(["-o", tmp_path / "o.wav", sample], tmp_path, capsys, "not a video container")
    odd = tmp_path / "-odd.mp4"
    shutil.copyfile(SAMPLE, odd)
    refused(["-o", tmp_path / "o.txt", "--", odd], tmp_path, capsys, "not a video container")
    refused(["--", tmp_path / "-missing.mp4"], tmp_path, capsys, "no such file")


def test_run_output_hard_link_to_input_and_device(tmp_path, capsys, sample):
    os.link(sample, tmp_path / "same.mp4")
    refused([sample, "-o", tmp_path / "same.mp4", "--overwrite"], tmp_path, capsys, "is the input")
    refused([sample, "-o", "/dev/null", "--overwrite"], tmp_path, capsys, "not a regular file")


def test_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path, capsys, sample):
    refused([sample, "-o", tmp_path / "two\nlines.wav"], tmp_path, capsys, "two\\nlines.wav")
    refused([tmp_path / "no\nsuch.mp4"], tmp_path, capsys, "no such file")


def test_png_renamed_to_mp4_is_still_a_still_image(tmp_path, capsys, photo):
    disguised = tmp_path / "holiday.mp4"
    shutil.copyfile(photo, disguised)
    refused([disguised], tmp_path, capsys, "still image")


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.safetensors", "missing.safetensors"),
    (lambda d: _written(d / "junk.safetensors", "not weights at all"), "junk.safetensors"),
])
def test_run_bad_checkpoint_fails_before_analysis(tmp_path, capsys, clip, make, needle):
    refused([clip, "-o", tmp_path / "o.mp4", "--checkpoint", make(tmp_path)], tmp_path, capsys, needle)


def test_run_refs_that_are_not_photo_folders(tmp_path, capsys, clip):
    refused([clip, "-o", tmp_path / "o.mp4", "--refs", "Ann=/dev/zero"], tmp_path, capsys, "Ann=/dev/zero")
    refused([clip, "-o", tmp_path / "o.mp4", "--refs", f"Ann={tmp_path / 'none'}"], tmp_path, capsys, "none")


# --- the main command: bad inputs -----------------------------------------------------------------

def _fifo(folder: Path) -> Path:
    path = folder / "pipe.mp4"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make, needle", [
    (lambda d: Path("/dev/zero"), "not a regular file"),
    (_fifo, "not a regular file"),
    (lambda d: d, "is a folder"),
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: _written(d / "empty.mp4", ""), "empty"),
    (lambda d: make_text_as_mp4(d / "text.mp4"), "not a readable video"),
    (lambda d: make_audio_only(d / "song.m4a"), "no video stream"),
    (lambda d: make_zero_frames(d / "zero.mp4"), "zero-frame"),
    (lambda d: make_truncated(d / "cut.mkv", make_clip(d / "full.mkv", ClipSpec(frames=30))), "truncated"),
])
def test_run_unusable_inputs(tmp_path, capsys, make, needle):
    source = make(tmp_path)
    refused([source, "-o", tmp_path / "out.mp4"], tmp_path, capsys, needle)


def test_unreadable_input(tmp_path, capsys, sample):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    sample.chmod(0)
    refused([sample], tmp_path, capsys, "not readable")


# --- render ----------------------------------------------------------------------------------------

def test_render_refuses_its_own_analysis_file_as_output(tmp_path, capsys, clip, analysed):
    analysis = analysis_for(tmp_path, clip, analysed)
    refused(["render", analysis, "-o", analysis, "--overwrite"], tmp_path, capsys, "not a video container")


@pytest.mark.parametrize("name, needle", [("out.txt", "not a video container"), ("noext", "without an extension"),
                                          ("x.iconface.json", "not a video container")])
def test_render_bad_output(tmp_path, capsys, clip, name, needle, analysed):
    analysis = analysis_for(tmp_path, clip, analysed)
    refused(["render", analysis, "-o", tmp_path / name], tmp_path, capsys, needle)


def test_render_output_is_the_video(tmp_path, capsys, clip, analysed):
    analysis = analysis_for(tmp_path, clip, analysed)
    refused(["render", analysis, "-o", clip, "--overwrite"], tmp_path, capsys, "is the input")


@pytest.mark.parametrize("content, needle", [
    (b"", "analysis"),
    (b"{not json", "analysis"),
    (b"[1, 2, 3]", "analysis"),
    (b"\xff\xfe\x00garbage", "analysis"),
])
def test_render_broken_analysis_files(tmp_path, capsys, clip, content, needle):
    path = tmp_path / "broken.iconface.json"
    path.write_bytes(content)
    line = refused(["render", path, "-i", clip, "-o", tmp_path / "o.mp4"], tmp_path, capsys)
    assert "broken.iconface.json" in line


def test_render_missing_analysis_and_missing_video(tmp_path, capsys, clip, analysed):
    refused(["render", tmp_path / "nope.iconface.json"], tmp_path, capsys, "nope.iconface.json")
    analysis = analysis_for(tmp_path, clip, analysed)
    clip.rename(tmp_path / "moved.mp4")
    refused(["render", analysis], tmp_path, capsys, "not there")


def test_render_video_that_does_not_match_the_analysis(tmp_path, capsys, clip, analysed):
    analysis = analysis_for(tmp_path, clip, analysed)
    other = make_clip(tmp_path / "other.mp4", ClipSpec(frames=9, width=64, height=48))
    refused(["render", analysis, "-i", other, "-o", tmp_path / "o.mp4"], tmp_path, capsys, "analyse this video first")


# --- analyze ---------------------------------------------------------------------------------------

def test_analyze_refuses_to_overwrite_and_non_json(tmp_path, capsys, clip):
    existing = tmp_path / "notes.json"
    existing.write_text("mine")
    refused(["analyze", clip, "-o", existing], tmp_path, capsys, "--overwrite")
    refused(["analyze", clip, "-o", tmp_path / "a.mp4"], tmp_path, capsys, ".json")
    refused(["analyze", clip, "-o", clip, "--overwrite"], tmp_path, capsys)


@pytest.mark.parametrize("extra, needle", [
    (["--end", "1:99:99"], "--end"),
    (["--end", "later"], "--end"),
    (["--start", "2", "--end", "1"], "must come after"),
    (["--refs", "nobody"], "NAME=FOLDER"),
    (["--detect-every", "0"], "--detect-every"),
    (["--rotation", "45"], "--rotation"),
])
def test_analyze_bad_options(tmp_path, capsys, clip, extra, needle):
    refused(["analyze", clip, *extra], tmp_path, capsys, needle)


def test_analyze_still_image_and_devices(tmp_path, capsys, photo):
    refused(["analyze", photo], tmp_path, capsys, "still image")
    refused(["analyze", "/dev/zero", "-o", tmp_path / "z.iconface.json"], tmp_path, capsys, "not a regular file")
    refused(["analyze", _fifo(tmp_path), "-o", tmp_path / "p.iconface.json"], tmp_path, capsys, "not a regular file")


def test_analyze_name_too_long(tmp_path, capsys):
    long_input = tmp_path / ("y" * 229 + ".mp4")
    make_clip(long_input, ClipSpec(frames=4))
    refused(["analyze", long_input], tmp_path, capsys, "shorter name")


def test_analyze_takes_the_same_positions_as_run(tmp_path, capsys, clip):
    """``--end`` in frames (``4f``) or seconds (``0.12`` = 3 frames at 25 fps), as run and render take."""
    from iconface_video.analysis.schema import load_analysis

    for end, frames in (("4f", 4), ("0.12", 3)):
        out = tmp_path / f"a{frames}.iconface.json"
        code, _, err = run_cli(["analyze", clip, "-o", out, "--end", end, "--detector", "mtcnn",
                                "--no-contact-sheets"], capsys)
        assert code == 0, err
        assert load_analysis(out).video["analysed_frames"] == {"start": 0, "end": frames}


# --- faces (issue item 2) --------------------------------------------------------------------------

def test_faces_save_never_overwrites_the_input(tmp_path, capsys, sample, photo):
    refused(["faces", sample, "--save", sample], tmp_path, capsys, ".png")
    refused(["faces", photo, "--save", photo], tmp_path, capsys, "is the input")
    refused(["faces", photo, "--save", photo, "--overwrite"], tmp_path, capsys, "is the input")


def test_faces_save_existing_folder_and_format(tmp_path, capsys, photo):
    (tmp_path / "old.png").write_bytes(b"keep")
    refused(["faces", photo, "--save", tmp_path / "old.png"], tmp_path, capsys, "--overwrite")
    (tmp_path / "dir.png").mkdir()
    refused(["faces", photo, "--save", tmp_path / "dir.png", "--overwrite"], tmp_path, capsys, "is a folder")
    refused(["faces", photo, "--save", tmp_path / "x.jpg"], tmp_path, capsys, ".png")
    refused(["faces", photo, "--save", tmp_path / "no" / "x.png"], tmp_path, capsys, "does not exist")


@pytest.mark.parametrize("make, needle", [
    (lambda d: Path("/dev/zero"), "not a regular file"),
    (_fifo, "not a regular file"),
    (lambda d: d / "gone.png", "no such file"),
    (lambda d: _written(d / "fake.png", "\x89PNG no"), "not a readable image"),
])
def test_faces_bad_sources(tmp_path, capsys, make, needle):
    refused(["faces", make(tmp_path)], tmp_path, capsys, needle)


def test_faces_frame_past_the_end(tmp_path, capsys, clip):
    refused(["faces", clip, "--frame", "1000"], tmp_path, capsys, "smaller --frame")


def test_faces_save_writes_a_normal_png_with_normal_permissions(tmp_path, capsys, photo):
    target = tmp_path / "drawn.png"
    code, _, err = run_cli(["faces", photo, "--save", target, "--detector", "mtcnn"], capsys)
    assert code == 0, err
    assert target.read_bytes().startswith(b"\x89PNG")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn.png", "photo.png"]


def test_faces_on_non_utf8_names(tmp_path, capsys):
    """OpenCV crashes on a path that is not UTF-8; images go through bytes in memory instead."""
    folder = os.fsencode(tmp_path)
    source = os.path.join(folder, b"ph\xffoto.png")
    assert imwrite(source, np.full((64, 64, 3), 90, np.uint8))
    target = os.path.join(folder, b"dr\xffawn.png")
    code, _, err = run_cli(["faces", os.fsdecode(source), "--save", os.fsdecode(target), "--detector", "mtcnn"], capsys)
    assert code == 0, err
    assert Path(os.fsdecode(target)).read_bytes().startswith(b"\x89PNG")


# --- probe -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, needle", [
    (lambda d: Path("/dev/zero"), "not a regular file"),
    (_fifo, "not a regular file"),
    (lambda d: make_text_as_mp4(d / "t.mp4"), "not a readable video"),
    (lambda d: d / "none.mp4", "no such file"),
])
def test_probe_bad_inputs(tmp_path, capsys, make, needle):
    refused(["probe", make(tmp_path)], tmp_path, capsys, needle)


def test_probe_non_utf8_name(tmp_path, capsys):
    path = os.path.join(os.fsencode(tmp_path), b"v\xff.mp4")
    shutil.copyfile(SAMPLE, path)
    code, out, err = run_cli(["probe", "--json", os.fsdecode(path)], capsys)
    assert code == 0, err
    assert json.loads(out)["streams"][0]["type"] == "video"


# --- eval (issue item 3) -----------------------------------------------------------------------

def test_eval_json_never_overwrites_an_evaluation_photo(tmp_path, capsys, people):
    photo = people / "ann" / "000.png"
    refused(["eval", "--data", people, "--no-model", "--json", photo], tmp_path, capsys, ".json")
    (people / "ann" / "notes.json").write_text("{}")
    refused(["eval", "--data", people, "--no-model", "--json", people / "ann" / "notes.json", "--overwrite"],
            tmp_path, capsys, "input of this evaluation")
    refused(["eval", "--data", people, "--no-model", "--json", tmp_path / "e.json", "--grid", photo, "--overwrite"],
            tmp_path, capsys, "input of this evaluation")


def test_eval_outputs_exist_or_collide(tmp_path, capsys, people):
    (tmp_path / "e.json").write_text("old")
    refused(["eval", "--data", people, "--no-model", "--json", tmp_path / "e.json"], tmp_path, capsys, "--overwrite")
    refused(["eval", "--data", people, "--no-model", "--json", tmp_path / "n.json", "--grid", tmp_path / "g.jpg"],
            tmp_path, capsys, ".png")
    refused(["eval", "--data", tmp_path / "nobody", "--no-model", "--json", tmp_path / "n.json"], tmp_path, capsys,
            "does not exist")
    refused(["eval", "--data", people, "--no-model", "--json", tmp_path / "n.json", "--buckets", "foggy"],
            tmp_path, capsys, "unknown bucket")


# --- train --config (issue item 9) -----------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("steps: 10\nlr: [1, 2\nbatch: 3\n", "bad.yaml:3:"),
    ("steps: 10\n\tlr: 1\n", "bad.yaml:2:"),
    ("- steps\n- lr\n", "mapping"),
    ("evil: !!python/object/apply:os.system ['echo pwned']\n", "bad.yaml:1:"),
])
def test_train_config_errors_name_file_line_and_column(tmp_path, capsys, people, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    refused(["train", "--config", config, "--data", people, "--out", tmp_path / "run"], tmp_path, capsys, needle)


def test_train_config_missing(tmp_path, capsys, people):
    refused(["train", "--config", tmp_path / "none.yaml", "--data", people, "--out", tmp_path / "run"],
            tmp_path, capsys, "none.yaml")


@pytest.mark.parametrize("name, text, needle", [
    ("c.yaml", "a: [1,\n", "c.yaml:2:"),
    ("c.json", '{"a": 1,\n "b": }', "c.json:2:7"),
    ("c.json", "[1]", "mapping"),
    ("c.yaml", "a: !!python/name:os.system\n", "c.yaml:1:"),
])
def test_read_config_file_one_line_errors(tmp_path, name, text, needle):
    from iconface_video.config_files import read_config_file
    from iconface_video.errors import UserError

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError) as error:
        read_config_file(path)
    assert needle in str(error.value) and "\n" not in str(error.value)
    assert read_config_file(_written(tmp_path / "ok.yaml", "steps: 3\n")) == {"steps": 3}
    assert read_config_file(_written(tmp_path / "empty.yaml", "")) == {}


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- models, batch, the command line itself --------------------------------------------------------

def test_models_unknown_names(tmp_path, capsys):
    refused(["models", "fetch", "no-such-model", "--models-dir", tmp_path], tmp_path, capsys, "no-such-model")
    refused(["models", "verify", "no-such-model", "--models-dir", tmp_path], tmp_path, capsys, "no-such-model")


def test_batch_bad_invocations(tmp_path, capsys, clip):
    refused(["batch", str(tmp_path / "nothing-*.mp4"), "-o", tmp_path / "out"], tmp_path, capsys)
    refused(["batch", clip, "-o", clip], tmp_path, capsys)
    refused(["batch", clip, "-o", tmp_path / "out", "--workers", "2", "--devices", "0"], tmp_path, capsys, "not both")


@pytest.mark.parametrize("args, needle", [
    (["--bogus"], "No such option"),
    (["probe"], "Missing argument"),
    (["render"], "Missing argument"),
    (["eval", "--data", "."], "Missing option"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, args, needle):
    refused(args, tmp_path, capsys, needle)


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv422p"])
def test_chroma_format_is_kept(tmp_path, pix_fmt):
    """4:4:4 and 4:2:2 sources were written 4:2:0, halving their colour resolution."""
    from iconface_video.io.probe import probe
    from iconface_video.io.encoding import EncodeSettings
    from iconface_video.job import JobSettings, run_job

    source = make_clip(tmp_path / "c.mkv", ClipSpec(frames=4, pix_fmt=pix_fmt))
    run_job(source, tmp_path / "o.mkv", JobSettings(encode=EncodeSettings(preset="ultrafast")))
    assert probe(tmp_path / "o.mkv").video.pix_fmt == pix_fmt


def test_no_arguments_shows_the_help(capsys):
    code, out, err = run_cli([], capsys)
    assert "Commands:" in out + err and "Traceback" not in err


# --- whole jobs: the cases that need a run --------------------------------------------------------

def _run_subprocess(args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "iconface_video", *args], cwd=cwd, capture_output=True,
                          timeout=timeout, env=env)


def test_non_utf8_file_name_runs_end_to_end(tmp_path):
    """Issue item 1: exit 139 (OpenCV segfault) and refs folders left behind. A subprocess, so a
    crash fails the test instead of killing the test run."""
    name = b"bad\xff.mp4"
    folder = os.fsencode(tmp_path)
    shutil.copyfile(SAMPLE, os.path.join(folder, name))
    before = snapshot(tmp_path)
    # The face is found, and its reference crops written, within the first 12 frames.
    done = _run_subprocess([name, "-q", "--preset", "ultrafast", "--end", "12f"], tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    names = sorted(os.listdir(folder))
    assert names == sorted([name, b"bad\xff.restored.mp4", b"bad\xff.restored.iconface.json",
                            b"bad\xff.restored.iconface.refs", b"bad\xff.restored.report.html"]), names
    assert os.listdir(os.path.join(folder, b"bad\xff.restored.iconface.refs"))
    analysis = json.loads(Path(os.fsdecode(os.path.join(folder, b"bad\xff.restored.iconface.json"))).read_text())
    assert os.fsencode(analysis["video"]["path"]).endswith(name)
    after = snapshot(tmp_path)
    assert after[os.fsdecode(name)] == before[os.fsdecode(name)]


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from iconface_video.job import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_second_run_on_the_same_output_stops_at_once(tmp_path, capsys, clip, analysed):
    """Issue item 4: the second writer of an output says so in one line and touches nothing."""
    output = tmp_path / "out.mp4"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused([clip, "-o", output], tmp_path, capsys, "another run", "wait")
        refused(["render", analysis_for(tmp_path, clip, analysed), "-o", output], tmp_path, capsys, "another run")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A run killed with -9 leaves its lock; the next run breaks it (its holder is gone) and works.
    from iconface_video.job import JobSettings, run_job
    from iconface_video.io.encoding import EncodeSettings

    result = run_job(clip, output, JobSettings(encode=EncodeSettings(preset="ultrafast")))
    assert result.frames == 6 and output.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.iconface.json", "clip.mp4", "out.mp4"]


def _damage(video: Path) -> Path:
    """4 KB of random bytes at half the file (frames 41, 43 and 48 of the sample stop decoding)."""
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    video.write_bytes(bytes(data))
    return video


def test_damage_outside_the_changed_range_does_not_stop_a_job(tmp_path, sample):
    from iconface_video.errors import InputError
    from iconface_video.io.encoding import EncodeSettings
    from iconface_video.job import JobSettings, run_job

    damaged = _damage(sample)
    encode = EncodeSettings(preset="ultrafast", segment_frames=30)
    with pytest.raises(InputError, match=r"stops decoding at frame 41 .*--end 41f"):
        run_job(damaged, tmp_path / "whole.mp4", JobSettings(encode=encode, changed_range=(0, 90)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.mp4"]  # no segments no rerun could finish
    result = run_job(damaged, tmp_path / "first.mp4", JobSettings(encode=encode, changed_range=(0, 25)))
    assert result.frames == 90 and any("damaged frame" in w for w in result.warnings)
    assert len(frame_times(tmp_path / "first.mp4")) == 90


def test_damage_mid_file_says_where_and_leaves_nothing(tmp_path, capsys, sample):
    """Issue item 6: the analysis stops at the damaged frame with a hint, leaving nothing behind."""
    _damage(sample)
    before = snapshot(tmp_path)
    code, _, err = run_cli([sample, "-q"], capsys)
    assert code != 0
    line = one_line_error(err)
    assert "frame" in line and "--end" in line
    assert snapshot(tmp_path) == before


def test_damage_after_the_restored_range_does_not_matter(tmp_path, capsys, sample):
    """Issue item 6: with --end before the damage the job finishes, and says what it concealed."""
    _damage(sample)
    code, _, err = run_cli([sample, "--end", "1", "--preset", "ultrafast", "--no-html", "--json"], capsys)
    assert code == 0, err
    assert len(frame_times(tmp_path / "sample.restored.mp4")) == 90


def test_disk_full_is_one_line_and_leaves_no_empty_files(tmp_path, capsys, clip):
    """Issue item 7, on a real full file system (a 1 MB tmpfs; skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here")
    try:
        filler = mount / "filler"
        with open(filler, "wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
            except OSError as error:
                assert error.errno == errno.ENOSPC
        before = snapshot(mount)
        code, _, err = run_cli([clip, "-o", mount / "out.mp4", "-q"], capsys)
        assert code != 0
        line = one_line_error(err)
        assert "full" in line or "space" in line
        assert snapshot(mount) == before
    finally:
        subprocess.run(["umount", str(mount)], check=False)
