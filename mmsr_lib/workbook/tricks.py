"""Bag of tricks (paper Sec. 8, Tables XI-XIV): what each training choice buys, and what it costs.

* Table XI - full vs top-block fine-tuning of the encoders (``model.finetune=full|top``);
* Table XII - the learning rate of the encoders ("top", ``train.encoder_lr``) vs everything else
  ("downstream", ``train.lr``), the paper's five rows;
* Table XIII - text length in tokens (``model.text_max_tokens`` 10 / 30 / 50, and 5 / 15 on the
  synthetic catalog, whose texts are shorter than 30 tokens);
* Table XIV - the image mask ratio of an MAE encoder (``model.mask_ratio`` 0 / 25 / 50 / 75%).

Every row also reports its cost (`cost_columns`): seconds per training epoch (the run's history,
``train_seconds``: the training steps of an epoch, without validation) and the peak memory of the
run (`PeakMemory`), because cost is what makes a user choose top over full fine-tuning.

Encoders. The paper fine-tunes RoBERTa-base, MAE-base and ResNet-50 (``paper`` profile). Every
row here trains encoder weights, so the ``cpu`` profile's frozen pretrained stand-ins cannot be
used, and fine-tuning the smallest pretrained text encoder that ships offline is too slow for a
2-core machine: one epoch of MMSR-T on the cpu catalog, measured on the shared development
machine (one thread, load ~5), took 173 s with MiniLM-L3's top two blocks and 462 s fully
fine-tuned, against 25 s for tiny-roberta (top blocks). With the profile's patience of 20 a run
needs 40-80 epochs and the tables need 27 distinct rows x 3 seeds, so ``smoke`` and ``cpu`` use
the tiny random-init encoders (tiny-roberta, tiny-mae, tiny-resnet; CLS pooling as the paper),
labelled so in every row. They answer "how much of an encoder should train, at which rate, on
how much input" for encoders learnt on this catalog; the paper's reason for small encoder rates
(not to erase pretrained knowledge) has nothing to act on here, which is a different question.
Any other encoders can be passed (``text=``, ``vision=``, ``cnn=``), e.g. ``text="minilm-l3"``.

Memory (`PeakMemory`). On CUDA: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats`` at the start of the run, minus what was allocated then. On CPU
(Linux): the kernel's peak resident set size (``VmHWM``), reset at the start of the run by
writing 5 to ``/proc/self/clear_refs`` after ``malloc_trim`` returned freed heap pages, minus the
resident size then: the memory the run added to the process (model, optimiser state,
activations, feature caches), not the interpreter, torch or the loaded data set. Without
``clear_refs`` (other systems) the resident size is sampled every 10 ms with psutil. One-off
process initialisation (lazy imports, the first optimiser step: up to ~200 MiB, measured) is paid
before the measure (`warm_up`), so the first row of a notebook is not charged for it. The run
itself is measured where it is trained (`run_costed_grid`); a row already stored by another
notebook has no measurement, and `cost_columns` then trains a one-epoch copy of it (not stored
in the results store) to measure it, and says so.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mmsr_lib.config import PROFILES, RunConfig, profile_config, profile_seeds
from mmsr_lib.encoders.vision import DEFAULT_MAE_MASK_RATIO
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.memory import peak_rss_bytes, reset_peak_rss
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook.grids import (
    FROM_SCRATCH,
    PAPER_ENCODERS,
    TINY_ENCODERS,
    Grid,
    grid_table,
)
from mmsr_lib.workbook.paper_numbers import paper_wide
from mmsr_lib.workbook.significance import converged, family_tests, verdict

log = logging.getLogger("mmsr.tricks")

PAPER_DOWNSTREAM_LR = 1e-4  # the paper's downstream rate, Table XII's reference
MASK_RATIOS = (0.0, 0.25, 0.5, 0.75)  # Table XIV: the paper's 0 / 50 / 75% plus 25%
# Table XIII on the synthetic catalog: its item texts are ~12 tokens long (at most ~19 with
# MiniLM's WordPiece, see `token_lengths`), so the paper's 30 and 50 cut nothing; 5 and 15 do
SYNTH_TOKEN_EXTRA = (5, 15)
# smoke (CI): the 27 distinct rows on a 40-user, 50-item catalog, so the notebook runs in seconds
SMOKE_SUBSAMPLE = ("data.synth.n_users=40", "data.synth.n_items=50")
COST_DIR = "runs/costs"  # one-epoch cost probes of rows trained elsewhere (not hashed results)

# Table XI: (group, row) as the paper prints them -> (item encoder kind, encoders, finetune)
TABLE11_ROWS: dict[tuple[str, str], tuple[str, tuple[str, ...], str]] = {
    ("ID", "ID"): ("id", (), "top"),
    ("MMSR-T", "RoBERTa"): ("text", ("RoBERTa",), "top"),
    ("MMSR-T", "RoBERTa-Full"): ("text", ("RoBERTa",), "full"),
    ("MMSR-V", "MAE"): ("vision", ("MAE",), "top"),
    ("MMSR-V", "MAE-Full"): ("vision", ("MAE",), "full"),
    ("MMSR-V", "ResNet"): ("vision", ("ResNet",), "top"),
    ("MMSR-V", "ResNet-Full"): ("vision", ("ResNet",), "full"),
    ("MMSR", "Ro.+MAE"): ("mm", ("RoBERTa", "MAE"), "top"),
    ("MMSR", "Ro.-F+MAE-F"): ("mm", ("RoBERTa", "MAE"), "full"),
}


# -- configurations --------------------------------------------------------------------------------
def tricks_encoders(profile: str, text: str | None = None, vision: str | None = None,
                    cnn: str | None = None) -> dict[str, str]:
    """Paper label (RoBERTa, MAE, ResNet) -> the encoder every row of this notebook fine-tunes:
    the paper's checkpoints on ``paper``, the tiny random-init zoo elsewhere (see the module
    docstring for why); `text`, `vision` (an MAE-family encoder for Table XIV) and `cnn`
    replace them."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    zoo = PAPER_ENCODERS if profile == "paper" else TINY_ENCODERS
    names = {k: zoo[k] for k in ("RoBERTa", "MAE", "ResNet")}
    for key, value in (("RoBERTa", text), ("MAE", vision), ("ResNet", cnn)):
        if value is not None:
            names[key] = value
    return names


