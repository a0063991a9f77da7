"""The whole analysis against the hand-made ground truth of the multi-shot clips (slow: whole clips).

Reports shot-boundary precision/recall, identity-count error and, for the Hamilton clip, the
purity of the harvested references of the people we hold labelled photos of: a reference is pure
when its embedding agrees with one of its person's photos at least as well as the harvest's own
"someone else" bound (cosine 0.85). Also reported: how often its nearest labelled person is the
right one (stricter, and unfair to profile views, which the labelled photos do not show).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from iconface_video.analysis.harvest import HarvestSettings
from iconface_video.analysis.settings import AnalyzeSettings
from iconface_video.analysis.video import analyze_video
from iconface_video.imageio import imread

SAME_PERSON = HarvestSettings().reject_similarity
GROUND_TRUTH = json.loads((Path(__file__).parent / "data" / "clips_groundtruth.json").read_text())["clips"]


def boundary_scores(found: list[int], expected: list[int], tolerance: int = 1) -> tuple[float, float]:
    hits = sum(any(abs(f - e) <= tolerance for f in found) for e in expected)
    matched = sum(any(abs(f - e) <= tolerance for e in expected) for f in found)
    return matched / max(len(found), 1), hits / max(len(expected), 1)


def photo_embeddings(media_dir: Path, truth: dict) -> dict[str, np.ndarray]:
    """Unit embeddings ``float32[N, D]`` of each labelled person's photos."""
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder

    detector, embedder = load_detector("mtcnn"), load_embedder("dlib")
    out = {}
    for person, info in truth["people"].items():
        vectors = []
        for rel in info.get("photos", []):
            image = cv2.cvtColor(imread(str(media_dir / rel)), cv2.COLOR_BGR2RGB)
            face = max(detector.detect([image])[0], key=lambda o: o.eye_distance)
            vectors.append(embedder.embed(image, face.kps5[None])[0])
        if vectors:
            v = np.stack(vectors)
            out[person] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def evaluate(media_dir: Path, clip: str, out: Path, detect_every: int = 1) -> dict:
    truth = GROUND_TRUTH[clip]
    analysis = analyze_video(media_dir / truth["path"], out, AnalyzeSettings(detect_every=detect_every, checkpoint_every=0))
    found = [s.start for s in analysis.shots if s.transition in ("cut", "fade")]
    precision, recall = boundary_scores(found, truth["cuts"])
    with_refs = [i for i in analysis.identities if analysis.references_for(i.id)]
    # Identities the second face detector rejected (face_verified False) are flagged false detections, not people.
    people_like = [i for i in analysis.identities if analysis.face_verified.get(i.id) is not False]
    result = {
        "clip": clip, "cuts_found": found, "cuts_expected": truth["cuts"], "precision": precision, "recall": recall,
        "tracks": len(analysis.tracks), "identities": len(analysis.identities), "identities_with_refs": len(with_refs),
        "people": len(truth["people"]), "optional_faces": truth.get("optional", []),
        "identities_not_flagged": len(people_like),
        "identity_count_error_raw": len(analysis.identities) - len(truth["people"]),
        "identity_count_error": len(people_like) - len(truth["people"]),
        "references": len(analysis.references),
    }
    labelled = photo_embeddings(media_dir, truth)
    if labelled:
        # Which identity is each labelled person? The one whose centroid is closest to their photos.
        verdicts = []
        for person, photos in labelled.items():
            best = max(with_refs, key=lambda i: float(np.mean(photos @ i.centroid)))
            for ref in analysis.references_for(best.id):
                v = ref.embedding / np.linalg.norm(ref.embedding)
                nearest = max(labelled, key=lambda p: float(np.max(labelled[p] @ v)))
                similarity = float(np.max(photos @ v))
                verdicts.append((person, ref.reference.frame_index, similarity >= SAME_PERSON, nearest == person, similarity))
        result["purity_checked"] = verdicts
        result["purity"] = sum(v[2] for v in verdicts) / max(len(verdicts), 1)
        result["nearest_person_rate"] = sum(v[3] for v in verdicts) / max(len(verdicts), 1)
    return result


@pytest.mark.slow
@pytest.mark.media
def test_hamilton_against_ground_truth(media_dir, tmp_path):
    result = evaluate(media_dir, "short_hamilton_clip", tmp_path / "ham.iconface.json", detect_every=2)
    print(json.dumps(result, indent=1))
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert abs(result["identity_count_error"]) <= 2
    assert result["purity"] == 1.0, result["purity_checked"]


if __name__ == "__main__":  # python tests/test_analysis_groundtruth.py MEDIA_DIR OUT_DIR [clip ...]
    import sys
    import torch

    torch.set_num_threads(1)
    media, folder = Path(sys.argv[1]), Path(sys.argv[2])
    for name in sys.argv[3:] or list(GROUND_TRUTH):
        print(json.dumps(evaluate(media, name, folder / f"{name}.iconface.json"), default=str), flush=True)
