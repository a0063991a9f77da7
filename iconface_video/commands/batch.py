"""``iconface-video batch "season1/*.mkv" -o restored/``: many videos through a resumable queue.

Every file runs the main command's whole job (analysis, then restoration) with the main
command's own restoration, encode and analysis options (the same click decorators), so a batch
output equals ``iconface-video VIDEO`` on the same file with the same options, and its analysis
file lands beside it (``OUT_DIR/e01.iconface.json``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from iconface_video.commands.render import options_from, render_options
from iconface_video.commands.run import analysis_options, analyze_settings
from iconface_video.errors import UserError

if TYPE_CHECKING:
    from iconface_video.batch.local_backend import Backend


def _parse_devices(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    devices = [d.strip() for d in value.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise click.BadParameter(f"{value!r}: give GPU numbers separated by commas, e.g. 0,1")
    return devices


class Reporter:
    """Batch events as JSON lines on stdout (``--json``), or short human lines on stderr."""

    def __init__(self, json_lines: bool, quiet: bool) -> None:
        self.json_lines = json_lines
        self.quiet = quiet

    def __call__(self, event: str, **fields: Any) -> None:
        if self.json_lines:
            sys.stdout.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str) + "\n")
            sys.stdout.flush()
            return
        line = self._human(event, fields)
        if line and (not self.quiet or event in ("file_failed", "batch_done")):
            click.echo(line, err=True)

    @staticmethod
    def _human(event: str, f: dict[str, Any]) -> str | None:
        name = Path(str(f.get("file", ""))).name
        if event == "batch_start":
            return f"batch: {f['files']} files, {f['todo']} to do, {f['skipped']} skipped; manifest {f['manifest']}"
        if event == "file_start":
            return f"start   {name} on {f['worker']}" + (f" (attempt {f['attempt']})" if f["attempt"] > 1 else "")
        if event == "file_skipped":
            return f"skip    {name}: {f['reason']}"
        if event == "file_done":
            return f"done    {name} ({f['frames']} frames, {f['seconds']:.1f} s)"
        if event == "file_failed":
            return f"FAILED  {name}: {f['reason']}"
        if event in ("warning", "resume"):
            return f"{event:7} {name}: {f.get('message', '')}"
        if event == "batch_done":
            text = f"batch: {f['done']} done, {f['failed']} failed, {f['skipped']} skipped in {f['seconds']:.1f} s"
            failures = "".join(f"\n  failed: {x['output']}: {x['reason']}" for x in f["failures"])
            return text + failures
        return None


@click.command(name="batch")
@click.argument("inputs", metavar="VIDEOS...", nargs=-1, required=True)
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the restored videos, the manifest and the lock files.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Local worker processes [default: one per GPU, else 1].")
@click.option("--devices", callback=_parse_devices, default=None,
              help="GPUs to use, one worker each, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES per worker).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS", default=None,
              help="Run the work as Ray tasks: 'auto' (an existing or a new local cluster) or a cluster address.")
@click.option("--split-shots", is_flag=True, help="Split each video at shot boundaries into tasks that run in parallel.")
@click.option("--min-task-frames", type=click.IntRange(1), default=250, show_default=True,
              help="With --split-shots: frames per task at least (short shots are grouped).")
@click.option("--overwrite", is_flag=True, help="Replace outputs in the folder that this batch did not make.")
@click.option("--no-retry", is_flag=True, help="Leave files that failed in an earlier run alone.")
@render_options
@analysis_options
@click.option("--json", "json_lines", is_flag=True, help="Events as JSON lines on stdout (see docs/json-events.md).")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary.")
def command(inputs: tuple[str, ...], output_dir: Path, workers: int | None, devices: list[str] | None,
            ray_address: str | None, split_shots: bool, min_task_frames: int, overwrite: bool, no_retry: bool,
            json_lines: bool, quiet: bool, **params: Any) -> None:
    """Restore VIDEOS (paths, quoted globs like "season1/*.mkv", or folders) into OUTPUT_DIR.

    A manifest in OUTPUT_DIR records every file's state; a rerun skips what is done, retries what
    failed and resumes what was interrupted. One bad file never stops the batch; the exit code
    is 1 if any file failed.
    """
    from iconface_video.batch.driver import run_batch
    from iconface_video.batch.items import BatchOptions, JobSpec
    from iconface_video.batch.local_backend import LocalBackend, worker_specs
    from iconface_video.batch.schedule import expand_inputs

    if params["dry_run"]:
        raise UserError("batch: --dry-run is for one file; run iconface-video VIDEO --dry-run")
    if split_shots and params["preview"]:
        raise UserError("--split-shots cannot make --preview videos (input | restored); drop one of them")
    if ray_address is not None and (workers is not None or devices is not None):
        raise UserError("--ray runs on the cluster's resources; leave out --workers and --devices")
    if workers is not None and devices is not None:
        raise UserError("give either --workers (CPU processes) or --devices (one worker per GPU), not both")
    paths = expand_inputs(inputs)
    # --refs photos are the analysis's: analyze_settings puts them there.
    job = JobSpec(options=options_from(params), analyze=analyze_settings(params))
    options = BatchOptions(out_dir=output_dir.resolve(), split_shots=split_shots, min_task_frames=min_task_frames,
                           overwrite=overwrite, retry_failed=not no_retry)
    if ray_address is not None:
        from iconface_video.batch.ray_backend import RayBackend

        def backend() -> Backend:
            return RayBackend(job, ray_address)
    else:
        specs = worker_specs(workers, devices)

        def backend() -> Backend:
            return LocalBackend(specs, job)

    summary = run_batch(paths, job, options, backend, Reporter(json_lines, quiet))
    # sys.exit, not click's Exit: with standalone_mode off, click returns Exit's code instead of exiting.
    if summary.exit_code:
        sys.exit(summary.exit_code)
