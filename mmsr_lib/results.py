"""SQLite results store: every run, its configuration, metrics, history and provenance.

One row per configuration hash, so re-running a notebook loads finished runs instead of
training again. Every write is one short ``BEGIN IMMEDIATE`` transaction on its own
connection, in WAL mode with a 60 s busy timeout, so two notebooks (or a notebook and the
CLI) writing at once wait for each other instead of corrupting the file. WAL needs a local
file system; put the store on local disk, not on NFS.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmsr_lib.config import RunConfig
from mmsr_lib.paths import resolve

DEFAULT_RESULTS = "results/mmsr.sqlite"
STATUSES = ("running", "done", "failed")
RESULT_KEYS = ("metrics", "history", "timings", "dataset_fingerprint", "extra")
# configuration fields shown as columns of `to_frame` (the rest stays in the JSON column)
KEY_CONFIG = (
    "data.source",
    "model.item_encoder",
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
    updated TEXT NOT NULL
)
"""
_COLUMNS = (
    "config_hash, name, profile, status, config, metrics, history, timings, "
    "dataset_fingerprint, git_commit, error, extra, created, updated"
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
    )


def _dotted(d: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


class ResultsStore:
    """The runs table of one SQLite file (default ``$MMSR_RESULTS`` or ``results/mmsr.sqlite``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        raw = path if path is not None else os.environ.get("MMSR_RESULTS", DEFAULT_RESULTS)
        self.path = resolve(raw)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode; closed on exit."""
        try:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as err:
            raise RuntimeError(f"cannot open the results store {self.path}: {err}") from err
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout = 60000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; the write lock is taken up front (no upgrade deadlock)."""
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
        """Mark a run as running; a previous row with the same hash is reset entirely."""
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT OR REPLACE INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'running', ?, '{}', '[]', '{}', NULL, ?, NULL, '{}', ?, ?)",
                (config.hash(), config.name, config.profile, config.to_json(), git_commit(),
                 now, now),
            )

    def finish(self, config: RunConfig, result: dict) -> RunRecord:
        """Store a finished run's result (see ``RESULT_KEYS``) and return the stored record."""
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
        for key, kind in (("history", list), ("timings", dict), ("extra", dict)):
            if key in result and not isinstance(result[key], kind):
                raise ValueError(f"result[{key!r}] must be a {kind.__name__}")
        fingerprint = result.get("dataset_fingerprint")
        values = (
            config.hash(), config.name, config.profile, config.to_json(),
            _dumps(metrics, "metrics"), _dumps(result.get("history", []), "history"),
            _dumps(result.get("timings", {}), "timings"),
            None if fingerprint is None else str(fingerprint), git_commit(),
            _dumps(result.get("extra", {}), "extra"),
        )
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) "
                "ON CONFLICT(config_hash) DO UPDATE SET name = excluded.name, "
                "profile = excluded.profile, status = 'done', config = excluded.config, "
                "metrics = excluded.metrics, history = excluded.history, "
                "timings = excluded.timings, dataset_fingerprint = excluded.dataset_fingerprint, "
                "git_commit = excluded.git_commit, error = NULL, extra = excluded.extra, "
                "updated = excluded.updated",
                (*values, now, now),
            )
        record = self.get(config.hash())
        assert record is not None  # just written
        return record

    def fail(self, config: RunConfig, error: str) -> None:
        """Record that a run failed, with the error message (what the user needs to fix)."""
        now = _now()
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, 'failed', ?, '{}', '[]', '{}', NULL, ?, ?, '{}', ?, ?) "
                "ON CONFLICT(config_hash) DO UPDATE SET status = 'failed', "
                "error = excluded.error, git_commit = excluded.git_commit, "
                "updated = excluded.updated",
                (config.hash(), config.name, config.profile, config.to_json(), git_commit(),
                 str(error), now, now),
            )

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
            })
        known = [k for k in METRIC_ORDER if k in metric_names]
        metrics = known + sorted(k for k in metric_names if k not in known)
        columns = ["name", "profile", "hash", *KEY_CONFIG, *metrics, "status", "git_commit",
                   "updated"]
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
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                frame.to_csv(fh, index=False)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out


def run_or_load(
    config: RunConfig,
    runner: Callable[[RunConfig], dict] | None = None,
    store: ResultsStore | None = None,
    force: bool = False,
) -> RunRecord:
    """The stored record when this configuration is already done, else run and store it.

    A runner exception (or an interrupt) marks the run failed with its message and re-raises,
    so a half-finished run never looks done and never lingers as "running".
    """
    store = store if store is not None else ResultsStore()
    if not force:
        existing = store.get(config.hash())
        if existing is not None and existing.status == "done":
            return existing
    if runner is None:
        from mmsr_lib.experiment import run_experiment

        runner = run_experiment
    store.start(config)
    try:
        result = runner(config)
    except BaseException as err:
        store.fail(config, f"{type(err).__name__}: {err}")
        raise
    return store.finish(config, result)


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
