"""`mmsr bench ...`: speed and memory as ratios against the plain implementation of the same thing.

Every benchmark prints one JSON summary with the machine, the exact settings, both timings,
their ratio and the evidence that both sides computed the same result. Nothing here asserts a
time: machines are noisy, and a claim is a measured ratio in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mmsr_lib.evaluate import History, evaluate_ranking, reference_eval_loop
from mmsr_lib.util.atomic import atomic_write_text
from mmsr_lib.util.isolated import call_in_fresh_process
from mmsr_lib.util.provenance import machine


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` calls (the least disturbed one) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# -- evaluation --------------------------------------------------------------------------------
def random_eval_problem(
    n_users: int, n_items: int, dim: int = 64, hist_len: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """User vectors, an item table (row 0 = padding), targets and histories.

    Purely random vectors would put every target far down the ranking (metrics all 0, and two
    evaluators "agreeing" on zeros proves nothing). So each user vector leans toward its target
    with a random strength, spreading the target ranks from first place to the tail, and every
    20th user's target has an exact duplicate row elsewhere in the table, so ties are exercised
    too (pessimistic rule: the target ranks after equal scores).
    """
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, dim, generator=g)
    items = torch.randn(n_items + 1, dim, generator=g)
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, n_items + 1, size=n_users)
    hist = [rng.integers(1, n_items + 1, size=hist_len) for _ in range(n_users)]
    strength = torch.rand(n_users, 1, generator=g)
    users += strength * items[targets]
    tied = np.arange(0, n_users, 20)
    items[rng.integers(1, n_items + 1, size=len(tied))] = items[targets[tied]]
    return users, items, torch.from_numpy(targets), hist


def bench_eval(n_users: int = 2000, n_items: int = 20000, dim: int = 64, batch_size: int = 256,
               repeat: int = 3) -> dict:
    """Fast evaluator (matmul + mask + rank per user batch) vs a per-user argsort loop like the
    paper's code; metrics must be identical."""
    users, items, targets, hist = random_eval_problem(n_users, n_items, dim)
    history = History.from_lists(hist)
    ks = (10, 20, 50)
    t_fast, fast = timed(lambda: evaluate_ranking(users, items, targets, history, ks, batch_size),
                         repeat)
    t_ref, ref = timed(lambda: reference_eval_loop(users, items, targets, hist, ks), 1)
    return {
        "benchmark": "eval",
        "settings": {"n_users": n_users, "n_items": n_items, "dim": dim, "batch_size": batch_size},
        "fast_seconds": t_fast,
        "reference_seconds": t_ref,
        "speedup": t_ref / t_fast,
        "fast_users_per_second": n_users / t_fast,
        "metrics_fast": fast.metrics,
        "metrics_reference": ref,
        "metrics_equal": fast.metrics == ref,
        "users_with_a_hit_at_10": int(round(fast.metrics["HR@10"] / 100 * n_users)),
        "machine": machine(),
    }


def bench_eval_scaling(catalogs=(10_000, 100_000, 1_000_000), n_users: int = 512,
                       dim: int = 64) -> dict:
    """Evaluation time of the fast evaluator as the catalog grows."""
    rows = []
    for n in catalogs:
        problem = random_eval_problem(n_users, n, dim)
        args = (*problem[:3], History.from_lists(problem[3]), (10,), 256)
        t, _ = timed(lambda a=args: evaluate_ranking(*a), 2)
        rows.append({"n_items": n, "seconds": t, "users_per_second": n_users / t})
    return {"benchmark": "eval_scaling", "n_users": n_users, "dim": dim, "rows": rows,
            "machine": machine()}


