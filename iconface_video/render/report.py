"""What a render did: a section in the analysis file, a short summary, and an HTML page.

The page is one self-contained file (pictures inlined as PNG data) beside the output, so it can
be mailed or archived with the video: for each person, the references the core was given with
their weights, and a before/after still of their largest face.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from iconface_video.faces.align import invert_affine, transform_points
from iconface_video.imageio import imencode
from iconface_video.render.engine import StageTimes
from iconface_video.render.guard import TrackGuardStats
from iconface_video.render.plan import FaceJob, RenderPlan
from iconface_video.types import Identity

_STILL_SIDE = 256


def identity_label(identity: Identity) -> str:
    return identity.name or f"identity {identity.id}"


def _clip_box(job: FaceJob, half: float, height: int, width: int) -> tuple[int, int, int, int]:
    """A square of side ``2 * half`` around the face's landmarks, clipped to the frame."""
    points = transform_points(job.kps_crop[None], invert_affine(job.M[None]))[0]
    cx, cy = points.mean(axis=0)
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
    return x0, y0, x1, y1


class StillCollector:
    """Keeps, per identity, the largest face seen: its before and after pixels (bounded memory)."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.best: dict[str, tuple[float, int, np.ndarray, np.ndarray]] = {}

    def observe(self, job: FaceJob, before: np.ndarray, after: np.ndarray) -> None:
        label = self.names.get(job.identity, "unassigned") if job.identity is not None else "unassigned"
        held = self.best.get(label)
        if held is not None and held[0] >= job.eye_px:
            return
        x0, y0, x1, y1 = _clip_box(job, 2.0 * job.eye_px, *before.shape[:2])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        self.best[label] = (job.eye_px, job.frame, before[y0:y1, x0:x1].copy(), after[y0:y1, x0:x1].copy())


def _png_data(image: np.ndarray, side: int = _STILL_SIDE) -> str:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale != 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    data = imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(data).decode()


@dataclass(frozen=True)
class RenderReport:
    """The outcome of one render (or, with ``dry_run``, of its plan).

    ``tracks`` has one entry per restored track: ``track``, ``identity`` (the person's label),
    ``side`` (the crop side it was restored at), ``faces`` (planned), and the identity guard's
    ``faces_checked``, ``guard_acted`` and mean similarities to the track's anchor of the
    degraded (``similarity_before``), fully restored (``similarity_restored``) and pasted
    (``similarity_after``) crops (None where the guard was off or nothing ran).
    """

    input: str
    output: str
    analysis: str | None
    options: dict
    frames: int
    range: tuple[int, int]
    faces_restored: int
    frames_with_faces: int
    faces_per_identity: dict[str, int]
    tracks_restored: int
    faces_skipped_small: int
    tracks_with_small_faces: int
    faces_skipped_identity: int
    min_eye_px: float
    references: dict[str, list[str]]
    reference_weights: dict[str, list[float]]
    interlaced: bool
    device: str
    restorer: str
    mask: str
    timings: dict[str, float]
    dry_run: bool
    resumed_frames: int = 0
    grey_faces: int = 0
    tracks: tuple[dict, ...] = ()
    warnings: tuple[str, ...] = ()
    html: str | None = None
    stills: dict = field(default_factory=dict, compare=False, repr=False)
    sheets: dict = field(default_factory=dict, compare=False, repr=False)  # label -> uint8[H, W, 3]

    @classmethod
    def build(cls, *, plan: RenderPlan, stats: StageTimes | None = None, stills: StillCollector | None = None,
              guard: dict[int, TrackGuardStats] | None = None, **fields) -> RenderReport:
        guard = guard or {}
        tracks = tuple(
            {"track": track, "identity": plan.labels.get(track), "side": plan.sides[track],
             "faces": plan.faces_per_track.get(track, 0), **guard.get(track, TrackGuardStats()).as_dict()}
            for track in plan.tracks
        )
        return cls(
            tracks=tracks,
            faces_restored=stats.faces if stats else plan.n_faces,
            frames_with_faces=len(plan.jobs),
            faces_per_identity=plan.faces_per_identity,
            tracks_restored=len(plan.tracks),
            faces_skipped_small=plan.skipped_small,
            tracks_with_small_faces=len(plan.skipped_small_tracks),
            faces_skipped_identity=plan.skipped_identity,
            min_eye_px=round(plan.min_eye_px, 2),
            grey_faces=stats.grey_faces if stats else 0,
            stills=dict(stills.best) if stills else {},
            **fields,
        )

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("stills", "sheets")}
        data["range"] = list(self.range)
        data["tracks"] = [dict(t) for t in self.tracks]
        data["warnings"] = list(self.warnings)
        data["timings"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.timings.items()}
        return data

    def summary(self) -> str:
        """A few lines for the end of a run."""
        verb = "would restore" if self.dry_run else "restored"
        people = ", ".join(f"{name} {n}" for name, n in sorted(self.faces_per_identity.items(), key=lambda kv: -kv[1]))
        lines = [f"{verb} {self.faces_restored} faces in {self.frames_with_faces} of {self.range[1] - self.range[0]} frames"
                 f" ({self.tracks_restored} tracks{': ' + people if people else ''})"]
        left = []
        if self.faces_skipped_small:
            left.append(f"{self.faces_skipped_small} faces too small to restore (eyes < {self.min_eye_px:g} px) "
                        f"in {self.tracks_with_small_faces} tracks")
        if self.faces_skipped_identity:
            left.append(f"{self.faces_skipped_identity} faces of people not selected")
        if left:
            lines.append("left alone: " + "; ".join(left))
        if self.references:
            refs = ", ".join(f"{name} {len(items)}" for name, items in self.references.items())
            lines.append(f"references: {refs}")
        elif self.options.get("no_refs"):
            lines.append("references: none (--no-refs)")
        if self.interlaced:
            lines.append("the source is interlaced and was deinterlaced (yadif)")
        lines.extend(self._track_lines())
        if self.grey_faces:
            lines.append(f"{self.grey_faces} faces in black-and-white kept black-and-white")
        if self.resumed_frames:
            lines.append(f"resumed: {self.resumed_frames} frames were already done")
        stages = ("decode", "align", "restore", "guard", "blend", "encode")
        timed = ", ".join(f"{k} {self.timings[k]:.1f} s" for k in stages if k in self.timings)
        lines.append(f"{self.timings.get('total', 0.0):.1f} s on {self.device}" + (f" ({timed})" if timed else ""))
        if not self.dry_run:
            lines.append(f"wrote {self.output}" + (f"; report {self.html}" if self.html else ""))
        return "\n".join(lines)

    def _track_lines(self) -> list[str]:
        """Crop sides per track and what the identity guard did."""
        if not self.tracks:
            return []
        by_side: dict[int, list[str]] = {}
        for t in self.tracks:
            by_side.setdefault(t["side"], []).append(str(t["track"]))
        lines = ["crop side: " + "; ".join(f"{side} px (track{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
                                          for side, ids in sorted(by_side.items(), reverse=True))]
        checked = [t for t in self.tracks if t["faces_checked"]]
        if checked:
            faces = sum(t["faces_checked"] for t in checked)
            acted = sum(t["guard_acted"] for t in checked)

            def mean(key: str) -> float:
                return sum(t[key] * t["faces_checked"] for t in checked) / faces

            where = ", ".join(f"track {t['track']} {t['guard_acted']}" for t in checked if t["guard_acted"])
            lines.append(f"identity guard: acted on {acted} of {faces} faces{' (' + where + ')' if where else ''}; "
                         f"similarity to the identity anchor {mean('similarity_before'):.3f} before, "
                         f"{mean('similarity_restored'):.3f} restored, {mean('similarity_after'):.3f} pasted")
        return lines

    # -- saving -------------------------------------------------------------------------------

    def save(self, analysis_path: Path | None, output_path: Path, *, html: bool = True) -> RenderReport:
        """Write the HTML page (when asked) and the ``render`` section of the analysis file."""
        page = None
        if html:
            page = Path(output_path).with_name(Path(output_path).stem + ".report.html")
            from iconface_video.files import write_text_atomic

            write_text_atomic(self.html_page(), page)
            object.__setattr__(self, "html", str(page))
        if analysis_path is not None and Path(analysis_path).is_file():
            write_render_section(Path(analysis_path), self.to_json())
        return self

    def html_page(self) -> str:
        esc = html.escape
        rows = []
        for name, (eye, frame, before, after) in sorted(self.stills.items()):
            refs = self.references.get(name, [])
            weights = self.reference_weights.get(name, [])
            ref_list = "".join(f"<li>{esc(src)} (weight {w:.2f})</li>" for src, w in zip(refs, weights)) or "<li>none</li>"
            sheet = self.sheets.get(name)
            sheet_html = "" if sheet is None else (
                f"<p>contact sheet of the analysis:</p><img class=sheet src='{_png_data(sheet, max(sheet.shape[:2]))}'>")
            rows.append(
                f"<section><h2>{esc(name)}</h2><p>{self.faces_per_identity.get(name, 0)} faces restored; "
                f"still from frame {frame} (eyes {eye:.0f} px apart)</p>"
                f"<div class=pair><figure><img src='{_png_data(before)}'><figcaption>before</figcaption></figure>"
                f"<figure><img src='{_png_data(after)}'><figcaption>after</figcaption></figure></div>"
                f"<p>references given to the core:</p><ul>{ref_list}</ul>{sheet_html}</section>"
            )
        summary = "".join(f"<p>{esc(line)}</p>" for line in self.summary().splitlines())
        summary += self._tracks_table()
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>iconface-video render report</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            ".pair{display:flex;gap:1em}.pair img{width:256px}img.sheet{max-width:100%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
            "pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body>"
            f"<h1>{esc(Path(self.output).name)}</h1>{summary}{''.join(rows)}"
            f"<h2>settings and timings</h2><pre>{esc(json.dumps(self.to_json(), indent=2, default=str))}</pre>"
            "</body></html>"
        )


    def _tracks_table(self) -> str:
        """Per track: person, crop side, faces, and the identity guard's counts and similarities."""
        if not self.tracks:
            return ""
        heads = ("track", "person", "crop side", "faces", "guard checked", "guard acted",
                 "similarity before", "restored", "pasted")
        keys = ("track", "identity", "side", "faces", "faces_checked", "guard_acted", "similarity_before",
                "similarity_restored", "similarity_after")
        cell = (lambda v: "–" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)))
        rows = "".join("<tr>" + "".join(f"<td>{cell(t[k])}</td>" for k in keys) + "</tr>" for t in self.tracks)
        return ("<h2>tracks</h2><p>similarity: cosine of identity features to the track's anchor (its references, "
                "or the degraded face itself without references)</p><table><tr>"
                + "".join(f"<th>{h}</th>" for h in heads) + f"</tr>{rows}</table>")


def write_render_section(analysis_path: Path, section: dict) -> None:
    """Add (or replace) the ``render`` section of an analysis file, atomically, keeping the rest."""
    from iconface_video.analysis.schema import dumps_readable
    from iconface_video.files import write_text_atomic

    data = json.loads(analysis_path.read_text(encoding="utf-8"))
    data["render"] = json.loads(json.dumps(section, default=str))
    write_text_atomic(dumps_readable(data), analysis_path)
