"""The device-side data path: batched degradations against the CPU path, the face pack, and
``DeviceBatches`` (sampling rules, reproducibility, the TrainBatch it returns). Runs on the CPU."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iconface_video.errors import UserError
from iconface_video.imageio import imread
from iconface_video.train import degrade as D
from iconface_video.train import device_degrade as DD
from iconface_video.train.config import TrainConfig
from iconface_video.train.device_data import DeviceBatches, PackWriter, crop_to, read_pack

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import pack_faces  # noqa: E402  (the script under test)
import prepare_train_hr  # noqa: E402


def _synthetic(size: int = 128, seed: int = 0) -> np.ndarray:
    """float32[size, size, 3] with edges, texture and smooth parts."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.3 * np.cos(7 * y), (x > 0.4) * 0.7 + 0.1], -1)
    img += rng.normal(0, 0.05, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, a.ndim))
    return 10 * np.log10(1 / np.maximum(np.mean((a - b) ** 2, axis=axes), 1e-12))


def _sharpness(imgs: np.ndarray) -> np.ndarray:
    return np.array([np.abs(cv2.Laplacian(i, cv2.CV_32F)).mean() for i in imgs])


# --------------------------------------------------------------------------- the operations
@pytest.mark.parametrize("interp,cv", [(DD.AREA, cv2.INTER_AREA), (DD.LINEAR, cv2.INTER_LINEAR), (DD.CUBIC, cv2.INTER_CUBIC)])
def test_resize_matrices_equal_opencv(interp, cv):
    img = _synthetic(96)
    for n in (4, 13, 31, 48, 77, 96, 111, 120):
        m = DD.resize_matrix(torch.tensor([96]), torch.tensor([n]), torch.tensor([interp]), 96, 128)
        out = DD.resize(_t(img), m)[0].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(out[:n, :n], cv2.resize(img, (n, n), interpolation=cv), atol=1e-4)
        # the canvas beyond the image repeats its last row and column (a JPEG encoder's padding)
        np.testing.assert_allclose(out[n:, :n], np.broadcast_to(out[n - 1:n, :n], out[n:, :n].shape), atol=1e-6)


