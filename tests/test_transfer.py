"""Notebook 08's transfer grids (Tables IX, X), their Improv. column, Figure 3 and the CLI's
--init-from."""

from __future__ import annotations

import numpy as np
import pytest

from mmsr_lib.cli import main
from mmsr_lib.config import PROFILES, profile_seeds
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.workbook import transfer
from mmsr_lib.workbook.paper_numbers import paper_wide
from mmsr_lib.workbook.significance import per_user

FAKE = {"HM-100K": "a" * 16, "HM-200K": "b" * 16, "HM-500K": "c" * 16}


@pytest.mark.parametrize("profile", PROFILES)
def test_table9_rows_are_the_papers_and_only_transfer_rows_name_their_source(profile):
    grid = transfer.table9_configs(profile, FAKE)
    paper = paper_wide("IX")
    assert list(grid) == list(zip(paper["group"], paper["row"], strict=True))
    target = transfer.catalogs(profile)["IX"]["target"]
    for (_group, row), cfg in grid.items():
        r = cfg.resolved()
        for setting in target.settings:  # every row trains on the target catalog
            key, value = setting.split("=")
            section, *rest = key.split(".")
            obj = getattr(r, section)
            for part in rest[:-1]:
                obj = getattr(obj, part)
            assert str(getattr(obj, rest[-1])) == value, (row, setting)
        if row.startswith("Transfer"):
            assert r.train.init_from == FAKE[row.removeprefix("Transfer ")]
            assert r.model.item_encoder == "mm"
        else:
            assert r.train.init_from is None
    idsr = grid["IDSR", "IDSR"].resolved()
    scratch = grid["MMSR", "Scratch"].resolved()
    assert idsr.model.item_encoder == "id" and idsr.train.init_from is None
    assert idsr.train.epochs == transfer.IDSR_BUDGET_FACTOR * scratch.train.epochs
    assert (scratch.model.fusion, scratch.model.fusion_layers, scratch.model.sequence) == (
        *transfer.MMSR_FUSION[profile], "sasrec")
    assert scratch.model.fusion == ("gate" if profile == "cpu" else "merge_attn")
    # a transfer row is the scratch row plus its warm start, nothing else
    warm = grid["MMSR", "Transfer HM-500K"].resolved()
    assert warm.override(train__init_from=None).hash() == scratch.hash()
    # the target rows depend on the source run's hash; scratch and IDSR do not
    other = transfer.table9_configs(profile, {**FAKE, "HM-500K": "d" * 16})
    for key, cfg in grid.items():
        same = cfg.hash() == other[key].hash()
        assert same == (key != ("MMSR", "Transfer HM-500K")), key


@pytest.mark.parametrize("profile", PROFILES)
def test_table10_rows_per_target_and_idsr_never_warm_starts(profile):
    grid = transfer.table10_configs(profile, "e" * 16)
    paper = paper_wide("X")
    assert list(grid) == list(zip(paper["dataset"], paper["row"], strict=True))
    assert grid.levels == ("target", "row")
    for (_target, row), cfg in grid.items():
        r = cfg.resolved()
        assert r.train.init_from == ("e" * 16 if row == "Transfer" else None)
        assert r.model.item_encoder == ("id" if row == "ID" else "mm")
    hashes = {cfg.hash() for cfg in grid.values()}
    assert len(hashes) == len(grid)  # three catalogs x three rows, all distinct
    with pytest.raises(TypeError, match="a RunRecord, a RunConfig or a run hash"):
        transfer.table10_configs(profile, "")


def test_sources_use_the_first_seed_and_tables_ix_x_use_two_catalog_pairs():
    for profile in PROFILES:
        sources = transfer.source_configs(profile)
        assert list(sources) == ["HM-100K", "HM-200K", "HM-500K", "Kwai-200K"]
        assert {c.resolved().train.seed for c in sources.values()} == {profile_seeds(profile)[0]}
        assert len({c.hash() for c in sources.values()}) == 4
    cpu = transfer.source_configs("cpu")
    users = [c.resolved().data.synth.n_users for c in cpu.values()]
    assert users[:3] == sorted(users[:3]) and users[0] < users[2]
    assert {c.resolved().data.synth.domain for c in cpu.values()} == {"source"}
    assert cpu["Kwai-200K"].resolved().data.synth.seed != cpu["HM-200K"].resolved().data.synth.seed
    paper = transfer.source_configs("paper")["HM-500K"].resolved().data
    assert (paper.source, paper.path) == ("path", "data/hm-500k")
    moved = transfer.table10_configs("paper", "e" * 16, root="/d")["Bili-50K", "ID"]
    assert moved.resolved().data.path == "/d/bili-50k"
    with pytest.raises(KeyError, match="HM-100K"):
        transfer.table9_configs("cpu", {"HM-500K": "c" * 16})


