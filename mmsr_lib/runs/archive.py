"""A results archive: finished runs as one gzipped JSON file each, to keep in git.

The SQLite store (`runs.store`) lives in an ignored folder of one checkout. A fresh clone, or a
machine whose checkout is renewed, starts without it, and with it go the runs behind
docs/results_cpu.md and their per-user ranks (it happened: the ~230 cpu runs of 2026-12-02..04,
about 40 hours of 2-core training, vanished with a checkout). `write_archive` writes each
finished run (configuration, metrics, history, timings, provenance, per-user ranks) to
``<folder>/<config hash>.json.gz``, deterministically (sorted keys, gzip without a timestamp),
so an unchanged run is an unchanged file and git stores it once. `import_archive` puts runs
back into a store without ever replacing a finished one, and skips (counted, named) any file it
cannot read. Imported runs keep their code fingerprint, so a run computed by older code lists
as stale and is never reused for training decisions it was not computed under; tables and
significance tests can still read it.

Kept out of `runs.store` on purpose: the store is part of every run's code fingerprint, and a
module only the command line imports can change without making stored runs stale.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsr_lib.runs import derived
from mmsr_lib.runs.store import _COLUMNS, ResultsStore, RunRecord, _dumps, _pack_ranks
from mmsr_lib.util.atomic import atomic_path

log = logging.getLogger("mmsr.archive")

FORMAT = "mmsr-run/1"
SUFFIX = ".json.gz"
# the repository's archive: the runs behind docs/results_cpu.md and the README
REPO_ARCHIVE = Path(__file__).resolve().parents[2] / "docs" / "runs"
# the store's columns in the order of `_COLUMNS`; an archived run carries all of them
_FIELDS = tuple(c.strip() for c in _COLUMNS.split(","))
_JSON_FIELDS = ("config", "metrics", "history", "timings", "extra")


@dataclass
class ArchiveReport:
    """What `write_archive` or `import_archive` did, file by file."""

    written: list[str] = field(default_factory=list)  # new or changed files / imported runs
    unchanged: list[str] = field(default_factory=list)  # identical file / finished run kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    derived_added: int = 0  # entries of `runs.derived` an import added

    def lines(self, verb: str) -> list[str]:
        out = [f"{verb} {len(self.written)}, unchanged {len(self.unchanged)}, "
               f"skipped {len(self.skipped)}"
               + (f"; results derived from weights added {self.derived_added}"
                  if self.derived_added else "")]
        out += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return out


def run_document(record: RunRecord, ranks: dict[str, np.ndarray],
                 derived_entries: Sequence[derived.Entry] = ()) -> dict:
    """One run as a JSON-ready document: every store column plus its per-user ranks (int32,
    zlib, base64: a 3,000-user split is a few kilobytes) and, where the store holds any for
    the run as stored, what was derived from its weights (`runs.derived`: re-evaluations,
    item and user vectors), so that a machine without its checkpoint draws notebooks 07, 10
    and 11 too. A run without them keeps the document it had before they existed."""
    doc = {"format": FORMAT, **{name: getattr(record, name) for name in _FIELDS}}
    doc["ranks"] = {}
    for split, arr in sorted(ranks.items()):
        n, blob = _pack_ranks(arr, split)
        doc["ranks"][split] = {"n": n, "int32_zlib_b64": base64.b64encode(blob).decode()}
    mine = sorted((e for e in derived_entries if e.run_updated == record.updated),
                  key=lambda e: (e.recipe, e.code))
    if mine:
        doc["derived"] = [{"recipe": e.recipe, "run_updated": e.run_updated, "code": e.code,
                           "created": e.created, "npz_b64": base64.b64encode(e.arrays).decode()}
                          for e in mine]
    return doc


def _encode(doc: dict) -> bytes:
    text = _dumps(doc, "archived run")  # sorted keys: the same run, the same bytes
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def write_archive(store: ResultsStore, folder: str | Path,
                  profiles: Sequence[str] | None = None) -> ArchiveReport:
    """Write every finished run of `store` to `folder` (only those of `profiles` when given:
    the repository keeps the cpu runs behind its docs, not the smoke runs tests and CI leave
    in the same store); a file is replaced (atomically) only when the run's stored content
    differs from it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    report = ArchiveReport()
    for rec in store.records(status="done"):
        if profiles is not None and rec.config.get("profile") not in profiles:
            continue
        data = _encode(run_document(rec, store.ranks(rec.config_hash),
                                    derived.entries(store, rec.config_hash)))
        path = out / f"{rec.config_hash}{SUFFIX}"
        if path.is_file() and path.read_bytes() == data:
            report.unchanged.append(path.name)
            continue
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
        report.written.append(path.name)
    return report


