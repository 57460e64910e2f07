"""Notebooks 04-06 (Tables V-VII): grids match the paper's rows, the CLI reproduces them, the
"Improv." column follows the paired test, and the paper's numbers land beside ours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmsr_lib.config import profile_config
from mmsr_lib.evaluate import metrics_from_ranks
from mmsr_lib.plan import config_diff
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.workbook import comparisons as cmp
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.paper_numbers import paper_wide

PROFILES = ("smoke", "cpu", "paper")


def _paper_labels(table: str, dataset: str) -> list[tuple[str, str]]:
    ours = {v: k for k, v in grids.PAPER_LABELS.items()}
    paper = paper_wide(table, dataset)
    return [(g, ours.get(r, r)) for g, r in zip(paper["group"], paper["row"], strict=True)]


def _check_grid(grid: grids.Grid, profile: str) -> None:
    """Every row resolves, rows are distinct runs, and the CLI's settings rebuild each one."""
    hashes = [cfg.hash() for cfg in grid.values()]
    assert len(set(hashes)) == len(hashes), "two rows of a grid are the same run"
    base = profile_config(profile)
    for cfg in grid.values():
        assert cfg.profile == profile
        cfg.resolved()
        # what `mmsr grid NN --list` prints as --set flags gives the same run
        assert base.override(*config_diff(base, cfg)).hash() == cfg.hash()


# -- Table V -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_table5_rows_are_the_papers_and_share_runs(profile):
    grid = cmp.table5_configs(profile)
    assert list(grid) == _paper_labels("V", "HM")
    _check_grid(grid, profile)
    mmsr = grid[cmp.OURS].resolved().model
    assert (mmsr.item_encoder, mmsr.fusion, mmsr.fusion_layers, mmsr.sequence) == \
        ("mm", "merge_attn", 1, "sasrec")
    base = profile_config(profile).model  # the profile's encoders (an ID base resolves them away)
    assert (mmsr.text_encoder, mmsr.vision_encoder) == (base.text_encoder, base.vision_encoder)
    for label, cfg in grid.items():
        m = cfg.resolved().model
        if label[0] != "IDSR":
            assert m.sequence == "sasrec"
        # every content row reads the MMSR row's encoders, with its fine-tuning
        if m.text_encoder is not None:
            assert m.text_encoder == mmsr.text_encoder
        if m.vision_encoder is not None:
            assert m.vision_encoder == mmsr.vision_encoder
            assert m.finetune == mmsr.finetune
    assert {cfg.resolved().model.recommender for cfg in grid.values()} == {
        "sequential", "fdsa", "carca++", "vqrec", "morec++"}
    # one loss for every row, the paper's (the baselines train with nothing else)
    assert {c.resolved().train.loss for c in grid.values()} == {"bce"}
    # where the profile's loss is BCE too, one hash for one run across notebooks: Table II's
    # Ro.+MAE, Table IV's IDSR rows; on cpu MMSR's Table V row differs from Table II's in its
    # loss and in the rate its own Table V search chose, and in nothing else
    shared = profile_config(profile).train.loss == "bce"
    t2 = grids.table2_configs(profile)["MMSR", "Ro.+MAE"]
    own_rate = profile == "cpu"
    assert (grid[cmp.OURS].resolved().train.lr != t2.resolved().train.lr) is own_rate
    assert (grid[cmp.OURS].hash() == t2.hash()) is (shared and not own_rate)
    assert grid[cmp.OURS].override("train.loss=" + t2.train.loss,
                                   f"train.lr={t2.resolved().train.lr}").hash() == t2.hash()
    t4 = grids.table4_configs(profile)
    for arch in grids.ARCHITECTURES:
        assert (grid["IDSR", arch].hash() == t4[arch, "IDSR"].hash()) is shared
    if profile == "cpu":  # the profile's BCE budget for every row, baselines included
        assert {(c.resolved().train.epochs, c.resolved().train.patience)
                for c in grid.values()} == {(800, 40)}


