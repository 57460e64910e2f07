"""The main job (README quick start, notebook 00): do text and images beat item IDs?

On the embedded catalog, SASRec with ID embeddings (IDSR) against the same SASRec fed by the
item's text (MMSR-T), its image (MMSR-V) and both fused (MMSR), with the profile's encoders
(cpu: real pretrained MiniLM-L6 and EfficientNet-Lite1, frozen), plus most-popular as the floor.
Overall and on cold items; the sentence under the table is computed with the significance rule
(`workbook.significance`), never written in advance.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from mmsr_lib.config import RunConfig, profile_config, profile_seeds
from mmsr_lib.runs.runner import load_data, run_grid
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook.plots import plot_items, plot_learning_curves, save_figure
from mmsr_lib.workbook.report import to_markdown
from mmsr_lib.workbook.significance import adjust, compare, converged, summarize, verdict

# label -> settings; MMSR fuses with coarse gating of the pooled vectors: the quick start shows
# the question in minutes; notebook 02 compares every fusion (merge-attention included)
QUICKSTART_MODELS: dict[str, tuple[str, ...]] = {
    "MostPop": ("model.recommender=mostpop",),
    "IDSR": ("model.item_encoder=id",),
    "MMSR-T": ("model.item_encoder=text",),
    "MMSR-V": ("model.item_encoder=vision",),
    "MMSR": ("model.item_encoder=mm", "model.fusion=gate"),
}
SPLITS = {"test": "all test users", "cold_test": "users whose test item is cold"}
METRICS = ("HR@10", "NDCG@10")


def quickstart_configs(profile: str | None = None, *overrides: str) -> dict[str, RunConfig]:
    """One SASRec configuration per item representation; `overrides` are dotted."""
    base = profile_config(profile).override("model.sequence=sasrec", *overrides)
    return {label: base.override(*settings, f"name=quickstart-{label.lower()}")
            for label, settings in QUICKSTART_MODELS.items()}


def run_quickstart(
    profile: str | None = None,
    *overrides: str,
    store: ResultsStore | None = None,
    figures_dir: str | Path | None = "figures",
    progress: bool = True,
    seeds: tuple[int, ...] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[RunRecord]]]:
    """Train (or load) the quickstart rows; returns the table (overall and cold columns) and
    the runs per row. One seed (the profile's first) unless `seeds` asks for more."""
    configs = quickstart_configs(profile, *overrides)
    cfg0 = next(iter(configs.values()))
    seeds = seeds if seeds is not None else profile_seeds(cfg0.profile)[:1]
    store = store if store is not None else ResultsStore()
    results = run_grid(configs, store=store, progress=progress, seeds=seeds)
    table = quickstart_table(results)
    if figures_dir is not None:
        write_quickstart_figures(results, cfg0, table, figures_dir)
    return table, results


def quickstart_table(results: dict[str, list[RunRecord]]) -> pd.DataFrame:
    """Rows = item representations; columns = HR@10/NDCG@10 overall and on cold items (mean
    over seeds), the encoders used, and whether every seed converged."""
    rows = []
    for label, runs in results.items():
        row: dict = {"model": label}
        for split, name in (("test", ""), ("cold_test", "cold ")):
            s = summarize(runs, split, METRICS)
            row.update({f"{name}{m}": s[m] for m in METRICS})
        row["converged"] = summarize(runs)["converged"]
        row["weights"] = _weights(runs[0])
        rows.append(row)
    return pd.DataFrame(rows)


def _weights(record: RunRecord) -> str:
    from mmsr_lib.workbook.grids import describe_encoders

    return describe_encoders(record.run_config())


def quickstart_summary(table: pd.DataFrame, results: dict[str, list[RunRecord]],
                       store: ResultsStore) -> str:
    """The computed sentences: each content row against IDSR, overall and on cold items, with
    a paired Wilcoxon test over the same users (and no claim for a run that did not converge);
    and IDSR against most-popular. The lines are one family: Holm over the converged pairs."""
    found = []  # (who, A, B, test, A converged, B converged)
    for split, who in SPLITS.items():
        for label in ("MMSR-T", "MMSR-V", "MMSR"):
            if label not in results or "IDSR" not in results:
                continue
            test = compare(store, results[label], results["IDSR"], split, "NDCG@10")
            found.append((who, label, "IDSR", test, converged(results[label]),
                          converged(results["IDSR"])))
    if "MostPop" in results and "IDSR" in results:
        test = compare(store, results["IDSR"], results["MostPop"], "test", "NDCG@10")
        found.append(("all test users", "IDSR", "MostPop", test, converged(results["IDSR"]),
                      True))
    adjust([f[3] for f in found if f[4] and f[5]])
    return "\n".join(f"[{who}] " + verdict(test, a, b, conv_a, conv_b)
                     for who, a, b, test, conv_a, conv_b in found)


def quickstart_markdown(table: pd.DataFrame, decimals: int = 2) -> str:
    metrics = [c for c in table.columns if "@" in c]
    return to_markdown(table.set_index("model"), metrics, decimals=decimals)


def plot_idsr_vs_mmsr(table: pd.DataFrame, metric: str = "NDCG@10") -> plt.Figure:
    """Bars per representation, overall and on cold items: where content helps most."""
    t = table.set_index("model")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
    for ax, (col, title) in zip(axes, ((metric, "all test users"),
                                       (f"cold {metric}", "cold test items")), strict=True):
        values = t[col]
        colors = ["#9e9e9e" if m in ("MostPop", "IDSR") else "#1f77b4" for m in values.index]
        ax.bar(values.index, values.to_numpy(), color=colors)
        ax.set_title(title)
        ax.set_ylabel(f"test {metric} (%)")
        for i, v in enumerate(values.to_numpy()):
            ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelrotation=0, labelsize=8)
    fig.suptitle("IDs vs text / image / both (SASRec)")
    fig.tight_layout()
    return fig


