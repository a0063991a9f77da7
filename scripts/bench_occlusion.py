"""How often a face with pasted sunglasses, a hand or a microphone ranks below its clean photo as a
reference, on every held-out faces112 photo (the numbers in BENCHMARKS.md).

    OMP_NUM_THREADS=1 python scripts/bench_occlusion.py [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the occluder synthesizers the tests use

from occlusion_fixtures import held_out_photos, occluded_below_clean  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    args = parser.parse_args()
    photos = held_out_photos(args.media, 10_000)
    started = time.perf_counter()
    below, clean = occluded_below_clean(photos)
    free = clean == 0
    print(f"{len(photos)} held-out photos; occluded copy below its clean photo:",
          {k: round(float(v.mean()), 3) for k, v in below.items()})
    print(f"over the {int(free.sum())} with no occlusion evidence of their own:",
          {k: round(float(v[free].mean()), 3) for k, v in below.items()})
    print(f"clean photos with any evidence: {np.mean(clean > 0):.3f}; evidence percentiles 50/90/99/max:",
          np.round(np.percentile(clean, [50, 90, 99, 100]), 3).tolist(), f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