def tricks_base(profile: str) -> RunConfig:
    """The paper's Sec. 8 default: SASRec, one merge-attention block, top-block fine-tuning (set
    explicitly: the cpu profile freezes its encoders) and, on cpu, CLS pooling as the paper."""
    base = profile_config(profile).override("model.sequence=sasrec", "model.fusion=merge_attn",
                                            "model.fusion_layers=1", "model.finetune=top")
    return base.override(*FROM_SCRATCH) if profile == "cpu" else base


def _row(base: RunConfig, kind: str, names: dict[str, str], labels: Sequence[str], name: str,
         *settings: str, overrides: Sequence[str] = ()) -> RunConfig:
    if kind == "id":  # the plain profile IDSR: one run shared with every notebook
        return profile_config(base.profile).override("model.sequence=sasrec", f"name={name}",
                                                     *overrides)
    enc = [f"model.item_encoder={kind}"]
    for label in labels:
        field = "text_encoder" if label == "RoBERTa" else "vision_encoder"
        enc.append(f"model.{field}={names[label]}")
    return base.override(*enc, *settings, f"name={name}", *overrides)


def table11_configs(profile: str, *overrides: str, text: str | None = None,
                    vision: str | None = None, cnn: str | None = None) -> Grid:
    """Table XI: each encoder with its top blocks fine-tuned and fully fine-tuned, and the ID
    baseline; keys are the paper's (group, row)."""
    names = tricks_encoders(profile, text, vision, cnn)
    base = tricks_base(profile)
    grid = Grid("XI", ("group", "row"))
    for (group, row), (kind, labels, finetune) in TABLE11_ROWS.items():
        tag = f"t11-{kind}-{'+'.join(names[x] for x in labels) or 'id'}-{finetune}"
        grid[group, row] = _row(base, kind, names, labels, tag, f"model.finetune={finetune}",
                                overrides=overrides)
    return grid


def paper_lr_rows() -> list[tuple[str, float, float]]:
    """Table XII's rows as the paper prints them: (label "top/downstream", top, downstream)."""
    rows = paper_wide("XII", "Bili")["row"]
    out = []
    for label in rows:
        top, down = (float(x) for x in label.split("/"))
        out.append((label, top, down))
    return out


