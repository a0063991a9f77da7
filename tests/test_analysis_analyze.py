"""The whole analysis on real footage: the file, the crops, contact sheets, resume, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iconface_video.analysis.settings import AnalyzeSettings, refs_folder
from iconface_video.analysis.video import analyze_video
from iconface_video.analysis.schema import load_analysis
from iconface_video.imageio import imread

HAMILTON = "src/ageitgey__face_recognition/examples/short_hamilton_clip.mp4"
GROUND_TRUTH = json.loads((Path(__file__).parent / "data" / "clips_groundtruth.json").read_text())["clips"]
# Frames 196..231 of the Hamilton clip: the end of the singer's shot and the start of the audience
# shot (cut at 211), with the detector on every 4th frame: short, and it still crosses a cut.
RANGE = dict(start=196, end=232, detect_every=4)


@pytest.fixture(scope="module")
def hamilton(media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "ham.iconface.json"
    analysis = analyze_video(media_dir / HAMILTON, out, AnalyzeSettings(**RANGE, checkpoint_every=0))
    return analysis, out


@pytest.mark.media
def test_shots_tracks_and_cut(hamilton):
    analysis, out = hamilton
    assert [(s.start, s.end, s.transition) for s in analysis.shots] == [(196, 210, "start"), (211, 231, "cut")]
    assert analysis.tracks, "faces were tracked"
    for track in analysis.tracks:
        shot = analysis.shots[track.shot]
        assert shot.start <= track.start and track.end <= shot.end, "no track crosses the cut"
        frames = [o.frame_index for o in track.obs]
        assert frames == list(range(frames[0], frames[-1] + 1)), "every frame filled, interpolated in between"
        assert any(o.interpolated for o in track.obs) and any(not o.interpolated for o in track.obs)
    singer = [t for t in analysis.tracks if t.shot == 0]
    audience = [t for t in analysis.tracks if t.shot == 1]
    assert len(singer) >= 1 and len(audience) >= 3
    assert {t.identity for t in singer}.isdisjoint({t.identity for t in audience}), "the singer is not in the audience"


@pytest.mark.media
def test_references_crops_and_contact_sheets(hamilton):
    analysis, out = hamilton
    assert analysis.references and len(analysis.references) <= 4 * len(analysis.identities)
    for ref in analysis.references:
        crop = ref.load_crop()
        assert crop.ndim == 3 and min(crop.shape[:2]) >= 16
        kps = ref.crop_kps5
        assert np.all(kps >= 0) and np.all(kps[:, 0] < crop.shape[1]) and np.all(kps[:, 1] < crop.shape[0])
        assert kps[1, 0] > kps[0, 0], "upright: left eye left of the right eye"
        assert ref.reference.terms is not None and 0 < ref.reference.reliability <= 1
        assert ref.embedding is not None and ref.embedding.shape == (128,)
        track = analysis.track(ref.reference.track)
        assert track.identity == ref.reference.identity
        assert analysis.face_verified[ref.reference.identity] is True, "a second detector confirmed the face"
    sheets = sorted(refs_folder(out).glob("contact-identity*.png"))
    with_refs = {r.reference.identity for r in analysis.references}
    assert len(sheets) == len(with_refs)
    assert imread(str(sheets[0])) is not None
    reloaded = load_analysis(out)
    assert len(reloaded.tracks) == len(analysis.tracks) and len(reloaded.references) == len(analysis.references)
    assert reloaded.settings["models"]["detector"] and reloaded.settings["models"]["embedder"] == "dlib"
    assert not list(out.parent.glob("*.partial")), "the checkpoint is removed when done"


@pytest.mark.media
def test_interrupted_analysis_resumes_to_the_same_result(media_dir, tmp_path, monkeypatch, hamilton):
    import iconface_video.io.reader as reader

    whole, _ = hamilton
    out = tmp_path / "ham.iconface.json"
    settings = AnalyzeSettings(**RANGE, checkpoint_every=8)
    real_read = reader.read_frames
    decoded: list[int] = []

    def read_then_crash(path, start=None, end=None):
        for frame in real_read(path, start, end):
            decoded.append(frame.index)
            if len(decoded) == 26:
                raise KeyboardInterrupt  # Ctrl-C part-way
            yield frame

    monkeypatch.setattr(reader, "read_frames", read_then_crash)
    with pytest.raises(KeyboardInterrupt):
        analyze_video(media_dir / HAMILTON, out, settings)
    assert (tmp_path / "ham.iconface.json.partial").is_file() and not out.exists()

    def read_and_count(path, start=None, end=None):
        decoded.append(-1 if start is None else -start)  # mark where the second run began
        yield from real_read(path, start, end)

    monkeypatch.setattr(reader, "read_frames", read_and_count)
    resumed = analyze_video(media_dir / HAMILTON, out, settings)
    assert -decoded[-1] > RANGE["start"], "the second run continued from the checkpoint, not from the start"
    assert resumed.shots == whole.shots
    assert [(t.shot, t.start, t.end) for t in resumed.tracks] == [(t.shot, t.start, t.end) for t in whole.tracks]
    for a, b in zip(resumed.tracks, whole.tracks):
        assert np.allclose([o.box for o in a.obs], [o.box for o in b.obs], atol=0.01)
    assert len(resumed.identities) == len(whole.identities)
    assert [r.reference.frame_index for r in resumed.references] == [r.reference.frame_index for r in whole.references]


@pytest.mark.media
def test_command_line_writes_the_file_and_reports_bad_refs(media_dir, tmp_path, capsys):
    from iconface_video.cli import main

    out = tmp_path / "cli.iconface.json"
    with pytest.raises(SystemExit) as bad:
        main(["analyze", str(media_dir / HAMILTON), "-o", str(out), "--refs", "nobody"])
    assert bad.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected NAME=FOLDER" in err[0]
    main(["analyze", str(media_dir / HAMILTON), "-o", str(out), "--start", "0", "--end", "12f", "--detect-every", "4",
          "--json", "--no-contact-sheets"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "done"
    assert load_analysis(out).shots[0].end == 11


@pytest.mark.media
def test_user_photos_name_an_identity_and_become_references(media_dir, tmp_path):
    photos = tmp_path / "lin"
    photos.mkdir()
    source = media_dir / "src/ageitgey__face_recognition/examples/lin-manuel-miranda.png"
    (photos / "lin.png").write_bytes(source.read_bytes())
    out = tmp_path / "named.iconface.json"
    analysis = analyze_video(media_dir / HAMILTON, out, AnalyzeSettings(start=120, end=136, detect_every=4,
                                                                         refs=(("Lin", photos),), checkpoint_every=0))
    named = [i for i in analysis.identities if i.name == "Lin"]
    assert len(named) == 1 and named[0].tracks, "the photo named the singer's identity, which has tracks"
    sources = [r.reference.source for r in analysis.references_for(named[0].id)]
    assert str(photos / "lin.png") in sources and "video" in sources


EXAMPLES = "src/ageitgey__face_recognition/examples"
SINGER = dict(start=120, end=136, detect_every=4, checkpoint_every=0)  # the singer alone, close up


def _photo_folder(media_dir: Path, folder: Path, name: str) -> Path:
    folder.mkdir()
    (folder / name).write_bytes((media_dir / EXAMPLES / name).read_bytes())
    return folder


def _copy_analysis(out: Path, folder: Path) -> Path:
    """A copy of the analysis file at ``out`` and its refs folder in ``folder`` (crop paths are relative)."""
    import shutil

    copy = folder / out.name
    copy.write_bytes(out.read_bytes())
    shutil.copytree(refs_folder(out), refs_folder(copy))
    return copy


@pytest.mark.media
def test_photos_added_later_become_references_as_analyze_refs_makes_them(media_dir, tmp_path):
    from iconface_video.analysis.photos import add_photo_references

    photos = _photo_folder(media_dir, tmp_path / "lin", "lin-manuel-miranda.png")
    with_refs = analyze_video(media_dir / HAMILTON, tmp_path / "named.iconface.json",
                              AnalyzeSettings(**SINGER, refs=(("Lin", photos),)))
    later = tmp_path / "later.iconface.json"
    analyze_video(media_dir / HAMILTON, later, AnalyzeSettings(**SINGER))
    singer = next(i for i in with_refs.identities if i.name == "Lin")

    added = add_photo_references(later, ((str(singer.id), photos),), AnalyzeSettings())

    def described(refs):
        return [(r.reference.frame_index, r.reference.box, r.reference.reliability, r.crop_path.name,
                 r.crop_kps5.tolist(), r.reference.source) for r in refs]

    expected = load_analysis(tmp_path / "named.iconface.json").references_for(singer.id)  # as stored: rounded
    assert any(r.reference.frame_index < 0 for r in expected) and any(r.reference.frame_index >= 0 for r in expected)
    assert described(load_analysis(later).references_for(singer.id)) == described(expected)
    assert [(r.crop_path, r.reference.source) for r in added.references_for(singer.id)] == [
        (refs_folder(later).resolve() / r.crop_path.name, r.reference.source) for r in expected]
    photo = next(r for r in expected if r.reference.frame_index < 0)
    assert (refs_folder(later) / photo.crop_path.name).read_bytes() == photo.crop_path.read_bytes()


@pytest.mark.media
def test_adding_photos_replaces_earlier_ones_and_refuses_an_unknown_name(media_dir, tmp_path, hamilton):
    from iconface_video.analysis.photos import add_photo_references
    from iconface_video.errors import InputError

    before, out = hamilton
    path = _copy_analysis(out, tmp_path)
    target = next(i for i in before.identities if before.references_for(i.id))
    others = [r for r in load_analysis(path).references if r.reference.identity != target.id]
    obama = _photo_folder(media_dir, tmp_path / "obama", "obama-480p.jpg")
    two = _photo_folder(media_dir, tmp_path / "two", "obama-480p.jpg")
    (two / "small.jpg").write_bytes((media_dir / EXAMPLES / "obama_small.jpg").read_bytes())

    add_photo_references(path, ((str(target.id), two),), AnalyzeSettings())
    first = load_analysis(path).references_for(target.id)
    assert sorted(r.reference.source for r in first if r.reference.frame_index < 0) == sorted(
        str(p) for p in two.iterdir())
    assert len(first) <= before.settings["max_refs"]

    again = add_photo_references(path, ((str(target.id), obama),), AnalyzeSettings())
    reloaded = load_analysis(path)
    refs = reloaded.references_for(target.id)
    photos = [r for r in refs if r.reference.frame_index < 0]
    assert [r.reference.source for r in photos] == [str(obama / "obama-480p.jpg")], "the earlier photos are replaced"
    assert photos[0].crop_path.name == f"identity{target.id:03d}_photo0.png" and photos[0].load_crop().shape[0] > 100
    assert 0 < photos[0].reference.reliability <= 1 and photos[0].embedding.shape == (128,)
    assert not (refs_folder(path) / f"identity{target.id:03d}_photo1.png").exists(), "the replaced crop is gone"
    video = [r.reference.frame_index for r in refs if r.reference.frame_index >= 0]
    assert video == [r.reference.frame_index for r in before.references_for(target.id)][: len(video)]
    kept = [r for r in reloaded.references if r.reference.identity != target.id]
    assert [(r.reference, r.crop_path) for r in kept] == [(r.reference, r.crop_path) for r in others]
    assert len(again.references) == len(reloaded.references)

    unchanged = path.read_bytes()
    with pytest.raises(InputError) as error:
        add_photo_references(path, (("Nobody", obama),), AnalyzeSettings())
    assert "no identity named 'Nobody'" in str(error.value) and "known:" in str(error.value)
    assert "\n" not in str(error.value) and path.read_bytes() == unchanged


def test_settings_read_back_from_a_file_are_the_settings_it_was_made_with():
    from iconface_video.analysis.harvest import HarvestSettings
    from iconface_video.analysis.settings import settings_from_json, settings_json

    made = AnalyzeSettings(detect_every=3, max_refs=2, models_dir=Path("/models"), refs=(("Anna", Path("/photos/anna")),),
                           end=90, harvest=HarvestSettings(min_gap_s=1.5, weights=(("sharpness", 1.0), ("size", 3.0))))
    stored = json.loads(json.dumps(settings_json(made, "mtcnn", "dlib", 128)))
    assert settings_from_json(stored) == made
    del stored["max_refs"], stored["harvest"]["min_gap_s"]  # a file written before a setting existed
    assert settings_from_json(stored) == AnalyzeSettings(
        detect_every=3, models_dir=Path("/models"), refs=(("Anna", Path("/photos/anna")),), end=90,
        harvest=HarvestSettings(weights=(("sharpness", 1.0), ("size", 3.0))))