def test_table5_setting_column_names_each_rows_training_setting():
    """The `setting` column shows the searched ID rows' own settings and that the other
    baselines share SASRec's (on cpu: GRU4Rec lr 3e-2 under the linear decay, SASRec 3e-3)."""
    grid = cmp.table5_configs("cpu")
    setting = {label: cmp.describe_setting(cfg) for label, cfg in grid.items()}
    assert setting["IDSR", "SASRec"] == "lr 0.003, dropout 0.3, weight decay 0.1, bce, plateau"
    assert setting["IDSR", "GRU4Rec"] == ("lr 0.03, dropout 0, weight decay 0.1, bce, linear "
                                          "(no stop before the decay ends)")
    # FDSA, CARCA++, VQRec and MoRec++ at their own searched settings, none of them SASRec's
    assert setting["IDSR w. Side Feat.", "FDSA"] == ("lr 0.001, dropout 0.2, weight decay 0.1, "
                                                     "bce, plateau")
    assert setting["IDSR w. Side Feat.", "CARCA++"] == ("lr 0.01, dropout 0.2, weight decay 0.1, "
                                                        "bce, plateau")
    for label in (("Modality-based SR", "VQRec"), ("Modality-based SR", "MoRec++")):
        assert setting[label] == "lr 0.001, dropout 0.3, weight decay 0.1, bce, plateau"


def test_table5_searched_column_says_which_rows_had_their_own_search(tmp_path):
    """Rows searched on validation say over what; the others that they take ID SASRec's
    setting (every row on smoke, which searches nothing). The column survives
    `grids.split_available` and is absent from a grid that records no searches."""
    cpu = grids.split_available(cmp.table5_configs("cpu"))[0]
    assert cpu.searches[("IDSR", "SASRec")].startswith("lr ")
    assert cpu.searches[("IDSR", "GRU4Rec")].startswith("lr ")
    assert cpu.searches[("IDSR w. Side Feat.", "CARCA++")].startswith("lr ")
    assert cpu.searches[("Modality-based SR", "VQRec")].startswith("lr ")
    assert cpu.searches[("Modality-based SR", "MoRec++")].startswith("lr ")
    assert cpu.searches[("IDSR w. Side Feat.", "FDSA")].startswith("lr ")
    assert cpu.searches[cmp.OURS].startswith("lr ")
    assert set(cpu.searches) == set(cpu)
    ml = cmp.table5_configs("cpu", dataset="movielens-100k")
    assert ml.searches[cmp.OURS_TEXT].startswith("lr ")
    assert ml[cmp.OURS_TEXT].resolved().train.lr == 1e-3
    assert ml.searches[("Modality-based SR", "VQRec")].startswith("lr ")
    assert ml.searches[("IDSR", "NextItNet")] != cpu.searches[("IDSR", "NextItNet")]
    assert "paper" in cmp.table5_configs("paper").searches[cmp.OURS]
    store = ResultsStore(tmp_path / "r.sqlite")
    grid = cmp.table5_configs("smoke")
    results = _store_runs(store, grid, _table5_ranks()[1], seeds=(42,))
    table = cmp.comparison_table(results, grid)
    assert set(table["searched"]) == {cmp.NOT_SEARCHED}
    assert "searched" not in cmp.comparison_table(results, dict(grid)).columns


def test_table5_on_movielens_keeps_text_only_rows():
    grid = cmp.table5_configs("cpu", dataset="movielens-100k")
    left = cmp.left_out("movielens-100k")
    assert list(grid) == [("IDSR", "GRU4Rec"), ("IDSR", "NextItNet"), ("IDSR", "SASRec"),
                          ("Modality-based SR", "VQRec"), cmp.OURS_TEXT]
    assert set(left) == {("IDSR w. Side Feat.", "FDSA"), ("IDSR w. Side Feat.", "CARCA++"),
                         ("Modality-based SR", "MoRec++"), cmp.OURS}
    assert set(grid) - {cmp.OURS_TEXT} | set(left) == set(_paper_labels("V", "HM"))
    assert all(cfg.resolved().data.source == "movielens-100k" for cfg in grid.values())
    assert grid[cmp.OURS_TEXT].resolved().model.item_encoder == "text"
    _check_grid(grid, "cpu")
    ml4 = grids.table4_configs("smoke", dataset="movielens-100k")
    assert cmp.table5_configs("smoke", dataset="movielens-100k")[cmp.OURS_TEXT].hash() == \
        ml4["SASRec", "MMSR-T"].hash()
    assert cmp.left_out("synthetic") == {}
    assert cmp.ours_label(grid) == cmp.OURS_TEXT
    with pytest.raises(ValueError, match="unknown Table V dataset"):
        cmp.table5_configs("cpu", dataset="hm")


