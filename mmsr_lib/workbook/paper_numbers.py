"""The paper's result tables (II-XIV) as data, so notebooks compare against numbers, not prose.

Source: "An Empirical Study of Training ID-Agnostic Multi-modal Sequential Recommenders",
the text version in ``paper/mmsr_empirical_study.txt``. Each table's data lines are kept below
exactly as printed (copied, not retyped) and parsed into long-format records:

    table, dataset, group, row, metric, value (percent, as printed), note

Conventions, so that our tables and the paper's line up in ``report.side_by_side``:

* the paper's "NG@10" is written "NDCG@10" (the library's name for the same metric);
* a row printed as "-" (the ID baselines of Tables VII and XI) takes its group's name;
* Tables XII-XIV use the Section 8 default setting (RoBERTa, MAE, SASRec, Bili), so their
  dataset is "Bili"; Table XIV's "Vision" column is the MMSR-V ablation, group "MMSR-V";
* Table XII rows are "<top lr>/<downstream lr>", e.g. "5e-5/1e-4";
* "Improv." columns are derived numbers (and can be negative); they live in
  ``paper_improvements()``, recomputed both ways, not among the measured values.

The ``note`` column records inconsistencies found while transcribing (the same configuration
printed with different values in two tables, impossible values). ``consistency_checks()``
tests every table against what must hold when HR and NDCG are averaged over the same users.
"""

from __future__ import annotations

import math
import re
from functools import cache
from itertools import pairwise

import pandas as pd

PAPER_TABLES: tuple[str, ...] = (
    "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV",
)
COLUMNS = ("table", "dataset", "group", "row", "metric", "value", "note")
TITLES = {
    "II": "Text and vision encoders (SASRec, merge-attention fusion)",
    "III": "Fusion methods (RoBERTa + MAE, SASRec)",
    "IV": "IDSR vs MMSR across SR architectures (HR@10)",
    "V": "Overall comparison with baselines",
    "VI": "VLP models as item encoders",
    "VII": "Vision representations for VisualBERT",
    "VIII": "Cold-start setting",
    "IX": "Transfer HM -> Amazon-10K (scaling the source)",
    "X": "Transfer Kwai-200K -> Bili (scaling the target)",
    "XI": "Full vs top-layer fine-tuning",
    "XII": "Learning rates of encoders (top) vs the rest (downstream)",
    "XIII": "Text length (tokens)",
    "XIV": "Image mask ratio",
}

