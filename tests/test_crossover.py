"""Notebook 12's library: the density sweeps, warm/cold from stored ranks, the crossover."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import write_sequences

from mmsr_lib.config import profile_config
from mmsr_lib.data.format import load_dataset
from mmsr_lib.evaluate import evaluate_model, metrics_from_ranks
from mmsr_lib.runs.runner import load_data, run_or_load
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.runs.trained import load_trained
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook import crossover as xo
from mmsr_lib.workbook.comparisons import describe_setting
from mmsr_lib.workbook.grids import table4_configs
from mmsr_lib.workbook.paper_numbers import paper_table1
from mmsr_lib.workbook.quickstart import quickstart_configs

CHEAP = ("data.synth.n_users=150", "data.synth.image_size=16")


# -- the sweeps -----------------------------------------------------------------------------------
@pytest.mark.parametrize("knob", xo.SWEEP_KNOBS)
def test_sweep_catalogs_get_sparser_monotonically(knob):
    configs = xo.density_sweep_configs("smoke", (4, 1, 2), *CHEAP, knob=knob)
    assert list(configs.points) == (["200 items", "400 items", "800 items"] if knob == "n_items"
                                    else ["150 users", "75 users", "38 users"])
    assert len(configs) == 3 * len(xo.SWEEP_ENCODERS)
    stats = xo.point_statistics(configs)  # measured on the generated data
    per_item = stats["interactions_per_item"].to_numpy()
    assert np.all(np.diff(per_item) < 0), per_item
    assert np.all(np.diff(stats["train_per_item"].to_numpy()) < 0)
    if knob == "n_items":  # same users and sequences: only the catalog grows
        assert stats["users"].nunique() == 1 and stats["interactions"].nunique() == 1
        assert np.all(np.diff(stats["items"].to_numpy()) > 0)


def test_sweep_rows_differ_only_in_encoder_and_density():
    configs = xo.density_sweep_configs("smoke", (1, 4))
    kinds = {enc: configs["200 items", enc].resolved().model.item_encoder
             for enc in xo.SWEEP_ENCODERS}
    assert kinds == {"IDSR": "id", "MMSR-T": "text", "MMSR-V": "vision", "MMSR": "mm"}
    assert configs["800 items", "MMSR"].resolved().model.fusion == "gate"
    assert configs["800 items", "IDSR"].data.synth.n_items == 800
    with pytest.raises(ValueError, match="positive"):
        xo.density_sweep_configs("smoke", (1, 0))
    with pytest.raises(ValueError, match="knob"):
        xo.density_sweep_configs("smoke", (1,), knob="mean_seq_len")


def test_dense_point_is_the_quickstart_run():
    """Factor 1 is the profile's catalog: the quick start's runs, trained once for both."""
    sweep = xo.density_sweep_configs("cpu", (1, 2))
    quick = quickstart_configs("cpu")
    for enc in xo.SWEEP_ENCODERS:
        assert sweep["1,200 items", enc].hash() == quick[enc].hash()
    assert sweep["2,400 items", "IDSR"].hash() != quick["IDSR"].hash()


def test_ids_own_setting_applies_to_the_id_rows_of_its_points_only(monkeypatch):
    """A point where ID SASRec was searched again trains its IDSR row at the found setting (the
    same run as the search's trial, so it is reused), the content rows and the other points at
    the profile's; the grid says where each setting came from; a caller's override still wins."""
    own = ("model.dropout=0.7", "train.weight_decay=1.0")
    monkeypatch.setitem(xo.ID_SETTINGS, "smoke", {4.0: own})
    monkeypatch.setitem(xo.ID_SEARCHES, "smoke", {4.0: "dropout 0.3..0.7 x weight decay"})
    plain = xo.density_sweep_configs("smoke", (1, 4), knob="n_items")
    monkeypatch.setitem(xo.ID_SETTINGS, "smoke", {})
    untuned = xo.density_sweep_configs("smoke", (1, 4), knob="n_items")
    sparse, dense = "800 items", "200 items"
    assert plain[sparse, "IDSR"].hash() == untuned[sparse, "IDSR"].override(*own).hash()
    assert plain[sparse, "IDSR"].hash() != untuned[sparse, "IDSR"].hash()
    for key in [(dense, "IDSR"), *((p, e) for p in (dense, sparse) for e in xo.SWEEP_ENCODERS[1:])]:
        assert plain[key].hash() == untuned[key].hash(), key
    assert plain.searches[sparse, "IDSR"] == "dropout 0.3..0.7 x weight decay"
    assert plain.searches[sparse, "MMSR"] == plain.searches[dense, "IDSR"] == xo.NOT_SEARCHED
    assert "dropout 0.7, weight decay 1" in describe_setting(plain[sparse, "IDSR"])
    monkeypatch.setitem(xo.ID_SETTINGS, "smoke", {4.0: own})
    mine = xo.density_sweep_configs("smoke", (4,), "model.dropout=0.2")
    assert mine[sparse, "IDSR"].resolved().model.dropout == 0.2
    assert mine[sparse, "IDSR"].resolved().train.weight_decay == 1.0
    by_users = xo.density_sweep_configs("smoke", (4,), knob="n_users")  # searched on n_items
    assert by_users.searches[next(iter(by_users.points)), "IDSR"] == xo.NOT_SEARCHED


def test_a_points_budget_applies_to_every_row_of_that_point_only(monkeypatch):
    """A point with its own budget trains all four rows under it (equal rules for compared
    rows), on top of the ID row's searched setting; other points and the n_users knob keep the
    profile's budget, and a caller's override still wins."""
    budget = ("train.epochs=7", "train.patience=3")
    monkeypatch.setitem(xo.POINT_BUDGETS, "smoke", {4.0: budget})
    monkeypatch.setitem(xo.ID_SETTINGS, "smoke", {4.0: ("model.dropout=0.7",)})
    longer = xo.density_sweep_configs("smoke", (1, 4))
    monkeypatch.setitem(xo.POINT_BUDGETS, "smoke", {})
    plain = xo.density_sweep_configs("smoke", (1, 4))
    sparse, dense = "800 items", "200 items"
    for enc in xo.SWEEP_ENCODERS:
        assert longer[sparse, enc].hash() == plain[sparse, enc].override(*budget).hash(), enc
        assert longer[sparse, enc].hash() != plain[sparse, enc].hash(), enc
        assert longer[dense, enc].hash() == plain[dense, enc].hash(), enc
        assert longer[sparse, enc].resolved().train.epochs == 7
    assert longer[sparse, "IDSR"].resolved().model.dropout == 0.7
    monkeypatch.setitem(xo.POINT_BUDGETS, "smoke", {4.0: budget})
    mine = xo.density_sweep_configs("smoke", (4,), "train.epochs=9")
    assert mine[sparse, "MMSR"].resolved().train.epochs == 9
    assert mine[sparse, "MMSR"].resolved().train.patience == 3
    by_users = xo.density_sweep_configs("smoke", (4,), knob="n_users")
    assert all(cfg.resolved().train.epochs != 7 for cfg in by_users.values())


def test_every_point_budget_sits_at_a_swept_point_and_keeps_the_ten_percent_rule():
    """A point's budget is a longer window under the same convergence rule: patience a tenth
    of the epochs, as the profile's, so 'converged' means the same at every point."""
    for profile, budgets in xo.POINT_BUDGETS.items():
        assert set(budgets) <= set(xo.DEFAULT_POINTS[profile]), profile
        base = profile_config(profile).resolved().train
        for factor, own in budgets.items():
            t = profile_config(profile).override(*own).resolved().train
            assert t.epochs > base.epochs, (profile, factor)
            assert t.patience * base.epochs == base.patience * t.epochs, (profile, factor)


def test_every_id_search_names_its_space_at_a_swept_point():
    """A per-point ID setting is only as good as the record of its search: each search sits at
    a point the profile sweeps and says what was searched there; a point with its own setting
    has a search, and a search may also have kept the profile's setting (no own setting)."""
    for profile, searches in xo.ID_SEARCHES.items():
        assert set(searches) <= set(xo.DEFAULT_POINTS[profile]), profile
        assert set(xo.ID_SETTINGS.get(profile, {})) <= set(searches), profile
        assert all("validation" in text for text in searches.values()), profile
    for profile, settings in xo.ID_SETTINGS.items():
        assert set(settings) <= set(xo.ID_SEARCHES[profile]), profile
        for factor, own in settings.items():
            assert own and all("=" in o for o in own), (profile, factor)


def test_a_search_that_kept_the_profiles_setting_says_so_and_changes_nothing(monkeypatch):
    """A point searched without a new winner keeps the profile's configuration (same hash as
    an unsearched point) and its `searched` text, not NOT_SEARCHED."""
    plain = xo.density_sweep_configs("smoke", (4,), encoders=("IDSR",))
    monkeypatch.setitem(xo.ID_SEARCHES, "smoke", {4.0: "dropout on validation: profile kept"})
    kept = xo.density_sweep_configs("smoke", (4,), encoders=("IDSR",))
    key = ("800 items", "IDSR")
    assert kept[key].hash() == plain[key].hash()
    assert plain.searches[key] == xo.NOT_SEARCHED
    assert kept.searches[key] == "dropout on validation: profile kept"


def test_full_movielens_point_is_notebook_03s_runs():
    """Fraction 1 is MovieLens-100K itself: Table IV's SASRec IDSR and MMSR-T runs."""
    sweep = xo.subsample_sweep_configs("cpu", (1.0,), encoders=xo.TEXT_ONLY_ENCODERS)
    table4 = table4_configs("cpu", dataset="movielens-100k")
    for enc in xo.TEXT_ONLY_ENCODERS:
        assert sweep["100% of interactions", enc].hash() == table4["SASRec", enc].hash()


def test_plan_lists_the_notebooks_movielens_sweep_on_cpu_only():
    """`mmsr plan` / `mmsr grid 12` list the real sweep the notebook runs by default on cpu (its
    include_movielens / real_sweep defaults), seed for seed, and nothing of it on smoke."""
    from mmsr_lib import plan
    from mmsr_lib.config import profile_seeds

    def sweep_runs(profile):
        return {(r.label, r.config.hash()) for r in plan.notebook_runs("12", profile)
                if r.section == "subsample sweep"}

    real = xo.subsample_sweep_configs("cpu", xo.DEFAULT_FRACTIONS, dataset="movielens-100k")
    expected = {(label, cfg.override(f"train.seed={s}").hash())
                for label, cfg in real.items() for s in profile_seeds("cpu")}
    assert len(expected) == len(xo.DEFAULT_FRACTIONS) * 2 * len(profile_seeds("cpu"))
    assert sweep_runs("cpu") == expected
    assert sweep_runs("smoke") == set()


def _interactions(seqs: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, i, t) for u, items in seqs.items() for t, i in enumerate(items)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # file order is no order


SEQS = {f"u{k}": [f"i{(k * 3 + j) % 25}" for j in range(n)]
        for k, n in enumerate([5, 8, 12, 20, 40, 6, 30, 9])}


def test_recent_subsampling_keeps_each_users_latest_items_and_targets():
    inter = _interactions(SEQS)
    kept, info = xo.subsample_interactions(inter, 0.5, "recent", min_interactions=5)
    assert info["interactions_after"] == len(kept) < len(inter)
    for user, items in SEQS.items():
        mine = kept[kept["user"] == user].sort_values("timestamp")
        n = max(5, math.ceil(0.5 * len(items)))
        assert mine["item"].tolist() == items[-n:]  # a contiguous suffix, in order
    # every user stays, with the same validation and test targets
    assert set(kept["user"]) == set(SEQS)
    full = xo.subsample_interactions(inter, 1.0, "recent")[0]
    assert len(full) == len(inter)


def test_user_subsampling_keeps_whole_sequences():
    inter = _interactions(SEQS)
    kept, info = xo.subsample_interactions(inter, 0.5, "users", seed=3)
    users = set(kept["user"])
    assert len(users) == 4
    for user in users:
        assert sorted(kept.loc[kept["user"] == user, "item"]) == sorted(SEQS[user])
    with pytest.raises(ValueError, match="method"):
        xo.subsample_interactions(inter, 0.5, "random")
    with pytest.raises(ValueError, match="fraction"):
        xo.subsample_interactions(inter, 0.0)


@pytest.mark.parametrize("images", [False, True])
def test_subsample_sweep_on_a_data_set_on_disk(tmp_path, images):
    root = write_sequences(tmp_path / "shop", SEQS, with_images=images)
    configs = xo.subsample_sweep_configs("smoke", (1.0, 0.25, 0.5), dataset="path",
                                         data_path=str(root))
    assert list(configs.points) == ["100% of interactions", "50% of interactions",
                                    "25% of interactions"]
    encoders = {e for _, e in configs}
    assert encoders == set(xo.SWEEP_ENCODERS if images else xo.TEXT_ONLY_ENCODERS)
    assert configs["100% of interactions", "IDSR"].data.path == str(root)  # the data set itself
    stats = xo.point_statistics(configs)
    assert np.all(np.diff(stats["interactions_per_item"].to_numpy()) < 0)
    assert stats["users"].nunique() == 1  # "recent" keeps every user
    # the evaluation targets are the same at every point (the users' last items)
    targets = []
    for point in configs.points:
        data = load_data(configs[point, "IDSR"].resolved().data)
        targets.append(data.item_ids[data.eval_set("test").targets].tolist())
    assert targets[0] == targets[1] == targets[2]
    sub = load_dataset(resolve(configs["25% of interactions", "IDSR"].data.path))
    assert sub.meta["subsample"]["fraction"] == 0.25
    assert (sub.image_path is not None) == images


def test_sweep_table_shows_each_rows_setting_and_where_it_came_from(monkeypatch):
    """A reader of the sweep sees that the ID row of a searched point trained otherwise."""
    monkeypatch.setitem(xo.ID_SETTINGS, "smoke", {4.0: ("train.weight_decay=0.5",)})
    monkeypatch.setitem(xo.ID_SEARCHES, "smoke", {4.0: "weight decay on validation"})
    configs = xo.density_sweep_configs("smoke", (4,), *CHEAP, "train.epochs=1",
                                       encoders=("IDSR",))
    store = ResultsStore()
    results = {key: [run_or_load(cfg, store=store, progress=False)]
               for key, cfg in configs.items()}
    table = xo.sweep_table(store, results, configs, xo.point_statistics(configs))
    row = table.loc["800 items", "IDSR"]
    assert "weight decay 0.5," in row["setting"]
    assert row["searched"] == "weight decay on validation"


# -- warm / cold from the stored ranks -------------------------------------------------------------
def test_warm_cold_split_from_ranks_equals_evaluating_the_subsets():
    configs = xo.density_sweep_configs("smoke", (4,), *CHEAP, "train.epochs=1",
                                       encoders=("IDSR",))
    store = ResultsStore()
    record = run_or_load(configs["800 items", "IDSR"], store=store, progress=False)
    split = xo.split_ranks(store, record)
    model, data = load_trained(record)
    es = data.eval_set("test")
    cold = data.cold_items[es.targets]
    assert 0 < cold.sum() < len(cold)
    assert np.array_equal(split["cold_test"], store.ranks(record.config_hash)["cold_test"])
    for name, rows in (("cold_test", np.flatnonzero(cold)), ("warm_test", np.flatnonzero(~cold))):
        direct = evaluate_model(model, es.subset(rows), (10, 20))
        assert np.array_equal(direct.ranks, split[name])
        assert metrics_from_ranks(split[name], (10, 20)) == direct.metrics
    assert len(split["cold_test"]) + len(split["warm_test"]) == len(split["test"])
    metrics = xo.split_metrics(store, record)
    assert metrics["test"]["HR@10"] == pytest.approx(record.metrics["test"]["HR@10"])


# -- the crossover estimator ------------------------------------------------------------------------
def _points(effect, xs=(5.0, 10.0, 20.0, 40.0, 80.0), seeds=3, users=1500, sd=8.0,
            converged=True):
    rng = np.random.default_rng(1)
    out = []
    for x in xs:
        base = rng.uniform(10, 30, size=users)
        b = base + rng.normal(0, sd, size=(seeds, users))
        a = base + effect(x) + rng.normal(0, sd, size=(seeds, users))
        out.append(xo.PointDiff(f"{x:g}", x, a, b, converged))
    return out


def test_crossover_found_where_the_curves_cross():
    """Content ahead by 3 points per halving of density below 20 per item, behind above it."""
    est = xo.estimate_crossover(_points(lambda x: 3.0 * math.log2(20.0 / x)), n_boot=300)
    signs = [p.sign for p in est.points]
    assert signs[0] == signs[1] == 1 and signs[-1] == signs[-2] == -1
    assert len(est.crossings) == 1
    cr = est.crossings[0]
    assert cr.content_ahead_below and cr.bracket == (10.0, 40.0)
    assert 16 < cr.x < 25 and cr.ci_low < 20 < cr.ci_high and cr.ci_high < 40
    assert cr.share > 0.95
    text = est.sentence()
    assert "MMSR overtakes IDSR as items get sparser at" in text and "No crossover" not in text
    assert set(est.table()["verdict"]) == {"MMSR ahead", "IDSR ahead", "n.s."}


def test_crossover_the_other_way():
    est = xo.estimate_crossover(_points(lambda x: -3.0 * math.log2(20.0 / x)), n_boot=200)
    assert len(est.crossings) == 1 and not est.crossings[0].content_ahead_below
    assert "IDSR overtakes MMSR as items get sparser" in est.sentence()


@pytest.mark.parametrize("effect, verdicts", [
    (lambda x: 2.0, {"MMSR ahead"}),  # content ahead everywhere
    (lambda x: 0.0, {"n.s."}),  # no difference anywhere
    (lambda x: 3.0 if x < 20 else 0.0, {"MMSR ahead", "n.s."}),  # an advantage that vanishes
])
def test_no_crossover_when_the_sign_never_changes_significantly(effect, verdicts):
    est = xo.estimate_crossover(_points(effect), n_boot=100)
    assert est.crossings == []
    assert set(est.table()["verdict"]) == verdicts
    assert "No crossover in the swept range (5.0 to 80.0 interactions per item)" in est.sentence()


def test_no_claim_from_runs_that_did_not_converge():
    est = xo.estimate_crossover(_points(lambda x: 3.0 * math.log2(20.0 / x), converged=False),
                                n_boot=50)
    assert all(p.sign == 0 for p in est.points) and est.crossings == []
    assert set(est.table()["verdict"]) == {"no claim (not converged)"}


def test_a_point_whose_seeds_disagree_carries_no_sign():
    """Content +2 on average at every point, but one of its three seeds is 4 points behind:
    over the users alone each point would read "MMSR ahead"; over seeds and users it does not."""
    pts = _points(lambda x: 2.0)
    for p in pts:
        p.a = p.a + np.array([[4.0], [-6.0], [2.0]])  # seed offsets, mean 0: still +2 overall
    est = xo.estimate_crossover(pts, n_boot=50)
    assert all(p.p_value < 0.05 and p.ci_low > 0 for p in est.points)  # the users' test
    assert all(p.seed_ci_low < 0 < p.seed_ci_high and p.sign == 0 for p in est.points)
    assert set(est.table()["verdict"]) == {"n.s. (seeds disagree)"}
    assert xo.verdict_text(est.points[0]).endswith(", seeds disagree)")


def test_a_point_that_only_stands_alone_carries_no_sign():
    """A sweep's points are one family: content +0.7 at the densest point only (one seed,
    Wilcoxon p = 0.03 there) is a claim alone, but Holm's p over the five points is 0.15, so
    the point carries no sign and its cell says why."""
    pts = _points(lambda x: 0.7 if x == 80.0 else 0.0, seeds=1)
    est = xo.estimate_crossover(pts, n_boot=20)
    last = est.points[-1]
    assert last.p_value < 0.05 and last.ci_low > 0 and last.family == 5
    assert last.p_adjusted == pytest.approx(5 * last.p_value) and last.sign == 0
    assert last.correction_withholds and est.table().loc["80", "verdict"] == "n.s. (Holm)"
    assert xo.verdict_text(last) == "n.s. +0.62 (p = 0.031, Holm 0.15)"
    alone = xo.estimate_crossover(pts[-1:], n_boot=20)  # the same point, a sweep of one
    assert alone.points[0].sign == 1 and alone.points[0].family == 1


def test_crossover_input_errors():
    pts = _points(lambda x: 0.0, xs=(5.0, 10.0))
    with pytest.raises(ValueError, match="same density"):
        xo.estimate_crossover([pts[0], pts[0]])
    bad = xo.PointDiff("bad", 3.0, np.zeros((3, 10)), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="seeds, users"):
        xo.estimate_crossover([bad])


# -- the paper's data sets ----------------------------------------------------------------------------
def test_paper_densities_from_table_i():
    paper = xo.paper_datasets()
    assert list(paper.index) == ["HM", "Kwai", "Bili", "Amazon"]  # densest first
    assert paper.loc["HM", "interactions (derived)"] == round(200_000 * 31.39)
    assert paper.loc["HM", "interactions_per_item"] == pytest.approx(73.84, abs=0.01)
    assert paper.loc["Amazon", "interactions_per_item"] == pytest.approx(11.69, abs=0.01)
    assert paper.loc["HM", "overall IDSR"] == pytest.approx(8.4672)  # Table IV, SASRec
    assert paper.loc["Bili", "cold MMSR-T"] == pytest.approx(1.5493)  # Table VIII
    assert paper.loc["Kwai", "overall MMSR vs IDSR"].startswith("+")


def test_conclusion_places_the_paper_data_sets():
    est = xo.estimate_crossover(_points(lambda x: 3.0 * math.log2(20.0 / x)), n_boot=200)
    lines = xo.conclusion(est)
    assert lines[0] == est.sentence()
    by_name = {name: next(s for s in lines if s.startswith(name)) for name in paper_table1().index}
    assert "sparser than the crossover's interval" in by_name["Amazon"]  # 11.7 per item
    assert "denser than the crossover's interval" in by_name["HM"]  # 73.8 per item
    assert "IDSR ahead" in by_name["HM"] and "MMSR ahead" in by_name["Amazon"]
    assert "density alone does not reproduce" in lines[-1]


def _sweep_frame(points: dict[str, float], encoders: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for i, (point, per_item) in enumerate(points.items()):
        for j, enc in enumerate(encoders):
            row = {"point": point, "encoder": enc, "interactions_per_item": per_item}
            for split in xo.SPLITS:
                row[f"{split} HR@10"] = 10.0 + i + j
                row[f"{split} HR@10 std"] = 0.5
            rows.append(row)
    return pd.DataFrame(rows).set_index(["point", "encoder"])


def test_crossover_figure_draws_a_reference_sweep_as_one_line_per_encoder():
    """A real data set's sweep (MovieLens-100K) is drawn as one dashed line per encoder in
    density order with one legend entry each, not one entry per point (which buried the plot)."""
    import matplotlib.pyplot as plt

    table = _sweep_frame({"a": 40.0, "b": 20.0, "c": 10.0}, xo.SWEEP_ENCODERS)
    reference = _sweep_frame({"100%": 60.0, "25%": 15.0, "50%": 30.0}, ("IDSR", "MMSR-T"))
    fig = xo.plot_crossover(table, None, "HR@10", reference=reference)
    overall = fig.axes[0]
    labels = overall.get_legend_handles_labels()[1]
    assert labels == [*xo.SWEEP_ENCODERS, "IDSR, MovieLens-100K", "MMSR-T, MovieLens-100K"]
    lines = {ln.get_label(): ln for ln in overall.get_lines()}
    ref = lines["MMSR-T, MovieLens-100K"]
    assert list(ref.get_xdata()) == [15.0, 30.0, 60.0]  # sorted by density, all three points
    # value = 10 + point's row + encoder's column (MMSR-T is 1): 25% row 1, 50% row 2, 100% row 0
    assert list(ref.get_ydata()) == [12.0, 13.0, 11.0]
    assert ref.get_linestyle() == "--"
    for ax in fig.axes[1:]:  # the reference is drawn in every panel, labelled once
        assert sum(len(ln.get_xdata()) == 3 and ln.get_linestyle() == "--"
                   for ln in ax.get_lines()) == 2
    plt.close(fig)


# -- the tables as the docs show them ---------------------------------------------------------------
@pytest.mark.parametrize("p, text", [(2.1e-5, "2e-5"), (6.8e-3, "0.0068"), (0.123, "0.12"),
                                     (9.6e-4, "1e-3"), (1.0, "1")])
def test_p_values_are_written_as_the_docs_write_them(p, text):
    assert xo.p_text(p) == text


def _two_point_sweep() -> tuple[pd.DataFrame, xo.CrossoverEstimate]:
    """Points a (40 per item, content behind) and b (20, content ahead), 1,500 users a split."""
    table = _sweep_frame({"a": 40.0, "b": 20.0}, xo.SWEEP_ENCODERS)
    for split in xo.SPLITS:
        table[f"{split} users"] = 1500
    ahead, behind = _points(lambda x: 3.0, xs=(20.0,)), _points(lambda x: -3.0, xs=(40.0,))
    ahead[0].label, behind[0].label = "b", "a"
    return table, xo.estimate_crossover([*behind, *ahead], n_boot=50)


def test_sweep_markdown_marks_the_best_mean_and_says_each_verdict():
    """Cells are mean ± std with bold best / underlined second among the encoders of a row; each
    estimate adds its verdict (ahead / behind / n.s. / no claim) at the points it tested."""
    table, est = _two_point_sweep()
    stale = xo.estimate_crossover(_points(lambda x: 3.0, xs=(20.0,), converged=False),
                                  content="MMSR-T", n_boot=50)
    stale.points[0].label = "b"
    lines = xo.sweep_markdown(table, [est, stale], metric="HR@10").splitlines()
    assert lines[0].startswith("| point | per item | users | IDSR | MMSR-T | MMSR-V | MMSR |")
    assert lines[0].endswith("| MMSR vs IDSR | MMSR-T vs IDSR |")
    row_a = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row_a[:7] == ["a", "40.0", "1500", "10.00 ± 0.50", "11.00 ± 0.50",
                         "<u>12.00 ± 0.50</u>", "**13.00 ± 0.50**"]
    assert row_a[7].startswith("behind -") and "(p = " in row_a[7] and row_a[8] == "-"
    row_b = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row_b[7].startswith("ahead +")
    assert row_b[8].startswith("no claim (not converged; +")
    both = xo.sweep_markdown(table, [est], ("cold", "warm"), "HR@10").splitlines()
    assert both[0].startswith("| point | split | users |") and len(both) == 2 + 4
    with pytest.raises(ValueError, match="unknown split"):
        xo.sweep_markdown(table, [est], ("hot",), "HR@10")


def test_notebook_table_and_docs_table_write_the_same_verdicts():
    """`sweep_report` (the notebook's table) and `sweep_markdown` (the docs') word each point's
    verdict alike; the paper's rows carry their untested relative gap instead."""
    table, est = _two_point_sweep()
    report = xo.sweep_report(table, est, "overall", "HR@10")
    lines = xo.sweep_markdown(table, [est], metric="HR@10").splitlines()[2:]
    docs = [line.strip("|").split("|")[-1].strip() for line in lines]
    assert report.loc[["ours a", "ours b"], "MMSR vs IDSR"].tolist() == docs
    assert docs[0].startswith("behind -") and docs[1].startswith("ahead +")
    assert report.loc["paper HM", "MMSR vs IDSR"].endswith("(one run, untested)")