def test_describe_row_names_the_baselines_encoders():
    grid = cmp.table5_configs("cpu")
    carca = cmp.describe_row(grid["IDSR w. Side Feat.", "CARCA++"])
    assert carca.startswith("CARCA++:") and "minilm-l6 (pretrained, frozen" in carca
    assert "efficientnet-lite1" in carca
    assert "pre-extracted" in cmp.describe_row(grid["Modality-based SR", "VQRec"])
    assert cmp.describe_row(grid["IDSR", "SASRec"]) == "ID embedding"
    region = cmp.describe_row(cmp.table7_configs("smoke")["VisualBERT", "Region"])
    assert "tiny-visualbert (random init" in region and "region features" in region


# -- Table VI / VII ----------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_table6_rows_are_the_papers_vlps_and_mmsr(profile):
    grid = cmp.table6_configs(profile)
    vlp_rows = [k for k in grid if k[0] in cmp.PARADIGMS]
    assert vlp_rows == _paper_labels("VI", "HM")
    refs = [k for k in grid if k[0] == cmp.REFERENCE]
    assert refs == ([cmp.MMSR_REF, cmp.MMSR_SCRATCH] if profile == "cpu" else [cmp.MMSR_REF])
    _check_grid(grid, profile)
    names = cmp.vlp_names(profile)
    for label in vlp_rows:
        m = grid[label].resolved().model
        assert (m.item_encoder, m.sequence, m.finetune) == ("vlp", "sasrec", "top")
        assert m.vlp == names[cmp.VLP_ROWS[label]]
    weights = {grids.registry.lookup("vlp", n).weights for n in names.values()}
    assert weights == ({"pretrained"} if profile == "paper" else {"random"})
    assert grid["b", "VisualBERT"].resolved().model.visual_input == "region"
    vilt = grid["b", "ViLT"].resolved().model
    assert vilt.text_max_tokens in (None, 40)  # ViLT's position table holds 40 tokens
    # the reference is the profile's MMSR (its loss, as the VLP rows): Table II's Ro.+MAE run
    assert grid[cmp.MMSR_REF].hash() == grids.table2_configs(profile)["MMSR", "Ro.+MAE"].hash()
    assert {c.resolved().train.loss for c in grid.values()} == {
        profile_config(profile).train.loss}
    if profile == "cpu":
        scratch = grids.table2_configs("cpu", from_scratch=True)["MMSR", "Ro.+MAE"]
        assert grid[cmp.MMSR_SCRATCH].hash() == scratch.hash()


@pytest.mark.parametrize("profile", PROFILES)
def test_table7_rows_are_the_papers_and_share_runs(profile):
    grid = cmp.table7_configs(profile)
    assert list(grid) == _paper_labels("VII", "HM")
    _check_grid(grid, profile)
    inputs = [grid[k].resolved().model.visual_input for k in grid if k[0] == "VisualBERT"]
    assert inputs == ["region", "grid", "patch-emb", "patch-vit"]
    assert grid["VisualBERT", "Region"].hash() == cmp.table6_configs(profile)[
        "b", "VisualBERT"].hash()
    assert grid[cmp.IDSR_ROW].hash() == grids.table4_configs(profile)["SASRec", "IDSR"].hash()
    # a notebook's overrides reach every row (smoke: one epoch)
    short = cmp.table7_configs(profile, "train.epochs=1")
    assert {c.resolved().train.epochs for c in short.values()} == {1}