_PRINTED: dict[str, str] = {
    "II": """
MMSR-T RoBERTa 8.2275 4.6923 3.7790 1.9655
ELECTRA 8.2010 4.6195 3.3690 1.7178
BERT 8.1810 4.6353 3.7990 1.9810
MMSR-V ResNet 7.3520 3.9049 3.2010 1.6550
MAE 6.1945 3.2329 2.4200 1.1823
Swin 7.8615 4.2045 3.3940 1.7281
MMSR Ro.+ResNet 8.4280 4.6649 3.6600 1.8942
Ro.+Swin 10.1095 5.7703 4.0810 2.2322
Ro.+MAE 9.9635 5.8046 4.2090 2.1194
ELE.+MAE 9.1675 5.1984 3.7940 1.9392
BERT+MAE 9.1100 5.1590 4.1300 2.1484
""",
    "III": """
Coarse Gate 8.9505 5.0762 3.9120 2.0108
FiLM 8.6250 4.8787 3.8300 1.9809
Summation 6.9605 3.7458 3.4780 1.7709
Concatenation 6.7575 3.6387 3.4060 1.7318
Coarse+ Gate 8.4120 4.7515 3.5300 1.7819
FiLM 8.4760 4.7998 3.5340 1.7711
Summation 8.5270 4.8214 3.5960 1.8021
Concatenation 8.5035 4.8302 3.3690 1.6861
Attention CoAttn-1 7.6810 4.1932 3.8210 1.9463
MergeAttn-1 9.9635 5.7703 4.0810 2.1194
MergeAttn-2 10.0780 5.7448 3.8440 1.9844
MergeAttn-4 9.8975 5.7634 3.4210 1.6852
""",
    "IV": """
Bili SASRec 3.3942 3.7790 3.3640 4.2090
GRURec 2.3247 2.9260 2.6400 3.2960
NextItNet 2.0521 2.3860 1.8920 2.7120
Kwai SASRec 4.7521 5.3110 4.7485 5.5260
GRURec 3.9487 4.2845 4.1315 4.7190
NextItNet 3.1538 3.7525 3.4195 4.6025
HM SASRec 8.4672 8.2670 7.8615 10.1095
GRURec 6.1241 5.2780 5.7215 6.7965
NextItNet 6.1752 6.5275 5.8635 7.7755
Amazon SASRec 19.1250 19.2436 19.1529 20.1095
GRURec 16.0417 16.0056 15.0926 18.3956
NextItNet 15.2378 16.2342 15.9076 17.7984
""",
    "V": """
Bili HR@10 2.3247 2.0521 3.3942 3.7623 4.0456 1.3569 3.7531 4.2210 +4.16%
HR@20 3.3678 3.1256 4.4350 4.9143 6.1476 2.0721 5.8824 6.3135 +2.63%
HR@50 6.0234 5.1288 7.9087 8.9260 9.9689 3.5731 8.8856 10.4437 +5.29%
NDCG@10 1.2145 1.0378 1.6729 1.7934 2.1159 0.6089 1.9834 2.2315 +5.17%
NDCG@20 1.4271 1.2876 2.0174 2.2837 2.5765 0.7167 2.4829 2.7046 +4.74%
NDCG@50 1.9463 1.8291 2.6175 2.9750 3.3290 1.0827 3.2254 3.5287 +5.66%
Kwai HR@10 3.9487 3.1538 4.7521 4.9357 4.9571 1.9523 4.9518 5.3786 +7.84%
HR@20 5.9744 5.1966 6.8462 6.9929 7.1286 2.9568 6.7517 7.7794 +8.37%
HR@50 9.8718 8.6068 10.9051 10.9714 11.3502 4.8528 11.7659 12.3295 +4.57%
NDCG@10 2.0598 1.9915 2.5043 2.6664 2.5857 0.8732 2.6297 2.8576 +7.99%
NDCG@20 2.5641 2.2137 3.0513 2.8317 3.0857 1.2083 3.1294 3.4085 +8.19%
NDCG@50 3.3419 2.9744 3.8556 3.8956 4.0652 1.5093 4.0086 4.3092 +5.66%
HM HR@10 6.1241 6.1752 8.4672 8.8214 9.7678 4.1623 9.6933 10.0425 +2.82%
HR@20 8.3577 8.3066 11.0511 11.2213 12.1035 5.7416 11.9867 12.6694 +4.47%
HR@50 12.6058 12.7372 15.5547 15.4623 16.6235 8.0028 16.0933 17.5643 +5.36%
NDCG@10 3.6350 3.5328 5.4715 5.6917 6.4234 2.2235 6.1400 6.3646 -0.91%
NDCG@20 4.1898 4.0431 6.1153 6.4784 6.8217 2.6315 7.0533 6.9224 +1.46%
NDCG@50 5.0292 5.0146 7.0146 6.6347 7.5158 3.0562 7.0867 7.8824 +4.86%
Amazon HR@10 16.0417 15.2378 19.1250 18.7667 19.7250 17.7143 19.2512 19.6412 -0.42%
HR@20 17.6256 15.9234 19.3078 18.8245 19.8567 19.0567 19.5923 19.9934 +0.68%
HR@50 19.3023 17.3445 20.9645 19.4423 21.3012 20.4012 21.2578 21.9023 +2.81%
NDCG@10 14.9923 12.9945 16.7067 15.8512 17.1434 12.8034 17.0767 17.3656 +1.30%
NDCG@20 15.2412 13.2323 16.9345 16.3145 17.8312 13.0434 17.9245 18.0201 +1.20%
NDCG@50 15.5745 13.5012 17.2312 17.0278 18.5145 13.3923 18.3934 18.6512 +0.77%
""",
    "VI": """
a CLIP 6.4240 3.3109 4.2510 2.1332
GroupViT 7.7935 4.2868 4.1800 2.1132
b ViLT 9.3465 5.3226 4.9540 2.5938
VisualBERT 9.2680 5.2937 5.0740 2.6141
c FLAVA 10.1435 6.5820 5.4040 2.7125
""",
    "VII": """
IDSR - 8.4672 5.4715 4.7521 2.5043
VisualBERT Region 9.2680 5.2937 5.0740 2.6141
Grid 9.5875 5.5167 5.2250 2.6814
Patch-Emb 9.0205 5.1664 5.0695 2.6255
Patch-ViT 9.8525 5.7026 5.2502 2.6374
""",
    "VIII": """
Bili HR@10 0.1192 1.5493 0.9296 1.3824
NG@10 0.0450 0.7722 0.4706 0.7603
Kwai HR@10 0.0419 3.9812 3.9408 4.7393
NG@10 0.0450 2.0438 1.9730 2.3555
HM HR@10 0.0778 2.9385 1.8755 2.7523
NG@10 0.0406 1.7457 1.0095 1.5740
Amazon HR@10 0.1723 4.9190 4.4885 5.6222
NG@10 0.1381 4.8547 4.3779 5.4046
""",
    "IX": """
HR@10 20.2600 25.4900 26.3100 26.2400 26.4900 +3.80%
NG@10 17.2302 21.7594 23.3476 22.9698 23.3558 +6.83%
""",
    "X": """
ID 1.0300 0.5252 1.3950 0.7633 2.0420 1.0727
Scratch 1.4600 0.7087 2.0750 1.1148 2.7580 1.3801
Transfer 1.5600 0.8101 2.1600 1.0587 2.7760 1.3689
Improv. +6.41% +14.31% +3.93% -5.03% +0.64% -0.81%
""",
    "XI": """
ID - 8.4825 5.2432 3.1670 1.7031
MMSR-T RoBERTa 8.2275 4.6923 3.7790 1.9655
RoBERTa-Full 8.6835 5.0220 3.7410 1.9294
MMSR-V MAE 6.1945 3.2329 2.4200 1.1823
MAE-Full 7.3975 4.0094 3.1410 1.6026
ResNet 7.3520 3.9049 3.2010 1.6545
ResNet-Full 7.3810 3.9253 3.1060 1.6019
MMSR Ro.+MAE 9.9635 5.7703 4.0810 2.1194
Ro.-F+MAE-F 9.5235 5.4953 4.0500 2.1063
""",
    "XII": """
5e-5 5e-5 3.8300 1.9996
8e-5 8e-5 4.0400 2.1171
1e-4 1e-4 4.0810 2.1194
8e-5 1e-4 4.0500 2.1096
5e-5 1e-4 4.0910 2.1331
""",
    "XIII": """
10 3.5360 1.8597 3.6710 1.9008
30 3.7650 1.9455 3.9810 2.0765
50 3.7790 1.9655 4.0810 2.1194
""",
    "XIV": """
0% 2.9130 1.4704 3.7990 1.9756
50% 2.6500 1.2560 3.9780 2.0996
75% 2.4200 1.1823 4.0810 2.1194
""",
}

