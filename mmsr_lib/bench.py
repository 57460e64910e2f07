"""`mmsr bench ...`: speed and memory as ratios against the plain implementation of the same thing.

Every benchmark prints one JSON summary with the machine, the exact settings, both timings,
their ratio and the evidence that both sides computed the same result. Nothing here asserts a
time: machines are noisy, and a claim is a measured ratio in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmsr_lib.evaluate import History, evaluate_ranking, reference_eval_loop


def machine() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


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
    """User vectors, an item table (row 0 = padding), targets and histories, all random."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, dim, generator=g)
    items = torch.randn(n_items + 1, dim, generator=g)
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, n_items + 1, size=n_users)
    hist = [rng.integers(1, n_items + 1, size=hist_len) for _ in range(n_users)]
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


# -- paper-scale data --------------------------------------------------------------------------
def bench_data(n_users: int = 200_000, n_items: int = 85_000, mean_seq_len: float = 31.0,
               image_size: int = 32, out: str = "data/bench-hm-scale") -> dict:
    """Generate and preprocess an HM-sized synthetic catalog; time and peak memory."""
    from mmsr_lib.config import SynthConfig
    from mmsr_lib.data.format import load_dataset
    from mmsr_lib.data.preprocess import build_sequences
    from mmsr_lib.data.synthetic import generate_catalog
    from mmsr_lib.paths import resolve

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


BENCHMARKS: dict[str, Callable[..., dict]] = {
    "eval": bench_eval,
    "eval-scaling": bench_eval_scaling,
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
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return 0