# -- the Improv. column on stored fake records -----------------------------------------------------
def _store_row(store, cfg, seeds, test_ranks, valid_ndcg, converged=True):
    """Store one fake run per seed with the given per-user test ranks."""
    runs = []
    for seed, ranks in zip(seeds, test_ranks, strict=True):
        c = cfg.override(f"train.seed={seed}")
        metrics = {"test": {m: float(np.mean(per_user(ranks, m))) for m in transfer.METRICS},
                   "valid": {"HR@10": valid_ndcg, "NDCG@10": valid_ndcg}}
        runs.append(store.finish(c, {
            "metrics": metrics, "history": [{"epoch": 1, "loss": 1.0, "valid": metrics["valid"]}],
            "ranks": {"test": np.asarray(ranks)},
            "extra": {"epochs_run": 10, "best_epoch": 4 if converged else 10,
                      "converged": converged}}))
    return runs


@pytest.fixture
def fake_table9(tmp_path):
    store = ResultsStore(tmp_path / "fake.sqlite")
    grid = transfer.table9_configs("smoke", FAKE)
    rng = np.random.default_rng(0)
    n = 400
    poor = [rng.integers(5, 60, n) for _ in range(2)]  # mostly outside the top 10
    good = [np.where(rng.random(n) < 0.6, rng.integers(0, 3, n), r) for r in poor]
    results = {
        ("IDSR", "IDSR"): _store_row(store, grid["IDSR", "IDSR"], (1, 2), poor, 1.0),
        ("MMSR", "Scratch"): _store_row(store, grid["MMSR", "Scratch"], (1, 2), poor, 2.0),
        # best on the test split, but not on validation
        ("MMSR", "Transfer HM-100K"): _store_row(store, grid["MMSR", "Transfer HM-100K"],
                                                  (1, 2), good, 3.0),
        # same users, same ranks as Scratch: no difference
        ("MMSR", "Transfer HM-200K"): _store_row(store, grid["MMSR", "Transfer HM-200K"],
                                                  (1, 2), poor, 5.0),
        ("MMSR", "Transfer HM-500K"): _store_row(store, grid["MMSR", "Transfer HM-500K"],
                                                  (1, 2), good, 4.0, converged=False),
    }
    return store, grid, results


def test_improv_is_significant_only_for_converged_rows_with_a_paired_difference(fake_table9):
    store, grid, results = fake_table9
    scratch = ("MMSR", "Scratch")
    win = transfer.improvement(store, results, ("MMSR", "Transfer HM-100K"), scratch)
    assert win["NDCG@10"].startswith("+") and "%" in win["NDCG@10"] and "p=" in win["NDCG@10"]
    same = transfer.improvement(store, results, ("MMSR", "Transfer HM-200K"), scratch)
    assert all(v.startswith("n.s.") for v in same.values())
    late = transfer.improvement(store, results, ("MMSR", "Transfer HM-500K"), scratch)
    assert set(late.values()) == {"not converged"}


def test_table9_picks_the_best_transfer_on_validation_not_test(fake_table9):
    store, grid, results = fake_table9
    transfers = [k for k in grid if k[1].startswith("Transfer")]
    assert transfer.best_transfer(results, transfers) == ("MMSR", "Transfer HM-200K")
    wide = transfer.table9_wide(store, results, grid)
    assert list(wide.index) == ["HR@10", "NDCG@10"]
    assert list(wide.columns[:5]) == ["IDSR", "Scratch", "Transfer HM-100K",
                                      "Transfer HM-200K", "Transfer HM-500K"]
    assert set(wide["best transfer"]) == {"Transfer HM-200K"}
    assert all(v.startswith("n.s.") for v in wide["Improv."])
    assert wide.loc["NDCG@10", "Transfer HM-100K"] > wide.loc["NDCG@10", "Scratch"]
    side = transfer.side_by_side(wide, transfer.paper_table9())
    assert list(side.index) == [("HR@10", "ours"), ("HR@10", "paper"), ("NDCG@10", "ours"),
                                ("NDCG@10", "paper")]
    assert side.loc[("HR@10", "paper"), "Transfer HM-500K"] == 26.49
    assert side.loc[("NDCG@10", "paper"), "Improv."] == "+6.83%"
    assert transfer.value_columns(side) == list(wide.columns[:5])
    sentences = transfer.transfer_verdicts(store, results, transfer.table9_pairs(grid))
    assert any("Transfer HM-100K beats Scratch" in s for s in sentences)
    assert any(s.startswith("Transfer HM-200K vs Scratch: no significant difference")
               for s in sentences)
    assert any("no claim, Transfer HM-500K did not converge" in s for s in sentences)


