"""The trainer: AdamW with encoder/downstream groups, a linear or plateau learning-rate schedule,
early stopping on valid NDCG@10, atomic resumable checkpoints.

Resuming is exact: every epoch reseeds dropout and the batch order from (seed, epoch), and the
checkpoint holds the optimiser and scheduler, so a run killed after epoch k and restarted ends
with the same numbers as one that never stopped.

Under torchrun the same `fit` trains data-parallel (DDP): every rank draws the same global batch
and takes rows rank::world of it, and the loss is scaled so that DDP's gradient average equals
the single-process gradient (`_shard_loss`). Rank 0 alone reads and writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.std import tqdm

from mmsr_lib.config import RunConfig
from mmsr_lib.data.loaders import TrainBatches, train_loader
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.evaluate import evaluate_model
from mmsr_lib.recommender import Recommender
from mmsr_lib.util import distributed
from mmsr_lib.util.atomic import atomic_path
from mmsr_lib.util.threads import deterministic_training

log = logging.getLogger("mmsr.train")

SELECTION_METRIC = "NDCG@10"
CONVERGED_SHARE = 0.9  # converged: best epoch within the first 90% of the budget


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, unsafe, another run's); says what to do."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it is an error, not a fallback.

    Under torchrun a CUDA choice means this rank's own GPU, ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but no CUDA device is visible; use 'cpu' or 'auto'")
    device = torch.device(name)
    if device.type == "cuda" and distributed.launched():
        device = torch.device("cuda", distributed.local_rank())
    return device


def build_optimizer(model: Recommender, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW with three groups: pretrained-encoder ("top") parameters at `encoder_lr` without
    weight decay; downstream matrices at `lr` with `weight_decay`; downstream biases, norms and
    other 1-D parameters at `lr` without decay (decaying a LayerNorm gain towards 0 only hurts)."""
    t = cfg.resolved().train
    enc = [p for p in model.encoder_parameters() if p.requires_grad]
    enc_ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [
        {"params": [p for p in rest if p.ndim >= 2], "lr": t.lr, "weight_decay": t.weight_decay,
         "name": "downstream"},
        {"params": [p for p in rest if p.ndim < 2], "lr": t.lr, "weight_decay": 0.0,
         "name": "downstream_no_decay"},
        {"params": enc, "lr": t.encoder_lr, "weight_decay": t.encoder_weight_decay, "name": "encoder"},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]])


def linear_decay(total_steps: int, decay_to: float = 0.1, decay_frac: float = 0.8) -> Callable[[int], float]:
    """Factor 1 -> `decay_to` linearly over the first `decay_frac` of the steps, then held
    (the paper: to 10% after 120 of 150 epochs)."""
    horizon = max(1, int(round(total_steps * decay_frac)))

    def factor(step: int) -> float:
        return 1.0 - (1.0 - decay_to) * min(step / horizon, 1.0)

    return factor


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and buffers only: frozen pretrained weights never change, so keeping
    them out of checkpoints makes saving a large MMSR model cheap."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    keep |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in keep}


