"""`mmsr` command line: data, training, results (and benchmarks) from scripts and shells."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mmsr_lib.config import PROFILES, default_profile, profile_config

EPILOG = """examples:
  mmsr demo                                   # the quick start: ID-based SASRec/GRU4Rec/NextItNet + MostPop
  mmsr data synth --profile cpu               # generate the embedded synthetic catalog
  mmsr data synth --set data.synth.domain=target --out data/target
  mmsr data import --interactions inter.csv --items items.csv --images imgs/ --out data/hm
  mmsr train --profile cpu --set model.sequence=gru4rec --set train.epochs=10
  mmsr train --set data.source=path --set data.path=data/hm --profile paper
  mmsr results list
  mmsr results export --csv results.csv
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="sizes: smoke (CI, seconds), cpu (laptop, minutes), paper (GPU, real data); "
                        "default: $MMSR_PROFILE or cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, repeatable (e.g. train.lr=1e-3, model.dim=128)")
    p.add_argument("--results", default=None,
                   help="SQLite results store (default: $MMSR_RESULTS or results/mmsr.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsr", description="MMSR workbook: ID-agnostic multi-modal sequential recommendation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the quick start: train the ID-based models, print the table, "
                                       "write figures/quickstart_*.png")
    _add_common(demo)
    demo.add_argument("--figures", default="figures", help="output folder for figures")

    data = sub.add_parser("data", help="generate, import or inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="generate the embedded synthetic catalog (deterministic)")
    _add_common(synth)
    synth.add_argument("--out", default=None, help="output folder (default: a cached folder under "
                                                   "data.cache_dir named by the knobs' hash)")
    imp = dsub.add_parser("import", help="convert CSV/TSV files + an image folder into the mmsr format")
    imp.add_argument("--interactions", required=True, help="CSV/TSV with columns user,item,timestamp")
    imp.add_argument("--items", required=True, help="CSV/TSV with columns item,text,image")
    imp.add_argument("--images", default=None, help="folder the image column is relative to")
    imp.add_argument("--out", required=True, help="output folder")
    imp.add_argument("--image-size", type=int, default=224)
    imp.add_argument("--name", default=None)
    ml = dsub.add_parser("movielens", help="convert MovieLens-100K shipped in the recbole wheel")
    ml.add_argument("--cache-dir", default="data")
    info = dsub.add_parser("info", help="validate a data set and print its statistics")
    info.add_argument("path")

    train = sub.add_parser("train", help="train and evaluate one configuration (stored; resumable)")
    _add_common(train)
    train.add_argument("--force", action="store_true", help="train again even if stored")
    train.add_argument("--show-config", action="store_true", help="print the resolved config and exit")

    res = sub.add_parser("results", help="list or export stored runs")
    rsub = res.add_subparsers(dest="results_command", required=True)
    lst = rsub.add_parser("list", help="one line per stored run")
    lst.add_argument("--results", default=None)
    lst.add_argument("--split", default="test", help="valid | test | cold_valid | cold_test")
    lst.add_argument("--status", default="done", help="done | running | failed | all")
    exp = rsub.add_parser("export", help="export stored runs as CSV")
    exp.add_argument("--results", default=None)
    exp.add_argument("--csv", required=True, help="output path")

    _add_bench(sub)
    return parser


def _add_bench(sub: argparse._SubParsersAction) -> None:
    try:
        from mmsr_lib.bench import add_bench_parser
    except ImportError:  # benchmarks are optional for the rest of the CLI
        return
    add_bench_parser(sub)


def _config(args: argparse.Namespace):
    return profile_config(args.profile or default_profile()).override(*args.overrides)


def _store(path: str | None):
    from mmsr_lib.results import ResultsStore

    return ResultsStore(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from mmsr_lib.quickstart import quickstart_markdown, run_quickstart

    profile = args.profile or default_profile()
    table, records = run_quickstart(profile, *args.overrides, store=_store(args.results),
                                    figures_dir=args.figures)
    any_rec = next(iter(records.values()))
    print(f"\nTest metrics (%), profile={profile}, data={any_rec.extra.get('data')}, "
          f"{any_rec.extra.get('n_users')} users, {any_rec.extra.get('n_items')} items; "
          "bold best, underlined second:\n")
    print(quickstart_markdown(table))
    print(f"\nfigures: {args.figures}/quickstart_curves.png, quickstart_results.png, "
          "quickstart_items.png")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mmsr_lib.data.format import load_dataset

    if args.data_command == "synth":
        from mmsr_lib.data.synthetic import ensure_catalog, generate_catalog

        cfg = _config(args)
        path = generate_catalog(cfg.data.synth, Path(args.out)) if args.out else \
            ensure_catalog(cfg.data.synth, cfg.data.cache_dir)
    elif args.data_command == "import":
        from mmsr_lib.data.importer import import_dataset

        path = import_dataset(args.interactions, args.items, args.images, args.out,
                              image_size=args.image_size, name=args.name)
    elif args.data_command == "movielens":
        from mmsr_lib.data.movielens import ensure_movielens_100k

        path = ensure_movielens_100k(args.cache_dir)
    else:
        path = Path(args.path)
    raw = load_dataset(path)
    summary = {"path": str(path), **{k: raw.meta.get(k) for k in
               ("name", "source", "n_users", "n_items", "n_interactions", "image_size")},
               "skipped": raw.skipped}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mmsr_lib import distributed
    from mmsr_lib.experiment import run_experiment, run_or_load_distributed
    from mmsr_lib.report import to_markdown
    from mmsr_lib.study import metrics_frame

    cfg = _config(args)
    if args.show_config:
        if distributed.is_main_process():
            print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    # under torchrun every rank trains; rank 0 alone opens the results store and prints
    rec = run_or_load_distributed(cfg, runner=run_experiment, results=args.results,
                                  force=args.force)
    if not distributed.is_main_process():
        return 0
    rows = {s: rec for s in ("valid", "test", "cold_test")}
    frames = [metrics_frame({s: r}, s, label="split") for s, r in rows.items()]
    import pandas as pd

    table = pd.concat(frames).set_index("split")
    print(f"run {cfg.name} [{cfg.hash()}] {cfg.model.item_encoder}/{cfg.model.sequence}, "
          f"best epoch {rec.extra.get('best_epoch')}, status {rec.status}")
    print(to_markdown(table, list(table.columns), best="none"))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    store = _store(args.results)
    if args.results_command == "export":
        print(store.export_csv(args.csv))
        return 0
    status = None if args.status == "all" else args.status
    frame = store.to_frame(args.split)
    if status is not None and "status" in frame:
        frame = frame[frame["status"] == status]
    if frame.empty:
        print("no stored runs" + (f" with status {status}" if status else ""))
        return 0
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "results": cmd_results}
    if args.command == "bench":
        from mmsr_lib.bench import cmd_bench

        return cmd_bench(args)
    try:
        return handlers[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        if args.verbose:  # the full traceback for bug reports
            raise
        print(f"mmsr: error: {err} (run with -v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
