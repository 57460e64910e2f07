"""Importer hardening: hostile image names and files, timestamps that do not fit, duplicates,
real skip counts, parse errors that name file and line, and the overwrite rule, each through
the importer's entry points."""

from __future__ import annotations

import json
import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_lib.data.format import DatasetExistsError, load_dataset
from mmsr_lib.data.importer import (
    FolderImages,
    ImageSkip,
    ImportReport,
    import_csv,
    import_dataset,
    import_tables,
    parse_timestamps,
)
from mmsr_lib.util import registry


class Hang(BaseException):
    """Raised by `deadline`; not an OSError, so no image-error handler can swallow it."""


@contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer appears)."""
    def boom(signum, frame):
        raise Hang(f"the import did not finish within {seconds} s (it hangs)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def inputs(tmp_path: Path, images: dict[str, str], inter_rows: list[tuple] | None = None
           ) -> tuple[Path, Path, Path]:
    """items.csv naming `images` (item -> image name), interactions.csv, and an image folder
    holding good.png."""
    imgs = tmp_path / "imgs"
    imgs.mkdir(exist_ok=True)
    Image.new("RGB", (12, 12), (200, 30, 30)).save(imgs / "good.png")
    items = pd.DataFrame({"item": list(images), "text": [f"text {i}" for i in images],
                          "image": list(images.values())})
    items.to_csv(tmp_path / "items.csv", index=False)
    rows = inter_rows or [("u1", item, 100 + k) for k, item in enumerate(images)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(
        tmp_path / "inter.csv", index=False)
    return tmp_path / "inter.csv", tmp_path / "items.csv", imgs


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# -- image names that leave the folder -------------------------------------------------------
def test_image_names_outside_the_folder_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (12, 12), (0, 0, 255)).save(secret)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "sub").mkdir()
    Image.new("RGB", (12, 12), (0, 255, 0)).save(imgs / "sub" / "inner.png")
    os.symlink(secret, imgs / "escape.png")  # a symlink leading out of the folder
    os.symlink(imgs / "sub" / "inner.png", imgs / "alias.png")  # one staying inside: fine
    inter, items, imgs = inputs(tmp_path, {
        "a": "good.png", "b": "../secret.png", "c": str(secret), "d": "escape.png",
        "e": "sub/../../secret.png", "f": "alias.png", "g": "sub/inner.png"})
    root = import_dataset(inter, items, imgs, tmp_path / "out", image_size=8)
    meta = load_dataset(root).meta
    assert meta["skipped"]["image_outside_folder"] == 4
    assert sorted(meta["skipped_examples"]["image_outside_folder"]) == sorted(
        ["../secret.png", str(secret), "escape.png", "sub/../../secret.png"])
    by_item = load_dataset(root).items.set_index("item")
    assert (by_item.loc[["b", "c", "d", "e"], "image"] == -1).all()
    assert (by_item.loc[["a", "f", "g"], "image"] >= 0).all()
    store = np.load(root / "images.npy")
    assert not (store[..., 2] > 200).all(axis=(1, 2)).any()  # the blue secret was never read
    assert meta["coverage"]["broken_image_files"] == 4


def test_folder_images_resolve_rules(tmp_path):
    src = FolderImages(tmp_path)
    for bad in ("../x.png", "/etc/passwd", "", "a\x00b", "."):
        with pytest.raises(ImageSkip) as err:
            src.resolve(bad)
        assert err.value.reason == "image_outside_folder"
    assert src.resolve("x/y.png") == os.path.realpath(tmp_path / "x" / "y.png")


# -- files that are not regular files --------------------------------------------------------
def test_fifo_directory_and_device_are_skipped_without_hanging(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    os.mkfifo(imgs / "pipe.jpg")
    (imgs / "folder.png").mkdir()
    names = {"a": "good.png", "p": "pipe.jpg", "d": "folder.png"}
    try:  # a device node inside the folder (needs the right to create one)
        os.mknod(imgs / "null.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        names["n"] = "null.jpg"
    except (PermissionError, OSError):
        pass
    inter, items, imgs = inputs(tmp_path, names)
    with deadline(20):
        root = import_dataset(inter, items, imgs, tmp_path / "out", image_size=8)
    meta = load_dataset(root).meta
    assert meta["skipped"]["image_not_a_file"] == len(names) - 1
    assert "pipe.jpg" in meta["skipped_examples"]["image_not_a_file"]
    assert load_dataset(root).items.set_index("item").loc["p", "image"] == -1
    assert no_temp_files(tmp_path)


# -- timestamps ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, why", [
    ("12345678901234567890123", "does not fit a 64-bit integer"),
    ("9223372036854775808", "does not fit a 64-bit integer"),
    ("-5", "is negative"),
    ("-1.5e9", "is negative"),
    ("soon", "neither an integer nor a date"),
    ("1e400", "neither an integer nor a date"),
    ("1969-12-31", "before 1970"),
])
def test_bad_timestamps_name_file_line_and_value(tmp_path, value, why):
    rows = [("u1", "a", "100"), ("u1", "a", "200"), ("u1", "a", value)]
    inter, items, imgs = inputs(tmp_path, {"a": "good.png"}, rows)
    with pytest.raises(ValueError) as err:
        import_dataset(inter, items, imgs, tmp_path / "out", image_size=8)
    msg = str(err.value)
    assert "inter.csv" in msg and "row 3" in msg and "line 4" in msg
    assert repr(value) in msg and why in msg and "Fix or remove" in msg
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_timestamp_edge_values_are_kept_exactly(tmp_path):
    big = "9223372036854775807"  # int64 max: fits
    parsed = parse_timestamps(pd.Series(["0", big, "007", "1600000000.4", "2020-09-01"]),
                              "x.csv")
    assert parsed.tolist() == [0, 2**63 - 1, 7, 1600000000, 1598918400]
    cat = pd.Series(["2020-09-01", "soon", "2020-09-01"], dtype="category")
    with pytest.raises(ValueError, match=r"row 2 has 'soon' \(line 3\)"):
        parse_timestamps(cat, "x.csv")


# -- duplicates ------------------------------------------------------------------------------
def test_duplicate_interactions_counted_and_kept_or_dropped(tmp_path):
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 1), ("u1", "a", 1), ("u1", "a", 3)]
    inter, items, imgs = inputs(tmp_path, {"a": "good.png", "b": ""}, rows)
    keep = import_tables(inter, items, imgs, tmp_path / "keep", image_size=8)
    assert keep.duplicates == {"policy": "keep", "found": 2, "dropped": 0}
    assert keep.counts["interactions"] == 5 and "duplicate_interaction" not in keep.skipped
    drop = import_tables(inter, items, imgs, tmp_path / "drop", image_size=8, duplicates="drop")
    assert drop.duplicates == {"policy": "drop", "found": 2, "dropped": 2}
    assert drop.skipped["duplicate_interaction"] == 2 and drop.counts["interactions"] == 3
    raw = load_dataset(drop.path)
    assert raw.interactions["timestamp"].tolist() == [1, 2, 3]
    assert raw.meta["duplicates"]["found"] == 2
    with pytest.raises(ValueError, match="duplicates must be one of"):
        import_tables(inter, items, imgs, tmp_path / "x", duplicates="merge")


# -- the real skip counts are returned and stored --------------------------------------------
def test_report_and_meta_carry_the_skip_counts(tmp_path):
    rows = [("u1", "a", 1), ("u1", "ghost", 2), ("", "a", 3), ("u2", "b", 4)]
    inter, items, imgs = inputs(tmp_path, {"a": "good.png", "b": "missing.png", "c": ""}, rows)
    pd.DataFrame({"item": ["a", "b", "c", "a"], "text": ["t", "u", "", "again"],
                  "image": ["good.png", "missing.png", "", ""]}).to_csv(items, index=False)
    report = import_tables(inter, items, imgs, tmp_path / "out", image_size=8)
    expected = {"unknown_item": 1, "blank_id": 1, "duplicate_item": 1, "missing_image": 1,
                "empty_text": 1}
    assert report.skipped == expected
    meta = json.loads((report.path / "meta.json").read_text())
    assert meta["skipped"] == expected and meta["coverage"] == report.coverage
    assert report.coverage["missing_image_files"] == 1
    assert report.to_dict()["path"] == str(report.path)
    # the registry's generic importer returns the same report
    src = tmp_path / "src"
    src.mkdir()
    os.replace(inter, src / "interactions.csv")
    os.replace(items, src / "items.csv")
    os.replace(imgs, src / "images")
    again = registry.create("data_format", "csv", src, tmp_path / "out2", image_size=8)
    assert isinstance(again, ImportReport) and again.skipped == expected


# -- parse errors name the file and the line -------------------------------------------------
def write_text(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("content, pattern", [
    ("user,item,timestamp\nu1,a,1\nu1,a,2,extra\n", r"inter\.csv: line 3 has 4 fields.*ragged"),
    ("user,item,timestamp\nu1,a,1\nu1,a\nu1,a,3\n", r"inter\.csv: line 3 has 2 fields.*ragged"),
    ('user,item,timestamp\nu1,"a,1\nu1,b,2\n', r"line 3 has 2 fields.*spans lines 2-3: an "
                                                  r"unbalanced quote"),
    ("", r"inter\.csv is empty; expected a header line"),
    ("\n\n", r"inter\.csv is empty"),
    (b"user,item,timestamp\nu1,a,1\nu1,caf\xe9,2\n", r"inter\.csv: line 3 is not valid UTF-8"
                                                    r".*iconv"),
    ("user,item,when\nu1,a,1\n", r"inter\.csv: missing columns \['timestamp'\] in the header "
                                 r"\(line 1\).*Rename the columns"),
    ("user,item,item\nu1,a,1\n", r"repeats the columns \['item'\]"),
])
def test_parse_errors_name_file_and_line(tmp_path, content, pattern):
    _, items, imgs = inputs(tmp_path, {"a": "good.png"})
    inter = write_text(tmp_path / "inter.csv", content)
    with pytest.raises(ValueError, match=pattern):
        import_dataset(inter, items, imgs, tmp_path / "out", image_size=8)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_line_numbers_survive_blank_lines_and_quoted_newlines(tmp_path):
    _, items, imgs = inputs(tmp_path, {"a": "good.png"})
    inter = write_text(tmp_path / "inter.csv",
                       'user,item,timestamp\n"u\n1",a,1\n\nu2,a,oops\n')
    with pytest.raises(ValueError, match=r"row 2 has 'oops' \(line 5\)"):
        import_dataset(inter, items, imgs, tmp_path / "out", image_size=8)
    with pytest.raises(FileNotFoundError, match=r"items file .*nope\.csv does not exist"):
        import_dataset(inter, tmp_path / "nope.csv", imgs, tmp_path / "out")
    with pytest.raises(ValueError, match="is a folder"):
        import_dataset(inter, imgs, imgs, tmp_path / "out")


# -- overwrite -------------------------------------------------------------------------------
def test_overwrite_rule_through_the_entry_points(tmp_path):
    inter, items, imgs = inputs(tmp_path, {"a": "good.png", "b": ""})
    out = tmp_path / "out"
    import_dataset(inter, items, imgs, out, image_size=8)
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        import_dataset(inter, items, imgs, out, image_size=8)
    report = import_tables(inter, items, None, out, image_size=8, overwrite=True)
    assert load_dataset(report.path).image_path is None  # replaced
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("keep me")
    with pytest.raises(DatasetExistsError, match="not a data set"):
        import_tables(inter, items, imgs, project, image_size=8, overwrite=True)
    assert (project / "notes.md").read_text() == "keep me"
    src = tmp_path / "src"
    src.mkdir()
    for f, name in ((inter, "interactions.csv"), (items, "items.csv")):
        (src / name).write_bytes(f.read_bytes())
    with pytest.raises(DatasetExistsError):
        import_csv(src, out)
    assert import_csv(src, out, overwrite=True, images=imgs, image_size=8).counts["images"] == 1
    assert no_temp_files(tmp_path)


def test_ids_are_compared_without_surrounding_spaces(tmp_path):
    inter = write_text(tmp_path / "inter.tsv", "user\titem\ttimestamp\n u1 \ta \t1\nu1\t a\t2\n")
    items = write_text(tmp_path / "items.tsv", "item\ttext\n a\tthe item\n")
    report = import_tables(inter, items, None, tmp_path / "out")
    raw = load_dataset(report.path)
    assert raw.interactions["item"].tolist() == ["a", "a"]
    assert raw.interactions["user"].tolist() == ["u1", "u1"]
    assert report.skipped == {} and report.duplicates["found"] == 0


def test_csv_sampling_leaves_out_items_of_unsampled_users(tmp_path):
    rows = [(f"u{u}", item, t) for u, item in ((1, "a"), (2, "b")) for t in range(5)]
    inter, items, imgs = inputs(tmp_path, {"a": "good.png", "b": "good.png", "c": ""}, rows)
    full = import_tables(inter, items, imgs, tmp_path / "full", image_size=8)
    assert full.counts["items"] == 3 and full.sampling is None
    one = import_tables(inter, items, imgs, tmp_path / "one", image_size=8, users=1, seed=0)
    assert one.counts["users"] == 1 and one.counts["items"] == 1
    assert one.coverage["items_without_interactions_dropped"] == 2
    assert load_dataset(one.path).meta["sampling"]["sampled_users"] == 1
