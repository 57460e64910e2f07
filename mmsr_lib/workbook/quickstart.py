"""The main job (README quick start, notebook 00): ID-based SASRec, GRU4Rec and NextItNet plus
most-popular on the embedded catalog, a paper-style table and the quickstart figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.runs.runner import load_data, run_grid
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook.plots import plot_items, plot_learning_curves, plot_metric_bars, save_figure
from mmsr_lib.workbook.report import to_markdown
from mmsr_lib.workbook.study import histories, metrics_frame

QUICKSTART_MODELS = {
    "MostPop": ("model.recommender=mostpop",),
    "GRU4Rec": ("model.sequence=gru4rec",),
    "NextItNet": ("model.sequence=nextitnet",),
    "SASRec": ("model.sequence=sasrec",),
}


def quickstart_configs(profile: str | None = None, *overrides: str) -> dict[str, RunConfig]:
    """One ID-based configuration per model; `overrides` are dotted (``train.epochs=5``)."""
    base = profile_config(profile).override(*overrides)
    return {
        label: base.override(*settings, f"name=quickstart-{label.lower()}")
        for label, settings in QUICKSTART_MODELS.items()
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


def print_quickstart(profile: str, *overrides: str, store: ResultsStore | None = None,
                     figures_dir: str | Path = "figures") -> int:
    """What `mmsr demo` prints: the table, the computed summary, where the figures went."""
    table, records = run_quickstart(profile, *overrides, store=store, figures_dir=figures_dir)
    any_rec = next(iter(records.values()))
    print(f"\nTest metrics (%), profile={profile}, data={any_rec.extra.get('data')}, "
          f"{any_rec.extra.get('n_users')} users, {any_rec.extra.get('n_items')} items; "
          "bold best, underlined second:\n")
    print(quickstart_markdown(table))
    print("\n" + quickstart_summary(table))
    print(f"\nfigures: {figures_dir}/quickstart_curves.png, quickstart_results.png, "
          "quickstart_items.png")
    return 0
