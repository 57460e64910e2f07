"""A component from outside the package: one file, one decorator, trained through `mmsr train`."""

from __future__ import annotations

import sys
import textwrap

import pytest

from mmsr_lib.cli import main
from mmsr_lib.runs.store import ResultsStore

PLUGIN = '''
"""A toy sequence model: the user state is the running mean of the item vectors so far."""
import torch
from torch import nn

from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry


class RunningMean(SequenceModel):
    def __init__(self, dim: int) -> None:
        super().__init__(dim, 1)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self._check(x, mask)
        count = mask.cumsum(1).clamp_min(1).unsqueeze(-1).to(x.dtype)
        return self.out(x.cumsum(1) / count) * mask.unsqueeze(-1).to(x.dtype)


@registry.register("sequence", "running-mean", aliases=("rmean",),
                   description="toy plugin: running mean of the item vectors")
def build(dim, max_len, n_layers=None, n_heads=None, dropout=0.1):
    return RunningMean(dim)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "toy_mmsr_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_mmsr_plugin"
    sys.modules.pop("toy_mmsr_plugin", None)
    from mmsr_lib.util import registry

    registry._TABLE["sequence"].pop("running-mean", None)
    for key in ("runningmean", "rmean"):
        registry._ALIASES["sequence"].pop(key, None)


def test_an_outside_component_trains_through_mmsr_train(plugin, capsys, tmp_path):
    results = tmp_path / "r.sqlite"
    args = ["--plugin", plugin, "train", "--profile", "smoke", "--results", str(results),
            "--set", "model.sequence=RMean", "--set", "train.epochs=2", "--set", "model.dim=16"]
    assert main(args) == 0
    assert "running-mean" in capsys.readouterr().out
    [rec] = ResultsStore(results).records()
    assert rec.config["model"]["sequence"] == "running-mean"  # the canonical name is stored
    assert rec.extra["epochs_run"] == 2 and 0 <= rec.metrics["test"]["HR@10"] <= 100
    assert main(["--plugin", plugin, "components", "sequence"]) == 0
    assert "toy plugin: running mean" in capsys.readouterr().out


def test_a_missing_plugin_is_a_clear_error(capsys):
    assert main(["--plugin", "no_such_plugin_module", "components"]) == 2
    assert "cannot import plugin module 'no_such_plugin_module'" in capsys.readouterr().err
