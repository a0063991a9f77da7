"""The training configuration: one frozen dataclass loaded from ``configs/train/<name>.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iconface_video.config_files import config_from_dict, find_config, load_config_file
from iconface_video.errors import UserError

TRAIN_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "train"

# People of faces112 never seen in training (fixed, so every run and the model card agree).
FACES112_HOLDOUT = ("Daniel_Radcliffe", "Jessica_Alba", "Keanu_Reeves", "Victoria_Beckham", "Will_Smith")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the data folder (saved beside its outputs)."""

    core: str = "cpu"  # core preset name (configs/core/) or a core YAML path (relative: to this file's folder)
    seed: int = 0
    steps: int = 1000
    batch_size: int = 8  # per process
    lr: float = 1e-3
    min_lr: float = 1e-4  # cosine decay to this after warmup
    warmup: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 200  # steps
    checkpoint_minutes: float = 5.0  # also checkpoint when this much wall time has passed
    keep_checkpoints: int = 2
    log_every: int = 10
    plot_every: int = 200
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    workers: int = 0  # data-loader workers per process
    holdout: tuple[str, ...] = FACES112_HOLDOUT
    buckets: dict[str, float] = field(default_factory=lambda: {"standard": 0.5, "severe": 0.3, "video": 0.2})
    p_no_ref: float = 0.30
    k_max: int = 4
    p_anchor_drop: float = 0.10
    p_tokens_drop: float = 0.10
    p_invalid: float = 0.15
    p_t_max: float = 0.5  # share of samples trained at the sampler's one-step time t_max (the shipped output)
    l1_loss_weight: float = 1.0
    grad_loss_weight: float = 0.5
    id_loss_weight: float = 0.1  # identity terms use the PyTorch dlib network (faces/dlib_resnet.py)
    feat_loss_weight: float = 0.0
    ref_loss_weight: float = 0.05
    ref_margin: float = 0.9  # hinge on cos(E(x̂0), anchor): dlib descriptors of one person sit near 0.9
    hr_data: str = ""  # a second identity set of large crops (e.g. 256 px), trained at hr_side
    hr_side: int = 256
    hr_every: int = 0  # every hr_every-th step is an hr_data step at batch max(1, batch_size // 4) (0: never)
    device_data: str = ""  # a packed face file (scripts/pack_faces.py): batches made on the device
    features: str = "auto"  # "auto": compute/cache id features when the core needs them; or a .npz path
    ref_pool: int = 0  # references drawn from this many images per person (0: all); bounds feature cost
    min_gap: int = 0  # video-crop sets: references at least this many frames from the target
    init: str = ""  # warm start: a core checkpoint (.safetensors) whose weights start model and EMA

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.batch_size < 1 or self.steps < 1:
            raise UserError("batch_size and steps must be positive")
        if not 0 <= self.ema_decay < 1:
            raise UserError("ema_decay must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["holdout"] = list(self.holdout)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a YAML file, or ``train.yaml`` beside a run); unknown keys are an error."""
        return config_from_dict(cls, data, what="training config")


def load_train_config(path_or_name: str | Path) -> TrainConfig:
    """A YAML file, or a name in ``configs/train/`` (``cpu``, ``gpu-window``)."""
    path = find_config(path_or_name, TRAIN_CONFIG_DIR, what="training config")
    cfg = load_config_file(path, TrainConfig.from_dict, what="training config")
    core = Path(cfg.core)
    if core.suffix and not core.is_absolute() and (path.parent / core).is_file():
        cfg = cfg.replace(core=str((path.parent / core).resolve()))  # a core YAML beside the training YAML
    return cfg
