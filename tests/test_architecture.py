"""The package's layers: no import cycles and no module importing a layer above its own.

util < config < data < model (encoders, fusion, sequence, baselines, recommender) < evaluate
< train < runs < workbook < bench / plan < cli. Every import statement counts, also the ones
inside functions (a lazy upward import is still an upward dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmsr_lib

ROOT = Path(mmsr_lib.__file__).resolve().parent

LAYERS = [
    ("util", ("mmsr_lib.util",)),
    ("config", ("mmsr_lib.config",)),
    ("data", ("mmsr_lib.data",)),
    ("model", ("mmsr_lib.encoders", "mmsr_lib.fusion", "mmsr_lib.sequence",
               "mmsr_lib.baselines", "mmsr_lib.recommender")),
    ("evaluate", ("mmsr_lib.evaluate", "mmsr_lib.evaluate_variants")),
    ("train", ("mmsr_lib.train",)),
    ("runs", ("mmsr_lib.runs",)),
    ("workbook", ("mmsr_lib.workbook",)),
    ("bench", ("mmsr_lib.bench", "mmsr_lib.plan", "mmsr_lib.claims")),
    ("cli", ("mmsr_lib.cli",)),
]


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mmsr_lib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("mmsr_lib"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names
                    if (ROOT.parent / f"{node.module}.{a.name}".replace(".", "/")).exists()
                    or (ROOT.parent / (f"{node.module}.{a.name}".replace(".", "/") + ".py"))
                    .exists()}
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = [m for m in graph() if m != "mmsr_lib" and layer_of(m) is None]
    assert not unplaced, f"put these modules in a layer of tests/test_architecture.py: {unplaced}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, deps in graph().items():
        mine = layer_of(module)
        for dep in deps:
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {dep} "
                              f"({LAYERS[theirs][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    full = graph()
    g = {m: {d for d in deps if d in full} for m, deps in full.items()}
    # package __init__ files re-export their submodules; an edge into one's own package is fine
    g = {m: {d for d in deps if d != m and not m.startswith(d + ".") and not d.startswith(m + ".")}
         for m, deps in g.items()}
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            visit(dep)
        stack.pop()

    for node in sorted(g):
        visit(node)
    assert not cycles, "\n".join(cycles)