def test_paper_table10_layout_and_printed_improvements():
    paper = transfer.paper_table10()
    assert list(paper.columns) == ["ID", "Scratch", "Transfer", "Improv."]
    assert paper.loc[("Bili-20K", "NDCG@10"), "Improv."] == "-5.03%"
    assert paper.loc[("Bili-10K", "HR@10"), "Transfer"] == 1.56


# -- Figure 3 --------------------------------------------------------------------------------------
def test_convergence_figure_has_integer_ticks_and_the_legend_outside(fake_table9):
    _, _, results = fake_table9
    for runs in results.values():
        for rec in runs:
            rec.history = [{"epoch": e, "loss": 1.0, "valid": {"NDCG@10": float(e)}}
                           for e in range(1, 6)]
    panels = transfer.figure3_panels("smoke", results, {})
    assert list(panels) == ["HM-500K -> Amazon-10K", "Kwai-200K -> Bili-10K"]
    assert [len(v) for v in panels["HM-500K -> Amazon-10K"].values()] == [2, 2, 2]
    fig = transfer.plot_convergence(panels)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    legend = fig.legends[0].get_window_extent()
    assert all(legend.x0 >= a.get_window_extent().x1 for a in fig.axes)
    summary = transfer.convergence_summary(panels)
    assert summary.loc[("HM-500K -> Amazon-10K", "IDSR"), "epochs to 95% of best"] == 5.0


# -- the command line ------------------------------------------------------------------------------
def test_cli_init_from_sets_the_warm_start(capsys, tmp_path):
    small = ["--profile", "smoke", "--set", "model.dim=16", "--set", "train.epochs=1",
             "--set", "data.synth.n_users=40", "--set", "data.synth.n_items=30",
             "--set", "model.item_encoder=text"]
    assert main(["train", *small, "--show-config"]) == 0
    source = capsys.readouterr().out.split("run hash: ")[1].strip()
    assert main(["train", *small]) == 0
    capsys.readouterr()
    target = [*small, "--set", "data.synth.domain=target", "--init-from", source]
    assert main(["train", *target, "--show-config"]) == 0
    out = capsys.readouterr().out
    assert f'"init_from": "{source}"' in out
    same = [*small, "--set", "data.synth.domain=target", "--set", f"train.init_from={source}"]
    assert main(["train", *same, "--show-config"]) == 0
    assert capsys.readouterr().out.split("run hash: ")[1] == out.split("run hash: ")[1]
    assert main(["train", *target]) == 0
    assert "status done" in capsys.readouterr().out
    assert main(["train", *small, "--set", "data.synth.domain=target", "--init-from",
                 "0123456789abcdef"]) == 2
    assert "neither a checkpoint file nor a run hash" in capsys.readouterr().err


# -- a source stored without its weights (imported results) ---------------------------------------
def test_a_source_stored_without_its_checkpoint_is_named_with_how_to_retrain_it(tmp_path):
    """`mmsr results import docs/runs` brings results, not weights: a source run is then stored
    but cannot warm-start anything. Notebook 08 (`transfer_grids`) and `mmsr grid 08 --train`
    (`plan.train_notebook`) stop before training, name the source and give its command with
    --force, instead of failing at the warm start with "train the source run first"."""
    from mmsr_lib.plan import train_notebook
    from mmsr_lib.runs.fingerprint import code_fingerprint
    from mmsr_lib.runs.runner import current_data_fingerprint

    store = ResultsStore(tmp_path / "r.sqlite")
    over = (f"train.checkpoint_dir={tmp_path / 'runs'}",)
    sources = transfer.source_configs("smoke", *over)
    for cfg in sources.values():
        store.finish(cfg, {"metrics": {"test": {"NDCG@10": 1.0}},
                           "dataset_fingerprint": current_data_fingerprint(cfg),
                           "extra": {"epochs_run": 3, "best_epoch": 2, "converged": True}},
                     code_fingerprint=code_fingerprint(cfg))
    assert set(transfer.missing_source_checkpoints(
        [c for g in (transfer.table9_configs("smoke", {k: r.hash() for k, r in sources.items()},
                                             *over),) for c in g.values()], store)) == {
        sources[label].hash() for label in ("HM-100K", "HM-200K", "HM-500K")}
    with pytest.raises(FileNotFoundError, match=r"(?s)source run tr-source-HM-100K \[\w+\] is "
                       r"stored .*checkpoint is not on this machine.*--force"):
        transfer.transfer_grids("smoke", *over, store=store, progress=False)
    with pytest.raises(FileNotFoundError,
                       match=r"mmsr train --profile smoke --set name=tr-source-\S+ .*--force`"):
        train_notebook("08", "smoke", *over, store=store, only="Transfer", progress=False)
    assert len(store.records()) == len(sources)  # nothing trained
