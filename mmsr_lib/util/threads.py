"""CPU threads that share a machine well, and training that repeats itself exactly.

Two PyTorch processes that each spin every core (OpenMP's default active wait) make each
other's threads wait: on the 2-core development machine GRU4Rec went from ~1.5 s to 35-100 s
per epoch beside another job. Threads that sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, set by
``mmsr_lib/__init__.py`` before torch loads OpenMP) and a thread count from the cores this
process may actually use (its CPU affinity, not the machine's core count) remove most of it.

Determinism: with more than one thread, some CPU kernels (the embedding backward's scatter-add
among them) sum in an order that changes from run to run, so the same seed gave NextItNet test
HR@10 7.97, 7.43 and 7.80 in three clean runs. `deterministic_training` switches PyTorch to its
deterministic implementations (measured: five identical runs of 3 epochs with 2 threads, where
the default path differed in the 8th significant digit of the loss within two runs).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("mmsr.threads")

THREADS_ENV = "MMSR_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def chosen_threads() -> int | None:
    """The thread count the user chose: ``$MMSR_THREADS``, else ``$OMP_NUM_THREADS``, or None."""
    env = os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else None


def configure_threads(n: int | None = None) -> int:
    """Intra-op threads: `n`, else the user's choice (`chosen_threads`), else the usable cores.
    Returns the count in effect."""
    if n is None:
        n = chosen_threads() or usable_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def deterministic_training(enabled: bool = True) -> None:
    """PyTorch's deterministic kernels (warn, not fail, where an op has none). On CUDA the
    cuBLAS workspace must be fixed before the first cuBLAS call for this to hold."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
