"""Reference photos: the ``--refs`` parser, the photo listing and the main-face rule."""

from __future__ import annotations

import numpy as np
import pytest

from iconface_video.errors import InputError, UserError
from iconface_video.faces.photos import IMAGE_SUFFIXES, main_face, parse_ref_spec, photo_files
from iconface_video.types import FaceObs


def _face(box: tuple[float, float, float, float], score: float = 0.9, eyes: float = 10.0) -> FaceObs:
    kps = np.array([[0, 0], [eyes, 0], [5, 5], [1, 9], [9, 9]], np.float32)
    return FaceObs(0, box, score, kps)


def test_main_face_is_the_largest_box_not_the_best_score_or_widest_eyes():
    small_sharp = _face((0, 0, 40, 40), score=0.99, eyes=30.0)
    large = _face((100, 100, 180, 190), score=0.7, eyes=12.0)  # 80 x 90
    assert main_face([small_sharp, large]) is large
    assert main_face([]) is None


def test_main_face_keeps_the_first_of_equal_boxes():
    first, second = _face((0, 0, 50, 60)), _face((200, 0, 260, 50))  # both 3000 px^2
    assert main_face([first, second]) is first
    assert main_face([second, first]) is second


def test_photo_files_lists_only_image_files_sorted(tmp_path):
    for name in ("b.JPG", "a.png", "c.tiff", "notes.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a folder is not a photo, whatever its name
    assert [p.name for p in photo_files(tmp_path)] == ["a.png", "b.JPG", "c.tiff", "d.webp"]
    assert {".jpg", ".png", ".tif"} <= set(IMAGE_SUFFIXES)


def test_parse_ref_spec_accepts_a_folder_of_photos(tmp_path):
    (tmp_path / "anna").mkdir()
    (tmp_path / "anna" / "1.jpg").write_bytes(b"x")
    assert parse_ref_spec(f" Anna = {tmp_path / 'anna'} ") == ("Anna", tmp_path / "anna")


@pytest.mark.parametrize("spec, message", [
    ("Anna", "expected NAME=FOLDER"),
    ("=photos", "expected NAME=FOLDER"),
    ("Anna=", "expected NAME=FOLDER"),
    ("Anna={missing}", "is not a folder"),
    ("Anna={empty}", "holds no photos"),
])
def test_parse_ref_spec_refuses_with_one_line(tmp_path, spec, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photo here")
    spec = spec.format(missing=tmp_path / "missing", empty=tmp_path / "empty")
    with pytest.raises(InputError, match=message) as caught:
        parse_ref_spec(spec)
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
