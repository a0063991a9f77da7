"""The IConFace restoration core: identity-structure asymmetric conditioning at trainable scale.

- ``config``: ``CoreConfig``, ``load_config("cpu" | "gpu" | path)``
- ``model``: ``IConFaceCore`` (joint forward, cached condition encoding)
- ``batch``: ``TrainBatch`` (core-design §5.2), ``sample_t``
- ``losses``: flow-matching velocity loss from x-prediction, identity loss hooks
- ``sampler``: few-step Euler sampler with track-shared noise
- ``checkpoint``: safetensors + JSON sidecar save/load with shape validation
- ``restorer``: ``Restorer`` / ``RestoreOutput``, the render stage's API

Import from the submodules; this package imports nothing heavy on its own.
"""
