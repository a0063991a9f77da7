"""Seams of the paste-back: gradient energy along the mask boundary, output vs input.

    python scripts/measure_seams.py [--clip TALKING_HEAD.mp4] [--frames 20] [--checkpoint CKPT] [--out DIR]

For every restored face, the soft mask is warped back into the frame and the boundary band is
where it is between 0.05 and 0.95 (the feathered rim), widened by 3 px. Two numbers per row:

- ``energy``: mean squared Sobel gradient (luma) of the output in the band / the same of the
  input. 1.0 = the rim is exactly as busy as the source. New detail inside the band (a core
  that adds texture) raises it as much as a seam does, hence the second number:
- ``step``: mean squared gradient of the low-passed *change* (output - input, Gaussian
  sigma 2 px, which removes texture but keeps a step) in the band / the input's own low-passed
  gradient energy there. 0 = no step at all; a visible edge or colour seam makes it large.

Rows: ``identity`` (a restorer that returns its input: both must be exact); ``cast`` (a
restorer that adds a colour cast) and ``core`` (the embedded checkpoint, or a seeded random
tiny core when none is trained yet), each pasted by ``ours`` (colour matching + feathered
mask) and by ``naive`` (restored crop warped back under the hard mask, no colour matching),
which shows what the measure catches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared/media/src/OpenTalker__video-retalking/examples/face/2.mp4"


def luma_gradient_energy(image: torch.Tensor) -> torch.Tensor:
    """Squared Sobel gradient magnitude of luma; ``image`` ``float32[3, H, W]`` in levels -> ``[H, W]``."""
    from kornia.filters import sobel

    luma = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)[None]
    return sobel(luma, normalized=False)[0, 0] ** 2


def lowpass_gradient_energy(luma_change: torch.Tensor) -> torch.Tensor:
    """Squared gradient of a Gaussian-smoothed ``[H, W]`` image (sigma 2 px)."""
    from kornia.filters import gaussian_blur2d, sobel

    smooth = gaussian_blur2d(luma_change[None, None], (13, 13), (2.0, 2.0), border_type="reflect")
    return sobel(smooth, normalized=False)[0, 0] ** 2


def luma(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(image).float() * torch.tensor([0.299, 0.587, 0.114])).sum(-1)


def boundary_band(jobs, shape: tuple[int, int], mask_fn) -> torch.Tensor:
    """``bool[H, W]``: pixels on the feathered rim of any face's mask in this frame."""
    from kornia.geometry.transform import invert_affine_transform, warp_affine

    from iconface_video.render.blend import border_taper

    band = torch.zeros(shape, dtype=torch.bool)
    for job in jobs:
        size = job.side
        mask = mask_fn(torch.zeros(1, 3, size, size), job.kps_crop[None]) * border_taper(size)
        back = warp_affine(mask, invert_affine_transform(torch.from_numpy(job.M[None])), dsize=shape, align_corners=True)[0, 0]
        band |= (back > 0.05) & (back < 0.95)
    # Widen by 3 px so a hard edge just outside the soft rim (the naive paste's) is inside.
    return torch.nn.functional.max_pool2d(band[None, None].float(), 7, 1, 3)[0, 0] > 0