# -- layouts: how the label tokens and value columns of each table map to record fields ---------
# labels: the record field of each leading label token; a line with fewer label tokens keeps the
# leading fields of the line above. columns: the fields each value column sets.
_HM_BILI = ({"dataset": "HM", "metric": "HR@10"}, {"dataset": "HM", "metric": "NDCG@10"},
            {"dataset": "Bili", "metric": "HR@10"}, {"dataset": "Bili", "metric": "NDCG@10"})
_HM_KWAI = tuple({**c, "dataset": "Kwai" if c["dataset"] == "Bili" else "HM"} for c in _HM_BILI)
_V_MODELS = (("IDSR", "GRURec"), ("IDSR", "NextItNet"), ("IDSR", "SASRec"),
             ("IDSR w. Side Feat.", "FDSA"), ("IDSR w. Side Feat.", "CARCA++"),
             ("Modality-based SR", "VQRec"), ("Modality-based SR", "MoRec++"), ("Ours", "MMSR"))
_X_COLUMNS = tuple({"dataset": f"Bili-{n}", "metric": m}
                   for n in ("10K", "20K", "50K") for m in ("HR@10", "NDCG@10"))
_LAYOUTS: dict[str, dict] = {
    "II": {"labels": ("group", "row"), "columns": _HM_BILI},
    "III": {"labels": ("group", "row"), "columns": _HM_BILI},
    "IV": {"labels": ("dataset", "group"), "fixed": {"metric": "HR@10"},
           "columns": tuple({"row": r} for r in ("IDSR", "MMSR-T", "MMSR-V", "MMSR"))},
    "V": {"labels": ("dataset", "metric"), "improv": True,
          "columns": tuple({"group": g, "row": r} for g, r in _V_MODELS)},
    "VI": {"labels": ("group", "row"), "columns": _HM_KWAI},
    "VII": {"labels": ("group", "row"), "columns": _HM_KWAI},
    "VIII": {"labels": ("dataset", "metric"),
             "columns": ({"group": "IDSR", "row": "SASRec"}, {"group": "MMSR", "row": "MMSR-T"},
                         {"group": "MMSR", "row": "MMSR-V"}, {"group": "MMSR", "row": "MMSR"})},
    "IX": {"labels": ("metric",), "improv": True, "fixed": {"dataset": "Amazon-10K"},
           "columns": ({"group": "IDSR", "row": "IDSR"}, {"group": "MMSR", "row": "Scratch"},
                       {"group": "MMSR", "row": "Transfer HM-100K"},
                       {"group": "MMSR", "row": "Transfer HM-200K"},
                       {"group": "MMSR", "row": "Transfer HM-500K"})},
    "X": {"labels": ("row",), "columns": _X_COLUMNS,
          "group_of": {"ID": "IDSR", "Scratch": "MMSR", "Transfer": "MMSR"}},
    "XI": {"labels": ("group", "row"), "columns": _HM_BILI},
    "XII": {"labels": ("top", "downstream"), "fixed": {"dataset": "Bili", "group": "MMSR"},
            "columns": ({"metric": "HR@10"}, {"metric": "NDCG@10"})},
    "XIII": {"labels": ("row",), "fixed": {"dataset": "Bili"},
             "columns": ({"group": "MMSR-T", "metric": "HR@10"},
                         {"group": "MMSR-T", "metric": "NDCG@10"},
                         {"group": "MMSR", "metric": "HR@10"}, {"group": "MMSR", "metric": "NDCG@10"})},
    "XIV": {"labels": ("row",), "fixed": {"dataset": "Bili"},
            "columns": ({"group": "MMSR-V", "metric": "HR@10"},
                        {"group": "MMSR-V", "metric": "NDCG@10"},
                        {"group": "MMSR", "metric": "HR@10"}, {"group": "MMSR", "metric": "NDCG@10"})},
}

