"""The package's import structure: stages import one way, nobody imports another stage's private
names, no module-level import cycles, and ``import avatar_jax`` changes no JAX setting.

Read from the source with ``ast`` (imports inside functions count too), so a new import that
breaks a layer fails here, not in a user's circular-import traceback.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "avatar_jax"

# unit -> the units it may import. A unit is a subpackage or a top-level module; "_cache",
# "_disk_cache", "_threads", "_devices", "_identity_cache", "_lazy" are package-private helpers. Keep it a DAG.
ALLOWED = {
    "status": set(),
    "_cache": set(),
    "_threads": set(),
    "_devices": set(),
    "_identity_cache": set(),
    "_lazy": set(),
    "_disk_cache": {"_cache"},
    "geometry": set(),
    "io": {"geometry"},
    "model": {"geometry", "io", "_disk_cache"},
    "solve": {"status"},
    "landmarks": {"geometry", "io", "model", "status"},
    "render": {"geometry", "model"},
    "fit": {"geometry", "io", "model", "solve", "status", "landmarks", "_disk_cache", "_threads",
            "_devices", "_identity_cache"},
    "texture": {"geometry", "io", "model", "render", "landmarks", "_disk_cache", "_identity_cache"},
    "regress": {"geometry", "io", "model", "landmarks", "_lazy"},
    "augment": {"geometry", "io", "model", "landmarks", "_lazy"},
    "pipeline": {"status", "geometry", "io", "model", "landmarks", "fit", "texture", "regress"},
    "dataset": {"status", "geometry", "io", "model", "render", "texture", "landmarks", "augment", "fit",
                "pipeline", "_disk_cache", "_identity_cache", "_lazy"},
    "batch": {"status", "geometry", "io", "model", "landmarks", "fit", "texture", "pipeline", "regress", "_threads",
              "_lazy", "_cache", "_devices"},
    "reconstruct": {"status", "geometry", "io", "model", "landmarks", "fit", "texture", "pipeline", "regress"},
    "evaluate": {"status", "geometry", "io", "model", "solve", "landmarks", "render", "fit", "texture",
                 "regress", "augment", "dataset", "pipeline", "reconstruct", "_disk_cache", "_cache"},
    "animate": {"geometry", "io", "model", "render", "_lazy"},
    "cli": {"status", "pipeline", "reconstruct", "evaluate", "dataset", "regress", "batch", "animate", "_cache",
            "_devices", "__init__"},
    "__init__": {"_lazy"},  # lazy exports resolve through importlib, not import statements
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        unit = parts[1] if len(parts) > 1 else "__init__"
        yield name, unit.removesuffix(".py"), ast.parse(path.read_text(), str(path))


def _imports(tree, module_level_only=False):
    """(imported module, imported names) for every absolute import of the package."""
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("avatar_jax"):
                    yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avatar_jax"):
            assert node.level == 0, "relative import"
            yield node.module, tuple(a.name for a in node.names)


def _unit_of(module: str, names=()) -> set[str]:
    parts = module.split(".")
    if len(parts) > 1:
        return {parts[1]}
    return set(names)  # ``from avatar_jax import pipeline`` / ``enable_compilation_cache``


def test_units_are_known():
    units = {unit for _, unit, _ in _modules()}
    assert units <= set(ALLOWED), f"add {sorted(units - set(ALLOWED))} to ALLOWED"


def test_stages_import_one_way():
    bad = []
    for name, unit, tree in _modules():
        for module, names in _imports(tree):
            for target in _unit_of(module, names) - {unit}:
                target = "_cache" if target == "enable_compilation_cache" else target
                if target not in ALLOWED[unit]:
                    bad.append(f"{name} imports {module} ({unit} -> {target})")
    assert not bad, "\n".join(bad)


def test_allowed_map_is_acyclic():
    seen, done = set(), set()

    def visit(unit, path):
        assert unit not in seen - done, f"cycle: {' -> '.join(path + [unit])}"
        if unit in done:
            return
        seen.add(unit)
        for dep in ALLOWED[unit] - {"__init__"}:
            visit(dep, path + [unit])
        done.add(unit)

    for unit in ALLOWED:
        visit(unit, [])


def test_no_private_names_across_units():
    bad = []
    for name, unit, tree in _modules():
        for module, names in _imports(tree):
            if _unit_of(module) == {unit}:
                continue
            private = [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{name} imports {private} from {module}")
    assert not bad, "\n".join(bad)


def test_no_module_level_import_cycles():
    graph = {name: set() for name, _, _ in _modules()}
    for name, _, tree in _modules():
        for module, names in _imports(tree, module_level_only=True):
            for target in [module] + [f"{module}.{n}" for n in names]:
                if target in graph and target != name:
                    graph[name].add(target)
    state = {}

    def visit(node, path):
        if state.get(node) == "open":
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(node):] + [node])}")
        if state.get(node) == "done":
            return
        state[node] = "open"
        for dep in sorted(graph[node]):
            # a package's __init__ importing its own submodules is the normal re-export pattern
            if not dep.startswith(node + "."):
                visit(dep, path + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_import_changes_no_jax_setting():
    code = ("import jax; before = dict(jax.config.values); "
            "import avatar_jax, avatar_jax.pipeline; "
            "after = dict(jax.config.values); "
            "print(sorted(k for k in before if before[k] != after[k]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_cli_parser_loads_no_jax():
    """``--device`` and ``fit-batch --distributed`` configure JAX before its backend starts, so
    building the parser (every subcommand's) must not import JAX."""
    code = "import sys; from avatar_jax.cli import _parser; _parser(); print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
