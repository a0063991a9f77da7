"""Random access to a few scattered frames: decord ``VideoReader.get_batch`` against PyAV.

Measures whether decord earns a place as a dependency: the time to fetch ``--frames`` scattered
frames (RGB arrays) of each clip, file opening included, with one decoding thread each, by

- ``decord``: ``VideoReader(path, num_threads=1).get_batch(indices)``;
- ``pyav-seek``: one demux-only pass for the timestamps and keyframes, then, frame by frame in
  order, a seek to the keyframe before it where that lies past what was decoded, and decoding
  on up to the frame (what decord does inside);
- ``read_frames``: the project's ``io.reader.read_frames(path, i, i + 1)`` once per frame
  (it repeats the timestamp pass every call);
- ``stream``: decoding the whole clip once, in order, as the pipeline does (for scale).

Each method is run ``--repeat`` times, in rotating order; the best and the median are printed.
The frames each method returns are compared with the in-order decode (same rgb24 conversion):
``max_diff`` 0 means the exact frames; a large value means wrong frames.

    python scripts/bench_random_access.py [CLIP ...] [--frames 8] [--repeat 5]

decord is not a dependency of the project (this measurement is why): ``pip install decord==0.6.0``
first, or its row is left out.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np

from iconface_video.io.probe import probe
from iconface_video.io.reader import read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media" / "src"
DEFAULT_CLIPS = (
    SHARED / "KwaiVGI__LivePortrait/assets/examples/source/s18.mp4",  # 1280x720
    SHARED / "timesler__facenet-pytorch/examples/video.mp4",  # 1920x1080
)


def by_decord(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return list(reader.get_batch(list(indices)).asnumpy())


def by_pyav_seek(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """Seek only where the next frame lies past the next keyframe; otherwise decode on (as decord does)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    table = sorted(pts for pts, _ in packets)
    keyframes = sorted(pts for pts, key in packets if key)
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames, last = None, None
        for i in indices:
            target = table[i]
            keyframe = keyframes[max(0, bisect.bisect_right(keyframes, target) - 1)]
            if frames is None or last is None or last < keyframe or last >= target:
                container.seek(keyframe, backward=True, any_frame=False, stream=stream)
                frames = container.decode(stream)
            for frame in frames:
                last = frame.pts
                if frame.pts is not None and frame.pts >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def by_read_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    return [next(read_frames(path, i, i + 1)).image for i in indices]


def by_stream(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    wanted, out = set(indices), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for n, frame in enumerate(container.decode(stream)):
            if n in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
    return out


METHODS: dict[str, Callable[[Path, Sequence[int]], list[np.ndarray]]] = {
    "decord": by_decord, "pyav-seek": by_pyav_seek, "read_frames": by_read_frames, "stream": by_stream,
}
if importlib.util.find_spec("decord") is None:
    print("decord is not installed (pip install decord==0.6.0): its row is left out")
    del METHODS["decord"]


def _difference(frames: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> str:
    """The largest pixel difference from the in-order decode, or how the frames' shape differs
    (decord applies the container's rotation; the project works in stored orientation)."""
    if len(frames) != len(truth):
        return f"{len(frames)} frames, expected {len(truth)}"
    for frame, want in zip(frames, truth):
        if frame.shape != want.shape:
            return f"shape {frame.shape[0]}x{frame.shape[1]}, stored {want.shape[0]}x{want.shape[1]}"
    return str(max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(frames, truth)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, default=list(DEFAULT_CLIPS))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.clips:
        info = probe(path)
        rng = np.random.default_rng(args.seed)
        indices = sorted(int(i) for i in rng.choice(info.frame_count, args.frames, replace=False))
        truth = by_stream(path, indices)
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        diffs: dict[str, str] = {}
        names = list(METHODS)
        for r in range(args.repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:
                begin = time.perf_counter()
                frames = METHODS[name](path, indices)
                times[name].append(time.perf_counter() - begin)
                diffs[name] = _difference(frames, truth)
        print(f"{path.name}: {info.video.width}x{info.video.height}, {info.frame_count} frames, frames {indices}")
        for name in names:
            print(f"  {name:12s} best {min(times[name]) * 1000:8.1f} ms  median {statistics.median(times[name]) * 1000:8.1f} ms"
                  f"  max_diff {diffs[name]}")


if __name__ == "__main__":
    main()