_DEFAULT = "the default RoBERTa+MAE configuration (Table III MergeAttn-1, Table XI Ro.+MAE)"
# (table, dataset, group, row, metric) -> note; None matches anything
NOTES: dict[tuple[str, str | None, str | None, str | None, str | None], str] = {
    ("II", "HM", "MMSR", "Ro.+MAE", "NDCG@10"):
        f"{_DEFAULT} prints 5.7703 elsewhere; here 5.7703 is printed for Ro.+Swin: the two "
        "cells look swapped",
    ("II", "Bili", "MMSR", "Ro.+MAE", "HR@10"):
        f"{_DEFAULT} prints 4.0810 elsewhere (also Tables XII-XIV); here 4.0810 is printed for "
        "Ro.+Swin: the two cells look swapped",
    ("II", "HM", "MMSR", "Ro.+Swin", "NDCG@10"):
        "5.7703 is the value printed for RoBERTa+MAE in Tables III and XI; see Ro.+MAE",
    ("II", "Bili", "MMSR", "Ro.+Swin", "HR@10"):
        "4.0810 is the value printed for RoBERTa+MAE in Tables III and XI-XIV; Table IV's MMSR "
        "(RoBERTa+Swin, SASRec, Bili) prints 4.2090, Table II's Ro.+MAE value",
    ("III", "HM", "Attention", "MergeAttn-1", "NDCG@10"):
        "Table II prints 5.8046 for the same configuration (Ro.+MAE)",
    ("III", "Bili", "Attention", "MergeAttn-1", "HR@10"):
        "Table II prints 4.2090 for the same configuration (Ro.+MAE)",
    ("IV", "HM", "SASRec", "MMSR-T", "HR@10"):
        "Table II prints 8.2275 for MMSR-T RoBERTa on HM",
    ("IV", "Bili", "SASRec", "MMSR-V", "HR@10"):
        "Table II prints 3.3940 for MMSR-V Swin on Bili (the caption names Swin)",
    ("IV", "Bili", "SASRec", "MMSR", "HR@10"): "Table V prints 4.2210 for MMSR on Bili",
    ("IV", "Kwai", "SASRec", "MMSR", "HR@10"): "Table V prints 5.3786 for MMSR on Kwai",
    ("IV", "HM", "SASRec", "MMSR", "HR@10"): "Table V prints 10.0425 for MMSR on HM",
    ("IV", "Amazon", "SASRec", "MMSR", "HR@10"): "Table V prints 19.6412 for MMSR on Amazon",
    ("VIII", "Kwai", "IDSR", "SASRec", "NDCG@10"):
        "impossible: NDCG@10 (0.0450) exceeds HR@10 (0.0419); NDCG@K <= HR@K always",
    ("XI", "HM", "ID", "ID", None):
        "Table V prints SASRec (IDSR) on HM as HR@10 8.4672, NDCG@10 5.4715",
    ("XI", "Bili", "ID", "ID", None):
        "Table V prints SASRec (IDSR) on Bili as HR@10 3.3942, NDCG@10 1.6729",
    ("XI", "Bili", "MMSR-V", "ResNet", "NDCG@10"): "Table II prints 1.6550",
    ("XI", "HM", "MMSR", "Ro.+MAE", "NDCG@10"): "Table II prints 5.8046 (see the note there)",
    ("XI", "Bili", "MMSR", "Ro.+MAE", "HR@10"): "Table II prints 4.2090 (see the note there)",
}
TABLE_NOTES = {
    "V": "Several NDCG@20/@50 increments are outside what the HR increments allow for metrics "
         "averaged over the same users (see consistency_checks('V')); the Improv. column "
         "matches neither (ours-best)/best nor (ours-best)/ours in every row "
         "(see paper_improvements()).",
    "VIII": "Kwai SASRec: NDCG@10 > HR@10, which cannot happen.",
}

