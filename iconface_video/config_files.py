"""Reading a user's configuration file (YAML or JSON) into a dict, with one-line errors.

A configuration is edited by hand, so a typo must come back as one line naming the file, the
line and the column, not as a parser's traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from iconface_video.errors import UserError


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping at the top of ``path``: JSON for ``.json``, YAML (``safe_load``: no Python
    objects) otherwise. A missing or unreadable file, malformed YAML/JSON or a top level that
    is not a mapping is a ``UserError`` of one line naming the file (and the line and column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give a configuration file") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a text file (byte {error.start} is not UTF-8); give a YAML or JSON file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}:{error.colno}: malformed JSON ({error.msg}); fix the file") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as error:
            raise UserError(_yaml_line(path, error)) from None
        except yaml.YAMLError as error:
            raise UserError(f"{path}: malformed YAML ({_one_line(str(error))}); fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}:1:1: the file must hold a mapping of settings (key: value), not a "
                        f"{type(data).__name__}; fix the file")
    return data


def _yaml_line(path: Path, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = " ".join(p for p in (error.context, error.problem) if p)
    return f"{where}: malformed YAML ({_one_line(problem)}); fix the file"


def _one_line(text: str) -> str:
    return " ".join(text.split())
