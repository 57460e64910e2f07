"""Trainer: exact resume, NaN handling, optimiser groups and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_sequences

from mmsr_lib.config import profile_config
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import build_sequences
from mmsr_lib.evaluate import evaluate_model
from mmsr_lib.runs.runner import build_model
from mmsr_lib.train import build_optimizer, epoch_seconds, fit, linear_decay


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    # users walk along a cycle of 40 items, so there is a sequential pattern to learn
    seqs = {}
    for u in range(60):
        start, n = rng.integers(40), rng.integers(6, 18)
        seqs[f"u{u}"] = [f"i{(start + k) % 40}" for k in range(n)]
    root = write_sequences(tmp_path_factory.mktemp("cyc") / "d", seqs)
    return build_sequences(load_dataset(root), max_len=8)


def small_cfg(seq="sasrec", **kw):
    return profile_config("smoke").override(
        f"model.sequence={seq}", "model.dim=16", "train.epochs=4", "train.patience=10",
        "train.batch_size=16", "train.lr=0.01", *[f"{k}={v}" for k, v in kw.items()]
    )


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("seq", ["sasrec", "gru4rec", "nextitnet"])
def test_resume_equals_uninterrupted(data, tmp_path, seq):
    cfg = small_cfg(seq)
    full = build_model(cfg, data)
    res_full = fit(full, data, cfg, run_dir=tmp_path / "full", progress=False)

    def kill_after_epoch_1(epoch, record):
        if epoch == 1:
            raise Interrupt

    part = build_model(cfg, data)
    with pytest.raises(Interrupt):
        fit(part, data, cfg, run_dir=tmp_path / "part", progress=False, on_epoch_end=kill_after_epoch_1)
    resumed = build_model(cfg, data)  # a fresh process would rebuild the model like this
    res = fit(resumed, data, cfg, run_dir=tmp_path / "part", progress=False)
    assert res.resumed_from == 1
    # the run's time covers both processes: the two epochs before the resume are counted
    assert res.earlier_seconds == epoch_seconds(res.history[:2]) > 0
    assert res.train_seconds > res.earlier_seconds
    assert [h["loss"] for h in res.history] == [h["loss"] for h in res_full.history]
    assert res.best_valid == res_full.best_valid and res.best_epoch == res_full.best_epoch
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_training_learns_the_sequential_pattern(data):
    cfg = small_cfg("sasrec", **{"train.epochs": 15})
    model = build_model(cfg, data)
    before = evaluate_model(model, data.eval_set("valid")).metrics["HR@10"]
    res = fit(model, data, cfg, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    # a random ranking of the ~30 unmasked items hits the target in the top 10 about a third of the time
    assert res.best_valid["HR@10"] > max(before, 80.0)


def test_best_checkpoint_is_restored(data):
    cfg = small_cfg("sasrec", **{"train.epochs": 6})
    model = build_model(cfg, data)
    res = fit(model, data, cfg, progress=False)
    again = evaluate_model(model, data.eval_set("valid")).metrics
    assert again == pytest.approx(res.best_valid)


def test_nan_loss_is_a_clear_error_and_keeps_checkpoint(data, tmp_path):
    cfg = small_cfg("sasrec", **{"train.epochs": 3})
    model = build_model(cfg, data)

    def poison(epoch, record):
        with torch.no_grad():
            model.item_encoder.embedding.weight.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="loss is nan at epoch 2 .*checkpoint of the last finished epoch is intact"):
        fit(model, data, cfg, run_dir=tmp_path / "r", progress=False, on_epoch_end=poison)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 0 and torch.isfinite(ck["model"]["item_encoder.embedding.weight"]).all()


def test_checkpoint_of_other_config_is_refused(data, tmp_path):
    cfg = small_cfg("sasrec", **{"train.epochs": 1})
    fit(build_model(cfg, data), data, cfg, run_dir=tmp_path / "r", progress=False)
    other = cfg.override("train.lr=0.5")
    with pytest.raises(RuntimeError, match="another configuration"):
        fit(build_model(other, data), data, other, run_dir=tmp_path / "r", progress=False)


def test_linear_decay_schedule():
    f = linear_decay(total_steps=150, decay_to=0.1, decay_frac=0.8)
    assert f(0) == 1.0
    assert f(60) == pytest.approx(1 - 0.9 * 0.5)
    assert f(120) == pytest.approx(0.1) and f(149) == pytest.approx(0.1)


def plateau_cfg(**kw):
    return small_cfg("sasrec", **{"train.schedule": "plateau", "train.patience": 3,
                                  "train.plateau": 1, **kw})


def test_stop_after_decay_lets_patience_end_a_run_only_once_the_decay_is_over(data):
    """`train.stop_after_decay` (cpu, BCE): a stalled run trains on until the linear decay has
    ended (epoch decay_frac x epochs), then stops; before that epoch it is the same run."""
    base = small_cfg("sasrec", **{"train.epochs": 10, "train.patience": 1, "train.lr": 1e-6,
                                  "train.decay_frac": 0.6})
    free = fit(build_model(base, data), data, base, progress=False)
    held_cfg = base.override("train.stop_after_decay=true")
    held = fit(build_model(held_cfg, data), data, held_cfg, progress=False)
    assert free.stopped_early and free.epochs_run < 6  # the case stalls at once
    assert held.epochs_run >= 6  # the decay ends after epoch 6 of 10
    # the trainer and the planner read the floor from one rule
    assert (held_cfg.resolved().train.min_epochs(), base.resolved().train.min_epochs()) == (6, 0)
    assert [h["loss"] for h in held.history[:free.epochs_run]] == [h["loss"] for h in free.history]


def test_plateau_schedule_halves_on_stalls_and_ignores_the_budget(data):
    """`plateau`: the rates halve after each stalled validation (plateau=1), never below 10%, and a
    run that converges under one epoch cap is the same run, epoch for epoch, under a larger one."""
    runs = [fit(build_model(plateau_cfg(**{"train.epochs": cap}), data), data,
                plateau_cfg(**{"train.epochs": cap}), progress=False) for cap in (40, 80)]
    short, long = runs
    assert short.stopped_early and short.converged and short.epochs_run < 40
    assert [(h["loss"], h["lr"]) for h in short.history] == [(h["loss"], h["lr"]) for h in long.history]
    best, lr, expected = -1.0, 0.01, []
    for h in short.history:
        expected.append(lr)
        score = h["valid"]["NDCG@10"]
        if score > best:
            best = score
        else:  # a stall: the next epoch runs at half the rate, down to decay_to (0.1) of the start
            lr = max(lr * 0.5, 0.01 * 0.1)
    assert [h["lr"] for h in short.history] == pytest.approx(expected)
    assert min(expected) < 0.01  # the case was chosen to stall: the rule was exercised


def test_each_schedule_keeps_only_its_own_knobs_in_the_run_identity():
    """The paper's linear decay by default; cpu BCE runs (Table V) take `plateau` (patience // 2)
    under a cap that is only a ceiling. The other schedule's fields are None, so they cannot
    split one run into two hashes."""
    cpu = profile_config("cpu").resolved().train
    assert (cpu.schedule, cpu.plateau, cpu.decay_frac, cpu.stop_after_decay) == (
        "linear", None, 0.8, False)
    assert profile_config("cpu").override("train.plateau=3").hash() == profile_config("cpu").hash()
    bce = profile_config("cpu").override("train.loss=bce")
    t = bce.resolved().train
    assert (t.schedule, t.plateau, t.decay_frac, t.stop_after_decay) == (
        "plateau", t.patience // 2, None, None)
    assert bce.override("train.decay_frac=0.5").hash() == bce.hash()
    assert profile_config("paper").override("train.loss=bce").resolved().train.schedule == "linear"
    # a resolved plateau run switched back to linear gets the paper's decay length again
    back = bce.resolved().override("train.schedule=linear").resolved().train
    assert (back.decay_frac, back.plateau, back.stop_after_decay) == (0.8, None, False)


def test_plateau_schedule_resumes_exactly(data, tmp_path):
    cfg = plateau_cfg(**{"train.epochs": 40})
    full = fit(build_model(cfg, data), data, cfg, run_dir=tmp_path / "full", progress=False)
    first_drop = next(i for i, h in enumerate(full.history) if h["lr"] < 0.01)

    def kill(epoch, record):  # after the first rate drop: the scheduler's state must come back
        if epoch == first_drop + 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(build_model(cfg, data), data, cfg, run_dir=tmp_path / "part", progress=False,
            on_epoch_end=kill)
    res = fit(build_model(cfg, data), data, cfg, run_dir=tmp_path / "part", progress=False)
    assert res.resumed_from == first_drop + 1
    assert [(h["loss"], h["lr"]) for h in res.history] == [(h["loss"], h["lr"]) for h in full.history]


def test_optimizer_groups_weight_decay(data):
    cfg = small_cfg("sasrec")
    opt = build_optimizer(build_model(cfg, data), cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["downstream"]["weight_decay"] == 0.1
    assert groups["downstream_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim < 2 for p in groups["downstream_no_decay"]["params"])


def test_warm_start_carries_content_weights_but_never_id_weights(tmp_path):
    """train.init_from (transfer): encoders, fusion and sequence model carry over, ID rows not."""
    from mmsr_lib.runs.runner import run_experiment, warm_start

    base = profile_config("smoke").override(
        "model.dim=16", "train.epochs=1", "data.synth.n_users=60", "data.synth.n_items=40",
        f"train.checkpoint_dir={tmp_path / 'runs'}")
    text = base.override("model.item_encoder=text")
    run_experiment(text, progress=False)
    target = text.override("data.synth.domain=target", f"train.init_from={text.hash()}")
    data = load_data_for(target)
    model = build_model(target, data)
    src = torch.load(tmp_path / "runs" / text.hash() / "checkpoint.pt", weights_only=True)
    for name, tensor in src["best_state"].items():
        assert torch.equal(model.state_dict()[name], tensor), name
    run_experiment(base, progress=False)  # an ID SASRec
    report = warm_start(build_model(base, load_data_for(base)), base.hash(),
                        str(tmp_path / "runs"))
    assert "item_encoder.embedding.weight" in report["skipped"]
    assert report["loaded"] and all(n.startswith("sequence_model.") for n in report["loaded"])
    gru = base.override("model.sequence=gru4rec")
    with pytest.raises(ValueError, match="nothing to transfer"):
        warm_start(build_model(gru, load_data_for(gru)), base.hash(), str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a run hash"):
        build_model(base.override("train.init_from=0123456789abcdef"), load_data_for(base))


def load_data_for(cfg):
    from mmsr_lib.runs.runner import load_data

    return load_data(cfg.resolved().data)