_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?%?$")


def _parse_lines(table: str) -> list[tuple[list[str], list[str], str | None]]:
    """Split each printed line into (label tokens, value tokens, improvement token or None)."""
    layout = _LAYOUTS[table]
    n_values = len(layout["columns"])
    out = []
    for line in _PRINTED[table].strip().splitlines():
        tokens = line.split()
        improv = tokens.pop() if layout.get("improv") else None
        labels, values = tokens[:-n_values], tokens[-n_values:]
        if not all(_NUMBER.match(v) for v in values) or len(labels) > len(layout["labels"]):
            raise RuntimeError(f"Table {table}: cannot parse printed line {line!r}")
        out.append((labels, values, improv))
    return out


def _note(table: str, rec: dict) -> str:
    for (t, d, g, r, m), text in NOTES.items():
        if t == table and all(
            want is None or rec[key] == want
            for key, want in (("dataset", d), ("group", g), ("row", r), ("metric", m))
        ):
            return text
    return ""


@cache
def _records(table: str) -> tuple[tuple, ...]:
    layout = _LAYOUTS[table]
    levels = layout["labels"]
    current: dict[str, str] = {}
    recs = []
    for labels, values, _ in _parse_lines(table):
        if labels and labels[0] == "Improv.":
            continue  # Table X's derived row: see paper_improvements()
        # a short label list continues the line above: it fills the trailing levels
        for level, token in zip(levels[len(levels) - len(labels):], labels, strict=True):
            current[level] = token
        base = {**layout.get("fixed", {}), **{k: current[k] for k in levels if k in current}}
        if "top" in base:
            base["row"] = f"{base.pop('top')}/{base.pop('downstream')}"
        if base.get("row") == "-":
            base["row"] = base["group"]
        if "group_of" in layout:
            base["group"] = layout["group_of"][base["row"]]
        for col, value in zip(layout["columns"], values, strict=True):
            rec = {**base, **col}
            rec["metric"] = rec["metric"].replace("NG@", "NDCG@")
            rec["value"] = float(value)
            rec["table"] = table
            rec["note"] = _note(table, rec)
            recs.append(tuple(rec[c] for c in COLUMNS))
    return tuple(recs)


