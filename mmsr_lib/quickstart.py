"""The main job (README quick start, notebook 00): ID-based SASRec, GRU4Rec and NextItNet plus
most-popular on the embedded catalog, a paper-style table and the quickstart figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.experiment import load_data
from mmsr_lib.paths import resolve
from mmsr_lib.plots import plot_items, plot_learning_curves, plot_metric_bars, save_figure
from mmsr_lib.report import to_markdown
from mmsr_lib.results import ResultsStore, RunRecord
from mmsr_lib.study import histories, metrics_frame, run_grid

QUICKSTART_MODELS = {
    "MostPop": "mostpop",
    "GRU4Rec": "gru4rec",
    "NextItNet": "nextitnet",
    "SASRec": "sasrec",
}


def quickstart_configs(profile: str | None = None, *overrides: str) -> dict[str, RunConfig]:
    """One ID-based configuration per model; `overrides` are dotted (``train.epochs=5``)."""
    base = profile_config(profile).override(*overrides)
    return {
        label: base.override(f"model.sequence={seq}", f"name=quickstart-{seq}")
        for label, seq in QUICKSTART_MODELS.items()
    }


def run_quickstart(
    profile: str | None = None,
    *overrides: str,
    store: ResultsStore | None = None,
    figures_dir: str | Path | None = "figures",
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Train (or load) the quickstart models; returns the test table and the records."""
    configs = quickstart_configs(profile, *overrides)
    records = run_grid(configs, store=store, progress=progress)
    table = metrics_frame(records, "test")
    if figures_dir is not None:
        write_quickstart_figures(records, next(iter(configs.values())), table, figures_dir)
    return table, records


def write_quickstart_figures(
    records: dict[str, RunRecord], cfg: RunConfig, table: pd.DataFrame, out: str | Path
) -> list[Path]:
    out = resolve(out)
    trained = {k: v for k, v in histories(records).items() if v}
    data = load_data(cfg.data)
    return [
        save_figure(plot_learning_curves(trained), out / "quickstart_curves.png"),
        save_figure(plot_metric_bars(table), out / "quickstart_results.png"),
        save_figure(plot_items(data, n=6), out / "quickstart_items.png"),
    ]


def quickstart_markdown(table: pd.DataFrame) -> str:
    metrics = [c for c in table.columns if c != "model"]
    return to_markdown(table.set_index("model"), metrics)


def quickstart_summary(table: pd.DataFrame, metric: str = "HR@10") -> str:
    """A sentence computed from the table: the best model, and each model against MostPop."""
    t = table.set_index("model")[metric]
    best = t.idxmax()
    pop = t.get("MostPop")
    parts = [f"Best test {metric}: {best} ({t[best]:.2f}%)."]
    if pop is not None:
        for name, value in t.drop("MostPop").items():
            ratio = f"{value / pop:.1f}x" if pop > 0 else "n/a"
            verdict = "beats" if value > pop else "does not beat"
            parts.append(f"{name} {verdict} MostPop ({value:.2f}% vs {pop:.2f}%, {ratio}).")
    return " ".join(parts)
