"""The embedded synthetic catalog: determinism, shape of the data, modality split, domains."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mmsr_lib.config import SynthConfig
from mmsr_lib.data import synthetic as syn
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.images import ImageStore

SMALL = dict(n_users=250, n_items=160, mean_seq_len=12.0, image_size=24)


def small(**kw) -> SynthConfig:
    return SynthConfig(**(SMALL | kw))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = syn.generate_catalog(small(), tmp_path_factory.mktemp("syn") / "source")
    return load_dataset(root), syn.load_item_attributes(root)


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z'\-]*", text.lower()))


# -- determinism ---------------------------------------------------------------------------
def test_same_seed_identical_files_different_seed_different(tmp_path):
    a = syn.generate_catalog(small(), tmp_path / "a")
    b = syn.generate_catalog(small(), tmp_path / "b")
    c = syn.generate_catalog(small(seed=1), tmp_path / "c")
    for name in ("interactions.tsv", "items.tsv", "images.npy", syn.ATTRIBUTES_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() != (c / name).read_bytes(), name
    meta_a, meta_b = (json.loads((d / "meta.json").read_text()) for d in (a, b))
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b
    assert load_dataset(a).fingerprint() == load_dataset(b).fingerprint()


def test_meta_records_knobs_and_says_synthetic(catalog):
    raw, _ = catalog
    assert raw.meta["synthetic"] is True and raw.meta["seed"] == 0
    assert raw.meta["knobs"] == small().__dict__
    assert raw.meta["image_size"] == 24 and raw.meta["n_users"] == 250
    assert raw.skipped == {}


def test_ensure_catalog_reuses_and_keys_on_knobs(tmp_path):
    first = syn.ensure_catalog(small(), tmp_path)
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert syn.ensure_catalog(small(), str(tmp_path)) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    other = syn.ensure_catalog(small(drift=0.5), tmp_path)
    assert other != first and other.parent == first.parent


# -- shape of the interaction data ----------------------------------------------------------
def test_lengths_timestamps_and_long_tail():
    cfg = small(n_users=1500, n_items=1000, mean_seq_len=18.0)
    rng = np.random.default_rng(0)
    attrs = syn.make_items(cfg, rng)
    inter = syn.simulate_interactions(cfg, attrs, rng)
    lengths = np.bincount(inter["user"], minlength=cfg.n_users)
    assert lengths.min() >= 5
    assert abs(lengths.mean() - 18.0) < 1.5
    assert lengths.max() > 3 * lengths.mean()  # long-tailed
    same_user = inter["user"][1:] == inter["user"][:-1]
    assert (np.diff(inter["timestamp"])[same_user] > 0).all()
    counts = np.bincount(inter["item"], minlength=cfg.n_items)
    assert (counts < 10).sum() > 0.1 * cfg.n_items  # plenty of rare items ...
    assert counts.max() > 10 * np.median(counts)  # ... and a popular head
    assert counts[attrs["tail"]].mean() < 0.2 * counts[~attrs["tail"]].mean()  # cold_share


def test_cold_share_makes_more_rare_items():
    def rare(cold_share: float) -> int:
        cfg = small(n_users=1000, n_items=300, cold_share=cold_share)
        rng = np.random.default_rng(0)
        inter = syn.simulate_interactions(cfg, syn.make_items(cfg, rng), rng)
        return int((np.bincount(inter["item"], minlength=300) < 10).sum())

    assert rare(0.6) > rare(0.0) + 30


def test_order_matters_complement_and_drift():
    def transition_stats(**kw) -> tuple[float, float]:
        cfg = small(n_users=800, n_items=300, **kw)
        rng = np.random.default_rng(0)
        attrs = syn.make_items(cfg, rng)
        inter = syn.simulate_interactions(cfg, attrs, rng)
        cat = attrs["category"][inter["item"]]
        same = inter["user"][1:] == inter["user"][:-1]
        prev, nxt = cat[:-1][same], cat[1:][same]
        return float((syn.COMPLEMENT[prev] == nxt).mean()), float((prev == nxt).mean())

    comp_on, _ = transition_stats(complement=0.5)
    comp_off, stay_slow = transition_stats(complement=0.0, drift=0.05)
    _, stay_fast = transition_stats(complement=0.0, drift=0.9)
    assert comp_on > 0.45 and comp_off < 0.2
    assert stay_slow > stay_fast + 0.3  # a slowly drifting interest keeps the category


def test_choices_depend_on_image_only_and_text_only_attributes():
    """Users concentrate on some patterns (image only), materials and styles (text only)."""
    cfg = small(n_users=600, n_items=800, mean_seq_len=18.0)
    rng = np.random.default_rng(0)
    attrs = syn.make_items(cfg, rng)
    inter = syn.simulate_interactions(cfg, attrs, rng)
    df = pd.DataFrame({"user": inter["user"]}
                      | {k: attrs[k][inter["item"]] for k in ("pattern", "material", "style")})

    def top_share(frame: pd.DataFrame, col: str) -> float:
        return frame.groupby("user")[col].agg(
            lambda s: s.value_counts(normalize=True).iloc[0]).mean()

    shuffle = np.random.default_rng(1)
    for col in ("pattern", "material", "style"):
        baseline = top_share(df.assign(**{col: shuffle.permutation(df[col].to_numpy())}), col)
        assert top_share(df, col) > baseline + 0.08, col


# -- modalities ----------------------------------------------------------------------------
def test_text_never_mentions_the_pattern(catalog):
    raw, attrs = catalog
    words = set().union(*(tokens(t) for t in raw.items["text"]))
    assert not words & syn.PATTERN_WORDS
    assert words <= syn.VOCABULARY
    assert not syn.VOCABULARY & syn.PATTERN_WORDS


def test_text_carries_category_colour_material_style_subject_to_dropout():
    rng = np.random.default_rng(0)
    attrs = syn.make_items(small(), rng)
    colour_names = list(syn.COLOURS)
    full = syn.describe_items(attrs, 0.0, np.random.default_rng(1))
    for i, text in enumerate(full):
        t = tokens(text)
        assert t & set(syn.CATEGORY_WORDS[syn.CATEGORIES[attrs["category"][i]]])
        assert t & set(syn.COLOUR_WORDS[colour_names[attrs["colour"][i]]])
        assert t & set(syn.MATERIAL_WORDS[syn.MATERIALS[attrs["material"][i]]])
        assert t & set(syn.STYLE_WORDS[syn.STYLES[attrs["style"][i]]])
    none = syn.describe_items(attrs, 1.0, np.random.default_rng(1))
    colour_words = {w for ws in syn.COLOUR_WORDS.values() for w in ws}
    material_words = {w for ws in syn.MATERIAL_WORDS.values() for w in ws}
    assert not any(tokens(t) & (colour_words | material_words) for t in none)
    assert len(set(full)) > 0.5 * len(full)  # synonyms and templates vary the wording


def base_attrs(n: int) -> dict[str, np.ndarray]:
    return {
        "category": np.zeros(n, np.int64), "colour": np.full(n, 5),
        "pattern": np.zeros(n, np.int64),
        "material": np.zeros(n, np.int64), "style": np.zeros(n, np.int64),
        "scale": np.full(n, 0.8), "cx": np.zeros(n), "cy": np.zeros(n),
        "brightness": np.ones(n), "background": np.full(n, 230),
    }


def test_images_differ_by_pattern_not_by_text_only_attributes():
    n = len(syn.PATTERNS)
    attrs = base_attrs(n)
    attrs["pattern"] = np.arange(n)
    imgs = syn.render_items(attrs, 32, 0.0, np.random.default_rng(0))
    assert imgs.shape == (n, 32, 32, 3) and imgs.dtype == np.uint8
    for i in range(n):
        for j in range(i + 1, n):
            assert (imgs[i] != imgs[j]).any(-1).mean() > 0.05, (syn.PATTERNS[i], syn.PATTERNS[j])
    attrs = base_attrs(2)
    attrs["material"] = np.array([0, 3])
    attrs["style"] = np.array([1, 4])
    a, b = syn.render_items(attrs, 32, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)  # material and style are never drawn


def test_images_differ_by_category_and_colour_and_noise_knob():
    n = len(syn.CATEGORIES)
    attrs = base_attrs(n)
    attrs["category"] = np.arange(n)
    shapes = syn.render_items(attrs, 32, 0.0, np.random.default_rng(0))
    masks = (shapes != 230).any(-1)
    assert len({m.tobytes() for m in masks}) == n  # eight distinct silhouettes
    attrs = base_attrs(2)
    attrs["colour"] = np.array([0, 5])
    red, blue = syn.render_items(attrs, 32, 0.0, np.random.default_rng(0))
    assert red[16, 16, 0] > 200 and blue[16, 16, 2] > 200
    clean = syn.render_items(base_attrs(1), 32, 0.0, np.random.default_rng(0))[0]
    noisy = syn.render_items(base_attrs(1), 32, 0.2, np.random.default_rng(0))[0]
    assert (clean[0, 0] == 230).all()
    assert np.abs(noisy.astype(int) - clean).mean() > 10


def test_catalog_images_match_attributes(catalog):
    raw, attrs = catalog
    store = ImageStore(raw.image_path)
    items = raw.items.merge(attrs, on="item")
    assert len(store) == len(items) == 160
    imgs = store.get(items["image"].to_numpy()).astype(float)
    centre = imgs[:, 10:14, 10:14].mean(axis=(1, 2))
    for colour, rgb in (("red", 0), ("blue", 2), ("green", 1)):
        sel = (items["colour"] == colour).to_numpy() & (items["shape"] != "annulus").to_numpy()
        if sel.any():
            assert (centre[sel].argmax(axis=1) == rgb).mean() > 0.6, colour


# -- domains and knobs ---------------------------------------------------------------------
def test_target_domain_shares_vocabulary_not_items(tmp_path, catalog):
    src, src_attrs = catalog
    root = syn.generate_catalog(small(domain="target"), tmp_path / "target")
    tgt, tgt_attrs = load_dataset(root), syn.load_item_attributes(root)
    assert not set(src.items["item"]) & set(tgt.items["item"])
    assert not set(src.interactions["user"]) & set(tgt.interactions["user"])
    src_words = set().union(*(tokens(t) for t in src.items["text"]))
    tgt_words = set().union(*(tokens(t) for t in tgt.items["text"]))
    assert tgt_words <= syn.VOCABULARY and len(src_words & tgt_words) > 0.8 * len(tgt_words)
    assert set(tgt_attrs["category"]) == set(src_attrs["category"])
    mix = {d: a["category"].value_counts(normalize=True) for d, a in
           (("s", src_attrs), ("t", tgt_attrs))}
    assert mix["s"]["bowl"] > mix["t"]["bowl"] and mix["s"]["scarf"] < mix["t"]["scarf"]
    assert tgt.meta["domain"] == "target"


@pytest.mark.parametrize("field,value", [("domain", "other"), ("n_items", 5), ("drift", 1.5),
                                         ("mean_seq_len", 3.0), ("image_size", 4)])
def test_invalid_knobs_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"data\.synth\.{field}="):
        syn.generate_catalog(small(**{field: value}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cpu_default_catalog_builds(tmp_path):
    """The `cpu` profile's catalog (3000 users, 1200 items, 64 px) builds without a problem."""
    root = syn.generate_catalog(SynthConfig(), tmp_path / "cpu")
    raw = load_dataset(root)
    assert raw.meta["n_users"] == 3000 and raw.meta["n_items"] == 1200
    assert raw.meta["image_size"] == 64
    assert 15 < raw.meta["n_interactions"] / 3000 < 21
