"""Data-parallel helpers for runs launched with ``torchrun`` (PyTorch DDP).

Every helper is a no-op without a process group, so the trainer, the evaluation and the frozen
cache call them unconditionally and a plain ``python``/notebook run takes exactly the code path it
always took: no process group is ever created unless torchrun's environment variables are set.

Under ``torchrun --nproc_per_node=N`` each process is one rank: CPU ranks talk over gloo, GPU
ranks over NCCL with rank ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``. Work is split so that the
result does not depend on N (see `shard_range`), and rank 0 alone writes files.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger("mmsr.distributed")

T = TypeVar("T")

# what torchrun exports to every worker; RANK/WORLD_SIZE alone mark a launched process
_LAUNCH_VARS = ("RANK", "WORLD_SIZE")
_RENDEZVOUS_VARS = ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True when this process was started by torchrun (its RANK and WORLD_SIZE are set)."""
    return all(v in os.environ for v in _LAUNCH_VARS)


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True when collectives are live and there is someone to talk to (world size > 1).

    A torchrun job with one process counts as not distributed, so it runs the plain path.
    """
    return _initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the process group; 0 without one."""
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """Number of processes in the group; 1 without one (consistent with `rank`)."""
    return dist.get_world_size() if _initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK), i.e. its GPU; 0 if not
    launched."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes checkpoints, results and figures.

    Before the group exists it falls back to torchrun's RANK, so code that runs ahead of
    `init_from_env` (CLI printing, logging) still picks exactly one process.
    """
    if _initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: torch.device | str = "cpu", timeout: timedelta | None = None) -> bool:
    """Join the process group described by torchrun's environment; returns whether one is live.

    Idempotent (a second call is a no-op) and a no-op outside torchrun, so `fit` and
    `run_experiment` can both call it. The backend follows the device: NCCL for CUDA (the
    process is pinned to ``cuda:LOCAL_RANK`` first, which NCCL requires), gloo for CPU.
    """
    if _initialized():
        return True
    if not launched():
        return False
    missing = [v for v in _RENDEZVOUS_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} are not; start distributed "
            "runs with `torchrun --nproc_per_node=N -m mmsr_lib.cli train ...`, or unset RANK "
            "and WORLD_SIZE for a single-process run"
        )
    device = torch.device(device)
    kwargs: dict[str, Any] = {"init_method": "env://"}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if device.type == "cuda":
        index = local_rank()
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={index} but only {torch.cuda.device_count()} CUDA devices are "
                "visible; use --nproc_per_node at most the number of GPUs (or train.device=cpu)"
            )
        torch.cuda.set_device(index)
        kwargs.update(backend="nccl", device_id=torch.device("cuda", index))
    else:
        kwargs["backend"] = "gloo"
    dist.init_process_group(**kwargs)
    atexit.register(_destroy)  # NCCL warns (and may leak) when a group outlives the interpreter
    log.info("rank %d/%d joined the %s process group", dist.get_rank(), dist.get_world_size(),
             kwargs["backend"])
    return True


def _destroy() -> None:
    if _initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (no-op without a group)."""
    if not _initialized():
        return
    if dist.get_backend() == "nccl":  # name the device, else NCCL guesses and warns
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generates a data set on disk), then the others run it
    and find the result, so only rank 0 writes and nobody reads a half-written file."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s `obj` on every rank (picklable objects; identity without a group).

    Used where rank 0 alone reads the disk (checkpoints, cache hits) but every rank must take
    the same branch, else the ranks' collectives fall out of step and the job hangs.
    """
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (a new tensor on `tensor`'s device; a copy without a group)."""
    if not is_distributed():
        return tensor.detach().clone()
    buf = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / dist.get_world_size()).to(tensor.device)


def all_gather_uneven(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor`, in rank order, when ranks hold different numbers of rows.

    ``dist.all_gather`` needs equal shapes, so rows are padded to the largest count and trimmed
    after. Only dim 0 may differ; a rank with no rows may pass any empty tensor (e.g.
    ``torch.empty(0)``) and gets rows of the others' trailing shape back. Without a group the
    result is ``[tensor]``.
    """
    if tensor.ndim == 0:
        raise ValueError("all_gather_uneven needs a tensor with a row dimension, got a scalar")
    if not is_distributed():
        return [tensor]
    metas: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(metas, (tuple(tensor.shape), str(tensor.dtype)))
    filled = [(r, shape, dtype) for r, (shape, dtype) in enumerate(metas) if shape[0] > 0]
    if not filled:
        return [tensor.new_empty(m[0]) for m in metas]
    ref_rank, ref_shape, ref_dtype = filled[0]
    for r, shape, dtype in filled[1:]:
        if shape[1:] != ref_shape[1:] or dtype != ref_dtype:
            raise ValueError(
                f"all_gather_uneven: rank {r} sent {list(shape)} {dtype} but rank {ref_rank} "
                f"sent {list(ref_shape)} {ref_dtype}; only the first dimension may differ"
            )
    rows = [m[0][0] for m in metas]
    dtype = getattr(torch, ref_dtype.removeprefix("torch."))
    device = _comm_device()
    padded = torch.zeros((max(rows), *ref_shape[1:]), dtype=dtype, device=device)
    if rows[dist.get_rank()]:
        padded[: len(tensor)] = tensor.detach().to(device)
    out = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(out, padded)
    return [o[:n].to(tensor.device) for o, n in zip(out, rows, strict=True)]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """`all_gather_uneven` concatenated along dim 0: the full array from contiguous shards."""
    parts = all_gather_uneven(tensor)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def shard_range(n: int, block: int = 1) -> tuple[int, int]:
    """This rank's contiguous slice ``[start, stop)`` of ``n`` rows, cut at multiples of `block`.

    Contiguous so that gathering in rank order restores the original order; block-aligned so
    that each rank runs exactly the chunks a single process would (same batch shapes, hence
    bit-identical numbers), only fewer of them. Whole blocks are dealt out evenly; trailing
    ranks may get nothing when there are fewer blocks than ranks.
    """
    if n < 0 or block < 1:
        raise ValueError(f"shard_range needs n >= 0 and block >= 1, got n={n}, block={block}")
    n_blocks = (n + block - 1) // block
    world, me = world_size(), rank()
    first, last = me * n_blocks // world, (me + 1) * n_blocks // world
    return min(first * block, n), min(last * block, n)
