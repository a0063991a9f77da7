"""``render_video``: an analysis file and its video in, the video with restored faces out.

```
analysis ─► plan (smoothed transforms, each track's crop side, small faces and unwanted identities set aside)
video ─► decode ─► [deinterlace] ─► align ─► restore (per-track refs + noise) ─► identity guard ─► blend ─► encode
```

Decoding, segmenting, encoding, muxing and resuming are the job seam's (``job.run_job``); the
render supplies the frame transform (``prepare.prepare_render``, ``transform.frame_process``),
the options that change it, and the report. Segments start at every shot start, where all
temporal state restarts anyway, so segment boundaries cost nothing in stability and a resumed
render equals an uninterrupted one.
"""

from __future__ import annotations

import os
import time

from iconface_video.analysis.schema import Analysis
from iconface_video.core.restorer import Restorer
from iconface_video.errors import InputError
from iconface_video.job import run_job
from iconface_video.progress import Progress
from iconface_video.render.engine import MaskFn
from iconface_video.render.guard import EmbedFn
from iconface_video.render.options import RenderOptions
from iconface_video.render.prepare import prepare_render
from iconface_video.render.report import RenderReport
from iconface_video.render.transform import frame_process


def render_video(
    analysis: Analysis | str | os.PathLike,
    input_path: str | os.PathLike | None,
    output_path: str | os.PathLike | None,
    options: RenderOptions = RenderOptions(),
    progress: Progress | None = None,
    *,
    restorer: Restorer | None = None,
    mask: MaskFn | None = None,
    embed: EmbedFn | None = None,
) -> RenderReport:
    """Restore the faces of ``analysis``'s tracks in ``input_path``; write ``output_path``.

    ``analysis`` is an ``Analysis`` or the path of an analysis file; ``input_path`` None means
    the video the analysis names; ``output_path`` None means ``VIDEO.restored.<ext>`` (or
    ``VIDEO.preview.<ext>`` with ``preview``). ``restorer``, ``mask`` and ``embed`` (the
    identity guard's ``embed_aligned112``) replace the defaults (tests, the batch runner sharing one loaded model).
    An interrupted render resumes when run again with the same options. Returns the report, also
    written into the analysis file (``render``) and, with ``options.html``, as an HTML page beside
    the output.
    """
    started = time.perf_counter()
    progress = progress or Progress.silent()
    prepared = prepare_render(analysis, input_path, output_path, options, restorer=restorer, mask=mask)
    timings = dict(prepared.timings)
    if options.dry_run:
        timings["total"] = time.perf_counter() - started
        return RenderReport.build(**prepared.report_base, timings=timings, dry_run=True)

    engine, stills, process = frame_process(prepared, options, embed)
    result = run_job(prepared.input_path, prepared.output_path, prepared.settings, process=process, progress=progress)
    timings.update({f"job_{k}": v for k, v in result.timings.items()})
    timings.update(engine.times.as_dict())
    timings["total"] = time.perf_counter() - started
    report = RenderReport.build(**prepared.report_base, timings=timings, dry_run=False,
                                resumed_frames=result.resumed_frames, stats=engine.times, stills=stills,
                                guard=engine.guard.stats if engine.guard is not None else None,
                                warnings=result.warnings,
                                sheets=_contact_sheets(prepared.analysis, prepared.names) if options.html else {})
    report.save(prepared.analysis_path, prepared.output_path, html=options.html)
    return report


def _contact_sheets(analysis: Analysis, names: dict[int, str]) -> dict:
    """The analysis's contact sheet of each identity with references (for the HTML page)."""
    from iconface_video.analysis.contact_sheet import contact_sheet

    sheets = {}
    for identity in analysis.identities:
        try:
            sheet = contact_sheet(analysis, identity.id)
        except InputError:  # a reference crop was deleted: the page goes without that sheet
            continue
        if sheet is not None:
            sheets[names[identity.id]] = sheet
    return sheets
