"""The widget explorer: its configurations are the grids' rows (same hash), bad choices are
named, the widget says what it is doing while it trains, trains once and then loads from the
results store, prints numbers as the paper does and shows the learning curve."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from browser.notebook import EXPLORER_CELL

from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.explorer import (
    FUSION_LAYERS,
    Choice,
    Explorer,
    explorer_config,
    paper_value,
    styled,
    summary,
)


@pytest.mark.parametrize(
    ("choice", "grid", "key"),
    [
        (Choice(), "III", ("Attention", "MergeAttn-1")),
        (Choice(), "II", ("MMSR", "Ro.+MAE")),
        (Choice(kind="MMSR-T", text="BERT"), "II", ("MMSR-T", "BERT")),
        (Choice(kind="MMSR-V", vision="ResNet"), "II", ("MMSR-V", "ResNet")),
        (Choice(fusion="film+dnn"), "III", ("Coarse+", "FiLM")),
        (Choice(fusion="film", fusion_layers=3), "III", ("Coarse", "FiLM")),  # depth: no effect
        (Choice(fusion="merge_attn", fusion_layers=4), "III", ("Attention", "MergeAttn-4")),
        (Choice(kind="IDSR", sequence="GRU4Rec"), "IV", ("GRU4Rec", "IDSR")),
        (Choice(vision="Swin", sequence="NextItNet"), "IV", ("NextItNet", "MMSR")),
        (Choice(kind="MMSR-T", text="RoBERTa", sequence="GRU4Rec"), "IV", ("GRU4Rec", "MMSR-T")),
        # a column with its own setting (GRU4Rec's MMSR, grids.CONTENT_SETTINGS)
        (Choice(vision="Swin", sequence="GRU4Rec"), "IV", ("GRU4Rec", "MMSR")),
    ],
)
def test_a_choice_that_is_a_table_row_has_that_rows_hash(choice, grid, key) -> None:
    build = {"II": grids.table2_configs, "III": grids.table3_configs, "IV": grids.table4_configs}
    for profile in ("cpu", "paper"):
        assert explorer_config(profile, choice).hash() == build[grid](profile)[key].hash()


@pytest.mark.parametrize("kind", ["IDSR", "MMSR-T"])
def test_a_movielens_choice_trains_under_that_data_sets_settings(kind) -> None:
    """GRU4Rec's tuned setting differs per data set: an explorer row on MovieLens-100K is the
    notebook's MovieLens row, not the synthetic one with another source."""
    ml = ("data.source=movielens-100k",)
    cfg = explorer_config("cpu", Choice(kind=kind, sequence="GRU4Rec"), ml)
    row = grids.table4_configs("cpu", dataset="movielens-100k")["GRU4Rec", kind]
    assert (cfg.resolved().train.lr, cfg.resolved().model.dropout) == (
        row.resolved().train.lr, row.resolved().model.dropout)
    if kind == "IDSR":  # content rows differ from Table IV's in their fusion, not their settings
        assert cfg.hash() == row.hash()