def test_notebook_grid_by_number_or_name():
    assert list(cmp.notebook_grid("04", "smoke")) == list(cmp.table5_configs("smoke"))
    assert list(cmp.notebook_grid("05_vlp_architectures", "smoke")) == list(
        cmp.table6_configs("smoke"))
    assert cmp.notebook_grid("6", "smoke").table == "VII"
    with pytest.raises(ValueError, match="no comparison grid"):
        cmp.notebook_grid("07", "smoke")
    # `mmsr grid 05 --list` lists plan.notebook_runs, whose Table VI section is this grid
    from mmsr_lib.plan import notebook_runs

    listed = [r.config for r in notebook_runs("05", "cpu") if r.section.startswith("Table VI")]
    assert {c.override("train.seed=42").hash() for c in listed} == {
        c.override("train.seed=42").hash() for c in cmp.table6_configs("cpu").values()}


# -- Improv. and claims on stored fake runs -----------------------------------------------------------
N_USERS = 400


def _store_runs(store, grid, ranks_of, converged=None, seeds=(42, 43)):
    """Fake finished runs of every row of `grid` with the given per-user test ranks."""
    out = {}
    for label, cfg in grid.items():
        runs = []
        for seed in seeds:
            ranks = ranks_of[label]
            runs.append(store.finish(cfg.override(f"train.seed={seed}"), {
                "metrics": {"test": metrics_from_ranks(ranks)},
                "ranks": {"test": np.asarray(ranks)},
                "extra": {"epochs_run": 30, "best_epoch": 10,
                          "converged": (converged or {}).get(label, True)}}))
        out[label] = runs
    return out


