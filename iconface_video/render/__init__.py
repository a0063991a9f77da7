"""Render: batched restoration of tracked faces, temporal stability, paste-back, report.

The entry point is ``render_video(analysis, input_path, output_path, RenderOptions(...))``
(``render.py``); ``engine.py`` is the streaming frame transform it hands to ``run_job``.
"""

from iconface_video.render.render import RenderOptions, frame_range, render_video
from iconface_video.render.report import RenderReport

__all__ = ["RenderOptions", "RenderReport", "frame_range", "render_video"]
