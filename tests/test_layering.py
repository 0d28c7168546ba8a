"""The library stands on its own: one installed top-level package, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, find_packages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "allocator"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the ``allocator`` modules it imports, at module level or inside functions.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
    Parent packages a submodule import runs implicitly are not edges: they are the
    packages' own business, and ``allocator/__init__`` re-exports most of the library.
    """
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_among_allocator_modules():
    graph = _import_graph()
    assert "allocator.scenario.simulate" in graph and "allocator.cli" in graph
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_function_level_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_and_its_cli_import_no_top_level_experiments_module():
    probe = (
        "import sys, contextlib, io\n"
        "import allocator, allocator.launch.scenario\n"
        "from allocator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'experiments'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_distribution_installs_only_the_allocator_package():
    """What setuptools packages from pyproject's ``packages.find`` (namespaces on by default,
    so a plain folder such as ``experiments/`` would be packaged if the include matched it)."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    finder = find_namespace_packages if find["find"].get("namespaces", True) else find_packages
    found = finder(
        where=str(ROOT),
        include=find["find"].get("include", ["*"]),
        exclude=find["find"].get("exclude", []),
    )
    assert found and {p.split(".")[0] for p in found} == {"allocator"}
    assert "allocator.scenario.world" in found
    assert not (ROOT / "experiments" / "__init__.py").exists()


#: Layers, lowest first: a module may import its own layer and the ones below, never above.
#: kernels and value types ← policies, contracts ← engine ← serving (and its log) ←
#: evaluation ← the scenario simulator ← launches (runner, tracking) ← CLI.
LAYERS = (
    ("allocator.kernels", "allocator.errors", "allocator.settings", "allocator.inputs",
     "allocator.timestamps", "allocator.decisions", "allocator.config", "allocator.config_files",
     "allocator.registry", "allocator.arms_file",
     "allocator.objective", "allocator.snapshot", "allocator.version"),
    ("allocator.policies", "allocator.constraints"),
    ("allocator.engine",),
    ("allocator.logs", "allocator.serving"),
    ("allocator.replay",),
    ("allocator.scenario",),
    ("allocator.launch",),
    ("allocator.cli", "allocator"),
)  # fmt: skip


def _layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p != "allocator" and module.startswith(p + ".")):
                return level
    return None


def test_every_module_imports_only_its_layer_and_below():
    graph = _import_graph()
    unlayered = sorted(m for m in graph if _layer(m) is None)
    assert not unlayered, f"modules outside every layer: {unlayered}"
    upward = [
        f"{m} -> {d}"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)  # type: ignore[operator]
    ]
    assert not upward, "imports against the layer direction:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    assert _layer("allocator.engine.engine") < _layer("allocator.serving.allocator")  # type: ignore[operator]
    assert _layer("allocator.kernels.pipeline") == 0


def _own_private_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines itself: methods, annotated class fields, and
    attributes it assigns."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
            own.add(node.name)
        if isinstance(node, ast.ClassDef):  # fields and class attributes in its body
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    own.add(stmt.target.id)
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and sub.attr.startswith("_"):
                        own.add(sub.attr)
    return own


def test_no_module_reads_another_modules_private_names():
    """An underscore attribute is read only in the module that defines it."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and node.attr not in ("_replace", "_fields", "_asdict")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, "private names read from outside: " + ", ".join(offenders)


def test_the_private_name_check_sees_a_foreign_read():
    tree = ast.parse("class A:\n    def f(self, other):\n        return other._secret\n")
    assert "_secret" not in _own_private_names(tree)
