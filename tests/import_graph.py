"""overfitlab's import graph, read from the source with ``ast``: cycles, imports that run up a
layer, and imports inside functions with the reason each gives.

``python tests/import_graph.py [SRC]`` prints all three (SRC defaults to this checkout's
``src/overfitlab``; any tree of the package, the flat one of earlier versions too);
``tests/test_layers.py`` asserts there are no cycles and no upward imports, and that every
import inside a function says why it is there.

Every import counts: at the top of a module, inside a function, under ``TYPE_CHECKING``. A
package's ``__init__`` (its face) depends on what it re-exports; a module that imports a
sibling depends on that sibling, not on the face.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import NamedTuple

SRC = Path(__file__).resolve().parent.parent / "src" / "overfitlab"

# Lowest first. A module may import from its own layer (acyclically) and from any layer below.
LAYERS = (
    # base modules: no overfitlab imports above this line
    (
        "errors",
        "environment",
        "store",
        "metrics",
        "history",
        "stats",
        "sequential",
        "curves",
        "catalog",
        "version",
        "tomltext",
        "textvalues",
    ),
    ("viz",),  # figures, pages, HTML helpers: know no result type
    ("data",),
    ("models",),
    ("config",),  # a run's recipe: validates data-set names and model references below it
    ("training",),
    ("runs",),
    ("labels",),  # mislabelled images: cross-fitted runs, confident learning on their probabilities
    ("studies",),
    ("diagnosis",),
    ("cli",),
    ("__init__", "__main__"),
)


# The reasons an import may stand inside a function: start-up time (torch, matplotlib, scipy or
# SQLite loaded only where needed) or an optional extra. Dodging a cycle is none.
REASON = re.compile(r"(start-up|optional): ")


class Import(NamedTuple):
    importer: str  # dotted module name inside the package, e.g. "runs.train"
    imported: str
    line: int
    in_function: bool
    comment: str  # its reason: a comment on its first line or above its block of imports


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _target(importer: str, is_package: bool, node: ast.ImportFrom, name: str, modules: set[str]) -> str:
    """The module ``from X import name`` depends on: X.name when that is a module, else X."""
    if node.level:
        base = importer.split(".") if importer != "__init__" else []
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        stem = (node.module or "").removeprefix("overfitlab").lstrip(".")
    candidate = f"{stem}.{name}" if stem else name
    if candidate in modules:
        return candidate
    return stem or "__init__"


def _function_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _reason(source: list[str], import_lines: set[int], line: int) -> str:
    """The comment on the import's first line, else the comment line just above the block of
    imports it stands in."""
    if "#" in source[line - 1]:
        return source[line - 1].split("#", 1)[1].strip()
    above = line - 1
    while above >= 1 and above in import_lines:
        above -= 1
    text = source[above - 1].strip() if above >= 1 else ""
    return text[1:].strip() if text.startswith("#") else ""


def imports(root: Path = SRC) -> list[Import]:
    """Every import of one overfitlab module by another, wherever it stands."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    found: list[Import] = []
    for file in files:
        importer = module_name(file, root)
        text = file.read_text(encoding="utf-8")
        source = text.splitlines()
        tree = ast.parse(text)
        inside = _function_lines(tree)
        import_lines = {
            n
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        }
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                internal = node.level > 0 or (node.module or "").split(".")[0] == "overfitlab"
                if not internal:
                    continue
                is_package = file.name == "__init__.py"
                targets = [_target(importer, is_package, node, a.name, modules) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [
                    a.name.removeprefix("overfitlab").lstrip(".") or "__init__"
                    for a in node.names
                    if a.name.split(".")[0] == "overfitlab"
                ]
            comment = _reason(source, import_lines, node.lineno) if targets else ""
            for target in dict.fromkeys(targets):
                if target != importer:
                    found.append(Import(importer, target, node.lineno, node.lineno in inside, comment))
    return found


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise KeyError(f"module {module} is in no layer: add its package to LAYERS")


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upward(edges: list[Import]) -> list[Import]:
    """Imports from a lower layer into a higher one."""
    return [e for e in edges if layer_of(e.importer) < layer_of(e.imported)]


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else SRC
    edges = imports(root)
    found = cycles(edges)
    print(f"{len({(e.importer, e.imported) for e in edges})} import edges among {root}")
    print(f"cycles: {len(found)}")
    for c in found:
        print("  " + " ⇄ ".join(c))
    try:
        up = upward(edges)
    except KeyError as err:  # a tree of another layout (the flat one of earlier versions)
        print(f"upward imports: not measured ({err.args[0]})")
        up = []
    else:
        print(f"upward imports: {len(up)}")
        for e in up:
            print(f"  {e.importer}:{e.line} → {e.imported}")
    late = [e for e in edges if e.in_function]
    unexplained = [e for e in late if not REASON.match(e.comment)]
    print(f"imports inside functions: {len(late)}, {len(unexplained)} without a reason")
    for e in late:
        print(f"  {e.importer}:{e.line} → {e.imported}  # {e.comment or '(no reason given)'}")
    return 1 if found or up or unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