# -- training: plain vs fast item encoding -------------------------------------------------------
def disable_dropout(model: torch.nn.Module) -> None:
    """Turn off every dropout (torch modules and Hugging Face attention probabilities) so that the
    plain and the fast mode draw no random numbers and must compute the same losses."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in ("dropout_prob", "attention_dropout", "attn_dropout", "dropout_p"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
        cfg = getattr(m, "config", None)
        for attr in ("attention_probs_dropout_prob", "hidden_dropout_prob", "attention_dropout",
                     "hidden_dropout", "dropout"):
            if cfg is not None and isinstance(getattr(cfg, attr, None), float):
                setattr(cfg, attr, 0.0)


def train_bench_config(
    text: str = "tiny-roberta-12l", vision: str = "tiny-mae-12l", fusion: str = "merge_attn",
    sequence: str = "sasrec", dim: int = 64, batch_size: int = 64, max_len: int = 20,
    n_users: int = 3000, n_items: int = 1200, image_size: int = 64, text_tokens: int = 50,
):
    """The benchmark architecture: 12-layer text and vision encoders (top 2 trainable), narrow
    enough for a CPU, merge-attention, SASRec, batch 64, L = 20; MAE without random masking so
    that the frozen prefix is cacheable (the plain mode computes the same thing uncached)."""
    from mmsr_lib.config import profile_config

    mask = ["model.mask_ratio=0"] if "mae" in vision else []
    return profile_config("cpu").override(
        # the paper's top-2 fine-tuning (the cpu profile's frozen encoders would leave the
        # encoders nothing to train, and nothing for the fast path to save)
        "model.finetune=top", "model.text_pooling=cls",
        "model.item_encoder=mm", f"model.text_encoder={text}", f"model.vision_encoder={vision}",
        f"model.fusion={fusion}", f"model.sequence={sequence}", f"model.dim={dim}",
        "model.dropout=0", f"model.text_max_tokens={text_tokens}", *mask,
        f"train.batch_size={batch_size}", f"data.max_len={max_len}",
        f"data.synth.n_users={n_users}", f"data.synth.n_items={n_items}",
        f"data.synth.image_size={image_size}", "name=bench-train",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_steps(cfg_dict: dict, mode: str, steps: int, device: str, profile: bool,
                 count_flops: bool = False) -> dict:
    """Run `steps` optimiser steps in one mode; executed in a fresh process per mode so that
    its peak memory is its own."""
    from mmsr_lib.config import RunConfig
    from mmsr_lib.data.loaders import TrainBatches
    from mmsr_lib.runs.runner import build_model, load_data
    from mmsr_lib.train import build_optimizer, build_schedule, train_step

    cfg = RunConfig.from_dict(cfg_dict).override(f"model.item_encoding={mode}").resolved()
    dev = torch.device(device)
    data = load_data(cfg.data)
    rss_data = peak_rss_mb()
    t0 = time.perf_counter()
    model = build_model(cfg, data, dev)
    build_s = time.perf_counter() - t0
    disable_dropout(model)
    model.train()
    opt = build_optimizer(model, cfg)
    batches = TrainBatches(data, cfg.train.batch_size, cfg.train.seed)
    sched = build_schedule(opt, cfg, len(batches))
    batches.set_epoch(0)
    losses, times, distinct, slots = [], [], [], []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps):
        batch = {k: v.to(dev) for k, v in batches[i % len(batches)].items()}
        ids = torch.cat([batch["inputs"], batch["targets"], batch["negatives"]], 1)
        distinct.append(int(torch.unique(ids[ids > 0]).numel()))
        slots.append(int(batch["inputs"].numel() * 2 + batch["inputs"].shape[0] * 2))
        _sync(dev)
        t = time.perf_counter()
        loss = train_step(model, batch, opt, sched, cfg)  # the trainer's own step
        _sync(dev)
        times.append(time.perf_counter() - t)
        losses.append(float(loss.item()))
    out = {
        "mode": mode, "losses": losses, "step_seconds": times, "build_seconds": build_s,
        "distinct_items_per_batch": float(np.mean(distinct)), "slots_per_batch": slots[0],
        "peak_rss_mb": peak_rss_mb(), "peak_rss_mb_after_data": rss_data,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        batch = {k: v.to(dev) for k, v in batches[0].items()}
        with FlopCounterMode(display=False) as fc:
            loss = model.loss(batch)
            loss.backward()
        opt.zero_grad(set_to_none=True)
        out["flops_per_step"] = int(fc.get_total_flops())
    if mode == "fast":
        out["floor"] = _floor(model, batches, steps, dev)
        if profile:
            out["profile"] = _profile_steps(model, opt, sched, cfg, batches, dev)
    return out


def _floor(model, batches, steps: int, dev: torch.device) -> dict:
    """What no item-encoding scheme can avoid, per batch, forward + backward on its distinct
    items from cached frozen states: the trainable top blocks alone, and the whole trainable
    item encoder (top blocks + fusion). Both run on the same length groups as fast mode, each
    text trimmed to its group's longest, so the floor pays for no more padding than a fast step
    does. The rest of a fast step is the sequence model, the loss, the optimiser and the
    bookkeeping (deduplication, cache gathers, scatter)."""
    enc = model.item_encoder
    times, with_fusion, real_tokens, computed_tokens = [], [], 0, 0
    for i in range(min(steps, 10)):
        b = batches[i % len(batches)]
        ids = torch.cat([b["inputs"], b["targets"], b["negatives"]], 1)
        ids = torch.unique(ids[ids > 0]).to(dev)
        inputs = []
        for group in enc.length_groups(ids):
            for br in enc.branches():
                hidden = br.cache.get(ids[group]).to(dev)
                extra: tuple[torch.Tensor, ...] = ()
                if br.kind == "text":
                    _, mask, width = br._text_rows(ids[group])
                    hidden, extra = hidden[:, :width], (mask.to(dev),)
                    real_tokens += int(mask.sum())
                    computed_tokens += mask.numel()
                inputs.append((br, hidden, extra))
        _sync(dev)
        t = time.perf_counter()
        total = 0.0
        for br, hidden, extra in inputs:
            total = total + br.encoder.forward_top(hidden, *extra).tokens.float().sum()
        total.backward()
        _sync(dev)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        enc.encode_grouped(ids).float().sum().backward()  # top blocks + fusion, from the cache
        _sync(dev)
        with_fusion.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return {"top_blocks_seconds": float(np.median(times)),
            "item_encoder_seconds": float(np.median(with_fusion)),
            "text_padding_share": 1 - real_tokens / max(computed_tokens, 1)}


def _profile_steps(model, opt, sched, cfg, batches, dev: torch.device, n: int = 3) -> list[dict]:
    """Where a fast step spends its time: torch.profiler, top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from mmsr_lib.train import train_step

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(n):
            batch = {k: v.to(dev) for k, v in batches[i].items()}
            train_step(model, batch, opt, sched, cfg)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [{"op": e.key, "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / n,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / n}
            for e in rows[:12]]


def bench_train(steps: int = 20, device: str = "auto", profile: bool = True,
                isolate: bool = True, count_flops: bool = True, **config) -> dict:
    """Training throughput of plain vs fast item encoding on the same data, seed and model.

    Both modes run the same first `steps` batches from the same initial weights with dropout off;
    the first step of each is a warm-up and not timed into the throughput.
    """
    from mmsr_lib.runs.runner import load_data
    from mmsr_lib.train import resolve_device

    cfg = train_bench_config(**config)
    dev = str(resolve_device(device))
    load_data(cfg.data)  # generate the catalog once, outside the timed children
    run = call_in_fresh_process if isolate else (lambda fn, *a: fn(*a))
    res = {m: run(_train_steps, cfg.to_dict(), m, steps, dev, profile, count_flops)
           for m in ("plain", "fast")}
    bs = cfg.train.batch_size

    def seq_per_s(r: dict) -> float:
        t = r["step_seconds"][1:] or r["step_seconds"]
        return bs * len(t) / sum(t)

    plain, fast = res["plain"], res["fast"]
    diffs = [abs(a - b) for a, b in zip(plain["losses"], fast["losses"], strict=True)]
    fast_step = float(np.median(fast["step_seconds"][1:] or fast["step_seconds"]))
    return {
        "benchmark": "train",
        "settings": {"steps": steps, "device": dev, "batch_size": bs,
                     "max_len": cfg.data.max_len, "text_encoder": cfg.model.text_encoder,
                     "vision_encoder": cfg.model.vision_encoder, "fusion": cfg.model.fusion,
                     "sequence": cfg.model.sequence, "dim": cfg.model.dim,
                     "n_items": cfg.data.synth.n_items, "image_size": cfg.data.synth.image_size,
                     "text_tokens": cfg.model.text_max_tokens, "dtype": "float32" if dev == "cpu"
                     or not cfg.train.amp else "bfloat16 autocast"},
        "plain_sequences_per_second": seq_per_s(plain),
        "fast_sequences_per_second": seq_per_s(fast),
        "speedup": seq_per_s(fast) / seq_per_s(plain),
        "max_abs_loss_difference": max(diffs),
        "losses_plain": plain["losses"],
        "losses_fast": fast["losses"],
        "fast_cache_build_seconds": fast["build_seconds"],
        "plain_build_seconds": plain["build_seconds"],
        "peak_rss_mb": {"plain": plain["peak_rss_mb"], "fast": fast["peak_rss_mb"],
                        "after_data_plain": plain["peak_rss_mb_after_data"],
                        "after_data_fast": fast["peak_rss_mb_after_data"]},
        "cuda_peak_mb": {"plain": plain["cuda_peak_mb"], "fast": fast["cuda_peak_mb"]},
        "distinct_items_per_batch": fast["distinct_items_per_batch"],
        "slots_per_batch_plain": plain["slots_per_batch"],
        "fast_step_seconds": fast_step,
        "floor_top_blocks_seconds": fast["floor"]["top_blocks_seconds"],
        "floor_item_encoder_seconds": fast["floor"]["item_encoder_seconds"],
        "fast_over_top_blocks_floor": fast_step / fast["floor"]["top_blocks_seconds"],
        "fast_over_item_encoder_floor": fast_step / fast["floor"]["item_encoder_seconds"],
        "text_padding_share_in_fast_mode": fast["floor"]["text_padding_share"],
        "profile_fast": fast.get("profile"),
        "flops_per_step": {"plain": plain.get("flops_per_step"), "fast": fast.get("flops_per_step")},
        # the speedup if both modes ran their arithmetic equally efficiently: what skipping work
        # (duplicates, padding, frozen blocks) can buy on this configuration
        "flop_ratio_plain_over_fast": (plain["flops_per_step"] / fast["flops_per_step"]
                                       if count_flops else None),
        "parameters": fast["parameters"],
        "trainable_parameters": fast["trainable_parameters"],
        "machine": machine(),
    }


# NVIDIA's dense (no sparsity) bf16 tensor-core peaks, from the data sheets; the first name that
# the device's name contains wins, so the specific forms come first
DENSE_BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
)


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (`torch.cuda.get_device_name`), None when the
    card is not in `DENSE_BF16_PEAK_FLOPS`: model FLOP utilisation is only as right as the peak
    it divides by, and the device machines lent are H100s as well as H200s."""
    for name, flops in DENSE_BF16_PEAK_FLOPS:
        if name.lower() in device_name.lower():
            return flops
    return None


def bench_gpu(steps: int = 10, n_items: int = 2000, n_users: int = 3000,
              peak_flops: float | None = None) -> dict:
    """The paper's dimensions on one GPU: 768-d, RoBERTa-base and MAE-base architectures
    (random init: speed does not depend on the weights), merge-attention, SASRec, batch 64,
    L = 20, 224-px images, bf16 autocast. Sized to finish in under 5 minutes on an H100/H200.

    Model FLOP utilisation = FLOPs of one step (counted by torch's FlopCounterMode, forward and
    backward) / measured step time / `peak_flops` (default: the card's dense bf16 peak,
    `dense_bf16_peak`; an unknown card gets no MFU unless `--set peak_flops=...` gives it).
    """
    if not torch.cuda.is_available():
        raise RuntimeError("mmsr bench gpu needs a CUDA device; use `mmsr bench train` on a CPU")
    device_name = torch.cuda.get_device_name()
    peak = peak_flops if peak_flops is not None else dense_bf16_peak(device_name)
    r = bench_train(
        steps=steps, device="cuda", profile=False, isolate=True, count_flops=True,
        text="random:roberta-base", vision="random:mae-base", dim=768, n_items=n_items,
        n_users=n_users, image_size=224,
    )
    for mode in ("plain", "fast"):
        sps = r[f"{mode}_sequences_per_second"]
        step_s = r["settings"]["batch_size"] / sps
        flops = r["flops_per_step"][mode]
        r[f"{mode}_mfu"] = flops / step_s / peak if flops and peak else None
    r["benchmark"] = "gpu"
    r["device_name"] = device_name
    r["peak_flops_assumed"] = peak
    return r


# what the random-init paper architectures read from the offline MiniLM package: its WordPiece
# vocabulary (the tokenizer files and the config that marks the package present), not its weights
DEVICE_PACK_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json")


def pack_for_device(dest: str = ".gpu/site") -> list[str]:
    """Copy into `dest` the slice of this environment that the GPU box's own Python lacks for
    `make gpu-check`: MiniLM's tokenizer files and its distribution's metadata (~1 MB, no
    weights), laid out as an installed package so that `PYTHONPATH=dest` finds it. The box has
    torch, transformers and timm but none of this project's offline weight packages, and the
    device tool carries at most 64 MiB. Returns the files written."""
    import importlib.metadata
    import shutil
    from pathlib import Path

    from mmsr_lib.encoders import offline_weights

    dist = importlib.metadata.distribution(offline_weights.MINILM_L6.dist)
    model = offline_weights.minilm_dir("the GPU check's random-init text architectures")
    root = Path(dest)
    info = root / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(dist.read_text("METADATA") or "")
    out = [str(info / "METADATA")]
    rel = Path(dist.locate_file(offline_weights.MINILM_L6.file)).parent.relative_to(
        Path(str(dist.locate_file(""))))
    for name in DEVICE_PACK_FILES:
        target = root / rel / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model / name, target)
        out.append(str(target))
    return out


def bench_train_scaling(lengths=(10, 20, 50), steps: int = 6, device: str = "auto",
                        modes: tuple[str, ...] = ("plain", "fast"), **config) -> dict:
    """Time per training step as the sequence length L grows, for each item-encoding mode."""
    from mmsr_lib.runs.runner import load_data
    from mmsr_lib.train import resolve_device

    dev = str(resolve_device(device))
    rows = []
    for L in lengths:
        cfg = train_bench_config(max_len=L, **config)
        load_data(cfg.data)
        for mode in modes:
            r = _train_steps(cfg.to_dict(), mode, steps, dev, False)
            rows.append({"max_len": L, "mode": mode,
                         "step_seconds": float(np.median(r["step_seconds"][1:])),
                         "distinct_items_per_batch": r["distinct_items_per_batch"]})
    return {"benchmark": "train_scaling", "rows": rows, "machine": machine()}


def bench_eval_scaling_both(catalogs=(10_000, 100_000, 1_000_000), n_users: int = 512,
                            dim: int = 64, reference_up_to: int = 100_000) -> dict:
    """Evaluation time vs catalog size for the fast evaluator and, up to `reference_up_to`
    items, the per-user argsort loop (beyond that the loop takes minutes per point)."""
    rows = bench_eval_scaling(catalogs, n_users, dim)["rows"]
    for row in rows:
        row["mode"] = "fast"
    for n in [c for c in catalogs if c <= reference_up_to]:
        problem = random_eval_problem(n_users, n, dim)
        t, _ = timed(lambda p=problem: reference_eval_loop(*p, (10,)), 1)
        rows.append({"n_items": n, "seconds": t, "users_per_second": n_users / t,
                     "mode": "plain"})
    return {"benchmark": "eval_scaling", "n_users": n_users, "dim": dim, "rows": rows,
            "machine": machine()}


def bench_scaling(out: str = "figures/bench_scaling.png", steps: int = 6) -> dict:
    """Both scaling curves (step time vs L, evaluation time vs catalog size), plain and fast
    side by side, and their figure."""
    import matplotlib.pyplot as plt

    from mmsr_lib.util.paths import resolve
    from mmsr_lib.workbook.plots import save_figure

    tr = bench_train_scaling(steps=steps)
    ev = bench_eval_scaling_both()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {"plain": ("s--", "#d62728", "plain (the paper's code path)"),
              "fast": ("o-", "#1f77b4", "fast (this library)")}
    for mode, (marker, color, label) in styles.items():
        t = [r for r in tr["rows"] if r["mode"] == mode]
        a.plot([r["max_len"] for r in t], [r["step_seconds"] for r in t], marker, color=color,
               label=label)
        e = [r for r in ev["rows"] if r["mode"] == mode]
        b.loglog([r["n_items"] for r in e], [r["seconds"] for r in e], marker, color=color,
                 label="per-user argsort loop" if mode == "plain" else "batched matmul + mask")
    a.set(xlabel="sequence length L", ylabel="seconds per training step",
          title="training step vs L")
    a.set_xticks([r["max_len"] for r in tr["rows"] if r["mode"] == "fast"])
    b.set(xlabel="catalog size (items)", ylabel=f"seconds to rank {ev['n_users']} users",
          title="full-ranking evaluation vs catalog")
    for ax in (a, b):
        ax.legend(fontsize=8, loc="upper left", frameon=False)
    fig.tight_layout()
    path = save_figure(fig, resolve(out))
    return {"benchmark": "scaling", "train": tr["rows"], "eval": ev["rows"], "figure": str(path),
            "machine": machine()}


# -- paper-scale data --------------------------------------------------------------------------
def bench_data(n_users: int = 200_000, n_items: int = 85_000, mean_seq_len: float = 31.0,
               image_size: int = 32, out: str = "data/bench-hm-scale") -> dict:
    """Generate and preprocess an HM-sized synthetic catalog; time and peak memory."""
    from mmsr_lib.config import SynthConfig
    from mmsr_lib.data.format import load_dataset
    from mmsr_lib.data.preprocess import build_sequences
    from mmsr_lib.data.synthetic import generate_catalog
    from mmsr_lib.util.paths import resolve

    cfg = SynthConfig(n_users=n_users, n_items=n_items, mean_seq_len=mean_seq_len,
                      image_size=image_size)
    t_gen, root = timed(lambda: generate_catalog(cfg, resolve(out)))
    rss_gen = peak_rss_mb()
    t_load, raw = timed(lambda: load_dataset(root))
    t_pre, data = timed(lambda: build_sequences(raw))
    t_win, _ = timed(lambda: (data.train_windows, data.train_membership, data.cold_items))
    return {
        "benchmark": "data",
        "settings": {"n_users": n_users, "n_items": n_items, "mean_seq_len": mean_seq_len,
                     "image_size": image_size},
        "generate_seconds": t_gen,
        "load_seconds": t_load,
        "preprocess_seconds": t_pre,
        "train_windows_seconds": t_win,
        "peak_rss_mb_after_generate": rss_gen,
        "peak_rss_mb": peak_rss_mb(),
        "stats": data.stats,
        "machine": machine(),
    }


def _train_side_by_side(models: dict[str, torch.nn.Module], cfg: Any, data: Any,
                        dev: torch.device, steps: int, seed: int | None = None) -> dict:
    """Each model in turn trains `steps` steps on the same first batches of `data` (from the
    random state `seed` when given): name -> its losses and median step seconds (the first
    step, which builds caches and memos, not timed when there are others)."""
    from mmsr_lib.data.loaders import TrainBatches
    from mmsr_lib.train import build_optimizer, build_schedule, train_step

    batches = TrainBatches(data, cfg.train.batch_size, cfg.train.seed)
    batches.set_epoch(0)
    res = {}
    for name, model in models.items():
        if seed is not None:
            torch.manual_seed(seed)
        model.train()
        opt = build_optimizer(model, cfg)
        sched = build_schedule(opt, cfg, len(batches))
        losses, times = [], []
        for i in range(steps):
            batch = {k: v.to(dev) for k, v in batches[i % len(batches)].items()}
            _sync(dev)
            t = time.perf_counter()
            losses.append(float(train_step(model, batch, opt, sched, cfg).item()))
            _sync(dev)
            times.append(time.perf_counter() - t)
        res[name] = {"losses": losses, "step_seconds": float(np.median(times[1:] or times))}
    return res


def bench_frozen(steps: int = 20, item_encoder: str = "vision", device: str = "auto",
                 profile: str = "cpu", vision_encoder: str | None = None) -> dict:
    """A frozen vision branch (the cpu profile's MMSR-V / MMSR rows): its outputs computed once
    and kept (`ModalityBranch._memo`) vs re-pooled from the feature-map cache at every step, and
    the memo read as views of the catalog (`memo_views`, the softmax loss asks for every item)
    vs gathered item by item.

    The quick start's configuration on `profile` (encoders frozen); two copies of one model with the same weights and
    dropout off train on the same first `steps` batches, one per path; the first step of each
    (which builds the memo) is not timed into the throughput.
    """
    import copy

    from mmsr_lib.runs.runner import build_model, load_data
    from mmsr_lib.train import resolve_device
    from mmsr_lib.workbook.quickstart import quickstart_configs

    label = {"vision": "MMSR-V", "mm": "MMSR"}[item_encoder]
    chosen = (f"model.vision_encoder={vision_encoder}",) if vision_encoder else ()
    cfg = quickstart_configs(profile, "model.finetune=frozen", *chosen)[label].resolved()
    dev = resolve_device(device)
    data = load_data(cfg.data)
    memo = build_model(cfg, data, dev)
    disable_dropout(memo)
    per_step = copy.deepcopy(memo)
    per_step.item_encoder.vision.memo_max_bytes = 0  # the per-step path
    gather = copy.deepcopy(memo)
    gather.item_encoder.vision.memo_views = False  # the memo read by gathering every item
    res = _train_side_by_side({"per_step": per_step, "memo_gather": gather, "memo": memo},
                              cfg, data, dev, steps)
    if getattr(memo.item_encoder.vision, "_memo_out", None) is None:
        raise ValueError(f"{cfg.model.vision_encoder}'s frozen branch is not constant here (random "
                         "masking, dropout or no cache), so there is nothing to compare; pick "
                         "another vision_encoder")
    bs = cfg.train.batch_size
    return {
        "benchmark": "frozen",
        "settings": {"steps": steps, "device": str(dev), "row": f"quickstart {label}",
                     "profile": profile,
                     "vision_encoder": cfg.model.vision_encoder, "vision_grid": cfg.model.vision_grid,
                     "n_items": data.n_items, "batch_size": bs, "loss": cfg.train.loss,
                     "threads": torch.get_num_threads()},
        "per_step_sequences_per_second": bs / res["per_step"]["step_seconds"],
        "memo_sequences_per_second": bs / res["memo"]["step_seconds"],
        "memo_gather_sequences_per_second": bs / res["memo_gather"]["step_seconds"],
        "speedup": res["per_step"]["step_seconds"] / res["memo"]["step_seconds"],
        "speedup_views_over_gather": res["memo_gather"]["step_seconds"]
        / res["memo"]["step_seconds"],
        "max_abs_loss_difference": max(abs(a - b) for other in ("per_step", "memo_gather")
                                       for a, b in zip(res[other]["losses"], res["memo"]["losses"],
                                                       strict=True)),
        "losses_per_step": res["per_step"]["losses"],
        "losses_memo": res["memo"]["losses"],
        "machine": machine(),
    }


def _table5_row(row: str, profile: str, *overrides: str) -> tuple[tuple[str, str], Any]:
    """Table V's row named `row` (case-insensitive) on `profile`: its label and resolved
    configuration; an unknown name is a clear error listing the rows."""
    from mmsr_lib.workbook.comparisons import table5_configs

    grid = table5_configs(profile, *overrides)
    labels = [label for label in grid if label[1].lower() == str(row).lower()]
    if not labels:
        raise ValueError(f"row={row!r} is not a Table V row; choose one of "
                         f"{[label[1] for label in grid]}")
    return labels[0], grid[labels[0]].resolved()


def bench_memo_rows(steps: int = 20, row: str = "CARCA++", device: str = "auto",
                    profile: str = "cpu", vision_encoder: str | None = None) -> dict:
    """A Table V row under BCE with a frozen vision memo: its tokens and mask read only when
    something reads them (`multimodal.MemoRows`) vs gathered for every batch's items, as before.

    BCE asks for a batch's distinct items, not a run of ids, so the memo is gathered; the content
    baselines keep EfficientNet's whole feature map, and their combination modules (like the
    vector-level fusions) read only the pooled vector. Two copies of one model with the same
    weights train on the same first `steps` batches from the same random state (dropout on, as
    in a run: skipping a gather draws no random number); the first step of each (which builds
    the memo) is not timed into the throughput. Encoders frozen, as on the cpu
    profile; `vision_encoder` replaces the row's."""
    import copy

    from mmsr_lib.runs.runner import build_model, load_data
    from mmsr_lib.train import resolve_device

    chosen = (f"model.vision_encoder={vision_encoder}",) if vision_encoder else ()
    label, cfg = _table5_row(row, profile, "model.finetune=frozen", *chosen)
    dev = resolve_device(device)
    data = load_data(cfg.data)
    lazy = build_model(cfg, data, dev)
    eager = copy.deepcopy(lazy)
    branch = getattr(getattr(eager, "item_encoder", None), "vision", None)
    if branch is None:
        raise ValueError(f"row={row!r} has no vision branch, so no memo to read")
    branch.memo_lazy = False
    res = _train_side_by_side({"eager": eager, "lazy": lazy}, cfg, data, dev, steps,
                              seed=cfg.train.seed)
    memo = getattr(lazy.item_encoder.vision, "_memo_out", None)
    if memo is None:
        raise ValueError(f"row={row!r}: its vision branch keeps no memo here (not frozen, or "
                         "too large), so there is nothing to compare")
    bs = cfg.train.batch_size
    return {
        "benchmark": "memo-rows",
        "settings": {"steps": steps, "device": str(dev), "row": f"Table V {label[1]}",
                     "profile": profile, "loss": cfg.train.loss,
                     "vision_encoder": cfg.model.vision_encoder,
                     "memo_tokens_shape": list(memo.tokens.shape), "batch_size": bs,
                     "threads": torch.get_num_threads()},
        "eager_sequences_per_second": bs / res["eager"]["step_seconds"],
        "lazy_sequences_per_second": bs / res["lazy"]["step_seconds"],
        "speedup": res["eager"]["step_seconds"] / res["lazy"]["step_seconds"],
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(
            res["eager"]["losses"], res["lazy"]["losses"], strict=True)),
        "losses_eager": res["eager"]["losses"],
        "losses_lazy": res["lazy"]["losses"],
        "machine": machine(),
    }


