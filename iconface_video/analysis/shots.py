"""Shot boundaries from content change, streamed over frames with a small lookahead.

Each frame is reduced to small features (an HSV histogram, a dilated Canny edge map and a grey
picture of a copy ``FEATURE_WIDTH`` wide). The change between consecutive frames mixes histogram
distance and the edge change ratio; a cut is declared where that change stands far above the
recent change (an adaptive threshold: median + k * MAD of a sliding window) and the new content
persists one frame later (so a flash of up to ``FLASH_FRAMES`` frames or a corrupt frame is not a cut; a camera flash
also keeps the picture's structure, which the brightness-blind correlation sees). A run of near-black
frames followed by content is a fade (to black and back, or in from black).

Gradual transitions (dissolves, wipes) change little from one frame to the next, so frame ``t``
is also compared with the frames ``HALF_WINDOW`` before and after it (``a`` and ``b``): where
those two differ like two shots, and ``t``'s grey picture lies between them pixel by pixel
(``blend``: each pixel within the range of ``a``'s and ``b``'s, as a cross-fade or a wipe makes
it, which a moving subject does not; a pan, whose ``a`` and ``b`` match once shifted, is excluded
by ``shifted_picture``) and is already a quarter of the way to ``b``, a
shot starts at ``t``: a ``dissolve`` where most pixels are part-way, a ``wipe`` where they are
either still ``a`` or already ``b``.

The detector is streaming: ``push`` takes frames in order and returns the decisions it can make,
lagging the input by ``LOOKAHEAD`` frames; ``flush`` decides the rest. ``state``/``from_state``
let an interrupted analysis resume (gradual transitions within ``HALF_WINDOW`` frames after a
resume point are not looked for).
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from iconface_video.types import Shot

FEATURE_WIDTH = 160  # features are computed on a copy this wide: cheap, and enough for cuts
HALF_WINDOW = 10  # a gradual transition is judged between the frames this far before and after
LOOKAHEAD = HALF_WINDOW  # frames seen after a frame before it is decided
FLASH_FRAMES = 3  # a flash (a white frame, a camera flash) lasts at most this many frames


@dataclass(frozen=True)
class ShotSettings:
    """Thresholds of the cut detector; the defaults were tuned on the shared multi-shot clips."""

    k_mad: float = 6.0  # a cut stands this many MADs above the window's median change
    min_change: float = 0.30  # and above this absolute change (0..1), so noise never cuts
    window: int = 24  # frames of recent change the adaptive threshold looks at
    min_shot_frames: int = 4  # no two cuts closer than this
    black_level: float = 40.0  # a frame whose 99th-percentile luma (0..255) is below this is black
    persist_ratio: float = 0.6  # frame t+1 vs t-1 must still change by this share of the cut
    same_picture: float = 0.85  # frames correlating this well (brightness aside) are never cut apart
    gradual_change: float = 0.30  # the frames around a gradual transition differ at least this much
    same_scene: float = 0.55  # ... and correlate less than this (also after undoing a pan)
    blend_explained: float = 0.80  # share of changed pixels lying between the two (a cross-fade or a wipe)
    blend_progress: float = 0.25  # how far towards the new picture the frame must be when the shot starts


@dataclass(frozen=True, eq=False)
class FrameFeatures:
    """What the cut detector keeps of a frame: ``hist`` float32[B] (sums to 1), ``edges`` bool[h, w]."""

    hist: np.ndarray
    edges: np.ndarray
    bright: float  # 99th percentile of luma (0..255): low only for a (nearly) black frame
    grey: np.ndarray  # uint8[h, w] the small grey picture, for the brightness-blind comparison


@dataclass(frozen=True)
class Boundary:
    """The decision for one frame: does a new shot start here, and how."""

    frame_index: int
    transition: str | None  # None: same shot; "start", "cut", "fade", "dissolve" or "wipe": a shot begins here


def frame_features(image: np.ndarray) -> FrameFeatures:
    """Features of ``uint8[H, W, 3]`` RGB: a 16x8x8 HSV histogram and a dilated edge map."""
    height, width = image.shape[:2]
    scale = FEATURE_WIDTH / max(width, 1)
    small = cv2.resize(image, (FEATURE_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 8, 8], [0, 180, 0, 256, 0, 256]).ravel()
    hist = (hist / max(float(hist.sum()), 1.0)).astype(np.float32)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    # Thresholds from the frame's own median so dark and bright shots give comparable edge maps.
    median = float(np.median(grey))
    edges = cv2.Canny(grey, 0.66 * median + 10, 1.33 * median + 20) > 0
    return FrameFeatures(hist=hist, edges=edges, bright=float(np.percentile(grey, 99)), grey=grey)


def _edge_change(a: np.ndarray, b: np.ndarray) -> float:
    """Edge change ratio: the share of edge pixels that appear or vanish between two maps (0..1)."""
    kernel = np.ones((3, 3), np.uint8)
    a_dil = cv2.dilate(a.astype(np.uint8), kernel) > 0
    b_dil = cv2.dilate(b.astype(np.uint8), kernel) > 0
    count_a, count_b = int(a.sum()), int(b.sum())
    if count_a == 0 and count_b == 0:
        return 0.0
    entering = int((b & ~a_dil).sum()) / max(count_b, 1)
    exiting = int((a & ~b_dil).sum()) / max(count_a, 1)
    return float(max(entering, exiting))


def same_picture(a: FrameFeatures, b: FrameFeatures) -> float:
    """Normalised cross-correlation of the two grey pictures in [-1, 1]: blind to brightness and
    contrast, so a fade, a flash or a lighting change keeps it high while a cut drops it."""
    if a.grey.shape != b.grey.shape or a.grey.std() < 2 or b.grey.std() < 2:
        return 0.0
    return float(cv2.matchTemplate(a.grey, b.grey, cv2.TM_CCOEFF_NORMED)[0, 0])


def blend(a: np.ndarray, middle: np.ndarray, b: np.ndarray, explained: float, progress: float,
          tolerance: float = 10.0) -> str | None:
    """Whether grey picture ``middle`` (uint8[h, w]) is a transition from ``a`` to ``b`` under way.

    Only pixels where ``a`` and ``b`` differ clearly count. ``explained`` of them must lie
    between their ``a`` and ``b`` values (within ``tolerance``), and on average ``middle`` must
    be between ``progress`` and ``1 - progress`` of the way to ``b``. Returns "dissolve" when the
    counted pixels are about equally far (a cross-fade), "wipe" when they are at either end and
    cover at least half the picture.
    """
    kernel = (5, 5)
    a, middle, b = (cv2.blur(x, kernel).astype(np.float32) for x in (a, middle, b))
    if a.shape != b.shape or a.shape != middle.shape:
        return None
    span = b - a
    counted = np.abs(span) > 3 * tolerance
    if counted.mean() < 0.3:  # a moving subject changes a part of the picture, a transition most of it
        return None
    low, high = np.minimum(a, b)[counted] - tolerance, np.maximum(a, b)[counted] + tolerance
    m = middle[counted]
    if ((m >= low) & (m <= high)).mean() < explained:
        return None
    way = np.clip((m - a[counted]) / span[counted], 0.0, 1.0)
    # Found as soon as it is ``progress`` of the way (the same transition later is further on).
    if not progress <= float(way.mean()) <= 0.6:
        return None
    # A cross-fade moves every pixel alike; a wipe leaves each at one end or the other. Moving
    # things (a hand leaving) also do that, but over a part of the picture, a wipe over all of it.
    if float(way.std()) < 0.3:
        return "dissolve"
    return "wipe" if counted.mean() >= 0.5 else None


def shifted_picture(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation in [-1, 1] of grey pictures ``a`` and ``b`` (uint8[h, w]) after undoing the
    global shift phase correlation finds between them: high for a pan or tilt, low across shots."""
    if a.shape != b.shape:
        return 0.0
    (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32))
    x, y = int(round(dx)), int(round(dy))
    height, width = a.shape
    if abs(x) >= width // 2 or abs(y) >= height // 2:
        return 0.0
    # b(p + shift) shows what a shows at p.
    a_part = a[max(0, -y):height - max(0, y), max(0, -x):width - max(0, x)].astype(np.float32)
    b_part = b[max(0, y):height - max(0, -y), max(0, x):width - max(0, -x)].astype(np.float32)
    if a_part.std() < 2 or b_part.std() < 2:
        return 0.0
    return float(np.corrcoef(a_part.ravel(), b_part.ravel())[0, 1])


