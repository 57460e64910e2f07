"""Provider adapters (H&M, Amazon 2018/2023, PixelRec-style), sampling and Table I statistics, on
small fixture files written in exactly each provider's published schema."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_lib.data.adapters import import_amazon2018, import_amazon2023, import_hm, import_pixelrec
from mmsr_lib.data.adapters._common import compose_text
from mmsr_lib.data.adapters.hm import HM_TAG_FIELDS, hm_item_text
from mmsr_lib.data.format import DatasetExistsError, load_dataset
from mmsr_lib.data.images import ImageStore
from mmsr_lib.data.importer import ImportReport, InputFormatError
from mmsr_lib.data.preprocess import build_sequences
from mmsr_lib.data.sampling import sample_users
from mmsr_lib.data.stats import dataset_statistics, statistics_table
from mmsr_lib.util import registry

RED, GREEN, BLUE, GREY = (220, 20, 20), (20, 200, 20), (20, 20, 220), (90, 90, 90)


def jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (14, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG" if path.suffix == ".jpg" else None)


def write_csv(path: Path, header: list[str], rows: list[list], sep: str = ",") -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)


def by_item(root: Path) -> pd.DataFrame:
    return load_dataset(root).items.set_index("item")


# -- H&M -----------------------------------------------------------------------------------
HM_ARTICLE_HEADER = [
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name",
    "product_group_name", "graphical_appearance_no", "graphical_appearance_name",
    "colour_group_code", "colour_group_name", "perceived_colour_value_id",
    "perceived_colour_value_name", "perceived_colour_master_id", "perceived_colour_master_name",
    "department_no", "department_name", "index_code", "index_name", "index_group_no",
    "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
]
HM_TX_HEADER = ["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]
HM_ARTICLES = {  # article id -> (prod_name, colour, detail_desc)
    "0108775015": ("Strap top", "Black", "Jersey top with narrow shoulder straps."),
    "0108775044": ("Strap top", "White", "Jersey top with narrow shoulder straps."),
    "0110065001": ("OP T-shirt(Idro)", "Black", "Microfibre T-shirt bra."),
    "0111565001": ("20 den 1p Stockings", "Black", ""),  # no description, broken image
    "0111586001": ("Shape Up 30 den 1p Tights", "Black", "Tights with built-in support."),
    "0112679048": ("Chestnut Strap Shoe", "Beige", "Shoes."),  # no image file at all
    "0120129001": ("Never bought", "Red", "Nobody buys this one."),
}
HM_COLOURS = {"0108775015": RED, "0108775044": GREEN, "0110065001": BLUE, "0111586001": GREY}
C = {k: k * 64 for k in "abcdef"}  # 64-hex customer ids


def article_row(aid: str, name: str, colour: str, desc: str) -> list:
    return [aid, aid[:7], name, "253", "Vest top", "Garment Upper body", "1010016", "Solid",
            "9", colour, "4", "Dark", "5", colour, "1676", "Jersey Basic", "A", "Ladieswear",
            "1", "Ladieswear", "16", "Womens Everyday Basics", "1002", "Jersey Basic", desc]


def write_hm(root: Path, tx_rows: list[list] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "articles.csv", HM_ARTICLE_HEADER,
              [article_row(a, *v) for a, v in HM_ARTICLES.items()])
    if tx_rows is None:
        a = list(HM_ARTICLES)
        tx_rows = [
            # user a: six purchases, two on 2018-09-21 (file order decides: a[2] before a[0])
            ["2018-09-20", C["a"], a[0], "0.0508", "2"],
            ["2018-09-21", C["a"], a[2], "0.0305", "2"],
            ["2018-09-21", C["a"], a[0], "0.0508", "2"],
            ["2018-09-23", C["a"], a[3], "0.0169", "1"],
            ["2018-09-25", C["a"], a[4], "0.0152", "2"],
            ["2018-09-30", C["a"], a[1], "0.0508", "2"],
            # user b: five purchases, listed out of date order in the file
            ["2018-10-02", C["b"], a[4], "0.0152", "2"],
            ["2018-09-22", C["b"], a[1], "0.0508", "2"],
            ["2018-09-24", C["b"], a[2], "0.0305", "2"],
            ["2018-09-26", C["b"], a[5], "0.0305", "1"],
            ["2018-09-28", C["b"], a[0], "0.0508", "2"],
            # user c: two purchases (dropped later by the 5-interaction filter)
            ["2018-09-22", C["c"], a[0], "0.0508", "2"],
            ["2018-09-23", C["c"], a[1], "0.0508", "2"],
            # user d: five, one a duplicate of the same day and article
            ["2018-09-20", C["d"], a[1], "0.0508", "2"],
            ["2018-09-20", C["d"], a[1], "0.0508", "2"],
            ["2018-09-21", C["d"], a[2], "0.0305", "2"],
            ["2018-09-22", C["d"], a[3], "0.0169", "2"],
            ["2018-09-23", C["d"], a[4], "0.0152", "2"],
        ]
    write_csv(root / "transactions_train.csv", HM_TX_HEADER, tx_rows)
    for aid, colour in HM_COLOURS.items():
        jpeg(root / "images" / aid[:3] / f"{aid}.jpg", colour)
    (root / "images" / "011" / "0111565001.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    return root


def test_hm_import_content(tmp_path):
    src = write_hm(tmp_path / "hm")
    report = import_hm(src, tmp_path / "out", image_size=8, name="hm-test")
    assert isinstance(report, ImportReport) and report.format == "hm"
    raw = load_dataset(report.path)
    items = raw.items.set_index("item")
    # ids keep the leading zero; the never-bought article is left out
    assert set(items.index) == set(HM_ARTICLES) - {"0120129001"}
    assert all(i.startswith("0") and len(i) == 10 for i in raw.interactions["item"])
    assert items.loc["0108775015", "text"] == (
        "Strap top. Vest top, Garment Upper body, Solid, Black, Dark, Jersey Basic, Ladieswear, "
        "Womens Everyday Basics. Jersey top with narrow shoulder straps.")
    assert items.loc["0111565001", "text"] == (
        "20 den 1p Stockings. Vest top, Garment Upper body, Solid, Black, Dark, Jersey Basic, "
        "Ladieswear, Womens Everyday Basics")
    # images: four decoded, one broken, one missing
    store = ImageStore(raw.image_path)
    for aid, colour in HM_COLOURS.items():
        pixel = store.get([items.loc[aid, "image"]])[0].reshape(-1, 3).mean(0)
        assert np.abs(pixel - colour).max() < 40, aid
    assert items.loc["0111565001", "image"] == -1 and items.loc["0112679048", "image"] == -1
    cov = report.coverage
    assert cov["items"] == 6 and cov["items_without_image"] == 2
    assert cov["broken_image_files"] == 1 and cov["missing_image_files"] == 1
    assert cov["items_without_text"] == 0 and cov["items_without_interactions_dropped"] == 1
    assert report.skipped == {"corrupt_image": 1, "missing_image": 1}
    assert report.examples["corrupt_image"] == ["011/0111565001.jpg"]
    assert raw.meta["coverage"] == cov and raw.meta["skipped"] == report.skipped
    assert raw.meta["format"] == "hm" and "prod_name" in raw.meta["text_recipe"]
    assert report.duplicates == {"policy": "keep", "found": 1, "dropped": 0}
    assert report.counts == {"users": 4, "items": 6, "interactions": 18, "images": 6}
    assert raw.meta["name"] == "hm-test" and raw.meta["sampling"] is None
    # chronological per user; same-day purchases keep the file order
    a = raw.interactions[raw.interactions["user"] == C["a"]]
    assert a["item"].tolist() == ["0108775015", "0110065001", "0108775015", "0111565001",
                                  "0111586001", "0108775044"]
    assert a["timestamp"].iloc[0] == 1537401600  # 2018-09-20 00:00 UTC


def test_hm_chunked_reading_gives_the_same_data(tmp_path, monkeypatch):
    """Paper-size transactions are read in chunks of categorical ids; the result is the same."""
    from mmsr_lib.data import importer

    src = write_hm(tmp_path / "hm")
    whole = load_dataset(import_hm(src, tmp_path / "a", image_size=8).path)
    monkeypatch.setattr(importer, "_CHUNK_ROWS", 4)
    chunked = load_dataset(import_hm(src, tmp_path / "b", image_size=8).path)
    pd.testing.assert_frame_equal(whole.interactions, chunked.interactions)
    pd.testing.assert_frame_equal(whole.items, chunked.items)


def test_hm_text_recipe_skips_empty_and_repeated_tags():
    arts = pd.DataFrame([article_row("0108775015", "Top", "Black", "Soft.")],
                        columns=HM_ARTICLE_HEADER)
    arts.loc[0, "section_name"] = "Jersey Basic"  # repeats department_name: written once
    arts.loc[0, "index_name"] = ""
    text = hm_item_text(arts).iloc[0]
    assert text == ("Top. Vest top, Garment Upper body, Solid, Black, Dark, Jersey Basic. Soft.")
    assert len(HM_TAG_FIELDS) == 9
    assert compose_text(["A.", "b", "", None, ["c", "d"]]) == "A. b. c d"


def test_hm_sequences_for_training(tmp_path):
    """The import feeds build_sequences directly: the 5-core keeps a, b and d, in time order."""
    report = import_hm(write_hm(tmp_path / "hm"), tmp_path / "out", image_size=8)
    seq = build_sequences(load_dataset(report.path), max_len=4)
    assert seq.n_users == 3
    users = list(seq.user_ids)
    b = seq.seqs[users.index(C["b"])]
    assert [seq.item_ids[i] for i in b] == ["0108775044", "0110065001", "0112679048",
                                            "0108775015", "0111586001"]
    inputs, targets, _ = seq.train_windows
    assert inputs.shape == (3, 4) and (targets[:, -1] > 0).all()
    test = seq.eval_set("test")
    assert len(test) == 3 and seq.item_image[test.targets].shape == (3,)
    assert seq.item_text[b[0]].startswith("Strap top.")


def test_hm_ids_that_lost_their_leading_zero_still_match(tmp_path):
    src = write_hm(tmp_path / "hm")
    rows = [["2018-09-2" + str(k), C["e"], str(int(a)), "0.01", "2"]
            for k, a in enumerate(list(HM_ARTICLES)[:5])]
    write_csv(src / "transactions_train.csv", HM_TX_HEADER, rows)
    report = import_hm(src, tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    assert raw.interactions["item"].tolist() == list(HM_ARTICLES)[:5]
    assert "unknown_item" not in report.skipped


def test_hm_sampling_is_deterministic_nested_and_recorded(tmp_path):
    src = tmp_path / "hm"
    write_hm(src)
    rng = np.random.default_rng(1)
    art = list(HM_ARTICLES)[:6]
    rows = []
    for u in range(40):  # 40 users, 30 of them with >= 5 purchases
        n = 6 if u % 4 else 3
        for k in range(n):
            rows.append([f"2019-01-{k + 1:02d}", f"{u:064x}", art[rng.integers(6)], "0.01", "1"])
    write_csv(src / "transactions_train.csv", HM_TX_HEADER, rows)
    r1 = import_hm(src, tmp_path / "s1", users=10, seed=7, image_size=8)
    r2 = import_hm(src, tmp_path / "s2", users=10, seed=7, image_size=8)
    r3 = import_hm(src, tmp_path / "s3", users=10, seed=8, image_size=8)
    r4 = import_hm(src, tmp_path / "s4", users=20, seed=7, image_size=8)

    def users_of(r: ImportReport) -> set[str]:
        return set(load_dataset(r.path).interactions["user"])

    assert users_of(r1) == users_of(r2) and len(users_of(r1)) == 10
    assert users_of(r1) != users_of(r3)
    assert users_of(r1) <= users_of(r4)  # nested: same seed, more users
    meta = load_dataset(r1.path).meta
    s = meta["sampling"]
    assert s["users_requested"] == 10 and s["seed"] == 7 and s["min_interactions"] == 5
    assert (s["population_users"], s["eligible_users"], s["sampled_users"]) == (40, 30, 10)
    assert meta["seed"] == 7 and r1.sampling == s
    # every sampled user survives the paper's 5-interaction filter
    assert build_sequences(load_dataset(r4.path)).n_users == 20
    # min_user_interactions=0: draw among all users (before the filter)
    r5 = import_hm(src, tmp_path / "s5", users=40, seed=0, image_size=8, min_user_interactions=0)
    assert r5.sampling["eligible_users"] == 40 and r5.counts["users"] == 40


def test_sample_users_independent_of_row_order():
    df = pd.DataFrame({"user": [f"u{i % 9}" for i in range(90)], "item": "x",
                       "timestamp": np.arange(90)})
    a, info = sample_users(df, 4, seed=3)
    b, _ = sample_users(df.iloc[::-1], 4, seed=3)
    assert set(a["user"]) == set(b["user"]) and info["sampled_users"] == 4
    cat = df.assign(user=df["user"].astype("category"))
    c, _ = sample_users(cat, 4, seed=3)
    assert set(c["user"].astype(str)) == set(a["user"])
    assert sample_users(df, None)[1] is None
    with pytest.raises(ValueError, match="positive"):
        sample_users(df, 0)


def test_hm_registry_and_overwrite(tmp_path):
    src = write_hm(tmp_path / "hm")
    out = tmp_path / "out"
    entry = registry.lookup("data_format", "hm")
    assert entry.factory is import_hm and "transactions_train.csv" in entry.description
    report = registry.create("data_format", "hm", src, out, image_size=8)
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        registry.create("data_format", "hm", src, out, image_size=8)
    again = registry.create("data_format", "HM", src, out, image_size=8, overwrite=True,
                            duplicates="drop")
    assert again.skipped["duplicate_interaction"] == 1 and report.path == again.path
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="not a data set"):
        import_hm(src, tmp_path / "notes", image_size=8, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_hm_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="transactions_train.csv"):
        import_hm(tmp_path / "nope", tmp_path / "out")
    src = write_hm(tmp_path / "hm")
    (src / "articles.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"articles\.csv"):
        import_hm(src, tmp_path / "out")
    src = write_hm(tmp_path / "hm2")
    write_csv(src / "transactions_train.csv", ["t_dat", "customer", "article_id"],
              [["2018-09-20", "x", "0108775015"]])
    with pytest.raises(InputFormatError, match=r"missing columns \['customer_id'\]"):
        import_hm(src, tmp_path / "out")
    src = write_hm(tmp_path / "hm3")
    write_csv(src / "transactions_train.csv", HM_TX_HEADER,
              [["2018-09-20", "x", "0108775015", "1", "1"], ["someday", "x", "0108775015", "1",
                                                              "1"]])
    with pytest.raises(InputFormatError, match=r"'t_dat' row 2 has 'someday' \(line 3\)"):
        import_hm(src, tmp_path / "out")


def test_hm_text_only_without_images(tmp_path, caplog):
    src = write_hm(tmp_path / "hm")
    import shutil

    shutil.rmtree(src / "images")
    with caplog.at_level(logging.WARNING, logger="mmsr.data"):
        report = import_hm(src, tmp_path / "out", image_size=8)
    assert "text only" in caplog.text
    assert report.coverage["items_without_image"] == 6 and report.counts["images"] == 0
    assert "no_image_dir" not in report.skipped  # no folder at all is coverage, not a skip
    assert load_dataset(report.path).image_path is None


# -- Amazon --------------------------------------------------------------------------------
def write_jsonl(path: Path, records: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def review2018(user: str, asin: str, t: int) -> dict:
    return {"overall": 5.0, "verified": True, "reviewTime": "01 5, 2018", "reviewerID": user,
            "asin": asin, "style": {"Size:": " Large"}, "reviewerName": "X",
            "reviewText": "Great", "summary": "Five Stars", "unixReviewTime": t}


def write_amazon2018(root: Path, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    reviews = []
    for u, items in {"A1": "BCDEF", "A2": "FEDCB", "A3": "BC"}.items():
        reviews += [review2018(u, f"B00000000{i}", 1500000000 + 100 * k + ord(u[1]))
                    for k, i in enumerate(items)]
    reviews.append(review2018("A1", "B00000000Z", 1600000000))  # no metadata: unknown item
    meta = [
        {"category": ["Clothing, Shoes & Jewelry", "Women", "Dresses"], "tech1": "",
         "description": ["A <b>lovely</b> dress &amp; more.", "Machine wash."], "fit": "",
         "title": "Summer Dress", "also_buy": [], "brand": "Acme", "feature": ["Cotton"],
         "rank": "1", "also_view": [], "main_cat": "Fashion", "similar_item": "",
         "date": "", "price": "$10", "asin": "B00000000B",
         "imageURL": ["https://example.invalid/b.jpg"],
         "imageURLHighRes": ["https://example.invalid/B.jpg"]},
        {"asin": "B00000000C", "title": "Shoe", "description": "A plain string description",
         "category": [], "imageURL": [], "imageURLHighRes": []},
        {"asin": "B00000000D", "title": "", "description": [], "imageURL": [],
         "imageURLHighRes": []},  # no text at all
        {"asin": "B00000000E", "title": "Hat", "imageURL": ["https://example.invalid/e.jpg"],
         "imageURLHighRes": []},  # URL but no local file
        {"asin": "B00000000F", "title": "Belt", "brand": "Acme"},
        {"asin": "B00000000F", "title": "Belt (repeated line)"},
    ]
    suffix = ".json.gz" if gz else ".json"
    write_jsonl(root / f"Clothing_Shoes_and_Jewelry{suffix}", reviews, gz)
    write_jsonl(root / f"meta_Clothing_Shoes_and_Jewelry{suffix}", meta, gz)
    jpeg(root / "images" / "B00000000B.jpg", RED)
    jpeg(root / "images" / "B00000000C.png", GREEN)
    jpeg(root / "images" / "B00000000F.JPEG", BLUE)
    (root / "images" / "B00000000D.jpg").write_bytes(b"not an image")
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_amazon2018(tmp_path, gz):
    src = write_amazon2018(tmp_path / "amz", gz)
    report = import_amazon2018(src, tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    items = raw.items.set_index("item")
    assert items.loc["B00000000B", "text"] == (
        "Summer Dress. Acme. Clothing, Shoes & Jewelry, Women, Dresses. Cotton. A lovely dress "
        "& more. Machine wash.")
    assert items.loc["B00000000C", "text"] == "Shoe. A plain string description"
    assert items.loc["B00000000F", "text"] == "Belt. Acme"  # first metadata line wins
    assert items.loc["B00000000D", "text"] == ""
    assert "B00000000Z" not in items.index
    assert report.skipped["unknown_item"] == 1 and report.skipped["duplicate_item"] == 1
    assert report.skipped["corrupt_image"] == 1 and report.skipped["empty_text"] == 1
    cov = report.coverage
    assert cov["items"] == 5 and cov["items_without_text"] == 1
    assert cov["items_without_image"] == 2 and cov["broken_image_files"] == 1
    assert cov["image_url_without_file"] == 1  # E: listed online, not in images/
    store = ImageStore(raw.image_path)
    got = store.get(items.loc[["B00000000B", "B00000000C", "B00000000F"], "image"].to_numpy())
    for img, colour in zip(got, (RED, GREEN, BLUE), strict=True):
        assert np.abs(img.reshape(-1, 3).mean(0) - colour).max() < 40
    a2 = raw.interactions[raw.interactions["user"] == "A2"]
    assert a2["item"].tolist() == [f"B00000000{i}" for i in "FEDCB"]
    assert raw.meta["timestamp_unit"].startswith("s") and raw.meta["format"] == "amazon2018"
    # --src may be the reviews file itself
    name = "Clothing_Shoes_and_Jewelry.json" + (".gz" if gz else "")
    again = import_amazon2018(src / name, tmp_path / "out2", image_size=8)
    assert again.counts == report.counts


def write_amazon2023(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    reviews = []
    t0 = 1_700_000_000_000  # milliseconds
    for u, items in {"U1": ["P1", "P2", "P1", "P3"], "U2": ["P3", "P2"]}.items():
        for k, p in enumerate(items):
            reviews.append({"rating": 4.0, "title": "ok", "text": "fine", "images": [],
                            "asin": f"{p}-variant{k}", "parent_asin": p, "user_id": u,
                            "timestamp": t0 + 1000 * k, "helpful_vote": 0,
                            "verified_purchase": True})
    meta = [
        {"main_category": "AMAZON FASHION", "title": "Linen Shirt", "average_rating": 4.1,
         "rating_number": 10, "features": ["Linen", "Button-down"], "description": [],
         "price": None, "images": [{"thumb": "t", "large": "l", "variant": "MAIN",
                                    "hi_res": None}], "videos": [], "store": "Acme",
         "categories": [], "details": {}, "parent_asin": "P1", "bought_together": None},
        {"main_category": "AMAZON FASHION", "title": "Scarf", "features": [],
         "description": ["Warm <i>wool</i> scarf."], "images": [], "store": None,
         "categories": ["Women", "Accessories"], "details": {}, "parent_asin": "P2"},
        {"title": "Gloves", "images": [{"large": "l"}], "parent_asin": "P3"},
    ]
    write_jsonl(root / "Amazon_Fashion.jsonl", reviews)
    write_jsonl(root / "meta_Amazon_Fashion.jsonl.gz", meta, gz=True)
    jpeg(root / "images" / "P1.webp", RED)
    jpeg(root / "images" / "P2.jpg", GREEN)
    return root


def test_amazon2023_uses_parent_asin_and_milliseconds(tmp_path):
    src = write_amazon2023(tmp_path / "amz23")
    report = registry.create("data_format", "amazon2023", src, tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    items = raw.items.set_index("item")
    assert sorted(items.index) == ["P1", "P2", "P3"]
    assert items.loc["P1", "text"] == "Linen Shirt. Acme. AMAZON FASHION. Linen Button-down"
    assert items.loc["P2", "text"] == "Scarf. Women, Accessories. Warm wool scarf."
    u1 = raw.interactions[raw.interactions["user"] == "U1"]
    assert u1["item"].tolist() == ["P1", "P2", "P1", "P3"]
    assert u1["timestamp"].iloc[1] == 1_700_000_001_000
    assert report.coverage["items_without_image"] == 1
    assert report.coverage["image_url_without_file"] == 1  # P3
    assert raw.meta["timestamp_unit"].startswith("ms")


def test_amazon_format_mixups_and_bad_lines(tmp_path):
    src = write_amazon2023(tmp_path / "amz23")
    with pytest.raises(InputFormatError, match=r"line 1 has no 'reviewerID'.*amazon2023"):
        import_amazon2018(src, tmp_path / "out")
    src18 = write_amazon2018(tmp_path / "amz18", gz=False)
    with pytest.raises(InputFormatError, match=r"no 'user_id'.*amazon2018"):
        import_amazon2023(src18, tmp_path / "out")
    reviews = src18 / "Clothing_Shoes_and_Jewelry.json"
    lines = reviews.read_text().splitlines()
    reviews.write_text("\n".join(lines[:3] + ['{"reviewerID": "A9", "asin": '] + lines[3:]))
    with pytest.raises(InputFormatError, match=r"Clothing_Shoes_and_Jewelry\.json: line 4 is "
                                               r"not valid JSON"):
        import_amazon2018(src18, tmp_path / "out")
    reviews.write_text("\n".join(lines[:2] + ["{'reviewerID': 'A9'}"]))
    with pytest.raises(InputFormatError, match="line 3 is a Python literal"):
        import_amazon2018(src18, tmp_path / "out")
    big = json.dumps(review2018("A9", "B00000000B", 0)).replace(
        '"unixReviewTime": 0', '"unixReviewTime": 12345678901234567890123')
    reviews.write_text("\n".join(lines[:4] + [big]))
    with pytest.raises(InputFormatError, match=r"line 5: field 'unixReviewTime' has "
                                               r"12345678901234567890123"):
        import_amazon2018(src18, tmp_path / "out")
    gz = write_amazon2018(tmp_path / "amz18gz", gz=True) / "Clothing_Shoes_and_Jewelry.json.gz"
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(InputFormatError, match="corrupt or truncated"):
        import_amazon2018(gz.parent, tmp_path / "out")
    (tmp_path / "two").mkdir()
    for name in ("A.json", "B.json", "meta_A.json"):
        (tmp_path / "two" / name).write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="Pass the reviews file itself"):
        import_amazon2018(tmp_path / "two", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- PixelRec / MicroLens / Bili / Kwai ------------------------------------------------------
def write_pixelrec(root: Path) -> Path:
    (root / "pixelrec_interaction").mkdir(parents=True)
    (root / "pixelrec_iteminfo").mkdir()
    rows = []
    for u, items in {"u1": ["i1", "i2", "i3", "i4", "i5"], "u2": ["i5", "i4", "i3", "i2", "i1"],
                     "u3": ["i2", "i6"]}.items():
        rows += [[i, u, 1650000000 + 60 * k] for k, i in enumerate(items)]
    write_csv(root / "pixelrec_interaction" / "Pixel200K.csv", ["item_id", "user_id",
                                                                "timestamp"], rows)
    header = ["item_id", "view_number", "comment_number", "thumbup_number", "share_number",
              "coin_number", "favorite_number", "barrage_number", "title", "tag", "description"]
    write_csv(root / "pixelrec_iteminfo" / "Pixel200K_items.csv", header, [
        ["i1", 10, 1, 1, 0, 0, 0, 3, "How to fold a paper crane, step by step", "craft", "d"],
        ["i2", 10, 1, 1, 0, 0, 0, 3, "Cat meets cucumber", "pets", "funny"],
        ["i3", 10, 1, 1, 0, 0, 0, 3, "", "music", "no title"],
        ["i4", 10, 1, 1, 0, 0, 0, 3, "Speedrun, any%", "games", ""],
        ["i5", 10, 1, 1, 0, 0, 0, 3, "Street food tour", "food", ""],
        ["i6", 10, 1, 1, 0, 0, 0, 3, "Morning yoga", "sport", ""],
    ])
    for i, colour in (("i1", RED), ("i2", GREEN), ("i4", BLUE)):
        jpeg(root / "cover" / f"{i}.jpg", colour)
    jpeg(root / "cover" / "i5.png", GREY)
    return root


def test_pixelrec_layout(tmp_path):
    src = write_pixelrec(tmp_path / "pix")
    report = import_pixelrec(src, tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    items = raw.items.set_index("item")
    assert items.loc["i1", "text"] == "How to fold a paper crane, step by step"  # title only
    assert items.loc["i3", "text"] == "" and items.loc["i3", "image"] == -1
    assert report.coverage["items_without_text"] == 1
    assert report.coverage["items_without_image"] == 2  # i3, i6
    store = ImageStore(raw.image_path)
    assert np.abs(store.get([items.loc["i5", "image"]])[0].mean((0, 1)) - GREY).max() < 40
    cols = raw.meta["inputs"]["columns"]
    assert cols == {"user": "user_id", "item": "item_id", "timestamp": "timestamp",
                    "item_table_item": "item_id", "title": "title"}
    u2 = raw.interactions[raw.interactions["user"] == "u2"]
    assert u2["item"].tolist() == ["i5", "i4", "i3", "i2", "i1"]


def test_microlens_layout_via_alias_and_dates(tmp_path):
    src = tmp_path / "MicroLens-100k"
    src.mkdir()
    write_csv(src / "MicroLens-100k_pairs.csv", ["userID", "videoID", "timestamp"],
              [["07", "100", "2023-01-02 10:00:00"], ["07", "101", "2023-01-01 09:00:00"],
               ["8", "101", "1672531200"]])
    write_csv(src / "MicroLens-100k_title_en.csv", ["item", "title"],
              [["100", "A video about cats"], ["101", "Another one"]])
    jpeg(src / "MicroLens-100k_covers" / "100.jpg", RED)
    report = registry.create("data_format", "microlens", src, tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    assert set(raw.interactions["user"]) == {"07", "8"}  # read as strings, not numbers
    seven = raw.interactions[raw.interactions["user"] == "07"]
    assert seven["item"].tolist() == ["101", "100"]  # dates parsed, sorted in time
    assert seven["timestamp"].tolist() == [1672563600, 1672653600]
    assert report.coverage["items_without_image"] == 1 and report.counts["images"] == 1
    assert registry.canonical("data_format", "Bili") == "pixelrec"
    assert registry.canonical("data_format", "kwai") == "pixelrec"


def test_pixelrec_ambiguous_or_unknown_tables(tmp_path):
    src = write_pixelrec(tmp_path / "pix")
    write_csv(src / "more.csv", ["uid", "iid", "ts"], [["a", "b", "1"]])
    with pytest.raises(FileNotFoundError, match=r"exactly one interaction table.*more\.csv"):
        import_pixelrec(src, tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    write_csv(other / "x.csv", ["who", "what"], [["a", "b"]])
    with pytest.raises(FileNotFoundError, match=r"Accepted names"):
        import_pixelrec(other, tmp_path / "out")


def test_pixelrec_lmdb_needs_the_package(tmp_path, monkeypatch):
    src = write_pixelrec(tmp_path / "pix")
    import shutil

    shutil.rmtree(src / "cover")
    (src / "cover.lmdb").mkdir()
    (src / "cover.lmdb" / "data.mdb").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match="pip install lmdb"):
        import_pixelrec(src, tmp_path / "out", image_size=8)
    assert not (tmp_path / "out").exists()


def test_pixelrec_lmdb_covers(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    import io
    import pickle
    import shutil

    src = write_pixelrec(tmp_path / "pix")
    shutil.rmtree(src / "cover")
    env = lmdb.open(str(src / "covers_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, colour in (("i1", RED), ("i2", GREEN)):
            buf = io.BytesIO()
            Image.new("RGB", (10, 10), colour).save(buf, "JPEG")
            txn.put(key.encode(), buf.getvalue())
        txn.put(b"i4", pickle.dumps({"not": "loaded"}))  # refused, never unpickled
    env.close()
    report = import_pixelrec(src, tmp_path / "out", image_size=8)
    items = by_item(report.path)
    assert items.loc["i1", "image"] >= 0 and items.loc["i2", "image"] >= 0
    assert items.loc["i4", "image"] == -1
    assert report.skipped["corrupt_image"] == 1 and report.examples["corrupt_image"] == ["i4"]
    assert report.skipped["missing_image"] == 3  # i3, i5, i6 have no key in the database


# -- statistics ----------------------------------------------------------------------------
def test_dataset_statistics_table_one(tmp_path):
    report = import_hm(write_hm(tmp_path / "hm"), tmp_path / "out", image_size=8)
    raw = load_dataset(report.path)
    st = dataset_statistics(report.path)
    assert (st["users"], st["items"], st["interactions"]) == (3, 6, 16)
    assert st["avg_seq_len"] == pytest.approx(16 / 3)
    assert st["density"] == pytest.approx(16 / 18) and st["sparsity"] == pytest.approx(2 / 18)
    assert st["interactions_per_item"] == pytest.approx(16 / 6)
    seq = build_sequences(raw)
    assert st["cold"] == len(seq.cold_eval_set("test", mode="paper"))  # every item is cold here
    assert st["cold"] == 16 - 3
    assert dataset_statistics(seq)["users"] == 3
    assert dataset_statistics(raw, min_user_interactions=6)["users"] == 1
    table = statistics_table({"HM": raw})
    assert list(table.columns[:4]) == ["users", "items", "cold", "avg_seq_len"]
    with pytest.raises(TypeError):
        dataset_statistics(42)  # type: ignore[arg-type]


def test_every_format_is_registered_with_one_signature(tmp_path):
    """(src, out, **options) with the options of `ImportOptions`; a misspelled option is an
    error that lists the known ones."""
    import dataclasses
    import inspect

    from mmsr_lib.data.importer import ImportOptions

    assert [f.name for f in dataclasses.fields(ImportOptions)] == [
        "users", "seed", "image_size", "overwrite", "duplicates", "name", "images",
        "min_user_interactions"]
    names = registry.names("data_format")
    assert {"csv", "hm", "amazon2018", "amazon2023", "pixelrec"} <= set(names)
    for n in ("csv", "hm", "amazon2018", "amazon2023", "pixelrec"):
        params = inspect.signature(registry.lookup("data_format", n).factory).parameters
        assert list(params) == ["src", "out", "options"], n
        assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
        with pytest.raises(TypeError, match="unknown import options.*image_size"):
            registry.create("data_format", n, tmp_path, tmp_path / "out", imagesize=8)
