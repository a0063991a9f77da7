"""Which way is up: the rotation the face detector applies to the stored frames.

Coordinates stay in *stored-frame* pixels everywhere (``types``); a detector searches the upright
view (``upright``) and maps what it finds back (``obs_to_stored``, ``detect_rotated``). A
rotation is "rotate by ``rotation`` degrees counter-clockwise to display", PyAV/FFmpeg's
display-matrix convention.

The container's rotation tag is right for almost every file, so it is the default; ``--rotation
auto`` overrides it only on strong evidence, because a wrong override turns a whole film's faces
upside down (and the restorer then finds nobody). The evidence: on a downscaled copy of some
detected frames (``probe_view``), faces are searched in every candidate orientation; each
confident face whose eyes lie side by side above its mouth in that orientation adds its score.
Per frame the orientation with the most evidence wins that frame (the tag on a tie).

A challenger replaces the tag only with a clear margin (``OrientationVote.clear``): at least
``margin`` times the tag's summed evidence plus one confident face, and winning at least
``min_win_share`` of the frames that showed any face (and never fewer than two). It becomes final once it has won the
majority of frames in ``min_shots`` different shots; while it is clear but not yet final it is
used provisionally. The tag becomes final as soon as ``frames_needed`` frames with faces gave no
challenger a single win. Otherwise probing goes on for ``probe_limit`` probed frames (or to the
end of the range) and the provisional choice stands: a challenger that stayed clear in every
probed frame of a video with one shot of faces keeps the frames it was used on. ``OrientationVote.report`` says how it decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from iconface_video.errors import InputError
from iconface_video.faces.checks import check_images
from iconface_video.types import FaceObs

ROTATION_MODES = ("auto", "tag", "none", "0", "90", "180", "270")
MIN_WINS = 2  # one frame never overrides the tag
PROBE_SIDE = 256  # short side of the copy the orientation probe searches (faces worth deciding by stay visible)
# A search of upright views: (views uint8[H, W, 3], their frame indices) -> faces per view, in view pixels.
DetectUpright = Callable[[list[np.ndarray], list[int]], list[list[FaceObs]]]


# --- container rotation: stored frame <-> upright view ----------------------------------------

def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The upright view of a stored frame whose container says "rotate by ``rotation`` degrees
    counter-clockwise to display" (PyAV/FFmpeg's display-matrix convention)."""
    turns = (rotation // 90) % 4
    if rotation % 90:
        raise InputError(f"rotation {rotation} is not a multiple of 90 degrees")
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def points_to_stored(points: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map ``points[..., 2]`` (x, y) from the upright view back to stored-frame pixels.

    ``np.rot90(k=1)`` sends stored (x, y) to upright (y, W-1-x); inverting each quarter turn
    in turn gives the mapping for k = 1..3.
    """
    turns = (rotation // 90) % 4
    height, width = stored_hw
    out = np.asarray(points, dtype=np.float32).copy()
    x, y = out[..., 0].copy(), out[..., 1].copy()
    if turns == 1:
        out[..., 0], out[..., 1] = width - 1 - y, x
    elif turns == 2:
        out[..., 0], out[..., 1] = width - 1 - x, height - 1 - y
    elif turns == 3:
        out[..., 0], out[..., 1] = y, height - 1 - x
    return out


def points_to_upright(points: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """The inverse of ``points_to_stored``: stored-frame ``points[..., 2]`` in the upright view."""
    turns = (rotation // 90) % 4
    if turns == 0:
        return np.asarray(points, dtype=np.float32).copy()
    upright_hw = stored_hw if turns == 2 else (stored_hw[1], stored_hw[0])
    # The stored frame is the upright view turned by the remaining quarter turns.
    return points_to_stored(points, (4 - turns) * 90, upright_hw)


def obs_to_stored(obs: FaceObs, rotation: int, stored_hw: tuple[int, int]) -> FaceObs:
    """``obs`` found on the upright view, in stored-frame coordinates.

    Landmark *order* stays ArcFace order as seen upright (left eye = the subject's left as a
    viewer of the displayed video sees it), which is what the aligners need.
    """
    if (rotation // 90) % 4 == 0:
        return obs
    x0, y0, x1, y1 = obs.box
    corners = points_to_stored(np.array([[x0, y0], [x1, y1]], np.float32), rotation, stored_hw)
    box = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()), float(corners[:, 1].max()))
    return FaceObs(obs.frame_index, box, obs.score, points_to_stored(obs.kps5, rotation, stored_hw), obs.embedding)


def detect_rotated(
    detect_upright: DetectUpright,
    images: Sequence[np.ndarray],
    frame_indices: Sequence[int] | None,
    rotation: int,
) -> list[list[FaceObs]]:
    """Run ``detect_upright(views, indices)`` on upright copies of ``images`` (each
    ``uint8[H, W, 3]``, stored orientation) and map the faces back to the stored frames. Every
    detector's ``detect`` is this around its own search of upright views."""
    check_images(images)
    indices = list(range(len(images))) if frame_indices is None else list(frame_indices)
    if len(indices) != len(images):
        raise ValueError("frame_indices must have one entry per image")
    views = [upright(image, rotation) for image in images]
    found = detect_upright(views, indices)
    return [
        [obs_to_stored(obs, rotation, image.shape[:2]) for obs in faces]
        for faces, image in zip(found, images)
    ]


# --- orientation vote -------------------------------------------------------------------------

def rotation_candidates(mode: str, tag: int) -> tuple[int, ...]:
    """Detection rotations (degrees counter-clockwise, in 0..270) that ``mode`` allows, the
    default first: for ``auto`` all four, the container's ``tag`` first and the stored frames next."""
    if mode not in ROTATION_MODES:
        raise InputError(f"--rotation {mode!r}: choose one of {', '.join(ROTATION_MODES)}")
    tag = (round(tag / 90) * 90) % 360  # FFmpeg reports e.g. -90.0 or 270 for the same turn
    if mode == "auto":
        return tuple(dict.fromkeys((tag, 0, (tag + 180) % 360, 90, 180, 270)))
    if mode == "tag":
        return (tag,)
    return (0,) if mode == "none" else (int(mode),)


def upright_vectors(vectors: np.ndarray, rotation: int) -> np.ndarray:
    """Stored-frame displacement vectors ``float[..., 2]`` as seen in the view the detector got
    (``upright(image, rotation)``, i.e. ``np.rot90`` by ``rotation // 90`` quarter turns)."""
    out = np.asarray(vectors, np.float32)
    for _ in range((rotation // 90) % 4):
        out = np.stack([out[..., 1], -out[..., 0]], axis=-1)  # one turn: (dx, dy) -> (dy, -dx)
    return out


def looks_upright(kps5: np.ndarray, rotation: int) -> bool:
    """Whether 5 ArcFace-order points (stored frame) are eyes side by side above a mouth in the
    view rotated by ``rotation``, each within 45 degrees. This rejects real faces found lying on
    their side; false faces a wrongly turned view yields can pass, which is why one frame or one
    shot never overrides the tag on its own."""
    kps = np.asarray(kps5, np.float32)
    across = upright_vectors(kps[1] - kps[0], rotation)  # left eye -> right eye: points right
    down = upright_vectors((kps[3] + kps[4] - kps[0] - kps[1]) / 2, rotation)  # eyes -> mouth: points down
    return bool(across[0] > abs(across[1]) and down[1] > abs(down[0]))


def upright_confidence(faces: list[FaceObs], rotation: int, min_score: float) -> float:
    """Evidence that ``rotation`` is the right way up in one frame: the summed scores of its
    confident faces that look upright there."""
    return float(sum(o.score for o in faces if o.score >= min_score and looks_upright(o.kps5, rotation)))


def probe_view(image: np.ndarray, side: int = PROBE_SIDE) -> np.ndarray:
    """``uint8[h, w, 3]``: ``image`` shrunk so its short side is at most ``side`` (the probe runs
    four detections per frame, so it runs them small; the vote needs only direction vectors)."""
    height, width = image.shape[:2]
    scale = side / min(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


@dataclass(eq=False)
class OrientationVote:
    """Decides the detection rotation; see the module docstring. ``candidates[0]`` is the tag's."""

    candidates: tuple[int, ...]
    frames_needed: int = 5
    probe_limit: int = 300
    min_score: float = 0.9
    margin: float = 1.5
    min_win_share: float = 0.8
    min_shots: int = 2
    evidence: dict[int, float] = field(default_factory=dict)
    wins: dict[int, int] = field(default_factory=dict)
    shot_wins: dict[int, dict[int, int]] = field(default_factory=dict)  # shot -> rotation -> frames won
    frames_with_faces: int = 0
    probed: int = 0
    chosen: int | None = None
    how: str = ""

    def __post_init__(self) -> None:
        if len(self.candidates) == 1:
            self.chosen = self.candidates[0]
            self.how = "fixed by --rotation"

    @property
    def tag(self) -> int:
        return self.candidates[0]

    def clear(self, rotation: int) -> bool:
        """Whether challenger ``rotation`` beats the tag by the required margin so far."""
        ahead = self.evidence.get(rotation, 0.0) >= self.margin * self.evidence.get(self.tag, 0.0) + self.min_score
        wins = self.wins.get(rotation, 0)
        return ahead and wins >= MIN_WINS and wins >= self.min_win_share * self.frames_with_faces

    def current(self) -> int:
        """The rotation to detect in now: the decision, else a clear challenger, else the tag."""
        if self.chosen is not None:
            return self.chosen
        clear = [r for r in self.candidates[1:] if self.clear(r)]
        return max(clear, key=lambda r: self.evidence.get(r, 0.0)) if clear else self.tag

    def add_frame(self, shot: int, confidence: dict[int, float]) -> None:
        """One probed frame of ``shot``: evidence per candidate rotation (``upright_confidence``)."""
        self.probed += 1
        if any(v > 0 for v in confidence.values()):
            winner = max(self.candidates, key=lambda r: (confidence.get(r, 0.0), -self.candidates.index(r)))
            self.frames_with_faces += 1
            self.wins[winner] = self.wins.get(winner, 0) + 1
            per_shot = self.shot_wins.setdefault(shot, {})
            per_shot[winner] = per_shot.get(winner, 0) + 1
            for r, value in confidence.items():
                self.evidence[r] = self.evidence.get(r, 0.0) + value
        self._maybe_decide()

    def _shots_won(self, rotation: int) -> int:
        return sum(1 for wins in self.shot_wins.values() if 2 * wins.get(rotation, 0) > sum(wins.values()))

    def _maybe_decide(self) -> None:
        if self.chosen is not None:
            return
        pick = self.current()
        if pick != self.tag and self._shots_won(pick) >= self.min_shots:
            self._decide(pick, f"the faces are upright at {pick} in {self._shots_won(pick)} shots, clearly more than at the tag's {self.tag}")
        elif pick == self.tag and self.frames_with_faces >= self.frames_needed and self.wins.get(self.tag, 0) == self.frames_with_faces:
            self._decide(pick, f"the faces of {self.frames_with_faces} frames are upright at the tag's {self.tag}")
        elif self.probed >= self.probe_limit:
            self.finish()

    def finish(self) -> None:
        """The range ended (or the probe limit came) before a final decision: the current choice stands."""
        if self.chosen is not None:
            return
        pick = self.current()
        if pick != self.tag:
            self._decide(pick, f"the faces of {self.wins[pick]} of {self.frames_with_faces} probed frames are upright "
                               f"at {pick}, clearly more than at the tag's {self.tag}, in all "
                               f"{len(self.shot_wins)} shot(s) with faces")
        elif self.frames_with_faces == 0:
            self._decide(pick, "no confident face to decide by: the tag's")
        else:
            self._decide(pick, "no orientation clearly beat the tag's: kept it")

    def _decide(self, rotation: int, how: str) -> None:
        self.chosen, self.how = rotation, how

    def report(self) -> dict:
        """How the rotation was chosen, for the analysis file's ``video.rotation_decision``."""
        return {"chosen": self.current(), "tag": self.tag, "how": self.how or "undecided",
                "frames_probed": self.probed, "frames_with_faces": self.frames_with_faces,
                "evidence": {str(r): round(self.evidence.get(r, 0.0), 3) for r in self.candidates},
                "frames_won": {str(r): self.wins.get(r, 0) for r in self.candidates}}

    def state(self) -> dict:
        return {"evidence": {str(r): v for r, v in self.evidence.items()}, "wins": {str(r): v for r, v in self.wins.items()},
                "shot_wins": {str(s): {str(r): v for r, v in w.items()} for s, w in self.shot_wins.items()},
                "frames_with_faces": self.frames_with_faces, "probed": self.probed, "chosen": self.chosen, "how": self.how}

    def load_state(self, state: dict) -> None:
        self.evidence = {int(r): v for r, v in state["evidence"].items()}
        self.wins = {int(r): v for r, v in state["wins"].items()}
        self.shot_wins = {int(s): {int(r): v for r, v in w.items()} for s, w in state["shot_wins"].items()}
        self.frames_with_faces, self.probed = state["frames_with_faces"], state["probed"]
        self.chosen, self.how = state["chosen"], state["how"]


__all__ = ["PROBE_SIDE", "ROTATION_MODES", "DetectUpright", "OrientationVote", "detect_rotated", "looks_upright",
           "obs_to_stored", "points_to_stored", "points_to_upright", "probe_view", "rotation_candidates", "upright",
           "upright_confidence", "upright_vectors"]
