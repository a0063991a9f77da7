"""Contact sheets: one PNG per identity showing its chosen references and why they were chosen."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iconface_video.analysis.schema import Analysis
from iconface_video.imageio import imwrite

TILE = 192  # pixels per reference tile
TEXT_ROWS = 5  # lines of scores under each tile
LINE = 15


def _tile(crop: np.ndarray, kps5: np.ndarray, lines: list[str]) -> np.ndarray:
    """One ``uint8[TILE + text, TILE, 3]`` tile: the crop with its 5 points, and its score lines."""
    scale = TILE / max(crop.shape[:2])
    image = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((TILE + TEXT_ROWS * LINE + 6, TILE, 3), 24, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    for x, y in np.asarray(kps5, np.float32) * scale:
        cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1, cv2.LINE_AA)
    for row, text in enumerate(lines[:TEXT_ROWS]):
        cv2.putText(canvas, text, (4, TILE + LINE * (row + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1,
                    cv2.LINE_AA)
    return canvas


def contact_sheet(analysis: Analysis, identity_id: int) -> np.ndarray | None:
    """``uint8[H, W, 3]`` RGB sheet of the identity's references (None if it has none)."""
    refs = analysis.references_for(identity_id)
    if not refs:
        return None
    tiles = []
    for ref in refs:
        r, t = ref.reference, ref.reference.terms
        where = f"frame {r.frame_index} track {r.track}" if r.frame_index >= 0 else Path(r.source).name[:26]
        lines = [where, f"reliability {r.reliability:.2f}"]
        if t is not None:
            lines += [f"sharp {t.sharpness:.2f} size {t.size:.2f}",
                      f"front {t.frontality:.2f} det {t.detector:.2f}",
                      f"expo {t.exposure:.2f} agree {t.centroid_agreement:.2f}"]
        tiles.append(_tile(ref.load_crop(), ref.crop_kps5, lines))
    identity = analysis.identity(identity_id)
    title = np.full((28, TILE * len(tiles), 3), 0, np.uint8)
    label = f"identity {identity_id}" + (f" ({identity.name})" if identity.name else "") + f": {len(identity.tracks)} tracks"
    cv2.putText(title, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([title, np.hstack(tiles)])


def write_contact_sheets(analysis: Analysis, folder: Path) -> list[Path]:
    """``folder/contact-identityNNN.png`` for every identity with references; returns the paths."""
    written = []
    for identity in analysis.identities:
        sheet = contact_sheet(analysis, identity.id)
        if sheet is None:
            continue
        path = Path(folder) / f"contact-identity{identity.id:03d}.png"
        tmp = path.with_name("." + path.name + ".tmp.png")
        imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tmp.replace(path)
        written.append(path)
    return written
