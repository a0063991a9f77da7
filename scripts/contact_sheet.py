"""Before/after crops of every identity, side by side, for a human look.

    python scripts/contact_sheet.py ANALYSIS.json INPUT.mp4 OUTPUT.mp4 [-o SHEET.png] [--per-identity 6] [--size 160]

For each identity (one row pair per identity) a few frames spread over its tracks: the input
face above, the rendered face below, each aligned the same way (FFHQ template, so the crops are
comparable across frames) and drawn with the frame number.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from iconface_video.files import write_bytes_atomic
from iconface_video.imageio import imencode


def sample_faces(analysis, per_identity: int) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Per identity label: up to ``per_identity`` (frame, kps5) spread evenly over its faces."""
    from iconface_video.render.report import identity_label

    names = {i.id: identity_label(i) for i in analysis.identities}
    faces: dict[str, list[tuple[int, np.ndarray]]] = {}
    for track in analysis.tracks:
        label = names.get(track.identity, "unassigned") if track.identity is not None else "unassigned"
        faces.setdefault(label, []).extend((o.frame_index, o.kps5) for o in track.obs)
    picked = {}
    for label, items in faces.items():
        items.sort(key=lambda x: x[0])
        idx = np.unique(np.linspace(0, len(items) - 1, min(per_identity, len(items))).round().astype(int))
        picked[label] = [items[i] for i in idx]
    return picked


def frames_at(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    from iconface_video.io.reader import read_frames

    last = max(wanted) + 1 if wanted else 0
    return {f.index: f.image for f in read_frames(path, 0, last) if f.index in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("-o", "--sheet", type=Path, default=None)
    parser.add_argument("--per-identity", type=int, default=6)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()

    from iconface_video.analysis.schema import load_analysis
    from iconface_video.faces.align import align_crops

    analysis = load_analysis(args.analysis)
    picked = sample_faces(analysis, args.per_identity)
    wanted = {frame for items in picked.values() for frame, _ in items}
    before, after = frames_at(args.input, wanted), frames_at(args.output, wanted)
    side = args.size
    rows = []
    for label, items in sorted(picked.items()):
        top, bottom = [], []
        for frame, kps in items:
            (a,), _ = align_crops(before[frame], kps[None], "ffhq", side)
            (b,), _ = align_crops(after[frame], kps[None], "ffhq", side)
            a, b = a.copy(), b.copy()
            cv2.putText(a, f"{frame}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
            top.append(a)
            bottom.append(b)
        pad = args.per_identity - len(top)
        top += [np.zeros((side, side, 3), np.uint8)] * pad
        bottom += [np.zeros((side, side, 3), np.uint8)] * pad
        title = np.zeros((18, side * args.per_identity, 3), np.uint8)
        cv2.putText(title, f"{label}: input (top) / rendered (bottom)", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        rows += [title, np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)]
    sheet = np.concatenate(rows, axis=0) if rows else np.zeros((side, side, 3), np.uint8)
    path = args.sheet or args.output.with_name(args.output.stem + ".contact.png")
    write_bytes_atomic(imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)), path)
    print(f"wrote {path} ({len(picked)} identities, {sum(len(v) for v in picked.values())} faces)")


if __name__ == "__main__":
    main()