def test_paper_value_of_a_row() -> None:
    assert paper_value("III", "Attention", "MergeAttn-1") == pytest.approx(9.9635)
    assert paper_value("IV", "GRU4Rec", "MMSR") == pytest.approx(6.7965)  # paper spells GRURec
    assert paper_value("II", "MMSR", "no such row") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [({"fusion": "blend"}, "unknown fusion 'blend'; choose one of gate"),
     ({"text": "GPT"}, "unknown text encoder 'GPT'"),
     ({"sequence": "BERT4Rec"}, "unknown sequence model"),
     ({"fusion_layers": 0}, "fusion_layers must be in 1..4, got 0"),
     ({"fusion_layers": 5}, "fusion_layers must be in 1..4, got 5"),
     ({"fusion_layers": 2.0}, "fusion_layers must be in 1..4, got 2.0")],
)
def test_an_unknown_choice_names_the_valid_ones(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        explorer_config("cpu", Choice(**change))


def test_a_coarse_fusion_has_no_depth_in_its_name() -> None:
    assert Choice(fusion="film", fusion_layers=3).name() == "explore-sasrec-MMSR-RoBERTa-MAE-film"
    assert Choice(fusion="co_attn", fusion_layers=2).name().endswith("-co_attn-2")


def test_slider_offers_exactly_what_validation_accepts() -> None:
    pytest.importorskip("ipywidgets")
    ex = Explorer("smoke")
    layers = ex.widget and ex.fields["fusion_layers"]
    assert range(layers.min, layers.max + 1) == FUSION_LAYERS
    for depth in FUSION_LAYERS:
        Choice(fusion_layers=depth).validate()


def test_depth_slider_only_for_attention_fusions() -> None:
    pytest.importorskip("ipywidgets")
    ex = Explorer("smoke")
    fields = ex.widget and ex.fields
    assert not fields["fusion_layers"].disabled  # merge_attn, the default
    fields["fusion"].value = "film"
    assert fields["fusion_layers"].disabled
    fields["fusion"].value = "concat+dnn"
    assert fields["fusion_layers"].disabled
    fields["fusion"].value = "co_attn"
    assert not fields["fusion_layers"].disabled
    fields["kind"].value = "MMSR-T"  # no fusion at all
    assert fields["fusion_layers"].disabled and fields["fusion"].disabled


def test_summary_prints_four_decimals_and_na_never_none() -> None:
    cfg = explorer_config("smoke", Choice(fusion="film", sequence="GRU4Rec"))  # no paper row
    record = RunRecord(config_hash=cfg.hash(), config={}, status="done", name="film-gru",
                       metrics={"test": {"HR@10": 1.234567, "NDCG@10": 0.5}, "cold_test": {}},
                       extra={"epochs_run": 2})
    frame = summary(record, cfg, None)
    assert frame["HR@10"].iloc[0] == 1.234567  # exact, for recording and comparing
    assert math.isnan(frame["cold HR@50"].iloc[0]) and math.isnan(frame["paper HR@10"].iloc[0])
    assert frame["paper row"].iloc[0] == "-"
    html = styled(frame).to_html()
    assert ">1.2346<" in html and ">0.5000<" in html and ">n/a<" in html
    assert "None" not in html and "nan" not in html.lower()


def test_widget_disables_what_a_kind_does_not_use_and_trains_once() -> None:
    pytest.importorskip("ipywidgets")
    store = ResultsStore()
    ex = Explorer("smoke", choice=Choice(kind="IDSR"), store=store)
    fields = ex.widget and ex.fields
    assert fields["text"].disabled and fields["vision"].disabled and fields["fusion"].disabled
    assert "not run yet" in ex.status.value
    fields["kind"].value = "MMSR-T"
    assert not fields["text"].disabled and fields["vision"].disabled
    assert ex.choice.kind == "MMSR-T"
    fields["kind"].value = "IDSR"

    said: list[str] = []  # what the user reads next to the progress bar, in order
    ex.progress_label.observe(lambda change: said.append(change["new"]), names="value")
    ex.button.click()  # what a user's click does: train, store, show the summary
    assert said[0].startswith("checking the results store")  # at once, before any data loads
    assert said[1].startswith("loading the data, building the model, then training epoch 1/3")
    epochs = [re.match(r"trained epoch (\d)/3, valid NDCG@10 \d+\.\d{4}", s) for s in said[2:5]]
    assert [m and m.group(1) for m in epochs] == ["1", "2", "3"], said
    assert said[-1].startswith("done: trained 3 epochs in ")
    assert (ex.progress.value, ex.progress.max, ex.progress.bar_style) == (3, 3, "success")
    first = ex.last
    assert first is not None and 0.0 <= first["HR@10"].iloc[0] <= 100.0
    assert first["paper row"].iloc[0] == "Table IV: SASRec / IDSR"
    assert "stored, loads instantly" in ex.status.value
    assert ex.trained

    said.clear()
    ex.button.click()  # the second click loads the stored run
    assert said[-1] == "done: loaded from the results store (3 epochs trained earlier)"
    assert not ex.trained and ex.progress.bar_style == "success"
    assert ex.last.equals(first)
    assert len(store.records(status=None)) == 1


def test_learning_curve_counts_epochs_from_one_on_integer_ticks() -> None:
    ex = Explorer("smoke")
    assert ex.learning_curve() is None  # nothing run yet
    ex.run(kind="IDSR", progress=False)
    fig = ex.learning_curve()
    loss, valid = fig.axes
    assert list(valid.lines[0].get_xdata()) == [1, 2, 3]
    assert valid.get_ylabel() == "valid NDCG@10 (%)"
    lo, hi = valid.get_xlim()
    assert [t for t in valid.get_xticks() if lo <= t <= hi] == [1.0, 2.0, 3.0]


def test_the_notebook_cell_runs_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 02's explorer cell in a fresh namespace (run before the cells above): no
    NameError; the profile from $MMSR_PROFILE, a parameter the notebook set (seed) taken up, and
    the hash of the table row it stands for."""
    monkeypatch.setenv("MMSR_PROFILE", "smoke")
    monkeypatch.setenv("MMSR_RECORD_FILE", str(tmp_path / "records.json"))
    namespace: dict = {"seed": 7}  # as papermill's injected parameters would leave it
    exec(compile(EXPLORER_CELL, "explorer-cell", "exec"), namespace)
    ex = namespace["explorer"]
    assert ex.profile == "smoke"
    row = grids.table3_configs("smoke", "train.seed=7")["Attention", "MergeAttn-1"]
    assert ex.config().hash() == row.hash() == ex.record.config_hash
    recorded = json.loads((tmp_path / "records.json").read_text())
    assert recorded["explorer_hr10"] == ex.record.metrics["test"]["HR@10"]


def test_the_paper_column_follows_the_chosen_data_set():
    assert paper_value("IV", "SASRec", "IDSR", dataset="Bili") != paper_value("IV", "SASRec",
                                                                            "IDSR")
