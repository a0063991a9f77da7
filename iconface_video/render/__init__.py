"""Render: batched restoration of tracked faces, temporal stability, paste-back, report.

The entry point is ``render_video(analysis, input_path, output_path, RenderOptions(...))``
(``video.py``): ``prepare.py`` decides the render up to its first frame, ``transform.py`` builds
the streaming frame transform (``engine.py``) that ``job.run_job`` runs.
"""

from iconface_video.render.options import RenderOptions, frame_range
from iconface_video.render.report import RenderReport
from iconface_video.render.video import render_video

__all__ = ["RenderOptions", "RenderReport", "frame_range", "render_video"]
