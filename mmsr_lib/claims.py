"""Every claim a notebook prints, read from the runs already stored: `mmsr grid NN --claims`.

The notebooks print their verdicts once a grid has trained. This computes the same families
(the same library calls, pair lists and Holm corrections) from the results store alone, so a
user sees which of the paper's claims hold while a grid still trains, after adding seeds
(`mmsr grid NN --train --seeds ...`), or on a machine that has the stored results but not the
runs' checkpoints: notebooks 07 and 11 re-evaluate trained models for their other protocols,
and their claims here come from the stored per-user ranks, as the notebooks' own verdicts do.
Rows with no stored run are left out and counted (a pair needs both rows); rows with fewer
seeds than planned use the stored ones, and the header says so. Notebook 10's purity claims
read the trained models' item and user vectors: from the store where they were kept with the
runs (`runs.derived`), else from the checkpoints (loaded, not trained); where neither is at
hand the family says so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmsr_lib.runs.store import ResultsStore, RunRecord

if TYPE_CHECKING:
    from mmsr_lib.plan import Section

Results = dict[Hashable, list[RunRecord]]


@dataclass
class StoredSection:
    """One grid of a notebook (`plan.Section`) with the runs stored so far, row by row."""

    name: str
    configs: dict[Hashable, object]  # label -> the row's configuration (its first seed)
    results: Results
    planned: int  # runs the section plans (rows x seeds)
    stored: int
    missing_rows: list[Hashable] = field(default_factory=list)

    def header(self) -> str:
        left = (f"; rows with no stored run: {len(self.missing_rows)}"
                if self.missing_rows else "")
        return f"{self.stored} of {self.planned} runs stored{left}"


@dataclass
class ClaimSet:
    """A family of verdicts as a notebook prints it: a title, where it comes from, the lines."""

    title: str
    source: str
    lines: list[str]


def stored_sections(notebook: str, profile: str, *overrides: str, store: ResultsStore,
                    seeds: Sequence[int] | None = None,
                    grids: Sequence[Section] | None = None) -> dict[str, StoredSection]:
    """The notebook's grids (`plan.notebook_runs`; `grids`: already built), each row with its
    current stored runs (stale, failed or unfinished runs are not results)."""
    from mmsr_lib.plan import notebook_runs, run_state_and_record

    out: dict[str, StoredSection] = {}
    for run in notebook_runs(notebook, profile, *overrides, seeds=seeds, sections=grids):
        sec = out.get(run.section)
        if sec is None:
            sec = out[run.section] = StoredSection(run.section, {}, {}, 0, 0)
        sec.configs.setdefault(run.label, run.config)
        sec.planned += 1
        state, record = run_state_and_record(run.config, store)
        if state == "stored":
            sec.results.setdefault(run.label, []).append(record)
            sec.stored += 1
    for sec in out.values():
        sec.missing_rows = [label for label in sec.configs if label not in sec.results]
    return out


def _results(sections: Mapping[str, StoredSection], name: str) -> Results:
    sec = sections.get(name)
    return sec.results if sec else {}


def _nb00(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook.quickstart import quickstart_summary, quickstart_table

    results = _results(ctx.sections, "quickstart")
    if not results:
        return []
    text = quickstart_summary(quickstart_table(results), results, ctx.store)
    return [ClaimSet("the quick start's sentences", "quickstart_summary", text.splitlines())]


def _nb01(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import grids
    from mmsr_lib.workbook.significance import claims

    r = _results(ctx.sections, "Table II")
    return [ClaimSet("Table II: the paper's claims", "grids.TABLE2_CLAIMS",
                     claims(ctx.store, r, grids.TABLE2_CLAIMS))]


def _nb02(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import grids
    from mmsr_lib.workbook.significance import claims

    t3 = _results(ctx.sections, "Table III")
    residual = _results(ctx.sections, "Coarse+ with a residual DNN (ours)")
    authors = _results(ctx.sections, "Coarse, the authors' code's gate and FiLM")
    return [
        ClaimSet("Table III: the paper's claims", "grids.TABLE3_CLAIMS",
                 claims(ctx.store, t3, grids.TABLE3_CLAIMS)),
        ClaimSet("Coarse+ with a residual DNN (ours)", "grids.RESIDUAL_DNN_CLAIMS",
                 claims(ctx.store, {**t3, **residual}, grids.RESIDUAL_DNN_CLAIMS)),
        ClaimSet("the authors' code's gate and FiLM", "grids.AUTHORS_CODE_CLAIMS",
                 claims(ctx.store, {**t3, **authors}, grids.AUTHORS_CODE_CLAIMS))]


def _nb03(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import grids

    out = []
    for name, content, splits in (("Table IV", "MMSR", ("test", "cold_test")),
                                  ("Table IV MovieLens-100K", "MMSR-T", ("test",))):
        r = _results(ctx.sections, name)
        if not r:
            continue
        pairs = {a: ((a, content), (a, "IDSR")) for a in grids.ARCHITECTURES}
        for split in splits:
            col = grids.significance_column(ctx.store, r, pairs, split=split)
            out.append(ClaimSet(f"{name}: {content} vs IDSR ({split}, NDCG@10, paired)",
                                "grids.significance_column",
                                [f"{arch}: {cell}" for arch, cell in col.items()]))
    return out


def _nb04(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import comparisons

    out = []
    for name in ("Table V", "Table V MovieLens-100K"):
        r = _results(ctx.sections, name)
        if not r:
            continue
        ours = comparisons.ours_label(ctx.sections[name].configs)
        lines = (comparisons.improvement_sentences(ctx.store, r)
                 if ours in r and len(r) > 1 else [f"Improv.: {ours[1]} or every baseline has "
                                                   "no stored run"])
        lines += comparisons.row_claims(ctx.store, r, comparisons.table5_pairs(r))
        out.append(ClaimSet(f"{name}: Improv. and the paper's claims",
                            "comparisons.improvement_sentences, table5_pairs", lines))
    heads = _results(ctx.sections, comparisons.CARCA_HEAD_SECTION)
    if heads:
        from mmsr_lib.workbook.significance import claims

        out.append(ClaimSet(f"{comparisons.CARCA_HEAD_SECTION}: does the scorer make CARCA++ "
                            "under-fit?",
                            "comparisons.CARCA_HEAD_CLAIMS",
                            claims(ctx.store, heads, comparisons.CARCA_HEAD_CLAIMS)))
    return out


def _nb05(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import comparisons

    r = _results(ctx.sections, "Table VI")
    paradigms = comparisons.paradigm_runs(r)
    return [ClaimSet("Table VI: model by model", "comparisons.table6_pairs",
                     comparisons.row_claims(ctx.store, r, comparisons.table6_pairs(r))),
            ClaimSet("Table VI: paradigm by paradigm", "comparisons.paradigm_pairs",
                     comparisons.row_claims(ctx.store, paradigms,
                                            comparisons.paradigm_pairs(paradigms)))]


def _nb06(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import comparisons

    r = _results(ctx.sections, "Table VII")
    return [ClaimSet("Table VII: the paper's claims", "comparisons.table7_pairs",
                     comparisons.row_claims(ctx.store, r, comparisons.table7_pairs(r)))]


def _nb07(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import cold_start

    r = _results(ctx.sections, "Table IV (cold)")
    if not r:
        return []
    tests = cold_start.cold_tests(ctx.store, r)
    return [ClaimSet("cold test users (target protocol)", "cold_start.cold_tests",
                     list(cold_start.cold_verdicts(tests).values()) if len(tests) else [])]


def _nb08(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import transfer

    out = []
    for name, pairs in (("Table IX", transfer.table9_pairs), ("Table X", transfer.table10_pairs)):
        grid = ctx.grid(name)
        out.append(ClaimSet(f"{name}: transfer vs scratch", f"transfer.{pairs.__name__}",
                            transfer.transfer_verdicts(ctx.store, _results(ctx.sections, name),
                                                       pairs(grid))))
    return out


def _nb09(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import tricks

    out = []
    for table in tricks.TABLES:
        name = f"Table {table}"
        pairs_of = tricks.PAIRS[table]
        pairs = pairs_of(ctx.grid(name))
        verdicts = tricks.verdict_table(ctx.store, _results(ctx.sections, name), pairs)
        out.append(ClaimSet(f"{name}", f"tricks.{pairs_of.__name__}",
                            list(verdicts["verdict"])))
    return out


def _nb10(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import embeddings
    from mmsr_lib.workbook.significance import converged

    r = _results(ctx.sections, embeddings.RUNS_SECTION)
    if not all(r.get(key) for key in embeddings.MODEL_ROWS.values()):
        return []
    runs = {name: r[key] for name, key in embeddings.MODEL_ROWS.items()}
    try:
        vectors = embeddings.model_vectors(runs, store=ctx.store)
    except FileNotFoundError as err:
        return [ClaimSet("item and user vectors: purity@10 by category", "embeddings.model_vectors",
                         [f"not computed here: {err}"])]
    items = embeddings.item_frame(vectors.data, embeddings.catalog_attributes(runs["IDSR"][0]))
    is_converged = {name: converged(rec) for name, rec in runs.items()}
    return [ClaimSet("item vectors: purity@10 by category", "embeddings.item_claims",
                     embeddings.item_claims(vectors, items, is_converged)[1]),
            ClaimSet("user vectors: purity@10 by dominant category", "embeddings.user_claims",
                     embeddings.user_claims(vectors, items, is_converged)[2])]


def _nb11(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import protocol

    out = []
    for name in ("synthetic", "movielens-100k"):
        r_last = _results(ctx.sections, f"{name} last windows")
        r_all = _results(ctx.sections, "models (all windows, track_test)" if name == "synthetic"
                         else f"{name} all windows")
        if not r_last or not r_all:
            continue
        table = protocol.window_table(ctx.store, r_all, r_last)
        out.append(ClaimSet(f"question 3, {name}: training windows last vs all",
                            "protocol.window_table",
                            [protocol.window_sentence(str(label), row)
                             for label, row in table.iterrows()]))
    return out


def _nb12(ctx: _Context) -> list[ClaimSet]:
    from mmsr_lib.workbook import crossover as xo

    out = []
    for name, contents in (("density sweep", ("MMSR-T", "MMSR-V", "MMSR")),
                           ("subsample sweep", ("MMSR-T",))):
        r = _results(ctx.sections, name)
        if not r:
            continue
        grid = ctx.grid(name)
        stats = xo.point_statistics(grid)
        lines = [xo.sweep_crossover(ctx.store, r, grid, stats, content, "IDSR", split,
                                    metric).sentence()
                 for metric in xo.METRICS for split in xo.SPLITS for content in contents
                 if any(label[1] == content for label in r)]
        out.append(ClaimSet(f"{name}: where content crosses IDSR", "crossover.sweep_crossover",
                            lines))
    return out


@dataclass
class _Context:
    notebook: str
    profile: str
    overrides: Sequence[str]
    store: ResultsStore
    sections: dict[str, StoredSection]
    grids: Mapping[str, Mapping] = field(default_factory=dict)  # section -> its `Grid`

    def grid(self, name: str) -> Mapping:
        """A section's grid as the notebook builds it (a `Grid` with its own attributes, e.g.
        a sweep's points), for the claim functions that read more than the labels."""
        if name not in self.grids:
            raise KeyError(f"notebook {self.notebook} has no section {name!r}")
        return self.grids[name]


CLAIM_SETS: dict[str, Callable[[_Context], list[ClaimSet]]] = {
    "00": _nb00, "01": _nb01, "02": _nb02, "03": _nb03, "04": _nb04, "05": _nb05, "06": _nb06,
    "07": _nb07, "08": _nb08, "09": _nb09, "10": _nb10, "11": _nb11, "12": _nb12}


def notebook_claims(notebook: str, profile: str, *overrides: str, store: ResultsStore,
                    seeds: Sequence[int] | None = None
                    ) -> tuple[dict[str, StoredSection], list[ClaimSet]]:
    """The notebook's sections with their stored runs, and every family of claims it prints,
    computed from them."""
    from mmsr_lib.plan import notebook_key, notebook_sections

    key = notebook_key(notebook)
    if key not in CLAIM_SETS:
        raise ValueError(f"notebook {notebook} prints no claims to read from the store; "
                         f"choose one of {sorted(CLAIM_SETS)}")
    built = notebook_sections(key, profile, *overrides)
    sections = stored_sections(key, profile, *overrides, store=store, seeds=seeds, grids=built)
    grids = {sec.name: sec.configs for sec in built}
    ctx = _Context(key, profile, overrides, store, sections, grids)
    return sections, CLAIM_SETS[key](ctx)