def naive_paste(frame: np.ndarray, jobs, restore, mask_fn) -> np.ndarray:
    """The restored crop warped back and pasted under a hard mask, with no colour matching."""
    from kornia.geometry.transform import invert_affine_transform, warp_affine

    from iconface_video.faces.align import images_to_tensor, warp_faces

    out = images_to_tensor(frame)[0]
    for job in jobs:
        M = torch.from_numpy(job.M[None])
        lq = warp_faces(images_to_tensor(frame), M, job.side)
        restored = restore(lq, np.zeros(1, np.int64))
        hard = (mask_fn(lq, job.kps_crop[None]) > 0.5).float()
        inverse = invert_affine_transform(M)
        back = warp_affine(restored, inverse, dsize=frame.shape[:2], align_corners=True)[0]
        alpha = warp_affine(hard, inverse, dsize=frame.shape[:2], align_corners=True)[0]
        out = alpha * back + (1 - alpha) * out
    return (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--checkpoint", default=None, help="core checkpoint (default: embedded, else a random tiny core)")
    parser.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "measure_seams")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts")]

    from measure_temporal import write_lossless
    from render_fixtures import IdentityRestorer, tiny_restorer

    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.core.restorer import RestoreOutput
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames
    from iconface_video.render.plan import plan_faces
    from iconface_video.render.options import RenderOptions
    from iconface_video.render.video import render_video
    from iconface_video.render.prepare import default_mask
    from iconface_video.render.temporal import TemporalSettings

    args.out.mkdir(parents=True, exist_ok=True)
    fps = float(probe(args.clip).video.avg_fps or 25)
    source = [f.image for f in read_frames(args.clip, 0, args.frames)]
    clip = write_lossless(args.out / "clip.mp4", source, fps)
    analysis = analyze_video(clip, args.out / "clip.iconface.json", AnalyzeSettings(contact_sheets=False))
    mask_fn, mask_kind = default_mask(torch.device("cpu"))

    def cast(lq, track):
        return (lq + torch.tensor([0.12, -0.04, -0.08]).view(1, 3, 1, 1)).clamp(0, 1)

    class Cast(IdentityRestorer):
        def restore(self, lq, track, *a, **k):
            return RestoreOutput(cast(lq, track), [{} for _ in range(len(lq))])

    try:
        from iconface_video.core.restorer import Restorer

        core = Restorer.from_checkpoint(args.checkpoint, "cpu", "fp32")
        core_name = args.checkpoint or "embedded checkpoint"
    except Exception as error:  # noqa: BLE001 - the result says which core it measured
        core, core_name = tiny_restorer(), f"random tiny core ({type(error).__name__})"

    results = {}
    for name, restorer in (("identity", IdentityRestorer()), ("cast", Cast()), ("core", core)):
        out = args.out / f"{name}.mp4"
        # The guard off: the seams of what each restorer pastes are measured, not what the guard kept.
        render_video(analysis, clip, out, RenderOptions(crf=0, preset="ultrafast", overwrite=True, html=False,
                                                        identity_guard=0.0), restorer=restorer, mask=mask_fn)
        rendered = [f.image for f in read_frames(out)]
        plan = plan_faces(analysis.tracks, crop_size=restorer.crop_size, template_name=restorer.template,
                          temporal=TemporalSettings.from_strength(0.5), sides=(restorer.min_side, restorer.max_side),
                          side_step=restorer.stride)
        rows = {"ours": rendered}
        if name != "identity":
            fn = cast if name == "cast" else (lambda lq, tr, r=restorer: r.restore(lq, torch.as_tensor(tr)).crops)
            rows["naive"] = [naive_paste(f, plan.jobs.get(i, ()), fn, mask_fn)
                             for i, f in enumerate(source)]
        for row, frames in rows.items():
            energy = [0.0, 0.0]
            step = [0.0, 0.0]
            for i, (before, after) in enumerate(zip(source, frames)):
                jobs = plan.jobs.get(i, ())
                if not jobs:
                    continue
                band = boundary_band(jobs, before.shape[:2], mask_fn)
                to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1).float()
                energy[0] += float(luma_gradient_energy(to_t(after))[band].sum())
                energy[1] += float(luma_gradient_energy(to_t(before))[band].sum())
                step[0] += float(lowpass_gradient_energy(luma(after) - luma(before))[band].sum())
                step[1] += float(lowpass_gradient_energy(luma(before))[band].sum())
            results[f"{name} {row}"] = {"energy": energy[0] / max(energy[1], 1e-9), "step": step[0] / max(step[1], 1e-9)}
    summary = {"clip": str(args.clip), "frames": args.frames, "mask": mask_kind, "core": core_name, "rows": results}
    (args.out / "seams.json").write_text(json.dumps(summary, indent=2))
    print(f"clip {args.clip.name}, {args.frames} frames, mask {mask_kind}, core: {core_name}")
    print(f"{'row':16s} {'energy':>8s} {'step':>8s}")
    for key, value in results.items():
        print(f"{key:16s} {value['energy']:8.3f} {value['step']:8.4f}")


if __name__ == "__main__":
    main()
