"""Does this machine re-compute a stored run bit for bit? Train its first epoch(s) and compare.

Training on a CPU is deterministic on one machine (same code, seed and thread count), but not
across machines: the kernels PyTorch, MKL and oneDNN pick depend on the instruction set and on
the CPU's maker (README, "Deterministic kernels"). Over a whole run a last-bit difference in
epoch 1 can grow into another best epoch and a different second decimal, most at high learning
rates. Before re-training archived runs, or trusting that a re-trained run "reproduces" one, a
user wants to know which case they are in; replaying the first epoch answers in seconds:
equal to the last bit (this machine re-computes the run) or not (expect the decimals to move).

The replay trains the stored configuration unchanged (its full epoch budget, so the learning-rate
schedule is the run's) and stops after `epochs` epochs; nothing is written, no checkpoint, no
store row. It uses the stored run's thread count when the record names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mmsr_lib.runs.equate import first_difference
from mmsr_lib.runs.fingerprint import code_fingerprint, same_code
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.provenance import machine

# settings outside the configuration that choose CPU kernels: shown with the machine, since a
# stored run's record does not name them
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")
# what a replayed epoch is compared on: everything a history entry holds but its timings
_COMPARED = ("epoch", "loss", "lr", "valid", "test")


class _Stop(Exception):
    """Raised from `fit`'s epoch callback once the replay has the epochs it needs."""


@dataclass(frozen=True)
class Replay:
    """One stored run's first epochs computed again here, and how they compare."""

    config_hash: str
    name: str
    epochs: int
    stored: list[dict]  # the stored history's first `epochs` entries, timings left out
    here: list[dict]  # the same, computed now
    stored_machine: dict  # `extra.machine` of the stored run ({} for records without one)
    here_machine: dict
    threads: int  # the thread count the replay ran with
    same_code: bool  # the run's code fingerprint is the current code's (or verified equal)
    # how the stored run was trained when no CPU replay can equal it bit for bit, e.g. "on
    # cuda:0", "on 2 processes (torchrun)"; "" for a one-process CPU run
    trained_otherwise: str
    difference: str  # the first value that differs, "" when every compared value is equal

    @property
    def equal(self) -> bool:
        return not self.difference


def compared(entry: dict) -> dict:
    """A history entry as the replay compares it: losses, learning rate and metrics."""
    return {k: entry[k] for k in _COMPARED if k in entry}


def replay(store: ResultsStore, config_hash: str, epochs: int = 1) -> Replay:
    """Train the stored run `config_hash` for its first `epochs` epochs here and compare each
    epoch's loss, learning rate and validation metrics with its stored history, to the last bit.
    Raises ValueError for an unknown or unfinished run, or one whose data set here differs."""
    from mmsr_lib.runs.runner import build_model, load_data, resolve_device
    from mmsr_lib.train import fit

    if epochs < 1:
        raise ValueError(f"--epochs {epochs}: at least 1")
    rec = _finished(store, config_hash)
    if not rec.history:
        raise ValueError(f"run {rec.config_hash} ({rec.name}) has no training history (a model "
                         "that is not trained, e.g. most-popular): nothing to replay")
    if len(rec.history) < epochs:
        raise ValueError(f"run {rec.config_hash} ({rec.name}) stored {len(rec.history)} epoch(s); "
                         f"replay at most that many (--epochs {len(rec.history)})")
    cfg = rec.run_config().resolved()
    if resolve_device(cfg.train.device).type != "cpu":
        cfg = cfg.override("train.device=cpu")  # a replay compares CPU kernels
    data = load_data(cfg.data)
    if rec.dataset_fingerprint and data.fingerprint() != rec.dataset_fingerprint:
        raise ValueError(
            f"run {rec.config_hash} ({rec.name}) was trained on another version of its data set "
            f"({cfg.data.source}): the data here has fingerprint {data.fingerprint()}, the run "
            f"{rec.dataset_fingerprint}. Re-create the data set as the run's config says (e.g. "
            "`mmsr data synth` with the run's settings) before replaying it")
    stored_machine = dict((rec.extra or {}).get("machine") or {})
    threads = int(stored_machine.get("torch_threads") or torch.get_num_threads())
    seen: list[dict] = []

    def collect(epoch: int, record: dict) -> None:
        seen.append(compared(record))
        if len(seen) >= epochs:
            raise _Stop

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(cfg, data, "cpu")
        fit(model, data, cfg, run_dir=None, progress=False, on_epoch_end=collect)
    except _Stop:
        pass
    finally:
        torch.set_num_threads(before)
    stored = [compared(h) for h in rec.history[:epochs]]
    here = seen[:epochs]
    here_machine = {**machine(), "torch_threads": threads}
    difference = next((d for i, (s, h) in enumerate(zip(stored, here, strict=True))
                       if (d := first_difference(s, h, f"epoch {i + 1} "))), "")
    extra = rec.extra or {}
    device = str(extra.get("device") or "cpu")
    otherwise = [] if device == "cpu" else [f"on {device}"]
    if int(extra.get("world_size") or 1) > 1:
        otherwise.append(f"on {extra['world_size']} processes (torchrun)")
    return Replay(rec.config_hash, rec.name, epochs, stored, here, stored_machine, here_machine,
                  threads, same_code(rec.code_fingerprint, code_fingerprint(rec.run_config())),
                  " and ".join(otherwise), difference)


