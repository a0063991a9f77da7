"""``iconface-video doctor``: one line per check of this machine, with what to do about failures."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.command(name="doctor")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also look for weights here (as the other commands' --models-dir).")
@click.option("--disk-path", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where outputs will go: the free-space check looks there.")
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per check on stdout (see docs/json-events.md).")
def command(models_dir: Path | None, disk_path: Path, json_lines: bool) -> None:
    """Check torch, CUDA, Triton, codecs, face libraries, weights (and their licences), disk and Ray.

    Exit code 0 when everything essential works (warnings only switch features off), else 1.
    """
    from iconface_video.batch.doctor import exit_code, run_checks

    checks = run_checks(models_dir, disk_path)
    code = exit_code(checks)
    failed = [c.name for c in checks if c.status == "fail" and c.essential]
    if json_lines:
        for check in checks:
            sys.stdout.write(json.dumps({"event": "check", "time": round(time.time(), 3), **check.to_json()}) + "\n")
        sys.stdout.write(json.dumps({"event": "doctor_done", "time": round(time.time(), 3), "ok": code == 0,
                                     "failed": failed, "warnings": sum(c.status == "warn" for c in checks)}) + "\n")
        sys.stdout.flush()
    else:
        for check in checks:
            click.echo(check.line())
        verdict = "ready" if code == 0 else f"NOT ready: fix {', '.join(failed)}"
        click.echo(f"doctor: {verdict} ({sum(c.status == 'warn' for c in checks)} warnings)")
    if code:  # sys.exit: with standalone_mode off, click would return Exit's code, not exit
        sys.exit(code)
