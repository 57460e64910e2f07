"""The command line a new user follows: help, data, train, results."""

from __future__ import annotations

import re

import pytest

from mmsr_lib import cli
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


def test_import_with_a_format_prints_the_real_skip_counts(capsys, tmp_path):
    import json

    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,timestamp\n" + "".join(
        f"u{u},i{(u + k) % 6},{k}\n" for u in range(3) for k in range(6)) + "u0,i0,0\n")
    items = tmp_path / "items.csv"
    items.write_text("item,text,image\n" + "".join(f"i{k},item {k},\n" for k in range(6)))
    out = tmp_path / "ds"
    args = ["data", "import", "--interactions", str(inter), "--items", str(items),
            "--out", str(out), "--duplicates", "drop"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["duplicates"]["found"] == 1 or report["skipped"], report
    assert main(args) == 2  # the data set exists: --overwrite is needed
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["data", "import", "--format", "hm", "--out", str(tmp_path / "x")]) == 2
    assert "--src" in capsys.readouterr().err


def test_components_lists_every_kind_with_weights(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    for kind in ("text_encoder", "vision_encoder", "fusion", "sequence", "item_encoder",
                 "recommender", "data_source", "data_format"):
        assert f"{kind} (" in out
    assert "tiny-roberta" in out and "[random init]" in out and "merge_attn" in out
    assert main(["components", "nonsense"]) == 2


def test_show_config_prints_the_resolved_config_and_one_hash_for_aliases(capsys):
    hashes = []
    for fusion in ("sum", "summation", "Sum"):
        assert main(["train", "--profile", "smoke", "--set", "model.item_encoder=MMSR",
                     "--set", f"model.fusion={fusion}", "--show-config"]) == 0
        out = capsys.readouterr().out
        assert '"fusion": "sum"' in out and '"item_encoder": "mm"' in out
        hashes.append(out.split("run hash: ")[1].strip())
    assert len(set(hashes)) == 1


def test_grid_list_rows_reproduce_with_mmsr_train(capsys):
    """Each listed command resolves to the row's own hash: a notebook row is reproducible."""
    import re
    import shlex

    from mmsr_lib.plan import notebook_runs

    assert main(["grid", "02", "--list", "--profile", "smoke"]) == 0
    *out, summary = capsys.readouterr().out.strip().splitlines()
    lines = [line for line in out if not line.startswith("# ")]
    # Table III's 12 rows, our 4 residual-DNN rows and the authors' gate and FiLM, one seed
    # each on smoke
    assert len(lines) == 18 == len(notebook_runs("02", "smoke"))
    assert summary == "18 distinct runs in no results store yet: 18 to train"
    assert out[0] == "# " + notebook_runs("02", "smoke")[0].section
    for line in (lines[0], lines[-1]):
        row_hash, cmd = re.search(r" ([0-9a-f]{16})  (mmsr train .*)$", line).groups()
        assert main([*shlex.split(cmd)[1:], "--show-config"]) == 0
        assert capsys.readouterr().out.split("run hash: ")[1].strip() == row_hash


def test_grid_list_covers_every_notebook_with_its_seeds(capsys):
    """`--list` is `plan.notebook_runs`: every section of a notebook (08: its sources, scratch
    and transfer runs), each row once per seed; an unknown notebook is a clear error."""
    from mmsr_lib.plan import notebook_runs

    assert main(["grid", "08", "--list", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[:-1]  # the last line counts the states
    runs = notebook_runs("08", "smoke")
    assert len([line for line in out if not line.startswith("# ")]) == len(runs)
    assert [line[2:] for line in out if line.startswith("# ")] == list(
        dict.fromkeys(r.section for r in runs))
    assert main(["grid", "42", "--list"]) == 2
    assert "no grid for notebook '42'" in capsys.readouterr().err
    # --only: the rows it matches, under their sections; a pattern matching nothing is an error
    assert main(["grid", "08", "--list", "--profile", "smoke", "--only", "bili-10k"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "# Table X" and len(out) == 5 and out[-1].startswith("3 distinct runs")
    assert all(line.startswith("Bili-10K / ") for line in out[1:-1])
    assert main(["grid", "08", "--summary", "--profile", "smoke", "--only", "nothing"]) == 2
    assert "matches no row" in capsys.readouterr().err


def test_grid_seeds_add_seeds_to_every_multi_seed_section_only(capsys):
    """`--seeds` (to settle a verdict the seeds withhold) replaces the profile's seeds of every
    row, for --list as for `notebook_runs`; a section that trains one seed on purpose (08's
    transfer sources, which other runs warm-start from) keeps it; the new seeds' runs are new
    hashes, the profile's seeds keep theirs (already stored runs are reused)."""
    from mmsr_lib.plan import notebook_runs

    base = notebook_runs("08", "smoke")
    more = notebook_runs("08", "smoke", seeds=(42, 45, 46))
    for section in dict.fromkeys(r.section for r in base):
        before = [r for r in base if r.section == section]
        after = [r for r in more if r.section == section]
        if section == "transfer sources":
            assert [r.config.hash() for r in after] == [r.config.hash() for r in before]
        else:
            assert {r.config.train.seed for r in after} == {42, 45, 46}
            assert len(after) == 3 * len(before)
            assert {r.config.hash() for r in before} <= {r.config.hash() for r in after}
    assert main(["grid", "03", "--list", "--profile", "smoke", "--seeds", "42,45"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if " seed " in ln]
    assert rows and {int(ln.split(" seed ")[1].split()[0]) for ln in rows} == {42, 45}
    assert main(["grid", "03", "--list", "--profile", "smoke", "--seeds", "42,x"]) == 2
    assert "give integers separated by commas" in capsys.readouterr().err
    assert main(["plan", "--notebook", "03", "--profile", "smoke", "--seeds", "4x"]) == 2
    assert "give integers separated by commas" in capsys.readouterr().err


def test_grid_list_says_where_each_run_stands_in_the_store(capsys, tmp_path, monkeypatch):
    """stored / training / stopped / failed / to train, read from the store that --results
    names; a run shared by two rows is counted once. *training*: a process holds the run's lock
    now; *stopped*: killed (still "running" in the store) or interrupted, so it resumes."""
    import re

    from mmsr_lib.plan import notebook_runs
    from mmsr_lib.runs.runner import lock_of, run_lock, run_or_load
    from mmsr_lib.runs.store import ResultsStore

    db = tmp_path / "r.sqlite"
    runs = notebook_runs("03", "smoke")
    store = ResultsStore(db)
    run_or_load(runs[0].config.override("train.epochs=1"), store=store, progress=False)
    first = runs[0].config.override("train.epochs=1")  # listed with the same override below
    killed, interrupted, failed, busy = (r.config.override("train.epochs=1") for r in runs[1:5])
    for cfg in (killed, interrupted, failed, busy):
        store.start(cfg)
    store.fail(interrupted, "Terminated: SIGTERM")
    store.fail(failed, "boom")
    with run_lock(lock_of(busy)):  # as `run_or_load` holds it while it trains
        assert main(["grid", "03", "--list", "--profile", "smoke", "--set", "train.epochs=1",
                     "--results", str(db)]) == 0
    *out, summary = capsys.readouterr().out.strip().splitlines()
    state = {m.group(2): m.group(1) for line in out if (m := re.search(
        r" (stored|training|stopped|failed|to train|stale) +([0-9a-f]{16})  ", line))}
    assert state[first.hash()] == "stored" and state[busy.hash()] == "training"
    assert state[killed.hash()] == state[interrupted.hash()] == "stopped"
    assert state[failed.hash()] == "failed"
    distinct = len(state)
    assert summary == (f"{distinct} distinct runs in {db}: 1 stored, 1 training, 2 stopped, "
                       f"1 failed, {distinct - 5} to train")

    from mmsr_lib.runs import runner
    monkeypatch.setattr(runner, "code_fingerprint", lambda *cfg: "other code")
    assert main(["grid", "03", "--list", "--profile", "smoke", "--set", "train.epochs=1",
                 "--results", str(db)]) == 0
    *out, summary, hint = capsys.readouterr().out.strip().splitlines()
    assert f" stale       {first.hash()}  " in "\n".join(out) and ": 1 stale, " in summary
    assert "`mmsr results equate --since REV`" in hint


def test_grid_list_names_runs_the_repository_archive_holds(capsys, tmp_path, monkeypatch):
    """A run missing from this store but archived in docs/runs lists as *archived*, with the
    command that imports it, instead of *to train* (hours of training for nothing)."""
    from mmsr_lib.plan import notebook_runs
    from mmsr_lib.runs import archive
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore

    cfg = notebook_runs("03", "smoke")[0].config.override("train.epochs=1")
    elsewhere = ResultsStore(tmp_path / "elsewhere.sqlite")
    run_or_load(cfg, store=elsewhere, progress=False)
    archive.write_archive(elsewhere, tmp_path / "runs")
    monkeypatch.setattr(archive, "REPO_ARCHIVE", tmp_path / "runs")
    db = tmp_path / "fresh.sqlite"
    ResultsStore(db)
    assert main(["grid", "03", "--list", "--profile", "smoke", "--set", "train.epochs=1",
                 "--results", str(db)]) == 0
    *out, summary, hint = capsys.readouterr().out.strip().splitlines()
    assert f" archived    {cfg.hash()}  " in "\n".join(out) and ": 1 archived, " in summary
    assert "`mmsr results import docs/runs`" in hint
    assert main(["results", "import", str(tmp_path / "runs"), "--results", str(db)]) == 0
    capsys.readouterr()
    main(["grid", "03", "--list", "--profile", "smoke", "--set", "train.epochs=1",
          "--results", str(db)])
    assert f" stored      {cfg.hash()}  " in capsys.readouterr().out


def test_grid_list_shows_how_far_a_started_run_got(capsys, tmp_path):
    """A stopped run's line says which epoch its checkpoint reached and its best epoch so far,
    read from the checkpoint it resumes from; a run killed before its first epoch ended has no
    checkpoint and says nothing more."""
    import re

    from mmsr_lib.plan import notebook_runs
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore

    db = tmp_path / "r.sqlite"
    store = ResultsStore(db)
    runs = notebook_runs("03", "smoke")
    stopped, killed = (r.config.override("train.epochs=3") for r in runs[:2])

    def interrupt_after_two_epochs(epoch: int, record: dict) -> None:
        if epoch == 1:  # counted from 0: the checkpoint of epoch 2 is written by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_or_load(stopped, store=store, progress=False, on_epoch_end=interrupt_after_two_epochs)
    store.start(killed)
    assert main(["grid", "03", "--list", "--profile", "smoke", "--set", "train.epochs=3",
                 "--results", str(db)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf" stopped     {stopped.hash()}  \[epoch 2/3, best [12] "
                     r"\(valid NDCG@10 \d+\.\d\d\)\]  mmsr train ", out), out
    assert f" stopped     {killed.hash()}  mmsr train " in out


def test_tune_chooses_on_validation_and_prints_the_settings(capsys, tmp_path):
    args = ["tune", "--profile", "smoke", "--results", str(tmp_path / "r.sqlite"),
            "--set", "train.epochs=1", "--set", "model.dim=16",
            "--space", "train.lr=0.001,0.01"]
    assert main([*args, "--summary"]) == 0  # read only: nothing is trained
    before = capsys.readouterr().out.splitlines()
    assert len(before) == 3 and all(" to train" in line for line in before[1:]), before
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "valid NDCG@10" in out and "test NDCG@10 (not used)" in out
    assert main([*args, "--summary"]) == 0
    after = capsys.readouterr().out.splitlines()
    assert all(" stored " in line for line in after[1:]) and len(after) == 3, after
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("train.lr "))
    scores = {line.split()[1] for line in lines[header + 1 : header + 3]}
    assert all(len(s.partition(".")[2]) <= 2 for s in scores), scores  # printed as the summary
    assert {line.split()[2] for line in after[1:]} == scores  # the same trials, read back
    assert "chosen on validation NDCG@10: --set train.lr=" in out
    # two candidates: whichever wins is at an end of the range, and the output says so
    assert "note: train.lr=" in out and "extend the range" in out
    assert main([*args[:-2], "--space", "train.lr"]) == 2


def test_readme_lists_every_command_and_only_real_ones():
    """The README's "Command line" block names every (sub)command the parser has, and each
    command it shows parses (the README and the CLI cannot drift apart)."""
    import argparse
    import re
    import shlex
    from pathlib import Path

    from mmsr_lib.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Command line\n\n```bash\n(.*?)```", text, re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.startswith("mmsr ")]
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = set()
    for name, sub in subs.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        expected |= {f"{name} {n}" for n in nested[0].choices} if nested else {name}
    shown = set()
    for line in lines:
        words = shlex.split(line)[1:]
        if not words or words[0].startswith("-"):
            continue
        two = " ".join(words[:2])
        shown.add(two if two in expected else words[0])
        parser.parse_args([w.replace("RUN_HASH", "0123456789abcdef") for w in words])
    assert expected <= shown, f"commands missing from the README: {sorted(expected - shown)}"


def test_tuning_flags_a_choice_at_the_end_of_its_range():
    from mmsr_lib.runs.tuning import at_edge

    space = {"train.lr": ("1e-3", "3e-3", "1e-2"), "model.dropout": (0.1, 0.3, 0.5),
             "train.loss": ("bce", "ce"), "model.dim": (64,)}
    best = {"train.lr": "3e-3", "model.dropout": 0.5, "train.loss": "ce", "model.dim": 64}
    assert at_edge(space, best) == {"model.dropout": "largest"}
    assert at_edge(space, {**best, "train.lr": "1e-3", "model.dropout": 0.3}) == {
        "train.lr": "smallest"}


def test_a_stale_run_being_trained_again_lists_as_training(tmp_path, monkeypatch):
    """Retraining keeps the stale record readable until the new one is stored, so the listing
    asks the run's lock: held -> training, free -> stale."""
    import fcntl

    from mmsr_lib.config import profile_config
    from mmsr_lib.plan import run_state
    from mmsr_lib.runs import runner as runner_mod
    from mmsr_lib.runs.store import ResultsStore

    cfg = profile_config("smoke", name="st").override(
        "train.epochs=1", f"train.checkpoint_dir={tmp_path / 'runs'}")
    store = ResultsStore(tmp_path / "r.sqlite")
    runner_mod.run_or_load(cfg, store=store, progress=False)
    assert run_state(cfg, store) == "stored"
    monkeypatch.setattr(runner_mod, "code_fingerprint", lambda *a: "edited-code")
    assert run_state(cfg, store) == "stale"
    lock = runner_mod.lock_of(cfg)
    with open(lock, "a") as held:  # what run_or_load holds while it trains the run again
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_state(cfg, store) == "training"
    assert run_state(cfg, store) == "stale"


@pytest.mark.parametrize(("argv", "resumes"), [(["components"], False),
                                               (["plan", "--profile", "smoke"], False),
                                               (["train", "--profile", "smoke"], True)])
def test_an_interrupt_mentions_checkpoints_only_for_commands_that_train(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
        resumes: bool) -> None:
    import signal

    def terminated(args: object) -> int:
        raise cli.Terminated(signal.SIGTERM)

    monkeypatch.setattr(cli, "_dispatch", terminated)
    assert cli.main(argv) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.startswith("mmsr: terminated")
    assert ("continues from its last checkpoint" in err) is resumes


def test_grid_summary_reads_rows_from_the_stored_runs_only(capsys, tmp_path):
    """`mmsr grid NN --summary`: the rows that have stored runs, with their seeds, test metrics
    (equal to the records') and the comparison with the section's best row, which refuses a
    claim between unconverged runs; rows without runs are listed empty, nothing is trained."""
    from mmsr_lib.plan import label_text, notebook_runs
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore

    db = tmp_path / "r.sqlite"
    store = ResultsStore(db)
    runs = notebook_runs("03", "smoke", "train.epochs=1")
    first, second = runs[0], next(r for r in runs[1:] if r.section == runs[0].section)
    recs = [run_or_load(r.config, store=store, progress=False) for r in (first, second)]
    assert main(["grid", "03", "--summary", "--profile", "smoke", "--set", "train.epochs=1",
                 "--results", str(db)]) == 0
    out = capsys.readouterr().out
    lines = {label_text(r.label): next(ln for ln in out.splitlines()
                                       if ln.startswith(label_text(r.label) + " "))
             for r in (first, second)}
    for run, rec in zip((first, second), recs, strict=True):
        line = lines[label_text(run.label)]
        assert f"{rec.metrics['test']['NDCG@10']:.2f}" in line
        assert f"{rec.metrics['test']['HR@10']:.2f}" in line and " 1/1 " in line
    best, other = sorted(recs, key=lambda r: -r.metrics["test"]["NDCG@10"])
    by_hash = {first.config.hash(): first, second.config.hash(): second}
    assert lines[label_text(by_hash[best.config_hash].label)].rstrip().endswith("best")
    assert lines[label_text(by_hash[other.config_hash].label)].rstrip().endswith(
        "not converged")  # one epoch of a one-epoch budget
    total = len(runs)
    assert out.rstrip().splitlines()[-1].startswith(f"2 of {total} runs stored in {db}")
    # --only hides rows, not rivals: the other row alone is still compared with the best one
    other_label = label_text(by_hash[other.config_hash].label)
    assert main(["grid", "03", "--summary", "--profile", "smoke", "--set", "train.epochs=1",
                 "--results", str(db), "--only", f"^{first.section} / {re.escape(other_label)}$"
                 ]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    (line,) = [ln for ln in out if ln.startswith(other_label + " ")]
    assert line.rstrip().endswith("not converged") and len(out) == 4  # section, header, row, total
    assert out[-1].startswith("1 of 1 runs stored")
    assert len(store.records()) == 2  # read only: nothing trained


def test_grid_summary_tests_against_a_complete_row_and_shows_seeds_in_progress(
        capsys, tmp_path, monkeypatch):
    """A row with a seed missing is never the reference of `vs best` (nothing could be tested
    against it), and the seed that is training or stopped says how far it got."""
    from mmsr_lib import config
    from mmsr_lib.plan import label_text, notebook_runs
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore

    monkeypatch.setitem(config.PROFILE_TABLE["smoke"], "seeds", (42, 43))
    db = tmp_path / "r.sqlite"
    store = ResultsStore(db)
    runs = notebook_runs("03", "smoke", "train.epochs=2")
    first = runs[0]
    rows = [r for r in runs if r.section == first.section]
    full = [r for r in rows if r.label == first.label]
    other = next(r.label for r in rows if r.label != first.label)
    partial = [r for r in rows if r.label == other]
    assert [r.config.train.seed for r in full] == [42, 43] == [r.config.train.seed
                                                                for r in partial]
    for run in [*full, partial[0]]:
        run_or_load(run.config, store=store, progress=False)

    def stop(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt  # after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_or_load(partial[1].config, store=store, progress=False, on_epoch_end=stop)
    assert main(["grid", "03", "--summary", "--profile", "smoke", "--set", "train.epochs=2",
                 "--results", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = {label: next(ln for ln in out if ln.startswith(label_text(label) + " "))
            for label in (first.label, other)}
    assert " 2/2 " in line[first.label] and line[first.label].rstrip().endswith("best")
    assert " 1/2 " in line[other] and " seeds missing " in line[other]
    assert re.search(r"seed 43 stopped: epoch 1/2, best 1 \(valid NDCG@10 \d+\.\d\d\)$",
                     line[other].rstrip()), line[other]


def test_grid_summary_pairs_rows_only_on_the_same_test_users(capsys, tmp_path):
    """A section spanning catalogs (notebook 12's density points) has a best row on each:
    rows of two catalogs are never paired user by user, even with as many users; rows of one
    catalog under other training settings are evaluated on the same cases; `compare` refuses
    to pair the two catalogs' runs."""
    from mmsr_lib.plan import label_text, notebook_runs
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore
    from mmsr_lib.workbook.significance import compare, evaluation_cases, same_evaluation_cases

    db = tmp_path / "r.sqlite"
    store = ResultsStore(db)
    runs = notebook_runs("12", "smoke", "train.epochs=2")
    idsr = [r for r in runs if r.section == "density sweep" and r.label[1] == "IDSR"]
    assert len({r.label[0] for r in idsr}) == 2
    small, large = idsr[0], idsr[1]
    assert small.config.data.synth.n_users == large.config.data.synth.n_users
    assert evaluation_cases(small.config) != evaluation_cases(large.config)
    for cfg in (small.config.override("data.train_windows=last"),
                small.config.override("data.max_len=10")):
        assert evaluation_cases(cfg) == evaluation_cases(small.config)
    assert evaluation_cases(small.config, "valid") != evaluation_cases(small.config)
    for run in (small, large):
        run_or_load(run.config, store=store, progress=False)
    rec_small, rec_large = (store.get(run.config.resolved().hash()) for run in (small, large))
    assert not same_evaluation_cases(rec_small, rec_large)
    with pytest.raises(ValueError, match=r"evaluated on different 'test' cases"):
        compare(store, [rec_small], [rec_large])
    assert compare(store, [rec_small], [rec_small]).diff == 0
    with pytest.raises(ValueError, match="the seeds of .* were evaluated on different users"):
        compare(store, [rec_small, rec_large], [rec_small, rec_small])
    assert main(["grid", "12", "--summary", "--profile", "smoke", "--set", "train.epochs=2",
                 "--results", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    for run in (small, large):
        line = next(ln for ln in out if ln.startswith(label_text(run.label) + " "))
        assert line.rstrip().endswith("best"), line
    assert "one best per catalog" in out[-1]


def test_grid_claims_prints_the_notebooks_verdicts_from_the_stored_runs(capsys, tmp_path):
    """`mmsr grid NN --claims`: the families of claims the notebook prints, from the stored runs
    only (nothing trained): a pair whose rows are stored gets its verdict (here "not converged":
    one epoch of one), a pair missing a row is said so, and each section counts its runs. A
    notebook whose claims read the trained models' vectors (10) computes them once and keeps
    them with the runs."""
    from mmsr_lib.plan import notebook_runs
    from mmsr_lib.runs import derived
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.runs.store import ResultsStore
    from mmsr_lib.runs.trained import checkpoint_path
    from mmsr_lib.workbook import embeddings, grids

    db = tmp_path / "r.sqlite"
    store = ResultsStore(db)
    runs = [r for r in notebook_runs("03", "smoke", "train.epochs=1")
            if r.label in (("SASRec", "MMSR"), ("SASRec", "IDSR"))]
    for run in runs:
        run_or_load(run.config, store=store, progress=False)
    args = ["grid", "03", "--claims", "--profile", "smoke", "--set", "train.epochs=1",
            "--results", str(db)]
    assert main(args) == 0
    out = capsys.readouterr().out
    total = len(notebook_runs("03", "smoke", "train.epochs=1"))
    rows = len(grids.table4_configs("smoke"))
    assert f"# Table IV: {len(runs)} of {total} runs stored; rows with no stored run: " \
        f"{rows - 2}" in out
    assert "SASRec: not converged" in out.splitlines()
    assert "GRU4Rec: -" in out.splitlines()  # neither of its rows is stored
    assert len(store.records()) == len(runs)  # read only
    # notebook 10's claims read the models' vectors: here from the checkpoints of the two
    # SASRec rows (loaded, not trained; the command opens the store read-only, so they are
    # not kept), once the notebook kept them, from the store without the checkpoints
    args10 = ["grid", "10", "--claims", "--profile", "smoke", "--set", "train.epochs=1",
              "--results", str(db)]
    assert main(args10) == 0
    out = capsys.readouterr().out
    assert "# item vectors: purity@10 by category" in out and "MMSR" in out
    assert not [e for r in store.records() for e in derived.entries(store, r.config_hash)]
    by_label = {run.label[1]: [store.get(run.config.resolved().hash())] for run in runs}
    embeddings.model_vectors(by_label, store=store)  # as notebook 10 does: kept with the runs
    for rec in store.records():
        checkpoint_path(rec).unlink()
    assert main(args10) == 0
    assert capsys.readouterr().out == out
    assert len(store.records()) == len(runs)  # still nothing trained


def test_tune_starts_from_a_notebook_rows_own_configuration(capsys, tmp_path):
    """`mmsr tune --notebook NN --only ROW` searches that row's setting: its trial at the row's
    own setting is the row's run (same hash), and a pattern naming several rows, or --only
    without a notebook, is refused with what to do."""
    from mmsr_lib.plan import notebook_runs, row_config
    from mmsr_lib.runs.tuning import trial_configs

    row = "Table V / .*CARCA"
    base = row_config("04", "smoke", only=row)
    assert base.hash() == notebook_runs("04", "smoke", only=row)[0].config.hash()
    assert base.resolved().model.recommender == "carca++"
    lr = base.resolved().train.lr
    trials = trial_configs(base, {"train.lr": (lr, 10 * lr)})
    assert trials[0][1].hash() == base.hash() and trials[1][1].hash() != base.hash()
    args = ["tune", "--profile", "smoke", "--results", str(tmp_path / "r.sqlite"),
            "--notebook", "04", "--space", f"train.lr={lr},{10 * lr}", "--summary"]
    assert main([*args, "--only", row]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(" to train" in line for line in lines[1:])
    assert main([*args, "--only", "Table V"]) == 2
    assert "rows of notebook 04; name one" in capsys.readouterr().err
    assert main([a for a in args if a not in ("--notebook", "04")] + ["--only", row]) == 2
