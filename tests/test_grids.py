"""The configuration grids of notebooks 01-03 (Tables II-IV) and their tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mmsr_lib.config import PROFILES, RunConfig, profile_config
from mmsr_lib.fusion import parse_fusion_name
from mmsr_lib.runs.runner import run_grid
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.comparisons import table5_configs
from mmsr_lib.workbook.paper_numbers import paper_wide

BUILDERS = {
    "II": grids.table2_configs,
    "III": grids.table3_configs,
    "IV": grids.table4_configs,
}


def all_grids() -> list[tuple[str, str, grids.Grid]]:
    out = []
    for profile in PROFILES:
        for table, build in BUILDERS.items():
            out.append((profile, table, build(profile)))
        out.append((profile, "IV-ml", grids.table4_configs(profile, dataset="movielens-100k")))
        for table, build in BUILDERS.items():
            out.append((profile, f"{table}-scratch", build(profile, from_scratch=True)))
    return out


def test_table2_rows_match_the_paper_and_use_the_profile_encoders() -> None:
    grid = grids.table2_configs("cpu")
    paper = paper_wide("II", "HM")
    assert list(grid) == list(zip(paper["group"], paper["row"], strict=True))
    assert grid.levels == ("group", "row") and grid.table == "II"
    # cpu: the pretrained stand-ins, frozen, labelled so on every row
    assert grid["MMSR-T", "ELECTRA"].model.item_encoder == "text"
    assert grid["MMSR-T", "ELECTRA"].model.text_encoder == "mpnet-base"
    assert grid["MMSR-V", "Swin"].model.vision_encoder == "efficientnet-lite2"
    ro_resnet = grid["MMSR", "Ro.+ResNet"].model
    assert (ro_resnet.item_encoder, ro_resnet.text_encoder, ro_resnet.vision_encoder) == (
        "mm", "minilm-l6", "efficientnet-lite0")
    assert grids.describe_encoders(grid["MMSR", "Ro.+ResNet"]) == (
        "minilm-l6 (pretrained, frozen) + efficientnet-lite0 (pretrained, frozen), merge_attn-1")
    for cfg in grid.values():
        assert cfg.model.sequence == "sasrec" and cfg.resolved().model.finetune == "frozen"
        assert (cfg.model.fusion, cfg.model.fusion_layers) == ("merge_attn", 1)
    # the from-scratch section: the paper's architectures at random init, top blocks tuned
    scratch = grids.table2_configs("cpu", from_scratch=True)
    ele_mae = scratch["MMSR", "ELE.+MAE"].resolved().model
    assert (ele_mae.text_encoder, ele_mae.vision_encoder) == ("tiny-electra", "tiny-mae")
    assert (ele_mae.finetune, ele_mae.text_pooling) == ("top", "cls")
    assert "random init, top blocks tuned" in grids.describe_encoders(scratch["MMSR", "ELE.+MAE"])
    assert scratch["MMSR", "ELE.+MAE"].hash() != grid["MMSR", "ELE.+MAE"].hash()
    paper = grids.table2_configs("paper")
    assert paper["MMSR", "BERT+MAE"].model.text_encoder == "bert-base-uncased"
    assert paper["MMSR", "BERT+MAE"].model.vision_encoder == "mae-base"
    assert paper["MMSR-T", "ELECTRA"].model.text_encoder == "google/electra-base-discriminator"
    assert paper["MMSR-V", "Swin"].model.vision_encoder == "swin-base"
    assert paper["MMSR-V", "ResNet"].model.vision_encoder == "resnet50"


def test_table3_rows_match_the_paper_and_set_each_fusion() -> None:
    grid = grids.table3_configs("smoke")
    paper = paper_wide("III", "Bili")
    assert list(grid) == list(zip(paper["group"], paper["row"], strict=True))
    for (group, row), cfg in grid.items():
        m = cfg.model
        assert (m.item_encoder, m.text_encoder, m.vision_encoder) == (
            "mm", "tiny-roberta", "tiny-mae")
        canonical, _ = parse_fusion_name(m.fusion)  # a fusion name the library accepts
        assert canonical == m.fusion
        assert m.fusion.endswith("+dnn") == (group == "Coarse+")
        if group == "Attention":
            depth = int(row.rsplit("-", 1)[1])
            assert m.fusion_layers == depth
    assert {cfg.model.fusion for cfg in grid.values()} == {
        "gate", "film", "sum", "concat", "gate+dnn", "film+dnn", "sum+dnn", "concat+dnn",
        "co_attn", "merge_attn"}


def test_residual_dnn_rows_are_the_coarse_plus_rows_but_for_the_fusion() -> None:
    """Our residual-DNN section changes the fusion of Table III's Coarse+ rows and nothing else,
    so the two are compared under one setting."""
    plain = grids.table3_configs("cpu")
    residual = grids.table3_configs("cpu", residual_dnn=True)
    assert list(residual) == [("Coarse+ residual", row) for group, row in plain
                              if group == "Coarse+"]
    for (_, row), cfg in residual.items():
        twin = plain["Coarse+", row]
        assert cfg.model.fusion == twin.model.fusion.replace("+dnn", "+resdnn")
        assert cfg.override(f"model.fusion={twin.model.fusion}").hash() == twin.hash()


def test_authors_code_rows_are_the_coarse_rows_but_for_the_fusion() -> None:
    """The authors' gate and FiLM rows differ from Table III's Coarse rows in the fusion only."""
    plain = grids.table3_configs("cpu")
    authors = grids.table3_configs("cpu", authors_code=True)
    assert list(authors) == [("Coarse (authors' code)", "Gate"), ("Coarse (authors' code)", "FiLM")]
    for (_, row), cfg in authors.items():
        twin = plain["Coarse", row]
        assert cfg.model.fusion == f"{twin.model.fusion}_authors"
        assert cfg.override(f"model.fusion={twin.model.fusion}").hash() == twin.hash()
    with pytest.raises(ValueError, match="pick one"):
        grids.table3_configs("cpu", residual_dnn=True, authors_code=True)


def test_every_row_of_an_architecture_trains_under_its_tuned_settings() -> None:
    """cpu: GRU4Rec and NextItNet rows use the learning rate and dropout their ID model chose
    on validation on that data set, content rows the one their own search chose where it
    differs (GRU4Rec, synthetic), and one column its own again (GRU4Rec's MMSR); SASRec rows
    the profile's own; other profiles, and data sets nobody tuned on, add nothing."""
    cpu = profile_config("cpu")
    sasrec = (cpu.train.lr, cpu.model.dropout)
    tuned = {"synthetic": {"SASRec": sasrec, "GRU4Rec": (3e-2, 0.0), "NextItNet": (3e-2, 0.5)},
             "movielens-100k": {"SASRec": sasrec, "GRU4Rec": (3e-3, 0.1), "NextItNet": (3e-2, 0.5)}}
    content = {"synthetic": {**tuned["synthetic"], "GRU4Rec": (1e-2, 0.1)},
               "movielens-100k": tuned["movielens-100k"]}
    column = {("synthetic", "GRU4Rec", "MMSR"): (3e-3, 0.1)}  # one column's own search

    def setting(cfg: RunConfig) -> tuple[float, float]:
        r = cfg.resolved()
        return r.train.lr, r.model.dropout

    from mmsr_lib.workbook import comparisons as cmp

    for dataset in grids.TABLE4_DATASETS:
        for (arch, col), cfg in grids.table4_configs("cpu", dataset=dataset).items():
            want = tuned if col == "IDSR" else content
            assert setting(cfg) == column.get((dataset, arch, col), want[dataset][arch]), (
                dataset, arch, col)
        table5 = cmp.table5_configs("cpu", dataset=dataset)
        for arch in grids.ARCHITECTURES:
            assert setting(table5["IDSR", arch]) == tuned[dataset][arch], (dataset, arch)
    # the caller's overrides still come last
    grid = grids.table4_configs("cpu", "model.dropout=0.2")
    assert grid["GRU4Rec", "MMSR"].resolved().model.dropout == 0.2
    assert grids.sequence_settings("cpu", "nextitnet", content=True) == grids.sequence_settings(
        "cpu", "nextitnet")  # no content search of its own: the ID model's setting
    assert grids.sequence_settings("cpu", "gru4rec", "path") == ("model.sequence=gru4rec",)
    for profile in ("smoke", "paper"):
        for arch, seq in grids.ARCHITECTURES.items():
            assert grids.sequence_settings(profile, seq) == (f"model.sequence={seq}",)
            assert grids.table4_configs(profile)[arch, "IDSR"].hash() == profile_config(
                profile).override(f"model.sequence={seq}").hash()
    with pytest.raises(ValueError, match="unknown profile"):
        grids.sequence_settings("gpu", "sasrec")


def test_table4_rows_columns_and_movielens_variant() -> None:
    grid = grids.table4_configs("cpu")
    assert grid.levels == ("architecture", "column")
    assert list(grid) == [(a, c) for a in ("SASRec", "GRU4Rec", "NextItNet")
                          for c in ("IDSR", "MMSR-T", "MMSR-V", "MMSR")]
    for (arch, col), cfg in grid.items():
        m = cfg.model
        assert m.sequence == grids.ARCHITECTURES[arch]
        assert m.item_encoder == {"IDSR": "id", "MMSR-T": "text", "MMSR-V": "vision",
                                  "MMSR": "mm"}[col]
        if col == "MMSR":
            assert (m.text_encoder, m.vision_encoder) == ("minilm-l6", "efficientnet-lite2")
        assert cfg.data.source == "synthetic"
    assert grid["GRU4Rec", "MMSR-V"].model.vision_encoder == "efficientnet-lite2"
    # ID rows read no encoder setting: the from-scratch table shares them
    scratch = grids.table4_configs("cpu", from_scratch=True)
    assert scratch["SASRec", "IDSR"].hash() == grid["SASRec", "IDSR"].hash()
    # an IDSR row is the quickstart's configuration, so the results store shares the run
    from mmsr_lib.workbook.quickstart import quickstart_configs

    assert grid["SASRec", "IDSR"].hash() == quickstart_configs("cpu")["IDSR"].hash()
    ml = grids.table4_configs("cpu", dataset="movielens-100k")
    assert list(ml) == [(a, c) for a in ("SASRec", "GRU4Rec", "NextItNet")
                        for c in ("IDSR", "MMSR-T")]
    for cfg in ml.values():
        assert cfg.data.source == "movielens-100k"
    text = ml["NextItNet", "MMSR-T"].resolved()
    assert (text.model.text_encoder, text.model.text_pooling, text.model.finetune) == (
        "minilm-l6", "mean", "frozen")
    assert text.model.text_max_tokens == 50  # MovieLens titles + genres reach ~33 tokens
    # one stopping rule for every row of a table (ID and content alike)
    idsr = ml["SASRec", "IDSR"].resolved().train
    assert (text.train.epochs, text.train.patience) == (idsr.epochs, idsr.patience)
    paper_ml = grids.table4_configs("paper", dataset="movielens-100k")["SASRec", "MMSR-T"]
    assert paper_ml.resolved().model.finetune == "top"
    assert paper_ml.data.source == "movielens-100k"
    with pytest.raises(ValueError, match="movielens-100k"):
        grids.table4_configs("cpu", dataset="hm")
    # one architecture's rows (notebook 07's `architectures`), the same runs as the full grid's
    sasrec = grids.table4_configs("cpu", architectures=["SASRec"])
    assert {k: c.hash() for k, c in sasrec.items()} == {
        k: c.hash() for k, c in grid.items() if k[0] == "SASRec"}
    with pytest.raises(ValueError, match="choose among"):
        grids.table4_configs("cpu", architectures=["BERT4Rec"])


def test_every_grid_has_distinct_hashes_and_valid_round_tripping_configs() -> None:
    for profile, table, grid in all_grids():
        hashes = [cfg.hash() for cfg in grid.values()]
        assert len(set(hashes)) == len(hashes), (profile, table)
        names = [cfg.name for cfg in grid.values()]
        assert len(set(names)) == len(names), (profile, table)
        for key, cfg in grid.items():
            again = RunConfig.from_dict(cfg.to_dict())
            assert again == cfg and again.hash() == cfg.hash(), (profile, table, key)
            assert cfg.profile == profile


@pytest.mark.parametrize("profile", PROFILES)
def test_the_same_run_in_two_tables_has_one_hash(profile) -> None:
    """The results store trains a configuration once, whichever notebook asks first."""
    t2, t3, t4 = (build(profile) for build in BUILDERS.values())
    assert t3["Attention", "MergeAttn-1"].hash() == t2["MMSR", "Ro.+MAE"].hash()
    assert t4["SASRec", "MMSR-T"].hash() == t2["MMSR-T", "RoBERTa"].hash()
    assert t4["SASRec", "MMSR-V"].hash() == t2["MMSR-V", "Swin"].hash()
    assert t4["SASRec", "MMSR"].hash() == t2["MMSR", "Ro.+Swin"].hash()


def test_profile_sizes_and_overrides() -> None:
    from mmsr_lib.config import PROFILE_TABLE

    by_kind = PROFILE_TABLE["cpu"]["BY_KIND"]
    cpu = {k: c.resolved() for k, c in grids.table2_configs("cpu").items()}
    assert cpu["MMSR-T", "BERT"].train.epochs == by_kind["*"]["train.epochs"]
    assert cpu["MMSR", "Ro.+Swin"].train.epochs == by_kind["*"]["train.epochs"]
    idsr = grids.table4_configs("cpu")["SASRec", "IDSR"].resolved()
    assert idsr.train.epochs == by_kind["*"]["train.epochs"]  # one budget and rule for all
    # BCE (Table V's one loss) has a budget of its own on cpu, and every Table V row takes it
    by_loss = PROFILE_TABLE["cpu"]["BY_LOSS"]["bce"]
    t5 = [c.resolved() for c in table5_configs("cpu").values()]
    t5 += [c.resolved() for c in table5_configs("cpu", dataset="movielens-100k").values()]
    assert {(c.train.loss, c.train.epochs, c.train.patience) for c in t5} == {
        ("bce", by_loss["train.epochs"], by_loss["train.patience"])}
    # a budget-free schedule: the cap is a ceiling, and every row anneals before it may stop;
    # synthetic GRU4Rec trains through the linear decay instead (its rule, chosen on validation)
    gru = table5_configs("cpu")["IDSR", "GRU4Rec"].resolved().train
    assert (gru.schedule, gru.stop_after_decay, gru.epochs) == ("linear", True, 800)
    assert {(c.train.schedule, c.train.plateau) for c in t5 if c.train != gru} == {
        ("plateau", by_loss["train.patience"] // 2)}
    bare = profile_config("cpu").override("train.loss=bce").resolved()  # `mmsr train` agrees
    assert (bare.train.epochs, bare.train.patience) == (t5[0].train.epochs, t5[0].train.patience)
    # frozen encoders and ID models have no encoder learning rate
    assert all(c.train.encoder_lr is None for c in cpu.values())
    assert idsr.train.encoder_lr is None and idsr.model.text_encoder is None
    # random-init encoders (from scratch) train their top blocks at the downstream rate
    scratch = [c.resolved() for c in grids.table2_configs("cpu", from_scratch=True).values()]
    assert all(c.train.encoder_lr == c.train.lr for c in scratch)
    paper = [c.resolved() for c in grids.table2_configs("paper").values()]
    assert all(c.train.epochs == 150 for c in paper)
    assert {c.model.text_max_tokens for c in paper} == {50, None}  # None: no text in the row
    assert all(c.train.encoder_lr == 1e-4 for c in paper)
    # caller overrides come last: they win over the per-kind epochs
    over = grids.table3_configs("cpu", "train.epochs=2", "model.dim=32")
    assert all(c.train.epochs == 2 and c.model.dim == 32 for c in over.values())
    with pytest.raises(ValueError, match="profile"):
        grids.table2_configs("laptop")


def _record(cfg: RunConfig, hr: float, ndcg: float) -> RunRecord:
    return RunRecord(cfg.hash(), cfg.to_dict(), "done",
                     metrics={"test": {"HR@10": hr, "NDCG@10": ndcg}},
                     extra={"epochs_run": 3, "best_epoch": 2, "converged": False})


def test_grid_table_and_compare_with_paper() -> None:
    grid = grids.table2_configs("smoke")
    keys = list(grid)
    # made-up numbers that order the rows like the paper's HM column, except two swapped rows
    paper = paper_wide("II", "HM").set_index(["group", "row"])
    records = {k: _record(grid[k], paper.loc[k, "HR@10"] / 2, paper.loc[k, "NDCG@10"] / 2)
               for k in keys[:-1]}  # the last row "not run yet"
    table = grids.grid_table(records, grid)
    assert list(table.index) == keys and table.index.names == ["group", "row"]
    assert table.loc[("MMSR-T", "RoBERTa"), "HR@10"] == pytest.approx(8.2275 / 2)
    assert math.isnan(table.loc[keys[-1], "HR@10"])
    assert table.loc[("MMSR", "Ro.+MAE"), "encoders"] == (
        "tiny-roberta (random init, top blocks tuned) + tiny-mae (random init, top blocks "
        "tuned), merge_attn-1")
    assert table.loc[("MMSR-T", "BERT"), "epochs"] == "2 of 3"  # best epoch of the budget
    assert table.loc[("MMSR-T", "BERT"), "converged"] == "0/1"
    assert table.loc[keys[-1], "epochs"] == "- of 3"
    # two seeds: the mean and the sample standard deviation
    two = grids.grid_table({keys[0]: [_record(grid[keys[0]], 2.0, 1.0),
                                      _record(grid[keys[0]], 4.0, 1.0)]}, {keys[0]: grid[keys[0]]})
    assert two.loc[keys[0], "HR@10"] == 3.0 and two.loc[keys[0], "HR@10 std"] == pytest.approx(
        2 ** 0.5) and two.loc[keys[0], "seeds"] == 2

    cmp = grids.compare_with_paper(table, "II", "HM")
    assert list(cmp.index) == keys
    assert cmp.loc[("MMSR-V", "Swin"), "HR@10 (paper)"] == pytest.approx(7.8615)
    assert "swapped" in cmp.loc[("MMSR", "Ro.+MAE"), "note"]
    # ranks over the rows with both numbers: halving keeps the paper's order
    ranked = cmp.dropna(subset=["HR@10 (ours)"])
    assert (ranked["HR@10 rank (ours)"] == ranked["HR@10 rank (paper)"]).all()
    assert ranked["HR@10 rank (ours)"].min() == 1
    assert math.isnan(cmp.loc[keys[-1], "HR@10 rank (paper)"])
    with pytest.raises(KeyError, match="HR@50"):
        grids.compare_with_paper(table, "II", "HM", metrics=["HR@50"])


def test_table4_layout_improvement_and_paper_labels() -> None:
    grid = grids.table4_configs("smoke")
    values = {"IDSR": 4.0, "MMSR-T": 4.2, "MMSR-V": 3.0, "MMSR": 5.0}
    arch_scale = {"SASRec": 1.0, "GRU4Rec": 0.5, "NextItNet": 0.75}
    records = {(a, c): _record(cfg, values[c] * arch_scale[a], 1.0)
               for (a, c), cfg in grid.items()}
    table = grids.grid_table(records, grid)
    assert table.index.names == ["architecture", "column"]
    wide = grids.table4_wide(table, "HR@10")
    assert list(wide.index) == ["SASRec", "GRU4Rec", "NextItNet"]
    assert list(wide.columns) == ["IDSR", "MMSR-T", "MMSR-V", "MMSR", "Improv."]
    # against the best IDSR of the table (SASRec's 4.0): 5.0 -> +25%, 2.5 -> -37.5%
    assert wide["Improv."].tolist() == ["+25.00%", "-37.50%", "-6.25%"]
    per_row = grids.improvement_column(wide, against="row")
    assert per_row.tolist() == ["+25.00%", "+25.00%", "+25.00%"]
    with pytest.raises(KeyError, match="table4_wide"):
        grids.improvement_column(table)
    # GRU4Rec is the paper's "GRURec"
    cmp = grids.compare_with_paper(table, "IV", "HM")
    assert cmp.loc[("GRU4Rec", "MMSR"), "HR@10 (paper)"] == pytest.approx(6.7965)
    assert "NDCG@10 (paper)" not in cmp.columns  # Table IV prints HR@10 only


def test_run_grid_end_to_end_on_two_smoke_configs(tmp_path) -> None:
    """Two real runs (IDSR and MMSR-T, GRU4Rec, 1 epoch) through the results store."""
    grid = grids.table4_configs("smoke", "train.epochs=1", "model.dim=16",
                                f"data.cache_dir={tmp_path / 'data'}",
                                f"train.checkpoint_dir={tmp_path / 'runs'}")
    two = {k: grid[k] for k in [("GRU4Rec", "IDSR"), ("GRU4Rec", "MMSR-T")]}
    store = ResultsStore(tmp_path / "results.sqlite")
    records = run_grid(two, store=store, progress=False)
    assert set(records) == set(two)
    assert all(len(runs) == 1 and runs[0].status == "done" for runs in records.values())
    table = grids.grid_table(records, two)
    assert table[["HR@10", "NDCG@10"]].notna().all().all()
    assert ((table["HR@10"] >= table["NDCG@10"]) & (table["HR@10"] <= 100)).all()
    assert table["epochs"].tolist() == ["1 of 1", "1 of 1"]
    # a second call loads from the store instead of training again
    again = run_grid(two, store=store, progress=False)
    assert {k: r[0].updated for k, r in again.items()} == \
        {k: r[0].updated for k, r in records.items()}
    # two seeds of each row, and a paired test between the rows from the stored ranks
    seeded = run_grid(two, store=store, progress=False, seeds=(1, 2))
    assert [len(r) for r in seeded.values()] == [2, 2]
    verdicts = grids.significance_column(store, seeded, {"MMSR-T": (("GRU4Rec", "MMSR-T"),
                                                                    ("GRU4Rec", "IDSR"))})
    assert verdicts["MMSR-T"] == "not converged"  # 1 epoch of 1: best epoch at the budget
    assert isinstance(grids.compare_with_paper(table, "IV", "Bili"), pd.DataFrame)


def test_every_smoke_config_builds_and_takes_a_finite_step(tmp_path) -> None:
    """Each distinct model of Tables II-IV (synthetic) is buildable from its grid config."""
    import torch

    from mmsr_lib.data.loaders import TrainBatches
    from mmsr_lib.runs.runner import build_model, load_data

    seen = set()
    for build in BUILDERS.values():
        for key, cfg in build("smoke", f"data.cache_dir={tmp_path}").items():
            model_key = cfg.override("name=x", "train.epochs=1").hash()
            if model_key in seen:
                continue
            seen.add(model_key)
            data = load_data(cfg.data)
            batches = TrainBatches(data, 4, seed=0)
            batches.set_epoch(0)
            loss = build_model(cfg, data).loss(batches[0])
            assert torch.isfinite(loss), key
    # shared runs: Table III's MergeAttn-1 is Table II's Ro.+MAE, and Table IV's SASRec row is
    # Table II's MMSR-T RoBERTa, MMSR-V Swin and Ro.+Swin
    assert len(seen) == 11 + 12 + 12 - 4


def test_run_grid_in_two_processes_stores_what_one_process_computes(tmp_path, monkeypatch
                                                                     ) -> None:
    """`workers=2` trains the pending runs in two spawned processes (one thread each, as the
    one-process reference here) and returns the same records, in grid order, as training them
    one after the other in this process; a grid already stored starts no process."""
    from mmsr_lib.runs import parallel

    grid = grids.table4_configs("smoke", "train.epochs=1", "model.dim=16",
                                f"data.cache_dir={tmp_path / 'data'}")
    two = {k: grid[k] for k in [("GRU4Rec", "IDSR"), ("SASRec", "IDSR")]}
    monkeypatch.setenv("MMSR_THREADS", "1")
    serial = run_grid({k: c.override(f"train.checkpoint_dir={tmp_path / 'serial'}")
                       for k, c in two.items()},
                      store=ResultsStore(tmp_path / "serial.sqlite"), progress=False, workers=1)
    store = ResultsStore(tmp_path / "parallel.sqlite")
    side = {k: c.override(f"train.checkpoint_dir={tmp_path / 'parallel'}") for k, c in two.items()}
    both = run_grid(side, store=store, progress=False, workers=2)
    assert list(both) == list(serial)
    for key in two:
        assert both[key][0].status == "done"
        assert both[key][0].metrics == serial[key][0].metrics
        assert both[key][0].history[0]["loss"] == serial[key][0].history[0]["loss"]

    def no_processes(*args, **kwargs):
        raise AssertionError("a stored grid must not start worker processes")

    monkeypatch.setattr(parallel, "train_in_processes", no_processes)
    again = run_grid(side, store=store, progress=False, workers=2)
    assert {k: r[0].updated for k, r in again.items()} == {k: r[0].updated for k, r in both.items()}


def test_tune_trains_its_trials_in_processes_and_chooses_as_one_process_does(tmp_path,
                                                                              monkeypatch) -> None:
    """`tune(workers=2)` trains the trials not yet stored in two processes (one call for all
    of them) and reads back the same trials and choice as `workers=1` in this process."""
    from mmsr_lib.runs import parallel
    from mmsr_lib.runs.tuning import SCORE_COLUMNS, tune

    base = profile_config("smoke").override("train.epochs=1", "model.dim=16",
                                            f"data.cache_dir={tmp_path / 'data'}")
    space = {"train.lr": ("1e-3", "1e-2"), "model.dropout": (0.1,)}
    monkeypatch.setenv("MMSR_THREADS", "1")
    serial = tune(base.override(f"train.checkpoint_dir={tmp_path / 'serial'}"), space,
                  store=ResultsStore(tmp_path / "serial.sqlite"), workers=1)
    calls = []
    original = parallel.train_in_processes

    def spy(configs, *args, **kwargs):
        calls.append([c.train.lr for c in configs])
        return original(configs, *args, **kwargs)

    monkeypatch.setattr(parallel, "train_in_processes", spy)
    store = ResultsStore(tmp_path / "parallel.sqlite")
    side = base.override(f"train.checkpoint_dir={tmp_path / 'parallel'}")
    both = tune(side, space, store=store, workers=2)
    assert calls == [[1e-3, 1e-2]]
    columns = ["train.lr", *SCORE_COLUMNS]
    pd.testing.assert_frame_equal(both.trials[columns], serial.trials[columns])
    assert both.best == serial.best
    again = tune(side, space, store=store, workers=2)  # all stored: no process starts
    assert len(calls) == 1 and again.best == both.best


def test_grid_workers_follow_the_environment_and_the_profile(monkeypatch) -> None:
    from mmsr_lib.config import profile_config
    from mmsr_lib.runs.parallel import grid_workers
    from mmsr_lib.util.threads import usable_cores

    smoke, cpu = profile_config("smoke"), profile_config("cpu")
    monkeypatch.delenv("MMSR_WORKERS", raising=False)
    assert grid_workers(smoke, 10) == 1  # seconds a run: not worth a process
    assert grid_workers(cpu.override("train.device=cpu"), 10) == usable_cores()
    assert grid_workers(cpu.override("train.device=cpu"), 1) == 1  # never more than the runs
    monkeypatch.setenv("MMSR_WORKERS", "3")
    assert grid_workers(smoke, 10) == 3 and grid_workers(smoke, 2) == 2
    monkeypatch.setenv("MMSR_WORKERS", "two")
    with pytest.raises(ValueError, match="MMSR_WORKERS"):
        grid_workers(smoke, 10)


def test_a_worker_logs_its_runs_progress_every_ten_epochs(caplog):
    """Worker processes have no progress bar; their run says how far it is every 10 epochs."""
    import logging

    from mmsr_lib.runs.parallel import epoch_logger

    log_epoch = epoch_logger("IDSR seed 42")
    with caplog.at_level(logging.INFO, logger="mmsr.runs"):
        for epoch, score in enumerate([1.0, 3.0, 2.0] + [2.5] * 17):
            log_epoch(epoch, {"loss": 0.5, "valid": {"NDCG@10": score}})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # epochs 10 and 20
    assert lines[0].startswith("IDSR seed 42: epoch 10, loss 0.5000, best valid NDCG@10 3.00 "
                               "at epoch 2")
    assert lines[1].startswith("IDSR seed 42: epoch 20,")


def test_a_dead_worker_is_reported_with_its_usual_causes() -> None:
    """A pool broken by a dead worker names no cause; the error names the run and the three
    usual ones (memory, a kill, a script without a main guard) and how to train in-process."""
    from concurrent.futures.process import BrokenProcessPool

    from mmsr_lib.runs.parallel import failure_message

    cfg = grids.table4_configs("smoke")[("SASRec", "IDSR")]
    broken = failure_message(cfg, BrokenProcessPool("terminated abruptly"))
    assert broken.startswith(f"run {cfg.name} [{cfg.hash()}] failed in a worker process: "
                             "BrokenProcessPool: terminated abruptly; a worker process died")
    assert "MMSR_WORKERS=1" in broken and 'if __name__ == "__main__":' in broken
    plain = failure_message(cfg, ValueError("NaN loss"))
    assert plain.endswith("ValueError: NaN loss")  # an ordinary error keeps its own message
