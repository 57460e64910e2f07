"""SQLite results store: every run, its configuration, metrics, history and provenance.

One row per configuration hash, so re-running a notebook loads finished runs instead of
training again. Every write is one short ``BEGIN IMMEDIATE`` transaction on its own
connection, in WAL mode with a 60 s busy timeout, so two notebooks (or a notebook and the
CLI) writing at once wait for each other instead of corrupting the file. WAL needs a local
file system; put the store on local disk, not on NFS.

A finished result is never destroyed by a later attempt: `start` leaves a ``done`` row as it is
(the re-run's result replaces it in `finish`), and `fail` never turns ``done`` into ``failed``.
Per-user ranks of every evaluated split are kept in a side table (zlib-compressed int32), so a
paired significance test between two stored runs needs no retraining. Listing and exporting
open the file read-only (``readonly=True``) and never create one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmsr_lib.config import RunConfig
from mmsr_lib.util.atomic import atomic_path
from mmsr_lib.util.paths import resolve

DEFAULT_RESULTS = "results/mmsr.sqlite"
STATUSES = ("running", "done", "failed")
RESULT_KEYS = ("metrics", "history", "timings", "dataset_fingerprint", "ranks", "extra")
# configuration fields shown as columns of `to_frame` (the rest stays in the JSON column)
KEY_CONFIG = (
    "data.source",
    "model.item_encoder",
    "model.recommender",
    "model.sequence",
    "model.text_encoder",
    "model.vision_encoder",
    "model.fusion",
    "model.finetune",
    "model.dim",
    "train.epochs",
    "train.lr",
    "train.seed",
)
METRIC_ORDER = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "HR@50", "NDCG@50")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    config_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    config TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}',
    dataset_fingerprint TEXT,
    git_commit TEXT,
    error TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    code_fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS ranks (
    config_hash TEXT NOT NULL,
    split TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (config_hash, split)
);
"""
_COLUMNS = (
    "config_hash, name, profile, status, config, metrics, history, timings, "
    "dataset_fingerprint, git_commit, error, extra, created, updated, code_fingerprint"
)


@dataclass
class RunRecord:
    """One stored run. ``config`` is the full ``RunConfig.to_dict()``; metrics are percent."""

    config_hash: str
    config: dict
    status: str
    metrics: dict = field(default_factory=dict)  # split -> {"HR@10": ..., ...}
    history: list = field(default_factory=list)  # one dict per validation
    timings: dict = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    git_commit: str | None = None
    error: str | None = None
    created: str = ""
    updated: str = ""
    name: str = ""
    profile: str = ""
    extra: dict = field(default_factory=dict)
    code_fingerprint: str | None = None

    def wall_seconds(self) -> float:
        """Wall time of the whole run, every segment of a resumed one included. Records stored
        before timings covered earlier segments (no ``earlier_segments_seconds``) get them back
        from their history: the epochs up to the resume point."""
        total = float(self.timings.get("total_seconds", float("nan")))
        resumed = (self.extra or {}).get("resumed_from")
        if "earlier_segments_seconds" in self.timings or resumed is None:
            return total
        from mmsr_lib.train import epoch_seconds  # torch: only for records that need it

        return total + epoch_seconds(self.history[: resumed + 1])

    def run_config(self) -> RunConfig:
        """The configuration as a ``RunConfig`` again (e.g. to re-run or vary it)."""
        return RunConfig.from_dict(self.config)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays, tensors and paths appear in histories and extras; store them."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # torch tensors, without importing torch here
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a value of type {type(obj).__name__} in the results store")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"result field {what!r} is not JSON-serialisable: {err}") from err


def _row_to_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        config_hash=row["config_hash"],
        config=json.loads(row["config"]),
        status=row["status"],
        metrics=json.loads(row["metrics"]),
        history=json.loads(row["history"]),
        timings=json.loads(row["timings"]),
        dataset_fingerprint=row["dataset_fingerprint"],
        git_commit=row["git_commit"],
        error=row["error"],
        created=row["created"],
        updated=row["updated"],
        name=row["name"],
        profile=row["profile"],
        extra=json.loads(row["extra"]),
        code_fingerprint=row["code_fingerprint"],
    )


