"""The end of the analysis: a finished stream's tracks -> identities (names pinned by the user's
photos) -> the top references of each identity (crops copied to the refs folder) -> ``Analysis``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2

from iconface_video.analysis.harvest import Candidate, load_verifier, score_against_centroid, select_references
from iconface_video.analysis.identify import TrackSummary, build_identities, pin_names, rejection_reason
from iconface_video.analysis.photos import PhotoFace, photo_references, video_room
from iconface_video.analysis.schema import Analysis, HarvestedReference, RejectedTrack
from iconface_video.analysis.settings import AnalyzeSettings, refs_folder
from iconface_video.analysis.stream import AnalysisStream
from iconface_video.analysis.validation import VERSION
from iconface_video.imageio import imread
from iconface_video.types import Reference, Shot


def assemble(stream: AnalysisStream, photos: list[PhotoFace], settings: AnalyzeSettings, video_json: dict,
             settings_json: dict, output_path: Path, pool_dir: Path) -> Analysis:
    """Identities and references from the finished stream; copies chosen crops to the refs folder."""
    harvest = stream.pools.settings
    fps = stream.fps
    shots = tuple(
        Shot(i, s, (stream.shots.starts[i + 1][0] - 1) if i + 1 < len(stream.shots.starts) else stream.shots.last_frame,
             t, stream.shots.end_times.get(i, t), kind)
        for i, (s, kind, t) in enumerate(stream.shots.starts)
    )
    rejected: dict[int, str] = {}
    for r in stream.records:
        shot = shots[r.shot]
        reason = rejection_reason(r.frames, r.scores, r.kps5, ~r.interpolated, shot.end - shot.start + 1, fps, settings.reject)
        if reason is not None:
            rejected[r.id] = reason
    all_records = sorted(stream.records, key=lambda r: r.id)
    records = [r for r in all_records if r.id not in rejected]
    # A track's identity vector: its reliability-weighted mean, else the tracker's plain mean.
    embeddings = {}
    for r in all_records:
        vector = stream.pools.track_embedding(r.id)
        vector = r.embedding if vector is None else vector
        if vector is not None:
            embeddings[r.id] = vector
    summaries = [TrackSummary(r.id, r.shot, int(r.frames[0]), int(r.frames[-1]), embeddings[r.id], float(r.detections))
                 for r in records if r.id in embeddings]
    identities, owner = build_identities(summaries, settings.identify)
    named = {}
    for face in photos:
        named.setdefault(face.name, []).append(face.obs.embedding)
    identities, name_to_id = pin_names(identities, list(named.items()), settings.identify)
    tracks = tuple(r.to_track(owner.get(r.id)) for r in records)

    verifier = load_verifier(settings.models_dir)
    settings_json["models"]["verifier"] = None if verifier is None else "dlib-mmod"

    def verify(candidate: Candidate) -> bool:
        if verifier is None:
            return True
        crop = imread(str(pool_dir / candidate.crop_file), cv2.IMREAD_COLOR)
        return crop is not None and verifier.is_face(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), candidate.crop_kps5)

    final_dir = refs_folder(output_path)
    staging = final_dir.with_name(final_dir.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    references: list[HarvestedReference] = []
    face_verified: dict[int, bool | None] = {}
    for identity in identities:
        candidates = [c for t in identity.tracks for c in stream.pools.pools.get(t, [])]
        chosen_photos = photo_references(identity, [p for p in photos if name_to_id.get(p.name) == identity.id],
                                         harvest, staging, final_dir)
        room = video_room(settings.max_refs, len(chosen_photos)) if candidates else 0
        scored = score_against_centroid(candidates, identity.centroid, harvest, stream.pools.uses_norm)
        video_refs = select_references(scored, harvest, fps, k=max(room, 0), verify=verify)
        # Whether the second detector saw a face in this identity's best frames: False flags a
        # likely false detection (a hand, a microphone) whose tracks render may leave alone.
        tried = verifier is not None and room > 0 and any(c.terms.total > 0 for c in scored)
        face_verified[identity.id] = bool(video_refs) if tried else None
        photo_refs = chosen_photos[: settings.max_refs - len(video_refs)]
        for number, pick in enumerate(video_refs):
            c = pick.candidate
            name = f"identity{identity.id:03d}_ref{number}_f{c.frame_index:07d}.png"
            shutil.copyfile(pool_dir / c.crop_file, staging / name)
            reference = Reference(identity.id, c.track, c.frame_index, c.box, tuple(map(tuple, c.kps5.tolist())),
                                  pick.terms.total, pick.terms, "video")
            references.append(HarvestedReference(reference, (final_dir / name).resolve(), c.crop_kps5, c.embedding))
        references.extend(photo_refs)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(staging, final_dir)
    set_aside = tuple(RejectedTrack(r.to_track(None), rejected[r.id]) for r in all_records if r.id in rejected)
    return Analysis(VERSION, video_json, shots, tracks, tuple(identities), tuple(references),
                    settings_json, {r.id: embeddings[r.id] for r in all_records if r.id in embeddings},
                    {r.id: r.reliability for r in all_records if r.reliability is not None}, face_verified, output_path,
                    set_aside)
