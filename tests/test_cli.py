"""The command line a new user follows: help, data, train, results."""

from __future__ import annotations

import pytest

from mmsr_lib.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "data", "train", "results", "bench"):
        assert cmd in out


def test_train_stores_and_lists_a_run(capsys, tmp_path):
    args = ["train", "--profile", "smoke", "--set", "train.epochs=1", "--set", "model.dim=16"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "NDCG@10" in first and "status done" in first
    assert main(args) == 0  # stored: loaded, not trained again
    assert "status done" in capsys.readouterr().out
    assert main(["results", "list"]) == 0
    assert "sasrec" in capsys.readouterr().out
    out_csv = tmp_path / "runs.csv"
    assert main(["results", "export", "--csv", str(out_csv)]) == 0
    assert out_csv.read_text().count("\n") >= 2


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--profile", "smoke", "--set", "train.nope=1"]) == 2
    assert "unknown config field" in capsys.readouterr().err


def test_missing_data_path_is_a_clear_error(capsys, tmp_path):
    assert main(["data", "info", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
