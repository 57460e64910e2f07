"""Results derived from a stored run's trained weights, kept beside the run.

Notebooks 07, 10 and 11 read more than a run's stored metrics and per-user ranks: the paper's
cold protocol, sampled ranking and tie counts re-evaluate the trained model, and the t-SNE
pictures need its item and user vectors. The weights live in ``runs/<hash>/checkpoint.pt`` of
the machine that trained them; the archive (`runs.archive`) carries results, not weights. So a
fresh clone, or a machine whose ``runs/`` was lost, could draw every notebook from the archive
but these three (it happened: their cpu runs' checkpoints went with a VM). Here each such
computation is stored once, as named arrays, in a ``derived`` table of the results store, and
travels with the run in the archive; `cached` computes it only when no fresh copy exists.

An entry belongs to one run as it was stored (its hash and the time it was written: a forced
re-training is another run), one recipe (what was computed, with every parameter that changes
it) and the code that computed it (the digest of the computing module and everything it
imports, as `runs.fingerprint` digests a run's code). An entry of other code is recomputed where
the weights are at hand; where they are not (or under ``MMSR_LOAD_ONLY=1``, `make figures`) it
is used with a warning that names the run, rather than failing.

Kept out of `runs.store` on purpose, like `runs.archive`: the store is part of every run's code
fingerprint, and this module is not.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from mmsr_lib.runs.store import ResultsStore, RunRecord

log = logging.getLogger("mmsr.derived")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS derived (
    config_hash TEXT NOT NULL,
    recipe TEXT NOT NULL,
    run_updated TEXT NOT NULL,
    code TEXT NOT NULL,
    arrays BLOB NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (config_hash, recipe, run_updated, code)
);
"""
FIELDS = ("config_hash", "recipe", "run_updated", "code", "arrays", "created")


@dataclass(frozen=True)
class Entry:
    """One stored derivation of one run (`arrays` packed by `pack`)."""

    config_hash: str
    recipe: str
    run_updated: str
    code: str
    arrays: bytes
    created: str


def pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Named arrays as one compressed ``.npz`` blob; object arrays are refused, so `unpack`
    never needs pickle."""
    buf = io.BytesIO()
    plain = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype == object:
            raise TypeError(f"derived array {name!r} has dtype object; store numbers only")
        plain[name] = arr
    np.savez_compressed(buf, **plain)
    return buf.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def code_digest(module: str) -> str:
    """The digest of `module` and every mmsr_lib module it imports (docstrings left out)."""
    from mmsr_lib.runs.fingerprint import _digest, module_closure

    return _digest(tuple(module_closure({module})))


def _ensure(store: ResultsStore) -> None:
    if store.readonly:
        return
    with store._connect() as con:
        con.executescript(_SCHEMA)


def _has_table(con: object) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                       "name = 'derived'").fetchone() is not None


def entries(store: ResultsStore, config_hash: str, recipe: str | None = None) -> list[Entry]:
    """The stored derivations of a run (of one recipe when given), newest first."""
    with store._connect() as con:
        if not _has_table(con):
            return []
        where, args = "config_hash = ?", [config_hash]
        if recipe is not None:
            where, args = where + " AND recipe = ?", args + [recipe]
        rows = con.execute(f"SELECT {', '.join(FIELDS)} FROM derived WHERE {where} "
                           "ORDER BY created DESC", args).fetchall()
    return [Entry(*(row[f] for f in FIELDS)) for row in rows]


def kept(store: ResultsStore, config_hash: str, run_updated: str, recipe_prefix: str) -> bool:
    """Whether the store keeps arrays of a recipe (its prefix) for this training of a run
    (`run_updated`), of any code: a question `mmsr grid --list` asks per run, answered without
    reading the arrays."""
    with store._connect() as con:
        return _has_table(con) and con.execute(
            "SELECT 1 FROM derived WHERE config_hash = ? AND run_updated = ? AND "
            "substr(recipe, 1, ?) = ? LIMIT 1",
            (config_hash, run_updated, len(recipe_prefix), recipe_prefix)).fetchone() is not None


def _insert(con: object, entry: Entry, on_conflict: str) -> int:
    """INSERT OR `on_conflict` (REPLACE | IGNORE) of one entry; the number of rows written."""
    cur = con.execute(f"INSERT OR {on_conflict} INTO derived ({', '.join(FIELDS)}) VALUES "
                      f"({', '.join('?' for _ in FIELDS)})", [getattr(entry, f) for f in FIELDS])
    return cur.rowcount


def add(store: ResultsStore, entry: Entry) -> None:
    """Store `entry`; then drop the run's older entries of the same recipe (the replacement
    exists before anything is removed)."""
    _ensure(store)
    with store._write() as con:
        _insert(con, entry, "REPLACE")
        con.execute("DELETE FROM derived WHERE config_hash = ? AND recipe = ? AND NOT "
                    "(run_updated = ? AND code = ?)",
                    (entry.config_hash, entry.recipe, entry.run_updated, entry.code))


def add_if_absent(store: ResultsStore, entry: Entry) -> bool:
    """Store `entry` unless the store holds one of the same run, recipe and code (an archive
    import never replaces what a store computed itself). True when it was added."""
    _ensure(store)
    with store._write() as con:
        return _insert(con, entry, "IGNORE") > 0


def cached(store: ResultsStore | None, record: RunRecord, recipe: str, module: str,
           compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`compute()`'s arrays for `record` under `recipe`, from the store when it holds them for
    this run as stored (`record.updated`) and this code (`code_digest(module)`); else computed
    (it loads the trained weights) and stored (unless the store was opened read-only; without
    a store, simply computed). Under ``MMSR_LOAD_ONLY=1`` nothing is computed: an entry of
    other code is used with a warning, none at all is an error that says how to get it."""
    from mmsr_lib.runs.runner import LOAD_ONLY_ENV

    if store is None:
        return {name: np.asarray(a) for name, a in compute().items()}
    code = code_digest(module)
    mine = [e for e in entries(store, record.config_hash, recipe)
            if e.run_updated == record.updated]
    fresh = next((e for e in mine if e.code == code), None)
    if fresh is not None:
        return unpack(fresh.arrays)
    load_only = os.environ.get(LOAD_ONLY_ENV) == "1"
    if mine and load_only:
        log.warning("run %s [%s]: %s was computed by other code than now (%s); used as stored. "
                    "Run without %s=1 where its checkpoint is to compute it again",
                    record.name, record.config_hash, recipe, module, LOAD_ONLY_ENV)
        return unpack(mine[0].arrays)
    if load_only:
        raise FileNotFoundError(
            f"run {record.name} [{record.config_hash}]: {recipe} is not in the store and "
            f"{LOAD_ONLY_ENV}=1 computes nothing. It needs the run's trained weights: run the "
            f"notebook without {LOAD_ONLY_ENV} on the machine that holds runs/"
            f"{record.config_hash}/checkpoint.pt (it is then stored, and archived with the run), "
            "or train the run again (`mmsr grid NN --list` marks such runs 'no weights'; `mmsr "
            "grid NN --train` trains them again)")
    try:
        arrays = {name: np.asarray(a) for name, a in compute().items()}
    except FileNotFoundError:
        if not mine:
            raise
        log.warning("run %s [%s]: no checkpoint to compute %s again under the current code; "
                    "using the copy computed by other code", record.name, record.config_hash,
                    recipe)
        return unpack(mine[0].arrays)
    if store.readonly:  # a reader (`mmsr grid NN --claims`) computes, and writes nothing
        return arrays
    add(store, Entry(record.config_hash, recipe, record.updated, code, pack(arrays),
                     datetime.now(timezone.utc).isoformat(timespec="microseconds")))
    return arrays
