"""H&M Personalized Fashion Recommendations (Kaggle), read as the competition publishes it.

``src`` holds ``transactions_train.csv`` (t_dat, customer_id, article_id, price,
sales_channel_id), ``articles.csv`` (article_id, prod_name, product_type_name, ..., detail_desc)
and ``images/0XX/0XXXXXXXXX.jpg`` (the folder is the first three digits of the ten-digit,
zero-padded article id). Article ids are read as strings and padded to ten digits, so the
leading zero survives (reading them as numbers is the classic H&M bug).

``t_dat`` is a date: several purchases of a customer share one day, and those keep their order
in ``transactions_train.csv`` (the stable sort of the importer and of ``build_sequences``), the
only order the file gives. Item text follows the paper: the description plus categorical tags
so that products with the same description stay apart (`HM_TEXT_RECIPE`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmsr_lib.data.adapters._common import (
    compose_text,
    default_images,
    source_dir,
    start,
    unique_join,
)
from mmsr_lib.data.importer import (
    ImportReport,
    LmdbImages,
    image_source,
    import_frames,
    normalise_ids,
    parse_timestamps,
    read_delimited,
)
from mmsr_lib.util.registry import register

log = logging.getLogger("mmsr.data")

TRANSACTIONS = "transactions_train.csv"
ARTICLES = "articles.csv"
IMAGES = "images"
HM_TAG_FIELDS: tuple[str, ...] = (
    "product_type_name", "product_group_name", "graphical_appearance_name", "colour_group_name",
    "perceived_colour_value_name", "department_name", "index_name", "section_name",
    "garment_group_name",
)
HM_TEXT_RECIPE = (
    "'{prod_name}. {tags}. {detail_desc}' where tags = product_type_name, product_group_name, "
    "graphical_appearance_name, colour_group_name, perceived_colour_value_name, "
    "department_name, index_name, section_name, garment_group_name joined with ', ' (empty and "
    "repeated values left out); empty parts are skipped"
)
_LAYOUT = f"{TRANSACTIONS}, {ARTICLES} and {IMAGES}/0XX/0XXXXXXXXX.jpg"


def _pad_article_id(article_id: str) -> str:
    a = article_id.strip()
    return a.zfill(10) if a.isdigit() and len(a) < 10 else a


def normalise_article_ids(ids: pd.Series) -> pd.Series:
    """Article ids as ten-digit strings: whitespace stripped, purely numeric ids shorter than
    ten digits zero-padded (a file that went through a spreadsheet lost the leading zero)."""
    return normalise_ids(ids, _pad_article_id)


def hm_item_text(articles: pd.DataFrame) -> pd.Series:
    """Item texts by `HM_TEXT_RECIPE` (missing columns count as empty)."""
    n = len(articles)

    def col(name: str) -> list:
        return articles[name].tolist() if name in articles.columns else [""] * n

    tags = list(zip(*(col(f) for f in HM_TAG_FIELDS), strict=True)) if n else []
    texts = [compose_text([name, unique_join(t), desc])
             for name, t, desc in zip(col("prod_name"), tags, col("detail_desc"), strict=True)]
    return pd.Series(texts, index=articles.index, dtype=object)


def hm_image_key(article_id: str) -> str:
    """``0XX/0XXXXXXXXX.jpg`` for a ten-digit article id ("" for anything else)."""
    return f"{article_id[:3]}/{article_id}.jpg" if len(article_id) == 10 and \
        article_id.isdigit() else ""


@register("data_format", "hm",
          description="H&M Personalized Fashion Recommendations (Kaggle): <src>/"
                      "transactions_train.csv, articles.csv, images/0XX/0XXXXXXXXX.jpg")
def import_hm(src: str | os.PathLike, out: str | os.PathLike, **options: Any) -> ImportReport:
    """Import the H&M data in `src` (layout in the module docstring) into a data set at `out`.

    `images` overrides ``<src>/images``; without either the import is text only. Articles that
    nobody (of the sampled users) bought are left out, so their images are never decoded.
    """
    src = source_dir(src, "hm", _LAYOUT)
    opts = start(out, options)
    tx_path, art_path = src / TRANSACTIONS, src / ARTICLES
    cols = ("t_dat", "customer_id", "article_id")
    tx, lines = read_delimited(tx_path, required=cols, usecols=cols, categorical=cols,
                               what="H&M transactions")
    timestamps = parse_timestamps(tx["t_dat"], tx_path, column="t_dat", line_of=lines)
    inter = pd.DataFrame({"user": tx["customer_id"],
                          "item": normalise_ids(tx["article_id"], _pad_article_id),
                          "timestamp": timestamps})
    del tx
    arts, _ = read_delimited(art_path, required=("article_id", "prod_name"),
                             what="H&M articles")
    absent = [c for c in (*HM_TAG_FIELDS, "detail_desc") if c not in arts.columns]
    if absent:
        log.warning("%s lacks the text columns %s; item texts are built without them",
                    art_path, absent)
    ids = normalise_article_ids(arts["article_id"])
    image_path = _images_path(src, opts.images)
    source = image_source(image_path) if image_path is not None else None
    if source is None:
        keys = np.full(len(ids), "", dtype=object)
    elif isinstance(source, LmdbImages):
        keys = ids.to_numpy(dtype=object)
    else:
        keys = np.asarray([hm_image_key(a) for a in ids], dtype=object)
    items = pd.DataFrame({"item": ids.to_numpy(), "text": hm_item_text(arts).to_numpy(),
                          "image": keys})
    try:
        return import_frames(
            inter, items, source, out, **opts.frames(), drop_unused_items=True, fmt="hm",
            source=f"H&M Personalized Fashion Recommendations (Kaggle) from {src}",
            inputs={"transactions": str(tx_path), "articles": str(art_path),
                    "images": str(image_path) if image_path is not None else None},
            extra_meta={
                "text_recipe": HM_TEXT_RECIPE,
                "timestamp_unit": "s: t_dat at 00:00 UTC; purchases of one day keep their "
                                  f"order in {TRANSACTIONS}",
            },
            where=(str(tx_path), str(art_path)),
        )
    finally:
        if source is not None:
            source.close()


def _images_path(src: Path, images: str | os.PathLike | None) -> Path | None:
    path = default_images(src, images, (IMAGES,))
    if path is None:
        log.warning("%s has no %s/ folder and no --images was given: importing text only",
                    src, IMAGES)
    return path