def bench_carca_scorer(split: str = "valid", repeat: int = 2, profile: str = "cpu",
                       device: str = "auto") -> dict:
    """CARCA++'s full-ranking scorer over one split's users (every user x every item, float64
    cross-attention: most of a CARCA++ epoch on CPU) with users grouped by history length and
    padded positions left out (`CarcaScorer.trim`) vs every user attending over all `max_len`
    positions. Same model (Table V's CARCA++ row, seeded init), same users; the scores are
    compared (largest difference) and so are the evaluator's target ranks and metrics. Untrained
    weights: the cost does not depend on them, and equal ranks are asked of any weights."""
    from mmsr_lib.baselines.carca import CarcaScorer
    from mmsr_lib.evaluate import evaluate_model
    from mmsr_lib.runs.runner import build_model, load_data
    from mmsr_lib.train import resolve_device

    _, cfg = _table5_row("CARCA++", profile)
    dev = resolve_device(device)
    data = load_data(cfg.data)
    model = build_model(cfg, data, dev).eval()  # initialised from train.seed
    ev = data.eval_set(split)
    with torch.no_grad():
        table = model.item_table(cfg.eval.batch_size)
    scorers = {"plain": CarcaScorer(model, table, trim=False),
               "trimmed": CarcaScorer(model, table, trim=True)}
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    for name, scorer in scorers.items():
        seconds[name], results[name] = timed(
            lambda scorer=scorer: evaluate_model(model, ev, scorer=scorer), repeat)
    inputs = torch.from_numpy(np.ascontiguousarray(ev.inputs[:cfg.eval.batch_size])).to(dev)
    with torch.no_grad():
        diff = (scorers["plain"](inputs).clone() - scorers["trimmed"](inputs)).abs().max()
    all_inputs = np.asarray(ev.inputs)
    lengths = (all_inputs > 0).sum(1)
    plain, trimmed = results["plain"], results["trimmed"]
    return {
        "benchmark": "carca-scorer",
        "settings": {"profile": profile, "split": split, "users": len(ev),
                     "items": data.n_items, "max_len": int(all_inputs.shape[1]),
                     "mean_history_length": float(lengths.mean()), "repeat": repeat,
                     "device": str(dev), "threads": torch.get_num_threads()},
        "plain_seconds": seconds["plain"],
        "trimmed_seconds": seconds["trimmed"],
        "speedup": seconds["plain"] / seconds["trimmed"],
        "max_abs_score_difference": float(diff),
        "ranks_equal": bool(np.array_equal(plain.ranks, trimmed.ranks)),
        "metrics_plain": plain.metrics,
        "metrics_trimmed": trimmed.metrics,
        "machine": machine(),
    }


