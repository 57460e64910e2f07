"""Every notebook runs headlessly in the smoke profile and records what it computed."""

from __future__ import annotations

import math

import pytest

from mmsr_lib.workbook.notebooks import notebook_paths, run_notebook, strip_outputs

NOTEBOOKS = notebook_paths()


def _check_percent(value: float) -> None:
    assert not math.isnan(value) and 0.0 <= value <= 100.0


# what each notebook must have recorded, checked after a smoke run
CHECKS = {
    "00_quickstart": lambda r: (
        r["n_users"] == 300,
        _check_percent(r["idsr_hr10"]),
        _check_percent(r["mmsr_hr10"]),
        _check_percent(r["mostpop_hr10"]),
        0.0 < r["cold_item_share"] < 1.0,
        r["cold_columns"] == ["cold HR@10", "cold NDCG@10"],
        r["n_sentences"] == 7,  # 3 content rows x (all, cold) + IDSR vs MostPop
        r["table1_rows"] == 5,  # our catalog next to the paper's four data sets
    ),
    "01_item_encoders": lambda r: (
        r["n_rows"] == 11,
        _check_percent(r["best_hr10"]),
        r["n_claims"] == 6,  # every paired claim computed
        "scratch_rows" not in r,  # the from-scratch section runs only when asked
    ),
    "02_fusion": lambda r: (
        r["n_rows"] == 12,
        _check_percent(r["best_hr10"]),
        set(r["group_means"]) == {"Coarse", "Coarse+", "Attention"},
        # the explorer's default choice is Table III's MergeAttn-1 row: loaded, not retrained
        r["explorer_hr10"] == r["table_mergeattn1_hr10"],
        r["n_claims"] == 7,
        # ours beside the table: the four Coarse+ rows with a residual DNN, each tested against
        # its plain-DNN row and its bare coarse row
        set(r["residual_dnn_hr10"]) == {"Gate", "FiLM", "Summation", "Concatenation"},
        r["n_residual_claims"] == 8,
        # the authors' code's gate and FiLM, each tested against our Coarse row
        set(r["authors_code_hr10"]) == {"Gate", "FiLM"},
        r["n_authors_claims"] == 2,
    ),
    "03_sr_architectures": lambda r: (
        r["n_rows"] == 12,
        len(r["improvements"]) == 3,
        r["cold_rows"] == 3,
        "movielens_rows" not in r and "scratch_rows" not in r,  # skipped on smoke, visibly
    ),
    "04_overall_comparison": lambda r: (
        r["n_rows"] == 8,  # the paper's eight models
        len(r["improv"]) == 6,  # HR and NDCG @10/20/50
        all(c == "not converged" or c.startswith(("+", "-", "n.s.")) for c in r["improv"]),
        set(r["best_baselines"]) <= {"GRU4Rec", "NextItNet", "SASRec", "FDSA", "CARCA++",
                                     "VQRec", "MoRec++"},
        _check_percent(r["mmsr_hr10"]),
        r["paper_blocks"] == ["paper Amazon", "paper Bili", "paper HM", "paper Kwai"],
        r["n_sentences"] == 11,  # 6 Improv. verdicts + 5 claims
        r["carca_head_rows"] == 2 and r["carca_head_claims"] == 1,  # our head ablation
        r["figure"].endswith("04_overall_comparison_smoke.png"),
        "movielens_rows" not in r,  # skipped on smoke, visibly
    ),
    "05_vlp_architectures": lambda r: (
        r["n_rows"] == 6,  # five VLPs + MMSR (MMSR from scratch is a cpu row)
        r["vlp_rows"] == ["CLIP", "GroupViT", "ViLT", "VisualBERT", "FLAVA"],
        r["best_vlp"] in r["vlp_rows"],
        r["epochs_per_row"] == 1,  # smoke's visible reduction
        r["n_claims"] == 10,  # 7 model pairs + 3 paradigm pairs
        r["figure"].endswith("05_vlp_architectures_smoke.png"),
    ),
    "06_vision_representations": lambda r: (
        r["n_rows"] == 5,  # IDSR + four visual inputs
        r["visual_inputs"] == ["Region", "Grid", "Patch-Emb", "Patch-ViT"],
        r["best_input"] in r["visual_inputs"],
        r["epochs_per_row"] == 1,
        r["n_claims"] == 8,  # 4 vs IDSR, 3 vs Patch-ViT, Grid vs Region
        r["figure"].endswith("06_vision_representations_smoke.png"),
    ),
    "07_cold_start": lambda r: (
        r["reproduced"] is True,  # the reloaded model gives its stored cold_test metrics
        r["n_rows"] == 12,  # 3 architectures x 2 protocols x (HR@10, NDCG@10)
        r["paper_rows"] == 8,  # the paper's Table VIII: 4 data sets x 2 metrics
        0.5 < r["paper_leak_share"] < 1.0,  # most paper sub-sequences are training pairs
        all(v == 0.0 for k, v in r["leak_percent"].items() if "target" in k),
        len(r["leak_percent"]) == 6,
        len(r["verdicts"]) == 3,
        r["figure"].endswith("07_cold_start_smoke.png"),
    ),
    "08_transfer": lambda r: (
        r["n_sources"] == 4,  # Table IX's three sources and Table X's
        r["warm_starts_ok"] is True,  # transfer rows name a trained source; IDSR never
        r["table9_rows"] == 5 and r["table10_rows"] == 9,
        set(r["improv9"]) == {"HR@10", "NDCG@10"} and len(r["improv10"]) == 6,
        all(v.startswith(("+", "-", "n.s. (p=")) or v == "not converged"
            for v in [*r["improv9"].values(), *r["improv10"]]),
        r["best_transfer9"].startswith("Transfer HM-"),
        _check_percent(r["scratch9_ndcg10"]),
        r["figure_panels"] == 2,
        r["idsr_budget_ratio"] == 2.0,  # IDSR gets twice the MMSR epochs, as in the paper
    ),
    "09_bag_of_tricks": lambda r: (
        (r["table11_rows"], r["table12_rows"], r["table13_rows"], r["table14_rows"]) == (
            9, 5, 10, 8),
        r["distinct_runs"] == 27,  # the default setting is one run shared by the four tables
        r["costs_measured"] is True and r["memory_from"] == ["run"],
        r["cost_sentences11"] == 4,  # full vs top, per encoder
        r["lr_scale"] == 10.0,
        r["truncated_share"][0] > r["truncated_share"][-1] == 0.0,  # 5 tokens cut, 50 do not
    ),
    "10_visualization": lambda r: (
        0 < r["n_cold_items"] < r["n_items"],
        len(r["item_purity"]) == 6 and all(0.0 <= v <= 1.0 for v in r["item_purity"].values()),
        len(r["user_purity"]) == 4 and all(0.0 <= v <= 1.0 for v in r["user_purity"].values()),
        len(r["item_sentences"]) == 2 and len(r["user_sentences"]) == 2,
        r["items_shown"] <= 300 and r["users_shown"] <= 300,  # t-SNE kept small on smoke
        r["items_figure"].endswith("10_visualization_items_smoke.png"),
        r["users_figure"].endswith("10_visualization_users_smoke.png"),
    ),
    "11_protocol": lambda r: (
        r["n_models"] == 5,
        r["reload_matches"] is True,  # reloaded best states reproduce the stored test ranks
        set(r["q1_tau"]) == {"uniform-100", "popularity-100"},
        all(-1.0 <= t <= 1.0 for t in r["q1_tau"].values()),
        r["q2_tie_share"]["MostPop"] > 0 and r["q2_moves"]["MostPop"] > 0,  # MostPop ties
        set(r["q3_share_last"]) == {"synthetic"},  # MovieLens skipped on smoke, visibly
        0.0 < r["q3_share_last"]["synthetic"] <= 100.0,
        r["q3_rows"] == {"synthetic": 4},
        0.0 <= r["q4_share_trained_pairs"] <= 100.0,
        r["q5_reported_equals_history"] is True,
        all(b >= 0.0 for b in r["q5_bias"].values()),
        "RecBole" in r["q6_check"],  # smoke: says how to run the check, trains nothing
    ),
    "12_ids_vs_content": lambda r: (
        r["n_points"] == 2,
        r["n_rows"] == 8,  # 2 points x (IDSR, MMSR-T, MMSR-V, MMSR), one seed
        r["per_item"][0] > r["per_item"][1],  # the second catalog is sparser
        r["warm_plus_cold_is_all"] is True,
        r["crossover_splits"] == ["overall", "cold", "warm"],
        len(r["conclusion"]) == 6,  # crossover + the paper's four data sets + the main claim
        all(isinstance(s, str) and s for s in r["conclusion"]),
        "movielens_rows" not in r,  # skipped on smoke, visibly
        r["crossover_figure"].endswith("12_ids_vs_content_crossover_smoke.png"),
        r["convergence_figure"].endswith("12_ids_vs_content_convergence_smoke.png"),
        r["markdown_tables"] == 4,  # (overall, cold + warm) x (HR@10, NDCG@10)
    ),
}


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke(path, tmp_path, monkeypatch):
    records = run_notebook(path, profile="smoke", output_dir=tmp_path)
    assert records, f"{path.name} recorded nothing"
    check = CHECKS.get(path.stem)
    assert check is not None, f"add a check for {path.stem} to CHECKS"
    assert all(x in (True, None) for x in check(records))
    _plan_lists_what_the_notebook_trained(path.stem)
    if path.stem in FROM_WEIGHTS:
        _draws_again_without_the_weights(path, tmp_path, records, monkeypatch)


