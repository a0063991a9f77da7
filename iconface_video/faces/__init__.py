"""Face analysis: detection with 5 landmarks, alignment, identity embeddings, soft masks.

- ``detect.load_detector(backend="auto"|"mtcnn"|"insightface"|"facexlib", models_dir, device)``
  -> ``Detector.detect(images, frame_indices=None, rotation=0) -> list[list[FaceObs]]``
  (``backend``: the per-image loop the RetinaFace and SCRFD backends share)
- ``orientation``: stored frame <-> upright view (``upright``, ``points_to_stored``,
  ``detect_rotated``) and the vote on which way is up (``OrientationVote``)
- ``align``: ``template``, ``estimate_affine``, ``warp_faces``, ``invert_affine``, and the
  embedders' uint8 warps ``warp_to_template``, ``arcface112_to``
- ``embed.load_embedder("dlib"|"arcface"|"adaface", models_dir, device)`` -> ``Embedder``
  with ``embed(image, kps5)`` and ``embed_aligned112(crops)`` (unnormalised features)
- ``checks``: the input checks of detectors and embedders (one-line ``InputError``)
- ``photos``: ``IMAGE_SUFFIXES``, ``parse_ref_spec`` (``--refs NAME=FOLDER``), ``photo_files``,
  and ``main_face``, the one rule for which face of a photo is its subject
- ``masks``: ``landmark_mask``, ``load_parser``, ``parsing_mask``
- ``draw``: ``annotate`` and ``contact_sheet`` for pictures a human looks at

Most submodules import torch and friends, so this package imports nothing itself.
"""
