"""``iconface-video faces IMAGE_OR_VIDEO``: show every face found, so a user sees what will be restored."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from iconface_video.errors import InputError, OutputError
from iconface_video.faces.photos import IMAGE_SUFFIXES
from iconface_video.files import check_new_file, shown, write_bytes_atomic


def read_image(path: Path) -> np.ndarray:
    """``uint8[H, W, 3]`` RGB of an image file; ``InputError`` when it is not one."""
    import cv2

    from iconface_video.imageio import imread

    image = imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image; give a JPEG, PNG, BMP, WebP or TIFF file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_video_frame(path: Path, index: int) -> tuple[np.ndarray, int]:
    """Frame ``index`` (``uint8[H, W, 3]`` RGB, stored orientation) and the container rotation."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream; give an image or a video file")
            for i, frame in enumerate(container.decode(video=0)):
                if i == index:
                    return frame.to_ndarray(format="rgb24"), int(frame.rotation or 0)
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: not a readable image or video ({error}); give an image or a video file") from None
    raise InputError(f"{path}: has no frame {index}; use a smaller --frame")


def check_save_path(target: Path, source: Path, overwrite: bool) -> None:
    """Refuse a ``--save`` path that is the input, exists without ``--overwrite``, or is not a PNG."""
    if target.suffix.lower() != ".png":
        raise OutputError(f"{target}: --save writes a PNG; give a name ending in .png")
    check_new_file(target, overwrite=overwrite, inputs=[source], option="--save")


def write_png(image: np.ndarray, target: Path) -> None:
    """Write ``image`` (RGB) as PNG via a temporary file renamed when complete."""
    import cv2

    from iconface_video.imageio import imencode

    write_bytes_atomic(imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), target)


@click.command("faces")
@click.argument("source", metavar="IMAGE_OR_VIDEO", type=click.Path(path_type=Path))
@click.option("--frame", "frame_index", type=click.IntRange(min=0), default=0, show_default=True, help="Video frame to look at.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--embed", is_flag=True, help="Also print each identity embedding.")
@click.option("--save", type=click.Path(path_type=Path), default=None, help="Write the image with the faces drawn on it (PNG).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --save file.")
@click.option("--detector", type=click.Choice(["auto", "mtcnn", "insightface", "facexlib"]), default="auto", show_default=True)
@click.option("--embedder", type=click.Choice(["dlib", "arcface", "adaface"]), default="dlib", show_default=True)
@click.option("--min-face", type=float, default=None, help="Smallest face in pixels (default: relative to the frame size).")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None, help="Folder with downloaded model weights.")
@click.option("--device", default="cpu", show_default=True)
def command(source, frame_index, as_json, embed, save, overwrite, detector, embedder, min_face, models_dir, device):
    """Detect faces in IMAGE_OR_VIDEO: box, score, 5 landmarks and identity-embedding norm."""
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder

    if not source.exists():
        raise InputError(f"{source}: no such file; check the path")
    if not source.is_file():
        raise InputError(f"{source}: is not a regular file; give an image or a video file")
    if save is not None:
        check_save_path(save, source, overwrite)
    rotation = 0
    if source.suffix.lower() in IMAGE_SUFFIXES:
        image = read_image(source)
    else:
        image, rotation = read_video_frame(source, frame_index)
    det = load_detector(detector, models_dir, device, min_face=min_face)
    faces = det.detect([image], frame_indices=[frame_index], rotation=rotation)[0]
    emb = load_embedder(embedder, models_dir, device)
    vectors = emb.embed(image, np.stack([f.kps5 for f in faces])) if faces else np.zeros((0, emb.dim), np.float32)

    records = []
    for face, vector in zip(faces, vectors):
        record = {
            "box": [round(v, 1) for v in face.box],
            "score": round(face.score, 4),
            "kps5": [[round(float(x), 1), round(float(y), 1)] for x, y in face.kps5],
            "eye_distance": round(face.eye_distance, 1),
            "embedding_norm": round(float(np.linalg.norm(vector)), 4),
        }
        if embed:
            record["embedding"] = [round(float(v), 6) for v in vector]
        records.append(record)

    if save is not None:
        from iconface_video.faces.draw import annotate

        # Drawn on the stored frame, the one the printed coordinates refer to.
        write_png(annotate(image, faces), save)

    if as_json:
        click.echo(json.dumps({
            "source": str(source), "frame": frame_index, "rotation": rotation,
            "size": [image.shape[1], image.shape[0]], "detector": det.name, "embedder": emb.name,
            "faces": records,
        }))
        return
    click.echo(f"{shown(source)} frame {frame_index}: {image.shape[1]}x{image.shape[0]}, detector {det.name}, "
               f"embedder {emb.name} ({emb.dim}-d)" + (f", rotation {rotation}" if rotation else ""))
    if not records:
        click.echo("no faces found (try --min-face smaller, or another --detector)")
        return
    for i, r in enumerate(records):
        points = " ".join(f"({x:.0f},{y:.0f})" for x, y in r["kps5"])
        click.echo(f"face {i}: box {r['box']} score {r['score']:.3f} eyes {r['eye_distance']:.0f}px "
                   f"norm {r['embedding_norm']:.3f} kps5 {points}")
        if embed:
            click.echo("  embedding " + " ".join(f"{v:.4f}" for v in r["embedding"]))
    if save is not None:
        click.echo(f"annotated image: {shown(save)}")