def lr_scale(profile: str) -> float:
    """Factor from the paper's rates to this profile's: the profile's downstream rate over the
    paper's 1e-4 (``paper``: 1, the paper's values; ``smoke``: 10; ``cpu``: 30, its dim-64
    models' rate chosen on validation, 3e-3: a 30x smaller rate would not converge in the budget).
    The ratios between the rows, which are the question, stay the paper's."""
    return profile_config(profile).train.lr / PAPER_DOWNSTREAM_LR


def table12_configs(profile: str, *overrides: str, text: str | None = None,
                    vision: str | None = None) -> Grid:
    """Table XII: MMSR (RoBERTa + MAE) with the paper's (top, downstream) learning-rate pairs,
    scaled by `lr_scale`; keys ("MMSR", "5e-5/1e-4") as the paper's rows."""
    names = tricks_encoders(profile, text, vision)
    base = tricks_base(profile)
    scale = lr_scale(profile)
    grid = Grid("XII", ("group", "row"))
    for label, top, down in paper_lr_rows():
        top, down = _round(top * scale), _round(down * scale)
        grid["MMSR", label] = _row(base, "mm", names, ("RoBERTa", "MAE"),
                                   f"t12-{top:g}-{down:g}", f"train.encoder_lr={top!r}",
                                   f"train.lr={down!r}", overrides=overrides)
    return grid


def _round(x: float) -> float:
    """1e-4 * 10 is 0.0010000000000000002: round to the printed precision so that the row with
    the default rates is the default run (one hash)."""
    return float(f"{x:.6g}")


def paper_token_rows() -> list[int]:
    """Table XIII's text lengths (tokens) as the paper prints them."""
    rows = paper_wide("XIII", "Bili")["row"]
    return [int(r) for r in dict.fromkeys(rows)]


def table13_tokens(profile: str) -> list[int]:
    """Table XIII's text lengths on `profile`: the paper's 10 / 30 / 50 and, on the synthetic
    catalog, `SYNTH_TOKEN_EXTRA`."""
    extra = () if profile == "paper" else SYNTH_TOKEN_EXTRA
    return sorted({*paper_token_rows(), *extra})


def table13_configs(profile: str, *overrides: str, text: str | None = None,
                    vision: str | None = None, tokens: Sequence[int] | None = None) -> Grid:
    """Table XIII: MMSR-T and MMSR with the text cut to `tokens` (default `table13_tokens`;
    special tokens included); keys ("MMSR-T", "10") ... as the paper's."""
    names = tricks_encoders(profile, text, vision)
    base = tricks_base(profile)
    grid = Grid("XIII", ("group", "row"))
    for group, kind, labels in (("MMSR-T", "text", ("RoBERTa",)),
                                ("MMSR", "mm", ("RoBERTa", "MAE"))):
        for n in (tokens if tokens is not None else table13_tokens(profile)):
            grid[group, str(n)] = _row(base, kind, names, labels, f"t13-{kind}-{n}",
                                       f"model.text_max_tokens={n}", overrides=overrides)
    return grid


def table14_configs(profile: str, *overrides: str, ratios: Sequence[float] = MASK_RATIOS,
                    text: str | None = None, vision: str | None = None) -> Grid:
    """Table XIV: MMSR-V and MMSR with the MAE encoder's mask ratio; keys ("MMSR-V", "0%") ...
    The encoder's default ratio (75%) is left unset, so that row is Table XI's MAE / Ro.+MAE
    run (one hash). Every row fuses all the patches the MAE keeps (model.vision_grid=None): a
    masking MAE has no map to pool (`config` turns the grid off there), so the 0% row drops the
    cpu profile's 3 x 3 pooling too, and the rows differ in the mask ratio alone."""
    names = tricks_encoders(profile, text, vision)
    base = tricks_base(profile)
    grid = Grid("XIV", ("group", "row"))
    for group, kind, labels in (("MMSR-V", "vision", ("MAE",)),
                                ("MMSR", "mm", ("RoBERTa", "MAE"))):
        for r in ratios:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"mask ratio {r!r} must be in [0, 1)")
            value = "none" if r == DEFAULT_MAE_MASK_RATIO else repr(float(r))
            grid[group, f"{round(100 * r)}%"] = _row(
                base, kind, names, labels, f"t14-{kind}-{r:g}", f"model.mask_ratio={value}",
                "model.vision_grid=none", overrides=overrides)
    return grid


