"""Pick one configuration with widgets (item encoder, text and vision encoder, fusion and its
depth, sequence model), train it or load it from the results store, and see its metrics next
to the paper's number for the same row.

Configurations are built exactly as `mmsr_lib.workbook.grids` builds the rows of Tables II-IV, so a choice
that is a row of those tables has that row's hash and loads instantly once a notebook ran it;
any other combination (say, FiLM fusion with GRU4Rec) is a new run, stored like every other.
Everything works without a browser too: `Explorer.run()` is what the button calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.fusion import fusion_names
from mmsr_lib.runs.runner import run_or_load
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.paper_numbers import paper_wide

KINDS = {"IDSR": "id", "MMSR-T": "text", "MMSR-V": "vision", "MMSR": "mm"}
PAPER_DATASET = "HM"


@dataclass(frozen=True)
class Choice:
    """One configuration in the paper's vocabulary (labels as in its tables)."""

    kind: str = "MMSR"  # IDSR | MMSR-T | MMSR-V | MMSR
    text: str = "RoBERTa"  # grids.TEXT_LABELS
    vision: str = "MAE"  # grids.VISION_LABELS
    fusion: str = "merge_attn"  # fusion.fusion_names()
    fusion_layers: int = 1
    sequence: str = "SASRec"  # grids.ARCHITECTURES

    def validate(self) -> None:
        for value, valid, what in (
            (self.kind, KINDS, "kind"), (self.text, grids.TEXT_LABELS, "text encoder"),
            (self.vision, grids.VISION_LABELS, "vision encoder"), (self.fusion, fusion_names(), "fusion"),
            (self.sequence, grids.ARCHITECTURES, "sequence model"),
        ):
            if value not in valid:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(valid)}")
        if not 1 <= self.fusion_layers <= 8:
            raise ValueError(f"fusion_layers must be in 1..8, got {self.fusion_layers}")

    def name(self) -> str:
        parts = [self.sequence.lower(), self.kind]
        if self.kind in ("MMSR-T", "MMSR"):
            parts.append(self.text)
        if self.kind in ("MMSR-V", "MMSR"):
            parts.append(self.vision)
        if self.kind == "MMSR":
            parts.append(f"{self.fusion}-{self.fusion_layers}")
        return "explore-" + "-".join(parts)


