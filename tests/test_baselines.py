"""The Table V baselines (FDSA, CARCA++, VQRec, MoRec++): registered recommenders that train and
evaluate through the same trainer and full-ranking evaluator as every other row.

For each: shapes and finite values, causality (a later item never changes an earlier position's
logits), left-padding invariance, a full-ranking scorer that agrees with a per-user brute-force
computation, a one-epoch run through `run_experiment` (and one through the CLI), and for the
models that encode item content, equal losses and gradients in fast and plain item encoding.

Everything runs on the smoke catalog (~200 items, 32-pixel images) with the tiny random-init
encoders; `text_max_tokens=24` keeps every token of that catalog's texts.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from model_helpers import batch_of, step_losses_and_grads

from mmsr_lib.baselines import vqrec
from mmsr_lib.baselines.carca import CARCA
from mmsr_lib.baselines.fdsa import FDSA
from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.multimodal import MultiModalItemEncoder
from mmsr_lib.recommender import Recommender, SequentialRecommender
from mmsr_lib.runs.runner import build_model, load_data, run_experiment
from mmsr_lib.util import registry

NAMES = ["fdsa", "carca++", "carca++dot", "vqrec", "morec++"]  # carca++dot: our ablation
# encode text + images end to end (fast path, cache)
CONTENT = ["fdsa", "carca++", "carca++dot", "morec++"]
# mask_ratio=0: the MAE's frozen part is deterministic, so it is cached and fast == plain
BASE = ("model.text_max_tokens=24", "model.mask_ratio=0.0")
LOSS_ATOL = 1e-5
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, SequenceData]:
    cache = tmp_path_factory.mktemp("smoke-data")
    cfg = profile_config("smoke").override(f"data.cache_dir={cache}")
    return cfg, load_data(cfg.data)


@pytest.fixture(scope="module")
def models(smoke) -> dict[str, Recommender]:
    """One model per baseline, built once for the read-only tests (each sets its own mode)."""
    return {name: make(smoke, name)[1] for name in NAMES}


def make(smoke, name: str, *overrides: str, cache: bool = True) -> tuple[RunConfig, Recommender]:
    base, data = smoke
    cfg = base.override(*BASE, f"model.recommender={name}", *overrides)
    return cfg, build_model(cfg, data, "cpu", cache=cache)


def position_logits(model: Recommender, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, L] of each position's target and negative, for every kind of model here."""
    if hasattr(model, "position_logits"):
        return model.position_logits(batch)
    assert isinstance(model, SequentialRecommender)
    x, pos, neg = model.embed(batch["inputs"], batch["targets"], batch["negatives"])
    h = model.sequence_model(x, batch["inputs"] > 0)
    return (h * pos).sum(-1), (h * neg).sum(-1)


# -- registry and configuration ------------------------------------------------------------------
def test_names_aliases_and_the_config_fields_each_reads(smoke) -> None:
    assert [n for n in registry.names("recommender") if n in NAMES] == NAMES  # Table V's order
    for alias, name in {"FDSA": "fdsa", "carca": "carca++", "CARCA++": "carca++",
                        "carca-dot": "carca++dot", "VQRec": "vqrec", "morec": "morec++", "MoRec++": "morec++"}.items():
        assert registry.canonical("recommender", alias) == name
    base, _ = smoke
    for name in CONTENT:
        m = base.override(f"model.recommender={name}").resolved().model
        assert m.text_encoder and m.vision_encoder and m.finetune == "top"
        assert m.item_encoder is None and m.fusion is None and m.sequence == "sasrec"
    m = base.override("model.recommender=vqrec").resolved().model
    assert m.text_encoder and m.text_pooling
    assert m.vision_encoder is None and m.finetune is None and m.item_encoding is None
    # an alias and its name are one run
    assert base.override("model.recommender=carca").hash() == \
        base.override("model.recommender=carca++").hash()


@pytest.mark.parametrize("name", CONTENT)
def test_content_models_need_images_and_say_so(smoke, name) -> None:
    base, data = smoke
    cfg = base.override(*BASE, f"model.recommender={name}").resolved()
    text_only = dataclasses.replace(data, image_path=None)
    with pytest.raises(ValueError, match=rf"model.recommender='{re.escape(name)}'.*no images"):
        registry.create("recommender", name, cfg, text_only)


