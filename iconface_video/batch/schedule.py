"""Which inputs a batch run takes on: the files its patterns name, where each one's output goes,
and which of them are done already (same settings, same restorer), failed, or someone else's;
and how a split file's segments are grouped into tasks (``group_segments``).
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iconface_video.batch.items import BatchOptions, JobSpec
from iconface_video.batch.manifest import FileRecord, manifest_path, read_manifest, update_manifest
from iconface_video.errors import InputError, MissingModelError

# Inputs: every container FFmpeg commonly meets, more than the ones the encoder writes.
INPUT_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".nut")


def expand_inputs(patterns: Iterable[str]) -> list[Path]:
    """Files named by ``patterns``: paths, quoted globs (``season1/*.mkv``, ``**`` recursive), or
    folders (their video files). Sorted and deduplicated; a pattern matching nothing is an error."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES]
        elif path.exists():
            matches = [path]
        else:
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if Path(m).is_file()]
        if not matches:
            raise InputError(f"{pattern}: matches no video files; check the pattern (quote it, so the shell leaves it to iconface-video)")
        for match in matches:
            found.setdefault(match.resolve(), None)
    return list(found)


def output_for(input_path: Path, out_dir: Path) -> Path:
    """``season1/e01.mkv`` -> ``<out_dir>/e01.mkv`` (the folder says it is restored)."""
    return out_dir / input_path.name


def settings_json(job: JobSpec, split_shots: bool) -> dict[str, Any]:
    """The settings recorded in the manifest; a rerun with different ones redoes finished files."""
    options = asdict(job.options)
    options.pop("overwrite", None)  # the batch decides that per file
    data = {"options": options, "analyze": asdict(job.analyze), "split_shots": split_shots}
    return json.loads(json.dumps(data, default=str))


def models_in_use(checkpoint: str | None, models_dir: str | Path | None = None) -> dict[str, str]:
    """The catalogued models found on this machine, with their pinned SHA-256, and the restorer
    as ``restorer``: the checkpoint's file name and SHA-256 (``checkpoint`` None: the embedded one)."""
    from iconface_video.weights import MODELS, is_present

    models = {m.name: (m.files[0].sha256 or "unpinned") for m in MODELS if is_present(m, models_dir)}
    models["restorer"] = restorer_version(checkpoint)
    return models


def restorer_version(checkpoint: str | None) -> str:
    """``"NAME sha256:HEX"`` of the restorer checkpoint a batch will load (None: the embedded one).

    A missing checkpoint is a one-line error here, before any worker starts.
    """
    from iconface_video.core.restorer import EMBEDDED_CHECKPOINT

    path = Path(checkpoint) if checkpoint else EMBEDDED_CHECKPOINT
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise MissingModelError(f"restorer checkpoint {path} cannot be read ({error.strerror}); "
                                "pass one with --checkpoint") from None
    return f"{path.name} sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Skip:
    """An input this run leaves alone, and why."""

    input: Path
    output: Path
    reason: str


def files_to_do(inputs: Sequence[Path], options: BatchOptions, settings: dict[str, Any],
                models: dict[str, str]) -> tuple[list[FileRecord], list[Skip]]:
    """Decide for each input whether it must be (re)done; writes the new entries to the manifest.

    ``settings`` (``settings_json``) and ``models`` (``models_in_use``) are what the manifest
    records for each file. Skips what is done with the same settings and restorer and still
    present; redoes what failed (unless ``retry_failed`` is off), what was running when a run
    died (the segmented encoder resumes it), what changed settings; refuses to replace an output
    this batch did not make unless ``overwrite``. Two inputs with the same file name would write
    the same output: an error.
    """
    out_dir = options.out_dir
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for path in inputs:
        other = by_name.setdefault(path.name, path)
        if other != path:
            raise InputError(f"{other} and {path} would both be written to {output_for(path, out_dir)}; "
                             "run them into different output folders")
        other = by_stem.setdefault(path.stem, path)
        if other != path:
            raise InputError(f"{other} and {path} would both write their analysis to "
                             f"{out_dir / (path.stem + '.iconface.json')}; run them into different output folders")
        if output_for(path, out_dir).resolve() == path:
            raise InputError(f"{path}: the output folder is the input's folder; choose another with -o")
    existing = read_manifest(manifest_path(out_dir))
    todo: list[FileRecord] = []
    skipped: list[Skip] = []
    for path in inputs:
        output = output_for(path, out_dir)
        key = output.name
        record = existing.get(key)
        new = FileRecord(input=str(path), output=str(output), settings=settings, models=models,
                         attempts=record.attempts if record else 0)
        reason = _skip_reason(record, new, output, options)
        if reason is not None:
            skipped.append(Skip(path, output, reason))
            continue
        todo.append(new)
    # Only new inputs are written now; a failed or interrupted entry keeps its state and reason
    # until a worker actually takes it up again.
    update_manifest(manifest_path(out_dir), {Path(r.output).name: r for r in todo if Path(r.output).name not in existing})
    return todo, skipped


def _skip_reason(record: FileRecord | None, new: FileRecord, output: Path, options: BatchOptions) -> str | None:
    if record is None:
        if output.exists() and not options.overwrite:
            return "output exists but was not made by this batch; pass --overwrite to replace it"
        return None
    same_model = record.models.get("restorer") == new.models.get("restorer")
    if record.state == "done" and output.exists() and record.settings == new.settings and same_model:
        return "done"
    if record.state == "failed" and not options.retry_failed:
        return f"failed before ({record.reason}); not retried"
    return None


def group_segments(ranges: tuple[tuple[int, int], ...], pending: list[int], min_frames: int) -> list[tuple[int, ...]]:
    """Consecutive pending segment indices grouped into tasks of at least ``min_frames`` frames.

    ``ranges`` are the plan's [start, end) frame ranges. A group never spans a finished segment
    (it is reused, not redone); a short remainder joins the group before it when adjacent.
    """
    groups: list[list[int]] = []
    frames = 0
    for i in pending:
        contiguous = bool(groups) and groups[-1][-1] == i - 1
        if contiguous and frames < min_frames:
            groups[-1].append(i)
            frames += ranges[i][1] - ranges[i][0]
        else:
            groups.append([i])
            frames = ranges[i][1] - ranges[i][0]
    if len(groups) > 1 and frames < min_frames and groups[-2][-1] == groups[-1][0] - 1:
        groups[-2].extend(groups.pop())
    return [tuple(g) for g in groups]