def bench_grid(epochs: int = 8, rows: tuple[str, ...] | str = ("IDSR", "MMSR-T"),
               seeds: tuple[int, ...] | int = (42, 43), profile: str = "cpu") -> dict:
    """A grid's runs one after the other in this process (all usable cores as threads, what a
    grid did before) vs side by side in one single-threaded process per core
    (`runs.parallel`), on the quick start's rows for `epochs` epochs each.

    Both write to their own temporary store and checkpoint folder (the data and feature caches
    are shared, so neither pays for building them). Same configurations and seeds; the metrics
    of each run are compared (threads change the order of float sums, so agreement is to
    rounding, reported as the largest difference)."""
    import tempfile

    from mmsr_lib.runs.parallel import worker_threads
    from mmsr_lib.runs.runner import run_grid
    from mmsr_lib.runs.store import ResultsStore
    from mmsr_lib.util.threads import configure_threads, usable_cores
    from mmsr_lib.workbook.quickstart import quickstart_configs

    rows = (rows,) if isinstance(rows, str) else tuple(rows)
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    cores = usable_cores()
    before = torch.get_num_threads()
    configure_threads(cores)  # the one-process mode's threads; the workers set their own
    out: dict = {}
    records = {}
    with tempfile.TemporaryDirectory(prefix="mmsr-bench-grid-") as tmp:
        for mode, workers in (("one_process", 1), ("side_by_side", cores)):
            grid = quickstart_configs(profile, f"train.epochs={epochs}",
                                      f"train.patience={epochs + 1}",
                                      f"train.checkpoint_dir={tmp}/{mode}")
            grid = {k: grid[k] for k in rows}
            t0 = time.perf_counter()
            records[mode] = run_grid(grid, store=ResultsStore(f"{tmp}/{mode}.sqlite"),
                                     progress=False, seeds=seeds, workers=workers)
            out[mode] = {"seconds": time.perf_counter() - t0, "processes": workers,
                         "threads_each": cores if workers == 1 else worker_threads(workers)}
    configure_threads(before)
    diffs = [abs(a.metrics["test"][m] - b.metrics["test"][m])
             for k in records["one_process"]
             for a, b in zip(records["one_process"][k], records["side_by_side"][k], strict=True)
             for m in ("HR@10", "NDCG@10")]
    return {
        "benchmark": "grid",
        "settings": {"profile": profile, "rows": list(rows), "seeds": list(seeds),
                     "epochs": epochs, "runs": len(rows) * len(seeds), "cores": cores},
        **out,
        "speedup": out["one_process"]["seconds"] / out["side_by_side"]["seconds"],
        "test_metrics": {mode: {f"{k} seed {r.config['train']['seed']}":
                                {m: r.metrics["test"][m] for m in ("HR@10", "NDCG@10")}
                                for k, runs in recs.items() for r in runs}
                         for mode, recs in records.items()},
        "max_abs_metric_difference": max(diffs),
        "machine": machine(),
    }


BENCHMARKS: dict[str, Callable[..., dict]] = {
    "train": bench_train,
    "frozen": bench_frozen,
    "memo-rows": bench_memo_rows,
    "carca-scorer": bench_carca_scorer,
    "grid": bench_grid,
    "gpu": bench_gpu,
    "train-scaling": bench_train_scaling,
    "scaling": bench_scaling,
    "eval": bench_eval,
    "eval-scaling": bench_eval_scaling_both,
    "data": bench_data,
}


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: fast vs plain, printed as JSON")
    p.add_argument("which", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="benchmark parameter, e.g. n_items=100000")
    p.add_argument("--out", default=None, help="also write the JSON summary here")


def _parse(value: str):
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    if "," in value:
        return tuple(_parse(v) for v in value.split(","))
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    params = dict(kv.split("=", 1) for kv in args.params)
    result = BENCHMARKS[args.which](**{k: _parse(v) for k, v in params.items()})
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0
