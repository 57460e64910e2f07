"""Contract tests shared by every sequence model: causality, padding invariance, gradients."""

from __future__ import annotations

import pytest
import torch

from mmsr_lib.sequence import SASRec, create_sequence_model
from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry

NAMES = sorted(registry.names("sequence"))
D, L = 16, 8
LENGTHS = [8, 5, 1, 3, 0]  # a full row, partial rows, a single item, an empty row
ATOL = 1e-5


def build(name: str, seed: int = 0, **kwargs) -> SequenceModel:
    torch.manual_seed(seed)
    return create_sequence_model(name, D, max_len=L, **kwargs)


def left_padded(lengths: list[int], n: int = L, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random item vectors with junk (large values, NaN) in the padding rows."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[t >= n - k for t in range(n)] for k in lengths])
    x = torch.randn(len(lengths), n, D, generator=g)
    junk = torch.randn(x.shape, generator=g) * 1e3
    junk[..., 0] = float("nan")
    return torch.where(mask.unsqueeze(-1), x, junk), mask


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_zero_padding(name: str) -> None:
    model = build(name).eval()
    x, mask = left_padded(LENGTHS)
    out = model(x, mask)
    assert out.shape == (len(LENGTHS), L, D)
    assert torch.isfinite(out).all(), "junk in padding rows leaked into the output"
    assert (out[~mask] == 0).all()
    assert out[mask].abs().sum(-1).gt(0).all(), "real positions must carry a state"


@pytest.mark.parametrize("name", NAMES)
def test_no_future_leakage(name: str) -> None:
    model = build(name).eval()
    x, mask = left_padded(LENGTHS)
    ref = model(x, mask)
    g = torch.Generator().manual_seed(2)
    for t in range(L):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(x2[:, t + 1 :].shape, generator=g) * 5
        out = model(x2, mask)
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], atol=ATOL, rtol=0)
        if t < L - 1:  # the perturbation must be visible later, or the check proves nothing
            assert not torch.allclose(out[0, t + 1 :], ref[0, t + 1 :], atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("extra", [1, 5])
def test_padding_invariance(name: str, extra: int) -> None:
    """More left padding (beyond max_len too) and different junk in it change nothing."""
    model = build(name).eval()
    x, mask = left_padded(LENGTHS)
    ref = model(x, mask)
    x2, mask2 = left_padded(LENGTHS, n=L + extra, seed=3)
    x2[:, extra:][mask] = x[mask]
    assert torch.equal(mask2[:, extra:], mask)
    out = model(x2, mask2)
    torch.testing.assert_close(out[:, extra:], ref, atol=ATOL, rtol=0)
    assert (out[:, :extra] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = build(name).train()
    x, mask = left_padded(LENGTHS)
    x = torch.where(mask.unsqueeze(-1), x, 0.0).requires_grad_()
    target = torch.randn(len(LENGTHS), L, D, generator=torch.Generator().manual_seed(4))
    (model(x, mask) * target).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"
    assert (x.grad[~mask] == 0).all(), "padding inputs must not influence the output"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name: str) -> None:
    x, mask = left_padded(LENGTHS)
    outs = []
    for _ in range(2):
        model = build(name, seed=7).train()  # dropout active: its draws are seeded too
        torch.manual_seed(8)
        outs.append(model(x, mask))
    assert torch.equal(outs[0], outs[1])
    other = build(name, seed=9).train()
    torch.manual_seed(8)
    assert not torch.allclose(other(x, mask), outs[0])


@pytest.mark.parametrize(("name", "layers"), [("sasrec", 2), ("gru4rec", 4), ("nextitnet", 2)])
def test_paper_layer_defaults(name: str, layers: int) -> None:
    model = build(name)
    assert model.n_layers == layers
    if name == "gru4rec":
        assert model.gru.num_layers == layers
    else:
        assert len(model.blocks) == layers
    assert build(name, n_layers=3).n_layers == 3


def test_sasrec_heads_and_nextitnet_dilations() -> None:
    sas = build("sasrec")
    assert sas.n_heads == 2 and all(b.attn.n_heads == 2 for b in sas.blocks)
    net = build("nextitnet", n_layers=3)
    assert [b.dilations for b in net.blocks] == [(1, 2), (4, 8), (1, 2)]
    gru = build("gru4rec", dropout=0.3)
    assert gru.gru.dropout == pytest.approx(0.3)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="bert4rex") as err:
        create_sequence_model("bert4rex", D, L)
    for name in NAMES:
        assert name in str(err.value)
    assert isinstance(create_sequence_model(" SASRec ", D, L), SASRec)


def test_bad_inputs_have_clear_errors() -> None:
    model = build("sasrec")
    x, mask = left_padded(LENGTHS)
    with pytest.raises(ValueError, match="dim=16"):
        model(torch.zeros(2, L, 8), torch.ones(2, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        model(x, mask[:, 1:])
    with pytest.raises(ValueError, match="bool"):
        model(x, mask.long())
    with pytest.raises(ValueError, match="n_heads"):
        create_sequence_model("sasrec", 15, L, n_heads=2)
    with pytest.raises(ValueError, match="dropout"):
        create_sequence_model("gru4rec", D, L, dropout=1.0)
    with pytest.raises(ValueError, match="n_layers"):
        create_sequence_model("nextitnet", D, L, n_layers=0)
    with pytest.raises(ValueError, match="max_len=8"):  # 10 real items, 8 positions
        model(torch.randn(1, 10, D), torch.ones(1, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"left-padded.*\[1\]"):
        holes = torch.tensor([[False, True, True], [True, False, True]])
        build("gru4rec")(torch.randn(2, 3, D), holes)


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_successor_task(name: str) -> None:
    """Item k is always followed by item k+1: a few Adam steps must cut the sampled-softmax loss."""
    torch.manual_seed(0)
    n_items = 12
    table = torch.nn.Parameter(torch.randn(n_items, D) * 0.5)
    model = create_sequence_model(name, D, max_len=L, dropout=0.0)
    opt = torch.optim.Adam([table, *model.parameters()], lr=1e-2)
    starts = torch.randint(0, n_items, (32,))
    ids = (starts.unsqueeze(1) + torch.arange(L + 1)) % n_items
    mask = torch.ones(32, L, dtype=torch.bool)
    mask[:8, :3] = False  # some left padding too

    def loss() -> torch.Tensor:
        h = model(table[ids[:, :-1]], mask)[mask]
        return torch.nn.functional.cross_entropy(h @ table.T, ids[:, 1:][mask])

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        step = loss()
        step.backward()
        opt.step()
    assert loss().item() < 0.5 * first
