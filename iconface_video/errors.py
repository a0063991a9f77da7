"""User-facing errors: one clear line, a non-zero exit, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (bad input, missing weights, unwritable folder).

    The CLI prints ``str(error)`` as one line on stderr and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(UserError):
    """The input file cannot be used (missing, not a video, corrupt, no video stream)."""


class OutputError(UserError):
    """The output cannot be written (exists, is the input, folder not writable, disk full)."""


class MissingModelError(UserError):
    """A weight file is missing; the message names the file, where to put it and the fetch command."""


class BadWeightsError(UserError):
    """A weight file is corrupt, of the wrong shape, or an unsafe pickle."""