def change(a: FrameFeatures, b: FrameFeatures) -> float:
    """Content change between two frames in [0, 1]: mean of histogram distance and edge change."""
    hist_distance = float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))
    if a.edges.shape != b.edges.shape:
        return 1.0
    return 0.5 * min(hist_distance, 1.0) + 0.5 * _edge_change(a.edges, b.edges)


class ShotDetector:
    """Streaming shot-boundary detector; see the module docstring for the method.

    Memory: the features of the last ``LOOKAHEAD + 3`` frames and ``window`` change values.
    """

    def __init__(self, settings: ShotSettings = ShotSettings()) -> None:
        self.settings = settings
        self._recent: deque[tuple[int, FrameFeatures]] = deque(maxlen=LOOKAHEAD + HALF_WINDOW + 3)
        self._flash = -1  # the first frame of the last flash (or brightness jump)
        self._flash_delta = 0.0  # the change at that frame
        self._changes: deque[float] = deque(maxlen=settings.window)  # change at decided, non-cut frames
        self._pending: deque[tuple[int, float]] = deque()  # (frame index, change vs previous) undecided
        self._last_cut = -(10**9)
        self._last_gradual = -(10**9)  # a gradual transition is found once, not again while it lasts
        self._dark_run = 0  # consecutive black frames just decided
        self._started = False

    def push(self, frame_index: int, image: np.ndarray) -> list[Boundary]:
        """Add the next frame (``uint8[H, W, 3]``); returns the frames now decided, in order."""
        return self.push_features(frame_index, frame_features(image))

    def push_features(self, frame_index: int, features: FrameFeatures) -> list[Boundary]:
        previous = self._recent[-1][1] if self._recent else None
        self._recent.append((frame_index, features))
        self._pending.append((frame_index, 1.0 if previous is None else change(previous, features)))
        decided = []
        while len(self._pending) > LOOKAHEAD:
            decided.append(self._decide(*self._pending.popleft(), lookahead=True))
        return decided

    def flush(self) -> list[Boundary]:
        """Decide the frames still waiting for lookahead (call at the end of the video or range)."""
        decided = [self._decide(*item, lookahead=False) for item in self._pending]
        self._pending.clear()
        return decided

    def _features_of(self, frame_index: int) -> FrameFeatures | None:
        for index, features in self._recent:
            if index == frame_index:
                return features
        return None

    def _threshold(self) -> float:
        if len(self._changes) < 3:
            return max(self.settings.min_change, 0.5)
        values = np.asarray(self._changes, np.float32)
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) + 0.01
        return max(self.settings.min_change, median + self.settings.k_mad * mad)

    def _decide(self, frame_index: int, delta: float, lookahead: bool) -> Boundary:
        s = self.settings
        current = self._features_of(frame_index)
        if not self._started:
            self._started = True
            self._last_cut = frame_index
            self._dark_run = int(current is not None and current.bright < s.black_level)
            return Boundary(frame_index, "start")
        transition = None
        is_dark = current is not None and current.bright < s.black_level
        if self._dark_run > 0 and not is_dark:
            transition = "fade"  # content returns after black: the fade-in starts a shot
        elif delta > self._threshold() and frame_index - self._last_cut >= s.min_shot_frames:
            previous = self._features_of(frame_index - 1)
            in_flash = 0 < frame_index - self._flash <= FLASH_FRAMES
            if is_dark or (previous is not None and previous.bright < s.black_level):
                transition = None  # into or out of black: the fade rule above decides
            elif previous is not None and current is not None and same_picture(previous, current) >= s.same_picture:
                transition = None  # a fade step, a lighting change or a camera flash: same picture, other brightness
                if not in_flash:
                    self._flash, self._flash_delta = frame_index, delta
            elif in_flash and self._back_to_before_flash(frame_index, delta):
                transition = None  # the picture returns after a flash
            elif self._persists(frame_index, max(delta, self._flash_delta) if in_flash else delta, lookahead,
                                self._flash - 1 if in_flash else frame_index - 1):
                transition = "cut"
            elif not in_flash:
                self._flash, self._flash_delta = frame_index, delta
        if transition is None and lookahead and not is_dark and frame_index - self._last_cut >= HALF_WINDOW \
                and frame_index - self._last_gradual >= 2 * HALF_WINDOW:
            transition = self._gradual(frame_index)
            if transition is not None:
                self._last_gradual = frame_index
        self._dark_run = self._dark_run + 1 if is_dark else 0
        if transition is None:
            self._changes.append(delta)
        else:
            self._last_cut = frame_index
        return Boundary(frame_index, transition)

    def _gradual(self, frame_index: int) -> str | None:
        """"dissolve" or "wipe" if a gradual transition is under way at ``frame_index``, else None."""
        s = self.settings
        before = self._features_of(frame_index - HALF_WINDOW)
        after = self._features_of(frame_index + HALF_WINDOW)
        current = self._features_of(frame_index)
        if before is None or after is None or current is None:
            return None
        window = [self._features_of(i) for i in range(frame_index - HALF_WINDOW, frame_index + HALF_WINDOW + 1)]
        if any(f is None or f.bright < s.black_level for f in window):
            return None  # through black: the fade rule decides
        if change(before, after) < s.gradual_change:
            return None
        # Ends caught in a flash (or a glitch) differ from their neighbours like a cut would.
        # (Looking back from ``after`` only one frame: the transition may end just before it.)
        a = frame_index - HALF_WINDOW
        steps = [change(self._features_of(a - k) or before, before) for k in range(1, FLASH_FRAMES + 1)]
        steps.append(change(self._features_of(frame_index + HALF_WINDOW - 1), after))
        if max(steps) >= s.gradual_change:
            return None
        # The same scene a little later (a lighting change, a moving subject, a pan) correlates,
        # as such or once shifted; two shots do not.
        if max(same_picture(before, after), shifted_picture(before.grey, after.grey)) >= s.same_scene:
            return None
        return blend(before.grey, current.grey, after.grey, s.blend_explained, s.blend_progress)

    def _back_to_before_flash(self, frame_index: int, delta: float) -> bool:
        before = self._features_of(self._flash - 1)
        current = self._features_of(frame_index)
        return before is not None and current is not None and change(before, current) < self.settings.persist_ratio * delta

    def _persists(self, frame_index: int, delta: float, lookahead: bool, origin: int) -> bool:
        """A flash returns to the picture of frame ``origin`` (the last before it) within
        ``FLASH_FRAMES`` frames; a cut does not."""
        if not lookahead:
            return True
        before = self._features_of(origin)
        after = [self._features_of(frame_index + k) for k in range(1, FLASH_FRAMES + 1)]
        if before is None or any(f is None for f in after):
            return True
        return min(change(before, f) for f in after) >= self.settings.persist_ratio * delta

    # --- checkpointing -------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON-able state as of the last *decided* frame, for resuming from the next one."""
        decided_last = self._pending[0][0] - 1 if self._pending else (self._recent[-1][0] if self._recent else None)
        last = self._features_of(decided_last) if decided_last is not None else None
        return {
            "changes": [round(c, 6) for c in self._changes],
            "last_cut": self._last_cut,
            "dark_run": self._dark_run,
            "started": self._started,
            "last_frame": None if last is None else {"index": decided_last, **_features_to_json(last)},
        }

    @classmethod
    def from_state(cls, state: dict, settings: ShotSettings = ShotSettings()) -> ShotDetector:
        detector = cls(settings)
        detector._changes.extend(state["changes"])
        detector._last_cut = state["last_cut"]
        detector._dark_run = state["dark_run"]
        detector._started = state["started"]
        if state["last_frame"] is not None:
            detector._recent.append((state["last_frame"]["index"], _features_from_json(state["last_frame"])))
        return detector