def _table5_ranks():
    rng = np.random.default_rng(0)
    r0 = rng.permutation(np.arange(N_USERS) % 100)  # every rank 0..99 four times
    return r0, {
        ("IDSR", "GRU4Rec"): r0 + 40, ("IDSR", "NextItNet"): r0 + 50,
        ("IDSR", "SASRec"): r0 + 5,  # uniformly a little behind MMSR: best baseline at @50
        ("IDSR w. Side Feat.", "FDSA"): r0 + 30,
        # excellent at the top, poor below: the best baseline at @10 and @20
        ("IDSR w. Side Feat.", "CARCA++"): np.where(r0 < 15, r0 // 2, r0 + 80),
        ("Modality-based SR", "VQRec"): r0 + 60, ("Modality-based SR", "MoRec++"): r0 + 20,
        cmp.OURS: r0,
    }


def test_improv_is_against_the_best_baseline_by_test_mean_and_paired(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    grid = cmp.table5_configs("smoke")
    r0, ranks = _table5_ranks()
    results = _store_runs(store, grid, ranks)
    assert cmp.best_baseline(results, cmp.OURS, "HR@10") == ("IDSR w. Side Feat.", "CARCA++")
    assert cmp.best_baseline(results, cmp.OURS, "HR@50") == ("IDSR", "SASRec")
    # HR@10: MMSR hits 10% of the users, CARCA++ 15%, every difference one way: significant
    imp = cmp.improvement(store, results, "HR@10")
    assert imp.ours_mean == pytest.approx(10.0) and imp.baseline_mean == pytest.approx(15.0)
    assert imp.relative == "-33.33%" and imp.significant and imp.converged
    assert imp.cell.startswith("-33.33% (p=")
    assert "CARCA++ (best baseline) beats MMSR" in imp.sentence
    # HR@50: 50% vs SASRec's 45%
    up = cmp.improvement(store, results, "HR@50")
    assert up.relative == "+11.11%" and up.cell.startswith("+11.11% (p=")
    assert up.sentence.startswith("HR@50: MMSR beats SASRec (best baseline)")

    wide = cmp.table5_wide(store, results, grid)
    assert list(wide.index) == list(cmp.TABLE5_METRICS)
    assert cmp.model_columns(wide) == [label[1] for label in grid]
    assert wide.loc["HR@10", "best baseline"] == "CARCA++"
    assert wide.loc["HR@50", "best baseline"] == "SASRec"
    assert wide.loc["HR@10", "MMSR"] == pytest.approx(10.0)
    assert wide.loc["HR@10", "Improv."] == imp.cell
    lines = cmp.improvement_sentences(store, results)
    assert len(lines) == len(cmp.TABLE5_METRICS) and lines[0] == imp.sentence
    claims = cmp.row_claims(store, results, cmp.table5_pairs(results))
    assert len(claims) == 5 and claims[0].startswith("CARCA++ beats MMSR")
    assert any(line.startswith("MMSR beats VQRec") for line in claims)


def test_improv_says_ns_or_not_converged(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    grid = cmp.table5_configs("smoke")
    r0, ranks = _table5_ranks()
    rng = np.random.default_rng(1)
    # MoRec++ as good as MMSR up to user noise around the cut-off: the best at HR@50, n.s.
    ranks[("Modality-based SR", "MoRec++")] = np.clip(r0 + rng.integers(-3, 4, N_USERS), 0, None)
    results = _store_runs(store, grid, ranks)
    ns = cmp.improvement(store, results, "HR@50")
    assert ns.baseline == ("Modality-based SR", "MoRec++")
    assert not ns.significant and ns.cell.startswith("n.s. (p=")
    assert "no significant difference" in ns.sentence
    # the best baseline did not converge in one seed: no claim whatever the test says
    store2 = ResultsStore(tmp_path / "r2.sqlite")
    _, ranks = _table5_ranks()
    results = _store_runs(store2, grid, ranks,
                          converged={("IDSR w. Side Feat.", "CARCA++"): False})
    nc = cmp.improvement(store2, results, "HR@10")
    assert nc.significant and not nc.converged and nc.cell == "not converged"
    assert "no claim" in nc.sentence


def test_paradigm_pooling_and_claims(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    grid = cmp.table6_configs("smoke")
    r0 = np.arange(N_USERS) % 100
    shift = {"a": 6, "b": 3, "c": 0, cmp.REFERENCE: 0}
    results = _store_runs(store, grid, {k: r0 + shift[k[0]] for k in grid}, seeds=(42,))
    paradigms = cmp.paradigm_runs(results)
    assert list(paradigms) == [cmp.paradigm_key(x) for x in "abc"]
    assert len(paradigms[cmp.paradigm_key("a")]) == 2  # CLIP and GroupViT pooled
    pairs = cmp.paradigm_pairs(paradigms)
    assert pairs[0] == (cmp.paradigm_key("b"), cmp.paradigm_key("a"))
    lines = cmp.row_claims(store, paradigms, pairs)
    assert lines[0].startswith("(b) single-stream, deep fusion beats (a) two-stream")
    vi = cmp.row_claims(store, results, cmp.table6_pairs(results))
    # one seed a model (smoke): a difference, not a finding; pooled paradigms have two runs each
    assert vi[0].startswith("FLAVA ahead of CLIP in one seed") and "not yet a finding" in vi[0]
    assert any(line.startswith("MMSR vs FLAVA: no significant difference") for line in vi)
    table = cmp.comparison_table(results, grid)
    wide = cmp.with_paper_columns(table, "VI")
    assert wide.loc[("a", "CLIP"), "paradigm"] == cmp.PARADIGMS["a"]
    assert wide.loc[cmp.MMSR_REF, "paradigm"] == "reference"


# -- the paper beside ours ----------------------------------------------------------------------------
def test_paper_table5_layout_and_printed_improv():
    bili = cmp.paper_table5("Bili")
    assert list(bili.index) == list(cmp.TABLE5_METRICS)
    assert bili.loc["HR@10", "GRU4Rec"] == pytest.approx(2.3247)
    assert bili.loc["HR@10", "MMSR"] == pytest.approx(4.2210)
    assert bili.loc["HR@10", "best baseline"] == "CARCA++"
    assert bili.loc["HR@10", "Improv."] == "+4.16%"
    assert cmp.paper_table5("HM").loc["NDCG@10", "Improv."] == "-0.91%"
    ours = bili.copy()
    both = cmp.table5_with_paper(ours, "ours (smoke)")
    assert [d for d in dict.fromkeys(both.index.get_level_values(0))] == [
        "ours (smoke)", *(f"paper {d}" for d in cmp.PAPER5_DATASETS)]
    assert cmp.model_columns(both) == cmp.model_columns(bili)


def test_compare_rows_fills_the_paper_and_table6s_reference():
    grid = cmp.table6_configs("cpu")
    ours = grids.grid_table({}, grid)
    ours["HR@10"] = np.arange(len(grid), dtype=float)
    ours["NDCG@10"] = np.arange(len(grid), dtype=float) / 2
    side = cmp.compare_rows(ours, "VI", "HM")
    assert side.loc[("c", "FLAVA"), "HR@10 (paper)"] == pytest.approx(10.1435)
    assert side.loc[cmp.MMSR_REF, "HR@10 (paper)"] == pytest.approx(10.0425)  # Table V's
    assert "Table V's MMSR" in side.loc[cmp.MMSR_REF, "note"]
    assert math.isnan(side.loc[cmp.MMSR_SCRATCH, "HR@10 (paper)"])
    assert side.loc[("c", "FLAVA"), "HR@10 rank (paper)"] == 1.0
    assert math.isnan(side.loc[cmp.MMSR_SCRATCH, "HR@10 rank (ours)"])
    wide = cmp.with_paper_columns(ours, "VI")
    assert wide.loc[("a", "CLIP"), "NDCG@10 (paper Kwai)"] == pytest.approx(2.1332)
    vii = cmp.table7_configs("smoke")
    ours7 = grids.grid_table({}, vii)
    ours7["HR@10"] = 1.0
    side7 = cmp.compare_rows(ours7, "VII", "Kwai", ["HR@10"])
    assert side7.loc[cmp.IDSR_ROW, "HR@10 (paper)"] == pytest.approx(4.7521)
    v = grids.grid_table({}, cmp.table5_configs("smoke"))
    v["HR@10"] = 1.0
    assert cmp.compare_rows(v, "V", "Amazon", ["HR@10"]).loc[
        ("IDSR", "GRU4Rec"), "HR@10 (paper)"] == pytest.approx(16.0417)
    with pytest.raises(KeyError, match="has no"):
        cmp.compare_rows(v, "V", "HM", ["MRR@10"])
    fig = cmp.plot_ours_vs_paper_datasets(ours, "VI", cmp.PAPER_VLP_DATASETS, "HR@10", "t",
                                          ours_std=ours["HR@10 std"])
    assert len(fig.axes) == 3 and fig.axes[1].get_title() == "paper (HM)"


# -- CARCA++'s head, our ablation ------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_carca_head_ablation_is_table5s_carca_row_and_its_dot_twin(profile):
    """The cross-attention row is Table V's CARCA++ run itself (the same hash, so no second
    training); the dot row differs from it only in the recommender (and its name)."""
    grid = cmp.carca_head_configs(profile)
    _check_grid(grid, profile)
    cross, dot = (grid[label] for label in cmp.CARCA_HEADS)
    assert cross.hash() == cmp.table5_configs(profile)[cmp.CARCA].hash()
    assert dot.resolved().model.recommender == "carca++dot"
    assert dot.override("model.recommender=carca++").hash() == cross.hash()
    assert set(cmp.CARCA_HEAD_CLAIMS[0]) == set(grid)
    assert "not searched for this head" in grid.searches[cmp.CARCA_HEAD_CLAIMS[0][0]]


def test_training_fit_reads_each_seeds_best_and_last_epoch():
    from mmsr_lib.runs.store import RunRecord

    def rec(best: int, losses: list[float]) -> RunRecord:
        history = [{"epoch": e + 1, "loss": loss, "valid": {"NDCG@10": 10.0 + e}}
                   for e, loss in enumerate(losses)]
        return RunRecord("h", {}, "done", history=history, extra={"best_epoch": best})

    fit = cmp.training_fit({("A", "x"): [rec(2, [3.0, 2.0, 1.0]), rec(1, [5.0, 4.0, 2.0])],
                            ("B", "y"): []})
    assert list(fit.index) == ["A / x"]  # a row without runs has nothing to show
    row = fit.loc["A / x"]
    assert row["seeds"] == 2 and row["best epoch"] == 1.5 and row["last epoch"] == 3
    assert row["train loss at best"] == 3.5 and row["train loss at last"] == 1.5
    assert row["valid NDCG@10 at best"] == 10.5
