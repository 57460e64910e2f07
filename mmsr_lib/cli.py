"""`mmsr` command line: data, training, results, components, grids and benchmarks.

Every failure is one line on stderr that names the file or key and says what to do (exit code
2); ``-v`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mmsr_lib.config import PROFILES, default_profile, profile_config

EPILOG = """examples:
  mmsr demo                                   # the quick start: IDSR vs MMSR on the embedded catalog
  mmsr components                             # what can be picked (encoders, fusions, models, ...)
  mmsr data synth --profile cpu               # generate the embedded synthetic catalog
  mmsr data synth --set data.synth.domain=target --out data/target
  mmsr data import --interactions inter.csv --items items.csv --images imgs/ --out data/mine
  mmsr data movielens                         # MovieLens-100K from the recbole wheel
  mmsr data info data/mine                    # validate a data set, print its statistics
  mmsr train --profile cpu --set model.sequence=gru4rec --set train.epochs=10
  mmsr train --profile cpu --set model.item_encoder=MMSR-T --show-config
  mmsr train --profile paper --set data.path=data/hm
  mmsr train --profile cpu --set data.synth.domain=target --init-from <source run hash>
  mmsr grid 02 --list                         # a notebook's runs (each seed), as commands, stored or not
  mmsr grid 04 --summary                      # its rows from the runs stored so far (read only)
  mmsr grid 02 --claims                       # the paper's claims it tests, from the stored runs
  mmsr grid 09 --train --profile cpu          # train all of a notebook's runs as one queue
  mmsr grid 04 --train --only MovieLens       # ... or the rows one pattern matches (also --list, plan)
  mmsr grid 04 --summary --seeds 42,43,44,45,46 --only FDSA  # more seeds, to settle 'seeds disagree'
  mmsr check-sasrec --profile cpu             # ID SASRec vs RecBole's SASRec, same split
  mmsr results list
  mmsr results export --csv results.csv
  mmsr results equate --since HEAD~1          # keep runs through a change shown not to alter them
  mmsr results replay HASH                    # does this machine re-compute a stored run bit for bit?
  mmsr results archive docs/runs --profile cpu  # finished runs as files for git; `import` reads them
  mmsr bench eval
  mmsr plan --notebook 03 --profile cpu       # fits? how long? (probe + prediction)