def write_quickstart_figures(
    results: dict[str, list[RunRecord]], cfg: RunConfig, table: pd.DataFrame, out: str | Path
) -> list[Path]:
    out = resolve(out)
    curves = {label: runs[0].history for label, runs in results.items() if runs[0].history}
    suffix = "" if cfg.profile == "cpu" else f"_{cfg.profile}"
    return [
        save_figure(plot_learning_curves(curves), out / f"quickstart_curves{suffix}.png"),
        save_figure(plot_idsr_vs_mmsr(table), out / f"quickstart_results{suffix}.png"),
        save_figure(plot_items(load_data(cfg.resolved().data), n=6),
                    out / f"quickstart_items{suffix}.png"),
    ]


def print_quickstart(profile: str, *overrides: str, store: ResultsStore | None = None,
                     figures_dir: str | Path = "figures") -> int:
    """What `mmsr demo` prints: the table, the computed sentences, where the figures went."""
    store = store if store is not None else ResultsStore()
    table, results = run_quickstart(profile, *overrides, store=store, figures_dir=figures_dir)
    any_rec = results["IDSR"][0]
    seeds = len(results["IDSR"])
    print(f"\nTest metrics (%), profile={profile}, data={any_rec.extra.get('data')}, "
          f"{any_rec.extra.get('n_users')} users, {any_rec.extra.get('n_items')} items, "
          f"{any_rec.extra.get('n_cold_test')} users with a cold test item, {seeds} seed(s); "
          "bold best, underlined second:\n")
    print(quickstart_markdown(table))
    print("\n" + quickstart_summary(table, results, store))
    suffix = "" if profile == "cpu" else f"_{profile}"
    print(f"\nfigures: {figures_dir}/quickstart_results{suffix}.png, "
          f"quickstart_curves{suffix}.png, quickstart_items{suffix}.png")
    return 0
