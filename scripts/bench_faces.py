"""Time the face layer on this machine: batched alignment, detection and embedding throughput.

    python scripts/bench_faces.py [--threads 1] [--media ../shared/media]

Prints one line per measurement (median of --repeats runs after a warm-up) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from iconface_video.faces.align import (
    estimate_affine,
    images_to_tensor,
    template,
    warp_faces,
)
from iconface_video.faces.detect import load_detector
from iconface_video.faces.embed import load_embedder
from iconface_video.imageio import imread

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def video_frames(path: Path, count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            if size is not None and image.shape[1::-1] != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            frames.append(image)
            if len(frames) == count:
                break
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--media", type=Path, default=MEDIA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")

    # 1. Batched alignment: 256 faces from one 720p frame to FFHQ-512 and ArcFace-112.
    rng = np.random.default_rng(0)
    frame = images_to_tensor(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    base = template("ffhq", 512) / 512 * 120
    kps = (base[None] + rng.uniform(0, 1100, (256, 1, 2)).astype(np.float32) * [1, 0.5]).astype(np.float32)
    for name, size in (("ffhq", 512), ("arcface", 112)):
        def align(name: str = name, size: int = size) -> None:
            M = torch.from_numpy(estimate_affine(kps, name, size))
            warp_faces(frame.expand(256, -1, -1, -1), M, size)
        seconds = timed(align, args.repeats)
        print(f"align 256 faces -> {name} {size}x{size}: {seconds * 1000:.0f} ms ({256 / seconds:.0f} faces/s)")

    # 2. Detector throughput at 720p: a talking head and a crowd (the 1080p crowd scaled down).
    detector = load_detector("mtcnn")
    clips = {
        "talking head s18.mp4": args.media / "src/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4",
        "crowd video.mp4": args.media / "src/timesler__facenet-pytorch/examples/video.mp4",
    }
    for label, path in clips.items():
        if not path.is_file():
            print(f"detect 720p {label}: skipped ({path} missing)")
            continue
        frames = video_frames(path, 8, (1280, 720))
        seconds = timed(lambda frames=frames: detector.detect(frames), args.repeats)
        faces = sum(len(f) for f in detector.detect(frames))
        print(f"detect mtcnn 720p {label}, batch 8: {len(frames) / seconds:.2f} frames/s, {faces / seconds:.1f} faces/s ({faces / len(frames):.1f} faces/frame)")

    # 3. Embedding throughput (dlib's network in PyTorch, embedded): from landmarks on a frame, and from aligned crops.
    embedder = load_embedder("dlib")
    photo = args.media / "src/timesler__facenet-pytorch/data/multiface.jpg"
    if photo.is_file():
        image = cv2.cvtColor(imread(photo), cv2.COLOR_BGR2RGB)
        faces = detector.detect([image])[0]
        points = np.stack([f.kps5 for f in faces])
        points = np.concatenate([points] * (32 // len(points) + 1))[:32]
        seconds = timed(lambda: embedder.embed(image, points), args.repeats)
        print(f"embed dlib from landmarks, 32 faces: {32 / seconds:.1f} faces/s")
    crops = rng.integers(0, 255, (32, 112, 112, 3), dtype=np.uint8)
    seconds = timed(lambda: embedder.embed_aligned112(crops), args.repeats)
    print(f"embed dlib aligned 112 crops, 32 faces: {32 / seconds:.1f} faces/s")


if __name__ == "__main__":
    main()
