"""The ten fusions of Table III: shapes, gradient flow, padding invariance, determinism, names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.fusion import (
    TOKEN_FUSIONS,
    Fusion,
    create_fusion,
    fusion_names,
    parse_fusion_name,
)
from mmsr_lib.fusion.attention import CoAttentionFusion, MergeAttentionFusion
from mmsr_lib.fusion.coarse import DNNFusion
from mmsr_lib.util import registry

B, T_TEXT, T_VISION, TEXT_DIM, VISION_DIM, DIM = 3, 6, 5, 12, 20, 16

# (name, n_layers): all ten fusions plus the deeper merge-attention of Table III.
FUSIONS = fusion_names()
CASES = [(name, 1) for name in FUSIONS] + [("merge_attn", 2), ("merge_attn", 4)]
IDS = [f"{n}-{k}" for n, k in CASES]


def modality(width: int, length: int, lengths: list[int], seed: int) -> ModalityOutput:
    """Random encoder output whose row b has lengths[b] real tokens (the rest padding)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, length, width, generator=g)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return ModalityOutput(tokens=tokens, mask=mask, pooled=torch.randn(B, width, generator=g))


def inputs(seed: int = 0) -> tuple[ModalityOutput, ModalityOutput]:
    # Padding in both modalities (and a full-length row) so every masking path is exercised.
    return (modality(TEXT_DIM, T_TEXT, [6, 3, 1], seed),
            modality(VISION_DIM, T_VISION, [5, 2, 4], seed + 1))


def build(name: str, n_layers: int, dropout: float = 0.1) -> Fusion:
    torch.manual_seed(0)
    return create_fusion(name, TEXT_DIM, VISION_DIM, DIM, n_layers=n_layers, dropout=dropout)


def reads_tokens(fusion: Fusion) -> bool:
    return fusion.granularity == "token"


@pytest.mark.parametrize(("name", "n_layers"), CASES, ids=IDS)
def test_output_shape_and_finite(name: str, n_layers: int) -> None:
    fusion = build(name, n_layers).eval()
    out = fusion(*inputs())
    assert out.shape == (B, DIM)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "n_layers"), CASES, ids=IDS)
def test_gradients_reach_every_parameter_and_both_modalities(name: str, n_layers: int) -> None:
    fusion = build(name, n_layers).train()
    text, vision = inputs()
    read = "tokens" if reads_tokens(fusion) else "pooled"
    for m in (text, vision):
        getattr(m, read).requires_grad_(True)
    weights = torch.randn(B, DIM, generator=torch.Generator().manual_seed(3))
    (fusion(text, vision) * weights).sum().backward()
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reached {dead}"
    for label, m in (("text", text), ("vision", vision)):
        grad = getattr(m, read).grad
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reached {label}.{read}"
        if read == "tokens":  # padding tokens must not receive any gradient either
            assert (grad[~m.mask] == 0).all()


@pytest.mark.parametrize(("name", "n_layers"), CASES, ids=IDS)
def test_padding_tokens_never_change_the_output(name: str, n_layers: int) -> None:
    fusion = build(name, n_layers).eval()
    text, vision = inputs()
    ref = fusion(text, vision)
    g = torch.Generator().manual_seed(7)
    for fill in ("random", "nan"):
        new = []
        for m in (text, vision):
            tokens = m.tokens.clone()
            pad = ~m.mask
            if fill == "nan":
                tokens[pad] = float("nan")
            else:
                tokens[pad] = 100 * torch.randn(int(pad.sum()), m.dim, generator=g)
            new.append(ModalityOutput(tokens=tokens, mask=m.mask, pooled=m.pooled))
        torch.testing.assert_close(fusion(*new), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "n_layers"), [c for c in CASES if c[0] in TOKEN_FUSIONS])
def test_extra_padding_columns_do_not_change_an_item(name: str, n_layers: int) -> None:
    """An item's vector must not depend on how long the longest text in its batch is."""
    fusion = build(name, n_layers).eval()
    text, vision = inputs()
    ref = fusion(text, vision)
    extra = 4
    padded = ModalityOutput(
        tokens=torch.cat([text.tokens, torch.randn(B, extra, TEXT_DIM)], dim=1),
        mask=torch.cat([text.mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1),
        pooled=text.pooled,
    )
    torch.testing.assert_close(fusion(padded, vision), ref, rtol=1e-5, atol=1e-6)
    # ... nor on the other items of the batch
    single = [ModalityOutput(m.tokens[1:2], m.mask[1:2], m.pooled[1:2]) for m in (text, vision)]
    torch.testing.assert_close(fusion(*single), ref[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TOKEN_FUSIONS)
def test_item_without_real_text_tokens_stays_finite(name: str) -> None:
    fusion = build(name, 1).eval()
    text, vision = inputs()
    text.mask[0] = False
    out = fusion(text, vision)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "n_layers"), CASES, ids=IDS)
