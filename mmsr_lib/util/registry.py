"""One registry for every pickable component, in the spirit of timm's `register_model`.

A component registers itself in its own file::

    @register("fusion", "gate", aliases=("gated",), description="gated multimodal unit")
    class GateFusion(...): ...

and everything else asks the registry: `create(kind, name, **kwargs)` builds one,
`canonical(kind, name)` turns an alias ("summation", "SASRec", "MMSR-T") into the one name a
config is hashed with, `names(kind)` lists the choices and `entries(kind)` describes them.
Unknown names fail with the valid choices and a "did you mean".

Kinds whose names are open-ended (any Hugging Face folder for a text encoder, any timm model
for a vision encoder, "mergeattn-2" for a fusion with a depth) add a *resolver*: a function
that turns a name the table does not hold into (canonical name, factory) or None.

Modules are imported lazily, the first time a kind is used (`_PROVIDERS`), so importing the
registry costs nothing; third-party components are loaded from the modules named in
``$MMSR_PLUGINS`` (comma separated) or with `load_plugins`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = (
    "text_encoder",
    "vision_encoder",
    "vlp",
    "fusion",
    "sequence",
    "item_encoder",
    "recommender",
    "data_source",
    "data_format",
    "timm_family",
)

# the modules whose import registers each kind's built-in components
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "text_encoder": ("mmsr_lib.encoders.text",),
    "vision_encoder": ("mmsr_lib.encoders.vision",),
    "vlp": ("mmsr_lib.encoders.vlp",),
    # Table III's families first (their order is the table's), then any other fusion module
    "fusion": ("mmsr_lib.fusion.coarse", "mmsr_lib.fusion.attention", "mmsr_lib.fusion.*"),
    "sequence": ("mmsr_lib.sequence",),
    "item_encoder": ("mmsr_lib.encoders.item", "mmsr_lib.encoders.multimodal",
                     "mmsr_lib.encoders.vlp"),
    "recommender": ("mmsr_lib.recommender", "mmsr_lib.baselines"),
    "data_source": ("mmsr_lib.data.sources",),
    "data_format": ("mmsr_lib.data.importer", "mmsr_lib.data.adapters"),
    "timm_family": ("mmsr_lib.encoders.vision",),
}
PLUGINS_ENV = "MMSR_PLUGINS"


@dataclass(frozen=True)
class Entry:
    """One registered component: how to build it and how to describe it to a user."""

    kind: str
    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    # weights: "pretrained" (real trained weights), "random" (random init), None (no weights)
    weights: str | None = None
    # () -> None when usable offline on this machine, else a sentence saying what is missing
    availability: Callable[[], str | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def missing(self) -> str | None:
        """None when this component can be built offline here; else what to install."""
        return self.availability() if self.availability is not None else None


Resolver = Callable[[str], "Entry | None"]

_TABLE: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
_ALIASES: dict[str, dict[str, str]] = {k: {} for k in KINDS}
_RESOLVERS: dict[str, list[Resolver]] = {k: [] for k in KINDS}
_LOADED: set[str] = set()
_PLUGINS_LOADED = False


class UnknownComponentError(ValueError):
    """A name that no registered component answers to; the message lists the choices."""


def normalise(name: str) -> str:
    """The lookup key of a name: case, spaces, '-' and '_' do not matter ("Merge-Attn" ==
    "merge_attn" == "mergeattn")."""
    return re.sub(r"[\s_\-]", "", str(name).strip().lower())


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; choose one of {KINDS}")


def register(
    kind: str,
    name: str,
    *,
    aliases: Iterable[str] = (),
    description: str = "",
    weights: str | None = None,
    availability: Callable[[], str | None] | None = None,
    **meta: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a class or factory function under `kind`/`name`.

    Registering the same name twice with a different factory is an error (two components would
    silently shadow each other); re-importing the same module is harmless.
    """
    _check_kind(kind)
    if weights not in (None, "pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained', 'random' or None, got {weights!r}")

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        entry = Entry(kind, name, factory, tuple(aliases), description, weights, availability,
                      dict(meta))
        add(entry)
        return factory

    return wrap


def add(entry: Entry) -> Entry:
    """Register a ready-made `Entry` (what `register` does for a decorated object)."""
    table, aliases = _TABLE[entry.kind], _ALIASES[entry.kind]
    old = table.get(entry.name)
    if old is not None and _qualname(old.factory) != _qualname(entry.factory):
        raise ValueError(
            f"{entry.kind} {entry.name!r} is registered twice ({_qualname(old.factory)} and "
            f"{_qualname(entry.factory)}); pick another name"
        )
    table[entry.name] = entry
    for key in (entry.name, *entry.aliases):
        owner = aliases.get(normalise(key))
        if owner is not None and owner != entry.name:
            raise ValueError(
                f"{entry.kind} alias {key!r} of {entry.name!r} already names {owner!r}"
            )
        aliases[normalise(key)] = entry.name
    return entry


