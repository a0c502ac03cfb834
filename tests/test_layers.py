"""The layout keeps its shape: no import cycles, no import from a lower layer into a higher one,
every import inside a function says why, one concept per module (≤ 500 lines, a docstring),
and the package faces re-export what they promise."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import import_graph as graph
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_import_graph_has_no_cycle():
    assert graph.cycles(graph.imports()) == []


def test_no_import_runs_up_a_layer():
    up = [f"{e.importer}:{e.line} → {e.imported}" for e in graph.upward(graph.imports())]
    assert up == []


def test_every_import_inside_a_function_gives_its_reason():
    # A reason is start-up time (torch, matplotlib, scipy, SQLite loaded only where needed) or
    # an optional extra; dodging a cycle is none, and the acyclic graph above includes these.
    late = [e for e in graph.imports() if e.in_function]
    assert late, "the command line defers torch: some imports stand inside functions"
    unexplained = [
        f"{e.importer}:{e.line}" for e in late if not re.match(r"(start-up|optional): ", e.comment)
    ]
    assert unexplained == []


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a tree with a cycle through a function-level import, and a
    base module importing from a package above it."""
    pkg = tmp_path / "overfitlab"
    (pkg / "runs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runs" / "__init__.py").write_text("from .train import train\n")
    (pkg / "runs" / "train.py").write_text("from .result import Result\ndef train(): pass\n")
    (pkg / "runs" / "result.py").write_text("def f():\n    from .train import train  # start-up: x\n")
    (pkg / "store.py").write_text("from .runs.train import train\n")
    edges = graph.imports(pkg)
    assert graph.cycles(edges) == [["runs.result", "runs.train"]]
    assert [(e.importer, e.imported) for e in graph.upward(edges)] == [("store", "runs.train")]
    late = [e for e in edges if e.in_function]
    assert [(e.importer, e.imported, e.comment) for e in late] == [
        ("runs.result", "runs.train", "start-up: x")
    ]


def _modules() -> list[Path]:
    return sorted(graph.SRC.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(graph.SRC)))
def test_each_module_is_one_concept_with_a_docstring(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 500, f"{path.name}: split it by concept"
    if path.name != "__main__.py":
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring and len(docstring.splitlines()[0]) > 20, f"{path.name}: say what it holds"


FACES = {
    "overfitlab.data": ["DataSet", "DataOptions", "Split", "load_dataset", "register_dataset"],
    "overfitlab.models": ["create_model", "register_model", "list_models", "summarize"],
    "overfitlab.training": ["Trainer", "Callback", "EarlyStopping"],
    "overfitlab.runs": ["train", "resume", "load_model", "evaluate", "RunResult"],
    "overfitlab.studies": ["run_study", "StudySpec", "preset"],
    "overfitlab.diagnosis": ["diagnose", "Diagnosis"],
}


@pytest.mark.parametrize("face", sorted(FACES))
def test_each_package_face_re_exports_its_api(face):
    module = importlib.import_module(face)
    for name in FACES[face]:
        assert name in module.__all__ and getattr(module, name) is not None


def test_the_top_level_names_are_those_of_the_faces():
    import overfitlab

    for name in overfitlab.__all__:
        value = getattr(overfitlab, name)
        home = importlib.import_module(f"overfitlab.{overfitlab._EXPORTS[name]}")
        assert getattr(home, name) is value


def _python_blocks(markdown: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", markdown, flags=re.S)]


def test_readme_python_examples_run_unchanged(tmp_path):
    """Every Python example of README runs as printed (the notebook one, with its ``%pip``
    line, is the notebooks' test), in a fresh process in an empty folder."""
    blocks = [b for b in _python_blocks(README.read_text(encoding="utf-8")) if "%pip" not in b]
    assert len(blocks) >= 3
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{block}\n{done.stderr}"