def _check_table(table: str) -> str:
    key = str(table).upper().removeprefix("TABLE").strip()
    if key not in _LAYOUTS:
        raise KeyError(f"unknown paper table {table!r}; choose one of {PAPER_TABLES}")
    return key


def paper_table_frame(table: str) -> pd.DataFrame:
    """One table in long format: table, dataset, group, row, metric, value (percent), note."""
    return pd.DataFrame(list(_records(_check_table(table))), columns=list(COLUMNS))


def paper_frame() -> pd.DataFrame:
    """Every transcribed table in long format."""
    return pd.concat([paper_table_frame(t) for t in PAPER_TABLES], ignore_index=True)


def paper_wide(table: str, dataset: str | None = None) -> pd.DataFrame:
    """Rows x metrics (columns dataset, group, row, <metrics...>, note), in the paper's order.

    Ready for ``report.side_by_side(ours, paper_wide(...), on=[...])``.
    """
    long = paper_table_frame(table)
    if dataset is not None:
        if dataset not in set(long["dataset"]):
            raise KeyError(
                f"Table {table} has no dataset {dataset!r}; it has {sorted(set(long['dataset']))}"
            )
        long = long[long["dataset"] == dataset]
    keys = ["dataset", "group", "row"]
    order = list(dict.fromkeys(long["metric"]))
    wide = long.pivot_table(index=keys, columns="metric", values="value", sort=False)
    wide = wide.reindex(columns=order).reset_index()
    wide.columns.name = None
    notes = long.groupby(keys, sort=False)["note"].agg(
        lambda s: "; ".join(dict.fromkeys(n for n in s if n))
    )
    return wide.merge(notes.reset_index(), on=keys, how="left")


def paper_improvements() -> pd.DataFrame:
    """The printed "Improv." values of Tables V, IX and X next to both ways to recompute them.

    Columns: table, dataset, metric, ours, baseline, printed (percent),
    vs_baseline = 100 (ours - baseline) / baseline, vs_ours = 100 (ours - baseline) / ours, and
    ``matches`` ("baseline", "ours", "both" or "neither": which recomputation lies within 0.01,
    one unit of the printed last digit, of the printed value).
    ``baseline`` is the best baseline (Table V), scratch training (Tables IX, X).
    """
    rows = []
    v = paper_table_frame("V")
    current = None
    for labels, _, improv in _parse_lines("V"):
        current = labels[0] if len(labels) == 2 else current
        metric = labels[-1]
        cell = v[(v["dataset"] == current) & (v["metric"] == metric)].set_index("row")["value"]
        rows.append(("V", current, metric, cell["MMSR"], cell.drop("MMSR").max(), improv))
    ix = paper_table_frame("IX")
    for labels, _, improv in _parse_lines("IX"):
        metric = labels[0].replace("NG@", "NDCG@")
        cell = ix[ix["metric"] == metric].set_index("row")["value"]
        best = cell[[r for r in cell.index if r.startswith("Transfer")]].max()
        rows.append(("IX", "Amazon-10K", metric, best, cell["Scratch"], improv))
    x = paper_table_frame("X")
    improv_line = next(vals for labels, vals, _ in _parse_lines("X") if labels == ["Improv."])
    for col, printed in zip(_X_COLUMNS, improv_line, strict=True):
        cell = x[(x["dataset"] == col["dataset"]) & (x["metric"] == col["metric"])]
        cell = cell.set_index("row")["value"]
        rows.append(("X", col["dataset"], col["metric"], cell["Transfer"], cell["Scratch"], printed))
    out = pd.DataFrame(rows, columns=["table", "dataset", "metric", "ours", "baseline", "printed"])
    out["printed"] = out["printed"].str.rstrip("%").astype(float)
    out["vs_baseline"] = 100 * (out["ours"] - out["baseline"]) / out["baseline"]
    out["vs_ours"] = 100 * (out["ours"] - out["baseline"]) / out["ours"]
    # within one unit of the printed last digit: the paper may truncate instead of round
    by_base = (out["vs_baseline"] - out["printed"]).abs() <= 0.01
    by_ours = (out["vs_ours"] - out["printed"]).abs() <= 0.01
    out["matches"] = [
        "both" if b and o else "baseline" if b else "ours" if o else "neither"
        for b, o in zip(by_base, by_ours, strict=True)
    ]
    return out


