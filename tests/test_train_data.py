"""Identity sets, the identity-disjoint split and the reference sampler (never the target)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from train_fixtures import make_identity_folder

from iconface_video.errors import UserError
from iconface_video.train import degrade as D
from iconface_video.train.data import (
    FaceSampler,
    RefSchedule,
    load_features,
    pick_references,
    save_features,
    scan_identities,
    split_identities,
)


def test_pick_references_never_returns_the_target():
    for n in (2, 3, 7, 40):
        for target in range(n):
            for k in (1, 4, 10):
                picks = pick_references(D.sample_rng(n, target, k), n, target, k)
                assert target not in picks
                assert len(set(picks.tolist())) == len(picks) == min(k, n - 1)


def test_pick_references_respects_frame_gap():
    frames = list(range(0, 100, 5))  # 20 crops of one track, 5 frames apart
    for target in range(len(frames)):
        picks = pick_references(D.sample_rng(target), len(frames), target, 4, frames, min_gap=30)
        assert all(abs(frames[int(p)] - frames[target]) >= 30 for p in picks)
        assert target not in picks


def test_sampler_samples_are_deterministic_and_never_use_the_target(tmp_path):
    ids = scan_identities(make_identity_folder(tmp_path / "ids"))
    assert ids.people == ("person0", "person1", "person2") and ids.size == 32 and ids.n_images == 15
    feats = {str(q.relative_to(ids.root)): np.full(8, j, np.float32)
             for j, q in enumerate(q for ps in ids.paths for q in ps)}
    sampler = FaceSampler(ids, crop_size=32, ref_size=16, template="arcface", seed=4, features=feats,
                          schedule=RefSchedule(p_no_ref=0.0, k_max=4))
    for n in range(40):
        s = sampler.sample(n)
        again = sampler.sample(n)
        np.testing.assert_array_equal(s.lq, again.lq)
        np.testing.assert_array_equal(s.refs, again.refs)
        assert s.hq.shape == (32, 32, 3) and s.refs.shape[1:] == (16, 16, 3)
        assert 1 <= len(s.refs) <= 4 and s.ref_feat.shape == (len(s.refs), 8)
        # The features say which images were drawn: the target's own index never appears.
        flat_target = int(sampler.offsets[s.person]) + s.image
        used = set(s.ref_feat[:, 0].astype(int).tolist())
        assert flat_target not in used
        lo, hi = int(sampler.offsets[s.person]), int(sampler.offsets[s.person + 1])
        assert all(lo <= u < hi for u in used)  # references are the same person


def test_reference_schedule_frequencies(tmp_path):
    ids = scan_identities(make_identity_folder(tmp_path / "ids", people=2, per_person=8))
    sampler = FaceSampler(ids, crop_size=32, ref_size=16, template="arcface", seed=0)
    samples = [sampler.sample(n) for n in range(300)]
    k = np.array([len(s.refs) for s in samples])
    assert 0.2 < (k == 0).mean() < 0.4  # p = 0.30
    assert set(k[k > 0].tolist()) == {1, 2, 3, 4}
    valid = np.concatenate([s.ref_valid for s in samples])
    assert 0.08 < 1 - valid.mean() < 0.22  # p = 0.15 invalid
    with_refs = [s for s in samples if len(s.refs)]
    assert 0.03 < np.mean([not s.use_anchor for s in with_refs]) < 0.2
    assert 0.03 < np.mean([not s.use_tokens for s in with_refs]) < 0.2
    assert not any(not s.use_anchor and not s.use_tokens for s in samples)
    assert all(s.use_anchor and s.use_tokens for s in samples if not len(s.refs))


def test_split_is_identity_disjoint_and_checked(tmp_path):
    ids = scan_identities(make_identity_folder(tmp_path / "ids", people=4))
    train, held = split_identities(ids, ["person1", "person3"])
    assert train.people == ("person0", "person2") and held.people == ("person1", "person3")
    assert not {q for ps in train.paths for q in ps} & {q for ps in held.paths for q in ps}
    with pytest.raises(UserError, match="nobody"):
        split_identities(ids, ["nobody"])


def test_csv_identity_list_and_bad_inputs(tmp_path):
    root = make_identity_folder(tmp_path / "ids", people=2)
    rows = ["path,identity"] + [f"ids/person{p}/{i:03d}.png,p{p}" for p in range(2) for i in range(5)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ids = scan_identities(tmp_path / "list.csv")
    assert ids.people == ("p0", "p1") and ids.n_images == 10
    cv2.imwrite(str(root / "person0" / "999.png"), np.zeros((40, 30, 3), np.uint8))
    (root / "person0" / "000.png").unlink()
    (root / "person0" / "001.png").unlink()
    (root / "person0" / "002.png").unlink()
    with pytest.raises(UserError, match="not aligned square"):
        scan_identities(root)
    with pytest.raises(UserError, match="no images"):
        (tmp_path / "empty").mkdir()
        scan_identities(tmp_path / "empty")


def test_features_round_trip(tmp_path):
    feats = {"a/1.jpg": np.arange(4, dtype=np.float32), "b/2.jpg": np.ones(4, np.float32)}
    save_features(tmp_path / "f.npz", feats, {"encoder": "test"})
    back = load_features(tmp_path / "f.npz")
    assert set(back) == set(feats)
    np.testing.assert_array_equal(back["a/1.jpg"], feats["a/1.jpg"])


@pytest.mark.media
def test_faces112_is_recognised_as_aligned(media_dir):
    ids = scan_identities(media_dir / "faces112")
    assert len(ids.people) == 20 and ids.size == 112
    from iconface_video.train.config import FACES112_HOLDOUT

    train, held = split_identities(ids, FACES112_HOLDOUT)
    assert len(held.people) >= 4 and len(train.people) + len(held.people) == 20
    s = FaceSampler(train, crop_size=112, ref_size=48, template="arcface", seed=0).sample(0)
    assert s.hq.shape == (112, 112, 3)


def test_references_come_only_from_the_feature_pool(tmp_path):
    ids = scan_identities(make_identity_folder(tmp_path / "ids", people=2, per_person=6))
    keys = [str(q.relative_to(ids.root)) for ps in ids.paths for q in ps]
    pooled = {k: np.full(4, int(k[-7:-4]), np.float32) for k in keys if k.endswith(("000.png", "001.png", "002.png"))}
    sampler = FaceSampler(ids, crop_size=32, ref_size=16, template="arcface", seed=1, features=pooled,
                          schedule=RefSchedule(p_no_ref=0.0))
    for n in range(60):
        s = sampler.sample(n)
        allowed = np.flatnonzero(sampler.ref_pool[s.person])
        assert set(allowed.tolist()) == {0, 1, 2}
        assert 1 <= len(s.refs) <= (2 if s.image in (0, 1, 2) else 3)
        used = set(s.ref_feat[:, 0].astype(int).tolist())  # each feature holds its image number
        assert used <= {0, 1, 2} and s.image not in used


def test_video_tracks_become_identity_groups_with_frame_gaps(tmp_path):
    from fractions import Fraction

    from iconface_video.faces.align import template
    from iconface_video.train.data import export_track_crops
    from iconface_video.types import FaceObs, Frame, Track

    rng = np.random.default_rng(0)
    frames = [Frame(i, i, Fraction(1, 25), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for i in range(0, 60, 3)]
    kps = template("arcface", 112) * 0.5 + np.array([20.0, 10.0], np.float32)  # a 56-px face
    obs = tuple(FaceObs(f.index, (20, 10, 76, 66), 0.99, kps) for f in frames)
    tracks = [Track(1, 0, obs, identity=0), Track(2, 0, obs[:4], identity=None)]
    ids = export_track_crops(iter(frames), tracks, tmp_path / "crops", size=32, template="arcface", stride=2)
    assert ids.people == ("track0001", "track0002") and ids.size == 32
    assert ids.frames[0] == tuple(range(0, 60, 6)) and len(ids.paths[1]) == 2
    sampler = FaceSampler(ids.subset(["track0001"]), crop_size=32, ref_size=16, template="arcface", seed=0,
                          min_gap=20, schedule=RefSchedule(p_no_ref=0.0))
    frames_of = ids.frames[0]
    for n in range(30):
        s = sampler.sample(n)
        assert s.hq.shape == (32, 32, 3)
    picks = pick_references(D.sample_rng(1), len(frames_of), 4, 9, frames_of, 20)
    assert all(abs(frames_of[int(p)] - frames_of[4]) >= 20 for p in picks) and len(picks) > 0
    by_person = export_track_crops(iter(frames), tracks, tmp_path / "people", size=32, template="arcface",
                                   stride=2, by_identity=True)
    assert by_person.people == ("identity0000",)


@pytest.mark.media
def test_ordinary_photos_are_detected_and_aligned(media_dir, tmp_path):
    src = tmp_path / "photos"
    for person, names in {"obama": ["obama_small.jpg", "obama-240p.jpg"], "lin": ["lin-manuel-miranda.png"]}.items():
        (src / person).mkdir(parents=True)
        for n in names:
            (src / person / n).symlink_to(media_dir / "src" / "ageitgey__face_recognition" / "examples" / n)
    with pytest.raises(UserError, match="--align-to"):
        scan_identities(src)
    from iconface_video.train.data import align_photo_folder

    ids = align_photo_folder(src, tmp_path / "aligned", template="arcface", size=112, detector="mtcnn")
    assert ids.people == ("lin", "obama") and ids.size == 112 and [len(p) for p in ids.paths] == [1, 2]
    # Aligned well, the two Obama photos are one person to the identity encoder, Lin another.
    from iconface_video.faces.embed import load_embedder

    crops = np.stack([cv2.imread(str(q))[..., ::-1] for ps in ids.paths for q in ps])
    f = load_embedder("dlib").embed_aligned112(np.ascontiguousarray(crops))
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    assert f[1] @ f[2] > 0.9 > f[0] @ f[1]
