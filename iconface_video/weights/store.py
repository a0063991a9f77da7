"""Where weight files are looked for, and how they are fetched and verified.

Look-up order for every file: ``--models-dir``, ``$ICONFACE_MODELS``, the user cache
(``~/.cache/iconface-video/models``, or ``$XDG_CACHE_HOME``), then the copy the package embeds.
Inside a models folder a model's files sit in ``<dir>/<subdir>/`` when the catalogue names a
subdir (``buffalo_l/``, ``facexlib/``), else in ``<dir>/<model name>/``, or directly in ``<dir>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iconface_video.errors import BadWeightsError, MissingModelError, OutputError
from iconface_video.weights.catalogue import Model, ModelFile, get_model

PACKAGE_DIR = Path(__file__).resolve().parent


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iconface-video" / "models"


def search_dirs(models_dir: str | Path | None = None) -> list[Path]:
    """The user-writable folders searched, in order (the embedded copy comes after them)."""
    dirs = []
    if models_dir is not None:
        dirs.append(Path(models_dir).expanduser())
    if os.environ.get("ICONFACE_MODELS"):
        dirs.append(Path(os.environ["ICONFACE_MODELS"]).expanduser())
    dirs.append(user_cache_dir())
    return dirs


def embedded_dir(model: Model) -> Path | None:
    """The folder inside this package (or an installed distribution) that carries ``model``."""
    if model.embedded_dir is not None:
        return PACKAGE_DIR / model.embedded_dir
    if model.package is not None:
        top, _, rest = model.package.partition("/")
        # find_spec locates the distribution without importing it (face_recognition_models
        # imports pkg_resources, which recent setuptools no longer has).
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / rest
    return None


def candidate_paths(model: Model, file: ModelFile, models_dir: str | Path | None = None) -> list[Path]:
    """Every path where ``file`` may be, in look-up order."""
    paths = []
    for base in search_dirs(models_dir):
        paths.append(base / (model.subdir or model.name) / file.name)
        paths.append(base / file.name)
    embedded = embedded_dir(model)
    if embedded is not None:
        paths.append(embedded / file.name)
    return paths


def install_path(model: Model, file: ModelFile, models_dir: str | Path | None = None) -> Path:
    """Where ``fetch`` puts ``file`` (and where the missing-file message tells users to put it)."""
    return search_dirs(models_dir)[0] / (model.subdir or model.name) / file.name


def model_folder(model: Model | str, models_dir: str | Path | None = None) -> Path:
    """The folder holding all of ``model``'s files (insightface packs load a whole folder)."""
    model = get_model(model) if isinstance(model, str) else model
    return find_model_file(model, model.files[0].name, models_dir).parent


def find_model_file(model: Model | str, file: str, models_dir: str | Path | None = None) -> Path:
    """The first existing copy of ``model``'s ``file``; else ``MissingModelError`` in one line."""
    model = get_model(model) if isinstance(model, str) else model
    entry = next((f for f in model.files if f.name == file), None)
    if entry is None:
        raise KeyError(f"model {model.name!r} has no file {file!r}")
    for path in candidate_paths(model, entry, models_dir):
        if path.is_file():
            return path
    how = f"run `iconface-video models fetch {model.name}`" if entry.urls or model.archive else model.obtain
    raise MissingModelError(
        f"model file {file} ({model.name}) not found; put it at {install_path(model, entry, models_dir)} "
        f"or {how} (also searched --models-dir, $ICONFACE_MODELS, {user_cache_dir()})"
    )


def is_present(model: Model, models_dir: str | Path | None = None) -> bool:
    """True when every file of ``model`` is found."""
    try:
        for file in model.files:
            find_model_file(model, file.name, models_dir)
    except MissingModelError:
        return False
    return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileCheck:
    """The result of verifying one file: ``status`` is "ok", "missing", "mismatch" or "unpinned"."""

    model: str
    file: str
    status: str
    path: Path | None
    detail: str = ""


def verify(model: Model, models_dir: str | Path | None = None) -> list[FileCheck]:
    """Check each of ``model``'s files: present, right size, right SHA-256 (where one is pinned)."""
    checks = []
    for file in model.files:
        try:
            path = find_model_file(model, file.name, models_dir)
        except MissingModelError:
            checks.append(FileCheck(model.name, file.name, "missing", None))
            continue
        if file.size is not None and path.stat().st_size != file.size:
            checks.append(FileCheck(model.name, file.name, "mismatch", path, f"size {path.stat().st_size}, expected {file.size}"))
            continue
        digest = sha256_of(path)
        if file.sha256 is None:
            checks.append(FileCheck(model.name, file.name, "unpinned", path, f"sha256 {digest} (upstream publishes none)"))
        elif digest != file.sha256:
            checks.append(FileCheck(model.name, file.name, "mismatch", path, f"sha256 {digest}, expected {file.sha256}"))
        else:
            checks.append(FileCheck(model.name, file.name, "ok", path))
    return checks


