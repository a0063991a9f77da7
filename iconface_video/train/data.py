"""Training and evaluation data: face crops grouped by identity, and the reference sampler.

An *identity set* is a folder with one sub-folder of images per person (``DIR/<person>/*.jpg``) or
a CSV with ``path,identity`` rows (paths relative to the CSV). Face videos become identity sets
too: :func:`export_track_crops` writes the aligned crops of each track to ``DIR/<track>/<frame>.png``,
and the sampler then draws references only from frames at least ``min_gap`` frames away from the
target (frames far apart in one track are the "other photos" of that person).

Every crop is brought to the checkpoint's crop size and alignment template. Crops that are
already aligned to a known template (faces112 is ArcFace-aligned at 112x112) are re-warped by the
template-to-template similarity only (identity for ArcFace 112 -> ArcFace 112): no detector runs.

A sample is a pure function of ``(seed, index)`` (:meth:`FaceSampler.sample`), so any worker,
rank or resumed run produces the same sample for the same global index: the data position is
just the step counter.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from iconface_video.errors import UserError
from iconface_video.faces.photos import main_face, photo_files
from iconface_video.imageio import imread, imwrite
from iconface_video.train import degrade as D

_FRAME_RE = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class IdentitySet:
    """Images grouped by person: ``paths[i]`` are the images of ``people[i]``.

    ``frames[i][j]`` is the video frame number of ``paths[i][j]`` (for crops exported from a
    track) or -1 (independent photos). ``template``/``size`` say how the images are aligned.
    """

    root: Path
    people: tuple[str, ...]
    paths: tuple[tuple[Path, ...], ...]
    frames: tuple[tuple[int, ...], ...]
    template: str = "arcface"
    size: int = 112

    @property
    def n_images(self) -> int:
        return sum(len(p) for p in self.paths)

    def subset(self, people: Iterable[str]) -> IdentitySet:
        """The same set restricted to ``people`` (in this set's order)."""
        keep = set(people)
        idx = [i for i, p in enumerate(self.people) if p in keep]
        return IdentitySet(
            root=self.root,
            people=tuple(self.people[i] for i in idx),
            paths=tuple(self.paths[i] for i in idx),
            frames=tuple(self.frames[i] for i in idx),
            template=self.template,
            size=self.size,
        )


def _frame_number(path: Path) -> int:
    m = _FRAME_RE.search(path.stem)
    return int(m.group(1)) if m else -1


def scan_identities(data: str | Path, *, template: str = "arcface", video_frames: bool = False) -> IdentitySet:
    """Read ``DIR/<person>/<image>`` or a ``path,identity`` CSV into an :class:`IdentitySet`.

    The images must be aligned crops: their common square size is checked here and recorded.
    ``video_frames``: file names end in the frame number (as :func:`export_track_crops` writes).
    """
    data = Path(data)
    groups: dict[str, list[Path]] = {}
    if data.is_file() and data.suffix.lower() == ".csv":
        with data.open(newline="") as f:
            for row in csv.DictReader(f):
                if "path" not in row or "identity" not in row:
                    raise UserError(f"{data}: the CSV needs the columns 'path' and 'identity'")
                groups.setdefault(row["identity"], []).append((data.parent / row["path"]).resolve())
    elif data.is_dir():
        for person in sorted(p for p in data.iterdir() if p.is_dir()):
            images = photo_files(person)
            if images:
                groups[person.name] = images
    else:
        raise UserError(f"{data}: not a folder of per-person image folders or a CSV")
    if not groups:
        raise UserError(f"{data}: no images found (expected DIR/<person>/<image>.jpg)")
    people = tuple(sorted(groups))
    paths = tuple(tuple(sorted(groups[p])) for p in people)
    size = _check_square_size(paths)
    frames = tuple(tuple(_frame_number(q) if video_frames else -1 for q in ps) for ps in paths)
    return IdentitySet(root=data, people=people, paths=paths, frames=frames, template=template, size=size)


def _check_square_size(paths: Sequence[Sequence[Path]], probe: int = 3) -> int:
    """The common square size of the crops (a few per person are read): aligned crops are square."""
    sizes = set()
    for ps in paths:
        for p in ps[:probe]:
            img = imread(p)
            if img is None:
                raise UserError(f"{p}: cannot be read as an image")
            sizes.add(img.shape[:2])
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise UserError(
            f"images are not aligned square face crops of one size (found sizes {sorted(sizes)}); "
            "pass --align-to DIR to detect and align them first"
        )
    return next(iter(sizes))[0]


def align_photo_folder(src: str | Path, dst: Path, *, template: str = "arcface", size: int = 112,
                       detector: str = "auto") -> IdentitySet:
    """Detect and align the photos of ``src/<person>/*`` into ``dst/<person>/<name>.png``.

    The main face of each photo (``faces.photos.main_face``) is aligned to ``template`` at
    ``size`` with the project's alignment (faces/align.py); photos without a face are skipped.
    Existing crops in ``dst`` are kept, so a rerun only does new photos.
    """
    from iconface_video.faces import align
    from iconface_video.faces.detect import load_detector

    src = Path(src)
    people = sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if not people:
        raise UserError(f"{src}: expected one sub-folder of photos per person")
    det = None
    for person in people:
        for photo in photo_files(person):
            out = dst / person.name / f"{photo.stem}.png"
            if out.is_file():
                continue
            bgr = imread(photo)
            if bgr is None:
                raise UserError(f"{photo}: cannot be read as an image")
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            det = det or load_detector(detector)
            best = main_face(det.detect([rgb])[0])
            if best is None:
                continue
            crop, _ = align.align_crops(rgb, best.kps5[None], template, size)
            out.parent.mkdir(parents=True, exist_ok=True)
            imwrite(out, crop[0][..., ::-1])
    return scan_identities(dst, template=template)


def split_identities(ids: IdentitySet, holdout: Sequence[str]) -> tuple[IdentitySet, IdentitySet]:
    """Identity-disjoint (train, held-out) split; every name in ``holdout`` must exist."""
    missing = sorted(set(holdout) - set(ids.people))
    if missing:
        raise UserError(f"held-out people not found in {ids.root}: {', '.join(missing)}")
    train = [p for p in ids.people if p not in set(holdout)]
    return ids.subset(train), ids.subset(holdout)


def template_warp(src_template: str, src_size: int, dst_template: str, dst_size: int) -> np.ndarray | None:
    """The similarity ``float32[2, 3]`` mapping a crop aligned to one template onto another,
    or None when they coincide (the common case: no resampling at all)."""
    if src_template == dst_template and src_size == dst_size:
        return None
    from iconface_video.faces import align

    src = align.template(src_template, src_size)[None]
    return align.estimate_affine(src, dst_template, dst_size)[0]


def load_crop(path: Path, warp: np.ndarray | None, size: int) -> np.ndarray:
    """``float32[size, size, 3]`` RGB in [0, 1] from an aligned crop on disk."""
    img = imread(path)
    if img is None:
        raise UserError(f"{path}: cannot be read as an image")
    img = img[..., ::-1]
    if warp is not None:
        img = cv2.warpAffine(np.ascontiguousarray(img), warp, (size, size), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT_101)
    return img.astype(np.float32) / 255.0


def pick_references(
    rng: np.random.Generator, n_images: int, target: int, k: int,
    frames: Sequence[int] | None = None, min_gap: int = 0, allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Indices ``int64[<=k]`` of other images of the same person, never ``target``.

    With ``frames`` (video crops), images closer than ``min_gap`` frames to the target are
    excluded too (adjacent frames are near-copies of the target, not independent evidence).
    ``allowed`` (``bool[n_images]``) restricts the pool, e.g. to images with identity features.
    """
    candidates = np.arange(n_images)
    keep = candidates != target
    if allowed is not None:
        keep &= allowed
    if frames is not None and min_gap > 0 and frames[target] >= 0:
        f = np.asarray(frames)
        keep &= np.abs(f - f[target]) >= min_gap
    candidates = candidates[keep]
    k = min(k, len(candidates))
    return rng.choice(candidates, size=k, replace=False) if k else np.zeros(0, np.int64)


@dataclass(frozen=True)
class RefSchedule:
    """The unified reference schedule of core-design §5.8."""

    p_no_ref: float = 0.30
    k_max: int = 4
    p_anchor_drop: float = 0.10  # keep reference tokens, drop the identity anchor
    p_tokens_drop: float = 0.10  # keep the anchor, drop the reference tokens
    p_invalid: float = 0.15  # per reference


@dataclass(frozen=True)
class Sample:
    """One training example.

    ``hq``/``lq``: ``float32[R, R, 3]`` in [0, 1]; ``refs``: ``float32[K, Rr, Rr, 3]``;
    ``ref_valid``: ``bool[K]``; ``ref_feat``: ``float32[K, D]`` precomputed identity features of
    the clean reference images (or None); ``use_anchor``/``use_tokens``: the §5.8 path drops.
    """

    hq: np.ndarray
    lq: np.ndarray
    refs: np.ndarray
    ref_valid: np.ndarray
    ref_feat: np.ndarray | None
    use_anchor: bool
    use_tokens: bool
    bucket: str
    person: int
    image: int


@dataclass(frozen=True)
class FaceSampler:
    """Draws :class:`Sample` number ``index`` deterministically from ``(seed, index)``."""

    ids: IdentitySet
    crop_size: int
    ref_size: int
    template: str
    seed: int
    buckets: dict[str, float] = field(default_factory=lambda: {"standard": 0.5, "severe": 0.3, "video": 0.2})
    schedule: RefSchedule = RefSchedule()
    features: dict[str, np.ndarray] | None = None  # path relative to ids.root -> float32[D]
    min_gap: int = 0

    def __post_init__(self) -> None:
        if any(len(p) < 2 for p in self.ids.paths):
            raise UserError("every person needs at least two images (a target and a reference)")
        if self.ref_pool is not None and any(int(m.sum()) < 2 for m in self.ref_pool):
            raise UserError("every person needs identity features for at least two images")

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum([0] + [len(p) for p in self.ids.paths])

    def locate(self, flat: int) -> tuple[int, int]:
        """(person, image) of the ``flat``-th image of the set."""
        person = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return person, flat - int(self.offsets[person])

    @cached_property
    def ref_pool(self) -> tuple[np.ndarray, ...] | None:
        """Per person, ``bool[n]``: images usable as references (those with features, if any)."""
        if self.features is None:
            return None
        return tuple(np.array([str(q.relative_to(self.ids.root)) in self.features for q in ps]) for ps in self.ids.paths)

    def feature(self, person: int, image: int) -> np.ndarray:
        assert self.features is not None
        key = str(self.ids.paths[person][image].relative_to(self.ids.root))
        return self.features[key]

    def sample(self, index: int) -> Sample:
        rng = D.sample_rng(self.seed, index)
        person, image = self.locate(int(rng.integers(self.ids.n_images)))
        warp = template_warp(self.ids.template, self.ids.size, self.template, self.crop_size)
        hq = load_crop(self.ids.paths[person][image], warp, self.crop_size)
        if rng.random() < 0.5:  # flips double the data and are identity-preserving
            hq = np.ascontiguousarray(hq[:, ::-1])
        bucket = D.pick_bucket(rng, self.buckets)
        lq = D.degrade(hq, rng, bucket).lq
        s = self.schedule
        k = 0 if rng.random() < s.p_no_ref else int(rng.integers(1, s.k_max + 1))
        pool = None if self.ref_pool is None else self.ref_pool[person]
        picks = pick_references(rng, len(self.ids.paths[person]), image, k,
                                self.ids.frames[person], self.min_gap, pool)
        refs = np.zeros((len(picks), self.ref_size, self.ref_size, 3), np.float32)
        for j, r in enumerate(picks):
            clean = load_crop(self.ids.paths[person][int(r)], warp, self.crop_size)
            light = D.light_reference(clean, rng)
            refs[j] = cv2.resize(light, (self.ref_size, self.ref_size), interpolation=cv2.INTER_AREA)
        valid = rng.random(len(picks)) >= s.p_invalid
        drop = rng.random()
        use_anchor = not (len(picks) and drop < s.p_anchor_drop)
        use_tokens = not (len(picks) and s.p_anchor_drop <= drop < s.p_anchor_drop + s.p_tokens_drop)
        feats = None
        if self.features is not None:
            dim = len(next(iter(self.features.values())))
            feats = np.stack([self.feature(person, int(r)) for r in picks]) if len(picks) else np.zeros((0, dim), np.float32)
        return Sample(hq=hq, lq=lq, refs=refs, ref_valid=valid, ref_feat=feats, use_anchor=use_anchor,
                      use_tokens=use_tokens, bucket=bucket, person=person, image=image)


def save_features(path: Path, features: dict[str, np.ndarray], meta: dict) -> None:
    """Store precomputed identity features as ``.npz`` (keys: relative image paths) + JSON meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    keys = sorted(features)
    np.savez(tmp, keys=np.asarray(keys), feats=np.stack([features[k] for k in keys]).astype(np.float32))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_features(path: Path) -> dict[str, np.ndarray]:
    """Read features written by :func:`save_features` (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {str(k): f for k, f in zip(z["keys"], z["feats"])}


def reference_pool(ids: IdentitySet, per_person: int, seed: int) -> list[Path]:
    """A fixed random choice of up to ``per_person`` images per person: the images whose identity
    features are computed and which serve as references (features cost ~0.1 s an image on a CPU)."""
    out: list[Path] = []
    for p, ps in enumerate(ids.paths):
        rng = D.sample_rng(seed, 31337, p)
        pick = sorted(rng.choice(len(ps), size=min(per_person, len(ps)), replace=False))
        out += [ps[int(i)] for i in pick]
    return out


def compute_features(ids: IdentitySet, embed_aligned112, batch: int = 64,
                     paths: Sequence[Path] | None = None) -> dict[str, np.ndarray]:
    """Identity features of the images of ``ids`` (or just ``paths`` of it):
    ``embed_aligned112(uint8[N,112,112,3]) -> float32[N,D]`` (crops are brought to the ArcFace 112
    template the face embedders expect). Keys are paths relative to ``ids.root``."""
    warp = template_warp(ids.template, ids.size, "arcface", 112)
    flat = list(paths) if paths is not None else [q for ps in ids.paths for q in ps]
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(flat), batch):
        chunk = flat[i:i + batch]
        crops = np.stack([(load_crop(q, warp, 112) * 255 + 0.5).astype(np.uint8) for q in chunk])
        feats = np.asarray(embed_aligned112(crops), np.float32)
        for q, f in zip(chunk, feats):
            out[str(q.relative_to(ids.root))] = f
    return out


def export_track_crops(frames: Iterable, tracks: Sequence, out_dir: Path, *, size: int,
                       template: str, stride: int = 1, by_identity: bool = False) -> IdentitySet:
    """Write aligned crops of face tracks as ``out_dir/<group>/<frame:06d>.png``.

    ``frames`` yields :class:`iconface_video.types.Frame`; ``tracks`` are
    :class:`iconface_video.types.Track` (e.g. from an analysis file). A group is one track
    (``track0007``) or, with ``by_identity``, one linked identity (``identity0002``; tracks without
    an identity are skipped). Every ``stride``-th observation is kept; memory is one frame at a
    time. Returns the identity set with frame numbers, for a :class:`FaceSampler` with ``min_gap``.
    """
    from iconface_video.faces import align

    wanted: dict[int, list[tuple[str, np.ndarray]]] = {}
    for tr in tracks:
        if by_identity and tr.identity is None:
            continue
        group = f"identity{tr.identity:04d}" if by_identity else f"track{tr.id:04d}"
        for obs in tr.obs[::stride]:
            wanted.setdefault(obs.frame_index, []).append((group, obs.kps5))
    out_dir.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        for group, kps in wanted.get(frame.index, []):
            crop, _ = align.align_crops(frame.image, kps[None], template, size)
            folder = out_dir / group
            folder.mkdir(exist_ok=True)
            imwrite(folder / f"{frame.index:06d}.png", crop[0][..., ::-1])
    return scan_identities(out_dir, template=template, video_frames=True)


def identities_from_analysis(analysis_path: str | Path, out_dir: Path, *, size: int = 112, template: str = "arcface",
                             stride: int = 5, by_identity: bool = False, video: str | Path | None = None) -> IdentitySet:
    """Face video -> identity set: the aligned crops of an analysis file's tracks (see
    :func:`export_track_crops`); train with ``min_gap`` so references are frames far from the target."""
    from iconface_video.analysis.schema import load_analysis
    from iconface_video.io.reader import read_frames

    analysis = load_analysis(analysis_path)
    source = Path(video) if video is not None else Path(analysis.video["path"])
    if not source.is_absolute() and analysis.path is not None:
        source = analysis.path.parent / source
    if not source.is_file():
        raise UserError(f"{source}: the analysed video is missing; pass its path")
    return export_track_crops(read_frames(source), analysis.tracks, out_dir, size=size, template=template,
                              stride=stride, by_identity=by_identity)
