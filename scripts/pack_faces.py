"""Pack aligned training faces into one file for the device-side data path (train/device_data.py).

    python scripts/pack_faces.py --faces112 ../shared/media/faces112 --train-hr ~/iconface-data/train_hr256 \\
        --out ~/iconface-data/faces_pack.bin

What goes in: faces112 without its fixed held-out people (``FACES112_HOLDOUT``) and the identity
set written by ``scripts/prepare_train_hr.py`` (its ``singles/`` photos too, as one-image people
that serve as targets without references). Every image is re-encoded as JPEG: train_hr's crops
at ``--quality`` (92), faces112's q95 112-px crops at ``--faces112-quality`` (88: within ~38 dB of
the source, far above any degraded input, and the pack then fits the 64 MiB that travel to a GPU
machine with the code), with its person, frame number (-1 for photos), source side, and the dlib identity features of up to
``--ref-pool`` images per person (the images references are drawn from). The container is
safetensors (no pickle); the format is documented in :mod:`iconface_video.train.device_data`.
An existing pack is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from iconface_video.errors import UserError
from iconface_video.imageio import imencode, imread
from iconface_video.train.config import FACES112_HOLDOUT
from iconface_video.train.data import (
    IdentitySet,
    compute_features,
    reference_pool,
    scan_identities,
    split_identities,
)
from iconface_video.train.device_data import PackWriter

JPEG_QUALITY = 92
FACES112_QUALITY = 88


def identity_sets(faces112: Path | None, train_hr: Path | None, *, quality: int = JPEG_QUALITY,
                  faces112_quality: int = FACES112_QUALITY) -> list[tuple[str, IdentitySet, int]]:
    """(name prefix, identity set, JPEG quality) of every source: faces112 minus the holdout,
    train_hr, its singles."""
    sets: list[tuple[str, IdentitySet, int]] = []
    if faces112 is not None:
        ids = scan_identities(faces112)
        train, _ = split_identities(ids, [p for p in FACES112_HOLDOUT if p in ids.people])
        sets.append(("", train, faces112_quality))
    if train_hr is not None:
        sets.append(("", scan_identities(train_hr, video_frames=True), quality))
        if (train_hr / "singles").is_dir():
            sets.append(("single__", scan_identities(train_hr / "singles"), quality))
    if not sets:
        raise UserError("nothing to pack: give --faces112 and/or --train-hr")
    return sets


def pack(sets: list[tuple[str, IdentitySet, int]], out: Path, *, ref_pool: int, encoder: str | None,
         max_mib: float, seed: int = 0, log=print) -> dict:
    """Write the pack; returns its summary (images, people, MiB)."""
    embed = None
    if encoder:
        from iconface_video.faces.embed import load_embedder

        embed = load_embedder(encoder).embed_aligned112
    writer = PackWriter(encoder=encoder or "")
    for prefix, ids, quality in sets:
        feats = {}
        if embed is not None:
            pool = reference_pool(ids, ref_pool, seed) if ref_pool else None
            feats = compute_features(ids, embed, paths=pool)
        for person, paths, frames in zip(ids.people, ids.paths, ids.frames):
            for path, frame in zip(paths, frames):
                bgr = imread(path)
                if bgr is None:
                    raise UserError(f"{path}: cannot be read as an image")
                data = imencode(".jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, quality))
                writer.add(prefix + person, data, frame=frame, side=bgr.shape[0],
                           feat=feats.get(str(path.relative_to(ids.root))))
        log(f"{ids.root}: {len(ids.people)} people, {ids.n_images} images at JPEG q{quality}, {len(feats)} with features")
    size = writer.nbytes / 2**20
    if size > max_mib:
        raise UserError(f"the pack would be {size:.1f} MiB, over --max-mib {max_mib}; lower --quality or pack fewer images")
    writer.write(out)
    return {"images": writer.n_images, "people": writer.n_people, "mib": round(out.stat().st_size / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces112", type=Path, help="faces112 folder (its holdout people are left out)")
    parser.add_argument("--train-hr", type=Path, help="output folder of scripts/prepare_train_hr.py")
    parser.add_argument("--out", type=Path, required=True, help="the pack file to write")
    parser.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality of the train_hr crops")
    parser.add_argument("--faces112-quality", type=int, default=FACES112_QUALITY, help="JPEG quality of faces112's crops")
    parser.add_argument("--ref-pool", type=int, default=64,
                        help="identity features for this many images per person (0: all); references come from them")
    parser.add_argument("--encoder", default="dlib", help="identity embedder for the features ('' for none)")
    parser.add_argument("--max-mib", type=float, default=48.0,
                        help="refuse to write a larger pack (48: room for the code in the 64 MiB sent to a GPU machine)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing pack")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise UserError(f"{args.out} exists; pass --overwrite to replace it")
        sets = identity_sets(args.faces112, args.train_hr, quality=args.quality, faces112_quality=args.faces112_quality)
        summary = pack(sets, args.out, ref_pool=args.ref_pool, encoder=args.encoder, max_mib=args.max_mib)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary['images']} images of {summary['people']} people, {summary['mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
