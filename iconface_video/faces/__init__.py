"""Face analysis: detection with 5 landmarks, alignment, identity embeddings, soft masks.

- ``detect.load_detector(backend="auto"|"mtcnn"|"insightface"|"facexlib", models_dir, device)``
  -> ``Detector.detect(images, frame_indices=None, rotation=0) -> list[list[FaceObs]]``
- ``align``: ``template``, ``estimate_affine``, ``warp_faces``, ``invert_affine``
- ``embed.load_embedder("dlib"|"arcface"|"adaface", models_dir, device)`` -> ``Embedder``
  with ``embed(image, kps5)`` and ``embed_aligned112(crops)`` (unnormalised features)
- ``masks``: ``landmark_mask``, ``load_parser``, ``parsing_mask``
- ``draw``: ``annotate`` and ``contact_sheet`` for pictures a human looks at

Submodules import torch and friends, so this package imports nothing itself.
"""
