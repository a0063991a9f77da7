"""The render's frame transform: deinterlace, then the face engine with its restorer, mask and
identity guard (``frame_process``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from iconface_video.io.transcode import FrameProcess
from iconface_video.render.batch_restorer import BatchRestorer
from iconface_video.render.engine import FaceEngine
from iconface_video.render.guard import EmbedFn, IdentityGuard, reference_anchor
from iconface_video.render.interlace import deinterlace
from iconface_video.render.options import RenderOptions
from iconface_video.render.plan import side_template
from iconface_video.render.prepare import PreparedRender
from iconface_video.render.references import per_track, with_features
from iconface_video.render.report import StillCollector
from iconface_video.render.temporal import TemporalSettings
from iconface_video.types import Frame


def load_guard_embedder(device: torch.device | str = "cpu", models_dir: str | os.PathLike | None = None) -> EmbedFn:
    """The identity guard's features: the pipeline's dlib embedder on ``device`` (ArcFace-112
    uint8 crops in, ``float32[N, 128]`` out)."""
    from iconface_video.errors import MissingModelError
    from iconface_video.faces.embed import load_embedder

    try:
        return load_embedder("dlib", models_dir, device=str(device)).embed_aligned112
    except MissingModelError as error:
        raise MissingModelError(f"{error}; or turn the identity guard off with --identity-guard 0") from None


def identity_guard(prepared: PreparedRender, options: RenderOptions,
                   embed: EmbedFn | None = None) -> IdentityGuard | None:
    """The render's identity guard (None when ``options`` turn it off): each track's anchor from
    its identity's references, computed once per identity."""
    if options.identity_guard <= 0 or options.strength <= 0:
        return None
    embed = embed or load_guard_embedder(prepared.device, options.models_dir)
    restorer = prepared.restorer
    by_identity = {i: reference_anchor(embed, r.id_crops, r.weights.numpy()) for i, r in prepared.by_identity.items()}
    anchors = {t.id: by_identity[t.identity] for t in prepared.analysis.tracks
               if by_identity.get(t.identity) is not None}
    return IdentityGuard(embed, anchors, lambda side: side_template(restorer.template, restorer.crop_size, side),
                         options.identity_guard, options.strength)


def frame_process(prepared: PreparedRender, options: RenderOptions,
                  embed: EmbedFn | None = None) -> tuple[FaceEngine, StillCollector, FrameProcess]:
    """The render's frame transform (and its engine and stills, for the report).

    ``embed`` replaces the identity guard's embedder (``load_guard_embedder``), e.g. one already
    loaded. ``process`` may be called on any run of whole segments (frames from a segment start
    on), one call per run: all state restarts at segment starts, so the frames equal a
    whole-file render's. Different processes may render different segments of one file this way.
    """
    restorer = prepared.restorer
    stills = StillCollector(prepared.names)
    engine = FaceEngine(
        prepared.plan,
        BatchRestorer(restorer, per_track(prepared.analysis,
                                          {i: with_features(r, restorer) for i, r in prepared.by_identity.items()}),
                      seed=options.seed, steps=options.steps),
        prepared.mask,
        guard=identity_guard(prepared, options, embed),
        strength=options.strength,
        temporal=TemporalSettings.from_strength(options.temporal),
        device=prepared.device,
        batch_size=options.batch_size,
        segment_starts=list(prepared.segment_starts),
        preview=options.preview,
        observer=stills.observe,
    )
    fields = prepared.interlace

    def process(frames: Iterator[Frame]) -> Iterator[Frame]:
        if fields.interlaced:
            frames = deinterlace(frames, fields, list(prepared.segment_starts))
        return engine.process(frames)

    return engine, stills, process