# notebooks that read more than the stored ranks: re-evaluations and vectors of the trained
# models (`runs.derived` keeps them with each run)
FROM_WEIGHTS = ("07_cold_start", "10_visualization", "11_protocol")


def _draws_again_without_the_weights(path, tmp_path, records, monkeypatch) -> None:
    """`make figures` on a machine without the runs' checkpoints (a fresh clone with the
    archive imported, a lost VM): the notebook draws from the store alone, the same numbers."""
    from mmsr_lib.runs.runner import LOAD_ONLY_ENV
    from mmsr_lib.util.paths import resolve

    checkpoints = list(resolve("runs").rglob("checkpoint.pt"))
    assert checkpoints
    for ck in checkpoints:
        ck.unlink()
    monkeypatch.setenv(LOAD_ONLY_ENV, "1")
    again = run_notebook(path, profile="smoke", output_dir=tmp_path / "again")
    assert again == records


def _plan_lists_what_the_notebook_trained(stem: str) -> None:
    """`mmsr plan --notebook NN` prices the runs it lists; they must be the runs the notebook
    trains (the plan's sections restate each notebook's grids and could drift from them)."""
    from mmsr_lib import plan
    from mmsr_lib.runs.store import ResultsStore

    key = stem.split("_")[0]
    if key not in plan.NOTEBOOK_GRIDS:
        return
    stored = {r.config_hash: r.name for r in ResultsStore().records()}
    planned = {p.config.resolved().hash(): f"{p.section}: {p.label}"
               for p in plan.notebook_runs(key, "smoke")}
    assert {h: planned[h] for h in planned.keys() - stored.keys()} == {}, "planned, not trained"
    assert {h: stored[h] for h in stored.keys() - planned.keys()} == {}, "trained, not planned"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_clean(path, tmp_path):
    """Committed notebooks carry no outputs and start with a `parameters` cell holding profile."""
    import nbformat

    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    assert not strip_outputs(copy), f"{path.name} has outputs; run python -m mmsr_lib.workbook.notebooks strip"
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert "parameters" in first.metadata.get("tags", []) and "profile" in first.source
    assert 'os.environ.get("MMSR_PROFILE"' in first.source
    # papermill injects its parameters in a cell *after* this one: a default computed from
    # another parameter (`x = profile == "cpu"`) would keep the un-injected value
    import ast

    for node in ast.parse(first.source).body:
        if isinstance(node, ast.Assign) and not (
                isinstance(node.value, ast.Constant | ast.Tuple | ast.List)
                or "os.environ.get" in ast.unparse(node.value)):
            raise AssertionError(f"{path.name}: parameter {ast.unparse(node.targets[0])} is "
                                 f"computed ({ast.unparse(node.value)}); make it a literal")


