"""VQRec (Hou et al., WWW 2023, "Learning Vector-Quantized Item Representation for Transferable
Sequential Recommenders"): a "modality-based SR" row of the paper's Table V.

An item is its text, turned into discrete codes once and for all:

1. the item's text goes through the configured text encoder, frozen, and is pooled
   (`model.text_pooling`: [CLS] as in VQRec / UniSRec, or the mean);
2. optimized product quantization (OPQ, Ge et al. 2013, what VQRec builds with faiss'
   ``OPQ32,IVF1,PQ32x8``): the vectors are rotated, split into D = 32 sub-vectors and each
   sub-vector is assigned to one of M = 256 codewords of its subspace by k-means; rotation and
   codebooks are learned alternately (k-means, then the orthogonal Procrustes rotation that best
   maps the vectors onto their reconstructions). scikit-learn's KMeans with fixed seeds, so the
   codes are deterministic; faiss' schedule (40 k-means iterations first, then alternations of 4,
   training on at most 65,536 items) is followed;
3. the item vector is the mean of its D code embeddings, looked up in a learned code-embedding
   table (D x M rows), and a sequence model (SASRec by default, VQRec's choice) runs on top.

Codes are computed once per data set and encoder in a process and memoised (keyed by the
encoder's weights, tokenisation and pooling, the item texts and the quantisation settings). The
text encoder is used only for that: it is not part of the model, never trains, and costs nothing
per step. Why the MMSR paper expects VQRec to trail end-to-end models: the text is pre-extracted
and then quantised, so what the encoder misses, the recommender can never recover.

Choices, and why:

- Loss: the BCE with one random negative of every row (the MMSR paper uses one loss for all
  baselines), not VQRec's contrastive pre-training loss.
- Training: from scratch on the data set (code embeddings + sequence model). VQRec's
  "fine-tune" setting, where only the code embedding table learns on top of a pre-trained
  sequence model, is `VQRec.train_codes_only()`, or ``model.vqrec_train="codes"`` when that
  config field exists (read defensively; default "all"); load the pre-trained weights first.
- Codebook size: M = min(256, n_items // 8), at least 2: k-means needs several items per
  codeword (faiss asks for 39), and with M close to the number of items the codes degenerate
  into item IDs. D = min(32, encoder width); uneven splits are allowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmsr_lib.config import RunConfig
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.item import ItemEncoder
from mmsr_lib.encoders.multimodal import ModalityBranch, TextInputs
from mmsr_lib.encoders.text import create_text_encoder
from mmsr_lib.recommender import SequentialRecommender
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.util import distributed, registry

log = logging.getLogger("mmsr.baselines")

PQ_SUBVECTORS = 32  # D: VQRec's code_dim
PQ_CODEWORDS = 256  # M: VQRec's code_cap (8-bit codes)
OPQ_ITERATIONS = 10  # rotation updates; 0 = plain PQ on the unrotated vectors
KMEANS_FIRST_ITERATIONS = 40  # faiss' niter_pq_0
KMEANS_REFINE_ITERATIONS = 4  # faiss' niter_pq: warm-started k-means between rotation updates
MAX_TRAIN_POINTS = 65_536  # faiss' OPQ trains on at most 256 x 256 vectors
MIN_ITEMS_PER_CODEWORD = 8
PQ_SEED = 0
ENCODE_BATCH = 256  # items per forward pass of the frozen text encoder
TRAIN_MODES = ("all", "codes")
_KEY_VERSION = "vqrec-codes-v1"

_CODES: dict[str, tuple[np.ndarray, int]] = {}  # memo: key -> (codes [n_items + 1, D], M)


@dataclass
class Quantization:
    """Result of `product_quantize`: codes [N, D] in 0..n_codes-1, the rotation [d, d] applied
    before splitting (identity for plain PQ), the codebooks and the mean squared error."""

    codes: np.ndarray
    n_codes: int
    rotation: np.ndarray
    codebooks: list[np.ndarray]
    parts: list[np.ndarray]
    error: float


def codebook_size(n_items: int, n_codes: int = PQ_CODEWORDS) -> int:
    """Codewords per subspace for a catalog of `n_items` (see the module docstring)."""
    return int(min(n_codes, max(2, n_items // MIN_ITEMS_PER_CODEWORD), max(1, n_items)))


def _kmeans(points: np.ndarray, k: int, init: np.ndarray | None, seed: int) -> np.ndarray:
    """Centroids [k, d'] of `points`: k-means++ from `seed`, or warm-started from `init`."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    km = KMeans(n_clusters=k, init="k-means++" if init is None else init, n_init=1,
                max_iter=KMEANS_FIRST_ITERATIONS if init is None else KMEANS_REFINE_ITERATIONS,
                random_state=seed)
    with warnings.catch_warnings():
        # fewer distinct sub-vectors than codewords (duplicate texts): some codewords stay unused
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(points)
    return km.cluster_centers_


