"""Notebook 10 (paper Figures 4 and 5): what IDSR and MMSR embeddings look like, and a number
for every picture.

The paper shows t-SNE maps of items (popular vs cold) and of users and reads them by eye. A
t-SNE map can suggest structure that is not there, so every picture here comes with numbers
computed in the original embedding space (cosine):

* k-nearest-neighbour category purity (k=10): the share of an item's 10 nearest other items
  that have its category, reported separately for popular and cold items;
* the silhouette score by category (`sklearn.metrics.silhouette_samples`, cosine), averaged
  over the same groups.

A claim that one model groups items by category better than the other is made only when a
paired bootstrap over items (95% CI of the mean purity difference) excludes 0, a sign-flip
permutation test gives p < 0.05, with several seeds a side the bootstrap over seeds and items
(`significance.seed_and_user_ci`) excludes 0 too, and both models' runs converged; otherwise
the sentence says "no significant difference" or "no claim". Items are the synthetic catalog's,
whose latent category is known (`mmsr_lib.data.synthetic.load_item_attributes`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.data.sources import dataset_root
from mmsr_lib.data.synthetic import load_item_attributes
from mmsr_lib.recommender import Recommender
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook.significance import PairedDifference, seed_and_user_ci

K_NEIGHBOURS = 10
N_RESAMPLES = 2000
GROUP_COLOURS = {"popular": "tab:blue", "cold": "tab:red"}


# -- vectors ---------------------------------------------------------------------------------------
def _sequential(model: Recommender) -> Recommender:
    if not (hasattr(model, "item_table") and hasattr(model, "user_vectors")):
        raise TypeError(f"{type(model).__name__} has no item table and user vectors; only "
                        "sequential recommenders (item encoder + sequence model) can be shown")
    return model


def item_vectors(model: Recommender) -> np.ndarray:
    """The item table [n_items + 1, dim] the model ranks with (row 0 = padding): the ID
    embedding table for IDSR, the item encoder's outputs for MMSR."""
    model.eval()
    with torch.no_grad():
        return _sequential(model).item_table().float().cpu().numpy()


def user_vectors(model: Recommender, data: SequenceData, split: str = "test") -> np.ndarray:
    """Each user's vector [n_users, dim]: the state at the last position of the user's `split`
    input (the vector the model scores that user's held-out target with)."""
    model = _sequential(model)
    model.eval()
    with torch.no_grad():
        table = model.item_table()
        device = table.device
        inputs = torch.from_numpy(np.ascontiguousarray(data.eval_set(split).inputs)).to(device)
        return model.user_vectors(inputs, table=table).float().cpu().numpy()


@dataclass
class ModelVectors:
    """Item vectors (padding row dropped, row i = item index i + 1) and user vectors of every
    seed of every model, all on one data set."""

    items: dict[str, list[np.ndarray]]
    users: dict[str, list[np.ndarray]]
    data: SequenceData


def model_vectors(runs: Mapping[str, Sequence[RunRecord]], split: str = "test",
                  device: torch.device | str = "cpu",
                  store: ResultsStore | None = None) -> ModelVectors:
    """Every stored run's item and user vectors (from its trained weights, `load_trained`, no
    training); the runs must share one data set. With the runs' `store` the vectors are kept
    there (`runs.derived`) and read back where the weights are gone (another machine, `make
    figures`)."""
    from mmsr_lib.runs import derived
    from mmsr_lib.runs.runner import load_data
    from mmsr_lib.runs.trained import check_same_data

    if not runs:
        raise ValueError("no runs given")
    items: dict[str, list[np.ndarray]] = {}
    users: dict[str, list[np.ndarray]] = {}
    data = None
    for name, records in runs.items():
        if not records:
            raise ValueError(f"no runs for {name}")
        for rec in records:
            d = load_data(rec.run_config().resolved().data)
            check_same_data(rec, d)
            if data is not None and d.fingerprint() != data.fingerprint():
                raise ValueError(f"run {rec.name} is on other data than the first run; "
                                 "embeddings of different data sets cannot be compared")
            data = d
            vectors = derived.cached(store, rec, f"embeddings.model_vectors split={split}",
                                     __name__, functools.partial(_run_vectors, rec, split, device))
            items.setdefault(name, []).append(vectors["items"])
            users.setdefault(name, []).append(vectors["users"])
    return ModelVectors(items, users, data)