def explorer_config(profile: str, choice: Choice, overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig of `choice`, built the way the grids build theirs (same hash for a row)."""
    choice.validate()
    seq = f"model.sequence={grids.ARCHITECTURES[choice.sequence]}"
    if choice.kind == "IDSR":  # Table IV's IDSR rows: the plain profile config
        return profile_config(profile).override(seq, f"name={choice.name()}", *overrides)
    kind = KINDS[choice.kind]
    names = grids.encoder_names(profile)
    base = grids.grid_base(profile, (f"model.fusion={choice.fusion}",
                                     f"model.fusion_layers={choice.fusion_layers}"))
    enc: dict[str, str] = {}
    if kind in ("text", "mm"):
        enc["text"] = names[choice.text]
    if kind in ("vision", "mm"):
        enc["vision"] = names[choice.vision]
    return grids.row_config(base, kind, choice.name(), seq, overrides=overrides, **enc)


def paper_rows(profile: str, overrides: Sequence[str] = ()) -> dict[str, tuple[str, str, str]]:
    """config hash -> (paper table, group, row) for every row of Tables II-IV on `profile`."""
    out: dict[str, tuple[str, str, str]] = {}
    builders = (grids.table2_configs, grids.table3_configs, grids.table4_configs)
    for grid in (build(profile, *overrides) for build in builders):
        for (group, row), cfg in grid.items():
            out.setdefault(cfg.hash(), (grid.table, group, row))
    return out


def paper_value(table: str, group: str, row: str, metric: str = "HR@10") -> float | None:
    """The paper's HM number for a row of Table II/III/IV, None when it has none."""
    wide = paper_wide(table, PAPER_DATASET)
    # the paper's spellings, mapped on both levels as `grids.compare_with_paper` maps them
    group, row = (grids.PAPER_LABELS.get(x, x) for x in (group, row))
    hit = wide[(wide["group"] == group) & (wide["row"] == row)]
    if hit.empty or metric not in hit:
        return None
    value = hit.iloc[0][metric]
    return None if pd.isna(value) else float(value)


def summary(record: RunRecord, cfg: RunConfig, paper: tuple[str, str, str] | None) -> pd.DataFrame:
    """One row: what was run, epochs, test and cold-test HR/NDCG@10, and the paper's row."""
    test = record.metrics.get("test") or {}
    cold = record.metrics.get("cold_test") or {}
    row: dict[str, Any] = {
        "encoders": grids.describe_encoders(cfg),
        "sequence": cfg.model.sequence,
        "epochs": f"{record.extra.get('epochs_run', '-')}/{cfg.resolved().train.epochs}",
        "HR@10": test.get("HR@10"), "NDCG@10": test.get("NDCG@10"),
        "cold HR@50": cold.get("HR@50"),
        "paper row": "-", "paper HR@10 (HM)": None,
    }
    if paper is not None:
        row["paper row"] = f"Table {paper[0]}: {paper[1]} / {paper[2]}"
        row["paper HR@10 (HM)"] = paper_value(*paper)
    return pd.DataFrame([row], index=[record.name])


class Explorer:
    """Widgets for a `Choice`, a button that trains or loads it, and the result below."""

    def __init__(self, profile: str, overrides: Sequence[str] = (), choice: Choice | None = None,
                 store: ResultsStore | None = None) -> None:
        self.profile, self.overrides = profile, tuple(overrides)
        self.choice = choice or Choice()
        self.store = store
        self._paper = paper_rows(profile, self.overrides)
        self._widget = None
        self.last: pd.DataFrame | None = None

    def config(self) -> RunConfig:
        return explorer_config(self.profile, self.choice, self.overrides)

    def run(self, **changes: Any) -> pd.DataFrame:
        """Train (or load) the current choice, updated by `changes`; returns its summary row."""
        if changes:
            self.choice = replace(self.choice, **changes)
        cfg = self.config()
        record = run_or_load(cfg, store=self.store)
        self.last = summary(record, cfg, self._paper.get(cfg.hash()))
        return self.last

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
            "fusion_layers": w.IntSlider(value=c.fusion_layers, min=1, max=4,
                                         description="layers"),
            "sequence": w.Dropdown(options=list(grids.ARCHITECTURES), value=c.sequence,
                                   description="sequence"),
        }
        button = w.Button(description="Train or load", button_style="primary")
        hash_label = w.HTML()
        out = w.Output()

        def refresh(_=None) -> None:
            self.choice = Choice(**{k: f.value for k, f in fields.items()})
            kind = self.choice.kind
            fields["text"].disabled = kind not in ("MMSR-T", "MMSR")
            fields["vision"].disabled = kind not in ("MMSR-V", "MMSR")
            for k in ("fusion", "fusion_layers"):
                fields[k].disabled = kind != "MMSR"
            cfg = self.config()
            stored = (self.store or ResultsStore()).get(cfg.hash())
            state = "stored, loads instantly" if stored is not None and stored.status == "done" \
                else "not run yet, trains on click"
            paper = self._paper.get(cfg.hash())
            where = f"; the paper's Table {paper[0]} row {paper[1]} / {paper[2]}" if paper else ""
            hash_label.value = f"<code>{cfg.hash()}</code> {state}{where}"

        def on_click(_) -> None:
            out.clear_output()
            with out:
                from IPython.display import display

                button.disabled = True
                try:
                    display(self.run())
                finally:
                    button.disabled = False
                    refresh()

        for f in fields.values():
            f.observe(refresh, names="value")
        button.on_click(on_click)
        self.fields, self.button, self.status, self.output = fields, button, hash_label, out
        refresh()
        return w.VBox([w.HBox([fields["kind"]]),
                       w.HBox([fields["text"], fields["vision"]]),
                       w.HBox([fields["fusion"], fields["fusion_layers"], fields["sequence"]]),
                       w.HBox([button, hash_label]), out])

    def __repr__(self) -> str:
        return f"Explorer(profile={self.profile!r}, choice={asdict(self.choice)})"
