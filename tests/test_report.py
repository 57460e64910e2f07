"""Paper-style tables (marks, markdown, improvements, agreement) and the paper's numbers as data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mmsr_lib.workbook.paper_numbers import (
    COLUMNS,
    PAPER_TABLES,
    consistency_checks,
    paper_frame,
    paper_improvements,
    paper_table_frame,
    paper_wide,
)
from mmsr_lib.workbook.report import (
    agreement_sentence,
    best_marks,
    paper_table,
    plain_number,
    relative_improvement,
    run_summary,
    side_by_side,
    to_markdown,
)


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {"HR@10": [1.0, 3.0, 3.0, 2.0], "NDCG@10": [0.5, np.nan, 0.2, 0.9]},
        index=pd.Index(["A", "B", "C", "D"], name="model"),
    )


# -- marks ---------------------------------------------------------------------------------------
def test_marks_per_column_with_ties_and_nan(table: pd.DataFrame) -> None:
    marks = best_marks(table, ["HR@10", "NDCG@10"])
    assert marks["HR@10"].tolist() == ["", "best", "best", "second"]  # tie shares best
    assert marks["NDCG@10"].tolist() == ["second", "", "", "best"]  # NaN never marked
    lower = best_marks(table, ["HR@10"], higher_is_better=False)
    assert lower["HR@10"].tolist() == ["best", "", "", "second"]


def test_marks_compare_displayed_values() -> None:
    df = pd.DataFrame({"m": [1.00001, 1.00004, 0.5]})
    assert best_marks(df, ["m"], decimals=4)["m"].tolist() == ["best", "best", "second"]
    assert best_marks(df, ["m"], decimals=5)["m"].tolist() == ["second", "best", ""]


def test_marks_per_row_and_none() -> None:
    df = pd.DataFrame({"SASRec": [3.0, 1.0], "FDSA": [4.0, 1.0], "MMSR": [5.0, np.nan]})
    marks = best_marks(df, ["SASRec", "FDSA", "MMSR"], best="row")
    assert marks.iloc[0].tolist() == ["", "second", "best"]
    assert marks.iloc[1].tolist() == ["best", "best", ""]  # one distinct value: no second
    assert (best_marks(df, ["MMSR"], best="none") == "").all().all()
    with pytest.raises(ValueError, match="best must be one of"):
        best_marks(df, ["MMSR"], best="diagonal")
    with pytest.raises(KeyError, match="HR@99"):
        best_marks(df, ["HR@99"])


def test_styler_bold_and_underline(table: pd.DataFrame) -> None:
    html = paper_table(table, ["HR@10", "NDCG@10"], decimals=2).to_html()
    assert html.count("font-weight: bold") >= 1 and "text-decoration: underline" in html
    assert "3.00" in html and "n/a" in html
    ctx = paper_table(table, ["HR@10", "NDCG@10"])._compute().ctx
    bold = {(r, c) for (r, c), props in ctx.items() if ("font-weight", "bold") in props}
    under = {(r, c) for (r, c), props in ctx.items() if ("text-decoration", "underline") in props}
    assert bold == {(1, 0), (2, 0), (3, 1)}
    assert under == {(3, 0), (0, 1)}
    # counts and shares beside the metrics read as such, not with pandas' six decimals
    extra = table.assign(**{"cold rows": 1280.0, "leak (%)": 87.34375})
    html = paper_table(extra, ["HR@10", "NDCG@10"]).to_html()
    assert "1,280" in html and "87.34" in html and "1280.000000" not in html
    assert [plain_number(v) for v in (80.0, 3, 0.5, math.nan, np.float32("nan"))] == [
        "80", "3", "0.50", "n/a", "n/a"]


def test_markdown_output(table: pd.DataFrame) -> None:
    md = to_markdown(table, ["HR@10", "NDCG@10"], decimals=2)
    assert md.splitlines() == [
        "| model | HR@10 | NDCG@10 |",
        "|---|---:|---:|",
        "| A | 1.00 | <u>0.50</u> |",
        "| B | **3.00** | n/a |",
        "| C | **3.00** | 0.20 |",
        "| D | <u>2.00</u> | **0.90** |",
    ]
    plain = to_markdown(table.reset_index(), ["HR@10"], best="none", decimals=1)
    assert plain.splitlines()[0] == "| model | HR@10 | NDCG@10 |"
    assert "**" not in plain and "<u>" not in plain
    assert to_markdown(pd.DataFrame({"name": ["a|b"], "x": [1.0]}), ["x"]).endswith(
        "| a\\|b | **1.0000** |"
    )


# -- improvements and comparisons ---------------------------------------------------------------
def test_relative_improvement_formatting() -> None:
    assert relative_improvement(4.2210, 4.0456) == "+4.34%"
    assert relative_improvement(4.2210, 4.0456, relative_to="ours") == "+4.16%"  # the paper's
    assert relative_improvement(6.3646, 6.4234) == "-0.92%"
    assert relative_improvement(1.0, 1.0) == "+0.00%"
    assert relative_improvement(1.0, 0.0) == "n/a"
    assert relative_improvement(float("nan"), 1.0) == "n/a"
    with pytest.raises(ValueError, match="relative_to"):
        relative_improvement(1.0, 1.0, relative_to="mean")


def test_side_by_side_with_paper_numbers() -> None:
    paper = paper_wide("VI", "HM")
    ours = pd.DataFrame({"row": ["FLAVA", "CLIP", "MyVLP"], "HR@10": [1.0, 2.0, 3.0],
                         "NDCG@10": [0.5, 0.6, 0.7], "epochs": [3, 3, 3]})
    both = side_by_side(ours, paper, on=["row"])
    assert list(both.columns) == ["row", "HR@10 (ours)", "HR@10 (paper)",
                                  "NDCG@10 (ours)", "NDCG@10 (paper)"]
    assert both["row"].tolist() == ["CLIP", "GroupViT", "ViLT", "VisualBERT", "FLAVA", "MyVLP"]
    flava = both.set_index("row").loc["FLAVA"]
    assert flava["HR@10 (ours)"] == 1.0 and flava["HR@10 (paper)"] == 10.1435
    assert math.isnan(both.set_index("row").loc["ViLT", "HR@10 (ours)"])
    assert math.isnan(both.set_index("row").loc["MyVLP", "NDCG@10 (paper)"])
    indexed = side_by_side(ours.set_index("row"), paper, on=["row"])
    pd.testing.assert_frame_equal(indexed, both)
    with pytest.raises(ValueError, match="duplicate"):
        side_by_side(pd.concat([ours, ours]), paper, on=["row"])
    with pytest.raises(KeyError, match="model"):
        side_by_side(ours, paper, on=["model"])


def test_agreement_sentence_agreeing_order() -> None:
    paper = pd.Series({"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0})
    ours = pd.Series({"A": 0.1, "B": 0.3, "C": 0.35, "D": 0.9})
    s = agreement_sentence(ours, paper, "HR@10")
    assert "+1.00" in s and "agree strongly" in s
    assert "our highest is D" in s and "the paper's is D" in s and "best row agrees" in s


def test_agreement_sentence_disagreeing_order() -> None:
    paper = pd.Series({"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0})
    ours = pd.Series({"A": 0.9, "B": 0.5, "C": 0.3, "D": 0.1, "E": 5.0})  # E: not in the paper
    s = agreement_sentence(ours, paper, "NDCG@10")
    assert "over 4 rows" in s and "-1.00" in s and "opposite" in s
    assert "does not agree" in s and "agree strongly" not in s
    weak = agreement_sentence(pd.Series({"A": 1.0, "B": 2.0}), pd.Series({"A": 2.0, "B": 1.0}),
                              "x")
    assert "weak evidence" in weak and "does not agree" in weak
    assert "too few" in agreement_sentence(pd.Series({"A": 1.0}), paper, "x")
    tied = agreement_sentence(pd.Series({"A": 1.0, "B": 1.0, "C": 0.0}),
                              pd.Series({"A": 1.0, "B": 2.0, "C": 0.5}), "x")
    assert "our highest is A, B" in tied and "overlap (B)" in tied and "agrees." not in tied


# -- the paper's numbers ------------------------------------------------------------------------
EXPECTED_COUNTS = {"II": 44, "III": 48, "IV": 48, "V": 192, "VI": 20, "VII": 20, "VIII": 32,
                   "IX": 10, "X": 18, "XI": 36, "XII": 10, "XIII": 12, "XIV": 12}


def test_counts_per_table_and_ranges() -> None:
    assert PAPER_TABLES == tuple(EXPECTED_COUNTS)
    for name, count in EXPECTED_COUNTS.items():
        frame = paper_table_frame(name)
        assert list(frame.columns) == list(COLUMNS)
        assert len(frame) == count, name
        assert not frame.duplicated(["dataset", "group", "row", "metric"]).any(), name
        assert ((frame["value"] > 0) & (frame["value"] < 100)).all(), name
        assert set(frame["metric"]) <= {f"{m}@{k}" for m in ("HR", "NDCG") for k in (10, 20, 50)}
    assert len(paper_frame()) == sum(EXPECTED_COUNTS.values())
    assert paper_table_frame("Table xiv").equals(paper_table_frame("XIV"))
    with pytest.raises(KeyError, match="unknown paper table"):
        paper_table_frame("XV")


def value(table: str, **where: str) -> float:
    f = paper_table_frame(table)
    for k, v in where.items():
        f = f[f[k] == v]
    assert len(f) == 1, where
    return float(f["value"].iloc[0])


def test_spot_values() -> None:
    assert value("II", dataset="HM", row="RoBERTa", metric="HR@10") == 8.2275
    assert value("II", dataset="Bili", row="BERT+MAE", metric="NDCG@10") == 2.1484
    assert value("III", dataset="HM", group="Coarse+", row="FiLM", metric="NDCG@10") == 4.7998
    assert value("IV", dataset="Amazon", group="NextItNet", row="MMSR-V") == 15.9076
    assert value("V", dataset="Kwai", row="MoRec++", metric="HR@50") == 11.7659
    assert value("V", dataset="Amazon", row="MMSR", metric="NDCG@50") == 18.6512
    assert value("VI", dataset="Kwai", group="c", row="FLAVA", metric="NDCG@10") == 2.7125
    assert value("VII", dataset="HM", row="IDSR", metric="NDCG@10") == 5.4715
    assert value("VIII", dataset="HM", row="MMSR-T", metric="HR@10") == 2.9385
    assert value("IX", row="Transfer HM-500K", metric="NDCG@10") == 23.3558
    assert value("X", dataset="Bili-20K", row="Transfer", metric="NDCG@10") == 1.0587
    assert value("XI", dataset="Bili", row="Ro.-F+MAE-F", metric="HR@10") == 4.0500
    assert value("XII", row="5e-5/1e-4", metric="NDCG@10") == 2.1331
    assert value("XIII", group="MMSR-T", row="30", metric="HR@10") == 3.7650
    assert value("XIV", group="MMSR-V", row="0%", metric="NDCG@10") == 1.4704


def test_known_inconsistencies_are_noted() -> None:
    f = paper_table_frame("III")
    cell = f[(f["row"] == "MergeAttn-1") & (f["dataset"] == "HM") & (f["metric"] == "NDCG@10")]
    assert cell["value"].item() == 5.7703 and "5.8046" in cell["note"].item()
    assert "5.7703" in paper_wide("II", "HM").set_index("row").loc["Ro.+MAE", "note"]
    # the one impossible cell (NDCG > HR) is noted and is the only such violation outside V
    checks = consistency_checks()
    outside_v = checks[checks["table"] != "V"]
    assert outside_v[["table", "dataset", "row"]].values.tolist() == [["VIII", "Kwai", "SASRec"]]
    noted = paper_table_frame("VIII").query("dataset == 'Kwai' and row == 'SASRec'")
    assert "impossible" in noted.set_index("metric").loc["NDCG@10", "note"]
    assert len(consistency_checks("V")) > 0 and consistency_checks("II").empty


def test_paper_improvements_recomputed() -> None:
    imp = paper_improvements()
    assert len(imp) == 24 + 2 + 6
    bili = imp[(imp["table"] == "V") & (imp["dataset"] == "Bili") & (imp["metric"] == "HR@10")]
    row = bili.iloc[0]
    assert row["printed"] == 4.16 and row["baseline"] == 4.0456 and row["matches"] == "ours"
    assert row["vs_baseline"] == pytest.approx(100 * (4.2210 - 4.0456) / 4.0456)
    assert set(imp["matches"]) <= {"baseline", "ours", "both", "neither"}


def test_wide_layout() -> None:
    wide = paper_wide("V", "Bili")
    assert wide["row"].tolist() == ["GRURec", "NextItNet", "SASRec", "FDSA", "CARCA++", "VQRec",
                                    "MoRec++", "MMSR"]
    assert list(wide.columns) == ["dataset", "group", "row", "HR@10", "HR@20", "HR@50",
                                  "NDCG@10", "NDCG@20", "NDCG@50", "note"]
    assert wide.set_index("row").loc["CARCA++", "HR@20"] == 6.1476
    with pytest.raises(KeyError, match="no dataset"):
        paper_wide("V", "MovieLens")


def test_run_summary_names_the_size_of_a_cold_split() -> None:
    """A cold split is a small subset (80 users on the cpu catalog): its row says how many users
    it has, so a row of zeros is read as what it is; splits without a stored count keep their
    plain name, and an empty split is left out."""
    from types import SimpleNamespace

    zeros = {"HR@10": 0.0, "NDCG@10": 0.0}
    record = SimpleNamespace(
        config={"model": {"recommender": "sequential", "item_encoder": "mm", "sequence": "sasrec"}},
        extra={"epochs_run": 66, "best_epoch": 46, "converged": True, "n_cold_test": 80,
               "n_cold_valid": 0},
        metrics={"valid": {"HR@10": 16.43, "NDCG@10": 8.67}, "test": {"HR@10": 15.67,
                 "NDCG@10": 8.27}, "cold_test": zeros, "cold_valid": {}},
        name="x", config_hash="059a5b6a7a377445", status="done")
    text = run_summary(record, ("valid", "test", "cold_valid", "cold_test"))
    lines = text.splitlines()
    assert lines[0].startswith("run x [059a5b6a7a377445] mm/sasrec, 66 epochs (best 46, converged)")
    assert any(line.startswith("| cold_test (80 users) | 0.00 |") for line in lines)
    assert any(line.startswith("| test | 15.67 |") for line in lines)
    assert "cold_valid" not in text