def download(file: ModelFile, target: Path, timeout: float = 60.0) -> str:
    """Download ``file`` from its first reachable URL to ``target`` (atomically); return its SHA-256.

    Raises ``MissingModelError`` with one line when no URL answers, ``BadWeightsError`` when the
    checksum does not match (the partial download is removed either way).
    """
    if not file.urls:
        raise MissingModelError(f"{file.name} has no download URL; put it in place by hand")
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in file.urls:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if file.sha256 is not None and digest.hexdigest() != file.sha256:
                raise BadWeightsError(
                    f"{file.name} from {url}: checksum {digest.hexdigest()} does not match {file.sha256}; not installed"
                )
            tmp.replace(target)
            return digest.hexdigest()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            failures.append(f"{url} ({reason})")
        finally:
            tmp.unlink(missing_ok=True)
    raise MissingModelError(
        f"could not download {file.name}: {'; '.join(failures)}; check the network, or download it "
        f"elsewhere and put it at {target}"
    )


def derive(model: Model | str, make: Callable[[Path], None], models_dir: str | Path | None = None) -> Path:
    """The first existing copy of a derived model's one file (one converted from another model's
    weights, ``Model.derived_from``); when there is none, ``make(path)`` writes it.

    The new file goes to a temporary name beside ``install_path``, must match the catalogue's size
    and SHA-256 (the conversion is deterministic), and is then renamed into place, so concurrent
    runs and interrupted ones never leave a partial file. ``make`` raises ``MissingModelError``
    or ``BadWeightsError`` when the source is missing or unusable; an unwritable folder raises
    ``OutputError``.
    """
    model = get_model(model) if isinstance(model, str) else model
    (file,) = model.files
    for path in candidate_paths(model, file, models_dir):
        if path.is_file():
            return path
    target = install_path(model, file, models_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=target.parent)
        os.close(handle)
    except OSError as error:
        raise OutputError(
            f"cannot write {target} ({error.strerror or error}); pass --models-dir or set $ICONFACE_MODELS "
            f"to a writable folder (it is converted from {model.derived_from} there once)"
        ) from None
    tmp = Path(tmp_name)
    try:
        make(tmp)
        size, digest = tmp.stat().st_size, sha256_of(tmp)
        if (file.size is not None and size != file.size) or (file.sha256 is not None and digest != file.sha256):
            raise BadWeightsError(
                f"{file.name} converted from {model.derived_from}: size {size}, sha256 {digest}, expected "
                f"{file.size}, {file.sha256}; check the installed {model.derived_from} files (`iconface-video models verify`)"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(model: Model, models_dir: str | Path | None = None) -> list[Path]:
    """Download ``model``'s files (or its archive, then unpack its files) into the first search dir."""
    if model.archive is not None:
        first = install_path(model, model.files[0], models_dir)
        archive_path = first.parent / model.archive.name
        try:
            download(model.archive, archive_path)
        except MissingModelError as error:
            members = ", ".join(f.name for f in model.files)
            raise MissingModelError(f"{error}; or unpack {members} from it into {first.parent}") from None
        try:
            with zipfile.ZipFile(archive_path) as archive:
                names = archive.namelist()
                written = []
                for file in model.files:
                    member = next((n for n in names if n.split("/")[-1] == (file.archive_member or file.name)), None)
                    if member is None:
                        raise BadWeightsError(f"{archive_path}: has no {file.name}; the upstream archive changed")
                    target = install_path(model, file, models_dir)
                    tmp = target.with_name(f".{target.name}.part")
                    with archive.open(member) as source, open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out)
                    tmp.replace(target)
                    written.append(target)
        except zipfile.BadZipFile:
            raise BadWeightsError(f"{archive_path}: not a zip archive; delete it and fetch again") from None
        archive_path.unlink(missing_ok=True)
        return written
    written = []
    for file in model.files:
        if any(path.is_file() for path in candidate_paths(model, file, models_dir)):
            continue
        target = install_path(model, file, models_dir)
        download(file, target)
        written.append(target)
    return written
