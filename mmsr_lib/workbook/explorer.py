"""Pick one configuration with widgets (item encoder, text and vision encoder, fusion and its
depth, sequence model), train it or load it from the results store, and see its metrics next
to the paper's number for the same row, with the run's learning curve.

Configurations are built exactly as `mmsr_lib.workbook.grids` builds the rows of Tables II-IV, so
a choice that is a row of those tables has that row's hash and loads instantly once a notebook
ran it; any other combination (say, FiLM fusion with GRU4Rec) is a new run, stored like every
other. Everything works without a browser too: `Explorer.run()` is what the button calls.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmsr_lib.config import RunConfig, default_profile, profile_config
from mmsr_lib.fusion import fusion_names
from mmsr_lib.runs.runner import run_experiment, run_or_load
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util import registry
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.paper_numbers import paper_wide

if TYPE_CHECKING:  # matplotlib and pandas' Styler load only when a figure or table is shown
    from matplotlib.figure import Figure
    from pandas.io.formats.style import Styler

KINDS = {"IDSR": "id", "MMSR-T": "text", "MMSR-V": "vision", "MMSR": "mm"}
PAPER_DATASET = "HM"  # the default column of the paper's tables (HM | Amazon | Bili | Kwai)
# The fusion depths the slider offers and `Choice.validate` accepts, in one place: the paper's
# 1, 2 and 4 merge-attention blocks (and 3). Deeper costs minutes per epoch on the cpu profile
# and the paper found no gain from depth.
FUSION_LAYERS = range(1, 5)
# metric columns of `summary`, printed with the paper's 4 decimals (percent)
METRIC_COLUMNS = ("HR@10", "NDCG@10", "cold HR@50", "paper HR@10")
DECIMALS = 4
MISSING = "n/a"  # how a number the run or the paper does not have is printed (as report.py does)


def is_attention_fusion(fusion: str) -> bool:
    """Whether `fusion` has a depth: only the attention fusions stack layers (the registry's
    ``attention`` flag); for coarse fusions the depth is dropped from the config and its hash."""
    return bool(registry.lookup("fusion", fusion).meta.get("attention", False))


@dataclass(frozen=True)
class Choice:
    """One configuration in the paper's vocabulary (labels as in its tables)."""

    kind: str = "MMSR"  # IDSR | MMSR-T | MMSR-V | MMSR
    text: str = "RoBERTa"  # grids.TEXT_LABELS
    vision: str = "MAE"  # grids.VISION_LABELS
    fusion: str = "merge_attn"  # fusion.fusion_names()
    fusion_layers: int = 1  # FUSION_LAYERS; matters for attention fusions only
    sequence: str = "SASRec"  # grids.ARCHITECTURES

    def validate(self) -> None:
        """Fail with the valid choices named, before anything is built or trained."""
        for value, valid, what in (
            (self.kind, KINDS, "kind"), (self.text, grids.TEXT_LABELS, "text encoder"),
            (self.vision, grids.VISION_LABELS, "vision encoder"),
            (self.fusion, fusion_names(), "fusion"),
            (self.sequence, grids.ARCHITECTURES, "sequence model"),
        ):
            if value not in valid:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(valid)}")
        layers = self.fusion_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or layers not in FUSION_LAYERS:
            raise ValueError(f"fusion_layers must be in {FUSION_LAYERS[0]}..{FUSION_LAYERS[-1]}, "
                             f"got {layers!r}")

    @property
    def uses_depth(self) -> bool:
        """Whether `fusion_layers` changes the run (an MMSR with an attention fusion)."""
        return self.kind == "MMSR" and is_attention_fusion(self.fusion)

    def name(self) -> str:
        """The run's name (not part of its hash): what it is, in the paper's labels."""
        parts = [self.sequence.lower(), self.kind]
        if self.kind in ("MMSR-T", "MMSR"):
            parts.append(self.text)
        if self.kind in ("MMSR-V", "MMSR"):
            parts.append(self.vision)
        if self.kind == "MMSR":
            parts.append(f"{self.fusion}-{self.fusion_layers}" if self.uses_depth else self.fusion)
        return "explore-" + "-".join(parts)