def test_eval_is_deterministic_and_train_uses_dropout(name: str, n_layers: int) -> None:
    fusion = build(name, n_layers, dropout=0.5).eval()
    text, vision = inputs()
    torch.testing.assert_close(fusion(text, vision), fusion(text, vision), rtol=0, atol=0)
    has_dropout = any(isinstance(m, torch.nn.Dropout) for m in fusion.modules())
    assert has_dropout == (isinstance(fusion, DNNFusion) or reads_tokens(fusion))
    if has_dropout:
        fusion.train()
        torch.manual_seed(1)
        a = fusion(text, vision)
        torch.manual_seed(2)
        assert not torch.allclose(a, fusion(text, vision))


@pytest.mark.parametrize("name", TOKEN_FUSIONS)
def test_modality_type_embeddings_change_the_output(name: str) -> None:
    """The published code forgets to add them; ours are added, so editing them must matter."""
    fusion = build(name, 1).eval()
    text, vision = inputs()
    ref = fusion(text, vision)
    with torch.no_grad():
        fusion.type_embed.weight.copy_(fusion.type_embed.weight.flip(0))  # swap text <-> vision
    swapped = fusion(text, vision)
    with torch.no_grad():
        fusion.type_embed.weight.zero_()
    zeroed = fusion(text, vision)
    assert (swapped - ref).abs().max() > 1e-4
    assert (zeroed - ref).abs().max() > 1e-4


def test_depth_is_respected() -> None:
    for n in (1, 2, 4):
        merge = build("merge_attn", n)
        assert isinstance(merge, MergeAttentionFusion) and len(merge.blocks) == n
    co = build("co_attn", 3)
    assert isinstance(co, CoAttentionFusion)
    assert len(co.text_blocks) == len(co.vision_blocks) == 3  # plus exactly one merging block
    assert sum(isinstance(m, type(co.merge)) for m in co.modules()) == 3 * 2 + 1


def test_coarse_dnn_is_three_linear_layers_without_residual() -> None:
    fusion = build("concat+dnn", 1)
    assert isinstance(fusion, DNNFusion)
    linears = [m for m in fusion.dnn if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(DIM, DIM)] * 3
    # no residual: zeroing the last layer zeroes the output
    with torch.no_grad():
        linears[-1].weight.zero_()
        linears[-1].bias.zero_()
    assert fusion.eval()(*inputs()).abs().max() == 0


