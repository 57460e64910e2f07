"""`mmsr plan`: will a configuration fit on this machine, and how long will it, a notebook's grid
or the whole study take?

A plan is a short probe on this machine followed by arithmetic, and every printed number says
which of the two it comes from:

* measured (`probe`): the model built on the target device and its frozen-prefix caches built
  apart (into a temporary folder, so the build is a fresh one); one warm-up and a few timed
  optimiser steps through `train.train_step` (the trainer's own step) on real batches of the
  run's shape with its item encoding (fast unless set otherwise), each step timed with its batch
  assembly as `fit` does; one validation pass on a slice of users (the catalog encoding and the
  per-user ranking timed apart); the peak memory, up to the end of the cache build and during
  the steps and validation: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak
  resident set of a fresh process (`isolate`), so that it is this configuration's own;
* counted (`data_counts`): steps per epoch as `TrainBatches` cuts them (training windows /
  batch size), validation, test and cold users, distinct items per batch;
* extrapolated (`predict`): seconds per epoch = measured seconds per step x windows / batch;
  validation = measured catalog encoding + measured seconds per user x validation users; hours
  for the budget (the resolved ``train.epochs``) and for the epochs the patience rule is
  expected to stop at (`EXPECTED_BEST_SHARE`). Content models on CPU with a catalog too large
  to probe (a paper-size one) are probed on two smaller catalogs of the same kind (`measure`)
  and each measurement is carried along the line through the two to the run's counted distinct
  items per batch or catalog size (`extrapolate`), and say so.

Grids (`plan_runs`: a notebook's, or the whole study's) probe each distinct *cost shape* once
(`cost_key`: item encoder, encoders, fusion, sequence model, fine-tuning, width, batch, data
set; seeds, learning rates, the training-window mode or ``track_test`` change no step's cost)
and sum over the runs. On the paper profile without the real data or checkpoints offline, the
probe uses paper-size stand-ins (`stand_in`): random-init encoders of the paper's size and the
synthetic catalog at the size of the paper's data set (Table I).

Nothing here asserts or promises a duration: a plan is a measurement on this machine, now
(other jobs on the machine slow the probe as they would slow the run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmsr_lib.config import PROFILES, RunConfig, default_profile, profile_config
from mmsr_lib.util.isolated import call_in_fresh_process
from mmsr_lib.util.memory import peak_rss_bytes, reset_peak_rss

log = logging.getLogger("mmsr.plan")

# -- assumptions, stated once --------------------------------------------------------------------
# expected epochs: the best validation at ~40% of the budget, then `patience` validations without
# improvement stop the run (capped at the budget). An assumption for planning, not a measurement:
# the budget is the bound, and `validate_plan` shows how many epochs stored runs actually took.
EXPECTED_BEST_SHARE = 0.4
# a configuration fits when its predicted peak is at most this share of the device's memory
# (CUDA: the allocator's reserved memory and fragmentation exceed what is allocated; CPU: other
# processes and the page cache)
HEADROOM = 0.9
DISTINCT_BATCHES = 20  # batches whose distinct items are counted per data set
MAX_SUGGESTIONS = 6  # re-probes tried for a configuration that does not fit

DEFAULT_PAPER_DATASET = "HM"  # the data set of the paper's main tables
# the stand-in stores 32-px images: the paper-size encoders resize every image to their 224-px
# input, so a step costs what a 224-px image costs; small stored images keep the catalog cheap
STAND_IN_IMAGE_SIZE = 32
# paper checkpoint -> a random-init encoder of the same architecture and size
TEXT_STAND_INS = {
    "roberta-base": "random:roberta-base",
    "bert-base-uncased": "random:bert-base-uncased",
    "google/electra-base-discriminator": "random:bert-base-uncased",  # BERT-base architecture
}
# ResNet-50 and Swin-B have no random-init stand-in in the zoo: ViT-B costs about as much as
# Swin-B and ~4x ResNet-50 per image (17.6 vs 4.1 GFLOPs), so their rows are an upper bound
VISION_STAND_INS = {
    "mae-base": "random:mae-base",
    "swin-base": "random:vit-base",
    "resnet50": "random:vit-base",
}
# content models on CPU: a synthetic catalog above this many items is probed at this size and
# at half of it, and each measurement extrapolated along the line through the two (a paper-size
# catalog's frozen-prefix build alone would take hours on a CPU); 0 = the run's own catalog
CPU_PROBE_ITEMS = 2000
PROBE_USERS = 1000  # users of a reduced probe catalog
MIN_PROBE_ITEMS = 100  # no second, smaller probe below this


# -- what changes the cost of a run --------------------------------------------------------------
COST_FIELDS = (
    "model.recommender", "model.item_encoder", "model.text_encoder", "model.vision_encoder",
    "model.vlp", "model.visual_input", "model.fusion", "model.fusion_layers", "model.fusion_heads",
    "model.sequence", "model.n_layers", "model.n_heads", "model.dim", "model.finetune",
    "model.top_blocks", "model.text_max_tokens", "model.mask_ratio", "model.item_encoding",
    "train.batch_size", "train.loss", "train.amp",
    "data.source", "data.max_len", "data.min_user_interactions", "data.min_item_interactions",
)
# the size of a synthetic catalog, not its seed or domain: two catalogs of one size cost the same
SYNTH_COST_FIELDS = ("n_users", "n_items", "mean_seq_len", "image_size", "images")
# what a frozen-prefix cache is keyed by: runs that share it build it once (shared on disk)
BUILD_FIELDS = ("model.text_encoder", "model.vision_encoder", "model.vlp", "model.visual_input",
                "model.finetune", "model.top_blocks", "model.text_max_tokens",
                "model.text_pooling", "model.mask_ratio")


def _get(cfg: RunConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _data_identity(cfg: RunConfig) -> tuple:
    d = cfg.data
    if d.source == "synthetic":
        return ("synthetic", *(getattr(d.synth, f) for f in SYNTH_COST_FIELDS))
    if d.source == "path":
        return ("path", d.path)
    return (d.source,)


def cost_key(cfg: RunConfig) -> tuple:
    """The fields of `cfg` (resolved) that change what a training step, an epoch or an
    evaluation costs; configurations with equal keys are probed once. Seeds, learning rates,
    weight decay, dropout, epochs, patience, warm starts, ``data.train_windows`` (counted per run)
    and ``train.track_test`` (an extra evaluation per epoch, counted per run) are not in it."""
    r = cfg.resolved()
    return tuple((f, _get(r, f)) for f in COST_FIELDS) + (("data", _data_identity(r)),)


def build_key(cfg: RunConfig) -> tuple:
    """What the frozen-prefix caches of `cfg` depend on besides the weights (encoders, split,
    tokens, the catalog's items): `plan_runs` pays each cache (by its `FrozenCache` key) once
    per build key, as runs sharing them map them from the shared disk cache."""
    r = cfg.resolved()
    d = r.data
    items = (d.source, d.path, json.dumps(dataclasses.asdict(d.synth), sort_keys=True)
             if d.source == "synthetic" else None, d.min_user_interactions,
             d.min_item_interactions)
    return tuple((f, _get(r, f)) for f in BUILD_FIELDS) + (("items", items),)


def is_content(cfg: RunConfig) -> bool:
    """Items are encoded from their text or image (MMSR-T/-V/MMSR, VLP, content baselines),
    so a step's cost grows with the distinct items of its batch."""
    m = cfg.resolved().model
    return any(n is not None for n in (m.text_encoder, m.vision_encoder, m.vlp))


def describe_kind(cfg: RunConfig) -> str:
    """A short name for a cost shape: what represents an item, which encoders and how they train,
    the fusion, the sequence model, the width and the batch."""
    from mmsr_lib.util import registry

    m, t = cfg.resolved().model, cfg.resolved().train
    size = f"d{m.dim} b{t.batch_size}"
    if m.recommender != "sequential":
        encoders = "+".join(n for n in (m.text_encoder, m.vision_encoder, m.vlp) if n)
        return " ".join(x for x in (m.recommender, m.sequence or "", encoders,
                                    size if m.recommender != "mostpop" else "") if x)
    if m.item_encoder == "id":
        return f"IDSR {m.sequence} {size}"
    label = registry.lookup("item_encoder", m.item_encoder).meta.get("label", m.item_encoder)
    encoders = "+".join(n for n in (m.text_encoder, m.vision_encoder, m.vlp) if n)
    tune = m.finetune if m.finetune != "top" else f"top{m.top_blocks or ''}"
    parts = [label, m.sequence, encoders]
    if m.fusion:
        parts.append(f"{m.fusion}-{m.fusion_layers}" if m.fusion_layers else m.fusion)
    parts.append(tune)
    if m.text_max_tokens not in (None, 50):
        parts.append(f"{m.text_max_tokens}tok")
    if m.mask_ratio is not None:
        parts.append(f"mask{m.mask_ratio:g}")
    if m.visual_input is not None:
        parts.append(m.visual_input)
    if t.loss != "bce":
        parts.append(t.loss)
    return " ".join([*parts, size])


def describe_data(cfg: RunConfig) -> str:
    d = cfg.resolved().data
    if d.source == "synthetic":
        s = d.synth
        return f"synthetic {s.n_users}u/{s.n_items}i"
    if d.source == "path":
        return Path(d.path or "?").name
    return d.source


# -- stand-ins for the paper profile offline -----------------------------------------------------
def paper_dataset_size(path: str | None) -> tuple[str, int, int, float]:
    """The paper's data set a ``data.path`` stands for, read from its folder name ("data/hm",
    "data/hm-100k" -> HM with 100K users; Table I otherwise; HM when there is no path):
    (label, users, items, mean sequence length)."""
    from mmsr_lib.workbook.paper_numbers import paper_table1

    table = paper_table1()
    name = Path(path).name if path else DEFAULT_PAPER_DATASET
    base = next((k for k in table.index if name.lower().startswith(k.lower())),
                DEFAULT_PAPER_DATASET)
    users, items = int(table.loc[base, "users"]), int(table.loc[base, "items"])
    mean = float(table.loc[base, "avg_seq_len"])
    m = re.search(r"(\d+)\s*k\b", name.lower())
    if m:
        users = int(m.group(1)) * 1000
    label = f"{base}-{users // 1000}K" if m else base
    return label, users, items, mean


def stand_in(cfg: RunConfig) -> tuple[RunConfig, list[str]]:
    """`cfg`, or what a probe can build here in its place, and a note for each replacement.

    A paper checkpoint missing from the local cache becomes a random-init encoder of its size
    (`TEXT_STAND_INS`, `VISION_STAND_INS`); on the paper profile a ``data.path`` that is not
    there becomes the synthetic catalog at the size of the paper's data set it names
    (`paper_dataset_size`). Cost does not depend on the weights. Any other missing component
    raises `LookupError` saying what to install (the notebooks set such rows aside too).
    """
    from mmsr_lib.util import registry
    from mmsr_lib.util.paths import resolve

    r = cfg.resolved()
    m = r.model
    sets, notes = [], []
    for kind, key, table in (("text_encoder", "text_encoder", TEXT_STAND_INS),
                             ("vision_encoder", "vision_encoder", VISION_STAND_INS),
                             ("vlp", "vlp", {})):
        name = getattr(m, key)
        if name is None:
            continue
        missing = registry.lookup(kind, name).missing()
        if missing is None:
            continue
        if name not in table:
            raise LookupError(f"{kind} {name!r} cannot be built here and has no stand-in: "
                              f"{missing}")
        sets.append(f"model.{key}={table[name]}")
        notes.append(f"{name} -> {table[name]} (checkpoint not here; same size, random init)")
    d = r.data
    if r.profile == "paper" and d.source == "path" and (not d.path
                                                       or not resolve(d.path).is_dir()):
        label, users, items, mean = paper_dataset_size(d.path)
        sets += ["data.source=synthetic", "data.path=none", f"data.synth.n_users={users}",
                 f"data.synth.n_items={items}", f"data.synth.mean_seq_len={mean}",
                 f"data.synth.image_size={STAND_IN_IMAGE_SIZE}"]
        notes.append(f"data {d.path or '(no data.path)'} -> synthetic catalog at {label}'s size "
                     f"({users:,} users, {items:,} items, mean length {mean}; "
                     f"{STAND_IN_IMAGE_SIZE}-px stored images, resized to the encoder's input)")
    return (r.override(*sets).resolved() if sets else r), notes


def probe_config(cfg: RunConfig, device: str, max_items: int | None = None) -> RunConfig:
    """The configuration a probe builds for `cfg`: itself, or (content models on CPU, synthetic
    catalog above `max_items` items, default `CPU_PROBE_ITEMS`) the same model on a catalog of
    `max_items` items and at most `PROBE_USERS` users, whose measurements `predict`
    extrapolates to the run's catalog."""
    r = cfg.resolved()
    if max_items is None:
        max_items = CPU_PROBE_ITEMS if torch.device(device).type == "cpu" else 0
    s = r.data.synth
    if not max_items or not is_content(r) or r.data.source != "synthetic" \
            or s.n_items <= max_items:
        return r
    return r.override(f"data.synth.n_items={max_items}",
                      f"data.synth.n_users={min(s.n_users, PROBE_USERS)}").resolved()


def measure(cfg: RunConfig, probe_fn: Callable[[RunConfig], Probe], device: str,
            max_items: int | None = None) -> tuple[RunConfig, Probe, Probe | None]:
    """Probe `cfg` (after `stand_in`) as `probe_config` says: (what was probed, its probe, and
    on a reduced catalog a second probe at half its items, for `predict`'s line; else None)."""
    probed = probe_config(cfg, device, max_items)
    main = probe_fn(probed)
    small = None
    if probed.hash() != cfg.resolved().hash():
        half = probed.data.synth.n_items // 2
        if half >= MIN_PROBE_ITEMS:
            small = probe_fn(probe_config(cfg, device, half))
    return probed, main, small


# -- counting --------------------------------------------------------------------------------------
@dataclass
class DataCounts:
    """What a data set and a batch size imply for a run: counted, never timed."""

    n_users: int
    n_items: int
    windows: int  # training windows (`TrainBatches` rows) per epoch
    batch_size: int
    n_valid: int
    n_test: int
    n_cold_valid: int
    n_cold_test: int
    distinct_items: float  # distinct real items per batch (inputs, targets, negatives)
    max_len: int

    @property
    def steps_per_epoch(self) -> int:
        return (self.windows + self.batch_size - 1) // self.batch_size


def count_batches(data: Any, batch_size: int, seed: int = 0) -> float:
    """Mean distinct real items per batch over the first `DISTINCT_BATCHES` batches of epoch 0
    (what a fast-mode step encodes)."""
    from mmsr_lib.data.loaders import TrainBatches

    batches = TrainBatches(data, batch_size, seed)
    batches.set_epoch(0)
    n = min(DISTINCT_BATCHES, len(batches))
    out = []
    for i in range(n):
        b = batches[i]
        ids = torch.cat([b["inputs"], b["targets"], b["negatives"]], 1)
        out.append(int(torch.unique(ids[ids > 0]).numel()))
    return float(np.mean(out)) if out else 0.0


def counts_of(data: Any, cfg: RunConfig) -> DataCounts:
    """`DataCounts` of a loaded data set under `cfg` (batch size, cold mode)."""
    r = cfg.resolved()
    mode = r.data.cold_mode
    return DataCounts(
        n_users=data.n_users, n_items=data.n_items, windows=len(data.train_windows[1]),
        batch_size=r.train.batch_size, n_valid=len(data.eval_set("valid")),
        n_test=len(data.eval_set("test")), n_cold_valid=len(data.cold_eval_set("valid", mode)),
        n_cold_test=len(data.cold_eval_set("test", mode)),
        distinct_items=count_batches(data, r.train.batch_size),
        max_len=r.data.max_len,
    )


_COUNTS: dict[str, DataCounts] = {}


def data_counts(cfg: RunConfig) -> DataCounts:
    """`counts_of` the run's own data set (loaded or generated, memoised per process)."""
    from mmsr_lib.runs.runner import load_data

    r = cfg.resolved()
    key = json.dumps([dataclasses.asdict(r.data), r.train.batch_size, r.data.cold_mode],
                     sort_keys=True)
    if key not in _COUNTS:
        _COUNTS[key] = counts_of(load_data(r.data), r)
    return _COUNTS[key]


# -- the probe -------------------------------------------------------------------------------------
@dataclass
class Probe:
    """What was measured for one configuration on this machine (see the module docstring)."""

    device: str
    device_name: str
    threads: int
    steps: int  # timed steps (after one untimed warm-up)
    batch_shape: tuple[int, int]
    step_seconds: float  # median over the timed steps, batch assembly included
    step_seconds_all: list[float]
    build_seconds: float  # the model on the device, without its frozen-prefix caches
    cache_seconds: float  # building the frozen-prefix caches (fresh, in a temporary folder)
    caches: list[dict]  # per cached branch: key, kind, seconds, peak_mb, built (`_build_caches`)
    data_seconds: float
    catalog_seconds: float  # encoding the whole catalog once (one per validation)
    eval_rows: int
    eval_rows_seconds: float  # ranking `eval_rows` validation users against the catalog
    peak_mb: float  # the larger of the two below
    static_mb: float  # after the build, before the first step
    memory_method: str
    cache_peak_mb: float  # peak up to the end of the frozen-cache build (data, model, caches)
    train_peak_mb: float  # peak of the steps and the validation (caches and model resident)
    cache_mb: float  # frozen-prefix tables held in host memory
    parameters: int
    trainable_parameters: int
    trainable: bool
    counts: DataCounts  # of the catalog the probe ran on
    config_hash: str = ""
    wall_seconds: float = 0.0

    @property
    def row_seconds(self) -> float:
        return self.eval_rows_seconds / max(self.eval_rows, 1)

    @classmethod
    def from_dict(cls, d: dict) -> Probe:
        d = dict(d)
        d["counts"] = DataCounts(**d["counts"])
        d["batch_shape"] = tuple(d["batch_shape"])
        return cls(**d)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hwm_mb() -> float | None:
    """The kernel's peak resident set of this process in MiB (Linux ``VmHWM``), or None."""
    peak = peak_rss_bytes()
    return None if peak is None else peak / 1024**2


def _peak_so_far(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    hwm = _hwm_mb()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cache_mb(model: torch.nn.Module) -> float:
    enc = getattr(model, "item_encoder", None)
    total = 0
    for b in (enc.branches() if hasattr(enc, "branches") else []):
        table = getattr(getattr(b, "cache", None), "table", None)
        if table is not None:
            total += table.numel() * table.element_size() if torch.is_tensor(table) \
                else table.nbytes
    return total / 2**20


def _reset_peak(dev: torch.device) -> bool:
    """Start a new peak-memory phase; False where a CPU peak cannot be reset."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return True
    return reset_peak_rss()


def _build_caches(model: torch.nn.Module, cfg: RunConfig, dev: torch.device,
                  folder: str) -> list[dict]:
    """The frozen-prefix caches `build_model` would build (``enable_cache("auto")``), one
    branch at a time so that each branch's build is timed and its peak measured apart: a list
    of {key, kind, seconds, peak_mb, built} (built False: mapped from `folder`)."""
    from mmsr_lib.encoders.frozen_cache import FrozenCache
    from mmsr_lib.encoders.multimodal import MultiModalItemEncoder

    encoder = getattr(model, "item_encoder", None)
    if cfg.model.item_encoding != "fast" or not hasattr(encoder, "enable_cache"):
        return []
    if not isinstance(encoder, MultiModalItemEncoder):  # VLP: its own rules, timed as a whole
        before = set(os.listdir(folder))
        split = _reset_peak(dev)
        t0 = time.perf_counter()
        kinds = encoder.enable_cache("auto", cache_dir=folder)
        _sync(dev)
        keys = sorted(c.key for c in getattr(encoder, "caches", {}).values())
        if not kinds:
            return []
        return [{"key": "+".join(keys) or f"{cfg.hash()}-caches", "kind": "+".join(kinds),
                 "seconds": time.perf_counter() - t0,
                 "peak_mb": _peak_so_far(dev) if split else math.nan,
                 "built": bool(set(os.listdir(folder)) - before)}]
    out = []
    for branch in encoder.branches():
        if FrozenCache.invalid_reason(branch.encoder):
            continue  # not cacheable (full fine-tuning, MAE masking): `enable_cache` skips it
        key = FrozenCache.key_for(branch, encoder.n_items)
        existed = (Path(folder) / FrozenCache.file_name(key)).exists()
        split = _reset_peak(dev)
        t0 = time.perf_counter()
        branch.cache = FrozenCache.build(branch, encoder.n_items, cache_dir=folder)
        _sync(dev)
        out.append({"key": key, "kind": branch.kind, "seconds": time.perf_counter() - t0,
                    "peak_mb": _peak_so_far(dev) if split else math.nan, "built": not existed})
    return out


def _probe_worker(cfg_dict: dict, steps: int, eval_rows: int, device: str, isolated: bool,
                  plugins: Sequence[str] = (), cache_dir: str | None = None) -> dict:
    """The probe itself; in a fresh process when `isolated` (see `probe`)."""
    from mmsr_lib.evaluate import evaluate_model
    from mmsr_lib.runs.runner import build_model, load_data
    from mmsr_lib.train import build_optimizer, build_schedule, train_step
    from mmsr_lib.util import registry
    from mmsr_lib.util.threads import configure_threads, deterministic_training

    w0 = time.perf_counter()
    threads = configure_threads()
    if plugins:
        registry.load_plugins(plugins)
    dev = torch.device(device)
    with contextlib.ExitStack() as stack:
        tmp = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="mmsr-plan-"))
        cfg = RunConfig.from_dict(cfg_dict).override(
            f"train.device={device}", f"train.feature_cache={tmp}", "train.init_from=none",
            "name=plan").resolved()
        deterministic_training(cfg.train.deterministic)
        t0 = time.perf_counter()
        data = load_data(cfg.data)
        counts = counts_of(data, cfg)
        data_s = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            method = "torch.cuda.max_memory_allocated"
        elif isolated:  # the whole fresh process: interpreter, libraries, data, model
            method = "peak RSS of a fresh process"
        elif reset_peak_rss():
            method = "peak RSS of this process during the probe (not a fresh process)"
        else:
            method = "peak RSS of this process so far (not a fresh process)"
        t0 = time.perf_counter()
        model = build_model(cfg, data, dev, cache=False)
        _sync(dev)
        build_s = time.perf_counter() - t0
        peak_build = _peak_so_far(dev)
        caches = _build_caches(model, cfg, dev, tmp)
        cache_s = sum(c["seconds"] for c in caches)
        static = torch.cuda.memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb()
        cache_peak = max([peak_build, *(c["peak_mb"] for c in caches
                                        if math.isfinite(c["peak_mb"]))])
        split = _reset_peak(dev)  # then the steps and the validation, measured apart
        times: list[float] = []
        B, L = cfg.train.batch_size, cfg.data.max_len
        if model.trainable:
            from mmsr_lib.data.loaders import TrainBatches

            model.train()
            opt = build_optimizer(model, cfg)
            batches = TrainBatches(data, B, cfg.train.seed)
            sched = build_schedule(opt, cfg, len(batches))
            batches.set_epoch(0)
            for i in range(steps + 1):  # the first is a warm-up (allocations, autotuning)
                _sync(dev)
                t = time.perf_counter()
                batch = {k: v.to(dev, non_blocking=True)
                         for k, v in batches[i % len(batches)].items()}
                train_step(model, batch, opt, sched, cfg).item()
                _sync(dev)
                times.append(time.perf_counter() - t)
            del opt, sched
        valid = data.eval_set("valid")
        rows = min(eval_rows, len(valid))
        model.eval()
        sub = valid.subset(np.arange(rows))
        catalog_s = rows_s = math.inf
        with torch.no_grad():
            for _ in range(2):  # the faster of two: a run validates every epoch, warm
                _sync(dev)
                t = time.perf_counter()
                scorer = model.scorer()
                _sync(dev)
                catalog_s = min(catalog_s, time.perf_counter() - t)
                t = time.perf_counter()
                evaluate_model(model, sub, cfg.eval.ks, cfg.eval.batch_size, scorer=scorer)
                _sync(dev)
                rows_s = min(rows_s, time.perf_counter() - t)
        train_peak = _peak_so_far(dev)
        if not split:  # one peak for both phases
            cache_peak = train_peak
        if dev.type == "cuda":
            name = torch.cuda.get_device_name(dev)
        else:
            import platform

            name = f"{platform.processor() or platform.machine()}, {threads} thread(s)"
        timed = times[1:] or times
        out = Probe(
            device=str(dev), device_name=name, threads=threads, steps=len(timed),
            batch_shape=(B, L), step_seconds=float(np.median(timed)) if timed else 0.0,
            step_seconds_all=timed, build_seconds=build_s, cache_seconds=cache_s, caches=caches,
            data_seconds=data_s,
            catalog_seconds=catalog_s, eval_rows=rows, eval_rows_seconds=rows_s,
            peak_mb=float(max(cache_peak, train_peak)), static_mb=float(static),
            memory_method=method, cache_peak_mb=float(cache_peak),
            train_peak_mb=float(train_peak),
            cache_mb=_cache_mb(model),
            parameters=sum(p.numel() for p in model.parameters()),
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            trainable=bool(model.trainable), counts=counts, config_hash=cfg.hash(),
            wall_seconds=time.perf_counter() - w0,
        )
        del model, scorer
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return dataclasses.asdict(out)


def probe(cfg: RunConfig, steps: int = 3, eval_rows: int = 512, device: str | None = None,
          isolate: bool = True, plugins: Sequence[str] = (), cache_dir: str | None = None
          ) -> Probe:
    """Measure `cfg` on this machine: build, one warm-up and `steps` timed optimiser steps,
    one validation pass on `eval_rows` users, peak memory. `isolate` runs it in a fresh process
    (spawned), so a CPU peak RSS is this configuration's own and a CUDA context starts empty;
    without it the probe is quicker and the CPU peak is this process's during the probe.
    The frozen-prefix caches go to `cache_dir` (default: a fresh temporary folder, so they are
    built, never mapped from the shared ``train.feature_cache``)."""
    from mmsr_lib.train import resolve_device

    r = cfg.resolved()
    dev = str(resolve_device(device or r.train.device))
    args = (r.to_dict(), int(steps), int(eval_rows), dev, bool(isolate), tuple(plugins),
            cache_dir)
    result = call_in_fresh_process(_probe_worker, *args) if isolate else _probe_worker(*args)
    return Probe.from_dict(result)


# -- prediction ------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One run's predicted cost, with what each number rests on."""

    kind: str
    data: str
    device: str
    steps_per_epoch: int
    step_seconds: float
    sequences_per_second: float
    epoch_seconds: float  # training steps of one epoch
    eval_seconds: float  # the validation (and test, with track_test) of one epoch
    final_eval_seconds: float  # valid, test and their cold subsets at the best epoch
    build_seconds: float  # the model, every run
    cache_seconds: float  # its frozen-prefix caches: paid once per branch and catalog (on disk)
    budget_epochs: int
    expected_epochs: int
    peak_mb: float  # the larger of the two below: what the device must hold
    train_peak_mb: float  # training steps and validation
    cache_peak_mb: float  # up to the end of the frozen-cache build (a run that builds them)
    capacity_mb: float | None
    capacity_what: str
    sources: dict[str, str] = field(default_factory=dict)  # quantity -> measured/counted/...
    notes: list[str] = field(default_factory=list)

    def hours(self, epochs: int, cache: float = 1.0) -> float:
        """Hours of a run of `epochs` epochs that also builds the share `cache` of its frozen
        caches (1: all of them; 0: it maps caches an earlier run built)."""
        run = epochs * (self.epoch_seconds + self.eval_seconds) + self.final_eval_seconds
        return (run + self.build_seconds + cache * self.cache_seconds) / 3600

    @property
    def hours_budget(self) -> float:
        return self.hours(self.budget_epochs)

    @property
    def hours_expected(self) -> float:
        return self.hours(self.expected_epochs)

    @property
    def fits(self) -> bool | None:
        return fits(self.peak_mb, self.capacity_mb)


def fits(peak_mb: float, capacity_mb: float | None, headroom: float = HEADROOM) -> bool | None:
    """Whether a predicted peak fits in `capacity_mb` with `headroom` (None: capacity unknown)."""
    if capacity_mb is None or not math.isfinite(peak_mb):
        return None
    return peak_mb <= headroom * capacity_mb


def expected_epochs(budget: int, patience: int | None, eval_every: int = 1,
                    best_share: float = EXPECTED_BEST_SHARE, min_epochs: int = 0) -> int:
    """Epochs the patience rule is expected to run: the best validation at `best_share` of the
    budget, then `patience` validations (every `eval_every` epochs) without improvement; at
    least `min_epochs` (`train.stop_after_decay`: the end of the decay); capped at the budget."""
    if budget <= 0:
        return 0
    best = max(1, math.ceil(best_share * budget))
    return min(budget, max(min_epochs, best + (patience or budget) * eval_every))


def device_memory(device: str) -> tuple[float | None, str]:
    """Memory a run on `device` may use, in MiB, and what that is: the GPU's total memory, or
    the machine's available RAM now (MemAvailable) on CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev.index or 0)
        return props.total_memory / 2**20, f"{props.name} total memory"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024, "RAM available now"
    except OSError:
        pass
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20, "RAM available now"
    except ImportError:
        return None, "unknown"


def extrapolate(x: float, x1: float, y1: float, x2: float | None = None,
                y2: float | None = None) -> tuple[float, str]:
    """y at `x` from one measured point (proportional: y1 * x / x1) or two (the line through
    them; where the second point shows no growth, the larger measurement, held flat)."""
    if x == x1:
        return y1, "measured"
    if x2 is None or y2 is None or x2 == x1:
        return y1 * x / max(x1, 1e-12), "proportional"
    slope = (y1 - y2) / (x1 - x2)
    if slope <= 0:
        return max(y1, y2), "flat (no growth between the two probes)"
    return y1 + slope * (x - x1), "linear through two probes"


def encoded_items(counts: DataCounts, loss: str) -> float:
    """Items a training step runs through the item encoder: the distinct items of its batch
    (BCE, fast item encoding), or every catalog item (``train.loss=ce``: softmax over the
    catalog)."""
    return float(counts.n_items) if loss == "ce" else counts.distinct_items


def predict(cfg: RunConfig, probe: Probe, counts: DataCounts | None = None,
            capacity: tuple[float | None, str] = (None, "unknown"),
            small: Probe | None = None) -> Prediction:
    """Extrapolate one run of `cfg` from `probe` and the run's own `counts` (default: the
    probe's). When the probe ran on a smaller catalog (`probe_config`), each measurement is
    carried to the run's catalog along the counted quantity it grows with (`extrapolate`): a
    step along the items it encodes (`encoded_items`; content models; an ID step does not
    grow with them), the catalog encoding, the per-user ranking and the cache build along the
    catalog size; through `small` (a second probe on a still smaller catalog) when given, else
    in proportion."""
    r = cfg.resolved()
    t = r.train
    counts = counts or probe.counts
    pc = probe.counts
    scaled = pc.n_items != counts.n_items
    sc = small.counts if small is not None else None
    r_items = counts.n_items / max(pc.n_items, 1)
    # what a step encodes: the distinct items of its batch, or (softmax over the catalog, ce)
    # every item of the catalog
    what = "catalog items (loss ce)" if t.loss == "ce" else "distinct items per batch"
    x_run, x_probe = encoded_items(counts, t.loss), encoded_items(pc, t.loss)
    x_small = encoded_items(sc, t.loss) if sc is not None else None
    r_distinct = x_run / x_probe if is_content(r) and x_probe else 1.0
    src: dict[str, str] = {}

    def along_items(attr: str) -> tuple[float, str]:
        if not scaled:
            return getattr(probe, attr), "measured"
        return extrapolate(counts.n_items, pc.n_items, getattr(probe, attr),
                           sc.n_items if sc else None, getattr(small, attr) if small else None)

    timed = f"median of {probe.steps} timed step(s) after a warm-up"
    if not scaled or not is_content(r):
        step_s, how = probe.step_seconds, "measured"
    else:
        step_s, how = extrapolate(x_run, x_probe, probe.step_seconds, x_small,
                                  small.step_seconds if small else None)
    src["step"] = (f"measured ({timed})" if how == "measured" else
                   f"extrapolated ({how}) from {x_probe:,.0f}"
                   + (f" and {x_small:,.0f}" if x_small is not None else "")
                   + f" to {x_run:,.0f} {what} (counted)")
    steps = counts.steps_per_epoch if probe.trainable else 0
    src["steps/epoch"] = (f"counted ({counts.windows:,} training windows / batch "
                          f"{counts.batch_size})")
    # the last batch of an epoch is partial: an epoch costs windows / batch full steps
    full_steps = counts.windows / counts.batch_size if probe.trainable else 0.0
    src["epoch"] = "extrapolated: seconds/step x windows / batch (the last batch is partial)"
    catalog, how_items = along_items("catalog_seconds")
    per_row, _ = along_items("row_seconds")
    evals = (1 + int(t.track_test)) if probe.trainable else 0
    eval_rows = counts.n_valid + (counts.n_test if t.track_test else 0)
    eval_s = evals * catalog + per_row * eval_rows if probe.trainable else 0.0
    if not scaled and probe.eval_rows >= eval_rows and not t.track_test:
        src["validation"] = f"measured (catalog encoding + ranking all {eval_rows:,} users)"
    else:
        src["validation"] = (f"measured catalog encoding + ranking of {probe.eval_rows:,} "
                             f"users, extrapolated to {eval_rows:,} users"
                             + (" (track_test: test too)" if t.track_test else "")
                             + (f"; to {counts.n_items:,} items ({how_items})" if scaled else ""))
    final_rows = counts.n_valid + counts.n_test + counts.n_cold_valid + counts.n_cold_test
    final_s = catalog + per_row * final_rows
    cache_s, how_cache = along_items("cache_seconds")
    src["build"] = "measured"
    src["cache"] = "measured (a fresh build)" + (
        f", extrapolated to {counts.n_items:,} items ({how_cache})" if scaled else "")
    if not scaled:
        train_peak, cache_peak = probe.train_peak_mb, probe.cache_peak_mb
        src["memory"] = f"measured ({probe.memory_method})"
        if probe.device.startswith("cuda"):
            src["memory"] += "; the CUDA context and the allocator's cache come on top"
    else:
        dim = r.model.dim
        item_tables = (counts.n_items - pc.n_items) * dim * 12 / 2**20  # fp32 + fp64 tables
        host = probe.cache_mb * (r_items - 1) if probe.device == "cpu" else 0.0
        train_peak = probe.static_mb + (probe.train_peak_mb - probe.static_mb) * r_distinct \
            + item_tables + host
        cache_peak = probe.cache_peak_mb + host
        src["memory"] = (f"extrapolated from {probe.memory_method} on {pc.n_items:,} items: "
                         f"growth after the build x {r_distinct:.2f} ({what}), + item "
                         "tables" + (" + frozen caches" if host else "") + " for the catalog")
    budget = int(t.epochs or 0) if probe.trainable else 0
    floor = t.min_epochs() if budget else 0
    exp = expected_epochs(budget, t.patience, t.eval_every, min_epochs=floor)
    src["epochs"] = (f"budget: train.epochs={budget}; expected: best at "
                     f"{EXPECTED_BEST_SHARE:.0%} of the budget + patience {t.patience}"
                     + (f" x eval_every {t.eval_every}" if t.eval_every > 1 else "")
                     + (f", at least {floor} (no stop before the decay ends)" if floor else "")
                     + ", capped at the budget")
    return Prediction(
        kind=describe_kind(r), data=describe_data(r), device=probe.device,
        steps_per_epoch=steps, step_seconds=step_s,
        sequences_per_second=counts.batch_size / step_s if step_s > 0 else math.nan,
        epoch_seconds=full_steps * step_s, eval_seconds=eval_s, final_eval_seconds=final_s,
        build_seconds=probe.build_seconds, cache_seconds=cache_s, budget_epochs=budget,
        expected_epochs=exp, peak_mb=max(train_peak, cache_peak), train_peak_mb=train_peak,
        cache_peak_mb=cache_peak,
        capacity_mb=capacity[0], capacity_what=capacity[1], sources=src,
    )


# -- one configuration -----------------------------------------------------------------------------
@dataclass
class ConfigPlan:
    """`plan_config`'s answer: the prediction, the probe behind it, and what to change when the
    configuration does not fit."""

    config: RunConfig  # what was planned (after stand-ins)
    prediction: Prediction
    probe: Probe
    probed: RunConfig  # what the probe built
    suggestions: list[dict] = field(default_factory=list)
    small: Probe | None = None  # the second probe on a reduced catalog (`measure`)


ProbeFn = Callable[[RunConfig], Probe]


def _default_probe(steps: int, eval_rows: int, device: str | None, isolate: bool,
                   plugins: Sequence[str], cache_dir: str | None = None) -> ProbeFn:
    return lambda c: probe(c, steps=steps, eval_rows=eval_rows, device=device, isolate=isolate,
                           plugins=plugins, cache_dir=cache_dir)


def fit_candidates(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """Changes that lower a run's memory, each alone, in the order `suggest` tries them: halve
    the batch (down to 1/8), train fewer encoder blocks (full -> top, top -> 1 block, top ->
    frozen), and halve the text length."""
    r = cfg.resolved()
    out = []
    b = r.train.batch_size
    for div in (2, 4, 8):
        if b // div >= 1:
            out.append((f"train.batch_size={b // div}", r.override(f"train.batch_size={b // div}")))
    m = r.model
    if is_content(r):
        if m.finetune == "full":
            out.append(("model.finetune=top", r.override("model.finetune=top")))
        if m.finetune in ("full", "top") and (m.top_blocks is None or m.top_blocks > 1):
            out.append(("model.finetune=top model.top_blocks=1",
                        r.override("model.finetune=top", "model.top_blocks=1")))
        if m.finetune != "frozen":
            out.append(("model.finetune=frozen", r.override("model.finetune=frozen")))
        if m.text_max_tokens and m.text_max_tokens > 10:
            n = max(10, m.text_max_tokens // 2)
            out.append((f"model.text_max_tokens={n}", r.override(f"model.text_max_tokens={n}")))
    return out


def suggest(cfg: RunConfig, probe_fn: ProbeFn, capacity: tuple[float | None, str],
            counts_fn: Callable[[RunConfig], DataCounts | None] | None = None,
            device: str = "cpu", limit: int = MAX_SUGGESTIONS,
            max_items: int | None = None) -> list[dict]:
    """For a configuration that does not fit: re-probe each of `fit_candidates` (at most
    `limit`) and report the memory it would need, whether that fits, and its seconds per
    epoch; stops at the first batch size that fits and after the first encoder change that
    fits."""
    out: list[dict] = []
    batch_fitted = False
    for change, cand in fit_candidates(cfg)[:limit]:
        if batch_fitted and change.startswith("train.batch_size"):
            continue
        try:
            probed, p, small = measure(cand, probe_fn, device, max_items)
            counts = counts_fn(cand) if counts_fn is not None and probed.hash() != \
                cand.resolved().hash() else None
            pred = predict(cand, p, counts, capacity, small)
        except Exception as err:  # a candidate that cannot run is reported, not fatal
            out.append({"change": change, "error": f"{type(err).__name__}: {err}"})
            continue
        out.append({"change": change, "peak_mb": pred.peak_mb, "fits": pred.fits,
                    "epoch_seconds": pred.epoch_seconds})
        if pred.fits and change.startswith("train.batch_size"):
            batch_fitted = True
        elif pred.fits:
            break
    return out


def plan_config(cfg: RunConfig, *, steps: int = 5, eval_rows: int = 512,
                device: str | None = None, isolate: bool = True, plugins: Sequence[str] = (),
                max_probe_items: int | None = None, probe_fn: ProbeFn | None = None,
                capacity_mb: float | None = None, with_suggestions: bool = True) -> ConfigPlan:
    """Probe one configuration and predict its run (see the module docstring). `capacity_mb`
    replaces the device's memory (to plan for another machine, or in tests); `probe_fn`
    replaces the probe (tests)."""
    from mmsr_lib.train import resolve_device

    planned, notes = stand_in(cfg)
    dev = str(resolve_device(device or planned.train.device))
    fn = probe_fn or _default_probe(steps, eval_rows, dev, isolate, plugins)
    probed, p, small = measure(planned, fn, dev, max_probe_items)
    cap = (capacity_mb, "memory given") if capacity_mb is not None else device_memory(dev)
    counts = p.counts if probed.hash() == planned.hash() else data_counts(planned)
    pred = predict(planned, p, counts, cap, small)
    pred.notes = notes + ([_reduced_note(probed, small)] if probed.hash() != planned.hash()
                          else [])
    out = ConfigPlan(planned, pred, p, probed, small=small)
    if with_suggestions and pred.fits is False:
        out.suggestions = suggest(planned, fn, cap, data_counts, dev, max_items=max_probe_items)
    return out


def _reduced_note(probed: RunConfig, small: Probe | None) -> str:
    return (f"probed on a smaller catalog ({describe_data(probed)}"
            + (f", and {small.counts.n_items:,} items" if small is not None else "")
            + ") and extrapolated to the run's (see each line)")


def _h(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _mb(mb: float | None) -> str:
    if mb is None or not math.isfinite(mb):
        return "-"
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def format_config_plan(plan: ConfigPlan) -> str:
    """The single-configuration report: each number with what it rests on."""
    p, pr, c = plan.prediction, plan.probe, plan.probe.counts
    unit = "gpu" if p.device.startswith("cuda") else "cpu"
    lines = [f"plan: {p.kind} on {p.data} [{plan.config.hash()}]",
             f"device: {p.device} ({pr.device_name}); memory: {_mb(p.capacity_mb)} "
             f"({p.capacity_what})",
             f"probe: {pr.steps} timed step(s) after 1 warm-up at batch shape "
             f"{list(pr.batch_shape)} ({c.distinct_items:.0f} distinct items per batch), "
             f"validation on {pr.eval_rows:,} of {c.n_valid:,} users; probe took "
             f"{pr.wall_seconds:.1f} s"]
    lines += [f"note: {n}" for n in p.notes]
    rows = [
        ("peak memory", _mb(p.peak_mb), p.sources["memory"]),
        ("  training + validation", _mb(p.train_peak_mb), "the steps and the validation pass"),
        ("  frozen-cache build", _mb(p.cache_peak_mb), "data, model and building the caches "
         "(a run that maps them from disk stays below this)"),
        ("sequences / second", f"{p.sequences_per_second:,.0f}"
         if math.isfinite(p.sequences_per_second) else "-", p.sources["step"]),
        ("seconds / step", f"{p.step_seconds:.4f}", p.sources["step"]),
        ("steps / epoch", f"{p.steps_per_epoch:,}", p.sources["steps/epoch"]),
        ("training / epoch", _h(p.epoch_seconds), p.sources["epoch"]),
        ("validation / epoch", _h(p.eval_seconds), p.sources["validation"]),
        ("model build", _h(p.build_seconds), p.sources["build"]),
        ("frozen caches (once)", _h(p.cache_seconds), p.sources["cache"] + "; later runs "
         "with these encoders and catalog map them from train.feature_cache"),
        ("final evaluation", _h(p.final_eval_seconds),
         "extrapolated: valid, test and cold users, one catalog encoding"),
        (f"budget: {p.budget_epochs} epochs", f"{_h(3600 * p.hours_budget)}",
         f"{p.hours_budget:.3g} {unit}-hours, extrapolated (build, caches, epochs x (training "
         "+ validation), final evaluation)"),
        (f"expected: {p.expected_epochs} epochs", f"{_h(3600 * p.hours_expected)}",
         f"{p.hours_expected:.3g} {unit}-hours; {p.sources['epochs']}"),
    ]
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    lines += [f"  {a:<{w}}  {b:>{v}}  {s}" for a, b, s in rows]
    verdict = {True: "fits", False: "DOES NOT FIT", None: "unknown"}[p.fits]
    lines.append(f"memory: {verdict} ({_mb(p.peak_mb)} predicted vs {HEADROOM:.0%} of "
                 f"{_mb(p.capacity_mb)})")
    for s in plan.suggestions:
        if "error" in s:
            lines.append(f"  try {s['change']}: cannot run ({s['error']})")
        else:
            lines.append(f"  try {s['change']}: needs {_mb(s['peak_mb'])} "
                         f"({'fits' if s['fits'] else 'does not fit'}), "
                         f"training {_h(s['epoch_seconds'])} per epoch (re-probed)")
    return "\n".join(lines)


# -- grids: notebooks and the study ----------------------------------------------------------------
@dataclass
class Section:
    """A grid a notebook runs with `run_grid`: its configurations and the seeds of each."""

    name: str
    configs: Mapping[Any, RunConfig]
    seeds: tuple[int, ...]
    # a section that trains one seed on purpose (the quick start, transfer sources that other
    # runs warm-start from by hash) keeps its seeds when a user asks for more (`--seeds`)
    fixed_seeds: bool = False
    # the notebook reads each run's trained weights (notebooks 07, 10, 11): the `runs.derived`
    # recipe it keeps from them (its prefix); a stored run with neither here is "no weights"
    reads_weights: str | None = None


# settings that choose the data set itself; `notebook_runs`' overrides (`mmsr grid --set`) apply
# them to the synthetic catalog's sections only, as the notebooks apply their `data_path`
CATALOG_KEYS = ("data.source", "data.path", "data.synth.")


def own_data_overrides(section: str, overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides a section with its own data set (MovieLens-100K, notebook 12's subsample
    sweep) takes: every one but those that choose the catalog (`CATALOG_KEYS`), which would replace
    its data set. What is left out is logged by name, so ``mmsr grid 03 --set data.path=...``
    does not list the MovieLens rows unchanged without a word, and ``--set train.lr=...``
    reaches every row."""
    kept = tuple(o for o in overrides if not o.strip().startswith(CATALOG_KEYS))
    if dropped := [o for o in overrides if o not in kept]:
        log.warning("section %r keeps its own data set: %s not applied to it (catalog settings "
                    "apply to the synthetic catalog's sections)", section, ", ".join(dropped))
    return kept


def _seeds(profile: str) -> tuple[int, ...]:
    from mmsr_lib.config import profile_seeds

    return profile_seeds(profile)


def _nb00(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook.quickstart import quickstart_configs

    # the quick start trains one seed (the profile's first)
    return [Section("quickstart", quickstart_configs(profile, *overrides), _seeds(profile)[:1],
                    fixed_seeds=True)]


def _nb01(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import grids

    # the from-scratch section is opt-in (the notebook's from_scratch=False), so not priced
    return [Section("Table II", grids.table2_configs(profile, *overrides), _seeds(profile))]


def _nb02(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import grids

    return [Section("Table III", grids.table3_configs(profile, *overrides), _seeds(profile)),
            Section("Coarse+ with a residual DNN (ours)",
                    grids.table3_configs(profile, *overrides, residual_dnn=True),
                    _seeds(profile)),
            Section("Coarse, the authors' code's gate and FiLM",
                    grids.table3_configs(profile, *overrides, authors_code=True),
                    _seeds(profile))]


def _nb03(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import grids

    out = [Section("Table IV", grids.table4_configs(profile, *overrides), _seeds(profile))]
    if profile != "smoke":  # the notebook's include_movielens default
        name = "Table IV MovieLens-100K"
        out.append(Section(name, grids.table4_configs(
            profile, *own_data_overrides(name, overrides), dataset="movielens-100k"),
            _seeds(profile)))
    # from scratch: opt-in in the notebook (from_scratch=False), so not priced here
    return out


# the recipes (prefixes) of what notebooks 07, 10 and 11 keep from each run's weights
COLD_RECIPE, VECTORS_RECIPE, REEVALUATE_RECIPE = (
    "cold_start.evaluate_cold mode=paper", "embeddings.model_vectors", "protocol.reevaluate")


def _nb07(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import grids

    return [Section("Table IV (cold)", grids.table4_configs(profile, *overrides),
                    _seeds(profile), reads_weights=COLD_RECIPE)]


def _nb08(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import transfer

    sources = transfer.source_configs(profile, *overrides)  # one seed each (set inside)
    x_source = transfer.catalogs(profile)["X"]["source"].label
    return [Section("transfer sources", sources, _seeds(profile)[:1], fixed_seeds=True),
            Section("Table IX", transfer.table9_configs(profile, sources, *overrides),
                    _seeds(profile)),
            Section("Table X", transfer.table10_configs(profile, sources[x_source], *overrides),
                    _seeds(profile))]


def _nb09(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import tricks

    # what notebook 09 adds to every row (the smoke profile's subsample), where defined
    extra = tuple(getattr(tricks, "notebook_overrides", lambda p: ())(profile))
    return [Section(f"Table {name}", fn(profile, *extra, *overrides), _seeds(profile))
            for name, fn in tricks.TABLES.items()]


def _nb10(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import embeddings, grids

    grid = grids.table4_configs(profile, *overrides)  # as the notebook (its data_path)
    rows = {k: grid[k] for k in embeddings.MODEL_ROWS.values()}
    return [Section(embeddings.RUNS_SECTION, rows, _seeds(profile),
                    reads_weights=VECTORS_RECIPE)]


def _nb11(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import protocol

    out = [Section("models (all windows, track_test)",
                   protocol.model_configs(profile, *overrides), _seeds(profile),
                   reads_weights=REEVALUATE_RECIPE)]
    datasets: dict[str, dict] = {"synthetic": {}}
    if profile != "smoke":
        datasets["movielens-100k"] = {"track_test": False}
    for name, kw in datasets.items():
        own = overrides if name == "synthetic" else own_data_overrides(name, overrides)
        if name != "synthetic":
            out.append(Section(f"{name} all windows", protocol.model_configs(
                profile, *own, dataset=name, include_mostpop=False, **kw), _seeds(profile)))
        out.append(Section(f"{name} last windows", protocol.model_configs(
            profile, *own, dataset=name, windows="last", include_mostpop=False, **kw),
            _seeds(profile)))
    return out


def _nb04(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import comparisons

    out = [Section("Table V", comparisons.table5_configs(profile, *overrides), _seeds(profile))]
    if profile != "smoke":  # the notebook's include_movielens default
        name = "Table V MovieLens-100K"
        out.append(Section(name, comparisons.table5_configs(
            profile, *own_data_overrides(name, overrides), dataset="movielens-100k"),
            _seeds(profile)))
    out.append(Section(comparisons.CARCA_HEAD_SECTION,
                       comparisons.carca_head_configs(profile, *overrides), _seeds(profile)))
    return out


def _smoke_epoch(profile: str) -> tuple[str, ...]:
    """Notebooks 05 and 06 train one epoch per row on smoke."""
    return ("train.epochs=1",) if profile == "smoke" else ()


def _nb05(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import comparisons

    return [Section("Table VI", comparisons.table6_configs(
        profile, *overrides, *_smoke_epoch(profile)), _seeds(profile))]


def _nb06(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import comparisons

    return [Section("Table VII", comparisons.table7_configs(
        profile, *overrides, *_smoke_epoch(profile)), _seeds(profile))]


def _nb12(profile: str, overrides: Sequence[str]) -> list[Section]:
    from mmsr_lib.workbook import crossover

    out = [Section("density sweep", crossover.density_sweep_configs(profile, None, *overrides),
                   _seeds(profile))]
    if profile != "smoke":  # the notebook's include_movielens / real_sweep defaults; listing
        # writes the subsampled MovieLens-100K copies under the data cache (once, small)
        name = "subsample sweep"
        out.append(Section(name, crossover.subsample_sweep_configs(
            profile, crossover.DEFAULT_FRACTIONS, *own_data_overrides(name, overrides),
            dataset="movielens-100k"), _seeds(profile)))
    return out


# notebook -> (title, its grids as the notebook runs them: its sections, their seeds and the
# notebook's defaults per profile). A notebook whose grid cannot be listed (a workbook module
# changed) is reported by `study_runs`, not fatal
NOTEBOOK_GRIDS: dict[str, tuple[str, Callable[[str, Sequence[str]], list[Section]]]] = {
    "00": ("00_quickstart", _nb00),
    "01": ("01_item_encoders (Table II)", _nb01),
    "02": ("02_fusion (Table III)", _nb02),
    "03": ("03_sr_architectures (Table IV)", _nb03),
    "04": ("04_overall_comparison (Table V)", _nb04),
    "05": ("05_vlp_architectures (Table VI)", _nb05),
    "06": ("06_vision_representations (Table VII)", _nb06),
    "07": ("07_cold_start (Table IV's runs)", _nb07),
    "08": ("08_transfer (Tables IX, X)", _nb08),
    "09": ("09_bag_of_tricks (Tables XI-XIV)", _nb09),
    "10": ("10_visualization (Table IV's SASRec runs)", _nb10),
    "11": ("11_protocol", _nb11),
    "12": ("12_ids_vs_content (density sweep)", _nb12),
}


def notebook_key(notebook: str) -> str:
    key = str(notebook).split("_")[0].zfill(2)
    if key not in NOTEBOOK_GRIDS:
        raise ValueError(f"no grid for notebook {notebook!r}; choose one of "
                         f"{sorted(NOTEBOOK_GRIDS)}")
    return key


def label_text(label: Any) -> str:
    """A grid row's label as printed: a (group, row) tuple joined with " / "."""
    return " / ".join(map(str, label)) if isinstance(label, tuple) else str(label)


@dataclass
class PlannedRun:
    """One run of a grid: where it comes from and its (seeded) configuration."""

    notebook: str
    section: str
    label: Any
    config: RunConfig
    reads_weights: str | None = None  # its section's (`Section.reads_weights`)


class GridUnavailable(ValueError):
    """A notebook's grid cannot be listed in this checkout (its module or function is missing
    or changed); the message says which."""


def select_runs(runs: Sequence[PlannedRun], only: str | None) -> list[PlannedRun]:
    """The runs whose "section / row" matches the regular expression `only` (case-insensitive,
    anywhere in the text; None keeps all), so a user short of time can list, price, summarise or
    train one part of a notebook, e.g. ``--only MovieLens`` or ``--only "FDSA|CARCA"``. A pattern
    that matches nothing is an error that lists what there is, not an empty, silent grid."""
    if only is None:
        return list(runs)
    try:
        pattern = re.compile(only, re.IGNORECASE)
    except re.error as err:
        raise ValueError(f"--only {only!r} is not a regular expression: {err}") from err
    kept = [r for r in runs if pattern.search(f"{r.section} / {label_text(r.label)}")]
    if not kept:
        names = dict.fromkeys(f"{r.section} / {label_text(r.label)}" for r in runs)
        raise ValueError(f"--only {only!r} matches no row; the rows are (section / row): "
                         + "; ".join(names))
    return kept


def row_config(notebook: str, profile: str, *overrides: str, only: str) -> RunConfig:
    """The configuration of the one notebook row `only` matches, at its first seed: what a
    search of that row's setting (`mmsr tune --notebook NN --only ROW`) starts from, so its
    trial at the row's own setting is the row's stored run, not a near copy of it."""
    runs = notebook_runs(notebook, profile, *overrides, only=only)
    rows = dict.fromkeys(f"{r.section} / {label_text(r.label)}" for r in runs)
    if len(rows) != 1:
        raise ValueError(f"--only {only!r} matches {len(rows)} rows of notebook {notebook}; "
                         "name one (section / row): " + "; ".join(rows))
    return runs[0].config


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``--seeds 42,43,44`` as integers (None: the profile's); a word that is not one is an
    error that says so."""
    if text is None:
        return None
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give integers separated by commas, "
                         "e.g. --seeds 42,43,44,45,46") from None


def config_diff(base, cfg) -> list[str]:
    """Dotted ``key=value`` settings that turn `base` into `cfg` (both unresolved)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(base.to_dict()), flat(cfg.to_dict())
    out = []
    for key, value in b.items():
        if a.get(key) != value and key not in ("profile",):
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            out.append(f"{key}={'none' if text is None else text}")
    return out


def notebook_sections(notebook: str, profile: str, *overrides: str) -> list[Section]:
    """A notebook's grids on `profile` (`NOTEBOOK_GRIDS`), built once; `GridUnavailable` when
    this machine cannot build them (a missing optional package)."""
    key = notebook_key(notebook)
    try:
        return list(NOTEBOOK_GRIDS[key][1](profile, overrides))
    except (ImportError, AttributeError, TypeError) as err:
        raise GridUnavailable(f"the grid of notebook {NOTEBOOK_GRIDS[key][0]} cannot be "
                              f"listed here ({type(err).__name__}: {err})") from err


def notebook_runs(notebook: str, profile: str, *overrides: str,
                  only: str | None = None,
                  seeds: Sequence[int] | None = None,
                  sections: Sequence[Section] | None = None) -> list[PlannedRun]:
    """Every run of a notebook's grids on `profile`: each configuration once per seed (those of
    the rows `only` matches, `select_runs`). `seeds` replaces the profile's seeds of every
    section but those that train one seed on purpose (`Section.fixed_seeds`): a verdict the
    seeds withhold ("n.s. (seeds disagree)") is settled by training more of them, e.g.
    ``--seeds 42,43,44,45,46``, and the same seeds then list, summarise and train. `sections`:
    the grids `notebook_sections` already built (built here when not given)."""
    key = notebook_key(notebook)
    if sections is None:
        sections = notebook_sections(key, profile, *overrides)
    out = []
    if seeds is not None and not seeds:
        raise ValueError("--seeds names no seed; give them comma-separated, e.g. 42,43,44,45,46")
    for sec in sections:
        sec_seeds = sec.seeds if seeds is None or sec.fixed_seeds else tuple(seeds)
        for label, cfg in sec.configs.items():
            for seed in dict.fromkeys(sec_seeds):
                out.append(PlannedRun(key, sec.name, label, cfg.override(f"train.seed={seed}"),
                                      sec.reads_weights))
    return select_runs(out, only)


RUN_STATES = ("stored", "no weights", "stale", "training", "stopped", "failed", "archived",
              "to train")
# how `runner.run_or_load` records a run cut short by the user or a signal (`store.fail` writes
# the exception's class name first): such a run resumes from its checkpoint, it did not fail
INTERRUPTIONS = ("KeyboardInterrupt", "SystemExit", "Terminated")


def training_now(cfg: RunConfig) -> bool:
    """Whether a process is training this run now: it holds the run's lock (`runner.lock_of`,
    probed without waiting: `runner.lock_held`)."""
    from mmsr_lib.runs.runner import lock_held, lock_of

    return lock_held(lock_of(cfg))


# what reading a damaged, truncated or foreign checkpoint (or a missing key of it) raises;
# `weights_only=True` refuses anything but tensors and plain values
UNREADABLE_CHECKPOINT = (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError,
                         pickle.UnpicklingError)


def _checkpoint_header(path: Path) -> dict:
    """A checkpoint memory-mapped (never unpickled: ``weights_only``): the few values a listing
    reads come off the disk, the weights do not. Raises one of `UNREADABLE_CHECKPOINT`."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def run_progress(cfg: RunConfig) -> str:
    """How far a started run got, from its resumable checkpoint (the newest of
    ``<checkpoint_dir>/<hash>/checkpoint.pt`` and, for a stale run trained again, its
    ``retrain-*`` folder): "epoch 77/200, best 77"; "" when no epoch has finished yet. For
    `mmsr grid --list`, so a user sees whether a long run is worth waiting for."""
    from mmsr_lib.runs.runner import run_dir_of
    from mmsr_lib.train import SELECTION_METRIC

    run_dir = run_dir_of(cfg)
    found = [p for p in (run_dir / "checkpoint.pt", *run_dir.glob("retrain-*/checkpoint.pt"))
             if p.is_file()]
    if not found:
        return ""
    path = max(found, key=lambda p: p.stat().st_mtime)
    try:
        ck = _checkpoint_header(path)
        epoch, best, done = int(ck["epoch"]) + 1, int(ck["best_epoch"]), bool(ck["done"])
        score = float(ck["best_score"])
    except UNREADABLE_CHECKPOINT as err:
        return f"checkpoint {path} unreadable ({type(err).__name__})"
    text = f"epoch {epoch}/{cfg.resolved().train.epochs}, best {best}"
    if best:
        text += f" (valid {SELECTION_METRIC} {score:.2f})"
    return text + (", finished: stored when trained again" if done else "")


def run_state(cfg: RunConfig, store: Any, reads_weights: str | None = None) -> str:
    """Where one run stands in `store` (None: no store yet), one of `RUN_STATES`: *stored*
    (loaded as is), *no weights* (stored, but the notebook reads its trained weights, recipe
    `reads_weights`, and neither they nor what was kept from them are here: `weights_here`),
    *stale* (stored by other code or data, so trained again), *training* (a
    process holds its lock now, a stale run's included: a grid started beside it waits for it,
    then loads it),
    *stopped* (killed or interrupted: it resumes from its last checkpoint when trained again),
    *failed* (its error is in `mmsr results`), *archived* (not in this store, but in the
    repository's results archive, `docs/runs`: `mmsr results import docs/runs` adds it), *to
    train*."""
    state, record = run_state_and_record(cfg, store)
    if state == "stored" and reads_weights and not weights_here(record, reads_weights, store):
        return "training" if training_now(cfg) else "no weights"  # training: its re-run
    return state


def weights_here(record: Any, recipe: str, store: Any) -> bool:
    """Whether a notebook that reads `record`'s trained weights can draw it on this machine: a
    model without weights (most-popular), the run's own checkpoint (this very training, not a
    re-training elsewhere: `trained.check_same_training`), or arrays of `recipe` (a prefix) kept
    from this training in the store (`runs.derived`, archived with the run). Records imported
    from docs/runs have none of these until the notebook was run where their weights were."""
    from mmsr_lib.runs import derived
    from mmsr_lib.runs.trained import CheckpointError, check_same_training, checkpoint_path

    extra = record.extra or {}
    if "best_epoch" not in extra and "run_dir" not in extra:  # trained nothing: no weights
        return True
    if derived.kept(store, record.config_hash, record.updated, recipe):
        return True
    path = checkpoint_path(record)
    if not path.is_file():
        return False
    try:
        check_same_training(record, _checkpoint_header(path), path)
    except (CheckpointError, *UNREADABLE_CHECKPOINT):
        return False
    return True


def run_state_and_record(cfg: RunConfig, store: Any) -> tuple[str, Any]:
    """`run_state` and the stored record it was read from (None when there is none), so that a
    caller reading the stored results does not look each run up a second time."""
    from mmsr_lib.runs.archive import archived
    from mmsr_lib.runs.runner import current_data_fingerprint, stale_reason

    record = store.get(cfg.hash()) if store is not None else None
    if record is None:
        if training_now(cfg):
            return "training", None
        return ("archived" if archived(cfg.hash()) else "to train"), None
    if record.status != "done":
        if training_now(cfg):
            return "training", record
        interrupted = record.status == "running" or (record.error or "").startswith(INTERRUPTIONS)
        return ("stopped" if interrupted else "failed"), record
    if stale_reason(record, current_data_fingerprint(cfg)) is None:
        return "stored", record
    # a stale run keeps its record while a process trains it again (`store.start` leaves a
    # finished result readable), so its lock tells whether that is happening now
    return ("training" if training_now(cfg) else "stale"), record


STARTED_STATES = ("training", "stopped")  # the states whose checkpoint says how far a run got


def started_progress(cfg: RunConfig, state: str) -> str:
    """`run_progress` for a run in one of `STARTED_STATES`, "" for any other state: what
    `mmsr grid --list`, `--summary` and `mmsr tune --summary` show beside a run."""
    return run_progress(cfg) if state in STARTED_STATES else ""


def tune_summary(base: RunConfig, space: Mapping[str, Sequence], store: Any
                 ) -> pd.DataFrame:
    """The search's trials as they stand, training nothing: per combination its state
    (`run_state`), its scores when stored, and how far a started run got (`started_progress`),
    so a long search can be read while it trains or after it was stopped."""
    from mmsr_lib.runs.tuning import SCORE_COLUMNS, trial_configs, trial_scores

    rows = []
    for settings, cfg in trial_configs(base, space):
        state, rec = run_state_and_record(cfg, store)
        scores = trial_scores(rec) if state == "stored" else dict.fromkeys(SCORE_COLUMNS)
        rows.append({**settings, "state": state, **scores,
                     "progress": started_progress(cfg, state),
                     "hash": cfg.hash()})
    table = pd.DataFrame(rows)
    for col in ("best epoch", "epochs run"):
        if col in table:
            table[col] = table[col].astype("Int64")
    return table


def grid_summary(notebook: str, profile: str, *overrides: str, store: Any,
                 metric: str = "NDCG@10", split: str = "test",
                 only: str | None = None, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """A notebook's rows from the runs already stored, trained or not: a long cpu grid can be
    read while it trains, without the notebook. Per section and row: seeds stored (current code
    and data only: `run_state` says *stored*), how many converged and their best epochs, test
    HR@10 and `metric` as mean ± std over the stored seeds (`significance.summarize`),
    `metric` against the section's best row by its mean (among the rows with every seed
    stored, where there are any) evaluated on the same users and targets (`evaluation_cases`:
    a section spanning catalogs has a best row on each), with the paired test over users (a
    difference only between converged rows with every seed stored, Holm over the section's
    rows, else "n.s." or why not), and the seeds training now or stopped mid-run with how far they got (`started_progress`).
    `only` shows the rows it matches (`select_runs`), still against the best of all the
    section's rows. `seeds` as in `notebook_runs`. "not above MostPop" names the stored seeds
    that learned nothing beyond item popularity (`significance.not_above_most_popular`): the
    budget rule counts them as converged, so the column is where a failed seed shows.
    ``attrs["stored"]`` / ``attrs["planned"]``: the runs stored and planned in the rows shown."""
    from mmsr_lib.workbook.significance import (
        adjust,
        compare,
        converged,
        evaluation_cases,
        mean_std_cell,
        not_above_most_popular,
        summarize,
    )

    planned = notebook_runs(notebook, profile, *overrides, seeds=seeds)
    shown = {(r.section, label_text(r.label)) for r in select_runs(planned, only)}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in planned:  # `only` hides rows, not rivals
        row = rows.setdefault((run.section, label_text(run.label)),
                              {"planned": 0, "runs": [], "started": []})
        row["planned"] += 1
        state, record = run_state_and_record(run.config, store)
        if state == "stored":
            row["runs"].append(record)
        elif state in STARTED_STATES:
            progress = started_progress(run.config, state)
            row["started"].append(f"seed {run.config.train.seed} {state}"
                                  + (f": {progress}" if progress else ""))
    for row in rows.values():
        row["summary"] = summarize(row["runs"], split, ("HR@10", metric))
        row["complete"] = len(row["runs"]) == row["planned"]
        # whom the row is evaluated on: rows on another catalog (a density point, a transfer
        # target) are never paired with it
        row["cases"] = (evaluation_cases(row["runs"][0].run_config(), split) if row["runs"]
                        else None)
    # (section, evaluation cases) -> its row with the highest mean, among the rows with every
    # seed stored where there are any (a one-seed row on top would leave nothing to test
    # against); a section whose rows are on several catalogs has a best row on each
    best: dict[tuple[str, str | None], tuple[str, str]] = {}
    for group in dict.fromkeys((key[0], row["cases"]) for key, row in rows.items()):
        scored = [key for key, row in rows.items()
                  if (key[0], row["cases"]) == group
                  and not math.isnan(row["summary"][metric])]
        pool = [key for key in scored if rows[key]["complete"]] or scored
        if pool:
            best[group] = max(pool, key=lambda k: rows[k]["summary"][metric])
    # each section's rows against their best are one family (Holm, `significance.adjust`), as
    # a notebook's list of claims is: the rows that can carry a claim, all seeds in and converged
    tests = {}
    for key, row in rows.items():
        ref = best.get((key[0], row["cases"]))
        if (ref is not None and ref != key and row["complete"] and rows[ref]["complete"]
                and converged(row["runs"]) and converged(rows[ref]["runs"])):
            tests[key] = compare(store, row["runs"], rows[ref]["runs"], split, metric)
    for section in dict.fromkeys(section for section, _ in best):
        adjust([t for key, t in tests.items() if key[0] == section])
    out = []
    for key, row in rows.items():
        if key not in shown:
            continue
        runs, ref = row["runs"], best.get((key[0], row["cases"]))
        if not runs or ref is None:
            against = ""
        elif ref == key:
            against = "best"
        elif not (row["complete"] and rows[ref]["complete"]):
            against = "seeds missing"
        elif key not in tests:
            against = "not converged"
        else:
            t = tests[key]
            against = f"{t.diff:+.2f} ({t.p_cell})" if t.significant else t.ns_cell
        sm = row["summary"]
        out.append({
            "section": key[0], "row": key[1], "seeds": f"{len(runs)}/{row['planned']}",
            "converged": sm["converged"] if runs else "",
            "best epochs": " / ".join(str(r.extra.get("best_epoch", "?")) for r in runs),
            **{f"{split} {m}": mean_std_cell(sm[m], sm[f"{m} std"]) if runs else ""
               for m in ("HR@10", metric)},
            "not above MostPop": ", ".join(f"seed {r.config['train']['seed']}"
                                           for r in not_above_most_popular(store, runs)),
            f"vs best ({metric})": against,
            "in progress": "; ".join(row["started"]),
        })
    table = pd.DataFrame(out)
    table.attrs["stored"] = sum(len(r["runs"]) for k, r in rows.items() if k in shown)
    table.attrs["planned"] = sum(r["planned"] for k, r in rows.items() if k in shown)
    return table


def train_notebook(notebook: str, profile: str, *overrides: str, store: Any = None,
                   workers: int | None = None, progress: bool = True,
                   only: str | None = None,
                   seeds: Sequence[int] | None = None) -> dict[str, int]:
    """Train every run of a notebook's grids (`notebook_runs`, its default parameters) as one
    queue, so that no core waits for one grid's slowest run before the next grid starts; the
    notebook then loads them all. Runs warm-started from another run of the queue
    (``train.init_from``, notebook 08's transfers) start only once their source is stored.
    Workers: ``runs.parallel.grid_workers`` unless given. `only` trains the rows it matches
    (`select_runs`) and the sources they warm-start from; `seeds` as in `notebook_runs`.
    A stored run of a section that reads the weights, whose weights are not here ("no weights":
    imported from docs/runs), is trained again (forced: its stored result is replaced when the
    re-run completes, and an interrupted re-run resumes), since the notebook cannot draw it.
    Returns the counts of distinct runs, those stored before, those trained now and, of
    these, the stored ones trained again for their weights ("retrained")."""
    from mmsr_lib.runs.runner import pending_runs, train_pending
    from mmsr_lib.runs.store import ResultsStore
    from mmsr_lib.workbook.transfer import missing_source_checkpoints, source_checkpoint_message

    store = store if store is not None else ResultsStore()
    runs = notebook_runs(notebook, profile, *overrides, seeds=seeds)
    every = {run.config.resolved().hash(): run.config for run in runs}
    distinct: dict[str, RunConfig] = {}
    for run in select_runs(runs, only):
        distinct.setdefault(run.config.resolved().hash(), run.config)
    sources = [c.resolved().train.init_from for c in distinct.values()]
    while sources:  # a selected transfer needs its source (and that one's, if any)
        source = sources.pop()
        if source in every and source not in distinct:
            distinct[source] = every[source]
            sources.append(every[source].resolved().train.init_from)
    todo = {cfg.resolved().hash(): cfg for cfg in pending_runs(list(distinct.values()), store)}
    weighs = {run.config.resolved().hash(): run.reads_weights for run in runs if run.reads_weights}
    retrain = {h: cfg for h, cfg in distinct.items() if h not in todo and h in weighs
               and run_state(cfg, store, weighs[h]) == "no weights"}
    counts = {"runs": len(distinct), "stored": len(distinct) - len(todo),
              "trained": len(todo) + len(retrain), "retrained": len(retrain)}
    if retrain:
        log.info("%d stored runs of notebook %s have no weights here (imported results): "
                 "trained again, each stored result replaced when its re-run completes",
                 len(retrain), notebook)
        train_pending(list(retrain.values()), store, workers, force=True, progress=progress)
    # a warm start from a run this queue does not train needs that run's checkpoint here
    missing = missing_source_checkpoints(
        [c for c in todo.values() if c.resolved().train.init_from not in todo], store)
    if missing:
        base = profile_config(profile)
        raise FileNotFoundError("\n".join(source_checkpoint_message(
            h, rec, "`" + " ".join(["mmsr train --profile", profile, *(
                f"--set {s}" for s in config_diff(base, rec.run_config())), "--force"]) + "`"
            if rec is not None else f"`mmsr grid {notebook} --list --profile {profile}`")
            for h, rec in missing.items()))
    while todo:
        ready = {h: c for h, c in todo.items() if c.resolved().train.init_from not in todo}
        if not ready:
            raise ValueError(f"notebook {notebook}: runs {sorted(todo)} warm-start from each "
                             "other in a cycle; none can start")
        train_pending(list(ready.values()), store, workers, progress=progress)
        todo = {h: c for h, c in todo.items() if h not in ready}
    return counts


def study_runs(profile: str, *overrides: str, notebooks: Iterable[str] | None = None,
               unavailable: dict[str, str] | None = None) -> list[PlannedRun]:
    """The runs of every notebook with a grid (`NOTEBOOK_GRIDS`), in notebook order; a notebook
    whose grid cannot be listed here is left out and named in `unavailable`."""
    out = []
    for nb in notebooks or NOTEBOOK_GRIDS:
        try:
            out += notebook_runs(nb, profile, *overrides)
        except GridUnavailable as err:
            if unavailable is None:
                raise
            unavailable[nb] = str(err)
    return out


@dataclass
class KindRow:
    """One distinct cost shape of a grid plan: its runs and their summed prediction."""

    kind: str
    data: str
    notebooks: list[str]
    runs: int
    prediction: Prediction | None
    hours_budget: float
    hours_expected: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    suggestions: list[dict] = field(default_factory=list)


@dataclass
class GridPlan:
    """`plan_runs`' answer: one row per cost shape and the totals."""

    title: str
    profile: str
    device: str
    rows: list[KindRow]
    runs: int  # distinct runs (a run shared by notebooks counted once)
    planned: int  # runs as the notebooks list them (seeds included)
    skipped: dict[str, str]  # run label -> why it cannot be planned here
    notes: list[str] = field(default_factory=list)
    capacity: tuple[float | None, str] = (None, "unknown")  # the device's memory (MiB), what

    @property
    def hours_budget(self) -> float:
        return sum(r.hours_budget for r in self.rows)

    @property
    def hours_expected(self) -> float:
        return sum(r.hours_expected for r in self.rows)


def plan_runs(runs: Sequence[PlannedRun], *, title: str = "", steps: int = 3,
              eval_rows: int = 256, device: str | None = None, isolate: bool = True,
              plugins: Sequence[str] = (), max_probe_items: int | None = None,
              probe_fn: ProbeFn | None = None, capacity_mb: float | None = None,
              with_suggestions: bool = True, progress: Callable[[str], None] | None = None,
              ) -> GridPlan:
    """Plan a list of runs: deduplicate them by run hash (a run two notebooks share trains once),
    probe each distinct `cost_key` once, predict every run from its shape's probe and its own
    data counts, and sum per shape. A frozen-prefix cache is paid once per branch and catalog
    (later runs map it from the shared disk cache): the probes share one temporary cache folder,
    so a branch's cache is built (timed, its peak measured) by the first probe that needs it and
    mapped by the others, whose kind is still shown with that build's time and peak
    (`_as_if_built`). Data generation/import is not counted."""
    with tempfile.TemporaryDirectory(prefix="mmsr-plan-cache-") as cache_dir:
        return _plan_runs(runs, title, steps, eval_rows, device, isolate, plugins,
                          max_probe_items, probe_fn, capacity_mb, with_suggestions, progress,
                          cache_dir)


def _plan_runs(runs: Sequence[PlannedRun], title: str, steps: int, eval_rows: int,
               device: str | None, isolate: bool, plugins: Sequence[str],
               max_probe_items: int | None, probe_fn: ProbeFn | None,
               capacity_mb: float | None, with_suggestions: bool,
               progress: Callable[[str], None] | None, cache_dir: str) -> GridPlan:
    from mmsr_lib.train import resolve_device

    unique: dict[str, PlannedRun] = {}
    shared: dict[str, set[str]] = {}
    for run in runs:
        h = run.config.resolved().hash()
        unique.setdefault(h, run)
        shared.setdefault(h, set()).add(run.notebook)
    groups: dict[tuple, list[tuple[PlannedRun, RunConfig]]] = {}
    notes: dict[tuple, list[str]] = {}
    skipped: dict[str, str] = {}
    all_notes: set[str] = set()
    for run in unique.values():
        try:
            cfg, n = stand_in(run.config)
        except LookupError as err:
            skipped[f"{run.notebook} {run.section} {run.label}"] = str(err)
            continue
        key = cost_key(cfg)
        groups.setdefault(key, []).append((run, cfg))
        notes.setdefault(key, n)
        all_notes.update(n)
    first = next(iter(groups.values()))[0][1] if groups else None
    dev = str(resolve_device(device or (first.train.device if first else "auto")))
    cap = (capacity_mb, "memory given") if capacity_mb is not None else device_memory(dev)
    fn = probe_fn or _default_probe(steps, eval_rows, dev, isolate, plugins, cache_dir)
    fresh: dict[str, tuple[float, float]] = {}  # cache key -> its first build: seconds, MiB
    charged: set[tuple] = set()  # (cache key, a run's catalog): a build some run already paid
    rows = []
    for i, (key, members) in enumerate(groups.items()):
        rep = members[0][1]
        kind, data = describe_kind(rep), describe_data(rep)
        nbs = sorted({nb for run, _ in members for nb in shared[run.config.resolved().hash()]})
        if progress is not None:
            progress(f"[{i + 1}/{len(groups)}] probing {kind} on {data} "
                     f"({len(members)} run(s))")
        try:
            probed, p, small = measure(rep, fn, dev, max_probe_items)
        except Exception as err:  # one shape that cannot run does not sink the plan
            rows.append(KindRow(kind, data, nbs, len(members), None, math.nan, math.nan,
                                error=f"{type(err).__name__}: {err}", notes=notes[key]))
            continue
        p = _as_if_built(p, fresh)
        small = _as_if_built(small, fresh) if small is not None else None
        hb = he = 0.0
        pred = None
        total = sum(fresh[c["key"]][0] for c in p.caches)
        for _, cfg in members:
            counts = p.counts if probed.hash() == cfg.hash() else data_counts(cfg)
            pred = predict(cfg, p, counts, cap, small)
            mine = build_key(cfg)[-1]  # the run's catalog: the probe's caches, on its items
            new = [c["key"] for c in p.caches if (c["key"], mine) not in charged]
            charged.update((k, mine) for k in new)
            share = sum(fresh[k][0] for k in new) / total if total > 0 else 0.0
            hb += pred.hours(pred.budget_epochs, cache=share)
            he += pred.hours(pred.expected_epochs, cache=share)
        row_notes = list(notes[key])
        if probed.hash() != rep.hash():
            row_notes.append(_reduced_note(probed, small))
        row = KindRow(kind, data, nbs, len(members), pred, hb, he, notes=row_notes)
        if with_suggestions and pred is not None and pred.fits is False:
            row.suggestions = suggest(rep, fn, cap, data_counts, dev, max_items=max_probe_items)
        rows.append(row)
    profile = first.profile if first else "?"
    return GridPlan(title, profile, dev, rows, len(unique), len(runs), skipped,
                    sorted(all_notes), cap)


def _as_if_built(p: Probe, fresh: dict[str, tuple[float, float]]) -> Probe:
    """`p` with the build time and peak of every cache it mapped replaced by those of the probe
    that built it (recorded in `fresh`, which this fills): a kind is planned as if it built its
    own caches, and `plan_runs` charges each build once."""
    for c in p.caches:
        if c["built"] or c["key"] not in fresh:
            fresh.setdefault(c["key"], (c["seconds"], c["peak_mb"]))
    if not p.caches:
        return p
    builds = [fresh[c["key"]] for c in p.caches]
    peaks = [peak for _, peak in builds if math.isfinite(peak)]
    cache_peak = max([p.cache_peak_mb, *peaks])
    return dataclasses.replace(p, cache_seconds=sum(sec for sec, _ in builds),
                               cache_peak_mb=cache_peak, peak_mb=max(p.train_peak_mb, cache_peak))


def format_grid_plan(plan: GridPlan) -> str:
    """The table of a grid plan: one line per configuration kind, then the total."""
    unit = "gpu" if plan.device.startswith("cuda") else "cpu"
    header = (f"{plan.title}: {plan.runs} distinct run(s) ({plan.planned} as the notebooks list "
              f"them), {len(plan.rows)} configuration kind(s), probed on {plan.device} "
              f"({plan.capacity[1]}: {_mb(plan.capacity[0])})")
    cols = ("configuration kind", "data", "nb", "runs", "peak", "fits", "s/epoch", "epochs",
            f"{unit} time (budget)", f"{unit} time (expected)")
    table = []
    for r in plan.rows:
        p = r.prediction
        if p is None:
            table.append((r.kind, r.data, ",".join(r.notebooks), str(r.runs), "-", "-", "-", "-",
                          "-", "-"))
            continue
        fit = {True: "yes", False: "NO", None: "?"}[p.fits]
        table.append((r.kind, r.data, ",".join(r.notebooks), str(r.runs), _mb(p.peak_mb), fit,
                      f"{p.epoch_seconds + p.eval_seconds:.2f}",
                      f"{p.budget_epochs}/{p.expected_epochs}",
                      _h(3600 * r.hours_budget), _h(3600 * r.hours_expected)))
    table.append(("total", "", "", str(sum(r.runs for r in plan.rows)), "", "", "", "",
                  _h(3600 * plan.hours_budget), _h(3600 * plan.hours_expected)))
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    right = {3, 4, 6, 7, 8, 9}

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    out = [header, line(cols), line(["-" * w for w in widths])]
    out += [line(row) for row in table[:-1]]
    out += [line(["-" * w for w in widths]), line(table[-1])]
    out.append(f"total: {plan.hours_budget:.3g} {unit}-hours at the epoch budgets, "
               f"{plan.hours_expected:.3g} {unit}-hours expected (best epoch at "
               f"{EXPECTED_BEST_SHARE:.0%} of the budget + patience)")
    out.append("measured: seconds per step, build, validation on a slice, peak memory (one probe "
               "per kind); counted: steps per epoch, users; extrapolated: everything summed. "
               "s/epoch = training + validation; a frozen-prefix cache build is counted once per "
               "encoder and catalog; data generation/import is not counted.")
    out += [f"note: {n}" for n in plan.notes]
    for r in plan.rows:
        out += [f"note: {r.kind} on {r.data}: {n}" for n in r.notes if n not in plan.notes]
        if r.error:
            out.append(f"cannot probe {r.kind} on {r.data}: {r.error}")
        for s in r.suggestions:
            what = (f"needs {_mb(s['peak_mb'])} ({'fits' if s['fits'] else 'does not fit'})"
                    if "error" not in s else f"cannot run ({s['error']})")
            out.append(f"does not fit: {r.kind}: try {s['change']}: {what}")
    for label, why in plan.skipped.items():
        out.append(f"set aside (as the notebook does): {label}: {why}")
    return "\n".join(out)


# -- checking predictions against measured runs ----------------------------------------------------
def validate_plan(store: Any, configs: Mapping[Any, RunConfig] | Iterable[RunConfig], *,
                  steps: int = 3, eval_rows: int = 256, device: str | None = None,
                  isolate: bool = True, probe_fn: ProbeFn | None = None,
                  print_table: bool = True) -> Any:
    """Predicted vs measured seconds per training epoch (the history's ``train_seconds``,
    median over the run's epochs) and per validation (``eval_seconds``) for every configuration
    already stored as done in `store`; one probe per cost shape. Ratio = predicted / measured
    (1 = exact; > 1 the plan over-estimates). The epochs each run took stand beside the
    expected epochs of the patience rule (`expected_epochs`) and the budget. Returns the table
    (a DataFrame)."""
    import pandas as pd

    from mmsr_lib.train import resolve_device

    items = list(configs.items()) if isinstance(configs, Mapping) else \
        [(c.name, c) for c in configs]
    probes: dict[tuple, tuple[RunConfig, Probe, Probe | None]] = {}
    rows = []
    for label, cfg in items:
        r = cfg.resolved()
        rec = store.get(r.hash())
        if rec is None or rec.status != "done" or not rec.history:
            continue
        planned, _ = stand_in(r)
        dev = str(resolve_device(device or planned.train.device))
        fn = probe_fn or _default_probe(steps, eval_rows, dev, isolate, ())
        key = cost_key(planned)
        if key not in probes:
            probes[key] = measure(planned, fn, dev)
        _, p, small = probes[key]
        pred = predict(planned, p, data_counts(planned), small=small)
        train_s = [h["train_seconds"] for h in rec.history if "train_seconds" in h]
        eval_s = [h["eval_seconds"] for h in rec.history if "eval_seconds" in h]
        m_train = float(np.median(train_s)) if train_s else math.nan
        m_eval = float(np.median(eval_s)) if eval_s else math.nan
        rows.append({
            "run": label_text(label),
            "hash": r.hash(), "ran on": rec.extra.get("device", "?"), "probed on": p.device,
            "epochs": len(train_s), "expected epochs": pred.expected_epochs,
            "budget": pred.budget_epochs,
            "measured s/epoch": m_train, "predicted s/epoch": pred.epoch_seconds,
            "ratio": pred.epoch_seconds / m_train if m_train > 0 else math.nan,
            "measured eval s": m_eval, "predicted eval s": pred.eval_seconds,
            "eval ratio": pred.eval_seconds / m_eval if m_eval > 0 else math.nan,
        })
    table = pd.DataFrame(rows)
    if print_table:
        if table.empty:
            print("validate_plan: none of these configurations is stored as done")
        else:
            with pd.option_context("display.width", 200, "display.max_columns", None):
                print(table.drop(columns=["hash"]).to_string(index=False,
                                                            float_format=lambda x: f"{x:.3g}"))
            ratios = table["ratio"].dropna()
            if len(ratios):
                print(f"predicted / measured s/epoch: median {ratios.median():.2f}, range "
                      f"{ratios.min():.2f}-{ratios.max():.2f} over {len(ratios)} run(s)")
    return table


# -- command line ----------------------------------------------------------------------------------
def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="will a configuration fit, and how long will it / a notebook / the study take",
        description="Probes on this machine (a few timed training steps through the trainer's "
                    "own step, one validation on a slice, peak memory) and predicts memory, "
                    "sequences/s, seconds per epoch and hours for the budget; says what is "
                    "measured and what extrapolated. Examples: mmsr plan --profile cpu --set "
                    "model.item_encoder=mm; mmsr plan --notebook 03 --profile cpu; "
                    "mmsr plan --study --profile paper")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="default: $MMSR_PROFILE or cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, repeatable (applied to every grid row too)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--notebook", default=None,
                      help=f"plan a notebook's grids ({', '.join(sorted(NOTEBOOK_GRIDS))})")
    what.add_argument("--study", action="store_true",
                      help="plan every notebook's grids on the profile")
    p.add_argument("--only", default=None, metavar="REGEX",
                   help="with --notebook: only the rows whose 'section / row' matches this "
                        "regular expression (case-insensitive), as `mmsr grid --only`")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="with --notebook: these seeds instead of the profile's, as `mmsr grid "
                        "--seeds` (what more seeds would cost)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per probe (default 5 for one configuration, 3 for grids)")
    p.add_argument("--eval-users", type=int, default=None,
                   help="validation users ranked by the probe (default 512 / 256 for grids)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's)")
    p.add_argument("--in-process", action="store_true",
                   help="probe in this process (quicker; the CPU peak is then this process's "
                        "during the probe, not a fresh process's)")
    p.add_argument("--probe-items", type=int, default=None,
                   help=f"a content model on a larger synthetic catalog is probed at this many "
                        f"items and half as many and extrapolated (default: {CPU_PROBE_ITEMS} on "
                        f"CPU; CUDA and 0: the run's own catalog)")
    p.add_argument("--memory-mb", type=float, default=None,
                   help="plan for a device with this much memory instead of this one's")
    p.add_argument("--validate", action="store_true",
                   help="also compare predicted vs measured s/epoch of runs already stored")
    p.add_argument("--results", default=None, help="results store for --validate")
    p.add_argument("--json", default=None, help="also write the plan as JSON here")


def cmd_plan(args: argparse.Namespace) -> int:
    profile = args.profile or default_profile()
    grid = args.notebook is not None or args.study
    steps = args.steps if args.steps is not None else (3 if grid else 5)
    eval_rows = args.eval_users if args.eval_users is not None else (256 if grid else 512)
    common = dict(steps=steps, eval_rows=eval_rows, device=args.device,
                  isolate=not args.in_process, plugins=tuple(args.plugin or ()),
                  max_probe_items=args.probe_items, capacity_mb=args.memory_mb)
    if grid:
        unavailable: dict[str, str] = {}
        if args.study:
            runs = study_runs(profile, *args.overrides, unavailable=unavailable)
            title = f"study on profile {profile}"
        else:
            key = notebook_key(args.notebook)
            runs = notebook_runs(key, profile, *args.overrides, only=args.only,
                                 seeds=parse_seeds(args.seeds))
            title = f"notebook {NOTEBOOK_GRIDS[key][0]} on profile {profile}"
        result: Any = plan_runs(runs, title=title, progress=lambda s: print(s, file=sys.stderr),
                                **common)
        result.notes += [f"not in the total: {why}" for why in unavailable.values()]
        print(format_grid_plan(result))
        configs = {f"{r.notebook} {r.label} seed {r.config.train.seed}": r.config
                   for r in runs}
    else:
        cfg = profile_config(profile).override(*args.overrides)
        result = plan_config(cfg, **common)
        print(format_config_plan(result))
        configs = {cfg.name: cfg}
    if args.validate:
        from mmsr_lib.runs.store import ResultsStore

        validate_plan(ResultsStore(args.results, readonly=True), configs, steps=steps,
                      eval_rows=eval_rows, device=args.device, isolate=not args.in_process)
    if args.json:
        from mmsr_lib.util.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(dataclasses.asdict(result), indent=1,
                                                default=str))
    return 0


__all__ = [
    "ConfigPlan", "DataCounts", "GridPlan", "GridUnavailable", "KindRow", "NOTEBOOK_GRIDS",
    "PlannedRun", "Prediction", "Probe", "add_plan_parser", "build_key", "cmd_plan", "cost_key",
    "data_counts", "describe_kind", "device_memory", "expected_epochs", "fit_candidates", "fits",
    "format_config_plan", "format_grid_plan", "notebook_runs", "plan_config", "plan_runs",
    "predict", "probe", "probe_config", "select_runs", "stand_in", "study_runs", "suggest",
    "validate_plan",
]