def archived(config_hash: str, folder: str | Path | None = None) -> bool:
    """Whether `folder` (default: the repository's archive) holds the run `config_hash`."""
    return (Path(folder or REPO_ARCHIVE) / f"{config_hash}{SUFFIX}").is_file()


def read_document(path: Path) -> dict:
    """An archived run, checked: `ValueError` says what is wrong with the file."""
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise ValueError(f"not a gzipped JSON file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not an archived run of this library (format {FORMAT!r} expected)")
    missing = [f for f in (*_FIELDS, "ranks") if f not in doc]
    if missing:
        raise ValueError(f"missing fields {missing}")
    if doc["status"] != "done":
        raise ValueError(f"status {doc['status']!r}: only finished runs are archived")
    if path.name != f"{doc['config_hash']}{SUFFIX}":
        raise ValueError(f"holds run {doc['config_hash']}, not the one its name says")
    for split, packed in doc["ranks"].items():
        blob = base64.b64decode(packed["int32_zlib_b64"])
        if len(zlib.decompress(blob)) != 4 * packed["n"]:
            raise ValueError(f"ranks of split {split!r} do not hold {packed['n']} values")
    for item in doc.get("derived", []):
        try:
            derived.unpack(base64.b64decode(item["npz_b64"]))
        except (KeyError, TypeError, ValueError, OSError) as err:
            raise ValueError(f"derived {item.get('recipe')!r} is not readable ({err})") from None
    return doc


def _derived_entries(doc: dict) -> list[derived.Entry]:
    return [derived.Entry(doc["config_hash"], d["recipe"], d["run_updated"], d["code"],
                          base64.b64decode(d["npz_b64"]), d["created"])
            for d in doc.get("derived", [])]


def import_archive(store: ResultsStore, folder: str | Path) -> ArchiveReport:
    """Add the archived runs of `folder` to `store`. A run the store already holds as finished
    is kept as it is (never overwritten); a running or failed row is replaced by the finished
    archived run. Unreadable files are skipped, counted and named."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no results archive at {root} (write one with "
                                "`mmsr results archive DIR`)")
    report = ArchiveReport()
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            doc = read_document(path)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("skipped %s: %s", path, err)
            report.skipped.append((path.name, str(err)))
            continue
        values = [_dumps(doc[f], f) if f in _JSON_FIELDS else doc[f] for f in _FIELDS]
        ranks = [(doc["config_hash"], split, p["n"], base64.b64decode(p["int32_zlib_b64"]))
                 for split, p in sorted(doc["ranks"].items())]
        # what was derived from the run's weights joins a store that lacks it, also beside a
        # run the store already holds (it is keyed by the run as stored, so it never stands
        # for another training of the same configuration)
        report.derived_added += sum(derived.add_if_absent(store, entry)
                                    for entry in _derived_entries(doc))
        with store._write() as con:
            row = con.execute("SELECT status FROM runs WHERE config_hash = ?",
                              (doc["config_hash"],)).fetchone()
            if row is not None and row["status"] == "done":
                report.unchanged.append(path.name)
                continue
            marks = ", ".join("?" for _ in _FIELDS)
            con.execute(f"INSERT OR REPLACE INTO runs ({_COLUMNS}) VALUES ({marks})", values)
            con.execute("DELETE FROM ranks WHERE config_hash = ?", (doc["config_hash"],))
            con.executemany("INSERT INTO ranks (config_hash, split, n, data) VALUES (?, ?, ?, ?)",
                            ranks)
        report.written.append(path.name)
    return report
