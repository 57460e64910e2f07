"""ID SASRec checked against an independent implementation: RecBole's SASRec, same data, split
and evaluator.

The protocol issue asks that our ID SASRec be at least as strong as a well-tuned standard
implementation under the same protocol. RecBole (1.2.1, the wheel that ships MovieLens-100K)
is the most used one. What is shared and what is RecBole's own:

* **Data and split: ours.** Our preprocessed sequences are written as a RecBole atomic file
  whose timestamps are each interaction's position in our order (`write_atomic`), so RecBole's
  leave-one-out split (``LS: valid_and_test``, time order) has every user's validation and test
  item equal to ours even where raw timestamps tie (`split_matches` checks it user by user).
  The input window is our ``data.max_len`` (``MAX_ITEM_LIST_LENGTH``).
* **Model, training and model selection: RecBole's.** Its SASRec (2 layers, 2 heads, 64 wide,
  GELU, its initialisation), its data augmentation (every prefix of a training sequence is a
  sample), softmax cross-entropy over the catalog, Adam, early stopping on its own validation
  NDCG@10 with its ``stopping_step``; the best epoch's weights are kept in memory (no
  checkpoint file is written or read back).
* **Evaluation: both.** Test and validation are ranked by our evaluator (`evaluate_model`: full
  ranking, the user's earlier items masked, our tie rule) through `RecBoleScorer`, so the
  per-user ranks pair with our stored runs for a Wilcoxon test; RecBole's own evaluator (no
  history mask for sequential models) is reported next to it.

RecBole's training imports a few small packages (its logger, tensorboard) that
``requirements-offline.txt`` installs with ``--no-deps``; without them a clear error says so.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.evaluate import evaluate_model
from mmsr_lib.recommender import Scorer
from mmsr_lib.util.atomic import atomic_write_text

log = logging.getLogger("mmsr.recbole")
LOG_EVERY = 10  # epochs between progress lines

INSTALL_HINT = "pip install --no-deps -r requirements-offline.txt  (`make venv` does it)"
# RecBole's own SASRec defaults (recbole/properties/model/SASRec.yaml and overall.yaml, 1.2.1)
RECBOLE_DEFAULTS = {"learning_rate": 1e-3, "dropout": 0.5, "train_batch_size": 2048,
                    "epochs": 300, "stopping_step": 10}


def import_recbole() -> dict[str, Any]:
    """RecBole's config, data, model and trainer, or an error that says how to install them.

    RecBole 1.2.1 aliases NumPy names removed in NumPy 2 (``np.float_``...) when its config is
    built; they are defined first as what NumPy 1 meant by them."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)
    try:
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.data.interaction import Interaction
        from recbole.model.sequential_recommender import SASRec
        from recbole.trainer import Trainer
        from recbole.utils import init_seed
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"RecBole's SASRec needs {e.name!r}, which is not installed: run {INSTALL_HINT}"
        ) from e
    return {"Config": Config, "create_dataset": create_dataset,
            "data_preparation": data_preparation, "Interaction": Interaction,
            "SASRec": SASRec, "Trainer": Trainer, "init_seed": init_seed}