def test_residual_dnn_adds_the_coarse_fusion_back() -> None:
    """`<name>+resdnn` is x + DNN(x): with the DNN's last layer zeroed it is the bare coarse
    fusion with the same weights, where the paper's plain DNN gives zeros."""
    fusion = build("gate+resdnn", 1)
    assert isinstance(fusion, DNNFusion) and fusion.residual
    assert parse_fusion_name("gate + resdnn") == ("gate+resdnn", None)
    last = [m for m in fusion.dnn if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    text, vision = inputs()
    fusion.eval()
    torch.testing.assert_close(fusion(text, vision), fusion.base.fuse(text, vision))
    assert fusion(text, vision).abs().max() > 0
    assert not build("gate+dnn", 1).residual


def test_fusions_are_listed_in_table_iii_order_whoever_imports_a_family_first() -> None:
    # a fresh interpreter, since the registry is process-wide: import the attention and the
    # authors' families before anything asks the registry, as a user's script may
    code = ("import mmsr_lib.fusion.authors, mmsr_lib.fusion.attention\n"
            "from mmsr_lib.util import registry\n"
            "print(','.join(registry.names('fusion')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().split(",")
    assert out[:4] == ["gate", "film", "sum", "concat"]
    assert out.index("concat+resdnn") < out.index("co_attn") < out.index("merge_attn")
    assert out[-2:] == ["gate_authors", "film_authors"]
    assert out == fusion_names()


@pytest.mark.parametrize(
    ("alias", "canonical", "depth"),
    [
        ("summation", "sum", None),
        ("Concatenation", "concat", None),
        ("merge-attention", "merge_attn", None),
        ("coattn", "co_attn", None),
        ("CoAtten-1", "co_attn", 1),
        ("mergeattn-2", "merge_attn", 2),
        ("MergeAttn_4", "merge_attn", 4),
        ("FiLM", "film", None),
        ("gate + DNN", "gate+dnn", None),
        ("summation+dnn", "sum+dnn", None),
    ],
)
def test_aliases(alias: str, canonical: str, depth: int | None) -> None:
    assert parse_fusion_name(alias) == (canonical, depth)


def test_every_canonical_name_parses_to_itself_and_depth_suffix_builds_layers() -> None:
    assert [parse_fusion_name(n)[0] for n in FUSIONS] == list(FUSIONS)
    fusion = create_fusion("mergeattn-2", TEXT_DIM, VISION_DIM, DIM)
    assert isinstance(fusion, MergeAttentionFusion) and len(fusion.blocks) == 2


@pytest.mark.parametrize("bad", ["attention", "gate-3", "merge_attn+dnn", ""])
def test_unknown_names_list_the_valid_ones(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        create_fusion(bad, TEXT_DIM, VISION_DIM, DIM)
    assert repr(bad) in str(err.value)
    if bad != "gate-3":
        assert all(name in str(err.value) for name in FUSIONS)


def test_bad_inputs_and_settings_get_clear_errors() -> None:
    text, vision = inputs()
    with pytest.raises(ValueError, match="vision.tokens .* vision_dim"):
        create_fusion("merge_attn", TEXT_DIM, VISION_DIM + 1, DIM)(text, vision)
    with pytest.raises(ValueError, match="text.pooled"):
        create_fusion("gate", TEXT_DIM + 1, VISION_DIM, DIM)(text, vision)
    int_mask = ModalityOutput(text.tokens, text.mask.long(), text.pooled)
    with pytest.raises(ValueError, match="text.mask .* bool"):
        create_fusion("co_attn", TEXT_DIM, VISION_DIM, DIM)(int_mask, vision)
    with pytest.raises(ValueError, match="not divisible by n_heads=5"):
        create_fusion("merge_attn", TEXT_DIM, VISION_DIM, DIM, n_heads=5)
    with pytest.raises(ValueError, match="n_layers"):
        create_fusion("co_attn", TEXT_DIM, VISION_DIM, DIM, n_layers=0)
    short = ModalityOutput(vision.tokens[:2], vision.mask[:2], vision.pooled[:2])
    with pytest.raises(ValueError, match="batches differ"):
        create_fusion("sum", TEXT_DIM, VISION_DIM, DIM)(text, short)


def test_the_authors_gate_lets_the_text_only_gate_the_image() -> None:
    """The released code's gate (Kiela et al.): fc_out(sigmoid(fc_x(t)) * fc_y(v)). With the
    image's vector at zero nothing passes, whatever the text; our GMU lets the text through."""
    text, vision = inputs()
    no_image = ModalityOutput(vision.tokens, vision.mask, torch.zeros_like(vision.pooled))
    ours, authors = build("gate", 1).eval(), build("gate_authors", 1).eval()
    assert authors(text, no_image).abs().max() == 0
    assert ours(text, no_image).abs().max() > 0
    assert authors(text, vision).abs().max() > 0


def test_the_authors_film_lets_the_text_modulate_the_image() -> None:
    """fc_out(gamma(t) * v + beta(t)): with gamma fixed at 1 and beta at 0 the output is the
    image's alone (the text only conditions); ours conditions the text on the image."""
    fusion = build("film_authors", 1).eval()
    with torch.no_grad():
        fusion.fc.weight.zero_()
        fusion.fc.bias.copy_(torch.cat([torch.ones(DIM), torch.zeros(DIM)]))
    text, vision = inputs()
    other_text = ModalityOutput(text.tokens, text.mask, torch.randn_like(text.pooled))
    torch.testing.assert_close(fusion(text, vision), fusion(other_text, vision))
    other_image = ModalityOutput(vision.tokens, vision.mask, torch.randn_like(vision.pooled))
    assert not torch.allclose(fusion(text, vision), fusion(text, other_image))


@pytest.mark.parametrize("name", ["gate_authors", "film_authors"])
def test_the_authors_readings_start_as_their_code(name: str) -> None:
    """Xavier-normal weights, zero biases, one LayerNorm (eps 1e-6) shared by both modalities."""
    fusion = build(name, 1)
    linears = [m for m in fusion.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias.abs().max() == 0 for m in linears)
    norms = [m for m in fusion.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 and norms[0].eps == 1e-6
    entry = registry.lookup("fusion", name)
    assert entry.meta["reading"] == "authors" and not entry.meta["attention"]