def _finished(store: ResultsStore, config_hash: str) -> RunRecord:
    rec = store.get(config_hash)
    if rec is None:
        matches = [r for r in store.records() if r.config_hash.startswith(config_hash)]
        if len(matches) != 1:
            raise ValueError(
                f"no finished run {config_hash!r} in {store.path}"
                + (f" ({len(matches)} hashes start with it: give more digits)" if matches
                   else "; `mmsr results list` shows the stored runs' hashes"))
        rec = matches[0]
    if rec.status != "done":
        raise ValueError(f"run {rec.config_hash} ({rec.name}) is {rec.status}, not finished: "
                         "only a finished run's history can be replayed")
    return rec


def _machine_line(m: dict) -> str:
    if not m:
        return "not recorded (stored before runs named their machine)"
    return (f"{m.get('cpu', '?')}, {m.get('cpu_capability', '?')}, "
            f"{m.get('torch_threads', '?')} thread(s), torch {m.get('torch', '?')}")


def report_lines(r: Replay) -> list[str]:
    """What `mmsr results replay` prints: the two machines, the epochs side by side, the
    verdict and what it means for re-training the run here."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in KERNEL_ENV if k in os.environ)
    lines = [f"run {r.config_hash} ({r.name}), first {r.epochs} epoch(s) trained again here",
             f"  stored on: {_machine_line(r.stored_machine)}",
             f"  here:      {_machine_line(r.here_machine)}" + (f"; {env}" if env else "")]
    for s, h in zip(r.stored, r.here, strict=True):
        mark = "equal" if s == h else "differs"
        lines.append(f"  epoch {s.get('epoch')}: loss {s.get('loss')!r} stored, "
                     f"{h.get('loss')!r} here ({mark})")
    if r.equal:
        lines.append(f"equal to the last bit: this machine computes what the run computed "
                     f"(checked on {r.epochs} epoch(s)); trained again here with `mmsr train "
                     f"--force` and {r.threads} thread(s) it should give the stored numbers")
    else:
        lines.append(f"differs: first at {r.difference}")
        if r.trained_otherwise:
            why = (f"the run was trained {r.trained_otherwise}, replayed in one CPU process "
                   "here: equal only up to float rounding at best")
        elif not r.same_code:
            why = ("the run was computed by other code (it is stale here), so the code may be "
                   "the cause")
        elif not r.stored_machine:
            why = (f"the run's machine and thread count were not recorded (replayed with "
                   f"{r.threads} thread(s)), so either may be the cause")
        else:
            why = ("same code, so the machine's kernels are the cause (instruction set, CPU "
                   "maker, MKL / oneDNN paths; README, \"Deterministic kernels\")")
        lines.append(f"  {why}; a re-training here will likely move best epochs and the second "
                     "decimal of its metrics, most at high learning rates. Compare over seeds, "
                     "not bit for bit.")
    return lines