def test_kernels_and_blur_equal_the_cpu_path():
    k = DD.gaussian_kernels(torch.tensor([11, 15]), torch.tensor([[2.0, 0.7], [3.0, 3.0]]), torch.tensor([0.6, 0.0]), 15)
    np.testing.assert_allclose(k[0, 2:13, 2:13].numpy(), D.gaussian_kernel(11, 2.0, 0.7, 0.6), atol=1e-6)
    assert float(k[0].sum()) == pytest.approx(1.0) and float(k[0, :2].abs().sum()) == 0.0
    np.testing.assert_allclose(k[1].numpy(), D.gaussian_kernel(15, 3.0, 3.0, 0.0), atol=1e-6)
    m = DD.motion_kernels(torch.tensor([7]), torch.tensor([33.0]), 15)
    np.testing.assert_allclose(m[0, 4:11, 4:11].numpy(), D.motion_kernel(7, 33.0), atol=1e-6)
    img = _synthetic(64)
    out = DD.blur(_t(img), k[:1])[0].numpy().transpose(1, 2, 0)
    ref = cv2.filter2D(img, -1, D.gaussian_kernel(11, 2.0, 0.7, 0.6), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_jpeg_model_is_close_to_libjpeg(quality):
    img = _synthetic(128, seed=quality)
    model = DD.jpeg(_t(img), torch.tensor([quality]))[0].numpy().transpose(1, 2, 0)
    real = D.jpeg(img, quality)
    assert _psnr(model[None], real[None])[0] > 38  # far closer to libjpeg than either is to the input
    assert abs(_psnr(model[None], img[None])[0] - _psnr(real[None], img[None])[0]) < 0.5


def test_parameter_distributions_match_the_cpu_path():
    n, size = 3000, 128
    g = torch.Generator().manual_seed(0)
    for b, bucket in enumerate(D.BUCKETS):
        rng = D.sample_rng(0, b)
        cpu = [D.sample_params(rng, bucket, size) for _ in range(n)]
        dev = DD.sample_params(g, torch.full((n,), b), size)
        pairs = {
            "scale": ([p.scale for p in cpu], dev.scale),
            "sigma": ([p.blur_sigma[0] for p in cpu], dev.sigma[:, 0]),
            "noise": ([p.noise_sigma for p in cpu], dev.noise),
            "jpeg": ([p.jpeg[0] for p in cpu], dev.jpeg[:, 0]),
            "ksize": ([p.kernel_size for p in cpu], dev.ksize),
            "offset": ([abs(p.offset[0]) for p in cpu], dev.offset[:, 0].abs()),
            "gamma": ([p.gamma for p in cpu], dev.gamma),
        }
        for name, (a, t) in pairs.items():
            a, t = np.asarray(a, np.float64), t.double().numpy()
            span = a.max() - a.min()
            assert t.min() >= a.min() - 0.01 * span - 1e-6 and t.max() <= a.max() + 0.01 * span + 1e-6, (bucket, name)
            assert abs(t.mean() - a.mean()) <= 0.04 * (a.std() + 1e-9) * 3 + 1e-9, (bucket, name)


def _faces(media_dir: Path, n: int, size: int = 128) -> np.ndarray:
    paths = sorted((media_dir / "faces112").glob("*/*.jpg"))[:: 8000 // n][:n]
    return np.stack([cv2.resize(imread(p)[..., ::-1].astype(np.float32) / 255, (size, size),
                                interpolation=cv2.INTER_CUBIC) for p in paths])


@pytest.mark.parametrize("bucket", D.BUCKETS)
def test_same_parameters_give_the_same_damage(media_dir, bucket):
    """Both paths with the very same drawn parameters: per-sample PSNR and sharpness agree (only
    the noise fields differ)."""
    imgs = _faces(media_dir, 24)
    cpu, params = [], []
    for i, img in enumerate(imgs):
        rng = D.sample_rng(5, i)
        p = D.sample_params(rng, bucket, 128)
        interp = int(copy.deepcopy(rng).integers(3))  # the first draw inside degrade.apply
        cpu.append(D.apply(img, p, rng).lq)
        params.append((p, interp))
    dev = DD.apply(torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy()), _batch_params(params),
                   torch.Generator().manual_seed(1)).numpy().transpose(0, 2, 3, 1)
    cpu = np.stack(cpu)
    gap = np.abs(_psnr(dev, imgs) - _psnr(cpu, imgs))
    assert np.median(gap) < 0.25 and gap.max() < 1.0, gap
    ratio = _sharpness(dev) / _sharpness(cpu)
    # noise fields differ, and at 4-16x reduction noise is much of the remaining detail
    assert abs(ratio.mean() - 1) < 0.05 and np.abs(ratio - 1).max() < 0.35, ratio


def _batch_params(items) -> DD.BatchParams:
    ps = [p for p, _ in items]
    f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return DD.BatchParams(
        bucket=torch.tensor([D.BUCKETS.index(p.bucket) for p in ps]),
        motion=torch.tensor([p.blur_kind == "motion" for p in ps]),
        sigma=f([p.blur_sigma for p in ps]), angle=f([p.blur_angle for p in ps]),
        ksize=torch.tensor([p.kernel_size for p in ps]), scale=f([p.scale for p in ps]),
        interp=torch.tensor([i for _, i in items]), noise=f([p.noise_sigma for p in ps]),
        jpeg=torch.tensor([list(p.jpeg) + [0] * (2 - len(p.jpeg)) for p in ps]),
        rescale2=f([p.rescale2 for p in ps]), gain=f([p.gain for p in ps]), offset=f([p.offset for p in ps]),
        gamma=f([p.gamma for p in ps]), gray=torch.tensor([p.gray for p in ps]))


def test_degraded_statistics_match_the_cpu_path(media_dir):
    """Independent draws of the whole mix: the PSNR and sharpness distributions of degraded vs
    clean agree per bucket within sampling error."""
    imgs = _faces(media_dir, 64)
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    for b, bucket in enumerate(D.BUCKETS):
        cpu = np.stack([D.degrade(img, D.sample_rng(11, b, i), bucket).lq for i, img in enumerate(imgs)])
        dev = DD.degrade(x, torch.full((len(x),), b), torch.Generator().manual_seed(b),
                         torch.Generator().manual_seed(100 + b)).numpy().transpose(0, 2, 3, 1)
        pc, pd = _psnr(cpu, imgs), _psnr(dev, imgs)
        assert abs(pc.mean() - pd.mean()) < 1.0 and abs(np.median(pc) - np.median(pd)) < 1.0, (bucket, pc.mean(), pd.mean())
        assert abs(pc.std() - pd.std()) < 1.2, bucket
        sc, sd = _sharpness(cpu) / _sharpness(imgs), _sharpness(dev) / _sharpness(imgs)
        assert abs(sc.mean() - sd.mean()) < 0.05 + 0.15 * sc.mean(), (bucket, sc.mean(), sd.mean())
        assert abs(cpu.mean() - dev.mean()) < 0.01


def test_light_reference_is_mild_and_sized():
    img = _synthetic(128)
    refs = DD.light_reference(_t(img).repeat(8, 1, 1, 1), torch.Generator().manual_seed(0), 64)
    assert refs.shape == (8, 3, 64, 64) and 0 <= float(refs.min()) and float(refs.max()) <= 1
    small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    for r in refs.numpy():
        err = min(np.abs(r - small).mean(), np.abs(r[..., ::-1] - small).mean())
        assert err < 0.05


# --------------------------------------------------------------------------- the pack
def _small_faces(media_dir: Path, tmp: Path, people: dict[str, int]) -> Path:
    root = tmp / "faces"
    for person, n in people.items():
        (root / person).mkdir(parents=True)
        for p in sorted((media_dir / "faces112" / person).glob("*.jpg"))[:n]:
            shutil.copy(p, root / person / p.name)
    return root


def test_pack_round_trip_and_errors(tmp_path):
    w = PackWriter(encoder="dlib")
    img = (_synthetic(112) * 255).astype(np.uint8)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    w.add("a", data, frame=-1, side=112, feat=np.ones(4))
    w.add("b", data, frame=7, side=112)
    w.write(tmp_path / "p.bin")
    pack = read_pack(tmp_path / "p.bin")
    assert pack.people == ("a", "b") and pack.n_images == 2 and list(pack.frame) == [-1, 7]
    assert bytes(pack.image_bytes(1)) == data and list(pack.has_feat) == [True, False] and pack.encoder == "dlib"
    (tmp_path / "junk.bin").write_bytes(b"not a pack")
    with pytest.raises(UserError, match="not a face pack"):
        read_pack(tmp_path / "junk.bin")
    with pytest.raises(UserError, match="no such face pack"):
        read_pack(tmp_path / "missing.bin")


def test_pack_script_leaves_out_the_holdout_and_keeps_its_limit(media_dir, tmp_path):
    faces = _small_faces(media_dir, tmp_path, {"Barack_Obama": 6, "Tom_Hanks": 5, "Will_Smith": 4})
    out = tmp_path / "pack.bin"
    assert pack_faces.main(["--faces112", str(faces), "--out", str(out), "--encoder", ""]) == 0
    pack = read_pack(out)
    assert pack.people == ("Barack_Obama", "Tom_Hanks") and pack.n_images == 11 and pack.feat is None
    assert pack_faces.main(["--faces112", str(faces), "--out", str(out), "--encoder", ""]) == 2  # exists
    assert pack_faces.main(["--faces112", str(faces), "--out", str(tmp_path / "b.bin"), "--encoder", "",
                            "--max-mib", "0.01"]) == 2
    assert not (tmp_path / "b.bin").exists()


def test_crop_to_scales_the_template():
    big = (_synthetic(256) * 255).astype(np.uint8)
    assert crop_to(big, "arcface", "arcface", 256) is big
    np.testing.assert_array_equal(crop_to(big, "arcface", "arcface", 128),
                                  cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA))
    small = crop_to(big[:112, :112], "arcface", "arcface", 128)  # 112 -> 128 is a shift, not a scale
    assert small.shape == (128, 128, 3)


