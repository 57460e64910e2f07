"""Multi-modal item encoders inside the recommender: end-to-end gradients for every item encoder
and fusion, fast (distinct items + frozen-prefix cache) vs plain reference mode, the cache
itself, padding, optimiser groups and error messages.

Everything runs on the smoke synthetic catalog (~200 items, 32-pixel images) with the tiny
random-init encoders. Texts of that catalog have at most ~21 tokens, so `text_max_tokens=24`
keeps every token while making the steps cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_sequences
from model_helpers import batch_of, step_losses_and_grads, zero_dropout
from torch import nn

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.multimodal import MultiModalItemEncoder
from mmsr_lib.fusion import fusion_names
from mmsr_lib.recommender import Recommender
from mmsr_lib.runs.runner import build_model, load_data
from mmsr_lib.train import build_optimizer
from mmsr_lib.util import registry

# fast vs plain: the same float32 computation, only grouped differently (distinct items, cached
# frozen states), so the loss must agree to float rounding
LOSS_ATOL = 1e-5
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4

TEXT = ("model.item_encoder=text", "model.text_encoder=tiny-roberta")
VISION_VIT = ("model.item_encoder=vision", "model.vision_encoder=tiny-vit")
VISION_RESNET = ("model.item_encoder=vision", "model.vision_encoder=tiny-resnet")
# mask_ratio=0: no patch dropped, so the MAE frozen part is deterministic and cacheable
MM = ("model.item_encoder=mm", "model.text_encoder=tiny-roberta",
      "model.vision_encoder=tiny-mae", "model.mask_ratio=0.0")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, SequenceData]:
    """The smoke catalog, generated once for this module into its own temporary folder (an
    absolute cache_dir: the per-test MMSR_HOME is not set yet when a module fixture runs)."""
    cache = tmp_path_factory.mktemp("smoke-data")
    cfg = profile_config("smoke").override(f"data.cache_dir={cache}", "model.text_max_tokens=24")
    return cfg, load_data(cfg.data)


def make(smoke, *overrides: str, cache: bool = True) -> tuple[RunConfig, Recommender]:
    base, data = smoke
    cfg = base.override(*overrides)
    return cfg, build_model(cfg, data, "cpu", cache=cache)


def encoder_params(model: Recommender) -> list[tuple[str, nn.Parameter]]:
    enc = model.item_encoder
    return [(f"{b.kind}.{n}", p) for b in enc.branches() for n, p in b.encoder.named_parameters()]


# -- every item encoder and fusion trains end to end ------------------------------------------
SINGLE = {"text": TEXT, "vision-vit": VISION_VIT, "vision-resnet": VISION_RESNET}
CASES = [pytest.param(o, id=k) for k, o in SINGLE.items()]
CASES += [pytest.param((*MM, f"model.fusion={f}"), id=f"mm-{f}") for f in fusion_names()]
CASES += [pytest.param((*MM, "model.vision_encoder=tiny-resnet", "model.mask_ratio=none",
                        "model.fusion=merge_attn"), id="mm-resnet-merge_attn")]


@pytest.mark.parametrize("overrides", CASES)
def test_one_training_step_reaches_fusion_and_top_blocks_only(smoke, overrides) -> None:
    cfg, model = make(smoke, *overrides)
    enc = model.item_encoder
    assert isinstance(enc, MultiModalItemEncoder)
    # the fast path with a frozen-prefix cache on every branch (all of these are cacheable)
    assert all(b.cache is not None for b in enc.branches())
    model.train()
    loss = model.loss(batch_of(smoke[1]))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()

    head = enc.fusion if enc.fusion is not None else enc.proj
    for name, p in head.named_parameters():
        assert p.grad is not None, f"fusion/projection parameter {name} got no gradient"
    assert sum(p.grad.abs().sum() for p in head.parameters()) > 0

    params = encoder_params(model)
    trainable = [(n, p) for n, p in params if p.requires_grad]
    frozen = [(n, p) for n, p in params if not p.requires_grad]
    assert trainable and frozen, "top-k fine-tuning must leave both trainable and frozen blocks"
    for name, p in trainable:
        assert p.grad is not None, f"trainable encoder parameter {name} got no gradient"
    for b in enc.branches():  # every branch's top blocks learn something from this batch
        g = sum(p.grad.abs().sum() for p in b.encoder.parameters() if p.requires_grad)
        assert g > 0, f"the {b.kind} encoder's top blocks got an all-zero gradient"
    for name, p in frozen:
        assert p.grad is None, f"frozen encoder parameter {name} received a gradient"
    for name, p in model.sequence_model.named_parameters():
        assert p.grad is not None, f"sequence model parameter {name} got no gradient"


# -- fast (distinct items + cache) vs plain (every slot through every encoder) -----------------
EQUAL_CASES = {
    "text": TEXT,
    "vision-vit": VISION_VIT,
    "mm-merge_attn": (*MM, "model.fusion=merge_attn"),
    "mm-co_attn": (*MM, "model.fusion=co_attn"),
    "mm-gate+dnn": (*MM, "model.fusion=gate+dnn"),
}


@pytest.mark.parametrize("overrides", list(EQUAL_CASES.values()), ids=list(EQUAL_CASES))
def test_fast_and_plain_give_the_same_loss_and_gradients(smoke, overrides) -> None:
    """Same weights, same batch, train mode with every dropout at 0: equal loss (atol 1e-5) and
    equal gradients (atol 1e-5, rtol 1e-4). Transformer encoders only: a BatchNorm trained in
    the top blocks (ResNet) normalises with batch statistics, which legitimately differ when
    plain mode also feeds duplicates and padding through it."""
    _, fast = make(smoke, *overrides, "model.dropout=0.0")
    _, plain = make(smoke, *overrides, "model.dropout=0.0", "model.item_encoding=plain")
    assert plain.item_encoder.plain and not fast.item_encoder.plain
    assert all(b.cache is not None for b in fast.item_encoder.branches())
    assert all(b.cache is None for b in plain.item_encoder.branches())
    plain.load_state_dict(fast.state_dict())
    batch = batch_of(smoke[1], n_users=6)
    grads = step_losses_and_grads((fast, plain), batch, LOSS_ATOL)
    for name in grads[0]:
        g_fast, g_plain = grads[0][name], grads[1][name]
        assert (g_fast is None) == (g_plain is None), name
        if g_fast is not None:
            torch.testing.assert_close(g_fast, g_plain, atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


# -- length buckets --------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [TEXT, (*MM, "model.fusion=merge_attn")], ids=["text", "mm"])
def test_length_buckets_change_nothing_but_the_padding(smoke, overrides, monkeypatch) -> None:
    """Encoding distinct items in groups of similar text length gives the loss and gradients of
    one group, and each group is trimmed to its own longest text."""
    _, model = make(smoke, *overrides, "model.dropout=0.0")
    enc = model.item_encoder
    model.train()
    zero_dropout(model)
    batch = batch_of(smoke[1], n_users=16)
    ids = torch.unique(torch.cat([batch["inputs"], batch["targets"], batch["negatives"]], 1))
    ids = ids[ids > 0]
    monkeypatch.setattr(enc, "min_bucket", 8)
    groups = enc.length_groups(ids)
    assert len(groups) == enc.text_buckets
    assert sorted(torch.cat(groups).tolist()) == list(range(len(ids)))
    lengths = [enc.text.inputs.attention_mask[ids[g]].sum(1) for g in groups]
    assert all(a.max() <= b.min() for a, b in zip(lengths, lengths[1:], strict=False))
    assert lengths[0].max() < lengths[-1].max(), "the smoke texts vary in length"

    results = []
    for buckets in (1, 4):
        monkeypatch.setattr(enc, "text_buckets", buckets)
        model.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=LOSS_ATOL, rtol=0.0)
    assert results[0][1].keys() == results[1][1].keys()
    for name, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


def test_length_buckets_are_off_while_a_batchnorm_trains(smoke, monkeypatch) -> None:
    """BatchNorm statistics depend on which items share a call, so no grouping then."""
    _, model = make(smoke, *MM, "model.vision_encoder=tiny-resnet", "model.mask_ratio=none")
    enc = model.item_encoder
    monkeypatch.setattr(enc, "min_bucket", 8)
    ids = torch.arange(1, 101)
    model.train()
    assert len(enc.length_groups(ids)) == 1
    model.eval()
    assert len(enc.length_groups(ids)) == enc.text_buckets


# -- the frozen-prefix cache -------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [TEXT, VISION_RESNET, MM], ids=["text", "resnet", "mm"])
def test_cache_equals_the_frozen_part_recomputed(smoke, overrides) -> None:
    _, model = make(smoke, *overrides)
    enc = model.item_encoder
    model.train()  # the frozen part must be in eval mode (and so equal to the cache) even now
    ids = torch.arange(1, enc.n_items + 1)
    for b in enc.branches():
        assert b.cache is not None and len(b.cache) == enc.n_items + 1
        with torch.no_grad():
            fresh = b.frozen(ids)
        torch.testing.assert_close(b.cache.get(ids), fresh, atol=1e-6, rtol=1e-5)
        assert b.cache.get(torch.tensor([0])).abs().sum() == 0  # the padding row stays zero
    # and the cached forward is the uncached forward
    model.eval()
    some = torch.tensor([1, 7, 42, enc.n_items])
    with torch.no_grad():
        cached = enc(some)
        saved = [b.cache for b in enc.branches()]
        for b in enc.branches():
            b.cache = None
        uncached = enc(some)
        for b, c in zip(enc.branches(), saved, strict=True):
            b.cache = c
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)


def test_cache_refused_for_random_masking(smoke) -> None:
    # tiny-mae with the paper's default mask ratio (0.75): a new mask every step
    _, model = make(smoke, *MM, "model.mask_ratio=0.75", cache=False)
    enc = model.item_encoder
    assert enc.vision.encoder.mask_ratio == 0.75
    with pytest.raises(ValueError, match="mask"):
        enc.enable_cache("require")
    assert enc.enable_cache("auto") == ["text"]  # the text branch is still cached
    assert enc.text.cache is not None and enc.vision.cache is None
    # build_model takes the "auto" path by itself
    _, built = make(smoke, *MM, "model.mask_ratio=0.75")
    assert built.item_encoder.text.cache is not None and built.item_encoder.vision.cache is None
    # without a cache the step still trains, through the whole MAE
    loss = built.loss(batch_of(smoke[1]))
    assert torch.isfinite(loss)


def test_cache_refused_for_full_finetuning(smoke) -> None:
    _, model = make(smoke, *MM, "model.finetune=full", cache=False)
    enc = model.item_encoder
    with pytest.raises(ValueError, match="full"):
        enc.enable_cache("require")
    assert enc.enable_cache("auto") == []
    assert all(b.cache is None for b in enc.branches())
    _, built = make(smoke, *TEXT, "model.finetune=full")
    assert built.item_encoder.text.cache is None


def test_plain_mode_refuses_a_cache(smoke) -> None:
    _, model = make(smoke, *TEXT, "model.item_encoding=plain")
    with pytest.raises(ValueError, match="plain"):
        model.item_encoder.enable_cache("auto")


# -- padding and batch independence -----------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [MM, (*MM, "model.fusion=co_attn"), (*MM, "model.mask_ratio=0.75"), VISION_RESNET],
    ids=["mm-merge_attn", "mm-co_attn", "mm-mae-masked", "resnet"],
)
def test_padding_is_zero_and_batches_equal_single_items(smoke, overrides) -> None:
    """In eval mode an item's vector depends on the item only: not on the batch it is encoded
    with (fixed text width, masked pooling, MAE's fixed eval mask, BatchNorm running stats)."""
    _, model = make(smoke, *overrides)
    enc = model.item_encoder.eval()
    ids = torch.tensor([3, 17, 5, 120, 64, 1])
    with torch.no_grad():
        together = enc(ids)
        alone = torch.cat([enc(ids[i : i + 1]) for i in range(len(ids))])
        mixed = enc(torch.tensor([0, 17, 0, 0, 3]))
    assert together.shape == (len(ids), enc.dim)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert mixed[[0, 2, 3]].abs().sum() == 0
    torch.testing.assert_close(mixed[[1, 4]], together[[1, 0]], atol=1e-5, rtol=1e-5)
    # the recommender's embedding of a padded sequence: zero vectors in the padding slots
    seq = torch.tensor([[0, 0, 3, 17], [5, 1, 120, 64]])
    with torch.no_grad():
        (x,) = model.embed(seq)
    assert x[0, :2].abs().sum() == 0
    torch.testing.assert_close(x[1], together[[2, 5, 3, 4]], atol=1e-5, rtol=1e-5)


def test_plain_mode_also_maps_padding_to_zero(smoke) -> None:
    _, model = make(smoke, *MM, "model.item_encoding=plain")
    enc = model.item_encoder.eval()
    with torch.no_grad():
        out = enc(torch.tensor([0, 4, 0]))
    assert out[[0, 2]].abs().sum() == 0 and out[1].abs().sum() > 0


# -- optimiser groups --------------------------------------------------------------------------
@pytest.mark.parametrize("finetune", ["top", "full"])
def test_encoder_parameters_get_the_encoder_group(smoke, finetune) -> None:
    cfg, model = make(smoke, *MM, f"model.finetune={finetune}", "train.encoder_lr=3e-5",
                      "train.lr=2e-3", "train.weight_decay=0.1", cache=False)
    enc = model.item_encoder
    expected = {id(p) for b in enc.branches() for p in b.encoder.parameters() if p.requires_grad}
    got = [id(p) for p in enc.encoder_parameters()]
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    untrained = [n for n, p in encoder_params(model) if not p.requires_grad]
    if finetune == "full":  # everything but MAE's fixed sin-cos position table trains
        assert untrained == ["vision.backbone.embeddings.position_embeddings"]
    else:  # the embeddings and lower blocks stay frozen
        assert any(".embeddings." in n for n in untrained)

    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    assert {id(p) for p in groups["encoder"]["params"]} == expected
    assert groups["encoder"]["lr"] == pytest.approx(3e-5)
    assert groups["encoder"]["weight_decay"] == 0.0
    assert groups["downstream"]["lr"] == pytest.approx(2e-3)
    assert groups["downstream"]["weight_decay"] == pytest.approx(0.1)
    # fusion and sequence model are downstream; every trainable parameter is in exactly one group
    fusion = {id(p) for p in enc.fusion.parameters()}
    downstream = {id(p) for g in ("downstream", "downstream_no_decay") for p in groups[g]["params"]}
    assert fusion <= downstream and not fusion & expected
    all_trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert downstream | expected == all_trainable and not downstream & expected


# -- error messages ----------------------------------------------------------------------------
def test_unknown_item_encoder_lists_the_valid_ones(smoke) -> None:
    with pytest.raises(ValueError, match="item_encoder") as err:
        make(smoke, "model.item_encoder=audio")
    assert all(name in str(err.value) for name in registry.names("item_encoder"))


def test_unknown_fusion_lists_the_valid_ones(smoke) -> None:
    with pytest.raises(ValueError, match="unknown fusion") as err:
        make(smoke, *MM, "model.fusion=blend")
    assert all(name in str(err.value) for name in fusion_names())


def test_unknown_encoder_names_list_the_valid_ones(smoke) -> None:
    with pytest.raises(ValueError, match="unknown text encoder") as err:
        make(smoke, *TEXT, "model.text_encoder=tiny-gpt")
    assert "tiny-roberta" in str(err.value) and "roberta-base" in str(err.value)
    with pytest.raises(ValueError, match="unknown vision encoder") as err:
        make(smoke, *VISION_VIT, "model.vision_encoder=tiny-cnn")
    assert "tiny-mae" in str(err.value) and "resnet50" in str(err.value)


def test_unknown_item_encoding_is_refused(smoke) -> None:
    with pytest.raises(ValueError, match="item_encoding"):
        make(smoke, *TEXT, "model.item_encoding=turbo")


@pytest.mark.parametrize("item_encoder", ["vision", "mm"])
def test_text_only_data_with_a_vision_encoder_is_a_clear_error(
    tmp_path: Path, item_encoder: str
) -> None:
    seqs = {f"u{u}": [f"i{(u + k) % 12}" for k in range(7)] for u in range(10)}
    root = write_sequences(tmp_path / "text-only", seqs, with_images=False)
    cfg = profile_config("smoke").override(
        "data.source=path", f"data.path={root}", f"model.item_encoder={item_encoder}",
        "model.text_max_tokens=24",
    )
    data = load_data(cfg.data)
    assert data.image_path is None
    with pytest.raises(ValueError, match="no images") as err:
        build_model(cfg, data)
    assert "item_encoder=text" in str(err.value) and data.name in str(err.value)
    # the same data with the text encoder works
    model = build_model(cfg.override("model.item_encoder=text"), data)
    assert torch.isfinite(model.loss(batch_of(data, n_users=4)))


def test_frozen_encoders_train_nothing_and_cache_their_whole_output(smoke) -> None:
    """finetune=frozen (the cpu profile's choice): no encoder parameter trains, the head is part
    of the cached prefix, and the cached fast path equals the plain reference."""
    frozen = ("model.item_encoder=mm", "model.text_encoder=tiny-roberta", "model.finetune=frozen",
              "model.dropout=0", "model.vision_encoder=tiny-resnet", "model.fusion=sum")
    cfg, model = make(smoke, *frozen)
    assert [n for n, p in encoder_params(model) if p.requires_grad] == []
    assert {b.kind for b in model.item_encoder.branches() if b.cache is not None} == \
        {"text", "vision"}
    vision = model.item_encoder.vision.encoder
    assert vision.head_frozen and vision.top_blocks == 0
    _, plain = make(smoke, *frozen, "model.item_encoding=plain", cache=False)
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    ids = torch.arange(1, 9)
    assert torch.allclose(model.item_encoder(ids), plain.item_encoder(ids), atol=1e-5)


def test_vision_grid_pools_image_tokens_to_regions(smoke) -> None:
    """model.vision_grid: the fusion reads g x g average-pooled regions of the image map (the
    pooled vector unchanged); a non-square token set (masked MAE) is refused."""
    from mmsr_lib.encoders.base import ModalityOutput
    from mmsr_lib.encoders.multimodal import pool_grid

    tokens = torch.arange(2 * 16 * 3, dtype=torch.float).view(2, 16, 3)
    out = ModalityOutput(tokens, torch.ones(2, 16, dtype=torch.bool), tokens.mean(1))
    pooled = pool_grid(out, 2)
    assert pooled.tokens.shape == (2, 4, 3) and torch.equal(pooled.pooled, out.pooled)
    grid = tokens.view(2, 4, 4, 3)
    assert torch.allclose(pooled.tokens[:, 0], grid[:, :2, :2].mean((1, 2)))  # top-left region
    with pytest.raises(ValueError, match="square map"):
        pool_grid(ModalityOutput(tokens[:, :5], torch.ones(2, 5, dtype=torch.bool),
                                 tokens.mean(1)), 2)
    frozen = ("model.item_encoder=mm", "model.text_encoder=tiny-roberta", "model.finetune=frozen",
              "model.dropout=0", "model.vision_encoder=tiny-resnet", "model.vision_grid=1")
    _, model = make(smoke, *frozen)
    assert model.item_encoder.vision.grid == 1
    assert torch.isfinite(model.item_encoder(torch.arange(1, 6))).all()


@pytest.mark.parametrize("encoder, mask, grid", [
    ("tiny-mae", None, None),  # MAE's default 0.75: the kept patches are a random subset
    ("tiny-mae", "0.5", None),  # 32 of 64 patches: not even square
    ("tiny-mae", "0.0", 3),  # every patch in order: a map, the grid applies
    ("tiny-mae-2l", "0.25", None),
    ("efficientnet-lite1", None, 3),  # a CNN map
])
def test_vision_grid_resolves_off_for_a_masking_mae(encoder, mask, grid) -> None:
    """The cpu profile pools image tokens to 3 x 3; a masking MAE has no map to pool, so its
    runs (notebook 09's Table XIV mask ratios) resolve vision_grid to None instead of failing
    (0.25, 0.5) or pooling a random subset as if it were a map (0.75)."""
    sets = ["model.item_encoder=mm", f"model.vision_encoder={encoder}"]
    if mask is not None:
        sets.append(f"model.mask_ratio={mask}")
    cfg = profile_config("cpu").override(*sets).resolved()
    assert cfg.model.vision_grid == grid


def test_a_frozen_vision_branch_is_computed_once_and_equals_the_per_step_path(smoke) -> None:
    """Frozen mode: every item's vision output (pooled vector and vision_grid regions) is kept
    in memory after the first call, with the same values as re-pooling the cached feature map
    at each step, in training and eval mode; a branch that trains, or a catalog whose outputs
    exceed the budget, keeps the per-step path."""
    frozen = ("model.item_encoder=vision", "model.finetune=frozen", "model.dropout=0",
              "model.vision_encoder=tiny-resnet", "model.vision_grid=2")
    _, model = make(smoke, *frozen)
    branch = model.item_encoder.vision
    ids = torch.tensor([3, 1, 7, 3, 12])
    for mode in (True, False):
        model.train(mode)
        memo = branch(ids)
        assert branch._memo_out is not None
        branch._no_memo, saved = True, branch._memo_out
        branch._memo_out = None
        step = branch(ids)
        branch._no_memo, branch._memo_out = False, saved
        assert torch.equal(memo.tokens, step.tokens) and torch.equal(memo.pooled, step.pooled)
        assert torch.equal(memo.mask, step.mask)
    assert torch.count_nonzero(branch._memo_out.pooled[0]) == 0  # row 0: padding

    # the whole catalog in order (the softmax loss's request) reads the memo through a slice:
    # the same values as gathering the same ids one by one
    run = torch.arange(1, 9)
    span, gathered = branch(run), branch(run.flip(0))
    assert torch.equal(span.tokens, gathered.tokens.flip(0))
    assert torch.equal(span.pooled, gathered.pooled.flip(0))
    assert span.pooled.data_ptr() == branch._memo_out.pooled[1:].data_ptr()  # a view, no copy

    # tokens and mask are gathered only when read (a vector-level consumer never pays for them),
    # then kept; the values are the memo's rows either way
    lazy = branch(ids)
    assert not {"tokens", "mask"} & set(vars(lazy))
    assert torch.equal(lazy.tokens, branch._memo_out.tokens[ids])
    assert {"tokens", "mask"} & set(vars(lazy)) == {"tokens"}
    assert lazy.tokens is lazy.tokens and torch.equal(lazy.mask, branch._memo_out.mask[ids])
    assert lazy.dim == branch._memo_out.tokens.shape[-1]
    branch.memo_lazy = False
    assert {"tokens", "mask"} <= set(vars(branch(ids)))
    branch.memo_lazy = True

    _, small = make(smoke, *frozen)
    small.item_encoder.vision.memo_max_bytes = 1
    small.item_encoder.vision(ids)
    assert small.item_encoder.vision._memo_out is None and small.item_encoder.vision._no_memo

    _, top = make(smoke, "model.item_encoder=vision", "model.finetune=top",
                  "model.vision_encoder=tiny-resnet")
    top.item_encoder.vision(ids)
    assert getattr(top.item_encoder.vision, "_memo_out", None) is None


@pytest.mark.parametrize("overrides", [("model.item_encoder=vision",),
                                       ("model.item_encoder=mm", "model.fusion=gate"),
                                       ("model.item_encoder=mm", "model.fusion=merge_attn")])
def test_training_on_the_softmax_loss_leaves_the_frozen_vision_memo_untouched(smoke, overrides
                                                                             ) -> None:
    """The softmax loss reads every item's frozen vision output as views of the memo; two
    optimiser steps through the whole recommender must leave the memo as it was (a write in
    place anywhere downstream would corrupt every later step)."""
    cfg, model = make(smoke, *overrides, "model.finetune=frozen", "train.loss=ce",
                      "model.text_encoder=tiny-roberta", "model.vision_encoder=tiny-resnet")
    batch = batch_of(smoke[1])
    model.train()
    model.loss(batch)  # builds the memo
    before = model.item_encoder.vision._memo_out
    assert before is not None
    saved = (before.tokens.clone(), before.pooled.clone())
    opt = build_optimizer(model, cfg)
    for _ in range(2):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    after = model.item_encoder.vision._memo_out
    assert torch.equal(after.tokens, saved[0]) and torch.equal(after.pooled, saved[1])
