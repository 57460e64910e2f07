"""One run end to end: data -> model -> training -> test at the best checkpoint -> a result dict.

`run_experiment` is what `results.run_or_load` calls; notebooks and the CLI go through that, so a
finished configuration is never trained twice.

Under torchrun every rank runs `run_experiment` (data, model, training and test are collective);
`run_or_load_distributed` keeps the results store on rank 0.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmsr_lib import distributed
from mmsr_lib.baselines.most_popular import MostPopular
from mmsr_lib.config import DataConfig, RunConfig
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import SequenceData, build_sequences
from mmsr_lib.encoders.item import IDItemEncoder, ItemEncoder
from mmsr_lib.paths import resolve
from mmsr_lib.recommender import Recommender
from mmsr_lib.results import ResultsStore, RunRecord, run_or_load
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.train import fit, resolve_device

log = logging.getLogger("mmsr.experiment")

_DATA_CACHE: dict[str, SequenceData] = {}


def dataset_root(cfg: DataConfig) -> Path:
    """Where the raw data set of `cfg` lives on disk, generating or converting it when needed."""
    if cfg.source == "synthetic":
        from mmsr_lib.data.synthetic import ensure_catalog

        return Path(ensure_catalog(cfg.synth, resolve(cfg.cache_dir)))
    if cfg.source == "movielens-100k":
        from mmsr_lib.data.movielens import ensure_movielens_100k

        return Path(ensure_movielens_100k(resolve(cfg.cache_dir)))
    if cfg.source == "path":
        if not cfg.path:
            raise ValueError(
                "data.source='path' needs data.path: a directory in the mmsr data format "
                "(create one with `mmsr data import ...`; see docs/data.md)"
            )
        return resolve(cfg.path)
    raise ValueError(f"unknown data.source {cfg.source!r}; choose synthetic, movielens-100k or path")


def load_data(cfg: DataConfig) -> SequenceData:
    """Preprocessed sequences for a data config, memoised per process (notebooks call it often)."""
    from dataclasses import asdict

    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _DATA_CACHE:
        raw = load_dataset(dataset_root(cfg))
        _DATA_CACHE[key] = build_sequences(
            raw,
            max_len=cfg.max_len,
            min_user_interactions=cfg.min_user_interactions,
            min_item_interactions=cfg.min_item_interactions,
            cold_threshold=cfg.cold_threshold,
        )
    return _DATA_CACHE[key]


def build_item_encoder(cfg: RunConfig, data: SequenceData) -> ItemEncoder:
    m = cfg.model
    if m.item_encoder == "id":
        return IDItemEncoder(data.n_items, m.dim)
    from mmsr_lib.encoders.multimodal import create_item_encoder

    return create_item_encoder(cfg, data)


def build_model(
    cfg: RunConfig, data: SequenceData, device: torch.device | str = "cpu", cache: bool = True
) -> Recommender:
    """A fresh recommender for `cfg` on `device`, initialised from `train.seed`.

    In fast item encoding the frozen-prefix caches are built here (where valid), once per model.
    """
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    item_encoder = build_item_encoder(cfg, data)
    seq = create_sequence_model(
        m.sequence, m.dim, data.max_len, n_layers=m.n_layers, n_heads=m.n_heads, dropout=m.dropout
    )
    model = Recommender(item_encoder, seq).to(device)
    if cache and m.item_encoder != "id" and m.item_encoding == "fast":
        model.item_encoder.enable_cache("auto")
    return model


def _split_metrics(evaluate: Callable, data: SequenceData, cfg: RunConfig) -> tuple[dict, dict]:
    metrics, extra = {}, {}
    for split in ("valid", "test"):
        metrics[split] = evaluate(data.eval_set(split)).metrics
        cold = data.cold_eval_set(split, cfg.data.cold_mode)
        extra[f"n_cold_{split}"] = len(cold)
        metrics[f"cold_{split}"] = evaluate(cold).metrics if len(cold) else {}
    return metrics, extra


def run_experiment(
    cfg: RunConfig,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train and evaluate one configuration; returns what the results store keeps.

    Under torchrun it joins the process group first (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``);
    rank 0 prepares the data set on disk before the others read it.
    """
    t0 = time.perf_counter()
    if distributed.launched():
        distributed.init_from_env(resolve_device(cfg.train.device))
    with distributed.main_process_first():  # generating/converting a data set writes files
        data = load_data(cfg.data)
    t_data = time.perf_counter() - t0
    ks = cfg.eval.ks
    extra: dict = {"n_users": data.n_users, "n_items": data.n_items, "data": data.name}
    if cfg.model.sequence == "mostpop":
        pop = MostPopular(data)
        metrics, more = _split_metrics(lambda es: pop.evaluate(es, ks, cfg.eval.batch_size), data, cfg)
        extra.update(more)
        return {
            "metrics": metrics,
            "history": [],
            "timings": {"data_seconds": t_data, "total_seconds": time.perf_counter() - t0},
            "dataset_fingerprint": data.fingerprint(),
            "extra": extra,
        }
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, data, device)
    run_dir = resolve(cfg.train.checkpoint_dir) / cfg.hash()
    fr = fit(model, data, cfg, run_dir=run_dir, progress=progress, on_epoch_end=on_epoch_end)
    e0 = time.perf_counter()
    model.eval()
    with torch.no_grad():  # one item table serves every split
        item_table = model.item_table()
    metrics, more = _split_metrics(
        lambda es: model.evaluate(es, ks, cfg.eval.batch_size, item_table=item_table), data, cfg
    )
    extra.update(more)
    extra.update(
        best_epoch=fr.best_epoch,
        epochs_run=fr.epochs_run,
        stopped_early=fr.stopped_early,
        resumed_from=fr.resumed_from,
        device=str(device),
        world_size=fr.world_size,
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        run_dir=str(run_dir),
    )
    return {
        "metrics": metrics,
        "history": fr.history,
        "timings": {
            "data_seconds": t_data,
            "train_seconds": fr.train_seconds,
            "test_seconds": time.perf_counter() - e0,
            "total_seconds": time.perf_counter() - t0,
        },
        "dataset_fingerprint": data.fingerprint(),
        "extra": extra,
    }


def run_or_load_distributed(
    config: RunConfig,
    runner: Callable[[RunConfig], dict] | None = None,
    results: str | Path | None = None,
    force: bool = False,
) -> RunRecord:
    """`results.run_or_load` for a torchrun job: rank 0 alone opens and writes the store.

    Rank 0 decides whether the run is already done and tells the others, every rank runs
    `runner` (training is collective), rank 0 stores the result and every rank returns the
    stored record. Without a process group it is plain `run_or_load` on `ResultsStore(results)`.
    """
    runner = runner if runner is not None else run_experiment
    if distributed.launched():
        distributed.init_from_env(resolve_device(config.train.device))
    if not distributed.is_distributed():
        return run_or_load(config, runner=runner, store=ResultsStore(results), force=force)
    main = distributed.is_main_process()
    store = ResultsStore(results) if main else None  # opening the store writes: rank 0 only
    finished = None
    if store is not None and not force:
        stored = store.get(config.hash())
        finished = stored if stored is not None and stored.status == "done" else None
    finished = distributed.broadcast_object(finished)  # every rank takes the same branch
    if finished is not None:
        return finished
    if store is None:
        runner(config)  # the collective work; rank 0 stores the result
        return distributed.broadcast_object(None)
    # marks the run running, then stores the result (or the failure) exactly as run_or_load does
    record = run_or_load(config, runner=runner, store=store, force=True)
    return distributed.broadcast_object(record)