def consistency_checks(table: str | None = None, tol: float = 2e-4) -> pd.DataFrame:
    """Violations of what must hold when HR@K and NDCG@K average the same users' ranks.

    With one relevant item per user: NDCG@K <= HR@K; both grow with K; and each user ranked in
    [K1, K2) adds between 1/log2(K2+1) and 1/log2(K1+2) to NDCG, so
    (HR@K2 - HR@K1) / log2(K2+1) <= NDCG@K2 - NDCG@K1 <= (HR@K2 - HR@K1) / log2(K1+2).
    ``tol`` absorbs the printed 4-decimal rounding. One row per violation.
    """
    frames = [paper_table_frame(table)] if table is not None else [
        paper_table_frame(t) for t in PAPER_TABLES
    ]
    long = pd.concat(frames, ignore_index=True)
    out = []
    for (tab, ds, grp, row), cell in long.groupby(["table", "dataset", "group", "row"], sort=False):
        m = dict(zip(cell["metric"], cell["value"], strict=True))
        ks = sorted({int(k.split("@")[1]) for k in m if k.startswith("HR@")
                     and f"NDCG@{k.split('@')[1]}" in m})
        for k in ks:
            if m[f"NDCG@{k}"] > m[f"HR@{k}"] + tol:
                out.append((tab, ds, grp, row, f"NDCG@{k} <= HR@{k}",
                            f"NDCG@{k}={m[f'NDCG@{k}']} > HR@{k}={m[f'HR@{k}']}"))
        for k1, k2 in pairwise(ks):
            d_hr = m[f"HR@{k2}"] - m[f"HR@{k1}"]
            d_ndcg = m[f"NDCG@{k2}"] - m[f"NDCG@{k1}"]
            if d_hr < -tol:
                out.append((tab, ds, grp, row, f"HR@{k1} <= HR@{k2}", f"HR falls by {-d_hr:.4f}"))
            lo, hi = d_hr / math.log2(k2 + 1), d_hr / math.log2(k1 + 2)
            if not lo - tol <= d_ndcg <= hi + tol:
                out.append((tab, ds, grp, row, f"NDCG@{k2} - NDCG@{k1} bounded by HR",
                            f"increment {d_ndcg:.4f}, allowed [{lo:.4f}, {hi:.4f}]"))
    return pd.DataFrame(out, columns=["table", "dataset", "group", "row", "check", "detail"])


# Table I (after preprocessing): users, items, "#cold" (truncated sub-sequences ending in a cold
# item), avg. sequence length, interaction type; "200K"/"100K" as printed (sampled users).
_TABLE_I = """
HM 200000 85019 204988 31.39 purchases
Amazon 100000 63456 42674 7.42 purchases
Bili 100000 76178 5632 17.95 comments
Kwai 200000 39410 83689 13.45 comments
"""


def paper_table1() -> pd.DataFrame:
    """The paper's Table I as a frame indexed by data set, with interactions and interactions
    per item derived (users x avg. length; the paper prints neither)."""
    rows = []
    for line in _TABLE_I.strip().splitlines():
        name, users, items, cold, avg, kind = line.split()
        rows.append({"dataset": name, "users": int(users), "items": int(items),
                     "cold": int(cold), "avg_seq_len": float(avg), "type": kind})
    frame = pd.DataFrame(rows).set_index("dataset")
    frame["interactions"] = (frame["users"] * frame["avg_seq_len"]).round().astype(int)
    frame["interactions_per_item"] = frame["interactions"] / frame["items"]
    return frame
