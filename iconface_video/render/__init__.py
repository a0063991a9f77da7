"""Render: batched restoration of tracked faces, temporal stability, paste-back, report.

Entry points (imported from their modules, so importing this package stays light):

- ``iconface_video.render.video.render_video(analysis, input_path, output_path, RenderOptions(...))``
- ``iconface_video.render.options.RenderOptions``: every user control of a render

``prepare.py`` decides a render up to its first frame; ``transform.py`` builds the streaming frame
transform (``engine.py``) that ``job.run_job`` runs.
"""
