"""RecBole's SASRec on our split: same targets user by user, and its scores ranked by our
evaluator agree with RecBole's own evaluator where the two protocols coincide."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsr_lib.config import profile_config
from mmsr_lib.data.history import History
from mmsr_lib.data.preprocess import EvalSet
from mmsr_lib.evaluate import evaluate_model, metrics_from_ranks
from mmsr_lib.runs.runner import load_data
from mmsr_lib.workbook import recbole_check as rc


class _Recorder(torch.nn.Module):
    """A stand-in RecBole sequential model: scores item j of row b as 1000 * b + j and keeps
    what it was given."""

    ITEM_SEQ, ITEM_SEQ_LEN = "item_id_list", "item_length"

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items, self.seen = n_items, None

    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        self.seen = batch
        rows = torch.arange(len(batch[self.ITEM_SEQ_LEN]), dtype=torch.float32)[:, None]
        return 1000 * rows + torch.arange(self.n_items + 1, dtype=torch.float32)


def test_scorer_turns_left_padded_inputs_into_recbole_sequences_and_back():
    mapping = np.array([0, 3, 1, 2])  # our item i is RecBole's item mapping[i]
    model = _Recorder(3)
    scorer = rc.RecBoleScorer(model, mapping, dict)
    scores = scorer(torch.tensor([[0, 0, 1, 2], [3, 1, 1, 2], [0, 0, 0, 3]]))
    assert model.seen["item_id_list"].tolist() == [[3, 1, 0, 0], [2, 3, 3, 1], [2, 0, 0, 0]]
    assert model.seen["item_length"].tolist() == [2, 4, 1]
    # our column i holds RecBole's score of mapping[i]
    assert scores[1].tolist() == [1000.0, 1003.0, 1001.0, 1002.0]


def _smoke_data():
    cfg = profile_config("smoke").override("data.source=synthetic").resolved()
    return load_data(cfg.data)


def test_atomic_file_keeps_our_order_as_time(tmp_path):
    data = _smoke_data()
    path = rc.write_atomic(data, tmp_path, "x")
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert len(lines) - 1 == sum(len(s) for s in data.seqs)
    first = [line.split("\t") for line in lines[1 : 1 + len(data.seqs[0])]]
    assert [int(i[1:]) for _, i, _ in first] == data.seqs[0].tolist()
    assert [float(t) for _, _, t in first] == list(range(len(data.seqs[0])))


def test_recbole_sasrec_on_our_split_and_both_evaluators(tmp_path, monkeypatch):
    try:
        rc.import_recbole()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    data = _smoke_data()
    captured = {}
    real = rc.evaluate_model

    def keep(model, eval_set, **kw):  # keep the trained model to rank it once more below
        captured["model"], captured["scorer"] = model, kw["scorer"]
        return real(model, eval_set, **kw)

    monkeypatch.setattr(rc, "evaluate_model", keep)
    # RecBole reads `--key=value` from the command line too: ours must not reach its config
    monkeypatch.setattr("sys.argv", ["mmsr", "check-sasrec", "--epochs=7"])
    run = rc.train_recbole_sasrec(data, tmp_path / "work", seed=1, epochs=2)
    monkeypatch.undo()
    assert run.split_mismatches == {"valid": 0, "test": 0}  # every user's targets are ours
    assert run.epochs_run == 2 and 1 <= run.best_epoch <= 2 and not run.converged
    assert len(run.test_ranks) == data.n_users
    assert metrics_from_ranks(np.array(run.test_ranks))["NDCG@10"] == pytest.approx(
        run.test["NDCG@10"])
    # RecBole ranks sequential models without masking the user's history: ours, told to mask
    # nothing, must give RecBole's numbers (it rounds them to four decimals of a fraction)
    test = data.eval_set("test")
    bare = EvalSet(test.inputs, test.targets, History.from_lists([[]] * len(test)), test.users)
    ours = evaluate_model(captured["model"], bare, scorer=captured["scorer"]).metrics
    for name, value in run.test_recbole.items():
        assert ours[name] == pytest.approx(value, abs=0.006), name
    assert run.test["HR@10"] >= ours["HR@10"]  # masking seen items only helps the target
    # the run is kept as JSON and read back equal
    again = rc.RecBoleRun.load(run.save(tmp_path / "run.json"))
    assert again == run
    assert not (tmp_path / "work" / "saved").exists() or not any(
        (tmp_path / "work" / "saved").iterdir())  # no checkpoint pickled to disk


def test_train_or_load_reuses_the_stored_run(tmp_path, monkeypatch):
    data = _smoke_data()
    stored = rc.RecBoleRun(seed=7, settings={"learning_rate": 0.01, "epochs": 300},
                           test={"NDCG@10": 1.0})
    stored.save(rc.run_file(tmp_path, 7, 0.01, 0.2))

    def must_not_train(*a, **k):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(rc, "train_recbole_sasrec", must_not_train)
    assert rc.train_or_load(data, tmp_path, 7, 0.01, 0.2) == stored
    assert rc.train_or_load(data, tmp_path, 7, 0.01, 0.2, epochs=300) == stored  # its budget
    with pytest.raises(ValueError, match="other settings.*another --folder"):
        rc.train_or_load(data, tmp_path, 7, 0.01, 0.2, epochs=5)


def test_stored_check_pairs_our_stored_runs_with_recboles_kept_ones(tmp_path):
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore

    store, folder = ResultsStore(tmp_path / "r.sqlite"), tmp_path / "ref"
    check = rc.stored_check(store, "smoke", "synthetic", (1,), folder=folder)
    assert "has not been run" in check.text and check.test is None
    cfg, _ = rc.our_sasrec("smoke", "synthetic")
    ours = run_or_load(cfg.override("train.seed=1"), store=store)
    ranks = store.ranks(ours.config_hash)["test"]
    # a kept RecBole run that ranks every user's target 5 places lower than ours
    theirs = rc.RecBoleRun(seed=1, settings={}, test=metrics_from_ranks(ranks + 5),
                           test_recbole=metrics_from_ranks(ranks + 5), best_epoch=3,
                           epochs_run=13, converged=True, test_ranks=(ranks + 5).tolist())
    theirs.save(rc.run_file(folder, 1, rc.RECBOLE_DEFAULTS["learning_rate"],
                            rc.RECBOLE_DEFAULTS["dropout"]))
    check = rc.stored_check(store, "smoke", "synthetic", (1,), folder=folder)
    assert check.test is not None and check.test.diff > 0  # ours minus RecBole's NDCG@10
    assert check.table["seeds"].tolist() == [1, 1, 1]
    expected = "ours beats RecBole" if check.test.significant else "no significant difference"
    if not ours.extra.get("converged"):
        expected = "no claim"
    assert expected in check.text, check.text


def _kept(folder, seed, lr, dropout, valid, converged=True):
    run = rc.RecBoleRun(seed=seed, settings={"learning_rate": lr, "hidden_dropout_prob": dropout},
                        converged=converged, valid={"NDCG@10": valid}, test={"NDCG@10": 99.0},
                        best_epoch=5, epochs_run=15)
    run.save(rc.run_file(folder, seed, lr, dropout))


def test_the_tuned_setting_is_chosen_on_validation_among_converged_runs(tmp_path):
    assert rc.tuned_setting(rc.kept_runs(tmp_path, 42)) is None
    assert rc.resolve_setting([], 42, None, None) == (1e-3, 0.5, "RecBole's defaults")
    _kept(tmp_path, 42, 1e-3, 0.5, valid=6.0)
    _kept(tmp_path, 42, 3e-3, 0.2, valid=7.5)
    _kept(tmp_path, 42, 1e-2, 0.2, valid=9.0, converged=False)  # ran out of budget: not chosen
    _kept(tmp_path, 43, 1e-3, 0.1, valid=20.0)  # another seed: not part of the search
    search = rc.kept_runs(tmp_path, 42)
    assert rc.tuned_setting(search) == (3e-3, 0.2)
    lr, dropout, source = rc.resolve_setting(search, 42, None, None)
    assert (lr, dropout) == (3e-3, 0.2) and "among 3 setting(s) tried at seed 42" in source
    assert rc.resolve_setting(search, 42, 1e-3, None) == (1e-3, 0.5, "as given")
    table = rc.search_table(search)
    assert table["valid NDCG@10"].tolist() == [9.0, 7.5, 6.0]  # best first; test never ranks
    assert table["converged"].tolist() == [False, True, True]