def notebook_overrides(profile: str) -> tuple[str, ...]:
    """What notebook 09 adds to every row: the smoke profile's subsample (`SMOKE_SUBSAMPLE`),
    nothing on cpu and paper."""
    return SMOKE_SUBSAMPLE if profile == "smoke" else ()


TABLES = {"XI": table11_configs, "XII": table12_configs, "XIII": table13_configs,
          "XIV": table14_configs}


# -- peak memory -----------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _page_size()
    except OSError:
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except ImportError:
            return None


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    """Give freed heap pages back to the system (glibc), so that memory an earlier run freed
    but the allocator kept resident does not hide this run's growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory a block of code adds (see the module docstring for exactly what is measured).

    ``with PeakMemory("cpu") as pm: ...`` then ``pm.peak_mb`` (MiB above the start),
    ``pm.base_mb`` (MiB at the start) and ``pm.method`` ("cuda-allocated", "vmhwm", "sampled" or
    "none" when nothing can be measured, with ``peak_mb`` NaN). `method` forces one ("sampled"
    works everywhere psutil or /proc does).
    """

    def __init__(self, device: Any = "cpu", method: str = "auto", interval: float = 0.01) -> None:
        import torch

        self.device = torch.device(device)
        if method not in ("auto", "vmhwm", "sampled"):
            raise ValueError(f"method must be auto, vmhwm or sampled, got {method!r}")
        self.requested = method
        self.interval = interval
        self.method = "none"
        self.base_mb = math.nan
        self.peak_mb = math.nan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled_peak = 0

    def __enter__(self) -> PeakMemory:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda-allocated"
        else:
            _malloc_trim()
            if self.requested in ("auto", "vmhwm") and reset_peak_rss():
                self.method = "vmhwm"
                self._base = _rss_bytes() or 0
            elif self.requested == "vmhwm":
                raise RuntimeError("/proc/self/clear_refs cannot be written here; use "
                                   "method='sampled'")
            elif _rss_bytes() is not None:
                self.method = "sampled"
                self._base = self._sampled_peak = _rss_bytes() or 0
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        if self.method != "none":
            self.base_mb = self._base / 2**20
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled_peak = max(self._sampled_peak, _rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.method == "cuda-allocated":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "vmhwm":
            peak = peak_rss_bytes() or 0
        elif self.method == "sampled":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._sampled_peak, _rss_bytes() or 0)
        else:
            return
        self.peak_mb = max(peak - self._base, 0) / 2**20


_WARM: set[tuple] = set()


def warm_up(cfg: RunConfig, data: Any) -> bool:
    """Pay, outside the measure, what a process pays once on its first run of a kind: lazy
    imports of the encoders' libraries and of the optimiser's helpers (measured: ~100 MiB for
    transformers' BERT classes, ~160 MiB on the first optimiser step). Builds the row's model
    without caches, takes one training step on one batch and evaluates a few users, then drops
    it; once per process and kind of model. Returns whether it ran."""
    import torch

    from mmsr_lib.data.loaders import TrainBatches
    from mmsr_lib.evaluate import evaluate_model
    from mmsr_lib.runs.runner import build_model
    from mmsr_lib.train import build_optimizer, build_schedule, resolve_device, train_step

    cfg = cfg.resolved()
    m = cfg.model
    key = (m.recommender, m.item_encoder, m.text_encoder, m.vision_encoder, m.vlp, m.sequence,
           m.fusion, m.finetune, cfg.train.device)
    if key in _WARM:
        return False
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.override("train.init_from=none"), data, device, cache=False)
    if model.trainable:
        batches = TrainBatches(data, cfg.train.batch_size, cfg.train.seed)
        batch = {k: v.to(device) for k, v in batches[0].items()}
        optimizer = build_optimizer(model, cfg)
        model.train()
        train_step(model, batch, optimizer, build_schedule(optimizer, cfg, len(batches)), cfg)
        del optimizer, batch
    model.eval()
    valid = data.eval_set("valid")
    with torch.no_grad():
        evaluate_model(model, valid.subset(np.arange(min(8, len(valid)))), cfg.eval.ks,
                       cfg.eval.batch_size)
    del model
    gc.collect()
    _WARM.add(key)
    return True


