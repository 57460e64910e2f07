"""From raw interactions to the evaluation contract: k-core, chronological sequences, leave-one-out.

Everything here is vectorised with pandas/numpy; no Python loop walks over interactions.
Item indices are 1..n_items in the order of their sorted original ids; 0 is the padding item.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from mmsr_lib.data.format import RawDataset
from mmsr_lib.data.history import History

log = logging.getLogger("mmsr.data")

SPLITS = ("valid", "test")


class EmptyDatasetError(ValueError):
    """Raised when filtering leaves nothing to train on; the message says which filter did it."""


@dataclass
class EvalSet:
    """Inputs of one evaluation: the last `max_len` items before each target, the target, and the
    full history to mask (every earlier interaction of the user, not only the last `max_len`)."""

    inputs: np.ndarray  # [U, L] left-padded item indices
    targets: np.ndarray  # [U]
    history: History
    users: np.ndarray  # [U] user index of each row (sub-sequences repeat users)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: np.ndarray) -> EvalSet:
        rows = np.asarray(rows, dtype=np.int64)
        return EvalSet(self.inputs[rows], self.targets[rows], self.history.take(rows),
                       self.users[rows])

    def history_of(self, row: int) -> np.ndarray:
        h = self.history
        return h.indices[h.indptr[row] : h.indptr[row + 1]]


@dataclass
class SequenceData:
    """Chronological per-user sequences plus item side information, ready for training and evaluation."""

    seqs: list[np.ndarray]  # per user, item indices in time order (full, untruncated)
    user_ids: np.ndarray  # [n_users] original ids
    item_ids: np.ndarray  # [n_items + 1] original ids, index 0 = "<pad>"
    item_text: list[str]  # [n_items + 1], index 0 = ""
    item_image: np.ndarray  # [n_items + 1] rows into the image store, -1 = none
    max_len: int
    cold_threshold: int
    image_path: str | None = None
    window_mode: str = "all"  # "all": every training position is a target; "last": L+1 items
    name: str = ""
    source_fingerprint: str = ""
    stats: dict = field(default_factory=dict)
    _eval_sets: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.seqs)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    # -- training part --------------------------------------------------------------------
    @cached_property
    def train_counts(self) -> np.ndarray:
        """Occurrences of each item in the training part (every sequence without its last two)."""
        train = np.concatenate([s[:-2] for s in self.seqs]) if self.seqs else np.zeros(0, np.int64)
        return np.bincount(train, minlength=self.n_items + 1).astype(np.int64)

    @cached_property
    def cold_items(self) -> np.ndarray:
        """Boolean [n_items + 1]: fewer than `cold_threshold` training occurrences (padding excluded)."""
        cold = self.train_counts < self.cold_threshold
        cold[0] = False
        return cold

    @cached_property
    def train_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-padded training windows: inputs and next-item targets [W, L] and each window's
        user [W].

        ``window_mode="all"``: every position of a user's training part (``seq[:-2]``) is the
        target of exactly one window. The part is cut from its end into windows of L+1 items
        stepping by L (consecutive windows share one item, the last input of the earlier one
        being the first input of the later), so a target sees up to L items of context and no
        position is trained twice per epoch. ``"last"``: the paper's code, one window per user
        from the last L+1 training items (on MovieLens-100K that leaves 81% of the training
        positions unused).
        """
        L = self.max_len
        windows: list[tuple[int, np.ndarray]] = []
        for u, s in enumerate(self.seqs):  # one slice per window, not per interaction
            t = s[:-2]
            ends = [len(t)] if self.window_mode == "last" else range(len(t), 1, -L)
            for end in ends:
                w = t[max(0, end - L - 1) : end]
                if len(w) > 1:
                    windows.append((u, w))
        inputs = np.zeros((len(windows), L), dtype=np.int64)
        targets = np.zeros((len(windows), L), dtype=np.int64)
        users = np.fromiter((u for u, _ in windows), dtype=np.int64, count=len(windows))
        for i, (_, w) in enumerate(windows):
            n = len(w) - 1
            inputs[i, L - n :] = w[:-1]
            targets[i, L - n :] = w[1:]
        return inputs, targets, users

    @cached_property
    def train_membership(self) -> np.ndarray:
        """Sorted unique keys user * (n_items + 1) + item of every training interaction.

        Lets the negative sampler test "is this item in the user's training sequence?" for a whole
        batch with one `np.searchsorted`, without per-user Python sets.
        """
        base = self.n_items + 1
        keys = [u * base + np.unique(s[:-2]) for u, s in enumerate(self.seqs)]
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    # -- evaluation sets -------------------------------------------------------------------
    def eval_set(self, split: str) -> EvalSet:
        """Leave-one-out: valid predicts seq[-2] from seq[:-2]; test predicts seq[-1] from seq[:-1]."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        if split in self._eval_sets:  # built once: training validates every epoch
            return self._eval_sets[split]
        cut = 2 if split == "valid" else 1
        prefixes = [s[:-cut] for s in self.seqs]
        targets = np.array([s[-cut] for s in self.seqs], dtype=np.int64)
        self._eval_sets[split] = EvalSet(
            _left_pad([p[-self.max_len :] for p in prefixes], self.max_len),
            targets,
            History.from_lists(prefixes),
            np.arange(self.n_users, dtype=np.int64),
        )
        return self._eval_sets[split]

    def cold_eval_set(self, split: str, mode: str = "target") -> EvalSet:
        """Evaluation restricted to cold items.

        mode="target": the users whose valid/test target is cold (no leakage: the target is unseen
        at that position in training). mode="paper": the paper's sub-sequences, every prefix of a
        user's sequence that ends right before a cold item, truncated at the split's cut. This
        LEAKS: for prefixes inside the training part the model was trained to predict exactly that
        target at that position, so it measures memorisation as much as cold-start ability.
        """
        if mode == "target":
            es = self.eval_set(split)
            return es.subset(np.flatnonzero(self.cold_items[es.targets]))
        if mode != "paper":
            raise ValueError(f"unknown cold mode {mode!r}; choose 'target' or 'paper'")
        cut = 2 if split == "valid" else 1
        prefixes, targets, users = [], [], []
        for u, s in enumerate(self.seqs):
            full = s[: len(s) - cut + 1]
            pos = np.flatnonzero(self.cold_items[full[1:]]) + 1  # cold target positions, prefix >= 1
            for p in pos:
                prefixes.append(full[:p])
                targets.append(full[p])
                users.append(u)
        return EvalSet(
            _left_pad([p[-self.max_len :] for p in prefixes], self.max_len),
            np.asarray(targets, dtype=np.int64),
            History.from_lists(prefixes),
            np.asarray(users, dtype=np.int64),
        )

    def fingerprint(self) -> str:
        """Identity of the preprocessed data (source files + preprocessing) for the results store."""
        h = hashlib.sha256()
        h.update(self.source_fingerprint.encode())
        h.update(f"{self.max_len}|{self.cold_threshold}|{self.n_users}|{self.n_items}".encode())
        h.update(f"|windows={self.window_mode}".encode())
        return h.hexdigest()[:16]


def _left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, length - len(s) :] = s
    return out


WINDOW_MODES = ("all", "last")


def build_sequences(
    raw: RawDataset,
    max_len: int = 20,
    min_user_interactions: int = 5,
    min_item_interactions: int = 0,
    cold_threshold: int = 10,
    train_windows: str = "all",
) -> SequenceData:
    """Filter (k-core), order chronologically and index a raw data set.

    Users with fewer than `min_user_interactions` are removed; with `min_item_interactions > 0`
    items below it are removed too, repeating until both hold (a k-core). Ties in timestamps keep
    the file order (stable sort), so the result is deterministic.
    """
    if max_len < 1:
        raise ValueError(f"data.max_len must be >= 1, got {max_len}")
    if train_windows not in WINDOW_MODES:
        raise ValueError(f"data.train_windows={train_windows!r}; choose one of {WINDOW_MODES}")
    if min_user_interactions < 3:
        raise ValueError(
            "data.min_user_interactions must be >= 3: leave-one-out needs a training part of at "
            f"least one item plus a validation and a test item (got {min_user_interactions})"
        )
    df = raw.interactions[["user", "item", "timestamp"]].copy()
    n_raw = len(df)
    df["order"] = np.arange(n_raw)
    stats = {"raw_interactions": n_raw, "raw_users": int(df["user"].nunique())}
    while True:
        sizes = df.groupby("user", sort=False)["item"].transform("size")
        keep = sizes >= min_user_interactions
        if min_item_interactions > 0:
            isizes = df.groupby("item", sort=False)["user"].transform("size")
            keep &= isizes >= min_item_interactions
        if keep.all():
            break
        df = df[keep.to_numpy()]
    if df.empty:
        raise EmptyDatasetError(
            f"{raw.root}: no interactions left after removing users with fewer than "
            f"{min_user_interactions} interactions"
            + (f" and items with fewer than {min_item_interactions}" if min_item_interactions else "")
            + f" ({n_raw} interactions before filtering). Lower data.min_user_interactions or use "
            "a larger data set."
        )
    df = df.sort_values(["user", "timestamp", "order"], kind="stable")
    user_codes, user_ids = pd.factorize(df["user"], sort=True)
    item_codes, item_ids = pd.factorize(df["item"], sort=True)
    items = item_codes.astype(np.int64) + 1
    bounds = np.flatnonzero(np.diff(user_codes)) + 1
    seqs = np.split(items, bounds)

    side = raw.items.set_index("item").reindex(item_ids)
    item_text = [""] + side["text"].fillna("").astype(str).tolist()
    item_image = np.concatenate([[-1], side["image"].fillna(-1).to_numpy(dtype=np.int64)])
    stats.update(
        users=len(seqs),
        items=len(item_ids),
        interactions=len(df),
        avg_len=float(len(df) / max(len(seqs), 1)),
        removed_interactions=n_raw - len(df),
    )
    log.info(
        "%s: %d users, %d items, %d interactions after filtering (%d removed)",
        raw.root, stats["users"], stats["items"], stats["interactions"],
        stats["removed_interactions"],
    )
    image_path = raw.image_path
    return SequenceData(
        seqs=seqs,
        user_ids=np.asarray(user_ids, dtype=object),
        item_ids=np.concatenate([np.array(["<pad>"], dtype=object), np.asarray(item_ids, dtype=object)]),
        item_text=item_text,
        item_image=item_image,
        max_len=max_len,
        cold_threshold=cold_threshold,
        image_path=str(image_path) if image_path is not None else None,
        window_mode=train_windows,
        name=str(raw.meta.get("name", raw.root.name)),
        source_fingerprint=raw.fingerprint(),
        stats=stats,
    )
