"""The configurations of notebooks 01-03 (paper Tables II, III, IV) as data, and their tables.

Each ``tableN_configs`` returns an ordered `Grid`: (group, row) -> `RunConfig`, whose labels are
the paper's own (``("MMSR", "Ro.+MAE")``, ``("Coarse+", "FiLM")``, ``("GRU4Rec", "IDSR")``), so
`compare_with_paper` can put our numbers next to `paper_numbers.paper_wide`. The notebooks only
call ``run_grid(configs)``, ``grid_table`` and ``compare_with_paper``. A run that two tables share
(Table III's MergeAttn-1 is Table II's Ro.+MAE; Table IV's SASRec row is Table II's RoBERTa, Swin
and Ro.+Swin rows; Table IV's IDSR rows are the quickstart's) has one configuration hash, so the
results store trains it once.

Profiles. ``paper`` uses the paper's checkpoints and hyperparameters unchanged. ``cpu`` uses the
real pretrained encoders that pip ships as stand-ins (`STAND_INS`: MiniLM-L3 / MiniLM-L6 / MPNet
for BERT / RoBERTa / ELECTRA, EfficientNet-Lite0 / Lite1 / Lite2 for ResNet / MAE / Swin),
frozen, and offers "from scratch" sections with the paper's architectures at random init (the
tiny zoo, top two blocks tuned). ``smoke`` uses the tiny zoo everywhere. The ``encoders``
column of `grid_table` says on every row which weights were used and how they trained.

Every row, ID or content, trains under one stopping rule and seeds from the profile table
(`mmsr_lib.config.PROFILE_TABLE`): a grid sets nothing the command line does not, so
``mmsr train --profile cpu --set ...`` reproduces any row with the same hash (``mmsr grid 02
--list`` prints each row's command). On random-init encoders the resolved ``train.encoder_lr``
is the downstream rate: the paper's 10x smaller rate protects pretrained weights, and there are
none to protect.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import pandas as pd

from mmsr_lib.config import PROFILES, RunConfig, profile_config
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util import registry
from mmsr_lib.workbook.paper_numbers import paper_wide
from mmsr_lib.workbook.report import relative_improvement
from mmsr_lib.workbook.significance import converged, family_tests, summarize

TEXT_LABELS = ("RoBERTa", "ELECTRA", "BERT")  # Table II order; RoBERTa is the default TE
VISION_LABELS = ("ResNet", "MAE", "Swin")  # MAE is the default VE
PAPER_ENCODERS = {
    "RoBERTa": "roberta-base", "ELECTRA": "google/electra-base-discriminator",
    "BERT": "bert-base-uncased", "ResNet": "resnet50", "MAE": "mae-base", "Swin": "swin-base",
}
TINY_ENCODERS = {
    "RoBERTa": "tiny-roberta", "ELECTRA": "tiny-electra", "BERT": "tiny-bert",
    "ResNet": "tiny-resnet", "MAE": "tiny-mae", "Swin": "tiny-swin",
}
# cpu: real pretrained encoders that pip ships, standing in for the paper's (none of RoBERTa,
# ELECTRA, BERT, ResNet, MAE or Swin ships offline). A ladder of sizes in each modality: the
# smallest stands for the paper's weakest-scoring encoder on HM, the largest for its strongest.
STAND_INS = {
    "BERT": "minilm-l3", "RoBERTa": "minilm-l6", "ELECTRA": "mpnet-base",
    "ResNet": "efficientnet-lite0", "MAE": "efficientnet-lite1", "Swin": "efficientnet-lite2",
}
# the paper's architectures at random init on cpu ("from scratch" sections): top-2 fine-tuning
# of tiny encoders, CLS pooling, as the paper profile's settings would be
FROM_SCRATCH = ("model.finetune=top", "model.text_pooling=cls")
# Table II's MMSR rows, in its order: RoBERTa + each VE, then MAE + the other TEs
MM_PAIRS = (("RoBERTa", "ResNet"), ("RoBERTa", "Swin"), ("RoBERTa", "MAE"), ("ELECTRA", "MAE"),
            ("BERT", "MAE"))
SHORT = {"RoBERTa": "Ro.", "ELECTRA": "ELE.", "BERT": "BERT"}  # the paper's MMSR row labels
# Table III: (group, row) -> fusion name, fusion layers
FUSION_ROWS: dict[tuple[str, str], tuple[str, int]] = {
    ("Coarse", "Gate"): ("gate", 1),
    ("Coarse", "FiLM"): ("film", 1),
    ("Coarse", "Summation"): ("sum", 1),
    ("Coarse", "Concatenation"): ("concat", 1),
    ("Coarse+", "Gate"): ("gate+dnn", 1),
    ("Coarse+", "FiLM"): ("film+dnn", 1),
    ("Coarse+", "Summation"): ("sum+dnn", 1),
    ("Coarse+", "Concatenation"): ("concat+dnn", 1),
    ("Attention", "CoAttn-1"): ("co_attn", 1),
    ("Attention", "MergeAttn-1"): ("merge_attn", 1),
    ("Attention", "MergeAttn-2"): ("merge_attn", 2),
    ("Attention", "MergeAttn-4"): ("merge_attn", 4),
}
# Ours, beside Table III: the Coarse+ rows with a residual DNN (x + DNN(x), `<name>+resdnn`);
# on frozen encoders the paper's plain three-layer DNN trains to about half the coarse rows'
# HR@10 (a LayerNorm after it does not help): docs/results_cpu.md, "Table III".
RESIDUAL_DNN_ROWS: dict[tuple[str, str], tuple[str, int]] = {
    ("Coarse+ residual", row): (fusion.replace("+dnn", "+resdnn"), layers)
    for (group, row), (fusion, layers) in FUSION_ROWS.items() if group == "Coarse+"}
# Beside Table III: the gate and FiLM as the paper's released code computes them
# (`fusion.authors`: the text gates / modulates the image, a linear layer after, Xavier init),
# which differ from the textbook readings of the Coarse rows; everything else as those rows.
AUTHORS_CODE_ROWS: dict[tuple[str, str], tuple[str, int]] = {
    ("Coarse (authors' code)", "Gate"): ("gate_authors", 1),
    ("Coarse (authors' code)", "FiLM"): ("film_authors", 1)}
# The paper's claims each notebook tests, as (row A, row B) pairs of its grid; each list is one
# family (`significance.claims`: Holm over its converged pairs).
TABLE2_CLAIMS = (
    (("MMSR-T", "RoBERTa"), ("MMSR-V", "MAE")),  # text vs image, the default encoders
    (("MMSR-T", "RoBERTa"), ("MMSR-T", "BERT")),  # text encoders close to each other?
    (("MMSR-T", "RoBERTa"), ("MMSR-T", "ELECTRA")),
    (("MMSR", "Ro.+MAE"), ("MMSR-T", "RoBERTa")),  # fused vs the better single modality
    (("MMSR", "Ro.+MAE"), ("MMSR-V", "MAE")),
    (("MMSR", "Ro.+Swin"), ("MMSR", "Ro.+ResNet")))  # transformer vs CNN vision encoder
TABLE3_CLAIMS = (
    (("Attention", "MergeAttn-1"), ("Coarse", "Gate")),  # attention vs the best coarse
    (("Attention", "MergeAttn-1"), ("Attention", "CoAttn-1")),
    (("Coarse", "Gate"), ("Coarse", "Summation")),  # summation hurts?
    (("Coarse", "Gate"), ("Coarse", "Concatenation")),
    (("Coarse+", "Summation"), ("Coarse", "Summation")),  # does the DNN help?
    (("Attention", "MergeAttn-2"), ("Attention", "MergeAttn-1")),  # deeper?
    (("Attention", "MergeAttn-4"), ("Attention", "MergeAttn-1")))
# ours: each residual-DNN row vs the paper's plain DNN row, then vs no DNN (one family)
RESIDUAL_DNN_CLAIMS = tuple(
    [(key, ("Coarse+", key[1])) for key in RESIDUAL_DNN_ROWS]
    + [(key, ("Coarse", key[1])) for key in RESIDUAL_DNN_ROWS])
AUTHORS_CODE_CLAIMS = tuple((key, ("Coarse", key[1])) for key in AUTHORS_CODE_ROWS)
ARCHITECTURES = {"SASRec": "sasrec", "GRU4Rec": "gru4rec", "NextItNet": "nextitnet"}
TABLE4_COLUMNS = ("IDSR", "MMSR-T", "MMSR-V", "MMSR")
# our labels -> the paper's spelling where they differ (the paper writes GRU4Rec as "GRURec")
PAPER_LABELS = {"GRU4Rec": "GRURec"}
TABLE4_DATASETS = ("synthetic", "movielens-100k")
# Settings of one sequence architecture on one profile and data source, chosen for its ID model
# on validation only, as the profile's own setting was chosen for ID SASRec (`runs.tuning`):
# "baselines at their strongest" holds per architecture and per data set, and every row of that
# architecture on that data trains under it (content rows too, unless `CONTENT_SETTINGS` says
# otherwise), as every SASRec row trains under SASRec's. cpu: CE, seed 42, lr 1e-3..1e-1 x
# dropout 0.0..0.7 on the synthetic catalog and on MovieLens-100K (the trials:
# docs/results_cpu.md, "Tuning ID GRU4Rec and NextItNet"); both want a larger learning rate than
# SASRec on the synthetic catalog, and NextItNet on MovieLens-100K too.
SEQUENCE_SETTINGS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "cpu": {
        "synthetic": {"gru4rec": ("train.lr=3e-2", "model.dropout=0.0"),
                      "nextitnet": ("train.lr=3e-2", "model.dropout=0.5")},
        "movielens-100k": {"gru4rec": ("train.lr=3e-3", "model.dropout=0.1"),
                           "nextitnet": ("train.lr=3e-2", "model.dropout=0.5")},
    },
}
# Where an architecture's content rows (MMSR-T / MMSR-V / MMSR) were searched on their own
# (validation NDCG@10 of MMSR-T, seed 42) and chose otherwise than its ID model, their setting;
# a content row falls back to `SEQUENCE_SETTINGS`. cpu, synthetic: GRU4Rec's ID choice (lr 3e-2,
# no dropout) drives its MMSR-T below most-popular (test HR@10 6.56 vs 6.80); its own search
# (lr 1e-3..3e-2 x dropout 0.0..0.3) chose lr 1e-2, dropout 0.1 (valid NDCG@10 12.33 against 3.24
# at the ID model's setting and 8.27 at SASRec's): docs/results_cpu.md, "Tuning ID GRU4Rec and
# NextItNet". A key (architecture, item encoder) is one column's own search where it chose
# otherwise again: GRU4Rec's MMSR (merge-attention) at lr 1e-2 left one of five seeds at
# most-popular's level and two on an early plateau; its own search (seed 42, lr 1e-2 / 3e-3 /
# 1e-3, dropout 0.1) chose 3e-3 (valid NDCG@10 10.82 against 8.30 / 10.08): docs/results_cpu.md,
# "GRU4Rec's MMSR at its own learning rate".
CONTENT_SETTINGS: dict[str, dict[str, dict[str | tuple[str, str], tuple[str, ...]]]] = {
    "cpu": {"synthetic": {"gru4rec": ("train.lr=1e-2", "model.dropout=0.1"),
                          ("gru4rec", "mm"): ("train.lr=3e-3", "model.dropout=0.1")}},
}


class Grid(dict):
    """An ordered (level 1, level 2) -> RunConfig mapping that knows its table and level names
    and, where a table records them (Table V), how each row's setting was chosen
    (``searches``: label -> sentence; None when the grid does not say)."""

    def __init__(self, table: str, levels: tuple[str, str]) -> None:
        super().__init__()
        self.table = table
        self.levels = levels
        self.searches: dict[tuple[str, str], str] | None = None


# -- building blocks ------------------------------------------------------------------------------
def encoder_names(profile: str, from_scratch: bool = False) -> dict[str, str]:
    """Paper label -> encoder name for `profile`: the paper's checkpoints (paper), the
    pretrained stand-ins that ship offline (cpu), the tiny random-init zoo (smoke, and cpu's
    from-scratch sections)."""
    _check_profile(profile)
    if profile == "paper":
        return dict(PAPER_ENCODERS)
    return dict(STAND_INS if profile == "cpu" and not from_scratch else TINY_ENCODERS)


def scratch_settings(profile: str, from_scratch: bool) -> tuple[str, ...]:
    """Settings of a from-scratch section on `profile` (the cpu profile freezes pretrained
    encoders; random-init ones must train their top blocks)."""
    return FROM_SCRATCH if from_scratch and profile == "cpu" else ()


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")


def sequence_settings(profile: str, sequence: str, source: str = "synthetic",
                      content: bool = False, item_encoder: str | None = None
                      ) -> tuple[str, ...]:
    """``model.sequence=<sequence>`` and the settings that architecture was tuned to on
    `profile` and data `source` (`SEQUENCE_SETTINGS`, for a `content` row `CONTENT_SETTINGS`
    where its own search chose otherwise, and for the `item_encoder` column (text | vision |
    mm) its own entry there where it has one; a source nobody tuned on gets none, so the
    profile's); every grid row that picks an architecture goes through here, so a row's hash
    does not depend on which notebook built it."""
    _check_profile(profile)
    tuned = SEQUENCE_SETTINGS.get(profile, {}).get(source, {}).get(sequence, ())
    if content:
        own = CONTENT_SETTINGS.get(profile, {}).get(source, {})
        tuned = own.get((sequence, item_encoder), own.get(sequence, tuned))
    return (f"model.sequence={sequence}", *tuned)


def grid_base(profile: str, overrides: Sequence[str]) -> RunConfig:
    """The profile's base config with `overrides` (dotted): nothing hidden beyond the profile."""
    return profile_config(profile).override(*overrides)


def row_config(
    base: RunConfig, kind: str, name: str, *settings: str,
    text: str | None = None, vision: str | None = None, overrides: Sequence[str] = (),
) -> RunConfig:
    """One row: its item-encoder kind and encoders, its own settings, then the caller's
    overrides (last, so a notebook's ``train.epochs=...`` wins over the profile's budget)."""
    model = [f"model.item_encoder={kind}"]
    if text is not None:
        model.append(f"model.text_encoder={text}")
    if vision is not None:
        model.append(f"model.vision_encoder={vision}")
    return base.override(*model, *settings, f"name={name}", *overrides)


# -- Table II: text and vision encoders --------------------------------------------------------------
def table2_configs(profile: str, *overrides: str, from_scratch: bool = False) -> Grid:
    """Table II: MMSR-T per text encoder, MMSR-V per vision encoder, MMSR with RoBERTa + each
    vision encoder and MAE + each text encoder; one merge-attention block, SASRec.

    Keys are the paper's (group, row): ("MMSR-T", "RoBERTa") ... ("MMSR", "BERT+MAE"); on cpu
    the encoders are the pretrained stand-ins (`STAND_INS`), with `from_scratch` the paper's
    architectures at random init. `overrides` (dotted) apply to every row, last.
    """
    names = encoder_names(profile, from_scratch)
    tag = "t2s" if from_scratch else "t2"
    base = grid_base(profile, ("model.sequence=sasrec", "model.fusion=merge_attn",
                               "model.fusion_layers=1", *scratch_settings(profile, from_scratch)))
    grid = Grid("II", ("group", "row"))
    for t in TEXT_LABELS:
        grid["MMSR-T", t] = row_config(base, "text", f"{tag}-text-{t}", text=names[t],
                                       overrides=overrides)
    for v in VISION_LABELS:
        grid["MMSR-V", v] = row_config(base, "vision", f"{tag}-vision-{v}",
                                       vision=names[v], overrides=overrides)
    for t, v in MM_PAIRS:
        grid["MMSR", f"{SHORT[t]}+{v}"] = row_config(
            base, "mm", f"{tag}-mm-{t}+{v}", text=names[t], vision=names[v],
            overrides=overrides,
        )
    return grid


def split_available(configs: Mapping) -> tuple[Grid, dict]:
    """The rows whose components can be built here, and label -> what is missing for the rest
    (an optional package such as MPNet): a notebook shows those rows as not installed instead
    of failing half-way."""
    ok = Grid(getattr(configs, "table", ""), getattr(configs, "levels", ("group", "row")))
    ok.searches = getattr(configs, "searches", None)
    missing = {}
    for label, cfg in configs.items():
        m = cfg.resolved().model
        problems = [registry.lookup(kind, name).missing() for kind, name in
                    (("text_encoder", m.text_encoder), ("vision_encoder", m.vision_encoder),
                     ("vlp", m.vlp)) if name is not None]
        problems = [p for p in problems if p]
        if problems:
            missing[label] = "; ".join(problems)
        else:
            ok[label] = cfg
    return ok, missing


# -- Table III: fusion methods --------------------------------------------------------------------
def table3_configs(profile: str, *overrides: str, from_scratch: bool = False,
                   residual_dnn: bool = False, authors_code: bool = False) -> Grid:
    """Table III: the ten fusions (Coarse, Coarse+ = coarse + three-layer DNN, co-attention) and
    merge-attention with 1, 2 and 4 blocks; RoBERTa + MAE (their stand-ins on cpu), SASRec.
    Every row is an MMSR run. ``residual_dnn``: instead, our four Coarse+ rows with a residual
    DNN (`RESIDUAL_DNN_ROWS`), each the paper's Coarse+ row but for the fusion;
    ``authors_code``: instead, the gate and FiLM rows as the authors' code computes them
    (`AUTHORS_CODE_ROWS`)."""
    if residual_dnn and authors_code:
        raise ValueError("pick one of residual_dnn and authors_code: each is its own section")
    names = encoder_names(profile, from_scratch)
    tag = "t3s" if from_scratch else "t3"
    base = grid_base(profile, ("model.sequence=sasrec", *scratch_settings(profile, from_scratch)))
    grid = Grid("III", ("group", "row"))
    rows = RESIDUAL_DNN_ROWS if residual_dnn else AUTHORS_CODE_ROWS if authors_code \
        else FUSION_ROWS
    for (group, row), (fusion, layers) in rows.items():
        grid[group, row] = row_config(
            base, "mm", f"{tag}-{fusion}-{layers}", f"model.fusion={fusion}",
            f"model.fusion_layers={layers}", text=names["RoBERTa"], vision=names["MAE"],
            overrides=overrides,
        )
    return grid


# -- Table IV: sequence architectures -------------------------------------------------------------
def table4_configs(profile: str, *overrides: str, dataset: str = "synthetic",
                   from_scratch: bool = False,
                   architectures: Sequence[str] | None = None) -> Grid:
    """Table IV: SASRec, GRU4Rec and NextItNet, each as IDSR, MMSR-T, MMSR-V and MMSR
    (RoBERTa + Swin, their stand-ins on cpu, one merge-attention block); keys (architecture,
    column).

    ``dataset="movielens-100k"`` (real interactions, titles + genres, no images): IDSR and
    MMSR-T only, with the profile's text encoder (cpu: the pretrained MiniLM-L6, frozen).
    IDSR rows are the plain profile configuration with the sequence model (as in the
    quickstart): an ID model reads no encoder setting, so every table shares those runs.
    ``architectures`` (labels of `ARCHITECTURES`, default all three) keeps only those rows.
    """
    if dataset not in TABLE4_DATASETS:
        raise ValueError(f"unknown Table IV dataset {dataset!r}; choose one of {TABLE4_DATASETS}")
    archs = list(ARCHITECTURES) if architectures is None else list(architectures)
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown or not archs:
        raise ValueError(f"architectures={architectures!r}; choose among {list(ARCHITECTURES)}")
    names = encoder_names(profile, from_scratch)
    text, vision = names["RoBERTa"], names["Swin"]
    data: tuple[str, ...] = ()
    columns = TABLE4_COLUMNS
    if dataset == "movielens-100k":
        data, columns = ("data.source=movielens-100k",), ("IDSR", "MMSR-T")
    base = grid_base(profile, ["model.fusion=merge_attn", "model.fusion_layers=1", *data,
                               *scratch_settings(profile, from_scratch)])
    id_base = profile_config(profile).override(*data)
    tag = f"t4{'s' if from_scratch else ''}-{dataset}"
    grid = Grid("IV", ("architecture", "column"))
    runs = {"MMSR-T": ("text", {"text": text}), "MMSR-V": ("vision", {"vision": vision}),
            "MMSR": ("mm", {"text": text, "vision": vision})}
    for arch in archs:
        seq = ARCHITECTURES[arch]
        for col in columns:
            name = f"{tag}-{seq}-{col}"
            if col == "IDSR":
                tuned = sequence_settings(profile, seq, dataset)
                grid[arch, col] = id_base.override(*tuned, f"name={name}", *overrides)
                continue
            kind, enc = runs[col]
            tuned = sequence_settings(profile, seq, dataset, content=True, item_encoder=kind)
            grid[arch, col] = row_config(base, kind, name, *tuned,
                                         overrides=overrides, **enc)
    return grid


# -- tables ----------------------------------------------------------------------------------------
def describe_encoders(cfg: RunConfig) -> str:
    """What represents an item in `cfg`, and which weights: every encoder says whether it is
    pretrained or random-init and whether it is frozen or fine-tuned (top k / full)."""
    m = cfg.resolved().model
    if m.recommender != "sequential":
        return registry.lookup("recommender", m.recommender).description.split(":")[0]
    if m.item_encoder == "id":
        return "ID embedding"
    tuning = {"frozen": "frozen", "top": "top blocks tuned", "full": "fully tuned"}[m.finetune]

    def label(kind: str, name: str) -> str:
        weights = registry.lookup(kind, name).weights or "?"
        return f"{name} ({'pretrained' if weights == 'pretrained' else 'random init'}, {tuning})"

    parts = []
    if m.text_encoder is not None:
        parts.append(label("text_encoder", m.text_encoder))
    if m.vision_encoder is not None:
        parts.append(label("vision_encoder", m.vision_encoder))
    if m.vlp is not None:
        parts.append(label("vlp", m.vlp))
    text = " + ".join(parts)
    if m.fusion is not None:
        text += f", {m.fusion}-{m.fusion_layers}" if m.fusion_layers else f", {m.fusion}"
    return text


def grid_table(
    results: Mapping[tuple[str, str], Sequence[RunRecord] | RunRecord],
    configs: Mapping[tuple[str, str], RunConfig],
    split: str = "test",
    metrics: Sequence[str] = ("HR@10", "NDCG@10"),
) -> pd.DataFrame:
    """One row per configuration, in the grid's order, indexed by its (group, row) labels.

    `results` holds each row's runs (one per seed, as `run_grid` returns them; a single record
    is one seed). Columns: ``encoders`` (`describe_encoders`: which weights), ``epochs`` (best
    epochs over the seeds / budget), ``converged`` (seeds whose best epoch came before the end
    of the budget), ``seeds``, and each metric's mean over the seeds and ``<metric> std``. A
    row without runs (not run yet) shows NaN.
    """
    levels = getattr(configs, "levels", ("group", "row"))
    rows = []
    for key, cfg in configs.items():
        runs = results.get(key, [])
        runs = [runs] if isinstance(runs, RunRecord) else list(runs)
        best = [r.extra.get("best_epoch") for r in runs if r.extra.get("best_epoch")]
        budget = cfg.resolved().train.epochs
        summary = summarize(runs, split, metrics) if runs else {
            **{m: math.nan for m in metrics}, **{f"{m} std": math.nan for m in metrics},
            "seeds": 0, "converged": "-"}
        rows.append({
            levels[0]: key[0], levels[1]: key[1],
            "encoders": describe_encoders(cfg),
            "epochs": f"{'/'.join(map(str, best)) or '-'} of {budget}" if budget else "-",
            "converged": summary.pop("converged"), "seeds": summary.pop("seeds"),
            **summary,
        })
    return pd.DataFrame(rows).set_index(list(levels))


def significance_column(
    store: ResultsStore, results: Mapping, pairs: Mapping[Hashable, tuple], split: str = "test",
    metric: str = "NDCG@10",
) -> pd.Series:
    """For each output label, the verdict of a paired test between two rows of `results`
    (``pairs[label] = (row_a, row_b)``, the pairs one family: `family_tests`): "+12.3%
    (Holm p=0.001)" only when significant and both converged, else "n.s." or "not converged"."""
    tests = family_tests(store, results, list(pairs.values()), split, metric)
    out = {}
    for label, (a, b) in pairs.items():
        test = tests.get((a, b))
        if test is None:
            out[label] = "-"
        elif not (converged(results[a]) and converged(results[b])):
            out[label] = "not converged"
        elif not test.significant:
            out[label] = test.ns_cell
        else:
            out[label] = f"{relative_improvement(test.mean_a, test.mean_b)} ({test.p_cell})"
    return pd.Series(out, name=f"{metric} vs baseline")


def compare_with_paper(
    ours: pd.DataFrame,
    table: str,
    dataset: str = "HM",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Our numbers next to the paper's Table `table` on `dataset`, row by row.

    `ours` is a `grid_table` (its two index levels are matched to the paper's group and row,
    after `PAPER_LABELS`). Every row of ours is kept, in our order; paper columns are NaN where the
    paper has no such row. For each metric: "<m> (ours)", "<m> (paper)", and the rank of the row
    within each column ("<m> rank (ours)", "<m> rank (paper)", 1 = best), both ranked over the
    rows that have both numbers, so the two orderings can be compared directly. ``note`` carries
    the paper's transcription notes (e.g. cells that look swapped).
    """
    paper = paper_wide(table, dataset)
    available = [c for c in paper.columns if c not in ("dataset", "group", "row", "note")]
    if metrics is None:
        metrics = [m for m in available if m in ours.columns]
    missing = [m for m in metrics if m not in available or m not in ours.columns]
    if missing:
        raise KeyError(
            f"metrics {missing} are not in both tables: Table {table} ({dataset}) has "
            f"{available}, ours has {[c for c in ours.columns]}"
        )
    if ours.index.nlevels != 2:
        raise ValueError(
            f"`ours` must be indexed by two label levels as grid_table returns, got "
            f"{list(ours.index.names)}"
        )
    metrics = list(metrics)
    flat = ours[metrics].reset_index()
    first, second = flat.columns[0], flat.columns[1]
    flat["group"] = flat[first].map(lambda s: PAPER_LABELS.get(s, s))
    flat["row"] = flat[second].map(lambda s: PAPER_LABELS.get(s, s))
    merged = flat.merge(paper[["group", "row", *metrics, "note"]], on=["group", "row"],
                        how="left", suffixes=(" (ours)", " (paper)"), validate="one_to_one")
    out = merged[[first, second]].copy()
    for m in metrics:
        o, p = merged[f"{m} (ours)"], merged[f"{m} (paper)"]
        both = o.notna() & p.notna()
        out[f"{m} (ours)"], out[f"{m} (paper)"] = o, p
        out[f"{m} rank (ours)"] = o.where(both).rank(ascending=False, method="min")
        out[f"{m} rank (paper)"] = p.where(both).rank(ascending=False, method="min")
    out["note"] = merged["note"].fillna("")
    return out.set_index([first, second])


def table4_wide(ours: pd.DataFrame, metric: str = "HR@10") -> pd.DataFrame:
    """A Table IV `grid_table` in the paper's layout: architectures x (IDSR, MMSR-T, MMSR-V,
    MMSR) for one metric, with the "Improv." column when both IDSR and MMSR are there."""
    if metric not in ours.columns:
        raise KeyError(f"metric {metric!r} is not in the table; it has {list(ours.columns)}")
    wide = ours[metric].unstack(ours.index.names[1])
    rows = list(dict.fromkeys(ours.index.get_level_values(0)))
    cols = list(dict.fromkeys(ours.index.get_level_values(1)))
    wide = wide.reindex(index=rows, columns=cols)
    wide.columns.name = None
    if "IDSR" in wide.columns and "MMSR" in wide.columns:
        wide["Improv."] = improvement_column(wide)
    return wide


def improvement_column(
    df: pd.DataFrame, ours: str = "MMSR", baseline: str = "IDSR", against: str = "best",
    relative_to: str = "baseline",
) -> pd.Series:
    """Table IV's "Improv.": MMSR relative to the best IDSR, as "+12.34%" strings.

    The caption says "compared to the best IDSR". ``against="best"`` (default) compares every
    row with the best IDSR value of the table (one data set: the best ID architecture);
    ``against="row"`` compares with the IDSR of the same architecture. `relative_to` is passed to
    `report.relative_improvement` ("baseline": (ours - base) / base).
    """
    for col in (ours, baseline):
        if col not in df.columns:
            raise KeyError(
                f"column {col!r} is not in the table (columns {list(df.columns)}); pass the "
                "architectures x columns layout of table4_wide"
            )
    if against not in ("best", "row"):
        raise ValueError(f"against must be 'best' or 'row', got {against!r}")
    base = df[baseline].astype(float)
    if against == "best":
        base = pd.Series(base.max(), index=df.index)
    values = [relative_improvement(float(o), float(b), relative_to)
              for o, b in zip(df[ours], base, strict=True)]
    return pd.Series(values, index=df.index, name="Improv.", dtype=object)
