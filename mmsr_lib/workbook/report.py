"""Tables that read like the paper's: bold best, underlined second, improvements, and an honest
sentence on how our numbers line up with the paper's.

Metric values are already in percent. Best/second are decided on the values as displayed
(rounded to ``decimals``), so two cells that print the same are both marked; NaN is never
marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # importing the Styler module needs jinja2; only notebooks render it
    from pandas.io.formats.style import Styler

BEST_MODES = ("column", "row", "none")
_BOLD = "font-weight: bold"
_UNDERLINE = "text-decoration: underline"


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> list[str]:
    cols = list(cols)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what} {missing} not in the table; its columns are {list(df.columns)}")
    return cols


def best_marks(
    df: pd.DataFrame,
    metric_cols: Sequence[str],
    best: str = "column",
    higher_is_better: bool = True,
    decimals: int = 4,
) -> pd.DataFrame:
    """"best" / "second" / "" for every cell of ``metric_cols``.

    ``best="column"`` compares rows within each metric (the usual layout); ``"row"`` compares
    the metric columns within each row (Table V's layout, models as columns); ``"none"`` marks
    nothing. Ties share a mark; the second mark goes to the next distinct value.
    """
    if best not in BEST_MODES:
        raise ValueError(f"best must be one of {BEST_MODES}, got {best!r}")
    cols = _check_columns(df, metric_cols, "metric columns")
    values = df[cols].apply(pd.to_numeric, errors="coerce").round(decimals)
    if best == "none" or values.empty:
        return pd.DataFrame("", index=df.index, columns=cols, dtype=object)
    sign = 1.0 if higher_is_better else -1.0
    arr = sign * values.to_numpy(dtype=float)
    out = np.full(arr.shape, "", dtype=object)
    lines = arr.T if best == "column" else arr
    target = out.T if best == "column" else out
    for i, line in enumerate(lines):
        distinct = np.unique(line[~np.isnan(line)])[::-1]  # best first
        if len(distinct) >= 1:
            target[i][line == distinct[0]] = "best"
        if len(distinct) >= 2:
            target[i][line == distinct[1]] = "second"
    return pd.DataFrame(out, index=df.index, columns=cols, dtype=object)


def paper_table(
    df: pd.DataFrame,
    metric_cols: list[str],
    best: str = "column",
    higher_is_better: bool = True,
    decimals: int = 4,
) -> Styler:
    """A notebook-ready ``Styler``: best bold, second underlined, metrics to ``decimals``;
    other numeric columns (counts, shares) as `plain_number`, not pandas' six decimals."""
    marks = best_marks(df, metric_cols, best, higher_is_better, decimals)
    others = [c for c in df.columns if c not in metric_cols and
              pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    css = {"best": _BOLD, "second": _UNDERLINE, "": ""}

    def style(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for col in marks.columns:
            out[col] = marks[col].map(css)
        return out

    return (
        df.style.apply(style, axis=None)
        .format(precision=decimals, subset=list(metric_cols), na_rep="n/a")
        .format(plain_number, subset=others)
    )


def plain_number(value: object) -> str:
    """A count as a whole number with thousands separators, any other number to 2 decimals,
    NaN as n/a."""
    if value is None or value is pd.NA:
        return "n/a"
    x = float(value)  # numpy scalars of any width too
    if math.isnan(x):
        return "n/a"
    return f"{int(x):,}" if x.is_integer() else f"{x:.2f}"


def _cell(value: object, decimals: int) -> str:
    if value is None or value is pd.NA:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.{decimals}f}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(
    df: pd.DataFrame,
    metric_cols: Sequence[str],
    best: str = "column",
    decimals: int = 4,
    higher_is_better: bool = True,
) -> str:
    """A GitHub table with **best** and <u>second</u>; a named or non-default index is the
    first column (``df.set_index("model")`` shows the model names)."""
    marks = best_marks(df, metric_cols, best, higher_is_better, decimals)
    show_index = not (isinstance(df.index, pd.RangeIndex) and df.index.name is None)
    index_names = [n if n is not None else "" for n in df.index.names] if show_index else []
    header = [*index_names, *(str(c) for c in df.columns)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    align = ["---"] * len(index_names) + ["---:" if n else "---" for n in numeric]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for pos, (idx, row) in enumerate(df.iterrows()):
        cells = []
        if show_index:
            keys = idx if isinstance(idx, tuple) else (idx,)
            cells += [_cell(k, decimals) for k in keys]
        for col in df.columns:
            text = _cell(row[col], decimals)
            mark = marks[col].iloc[pos] if col in marks.columns else ""
            if mark == "best":
                text = f"**{text}**"
            elif mark == "second":
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relative_improvement(ours: float, best_baseline: float, relative_to: str = "baseline") -> str:
    """Signed relative improvement in percent with two decimals, e.g. ``"+4.16%"``.

    ``relative_to="baseline"`` is the usual (ours - baseline) / baseline. The paper's
    "Improv." columns mostly divide by our value instead (``relative_to="ours"``; see
    ``paper_numbers.paper_improvements()``), which reproduces more of its printed numbers.
    """
    if relative_to not in ("baseline", "ours"):
        raise ValueError(f"relative_to must be 'baseline' or 'ours', got {relative_to!r}")
    denom = best_baseline if relative_to == "baseline" else ours
    if not (math.isfinite(ours) and math.isfinite(best_baseline)) or denom == 0:
        return "n/a"
    pct = 100.0 * (ours - best_baseline) / denom
    if round(pct, 2) == 0:
        pct = 0.0  # no "-0.00%"
    return f"{pct:+.2f}%"


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """Our metrics next to the paper's: ``on`` + "<metric> (ours)", "<metric> (paper)" pairs.

    Metrics are the numeric columns present in both frames. Rows follow the paper's order,
    then rows only we have; a row missing on one side shows NaN there.
    """
    def flat(df: pd.DataFrame, side: str) -> pd.DataFrame:
        if any(k in (df.index.names or []) for k in on):
            df = df.reset_index()
        _check_columns(df, on, f"key columns of the {side} table")
        dup = df.duplicated(on)
        if dup.any():
            first = df.loc[dup, on].iloc[0].tolist()
            raise ValueError(f"the {side} table has duplicate rows for {on} = {first}")
        return df

    ours, paper = flat(ours, "ours"), flat(paper, "paper")
    metrics = [
        c for c in paper.columns
        if c in ours.columns and c not in on
        and pd.api.types.is_numeric_dtype(paper[c]) and pd.api.types.is_numeric_dtype(ours[c])
    ]
    if not metrics:
        raise ValueError(
            f"no numeric metric column is shared by both tables; ours has {list(ours.columns)}, "
            f"the paper's {list(paper.columns)}"
        )
    keys = pd.concat([paper[on], ours[on]]).drop_duplicates().reset_index(drop=True)
    left = ours[on + metrics].rename(columns={m: f"{m} (ours)" for m in metrics})
    right = paper[on + metrics].rename(columns={m: f"{m} (paper)" for m in metrics})
    out = keys.merge(left, on=on, how="left").merge(right, on=on, how="left")
    return out[on + [f"{m} ({s})" for m in metrics for s in ("ours", "paper")]]


def _names(index: pd.Index) -> str:
    return ", ".join(str(i) for i in index)


def agreement_sentence(
    ours: pd.Series, paper: pd.Series, label: str, higher_is_better: bool = True
) -> str:
    """One generated sentence comparing the ordering of rows in our results and the paper's.

    Reports Spearman's rank correlation over the rows both have and whether the best row
    agrees; it says "no clear agreement" or "opposite" when that is what the numbers show, and
    warns when there are too few rows to tell.
    """
    both = pd.concat([ours.rename("ours"), paper.rename("paper")], axis=1, join="inner").dropna()
    n = len(both)
    if n < 2:
        return (f"{label}: only {n} row(s) have both our value and the paper's, "
                "too few to compare orderings.")
    sign = 1.0 if higher_is_better else -1.0
    o, p = sign * both["ours"], sign * both["paper"]
    best_ours, best_paper = o.index[o == o.max()], p.index[p == p.max()]
    word = "highest" if higher_is_better else "lowest"
    parts = [f"{label}: over {n} rows"]
    if o.nunique() < 2 or p.nunique() < 2:
        parts.append(" one side has all values equal, so its ordering says nothing;")
    else:
        rho = float(o.rank().corr(p.rank()))
        if rho >= 0.7:
            verdict = "the orderings agree strongly"
        elif rho >= 0.3:
            verdict = "the orderings agree moderately"
        elif rho > -0.3:
            verdict = "there is no clear agreement between the orderings"
        else:
            verdict = "the orderings are largely opposite"
        parts.append(f" the Spearman rank correlation between our and the paper's ordering is "
                     f"{rho:+.2f} ({verdict});")
    parts.append(f" our {word} is {_names(best_ours)} ({both['ours'][best_ours[0]]:.4f}), "
                 f"the paper's is {_names(best_paper)} ({both['paper'][best_paper[0]]:.4f})")
    shared = best_ours.intersection(best_paper)
    if len(shared) and len(best_ours) == 1 and len(best_paper) == 1:
        parts.append(", so the best row agrees.")
    elif len(shared):
        parts.append(f", so the best rows overlap ({_names(shared)}) but are tied on one side.")
    else:
        parts.append(", so the best row does not agree.")
    if n <= 3:
        parts.append(f" With only {n} rows this is weak evidence.")
    return "".join(parts)


# -- the command line's views of stored runs ---------------------------------------------------------
SUMMARY_SPLITS = ("valid", "test", "cold_test")


def run_summary(record: Any, splits: Sequence[str] = SUMMARY_SPLITS, decimals: int = 2) -> str:
    """What `mmsr train` prints: the run's identity, its epochs, then a metrics table. A split
    whose user count the run stored (the cold subsets) names it: 0.00 on 80 cold users reads
    differently from 0.00 on the full test set."""
    cfg = record.config
    m = cfg.get("model", {})
    what = m.get("recommender") if m.get("recommender") != "sequential" else \
        f"{m.get('item_encoder')}/{m.get('sequence')}"
    ex = record.extra
    epochs = "" if ex.get("epochs_run") is None else (
        f", {ex['epochs_run']} epochs (best {ex.get('best_epoch')}, "
        f"{'converged' if ex.get('converged') else 'NOT converged: best epoch near the budget'})")
    rows = [{"split": s if ex.get(f"n_{s}") is None else f"{s} ({ex[f'n_{s}']:,} users)",
             **record.metrics[s]} for s in splits if record.metrics.get(s)]
    frame = pd.DataFrame(rows).set_index("split") if rows else pd.DataFrame()
    head = f"run {record.name} [{record.config_hash}] {what}{epochs}, status {record.status}"
    if frame.empty:
        return head + "\n(no metrics)"
    return head + "\n" + to_markdown(frame, list(frame.columns), best="none", decimals=decimals)


def results_listing(store: Any, split: str = "test", status: str = "done", wide: bool = False,
                    width: int = 120) -> str:
    """`mmsr results list`: one line per run, fitting `width` columns unless `wide`; runs
    computed by other code than the current library are marked stale."""
    from mmsr_lib.runs.fingerprint import code_fingerprint, same_code

    frame = store.to_frame(split)
    if status != "all":
        frame = frame[frame["status"] == status]
    if frame.empty:
        return "no stored runs" + (f" with status {status}" if status != "all" else "")
    current = {rec.config_hash: code_fingerprint(rec.run_config())
               for rec in store.records(status=None)}
    stale = ["" if same_code(fp, current.get(h, "")) else "stale"
             for h, fp in zip(frame["hash"], frame["code_fp"], strict=True)]
    if any(stale):  # computed by other code: `mmsr train` would run these again
        frame = frame.assign(stale=stale)
    if not wide:
        keep = ["name", "hash", "model.item_encoder", "model.sequence", "HR@10", "NDCG@10",
                "status", "stale"]
        frame = frame[[c for c in keep if c in frame.columns]].rename(
            columns={"model.item_encoder": "items", "model.sequence": "sequence"})
        frame["name"] = frame["name"].astype(str).str.slice(0, 34)
    with pd.option_context("display.width", 10_000 if wide else width,
                           "display.max_columns", None, "display.float_format", "{:.2f}".format):
        text = frame.fillna("-").to_string(index=False)
    return text