def add_resolver(kind: str, resolver: Resolver) -> Resolver:
    """Register a function that resolves names outside the table (returns an Entry or None)."""
    _check_kind(kind)
    if resolver not in _RESOLVERS[kind]:
        _RESOLVERS[kind].append(resolver)
    return resolver


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _ensure_loaded(kind: str) -> None:
    load_plugins()
    if kind in _LOADED:
        return
    _LOADED.add(kind)
    for module in _PROVIDERS.get(kind, ()):
        package = _package_of(module)
        for name in _package_modules(package) if package != module else (module,):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:
                if err.name != name:  # a real import error inside the module
                    raise


def _package_of(provider: str) -> str:
    """The package a "pkg.*" provider names (a plain module name is its own)."""
    return provider[:-2] if provider.endswith(".*") else provider


def _package_modules(package: str) -> list[str]:
    """Every public module of `package` ("pkg.*" in `_PROVIDERS`), by name: a component module
    added there is found without editing this file, which every run's code fingerprint holds."""
    path = getattr(importlib.import_module(package), "__path__", [])
    return [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)
            if not m.name.startswith("_")]


def load_plugins(modules: Iterable[str] | None = None) -> list[str]:
    """Import third-party component modules (default: ``$MMSR_PLUGINS``); returns their names."""
    global _PLUGINS_LOADED
    if modules is None:
        if _PLUGINS_LOADED:
            return []
        _PLUGINS_LOADED = True
        modules = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    loaded = []
    for module in modules:
        try:
            importlib.import_module(module.strip())
        except ImportError as err:
            raise ImportError(
                f"cannot import plugin module {module.strip()!r} (from ${PLUGINS_ENV} or "
                f"--plugin): {err}; make it importable (pip install -e it, or add its folder to "
                "PYTHONPATH)"
            ) from err
        loaded.append(module.strip())
    return loaded


def lookup(kind: str, name: str) -> Entry:
    """The entry `name` (or an alias, or what a resolver makes of it) stands for."""
    _check_kind(kind)
    _ensure_loaded(kind)
    if not isinstance(name, str) or not name.strip():
        raise UnknownComponentError(f"{kind} name must be a non-empty string, got {name!r}; "
                                    f"choose one of {names(kind)}")
    key = normalise(name)
    target = _ALIASES[kind].get(key)
    if target is not None:
        return _TABLE[kind][target]
    for resolver in _RESOLVERS[kind]:
        entry = resolver(name)
        if entry is not None:
            return entry
    choices = names(kind)
    close = difflib.get_close_matches(key, list(_ALIASES[kind]), n=3, cutoff=0.6)
    hint = ""
    if close:
        targets = dict.fromkeys(_ALIASES[kind][c] for c in close)
        hint = " Did you mean " + " or ".join(repr(t) for t in targets) + "?"
    what = kind.replace("_", " ")
    raise UnknownComponentError(f"unknown {what} {name!r}; choose one of {choices}.{hint}")


def canonical(kind: str, name: str) -> str:
    """The one name a config stores (and is hashed with) for `name`."""
    return lookup(kind, name).name


def create(kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Build component `name` of `kind` with the factory's own arguments."""
    entry = lookup(kind, name)
    problem = entry.missing()
    if problem:
        raise ComponentUnavailableError(f"{kind} {entry.name!r} is not available here: {problem}")
    return entry.factory(*args, **kwargs)


class ComponentUnavailableError(RuntimeError):
    """A registered component whose files or packages are not installed on this machine."""


def names(kind: str) -> list[str]:
    """Registered names of `kind` in listing order (see `entries`; aliases and resolvers not
    included)."""
    return [entry.name for entry in entries(kind)]


def entries(kind: str) -> list[Entry]:
    """Registered entries of `kind` in listing order: by the position of their module in
    `_PROVIDERS` (Table III's families first for fusions), then in registration order within a
    module; plugins come last. The order does not depend on who imported a module first."""
    _check_kind(kind)
    _ensure_loaded(kind)
    providers = _PROVIDERS.get(kind, ())

    def rank(entry: Entry) -> int:
        module = _defining_module(entry.factory)
        for i, provider in enumerate(providers):
            prefix = _package_of(provider)
            if module == prefix or module.startswith(prefix + "."):
                return i
        return len(providers)

    return sorted(_TABLE[kind].values(), key=rank)  # stable: registration order within a rank


def _defining_module(factory: Callable[..., Any]) -> str:
    """The module that defines a factory (through `functools.partial`, as the encoders use)."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return str(getattr(factory, "__module__", ""))