"""


def _add_common(p: argparse.ArgumentParser, results: bool = True) -> None:
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="sizes: smoke (CI, seconds), cpu (laptop, minutes), paper (GPU, real data); "
                        "default: $MMSR_PROFILE or cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, repeatable (e.g. train.lr=1e-3, model.dim=128)")
    if results:
        p.add_argument("--results", default=None,
                       help="SQLite results store (default: $MMSR_RESULTS or results/mmsr.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsr", description="MMSR workbook: ID-agnostic multi-modal sequential recommendation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and full tracebacks")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first so that the components it registers can be "
                             "picked (also $MMSR_PLUGINS, comma separated)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the quick start: IDSR vs MMSR (text, image, both) on the embedded catalog",
        description="Trains (or loads from the results store) the quick-start rows, prints the "
                    "paper-style table with cold-item columns and writes figures/quickstart_*.png."
                    " Example: mmsr demo --profile smoke")
    _add_common(demo)
    demo.add_argument("--figures", default="figures", help="output folder for figures")

    data = sub.add_parser("data", help="generate, import or inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser(
        "synth", help="generate the embedded synthetic catalog (deterministic)",
        description="Writes interactions.tsv, items.tsv, images.npy and meta.json (docs/data.md). "
                    "Without --out it goes to a cached folder under data.cache_dir named by the "
                    "knobs' hash. Example: mmsr data synth --set data.synth.n_users=1000 "
                    "--out data/small")
    _add_common(synth, results=False)
    synth.add_argument("--out", default=None, help="output folder (default: the cache folder)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an earlier data set in --out (other folders are never "
                            "replaced)")
    imp = dsub.add_parser(
        "import", help="convert a real data set into the mmsr format",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads a data set as its provider publishes it and writes interactions.tsv, "
                    "items.tsv, images.npy and meta.json into --out (docs/adapters.md). Broken "
                    "or missing images, unknown items and duplicates are counted and reported, "
                    "never fatal.\n\nformats: hm (H&M Kaggle folder), amazon2018, amazon2023, "
                    "pixelrec (Bili/Kwai/MicroLens), csv (generic tables)\n\nexamples:\n"
                    "  mmsr data import --format hm --src /data/hm --out data/hm --users 200000\n"
                    "  mmsr data import --interactions inter.csv --items items.csv --images imgs/ "
                    "--out data/mine")
    imp.add_argument("--format", default=None,
                     help="the provider's layout (default: csv with --interactions/--items)")
    imp.add_argument("--src", default=None, help="the provider's folder (with --format)")
    imp.add_argument("--interactions", help="csv: table with columns user,item,timestamp")
    imp.add_argument("--items", help="csv: table with columns item,text,image")
    imp.add_argument("--images", default=None,
                     help="image folder (csv: what the image column is relative to)")
    imp.add_argument("--out", required=True, help="output folder (new or empty, or an earlier "
                                                  "data set with --overwrite)")
    imp.add_argument("--overwrite", action="store_true", help="replace an earlier data set")
    imp.add_argument("--users", type=int, default=None,
                     help="sample this many users (among those with enough interactions)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    imp.add_argument("--duplicates", choices=("keep", "drop"), default="keep",
                     help="repeated (user, item, timestamp) rows: keep (counted) or drop")
    imp.add_argument("--min-user-interactions", type=int, default=5,
                     help="users eligible for sampling have at least this many interactions")
    imp.add_argument("--image-size", type=int, default=224)
    imp.add_argument("--name", default=None)
    ml = dsub.add_parser("movielens", help="convert MovieLens-100K shipped in the recbole wheel",
                         description="Writes data/movielens-100k (text only: title + genres).")
    ml.add_argument("--cache-dir", default="data")
    info = dsub.add_parser("info", help="validate a data set and print its statistics",
                           description="Example: mmsr data info data/mine")
    info.add_argument("path")

    train = sub.add_parser(
        "train", help="train and evaluate one configuration (stored; resumable)",
        description="Trains the resolved configuration (or loads it from the results store when "
                    "it is done with the same code and data), writes a resumable checkpoint to "
                    "runs/<hash>/ and prints valid/test/cold metrics. Example: mmsr train "
                    "--profile cpu --set model.item_encoder=text")
    _add_common(train)
    train.add_argument("--force", action="store_true",
                       help="train again from scratch; the stored result is replaced only when "
                            "the new run completes")
    train.add_argument("--allow-stale", action="store_true",
                       help="reuse a stored result even if it was computed by other code/data")
    train.add_argument("--show-config", action="store_true",
                       help="print the resolved config and its run hash, then exit")
    train.add_argument("--init-from", metavar="RUN", default=None,
                       help="warm start (transfer): a stored run's hash or a checkpoint.pt whose "
                            "encoders, fusion and sequence model initialise this run; ID weights "
                            "never carry over (sets train.init_from)")

    tune = sub.add_parser(
        "tune", help="validation-only search over lr, dropout and loss (ID baselines)",
        description="Trains every combination of the search space (stored and reused like any "
                    "run; those not yet stored side by side in $MMSR_WORKERS processes, one "
                    "per core on cpu by default, as grid --train does) and prints the trials "
                    "and the chosen settings, picked on validation "
                    "NDCG@10 among converged runs; the test split is never used to choose. "
                    "Example: mmsr tune --profile cpu --set model.sequence=gru4rec; a "
                    "notebook row's own setting: mmsr tune --notebook 04 --only 'Table V / "
                    "CARCA' --space train.lr=3e-3,1e-3")
    _add_common(tune)
    tune.add_argument("--notebook", default=None, metavar="NN",
                      help="search the setting of the notebook row that --only names (its "
                           "configuration at its first seed; --set applies to the notebook)")
    tune.add_argument("--only", default=None, metavar="PATTERN",
                      help="with --notebook: the one row ('section / row', a "
                           "case-insensitive regular expression)")
    tune.add_argument("--space", action="append", default=[], metavar="KEY=V1,V2",
                      help="a searched field and its candidates (default: lr, dropout, loss)")
    tune.add_argument("--summary", action="store_true",
                      help="print the trials stored so far and where the others stand "
                           "(read only: trains nothing)")
    tune.add_argument("--allow-stale", action="store_true",
                      help="reuse trials stored by other code (their validation scores)")

    chk = sub.add_parser(
        "check-sasrec", help="our ID SASRec against RecBole's SASRec: same data, split and "
                             "evaluator, several seeds, paired test",
        description="Trains RecBole 1.2.1's SASRec on our split of a data set (one JSON per "
                    "lr / dropout / seed in --folder, reused when present) and prints it next to "
                    "our stored ID SASRec runs of Table IV (mmsr grid 03), with the paired test "
                    "over users. A search: one seed per setting (mmsr check-sasrec --profile cpu "
                    "--seeds 42 --lr 3e-3 --dropout 0.2, ...); then without --lr / --dropout "
                    "the setting validation chose is trained on every seed and compared")
    _add_common(chk)
    chk.add_argument("--dataset", default="movielens-100k", choices=("movielens-100k", "synthetic"))
    chk.add_argument("--seeds", default=None, help="comma-separated (default: the profile's)")
    chk.add_argument("--lr", type=float, default=None,
                     help="default (with --dropout): the setting chosen on validation NDCG@10 "
                          "among the runs kept at the profile's first seed, else RecBole's "
                          "(1e-3)")
    chk.add_argument("--dropout", type=float, default=None,
                     help="default: as --lr (RecBole's is 0.5)")
    chk.add_argument("--epochs", type=int, default=None, help="budget (default: RecBole's 300)")
    chk.add_argument("--patience", type=int, default=None,
                     help="RecBole's stopping_step, validations (default 10)")
    chk.add_argument("--folder", default=None,
                     help="where the runs' JSON files are kept (default: this checkout's "
                          "docs/reference/recbole-sasrec-<dataset>-<profile>)")
    chk.add_argument("--summary", action="store_true",
                     help="print the comparison from the runs kept so far (trains nothing)")

    res = sub.add_parser("results", help="list or export stored runs")
    rsub = res.add_subparsers(dest="results_command", required=True)
    lst = rsub.add_parser("list", help="one line per stored run (read-only)",
                          description="Example: mmsr results list --split cold_test")
    lst.add_argument("--results", default=None)
    lst.add_argument("--split", default="test", help="valid | test | cold_valid | cold_test")
    lst.add_argument("--status", default="done", help="done | running | failed | all")
    lst.add_argument("--wide", action="store_true", help="every column (wider than 120)")
    exp = rsub.add_parser("export", help="export stored runs as CSV (read-only)",
                          description="Example: mmsr results export --csv results.csv")
    exp.add_argument("--results", default=None)
    exp.add_argument("--csv", required=True, help="output path")
    aud = rsub.add_parser(
        "audit", help="name the stored runs the protocol cannot count (read-only)",
        description="Every finished run that is not above most-popular on the validation users "
                    "(paired test over users) or did not converge (best epoch in the last tenth "
                    "of its budget): failed seeds, plateaus and budgets too short, over the "
                    "whole store (grid summaries check one notebook's rows). Most-popular is "
                    "evaluated once per data set. Example: mmsr results audit --profile cpu")
    aud.add_argument("--results", default=None)
    aud.add_argument("--profile", choices=PROFILES, default=None,
                     help="only runs of this profile (default: every profile)")
    aud.add_argument("--split", default="valid", help="valid (default) | test")
    for name, short, long in (
        ("archive", "write finished runs as one file each, to keep in git (read-only)",
         "Write every finished run (config, metrics, history, timings, provenance, per-user "
         "ranks) to DIR/<hash>.json.gz; an unchanged run is an unchanged file. The store lives "
         "in an ignored folder of one checkout; the archive is how its runs outlive it. "
         "Example: mmsr results archive docs/runs --profile cpu"),
        ("import", "add archived runs to the store (never replaces a finished run)",
         "Read DIR/*.json.gz written by `mmsr results archive` into the store; runs the store "
         "holds as finished are kept, unreadable files are skipped and named. "
         "Example: mmsr results import docs/runs"),
    ):
        folder_cmd = rsub.add_parser(name, help=short, description=long)
        folder_cmd.add_argument("folder", metavar="DIR")
        folder_cmd.add_argument("--results", default=None)
        if name == "archive":
            folder_cmd.add_argument(
                "--profile", action="append", choices=PROFILES, default=None,
                help="only runs of this profile (repeatable; default: every profile); "
                     "docs/runs keeps the cpu runs: --profile cpu")
    eq = rsub.add_parser(
        "equate", help="keep stale runs through a change of code shown not to alter results",
        description="For the stored runs made stale by code changed since REV: train one run of "
                    "each kind (sequence model, item encoder, fusion, loss, windows, data) of "
                    "each (old, new) code fingerprint pair for --epochs under REV's code (read "
                    "from git) and under the current code; where losses, metrics and per-user "
                    "ranks are equal for every kind, record the pair in "
                    "mmsr_lib/runs/equivalent_code.json (commit it) so those runs count as "
                    "current. A change that alters results "
                    "fails the check and its runs stay stale. The store is only read. "
                    "Example: mmsr results equate --since HEAD~1")
    eq.add_argument("--since", required=True, metavar="REV",
                    help="the git revision whose code computed the stale runs")
    eq.add_argument("--epochs", type=int, default=1, help="epochs of each check (default 1)")
    eq.add_argument("--dry-run", action="store_true", help="check, but record nothing")
    eq.add_argument("--results", default=None)

    rp = rsub.add_parser(
        "replay", help="does this machine re-compute a stored run bit for bit? (read-only)",
        description="Train a stored run's first --epochs epoch(s) again here, with its own "
                    "configuration, learning-rate schedule and thread count, and compare each "
                    "epoch's loss, learning rate and validation metrics with the stored history "
                    "to the last bit. Equal: re-training the run here gives its numbers. "
                    "Different: this machine's CPU kernels (instruction set, maker, MKL / oneDNN "
                    "paths) or the code differ, and a re-training will move its decimals. Exit "
                    "status 0 when equal, 1 when not. Nothing is written. "
                    "Example: mmsr results replay 8a067d4abc807e73")
    rp.add_argument("config_hash", metavar="HASH", help="the run's hash (a unique prefix will do)")
    rp.add_argument("--epochs", type=int, default=1, help="epochs to replay (default 1)")
    rp.add_argument("--results", default=None)

    comp = sub.add_parser("components", help="list what can be picked, one line each",
                          description="Kinds: text_encoder, vision_encoder, vlp, fusion, "
                                      "sequence, item_encoder, recommender, data_source, "
                                      "data_format. Example: mmsr components text_encoder")
    comp.add_argument("kind", nargs="?", default=None)

    grid = sub.add_parser("grid", help="a notebook's runs: hash and the command, or train them",
                          description="Lists (or trains) every run of a notebook's grids on the "
                                      "profile: each row once per seed, under its section's "
                                      "name, with its run hash and the `mmsr train` command that "
                                      "reproduces it; the runs `mmsr plan --notebook NN` prices. "
                                      "Example: mmsr grid 02 --list --profile cpu")
    grid.add_argument("notebook", help="notebook number or name, e.g. 02 or 02_fusion")
    grid.add_argument("--list", action="store_true",
                      help="list the runs, grouped by section (the default), each with where it "
                           "stands in the results store: stored, no weights (stored, but "
                           "notebooks 07, 10 and 11 read its trained weights and they are not "
                           "here, as for runs imported from docs/runs), stale, training (by a "
                           "process now), stopped (resumes from its checkpoint), failed or to "
                           "train; a training or stopped run with the epoch its checkpoint "
                           "reached")
    grid.add_argument("--summary", action="store_true",
                      help="each row from the runs already stored (read only, while a grid "
                           "trains too): seeds stored, converged, best epochs, test HR@10 and "
                           "NDCG@10 (mean ± std over seeds), the seeds no better than "
                           "most-popular on validation (failed trainings the budget rule calls "
                           "converged) and NDCG@10 against the section's best row with the "
                           "paired test over users")
    grid.add_argument("--claims", action="store_true",
                      help="every claim the notebook prints (the paper's claims, Improv. "
                           "columns, cold-start and crossover verdicts), computed from the runs "
                           "already stored with the notebook's own pairs and corrections (read "
                           "only; no checkpoints needed): which findings hold so far")
    grid.add_argument("--train", action="store_true",
                      help="train every run of the notebook's grids, all seeds (the runs `mmsr "
                           "plan --notebook NN` prices, for any notebook 00-12) as one queue "
                           "over the worker processes ($MMSR_WORKERS), sources before the runs "
                           "warm-started from them, and the 'no weights' runs again "
                           "(resumable; each stored result replaced when its re-run "
                           "completes); the notebook then loads them")
    grid.add_argument("--only", default=None, metavar="REGEX",
                      help="only the rows whose 'section / row' matches this regular expression "
                           "(case-insensitive), for --list, --summary and --train (with the "
                           "sources their transfers start from), e.g. --only MovieLens or "
                           "--only 'FDSA|CARCA'")
    grid.add_argument("--seeds", default=None, metavar="S1,S2,...",
                      help="comma-separated seeds instead of the profile's, for --list, --summary "
                           "and --train (single-seed sections such as transfer sources keep "
                           "theirs): settles a verdict the seeds withhold, e.g. --seeds "
                           "42,43,44,45,46 --only 'SASRec|FDSA'; render the notebook with the "
                           "same seeds (-p seeds '[42, 43, 44, 45, 46]')")
    _add_common(grid)

    _add_bench(sub)
    _add_plan(sub)
    return parser


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from mmsr_lib.bench import add_bench_parser

    add_bench_parser(sub)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    from mmsr_lib.plan import add_plan_parser

    add_plan_parser(sub)


def _config(args: argparse.Namespace):
    return profile_config(args.profile or default_profile()).override(*args.overrides)


def _store(path: str | None, readonly: bool = False):
    from mmsr_lib.runs.store import ResultsStore

    return ResultsStore(path, readonly=readonly)


def _store_if_any(path: str | None):
    """The store, read only, or None when there is none yet: listing never creates one."""
    try:
        return _store(path, readonly=True)
    except FileNotFoundError:
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    from mmsr_lib.workbook.quickstart import print_quickstart

    return print_quickstart(args.profile or default_profile(), *args.overrides,
                            store=_store(args.results), figures_dir=args.figures)


def cmd_data(args: argparse.Namespace) -> int:
    from mmsr_lib.data.format import load_dataset

    if args.data_command == "synth":
        from mmsr_lib.data.synthetic import ensure_catalog, generate_catalog

        cfg = _config(args).resolved()
        path = generate_catalog(cfg.data.synth, Path(args.out), overwrite=args.overwrite) \
            if args.out else ensure_catalog(cfg.data.synth, cfg.data.cache_dir)
    elif args.data_command == "import":
        report = _import(args)
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return 0
    elif args.data_command == "movielens":
        from mmsr_lib.data.movielens import ensure_movielens_100k

        path = ensure_movielens_100k(args.cache_dir)
    else:
        path = Path(args.path)
    raw = load_dataset(path)
    summary = {"path": str(path), **{k: raw.meta.get(k) for k in
               ("name", "source", "n_users", "n_items", "n_interactions", "image_size")},
               "skipped": {**raw.meta.get("skipped", {}), **raw.skipped}}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _import(args: argparse.Namespace):
    """`mmsr data import`: a registered data format, or the generic CSV tables."""
    from mmsr_lib.util import registry

    options = dict(users=args.users, seed=args.seed, image_size=args.image_size,
                   overwrite=args.overwrite, duplicates=args.duplicates, name=args.name,
                   min_user_interactions=args.min_user_interactions)
    if args.format is None or (registry.canonical("data_format", args.format) == "csv"
                               and args.src is None):
        from mmsr_lib.data.importer import import_tables

        if not args.interactions or not args.items:
            raise ValueError("mmsr data import needs --format NAME --src FOLDER, or "
                             "--interactions and --items (see mmsr data import --help)")
        return import_tables(args.interactions, args.items, args.images, args.out, **options)
    if args.src is None:
        raise ValueError(f"--format {args.format} needs --src: the folder with the provider's "
                         "files (docs/adapters.md)")
    return registry.create("data_format", args.format, args.src, args.out,
                           images=args.images, **options)


def cmd_train(args: argparse.Namespace) -> int:
    from mmsr_lib.runs.runner import run_or_load
    from mmsr_lib.util import distributed
    from mmsr_lib.workbook.report import run_summary

    cfg = _config(args)
    if args.init_from:
        cfg = cfg.override(train__init_from=args.init_from)
    cfg = cfg.resolved()
    if args.show_config:
        if distributed.is_main_process():
            print(json.dumps(cfg.to_dict(), indent=2))
            print(f"run hash: {cfg.hash()}")
        return 0
    # under torchrun every rank trains; rank 0 alone opens the results store and prints
    store = _store(args.results) if distributed.is_main_process() else None
    rec = run_or_load(cfg, store=store, force=args.force, allow_stale=args.allow_stale)
    if distributed.is_main_process():
        print(run_summary(rec))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mmsr_lib.runs.tuning import ID_SPACE, tune

    space = dict(ID_SPACE)
    if args.space:
        space = {}
        for item in args.space:
            key, _, values = item.partition("=")
            if not values:
                raise ValueError(f"--space {item!r} is not of the form section.key=v1,v2")
            space[key.strip()] = tuple(v.strip() for v in values.split(","))
    if args.notebook is not None:
        from mmsr_lib.plan import row_config

        if args.only is None:
            raise ValueError("--notebook needs --only naming one of its rows")
        base = row_config(args.notebook, args.profile or default_profile(), *args.overrides,
                          only=args.only)
    elif args.only is not None:
        raise ValueError("--only names a notebook row: give --notebook NN too")
    else:
        base = _config(args)
    if args.summary:
        from mmsr_lib.plan import tune_summary

        print(_trials_text(tune_summary(base, space, store=_store_if_any(args.results))))
        return 0
    search = tune(base, space, store=_store(args.results), progress=True,
                  allow_stale=args.allow_stale)
    print(_trials_text(search.trials))
    print("chosen on validation NDCG@10:", " ".join(f"--set {o}" for o in search.overrides()))
    for warning in search.edge_warnings():
        print("note:", warning)
    return 0


def _trials_text(trials) -> str:
    """A search's trials as `tune` and `tune --summary` both print them: scores to two
    decimals (percent), blanks where a trial has none yet, the run hashes left out."""
    import pandas as pd

    shown = trials.drop(columns=["hash"]).round(2).astype(object)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        return shown.where(shown.notna(), "").to_string(index=False)


def cmd_check_sasrec(args: argparse.Namespace) -> int:
    from mmsr_lib.workbook import recbole_check as rc

    profile = args.profile or default_profile()
    cfg, profile_seeds = rc.our_sasrec(profile, args.dataset, *args.overrides)
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else profile_seeds
    defaults = rc.RECBOLE_DEFAULTS
    folder = Path(args.folder) if args.folder else rc.default_folder(args.dataset, profile)
    # without --lr / --dropout: the setting validation chose among those tried at the first seed
    lr, dropout, source = rc.resolve_setting(rc.kept_runs(folder, profile_seeds[0]),
                                             profile_seeds[0], args.lr, args.dropout)
    print(f"RecBole's setting: lr {lr:g}, dropout {dropout:g} ({source})")
    budget = {"epochs": args.epochs or defaults["epochs"],
              "stopping_step": args.patience or defaults["stopping_step"]}
    if not args.summary:
        from mmsr_lib.runs.runner import load_data

        data = load_data(cfg.resolved().data)
        for seed in seeds:
            run = rc.train_or_load(data, folder, seed, lr, dropout, **budget)
            print(f"RecBole SASRec seed {seed}: test NDCG@10 {run.test['NDCG@10']:.2f} "
                  f"(best epoch {run.best_epoch} of {run.epochs_run}, {run.seconds:.0f} s)")
    check = rc.stored_check(_store_if_any(args.results), profile, args.dataset, seeds, args.lr,
                            args.dropout, folder, tuple(args.overrides))
    if len(check.search) > 1:
        print("RecBole's settings tried (validation chooses; test not used):")
        print(check.search.to_string(index=False))
    print(check.table.to_string(index=False))
    print(check.text)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from mmsr_lib.workbook.report import results_listing

    if args.results_command == "import":
        from mmsr_lib.runs.archive import import_archive

        report = import_archive(_store(args.results), args.folder)
        print("\n".join(report.lines("imported")))
        return 0 if not report.skipped else 1
    store = _store(args.results, readonly=True)
    if args.results_command == "archive":
        from mmsr_lib.runs.archive import write_archive

        print("\n".join(write_archive(store, args.folder, args.profile).lines("written")))
        return 0
    if args.results_command == "equate":
        from mmsr_lib.runs.equate import equate, report_lines

        if args.epochs < 1:
            raise ValueError(f"--epochs {args.epochs}: at least 1")
        report = equate(store, args.since, epochs=args.epochs, write=not args.dry_run)
        print("\n".join(report_lines(report, written=not args.dry_run)))
        return 0 if all(report.pairs().values()) else 1
    if args.results_command == "replay":
        from mmsr_lib.runs.replay import replay, report_lines

        result = replay(store, args.config_hash, epochs=args.epochs)
        print("\n".join(report_lines(result)))
        return 0 if result.equal else 1
    if args.results_command == "export":
        print(store.export_csv(args.csv))
        return 0
    if args.results_command == "audit":
        import pandas as pd

        from mmsr_lib.workbook.significance import audit

        found = audit(store, args.profile, args.split)
        for line in found.skipped:
            print(f"not checked: {line}")
        if found.flagged.empty:
            print(f"{found.checked} finished runs checked: none flagged")
            return 0
        with pd.option_context("display.width", 10_000, "display.max_colwidth", None,
                               "display.float_format", "{:.2f}".format):
            print(found.flagged.to_string(index=False))
        print(f"{found.checked} finished runs checked: {len(found.flagged)} flagged")
        return 0
    print(results_listing(store, split=args.split, status=args.status, wide=args.wide))
    return 0


def cmd_components(args: argparse.Namespace) -> int:
    from mmsr_lib.util import registry

    kinds = [args.kind] if args.kind else list(registry.KINDS)
    for kind in kinds:
        entries = registry.entries(kind)
        print(f"{kind} ({len(entries)}):")
        for e in entries:
            weights = ""
            if e.weights is not None:
                missing = e.missing()
                state = "available offline" if missing is None else f"not installed: {missing}"
                weights = f" [{e.weights}; {state}]" if e.weights == "pretrained" \
                    else " [random init]"
            alias = f" (also: {', '.join(e.aliases)})" if e.aliases else ""
            print(f"  {e.name:<34} {e.description}{weights}{alias}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from mmsr_lib.plan import (
        RUN_STATES,
        config_diff,
        label_text,
        notebook_runs,
        parse_seeds,
        run_state,
        started_progress,
        train_notebook,
    )

    profile = args.profile or default_profile()
    seeds = parse_seeds(args.seeds)
    if args.train:
        counts = train_notebook(args.notebook, profile, *args.overrides,
                                store=_store(args.results), only=args.only, seeds=seeds)
        again = (f" ({counts['retrained']} of them stored before without their weights, "
                 "trained again)" if counts["retrained"] else "")
        print(f"notebook {args.notebook} on {profile}: {counts['runs']} distinct runs, "
              f"{counts['stored']} stored before, {counts['trained']} trained now{again}")
        return 0
    base = profile_config(profile)
    store = _store_if_any(args.results)
    if args.claims:
        from mmsr_lib.claims import notebook_claims

        if store is None:
            print("no results store yet: nothing is stored, so nothing is claimed")
            return 0
        sections, claim_sets = notebook_claims(args.notebook, profile, *args.overrides,
                                               store=store, seeds=seeds)
        for sec in sections.values():
            print(f"# {sec.name}: {sec.header()}")
        for cs in claim_sets:
            print(f"\n## {cs.title} ({cs.source})")
            print("\n".join(cs.lines) if cs.lines else "(no pair has both rows stored)")
        return 0
    if args.summary:
        from mmsr_lib.plan import grid_summary

        table = grid_summary(args.notebook, profile, *args.overrides, store=store,
                             only=args.only, seeds=seeds)
        for section, part in table.groupby("section", sort=False):
            print(f"# {section}")
            part = part.drop(columns="section")
            part["row"] = part["row"].str.ljust(part["row"].str.len().max())  # left-aligned
            print(part.to_string(index=False))
        print(f"{table.attrs['stored']} of {table.attrs['planned']} runs stored in "
              f"{store.path if store else 'no results store yet'}; rows with missing seeds are "
              "means over the stored ones; 'vs best' pairs a row only with rows evaluated on "
              "the same users and targets (one best per catalog)")
        return 0
    section = None
    states: dict[str, str] = {}
    progress: dict[str, str] = {}
    for run in notebook_runs(args.notebook, profile, *args.overrides, only=args.only,
                             seeds=seeds):
        if run.section != section:
            section = run.section
            print(f"# {section}")
        cmd = ["mmsr", "train", "--profile", profile, *sum(
            (["--set", s] for s in config_diff(base, run.config)), [])]
        key = run.config.hash()
        if key not in states:  # a run shared by several rows is looked up once
            states[key] = run_state(run.config, store, run.reads_weights)
            note = started_progress(run.config, states[key])
            progress[key] = f"[{note}]  " if note else ""
        print(f"{label_text(run.label):<32} seed {run.config.train.seed:<4} {states[key]:<10}  "
              f"{key}  {progress[key]}{shlex.join(cmd)}")
    counts = Counter(states.values())
    print(f"{len(states)} distinct runs in {store.path if store else 'no results store yet'}: "
          + ", ".join(f"{counts[s]} {s}" for s in RUN_STATES if counts[s]))
    if counts["archived"]:
        print("archived runs are in the repository's results archive but not in this store: "
              "`mmsr results import docs/runs` adds them, so they are not trained again")
    if counts["no weights"]:
        print(f"'no weights' runs are stored (e.g. imported from docs/runs) but notebook "
              f"{args.notebook} reads each run's trained weights, and neither they nor what was "
              f"kept from them are on this machine: `mmsr grid {args.notebook} --train --profile "
              f"{profile}` trains them again (each stored result is replaced when its re-run "
              "completes; an interrupted one resumes)")
    if counts["stale"]:
        print("stale runs were computed by other code and train again with --train; if that "
              "change cannot alter results, `mmsr results equate --since REV` (REV: the commit "
              "that computed them) checks it and keeps them")
    return 0


HANDLERS = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "tune": cmd_tune,
            "check-sasrec": cmd_check_sasrec,
            "results": cmd_results, "components": cmd_components, "grid": cmd_grid}


# the commands that train and store runs (the others, e.g. plan and bench, leave no checkpoint)
TRAINING_COMMANDS = frozenset({"demo", "train", "tune", "grid"})


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as an interrupt: a grid's worker pool stops its workers on it
    (`runs.parallel.train_in_processes`) instead of leaving them training as orphans that hold
    their runs' locks, and the run in this process is recorded as stopped, not failed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM / SIGHUP raise `Terminated` while the command runs (main thread only); the
    previous handlers come back afterwards (`main` is also called from tests and scripts)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with signals_as_interrupts():
            return _dispatch(args)
    except KeyboardInterrupt as err:
        what = "terminated" if isinstance(err, Terminated) else "interrupted"
        if args.command in TRAINING_COMMANDS:
            what += " (a resumable run continues from its last checkpoint when started again)"
        print(f"mmsr: {what}", file=sys.stderr)
        return 128 + err.signum if isinstance(err, Terminated) else 130
    except Exception as err:  # every failure: one line that says what to do
        if args.verbose:
            raise
        message = str(err) if str(err) else type(err).__name__
        if isinstance(err, KeyError) and err.args:
            message = str(err.args[0])
        print(f"mmsr: error: {message} (run with -v for the traceback)", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from mmsr_lib.util import registry
    from mmsr_lib.util.threads import configure_threads

    configure_threads()  # this process's usable cores (or $MMSR_THREADS / $OMP_NUM_THREADS)
    registry.load_plugins(args.plugin)
    if args.command == "bench":
        from mmsr_lib.bench import cmd_bench

        return cmd_bench(args)
    if args.command == "plan":
        from mmsr_lib.plan import cmd_plan

        return cmd_plan(args)
    return HANDLERS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