def measured_runner(cfg: RunConfig, **kw: Any) -> dict:
    """`runs.runner.run_experiment` with its peak memory (`PeakMemory`) in the result's extra:
    ``peak_memory_mb``, ``memory_base_mb``, ``memory_method``. The data set is loaded and the
    process warmed up (`warm_up`) first, so the measure covers this row's model, caches,
    training and final evaluation, not the data or one-off initialisation."""
    from mmsr_lib.runs.runner import load_data, run_experiment
    from mmsr_lib.train import resolve_device

    cfg = cfg.resolved()
    warm_up(cfg, load_data(cfg.data))
    with PeakMemory(resolve_device(cfg.train.device)) as pm:
        result = run_experiment(cfg, **kw)
    result["extra"].update(peak_memory_mb=pm.peak_mb, memory_base_mb=pm.base_mb,
                           memory_method=pm.method)
    return result


def run_costed_grid(configs: Mapping[Hashable, RunConfig], store: ResultsStore | None = None,
                    seeds: Sequence[int] | None = None, progress: bool = True,
                    force: bool = False) -> dict[Hashable, list[RunRecord]]:
    """`runs.runner.run_grid` whose newly trained runs also store their peak memory
    (`measured_runner`); stored runs are loaded as they are."""
    from mmsr_lib.runs.runner import run_or_load

    store = store if store is not None else ResultsStore()
    out: dict[Hashable, list[RunRecord]] = {}
    for label, cfg in configs.items():
        out[label] = [
            run_or_load(cfg.override(f"train.seed={seed}"), store=store, force=force,
                        progress=progress, runner=measured_runner)
            for seed in (seeds if seeds is not None else profile_seeds(cfg.profile))]
    return out


def probe_cost(cfg: RunConfig, refresh: bool = False) -> dict:
    """Seconds of one training epoch and the peak memory of `cfg` trained for one epoch, in a
    temporary folder (nothing enters the results store); cached in ``runs/costs/<hash>.json``
    with the code fingerprint. For rows whose stored run has no memory measurement. Under
    ``MMSR_LOAD_ONLY=1`` it only reads the cache (NaN when there is none)."""
    from mmsr_lib.runs.fingerprint import code_fingerprint, same_code
    from mmsr_lib.runs.runner import LOAD_ONLY_ENV

    cfg = cfg.resolved()
    path = resolve(COST_DIR) / f"{cfg.hash()}.json"
    fingerprint = code_fingerprint()
    if path.exists() and not refresh:
        cached = json.loads(path.read_text())
        if same_code(cached.get("code_fingerprint"), fingerprint) \
                or os.environ.get(LOAD_ONLY_ENV) == "1":
            return cached
    if os.environ.get(LOAD_ONLY_ENV) == "1":  # `make figures` draws, never trains
        return {"hash": cfg.hash(), "epoch_seconds": math.nan, "peak_memory_mb": math.nan,
                "memory_method": "none"}
    one = cfg.override("train.epochs=1", "train.init_from=none")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = measured_runner(one, progress=False, run_dir=Path(tmp))
    out = {
        "hash": cfg.hash(), "code_fingerprint": fingerprint,
        "epoch_seconds": float(result["history"][0]["train_seconds"]),
        "peak_memory_mb": result["extra"]["peak_memory_mb"],
        "memory_method": result["extra"]["memory_method"],
        "probe_seconds": time.perf_counter() - t0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(out, indent=1))
    tmp_path.replace(path)
    return out


def epoch_seconds(runs: Sequence[RunRecord]) -> float:
    """Mean seconds of a training epoch (steps only, no validation) over every epoch of every
    seed of a row."""
    secs = [h["train_seconds"] for r in runs for h in r.history if "train_seconds" in h]
    return float(np.mean(secs)) if secs else math.nan


