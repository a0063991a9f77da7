"""Copy the MTCNN weights (MIT) out of the facenet-pytorch 2.6.0 wheel into the package.

The wheel ships ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` (plain state dicts). The package
itself pins torch<2.3, so we take only the weight files and their licence, read them with
``torch.load(weights_only=True)`` (no code can run) and store them as safetensors.

    pip download --no-deps facenet-pytorch==2.6.0 -d wheels
    python scripts/extract_mtcnn_weights.py wheels/facenet_pytorch-2.6.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT_DIR = Path(__file__).resolve().parents[1] / "iconface_video" / "weights" / "embedded" / "mtcnn"
NETS = ("pnet", "rnet", "onet")


def extract(wheel: Path, out_dir: Path = OUT_DIR) -> list[Path]:
    """Write ``{pnet,rnet,onet}.safetensors`` and ``LICENSE.md`` into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        for net in NETS:
            raw = archive.read(f"facenet_pytorch/data/{net}.pt")
            state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
            tensors = {name: value.float().contiguous() for name, value in state.items()}
            path = out_dir / f"{net}.safetensors"
            # One metadata key: safetensors writes metadata in hash order, so several keys would
            # make the bytes (and the catalogue's SHA-256) differ from run to run.
            save_file(tensors, str(path), metadata={"source": f"facenet-pytorch 2.6.0 {net}.pt (MIT)"})
            path.chmod(0o644)
            written.append(path)
        licence = next(n for n in archive.namelist() if n.endswith(".dist-info/LICENSE.md"))
        path = out_dir / "LICENSE.md"
        header = "MTCNN weights from facenet-pytorch 2.6.0 (https://github.com/timesler/facenet-pytorch), MIT:\n\n"
        path.write_text(header + archive.read(licence).decode())
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    for path in extract(args.wheel, args.out):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {path.stat().st_size} bytes  sha256={digest}")


if __name__ == "__main__":
    main()
