"""What is derived from a run's trained weights is kept with the run: notebooks 07, 10 and 11
draw from the store, and from an imported archive, where the weights are gone."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmsr_lib.config import profile_config
from mmsr_lib.runs import archive, derived
from mmsr_lib.runs.runner import LOAD_ONLY_ENV, run_or_load
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.runs.trained import checkpoint_path
from mmsr_lib.workbook import cold_start, embeddings, protocol


@pytest.fixture
def idsr_run():
    """One short IDSR run of the smoke profile on a small catalog, with its checkpoint."""
    cfg = profile_config("smoke").override(
        "data.synth.n_users=90", "data.synth.n_items=70", "train.epochs=2", "model.dim=16",
        "name=t-derived")
    store = ResultsStore()
    return store, run_or_load(cfg, store=store, progress=False)


def test_pack_round_trips_numbers_and_refuses_objects():
    arrays = {"ranks": np.arange(5), "vectors": np.ones((3, 2), np.float32)}
    back = derived.unpack(derived.pack(arrays))
    assert back.keys() == arrays.keys()
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())
    with pytest.raises(TypeError, match="dtype object"):
        derived.pack({"names": np.array(["a", None], dtype=object)})


def test_paper_cold_ranks_outlive_the_checkpoint_and_travel_in_the_archive(
        idsr_run, tmp_path, monkeypatch):
    """Computed once from the weights and stored; then read back with the checkpoint deleted,
    under MMSR_LOAD_ONLY=1, and from another store that imported the run's archive file."""
    store, rec = idsr_run
    first = cold_start.evaluate_cold(rec, "paper", store=store)
    assert [e.recipe for e in derived.entries(store, rec.config_hash)] == [
        "cold_start.evaluate_cold mode=paper split=test"]
    assert np.array_equal(first.ranks, cold_start.evaluate_cold(rec, "paper").ranks)  # no store

    checkpoint_path(rec).unlink()
    with pytest.raises(FileNotFoundError):
        cold_start.evaluate_cold(rec, "paper")  # without the store: the weights are needed
    monkeypatch.setenv(LOAD_ONLY_ENV, "1")
    again = cold_start.evaluate_cold(rec, "paper", store=store)
    assert np.array_equal(again.ranks, first.ranks) and again.metrics == first.metrics
    assert np.array_equal(again.leaked, first.leaked)

    folder = tmp_path / "archive"
    archive.write_archive(store, folder)
    other = ResultsStore(tmp_path / "other.sqlite")
    report = archive.import_archive(other, folder)
    assert len(report.written) == 1 and report.derived_added == 1
    assert "results derived from weights added 1" in report.lines("imported")[0]
    assert archive.import_archive(other, folder).derived_added == 0  # kept, not added twice
    imported = other.get(rec.config_hash)
    assert np.array_equal(cold_start.evaluate_cold(imported, "paper", store=other).ranks,
                          first.ranks)
    # the target protocol was never derived: nothing to read, nothing computed, and it says so
    with pytest.raises(FileNotFoundError, match="MMSR_LOAD_ONLY=1 computes nothing"):
        cold_start.evaluate_cold(imported, "target", store=other)


def test_an_archived_run_without_derived_results_keeps_its_document(idsr_run):
    store, rec = idsr_run
    doc = archive.run_document(rec, store.ranks(rec.config_hash),
                               derived.entries(store, rec.config_hash))
    assert "derived" not in doc  # the archive's existing files do not change


def test_other_code_recomputes_where_the_weights_are_else_warns(idsr_run, monkeypatch, caplog):
    store, rec = idsr_run
    vectors = embeddings.model_vectors({"IDSR": [rec]}, store=store)
    recipe = "embeddings.model_vectors split=test"
    old = derived.entries(store, rec.config_hash, recipe)
    assert len(old) == 1
    monkeypatch.setattr(derived, "code_digest", lambda module: "other-code")
    embeddings.model_vectors({"IDSR": [rec]}, store=store)  # weights at hand: computed again
    new = derived.entries(store, rec.config_hash, recipe)
    assert [e.code for e in new] == ["other-code"]  # the replacement, then the old one dropped
    monkeypatch.setattr(derived, "code_digest", lambda module: "newer-code")
    checkpoint_path(rec).unlink()
    with caplog.at_level(logging.WARNING, logger="mmsr.derived"):
        kept = embeddings.model_vectors({"IDSR": [rec]}, store=store)
    assert "computed by other code" in caplog.text and rec.config_hash in caplog.text
    assert np.array_equal(kept.items["IDSR"][0], vectors.items["IDSR"][0])
    assert np.array_equal(kept.users["IDSR"][0], vectors.users["IDSR"][0])


def test_reevaluation_is_read_back_without_the_weights(idsr_run, monkeypatch):
    store, rec = idsr_run
    first = protocol.reevaluate({"IDSR": [rec]}, store, n_negatives=5)["IDSR"][0]
    assert first.matches_store is True
    checkpoint_path(rec).unlink()
    monkeypatch.setenv(LOAD_ONLY_ENV, "1")
    again = protocol.reevaluate({"IDSR": [rec]}, store, n_negatives=5)["IDSR"][0]
    assert again.ranks.keys() == first.ranks.keys() and again.matches_store is True
    assert all(np.array_equal(again.ranks[k], first.ranks[k]) for k in first.ranks)
    assert np.array_equal(again.greater, first.greater)
    assert np.array_equal(again.equal, first.equal)
    # another sample of negatives is another recipe: not in the store
    with pytest.raises(FileNotFoundError, match="negatives=7"):
        protocol.reevaluate({"IDSR": [rec]}, store, n_negatives=7)
