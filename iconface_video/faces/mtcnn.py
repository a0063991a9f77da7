"""MTCNN (Zhang et al. 2016): a three-stage cascade that gives boxes and the 5 ArcFace points.

The weights are the MIT-licensed ones shipped in the facenet-pytorch 2.6.0 wheel, stored in
``iconface_video/weights/embedded/mtcnn`` as safetensors (``scripts/extract_mtcnn_weights.py``).
The networks and the cascade are written here, batched over frames:

1. P-net runs fully convolutionally over an image pyramid; every frame of the batch at one
   scale goes through in one call (frames of a video share their size).
2. R-net and O-net score 24x24 / 48x48 crops of all candidates of all frames at once; the crops
   are cut with ``torchvision.ops.roi_align`` (area-like averaging, zero outside the image as
   in the original, no Python loop over boxes).
3. ``refine_boxes`` runs O-net alone on boxes where faces are expected (a track's predicted box):
   the cheap way to follow known faces between full-frame detections.

Those weights were converted from Caffe, whose fully connected layers read the feature map
in (W, H, C) order: hence the ``permute(0, 3, 2, 1)`` before flattening.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from iconface_video.faces.backend import min_face_px


class PNet(nn.Module):
    """12x12 proposal net, fully convolutional: ``float[B, 3, H, W] -> (reg[B, 4, h, w], prob[B, h, w])``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """24x24 refine net: ``float[N, 3, 24, 24] -> (reg[N, 4], prob[N])``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """48x48 output net: ``float[N, 3, 48, 48] -> (reg[N, 4], points[N, 10], prob[N])``.

    ``points`` are the 5 x coordinates then the 5 y coordinates, as fractions of the box.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


NETWORKS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


@dataclass(frozen=True)
class MTCNNSettings:
    """Cascade settings. ``min_face`` None: relative to the frame size (``backend.min_face_px``)."""

    min_face: float | None = None
    # The last threshold is stricter than the paper's 0.7: on the group photos and video frames
    # here, false positives scored 0.72-0.76 while real faces (even blurred ones) scored > 0.97.
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.85)
    factor: float = 0.709
    max_candidates: int = 4000  # per stage across the batch: bounds memory on pathological frames

    def min_face_for(self, height: int, width: int) -> float:
        return min_face_px(self.min_face, height, width)


@dataclass(frozen=True)
class Detections:
    """Raw cascade output for a batch: ``boxes[M, 4]``, ``scores[M]``, ``points[M, 5, 2]``, ``image[M]``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    points: torch.Tensor
    image: torch.Tensor


def load_networks(weights_dir: Path, device: str | torch.device = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three networks with their safetensors weights, in eval mode on ``device``."""
    from iconface_video.weights import check_state_dict, load_safetensors

    nets = []
    for name, cls in NETWORKS.items():
        net = cls()
        state = load_safetensors(weights_dir / f"{name}.safetensors")
        check_state_dict(net, state, source=weights_dir / f"{name}.safetensors")
        net.load_state_dict(state)
        nets.append(net.to(device, memory_format=torch.channels_last).eval())
    return tuple(nets)  # type: ignore[return-value]


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which P-net's 12-px window sees faces from ``min_face`` up to the whole image."""
    scale = 12.0 / min_face
    side = min(height, width) * scale
    scales = []
    while side >= 12.0:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


SAMPLES = 4


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow ``boxes[M, 4]`` to squares about their centres (the nets expect square crops)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x0 = boxes[:, 0] + (w - side) * 0.5
    y0 = boxes[:, 1] + (h - side) * 0.5
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply the nets' box offsets ``reg[M, 4]`` (fractions of the box size)."""
    w = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    return boxes + reg * torch.cat([w, h, w, h], dim=1)


def _crops(images: torch.Tensor, boxes: torch.Tensor, image_idx: torch.Tensor, size: int, samples: int = SAMPLES) -> torch.Tensor:
    """``float[M, 3, size, size]`` crops of raw-pixel ``images[B, 3, H, W]``, zero outside the image.

    Each output cell averages ``samples`` x ``samples`` bilinear taps: an area-like resample
    whose cost does not grow with the box (torchvision's adaptive default does, and dominated
    the run time on large faces).
    """
    rois = torch.cat([image_idx.to(boxes.dtype).unsqueeze(1), boxes], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=samples, aligned=True)


def _keep_top(scores: torch.Tensor, limit: int) -> torch.Tensor:
    if scores.numel() <= limit:
        return torch.arange(scores.numel(), device=scores.device)
    return torch.topk(scores, limit).indices


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """NMS by intersection over the *smaller* box: drops a box nested inside a better one."""
    order = torch.argsort(scores, descending=True)
    boxes, groups = boxes[order], groups[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=2)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp_min(1e-6)
    overlap = overlap * (groups[:, None] == groups[None, :])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            suppressed = overlap[i] > threshold
            suppressed[: i + 1] = False
            keep &= ~suppressed
    return order[keep]


