"""Detect and ArcFace-align the faces of ``train_hr`` (clips and photos) into a training identity set.

    python scripts/prepare_train_hr.py ../shared/media/train_hr --out ~/iconface-data/train_hr256

Layout written (an identity set, see ``iconface_video/train/data.py``):

- ``OUT/<clip>__track0001/<frame:06d>.png``: every ``--every``-th frame of each face track of each
  clip (the project's analysis finds the tracks, :func:`export_track_crops` aligns them);
- ``OUT/photo__<person>/<source>_photo.png``: photos of a named person who appears in two or more
  photos (one folder per person);
- ``OUT/singles/<source>/<source>_photo.png``: the other photos, one person per folder with one
  image (usable as targets without references; ``scan_identities(OUT)`` skips this folder because
  it holds folders, not images);
- ``OUT/licences.csv``: every source file used, its licence and how many crops it gave.

Faces whose eyes are closer than ``--min-eye-px`` in the source are skipped: the 256-px ArcFace
template has the eyes 70.5 px apart, so a smaller face would be upsampled and give no real 256-px
detail. Only real detections are used (no interpolated track positions). Groups with fewer than
two crops are dropped (references are other crops of the same person). The folder is built under
``OUT.partial`` and renamed when complete; an existing ``OUT`` is replaced only with
``--overwrite``. Nothing is written to the source folder.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from iconface_video.errors import UserError
from iconface_video.faces import align
from iconface_video.faces.photos import main_face
from iconface_video.imageio import imread, imwrite

TEMPLATE = "arcface"
DEFAULT_OUT = Path.home() / "iconface-data" / "train_hr256"


def source_key(rel: str) -> str:
    """A folder-safe name for a source file: its repository folder and its file stem."""
    parts = Path(rel).parts
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{parts[0]}__{Path(rel).stem}")


def person_key(named: str) -> str:
    """``"Scarlett Johansson (appears to be)"`` -> ``"Scarlett_Johansson"``; "" for unnamed."""
    name = re.sub(r"\(.*?\)", "", named).strip()
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def read_manifest(src: Path) -> list[dict[str, str]]:
    path = src / "files.csv"
    if not path.is_file():
        raise UserError(f"{src}: no files.csv (expected the train_hr folder with its licence list)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [r["path"] for r in rows if not (src / r["path"]).is_file()]
    if missing:
        raise UserError(f"{src}: {len(missing)} files listed in files.csv are missing, e.g. {missing[0]}")
    return rows


def clip_crops(video: Path, out_dir: Path, work: Path, *, size: int, every: int, min_eye_px: float,
               detector) -> dict[str, int]:
    """Align the tracked faces of one clip into ``out_dir/<track>/``; returns crops per track folder."""
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.io.reader import read_frames
    from iconface_video.train.data import export_track_crops

    settings = AnalyzeSettings(detect_every=every, max_refs=0, contact_sheets=False, checkpoint_every=0)
    analysis = analyze_video(video, work / f"{video.stem}.iconface.json", settings, detector=detector)
    tracks = []
    for tr in analysis.tracks:
        obs = tuple(o for o in tr.obs if not o.interpolated and o.eye_distance >= min_eye_px)
        if len(obs) >= 2:
            tracks.append(dataclasses.replace(tr, obs=obs))
    if not tracks:
        return {}
    export_track_crops(read_frames(video), tracks, out_dir, size=size, template=TEMPLATE)
    return {d.name: len(list(d.glob("*.png"))) for d in sorted(out_dir.iterdir()) if d.is_dir()}


def photo_crop(photo: Path, *, size: int, min_eye_px: float, detector) -> np.ndarray | None:
    """The most confident face of a photo aligned at ``size`` (``uint8[size, size, 3]`` RGB), or None."""
    bgr = imread(photo)
    if bgr is None:
        raise UserError(f"{photo}: cannot be read as an image")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    best = main_face(detector.detect([rgb])[0])
    if best is None or best.eye_distance < min_eye_px:
        return None
    crop, _ = align.align_crops(rgb, best.kps5[None], TEMPLATE, size)
    return crop[0]


def prepare(src: Path, out: Path, *, size: int, every: int, min_eye_px: float, overwrite: bool,
            log=print) -> list[dict[str, str]]:
    """Build the identity set in ``out`` (see the module docstring); returns the licence rows."""
    from iconface_video.faces.detect import load_detector

    rows = read_manifest(src)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    detector = load_detector("mtcnn")
    used: list[dict[str, str]] = []

    def record(row: dict[str, str], groups: dict[str, int]) -> None:
        if groups:
            used.append({"path": row["path"], "source_repo": row["source_repo"], "commit": row["commit"],
                         "licence": row["licence"], "kind": row["kind"], "groups": " ".join(sorted(groups)),
                         "crops": str(sum(groups.values()))})

    with tempfile.TemporaryDirectory(prefix="train_hr_") as tmp:
        work = Path(tmp)
        for row in (r for r in rows if r["kind"] == "video"):
            t0 = time.perf_counter()
            clip_dir = work / "clip"
            shutil.rmtree(clip_dir, ignore_errors=True)
            found = clip_crops(src / row["path"], clip_dir, work, size=size, every=every,
                               min_eye_px=min_eye_px, detector=detector)
            key = source_key(row["path"])
            groups = {}
            for track, n in found.items():
                if n >= 2:
                    (clip_dir / track).rename(partial / f"{key}__{track}")
                    groups[f"{key}__{track}"] = n
            record(row, groups)
            log(f"{row['path']}: {groups or 'no usable faces'} ({time.perf_counter() - t0:.0f} s)")

    photos: dict[str, list[tuple[dict[str, str], np.ndarray]]] = {}
    for row in (r for r in rows if r["kind"] == "photo"):
        crop = photo_crop(src / row["path"], size=size, min_eye_px=min_eye_px, detector=detector)
        if crop is None:
            log(f"{row['path']}: no face large enough")
            continue
        person = person_key(row["named_person_if_any"]) or source_key(row["path"])
        photos.setdefault(person, []).append((row, crop))
    for person, items in sorted(photos.items()):
        for row, crop in items:
            key = source_key(row["path"])
            group = f"photo__{person}" if len(items) >= 2 else f"singles/{key}"
            folder = partial / group
            folder.mkdir(parents=True, exist_ok=True)
            if not imwrite(folder / f"{key}_photo.png", crop[..., ::-1]):
                raise UserError(f"{folder}: cannot write a crop there")
            record(row, {group: 1})

    with (partial / "licences.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "source_repo", "commit", "licence", "kind", "groups", "crops"])
        writer.writeheader()
        writer.writerows(used)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the train_hr folder (with files.csv)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--size", type=int, default=256, help="crop side (ArcFace template scaled)")
    parser.add_argument("--every", type=int, default=10, help="detect and keep every N-th frame of a clip")
    parser.add_argument("--min-eye-px", type=float, default=64.0,
                        help="skip faces whose eyes are closer than this in the source (256 template: 70.5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    try:
        if args.out.resolve().is_relative_to(args.src.resolve()):
            raise UserError("--out must not be inside the source folder")
        used = prepare(args.src, args.out, size=args.size, every=args.every, min_eye_px=args.min_eye_px,
                       overwrite=args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {sum(int(u['crops']) for u in used)} crops from {len(used)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