def _run_vectors(rec: RunRecord, split: str, device: torch.device | str
                 ) -> dict[str, np.ndarray]:
    """One run's item vectors (padding row left out) and user vectors on `split`."""
    from mmsr_lib.runs.trained import load_trained

    model, d = load_trained(rec, device)
    return {"items": item_vectors(model)[1:], "users": user_vectors(model, d, split)}


# -- labels ----------------------------------------------------------------------------------------
def catalog_attributes(record: RunRecord) -> pd.DataFrame:
    """The latent item attributes of the synthetic catalog a stored run was trained on."""
    cfg = record.run_config().resolved()
    if cfg.data.source != "synthetic":
        raise ValueError(f"run {record.name} is on data.source={cfg.data.source!r}: only the "
                         "synthetic catalog knows each item's category")
    return load_item_attributes(dataset_root(cfg.data))


def item_frame(data: SequenceData, attributes: pd.DataFrame) -> pd.DataFrame:
    """One row per item index 1..n_items: id, category, training occurrences and the group
    ("cold": fewer than ``data.cold_threshold`` training occurrences, else "popular")."""
    ids = pd.Series(data.item_ids[1:], dtype=str)
    attrs = attributes.assign(item=attributes["item"].astype(str)).set_index("item")
    missing = ~ids.isin(attrs.index)
    if missing.any():
        raise KeyError(f"{int(missing.sum())} items of the data set have no attributes (e.g. "
                       f"{ids[missing].iloc[0]!r}): the attributes belong to another catalog")
    index = np.arange(1, data.n_items + 1)
    cold = data.cold_items[1:]
    return pd.DataFrame({
        "item": ids.to_numpy(),
        "category": attrs.loc[ids, "category"].to_numpy(),
        "train_count": data.train_counts[1:],
        "group": np.where(cold, "cold", "popular"),
    }, index=pd.Index(index, name="index"))


def dominant_category(data: SequenceData, items: pd.DataFrame, split: str = "test"
                      ) -> np.ndarray:
    """Per user, the most frequent category among the items of the `split` input (the last
    ``max_len`` items before the target); ties go to the category of the most recent item."""
    inputs = data.eval_set(split).inputs
    cats = items["category"].to_numpy()
    out = np.empty(len(inputs), dtype=object)
    for u, row in enumerate(inputs):
        seq = [cats[i - 1] for i in row[row > 0]]
        values, counts = np.unique(seq, return_counts=True)
        tied = set(values[counts == counts.max()])
        out[u] = next(c for c in reversed(seq) if c in tied)
    return out


def has_cold_input(data: SequenceData, split: str = "test") -> np.ndarray:
    """Per user: whether the `split` input holds at least one cold item."""
    return data.cold_items[data.eval_set(split).inputs].any(axis=1)