def atomic_save(obj: object, path: Path) -> None:
    """Write to a temporary file in the same directory and rename: a kill mid-write leaves the
    previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # counted from 1; 0 = no validation yet
    best_valid: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    train_seconds: float = 0.0  # every segment of a resumed run: earlier ones + this process's
    earlier_seconds: float = 0.0  # the epochs (train + validation) run before the last resume
    world_size: int = 1
    budget: int = 0

    @property
    def converged(self) -> bool:
        """The best epoch is not in the last 10% of the epoch budget: training had reached its
        best before the budget ran out (a run still improving at the end is not converged)."""
        return 1 <= self.best_epoch <= CONVERGED_SHARE * self.budget


def epoch_seconds(history: list[dict]) -> float:
    """Seconds the epochs of a run's `history` took (training + validation), whichever process
    ran them: what a resumed run adds for its earlier segments."""
    return float(sum(h.get("train_seconds", 0.0) + h.get("eval_seconds", 0.0) for h in history))


def _load_checkpoint(path: Path | None, cfg: RunConfig, device: torch.device) -> dict | None:
    """The checkpoint at `path` if there is one for `cfg`; under DDP rank 0 reads it and every
    rank receives the same copy (and the same refusal), so all resume from one state."""
    if path is None:
        return None
    payload: dict | str | None = None
    if distributed.is_main_process() and path.exists():
        where = "cpu" if distributed.is_distributed() else device
        ck = read_checkpoint(path, where)
        if ck.get("config_hash") != cfg.hash():
            payload = (
                f"{path} belongs to another configuration ({ck.get('config_hash')} != "
                f"{cfg.hash()}); delete it or use another train.checkpoint_dir"
            )
        else:
            payload = ck
    payload = distributed.broadcast_object(payload)
    if isinstance(payload, str):
        raise CheckpointError(payload)
    return payload


CHECKPOINT_KEYS = ("config_hash", "epoch", "done", "model", "optimizer", "scheduler",
                   "best_state", "best_score", "best_epoch", "best_valid", "bad_checks", "history")


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict:
    """A checkpoint loaded with ``weights_only=True``: tensors and plain values only, so a
    crafted file can never run code; corrupt, truncated or foreign files are a `CheckpointError`
    that names the file and says what to do."""
    what = (f"delete {path} to start this run from scratch, or run it with --force (which "
            "trains in a fresh folder)")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle/zip/EOF/unsafe-type errors all mean: not usable
        unsafe = "weights_only" in str(err) or "Unsupported global" in str(err)
        why = ("it holds objects other than tensors and plain values, which are never "
               "unpickled (it may be crafted)" if unsafe else f"it is corrupt or truncated ({err})")
        raise CheckpointError(f"cannot load checkpoint {path}: {why}; {what}") from None
    if not isinstance(ck, dict) or any(k not in ck for k in CHECKPOINT_KEYS):
        raise CheckpointError(f"{path} is not a checkpoint of this library (missing keys); {what}")
    return ck


def _shard_loss(ddp_model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """This rank's share of the global batch's mean loss, times the world size.

    Rows rank::world of the global batch; the sum over their real positions is divided by the
    GLOBAL number of real positions / world, so DDP's gradient average over ranks is exactly the
    gradient of the single-process mean. A rank left without rows (a last batch smaller than
    the world) runs one row at weight 0, so every parameter still takes part in the all-reduce.
    """
    world, me = distributed.world_size(), distributed.rank()
    n_global = int((batch["targets"] > 0).sum())
    local = {k: v[me::world] for k, v in batch.items()}
    weight = 1.0
    if len(local["targets"]) == 0:
        local, weight = {k: v[:1] for k, v in batch.items()}, 0.0
    return ddp_model(local, denominator=n_global / world) * weight


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: Recommender,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: LRSchedule,
    cfg: RunConfig,
    ddp_model: torch.nn.Module | None = None,
) -> torch.Tensor:
    """One optimiser step on a batch already on the model's device: loss (bf16 autocast on
    CUDA; this rank's shard under DDP), NaN check, backward, gradient clipping, step, schedule.

    The only training step there is: `fit` runs it, and so does `mmsr bench train`, so the
    benchmark measures the loop users train with. Returns the global batch's mean loss
    (detached); a non-finite loss raises `FloatingPointError` before any weight changes.
    """
    t = cfg.train
    device = batch["inputs"].device
    with _autocast(device, t.amp):
        loss = model.loss(batch) if ddp_model is None else _shard_loss(ddp_model, batch)
    # the global batch's mean loss on every rank, so all ranks stop together on NaN
    global_loss = loss.detach() if ddp_model is None else distributed.all_reduce_mean(loss)
    if not torch.isfinite(global_loss):
        raise FloatingPointError(f"loss is {global_loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()
    scheduler.step()
    return global_loss


PLATEAU_FACTOR = 0.5  # `plateau` schedule: each stall multiplies the rates by this, to `decay_to`


class LRSchedule:
    """A run's learning-rate policy behind one interface: `step` after every optimiser step,
    `validated(score)` after every validation.

    - ``linear`` (the paper; every profile's default): factor 1 -> `decay_to` over the first
      `decay_frac` of the epoch budget (`linear_decay`). The trajectory depends on the budget,
      so a run stopped early by patience may not have annealed (`train.stop_after_decay` keeps
      it from stopping before the decay ends), and a longer budget changes every epoch of it.
    - ``plateau`` (cpu's BCE runs, Table V): rates held until valid NDCG@10 has not improved for
      `plateau` validations (default patience/2), then multiplied by `PLATEAU_FACTOR`, down to
      `decay_to` times their start (torch's `ReduceLROnPlateau`, strict improvement as early
      stopping counts it). Nothing depends on the budget: a run that converges under one cap is
      the same run under any larger cap, and every run anneals before patience ends it. With
      patience/4 it annealed slow learners too early (ID SASRec BCE lost 2.3 valid NDCG@10
      points; docs/results_cpu.md, notebook 04).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
        t = cfg.resolved().train
        self.kind = t.schedule
        self._optimizer = optimizer
        if self.kind == "linear":
            self._sched: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau = \
                torch.optim.lr_scheduler.LambdaLR(
                    optimizer, linear_decay(t.epochs * steps_per_epoch, t.decay_to, t.decay_frac))
        else:
            self._sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=PLATEAU_FACTOR, patience=t.plateau - 1,
                threshold=0.0, threshold_mode="abs", cooldown=0,
                min_lr=[g["lr"] * t.decay_to for g in optimizer.param_groups], eps=0.0)

    def step(self) -> None:
        """After every optimiser step (the linear decay moves per step)."""
        if self.kind == "linear":
            self._sched.step()

    def validated(self, score: float) -> None:
        """After every validation with its selection score (the plateau rule counts stalls)."""
        if self.kind == "plateau":
            self._sched.step(score)

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self._optimizer.param_groups]

    def state_dict(self) -> dict:
        return self._sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._sched.load_state_dict(state)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int
                   ) -> LRSchedule:
    """The run's learning-rate schedule (`train.schedule`: linear or plateau; `LRSchedule`)."""
    return LRSchedule(optimizer, cfg, steps_per_epoch)