def _dotted(d: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


class ResultsStore:
    """The runs table of one SQLite file (default ``$MMSR_RESULTS`` or ``results/mmsr.sqlite``).

    ``readonly=True`` opens an existing store for reading only (listing, export, notebooks that
    only show results): a missing file is an error that names it instead of a new empty store,
    and a read-only file or folder is fine.
    """

    def __init__(self, path: str | Path | None = None, readonly: bool = False) -> None:
        raw = path if path is not None else os.environ.get("MMSR_RESULTS", DEFAULT_RESULTS)
        self.path = resolve(raw)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(
                    f"results store {self.path} does not exist; check --results / "
                    "$MMSR_RESULTS (a store is created by the first `mmsr train` or notebook run)"
                )
            with self._connect() as con:
                self._check_schema(con)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RuntimeError(f"cannot create the folder of the results store {self.path}: "
                               f"{err}") from err
        with self._connect() as con:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
                cols = {r["name"] for r in con.execute("PRAGMA table_info(runs)")}
                if "code_fingerprint" not in cols:  # a store written before fingerprints
                    con.execute("ALTER TABLE runs ADD COLUMN code_fingerprint TEXT")
            except sqlite3.Error as err:
                raise RuntimeError(_store_error(self.path, err)) from err

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def _check_schema(self, con: sqlite3.Connection) -> None:
        try:
            cols = {r["name"] for r in con.execute("PRAGMA table_info(runs)")}
        except sqlite3.Error as err:
            raise RuntimeError(_store_error(self.path, err)) from err
        if not cols:
            raise RuntimeError(f"{self.path} is an SQLite file without a runs table; it is not "
                               "an mmsr results store")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode; closed on exit. SQLite errors name the file."""
        try:
            if self.readonly:
                con = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=60.0,
                                      isolation_level=None)
            else:
                con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as err:
            raise RuntimeError(_store_error(self.path, err)) from err
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout = 60000")
            yield con
        except sqlite3.Error as err:
            raise RuntimeError(_store_error(self.path, err)) from err
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; the write lock is taken up front (no upgrade deadlock)."""
        if self.readonly:
            raise RuntimeError(f"{self.path} was opened read-only; open it with readonly=False "
                               "to write")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------
    def get(self, config_hash: str) -> RunRecord | None:
        with self._connect() as con:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE config_hash = ?", (config_hash,)
            ).fetchone()
        return _row_to_record(row) if row is not None else None

    def records(self, status: str | None = "done") -> list[RunRecord]:
        """Stored runs, oldest first; ``status=None`` returns every status."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        query = f"SELECT {_COLUMNS} FROM runs"
        args: tuple = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY created, config_hash", args).fetchall()
        return [_row_to_record(r) for r in rows]

    # -- writes --------------------------------------------------------------------------------
    def start(self, config: RunConfig) -> None:
        """Mark a run as running, unless a finished result is stored: that stays readable
        (and ``done``) until `finish` replaces it."""
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'running', ?, '{}', '[]', '{}', NULL, ?, NULL, '{}', ?, ?, NULL) "
                "ON CONFLICT(config_hash) DO UPDATE SET status = 'running', error = NULL, "
                "updated = excluded.updated WHERE runs.status != 'done'",
                (config.hash(), config.name, config.profile, config.to_json(), git_commit(),
                 now, now),
            )

    def finish(self, config: RunConfig, result: dict, code_fingerprint: str | None = None,
               commit: str | None = None) -> RunRecord:
        """Store a finished run's result (see ``RESULT_KEYS``) and return the stored record.

        `code_fingerprint` (`mmsr_lib.runs.fingerprint`) says which code computed it; a
        record whose fingerprint differs from the current code's counts as stale. `commit` is
        the checkout's commit when the run started (default: now; a long run outlives commits).
        """
        if not isinstance(result, dict):
            raise ValueError(f"a run result must be a dict, got {type(result).__name__}")
        unknown = set(result) - set(RESULT_KEYS)
        if unknown:
            raise ValueError(
                f"unknown result keys {sorted(unknown)}; a runner returns {list(RESULT_KEYS)} "
                "(put anything else under 'extra')"
            )
        metrics = result.get("metrics")
        if not isinstance(metrics, dict):
            raise ValueError("result['metrics'] must be a dict such as {'test': {'HR@10': ...}}")
        for key, kind in (("history", list), ("timings", dict), ("extra", dict),
                          ("ranks", dict)):
            if key in result and not isinstance(result[key], kind):
                raise ValueError(f"result[{key!r}] must be a {kind.__name__}")
        ranks = {split: _pack_ranks(r, split) for split, r in result.get("ranks", {}).items()}
        fingerprint = result.get("dataset_fingerprint")
        key = config.hash()
        values = (
            key, config.name, config.profile, config.to_json(),
            _dumps(metrics, "metrics"), _dumps(result.get("history", []), "history"),
            _dumps(result.get("timings", {}), "timings"),
            None if fingerprint is None else str(fingerprint), commit or git_commit(),
            _dumps(result.get("extra", {}), "extra"),
        )
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?) "
                "ON CONFLICT(config_hash) DO UPDATE SET name = excluded.name, "
                "profile = excluded.profile, status = 'done', config = excluded.config, "
                "metrics = excluded.metrics, history = excluded.history, "
                "timings = excluded.timings, dataset_fingerprint = excluded.dataset_fingerprint, "
                "git_commit = excluded.git_commit, error = NULL, extra = excluded.extra, "
                "updated = excluded.updated, code_fingerprint = excluded.code_fingerprint",
                (*values, now, now, code_fingerprint),
            )
            con.execute("DELETE FROM ranks WHERE config_hash = ?", (key,))
            con.executemany("INSERT INTO ranks (config_hash, split, n, data) VALUES (?, ?, ?, ?)",
                            [(key, split, n, blob) for split, (n, blob) in ranks.items()])
        record = self.get(key)
        assert record is not None  # just written
        return record

    def fail(self, config: RunConfig, error: str) -> None:
        """Record that a run failed, with the error message (what the user needs to fix).

        A stored finished result is kept as it is (the error is only logged by the caller): a
        failed duplicate or re-run must never turn ``done`` into ``failed``.
        """
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'failed', ?, '{}', '[]', '{}', NULL, ?, ?, '{}', ?, ?, NULL) "
                "ON CONFLICT(config_hash) DO UPDATE SET status = 'failed', "
                "error = excluded.error, git_commit = excluded.git_commit, "
                "updated = excluded.updated WHERE runs.status != 'done'",
                (config.hash(), config.name, config.profile, config.to_json(), git_commit(),
                 str(error), now, now),
            )

    def ranks(self, config_hash: str) -> dict[str, np.ndarray]:
        """Per-user 0-based ranks of every stored split of a run (rows in evaluation order)."""
        with self._connect() as con:
            rows = con.execute("SELECT split, n, data FROM ranks WHERE config_hash = ?",
                               (config_hash,)).fetchall()
        out = {}
        for row in rows:
            arr = np.frombuffer(zlib.decompress(row["data"]), dtype="<i4").astype(np.int64)
            if len(arr) != row["n"]:
                raise RuntimeError(f"{self.path}: stored ranks of {config_hash}/{row['split']} "
                                   f"hold {len(arr)} values, expected {row['n']}; re-run it")
            out[row["split"]] = arr
        return out

    def delete(self, config_hash: str) -> bool:
        """Remove one run; True when a row was deleted."""
        with self._write() as con:
            cur = con.execute("DELETE FROM runs WHERE config_hash = ?", (config_hash,))
        return cur.rowcount > 0

    # -- tables --------------------------------------------------------------------------------
    def to_frame(self, split: str = "test") -> pd.DataFrame:
        """One row per run (every status): identity, key config, the split's metrics."""
        rows, metric_names = [], []
        for rec in self.records(status=None):
            m = rec.metrics.get(split) or {}
            metric_names += [k for k in m if k not in metric_names]
            rows.append({
                "name": rec.name, "profile": rec.profile, "hash": rec.config_hash,
                **{k: _dotted(rec.config, k) for k in KEY_CONFIG},
                **m,
                "status": rec.status, "git_commit": rec.git_commit, "updated": rec.updated,
                "code_fp": rec.code_fingerprint,
            })
        known = [k for k in METRIC_ORDER if k in metric_names]
        metrics = known + sorted(k for k in metric_names if k not in known)
        columns = ["name", "profile", "hash", *KEY_CONFIG, *metrics, "status", "git_commit",
                   "updated", "code_fp"]
        return pd.DataFrame(rows, columns=columns)

    def export_csv(self, path: str | Path) -> Path:
        """Every run with the metrics of every split as ``<split>/<metric>`` columns.

        Written to a temporary file first and renamed, so a reader never sees half a file.
        """
        out = resolve(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for rec in self.records(status=None):
            row: dict[str, Any] = {
                "name": rec.name, "profile": rec.profile, "hash": rec.config_hash,
                **{k: _dotted(rec.config, k) for k in KEY_CONFIG},
                "status": rec.status, "git_commit": rec.git_commit,
                "dataset_fingerprint": rec.dataset_fingerprint,
                "created": rec.created, "updated": rec.updated, "error": rec.error,
            }
            for split, metrics in sorted(rec.metrics.items()):
                for k, v in (metrics or {}).items():
                    row[f"{split}/{k}"] = v
            row["config"] = json.dumps(rec.config, sort_keys=True)
            rows.append(row)
        frame = pd.DataFrame(rows)
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
        return out


def _pack_ranks(ranks: Any, split: str) -> tuple[int, bytes]:
    arr = np.asarray(ranks)
    if arr.ndim != 1 or (len(arr) and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max)):
        raise ValueError(f"result['ranks'][{split!r}] must be a 1-D array of 0-based ranks")
    return len(arr), zlib.compress(arr.astype("<i4").tobytes(), 6)


def _store_error(path: Path, err: Exception) -> str:
    """One sentence naming the store file and what to do for an SQLite error."""
    text = str(err)
    if "readonly" in text or "read-only" in text:
        hint = "the file or its folder is read-only; make it writable or use another --results"
    elif "not a database" in text or "malformed" in text or "file is encrypted" in text:
        hint = ("the file is not a valid SQLite database (corrupt or another file); move it "
                "away and let a new store be created, or point --results at the right file")
    elif "unable to open" in text:
        hint = "the file cannot be opened; check the path and its permissions"
    elif "locked" in text or "busy" in text:
        hint = "another process holds a write lock for too long; retry when it is done"
    else:
        hint = "see the SQLite message"
    return f"results store {path}: {text} ({hint})"


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout holding ``mmsr_lib``; None outside a checkout.

    Not cached: a notebook session outlives commits, and each run must name its own.
    """
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None