# -- shapes, gradients, the fast path ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_shapes_finite_loss_and_gradients(smoke, name) -> None:
    _, data = smoke
    _, model = make(smoke, name)
    batch = batch_of(data)
    model.train()
    pos, neg = position_logits(model, batch)
    assert pos.shape == neg.shape == batch["inputs"].shape
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None, f"{name}: trainable parameter {n} got no gradient"
    model.eval()
    with torch.no_grad():
        scores = model.scorer()(batch["inputs"])
    assert scores.shape == (len(batch["inputs"]), data.n_items + 1)
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", NAMES)
def test_loss_under_bf16_autocast(smoke, models, name) -> None:
    """The trainer runs the loss under bf16 autocast on CUDA; mixed dtypes (float32 ID rows next
    to bf16 features, attention masks) must work. CPU autocast exercises the same casts."""
    model = models[name].train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(batch_of(smoke[1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", CONTENT)
def test_content_models_take_the_fast_path_with_the_frozen_prefix_cache(smoke, name) -> None:
    _, model = make(smoke, name)
    enc = model.item_encoder
    assert isinstance(enc, MultiModalItemEncoder) and not enc.plain
    assert {b.kind for b in enc.branches()} == {"text", "vision"}
    assert all(b.cache is not None for b in enc.branches())
    # top-k fine-tuning: the encoders' top blocks are the "encoder" parameter group
    enc_params = model.encoder_parameters()
    assert enc_params and all(p.requires_grad for p in enc_params)
    frozen = [p for b in enc.branches() for p in b.encoder.parameters() if not p.requires_grad]
    assert frozen


@pytest.mark.parametrize("name", CONTENT)
def test_fast_and_plain_give_the_same_loss_and_gradients(smoke, name) -> None:
    """Same weights and batch, train mode, dropout 0: fast (distinct items + frozen-prefix
    cache) and plain (every slot through every encoder) agree to float rounding."""
    _, fast = make(smoke, name, "model.dropout=0.0")
    _, plain = make(smoke, name, "model.dropout=0.0", "model.item_encoding=plain")
    assert plain.item_encoder.plain and not fast.item_encoder.plain
    assert all(b.cache is None for b in plain.item_encoder.branches())
    plain.load_state_dict(fast.state_dict())
    batch = batch_of(smoke[1], n_users=6)
    grads = step_losses_and_grads((fast, plain), batch, LOSS_ATOL)
    for n, g in grads[0].items():
        assert (g is None) == (grads[1][n] is None), n
        if g is not None:
            torch.testing.assert_close(g, grads[1][n], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=n)


# -- causality and padding -----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_later_item_never_changes_an_earlier_position(smoke, models, name) -> None:
    _, data = smoke
    model = models[name].eval()
    batch = batch_of(data, n_users=8, index=1)
    n = batch["inputs"].shape[1]
    gen = torch.Generator().manual_seed(3)
    for cut in (n // 2, n - 3):
        changed = {}
        late = torch.arange(n) >= cut
        for key in ("inputs", "targets", "negatives"):
            real = (batch[key] > 0) & late
            new = torch.randint(1, data.n_items + 1, batch[key].shape, generator=gen)
            changed[key] = torch.where(real, new, batch[key])
        assert (changed["inputs"] != batch["inputs"]).any()
        with torch.no_grad():
            before, after = position_logits(model, batch), position_logits(model, changed)
        for b, a in zip(before, after, strict=True):
            torch.testing.assert_close(a[:, :cut], b[:, :cut], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(a[:, cut:], b[:, cut:])


@pytest.mark.parametrize("name", NAMES)
def test_extra_left_padding_changes_nothing(smoke, models, name) -> None:
    _, data = smoke
    model = models[name].eval()
    batch = {k: v[:, 4:] if v.ndim == 2 else v for k, v in batch_of(data, 8, 2).items()}
    pad = {k: torch.cat([v.new_zeros(len(v), 4), v], 1) if v.ndim == 2 else v
           for k, v in batch.items()}
    with torch.no_grad():
        for a, b in zip(position_logits(model, batch), position_logits(model, pad), strict=True):
            valid = batch["targets"] > 0
            torch.testing.assert_close(b[:, 4:][valid], a[valid], atol=1e-5, rtol=1e-5)
        scorer = model.scorer()
        torch.testing.assert_close(scorer(pad["inputs"]).clone()[:, 1:],
                                   scorer(batch["inputs"]).clone()[:, 1:], atol=1e-5, rtol=1e-5)


# -- full ranking --------------------------------------------------------------------------------
def brute_force_scores(model: Recommender, inputs: torch.Tensor) -> torch.Tensor:
    """Scores [1, n_items] of every real item for one user, straight through the training path
    (no item table, no reordering, no chunking)."""
    items = torch.arange(1, model.n_items + 1)
    if isinstance(model, FDSA):
        h = model.states(inputs)[:, -1]
        return h @ model.ids(items).T
    if isinstance(model, CARCA):
        (x,) = model.embed(inputs)
        mask = inputs > 0
        states = model.profile(x, mask)
        (cand,) = model.embed(items.unsqueeze(0))
        if model.head is None:  # the dot-head ablation
            return states[:, -1] @ cand[0].T
        allowed = mask.unsqueeze(1).expand(1, len(items), -1)
        return model.head(cand, states, allowed)
    h = model.states(inputs)[:, -1]
    return h @ model.item_encoder(items).T


@pytest.mark.parametrize("name", NAMES)
def test_full_ranking_scorer_matches_brute_force_and_batching(smoke, models, name) -> None:
    _, data = smoke
    model = models[name].eval()
    ev = data.eval_set("test")
    inputs = torch.from_numpy(np.ascontiguousarray(ev.inputs[:6]))
    with torch.no_grad():
        scorer = model.scorer()
        scores = scorer(inputs).clone()
        assert scores.shape == (6, data.n_items + 1) and scores.dtype == torch.float64
        for u in range(len(inputs)):
            ref = brute_force_scores(model, inputs[u : u + 1]).double()
            torch.testing.assert_close(scores[u : u + 1, 1:], ref, atol=2e-5, rtol=1e-4)
            single = scorer(inputs[u : u + 1]).clone()
            torch.testing.assert_close(single, scores[u : u + 1], atol=1e-6, rtol=1e-6)


def test_carca_dot_ablation_differs_from_carca_only_in_its_head(smoke) -> None:
    """`carca++dot` is CARCA++ with the cross-attention scorer replaced by a dot product: the
    same parameters but the head's, initialised alike from the same seed (the head is built
    last), so the same item representations and profile states; logits are state . candidate."""
    _, data = smoke
    _, cross = make(smoke, "carca++", "model.dropout=0.0")
    _, dot = make(smoke, "carca++dot", "model.dropout=0.0")
    cross_state, dot_state = cross.state_dict(), dot.state_dict()
    assert dot.head is None and set(dot_state) == {k for k in cross_state
                                                   if not k.startswith("head.")}
    for k, v in dot_state.items():
        torch.testing.assert_close(v, cross_state[k], msg=k)
    batch = batch_of(data, n_users=6)
    cross.eval(), dot.eval()
    with torch.no_grad():
        x_cross = cross.embed(batch["inputs"], batch["targets"])
        x_dot = dot.embed(batch["inputs"], batch["targets"])
        for a, b in zip(x_cross, x_dot, strict=True):
            torch.testing.assert_close(a, b)
        states = dot.profile(x_dot[0], batch["inputs"] > 0)
        pos, _ = dot.position_logits(batch)
        torch.testing.assert_close(pos, (states * x_dot[1]).sum(-1))
    with pytest.raises(ValueError, match="unknown scoring head"):
        CARCA(cross.ids, cross.item_encoder, cross.profile, n_heads=1, head="bilinear")


def test_carca_scorer_chunks_the_catalog(smoke, models, monkeypatch) -> None:
    """Tiny score blocks (many item chunks per user batch) give the same scores, and so do user
    batches of another size (float32 profile states may differ in their last bit)."""
    from mmsr_lib.baselines import carca

    model = models["carca++"].eval()
    inputs = torch.from_numpy(np.ascontiguousarray(smoke[1].eval_set("valid").inputs[:5]))
    with torch.no_grad():
        whole = model.scorer()(inputs).clone()
        monkeypatch.setattr(carca, "SCORE_BLOCK_ELEMENTS", 7)
        chunked = model.scorer()(inputs).clone()
        small_batches = model.scorer(batch_size=2)(inputs).clone()
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(small_batches, whole, atol=1e-6, rtol=1e-6)


def test_carca_scorer_trimmed_groups_rank_as_the_plain_scorer(smoke, models, monkeypatch) -> None:
    """Users grouped by history length, each group over only the positions its members have
    (groups of 3 here, so groups differ in width; an empty history among them), score as every
    user over all positions: to float64 rounding, in the same order, row for row."""
    from mmsr_lib.baselines import carca

    model = models["carca++"].eval()
    inputs = torch.from_numpy(np.ascontiguousarray(smoke[1].eval_set("valid").inputs[:20]))
    inputs[7] = 0
    lengths = (inputs > 0).sum(1)
    assert len(set(lengths.tolist())) > 3 and lengths.max() == inputs.shape[1]
    monkeypatch.setattr(carca, "TRIM_GROUP", 3)
    widths: list[int] = []  # positions each scored group attends over
    score = carca.CarcaScorer._score

    def spy(self, k, *rest):
        widths.append(k.shape[2])
        return score(self, k, *rest)

    monkeypatch.setattr(carca.CarcaScorer, "_score", spy)
    with torch.no_grad():
        table = model.item_table()
        plain = carca.CarcaScorer(model, table, trim=False)(inputs).clone()
        assert widths == [inputs.shape[1]]
        trimmed = carca.CarcaScorer(model, table, trim=True)(inputs).clone()
    # groups of the shortest histories attend over fewer positions than max_len
    assert len(widths) == 1 + 7 and min(widths[1:]) < inputs.shape[1]
    torch.testing.assert_close(trimmed, plain, atol=1e-12, rtol=1e-12)
    assert torch.equal(trimmed.argsort(dim=1, stable=True), plain.argsort(dim=1, stable=True))
    assert torch.equal(trimmed[7], torch.full_like(trimmed[7], float(model.head.out.bias)))


# -- VQRec's codes -------------------------------------------------------------------------------
def test_vqrec_codes_are_deterministic_in_range_and_memoised(smoke, monkeypatch) -> None:
    base, data = smoke
    cfg = base.override(*BASE, "model.recommender=vqrec").resolved()
    codes, n_codes = vqrec.item_codes(cfg, data)
    assert codes.shape == (data.n_items + 1, min(vqrec.PQ_SUBVECTORS, 64))  # tiny-roberta: 64
    assert n_codes == vqrec.codebook_size(data.n_items) and 2 <= n_codes <= vqrec.PQ_CODEWORDS
    assert codes.min() >= 0 and codes.max() < n_codes and (codes[0] == 0).all()
    assert len(np.unique(codes[1:], axis=0)) > data.n_items // 2  # codes tell items apart
    assert vqrec.item_codes(cfg, data)[0] is codes  # memoised
    monkeypatch.setattr(vqrec, "_CODES", {})
    again, _ = vqrec.item_codes(cfg, data)
    assert again is not codes and np.array_equal(again, codes)
    # the recommender's initialisation does not depend on a memo hit or miss
    _, first = make(smoke, "vqrec")
    _, second = make(smoke, "vqrec")
    for (n, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), n
    assert torch.equal(first.item_encoder.codes, second.item_encoder.codes)


def test_vqrec_has_no_encoder_inside_and_can_train_only_its_codes(smoke) -> None:
    _, model = make(smoke, "vqrec")
    assert model.encoder_parameters() == []
    assert not any("backbone" in n for n in model.state_dict())
    assert "item_encoder.codes" not in model.state_dict()  # recomputed, not checkpointed
    model.train_codes_only()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["item_encoder.embedding.weight"]


def test_opq_beats_plain_pq_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 16)) * np.linspace(3.0, 0.1, 16)
    x = x @ np.linalg.qr(rng.standard_normal((16, 16)))[0]  # variance spread unevenly, rotated
    pq = vqrec.product_quantize(x, n_subvectors=8, n_codes=16, iterations=0)
    opq = vqrec.product_quantize(x, n_subvectors=8, n_codes=16, iterations=10)
    assert opq.error < 0.95 * pq.error
    np.testing.assert_allclose(opq.rotation @ opq.rotation.T, np.eye(16), atol=1e-8)
    assert np.array_equal(opq.codes, vqrec.product_quantize(x, 8, 16, 10).codes)
    assert opq.codes.shape == (600, 8) and opq.codes.max() < 16
    # uneven splits, fewer items than codewords, duplicate vectors
    small = vqrec.product_quantize(np.repeat(x[:3, :5], 4, axis=0), n_subvectors=2, n_codes=256)
    assert small.codes.shape == (12, 2) and small.codes.max() < small.n_codes <= 12
    with pytest.raises(ValueError, match="NaN"):
        vqrec.product_quantize(np.full((4, 3), math.nan))


# -- through the runner and the command line -----------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_through_run_experiment(smoke, name) -> None:
    base, _ = smoke
    cfg = base.override(f"model.recommender={name}", "train.epochs=1")
    result = run_experiment(cfg, progress=False)
    assert len(result["history"]) == 1 and math.isfinite(result["history"][0]["loss"])
    for split in ("valid", "test"):
        metrics = result["metrics"][split]
        assert set(metrics) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (10, 20, 50)}
        assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in metrics.values())
    assert result["extra"]["n_trainable"] > 0


def test_cli_trains_fdsa(smoke, capsys) -> None:
    from mmsr_lib.cli import main

    base, _ = smoke
    rc = main(["train", "--profile", "smoke", "--set", "model.recommender=fdsa",
               "--set", "train.epochs=1", "--set", f"data.cache_dir={base.data.cache_dir}"])
    assert rc == 0
    assert "fdsa" in capsys.readouterr().out.lower()