def cost_columns(results: Mapping[Hashable, Sequence[RunRecord]],
                 configs: Mapping[Hashable, RunConfig], probe: bool = True) -> pd.DataFrame:
    """Per row: ``s/epoch`` (`epoch_seconds`), ``peak MiB`` (mean over the seeds measured while
    training; else, with `probe`, from a one-epoch `probe_cost`), ``memory from`` ("run",
    "1-epoch probe" or "-") and ``trainable params``."""
    rows = []
    for key, cfg in configs.items():
        runs = list(results.get(key, []))
        peaks = [r.extra["peak_memory_mb"] for r in runs
                 if isinstance(r.extra.get("peak_memory_mb"), (int, float))
                 and not math.isnan(r.extra["peak_memory_mb"])]
        source = "run" if peaks else "-"
        peak = float(np.mean(peaks)) if peaks else math.nan
        if not peaks and probe and runs:
            cost = probe_cost(cfg.override(f"train.seed={runs[0].config['train']['seed']}"))
            if not math.isnan(cost["peak_memory_mb"]):
                peak, source = cost["peak_memory_mb"], "1-epoch probe"
        trainable = [r.extra.get("n_trainable") for r in runs if r.extra.get("n_trainable")]
        rows.append({**dict(zip(getattr(configs, "levels", ("group", "row")), key, strict=True)),
                     "s/epoch": epoch_seconds(runs), "peak MiB": peak, "memory from": source,
                     "trainable params": int(trainable[0]) if trainable else None})
    levels = list(getattr(configs, "levels", ("group", "row")))
    return pd.DataFrame(rows).set_index(levels)


def tricks_table(results: Mapping, configs: Mapping, split: str = "test",
                 metrics: Sequence[str] = ("HR@10", "NDCG@10"), probe: bool = True,
                 extra: Mapping[Hashable, str] | None = None) -> pd.DataFrame:
    """`grids.grid_table` (encoders, epochs, converged, seeds, means and stds) plus the cost
    columns; `extra` adds a "setting" column (e.g. the learning rates actually used)."""
    table = grid_table(results, configs, split, metrics)
    table = table.join(cost_columns(results, configs, probe=probe))
    if extra is not None:
        table.insert(0, "setting", [extra.get(k, "") for k in table.index])
    return table


def lr_settings(configs: Mapping) -> dict[Hashable, str]:
    """Row -> "top 5e-04 / downstream 1e-03": the rates a Table XII row actually trains with."""
    out = {}
    for key, cfg in configs.items():
        t = cfg.resolved().train
        out[key] = f"top {t.encoder_lr:.0e} / downstream {t.lr:.0e}"
    return out


# -- claims ----------------------------------------------------------------------------------------
def verdict_table(store: ResultsStore, results: Mapping,
                  pairs: Sequence[tuple[Hashable, Hashable]], metric: str = "NDCG@10",
                  split: str = "test") -> pd.DataFrame:
    """Row A vs row B for each pair: difference, 95% CI, Wilcoxon p, Holm's p over the pairs
    (one family: `family_tests`) and the one sentence the significance rule allows."""
    out = []
    for (a, b), test in family_tests(store, results, pairs, split, metric).items():
        name_a, name_b = " ".join(map(str, a)), " ".join(map(str, b))
        out.append({"A": name_a, "B": name_b, "diff": test.diff, "ci_low": test.ci_low,
                    "ci_high": test.ci_high, "p": test.p_value, "p Holm": test.p_adjusted,
                    "verdict": verdict(test, name_a, name_b, converged(results[a]),
                                       converged(results[b]))})
    return pd.DataFrame(out, columns=["A", "B", "diff", "ci_low", "ci_high", "p", "p Holm",
                                      "verdict"])


def table11_pairs(configs: Grid | None = None) -> list[tuple]:
    """Full vs top fine-tuning of the same encoders (Table XI's question): (full row, top row).
    The pairs follow from `TABLE11_ROWS`; given a grid, only pairs whose two rows it has."""
    top = {(kind, labels): key for key, (kind, labels, ft) in TABLE11_ROWS.items()
           if ft == "top"}
    pairs = [(key, top[kind, labels]) for key, (kind, labels, ft) in TABLE11_ROWS.items()
             if ft == "full" and (kind, labels) in top]
    return pairs if configs is None else [(a, b) for a, b in pairs
                                          if a in configs and b in configs]


def table12_pairs(configs: Grid) -> list[tuple]:
    """Every row vs the equal-rate row at the downstream rate (1e-4/1e-4 in the paper's units):
    does a smaller (or equal but lower) encoder rate help?"""
    equal = [k for k in configs if len(set(k[1].split("/"))) == 1]
    ref = max(equal, key=lambda k: float(k[1].split("/")[0])) if equal else None
    return [(k, ref) for k in configs if ref is not None and k != ref]


def table13_pairs(configs: Grid) -> list[tuple]:
    """Shorter texts vs the longest, per group."""
    out = []
    for group in dict.fromkeys(k[0] for k in configs):
        keys = [k for k in configs if k[0] == group]
        longest = max(keys, key=lambda k: int(k[1]))
        out += [(k, longest) for k in keys if k != longest]
    return out


