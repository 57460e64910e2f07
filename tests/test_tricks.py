"""Notebook 09's grids (Tables XI-XIV), their cost columns and the peak-memory measure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mmsr_lib.config import PROFILES, profile_config
from mmsr_lib.runs.runner import run_grid
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook import tricks
from mmsr_lib.workbook.grids import TINY_ENCODERS
from mmsr_lib.workbook.paper_numbers import paper_wide


def _paper_rows(table: str, dataset: str) -> list[tuple[str, str]]:
    paper = paper_wide(table, dataset)
    return list(zip(paper["group"], paper["row"], strict=True))


@pytest.mark.parametrize("profile", PROFILES)
def test_table11_is_the_papers_rows_with_the_finetune_mode_set_per_row(profile):
    grid = tricks.table11_configs(profile)
    assert list(grid) == _paper_rows("XI", "HM") == _paper_rows("XI", "Bili")
    for (_group, row), cfg in grid.items():
        m = cfg.resolved().model
        if row == "ID":
            assert m.item_encoder == "id" and m.finetune is None
            assert cfg.hash() == profile_config(profile).override("model.sequence=sasrec").hash()
            continue
        full = "Full" in row or "-F" in row
        assert m.finetune == ("full" if full else "top"), row  # cpu's frozen default overridden
        assert (m.sequence, m.fusion or "merge_attn") == ("sasrec", "merge_attn")
    names = tricks.tricks_encoders(profile)
    mm = grid["MMSR", "Ro.-F+MAE-F"].resolved().model
    assert (mm.text_encoder, mm.vision_encoder) == (names["RoBERTa"], names["MAE"])
    assert grid["MMSR-V", "ResNet"].resolved().model.vision_encoder == names["ResNet"]
    if profile != "paper":  # small enough to fine-tune on a CPU: the tiny zoo, CLS pooling
        assert names == {k: TINY_ENCODERS[k] for k in ("RoBERTa", "MAE", "ResNet")}
        assert grid["MMSR-T", "RoBERTa"].resolved().model.text_pooling == "cls"
    else:
        assert names == {"RoBERTa": "roberta-base", "MAE": "mae-base", "ResNet": "resnet50"}
    assert tricks.tricks_encoders(profile, text="minilm-l3")["RoBERTa"] == "minilm-l3"


@pytest.mark.parametrize("profile", PROFILES)
def test_table12_is_the_papers_learning_rate_grid(profile):
    grid = tricks.table12_configs(profile)
    assert list(grid) == _paper_rows("XII", "Bili")
    # the profile's downstream rate over the paper's 1e-4 (cpu: 3e-3, tuned on validation)
    scale = {"paper": 1.0, "smoke": 10.0, "cpu": 30.0}[profile]
    assert tricks.lr_scale(profile) == pytest.approx(scale)
    for (_, row), cfg in grid.items():
        top, down = (float(x) * scale for x in row.split("/"))
        t = cfg.resolved().train
        assert t.encoder_lr == pytest.approx(top) and t.lr == pytest.approx(down)
    if profile == "paper":  # the paper's own numbers, unchanged
        assert grid["MMSR", "5e-5/1e-4"].resolved().train.encoder_lr == 5e-5
    settings = tricks.lr_settings(grid)
    assert settings["MMSR", "8e-5/1e-4"] == (
        f"top {8e-5 * scale:.0e} / downstream {1e-4 * scale:.0e}")


@pytest.mark.parametrize("profile", PROFILES)
def test_tables13_14_rows_and_the_runs_they_share(profile):
    t13 = tricks.table13_configs(profile)
    paper13 = _paper_rows("XIII", "Bili")
    assert [k for k in t13 if k in paper13] == paper13
    extra = [k[1] for k in t13 if k not in paper13]
    assert extra == ([] if profile == "paper" else ["5", "15"] * 2)
    assert [int(k[1]) for k in t13][:5] == ([5, 10, 15, 30, 50] if profile != "paper"
                                            else [10, 30, 50, 10, 30])
    for (_, row), cfg in t13.items():
        assert cfg.resolved().model.text_max_tokens == int(row)
    t14 = tricks.table14_configs(profile)
    assert [k for k in t14 if k[1] != "25%"] == _paper_rows("XIV", "Bili")
    assert [k[1] for k in t14][:4] == ["0%", "25%", "50%", "75%"]
    assert t14["MMSR-V", "0%"].resolved().model.mask_ratio == 0.0
    assert t14["MMSR", "50%"].resolved().model.mask_ratio == 0.5
    # every row fuses all the kept patches: a masking MAE has no map to pool to a grid
    assert {c.resolved().model.vision_grid for c in t14.values()} == {None}
    t11, t12 = tricks.table11_configs(profile), tricks.table12_configs(profile)
    # the default setting is one run in every table: top fine-tuning, equal default rates,
    # 50 tokens, the MAE's default 75% mask
    default = t11["MMSR", "Ro.+MAE"].hash()
    assert t12["MMSR", "1e-4/1e-4"].hash() == t13["MMSR", "50"].hash() == default
    assert t14["MMSR", "75%"].hash() == default
    assert t14["MMSR-V", "75%"].hash() == t11["MMSR-V", "MAE"].hash()
    assert t13["MMSR-T", "50"].hash() == t11["MMSR-T", "RoBERTa"].hash()
    every = [c.hash() for g in (t11, t12, t13, t14) for c in g.values()]
    assert len(set(every)) == len(every) - 5
    with pytest.raises(ValueError, match="mask ratio"):
        tricks.table14_configs(profile, ratios=(1.0,))


def test_claim_pairs():
    assert tricks.table11_pairs() == [
        (("MMSR-T", "RoBERTa-Full"), ("MMSR-T", "RoBERTa")),
        (("MMSR-V", "MAE-Full"), ("MMSR-V", "MAE")),
        (("MMSR-V", "ResNet-Full"), ("MMSR-V", "ResNet")),
        (("MMSR", "Ro.-F+MAE-F"), ("MMSR", "Ro.+MAE"))]
    grid11 = tricks.table11_configs("cpu")
    assert tricks.table11_pairs(grid11) == tricks.table11_pairs()
    del grid11["MMSR-V", "MAE"]
    assert (("MMSR-V", "MAE-Full"), ("MMSR-V", "MAE")) not in tricks.table11_pairs(grid11)
    assert set(tricks.PAIRS) == set(tricks.TABLES)
    t12 = tricks.table12_pairs(tricks.table12_configs("cpu"))
    assert {b for _, b in t12} == {("MMSR", "1e-4/1e-4")} and len(t12) == 4
    t13 = tricks.table13_pairs(tricks.table13_configs("cpu"))
    assert (("MMSR", "10"), ("MMSR", "50")) in t13 and len(t13) == 8
    t14 = tricks.table14_pairs(tricks.table14_configs("cpu"))
    assert (("MMSR-V", "75%"), ("MMSR-V", "0%")) in t14 and len(t14) == 6


# -- memory ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_peak_memory_sees_a_temporary_allocation(method):
    with tricks.PeakMemory("cpu", method=method, interval=0.002) as pm:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block += 1.0
        if method == "sampled":
            import time

            time.sleep(0.05)
        del block
    if pm.method == "none":
        pytest.skip("no way to read this process's memory here")
    assert pm.method in (("vmhwm", "sampled") if method == "auto" else ("sampled",))
    assert 150 <= pm.peak_mb <= 1000, pm.peak_mb
    assert pm.base_mb > 0


def test_costed_runs_store_their_memory_and_others_are_probed_once():
    store = ResultsStore()
    base = tricks.tricks_base("smoke").override(
        "model.dim=16", "train.epochs=1", "data.synth.n_users=40", "data.synth.n_items=30",
        "model.item_encoder=text", f"model.text_encoder={TINY_ENCODERS['RoBERTa']}")
    configs = {("MMSR-T", "measured"): base,
               ("MMSR-T", "elsewhere"): base.override("model.finetune=full")}
    measured = tricks.run_costed_grid({k: v for k, v in configs.items() if k[1] == "measured"},
                                      store=store, progress=False)
    rec = measured["MMSR-T", "measured"][0]
    assert rec.extra["memory_method"] in ("vmhwm", "sampled", "cuda-allocated")
    assert rec.extra["peak_memory_mb"] > 0
    assert tricks.run_costed_grid({("MMSR-T", "measured"): base}, store=store,
                                  progress=False)["MMSR-T", "measured"][0].updated == rec.updated
    other = run_grid({("MMSR-T", "elsewhere"): configs["MMSR-T", "elsewhere"]}, store=store,
                     progress=False)  # trained without a measurement, e.g. by another notebook
    results = {**measured, **other}
    cost = tricks.cost_columns(results, configs)
    assert cost.loc[("MMSR-T", "measured"), "memory from"] == "run"
    assert cost.loc[("MMSR-T", "elsewhere"), "memory from"] == "1-epoch probe"
    assert (cost["s/epoch"] > 0).all() and (cost["peak MiB"] > 0).all()
    assert cost.loc[("MMSR-T", "elsewhere"), "trainable params"] > \
        cost.loc[("MMSR-T", "measured"), "trainable params"]
    probes = list(resolve(tricks.COST_DIR).glob("*.json"))
    assert len(probes) == 1
    cached = json.loads(probes[0].read_text())
    assert cached["peak_memory_mb"] == cost.loc[("MMSR-T", "elsewhere"), "peak MiB"]
    probes[0].write_text(json.dumps({**cached, "peak_memory_mb": 123.0}))
    assert tricks.cost_columns(results, configs).loc[("MMSR-T", "elsewhere"),
                                                     "peak MiB"] == 123.0  # cached, not redone
    no_probe = tricks.cost_columns(other, {("MMSR-T", "elsewhere"): configs["MMSR-T",
                                                                            "elsewhere"]},
                                   probe=False)
    assert math.isnan(no_probe["peak MiB"].iloc[0]) and no_probe["memory from"].iloc[0] == "-"
    table = tricks.tricks_table(results, configs, extra={("MMSR-T", "measured"): "x"})
    assert {"setting", "s/epoch", "peak MiB", "HR@10", "converged"} <= set(table.columns)
    sentences = tricks.cost_sentences(table, [(("MMSR-T", "elsewhere"), ("MMSR-T", "measured"))])
    assert sentences and "x the trainable parameters" in sentences[0]


def test_the_warm_up_and_the_measure_leave_the_numbers_unchanged(tmp_path):
    from mmsr_lib.runs.runner import run_experiment

    cfg = tricks.tricks_base("smoke").override(
        "model.dim=16", "train.epochs=1", "data.synth.n_users=40", "data.synth.n_items=30",
        "model.item_encoder=mm", "train.seed=7").resolved()
    tricks._WARM.clear()
    measured = tricks.measured_runner(cfg, progress=False, run_dir=tmp_path / "a")
    assert not tricks.warm_up(cfg, None)  # once per process and kind of model
    plain = run_experiment(cfg, progress=False, run_dir=tmp_path / "b")
    assert measured["metrics"]["test"] == plain["metrics"]["test"]
    assert measured["history"][0]["loss"] == plain["history"][0]["loss"]


def test_token_lengths_say_how_much_text_each_cut_keeps():
    cfg = tricks.table13_configs("smoke")["MMSR-T", "50"].override("data.synth.n_users=40")
    frame = tricks.token_lengths(cfg)
    assert list(frame.index) == [10, 30, 50]
    assert list(tricks.token_lengths(cfg, [5, 15]).index) == [5, 15]
    shares = frame["items truncated (%)"].tolist()
    assert shares == sorted(shares, reverse=True) and shares[0] > 0
    assert (frame["tokens kept (mean)"] <= frame.index.to_numpy()).all()
    assert frame.attrs["encoder"] == TINY_ENCODERS["RoBERTa"]