def item_groups(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """The item groups the numbers are reported for: popular, cold, all (boolean masks)."""
    group = items["group"].to_numpy()
    return {"popular items": group == "popular", "cold items": group == "cold",
            "all items": np.ones(len(group), dtype=bool)}


def user_groups(data: SequenceData, split: str = "test") -> dict[str, np.ndarray]:
    """All users, and those whose `split` input holds a cold item (the paper's "users with
    cold items")."""
    cold = has_cold_input(data, split)
    return {"all users": np.ones(len(cold), dtype=bool),
            "users with a cold item in their input": cold}


# -- numbers ---------------------------------------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def knn_purity(x: np.ndarray, labels: Sequence, k: int = K_NEIGHBOURS) -> np.ndarray:
    """Per point, the share of its `k` nearest other points (cosine similarity in the original
    space) that carry its label. Exact ties in similarity are broken by index."""
    x = _normalise(x)
    labels = np.asarray(labels)
    n = len(x)
    if len(labels) != n:
        raise ValueError(f"{n} vectors but {len(labels)} labels")
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be in 1..{n - 1} (the number of other points)")
    out = np.empty(n, dtype=np.float64)
    for b0 in range(0, n, 1024):
        sim = x[b0 : b0 + 1024] @ x.T
        rows = np.arange(len(sim))
        sim[rows, b0 + rows] = -np.inf  # a point is not its own neighbour
        nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out[b0 : b0 + 1024] = (labels[nn] == labels[b0 : b0 + 1024, None]).mean(axis=1)
    return out


def silhouettes(x: np.ndarray, labels: Sequence) -> np.ndarray:
    """Per point, the silhouette of its label (cosine distance; sklearn's definition)."""
    from sklearn.metrics import silhouette_samples

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("the silhouette needs at least two labels")
    return silhouette_samples(np.asarray(x, dtype=np.float64), labels, metric="cosine")


def chance_purity(labels: Sequence, group: np.ndarray | None = None) -> float:
    """Expected purity of `group`'s points if neighbours were drawn at random: the share of
    the other points that carry the point's label, averaged."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    share = dict(zip(values.tolist(), ((counts - 1) / (len(labels) - 1)).tolist(), strict=True))
    sel = labels if group is None else labels[group]
    return float(np.mean([share[v] for v in sel.tolist()])) if len(sel) else math.nan


@dataclass(kw_only=True)
class PairedItems(PairedDifference):
    """Model A vs model B on the same points (items or users): mean per-point score,
    difference, bootstrap CI, sign-flip permutation p."""

    what: str
    n: int


def paired_items(a: np.ndarray, b: np.ndarray, what: str = "purity", seed: int = 0
                 ) -> PairedItems:
    """Paired bootstrap over points (95% CI of the mean difference, `N_RESAMPLES` draws) and a
    two-sided sign-flip permutation test of "no difference"."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"two equal-length 1-D arrays are needed, got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(N_RESAMPLES, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    if not np.any(d):
        p = 1.0
    else:
        signs = rng.choice((-1.0, 1.0), size=(N_RESAMPLES, len(d)))
        null = np.abs((signs * d).mean(axis=1))
        p = float((1 + np.sum(null >= abs(d.mean()) - 1e-12)) / (N_RESAMPLES + 1))
    return PairedItems(float(a.mean()), float(b.mean()), float(d.mean()), float(lo), float(hi), p,
                       what=what, n=len(d))


def cluster_scores(
    vectors: Mapping[str, Sequence[np.ndarray]],
    labels: Sequence,
    groups: Mapping[str, np.ndarray],
    k: int = K_NEIGHBOURS,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Purity and silhouette per model and group of points.

    `vectors`: model -> one matrix per seed (same points, same order as `labels`); per-point
    scores are averaged over the seeds. `groups`: name -> boolean mask of the points to report
    (neighbours are always searched among all points). Returns the table (model, group ->
    n, purity, chance purity, silhouette) and per model the per-point seed-averaged purity and
    silhouette, and the purity per seed ("purity per seed", [seeds, points], for the seeds
    rule of `purity_sentence`).
    """
    labels = np.asarray(labels)
    rows, per_point = [], {}
    for model, mats in vectors.items():
        if not mats:
            raise ValueError(f"no vectors for {model}")
        purity_seeds = np.stack([knn_purity(m, labels, k) for m in mats])
        purity = purity_seeds.mean(axis=0)
        sil = np.mean([silhouettes(m, labels) for m in mats], axis=0)
        per_point[model] = {"purity": purity, "silhouette": sil,
                            "purity per seed": purity_seeds}
        for name, mask in groups.items():
            mask = np.asarray(mask, dtype=bool)
            rows.append({
                "model": model, "group": name, "n": int(mask.sum()), "seeds": len(mats),
                f"purity@{k}": float(purity[mask].mean()) if mask.any() else math.nan,
                "chance purity": chance_purity(labels, mask),
                "silhouette": float(sil[mask].mean()) if mask.any() else math.nan,
            })
    return pd.DataFrame(rows).set_index(["model", "group"]), per_point


def purity_sentence(
    per_point: Mapping[str, Mapping[str, np.ndarray]],
    mask: np.ndarray,
    group: str,
    model_a: str = "MMSR",
    model_b: str = "IDSR",
    converged_a: bool = True,
    converged_b: bool = True,
    k: int = K_NEIGHBOURS,
    by: str = "category",
) -> str:
    """The sentence the numbers allow about `group`'s points: "<A>'s cold items are grouped by
    category (purity x vs y for <B>)" only when the paired test over those points holds, with
    several seeds a side also over seeds and points (a gap one seed reverses is not a finding
    about the models' recipes), and both models converged."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return f"No {group}: nothing to compare."
    t = paired_items(per_point[model_a]["purity"][mask], per_point[model_b]["purity"][mask])
    seeds_a = per_point[model_a].get("purity per seed")
    seeds_b = per_point[model_b].get("purity per seed")
    seeds_note = ""
    if seeds_a is not None and seeds_b is not None and min(len(seeds_a), len(seeds_b)) > 1:
        t.seed_ci_low, t.seed_ci_high = seed_and_user_ci(seeds_a[:, mask], seeds_b[:, mask])
        seeds_note = (f", seeds+{group} CI {t.seed_ci_low:+.3f}..{t.seed_ci_high:+.3f} over "
                      f"{len(seeds_a)}+{len(seeds_b)} seeds")
    how = (f"paired bootstrap over {t.n} {group}, 95% CI of the difference "
           f"{t.ci_low:+.3f}..{t.ci_high:+.3f}, sign-flip permutation p={t.p_value:.2g}"
           f"{seeds_note}")
    nums = f"purity@{k} {t.mean_a:.3f} vs {t.mean_b:.3f} for {model_b}"
    if not (converged_a and converged_b):
        which = " and ".join(n for n, c in ((model_a, converged_a), (model_b, converged_b))
                             if not c)
        return f"{group}: no claim, {which} did not converge ({nums}; {how})."
    if not t.significant:
        why = ("; over seeds and points the CI includes 0: the gap depends on the training "
               "seeds" if t.seeds_disagree else "")
        return (f"{group}: no significant difference in {by} purity between {model_a} and "
                f"{model_b} ({nums}; {how}{why}).")
    better, worse = (model_a, model_b) if t.diff > 0 else (model_b, model_a)
    hi, lo = max(t.mean_a, t.mean_b), min(t.mean_a, t.mean_b)
    return (f"{better}'s {group} are grouped by {by} (purity@{k} {hi:.3f} vs {lo:.3f} for "
            f"{worse}; {how}).")


# -- pictures --------------------------------------------------------------------------------------
# t-SNE sizes per profile: (items, users, iterations); None = every point. Smoke stays at a few
# hundred points and a shorter run so the notebook's smoke test takes seconds.
MAP_SIZES = {"smoke": (300, 300, 500), "cpu": (None, 1000, 1000), "paper": (1000, 1000, 1000)}


# notebook 10's models: Table IV's SASRec rows (its plan section, `plan._nb10`, and `mmsr grid 10
# --claims` read the same runs)
MODEL_ROWS = {"IDSR": ("SASRec", "IDSR"), "MMSR": ("SASRec", "MMSR")}
RUNS_SECTION = "Table IV IDSR/MMSR SASRec"

# the groups notebook 10 states a sentence about (its figures show every group)
ITEM_SENTENCE_GROUPS = ("cold items", "popular items")
USER_SENTENCE_GROUPS = (("all users", "users"),
                        ("users with a cold item in their input", "users with a cold item"))


def item_claims(vectors: ModelVectors, items: pd.DataFrame, is_converged: Mapping[str, bool]
                ) -> tuple[pd.DataFrame, list[str]]:
    """Notebook 10's item numbers (`cluster_scores` by category per group of `item_groups`)
    and its sentence per group of `ITEM_SENTENCE_GROUPS`, MMSR against IDSR."""
    groups = item_groups(items)
    scores, points = cluster_scores(vectors.items, items["category"], groups)
    return scores, [purity_sentence(points, groups[g], g, "MMSR", "IDSR",
                                    is_converged["MMSR"], is_converged["IDSR"])
                    for g in ITEM_SENTENCE_GROUPS]


def user_claims(vectors: ModelVectors, items: pd.DataFrame, is_converged: Mapping[str, bool]
                ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Notebook 10's user numbers (by each user's dominant category, per group of
    `user_groups`), the dominant categories, and its sentence per `USER_SENTENCE_GROUPS`."""
    dominant = dominant_category(vectors.data, items)
    groups = user_groups(vectors.data)
    scores, points = cluster_scores(vectors.users, dominant, groups)
    return scores, dominant, [purity_sentence(points, groups[g], label, "MMSR", "IDSR",
                                              is_converged["MMSR"], is_converged["IDSR"],
                                              by="dominant category")
                              for g, label in USER_SENTENCE_GROUPS]


def map_sizes(profile: str, max_items: int | None = None, max_users: int | None = None,
              iterations: int | None = None) -> tuple[int | None, int | None, int]:
    """Points and iterations of the t-SNE maps: the caller's values, else the profile's
    (`MAP_SIZES`; the paper maps 1,000 items)."""
    if profile not in MAP_SIZES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(MAP_SIZES)}")
    items, users, iters = MAP_SIZES[profile]
    return (items if max_items is None else max_items,
            users if max_users is None else max_users,
            iters if iterations is None else iterations)


def subsample(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `limit` of `n` points (all when `limit` is None or >= n)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0,
            max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE (scikit-learn, cosine, PCA init, fixed `seed`): a picture, not a measurement."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                random_state=seed, max_iter=max_iter).fit_transform(x)


def _scatter_by(ax: plt.Axes, xy: np.ndarray, labels: np.ndarray, colours: Mapping | None,
                size: float) -> None:
    values = list(dict.fromkeys(sorted(labels.tolist())))
    cmap = plt.get_cmap("tab10")
    for i, v in enumerate(values):
        sel = labels == v
        colour = colours.get(v, cmap(i % 10)) if colours else cmap(i % 10)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=colour, alpha=0.75, label=str(v),
                   linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_item_maps(coords: Mapping[str, np.ndarray], items: pd.DataFrame,
                   scores: pd.DataFrame | None = None, k: int = K_NEIGHBOURS) -> plt.Figure:
    """Figure 4: per model a row, coloured by popular vs cold (left) and by category (right);
    the titles carry the purity of each group when `scores` (`cluster_scores`) is given."""
    fig, axes = plt.subplots(len(coords), 2, figsize=(10, 4.6 * len(coords)), squeeze=False)
    for (model, xy), row in zip(coords.items(), axes, strict=True):
        group = items["group"].to_numpy()
        _scatter_by(row[0], xy, group, GROUP_COLOURS, 9)
        _scatter_by(row[1], xy, items["category"].to_numpy(), None, 9)
        note = ""
        if scores is not None:
            note = ", ".join(
                f"{g} purity@{k} {scores.loc[(model, g), f'purity@{k}']:.2f} "
                f"(chance {scores.loc[(model, g), 'chance purity']:.2f})"
                for g in ("popular items", "cold items") if (model, g) in scores.index)
        row[0].set_title(f"{model} items: popular vs cold\n{note}", fontsize=9)
        row[1].set_title(f"{model} items by category", fontsize=9)
        row[0].legend(fontsize=7, markerscale=2)
        row[1].legend(fontsize=6, markerscale=2, ncol=2)
    fig.tight_layout()
    return fig


def plot_user_maps(coords: Mapping[str, np.ndarray], dominant: np.ndarray,
                   scores: pd.DataFrame | None = None, k: int = K_NEIGHBOURS) -> plt.Figure:
    """Figure 5: users per model, coloured by the dominant category of their input."""
    fig, axes = plt.subplots(1, len(coords), figsize=(5.2 * len(coords), 4.6), squeeze=False)
    for (model, xy), ax in zip(coords.items(), axes[0], strict=True):
        _scatter_by(ax, xy, np.asarray(dominant), None, 9)
        note = ""
        if scores is not None and (model, "all users") in scores.index:
            row = scores.loc[(model, "all users")]
            note = f"\npurity@{k} {row[f'purity@{k}']:.2f} (chance {row['chance purity']:.2f})"
        ax.set_title(f"{model} users by dominant category{note}", fontsize=9)
        ax.legend(fontsize=6, markerscale=2, ncol=2)
    fig.tight_layout()
    return fig
