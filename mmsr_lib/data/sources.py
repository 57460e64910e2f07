"""Where a run's raw data set comes from: registered data sources (kind "data_source").

A source turns a `DataConfig` into the folder of a data set in the on-disk format
(`mmsr_lib.data.format`), generating or converting it on first use. Adding a source is one
decorated function; real-data *converters* (`mmsr data import --format ...`) are the
"data_format" kind in `mmsr_lib.data.adapters`.
"""

from __future__ import annotations

from pathlib import Path

from mmsr_lib.config import DataConfig
from mmsr_lib.util import registry
from mmsr_lib.util.paths import resolve


@registry.register("data_source", "synthetic", aliases=("synth", "embedded"),
                   description="the embedded synthetic catalog, generated from data.synth")
def synthetic_source(cfg: DataConfig) -> Path:
    from mmsr_lib.data.synthetic import ensure_catalog

    return Path(ensure_catalog(cfg.synth, resolve(cfg.cache_dir)))


@registry.register("data_source", "movielens-100k", aliases=("ml-100k", "movielens"),
                   description="MovieLens-100K (real interactions, titles + genres, no images) "
                               "from the recbole wheel")
def movielens_source(cfg: DataConfig) -> Path:
    from mmsr_lib.data.movielens import ensure_movielens_100k

    return Path(ensure_movielens_100k(resolve(cfg.cache_dir)))


@registry.register("data_source", "path", aliases=("folder", "disk"),
                   description="a data set folder in the mmsr format named by data.path "
                               "(made by `mmsr data import`)")
def path_source(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise ValueError(
            "data.source='path' needs data.path: a directory in the mmsr data format "
            "(create one with `mmsr data import ...`; see docs/data.md)"
        )
    root = resolve(cfg.path)
    if not root.is_dir():
        raise FileNotFoundError(f"data.path={cfg.path!r}: {root} is not a folder; create the data "
                                "set with `mmsr data import ...` or fix the path")
    return root


def dataset_root(cfg: DataConfig) -> Path:
    """The folder of the raw data set of `cfg`, generating or converting it when needed."""
    return registry.create("data_source", cfg.source, cfg)
