"""The analysis file: round trip, hand edits (rename, merge, drop a reference) and clear validation errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iconface_video.analysis.schema import Analysis, HarvestedReference, load_analysis, save_analysis
from iconface_video.analysis.validation import VERSION, AnalysisFileError
from iconface_video.errors import InputError
from iconface_video.imageio import imwrite
from iconface_video.types import FaceObs, Identity, Reference, ReliabilityTerms, Shot, Track

KPS = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)


def _track(track_id: int, shot: int, frames: range, identity: int) -> Track:
    obs = tuple(FaceObs(f, (10.0 + f, 20.0, 110.0 + f, 120.0), 0.99, KPS + f, None, f % 3 == 1) for f in frames)
    return Track(track_id, shot, obs, identity)


def make_analysis(tmp_path) -> Analysis:
    crop = tmp_path / "refs" / "identity000_ref0.png"
    crop.parent.mkdir(exist_ok=True)
    imwrite(str(crop), np.full((64, 64, 3), 128, np.uint8))
    terms = ReliabilityTerms(0.8, 0.7, 0.9, 1.0, 0.95, 1.0, 0.9, 0.85)
    refs = (
        HarvestedReference(Reference(0, 0, 3, (13.0, 20.0, 113.0, 120.0), tuple(map(tuple, KPS.tolist())), 0.85, terms),
                           crop.resolve(), KPS / 2, np.arange(4, dtype=np.float32)),
        HarvestedReference(Reference(1, 2, 25, (35.0, 20.0, 135.0, 120.0), tuple(map(tuple, KPS.tolist())), 0.6, terms),
                           crop.resolve(), KPS / 2, None),
    )
    return Analysis(
        VERSION,
        {"path": "movie.mp4", "width": 640, "height": 360, "frame_count": 40, "fps": 25.0, "rotation": 0},
        (Shot(0, 0, 19, 0.0, 0.76, "start"), Shot(1, 20, 39, 0.8, 1.56, "cut")),
        (_track(0, 0, range(0, 20), 0), _track(1, 0, range(5, 15), 1), _track(2, 1, range(20, 40), 1)),
        (Identity(0, (0,), np.array([1, 0, 0, 0], np.float32), "Anna"), Identity(1, (1, 2), np.array([0, 1, 0, 0], np.float32))),
        refs,
        {"detect_every": 1, "models": {"detector": "mtcnn"}},
        {0: np.array([1, 0, 0, 0], np.float32)},
        {0: np.linspace(0.1, 0.9, 20).astype(np.float32)},
        face_verified={0: True, 1: False},
    )


def test_round_trip_keeps_everything_the_render_stage_reads(tmp_path):
    original = make_analysis(tmp_path)
    path = tmp_path / "movie.iconface.json"
    save_analysis(original, path)
    loaded = load_analysis(path)
    assert loaded.shots == original.shots
    assert [t.id for t in loaded.tracks] == [0, 1, 2]
    assert [(o.frame_index, o.interpolated) for o in loaded.track(1).obs] == [(o.frame_index, o.interpolated) for o in original.track(1).obs]
    assert np.allclose(loaded.track(2).obs[3].kps5, original.track(2).obs[3].kps5)
    assert loaded.identity(1).tracks == (1, 2) and loaded.identity(0).name == "Anna"
    ref = loaded.references_for(0)[0]
    assert ref.crop_path == (tmp_path / "refs" / "identity000_ref0.png").resolve()
    assert ref.load_crop().shape == (64, 64, 3)
    assert np.allclose(ref.crop_kps5, KPS / 2) and np.allclose(ref.embedding, np.arange(4))
    assert ref.reference.terms == original.references[0].reference.terms
    assert np.allclose(loaded.obs_reliability[0], original.obs_reliability[0], atol=1e-4)
    faces = loaded.faces_at(10)
    assert sorted(t.id for t, _ in faces) == [0, 1] and all(o.frame_index == 10 for _, o in faces)
    assert loaded.faces_at(1000) == []
    assert loaded.shot_of(25).index == 1
    assert loaded.face_verified == {0: True, 1: False}
    text = path.read_text()
    assert text.count("\n") > 40, "one observation per line: readable and diff-friendly"
    assert not list(tmp_path.glob(".*.tmp*")), "no temporary file left behind"


def _edit(tmp_path, change) -> Analysis:
    path = tmp_path / "movie.iconface.json"
    save_analysis(make_analysis(tmp_path), path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return load_analysis(path)


def test_terms_added_later_take_their_default_in_older_files(tmp_path):
    def older(data):
        for ref in data["references"]:
            del ref["terms"]["occlusion"]  # written before the term existed
        del data["references"][1]["terms"]["sharpness"]  # a term every file has: its terms are incomplete

    loaded = _edit(tmp_path, older)
    assert loaded.references_for(0)[0].reference.terms == make_analysis(tmp_path).references[0].reference.terms
    assert loaded.references_for(0)[0].reference.terms.occlusion == 1.0
    assert loaded.references_for(1)[0].reference.terms is None


def test_user_can_rename_merge_and_drop_a_reference(tmp_path):
    def edit(data):
        data["identities"][1]["name"] = "Ben"
        data["references"].pop(1)

    loaded = _edit(tmp_path, edit)
    assert loaded.identity(1).name == "Ben" and loaded.references_for(1) == ()

    def merge(data):
        data["identities"][1]["same_as"] = 0

    merged = _edit(tmp_path, merge)
    assert [i.id for i in merged.identities] == [0]
    assert merged.identity(0).tracks == (0, 1, 2) and merged.identity(0).name == "Anna"
    assert {r.reference.identity for r in merged.references} == {0}
    assert {t.identity for t in merged.tracks} == {0}
    assert merged.face_verified == {0: True}, "a merged identity is a face if either part was confirmed"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tracks"][2].__setitem__("identity", 9), "tracks[2].identity refers to identity 9, which does not exist"),
    (lambda d: d["references"][0].__setitem__("identity", 5), "references[0].identity refers to identity 5, which does not exist"),
    (lambda d: d["tracks"][0].__setitem__("shot", 1), "tracks[0].obs: frames 0..19 leave shot 1 (20..39)"),
    (lambda d: d["tracks"][1]["obs"][0].__setitem__("box", [1, 2, 3]), "tracks[1].obs[0].box: [1, 2, 3] is too short"),
    (lambda d: d.pop("shots"), "(top level): 'shots' is a required property"),
    (lambda d: d["identities"][0].__setitem__("same_as", 1) or d["identities"][1].__setitem__("same_as", 0), "same_as forms a loop"),
    (lambda d: d.__setitem__("version", 99), "version: this file is version 99"),
    # Hand edits the shape check passes (Python's json reads NaN and Infinity): the field's path.
    (lambda d: d["tracks"][1]["obs"][2]["box"].__setitem__(0, float("nan")), "tracks[1].obs[2].box: nan is not a finite number"),
    (lambda d: d["tracks"][0]["obs"][3]["kps5"][1].__setitem__(0, 1e30), "tracks[0].obs[3].kps5: x = 1e+30 lies far outside the 640x360 frame"),
    (lambda d: d["tracks"][2]["obs"][0].__setitem__("score", float("inf")), "tracks[2].obs[0].score: inf is not a finite number"),
    (lambda d: d["references"][0]["crop_kps5"][0].__setitem__(1, float("nan")), "references[0].crop_kps5: nan is not a finite number"),
    (lambda d: d["identities"][0]["centroid"].__setitem__(0, float("nan")), "identities[0].centroid: nan is not a finite number"),
])
def test_problems_are_reported_one_clear_line_each(tmp_path, change, message):
    with pytest.raises(AnalysisFileError) as caught:
        _edit(tmp_path, change)
    lines = str(caught.value).splitlines()
    assert any(message in line for line in lines), lines
    assert "not a valid analysis file" in lines[0]


def test_nan_in_a_file_is_refused_with_the_path(tmp_path):
    """The raw text a user may type: ``NaN`` in a box reaches the loader as a float NaN."""
    path = tmp_path / "movie.iconface.json"
    save_analysis(make_analysis(tmp_path), path)
    text = path.read_text()
    first_box = text.index('"box": [') + len('"box": [')
    path.write_text(text[:first_box] + "NaN" + text[text.index(",", first_box):])
    with pytest.raises(AnalysisFileError, match=r"tracks\[0\]\.obs\[0\]\.box: nan is not a finite number"):
        load_analysis(path)


def test_rejected_tracks_round_trip_and_a_user_can_promote_one(tmp_path):
    from iconface_video.analysis.schema import RejectedTrack

    original = make_analysis(tmp_path)
    blip = RejectedTrack(_track(7, 1, range(30, 34), None), "short: 4 frames")
    analysis = Analysis(original.version, original.video, original.shots, original.tracks, original.identities,
                        original.references, original.settings, {**original.track_embeddings, 7: np.ones(4, np.float32)},
                        original.obs_reliability, original.face_verified, rejected=(blip,))
    path = tmp_path / "movie.iconface.json"
    save_analysis(analysis, path)
    loaded = load_analysis(path)
    assert [t.id for t in loaded.tracks] == [0, 1, 2], "a rejected track is not rendered"
    assert [(r.track.id, r.reason) for r in loaded.rejected] == [(7, "short: 4 frames")]
    assert [t.id for t, _ in loaded.faces_at(31)] == [2]
    data = json.loads(path.read_text())
    data["rejected_tracks"][0]["identity"] = 1  # the user's edit: "this is person 1 after all"
    path.write_text(json.dumps(data))
    promoted = load_analysis(path)
    assert promoted.rejected == () and promoted.track(7).identity == 1
    assert promoted.identity(1).tracks == (1, 2, 7)
    assert [t.id for t, _ in promoted.faces_at(31)] == [2, 7]
    # Files written before rejected tracks existed still load.
    del data["rejected_tracks"]
    path.write_text(json.dumps(data))
    assert load_analysis(path).rejected == ()


def test_several_problems_are_all_listed(tmp_path):
    def two(data):
        data["tracks"][0]["identity"] = 7
        data["tracks"][1]["identity"] = 8

    with pytest.raises(AnalysisFileError) as caught:
        _edit(tmp_path, two)
    text = str(caught.value)
    assert "(2 problems:" in text and "identity 7" in text and "identity 8" in text
    assert "\n" not in text and "iconface-video analyze" in text  # one line that says what to do


def test_not_json_and_missing_file_are_one_line_errors(tmp_path):
    bad = tmp_path / "x.iconface.json"
    bad.write_text("{not json")
    with pytest.raises(AnalysisFileError, match="not valid JSON"):
        load_analysis(bad)
    with pytest.raises(InputError, match="no such analysis file"):
        load_analysis(tmp_path / "missing.json")