def _features_to_json(features: FrameFeatures) -> dict:
    packed = np.packbits(features.edges, axis=None)
    return {
        "hist": base64.b64encode(features.hist.tobytes()).decode("ascii"),
        "edges": base64.b64encode(packed.tobytes()).decode("ascii"),
        "edges_shape": list(features.edges.shape),
        "bright": features.bright,
        "grey": base64.b64encode(features.grey.tobytes()).decode("ascii"),
    }


def _features_from_json(data: dict) -> FrameFeatures:
    shape = tuple(data["edges_shape"])
    bits = np.frombuffer(base64.b64decode(data["edges"]), np.uint8)
    edges = np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)
    hist = np.frombuffer(base64.b64decode(data["hist"]), np.float32).copy()
    grey = np.frombuffer(base64.b64decode(data["grey"]), np.uint8).reshape(shape).copy()
    return FrameFeatures(hist=hist, edges=edges, bright=float(data["bright"]), grey=grey)


def shots_from_boundaries(starts: list[tuple[int, str]], last_frame: int, times: dict[int, float] | None = None,
                          fps: float = 25.0) -> list[Shot]:
    """Shots from ``(first frame, transition)`` pairs in order and the last frame index.

    ``times`` maps frame index -> seconds where known (VFR); other frames use ``index / fps``.
    """
    times = times or {}

    def time_of(index: int) -> float:
        return float(times.get(index, index / fps))

    shots = []
    for number, (start, transition) in enumerate(starts):
        end = starts[number + 1][0] - 1 if number + 1 < len(starts) else last_frame
        shots.append(Shot(index=number, start=start, end=end, start_time=time_of(start),
                          end_time=time_of(end), transition=transition))
    return shots