def fit(
    model: Recommender,
    data: SequenceData,
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train `model` on `data`; leave it at the best-validation weights and return the history.

    With `run_dir`, a checkpoint is written atomically after every epoch and an existing one for
    the same config is resumed. `on_epoch_end(epoch, record)` lets notebooks plot live; raising
    from it stops training with the checkpoint intact.

    Under torchrun (see module docstring) every rank must call `fit`; `on_epoch_end` runs on
    every rank with the same record, so a callback that stops training must stop all of them.
    `train.batch_size` stays the global batch, and with dropout 0 the losses, metrics and
    weights equal a single-process run's up to float rounding.
    """
    cfg = cfg.resolved()
    t = cfg.train
    device = next(model.parameters()).device
    deterministic_training(t.deterministic)
    distributed.init_from_env(device)  # no-op outside torchrun or when already joined
    world, main = distributed.world_size(), distributed.is_main_process()
    ddp_model = None
    if distributed.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    batches = TrainBatches(data, t.batch_size, t.seed)
    loader = train_loader(batches, t.num_workers, pin_memory=device.type == "cuda")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_schedule(optimizer, cfg, len(batches))
    valid_set = data.eval_set("valid")
    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None

    result = FitResult(world_size=world, budget=t.epochs)
    # `stop_after_decay`: patience may end the run only once the linear decay is over
    min_epochs = t.min_epochs()
    best_state: dict[str, torch.Tensor] | None = None
    best_score, bad_checks, start_epoch, done = -math.inf, 0, 0, False
    ck = _load_checkpoint(ckpt_path, cfg, device)
    if ck is not None:
        model.load_state_dict(ck["model"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        best_state, best_score = ck["best_state"], ck["best_score"]
        bad_checks, start_epoch, done = ck["bad_checks"], ck["epoch"] + 1, ck["done"]
        result.history, result.best_epoch = ck["history"], ck["best_epoch"]
        result.best_valid, result.resumed_from = ck["best_valid"], ck["epoch"]
        result.earlier_seconds = epoch_seconds(ck["history"])
        log.info("resumed %s after epoch %d", ckpt_path, ck["epoch"])

    # a text bar (not a widget): a notebook saved by papermill keeps its last state, and an
    # early stop ends it at 100% of the epochs actually run, not as an unfinished bar
    bar = tqdm(desc=cfg.name, file=sys.stdout,
               disable=not progress or done or not main,  # one bar per job, on rank 0
               initial=start_epoch, total=t.epochs, leave=True, dynamic_ncols=True)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, t.epochs):
        if done:
            break
        # dropout stream: a function of the epoch (and of the rank, so shards draw fresh masks)
        torch.manual_seed(t.seed * 100_003 + epoch + 1_000_003 * distributed.rank())
        batches.set_epoch(epoch)
        (model if ddp_model is None else ddp_model).train()
        e0, loss_sum, n = time.perf_counter(), 0.0, 0
        for step, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            try:
                global_loss = train_step(model, batch, optimizer, scheduler, cfg, ddp_model)
            except FloatingPointError as err:
                saved = ckpt_path is not None and (epoch > start_epoch or ck is not None)
                raise FloatingPointError(
                    f"{err} at epoch {epoch + 1} step {step} of run {cfg.name!r}; lower "
                    "train.lr / train.encoder_lr or check the data. "
                    + (f"The checkpoint of the last finished epoch is intact at {ckpt_path}."
                       if saved else "No epoch had finished, so no checkpoint was written.")
                ) from None
            loss_sum += global_loss.item()
            n += 1
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / n:.4f}")
        record: dict = {
            "epoch": epoch + 1,  # counted from 1, as everywhere a user sees epochs
            "loss": loss_sum / max(n, 1),
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": time.perf_counter() - e0,
        }
        last = epoch == t.epochs - 1
        if (epoch + 1) % t.eval_every == 0 or last:
            v0 = time.perf_counter()
            valid = evaluate_model(model, valid_set, cfg.eval.ks, cfg.eval.batch_size).metrics
            record["valid"] = valid
            if t.track_test:  # for notebook 11 only: never used to choose anything here
                record["test"] = evaluate_model(model, data.eval_set("test"), cfg.eval.ks,
                                                cfg.eval.batch_size).metrics
            record["eval_seconds"] = time.perf_counter() - v0
            score = valid[SELECTION_METRIC]
            scheduler.validated(score)
            if score > best_score:
                best_score, bad_checks = score, 0
                best_state = trainable_state(model)
                result.best_epoch, result.best_valid = epoch + 1, valid
            else:
                bad_checks += 1
            if progress:
                bar.set_postfix(loss=f"{record['loss']:.4f}", ndcg10=f"{score:.2f}")
        result.history.append(record)
        done = last or (bad_checks >= t.patience and epoch + 1 >= min_epochs)
        result.stopped_early = done and not last
        if ckpt_path is not None and main:
            atomic_save(
                {
                    "config_hash": cfg.hash(),
                    "epoch": epoch,
                    "done": done,
                    "model": trainable_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_state": best_state,
                    "best_score": best_score,
                    "best_epoch": result.best_epoch,
                    "best_valid": result.best_valid,
                    "bad_checks": bad_checks,
                    "history": result.history,
                },
                ckpt_path,
            )
        bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if done:
            break
    if result.stopped_early:
        bar.total = bar.n  # stopped early on purpose: the bar is complete
        bar.refresh()
    bar.close()
    result.train_seconds = result.earlier_seconds + time.perf_counter() - t0
    result.epochs_run = len(result.history)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return result