def test_batch_runner_reports_and_skips_what_is_done(tmp_path, capsys, monkeypatch):
    """`make notebooks`: status and time per notebook; a done notebook (same source,
    parameters and library code) is skipped; --force runs it again."""
    from mmsr_lib.workbook import notebooks

    ran: list[str] = []
    monkeypatch.setattr(notebooks, "run_notebook",
                        lambda nb, profile, out, params: ran.append(nb.stem) or {})
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path) == 0
    assert "00_quickstart.ipynb: ok in" in capsys.readouterr().out
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path) == 0
    assert "skipped" in capsys.readouterr().out and ran == ["00_quickstart"]
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path, {"data_path": "x"}) == 0
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path, force=True) == 0
    assert ran == ["00_quickstart"] * 3
    # the library computes the notebook's tables: a change of its code runs the notebook again
    monkeypatch.setattr(notebooks, "library_fingerprint", lambda: "other code")
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path) == 0
    assert ran == ["00_quickstart"] * 4
    # a cell that raises: its exception in one line, and where the traceback is (papermill's
    # own text starts with a blank line, which printed nothing after "FAILED")
    from papermill.exceptions import PapermillExecutionError

    def fails(nb, profile, out, params):
        raise PapermillExecutionError(3, 7, "x", "FileNotFoundError",
                                      "run t [ab12]: no stored vectors\nmore", ["tb"])

    monkeypatch.setattr(notebooks, "run_notebook", fails)
    assert notebooks.run_batch(["00_quick"], "smoke", tmp_path, force=True) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("00_quickstart.ipynb: FAILED after ")
    assert line.endswith("FileNotFoundError: run t [ab12]: no stored vectors (cell [7]; the "
                         f"traceback is in {tmp_path / '00_quickstart.smoke.ipynb'})")


def test_runner_passes_notebook_parameters(tmp_path, monkeypatch):
    """`-p NAME VALUE` reaches the notebook as papermill's -p does: literals parsed, other text
    kept as a string, so `-p include_movielens False` switches a section off."""
    from mmsr_lib.workbook import notebooks

    seen: list[dict] = []
    monkeypatch.setattr(notebooks, "run_notebook",
                        lambda nb, profile, out, params: seen.append(params) or {})
    assert notebooks.main(["run", "00_quick", "--profile", "smoke", "--out", str(tmp_path),
                           "-p", "include_movielens", "False", "-p", "seeds", "(42, 43)",
                           "-p", "paper_dataset", "HM"]) == 0
    assert seen == [{"include_movielens": False, "seeds": [42, 43], "paper_dataset": "HM"}]