@torch.inference_mode()
def run_cascade(
    nets: tuple[PNet, RNet, ONet],
    images: torch.Tensor,
    settings: MTCNNSettings,
) -> Detections:
    """Detect faces in ``images`` (``float32[B, 3, H, W]`` raw 0..255 RGB) with the full cascade."""
    pnet, rnet, onet = nets
    _, _, height, width = images.shape
    device = images.device
    scales = pyramid_scales(height, width, settings.min_face_for(height, width), settings.factor)
    t1, t2, t3 = settings.thresholds

    # Stage 1: P-net over the pyramid, NMS within each (image, scale), then within each image.
    boxes_all, scores_all, reg_all, image_all = [], [], [], []
    level = images
    for scale in scales:
        size = (int(height * scale + 1), int(width * scale + 1))
        # Each level is area-resampled from the previous one: the full-size frame is read once,
        # which halves the pyramid's cost on 720p/1080p frames.
        level = F.interpolate(level, size=size, mode="area")
        # channels-last runs P-net's small convolutions ~1.6x faster on CPU (oneDNN).
        reg, prob = pnet(_normalise(level).contiguous(memory_format=torch.channels_last))
        image_idx, ys, xs = torch.nonzero(prob >= t1, as_tuple=True)
        if image_idx.numel() == 0:
            continue
        # Each P-net output cell sees a 12x12 window at stride 2 of the scaled image.
        x0 = torch.floor((2 * xs.to(torch.float32) + 1) / scale)
        y0 = torch.floor((2 * ys.to(torch.float32) + 1) / scale)
        x1 = torch.floor((2 * xs.to(torch.float32) + 12) / scale)
        y1 = torch.floor((2 * ys.to(torch.float32) + 12) / scale)
        boxes = torch.stack([x0, y0, x1, y1], dim=1)
        scores = prob[image_idx, ys, xs]
        keep = batched_nms(boxes, scores, image_idx, 0.5)
        boxes_all.append(boxes[keep])
        scores_all.append(scores[keep])
        reg_all.append(reg[image_idx, :, ys, xs][keep])
        image_all.append(image_idx[keep])
    empty = Detections(
        torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
        torch.zeros(0, 5, 2, device=device), torch.zeros(0, dtype=torch.long, device=device),
    )
    if not boxes_all:
        return empty
    boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
    reg, image_idx = torch.cat(reg_all), torch.cat(image_all)
    keep = batched_nms(boxes, scores, image_idx, 0.7)
    keep = keep[: settings.max_candidates]
    boxes = _square(_regress(boxes[keep], reg[keep]))
    image_idx = image_idx[keep]

    # Stage 2: R-net on 24x24 crops of every candidate of every image at once. Candidates run
    # to thousands on crowded frames; 2x2 taps per cell are enough for a yes/no at 24 px and
    # cut this stage's crop time by ~4x (O-net's points keep 4x4).
    out_reg, prob = rnet(_normalise(_crops(images, boxes, image_idx, 24, samples=2)))
    passed = prob > t2
    boxes, scores, image_idx, out_reg = boxes[passed], prob[passed], image_idx[passed], out_reg[passed]
    if boxes.numel() == 0:
        return empty
    keep = batched_nms(boxes, scores, image_idx, 0.7)
    keep = keep[_keep_top(scores[keep], settings.max_candidates)]
    boxes = _square(_regress(boxes[keep], out_reg[keep]))
    image_idx = image_idx[keep]

    # Stage 3: O-net gives the final score, box and the 5 points.
    out_reg, out_points, prob = onet(_normalise(_crops(images, boxes, image_idx, 48)))
    passed = prob > t3
    boxes, scores, image_idx = boxes[passed], prob[passed], image_idx[passed]
    out_reg, out_points = out_reg[passed], out_points[passed]
    if boxes.numel() == 0:
        return empty
    w = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    points = torch.stack([boxes[:, :1] + w * out_points[:, :5], boxes[:, 1:2] + h * out_points[:, 5:]], dim=2)
    boxes = _regress(boxes, out_reg)
    keep = _nms_min(boxes, scores, image_idx, 0.7)
    boxes, scores, points, image_idx = boxes[keep], scores[keep], points[keep], image_idx[keep]
    return Detections(boxes, scores, points, image_idx)



def _cut_square(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """``uint8[size, size, 3]``: the pixels of ``box`` (x0, y0, x1, y1), zero outside the image,
    area-resampled (as the cascade's crops are)."""
    height, width = image.shape[:2]
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = max(x0 + 1, int(np.ceil(box[2]))), max(y0 + 1, int(np.ceil(box[3])))
    region = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)


@torch.inference_mode()
def refine_boxes(onet: ONet, image: np.ndarray, boxes: np.ndarray, threshold: float,
                 rounds: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces near the given boxes of one frame, found by O-net alone (no pyramid).

    ``image`` uint8[H, W, 3] RGB; ``boxes`` float[M, 4] where faces are expected (e.g. a track's
    box predicted from the previous frames). Each box is squared and regressed by O-net
    ``rounds`` times, so a face that moved by a fraction of its size is re-centred; the last
    round's score decides. Returns ``boxes[K, 4]``, ``scores[K]``, ``points[K, 5, 2]`` (float32),
    overlapping results merged as in the cascade. Costs one 48x48 O-net call per box and round,
    hundreds of times less than a full-frame cascade at 720p.
    """
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    if len(boxes) == 0:
        return empty
    current = _square(torch.as_tensor(np.asarray(boxes, np.float32)))
    for step in range(rounds):
        crops = np.stack([_cut_square(image, b, 48) for b in current.numpy()])
        tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
        out_reg, out_points, prob = onet(_normalise(tensor))
        if step + 1 < rounds:
            current = _square(_regress(current, out_reg))
    passed = prob > threshold
    current, scores, out_reg, out_points = current[passed], prob[passed], out_reg[passed], out_points[passed]
    if current.numel() == 0:
        return empty
    w = (current[:, 2] - current[:, 0]).unsqueeze(1)
    h = (current[:, 3] - current[:, 1]).unsqueeze(1)
    points = torch.stack([current[:, :1] + w * out_points[:, :5], current[:, 1:2] + h * out_points[:, 5:]], dim=2)
    final = _regress(current, out_reg)
    keep = _nms_min(final, scores, torch.zeros(len(scores), dtype=torch.long), 0.7)
    return final[keep].numpy(), scores[keep].numpy(), points[keep].numpy().astype(np.float32)
