"""dlib's face descriptor: the PyTorch port against dlib's C++ call, side by side, one thread each.

    python scripts/bench_identity.py [--media ../shared/media] [--repeats 3] [--device cpu]

Real faces112 crops warped to dlib chips: prints crops/s at batch 1 and 32 for both, the largest
descriptor difference, and the faces112 verification ROC-AUC of each (the 20 people x 5 crops of
tests/test_faces_embed.py) for BENCHMARKS.md.
"""

from __future__ import annotations

import os

# One thread for every library, set before numpy, torch and dlib start their pools.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iconface_video.faces.dlib_resnet import DAT_FILE, load_dlib_resnet  # noqa: E402
from iconface_video.faces.align import DLIB_TEMPLATE_150, arcface112_to  # noqa: E402
from iconface_video.faces.embed import cosine, roc_auc  # noqa: E402
from iconface_video.imageio import imread  # noqa: E402
from iconface_video.weights import find_model_file  # noqa: E402
from bench_faces import timed  # noqa: E402  (scripts/ is on the path when a script runs)

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import dlib

    paths = sorted((args.media / "faces112").glob("*/*.jpg"))[::97][:32]
    crops = np.stack([imread(p)[:, :, ::-1] for p in paths])
    chips = arcface112_to(crops, DLIB_TEMPLATE_150, 150)
    cpp = dlib.face_recognition_model_v1(str(find_model_file("dlib-resnet", DAT_FILE)))
    net = load_dlib_resnet(device=args.device)
    device = torch.device(args.device)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"dlib {dlib.__version__}, 1 thread, device {device}, {len(chips)} faces112 crops")

    def run_cpp(batch: np.ndarray) -> np.ndarray:
        return np.asarray([np.asarray(d) for d in cpp.compute_face_descriptor([np.ascontiguousarray(c) for c in batch])], np.float32)

    @torch.inference_mode()
    def run_torch(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        out = net(x).cpu().numpy()  # .cpu() waits for the device
        return out

    difference = np.abs(run_cpp(chips) - run_torch(chips)).max()
    print(f"largest |torch - C++| over the descriptors: {difference:.2e}")
    for batch in (1, 32):
        for name, fn in (("C++ compute_face_descriptor", run_cpp), ("PyTorch DlibResNet", run_torch)):
            # Batch 1: every crop once, one call each; batch 32: one call on all of them.
            if batch == 1:
                seconds = timed(lambda fn=fn: [fn(chips[i:i + 1]) for i in range(len(chips))], args.repeats)
            else:
                seconds = timed(lambda fn=fn: fn(chips), args.repeats)
            print(f"batch {batch:2}: {name:28} {len(chips) / seconds:7.1f} crops/s")

    # Verification on faces112, sampled as tests/test_faces_embed.py does.
    people = sorted(p for p in (args.media / "faces112").iterdir() if p.is_dir())
    rng = random.Random(0)
    paths, owners = [], []
    for index, person in enumerate(people):
        for path in rng.sample(sorted(person.glob("*.jpg")), 5):
            paths.append(path)
            owners.append(index)
    chips = arcface112_to(np.stack([imread(p)[:, :, ::-1] for p in paths]), DLIB_TEMPLATE_150, 150)
    owners_array = np.array(owners)
    rows, cols = np.triu_indices(len(owners_array), 1)
    same = owners_array[rows] == owners_array[cols]
    for name, fn in (("C++ compute_face_descriptor", run_cpp), ("PyTorch DlibResNet", run_torch)):
        features = np.concatenate([fn(chips[i:i + 32]) for i in range(0, len(chips), 32)])
        auc = roc_auc(same, cosine(features, features)[rows, cols])
        print(f"faces112 verification ({len(people)} people x 5): {name:28} ROC-AUC {auc:.4f}")


if __name__ == "__main__":
    main()