def write_atomic(data: SequenceData, folder: str | Path, name: str) -> Path:
    """``<folder>/<name>/<name>.inter``: one row per interaction, user token ``u<row>``, item
    token ``i<our item index>``, timestamp = position in the user's sequence (our order)."""
    path = Path(folder) / name / f"{name}.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, seq in enumerate(data.seqs):
        lines.extend(f"u{u}\ti{int(i)}\t{t}" for t, i in enumerate(seq))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def recbole_settings(data: SequenceData, folder: str | Path, name: str, seed: int,
                     learning_rate: float, dropout: float, epochs: int, stopping_step: int,
                     train_batch_size: int) -> dict[str, Any]:
    """RecBole's config dictionary for SASRec on our split (see the module docstring)."""
    return {
        "data_path": str(folder), "checkpoint_dir": str(Path(folder) / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": data.max_len,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [10, 20, 50], "valid_metric": "NDCG@10",
        "loss_type": "CE", "train_neg_sample_args": None,
        "learning_rate": learning_rate, "hidden_dropout_prob": dropout,
        "attn_dropout_prob": dropout, "epochs": epochs, "stopping_step": stopping_step,
        "train_batch_size": train_batch_size, "eval_batch_size": 4096,
        "seed": seed, "reproducibility": True, "device": "cpu", "use_gpu": False,
        "show_progress": False, "log_wandb": False, "state": "WARNING",
    }


class RecBoleScorer(Scorer):
    """A RecBole sequential model behind our `Scorer` interface: our left-padded inputs become
    RecBole's left-aligned ``item_id_list`` + ``item_length`` (its item ids), its scores come
    back in our item order (column 0, padding, is ignored by the evaluator)."""

    def __init__(self, model: torch.nn.Module, ours_to_recbole: np.ndarray,
                 interaction_cls: type) -> None:
        self.model, self.interaction_cls = model, interaction_cls
        self.to_rb = torch.as_tensor(ours_to_recbole, dtype=torch.long)
        self.n_items = len(ours_to_recbole) - 1

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        lengths = (inputs > 0).sum(1)
        # left-padded -> left-aligned: a stable sort puts the padding (key 1) after the items
        order = torch.argsort((inputs == 0).to(torch.int8), dim=1, stable=True)
        seq = self.to_rb[inputs.gather(1, order)]
        batch = self.interaction_cls({self.model.ITEM_SEQ: seq,
                                      self.model.ITEM_SEQ_LEN: lengths.clamp(min=1)})
        scores = self.model.full_sort_predict(batch).to(torch.float64)
        return scores[:, self.to_rb]


def item_mapping(dataset: Any, n_items: int) -> np.ndarray:
    """[n_items + 1]: RecBole's internal id of each of our item indices (0 -> its padding)."""
    token_id = dataset.field2token_id[dataset.iid_field]
    missing = [i for i in range(1, n_items + 1) if f"i{i}" not in token_id]
    if missing:
        raise ValueError(f"RecBole's dataset lacks {len(missing)} of our items (first: "
                         f"{missing[:5]}); was the atomic file written from this data?")
    return np.array([0] + [token_id[f"i{i}"] for i in range(1, n_items + 1)], dtype=np.int64)


def split_matches(data: SequenceData, valid_loader: Any, test_loader: Any,
                  mapping: np.ndarray) -> dict[str, int]:
    """Users whose validation / test target differs between RecBole's split and ours (0 and 0
    when the split is the same), checked over every user."""
    dataset = valid_loader.dataset
    uid_token = dataset.field2id_token[dataset.uid_field]
    back = np.zeros(mapping.max() + 1, dtype=np.int64)
    back[mapping] = np.arange(len(mapping))
    out = {}
    for split, loader in (("valid", valid_loader), ("test", test_loader)):
        inter = loader.dataset.inter_feat
        users = [int(uid_token[u][1:]) for u in inter[dataset.uid_field].tolist()]
        targets = back[inter[dataset.iid_field].numpy()]
        ours = data.eval_set(split).targets
        if len(users) != len(ours):
            out[split] = abs(len(users) - len(ours))  # users one split lacks
            continue
        out[split] = int(np.sum(targets != ours[np.asarray(users)]))
    return out


@dataclass
class RecBoleRun:
    """One RecBole SASRec run: settings, where it stopped, and both evaluators' numbers."""

    seed: int
    settings: dict[str, Any]
    best_epoch: int = 0
    epochs_run: int = 0
    converged: bool = False
    seconds: float = 0.0
    split_mismatches: dict[str, int] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)  # our evaluator, percent
    test: dict[str, float] = field(default_factory=dict)  # our evaluator, percent
    test_recbole: dict[str, float] = field(default_factory=dict)  # RecBole's evaluator, percent
    test_ranks: list[int] = field(default_factory=list)  # per user, our evaluator (0-based)

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(asdict(self), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> RecBoleRun:
        return cls(**json.loads(Path(path).read_text()))


def train_recbole_sasrec(data: SequenceData, workdir: str | Path, seed: int = 42,
                         learning_rate: float = RECBOLE_DEFAULTS["learning_rate"],
                         dropout: float = RECBOLE_DEFAULTS["dropout"],
                         epochs: int = RECBOLE_DEFAULTS["epochs"],
                         stopping_step: int = RECBOLE_DEFAULTS["stopping_step"],
                         train_batch_size: int = RECBOLE_DEFAULTS["train_batch_size"],
                         ) -> RecBoleRun:
    """Train RecBole's SASRec on `data` (our split) and evaluate it with both evaluators.

    RecBole writes a tensorboard log into its working directory, so it runs inside `workdir`
    (which also holds the atomic file); nothing is written elsewhere."""
    rb = import_recbole()
    workdir = Path(workdir).resolve()
    name = "mmsr"
    write_atomic(data, workdir, name)
    settings = recbole_settings(data, workdir, name, seed, learning_rate, dropout, epochs,
                                stopping_step, train_batch_size)
    kept = {k: v for k, v in settings.items() if k not in ("data_path", "checkpoint_dir")}
    run = RecBoleRun(seed=seed, settings=kept)  # without this process's scratch folder
    start = time.perf_counter()
    with contextlib.chdir(workdir), warnings.catch_warnings():
        # only RecBole 1.2.1 runs in this block; its pandas copy-on-write, NumPy 2 and torch.amp
        # deprecation warnings are not ours to fix and would bury the output
        warnings.simplefilter("ignore")
        argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole reads `--key=value` from argv too
        try:
            config = rb["Config"](model="SASRec", dataset=name, config_dict=settings)
        finally:
            sys.argv = argv
        rb["init_seed"](config["seed"], config["reproducibility"])
        dataset = rb["create_dataset"](config)
        train, valid, test = rb["data_preparation"](config, dataset)
        mapping = item_mapping(dataset, data.n_items)
        run.split_mismatches = split_matches(data, valid, test, mapping)
        if any(run.split_mismatches.values()):
            raise ValueError(f"RecBole's split differs from ours: {run.split_mismatches} users "
                             "with another validation / test item")
        model = rb["SASRec"](config, train.dataset)
        trainer = _in_memory_trainer(rb["Trainer"])(config, model)
        trainer.fit(train, valid, verbose=False, saved=True, show_progress=False)
        model.load_state_dict(trainer.best_state)
        recbole_test = trainer.evaluate(test, load_best_model=False, show_progress=False)
    run.seconds = time.perf_counter() - start
    run.best_epoch, run.epochs_run = trainer.best_epoch + 1, trainer.epochs_run
    run.converged = run.epochs_run < epochs  # stopped by its patience, not by the budget
    run.test_recbole = {_our_name(k): 100 * float(v) for k, v in recbole_test.items()}
    scorer = RecBoleScorer(model, mapping, rb["Interaction"])
    model.eval()
    for split in ("valid", "test"):
        result = evaluate_model(model, data.eval_set(split), scorer=scorer)
        setattr(run, split, {k: float(v) for k, v in result.metrics.items()})  # percent
        if split == "test":
            run.test_ranks = [int(r) for r in result.ranks]
    return run


def _our_name(recbole_metric: str) -> str:
    """RecBole's ``hit@10`` / ``ndcg@10`` as our ``HR@10`` / ``NDCG@10``."""
    metric, _, k = recbole_metric.partition("@")
    return {"hit": "HR", "ndcg": "NDCG"}.get(metric, metric) + "@" + k


def _in_memory_trainer(trainer_cls: type) -> type:
    """RecBole's Trainer that keeps the best epoch's weights in memory instead of pickling a
    checkpoint to disk (which its evaluate would read back with a pickle load), and counts
    the epochs it trains."""

    class InMemoryBest(trainer_cls):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.best_state: dict[str, torch.Tensor] | None = None
            self.best_epoch, self.epochs_run = -1, 0

        def _train_epoch(self, *args, **kwargs):
            self.epochs_run += 1
            return super()._train_epoch(*args, **kwargs)

        def _valid_epoch(self, *args, **kwargs):
            score, result = super()._valid_epoch(*args, **kwargs)
            if self.epochs_run % LOG_EVERY == 0:  # RecBole's own log is off (verbose=False)
                log.info("RecBole SASRec seed %s: epoch %d, valid NDCG@10 %.2f (RecBole's "
                         "evaluator), best %.2f at epoch %d", self.config["seed"],
                         self.epochs_run, 100 * score, 100 * max(score, self.best_valid_score),
                         self.best_epoch + 1 if score <= self.best_valid_score
                         else self.epochs_run)
            return score, result

        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_epoch = int(epoch)

    return InMemoryBest


def run_file(folder: str | Path, seed: int, learning_rate: float, dropout: float) -> Path:
    """Where one run's JSON is kept: one file per (lr, dropout, seed), so a search resumes."""
    return Path(folder) / f"sasrec-lr{learning_rate:g}-dropout{dropout:g}-seed{seed}.json"


def kept_runs(folder: str | Path, seed: int) -> list[RecBoleRun]:
    """Every run kept in `folder` for `seed`, one per (lr, dropout) tried."""
    paths = sorted(Path(folder).glob(f"sasrec-lr*-dropout*-seed{seed}.json"))
    return [RecBoleRun.load(p) for p in paths]


def search_table(runs: list[RecBoleRun]) -> Any:
    """The settings tried (one seed), best validation NDCG@10 first; test shown, never used."""
    import pandas as pd

    rows = [{"lr": r.settings.get("learning_rate"),
             "dropout": r.settings.get("hidden_dropout_prob"),
             "valid NDCG@10": r.valid.get("NDCG@10", math.nan),
             "test NDCG@10 (not used)": r.test.get("NDCG@10", math.nan),
             "best / run epochs": f"{r.best_epoch}/{r.epochs_run}", "converged": r.converged}
            for r in runs]
    columns = ["lr", "dropout", "valid NDCG@10", "test NDCG@10 (not used)", "best / run epochs",
               "converged"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values("valid NDCG@10", ascending=False, ignore_index=True)
    return table.round({"valid NDCG@10": 2, "test NDCG@10 (not used)": 2})


def tuned_setting(runs: list[RecBoleRun]) -> tuple[float, float] | None:
    """(lr, dropout) of the run (one seed's `kept_runs`) with the best validation NDCG@10 among
    converged ones (our evaluator; the test split is never used to choose), or None."""
    runs = [r for r in runs if r.converged and r.valid]
    if not runs:
        return None
    best = max(runs, key=lambda r: r.valid["NDCG@10"])
    return float(best.settings["learning_rate"]), float(best.settings["hidden_dropout_prob"])


def resolve_setting(search: list[RecBoleRun], seed: int, learning_rate: float | None,
                    dropout: float | None) -> tuple[float, float, str]:
    """The (lr, dropout) a check uses and where it came from: the ones given; else the setting
    chosen on validation among `search`, the runs kept at the search `seed` (RecBole as its
    advocates would tune it); else RecBole's defaults."""
    tuned = tuned_setting(search) if learning_rate is None and dropout is None else None
    if tuned is not None:
        return (*tuned, f"chosen on validation NDCG@10 among {len(search)} setting(s) tried at "
                        f"seed {seed}")
    source = "RecBole's defaults" if learning_rate is None and dropout is None else "as given"
    lr = RECBOLE_DEFAULTS["learning_rate"] if learning_rate is None else learning_rate
    dropout = RECBOLE_DEFAULTS["dropout"] if dropout is None else dropout
    return lr, dropout, source


def train_or_load(data: SequenceData, folder: str | Path, seed: int, learning_rate: float,
                  dropout: float, **kwargs: Any) -> RecBoleRun:
    """The stored run for these settings, else train it (in ``<folder>/work-<pid>``, removed
    afterwards) and store it atomically."""
    path = run_file(folder, seed, learning_rate, dropout)
    if path.exists():
        run = RecBoleRun.load(path)
        asked = {k: v for k, v in kwargs.items() if v is not None}
        differ = {k: (run.settings.get(k), v) for k, v in asked.items()
                  if run.settings.get(k) != v}
        if differ:
            raise ValueError(f"{path} was trained with other settings ({differ}: kept, asked); "
                             "give another --folder for this budget, or remove that file")
        return run
    work = Path(folder) / f"work-{os.getpid()}"
    try:
        run = train_recbole_sasrec(data, work, seed=seed, learning_rate=learning_rate,
                                   dropout=dropout, **kwargs)
    finally:
        _remove_workdir(work)
    run.save(path)
    return run


def _remove_workdir(work: Path) -> None:
    """Remove what `train_recbole_sasrec` wrote in its own working folder (only that)."""
    import shutil

    if work.name.startswith("work-") and work.is_dir():
        shutil.rmtree(work)


# -- the comparison with our stored ID SASRec ------------------------------------------------------
def our_sasrec(profile: str = "cpu", dataset: str = "movielens-100k", *overrides: str):
    """Our ID SASRec row of Table IV on `dataset` (its configuration at the first seed, with
    `overrides`) and the profile's seeds: the runs RecBole's SASRec is compared with."""
    from mmsr_lib.config import profile_seeds
    from mmsr_lib.workbook.grids import table4_configs

    cfg = table4_configs(profile, *overrides, dataset=dataset,
                         architectures=["SASRec"])["SASRec", "IDSR"]
    return cfg, profile_seeds(profile)


def comparison(store: Any, ours: list, theirs: list[RecBoleRun]) -> tuple[Any, Any]:
    """A table (mean ± std over seeds, our evaluator, percent) of our stored ID SASRec runs and
    RecBole's, plus the paired test over users of their seed-averaged test NDCG@10 (ours vs
    RecBole's; with the seeds-and-users CI of `significance.seeded_test`), or None for the test
    when either side has no run yet."""
    import pandas as pd

    from mmsr_lib.workbook.significance import mean_std_cell, per_seed, per_user, seeded_test

    def row(name: str, metrics: list[dict], best: list[int], run: list[int], conv: list[bool]):
        cells: dict[str, Any] = {"implementation": name, "seeds": len(metrics)}
        for m in ("HR@10", "NDCG@10", "HR@20", "NDCG@20"):
            values = [x[m] for x in metrics]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            cells[m] = mean_std_cell(float(np.mean(values)), std) if values else ""
        cells["best / run epochs"] = ", ".join(f"{b}/{r}" for b, r in zip(best, run, strict=True))
        cells["converged"] = f"{sum(conv)}/{len(conv)}"
        return cells

    rows = [row("ours (mmsr_lib SASRec)", [r.metrics["test"] for r in ours],
                [r.extra.get("best_epoch", 0) for r in ours],
                [r.extra.get("epochs_run", 0) for r in ours],
                [bool(r.extra.get("converged")) for r in ours]),
            row("RecBole 1.2.1 SASRec", [r.test for r in theirs], [r.best_epoch for r in theirs],
                [r.epochs_run for r in theirs], [r.converged for r in theirs]),
            row("  same runs, RecBole's evaluator (no history mask)",
                [r.test_recbole for r in theirs], [r.best_epoch for r in theirs],
                [r.epochs_run for r in theirs], [r.converged for r in theirs])]
    test = None
    if ours and theirs:
        a = per_seed(store, ours, "test", "NDCG@10")
        b = np.stack([per_user(np.asarray(r.test_ranks), "NDCG@10") for r in theirs])
        test = seeded_test(a, b, "NDCG@10")
    return pd.DataFrame(rows), test


def default_folder(dataset: str = "movielens-100k", profile: str = "cpu") -> Path:
    """Where `mmsr check-sasrec` keeps its runs: ``docs/reference/recbole-sasrec-<dataset>-
    <profile>`` of this checkout (committed, like ``docs/runs``), whatever the current folder
    (the profile sets the data, e.g. ``max_len``, so each has its own runs)."""
    return Path(__file__).resolve().parents[2] / "docs" / "reference" / \
        f"recbole-sasrec-{dataset}-{profile}"


@dataclass
class Check:
    """The comparison as a notebook or the command line shows it."""

    table: Any  # pandas DataFrame, one row per implementation
    test: Any  # PairedTest or None
    text: str  # the computed sentence
    search: Any = None  # pandas DataFrame: RecBole's settings tried at the search seed


def stored_check(store: Any, profile: str = "cpu", dataset: str = "movielens-100k",
                 seeds: tuple[int, ...] | None = None, learning_rate: float | None = None,
                 dropout: float | None = None, folder: str | Path | None = None,
                 overrides: tuple[str, ...] = ()) -> Check:
    """Our stored ID SASRec runs vs RecBole's kept runs (trains nothing). Without
    `learning_rate` and `dropout`, RecBole runs at the setting chosen on validation among its
    kept runs at the profile's first seed (`resolve_setting`)."""
    cfg, profile_seeds = our_sasrec(profile, dataset, *overrides)
    seeds = tuple(seeds or profile_seeds)
    folder = Path(folder) if folder is not None else default_folder(dataset, profile)
    search = kept_runs(folder, profile_seeds[0])
    lr, dropout, source = resolve_setting(search, profile_seeds[0], learning_rate, dropout)
    theirs = [RecBoleRun.load(p) for s in seeds if (p := run_file(folder, s, lr, dropout)).exists()]
    ours = [] if store is None else [
        r for s in seeds if (r := store.get(cfg.override(f"train.seed={s}").hash())) is not None
        and r.status == "done"]
    table, test = comparison(store, ours, theirs)
    text = check_text(test, ours, theirs, profile, cfg, lr, dropout, source)
    return Check(table, test, text, search_table(search))


def check_text(test: Any, ours: list, theirs: list[RecBoleRun], profile: str, cfg: Any,
               lr: float, dropout: float, source: str = "as given") -> str:
    """One computed sentence: the verdict of the paired test, or what is missing for it."""
    setting = (f"RecBole's SASRec at lr {lr:g}, dropout {dropout:g} ({source}; "
               f"{len(theirs)} seed(s)); "
               f"ours at lr {cfg.train.lr:g}, dropout {cfg.model.dropout:g}, "
               f"{cfg.train.loss.upper()} ({len(ours)} seed(s))")
    if not theirs:
        return (f"RecBole's SASRec has not been run for the {profile} profile: `mmsr "
                f"check-sasrec --profile {profile}` trains it ({setting}).")
    if not ours:
        return (f"Our ID SASRec runs are not in the results store: `mmsr grid 03 --train "
                f"--profile {profile} --only 'MovieLens.*SASRec / IDSR'` trains them.")
    from mmsr_lib.workbook.significance import verdict

    ours_conv = all(bool(r.extra.get("converged")) for r in ours)
    theirs_conv = all(r.converged for r in theirs)
    return verdict(test, "ours", "RecBole", ours_conv, theirs_conv) + f". {setting}."
