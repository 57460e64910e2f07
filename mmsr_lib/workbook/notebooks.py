"""Notebook plumbing: record values from inside a notebook, execute notebooks headlessly.

`record(name, value)` is how a notebook tells its test what it computed (the microsoft/recommenders
pattern, without scrapbook): values go to the JSON file named by `MMSR_RECORD_FILE` when set.
`python -m mmsr_lib.workbook.notebooks run --profile smoke` executes every notebook with papermill.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

from mmsr_lib.util.atomic import atomic_write_text
from mmsr_lib.util.paths import home

RECORD_ENV = "MMSR_RECORD_FILE"


def record(name: str, value: Any) -> Any:
    """Remember `value` under `name` for whoever executes this notebook; returns `value`."""
    path = os.environ.get(RECORD_ENV)
    if path:
        p = Path(path)
        data = json.loads(p.read_text()) if p.exists() else {}
        data[name] = value
        atomic_write_text(p, json.dumps(data, indent=1, default=float))
    return value


def notebooks_dir() -> Path:
    """The checkout's notebooks/ folder: next to the package, wherever `MMSR_HOME` (where
    outputs go) points."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if here.is_dir():
        return here
    return home() / "notebooks"


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The workbook's notebooks in order (optionally only those whose name contains a filter).

    Finding none is an error, never a silent run of zero notebooks: a misspelled name or a
    missing folder says which notebooks exist.
    """
    folder = notebooks_dir()
    every = sorted(folder.glob("*.ipynb"))
    if not every:
        raise FileNotFoundError(f"no notebooks in {folder}; run from a checkout of the project")
    paths = [p for p in every if any(n in p.stem for n in names)] if names else every
    if not paths:
        raise ValueError(f"no notebook matches {names}; the notebooks are "
                         f"{[p.stem for p in every]}")
    return paths


def run_notebook(
    path: str | Path,
    profile: str = "smoke",
    output_dir: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: int | None = None,
) -> dict[str, Any]:
    """Execute one notebook with papermill; returns the values it recorded.

    The executed copy (with outputs) goes to `output_dir` (default runs/notebooks), never over
    the committed, output-free source.
    """
    import papermill as pm

    path = Path(path)
    out_dir = Path(output_dir) if output_dir else home() / "runs" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    rec_file = out_dir / f"{path.stem}.{profile}.records.json"
    rec_file.unlink(missing_ok=True)
    old = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = str(rec_file)
    try:
        pm.execute_notebook(
            str(path),
            str(out_dir / f"{path.stem}.{profile}.ipynb"),
            parameters={"profile": profile, **(parameters or {})},
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
        )
    finally:
        if old is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = old
    return json.loads(rec_file.read_text()) if rec_file.exists() else {}


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts in place; True if the file changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        for key in ("execution", "papermill"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def _done_marker(out_dir: Path, path: Path, profile: str, parameters: dict) -> Path:
    return out_dir / f"{path.stem}.{profile}.done.json"


def _fingerprint(path: Path, parameters: dict) -> str:
    """The notebook's source, its parameters and the library's code (`library_fingerprint`):
    a notebook's tables are computed by the library, so a change there runs it again."""
    import hashlib

    h = hashlib.sha256(path.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    h.update(library_fingerprint().encode())
    return h.hexdigest()[:16]


def library_fingerprint() -> str:
    """Digest of every mmsr_lib module's code (comments and docstrings excluded, as for runs)
    and the key package versions (`runs.fingerprint`)."""
    from mmsr_lib.runs.fingerprint import ROOT, _digest

    return _digest(tuple(sorted(ROOT.rglob("*.py"))))


def run_batch(names: list[str] | None, profile: str, out: str | Path | None = None,
              parameters: dict[str, Any] | None = None, force: bool = False) -> int:
    """Run the workbook's notebooks in order, printing each one's status and wall time; a
    notebook that already ran to the end with the same source, parameters and library code is
    skipped (`force` runs it again). The executed copies stay in `out` (default runs/notebooks).
    Returns the number of failures; every notebook is attempted."""
    import time

    parameters = dict(parameters or {})
    out_dir = Path(out) if out else home() / "runs" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for nb in notebook_paths(names):
        marker = _done_marker(out_dir, nb, profile, parameters)
        stamp = _fingerprint(nb, {"profile": profile, **parameters})
        if not force and marker.exists() and json.loads(marker.read_text()).get("stamp") == stamp:
            print(f"{nb.name}: done before (same source, parameters and library code), skipped; "
                  f"{out_dir / f'{nb.stem}.{profile}.ipynb'}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            run_notebook(nb, profile, out_dir, parameters)
        except Exception as err:  # keep going: report every notebook
            failures += 1
            print(f"{nb.name}: FAILED after {time.perf_counter() - t0:.0f} s: "
                  f"{failure_text(err, out_dir / f'{nb.stem}.{profile}.ipynb')}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        atomic_write_text(marker, json.dumps({"stamp": stamp, "seconds": seconds}))
        print(f"{nb.name}: ok in {seconds:.0f} s -> {out_dir / f'{nb.stem}.{profile}.ipynb'}",
              flush=True)
    return failures


def failure_text(err: Exception, executed: Path) -> str:
    """One line on why a notebook failed: for an error raised inside a cell (papermill's
    execution error, whose text starts with a blank line) the cell's exception and where the
    executed copy with the traceback is; for any other, the exception's first line."""
    def first_line(text: object) -> str:
        return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")

    ename = getattr(err, "ename", None)
    if ename:
        return (f"{ename}: {first_line(getattr(err, 'evalue', ''))} (cell "
                f"[{getattr(err, 'exec_count', '?')}]; the traceback is in {executed})")
    return f"{type(err).__name__}: {first_line(err)}"


def parse_parameter(text: str) -> Any:
    """A command-line parameter value as the notebook's first cell would write it: a Python
    literal (False, 3, [42, 43], None) when it parses as one, else the text itself. Tuples
    become lists: papermill writes a tuple into the notebook as its text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsr_lib.workbook.notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute notebooks headlessly with papermill, in order")
    run.add_argument("names", nargs="*", help="only notebooks whose name contains one of these")
    run.add_argument("--profile", default=os.environ.get("MMSR_PROFILE", "smoke"))
    run.add_argument("--data-path", default=None,
                     help="a data set in the mmsr format for the paper profile (data_path)")
    run.add_argument("--out", default=None, help="folder of the executed copies")
    run.add_argument("--force", action="store_true", help="run notebooks that are done again")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"),
                     help="a notebook parameter, as papermill's -p (a Python literal, else a "
                          "string), e.g. -p include_movielens False; repeatable")
    strip = sub.add_parser("strip", help="strip outputs before committing")
    strip.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    try:
        paths = notebook_paths(args.names)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "run":
        params = {"data_path": args.data_path} if args.data_path else {}
        params.update({name: parse_parameter(value) for name, value in args.parameter})
        return 1 if run_batch(args.names, args.profile, args.out, params, args.force) else 0
    for nb in paths:
        if strip_outputs(nb):
            print(f"{nb.name}: stripped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
