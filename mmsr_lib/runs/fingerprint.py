"""What a stored result was computed with: a digest of the code a run executes and key versions.

The code is hashed as its syntax tree without docstrings (comments are not part of it), so a
change of prose leaves stored results fresh and a change of code does not. The profile table is
left out too: its settings reach a run only through the resolved configuration, whose hash
identifies the run, so editing one profile's budget re-trains the runs it changes and no other.

A stored run is reused only while this fingerprint (and its data's) still matches, so a table
can never silently come from older code. It covers exactly the modules a run can execute: the
runner and everything it imports, plus the modules of the components the configuration picks
(its recommender, item encoder, sequence model, encoders, fusion, data source) and everything
*they* import, found by reading the import statements. A new table layout, a new baseline or a
new vision-language model therefore does not make an ID or MMSR run stale; a change to the
trainer, the evaluator or an encoder it uses does.

A change that cannot alter a result (a fix of how worker processes stop, a refactor) would still
make every stored run stale. `mmsr results equate --since REV` checks such a change instead of
trusting it: for each fingerprint of the store's runs at REV's code it trains one run of each
kind under REV's code and under the current code and records the pair in `EQUIVALENT_CODE` only
when losses, metrics and per-user ranks are equal for all; `same_code` then lets a run stored
under the old fingerprint count as computed by the new code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "timm", "numpy")
# verified pairs of fingerprints computing the same results (`runs.equate` writes it; committed)
EQUIVALENT_CODE = Path(__file__).with_name("equivalent_code.json")
ROOT = Path(__file__).resolve().parents[1]  # the mmsr_lib package folder
RUNNER = "mmsr_lib.runs.runner"
# registry kinds and the resolved config fields that name a component of that kind
COMPONENT_FIELDS = (("data_source", "data", "source"), ("recommender", "model", "recommender"),
                    ("item_encoder", "model", "item_encoder"), ("sequence", "model", "sequence"),
                    ("text_encoder", "model", "text_encoder"),
                    ("vision_encoder", "model", "vision_encoder"), ("vlp", "model", "vlp"),
                    ("fusion", "model", "fusion"))


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (ROOT.parent / rel.with_suffix(".py"), ROOT.parent / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _source(path: Path) -> str:
    """The text of `path` as this process first read it: a run fingerprints the code it loaded,
    even when the checkout is edited while it trains (see `_SNAPSHOT`)."""
    return path.read_text()


# the package's sources as they were when the runner loaded (it imports this module with the
# trainer and the models): a run that finishes hours later, after an edit, is still described by
# the code it ran, not by the files on disk by then. A module first imported after this point is
# read when the fingerprint first needs it.
_SNAPSHOT = [_source(p) for p in sorted(ROOT.rglob("*.py"))]


@functools.cache
def _imports(path: Path) -> tuple[str, ...]:
    """The mmsr_lib modules `path` imports (also inside functions), as dotted names."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(_source(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mmsr_lib")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.startswith("mmsr_lib"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return tuple(sorted(m for m in out if _module_file(m) is not None))


def module_closure(modules: set[str]) -> list[Path]:
    """Source files of `modules`, their packages' __init__ files and everything they import."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            pkg = ".".join(parts[:i])
            if pkg not in seen and _module_file(pkg) is not None:
                seen.add(pkg)
                todo.extend(_imports(_module_file(pkg)))
    return sorted({_module_file(m) for m in seen})


def component_modules(cfg: Any) -> set[str]:
    """The modules that define the components a resolved configuration picks."""
    from mmsr_lib.util import registry

    out = {RUNNER}
    for kind, section, field in COMPONENT_FIELDS:
        name = getattr(getattr(cfg, section), field, None)
        if name is None:
            continue
        factory = registry.lookup(kind, name).factory
        factory = getattr(factory, "func", factory)  # functools.partial
        module = getattr(factory, "__module__", None)
        if module and module.startswith("mmsr_lib"):
            out.add(module)
    return out


# module-level tables whose every effect lands in the resolved configuration, which a run's hash
# already covers (`RunConfig.hash`): editing a profile's budget changes the hashes of the runs it
# affects, and must not make every other stored run stale through the code fingerprint
IN_THE_RUN_HASH = frozenset({"PROFILE_TABLE"})


def _assigned_names(node: ast.stmt) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, ast.AnnAssign) else []
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _code_of(path: Path) -> str:
    """The module's code without its comments and docstrings (its AST) and without the tables
    of `IN_THE_RUN_HASH`: editing prose never makes a stored result stale; editing code does."""
    tree = ast.parse(_source(path))
    tree.body = [n for n in tree.body if not _assigned_names(n) & IN_THE_RUN_HASH]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


@functools.cache
def _digest(files: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(_code_of(path).encode())
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{name}=={version}".encode())
    return h.hexdigest()[:16]


def code_fingerprint(cfg: Any = None) -> str:
    """sha256 of the code a run of `cfg` (resolved) executes and of the versions in `PACKAGES`;
    without `cfg`, of the runner and what it imports. Cached per process: it describes the code
    this process loaded."""
    modules = {RUNNER} if cfg is None else component_modules(cfg.resolved())
    return _digest(tuple(module_closure(modules)))


@functools.cache
def _equivalences(path: Path, mtime_ns: int) -> dict[str, frozenset[str]]:
    if mtime_ns < 0:
        return {}
    out: dict[str, set[str]] = {}
    for entry in json.loads(path.read_text())["equivalences"]:
        out.setdefault(entry["from"], set()).add(entry["to"])
    return {k: frozenset(v) for k, v in out.items()}


def equivalences(path: Path | None = None) -> dict[str, frozenset[str]]:
    """The verified pairs in `path` (default `EQUIVALENT_CODE`): old fingerprint -> the newer
    fingerprints its code was checked to compute the same results as."""
    path = Path(path) if path is not None else EQUIVALENT_CODE
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = -1
    return _equivalences(path, mtime)


def same_code(stored: str | None, current: str, path: Path | None = None) -> bool:
    """Whether a run stored under fingerprint `stored` is what the code of `current` computes:
    the same fingerprint, or a chain of verified equivalences from `stored` to `current`
    (`runs.equate`; one direction only, from older code to newer)."""
    if stored is None:
        return False
    pairs = equivalences(path)
    seen, todo = {stored}, [stored]
    while todo:
        fp = todo.pop()
        if fp == current:
            return True
        for nxt in pairs.get(fp, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False
