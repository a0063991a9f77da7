"""The package's shape: imports only point down (no circles), each module holds one job (at most
450 lines), and the rules that must exist once do (the encode loop, the ``--refs`` parser, the
main-face rule, the list of image suffixes).

Read from the source text, so it runs in a second and names the file at fault.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "iconface_video"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    """Module name -> file, ``kernels/`` under its installed name ``iconface_video.kernels``."""
    found = {}
    for root, prefix in ((PACKAGE, ("iconface_video",)), (REPO / "kernels", ("iconface_video", "kernels"))):
        for path in root.rglob("*.py"):
            parts = (*prefix, *path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path], name: str) -> set[str]:
    """The package modules ``path`` imports, at the top or inside functions alike."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out |= {c for c in candidates if c in modules and c != name and not name.startswith(c + ".")}
    out.discard("iconface_video")
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(path, modules, name) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_450_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _where(pattern: str) -> list[str]:
    """Package files whose code matches ``pattern``."""
    regex = re.compile(pattern)
    return sorted(str(path.relative_to(REPO)) for path in _modules().values()
                  if regex.search(path.read_text(encoding="utf-8")))


def test_rules_that_must_exist_once():
    # The decode -> process -> encode loop over segments.
    assert _where(r"for _ in encode_stream\(") == ["iconface_video/job.py"]
    # The --refs NAME=FOLDER parser, the image suffixes and the main face of a photo.
    assert _where(r"\.partition\(\"=\"\)") == ["iconface_video/faces/photos.py"]
    assert _where(r"\"\.jpeg\"") == ["iconface_video/faces/photos.py"]
    assert _where(r"max\(faces, key=") == ["iconface_video/faces/photos.py"]