def notebook_overrides(seed: int = 42, data_path: str | None = None) -> list[str]:
    """The overrides notebooks 01-03 put on every row (their ``seed`` and ``data_path``
    parameters), so an explorer built with them has the notebook's hashes."""
    return [f"train.seed={seed}"] + ([f"data.path={data_path}"] if data_path else [])


def explorer_config(profile: str, choice: Choice, overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig of `choice`, built the way the grids build theirs (same hash for a row)."""
    choice.validate()
    source = profile_config(profile).override(*overrides).data.source  # settings are per data set
    seq = grids.sequence_settings(profile, grids.ARCHITECTURES[choice.sequence], source,
                                  content=choice.kind != "IDSR",
                                  item_encoder=KINDS.get(choice.kind))
    if choice.kind == "IDSR":  # Table IV's IDSR rows: the profile config, the architecture's
        return profile_config(profile).override(*seq, f"name={choice.name()}", *overrides)
    kind = KINDS[choice.kind]
    names = grids.encoder_names(profile)
    base = grids.grid_base(profile, (f"model.fusion={choice.fusion}",
                                     f"model.fusion_layers={choice.fusion_layers}"))
    enc: dict[str, str] = {}
    if kind in ("text", "mm"):
        enc["text"] = names[choice.text]
    if kind in ("vision", "mm"):
        enc["vision"] = names[choice.vision]
    return grids.row_config(base, kind, choice.name(), *seq, overrides=overrides, **enc)


def paper_rows(profile: str, overrides: Sequence[str] = ()) -> dict[str, tuple[str, str, str]]:
    """config hash -> (paper table, group, row) for every row of Tables II-IV on `profile`."""
    out: dict[str, tuple[str, str, str]] = {}
    builders = (grids.table2_configs, grids.table3_configs, grids.table4_configs)
    for grid in (build(profile, *overrides) for build in builders):
        for (group, row), cfg in grid.items():
            out.setdefault(cfg.hash(), (grid.table, group, row))
    return out


def paper_value(table: str, group: str, row: str, metric: str = "HR@10",
                dataset: str = PAPER_DATASET) -> float | None:
    """The paper's number on `dataset` for a row of Table II/III/IV, None when it has none."""
    wide = paper_wide(table, dataset)
    # the paper's spellings, mapped on both levels as `grids.compare_with_paper` maps them
    group, row = (grids.PAPER_LABELS.get(x, x) for x in (group, row))
    hit = wide[(wide["group"] == group) & (wide["row"] == row)]
    if hit.empty or metric not in hit:
        return None
    value = hit.iloc[0][metric]
    return None if pd.isna(value) else float(value)


def summary(record: RunRecord, cfg: RunConfig, paper: tuple[str, str, str] | None,
            dataset: str = PAPER_DATASET) -> pd.DataFrame:
    """One row: what was run, epochs, test and cold-test HR/NDCG@10, and the paper's row.

    Numbers stay exact (NaN where the run or the paper has none) so they can be compared and
    recorded; `styled` prints them as the paper does.
    """
    test = record.metrics.get("test") or {}
    cold = record.metrics.get("cold_test") or {}
    paper_hr = paper_value(*paper, dataset=dataset) if paper is not None else None
    row: dict[str, Any] = {
        "encoders": grids.describe_encoders(cfg),
        "sequence": cfg.model.sequence,
        "epochs": f"{record.extra.get('epochs_run', '-')}/{cfg.resolved().train.epochs}",
        "HR@10": test.get("HR@10", float("nan")), "NDCG@10": test.get("NDCG@10", float("nan")),
        "cold HR@50": cold.get("HR@50", float("nan")),
        "paper row": f"Table {paper[0]}: {paper[1]} / {paper[2]}" if paper is not None else "-",
        "paper HR@10": float("nan") if paper_hr is None else paper_hr,
        "paper data set": dataset,
    }
    frame = pd.DataFrame([row], index=[record.name])
    return frame.astype({c: float for c in METRIC_COLUMNS})


def styled(frame: pd.DataFrame) -> Styler:
    """`summary` as the paper prints its tables: metrics to 4 decimals, "n/a" where missing."""
    return frame.style.format(precision=DECIMALS, subset=list(METRIC_COLUMNS), na_rep=MISSING)


class Explorer:
    """Widgets for a `Choice`, a button that trains or loads it, and the result below.

    `profile` defaults to ``$MMSR_PROFILE`` (else cpu), as the notebooks' parameters cell does,
    so a cell that builds an explorer needs nothing defined before it.
    """

    def __init__(self, profile: str | None = None, overrides: Sequence[str] = (),
                 choice: Choice | None = None, store: ResultsStore | None = None,
                 paper_dataset: str = PAPER_DATASET) -> None:
        self.profile = profile if profile is not None else default_profile()
        self.paper_dataset = paper_dataset
        self.overrides = tuple(overrides)
        self.choice = choice or Choice()
        self.store = store
        self._paper = paper_rows(self.profile, self.overrides)
        self._widget = None
        self.last: pd.DataFrame | None = None  # summary of the last run
        self.record: RunRecord | None = None  # its stored record (exact metrics, history)
        self.trained = False  # whether the last run trained (False: loaded from the store)

    def config(self) -> RunConfig:
        return explorer_config(self.profile, self.choice, self.overrides)

    def run(self, progress: bool = True, on_epoch_end: Callable[[int, dict], None] | None = None,
            on_train: Callable[[], None] | None = None, **changes: Any) -> pd.DataFrame:
        """Train (or load) the current choice, updated by `changes`; returns its summary row.

        `on_train` is called when the choice has to be trained (not loaded) before its data and
        model are built, `on_epoch_end(epoch, record)` after every epoch (see `train.fit`).
        """
        if changes:
            choice = replace(self.choice, **changes)
            choice.validate()
            self.choice = choice
        cfg = self.config()
        self.trained, self.record, self.last = False, None, None

        def runner(run_cfg: RunConfig, **kwargs: Any) -> dict:
            self.trained = True
            if on_train is not None:
                on_train()
            return run_experiment(run_cfg, **kwargs)

        self.record = run_or_load(cfg, store=self.store, progress=progress,
                                  on_epoch_end=on_epoch_end, runner=runner)
        self.last = summary(self.record, cfg, self._paper.get(cfg.hash()), self.paper_dataset)
        return self.last

    def learning_curve(self) -> Figure | None:
        """Training loss and validation NDCG@10 per epoch (counted from 1) of the last run;
        None before a run or for a model that does not train."""
        if self.record is None or not self.record.history:
            return None
        from mmsr_lib.workbook.plots import plot_learning_curves

        return plot_learning_curves({self.record.name: self.record.history}, metric="NDCG@10")

    # -- the widget ---------------------------------------------------------------------------
    @property
    def widget(self):
        """The ipywidgets box (built on first use, so the module imports without ipywidgets)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _build(self):
        import ipywidgets as w

        c = self.choice
        fields = {
            "kind": w.ToggleButtons(options=list(KINDS), value=c.kind, description="item"),
            "text": w.Dropdown(options=grids.TEXT_LABELS, value=c.text, description="text"),
            "vision": w.Dropdown(options=grids.VISION_LABELS, value=c.vision,
                                 description="vision"),
            "fusion": w.Dropdown(options=fusion_names(), value=c.fusion, description="fusion"),
            "fusion_layers": w.IntSlider(value=c.fusion_layers, min=FUSION_LAYERS[0],
                                         max=FUSION_LAYERS[-1], description="layers"),
            "sequence": w.Dropdown(options=list(grids.ARCHITECTURES), value=c.sequence,
                                   description="sequence"),
        }
        button = w.Button(description="Train or load", button_style="primary")
        hash_label = w.HTML()
        progress = w.IntProgress(value=0, min=0, max=1, description="epochs")
        progress_label = w.HTML()
        out = w.Output()

        def refresh(_=None) -> None:
            self.choice = Choice(**{k: f.value for k, f in fields.items()})
            kind = self.choice.kind
            fields["text"].disabled = kind not in ("MMSR-T", "MMSR")
            fields["vision"].disabled = kind not in ("MMSR-V", "MMSR")
            fields["fusion"].disabled = kind != "MMSR"
            fields["fusion_layers"].disabled = not self.choice.uses_depth
            cfg = self.config()
            stored = (self.store or ResultsStore()).get(cfg.hash())
            state = "stored, loads instantly" if stored is not None and stored.status == "done" \
                else "not run yet, trains on click"
            paper = self._paper.get(cfg.hash())
            where = f"; the paper's Table {paper[0]} row {paper[1]} / {paper[2]}" if paper else ""
            hash_label.value = f"<code>{cfg.hash()}</code> {state}{where}"

        def say(text: str) -> None:
            progress_label.value = html.escape(text)

        def on_train() -> None:
            say(f"loading the data, building the model, then training epoch 1/{progress.max}…")

        def on_epoch_end(_epoch: int, rec: dict) -> None:
            progress.value = rec["epoch"]
            valid = (rec.get("valid") or {}).get("NDCG@10")
            score = f", valid NDCG@10 {valid:.{DECIMALS}f}" if valid is not None else ""
            say(f"trained epoch {rec['epoch']}/{progress.max}{score}; going on…")

        def on_click(_) -> None:
            from IPython.display import display

            out.clear_output()
            button.disabled = True
            progress.bar_style, progress.value = "", 0
            progress.max = max(self.config().resolved().train.epochs, 1)
            say("checking the results store (the first time this loads the data set)…")
            t0, finished = time.perf_counter(), False
            try:
                with out:  # in a kernel, an error is shown there (and not raised further)
                    self.run(progress=False, on_epoch_end=on_epoch_end, on_train=on_train)
                    finished = True
            finally:
                button.disabled = False
                refresh()
            if not finished:
                progress.bar_style = "danger"
                say("failed; the error is below")
                return
            seconds = time.perf_counter() - t0
            show(display)  # "done" below means the table and the curve are there
            ran = int(self.record.extra.get("epochs_run", len(self.record.history)))
            progress.max, progress.value, progress.bar_style = max(ran, 1), ran, "success"
            say(f"done: trained {ran} epochs in {seconds:.1f} s" if self.trained
                else f"done: loaded from the results store ({ran} epochs trained earlier)")

        def show(display: Callable[[Any], None]) -> None:
            """The summary and the learning curve of the last run, into `out`."""
            import matplotlib.pyplot as plt

            with out:
                display(styled(self.last))
                fig = self.learning_curve()
                if fig is not None:
                    plt.close(fig)  # shown once, here; not again by the inline backend
                    display(fig)

        for f in fields.values():
            f.observe(refresh, names="value")
        button.on_click(on_click)
        self.fields, self.button, self.status, self.output = fields, button, hash_label, out
        self.progress, self.progress_label = progress, progress_label
        refresh()
        if self.last is not None:  # a run before the widget (the notebook's headless run)
            from IPython.display import display

            ran = int(self.record.extra.get("epochs_run", len(self.record.history)))
            progress.max, progress.value, progress.bar_style = max(ran, 1), ran, "success"
            say(f"last run: {self.record.name} ({ran} epochs)")
            show(display)
        return w.VBox([w.HBox([fields["kind"]]),
                       w.HBox([fields["text"], fields["vision"]]),
                       w.HBox([fields["fusion"], fields["fusion_layers"], fields["sequence"]]),
                       w.HBox([button, hash_label]), w.HBox([progress, progress_label]), out])

    def __repr__(self) -> str:
        return f"Explorer(profile={self.profile!r}, choice={asdict(self.choice)})"