# --------------------------------------------------------------------------- DeviceBatches
@pytest.fixture(scope="module")
def pack_path(media_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pack")
    faces = _small_faces(media_dir, tmp, {"Barack_Obama": 8, "Tom_Hanks": 6, "Keanu_Reeves": 5})
    w = PackWriter(encoder="dlib")
    rng = np.random.default_rng(0)
    for person in sorted(p.name for p in faces.iterdir()):
        for i, path in enumerate(sorted((faces / person).glob("*.jpg"))):
            # frames 0, 10, 20, ... as if from a track; features for all but the last image
            feat = rng.normal(size=128).astype(np.float32) if i < 4 or person != "Barack_Obama" else None
            w.add(person, path.read_bytes(), frame=10 * i, side=112, feat=feat)
    w.add("Lonely", (tmp / "faces" / "Tom_Hanks").glob("*.jpg").__next__().read_bytes(), frame=-1, side=112,
          feat=np.zeros(128, np.float32))
    w.write(tmp / "pack.bin")
    return tmp / "pack.bin"


def _core():
    from iconface_video.core.config import CoreConfig

    return CoreConfig(id_encoder="dlib", id_dim=128)


def test_batches_follow_the_reference_rules(pack_path):
    cfg = TrainConfig(batch_size=16, seed=3, min_gap=20, p_no_ref=0.3, k_max=4)
    db = DeviceBatches(pack_path, _core(), cfg, "cpu")
    assert "Keanu_Reeves" not in db.people and db.n_images == 8 + 6 + 1  # holdout left out
    pack = read_pack(pack_path)
    no_ref = n = 0
    for step in range(12):
        p = db.plan(step)
        owner = np.repeat(p.target.numpy(), p.counts)
        assert np.all(p.refs != owner)  # never the target itself
        assert np.all(db.person[p.refs] == db.person[owner])  # always the same person
        assert np.all(np.abs(db.frame[p.refs] - db.frame[owner]) >= 20)  # min_gap frames away
        assert np.all(db.ref_ok[p.refs]) and p.counts.max() <= 4
        lonely = db.person[p.target.numpy()] == db.people.index("Lonely")
        assert np.all(p.counts[lonely] == 0)
        no_ref += int((p.counts == 0).sum())
        n += len(p.counts)
    assert 0.2 < no_ref / n < 0.6
    assert not db.ref_ok[np.flatnonzero(db.person == db.people.index("Barack_Obama"))[4:]].any()
    assert db.ref_ok.sum() == 4 + 6 + 1 and pack.has_feat.sum() == db.ref_ok.sum() + 5  # Keanu's are left out
    b = db.batch(0)
    p = db.plan(0)
    np.testing.assert_array_equal(b.id_feat.numpy(), db.feat[torch.from_numpy(p.refs)].numpy())


def test_batch_contract_and_reproducibility(pack_path):
    core = _core()
    cfg = TrainConfig(batch_size=6, seed=1)
    db = DeviceBatches(pack_path, core, cfg, "cpu")
    a, again, other, rank1 = db.batch(4), db.batch(4), db.batch(5), db.batch(4, rank=1, world=2)
    r = core.crop_size
    assert a.lq.shape == a.hq.shape == a.noise.shape == (6, 3, r, r)
    assert a.refs.shape[1:] == (3, core.ref_size, core.ref_size) and len(a.ref_track) == len(a.refs)
    assert -1 <= float(a.lq.min()) and float(a.hq.max()) <= 1 and 0 < float(a.t.min()) and float(a.t.max()) < 1
    assert a.id_feat.shape == (len(a.refs), 128)
    for field in ("lq", "hq", "refs", "t", "noise", "ref_valid"):
        assert torch.equal(getattr(a, field), getattr(again, field)), field
    assert not torch.equal(a.hq, other.hq) or not torch.equal(a.lq, other.lq)
    assert not torch.equal(a.noise, rank1.noise)


def test_batch_trains_the_core(pack_path):
    """The batch is what the core's losses take: one optimisation step runs and changes the weights."""
    from iconface_video.core.losses import LossWeights, compute_losses
    from iconface_video.core.model import IConFaceCore

    core = _core()
    torch.manual_seed(0)
    model = IConFaceCore(core)
    db = DeviceBatches(pack_path, core, TrainConfig(batch_size=4), "cpu")
    losses = compute_losses(model, db.batch(0), None, LossWeights())
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_pack_without_features_is_refused_when_the_core_needs_them(media_dir, tmp_path):
    faces = _small_faces(media_dir, tmp_path, {"Barack_Obama": 3})
    out = tmp_path / "pack.bin"
    assert pack_faces.main(["--faces112", str(faces), "--out", str(out), "--encoder", ""]) == 0
    with pytest.raises(UserError, match="identity features"):
        DeviceBatches(out, _core(), TrainConfig(), "cpu")
    DeviceBatches(out, _core(), TrainConfig(p_no_ref=1.0), "cpu")  # no references: no features needed


# --------------------------------------------------------------------------- train_hr preparation
def test_prepare_train_hr_photos_and_licences(media_dir, tmp_path):
    """Two photos named as one person become one two-image folder; licences list both."""
    src = tmp_path / "train_hr"
    rows = []
    with (media_dir / "train_hr" / "files.csv").open(newline="", encoding="utf-8") as f:
        import csv

        reader = csv.DictReader(f)
        fields = reader.fieldnames
        for row in reader:
            if row["path"].endswith(("hallo/examples/reference_images/7.jpg", "ghost/examples/images/beckham.jpg")):
                row["named_person_if_any"] = "Test Person (appears to be)"
                rows.append(row)
                (src / row["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(media_dir / "train_hr" / row["path"], src / row["path"])
    assert len(rows) == 2
    with (src / "files.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    assert prepare_train_hr.main([str(src), "--out", str(out)]) == 0
    crops = sorted((out / "photo__Test_Person").glob("*.png"))
    assert len(crops) == 2 and imread(crops[0]).shape == (256, 256, 3)
    lic = (out / "licences.csv").read_text()
    assert "MIT" in lic and "Apache-2.0" in lic and lic.count("\n") == 3
    assert prepare_train_hr.main([str(src), "--out", str(out)]) == 2  # exists: needs --overwrite
    assert prepare_train_hr.main([str(src), "--out", str(src / "inside")]) == 2


def test_hr_steps_use_the_large_images_at_hr_side(media_dir, tmp_path):
    """With hr_every, every hr_every-th step is a quarter batch of the >= hr_side images at hr_side."""
    w = PackWriter()
    small = sorted((media_dir / "faces112" / "Tom_Hanks").glob("*.jpg"))[:4]
    for path in small:
        w.add("Tom_Hanks", path.read_bytes(), frame=-1, side=112)
    for i in range(3):
        big = cv2.resize(imread(small[i]), (256, 256), interpolation=cv2.INTER_CUBIC)
        w.add("Big", cv2.imencode(".jpg", big)[1].tobytes(), frame=-1, side=256)
    w.write(tmp_path / "p.bin")
    core = _core().replace(id_encoder="proxy")
    cfg = TrainConfig(batch_size=8, hr_every=2, hr_side=256)
    db = DeviceBatches(tmp_path / "p.bin", core, cfg, "cpu")
    assert db.side_of_step(0) == core.crop_size and db.side_of_step(1) == 256
    plain, hr = db.batch(0), db.batch(1)
    assert plain.hq.shape == (8, 3, core.crop_size, core.crop_size) and plain.id_feat is None
    assert hr.hq.shape == hr.lq.shape == hr.noise.shape == (2, 3, 256, 256)
    assert hr.refs.shape[1:] == (3, core.ref_size, core.ref_size)
    assert all(db.people[db.person[t]] == "Big" for t in db.plan(1).target.tolist())
    with pytest.raises(UserError, match="hr_every"):
        DeviceBatches(tmp_path / "p.bin", core, cfg.replace(hr_side=320), "cpu")


def test_degradations_never_mix_host_and_device_tensors():
    """On PyTorch's "meta" device any host tensor mixed into the computation raises, as it would on
    a GPU: the whole path (all buckets, references, JPEG) runs there (no GPU needed)."""
    x = torch.rand(9, 3, 128, 128, device="meta")
    g = torch.Generator().manual_seed(0)
    p = DD.sample_params(g, torch.arange(9) % 3, 128)
    assert DD.apply(x, p, None).shape == x.shape  # None: the meta device has no generator
    assert DD.light_reference(x, g, 64).shape == (9, 3, 64, 64)
