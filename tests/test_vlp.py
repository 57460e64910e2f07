"""VLP item encoders (paper Tables VI and VII): CLIP, GroupViT, ViLT, VisualBERT, FLAVA.

The split forward equals each Hugging Face model's own forward; every VLP and every visual input
of VisualBERT gives item vectors of the recommender's width; fast (distinct items, trimmed text,
frozen-prefix caches) and plain (every slot through everything) give equal losses and gradients;
an item's vector never depends on its batch; exactly the paper's blocks train; paper checkpoints
are never downloaded; the detector runs once per image; and the runner and the CLI train a VLP.

Everything runs on the smoke synthetic catalog (~200 items, 32-px images) with the tiny
random-init configs. Texts are tokenised to min(50, the model's positions) tokens (the config
does not keep model.text_max_tokens for VLP runs); fast mode trims them to the real length.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import batch_of as batch_of_n
from model_helpers import step_losses_and_grads, zero_dropout

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders import vlp_models as vm
from mmsr_lib.encoders.regions import (
    VISUAL_INPUTS,
    Pixels,
    RegionExtractor,
    create_visual_extractor,
)
from mmsr_lib.encoders.vlp import VLPItemEncoder, build_vlp_item_encoder
from mmsr_lib.encoders.zoo import CheckpointNotFoundError
from mmsr_lib.recommender import Recommender
from mmsr_lib.runs.runner import build_model, load_data
from mmsr_lib.train import build_optimizer
from mmsr_lib.util import registry

LOSS_ATOL = 1e-5
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4
TINY = ("tiny-clip", "tiny-groupvit", "tiny-vilt", "tiny-visualbert", "tiny-flava")
PAPER = {"clip-vit-base-patch32": "openai/clip-vit-base-patch32",
         "groupvit-gcc-yfcc": "nvidia/groupvit-gcc-yfcc",
         "vilt-b32-mlm": "dandelin/vilt-b32-mlm",
         "visualbert-vqa-coco-pre": "uclanlp/visualbert-vqa-coco-pre",
         "flava-full": "facebook/flava-full"}
# (vlp, visual input): every VLP, and VisualBERT with each of its visual inputs
CASES = [(n, None) for n in TINY] + [("tiny-visualbert", v) for v in VISUAL_INPUTS
                                      if v != "grid"]
CASE_IDS = [n if v is None else f"{n}-{v}" for n, v in CASES]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, SequenceData]:
    cache = tmp_path_factory.mktemp("smoke-data")
    cfg = profile_config("smoke").override(f"data.cache_dir={cache}", "model.item_encoder=vlp")
    return cfg, load_data(cfg.data)


def make(smoke, vlp: str, *overrides: str, visual_input: str | None = None,
         cache: bool = True) -> tuple[RunConfig, Recommender]:
    """A recommender with a VLP item encoder; `visual_input` travels as the (future) config
    field model.visual_input does, read with getattr."""
    base, data = smoke
    cfg = base.override(f"model.vlp={vlp}", *overrides)
    if visual_input is not None:
        cfg.model.visual_input = visual_input
    return cfg, build_model(cfg, data, "cpu", cache=cache)


def batch_of(data: SequenceData, n_users: int = 6) -> dict[str, torch.Tensor]:
    return batch_of_n(data, n_users)


# -- the split forward is the Hugging Face forward ---------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "groupvit", "vilt", "visualbert", "flava"])
def test_split_forward_equals_the_hugging_face_model(family: str) -> None:
    torch.manual_seed(0)
    tok = vm._minilm_tokenizer("test")
    enc = tok(["a red cotton shirt with stripes", "blue", "[empty]", "long text " * 9],
              padding="max_length", truncation=True, max_length=24, return_tensors="pt",
              return_token_type_ids=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        if family == "visualbert":
            extractor = create_visual_extractor("grid")
            model = vm._tiny_model(family, tok, 32, extractor.out_dim).eval()
            ref = copy.deepcopy(model)
            vlp = vm.VisualBertVLP(model, tok, extractor, name="t", display_name="t",
                                   pretrained=False, max_tokens=24).eval()
            feats, vmask = extractor.extract(images)
            vmask[:, 30:] = False  # some visual tokens are padding, as regions can be
            got = vlp(ids, mask, (feats, vmask))
            want = ref(input_ids=ids, attention_mask=mask, visual_embeds=feats,
                       visual_attention_mask=vmask.long()).pooler_output
        else:
            model = vm._tiny_model(family, tok, 32).eval()
            ref = copy.deepcopy(model)
            pixels = Pixels(32, vm.CLIP_MEAN, vm.CLIP_STD)
            vlp = vm._CLASSES[family](model, tok, pixels, name="t", display_name="t",
                                      pretrained=False, max_tokens=24).eval()
            px = pixels(images)
            got = vlp(ids, mask, px)
            if family in ("clip", "groupvit"):
                want = torch.cat([ref.text_model(input_ids=ids, attention_mask=mask).pooler_output,
                                  ref.vision_model(pixel_values=px).pooler_output], -1)
            elif family == "vilt":  # HF draws a random patch order; attention does not care
                want = ref(input_ids=ids, attention_mask=mask, pixel_values=px).pooler_output
            else:
                want = ref(input_ids=ids, attention_mask=mask,
                           pixel_values=px).multimodal_output.pooler_output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# -- shapes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("vlp", "visual_input"), CASES, ids=CASE_IDS)
def test_every_vlp_and_visual_input_gives_item_vectors(smoke, vlp, visual_input) -> None:
    cfg, model = make(smoke, vlp, visual_input=visual_input)
    enc = model.item_encoder
    assert isinstance(enc, VLPItemEncoder)
    assert "(random init)" in enc.vlp.display_name and not enc.vlp.pretrained
    ids = torch.tensor([0, 1, 5, 0, enc.n_items])
    enc.eval()
    with torch.no_grad():
        out = enc(ids)
        table = enc.encode_all()
    assert out.shape == (5, cfg.model.dim) and torch.isfinite(out).all()
    assert out[[0, 3]].abs().sum() == 0 and (out[[1, 2, 4]].norm(dim=1) > 0).all()
    assert table.shape == (enc.n_items + 1, cfg.model.dim) and table[0].abs().sum() == 0
    # each stream's frozen state: [n, tokens, width (+1 validity channel for text/joint)]
    some = torch.tensor([1, 2, 3])
    for b in enc.branches():
        with torch.no_grad():
            state = b.frozen(some)
        assert state.shape[0] == 3 and state.ndim == 3
        if b.stream in ("text", "joint"):
            assert set(state[..., -1].unique().tolist()) <= {0.0, 1.0}
            assert (state[:, :, -1].sum(1) >= 2).all()  # [CLS] ... [SEP] at least
        if b.stream == "joint":
            assert state.shape[1] == enc.vlp.max_tokens + {
                "tiny-vilt": 16 + 1}.get(vlp, enc.vlp.extractor.n_tokens if
                                         enc.vlp.extractor else 0)


@pytest.mark.parametrize("kind", VISUAL_INPUTS)
def test_visual_extractors_shapes_and_frozen(kind: str) -> None:
    extractor = create_visual_extractor(kind)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    feats, mask = extractor.extract(images)
    tokens = {"region": 49, "grid": 49, "patch-emb": 50, "patch-vit": 50}[kind]
    assert feats.shape == (3, tokens, extractor.out_dim) and mask.shape == (3, tokens)
    assert extractor.n_tokens == tokens and "(random init)" in extractor.display_name
    assert mask[:, 0].all() and torch.isfinite(feats).all()
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training  # stays frozen under a parent's .train()
    # one image's features do not depend on the other images of its batch
    alone, alone_mask = extractor.extract(images[1:2])
    torch.testing.assert_close(alone, feats[1:2], atol=1e-5, rtol=1e-5)
    assert torch.equal(alone_mask, mask[1:2])


def test_patch_emb_is_clip_vit_without_its_blocks() -> None:
    torch.manual_seed(0)
    emb = create_visual_extractor("patch-emb")
    vit = create_visual_extractor("patch-vit")
    vit.load_state_dict(emb.state_dict())
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    px = emb.pixels(images)
    with torch.no_grad():
        ref = emb.vit(pixel_values=px, output_hidden_states=True).hidden_states
    # patch-emb = the (pre-normed) input of block 1; patch-ViT = the output of the last block
    torch.testing.assert_close(emb.extract(images)[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vit.extract(images)[0], ref[-1], atol=1e-5, rtol=1e-5)


# -- fast (distinct items, trimmed text, cached frozen states) vs plain (every slot) ----------------
@pytest.mark.parametrize(("vlp", "visual_input"), CASES, ids=CASE_IDS)
def test_fast_and_plain_give_the_same_loss_and_gradients(smoke, vlp, visual_input) -> None:
    _, fast = make(smoke, vlp, "model.dropout=0.0", visual_input=visual_input)
    _, plain = make(smoke, vlp, "model.dropout=0.0", "model.item_encoding=plain",
                    visual_input=visual_input)
    cached = set(fast.item_encoder.caches)
    assert cached == ({"joint"} if vlp in ("tiny-vilt", "tiny-visualbert") else {"text", "image"})
    assert plain.item_encoder.plain and not plain.item_encoder.caches
    plain.load_state_dict(fast.state_dict())
    batch = batch_of(smoke[1])
    grads = step_losses_and_grads((fast, plain), batch, LOSS_ATOL)
    for name, g in grads[0].items():
        assert g is not None and grads[1][name] is not None, name
        torch.testing.assert_close(g, grads[1][name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


@pytest.mark.parametrize("vlp", ["tiny-groupvit", "tiny-vilt"])
def test_cache_equals_the_frozen_part_recomputed(smoke, vlp) -> None:
    _, model = make(smoke, vlp)
    enc = model.item_encoder
    model.train()  # the frozen part stays in eval mode (and so equal to the cache) even now
    ids = torch.arange(1, enc.n_items + 1)
    for b in enc.branches():
        cache = enc.caches[b.stream]
        assert len(cache) == enc.n_items + 1 and cache.get(torch.tensor([0])).abs().sum() == 0
        with torch.no_grad():
            torch.testing.assert_close(cache.get(ids), b.frozen(ids), atol=1e-6, rtol=1e-5)


def test_disk_cache_is_shared_and_exact(smoke, tmp_path: Path) -> None:
    _, model = make(smoke, "tiny-flava", cache=False)
    enc = model.item_encoder.eval()
    some = torch.tensor([3, 1, 40])
    with torch.no_grad():
        uncached = enc(some)
    assert enc.enable_cache("require", cache_dir=tmp_path) == ["text", "image"]
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 2 and all(c.path in files for c in enc.caches.values())
    with torch.no_grad():
        torch.testing.assert_close(enc(some), uncached, atol=1e-5, rtol=1e-5)
    enc.caches.clear()
    enc.enable_cache("require", cache_dir=tmp_path)  # the second build maps the same files
    assert sorted(tmp_path.glob("*.npy")) == files


def test_cache_refused_under_full_finetuning(smoke) -> None:
    _, model = make(smoke, "tiny-clip", "model.finetune=full", cache=False)
    with pytest.raises(ValueError, match="full"):
        model.item_encoder.enable_cache("require")
    assert model.item_encoder.enable_cache("auto") == []
    # VisualBERT's extractor never trains: its features are cached instead of the joint stream
    _, vb = make(smoke, "tiny-visualbert", "model.finetune=full")
    assert list(vb.item_encoder.caches) == ["features"]
    loss = vb.loss(batch_of(smoke[1]))
    assert torch.isfinite(loss)
    _, plain = make(smoke, "tiny-clip", "model.item_encoding=plain", cache=False)
    with pytest.raises(ValueError, match="plain"):
        plain.item_encoder.enable_cache("auto")


# -- an item's vector depends on the item only -------------------------------------------------------
@pytest.mark.parametrize(("vlp", "visual_input"), CASES, ids=CASE_IDS)
def test_an_items_vector_does_not_depend_on_its_batch(smoke, vlp, visual_input,
                                                      monkeypatch) -> None:
    _, model = make(smoke, vlp, visual_input=visual_input)
    enc = model.item_encoder.eval()
    monkeypatch.setattr(enc, "min_bucket", 2)  # length groups too
    ids = torch.tensor([3, 17, 5, 120, 64, 1, 150, 42])
    with torch.no_grad():
        together = enc(ids)
        alone = torch.cat([enc(ids[i : i + 1]) for i in range(len(ids))])
        mixed = enc(torch.tensor([0, 17, 0, 0, 3]))
        enc.caches, saved = {}, enc.caches  # uncached, and with other companions
        other = enc(torch.tensor([9, 64, 3, 77]))
        enc.caches = saved
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert mixed[[0, 2, 3]].abs().sum() == 0
    torch.testing.assert_close(mixed[[1, 4]], together[[1, 0]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other[[1, 2]], together[[4, 0]], atol=1e-5, rtol=1e-5)


# -- which parameters train ----------------------------------------------------------------------------
# the paper's rule on the tiny configs (CLIP/FLAVA towers: 4 blocks, GroupViT vision: 2 + 2,
# ViLT/VisualBERT: 6 blocks, FLAVA fusion: 2 blocks)
TOP_TRAINS = {
    "tiny-clip": ("text_layers.2.", "text_layers.3.", "text_norm.", "image_layers.2.",
                  "image_layers.3.", "image_norm."),
    "tiny-groupvit": ("text_layers.2.", "text_layers.3.", "text_norm.",
                      "image_stages.1.layers.0.", "image_stages.1.layers.1.", "image_norm."),
    "tiny-vilt": ("layers.2.", "layers.3.", "layers.4.", "layers.5.", "norm.", "pooler."),
    "tiny-visualbert": ("layers.2.", "layers.3.", "layers.4.", "layers.5.", "pooler."),
    "tiny-flava": ("text_layers.2.", "text_layers.3.", "image_layers.2.", "image_layers.3.",
                   "text_to_mm.", "image_to_mm.", "multimodal."),
}


@pytest.mark.parametrize("vlp", TINY)
def test_exactly_the_papers_blocks_train(smoke, vlp) -> None:
    cfg, model = make(smoke, vlp, "train.encoder_lr=3e-5", "train.lr=2e-3")
    enc = model.item_encoder
    names = [n for n, _ in enc.vlp.backbone.named_parameters()]
    trains = {n for n, p in enc.vlp.backbone.named_parameters() if p.requires_grad}
    assert trains == {n for n in names if n.startswith(TOP_TRAINS[vlp])}
    assert trains and len(trains) < len(names)
    if enc.vlp.extractor is not None:
        assert not any(p.requires_grad for p in enc.vlp.extractor.parameters())
    # the optimiser: the VLP's trainable blocks at the encoder rate, the head downstream
    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    expected = {id(p) for p in enc.vlp.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["encoder"]["params"]} == expected
    assert groups["encoder"]["lr"] == pytest.approx(3e-5)
    head = {id(p) for p in enc.head.parameters()}
    assert head <= {id(p) for g in ("downstream", "downstream_no_decay")
                    for p in groups[g]["params"]}
    # one step: every trainable block gets a gradient, no frozen one does
    model.train()
    model.loss(batch_of(smoke[1])).backward()
    for name, p in enc.vlp.backbone.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # the frozen blocks run in eval mode while the model trains
    frozen = [m for n, m in enc.vlp.backbone.named_modules()
              if n and not n.startswith(TOP_TRAINS[vlp]) and not any(
                  t.startswith(n + ".") for t in TOP_TRAINS[vlp])]
    assert frozen and not any(m.training for m in frozen)


@pytest.mark.parametrize("vlp", TINY)
def test_full_finetuning_trains_everything(smoke, vlp) -> None:
    _, model = make(smoke, vlp, "model.finetune=full", cache=False)
    enc = model.item_encoder
    assert all(p.requires_grad for p in enc.vlp.backbone.parameters())
    if enc.vlp.extractor is not None:  # VisualBERT's visual extractor is fixed in every mode
        assert not any(p.requires_grad for p in enc.vlp.extractor.parameters())
    model.train()
    zero_dropout(model)
    model.loss(batch_of(smoke[1])).backward()
    missing = [n for n, p in enc.vlp.backbone.named_parameters() if p.grad is None]
    # ViLT's word-type row 1 and the padding word never appear; every tensor still gets a grad
    assert missing == []


def test_top_blocks_setting_moves_the_split(smoke) -> None:
    _, model = make(smoke, "tiny-vilt", "model.top_blocks=1", cache=False)
    trains = {n.split(".")[0] + "." + n.split(".")[1] for n, p in
              model.item_encoder.vlp.backbone.named_parameters()
              if p.requires_grad and n.startswith("layers.")}
    assert trains == {"layers.5"}
    with pytest.raises(ValueError, match="top_blocks"):
        make(smoke, "tiny-clip", "model.top_blocks=9", cache=False)


# -- names, weights, errors ----------------------------------------------------------------------------
def test_registry_lists_every_vlp_with_its_weights() -> None:
    entries = {e.name: e for e in registry.entries("vlp")}
    assert set(TINY) | set(PAPER) <= set(entries)
    for name in TINY:
        assert entries[name].weights == "random"
    for name, repo in PAPER.items():
        assert entries[name].weights == "pretrained"
        assert registry.canonical("vlp", repo) == name
    for alias, name in (("CLIP", "clip-vit-base-patch32"), ("FLAVA", "flava-full"),
                        ("VisualBERT", "visualbert-vqa-coco-pre"), ("ViLT", "vilt-b32-mlm"),
                        ("GroupViT", "groupvit-gcc-yfcc")):
        assert registry.canonical("vlp", alias) == name
    entry = registry.lookup("item_encoder", "VLP")
    assert entry.name == "vlp" and set(entry.meta["uses"]) == {"vlp", "encoders"}


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No checkpoint anywhere: the Hugging Face and torch hub caches point at empty folders."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(torch_hub)


@pytest.mark.parametrize("name", list(PAPER))
def test_missing_paper_checkpoint_names_the_repo(empty_hf_cache, name: str) -> None:
    with pytest.raises(CheckpointNotFoundError) as err:
        vm.create_vlp(name, image_size=32)
    msg = str(err.value)
    assert PAPER[name] in msg and "download" in msg and "never downloads" in msg
    assert registry.lookup("vlp", name).missing() is not None


def test_missing_checkpoint_through_the_recommender_and_extractors(smoke, empty_hf_cache
                                                                    ) -> None:
    with pytest.raises(CheckpointNotFoundError, match="facebook/flava-full"):
        make(smoke, "flava-full")
    with pytest.raises(CheckpointNotFoundError, match="fasterrcnn_resnet50_fpn_coco"):
        create_visual_extractor("region", "full", pretrained=True)
    with pytest.raises(CheckpointNotFoundError, match="openai/clip-vit-base-patch32"):
        create_visual_extractor("patch-vit", "full", pretrained=True)
    with pytest.raises(CheckpointNotFoundError, match="resnet50"):
        create_visual_extractor("grid", "full", pretrained=True)


def test_a_checkpoint_without_vocabulary_gets_the_bert_wordpiece_not_an_empty_one(
        tmp_path: Path) -> None:
    """uclanlp/visualbert-vqa-coco-pre ships no tokenizer; AutoTokenizer would silently build
    one with 5 special tokens. The BERT-uncased WordPiece vocabulary (MiniLM's) is used, and a
    tokenizer that does not fit the word table is refused."""
    from transformers import VisualBertConfig

    VisualBertConfig().save_pretrained(tmp_path)
    tok = vm._snapshot_tokenizer(tmp_path, "visualbert-vqa-coco-pre")
    assert len(tok) == 30522 and tok.tokenize("red shirt") == ["red", "shirt"]
    model = vm._tiny_model("flava", tok, 32)
    vm._check_vocab(model, tok, "tiny-flava")
    model.config.text_config.vocab_size = 1000
    with pytest.raises(ValueError, match="word table"):
        vm._check_vocab(model, tok, "tiny-flava")


def test_configuration_errors_name_the_field(smoke) -> None:
    with pytest.raises(ValueError, match="visual_input.*VisualBERT only"):
        make(smoke, "tiny-clip", visual_input="region", cache=False)
    with pytest.raises(ValueError, match="visual_input"):
        make(smoke, "tiny-visualbert", visual_input="pixels", cache=False)
    # ViLT's position table holds 40 text tokens; None picks min(50, 40)
    with pytest.raises(ValueError, match=r"text_max_tokens=48 .*3\.\.40"):
        vm.create_vlp("tiny-vilt", image_size=32, max_tokens=48)
    _, vilt = make(smoke, "tiny-vilt", "model.text_max_tokens=none", cache=False)
    assert vilt.item_encoder.vlp.max_tokens == 40
    with pytest.raises(ValueError, match="model.vlp"):
        make(smoke, "tiny-blip", cache=False)


def test_builder_reads_the_model_fields(smoke) -> None:
    """dim, dropout, finetune, top_blocks, item_encoding, text_max_tokens and visual_input reach
    the encoder (text_max_tokens once the config keeps it for VLP runs)."""
    base, data = smoke
    cfg = base.override("model.vlp=tiny-clip", "model.dim=16",
                        "model.dropout=0.25", "model.top_blocks=1",
                        "model.item_encoding=plain").resolved()
    cfg.model.text_max_tokens = 20
    cfg.model.visual_input = None
    enc = build_vlp_item_encoder(cfg, data)
    assert enc.dim == 16 and enc.plain and enc.vlp.max_tokens == 20
    assert enc.text.input_ids.shape == (data.n_items + 1, 20)
    assert enc.head[1].p == 0.25 and enc.vlp.splits() == {"text": [3, 4], "image": [3, 4]}
    cfg.model.vlp = "tiny-visualbert"
    enc = build_vlp_item_encoder(cfg, data, visual_input="patch-vit")
    assert enc.vlp.extractor.kind == "patch-vit" and "patch-vit" in enc.vlp.display_name


def test_text_only_data_is_a_clear_error(tmp_path: Path) -> None:
    from conftest import write_sequences

    seqs = {f"u{u}": [f"i{(u + k) % 12}" for k in range(7)] for u in range(10)}
    root = write_sequences(tmp_path / "text-only", seqs, with_images=False)
    cfg = profile_config("smoke").override("data.source=path", f"data.path={root}",
                                           "model.item_encoder=vlp", "model.vlp=tiny-clip")
    with pytest.raises(ValueError, match="no images") as err:
        build_model(cfg, load_data(cfg.data))
    assert "item_encoder=text" in str(err.value)


# -- the detector runs once per image ------------------------------------------------------------------
def test_region_features_are_computed_once_per_image(smoke) -> None:
    data = smoke[1]
    images = np.unique(data.item_image[1:])
    _, model = make(smoke, "tiny-visualbert", visual_input="region")
    enc = model.item_encoder
    detector = enc.vlp.extractor
    assert isinstance(detector, RegionExtractor)
    assert detector.detector_images == len(images)  # the cache build saw every image once
    model.train()
    model.loss(batch_of(data)).backward()
    model.eval()
    with torch.no_grad():
        enc.encode_all()
    assert detector.detector_images == len(images)
    # plain mode too: the detector is an input pipeline, each image through it once
    _, plain = make(smoke, "tiny-visualbert", "model.item_encoding=plain",
                    visual_input="region")
    counted = plain.item_encoder.vlp.extractor
    plain.train()
    for _ in range(2):
        plain.loss(batch_of(data, n_users=8))
    first = counted.detector_images
    assert 0 < first <= len(images) + 1  # + the placeholder of the padding item
    plain.loss(batch_of(data, n_users=8))
    assert counted.detector_images == first
    regions = plain.item_encoder.regions
    assert regions.done.sum() == first


def test_region_boxes_respect_threshold_and_count() -> None:
    detector = create_visual_extractor("region")
    assert detector.score_threshold == 0.05 and detector.max_regions == 49
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feats, mask = detector.extract(images)
    assert (mask.sum(1) >= 1).all() and (mask.sum(1) <= 49).all()
    assert feats[~mask].abs().sum() == 0  # padding regions are zero and masked
    assert detector.detector_images == 2 and detector.detector_calls == 1


# -- end to end: the runner and the CLI ----------------------------------------------------------------
def test_run_experiment_trains_a_vlp() -> None:
    from mmsr_lib.runs.runner import run_experiment

    cfg = profile_config("smoke").override("model.item_encoder=vlp", "model.vlp=tiny-clip",
                                           "train.epochs=1")
    result = run_experiment(cfg, progress=False)
    test = result["metrics"]["test"]
    assert test and all(math.isfinite(v) for v in test.values())
    assert result["extra"]["epochs_run"] == 1 and len(result["history"]) == 1


def test_cli_trains_tiny_flava() -> None:
    from mmsr_lib import cli

    assert cli.main(["train", "--profile", "smoke", "--set", "model.item_encoder=vlp",
                     "--set", "model.vlp=tiny-flava", "--set", "train.epochs=1"]) == 0
