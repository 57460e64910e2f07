"""A stored run's trained model, rebuilt without training (notebooks 07, 10, 11 read them).

Kept out of `runs.runner` on purpose: the runner is part of every run's code fingerprint, and
reading a model back must never make a stored result stale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch

from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.recommender import Recommender
from mmsr_lib.runs.runner import build_model, load_data, stale_reason
from mmsr_lib.runs.store import RunRecord
from mmsr_lib.train import CheckpointError, read_checkpoint
from mmsr_lib.util.paths import resolve


@contextlib.contextmanager
def _no_weight_loading_bars() -> Iterator[None]:
    """Without it, every pretrained encoder rebuilt in a notebook leaves a frozen "Loading
    weights: 0%" bar (transformers' tqdm) in the saved outputs: notebook 07 kept 18 of them."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def checkpoint_path(record: RunRecord) -> Path:
    """Where a finished run's checkpoint lives: ``<train.checkpoint_dir>/<hash>/checkpoint.pt``
    (a forced re-run promotes its checkpoint there, so ``extra["run_dir"]`` may name a folder
    that no longer exists)."""
    cfg = record.run_config()
    return resolve(cfg.train.checkpoint_dir) / record.config_hash / "checkpoint.pt"


def check_same_training(record: RunRecord, ck: dict, path: Path) -> None:
    """Refuse a checkpoint of the same config from *another training* than the stored record.

    The config hash names a run, not its outcome: an archived record imported on a machine whose
    ``runs/<hash>/`` holds a local re-training (another CPU, another thread count) shares the
    hash, yet its weights rank some users differently, so tables would mix two trainings. The
    best epoch and every validation metric at it must equal the record's (they are computed by
    the same code on the same weights, so they agree to the last digit when they are one run).
    """
    stored_epoch = (record.extra or {}).get("best_epoch")
    stored_valid = (record.metrics or {}).get("valid") or {}
    differ = [f"best epoch {ck['best_epoch']} vs {stored_epoch}"] \
        if stored_epoch is not None and ck["best_epoch"] != stored_epoch else []
    for key, value in stored_valid.items():
        got = (ck.get("best_valid") or {}).get(key)
        if got is None or not math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-9):
            differ.append(f"valid {key} {got} vs {value}")
    if differ:
        from mmsr_lib.util.provenance import cpu_model

        theirs, ours = ((record.extra or {}).get("machine") or {}).get("cpu"), cpu_model()
        why = (f"; the record was trained on {theirs!r} and this machine is {ours!r}: the same "
               "configuration and seed round differently on another CPU"
               if theirs and theirs != ours else "")
        raise CheckpointError(
            f"{path} is another training of run {record.name} [{record.config_hash}] than the "
            f"stored record ({'; '.join(differ[:3])}{why}): train it again with "
            "run_or_load(..., force=True), or import the record that was stored with this "
            "checkpoint")


def check_same_data(record: RunRecord, data: SequenceData) -> None:
    """Refuse a run trained on other data than `data` (its data set was regenerated or edited
    since): its weights, or anything derived from them, describe other users and items."""
    if record.dataset_fingerprint and record.dataset_fingerprint != data.fingerprint():
        raise ValueError(f"run {record.name} [{record.config_hash}] was trained on other data "
                         f"(fingerprint {record.dataset_fingerprint} vs {data.fingerprint()} "
                         "now); run it again with run_or_load")


def load_trained(record: RunRecord, device: torch.device | str = "cpu",
                 allow_stale: bool = False) -> tuple[Recommender, SequenceData]:
    """The model of a stored run at its best-validation weights, and its data, in eval mode.

    Rebuilt with `runner.build_model` (frozen weights come from the same seed or pretrained
    files) and loaded with the checkpoint's ``best_state`` (every trainable tensor), so it scores
    exactly as the run did when it stored its metrics. Refuses a run computed on other data, or
    (unless `allow_stale`) by other code, a checkpoint of another training of the same config, and
    a checkpoint that does not cover every trainable parameter.
    """
    if record.status != "done":
        raise ValueError(f"run {record.name} [{record.config_hash}] is {record.status!r}, not "
                         "done; train it first (run_or_load / run_grid)")
    cfg = record.run_config().resolved()
    data = load_data(cfg.data)
    check_same_data(record, data)
    reason = stale_reason(record, data.fingerprint())
    if reason is not None and not allow_stale:
        raise ValueError(f"run {record.name} [{record.config_hash}] is stale: {reason}; run it "
                         "again with run_or_load, or pass allow_stale=True")
    with _no_weight_loading_bars():
        model = build_model(cfg, data, device)
    if model.trainable:
        path = checkpoint_path(record)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the checkpoint of run {record.name} "
                                    f"[{record.config_hash}] was deleted; run it again with "
                                    "run_or_load(..., force=True)")
        ck = read_checkpoint(path, device)
        if ck["config_hash"] != record.config_hash:
            raise CheckpointError(f"{path} belongs to run {ck['config_hash']}, not "
                                  f"{record.config_hash}")
        if ck["best_state"] is None:
            raise CheckpointError(f"{path} holds no validated weights (best_state is empty)")
        check_same_training(record, ck, path)
        result = model.load_state_dict(ck["best_state"], strict=False)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(trainable & set(result.missing_keys))
        if result.unexpected_keys or missing:
            raise CheckpointError(
                f"{path} does not fit this model: unexpected {result.unexpected_keys[:5]}, "
                f"trainable parameters missing {missing[:5]}")
    model.eval()
    return model, data