def _assign(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of every point (squared Euclidean distance)."""
    d2 = (points**2).sum(1, keepdims=True) - 2.0 * points @ centroids.T \
        + (centroids**2).sum(1)[None]
    return d2.argmin(1)


def product_quantize(
    x: np.ndarray,
    n_subvectors: int = PQ_SUBVECTORS,
    n_codes: int = PQ_CODEWORDS,
    iterations: int = OPQ_ITERATIONS,
    seed: int = PQ_SEED,
) -> Quantization:
    """(Optimized) product quantization of the rows of `x` [N, d].

    iterations=0 is plain PQ; otherwise OPQ: a seeded random rotation to start, then
    `iterations` rounds of (k-means per subspace, Procrustes rotation update). Deterministic
    for fixed inputs and seed.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise ValueError(f"product_quantize needs a non-empty [N, d] matrix, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("product_quantize: the item vectors hold NaN or inf; check the text "
                         "encoder (model.text_encoder) and the item texts")
    if n_subvectors < 1 or n_codes < 1 or iterations < 0:
        raise ValueError(f"product_quantize: n_subvectors={n_subvectors} and n_codes={n_codes} "
                         f"must be >= 1 and iterations={iterations} >= 0")
    n, d = x.shape
    k = codebook_size(n, n_codes)
    parts = np.array_split(np.arange(d), min(n_subvectors, d))
    rng = np.random.default_rng(seed)
    train = x if n <= MAX_TRAIN_POINTS else x[np.sort(rng.choice(n, MAX_TRAIN_POINTS,
                                                                 replace=False))]
    if iterations > 0:
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        rotation = q * np.sign(np.diag(r))  # a uniformly random rotation
    else:
        rotation = np.eye(d)
    books: list[np.ndarray | None] = [None] * len(parts)
    for it in range(iterations + 1):
        z = train @ rotation
        recon = np.empty_like(z)
        for j, cols in enumerate(parts):
            books[j] = _kmeans(z[:, cols], k, books[j], seed + j)
            recon[:, cols] = books[j][_assign(z[:, cols], books[j])]
        if it < iterations:  # orthogonal Procrustes: the rotation mapping x closest to recon
            u, _, vt = np.linalg.svd(train.T @ recon)
            rotation = u @ vt
    z = x @ rotation
    codes = np.empty((n, len(parts)), dtype=np.int64)
    recon = np.empty_like(z)
    for j, cols in enumerate(parts):
        codes[:, j] = _assign(z[:, cols], books[j])
        recon[:, cols] = books[j][codes[:, j]]
    error = float(((z - recon) ** 2).sum(1).mean())
    return Quantization(codes, k, rotation, [b for b in books if b is not None], parts, error)


def _feature_device(cfg: RunConfig) -> torch.device:
    """Where the one-off text encoding runs: the training device when it is a visible GPU."""
    name = cfg.train.device
    if not torch.cuda.is_available() or name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", distributed.local_rank() if distributed.launched() else 0)


@torch.no_grad()
def item_codes(cfg: RunConfig, data: SequenceData) -> tuple[np.ndarray, int]:
    """VQ codes [n_items + 1, D] (row 0, padding, is 0) and the codebook size M, memoised.

    The text encoder is built under a forked RNG seeded with `train.seed` (so a random-init
    encoder is the one an MMSR-T run starts from, and building it never shifts the recommender's
    own initialisation, memo hit or miss).
    """
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        encoder = create_text_encoder(m.text_encoder, max_tokens=m.text_max_tokens,
                                      pooling=m.text_pooling, finetune="top", top_blocks=0)
    encoder.eval()
    inputs = TextInputs(encoder, data.item_text)
    h = hashlib.sha256(json.dumps({
        "version": _KEY_VERSION, "encoder": encoder.cache_key(), "pooling": encoder.pooling,
        "n_items": data.n_items, "D": PQ_SUBVECTORS, "M": PQ_CODEWORDS, "opq": OPQ_ITERATIONS,
        "kmeans": [KMEANS_FIRST_ITERATIONS, KMEANS_REFINE_ITERATIONS, MAX_TRAIN_POINTS,
                   MIN_ITEMS_PER_CODEWORD], "seed": PQ_SEED,
    }, sort_keys=True).encode())
    h.update(inputs.input_ids.numpy().tobytes())
    h.update(inputs.attention_mask.numpy().tobytes())
    key = h.hexdigest()
    hit = _CODES.get(key)
    if not distributed.is_distributed():
        result = hit if hit is not None else _compute_codes(cfg, encoder, inputs, data.n_items)
    else:  # rank 0's codes everywhere: a float difference between GPUs must not split codes
        main = distributed.is_main_process()
        result = (hit if hit is not None else _compute_codes(cfg, encoder, inputs,
                                                             data.n_items)) if main else None
        result = distributed.broadcast_object(result)
    _CODES[key] = result
    return result


@torch.no_grad()
def _compute_codes(cfg: RunConfig, encoder: nn.Module, inputs: TextInputs, n_items: int
                   ) -> tuple[np.ndarray, int]:
    """Pool every item's text through the frozen encoder (on the GPU when there is one), then
    quantise: codes [n_items + 1, D] (row 0 = padding) and the codebook size."""
    t0 = time.perf_counter()
    device = _feature_device(cfg)
    branch = ModalityBranch(encoder.to(device), inputs, "text").eval()
    ids = torch.arange(1, n_items + 1, device=device)
    vecs = [branch(chunk).pooled.float().cpu() for chunk in ids.split(ENCODE_BATCH)]
    x = torch.cat(vecs).numpy()
    branch.to("cpu")
    t1 = time.perf_counter()
    pq = product_quantize(x)
    codes = np.zeros((n_items + 1, pq.codes.shape[1]), dtype=np.int64)
    codes[1:] = pq.codes
    log.info("VQRec codes for %d items: %s pooled (%.1fs), OPQ %d x %d codewords, mse %.4g "
             "(%.1fs)", n_items, encoder.name, t1 - t0, codes.shape[1], pq.n_codes,
             pq.error, time.perf_counter() - t1)
    return codes, pq.n_codes


class VQItemEncoder(ItemEncoder):
    """Item vector = mean of its D code embeddings (one table of D x M rows).

    The codes are a non-persistent buffer: they are recomputed (deterministically) when a model
    is built, so checkpoints hold only the code embeddings and load into a model over another
    catalog with the same D and M, which is what VQRec's transfer needs.
    """

    def __init__(self, codes: torch.Tensor, n_codes: int, dim: int) -> None:
        super().__init__()
        if codes.ndim != 2 or codes.shape[0] < 2:
            raise ValueError(f"codes must be [n_items + 1, D] with at least one item, got "
                             f"{tuple(codes.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= n_codes:
            raise ValueError(f"codes must lie in 0..{n_codes - 1}")
        self.n_items, self.dim = codes.shape[0] - 1, dim
        self.n_subvectors, self.n_codes = int(codes.shape[1]), int(n_codes)
        offsets = torch.arange(self.n_subvectors) * self.n_codes  # subspace j -> rows j*M..
        self.register_buffer("codes", codes.long() + offsets, persistent=False)
        self.embedding = nn.Embedding(self.n_subvectors * self.n_codes, dim)
        # the mean of D independent rows has std sigma / sqrt(D): start items at the ID
        # embeddings' std dim^-1/2, like every other row
        nn.init.normal_(self.embedding.weight, std=(self.n_subvectors / dim) ** 0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vecs = self.embedding(self.codes[ids]).mean(-2)
        return vecs * (ids > 0).unsqueeze(-1).to(vecs.dtype)


class VQRec(SequentialRecommender):
    """VQRec: `SequentialRecommender` over `VQItemEncoder` (see the module docstring)."""

    def train_codes_only(self) -> None:
        """VQRec's fine-tuning setting: the sequence model is fixed, only the code embedding
        table learns. Load the pre-trained weights before training."""
        for p in self.sequence_model.parameters():
            p.requires_grad_(False)


@registry.register("recommender", "vqrec", aliases=("VQRec", "vq-rec"), label="VQRec",
                   uses=("sequence", "text"),
                   description="VQRec: frozen text embeddings -> OPQ codes -> mean of learned "
                               "code embeddings, a sequence model on top (ID-free)")
def build_vqrec(cfg: RunConfig, data: SequenceData) -> VQRec:
    """VQRec from the resolved `cfg` (text encoder, tokens, pooling, sequence model, dim)."""
    m = cfg.model
    mode = getattr(m, "vqrec_train", "all") or "all"
    if mode not in TRAIN_MODES:
        raise ValueError(f"model.vqrec_train={mode!r}; choose one of {list(TRAIN_MODES)} "
                         "('codes' trains only the code embeddings: VQRec's fine-tune setting)")
    codes, n_codes = item_codes(cfg, data)
    items = VQItemEncoder(torch.from_numpy(codes), n_codes, m.dim)
    seq = create_sequence_model(m.sequence, m.dim, data.max_len, n_layers=m.n_layers,
                                n_heads=m.n_heads, dropout=m.dropout)
    model = VQRec(items, seq)
    if mode == "codes":
        model.train_codes_only()
    return model
