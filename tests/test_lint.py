"""The code itself: ruff (lint and format), mypy --strict over compiler/, no import cycles, every import declared."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent
PACKAGES = ("compiler", "portal")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    result = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing():
    result = _run(str(BIN / "ruff"), "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing():
    result = _run(str(BIN / "mypy"), "--no-incremental", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project's modules that `path` imports (at any depth of the file, TYPE_CHECKING included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    cycles = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for child in sorted(graph[name]):
            if state.get(child) == "open":
                cycles.append(" -> ".join(path[path.index(child) :] + [child]))
            elif child not in state:
                visit(child, path + [child])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package's __init__ importing its own submodules is not a cycle of the design.
    cycles = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# Top-level imports that are not third-party distributions.
_STANDARD = set(sys.stdlib_module_names) | {"compiler", "portal", "tests", "bench"}


def _third_party_imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - _STANDARD


def _declared(requirements: list[str]) -> set[str]:
    """The import names the distributions in `requirements` provide."""
    names = set()
    provided = metadata.packages_distributions()
    for requirement in requirements:
        distribution = requirement.split("==")[0].split(">")[0].split("[")[0].strip().lower().replace("_", "-")
        names |= {
            module for module, dists in provided.items() if distribution in {d.lower().replace("_", "-") for d in dists}
        }
    return names


@pytest.mark.parametrize("scope", ["product", "tests"])
def test_every_import_is_a_declared_dependency(scope):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"]
    if scope == "product":
        paths = [p for package in PACKAGES if (REPO / package).is_dir() for p in (REPO / package).rglob("*.py")]
        declared = _declared(runtime)
    else:
        paths = list((REPO / "tests").rglob("*.py")) + list((REPO / "bench").rglob("*.py"))
        declared = _declared(runtime + project["optional-dependencies"]["test"])
    undeclared = _third_party_imports(paths) - declared
    assert not undeclared, f"imported but not declared in pyproject.toml ({scope}): {sorted(undeclared)}"
