"""The widget explorer: its configurations are the grids' rows (same hash), bad choices are
named, and the widget trains once and then loads from the results store."""

from __future__ import annotations

import pytest

from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.explorer import Choice, Explorer, explorer_config, paper_value


@pytest.mark.parametrize(
    ("choice", "grid", "key"),
    [
        (Choice(), "III", ("Attention", "MergeAttn-1")),
        (Choice(), "II", ("MMSR", "Ro.+MAE")),
        (Choice(kind="MMSR-T", text="BERT"), "II", ("MMSR-T", "BERT")),
        (Choice(kind="MMSR-V", vision="ResNet"), "II", ("MMSR-V", "ResNet")),
        (Choice(fusion="film+dnn"), "III", ("Coarse+", "FiLM")),
        (Choice(kind="IDSR", sequence="GRU4Rec"), "IV", ("GRU4Rec", "IDSR")),
        (Choice(vision="Swin", sequence="NextItNet"), "IV", ("NextItNet", "MMSR")),
    ],
)
def test_a_choice_that_is_a_table_row_has_that_rows_hash(choice, grid, key) -> None:
    build = {"II": grids.table2_configs, "III": grids.table3_configs, "IV": grids.table4_configs}
    for profile in ("cpu", "paper"):
        assert explorer_config(profile, choice).hash() == build[grid](profile)[key].hash()


def test_paper_value_of_a_row() -> None:
    assert paper_value("III", "Attention", "MergeAttn-1") == pytest.approx(9.9635)
    assert paper_value("IV", "GRU4Rec", "MMSR") == pytest.approx(6.7965)  # paper spells GRURec
    assert paper_value("II", "MMSR", "no such row") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [({"fusion": "blend"}, "unknown fusion 'blend'; choose one of gate"),
     ({"text": "GPT"}, "unknown text encoder 'GPT'"),
     ({"sequence": "BERT4Rec"}, "unknown sequence model"),
     ({"fusion_layers": 0}, "fusion_layers must be in 1..8")],
)
def test_an_unknown_choice_names_the_valid_ones(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        explorer_config("cpu", Choice(**change))


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

    ex.button.click()  # what a user's click does: train, store, show the summary
    first = ex.last
    assert first is not None and 0.0 <= first["HR@10"].iloc[0] <= 100.0
    assert first["paper row"].iloc[0] == "Table IV: SASRec / IDSR"
    assert "stored, loads instantly" in ex.status.value
    ex.button.click()  # the second click loads the stored run
    assert ex.last.equals(first)
    assert len(store.records(status=None)) == 1
