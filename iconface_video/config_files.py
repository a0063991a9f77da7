"""Reading a configuration file (YAML or JSON) into a frozen dataclass, with one-line errors.

The one rule for every configuration (the core's, training's): ``find_config`` finds the file
(a path, or a name in the configs folder), ``load_config_file`` reads it (``read_config_file``: ``safe_load``,
never Python objects), builds the dataclass through its ``from_dict``, whose keys are checked by
``config_from_dict`` (an unknown key is an error, never ignored), and turns every problem into
one line naming the file, and the line and column where the file shows it. A configuration is
edited by hand, so a typo must come back that way, not as a parser's or a constructor's traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from iconface_video.errors import UserError

T = TypeVar("T")


class UnknownKeysError(ValueError):
    """A mapping holds keys the dataclass has no field for (``keys``, sorted)."""

    def __init__(self, what: str, keys: list[str]) -> None:
        super().__init__(f"unknown {what} keys: {', '.join(keys)}")
        self.keys = keys


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, what: str) -> T:
    """The dataclass ``cls`` built from ``data`` (a file's or a sidecar's mapping).

    An unknown key raises ``UnknownKeysError`` (a typo must not fall back to a default
    silently); lists become tuples for the fields typed as tuples (YAML and JSON have none).
    The dataclass's own checks raise ``ValueError`` or ``TypeError`` (or ``UserError``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UnknownKeysError(what, unknown)
    values = {key: tuple(value) if isinstance(value, list) and str(fields[key].type).startswith("tuple") else value
              for key, value in data.items()}
    return cls(**values)


def find_config(path_or_name: str | os.PathLike, folder: Path, *, what: str) -> Path:
    """``path_or_name`` itself, or for a name without an extension ``folder/<name>.yaml``;
    a ``UserError`` where there is no such file."""
    path = Path(path_or_name)
    if not path.suffix:
        path = folder / f"{path_or_name}.yaml"
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; give a YAML file or a name in {folder}")
    return path


def load_config_file(path: str | os.PathLike, from_dict: Callable[[dict[str, Any]], T], *, what: str) -> T:
    """The configuration in ``path``, built by ``from_dict``. Every problem (an unreadable file,
    malformed YAML/JSON, an unknown key, a value ``from_dict`` refuses) is a one-line
    ``UserError`` naming the file, with the line and column of an unknown key in a YAML file."""
    path = Path(path)
    data = read_config_file(path)
    try:
        return from_dict(data)
    except UnknownKeysError as error:
        raise UserError(f"{_key_position(path, error.keys[0])}: {error}; fix the file") from None
    except (TypeError, ValueError, UserError) as error:
        raise UserError(f"{path}: bad {what} ({_one_line(str(error))}); fix the file") from None


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


def _key_position(path: Path, key: str) -> str:
    """``path:line:column`` of the top-level ``key`` in a YAML file (just ``path`` for JSON)."""
    if path.suffix.lower() == ".json":
        return str(path)
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
        if key_node.value == key:
            return f"{path}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
    return str(path)


def _yaml_line(path: Path, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = " ".join(p for p in (error.context, error.problem) if p)
    return f"{where}: malformed YAML ({_one_line(problem)}); fix the file"


def _one_line(text: str) -> str:
    return " ".join(text.split())
