"""User photos of a person (``--refs NAME=FOLDER``) as references of an identity.

``analyze --refs`` reads them while analysing (``photo_faces``, then ``photo_references`` when
the references are assembled); ``add_photo_references`` adds them to a finished analysis file
by the same rules. No other stage reads photos.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from iconface_video.analysis.harvest import (
    HarvestSettings,
    agreement_term,
    aligned_crops,
    loose_crop,
    observation_terms,
    reliability,
)
from iconface_video.analysis.quality import native_quality
from iconface_video.analysis.schema import Analysis, HarvestedReference, load_analysis, save_analysis
from iconface_video.analysis.settings import AnalyzeSettings, refs_folder, settings_from_json
from iconface_video.errors import InputError
from iconface_video.faces.photos import main_face, photo_files
from iconface_video.imageio import imread, imwrite
from iconface_video.types import FaceObs, Identity, Reference

if TYPE_CHECKING:
    from iconface_video.faces.detect import Detector
    from iconface_video.faces.embed import Embedder
    from iconface_video.progress import Progress


@dataclass(frozen=True, eq=False)
class PhotoFace:
    """The main face of one user photo, ready to become a reference."""

    name: str
    path: Path
    obs: FaceObs  # with its embedding
    image: np.ndarray  # uint8[H, W, 3]
    aligned: np.ndarray  # uint8[S, S, 3], see harvest.aligned_crops


def photo_faces(refs: tuple[tuple[str, Path], ...], detector: Detector, embedder: Embedder) -> list[PhotoFace]:
    """The main face (``faces.photos.main_face``) of every photo in each ``--refs`` folder
    (photos without a face are skipped); an ``InputError`` when a name gets no face at all."""
    faces = []
    for name, folder in refs:
        for path in photo_files(folder):
            bgr = imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            main = main_face(detector.detect([image], [0], 0)[0])
            if main is None:
                continue
            kps = np.asarray(main.kps5, np.float32)[None]
            embedding = embedder.embed(image, kps)[0]
            aligned = aligned_crops(image, kps)[0]
            faces.append(PhotoFace(name, path, dataclasses.replace(main, embedding=embedding, frame_index=-1), image, aligned))
    named = {n for n, _ in refs}
    missing = named - {f.name for f in faces}
    if missing:
        raise InputError(f"--refs: no face found in the photos for {', '.join(sorted(missing))}; use clearer, larger photos")
    return faces


def photo_references(identity: Identity, photos: list[PhotoFace], harvest: HarvestSettings, staging: Path,
                     final_dir: Path) -> list[HarvestedReference]:
    """User photos of ``identity`` as references, most reliable first (their crops written to
    ``staging`` as ``identityNNN_photoK.png``, recorded as the same name in ``final_dir``)."""
    out = []
    for number, photo in enumerate(photos):
        terms = observation_terms(photo.aligned, photo.obs, harvest, native=native_quality(photo.image, photo.obs.box))
        unit = photo.obs.embedding / max(float(np.linalg.norm(photo.obs.embedding)), 1e-12)
        similarity = 1.0 if identity.centroid is None else float(identity.centroid @ unit)
        terms["centroid_agreement"] = agreement_term(similarity, harvest)
        full = reliability(terms, harvest, uses_norm=False)
        crop = loose_crop(photo.image, photo.obs, harvest.crop_scale, harvest.max_crop_side)
        name = f"identity{identity.id:03d}_photo{number}.png"
        imwrite(str(staging / name), cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR))
        reference = Reference(identity.id, -1, -1, tuple(float(v) for v in photo.obs.box),
                              tuple(map(tuple, np.asarray(photo.obs.kps5).tolist())), full.total, full, str(photo.path))
        out.append(HarvestedReference(reference, (final_dir / name).resolve(), crop.kps5, photo.obs.embedding))
    return sorted(out, key=lambda r: -r.reference.reliability)


def video_room(max_refs: int, photos: int) -> int:
    """How many of ``max_refs`` references an identity keeps for video frames when it also has
    ``photos`` photo references: photos take at most half (rounded up)."""
    return max_refs - min(photos, (max_refs + 1) // 2)


def _identity_ids(analysis: Analysis) -> dict[str, int]:
    """Names (casefolded) and ids (as text) -> identity id; an id wins over a name equal to it."""
    ids = {i.name.casefold(): i.id for i in analysis.identities if i.name}
    ids.update({str(i.id): i.id for i in analysis.identities})
    return ids


def add_photo_references(analysis_path: Path, refs: tuple[tuple[str, Path], ...], settings: AnalyzeSettings, *,
                         detector: Detector | None = None, embedder: Embedder | None = None,
                         progress: Progress | None = None) -> Analysis:
    """Add the photos of each ``(NAME, folder)`` in ``refs`` to the analysis file at
    ``analysis_path`` as references of the identity NAME names (its name, any case, or its id).

    They join it as ``analyze --refs`` would have added them: the same main face, crop,
    reliability and crop file (``identityNNN_photoK.png`` in the refs folder), replacing the
    identity's earlier photo references; photos take at most half of the file's ``max_refs``,
    and the identity keeps its best video references (the first ones, as chosen) in the rest.
    Detector, embedder and harvest rules are the file's own (its ``settings``); ``settings``
    says where models load from (``models_dir``, ``device``). ``detector`` and ``embedder`` may
    be passed in already loaded. Writes the file atomically (and its contact sheets, when the
    file was made with them) and returns the new ``Analysis``.
    """
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder
    from iconface_video.progress import Progress

    analysis_path = Path(analysis_path)
    analysis = load_analysis(analysis_path)
    ids = _identity_ids(analysis)
    for name, _ in refs:
        if name.casefold() not in ids:
            known = ", ".join(sorted(str(i.name or i.id) for i in analysis.identities)) or "none"
            raise InputError(f"--refs {name}=...: no identity named {name!r} in {analysis_path.name} "
                             f"(known: {known}); name one in the file or use its id")
    try:
        made = settings_from_json(analysis.settings)
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a hand edit broke a setting
        raise InputError(f"{analysis_path}: its settings cannot be read ({error}); "
                         "make a new one with `iconface-video analyze VIDEO`") from None
    recorded = analysis.settings.get("models", {}).get("embedder")
    detector = detector or load_detector(made.detector, settings.models_dir, settings.device)
    embedder = embedder or load_embedder(made.embedder, settings.models_dir, settings.device)
    if recorded is not None and embedder.name != recorded:
        raise InputError(f"{analysis_path.name} was made with the {recorded} identity encoder, not {embedder.name}; "
                         f"its identities can only be matched with {recorded}")
    photos = photo_faces(refs, detector, embedder)
    targets = {ids[name.casefold()] for name, _ in refs}

    final_dir = refs_folder(analysis_path)
    final_dir.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="." + final_dir.name + ".", dir=final_dir.parent))
    try:
        references: list[HarvestedReference] = []
        for identity in analysis.identities:
            held = [r for r in analysis.references if r.reference.identity == identity.id]
            if identity.id not in targets:
                references += held
                continue
            mine = [p for p in photos if ids[p.name.casefold()] == identity.id]
            chosen = photo_references(identity, mine, made.harvest, staging, final_dir)
            video = [r for r in held if r.reference.frame_index >= 0][: video_room(made.max_refs, len(chosen))]
            references += video + chosen[: made.max_refs - len(video)]
        for name in os.listdir(staging):
            os.replace(staging / name, final_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    kept_refs = [r for r in analysis.settings.get("refs", []) if ids.get(str(r.get("name", "")).casefold()) not in targets]
    new_settings = {**analysis.settings, "refs": kept_refs + [{"name": n, "folder": str(p)} for n, p in refs]}
    updated = dataclasses.replace(analysis, references=tuple(references), settings=new_settings)
    save_analysis(updated, analysis_path)
    kept = {r.crop_path for r in references}
    for gone in {r.crop_path for r in analysis.references} - kept:
        if gone.parent == final_dir.resolve():
            gone.unlink(missing_ok=True)
    if made.contact_sheets:
        from iconface_video.analysis.contact_sheet import write_contact_sheets

        write_contact_sheets(updated, final_dir)
    (progress or Progress.silent()).event("done", stage="refs", output=str(analysis_path), photos=len(photos),
                                          identities=sorted(targets))
    return updated
