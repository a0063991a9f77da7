"""Small, safe file writes shared by the stages that write beside their outputs, and the rules
every writer follows before it writes: an existing file is replaced only when asked, an input
never, and every name a job derives from its output must fit the file system."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from iconface_video.errors import OutputError

# The longest name a job derives from its output's name adds this many bytes to it (the
# work folder ``.OUT.iconface-work-<16 hex>``, and the temporary copy of the analysis
# checkpoint ``.OUT-stem.iconface.json.<8 random>.tmp.partial``), with a little to spare.
DERIVED_NAME_BYTES = 40
# Most file systems (ext4, XFS, btrfs, APFS, NTFS in UTF-16 units) allow 255 bytes per name.
NAME_MAX = 255


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) atomically to ``path``; see ``write_bytes_atomic``.

    A file name that is not valid UTF-8 reaches text as lone surrogates ("\\udcff"); they are
    written as that escape, which keeps the file valid UTF-8 and, inside a JSON string, reads
    back as the same name.
    """
    write_bytes_atomic(text.encode("utf-8", "backslashreplace"), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` through ``atomic_path``, synced to disk before the rename.

    A reader sees the old file or the new one, never half of one. A failure (a full disk
    included) is a one-line ``OutputError`` and leaves nothing behind.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        raise OutputError(f"{path}: could not be written ({error.strerror}); free space or choose another folder") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The one way this project writes a file (text, media, weights, plots): a reader sees the old
    file or the new one, never half of one, and on any error (or Ctrl-C) the temporary file is
    removed and whatever was at ``path`` is untouched. The temporary name keeps the extension,
    so writers that pick a format from the name (FFmpeg's muxers, image encoders) pick the right
    one; it is as long as ``.<name>.<8 random>.tmp``. The file gets ordinary permissions (0666
    less the umask): ``mkstemp`` makes it private, but outputs, reports and manifests are for
    every user of the folder. Errors raised inside the block pass through unchanged.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    stem = path.stem[:max(1, NAME_MAX - 32 - len(path.suffix))]
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path.parent}: cannot write there ({error.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # After the writer, not before: some (safetensors) replace the file with a private one.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_folder(path: str | os.PathLike) -> None:
    """Raise ``OutputError`` unless a file can be created in ``path``'s folder."""
    folder = Path(path).parent
    if not folder.exists():
        raise OutputError(f"{folder}: output folder does not exist")
    if not folder.is_dir():
        raise OutputError(f"{folder}: is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"{folder}: cannot write to the output folder ({error.strerror})") from None


def check_new_file(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                   option: str = "-o") -> None:
    """Refuse to write ``path`` where it would destroy something: an input (even with
    ``overwrite``), an existing file without ``overwrite``, a folder; or where it cannot be
    created (no such folder, a name too long). ``option`` names the option the user gave it with.
    """
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(f"{path}: is the input file; choose another {option}")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name with {option}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: is not a regular file; choose another {option}")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{folder}: folder does not exist; create it or choose another {option}")
    check_name_fits(path, 0, option=option)


def check_name_fits(path: str | os.PathLike, derived_bytes: int = DERIVED_NAME_BYTES, *, option: str = "-o") -> None:
    """Refuse a file name that, with ``derived_bytes`` more for the names derived from it, would
    exceed the file system's limit (``ENAMETOOLONG`` half-way through a job otherwise)."""
    path = Path(path)
    limit = _name_max(path.parent) - derived_bytes
    length = len(os.fsencode(path.name))
    if length > limit:
        raise OutputError(f"{path.name[:40]}...: the name is {length} bytes, and the files written beside it need it to "
                          f"be at most {limit}; choose a shorter name with {option}")


def shown(path: str | os.PathLike, *, one_line: bool = True) -> str:
    """``path`` (or a message naming one) for the terminal: bytes that are not UTF-8 (kept by
    Python as lone surrogates) become U+FFFD, so printing never fails, and control characters
    (a newline in a file name) are escaped, so a one-line message stays one line (with
    ``one_line=False`` newlines are kept: a multi-line summary)."""
    text = os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not one_line:
        return "\n".join(shown(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _name_max(folder: Path) -> int:
    try:
        return min(NAME_MAX, os.pathconf(folder if folder.is_dir() else ".", "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask
