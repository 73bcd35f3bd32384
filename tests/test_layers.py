"""The layers of docs/architecture.md, checked over the real import graph: imports only point down,
packages on one layer leave each other alone, and no module reaches into another's private names.

Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module belongs to the first entry that is its name or a prefix of it.
LAYERS: list[tuple[str, ...]] = [
    # shared helpers and data shapes that everything may use
    (
        "shipyard",
        "shipyard.errors",
        "shipyard.settings",
        "shipyard.redact",
        "shipyard.durations",
        "shipyard.times",
        "shipyard.content",
        "shipyard.retries",
        "shipyard.plugins",
        "shipyard.config",
        "shipyard.prices",
        "shipyard.tracing.spans",
        "shipyard.tracing.semconv",
    ),
    ("shipyard.store",),
    ("shipyard.providers", "shipyard.tracing"),
    ("shipyard.guard",),
    ("shipyard.registry",),
    ("shipyard.tracking",),
    ("shipyard.gateway",),
    ("shipyard.evals",),
    ("shipyard.redteam",),
    ("shipyard.monitoring",),
    ("shipyard.bench",),
    ("shipyard.sweep",),
    ("shipyard.api", "shipyard.web"),
    ("shipyard.server",),
    ("shipyard.cli",),
    ("shipyard.__main__",),
]


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the entry that matched) for a module name."""
    best: tuple[int, str] | None = None
    for i, entries in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or module.startswith(entry + ".")
            if matches and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    assert best is not None, f"{module} is on no layer: add it to LAYERS"
    return best


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    line: int
    names: tuple[str, ...]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> list[Import]:
    source = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    out: list[Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("shipyard"):
                out.append(Import(source, node.module, node.lineno, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shipyard"):
                    out.append(Import(source, alias.name, node.lineno, ()))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def all_imports() -> list[Import]:
    return [i for path in sorted(SRC.glob("shipyard/**/*.py")) for i in imports_of(path)]


def top_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_imports_only_point_down() -> None:
    wrong = []
    for imp in all_imports():
        src_layer, src_entry = layer_of(imp.source)
        # `from shipyard.x import y` may name a submodule y: judge by the most precise module.
        targets = [imp.target] + [f"{imp.target}.{n}" for n in imp.names]
        known = [layer_of(t) for t in targets if _exists(t)] or [layer_of(imp.target)]
        tgt_layer, tgt_entry = max(known, key=lambda lt: len(lt[1]))
        sibling = tgt_layer == src_layer and src_layer > 0 and src_entry != tgt_entry
        if tgt_layer > src_layer:
            wrong.append(f"{imp.source}:{imp.line} imports {imp.target} (layer {tgt_layer} > {src_layer})")
        elif sibling and top_package(imp.source) != top_package(imp.target):
            wrong.append(f"{imp.source}:{imp.line} imports {imp.target}, a sibling on its own layer")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _exists(module: str) -> bool:
    path = SRC.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = [
        f"{i.source}:{i.line} imports {name} from {i.target}"
        for i in all_imports()
        for name in i.names
        if name.startswith("_") and not name.startswith("__") and i.target != i.source
    ]
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def test_no_module_uses_another_modules_private_attributes() -> None:
    """``pipeline._scan(...)`` where ``_scan`` is defined in another module (a method of its class,
    an attribute it sets, a function): a private name used from outside its module. Names a module
    defines itself (its own privates of the same name) are not counted."""
    defined: dict[str, set[str]] = {}
    used: list[tuple[str, int, str]] = []
    for path in sorted(SRC.glob("shipyard/**/*.py")):
        mod = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
            if name and name.startswith("_") and not name.startswith("__"):
                defined.setdefault(name, set()).add(mod)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Load)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                used.append((mod, node.lineno, node.attr))
    wrong = [
        f"{mod}:{line} uses {attr}, private to {', '.join(sorted(defined[attr]))}"
        for mod, line, attr in used
        if attr in defined and mod not in defined[attr]
    ]
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def test_the_layer_table_covers_every_package() -> None:
    for path in SRC.glob("shipyard/**/*.py"):
        layer_of(module_name(path))