def table14_pairs(configs: Grid) -> list[tuple]:
    """Every mask ratio vs no masking (0%), per group."""
    out = []
    for group in dict.fromkeys(k[0] for k in configs):
        keys = [k for k in configs if k[0] == group]
        zero = next((k for k in keys if k[1] == "0%"), None)
        out += [(k, zero) for k in keys if zero is not None and k != zero]
    return out


PAIRS = {"XI": table11_pairs, "XII": table12_pairs, "XIII": table13_pairs,
         "XIV": table14_pairs}
"""Each table's claim family (the pairs its verdict table tests), keyed like `TABLES`."""


def cost_sentences(table: pd.DataFrame, pairs: Sequence[tuple]) -> list[str]:
    """"RoBERTa-Full costs 1.8x the seconds per epoch and 2.1x the peak memory of RoBERTa":
    measured ratios (one measurement per run, no test)."""
    out = []
    for a, b in pairs:
        if a not in table.index or b not in table.index:
            continue
        ra, rb = table.loc[a], table.loc[b]
        parts = []
        for col, what in (("s/epoch", "the seconds per epoch"), ("peak MiB", "the peak memory"),
                          ("trainable params", "the trainable parameters")):
            x, y = ra[col], rb[col]
            if x is not None and y is not None and not pd.isna(x) and not pd.isna(y) and y > 0:
                parts.append(f"{float(x) / float(y):.1f}x {what}")
        if parts:
            out.append(f"{' '.join(map(str, a))} costs {', '.join(parts)} of "
                       f"{' '.join(map(str, b))}")
    return out


def plot_cost_accuracy(tables: Mapping[str, pd.DataFrame], metric: str = "NDCG@10"
                       ) -> plt.Figure:
    """Test `metric` against seconds per training epoch (left) and peak memory (right) for every
    row of every table (`tricks_table` frames, by table name): what each trick buys and costs.
    One marker per table, each point labelled with its row; the legend outside the axes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    markers = "osD^v<>"
    for ax, cost in zip(axes[0], ("s/epoch", "peak MiB"), strict=True):
        for i, (name, table) in enumerate(tables.items()):
            x = pd.to_numeric(table[cost], errors="coerce")
            y = pd.to_numeric(table[metric], errors="coerce")
            ok = x.notna() & y.notna()
            ax.scatter(x[ok], y[ok], marker=markers[i % len(markers)], label=f"Table {name}")
            for key in table.index[ok.to_numpy()]:
                ax.annotate(" ".join(map(str, key)), (x[key], y[key]), fontsize=6,
                            xytext=(3, 2), textcoords="offset points")
        ax.set(xlabel={"s/epoch": "seconds per training epoch",
                       "peak MiB": "peak memory of the run (MiB)"}[cost],
               ylabel=f"test {metric} (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


# -- Table XIII: how much text is there to cut? ----------------------------------------------------
def token_lengths(cfg: RunConfig, maxima: Sequence[int] | None = None) -> pd.DataFrame:
    """How long the catalog's item texts are in the text encoder's tokens (special tokens
    included) and the share of items each `maxima` (default Table XIII's) truncates: if every
    text fits in 30 tokens, 30 and 50 are the same input and cannot differ."""
    from mmsr_lib.encoders.text import create_text_encoder
    from mmsr_lib.runs.runner import load_data

    cfg = cfg.resolved()
    name = cfg.model.text_encoder or tricks_encoders(cfg.profile)["RoBERTa"]
    data = load_data(cfg.data)
    encoder = create_text_encoder(name, finetune="frozen")
    texts = [t if isinstance(t, str) and t.strip() else "[empty]" for t in data.item_text[1:]]
    lengths = np.array([len(ids) for ids in encoder.tokenizer(texts, add_special_tokens=True,
                                                              truncation=False,
                                                              verbose=False)["input_ids"]])
    maxima = list(maxima) if maxima is not None else paper_token_rows()
    rows = [{"max tokens": n, "items truncated (%)": 100.0 * float(np.mean(lengths > n)),
             "tokens kept (mean)": float(np.mean(np.minimum(lengths, n)))} for n in maxima]
    frame = pd.DataFrame(rows).set_index("max tokens")
    frame.attrs.update(mean=float(lengths.mean()), median=float(np.median(lengths)),
                       max=int(lengths.max()), encoder=name)
    return frame
