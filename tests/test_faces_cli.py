"""``iconface-video faces``: prints what the detector and embedder see, saves an annotated PNG,
and gives one clear line for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import cli_exit_code

from iconface_video.imageio import imread, imwrite


@pytest.mark.media
def test_faces_json_embed_and_save(media_dir, tmp_path, capsys):
    photo = media_dir / "src/ageitgey__face_recognition/examples/two_people.jpg"
    saved = tmp_path / "annotated.png"
    assert cli_exit_code(["faces", str(photo), "--json", "--embed", "--detector", "mtcnn", "--save", str(saved)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["detector"] == "mtcnn" and report["embedder"] == "dlib"
    assert report["size"] == [1126, 661]
    assert len(report["faces"]) == 2
    for face in report["faces"]:
        assert len(face["kps5"]) == 5 and face["score"] > 0.9
        assert len(face["embedding"]) == 128
        assert face["embedding_norm"] == pytest.approx(np.linalg.norm(face["embedding"]), rel=1e-3)
    drawn = imread(saved)
    assert drawn.shape == (661, 1126, 3)
    assert not np.array_equal(drawn, imread(photo))  # something was drawn
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.media
def test_faces_on_a_video_frame_prints_a_table(media_dir, capsys):
    video = media_dir / "src/jnjaby__KEEP/assets/examples/synthetic_1.mp4"
    assert cli_exit_code(["faces", str(video), "--frame", "5"]) == 0
    out = capsys.readouterr().out
    assert "frame 5: 128x128" in out and "face 0:" in out and "norm" in out
    assert cli_exit_code(["faces", str(video), "--frame", "100000"]) == 2
    assert "has no frame 100000" in capsys.readouterr().err


def test_image_without_faces_says_so(tmp_path, capsys):
    blank = tmp_path / "wall.png"
    imwrite(blank, np.full((200, 300, 3), 90, np.uint8))
    assert cli_exit_code(["faces", str(blank), "--detector", "mtcnn"]) == 0
    assert "no faces found" in capsys.readouterr().out
    assert cli_exit_code(["faces", str(blank), "--json", "--detector", "mtcnn"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"] == []


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    not_media = tmp_path / "notes.txt"
    not_media.write_text("hello")
    assert cli_exit_code(["faces", str(not_media)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iconface-video: error:") and "not a readable image or video" in err and "\n" not in err
    fake_png = tmp_path / "broken.png"
    fake_png.write_bytes(b"\x89PNG not really")
    assert cli_exit_code(["faces", str(fake_png)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert cli_exit_code(["faces", str(tmp_path / "missing.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    blank = tmp_path / "wall.png"
    imwrite(blank, np.full((50, 50, 3), 90, np.uint8))
    assert cli_exit_code(["faces", str(blank), "--save", str(tmp_path / "no" / "dir" / "x.png")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
