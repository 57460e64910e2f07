"""`mmsr plan`: the probe measures something real, grids are deduplicated by what changes cost,
the memory check and its suggestions follow from the numbers, and predictions can be checked
against stored runs. No duration is asserted: only that measured numbers are positive and
finite, and that the arithmetic on given numbers is right."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mmsr_lib import plan
from mmsr_lib.cli import main
from mmsr_lib.config import profile_config
from mmsr_lib.runs.runner import load_data, run_or_load
from mmsr_lib.runs.store import ResultsStore

TINY = ("data.synth.n_users=120", "data.synth.n_items=60", "model.dim=16",
        "train.batch_size=32", "data.max_len=8", "model.text_max_tokens=16")


def tiny(*settings: str):
    return profile_config("smoke").override(*TINY, *settings)


def fake_probe(cfg, step: float = 0.01, peak_per_row: float = 10.0, base: float = 100.0,
               **_) -> plan.Probe:
    """A probe with given numbers (memory grows with the batch) and the real counts."""
    r = cfg.resolved()
    counts = plan.counts_of(load_data(r.data), r)
    b = r.train.batch_size
    content = plan.is_content(r)
    caches = [{"key": f"{r.model.text_encoder}-{r.data.synth.n_items}", "kind": "text",
               "seconds": 2.0, "peak_mb": base + 1, "built": True}] if content else []
    return plan.Probe(
        device="cpu", device_name="fake", threads=1, steps=2, batch_shape=(b, r.data.max_len),
        step_seconds=step, step_seconds_all=[step, step], build_seconds=1.0,
        cache_seconds=2.0 if content else 0.0, caches=caches,
        data_seconds=0.1, catalog_seconds=0.5, eval_rows=10, eval_rows_seconds=0.1,
        peak_mb=base + peak_per_row * b, static_mb=base, memory_method="fake", cache_mb=0.0,
        cache_peak_mb=base + 1, train_peak_mb=base + peak_per_row * b,
        parameters=1000, trainable_parameters=100, trainable=True, counts=counts)


# -- the probe -------------------------------------------------------------------------------------
def test_probe_of_a_tiny_smoke_config_measures_positive_finite_numbers():
    cfg = tiny("model.item_encoder=mm", "model.finetune=top", "model.mask_ratio=0")
    p = plan.probe(cfg, steps=1, eval_rows=16, device="cpu", isolate=True)  # a fresh process
    assert p.memory_method == "peak RSS of a fresh process"
    for value in (p.step_seconds, p.build_seconds, p.peak_mb, p.static_mb, p.eval_rows_seconds,
                  p.cache_peak_mb, p.train_peak_mb):
        assert math.isfinite(value) and value > 0
    assert p.peak_mb == max(p.cache_peak_mb, p.train_peak_mb)
    assert p.cache_seconds >= 0 and p.catalog_seconds >= 0 and p.cache_mb > 0  # text + MAE
    assert [c["kind"] for c in p.caches] == ["text", "vision"]
    assert all(c["built"] and math.isfinite(c["peak_mb"]) for c in p.caches)
    assert p.steps == 1 and p.batch_shape == (32, 8) and p.trainable_parameters > 0
    c = p.counts
    assert c.windows > 0 and c.n_items == 60 and 0 < c.distinct_items <= 60
    assert c.steps_per_epoch == -(-c.windows // 32)
    pred = plan.predict(cfg, p)
    assert pred.steps_per_epoch == c.steps_per_epoch
    for value in (pred.epoch_seconds, pred.eval_seconds, pred.sequences_per_second,
                  pred.hours_budget, pred.peak_mb):
        assert math.isfinite(value) and value > 0
    assert pred.peak_mb == p.peak_mb and pred.sources["memory"].startswith("measured")


def test_in_process_plan_of_notebook_00_probes_every_kind_once():
    runs = plan.notebook_runs("00", "smoke", *TINY)
    result = plan.plan_runs(runs, title="nb00", steps=1, eval_rows=16, device="cpu",
                            isolate=False)
    assert [r.kind.split()[0] for r in result.rows] == ["mostpop", "IDSR", "MMSR-T", "MMSR-V",
                                                       "MMSR"]
    assert not any(r.error for r in result.rows)
    mostpop, *trained = result.rows
    assert mostpop.prediction.steps_per_epoch == 0 and mostpop.prediction.budget_epochs == 0
    for r in trained:
        p = r.prediction
        assert p.epoch_seconds > 0 and math.isfinite(p.peak_mb) and p.budget_epochs == 3
        assert r.hours_budget > 0
    assert math.isclose(result.hours_budget, sum(r.hours_budget for r in result.rows))
    assert "total" in plan.format_grid_plan(result)


# -- what changes cost -----------------------------------------------------------------------------
def test_cost_key_ignores_seed_rates_windows_and_names_but_not_the_shape():
    base = tiny("model.item_encoder=mm")
    key = plan.cost_key(base)
    for same in ("train.seed=7", "train.lr=3e-4", "train.encoder_lr=1e-5", "name=x",
                 "train.epochs=9", "train.patience=1", "data.train_windows=last",
                 "train.track_test=true", "model.dropout=0.3", "data.synth.seed=3",
                 "data.synth.domain=target", "train.weight_decay=0"):
        assert plan.cost_key(base.override(same)) == key, same
    for other in ("model.dim=32", "train.batch_size=16", "model.fusion=sum",
                  "model.finetune=full", "model.text_encoder=tiny-bert", "model.sequence=gru4rec",
                  "data.synth.n_items=80", "model.text_max_tokens=10", "model.item_encoder=text",
                  "data.max_len=10", "train.loss=ce"):
        assert plan.cost_key(base.override(other)) != key, other
    # the frozen caches are shared by rows that differ only downstream of the encoders
    assert plan.build_key(base.override("model.fusion=sum")) == plan.build_key(base)
    assert plan.build_key(base.override("model.top_blocks=1")) != plan.build_key(base)


def test_plan_runs_probes_each_cost_shape_once_and_counts_shared_runs_once():
    calls = []

    def probe_fn(cfg):
        calls.append(plan.describe_kind(cfg))
        return fake_probe(cfg)

    a = tiny("model.item_encoder=id")
    runs = [plan.PlannedRun("01", "s", ("x", seed, lr), a.override(f"train.seed={seed}",
                                                                   f"train.lr={lr}"))
            for seed in (1, 2, 3) for lr in (1e-3, 1e-4)]
    runs.append(plan.PlannedRun("02", "s", "shared", a.override("train.seed=1", "train.lr=1e-3")))
    runs.append(plan.PlannedRun("02", "s", "wide", a.override("model.dim=32")))
    result = plan.plan_runs(runs, probe_fn=probe_fn, device="cpu", capacity_mb=1e6)
    assert len(calls) == 2  # two shapes
    assert result.planned == 8 and result.runs == 7  # the shared run trains once
    first = result.rows[0]
    assert first.runs == 6 and first.notebooks == ["01", "02"]
    # every run: build + 3 epochs x (training + validation) + final evaluation (no caches)
    p = first.prediction
    per_run = 3 * (p.epoch_seconds + p.eval_seconds) + p.final_eval_seconds + p.build_seconds
    assert p.cache_seconds == 0 and math.isclose(first.hours_budget * 3600, 6 * per_run)


def test_a_frozen_cache_built_by_one_kind_is_charged_once_with_its_build_peak():
    built = set()

    def probe_fn(cfg):  # the first probe of a branch builds its cache, later ones map it
        p = fake_probe(cfg)
        r = cfg.resolved()
        caches = []
        for kind, name in (("text", r.model.text_encoder), ("vision", r.model.vision_encoder)):
            if name:
                first = name not in built
                built.add(name)
                caches.append({"key": name, "kind": kind, "seconds": 10.0 if first else 0.1,
                               "peak_mb": 5000.0 if first else 101.0, "built": first})
        return dataclasses.replace(p, caches=caches, cache_peak_mb=101.0,
                                   cache_seconds=sum(c["seconds"] for c in caches))

    base = tiny()
    runs = [plan.PlannedRun("nb", "s", label, base.override(*settings)) for label, settings in (
        ("text", ("model.item_encoder=text",)),
        ("text seed 2", ("model.item_encoder=text", "train.seed=2")),
        ("vision", ("model.item_encoder=vision", "model.mask_ratio=0")),
        ("mm", ("model.item_encoder=mm", "model.mask_ratio=0")))]
    result = plan.plan_runs(runs, probe_fn=probe_fn, device="cpu", capacity_mb=1e6)
    text, vision, mm = result.rows
    assert mm.prediction.cache_seconds == 20.0  # shown as if it built both of its caches
    assert mm.prediction.cache_peak_mb == 5000.0 == mm.prediction.peak_mb
    # but paid for once in the totals: by the first text run and by the vision run
    assert math.isclose(text.hours_budget, text.prediction.hours(3) * 2
                        - text.prediction.cache_seconds / 3600)
    assert math.isclose(vision.hours_budget, vision.prediction.hours(3))
    assert math.isclose(mm.hours_budget, mm.prediction.hours(3, cache=0))


def test_notebook_and_study_plans_print_a_total(monkeypatch, capsys):
    monkeypatch.setattr(plan, "probe", lambda cfg, **kw: fake_probe(cfg))
    assert main(["plan", "--notebook", "02", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "notebook 02_fusion (Table III) on profile smoke" in out
    # Table III's 12 rows, our 4 residual-DNN rows and the authors' gate and FiLM
    assert "18 configuration kind(s)" in out and "total:" in out and "cpu-hours" in out
    assert main(["plan", "--study", "--profile", "smoke", "--memory-mb", "1e6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study on profile smoke") and "total:" in out
    total = next(line for line in out.splitlines() if line.startswith("total: "))
    assert float(total.split()[1]) > 0


def test_unknown_notebook_is_one_line_error(capsys):
    assert main(["plan", "--notebook", "13", "--profile", "smoke"]) == 2
    assert "no grid for notebook '13'" in capsys.readouterr().err


def test_a_notebook_whose_grid_cannot_be_listed_is_left_out_of_the_study(monkeypatch):
    def missing(profile, overrides):
        from mmsr_lib.workbook import no_such_module  # noqa: F401

    monkeypatch.setitem(plan.NOTEBOOK_GRIDS, "02", ("02_fusion", missing))
    unavailable: dict[str, str] = {}
    runs = plan.study_runs("smoke", notebooks=["00", "02"], unavailable=unavailable)
    assert {r.notebook for r in runs} == {"00"} and list(unavailable) == ["02"]
    assert "no_such_module" in unavailable["02"]


# -- prediction arithmetic -------------------------------------------------------------------------
def test_expected_epochs_follow_the_patience_rule():
    assert plan.expected_epochs(200, 20) == 100  # best at 80, then 20 more
    assert plan.expected_epochs(150, 15) == 75
    assert plan.expected_epochs(3, 2) == 3  # capped at the budget
    assert plan.expected_epochs(100, 5, eval_every=2) == 50
    assert plan.expected_epochs(0, 5) == 0
    assert plan.expected_epochs(400, 40, min_epochs=320) == 320  # stop_after_decay: not before


def test_predict_scales_a_probe_on_a_smaller_catalog_by_the_counted_ratios():
    cfg = tiny("model.item_encoder=text")
    p = fake_probe(cfg)
    big = dataclasses.replace(p.counts, n_items=10 * p.counts.n_items,
                              distinct_items=2 * p.counts.distinct_items, windows=1000,
                              n_valid=500, n_test=500, n_cold_valid=0, n_cold_test=0)
    same, scaled = plan.predict(cfg, p), plan.predict(cfg, p, big)
    assert same.sources["step"].startswith("measured")
    assert scaled.sources["step"].startswith("extrapolated")
    assert math.isclose(scaled.step_seconds, 2 * p.step_seconds)
    assert scaled.steps_per_epoch == 32  # 1000 windows / 32, the last batch partial
    assert math.isclose(scaled.epoch_seconds, 1000 / 32 * 0.02)
    # one catalog encoding (x10 items) + 500 users at the measured per-user time (x10 items)
    assert math.isclose(scaled.eval_seconds, 0.5 * 10 + 0.01 * 10 * 500)
    assert math.isclose(scaled.cache_seconds, 20.0) and scaled.build_seconds == 1.0
    growth = (p.train_peak_mb - p.static_mb) * 2
    tables = (big.n_items - p.counts.n_items) * 16 * 12 / 2**20
    assert math.isclose(scaled.train_peak_mb, p.static_mb + growth + tables)
    assert scaled.cache_peak_mb == p.cache_peak_mb  # no host cache in this probe
    assert scaled.peak_mb == max(scaled.train_peak_mb, scaled.cache_peak_mb)
    # an ID model's step does not depend on the distinct items of a batch
    idsr = tiny("model.item_encoder=id")
    assert math.isclose(plan.predict(idsr, fake_probe(idsr), big).step_seconds, 0.01)


def test_extrapolate_through_one_or_two_points():
    assert plan.extrapolate(10, 10, 3.0) == (3.0, "measured")
    assert plan.extrapolate(20, 10, 3.0) == (6.0, "proportional")
    value, how = plan.extrapolate(40, 10, 3.0, 5, 2.0)  # y = 1 + 0.2 x
    assert math.isclose(value, 9.0) and how == "linear through two probes"
    assert plan.extrapolate(40, 10, 3.0, 5, 3.5)[0] == 3.5  # no growth measured: held flat


def test_a_catalog_too_large_to_probe_is_probed_twice_and_extrapolated_along_a_line():
    cfg = tiny("model.item_encoder=text", "data.synth.n_items=400", "data.synth.n_users=300")

    def probe_fn(c):  # a step that costs 10 ms + 1 ms per distinct item; ranking flat per user
        p = fake_probe(c)
        return dataclasses.replace(p, step_seconds=0.01 + 0.001 * p.counts.distinct_items,
                                   catalog_seconds=0.002 * p.counts.n_items)

    out = plan.plan_config(cfg, probe_fn=probe_fn, device="cpu", max_probe_items=200,
                           capacity_mb=1e6)
    assert out.probed.data.synth.n_items == 200 and out.small.counts.n_items == 100
    target = plan.data_counts(out.config)
    assert target.n_items > 200 and target.distinct_items > out.probe.counts.distinct_items
    pred = out.prediction
    assert math.isclose(pred.step_seconds, 0.01 + 0.001 * target.distinct_items)
    assert "linear through two probes" in pred.sources["step"]
    assert math.isclose(pred.eval_seconds, 0.002 * target.n_items + 0.01 * target.n_valid)
    assert pred.steps_per_epoch == target.steps_per_epoch
    assert any("probed on a smaller catalog" in n for n in pred.notes)


def test_a_softmax_step_is_extrapolated_along_the_catalog_not_the_batch():
    cfg = tiny("model.item_encoder=text", "train.loss=ce")
    p = fake_probe(cfg)
    c = p.counts
    big = dataclasses.replace(p.counts, n_items=10 * c.n_items)
    small = dataclasses.replace(p, counts=dataclasses.replace(c, n_items=c.n_items // 2),
                                step_seconds=0.005)  # 5 ms at half the catalog, 10 ms at it
    pred = plan.predict(cfg, p, big, small=small)
    assert math.isclose(pred.step_seconds, 0.01 + (0.005 / (c.n_items - c.n_items // 2))
                        * (big.n_items - c.n_items))
    assert "catalog items (loss ce)" in pred.sources["step"]


def test_track_test_adds_a_test_evaluation_per_epoch():
    cfg = tiny("model.item_encoder=id")
    p = fake_probe(cfg)
    a, b = plan.predict(cfg, p), plan.predict(cfg.override("train.track_test=true"), p)
    c = p.counts
    assert math.isclose(a.eval_seconds, 0.5 + 0.01 * c.n_valid)
    assert math.isclose(b.eval_seconds, 2 * 0.5 + 0.01 * (c.n_valid + c.n_test))


# -- memory ----------------------------------------------------------------------------------------
def test_fits_uses_the_headroom():
    assert plan.fits(899, 1000) is True and plan.fits(901, 1000) is False
    assert plan.fits(10, None) is None


def test_a_config_that_does_not_fit_gets_re_probed_suggestions():
    cfg = tiny("model.item_encoder=id", "train.batch_size=64")
    # fake memory: 100 + 10 MiB per batch row: 740 at 64, 420 at 32, 260 at 16, 180 at 8
    one = plan.plan_config(cfg, probe_fn=fake_probe, capacity_mb=500, device="cpu")
    assert one.prediction.fits is False and one.prediction.peak_mb == 740
    assert [(s["change"], s["peak_mb"], s["fits"]) for s in one.suggestions] == [
        ("train.batch_size=32", 420, True)]
    text = plan.format_config_plan(one)
    assert "DOES NOT FIT" in text and "try train.batch_size=32: needs 420 MiB (fits)" in text
    tight = plan.plan_config(cfg, probe_fn=fake_probe, capacity_mb=200, device="cpu")
    assert [(s["change"], s["fits"]) for s in tight.suggestions] == [
        ("train.batch_size=32", False), ("train.batch_size=16", False),
        ("train.batch_size=8", True)]
    roomy = plan.plan_config(cfg, probe_fn=fake_probe, capacity_mb=10_000, device="cpu")
    assert roomy.prediction.fits is True and roomy.suggestions == []


def test_encoder_changes_are_suggested_for_content_models():
    cfg = tiny("model.item_encoder=text", "model.finetune=full")
    changes = [c for c, _ in plan.fit_candidates(cfg)]
    assert changes[:3] == ["train.batch_size=16", "train.batch_size=8", "train.batch_size=4"]
    assert "model.finetune=top" in changes and "model.finetune=frozen" in changes
    assert "model.text_max_tokens=10" in changes
    assert all(not c.startswith("model.") for c, _ in
               plan.fit_candidates(tiny("model.item_encoder=id")))


# -- stand-ins -------------------------------------------------------------------------------------
def test_paper_profile_offline_uses_paper_size_stand_ins():
    from mmsr_lib.util import registry

    cfg = profile_config("paper").override("model.item_encoder=mm")
    planned, notes = plan.stand_in(cfg)
    s = planned.data.synth
    assert planned.data.source == "synthetic"
    assert (s.n_users, s.n_items, s.mean_seq_len) == (200_000, 85_019, 31.39)
    if registry.lookup("text_encoder", "roberta-base").missing():
        assert planned.model.text_encoder == "random:roberta-base"
        assert any("random:roberta-base" in n for n in notes)
    assert planned.model.dim == 768 and planned.train.epochs == 150
    # on CPU a content model is probed on a small catalog of the same kind, an ID model is not
    assert plan.probe_config(planned, "cpu").data.synth.n_items == plan.CPU_PROBE_ITEMS
    idsr, _ = plan.stand_in(profile_config("paper").override("model.item_encoder=id"))
    assert plan.probe_config(idsr, "cpu").data.synth.n_items == 85_019
    assert plan.paper_dataset_size("data/bili-20k") == ("Bili-20K", 20_000, 76_178, 17.95)


# -- predicted vs measured -------------------------------------------------------------------------
def test_validate_plan_compares_with_runs_it_trained(tmp_path, capsys):
    store = ResultsStore(tmp_path / "r.sqlite")
    configs = {name: tiny(*s, "train.epochs=2", f"name={name}")
               for name, s in (("idsr", ("model.item_encoder=id",)),
                               ("gru", ("model.item_encoder=id", "model.sequence=gru4rec")),
                               ("text", ("model.item_encoder=text",)))}
    for cfg in configs.values():
        run_or_load(cfg, store=store, progress=False)
    configs["not run"] = tiny("model.item_encoder=vision")
    table = plan.validate_plan(store, configs, steps=1, eval_rows=16, device="cpu",
                               isolate=False)
    assert list(table["run"]) == ["idsr", "gru", "text"]
    assert (table["epochs"] == 2).all()
    for col in ("ratio", "eval ratio", "measured s/epoch", "predicted s/epoch"):
        assert table[col].map(math.isfinite).all() and (table[col] > 0).all()
    assert "predicted / measured s/epoch" in capsys.readouterr().out


def test_train_notebook_trains_every_planned_run_once_sources_first(tmp_path):
    """`mmsr grid 08 --train`: notebook 08's runs as one queue in two worker processes; its
    transfer rows warm-start from source runs of the same queue, so those must be stored first
    (a transfer started before its source would fail to find the checkpoint)."""
    from mmsr_lib.runs.store import ResultsStore

    store = ResultsStore(tmp_path / "results.sqlite")
    planned = {r.config.resolved().hash() for r in plan.notebook_runs("08", "smoke")}
    warm = {r.config.resolved().train.init_from for r in plan.notebook_runs("08", "smoke")}
    assert warm - {None} and (warm - {None}) <= planned  # the queue holds its own sources
    counts = plan.train_notebook("08", "smoke", store=store, workers=2, progress=False)
    assert counts == {"runs": len(planned), "stored": 0, "trained": len(planned), "retrained": 0}
    assert {r.config_hash for r in store.records()} == planned
    again = plan.train_notebook("08", "smoke", store=store, workers=2, progress=False)
    assert again == {"runs": len(planned), "stored": len(planned), "trained": 0, "retrained": 0}


def test_only_selects_rows_by_section_and_label_and_says_what_there_is():
    """`--only REGEX` (grid and plan): matched case-insensitively against "section / row";
    a pattern that matches nothing, or is not a pattern, is an error naming the rows."""
    runs = plan.notebook_runs("08", "smoke")
    kept = plan.notebook_runs("08", "smoke", only="table x /.*transfer")
    assert kept and all(r.section == "Table X" and "Transfer" in plan.label_text(r.label)
                        for r in kept)
    assert [r.config.hash() for r in kept] == [
        r.config.hash() for r in runs
        if r.section == "Table X" and "Transfer" in plan.label_text(r.label)]
    assert plan.select_runs(runs, None) == runs
    with pytest.raises(ValueError, match="matches no row.*Table IX / MMSR / Scratch"):
        plan.notebook_runs("08", "smoke", only="no such row")
    with pytest.raises(ValueError, match="not a regular expression"):
        plan.notebook_runs("08", "smoke", only="(")


def test_train_notebook_only_trains_the_matched_rows_and_their_sources(tmp_path):
    """`mmsr grid 08 --train --only 'Transfer HM-100K'`: the transfer row and the source run it
    warm-starts from (which the pattern does not match), nothing else."""
    from mmsr_lib.runs.store import ResultsStore

    store = ResultsStore(tmp_path / "results.sqlite")
    (transfer,) = plan.notebook_runs("08", "smoke", only="Transfer HM-100K")
    source = transfer.config.resolved().train.init_from
    assert source and source != transfer.config.resolved().hash()
    counts = plan.train_notebook("08", "smoke", store=store, workers=1, progress=False,
                                 only="Transfer HM-100K")
    assert counts == {"runs": 2, "stored": 0, "trained": 2, "retrained": 0}
    assert {r.config_hash for r in store.records()} == {source, transfer.config.resolved().hash()}


def test_runs_whose_weights_a_notebook_reads_list_as_no_weights_and_train_again(tmp_path):
    """Notebook 10 reads each run's trained weights: a stored record without them here (as one
    imported from docs/runs; here its checkpoint is deleted) lists as "no weights", and `mmsr
    grid 10 --train` trains it again (forced: the record is replaced when the re-run completes),
    after which it is stored. Arrays kept from this very training (`runs.derived`) stand for
    the weights, a copy kept from another training of the config does not; a model without
    weights (most-popular) never lacks them; without `reads_weights` the run is just stored."""
    from dataclasses import replace

    from mmsr_lib.runs import derived
    from mmsr_lib.runs.trained import checkpoint_path
    from mmsr_lib.workbook import cold_start, embeddings

    store = ResultsStore(tmp_path / "results.sqlite")
    recipe = plan.VECTORS_RECIPE
    runs = plan.notebook_runs("10", "smoke", "train.epochs=1")
    assert len(runs) == 2 and all(r.reads_weights == recipe for r in runs)
    counts = plan.train_notebook("10", "smoke", "train.epochs=1", store=store, workers=1,
                                 progress=False)
    assert counts == {"runs": 2, "stored": 0, "trained": 2, "retrained": 0}
    first, second = (r.config for r in runs)
    old = store.get(first.resolved().hash())
    assert plan.run_state(first, store, recipe) == "stored"
    checkpoint_path(old).unlink()
    assert plan.run_state(first, store, recipe) == "no weights"
    assert plan.run_state(first, store) == "stored"  # its results still draw every table

    counts = plan.train_notebook("10", "smoke", "train.epochs=1", store=store, workers=1,
                                 progress=False)
    assert counts == {"runs": 2, "stored": 2, "trained": 1, "retrained": 1}
    new = store.get(first.resolved().hash())
    assert new.updated != old.updated and checkpoint_path(new).is_file()
    assert plan.run_state(first, store, recipe) == "stored"

    # what notebooks 10 and 07 keep from the weights (their real recipes) stands for them
    rec = store.get(second.resolved().hash())
    embeddings.model_vectors({"MMSR": [rec]}, store=store)
    cold_start.evaluate_cold(rec, "paper", store=store)
    checkpoint_path(rec).unlink()
    assert plan.run_state(second, store, recipe) == "stored"
    assert plan.run_state(second, store, plan.COLD_RECIPE) == "stored"
    assert plan.run_state(second, store, plan.REEVALUATE_RECIPE) == "no weights"
    # ... but not when kept from another training of the config (`first`'s replaced record)
    checkpoint_path(new).unlink()
    kept = derived.Entry(new.config_hash, f"{recipe} split=test", old.updated, "code",
                         derived.pack({"items": np.zeros((3, 2))}), "2026-12-07")
    derived.add(store, kept)
    assert plan.run_state(first, store, recipe) == "no weights"
    derived.add(store, replace(kept, run_updated=new.updated))
    assert plan.run_state(first, store, recipe) == "stored"

    mostpop = plan.notebook_runs("11", "smoke", only="MostPop")[0]
    assert mostpop.reads_weights == plan.REEVALUATE_RECIPE
    run_or_load(mostpop.config, store=store, progress=False)
    assert plan.run_state(mostpop.config, store, mostpop.reads_weights) == "stored"


def test_overrides_reach_every_section_but_catalog_settings_keep_a_real_data_set(caplog):
    """`mmsr grid 03 --set ...`: MovieLens-100K's rows take the training settings too, but not
    the settings that choose the data set (the notebooks apply `data_path` to the synthetic
    catalog only); what is not applied is logged by name instead of being dropped silently."""
    import logging

    caplog.set_level(logging.WARNING, logger="mmsr.plan")
    runs = plan.notebook_runs("03", "cpu", "train.epochs=7", "data.path=/tmp/elsewhere",
                              "data.source=path", only="MovieLens")
    assert runs and all(r.config.train.epochs == 7 for r in runs)
    assert all(r.config.data.source == "movielens-100k" and r.config.data.path is None
               for r in runs)
    assert "data.path=/tmp/elsewhere" in caplog.text and "data.source=path" in caplog.text
    assert "Table IV MovieLens-100K" in caplog.text
    synthetic = plan.notebook_runs("03", "cpu", "train.epochs=7", only="^Table IV / ")
    assert all(r.config.train.epochs == 7 for r in synthetic)


def test_notebook_10_lists_the_runs_it_loads_with_the_same_overrides():
    """Notebook 10 loads Table IV's SASRec IDSR / MMSR runs of its `data_path`: the listed runs
    take the same overrides, so `mmsr grid 10 --set data.path=...` lists what it would load."""
    from mmsr_lib.workbook import grids

    setting = "train.weight_decay=0.0042"
    table4 = {cfg.override("train.seed=42").hash()
              for key, cfg in grids.table4_configs("smoke", setting).items()
              if key in (("SASRec", "IDSR"), ("SASRec", "MMSR"))}
    assert {r.config.hash() for r in plan.notebook_runs("10", "smoke", setting)} == table4
